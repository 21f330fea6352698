//! The real-time path: each batch of events is produced to Kafka in one transaction, a topic per
//! table, together with the source positions it reaches (in a compacted positions topic of the
//! pipeline); the batch is acknowledged only once the transaction is committed.
//!
//! A failed transaction is retried in place: a new producer with the same transactional id
//! fences the old one (the brokers abort what it left open), the committed positions are read
//! again, and what Kafka does not hold yet is produced again, backing off, until `retry_for` is
//! spent; only then does the path end with the error, the run fail, and the next run resume
//! from Kafka's committed positions (at-least-once into the path, exactly-once for
//! read_committed consumers of what was committed). Records the brokers refuse for good go to
//! the dead-letter topic instead, in the same transaction as the rest.
//!
//! Delivery reports come from librdkafka's threads: `FutureProducer` hands each one to its
//! future through a oneshot channel, so nothing ever blocks there. Calls that wait on the broker
//! (`init_transactions`, commit, abort) run under `spawn_blocking`, never on the async workers.

mod claim;
mod commit;
mod config;
mod positions;

pub use claim::{Claim, ClaimCheck, ClaimCheckError, HEADER_CLAIM_CHECK};
pub use config::{KafkaFormat, RealtimeConfig, topic_name};
pub use positions::{PositionsError, read_committed_positions};

use super::sleep_until;
use crate::decider::PathHealth;
use crate::event::{ChangeEvent, Position, TableId, to_canal_json, write_debezium_json};
use crate::metrics::Metrics;
use crate::runtime::{Acker, Path, PathError, Routed};
use futures::FutureExt;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::collections::btree_map::Entry;
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
    #[error(
        "kafka at {brokers}: the producer failed for good ({code}: {reason}); another worker with the same transactional id may have taken over"
    )]
    Fatal {
        brokers: String,
        code: RDKafkaErrorCode,
        reason: String,
    },
    #[error("kafka at {brokers}: commit_transaction failed ({code}): {reason}")]
    Commit {
        brokers: String,
        code: RDKafkaErrorCode,
        reason: String,
    },
    #[error(
        "kafka at {brokers}: a transaction committed although its records were not all reported delivered ({unsettled} without a report; {detail}); stopping rather than guess what Kafka holds"
    )]
    CommittedUndelivered {
        brokers: String,
        unsettled: usize,
        detail: String,
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
    retries: IntCounter,
    dead_letters: IntCounterVec,
    degraded: IntGauge,
    pipeline: String,
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
        let retries = IntCounterVec::new(
            Opts::new(
                "syncmesh_kafka_transaction_retries_total",
                "Failed Kafka transactions aborted and produced again",
            ),
            &["pipeline"],
        )?;
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "syncmesh_kafka_dead_letters_total",
                "Records the brokers refused, sent to the dead-letter topic, by error code",
            ),
            &["pipeline", "code"],
        )?;
        let degraded = IntGaugeVec::new(
            Opts::new(
                "syncmesh_kafka_path_degraded",
                "1 while a Kafka transaction has been open longer than degradedAfterMs",
            ),
            &["pipeline"],
        )?;
        registry.register(Box::new(degraded.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
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
            retries: retries.with_label_values(&[pipeline]),
            dead_letters,
            degraded: degraded.with_label_values(&[pipeline]),
            pipeline: pipeline.to_string(),
        })
    }

    fn dead_letter(&self, code: RDKafkaErrorCode) {
        self.dead_letters
            .with_label_values(&[self.pipeline.as_str(), &format!("{code:?}")])
            .inc();
    }
}

/// The Kafka path. Build it with [`RealtimePath::new`]; the runtime runs it.
pub struct RealtimePath {
    pipeline: String,
    config: RealtimeConfig,
    metrics: RealtimeMetrics,
    /// Topic per table, resolved from the template once.
    topics: HashMap<TableId, Arc<str>>,
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
    /// ends. A transaction that fails is retried in place, so the flag stays up through the
    /// retries; the path ends only once `retry_for` is spent.
    pub fn health(&self) -> Arc<PathHealth> {
        self.health.clone()
    }

