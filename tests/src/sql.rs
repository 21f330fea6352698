//! SQL helpers: a database (MariaDB) or schema (PostgreSQL) of the test's own, through sqlx.
//!
//! Both servers keep their data between runs (until `stop.sh --purge`), so a test creates its
//! own and drops it at the end with [`MysqlScratch::drop_database`] /
//! [`PgScratch::drop_schema`]. A test that fails before that leaves it behind, harmlessly:
//! the names never repeat.

use anyhow::Context;
use sqlx::AssertSqlSafe;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;

/// Replaces the database (the URL's path) of a `mysql://` or `postgres://` URL.
pub fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(url).with_context(|| format!("parsing database URL {url}"))?;
    u.set_path(&format!("/{database}"));
    Ok(u.to_string())
}

/// A MariaDB database of the test's own.
pub struct MysqlScratch {
    /// The database name (a [`crate::unique_table`] name).
    pub database: String,
    /// The server URL with this database as its path: hand it to the code under test.
    pub url: String,
    /// A pool on `url`.
    pub pool: MySqlPool,
    admin: MySqlPool,
}

impl MysqlScratch {
    /// Creates database `<prefix>_<unique>` on the server at `server_url`.
    pub async fn create(server_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let admin = MySqlPoolOptions::new()
            .max_connections(1)
            .connect(server_url)
            .await
            .with_context(|| format!("connecting to MariaDB at {server_url}"))?;
        let database = crate::unique_table(prefix);
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE `{database}`")))
            .execute(&admin)
            .await
            .with_context(|| format!("CREATE DATABASE {database}"))?;
        let url = with_database(server_url, &database)?;
        let pool = MySqlPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(Self {
            database,
            url,
            pool,
            admin,
        })
    }

    /// Drops the database.
    pub async fn drop_database(self) -> anyhow::Result<()> {
        self.pool.close().await;
        sqlx::query(AssertSqlSafe(format!("DROP DATABASE `{}`", self.database)))
            .execute(&self.admin)
            .await
            .with_context(|| format!("DROP DATABASE {}", self.database))?;
        self.admin.close().await;
        Ok(())
    }
}

/// A PostgreSQL schema of the test's own, with a pool whose `search_path` is that schema (so
/// unqualified table names land in it).
pub struct PgScratch {
    /// The schema name (a [`crate::unique_table`] name).
    pub schema: String,
    /// A pool with `search_path` set to `schema`.
    pub pool: PgPool,
    admin: PgPool,
}

impl PgScratch {
    /// Creates schema `<prefix>_<unique>` in the database at `url`.
    pub async fn create(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {url}"))?;
        let schema = crate::unique_table(prefix);
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .execute(&admin)
            .await
            .with_context(|| format!("CREATE SCHEMA {schema}"))?;
        let options = PgConnectOptions::from_str(url)?.options([("search_path", schema.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .with_context(|| format!("connecting to {url} with search_path {schema}"))?;
        Ok(Self {
            schema,
            pool,
            admin,
        })
    }

    /// Drops the schema and everything in it.
    pub async fn drop_schema(self) -> anyhow::Result<()> {
        self.pool.close().await;
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA \"{}\" CASCADE",
            self.schema
        )))
        .execute(&self.admin)
        .await
        .with_context(|| format!("DROP SCHEMA {}", self.schema))?;
        self.admin.close().await;
        Ok(())
    }
}
