//! The compiled decode: a layout without OCCURS DEPENDING ON or a record-type selector becomes,
//! once, a flat list of [`Step`]s, one per output cell (fixed OCCURS unrolled), each with its
//! offsets, masks and multipliers worked out ahead. A record is then decoded by one pass over
//! the steps writing cells in place: no per-field dispatch on sign position or signedness, no
//! allocation, and numbers read with whole-word loads.
//!
//! A step that meets anything unusual (a bad byte, a short record, invalid UTF-8) gives up and
//! the caller decodes the record again with the general code, which names the error exactly
//! as before; so the fast path only ever has to be right about records it accepts.

use super::row::Cell;

pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
const LOW_NIBBLES: u64 = 0x0F0F_0F0F_0F0F_0F0F;
const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
const SIXES: u64 = 0x0606_0606_0606_0606;

/// 10^0 ..= 10^18.
const POW10: [u64; 19] = {
    let mut t = [1u64; 19];
    let mut i = 1;
    while i < 19 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// Up to eight bytes of a field read as one little-endian word: the eight bytes ending at the
/// chunk's end (or the record's first eight, shifted up, when the chunk ends before byte 8),
/// so the chunk's bytes are the top `k` bytes and the bytes below them are replaced by a pad
/// that reads as leading zeros.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Chunk {
    at: u32,
    shift: u8,
    /// The bytes of the word that are the chunk's.
    keep: u64,
    /// 10^k: what the value so far is multiplied by before this chunk is added.
    mult: u64,
}

impl Chunk {
    /// The chunk `start..end` (at most 8 bytes).
    fn new(start: usize, end: usize) -> Self {
        let k = end - start;
        debug_assert!((1..=8).contains(&k));
        let (at, shift) = if end >= 8 {
            (end - 8, 0)
        } else {
            (0, 8 * (8 - end))
        };
        Self {
            at: at as u32,
            shift: shift as u8,
            keep: if k == 8 { !0 } else { !0u64 << (8 * (8 - k)) },
            mult: POW10[k],
        }
    }

    /// The chunk's word with `pad` in the bytes that are not the chunk's.
    #[inline(always)]
    fn load(&self, record: &[u8], pad: u64) -> Option<u64> {
        let at = self.at as usize;
        let bytes: [u8; 8] = record.get(at..at + 8)?.try_into().ok()?;
        let w = u64::from_le_bytes(bytes) << self.shift;
        Some((w & self.keep) | (pad & !self.keep))
    }
}

/// The digit bytes of a number, cut into up to three chunks, most significant first.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Span {
    chunks: [Chunk; 3],
    count: u8,
}

impl Span {
    /// `start..end`, at most 24 bytes (the callers keep zoned spans to 18).
    fn new(start: usize, end: usize) -> Self {
        let mut span = Span::default();
        let mut bounds = Vec::with_capacity(3);
        let mut e = end;
        while e > start {
            let s = e.saturating_sub(8).max(start);
            bounds.push((s, e));
            e = s;
        }
        debug_assert!(bounds.len() <= 3);
        for (i, (s, e)) in bounds.iter().rev().enumerate().take(3) {
            span.chunks[i] = Chunk::new(*s, *e);
        }
        span.count = bounds.len().min(3) as u8;
        span
    }

    /// The value of zoned digits (zone byte `zones` repeated), or `None` if a byte is not a
    /// digit.
    #[inline(always)]
    fn zoned(&self, record: &[u8], zones: u64) -> Option<u64> {
        let mut acc = 0u64;
        for c in &self.chunks[..usize::from(self.count)] {
            acc = acc * c.mult + eight_digits(c.load(record, zones)? ^ zones)?;
        }
        Some(acc)
    }
}

/// Eight digit values 0..=9 (one a byte, the first byte most significant) as a number, or
/// `None` if a byte is above 9.
#[inline(always)]
fn eight_digits(d: u64) -> Option<u64> {
    // Every byte 0..=9: no high nibble, and adding 6 carries no low nibble over.
    if (d | (d.wrapping_add(SIXES))) & HIGH_NIBBLES != 0 {
        return None;
    }
    let v = d.wrapping_mul(10 * 256 + 1) >> 8;
    let v = (v & 0x00FF_00FF_00FF_00FF).wrapping_mul(100 * 65_536 + 1) >> 16;
    Some((v & 0x0000_FFFF_0000_FFFF).wrapping_mul(10_000 * (1 << 32) + 1) >> 32)
}

