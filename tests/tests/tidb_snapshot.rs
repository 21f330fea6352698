//! The TiDB source's initial snapshot on real MariaDB, handed off to a changefeed while the
//! table is being written to. MariaDB stands in for TiDB and a trigger-based relay for TiCDC
//! (`syncmesh_tests::ticdc`): the source under test is the production code. The pipeline is
//! killed mid-snapshot and restarted; the sink table must end equal to the source, row by row.

use rdkafka::producer::FutureProducer;
use sqlx::mysql::MySqlPool;
use sqlx::{AssertSqlSafe, Row};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use syncmesh_connectors::metrics::Metrics;
use syncmesh_connectors::pipeline::Pipeline;
use syncmesh_connectors::runtime::StopSignal;
use syncmesh_tests::kafka::{create_topic, producer_config};
use syncmesh_tests::pipeline::{metric_sum, options};
use syncmesh_tests::sql::MysqlScratch;
use syncmesh_tests::ticdc::{Capture, CapturedTable};
use syncmesh_tests::{poll_until, require, services, unique_name};

const ROWS: i64 = 1000;

fn orders() -> CapturedTable {
    CapturedTable {
        name: "orders".into(),
        columns: [
            ("id", "int"),
            ("qty", "int"),
            ("amount", "decimal(12,4)"),
            ("name", "varchar(64)"),
            ("payload", "blob"),
            ("created", "datetime"),
        ]
        .iter()
        .map(|(c, t)| (c.to_string(), t.to_string()))
        .collect(),
        primary_key: vec!["id".into()],
    }
}

fn watermarks() -> CapturedTable {
    CapturedTable {
        name: "syncmesh_watermark".into(),
        columns: vec![
            ("id".into(), "varchar(190)".into()),
            ("mark".into(), "varchar(64)".into()),
        ],
        primary_key: vec!["id".into()],
    }
}

/// Every row as text, in key order, for a row-by-row comparison.
async fn rows(pool: &MySqlPool, table: &str) -> anyhow::Result<Vec<String>> {
    let sql = format!(
        "SELECT CONCAT_WS('|', id, qty, CAST(amount AS CHAR), IFNULL(name, '<null>'), HEX(payload), \
         DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s')) FROM {table} ORDER BY id"
    );
    Ok(sqlx::query(AssertSqlSafe(sql))
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0).unwrap_or_default())
        .collect())
}

/// Random inserts, updates and deletes until `stop`, one statement per transaction.
async fn write(pool: MySqlPool, stop: Arc<AtomicBool>) -> anyhow::Result<u64> {
    let mut n = 0u64;
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next_id = ROWS + 1;
    while !stop.load(Ordering::Relaxed) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let id = (s % ROWS as u64) as i64 + 1;
        match s % 10 {
            0..=5 => {
                sqlx::query("UPDATE orders SET qty = qty + 1, amount = amount + 0.0001, name = CONCAT('u', qty) WHERE id = ?")
                    .bind(id)
                    .execute(&pool)
                    .await?;
            }
            6 | 7 => {
                sqlx::query("DELETE FROM orders WHERE id = ?")
                    .bind(id)
                    .execute(&pool)
                    .await?;
            }
            _ => {
                sqlx::query("INSERT INTO orders VALUES (?, 1, 12.5000, 'new', X'00FF26', '2025-01-01 00:00:00')")
                    .bind(next_id)
                    .execute(&pool)
                    .await?;
                next_id += 1;
            }
        }
        n += 1;
    }
    Ok(n)
}

fn manifest(name: &str, brokers: &str, topic: &str, source: &str, db: &str, sink: &str) -> String {
    format!(
        r#"
apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata: {{name: {name}}}
spec:
  sources:
    - name: tidb
      tidb:
        brokers: "{brokers}"
        topics: ["{topic}"]
        tables: ["{db}.orders"]
        snapshot:
          url: "{source}"
          tables: ["{db}.orders"]
          chunkSize: 100
          watermarkTable: "{db}.syncmesh_watermark"
  batch: {{url: out/snapshots, maxEvents: 400, maxAgeSeconds: 1}}
  sink: {{url: "{sink}", createTables: true}}
"#
    )
}

