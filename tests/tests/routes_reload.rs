//! Routes changed while events flow. A following pipeline sends the ledger to the batch path;
//! while the second file is being read its routes are swapped for ones that send everything to
//! Kafka, and a third file arrives after the swap. No restart, and afterwards: every record is
//! in exactly one place, everything decided before the swap is in the snapshots and everything
//! after it in Kafka (one cut in source order: no event took a rule set it was not decided
//! by), and the decisions counted per rule match what each path holds.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use syncmesh_connectors::decider::path_index;
use syncmesh_connectors::event::TableId;
use syncmesh_connectors::metrics::Metrics;
use syncmesh_connectors::pipeline::Pipeline;
use syncmesh_connectors::runtime::StopSignal;
use syncmesh_crds::PathName;
use syncmesh_tests::pipeline::{
    deliver, kafka_places, ledger_workdir, metric_sum, options, snapshot_places,
};
use syncmesh_tests::{poll_until, require, services, unique_name};

const PER_FILE: u64 = 10_000;

fn manifest(name: &str, brokers: &str, rule: &str, to: &str) -> String {
    format!(
        r#"
apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata: {{name: {name}}}
spec:
  sources:
    - name: ledger
      flatFile: {{path: data, pattern: "*.dat", layout: ledger.cpy, table: bank.ledger, primaryKey: [ACCOUNT-ID]}}
  routes:
    - name: {rule}
      match: {{tables: ["bank.*"]}}
      to: [{to}]
  defaultRoute: []
  batch: {{url: snapshots, maxEvents: 2000, maxAgeSeconds: 1}}
  realtime:
    brokers: "{brokers}"
    topicTemplate: "{name}.{{schema}}.{{table}}"
    maxBatchEvents: 1000
    lingerMs: 20
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_swapped_mid_run_lose_and_misroute_nothing() -> anyhow::Result<()> {
    let kafka = require!(services::kafka());
    let name = unique_name("reroute", '-', 40);
    let dir = ledger_workdir()?;
    deliver(dir.path(), "ledger-0001.dat", "a-0001.dat")?;
    deliver(dir.path(), "ledger-0001.dat", "a-0002.dat")?;

    let before =
        syncmesh_crds::parse_manifest(&manifest(&name, &kafka.brokers, "to-batch", "batch"))?;
    let after =
        syncmesh_crds::parse_manifest(&manifest(&name, &kafka.brokers, "to-kafka", "realtime"))?;
    let mut opts = options(dir.path());
    opts.follow = Some(Duration::from_millis(100));
    let metrics = Arc::new(Metrics::new());
    let built = Pipeline::build(&before, &opts, metrics.clone()).await?;
    let routes = built.routes();
    let counters = built.counters();
    let (stop_tx, stop) = StopSignal::new();
    let stopper = stop_tx.clone();
    let run = tokio::spawn(built.run(stop_tx, stop));

    // Swap while the second file is being read.
    poll_until(
        Duration::from_secs(60),
        "the first file to be read",
        || async {
            let read = counters.events_read.load(Ordering::Relaxed);
            Ok((read > PER_FILE).then_some(read))
        },
    )
    .await?;
    assert!(routes.reload(&after.spec)?, "the routes changed");
    deliver(dir.path(), "ledger-0001.dat", "a-0003.dat")?;

    let acked = |path: PathName| counters.acknowledged[path_index(path)].load(Ordering::Relaxed);
    poll_until(
        Duration::from_secs(120),
        "every record acknowledged by one path",
        || async {
            let total = acked(PathName::Batch) + acked(PathName::Realtime);
            Ok((total == 3 * PER_FILE).then_some(()))
        },
    )
    .await?;
    stopper.send(true)?;
    let summary = run.await??;
    assert_eq!(summary.events_read, 3 * PER_FILE);

    let batch = snapshot_places("snapshots", dir.path(), &TableId::new("bank", "ledger")).await?;
    let realtime = kafka_places(&kafka.brokers, &format!("{name}.bank.ledger")).await?;

    eprintln!(
        "{} records in snapshots, {} in Kafka",
        batch.len(),
        realtime.len()
    );
    assert!(
        batch.len() as u64 > PER_FILE,
        "all of the first file and some of the second went to batch"
    );
    assert!(
        realtime.len() as u64 >= PER_FILE,
        "at least the third file went to Kafka"
    );
    assert_eq!(
        batch.len() + realtime.len(),
        3 * PER_FILE as usize,
        "every record once"
    );
    assert!(batch.is_disjoint(&realtime));
    let last_batch = batch.iter().next_back().cloned();
    let first_realtime = realtime.iter().next().cloned();
    assert!(
        last_batch < first_realtime,
        "one cut in source order: {last_batch:?} went to batch, {first_realtime:?} to Kafka"
    );

    let exported = metrics.render();
    let decided = |rule: &str| {
        metric_sum(
            &exported,
            &format!("syncmesh_route_decisions_total{{pipeline=\"{name}\",route=\"{rule}\"}}"),
        )
    };
    assert_eq!(decided("to-batch"), batch.len() as f64);
    assert_eq!(decided("to-kafka"), realtime.len() as f64);
    assert_eq!(
        metric_sum(
            &exported,
            &format!("syncmesh_route_reloads_total{{outcome=\"applied\",pipeline=\"{name}\"}}")
        ),
        1.0
    );
    Ok(())
}
