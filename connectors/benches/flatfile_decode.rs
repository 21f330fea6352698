//! Flat-file decode throughput, against a straightforward Python decoder of the same layout.
//!
//! ```text
//! cargo bench -p syncmesh-connectors --bench flatfile_decode
//! SYNCMESH_BENCH_BYTES=100000000 cargo bench -p syncmesh-connectors --bench flatfile_decode   # quick
//! ```
//!
//! For each of two layouts (ASCII text and zoned decimals; EBCDIC cp037 with COMP-3) it writes
//! a file of `SYNCMESH_BENCH_BYTES` bytes (default 1 GiB) of generated records into a temporary
//! directory, then, one core each pass, reads it back through `RecordReader`:
//!
//! * `frame`: framing alone (the I/O floor), a block of whole records at a time
//!   (`RecordReader::next_block`);
//! * `decode`: framing and `RecordDecoder::decode_block`, the decode `syncmesh flatfile
//!   decode` and the pipeline source use (each row is complete when it is handed on: numbers
//!   computed, text trimmed, validated and transcoded; it goes to `black_box`, no value is
//!   read back);
//! * `row`: the same a record at a time (`next_record` and `decode_row`), for comparison;
//! * `sum`: `decode` and reading every value into a checksum, as the Python baseline does;
//! * `owned`: decoding into owned `Value`s, as pipeline events hold them;
//! * `json`: decoding and writing JSON lines to a discarded buffer (`syncmesh flatfile decode`);
//! * `python`: `flatfile_decode.py` (`struct` + `codecs`) on the same file, in the same run
//!   (`SYNCMESH_BENCH_PY_BYTES` limits it to a prefix of the file).
//!
//! The frame and decode passes run `SYNCMESH_BENCH_REPEAT` times (default 3) and print the
//! median run with the range of all: the machines this runs on are shared, and one run can be
//! far slower than the next. Each pass prints MB/s and records/s per core (over the thread's
//! on-CPU time, from /proc/thread-self/schedstat; Python reports its process time), wall-clock
//! MB/s, and the peak RSS of the pass (VmHWM, reset between passes through
//! /proc/self/clear_refs). The `sum` pass and Python compute the same checksum (the sum of all
//! numbers, the count of text characters), which must agree.
//! `SYNCMESH_BENCH_LAYOUT=ascii|ebcdic` runs one layout, `SYNCMESH_BENCH_DECODE_ONLY=1` only
//! the frame and decode passes (for profiling).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use syncmesh_connectors::sources::flatfile::{
    Block, DecodeOptions, Encoding, FieldKind, FieldRef, JsonWriter, Layout, RecordDecoder,
    RecordFormat, RecordReader, RowBuffer,
};

const ASCII_COPYBOOK: &str = "
       01  TXN-REC.
           05  ACCOUNT-ID       PIC 9(10).
           05  BRANCH           PIC X(4).
           05  CUSTOMER-NAME    PIC X(30).
           05  TXN-DATE         PIC 9(8).
           05  AMOUNT           PIC S9(11)V99.
           05  BALANCE          PIC S9(13)V99.
           05  CURRENCY         PIC X(3).
           05  DESCRIPTION      PIC X(20).
           05  STATUS           PIC X.
           05  SEQ-NO           PIC 9(6).
";

const EBCDIC_COPYBOOK: &str = "
       01  LEDGER-REC.
           05  ACCOUNT-ID       PIC 9(11) COMP-3.
           05  CUSTOMER         PIC X(30).
           05  BRANCH           PIC X(4).
           05  BALANCE          PIC S9(13)V99 COMP-3.
           05  AMOUNT           PIC S9(9)V99 COMP-3.
           05  TXN-DATE         PIC 9(8).
           05  RATE             PIC S9(3)V9(5) COMP-3.
           05  TXN-COUNT        PIC S9(4) COMP.
           05  MEMO             PIC X(20).
           05  FLAGS            PIC X(3).
";

/// xorshift64*: reproducible data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NAMES: &[&str] = &[
    "ANNA MUELLER",
    "JOSE GARCIA LOPEZ",
    "LI WEI",
    "MARGARET O'BRIEN-SMYTHE",
    "NGUYEN VAN AN",
    "OLUWASEUN ADEYEMI",
    "PRIYA RAMANATHAN IYER",
    "ZOE",
];
const WORDS: &[&str] = &[
    "RENT",
    "SALARY",
    "ATM WITHDRAWAL",
    "CARD 4411",
    "FEE",
    "",
    "TRANSFER TO SAVINGS",
];

