//! The transaction buffer: LogMiner returns every change as it was made, committed or not,
//! so rows are held per transaction (XID) until its COMMIT (then handed out in order) or
//! ROLLBACK (then dropped). A transaction larger than the memory limit moves its rows to a
//! spill file and reads them back at commit; one older than the abandon age is dropped and
//! remembered so its later rows are ignored too.

use super::contents::{ContentRow, OpCode};
use chrono::NaiveDateTime;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone)]
pub struct BufferConfig {
    /// Bytes of rows one transaction may hold in memory before it spills to disk.
    pub memory_limit: usize,
    /// Where spill files go.
    pub spill_dir: PathBuf,
    /// Transactions whose first change is older than this (by database time) are abandoned.
    pub abandon_after: Option<chrono::Duration>,
    /// Ignore transactions whose START was not seen (they began before the mined range and
    /// their earlier changes are not in it). Off for CSV exports that leave START rows out.
    pub require_start: bool,
    /// Hold LOB rows (SEL_LOB_LOCATOR, LOB_WRITE, LOB_TRIM, LOB_ERASE) with their
    /// transaction, for LOB assembly; otherwise they are dropped.
    pub lobs: bool,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            memory_limit: 64 << 20,
            spill_dir: std::env::temp_dir(),
            abandon_after: None,
            require_start: false,
            lobs: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("transaction {xid}: spill file {path}: {source}")]
    Spill {
        xid: String,
        path: String,
        source: std::io::Error,
    },
}

/// Counters since the buffer was created.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BufferStats {
    pub committed: u64,
    pub rolled_back: u64,
    pub abandoned: u64,
    /// Committed transactions that were not emitted: abandoned earlier, or started before the
    /// mined range.
    pub ignored_commits: u64,
    pub spilled_transactions: u64,
    /// Partial rollbacks applied (`ROLLBACK = 1` rows).
    pub undone_rows: u64,
}

/// What a pushed row led to.
#[derive(Debug)]
pub enum Outcome {
    Nothing,
    Committed(CommittedTxn),
    RolledBack(String),
    /// A commit of a transaction that is not emitted, and why.
    Ignored {
        xid: String,
        reason: &'static str,
    },
}

struct Spill {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    rows: u64,
}

impl Drop for Spill {
    fn drop(&mut self) {
        self.writer = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Txn {
    xid: String,
    start_scn: u64,
    start_time: Option<NaiveDateTime>,
    seen_start: bool,
    rows: Vec<ContentRow>,
    bytes: usize,
    /// A row whose SQL_REDO continues in the next row (CSF = 1).
    pending: Option<ContentRow>,
    spill: Option<Spill>,
    /// Partial rollbacks that hit spilled rows: the ROW_ID and how many rows were spilled then.
    tombstones: Vec<(String, u64)>,
    undone: u64,
}

static SPILL_SEQ: AtomicU64 = AtomicU64::new(0);

impl Txn {
    fn spill_rows(&mut self, dir: &std::path::Path) -> Result<bool, BufferError> {
        let err = |xid: &str, path: &std::path::Path, source| BufferError::Spill {
            xid: xid.to_string(),
            path: path.display().to_string(),
            source,
        };
        let first = self.spill.is_none();
        if first {
            let n = SPILL_SEQ.fetch_add(1, Ordering::Relaxed);
            let safe: String = self
                .xid
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect();
            let path = dir.join(format!(
                "syncmesh-oracle-{}-{safe}-{n}.spill",
                std::process::id()
            ));
            let file = File::create(&path).map_err(|e| err(&self.xid, &path, e))?;
            self.spill = Some(Spill {
                path,
                writer: Some(BufWriter::new(file)),
                rows: 0,
            });
        }
        let Some(spill) = self.spill.as_mut() else {
            return Ok(first);
        };
        let Some(w) = spill.writer.as_mut() else {
            return Ok(first);
        };
        for row in self.rows.drain(..) {
            serde_json::to_writer(&mut *w, &row)
                .map_err(std::io::Error::other)
                .and_then(|()| w.write_all(b"\n"))
                .map_err(|e| err(&self.xid, &spill.path, e))?;
            spill.rows += 1;
        }
        self.bytes = 0;
        Ok(first)
    }

    /// `ROLLBACK = 1`: undo the latest change to the same row, of the same kind (a DML
    /// row's undo never takes one of the LOB rows that share its ROW_ID, nor the reverse).
    fn undo(&mut self, undo: &ContentRow) {
        self.undone += 1;
        let key = undo_key(undo);
        if let Some(i) = self.rows.iter().rposition(|r| undo_key(r) == key) {
            let gone = self.rows.remove(i);
            self.bytes = self.bytes.saturating_sub(gone.approx_bytes());
        } else if let Some(spill) = &self.spill {
            self.tombstones.push((key.into_owned(), spill.rows));
        }
    }
}

/// A committed transaction, its rows in change order (spilled rows are read back lazily).
pub struct CommittedTxn {
    pub xid: String,
    pub thread: u16,
    pub start_scn: u64,
    pub commit_scn: u64,
    pub commit_time: Option<NaiveDateTime>,
    /// Rows (after partial rollbacks), spilled ones included.
    pub row_count: u64,
    spill: Option<Spill>,
    tombstones: Vec<(String, u64)>,
    rows: Vec<ContentRow>,
}

impl std::fmt::Debug for CommittedTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommittedTxn")
            .field("xid", &self.xid)
            .field("commit_scn", &self.commit_scn)
            .field("row_count", &self.row_count)
            .finish()
    }
}

