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
    /// `start..end`, at most 24 bytes (the callers keep zoned spans to 18 and packed to 8).
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

    /// The value of packed digit pairs (no sign nibble), or `None` for a nibble above 9.
    #[inline(always)]
    fn packed(&self, record: &[u8]) -> Option<u64> {
        let mut acc = 0u64;
        for c in &self.chunks[..usize::from(self.count)] {
            // A chunk of k bytes holds 2k digits.
            acc = acc * c.mult * c.mult + sixteen_digits(c.load(record, 0)?)?;
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
#[inline(always)]
fn sixteen_digits(w: u64) -> Option<u64> {
    let hi = (w >> 4) & LOW_NIBBLES;
    let lo = w & LOW_NIBBLES;
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
        /// The bytes before the last (two digits each).
        head: Span,
        /// The last byte (a digit and the sign).
        last: u32,
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
                head: Span::new(off, end - 1),
                last: (end - 1) as u32,
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
pub(crate) fn bounds(steps: &[Step]) -> (usize, usize) {
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
            Step::Packed { last, .. } => last as usize + 1,
            Step::Binary { at, .. } => at as usize + 8,
            Step::Array { .. } => 0,
            Step::General { end, .. } => end as usize,
        };
        need = need.max(end);
    }
    (need, scratch)
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

/// Runs `steps` over `record` into `cells` (exactly one per step) and `scratch` (transcoded
/// text, from 0). Returns the scratch bytes used, or `None` to hand the record to the general
/// code. `text` is the record as UTF-8 when it is valid as a whole; `general` decodes the
/// element of a field at an offset (for `Step::General`).
#[inline]
pub(crate) fn run(
    steps: &[Step],
    t: &Tables<'_>,
    record: &[u8],
    text: Option<&str>,
    cells: &mut [Cell],
    scratch: &mut [u8],
    mut general: impl FnMut(usize, usize) -> Option<Cell>,
) -> Option<usize> {
    let mut used = 0usize;
    for (step, cell) in steps.iter().zip(cells.iter_mut()) {
        *cell = match *step {
            Step::Text {
                off,
                len,
                space,
                how,
            } => {
                let (off, len) = (off as usize, len as usize);
                let bytes = record.get(off..off + len)?;
                let e = super::numeric::trim_end(bytes, space);
                match how {
                    Text::Borrowed => match text {
                        Some(t) if t.is_char_boundary(off) && t.is_char_boundary(off + e) => {
                            Cell::Record(off as u32, (off + e) as u32)
                        }
                        Some(_) => return None,
                        None => {
                            // Binary fields elsewhere in the record: check and copy this one.
                            let s = std::str::from_utf8(&bytes[..e]).ok()?;
                            let start = used;
                            scratch
                                .get_mut(used..used + e)?
                                .copy_from_slice(s.as_bytes());
                            used += e;
                            Cell::Scratch(start as u32, used as u32)
                        }
                    },
                    Text::Table(table) => {
                        let start = used;
                        used = transcode(table, &bytes[..e], scratch, used)?;
                        Cell::Scratch(start as u32, used as u32)
                    }
                }
            }
            Step::Zoned {
                ref digits,
                sign,
                scale,
                int,
            } => {
                let (neg, mag) = match sign {
                    Sign::None => (false, digits.zoned(record, t.zones)?),
                    Sign::Trailing { at } => {
                        let p = t.punch[usize::from(*record.get(at as usize)?)];
                        if p == INVALID {
                            return None;
                        }
                        let v = digits.zoned(record, t.zones)? * 10 + u64::from(p & 0x0F);
                        (p & NEG != 0, v)
                    }
                    Sign::Leading { at, weight } => {
                        let p = t.punch[usize::from(*record.get(at as usize)?)];
                        if p == INVALID {
                            return None;
                        }
                        let v = u64::from(p & 0x0F) * weight + digits.zoned(record, t.zones)?;
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
                        (neg, digits.zoned(record, t.zones)?)
                    }
                };
                // At most 18 digits: the magnitude fits an i64.
                let v = if neg { -(mag as i64) } else { mag as i64 };
                number(v, scale, int)
            }
            Step::Packed {
                ref head,
                last,
                signed,
                limit,
                scale,
                int,
            } => {
                let b = *record.get(last as usize)?;
                let (hi, sign) = (b >> 4, b & 0x0F);
                if hi > 9 {
                    return None;
                }
                let neg = match sign {
                    0xC | 0xF => false,
                    0xD if signed => true,
                    _ => return None,
                };
                let mag = head.packed(record)? * 10 + u64::from(hi);
                if mag >= limit {
                    return None;
                }
                let v = if neg { -(mag as i64) } else { mag as i64 };
                number(v, scale, int)
            }
            Step::Binary {
                at,
                down,
                width_shift,
                signed,
                scale,
                int,
            } => {
                let at = at as usize;
                let bytes: [u8; 8] = record.get(at..at + 8)?.try_into().ok()?;
                let u = (u64::from_be_bytes(bytes) >> down) << width_shift;
                let v = if signed {
                    (u as i64) >> width_shift
                } else {
                    let u = u >> width_shift;
                    // Wider than an i64: the general code makes a 128-bit decimal or names
                    // the overflow.
                    i64::try_from(u).ok()?
                };
                number(v, scale, int)
            }
            Step::Array { len, span } => Cell::Array { len, span },
            Step::General { plan, off, .. } => general(plan as usize, off as usize)?,
        };
    }
    Some(used)
}

#[inline(always)]
fn number(v: i64, scale: u8, int: bool) -> Cell {
    if int {
        Cell::Int(v)
    } else {
        Cell::Decimal(v, scale)
    }
}

/// Writes the UTF-8 text of single-byte `src` into `dst` from `at`, eight characters a step
/// while they are ASCII; returns the end, or `None` if `dst` is too short.
#[inline]
fn transcode(table: &[u8; 256], src: &[u8], dst: &mut [u8], at: usize) -> Option<usize> {
    let mut j = at;
    let mut blocks = src.chunks_exact(8);
    for block in &mut blocks {
        let out = dst.get_mut(j..j + 8)?;
        let mut high = 0u8;
        for (o, &b) in out.iter_mut().zip(block) {
            let c = table[usize::from(b)];
            *o = c;
            high |= c;
        }
        if high < 0x80 {
            j += 8;
        } else {
            for &b in block {
                j = push_char(table[usize::from(b)], dst, j)?;
            }
        }
    }
    for &b in blocks.remainder() {
        j = push_char(table[usize::from(b)], dst, j)?;
    }
    Some(j)
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
    fn transcodes_ascii_blocks_and_latin1() {
        let mut identity = [0u8; 256];
        for (i, b) in identity.iter_mut().enumerate() {
            *b = i as u8;
        }
        let src = "ABCDEFGHéIJKLMNOPQRS"
            .chars()
            .map(|c| c as u8)
            .collect::<Vec<_>>();
        let mut dst = vec![0u8; 2 * src.len()];
        let end = transcode(&identity, &src, &mut dst, 0).unwrap();
        assert_eq!(
            std::str::from_utf8(&dst[..end]).unwrap(),
            "ABCDEFGHéIJKLMNOPQRS"
        );
        assert_eq!(transcode(&identity, &src, &mut dst[..10], 0), None);
    }
}
