//! SQL_REDO parsing and replay throughput, each with a baseline measured in the same run:
//!
//! - parse: typical 10-column inserts per second on one core, against a memchr scan of the
//!   same bytes for the statement terminator (the least any parser must do);
//! - typed: the same, with every literal converted to a value;
//! - replay: V$LOGMNR_CONTENTS rows (CSV export) to committed events per second, against
//!   serde_json parsing the same rows written as JSON lines.
//!
//! Run: `cargo bench -p syncmesh-connectors --bench oracle_redo`.

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;
use syncmesh_connectors::sources::oracle::buffer::BufferConfig;
use syncmesh_connectors::sources::oracle::replay::replay_csv;
use syncmesh_connectors::sources::oracle::sql_redo::parse_redo;
use syncmesh_connectors::sources::oracle::values::to_value;

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

    // Baseline: find the terminator in every statement.
    let t = Instant::now();
    let mut found = 0usize;
    for s in &statements {
        found += memchr::memchr(b';', s.as_bytes()).unwrap_or(0);
    }
    black_box(found);
    let scan = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut cols = 0usize;
    for s in &statements {
        let st = parse_redo(s).expect("generated statements parse");
        cols += st.values.len();
    }
    black_box(cols);
    let parse = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut typed = 0usize;
    for s in &statements {
        let st = parse_redo(s).expect("generated statements parse");
        for (_, lit) in &st.values {
            if to_value(lit, None).is_ok() {
                typed += 1;
            }
        }
    }
    black_box(typed);
    let convert = t.elapsed().as_secs_f64();

    println!(
        "SQL_REDO, {n} ten-column inserts ({:.0} bytes each), one core:",
        bytes as f64 / n as f64
    );
    println!(
        "  memchr scan for `;` (baseline): {:>12.0} statements/s",
        rate(n, scan)
    );
    println!(
        "  parse_redo:                     {:>12.0} statements/s  ({:.2}x the scan's time)",
        rate(n, parse),
        parse / scan
    );
    println!(
        "  parse_redo + to_value:          {:>12.0} statements/s  ({:.2}x the scan's time)",
        rate(n, convert),
        convert / scan
    );

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

    let t = Instant::now();
    let text = std::fs::read_to_string(&json_path).expect("json");
    let mut parsed = 0usize;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        parsed += v.as_object().map_or(0, |o| o.len());
    }
    black_box(parsed);
    let baseline = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut events = 0u64;
    let report = replay_csv(&csv_path, BufferConfig::default(), |_| events += 1).expect("replay");
    let replay = t.elapsed().as_secs_f64();
    assert_eq!(report.events, txns * 3);
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