impl CommittedTxn {
    /// Whether some rows were read back from disk.
    pub fn spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// The rows in change order.
    pub fn into_rows(
        mut self,
    ) -> Result<impl Iterator<Item = Result<ContentRow, BufferError>>, BufferError> {
        let xid = self.xid.clone();
        let mut spilled: Box<dyn Iterator<Item = Result<ContentRow, BufferError>>> =
            Box::new(std::iter::empty());
        if let Some(mut spill) = self.spill.take() {
            let path = spill.path.clone();
            let err = {
                let xid = xid.clone();
                let path = path.clone();
                move |source: std::io::Error| BufferError::Spill {
                    xid: xid.clone(),
                    path: path.display().to_string(),
                    source,
                }
            };
            if let Some(mut w) = spill.writer.take() {
                w.flush().map_err(&err)?;
            }
            let dropped = if self.tombstones.is_empty() {
                HashSet::new()
            } else {
                undone_indexes(&path, &self.tombstones).map_err(&err)?
            };
            let file = File::open(&path).map_err(&err)?;
            let lines = BufReader::new(file).lines();
            spilled = Box::new(
                lines
                    .enumerate()
                    .filter(move |(i, _)| !dropped.contains(&(*i as u64)))
                    .map(move |(_, line)| {
                        // Keep the spill (and so its file) alive until the rows are read.
                        let _keep = &spill;
                        line.and_then(|l| serde_json::from_str(&l).map_err(std::io::Error::other))
                            .map_err(&err)
                    }),
            );
        }
        Ok(spilled.chain(self.rows.into_iter().map(Ok)))
    }
}

/// What a partial rollback matches on: the ROW_ID, marked for LOB rows.
fn undo_key(row: &ContentRow) -> std::borrow::Cow<'_, str> {
    if super::lob::is_lob_op(row.op) {
        std::borrow::Cow::Owned(format!("lob:{}", row.row_id))
    } else {
        std::borrow::Cow::Borrowed(&row.row_id)
    }
}

/// Which spilled rows the tombstones undo: replaying the spill in order, each tombstone takes
/// the latest not-yet-undone row with its key ([`undo_key`]) among the rows spilled before it.
fn undone_indexes(
    path: &std::path::Path,
    tombstones: &[(String, u64)],
) -> std::io::Result<HashSet<u64>> {
    let wanted: HashSet<&str> = tombstones.iter().map(|(r, _)| r.as_str()).collect();
    let mut stacks: HashMap<String, Vec<u64>> = HashMap::new();
    let mut dropped = HashSet::new();
    let mut next = tombstones.iter().peekable();
    let reader = BufReader::new(File::open(path)?);
    let mut apply = |upto: u64, stacks: &mut HashMap<String, Vec<u64>>| {
        while let Some((row_id, at)) = next.peek() {
            if *at > upto {
                break;
            }
            if let Some(i) = stacks.get_mut(row_id).and_then(Vec::pop) {
                dropped.insert(i);
            }
            next.next();
        }
    };
    for (i, line) in reader.lines().enumerate() {
        apply(i as u64, &mut stacks);
        let row: ContentRow = serde_json::from_str(&line?).map_err(std::io::Error::other)?;
        let key = undo_key(&row);
        if wanted.contains(key.as_ref()) {
            stacks.entry(key.into_owned()).or_default().push(i as u64);
        }
    }
    apply(u64::MAX, &mut stacks);
    Ok(dropped)
}

