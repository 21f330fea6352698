//! A TiCDC stand-in on MariaDB, for tests of the TiDB source (no TiDB or TiCDC runs here).
//!
//! Triggers record every row change of the captured tables in a change log, numbered by a
//! one-row clock that each writing transaction updates first: the clock's row lock serialises
//! writers, so clock order is commit order and a relay that sees change N knows every change
//! before N has committed (what TiDB's commit TS gives TiCDC). The relay turns the log into
//! canal-json messages shaped as TiCDC writes them (TiDB extension on, values as strings,
//! binary as ISO-8859-1 text), spread over partitions by primary key, and follows each batch
//! with a watermark on every partition. Limitation: each row change gets its own commit TS,
//! so a multi-row transaction is seen as several.

use anyhow::Context;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value as J, json};
use sqlx::mysql::MySqlPool;
use sqlx::{AssertSqlSafe, Row};
use std::time::Duration;

/// A captured table: name, `(column, MySQL type)` in table order, primary-key columns.
pub struct CapturedTable {
    pub name: String,
    pub columns: Vec<(String, String)>,
    pub primary_key: Vec<String>,
}

impl CapturedTable {
    fn is_binary(ty: &str) -> bool {
        let t = ty.to_ascii_lowercase();
        t.contains("blob") || t.contains("binary")
    }

    fn is_number(ty: &str) -> bool {
        let t = ty.to_ascii_lowercase();
        t.starts_with("enum") || t.starts_with("set") || t.starts_with("bit")
    }

    /// `JSON_OBJECT('c', <text of NEW.c>, ...)` for the trigger body.
    fn image(&self, row: &str) -> String {
        let parts: Vec<String> = self
            .columns
            .iter()
            .map(|(c, ty)| {
                let v = if Self::is_binary(ty) {
                    format!("HEX({row}.`{c}`)")
                } else if Self::is_number(ty) {
                    format!("CAST({row}.`{c}`+0 AS CHAR)")
                } else {
                    format!("CAST({row}.`{c}` AS CHAR)")
                };
                format!("'{c}', {v}")
            })
            .collect();
        format!("JSON_OBJECT({})", parts.join(", "))
    }
}

pub struct Capture {
    pool: MySqlPool,
    database: String,
    tables: Vec<CapturedTable>,
    topic: String,
    partitions: i32,
    base_tso: u64,
    last: i64,
}