    /// [`RealtimePath::flush`], raising the health flag if it takes too long.
    async fn watched_flush(
        &mut self,
        kafka: &mut Kafka,
        pending: &mut Vec<Routed>,
        acks: &Acker,
    ) -> Result<(), PathError> {
        let health = self.health.clone();
        let gauge = self.metrics.degraded.clone();
        let after = self.config.degraded_after;
        let pipeline = self.pipeline.clone();
        let flush = self.flush(kafka, pending, acks);
        tokio::pin!(flush);
        let result = tokio::select! {
            r = &mut flush => r,
            _ = tokio::time::sleep(after) => {
                tracing::warn!(%pipeline, after_ms = after.as_millis() as u64, "kafka transaction still open: real-time path degraded");
                health.set_degraded(true);
                gauge.set(1);
                flush.await
            }
        };
        if result.is_ok() && health.is_degraded() {
            tracing::info!(%pipeline, "kafka transaction committed: real-time path healthy again");
            health.set_degraded(false);
            gauge.set(0);
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
            if !self.already_committed(&routed.event) {
                pending.push(routed);
            }
        }
    }

    /// Whether Kafka already holds `event` (at or before the committed position of its source).
    /// The first event past that position ends the check for its source.
    fn already_committed(&mut self, event: &ChangeEvent) -> bool {
        let source = &*event.source;
        if let Some(done) = self.committed.get(source) {
            if event.position.not_after(done) == Some(true) {
                self.metrics.replay_skipped.inc();
                return true;
            }
            self.committed.remove(source);
        }
        false
    }

