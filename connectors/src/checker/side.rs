//! One side of a check: a connected database and a table in it. [`TableSide`] is the seam the
//! checker drives (boundaries, digests, rows); [`SqlSide`] implements it over sqlx for
//! MariaDB/MySQL, StarRocks, PostgreSQL and SQLite. An Oracle side would implement the same
//! trait with the SQL [`TableSql`] already generates for Oracle.

use super::CheckError;
use super::canonical::{Digest, RowHash, sum_mod_2_64};
use super::compact::{crc_hash, row_hash_of};
use super::key::{Key, KeyRange, KeySpan};
use super::sql::{Engine, HashSql, SideColumn, Statement, TableSql};
use crate::event::{ColumnType, Decimal, Value};
use crate::sinks::table::{TableName, TableSinkUrl};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures::TryStreamExt;
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Arguments, AssertSqlSafe, Row};
use std::str::FromStr;

/// What the checker asks of each side.
#[async_trait::async_trait]
pub trait TableSide: Send + Sync {
    /// `url table`, for reports and errors (password removed).
    fn label(&self) -> String;
    /// The key of the `limit`-th row after `after`, or of the last row when fewer follow;
    /// `None` when no row follows.
    async fn boundary(&self, after: Option<&Key>, limit: u64) -> Result<Option<Key>, CheckError>;
    /// Row count and hash sum of the rows in `range`.
    async fn digest(&self, range: &KeyRange) -> Result<Digest, CheckError>;
    /// The rows in `range`, ordered by key, as values of the logical column types.
    async fn rows(&self, range: &KeyRange) -> Result<Vec<Vec<Value>>, CheckError>;
    /// For a single integer key: its smallest and largest value and the estimated rows, so
    /// chunks can be cut without walking the index. `None` (the default) when unknown.
    async fn key_span(&self) -> Result<Option<KeySpan>, CheckError> {
        Ok(None)
    }
}

/// How a side computes digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HashMode {
    /// In SQL where the engine and every column type allow it, else streamed.
    #[default]
    Auto,
    /// Always stream the rows and hash them here (same encoding; for tests and odd types).
    Stream,
}

#[derive(Clone)]
enum Pool {
    MySql(MySqlPool),
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// A connected database.
#[derive(Clone)]
pub struct Database {
    url: TableSinkUrl,
    engine: Engine,
    pool: Pool,
    /// How this server computes the CRC32C row hash, `None` when it cannot (anything but
    /// MariaDB ≥ 10.8).
    crc: Option<HashSql>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.url)
            .field("engine", &self.engine)
            .field("crc", &self.crc)
            .finish()
    }
}

/// A column as the database declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeColumn {
    pub name: String,
    /// The type as the database names it (`decimal(18,2)`, `timestamp with time zone`).
    pub native: String,
    /// The logical type, `None` when the checker has no canonical form for it.
    pub logical: Option<ColumnType>,
    pub nullable: bool,
    /// MySQL only: a character set whose bytes are not already UTF-8.
    pub convert_to_utf8: bool,
}

/// A table's columns and primary key as the database declares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeTable {
    pub columns: Vec<NativeColumn>,
    /// Column names, in key order.
    pub primary_key: Vec<String>,
}

