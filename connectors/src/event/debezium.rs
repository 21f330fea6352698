//! The Debezium envelope: `{before, after, source, op, ts_ms, transaction}`. Row images are
//! plain JSON objects keyed by column name, so Flink, StarRocks Routine Load and ksqlDB read
//! them as they read Debezium's own output.

use super::{ChangeEvent, Operation, Position, Value};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value as J, json};

/// Renders `event` as a Debezium envelope. `now_ms` is the processing time (`ts_ms`).
pub fn to_debezium_json(event: &ChangeEvent, now_ms: i64) -> J {
    let row = |values: &Option<Vec<Value>>| -> J {
        match values {
            None => J::Null,
            Some(values) => {
                let mut obj = Map::with_capacity(values.len());
                for (col, v) in event.schema.columns.iter().zip(values) {
                    obj.insert(col.name.clone(), v.to_json());
                }
                J::Object(obj)
            }
        }
    };
    let mut source = Map::new();
    source.insert("version".into(), J::from(env!("CARGO_PKG_VERSION")));
    source.insert("connector".into(), J::from(event.position.kind()));
    source.insert("name".into(), J::from(&*event.source));
    source.insert(
        "ts_ms".into(),
        event
            .commit_time()
            .map_or(J::from(0), |t| J::from(t.timestamp_millis())),
    );
    source.insert(
        "snapshot".into(),
        J::from(if event.op == Operation::Read {
            "true"
        } else {
            "false"
        }),
    );
    source.insert("db".into(), J::from(event.table().schema.as_str()));
    source.insert("schema".into(), J::from(event.table().schema.as_str()));
    source.insert("table".into(), J::from(event.table().table.as_str()));
    source.insert("schema_version".into(), J::from(event.schema.version));
    match &event.position {
        Position::Oracle {
            scn,
            commit_scn,
            thread,
            ..
        } => {
            source.insert("scn".into(), J::from(scn.to_string()));
            source.insert("commit_scn".into(), J::from(commit_scn.to_string()));
            source.insert("thread".into(), J::from(*thread));
        }
        Position::Tidb { commit_ts, .. } => {
            source.insert("commit_ts".into(), J::from(*commit_ts));
        }
        Position::File {
            file,
            offset,
            record,
            ..
        } => {
            source.insert("file".into(), J::from(file.as_str()));
            source.insert("pos".into(), J::from(*offset));
            source.insert("row".into(), J::from(*record));
        }
    }
    if let Some(txn) = &event.transaction {
        source.insert("txId".into(), J::from(txn.id.as_str()));
    }
    if event.op == Operation::Ddl {
        // Debezium's schema-change record shape.
        return json!({
            "source": J::Object(source),
            "ts_ms": now_ms,
            "databaseName": event.table().schema,
            "ddl": event.ddl.clone().unwrap_or_default(),
            "tableChanges": [{
                "type": "ALTER",
                "id": event.table().to_string(),
                "table": {
                    "primaryKeyColumnNames": event.schema.key_columns().map(|c| c.name.clone()).collect::<Vec<_>>(),
                    "columns": event.schema.columns.iter().map(|c| json!({"name": c.name, "optional": c.nullable})).collect::<Vec<_>>(),
                }
            }],
        });
    }
    json!({
        "before": row(&event.before),
        "after": row(&event.after),
        "source": J::Object(source),
        "op": event.op.code(),
        "ts_ms": now_ms,
        "transaction": event.transaction.as_ref().map(|t| json!({"id": t.id})),
    })
}

/// Writes the envelope of [`to_debezium_json`] straight into `out` (the same JSON, keys in
/// envelope order), without building a `serde_json::Value` tree: the real-time path's hot
/// loop. Schema-change events take the general route.
pub fn write_debezium_json(event: &ChangeEvent, now_ms: i64, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail, and every value here serializes.
    let _ = if event.op == Operation::Ddl {
        serde_json::to_writer(out, &to_debezium_json(event, now_ms))
    } else {
        serde_json::to_writer(out, &Envelope { event, now_ms })
    };
}

struct Envelope<'a> {
    event: &'a ChangeEvent,
    now_ms: i64,
}

impl Serialize for Envelope<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut m = s.serialize_map(Some(6))?;
        m.serialize_entry("before", &Row(e, e.before.as_deref()))?;
        m.serialize_entry("after", &Row(e, e.after.as_deref()))?;
        m.serialize_entry("source", &Source(e))?;
        m.serialize_entry("op", e.op.code())?;
        m.serialize_entry("ts_ms", &self.now_ms)?;
        match &e.transaction {
            Some(t) => m.serialize_entry("transaction", &TransactionId(&t.id))?,
            None => m.serialize_entry("transaction", &())?,
        }
        m.end()
    }
}

struct TransactionId<'a>(&'a str);

impl Serialize for TransactionId<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("id", self.0)?;
        m.end()
    }
}

/// A row image: column name to value, `null` when the image is absent.
struct Row<'a>(&'a ChangeEvent, Option<&'a [Value]>);

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Some(values) = self.1 else {
            return s.serialize_unit();
        };
        let mut m = s.serialize_map(Some(values.len()))?;
        for (col, v) in self.0.schema.columns.iter().zip(values) {
            m.serialize_entry(&col.name, &JsonValue(v))?;
        }
        m.end()
    }
}

