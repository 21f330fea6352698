//! The consistency checker: proves a sink table equals its source, chunk by primary-key range.
//!
//! 1. **Chunks.** The source's key index is walked by keyset pagination (`WHERE key > last
//!    ORDER BY key LIMIT n`, never `OFFSET`) to find a boundary every `chunk_size` rows. The
//!    first chunk has no lower bound and the last none above, so sink rows outside the source's
//!    key range are still compared.
//! 2. **Digests.** For each chunk, on both sides at once, the row count and the sum modulo 2^64
//!    of per-row hashes over a canonical encoding of the row ([`canonical`]). Where the
//!    database can (MariaDB/MySQL, PostgreSQL, StarRocks, Oracle) the hash is computed by the
//!    database's own `MD5` in one aggregate query; otherwise (SQLite, float and JSON columns)
//!    the rows are streamed and hashed here with the same encoding, so the two agree. Between
//!    two MariaDB ≥ 10.8 servers a cheaper hash is used: CRC32 and CRC32C of a compact row text
//!    that reads most columns as they are ([`compact`]), XORed per chunk.
//! 3. **Bisection.** A chunk whose digests differ is split at its middle row (again by keyset),
//!    the left half digested on both sides and the right half derived by subtraction, until a
//!    range holds at most `leaf_rows` rows; those rows are fetched from both sides and compared
//!    column by column.
//! 4. **Report.** Missing, extra and different rows with their keys and the `INSERT`, `DELETE`
//!    or `UPDATE` that fixes the sink, in the sink's dialect ([`CheckReport`]).
//!
//! [`schedule`] runs checks of a pipeline on a cron schedule and on demand, with metrics,
//! OpenLineage data-quality facets and a [`CheckOutcome`] per table.

pub mod canonical;
pub mod compact;
mod compare;
mod fix;
mod key;
mod report;
pub mod schedule;
mod side;
mod sql;

pub use canonical::{Digest, RowHash};
pub use compare::{ResolvedSchema, TableCheck, check_table, parse_table_name, resolve_schema};
pub use fix::{FixTarget, literal};
pub use key::{Key, KeyRange, KeySpan};
pub use report::{CheckProgress, CheckReport, RowDifference, SideReport};
pub use schedule::{
    CheckOutcome, CheckScheduler, CheckTrigger, CheckVerdict, ScheduledTable, scheduler_from_spec,
    tables_from_spec,
};
pub use side::{Database, HashMode, NativeColumn, NativeTable, SqlSide, TableSide};
pub use sql::{Engine, HashSql, SideColumn, Statement, TableSql};

/// How a check chunks, bisects and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// Rows per chunk (default 10,000): one digest query per side per chunk.
    pub chunk_size: u64,
    /// Bisection stops and rows are compared once a range holds at most this many rows on
    /// either side (default 64).
    pub leaf_rows: u64,
    /// Chunks digested at the same time (default 4); each uses one connection per side. Four
    /// keep two cores per server busy while the other side or the network is waited for.
    pub parallelism: usize,
    /// Differing rows listed with their fix SQL (default 1,000); beyond it the report is
    /// marked truncated and the rest are only counted.
    pub max_differences: usize,
    pub hash_mode: HashMode,
    /// The per-row hash; `None` (the default) picks [`RowHash::Crc32c`] when both sides are
    /// MariaDB ≥ 10.8 and [`RowHash::Md5`] otherwise.
    pub row_hash: Option<RowHash>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            chunk_size: 50_000,
            leaf_rows: 64,
            parallelism: 4,
            max_differences: 1_000,
            hash_mode: HashMode::Auto,
            row_hash: None,
        }
    }
}

impl CheckOptions {
    /// Pure validation of the numbers.
    pub fn validate(&self) -> Result<(), CheckError> {
        if self.chunk_size < 2 {
            return Err(CheckError::Invalid(format!(
                "chunk size {} is too small (at least 2)",
                self.chunk_size
            )));
        }
        if self.leaf_rows == 0 || self.parallelism == 0 {
            return Err(CheckError::Invalid(
                "leaf rows and parallelism must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{url}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{side}: table {table} does not exist")]
    NoTable { side: String, table: String },
    #[error("{side}: the table has no primary key; the checker splits tables by primary key")]
    NoPrimaryKey { side: String },
    #[error("{side}: the sink table lacks the source's columns {columns:?}")]
    MissingColumns { side: String, columns: Vec<String> },
    #[error("{side}: column `{column}` has type `{native}`, which the checker cannot compare")]
    UnsupportedType {
        side: String,
        column: String,
        native: String,
    },
    #[error("{side}: query on {table} failed: {source}; SQL: {sql}")]
    Query {
        side: String,
        table: String,
        sql: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{side}: cannot read column `{column}` of {table}: {reason}")]
    Decode {
        side: String,
        table: String,
        column: String,
        reason: String,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
}

impl CheckError {
    /// Whether the error is in what was asked (URL, table, schema, options) rather than in
    /// running the check (exit code 2 vs 1 in the CLI).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            CheckError::Url { .. }
                | CheckError::NoTable { .. }
                | CheckError::NoPrimaryKey { .. }
                | CheckError::MissingColumns { .. }
                | CheckError::UnsupportedType { .. }
                | CheckError::Unsupported(_)
                | CheckError::Invalid(_)
        )
    }
}
