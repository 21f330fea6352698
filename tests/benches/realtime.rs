//! The real-time path's throughput against librdkafka's raw produce rate on the same broker in
//! the same run, and its end-to-end latency and memory at a steady rate. Prints figures;
//! asserts nothing about time.
//!
//! ```sh
//! source /tmp/syncmesh-services/env.sh
//! cargo bench -p syncmesh-tests --bench realtime       # 3 x 200,000 events, 30 s at 10,000/s
//! ```
//!
//! Variables: `SYNCMESH_RT_BENCH_EVENTS` (per throughput round, default 200,000),
//! `SYNCMESH_RT_BENCH_RATE` (steady phase, events/s, default 10,000),
//! `SYNCMESH_RT_BENCH_SECONDS` (steady phase, default 30), `SYNCMESH_RT_BENCH_LINGER_MS` and
//! `SYNCMESH_RT_BENCH_MAX_BATCH` (the path's linger and events per transaction; default: the
//! product's), `SYNCMESH_RT_BENCH_PROPS` (extra librdkafka properties for
//! the path, `key=value,key=value`). Without `--bench` (as `cargo test
//! --all-targets` runs it) it does a small run of each phase, so the code stays exercised.
//!
//! Both phases run the production runtime: a synthetic source (ledger-shaped rows, each with
//! its commit time) -> the decider -> the transactional Kafka path with its positions topic.
//! The baseline produces the same record values (same serializer) with a plain (idempotent,
//! non-transactional) librdkafka producer. The steady phase also prints the resident memory
//! at each tenth of the run; run it for minutes (`SYNCMESH_RT_BENCH_SECONDS=600`) to see that
//! memory stays flat.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::{Duration, Instant};
use syncmesh_connectors::checkpoint::FileCheckpointStore;
use syncmesh_connectors::deadletter::FileDeadLetters;
use syncmesh_connectors::decider::{Decider, RuleSet};
use syncmesh_connectors::event::{
    ChangeEvent, Column, ColumnType, Decimal, Operation, Position, TableId, TableSchema,
    Transaction, Value, write_debezium_json,
};
use syncmesh_connectors::metrics::Metrics;
use syncmesh_connectors::paths::realtime::{
    HEADER_POSITION, HEADER_SCHEMA_VERSION, HEADER_SOURCE, RealtimeConfig, RealtimePath,
};
use syncmesh_connectors::runtime::{
    Emitter, Runtime, Source, SourceError, SourceItem, SourceProgress, StopSignal,
};
use syncmesh_crds::PathName;
use syncmesh_tests::kafka::{create_topic, producer_config};
use syncmesh_tests::{services, unique_name};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn schema() -> Arc<TableSchema> {
    let col = |name: &str, column_type| Column {
        name: name.into(),
        column_type,
        nullable: false,
    };
    Arc::new(TableSchema {
        table: TableId::new("bank", "ledger"),
        version: 1,
        columns: vec![
            col("id", ColumnType::Int),
            col(
                "branch",
                ColumnType::String {
                    max_length: Some(4),
                },
            ),
            col(
                "name",
                ColumnType::String {
                    max_length: Some(30),
                },
            ),
            col(
                "balance",
                ColumnType::Decimal {
                    precision: 13,
                    scale: 2,
                },
            ),
            col("opened", ColumnType::Timestamp),
        ],
        primary_key: vec![0],
    })
}

fn event(schema: &Arc<TableSchema>, n: u64) -> ChangeEvent {
    let now = chrono::Utc::now();
    ChangeEvent {
        source: "bench".into(),
        position: Position::tidb(n + 1, 0),
        transaction: Some(Transaction {
            id: n.to_string(),
            commit_time: Some(now),
        }),
        schema: schema.clone(),
        op: Operation::Insert,
        before: None,
        after: Some(vec![
            Value::Int(n as i64),
            Value::String(format!("B{:03}", n % 1000)),
            Value::String(format!("customer number {n}")),
            Value::Decimal(Decimal::new(i128::from(n) * 37, 2)),
            Value::Timestamp(now.naive_utc()),
        ]),
        ddl: None,
    }
}

/// `count` events, as fast as the pipeline takes them, or `rate` per second in 10 ms steps.
struct Synthetic {
    count: u64,
    rate: Option<u64>,
}

#[async_trait::async_trait]
impl Source for Synthetic {
    fn name(&self) -> &str {
        "bench"
    }

    async fn run(
        self: Box<Self>,
        _resume: SourceProgress,
        mut out: Emitter,
        _stop: StopSignal,
    ) -> Result<(), SourceError> {
        let schema = schema();
        let closed = |e: syncmesh_connectors::runtime::Closed| -> SourceError { Box::new(e) };
        match self.rate {
            None => {
                for n in 0..self.count {
                    out.push(SourceItem::Event(event(&schema, n)))
                        .await
                        .map_err(closed)?;
                }
            }
            Some(rate) => {
                let per_tick = (rate / 100).max(1);
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                let mut n = 0;
                while n < self.count {
                    tick.tick().await;
                    for _ in 0..per_tick.min(self.count - n) {
                        out.push(SourceItem::Event(event(&schema, n)))
                            .await
                            .map_err(closed)?;
                        n += 1;
                    }
                    out.flush().await.map_err(closed)?;
                }
            }
        }
        out.flush().await.map_err(closed)
    }
}

