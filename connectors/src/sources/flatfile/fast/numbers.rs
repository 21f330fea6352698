//! The numbers of the compiled decode: zoned digits (a word or 16 bytes at a time), packed
//! decimals and binary integers, each step with its offsets, masks and multipliers worked out
//! when the decoder is built.

use super::super::lanes::Lanes;
use super::super::row::Cell;
use super::INVALID;

#[cfg(test)]
const ONES: u64 = 0x0101_0101_0101_0101;
const LOW_NIBBLES: u64 = 0x0F0F_0F0F_0F0F_0F0F;
const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
const SIXES: u64 = 0x0606_0606_0606_0606;

/// 10^0 ..= 10^18.
pub(super) const POW10: [u64; 19] = {
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
pub(super) struct Chunk {
    at: u32,
    shift: u8,
    /// The bytes of the word that are the chunk's.
    keep: u64,
    /// 10^k: what the value so far is multiplied by before this chunk is added.
    mult: u64,
}

impl Chunk {
    /// The chunk `start..end` (at most 8 bytes).
    pub(super) fn new(start: usize, end: usize) -> Self {
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

    /// The value of the chunk's zoned digits (zone byte `zones` repeated), or `None` if a
    /// byte is not a digit. The pad is the zone, so the bytes below the chunk read as zeros.
    #[inline(always)]
    fn zoned(&self, record: &[u8], zones: u64) -> Option<u64> {
        eight_digits(self.load(record, zones)? ^ zones)
    }
}

/// The digit bytes of a number, cut into up to three chunks, most significant first.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Span {
    chunks: [Chunk; 3],
    count: u8,
}

impl Span {
    /// `start..end`, at most 24 bytes (the callers keep zoned spans to 18).
    pub(super) fn new(start: usize, end: usize) -> Self {
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
            acc = acc * c.mult + c.zoned(record, zones)?;
        }
        Some(acc)
    }
}

/// Eight digit values 0..=9 (one a byte, the first byte most significant) as a number, or
/// `None` if a byte is above 9.
#[inline(always)]
pub(crate) fn eight_digits(d: u64) -> Option<u64> {
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

/// How the digits of a zoned number are read: one word for up to 8 digits ([`Chunk`]), one
/// 16-byte load for 9 to 16 ([`Digits16`]), up to three words for 17 or 18 ([`Span`]).
pub(super) trait Digits: Copy {
    /// The value of the digits, or `None` if a byte is not a digit.
    fn value(&self, record: &[u8], lanes: &Lanes) -> Option<u64>;
}

impl Digits for Chunk {
    #[inline(always)]
    fn value(&self, record: &[u8], lanes: &Lanes) -> Option<u64> {
        self.zoned(record, lanes.zones())
    }
}

impl Digits for Span {
    #[inline(always)]
    fn value(&self, record: &[u8], lanes: &Lanes) -> Option<u64> {
        self.zoned(record, lanes.zones())
    }
}

/// 9 to 16 digits read with one 16-byte load: the 16 bytes ending at the digits' end, or, for
/// digits that end before byte 16, the record's first 16 bytes moved up to end there.
#[derive(Debug, Clone, Copy)]
pub(super) struct Digits16 {
    at: u32,
    /// Bytes to move the load up by (digits ending before byte 16).
    shift: u8,
    /// 0xFF for the digits' bytes (the top ones), 0 below.
    keep: [u8; 16],
}

impl Digits16 {
    /// The digits at `start..end` (at most 16 bytes).
    pub(super) fn new(start: usize, end: usize) -> Self {
        let n = end - start;
        debug_assert!((1..=16).contains(&n));
        let mut keep = [0u8; 16];
        keep[16 - n..].fill(0xFF);
        Self {
            at: end.saturating_sub(16) as u32,
            shift: 16usize.saturating_sub(end) as u8,
            keep,
        }
    }
}

impl Digits for Digits16 {
    #[inline(always)]
    fn value(&self, record: &[u8], lanes: &Lanes) -> Option<u64> {
        let at = self.at as usize;
        let bytes: &[u8; 16] = record.get(at..at + 16)?.try_into().ok()?;
        if self.shift == 0 {
            lanes.digits16(bytes, &self.keep)
        } else {
            let moved = u128::from_le_bytes(*bytes) << (8 * u32::from(self.shift));
            lanes.digits16_word(moved, &self.keep)
        }
    }
}

/// Which table reads a sign byte.
pub(super) const OVERPUNCH: u8 = 0;
pub(super) const SEPARATE: u8 = 1;

/// The sign byte of a signed zoned number, read through a table (byte -> digit | NEG, or
/// INVALID): an overpunched digit (trailing: magnitude = digits * 10 + digit; leading:
/// digits + digit * 10^(n - 1)) or a separate `+`/`-` (worth nothing).
#[derive(Debug, Clone, Copy)]
pub(super) struct SignByte {
    pub at: u32,
    pub table: u8,
    pub times: u64,
    pub weight: u64,
}

/// An unsigned zoned number and the cell it fills.
#[derive(Debug, Clone, Copy)]
pub(super) struct Zoned<D> {
    pub cell: u32,
    pub digits: D,
    pub number: Number,
}

/// A signed zoned number and the cell it fills.
#[derive(Debug, Clone, Copy)]
pub(super) struct SignedZoned<D> {
    pub cell: u32,
    pub digits: D,
    pub sign: SignByte,
    pub number: Number,
}

/// Decodes unsigned zoned numbers into their cells; `None` at the first bad one.
#[inline(always)]
pub(super) fn unsigned<D: Digits>(
    steps: &[Zoned<D>],
    record: &[u8],
    lanes: &Lanes,
    cells: &mut [Cell],
) -> Option<()> {
    for s in steps {
        let v = s.digits.value(record, lanes)?;
        // At most 18 digits: the magnitude fits an i64.
        *cells.get_mut(s.cell as usize)? = number(v as i64, s.number);
    }
    Some(())
}

/// Decodes signed zoned numbers into their cells; `None` at the first bad one. Every sign
/// convention goes through the same arithmetic, so the loop has no branch on it.
#[inline(always)]
pub(super) fn signed<D: Digits>(
    steps: &[SignedZoned<D>],
    signs: &[[u8; 256]; 2],
    record: &[u8],
    lanes: &Lanes,
    cells: &mut [Cell],
) -> Option<()> {
    for s in steps {
        let byte = *record.get(s.sign.at as usize)?;
        let p = signs[usize::from(s.sign.table & 1)][usize::from(byte)];
        if p == INVALID {
            return None;
        }
        let digits = s.digits.value(record, lanes)?;
        let mag = digits * s.sign.times + u64::from(p & 0x0F) * s.sign.weight;
        *cells.get_mut(s.cell as usize)? = number(negate(mag, p >> 4), s.number);
    }
    Some(())
}

/// How a number's cell is written: an integer, or a decimal of this scale.
#[derive(Debug, Clone, Copy)]
pub(super) struct Number {
    pub scale: u8,
    pub int: bool,
}

/// A packed decimal of up to 9 bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct PackedStep {
    /// The field's last eight bytes (fewer at the top of the word, zeros below): up to 15
    /// digits and the sign.
    tail: Chunk,
    /// The first byte of a 9-byte field (two more digits), or `u32::MAX`.
    head: u32,
    signed: bool,
    limit: u64,
}