/// Eight packed bytes (two digits each, the first byte most significant), or `None` for a
/// nibble above 9.
#[cfg(test)]
fn sixteen_digits(w: u64) -> Option<u64> {
    digit_pairs((w >> 4) & LOW_NIBBLES, w & LOW_NIBBLES)
}

/// Eight pairs of digits, the high digits of the pairs in `hi` and the low ones in `lo` (a
/// nibble value a byte, the first byte most significant), or `None` for a digit above 9.
#[inline(always)]
fn digit_pairs(hi: u64, lo: u64) -> Option<u64> {
    if ((hi + SIXES) | (lo + SIXES)) & HIGH_NIBBLES != 0 {
        return None;
    }
    // Each byte 0..=99, then pairs of bytes 0..=9999, then 0..=99_999_999 in each half.
    let b = (hi << 3) + (hi << 1) + lo;
    let x = (b & 0x00FF_00FF_00FF_00FF) * 100 + ((b >> 8) & 0x00FF_00FF_00FF_00FF);
    let y = (x & 0x0000_FFFF_0000_FFFF) * 10_000 + ((x >> 16) & 0x0000_FFFF_0000_FFFF);
    Some((y & 0xFFFF_FFFF) * 100_000_000 + (y >> 32))
}

/// Where a zoned number keeps its sign.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sign {
    /// Unsigned: digits only.
    None,
    /// Overpunched in the byte at `at`, the last digit.
    Trailing { at: u32 },
    /// Overpunched in the byte at `at`, the first digit, worth 10^(digits - 1).
    Leading { at: u32, weight: u64 },
    /// A `+` or `-` byte at `at`.
    Separate { at: u32 },
}

/// How a text field's bytes become UTF-8.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Text {
    /// ASCII/UTF-8, borrowed from the record (which was checked as a whole).
    Borrowed,
    /// A single-byte encoding, transcoded through its byte -> code point table.
    Table(&'static [u8; 256]),
}

/// One output cell of the compiled decode.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    Text {
        off: u32,
        len: u32,
        space: u8,
        how: Text,
    },
    Zoned {
        digits: Span,
        sign: Sign,
        scale: u8,
        int: bool,
    },
    Packed {
        /// The field's bytes `off..end` (at most 9).
        off: u32,
        end: u32,
        signed: bool,
        /// 10^digits: a larger magnitude has a non-zero pad nibble.
        limit: u64,
        scale: u8,
        int: bool,
    },
    Binary {
        /// The eight bytes ending at the field's end (or the record's first eight).
        at: u32,
        /// Right shift that brings the field's bytes to the bottom of the big-endian word.
        down: u8,
        /// 64 - bits of the field.
        width_shift: u8,
        signed: bool,
        scale: u8,
        int: bool,
    },
    /// The header of a fixed OCCURS: `len` elements in the next `span` cells.
    Array { len: u32, span: u32 },
    /// A number the steps do not cover (more than 18 digits): the general code decodes the
    /// element of field `plan` at `off..end`.
    General { plan: u32, off: u32, end: u32 },
}

/// What the compiler needs to know about a field (one element of it).
pub(crate) struct FieldShape {
    pub kind: ShapeKind,
    pub len: usize,
    pub digits: u8,
    pub scale: u8,
    pub signed: bool,
    pub int: bool,
}

pub(crate) enum ShapeKind {
    Text {
        space: u8,
        table: Option<&'static [u8; 256]>,
    },
    Zoned {
        sign: super::layout::SignPosition,
    },
    Packed,
    Binary,
}

