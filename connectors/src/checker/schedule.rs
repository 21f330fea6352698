//! Checks of a pipeline's tables on a cron schedule and on demand.
//!
//! A [`CheckScheduler`] owns the tables to check and runs them all when its cron schedule
//! fires (UTC) or when a [`CheckTrigger`] asks. Each table's result becomes:
//! - a [`CheckOutcome`] on a broadcast channel ([`CheckScheduler::subscribe`]), passed or failed
//!   with its counts, so a consumer can act on consecutive failures (the circuit breaker);
//! - metrics: `syncmesh_check_duration_seconds`, `syncmesh_check_rows_compared_total`,
//!   `syncmesh_check_mismatched_rows`, `syncmesh_check_diff_ratio`, `syncmesh_check_last_result`
//!   (1 passed, 0 failed, -1 could not run) and `syncmesh_check_last_run_timestamp_seconds`;
//! - an OpenLineage run of the job `<pipeline>.check` (START, then COMPLETE or FAIL) whose
//!   inputs are the source and sink tables with `dataQualityMetrics` (row counts) and, on the
//!   sink, `dataQualityAssertions` (row count, row hashes, differing rows).

use super::compare::check_table;
use super::report::CheckReport;
use super::{CheckError, CheckOptions};
use crate::lineage::{
    Assertion, DataQualityAssertionsDatasetFacet, DataQualityMetricsInputDatasetFacet,
    InputDataset, LineageEmitter, ProcessingType, RunEvents, new_run_id,
};
use crate::runtime::StopSignal;
use crate::sinks::table::{TableName, with_password_env};
use chrono::{DateTime, Utc};
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// One table a pipeline checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledTable {
    /// The source table as the pipeline names it (`schema.table`).
    pub name: String,
    pub source_url: String,
    pub source_table: TableName,
    pub sink_url: String,
    pub sink_table: TableName,
}

/// How one table's check ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum CheckVerdict {
    Passed,
    Failed {
        missing: u64,
        extra: u64,
        different: u64,
        diff_ratio: f64,
    },
    /// The check could not run (a database unreachable, a table missing).
    Error {
        message: String,
    },
}

/// The result of one table's check, as consumers of [`CheckScheduler::subscribe`] see it.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub pipeline: String,
    pub table: String,
    pub sink_table: String,
    pub verdict: CheckVerdict,
    pub source_rows: u64,
    pub sink_rows: u64,
    pub finished_at: DateTime<Utc>,
    pub duration: Duration,
    /// The full report, when the check ran.
    pub report: Option<Arc<CheckReport>>,
}

impl CheckOutcome {
    pub fn passed(&self) -> bool {
        self.verdict == CheckVerdict::Passed
    }

    fn from_result(
        pipeline: &str,
        table: &ScheduledTable,
        started: Instant,
        result: Result<CheckReport, CheckError>,
    ) -> Self {
        let (verdict, source_rows, sink_rows, report) = match result {
            Ok(r) => {
                let verdict = if r.equal {
                    CheckVerdict::Passed
                } else {
                    CheckVerdict::Failed {
                        missing: r.missing.len() as u64,
                        extra: r.extra.len() as u64,
                        different: r.different.len() as u64,
                        diff_ratio: r.diff_ratio,
                    }
                };
                (verdict, r.source.rows, r.sink.rows, Some(Arc::new(r)))
            }
            Err(e) => (
                CheckVerdict::Error {
                    message: e.to_string(),
                },
                0,
                0,
                None,
            ),
        };
        Self {
            pipeline: pipeline.to_string(),
            table: table.name.clone(),
            sink_table: table.sink_table.to_string(),
            verdict,
            source_rows,
            sink_rows,
            finished_at: Utc::now(),
            duration: started.elapsed(),
            report,
        }
    }
}

