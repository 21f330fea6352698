//! Decoding records into typed values, from a field plan computed once per layout.
//!
//! The hot path (`decode_row`) writes into a reusable [`RowBuffer`]: no allocation per record
//! or field. Text in ASCII files is borrowed from the record after one UTF-8 check of the whole
//! record; EBCDIC and Latin-1 text is transcoded by table into a scratch buffer; zoned digits
//! are read eight at a time and packed digits two at a time (see `numeric`). Anything unusual
//! (an invalid byte, more than 18 digits) falls back to the byte-by-byte code, which names the
//! error precisely. Fields that always sit at the same offset skip the OCCURS, OCCURS
//! DEPENDING ON and REDEFINES bookkeeping.

use super::encoding::Encoding;
use super::fast::{self, FieldShape, INVALID, NEG, Program, ShapeKind, Step};
use super::layout::{FieldKind, Layout, LayoutError, SignPosition};
use super::numeric::{self, FAST_DIGITS};
use super::reader::Block;
use super::row::{Cell, Row, RowBuffer};
use crate::event::{Column, ColumnType, Decimal, Value};
use serde::{Deserialize, Serialize};

/// At most this many OCCURS DEPENDING ON tables in one layout.
pub const MAX_ODO_TABLES: usize = 8;

/// How the sign of a zoned (DISPLAY) number is overpunched in ASCII files. EBCDIC files always
/// use the zone nibble of the sign byte: `C` (and `F`, unsigned) positive, `D` negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignConvention {
    /// The IBM/EBCDIC overpunch carried over to ASCII (what mainframe-to-ASCII converters and
    /// GnuCOBOL `-fsign=EBCDIC` write): `{` `A`-`I` are +0..+9, `}` `J`-`R` are -0..-9; plain
    /// digits `0`-`9` are accepted as positive too.
    #[default]
    Ibm,
    /// Micro Focus / GnuCOBOL's default ASCII convention: `0`-`9` positive, `p`-`y` (digit +
    /// 0x40) negative.
    #[serde(alias = "microfocus", alias = "mf", alias = "gnucobol")]
    MicroFocus,
}

/// File-wide decoding options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeOptions {
    pub encoding: Encoding,
    pub sign_convention: SignConvention,
    /// Accept text fields cut short by the end of the record (line-sequential writers strip
    /// trailing spaces). Numeric fields must always be complete.
    pub allow_short_text: bool,
}

impl DecodeOptions {
    /// The options a layout declares (YAML `encoding`, `sign_convention`), defaulting to ASCII
    /// and the IBM convention.
    pub fn for_layout(layout: &Layout) -> Self {
        Self {
            encoding: layout.encoding.unwrap_or_default(),
            sign_convention: layout.sign_convention.unwrap_or_default(),
            allow_short_text: false,
        }
    }
}

/// A field that could not be decoded: its name (with 1-based OCCURS indexes, `AMT(2)`), the
/// byte offset of the field (element) in the record, and why. The caller adds the record
/// number and file offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field} at byte {offset}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub offset: usize,
    pub reason: FieldErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldErrorKind {
    #[error("short record: the field ends at byte {needed} but the record has {actual} bytes")]
    ShortRecord { needed: usize, actual: usize },
    #[error("byte 0x{byte:02X} at byte {at} is not a digit")]
    NonDigit { byte: u8, at: usize },
    #[error("bad packed-decimal digit nibble 0x{nibble:X} at byte {at}")]
    BadPackedNibble { nibble: u8, at: usize },
    #[error("bad sign 0x{byte:02X} at byte {at}")]
    BadSign { byte: u8, at: usize },
    #[error("negative sign (0x{byte:02X} at byte {at}) in an unsigned field")]
    NegativeUnsigned { byte: u8, at: usize },
    #[error("OCCURS DEPENDING ON {counter} = {count} is outside {min} to {max}")]
    OccursOutOfRange {
        counter: String,
        count: i128,
        min: usize,
        max: usize,
    },
    #[error("text is not valid UTF-8 (byte {at})")]
    InvalidText { at: usize },
    #[error("binary value {value} does not fit a signed 64-bit integer")]
    Overflow { value: u64 },
    #[error("record type `{value}` matches no selector case")]
    UnknownRecordType { value: String },
    #[error("packed value has more than the {digits} digits of its picture (non-zero pad nibble)")]
    TooManyDigits { digits: u8 },
}

// ---------------------------------------------------------------------------------------
// Plan

#[derive(Debug, Clone, Copy)]
enum Op {
    Text(Encoding),
    Zoned { sign: SignPosition, signed: bool },
    Packed { signed: bool },
    Binary { signed: bool },
}

#[derive(Debug, Clone)]
struct Dim {
    max: usize,
    stride: usize,
    /// Index of the OCCURS DEPENDING ON table giving the count.
    odo: Option<usize>,
}

