//! Sink tables written through sqlx: upsert and delete by primary key.
//!
//! The pipeline delivers events to a [`TableWriter`] at least once; the table still ends up
//! holding each row exactly once because every change is applied by primary key: inserts,
//! updates and snapshot reads become upserts, deletes delete by key. Replaying a batch (after a
//! crash between the write and the position acknowledgement) therefore leaves the same rows.
//!
//! # What a batch does
//!
//! [`TableWriter::apply`] takes a slice of events (`&[ChangeEvent]` or `&[Arc<ChangeEvent>]`)
//! and:
//! 1. rejects the whole batch, before writing anything, if it holds a DDL event
//!    ([`TableSinkError::Ddl`] names the table and position; schema evolution is later work);
//! 2. converts every value to its column's type (decimals are checked against the column's
//!    scale and precision, never rounded) and collapses the batch to the last change per key,
//!    in event order (an update that changes the key deletes the old key);
//! 3. writes all tables of the batch in **one transaction**: multi-row upserts
//!    (`INSERT … ON DUPLICATE KEY UPDATE` on MySQL/MariaDB, `INSERT … ON CONFLICT (pk) DO UPDATE`
//!    on PostgreSQL and SQLite, plain `INSERT INTO` on a StarRocks primary-key table) and
//!    multi-row deletes (`DELETE … WHERE pk IN (…)`), chunked to stay under the bind-parameter
//!    limit of the database (SQLite 32766, MySQL and PostgreSQL 65535), under
//!    [`TableSinkOptions::max_rows_per_statement`] and under
//!    [`TableSinkOptions::max_statement_bytes`].
//!
//! When a statement fails, the transaction is rolled back and the chunk is replayed row by row
//! in a throw-away transaction to find the key of the row the database refused, so the error
//! names table, operation and key.
//!
//! # Value binding
//!
//! | column type | MySQL/MariaDB | PostgreSQL | SQLite | StarRocks |
//! |---|---|---|---|---|
//! | `Int` | `BIGINT` | `BIGINT` | `BIGINT` | `BIGINT` |
//! | `Decimal{p,s}` | `DECIMAL(p,s)` | `NUMERIC(p,s)` | `TEXT` (see below) | `DECIMAL(p,s)` |
//! | `String{n}` | `VARCHAR(n)` up to 255, else `TEXT`/`MEDIUMTEXT`/`LONGTEXT` | `VARCHAR(n)` / `TEXT` | `TEXT` | `VARCHAR(n)` / `STRING` |
//! | `Bytes` | `LONGBLOB` (`VARBINARY(255)` in a key) | `BYTEA` | `BLOB` | `VARBINARY` |
//! | `Date` | `DATE` | `DATE` | `DATE` (ISO text) | `DATE` |
//! | `Timestamp` | `DATETIME(6)` | `TIMESTAMP` | `DATETIME` (ISO text) | `DATETIME` |
//! | `TimestampTz` | `DATETIME(6)`, in UTC | `TIMESTAMP WITH TIME ZONE` | `DATETIME` (RFC 3339 text, UTC) | `DATETIME`, in UTC |
//! | `Bool` | `BOOLEAN` | `BOOLEAN` | `BOOLEAN` | `BOOLEAN` |
//! | `Float` | `DOUBLE` | `DOUBLE PRECISION` | `DOUBLE` | `DOUBLE` |
//! | `Array` | `JSON` | `JSONB` | `TEXT` (JSON) | `JSON` |
//!
//! Decimals are **bound as strings** carrying exactly the column's scale (`-0.01`,
//! `12345678901.23`), cast to `NUMERIC` on PostgreSQL; the database parses them exactly, and
//! they are never routed through `f64` or `rust_decimal` (which stops at 28 digits where the
//! event model allows 38). A value with more decimal places than the column is an error unless
//! the extra digits are zeros. SQLite stores decimals as `TEXT`, because its `NUMERIC` affinity
//! would turn `12.00` into the 8-byte float `12.0`. Timestamps with a zone are written as UTC
//! instants on every dialect but PostgreSQL, so their original offset is not kept.
//! MySQL connections run with `STRICT_ALL_TABLES` added to `sql_mode` (an over-long value is an
//! error, not a silent truncation), and MySQL tables use a binary, no-pad collation so that keys
//! differing in case or trailing spaces stay different rows, as they are in the source.
//!
//! # Target table names
//!
//! A source table `schema.table` is written to [`TableSinkOptions::tables`]'s entry when one is
//! configured; otherwise to `table` (or `schema_table` with [`TableNaming::SchemaAndTable`]) in
//! the configured [`TableSinkOptions::schema`], or, when that is unset, in the connection's
//! default: the URL's database on MySQL, `current_schema()` on PostgreSQL, `main` on SQLite.
//! The source schema is never used as a database name by itself.
//!
//! # StarRocks
//!
//! Selected with [`TableSinkOptions::dialect`] (or a `starrocks://` URL, rewritten to
//! `mysql://`): tables are created as primary-key tables (key columns first, `DISTRIBUTED BY
//! HASH` on the key), upserts are plain `INSERT INTO` (a primary-key table replaces the row),
//! deletes are `DELETE … WHERE`. StarRocks has no multi-statement transactions, so a batch is
//! applied statement by statement; replays stay idempotent. Its SQL is unit-tested; no
//! StarRocks server runs in this repository's tests, and Stream Load would be the faster path.