/// The checker's metrics, registered in the pipeline's registry.
pub struct CheckMetrics {
    duration: HistogramVec,
    rows: IntCounterVec,
    mismatched_rows: IntGaugeVec,
    diff_ratio: GaugeVec,
    last_result: IntGaugeVec,
    last_run: GaugeVec,
}

impl CheckMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let labels = &["pipeline", "table"];
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "syncmesh_check_duration_seconds",
                "Time to check a table against its source",
            )
            .buckets(vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]),
            labels,
        )?;
        let rows = IntCounterVec::new(
            Opts::new(
                "syncmesh_check_rows_compared_total",
                "Rows compared by consistency checks, per side",
            ),
            &["pipeline", "table", "side"],
        )?;
        let mismatched_rows = IntGaugeVec::new(
            Opts::new(
                "syncmesh_check_mismatched_rows",
                "Differing rows found by the last check",
            ),
            labels,
        )?;
        let diff_ratio = GaugeVec::new(
            Opts::new(
                "syncmesh_check_diff_ratio",
                "Differing rows over rows, in the last check",
            ),
            labels,
        )?;
        let last_result = IntGaugeVec::new(
            Opts::new(
                "syncmesh_check_last_result",
                "The last check of the table: 1 passed, 0 found differences, -1 could not run",
            ),
            labels,
        )?;
        let last_run = GaugeVec::new(
            Opts::new(
                "syncmesh_check_last_run_timestamp_seconds",
                "When the last check of the table ended",
            ),
            labels,
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(rows.clone()))?;
        registry.register(Box::new(mismatched_rows.clone()))?;
        registry.register(Box::new(diff_ratio.clone()))?;
        registry.register(Box::new(last_result.clone()))?;
        registry.register(Box::new(last_run.clone()))?;
        Ok(Self {
            duration,
            rows,
            mismatched_rows,
            diff_ratio,
            last_result,
            last_run,
        })
    }

    fn record(&self, o: &CheckOutcome) {
        let l = [o.pipeline.as_str(), o.table.as_str()];
        self.duration
            .with_label_values(&l)
            .observe(o.duration.as_secs_f64());
        self.last_run
            .with_label_values(&l)
            .set(o.finished_at.timestamp_millis() as f64 / 1000.0);
        let (result, mismatched, ratio) = match &o.verdict {
            CheckVerdict::Passed => (1, 0, 0.0),
            CheckVerdict::Failed {
                missing,
                extra,
                different,
                diff_ratio,
            } => (0, missing + extra + different, *diff_ratio),
            CheckVerdict::Error { .. } => (-1, 0, 0.0),
        };
        self.last_result.with_label_values(&l).set(result);
        if result >= 0 {
            self.mismatched_rows
                .with_label_values(&l)
                .set(i64::try_from(mismatched).unwrap_or(i64::MAX));
            self.diff_ratio.with_label_values(&l).set(ratio);
            for (side, rows) in [("source", o.source_rows), ("sink", o.sink_rows)] {
                self.rows
                    .with_label_values(&[l[0], l[1], side])
                    .inc_by(rows);
            }
        }
    }
}

/// Asks a scheduler to check every table now (on demand).
#[derive(Debug, Clone)]
pub struct CheckTrigger(mpsc::Sender<()>);

impl CheckTrigger {
    /// Requests a run; false when the scheduler is gone. A request made while one is pending
    /// is merged with it.
    pub fn request(&self) -> bool {
        match self.0.try_send(()) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(())) => true,
            Err(mpsc::error::TrySendError::Closed(())) => false,
        }
    }
}

/// Runs a pipeline's checks on its schedule and on demand.
pub struct CheckScheduler {
    pipeline: String,
    cron: Option<croner::Cron>,
    tables: Vec<ScheduledTable>,
    options: CheckOptions,
    metrics: CheckMetrics,
    lineage: Arc<dyn LineageEmitter>,
    lineage_namespace: String,
    outcomes: broadcast::Sender<CheckOutcome>,
    trigger_tx: mpsc::Sender<()>,
    trigger_rx: mpsc::Receiver<()>,
}

