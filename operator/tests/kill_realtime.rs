//! Exactly-once through Kafka under SIGKILL: `syncmesh run` sends 100,000 ledger records to
//! the real-time path and is killed at random points (wherever the transaction it has open
//! happens to be), then restarted from what it persisted. The second half of the files updates
//! the accounts of the first half, so each key has two changes. At the end, a read_committed
//! reading of the topic (through the transaction markers: the test broker does not filter
//! aborted records for librdkafka's consumers) holds every record exactly once, and each key's
//! changes in source order.

mod common;

use common::{
    RECORD, bin, checkpointed_record_count, ledger_fixture, many_records, run_and_kill_at, text,
};
use std::collections::BTreeMap;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};
use syncmesh_tests::kafka::read_partition;
use syncmesh_tests::{require, services, unique_name};

const FILES: usize = 10;
const PER_FILE: usize = 10_000;
const KILLS: usize = 4;

fn manifest_yaml(name: &str, brokers: &str) -> String {
    format!(
        r#"apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata: {{name: killrt}}
spec:
  sources:
    - name: ledger
      flatFile: {{path: data, pattern: "big-*.dat", layout: ledger.cpy, table: bank.ledger, primaryKey: [ACCOUNT-ID]}}
  defaultRoute: [realtime]
  realtime:
    brokers: "{brokers}"
    topicTemplate: "{name}.{{schema}}.{{table}}"
    transactionalId: "{name}"
    positionsTopic: "{name}.positions"
    maxBatchEvents: 700
    lingerMs: 20
"#
    )
}

/// A seed from the clock, printed so a failing run can be repeated (`SYNCMESH_KILL_SEED`).
fn seed() -> u64 {
    let seed = std::env::var("SYNCMESH_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("SYNCMESH_KILL_SEED={seed}");
    seed
}

/// `KILLS` increasing kill thresholds, spread over the run, from an xorshift of `seed`.
fn thresholds(mut s: u64, total: u64) -> Vec<u64> {
    let span = total / (KILLS as u64 + 1);
    (0..KILLS as u64)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            span * i + 1 + s % span
        })
        .collect()
}

#[test]
fn sigkill_at_random_points_leaves_every_event_once_in_kafka() -> anyhow::Result<()> {
    let kafka = require!(services::kafka());
    let total = (FILES * PER_FILE) as u64;
    let name = unique_name("killrt", '-', 40);
    let dir = ledger_fixture(&[])?;
    // Files 5..9 repeat the accounts of files 0..4: updates, named after them so read later.
    let mut files = many_records(FILES / 2, PER_FILE);
    files.extend(
        many_records(FILES / 2, PER_FILE)
            .into_iter()
            .map(|(name, bytes)| (name.replace("big-", "big-u"), bytes)),
    );
    for (file, bytes) in &files {
        std::fs::write(dir.path().join("data").join(file), bytes)?;
    }
    let manifest = dir.path().join("killrt.yaml");
    std::fs::write(&manifest, manifest_yaml(&name, &kafka.brokers))?;

    for threshold in thresholds(seed(), total) {
        run_and_kill_at(dir.path(), &manifest, "killrt", threshold);
    }
    let out = Command::new(bin())
        .args(["run", manifest.to_str().expect("utf-8"), "--quiet"])
        .env("RUST_LOG", "warn")
        .output()?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(checkpointed_record_count(dir.path(), "killrt"), total);

    let runtime = tokio::runtime::Runtime::new()?;
    let log = runtime.block_on(read_partition(
        &kafka.brokers,
        &format!("{name}.bank.ledger"),
        0,
    ))?;
    // What the kills left behind: records of transactions a restart aborted.
    eprintln!(
        "{} committed, {} aborted, {} in open transactions, {} markers",
        log.committed.len(),
        log.aborted.len(),
        log.open.len(),
        log.markers.len()
    );
    // Per key, the (file, offset) of each change, in topic order.
    let mut seen: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for r in &log.committed {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        let position = r
            .headers
            .iter()
            .find(|(k, _)| k == "syncmesh.position")
            .and_then(|(_, v)| serde_json::from_slice::<serde_json::Value>(v.as_deref()?).ok())
            .ok_or_else(|| anyhow::anyhow!("offset {}: no position header", r.offset))?;
        let at = (
            position["file"].as_str().unwrap_or_default().to_string(),
            position["offset"].as_u64().unwrap_or_default(),
        );
        seen.entry(key).or_default().push(at);
    }
    let wrong: Vec<_> = seen
        .iter()
        .filter(|(_, changes)| changes.len() != 2 || !changes.windows(2).all(|w| w[0] < w[1]))
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "keys without exactly their two changes in source order: {wrong:?}"
    );
    let expected: Vec<String> = files
        .iter()
        .flat_map(|(_, bytes)| bytes.chunks(RECORD))
        .map(|rec| {
            String::from_utf8_lossy(&rec[..10])
                .trim_start_matches('0')
                .to_string()
        })
        .collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|k| !seen.contains_key(*k))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "records never committed: {missing:?}");
    assert_eq!(log.committed.len() as u64, total, "each event exactly once");
    Ok(())
}
