//! A manifest that routes the quickstart ledger to both paths: every record lands in Kafka
//! (read back through the control markers, as read_committed defines it) and in the snapshots
//! and sink table, and the run acknowledges every event on both paths.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use syncmesh_connectors::metrics::Metrics;
use syncmesh_connectors::pipeline::{Pipeline, PipelineOptions};
use syncmesh_connectors::runtime::StopSignal;
use syncmesh_tests::pipeline::examples;
use syncmesh_tests::{committed_records, require, services, unique_name};

/// The quickstart layout and the given data files, copied into `into`.
fn copy_quickstart(into: &Path, files: &[&str]) -> anyhow::Result<()> {
    std::fs::copy(examples().join("ledger.cpy"), into.join("ledger.cpy"))?;
    std::fs::create_dir(into.join("data"))?;
    files.iter().try_for_each(|f| copy_data(into, f))
}

fn copy_data(into: &Path, file: &str) -> anyhow::Result<()> {
    std::fs::copy(
        examples().join("data").join(file),
        into.join("data").join(file),
    )?;
    Ok(())
}

/// A manifest reading the quickstart ledger, with `rest` (indented spec fields) after sources.
fn manifest(name: &str, rest: &str) -> String {
    format!(
        r#"
apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata: {{name: {name}}}
spec:
  sources:
    - name: ledger
      flatFile: {{path: data, layout: ledger.cpy, table: bank.ledger, primaryKey: [ACCOUNT-ID]}}
{rest}"#
    )
}

async fn run(
    dir: &Path,
    manifest: &str,
) -> anyhow::Result<syncmesh_connectors::runtime::RunSummary> {
    run_with(dir, manifest, Arc::new(Metrics::new())).await
}

