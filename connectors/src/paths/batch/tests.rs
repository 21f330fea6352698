//! Batch path tests on a real local object store (a temporary directory).

use super::*;
use crate::event::{Column, ColumnType, Decimal, Operation, TableSchema, Transaction, Value};
use crate::paths::store::{Store, open_store};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use tokio::sync::mpsc::UnboundedReceiver;

/// An acknowledgement: (last seq, events).
type Ack = (u64, u64);

fn store(dir: &std::path::Path) -> Store {
    open_store(&dir.display().to_string(), std::path::Path::new("/"), None).unwrap()
}

fn schema() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        table: TableId::new("bank", "accounts"),
        version: 1,
        columns: vec![
            Column {
                name: "id".into(),
                column_type: ColumnType::Int,
                nullable: false,
            },
            Column {
                name: "balance".into(),
                column_type: ColumnType::Decimal {
                    precision: 12,
                    scale: 2,
                },
                nullable: true,
            },
        ],
        primary_key: vec![0],
    })
}

/// Event number `n` of source `tidb`: `op` on key `id` with balance `n.00`.
fn event(n: u64, op: Operation, id: i64) -> Arc<ChangeEvent> {
    let row = vec![
        Value::Int(id),
        Value::Decimal(Decimal::new(i128::from(n) * 100, 2)),
    ];
    let (before, after) = match op {
        Operation::Delete => (Some(row), None),
        _ => (None, Some(row)),
    };
    Arc::new(ChangeEvent {
        source: Arc::from("tidb"),
        position: Position::tidb(1000 + n, 0),
        transaction: Some(Transaction {
            id: format!("t{n}"),
            commit_time: None,
        }),
        schema: schema(),
        op,
        before,
        after,
        ddl: None,
    })
}

fn table() -> TableId {
    TableId::new("bank", "accounts")
}

fn path(dir: &std::path::Path, max_events: usize, full: Option<&str>) -> BatchPath {
    BatchPath {
        pipeline: "p".into(),
        writer: SnapshotWriter::new(store(dir)),
        applier: None,
        max_events,
        max_bytes: usize::MAX,
        max_age: Duration::from_secs(3600),
        full_schedule: full.map(|c| c.parse().unwrap()),
        metrics: Arc::new(Metrics::new()),
        batch_metrics: BatchMetrics::unregistered(),
    }
}

/// A path running in a task: its event sender, its acks and the task.
type Running = (
    mpsc::Sender<Vec<Routed>>,
    UnboundedReceiver<Ack>,
    tokio::task::JoinHandle<Result<(), PathError>>,
);

fn start(path: BatchPath) -> Running {
    let (tx, rx) = mpsc::channel(16);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    // Named here so that the ack type (private to the runtime) is inferred from it.
    let acker = Acker::new(0, ack_tx);
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(a) = ack_rx.recv().await {
            let _ = out_tx.send((a.seq, a.events));
        }
    });
    let task = tokio::spawn(Box::new(path).run(rx, acker));
    (tx, out_rx, task)
}

fn routed(events: &[Arc<ChangeEvent>], first_seq: u64) -> Vec<Routed> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| Routed {
            seq: first_seq + i as u64,
            event: e.clone(),
        })
        .collect()
}

async fn all_rows(w: &SnapshotWriter, kind: SnapshotKind) -> Vec<ChangeEvent> {
    let mut out = Vec::new();
    for m in w.table_manifests(&table()).await.unwrap() {
        if m.kind == kind {
            out.extend(w.read(&m).await.unwrap());
        }
    }
    out
}