#[derive(Debug, Clone)]
struct Plan {
    name: String,
    op: Op,
    offset: usize,
    len: usize,
    digits: u8,
    /// 10^digits: packed magnitudes must stay below it (the pad nibble of an even digit count
    /// is zero).
    limit: u128,
    scale: u8,
    /// Scale-0 numbers that fit an i64 come out as `Value::Int`.
    int: bool,
    dims: Vec<Dim>,
    /// How many OCCURS DEPENDING ON tables end before this field (their shrinkage moves it).
    odo_prefix: usize,
    /// Per selector case: whether the field applies. `None`: always.
    active: Option<Vec<bool>>,
    /// A scalar at a fixed offset that applies to every record: no bookkeeping needed.
    simple: bool,
}

impl Plan {
    fn error(&self, offset: usize, reason: FieldErrorKind) -> FieldError {
        FieldError {
            field: self.name.clone(),
            offset,
            reason,
        }
    }
}

#[derive(Debug, Clone)]
struct OdoTable {
    counter: usize,
    counter_name: String,
    min: usize,
    max: usize,
    stride: usize,
    active: Option<Vec<bool>>,
}

#[derive(Debug, Clone)]
struct Selector {
    field: usize,
    /// Case values in the file's encoding.
    cases: Vec<(Vec<u8>, String)>,
}

/// The most cells a compiled layout unrolls to; larger tables take the general code.
const MAX_STEPS: usize = 1 << 16;

/// Decodes records of one layout. Build it once; `decode_row` does not allocate once its
/// buffer has grown to the size of a record.
#[derive(Debug, Clone)]
pub struct RecordDecoder {
    plans: Vec<Plan>,
    columns: Vec<Column>,
    odo: Vec<OdoTable>,
    selector: Option<Selector>,
    options: DecodeOptions,
    /// byte -> digit for plain digit positions, or INVALID.
    digit: [u8; 256],
    /// byte -> digit | NEG for overpunched sign positions, or INVALID.
    punch: [u8; 256],
    plus: u8,
    minus: u8,
    space: u8,
    /// The zone of digit bytes: 0x30 (ASCII) or 0xF0 (EBCDIC).
    zone: u8,
    /// Some text field is ASCII/UTF-8: check the whole record once.
    utf8_text: bool,
    /// byte -> UTF-8 per single-byte encoding, indexed by `Encoding::ALL` order.
    utf8_tables: Vec<Option<Box<numeric::Utf8Table>>>,
    /// The compiled decode (see `fast`), for layouts without OCCURS DEPENDING ON or a
    /// selector whose fields all compile.
    steps: Option<Program>,
}

fn binary_precision(len: usize, signed: bool) -> u8 {
    match (len, signed) {
        (1, _) => 3,
        (2, _) => 5,
        (4, _) => 10,
        (8, true) => 19,
        _ => 20,
    }
}