impl Database {
    /// Connects to `url`: `mysql://`/`mariadb://`, `starrocks://`, `postgres://` or
    /// `sqlite://`. `oracle://` is refused: its SQL is generated, but no driver is built in.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, CheckError> {
        if url.trim().to_ascii_lowercase().starts_with("oracle:") {
            return Err(CheckError::Unsupported(
                "oracle:// sides are not supported by this build (the Oracle SQL is generated and \
                 unit-tested; no Oracle driver is linked)"
                    .into(),
            ));
        }
        let parsed = TableSinkUrl::parse(url).map_err(|e| CheckError::Url {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let redacted = parsed.redacted();
        let connect_err = |source| CheckError::Connect {
            url: redacted.clone(),
            source,
        };
        let max = max_connections.max(1);
        let engine = match parsed.dialect() {
            crate::sinks::table::Dialect::MySql => Engine::MySql,
            crate::sinks::table::Dialect::StarRocks => Engine::StarRocks,
            crate::sinks::table::Dialect::Postgres => Engine::Postgres,
            crate::sinks::table::Dialect::Sqlite => Engine::Sqlite,
        };
        let pool = match engine {
            Engine::MySql | Engine::StarRocks => {
                // sqlx sets the session time zone to +00:00: TIMESTAMP columns read as UTC.
                let opts = MySqlConnectOptions::from_str(parsed.connect_str())
                    .map_err(connect_err)?
                    .timezone(Some("+00:00".to_string()));
                Pool::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(max)
                        .connect_with(opts)
                        .await
                        .map_err(connect_err)?,
                )
            }
            Engine::Postgres => {
                let opts = PgConnectOptions::from_str(parsed.connect_str())
                    .map_err(connect_err)?
                    .options([("TimeZone", "UTC")]);
                Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(max)
                        .connect_with(opts)
                        .await
                        .map_err(connect_err)?,
                )
            }
            Engine::Sqlite | Engine::Oracle => {
                let opts =
                    SqliteConnectOptions::from_str(parsed.connect_str()).map_err(connect_err)?;
                let mut pool = SqlitePoolOptions::new().max_connections(max);
                if parsed.is_sqlite_memory() {
                    pool = pool.max_connections(1);
                }
                Pool::Sqlite(pool.connect_with(opts).await.map_err(connect_err)?)
            }
        };
        let crc = match (&pool, engine) {
            (Pool::MySql(p), Engine::MySql) => mariadb_crc_support(p).await,
            _ => None,
        };
        Ok(Self {
            url: parsed,
            engine,
            pool,
            crc,
        })
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// How this server computes the CRC32C row hash in SQL; `None` when it cannot.
    pub fn crc_support(&self) -> Option<HashSql> {
        self.crc
    }

