//! The broker stopped for 30 s in the middle of a run. The pipeline follows a directory of
//! ledger files and produces to a broker of the test's own, reached only through a proxy the
//! test cuts (connections reset, new ones refused). A file arrives while the broker is away, so
//! a transaction is open when it goes; that transaction cannot finish (its records time out
//! after 10 s), the path marks itself degraded and retries the batch in place, backing off.
//! Once the broker is back, the same run goes on: no restart, every record in Kafka exactly
//! once for a read_committed reader, and the path healthy again.

use std::sync::Arc;
use std::time::{Duration, Instant};
use syncmesh_connectors::metrics::Metrics;
use syncmesh_connectors::pipeline::Pipeline;
use syncmesh_connectors::runtime::StopSignal;
use syncmesh_tests::broker::PrivateBroker;
use syncmesh_tests::pipeline::{deliver, ledger_workdir, metric_sum, options};
use syncmesh_tests::{committed_records, poll_until, require, services, unique_name};

const OUTAGE: Duration = Duration::from_secs(30);
const PER_FILE: usize = 10_000;

/// The committed records of the topic, when there are `n` of them.
async fn topic_has(brokers: &str, topic: &str, n: usize) -> anyhow::Result<Option<()>> {
    let have = committed_records(brokers, topic, 0).await?.len();
    if have > n {
        anyhow::bail!("{have} records in {topic}, more than the {n} sent");
    }
    eprintln!("{have} of {n} records in {topic}");
    Ok((have == n).then_some(()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_for_30_seconds_loses_nothing_and_the_same_run_goes_on() -> anyhow::Result<()>
{
    // `RUST_LOG=syncmesh_connectors=info` shows the path's retries as they happen.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let tansu = require!(services::tansu());
    let broker = PrivateBroker::start(&tansu).await?;
    let name = unique_name("outage", '-', 40);
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
  realtime:
    brokers: "{brokers}"
    topicTemplate: "{name}.{{schema}}.{{table}}"
    maxBatchEvents: 1000
    lingerMs: 20
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
    let (stop_tx, stop) = StopSignal::new();
    let stopper = stop_tx.clone();
    let run = tokio::spawn(built.run(stop_tx, stop));

    let brokers = broker.brokers.clone();
    poll_until(
        Duration::from_secs(60),
        "the first file in Kafka",
        || async { topic_has(&brokers, &topic, PER_FILE).await },
    )
    .await?;

    // The broker goes away; a file arrives while it is away.
    broker.proxy.cut();
    let cut_at = Instant::now();
    deliver(dir.path(), "ledger-0001.dat", "a-0002.dat")?;
    poll_until(
        OUTAGE,
        "the real-time path to report itself degraded",
        || async {
            let degraded = metric_sum(&metrics.render(), "syncmesh_kafka_path_degraded");
            Ok((degraded == 1.0).then_some(()))
        },
    )
    .await?;
    assert!(
        !run.is_finished(),
        "the run is still going while the broker is away"
    );
    // The outage itself lasts 30 s: this wait is the scenario, not a synchronisation.
    tokio::time::sleep(OUTAGE.saturating_sub(cut_at.elapsed())).await;
    assert!(
        !run.is_finished(),
        "the run survived 30 s without its broker"
    );
    broker.proxy.restore().await?;

    // Back: the retried batch commits and the run goes on with a file that arrives later.
    deliver(dir.path(), "ledger-0001.dat", "a-0003.dat")?;
    poll_until(
        Duration::from_secs(180),
        "all three files in Kafka",
        || async { topic_has(&brokers, &topic, 3 * PER_FILE).await },
    )
    .await?;
    stopper.send(true)?;
    let summary = run.await??;
    assert_eq!(
        summary.acknowledged.get("realtime"),
        Some(&((3 * PER_FILE) as u64))
    );

    // Exactly once: each file's records at their own positions, none twice.
    let records = syncmesh_tests::kafka::read_partition(&broker.brokers, &topic, 0).await?;
    let mut positions = std::collections::BTreeSet::new();
    for r in &records.committed {
        let position = r
            .headers
            .iter()
            .find(|(k, _)| k == "syncmesh.position")
            .and_then(|(_, v)| v.clone())
            .ok_or_else(|| anyhow::anyhow!("offset {}: no position header", r.offset))?;
        assert!(
            positions.insert(position),
            "offset {}: a position seen twice",
            r.offset
        );
    }
    assert_eq!(positions.len(), 3 * PER_FILE);
    let exported = metrics.render();
    assert!(
        metric_sum(&exported, "syncmesh_kafka_transaction_retries_total") >= 1.0,
        "the outage failed a transaction, which was retried in place:\n{exported}"
    );
    assert_eq!(
        metric_sum(&exported, "syncmesh_kafka_path_degraded"),
        0.0,
        "healthy again"
    );
    eprintln!(
        "aborted transactions kept out of the committed view: {} records",
        records.aborted.len()
    );
    Ok(())
}
