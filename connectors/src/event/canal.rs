//! A change event as Canal's JSON, the way TiCDC writes it (`canal-json` with the TiDB
//! extension): every value a string (binary as ISO-8859-1 text), `mysqlType` and `sqlType`
//! per column, `old` holding only the columns an update changed, and `_tidb.commitTs` when the
//! event came from TiDB. Consumers built for TiCDC's changefeeds read it unchanged.

use super::{ChangeEvent, ColumnType, Operation, Position, Value};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value as J};

/// A JSON object that keeps the table's column order (serde_json's `Map` sorts its keys, and
/// Canal consumers that read columns positionally expect the table's order).
#[derive(Debug, Clone, Default)]
pub struct Columns(Vec<(String, J)>);

impl Serialize for Columns {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// One Canal JSON message, fields in Canal's order.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CanalMessage {
    id: u64,
    database: String,
    table: String,
    pk_names: Vec<String>,
    is_ddl: bool,
    #[serde(rename = "type")]
    kind: String,
    es: i64,
    ts: i64,
    sql: String,
    sql_type: Option<Columns>,
    mysql_type: Option<Columns>,
    data: Option<Vec<Columns>>,
    old: Option<Vec<Columns>>,
    #[serde(rename = "_tidb", skip_serializing_if = "Option::is_none")]
    tidb: Option<Map<String, J>>,
}

/// The MySQL type named in `mysqlType`, and its JDBC code for `sqlType`.
fn mysql_type(t: &ColumnType) -> (String, i32) {
    match t {
        ColumnType::Bool => ("tinyint(1)".into(), -7),
        ColumnType::Int => ("bigint".into(), -5),
        ColumnType::Decimal { precision, scale } => (format!("decimal({precision},{scale})"), 3),
        ColumnType::Float => ("double".into(), 8),
        ColumnType::String {
            max_length: Some(n),
        } => (format!("varchar({n})"), 12),
        ColumnType::String { max_length: None } => ("text".into(), 2005),
        ColumnType::Bytes => ("blob".into(), 2004),
        ColumnType::Date => ("date".into(), 91),
        ColumnType::Timestamp => ("datetime".into(), 93),
        ColumnType::TimestampTz => ("timestamp".into(), 93),
        ColumnType::Array(_) => ("json".into(), 12),
    }
}

/// A value as Canal's text.
fn text(v: &Value) -> J {
    let time = |t: &chrono::NaiveDateTime| {
        if t.and_utc().timestamp_subsec_nanos() == 0 {
            t.format("%Y-%m-%d %H:%M:%S").to_string()
        } else {
            t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
        }
    };
    J::String(match v {
        Value::Null => return J::Null,
        Value::Bool(b) => if *b { "1" } else { "0" }.into(),
        Value::Int(i) => i.to_string(),
        Value::Decimal(d) => d.to_string(),
        Value::Float(f) => f.to_string(),
        Value::String(s) => s.clone(),
        Value::Bytes(b) => b.iter().map(|&byte| char::from(byte)).collect(),
        Value::Date(d) => d.format("%Y-%m-%d").to_string(),
        Value::Timestamp(t) => time(t),
        Value::TimestampTz(t) => time(&t.naive_utc()),
        Value::Array(_) => v.to_json().to_string(),
    })
}

fn image(event: &ChangeEvent, values: &[Value], only: Option<&[Value]>) -> Columns {
    let mut obj = Vec::with_capacity(values.len());
    for (i, (col, v)) in event.schema.columns.iter().zip(values).enumerate() {
        // `old` lists only the columns whose value changed.
        if only.is_some_and(|after| after.get(i) == Some(v)) {
            continue;
        }
        obj.push((col.name.clone(), text(v)));
    }
    Columns(obj)
}

/// The statement kind Canal names a DDL by.
fn ddl_kind(sql: &str) -> String {
    let word = sql
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    match word.as_str() {
        "CREATE" | "ALTER" | "DROP" | "TRUNCATE" | "RENAME" => word,
        _ => "QUERY".into(),
    }
}

