//! The real-time path on the real Kafka-protocol broker (tansu), run by the real runtime: every
//! event of two tables lands once, in order, with its key, Debezium `op` and headers, and the
//! positions topic ends at the last event's position; an unreachable broker fails the run with
//! its address and acknowledges nothing.
//!
//! Reading back uses a read_uncommitted consumer with `assign()`: fine here because nothing is
//! aborted (tansu never fills a fetch's aborted-transactions list, so read_committed would not
//! hide aborted records either; see TEST-SERVICES.md).

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use syncmesh_connectors::checkpoint::{CheckpointStore, FileCheckpointStore};
use syncmesh_connectors::deadletter::FileDeadLetters;
use syncmesh_connectors::decider::{Decider, RuleSet};
use syncmesh_connectors::event::{
    ChangeEvent, Column, ColumnType, Operation, Position, TableId, TableSchema, Value,
};
use syncmesh_connectors::metrics::Metrics;
use syncmesh_connectors::paths::realtime::{
    HEADER_POSITION, HEADER_SCHEMA_VERSION, HEADER_SOURCE, PositionRecord, RealtimeConfig,
    RealtimePath, read_committed_positions,
};
use syncmesh_connectors::runtime::{
    Emitter, Path, RunCounters, Runtime, Source, SourceError, SourceItem, SourceProgress,
    StopSignal,
};
use syncmesh_crds::PathName;

const EVENTS: u64 = 5_000;
const KEYS: u64 = 300;

fn brokers() -> Option<String> {
    match std::env::var("SYNCMESH_KAFKA_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            if std::env::var("SYNCMESH_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("SYNCMESH_REQUIRE_SERVICES=1 but SYNCMESH_KAFKA_BROKERS is not set");
            }
            println!("SKIPPED: kafka not configured");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn schema(table: &str) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        table: TableId::new("bank", table),
        version: 3,
        columns: vec![
            Column {
                name: "id".into(),
                column_type: ColumnType::Int,
                nullable: false,
            },
            Column {
                name: "note".into(),
                column_type: ColumnType::String { max_length: None },
                nullable: true,
            },
        ],
        primary_key: vec![0],
    })
}

/// Event `i` (1-based): table `accounts` for odd i, `ledger` for even; key `i % KEYS`; the
/// first change of a key is an insert, then updates, every 7th a delete.
fn event(i: u64, tables: &[Arc<TableSchema>; 2]) -> ChangeEvent {
    let schema = tables[(i % 2) as usize].clone();
    let id = (i % KEYS) as i64;
    let op = if i <= 2 * KEYS {
        Operation::Insert
    } else if i.is_multiple_of(7) {
        Operation::Delete
    } else {
        Operation::Update
    };
    let row = Some(vec![Value::Int(id), Value::String(format!("n{i}"))]);
    ChangeEvent {
        source: "src".into(),
        position: Position::tidb(i, 0),
        transaction: None,
        schema,
        op,
        before: if op == Operation::Insert {
            None
        } else {
            row.clone()
        },
        after: if op == Operation::Delete { None } else { row },
        ddl: None,
    }
}

fn tables() -> [Arc<TableSchema>; 2] {
    [schema("ledger"), schema("accounts")]
}

struct Generated {
    events: u64,
    /// Event number whose note is made larger than the producer accepts.
    oversized: Option<u64>,
}

#[async_trait::async_trait]
impl Source for Generated {
    fn name(&self) -> &str {
        "src"
    }

    async fn run(
        self: Box<Self>,
        _resume: SourceProgress,
        mut out: Emitter,
        _stop: StopSignal,
    ) -> Result<(), SourceError> {
        let tables = tables();
        for i in 1..=self.events {
            let mut e = event(i, &tables);
            if self.oversized == Some(i)
                && let Some(row) = e.after.as_mut()
            {
                row[1] = Value::String("x".repeat(4_000));
            }
            out.push(SourceItem::Event(e)).await?;
        }
        out.flush().await?;
        Ok(())
    }
}

