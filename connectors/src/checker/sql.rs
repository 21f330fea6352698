//! The checker's SQL per engine: the canonical field of each column, the chunk digest, the
//! keyset boundary query, the range predicates and the row fetch. Pure text, so the engines
//! that do not run here (Oracle, StarRocks) are unit-tested like the others.

use super::canonical::{NULL_FIELD, RowHash, SEPARATOR, sql_hashable};
use super::key::{Key, KeyRange};
use crate::event::{ColumnType, Value};
use crate::sinks::table::{Dialect, TableName};
use std::fmt::Write;

/// The database a side of a check lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// MySQL 5.7+/8.x and MariaDB 10.x+ (and TiDB).
    MySql,
    /// StarRocks 3.x over the MySQL protocol.
    StarRocks,
    /// PostgreSQL 12+.
    Postgres,
    /// SQLite 3.24+: no MD5 in SQL, rows are streamed and hashed in Rust.
    Sqlite,
    /// Oracle 12c+ (`FETCH FIRST`, `STANDARD_HASH`); the SQL is generated, no driver runs here.
    Oracle,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::MySql => "mysql",
            Engine::StarRocks => "starrocks",
            Engine::Postgres => "postgres",
            Engine::Sqlite => "sqlite",
            Engine::Oracle => "oracle",
        }
    }

    /// The sink writer's dialect, whose identifier quoting the fix SQL reuses.
    pub fn dialect(self) -> Option<Dialect> {
        match self {
            Engine::MySql => Some(Dialect::MySql),
            Engine::StarRocks => Some(Dialect::StarRocks),
            Engine::Postgres => Some(Dialect::Postgres),
            Engine::Sqlite => Some(Dialect::Sqlite),
            Engine::Oracle => None,
        }
    }

    pub fn quote_ident(self, ident: &str) -> String {
        match self.dialect() {
            Some(d) => d.quote_ident(ident),
            None => format!("\"{}\"", ident.replace('"', "\"\"")),
        }
    }

    pub fn quote_table(self, table: &TableName) -> String {
        match self.dialect() {
            Some(d) => table.quoted(d),
            None => match &table.schema {
                Some(s) => format!("{}.{}", self.quote_ident(s), self.quote_ident(&table.table)),
                None => self.quote_ident(&table.table),
            },
        }
    }

    /// Whether the engine can compute a chunk digest in SQL (it has MD5 and exact sums).
    pub fn hashes_in_sql(self) -> bool {
        !matches!(self, Engine::Sqlite)
    }

    /// Whether `(a, b) > (x, y)` row comparisons are written as such (PostgreSQL plans them as
    /// index ranges); the others get the expanded `a > x OR (a = x AND b > y)`, which MariaDB
    /// and Oracle plan as ranges and StarRocks accepts.
    fn row_values(self) -> bool {
        matches!(self, Engine::Postgres)
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One column as a side sees it: its name there and its logical type (the source's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideColumn {
    pub name: String,
    pub ty: ColumnType,
    /// MySQL only: the column's character set needs a conversion to utf8mb4 before hashing.
    pub convert_to_utf8: bool,
    /// The type as this side declares it, lowercase (`decimal(18,2)`, `datetime(6)`); empty
    /// when unknown. The compact text reads a column as it is when this type prints it in the
    /// field's form.
    pub native: String,
    /// Whether the column may be NULL on either side (the compact text's NULL mask).
    pub nullable: bool,
}

/// How a side's SQL computes the row hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashSql {
    /// MD5 of the canonical text, summed.
    #[default]
    Md5,
    /// CRC32 and CRC32C of the compact text, XORed; the text is built once and kept in a
    /// session variable for the second CRC (the server passed the connect-time self-test).
    Crc32cOnce,
    /// The same hash with the text built twice, for a server where the variable form failed
    /// the self-test.
    Crc32cTwice,
}

impl HashSql {
    pub fn row_hash(self) -> RowHash {
        match self {
            HashSql::Md5 => RowHash::Md5,
            HashSql::Crc32cOnce | HashSql::Crc32cTwice => RowHash::Crc32c,
        }
    }
}

/// The session variable that holds a row's compact text between its two CRCs.
const ROW_VARIABLE: &str = "@syncmesh_row";

/// A statement and the values bound to its placeholders, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub binds: Vec<(Value, ColumnType)>,
}

struct Builder {
    engine: Engine,
    sql: String,
    binds: Vec<(Value, ColumnType)>,
}