impl CheckScheduler {
    /// `cron` `None` runs only on demand. Registers the metrics in `registry`.
    pub fn new(
        pipeline: impl Into<String>,
        cron: Option<croner::Cron>,
        tables: Vec<ScheduledTable>,
        options: CheckOptions,
        registry: &Registry,
        lineage: Arc<dyn LineageEmitter>,
        lineage_namespace: impl Into<String>,
    ) -> Result<Self, CheckError> {
        options.validate()?;
        let metrics = CheckMetrics::register(registry)
            .map_err(|e| CheckError::Invalid(format!("check metrics: {e}")))?;
        let (outcomes, _) = broadcast::channel(64);
        let (trigger_tx, trigger_rx) = mpsc::channel(1);
        Ok(Self {
            pipeline: pipeline.into(),
            cron,
            tables,
            options,
            metrics,
            lineage,
            lineage_namespace: lineage_namespace.into(),
            outcomes,
            trigger_tx,
            trigger_rx,
        })
    }

    /// A handle that asks for a check now.
    pub fn trigger(&self) -> CheckTrigger {
        CheckTrigger(self.trigger_tx.clone())
    }

    /// Every outcome from now on (a receiver that lags loses the oldest, see `broadcast`).
    pub fn subscribe(&self) -> broadcast::Receiver<CheckOutcome> {
        self.outcomes.subscribe()
    }

    /// The next time the schedule fires after `now`.
    pub fn next_run(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.as_ref()?.find_next_occurrence(&now, false).ok()
    }

    /// Checks every table once, in order; records, reports and publishes each outcome.
    pub async fn run_once(&self) -> Vec<CheckOutcome> {
        let mut all = Vec::with_capacity(self.tables.len());
        for table in &self.tables {
            let mut run = RunEvents::new(
                self.lineage_namespace.clone(),
                format!("{}.check", self.pipeline),
                new_run_id(),
            )
            .with_processing_type(ProcessingType::Batch);
            let start = run.start(datasets(table, None), Vec::new());
            emit(&*self.lineage, &start).await;

            let started = Instant::now();
            let result = check_table(
                &table.source_url,
                &table.source_table,
                &table.sink_url,
                &table.sink_table,
                &self.options,
                &|_| {},
            )
            .await;
            let outcome = CheckOutcome::from_result(&self.pipeline, table, started, result);
            self.metrics.record(&outcome);
            let end = match &outcome.verdict {
                CheckVerdict::Error { message } => run.fail(message.clone()),
                _ => {
                    let mut e = run.complete(Vec::new());
                    e.inputs = datasets(table, Some(&outcome));
                    e
                }
            };
            emit(&*self.lineage, &end).await;
            match &outcome.verdict {
                CheckVerdict::Passed => {
                    tracing::info!(pipeline = %self.pipeline, table = %table.name, rows = outcome.source_rows, "consistency check passed")
                }
                v => {
                    tracing::warn!(pipeline = %self.pipeline, table = %table.name, verdict = ?v, "consistency check did not pass")
                }
            }
            let _ = self.outcomes.send(outcome.clone());
            all.push(outcome);
        }
        all
    }

