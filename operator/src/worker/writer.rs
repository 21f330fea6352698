//! Writes the worker's status fields with server-side apply (field manager `syncmesh-worker`)
//! on the status subresource: at once when something changed (at most once a second), and
//! every `interval` regardless, so the heartbeat shows the worker is alive. A failed write is
//! logged and retried with backoff; it never stops the pipeline.

use super::status::{CheckBook, Observation, rfc3339, worker_status};
use chrono::Utc;
use kube::Api;
use kube::api::{Patch, PatchParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use syncmesh_connectors::checker::CheckOutcome;
use syncmesh_connectors::checkpoint::{CheckpointStore, FileCheckpointStore};
use syncmesh_connectors::metrics::Metrics;
use syncmesh_connectors::runtime::RunCounters;
use syncmesh_connectors::sinks::breaker::Breakers;
use syncmesh_crds::{SyncPipeline, SyncPipelineStatus};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

/// The worker's server-side-apply field manager.
pub const FIELD_MANAGER: &str = "syncmesh-worker";

/// How often the writer looks at the pipeline for changes.
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// The least time between two writes caused by changes.
const MIN_GAP: Duration = Duration::from_secs(1);

/// Where the writer reads the running pipeline's state.
pub struct Sources {
    pub pipeline: String,
    pub source_names: Vec<String>,
    pub metrics: Arc<Metrics>,
    pub counters: Arc<RunCounters>,
    pub checkpoint: FileCheckpointStore,
    pub breakers: Option<Arc<Breakers>>,
    pub outcomes: Option<broadcast::Receiver<CheckOutcome>>,
}

impl Sources {
    fn observe(
        &self,
        last_checkpoint: &mut Option<syncmesh_connectors::checkpoint::Checkpoint>,
    ) -> Observation {
        match self.checkpoint.load() {
            Ok(Some(c)) => *last_checkpoint = Some(c),
            Ok(None) => {}
            // Shown on the next successful read; the runtime itself fails on a bad checkpoint.
            Err(e) => tracing::debug!(error = %e, "cannot read the checkpoint for status"),
        }
        Observation {
            events_read: self.counters.events_read.load(Ordering::Relaxed),
            sources: self
                .source_names
                .iter()
                .map(|n| {
                    let read = self
                        .metrics
                        .events_read
                        .with_label_values(&[&self.pipeline, n])
                        .get();
                    (n.clone(), read)
                })
                .collect(),
            checkpoint: last_checkpoint.clone(),
            lags: self.lags(),
            sink_tables: self
                .breakers
                .as_ref()
                .map(|b| b.statuses())
                .unwrap_or_default(),
        }
    }
}

impl Sources {
    /// The lag gauges the runtime has set (reading a series through the vector would create it
    /// at zero, so they are gathered instead).
    fn lags(&self) -> BTreeMap<String, Duration> {
        let mut lags = BTreeMap::new();
        let gathered = self.metrics.registry.gather();
        let families = gathered
            .iter()
            .filter(|f| f.name() == "syncmesh_source_lag_seconds");
        for family in families {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                };
                if label("pipeline").as_deref() != Some(self.pipeline.as_str()) {
                    continue;
                }
                let seconds = m.get_gauge().value();
                if let Some(source) = label("source")
                    && seconds.is_finite()
                {
                    lags.insert(source, Duration::from_secs_f64(seconds.max(0.0)));
                }
            }
        }
        lags
    }
}

/// Sends status patches for one SyncPipeline.
pub struct StatusWriter {
    api: Api<SyncPipeline>,
    name: String,
    interval: Duration,
}

impl StatusWriter {
    pub fn new(api: Api<SyncPipeline>, name: String, interval: Duration) -> Self {
        Self {
            api,
            name,
            interval,
        }
    }

    /// One server-side apply of `status` (stamped with a heartbeat) on the status subresource.
    pub async fn apply(&self, mut status: SyncPipelineStatus) -> Result<(), kube::Error> {
        status.heartbeat = Some(rfc3339(Utc::now()));
        let patch = serde_json::json!({
            "apiVersion": format!("{}/{}", syncmesh_crds::GROUP, syncmesh_crds::VERSION),
            "kind": "SyncPipeline",
            "metadata": { "name": self.name },
            "status": status,
        });
        // Forced: these fields are the worker's by contract, whoever wrote them before.
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api
            .patch_status(&self.name, &params, &Patch::Apply(&patch))
            .await
            .map(|_| ())
    }