    /// After a reconnect: drops from `pending` what the positions topic says is committed
    /// (a commit that failed on our side may have succeeded at the broker), keeping `refused`
    /// aligned with what is left.
    fn drop_committed(
        &mut self,
        pending: &mut Vec<Routed>,
        refused: &mut BTreeMap<usize, Refusal>,
    ) {
        let mut kept = Vec::with_capacity(pending.len());
        let mut still_refused = BTreeMap::new();
        for (index, routed) in std::mem::take(pending).into_iter().enumerate() {
            if self.already_committed(&routed.event) {
                continue;
            }
            if let Some(refusal) = refused.remove(&index) {
                still_refused.insert(kept.len(), refusal);
            }
            kept.push(routed);
        }
        *pending = kept;
        *refused = still_refused;
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

    fn topic(&mut self, table: &TableId) -> &Arc<str> {
        if !self.topics.contains_key(table) {
            let t = self.config.topic_for(&self.pipeline, table);
            self.topics.insert(table.clone(), t.into());
        }
        &self.topics[table]
    }

    /// Produces `pending` and the positions it reaches in one transaction, commits it, then
    /// acknowledges. After a failed transaction the producer is replaced (fencing the old one,
    /// so the broker aborts what it left open) and what Kafka has not committed is produced
    /// again, backing off, for up to `retry_for`. Records the brokers refused go to the
    /// dead-letter topic in the next attempt. A fatal producer error (fenced by a newer
    /// worker) ends the path.
    async fn flush(
        &mut self,
        kafka: &mut Kafka,
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
        tracing::debug!(pipeline = %self.pipeline, events = pending.len(), first = ?pending.first().map(|r| &r.event.position), last = ?pending.last().map(|r| &r.event.position), "flushing");
        let started = Instant::now();
        let mut refused: BTreeMap<usize, Refusal> = BTreeMap::new();
        let mut retry = Retry::new(self.config.retry_for);
        while !pending.is_empty() {
            let mut error = match self.attempt(kafka, pending, &mut refused).await {
                Ok(()) => break,
                Err(Failure::Refused) => match self.abort(kafka).await {
                    // The refused records go to the dead-letter topic now: no wait.
                    Ok(()) => {
                        self.metrics.aborted.inc();
                        continue;
                    }
                    Err(e) => e,
                },
                Err(Failure::Other(e)) => e,
                Err(Failure::Committed(e)) => return Err(e.into()),
            };
            self.metrics.aborted.inc();
            if let Some(fatal) = self.fatal(kafka) {
                return Err(fatal.into());
            }
            // A new producer with the same transactional id fences this one and has the broker
            // abort its open transaction, whatever state librdkafka left it in.
            loop {
                let Some(wait) = retry.next_wait() else {
                    return Err(error.into());
                };
                tracing::warn!(pipeline = %self.pipeline, %error, attempt = retry.attempts,
                    wait_ms = wait.as_millis() as u64,
                    "kafka transaction failed; reconnecting to produce the batch again");
                self.metrics.retries.inc();
                tokio::time::sleep(wait).await;
                match self.reconnect(kafka).await {
                    Ok(()) => break,
                    Err(e) => error = e,
                }
            }
            self.drop_committed(pending, &mut refused);
        }
        for refusal in refused.values() {
            self.metrics.dead_letter(refusal.code);
        }
        self.metrics.committed.inc();
        self.metrics
            .produce_seconds
            .observe(started.elapsed().as_secs_f64());
        pending.clear();
        acks.ack(last_seq, count);
        Ok(())
    }

    /// One transaction: topics, begin, produce, commit.
    async fn attempt(
        &mut self,
        kafka: &Kafka,
        pending: &[Routed],
        refused: &mut BTreeMap<usize, Refusal>,
    ) -> Result<(), Failure> {
        let mut topics: Vec<String> = Vec::new();
        for r in pending {
            let t = self.topic(r.event.table());
            if !topics.iter().any(|known| known.as_str() == &**t) {
                topics.push(t.to_string());
            }
        }
        if !refused.is_empty() {
            topics.push(self.config.dead_letter_topic_for(&self.pipeline));
        }
        self.ensure_topics(kafka, &topics, false)
            .await
            .map_err(Failure::Other)?;
        kafka
            .producer
            .begin_transaction()
            .map_err(|e| Failure::Other(self.kafka_error("begin_transaction", e)))?;
        let mut deliveries = self.produce_all(kafka, pending, refused).await?;
        // Commit without waiting for the delivery reports first: librdkafka's commit sends
        // what is still queued at once (no linger), waits for every delivery, and commits only
        // if each record was delivered. The reports say which records were refused, if any.
        let committed = self.commit(kafka).await;
        let unsettled = deliveries.settle_ready();
        let (newly_refused, error) = deliveries.finish();
        for (index, refusal) in &newly_refused {
            tracing::warn!(pipeline = %self.pipeline, topic = %refusal.topic, reason = %refusal.reason,
                position = ?pending[*index].event.position,
                "the brokers refused a record; it goes to the dead-letter topic");
        }
        match committed {
            Ok(()) if newly_refused.is_empty() && error.is_none() && unsettled == 0 => Ok(()),
            // librdkafka commits only once every record is delivered; anything else means the
            // transaction's content is unknown, and redoing it could skip or repeat records.
            Ok(()) => Err(Failure::Committed(RealtimeError::CommittedUndelivered {
                brokers: self.config.brokers.clone(),
                unsettled,
                detail: error.map_or_else(
                    || format!("{} refused", newly_refused.len()),
                    |e| e.to_string(),
                ),
            })),
            Err(_) if !newly_refused.is_empty() => {
                refused.extend(newly_refused);
                Err(Failure::Refused)
            }
            // The delivery error says more than the commit's ("delivery failed").
            Err(commit) => Err(Failure::Other(error.unwrap_or(commit))),
        }
    }

    async fn commit(&self, kafka: &Kafka) -> Result<(), RealtimeError> {
        let p = kafka.producer.clone();
        let timeout = self.config.operation_timeout;
        match tokio::task::spawn_blocking(move || commit::commit_transaction(&p, timeout)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RealtimeError::Commit {
                brokers: self.config.brokers.clone(),
                code: e.code,
                reason: e.reason,
            }),
            Err(_) => Err(self.kafka_error("commit_transaction", KafkaError::Canceled)),
        }
    }

    /// Replaces the producer: the new one fences the old, the broker aborts what the old left
    /// open, and the committed positions are read again. The old producer is destroyed off the
    /// async workers (librdkafka may wait on its queue).
    async fn reconnect(&mut self, kafka: &mut Kafka) -> Result<(), RealtimeError> {
        let fresh = self.connect().await?;
        let old = std::mem::replace(kafka, fresh);
        tokio::task::spawn_blocking(move || drop(old));
        Ok(())
    }

