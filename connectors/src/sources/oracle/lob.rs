//! LOB assembly. LogMiner writes a CLOB, NCLOB or BLOB value that does not fit inline as
//! separate rows after the insert or update: SEL_LOB_LOCATOR (op 9) names the row and column,
//! then LOB_WRITE (10), LOB_TRIM (11) and LOB_ERASE (29) change the LOB piece by piece. Within
//! one committed transaction these rows are replayed onto the value the insert or update
//! wrote, and the result becomes that event's column value; a LOB change of a row the
//! transaction did not insert or update becomes an update event of that column.
//!
//! Oracle counts character LOB offsets in UTF-16 code units and BLOB offsets in bytes, from 1;
//! a write past the end fills the gap with spaces (CLOB) or zero bytes (BLOB).

use super::contents::{ContentRow, OpCode};
use super::events::{EventBuilder, RowError};
use super::sql_redo::{Literal, LobOp, parse_lob};
use super::values::{hex, unistr};
use crate::event::{ChangeEvent, Operation, Position, TableId, Transaction, Value};

/// The largest LOB assembled, in units (characters or bytes): a corrupt offset must not make
/// the source allocate without bound.
pub const MAX_LOB_UNITS: u64 = 1 << 30;

/// Whether `op` is one of the LOB rows assembled here.
pub fn is_lob_op(op: OpCode) -> bool {
    matches!(op, OpCode::Other(9 | 10 | 11 | 29))
}

/// What a committed transaction's rows become, in order; positions are given afterwards.
#[derive(Debug)]
pub enum Piece {
    /// A built event (its position holds only the row's SCN so far).
    Event(ChangeEvent),
    /// A DDL row, built only if it is emitted (it changes the table's schema version).
    Ddl(ContentRow),
    /// A row that cannot become an event.
    Bad {
        scn: u64,
        reason: String,
        raw: String,
    },
    /// A LOB change of a row the transaction did not insert or update: the update event of
    /// `target`, made when the transaction's LOB rows are all read.
    LobUpdate { target: usize, scn: u64 },
}

/// A LOB's units; `None` where the value before this transaction shows through and the redo
/// does not say what it was.
#[derive(Debug, Clone)]
struct Units<T> {
    units: Vec<Option<T>>,
    /// The value before this transaction may go on past `units` (its length is not known).
    open_tail: bool,
    fill: T,
}

impl<T: Copy> Units<T> {
    fn known(data: Vec<T>, fill: T) -> Self {
        Self {
            units: data.into_iter().map(Some).collect(),
            open_tail: false,
            fill,
        }
    }

    fn unknown(fill: T) -> Self {
        Self {
            units: Vec::new(),
            open_tail: true,
            fill,
        }
    }

    /// Extends to `len` units: filler where the LOB was shorter, unknown where the old value
    /// may still be.
    fn extend_to(&mut self, len: usize) {
        if len > self.units.len() {
            let gap = if self.open_tail {
                None
            } else {
                Some(self.fill)
            };
            self.units.resize(len, gap);
        }
    }

    fn span(offset: u64, amount: u64) -> Result<(usize, usize), String> {
        let at = offset
            .checked_sub(1)
            .ok_or_else(|| "offset 0 (LOB offsets count from 1)".to_string())?;
        let end = at.saturating_add(amount);
        if end > MAX_LOB_UNITS {
            return Err(format!(
                "offset {offset} + amount {amount} passes the {MAX_LOB_UNITS}-unit limit of LOB assembly"
            ));
        }
        Ok((at as usize, end as usize))
    }

    fn write(&mut self, offset: u64, data: &[T]) -> Result<(), String> {
        let (at, end) = Self::span(offset, data.len() as u64)?;
        self.extend_to(at);
        if end > self.units.len() {
            self.units.resize(end, None);
        }
        for (slot, unit) in self.units[at..end].iter_mut().zip(data) {
            *slot = Some(*unit);
        }
        Ok(())
    }

    fn trim(&mut self, length: u64) -> Result<(), String> {
        let (_, len) = Self::span(1, length)?;
        if len <= self.units.len() {
            self.units.truncate(len);
        } else if self.open_tail {
            self.units.resize(len, None);
        }
        // Trimming a known value to more than its length leaves it as it is (Oracle refuses).
        self.open_tail = false;
        Ok(())
    }