/// The step for the element of `shape` at `off`, or `None` when it needs the general code
/// (more than 18 zoned or 17 packed digits, an odd binary width).
pub(crate) fn compile(shape: &FieldShape, off: usize) -> Option<Step> {
    use super::layout::SignPosition as P;
    let (n, end) = (shape.len, off + shape.len);
    if n == 0 {
        return None;
    }
    Some(match shape.kind {
        ShapeKind::Text { space, table } => Step::Text {
            off: u32::try_from(off).ok()?,
            len: u32::try_from(n).ok()?,
            space,
            how: table.map_or(Text::Borrowed, Text::Table),
        },
        ShapeKind::Zoned { sign } => {
            if n - usize::from(shape.signed && sign.is_separate()) > 18 {
                return None;
            }
            let (digits, sign) = match (shape.signed, sign) {
                (false, _) => (Span::new(off, end), Sign::None),
                (true, P::Trailing) => (
                    Span::new(off, end - 1),
                    Sign::Trailing {
                        at: (end - 1) as u32,
                    },
                ),
                (true, P::Leading) => (
                    Span::new(off + 1, end),
                    Sign::Leading {
                        at: off as u32,
                        weight: *POW10.get(n - 1)?,
                    },
                ),
                (true, P::TrailingSeparate) => (
                    Span::new(off, end - 1),
                    Sign::Separate {
                        at: (end - 1) as u32,
                    },
                ),
                (true, P::LeadingSeparate) => {
                    (Span::new(off + 1, end), Sign::Separate { at: off as u32 })
                }
            };
            Step::Zoned {
                digits,
                sign,
                scale: shape.scale,
                int: shape.int,
            }
        }
        ShapeKind::Packed => {
            if n > 9 {
                return None;
            }
            Step::Packed {
                off: off as u32,
                end: end as u32,
                signed: shape.signed,
                limit: *POW10.get(usize::from(shape.digits)).unwrap_or(&u64::MAX),
                scale: shape.scale,
                int: shape.int,
            }
        }
        ShapeKind::Binary => {
            if !matches!(n, 1 | 2 | 4 | 8) {
                return None;
            }
            Step::Binary {
                at: end.saturating_sub(8) as u32,
                down: (8 * (8 - end.min(8))) as u8,
                width_shift: (64 - 8 * n) as u8,
                signed: shape.signed,
                scale: shape.scale,
                int: shape.int,
            }
        }
    })
}

/// The bytes a record needs for every step to read in bounds, and the scratch bytes the
/// transcoded text may take.
fn bounds(steps: &[Step]) -> (usize, usize) {
    let mut need = 8;
    let mut scratch = 0;
    for s in steps {
        let end = match *s {
            Step::Text { off, len, how, .. } => {
                // Borrowed text is copied when the record as a whole is not UTF-8.
                scratch += match how {
                    Text::Table(_) => 2 * len as usize,
                    Text::Borrowed => len as usize,
                };
                off as usize + len as usize
            }
            Step::Zoned { digits, sign, .. } => {
                let at = match sign {
                    Sign::None => 0,
                    Sign::Trailing { at } | Sign::Leading { at, .. } | Sign::Separate { at } => {
                        at as usize + 1
                    }
                };
                at.max(digits.end())
            }
            Step::Packed { end, .. } => end as usize,
            Step::Binary { at, .. } => at as usize + 8,
            Step::Array { .. } => 0,
            Step::General { end, .. } => end as usize,
        };
        need = need.max(end);
    }
    (need, scratch + 8)
}

impl Span {
    fn end(&self) -> usize {
        self.chunks[..usize::from(self.count)]
            .iter()
            .map(|c| c.at as usize + 8)
            .max()
            .unwrap_or(0)
    }
}

/// The tables the steps read: the zone of digits, overpunch values, separate sign bytes.
pub(crate) struct Tables<'a> {
    /// The digit zone repeated in every byte (0x30.. ASCII, 0xF0.. EBCDIC).
    pub zones: u64,
    /// byte -> digit | NEG for an overpunched sign byte, or INVALID.
    pub punch: &'a [u8; 256],
    pub plus: u8,
    pub minus: u8,
}

pub(crate) const INVALID: u8 = 0xFF;
pub(crate) const NEG: u8 = 0x10;

