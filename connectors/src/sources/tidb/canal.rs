//! TiCDC's canal-json protocol with the TiDB extension (`enable-tidb-extension=true`):
//! `_tidb.commitTs` on DML and DDL messages, and `TIDB_WATERMARK` messages.
//!
//! Values arrive as strings and are typed by `mysqlType`. TiCDC's `old` holds every column
//! by default and only the changed ones with `only_output_updated_columns` or
//! `content-compatible`; the before-image is `old` laid over `data` either way.

use super::message::{ColumnInfo, DdlChange, DecodeError, Message, Ordered, RowChange};
use super::mysql_type::{MysqlType, written_scale};
use crate::event::{ColumnType, Operation, TableId, Value};
use serde::Deserialize;

#[derive(Deserialize)]
struct CanalMessage {
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(rename = "pkNames", default)]
    pk_names: Option<Vec<String>>,
    #[serde(rename = "isDdl", default)]
    is_ddl: bool,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    es: Option<i64>,
    #[serde(default)]
    sql: Option<String>,
    #[serde(rename = "mysqlType", default)]
    mysql_type: Option<Ordered<String>>,
    #[serde(default)]
    data: Option<Vec<Ordered<serde_json::Value>>>,
    #[serde(default)]
    old: Option<Vec<Ordered<serde_json::Value>>>,
    #[serde(rename = "_tidb", default)]
    tidb: Option<TidbExtension>,
}

#[derive(Deserialize)]
struct TidbExtension {
    #[serde(rename = "commitTs", default)]
    commit_ts: Option<u64>,
    #[serde(rename = "watermarkTs", default)]
    watermark_ts: Option<u64>,
}

