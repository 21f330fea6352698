//! Batch-path metrics beyond the shared snapshot counters (`syncmesh_snapshot_*`).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct BatchMetrics {
    /// Data files in committed snapshots, by kind (`micro`, `full`).
    pub files: IntCounterVec,
    /// Transient object-storage failures that were retried.
    pub retries: IntCounterVec,
    /// Data files removed at start because no manifest listed them.
    pub orphans: IntCounterVec,
    /// Replayed events not written again: a committed snapshot already held them.
    pub skipped: IntCounterVec,
    pub full_snapshots: IntCounterVec,
    pub full_failures: IntCounterVec,
    pub full_seconds: HistogramVec,
}

impl BatchMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let full_seconds = HistogramVec::new(
            HistogramOpts::new(
                "syncmesh_full_snapshot_duration_seconds",
                "Time to merge and write the full snapshots of a scheduled run",
            )
            .buckets(vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]),
            &["pipeline"],
        )?;
        registry.register(Box::new(full_seconds.clone()))?;
        Ok(Self {
            files: counter(
                "syncmesh_snapshot_files_total",
                "Data files in committed snapshots",
                &["pipeline", "table", "kind"],
            )?,
            retries: counter(
                "syncmesh_snapshot_retries_total",
                "Object-storage calls of the batch path retried after a transient failure",
                &["pipeline"],
            )?,
            orphans: counter(
                "syncmesh_snapshot_orphans_removed_total",
                "Data files of uncommitted snapshots removed at start",
                &["pipeline"],
            )?,
            skipped: counter(
                "syncmesh_snapshot_replayed_events_skipped_total",
                "Replayed events already in a committed snapshot, not written again",
                &["pipeline"],
            )?,
            full_snapshots: counter(
                "syncmesh_full_snapshots_total",
                "Full snapshots committed",
                &["pipeline", "table"],
            )?,
            full_failures: counter(
                "syncmesh_full_snapshot_failures_total",
                "Scheduled full snapshot runs that failed",
                &["pipeline"],
            )?,
            full_seconds,
        })
    }

    /// Metrics in a registry of their own (tests, benches).
    pub fn unregistered() -> Self {
        // A fresh registry has none of these names, so registering cannot fail.
        Self::register(&Registry::new()).unwrap_or_else(|e| unreachable!("{e}"))
    }
}
