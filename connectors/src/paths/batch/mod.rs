//! The batch path: events collect per table and are committed as snapshots in object storage
//! (by count, bytes or age), then applied to the sink tables, then acknowledged. On a cron
//! schedule (and on demand) each table's micro-batches are compacted into a full snapshot.
//! See docs/batch.md.

mod applier;
mod columnar;
mod full;
mod metrics;
mod retry;
mod snapshot;

pub use applier::{ApplierError, ShadowOptions, SinkApplier};
pub use columnar::{ColumnarError, ENVELOPE as ENVELOPE_COLUMNS};
pub use metrics::BatchMetrics;
pub use retry::RetryPolicy;
pub use snapshot::{
    RetryCounts, SnapshotError, SnapshotFile, SnapshotFormat, SnapshotKind, SnapshotManifest,
    SnapshotWriter,
};

use super::sleep_until;
use crate::event::{ChangeEvent, Position, TableId};
use crate::metrics::Metrics;
use crate::runtime::{Acker, Path, PathError, Routed};
use chrono::Utc;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Row bytes counted per event on top of its values (envelope, position).
const EVENT_OVERHEAD: usize = 64;

/// What a batch does after its snapshot is committed: apply it to the sink tables.
/// A trait so the batch path never knows which database is downstream.
#[async_trait::async_trait]
pub trait TableApplier: Send {
    /// Applies `events` (all of `table`, in source order) idempotently.
    async fn apply(
        &mut self,
        table: &TableId,
        events: &[Arc<ChangeEvent>],
    ) -> Result<(), PathError>;
}

pub struct BatchPath {
    pub pipeline: String,
    pub writer: SnapshotWriter,
    pub applier: Option<Box<dyn TableApplier>>,
    /// Commit once this many events are pending.
    pub max_events: usize,
    /// Commit once the pending events hold about this many bytes of row data.
    pub max_bytes: usize,
    /// Commit once the oldest pending event waited this long.
    pub max_age: Duration,
    /// When full snapshots are taken; `None`: never (on demand only).
    pub full_schedule: Option<croner::Cron>,
    pub metrics: Arc<Metrics>,
    pub batch_metrics: BatchMetrics,
}

/// Positions already in committed snapshots, per (table, source), as read at start: replayed
/// events at or before them are not written again. A key is dropped at its first newer event,
/// so only the replay after a restart is checked.
type Committed = HashMap<(TableId, String), Position>;

impl BatchPath {
    async fn flush(
        &mut self,
        pending: &mut Vec<Routed>,
        committed: &mut Committed,
        acks: &Acker,
    ) -> Result<(), PathError> {
        let Some(last_seq) = pending.last().map(|r| r.seq) else {
            return Ok(());
        };
        let count = pending.len() as u64;
        let mut by_table: BTreeMap<TableId, Vec<Arc<ChangeEvent>>> = BTreeMap::new();
        for routed in pending.drain(..) {
            by_table
                .entry(routed.event.table().clone())
                .or_default()
                .push(routed.event);
        }
        for (table, events) in &by_table {
            let fresh = self.unwritten(table, events, committed);
            if !fresh.is_empty() {
                self.commit(table, &fresh).await?;
            }
            // The sink gets every event: a replayed one may be in a snapshot but not applied.
            if let Some(applier) = self.applier.as_mut() {
                applier.apply(table, events).await?;
            }
        }
        acks.ack(last_seq, count);
        Ok(())
    }

    /// The events of `table` not yet in a committed snapshot.
    fn unwritten(
        &self,
        table: &TableId,
        events: &[Arc<ChangeEvent>],
        committed: &mut Committed,
    ) -> Vec<Arc<ChangeEvent>> {
        if committed.is_empty() {
            return events.to_vec();
        }
        let mut fresh = Vec::with_capacity(events.len());
        for e in events {
            let key = (table.clone(), e.source.to_string());
            match committed.get(&key) {
                Some(done) if e.position.not_after(done) == Some(true) => {
                    self.batch_metrics
                        .skipped
                        .with_label_values(&[&self.pipeline])
                        .inc();
                }
                Some(_) => {
                    committed.remove(&key);
                    fresh.push(e.clone());
                }
                None => fresh.push(e.clone()),
            }
        }
        fresh
    }

    async fn commit(
        &mut self,
        table: &TableId,
        events: &[Arc<ChangeEvent>],
    ) -> Result<SnapshotManifest, PathError> {
        let started = Instant::now();
        let manifest = self.writer.commit(table, events).await?;
        self.observe(&manifest, started.elapsed());
        tracing::debug!(table = %table, snapshot = %manifest.snapshot_id, rows = manifest.rows, "snapshot committed");
        Ok(manifest)
    }

