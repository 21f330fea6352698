//! The compiled decode: a layout without OCCURS DEPENDING ON or a record-type selector becomes,
//! once, a flat list of [`Step`]s, one per output cell (fixed OCCURS unrolled), each with its
//! offsets, masks and multipliers worked out ahead, grouped into a [`Program`] by kind. A
//! record is then decoded by one tight loop per kind writing cells in place: no per-field
//! dispatch, no allocation, numbers read with whole-word or 16-byte loads, text trimmed with
//! 16-byte compares ([`super::lanes`]).
//!
//! A step that meets anything unusual (a bad byte, a short record, invalid UTF-8) gives up and
//! the caller decodes the record again with the general code, which names the error exactly
//! as before; so the fast path only ever has to be right about records it accepts.

mod numbers;
mod text;

use super::lanes::Lanes;
use super::row::Cell;
use numbers::{
    BinaryStep, Chunk, Digits16, Number, OVERPUNCH, POW10, PackedStep, SEPARATE, SignByte,
    SignedZoned, Span, Zoned, negate, number,
};
use text::{TextSink, TextSteps};

pub(crate) use numbers::eight_digits;
pub(crate) use text::ascii_or_utf8;

pub(crate) const INVALID: u8 = 0xFF;
pub(crate) const NEG: u8 = 0x10;

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
        /// The digits' bytes (without a sign byte).
        start: u32,
        end: u32,
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
            let (start, end, sign) = match (shape.signed, sign) {
                (false, _) => (off, end, Sign::None),
                (true, P::Trailing) => (
                    off,
                    end - 1,
                    Sign::Trailing {
                        at: (end - 1) as u32,
                    },
                ),
                (true, P::Leading) => (
                    off + 1,
                    end,
                    Sign::Leading {
                        at: off as u32,
                        weight: *POW10.get(n - 1)?,
                    },
                ),
                (true, P::TrailingSeparate) => (
                    off,
                    end - 1,
                    Sign::Separate {
                        at: (end - 1) as u32,
                    },
                ),
                (true, P::LeadingSeparate) => (off + 1, end, Sign::Separate { at: off as u32 }),
            };
            Step::Zoned {
                start: start as u32,
                end: end as u32,
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
                // A field of up to 64 bytes is read in 16-byte loads.
                let loads = if len <= 64 { 16 } else { 0 };
                (off as usize + len as usize).max(loads)
            }
            Step::Zoned {
                start, end, sign, ..
            } => {
                let at = match sign {
                    Sign::None => 0,
                    Sign::Trailing { at } | Sign::Leading { at, .. } | Sign::Separate { at } => {
                        at as usize + 1
                    }
                };
                // 9 to 16 digits are read with a 16-byte load.
                let (start, end) = (start as usize, end as usize);
                let loads = if (9..=16).contains(&(end - start)) {
                    16
                } else {
                    0
                };
                at.max(end).max(loads)
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

/// What the steps read besides the record: the zone of digits, the overpunch table, the
/// separate sign bytes.
pub(crate) struct Tables<'a> {
    /// The zone of digit bytes: 0x30 (ASCII) or 0xF0 (EBCDIC).
    pub zone: u8,
    /// byte -> digit | NEG for an overpunched sign byte, or INVALID.
    pub punch: &'a [u8; 256],
    pub plus: u8,
    pub minus: u8,
}

/// Zoned numbers by how their digits are read, unsigned and signed apart: each group is one
/// loop whose branches go the same way number after number.
#[derive(Debug, Clone, Default)]
struct ZonedSteps {
    short: Vec<Zoned<Chunk>>,
    middle: Vec<Zoned<Digits16>>,
    long: Vec<Zoned<Span>>,
    short_signed: Vec<SignedZoned<Chunk>>,
    middle_signed: Vec<SignedZoned<Digits16>>,
    long_signed: Vec<SignedZoned<Span>>,
}

