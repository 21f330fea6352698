//! Source positions. Every event carries the position it was read at, and resuming from a
//! committed position is the contract every source keeps: the event *at* a committed position
//! has been delivered; reading resumes with the one after it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Where a changefeed consumer resumes on one Kafka partition: the offset to read from and
/// the TiCDC watermark already seen before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionResume {
    pub offset: i64,
    #[serde(default)]
    pub watermark: u64,
}

/// Progress of a chunked snapshot: the table being read (`None` once every table is done)
/// and the primary key of the last row delivered from it, as key texts (`Value::key_text`;
/// empty: from the start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SnapshotCursor {
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

/// Where in its source an event was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Position {
    /// Oracle redo: the SCN of the change, the commit SCN of its transaction and its redo thread.
    /// `resume_scn` is where mining must restart so that no open transaction is lost (the start
    /// SCN of the oldest transaction still open when this event was emitted); `committed` holds
    /// the last commit SCN emitted per redo thread, so RAC threads never emit twice. `xid` and
    /// `index` (the event's place within its transaction) order the events of transactions
    /// that commit at the same SCN.
    Oracle {
        scn: u64,
        commit_scn: u64,
        thread: u16,
        resume_scn: u64,
        #[serde(default, deserialize_with = "thread_map")]
        committed: BTreeMap<u16, u64>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        xid: String,
        #[serde(default)]
        index: u32,
    },
    /// TiDB: the TSO commit timestamp of the transaction (TiCDC `commitTs`) and the index of
    /// the event within that transaction (one transaction's events share the commit TS).
    ///
    /// `offsets` is where a restarted changefeed consumer must read again, per Kafka partition
    /// (keyed `topic/partition`):
    /// the lowest offset of a message not yet emitted when this event was (with the watermark
    /// seen before that offset), so that replaying from there and skipping everything at or
    /// before the committed `(commit_ts, index)` neither loses nor repeats an event. Empty for
    /// positions not read from Kafka.
    Tidb {
        commit_ts: u64,
        #[serde(default)]
        index: u32,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        offsets: BTreeMap<String, PartitionResume>,
        /// How far the initial snapshot had got when this event was emitted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<SnapshotCursor>,
    },
    /// A flat file: its id (the name relative to the source root), the byte offset and length
    /// of the record, and the 1-based record number. Resuming reads from `offset + length`.
    File {
        file: String,
        offset: u64,
        length: u64,
        record: u64,
    },
}

/// Thread numbers are map keys, which JSON writes as strings; inside an internally tagged
/// enum serde hands them over as strings too, so they are parsed here.
fn thread_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<u16, u64>, D::Error> {
    let raw = BTreeMap::<String, u64>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            k.trim()
                .parse::<u16>()
                .map(|k| (k, v))
                .map_err(|_| serde::de::Error::custom(format!("`{k}` is not a redo thread number")))
        })
        .collect()
}

impl Position {
    /// A TiDB position with no Kafka offsets (a snapshot read, or tests).
    pub fn tidb(commit_ts: u64, index: u32) -> Self {
        Position::Tidb {
            commit_ts,
            index,
            offsets: BTreeMap::new(),
            snapshot: None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Position::Oracle { .. } => "oracle",
            Position::Tidb { .. } => "tidb",
            Position::File { .. } => "file",
        }
    }
}

