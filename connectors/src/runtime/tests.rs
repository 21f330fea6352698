//! The router with in-memory sources and paths: every event is acknowledged and checkpointed,
//! and a failing path ends the run with its error instead of hanging a blocked source.

use super::*;
use crate::checkpoint::FileCheckpointStore;
use crate::deadletter::FileDeadLetters;
use crate::decider::RuleSet;
use crate::event::ChangeEvent;
use crate::event::{Operation, Position, TableId, TableSchema};
use syncmesh_crds::PathName;

struct Counting {
    events: u64,
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
    let metrics = Arc::new(Metrics::new());
    let c = metrics.decisions.clone();
    let rules = RuleSet::compile(&[], &[PathName::Batch], |r| c.with_label_values(&["p", r]))
        .expect("rules");
    Runtime {
        pipeline: "p".into(),
        sources: vec![Box::new(Counting { events })],
        decider: Arc::new(Decider::new(rules)),
        paths: vec![None, Some(Box::new(Recording { fail }))],
        checkpoint: Box::new(FileCheckpointStore::new(dir.join("cp"), "p")),
        dead_letters: Box::new(FileDeadLetters::new(dir.join("dl"))),
        metrics,
        counters: Arc::new(RunCounters::default()),
        channel_capacity: 2,
        checkpoint_interval: Duration::from_millis(50),
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