const E2E: &str = "syncmesh_end_to_end_latency_seconds";
const TXN: &str = "syncmesh_kafka_produce_duration_seconds";

/// One run of the path: how long it took, and its latency histograms (end to end, and per
/// transaction) counted after the warm-up.
struct PathRun {
    elapsed: Duration,
    end_to_end: Vec<(f64, u64)>,
    transactions: Vec<(f64, u64)>,
}

/// Runs the production runtime over the synthetic source into Kafka. Latencies count from
/// `warm_up` after the start: the first events wait for the producer to connect, fence and
/// create topics, which is start-up, not the steady state.
async fn run_path(
    brokers: &str,
    count: u64,
    rate: Option<u64>,
    warm_up: Duration,
) -> anyhow::Result<PathRun> {
    let name = unique_name("rtbench", '-', 40);
    let dir = tempfile::tempdir()?;
    let metrics = Arc::new(Metrics::new());
    let mut config = RealtimeConfig::new(brokers);
    if let Ok(ms) = std::env::var("SYNCMESH_RT_BENCH_LINGER_MS") {
        config.linger = Duration::from_millis(ms.parse()?);
    }
    if let Ok(n) = std::env::var("SYNCMESH_RT_BENCH_MAX_BATCH") {
        config.max_batch_events = n.parse()?;
    }
    if let Ok(extra) = std::env::var("SYNCMESH_RT_BENCH_PROPS") {
        for kv in extra.split(',').filter(|s| !s.is_empty()) {
            if let Some((k, v)) = kv.split_once('=') {
                config.properties.insert(k.into(), v.into());
            }
        }
    }
    let path = RealtimePath::new(name.clone(), config, &metrics)?;
    let decisions = metrics.decisions.clone();
    let rules = RuleSet::compile(&[], &[PathName::Realtime], |route| {
        decisions.with_label_values(&[&name, route])
    })?;
    let runtime = Runtime {
        pipeline: name.clone(),
        sources: vec![Box::new(Synthetic { count, rate })],
        decider: Arc::new(Decider::new(rules)),
        paths: vec![Some(Box::new(path)), None],
        checkpoint: Box::new(FileCheckpointStore::new(
            dir.path().join("checkpoint"),
            name.clone(),
        )),
        dead_letters: Box::new(FileDeadLetters::new(dir.path().join("dead.jsonl"))),
        metrics: metrics.clone(),
        counters: Arc::default(),
        channel_capacity: 16,
        checkpoint_interval: Duration::from_millis(500),
    };
    let (stop_tx, stop) = StopSignal::new();
    let started = Instant::now();
    let at_warm_up = {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            tokio::time::sleep(warm_up).await;
            (buckets(&metrics, E2E), buckets(&metrics, TXN))
        })
    };
    let summary = runtime.run(stop_tx, stop).await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        summary.acknowledged.get("realtime") == Some(&count),
        "acknowledged {:?} of {count}",
        summary.acknowledged
    );
    anyhow::ensure!(
        at_warm_up.is_finished(),
        "the run ended within the warm-up ({warm_up:?})"
    );
    let (e2e_before, txn_before) = at_warm_up.await?;
    Ok(PathRun {
        elapsed,
        end_to_end: since(&buckets(&metrics, E2E), &e2e_before),
        transactions: since(&buckets(&metrics, TXN), &txn_before),
    })
}

/// librdkafka alone: the same records (key, value, headers), produced and acknowledged
/// (acks=all, idempotent).
async fn run_raw(brokers: &str, count: u64) -> anyhow::Result<Duration> {
    let topic = unique_name("rtbench-raw", '-', 40);
    create_topic(brokers, &topic, 1).await?;
    let producer: FutureProducer = producer_config(brokers, None)
        .set("enable.idempotence", "true")
        .set("linger.ms", "10")
        .create()?;
    let schema = schema();
    let started = Instant::now();
    let mut inflight = std::collections::VecDeque::new();
    for n in 0..count {
        let e = event(&schema, n);
        // The same serializer as the path, so the ratio is what transactions and the path's
        // bookkeeping cost.
        let mut value = Vec::with_capacity(512);
        write_debezium_json(&e, 0, &mut value);
        let key = e.key_text();
        let position = serde_json::to_vec(&e.position)?;
        let version = e.schema.version.to_string();
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: HEADER_POSITION,
                value: Some(&position),
            })
            .insert(Header {
                key: HEADER_SCHEMA_VERSION,
                value: Some(version.as_bytes()),
            })
            .insert(Header {
                key: HEADER_SOURCE,
                value: Some(e.source.as_bytes()),
            });
        let record = FutureRecord::to(&topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        let future = producer
            .send_result(record)
            .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
        inflight.push_back(future);
        // Bound the queue as the path does: wait for the oldest once many are in flight.
        if inflight.len() >= 50_000
            && let Some(oldest) = inflight.pop_front()
        {
            oldest
                .await?
                .map_err(|(e, _)| anyhow::anyhow!("delivery: {e}"))?;
        }
    }
    for f in inflight {
        f.await?
            .map_err(|(e, _)| anyhow::anyhow!("delivery: {e}"))?;
    }
    Ok(started.elapsed())
}

