//! Checker throughput against MariaDB's own `CHECKSUM TABLE`, on the same two tables in the
//! same run. Prints figures; asserts nothing about time.
//!
//! ```sh
//! source /tmp/syncmesh-services/env.sh
//! SYNCMESH_CHECKER_BENCH_ROWS=1000000 cargo bench -p syncmesh-tests --bench checker
//! cargo bench -p syncmesh-tests --bench checker        # 10,000,000 rows per side
//! ```
//!
//! Variables: `SYNCMESH_CHECKER_BENCH_ROWS` (rows per table, default 10,000,000),
//! `SYNCMESH_CHECKER_BENCH_CHUNK` (chunk size, default 50,000),
//! `SYNCMESH_CHECKER_BENCH_PARALLELISM` (chunks in flight, default 4: the checker's defaults),
//! `SYNCMESH_CHECKER_BENCH_MD5` (`0` skips the round with the cross-engine MD5 hash). Needs
//! `SYNCMESH_MYSQL_URL`; the tables live in a database of their own, dropped at the end.
//! Both tables are on one MariaDB ≥ 10.8 server, so the checker uses its CRC32C row hash.

use sqlx::AssertSqlSafe;
use sqlx::mysql::MySqlPool;
use std::time::{Duration, Instant};
use syncmesh_connectors::checker::{CheckOptions, CheckReport, Database, RowHash, TableCheck};
use syncmesh_connectors::sinks::table::TableName;
use syncmesh_tests::sql::MysqlScratch;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

