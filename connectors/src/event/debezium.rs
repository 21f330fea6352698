//! The Debezium envelope: `{before, after, source, op, ts_ms, transaction}`. Row images are
//! plain JSON objects keyed by column name, so Flink, StarRocks Routine Load and ksqlDB read
//! them as they read Debezium's own output.

use super::{ChangeEvent, Operation, Position, Value};
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
}
