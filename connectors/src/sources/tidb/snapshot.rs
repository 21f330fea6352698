//! The initial load over the MySQL protocol, handed off to the changefeed the DBLog way.
//!
//! For each chunk (the next `chunkSize` rows in primary-key order after the cursor) the
//! snapshotter writes a low watermark to the watermark table, reads the chunk, and writes a
//! high watermark. Both writes travel through the changefeed. Between them, in commit order,
//! any change to a row of the chunk supersedes the row read; at the high watermark the rows
//! left are emitted as `read` events. No lock is taken and no snapshot has to stay open: a
//! chunk read anywhere inside its window is reconciled by the changes inside that window.
//! The cursor (table and last key) travels in every position, so a restart continues from
//! the last chunk row delivered.

use super::mysql_type::{Family, MysqlType};
use crate::event::{Column, SnapshotCursor, TableId, TableSchema, Value};
use sqlx::mysql::{MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::{Arguments, AssertSqlSafe, Row};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use syncmesh_crds as crd;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("snapshot of {table}: {what}: {source}")]
    Sql {
        table: String,
        what: &'static str,
        source: sqlx::Error,
    },
    #[error("snapshot of {table}: {reason}")]
    Table { table: String, reason: String },
}

/// What the snapshot knows of one table.
struct TableInfo {
    schema: Arc<TableSchema>,
    types: Vec<MysqlType>,
    select: String,
    /// `information_schema.TABLES.TABLE_ROWS`: the engine's estimate, for progress only.
    estimated_rows: u64,
}

/// A chunk row with its primary key as key texts.
pub type KeyedRow = (Vec<String>, Vec<Value>);

/// One chunk between its watermarks.
pub struct Window {
    pub table: TableId,
    pub low: String,
    pub high: String,
    /// The low watermark has come through the changefeed: changes now supersede rows.
    pub opened: bool,
    rows: Vec<(String, Vec<Value>)>,
    superseded: HashSet<String>,
    /// The cursor once this chunk is delivered.
    pub next: SnapshotCursor,
    pub schema: Arc<TableSchema>,
}

impl Window {
    /// A change to `key` inside the window: the row read is stale.
    pub fn supersede(&mut self, key: String) {
        if self.opened {
            self.superseded.insert(key);
        }
    }

