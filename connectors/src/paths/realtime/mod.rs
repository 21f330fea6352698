//! The real-time path: each batch of events is produced to Kafka in one transaction, a topic per
//! table, together with the source positions it reaches (in a compacted positions topic of the
//! pipeline); the batch is acknowledged only once the transaction is committed.
//!
//! A produce or commit error aborts the open transaction and ends the path with the error; the
//! runtime then fails the run, and the next run resumes from the checkpoint (at-least-once into
//! the path, exactly-once for read_committed consumers of what was committed).
//!
//! Delivery reports come from librdkafka's threads: `FutureProducer` hands each one to its
//! future through a oneshot channel, so nothing ever blocks there. Calls that wait on the broker
//! (`init_transactions`, commit, abort) run under `spawn_blocking`, never on the async workers.

mod claim;
mod config;
mod positions;

pub use claim::{Claim, ClaimCheck, ClaimCheckError, HEADER_CLAIM_CHECK};
pub use config::{KafkaFormat, RealtimeConfig, topic_name};
pub use positions::{PositionsError, read_committed_positions};

use super::sleep_until;
use crate::decider::PathHealth;
use crate::event::{ChangeEvent, Position, TableId, to_canal_json, to_debezium_json};
use crate::metrics::Metrics;
use crate::runtime::{Acker, Path, PathError, Routed};
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Header carrying the event's source position (JSON of `Position`).
pub const HEADER_POSITION: &str = "syncmesh.position";
/// Header carrying the schema version the event was read with (decimal text).
pub const HEADER_SCHEMA_VERSION: &str = "syncmesh.schema_version";
/// Header carrying the pipeline source's name.
pub const HEADER_SOURCE: &str = "syncmesh.source";