    fn erase(&mut self, amount: u64, offset: u64) -> Result<(), String> {
        let (at, end) = Self::span(offset, amount)?;
        // Erasing never lengthens a LOB; past the known units, an open tail stays unknown.
        let end = end.min(self.units.len());
        for slot in self.units.iter_mut().take(end).skip(at) {
            *slot = Some(self.fill);
        }
        Ok(())
    }

    fn value(self) -> Result<Vec<T>, String> {
        let first = self.units.iter().position(Option::is_none);
        let mut reasons = Vec::new();
        if let Some(first) = first {
            let last = self.units[first..]
                .iter()
                .position(Option::is_some)
                .map_or(self.units.len(), |n| first + n);
            reasons.push(format!(
                "units {}..{last} keep their value from before this transaction, which the redo \
                 does not hold",
                first + 1
            ));
        }
        if self.open_tail {
            reasons.push(if reasons.is_empty() {
                "its length before this transaction is not in the redo (no trim ends it)".into()
            } else {
                "its length before it is not in the redo either (no trim ends it)".into()
            });
        }
        if !reasons.is_empty() {
            return Err(reasons.join(", and "));
        }
        Ok(self.units.into_iter().flatten().collect())
    }
}

#[derive(Debug, Clone)]
enum Lob {
    /// UTF-16 code units.
    Text(Units<u16>),
    Bytes(Units<u8>),
}

/// One row's LOB column being assembled.
#[derive(Debug)]
struct Target {
    table: TableId,
    column: String,
    key: Vec<(String, Value)>,
    /// Where its value goes: an event's place in the pieces, or its `LobUpdate` piece.
    piece: usize,
    lob: Lob,
    /// The SEL_LOB_LOCATOR row, for messages.
    locator: String,
    /// A fragment could not be read or applied: the value is not assembled.
    broken: bool,
}

impl Target {
    fn describe(&self) -> String {
        let key: Vec<String> = self
            .key
            .iter()
            .map(|(n, v)| format!("{n} = {}", v.to_json()))
            .collect();
        format!(
            "LOB column {}.{}.{} of the row where {}",
            self.table.schema,
            self.table.table,
            self.column,
            key.join(" and ")
        )
    }
}

/// The LOB rows of one committed transaction.
#[derive(Debug, Default)]
pub struct LobAssembler {
    targets: Vec<Target>,
    /// The target the latest locator named; a DML or DDL row ends it.
    current: Option<usize>,
}

fn row_error(row: &ContentRow, column: &str, at: Option<usize>, message: String) -> RowError {
    RowError {
        locator: row.locator(),
        column: column.to_string(),
        at: at.map(|b| format!(" at byte {b}")).unwrap_or_default(),
        message,
    }
}

/// The value an insert or update left in `column`: the LOB's starting point.
fn base(event: &ChangeEvent, column: &str, binary: bool) -> Lob {
    let value = event
        .schema
        .column_index(column)
        .and_then(|i| event.after.as_ref()?.get(i));
    // An insert's absent or NULL LOB starts empty; an update that did not set the column
    // leaves a value the redo does not show.
    let known = event.op == Operation::Insert;
    match (value, binary) {
        (Some(Value::String(s)), false) => {
            Lob::Text(Units::known(s.encode_utf16().collect(), 0x20))
        }
        (Some(Value::Bytes(b)), true) => Lob::Bytes(Units::known(b.clone(), 0)),
        (_, false) if known => Lob::Text(Units::known(Vec::new(), 0x20)),
        (_, true) if known => Lob::Bytes(Units::known(Vec::new(), 0)),
        (_, false) => Lob::Text(Units::unknown(0x20)),
        (_, true) => Lob::Bytes(Units::unknown(0)),
    }
}

/// Whether the event's statement wrote `column` (an update's after image holds NULL for a
/// LOB column it did not set).
fn sets_column(event: &ChangeEvent, column: &str) -> bool {
    event
        .schema
        .column_index(column)
        .and_then(|i| event.after.as_ref()?.get(i))
        .is_some_and(|v| matches!(v, Value::String(_) | Value::Bytes(_)))
}

fn matches_key(event: &ChangeEvent, table: &TableId, key: &[(String, Value)]) -> bool {
    let Some(after) = &event.after else {
        return false;
    };
    event.schema.table == *table
        && matches!(event.op, Operation::Insert | Operation::Update)
        && !key.is_empty()
        && key.iter().all(|(name, v)| {
            event
                .schema
                .column_index(name)
                .and_then(|i| after.get(i))
                .is_some_and(|a| a == v)
        })
}