#[tokio::test]
async fn a_commit_writes_parquet_under_the_day_then_the_manifest_listing_it() {
    let dir = tempfile::tempdir().unwrap();
    let w = SnapshotWriter::new(store(dir.path()));
    let events: Vec<_> = (1..=5)
        .map(|n| event(n, Operation::Insert, n as i64))
        .collect();
    let m = w.commit(&table(), &events).await.unwrap();
    assert_eq!(
        (m.rows, m.kind, m.format.as_str()),
        (5, SnapshotKind::Micro, "parquet")
    );
    assert_eq!(m.files.len(), 1);
    let day = m.created_at.format("%Y-%m-%d").to_string();
    let file = &m.files[0];
    assert!(
        file.path
            .starts_with(&format!("bank.accounts/dt={day}/{}", m.snapshot_id))
            && file.path.ends_with(".parquet"),
        "{}",
        file.path
    );
    let data = std::fs::read(dir.path().join(&file.path)).unwrap();
    assert_eq!(data.len() as u64, file.bytes);
    assert_eq!(
        file.xxh3,
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&data))
    );
    assert_eq!(m.bytes, file.bytes);
    assert_eq!(m.positions.get("tidb"), Some(&Position::tidb(1005, 0)));
    let on_disk: SnapshotManifest = serde_json::from_slice(
        &std::fs::read(
            dir.path()
                .join(format!("bank.accounts/_manifests/{}.json", m.snapshot_id)),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk, m);
    let back = w.read(&m).await.unwrap();
    assert_eq!(
        back,
        events.iter().map(|e| (**e).clone()).collect::<Vec<_>>()
    );
    // Snapshot ids sort in commit order, even within one microsecond.
    let t = table();
    let ids: Vec<String> = futures::future::join_all((0..3).map(|_| w.commit(&t, &events[..1])))
        .await
        .into_iter()
        .map(|m| m.unwrap().snapshot_id)
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 3);
}

#[tokio::test]
async fn a_damaged_data_file_is_refused_by_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let w = SnapshotWriter::new(store(dir.path()));
    let m = w
        .commit(&table(), &[event(1, Operation::Insert, 1)])
        .await
        .unwrap();
    let p = dir.path().join(&m.files[0].path);
    let mut data = std::fs::read(&p).unwrap();
    let last = data.len() - 9;
    data[last] ^= 0xff;
    std::fs::write(&p, data).unwrap();
    let err = w.read(&m).await.unwrap_err().to_string();
    assert!(
        err.contains(&m.snapshot_id) && err.contains("xxh3"),
        "{err}"
    );
}

#[tokio::test]
async fn orphans_older_than_the_run_are_removed_and_committed_files_kept() {
    let dir = tempfile::tempdir().unwrap();
    let w = SnapshotWriter::new(store(dir.path()));
    let m = w
        .commit(&table(), &[event(1, Operation::Insert, 1)])
        .await
        .unwrap();
    let s = store(dir.path());
    let orphan = ObjectPath::from(
        "bank.accounts/dt=2026-01-01/20260101T000000000000Z-dead-part-0000.parquet",
    );
    s.store
        .put(&orphan, b"half a file".to_vec().into())
        .await
        .unwrap();
    let other = ObjectPath::from("bank.accounts/notes.txt");
    s.store
        .put(&other, b"not ours".to_vec().into())
        .await
        .unwrap();
    // Written before the run started: removed.
    let run_started = Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(w.remove_orphans(run_started).await.unwrap(), 1);
    assert!(!dir.path().join(orphan.as_ref()).exists());
    assert!(dir.path().join(other.as_ref()).exists(), "not a data file");
    assert!(dir.path().join(&m.files[0].path).exists(), "committed");
    assert_eq!(w.read(&m).await.unwrap().len(), 1);
    // Written during this run (a snapshot being committed right now): kept.
    s.store
        .put(&orphan, b"in progress".to_vec().into())
        .await
        .unwrap();
    let earlier = Utc::now() - chrono::Duration::seconds(60);
    assert_eq!(w.remove_orphans(earlier).await.unwrap(), 0);
    assert!(dir.path().join(orphan.as_ref()).exists());
}