    /// Writes until `done` turns true, then writes once more (the final status) and returns
    /// whether that last write succeeded.
    pub async fn run(self, mut sources: Sources, mut done: watch::Receiver<bool>) -> bool {
        let mut book = CheckBook::default();
        let mut checkpoint = None;
        let mut written: Option<SyncPipelineStatus> = None;
        let mut last_attempt: Option<Instant> = None;
        let mut backoff = Duration::ZERO;
        let mut look = tokio::time::interval(LOOK_EVERY);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = look.tick() => {}
                _ = done.wait_for(|d| *d) => break,
                outcome = recv(&mut sources.outcomes) => match outcome {
                    Ok(o) => book.record(&o),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "check outcomes dropped before reaching the status");
                    }
                    Err(broadcast::error::RecvError::Closed) => sources.outcomes = None,
                },
            }
            let status = worker_status(&sources.observe(&mut checkpoint), &book);
            let since = last_attempt.map(|t| t.elapsed());
            let last = written.as_ref().map(|w| *w != status);
            if !due(since, backoff, last, self.interval) {
                continue;
            }
            last_attempt = Some(Instant::now());
            match self.apply(status.clone()).await {
                Ok(()) => {
                    if backoff > Duration::ZERO {
                        tracing::info!("status written again");
                    }
                    written = Some(status);
                    backoff = Duration::ZERO;
                }
                Err(e) => {
                    backoff = next_backoff(backoff, self.interval);
                    written = None;
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot write the pipeline status; retrying");
                }
            }
        }
        // Outcomes that arrived while draining, then the final state.
        if let Some(rx) = sources.outcomes.as_mut() {
            while let Ok(o) = rx.try_recv() {
                book.record(&o);
            }
        }
        let status = worker_status(&sources.observe(&mut checkpoint), &book);
        match self.apply(status).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the final pipeline status");
                false
            }
        }
    }
}

/// Whether to write now, `since` the last attempt (`None`: never tried). `changed` is whether
/// the status differs from the last one written (`None`: the last attempt failed).
fn due(
    since: Option<Duration>,
    backoff: Duration,
    changed: Option<bool>,
    interval: Duration,
) -> bool {
    match (since, changed) {
        (None, _) => true,
        (Some(s), _) if s < backoff => false,
        (Some(s), Some(changed)) => s >= interval || (changed && s >= MIN_GAP),
        // The last write failed and the backoff has passed.
        (Some(_), None) => true,
    }
}

/// The wait after a failed write: 1 s, doubling, at most the status interval.
fn next_backoff(backoff: Duration, interval: Duration) -> Duration {
    (backoff * 2).clamp(MIN_GAP, interval.max(MIN_GAP))
}

async fn recv(
    rx: &mut Option<broadcast::Receiver<CheckOutcome>>,
) -> Result<CheckOutcome, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observes_the_runs_counters_and_lag_gauges_of_its_own_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let counters = Arc::new(RunCounters::default());
        counters.events_read.store(5, Ordering::Relaxed);
        metrics.events_read.with_label_values(&["p", "s"]).inc_by(3);
        metrics.events_read.with_label_values(&["p", "t"]).inc_by(2);
        metrics
            .source_lag_seconds
            .with_label_values(&["p", "s"])
            .set(1.5);
        metrics
            .source_lag_seconds
            .with_label_values(&["other", "t"])
            .set(9.0);
        let sources = Sources {
            pipeline: "p".into(),
            source_names: vec!["s".into(), "t".into()],
            metrics,
            counters,
            checkpoint: FileCheckpointStore::new(dir.path().join("checkpoint"), "p"),
            breakers: None,
            outcomes: None,
        };
        let seen = sources.observe(&mut None);
        assert_eq!(seen.sources, [("s".to_string(), 3), ("t".to_string(), 2)]);
        assert_eq!(
            seen.lags,
            [("s".to_string(), Duration::from_millis(1_500))].into()
        );
        let status = worker_status(&seen, &CheckBook::default());
        assert_eq!(status.events_read, Some(5));
        assert_eq!(status.lag.as_deref(), Some("1.5s"));
        assert_eq!(status.sources[1].lag, None, "no gauge for t in pipeline p");
        assert_eq!(status.breaker, None, "no sink");
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn writes_first_on_change_at_most_once_a_second_and_at_each_interval() {
        let interval = 5 * S;
        assert!(due(None, Duration::ZERO, None, interval), "the first write");
        let half = S / 2;
        assert!(!due(Some(half), Duration::ZERO, Some(true), interval));
        assert!(due(Some(S), Duration::ZERO, Some(true), interval));
        assert!(!due(Some(4 * S), Duration::ZERO, Some(false), interval));
        assert!(
            due(Some(interval), Duration::ZERO, Some(false), interval),
            "the heartbeat"
        );
    }

    #[test]
    fn failed_writes_are_retried_after_a_growing_backoff() {
        let interval = 5 * S;
        let mut backoff = Duration::ZERO;
        let mut waits = Vec::new();
        for _ in 0..5 {
            backoff = next_backoff(backoff, interval);
            waits.push(backoff.as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        assert!(!due(Some(3 * S), 4 * S, None, interval));
        assert!(due(Some(4 * S), 4 * S, None, interval));
        // A change does not cut the backoff short.
        assert!(!due(Some(S), 2 * S, Some(true), interval));
    }
}