impl LobAssembler {
    /// A DML or DDL row: later LOB rows need a locator of their own.
    pub fn reset(&mut self) {
        self.current = None;
    }

    /// Feeds one LOB row. An error names the row; it also leaves the LOB it belongs to
    /// unassembled, so no partly written value is ever emitted.
    pub fn row(
        &mut self,
        row: &ContentRow,
        pieces: &mut Vec<Piece>,
        builder: &mut EventBuilder,
    ) -> Result<(), RowError> {
        let fragment = match parse_lob(&row.sql_redo) {
            Ok(f) => f,
            Err(e) => {
                if let Some(t) = self.current {
                    self.targets[t].broken = true;
                }
                return Err(row_error(
                    row,
                    "SQL_REDO",
                    Some(e.offset),
                    format!("LOB fragment: expected {}, found {}", e.expected, e.found),
                ));
            }
        };
        if let Some(l) = &fragment.locator {
            let table = TableId::new(l.schema, l.table);
            let key = builder
                .typed_columns(l.schema, l.table, &l.key)
                .map_err(|(column, e)| {
                    row_error(row, &format!("SQL_REDO ({column})"), None, e.to_string())
                })?;
            let found = self
                .targets
                .iter()
                .rposition(|t| t.table == table && t.column == l.column && t.key == key);
            let latest = pieces.iter().enumerate().rev().find_map(|(i, p)| match p {
                Piece::Event(e) if matches_key(e, &table, &key) => Some((i, e)),
                _ => None,
            });
            let t = match (found, latest) {
                // The LOB goes on in the event it was last written into.
                (Some(t), None) => t,
                (Some(t), Some((i, _))) if i <= self.targets[t].piece => t,
                _ => {
                    let mut broken = false;
                    let merged = latest.map(|(i, e)| {
                        let lob = match found {
                            // A later update of the row that did not set the column: the
                            // value so far carries on into it.
                            Some(t) if !sets_column(e, l.column) => {
                                broken = self.targets[t].broken;
                                self.targets[t].lob.clone()
                            }
                            _ => base(e, l.column, l.binary),
                        };
                        (i, lob)
                    });
                    let (piece, lob) = match merged {
                        Some(found) => found,
                        None => {
                            pieces.push(Piece::LobUpdate {
                                target: self.targets.len(),
                                scn: row.scn,
                            });
                            let lob = if l.binary {
                                Lob::Bytes(Units::unknown(0))
                            } else {
                                Lob::Text(Units::unknown(0x20))
                            };
                            (pieces.len() - 1, lob)
                        }
                    };
                    self.targets.push(Target {
                        table,
                        column: l.column.to_string(),
                        key,
                        piece,
                        lob,
                        locator: row.locator(),
                        broken,
                    });
                    self.targets.len() - 1
                }
            };
            self.current = Some(t);
        }
        if fragment.ops.is_empty() {
            return Ok(());
        }
        let Some(t) = self.current else {
            return Err(row_error(
                row,
                "SQL_REDO",
                None,
                "a LOB change with no SEL_LOB_LOCATOR row before it in its transaction: the row \
                 and column it changes are unknown"
                    .into(),
            ));
        };
        let target = &mut self.targets[t];
        let applied = fragment
            .ops
            .iter()
            .try_for_each(|op| apply(&mut target.lob, op));
        applied.map_err(|message| {
            target.broken = true;
            row_error(
                row,
                &target.column,
                None,
                format!("{}: {message}", target.describe()),
            )
        })
    }