#[derive(Debug, thiserror::Error)]
pub enum RealtimeError {
    #[error("kafka at {brokers}: {what}: {source}")]
    Kafka {
        brokers: String,
        what: String,
        source: Box<KafkaError>,
    },
    #[error("kafka at {brokers}: producing to topic `{topic}` failed: {source}")]
    Produce {
        brokers: String,
        topic: String,
        source: Box<KafkaError>,
    },
    #[error("kafka at {brokers}: creating topic `{topic}` failed: {code}")]
    CreateTopic {
        brokers: String,
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("kafka at {brokers}: a delivery report for topic `{topic}` was lost")]
    DeliveryLost { brokers: String, topic: String },
    #[error(transparent)]
    Positions(#[from] PositionsError),
    #[error(transparent)]
    ClaimCheck(#[from] ClaimCheckError),
    #[error("registering the real-time path's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The real-time path's own metrics, registered on the pipeline's registry.
struct RealtimeMetrics {
    committed: IntCounter,
    aborted: IntCounter,
    produce_seconds: prometheus::Histogram,
    replay_skipped: IntCounter,
    claim_checks: IntCounter,
}

impl RealtimeMetrics {
    fn register(registry: &Registry, pipeline: &str) -> Result<Self, prometheus::Error> {
        let transactions = IntCounterVec::new(
            Opts::new(
                "syncmesh_kafka_transactions_total",
                "Kafka transactions of the real-time path, by outcome (committed or aborted)",
            ),
            &["pipeline", "outcome"],
        )?;
        let produce = HistogramVec::new(
            HistogramOpts::new(
                "syncmesh_kafka_produce_duration_seconds",
                "Time to produce one batch of events to Kafka and commit its transaction",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["pipeline"],
        )?;
        let skipped = IntCounterVec::new(
            Opts::new(
                "syncmesh_kafka_replayed_events_skipped_total",
                "Replayed events not produced again because an earlier run had committed them",
            ),
            &["pipeline"],
        )?;
        let claims = IntCounterVec::new(
            Opts::new(
                "syncmesh_kafka_claim_checks_total",
                "Records too large for the brokers, stored in object storage and referenced",
            ),
            &["pipeline"],
        )?;
        registry.register(Box::new(claims.clone()))?;
        registry.register(Box::new(skipped.clone()))?;
        registry.register(Box::new(transactions.clone()))?;
        registry.register(Box::new(produce.clone()))?;
        Ok(Self {
            committed: transactions.with_label_values(&[pipeline, "committed"]),
            aborted: transactions.with_label_values(&[pipeline, "aborted"]),
            produce_seconds: produce.with_label_values(&[pipeline]),
            replay_skipped: skipped.with_label_values(&[pipeline]),
            claim_checks: claims.with_label_values(&[pipeline]),
        })
    }
}

/// The Kafka path. Build it with [`RealtimePath::new`]; the runtime runs it.
pub struct RealtimePath {
    pipeline: String,
    config: RealtimeConfig,
    metrics: RealtimeMetrics,
    /// Topic per table, resolved from the template once.
    topics: HashMap<TableId, String>,
    /// Topics known to exist (created by this path or found there).
    created: HashSet<String>,
    /// Per source, the last position a previous run committed to Kafka. Replayed events at or
    /// before it are acknowledged without being produced again; an entry is dropped at the
    /// first event past it.
    committed: BTreeMap<String, Position>,
    /// The highest sequence number received, and how many events since the last ack.
    seen: Option<u64>,
    unacked: u64,
    /// Raised while a transaction has been open longer than `config.degraded_after`.
    health: Arc<PathHealth>,
    /// Where records too large for the brokers go; without it they fail the path.
    claim_check: Option<ClaimCheck>,
}

/// What the positions topic holds per source: the last position committed, with the runtime
/// sequence number of its event and the pipeline.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PositionRecord {
    pub position: crate::event::Position,
    pub seq: u64,
    pub pipeline: String,
}

struct Kafka {
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
}

impl RealtimePath {
    /// Registers the path's metrics on `metrics.registry` (once per registry).
    pub fn new(
        pipeline: impl Into<String>,
        config: RealtimeConfig,
        metrics: &Metrics,
    ) -> Result<Self, RealtimeError> {
        let pipeline = pipeline.into();
        let metrics = RealtimeMetrics::register(&metrics.registry, &pipeline)?;
        Ok(Self {
            pipeline,
            config,
            metrics,
            topics: HashMap::new(),
            created: HashSet::new(),
            committed: BTreeMap::new(),
            seen: None,
            unacked: 0,
            health: Arc::new(PathHealth::default()),
            claim_check: None,
        })
    }

    /// Stores records larger than `check.max_record_bytes` in object storage and sends a
    /// reference instead.
    pub fn with_claim_check(mut self, check: ClaimCheck) -> Self {
        self.claim_check = Some(check);
        self
    }

    /// The path's health, for the decider's fallback: degraded while a transaction has been
    /// open longer than `degraded_after` (brokers down or overloaded), healthy again once it
    /// ends. A failed transaction ends the path, so "degraded" never outlives the path.
    pub fn health(&self) -> Arc<PathHealth> {
        self.health.clone()
    }

    /// [`RealtimePath::flush`], raising the health flag if it takes too long.
    async fn watched_flush(
        &mut self,
        kafka: &Kafka,
        pending: &mut Vec<Routed>,
        acks: &Acker,
    ) -> Result<(), PathError> {
        let health = self.health.clone();
        let after = self.config.degraded_after;
        let pipeline = self.pipeline.clone();
        let flush = self.flush(kafka, pending, acks);
        tokio::pin!(flush);
        let result = tokio::select! {
            r = &mut flush => r,
            _ = tokio::time::sleep(after) => {
                tracing::warn!(%pipeline, after_ms = after.as_millis() as u64, "kafka transaction still open: real-time path degraded");
                health.set_degraded(true);
                flush.await
            }
        };
        if result.is_ok() && health.is_degraded() {
            tracing::info!(%pipeline, "kafka transaction committed: real-time path healthy again");
            health.set_degraded(false);
        }
        result
    }

    fn kafka_error(&self, what: impl Into<String>, source: KafkaError) -> RealtimeError {
        RealtimeError::Kafka {
            brokers: self.config.brokers.clone(),
            what: what.into(),
            source: Box::new(source),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.config.properties {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.config.brokers);
        c
    }

    /// Connects, fences any previous producer with the same transactional id (aborting what it
    /// left open) and makes sure the positions topic exists.
    async fn connect(&mut self) -> Result<Kafka, RealtimeError> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| self.kafka_error("creating the admin client", e))?;
        let mut pc = self.client_config();
        pc.set(
            "transactional.id",
            self.config.transactional_id_for(&self.pipeline),
        )
        .set("enable.idempotence", "true");
        let producer: FutureProducer = pc
            .create()
            .map_err(|e| self.kafka_error("creating the producer", e))?;
        let kafka = Kafka { producer, admin };

        let positions = self.config.positions_topic_for(&self.pipeline);
        self.ensure_topics(&kafka, std::slice::from_ref(&positions), true)
            .await?;

        let p = kafka.producer.clone();
        let timeout = self.config.operation_timeout;
        let init = tokio::task::spawn_blocking(move || p.init_transactions(timeout))
            .await
            .map_err(|_| self.kafka_error("init_transactions", KafkaError::Canceled))
            .and_then(|r| r.map_err(|e| self.kafka_error("init_transactions", e)));
        init?;
        // Only now, with any previous producer fenced and its open transaction aborted, is the
        // positions topic final.
        self.committed = read_committed_positions(&self.config.brokers, &positions)
            .await?
            .into_iter()
            .map(|(source, record)| (source, record.position))
            .collect();
        if !self.committed.is_empty() {
            tracing::info!(committed = ?self.committed, "resuming: events at or before these positions are already in Kafka");
        }
        Ok(kafka)
    }

    /// Takes a batch from the runtime: events already committed to Kafka by an earlier run
    /// are dropped (they count as acknowledged), the rest join `pending`.
    fn receive(&mut self, batch: Vec<Routed>, pending: &mut Vec<Routed>) {
        for routed in batch {
            self.seen = Some(routed.seq);
            self.unacked += 1;
            let source = &*routed.event.source;
            if let Some(done) = self.committed.get(source) {
                if routed.event.position.not_after(done) == Some(true) {
                    self.metrics.replay_skipped.inc();
                    continue;
                }
                self.committed.remove(source);
            }
            pending.push(routed);
        }
    }

    /// Creates the topics not yet known to exist; "already exists" counts as success.
    async fn ensure_topics(
        &mut self,
        kafka: &Kafka,
        topics: &[String],
        compacted: bool,
    ) -> Result<(), RealtimeError> {
        let missing: Vec<&String> = topics
            .iter()
            .filter(|t| !self.created.contains(*t))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let partitions = if compacted { 1 } else { self.config.partitions };
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| {
                let n = NewTopic::new(
                    t,
                    partitions,
                    TopicReplication::Fixed(self.config.replication_factor),
                );
                if compacted {
                    n.set("cleanup.policy", "compact")
                } else {
                    n
                }
            })
            .collect();
        let opts = AdminOptions::new()
            .request_timeout(Some(self.config.operation_timeout))
            .operation_timeout(Some(self.config.operation_timeout));
        let results = kafka
            .admin
            .create_topics(new.iter(), &opts)
            .await
            .map_err(|e| self.kafka_error(format!("creating topics {missing:?}"), e))?;
        for result in results {
            match result {
                Ok(topic) => {
                    tracing::info!(%topic, pipeline = %self.pipeline, "created kafka topic");
                    self.created.insert(topic);
                }
                Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    self.created.insert(topic);
                }
                Err((topic, code)) => {
                    return Err(RealtimeError::CreateTopic {
                        brokers: self.config.brokers.clone(),
                        topic,
                        code,
                    });
                }
            }
        }
        Ok(())
    }