/// Open transactions by XID.
pub struct TxnBuffer {
    config: BufferConfig,
    open: HashMap<String, Txn>,
    abandoned: HashSet<String>,
    stats: BufferStats,
}

impl TxnBuffer {
    pub fn new(config: BufferConfig) -> Self {
        Self {
            config,
            open: HashMap::new(),
            abandoned: HashSet::new(),
            stats: BufferStats::default(),
        }
    }

    pub fn stats(&self) -> &BufferStats {
        &self.stats
    }

    pub fn active(&self) -> usize {
        self.open.len()
    }

    /// Bytes held in memory by open transactions.
    pub fn memory(&self) -> usize {
        self.open.values().map(|t| t.bytes).sum()
    }

    /// The start SCN of the oldest open transaction: mining must restart there.
    pub fn oldest_start(&self) -> Option<u64> {
        self.open.values().map(|t| t.start_scn).min()
    }

    fn txn(&mut self, row: &ContentRow) -> &mut Txn {
        self.open.entry(row.xid.clone()).or_insert_with(|| Txn {
            xid: row.xid.clone(),
            start_scn: row.start_scn.unwrap_or(row.scn).min(row.scn),
            start_time: row.timestamp,
            seen_start: false,
            rows: Vec::new(),
            bytes: 0,
            pending: None,
            spill: None,
            tombstones: Vec::new(),
            undone: 0,
        })
    }

    /// Feeds one row, in `V$LOGMNR_CONTENTS` order.
    pub fn push(&mut self, row: ContentRow) -> Result<Outcome, BufferError> {
        if self.abandoned.contains(&row.xid) {
            return Ok(match row.op {
                OpCode::Commit => {
                    self.abandoned.remove(&row.xid);
                    self.stats.ignored_commits += 1;
                    Outcome::Ignored {
                        xid: row.xid,
                        reason: "it was abandoned earlier",
                    }
                }
                OpCode::Rollback => {
                    self.abandoned.remove(&row.xid);
                    Outcome::Nothing
                }
                _ => Outcome::Nothing,
            });
        }
        match row.op {
            OpCode::Start => {
                let txn = self.txn(&row);
                txn.seen_start = true;
                txn.start_scn = txn.start_scn.min(row.scn);
                Ok(Outcome::Nothing)
            }
            OpCode::Insert | OpCode::Update | OpCode::Delete | OpCode::Ddl => self.change(row),
            OpCode::Commit => {
                let Some(mut txn) = self.open.remove(&row.xid) else {
                    return Ok(Outcome::Nothing);
                };
                if self.config.require_start && !txn.seen_start {
                    self.stats.ignored_commits += 1;
                    return Ok(Outcome::Ignored {
                        xid: row.xid,
                        reason: "it started before the mined SCN range",
                    });
                }
                if let Some(p) = txn.pending.take() {
                    // A CSF chain cut short by the commit: keep what there is.
                    txn.rows.push(p);
                }
                self.stats.committed += 1;
                self.stats.undone_rows += txn.undone;
                let spilled_rows = txn.spill.as_ref().map_or(0, |s| s.rows);
                let row_count = (spilled_rows + txn.rows.len() as u64)
                    .saturating_sub(txn.tombstones.len() as u64);
                Ok(Outcome::Committed(CommittedTxn {
                    xid: txn.xid,
                    thread: row.thread,
                    start_scn: txn.start_scn,
                    commit_scn: row.scn,
                    commit_time: row.commit_timestamp.or(row.timestamp),
                    row_count,
                    spill: txn.spill,
                    tombstones: txn.tombstones,
                    rows: txn.rows,
                }))
            }
            OpCode::Rollback => {
                if self.open.remove(&row.xid).is_some() {
                    self.stats.rolled_back += 1;
                }
                Ok(Outcome::RolledBack(row.xid))
            }
            OpCode::Other(_) if self.config.lobs && super::lob::is_lob_op(row.op) => {
                self.change(row)
            }
            OpCode::Other(_) => Ok(Outcome::Nothing),
        }
    }