    /// The producer's fatal error when it means this worker must stop: a newer producer with
    /// the same transactional id fenced it (reconnecting would fence that one in turn), or it
    /// may not use that id. Other fatal errors are cured by a new producer.
    fn fatal(&self, kafka: &Kafka) -> Option<RealtimeError> {
        let (code, reason) = kafka.producer.client().fatal_error()?;
        let for_good = matches!(
            code,
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
        );
        for_good.then(|| RealtimeError::Fatal {
            brokers: self.config.brokers.clone(),
            code,
            reason,
        })
    }

    /// Aborts the open transaction (after the brokers refused records: they are up).
    async fn abort(&self, kafka: &Kafka) -> Result<(), RealtimeError> {
        let p = kafka.producer.clone();
        let timeout = self.config.operation_timeout;
        match tokio::task::spawn_blocking(move || p.abort_transaction(timeout)).await {
            Ok(Ok(())) => {
                tracing::warn!(pipeline = %self.pipeline, "kafka transaction aborted");
                Ok(())
            }
            Ok(Err(e)) => Err(self.kafka_error("abort_transaction", e)),
            Err(_) => Err(self.kafka_error("abort_transaction", KafkaError::Canceled)),
        }
    }

    /// The record value of `event` in the configured format.
    fn value_of(&self, event: &ChangeEvent, now_ms: i64) -> Vec<u8> {
        match self.config.format {
            KafkaFormat::DebeziumJson => {
                let mut out = Vec::with_capacity(512);
                write_debezium_json(event, now_ms, &mut out);
                out
            }
            KafkaFormat::CanalJson => serde_json::to_vec(&to_canal_json(event, now_ms))
                .expect("JSON values always serialize"),
        }
    }