    /// The URL without its password.
    pub fn redacted_url(&self) -> String {
        self.url.redacted()
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::MySql(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
    }

    fn query_err(&self, table: &TableName, sql: &str, source: sqlx::Error) -> CheckError {
        CheckError::Query {
            side: self.redacted_url(),
            table: table.to_string(),
            sql: sql.to_string(),
            source,
        }
    }

    /// The columns and primary key of `table`; [`CheckError::NoTable`] when it does not exist.
    pub async fn describe(&self, table: &TableName) -> Result<NativeTable, CheckError> {
        let err = |sql: &str, e| self.query_err(table, sql, e);
        let mut columns = Vec::new();
        let primary_key: Vec<String>;
        match &self.pool {
            Pool::MySql(p) => {
                let sql = "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), \
                           CAST(COLUMN_TYPE AS CHAR), CAST(IS_NULLABLE AS CHAR), \
                           CAST(IFNULL(CHARACTER_SET_NAME, '') AS CHAR), \
                           CAST(IFNULL(NUMERIC_PRECISION, 0) AS SIGNED), \
                           CAST(IFNULL(NUMERIC_SCALE, 0) AS SIGNED), \
                           CAST(IFNULL(CHARACTER_MAXIMUM_LENGTH, 0) AS SIGNED), \
                           CAST(COLUMN_KEY AS CHAR) \
                           FROM information_schema.COLUMNS \
                           WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
                           ORDER BY ORDINAL_POSITION";
                let rows = sqlx::query(sql)
                    .bind(table.schema.clone())
                    .bind(&table.table)
                    .fetch_all(p)
                    .await
                    .map_err(|e| err(sql, e))?;
                for r in rows {
                    let get = |i| r.try_get::<String, _>(i);
                    let num = |i| r.try_get::<i64, _>(i);
                    let (name, data_type, column_type, nullable, charset) = (
                        get(0).map_err(|e| err(sql, e))?,
                        get(1).map_err(|e| err(sql, e))?.to_ascii_lowercase(),
                        get(2).map_err(|e| err(sql, e))?.to_ascii_lowercase(),
                        get(3).map_err(|e| err(sql, e))?,
                        get(4).map_err(|e| err(sql, e))?.to_ascii_lowercase(),
                    );
                    let (precision, scale, max_len) = (
                        num(5).map_err(|e| err(sql, e))?,
                        num(6).map_err(|e| err(sql, e))?,
                        num(7).map_err(|e| err(sql, e))?,
                    );
                    let logical =
                        mysql_logical(&data_type, &column_type, precision, scale, max_len);
                    let convert_to_utf8 = !charset.is_empty()
                        && !matches!(charset.as_str(), "utf8mb4" | "utf8mb3" | "utf8" | "ascii");
                    columns.push(NativeColumn {
                        name,
                        native: column_type,
                        logical,
                        nullable: nullable == "YES",
                        convert_to_utf8,
                    });
                }
                let sql = "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.KEY_COLUMN_USAGE \
                           WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
                           AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION";
                primary_key = sqlx::query_scalar(sql)
                    .bind(table.schema.clone())
                    .bind(&table.table)
                    .fetch_all(p)
                    .await
                    .map_err(|e| err(sql, e))?;
            }
            Pool::Postgres(p) => {
                let sql = "SELECT column_name::text, data_type::text, is_nullable::text, \
                           COALESCE(numeric_precision, 0)::int8, COALESCE(numeric_scale, -1)::int8, \
                           COALESCE(character_maximum_length, 0)::int8 \
                           FROM information_schema.columns \
                           WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2 \
                           ORDER BY ordinal_position";
                let rows = sqlx::query(sql)
                    .bind(table.schema.clone())
                    .bind(&table.table)
                    .fetch_all(p)
                    .await
                    .map_err(|e| err(sql, e))?;
                for r in rows {
                    let name: String = r.try_get(0).map_err(|e| err(sql, e))?;
                    let data_type: String = r.try_get(1).map_err(|e| err(sql, e))?;
                    let nullable: String = r.try_get(2).map_err(|e| err(sql, e))?;
                    let precision: i64 = r.try_get(3).map_err(|e| err(sql, e))?;
                    let scale: i64 = r.try_get(4).map_err(|e| err(sql, e))?;
                    let max_len: i64 = r.try_get(5).map_err(|e| err(sql, e))?;
                    columns.push(NativeColumn {
                        name,
                        logical: postgres_logical(&data_type, precision, scale, max_len),
                        native: data_type,
                        nullable: nullable == "YES",
                        convert_to_utf8: false,
                    });
                }
                let sql = "SELECT a.attname::text FROM pg_index i \
                           JOIN pg_class c ON c.oid = i.indrelid \
                           JOIN pg_namespace n ON n.oid = c.relnamespace \
                           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) \
                           WHERE i.indisprimary AND c.relname = $2 \
                           AND n.nspname = COALESCE($1, current_schema()) \
                           ORDER BY array_position(i.indkey::int2[], a.attnum)";
                primary_key = sqlx::query_scalar(sql)
                    .bind(table.schema.clone())
                    .bind(&table.table)
                    .fetch_all(p)
                    .await
                    .map_err(|e| err(sql, e))?;
            }
            Pool::Sqlite(p) => {
                let sql = format!(
                    "SELECT name, type, \"notnull\", pk FROM pragma_table_info({}{})",
                    sqlite_literal(&table.table),
                    table
                        .schema
                        .as_deref()
                        .map(|s| format!(", {}", sqlite_literal(s)))
                        .unwrap_or_default()
                );
                let rows = sqlx::query(AssertSqlSafe(sql.clone()))
                    .fetch_all(p)
                    .await
                    .map_err(|e| err(&sql, e))?;
                let mut keyed = Vec::new();
                for r in rows {
                    let name: String = r.try_get(0).map_err(|e| err(&sql, e))?;
                    let declared: String = r.try_get(1).map_err(|e| err(&sql, e))?;
                    let notnull: i64 = r.try_get(2).map_err(|e| err(&sql, e))?;
                    let pk: i64 = r.try_get(3).map_err(|e| err(&sql, e))?;
                    if pk > 0 {
                        keyed.push((pk, name.clone()));
                    }
                    columns.push(NativeColumn {
                        name,
                        logical: sqlite_logical(&declared),
                        native: declared,
                        nullable: notnull == 0,
                        convert_to_utf8: false,
                    });
                }
                keyed.sort();
                primary_key = keyed.into_iter().map(|(_, n)| n).collect();
            }
        }
        if columns.is_empty() {
            return Err(CheckError::NoTable {
                side: self.redacted_url(),
                table: table.to_string(),
            });
        }
        Ok(NativeTable {
            columns,
            primary_key,
        })
    }

    /// Runs a statement (tests and the fix SQL of a report).
    pub async fn execute(&self, sql: &str) -> Result<u64, CheckError> {
        let table = TableName::new("-");
        let run = AssertSqlSafe(sql.to_string());
        let result = match &self.pool {
            Pool::MySql(p) => sqlx::query(run).execute(p).await.map(|r| r.rows_affected()),
            Pool::Postgres(p) => sqlx::query(run).execute(p).await.map(|r| r.rows_affected()),
            Pool::Sqlite(p) => sqlx::query(run).execute(p).await.map(|r| r.rows_affected()),
        };
        result.map_err(|e| self.query_err(&table, sql, e))
    }
}

/// Whether a MySQL-protocol server is MariaDB ≥ 10.8 (which has `CRC32C()`), and whether it
/// evaluates the session-variable form of the CRC row hash left to right: the forms are run
/// over two literal rows and compared with the hash computed here. `None` when neither
/// agrees (the MD5 hash, which every server computes, is used then).
async fn mariadb_crc_support(pool: &MySqlPool) -> Option<HashSql> {
    let version: String = sqlx::query_scalar("SELECT CAST(VERSION() AS CHAR)")
        .fetch_one(pool)
        .await
        .ok()?;
    if !mariadb_has_crc32c(&version) {
        return None;
    }
    let expected = crc_hash(b"a\xff1") ^ crc_hash(b"bc\xff22");
    let rows = "(SELECT 'a' AS a, 1 AS b UNION ALL SELECT 'bc', 22) t";
    let text = "CONCAT_WS(CAST(X'FF' AS BINARY), t.a, t.b)";
    for (form, hash) in [
        (
            HashSql::Crc32cOnce,
            format!("(CRC32(@syncmesh_row := {text}) << 32) | CRC32C(@syncmesh_row)"),
        ),
        (
            HashSql::Crc32cTwice,
            format!("(CRC32({text}) << 32) | CRC32C({text})"),
        ),
    ] {
        let sql = format!("SELECT CAST(BIT_XOR({hash}) AS CHAR) FROM {rows}");
        // A form the server refuses or gets wrong is not used.
        let got: Option<Option<String>> = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .ok();
        if got.flatten().and_then(|g| g.parse::<u64>().ok()) == Some(expected) {
            return Some(form);
        }
    }
    None
}

/// `10.11.19-MariaDB-0+deb12u1-log` and later than 10.8: yes; MySQL, TiDB: no.
fn mariadb_has_crc32c(version: &str) -> bool {
    if !version.to_ascii_lowercase().contains("mariadb") {
        return false;
    }
    let version = version.strip_prefix("5.5.5-").unwrap_or(version);
    let mut parts = version.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (10, 8),
        _ => false,
    }
}

