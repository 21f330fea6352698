//! A flat-file source over an S3 prefix (moto): the objects under `s3://bucket/in/` are read in
//! key order with ranged GETs; a run stopped midway and restarted resumes inside the object it
//! stopped in, and every record reaches the snapshots and the sink table exactly once.

use anyhow::Context;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde_json::Value as J;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use syncmesh_connectors::metrics::Metrics;
use syncmesh_connectors::pipeline::{Pipeline, PipelineOptions};
use syncmesh_connectors::runtime::{RunSummary, StopSignal};
use syncmesh_tests::pipeline::examples;
use syncmesh_tests::s3::TestBucket;
use syncmesh_tests::{require, services, unique_name};

const RECORD: usize = 100;
const OBJECTS: usize = 3;
const PER_OBJECT: usize = 20_000;

/// `OBJECTS` objects of `PER_OBJECT` ledger records with unique ACCOUNT-IDs, built from the
/// quickstart sample.
fn objects() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let sample = std::fs::read(examples().join("data/ledger-0001.dat"))?;
    let mut next_id = 3_000_000_000u64;
    Ok((0..OBJECTS)
        .map(|o| {
            let mut bytes = Vec::with_capacity(PER_OBJECT * RECORD);
            for i in 0..PER_OBJECT {
                let rec = &sample[(i % (sample.len() / RECORD)) * RECORD..][..RECORD];
                bytes.extend_from_slice(format!("{next_id:010}").as_bytes());
                bytes.extend_from_slice(&rec[10..]);
                next_id += 1;
            }
            (format!("ledger-{o:04}.dat"), bytes)
        })
        .collect())
}

fn manifest(name: &str, url: &str, endpoint: &str, region: &str) -> String {
    format!(
        r#"
apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata: {{name: {name}}}
spec:
  sources:
    - name: ledger
      flatFile:
        path: {url}
        pattern: "ledger-*.dat"
        s3: {{endpoint: "{endpoint}", region: {region}, allowHttp: true}}
        layout: ledger.cpy
        table: bank.ledger
        primaryKey: [ACCOUNT-ID]
  defaultRoute: [batch]
  batch: {{url: out/snapshots, maxEvents: 1000, format: jsonl}}
  sink: {{url: "sqlite://out/sink.db"}}
"#
    )
}

/// Runs the pipeline; with `stop_after`, asks it to stop once that many events were read.
async fn run(dir: &Path, manifest: &str, stop_after: Option<u64>) -> anyhow::Result<RunSummary> {
    let pipeline = syncmesh_crds::parse_manifest(manifest)?;
    let options = PipelineOptions {
        base_dir: dir.to_path_buf(),
        state_dir: dir.join("state"),
        follow: None,
        channel_capacity: 4,
        checkpoint_interval: Duration::from_millis(100),
    };
    let built = Pipeline::build(&pipeline, &options, Arc::new(Metrics::new())).await?;
    let counters = built.counters();
    let (stop_tx, stop) = StopSignal::new();
    if let Some(n) = stop_after {
        let tx = stop_tx.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while counters.events_read.load(Ordering::Relaxed) < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = tx.send(true);
        });
    }
    Ok(built.run(stop_tx, stop).await?)
}

/// The committed checkpoint of the `ledger` source.
fn checkpoint(dir: &Path) -> anyhow::Result<J> {
    let text = std::fs::read_to_string(dir.join("state/checkpoint"))?;
    let (_, body) = text.split_once('\n').context("checkpoint header")?;
    let cp: J = serde_json::from_str(body)?;
    Ok(cp["sources"]["ledger"].clone())
}

/// ACCOUNT-ID -> how many times it is in a committed snapshot.
fn snapshot_ids(dir: &Path) -> anyhow::Result<BTreeMap<i64, u32>> {
    let root = dir.join("out/snapshots");
    let mut ids = BTreeMap::new();
    for m in std::fs::read_dir(root.join("bank.ledger/_manifests"))? {
        let manifest: J = serde_json::from_slice(&std::fs::read(m?.path())?)?;
        for f in manifest["files"].as_array().context("files")? {
            let path = f["path"].as_str().context("file path")?;
            let text = std::fs::read_to_string(root.join(path))?;
            for line in text.lines() {
                let event: J = serde_json::from_str(line)?;
                let after = if event["payload"].is_object() {
                    &event["payload"]["after"]
                } else {
                    &event["after"]
                };
                let id = after["ACCOUNT-ID"].as_i64().context("ACCOUNT-ID")?;
                *ids.entry(id).or_insert(0) += 1;
            }
        }
    }
    Ok(ids)
}

