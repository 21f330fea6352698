//! SQL_REDO parsing and replay throughput, each with a baseline measured in the same run:
//!
//! - parse: typical 10-column inserts per second on one core, against a memchr scan of the
//!   same bytes for the statement terminator (the least any parser must do);
//! - typed: the same, with every literal converted to a value (by its literal form, and by
//!   the table's dictionary types);
//! - events: what the source does per row, `EventBuilder::dml` with dictionary types (parse,
//!   typed values, the change event);
//! - replay: V$LOGMNR_CONTENTS rows (CSV export) to committed events per second, against
//!   serde_json parsing the same rows written as JSON lines.
//!
//! Times are the thread's CPU time where Linux reports it (`/proc/thread-self/schedstat`),
//! so another process taking the core does not count; each figure is the best of a few
//! rounds. Run: `cargo bench -p syncmesh-connectors --bench oracle_redo`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;
use std::time::Instant;
use syncmesh_connectors::event::{Position, TableId, Transaction};
use syncmesh_connectors::sources::oracle::buffer::BufferConfig;
use syncmesh_connectors::sources::oracle::contents::{ContentRow, OpCode};
use syncmesh_connectors::sources::oracle::events::{EventBuilder, TableDef};
use syncmesh_connectors::sources::oracle::replay::replay_csv;
use syncmesh_connectors::sources::oracle::sql_redo::parse_redo;
use syncmesh_connectors::sources::oracle::values::{OracleType, to_value};

fn insert(i: u64) -> String {
    format!(
        "insert into \"BANK\".\"LEDGER\"(\"ID\",\"ACCOUNT\",\"CURRENCY\",\"AMOUNT\",\"BALANCE\",\
         \"BOOKED\",\"VALUE_DATE\",\"STATUS\",\"REFERENCE\",\"NOTE\") values ('{i}','CH93 0076 2011 \
         6238 5295 7','CHF','{}.{:02}','{}.50',TO_DATE('2024-03-01 09:{:02}:{:02}', \
         'YYYY-MM-DD HH24:MI:SS'),TO_DATE('2024-03-04 00:00:00', 'YYYY-MM-DD HH24:MI:SS'),'BOOKED',\
         'REF-{i:010}',NULL);",
        i % 100_000,
        i % 100,
        i * 7 % 1_000_000,
        i / 60 % 60,
        i % 60
    )
}

/// The LEDGER table as `ALL_TAB_COLUMNS` would describe it.
fn ledger() -> TableDef {
    let number = |p, s| OracleType::Number {
        precision: Some(p),
        scale: Some(s),
    };
    let text = |n| OracleType::Text {
        max_length: Some(n),
    };
    let columns = [
        ("ID", number(12, 0)),
        ("ACCOUNT", text(34)),
        ("CURRENCY", text(3)),
        ("AMOUNT", number(18, 2)),
        ("BALANCE", number(18, 2)),
        ("BOOKED", OracleType::Date),
        ("VALUE_DATE", OracleType::Date),
        ("STATUS", text(10)),
        ("REFERENCE", text(20)),
        ("NOTE", text(200)),
    ];
    TableDef {
        table: TableId::new("BANK", "LEDGER"),
        columns: columns
            .into_iter()
            .map(|(n, t)| (n.to_string(), t, n != "ID"))
            .collect(),
        primary_key: vec!["ID".into()],
    }
}

fn content_row(sql: String) -> ContentRow {
    ContentRow {
        scn: 1000,
        start_scn: None,
        commit_scn: None,
        timestamp: None,
        commit_timestamp: None,
        xid: "0A001B00C4010000".into(),
        op: OpCode::Insert,
        sql_redo: sql,
        csf: false,
        rollback: false,
        rs_id: String::new(),
        ssn: 0,
        row_id: String::new(),
        seg_owner: "BANK".into(),
        table_name: "LEDGER".into(),
        thread: 1,
        info: String::new(),
        row: 0,
        line: 0,
    }
}

/// Seconds of CPU this thread has used (wall-clock seconds where Linux does not say).
fn cpu_seconds(start: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(|| start.elapsed().as_secs_f64(), |ns| ns / 1e9)
}

/// The least time one run of `f` took, over `rounds` rounds. A round repeats `f` for at
/// least `min_round` seconds, as the CPU clock advances in scheduler ticks.
fn best(rounds: usize, min_round: f64, mut f: impl FnMut() -> usize) -> f64 {
    let origin = Instant::now();
    (0..rounds)
        .map(|_| {
            let t = cpu_seconds(origin);
            let mut runs = 0u32;
            loop {
                black_box(f());
                runs += 1;
                let spent = cpu_seconds(origin) - t;
                if spent >= min_round {
                    break spent / f64::from(runs);
                }
            }
        })
        .fold(f64::MAX, f64::min)
}

