//! The batch path: events collect per table and are committed as snapshots in object storage
//! (by count or by age), then applied to the sink tables, then acknowledged.

mod applier;
mod snapshot;

pub use applier::{ApplierError, ShadowOptions, SinkApplier};
pub use snapshot::{SnapshotError, SnapshotFile, SnapshotManifest, SnapshotWriter};

use super::sleep_until;
use crate::event::{ChangeEvent, TableId};
use crate::metrics::Metrics;
use crate::runtime::{Acker, Path, PathError, Routed};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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
    pub max_events: usize,
    pub max_age: Duration,
    pub metrics: Arc<Metrics>,
}

impl BatchPath {
    async fn flush(&mut self, pending: &mut Vec<Routed>, acks: &Acker) -> Result<(), PathError> {
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
            let started = Instant::now();
            let manifest = self.writer.commit(table, events).await?;
            let t = table.to_string();
            let labels = [self.pipeline.as_str(), t.as_str()];
            self.metrics
                .snapshot_seconds
                .with_label_values(&[&self.pipeline])
                .observe(started.elapsed().as_secs_f64());
            self.metrics.snapshots.with_label_values(&labels).inc();
            self.metrics
                .snapshot_rows
                .with_label_values(&labels)
                .inc_by(manifest.rows);
            self.metrics
                .snapshot_bytes
                .with_label_values(&labels)
                .inc_by(manifest.files.iter().map(|f| f.bytes).sum());
            tracing::debug!(table = %t, snapshot = %manifest.snapshot_id, rows = manifest.rows, "snapshot committed");
            if let Some(applier) = self.applier.as_mut() {
                applier.apply(table, events).await?;
            }
        }
        acks.ack(last_seq, count);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Path for BatchPath {
    async fn run(
        mut self: Box<Self>,
        mut events: mpsc::Receiver<Vec<Routed>>,
        acks: Acker,
    ) -> Result<(), PathError> {
        let removed = self.writer.remove_orphans().await?;
        if removed > 0 {
            tracing::warn!(
                removed,
                "removed data files of snapshots that were never committed"
            );
        }
        let mut pending: Vec<Routed> = Vec::new();
        let mut oldest: Option<Instant> = None;
        loop {
            let deadline = oldest.map(|t| tokio::time::Instant::from_std(t + self.max_age));
            tokio::select! {
                batch = events.recv() => match batch {
                    Some(batch) => {
                        oldest.get_or_insert_with(Instant::now);
                        pending.extend(batch);
                        if pending.len() >= self.max_events {
                            self.flush(&mut pending, &acks).await?;
                            oldest = None;
                        }
                    }
                    None => {
                        self.flush(&mut pending, &acks).await?;
                        return Ok(());
                    }
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.flush(&mut pending, &acks).await?;
                    oldest = None;
                }
            }
        }
    }
}
