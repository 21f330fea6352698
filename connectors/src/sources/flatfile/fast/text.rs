//! The text of the compiled decode: fields trimmed with 16-byte compares, borrowed from the
//! record or transcoded from a single-byte code page into the scratch buffer.

use super::super::lanes::Lanes;
use super::super::numeric::trim_end;

/// One 16-byte load of a text field.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    /// Record offset of the load.
    at: u32,
    /// The bytes of the load that are the field's.
    keep: u16,
    /// Where load byte 0 goes in the field's mask.
    up: u8,
}

/// A text field of up to 64 bytes covered by `N` 16-byte loads.
#[derive(Debug, Clone, Copy)]
pub(super) struct TextStep<const N: usize> {
    cell: u32,
    off: u32,
    len: u32,
    /// How far the first load starts before the field (fields shorter than 16 bytes).
    origin: u8,
    loads: [Load; N],
}

impl<const N: usize> TextStep<N> {
    /// `len` bytes at `off`, `len` in `16 * (N - 1) + 1 ..= 16 * N`.
    fn new(cell: u32, off: usize, len: usize) -> Self {
        let end = off + len;
        // The first load at the field's start (or ending at its end, or at the record's start,
        // for a field shorter than 16 bytes), the others ending 16 bytes apart at its end: the
        // first two may overlap, and overlapping bits agree.
        let first = if len >= 16 {
            off
        } else {
            end.saturating_sub(16)
        };
        let loads = std::array::from_fn(|n| {
            let at = if n == 0 { first } else { end - 16 * (N - n) };
            Load {
                at: at as u32,
                keep: (0..16)
                    .filter(|i| (off..end).contains(&(at + i)))
                    .fold(0, |m, i| m | 1 << i),
                up: (at - first) as u8,
            }
        });
        Self {
            cell,
            off: off as u32,
            len: len as u32,
            origin: (off - first) as u8,
            loads,
        }
    }

    /// The field's length without trailing spaces and NULs: a bit per kept byte, gathered
    /// over the loads, and the highest found with one bit scan.
    #[inline(always)]
    fn trimmed(&self, record: &[u8], lanes: &Lanes) -> Option<usize> {
        let mut kept = 0u64;
        for load in &self.loads {
            let at = load.at as usize;
            let bytes: &[u8; 16] = record.get(at..at + 16)?.try_into().ok()?;
            let k = !lanes.trimmable(bytes) & load.keep;
            kept |= u64::from(k) << load.up;
        }
        // No kept byte: 0 - origin saturates to 0.
        Some((64 - kept.leading_zeros() as usize).saturating_sub(usize::from(self.origin)))
    }
}

/// A text field longer than 64 bytes, trimmed a byte at a time.
#[derive(Debug, Clone, Copy)]
struct LongText {
    cell: u32,
    off: u32,
    len: u32,
}

/// The text fields of a layout, grouped by how many loads cover them so that each group's
/// loop is unrolled and has no branch on the count.
#[derive(Debug, Clone, Default)]
pub(super) struct TextSteps {
    one: Vec<TextStep<1>>,
    two: Vec<TextStep<2>>,
    three: Vec<TextStep<3>>,
    four: Vec<TextStep<4>>,
    long: Vec<LongText>,
}

impl TextSteps {
    pub(super) fn push(&mut self, cell: u32, off: usize, len: usize) {
        match len.div_ceil(16) {
            0 | 1 => self.one.push(TextStep::new(cell, off, len)),
            2 => self.two.push(TextStep::new(cell, off, len)),
            3 => self.three.push(TextStep::new(cell, off, len)),
            4 => self.four.push(TextStep::new(cell, off, len)),
            _ => self.long.push(LongText {
                cell,
                off: off as u32,
                len: len as u32,
            }),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.one.is_empty()
            && self.two.is_empty()
            && self.three.is_empty()
            && self.four.is_empty()
            && self.long.is_empty()
    }

    /// Hands every field with its trimmed length to `sink`; `None` if a field does not fit
    /// the record or the sink gives up.
    #[inline(always)]
    pub(super) fn each<S: TextSink>(
        &self,
        record: &[u8],
        lanes: &Lanes,
        sink: &mut S,
    ) -> Option<()> {
        macro_rules! group {
            ($steps:expr) => {
                for s in $steps {
                    let e = s.trimmed(record, lanes)?;
                    sink.put(s.cell, s.off as usize, s.len as usize, e)?;
                }
            };
        }
        group!(&self.one);
        group!(&self.two);
        group!(&self.three);
        group!(&self.four);
        for s in &self.long {
            let (off, len) = (s.off as usize, s.len as usize);
            let e = trim_end(record.get(off..off + len)?, lanes.space());
            sink.put(s.cell, off, len, e)?;
        }
        Some(())
    }
}

/// What becomes of a trimmed text field (a trait rather than a closure so that it is inlined
/// into every group's loop).
pub(super) trait TextSink {
    /// The field of `len` bytes at `off` of cell `cell`, `trimmed` bytes once trimmed.
    fn put(&mut self, cell: u32, off: usize, len: usize, trimmed: usize) -> Option<()>;
}

/// Writes the UTF-8 text of the `len` single-byte characters at `off` of `record` into `dst`
/// from `at`; returns the end, or `None` if `dst` is too short. One byte a character while
/// they are ASCII (the common case: a store per byte, one check per field); a field with any
/// other character is written again two bytes for those. (Mapping 8 bytes a block into one
/// store took more instructions for this layout's short trimmed texts, and was not faster.)
#[inline(always)]
pub(super) fn transcode(
    table: &[u8; 256],
    record: &[u8],
    off: usize,
    len: usize,
    dst: &mut [u8],
    at: usize,
) -> Option<usize> {
    let src = record.get(off..off + len)?;
    let out = dst.get_mut(at..at + len)?;
    let mut high = 0u8;
    for (o, &b) in out.iter_mut().zip(src) {
        let c = table[usize::from(b)];
        *o = c;
        high |= c;
    }
    if high < 0x80 {
        return Some(at + len);
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
pub(super) fn is_ascii(bytes: &[u8]) -> bool {
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
                    let mut steps = TextSteps::default();
                    steps.push(0, off, len);
                    let want = trim_end(&record[off..off + len], space);
                    let lanes = Lanes::new(0x30, space);
                    struct Got(Option<usize>);
                    impl TextSink for Got {
                        fn put(&mut self, _: u32, _: usize, _: usize, e: usize) -> Option<()> {
                            self.0 = Some(e);
                            Some(())
                        }
                    }
                    let mut got = Got(None);
                    steps.each(&record, &lanes, &mut got);
                    assert_eq!(got.0, Some(want), "{space} {off} {len}");
                }
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
            let end = transcode(&identity, &src, from, to - from, &mut dst, 2).unwrap();
            let want: String = "ABCDEFGHéIJKLMNOPQRS"
                .chars()
                .skip(from)
                .take(to - from)
                .collect();
            assert_eq!(std::str::from_utf8(&dst[2..end]).unwrap(), want);
        }
        assert_eq!(
            transcode(&identity, &src, 0, src.len(), &mut dst[..10], 0),
            None
        );
    }
}
