//! Helpers for running the `syncmesh` binary in tests.

#![allow(dead_code)]

use serde_json::Value as J;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Bytes per record of the quickstart ledger layout.
pub const RECORD: usize = 100;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_syncmesh"))
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