/// The compiled steps grouped by kind, each with the index of the cell it writes: one tight
/// loop per kind, so the branches inside a loop go the same way field after field (a single
/// loop over mixed steps mispredicts its dispatch several times a record).
#[derive(Debug, Clone, Default)]
pub(crate) struct Program {
    cells: usize,
    /// The record length below which a step would read out of bounds.
    pub need: usize,
    /// Scratch bytes the steps may write.
    pub scratch: usize,
    arrays: Vec<(u32, Cell)>,
    borrowed: Vec<(u32, TextStep)>,
    transcoded: Vec<(u32, TextStep, &'static [u8; 256])>,
    unsigned: Vec<(u32, Span, Number)>,
    signed: Vec<(u32, Span, Sign, Number)>,
    packed: Vec<(u32, PackedStep, Number)>,
    binary: Vec<(u32, BinaryStep, Number)>,
    general: Vec<(u32, u32, u32)>,
}

/// A text field: where it is, and for fields of up to 64 bytes the words that cover it.
#[derive(Debug, Clone, Copy)]
struct TextStep {
    off: u32,
    len: u32,
    space: u8,
    /// How many of `words` cover the field; 0 for a field longer than 64 bytes.
    count: u8,
    /// First to last: the record offset of an 8-byte load and the mask of the field's bytes
    /// in it, with the space bit cleared (a byte of the field is kept when a bit survives).
    words: [(u32, u64); 8],
}

impl TextStep {
    /// `len` bytes at `off` trimmed with `space` (a single-bit byte: 0x20 or 0x40).
    fn new(off: usize, len: usize, space: u8) -> Self {
        let mut words = [(0u32, 0u64); 8];
        let mut count = 0;
        let clear = !(u64::from(space) * ONES);
        if len <= 64 {
            let end = off + len;
            if len >= 8 {
                // The first word at the field's start, the others ending 8 bytes apart at
                // its end (the first two may overlap).
                let k = len.div_ceil(8);
                words[0] = (off as u32, clear);
                for (n, w) in words[1..k].iter_mut().enumerate() {
                    *w = ((end - 8 * (k - 1 - n)) as u32, clear);
                }
                count = k;
            } else {
                // One word holding the field: ending at its end, or the record's first eight.
                let at = end.saturating_sub(8);
                let first = off - at;
                let bytes = !0u64 >> (8 * (8 - len)) << (8 * first);
                words[0] = (at as u32, bytes & clear);
                count = 1;
            }
        }
        Self {
            off: off as u32,
            len: len as u32,
            space,
            count: count as u8,
            words,
        }
    }

    /// The field's length without trailing spaces and NULs: the highest kept byte over the
    /// words, without a data-dependent branch.
    #[inline(always)]
    fn trimmed(&self, record: &[u8]) -> Option<usize> {
        let off = self.off as usize;
        if self.count == 0 {
            let len = self.len as usize;
            return Some(super::numeric::trim_end(
                record.get(off..off + len)?,
                self.space,
            ));
        }
        const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
        let mut end = 0usize;
        for &(at, mask) in &self.words[..usize::from(self.count)] {
            let at = at as usize;
            let w = u64::from_le_bytes(record.get(at..at + 8)?.try_into().ok()?) & mask;
            // The high bit of each byte that is not zero (exact: no carry between bytes).
            let kept = (((w & LOW7) + LOW7) | w) & !LOW7;
            // One past the highest kept byte, counted from the field's start.
            let e = (at + 8)
                .wrapping_sub(off)
                .wrapping_sub(kept.leading_zeros() as usize / 8);
            end = if kept != 0 { e } else { end };
        }
        Some(end)
    }
}

#[derive(Debug, Clone, Copy)]
struct Number {
    scale: u8,
    int: bool,
}

/// A packed decimal of up to 9 bytes.
#[derive(Debug, Clone, Copy)]
struct PackedStep {
    /// The field's last eight bytes (fewer at the top of the word, zeros below): up to 15
    /// digits and the sign.
    tail: Chunk,
    /// The first byte of a 9-byte field (two more digits), or `u32::MAX`.
    head: u32,
    signed: bool,
    limit: u64,
}

impl PackedStep {
    fn new(off: usize, end: usize, signed: bool, limit: u64) -> Self {
        let (head, start) = if end - off > 8 {
            (off as u32, off + 1)
        } else {
            (u32::MAX, off)
        };
        Self {
            tail: Chunk::new(start, end),
            head,
            signed,
            limit,
        }
    }