    fn topic(&mut self, table: &TableId) -> &str {
        if !self.topics.contains_key(table) {
            let t = self.config.topic_for(&self.pipeline, table);
            self.topics.insert(table.clone(), t);
        }
        &self.topics[table]
    }

    /// Produces `pending` and the positions it reaches in one transaction, commits it, then
    /// acknowledges. On any error the transaction is aborted and the error returned.
    async fn flush(
        &mut self,
        kafka: &Kafka,
        pending: &mut Vec<Routed>,
        acks: &Acker,
    ) -> Result<(), PathError> {
        let Some(last_seq) = self.seen else {
            return Ok(());
        };
        if pending.is_empty() {
            // Everything since the last ack was already in Kafka.
            if self.unacked > 0 {
                acks.ack(last_seq, std::mem::take(&mut self.unacked));
            }
            return Ok(());
        }
        let count = std::mem::take(&mut self.unacked);
        let mut tables: Vec<String> = Vec::new();
        for r in pending.iter() {
            let t = self.topic(r.event.table()).to_string();
            if !tables.contains(&t) {
                tables.push(t);
            }
        }
        self.ensure_topics(kafka, &tables, false).await?;

        let started = Instant::now();
        kafka
            .producer
            .begin_transaction()
            .map_err(|e| self.kafka_error("begin_transaction", e))?;
        let produced = self.produce_all(kafka, pending).await;
        let outcome = match produced {
            Ok(()) => {
                let p = kafka.producer.clone();
                let timeout = self.config.operation_timeout;
                match tokio::task::spawn_blocking(move || p.commit_transaction(timeout)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(self.kafka_error("commit_transaction", e)),
                    Err(_) => Err(self.kafka_error("commit_transaction", KafkaError::Canceled)),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            self.abort(kafka).await;
            self.metrics.aborted.inc();
            return Err(e.into());
        }
        self.metrics.committed.inc();
        self.metrics
            .produce_seconds
            .observe(started.elapsed().as_secs_f64());
        pending.clear();
        acks.ack(last_seq, count);
        Ok(())
    }

    async fn abort(&self, kafka: &Kafka) {
        let p = kafka.producer.clone();
        let timeout = self.config.operation_timeout;
        match tokio::task::spawn_blocking(move || p.abort_transaction(timeout)).await {
            Ok(Ok(())) => {
                tracing::warn!(pipeline = %self.pipeline, "kafka transaction aborted");
            }
            // A fenced or fatally failed producer cannot abort; the broker (or the next
            // instance's init_transactions) aborts the transaction instead.
            Ok(Err(e)) => {
                tracing::error!(pipeline = %self.pipeline, error = %e, "aborting the kafka transaction failed");
            }
            Err(e) => {
                tracing::error!(pipeline = %self.pipeline, error = %e, "aborting the kafka transaction panicked");
            }
        }
    }

    /// Enqueues every event and one position record per source, then waits for every
    /// delivery report.
    async fn produce_all(
        &mut self,
        kafka: &Kafka,
        pending: &[Routed],
    ) -> Result<(), RealtimeError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut inflight: VecDeque<(DeliveryFuture, usize)> = VecDeque::new();
        // The topic of each in-flight record, by index, for error messages.
        let mut topic_names: Vec<String> = Vec::new();
        let mut last: BTreeMap<Arc<str>, (&crate::event::Position, u64)> = BTreeMap::new();
        for routed in pending {
            let event: &ChangeEvent = &routed.event;
            let topic = self.topic(event.table()).to_string();
            let key = event.key_text();
            let value = match self.config.format {
                KafkaFormat::DebeziumJson => serde_json::to_vec(&to_debezium_json(event, now_ms)),
                KafkaFormat::CanalJson => serde_json::to_vec(&to_canal_json(event, now_ms)),
            }
            .expect("JSON values always serialize");
            let position = serde_json::to_vec(&event.position).expect("positions always serialize");
            let (value, claim) = match &self.claim_check {
                Some(check) if check.needed(key.as_bytes(), &value) => {
                    let claim = check
                        .store(&topic, &position, key.as_bytes(), value)
                        .await?;
                    self.metrics.claim_checks.inc();
                    let at =
                        serde_json::to_value(&event.position).expect("positions always serialize");
                    let reference =
                        claim.record_value(&event.table().to_string(), event.op.code(), &at);
                    (reference, Some(claim.url))
                }
                _ => (value, None),
            };
            let version = event.schema.version.to_string();
            let mut headers = OwnedHeaders::new_with_capacity(4)
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
                    value: Some(event.source.as_bytes()),
                });
            if let Some(url) = &claim {
                headers = headers.insert(Header {
                    key: HEADER_CLAIM_CHECK,
                    value: Some(url.as_bytes()),
                });
            }
            let mut record = FutureRecord::to(&topic).payload(&value).headers(headers);
            if !key.is_empty() {
                record = record.key(key.as_bytes());
            }
            let future = self.enqueue(kafka, record, &mut inflight).await?;
            inflight.push_back((future, topic_names.len()));
            topic_names.push(topic);
            last.insert(event.source.clone(), (&event.position, routed.seq));
        }
        let positions_topic = self.config.positions_topic_for(&self.pipeline);
        for (source, (position, seq)) in last {
            let value = serde_json::to_vec(&PositionRecord {
                position: position.clone(),
                seq,
                pipeline: self.pipeline.clone(),
            })
            .expect("positions always serialize");
            let record = FutureRecord::to(&positions_topic)
                .key(source.as_bytes())
                .payload(&value);
            let future = self.enqueue(kafka, record, &mut inflight).await?;
            inflight.push_back((future, topic_names.len()));
            topic_names.push(positions_topic.clone());
        }
        while let Some((future, i)) = inflight.pop_front() {
            self.delivered(future, &topic_names[i]).await?;
        }
        Ok(())
    }

    /// Enqueues `record`; while librdkafka's queue is full, waits for the oldest in-flight
    /// delivery first.
    async fn enqueue<'a>(
        &self,
        kafka: &Kafka,
        mut record: FutureRecord<'a, [u8], Vec<u8>>,
        inflight: &mut VecDeque<(DeliveryFuture, usize)>,
    ) -> Result<DeliveryFuture, RealtimeError> {
        loop {
            match kafka.producer.send_result(record) {
                Ok(future) => return Ok(future),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    match inflight.pop_front() {
                        Some((future, _)) => {
                            self.delivered(future, record.topic).await?;
                        }
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                Err((source, back)) => {
                    return Err(RealtimeError::Produce {
                        brokers: self.config.brokers.clone(),
                        topic: back.topic.to_string(),
                        source: Box::new(source),
                    });
                }
            }
        }
    }

    async fn delivered(&self, future: DeliveryFuture, topic: &str) -> Result<(), RealtimeError> {
        match future.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((source, message))) => Err(RealtimeError::Produce {
                brokers: self.config.brokers.clone(),
                topic: message.topic().to_string(),
                source: Box::new(source),
            }),
            Err(_) => Err(RealtimeError::DeliveryLost {
                brokers: self.config.brokers.clone(),
                topic: topic.to_string(),
            }),
        }
    }
}

#[async_trait::async_trait]
impl Path for RealtimePath {
    async fn run(
        mut self: Box<Self>,
        mut events: mpsc::Receiver<Vec<Routed>>,
        acks: Acker,
    ) -> Result<(), PathError> {
        let kafka = self.connect().await?;
        let mut pending: Vec<Routed> = Vec::new();
        let mut oldest: Option<Instant> = None;
        loop {
            let deadline = oldest.map(|t| tokio::time::Instant::from_std(t + self.config.linger));
            tokio::select! {
                batch = events.recv() => match batch {
                    Some(batch) => {
                        oldest.get_or_insert_with(Instant::now);
                        self.receive(batch, &mut pending);
                        if pending.len() >= self.config.max_batch_events {
                            self.watched_flush(&kafka, &mut pending, &acks).await?;
                            oldest = None;
                        }
                    }
                    None => {
                        self.watched_flush(&kafka, &mut pending, &acks).await?;
                        return Ok(());
                    }
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.watched_flush(&kafka, &mut pending, &acks).await?;
                    oldest = None;
                }
            }
        }
    }
}