impl ZonedSteps {
    fn push(&mut self, cell: u32, start: usize, end: usize, sign: Option<SignByte>, n: Number) {
        fn add<D: Copy>(
            unsigned: &mut Vec<Zoned<D>>,
            signed: &mut Vec<SignedZoned<D>>,
            (cell, digits, sign, number): (u32, D, Option<SignByte>, Number),
        ) {
            match sign {
                None => unsigned.push(Zoned {
                    cell,
                    digits,
                    number,
                }),
                Some(sign) => signed.push(SignedZoned {
                    cell,
                    digits,
                    sign,
                    number,
                }),
            }
        }
        // A lone sign digit (`S9`) has no digits apart: an empty Span reads 0.
        match end - start {
            1..=8 => add(
                &mut self.short,
                &mut self.short_signed,
                (cell, Chunk::new(start, end), sign, n),
            ),
            9..=16 => add(
                &mut self.middle,
                &mut self.middle_signed,
                (cell, Digits16::new(start, end), sign, n),
            ),
            _ => add(
                &mut self.long,
                &mut self.long_signed,
                (cell, Span::new(start, end), sign, n),
            ),
        }
    }

    #[inline(always)]
    fn run(
        &self,
        signs: &[[u8; 256]; 2],
        record: &[u8],
        lanes: &Lanes,
        cells: &mut [Cell],
    ) -> Option<()> {
        numbers::unsigned(&self.short, record, lanes, cells)?;
        numbers::unsigned(&self.middle, record, lanes, cells)?;
        numbers::unsigned(&self.long, record, lanes, cells)?;
        numbers::signed(&self.short_signed, signs, record, lanes, cells)?;
        numbers::signed(&self.middle_signed, signs, record, lanes, cells)?;
        numbers::signed(&self.long_signed, signs, record, lanes, cells)
    }
}

/// The compiled steps grouped by kind, each with the index of the cell it writes: one tight
/// loop per kind, so the branches inside a loop go the same way field after field (a single
/// loop over mixed steps mispredicts its dispatch several times a record).
#[derive(Debug, Clone)]
pub(crate) struct Program {
    cells: usize,
    /// The record length below which a step would read out of bounds.
    pub need: usize,
    /// Scratch bytes the steps may write.
    pub scratch: usize,
    zone: u8,
    space: u8,
    /// [OVERPUNCH, SEPARATE]: sign byte -> digit | NEG, or INVALID.
    signs: Box<[[u8; 256]; 2]>,
    arrays: Vec<(u32, Cell)>,
    zoned: ZonedSteps,
    packed: Vec<(u32, PackedStep, Number)>,
    binary: Vec<(u32, BinaryStep, Number)>,
    text: TextSteps,
    /// The code page of the text fields (one per decoder), `None` for ASCII/UTF-8.
    table: Option<&'static [u8; 256]>,
    general: Vec<(u32, u32, u32)>,
    /// Whether this CPU runs [`Program::run_modern`].
    modern: bool,
}