async fn sink_count(dir: &Path) -> anyhow::Result<(i64, i64)> {
    use sqlx::Row;
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .connect(&format!(
            "sqlite://{}?mode=ro",
            dir.join("out/sink.db").display()
        ))
        .await?;
    let row = sqlx::query(r#"SELECT COUNT(*), COUNT(DISTINCT "ACCOUNT-ID") FROM ledger"#)
        .fetch_one(&pool)
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

#[test]
fn objects_under_a_prefix_resume_mid_object_and_arrive_exactly_once() -> anyhow::Result<()> {
    let s3 = require!(services::s3());
    // The product reads S3 credentials from the environment (AmazonS3Builder::from_env).
    // SAFETY: this is the only test in this binary and it sets them before starting any
    // thread of its own (the runtime is built below).
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", &s3.access_key);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", &s3.secret_key);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let bucket = TestBucket::create(&s3, "flatfile").await?;
        let data = objects()?;
        for (name, bytes) in &data {
            bucket
                .store
                .put(
                    &ObjectPath::from(format!("in/{name}")),
                    bytes.clone().into(),
                )
                .await?;
        }
        // Neither of these is read: another name, and an object below a deeper prefix.
        bucket
            .store
            .put(
                &ObjectPath::from("in/README.txt"),
                b"not a ledger".to_vec().into(),
            )
            .await?;
        bucket
            .store
            .put(
                &ObjectPath::from("in/old/ledger-0000.dat"),
                vec![b'x'; 7].into(),
            )
            .await?;

        let dir = tempfile::tempdir()?;
        std::fs::copy(examples().join("ledger.cpy"), dir.path().join("ledger.cpy"))?;
        let manifest = manifest(
            &unique_name("ffs3", '-', 40),
            &bucket.url("in/"),
            &s3.endpoint,
            &s3.region,
        );
        let total = (OBJECTS * PER_OBJECT) as u64;

        // First run: stopped halfway, inside the second object (the source looks at the stop
        // flag every 4096 records of a file, never at a 20,000-record object's end).
        let first = run(dir.path(), &manifest, Some(total / 2)).await?;
        assert!(
            first.events_read < total,
            "stopped before the end: read {}",
            first.events_read
        );
        let cp = checkpoint(dir.path())?;
        let file = cp["position"]["file"].as_str().context("position file")?;
        let offset = cp["position"]["offset"]
            .as_u64()
            .context("position offset")?;
        let record = cp["position"]["record"]
            .as_u64()
            .context("position record")?;
        let completed: Vec<&str> = cp["completed"]
            .as_array()
            .map_or(Vec::new(), |a| a.iter().filter_map(J::as_str).collect());
        assert!(
            file.starts_with("in/ledger-"),
            "position names the object key: {cp}"
        );
        assert!(
            !completed.contains(&file) && offset > 0,
            "the run stopped inside an object: {cp}"
        );
        assert_eq!(
            first.events_read,
            completed.len() as u64 * PER_OBJECT as u64 + record,
            "a drained stop commits everything it read: {cp}"
        );

        // Second run: resumes inside that object and reads exactly the rest.
        let second = run(dir.path(), &manifest, None).await?;
        assert_eq!(first.events_read + second.events_read, total);
        let ids = snapshot_ids(dir.path())?;
        assert_eq!(ids.len() as u64, total, "every record is in a snapshot");
        let twice: Vec<_> = ids.iter().filter(|(_, n)| **n != 1).take(5).collect();
        assert!(
            twice.is_empty(),
            "records delivered more than once: {twice:?}"
        );
        assert_eq!(sink_count(dir.path()).await?, (total as i64, total as i64));
        let cp = checkpoint(dir.path())?;
        assert_eq!(cp["completed"].as_array().map(Vec::len), Some(OBJECTS));

        // A third run finds nothing new.
        assert_eq!(run(dir.path(), &manifest, None).await?.events_read, 0);
        bucket.delete().await?;
        anyhow::Ok(())
    })
}