fn runtime(
    dir: &std::path::Path,
    oversized: Option<u64>,
    pipeline: &str,
    path: RealtimePath,
    metrics: Arc<Metrics>,
    counters: Arc<RunCounters>,
) -> Runtime {
    let c = metrics.decisions.clone();
    let rules = RuleSet::compile(&[], &[PathName::Realtime], |r| {
        c.with_label_values(&[pipeline, r])
    })
    .expect("rules");
    let paths: Vec<Option<Box<dyn Path>>> = vec![Some(Box::new(path)), None];
    Runtime {
        pipeline: pipeline.into(),
        sources: vec![Box::new(Generated {
            events: EVENTS,
            oversized,
        })],
        decider: Arc::new(Decider::new(rules)),
        paths,
        checkpoint: Box::new(FileCheckpointStore::new(dir.join("cp"), pipeline)),
        dead_letters: Box::new(FileDeadLetters::new(dir.join("dl"))),
        metrics,
        counters,
        channel_capacity: 4,
        checkpoint_interval: Duration::from_millis(100),
    }
}

struct Read {
    key: Option<String>,
    value: serde_json::Value,
    headers: Vec<(String, String)>,
}

/// Reads partition 0 of `topic` from the beginning until `want` data records arrived.
fn read_topic(brokers: &str, topic: &str, want: usize) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("realtime-test-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < want && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Read {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: serde_json::from_slice(m.payload().unwrap_or_default())
                        .expect("JSON value"),
                    headers,
                });
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    // Anything past `want` would be a duplicate: give it a moment to show up.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(200)) {
            out.push(Read {
                key: None,
                value: serde_json::Value::Null,
                headers: vec![],
            });
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_lands_once_in_order_with_key_op_and_headers() {
    let Some(brokers) = brokers() else { return };
    let pipeline = unique("rt");
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::new());
    let counters = Arc::new(RunCounters::default());
    let mut config = RealtimeConfig::new(brokers.clone());
    config.max_batch_events = 700;
    let path = RealtimePath::new(&pipeline, config.clone(), &metrics).expect("path");
    let (tx, stop) = StopSignal::new();
    let summary = tokio::time::timeout(
        Duration::from_secs(180),
        runtime(dir.path(), None, &pipeline, path, metrics.clone(), counters).run(tx, stop),
    )
    .await
    .expect("the run ends")
    .expect("run");

    println!("run took {:?}", summary.elapsed);
    // Acks reached the last seq: all events acknowledged and the position committed.
    assert_eq!(summary.events_read, EVENTS);
    assert_eq!(summary.acknowledged.get("realtime"), Some(&EVENTS));
    let last = Position::tidb(EVENTS, 0);
    assert_eq!(summary.progress["src"].position, Some(last.clone()));
    let cp = FileCheckpointStore::new(dir.path().join("cp"), pipeline.as_str())
        .load()
        .expect("load")
        .expect("a checkpoint");
    assert_eq!(cp.sources["src"].position, Some(last.clone()));

    let tables = tables();
    for table in &tables {
        let topic = config.topic_for(&pipeline, &table.table);
        let expected: Vec<ChangeEvent> = (1..=EVENTS)
            .map(|i| event(i, &tables))
            .filter(|e| e.table() == &table.table)
            .collect();
        let t = Instant::now();
        let read = read_topic(&brokers, &topic, expected.len());
        println!("read {topic} in {:?}", t.elapsed());
        assert_eq!(
            read.len(),
            expected.len(),
            "{topic}: every event exactly once"
        );
        for (n, (r, e)) in read.iter().zip(&expected).enumerate() {
            assert_eq!(
                r.key.as_deref(),
                Some(e.key_text().as_str()),
                "{topic} #{n}"
            );
            assert_eq!(r.value["op"], e.op.code(), "{topic} #{n}");
            assert_eq!(
                r.value["source"]["commit_ts"],
                serde_json::json!(match e.position {
                    Position::Tidb { commit_ts, .. } => commit_ts,
                    _ => unreachable!(),
                }),
                "{topic} #{n}: in source order"
            );
            let header = |k: &str| {
                r.headers
                    .iter()
                    .find(|(hk, _)| hk == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("{topic} #{n}: header {k} missing"))
            };
            let pos: Position =
                serde_json::from_str(&header(HEADER_POSITION)).expect("position header");
            assert_eq!(pos, e.position, "{topic} #{n}");
            assert_eq!(header(HEADER_SCHEMA_VERSION), "3");
            assert_eq!(header(HEADER_SOURCE), "src");
        }
    }

    // One position record per committed transaction (one source); the last one is the last
    // event's position.
    let committed: usize = metrics
        .registry
        .gather()
        .iter()
        .filter(|f| f.name() == "syncmesh_kafka_transactions_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "outcome" && l.value() == "committed")
        })
        .map(|m| m.get_counter().value() as usize)
        .sum();
    // A transaction holds fewer than max_batch_events + 512 (one runtime batch) events.
    assert!(
        committed >= EVENTS.div_ceil(config.max_batch_events as u64 + 512) as usize,
        "{committed} transactions"
    );
    let positions = config.positions_topic_for(&pipeline);
    let read = read_topic(&brokers, &positions, committed);
    assert_eq!(read.len(), committed, "one position record per transaction");
    let last_record = read.last().expect("a position record");
    assert_eq!(last_record.key.as_deref(), Some("src"));
    let record: PositionRecord =
        serde_json::from_value(last_record.value.clone()).expect("position record");
    assert_eq!(record.position, last);
    assert_eq!(record.pipeline, pipeline);
    let committed = read_committed_positions(&brokers, &positions)
        .await
        .expect("read positions");
    assert_eq!(committed.len(), 1, "{committed:?}");
    assert_eq!(committed["src"].position, last);
    assert_eq!(committed["src"].seq, EVENTS);

    let text = {
        let mut buf = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &metrics.registry.gather(),
            &mut buf,
        )
        .expect("encode");
        String::from_utf8(buf).expect("utf-8")
    };
    assert!(
        text.contains("syncmesh_kafka_transactions_total")
            && text.contains("outcome=\"committed\""),
        "{text}"
    );
    assert!(text.contains("syncmesh_kafka_produce_duration_seconds_count"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_fails_the_run_naming_it_and_acks_nothing() {
    // Not a service test: a closed loopback port never answers. Bind and drop a listener to
    // get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let brokers = format!("127.0.0.1:{port}");
    let pipeline = unique("rt-down");
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::new());
    let counters = Arc::new(RunCounters::default());
    let mut config = RealtimeConfig::new(brokers.clone());
    config.operation_timeout = Duration::from_secs(3);
    for (k, v) in [
        ("socket.timeout.ms", "1000"),
        ("message.timeout.ms", "2000"),
        ("transaction.timeout.ms", "3000"),
        ("reconnect.backoff.max.ms", "200"),
    ] {
        config.properties.insert(k.into(), v.into());
    }
    let path = RealtimePath::new(&pipeline, config, &metrics).expect("path");
    let (tx, stop) = StopSignal::new();
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        runtime(dir.path(), None, &pipeline, path, metrics, counters.clone()).run(tx, stop),
    )
    .await
    .expect("the run ends (no hang)");
    let err = result.expect_err("the broker does not answer");
    let text = err.to_string();
    println!("failed as expected after {:?}: {text}", started.elapsed());
    assert!(text.contains(&brokers), "names the broker: {text}");
    assert!(text.contains("realtime"), "names the path: {text}");
    assert!(started.elapsed() < Duration::from_secs(30), "{text}");
    assert_eq!(counters.acknowledged[0].load(Ordering::Relaxed), 0);
    let cp = FileCheckpointStore::new(dir.path().join("cp"), pipeline.as_str())
        .load()
        .expect("load");
    assert!(cp.is_none_or(|c| c.sources["src"].position.is_none()));
}