/// Whether the CPU has every feature [`Program::run_modern`] is compiled for.
fn modern_cpu() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("bmi1")
            && std::is_x86_feature_detected!("bmi2")
            && std::is_x86_feature_detected!("lzcnt")
            && std::is_x86_feature_detected!("popcnt")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Program {
    /// `None` when the steps mix text encodings (one decoder has one).
    pub(crate) fn new(steps: &[Step], tables: &Tables<'_>) -> Option<Self> {
        let (need, scratch) = bounds(steps);
        let mut separate = [INVALID; 256];
        separate[usize::from(tables.plus)] = 0;
        separate[usize::from(tables.minus)] = NEG;
        let mut p = Program {
            cells: steps.len(),
            need,
            scratch,
            zone: tables.zone,
            space: b' ',
            signs: Box::new([*tables.punch, separate]),
            arrays: Vec::new(),
            zoned: ZonedSteps::default(),
            packed: Vec::new(),
            binary: Vec::new(),
            text: TextSteps::default(),
            table: None,
            general: Vec::new(),
            modern: modern_cpu(),
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
                    let table = match how {
                        Text::Borrowed => None,
                        Text::Table(t) => Some(t),
                    };
                    if p.text.is_empty() {
                        (p.space, p.table) = (space, table);
                    } else if (p.space, p.table) != (space, table) {
                        return None;
                    }
                    p.text.push(i, off as usize, len as usize);
                }
                Step::Zoned {
                    start,
                    end,
                    sign,
                    scale,
                    int,
                } => {
                    let sign = match sign {
                        Sign::None => None,
                        Sign::Trailing { at } => Some(SignByte {
                            at,
                            table: OVERPUNCH,
                            times: 10,
                            weight: 1,
                        }),
                        Sign::Leading { at, weight } => Some(SignByte {
                            at,
                            table: OVERPUNCH,
                            times: 1,
                            weight,
                        }),
                        Sign::Separate { at } => Some(SignByte {
                            at,
                            table: SEPARATE,
                            times: 1,
                            weight: 0,
                        }),
                    };
                    p.zoned
                        .push(i, start as usize, end as usize, sign, Number { scale, int });
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
        Some(p)
    }

    /// The number of cells a record fills.
    pub(crate) fn cells(&self) -> usize {
        self.cells
    }

    /// Decodes `record` into `cells` (exactly `cells()` of them) and `scratch` (transcoded
    /// text, from 0). Returns the scratch bytes used, which are UTF-8 ([`written`] reads
    /// them), or `None` to hand the record to the general code. `text` is the record as UTF-8 when it is valid as a whole, `ascii` whether
    /// it is all ASCII; `general` decodes the element of a field at an offset (numbers the
    /// steps do not cover).
    #[inline]
    pub(crate) fn run(
        &self,
        record: &[u8],
        text: Option<&str>,
        ascii: bool,
        cells: &mut [Cell],
        scratch: &mut [u8],
        general: impl FnMut(usize, usize) -> Option<Cell>,
    ) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if self.modern {
            // SAFETY: `modern` is set only when the CPU reported every feature `run_modern`
            // is compiled for (`modern_cpu`, checked in `Program::new`).
            return unsafe { self.run_modern(record, text, ascii, cells, scratch, general) };
        }
        self.run_inlined(record, text, ascii, cells, scratch, general)
    }

    /// [`Program::run`] compiled for x86-64 CPUs of the last decade (Haswell, Zen): `lzcnt`
    /// instead of `bsr` for the trims (on Zen 3 `bsr` made the ASCII decode a third slower),
    /// BMI shifts, VEX encodings.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,bmi1,bmi2,lzcnt,popcnt")]
    fn run_modern(
        &self,
        record: &[u8],
        text: Option<&str>,
        ascii: bool,
        cells: &mut [Cell],
        scratch: &mut [u8],
        general: impl FnMut(usize, usize) -> Option<Cell>,
    ) -> Option<usize> {
        self.run_inlined(record, text, ascii, cells, scratch, general)
    }

    /// Whether this CPU runs the modern build ([`Program::run_modern`]): a caller compiled
    /// for it may call [`Program::run_inlined`].
    pub(crate) fn modern(&self) -> bool {
        self.modern
    }

    /// For tests: run the baseline x86-64 code even on a CPU with the newer features.
    #[cfg(test)]
    pub(crate) fn baseline_only(&mut self) {
        self.modern = false;
    }

    /// [`Program::run`] inlined into the caller, whatever build the caller is.
    #[inline(always)]
    pub(crate) fn run_inlined(
        &self,
        record: &[u8],
        text: Option<&str>,
        ascii: bool,
        cells: &mut [Cell],
        scratch: &mut [u8],
        mut general: impl FnMut(usize, usize) -> Option<Cell>,
    ) -> Option<usize> {
        let lanes = Lanes::new(self.zone, self.space);
        for &(i, cell) in &self.arrays {
            *cells.get_mut(i as usize)? = cell;
        }
        self.zoned.run(&self.signs, record, &lanes, cells)?;
        for &(i, ref p, n) in &self.packed {
            let (sign, mag) = p.decode(record)?;
            *cells.get_mut(i as usize)? = number(negate(mag, sign), n);
        }
        for &(i, b, n) in &self.binary {
            *cells.get_mut(i as usize)? = number(b.decode(record)?, n);
        }
        let mut used = 0usize;
        if !self.text.is_empty() {
            match (self.table, text) {
                (None, Some(whole)) => {
                    let mut sink = Borrowed {
                        whole,
                        ascii,
                        cells: &mut *cells,
                    };
                    self.text.each(record, &lanes, &mut sink)?;
                }
                (Some(table), _) => {
                    used =
                        self.scratch_text(record, &lanes, cells, scratch, |off, e, dst, at| {
                            text::transcode(table, record, off, e, dst, at)
                        })?;
                }
                (None, None) => {
                    used =
                        self.scratch_text(record, &lanes, cells, scratch, |off, e, dst, at| {
                            let s = std::str::from_utf8(record.get(off..off + e)?).ok()?;
                            dst.get_mut(at..at + e)?.copy_from_slice(s.as_bytes());
                            Some(at + e)
                        })?;
                }
            }
        }
        for &(i, plan, off) in &self.general {
            *cells.get_mut(i as usize)? = general(plan as usize, off as usize)?;
        }
        Some(used)
    }

    /// Every text field written into `scratch` by `fill` (see [`Scratch`]); the bytes used.
    #[inline(always)]
    fn scratch_text<F>(
        &self,
        record: &[u8],
        lanes: &Lanes,
        cells: &mut [Cell],
        scratch: &mut [u8],
        fill: F,
    ) -> Option<usize>
    where
        F: FnMut(usize, usize, &mut [u8], usize) -> Option<usize>,
    {
        let mut sink = Scratch {
            fill,
            cells,
            scratch,
            used: 0,
        };
        self.text.each(record, lanes, &mut sink)?;
        Some(sink.used)
    }
}