fn sqlite_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn mysql_logical(
    data_type: &str,
    column_type: &str,
    precision: i64,
    scale: i64,
    max_len: i64,
) -> Option<ColumnType> {
    let unsigned = column_type.contains("unsigned");
    Some(match data_type {
        "tinyint" if column_type.starts_with("tinyint(1)") => ColumnType::Bool,
        "bool" | "boolean" => ColumnType::Bool,
        "bigint" if unsigned => ColumnType::Decimal {
            precision: 20,
            scale: 0,
        },
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => {
            ColumnType::Int
        }
        "decimal" | "numeric" => ColumnType::Decimal {
            precision: u8::try_from(precision).ok()?,
            scale: u8::try_from(scale).ok()?,
        },
        "float" | "double" | "real" => ColumnType::Float,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => {
            ColumnType::String {
                max_length: u32::try_from(max_len).ok().filter(|n| *n > 0),
            }
        }
        "json" => ColumnType::String { max_length: None },
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            ColumnType::Bytes
        }
        "date" => ColumnType::Date,
        "datetime" | "timestamp" => ColumnType::Timestamp,
        _ => return None,
    })
}

fn postgres_logical(
    data_type: &str,
    precision: i64,
    scale: i64,
    max_len: i64,
) -> Option<ColumnType> {
    Some(match data_type {
        "smallint" | "integer" | "bigint" => ColumnType::Int,
        "boolean" => ColumnType::Bool,
        // An unconstrained NUMERIC has no scale of its own (-1): the other side's is used.
        "numeric" => ColumnType::Decimal {
            precision: u8::try_from(precision).unwrap_or(0),
            scale: u8::try_from(scale).unwrap_or(u8::MAX),
        },
        "real" | "double precision" => ColumnType::Float,
        "character varying" | "character" | "text" | "uuid" => ColumnType::String {
            max_length: u32::try_from(max_len).ok().filter(|n| *n > 0),
        },
        "bytea" => ColumnType::Bytes,
        "date" => ColumnType::Date,
        "timestamp without time zone" => ColumnType::Timestamp,
        "timestamp with time zone" => ColumnType::TimestampTz,
        "json" | "jsonb" => ColumnType::Array(Box::new(ColumnType::String { max_length: None })),
        _ => return None,
    })
}