    fn change(&mut self, row: ContentRow) -> Result<Outcome, BufferError> {
        let limit = self.config.memory_limit;
        let dir = self.config.spill_dir.clone();
        let txn = self.txn(&row);
        let row = match txn.pending.take() {
            Some(mut first) => {
                first.sql_redo.push_str(&row.sql_redo);
                first.csf = row.csf;
                first
            }
            None => row,
        };
        if row.csf {
            txn.pending = Some(row);
            return Ok(Outcome::Nothing);
        }
        if row.rollback {
            txn.undo(&row);
            return Ok(Outcome::Nothing);
        }
        txn.bytes += row.approx_bytes();
        txn.rows.push(row);
        if txn.bytes > limit && txn.spill_rows(&dir)? {
            self.stats.spilled_transactions += 1;
        }
        Ok(Outcome::Nothing)
    }

    /// Abandons transactions whose first change is older than the abandon age, measured
    /// against `now` (the database time of the latest mined row). Returns their XIDs.
    pub fn abandon_old(&mut self, now: NaiveDateTime) -> Vec<(String, u64)> {
        let Some(age) = self.config.abandon_after else {
            return Vec::new();
        };
        let old: Vec<String> = self
            .open
            .values()
            .filter(|t| t.start_time.is_some_and(|s| now - s > age))
            .map(|t| t.xid.clone())
            .collect();
        let mut out = Vec::with_capacity(old.len());
        for xid in old {
            if let Some(t) = self.open.remove(&xid) {
                self.stats.abandoned += 1;
                out.push((xid.clone(), t.start_scn));
                self.abandoned.insert(xid);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scn: u64, xid: &str, op: OpCode, sql: &str, row_id: &str) -> ContentRow {
        ContentRow {
            scn,
            start_scn: None,
            commit_scn: None,
            timestamp: chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, (scn % 60) as u32)),
            commit_timestamp: None,
            xid: xid.into(),
            op,
            sql_redo: sql.into(),
            csf: false,
            rollback: false,
            rs_id: format!(" 0x{scn:06x}.0001.0010 "),
            ssn: 0,
            row_id: row_id.into(),
            seg_owner: "HR".into(),
            table_name: "EMP".into(),
            thread: 1,
            info: String::new(),
            row: 0,
            line: 0,
        }
    }

    fn sqls(c: CommittedTxn) -> Vec<String> {
        c.into_rows()
            .unwrap()
            .map(|r| r.unwrap().sql_redo)
            .collect()
    }

    fn committed(o: Outcome) -> CommittedTxn {
        match o {
            Outcome::Committed(c) => c,
            other => panic!("expected a commit, got {other:?}"),
        }
    }

    #[test]
    fn commit_emits_in_order_rollback_drops_and_csf_joins() {
        let mut b = TxnBuffer::new(BufferConfig::default());
        b.push(row(10, "A", OpCode::Start, "", "")).unwrap();
        b.push(row(11, "A", OpCode::Insert, "i1", "R1")).unwrap();
        b.push(row(12, "B", OpCode::Start, "", "")).unwrap();
        b.push(row(13, "B", OpCode::Insert, "b1", "R9")).unwrap();
        let mut first = row(14, "A", OpCode::Insert, "i2-part1 ", "R2");
        first.csf = true;
        b.push(first).unwrap();
        b.push(row(14, "A", OpCode::Insert, "i2-part2", "R2"))
            .unwrap();
        assert_eq!(b.oldest_start(), Some(10));
        b.push(row(15, "B", OpCode::Rollback, "", "")).unwrap();
        let c = committed(b.push(row(16, "A", OpCode::Commit, "", "")).unwrap());
        assert_eq!((c.start_scn, c.commit_scn, c.row_count), (10, 16, 2));
        assert_eq!(sqls(c), ["i1", "i2-part1 i2-part2"]);
        assert_eq!(b.active(), 0);
        assert_eq!(b.stats().rolled_back, 1);
    }

    #[test]
    fn partial_rollback_undoes_the_latest_change_to_the_row() {
        let mut b = TxnBuffer::new(BufferConfig::default());
        b.push(row(10, "A", OpCode::Start, "", "")).unwrap();
        b.push(row(11, "A", OpCode::Insert, "ins R1", "R1"))
            .unwrap();
        b.push(row(12, "A", OpCode::Update, "upd R1", "R1"))
            .unwrap();
        b.push(row(13, "A", OpCode::Insert, "ins R2", "R2"))
            .unwrap();
        let mut undo = row(14, "A", OpCode::Delete, "undo of upd R1", "R1");
        undo.rollback = true;
        b.push(undo).unwrap();
        let c = committed(b.push(row(15, "A", OpCode::Commit, "", "")).unwrap());
        assert_eq!(sqls(c), ["ins R1", "ins R2"]);
    }

