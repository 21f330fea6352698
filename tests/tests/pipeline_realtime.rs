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
use syncmesh_tests::{committed_records, require, services, unique_name};

fn copy_quickstart(into: &Path) -> anyhow::Result<()> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    std::fs::copy(examples.join("ledger.cpy"), into.join("ledger.cpy"))?;
    std::fs::create_dir(into.join("data"))?;
    for f in ["ledger-0001.dat", "ledger-0002.dat"] {
        std::fs::copy(examples.join("data").join(f), into.join("data").join(f))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_paths_receive_every_event_once() -> anyhow::Result<()> {
    let kafka = require!(services::kafka());
    let name = unique_name("rt", '-', 40);
    let dir = tempfile::tempdir()?;
    copy_quickstart(dir.path())?;
    let manifest = format!(
        r#"
apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata: {{name: {name}}}
spec:
  sources:
    - name: ledger
      flatFile: {{path: data, layout: ledger.cpy, table: bank.ledger, primaryKey: [ACCOUNT-ID]}}
  routes:
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
    );
    let pipeline = syncmesh_crds::parse_manifest(&manifest)?;
    let options = PipelineOptions {
        base_dir: dir.path().to_path_buf(),
        state_dir: dir.path().join("state"),
        follow: None,
        channel_capacity: 16,
        checkpoint_interval: Duration::from_millis(200),
    };
    let built = Pipeline::build(&pipeline, &options, Arc::new(Metrics::new())).await?;
    let (stop_tx, stop) = StopSignal::new();
    let summary = built.run(stop_tx, stop).await?;
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