impl RecordDecoder {
    pub fn new(layout: &Layout, options: DecodeOptions) -> Result<Self, LayoutError> {
        layout.validate()?;
        let enc = options.encoding;

        // Selector cases and the REDEFINES groups they govern.
        let case_alts: Vec<String> = layout
            .selector
            .as_ref()
            .map(|s| s.cases.values().cloned().collect())
            .unwrap_or_default();
        let governed = |group: &str| {
            layout.fields.iter().any(|f| {
                f.variants.iter().any(|v| {
                    v.group == group
                        && case_alts
                            .iter()
                            .any(|a| a.eq_ignore_ascii_case(&v.alternative))
                })
            })
        };
        let activity = |variants: &[super::layout::Variant]| -> Option<Vec<bool>> {
            if case_alts.is_empty() || variants.is_empty() {
                return None;
            }
            let per_case: Vec<bool> = case_alts
                .iter()
                .map(|selected| {
                    variants.iter().all(|v| {
                        !governed(&v.group) || selected.eq_ignore_ascii_case(&v.alternative)
                    })
                })
                .collect();
            if per_case.iter().all(|a| *a) {
                None
            } else {
                Some(per_case)
            }
        };

        // OCCURS DEPENDING ON tables, in offset order.
        struct Table {
            offset: usize,
            stride: usize,
            min: usize,
            max: usize,
            counter: String,
            active: Option<Vec<bool>>,
        }
        let mut tables: Vec<Table> = Vec::new();
        for f in &layout.fields {
            if let Some(o) = f.occurs.first()
                && let Some(counter) = &o.depending_on
                && !tables
                    .iter()
                    .any(|t| t.offset == o.table_offset && t.stride == o.stride)
            {
                tables.push(Table {
                    offset: o.table_offset,
                    stride: o.stride,
                    min: o.min,
                    max: o.max,
                    counter: counter.clone(),
                    active: activity(&f.variants),
                });
            }
        }
        tables.sort_by_key(|t| t.offset);
        let table_end = |t: &Table| t.offset + t.max * t.stride;

        let mut plans = Vec::with_capacity(layout.fields.len());
        let mut columns = Vec::with_capacity(layout.fields.len());
        for f in &layout.fields {
            let op = match f.kind {
                FieldKind::Text => Op::Text(f.encoding.unwrap_or(enc)),
                FieldKind::Zoned { sign } => Op::Zoned {
                    sign,
                    signed: f.signed,
                },
                FieldKind::Packed => Op::Packed { signed: f.signed },
                FieldKind::Binary => Op::Binary { signed: f.signed },
            };
            let int =
                f.is_numeric() && f.scale == 0 && (f.kind == FieldKind::Binary || f.digits <= 18);
            let mut column_type = match f.kind {
                FieldKind::Text => ColumnType::String {
                    max_length: Some(f.length as u32),
                },
                _ if int => ColumnType::Int,
                FieldKind::Binary => ColumnType::Decimal {
                    precision: binary_precision(f.length, f.signed),
                    scale: f.scale,
                },
                _ => ColumnType::Decimal {
                    precision: f.digits,
                    scale: f.scale,
                },
            };
            let mut dims = Vec::with_capacity(f.occurs.len());
            for o in &f.occurs {
                let odo = match &o.depending_on {
                    None => None,
                    Some(_) => Some(
                        tables
                            .iter()
                            .position(|t| t.offset == o.table_offset && t.stride == o.stride)
                            .ok_or_else(|| {
                                LayoutError::Invalid(format!("{}: OCCURS table not found", f.name))
                            })?,
                    ),
                };
                dims.push(Dim {
                    max: o.max,
                    stride: o.stride,
                    odo,
                });
            }
            for _ in &f.occurs {
                column_type = ColumnType::Array(Box::new(column_type));
            }
            let start = f.occurs.first().map_or(f.offset, |o| o.table_offset);
            let odo_prefix = tables.iter().filter(|t| table_end(t) <= start).count();
            columns.push(Column {
                name: f.name.clone(),
                column_type,
                nullable: !f.variants.is_empty(),
            });
            let active = activity(&f.variants);
            plans.push(Plan {
                name: f.name.clone(),
                op,
                offset: f.offset,
                len: f.length,
                digits: f.digits,
                limit: 10u128.checked_pow(u32::from(f.digits)).unwrap_or(u128::MAX),
                scale: f.scale,
                int,
                simple: dims.is_empty() && odo_prefix == 0 && active.is_none(),
                dims,
                odo_prefix,
                active,
            });
        }
        let field_index = |name: &str| {
            layout
                .field_index(name)
                .ok_or_else(|| LayoutError::Invalid(format!("no field `{name}`")))
        };
        let mut odo = Vec::with_capacity(tables.len());
        for t in tables {
            odo.push(OdoTable {
                counter: field_index(&t.counter)?,
                counter_name: t.counter,
                min: t.min,
                max: t.max,
                stride: t.stride,
                active: t.active,
            });
        }
        let selector = match &layout.selector {
            None => None,
            Some(s) => {
                let field = field_index(&s.field)?;
                let mut cases = Vec::new();
                for (value, alt) in &s.cases {
                    let bytes = enc.encode(value.trim()).ok_or_else(|| {
                        LayoutError::Selector(format!("case `{value}` cannot be written in {enc}"))
                    })?;
                    cases.push((bytes, alt.clone()));
                }
                Some(Selector { field, cases })
            }
        };

        let mut digit = [INVALID; 256];
        let mut punch = [INVALID; 256];
        for d in 0..10u8 {
            digit[usize::from(enc.digit(d))] = d;
            punch[usize::from(enc.digit(d))] = d;
            if enc.is_ebcdic() {
                punch[usize::from(0xC0 | d)] = d;
                punch[usize::from(0xD0 | d)] = NEG | d;
            } else {
                match options.sign_convention {
                    SignConvention::Ibm => {
                        punch[usize::from(b"{ABCDEFGHI"[usize::from(d)])] = d;
                        punch[usize::from(b"}JKLMNOPQR"[usize::from(d)])] = NEG | d;
                    }
                    SignConvention::MicroFocus => {
                        punch[usize::from(b'p' + d)] = NEG | d;
                    }
                }
            }
        }
        let (plus, minus) = enc.plus_minus();
        let utf8_tables = Encoding::ALL
            .iter()
            .map(|e| e.code_points().map(numeric::utf8_table))
            .collect();
        let utf8_text = plans
            .iter()
            .any(|p| matches!(p.op, Op::Text(e) if e.code_points().is_none()));
        let steps = if odo.is_empty() && selector.is_none() {
            compile_steps(&plans)
        } else {
            None
        };
        Ok(Self {
            plans,
            columns,
            odo,
            selector,
            options,
            digit,
            punch,
            plus,
            minus,
            space: enc.space(),
            zone: enc.digit(0),
            utf8_text,
            utf8_tables,
            steps: steps.as_deref().and_then(|steps| {
                Program::new(
                    steps,
                    &fast::Tables {
                        zone: enc.digit(0),
                        punch: &punch,
                        plus,
                        minus,
                    },
                )
            }),
        })
    }

    /// The columns `decode` fills, in order: one per named elementary field (FILLER omitted).
    pub fn columns(&self) -> Vec<Column> {
        self.columns.clone()
    }

    pub fn options(&self) -> DecodeOptions {
        self.options
    }

    /// Decodes one record into owned values aligned with `columns()`.
    pub fn decode(&self, record: &[u8]) -> Result<Vec<Value>, FieldError> {
        let mut buf = RowBuffer::default();
        Ok(self.decode_row(record, &mut buf)?.to_values())
    }

    /// Like `decode`, reusing `out` (cleared first).
    pub fn decode_into(&self, record: &[u8], out: &mut Vec<Value>) -> Result<(), FieldError> {
        out.clear();
        let mut buf = RowBuffer::default();
        self.decode_row(record, &mut buf)?.append_values(out);
        Ok(())
    }