impl Position {
    /// Whether this position is at or before `other` in its source's order; `None` where the
    /// two cannot be compared. Used to skip events a restarted path has already committed.
    ///
    /// - TiDB: by commit TS, then index within the transaction.
    /// - Files: by file name (files are read in name order), then byte offset. A file that
    ///   arrives late with a smaller name than the committed one compares as before it: such a
    ///   file must be given a name that sorts after the files already read.
    /// - Oracle: transactions are emitted in commit order per redo thread, each whole, those
    ///   committing at the same SCN on a thread in XID order. `self` is not after `other` when
    ///   its transaction committed on its thread before `other`'s committed SCN for that
    ///   thread, or it is at or before `other` within the same commit SCN and thread. Threads
    ///   are compared through `other.committed`, so a RAC thread whose redo arrives late is
    ///   not taken as already emitted.
    pub fn not_after(&self, other: &Position) -> Option<bool> {
        match (self, other) {
            (
                Position::Oracle {
                    commit_scn,
                    thread,
                    xid,
                    index,
                    ..
                },
                Position::Oracle {
                    commit_scn: o_commit,
                    thread: o_thread,
                    committed: o_committed,
                    xid: o_xid,
                    index: o_index,
                    ..
                },
            ) => {
                let done = if thread == o_thread {
                    Some(*o_commit)
                } else {
                    o_committed.get(thread).copied()
                };
                Some(match done {
                    None => false,
                    Some(c) if *commit_scn != c => *commit_scn < c,
                    Some(_) if thread != o_thread || commit_scn != o_commit => true,
                    Some(_) => (xid, index) <= (o_xid, o_index),
                })
            }
            (
                Position::Tidb {
                    commit_ts: a,
                    index: i,
                    ..
                },
                Position::Tidb {
                    commit_ts: b,
                    index: j,
                    ..
                },
            ) => Some((a, i) <= (b, j)),
            (
                Position::File {
                    file: a, offset: x, ..
                },
                Position::File {
                    file: b, offset: y, ..
                },
            ) => Some((a, x) <= (b, y)),
            _ => None,
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
            Position::Tidb {
                commit_ts, index, ..
            } => write!(f, "commit-ts {commit_ts} #{index}"),
            Position::File {
                file,
                offset,
                record,
                ..
            } => write!(f, "{file} record {record} at byte {offset}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, offset: u64) -> Position {
        Position::File {
            file: name.into(),
            offset,
            length: 100,
            record: offset / 100 + 1,
        }
    }

    #[test]
    fn positions_compare_within_their_kind_only() {
        let tidb = |commit_ts, index| Position::tidb(commit_ts, index);
        assert_eq!(tidb(5, 2).not_after(&tidb(5, 2)), Some(true));
        assert_eq!(
            tidb(5, 3).not_after(&tidb(5, 2)),
            Some(false),
            "same transaction, later event"
        );
        assert_eq!(tidb(4, 9).not_after(&tidb(5, 0)), Some(true));
        assert_eq!(file("a.dat", 900).not_after(&file("b.dat", 0)), Some(true));
        assert_eq!(file("b.dat", 100).not_after(&file("b.dat", 0)), Some(false));
        assert_eq!(tidb(1, 0).not_after(&file("a.dat", 0)), None);
        let ora = oracle(2, 1, "0A00", 0, &[(1, 2)]);
        assert_eq!(ora.not_after(&ora), Some(true));
        assert_eq!(ora.not_after(&tidb(1, 0)), None);
    }

    fn oracle(
        commit_scn: u64,
        thread: u16,
        xid: &str,
        index: u32,
        committed: &[(u16, u64)],
    ) -> Position {
        Position::Oracle {
            scn: commit_scn - 1,
            commit_scn,
            thread,
            resume_scn: 1,
            committed: committed.iter().copied().collect(),
            xid: xid.into(),
            index,
        }
    }

    #[test]
    fn oracle_positions_survive_a_json_round_trip() {
        let p = oracle(100, 2, "0B", 3, &[(1, 90), (2, 100)]);
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Position>(&text).unwrap(), p);
        let value = serde_json::to_value(&p).unwrap();
        assert_eq!(serde_json::from_value::<Position>(value).unwrap(), p);
    }

    #[test]
    fn oracle_positions_follow_commit_order_per_thread() {
        // The last event emitted: thread 1, commit SCN 100, transaction 0B, event #2; thread 2
        // has emitted up to commit SCN 90.
        let last = oracle(100, 1, "0B", 2, &[(1, 100), (2, 90)]);
        let at = |scn, thread, xid, index| oracle(scn, thread, xid, index, &[]).not_after(&last);
        assert_eq!(at(100, 1, "0B", 2), Some(true), "the position itself");
        assert_eq!(
            at(100, 1, "0B", 1),
            Some(true),
            "earlier in the same transaction"
        );
        assert_eq!(
            at(100, 1, "0B", 3),
            Some(false),
            "later in the same transaction"
        );
        assert_eq!(
            at(100, 1, "0A", 9),
            Some(true),
            "same SCN, smaller XID: emitted before"
        );
        assert_eq!(
            at(100, 1, "0C", 0),
            Some(false),
            "same SCN, larger XID: emitted after"
        );
        assert_eq!(at(99, 1, "FF", 7), Some(true));
        assert_eq!(at(101, 1, "00", 0), Some(false));
        assert_eq!(
            at(90, 2, "01", 5),
            Some(true),
            "thread 2 up to its committed SCN"
        );
        assert_eq!(
            at(95, 2, "01", 0),
            Some(false),
            "thread 2 redo that arrived late is not taken as emitted, though its SCN is below 100"
        );
        assert_eq!(at(5, 3, "01", 0), Some(false), "a thread never emitted");
    }
}
