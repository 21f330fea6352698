//! Rows in, committed events out, in commit order: the part of the connector that both the
//! live source and `syncmesh logminer replay` run.
//!
//! Transactions are emitted whole when their COMMIT is read. Those committing at the same SCN
//! are held until the SCN moves on and then emitted by thread and XID, so a restart emits them
//! in the same order. Each event's position carries the SCN to mine from again (the start of
//! the oldest transaction still open, or not yet fully emitted) and the commit SCN emitted per
//! redo thread; events at or before the position resumed from are not emitted again.

use super::buffer::{BufferConfig, BufferError, CommittedTxn, Outcome, TxnBuffer};
use super::contents::{ContentRow, OpCode};
use super::events::{EventBuilder, TableDef};
use super::lob::{LobAssembler, LobStats, Piece, is_lob_op, scn_of, scn_position};
use crate::event::{ChangeEvent, Position, TableId, Transaction};
use chrono::NaiveDateTime;
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::BTreeMap;

/// Owners whose changes are never captured (the dictionary and Oracle's own schemas).
pub const SYSTEM_OWNERS: &[&str] = &[
    "SYS",
    "SYSTEM",
    "AUDSYS",
    "CTXSYS",
    "DBSNMP",
    "GSMADMIN_INTERNAL",
    "LBACSYS",
    "MDSYS",
    "OJVMSYS",
    "OLAPSYS",
    "ORDDATA",
    "ORDSYS",
    "OUTLN",
    "WMSYS",
    "XDB",
    "DVSYS",
];

/// Which tables are captured: `OWNER.TABLE` globs (case-sensitive, as the dictionary stores
/// names). No include pattern means every table outside the system schemas.
#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    pub include_patterns: Vec<String>,
    pub exclude_patterns: Vec<String>,
}

impl TableFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, globset::Error> {
        let set = |pats: &[String]| -> Result<Option<GlobSet>, globset::Error> {
            if pats.is_empty() {
                return Ok(None);
            }
            let mut b = GlobSetBuilder::new();
            for p in pats {
                b.add(Glob::new(p)?);
            }
            b.build().map(Some)
        };
        Ok(Self {
            include: set(include)?,
            exclude: set(exclude)?,
            include_patterns: include.to_vec(),
            exclude_patterns: exclude.to_vec(),
        })
    }

    pub fn matches(&self, owner: &str, table: &str) -> bool {
        if SYSTEM_OWNERS.contains(&owner) {
            return false;
        }
        let name = format!("{owner}.{table}");
        self.include.as_ref().is_none_or(|s| s.is_match(&name))
            && !self.exclude.as_ref().is_some_and(|s| s.is_match(&name))
    }
}