/// The cumulative buckets `(upper bound, count)` of histogram `name`; of its series with
/// label `path="realtime"` when it has that label.
fn buckets(metrics: &Metrics, name: &str) -> Vec<(f64, u64)> {
    let Some(family) = metrics
        .registry
        .gather()
        .into_iter()
        .find(|f| f.name() == name)
    else {
        return Vec::new();
    };
    let Some(series) = family.get_metric().iter().find(|m| {
        m.get_label()
            .iter()
            .all(|l| l.name() != "path" || l.value() == "realtime")
    }) else {
        return Vec::new();
    };
    series
        .get_histogram()
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect()
}

/// What `now` counted since `before` (the same histogram read earlier; empty for "since start").
fn since(now: &[(f64, u64)], before: &[(f64, u64)]) -> Vec<(f64, u64)> {
    now.iter()
        .enumerate()
        .map(|(i, &(le, n))| (le, n - before.get(i).map_or(0, |b| b.1)))
        .collect()
}

/// Prometheus-style quantile from cumulative buckets (linear within a bucket).
fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1 as f64;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        let count = count as f64;
        if count >= rank {
            let within = if count > prev.1 {
                (rank - prev.1) / (count - prev.1)
            } else {
                0.0
            };
            return Some(prev.0 + (le - prev.0) * within);
        }
        prev = (le, count);
    }
    None
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let Some(kafka) = services::kafka() else {
        println!("realtime bench: SKIPPED (no SYNCMESH_KAFKA_BROKERS)");
        return Ok(());
    };
    let full = std::env::args().any(|a| a == "--bench");
    let (events, rate, seconds) = if full {
        (
            env_u64("SYNCMESH_RT_BENCH_EVENTS", 200_000),
            env_u64("SYNCMESH_RT_BENCH_RATE", 10_000),
            env_u64("SYNCMESH_RT_BENCH_SECONDS", 30),
        )
    } else {
        (5_000, 2_000, 1)
    };

    // Warm-up of both, then rounds of baseline-then-path: on a shared machine the load moves
    // between runs, so each round's ratio compares neighbours and the median round is reported.
    run_raw(&kafka.brokers, events / 10).await?;
    run_path(&kafka.brokers, events / 10, None, Duration::ZERO).await?;
    let rounds = if full { 3 } else { 1 };
    let mut measured = Vec::new();
    for round in 1..=rounds {
        let raw = events as f64 / run_raw(&kafka.brokers, events).await?.as_secs_f64();
        let path = events as f64
            / run_path(&kafka.brokers, events, None, Duration::ZERO)
                .await?
                .elapsed
                .as_secs_f64();
        println!(
            "throughput round {round}, {events} events: librdkafka raw {raw:.0}/s, decider + Kafka path (transactions, positions) {path:.0}/s, ratio {:.2}",
            path / raw
        );
        measured.push((path / raw, raw, path));
    }
    measured.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ratio, raw, path) = measured[measured.len() / 2];
    println!(
        "throughput, median of {rounds} rounds: raw {raw:.0}/s, path {path:.0}/s, ratio {ratio:.2}"
    );

    let steady = rate * seconds;
    let rss_before = rss_kib();
    let rss_samples = tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(seconds * 100));
        loop {
            tick.tick().await;
            samples.push(rss_kib() / 1024);
            if samples.len() > 10 {
                return samples;
            }
        }
    });
    let warm_up = Duration::from_secs(if full { 2 } else { 0 });
    let run = run_path(&kafka.brokers, steady, Some(rate), warm_up).await?;
    let rss_after = rss_kib();
    let rss_samples = rss_samples.await?;
    let ms = |b: &[(f64, u64)], q: f64| quantile(b, q).unwrap_or(f64::NAN) * 1e3;
    println!(
        "steady {rate}/s for {:.1} s ({steady} events; latencies after a {} s warm-up, from \
         histogram buckets): end-to-end p50 {:.1} ms, p99 {:.1} ms; per transaction (produce + \
         commit) p50 {:.1} ms, p99 {:.1} ms; RSS {} -> {} MiB (MiB at each tenth: {:?})",
        run.elapsed.as_secs_f64(),
        warm_up.as_secs(),
        ms(&run.end_to_end, 0.5),
        ms(&run.end_to_end, 0.99),
        ms(&run.transactions, 0.5),
        ms(&run.transactions, 0.99),
        rss_before / 1024,
        rss_after / 1024,
        rss_samples,
    );
    Ok(())
}