impl PackedStep {
    pub(super) fn new(off: usize, end: usize, signed: bool, limit: u64) -> Self {
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
    pub(super) fn decode(&self, record: &[u8]) -> Option<(u8, u64)> {
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
pub(super) struct BinaryStep {
    pub at: u32,
    pub down: u8,
    pub width_shift: u8,
    pub signed: bool,
}

impl BinaryStep {
    /// The value, or `None` for an unsigned 64-bit value above `i64::MAX` (the general code
    /// makes a 128-bit decimal of it or names the overflow).
    #[inline(always)]
    pub(super) fn decode(&self, record: &[u8]) -> Option<i64> {
        let at = self.at as usize;
        let bytes: [u8; 8] = record.get(at..at + 8)?.try_into().ok()?;
        let u = (u64::from_be_bytes(bytes) >> self.down) << self.width_shift;
        if self.signed {
            Some((u as i64) >> self.width_shift)
        } else {
            i64::try_from(u >> self.width_shift).ok()
        }
    }
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
pub(super) fn negate(mag: u64, neg: u8) -> i64 {
    let m = -i64::from(neg & 1);
    ((mag as i64) ^ m) - m
}

#[inline(always)]
pub(super) fn number(v: i64, n: Number) -> Cell {
    if n.int {
        Cell::Int(v)
    } else {
        Cell::Decimal(v, n.scale)
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
    fn sixteen_byte_loads_read_digits_wherever_they_lie() {
        let record = b"1234567890123456789x0987654321098765y";
        for zone in [0x30u8, 0xF0] {
            let record: Vec<u8> = record
                .iter()
                .map(|&b| {
                    if b.is_ascii_digit() {
                        zone | (b - b'0')
                    } else {
                        b
                    }
                })
                .collect();
            let lanes = Lanes::new(zone, 0x20);
            for start in 0..record.len() {
                for end in start + 1..=(start + 16).min(record.len()) {
                    let digits = &record[start..end];
                    let want = digits.iter().try_fold(0u64, |v, &b| {
                        (b >> 4 == zone >> 4 && b & 0x0F <= 9).then(|| v * 10 + u64::from(b & 0x0F))
                    });
                    let got = Digits16::new(start, end).value(&record, &lanes);
                    assert_eq!(got, want, "{zone:X} {start}..{end}");
                }
            }
        }
    }
}
