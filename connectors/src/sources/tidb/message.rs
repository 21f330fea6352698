//! What a TiCDC changefeed message says, whichever protocol carried it.

use crate::event::{ColumnType, Operation, TableId, Value};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use std::fmt;

/// One decoded changefeed message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Row changes (canal-json may batch several rows of one table in one message).
    Rows(Vec<RowChange>),
    Ddl(DdlChange),
    /// Every event with a smaller commit TS has been sent on this partition.
    Watermark(u64),
}

/// A column as the message describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnInfo {
    pub name: String,
    pub column_type: ColumnType,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub commit_ts: u64,
    pub table: TableId,
    pub op: Operation,
    /// In the order the message lists them.
    pub columns: Vec<ColumnInfo>,
    pub primary_key: Vec<String>,
    pub before: Option<Vec<Value>>,
    pub after: Option<Vec<Value>>,
    /// When the change happened upstream (ms since the epoch), if the message says.
    pub event_time_ms: Option<i64>,
}

impl RowChange {
    /// The primary-key values as text, for de-duplicating within a transaction.
    pub fn key_text(&self) -> String {
        let row = match self.op {
            Operation::Delete => self.before.as_ref(),
            _ => self.after.as_ref(),
        };
        let mut out = String::new();
        for name in &self.primary_key {
            let at = self.columns.iter().position(|c| &c.name == name);
            if let (Some(i), Some(row)) = (at, row)
                && let Some(v) = row.get(i)
            {
                out.push_str(&v.key_text());
            }
            out.push('|');
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DdlChange {
    pub commit_ts: u64,
    /// The table the statement changes; `table` is empty for database-level DDL.
    pub table: TableId,
    pub sql: String,
    pub event_time_ms: Option<i64>,
}

/// A message that could not be understood: the reason names the field (and column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// A JSON object read with its keys in document order (serde_json's map sorts them, and the
/// column order of a table is worth keeping).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ordered<V>(pub Vec<(String, V)>);

impl<V> Ordered<V> {
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V2<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V2(std::marker::PhantomData))
    }
}