/// Right-pads (or cuts) `s` to `len` bytes of `enc`.
fn text(s: &str, len: usize, enc: Encoding) -> Vec<u8> {
    let mut b = enc.encode(s).expect("generated text is encodable");
    b.resize(len, enc.space());
    b
}

fn zoned(v: i128, digits: usize, signed: bool, enc: Encoding) -> Vec<u8> {
    let s = format!("{:0digits$}", v.unsigned_abs());
    let mut b: Vec<u8> = s.bytes().map(|c| enc.digit(c - b'0')).collect();
    if signed {
        let last = b.len() - 1;
        let d = b[last] & 0x0F;
        b[last] = match (enc.is_ebcdic(), v < 0) {
            (true, false) => 0xC0 | d,
            (true, true) => 0xD0 | d,
            (false, false) => b"{ABCDEFGHI"[usize::from(d)],
            (false, true) => b"}JKLMNOPQR"[usize::from(d)],
        };
    }
    b
}

fn packed(v: i128, len: usize, signed: bool) -> Vec<u8> {
    let digits = format!("{:0w$}", v.unsigned_abs(), w = len * 2 - 1);
    let mut nibbles: Vec<u8> = digits.bytes().map(|c| c - b'0').collect();
    nibbles.push(match (signed, v < 0) {
        (false, _) => 0xF,
        (true, false) => 0xC,
        (true, true) => 0xD,
    });
    nibbles.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

fn signed_below(rng: &mut Rng, n: u64) -> i128 {
    let v = i128::from(rng.below(n));
    if rng.below(4) == 0 { -v } else { v }
}

fn ascii_record(rng: &mut Rng) -> Vec<u8> {
    let e = Encoding::Ascii;
    let mut r = Vec::with_capacity(110);
    r.extend(zoned(i128::from(rng.below(10_000_000_000)), 10, false, e));
    r.extend(text(&format!("B{:03}", rng.below(1000)), 4, e));
    r.extend(text(NAMES[rng.below(NAMES.len() as u64) as usize], 30, e));
    r.extend(zoned(
        i128::from(20_000_101 + rng.below(60_000)),
        8,
        false,
        e,
    ));
    r.extend(zoned(signed_below(rng, 10_000_000_000), 13, true, e));
    r.extend(zoned(signed_below(rng, 1_000_000_000_000_000), 15, true, e));
    r.extend(text(
        ["EUR", "USD", "GBP", "JPY"][rng.below(4) as usize],
        3,
        e,
    ));
    r.extend(text(WORDS[rng.below(WORDS.len() as u64) as usize], 20, e));
    r.extend(text(["A", "D", "F", "C"][rng.below(4) as usize], 1, e));
    r.extend(zoned(i128::from(rng.below(1_000_000)), 6, false, e));
    r
}

fn ebcdic_record(rng: &mut Rng) -> Vec<u8> {
    let e = Encoding::Cp037;
    let mut r = Vec::with_capacity(92);
    r.extend(packed(i128::from(rng.below(100_000_000_000)), 6, false));
    r.extend(text(NAMES[rng.below(NAMES.len() as u64) as usize], 30, e));
    r.extend(text(&format!("B{:03}", rng.below(1000)), 4, e));
    r.extend(packed(signed_below(rng, 1_000_000_000_000_000), 8, true));
    r.extend(packed(signed_below(rng, 100_000_000_000), 6, true));
    r.extend(zoned(
        i128::from(20_000_101 + rng.below(60_000)),
        8,
        false,
        e,
    ));
    r.extend(packed(signed_below(rng, 100_000_000), 5, true));
    r.extend((rng.below(20_000) as i16 - 10_000).to_be_bytes());
    r.extend(text(WORDS[rng.below(WORDS.len() as u64) as usize], 20, e));
    r.extend(text(["ÄBC", "X¢Y", "   "][rng.below(3) as usize], 3, e));
    r
}

/// Writes about `bytes` bytes of records, cycling through a pool of distinct records.
fn generate(path: &Path, bytes: u64, make: fn(&mut Rng) -> Vec<u8>) -> u64 {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let pool: Vec<Vec<u8>> = (0..65_536).map(|_| make(&mut rng)).collect();
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("create"));
    let mut written = 0u64;
    let mut i = 0usize;
    while written < bytes {
        let r = &pool[i % pool.len()];
        out.write_all(r).expect("write");
        written += r.len() as u64;
        i += 1;
    }
    out.flush().expect("flush");
    written
}

