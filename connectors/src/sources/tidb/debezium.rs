//! TiCDC's debezium protocol: the Debezium MySQL envelope plus `source.commit_ts`.
//!
//! Values are typed by the envelope's `schema` when present (the default), following Debezium's
//! MySQL mapping (`io.debezium.time.Date` days, `Timestamp` ms, `MicroTimestamp` µs,
//! `ZonedTimestamp` text, `MicroTime` µs; BLOB/BINARY columns as base64, which TiCDC marks with
//! `tidb_type`). TiCDC sends DECIMAL as a JSON float64: its shortest text is kept as the
//! decimal, so precision beyond 15–17 digits is already lost upstream. With
//! `debezium-disable-schema=true` types are inferred from the JSON values.

use super::message::{ColumnInfo, DdlChange, DecodeError, Message, Ordered, RowChange};
use crate::event::{ColumnType, Decimal, Operation, TableId, Value};
use base64::Engine;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde::Deserialize;

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    schema: Option<Schema>,
    payload: Payload,
}

#[derive(Deserialize)]
struct Schema {
    #[serde(default)]
    fields: Vec<Field>,
}

#[derive(Deserialize, Clone)]
struct Field {
    #[serde(default)]
    field: String,
    #[serde(rename = "type", default)]
    ty: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    fields: Vec<Field>,
    #[serde(default)]
    tidb_type: Option<String>,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    op: Option<String>,
    #[serde(default)]
    source: Option<Source>,
    #[serde(default)]
    before: Option<Ordered<serde_json::Value>>,
    #[serde(default)]
    after: Option<Ordered<serde_json::Value>>,
    #[serde(default)]
    ddl: Option<String>,
    #[serde(rename = "databaseName", default)]
    database_name: Option<String>,
}

#[derive(Deserialize)]
struct Source {
    #[serde(default)]
    ts_ms: Option<i64>,
    #[serde(default)]
    db: Option<String>,
    #[serde(default)]
    table: Option<String>,
    commit_ts: Option<u64>,
}

#[derive(Deserialize)]
struct KeyEnvelope {
    payload: Ordered<serde_json::Value>,
}

