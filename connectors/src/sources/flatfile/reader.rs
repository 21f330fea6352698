//! Record framing: cuts a byte stream into records without copying them.

use serde::{Deserialize, Serialize};
use std::io::{self, Read};

/// How records follow one another in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    /// Records of exactly the layout's length, back to back (RECFM=F/FB).
    #[default]
    Fixed,
    /// Each record ends with `\n` or `\r\n` (line sequential); the terminator is not part of
    /// the record. A last line without a terminator is a record too.
    Lines,
    /// Each record starts with a 4-byte record descriptor word (RECFM=V/VB): a big-endian
    /// 2-byte length that counts the 4 RDW bytes, then two zero bytes.
    Rdw,
}

/// One record, borrowed from the reader's buffer until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Byte offset in the file of the record's first byte (its RDW for `Rdw`).
    pub offset: u64,
    /// 1-based record number in the file.
    pub number: u64,
    /// The record's bytes (without RDW or line terminator).
    pub data: &'a [u8],
}

/// Records that lie one after another in the reader's buffer, borrowed until the next call:
/// many `Fixed` records, or one record of the other formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block<'a> {
    /// Byte offset in the file of the first record.
    pub offset: u64,
    /// 1-based record number of the first record.
    pub number: u64,
    /// The records' bytes: `records` records of `record_length` bytes each.
    pub data: &'a [u8],
    pub record_length: usize,
    pub records: u64,
    /// The bytes each record takes in the file (with its RDW or line terminator).
    pub framed_length: u64,
}

impl Block<'_> {
    /// The file offset and record number of the `i`-th record of the block.
    pub fn position_of(&self, i: usize) -> (u64, u64) {
        (
            self.offset + i as u64 * self.framed_length,
            self.number + i as u64,
        )
    }
}

/// Why framing failed. After an error the reader is finished: framing is lost.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("short final record {number} at byte {offset}: {actual} of {expected} bytes")]
    ShortRecord {
        offset: u64,
        number: u64,
        expected: usize,
        actual: usize,
    },
    #[error("bad record descriptor word at byte {offset} (record {number}): {reason}")]
    BadRdw {
        offset: u64,
        number: u64,
        reason: String,
    },
    #[error("record {number} at byte {offset} is longer than {limit} bytes without a line end")]
    LineTooLong {
        offset: u64,
        number: u64,
        limit: usize,
    },
    #[error("reading at byte {offset}: {source}")]
    Io { offset: u64, source: io::Error },
}

impl ReadError {
    /// File offset of the record the error is about.
    pub fn offset(&self) -> u64 {
        match self {
            ReadError::ShortRecord { offset, .. }
            | ReadError::BadRdw { offset, .. }
            | ReadError::LineTooLong { offset, .. }
            | ReadError::Io { offset, .. } => *offset,
        }
    }
}

/// Default read buffer: large reads, few syscalls.
pub const DEFAULT_BUFFER: usize = 1 << 20;
/// The longest line `Lines` accepts.
pub const MAX_LINE: usize = 16 << 20;

/// Reads records from any `Read`, through one reusable buffer: no allocation per record.
pub struct RecordReader<R> {
    inner: R,
    format: RecordFormat,
    record_length: usize,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    done: bool,
    offset: u64,
    number: u64,
}

impl<R: Read> RecordReader<R> {
    /// A reader at the start of a file. `record_length` is the layout's record length (used
    /// by `Fixed`; ignored otherwise).
    pub fn new(inner: R, format: RecordFormat, record_length: usize) -> Self {
        Self::resume(inner, format, record_length, 0, 1)
    }

    /// A reader whose `inner` is already positioned at byte `offset` of the file, at the
    /// record numbered `number` (what `position()` returned when the work stopped).
    pub fn resume(
        inner: R,
        format: RecordFormat,
        record_length: usize,
        offset: u64,
        number: u64,
    ) -> Self {
        Self::with_buffer(inner, format, record_length, offset, number, DEFAULT_BUFFER)
    }

    /// Like `resume` with a chosen buffer size (grown to hold at least a few records).
    pub fn with_buffer(
        inner: R,
        format: RecordFormat,
        record_length: usize,
        offset: u64,
        number: u64,
        buffer: usize,
    ) -> Self {
        let min = match format {
            RecordFormat::Fixed => record_length.max(1) * 2,
            RecordFormat::Rdw => 65_536,
            RecordFormat::Lines => 4096,
        };
        Self {
            inner,
            format,
            record_length,
            buf: vec![0; buffer.max(min)],
            start: 0,
            end: 0,
            eof: false,
            done: false,
            offset,
            number,
        }
    }

    /// The (file offset, record number) of the next record: where to resume.
    pub fn position(&self) -> (u64, u64) {
        (self.offset, self.number)
    }

    pub fn format(&self) -> RecordFormat {
        self.format
    }

