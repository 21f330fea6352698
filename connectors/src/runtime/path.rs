//! What a path is to the runtime: something that takes routed events in order, makes them
//! durable and acknowledges up to a sequence number.

use crate::event::ChangeEvent;
use std::sync::Arc;
use tokio::sync::mpsc;

/// An event on its way down a path, with the runtime's sequence number.
#[derive(Debug, Clone)]
pub struct Routed {
    pub seq: u64,
    pub event: Arc<ChangeEvent>,
}

#[derive(Debug)]
pub(crate) struct Ack {
    pub path: usize,
    pub seq: u64,
    pub events: u64,
}

/// How a path acknowledges: "everything up to `seq` is durable". Acks never block, so a path
/// can acknowledge while the runtime waits to hand it more events.
pub struct Acker {
    path: usize,
    tx: mpsc::UnboundedSender<Ack>,
}

impl Acker {
    pub(crate) fn new(path: usize, tx: mpsc::UnboundedSender<Ack>) -> Self {
        Self { path, tx }
    }

    /// Acknowledges everything up to `seq`; `events` is how many events that made durable.
    pub fn ack(&self, seq: u64, events: u64) {
        // The runtime outlives its paths; a send error means it already failed.
        let _ = self.tx.send(Ack {
            path: self.path,
            seq,
            events,
        });
    }
}

pub type PathError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A path: the batch path (snapshots) or the real-time path (Kafka).
#[async_trait::async_trait]
pub trait Path: Send {
    /// Consumes batches of events in order until `events` closes, then makes the rest durable,
    /// acknowledges it and returns.
    async fn run(
        self: Box<Self>,
        events: mpsc::Receiver<Vec<Routed>>,
        acks: Acker,
    ) -> Result<(), PathError>;
}