/// Decodes one message; `key` is the Kafka key, whose payload names the primary-key columns.
pub fn decode(key: Option<&[u8]>, payload: &[u8]) -> Result<Message, DecodeError> {
    let env: Envelope = serde_json::from_slice(payload)
        .map_err(|e| DecodeError::new(format!("not a debezium envelope: {e}")))?;
    let p = env.payload;
    let source = p
        .source
        .as_ref()
        .ok_or_else(|| DecodeError::new("payload.source: missing"))?;
    let commit_ts = source
        .commit_ts
        .ok_or_else(|| DecodeError::new("payload.source.commit_ts: missing (not TiCDC?)"))?;
    let event_time_ms = source.ts_ms.filter(|t| *t > 0);
    let db = source
        .db
        .clone()
        .or(p.database_name.clone())
        .unwrap_or_default();
    let table = TableId::new(db, source.table.clone().unwrap_or_default());
    if let Some(sql) = p.ddl {
        return Ok(Message::Ddl(DdlChange {
            commit_ts,
            table,
            sql,
            event_time_ms,
        }));
    }
    let op = match p.op.as_deref() {
        Some("m") => return Ok(Message::Watermark(commit_ts)),
        Some("c") => Operation::Insert,
        Some("u") => Operation::Update,
        Some("d") => Operation::Delete,
        Some("r") => Operation::Read,
        other => {
            return Err(DecodeError::new(format!(
                "payload.op: unknown operation {other:?}"
            )));
        }
    };
    let image =
        p.after.as_ref().or(p.before.as_ref()).ok_or_else(|| {
            DecodeError::new("payload.before/after: both missing on a row change")
        })?;
    let row_fields: Vec<Field> = env
        .schema
        .as_ref()
        .and_then(|s| {
            s.fields
                .iter()
                .find(|f| f.field == "after" || f.field == "before")
        })
        .map(|f| f.fields.clone())
        .unwrap_or_default();
    let columns: Vec<ColumnInfo> = image
        .0
        .iter()
        .map(|(name, sample)| ColumnInfo {
            name: name.clone(),
            column_type: column_type(row_fields.iter().find(|f| &f.field == name), sample),
        })
        .collect();
    let typed = |img: &Option<Ordered<serde_json::Value>>, which: &str| {
        img.as_ref()
            .map(|img| {
                image
                    .0
                    .iter()
                    .map(|(name, _)| {
                        let field = row_fields.iter().find(|f| &f.field == name);
                        let raw = img.get(name).unwrap_or(&serde_json::Value::Null);
                        value(field, raw).map_err(|reason| {
                            DecodeError::new(format!("payload.{which}.{name}: {reason}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
    };
    let before = typed(&p.before, "before")?;
    let after = typed(&p.after, "after")?;
    let primary_key = match key {
        Some(k) if !k.is_empty() => serde_json::from_slice::<KeyEnvelope>(k)
            .map(|k| k.payload.0.into_iter().map(|(n, _)| n).collect())
            .map_err(|e| DecodeError::new(format!("key: not a debezium key: {e}")))?,
        _ => Vec::new(),
    };
    Ok(Message::Rows(vec![RowChange {
        commit_ts,
        table,
        op,
        columns,
        primary_key,
        before,
        after,
        event_time_ms,
    }]))
}

fn is_binary(field: &Field) -> bool {
    field.tidb_type.as_deref().is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t.contains("blob") || t.contains("binary")
    })
}

fn column_type(field: Option<&Field>, sample: &serde_json::Value) -> ColumnType {
    let Some(f) = field else {
        return match sample {
            serde_json::Value::Bool(_) => ColumnType::Bool,
            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => ColumnType::Int,
            serde_json::Value::Number(_) => ColumnType::Float,
            _ => ColumnType::String { max_length: None },
        };
    };
    match (f.name.as_deref(), f.ty.as_str()) {
        (Some("io.debezium.time.Date"), _) => ColumnType::Date,
        (
            Some(
                "io.debezium.time.Timestamp"
                | "io.debezium.time.MicroTimestamp"
                | "io.debezium.time.NanoTimestamp",
            ),
            _,
        ) => ColumnType::Timestamp,
        (Some("io.debezium.time.ZonedTimestamp"), _) => ColumnType::TimestampTz,
        (Some("io.debezium.time.Year"), _) => ColumnType::Int,
        (Some("org.apache.kafka.connect.data.Decimal"), _) => ColumnType::Decimal {
            precision: 38,
            scale: decimal_scale(f).unwrap_or(0),
        },
        (_, "double" | "float") if is_decimal(f) => ColumnType::Decimal {
            precision: 38,
            scale: decimal_scale(f).unwrap_or(0),
        },
        (_, "int8" | "int16" | "int32" | "int64") if f.name.is_none() => ColumnType::Int,
        (_, "boolean") => ColumnType::Bool,
        (_, "float" | "double") => ColumnType::Float,
        (_, "bytes") => ColumnType::Bytes,
        (_, "string") if is_binary(f) => ColumnType::Bytes,
        _ => ColumnType::String { max_length: None },
    }
}

fn is_decimal(f: &Field) -> bool {
    f.tidb_type
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("decimal"))
}

fn decimal_scale(f: &Field) -> Option<u8> {
    f.parameters
        .as_ref()
        .and_then(|p| p.get("scale"))
        .and_then(|s| s.as_str().and_then(|s| s.parse().ok()).or(s.as_u64()))
        .map(|s| s.min(38) as u8)
}

fn value(field: Option<&Field>, raw: &serde_json::Value) -> Result<Value, String> {
    use serde_json::Value as J;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let ty = column_type(field, raw);
    let name = field.and_then(|f| f.name.as_deref());
    let bad = || format!("`{raw}` does not fit {ty:?}");
    Ok(match (&ty, raw) {
        (ColumnType::Int, J::Number(n)) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Decimal(Decimal::parse(&n.to_string()).map_err(|_| bad())?),
        },
        (ColumnType::Bool, J::Bool(b)) => Value::Bool(*b),
        (ColumnType::Bool, J::Number(n)) => Value::Bool(n.as_i64() != Some(0)),
        (ColumnType::Float, J::Number(n)) => Value::Float(n.as_f64().ok_or_else(bad)?),
        (ColumnType::Decimal { .. }, J::Number(n)) => {
            Value::Decimal(Decimal::parse(&n.to_string()).map_err(|_| bad())?)
        }
        (ColumnType::Decimal { .. }, J::String(s)) => {
            Value::Decimal(Decimal::parse(s).map_err(|_| bad())?)
        }
        (ColumnType::Date, J::Number(n)) => {
            let days = n.as_i64().ok_or_else(bad)?;
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).ok_or_else(bad)?;
            Value::Date(
                epoch
                    .checked_add_signed(chrono::Duration::days(days))
                    .ok_or_else(bad)?,
            )
        }
        (ColumnType::Timestamp, J::Number(n)) => {
            let v = n.as_i64().ok_or_else(bad)?;
            let dt = match name {
                Some("io.debezium.time.MicroTimestamp") => DateTime::from_timestamp_micros(v),
                Some("io.debezium.time.NanoTimestamp") => Some(DateTime::from_timestamp_nanos(v)),
                _ => DateTime::from_timestamp_millis(v),
            };
            Value::Timestamp(dt.ok_or_else(bad)?.naive_utc())
        }
        (ColumnType::Timestamp, J::String(s)) => Value::Timestamp(
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map_err(|_| bad())?,
        ),
        (ColumnType::TimestampTz, J::String(s)) => {
            Value::TimestampTz(DateTime::parse_from_rfc3339(s).map_err(|_| bad())?)
        }
        (ColumnType::Bytes, J::String(s)) => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("not base64: {e}"))?,
        ),
        (ColumnType::String { .. }, J::Number(n)) if name == Some("io.debezium.time.MicroTime") => {
            let us = n.as_i64().ok_or_else(bad)?;
            Value::String(micro_time(us))
        }
        (ColumnType::String { .. }, J::String(s)) => Value::String(s.clone()),
        (ColumnType::String { .. }, other) => Value::String(other.to_string()),
        _ => return Err(bad()),
    })
}

/// `HH:MM:SS.ffffff` (MySQL TIME may be negative or above 24 hours).
fn micro_time(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "" };
    let us = us.unsigned_abs();
    let (s, frac) = (us / 1_000_000, us % 1_000_000);
    format!(
        "{sign}{:02}:{:02}:{:02}.{frac:06}",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(op: &str, before: &str, after: &str) -> String {
        format!(
            r#"{{"payload":{{"source":{{"version":"2.4.0.Final","connector":"TiCDC","name":"c","ts_ms":1701326309000,"snapshot":"false","db":"test","table":"t","server_id":0,"gtid":null,"file":"","pos":0,"row":0,"thread":0,"query":null,"commit_ts":42,"cluster_id":"c"}},"ts_ms":1701326309000,"transaction":null,"op":"{op}","before":{before},"after":{after}}},
            "schema":{{"type":"struct","fields":[
              {{"type":"struct","optional":true,"field":"before","fields":[
                {{"type":"int32","optional":false,"field":"id"}},
                {{"type":"double","optional":true,"field":"amount","tidb_type":"DECIMAL"}},
                {{"type":"int32","optional":true,"name":"io.debezium.time.Date","field":"d"}},
                {{"type":"int64","optional":true,"name":"io.debezium.time.MicroTimestamp","field":"ts"}},
                {{"type":"string","optional":true,"field":"b","tidb_type":"BLOB"}},
                {{"type":"int64","optional":true,"name":"io.debezium.time.MicroTime","field":"tm"}}]}}]}}}}"#
        )
    }

    #[test]
    fn typed_by_the_envelope_schema() {
        let row =
            r#"{"id":1,"amount":12.5,"d":19000,"ts":1640000000123456,"b":"AAH/","tm":-3723000001}"#;
        let msg = envelope("c", "null", row);
        let key = br#"{"payload":{"id":1},"schema":{"type":"struct","fields":[]}}"#;
        let Message::Rows(rows) = decode(Some(key), msg.as_bytes()).unwrap() else {
            panic!("rows")
        };
        let r = &rows[0];
        assert_eq!(r.commit_ts, 42);
        assert_eq!(r.primary_key, ["id"]);
        let after = r.after.as_deref().unwrap();
        assert_eq!(after[0], Value::Int(1));
        assert_eq!(after[1], Value::Decimal(Decimal::new(125, 1)));
        assert_eq!(
            after[2],
            Value::Date(NaiveDate::from_ymd_opt(2022, 1, 8).unwrap())
        );
        assert_eq!(
            after[3],
            Value::Timestamp(
                NaiveDateTime::parse_from_str("2021-12-20 11:33:20.123456", "%Y-%m-%d %H:%M:%S%.f")
                    .unwrap()
            )
        );
        assert_eq!(after[4], Value::Bytes(vec![0, 1, 255]));
        assert_eq!(after[5], Value::String("-01:02:03.000001".into()));
    }

    #[test]
    fn watermark_and_errors() {
        let wm = r#"{"payload":{"source":{"commit_ts":3,"db":"","table":""},"op":"m","ts_ms":1}}"#;
        assert_eq!(decode(None, wm.as_bytes()), Ok(Message::Watermark(3)));
        let bad = envelope(
            "c",
            "null",
            r#"{"id":"x","amount":1,"d":1,"ts":1,"b":"","tm":0}"#,
        );
        let e = decode(None, bad.as_bytes()).unwrap_err();
        assert!(e.0.contains("payload.after.id"), "{e}");
    }
}
