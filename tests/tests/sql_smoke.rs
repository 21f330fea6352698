//! MariaDB and PostgreSQL through sqlx (as the product uses them): server settings the CDC
//! sources depend on, and a round trip through a table of the test's own.

use sqlx::Row;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use std::collections::BTreeMap;
use syncmesh_tests::sql::{MysqlScratch, PgScratch};
use syncmesh_tests::{require, services, unique_table};

/// Dynamic SQL: only our own generated table names are interpolated, never data.
macro_rules! sql {
    ($($arg:tt)*) => {
        sqlx::AssertSqlSafe(format!($($arg)*))
    };
}

#[tokio::test]
async fn mariadb_row_binlog_and_round_trip() -> anyhow::Result<()> {
    let db = require!(services::mysql());
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await?;

    // The binlog the CDC source reads: on, ROW format, full row images.
    let vars: BTreeMap<String, String> = sqlx::query_as(
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', \
         'binlog_row_image')",
    )
    .fetch_all(&pool)
    .await?
    .into_iter()
    .collect();
    assert_eq!(
        vars.get("binlog_format").map(String::as_str),
        Some("ROW"),
        "{vars:?}"
    );
    assert_eq!(
        vars.get("log_bin").map(String::as_str),
        Some("ON"),
        "{vars:?}"
    );
    assert_eq!(
        vars.get("binlog_row_image").map(String::as_str),
        Some("FULL"),
        "{vars:?}"
    );

    // A table of our own in the configured database.
    let table = unique_table("sql_smoke");
    sqlx::query(sql!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL, amount DECIMAL(12,2))"
    ))
    .execute(&pool)
    .await?;
    for (id, name) in [(1i64, "one"), (2, "two")] {
        sqlx::query(sql!(
            "INSERT INTO {table} (id, name, amount) VALUES (?, ?, 10.5)"
        ))
        .bind(id)
        .bind(name)
        .execute(&pool)
        .await?;
    }
    let rows: Vec<(i64, String)> = sqlx::query_as(sql!("SELECT id, name FROM {table} ORDER BY id"))
        .fetch_all(&pool)
        .await?;
    assert_eq!(rows, [(1, "one".to_string()), (2, "two".to_string())]);
    let amount: String = sqlx::query(sql!("SELECT CAST(SUM(amount) AS CHAR) FROM {table}"))
        .fetch_one(&pool)
        .await?
        .try_get(0)?;
    assert_eq!(amount, "21.00");
    sqlx::query(sql!("DROP TABLE {table}"))
        .execute(&pool)
        .await?;

    // A database of our own.
    let scratch = MysqlScratch::create(&db.url, "sql_smoke").await?;
    sqlx::query("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
        .execute(&scratch.pool)
        .await?;
    sqlx::query("INSERT INTO t VALUES (7, 'seven')")
        .execute(&scratch.pool)
        .await?;
    let (current, v): (String, String) = sqlx::query_as("SELECT DATABASE(), v FROM t WHERE id = 7")
        .fetch_one(&scratch.pool)
        .await?;
    assert_eq!(current, scratch.database);
    assert_eq!(v, "seven");
    scratch.drop_database().await?;
    Ok(())
}

#[tokio::test]
async fn postgres_logical_wal_and_round_trip() -> anyhow::Result<()> {
    let db = require!(services::postgres());
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await?;

    let (wal_level,): (String,) = sqlx::query_as("SHOW wal_level").fetch_one(&pool).await?;
    assert_eq!(wal_level, "logical");

    let table = unique_table("sql_smoke");
    sqlx::query(sql!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(12,2))"
    ))
    .execute(&pool)
    .await?;
    for (id, name) in [(1i64, "one"), (2, "two")] {
        sqlx::query(sql!(
            "INSERT INTO {table} (id, name, amount) VALUES ($1, $2, 10.5)"
        ))
        .bind(id)
        .bind(name)
        .execute(&pool)
        .await?;
    }
    let rows: Vec<(i64, String)> = sqlx::query_as(sql!("SELECT id, name FROM {table} ORDER BY id"))
        .fetch_all(&pool)
        .await?;
    assert_eq!(rows, [(1, "one".to_string()), (2, "two".to_string())]);
    let (amount,): (String,) = sqlx::query_as(sql!("SELECT SUM(amount)::text FROM {table}"))
        .fetch_one(&pool)
        .await?;
    assert_eq!(amount, "21.00");
    sqlx::query(sql!("DROP TABLE {table}"))
        .execute(&pool)
        .await?;

    // A schema of our own; unqualified names land in it.
    let scratch = PgScratch::create(&db.url, "sql_smoke").await?;
    sqlx::query("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
        .execute(&scratch.pool)
        .await?;
    sqlx::query("INSERT INTO t VALUES (7, 'seven')")
        .execute(&scratch.pool)
        .await?;
    let (schema, v): (String, String) =
        sqlx::query_as("SELECT table_schema::text, (SELECT v FROM t WHERE id = 7) FROM information_schema.tables WHERE table_name = 't' AND table_schema = current_schema()")
            .fetch_one(&scratch.pool)
            .await?;
    assert_eq!(schema, scratch.schema);
    assert_eq!(v, "seven");
    scratch.drop_schema().await?;
    Ok(())
}
