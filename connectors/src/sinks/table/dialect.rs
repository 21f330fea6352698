//! SQL generation per dialect: identifier quoting, column types, `CREATE TABLE`, multi-row
//! upserts and deletes. Pure functions, so every dialect (StarRocks included) is unit-tested
//! without a server.

use super::TableName;
use crate::event::{Column, ColumnType, TableSchema};
use std::fmt::{self, Write};

/// The SQL dialect of a sink database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// MySQL 5.7+/8.x and MariaDB 10.x+.
    MySql,
    /// PostgreSQL 12+.
    Postgres,
    /// SQLite 3.24+ (upsert syntax).
    Sqlite,
    /// StarRocks 3.x over the MySQL protocol, primary-key tables.
    StarRocks,
}

/// Table options for `CREATE TABLE` that are not derived from the source schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DdlOptions {
    /// MySQL/MariaDB table collation. `None` picks a binary no-pad collation from the server
    /// version at connect time (`utf8mb4_nopad_bin` on MariaDB, `utf8mb4_0900_bin` on MySQL 8,
    /// `utf8mb4_bin` otherwise) and falls back to `utf8mb4_bin` in generated SQL.
    pub mysql_collation: Option<String>,
    /// StarRocks `replication_num` (the cluster default applies when `None`).
    pub starrocks_replication_num: Option<u32>,
    /// StarRocks bucket count (`DISTRIBUTED BY HASH(...) BUCKETS n`; automatic when `None`).
    pub starrocks_buckets: Option<u32>,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::MySql => "mysql",
            Dialect::Postgres => "postgres",
            Dialect::Sqlite => "sqlite",
            Dialect::StarRocks => "starrocks",
        }
    }

    /// Whether the driver underneath is the MySQL protocol.
    pub fn is_mysql_protocol(self) -> bool {
        matches!(self, Dialect::MySql | Dialect::StarRocks)
    }

    /// Whether a batch runs in one transaction (StarRocks has no multi-statement transactions).
    pub fn transactional(self) -> bool {
        !matches!(self, Dialect::StarRocks)
    }

    /// The most bind parameters one statement may carry.
    pub fn max_bind_params(self) -> usize {
        match self {
            Dialect::Sqlite => 32_766,
            Dialect::MySql | Dialect::StarRocks | Dialect::Postgres => 65_535,
        }
    }

    /// Quotes an identifier: `` `a``b` `` on MySQL/StarRocks, `"a""b"` on PostgreSQL/SQLite.
    pub fn quote_ident(self, ident: &str) -> String {
        match self {
            Dialect::MySql | Dialect::StarRocks => format!("`{}`", ident.replace('`', "``")),
            Dialect::Postgres | Dialect::Sqlite => format!("\"{}\"", ident.replace('"', "\"\"")),
        }
    }

    /// The column type for `ty`; `key` is true for primary-key columns (MySQL cannot index
    /// `TEXT`/`BLOB` without a prefix, so keys get bounded types).
    pub fn column_type(self, ty: &ColumnType, key: bool) -> String {
        use ColumnType as T;
        match (self, ty) {
            (_, T::Int) => "BIGINT".into(),
            (Dialect::Sqlite, T::Decimal { .. }) => "TEXT".into(),
            (Dialect::Postgres, T::Decimal { precision, scale }) => {
                if *precision == 0 {
                    "NUMERIC".into()
                } else {
                    format!("NUMERIC({},{})", (*precision).max(*scale), scale)
                }
            }
            (_, T::Decimal { precision, scale }) => {
                let p = if *precision == 0 { 38 } else { *precision };
                format!("DECIMAL({},{})", p.max(*scale), scale)
            }
            (Dialect::Postgres, T::Float) => "DOUBLE PRECISION".into(),
            (_, T::Float) => "DOUBLE".into(),
            (_, T::Bool) => "BOOLEAN".into(),
            (Dialect::Sqlite, T::String { .. }) => "TEXT".into(),
            (Dialect::Postgres, T::String { max_length }) => match max_length {
                Some(n) if *n > 0 && *n <= 10_485_760 => format!("VARCHAR({n})"),
                _ => "TEXT".into(),
            },
            (Dialect::MySql, T::String { max_length }) => match (max_length, key) {
                (Some(n), _) if *n > 0 && *n <= 255 => format!("VARCHAR({n})"),
                (Some(n), true) if *n > 0 => format!("VARCHAR({})", (*n).min(768)),
                (None, true) => "VARCHAR(255)".into(),
                (Some(n), false) if *n <= 16_383 => "TEXT".into(),
                (Some(n), false) if *n <= 4_194_303 => "MEDIUMTEXT".into(),
                _ => "LONGTEXT".into(),
            },
            (Dialect::StarRocks, T::String { max_length }) => match max_length {
                Some(n) if *n > 0 && *n <= 1_048_576 => format!("VARCHAR({n})"),
                _ if key => "VARCHAR(255)".into(),
                _ => "STRING".into(),
            },
            (Dialect::MySql, T::Bytes) if key => "VARBINARY(255)".into(),
            (Dialect::MySql, T::Bytes) => "LONGBLOB".into(),
            (Dialect::Postgres, T::Bytes) => "BYTEA".into(),
            (Dialect::Sqlite, T::Bytes) => "BLOB".into(),
            (Dialect::StarRocks, T::Bytes) => "VARBINARY".into(),
            (_, T::Date) => "DATE".into(),
            (Dialect::MySql, T::Timestamp | T::TimestampTz) => "DATETIME(6)".into(),
            (Dialect::StarRocks | Dialect::Sqlite, T::Timestamp | T::TimestampTz) => {
                "DATETIME".into()
            }
            (Dialect::Postgres, T::Timestamp) => "TIMESTAMP".into(),
            (Dialect::Postgres, T::TimestampTz) => "TIMESTAMP WITH TIME ZONE".into(),
            (Dialect::Postgres, T::Array(_)) => "JSONB".into(),
            (Dialect::Sqlite, T::Array(_)) => "TEXT".into(),
            (Dialect::MySql | Dialect::StarRocks, T::Array(_)) => "JSON".into(),
        }
    }

    /// `CREATE TABLE IF NOT EXISTS` for `schema` under the name `target`, with its primary key.
    pub fn create_table_sql(
        self,
        schema: &TableSchema,
        target: &TableName,
        ddl: &DdlOptions,
    ) -> String {
        let is_key = |i: usize| schema.primary_key.contains(&i);
        // StarRocks wants the key columns first, in key order.
        let order: Vec<usize> = if self == Dialect::StarRocks {
            let mut order = schema.primary_key.clone();
            order.extend((0..schema.columns.len()).filter(|i| !is_key(*i)));
            order
        } else {
            (0..schema.columns.len()).collect()
        };
        let mut sql = format!("CREATE TABLE IF NOT EXISTS {} (\n", target.quoted(self));
        let mut first = true;
        for i in order {
            let column = &schema.columns[i];
            let key = is_key(i);
            if !first {
                sql.push_str(",\n");
            }
            first = false;
            let null = if key || !column.nullable {
                "NOT NULL"
            } else {
                "NULL"
            };
            let _ = write!(
                sql,
                "  {} {} {null}",
                self.quote_ident(&column.name),
                self.column_type(&column.column_type, key)
            );
        }
        let key_list = self.ident_list(schema.key_columns());
        match self {
            Dialect::StarRocks => {
                let _ = write!(
                    sql,
                    "\n) PRIMARY KEY ({key_list})\nDISTRIBUTED BY HASH ({key_list})"
                );
                if let Some(buckets) = ddl.starrocks_buckets {
                    let _ = write!(sql, " BUCKETS {buckets}");
                }
                if let Some(n) = ddl.starrocks_replication_num {
                    let _ = write!(sql, "\nPROPERTIES (\"replication_num\" = \"{n}\")");
                }
            }
            Dialect::MySql => {
                let collation = ddl.mysql_collation.as_deref().unwrap_or("utf8mb4_bin");
                let _ = write!(
                    sql,
                    ",\n  PRIMARY KEY ({key_list})\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}"
                );
            }
            Dialect::Postgres | Dialect::Sqlite => {
                let _ = write!(sql, ",\n  PRIMARY KEY ({key_list})\n)");
            }
        }
        sql
    }

    /// A multi-row upsert of `rows` rows of all of `schema`'s columns, in column order.
    pub fn upsert_sql(self, target: &TableName, schema: &TableSchema, rows: usize) -> String {
        let columns = &schema.columns;
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            target.quoted(self),
            self.ident_list(columns.iter())
        );
        let mut n = 0;
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for (c, column) in columns.iter().enumerate() {
                if c > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                self.push_placeholder(&mut sql, n, &column.column_type);
            }
            sql.push(')');
        }
        let non_key: Vec<&Column> = columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !schema.primary_key.contains(i))
            .map(|(_, c)| c)
            .collect();
        match self {
            Dialect::StarRocks => {}
            Dialect::MySql => {
                sql.push_str(" ON DUPLICATE KEY UPDATE ");
                // With only key columns there is nothing to update; a no-op assignment keeps
                // the statement an upsert without `INSERT IGNORE` (which hides other errors).
                let assign: Vec<&Column> = if non_key.is_empty() {
                    schema.key_columns().take(1).collect()
                } else {
                    non_key
                };
                let list = assign
                    .iter()
                    .map(|c| {
                        let q = self.quote_ident(&c.name);
                        format!("{q} = VALUES({q})")
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                sql.push_str(&list);
            }
            Dialect::Postgres | Dialect::Sqlite => {
                let _ = write!(
                    sql,
                    " ON CONFLICT ({}) DO ",
                    self.ident_list(schema.key_columns())
                );
                if non_key.is_empty() {
                    sql.push_str("NOTHING");
                } else {
                    sql.push_str("UPDATE SET ");
                    let list = non_key
                        .iter()
                        .map(|c| {
                            let q = self.quote_ident(&c.name);
                            format!("{q} = EXCLUDED.{q}")
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    sql.push_str(&list);
                }
            }
        }
        sql
    }

    /// A delete of `rows` keys: `WHERE k IN (…)` for a one-column key, a row-value
    /// `WHERE (a, b) IN ((…), …)` for a composite key (an `OR` of conjunctions on StarRocks).
    pub fn delete_sql(self, target: &TableName, schema: &TableSchema, rows: usize) -> String {
        let keys: Vec<&Column> = schema.key_columns().collect();
        let mut sql = format!("DELETE FROM {} WHERE ", target.quoted(self));
        let mut n = 0;
        if keys.len() == 1 {
            let _ = write!(sql, "{} IN (", self.quote_ident(&keys[0].name));
            for r in 0..rows {
                if r > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                self.push_placeholder(&mut sql, n, &keys[0].column_type);
            }
            sql.push(')');
        } else if self == Dialect::StarRocks {
            for r in 0..rows {
                if r > 0 {
                    sql.push_str(" OR ");
                }
                sql.push('(');
                for (k, key) in keys.iter().enumerate() {
                    if k > 0 {
                        sql.push_str(" AND ");
                    }
                    n += 1;
                    let _ = write!(sql, "{} = ", self.quote_ident(&key.name));
                    self.push_placeholder(&mut sql, n, &key.column_type);
                }
                sql.push(')');
            }
        } else {
            let _ = write!(sql, "({}) IN (", self.ident_list(keys.iter().copied()));
            for r in 0..rows {
                if r > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for (k, key) in keys.iter().enumerate() {
                    if k > 0 {
                        sql.push_str(", ");
                    }
                    n += 1;
                    self.push_placeholder(&mut sql, n, &key.column_type);
                }
                sql.push(')');
            }
            sql.push(')');
        }
        sql
    }

    /// `SELECT COUNT(*) FROM target`.
    pub fn count_sql(self, target: &TableName) -> String {
        format!("SELECT COUNT(*) FROM {}", target.quoted(self))
    }

    /// A `SELECT` of all of `schema`'s columns ordered by key, with the casts that let the
    /// writer read decimals and JSON back as exact text.
    pub fn select_sql(self, target: &TableName, schema: &TableSchema) -> String {
        let columns = schema
            .columns
            .iter()
            .map(|c| {
                let q = self.quote_ident(&c.name);
                match (&c.column_type, self) {
                    (ColumnType::Decimal { .. } | ColumnType::Array(_), Dialect::Postgres) => {
                        format!("{q}::text")
                    }
                    (
                        ColumnType::Decimal { .. } | ColumnType::Array(_),
                        Dialect::MySql | Dialect::StarRocks,
                    ) => format!("CAST({q} AS CHAR)"),
                    _ => q,
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT {columns} FROM {} ORDER BY {}",
            target.quoted(self),
            self.ident_list(schema.key_columns())
        )
    }

    fn ident_list<'a>(self, columns: impl Iterator<Item = &'a Column>) -> String {
        columns
            .map(|c| self.quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `?` on MySQL-protocol and SQLite; `$n` on PostgreSQL, cast where the value is bound as
    /// text (decimals to `NUMERIC`, arrays to `JSONB`).
    fn push_placeholder(self, sql: &mut String, n: usize, ty: &ColumnType) {
        match self {
            Dialect::Postgres => {
                let _ = write!(sql, "${n}");
                match ty {
                    ColumnType::Decimal { .. } => sql.push_str("::NUMERIC"),
                    ColumnType::Array(_) => sql.push_str("::JSONB"),
                    _ => {}
                }
            }
            _ => sql.push('?'),
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::TableId;

    fn schema() -> TableSchema {
        let col = |name: &str, column_type: ColumnType, nullable: bool| Column {
            name: name.into(),
            column_type,
            nullable,
        };
        TableSchema {
            table: TableId::new("bank", "accounts"),
            version: 1,
            columns: vec![
                col(
                    "name",
                    ColumnType::String {
                        max_length: Some(40),
                    },
                    true,
                ),
                col("id", ColumnType::Int, false),
                col(
                    "ccy",
                    ColumnType::String {
                        max_length: Some(3),
                    },
                    false,
                ),
                col(
                    "balance",
                    ColumnType::Decimal {
                        precision: 18,
                        scale: 2,
                    },
                    true,
                ),
            ],
            primary_key: vec![1, 2],
        }
    }

    #[test]
    fn quoting_doubles_the_quote() {
        assert_eq!(Dialect::MySql.quote_ident("a`b"), "`a``b`");
        assert_eq!(Dialect::Postgres.quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            TableName::with_schema("s", "t").quoted(Dialect::Sqlite),
            "\"s\".\"t\""
        );
    }

    #[test]
    fn starrocks_create_is_a_primary_key_table_with_keys_first() {
        let ddl = DdlOptions {
            starrocks_replication_num: Some(1),
            ..DdlOptions::default()
        };
        let sql = Dialect::StarRocks.create_table_sql(
            &schema(),
            &TableName::with_schema("dw", "accounts"),
            &ddl,
        );
        assert_eq!(
            sql,
            "CREATE TABLE IF NOT EXISTS `dw`.`accounts` (\n  `id` BIGINT NOT NULL,\n  \
             `ccy` VARCHAR(3) NOT NULL,\n  `name` VARCHAR(40) NULL,\n  `balance` DECIMAL(18,2) NULL\n) \
             PRIMARY KEY (`id`, `ccy`)\nDISTRIBUTED BY HASH (`id`, `ccy`)\n\
             PROPERTIES (\"replication_num\" = \"1\")"
        );
    }

    #[test]
    fn starrocks_upsert_is_a_plain_insert_and_delete_uses_conjunctions() {
        let t = TableName::new("accounts");
        assert_eq!(
            Dialect::StarRocks.upsert_sql(&t, &schema(), 2),
            "INSERT INTO `accounts` (`name`, `id`, `ccy`, `balance`) VALUES (?, ?, ?, ?), (?, ?, ?, ?)"
        );
        assert_eq!(
            Dialect::StarRocks.delete_sql(&t, &schema(), 2),
            "DELETE FROM `accounts` WHERE (`id` = ? AND `ccy` = ?) OR (`id` = ? AND `ccy` = ?)"
        );
    }

    #[test]
    fn mysql_upsert_and_create() {
        let t = TableName::new("accounts");
        assert_eq!(
            Dialect::MySql.upsert_sql(&t, &schema(), 1),
            "INSERT INTO `accounts` (`name`, `id`, `ccy`, `balance`) VALUES (?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE `name` = VALUES(`name`), `balance` = VALUES(`balance`)"
        );
        let sql = Dialect::MySql.create_table_sql(&schema(), &t, &DdlOptions::default());
        assert!(sql.ends_with(
            "PRIMARY KEY (`id`, `ccy`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        ));
        assert_eq!(
            Dialect::MySql.delete_sql(&t, &schema(), 2),
            "DELETE FROM `accounts` WHERE (`id`, `ccy`) IN ((?, ?), (?, ?))"
        );
    }

    #[test]
    fn postgres_upsert_numbers_and_casts_placeholders() {
        let t = TableName::with_schema("public", "accounts");
        assert_eq!(
            Dialect::Postgres.upsert_sql(&t, &schema(), 2),
            "INSERT INTO \"public\".\"accounts\" (\"name\", \"id\", \"ccy\", \"balance\") VALUES \
             ($1, $2, $3, $4::NUMERIC), ($5, $6, $7, $8::NUMERIC) ON CONFLICT (\"id\", \"ccy\") \
             DO UPDATE SET \"name\" = EXCLUDED.\"name\", \"balance\" = EXCLUDED.\"balance\""
        );
        let mut single = schema();
        single.primary_key = vec![1];
        assert_eq!(
            Dialect::Postgres.delete_sql(&t, &single, 3),
            "DELETE FROM \"public\".\"accounts\" WHERE \"id\" IN ($1, $2, $3)"
        );
    }

    #[test]
    fn key_only_tables_still_upsert() {
        let mut s = schema();
        s.columns.truncate(3);
        s.columns.remove(0);
        s.primary_key = vec![0, 1];
        let t = TableName::new("k");
        assert!(
            Dialect::Sqlite
                .upsert_sql(&t, &s, 1)
                .ends_with("DO NOTHING")
        );
        assert!(
            Dialect::MySql
                .upsert_sql(&t, &s, 1)
                .ends_with("ON DUPLICATE KEY UPDATE `id` = VALUES(`id`)")
        );
    }

    #[test]
    fn column_types_per_dialect() {
        use ColumnType as T;
        let dec = T::Decimal {
            precision: 12,
            scale: 2,
        };
        assert_eq!(Dialect::Postgres.column_type(&dec, false), "NUMERIC(12,2)");
        assert_eq!(Dialect::MySql.column_type(&dec, false), "DECIMAL(12,2)");
        assert_eq!(Dialect::Sqlite.column_type(&dec, false), "TEXT");
        assert_eq!(
            Dialect::Postgres.column_type(&T::TimestampTz, false),
            "TIMESTAMP WITH TIME ZONE"
        );
        assert_eq!(
            Dialect::MySql.column_type(&T::TimestampTz, false),
            "DATETIME(6)"
        );
        assert_eq!(
            Dialect::MySql.column_type(&T::Bytes, true),
            "VARBINARY(255)"
        );
        assert_eq!(
            Dialect::MySql.column_type(&T::String { max_length: None }, false),
            "LONGTEXT"
        );
        assert_eq!(
            Dialect::MySql.column_type(&T::String { max_length: None }, true),
            "VARCHAR(255)"
        );
        assert_eq!(
            Dialect::Postgres.column_type(&T::Array(Box::new(T::Int)), false),
            "JSONB"
        );
        assert_eq!(
            Dialect::StarRocks.column_type(&T::Bytes, false),
            "VARBINARY"
        );
    }
}
