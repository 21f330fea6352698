//! From a `SyncPipeline` manifest to a running pipeline: builds the sources, the decider, the
//! paths, the checkpoint store and the lineage emitter, runs them, and reports the run as
//! OpenLineage events (START, then COMPLETE, FAIL or ABORT).

use crate::checker::{
    CheckOutcome, CheckScheduler, CheckTrigger, CheckVerdict, scheduler_from_spec,
};
use crate::checkpoint::FileCheckpointStore;
use crate::deadletter::FileDeadLetters;
use crate::decider::{Decider, Fallback, PATHS, Routes, RuleError, RuleSet, path_index};
use crate::event::TableId;
use crate::lineage::{
    FileEmitter, HttpEmitter, InputDataset, LineageEmitter, LineageError, NoopEmitter,
    OutputDataset, ProcessingType, RunEvents, new_run_id,
};
use crate::metrics::Metrics;
use crate::paths::batch::{
    BatchMetrics, BatchPath, RetryPolicy, ShadowOptions, SinkApplier, SnapshotFormat,
    SnapshotWriter, TableApplier,
};
use crate::paths::realtime::{
    ClaimCheck, KafkaFormat, RealtimeConfig, RealtimeError, RealtimePath,
};
use crate::paths::store::{StoreError, open_store};
use crate::runtime::{
    Path as PipelinePath, RunCounters, RunSummary, Runtime, RuntimeError, Source, StopSignal,
};
use crate::sinks::breaker::{Breaker, BreakerConfig, BreakerMetrics, Breakers, SystemClock};
use crate::sinks::table::{
    TableName, TableSinkError, TableSinkOptions, TableSinkUrl, TableWriter, with_password_env,
};
use crate::sources::flatfile::{FlatFileError, FlatFileSource};
use crate::sources::tidb::metrics::TidbMetrics;
use crate::sources::tidb::{ChangefeedSource, TidbError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use syncmesh_crds::{PathName, SyncPipeline};
use tokio::sync::{broadcast, watch};

/// How the pipeline is hosted.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Relative paths in the manifest are resolved against this directory.
    pub base_dir: PathBuf,
    /// Checkpoint and default dead-letter file live here.
    pub state_dir: PathBuf,
    /// Keep polling sources for new data until stopped.
    pub follow: Option<Duration>,
    /// Capacity (in batches of up to 512 events) of each channel.
    pub channel_capacity: usize,
    /// How often committed positions are persisted while running.
    pub checkpoint_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    FlatFile(#[from] FlatFileError),
    #[error(transparent)]
    Tidb(#[from] TidbError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error("spec.batch.url: {0}")]
    Store(#[from] StoreError),
    #[error("spec.realtime: {0}")]
    Realtime(#[from] RealtimeError),
    #[error("spec.sink.url: {0}")]
    Sink(#[from] TableSinkError),
    #[error("spec.lineage: {0}")]
    Lineage(#[from] LineageError),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

/// A pipeline built and ready to run.
pub struct Pipeline {
    runtime: Runtime,
    lineage: Arc<dyn LineageEmitter>,
    run_events: RunEvents,
    inputs: Vec<InputDataset>,
    outputs: Vec<(TableId, OutputDataset)>,
    metrics: Arc<Metrics>,
    name: String,
    breakers: Option<Arc<Breakers>>,
    checks: Option<CheckScheduler>,
    routes: Arc<Routes>,
}

/// Resolves a manifest path against the manifest's directory.
fn resolve(base: &Path, p: &str) -> PathBuf {
    base.join(p)
}

/// `sqlite://relative/path` is relative to the manifest's directory, like every other path.
fn resolve_sqlite(url: &str, base: &Path) -> String {
    match url.strip_prefix("sqlite://") {
        Some(rest) if !rest.starts_with('/') && !rest.starts_with(":memory:") => {
            let path = base.join(rest);
            let path = std::path::absolute(&path).unwrap_or(path);
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            format!("sqlite://{}", path.display())
        }
        _ => url.to_string(),
    }
}

fn realtime_config(rt: &syncmesh_crds::RealtimeSpec) -> RealtimeConfig {
    let mut config = RealtimeConfig::new(rt.brokers.clone());
    if let Some(t) = &rt.topic_template {
        config.topic_template = t.clone();
    }
    if let Some(t) = &rt.transactional_id {
        config.transactional_id = t.clone();
    }
    if let Some(t) = &rt.positions_topic {
        config.positions_topic = t.clone();
    }
    config.max_batch_events = usize::try_from(rt.max_batch_events).unwrap_or(usize::MAX);
    config.linger = Duration::from_millis(rt.linger_ms);
    config.format = match rt.format {
        syncmesh_crds::KafkaFormatName::DebeziumJson => KafkaFormat::DebeziumJson,
        syncmesh_crds::KafkaFormatName::CanalJson => KafkaFormat::CanalJson,
    };
    config.partitions = rt.partitions;
    config.replication_factor = rt.replication_factor;
    config.operation_timeout = Duration::from_secs(rt.operation_timeout_seconds);
    config.properties = rt.properties.clone();
    config.degraded_after = Duration::from_millis(rt.degraded_after_ms);
    if let Some(t) = &rt.dead_letter_topic {
        config.dead_letter_topic = t.clone();
    }
    config.retry_for = Duration::from_secs(rt.retry_for_seconds);
    config
}

impl Pipeline {
    /// Builds every part; opens files, stores and connections, reads no data.
    pub async fn build(
        manifest: &SyncPipeline,
        options: &PipelineOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BuildError> {
        let name = manifest.metadata.name.clone().unwrap_or_default();
        let spec = &manifest.spec;
        let base = &options.base_dir;

        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        let mut inputs = Vec::new();
        let mut tables = Vec::new();
        let mut tidb_metrics = None;
        let mut oracle_metrics = None;
        for (i, s) in spec.sources.iter().enumerate() {
            let at = format!("spec.sources[{i}]");
            if s.kinds().len() != 1 {
                return Err(BuildError::Invalid {
                    field: at,
                    reason: format!(
                        "set exactly one source kind ({})",
                        syncmesh_crds::SOURCE_KINDS
                    ),
                });
            }
            if let Some(tidb) = &s.tidb {
                let m = match &tidb_metrics {
                    Some(m) => Clone::clone(m),
                    None => {
                        let m = TidbMetrics::register(&metrics.registry)?;
                        tidb_metrics = Some(m.clone());
                        m
                    }
                };
                let source = ChangefeedSource::new(&name, &s.name, tidb, &at)?.with_metrics(m);
                for topic in &tidb.topics {
                    inputs.push(InputDataset::new(
                        format!("kafka://{}", tidb.brokers.split(',').next().unwrap_or("")),
                        topic.clone(),
                    ));
                }
                sources.push(Box::new(source));
                continue;
            }
            if let Some(ora) = &s.oracle {
                let m = match &oracle_metrics {
                    Some(m) => Clone::clone(m),
                    None => {
                        let m = crate::sources::oracle::metrics::OracleMetrics::register(
                            &metrics.registry,
                        )
                        .map_err(|e| BuildError::Invalid {
                            field: at.clone(),
                            reason: e.to_string(),
                        })?;
                        oracle_metrics = Some(m.clone());
                        m
                    }
                };
                let source = crate::sources::oracle::build_source(&name, &s.name, ora, &at)
                    .map_err(|e| BuildError::Invalid {
                        field: e.field,
                        reason: e.reason,
                    })?
                    .with_metrics(m);
                inputs.push(InputDataset::new(ora.url.clone(), s.name.clone()));
                sources.push(Box::new(source));
                continue;
            }
            let Some(ff) = &s.flat_file else {
                continue;
            };
            let mut source = FlatFileSource::new(&s.name, ff, base, &at)?;
            if let Some(interval) = options.follow {
                source = source.follow(interval);
            }
            inputs.push(source.input_dataset());
            tables.push(source.schema().clone());
            sources.push(Box::new(source));
        }

        let decisions = metrics.decisions.clone();
        let rules = RuleSet::compile(&spec.routes, &spec.default_route, |route| {
            decisions.with_label_values(&[&name, route])
        })?;

        let mut outputs = Vec::new();
        let mut writer = None;
        let mut breakers = None;
        if let Some(sink) = &spec.sink {
            let config = BreakerConfig::from(&sink.breaker);
            config.validate().map_err(|e| BuildError::Invalid {
                field: format!("spec.sink.breaker.{}", e.field),
                reason: e.reason,
            })?;
            breakers = Some(Arc::new(Breakers::new(
                config,
                Arc::new(SystemClock),
                Some(BreakerMetrics::from_metrics(&name, &metrics)),
            )));
            let url = with_password_env(
                &resolve_sqlite(&sink.url, base),
                sink.password_env.as_deref(),
            )
            .map_err(|reason| BuildError::Invalid {
                field: "spec.sink.passwordEnv".into(),
                reason,
            })?;
            let mut opts = TableSinkOptions {
                create_tables: sink.create_tables,
                ..Default::default()
            };
            for (source_table, target) in &sink.tables {
                opts.tables
                    .insert(TableId::parse(source_table), TableName::new(target.clone()));
            }
            let w = TableWriter::connect(&url, opts).await?;
            let namespace = TableSinkUrl::parse(&url)?.redacted();
            for schema in &tables {
                let target = w.target_for(&schema.table);
                outputs.push((
                    schema.table.clone(),
                    OutputDataset::new(namespace.clone(), target.table.clone()).with_schema(schema),
                ));
            }
            writer = Some(Arc::new(w));
        }

        let mut paths: Vec<Option<Box<dyn PipelinePath>>> = PATHS.iter().map(|_| None).collect();
        if let Some(batch) = &spec.batch {
            let store = open_store(&batch.url, base, batch.s3.as_ref())?;
            for schema in &tables {
                outputs.push((
                    schema.table.clone(),
                    OutputDataset::new(store.url.clone(), schema.table.to_string())
                        .with_schema(schema),
                ));
            }
            let format = match batch.format {
                syncmesh_crds::SnapshotFormatName::Parquet => SnapshotFormat::Parquet,
                syncmesh_crds::SnapshotFormatName::Jsonl => SnapshotFormat::Jsonl,
            };
            let full_schedule = if batch.full_snapshot.enabled {
                let cron = batch
                    .full_snapshot
                    .cron()
                    .map_err(|reason| BuildError::Invalid {
                        field: "spec.batch.fullSnapshot.schedule".into(),
                        reason,
                    })?;
                Some(cron)
            } else {
                None
            };
            paths[path_index(PathName::Batch)] = Some(Box::new(BatchPath {
                pipeline: name.clone(),
                writer: SnapshotWriter::new(store).with_format(format).with_retry(
                    RetryPolicy::new(Duration::from_secs(batch.retry_timeout_seconds)),
                ),
                applier: writer
                    .clone()
                    .zip(breakers.clone())
                    .map(|(writer, breakers)| {
                        let shadow = spec.sink.as_ref().map(|s| &s.shadow);
                        Box::new(SinkApplier::new(
                            writer,
                            name.clone(),
                            metrics.clone(),
                            breakers,
                            ShadowOptions {
                                seed: shadow.is_none_or(|s| s.seed),
                                promote: shadow.is_some_and(|s| s.promote),
                                ..ShadowOptions::default()
                            },
                        )) as Box<dyn TableApplier>
                    }),
                max_events: usize::try_from(batch.max_events).unwrap_or(usize::MAX),
                max_bytes: usize::try_from(batch.max_bytes).unwrap_or(usize::MAX),
                max_age: Duration::from_secs(batch.max_age_seconds),
                full_schedule,
                metrics: metrics.clone(),
                batch_metrics: BatchMetrics::register(&metrics.registry)?,
            }));
        }

        let mut fallback = None;
        if let Some(rt) = &spec.realtime {
            let config = realtime_config(rt);
            let namespace = format!(
                "kafka://{}",
                rt.brokers.split(',').next().unwrap_or_default().trim()
            );
            for schema in &tables {
                outputs.push((
                    schema.table.clone(),
                    OutputDataset::new(namespace.clone(), config.topic_for(&name, &schema.table))
                        .with_schema(schema),
                ));
            }
            let claims = &rt.claim_check;
            let claim_store = match (&claims.url, &spec.batch) {
                (Some(url), _) => open_store(url, base, claims.s3.as_ref())?,
                (None, Some(batch)) => open_store(&batch.url, base, batch.s3.as_ref())?,
                (None, None) => open_store(
                    &options.state_dir.join("claim-checks").display().to_string(),
                    base,
                    None,
                )?,
            };
            let path =
                RealtimePath::new(name.clone(), config, &metrics)?.with_claim_check(ClaimCheck {
                    store: claim_store,
                    max_record_bytes: usize::try_from(claims.max_record_bytes)
                        .unwrap_or(usize::MAX),
                });
            if rt.fallback == syncmesh_crds::FallbackPolicy::Batch {
                fallback = Some(Fallback {
                    realtime: path.health(),
                    diverted: metrics.route_fallbacks.with_label_values(&[&name]),
                });
            }
            paths[path_index(PathName::Realtime)] = Some(Box::new(path));
        }

        let dead_letter_path = match &spec.dead_letter {
            Some(d) => resolve(base, &d.file),
            None => options.state_dir.join("dead-letters.jsonl"),
        };
        let lineage: Arc<dyn LineageEmitter> = match &spec.lineage {
            Some(l) if l.file.is_some() => Arc::new(
                FileEmitter::open(resolve(base, l.file.as_deref().unwrap_or_default())).await?,
            ),
            Some(l) if l.http.is_some() => {
                Arc::new(HttpEmitter::new(l.http.as_deref().unwrap_or_default())?)
            }
            _ => Arc::new(NoopEmitter),
        };
        let namespace = spec
            .lineage
            .as_ref()
            .map_or("syncmesh".to_string(), |l| l.namespace.clone());
        let checks = scheduler_from_spec(
            &name,
            spec,
            base,
            &metrics.registry,
            lineage.clone(),
            &namespace,
        )
        .map_err(|(field, reason)| BuildError::Invalid { field, reason })?;
        let run_events = RunEvents::new(namespace, name.clone(), new_run_id())
            .with_processing_type(if options.follow.is_some() {
                ProcessingType::Streaming
            } else {
                ProcessingType::Batch
            });

        let decider = Arc::new(match fallback {
            Some(f) => Decider::new(rules).with_fallback(f),
            None => Decider::new(rules),
        });
        let routes = Arc::new(Routes::new(
            decider.clone(),
            name.clone(),
            metrics.decisions.clone(),
            metrics.route_reloads.clone(),
            spec.clone(),
        ));
        let runtime = Runtime {
            pipeline: name.clone(),
            sources,
            decider,
            paths,
            checkpoint: Box::new(FileCheckpointStore::new(
                options.state_dir.join("checkpoint"),
                name.clone(),
            )),
            dead_letters: Box::new(FileDeadLetters::new(dead_letter_path)),
            metrics: metrics.clone(),
            counters: Arc::new(RunCounters::default()),
            channel_capacity: options.channel_capacity,
            checkpoint_interval: options.checkpoint_interval,
        };
        Ok(Self {
            runtime,
            lineage,
            run_events,
            inputs,
            outputs,
            metrics,
            name,
            breakers,
            checks,
            routes,
        })
    }

    /// The pipeline's routes, to change them while it runs.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.clone()
    }

    /// Asks for the consistency checks of `spec.check` to run now (`None` without one). Take
    /// it before [`Pipeline::run`].
    pub fn check_trigger(&self) -> Option<CheckTrigger> {
        self.checks.as_ref().map(CheckScheduler::trigger)
    }

    /// Every consistency check's outcome per table, passed or failed with counts (`None`
    /// without `spec.check`). Subscribe before [`Pipeline::run`].
    pub fn check_outcomes(&self) -> Option<broadcast::Receiver<CheckOutcome>> {
        self.checks.as_ref().map(CheckScheduler::subscribe)
    }

    /// The sink tables' breakers (with a sink): for status (`Breakers::statuses`) and for the
    /// consistency checker (`Breaker::record_check`).
    pub fn breakers(&self) -> Option<Arc<Breakers>> {
        self.breakers.clone()
    }

    /// Live counters of the run, for progress displays.
    pub fn counters(&self) -> Arc<RunCounters> {
        self.runtime.counters.clone()
    }

    /// Runs to the end (or until `stop`), emitting lineage START and COMPLETE, ABORT or FAIL.
    pub async fn run(
        mut self,
        stop_tx: watch::Sender<bool>,
        stop: StopSignal,
    ) -> Result<RunSummary, RuntimeError> {
        let outputs: Vec<OutputDataset> = self.outputs.iter().map(|(_, o)| o.clone()).collect();
        let start = self.run_events.start(self.inputs.clone(), outputs);
        emit(&*self.lineage, &start).await;
        let stopped = stop.clone();
        // Scheduled and on-demand checks run alongside, until the run ends.
        let verdicts = match (self.check_outcomes(), self.breakers.clone()) {
            (Some(outcomes), Some(breakers)) => {
                Some(tokio::spawn(feed_breakers(outcomes, breakers)))
            }
            _ => None,
        };
        let checks = self
            .checks
            .take()
            .map(|c| tokio::spawn(c.run(stop.clone())));
        let result = self.runtime.run(stop_tx, stop).await;
        for task in checks.into_iter().chain(verdicts) {
            task.abort();
        }
        let event = match &result {
            Ok(_) if stopped.is_stopped() => self.run_events.abort(),
            Ok(_) => {
                let with_stats = self
                    .outputs
                    .iter()
                    .map(|(table, o)| {
                        let rows = self
                            .metrics
                            .snapshot_rows
                            .with_label_values(&[&self.name, &table.to_string()])
                            .get();
                        o.clone().with_statistics(rows, None)
                    })
                    .collect();
                self.run_events.complete(with_stats)
            }
            Err(e) => self.run_events.fail(e.to_string()),
        };
        emit(&*self.lineage, &event).await;
        result
    }
}

/// Hands every check verdict to its sink table's breaker, so consecutive failed checks trip
/// it (`spec.sink.breaker`, 3 by default). A check that could not run is no verdict on the
/// data and is not counted.
async fn feed_breakers(mut outcomes: broadcast::Receiver<CheckOutcome>, breakers: Arc<Breakers>) {
    loop {
        let outcome = match outcomes.recv().await {
            Ok(o) => o,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "check outcomes dropped before reaching the breakers"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let passed = match outcome.verdict {
            CheckVerdict::Passed => true,
            CheckVerdict::Failed { .. } => false,
            CheckVerdict::Error { .. } => continue,
        };
        let breaker = breaker_for(&breakers, &outcome.sink_table);
        tracing::info!(table = %outcome.sink_table, passed, "check verdict to the breaker");
        breaker.record_check(passed);
    }
}

/// The breaker of a sink table named as the checker names it (`table` or `schema.table`);
/// created if no batch has reached the table yet.
fn breaker_for(breakers: &Breakers, sink_table: &str) -> Arc<Breaker> {
    let bare = sink_table.rsplit('.').next().unwrap_or(sink_table);
    let found = breakers.get(sink_table).or_else(|| {
        breakers
            .statuses()
            .into_iter()
            .find(|s| s.table.rsplit('.').next() == Some(bare))
            .and_then(|s| breakers.get(&s.table))
    });
    found.unwrap_or_else(|| breakers.get_or_create(sink_table, &format!("{sink_table}_shadow")))
}

async fn emit(lineage: &dyn LineageEmitter, event: &crate::lineage::RunEvent) {
    // Lineage is reporting, not data: a failure to emit is logged, not fatal.
    if let Err(e) = lineage.emit(event).await {
        tracing::warn!(error = %e, "could not emit a lineage event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::breaker::{BreakerState, ManualClock};

    fn outcome(sink_table: &str, verdict: CheckVerdict) -> CheckOutcome {
        CheckOutcome {
            pipeline: "p".into(),
            table: "bank.ledger".into(),
            sink_table: sink_table.into(),
            verdict,
            source_rows: 10,
            sink_rows: 9,
            finished_at: chrono::Utc::now(),
            duration: Duration::from_millis(5),
            report: None,
        }
    }

    fn failed() -> CheckVerdict {
        CheckVerdict::Failed {
            missing: 1,
            extra: 0,
            different: 0,
            diff_ratio: 0.1,
        }
    }

    #[tokio::test]
    async fn three_failed_checks_in_a_row_trip_the_breaker() {
        let breakers = Arc::new(Breakers::new(
            BreakerConfig::default(),
            Arc::new(ManualClock::default()),
            None,
        ));
        let ledger = breakers.get_or_create("sink.ledger", "sink.ledger_shadow");
        let (tx, rx) = broadcast::channel(16);
        let task = tokio::spawn(feed_breakers(rx, breakers.clone()));
        let error = CheckVerdict::Error {
            message: "database unreachable".into(),
        };
        // The checker names the table without its schema; errors are no verdict; a pass resets.
        for v in [
            failed(),
            failed(),
            CheckVerdict::Passed,
            failed(),
            error,
            failed(),
        ] {
            tx.send(outcome("ledger", v)).unwrap();
        }
        drop(tx);
        task.await.unwrap();
        assert_eq!(
            ledger.state(),
            BreakerState::Closed,
            "only two failures in a row"
        );

        let (tx, rx) = broadcast::channel(16);
        let task = tokio::spawn(feed_breakers(rx, breakers.clone()));
        tx.send(outcome("ledger", failed())).unwrap();
        drop(tx);
        task.await.unwrap();
        assert_eq!(
            ledger.state(),
            BreakerState::Open,
            "the third failure in a row"
        );
    }
}