fn sqlite_logical(declared: &str) -> Option<ColumnType> {
    let d = declared.to_ascii_uppercase();
    let number = |s: &str| -> Option<(u8, u8)> {
        let inner = s.split_once('(')?.1.split_once(')')?.0;
        let (p, sc) = inner.split_once(',').unwrap_or((inner, "0"));
        Some((p.trim().parse().ok()?, sc.trim().parse().ok()?))
    };
    Some(if d.starts_with("BOOL") {
        ColumnType::Bool
    } else if d.contains("INT") {
        ColumnType::Int
    } else if d.starts_with("DECIMAL") || d.starts_with("NUMERIC") {
        let (precision, scale) = number(&d).unwrap_or((0, 0));
        ColumnType::Decimal { precision, scale }
    } else if d.contains("CHAR") || d.contains("TEXT") || d.contains("CLOB") {
        ColumnType::String { max_length: None }
    } else if d.contains("BLOB") || d.is_empty() {
        ColumnType::Bytes
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        ColumnType::Float
    } else if d.starts_with("DATETIME") || d.starts_with("TIMESTAMP") {
        ColumnType::Timestamp
    } else if d.starts_with("DATE") {
        ColumnType::Date
    } else {
        return None;
    })
}

/// A side over a sqlx pool: the table, its columns under their names on this side with the
/// source's logical types, and how digests are computed.
pub struct SqlSide {
    db: Database,
    sql: TableSql,
    stream: bool,
}

impl SqlSide {
    pub fn new(
        db: Database,
        table: TableName,
        columns: Vec<SideColumn>,
        key: Vec<usize>,
        mode: HashMode,
    ) -> Self {
        let sql = TableSql {
            engine: db.engine,
            table,
            columns,
            key,
            hash: HashSql::Md5,
        };
        let stream = mode == HashMode::Stream || !sql.hashable_in_sql();
        Self { db, sql, stream }
    }

    /// Hashes rows with `row_hash` (MD5 by default). CRC32C in SQL needs a server with
    /// [`Database::crc_support`]; streamed rows are hashed here either way.
    pub fn with_row_hash(mut self, row_hash: RowHash) -> Result<Self, CheckError> {
        self.sql.hash = match row_hash {
            RowHash::Md5 => HashSql::Md5,
            RowHash::Crc32c if self.stream => HashSql::Crc32cTwice,
            RowHash::Crc32c => self.db.crc.ok_or_else(|| {
                CheckError::Unsupported(format!(
                    "{}: the crc32c-64 row hash needs MariaDB 10.8 or later on both sides",
                    self.db.redacted_url()
                ))
            })?,
        };
        Ok(self)
    }

    pub fn row_hash(&self) -> RowHash {
        self.sql.hash.row_hash()
    }

    /// The SQL this side runs (for docs and tests).
    pub fn table_sql(&self) -> &TableSql {
        &self.sql
    }

    /// Whether digests are computed by streaming rows (rather than in SQL).
    pub fn streams(&self) -> bool {
        self.stream
    }

    fn err(&self, st: &Statement, e: sqlx::Error) -> CheckError {
        self.db.query_err(&self.sql.table, &st.sql, e)
    }