mod bind;
mod control;
mod dialect;
mod error;
pub mod promote;
pub mod shadow;
mod sink_url;
mod writer;

pub use control::ControlRow;
pub use dialect::{DdlOptions, Dialect};
pub use error::{TableSinkError, WriteOp};
pub use shadow::{DurableState, ShadowTable};
pub use sink_url::{TableSinkUrl, with_password, with_password_env};
pub use writer::{EnsureOutcome, Guard, SideRows, TableWriter, WritePlan};

use crate::event::{Position, TableId};
use std::collections::BTreeMap;
use std::fmt;

/// A target table: an optional schema (PostgreSQL schema, MySQL database, SQLite attached
/// database) and a table name. `None` means the connection's default.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: Option<String>,
    pub table: String,
}

impl TableName {
    /// A table in the connection's default schema/database.
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            schema: None,
            table: table.into(),
        }
    }

    pub fn with_schema(schema: impl Into<String>, table: impl Into<String>) -> Self {
        Self {
            schema: Some(schema.into()),
            table: table.into(),
        }
    }

    /// The quoted, qualified name in `dialect` (`"s"."t"`, `` `db`.`t` ``).
    pub fn quoted(&self, dialect: Dialect) -> String {
        match &self.schema {
            Some(schema) => format!(
                "{}.{}",
                dialect.quote_ident(schema),
                dialect.quote_ident(&self.table)
            ),
            None => dialect.quote_ident(&self.table),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

/// How a source table name becomes a target table name when no explicit mapping exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableNaming {
    /// `schema.table` → `table`.
    #[default]
    SourceTable,
    /// `schema.table` → `schema_table` (for sinks that collect same-named tables of several
    /// source schemas).
    SchemaAndTable,
}

/// How a [`TableWriter`] connects and writes.
#[derive(Debug, Clone)]
pub struct TableSinkOptions {
    /// Overrides the dialect detected from the URL; the only useful override is
    /// [`Dialect::StarRocks`] on a `mysql://` URL.
    pub dialect: Option<Dialect>,
    /// The schema (PostgreSQL) / database (MySQL, StarRocks) / attached database (SQLite) that
    /// target tables live in; `None` uses the connection's default.
    pub schema: Option<String>,
    pub naming: TableNaming,
    /// Explicit target names per source table; these win over `schema` and `naming`.
    pub tables: BTreeMap<TableId, TableName>,
    /// Create missing target tables on the first batch that reaches them (default true).
    pub create_tables: bool,
    /// Upper bound on rows per multi-row statement (default 1000); the bind-parameter limit of
    /// the dialect may lower it further.
    pub max_rows_per_statement: usize,
    /// Approximate upper bound on the bound data of one statement (default 4 MiB), to stay
    /// under MySQL's `max_allowed_packet`.
    pub max_statement_bytes: usize,
    /// Connection pool size (default 4; `sqlite::memory:` always uses 1).
    pub max_connections: u32,
    /// Table options used by `CREATE TABLE`.
    pub ddl: DdlOptions,
}

impl Default for TableSinkOptions {
    fn default() -> Self {
        Self {
            dialect: None,
            schema: None,
            naming: TableNaming::SourceTable,
            tables: BTreeMap::new(),
            create_tables: true,
            max_rows_per_statement: 1000,
            max_statement_bytes: 4 << 20,
            max_connections: 4,
            ddl: DdlOptions::default(),
        }
    }
}

impl TableSinkOptions {
    /// The target table for a source table (see the module docs for the rules).
    pub fn target_for(&self, source: &TableId) -> TableName {
        if let Some(name) = self.tables.get(source) {
            return name.clone();
        }
        let table = match self.naming {
            TableNaming::SourceTable => source.table.clone(),
            TableNaming::SchemaAndTable => format!("{}_{}", source.schema, source.table),
        };
        TableName {
            schema: self.schema.clone(),
            table,
        }
    }
}

/// What one [`TableWriter::apply`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Events in the batch.
    pub events: usize,
    /// Rows sent in upsert statements, after collapsing the batch to one change per key.
    pub upserts: usize,
    /// Keys sent in delete statements, after collapsing.
    pub deletes: usize,
    /// Rows the database reported deleted (lower than `deletes` on a replay).
    pub deleted_rows: u64,
    /// Events superseded by a later event for the same key in the same batch.
    pub collapsed: usize,
    /// Statements executed.
    pub statements: usize,
    /// Distinct target tables written.
    pub tables: usize,
    /// The position of the batch's last event: what the caller may acknowledge once `apply`
    /// returned `Ok`.
    pub last_position: Option<Position>,
}