fn rate(n: u64, secs: f64) -> f64 {
    n as f64 / secs
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // unoptimised: then a small run only proves it works.
    let full = std::env::args().any(|a| a == "--bench");
    let n: u64 = if full { 500_000 } else { 2_000 };
    let statements: Vec<String> = (0..n).map(insert).collect();
    let bytes: usize = statements.iter().map(String::len).sum();

    let (rounds, min_round) = if full { (5, 0.3) } else { (1, 0.02) };
    let def = ledger();
    let types: Vec<OracleType> = def.columns.iter().map(|(_, t, _)| t.clone()).collect();

    // Baseline: find the terminator in every statement.
    let scan = best(rounds, min_round, || {
        statements
            .iter()
            .map(|s| memchr::memchr(b';', s.as_bytes()).unwrap_or(0))
            .sum()
    });
    let parse = best(rounds, min_round, || {
        statements
            .iter()
            .map(|s| {
                parse_redo(s)
                    .expect("generated statements parse")
                    .values
                    .len()
            })
            .sum()
    });
    let convert = best(rounds, min_round, || {
        let mut typed = 0;
        for s in &statements {
            let st = parse_redo(s).expect("generated statements parse");
            for (_, lit) in &st.values {
                typed += usize::from(black_box(to_value(lit, None)).is_ok());
            }
        }
        typed
    });
    let dictionary = best(rounds, min_round, || {
        let mut typed = 0;
        for s in &statements {
            let st = parse_redo(s).expect("generated statements parse");
            for ((_, lit), ty) in st.values.iter().zip(&types) {
                typed += usize::from(black_box(to_value(lit, Some(ty))).is_ok());
            }
        }
        typed
    });
    // The source's own step per row: a ContentRow to a ChangeEvent.
    let rows: Vec<ContentRow> = statements.iter().cloned().map(content_row).collect();
    let position = Position::Oracle {
        scn: 1000,
        commit_scn: 1001,
        thread: 1,
        resume_scn: 1000,
        committed: BTreeMap::new(),
        xid: "0A001B00C4010000".into(),
        index: 0,
    };
    let txn = Transaction {
        id: "0A001B00C4010000".into(),
        commit_time: None,
    };
    let mut builder = EventBuilder::new("bench");
    builder.define(def, false);
    let events_time = best(rounds, min_round, || {
        rows.iter()
            .map(|r| {
                let e = builder
                    .dml(r, position.clone(), &txn)
                    .expect("generated rows convert");
                black_box(e).after.map_or(0, |a| a.len())
            })
            .sum()
    });

    println!(
        "SQL_REDO, {n} ten-column inserts ({:.0} bytes each), one core, CPU time, best of {rounds}:",
        bytes as f64 / n as f64
    );
    let line = |what: &str, secs: f64| {
        println!(
            "  {what:<44} {:>10.0} statements/s  ({:.2}x the scan's time)",
            rate(n, secs),
            secs / scan
        );
    };
    println!(
        "  {:<44} {:>10.0} statements/s",
        "memchr scan for `;` (baseline)",
        rate(n, scan)
    );
    line("parse_redo", parse);
    line("parse_redo + to_value (by literal)", convert);
    line("parse_redo + to_value (dictionary types)", dictionary);
    line("EventBuilder::dml (the source's step)", events_time);

    // Replay end to end: 50,000 transactions of START, 3 inserts, COMMIT.
    let dir = std::env::temp_dir().join(format!("syncmesh-oracle-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let csv_path = dir.join("contents.csv");
    let json_path = dir.join("contents.jsonl");
    let mut csv = csv::Writer::from_path(&csv_path).expect("csv");
    let mut json = std::io::BufWriter::new(std::fs::File::create(&json_path).expect("json"));
    let header = [
        "SCN",
        "TIMESTAMP",
        "XID",
        "OPERATION_CODE",
        "SQL_REDO",
        "CSF",
        "ROLLBACK",
        "RS_ID",
        "SSN",
        "ROW_ID",
        "SEG_OWNER",
        "TABLE_NAME",
        "THREAD#",
    ];
    csv.write_record(header).expect("csv");
    let mut scn = 1000u64;
    let mut rows = 0u64;
    let txns: u64 = if full { 50_000 } else { 200 };
    for t in 0..txns {
        let xid = format!("{:016X}", t + 1);
        let mut row = |op: &str, sql: &str, scn: u64| {
            let scn_s = scn.to_string();
            let fields = [
                scn_s.as_str(),
                "2024-03-01 09:00:00",
                xid.as_str(),
                op,
                sql,
                "0",
                "0",
                " 0x0000a1.00000123.0010 ",
                "0",
                "AAAR3sAAEAAAACXAAA",
                "BANK",
                "LEDGER",
                "1",
            ];
            csv.write_record(fields).expect("csv");
            let obj: serde_json::Map<String, serde_json::Value> = header
                .iter()
                .zip(fields)
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
                .collect();
            serde_json::to_writer(&mut json, &obj).expect("json");
            json.write_all(b"\n").expect("json");
        };
        row("6", "", scn);
        for k in 0..3 {
            scn += 1;
            row("1", &insert(t * 3 + k), scn);
        }
        scn += 1;
        row("7", "", scn);
        scn += 1;
        rows += 5;
    }
    csv.flush().expect("csv");
    json.flush().expect("json");
    drop(json);

    let baseline = best(rounds, min_round, || {
        let text = std::fs::read_to_string(&json_path).expect("json");
        let mut parsed = 0usize;
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            parsed += v.as_object().map_or(0, |o| o.len());
        }
        parsed
    });

    let mut events = 0u64;
    let mut report = None;
    let replay = best(rounds, min_round, || {
        events = 0;
        let r = replay_csv(&csv_path, BufferConfig::default(), |_| events += 1).expect("replay");
        report = Some(r.events);
        0
    });
    let report_events = report.unwrap_or_default();
    assert_eq!(report_events, txns * 3);
    println!(
        "Replay, {rows} V$LOGMNR_CONTENTS rows ({txns} transactions, {} events):",
        txns * 3
    );
    println!(
        "  serde_json of the same rows as JSON lines (baseline): {:>10.0} rows/s",
        rate(rows, baseline)
    );
    println!(
        "  logminer replay (CSV -> buffer -> typed events):      {:>10.0} rows/s, {:.0} events/s  ({:.2}x the baseline's time)",
        rate(rows, replay),
        rate(events, replay),
        replay / baseline
    );
    let _ = std::fs::remove_dir_all(&dir);
}