    fn observe(&self, manifest: &SnapshotManifest, elapsed: Duration) {
        let t = manifest.table.as_str();
        let labels = [self.pipeline.as_str(), t];
        if manifest.kind == SnapshotKind::Micro {
            self.metrics
                .snapshot_seconds
                .with_label_values(&[&self.pipeline])
                .observe(elapsed.as_secs_f64());
            self.metrics.snapshots.with_label_values(&labels).inc();
            self.metrics
                .snapshot_rows
                .with_label_values(&labels)
                .inc_by(manifest.rows);
            self.metrics
                .snapshot_bytes
                .with_label_values(&labels)
                .inc_by(manifest.bytes);
        } else {
            self.batch_metrics
                .full_seconds
                .with_label_values(&[&self.pipeline])
                .observe(elapsed.as_secs_f64());
            self.batch_metrics
                .full_snapshots
                .with_label_values(&labels)
                .inc();
        }
        let kind = match manifest.kind {
            SnapshotKind::Micro => "micro",
            SnapshotKind::Full => "full",
        };
        self.batch_metrics
            .files
            .with_label_values(&[self.pipeline.as_str(), t, kind])
            .inc_by(manifest.files.len() as u64);
    }

    /// Full snapshots of every table; a failure is logged and counted, and the path goes on
    /// (micro-batches are committed either way; the next run of the schedule tries again).
    async fn full_snapshots(&mut self) {
        let started = Instant::now();
        match self.writer.full_snapshots().await {
            Ok(done) => {
                for m in &done {
                    self.observe(m, started.elapsed());
                    tracing::info!(table = %m.table, snapshot = %m.snapshot_id, rows = m.rows, compacted = m.compacted.len(), "full snapshot committed");
                }
            }
            Err(e) => {
                self.batch_metrics
                    .full_failures
                    .with_label_values(&[&self.pipeline])
                    .inc();
                tracing::error!(error = %e, "full snapshot failed; micro-batches are unaffected");
            }
        }
    }

    fn next_full(&self) -> Option<tokio::time::Instant> {
        let cron = self.full_schedule.as_ref()?;
        let now = Utc::now();
        let next = cron.find_next_occurrence(&now, false).ok()?;
        let wait = (next - now).to_std().unwrap_or_default();
        Some(tokio::time::Instant::now() + wait)
    }
}

fn approx_bytes(e: &ChangeEvent) -> usize {
    e.approx_size() + EVENT_OVERHEAD
}

#[async_trait::async_trait]
impl Path for BatchPath {
    async fn run(
        mut self: Box<Self>,
        mut events: mpsc::Receiver<Vec<Routed>>,
        acks: Acker,
    ) -> Result<(), PathError> {
        let run_started = Utc::now();
        let removed = self.writer.remove_orphans(run_started).await?;
        if removed > 0 {
            self.batch_metrics
                .orphans
                .with_label_values(&[&self.pipeline])
                .inc_by(removed as u64);
            tracing::warn!(
                removed,
                "removed data files of snapshots that were never committed"
            );
        }
        let mut committed = self.writer.committed_positions().await?;
        if self.full_schedule.is_some() && self.writer.format() != SnapshotFormat::Parquet {
            tracing::warn!("full snapshots need `format: parquet`; none will be taken");
            self.full_schedule = None;
        }
        let retries = self.writer.retries();
        let mut retries_seen = 0;
        let mut pending: Vec<Routed> = Vec::new();
        let mut pending_bytes = 0usize;
        let mut oldest: Option<Instant> = None;
        let mut next_full = self.next_full();
        loop {
            let deadline = oldest.map(|t| tokio::time::Instant::from_std(t + self.max_age));
            let flush = tokio::select! {
                batch = events.recv() => match batch {
                    Some(batch) => {
                        oldest.get_or_insert_with(Instant::now);
                        pending_bytes += batch.iter().map(|r| approx_bytes(&r.event)).sum::<usize>();
                        pending.extend(batch);
                        pending.len() >= self.max_events || pending_bytes >= self.max_bytes
                    }
                    None => {
                        self.flush(&mut pending, &mut committed, &acks).await?;
                        return Ok(());
                    }
                },
                _ = sleep_until(deadline), if deadline.is_some() => true,
                _ = sleep_until(next_full), if next_full.is_some() => {
                    // What is pending goes into micro-batches first, so the full snapshot
                    // covers everything received before its time.
                    self.flush(&mut pending, &mut committed, &acks).await?;
                    (oldest, pending_bytes) = (None, 0);
                    self.full_snapshots().await;
                    next_full = self.next_full();
                    false
                }
            };
            if flush {
                self.flush(&mut pending, &mut committed, &acks).await?;
                (oldest, pending_bytes) = (None, 0);
            }
            let now = retries.retries.load(std::sync::atomic::Ordering::Relaxed);
            if now > retries_seen {
                self.batch_metrics
                    .retries
                    .with_label_values(&[&self.pipeline])
                    .inc_by(now - retries_seen);
                retries_seen = now;
            }
        }
    }
}

#[cfg(test)]
mod tests;
