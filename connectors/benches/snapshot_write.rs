//! Snapshot write throughput: Parquet (typed columns, zstd) against Debezium JSON lines, on
//! the same events, in the same run.
//!
//! ```text
//! cargo bench -p syncmesh-connectors --bench snapshot_write
//! SYNCMESH_BENCH_ROWS=2000000 cargo bench -p syncmesh-connectors --bench snapshot_write
//! ```
//!
//! It generates `SYNCMESH_BENCH_ROWS` change events (default 500,000; 5,000 when run by
//! `cargo test` without `--bench`) of a ledger-like table (integer key, text, two decimals, a
//! date, a timestamp, a flag), then commits them as snapshots of `SYNCMESH_BENCH_BATCH` events
//! (default 50,000, the default `maxEvents`) through `SnapshotWriter` into a temporary
//! directory, once per format: encoding, hashing, writing the files and the manifest. Each pass
//! prints rows/s, MB/s of data files written and MB/s of row data (the events' approximate
//! size, the same for both), and the Parquet figures as ratios of the JSONL ones. A third pass
//! reads the Parquet snapshots back and checks every event survived.

use chrono::{DateTime, NaiveDate, Utc};
use std::sync::Arc;
use std::time::{Duration, Instant};
use syncmesh_connectors::event::{
    ChangeEvent, Column, ColumnType, Decimal, Operation, Position, TableId, TableSchema,
    Transaction, Value,
};
use syncmesh_connectors::paths::batch::{SnapshotFormat, SnapshotWriter};
use syncmesh_connectors::paths::store::open_store;

/// xorshift64*: reproducible data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn schema() -> Arc<TableSchema> {
    let col = |name: &str, column_type| Column {
        name: name.into(),
        column_type,
        nullable: true,
    };
    Arc::new(TableSchema {
        table: TableId::new("bank", "ledger"),
        version: 1,
        columns: vec![
            col("account_id", ColumnType::Int),
            col(
                "customer",
                ColumnType::String {
                    max_length: Some(30),
                },
            ),
            col(
                "branch",
                ColumnType::String {
                    max_length: Some(4),
                },
            ),
            col(
                "balance",
                ColumnType::Decimal {
                    precision: 15,
                    scale: 2,
                },
            ),
            col(
                "amount",
                ColumnType::Decimal {
                    precision: 11,
                    scale: 2,
                },
            ),
            col("txn_date", ColumnType::Date),
            col("updated_at", ColumnType::Timestamp),
            col("active", ColumnType::Bool),
        ],
        primary_key: vec![0],
    })
}

fn events(n: usize) -> Vec<Arc<ChangeEvent>> {
    let schema = schema();
    let source: Arc<str> = Arc::from("ledger");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let names = [
        "ALICE SMITH",
        "BOB JONES",
        "CAROL WHITE",
        "DAN BROWN",
        "ERIN BLACK",
    ];
    let day0 = NaiveDate::from_ymd_opt(2020, 1, 1).unwrap_or_default();
    let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
    (0..n)
        .map(|i| {
            let r = rng.next();
            let row = vec![
                Value::Int(1_000_000 + (r % 200_000) as i64),
                Value::String(format!("{} {}", names[(r % 5) as usize], r % 997)),
                Value::String(format!("B{:03}", r % 50)),
                Value::Decimal(Decimal::new(
                    (r % 10_000_000_000) as i128 - 5_000_000_000,
                    2,
                )),
                Value::Decimal(Decimal::new((r % 1_000_000) as i128, 2)),
                Value::Date(day0 + chrono::Duration::days((r % 2000) as i64)),
                Value::Timestamp((t0 + chrono::Duration::milliseconds(i as i64 * 7)).naive_utc()),
                Value::Bool(r.is_multiple_of(3)),
            ];
            Arc::new(ChangeEvent {
                source: source.clone(),
                position: Position::File {
                    file: "ledger-0001.dat".into(),
                    offset: i as u64 * 100,
                    length: 100,
                    record: i as u64 + 1,
                },
                transaction: Some(Transaction {
                    id: format!("tx{}", i / 10),
                    commit_time: Some(t0 + chrono::Duration::milliseconds(i as i64)),
                }),
                schema: schema.clone(),
                op: if i.is_multiple_of(4) {
                    Operation::Insert
                } else {
                    Operation::Update
                },
                before: None,
                after: Some(row),
                ddl: None,
            })
        })
        .collect()
}

struct Pass {
    elapsed: Duration,
    file_bytes: u64,
}

async fn write(
    format: SnapshotFormat,
    events: &[Arc<ChangeEvent>],
    batch: usize,
) -> anyhow::Result<(Pass, SnapshotWriter, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let store = open_store(&dir.path().display().to_string(), dir.path(), None)?;
    let writer = SnapshotWriter::new(store).with_format(format);
    let table = TableId::new("bank", "ledger");
    let started = Instant::now();
    let mut file_bytes = 0;
    for chunk in events.chunks(batch) {
        file_bytes += writer.commit(&table, chunk).await?.bytes;
    }
    let pass = Pass {
        elapsed: started.elapsed(),
        file_bytes,
    };
    Ok((pass, writer, dir))
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rows = env("SYNCMESH_BENCH_ROWS", if full { 500_000 } else { 5_000 });
    let batch = env("SYNCMESH_BENCH_BATCH", 50_000).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let events = events(rows);
    let row_mb = events.iter().map(|e| e.approx_size()).sum::<usize>() as f64 / 1e6;
    println!("snapshot_write: {rows} events in snapshots of {batch}, {row_mb:.1} MB of row data");
    rt.block_on(async {
        let (jsonl, _, _jd) = write(SnapshotFormat::Jsonl, &events, batch).await?;
        let (parquet, writer, _pd) = write(SnapshotFormat::Parquet, &events, batch).await?;
        let report = |name: &str, p: &Pass| {
            let s = p.elapsed.as_secs_f64();
            println!(
                "  {name:<8} {:>10.0} rows/s  {:>8.1} MB/s of files  {:>8.1} MB/s of row data  files {:>8.1} MB  ({:.2} s)",
                rows as f64 / s,
                p.file_bytes as f64 / 1e6 / s,
                row_mb / s,
                p.file_bytes as f64 / 1e6,
                s
            );
        };
        report("jsonl", &jsonl);
        report("parquet", &parquet);
        println!(
            "  parquet/jsonl: throughput {:.2}x (rows/s), file size {:.2}x",
            jsonl.elapsed.as_secs_f64() / parquet.elapsed.as_secs_f64(),
            parquet.file_bytes as f64 / jsonl.file_bytes as f64
        );
        // Read back: every event survives the round trip.
        let started = Instant::now();
        let mut back = 0usize;
        let mut i = 0usize;
        let table = TableId::new("bank", "ledger");
        for m in writer.table_manifests(&table).await? {
            for e in writer.read(&m).await? {
                anyhow::ensure!(e == *events[i], "event {i} differs after the round trip");
                i += 1;
                back += 1;
            }
        }
        anyhow::ensure!(back == rows, "read back {back} of {rows} events");
        println!(
            "  parquet read back: {:.0} rows/s, all {back} events equal",
            back as f64 / started.elapsed().as_secs_f64()
        );
        anyhow::Ok(())
    })
}
