//! `fallback: batch` while the broker is away. A following pipeline sends the ledger to Kafka;
//! the test cuts the proxy in front of its broker, and three files arrive during the outage,
//! far more than the real-time path's queues hold. Once the path reports itself degraded, the
//! events waiting for it and every event decided after go to the batch path: the source reads
//! all of it while the broker is still away, and the snapshots receive it. Back online, what the
//! open transaction held reaches Kafka. Every record ends up in exactly one place, and every
//! record in the snapshots was a counted fallback.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use syncmesh_connectors::decider::path_index;
use syncmesh_connectors::event::TableId;
use syncmesh_connectors::metrics::Metrics;
use syncmesh_connectors::pipeline::Pipeline;
use syncmesh_connectors::runtime::StopSignal;
use syncmesh_crds::PathName;
use syncmesh_tests::broker::PrivateBroker;
use syncmesh_tests::pipeline::{
    deliver, kafka_places, ledger_workdir, metric_sum, options, snapshot_places,
};
use syncmesh_tests::{poll_until, require, services, unique_name};

const PER_FILE: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_kafka_path_sends_waiting_and_new_events_to_the_snapshots() -> anyhow::Result<()>
{
    let tansu = require!(services::tansu());
    let broker = PrivateBroker::start(&tansu).await?;
    let name = unique_name("fallback", '-', 40);
    let topic = format!("{name}.bank.ledger");
    let dir = ledger_workdir()?;
    deliver(dir.path(), "ledger-0001.dat", "a-0001.dat")?;

    let manifest = format!(
        r#"
apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata: {{name: {name}}}
spec:
  sources:
    - name: ledger
      flatFile: {{path: data, pattern: "*.dat", layout: ledger.cpy, table: bank.ledger, primaryKey: [ACCOUNT-ID]}}
  defaultRoute: [realtime]
  batch: {{url: snapshots, maxEvents: 2000, maxAgeSeconds: 1}}
  realtime:
    brokers: "{brokers}"
    topicTemplate: "{name}.{{schema}}.{{table}}"
    maxBatchEvents: 1000
    lingerMs: 20
    fallback: batch
    degradedAfterMs: 2000
    operationTimeoutSeconds: 5
    retryForSeconds: 240
    properties: {{message.timeout.ms: "10000", socket.timeout.ms: "5000"}}
"#,
        brokers = broker.brokers
    );
    let pipeline = syncmesh_crds::parse_manifest(&manifest)?;
    let mut opts = options(dir.path());
    opts.follow = Some(Duration::from_millis(100));
    let metrics = Arc::new(Metrics::new());
    let built = Pipeline::build(&pipeline, &opts, metrics.clone()).await?;
    let counters = built.counters();
    let (stop_tx, stop) = StopSignal::new();
    let stopper = stop_tx.clone();
    let run = tokio::spawn(built.run(stop_tx, stop));
    let acked = |path: PathName| counters.acknowledged[path_index(path)].load(Ordering::Relaxed);

    poll_until(
        Duration::from_secs(60),
        "the first file in Kafka",
        || async { Ok((acked(PathName::Realtime) == PER_FILE).then_some(())) },
    )
    .await?;

    // The broker goes away; three files arrive while it is away.
    broker.proxy.cut();
    for file in ["a-0002.dat", "a-0003.dat", "a-0004.dat"] {
        deliver(dir.path(), "ledger-0001.dat", file)?;
    }
    // Nothing is held back: all of it is read and the snapshots take what Kafka cannot.
    poll_until(
        Duration::from_secs(120),
        "every record read and all but the Kafka path's backlog in snapshots, broker still away",
        || async {
            let read = counters.events_read.load(Ordering::Relaxed);
            let batch = acked(PathName::Batch);
            Ok((read == 4 * PER_FILE && batch >= 2 * PER_FILE).then_some((read, batch)))
        },
    )
    .await?;
    assert_eq!(
        acked(PathName::Realtime),
        PER_FILE,
        "nothing reached Kafka while it was away"
    );
    assert_eq!(
        metric_sum(&metrics.render(), "syncmesh_kafka_path_degraded"),
        1.0
    );
    broker.proxy.restore().await?;

    poll_until(
        Duration::from_secs(180),
        "every record acknowledged by one path",
        || async {
            let total = acked(PathName::Batch) + acked(PathName::Realtime);
            Ok((total == 4 * PER_FILE).then_some(total))
        },
    )
    .await?;
    stopper.send(true)?;
    let summary = run.await??;
    assert_eq!(summary.events_read, 4 * PER_FILE);

    let batch = snapshot_places("snapshots", dir.path(), &TableId::new("bank", "ledger")).await?;
    let realtime = kafka_places(&broker.brokers, &topic).await?;
    eprintln!(
        "{} records in snapshots, {} in Kafka",
        batch.len(),
        realtime.len()
    );
    assert_eq!(
        batch.len() + realtime.len(),
        4 * PER_FILE as usize,
        "every record once"
    );
    assert!(batch.is_disjoint(&realtime));
    assert!(
        realtime.iter().filter(|(f, _)| f == "a-0001.dat").count() == PER_FILE as usize,
        "the file read before the outage is all in Kafka"
    );
    assert!(
        batch.iter().all(|(f, _)| f != "a-0001.dat"),
        "nothing read before the outage went to the snapshots"
    );
    let exported = metrics.render();
    assert_eq!(
        metric_sum(&exported, "syncmesh_route_fallbacks_total"),
        batch.len() as f64,
        "every record in the snapshots was a counted fallback"
    );
    assert_eq!(metric_sum(&exported, "syncmesh_kafka_path_degraded"), 0.0);
    Ok(())
}