    fn decode_err(&self, column: usize, reason: String) -> CheckError {
        CheckError::Decode {
            side: self.db.redacted_url(),
            table: self.sql.table.to_string(),
            column: self.sql.columns[column].name.clone(),
            reason,
        }
    }

    fn types(&self) -> Vec<&ColumnType> {
        self.sql.columns.iter().map(|c| &c.ty).collect()
    }

    /// Decodes a row selected with `native_expr` for the columns `cols`.
    fn decode<R>(&self, row: &R, cols: &[usize]) -> Result<Vec<Value>, CheckError>
    where
        R: Row,
        usize: sqlx::ColumnIndex<R>,
        for<'r> Option<bool>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Option<f64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Option<NaiveDate>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Option<NaiveDateTime>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Option<DateTime<Utc>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let mut out = Vec::with_capacity(cols.len());
        for (pos, &c) in cols.iter().enumerate() {
            let ty = &self.sql.columns[c].ty;
            let e = |err: sqlx::Error| self.decode_err(c, err.to_string());
            let value = match ty {
                ColumnType::Bool if self.db.engine == Engine::Postgres => row
                    .try_get::<Option<bool>, _>(pos)
                    .map_err(e)?
                    .map(Value::Bool),
                ColumnType::Bool => row
                    .try_get::<Option<i64>, _>(pos)
                    .map_err(e)?
                    .map(|i| Value::Bool(i != 0)),
                ColumnType::Int => row
                    .try_get::<Option<i64>, _>(pos)
                    .map_err(e)?
                    .map(Value::Int),
                ColumnType::Float => row
                    .try_get::<Option<f64>, _>(pos)
                    .map_err(e)?
                    .map(Value::Float),
                ColumnType::Decimal { .. } => {
                    match row.try_get::<Option<String>, _>(pos).map_err(e)? {
                        Some(text) => Some(Value::Decimal(
                            Decimal::parse(&text).map_err(|x| self.decode_err(c, x.to_string()))?,
                        )),
                        None => None,
                    }
                }
                ColumnType::String { .. } => row
                    .try_get::<Option<String>, _>(pos)
                    .map_err(e)?
                    .map(Value::String),
                ColumnType::Array(_) => match row.try_get::<Option<String>, _>(pos).map_err(e)? {
                    Some(text) => {
                        let json: serde_json::Value = serde_json::from_str(&text)
                            .map_err(|x| self.decode_err(c, x.to_string()))?;
                        Some(Value::String(json.to_string()))
                    }
                    None => None,
                },
                ColumnType::Bytes => row
                    .try_get::<Option<Vec<u8>>, _>(pos)
                    .map_err(e)?
                    .map(Value::Bytes),
                ColumnType::Date => row
                    .try_get::<Option<NaiveDate>, _>(pos)
                    .map_err(e)?
                    .map(Value::Date),
                ColumnType::Timestamp => row
                    .try_get::<Option<NaiveDateTime>, _>(pos)
                    .map_err(e)?
                    .map(Value::Timestamp),
                ColumnType::TimestampTz => match self.db.engine {
                    Engine::Postgres | Engine::Sqlite => row
                        .try_get::<Option<DateTime<Utc>>, _>(pos)
                        .map_err(e)?
                        .map(|t| Value::TimestampTz(t.fixed_offset())),
                    _ => row
                        .try_get::<Option<NaiveDateTime>, _>(pos)
                        .map_err(e)?
                        .map(|t| Value::TimestampTz(t.and_utc().fixed_offset())),
                },
            };
            out.push(value.unwrap_or(Value::Null));
        }
        Ok(out)
    }

    /// The key of the row a boundary statement selects, if any.
    async fn key_at(&self, st: &Statement) -> Result<Option<Key>, CheckError> {
        let key = &self.sql.key;
        macro_rules! run {
            ($db:ty, $pool:expr) => {{
                let args = args_for::<$db>(self.db.engine, &st).map_err(|e| self.err(&st, e))?;
                let row = sqlx::query_with::<$db, _>(AssertSqlSafe(st.sql.clone()), args)
                    .fetch_optional($pool)
                    .await
                    .map_err(|e| self.err(&st, e))?;
                match row {
                    Some(row) => Some(Key(self.decode(&row, key)?)),
                    None => None,
                }
            }};
        }
        Ok(match &self.db.pool {
            Pool::MySql(p) => run!(MySql, p),
            Pool::Postgres(p) => run!(Postgres, p),
            Pool::Sqlite(p) => run!(Sqlite, p),
        })
    }

    async fn stream_digest(&self, range: &KeyRange) -> Result<Digest, CheckError> {
        let st = self.sql.rows_sql(range);
        let all: Vec<usize> = (0..self.sql.columns.len()).collect();
        let types = self.types();
        let nullable: Vec<bool> = self.sql.columns.iter().map(|c| c.nullable).collect();
        let row_hash = self.row_hash();
        let mut digest = Digest::empty(row_hash);
        macro_rules! run {
            ($db:ty, $pool:expr) => {{
                let args = args_for::<$db>(self.db.engine, &st).map_err(|e| self.err(&st, e))?;
                let mut rows =
                    sqlx::query_with::<$db, _>(AssertSqlSafe(st.sql.clone()), args).fetch($pool);
                while let Some(row) = rows.try_next().await.map_err(|e| self.err(&st, e))? {
                    let values = self.decode(&row, &all)?;
                    let h = row_hash_of(row_hash, &types, &nullable, &values)
                        .map_err(|r| self.decode_err(0, r))?;
                    digest.add_row(h);
                }
            }};
        }
        match &self.db.pool {
            Pool::MySql(p) => run!(MySql, p),
            Pool::Postgres(p) => run!(Postgres, p),
            Pool::Sqlite(p) => run!(Sqlite, p),
        }
        Ok(digest)
    }
}