    /// Runs until `stop`: at every scheduled time and whenever triggered.
    pub async fn run(mut self, mut stop: StopSignal) {
        loop {
            let wait = match self.next_run(Utc::now()) {
                Some(at) => (at - Utc::now()).to_std().unwrap_or_default(),
                // Only on demand: wake up rarely, to re-check the stop flag.
                None => Duration::from_secs(3600),
            };
            let scheduled = self.cron.is_some();
            tokio::select! {
                _ = stop.stopped() => return,
                request = self.trigger_rx.recv() => {
                    if request.is_none() {
                        return;
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    if !scheduled {
                        continue;
                    }
                }
            }
            if stop.is_stopped() {
                return;
            }
            self.run_once().await;
        }
    }
}

/// The tables a pipeline's `spec.check` names: `tables`, or else the pipeline's own tables
/// (flat-file tables and TiDB table names that are not globs), each compared between
/// `sourceUrl` and its table in `spec.sink` (named as the sink writer names it). Relative
/// `sqlite://` paths are resolved against `base_dir`. Errors name the field.
pub fn tables_from_spec(
    spec: &syncmesh_crds::SyncPipelineSpec,
    base_dir: &std::path::Path,
) -> Result<Vec<ScheduledTable>, (String, String)> {
    use crate::event::TableId;
    use crate::sinks::table::TableSinkOptions;
    let check = spec.check.as_ref().ok_or_else(|| {
        (
            "spec.check".to_string(),
            "the pipeline has no `check` section naming the source database (sourceUrl)"
                .to_string(),
        )
    })?;
    let sink = spec.sink.as_ref().ok_or_else(|| {
        (
            "spec.sink".to_string(),
            "the pipeline has no sink to check".to_string(),
        )
    })?;
    let mut names = check.tables.clone();
    if names.is_empty() {
        for source in &spec.sources {
            if let Some(ff) = &source.flat_file {
                names.push(ff.table.clone());
            }
            if let Some(tidb) = &source.tidb {
                names.extend(
                    tidb.tables
                        .iter()
                        .filter(|t| !t.contains(['*', '?', '[']))
                        .cloned(),
                );
            }
        }
    }
    if names.is_empty() {
        return Err((
            "spec.check.tables".to_string(),
            "name the tables to check (`schema.table`)".to_string(),
        ));
    }
    let mut naming = TableSinkOptions::default();
    for (source_table, target) in &sink.tables {
        naming
            .tables
            .insert(TableId::parse(source_table), TableName::new(target.clone()));
    }
    let source_url = with_password_env(
        &resolve_sqlite(&check.source_url, base_dir),
        check.source_password_env.as_deref(),
    )
    .map_err(|reason| ("spec.check.sourcePasswordEnv".to_string(), reason))?;
    let sink_url = with_password_env(
        &resolve_sqlite(&sink.url, base_dir),
        sink.password_env.as_deref(),
    )
    .map_err(|reason| ("spec.sink.passwordEnv".to_string(), reason))?;
    Ok(names
        .iter()
        .map(|name| {
            let id = TableId::parse(name);
            ScheduledTable {
                name: name.clone(),
                // A SQLite file has no schemas: the table is looked up by its name alone.
                source_table: if source_url.starts_with("sqlite:") {
                    TableName::new(id.table.clone())
                } else {
                    TableName::with_schema(id.schema.clone(), id.table.clone())
                },
                sink_table: naming.target_for(&id),
                source_url: source_url.clone(),
                sink_url: sink_url.clone(),
            }
        })
        .collect())
}

/// `sqlite://relative/path` is relative to the manifest's directory, as everywhere else.
fn resolve_sqlite(url: &str, base: &std::path::Path) -> String {
    match url.strip_prefix("sqlite://") {
        Some(rest) if !rest.starts_with('/') && !rest.starts_with(":memory:") => {
            let p = base.join(rest);
            format!(
                "sqlite://{}",
                std::path::absolute(&p).unwrap_or(p).display()
            )
        }
        _ => url.to_string(),
    }
}

/// A scheduler for `spec.check` (with its cron schedule), or the field and reason it cannot
/// be built.
pub fn scheduler_from_spec(
    pipeline: &str,
    spec: &syncmesh_crds::SyncPipelineSpec,
    base_dir: &std::path::Path,
    registry: &Registry,
    lineage: Arc<dyn LineageEmitter>,
    lineage_namespace: &str,
) -> Result<Option<CheckScheduler>, (String, String)> {
    let Some(check) = &spec.check else {
        return Ok(None);
    };
    let cron = check
        .cron()
        .map_err(|e| ("spec.check.schedule".to_string(), e))?;
    let tables = tables_from_spec(spec, base_dir)?;
    let options = CheckOptions {
        chunk_size: check.chunk_size,
        ..CheckOptions::default()
    };
    CheckScheduler::new(
        pipeline,
        Some(cron),
        tables,
        options,
        registry,
        lineage,
        lineage_namespace,
    )
    .map(Some)
    .map_err(|e| ("spec.check".to_string(), e.to_string()))
}

/// The source and sink tables as lineage inputs, with the check's facets once it ran.
fn datasets(table: &ScheduledTable, outcome: Option<&CheckOutcome>) -> Vec<InputDataset> {
    let mut source =
        InputDataset::new(namespace(&table.source_url), table.source_table.to_string());
    let mut sink = InputDataset::new(namespace(&table.sink_url), table.sink_table.to_string());
    let Some(o) = outcome else {
        return vec![source, sink];
    };
    source = source.with_quality_metrics(DataQualityMetricsInputDatasetFacet::new(
        Some(o.source_rows),
        BTreeMap::new(),
    ));
    sink = sink.with_quality_metrics(DataQualityMetricsInputDatasetFacet::new(
        Some(o.sink_rows),
        BTreeMap::new(),
    ));
    let differing = match &o.verdict {
        CheckVerdict::Failed {
            missing,
            extra,
            different,
            ..
        } => missing + extra + different,
        _ => 0,
    };
    let assertion = |kind: &str,
                     name: &str,
                     success: bool,
                     expected: String,
                     actual: String,
                     description: &str| Assertion {
        assertion: kind.into(),
        success,
        column: None,
        severity: Some("error".into()),
        name: Some(name.into()),
        description: Some(description.into()),
        expected: Some(expected),
        actual: Some(actual),
    };
    let facet = DataQualityAssertionsDatasetFacet::new(vec![
        assertion(
            "row_count",
            "row_count_equals_source",
            o.source_rows == o.sink_rows,
            o.source_rows.to_string(),
            o.sink_rows.to_string(),
            "The sink table has as many rows as the source table.",
        ),
        assertion(
            "row_hash",
            "rows_equal_source",
            differing == 0,
            "0".into(),
            differing.to_string(),
            "Every row of the sink equals the source row with its key (chunked MD5 digests, bisected to rows).",
        ),
    ]);
    if let Ok(json) = serde_json::to_value(facet) {
        sink.input_facets
            .other
            .insert("dataQualityAssertions".into(), json);
    }
    vec![source, sink]
}

/// `scheme://host:port` of a database URL (the OpenLineage dataset namespace), without
/// credentials; `sqlite://<path>` for SQLite.
fn namespace(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) if u.host_str().is_some() => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}{port}",
                u.scheme(),
                u.host_str().unwrap_or_default()
            )
        }
        _ => url.split('?').next().unwrap_or(url).to_string(),
    }
}

async fn emit(lineage: &dyn LineageEmitter, event: &crate::lineage::RunEvent) {
    if let Err(e) = lineage.emit(event).await {
        tracing::warn!(error = %e, "could not emit a lineage event for a check");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lineage::NoopEmitter;

    #[test]
    fn schedule_defaults_to_daily_at_two() {
        let cron: croner::Cron = "0 2 * * *".parse().unwrap();
        let s = CheckScheduler::new(
            "p",
            Some(cron),
            Vec::new(),
            CheckOptions::default(),
            &Registry::new(),
            Arc::new(NoopEmitter),
            "ns",
        )
        .unwrap();
        let now = DateTime::parse_from_rfc3339("2026-11-27T07:50:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            s.next_run(now).unwrap().to_rfc3339(),
            "2026-11-28T02:00:00+00:00"
        );
        assert_eq!(namespace("mysql://u:secret@db:3306/x"), "mysql://db:3306");
        assert!(s.trigger().request());
        assert!(
            s.trigger().request(),
            "a second request merges with the pending one"
        );
    }
}