    /// The rows to emit at the high watermark, with each row's key texts.
    pub fn into_rows(self) -> (Vec<KeyedRow>, SnapshotCursor, Arc<TableSchema>) {
        let pk = self.schema.primary_key.clone();
        let rows = self
            .rows
            .into_iter()
            .filter(|(k, _)| !self.superseded.contains(k))
            .map(|(_, row)| {
                let keys = pk.iter().map(|i| row[*i].key_text()).collect();
                (keys, row)
            })
            .collect();
        (rows, self.next, self.schema)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

pub struct Snapshotter {
    pool: MySqlPool,
    tables: Vec<TableId>,
    chunk_size: u32,
    pub watermark_table: TableId,
    /// This source's row in the watermark table.
    id: String,
    /// The upstream is TiDB (`VERSION()` says so): chunks are read at the low watermark's TSO.
    tidb: bool,
    info: HashMap<TableId, TableInfo>,
    /// Chunks read per table, for the progress estimate.
    chunks_read: HashMap<TableId, u64>,
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn quoted(t: &TableId) -> String {
    format!("{}.{}", quote(&t.schema), quote(&t.table))
}

/// The row key text used to match stream changes against chunk rows.
pub fn key_of(schema: &TableSchema, row: &[Value]) -> String {
    let mut out = String::new();
    for i in &schema.primary_key {
        if let Some(v) = row.get(*i) {
            out.push_str(&v.key_text());
        }
        out.push('|');
    }
    out
}

impl Snapshotter {
    pub async fn connect(
        spec: &crd::TidbSnapshotSpec,
        id: String,
        at: &str,
    ) -> Result<Self, SnapshotError> {
        let invalid = |field: &str, reason: String| SnapshotError::Invalid {
            field: format!("{at}.tidb.snapshot.{field}"),
            reason,
        };
        let parse_table = |t: &str, field: &str| match t.split_once('.') {
            Some((s, n)) if !s.is_empty() && !n.is_empty() => Ok(TableId::new(s, n)),
            _ => Err(invalid(
                field,
                format!("expected `schema.table`, found `{t}`"),
            )),
        };
        let tables = spec
            .tables
            .iter()
            .enumerate()
            .map(|(j, t)| parse_table(t, &format!("tables[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let watermark_table = parse_table(&spec.watermark_table, "watermarkTable")?;
        let mut options: sqlx::mysql::MySqlConnectOptions = spec
            .url
            .parse()
            .map_err(|e: sqlx::Error| invalid("url", e.to_string()))?;
        if let Some(var) = &spec.password_env {
            let password = std::env::var(var).map_err(|_| {
                invalid(
                    "passwordEnv",
                    format!("environment variable {var} is not set"),
                )
            })?;
            options = options.password(&password);
        }
        let pool = MySqlPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(|source| SnapshotError::Sql {
                table: watermark_table.to_string(),
                what: "connecting",
                source,
            })?;
        let version: String = sqlx::query_scalar("SELECT CAST(VERSION() AS CHAR)")
            .fetch_one(&pool)
            .await
            .map_err(|source| SnapshotError::Sql {
                table: watermark_table.to_string(),
                what: "reading the server version",
                source,
            })?;
        let s = Self {
            tidb: version.contains("TiDB"),
            pool,
            tables,
            chunk_size: spec.chunk_size.max(1),
            watermark_table,
            id,
            info: HashMap::new(),
            chunks_read: HashMap::new(),
        };
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {} (id VARCHAR(190) PRIMARY KEY, mark VARCHAR(64) NOT NULL)",
            quoted(&s.watermark_table)
        );
        // Identifiers are quoted with backticks doubled; values are bound.
        sqlx::query(AssertSqlSafe(ddl))
            .execute(&s.pool)
            .await
            .map_err(|source| s.sql(&s.watermark_table, "creating the watermark table", source))?;
        Ok(s)
    }

    fn sql(&self, table: &TableId, what: &'static str, source: sqlx::Error) -> SnapshotError {
        SnapshotError::Sql {
            table: table.to_string(),
            what,
            source,
        }
    }

    /// Where a fresh snapshot starts.
    pub fn start(&self) -> SnapshotCursor {
        SnapshotCursor {
            table: self.tables.first().map(|t| t.to_string()),
            after: Vec::new(),
        }
    }

    pub fn tables(&self) -> &[TableId] {
        &self.tables
    }

    async fn table_info(&mut self, table: &TableId) -> Result<&TableInfo, SnapshotError> {
        if !self.info.contains_key(table) {
            let info = self.load(table).await?;
            self.info.insert(table.clone(), info);
        }
        self.info.get(table).ok_or_else(|| SnapshotError::Table {
            table: table.to_string(),
            reason: "schema not loaded".into(),
        })
    }

    async fn load(&self, table: &TableId) -> Result<TableInfo, SnapshotError> {
        let rows = sqlx::query(
            "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR), CAST(IS_NULLABLE AS CHAR) \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
        )
        .bind(&table.schema)
        .bind(&table.table)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.sql(table, "reading its columns", e))?;
        if rows.is_empty() {
            return Err(SnapshotError::Table {
                table: table.to_string(),
                reason: "no such table (or no privilege on it)".into(),
            });
        }
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
             ORDER BY ORDINAL_POSITION",
        )
        .bind(&table.schema)
        .bind(&table.table)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.sql(table, "reading its primary key", e))?;
        if keys.is_empty() {
            return Err(SnapshotError::Table {
                table: table.to_string(),
                reason: "has no primary key; a chunked snapshot needs one".into(),
            });
        }
        let mut columns = Vec::new();
        let mut types = Vec::new();
        let mut select = Vec::new();
        for r in &rows {
            let name: String = r
                .try_get(0)
                .map_err(|e| self.sql(table, "column name", e))?;
            let ty: String = r
                .try_get(1)
                .map_err(|e| self.sql(table, "column type", e))?;
            let nullable: String = r
                .try_get(2)
                .map_err(|e| self.sql(table, "nullability", e))?;
            let parsed = MysqlType::parse(&ty).map_err(|e| SnapshotError::Table {
                table: table.to_string(),
                reason: format!("column {name}: {e}"),
            })?;
            // The same text forms TiCDC's canal-json uses, so both paths type values alike.
            select.push(match parsed.family {
                Family::Binary => format!("HEX({})", quote(&name)),
                Family::Number => format!("CAST({}+0 AS CHAR)", quote(&name)),
                _ => format!("CAST({} AS CHAR)", quote(&name)),
            });
            columns.push(Column {
                name,
                column_type: parsed.column_type(None),
                nullable: nullable == "YES",
            });
            types.push(parsed);
        }
        let primary_key = keys
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        let key_list = keys.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
        let select = format!(
            "SELECT {} FROM {} {{where}} ORDER BY {key_list} LIMIT {}",
            select.join(", "),
            quoted(table),
            self.chunk_size
        );
        let estimated_rows: Option<u64> = sqlx::query_scalar(
            "SELECT CAST(TABLE_ROWS AS UNSIGNED) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        )
        .bind(&table.schema)
        .bind(&table.table)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.sql(table, "reading its row estimate", e))?
        .flatten();
        Ok(TableInfo {
            schema: Arc::new(TableSchema {
                table: table.clone(),
                version: 1,
                columns,
                primary_key,
            }),
            types,
            select,
            estimated_rows: estimated_rows.unwrap_or(0),
        })
    }

    /// Chunks still to read from `cursor` on, estimated from the engines' row estimates and
    /// the chunks already read (at least one per table not finished).
    pub fn chunks_remaining(&self, cursor: Option<&SnapshotCursor>) -> u64 {
        let Some(current) = cursor.and_then(|c| c.table.as_deref()) else {
            return 0;
        };
        let Some(at) = self.tables.iter().position(|t| t.to_string() == current) else {
            return 0;
        };
        let chunk = u64::from(self.chunk_size);
        self.tables[at..]
            .iter()
            .map(|t| {
                let rows = self.info.get(t).map_or(0, |i| i.estimated_rows);
                let read = if t.to_string() == current {
                    self.chunks_read.get(t).copied().unwrap_or(0)
                } else {
                    0
                };
                rows.div_ceil(chunk).saturating_sub(read).max(1)
            })
            .sum()
    }

    /// The schema the snapshot reads `table` with (loaded on first use).
    pub async fn schema(&mut self, table: &TableId) -> Result<Arc<TableSchema>, SnapshotError> {
        Ok(self.table_info(table).await?.schema.clone())
    }

    async fn mark(&self, conn: &mut MySqlConnection, mark: &str) -> Result<(), SnapshotError> {
        let sql = format!(
            "INSERT INTO {} (id, mark) VALUES (?, ?) ON DUPLICATE KEY UPDATE mark = VALUES(mark)",
            quoted(&self.watermark_table)
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&self.id)
            .bind(mark)
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(|e| self.sql(&self.watermark_table, "writing a watermark", e))
    }

    /// On TiDB, the commit TS of the low watermark just written on `conn`: the chunk is then
    /// read at exactly that TSO (`tidb_snapshot`), the state the window starts from.
    async fn low_watermark_ts(
        &self,
        conn: &mut MySqlConnection,
    ) -> Result<Option<u64>, SnapshotError> {
        if !self.tidb {
            return Ok(None);
        }
        let ts: Option<String> = sqlx::query_scalar(
            "SELECT CAST(JSON_EXTRACT(@@tidb_last_txn_info, '$.commit_ts') AS CHAR)",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| {
            self.sql(
                &self.watermark_table,
                "reading the watermark's commit TS",
                e,
            )
        })?;
        Ok(ts.and_then(|t| t.trim().parse().ok()))
    }

    /// Opens the window for the chunk after `cursor`; `None` once every table is read.
    pub async fn open(&mut self, cursor: &SnapshotCursor) -> Result<Option<Window>, SnapshotError> {
        let Some(name) = &cursor.table else {
            return Ok(None);
        };
        let table = TableId::parse(name);
        let chunk_size = self.chunk_size as usize;
        let low = format!("low-{}", uuid::Uuid::now_v7());
        let high = format!("high-{}", uuid::Uuid::now_v7());
        self.table_info(&table).await?;
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| self.sql(&table, "connecting", e))?;
        self.mark(&mut conn, &low).await?;
        let pin = self.low_watermark_ts(&mut conn).await?;
        let (rows, schema) = {
            let info = self.info.get(&table).ok_or_else(|| SnapshotError::Table {
                table: table.to_string(),
                reason: "schema not loaded".into(),
            })?;
            let rows = read_chunk(&mut conn, &table, info, &cursor.after, pin).await?;
            (rows, info.schema.clone())
        };
        self.mark(&mut conn, &high).await?;
        *self.chunks_read.entry(table.clone()).or_default() += 1;
        let next = match rows.last() {
            Some((_, last)) if rows.len() >= chunk_size => SnapshotCursor {
                table: Some(name.clone()),
                after: schema
                    .primary_key
                    .iter()
                    .map(|i| last[*i].key_text())
                    .collect(),
            },
            _ => {
                // This table is done: the next one from its start, or the end.
                let at = self.tables.iter().position(|t| *t == table);
                SnapshotCursor {
                    table: at
                        .and_then(|i| self.tables.get(i + 1))
                        .map(|t| t.to_string()),
                    after: Vec::new(),
                }
            }
        };
        Ok(Some(Window {
            table,
            low,
            high,
            opened: false,
            rows,
            superseded: HashSet::new(),
            next,
            schema,
        }))
    }
}

/// The statements around a chunk read: pinned to a TSO on TiDB, otherwise one statement in a
/// consistent-snapshot transaction (on MySQL/MariaDB). Either way the chunk is one
/// point-in-time read inside its window.
pub fn chunk_statements(pin: Option<u64>) -> (String, String) {
    match pin {
        Some(ts) => (
            format!("SET @@tidb_snapshot = '{ts}'"),
            "SET @@tidb_snapshot = ''".to_string(),
        ),
        None => (
            "START TRANSACTION WITH CONSISTENT SNAPSHOT".to_string(),
            "COMMIT".to_string(),
        ),
    }
}

async fn read_chunk(
    conn: &mut MySqlConnection,
    table: &TableId,
    info: &TableInfo,
    after: &[String],
    pin: Option<u64>,
) -> Result<Vec<(String, Vec<Value>)>, SnapshotError> {
    let sql_err = |what: &'static str, source: sqlx::Error| SnapshotError::Sql {
        table: table.to_string(),
        what,
        source,
    };
    let mut args = sqlx::mysql::MySqlArguments::default();
    let where_clause = if after.is_empty() {
        String::new()
    } else {
        let keys: Vec<String> = info.schema.key_columns().map(|c| quote(&c.name)).collect();
        for (j, text) in after.iter().enumerate() {
            let col = info
                .schema
                .primary_key
                .get(j)
                .and_then(|i| info.types.get(*i));
            let bound = match col.map(|t| t.family) {
                Some(Family::Int) => text.parse::<i64>().map(|i| args.add(i)).ok(),
                Some(Family::Binary) => {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .ok()
                        .map(|b| args.add(b))
                }
                _ => None,
            };
            if bound.is_none() {
                let _ = args.add(text.clone());
            }
        }
        let marks = vec!["?"; keys.len()].join(", ");
        format!("WHERE ({}) > ({marks})", keys.join(", "))
    };
    let sql = info.select.replace("{where}", &where_clause);
    let (before, after_read) = chunk_statements(pin);
    sqlx::raw_sql(AssertSqlSafe(before))
        .execute(&mut *conn)
        .await
        .map_err(|e| sql_err("pinning the chunk read", e))?;
    let rows = sqlx::query_with(AssertSqlSafe(sql), args)
        .fetch_all(&mut *conn)
        .await;
    // Unpin even when the read failed: the connection goes back to the pool.
    let unpinned = sqlx::raw_sql(AssertSqlSafe(after_read))
        .execute(&mut *conn)
        .await;
    let rows = rows.map_err(|e| sql_err("reading a chunk", e))?;
    unpinned.map_err(|e| sql_err("ending the chunk read", e))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut values = Vec::with_capacity(info.types.len());
        for (i, ty) in info.types.iter().enumerate() {
            let text: Option<String> = r.try_get(i).map_err(|e| sql_err("decoding a value", e))?;
            let value = match text {
                None => Value::Null,
                Some(t) if ty.family == Family::Binary => {
                    Value::Bytes(hex(&t).ok_or_else(|| SnapshotError::Table {
                        table: table.to_string(),
                        reason: format!("column {}: bad HEX() text", info.schema.columns[i].name),
                    })?)
                }
                Some(t) => ty.value(&t).map_err(|e| SnapshotError::Table {
                    table: table.to_string(),
                    reason: format!("column {}: {e}", info.schema.columns[i].name),
                })?,
            };
            values.push(value);
        }
        out.push((key_of(&info.schema, &values), values));
    }
    Ok(out)
}

fn hex(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_reads_are_pinned_on_tidb_and_transactional_elsewhere() {
        let (pin, unpin) = chunk_statements(Some(429918007904436226));
        assert_eq!(pin, "SET @@tidb_snapshot = '429918007904436226'");
        assert_eq!(unpin, "SET @@tidb_snapshot = ''");
        let (begin, end) = chunk_statements(None);
        assert_eq!(begin, "START TRANSACTION WITH CONSISTENT SNAPSHOT");
        assert_eq!(end, "COMMIT");
    }

    #[test]
    fn hex_decodes_what_hex_encodes() {
        assert_eq!(hex("00FF26"), Some(vec![0, 255, 38]));
        assert_eq!(hex("0"), None);
        assert_eq!(hex("zz"), None);
    }
}