    /// (1 if negative, magnitude), or `None` for a bad nibble, a bad sign or a magnitude
    /// with more digits than the picture.
    #[inline(always)]
    fn decode(&self, record: &[u8]) -> Option<(u8, u64)> {
        let w = self.tail.load(record, 0)?;
        // Signs come in any mix: one table look-up, no branch on them.
        let sign = PACKED_SIGN[usize::from(self.signed)][(w >> 56) as usize & 0x0F];
        // The sign is the low nibble of the last (top) byte. Without it, and with a zero
        // nibble in front, the digits pair up one nibble later: a byte's high nibble is the
        // low digit of a pair, the previous byte's low nibble the high one.
        let hi = (w & LOW_NIBBLES) << 8;
        let lo = (w >> 4) & LOW_NIBBLES;
        let mut mag = digit_pairs(hi, lo)?;
        if self.head != u32::MAX {
            let b = *record.get(self.head as usize)?;
            let (h, l) = (b >> 4, b & 0x0F);
            if h > 9 || l > 9 {
                return None;
            }
            mag += u64::from(h * 10 + l) * POW10[15];
        }
        if sign == INVALID || mag >= self.limit {
            return None;
        }
        Some((sign, mag))
    }
}

#[derive(Debug, Clone, Copy)]
struct BinaryStep {
    at: u32,
    down: u8,
    width_shift: u8,
    signed: bool,
}

impl Program {
    pub(crate) fn new(steps: &[Step]) -> Self {
        let (need, scratch) = bounds(steps);
        let mut p = Program {
            cells: steps.len(),
            need,
            scratch,
            ..Program::default()
        };
        for (i, step) in steps.iter().enumerate() {
            let i = i as u32;
            match *step {
                Step::Text {
                    off,
                    len,
                    space,
                    how,
                } => {
                    let t = TextStep::new(off as usize, len as usize, space);
                    match how {
                        Text::Borrowed => p.borrowed.push((i, t)),
                        Text::Table(table) => p.transcoded.push((i, t, table)),
                    }
                }
                Step::Zoned {
                    digits,
                    sign,
                    scale,
                    int,
                } => {
                    let n = Number { scale, int };
                    match sign {
                        Sign::None => p.unsigned.push((i, digits, n)),
                        sign => p.signed.push((i, digits, sign, n)),
                    }
                }
                Step::Packed {
                    off,
                    end,
                    signed,
                    limit,
                    scale,
                    int,
                } => p.packed.push((
                    i,
                    PackedStep::new(off as usize, end as usize, signed, limit),
                    Number { scale, int },
                )),
                Step::Binary {
                    at,
                    down,
                    width_shift,
                    signed,
                    scale,
                    int,
                } => p.binary.push((
                    i,
                    BinaryStep {
                        at,
                        down,
                        width_shift,
                        signed,
                    },
                    Number { scale, int },
                )),
                Step::Array { len, span } => p.arrays.push((i, Cell::Array { len, span })),
                Step::General { plan, off, .. } => p.general.push((i, plan, off)),
            }
        }
        p
    }

    /// The number of cells a record fills.
    pub(crate) fn cells(&self) -> usize {
        self.cells
    }