    /// Enqueues every event (those in `refused` to the dead-letter topic) and one position
    /// record per source; returns what is in flight. Waits for deliveries only while
    /// librdkafka's queue is full.
    async fn produce_all(
        &mut self,
        kafka: &Kafka,
        pending: &[Routed],
        refused: &mut BTreeMap<usize, Refusal>,
    ) -> Result<Deliveries, Failure> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut deliveries = Deliveries::new(&self.config.brokers);
        let mut last: BTreeMap<Arc<str>, (&crate::event::Position, u64)> = BTreeMap::new();
        let dead_letter_topic: Arc<str> = self.config.dead_letter_topic_for(&self.pipeline).into();
        for (index, routed) in pending.iter().enumerate() {
            let event: &ChangeEvent = &routed.event;
            last.insert(event.source.clone(), (&event.position, routed.seq));
            let topic = self.topic(event.table()).clone();
            let key = event.key_text();
            let value = self.value_of(event, now_ms);
            let position = serde_json::to_vec(&event.position).expect("positions always serialize");
            let (value, claim) = match &self.claim_check {
                Some(check) if check.needed(key.as_bytes(), &value) => {
                    let claim = check
                        .store(&topic, &position, key.as_bytes(), value)
                        .await
                        .map_err(|e| Failure::Other(e.into()))?;
                    self.metrics.claim_checks.inc();
                    let at =
                        serde_json::to_value(&event.position).expect("positions always serialize");
                    let reference =
                        claim.record_value(&event.table().to_string(), event.op.code(), &at);
                    (reference, Some(claim.url))
                }
                _ => (value, None),
            };
            let headers = || record_headers(event, &position, claim.as_deref());
            if let Entry::Vacant(slot) = refused.entry(index) {
                let mut record = FutureRecord::to(&topic).payload(&value).headers(headers());
                if !key.is_empty() {
                    record = record.key(key.as_bytes());
                }
                match self.enqueue(kafka, record, &mut deliveries).await {
                    Ok(future) => {
                        deliveries.push(future, topic, Some(index));
                        continue;
                    }
                    // Refused before it left (larger than `message.max.bytes`): no transaction
                    // state is touched, so it goes to the dead-letter topic in this attempt.
                    Err(Failure::Refused) => {
                        slot.insert(deliveries.take_local_refusal(&topic));
                    }
                    Err(other) => return Err(other),
                }
            }
            if !self.created.contains(&*dead_letter_topic) {
                self.ensure_topics(kafka, &[dead_letter_topic.to_string()], false)
                    .await
                    .map_err(Failure::Other)?;
            }
            let refusal = &refused[&index];
            let letter = self.dead_letter_value(event, &key, &topic, refusal, &value);
            let headers = headers().insert(Header {
                key: HEADER_DEAD_LETTER_REASON,
                value: Some(refusal.reason.as_bytes()),
            });
            let mut record = FutureRecord::to(&dead_letter_topic)
                .payload(&letter)
                .headers(headers);
            if !key.is_empty() {
                record = record.key(key.as_bytes());
            }
            let future = match self.enqueue(kafka, record, &mut deliveries).await {
                Ok(future) => future,
                Err(Failure::Refused) => {
                    let refusal = deliveries.take_local_refusal(&dead_letter_topic);
                    return Err(Failure::Other(self.refused_error(refusal)));
                }
                Err(other) => return Err(other),
            };
            deliveries.push(future, dead_letter_topic.clone(), None);
        }
        let positions_topic: Arc<str> = self.config.positions_topic_for(&self.pipeline).into();
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
            match self.enqueue(kafka, record, &mut deliveries).await {
                Ok(future) => deliveries.push(future, positions_topic.clone(), None),
                Err(Failure::Refused) => {
                    let refusal = deliveries.take_local_refusal(&positions_topic);
                    return Err(Failure::Other(self.refused_error(refusal)));
                }
                Err(other) => return Err(other),
            }
        }
        Ok(deliveries)
    }

    /// The dead-letter record of `event`: why it was refused, where it was going, its position,
    /// and the refused value itself when it fits under the producer's size limit.
    fn dead_letter_value(
        &self,
        event: &ChangeEvent,
        key: &str,
        topic: &str,
        refusal: &Refusal,
        value: &[u8],
    ) -> Vec<u8> {
        let mut letter = serde_json::json!({
            "reason": refusal.reason,
            "code": format!("{:?}", refusal.code),
            "topic": topic,
            "source": &*event.source,
            "table": event.table().to_string(),
            "op": event.op.code(),
            "schemaVersion": event.schema.version,
            "position": serde_json::to_value(&event.position).expect("positions always serialize"),
            "key": key,
            "valueBytes": value.len(),
        });
        if value.len() + 2_048 <= self.config.max_value_bytes() {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(value) {
                letter["value"] = v;
            }
        } else {
            letter["valueOmitted"] = true.into();
        }
        serde_json::to_vec(&letter).expect("JSON values always serialize")
    }

    fn refused_error(&self, refusal: Refusal) -> RealtimeError {
        RealtimeError::Produce {
            brokers: self.config.brokers.clone(),
            topic: refusal.topic.to_string(),
            source: Box::new(KafkaError::MessageProduction(refusal.code)),
        }
    }

    /// Enqueues `record`; while librdkafka's queue is full, waits for the oldest in-flight
    /// delivery first. A record librdkafka refuses outright is [`Failure::Refused`], its reason
    /// kept in `deliveries` for [`Deliveries::take_local_refusal`].
    async fn enqueue<'a>(
        &self,
        kafka: &Kafka,
        mut record: FutureRecord<'a, [u8], Vec<u8>>,
        deliveries: &mut Deliveries,
    ) -> Result<DeliveryFuture, Failure> {
        loop {
            match kafka.producer.send_result(record) {
                Ok(future) => return Ok(future),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    if !deliveries.settle_oldest().await {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Err((KafkaError::MessageProduction(code), _)) if is_refusal(code) => {
                    deliveries.local_refusal = Some(code);
                    return Err(Failure::Refused);
                }
                Err((source, back)) => {
                    return Err(Failure::Other(RealtimeError::Produce {
                        brokers: self.config.brokers.clone(),
                        topic: back.topic.to_string(),
                        source: Box::new(source),
                    }));
                }
            }
        }
    }
}