    #[test]
    fn a_partial_rollback_of_a_dml_row_skips_the_lob_rows_of_the_same_row() {
        let dir = tempfile::tempdir().unwrap();
        for limit in [usize::MAX, 1] {
            let mut b = TxnBuffer::new(BufferConfig {
                memory_limit: limit,
                spill_dir: dir.path().to_path_buf(),
                ..Default::default()
            });
            b.push(row(10, "A", OpCode::Start, "", "")).unwrap();
            b.push(row(11, "A", OpCode::Update, "upd R1", "R1"))
                .unwrap();
            b.push(row(12, "A", OpCode::Other(9), "locate R1", "R1"))
                .unwrap();
            b.push(row(13, "A", OpCode::Other(10), "write R1", "R1"))
                .unwrap();
            let mut undo = row(14, "A", OpCode::Update, "undo of upd R1", "R1");
            undo.rollback = true;
            b.push(undo).unwrap();
            let c = committed(b.push(row(15, "A", OpCode::Commit, "", "")).unwrap());
            assert_eq!(sqls(c), ["locate R1", "write R1"], "memory limit {limit}");
        }
    }

    #[test]
    fn large_transactions_spill_and_read_back_with_rollbacks() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = TxnBuffer::new(BufferConfig {
            memory_limit: 600,
            spill_dir: dir.path().to_path_buf(),
            ..Default::default()
        });
        b.push(row(1, "A", OpCode::Start, "", "")).unwrap();
        let mut want = Vec::new();
        for i in 0..50u64 {
            let rid = format!("R{}", i % 7);
            b.push(row(2 + i, "A", OpCode::Update, &format!("u{i}"), &rid))
                .unwrap();
            want.push((format!("u{i}"), rid));
            if i % 10 == 9 {
                // Undo the latest change to R3, which by now is on disk or in memory.
                let mut undo = row(2 + i, "A", OpCode::Update, "undo", "R3");
                undo.rollback = true;
                b.push(undo).unwrap();
                let at = want.iter().rposition(|(_, r)| r == "R3").unwrap();
                want.remove(at);
            }
        }
        assert!(b.memory() <= 600 + 400, "memory {}", b.memory());
        assert_eq!(b.stats().spilled_transactions, 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let c = committed(b.push(row(99, "A", OpCode::Commit, "", "")).unwrap());
        assert!(c.spilled());
        assert_eq!(c.row_count, want.len() as u64);
        let got = sqls(c);
        assert_eq!(got, want.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "spill file removed"
        );
    }

    #[test]
    fn old_transactions_are_abandoned_and_their_commit_ignored() {
        let mut b = TxnBuffer::new(BufferConfig {
            abandon_after: Some(chrono::Duration::seconds(20)),
            ..Default::default()
        });
        b.push(row(1, "OLD", OpCode::Start, "", "")).unwrap();
        b.push(row(2, "OLD", OpCode::Insert, "x", "R1")).unwrap();
        b.push(row(30, "NEW", OpCode::Start, "", "")).unwrap();
        let now = row(30, "NEW", OpCode::Start, "", "").timestamp.unwrap();
        assert_eq!(b.abandon_old(now), vec![("OLD".to_string(), 1)]);
        assert_eq!(b.oldest_start(), Some(30), "no longer pins the resume SCN");
        b.push(row(31, "OLD", OpCode::Insert, "y", "R2")).unwrap();
        assert!(matches!(
            b.push(row(32, "OLD", OpCode::Commit, "", "")).unwrap(),
            Outcome::Ignored { .. }
        ));
        assert_eq!(b.stats().abandoned, 1);
        assert_eq!(b.stats().ignored_commits, 1);
    }

    #[test]
    fn transactions_begun_before_the_range_are_not_emitted_half() {
        let mut b = TxnBuffer::new(BufferConfig {
            require_start: true,
            ..Default::default()
        });
        b.push(row(5, "A", OpCode::Insert, "x", "R1")).unwrap();
        assert!(matches!(
            b.push(row(6, "A", OpCode::Commit, "", "")).unwrap(),
            Outcome::Ignored { .. }
        ));
    }
}
