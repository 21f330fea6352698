//! Helpers for running the `syncmesh` binary in tests.

#![allow(dead_code)]

use serde_json::Value as J;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Bytes per record of the quickstart ledger layout.
pub const RECORD: usize = 100;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_syncmesh"))
}

/// The quickstart ledger as a pipeline: its flat files into snapshots and the sink `SINK`
/// (see [`ledger_manifest`]).
const LEDGER_MANIFEST: &str = r#"
apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata:
  name: ledger
spec:
  sources:
    - name: ledger
      flatFile:
        path: data
        pattern: "ledger-*.dat"
        layout: ledger.cpy
        encoding: ascii
        signConvention: ibm
        recordFormat: fixed
        table: bank.ledger
        primaryKey: [ACCOUNT-ID]
  defaultRoute: [batch]
  batch:
    url: out/snapshots
    maxEvents: 4000
    maxAgeSeconds: 1
  sink:
    url: SINK
"#;

/// The ledger pipeline `ledger` writing to `sink`.
pub fn ledger_manifest(sink: &str) -> String {
    LEDGER_MANIFEST.replace("SINK", sink)
}

/// A temporary directory with the quickstart copybook and the given example data files
/// (`deploy/examples/data/<file>`) under `data/`, as a ledger manifest expects them.
pub fn ledger_fixture(files: &[&str]) -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let examples = repo_root().join("deploy/examples");
    std::fs::copy(examples.join("ledger.cpy"), dir.path().join("ledger.cpy"))?;
    std::fs::create_dir(dir.path().join("data"))?;
    for file in files {
        std::fs::copy(
            examples.join("data").join(file),
            dir.path().join("data").join(file),
        )?;
    }
    Ok(dir)
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub fn syncmesh(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the syncmesh binary runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `files` files of `per_file` records with unique account ids, built from the sample.
pub fn many_records(files: usize, per_file: usize) -> Vec<(String, Vec<u8>)> {
    let sample =
        std::fs::read(repo_root().join("deploy/examples/data/ledger-0001.dat")).expect("sample");
    let mut next_id = 2_000_000_000u64;
    (0..files)
        .map(|f| {
            let mut bytes = Vec::with_capacity(per_file * RECORD);
            for i in 0..per_file {
                let rec = &sample[(i % (sample.len() / RECORD)) * RECORD..][..RECORD];
                bytes.extend_from_slice(format!("{next_id:010}").as_bytes());
                bytes.extend_from_slice(&rec[10..]);
                next_id += 1;
            }
            (format!("big-{f:04}.dat"), bytes)
        })
        .collect()
}

/// Records committed so far: whole completed files plus the position in the current one.
pub fn checkpointed_record_count(dir: &Path, pipeline: &str) -> u64 {
    let text = std::fs::read_to_string(dir.join(".syncmesh").join(pipeline).join("checkpoint"))
        .unwrap_or_default();
    let Some((_, body)) = text.split_once('\n') else {
        return 0;
    };
    let Ok(cp) = serde_json::from_str::<J>(body) else {
        return 0;
    };
    let src = &cp["sources"]["ledger"];
    let completed: Vec<&str> = src["completed"]
        .as_array()
        .map_or(Vec::new(), |a| a.iter().filter_map(J::as_str).collect());
    let whole: u64 = completed
        .iter()
        .map(|f| std::fs::metadata(dir.join("data").join(f)).map_or(0, |m| m.len()) / RECORD as u64)
        .sum();
    let current = src["position"]["file"].as_str().unwrap_or("");
    if completed.contains(&current) {
        whole
    } else {
        whole + src["position"]["record"].as_u64().unwrap_or(0)
    }
}

/// Starts `syncmesh run MANIFEST` and SIGKILLs it once at least `records` records of pipeline
/// `pipeline` are checkpointed, wherever it is; returns the checkpointed count after the kill.
pub fn run_and_kill_at(dir: &Path, manifest: &Path, pipeline: &str, records: u64) -> u64 {
    let mut child = Command::new(bin())
        .args(["run", manifest.to_str().expect("utf-8"), "--quiet"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(120);
    while checkpointed_record_count(dir, pipeline) < records {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended before it could be killed at {records}"
        );
        assert!(
            Instant::now() < deadline,
            "no checkpoint progress to {records} within 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    checkpointed_record_count(dir, pipeline)
}