impl Capture {
    /// Creates the clock and the log and a trigger per table and operation.
    pub async fn install(
        pool: MySqlPool,
        database: &str,
        tables: Vec<CapturedTable>,
        topic: &str,
        partitions: i32,
    ) -> anyhow::Result<Self> {
        let db = format!("`{database}`");
        for sql in [
            format!("CREATE TABLE {db}.cdc_clock (id INT PRIMARY KEY, ts BIGINT NOT NULL)"),
            format!("INSERT INTO {db}.cdc_clock VALUES (1, 0)"),
            format!(
                "CREATE TABLE {db}.cdc_log (ts BIGINT PRIMARY KEY, tbl VARCHAR(64) NOT NULL, \
                 op VARCHAR(8) NOT NULL, data LONGTEXT, old LONGTEXT)"
            ),
        ] {
            sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                .execute(&pool)
                .await
                .with_context(|| sql)?;
        }
        for t in &tables {
            for (op, when, data, old) in [
                ("INSERT", "AFTER INSERT", t.image("NEW"), "NULL".to_string()),
                ("UPDATE", "AFTER UPDATE", t.image("NEW"), t.image("OLD")),
                ("DELETE", "AFTER DELETE", t.image("OLD"), "NULL".to_string()),
            ] {
                let sql = format!(
                    "CREATE TRIGGER {db}.`cdc_{name}_{op}` {when} ON {db}.`{name}` FOR EACH ROW BEGIN \
                     UPDATE {db}.cdc_clock SET ts = ts + 1 WHERE id = 1; \
                     INSERT INTO {db}.cdc_log (ts, tbl, op, data, old) \
                     SELECT ts, '{name}', '{op}', {data}, {old} FROM {db}.cdc_clock WHERE id = 1; \
                     END",
                    name = t.name
                );
                sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                    .execute(&pool)
                    .await
                    .with_context(|| sql)?;
            }
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(Self {
            pool,
            database: database.to_string(),
            tables,
            topic: topic.to_string(),
            partitions,
            base_tso: now_ms << 18,
            last: 0,
        })
    }

    /// Relays the changes committed since the last call; returns how many.
    pub async fn relay(&mut self, producer: &FutureProducer) -> anyhow::Result<usize> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT ts, tbl, op, data, old FROM `{}`.cdc_log WHERE ts > ? ORDER BY ts LIMIT 2000",
            self.database
        )))
        .bind(self.last)
        .fetch_all(&self.pool)
        .await?;
        let mut sends = Vec::new();
        for r in &rows {
            let ts: i64 = r.try_get(0)?;
            let tbl: String = r.try_get(1)?;
            let op: String = r.try_get(2)?;
            let data: Option<String> = r.try_get(3)?;
            let old: Option<String> = r.try_get(4)?;
            let t = self
                .tables
                .iter()
                .find(|t| t.name == tbl)
                .ok_or_else(|| anyhow::anyhow!("change of an unknown table {tbl}"))?;
            let data = self.canal_image(t, data.as_deref())?;
            let old = self.canal_image(t, old.as_deref())?;
            let key: String = t
                .primary_key
                .iter()
                .map(|k| data[k].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
                .join("|");
            let partition =
                (key.bytes().map(u32::from).sum::<u32>() % self.partitions as u32) as i32;
            let commit_ts = self.base_tso + ts as u64;
            let mysql: serde_json::Map<String, J> = t
                .columns
                .iter()
                .map(|(c, ty)| (c.clone(), json!(ty.split('(').next().unwrap_or(ty))))
                .collect();
            let message = json!({
                "id": 0, "database": self.database, "table": tbl, "pkNames": t.primary_key,
                "isDdl": false, "type": op, "es": (commit_ts >> 18) as i64,
                "ts": (commit_ts >> 18) as i64, "sql": "", "sqlType": null, "mysqlType": mysql,
                "data": [data], "old": if op == "UPDATE" { json!([old]) } else { J::Null },
                "_tidb": {"commitTs": commit_ts}
            });
            sends.push((partition, serde_json::to_vec(&message)?));
            self.last = ts;
        }
        let watermark = json!({
            "id": 0, "database": "", "table": "", "pkNames": null, "isDdl": false,
            "type": "TIDB_WATERMARK", "es": 0, "ts": 0, "sql": "", "sqlType": null,
            "mysqlType": null, "data": null, "old": null,
            "_tidb": {"watermarkTs": self.base_tso + self.last as u64 + 1}
        });
        let wm = serde_json::to_vec(&watermark)?;
        for p in 0..self.partitions {
            sends.push((p, wm.clone()));
        }
        // In order per partition: TiCDC's watermark follows the changes it covers.
        for (p, payload) in &sends {
            producer
                .send(
                    FutureRecord::<(), _>::to(&self.topic)
                        .partition(*p)
                        .payload(payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| anyhow::anyhow!("relay produce: {e}"))?;
        }
        Ok(rows.len())
    }

    /// A JSON image from the log as canal-json writes it: strings, binary as ISO-8859-1.
    fn canal_image(
        &self,
        t: &CapturedTable,
        image: Option<&str>,
    ) -> anyhow::Result<serde_json::Map<String, J>> {
        let Some(text) = image else {
            return Ok(serde_json::Map::new());
        };
        let mut obj: serde_json::Map<String, J> = serde_json::from_str(text)?;
        for (c, ty) in &t.columns {
            if CapturedTable::is_binary(ty)
                && let Some(J::String(hex)) = obj.get(c)
            {
                let bytes = (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()?;
                let latin1: String = bytes.into_iter().map(char::from).collect();
                obj.insert(c.clone(), J::String(latin1));
            }
        }
        Ok(obj)
    }
}