#[async_trait::async_trait]
impl TableSide for SqlSide {
    fn label(&self) -> String {
        format!("{} {}", self.db.redacted_url(), self.sql.table)
    }

    async fn boundary(&self, after: Option<&Key>, limit: u64) -> Result<Option<Key>, CheckError> {
        match self.key_at(&self.sql.boundary_sql(after, limit)).await? {
            Some(key) => Ok(Some(key)),
            None => self.key_at(&self.sql.last_key_sql(after)).await,
        }
    }

    async fn digest(&self, range: &KeyRange) -> Result<Digest, CheckError> {
        if self.stream {
            return self.stream_digest(range).await;
        }
        let st = self.sql.digest_sql(range);
        macro_rules! run {
            ($db:ty, $pool:expr) => {{
                let args = args_for::<$db>(self.db.engine, &st).map_err(|e| self.err(&st, e))?;
                let row = sqlx::query_with::<$db, _>(AssertSqlSafe(st.sql.clone()), args)
                    .fetch_one($pool)
                    .await
                    .map_err(|e| self.err(&st, e))?;
                let rows: i64 = row.try_get(0).map_err(|e| self.err(&st, e))?;
                let sum: String = row.try_get(1).map_err(|e| self.err(&st, e))?;
                (rows, sum)
            }};
        }
        let (rows, sum) = match &self.db.pool {
            Pool::MySql(p) => run!(MySql, p),
            Pool::Postgres(p) => run!(Postgres, p),
            Pool::Sqlite(p) => run!(Sqlite, p),
        };
        Ok(Digest {
            rows: u64::try_from(rows).unwrap_or(0),
            hash: sum_mod_2_64(&sum).map_err(|r| self.decode_err(0, r))?,
            row_hash: self.row_hash(),
        })
    }

    async fn key_span(&self) -> Result<Option<KeySpan>, CheckError> {
        let Some((min_max, estimate)) = self.sql.key_span_sql() else {
            return Ok(None);
        };
        let err = |sql: &str, e| self.db.query_err(&self.sql.table, sql, e);
        let (schema, name) = (self.sql.table.schema.clone(), self.sql.table.table.clone());
        macro_rules! run {
            ($pool:expr) => {{
                let (min, max): (Option<i64>, Option<i64>) =
                    sqlx::query_as(AssertSqlSafe(min_max.clone()))
                        .fetch_one($pool)
                        .await
                        .map_err(|e| err(&min_max, e))?;
                let rows: Option<i64> = sqlx::query_scalar(AssertSqlSafe(estimate.clone()))
                    .bind(schema)
                    .bind(name)
                    .fetch_optional($pool)
                    .await
                    .map_err(|e| err(&estimate, e))?;
                (min, max, rows)
            }};
        }
        let (min, max, rows) = match &self.db.pool {
            Pool::MySql(p) => run!(p),
            Pool::Postgres(p) => run!(p),
            Pool::Sqlite(_) => return Ok(None),
        };
        Ok(match (min, max) {
            (Some(min), Some(max)) => Some(KeySpan {
                min,
                max,
                estimated_rows: rows.and_then(|r| u64::try_from(r).ok()).unwrap_or(0),
            }),
            _ => None,
        })
    }

