//! The change-event model: one row change with its position, transaction, table, operation,
//! typed before/after images and the schema version it was read with.

mod canal;
mod debezium;
mod position;
mod value;

pub use canal::{CanalMessage, to_canal_json};
pub use debezium::{to_debezium_json, write_debezium_json};
pub use position::{PartitionResume, Position, SnapshotCursor};
pub(crate) use value::IsoTimestamp;
pub(crate) use value::base64_encode as base64;
pub use value::{Decimal, DecimalError, Value};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableId {
    pub schema: String,
    pub table: String,
}

impl TableId {
    pub fn new(schema: impl Into<String>, table: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            table: table.into(),
        }
    }

    /// Parses `schema.table`; a name without a dot gets the schema `default`.
    pub fn parse(text: &str) -> Self {
        match text.split_once('.') {
            Some((schema, table)) => Self::new(schema, table),
            None => Self::new("default", text),
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// The declared type of a column, as far as sinks need it (DDL, hashing, Kafka schemas).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Bool,
    Int,
    Decimal { precision: u8, scale: u8 },
    Float,
    String { max_length: Option<u32> },
    Bytes,
    Date,
    Timestamp,
    TimestampTz,
    Array(Box<ColumnType>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub column_type: ColumnType,
    pub nullable: bool,
}

/// A table's shape at one schema version. Rows are `Vec<Value>` aligned with `columns`, so
/// an event does not repeat column names; the schema is shared behind an `Arc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    pub table: TableId,
    /// Bumped on every DDL the source detects.
    pub version: u32,
    pub columns: Vec<Column>,
    /// Indexes into `columns`.
    pub primary_key: Vec<usize>,
}

impl TableSchema {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn key_columns(&self) -> impl Iterator<Item = &Column> {
        self.primary_key.iter().map(|i| &self.columns[*i])
    }
}

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Insert,
    Update,
    Delete,
    /// A schema change; `ChangeEvent::ddl` holds the statement.
    Ddl,
    /// A row read by a snapshot (initial load or a flat file), not by log capture.
    Read,
}

impl Operation {
    /// Debezium's `op` letter.
    pub fn code(self) -> &'static str {
        match self {
            Operation::Insert => "c",
            Operation::Update => "u",
            Operation::Delete => "d",
            Operation::Read => "r",
            Operation::Ddl => "ddl",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Ddl => "ddl",
            Operation::Read => "read",
        }
    }
}

/// The transaction an event belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub id: String,
    pub commit_time: Option<DateTime<Utc>>,
}

/// One row change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The pipeline source (its name in the manifest) that read it.
    pub source: Arc<str>,
    pub position: Position,
    pub transaction: Option<Transaction>,
    pub schema: Arc<TableSchema>,
    pub op: Operation,
    pub before: Option<Vec<Value>>,
    pub after: Option<Vec<Value>>,
    /// The statement, for `Operation::Ddl`.
    pub ddl: Option<String>,
}

impl ChangeEvent {
    pub fn table(&self) -> &TableId {
        &self.schema.table
    }

    /// The row image that identifies the row: after for inserts/updates/reads, before for deletes.
    pub fn row(&self) -> Option<&[Value]> {
        match self.op {
            Operation::Delete => self.before.as_deref(),
            _ => self.after.as_deref().or(self.before.as_deref()),
        }
    }

    /// The primary-key values, in key order.
    pub fn key(&self) -> Vec<&Value> {
        match self.row() {
            Some(row) => self
                .schema
                .primary_key
                .iter()
                .filter_map(|i| row.get(*i))
                .collect(),
            None => Vec::new(),
        }
    }

    /// The key as text (`1001` or `1001|EUR` for composite keys).
    pub fn key_text(&self) -> String {
        let key = self.key();
        match key.as_slice() {
            [one] => one.key_text(),
            many => many
                .iter()
                .map(|v| v.key_text())
                .collect::<Vec<_>>()
                .join("|"),
        }
    }

    /// Source commit time, when the source knows it.
    /// The size of the row (after the change, or before it for a delete) in bytes of data;
    /// see [`Value::data_len`].
    pub fn row_bytes(&self) -> usize {
        self.row()
            .map_or(0, |row| row.iter().map(Value::data_len).sum())
    }

    pub fn commit_time(&self) -> Option<DateTime<Utc>> {
        self.transaction.as_ref().and_then(|t| t.commit_time)
    }

    /// A rough size of the row data in bytes, for routing rules on row size.
    pub fn approx_size(&self) -> usize {
        fn size(v: &Value) -> usize {
            match v {
                Value::String(s) => s.len(),
                Value::Bytes(b) => b.len(),
                Value::Array(a) => a.iter().map(size).sum(),
                _ => 8,
            }
        }
        [&self.before, &self.after]
            .iter()
            .filter_map(|r| r.as_ref())
            .flat_map(|r| r.iter())
            .map(size)
            .sum()
    }
}