/// `scratch[..used]` as text, without checking it again.
///
/// # Safety
///
/// `used` is what [`Program::run`] returned for this `scratch`, and nothing has written to
/// it since. A run writes whole UTF-8 sequences one after another from byte 0 (ASCII bytes,
/// the two bytes of a code point below U+0100, copies of checked `str`s: see [`Scratch`] and
/// [`text::transcode`]), so its first `used` bytes are UTF-8.
pub(crate) unsafe fn written(scratch: &[u8], used: usize) -> &str {
    let bytes = scratch.get(..used).unwrap_or_default();
    debug_assert!(std::str::from_utf8(bytes).is_ok(), "the run wrote UTF-8");
    // SAFETY: the caller's promise above.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// Text borrowed from a record that is UTF-8 as a whole.
struct Borrowed<'a, 'c> {
    whole: &'a str,
    ascii: bool,
    cells: &'c mut [Cell],
}

impl TextSink for Borrowed<'_, '_> {
    #[inline(always)]
    fn put(&mut self, cell: u32, off: usize, len: usize, e: usize) -> Option<()> {
        // The text ends at a character boundary: at a trimmed space, or where the field ends.
        // Checking the field's ends keeps the loads off `e`. Every byte of an ASCII record is
        // one.
        let at_boundaries = self.ascii
            || (self.whole.is_char_boundary(off) && self.whole.is_char_boundary(off + len));
        if !at_boundaries {
            return None;
        }
        *self.cells.get_mut(cell as usize)? = Cell::Record(off as u32, (off + e) as u32);
        Some(())
    }
}

/// Text written into the scratch buffer by `fill` (the `e` bytes at a record offset, written
/// from a scratch offset; returns the end): transcoded from a single-byte code page, or (a
/// record with binary fields elsewhere) checked as UTF-8 and copied. One instance each, so
/// that the transcoding loop carries no branch on the other.
struct Scratch<'c, F> {
    fill: F,
    cells: &'c mut [Cell],
    scratch: &'c mut [u8],
    used: usize,
}

impl<F> TextSink for Scratch<'_, F>
where
    F: FnMut(usize, usize, &mut [u8], usize) -> Option<usize>,
{
    #[inline(always)]
    fn put(&mut self, cell: u32, off: usize, _: usize, e: usize) -> Option<()> {
        let start = self.used;
        self.used = (self.fill)(off, e, self.scratch, start)?;
        *self.cells.get_mut(cell as usize)? = Cell::Scratch(start as u32, self.used as u32);
        Some(())
    }
}