async fn run_with(
    dir: &Path,
    manifest: &str,
    metrics: Arc<Metrics>,
) -> anyhow::Result<syncmesh_connectors::runtime::RunSummary> {
    let pipeline = syncmesh_crds::parse_manifest(manifest)?;
    let options = PipelineOptions {
        base_dir: dir.to_path_buf(),
        state_dir: dir.join("state"),
        follow: None,
        channel_capacity: 16,
        checkpoint_interval: Duration::from_millis(200),
    };
    let built = Pipeline::build(&pipeline, &options, metrics).await?;
    let (stop_tx, stop) = StopSignal::new();
    Ok(built.run(stop_tx, stop).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_paths_receive_every_event_once() -> anyhow::Result<()> {
    let kafka = require!(services::kafka());
    let name = unique_name("rt", '-', 40);
    let dir = tempfile::tempdir()?;
    copy_quickstart(dir.path(), &["ledger-0001.dat", "ledger-0002.dat"])?;
    let manifest = manifest(
        &name,
        &format!(
            r#"  routes:
    - name: ledger-everywhere
      match: {{tables: ["bank.*"]}}
      to: [realtime, batch]
  defaultRoute: []
  realtime:
    brokers: "{brokers}"
    maxBatchEvents: 2000
  batch: {{url: out/snapshots, maxEvents: 3000}}
  sink: {{url: "sqlite://out/sink.db"}}
"#,
            brokers = kafka.brokers
        ),
    );
    let summary = run(dir.path(), &manifest).await?;
    assert_eq!(summary.events_read, 10_500);
    assert_eq!(summary.acknowledged.get("realtime"), Some(&10_500));
    assert_eq!(summary.acknowledged.get("batch"), Some(&10_500));

    let records = committed_records(&kafka.brokers, &format!("{name}.bank.ledger"), 0).await?;
    assert_eq!(
        records.len(),
        10_500,
        "each event exactly once in the topic"
    );
    let mut keys = BTreeSet::new();
    for (key, value, offset) in &records {
        let key = String::from_utf8(key.clone().unwrap_or_default())?;
        let value: serde_json::Value =
            serde_json::from_slice(value.as_deref().unwrap_or_default())?;
        assert_eq!(value["op"], "r", "offset {offset}");
        assert_eq!(
            value["after"]["ACCOUNT-ID"].to_string(),
            key,
            "offset {offset}: key is the primary key"
        );
        keys.insert(key);
    }
    assert_eq!(
        keys.len(),
        10_200,
        "10,000 accounts plus 200 new in the second file"
    );
    Ok(())
}

/// A restart whose checkpoint lags behind what the real-time path committed to Kafka (a crash
/// between the Kafka commit and the checkpoint save, made certain here by deleting the
/// checkpoint) replays events from the source; the path recognises them from the positions it
/// committed in Kafka and produces none of them twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_behind_the_kafka_positions_produces_nothing_twice() -> anyhow::Result<()> {
    let kafka = require!(services::kafka());
    let name = unique_name("resume", '-', 40);
    let dir = tempfile::tempdir()?;
    copy_quickstart(dir.path(), &["ledger-0001.dat"])?;
    let manifest = manifest(
        &name,
        &format!(
            r#"  defaultRoute: [realtime]
  realtime:
    brokers: "{brokers}"
    maxBatchEvents: 1500
"#,
            brokers = kafka.brokers
        ),
    );
    assert_eq!(run(dir.path(), &manifest).await?.events_read, 10_000);
    std::fs::remove_file(dir.path().join("state/checkpoint"))?;
    copy_data(dir.path(), "ledger-0002.dat")?;
    let summary = run(dir.path(), &manifest).await?;
    assert_eq!(summary.events_read, 10_500, "the whole input was replayed");
    assert_eq!(summary.acknowledged.get("realtime"), Some(&10_500));

    let records = committed_records(&kafka.brokers, &format!("{name}.bank.ledger"), 0).await?;
    assert_eq!(
        records.len(),
        10_500,
        "each record exactly once in the topic"
    );
    let mut last = (String::new(), 0u64);
    for (_, value, offset) in &records {
        let value: serde_json::Value =
            serde_json::from_slice(value.as_deref().unwrap_or_default())?;
        let at = (
            value["source"]["file"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            value["source"]["pos"].as_u64().unwrap_or_default(),
        );
        assert!(
            at > last || last.0.is_empty(),
            "offset {offset}: {at:?} after {last:?}"
        );
        last = at;
    }
    Ok(())
}

/// Runs the quickstart's first file (10,000 records) to the real-time path only, with `setting`
/// added to `spec.realtime`, and returns the table topic's committed records, checking that
/// every event was acknowledged and is in the topic exactly once.
async fn first_file_to_kafka(
    dir: &Path,
    brokers: &str,
    setting: &str,
) -> anyhow::Result<Vec<syncmesh_tests::CommittedRecord>> {
    let name = unique_name("rt-one", '-', 40);
    copy_quickstart(dir, &["ledger-0001.dat"])?;
    let manifest = manifest(
        &name,
        &format!(
            "  defaultRoute: [realtime]\n  realtime:\n    brokers: \"{brokers}\"\n    {setting}\n"
        ),
    );
    let summary = run(dir, &manifest).await?;
    assert_eq!(summary.acknowledged.get("realtime"), Some(&10_000));
    let records = committed_records(brokers, &format!("{name}.bank.ledger"), 0).await?;
    assert_eq!(
        records.len(),
        10_000,
        "each event exactly once in the topic"
    );
    Ok(records)
}

/// `format: canal-json` writes Canal's JSON as TiCDC does: every value a string typed by
/// `mysqlType`, the primary key in `pkNames`, columns in the layout's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canal_json_records_carry_typed_string_values() -> anyhow::Result<()> {
    let kafka = require!(services::kafka());
    let dir = tempfile::tempdir()?;
    let records = first_file_to_kafka(dir.path(), &kafka.brokers, "format: canal-json").await?;
    let mut decimals = 0usize;
    for (key, value, offset) in &records {
        let key = String::from_utf8(key.clone().unwrap_or_default())?;
        let text = String::from_utf8(value.clone().unwrap_or_default())?;
        let value: serde_json::Value = serde_json::from_str(&text)?;
        assert_eq!(value["type"], "INSERT", "offset {offset}");
        assert_eq!(value["isDdl"], false, "offset {offset}");
        assert_eq!(value["database"], "bank", "offset {offset}");
        assert_eq!(value["pkNames"], serde_json::json!(["ACCOUNT-ID"]));
        assert!(
            value["old"].is_null(),
            "offset {offset}: no old image on insert"
        );
        let row = value["data"][0].as_object().expect("one data row");
        let types = value["mysqlType"].as_object().expect("mysqlType");
        assert_eq!(
            row.keys().collect::<BTreeSet<_>>(),
            types.keys().collect::<BTreeSet<_>>(),
            "offset {offset}: a type for every column"
        );
        assert_eq!(row["ACCOUNT-ID"], serde_json::Value::String(key.clone()));
        for (column, v) in row {
            let Some(v) = v.as_str() else {
                assert!(v.is_null(), "offset {offset}: {column} is a string or null");
                continue;
            };
            let ty = types[column].as_str().unwrap_or_default();
            if let Some(scale) = ty
                .strip_prefix("decimal(")
                .and_then(|t| t.trim_end_matches(')').split(',').nth(1))
            {
                let scale: usize = scale.parse()?;
                let digits = v.split_once('.').map_or(0, |(_, f)| f.len());
                assert_eq!(digits, scale, "offset {offset}: {column}={v} as {ty}");
                decimals += 1;
            }
        }
        // Columns keep the layout's order: the key (the layout's first field) comes first.
        assert!(
            text.find("\"data\":[{\"ACCOUNT-ID\"").is_some(),
            "offset {offset}: {text}"
        );
    }
    assert!(decimals > 0, "the ledger has decimal fields");
    Ok(())
}

/// A record larger than `claimCheck.maxRecordBytes` goes to object storage; Kafka carries a
/// reference, and the object holds the full event. Nothing is dropped and the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_records_are_claim_checked_into_object_storage() -> anyhow::Result<()> {
    let kafka = require!(services::kafka());
    let dir = tempfile::tempdir()?;
    let records = first_file_to_kafka(
        dir.path(),
        &kafka.brokers,
        "claimCheck: {maxRecordBytes: 300, url: claims}",
    )
    .await?;
    let mut objects = BTreeSet::new();
    for (key, value, offset) in &records {
        let key = String::from_utf8(key.clone().unwrap_or_default())?;
        let value = value.as_deref().unwrap_or_default();
        assert!(
            value.len() < 1024,
            "offset {offset}: the reference is small"
        );
        let reference: serde_json::Value = serde_json::from_slice(value)?;
        let claim = &reference["claimCheck"];
        let url = claim["url"].as_str().expect("a claim-check url");
        assert_eq!(reference["table"], "bank.ledger");
        assert_eq!(reference["op"], "r");
        let file = url.strip_prefix("file://").expect("a local store");
        assert!(
            file.starts_with(&dir.path().join("claims").display().to_string())
                || file.contains("/claims/"),
            "offset {offset}: {url} under the configured store"
        );
        let body = std::fs::read(file)?;
        assert_eq!(Some(body.len() as u64), claim["bytes"].as_u64());
        let envelope: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!(envelope["after"]["ACCOUNT-ID"].to_string(), key);
        objects.insert(url.to_string());
    }
    assert_eq!(objects.len(), 10_000, "one object per event");
    Ok(())
}

