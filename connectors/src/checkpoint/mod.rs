//! Checkpoints: the committed progress of every source, persisted so a restart resumes where
//! every path had acknowledged. Embedded mode keeps it in a file replaced atomically.

mod file;

pub use file::FileCheckpointStore;

use crate::runtime::SourceProgress;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The committed progress of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub pipeline: String,
    pub updated_at: DateTime<Utc>,
    /// Progress per source name.
    pub sources: BTreeMap<String, SourceProgress>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write checkpoint {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "checkpoint {path} is corrupt ({reason}); refusing to start from scratch. Inspect it, restore a backup, or delete it to re-read every source from the beginning"
    )]
    Corrupt { path: String, reason: String },
    #[error("checkpoint {path} belongs to pipeline `{found}`, not `{expected}`")]
    WrongPipeline {
        path: String,
        found: String,
        expected: String,
    },
}

/// Where a pipeline's checkpoint lives.
pub trait CheckpointStore: Send {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointError>;
    fn save(&mut self, checkpoint: &Checkpoint) -> Result<(), CheckpointError>;
}