/// The headers of an event's record: position, schema version, source, and the claim-check
/// URL when the value was stored aside.
fn record_headers(event: &ChangeEvent, position: &[u8], claim: Option<&str>) -> OwnedHeaders {
    let version = event.schema.version.to_string();
    let headers = OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: HEADER_POSITION,
            value: Some(position),
        })
        .insert(Header {
            key: HEADER_SCHEMA_VERSION,
            value: Some(version.as_bytes()),
        })
        .insert(Header {
            key: HEADER_SOURCE,
            value: Some(event.source.as_bytes()),
        });
    match claim {
        Some(url) => headers.insert(Header {
            key: HEADER_CLAIM_CHECK,
            value: Some(url.as_bytes()),
        }),
        None => headers,
    }
}

/// Header naming why a record is in the dead-letter topic.
pub const HEADER_DEAD_LETTER_REASON: &str = "syncmesh.dead-letter.reason";

/// Why an attempt at a transaction failed.
enum Failure {
    /// The brokers refused records (now in the `refused` map): abort and produce the batch
    /// again with those records sent to the dead-letter topic.
    Refused,
    /// Anything else: abort and retry after a backoff while the budget lasts.
    Other(RealtimeError),
    /// Kafka committed a transaction whose records were not all reported delivered: not
    /// retried, the path ends.
    Committed(RealtimeError),
}

/// Why the brokers (or librdkafka, before sending) refused one record.
#[derive(Debug, Clone)]
struct Refusal {
    code: RDKafkaErrorCode,
    reason: String,
    topic: Arc<str>,
}

/// Error codes that refuse one record for good, whatever the retry: the record itself (or
/// its topic) is wrong for these brokers. Everything else (timeouts, leaders moving, brokers
/// down) is retried.
fn is_refusal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::PolicyViolation
    )
}

/// Backoff for a failed transaction: waits doubling from 100 ms to 10 s until the budget is
/// spent.
struct Retry {
    deadline: Instant,
    wait: Duration,
    attempts: u32,
}

impl Retry {
    fn new(budget: Duration) -> Self {
        Self {
            deadline: Instant::now() + budget,
            wait: Duration::from_millis(100),
            attempts: 0,
        }
    }

    /// The wait before the next attempt, or `None` once the budget is spent.
    fn next_wait(&mut self) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        let wait = self.wait.min(left);
        self.wait = (self.wait * 2).min(Duration::from_secs(10));
        self.attempts += 1;
        Some(wait)
    }
}

/// What one attempt has in flight: a delivery future per record, with its topic and (for an
/// event) its index in the batch, and what came back so far.
struct Deliveries {
    brokers: String,
    inflight: VecDeque<(DeliveryFuture, Arc<str>, Option<usize>)>,
    refused: Vec<(usize, Refusal)>,
    error: Option<RealtimeError>,
    lost: Option<Arc<str>>,
    local_refusal: Option<RDKafkaErrorCode>,
}

impl Deliveries {
    fn new(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
            inflight: VecDeque::new(),
            refused: Vec::new(),
            error: None,
            lost: None,
            local_refusal: None,
        }
    }

    fn push(&mut self, future: DeliveryFuture, topic: Arc<str>, event: Option<usize>) {
        self.inflight.push_back((future, topic, event));
    }

    /// The refusal `enqueue` just reported for a record of `topic`.
    fn take_local_refusal(&mut self, topic: &Arc<str>) -> Refusal {
        let code = self
            .local_refusal
            .take()
            .unwrap_or(RDKafkaErrorCode::MessageSizeTooLarge);
        Refusal {
            code,
            reason: KafkaError::MessageProduction(code).to_string(),
            topic: topic.clone(),
        }
    }

    /// Waits for the oldest in-flight delivery and records its outcome; false when none is
    /// in flight.
    async fn settle_oldest(&mut self) -> bool {
        let Some((future, topic, event)) = self.inflight.pop_front() else {
            return false;
        };
        let outcome = future.await;
        self.record(outcome, topic, event);
        true
    }

    /// Records the outcomes already reported, without waiting; returns how many are not in
    /// yet. Once a commit call has returned, librdkafka has reported every record it flushed.
    fn settle_ready(&mut self) -> usize {
        let mut unsettled = 0;
        for (future, topic, event) in std::mem::take(&mut self.inflight) {
            match future.now_or_never() {
                Some(outcome) => self.record(outcome, topic, event),
                None => unsettled += 1,
            }
        }
        unsettled
    }

    fn record(
        &mut self,
        outcome: <DeliveryFuture as std::future::Future>::Output,
        topic: Arc<str>,
        event: Option<usize>,
    ) {
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err((KafkaError::MessageProduction(code), _)))
                if is_refusal(code)
                    && let Some(index) = event =>
            {
                let refusal = Refusal {
                    code,
                    reason: KafkaError::MessageProduction(code).to_string(),
                    topic,
                };
                self.refused.push((index, refusal));
            }
            Ok(Err((source, message))) => {
                if self.error.is_none() {
                    self.error = Some(RealtimeError::Produce {
                        brokers: self.brokers.clone(),
                        topic: message.topic().to_string(),
                        source: Box::new(source),
                    });
                }
            }
            Err(_) => {
                self.lost.get_or_insert(topic);
            }
        }
    }

    /// The records refused (by index in the batch) and the first other failure; a produce
    /// error wins over a lost delivery report.
    fn finish(self) -> (Vec<(usize, Refusal)>, Option<RealtimeError>) {
        let error = self.error.or_else(|| {
            self.lost.map(|topic| RealtimeError::DeliveryLost {
                brokers: self.brokers,
                topic: topic.to_string(),
            })
        });
        (self.refused, error)
    }
}