    async fn rows(&self, range: &KeyRange) -> Result<Vec<Vec<Value>>, CheckError> {
        let st = self.sql.rows_sql(range);
        let all: Vec<usize> = (0..self.sql.columns.len()).collect();
        macro_rules! run {
            ($db:ty, $pool:expr) => {{
                let args = args_for::<$db>(self.db.engine, &st).map_err(|e| self.err(&st, e))?;
                let rows = sqlx::query_with::<$db, _>(AssertSqlSafe(st.sql.clone()), args)
                    .fetch_all($pool)
                    .await
                    .map_err(|e| self.err(&st, e))?;
                rows.iter()
                    .map(|r| self.decode(r, &all))
                    .collect::<Result<Vec<_>, _>>()?
            }};
        }
        Ok(match &self.db.pool {
            Pool::MySql(p) => run!(MySql, p),
            Pool::Postgres(p) => run!(Postgres, p),
            Pool::Sqlite(p) => run!(Sqlite, p),
        })
    }
}

/// Binds key values the way each driver compares them with the column.
trait BindKey: sqlx::Database {
    fn add(
        args: &mut Self::Arguments,
        engine: Engine,
        value: &Value,
        ty: &ColumnType,
    ) -> Result<(), BoxDynError>;
}

macro_rules! impl_bind_key {
    ($db:ty) => {
        impl BindKey for $db {
            fn add(
                args: &mut Self::Arguments,
                engine: Engine,
                value: &Value,
                ty: &ColumnType,
            ) -> Result<(), BoxDynError> {
                match value {
                    Value::Null => args.add(None::<String>),
                    Value::Bool(b) if engine == Engine::Postgres => args.add(*b),
                    Value::Bool(b) => args.add(i64::from(*b)),
                    Value::Int(i) => match ty {
                        ColumnType::Decimal { .. } => args.add(i.to_string()),
                        _ => args.add(*i),
                    },
                    Value::Decimal(d) => args.add(d.to_string()),
                    Value::Float(f) => args.add(*f),
                    Value::String(s) => args.add(s.clone()),
                    Value::Bytes(b) => args.add(b.clone()),
                    Value::Date(d) => args.add(*d),
                    Value::Timestamp(t) => args.add(*t),
                    Value::TimestampTz(t) => match engine {
                        Engine::Postgres | Engine::Sqlite => args.add(t.with_timezone(&Utc)),
                        _ => args.add(t.with_timezone(&Utc).naive_utc()),
                    },
                    Value::Array(_) => args.add(value.to_json().to_string()),
                }
            }
        }
    };
}

impl_bind_key!(MySql);
impl_bind_key!(Postgres);
impl_bind_key!(Sqlite);

fn args_for<DB: BindKey>(engine: Engine, st: &Statement) -> Result<DB::Arguments, sqlx::Error> {
    let mut args = DB::Arguments::default();
    for (value, ty) in &st.binds {
        DB::add(&mut args, engine, value, ty).map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_needs_mariadb_10_8() {
        assert!(mariadb_has_crc32c("10.11.19-MariaDB-0+deb12u1-log"));
        assert!(mariadb_has_crc32c("10.8.1-MariaDB"));
        assert!(mariadb_has_crc32c("11.4.2-MariaDB"));
        assert!(!mariadb_has_crc32c("10.6.18-MariaDB-log"));
        assert!(!mariadb_has_crc32c("8.0.36"));
        assert!(!mariadb_has_crc32c("8.0.11-TiDB-v7.5.0"));
        // The replication-compatibility prefix of old clients.
        assert!(mariadb_has_crc32c("5.5.5-10.11.6-MariaDB"));
    }
}