/// A value as [`Value::to_json`] renders it.
struct JsonValue<'a>(&'a Value);

impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Decimal(d) => s.collect_str(d),
            Value::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Float(_) => s.serialize_unit(),
            Value::String(text) => s.serialize_str(text),
            Value::Array(items) => s.collect_seq(items.iter().map(JsonValue)),
            Value::Timestamp(t) => s.collect_str(&super::value::IsoTimestamp(t)),
            // Rare in the hot path: the general rendering.
            other => other.to_json().serialize(s),
        }
    }
}

struct Source<'a>(&'a ChangeEvent);

impl Serialize for Source<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let table = e.table();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("version", env!("CARGO_PKG_VERSION"))?;
        m.serialize_entry("connector", e.position.kind())?;
        m.serialize_entry("name", &*e.source)?;
        m.serialize_entry(
            "ts_ms",
            &e.commit_time().map_or(0, |t| t.timestamp_millis()),
        )?;
        m.serialize_entry(
            "snapshot",
            if e.op == Operation::Read {
                "true"
            } else {
                "false"
            },
        )?;
        m.serialize_entry("db", &table.schema)?;
        m.serialize_entry("schema", &table.schema)?;
        m.serialize_entry("table", &table.table)?;
        m.serialize_entry("schema_version", &e.schema.version)?;
        match &e.position {
            Position::Oracle {
                scn,
                commit_scn,
                thread,
                ..
            } => {
                m.serialize_entry("scn", &scn.to_string())?;
                m.serialize_entry("commit_scn", &commit_scn.to_string())?;
                m.serialize_entry("thread", thread)?;
            }
            Position::Tidb { commit_ts, .. } => m.serialize_entry("commit_ts", commit_ts)?,
            Position::File {
                file,
                offset,
                record,
                ..
            } => {
                m.serialize_entry("file", file)?;
                m.serialize_entry("pos", offset)?;
                m.serialize_entry("row", record)?;
            }
        }
        if let Some(txn) = &e.transaction {
            m.serialize_entry("txId", &txn.id)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Column, ColumnType, Decimal, TableId, TableSchema, Transaction};
    use std::sync::Arc;

    fn schema() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            table: TableId::new("bank", "ledger"),
            version: 3,
            columns: vec![
                Column {
                    name: "id".into(),
                    column_type: ColumnType::Int,
                    nullable: false,
                },
                Column {
                    name: "amount".into(),
                    column_type: ColumnType::Decimal {
                        precision: 11,
                        scale: 2,
                    },
                    nullable: true,
                },
            ],
            primary_key: vec![0],
        })
    }

    #[test]
    fn update_renders_as_debezium_envelope() {
        let event = ChangeEvent {
            source: "ora".into(),
            position: Position::tidb(42, 0),
            transaction: Some(Transaction {
                id: "tx1".into(),
                commit_time: None,
            }),
            schema: schema(),
            op: Operation::Update,
            before: Some(vec![Value::Int(7), Value::Decimal(Decimal::new(-100, 2))]),
            after: Some(vec![Value::Int(7), Value::Null]),
            ddl: None,
        };
        let j = to_debezium_json(&event, 1000);
        assert_eq!(j["op"], "u");
        assert_eq!(j["before"]["amount"], "-1.00");
        assert_eq!(j["after"]["amount"], J::Null);
        assert_eq!(j["source"]["commit_ts"], 42);
        assert_eq!(j["source"]["table"], "ledger");
        assert_eq!(j["source"]["schema_version"], 3);
        assert_eq!(j["transaction"]["id"], "tx1");
        assert_eq!(event.key_text(), "7");
    }

    #[test]
    fn the_direct_writer_renders_the_same_json() {
        let mut events = Vec::new();
        for (op, position) in [
            (Operation::Update, Position::tidb(42, 3)),
            (
                Operation::Read,
                Position::File {
                    file: "a.dat".into(),
                    offset: 100,
                    length: 50,
                    record: 3,
                },
            ),
            (
                Operation::Delete,
                Position::Oracle {
                    scn: 9,
                    commit_scn: 10,
                    thread: 2,
                    resume_scn: 8,
                    committed: Default::default(),
                    xid: "x".into(),
                    index: 1,
                },
            ),
        ] {
            events.push(ChangeEvent {
                source: "src".into(),
                position,
                transaction: (op != Operation::Read).then(|| Transaction {
                    id: "tx9".into(),
                    commit_time: chrono::DateTime::from_timestamp(1_700_000_000, 0),
                }),
                schema: schema(),
                op,
                before: (op != Operation::Read)
                    .then(|| vec![Value::Int(-7), Value::Decimal(Decimal::new(12345, 2))]),
                after: (op != Operation::Delete).then(|| {
                    vec![
                        Value::Array(vec![Value::Float(1.5), Value::Float(f64::NAN)]),
                        Value::String("ünï \"q\"".into()),
                    ]
                }),
                ddl: None,
            });
        }
        for event in &events {
            let mut out = Vec::new();
            write_debezium_json(event, 77, &mut out);
            let written: J = serde_json::from_slice(&out).expect("valid JSON");
            assert_eq!(
                written,
                to_debezium_json(event, 77),
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
    }
}
