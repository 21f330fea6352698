//! GnuCOBOL ground truth: COBOL programs (tests/fixtures/flatfile/*.cob) COPY the same
//! copybooks the decoder loads, write files with every supported type and DISPLAY what they
//! wrote; the decoder must agree with DISPLAY on every record.
//!
//! Built twice: `cobc` defaults (Micro Focus sign convention in ASCII: `p`-`y` negative) and
//! `-fsign=EBCDIC` (IBM convention: `{` `A`-`I` / `}` `J`-`R`); both with
//! `-fbinary-size=2-4-8`, the IBM binary sizes. The IBM-convention file is also converted
//! to cp037, cp500 and cp1047 (text and zoned bytes translated, packed and binary kept) and
//! decoded again.
//!
//! Skipped (with a message) when `cobc` is missing, unless `SYNCMESH_REQUIRE_COBOL` is set,
//! in which case a missing `cobc` fails the tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use syncmesh_connectors::event::{Column, ColumnType, Decimal, Value};
use syncmesh_connectors::sources::flatfile::{
    DecodeOptions, Encoding, FieldKind, Layout, RecordDecoder, RecordFormat, RecordReader,
    RecordSelector, SignConvention,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/flatfile")
}

/// Whether to run: false (after saying why) when cobc is absent and not required.
fn have_cobc() -> bool {
    let ok = Command::new("cobc")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return true;
    }
    let required = std::env::var("SYNCMESH_REQUIRE_COBOL").is_ok_and(|v| !v.is_empty() && v != "0");
    if required {
        panic!(
            "SYNCMESH_REQUIRE_COBOL is set but `cobc` is not installed (apt-get install gnucobol3)"
        );
    }
    eprintln!(
        "SKIPPED: GnuCOBOL `cobc` not found; install gnucobol3 (or set SYNCMESH_REQUIRE_COBOL to make this a failure)"
    );
    false
}

