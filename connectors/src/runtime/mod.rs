//! The pipeline runtime: sources → decider → paths, with acknowledged positions checkpointed.
//!
//! One task (the router) owns the tracker and the checkpoint: it reads source batches, asks
//! the decider for each event's paths, hands events to the paths through bounded channels and
//! folds their acknowledgements into the committed position of each source.

mod path;
mod source;
mod tracker;

pub use path::{Acker, Path, PathError, Routed};
pub use source::{Closed, Emitter, Source, SourceError, SourceItem, StopSignal};
pub use tracker::{PathMask, SourceProgress, Tracker};

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use crate::deadletter::{DeadLetterError, DeadLetterSink};
use crate::decider::{Decider, PATHS, path_index};
use crate::metrics::Metrics;
use path::Ack;
/// For in-crate tests that read an [`Emitter`]'s batches directly.
pub(crate) use source::Queued;
use source::SourceBatch;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use syncmesh_crds::PathName;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

const REALTIME: usize = path_index(PathName::Realtime);
const BATCH: usize = path_index(PathName::Batch);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("source `{name}` failed: {source}")]
    Source { name: String, source: SourceError },
    #[error("the {path} path failed: {source}")]
    Path {
        path: &'static str,
        source: PathError,
    },
    #[error("an event was routed to the {0} path, which this pipeline does not configure")]
    UnconfiguredPath(&'static str),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error("a pipeline task panicked: {0}")]
    Panic(String),
}

/// Live counters, readable while the pipeline runs (progress display, status).
#[derive(Debug, Default)]
pub struct RunCounters {
    pub events_read: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Events acknowledged per path, in `PATHS` order.
    pub acknowledged: [AtomicU64; PATHS.len()],
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub events_read: u64,
    pub dead_letters: u64,
    /// Events acknowledged per configured path name.
    pub acknowledged: BTreeMap<&'static str, u64>,
    pub elapsed: Duration,
    /// Committed progress per source at the end of the run.
    pub progress: BTreeMap<String, SourceProgress>,
}

/// The metrics an ack moves, resolved once per run: per path the events acknowledged and
/// their end-to-end latency, per source the lag.
struct AckMetrics {
    events: Vec<prometheus::IntCounter>,
    latency: Vec<prometheus::Histogram>,
    lag: Vec<prometheus::Gauge>,
}

impl AckMetrics {
    /// Applies `ack` to the tracker, observing each newly acknowledged event's end-to-end
    /// latency and the lag of every source whose committed position moved.
    fn apply(&self, tracker: &mut Tracker, ack: &Ack, counters: &RunCounters) {
        let now = chrono::Utc::now();
        let seconds = |t: chrono::DateTime<chrono::Utc>| {
            (now - t).num_microseconds().unwrap_or(i64::MAX).max(0) as f64 / 1e6
        };
        for t in tracker.newly_acked(ack.path, ack.seq) {
            self.latency[ack.path].observe(seconds(t));
        }
        tracker.ack(ack.path, ack.seq);
        for (source, t) in tracker.take_committed_times() {
            self.lag[source].set(seconds(t));
        }
        self.events[ack.path].inc_by(ack.events);
        counters.acknowledged[ack.path].fetch_add(ack.events, Ordering::Relaxed);
    }
}

/// A pipeline ready to run.
pub struct Runtime {
    pub pipeline: String,
    pub sources: Vec<Box<dyn Source>>,
    pub decider: Arc<Decider>,
    /// One slot per entry of `PATHS`; `None` where the pipeline has no such path.
    pub paths: Vec<Option<Box<dyn Path>>>,
    pub checkpoint: Box<dyn CheckpointStore>,
    pub dead_letters: Box<dyn DeadLetterSink>,
    pub metrics: Arc<Metrics>,
    pub counters: Arc<RunCounters>,
    /// Capacity (in batches) of every channel; bounds memory.
    pub channel_capacity: usize,
    /// How often committed progress is persisted while running.
    pub checkpoint_interval: Duration,
}

