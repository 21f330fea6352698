//! Running pipelines from tests: the example files, options for an embedded run in a scratch
//! directory, and reading the metrics a run exported.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use syncmesh_connectors::event::{Position, TableId};
use syncmesh_connectors::paths::batch::SnapshotWriter;
use syncmesh_connectors::paths::store::open_store;
use syncmesh_connectors::pipeline::PipelineOptions;

/// The repository's example layouts, data and manifests (`deploy/examples`).
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

/// Copies the example data file `file` into `dir/data/as_name` with one rename at the end, so
/// a following source never sees half a file.
pub fn deliver(dir: &Path, file: &str, as_name: &str) -> std::io::Result<()> {
    let staged = dir.join(format!(".{as_name}.part"));
    std::fs::copy(examples().join("data").join(file), &staged)?;
    std::fs::rename(&staged, dir.join("data").join(as_name))
}

/// A scratch directory for a ledger pipeline: the example copybook and an empty `data/` that
/// tests [`deliver`] files into.
pub fn ledger_workdir() -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(examples().join("ledger.cpy"), dir.path().join("ledger.cpy"))?;
    std::fs::create_dir(dir.path().join("data"))?;
    Ok(dir)
}

/// `(file, record number)` of a flat-file position.
pub fn file_place(position: &Position) -> anyhow::Result<(String, u64)> {
    match position {
        Position::File { file, record, .. } => Ok((file.clone(), *record)),
        other => anyhow::bail!("not a file position: {other:?}"),
    }
}

/// The flat-file records in the committed snapshots of `table` at `url` (relative to `dir`),
/// by `(file, record)`; an error if one is there twice.
pub async fn snapshot_places(
    url: &str,
    dir: &Path,
    table: &TableId,
) -> anyhow::Result<BTreeSet<(String, u64)>> {
    let writer = SnapshotWriter::new(open_store(url, dir, None)?);
    let mut places = BTreeSet::new();
    for manifest in writer.table_manifests(table).await? {
        for event in writer.read(&manifest).await? {
            anyhow::ensure!(
                places.insert(file_place(&event.position)?),
                "{:?} twice in the snapshots",
                event.position
            );
        }
    }
    Ok(places)
}

/// The flat-file records a read_committed reader sees in `topic` (Debezium JSON), by
/// `(file, record)` from the envelope's source block; an error if one is there twice.
pub async fn kafka_places(brokers: &str, topic: &str) -> anyhow::Result<BTreeSet<(String, u64)>> {
    let mut places = BTreeSet::new();
    for (_, value, offset) in crate::committed_records(brokers, topic, 0).await? {
        let v: serde_json::Value = serde_json::from_slice(value.as_deref().unwrap_or_default())?;
        let file = v["source"]["file"].as_str().unwrap_or_default().to_string();
        let row = v["source"]["row"].as_u64().unwrap_or_default();
        anyhow::ensure!(
            places.insert((file, row)),
            "offset {offset}: twice in Kafka"
        );
    }
    Ok(places)
}

/// An embedded run in `dir` (state in `dir/state`), with small channels and a checkpoint
/// every 100 ms so that kills land between frequent saves.
pub fn options(dir: &Path) -> PipelineOptions {
    PipelineOptions {
        base_dir: dir.to_path_buf(),
        state_dir: dir.join("state"),
        follow: None,
        channel_capacity: 8,
        checkpoint_interval: Duration::from_millis(100),
    }
}

/// The sum over every series of metric `name` in a Prometheus text exposition.
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