#[tokio::test]
async fn a_full_snapshot_is_the_latest_row_per_key_and_builds_on_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let w = SnapshotWriter::new(store(dir.path()));
    let t = table();
    assert!(w.full_snapshot(&t).await.unwrap().is_none(), "nothing yet");
    let first: Vec<_> = [
        event(1, Operation::Insert, 1),
        event(2, Operation::Insert, 2),
        event(3, Operation::Insert, 3),
        event(4, Operation::Update, 1),
    ]
    .into();
    w.commit(&t, &first).await.unwrap();
    let second: Vec<_> = [
        event(5, Operation::Update, 2),
        event(6, Operation::Delete, 3),
        event(7, Operation::Insert, 4),
    ]
    .into();
    let m2 = w.commit(&t, &second).await.unwrap();
    let full = w.full_snapshot(&t).await.unwrap().unwrap();
    assert_eq!(full.kind, SnapshotKind::Full);
    assert_eq!(full.through.as_deref(), Some(m2.snapshot_id.as_str()));
    assert_eq!(full.compacted.len(), 2);
    let rows = all_rows(&w, SnapshotKind::Full).await;
    let got: Vec<(Value, Value, Operation, Position)> = rows
        .iter()
        .map(|e| {
            let r = e.after.clone().unwrap();
            (r[0].clone(), r[1].clone(), e.op, e.position.clone())
        })
        .collect();
    let want = |id: i64, n: u64| {
        (
            Value::Int(id),
            Value::Decimal(Decimal::new(i128::from(n) * 100, 2)),
            Operation::Read,
            Position::tidb(1000 + n, 0),
        )
    };
    assert_eq!(got, vec![want(1, 4), want(2, 5), want(4, 7)]);
    assert!(w.full_snapshot(&t).await.unwrap().is_none(), "nothing new");

    // The next one starts from this one and the micro-batches after it only.
    let third: Vec<_> = [
        event(8, Operation::Delete, 1),
        event(9, Operation::Insert, 5),
    ]
    .into();
    let m3 = w.commit(&t, &third).await.unwrap();
    let full2 = w.full_snapshot(&t).await.unwrap().unwrap();
    assert_eq!(
        full2.compacted,
        vec![full.snapshot_id.clone(), m3.snapshot_id]
    );
    let current = w.current_rows(&t).await.unwrap();
    let ids: Vec<&Value> = current
        .iter()
        .map(|e| &e.after.as_ref().unwrap()[0])
        .collect();
    assert_eq!(ids, [&Value::Int(2), &Value::Int(4), &Value::Int(5)]);
    assert_eq!(full2.rows, 3);
    // What a reader sees now equals the newest full snapshot.
    let newest = w.read(&full2).await.unwrap();
    assert_eq!(newest, current);
}

#[tokio::test]
async fn a_full_snapshot_of_a_table_whose_rows_were_all_deleted_is_empty_but_committed() {
    let dir = tempfile::tempdir().unwrap();
    let w = SnapshotWriter::new(store(dir.path()));
    let evs: Vec<_> = [
        event(1, Operation::Insert, 1),
        event(2, Operation::Delete, 1),
    ]
    .into();
    w.commit(&table(), &evs).await.unwrap();
    let full = w.full_snapshot(&table()).await.unwrap().unwrap();
    assert_eq!((full.rows, full.files.len()), (0, 0));
    assert!(w.current_rows(&table()).await.unwrap().is_empty());
}

async fn next_ack(acks: &mut UnboundedReceiver<Ack>) -> Ack {
    tokio::time::timeout(Duration::from_secs(30), acks.recv())
        .await
        .expect("an ack within 30 s")
        .expect("path alive")
}

#[tokio::test]
async fn micro_batches_are_cut_by_count_and_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut acks, task) = start(path(dir.path(), 3, None));
    let evs: Vec<_> = (1..=7)
        .map(|n| event(n, Operation::Insert, n as i64))
        .collect();
    tx.send(routed(&evs[..4], 1)).await.unwrap();
    let a = next_ack(&mut acks).await;
    assert_eq!(a, (4, 4), "4 pending >= 3: one snapshot");
    drop(tx);
    task.await.unwrap().unwrap();

    let mut by_bytes = path(dir.path(), usize::MAX, None);
    by_bytes.max_bytes = 3 * (evs[0].approx_size() + EVENT_OVERHEAD);
    let (tx, mut acks, task) = start(by_bytes);
    tx.send(routed(&evs[4..5], 5)).await.unwrap();
    tx.send(routed(&evs[5..7], 6)).await.unwrap();
    let a = next_ack(&mut acks).await;
    assert_eq!(a, (7, 3), "3 events reach max_bytes");
    drop(tx);
    task.await.unwrap().unwrap();
    let w = SnapshotWriter::new(store(dir.path()));
    assert_eq!(all_rows(&w, SnapshotKind::Micro).await.len(), 7);
}

#[tokio::test]
async fn replayed_events_already_committed_are_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let evs: Vec<_> = (1..=10)
        .map(|n| event(n, Operation::Insert, n as i64))
        .collect();
    let (tx, _acks, task) = start(path(dir.path(), 100, None));
    tx.send(routed(&evs[..6], 1)).await.unwrap();
    drop(tx);
    task.await.unwrap().unwrap();
    // A restart that replays from an older checkpoint: 4..=10.
    let p = path(dir.path(), 100, None);
    let skipped = p.batch_metrics.skipped.clone();
    let (tx, mut acks, task) = start(p);
    tx.send(routed(&evs[3..], 1)).await.unwrap();
    drop(tx);
    let a = next_ack(&mut acks).await;
    assert_eq!(a, (7, 7), "replayed events are acknowledged too");
    task.await.unwrap().unwrap();
    assert_eq!(skipped.with_label_values(&["p"]).get(), 3);
    let w = SnapshotWriter::new(store(dir.path()));
    let rows = all_rows(&w, SnapshotKind::Micro).await;
    let positions: Vec<Position> = rows.iter().map(|e| e.position.clone()).collect();
    let want: Vec<Position> = (1..=10).map(|n| Position::tidb(1000 + n, 0)).collect();
    assert_eq!(positions, want, "each event exactly once, in order");
}