fn reset_peak_rss() {
    // "5" resets the peak resident set size (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
struct Checksum {
    numbers: u64,
    text_chars: u64,
}

impl Checksum {
    fn add(&mut self, v: FieldRef<'_>) {
        match v {
            FieldRef::Int(i) => self.numbers = self.numbers.wrapping_add(i as u64),
            FieldRef::Decimal(d) => self.numbers = self.numbers.wrapping_add(d.unscaled as u64),
            // Characters are the bytes that do not continue a UTF-8 sequence.
            FieldRef::Text(s) => {
                self.text_chars += s.bytes().filter(|b| b & 0xC0 != 0x80).count() as u64
            }
            FieldRef::Array(items) => items.for_each(|i| self.add(i)),
            FieldRef::Null => {}
        }
    }
}

/// On-CPU time of the calling thread, in seconds (the first field of its schedstat): what a
/// pass costs one core, whatever else the machine runs meanwhile.
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(f64::NAN, |ns| ns as f64 / 1e9)
}

struct Pass {
    name: &'static str,
    bytes: u64,
    records: u64,
    seconds: f64,
    cpu_seconds: f64,
    peak_mb: f64,
    /// For a repeated pass: (runs, lowest, highest) per-core MB/s; the pass is the median run.
    spread: Option<(usize, f64, f64)>,
}

impl Pass {
    /// MB per second of wall-clock time.
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
    /// MB per second of the core's time (per-core throughput).
    fn cpu_mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.cpu_seconds
    }
    fn print(&self, baseline: Option<&Pass>) {
        let ratio = baseline.map_or(String::new(), |b| {
            format!("  {:>6.1}x python", self.cpu_mb_s() / b.cpu_mb_s())
        });
        let spread = self.spread.map_or(String::new(), |(n, lo, hi)| {
            format!("  (median of {n}: {lo:.0}-{hi:.0})")
        });
        println!(
            "  {:<7} {:>8.1} MB/s per core ({:>6.2} M records/s)  wall {:>8.1} MB/s  peak RSS {:>5.1} MB{ratio}{spread}",
            self.name,
            self.cpu_mb_s(),
            self.records as f64 / 1e6 / self.cpu_seconds,
            self.mb_s(),
            self.peak_mb,
        );
    }
}

/// Runs a pass `times` times and keeps the median run, with the spread of all: on a shared
/// machine one run can be 40 % slower than the next, and the median is the figure a user
/// would see most often.
fn repeated(times: usize, mut run: impl FnMut() -> Pass) -> Pass {
    let mut runs: Vec<Pass> = (0..times.max(1)).map(|_| run()).collect();
    runs.sort_by(|a, b| a.cpu_mb_s().total_cmp(&b.cpu_mb_s()));
    let (lo, hi) = (runs[0].cpu_mb_s(), runs[runs.len() - 1].cpu_mb_s());
    let n = runs.len();
    let mut median = runs.swap_remove(n / 2);
    if n > 1 {
        median.spread = Some((n, lo, hi));
    }
    median
}

/// Reads the whole file through the framing layer, one core: `next` reads and handles the
/// next unit (a record or a block) and returns its records and bytes, `None` at the end.
fn pass(
    name: &'static str,
    path: &Path,
    record_length: usize,
    mut next: impl FnMut(&mut RecordReader<std::fs::File>) -> Option<(u64, u64)>,
) -> Pass {
    reset_peak_rss();
    let file = std::fs::File::open(path).expect("open");
    let start = Instant::now();
    let cpu_start = thread_cpu_seconds();
    let mut reader = RecordReader::new(file, RecordFormat::Fixed, record_length);
    let mut records = 0u64;
    let mut bytes = 0u64;
    while let Some((r, b)) = next(&mut reader) {
        records += r;
        bytes += b;
    }
    Pass {
        name,
        bytes,
        records,
        seconds: start.elapsed().as_secs_f64(),
        cpu_seconds: thread_cpu_seconds() - cpu_start,
        peak_mb: peak_rss_mb(),
        spread: None,
    }
}

