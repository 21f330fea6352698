//! Running pipelines from tests: the example files, options for an embedded run in a scratch
//! directory, and reading the metrics a run exported.

use std::path::{Path, PathBuf};
use std::time::Duration;
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