#[tokio::test]
async fn the_scheduled_full_snapshot_runs_inside_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // Every second (croner takes an optional seconds field; manifests allow five fields only).
    let (tx, mut acks, task) = start(path(dir.path(), 1000, Some("* * * * * *")));
    let evs: Vec<_> = (1..=4)
        .map(|n| event(n, Operation::Insert, (n % 2) as i64))
        .collect();
    tx.send(routed(&evs, 1)).await.unwrap();
    // The schedule flushes what is pending first: the ack comes from the full snapshot's run.
    let a = next_ack(&mut acks).await;
    assert_eq!(a.0, 4);
    let w = SnapshotWriter::new(store(dir.path()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let full = loop {
        let fulls: Vec<_> = w
            .table_manifests(&table())
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.kind == SnapshotKind::Full)
            .collect();
        if let Some(f) = fulls.into_iter().next() {
            break f;
        }
        assert!(Instant::now() < deadline, "no full snapshot within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(full.rows, 2, "keys 0 and 1");
    drop(tx);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn jsonl_stays_available_and_is_not_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let w = SnapshotWriter::new(store(dir.path())).with_format(SnapshotFormat::Jsonl);
    let m = w
        .commit(&table(), &[event(1, Operation::Insert, 1)])
        .await
        .unwrap();
    assert_eq!(m.format, "debezium-json-lines");
    assert!(m.files[0].path.ends_with(".jsonl"));
    let line = std::fs::read_to_string(dir.path().join(&m.files[0].path)).unwrap();
    let j: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(j["after"]["balance"], "1.00", "{j}");
    assert!(matches!(
        w.read(&m).await,
        Err(SnapshotError::Unreadable { .. })
    ));
}

#[tokio::test]
async fn metrics_count_what_the_manifests_hold() {
    let dir = tempfile::tempdir().unwrap();
    let p = path(dir.path(), 3, Some("* * * * * *"));
    let (metrics, batch) = (p.metrics.clone(), p.batch_metrics.clone());
    let (tx, mut acks, task) = start(p);
    let evs: Vec<_> = (1..=5)
        .map(|n| event(n, Operation::Insert, n as i64))
        .collect();
    tx.send(routed(&evs, 1)).await.unwrap();
    assert_eq!(next_ack(&mut acks).await, (5, 5));
    let w = SnapshotWriter::new(store(dir.path()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while batch
        .full_snapshots
        .with_label_values(&["p", "bank.accounts"])
        .get()
        == 0
    {
        assert!(Instant::now() < deadline, "no full snapshot within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(tx);
    task.await.unwrap().unwrap();
    let manifests = w.table_manifests(&table()).await.unwrap();
    let micro: Vec<_> = manifests
        .iter()
        .filter(|m| m.kind == SnapshotKind::Micro)
        .collect();
    let labels = ["p", "bank.accounts"];
    assert_eq!(
        metrics.snapshots.with_label_values(&labels).get(),
        micro.len() as u64
    );
    assert_eq!(metrics.snapshot_rows.with_label_values(&labels).get(), 5);
    let bytes: u64 = micro.iter().flat_map(|m| &m.files).map(|f| f.bytes).sum();
    let on_disk: u64 = micro
        .iter()
        .flat_map(|m| &m.files)
        .map(|f| std::fs::metadata(dir.path().join(&f.path)).unwrap().len())
        .sum();
    assert_eq!(
        metrics.snapshot_bytes.with_label_values(&labels).get(),
        bytes
    );
    assert_eq!(bytes, on_disk, "the compressed Parquet bytes");
    assert_eq!(
        batch
            .files
            .with_label_values(&["p", "bank.accounts", "micro"])
            .get(),
        micro.len() as u64
    );
    let fulls = manifests.len() - micro.len();
    assert_eq!(
        batch.full_snapshots.with_label_values(&labels).get(),
        fulls as u64
    );
}