/// Decodes one canal-json message value.
pub fn decode(payload: &[u8]) -> Result<Message, DecodeError> {
    let msg: CanalMessage = serde_json::from_slice(payload)
        .map_err(|e| DecodeError::new(format!("not canal-json: {e}")))?;
    let tidb = msg.tidb.as_ref();
    if msg.kind == "TIDB_WATERMARK" {
        return tidb
            .and_then(|t| t.watermark_ts)
            .map(Message::Watermark)
            .ok_or_else(|| DecodeError::new("_tidb.watermarkTs: missing on a TIDB_WATERMARK"));
    }
    let commit_ts = tidb.and_then(|t| t.commit_ts).ok_or_else(|| {
        DecodeError::new(
            "_tidb.commitTs: missing; create the changefeed with enable-tidb-extension=true",
        )
    })?;
    let database = msg.database.clone().unwrap_or_default();
    let table = TableId::new(database, msg.table.clone().unwrap_or_default());
    if msg.is_ddl {
        return Ok(Message::Ddl(DdlChange {
            commit_ts,
            table,
            sql: msg.sql.unwrap_or_default(),
            event_time_ms: msg.es,
        }));
    }
    let op = match msg.kind.as_str() {
        "INSERT" => Operation::Insert,
        "UPDATE" => Operation::Update,
        "DELETE" => Operation::Delete,
        other => {
            return Err(DecodeError::new(format!(
                "type: unknown event type `{other}`"
            )));
        }
    };
    let types = msg
        .mysql_type
        .as_ref()
        .ok_or_else(|| DecodeError::new("mysqlType: missing on a DML message"))?;
    let data = msg
        .data
        .as_ref()
        .ok_or_else(|| DecodeError::new("data: missing on a DML message"))?;
    let parsed: Vec<(String, MysqlType)> = types
        .0
        .iter()
        .map(|(name, t)| {
            MysqlType::parse(t)
                .map(|ty| (name.clone(), ty))
                .map_err(|e| DecodeError::new(format!("mysqlType.{name}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let columns = column_infos(&parsed, data);
    let primary_key = msg.pk_names.clone().unwrap_or_default();
    let mut rows = Vec::with_capacity(data.len());
    for (i, image) in data.iter().enumerate() {
        let values = typed_row(&parsed, image, None, &format!("data[{i}]"))?;
        let (before, after) = match op {
            Operation::Insert => (None, Some(values)),
            Operation::Delete => (Some(values), None),
            _ => {
                let old = msg.old.as_ref().and_then(|o| o.get(i));
                let before = match old {
                    Some(old) => typed_row(&parsed, image, Some(old), &format!("old[{i}]"))?,
                    None => {
                        return Err(DecodeError::new(format!("old[{i}]: missing on an UPDATE")));
                    }
                };
                (Some(before), Some(values))
            }
        };
        rows.push(RowChange {
            commit_ts,
            table: table.clone(),
            op,
            columns: columns.clone(),
            primary_key: primary_key.clone(),
            before,
            after,
            event_time_ms: msg.es,
        });
    }
    Ok(Message::Rows(rows))
}

fn column_infos(
    parsed: &[(String, MysqlType)],
    data: &[Ordered<serde_json::Value>],
) -> Vec<ColumnInfo> {
    parsed
        .iter()
        .map(|(name, ty)| {
            let sample = data
                .iter()
                .find_map(|row| row.get(name).and_then(|v| v.as_str()))
                .and_then(written_scale);
            ColumnInfo {
                name: name.clone(),
                column_type: ty.column_type(sample),
            }
        })
        .collect()
}

/// Types one row image; with `overlay`, its columns replace those of `image` (the
/// before-image of an update).
fn typed_row(
    parsed: &[(String, MysqlType)],
    image: &Ordered<serde_json::Value>,
    overlay: Option<&Ordered<serde_json::Value>>,
    at: &str,
) -> Result<Vec<Value>, DecodeError> {
    parsed
        .iter()
        .map(|(name, ty)| {
            let raw = overlay
                .and_then(|o| o.get(name))
                .or_else(|| image.get(name));
            let text = match raw {
                None | Some(serde_json::Value::Null) => return Ok(Value::Null),
                Some(serde_json::Value::String(s)) => std::borrow::Cow::Borrowed(s.as_str()),
                // Official Canal writes strings; be lenient with numbers and booleans.
                Some(other) => std::borrow::Cow::Owned(other.to_string()),
            };
            ty.value(&text)
                .map_err(|e| DecodeError::new(format!("{at}.{name} (mysqlType {}): {e}", ty.name)))
        })
        .collect()
}

/// The column type canal-json implies, for tests and tools.
pub fn column_type_of(mysql_type: &str) -> Option<ColumnType> {
    MysqlType::parse(mysql_type)
        .ok()
        .map(|t| t.column_type(None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Decimal;

    const UPDATE: &str = r#"{
        "id": 0, "database": "test", "table": "tp_int", "pkNames": ["id"], "isDdl": false,
        "type": "UPDATE", "es": 1639633141221, "ts": 1639633142960, "sql": "",
        "sqlType": {"id": 4, "c_int": 4, "c_decimal": 3, "c_tinyint": -6},
        "mysqlType": {"id": "int", "c_int": "int", "c_decimal": "decimal", "c_tinyint": "tinyint"},
        "data": [{"id": "2", "c_int": "0", "c_decimal": "123.4560", "c_tinyint": "0"}],
        "old": [{"c_int": "2147483647", "c_tinyint": "127"}],
        "_tidb": {"commitTs": 429918007904436226}
    }"#;

    #[test]
    fn update_before_image_is_old_over_data() {
        let Message::Rows(rows) = decode(UPDATE.as_bytes()).unwrap() else {
            panic!("rows expected")
        };
        let row = &rows[0];
        assert_eq!(row.commit_ts, 429918007904436226);
        assert_eq!(row.table, TableId::new("test", "tp_int"));
        assert_eq!(row.op, Operation::Update);
        let names: Vec<_> = row.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["id", "c_int", "c_decimal", "c_tinyint"],
            "document order"
        );
        assert_eq!(
            row.before.as_deref().unwrap(),
            &[
                Value::Int(2),
                Value::Int(2147483647),
                Value::Decimal(Decimal::new(1234560, 4)),
                Value::Int(127)
            ]
        );
        assert_eq!(row.after.as_deref().unwrap()[1], Value::Int(0));
        assert_eq!(
            row.columns[2].column_type,
            ColumnType::Decimal {
                precision: 38,
                scale: 4
            }
        );
    }

    #[test]
    fn watermark_and_ddl() {
        let wm = r#"{"id":0,"database":"","table":"","pkNames":null,"isDdl":false,"type":"TIDB_WATERMARK","es":1,"ts":2,"sql":"","sqlType":null,"mysqlType":null,"data":null,"old":null,"_tidb":{"watermarkTs":429918007904436226}}"#;
        assert_eq!(
            decode(wm.as_bytes()),
            Ok(Message::Watermark(429918007904436226))
        );
        let ddl = r#"{"id":0,"database":"test","table":"t","pkNames":null,"isDdl":true,"type":"ALTER","es":1,"ts":2,"sql":"ALTER TABLE t ADD COLUMN c INT","sqlType":null,"mysqlType":null,"data":null,"old":null,"_tidb":{"commitTs":7}}"#;
        let Message::Ddl(d) = decode(ddl.as_bytes()).unwrap() else {
            panic!("ddl expected")
        };
        assert_eq!(d.commit_ts, 7);
        assert_eq!(d.sql, "ALTER TABLE t ADD COLUMN c INT");
    }

    #[test]
    fn errors_name_the_field_and_column() {
        let no_ext = UPDATE.replace(r#""_tidb": {"commitTs": 429918007904436226}"#, r#""x": 1"#);
        let e = decode(no_ext.as_bytes()).unwrap_err();
        assert!(e.0.contains("enable-tidb-extension"), "{e}");
        let bad = UPDATE.replace(r#""c_int": "0""#, r#""c_int": "zero""#);
        let e = decode(bad.as_bytes()).unwrap_err();
        assert!(e.0.contains("data[0].c_int"), "{e}");
        assert!(e.0.contains("zero"), "{e}");
        assert!(
            decode(b"{not json")
                .unwrap_err()
                .0
                .contains("not canal-json")
        );
    }
}