    /// Decodes `record` into `cells` (exactly `cells()` of them) and `scratch` (transcoded
    /// text, from 0). Returns the scratch bytes used, or `None` to hand the record to the
    /// general code. `text` is the record as UTF-8 when it is valid as a whole, `ascii` whether
    /// it is all ASCII; `general` decodes the element of a field at an offset (numbers the
    /// steps do not cover).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        &self,
        t: &Tables<'_>,
        record: &[u8],
        text: Option<&str>,
        ascii: bool,
        cells: &mut [Cell],
        scratch: &mut [u8],
        mut general: impl FnMut(usize, usize) -> Option<Cell>,
    ) -> Option<usize> {
        let mut used = 0usize;
        for &(i, cell) in &self.arrays {
            *cells.get_mut(i as usize)? = cell;
        }
        for &(i, ref d, n) in &self.unsigned {
            let v = d.zoned(record, t.zones)?;
            // At most 18 digits: the magnitude fits an i64.
            *cells.get_mut(i as usize)? = number(v as i64, n);
        }
        for &(i, ref d, sign, n) in &self.signed {
            let (neg, mag) = signed_zoned(d, sign, record, t)?;
            *cells.get_mut(i as usize)? = number(negate(mag, u8::from(neg)), n);
        }
        for &(i, ref p, n) in &self.packed {
            let (sign, mag) = p.decode(record)?;
            *cells.get_mut(i as usize)? = number(negate(mag, sign), n);
        }
        for &(i, b, n) in &self.binary {
            let at = b.at as usize;
            let bytes: [u8; 8] = record.get(at..at + 8)?.try_into().ok()?;
            let u = (u64::from_be_bytes(bytes) >> b.down) << b.width_shift;
            let v = if b.signed {
                (u as i64) >> b.width_shift
            } else {
                // Wider than an i64: the general code makes a 128-bit decimal or names the
                // overflow.
                i64::try_from(u >> b.width_shift).ok()?
            };
            *cells.get_mut(i as usize)? = number(v, n);
        }
        match text {
            Some(whole) => {
                for &(i, ref ts) in &self.borrowed {
                    let off = ts.off as usize;
                    let e = ts.trimmed(record)?;
                    // The text ends at a character boundary: at a trimmed space, or where the
                    // field ends. Checking the field's ends keeps the loads off `e`. Every
                    // byte of an ASCII record is one.
                    let end = off + ts.len as usize;
                    let at_boundaries =
                        ascii || (whole.is_char_boundary(off) && whole.is_char_boundary(end));
                    if !at_boundaries {
                        return None;
                    }
                    *cells.get_mut(i as usize)? = Cell::Record(off as u32, (off + e) as u32);
                }
            }
            None => {
                // Binary fields elsewhere in the record: check and copy each text field.
                for &(i, ref ts) in &self.borrowed {
                    let off = ts.off as usize;
                    let e = ts.trimmed(record)?;
                    let s = std::str::from_utf8(record.get(off..off + e)?).ok()?;
                    let start = used;
                    scratch
                        .get_mut(used..used + e)?
                        .copy_from_slice(s.as_bytes());
                    used += e;
                    *cells.get_mut(i as usize)? = Cell::Scratch(start as u32, used as u32);
                }
            }
        }
        for &(i, ref ts, table) in &self.transcoded {
            let off = ts.off as usize;
            let e = ts.trimmed(record)?;
            let start = used;
            used = transcode(table, record.get(off..off + e)?, scratch, used)?;
            *cells.get_mut(i as usize)? = Cell::Scratch(start as u32, used as u32);
        }
        for &(i, plan, off) in &self.general {
            *cells.get_mut(i as usize)? = general(plan as usize, off as usize)?;
        }
        Some(used)
    }
}

/// A signed zoned number: (negative, magnitude).
#[inline(always)]
fn signed_zoned(d: &Span, sign: Sign, record: &[u8], t: &Tables<'_>) -> Option<(bool, u64)> {
    Some(match sign {
        Sign::None => (false, d.zoned(record, t.zones)?),
        Sign::Trailing { at } => {
            let p = t.punch[usize::from(*record.get(at as usize)?)];
            if p == INVALID {
                return None;
            }
            let v = d.zoned(record, t.zones)? * 10 + u64::from(p & 0x0F);
            (p & NEG != 0, v)
        }
        Sign::Leading { at, weight } => {
            let p = t.punch[usize::from(*record.get(at as usize)?)];
            if p == INVALID {
                return None;
            }
            let v = u64::from(p & 0x0F) * weight + d.zoned(record, t.zones)?;
            (p & NEG != 0, v)
        }
        Sign::Separate { at } => {
            let s = *record.get(at as usize)?;
            let neg = if s == t.minus {
                true
            } else if s == t.plus {
                false
            } else {
                return None;
            };
            (neg, d.zoned(record, t.zones)?)
        }
    })
}

/// [unsigned, signed][sign nibble] -> 1 negative, 0 positive, or INVALID.
const PACKED_SIGN: [[u8; 16]; 2] = {
    let mut t = [[INVALID; 16]; 2];
    t[0][0xC] = 0;
    t[0][0xF] = 0;
    t[1][0xC] = 0;
    t[1][0xF] = 0;
    t[1][0xD] = 1;
    t
};

/// `mag` (at most 18 digits), negated when `neg` is 1, without a branch on it.
#[inline(always)]
fn negate(mag: u64, neg: u8) -> i64 {
    let m = -i64::from(neg & 1);
    ((mag as i64) ^ m) - m
}

#[inline(always)]
fn number(v: i64, n: Number) -> Cell {
    if n.int {
        Cell::Int(v)
    } else {
        Cell::Decimal(v, n.scale)
    }
}

