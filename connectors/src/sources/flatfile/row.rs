//! A decoded record without allocation: values borrowed from the record bytes or from a scratch
//! buffer that the next record reuses.
//!
//! [`RecordDecoder::decode_row`](super::RecordDecoder::decode_row) fills a [`RowBuffer`] and
//! returns a [`Row`] borrowing it; [`Row::fields`] walks the columns as [`FieldRef`]s,
//! [`Row::to_values`] makes the owned [`Value`]s a change event holds.

use crate::event::{Decimal, Value};

/// One value in the buffer. Arrays are laid out in pre-order: the `Array` cell, then its
/// elements (nested arrays likewise), so a column is a contiguous run of cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    /// A decimal whose unscaled value fits an i64: (unscaled, scale).
    Decimal(i64, u8),
    /// A wider decimal: its index in the buffer's `wide` list.
    Wide(u32),
    /// Text at `start..end` of the record, which was checked to be UTF-8 as a whole.
    Record(u32, u32),
    /// Text at `start..end` of the scratch buffer (transcoded or validated text).
    Scratch(u32, u32),
    /// `len` elements in the next `span` cells.
    Array {
        len: u32,
        span: u32,
    },
}

/// Reusable storage for decoded records: keep one per reader and pass it to every
/// `decode_row`.
#[derive(Debug, Default, Clone)]
pub struct RowBuffer {
    pub(crate) cells: Vec<Cell>,
    /// Transcoded or validated text; the compiled decode keeps it at its full size and
    /// writes from the start, so only `..used` is this record's.
    pub(crate) scratch: Vec<u8>,
    pub(crate) used: usize,
    /// Decimals that do not fit an i64 (more than 18 digits).
    pub(crate) wide: Vec<Decimal>,
}

impl RowBuffer {
    pub fn new() -> Self {
        Self::default()
    }
}

/// A decoded record: one value per column of the decoder, borrowed until the buffer is
/// reused.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub(crate) cells: &'a [Cell],
    /// The record as text when it is valid UTF-8 (`Cell::Record` points into it).
    pub(crate) record: &'a str,
    pub(crate) scratch: &'a str,
    pub(crate) wide: &'a [Decimal],
    pub(crate) columns: usize,
}

/// One value of a [`Row`].
#[derive(Debug, Clone)]
pub enum FieldRef<'a> {
    /// A field of a REDEFINES alternative that does not apply to this record.
    Null,
    Int(i64),
    Decimal(Decimal),
    /// Text, trimmed on the right.
    Text(&'a str),
    /// The elements of an OCCURS field.
    Array(Fields<'a>),
}

/// The values of a row (one per column) or the elements of an array, in order.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    cells: &'a [Cell],
    record: &'a str,
    scratch: &'a str,
    wide: &'a [Decimal],
    remaining: usize,
}

impl<'a> Fields<'a> {
    /// How many values are left.
    pub fn len(&self) -> usize {
        self.remaining
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = FieldRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<FieldRef<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let (cell, rest) = self.cells.split_first()?;
        self.remaining -= 1;
        self.cells = rest;
        Some(match *cell {
            Cell::Null => FieldRef::Null,
            Cell::Int(i) => FieldRef::Int(i),
            Cell::Decimal(u, scale) => FieldRef::Decimal(Decimal::new(i128::from(u), scale)),
            Cell::Wide(i) => self
                .wide
                .get(i as usize)
                .map_or(FieldRef::Null, |d| FieldRef::Decimal(*d)),
            Cell::Record(s, e) => {
                FieldRef::Text(self.record.get(s as usize..e as usize).unwrap_or_default())
            }
            Cell::Scratch(s, e) => {
                FieldRef::Text(self.scratch.get(s as usize..e as usize).unwrap_or_default())
            }
            Cell::Array { len, span } => {
                let span = (span as usize).min(rest.len());
                let (inner, after) = rest.split_at(span);
                self.cells = after;
                FieldRef::Array(Fields {
                    cells: inner,
                    record: self.record,
                    scratch: self.scratch,
                    wide: self.wide,
                    remaining: len as usize,
                })
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Fields<'_> {}

impl<'a> Row<'a> {
    /// The values, one per column.
    pub fn fields(&self) -> Fields<'a> {
        Fields {
            cells: self.cells,
            record: self.record,
            scratch: self.scratch,
            wide: self.wide,
            remaining: self.columns(),
        }
    }

    /// The number of values (columns).
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// The owned values, as `RecordDecoder::decode` returns them.
    pub fn to_values(&self) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.columns);
        self.append_values(&mut out);
        out
    }

    /// Appends the owned values to `out`.
    pub fn append_values(&self, out: &mut Vec<Value>) {
        fn owned(f: FieldRef<'_>) -> Value {
            match f {
                FieldRef::Null => Value::Null,
                FieldRef::Int(i) => Value::Int(i),
                FieldRef::Decimal(d) => Value::Decimal(d),
                FieldRef::Text(s) => Value::String(s.to_owned()),
                FieldRef::Array(items) => Value::Array(items.map(owned).collect()),
            }
        }
        out.extend(self.fields().map(owned));
    }
}
