//! Errors of the table sink. Each names the table, and where it can, the operation and the key
//! of the row that failed.

use super::TableName;
use crate::event::{Position, TableId};

#[derive(Debug, thiserror::Error)]
pub enum TableSinkError {
    /// The sink URL cannot be used.
    #[error("invalid table sink URL `{url}`: {reason}")]
    Url { url: String, reason: String },

    /// Connecting (or setting up the session) failed. `url` has its password redacted.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    /// The batch holds a schema change; nothing of the batch was written. Schema evolution of
    /// sink tables is later work: the caller stops this table with a clear status.
    #[error(
        "table {table} (source {source_table}): DDL at {position} cannot be applied by the table sink \
         (schema evolution is not supported yet); nothing of this batch was written: {statement}"
    )]
    Ddl {
        table: TableName,
        source_table: TableId,
        /// Boxed to keep the error small (clippy `result_large_err`).
        position: Box<Position>,
        statement: Box<str>,
    },

    /// The source table has no primary key, so changes cannot be applied idempotently.
    #[error("table {table} (source {source_table}): the source schema has no primary key")]
    NoPrimaryKey {
        table: TableName,
        source_table: TableId,
    },

    /// A row that cannot be written as it is (missing row image, wrong number of values, a
    /// value that does not fit its column). Nothing of the batch was written.
    #[error("table {table}: {op} of key {key} at {position}: {reason}")]
    Row {
        table: TableName,
        op: &'static str,
        key: String,
        position: Box<Position>,
        reason: String,
    },

    /// The target table exists but lacks columns of the source schema.
    #[error("table {table} exists but lacks the source columns {missing:?}")]
    SchemaMismatch {
        table: TableName,
        missing: Vec<String>,
    },

    /// `CREATE TABLE` or the existence check before it failed.
    #[error("table {table}: cannot check or create it: {source}\n{sql}")]
    Create {
        table: TableName,
        sql: String,
        #[source]
        source: sqlx::Error,
    },

    /// A write statement failed; the batch's transaction was rolled back. `key` is the row the
    /// database refused when a row-by-row replay of the chunk found it; `keys` is the chunk's
    /// first and last key (`7`, or `1 … 900`).
    #[error("table {table}: {op} of {rows} row(s) failed {}: {source}", describe_key(.key, .keys))]
    Write {
        table: TableName,
        op: WriteOp,
        rows: usize,
        key: Option<String>,
        keys: String,
        /// Boxed to keep the error small (clippy `result_large_err`).
        #[source]
        source: Box<sqlx::Error>,
    },

    /// Beginning or committing the batch's transaction failed.
    #[error("table sink transaction ({what}) failed: {source}")]
    Transaction {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },

    /// A row of the breaker's bookkeeping tables (control row, journal) could not be bound.
    #[error("table {table}: bookkeeping row: {reason}")]
    Bookkeeping { table: TableName, reason: String },

    /// The write's guard found the table's breaker in another state than the write assumed
    /// (a promotion, rollback or release happened meanwhile); nothing was written.
    #[error(
        "table {table}: the breaker state changed under this write (expected {expected}); nothing was written"
    )]
    Fenced { table: TableName, expected: String },

    /// A read helper (`count_rows`, `fetch_rows`) failed.
    #[error("table {table}: query failed: {source}")]
    Query {
        table: TableName,
        #[source]
        source: sqlx::Error,
    },
}

/// The kind of statement that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp {
    Upsert,
    Delete,
}

impl std::fmt::Display for WriteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteOp::Upsert => "upsert",
            WriteOp::Delete => "delete",
        })
    }
}

fn describe_key(key: &Option<String>, keys: &str) -> String {
    match key {
        Some(key) => format!("at key {key}"),
        None if !keys.contains(" … ") => format!("at key {keys}"),
        None => format!("in keys {keys}"),
    }
}

impl TableSinkError {
    /// Whether the error says the database is unwell (connection, statement or transaction
    /// failures), as opposed to data it cannot take: only these count against the breaker.
    pub fn is_sink_fault(&self) -> bool {
        matches!(
            self,
            TableSinkError::Connect { .. }
                | TableSinkError::Write { .. }
                | TableSinkError::Transaction { .. }
                | TableSinkError::Query { .. }
        )
    }

    /// The target table the error is about, when it is about one.
    pub fn table(&self) -> Option<&TableName> {
        match self {
            TableSinkError::Ddl { table, .. }
            | TableSinkError::NoPrimaryKey { table, .. }
            | TableSinkError::Row { table, .. }
            | TableSinkError::SchemaMismatch { table, .. }
            | TableSinkError::Create { table, .. }
            | TableSinkError::Write { table, .. }
            | TableSinkError::Query { table, .. }
            | TableSinkError::Bookkeeping { table, .. }
            | TableSinkError::Fenced { table, .. } => Some(table),
            TableSinkError::Url { .. }
            | TableSinkError::Connect { .. }
            | TableSinkError::Transaction { .. } => None,
        }
    }
}