impl Builder {
    fn new(engine: Engine) -> Self {
        Self {
            engine,
            sql: String::new(),
            binds: Vec::new(),
        }
    }

    fn push(&mut self, text: &str) {
        self.sql.push_str(text);
    }

    /// A placeholder for `value`, cast where the driver binds it as text.
    fn bind(&mut self, value: &Value, ty: &ColumnType) {
        self.binds.push((value.clone(), ty.clone()));
        let n = self.binds.len();
        let decimal = matches!(ty, ColumnType::Decimal { .. });
        match (self.engine, decimal) {
            (Engine::Postgres, true) => {
                let _ = write!(self.sql, "${n}::numeric");
            }
            (Engine::Postgres, false) => {
                let _ = write!(self.sql, "${n}");
            }
            (Engine::MySql, true) => self.sql.push_str("CAST(? AS DECIMAL(65,30))"),
            (Engine::StarRocks, true) => self.sql.push_str("CAST(? AS DECIMAL(38,18))"),
            (Engine::Oracle, true) => {
                let _ = write!(self.sql, "TO_NUMBER(:{n})");
            }
            (Engine::Oracle, false) => {
                let _ = write!(self.sql, ":{n}");
            }
            _ => self.sql.push('?'),
        }
    }

    fn finish(self) -> Statement {
        Statement {
            sql: self.sql,
            binds: self.binds,
        }
    }
}

/// Everything the SQL of one side needs: engine, table, columns and which are the key.
#[derive(Debug, Clone)]
pub struct TableSql {
    pub engine: Engine,
    pub table: TableName,
    pub columns: Vec<SideColumn>,
    /// Indexes into `columns`, in key order.
    pub key: Vec<usize>,
    pub hash: HashSql,
}

impl TableSql {
    fn q(&self, i: usize) -> String {
        self.engine.quote_ident(&self.columns[i].name)
    }