/// The Canal JSON message for one event; `now_ms` is the `ts` (when it was written).
pub fn to_canal_json(event: &ChangeEvent, now_ms: i64) -> CanalMessage {
    let kind = match event.op {
        Operation::Insert | Operation::Read => "INSERT".into(),
        Operation::Update => "UPDATE".into(),
        Operation::Delete => "DELETE".into(),
        Operation::Ddl => ddl_kind(event.ddl.as_deref().unwrap_or_default()),
    };
    let dml = event.op != Operation::Ddl;
    let types = |f: fn(&ColumnType) -> J| {
        dml.then(|| {
            Columns(
                event
                    .schema
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), f(&c.column_type)))
                    .collect(),
            )
        })
    };
    let old = match (event.op, &event.before, &event.after) {
        (Operation::Update, Some(before), Some(after)) => {
            Some(vec![image(event, before, Some(after))])
        }
        _ => None,
    };
    CanalMessage {
        id: 0,
        database: event.table().schema.clone(),
        table: event.table().table.clone(),
        pk_names: event.schema.key_columns().map(|c| c.name.clone()).collect(),
        is_ddl: !dml,
        kind,
        es: event.commit_time().map_or(now_ms, |t| t.timestamp_millis()),
        ts: now_ms,
        sql: event.ddl.clone().unwrap_or_default(),
        sql_type: types(|t| J::from(mysql_type(t).1)),
        mysql_type: types(|t| J::from(mysql_type(t).0)),
        data: dml.then(|| {
            event
                .row()
                .map(|row| image(event, row, None))
                .into_iter()
                .collect()
        }),
        old,
        tidb: match &event.position {
            Position::Tidb { commit_ts, .. } => {
                let mut tidb = Map::new();
                tidb.insert("commitTs".into(), J::from(*commit_ts));
                Some(tidb)
            }
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Column, Decimal, TableId, TableSchema, Transaction};
    use crate::sources::tidb::canal::decode;
    use crate::sources::tidb::message::Message;
    use chrono::NaiveDate;
    use std::sync::Arc;

    fn schema() -> Arc<TableSchema> {
        let col = |name: &str, column_type| Column {
            name: name.into(),
            column_type,
            nullable: true,
        };
        Arc::new(TableSchema {
            table: TableId::new("bank", "ledger"),
            version: 3,
            columns: vec![
                col("id", ColumnType::Int),
                col(
                    "amount",
                    ColumnType::Decimal {
                        precision: 12,
                        scale: 2,
                    },
                ),
                col(
                    "name",
                    ColumnType::String {
                        max_length: Some(40),
                    },
                ),
                col("raw", ColumnType::Bytes),
                col("opened", ColumnType::Date),
                col("at", ColumnType::Timestamp),
                col("rate", ColumnType::Float),
            ],
            primary_key: vec![0],
        })
    }

    fn row(amount: i128, name: Option<&str>) -> Vec<Value> {
        vec![
            Value::Int(42),
            Value::Decimal(Decimal::new(amount, 2)),
            name.map_or(Value::Null, |n| Value::String(n.into())),
            Value::Bytes(vec![0, 0x7f, 0x80, 0xff]),
            Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
            Value::Timestamp(
                NaiveDate::from_ymd_opt(2024, 2, 29)
                    .unwrap()
                    .and_hms_micro_opt(23, 59, 58, 123_456)
                    .unwrap(),
            ),
            Value::Float(0.25),
        ]
    }

    fn event(op: Operation, before: Option<Vec<Value>>, after: Option<Vec<Value>>) -> ChangeEvent {
        ChangeEvent {
            source: "tidb".into(),
            position: Position::tidb(449_000_000_000_000_001, 0),
            transaction: Some(Transaction {
                id: "t".into(),
                commit_time: chrono::DateTime::from_timestamp_millis(1_700_000_000_123),
            }),
            schema: schema(),
            op,
            before,
            after,
            ddl: None,
        }
    }

    /// What our own TiCDC decoder reads back from what we write.
    fn round_trip(e: &ChangeEvent) -> crate::sources::tidb::message::RowChange {
        let bytes = serde_json::to_vec(&to_canal_json(e, 1_700_000_001_000)).unwrap();
        match decode(&bytes).unwrap() {
            Message::Rows(mut rows) => {
                assert_eq!(rows.len(), 1);
                rows.remove(0)
            }
            other => panic!("not rows: {other:?}"),
        }
    }

    #[test]
    fn an_update_reads_back_with_both_images_and_old_lists_only_what_changed() {
        let e = event(
            Operation::Update,
            Some(row(-1050, None)),
            Some(row(99999, Some("Zoë"))),
        );
        let json = serde_json::to_value(to_canal_json(&e, 1_700_000_001_000)).unwrap();
        assert_eq!(json["type"], "UPDATE");
        assert_eq!(json["pkNames"], serde_json::json!(["id"]));
        assert_eq!(json["es"], 1_700_000_000_123i64);
        assert_eq!(json["_tidb"]["commitTs"], 449_000_000_000_000_001u64);
        assert_eq!(json["mysqlType"]["amount"], "decimal(12,2)");
        assert_eq!(json["data"][0]["amount"], "999.99");
        assert_eq!(json["data"][0]["raw"], "\u{0}\u{7f}\u{80}\u{ff}");
        assert_eq!(json["data"][0]["at"], "2024-02-29 23:59:58.123456");
        let old = json["old"][0].as_object().unwrap();
        assert_eq!(
            old.keys().collect::<Vec<_>>(),
            ["amount", "name"],
            "only the changed columns"
        );
        let text = String::from_utf8(serde_json::to_vec(&to_canal_json(&e, 0)).unwrap()).unwrap();
        let at = |key: &str| text.find(&format!("\"{key}\":")).unwrap();
        assert!(
            at("id") < at("amount") && at("amount") < at("name") && at("raw") < at("opened"),
            "columns in table order: {text}"
        );
        assert_eq!(old["name"], J::Null);

        let back = round_trip(&e);
        assert_eq!(back.op, Operation::Update);
        assert_eq!(back.commit_ts, 449_000_000_000_000_001);
        assert_eq!(back.table, TableId::new("bank", "ledger"));
        assert_eq!(back.primary_key, ["id"]);
        assert_eq!(back.before, e.before);
        assert_eq!(back.after, e.after);
    }

    #[test]
    fn inserts_deletes_and_ddl() {
        let insert = round_trip(&event(Operation::Insert, None, Some(row(1, Some("a")))));
        assert_eq!((insert.op, insert.before), (Operation::Insert, None));
        let delete = round_trip(&event(Operation::Delete, Some(row(1, Some("a"))), None));
        assert_eq!(delete.op, Operation::Delete);
        assert_eq!(delete.before, Some(row(1, Some("a"))));

        let mut ddl = event(Operation::Ddl, None, None);
        ddl.ddl = Some("alter table ledger add column note text".into());
        let bytes = serde_json::to_vec(&to_canal_json(&ddl, 0)).unwrap();
        match decode(&bytes).unwrap() {
            Message::Ddl(d) => {
                assert_eq!(d.sql, "alter table ledger add column note text");
                assert_eq!(d.table, TableId::new("bank", "ledger"));
            }
            other => panic!("not DDL: {other:?}"),
        }
        assert_eq!(to_canal_json(&ddl, 0).kind, "ALTER");
    }
}
