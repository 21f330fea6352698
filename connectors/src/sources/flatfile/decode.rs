//! Decoding records into typed values, from a field plan computed once per layout.

use super::encoding::Encoding;
use super::layout::{FieldKind, Layout, LayoutError, SignPosition};
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
    scale: u8,
    /// Scale-0 numbers that fit an i64 come out as `Value::Int`.
    int: bool,
    dims: Vec<Dim>,
    /// How many OCCURS DEPENDING ON tables end before this field (their shrinkage moves it).
    odo_prefix: usize,
    /// Per selector case: whether the field applies. `None`: always.
    active: Option<Vec<bool>>,
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

const INVALID: u8 = 0xFF;
const NEG: u8 = 0x10;

/// Decodes records of one layout. Build it once; `decode` is allocation-free apart from the
/// values it returns.
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
                let odo = o.depending_on.as_ref().map(|_| {
                    tables
                        .iter()
                        .position(|t| t.offset == o.table_offset && t.stride == o.stride)
                        .expect("table collected above")
                });
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
            plans.push(Plan {
                name: f.name.clone(),
                op,
                offset: f.offset,
                len: f.length,
                scale: f.scale,
                int,
                dims,
                odo_prefix,
                active: activity(&f.variants),
            });
        }
        let odo = tables
            .into_iter()
            .map(|t| OdoTable {
                counter: layout.field_index(&t.counter).expect("validated"),
                counter_name: t.counter,
                min: t.min,
                max: t.max,
                stride: t.stride,
                active: t.active,
            })
            .collect();
        let selector = match &layout.selector {
            None => None,
            Some(s) => {
                let field = layout.field_index(&s.field).expect("validated");
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
        })
    }

    /// The columns `decode` fills, in order: one per named elementary field (FILLER omitted).
    pub fn columns(&self) -> Vec<Column> {
        self.columns.clone()
    }

    pub fn options(&self) -> DecodeOptions {
        self.options
    }

    /// Decodes one record into values aligned with `columns()`.
    pub fn decode(&self, record: &[u8]) -> Result<Vec<Value>, FieldError> {
        let mut out = Vec::with_capacity(self.plans.len());
        self.decode_into(record, &mut out)?;
        Ok(out)
    }

    /// Like `decode`, reusing `out` (cleared first).
    pub fn decode_into(&self, record: &[u8], out: &mut Vec<Value>) -> Result<(), FieldError> {
        out.clear();
        let case = match &self.selector {
            None => None,
            Some(sel) => Some(self.select(sel, record)?),
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
            let n = match self.scalar(c, record, off)? {
                Value::Int(n) => i128::from(n),
                Value::Decimal(d) => d.unscaled,
                _ => unreachable!("counters are integers"),
            };
            if n < t.min as i128 || n > t.max as i128 {
                return Err(FieldError {
                    field: c.name.clone(),
                    offset: off,
                    reason: FieldErrorKind::OccursOutOfRange {
                        counter: t.counter_name.clone(),
                        count: n,
                        min: t.min,
                        max: t.max,
                    },
                });
            }
            counts[k] = n as usize;
            shifts[k + 1] = shifts[k] + (t.max - counts[k]) * t.stride;
        }
        for p in &self.plans {
            if !is_active(&p.active) {
                out.push(Value::Null);
                continue;
            }
            let off = p.offset - shifts[p.odo_prefix];
            let v = if p.dims.is_empty() {
                self.scalar(p, record, off)?
            } else {
                self.array(p, record, off, 0, &counts)?
            };
            out.push(v);
        }
        Ok(())
    }

    fn select(&self, sel: &Selector, record: &[u8]) -> Result<usize, FieldError> {
        let p = &self.plans[sel.field];
        let raw = match record.get(p.offset..p.offset + p.len) {
            Some(r) => r,
            None => return Err(self.short(p, p.offset, record.len())),
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
                let v = self.scalar(p, record, p.offset)?;
                value = self
                    .options
                    .encoding
                    .encode(&v.key_text())
                    .unwrap_or_default();
                &value
            }
        };
        if let Some(i) = sel.cases.iter().position(|(v, _)| v.as_slice() == key) {
            return Ok(i);
        }
        let mut text = String::new();
        for b in key {
            text.push(self.options.encoding.decode_byte(*b).unwrap_or('\u{FFFD}'));
        }
        Err(FieldError {
            field: p.name.clone(),
            offset: p.offset,
            reason: FieldErrorKind::UnknownRecordType { value: text },
        })
    }

    fn array(
        &self,
        p: &Plan,
        record: &[u8],
        base: usize,
        dim: usize,
        counts: &[usize; MAX_ODO_TABLES],
    ) -> Result<Value, FieldError> {
        let d = &p.dims[dim];
        let n = d.odo.map_or(d.max, |k| counts[k]);
        let mut items = Vec::with_capacity(n);
        for i in 0..n {
            let off = base + i * d.stride;
            let v = if dim + 1 == p.dims.len() {
                self.scalar(p, record, off)
            } else {
                self.array(p, record, off, dim + 1, counts)
            };
            match v {
                Ok(v) => items.push(v),
                Err(mut e) => {
                    match e.field.rfind('(') {
                        Some(pos) if e.field.ends_with(')') => {
                            e.field.insert_str(pos + 1, &format!("{},", i + 1))
                        }
                        _ => e.field.push_str(&format!("({})", i + 1)),
                    }
                    return Err(e);
                }
            }
        }
        Ok(Value::Array(items))
    }

    fn short(&self, p: &Plan, off: usize, actual: usize) -> FieldError {
        FieldError {
            field: p.name.clone(),
            offset: off,
            reason: FieldErrorKind::ShortRecord {
                needed: off + p.len,
                actual,
            },
        }
    }

    #[inline]
    fn scalar(&self, p: &Plan, record: &[u8], off: usize) -> Result<Value, FieldError> {
        let end = off + p.len;
        let bytes = match record.get(off..end) {
            Some(b) => b,
            None => {
                if matches!(p.op, Op::Text(_)) && self.options.allow_short_text {
                    record.get(off..).unwrap_or(&[])
                } else {
                    return Err(self.short(p, off, record.len()));
                }
            }
        };
        let err = |reason| FieldError {
            field: p.name.clone(),
            offset: off,
            reason,
        };
        match p.op {
            Op::Text(enc) => {
                let space = enc.space();
                let mut e = bytes.len();
                while e > 0 && (bytes[e - 1] == space || bytes[e - 1] == 0) {
                    e -= 1;
                }
                let mut s = String::new();
                enc.decode_into(&bytes[..e], &mut s).map_err(|u| {
                    err(FieldErrorKind::InvalidText {
                        at: off + u.valid_up_to(),
                    })
                })?;
                Ok(Value::String(s))
            }
            Op::Zoned { sign, signed } => {
                let (neg, mag) = self.zoned(bytes, off, sign, signed).map_err(err)?;
                Ok(self.number(p, neg, mag))
            }
            Op::Packed { signed } => {
                let (neg, mag) = packed(bytes, off, signed).map_err(err)?;
                Ok(self.number(p, neg, mag))
            }
            Op::Binary { signed } => {
                let v: i128 = match (bytes.len(), signed) {
                    (1, true) => i128::from(bytes[0] as i8),
                    (1, false) => i128::from(bytes[0]),
                    (2, true) => i128::from(i16::from_be_bytes([bytes[0], bytes[1]])),
                    (2, false) => i128::from(u16::from_be_bytes([bytes[0], bytes[1]])),
                    (4, true) => i128::from(i32::from_be_bytes(bytes.try_into().unwrap())),
                    (4, false) => i128::from(u32::from_be_bytes(bytes.try_into().unwrap())),
                    (8, true) => i128::from(i64::from_be_bytes(bytes.try_into().unwrap())),
                    _ => {
                        let u = u64::from_be_bytes(bytes.try_into().unwrap());
                        if p.int && u > i64::MAX as u64 {
                            return Err(err(FieldErrorKind::Overflow { value: u }));
                        }
                        i128::from(u)
                    }
                };
                Ok(if p.int {
                    Value::Int(v as i64)
                } else {
                    Value::Decimal(Decimal::new(v, p.scale))
                })
            }
        }
    }

    #[inline]
    fn number(&self, p: &Plan, neg: bool, mag: u128) -> Value {
        let v = if neg { -(mag as i128) } else { mag as i128 };
        if p.int {
            Value::Int(v as i64)
        } else {
            Value::Decimal(Decimal::new(v, p.scale))
        }
    }

    /// Zoned decimal: (negative, magnitude).
    #[inline]
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
        let mut small: u64 = 0;
        let wide = digits.len() > 19;
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
            if wide {
                acc = acc * 10 + u128::from(d);
            } else {
                small = small * 10 + u64::from(d);
            }
        }
        Ok((neg, if wide { acc } else { u128::from(small) }))
    }
}

/// Packed decimal: (negative, magnitude).
#[inline]
fn packed(b: &[u8], off: usize, signed: bool) -> Result<(bool, u128), FieldErrorKind> {
    let n = b.len();
    let mut acc: u128 = 0;
    let mut small: u64 = 0;
    let wide = n > 10;
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
        if wide {
            acc = acc * 10 + u128::from(hi);
            if i + 1 < n {
                acc = acc * 10 + u128::from(lo);
            }
        } else {
            small = small * 10 + u64::from(hi);
            if i + 1 < n {
                small = small * 10 + u64::from(lo);
            }
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
    Ok((neg, if wide { acc } else { u128::from(small) }))
}

/// Renders a decoded record as JSON: keys are the column names, OCCURS are arrays, integers
/// (and decimals without decimal places) are JSON numbers, decimals with an implied decimal
/// point are strings with exactly that many decimal places (`"-0.71051"`), text is a string,
/// an inactive REDEFINES alternative is null.
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