fn counter_value(metrics: &Metrics, name: &str, outcome: &str) -> u64 {
    metrics
        .registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "outcome" && l.value() == outcome)
        })
        .map(|m| m.get_counter().value() as u64)
        .sum()
}

/// A record librdkafka refuses (above `message.max.bytes`) neither fails the run nor is lost:
/// it goes to the dead-letter topic, in the same transaction as the rest of its batch, and
/// every event is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_producer_refuses_goes_to_the_dead_letter_topic_and_the_run_completes() {
    let Some(brokers) = brokers() else { return };
    let pipeline = unique("rt-refused");
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::new());
    let counters = Arc::new(RunCounters::default());
    let mut config = RealtimeConfig::new(brokers.clone());
    config.max_batch_events = 700;
    config
        .properties
        .insert("message.max.bytes".into(), "2000".into());
    let path = RealtimePath::new(&pipeline, config.clone(), &metrics).expect("path");
    let (tx, stop) = StopSignal::new();
    let oversized = 3_001;
    let summary = tokio::time::timeout(
        Duration::from_secs(120),
        runtime(
            dir.path(),
            Some(oversized),
            &pipeline,
            path,
            metrics.clone(),
            counters.clone(),
        )
        .run(tx, stop),
    )
    .await
    .expect("the run ends")
    .expect("the refused record does not fail the run");
    assert_eq!(summary.acknowledged.get("realtime"), Some(&EVENTS));
    assert_eq!(
        counter_value(&metrics, "syncmesh_kafka_transactions_total", "aborted"),
        0,
        "refused before sending: no transaction aborted"
    );
    let topic = config.topic_for(&pipeline, &TableId::new("bank", "accounts"));
    // No transaction was aborted, so an uncommitted read shows only committed records.
    let letters = read_topic(&brokers, &config.dead_letter_topic_for(&pipeline), 1);
    assert_eq!(letters.len(), 1, "one dead letter");
    let letter = &letters[0].value;
    assert_eq!(letter["code"], "MessageSizeTooLarge");
    assert_eq!(letter["topic"], topic.as_str());
    assert_eq!(letter["position"]["commit_ts"], oversized);
    assert_eq!(letter["valueOmitted"], true);
    // Events alternate between two tables; the refused one was an `accounts` row.
    let ledger = config.topic_for(&pipeline, &TableId::new("bank", "ledger"));
    let produced = read_topic(&brokers, &topic, (EVENTS / 2 - 1) as usize).len()
        + read_topic(&brokers, &ledger, (EVENTS / 2) as usize).len();
    assert_eq!(produced as u64, EVENTS - 1, "every other event once");
}