async fn count(pool: &MySqlPool) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM orders")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_under_concurrent_writes_ends_equal_to_the_table() -> anyhow::Result<()> {
    let kafka = require!(services::kafka());
    let mysql = require!(services::mysql());
    let source = MysqlScratch::create(&mysql.url, "tidbsrc").await?;
    let sink = MysqlScratch::create(&mysql.url, "tidbsink").await?;
    let db = source.database.clone();

    sqlx::raw_sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, qty INT NOT NULL, amount DECIMAL(12,4), \
         name VARCHAR(64), payload BLOB, created DATETIME); \
         CREATE TABLE syncmesh_watermark (id VARCHAR(190) PRIMARY KEY, mark VARCHAR(64) NOT NULL)",
    )
    .execute(&source.pool)
    .await?;
    let mut seed = String::from("INSERT INTO orders VALUES ");
    for id in 1..=ROWS {
        if id > 1 {
            seed.push(',');
        }
        let note = if id % 7 == 0 {
            "NULL".to_string()
        } else {
            format!("'ünï {id}'")
        };
        seed.push_str(&format!(
            "({id}, {id}, {id}.{:04}, {note}, X'00{:02X}FF', '2024-02-29 23:59:58')",
            id % 10000,
            id % 256
        ));
    }
    sqlx::raw_sql(AssertSqlSafe(seed))
        .execute(&source.pool)
        .await?;

    // A slow upstream: the high watermark commits 150 ms after the chunk read, so the writer's
    // changes land inside the windows and stale chunk rows must be superseded.
    sqlx::raw_sql(
        "CREATE TRIGGER slow_high BEFORE UPDATE ON syncmesh_watermark FOR EACH ROW \
         BEGIN IF NEW.mark LIKE 'high-%' THEN DO SLEEP(0.15); END IF; END",
    )
    .execute(&source.pool)
    .await?;
    let name = unique_name("tidb-snap", '-', 40);
    let topic = format!("{name}-changefeed");
    create_topic(&kafka.brokers, &topic, 2).await?;
    let mut capture = Capture::install(
        source.pool.clone(),
        &db,
        vec![orders(), watermarks()],
        &topic,
        2,
    )
    .await?;
    let producer: FutureProducer = producer_config(&kafka.brokers, None).create()?;
    let stop_relay = Arc::new(AtomicBool::new(false));
    let relay = {
        let stop = stop_relay.clone();
        tokio::spawn(async move {
            let mut relayed = 0usize;
            while !stop.load(Ordering::Relaxed) {
                relayed += capture.relay(&producer).await?;
                // The relay polls the log, as TiCDC polls TiKV; this is its pace, not a wait
                // for anything the test checks.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            relayed += capture.relay(&producer).await?;
            anyhow::Ok(relayed)
        })
    };
    let stop_writer = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write(source.pool.clone(), stop_writer.clone()));

    let dir = tempfile::tempdir()?;
    let manifest = manifest(&name, &kafka.brokers, &topic, &source.url, &db, &sink.url);
    let pipeline = syncmesh_crds::parse_manifest(&manifest)?;

    // First run: killed (dropped, no drain) once the sink holds part of the snapshot.
    let built = Pipeline::build(&pipeline, &options(dir.path()), Arc::new(Metrics::new())).await?;
    let (stop_tx, stop) = StopSignal::new();
    let task = tokio::spawn(async move { built.run(stop_tx, stop).await });
    let partial = poll_until(
        Duration::from_secs(60),
        "part of the snapshot in the sink",
        || async {
            let n = count(&sink.pool).await;
            if task.is_finished() {
                anyhow::bail!("the pipeline ended early");
            }
            Ok((n > 0).then_some(n))
        },
    )
    .await;
    task.abort();
    let _ = task.await;
    let partial = partial?;
    assert!(
        partial < ROWS,
        "killed mid-snapshot ({partial} rows in the sink)"
    );

    // Second run, to the end; writes stop part-way, then the sink must converge to the table.
    let metrics = Arc::new(Metrics::new());
    let built = Pipeline::build(&pipeline, &options(dir.path()), metrics.clone()).await?;
    let (stop_tx, stop) = StopSignal::new();
    let stopper = stop_tx.clone();
    let task = tokio::spawn(async move { built.run(stop_tx, stop).await });
    poll_until(
        Duration::from_secs(60),
        "the sink to grow after the restart",
        || async { Ok((count(&sink.pool).await > partial).then_some(())) },
    )
    .await?;
    stop_writer.store(true, Ordering::Relaxed);
    let writes = writer.await??;
    let expected = rows(&source.pool, "orders").await?;
    let converged = poll_until(
        Duration::from_secs(90),
        "the sink to equal the source",
        || async {
            let got = rows(&sink.pool, "orders").await.unwrap_or_default();
            if got == expected {
                return Ok(Some(()));
            }
            let missing = expected.iter().filter(|r| !got.contains(r)).count();
            let extra = got.iter().filter(|r| !expected.contains(r)).count();
            anyhow::bail!(
                "{} rows vs {}: {missing} missing or different, {extra} extra",
                got.len(),
                expected.len()
            )
        },
    )
    .await;
    let _ = stopper.send(true);
    let summary = task.await?;
    stop_relay.store(true, Ordering::Relaxed);
    let relayed = relay.await??;
    eprintln!(
        "{writes} concurrent writes, {relayed} changes relayed, first run left {partial} rows"
    );
    converged?;
    summary?;
    assert!(writes > 0, "the table was written to during the snapshot");
    let exported = metrics.render();
    assert!(
        metric_sum(&exported, "syncmesh_tidb_snapshot_rows_total") > 0.0,
        "snapshot rows counted"
    );
    // The sink can equal the table before the last (empty) chunk's window closes, so only
    // the gauge's presence is certain here.
    assert!(
        exported.contains("syncmesh_tidb_snapshot_chunks_remaining{"),
        "chunks remaining exported"
    );
    source.drop_database().await?;
    sink.drop_database().await?;
    Ok(())
}
