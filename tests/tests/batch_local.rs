//! The batch path on local disk, through whole pipeline runs: Parquet snapshots of a COBOL
//! ledger, an orphan left by a "crashed" writer removed at the next start while committed
//! snapshots stay intact, and a full snapshot taken on demand that holds the latest row of
//! every account across both runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use syncmesh_connectors::event::{Position, TableId, Value};
use syncmesh_connectors::metrics::Metrics;
use syncmesh_connectors::paths::batch::{SnapshotKind, SnapshotWriter};
use syncmesh_connectors::paths::store::open_store;
use syncmesh_connectors::pipeline::{Pipeline, PipelineOptions};
use syncmesh_connectors::runtime::{RunSummary, StopSignal};
use syncmesh_tests::pipeline::examples;

const RECORD: usize = 100;

/// `data/<name>`: one record per ACCOUNT-ID in `ids`, the rest of each record from the
/// quickstart sample (starting at sample record `shift`, so two files differ in content).
fn ledger(dir: &Path, name: &str, ids: &[u64], shift: usize) -> anyhow::Result<()> {
    let sample = std::fs::read(examples().join("data/ledger-0001.dat"))?;
    let n = sample.len() / RECORD;
    let mut bytes = Vec::with_capacity(ids.len() * RECORD);
    for (i, id) in ids.iter().enumerate() {
        let rec = &sample[((i + shift) % n) * RECORD..][..RECORD];
        bytes.extend_from_slice(format!("{id:010}").as_bytes());
        bytes.extend_from_slice(&rec[10..]);
    }
    std::fs::create_dir_all(dir.join("data"))?;
    std::fs::write(dir.join("data").join(name), bytes)?;
    Ok(())
}

const MANIFEST: &str = r#"
apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata: {name: batch-local}
spec:
  sources:
    - name: ledger
      flatFile:
        path: data
        pattern: "ledger-*.dat"
        layout: ledger.cpy
        table: bank.ledger
        primaryKey: [ACCOUNT-ID]
  defaultRoute: [batch]
  batch: {url: out/snapshots, maxEvents: 700}
"#;

async fn run(dir: &Path) -> anyhow::Result<RunSummary> {
    let pipeline = syncmesh_crds::parse_manifest(MANIFEST)?;
    let options = PipelineOptions {
        base_dir: dir.to_path_buf(),
        state_dir: dir.join("state"),
        follow: None,
        channel_capacity: 4,
        checkpoint_interval: Duration::from_millis(100),
    };
    let built = Pipeline::build(&pipeline, &options, Arc::new(Metrics::new())).await?;
    let (stop_tx, stop) = StopSignal::new();
    Ok(built.run(stop_tx, stop).await?)
}

/// ACCOUNT-ID -> (the row, the file it was read from).
type Rows = BTreeMap<i64, (Vec<Value>, String)>;

fn by_id(events: impl IntoIterator<Item = syncmesh_connectors::event::ChangeEvent>) -> Rows {
    events
        .into_iter()
        .map(|e| {
            let row = e.after.clone().unwrap_or_default();
            let Some(Value::Int(id)) = row.first().cloned() else {
                panic!("no integer ACCOUNT-ID in {e:?}");
            };
            let Position::File { file, .. } = &e.position else {
                panic!("not a file position: {e:?}");
            };
            (id, (row, file.clone()))
        })
        .collect()
}

#[tokio::test]
async fn parquet_snapshots_orphans_and_an_on_demand_full_snapshot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(examples().join("ledger.cpy"), dir.path().join("ledger.cpy"))?;
    let first: Vec<u64> = (0..3000).map(|i| 7_000_000_000 + i).collect();
    ledger(dir.path(), "ledger-0001.dat", &first, 0)?;
    assert_eq!(run(dir.path()).await?.events_read, 3000);

    let store = open_store(
        &dir.path().join("out/snapshots").display().to_string(),
        dir.path(),
        None,
    )?;
    let w = SnapshotWriter::new(store);
    let table = TableId::new("bank", "ledger");
    let before = w.table_manifests(&table).await?;
    assert!(before.len() >= 2, "3000 events in snapshots of about 700");
    assert_eq!(before.iter().map(|m| m.rows).sum::<u64>(), 3000);
    assert!(
        before
            .iter()
            .all(|m| m.format == "parquet" && m.files[0].path.ends_with(".parquet"))
    );
    let mut first_rows = Rows::new();
    for m in &before {
        first_rows.extend(by_id(w.read(m).await?));
    }
    assert_eq!(first_rows.len(), 3000);

    // A writer that crashed before its manifest: a data file no manifest names.
    let day = before[0].created_at.format("%Y-%m-%d");
    let orphan = dir.path().join(format!(
        "out/snapshots/bank.ledger/dt={day}/20200101T000000000000Z-dead00000000-part-0000.parquet"
    ));
    std::fs::copy(
        dir.path()
            .join("out/snapshots")
            .join(&before[0].files[0].path),
        &orphan,
    )?;

    // Second file: 1000 of the accounts again, with other contents, and 500 new ones.
    let second: Vec<u64> = (2000..3500).map(|i| 7_000_000_000 + i).collect();
    ledger(dir.path(), "ledger-0002.dat", &second, 17)?;
    assert_eq!(run(dir.path()).await?.events_read, 1500);
    assert!(!orphan.exists(), "the orphan was removed at start");
    let after = w.table_manifests(&table).await?;
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "committed snapshots untouched"
    );
    for m in &before {
        // Size and xxh3 of every file are checked against the manifest.
        w.read(m).await?;
    }

    // Full snapshot on demand: the latest row of every account.
    let fulls = w.full_snapshots().await?;
    assert_eq!(fulls.len(), 1);
    let full = &fulls[0];
    assert_eq!(full.kind, SnapshotKind::Full);
    assert_eq!(full.rows, 3500);
    assert_eq!(full.compacted.len(), after.len());
    let rows = by_id(w.read(full).await?);
    let mut second_rows = Rows::new();
    for m in &after[before.len()..] {
        second_rows.extend(by_id(w.read(m).await?));
    }
    for id in first.iter().chain(&second) {
        let id = *id as i64;
        let want = second_rows.get(&id).or(first_rows.get(&id));
        assert_eq!(rows.get(&id), want, "ACCOUNT-ID {id}");
    }
    let changed = (2000..3000i64)
        .map(|i| 7_000_000_000 + i)
        .filter(|id: &i64| first_rows[id].0 != second_rows[id].0)
        .count();
    assert!(
        changed > 900,
        "the second file changes most re-sent accounts ({changed})"
    );
    assert_eq!(rows[&7_000_002_500].1, "ledger-0002.dat");
    assert_eq!(rows[&7_000_000_000].1, "ledger-0001.dat");
    // Nothing new since: no second full snapshot.
    assert!(w.full_snapshots().await?.is_empty());
    assert_eq!(w.current_rows(&table).await?.len(), 3500);
    Ok(())
}