/// The positions reader applies the control markers itself (tansu never fills the
/// aborted-transactions list, so librdkafka's read_committed would show the aborted record):
/// a committed record counts, an aborted or still open one does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_positions_skip_aborted_and_open_transactions() {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let Some(brokers) = brokers() else { return };
    let pipeline = unique("rt-pos");
    let topic = RealtimeConfig::new(brokers.clone()).positions_topic_for(&pipeline);
    assert!(
        read_committed_positions(&brokers, &topic)
            .await
            .expect("a missing topic reads as empty")
            .is_empty()
    );
    let record = |ts: u64, seq: u64| {
        serde_json::to_vec(&PositionRecord {
            position: Position::tidb(ts, 0),
            seq,
            pipeline: pipeline.clone(),
        })
        .expect("json")
    };
    let (b, t, txid) = (brokers.clone(), topic.clone(), format!("{pipeline}-tx"));
    let (a, x, o) = (record(10, 1), record(20, 2), record(30, 3));
    let producer = tokio::task::spawn_blocking(move || {
        let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("transactional.id", &txid)
            .create()
            .expect("producer");
        let timeout = Duration::from_secs(30);
        p.init_transactions(timeout).expect("init");
        for (value, commit) in [(&a, true), (&x, false)] {
            p.begin_transaction().expect("begin");
            p.send(BaseRecord::to(&t).key("src").payload(value))
                .map_err(|(e, _)| e)
                .expect("send");
            if commit {
                p.commit_transaction(timeout).expect("commit");
            } else {
                p.flush(timeout).expect("flush");
                p.abort_transaction(timeout).expect("abort");
            }
        }
        // Left open: sent and flushed, never committed.
        p.begin_transaction().expect("begin");
        p.send(BaseRecord::to(&t).key("src").payload(&o))
            .map_err(|(e, _)| e)
            .expect("send");
        p.flush(timeout).expect("flush");
        p
    })
    .await
    .expect("producer thread");
    let committed = read_committed_positions(&brokers, &topic)
        .await
        .expect("read positions");
    assert_eq!(
        committed.get("src").map(|r| &r.position),
        Some(&Position::tidb(10, 0)),
        "{committed:?}"
    );
    drop(producer);
}
