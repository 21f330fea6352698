//! The router with in-memory sources and paths: every event is acknowledged and checkpointed,
//! a failing path ends the run with its error instead of hanging a blocked source, and a
//! source's heartbeat is committed in order and reaches no path.

use super::*;
use crate::checkpoint::{CheckpointStore, FileCheckpointStore};
use crate::deadletter::FileDeadLetters;
use crate::decider::RuleSet;
use crate::event::ChangeEvent;
use crate::event::{Operation, Position, TableId, TableSchema};
use std::sync::Mutex;
use syncmesh_crds::PathName;
use tokio::sync::Notify;

/// Events at commit_ts 1..=`events` (after the resume point), then a heartbeat at
/// `heartbeat` if set.
struct Counting {
    events: u64,
    heartbeat: Option<u64>,
}

#[async_trait::async_trait]
impl Source for Counting {
    fn name(&self) -> &str {
        "src"
    }

    async fn run(
        self: Box<Self>,
        resume: SourceProgress,
        mut out: Emitter,
        stop: StopSignal,
    ) -> Result<(), SourceError> {
        let schema = Arc::new(TableSchema {
            table: TableId::new("s", "t"),
            version: 1,
            columns: vec![],
            primary_key: vec![],
        });
        let start = match resume.position {
            Some(Position::Tidb { commit_ts, .. }) => commit_ts + 1,
            _ => 1,
        };
        for ts in start..=self.events {
            if stop.is_stopped() {
                break;
            }
            out.push(SourceItem::Event(ChangeEvent {
                source: "src".into(),
                position: Position::tidb(ts, 0),
                transaction: None,
                schema: schema.clone(),
                op: Operation::Insert,
                before: None,
                after: Some(vec![]),
                ddl: None,
            }))
            .await?;
        }
        if let Some(ts) = self.heartbeat {
            out.heartbeat(Position::tidb(ts, 0)).await?;
        }
        out.flush().await?;
        Ok(())
    }
}

/// Acknowledges every batch, or fails on the first one.
struct Recording {
    fail: bool,
}

#[async_trait::async_trait]
impl Path for Recording {
    async fn run(
        self: Box<Self>,
        mut events: mpsc::Receiver<Vec<Routed>>,
        acks: Acker,
    ) -> Result<(), PathError> {
        while let Some(batch) = events.recv().await {
            if self.fail {
                return Err("the sink refused the batch".into());
            }
            if let Some(last) = batch.last() {
                acks.ack(last.seq, batch.len() as u64);
            }
        }
        Ok(())
    }
}

fn runtime(dir: &std::path::Path, events: u64, fail: bool) -> Runtime {
    let source = Counting {
        events,
        heartbeat: None,
    };
    runtime_with(dir, source, Box::new(Recording { fail }))
}

fn runtime_with(dir: &std::path::Path, source: Counting, path: Box<dyn Path>) -> Runtime {
    let metrics = Arc::new(Metrics::new());
    let c = metrics.decisions.clone();
    let rules = RuleSet::compile(&[], &[PathName::Batch], |r| c.with_label_values(&["p", r]))
        .expect("rules");
    Runtime {
        pipeline: "p".into(),
        sources: vec![Box::new(source)],
        decider: Arc::new(Decider::new(rules)),
        paths: vec![None, Some(path)],
        checkpoint: Box::new(FileCheckpointStore::new(dir.join("cp"), "p")),
        dead_letters: Box::new(FileDeadLetters::new(dir.join("dl"))),
        metrics,
        counters: Arc::new(RunCounters::default()),
        channel_capacity: 2,
        checkpoint_interval: Duration::from_millis(10),
    }
}

#[tokio::test]
async fn every_event_is_acknowledged_and_checkpointed_and_a_rerun_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, stop) = StopSignal::new();
    let summary = runtime(dir.path(), 10_000, false)
        .run(tx, stop)
        .await
        .expect("run");
    assert_eq!(summary.events_read, 10_000);
    assert_eq!(summary.acknowledged.get("batch"), Some(&10_000));
    assert_eq!(
        summary.progress["src"].position,
        Some(Position::tidb(10_000, 0))
    );

    let (tx, stop) = StopSignal::new();
    let summary = runtime(dir.path(), 12_000, false)
        .run(tx, stop)
        .await
        .expect("rerun");
    assert_eq!(summary.events_read, 2_000, "resumed after the checkpoint");
}

#[tokio::test]
async fn a_failing_path_ends_the_run_without_hanging_the_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, stop) = StopSignal::new();
    // Far more events than the channels hold: the source is blocked when the path fails.
    let run = runtime(dir.path(), 100_000, true).run(tx, stop);
    let result = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends (no deadlock)");
    let err = result.expect_err("the path failed");
    assert!(
        err.to_string().contains("the sink refused the batch"),
        "{err}"
    );
    // Nothing was acknowledged, so nothing was committed.
    let cp = FileCheckpointStore::new(dir.path().join("cp"), "p")
        .load()
        .expect("load");
    assert!(cp.is_none_or(|c| c.sources["src"].position.is_none()));
}

/// Records what it receives and acknowledges only once released.
struct Held {
    seen: Arc<Mutex<Vec<Position>>>,
    release: Arc<Notify>,
}

#[async_trait::async_trait]
impl Path for Held {
    async fn run(
        self: Box<Self>,
        mut events: mpsc::Receiver<Vec<Routed>>,
        acks: Acker,
    ) -> Result<(), PathError> {
        while let Some(batch) = events.recv().await {
            self.seen
                .lock()
                .map_err(|e| e.to_string())?
                .extend(batch.iter().map(|r| r.event.position.clone()));
            if let Some(last) = batch.last() {
                self.release.notified().await;
                acks.ack(last.seq, batch.len() as u64);
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_heartbeat_commits_after_the_events_before_it_and_reaches_no_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let release = Arc::new(Notify::new());
    let source = Counting {
        events: 1,
        heartbeat: Some(5),
    };
    let path = Held {
        seen: seen.clone(),
        release: release.clone(),
    };
    let runtime = runtime_with(dir.path(), source, Box::new(path));
    let metrics = runtime.metrics.clone();
    let (tx, stop) = StopSignal::new();
    let run = tokio::spawn(runtime.run(tx, stop));
    // Both the event and the heartbeat are dispatched, and the event is not acknowledged:
    // the heartbeat is still pending behind it.
    let in_flight = metrics.in_flight.with_label_values(&["p"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while in_flight.get() != 2 {
        assert!(tokio::time::Instant::now() < deadline, "both dispatched");
        tokio::task::yield_now().await;
    }
    let saved = FileCheckpointStore::new(dir.path().join("cp"), "p")
        .load()
        .expect("load");
    assert!(saved.is_none_or(|c| c.sources.get("src").is_none_or(|s| s.position.is_none())));
    release.notify_one();
    let summary = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the run ends")
        .expect("joined")
        .expect("run");
    assert_eq!(summary.progress["src"].position, Some(Position::tidb(5, 0)));
    assert_eq!(summary.events_read, 1, "a heartbeat is not an event");
    assert_eq!(*seen.lock().unwrap(), vec![Position::tidb(1, 0)]);
    let saved = FileCheckpointStore::new(dir.path().join("cp"), "p")
        .load()
        .expect("load")
        .expect("saved");
    assert_eq!(saved.sources["src"].position, Some(Position::tidb(5, 0)));
}