/// Records the brokers refuse (here: larger than the producer's `message.max.bytes`, with the
/// claim check set above it so it does not step in) go to the dead-letter topic with the
/// reason and the position, in the same transactions as the rest: every event is exactly once
/// in the table topic or in the dead-letter topic, the refused ones are exactly the long
/// notes, and the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_brokers_refuse_go_to_the_dead_letter_topic() -> anyhow::Result<()> {
    const RECORDS: u64 = 3_000;
    let kafka = require!(services::kafka());
    let name = unique_name("rt-dlq", '-', 40);
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("notes.cpy"),
        "       01  NOTE-REC.\n           05  NOTE-ID  PIC 9(8).\n           05  BODY     PIC X(1500).\n",
    )?;
    // Every seventh note is long: its record is over the limit; the rest are short.
    let long = |id: u64| id % 7 == 3;
    let mut data = Vec::new();
    for id in 0..RECORDS {
        let body = if long(id) {
            "L".repeat(1_400)
        } else {
            format!("note {id}")
        };
        data.extend_from_slice(format!("{id:08}{body:<1500}\n").as_bytes());
    }
    std::fs::create_dir(dir.path().join("data"))?;
    std::fs::write(dir.path().join("data/notes.dat"), data)?;
    let limit = 1_200;
    let manifest = format!(
        r#"
apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata: {{name: {name}}}
spec:
  sources:
    - name: notes
      flatFile: {{path: data, layout: notes.cpy, recordFormat: lines, table: app.notes, primaryKey: [NOTE-ID]}}
  defaultRoute: [realtime]
  realtime:
    brokers: "{brokers}"
    topicTemplate: "{name}.{{schema}}.{{table}}"
    deadLetterTopic: "{name}.dead-letters"
    claimCheck: {{maxRecordBytes: 100000000}}
    properties: {{message.max.bytes: "{limit}"}}
"#,
        brokers = kafka.brokers
    );
    let metrics = Arc::new(Metrics::new());
    let summary = run_with(dir.path(), &manifest, metrics.clone()).await?;
    assert_eq!(summary.acknowledged.get("realtime"), Some(&RECORDS));

    let table = committed_records(&kafka.brokers, &format!("{name}.app.notes"), 0).await?;
    let dead = committed_records(&kafka.brokers, &format!("{name}.dead-letters"), 0).await?;
    let id_of = |key: &Option<Vec<u8>>| -> anyhow::Result<u64> {
        Ok(String::from_utf8(key.clone().unwrap_or_default())?.parse()?)
    };
    let mut seen = BTreeSet::new();
    for (key, value, offset) in &table {
        let id = id_of(key)?;
        assert!(
            !long(id),
            "offset {offset}: note {id} is over the limit yet was produced"
        );
        assert!(value.as_ref().is_some_and(|v| v.len() < limit));
        assert!(seen.insert(id), "offset {offset}: note {id} twice");
    }
    for (key, value, offset) in &dead {
        let id = id_of(key)?;
        assert!(
            long(id),
            "offset {offset}: note {id} is short yet was refused"
        );
        let letter: serde_json::Value =
            serde_json::from_slice(value.as_deref().unwrap_or_default())?;
        assert_eq!(
            letter["code"], "MessageSizeTooLarge",
            "offset {offset}: {letter}"
        );
        assert!(
            letter["reason"]
                .as_str()
                .is_some_and(|r| r.contains("too large")),
            "offset {offset}: {letter}"
        );
        assert_eq!(letter["topic"], format!("{name}.app.notes"));
        assert_eq!(letter["table"], "app.notes");
        assert_eq!(letter["source"], "notes");
        assert_eq!(letter["op"], "r");
        assert_eq!(letter["key"], id.to_string(), "offset {offset}");
        // The position is the record's byte offset in its file.
        assert_eq!(
            letter["position"]["offset"].as_u64(),
            Some(id * 1_509),
            "offset {offset}: {letter}"
        );
        assert!(letter["valueBytes"].as_u64().is_some_and(|n| n > 1_400));
        assert_eq!(letter["valueOmitted"], true, "too large to carry: {letter}");
        assert!(seen.insert(id), "offset {offset}: note {id} twice");
    }
    assert_eq!(
        seen.len() as u64,
        RECORDS,
        "every note once, in one topic or the other"
    );
    assert_eq!(
        dead.len() as u64,
        (0..RECORDS).filter(|i| long(*i)).count() as u64
    );
    let exported = metrics.render();
    assert_eq!(
        syncmesh_tests::pipeline::metric_sum(&exported, "syncmesh_kafka_dead_letters_total"),
        dead.len() as f64
    );
    Ok(())
}