/// Writes the UTF-8 text of single-byte `src` into `dst` from `at`; returns the end, or
/// `None` if `dst` is too short. One byte a character while they are ASCII (the common case:
/// a store per byte, one check per field); a field with any other character is written again
/// two bytes for those.
#[inline(always)]
fn transcode(table: &[u8; 256], src: &[u8], dst: &mut [u8], at: usize) -> Option<usize> {
    let out = dst.get_mut(at..at + src.len())?;
    let mut high = 0u8;
    for (o, &b) in out.iter_mut().zip(src) {
        let c = table[usize::from(b)];
        *o = c;
        high |= c;
    }
    if high < 0x80 {
        return Some(at + src.len());
    }
    let mut j = at;
    for &b in src {
        j = push_char(table[usize::from(b)], dst, j)?;
    }
    Some(j)
}

/// Whether every byte is below 0x80: a word at a time, the last word overlapping the one
/// before (`<[u8]>::is_ascii` goes byte by byte after its last 64-byte block, about 200
/// instructions for the tail of a 110-byte record).
#[inline]
fn is_ascii(bytes: &[u8]) -> bool {
    let (words, _) = bytes.as_chunks::<8>();
    let Some(last) = bytes.last_chunk::<8>() else {
        return bytes.iter().fold(0, |acc, &b| acc | b) < 0x80;
    };
    let high = words.iter().fold(u64::from_le_bytes(*last), |acc, w| {
        acc | u64::from_le_bytes(*w)
    });
    high & 0x8080_8080_8080_8080 == 0
}

/// `bytes` as text, and whether it is all ASCII: an ASCII check a word at a time, and the
/// full UTF-8 check only when some byte is not ASCII.
#[inline]
pub(crate) fn ascii_or_utf8(bytes: &[u8]) -> Result<(&str, bool), std::str::Utf8Error> {
    if is_ascii(bytes) {
        // SAFETY: every byte is below 0x80, and ASCII bytes are valid UTF-8 on their own.
        // (`from_utf8` costs about 1.5 instructions a byte here, a sixth of the ASCII
        // layout's whole decode.)
        Ok((unsafe { std::str::from_utf8_unchecked(bytes) }, true))
    } else {
        std::str::from_utf8(bytes).map(|t| (t, false))
    }
}