    /// Makes at least `need` bytes available from `start`, unless the input ends first.
    /// Returns the bytes available.
    fn fill(&mut self, need: usize) -> Result<usize, ReadError> {
        while self.end - self.start < need && !self.eof {
            if self.buf.len() - self.start < need {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buf.len() < need {
                    self.buf.resize(need.next_power_of_two(), 0);
                }
            } else if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    self.done = true;
                    return Err(ReadError::Io {
                        offset: self.offset + (self.end - self.start) as u64,
                        source,
                    });
                }
            }
        }
        Ok(self.end - self.start)
    }

    /// The next records: every whole `Fixed` record the buffer holds (at least one; a short
    /// last record is the error `next_record` gives), or the next record of the other
    /// formats. `None` at the end of the input.
    pub fn next_block(&mut self) -> Result<Option<Block<'_>>, ReadError> {
        let n = self.record_length;
        let whole = self.end - self.start;
        if self.format != RecordFormat::Fixed || n == 0 || self.done || whole < n {
            let Some((record, consumed)) = self.framed()? else {
                return Ok(None);
            };
            return Ok(Some(Block {
                offset: record.offset,
                number: record.number,
                data: record.data,
                record_length: record.data.len(),
                records: 1,
                framed_length: consumed as u64,
            }));
        }
        let records = whole / n;
        let bytes = records * n;
        let block = Block {
            offset: self.offset,
            number: self.number,
            data: &self.buf[self.start..self.start + bytes],
            record_length: n,
            records: records as u64,
            framed_length: n as u64,
        };
        self.start += bytes;
        self.offset += bytes as u64;
        self.number += records as u64;
        Ok(Some(block))
    }

    /// The next record, `None` at the end of the input.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, ReadError> {
        Ok(self.framed()?.map(|(record, _)| record))
    }

    /// The next record and the bytes it took in the file, `None` at the end.
    fn framed(&mut self) -> Result<Option<(Record<'_>, usize)>, ReadError> {
        let (offset, number) = (self.offset, self.number);
        let Some((skip, len, consumed)) = self.frame()? else {
            return Ok(None);
        };
        let at = self.start - consumed + skip;
        let data = &self.buf[at..at + len];
        Ok(Some((
            Record {
                offset,
                number,
                data,
            },
            consumed,
        )))
    }

    /// Frames the next record and moves past it: (bytes before its data, its length, the
    /// bytes it took), counted from where it started in the buffer; `None` at the end.
    fn frame(&mut self) -> Result<Option<(usize, usize, usize)>, ReadError> {
        if self.done {
            return Ok(None);
        }
        let (skip, len, consumed) = match self.format {
            RecordFormat::Fixed => {
                let n = self.record_length;
                // Most records lie whole in the buffer: no call into `fill`.
                let have = if self.end - self.start >= n && n > 0 {
                    n
                } else {
                    self.fill(n)?
                };
                if have == 0 {
                    self.done = true;
                    return Ok(None);
                }
                if have < n {
                    self.done = true;
                    return Err(ReadError::ShortRecord {
                        offset: self.offset,
                        number: self.number,
                        expected: n,
                        actual: have,
                    });
                }
                (0, n, n)
            }
            RecordFormat::Rdw => {
                let have = self.fill(4)?;
                if have == 0 {
                    self.done = true;
                    return Ok(None);
                }
                if have < 4 {
                    self.done = true;
                    return Err(ReadError::ShortRecord {
                        offset: self.offset,
                        number: self.number,
                        expected: 4,
                        actual: have,
                    });
                }
                let h = &self.buf[self.start..self.start + 4];
                let total = usize::from(u16::from_be_bytes([h[0], h[1]]));
                if h[2] != 0 || h[3] != 0 {
                    self.done = true;
                    return Err(ReadError::BadRdw {
                        offset: self.offset,
                        number: self.number,
                        reason: format!(
                            "bytes 3-4 are {:02X}{:02X}, not 0000 (spanned records are not supported)",
                            h[2], h[3]
                        ),
                    });
                }
                if total < 4 {
                    self.done = true;
                    return Err(ReadError::BadRdw {
                        offset: self.offset,
                        number: self.number,
                        reason: format!("length {total} is less than the 4 RDW bytes"),
                    });
                }
                let have = self.fill(total)?;
                if have < total {
                    self.done = true;
                    return Err(ReadError::ShortRecord {
                        offset: self.offset,
                        number: self.number,
                        expected: total - 4,
                        actual: have - 4,
                    });
                }
                (4, total - 4, total)
            }
            RecordFormat::Lines => {
                let mut scanned = 0;
                loop {
                    let window = &self.buf[self.start + scanned..self.end];
                    if let Some(p) = memchr::memchr(b'\n', window) {
                        let nl = scanned + p;
                        let len = if nl > 0 && self.buf[self.start + nl - 1] == b'\r' {
                            nl - 1
                        } else {
                            nl
                        };
                        break (0, len, nl + 1);
                    }
                    scanned = self.end - self.start;
                    if self.eof {
                        if scanned == 0 {
                            self.done = true;
                            return Ok(None);
                        }
                        let len = if self.buf[self.end - 1] == b'\r' {
                            scanned - 1
                        } else {
                            scanned
                        };
                        break (0, len, scanned);
                    }
                    if scanned >= MAX_LINE {
                        self.done = true;
                        return Err(ReadError::LineTooLong {
                            offset: self.offset,
                            number: self.number,
                            limit: MAX_LINE,
                        });
                    }
                    let want = (scanned + 1).max(self.buf.len().min(MAX_LINE));
                    self.fill(want)?;
                }
            }
        };
        self.start += consumed;
        self.offset += consumed as u64;
        self.number += 1;
        Ok(Some((skip, len, consumed)))
    }
}