/// Reads the whole file a record at a time, calling `each` on every record.
fn record_pass(
    name: &'static str,
    path: &Path,
    record_length: usize,
    mut each: impl FnMut(&[u8]),
) -> Pass {
    pass(name, path, record_length, |reader| {
        let r = reader.next_record().expect("framing")?;
        each(r.data);
        Some((1, r.data.len() as u64))
    })
}

/// Reads the whole file a block of records at a time, calling `each` on every block (which
/// returns the records it handled).
fn block_pass(
    name: &'static str,
    path: &Path,
    record_length: usize,
    mut each: impl FnMut(&Block<'_>) -> u64,
) -> Pass {
    pass(name, path, record_length, |reader| {
        let b = reader.next_block().expect("framing")?;
        Some((each(&b), b.data.len() as u64))
    })
}

/// The layout as the Python baseline reads it.
fn python_layout(layout: &Layout, encoding: Encoding) -> serde_json::Value {
    let fields: Vec<_> = layout
        .fields
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name, "offset": f.offset, "length": f.length, "scale": f.scale,
                "signed": f.signed,
                "type": match f.kind {
                    FieldKind::Text => "text",
                    FieldKind::Zoned { .. } => "zoned",
                    FieldKind::Packed => "packed",
                    FieldKind::Binary => "binary",
                },
            })
        })
        .collect();
    serde_json::json!({
        "encoding": encoding.name(), "record_length": layout.record_length, "fields": fields,
    })
}

/// What every layout's run is given.
#[derive(Clone, Copy)]
struct Settings {
    /// Bytes of records to generate.
    size: u64,
    /// Bytes of the file the Python baseline reads (all by default).
    python_limit: Option<u64>,
    /// How many times the frame and decode passes run.
    repeat: usize,
}