/// Writes code point `c` (below U+0100) as UTF-8.
#[inline(always)]
fn push_char(c: u8, dst: &mut [u8], j: usize) -> Option<usize> {
    if c < 0x80 {
        *dst.get_mut(j)? = c;
        Some(j + 1)
    } else {
        let pair = dst.get_mut(j..j + 2)?;
        pair[0] = 0xC0 | (c >> 6);
        pair[1] = 0x80 | (c & 0x3F);
        Some(j + 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_like_the_byte_loop_anywhere_in_a_record() {
        // Runs of spaces (both), NULs and bytes sharing bits with the spaces.
        let mut record = Vec::new();
        let mut x = 7u32;
        for i in 0..90u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let run = (i / 5) % 4;
            record.push(match (run, (x >> 16) % 11) {
                (0 | 1, _) | (_, 0) => b' ',
                (_, 1) => 0x40,
                (_, 2) => 0,
                (_, 3) => 0x60,
                (_, 4) => 0x80,
                (_, 5) => 0xE0,
                (_, r) => b'a' + r as u8,
            });
        }
        for space in [b' ', 0x40] {
            for off in 0..20 {
                for len in 1..=70 {
                    let step = TextStep::new(off, len, space);
                    let want = super::super::numeric::trim_end(&record[off..off + len], space);
                    assert_eq!(step.trimmed(&record), Some(want), "{space} {off} {len}");
                }
            }
        }
    }

    #[test]
    fn sixteen_packed_digits() {
        let w = u64::from_le_bytes([0x12, 0x34, 0x56, 0x78, 0x90, 0x12, 0x34, 0x56]);
        assert_eq!(sixteen_digits(w), Some(1_234_567_890_123_456));
        assert_eq!(sixteen_digits(0), Some(0));
        assert_eq!(
            sixteen_digits(u64::from_le_bytes([0x99; 8])),
            Some(9_999_999_999_999_999)
        );
        for at in 0..8 {
            for bad in [0x0A, 0xA0, 0xFF, 0x9C] {
                let mut b = [0x11u8; 8];
                b[at] = bad;
                assert_eq!(
                    sixteen_digits(u64::from_le_bytes(b)),
                    None,
                    "{bad:X} at {at}"
                );
            }
        }
    }

    #[test]
    fn packed_fields_of_every_length_wherever_they_lie() {
        for n in 1..=9usize {
            for off in 0..12usize {
                for (digits, sign) in [(0u64, 0xCu8), (7, 0xD), (u64::MAX, 0xF), (5, 0xA)] {
                    // 2n - 1 digits: the low digits of a fixed pattern, or all nines.
                    let count = 2 * n - 1;
                    let value = if digits == u64::MAX {
                        POW10[count] - 1
                    } else {
                        (12_345_678_901_234_567 + digits) % POW10[count]
                    };
                    let mut record = vec![0x77u8; off];
                    let text = format!("{value:0count$}");
                    let mut nibbles: Vec<u8> = text.bytes().map(|c| c - b'0').collect();
                    nibbles.push(sign);
                    record.extend(nibbles.chunks(2).map(|p| (p[0] << 4) | p[1]));
                    record.resize(record.len().max(8) + 3, 0x77);
                    for signed in [false, true] {
                        let step = PackedStep::new(off, off + n, signed, POW10[count]);
                        let want = match (sign, signed) {
                            (0xC | 0xF, _) => Some((0, value)),
                            (0xD, true) => Some((1, value)),
                            _ => None,
                        };
                        assert_eq!(step.decode(&record), want, "{n} {off} {value} {sign:X}");
                        // Fewer digits allowed than the field holds: the top one is a pad.
                        let limit = POW10[count - 1];
                        let step = PackedStep::new(off, off + n, signed, limit);
                        assert_eq!(
                            step.decode(&record),
                            want.filter(|&(_, v)| v < limit),
                            "{n} {off} {value} {sign:X} limit"
                        );
                    }
                    // A bad nibble anywhere but the sign.
                    for at in 0..count {
                        let mut bad = record.clone();
                        let (i, high) = (off + at / 2, at % 2 == 0);
                        bad[i] = if high {
                            (bad[i] & 0x0F) | 0xB0
                        } else {
                            (bad[i] & 0xF0) | 0x0E
                        };
                        let step = PackedStep::new(off, off + n, true, POW10[count]);
                        assert_eq!(step.decode(&bad), None, "{n} {off} nibble {at}");
                    }
                }
            }
        }
    }

    #[test]
    fn spans_read_digits_wherever_they_lie() {
        let record = b"x1234567890123456789y";
        for start in 0..record.len() {
            for end in start + 1..=(start + 18).min(record.len()) {
                let text = &record[start..end];
                let span = Span::new(start, end);
                let want = std::str::from_utf8(text)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|_| text.iter().all(u8::is_ascii_digit));
                assert_eq!(span.zoned(record, 0x30 * ONES), want, "{start}..{end}");
            }
        }
    }

    #[test]
    fn ascii_check_sees_a_high_byte_anywhere() {
        for len in 0..40 {
            let bytes = vec![b'a'; len];
            assert_eq!(ascii_or_utf8(&bytes), Ok(("a".repeat(len).as_str(), true)));
            for at in 0..len {
                let mut high = bytes.clone();
                high[at] = 0x80;
                assert!(!is_ascii(&high), "{len} {at}");
                assert!(ascii_or_utf8(&high).is_err());
                if at + 1 < len {
                    high[at..at + 2].copy_from_slice("é".as_bytes());
                    assert_eq!(
                        ascii_or_utf8(&high).map(|(t, a)| (t.len(), a)),
                        Ok((len, false))
                    );
                }
            }
        }
    }

    #[test]
    fn transcodes_ascii_blocks_and_latin1() {
        let mut identity = [0u8; 256];
        for (i, b) in identity.iter_mut().enumerate() {
            *b = i as u8;
        }
        let src = "ABCDEFGHéIJKLMNOPQRS"
            .chars()
            .map(|c| c as u8)
            .collect::<Vec<_>>();
        let mut dst = vec![0u8; 2 * src.len() + 8];
        for (from, to) in [(0, src.len()), (1, 19), (3, 9), (5, 5), (8, 9), (0, 8)] {
            let end = transcode(&identity, &src[from..to], &mut dst, 2).unwrap();
            let want: String = "ABCDEFGHéIJKLMNOPQRS"
                .chars()
                .skip(from)
                .take(to - from)
                .collect();
            assert_eq!(std::str::from_utf8(&dst[2..end]).unwrap(), want);
        }
        assert_eq!(transcode(&identity, &src, &mut dst[..10], 0), None);
    }
}