    /// Puts every assembled value into its event (or makes its update event). A value that
    /// cannot be known becomes a bad piece naming the row, column and locator row; the event
    /// it belonged to is still emitted, with the column as the statement wrote it.
    pub fn finish(
        self,
        pieces: &mut Vec<Piece>,
        builder: &mut EventBuilder,
        txn: &Transaction,
        stats: &mut LobStats,
    ) {
        for target in self.targets {
            let binary = matches!(target.lob, Lob::Bytes(_));
            let described = target.describe();
            let value = match target.lob {
                _ if target.broken => Err("a fragment of it could not be read (see the \
                                           fragment's own dead letter)"
                    .to_string()),
                Lob::Text(u) => u.value().and_then(|units| {
                    String::from_utf16(&units)
                        .map(Value::String)
                        .map_err(|_| "its characters are not valid UTF-16".to_string())
                }),
                Lob::Bytes(u) => u.value().map(Value::Bytes),
            };
            let scn = scn_of(&pieces[target.piece]);
            let value = match value {
                Ok(v) => v,
                Err(reason) => {
                    stats.bad += 1;
                    let bad = Piece::Bad {
                        scn,
                        reason: format!(
                            "{}: {}: value not assembled: {reason}",
                            target.locator, described
                        ),
                        raw: String::new(),
                    };
                    if matches!(pieces[target.piece], Piece::LobUpdate { .. }) {
                        pieces[target.piece] = bad;
                    } else {
                        pieces.push(bad);
                    }
                    continue;
                }
            };
            let schema = builder.with_lob_column(&target.table, &target.column, binary);
            let Some(col) = schema.column_index(&target.column) else {
                continue;
            };
            match &mut pieces[target.piece] {
                Piece::Event(e) => {
                    if e.schema.column_index(&target.column).is_none() {
                        // The column was added after the event's schema: the event takes the
                        // newer version when it only adds columns at the end.
                        if schema.columns.starts_with(&e.schema.columns) {
                            e.schema = schema.clone();
                        } else {
                            continue;
                        }
                    }
                    let width = e.schema.columns.len();
                    for image in [&mut e.before, &mut e.after].into_iter().flatten() {
                        image.resize(width, Value::Null);
                    }
                    if let (Some(after), Some(i)) =
                        (&mut e.after, e.schema.column_index(&target.column))
                    {
                        after[i] = value;
                        stats.assembled += 1;
                    }
                }
                piece @ Piece::LobUpdate { .. } => {
                    let mut before = vec![Value::Null; schema.columns.len()];
                    for (name, v) in &target.key {
                        if let Some(i) = schema.column_index(name) {
                            before[i] = v.clone();
                        }
                    }
                    let mut after = before.clone();
                    after[col] = value;
                    stats.assembled += 1;
                    *piece = Piece::Event(ChangeEvent {
                        source: builder.source(),
                        position: scn_position(scn),
                        transaction: Some(txn.clone()),
                        schema,
                        op: Operation::Update,
                        before: Some(before),
                        after: Some(after),
                        ddl: None,
                    });
                }
                _ => {}
            }
        }
    }
}

/// LOB values assembled and not, since the stream started.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LobStats {
    pub assembled: u64,
    pub bad: u64,
}

fn apply(lob: &mut Lob, op: &LobOp<'_>) -> Result<(), String> {
    match (lob, op) {
        (Lob::Text(u), LobOp::Write { offset, data, .. }) => {
            let text = match data {
                Literal::Str(s) => s.text().encode_utf16().collect::<Vec<u16>>(),
                Literal::Unistr(s) => unistr(&s.text())
                    .map_err(|e| e.to_string())?
                    .encode_utf16()
                    .collect(),
                _ => return Err("HEXTORAW data written to a character LOB".into()),
            };
            u.write(*offset, &text)
        }
        (Lob::Bytes(u), LobOp::Write { offset, data, .. }) => {
            let bytes = match data {
                Literal::HexToRaw(h) | Literal::Str(h) => hex(h.raw).map_err(|e| e.to_string())?,
                _ => return Err("text data written to a BLOB".into()),
            };
            u.write(*offset, &bytes)
        }
        (Lob::Text(u), LobOp::Trim { length }) => u.trim(*length),
        (Lob::Bytes(u), LobOp::Trim { length }) => u.trim(*length),
        (Lob::Text(u), LobOp::Erase { amount, offset }) => u.erase(*amount, *offset),
        (Lob::Bytes(u), LobOp::Erase { amount, offset }) => u.erase(*amount, *offset),
    }
}

/// A position holding only `scn`, until the piece's place in its transaction is known.
pub fn scn_position(scn: u64) -> Position {
    Position::Oracle {
        scn,
        commit_scn: 0,
        thread: 0,
        resume_scn: 0,
        committed: Default::default(),
        xid: String::new(),
        index: 0,
    }
}

/// The SCN of the row a piece came from.
pub fn scn_of(piece: &Piece) -> u64 {
    match piece {
        Piece::Event(ChangeEvent {
            position: Position::Oracle { scn, .. },
            ..
        }) => *scn,
        Piece::Ddl(row) => row.scn,
        Piece::Bad { scn, .. } | Piece::LobUpdate { scn, .. } => *scn,
        Piece::Event(_) => 0,
    }
}