/// Compiles `program` into `dir` and runs it there; returns its DISPLAY lines.
fn run_cobol(program: &str, ibm_sign: bool, dir: &Path) -> Vec<String> {
    let exe = dir.join(program.trim_end_matches(".cob"));
    let mut cobc = Command::new("cobc");
    cobc.arg("-x").arg("-fbinary-size=2-4-8");
    if ibm_sign {
        cobc.arg("-fsign=EBCDIC");
    }
    cobc.arg("-I")
        .arg(fixtures())
        .arg("-o")
        .arg(&exe)
        .arg(fixtures().join(program));
    let out = cobc.output().expect("run cobc");
    assert!(
        out.status.success(),
        "cobc {program} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&exe)
        .current_dir(dir)
        .output()
        .expect("run program");
    assert!(
        out.status.success(),
        "{program} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A DISPLAYed number (`+0012.50`, `-.71051`, `290428.23+`) as an exact decimal.
fn display_number(text: &str) -> Decimal {
    let t = text.trim();
    let normalized = match t.strip_suffix('+') {
        Some(rest) => rest.to_string(),
        None => match t.strip_suffix('-') {
            Some(rest) => format!("-{rest}"),
            None => t.to_string(),
        },
    };
    Decimal::parse(&normalized).unwrap_or_else(|e| panic!("DISPLAY `{text}`: {e}"))
}

fn expected_scalar(ty: &ColumnType, text: &str) -> Value {
    match ty {
        ColumnType::String { .. } => Value::String(text.trim_end().to_string()),
        ColumnType::Int => {
            let d = display_number(text);
            assert_eq!(d.scale, 0, "DISPLAY `{text}` of an integer column");
            Value::Int(i64::try_from(d.unscaled).unwrap())
        }
        ColumnType::Decimal { scale, .. } => {
            let d = display_number(text);
            assert_eq!(d.scale, *scale, "DISPLAY `{text}` has the column's scale");
            Value::Decimal(d)
        }
        other => panic!("unexpected column type {other:?}"),
    }
}

/// Builds the row DISPLAY describes: the DISPLAYed parts fill the columns in order (OCCURS
/// column by column, as many elements as the decoder found: the counts are checked through
/// their counter columns); columns the decoder left null (inactive REDEFINES) take none.
fn expected_row(columns: &[Column], decoded: &[Value], parts: &[&str]) -> Vec<Value> {
    let mut parts = parts.iter();
    let mut row = Vec::new();
    for (c, v) in columns.iter().zip(decoded) {
        let value = match (&c.column_type, v) {
            (_, Value::Null) => Value::Null,
            (ColumnType::Array(inner), Value::Array(items)) => Value::Array(
                (0..items.len())
                    .map(|_| expected_scalar(inner, parts.next().expect("too few DISPLAY parts")))
                    .collect(),
            ),
            (ty, _) => expected_scalar(ty, parts.next().expect("too few DISPLAY parts")),
        };
        row.push(value);
    }
    assert!(parts.next().is_none(), "more DISPLAY parts than columns");
    row
}

fn options(encoding: Encoding, sign_convention: SignConvention) -> DecodeOptions {
    DecodeOptions {
        encoding,
        sign_convention,
        ..Default::default()
    }
}

/// Decodes every record of `data` and compares it with the DISPLAY lines.
fn check_file(
    layout: &Layout,
    options: DecodeOptions,
    format: RecordFormat,
    data: &[u8],
    lines: &[&str],
    what: &str,
) -> Vec<Vec<Value>> {
    let decoder = RecordDecoder::new(layout, options).unwrap();
    let columns = decoder.columns();
    let mut reader = RecordReader::new(data, format, layout.record_length);
    let mut rows = Vec::new();
    while let Some(rec) = reader.next_record().unwrap() {
        let n = rows.len();
        let line = lines
            .get(n)
            .unwrap_or_else(|| panic!("{what}: more records than DISPLAY lines"));
        let decoded = decoder
            .decode(rec.data)
            .unwrap_or_else(|e| panic!("{what} record {} at byte {}: {e}", rec.number, rec.offset));
        let parts: Vec<&str> = line.trim_end().split('|').collect();
        let expected = expected_row(&columns, &decoded, &parts);
        assert_eq!(
            decoded, expected,
            "{what} record {}: DISPLAY `{line}`",
            rec.number
        );
        rows.push(decoded);
    }
    assert_eq!(rows.len(), lines.len(), "{what}: records vs DISPLAY lines");
    rows
}

/// Translates an ASCII file into an EBCDIC code page: every byte but those of packed and
/// binary fields (the overpunch letters `{` `A`-`I` `}` `J`-`R` land on the C and D zones).
fn to_ebcdic(layout: &Layout, data: &[u8], encoding: Encoding) -> Vec<u8> {
    let mut keep = vec![false; layout.record_length];
    for f in &layout.fields {
        if matches!(f.kind, FieldKind::Packed | FieldKind::Binary) {
            let mut starts = vec![f.offset];
            for o in &f.occurs {
                starts = starts
                    .iter()
                    .flat_map(|s| (0..o.max).map(move |i| s + i * o.stride))
                    .collect();
            }
            for s in starts {
                keep[s..s + f.length].iter_mut().for_each(|k| *k = true);
            }
        }
    }
    let mut map = [0u8; 128];
    for b in 0..128u8 {
        map[usize::from(b)] = encoding
            .encode(&char::from(b).to_string())
            .map(|v| v[0])
            .unwrap_or(0x3F);
    }
    data.iter()
        .enumerate()
        .map(|(i, b)| {
            if keep[i % layout.record_length] {
                *b
            } else {
                assert!(*b < 0x80, "non-ASCII byte in a text position");
                map[usize::from(*b)]
            }
        })
        .collect()
}

#[test]
fn alltypes_agree_with_display_in_both_sign_conventions_and_three_code_pages() {
    if !have_cobc() {
        return;
    }
    let layout = Layout::load(fixtures().join("alltypes.cpy")).unwrap();
    assert_eq!(layout.record_length, 167);
    for (ibm, convention) in [
        (false, SignConvention::MicroFocus),
        (true, SignConvention::Ibm),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let lines = run_cobol("alltypes.cob", ibm, dir.path());
        let data = std::fs::read(dir.path().join("alltypes.dat")).unwrap();
        assert_eq!(data.len(), lines.len() * 167);
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let what = format!("alltypes ({convention:?})");
        let rows = check_file(
            &layout,
            options(Encoding::Ascii, convention),
            RecordFormat::Fixed,
            &data,
            &lines,
            &what,
        );
        assert_eq!(rows.len(), 203);
        // The convention really is the one named: negative overpunches are there, and the
        // other convention refuses them.
        let negative: &[u8] = if ibm { b"}JKLMNOPQR" } else { b"pqrstuvwxy" };
        assert!(
            data.iter().any(|b| negative.contains(b)),
            "{what}: no negative overpunch"
        );
        let other = if ibm {
            SignConvention::MicroFocus
        } else {
            SignConvention::Ibm
        };
        let wrong = RecordDecoder::new(&layout, options(Encoding::Ascii, other)).unwrap();
        assert!(
            data.chunks(167).any(|r| wrong.decode(r).is_err()),
            "{what}: the other convention should reject some records"
        );
        if ibm {
            for encoding in [Encoding::Cp037, Encoding::Cp500, Encoding::Cp1047] {
                let ebcdic = to_ebcdic(&layout, &data, encoding);
                // Zones really are EBCDIC: digits F0-F9, negative overpunch D0-D9.
                assert!(ebcdic.iter().any(|b| (0xD0..=0xD9).contains(b)));
                check_file(
                    &layout,
                    options(encoding, SignConvention::Ibm),
                    RecordFormat::Fixed,
                    &ebcdic,
                    &lines,
                    &format!("alltypes ({encoding})"),
                );
            }
        }
    }
}

#[test]
fn header_detail_trailer_records_with_a_selector() {
    if !have_cobc() {
        return;
    }
    let selector = RecordSelector::from_yaml(
        "field: HDR-TYPE\ncases: {\"H\": HDR-REC, \"D\": DTL-REC, \"T\": TRL-REC}\n",
    )
    .unwrap();
    let layout = Layout::load(fixtures().join("records.cpy"))
        .unwrap()
        .with_selector(selector)
        .unwrap();
    assert_eq!(layout.record_length, 40);
    for (ibm, convention) in [
        (false, SignConvention::MicroFocus),
        (true, SignConvention::Ibm),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let lines = run_cobol("records.cob", ibm, dir.path());
        let data = std::fs::read(dir.path().join("records.dat")).unwrap();
        let r_lines: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("R|")).collect();
        let rows = check_file(
            &layout,
            options(Encoding::Ascii, convention),
            RecordFormat::Fixed,
            &data,
            &r_lines,
            "records",
        );
        assert_eq!(rows.len(), 27);
        let decoder = RecordDecoder::new(&layout, options(Encoding::Ascii, convention)).unwrap();
        let names: Vec<String> = decoder.columns().into_iter().map(|c| c.name).collect();
        let col = |n: &str| names.iter().position(|c| c == n).unwrap();
        for row in &rows {
            // The type byte is HDR-TYPE, DTL-TYPE or TRL-TYPE: whichever record applies.
            let kind = ["HDR-TYPE", "DTL-TYPE", "TRL-TYPE"]
                .iter()
                .find_map(|n| match &row[col(n)] {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .expect("one record type applies");
            let prefix = match kind.as_str() {
                "H" => "HDR-",
                "D" => "DTL-",
                "T" => "TRL-",
                other => panic!("record type {other}"),
            };
            for (name, v) in names.iter().zip(row) {
                let own = name.starts_with(prefix);
                assert_eq!(own, !v.is_null(), "{kind} record, column {name}: {v:?}");
            }
        }
        // Trailers carry the count and total of their batch's details.
        let (mut count, mut total) = (0i64, 0i128);
        for row in &rows {
            if !row[col("DTL-AMOUNT")].is_null() {
                count += 1;
                if let Value::Decimal(d) = row[col("DTL-AMOUNT")] {
                    total += d.unscaled;
                }
            }
            if !row[col("TRL-COUNT")].is_null() {
                assert_eq!(row[col("TRL-COUNT")], Value::Int(count));
                assert_eq!(
                    row[col("TRL-TOTAL")],
                    Value::Decimal(Decimal::new(total, 2))
                );
                (count, total) = (0, 0);
            }
        }
    }
}

/// GnuCOBOL's variable sequential files prefix each record with a 2-byte big-endian length
/// that excludes the prefix, then 2 zero bytes; IBM's RDW counts its own 4 bytes.
fn gnucobol_varseq_to_rdw(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let len = usize::from(u16::from_be_bytes([data[i], data[i + 1]]));
        assert_eq!(&data[i + 2..i + 4], &[0, 0]);
        out.extend_from_slice(&u16::try_from(len + 4).unwrap().to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&data[i + 4..i + 4 + len]);
        i += 4 + len;
    }
    out
}

#[test]
fn occurs_depending_on_in_rdw_records() {
    if !have_cobc() {
        return;
    }
    let layout = Layout::load(fixtures().join("odo.cpy")).unwrap();
    assert_eq!(layout.record_length, 42);
    assert_eq!(layout.min_record_length(), 12);
    for (ibm, convention) in [
        (false, SignConvention::MicroFocus),
        (true, SignConvention::Ibm),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let lines = run_cobol("records.cob", ibm, dir.path());
        let data = gnucobol_varseq_to_rdw(&std::fs::read(dir.path().join("odo.dat")).unwrap());
        let o_lines: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("O|")).collect();
        let rows = check_file(
            &layout,
            options(Encoding::Ascii, convention),
            RecordFormat::Rdw,
            &data,
            &o_lines,
            "odo",
        );
        assert_eq!(rows.len(), 60);
        let counts: Vec<usize> = rows
            .iter()
            .map(|r| match (&r[1], &r[3]) {
                (Value::Int(n), Value::Array(items)) => {
                    assert_eq!(*n as usize, items.len());
                    items.len()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(
            counts.contains(&0) && counts.contains(&5),
            "counts {counts:?}"
        );
    }
}

#[test]
fn line_sequential_records_with_stripped_trailing_spaces() {
    if !have_cobc() {
        return;
    }
    let layout = Layout::load(fixtures().join("lines.cpy")).unwrap();
    for (ibm, convention) in [
        (false, SignConvention::MicroFocus),
        (true, SignConvention::Ibm),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let lines = run_cobol("records.cob", ibm, dir.path());
        let data = std::fs::read(dir.path().join("lines.dat")).unwrap();
        let l_lines: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("L|")).collect();
        let mut opts = options(Encoding::Ascii, convention);
        // Strict decoding refuses the lines whose name GnuCOBOL stripped.
        let strict = RecordDecoder::new(&layout, opts).unwrap();
        let mut reader = RecordReader::new(&data[..], RecordFormat::Lines, layout.record_length);
        let mut short = 0;
        while let Some(r) = reader.next_record().unwrap() {
            if let Err(e) = strict.decode(r.data) {
                assert!(e.to_string().contains("LN-NAME"), "{e}");
                short += 1;
            }
        }
        // GnuCOBOL strips trailing spaces: only the 15 lines with a 20-character name are
        // complete.
        assert_eq!(short, 45);
        opts.allow_short_text = true;
        let rows = check_file(&layout, opts, RecordFormat::Lines, &data, &l_lines, "lines");
        assert_eq!(rows.len(), 60);
    }
}