enum Task {
    Source(usize, Result<(), SourceError>),
    Path(usize, Result<(), PathError>),
}

async fn recv(rx: &mut Option<mpsc::Receiver<SourceBatch>>) -> Option<SourceBatch> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Stops taking source items and closes the paths' inputs. Dropping the source receiver
/// (rather than just no longer reading it) wakes a source blocked on a full channel, so it
/// ends instead of waiting forever.
fn close_inputs(
    src_rx: &mut Option<mpsc::Receiver<SourceBatch>>,
    path_txs: &mut [Option<mpsc::Sender<Vec<Routed>>>],
) {
    *src_rx = None;
    path_txs.iter_mut().for_each(|t| *t = None);
}

impl Runtime {
    /// Runs until every source is exhausted (or `stop` is raised), every path has
    /// acknowledged what it was given, and the final checkpoint is saved.
    pub async fn run(
        mut self,
        stop_tx: watch::Sender<bool>,
        stop: StopSignal,
    ) -> Result<RunSummary, RuntimeError> {
        let started = Instant::now();
        let names: Vec<String> = self.sources.iter().map(|s| s.name().to_string()).collect();
        let restored = self.checkpoint.load()?;
        let progress: Vec<SourceProgress> = names
            .iter()
            .map(|n| {
                restored
                    .as_ref()
                    .and_then(|c| c.sources.get(n).cloned())
                    .unwrap_or_default()
            })
            .collect();
        let mut tracker = Tracker::new(PATHS.len(), progress.clone());

        let mut tasks: JoinSet<Task> = JoinSet::new();
        let (src_tx, src_rx) = mpsc::channel::<SourceBatch>(self.channel_capacity);
        let mut src_rx = Some(src_rx);
        for (i, (source, resume)) in self.sources.drain(..).zip(progress).enumerate() {
            let emitter = Emitter::new(i, src_tx.clone());
            let stop = stop.clone();
            tasks.spawn(async move { Task::Source(i, source.run(resume, emitter, stop).await) });
        }
        drop(src_tx);

        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Ack>();
        let configured: Vec<bool> = self.paths.iter().map(Option::is_some).collect();
        let mut path_txs: Vec<Option<mpsc::Sender<Vec<Routed>>>> = Vec::new();
        for (i, path) in self.paths.drain(..).enumerate() {
            match path {
                Some(path) => {
                    let (tx, rx) = mpsc::channel(self.channel_capacity);
                    let acker = Acker::new(i, ack_tx.clone());
                    tasks.spawn(async move { Task::Path(i, path.run(rx, acker).await) });
                    path_txs.push(Some(tx));
                }
                None => path_txs.push(None),
            }
        }
        drop(ack_tx);

        let pipeline = self.pipeline.clone();
        let read_counters: Vec<_> = names
            .iter()
            .map(|n| self.metrics.events_read.with_label_values(&[&pipeline, n]))
            .collect();
        let dead_counters: Vec<_> = names
            .iter()
            .map(|n| self.metrics.dead_letters.with_label_values(&[&pipeline, n]))
            .collect();
        let acks = AckMetrics {
            events: PATHS
                .iter()
                .map(|p| {
                    self.metrics
                        .path_events
                        .with_label_values(&[&pipeline, p.as_str()])
                })
                .collect(),
            latency: PATHS
                .iter()
                .map(|p| {
                    self.metrics
                        .end_to_end_seconds
                        .with_label_values(&[&pipeline, p.as_str()])
                })
                .collect(),
            lag: names
                .iter()
                .map(|n| {
                    self.metrics
                        .source_lag_seconds
                        .with_label_values(&[&pipeline, n])
                })
                .collect(),
        };
        let in_flight = self.metrics.in_flight.with_label_values(&[&pipeline]);

        let mut failure: Option<RuntimeError> = None;
        let mut ticker = tokio::time::interval(self.checkpoint_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        // Route until every source is done; then close the paths and collect the last acks.
        loop {
            tokio::select! {
                batch = recv(&mut src_rx), if src_rx.is_some() => {
                    let Some(batch) = batch else {
                        close_inputs(&mut src_rx, &mut path_txs);
                        continue;
                    };
                    if let Err(e) = self.dispatch(batch, &mut tracker, &path_txs, &read_counters, &dead_counters).await {
                        failure.get_or_insert(e);
                        let _ = stop_tx.send(true);
                        close_inputs(&mut src_rx, &mut path_txs);
                    }
                    in_flight.set(tracker.in_flight() as i64);
                }
                Some(ack) = ack_rx.recv() => {
                    acks.apply(&mut tracker, &ack, &self.counters);
                    in_flight.set(tracker.in_flight() as i64);
                }
                Some(done) = tasks.join_next() => {
                    match done {
                        Ok(Task::Source(i, Err(source))) => {
                            failure.get_or_insert(RuntimeError::Source { name: names[i].clone(), source });
                            let _ = stop_tx.send(true);
                        }
                        Ok(Task::Path(i, Err(source))) => {
                            failure.get_or_insert(RuntimeError::Path { path: PATHS[i].as_str(), source });
                            let _ = stop_tx.send(true);
                            close_inputs(&mut src_rx, &mut path_txs);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            failure.get_or_insert(RuntimeError::Panic(e.to_string()));
                            let _ = stop_tx.send(true);
                        }
                    }
                }
                // Only while work remains: once every task has ended, `else` ends the loop.
                _ = ticker.tick(), if src_rx.is_some() || !tasks.is_empty() => {
                    self.persist(&mut tracker, &names)?;
                }
                else => break,
            }
        }
        // All tasks have ended and every ack has been received.
        while let Ok(ack) = ack_rx.try_recv() {
            acks.apply(&mut tracker, &ack, &self.counters);
        }
        in_flight.set(tracker.in_flight() as i64);
        self.persist(&mut tracker, &names)?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(RunSummary {
            events_read: self.counters.events_read.load(Ordering::Relaxed),
            dead_letters: self.counters.dead_letters.load(Ordering::Relaxed),
            acknowledged: PATHS
                .iter()
                .enumerate()
                .filter(|(i, _)| configured[*i])
                .map(|(i, p)| {
                    (
                        p.as_str(),
                        self.counters.acknowledged[i].load(Ordering::Relaxed),
                    )
                })
                .collect(),
            elapsed: started.elapsed(),
            progress: names
                .iter()
                .cloned()
                .zip(tracker.progress().iter().cloned())
                .collect(),
        })
    }

    async fn dispatch(
        &mut self,
        batch: SourceBatch,
        tracker: &mut Tracker,
        path_txs: &[Option<mpsc::Sender<Vec<Routed>>>],
        read_counters: &[prometheus::IntCounter],
        dead_counters: &[prometheus::IntCounter],
    ) -> Result<(), RuntimeError> {
        let mut out: Vec<Vec<Routed>> = vec![Vec::new(); path_txs.len()];
        let mut events = 0u64;
        for item in batch.items {
            match item {
                Queued::Item(SourceItem::Event(event)) => {
                    events += 1;
                    let mask = self.decider.decide(&event);
                    let seq = tracker.dispatch_event(
                        batch.source,
                        event.position.clone(),
                        mask,
                        false,
                        event.commit_time(),
                    );
                    let event = Arc::new(event);
                    for (i, slot) in out.iter_mut().enumerate() {
                        if mask & (1 << i) != 0 {
                            if path_txs[i].is_none() {
                                return Err(RuntimeError::UnconfiguredPath(PATHS[i].as_str()));
                            }
                            slot.push(Routed {
                                seq,
                                event: event.clone(),
                            });
                        }
                    }
                }
                Queued::Item(SourceItem::Bad(letter)) => {
                    self.dead_letters.write(&letter)?;
                    dead_counters[batch.source].inc();
                    self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
                    tracker.dispatch(batch.source, letter.position, 0, false);
                }
                Queued::Item(SourceItem::Completed(position)) => {
                    tracker.dispatch(batch.source, position, 0, true);
                }
                // Routed nowhere: committed once every item dispatched before it is done.
                Queued::Heartbeat(position) => {
                    tracker.dispatch(batch.source, position, 0, false);
                }
            }
        }
        read_counters[batch.source].inc_by(events);
        self.counters
            .events_read
            .fetch_add(events, Ordering::Relaxed);
        // PATHS puts the real-time path first, so events it gives back can still join the batch
        // path's share of this dispatch, in seq order.
        // An owned handle: `self` is not held across the sends below.
        let decider = self.decider.clone();
        for i in 0..out.len() {
            let routed = std::mem::take(&mut out[i]);
            if routed.is_empty() {
                continue;
            }
            let Some(tx) = &path_txs[i] else { continue };
            match decider.fallback_health() {
                Some(health) if i == REALTIME => {
                    if let Some(held) = send_unless_degraded(tx, routed, health).await {
                        if path_txs[BATCH].is_none() {
                            return Err(RuntimeError::UnconfiguredPath(PATHS[BATCH].as_str()));
                        }
                        let diverted = divert(&decider, held, tracker, &mut out[BATCH]);
                        tracing::warn!(pipeline = %self.pipeline, events = diverted,
                            "real-time path degraded: events waiting for it go to the batch path");
                    }
                }
                // A closed channel means the path ended; its task result names the reason.
                _ => {
                    let _ = tx.send(routed).await;
                }
            }
        }
        Ok(())
    }

    fn persist(&mut self, tracker: &mut Tracker, names: &[String]) -> Result<(), RuntimeError> {
        if !tracker.take_dirty() {
            return Ok(());
        }
        // Dead letters first: a committed position must never skip a letter not yet on disk.
        self.dead_letters.sync()?;
        let checkpoint = Checkpoint {
            pipeline: self.pipeline.clone(),
            updated_at: chrono::Utc::now(),
            sources: names
                .iter()
                .cloned()
                .zip(tracker.progress().iter().cloned())
                .collect(),
        };
        self.checkpoint.save(&checkpoint)?;
        self.metrics
            .checkpoint_saves
            .with_label_values(&[&self.pipeline])
            .inc();
        Ok(())
    }
}

/// Sends `routed` to the real-time path, unless it is or becomes degraded before its queue
/// has room: then the events are handed back.
async fn send_unless_degraded(
    tx: &mpsc::Sender<Vec<Routed>>,
    routed: Vec<Routed>,
    health: &crate::decider::PathHealth,
) -> Option<Vec<Routed>> {
    tokio::select! {
        biased;
        _ = health.degraded() => Some(routed),
        permit = tx.reserve() => {
            // A closed channel means the path ended; its task result names the reason.
            if let Ok(permit) = permit {
                permit.send(routed);
            }
            None
        }
    }
}

/// Re-routes events held back from the degraded real-time path to the batch path: in the
/// tracker, and merged into `batch` (this dispatch's batch share) in seq order. Events the
/// rules had sent to both paths are already in `batch`. Returns how many were diverted.
fn divert(
    decider: &Decider,
    held: Vec<Routed>,
    tracker: &mut Tracker,
    batch: &mut Vec<Routed>,
) -> usize {
    let mut moved = Vec::with_capacity(held.len());
    for routed in held {
        let Some(had) = tracker.reroute(routed.seq, |had| decider.divert(had)) else {
            continue;
        };
        if had & (1 << BATCH) == 0 {
            moved.push(routed);
        }
    }
    let count = moved.len();
    batch.extend(moved);
    // Both parts are in seq order already; this runs only when the path degrades.
    batch.sort_by_key(|routed| routed.seq);
    count
}

#[cfg(test)]
mod tests;