impl RealtimePath {
    /// Flushes, then takes what queued up meanwhile, flushing again while that fills a batch.
    /// Returns when the pending batch began.
    async fn flush_and_take(
        &mut self,
        kafka: &mut Kafka,
        pending: &mut Vec<Routed>,
        acks: &Acker,
        events: &mut mpsc::Receiver<Vec<Routed>>,
    ) -> Result<Option<Instant>, PathError> {
        loop {
            let started = Instant::now();
            self.watched_flush(kafka, pending, acks).await?;
            let oldest = self.take_queued(started, events, pending);
            if pending.len() < self.config.max_batch_events {
                return Ok(oldest);
            }
        }
    }

    /// After a flush that began at `started`: takes the batches that queued up meanwhile (up
    /// to a full batch). They have waited for that transaction already, so their linger counts
    /// from when it began, not from now; without this every event arriving during a commit
    /// would wait a commit plus a whole linger. Returns when the pending batch began.
    fn take_queued(
        &mut self,
        started: Instant,
        events: &mut mpsc::Receiver<Vec<Routed>>,
        pending: &mut Vec<Routed>,
    ) -> Option<Instant> {
        let mut oldest = None;
        while pending.len() < self.config.max_batch_events {
            let Ok(batch) = events.try_recv() else { break };
            oldest = Some(started);
            self.receive(batch, pending);
        }
        oldest
    }
}

#[async_trait::async_trait]
impl Path for RealtimePath {
    async fn run(
        mut self: Box<Self>,
        mut events: mpsc::Receiver<Vec<Routed>>,
        acks: Acker,
    ) -> Result<(), PathError> {
        let mut kafka = self.connect().await?;
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
                            oldest = self.flush_and_take(&mut kafka, &mut pending, &acks, &mut events).await?;
                        }
                    }
                    None => {
                        self.watched_flush(&mut kafka, &mut pending, &acks).await?;
                        return Ok(());
                    }
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    oldest = self.flush_and_take(&mut kafka, &mut pending, &acks, &mut events).await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_record_level_errors_are_refusals() {
        assert!(is_refusal(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(is_refusal(RDKafkaErrorCode::TopicAuthorizationFailed));
        assert!(is_refusal(RDKafkaErrorCode::PolicyViolation));
        assert!(!is_refusal(RDKafkaErrorCode::MessageTimedOut));
        assert!(!is_refusal(RDKafkaErrorCode::NotLeaderForPartition));
        assert!(!is_refusal(RDKafkaErrorCode::AllBrokersDown));
    }

    #[test]
    fn retry_waits_double_up_to_ten_seconds_and_stop_at_the_budget() {
        let mut r = Retry::new(Duration::from_secs(3600));
        let waits: Vec<u64> = (0..10)
            .filter_map(|_| r.next_wait())
            .map(|w| w.as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        let mut spent = Retry::new(Duration::ZERO);
        assert_eq!(spent.next_wait(), None);
    }
}