async fn exec(pool: &MySqlPool, sql: &str) -> anyhow::Result<u64> {
    Ok(sqlx::query(AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .map_err(|e| anyhow::anyhow!("{sql}: {e}"))?
        .rows_affected())
}

/// Loads `rows` rows into `table` with multi-row `INSERT … SELECT` from MariaDB's sequence
/// engine, a million rows per statement.
async fn load(pool: &MySqlPool, table: &str, rows: u64) -> anyhow::Result<()> {
    exec(
        pool,
        &format!(
            "CREATE TABLE {table} (id BIGINT NOT NULL PRIMARY KEY, account VARCHAR(32) NOT NULL, \
             amount DECIMAL(18,2) NOT NULL, booked DATETIME(6) NOT NULL, flag BOOLEAN NULL, \
             note VARCHAR(100) NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin"
        ),
    )
    .await?;
    let step = 1_000_000u64;
    let mut from = 1;
    while from <= rows {
        let to = (from + step - 1).min(rows);
        exec(
            pool,
            &format!(
                "INSERT INTO {table} SELECT seq, CONCAT('ACC-', LPAD(seq MOD 99991, 8, '0')), \
                 (seq * 7919 MOD 100000000) / 100 - 250000, \
                 TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq * 1001 MICROSECOND, \
                 IF(seq MOD 3 = 0, NULL, seq MOD 2), \
                 IF(seq MOD 5 = 0, NULL, CONCAT('note ü ', seq)) FROM seq_{from}_to_{to}"
            ),
        )
        .await?;
        from = to + 1;
    }
    Ok(())
}

async fn checksum(pool: &MySqlPool, a: &str, b: &str) -> anyhow::Result<(Duration, bool)> {
    let started = Instant::now();
    let rows: Vec<(String, Option<i64>)> =
        sqlx::query_as(AssertSqlSafe(format!("CHECKSUM TABLE {a}, {b}")))
            .fetch_all(pool)
            .await?;
    let elapsed = started.elapsed();
    Ok((elapsed, rows.len() == 2 && rows[0].1 == rows[1].1))
}

async fn check(
    db: &Database,
    a: &str,
    b: &str,
    options: &CheckOptions,
) -> anyhow::Result<(Duration, CheckReport)> {
    let started = Instant::now();
    let check =
        TableCheck::prepare(db, &TableName::new(a), db, &TableName::new(b), options).await?;
    let report = check.run(&|_| {}).await?;
    Ok((started.elapsed(), report))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Ok(url) = std::env::var("SYNCMESH_MYSQL_URL") else {
        eprintln!("SKIPPED: SYNCMESH_MYSQL_URL is not set (source /tmp/syncmesh-services/env.sh)");
        return Ok(());
    };
    // `cargo bench` passes `--bench`; `cargo test --benches` runs the binary without it: then
    // only prove it starts.
    if !std::env::args().any(|a| a == "--bench") {
        println!("checker bench: run with `cargo bench -p syncmesh-tests --bench checker`");
        return Ok(());
    }
    let rows = env_u64("SYNCMESH_CHECKER_BENCH_ROWS", 10_000_000);
    let defaults = CheckOptions::default();
    let options = CheckOptions {
        chunk_size: env_u64("SYNCMESH_CHECKER_BENCH_CHUNK", defaults.chunk_size),
        parallelism: env_u64(
            "SYNCMESH_CHECKER_BENCH_PARALLELISM",
            defaults.parallelism as u64,
        ) as usize,
        ..defaults
    };
    let scratch = MysqlScratch::create(&url, "ck_bench").await?;
    let pool = &scratch.pool;
    let _ = exec(pool, "SET SESSION sql_log_bin = 0").await;

    println!(
        "checker bench: {rows} rows per table, chunk {}, parallelism {}",
        options.chunk_size, options.parallelism
    );
    let started = Instant::now();
    load(pool, "src", rows).await?;
    exec(pool, "CREATE TABLE snk LIKE src").await?;
    exec(pool, "INSERT INTO snk SELECT * FROM src").await?;
    println!(
        "loaded 2 x {rows} rows in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Both sides share the pool: a connection per chunk in flight on each side, and the walk.
    let db = Database::connect(&scratch.url, 2 * options.parallelism as u32 + 1).await?;
    // Warm-up: one pass of each reads both tables once, so neither tool pays the cold reads.
    checksum(pool, "src", "snk").await?;
    check(&db, "src", "snk", &options).await?;

    let mut best_sum = Duration::MAX;
    let mut best_check = Duration::MAX;
    for round in 1..=2 {
        let (t_sum, same) = checksum(pool, "src", "snk").await?;
        let (t_check, report) = check(&db, "src", "snk", &options).await?;
        assert!(same && report.equal, "equal tables must compare equal");
        println!(
            "round {round}: CHECKSUM TABLE src, snk {:.2}s | checker {:.2}s ({} chunks, {} hashed in {}) | ratio {:.2}",
            t_sum.as_secs_f64(),
            t_check.as_secs_f64(),
            report.chunks,
            report.hash,
            report.source.hashed_in,
            t_check.as_secs_f64() / t_sum.as_secs_f64()
        );
        best_sum = best_sum.min(t_sum);
        best_check = best_check.min(t_check);
    }

    // The cross-engine MD5 hash on the same tables, for comparison.
    let mut md5_ratio = None;
    if env_u64("SYNCMESH_CHECKER_BENCH_MD5", 1) != 0 {
        let md5 = CheckOptions {
            row_hash: Some(RowHash::Md5),
            ..options.clone()
        };
        let (t_sum, _) = checksum(pool, "src", "snk").await?;
        let (t_check, report) = check(&db, "src", "snk", &md5).await?;
        assert!(report.equal && report.hash == RowHash::Md5);
        let ratio = t_check.as_secs_f64() / t_sum.as_secs_f64();
        println!(
            "md5-64 for comparison: CHECKSUM TABLE src, snk {:.2}s | checker {:.2}s | ratio {ratio:.2}",
            t_sum.as_secs_f64(),
            t_check.as_secs_f64(),
        );
        md5_ratio = Some(ratio);
    }

    // Plant differences: 3 deleted, 3 altered (decimal, text, timestamp), 2 added.
    let mid = rows / 2;
    exec(
        pool,
        &format!("DELETE FROM snk WHERE id IN (1, {mid}, {rows})"),
    )
    .await?;
    exec(pool, "UPDATE snk SET amount = amount + 0.01 WHERE id = 7").await?;
    exec(
        pool,
        &format!("UPDATE snk SET note = 'changed' WHERE id = {}", mid + 1),
    )
    .await?;
    exec(
        pool,
        &format!(
            "UPDATE snk SET booked = booked + INTERVAL 1 MICROSECOND WHERE id = {}",
            rows - 1
        ),
    )
    .await?;
    exec(pool, &format!(
        "INSERT INTO snk VALUES ({}, 'X', 1.00, '2024-01-01', 1, NULL), (0, 'Y', 2.00, '2024-01-01', 0, 'z')",
        rows + 10
    ))
    .await?;
    let (t_sum_diff, same) = checksum(pool, "src", "snk").await?;
    let (t_check_diff, report) = check(&db, "src", "snk", &options).await?;
    let named = |d: &[syncmesh_connectors::checker::RowDifference]| -> Vec<String> {
        d.iter().map(|d| d.key_text.clone()).collect()
    };
    println!(
        "with 8 planted differences: CHECKSUM TABLE {:.2}s (says only: {}) | checker {:.2}s, {} mismatched chunks, \
         missing {:?}, extra {:?}, different {:?} | ratio {:.2}",
        t_sum_diff.as_secs_f64(),
        if same { "equal" } else { "tables differ" },
        t_check_diff.as_secs_f64(),
        report.mismatched_chunks,
        named(&report.missing),
        named(&report.extra),
        named(&report.different),
        t_check_diff.as_secs_f64() / t_sum_diff.as_secs_f64()
    );
    assert_eq!(
        report.differing_rows, 8,
        "every planted difference is located"
    );
    println!(
        "RESULT rows={rows} checksum_table_s={:.2} checker_s={:.2} ratio={:.2} checker_rows_per_s={:.0} \
         with_differences: checksum_table_s={:.2} checker_s={:.2} ratio={:.2} located={}/8 hash={} md5_ratio={}",
        best_sum.as_secs_f64(),
        best_check.as_secs_f64(),
        best_check.as_secs_f64() / best_sum.as_secs_f64(),
        (2 * rows) as f64 / best_check.as_secs_f64(),
        t_sum_diff.as_secs_f64(),
        t_check_diff.as_secs_f64(),
        t_check_diff.as_secs_f64() / t_sum_diff.as_secs_f64(),
        report.differing_rows,
        report.hash,
        md5_ratio.map_or("-".into(), |r| format!("{r:.2}"))
    );
    db.close().await;
    scratch.drop_database().await?;
    Ok(())
}