    fn key_list(&self, desc: bool) -> String {
        self.key
            .iter()
            .map(|&i| {
                if desc {
                    format!("{} DESC", self.q(i))
                } else {
                    self.q(i)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether every column can be hashed in this engine's SQL.
    pub fn hashable_in_sql(&self) -> bool {
        self.engine.hashes_in_sql() && self.columns.iter().all(|c| sql_hashable(&c.ty))
    }

    /// The canonical text of column `i` as a SQL expression that is NULL when the value is.
    pub fn canonical_expr(&self, i: usize) -> String {
        let c = &self.columns[i];
        let q = self.q(i);
        match self.engine {
            Engine::MySql | Engine::StarRocks => mysql_field(self.engine, &q, c),
            Engine::Postgres => postgres_field(&q, &c.ty),
            Engine::Oracle => oracle_field(&q, &c.ty),
            Engine::Sqlite => q,
        }
    }

    /// The canonical row text as one SQL expression.
    pub fn row_text_expr(&self) -> String {
        let null = format!("'{NULL_FIELD}'");
        let fields: Vec<String> = (0..self.columns.len())
            .map(|i| {
                let e = self.canonical_expr(i);
                match self.engine {
                    Engine::Oracle => format!("NVL({e}, {null})"),
                    Engine::Postgres => format!("COALESCE({e}, {null})"),
                    _ => format!("IFNULL({e}, {null})"),
                }
            })
            .collect();
        match self.engine {
            Engine::Oracle => fields.join(&format!(" || '{SEPARATOR}' || ")),
            _ => format!("CONCAT_WS('{SEPARATOR}', {})", fields.join(", ")),
        }
    }

    /// MariaDB: the compact row text ([`super::compact`]) as one SQL expression.
    pub fn compact_text_expr(&self) -> String {
        let mut args = vec!["CAST(X'FF' AS BINARY)".to_string()];
        let mask: Vec<String> = (0..self.columns.len())
            .filter(|&i| self.columns[i].nullable)
            .map(|i| format!("ISNULL({})", self.q(i)))
            .collect();
        match mask.len() {
            0 => {}
            1 => args.extend(mask),
            _ => args.push(format!("CONCAT({})", mask.join(", "))),
        }
        args.extend(
            (0..self.columns.len()).map(|i| mariadb_compact_field(&self.q(i), &self.columns[i])),
        );
        format!("CONCAT_WS({})", args.join(", "))
    }

    /// The row hash as a SQL integer expression: the first 8 bytes of MD5 of the canonical
    /// text, or (MariaDB) `CRC32 << 32 | CRC32C` of the compact text.
    pub fn row_hash_expr(&self) -> String {
        match self.hash {
            HashSql::Crc32cOnce => {
                let text = self.compact_text_expr();
                return format!(
                    "((CRC32({ROW_VARIABLE} := {text}) << 32) | CRC32C({ROW_VARIABLE}))"
                );
            }
            HashSql::Crc32cTwice => {
                let text = self.compact_text_expr();
                return format!("((CRC32({text}) << 32) | CRC32C({text}))");
            }
            HashSql::Md5 => {}
        }
        let text = self.row_text_expr();
        match self.engine {
            Engine::MySql => format!("CAST(CONV(LEFT(MD5({text}), 16), 16, 10) AS UNSIGNED)"),
            Engine::StarRocks => format!("CAST(CONV(LEFT(MD5({text}), 16), 16, 10) AS LARGEINT)"),
            // Signed: the sum is reduced modulo 2^64 afterwards, where signed and unsigned agree.
            Engine::Postgres => format!("('x' || LEFT(MD5({text}), 16))::bit(64)::bigint"),
            Engine::Oracle => format!(
                "TO_NUMBER(SUBSTR(RAWTOHEX(STANDARD_HASH({text}, 'MD5')), 1, 16), 'XXXXXXXXXXXXXXXX')"
            ),
            Engine::Sqlite => "0".into(),
        }
    }

    /// `SELECT COUNT(*), <exact sum (or XOR) of row hashes as text> FROM t WHERE <range>`.
    pub fn digest_sql(&self, range: &KeyRange) -> Statement {
        let h = self.row_hash_expr();
        let sum = match (self.engine, self.hash) {
            // BIT_XOR is 0 over no rows; MariaDB's SUM of integers is an exact DECIMAL sum,
            // which costs more than the CRCs.
            (_, HashSql::Crc32cOnce | HashSql::Crc32cTwice) => {
                format!("CAST(BIT_XOR({h}) AS CHAR)")
            }
            _ => match self.engine {
                Engine::MySql => format!("CAST(COALESCE(SUM({h}), 0) AS CHAR)"),
                Engine::StarRocks => format!("CAST(COALESCE(SUM({h}), 0) AS STRING)"),
                Engine::Postgres => format!("COALESCE(SUM({h}), 0)::text"),
                Engine::Oracle => format!("TO_CHAR(NVL(SUM({h}), 0))"),
                Engine::Sqlite => "'0'".into(),
            },
        };
        let mut b = Builder::new(self.engine);
        b.push(&format!(
            "SELECT COUNT(*), {sum} FROM {}",
            self.engine.quote_table(&self.table)
        ));
        self.push_where(&mut b, range);
        b.finish()
    }

    /// The key of the `limit`-th row after `after`, by keyset pagination: the database walks
    /// the key index from `after` and skips `limit - 1` entries (no `OFFSET` from the start of
    /// the table). No row when fewer follow: then [`Self::last_key_sql`].
    pub fn boundary_sql(&self, after: Option<&Key>, limit: u64) -> Statement {
        let skip = limit.max(1) - 1;
        let mut b = self.key_select(after);
        b.push(&format!(" ORDER BY {}", self.key_list(false)));
        match self.engine {
            Engine::Oracle => b.push(&format!(" OFFSET {skip} ROWS FETCH FIRST 1 ROWS ONLY")),
            _ => b.push(&format!(" LIMIT 1 OFFSET {skip}")),
        }
        b.finish()
    }

    /// The key of the last row after `after` (through the key index, backwards).
    pub fn last_key_sql(&self, after: Option<&Key>) -> Statement {
        let mut b = self.key_select(after);
        b.push(&format!(" ORDER BY {}", self.key_list(true)));
        match self.engine {
            Engine::Oracle => b.push(" FETCH FIRST 1 ROWS ONLY"),
            _ => b.push(" LIMIT 1"),
        }
        b.finish()
    }

    /// `SELECT MIN(k), MAX(k)` of a single integer key, and the statement that reads the
    /// database's estimate of the table's rows (bound: schema or NULL, table); `None` for other
    /// keys and engines.
    pub fn key_span_sql(&self) -> Option<(String, String)> {
        let [k] = self.key[..] else {
            return None;
        };
        if self.columns[k].ty != ColumnType::Int {
            return None;
        }
        let (q, table) = (self.q(k), self.engine.quote_table(&self.table));
        match self.engine {
            Engine::MySql => Some((
                format!("SELECT CAST(MIN({q}) AS SIGNED), CAST(MAX({q}) AS SIGNED) FROM {table}"),
                "SELECT CAST(IFNULL(TABLE_ROWS, 0) AS SIGNED) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?"
                    .into(),
            )),
            Engine::Postgres => Some((
                format!("SELECT MIN({q})::int8, MAX({q})::int8 FROM {table}"),
                "SELECT GREATEST(c.reltuples, 0)::int8 FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = COALESCE($1, current_schema()) AND c.relname = $2"
                    .into(),
            )),
            _ => None,
        }
    }

    fn key_select(&self, after: Option<&Key>) -> Builder {
        let selected = self
            .key
            .iter()
            .map(|&i| self.native_expr(i))
            .collect::<Vec<_>>()
            .join(", ");
        let mut b = Builder::new(self.engine);
        b.push(&format!(
            "SELECT {selected} FROM {}",
            self.engine.quote_table(&self.table)
        ));
        let range = KeyRange {
            lower: after.cloned(),
            upper: None,
        };
        self.push_where(&mut b, &range);
        b
    }

    /// Every column of the rows in `range`, ordered by key, in the form the driver decodes.
    pub fn rows_sql(&self, range: &KeyRange) -> Statement {
        let selected = (0..self.columns.len())
            .map(|i| self.native_expr(i))
            .collect::<Vec<_>>()
            .join(", ");
        let mut b = Builder::new(self.engine);
        b.push(&format!(
            "SELECT {selected} FROM {}",
            self.engine.quote_table(&self.table)
        ));
        self.push_where(&mut b, range);
        b.push(&format!(" ORDER BY {}", self.key_list(false)));
        b.finish()
    }

    /// Column `i` cast to what the driver decodes for its logical type (decimals as exact
    /// text, integers as 64-bit, JSON as text).
    pub fn native_expr(&self, i: usize) -> String {
        let q = self.q(i);
        let ty = &self.columns[i].ty;
        match (self.engine, ty) {
            (
                Engine::MySql | Engine::StarRocks,
                ColumnType::Decimal { .. } | ColumnType::Array(_),
            ) => {
                format!("CAST({q} AS CHAR)")
            }
            (Engine::MySql, ColumnType::Float) => format!("CAST({q} AS DOUBLE)"),
            // A sink DATETIME holding a source DATE reads back as a date, a TIMESTAMP (which
            // the driver does not decode as a naive time) as the session's (UTC) time.
            (Engine::MySql, ColumnType::Date) => format!("CAST({q} AS DATE)"),
            (Engine::MySql, ColumnType::Timestamp | ColumnType::TimestampTz) => {
                format!("CAST({q} AS DATETIME(6))")
            }
            (Engine::Postgres, ColumnType::Int) => format!("({q})::int8"),
            (Engine::Postgres, ColumnType::Bool) => format!("({q})::bool"),
            (Engine::Postgres, ColumnType::Float) => format!("({q})::float8"),
            (
                Engine::Postgres,
                ColumnType::Decimal { .. } | ColumnType::String { .. } | ColumnType::Array(_),
            ) => format!("({q})::text"),
            (Engine::Postgres, ColumnType::Timestamp) => format!("({q})::timestamp"),
            (Engine::Postgres, ColumnType::TimestampTz) => format!("({q})::timestamptz"),
            (Engine::Sqlite, ColumnType::Decimal { .. }) => format!("CAST({q} AS TEXT)"),
            (Engine::Sqlite, ColumnType::Float) => format!("CAST({q} AS REAL)"),
            (Engine::Oracle, ColumnType::Decimal { .. }) => format!("TO_CHAR({q})"),
            _ => q,
        }
    }

    fn push_where(&self, b: &mut Builder, range: &KeyRange) {
        let mut first = true;
        if let Some(lower) = &range.lower {
            b.push(" WHERE ");
            first = false;
            self.push_compare(b, lower, ">");
        }
        if let Some(upper) = &range.upper {
            b.push(if first { " WHERE " } else { " AND " });
            self.push_compare(b, upper, "<=");
        }
    }

    /// `key <op> bound` in key order, where `op` is `>` or `<=`.
    fn push_compare(&self, b: &mut Builder, bound: &Key, op: &str) {
        let n = self.key.len();
        if n == 1 || self.engine.row_values() {
            let cols = self.key_list(false);
            if n == 1 {
                b.push(&format!("{cols} {op} "));
            } else {
                b.push(&format!("({cols}) {op} ("));
            }
            for (k, &i) in self.key.iter().enumerate() {
                if k > 0 {
                    b.push(", ");
                }
                b.bind(&bound.0[k], &self.columns[i].ty);
            }
            if n > 1 {
                b.push(")");
            }
            return;
        }
        // (a op' x) OR (a = x AND b op' y) OR (a = x AND b = y AND c op z) ...
        let strict = if op == ">" { ">" } else { "<" };
        b.push("(");
        for last in 0..n {
            if last > 0 {
                b.push(" OR ");
            }
            b.push("(");
            for k in 0..=last {
                if k > 0 {
                    b.push(" AND ");
                }
                let i = self.key[k];
                let cmp = if k < last {
                    "="
                } else if last == n - 1 {
                    op
                } else {
                    strict
                };
                b.push(&format!("{} {cmp} ", self.q(i)));
                b.bind(&bound.0[k], &self.columns[i].ty);
            }
            b.push(")");
        }
        b.push(")");
    }
}

fn mysql_field(engine: Engine, q: &str, c: &SideColumn) -> String {
    let decimal_max = if engine == Engine::StarRocks { 38 } else { 65 };
    match &c.ty {
        ColumnType::Int => q.to_string(),
        // NULL <> 0 is NULL, so NULL survives.
        ColumnType::Bool => format!("({q} <> 0)"),
        ColumnType::Decimal { scale, .. } => {
            format!("CAST({q} AS DECIMAL({decimal_max},{scale}))")
        }
        ColumnType::String { .. } => {
            let t = if c.convert_to_utf8 && engine == Engine::MySql {
                format!("CONVERT({q} USING utf8mb4)")
            } else {
                q.to_string()
            };
            format!("CONCAT(LENGTH({t}), ':', {t})")
        }
        ColumnType::Bytes => format!("LOWER(HEX({q}))"),
        ColumnType::Date => format!("DATE_FORMAT({q}, '%Y-%m-%d')"),
        ColumnType::Timestamp => format!("DATE_FORMAT({q}, '%Y-%m-%dT%H:%i:%s.%f')"),
        // A DATETIME holding the UTC instant (the sink writer's convention); TIMESTAMP columns
        // are read with the session time zone at +00:00.
        ColumnType::TimestampTz => format!("DATE_FORMAT({q}, '%Y-%m-%dT%H:%i:%s.%fZ')"),
        ColumnType::Float | ColumnType::Array(_) => format!("CAST({q} AS CHAR)"),
    }
}

/// A column's field of the compact text: the column as it is where its declared type prints
/// the field's form, else converted to it.
fn mariadb_compact_field(q: &str, c: &SideColumn) -> String {
    let native = c.native.as_str();
    let zerofill = native.contains("zerofill");
    let integer = !zerofill
        && [
            "tinyint",
            "smallint",
            "mediumint",
            "int",
            "integer",
            "bigint",
            "year",
        ]
        .iter()
        .any(|t| native.split(['(', ' ']).next() == Some(*t));
    match &c.ty {
        ColumnType::Int if integer => q.to_string(),
        ColumnType::Int => format!("CAST({q} AS DECIMAL(65,0))"),
        ColumnType::Bool => format!("({q} <> 0)"),
        ColumnType::Decimal { scale, .. } => {
            let same_scale = !zerofill && native_decimal_scale(native) == Some(*scale);
            if same_scale || (integer && *scale == 0) {
                q.to_string()
            } else {
                format!("CAST({q} AS DECIMAL(65,{scale}))")
            }
        }
        ColumnType::String { .. } if c.convert_to_utf8 => format!("CONVERT({q} USING utf8mb4)"),
        ColumnType::String { .. } => q.to_string(),
        ColumnType::Bytes => format!("HEX({q})"),
        ColumnType::Date if native == "date" => q.to_string(),
        ColumnType::Date => format!("CAST({q} AS DATE)"),
        ColumnType::Timestamp | ColumnType::TimestampTz
            if native == "datetime(6)" || native == "timestamp(6)" =>
        {
            q.to_string()
        }
        ColumnType::Timestamp | ColumnType::TimestampTz => format!("CAST({q} AS DATETIME(6))"),
        ColumnType::Float | ColumnType::Array(_) => format!("CAST({q} AS CHAR)"),
    }
}

/// The scale of a declared `decimal(p,s)` / `numeric(p,s)` (optionally `unsigned`).
fn native_decimal_scale(native: &str) -> Option<u8> {
    let rest = native
        .strip_prefix("decimal(")
        .or_else(|| native.strip_prefix("numeric("))?;
    let (inner, tail) = rest.split_once(')')?;
    if !(tail.is_empty() || tail == " unsigned") {
        return None;
    }
    inner.split_once(',')?.1.trim().parse().ok()
}

fn postgres_field(q: &str, ty: &ColumnType) -> String {
    match ty {
        ColumnType::Int => format!("({q})::text"),
        ColumnType::Bool => format!("({q})::int::text"),
        ColumnType::Decimal { scale, .. } => format!("round(({q})::numeric, {scale})::text"),
        ColumnType::String { .. } => format!("octet_length(({q})::text) || ':' || ({q})::text"),
        ColumnType::Bytes => format!("encode({q}, 'hex')"),
        ColumnType::Date => format!("to_char({q}, 'YYYY-MM-DD')"),
        ColumnType::Timestamp => format!("to_char({q}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"),
        ColumnType::TimestampTz => {
            format!("to_char(({q}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        }
        ColumnType::Float | ColumnType::Array(_) => format!("({q})::text"),
    }
}

fn oracle_field(q: &str, ty: &ColumnType) -> String {
    match ty {
        ColumnType::Int => format!("TO_CHAR({q})"),
        ColumnType::Bool => {
            format!("CASE WHEN {q} IS NULL THEN NULL WHEN {q} <> 0 THEN '1' ELSE '0' END")
        }
        ColumnType::Decimal { scale, .. } => {
            // FM drops the padding; 38 digit positions, a 0 before the point keeps `0.50`.
            let s = usize::from(*scale);
            let int_digits = 38usize.saturating_sub(s).max(1);
            let mut format = format!("FM{}0", "9".repeat(int_digits - 1));
            if s > 0 {
                format.push('.');
                format.push_str(&"0".repeat(s));
            }
            format!("TO_CHAR({q}, '{format}')")
        }
        ColumnType::String { .. } => format!("LENGTHB({q}) || ':' || {q}"),
        ColumnType::Bytes => format!("LOWER(RAWTOHEX({q}))"),
        ColumnType::Date => format!("TO_CHAR({q}, 'YYYY-MM-DD')"),
        ColumnType::Timestamp => format!("TO_CHAR({q}, 'YYYY-MM-DD\"T\"HH24:MI:SS.FF6')"),
        ColumnType::TimestampTz => {
            format!("TO_CHAR(SYS_EXTRACT_UTC({q}), 'YYYY-MM-DD\"T\"HH24:MI:SS.FF6\"Z\"')")
        }
        ColumnType::Float | ColumnType::Array(_) => format!("TO_CHAR({q})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(engine: Engine, key: Vec<usize>) -> TableSql {
        let col = |name: &str, ty: ColumnType| SideColumn {
            name: name.into(),
            ty,
            convert_to_utf8: false,
            native: String::new(),
            nullable: name != "id",
        };
        TableSql {
            engine,
            table: TableName::with_schema("bank", "accounts"),
            columns: vec![
                col("id", ColumnType::Int),
                col(
                    "ccy",
                    ColumnType::String {
                        max_length: Some(3),
                    },
                ),
                col(
                    "balance",
                    ColumnType::Decimal {
                        precision: 18,
                        scale: 2,
                    },
                ),
                col("opened", ColumnType::TimestampTz),
                col("photo", ColumnType::Bytes),
            ],
            key,
            hash: HashSql::Md5,
        }
    }

    fn range(lower: i64, upper: i64) -> KeyRange {
        KeyRange {
            lower: Some(Key(vec![Value::Int(lower)])),
            upper: Some(Key(vec![Value::Int(upper)])),
        }
    }

    #[test]
    fn mariadb_digest() {
        let s = table(Engine::MySql, vec![0]).digest_sql(&range(10, 20));
        assert_eq!(
            s.sql,
            "SELECT COUNT(*), CAST(COALESCE(SUM(CAST(CONV(LEFT(MD5(CONCAT_WS('|', IFNULL(`id`, 'N'), \
             IFNULL(CONCAT(LENGTH(`ccy`), ':', `ccy`), 'N'), IFNULL(CAST(`balance` AS DECIMAL(65,2)), 'N'), \
             IFNULL(DATE_FORMAT(`opened`, '%Y-%m-%dT%H:%i:%s.%fZ'), 'N'), IFNULL(LOWER(HEX(`photo`)), 'N'))), 16), 16, 10) \
             AS UNSIGNED)), 0) AS CHAR) FROM `bank`.`accounts` WHERE `id` > ? AND `id` <= ?"
        );
        assert_eq!(s.binds.len(), 2);
    }

    #[test]
    fn postgres_digest_and_row_value_ranges() {
        let t = table(Engine::Postgres, vec![0, 1]);
        let r = KeyRange {
            lower: Some(Key(vec![Value::Int(1), Value::String("EUR".into())])),
            upper: None,
        };
        let s = t.digest_sql(&r);
        assert_eq!(
            s.sql,
            "SELECT COUNT(*), COALESCE(SUM(('x' || LEFT(MD5(CONCAT_WS('|', COALESCE((\"id\")::text, 'N'), \
             COALESCE(octet_length((\"ccy\")::text) || ':' || (\"ccy\")::text, 'N'), \
             COALESCE(round((\"balance\")::numeric, 2)::text, 'N'), \
             COALESCE(to_char((\"opened\") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), 'N'), \
             COALESCE(encode(\"photo\", 'hex'), 'N'))), 16))::bit(64)::bigint), 0)::text \
             FROM \"bank\".\"accounts\" WHERE (\"id\", \"ccy\") > ($1, $2)"
        );
    }

    #[test]
    fn oracle_sql_is_generated() {
        let t = table(Engine::Oracle, vec![0, 1]);
        let r = KeyRange {
            lower: Some(Key(vec![Value::Int(1), Value::String("EUR".into())])),
            upper: Some(Key(vec![Value::Int(9), Value::String("USD".into())])),
        };
        let s = t.digest_sql(&r);
        assert_eq!(
            s.sql,
            "SELECT COUNT(*), TO_CHAR(NVL(SUM(TO_NUMBER(SUBSTR(RAWTOHEX(STANDARD_HASH(\
             NVL(TO_CHAR(\"id\"), 'N') || '|' || NVL(LENGTHB(\"ccy\") || ':' || \"ccy\", 'N') || '|' || \
             NVL(TO_CHAR(\"balance\", 'FM999999999999999999999999999999999990.00'), 'N') || '|' || \
             NVL(TO_CHAR(SYS_EXTRACT_UTC(\"opened\"), 'YYYY-MM-DD\"T\"HH24:MI:SS.FF6\"Z\"'), 'N') || '|' || \
             NVL(LOWER(RAWTOHEX(\"photo\")), 'N'), 'MD5')), 1, 16), 'XXXXXXXXXXXXXXXX')), 0)) \
             FROM \"bank\".\"accounts\" WHERE ((\"id\" > :1) OR (\"id\" = :2 AND \"ccy\" > :3)) \
             AND ((\"id\" < :4) OR (\"id\" = :5 AND \"ccy\" <= :6))"
        );
        assert_eq!(s.binds.len(), 6);
        let b = t.boundary_sql(r.lower.as_ref(), 1000);
        assert_eq!(
            b.sql,
            "SELECT \"id\", \"ccy\" FROM \"bank\".\"accounts\" WHERE \
             ((\"id\" > :1) OR (\"id\" = :2 AND \"ccy\" > :3)) ORDER BY \"id\", \"ccy\" \
             OFFSET 999 ROWS FETCH FIRST 1 ROWS ONLY"
        );
        let last = t.last_key_sql(r.lower.as_ref());
        assert_eq!(
            last.sql,
            "SELECT \"id\", \"ccy\" FROM \"bank\".\"accounts\" WHERE \
             ((\"id\" > :1) OR (\"id\" = :2 AND \"ccy\" > :3)) ORDER BY \"id\" DESC, \"ccy\" DESC \
             FETCH FIRST 1 ROWS ONLY"
        );
    }

    #[test]
    fn starrocks_sql_is_generated() {
        let t = table(Engine::StarRocks, vec![0]);
        let s = t.digest_sql(&KeyRange::default());
        assert_eq!(
            s.sql,
            "SELECT COUNT(*), CAST(COALESCE(SUM(CAST(CONV(LEFT(MD5(CONCAT_WS('|', IFNULL(`id`, 'N'), \
             IFNULL(CONCAT(LENGTH(`ccy`), ':', `ccy`), 'N'), IFNULL(CAST(`balance` AS DECIMAL(38,2)), 'N'), \
             IFNULL(DATE_FORMAT(`opened`, '%Y-%m-%dT%H:%i:%s.%fZ'), 'N'), IFNULL(LOWER(HEX(`photo`)), 'N'))), 16), 16, 10) \
             AS LARGEINT)), 0) AS STRING) FROM `bank`.`accounts`"
        );
        let b = t.boundary_sql(None, 10);
        assert_eq!(
            b.sql,
            "SELECT `id` FROM `bank`.`accounts` ORDER BY `id` LIMIT 1 OFFSET 9"
        );
        assert_eq!(
            t.last_key_sql(None).sql,
            "SELECT `id` FROM `bank`.`accounts` ORDER BY `id` DESC LIMIT 1"
        );
    }

    #[test]
    fn expanded_composite_ranges_and_decimal_placeholders() {
        let mut t = table(Engine::MySql, vec![2, 0]);
        t.columns[0].convert_to_utf8 = true;
        let r = KeyRange {
            lower: None,
            upper: Some(Key(vec![
                Value::Decimal(crate::event::Decimal::parse("1.50").unwrap()),
                Value::Int(3),
            ])),
        };
        assert_eq!(
            t.rows_sql(&r).sql,
            "SELECT `id`, `ccy`, CAST(`balance` AS CHAR), CAST(`opened` AS DATETIME(6)), `photo` \
             FROM `bank`.`accounts` \
             WHERE ((`balance` < CAST(? AS DECIMAL(65,30))) OR (`balance` = CAST(? AS DECIMAL(65,30)) AND `id` <= ?)) \
             ORDER BY `balance`, `id`"
        );
        let mut s = table(Engine::MySql, vec![0]);
        s.columns[1].convert_to_utf8 = true;
        assert!(s.row_text_expr().contains(
            "CONCAT(LENGTH(CONVERT(`ccy` USING utf8mb4)), ':', CONVERT(`ccy` USING utf8mb4))"
        ));
        assert!(!table(Engine::Sqlite, vec![0]).hashable_in_sql());
    }

    #[test]
    fn mariadb_crc_digest_reads_columns_as_they_are_where_it_can() {
        let mut t = table(Engine::MySql, vec![0]);
        t.hash = HashSql::Crc32cOnce;
        for (c, native) in t.columns.iter_mut().zip([
            "bigint(20)",
            "varchar(3)",
            "decimal(18,2)",
            "datetime(6)",
            "varbinary(10)",
        ]) {
            c.native = native.into();
        }
        let s = t.digest_sql(&range(10, 20));
        let text = "CONCAT_WS(CAST(X'FF' AS BINARY), CONCAT(ISNULL(`ccy`), ISNULL(`balance`), \
                    ISNULL(`opened`), ISNULL(`photo`)), `id`, `ccy`, `balance`, `opened`, HEX(`photo`))";
        assert_eq!(
            s.sql,
            format!(
                "SELECT COUNT(*), CAST(BIT_XOR(((CRC32(@syncmesh_row := {text}) << 32) | \
                 CRC32C(@syncmesh_row))) AS CHAR) FROM `bank`.`accounts` WHERE `id` > ? AND `id` <= ?"
            )
        );
        t.hash = HashSql::Crc32cTwice;
        assert_eq!(
            t.row_hash_expr(),
            format!("((CRC32({text}) << 32) | CRC32C({text}))")
        );
        assert_eq!(t.hash.row_hash(), RowHash::Crc32c);

        // Declared types without the field's form are converted; NOT NULL columns leave the mask.
        for (c, native) in t.columns.iter_mut().zip([
            "int(10) unsigned zerofill",
            "varchar(3)",
            "decimal(18,3)",
            "datetime(3)",
            "blob",
        ]) {
            c.native = native.into();
            c.nullable = false;
        }
        t.columns[1].convert_to_utf8 = true;
        assert_eq!(
            t.compact_text_expr(),
            "CONCAT_WS(CAST(X'FF' AS BINARY), CAST(`id` AS DECIMAL(65,0)), CONVERT(`ccy` USING utf8mb4), \
             CAST(`balance` AS DECIMAL(65,2)), CAST(`opened` AS DATETIME(6)), HEX(`photo`))"
        );
        assert_eq!(native_decimal_scale("decimal(20,4) unsigned"), Some(4));
        assert_eq!(
            native_decimal_scale("decimal(20,4) unsigned zerofill"),
            None
        );
        assert_eq!(native_decimal_scale("double"), None);
    }
}
