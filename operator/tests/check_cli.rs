//! `syncmesh check` end to end: the JSON report, exit 0 when equal, 1 on differences (and the
//! fix SQL makes the next run exit 0), 2 on bad input; URL mode and manifest mode. SQLite
//! files on both sides need no server; one test crosses MariaDB and PostgreSQL when the
//! services are configured (`tests/run-all.sh`).

mod common;

use common::{syncmesh, text};
use serde_json::Value as J;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use std::path::Path;
use std::str::FromStr;

async fn sqlite(path: &Path) -> SqlitePool {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .expect("sqlite url")
        .create_if_missing(true);
    SqlitePool::connect_with(opts).await.expect("sqlite")
}

async fn exec(pool: &SqlitePool, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

const DDL: &str = "CREATE TABLE accounts (id BIGINT PRIMARY KEY, name TEXT, balance DECIMAL(12,2), \
                   opened DATETIME, photo BLOB)";

async fn two_databases(dir: &Path) -> (String, String, SqlitePool) {
    let mut urls = Vec::new();
    let mut pools = Vec::new();
    for name in ["source.db", "sink.db"] {
        let path = dir.join(name);
        let pool = sqlite(&path).await;
        exec(&pool, DDL).await;
        let mut values = Vec::new();
        for id in 1..=250 {
            values.push(format!(
                "({id}, 'name {id} é', '{}.{:02}', '2024-01-02 03:04:{:02}.000001', X'00{:02x}')",
                id * 3,
                id % 100,
                id % 60,
                id % 256
            ));
        }
        exec(
            &pool,
            &format!("INSERT INTO accounts VALUES {}", values.join(", ")),
        )
        .await;
        urls.push(format!("sqlite://{}", path.display()));
        pools.push(pool);
    }
    let sink = pools.pop().expect("sink pool");
    (urls.remove(0), urls.remove(0), sink)
}

fn check(args: &[&str]) -> (i32, J, String) {
    let out = syncmesh(&[&["check"], args].concat());
    let stdout = text(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or(J::Null);
    (out.status.code().unwrap_or(-1), json, text(&out.stderr))
}

fn keys(report: &J, kind: &str) -> Vec<String> {
    report[kind]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| d["keyText"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn url_mode_reports_differences_and_their_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (source, sink, sink_pool) = two_databases(dir.path()).await;
    let args = [
        "--source",
        &source,
        "--sink",
        &sink,
        "--table",
        "accounts",
        "--chunk-size",
        "40",
    ];

    let (code, report, stderr) = check(&args);
    assert_eq!(code, 0, "{stderr}\n{report}");
    assert_eq!(report["equal"], true);
    assert_eq!(report["table"], "accounts");
    assert_eq!(report["source"]["rows"], 250);
    assert_eq!(report["sink"]["rows"], 250);
    assert_eq!(report["chunks"], 8, "{report}");
    assert_eq!(report["mismatchedChunks"], 0);
    assert_eq!(report["diffRatio"], 0.0);
    assert_eq!(report["hash"], "md5-64", "{report}");

    exec(&sink_pool, "DELETE FROM accounts WHERE id = 17").await;
    exec(
        &sink_pool,
        "UPDATE accounts SET balance = '3.01', photo = NULL WHERE id = 101",
    )
    .await;
    exec(
        &sink_pool,
        "INSERT INTO accounts VALUES (999, NULL, NULL, NULL, NULL)",
    )
    .await;
    let (code, report, stderr) = check(&args);
    assert_eq!(code, 1, "{stderr}\n{report}");
    assert!(stderr.contains("differences found"), "{stderr}");
    assert_eq!(report["equal"], false);
    assert_eq!(keys(&report, "missing"), ["17"]);
    assert_eq!(keys(&report, "extra"), ["999"]);
    assert_eq!(keys(&report, "different"), ["101"]);
    assert_eq!(
        report["different"][0]["columns"],
        serde_json::json!(["balance", "photo"])
    );
    assert_eq!(report["differingRows"], 3);
    assert!((report["diffRatio"].as_f64().unwrap_or(0.0) - 3.0 / 250.0).abs() < 1e-12);
    assert_eq!(
        report["extra"][0]["fix"],
        "DELETE FROM \"accounts\" WHERE \"id\" = 999"
    );
    assert_eq!(
        report["different"][0]["fix"],
        "UPDATE \"accounts\" SET \"balance\" = 303.01, \"photo\" = X'0065' WHERE \"id\" = 101"
    );
    let insert = report["missing"][0]["fix"].as_str().unwrap_or("");
    assert!(insert.starts_with("INSERT INTO \"accounts\""), "{insert}");
    for kind in ["missing", "extra", "different"] {
        for d in report[kind].as_array().into_iter().flatten() {
            exec(&sink_pool, d["fix"].as_str().unwrap_or("")).await;
        }
    }
    let (code, report, stderr) = check(&args);
    assert_eq!(code, 0, "{stderr}\n{report}");

    // --sink-table names a differently named sink table.
    exec(&sink_pool, "ALTER TABLE accounts RENAME TO accounts_copy").await;
    let (code, report, stderr) = check(&[
        "--source",
        &source,
        "--sink",
        &sink,
        "--table",
        "accounts",
        "--sink-table",
        "accounts_copy",
        "--stream",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{stderr}\n{report}");
    assert_eq!(report["sink"]["table"], "accounts_copy");
}

#[tokio::test]
async fn bad_input_exits_2_and_names_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (source, sink, sink_pool) = two_databases(dir.path()).await;
    exec(&sink_pool, "CREATE TABLE nokey (a TEXT)").await;
    let missing = dir.path().join("missing.yaml");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--source", &source, "--sink", &sink, "--table", "nope"],
            "does not exist",
        ),
        (
            vec![
                "--source",
                "oracle://db/x",
                "--sink",
                &sink,
                "--table",
                "accounts",
            ],
            "oracle",
        ),
        (
            vec![
                "--source", "ftp://x", "--sink", &sink, "--table", "accounts",
            ],
            "unsupported scheme",
        ),
        (
            vec!["--source", &sink, "--sink", &sink, "--table", "nokey"],
            "no primary key",
        ),
        (
            vec![
                "--source",
                &source,
                "--sink",
                &sink,
                "--table",
                "accounts",
                "--chunk-size",
                "1",
            ],
            "chunk size",
        ),
        (vec!["--source", &source, "--sink", &sink], "--table"),
        (
            vec![
                "--source", &source, "--sink", &sink, "--table", "accounts", "--hash", "sha1",
            ],
            "not a row hash",
        ),
        (vec![], "give a pipeline manifest"),
        (vec![missing.to_str().unwrap_or("")], "cannot read manifest"),
    ];
    for (args, needle) in cases {
        let (code, report, stderr) = check(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}\n{report}");
        assert!(
            stderr.contains(needle),
            "{args:?}: expected `{needle}` in {stderr}"
        );
        assert_eq!(report, J::Null, "nothing on stdout for {args:?}");
    }
}

#[tokio::test]
async fn manifest_mode_checks_the_pipeline_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, sink_pool) = two_databases(dir.path()).await;
    // The source database names the table as the pipeline does; the sink maps it.
    let source_pool = sqlite(&dir.path().join("source.db")).await;
    exec(&source_pool, "ALTER TABLE accounts RENAME TO ledger").await;
    let manifest = |check: &str| {
        format!(
            "apiVersion: syncmesh.io/v1alpha1\nkind: SyncPipeline\nmetadata: {{name: ledger}}\nspec:\n  \
             sources:\n    - name: files\n      flatFile: {{path: data, layout: ledger.cpy, table: bank.ledger, primaryKey: [ID]}}\n  \
             batch: {{url: out}}\n  sink:\n    url: sqlite://sink.db\n    tables: {{bank.ledger: accounts}}\n{check}"
        )
    };
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(
        &path,
        manifest("  check: {sourceUrl: 'sqlite://source.db', chunkSize: 100}\n"),
    )
    .expect("manifest");
    let p = path.to_str().unwrap_or("");
    let (code, report, stderr) = check(&[p]);
    assert_eq!(code, 0, "{stderr}\n{report}");
    assert_eq!(report["pipeline"], "ledger");
    assert_eq!(report["equal"], true);
    assert_eq!(report["tables"][0]["table"], "bank.ledger");
    assert_eq!(report["tables"][0]["chunks"], 4, "{report}");

    exec(
        &sink_pool,
        "UPDATE accounts SET name = 'changed' WHERE id = 250",
    )
    .await;
    let (code, report, stderr) = check(&[p, "--table", "bank.ledger"]);
    assert_eq!(code, 1, "{stderr}\n{report}");
    assert_eq!(keys(&report["tables"][0], "different"), ["250"]);

    let (code, _, stderr) = check(&[p, "--table", "bank.other"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("not one of the pipeline's tables"),
        "{stderr}"
    );

    std::fs::write(&path, manifest("")).expect("manifest");
    let (code, _, stderr) = check(&[p]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("spec.check"), "{stderr}");

    std::fs::write(
        &path,
        manifest("  check: {sourceUrl: 'sqlite://source.db', schedule: 'daily'}\n"),
    )
    .expect("manifest");
    let (code, _, stderr) = check(&[p]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("spec.check.schedule"), "{stderr}");
}

/// MariaDB to PostgreSQL through the CLI, when both services are configured.
#[tokio::test]
async fn mariadb_and_postgres_through_the_cli() {
    let (Ok(my), Ok(pg)) = (
        std::env::var("SYNCMESH_MYSQL_URL"),
        std::env::var("SYNCMESH_POSTGRES_URL"),
    ) else {
        if std::env::var("SYNCMESH_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
            panic!("SYNCMESH_MYSQL_URL and SYNCMESH_POSTGRES_URL are required");
        }
        eprintln!("SKIPPED: mariadb/postgres not configured (run tests/run-all.sh)");
        return;
    };
    let table = format!(
        "ck_cli_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let my_pool = sqlx::MySqlPool::connect(&my).await.expect("mariadb");
    let pg_pool = sqlx::PgPool::connect(&pg).await.expect("postgres");
    let run_my = |sql: String| {
        let pool = my_pool.clone();
        async move {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .expect("mariadb sql")
        }
    };
    let run_pg = |sql: String| {
        let pool = pg_pool.clone();
        async move {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .expect("postgres sql")
        }
    };
    run_my(format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, v VARCHAR(20), d DECIMAL(9,3), t DATETIME(6))"
    ))
    .await;
    run_pg(format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, v TEXT, d NUMERIC(9,3), t TIMESTAMP)"
    ))
    .await;
    let rows: Vec<String> = (1..=120)
        .map(|i| format!("({i}, 'ü{i}', {i}.5, '2024-05-06 07:08:09.{i:06}')"))
        .collect();
    run_my(format!("INSERT INTO {table} VALUES {}", rows.join(", "))).await;
    run_pg(format!("INSERT INTO {table} VALUES {}", rows.join(", "))).await;
    let args = [
        "--source",
        &my,
        "--sink",
        &pg,
        "--table",
        &table,
        "--chunk-size",
        "25",
    ];
    let (code, report, stderr) = check(&args);
    assert_eq!(code, 0, "{stderr}\n{report}");
    assert_eq!(
        (
            report["source"]["hashedIn"].clone(),
            report["sink"]["hashedIn"].clone()
        ),
        ("sql".into(), "sql".into())
    );
    // Across engines the hash is MD5; CRC32C needs MariaDB on both sides.
    assert_eq!(report["hash"], "md5-64");
    let (code, _, stderr) = check(&[&args[..], &["--hash", "crc32c-64"]].concat());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("needs MariaDB 10.8"), "{stderr}");
    // MariaDB to MariaDB: CRC32C by default, MD5 on request, both equal.
    let copy = format!("{table}_copy");
    run_my(format!("CREATE TABLE {copy} AS SELECT * FROM {table}")).await;
    run_my(format!("ALTER TABLE {copy} ADD PRIMARY KEY (id)")).await;
    let my_args = [
        "--source",
        &my,
        "--sink",
        &my,
        "--table",
        &table,
        "--sink-table",
        &copy,
    ];
    for (extra, hash) in [(None, "crc32c-64"), (Some("md5-64"), "md5-64")] {
        let hash_args: Vec<&str> = extra.map(|h| vec!["--hash", h]).unwrap_or_default();
        let (code, report, stderr) = check(&[&my_args[..], &hash_args].concat());
        assert_eq!(code, 0, "{stderr}\n{report}");
        assert_eq!(report["hash"], hash, "{report}");
    }
    run_my(format!("DROP TABLE {copy}")).await;
    run_pg(format!(
        "UPDATE {table} SET t = t + interval '1 microsecond' WHERE id = 60"
    ))
    .await;
    let (code, report, stderr) = check(&args);
    assert_eq!(code, 1, "{stderr}\n{report}");
    assert_eq!(keys(&report, "different"), ["60"]);
    run_pg(
        report["different"][0]["fix"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
    .await;
    let (code, report, stderr) = check(&args);
    assert_eq!(code, 0, "{stderr}\n{report}");
    run_my(format!("DROP TABLE {table}")).await;
    run_pg(format!("DROP TABLE {table}")).await;
}
