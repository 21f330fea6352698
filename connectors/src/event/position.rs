//! Source positions. Every event carries the position it was read at, and resuming from a
//! committed position is the contract every source keeps: the event *at* a committed position
//! has been delivered; reading resumes with the one after it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Where in its source an event was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Position {
    /// Oracle redo: the SCN of the change, the commit SCN of its transaction and its redo thread.
    /// `resume_scn` is where mining must restart so that no open transaction is lost (the start
    /// SCN of the oldest transaction still open when this event was emitted); `committed` holds
    /// the last commit SCN emitted per redo thread, so RAC threads never emit twice.
    Oracle {
        scn: u64,
        commit_scn: u64,
        thread: u16,
        resume_scn: u64,
        #[serde(default)]
        committed: BTreeMap<u16, u64>,
    },
    /// TiDB: the TSO commit timestamp of the transaction (TiCDC `commitTs`).
    Tidb { commit_ts: u64 },
    /// A flat file: its id (the name relative to the source root), the byte offset and length
    /// of the record, and the 1-based record number. Resuming reads from `offset + length`.
    File {
        file: String,
        offset: u64,
        length: u64,
        record: u64,
    },
}

impl Position {
    pub fn kind(&self) -> &'static str {
        match self {
            Position::Oracle { .. } => "oracle",
            Position::Tidb { .. } => "tidb",
            Position::File { .. } => "file",
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Oracle {
                scn,
                commit_scn,
                thread,
                ..
            } => write!(f, "scn {scn} (commit {commit_scn}, thread {thread})"),
            Position::Tidb { commit_ts } => write!(f, "commit-ts {commit_ts}"),
            Position::File {
                file,
                offset,
                record,
                ..
            } => write!(f, "{file} record {record} at byte {offset}"),
        }
    }
}
