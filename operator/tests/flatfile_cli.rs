//! `syncmesh flatfile decode` end to end: one JSON object per record, in order, across the
//! reader's buffer boundaries; a bad record stops the output with exit 2 naming its number,
//! byte offset and field, or, with `--dead-letter`, is written there while the rest goes on.

mod common;

use common::{syncmesh, text};
use serde_json::{Value as J, json};
use std::path::Path;

const COPYBOOK: &str = "
       01  ACCOUNT.
           05  ID        PIC 9(8).
           05  NAME      PIC X(12).
           05  AMOUNT    PIC 9(5)V99.
           05  FILLER    PIC X(3).
";
const RECORD: usize = 30;
/// More records than one 1 MiB read buffer holds.
const RECORDS: usize = 50_000;
/// The record (1-based) spoiled by the bad-record tests.
const BAD: usize = 36_001;

fn record(i: usize) -> Vec<u8> {
    let amount = i * 7 % 10_000_000;
    let r = format!("{i:08}{:<12}{amount:07}   ", format!("N{i}"));
    assert_eq!(r.len(), RECORD);
    r.into_bytes()
}

fn expected(i: usize) -> J {
    let amount = i * 7 % 10_000_000;
    json!({
        "ID": i,
        "NAME": format!("N{i}"),
        "AMOUNT": format!("{}.{:02}", amount / 100, amount % 100),
    })
}

/// The copybook and a file of `RECORDS` records, record `BAD` with a letter in its ID when
/// `spoil`.
fn fixture(dir: &Path, spoil: bool) {
    std::fs::write(dir.join("acct.cpy"), COPYBOOK).expect("copybook");
    let mut data = Vec::with_capacity(RECORDS * RECORD);
    for i in 1..=RECORDS {
        let mut r = record(i);
        if spoil && i == BAD {
            r[3] = b'X';
        }
        data.extend(r);
    }
    std::fs::write(dir.join("acct.dat"), data).expect("data");
}

fn decode(dir: &Path, extra: &[&str]) -> (i32, Vec<J>, String) {
    let layout = dir.join("acct.cpy");
    let input = dir.join("acct.dat");
    let mut args = vec![
        "flatfile",
        "decode",
        "--layout",
        layout.to_str().expect("path"),
    ];
    args.extend(extra);
    args.push(input.to_str().expect("path"));
    let out = syncmesh(&args);
    let lines = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    (out.status.code().unwrap_or(-1), lines, text(&out.stderr))
}

#[test]
fn every_record_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    fixture(dir.path(), false);
    let (code, lines, stderr) = decode(dir.path(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines.len(), RECORDS);
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(line, &expected(n + 1), "record {}", n + 1);
    }
}

#[test]
fn a_bad_record_stops_the_output_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    fixture(dir.path(), true);
    let (code, lines, stderr) = decode(dir.path(), &[]);
    assert_eq!(code, 2, "{stderr}");
    // Everything before the bad record, nothing after it.
    assert_eq!(lines.len(), BAD - 1);
    assert_eq!(lines.last(), Some(&expected(BAD - 1)));
    let offset = (BAD - 1) * RECORD;
    for part in [
        format!("record {BAD}"),
        format!("at byte {offset}"),
        "ID".into(),
    ] {
        assert!(stderr.contains(&part), "{part} in {stderr}");
    }
}

#[test]
fn with_a_dead_letter_file_the_rest_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    fixture(dir.path(), true);
    let dead = dir.path().join("dead.jsonl");
    let (code, lines, stderr) =
        decode(dir.path(), &["--dead-letter", dead.to_str().expect("path")]);
    assert_eq!(code, 0, "{stderr}");
    let want: Vec<J> = (1..=RECORDS).filter(|&i| i != BAD).map(expected).collect();
    assert_eq!(lines, want);
    let letters: Vec<J> = std::fs::read_to_string(&dead)
        .expect("dead letters")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["record"], BAD);
    assert_eq!(letters[0]["offset"], (BAD - 1) * RECORD);
    assert_eq!(letters[0]["field"], "ID");
}