/// What the stream produced.
#[derive(Debug)]
pub enum Emitted {
    Event(ChangeEvent),
    /// A row that could not become an event; the rest of its transaction is emitted.
    Bad {
        position: Position,
        reason: String,
        raw: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Buffer(#[from] BufferError),
}

/// Counters of the stream (beside the buffer's).
#[derive(Debug, Default, Clone)]
pub struct StreamStats {
    pub rows: u64,
    pub events: u64,
    pub bad_rows: u64,
    pub skipped_replayed: u64,
    /// LOB column values assembled, and ones that could not be.
    pub lobs: LobStats,
}

pub struct ChangeStream {
    buffer: TxnBuffer,
    builder: EventBuilder,
    filter: TableFilter,
    group: Vec<CommittedTxn>,
    group_scn: Option<u64>,
    committed: BTreeMap<u16, u64>,
    resume_after: Option<Position>,
    /// The position of the latest event or bad row produced (or resumed after).
    last_position: Option<Position>,
    out: Vec<Emitted>,
    ddl_tables: Vec<TableId>,
    last_time: Option<NaiveDateTime>,
    last_scn: u64,
    stats: StreamStats,
    ignored: Vec<(String, &'static str)>,
    abandoned: Vec<(String, u64)>,
}

impl ChangeStream {
    /// `resume_after`: the position last delivered; events at or before it are not emitted.
    pub fn new(
        source: &str,
        buffer: BufferConfig,
        filter: TableFilter,
        resume_after: Option<Position>,
    ) -> Self {
        let committed = match &resume_after {
            Some(Position::Oracle { committed, .. }) => committed.clone(),
            _ => BTreeMap::new(),
        };
        Self {
            buffer: TxnBuffer::new(buffer),
            builder: EventBuilder::new(source),
            filter,
            group: Vec::new(),
            group_scn: None,
            committed,
            last_position: resume_after.clone(),
            resume_after,
            out: Vec::new(),
            ddl_tables: Vec::new(),
            last_time: None,
            last_scn: 0,
            stats: StreamStats::default(),
            ignored: Vec::new(),
            abandoned: Vec::new(),
        }
    }

    pub fn builder(&mut self) -> &mut EventBuilder {
        &mut self.builder
    }

    pub fn buffer(&self) -> &TxnBuffer {
        &self.buffer
    }

    pub fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// The commit SCN emitted per redo thread.
    pub fn committed(&self) -> &BTreeMap<u16, u64> {
        &self.committed
    }

    /// The database time of the latest row read.
    pub fn last_time(&self) -> Option<NaiveDateTime> {
        self.last_time
    }

    /// Where mining must restart if the process stopped now.
    pub fn resume_scn(&self) -> Option<u64> {
        let group = self.group.iter().map(|t| t.start_scn).min();
        match (self.buffer.oldest_start(), group) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A heartbeat after everything below `next_scn` has been mined and its commits emitted
    /// (at the end of a window): resume at `next_scn`, or at the start of the oldest open
    /// transaction. The rest is the latest position produced, with the commit SCNs emitted
    /// per thread, so a restart from it skips exactly what was emitted.
    pub fn heartbeat(&self, next_scn: u64) -> Position {
        let resume_scn = self.resume_scn().map_or(next_scn, |r| r.min(next_scn));
        let scn = next_scn.saturating_sub(1);
        match &self.last_position {
            Some(Position::Oracle {
                commit_scn,
                thread,
                xid,
                index,
                ..
            }) => Position::Oracle {
                scn,
                commit_scn: *commit_scn,
                thread: *thread,
                resume_scn,
                committed: self.committed.clone(),
                xid: xid.clone(),
                index: *index,
            },
            // Nothing emitted yet: thread 0 (threads count from 1) claims no commit.
            _ => Position::Oracle {
                scn,
                commit_scn: 0,
                thread: 0,
                resume_scn,
                committed: self.committed.clone(),
                xid: String::new(),
                index: 0,
            },
        }
    }

    /// Takes what was produced so far.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Emitted> {
        self.out.drain(..)
    }

    /// Tables whose DDL was emitted since the last call: the caller may refresh their
    /// dictionary definitions (`builder().define(def, false)`).
    pub fn take_ddl_tables(&mut self) -> Vec<TableId> {
        std::mem::take(&mut self.ddl_tables)
    }

    /// Commits that were not emitted (abandoned, or begun before the mined range).
    pub fn take_ignored(&mut self) -> Vec<(String, &'static str)> {
        std::mem::take(&mut self.ignored)
    }

    /// Transactions abandoned since the last call, with their start SCN.
    pub fn take_abandoned(&mut self) -> Vec<(String, u64)> {
        std::mem::take(&mut self.abandoned)
    }

    /// Feeds one row. `dictionary` gives the definition of a table after its DDL, when known.
    pub fn push(
        &mut self,
        row: ContentRow,
        dictionary: &mut dyn FnMut(&TableId) -> Option<TableDef>,
    ) -> Result<(), StreamError> {
        self.stats.rows += 1;
        if self.group_scn.is_some_and(|g| g != row.scn) {
            self.flush(dictionary)?;
        }
        if row.timestamp.is_some() {
            self.last_time = row.timestamp;
        }
        self.last_scn = self.last_scn.max(row.scn);
        let captured = match row.op {
            OpCode::Insert | OpCode::Update | OpCode::Delete | OpCode::Ddl => {
                self.filter.matches(&row.seg_owner, &row.table_name)
            }
            op if is_lob_op(op) => self.filter.matches(&row.seg_owner, &row.table_name),
            // Transaction markers are never filtered out.
            _ => true,
        };
        if !captured {
            return Ok(());
        }
        match self.buffer.push(row)? {
            Outcome::Committed(txn) => {
                self.group_scn = Some(txn.commit_scn);
                self.group.push(txn);
            }
            Outcome::Ignored { xid, reason } => self.ignored.push((xid, reason)),
            Outcome::Nothing | Outcome::RolledBack(_) => {}
        }
        if self.stats.rows.is_multiple_of(8192) {
            self.abandon_old();
        }
        Ok(())
    }

    fn abandon_old(&mut self) {
        if let Some(now) = self.last_time {
            let gone = self.buffer.abandon_old(now);
            self.abandoned.extend(gone);
        }
    }

    /// Ends a mining window (or the input): emits the held commits and abandons old
    /// transactions.
    pub fn end_window(
        &mut self,
        dictionary: &mut dyn FnMut(&TableId) -> Option<TableDef>,
    ) -> Result<(), StreamError> {
        self.flush(dictionary)?;
        self.abandon_old();
        Ok(())
    }

    fn flush(
        &mut self,
        dictionary: &mut dyn FnMut(&TableId) -> Option<TableDef>,
    ) -> Result<(), StreamError> {
        self.group_scn = None;
        let mut group = std::mem::take(&mut self.group);
        group.sort_by(|a, b| (a.thread, &a.xid).cmp(&(b.thread, &b.xid)));
        let open_min = self.buffer.oldest_start();
        // later[i]: the smallest start SCN among group[i..].
        let mut later = vec![u64::MAX; group.len() + 1];
        for i in (0..group.len()).rev() {
            later[i] = later[i + 1].min(group[i].start_scn);
        }
        for (i, txn) in group.into_iter().enumerate() {
            let pending_min = open_min.unwrap_or(u64::MAX).min(later[i + 1]);
            self.emit_txn(txn, pending_min, dictionary)?;
        }
        Ok(())
    }

    fn emit_txn(
        &mut self,
        txn: CommittedTxn,
        pending_min: u64,
        dictionary: &mut dyn FnMut(&TableId) -> Option<TableDef>,
    ) -> Result<(), StreamError> {
        let (xid, thread, start_scn, commit_scn) =
            (txn.xid.clone(), txn.thread, txn.start_scn, txn.commit_scn);
        let transaction = Transaction {
            id: xid.clone(),
            commit_time: txn.commit_time.map(|t| t.and_utc()),
        };
        self.committed.insert(thread, commit_scn);
        // First every row becomes a piece (LOB rows are folded into the events they belong
        // to), then the pieces get their places in the transaction and are emitted.
        let mut pieces: Vec<Piece> = Vec::with_capacity(txn.row_count.min(4096) as usize);
        let mut lobs = LobAssembler::default();
        for row in txn.into_rows()? {
            let row = row?;
            if is_lob_op(row.op) {
                if let Err(e) = lobs.row(&row, &mut pieces, &mut self.builder) {
                    pieces.push(Piece::Bad {
                        scn: row.scn,
                        reason: e.to_string(),
                        raw: row.sql_redo,
                    });
                }
                continue;
            }
            lobs.reset();
            let piece = if row.op == OpCode::Ddl {
                Piece::Ddl(row)
            } else {
                match self.builder.dml(&row, scn_position(row.scn), &transaction) {
                    Ok(event) => Piece::Event(event),
                    Err(e) => Piece::Bad {
                        scn: row.scn,
                        reason: e.to_string(),
                        raw: row.sql_redo,
                    },
                }
            };
            pieces.push(piece);
        }
        lobs.finish(
            &mut pieces,
            &mut self.builder,
            &transaction,
            &mut self.stats.lobs,
        );
        let total = pieces.len() as u64;
        for (index, piece) in (0u32..).zip(pieces) {
            let last = u64::from(index) + 1 >= total;
            let resume_scn = if last {
                pending_min.min(commit_scn)
            } else {
                pending_min.min(start_scn)
            };
            let position = Position::Oracle {
                scn: scn_of(&piece),
                commit_scn,
                thread,
                resume_scn,
                committed: self.committed.clone(),
                xid: xid.clone(),
                index,
            };
            if let Some(after) = &self.resume_after
                && position.not_after(after) == Some(true)
            {
                self.stats.skipped_replayed += 1;
                continue;
            }
            self.last_position = Some(position.clone());
            match piece {
                Piece::Event(mut event) => {
                    event.position = position;
                    self.stats.events += 1;
                    self.out.push(Emitted::Event(event));
                }
                Piece::Ddl(row) => {
                    let table = TableId::new(row.seg_owner.clone(), row.table_name.clone());
                    let def = dictionary(&table);
                    self.ddl_tables.push(table);
                    let event = self.builder.ddl(&row, def, position, &transaction);
                    self.stats.events += 1;
                    self.out.push(Emitted::Event(event));
                }
                Piece::Bad { reason, raw, .. } => {
                    self.stats.bad_rows += 1;
                    self.out.push(Emitted::Bad {
                        position,
                        reason,
                        raw,
                    });
                }
                // `finish` turned every one into an event or a bad piece.
                Piece::LobUpdate { .. } => {}
            }
        }
        Ok(())
    }
}