    /// `decode` through the general code alone, never the compiled steps: the reference the
    /// compiled decode is tested and fuzzed against.
    #[doc(hidden)]
    pub fn decode_general(&self, record: &[u8]) -> Result<Vec<Value>, FieldError> {
        let mut buf = RowBuffer::default();
        let text = if self.utf8_text {
            std::str::from_utf8(record).ok()
        } else {
            None
        };
        self.fill(record, text, &mut buf)?;
        buf.used = buf.scratch.len();
        let scratch = std::str::from_utf8(&buf.scratch).unwrap_or_default();
        Ok(Row {
            cells: &buf.cells,
            record: text.unwrap_or(""),
            scratch,
            wide: &buf.wide,
            columns: self.plans.len(),
        }
        .to_values())
    }

    /// Decodes one record into `buf` and returns its values, borrowed from `record` and
    /// `buf`: the allocation-free form of `decode`.
    pub fn decode_row<'a>(
        &self,
        record: &'a [u8],
        buf: &'a mut RowBuffer,
    ) -> Result<Row<'a>, FieldError> {
        self.decode_row_body::<false>(record, buf)
    }

    /// Decodes the records of `block` (from `RecordReader::next_block`), handing each one's
    /// index in the block and [`RecordDecoder::decode_row`] result to `each`, in order.
    ///
    /// The same decode as `decode_row`, with the per-call work (choosing the build for this
    /// CPU, setting up the compiled steps) done once a block rather than once a record.
    pub fn decode_block<F>(&self, block: &Block<'_>, buf: &mut RowBuffer, each: F)
    where
        F: FnMut(usize, Result<Row<'_>, FieldError>),
    {
        #[cfg(target_arch = "x86_64")]
        if self.steps.as_ref().is_some_and(fast::Program::modern) {
            // SAFETY: `modern` is set only when the CPU reported every feature
            // `decode_block_modern` is compiled for (`Program::new` checks them).
            return unsafe { self.decode_block_modern(block, buf, each) };
        }
        self.decode_block_body(block, buf, each)
    }

    /// [`RecordDecoder::decode_block`] compiled for the CPUs of `Program::modern`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,bmi1,bmi2,lzcnt,popcnt")]
    fn decode_block_modern<F>(&self, block: &Block<'_>, buf: &mut RowBuffer, each: F)
    where
        F: FnMut(usize, Result<Row<'_>, FieldError>),
    {
        self.decode_block_body(block, buf, each)
    }

    #[inline(always)]
    fn decode_block_body<F>(&self, block: &Block<'_>, buf: &mut RowBuffer, mut each: F)
    where
        F: FnMut(usize, Result<Row<'_>, FieldError>),
    {
        let n = block.record_length;
        // By count, not by cutting the bytes: an RDW or line record may be empty.
        for i in 0..block.records as usize {
            let record = block.data.get(i * n..(i + 1) * n).unwrap_or_default();
            each(i, self.decode_row_body::<true>(record, buf));
        }
    }

    /// `decode_row`; `INLINED` when the caller is compiled for the CPU's build, so that
    /// the compiled steps are inlined rather than called through their dispatch.
    #[inline(always)]
    fn decode_row_body<'a, const INLINED: bool>(
        &self,
        record: &'a [u8],
        buf: &'a mut RowBuffer,
    ) -> Result<Row<'a>, FieldError> {
        // One check of the whole record lets every ASCII text field borrow from it.
        let (text, ascii) = if self.utf8_text {
            match fast::ascii_or_utf8(record) {
                Ok((text, ascii)) => (Some(text), ascii),
                Err(_) => (None, false),
            }
        } else {
            (None, false)
        };
        let fast = self.compiled::<INLINED>(record, text, ascii, buf);
        let checked = match fast {
            Some(used) => {
                buf.used = used;
                false
            }
            None => {
                // The general code: every layout, and the exact error for a bad record.
                buf.cells.clear();
                buf.scratch.clear();
                buf.wide.clear();
                self.fill(record, text, buf)?;
                buf.used = buf.scratch.len();
                true
            }
        };
        let buf: &'a RowBuffer = buf;
        let scratch = if checked {
            // The scratch holds transcoded or validated text only; this cannot fail.
            let written = buf.scratch.get(..buf.used).unwrap_or_default();
            fast::ascii_or_utf8(written)
                .map_err(|u| FieldError {
                    field: "(text)".into(),
                    offset: 0,
                    reason: FieldErrorKind::InvalidText {
                        at: u.valid_up_to(),
                    },
                })?
                .0
        } else {
            // SAFETY: `buf.used` is what `Program::run` returned for `buf.scratch`, which
            // nothing has written since. (Checking it again cost a tenth of the EBCDIC decode.)
            unsafe { fast::written(&buf.scratch, buf.used) }
        };
        Ok(Row {
            cells: &buf.cells,
            record: text.unwrap_or(""),
            scratch,
            wide: &buf.wide,
            columns: self.plans.len(),
        })
    }

    /// For tests: the compiled decode as built for the x86-64 baseline, whatever the CPU.
    #[cfg(test)]
    pub(crate) fn baseline_only(&mut self) {
        if let Some(p) = self.steps.as_mut() {
            p.baseline_only();
        }
    }

    /// The compiled decode of `record` into `buf` (cells, scratch and wide decimals from the
    /// start): the scratch bytes used, or `None` when the general code must decode it.
    #[inline(always)]
    pub(crate) fn compiled<const INLINED: bool>(
        &self,
        record: &[u8],
        text: Option<&str>,
        ascii: bool,
        buf: &mut RowBuffer,
    ) -> Option<usize> {
        let program = self.steps.as_ref()?;
        if record.len() < program.need {
            return None;
        }
        buf.wide.clear();
        buf.cells.resize(program.cells(), Cell::Null);
        if buf.scratch.len() < program.scratch {
            buf.scratch.resize(program.scratch, 0);
        }
        let wide = &mut buf.wide;
        let general = |plan, off| {
            let p = self.plans.get(plan)?;
            // Numbers only: they write no text to the scratch buffer.
            self.cell(p, record, off, None, &mut Vec::new(), wide).ok()
        };
        let (cells, scratch) = (&mut buf.cells, &mut buf.scratch);
        if INLINED {
            program.run_inlined(record, text, ascii, cells, scratch, general)
        } else {
            program.run(record, text, ascii, cells, scratch, general)
        }
    }

    fn fill(
        &self,
        record: &[u8],
        text: Option<&str>,
        buf: &mut RowBuffer,
    ) -> Result<(), FieldError> {
        let case = match &self.selector {
            None => None,
            Some(sel) => Some(self.select(sel, record, text, buf)?),
        };
        let is_active = |a: &Option<Vec<bool>>| match (a, case) {
            (Some(per_case), Some(c)) => per_case[c],
            _ => true,
        };
        let mut counts = [0usize; MAX_ODO_TABLES];
        let mut shifts = [0usize; MAX_ODO_TABLES + 1];
        for (k, t) in self.odo.iter().enumerate() {
            if !is_active(&t.active) {
                counts[k] = t.max;
                shifts[k + 1] = shifts[k];
                continue;
            }
            let c = &self.plans[t.counter];
            let off = c.offset - shifts[c.odo_prefix];
            self.scalar(c, record, off, text, buf)
                .map_err(|r| c.error(off, r))?;
            let n = match pop_number(buf) {
                Some(Ok(n)) => i128::from(n),
                Some(Err(d)) => d.unscaled,
                None => -1,
            };
            if n < t.min as i128 || n > t.max as i128 {
                return Err(c.error(
                    off,
                    FieldErrorKind::OccursOutOfRange {
                        counter: t.counter_name.clone(),
                        count: n,
                        min: t.min,
                        max: t.max,
                    },
                ));
            }
            counts[k] = n as usize;
            shifts[k + 1] = shifts[k] + (t.max - counts[k]) * t.stride;
        }
        for p in &self.plans {
            if p.simple {
                self.scalar(p, record, p.offset, text, buf)
                    .map_err(|r| p.error(p.offset, r))?;
                continue;
            }
            if !is_active(&p.active) {
                buf.cells.push(Cell::Null);
                continue;
            }
            let off = p.offset - shifts[p.odo_prefix];
            if p.dims.is_empty() {
                self.scalar(p, record, off, text, buf)
                    .map_err(|r| p.error(off, r))?;
            } else {
                self.array(p, record, off, 0, &counts, text, buf)?;
            }
        }
        Ok(())
    }

    fn select(
        &self,
        sel: &Selector,
        record: &[u8],
        text: Option<&str>,
        buf: &mut RowBuffer,
    ) -> Result<usize, FieldError> {
        let p = &self.plans[sel.field];
        let raw = match record.get(p.offset..p.offset + p.len) {
            Some(r) => r,
            None => {
                return Err(p.error(
                    p.offset,
                    FieldErrorKind::ShortRecord {
                        needed: p.offset + p.len,
                        actual: record.len(),
                    },
                ));
            }
        };
        let value: Vec<u8>;
        let key: &[u8] = match p.op {
            Op::Text(_) | Op::Zoned { .. } => {
                let mut s = 0;
                let mut e = raw.len();
                while s < e && raw[s] == self.space {
                    s += 1;
                }
                while e > s && (raw[e - 1] == self.space || raw[e - 1] == 0) {
                    e -= 1;
                }
                &raw[s..e]
            }
            _ => {
                self.scalar(p, record, p.offset, text, buf)
                    .map_err(|r| p.error(p.offset, r))?;
                let key = match pop_number(buf) {
                    Some(Ok(i)) => i.to_string(),
                    Some(Err(d)) => d.to_string(),
                    None => String::new(),
                };
                value = self.options.encoding.encode(&key).unwrap_or_default();
                &value
            }
        };
        if let Some(i) = sel.cases.iter().position(|(v, _)| v.as_slice() == key) {
            return Ok(i);
        }
        let mut shown = String::new();
        for b in key {
            shown.push(self.options.encoding.decode_byte(*b).unwrap_or('\u{FFFD}'));
        }
        Err(p.error(p.offset, FieldErrorKind::UnknownRecordType { value: shown }))
    }

    #[allow(clippy::too_many_arguments)]
    fn array(
        &self,
        p: &Plan,
        record: &[u8],
        base: usize,
        dim: usize,
        counts: &[usize; MAX_ODO_TABLES],
        text: Option<&str>,
        buf: &mut RowBuffer,
    ) -> Result<(), FieldError> {
        let d = &p.dims[dim];
        let n = d.odo.map_or(d.max, |k| counts[k]);
        let at = buf.cells.len();
        buf.cells.push(Cell::Array { len: 0, span: 0 });
        for i in 0..n {
            let off = base + i * d.stride;
            let r = if dim + 1 == p.dims.len() {
                self.scalar(p, record, off, text, buf)
                    .map_err(|r| p.error(off, r))
            } else {
                self.array(p, record, off, dim + 1, counts, text, buf)
            };
            if let Err(mut e) = r {
                match e.field.rfind('(') {
                    Some(pos) if e.field.ends_with(')') => {
                        e.field.insert_str(pos + 1, &format!("{},", i + 1))
                    }
                    _ => e.field.push_str(&format!("({})", i + 1)),
                }
                return Err(e);
            }
        }
        let span = buf.cells.len() - at - 1;
        buf.cells[at] = Cell::Array {
            len: n as u32,
            span: span as u32,
        };
        Ok(())
    }

    /// Decodes the field (element) at `off` and pushes its cell.
    #[inline]
    fn scalar(
        &self,
        p: &Plan,
        record: &[u8],
        off: usize,
        text: Option<&str>,
        buf: &mut RowBuffer,
    ) -> Result<(), FieldErrorKind> {
        let cell = self.cell(p, record, off, text, &mut buf.scratch, &mut buf.wide)?;
        buf.cells.push(cell);
        Ok(())
    }

    /// The cell of the field (element) at `off`.
    fn cell(
        &self,
        p: &Plan,
        record: &[u8],
        off: usize,
        text: Option<&str>,
        scratch: &mut Vec<u8>,
        wide: &mut Vec<Decimal>,
    ) -> Result<Cell, FieldErrorKind> {
        let bytes = match record.get(off..off + p.len) {
            Some(b) => b,
            None if matches!(p.op, Op::Text(_)) && self.options.allow_short_text => {
                record.get(off..).unwrap_or(&[])
            }
            None => {
                return Err(FieldErrorKind::ShortRecord {
                    needed: off + p.len,
                    actual: record.len(),
                });
            }
        };
        let cell = match p.op {
            Op::Text(enc) => self.text(enc, bytes, off, text, scratch)?,
            Op::Zoned { sign, signed } => {
                let (neg, mag) = match self.zoned_fast(bytes, sign, signed) {
                    Some((neg, mag)) => (neg, u128::from(mag)),
                    None => self.zoned(bytes, off, sign, signed)?,
                };
                number(p, neg, mag, wide)
            }
            Op::Packed { signed } => {
                let (neg, mag) = match numeric::packed(bytes, signed) {
                    Some((neg, mag)) => (neg, u128::from(mag)),
                    None => packed(bytes, off, signed, p.digits)?,
                };
                // An even digit count leaves a pad nibble, which must be zero.
                if mag >= p.limit {
                    return Err(FieldErrorKind::TooManyDigits { digits: p.digits });
                }
                number(p, neg, mag, wide)
            }
            Op::Binary { signed } => {
                let mut be = [0u8; 8];
                be[8 - bytes.len()..].copy_from_slice(bytes);
                let u = u64::from_be_bytes(be);
                let v: i128 = if signed {
                    // Sign-extend from the field's width.
                    let shift = 64 - 8 * bytes.len() as u32;
                    i128::from(((u << shift) as i64) >> shift)
                } else {
                    if p.int && u > i64::MAX as u64 {
                        return Err(FieldErrorKind::Overflow { value: u });
                    }
                    i128::from(u)
                };
                if p.int {
                    Cell::Int(v as i64)
                } else {
                    decimal(v, p.scale, wide)
                }
            }
        };
        Ok(cell)
    }

    /// Text trimmed on the right: borrowed from the record when it is UTF-8 as a whole,
    /// otherwise validated or transcoded into the scratch buffer.
    #[inline]
    fn text(
        &self,
        enc: Encoding,
        bytes: &[u8],
        off: usize,
        text: Option<&str>,
        scratch: &mut Vec<u8>,
    ) -> Result<Cell, FieldErrorKind> {
        let e = numeric::trim_end(bytes, enc.space());
        let trimmed = &bytes[..e];
        let start = scratch.len();
        match enc.code_points() {
            None => {
                if let Some(t) = text
                    && t.is_char_boundary(off)
                    && t.is_char_boundary(off + e)
                {
                    return Ok(Cell::Record(off as u32, (off + e) as u32));
                }
                let s = std::str::from_utf8(trimmed).map_err(|u| FieldErrorKind::InvalidText {
                    at: off + u.valid_up_to(),
                })?;
                scratch.extend_from_slice(s.as_bytes());
            }
            Some(_) => {
                // `utf8_tables` follows `Encoding::ALL`, the declaration order.
                match self.utf8_tables.get(enc as usize).and_then(Option::as_ref) {
                    Some(table) => numeric::transcode(table, trimmed, scratch),
                    None => return Err(FieldErrorKind::InvalidText { at: off }),
                }
            }
        }
        Ok(Cell::Scratch(start as u32, scratch.len() as u32))
    }

    /// Zoned decimal of at most 18 digits with valid bytes throughout: (negative, magnitude).
    /// `None` sends the caller to `zoned`, which finds the error (or reads wider numbers).
    #[inline]
    fn zoned_fast(&self, b: &[u8], sign: SignPosition, signed: bool) -> Option<(bool, u64)> {
        if b.len() > FAST_DIGITS + 1 {
            return None;
        }
        let n = b.len();
        let mut neg = false;
        let (lead, digits, trail) = if !signed {
            (None, b, None)
        } else {
            match sign {
                SignPosition::Trailing => (None, &b[..n - 1], Some(b[n - 1])),
                SignPosition::Leading => (Some(b[0]), &b[1..], None),
                SignPosition::TrailingSeparate | SignPosition::LeadingSeparate => {
                    let (s, digits) = if sign == SignPosition::TrailingSeparate {
                        (b[n - 1], &b[..n - 1])
                    } else {
                        (b[0], &b[1..])
                    };
                    if s == self.minus {
                        neg = true;
                    } else if s != self.plus {
                        return None;
                    }
                    (None, digits, None)
                }
            }
        };
        let punched = usize::from(lead.is_some() || trail.is_some());
        if digits.len() + punched > FAST_DIGITS {
            return None;
        }
        let mut punch = |byte: u8| -> Option<u64> {
            let v = self.punch[usize::from(byte)];
            if v == INVALID {
                return None;
            }
            neg |= v & NEG != 0;
            Some(u64::from(v & 0x0F))
        };
        let mut acc = match lead {
            Some(byte) => punch(byte)?,
            None => 0,
        };
        if let Some(byte) = trail {
            let last = punch(byte)?;
            acc = numeric::digits(acc, digits, self.zone)? * 10 + last;
        } else {
            acc = numeric::digits(acc, digits, self.zone)?;
        }
        Some((neg, acc))
    }

    /// Zoned decimal, byte by byte: (negative, magnitude), or the precise error.
    fn zoned(
        &self,
        b: &[u8],
        off: usize,
        sign: SignPosition,
        signed: bool,
    ) -> Result<(bool, u128), FieldErrorKind> {
        let n = b.len();
        // The digit bytes, and where the overpunch (if any) is.
        let (digits, base, punched) = if !signed {
            // Unsigned: digits only (F zone in EBCDIC); an overpunch is an error.
            (b, off, None)
        } else {
            match sign {
                SignPosition::Trailing => (b, off, Some(n - 1)),
                SignPosition::Leading => (b, off, Some(0)),
                SignPosition::TrailingSeparate => (&b[..n - 1], off, None),
                SignPosition::LeadingSeparate => (&b[1..], off + 1, None),
            }
        };
        let mut neg = false;
        let sep = match (signed, sign) {
            (true, SignPosition::TrailingSeparate) => Some((b[n - 1], off + n - 1)),
            (true, SignPosition::LeadingSeparate) => Some((b[0], off)),
            _ => None,
        };
        if let Some((s, at)) = sep {
            if s == self.minus {
                neg = true;
            } else if s != self.plus {
                return Err(FieldErrorKind::BadSign { byte: s, at });
            }
        }
        let mut acc: u128 = 0;
        for (i, &byte) in digits.iter().enumerate() {
            let d = if Some(i) == punched {
                let v = self.punch[usize::from(byte)];
                if v == INVALID {
                    let at = base + i;
                    return Err(if byte == self.space {
                        FieldErrorKind::NonDigit { byte, at }
                    } else {
                        FieldErrorKind::BadSign { byte, at }
                    });
                }
                if v & NEG != 0 {
                    neg = true;
                }
                v & 0x0F
            } else {
                let v = self.digit[usize::from(byte)];
                if v == INVALID {
                    return Err(FieldErrorKind::NonDigit { byte, at: base + i });
                }
                v
            };
            acc = acc * 10 + u128::from(d);
        }
        Ok((neg, acc))
    }
}

#[inline]
fn number(p: &Plan, neg: bool, mag: u128, wide: &mut Vec<Decimal>) -> Cell {
    let v = if neg { -(mag as i128) } else { mag as i128 };
    if p.int {
        Cell::Int(v as i64)
    } else {
        decimal(v, p.scale, wide)
    }
}

/// A decimal cell: inline when the unscaled value fits an i64, else in `wide`.
fn decimal(unscaled: i128, scale: u8, wide: &mut Vec<Decimal>) -> Cell {
    match i64::try_from(unscaled) {
        Ok(v) => Cell::Decimal(v, scale),
        Err(_) => {
            wide.push(Decimal::new(unscaled, scale));
            Cell::Wide((wide.len() - 1) as u32)
        }
    }
}

/// Takes the number the last `scalar` pushed: `Ok` an integer, `Err` a decimal.
fn pop_number(buf: &mut RowBuffer) -> Option<Result<i64, Decimal>> {
    match buf.cells.pop()? {
        Cell::Int(i) => Some(Ok(i)),
        Cell::Decimal(u, scale) => Some(Err(Decimal::new(i128::from(u), scale))),
        Cell::Wide(i) => buf.wide.get(i as usize).copied().map(Err),
        _ => None,
    }
}

/// The compiled steps of a layout whose fields all sit at fixed offsets (fixed OCCURS
/// unrolled), or `None` if one needs the general code.
fn compile_steps(plans: &[Plan]) -> Option<Vec<Step>> {
    fn unroll(
        plan: usize,
        shape: &FieldShape,
        dims: &[Dim],
        base: usize,
        steps: &mut Vec<Step>,
    ) -> Option<()> {
        let Some((d, rest)) = dims.split_first() else {
            let step = match fast::compile(shape, base) {
                Some(step) => step,
                None if !matches!(shape.kind, ShapeKind::Text { .. }) => Step::General {
                    plan: u32::try_from(plan).ok()?,
                    off: u32::try_from(base).ok()?,
                    end: u32::try_from(base + shape.len).ok()?,
                },
                None => return None,
            };
            steps.push(step);
            return (steps.len() <= MAX_STEPS).then_some(());
        };
        let at = steps.len();
        steps.push(Step::Array { len: 0, span: 0 });
        for i in 0..d.max {
            unroll(plan, shape, rest, base + i * d.stride, steps)?;
        }
        steps[at] = Step::Array {
            len: u32::try_from(d.max).ok()?,
            span: u32::try_from(steps.len() - at - 1).ok()?,
        };
        Some(())
    }
    let mut steps = Vec::with_capacity(plans.len());
    for (i, p) in plans.iter().enumerate() {
        if p.odo_prefix != 0 || p.active.is_some() || p.dims.iter().any(|d| d.odo.is_some()) {
            return None;
        }
        let kind = match p.op {
            Op::Text(enc) => ShapeKind::Text {
                space: enc.space(),
                table: enc.code_points(),
            },
            Op::Zoned { sign, .. } => ShapeKind::Zoned { sign },
            Op::Packed { .. } => ShapeKind::Packed,
            Op::Binary { .. } => ShapeKind::Binary,
        };
        let signed = match p.op {
            Op::Text(_) => false,
            Op::Zoned { signed, .. } | Op::Packed { signed } | Op::Binary { signed } => signed,
        };
        let shape = FieldShape {
            kind,
            len: p.len,
            digits: p.digits,
            scale: p.scale,
            signed,
            int: p.int,
        };
        unroll(i, &shape, &p.dims, p.offset, &mut steps)?;
    }
    Some(steps)
}

/// Packed decimal, byte by byte: (negative, magnitude), or the precise error.
fn packed(b: &[u8], off: usize, signed: bool, digits: u8) -> Result<(bool, u128), FieldErrorKind> {
    let n = b.len();
    let too_many = FieldErrorKind::TooManyDigits { digits };
    let mut acc: u128 = 0;
    for (i, &byte) in b.iter().enumerate() {
        let hi = byte >> 4;
        let lo = byte & 0x0F;
        if hi > 9 {
            return Err(FieldErrorKind::BadPackedNibble {
                nibble: hi,
                at: off + i,
            });
        }
        if i + 1 < n && lo > 9 {
            return Err(FieldErrorKind::BadPackedNibble {
                nibble: lo,
                at: off + i,
            });
        }
        // 20 bytes hold 39 digits, one more than an i128 decimal takes.
        let push = |acc: u128, d: u8| acc.checked_mul(10).map(|a| a + u128::from(d));
        acc = push(acc, hi).ok_or(too_many.clone())?;
        if i + 1 < n {
            acc = push(acc, lo).ok_or(too_many.clone())?;
        }
    }
    let sign = b[n - 1] & 0x0F;
    let neg = match sign {
        0xC | 0xF => false,
        0xD if signed => true,
        0xD => {
            return Err(FieldErrorKind::NegativeUnsigned {
                byte: b[n - 1],
                at: off + n - 1,
            });
        }
        _ => {
            return Err(FieldErrorKind::BadSign {
                byte: b[n - 1],
                at: off + n - 1,
            });
        }
    };
    Ok((neg, acc))
}

/// Renders a decoded record as JSON: keys are the column names, OCCURS are arrays, integers
/// (and decimals without decimal places) are JSON numbers, decimals with an implied decimal
/// point are strings with exactly that many decimal places (`"-0.71051"`), text is a string,
/// an inactive REDEFINES alternative is null. [`JsonWriter`](super::JsonWriter) writes the
/// same text without building a `serde_json::Value`.
pub fn record_to_json(
    columns: &[Column],
    values: &[Value],
) -> serde_json::Map<String, serde_json::Value> {
    fn json(v: &Value) -> serde_json::Value {
        match v {
            Value::Decimal(d) if d.scale == 0 => {
                if let Ok(i) = i64::try_from(d.unscaled) {
                    serde_json::Value::from(i)
                } else if let Ok(u) = u64::try_from(d.unscaled) {
                    serde_json::Value::from(u)
                } else {
                    serde_json::Value::String(d.to_string())
                }
            }
            Value::Array(items) => serde_json::Value::Array(items.iter().map(json).collect()),
            other => other.to_json(),
        }
    }
    columns
        .iter()
        .zip(values)
        .map(|(c, v)| (c.name.clone(), json(v)))
        .collect()
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
