//! What a source is to the runtime: something that reads from a resume point and pushes items
//! into a bounded channel. It never knows which paths are downstream.

use crate::deadletter::DeadLetter;
use crate::event::{ChangeEvent, Position};
use crate::runtime::SourceProgress;
use tokio::sync::{mpsc, watch};

/// One thing a source produces.
#[derive(Debug)]
pub enum SourceItem {
    Event(ChangeEvent),
    /// A record that could not be read; it goes to the dead-letter destination.
    Bad(DeadLetter),
    /// A unit of the source (a file) was read to the end at this position.
    Completed(Position),
}

impl SourceItem {
    pub fn position(&self) -> &Position {
        match self {
            SourceItem::Event(e) => &e.position,
            SourceItem::Bad(d) => &d.position,
            SourceItem::Completed(p) => p,
        }
    }
}

/// What travels from a source to the router: its items, and its heartbeats.
///
/// A heartbeat is not a [`SourceItem`] (sources match on those): a source sends one through
/// [`Emitter::heartbeat`], the router commits its position in order with the items before it,
/// and no path ever sees it.
#[derive(Debug)]
pub(crate) enum Queued {
    Item(SourceItem),
    /// The source has read up to this position and has nothing to emit before it.
    Heartbeat(Position),
}

/// A batch of items from one source (batched to keep channel traffic off the per-event path).
pub(crate) struct SourceBatch {
    pub source: usize,
    pub items: Vec<Queued>,
}

const BATCH: usize = 512;

/// Where a source pushes its items. Sends block (backpressure) when the pipeline is behind,
/// so memory stays bounded however large the input.
pub struct Emitter {
    source: usize,
    tx: mpsc::Sender<SourceBatch>,
    buf: Vec<Queued>,
}

/// The pipeline has stopped taking items (it failed or is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the pipeline stopped taking events")]
pub struct Closed;

impl Emitter {
    pub(crate) fn new(source: usize, tx: mpsc::Sender<SourceBatch>) -> Self {
        Self {
            source,
            tx,
            buf: Vec::with_capacity(BATCH),
        }
    }

    fn take(&mut self) -> SourceBatch {
        SourceBatch {
            source: self.source,
            items: std::mem::replace(&mut self.buf, Vec::with_capacity(BATCH)),
        }
    }

    /// From async code.
    pub async fn push(&mut self, item: SourceItem) -> Result<(), Closed> {
        self.buf.push(Queued::Item(item));
        if self.buf.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Reports that the source has read up to `position` with nothing to emit before it (a
    /// following source whose tables are quiet), so the runtime can persist it as the resume
    /// point once everything pushed before it is acknowledged. It goes to no path. The batch
    /// is flushed: a source with nothing to say sends nothing else to carry it.
    pub async fn heartbeat(&mut self, position: Position) -> Result<(), Closed> {
        self.buf.push(Queued::Heartbeat(position));
        self.flush().await
    }

    pub async fn flush(&mut self) -> Result<(), Closed> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let batch = self.take();
        self.tx.send(batch).await.map_err(|_| Closed)
    }

    /// From a blocking thread (file readers run under `spawn_blocking`).
    pub fn push_blocking(&mut self, item: SourceItem) -> Result<(), Closed> {
        self.buf.push(Queued::Item(item));
        if self.buf.len() >= BATCH {
            self.flush_blocking()?;
        }
        Ok(())
    }

    pub fn flush_blocking(&mut self) -> Result<(), Closed> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let batch = self.take();
        self.tx.blocking_send(batch).map_err(|_| Closed)
    }
}

/// Tells sources to stop: a flag, never work done in a signal handler.
#[derive(Clone)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a stop is requested.
    pub async fn stopped(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}

/// The error a source ends with.
pub type SourceError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A source of change events.
#[async_trait::async_trait]
pub trait Source: Send {
    /// The source's name in the manifest.
    fn name(&self) -> &str;

    /// Reads from just after `resume` (or from the beginning) and pushes every item into
    /// `out`, in source order. A finite source returns once it has pushed (and flushed)
    /// everything; a following source returns when `stop` is raised.
    async fn run(
        self: Box<Self>,
        resume: SourceProgress,
        out: Emitter,
        stop: StopSignal,
    ) -> Result<(), SourceError>;
}
