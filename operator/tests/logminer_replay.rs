//! `syncmesh logminer replay` on recorded V$LOGMNR_CONTENTS exports.

mod common;

use common::{repo_root, syncmesh, text};
use serde_json::{Value, json};

fn replay(fixture: &str, extra: &[&str]) -> (i32, Vec<Value>, String) {
    let path = repo_root().join("tests/fixtures/oracle").join(fixture);
    let path = path.display().to_string();
    let mut args = vec!["logminer", "replay", path.as_str()];
    args.extend_from_slice(extra);
    let out = syncmesh(&args);
    let events = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    (out.status.code().unwrap_or(-1), events, text(&out.stderr))
}

/// (op, txId, commit_scn, scn, schema_version) of each event.
fn summary(events: &[Value]) -> Vec<(String, String, String, String, u64)> {
    events
        .iter()
        .map(|e| {
            let s = &e["source"];
            (
                e["op"].as_str().unwrap_or("ddl").to_string(),
                s["txId"].as_str().unwrap_or_default().to_string(),
                s["commit_scn"].as_str().unwrap_or_default().to_string(),
                s["scn"].as_str().unwrap_or_default().to_string(),
                s["schema_version"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn committed_transactions_replay_in_commit_order() {
    let (code, events, stderr) = replay("contents_basic.csv", &["--summary"]);
    assert_eq!(code, 0, "{stderr}");
    let ev = |op: &str, tx: &str, commit: u64, scn: u64, v: u64| {
        (
            op.to_string(),
            tx.to_string(),
            commit.to_string(),
            scn.to_string(),
            v,
        )
    };
    assert_eq!(
        summary(&events),
        vec![
            // T1: insert then update, commit 1005; T2 rolled back: absent.
            ev("c", "0A001B00C4010000", 1005, 1001, 1),
            ev("u", "0A001B00C4010000", 1005, 1004, 1),
            // DDL (commit 1022) before T3 (commit 1023) though T3 started first.
            ev("ddl", "0D000100F0040000", 1022, 1021, 2),
            // T3: the savepoint-rolled-back insert of 1003 is gone; the CSF rows are one insert.
            ev("c", "0C000900E1030000", 1023, 1011, 2),
            ev("c", "0C000900E1030000", 1023, 1014, 2),
            // Two commits at SCN 1031: thread 1 (E) before thread 2 (F); TIER is new: version 3.
            ev("d", "0E000200A1050000", 1031, 1028, 3),
            ev("u", "0F000300B2060000", 1031, 1026, 3),
        ]
    );
    assert_eq!(
        events[0]["after"],
        json!({
            "ID": "1001", "NAME": "O'Brien", "OPENED": "2020-01-31T00:00:00",
            "LAST_TS": "2024-03-01T08:59:59.123456", "TZ_TS": "2024-03-01T08:59:59.500+02:00",
            "PHOTO": "yv4B", "CITY": "Zürich", "NOTES": null, "DOC": "", "BALANCE": "1500.25",
        })
    );
    // The update's after image is the where clause overlaid with the set columns.
    assert_eq!(events[1]["before"]["BALANCE"], "1500.25");
    assert_eq!(events[1]["after"]["BALANCE"], "1400.25");
    assert_eq!(events[1]["after"]["NAME"], "O'Brien");
    assert_eq!(events[1]["after"]["NOTES"], "overdraft's fee");
    assert_eq!(events[1]["ts_ms"], 1_709_283_604_000i64, "commit time");
    assert_eq!(
        events[2]["ddl"],
        r#"alter table "BANK"."ACCOUNTS" add ("TIER" VARCHAR2(10));"#
    );
    assert_eq!(
        events[4]["after"]["NAME"],
        "A very long name split by LogMiner"
    );
    assert_eq!(events[6]["source"]["thread"], 2);
    assert_eq!(events[6]["after"]["TIER"], "gold");
    assert_eq!(events[6]["before"]["TIER"], Value::Null);
    assert!(
        stderr.contains("23 rows, 7 events, 5 transactions committed, 1 rolled back"),
        "{stderr}"
    );
}

#[test]
fn bad_rows_are_named_and_the_rest_is_replayed() {
    let (code, events, stderr) = replay("contents_bad.csv", &[]);
    assert_eq!(code, 2, "{stderr}");
    let ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e["after"]["ID"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["1", "3"],
        "the good rows of the transaction still come out"
    );
    assert!(
        stderr.contains(
            "row 3 (line 4), SCN 2002, XID 0A001B00C4010000, RS_ID 0x000014.000007d2.0010 SSN 0: \
             column SQL_REDO at byte 55: expected `,` between values"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("row 6 (line 7): column SCN: `20x5` is not a whole number"),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_or_column_is_bad_input() {
    let (code, _, stderr) = replay("no-such-file.csv", &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no-such-file.csv"), "{stderr}");
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("x.csv");
    std::fs::write(&csv, "SCN,XID,SQL_REDO\n1,A,x\n").expect("write");
    let out = syncmesh(&["logminer", "replay", &csv.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("the header has no OPERATION_CODE column"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn lob_rows_are_assembled_into_their_events() {
    let (code, events, stderr) = replay("contents_lob.csv", &[]);
    // The export holds a broken LOB fragment and a LOB whose earlier value it lacks.
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("SCN 1203") && stderr.contains("LOB fragment: expected a closing `'`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("LOB column BANK.DOCS.BODY of the row where ID = \"6\""),
        "{stderr}"
    );
    // Without a dictionary the values are typed by their literals: text, and bytes (base64).
    let bodies: Vec<(String, Value, Value)> = events
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap_or_default().to_string(),
                e["after"]["BODY"].clone(),
                e["after"]["IMG"].clone(),
            )
        })
        .collect();
    let b = |op: &str, body: Value, img: Value| (op.to_string(), body, img);
    assert_eq!(
        bodies,
        vec![
            b(
                "c",
                json!("Hello, it's a multi-chunk world"),
                json!("yv66vgE=")
            ),
            b("u", json!("Bye"), Value::Null),
            b("u", json!("Goodbye!"), Value::Null),
            b("c", json!("ab  ef"), json!("")),
            b("c", json!("one two three"), json!("")),
            b("c", json!(""), json!("")),
            b("c", json!(""), json!("")),
            b("c", json!("abc"), json!("")),
            b("u", json!("abcdef"), Value::Null),
        ]
    );
}