fn run_case(
    dir: &Path,
    title: &str,
    copybook: &str,
    encoding: Encoding,
    make: fn(&mut Rng) -> Vec<u8>,
    settings: &Settings,
) {
    let Settings {
        size,
        python_limit,
        repeat,
    } = *settings;
    let layout = Layout::from_copybook(copybook).expect("layout");
    let options = DecodeOptions {
        encoding,
        ..DecodeOptions::default()
    };
    let decoder = RecordDecoder::new(&layout, options).expect("decoder");
    let path = dir.join(format!("{}.dat", encoding.name()));
    let written = generate(&path, size, make);
    println!(
        "{title}: {} bytes a record, {:.0} MB file",
        layout.record_length,
        written as f64 / 1e6
    );
    let n = layout.record_length;

    let frame = repeated(repeat, || {
        block_pass("frame", &path, n, |block| block.records)
    });
    frame.print(None);

    // The decoded rows are complete (every number computed, every text located or
    // transcoded) when each is handed on; the pass hands them to `black_box`.
    let mut buf = RowBuffer::new();
    let decode = repeated(repeat, || {
        block_pass("decode", &path, n, |block| {
            let mut count = 0;
            decoder.decode_block(block, &mut buf, |_, row| {
                std::hint::black_box(&row.expect("decode"));
                count += 1;
            });
            count
        })
    });
    // The same decode a record at a time (`next_record` and `decode_row`).
    let row = record_pass("row", &path, n, |r| {
        let row = decoder.decode_row(r, &mut buf).expect("decode");
        std::hint::black_box(&row);
    });
    if std::env::var_os("SYNCMESH_BENCH_DECODE_ONLY").is_some() {
        // For profiling: the decode passes alone.
        decode.print(None);
        row.print(None);
        let _ = std::fs::remove_file(&path);
        return;
    }

    // Decoding and reading every value into a checksum, as the Python baseline does; the
    // checksum of the prefix Python reads is compared with Python's.
    let py_records = python_limit.map_or(u64::MAX, |b| b / n as u64);
    let mut sum = Checksum::default();
    let mut prefix_sum = Checksum::default();
    let mut seen = 0u64;
    let consume = block_pass("sum", &path, n, |block| {
        let mut count = 0;
        decoder.decode_block(block, &mut buf, |_, row| {
            row.expect("decode").fields().for_each(|v| sum.add(v));
            seen += 1;
            if seen == py_records {
                prefix_sum = sum;
            }
            count += 1;
        });
        count
    });
    if seen < py_records {
        prefix_sum = sum;
    }

    let mut owned_rows = 0usize;
    let owned = block_pass("owned", &path, n, |block| {
        let mut count = 0;
        decoder.decode_block(block, &mut buf, |_, row| {
            owned_rows += row.expect("decode").to_values().len();
            count += 1;
        });
        count
    });

    let writer = JsonWriter::new(&decoder.columns());
    let mut json_bytes = 0usize;
    let mut out = Vec::with_capacity(1 << 17);
    let json = block_pass("json", &path, n, |block| {
        let mut count = 0;
        decoder.decode_block(block, &mut buf, |_, row| {
            writer.write(&row.expect("decode"), &mut out);
            out.push(b'\n');
            if out.len() >= 1 << 16 {
                json_bytes += out.len();
                std::hint::black_box(&out);
                out.clear();
            }
            count += 1;
        });
        count
    });
    json_bytes += out.len();

    let spec = dir.join(format!("{}.json", encoding.name()));
    std::fs::write(&spec, python_layout(&layout, encoding).to_string()).expect("layout json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/flatfile_decode.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(&spec).arg(&path);
    if let Some(limit) = python_limit {
        cmd.arg(limit.to_string());
    }
    let out = cmd.output().expect("run python3");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).expect("python output");
    let python = Pass {
        name: "python",
        bytes: py["bytes"].as_u64().unwrap_or(0),
        records: py["records"].as_u64().unwrap_or(0),
        seconds: py["seconds"].as_f64().unwrap_or(f64::NAN),
        cpu_seconds: py["cpu_seconds"].as_f64().unwrap_or(f64::NAN),
        peak_mb: f64::NAN,
        spread: None,
    };
    let py_sum = Checksum {
        numbers: py["checksum"].as_u64().unwrap_or(0),
        text_chars: py["text_chars"].as_u64().unwrap_or(0),
    };
    decode.print(Some(&python));
    row.print(Some(&python));
    consume.print(Some(&python));
    owned.print(Some(&python));
    json.print(Some(&python));
    python.print(Some(&python));
    println!(
        "  checksums {} (rust {prefix_sum:?}, python {py_sum:?} over {} records); {json_bytes} JSON bytes; {owned_rows} values",
        if prefix_sum == py_sum {
            "agree"
        } else {
            "DIFFER"
        },
        python.records
    );
    assert_eq!(
        prefix_sum, py_sum,
        "Rust and Python decoded different values"
    );
    let _ = std::fs::remove_file(&path);
}

fn main() {
    // `cargo bench` passes `--bench`; take no other arguments.
    let env_u64 = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    // `cargo test --all-targets` runs this binary unoptimised and without `--bench`: then a
    // 1 MB run only proves it works.
    let full = std::env::args().any(|a| a == "--bench");
    let default_size = if full { 1 << 30 } else { 1 << 20 };
    let size = env_u64("SYNCMESH_BENCH_BYTES").unwrap_or(default_size);
    let python_limit = env_u64("SYNCMESH_BENCH_PY_BYTES");
    let repeat = env_u64("SYNCMESH_BENCH_REPEAT").map_or(if full { 3 } else { 1 }, |r| r as usize);
    let settings = Settings {
        size,
        python_limit,
        repeat,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "flatfile_decode: {} MB per layout, 1 thread, frame and decode passes {repeat} times; python on {}",
        size / 1_000_000,
        python_limit.map_or("the whole file".to_string(), |b| format!(
            "the first {} MB",
            b / 1_000_000
        ))
    );
    // For profiling: SYNCMESH_BENCH_LAYOUT=ascii or ebcdic runs that layout only.
    let only = std::env::var("SYNCMESH_BENCH_LAYOUT").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if wanted("ascii") {
        run_case(
            dir.path(),
            "ASCII text + zoned",
            ASCII_COPYBOOK,
            Encoding::Ascii,
            ascii_record,
            &settings,
        );
    }
    if wanted("ebcdic") {
        run_case(
            dir.path(),
            "EBCDIC cp037 + COMP-3",
            EBCDIC_COPYBOOK,
            Encoding::Cp037,
            ebcdic_record,
            &settings,
        );
    }
}
