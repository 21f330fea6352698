//! `syncmesh worker` against the real API server (Kubernetes 1.20 from the test services): a
//! SyncPipeline with a flat-file source (the example ledger) and a SQLite sink is created, the
//! built binary runs it as a process, and the test watches what the worker writes back.
//!
//! Run: `tests/services/start.sh etcd kube-apiserver && source /tmp/syncmesh-services/env.sh &&
//! cargo test -p syncmesh --test worker` (skips without `SYNCMESH_KUBECONFIG`).

mod common;

use anyhow::{Context, anyhow, bail};
use common::{bin, ledger_fixture, ledger_manifest, repo_root};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use syncmesh_connectors::checkpoint::{CheckpointStore, FileCheckpointStore};
use syncmesh_connectors::event::{Position, Value};
use syncmesh_connectors::sources::flatfile::{DecodeOptions, Layout, RecordDecoder};
use syncmesh_crds::{SyncPipeline, SyncPipelineStatus, parse_manifest};
use syncmesh_tests::kube::{apply_syncpipeline_crd, client, create_namespace, delete_namespace};
use syncmesh_tests::services::Kube;
use syncmesh_tests::{poll_until, require, services};

const RECORD: usize = 100;
const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_runs_its_pipeline_writes_status_and_drains() -> anyhow::Result<()> {
    let kube = require!(services::kube());
    let client = client(&kube).await?;
    apply_syncpipeline_crd(&client).await?;
    let ns = create_namespace(&client, "worker").await?;
    let result = scenario(&kube, Api::namespaced(client.clone(), &ns), &ns).await;
    let cleanup = delete_namespace(&client, &ns).await;
    result?;
    cleanup
}

/// Compared with the sink itself: a check over applied rows must pass.
const CHECK: &str = r#"  check:
    sourceUrl: sqlite://out/sink.db
    schedule: "0 2 * * *"
    tables: [bank.ledger]
"#;

async fn scenario(kube: &Kube, api: Api<SyncPipeline>, ns: &str) -> anyhow::Result<()> {
    let dir = ledger_fixture(&["ledger-0001.dat"])?;
    let examples = repo_root().join("deploy/examples");
    let state = dir.path().join("state");
    let first = decodable(&examples.join("data/ledger-0001.dat"))?;
    let second = decodable(&examples.join("data/ledger-0002.dat"))?;

    let pipeline = parse_manifest(&(ledger_manifest("sqlite://out/sink.db") + CHECK))?;
    api.create(&PostParams::default(), &pipeline)
        .await
        .context("creating the SyncPipeline")?;

    // First run: everything in ledger-0001.dat, then SIGTERM.
    let mut worker = Worker::spawn(kube, ns, dir.path(), &state, &[])?;
    let status = wait_for_status(&api, "all of ledger-0001.dat", |s| {
        s.events_read == Some(first.records)
            && s.sources
                .first()
                .and_then(|src| src.position.as_deref())
                .is_some_and(|p| p.starts_with(&format!("ledger-0001.dat record {}", first.last)))
    })
    .await?;
    assert_eq!(status.sources.len(), 1, "{status:?}");
    assert_eq!(status.sources[0].name, "ledger");
    assert_eq!(status.sources[0].events_read, first.records);
    assert_eq!(status.breaker.as_deref(), Some("closed"), "{status:?}");
    assert_eq!(status.phase, None, "the worker never writes the phase");
    assert!(status.conditions.is_empty(), "nor conditions");
    let beat = heartbeat(&status)?;
    // The heartbeat keeps moving while nothing else changes.
    wait_for_status(&api, "a newer heartbeat", |s| {
        heartbeat(s).is_ok_and(|b| b > beat)
    })
    .await?;
    let managers = status_managers(&api).await?;
    assert!(
        managers.contains("syncmesh-worker"),
        "status applied by field manager syncmesh-worker: {managers:?}"
    );

    let metrics = http_get(worker.port, "/metrics")?;
    assert_eq!(metrics.0, 200);
    let series = format!(
        "syncmesh_source_events_total{{pipeline=\"ledger\",source=\"ledger\"}} {}",
        first.records
    );
    assert!(metrics.1.contains(&series), "{series} in /metrics");
    assert_eq!(http_get(worker.port, "/healthz")?.0, 200);
    assert_eq!(http_get(worker.port, "/readyz")?.0, 200);
    let db = dir.path().join("out/sink.db");
    poll_until(DEADLINE, "the sink to hold ledger-0001.dat", || {
        let db = db.clone();
        let want = first.ids.len() as i64;
        async move { Ok((sink_count(&db).await? == want).then_some(())) }
    })
    .await?;

    // An on-demand check through the annotation; its outcome reaches the status.
    api.patch(
        "ledger",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({
            "metadata": {"annotations": {"syncmesh.io/check-requested": "1"}}
        })),
    )
    .await?;
    let want = first.ids.len() as u64;
    let status = wait_for_status(&api, "a passed check of every row", |s| {
        s.last_check.as_deref() == Some("Passed")
            && s.checks.first().is_some_and(|c| c.source_rows == want)
    })
    .await?;
    let check = &status.checks[0];
    assert_eq!(check.table, "bank.ledger");
    assert_eq!(
        (check.sink_rows, check.missing, check.extra, check.different),
        (want, 0, 0, 0)
    );
    assert_eq!(check.consecutive_failures, 0);
    assert!(
        chrono::DateTime::parse_from_rfc3339(&check.finished_at).is_ok(),
        "{check:?}"
    );

    let exit = worker.terminate().await?;
    assert!(exit.success(), "SIGTERM drains and exits 0: {exit}");
    let checkpoint = FileCheckpointStore::new(state.join("checkpoint"), "ledger")
        .load()?
        .ok_or_else(|| anyhow!("no checkpoint after the drain"))?;
    match checkpoint
        .sources
        .get("ledger")
        .and_then(|p| p.position.as_ref())
    {
        Some(Position::File { file, record, .. }) => {
            assert_eq!((file.as_str(), *record), ("ledger-0001.dat", first.last));
        }
        other => bail!("checkpoint position {other:?}"),
    }

    // Second run: a new file arrives; the restart reads only it.
    std::fs::copy(
        examples.join("data/ledger-0002.dat"),
        dir.path().join("data/ledger-0002.dat"),
    )?;
    let mut worker = Worker::spawn(kube, ns, dir.path(), &state, &[])?;
    wait_for_status(&api, "only ledger-0002.dat read after the restart", |s| {
        s.events_read == Some(second.records)
            && s.sources
                .first()
                .and_then(|src| src.position.as_deref())
                .is_some_and(|p| p.starts_with(&format!("ledger-0002.dat record {}", second.last)))
    })
    .await?;
    let all: BTreeSet<i64> = first.ids.union(&second.ids).copied().collect();
    poll_until(DEADLINE, "the sink to hold both files", || {
        let db = db.clone();
        let want = all.len() as i64;
        async move { Ok((sink_count(&db).await? == want).then_some(())) }
    })
    .await?;

    // A routes-only change is applied by the running worker: no drain, no restart.
    api.patch(
        "ledger",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"routes": [
            {"name": "ledger-rows", "match": {"tables": ["bank.*"]}, "to": ["batch"]}
        ]}})),
    )
    .await?;
    let port = worker.port;
    poll_until(
        DEADLINE,
        "the worker to apply the new routes",
        || async move {
            let (_, metrics) = http_get(port, "/metrics")?;
            Ok(metrics
                .lines()
                .any(|l| {
                    l.starts_with("syncmesh_route_reloads_total{outcome=\"applied\"")
                        && l.ends_with(" 1")
                })
                .then_some(()))
        },
    )
    .await?;
    assert!(
        worker.child.try_wait()?.is_none(),
        "the worker keeps running after a routes change"
    );

    // A spec change: the worker drains and exits 0 by itself, for the rollout to restart it.
    api.patch(
        "ledger",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"batch": {"maxEvents": 5000}}})),
    )
    .await?;
    let exit = worker.wait(DEADLINE).await?;
    assert!(exit.success(), "a spec change drains and exits 0: {exit}");
    let status = api.get_status("ledger").await?.status.unwrap_or_default();
    assert_eq!(
        status.events_read,
        Some(second.records),
        "the final status counts only this run's reads: {status:?}"
    );
    assert_eq!(sink_count(&db).await?, all.len() as i64, "each row once");
    Ok(())
}

/// A drain that cannot finish: the sink table is locked by another session while the worker
/// holds unacknowledged events, so SIGTERM turns `/readyz` to 503 and, after `--drain-timeout`,
/// the worker exits 1 without moving its checkpoint. Unlocked, a restart writes every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_past_its_deadline_exits_non_zero_and_loses_nothing() -> anyhow::Result<()> {
    let kube = require!(services::kube());
    let mysql = require!(services::mysql());
    let client = client(&kube).await?;
    apply_syncpipeline_crd(&client).await?;
    let ns = create_namespace(&client, "worker-drain").await?;
    let scratch = syncmesh_tests::sql::MysqlScratch::create(&mysql.url, "worker_drain").await?;
    let result = stuck_drain(&kube, Api::namespaced(client.clone(), &ns), &ns, &scratch).await;
    let cleanup = delete_namespace(&client, &ns).await;
    scratch.drop_database().await?;
    result?;
    cleanup
}

async fn stuck_drain(
    kube: &Kube,
    api: Api<SyncPipeline>,
    ns: &str,
    scratch: &syncmesh_tests::sql::MysqlScratch,
) -> anyhow::Result<()> {
    let dir = ledger_fixture(&["ledger-0002.dat"])?;
    let examples = repo_root().join("deploy/examples");
    let state = dir.path().join("state");
    let small = decodable(&examples.join("data/ledger-0002.dat"))?;
    let big = decodable(&examples.join("data/ledger-0001.dat"))?;
    let manifest = ledger_manifest(&scratch.url);
    api.create(&PostParams::default(), &parse_manifest(&manifest)?)
        .await
        .context("creating the SyncPipeline")?;

    let mut worker = Worker::spawn(kube, ns, dir.path(), &state, &["--drain-timeout", "2s"])?;
    let want = small.ids.len() as i64;
    poll_until(
        DEADLINE,
        "the MariaDB sink to hold ledger-0002.dat",
        || async move { Ok((mysql_count(&scratch.pool).await? == Some(want)).then_some(())) },
    )
    .await?;
    // The checkpoint is saved just after the rows are applied: wait for it to cover the file.
    let store = FileCheckpointStore::new(state.join("checkpoint"), "ledger");
    let before = poll_until(
        DEADLINE,
        "the checkpoint at the end of ledger-0002.dat",
        || {
            let loaded = store.load();
            async move {
                let checkpoint = loaded?;
                let at_end = checkpoint
                    .as_ref()
                    .and_then(|c| c.sources.get("ledger"))
                    .and_then(|p| p.position.as_ref())
                    .is_some_and(|p| {
                        matches!(p, Position::File { file, record, .. }
                        if file == "ledger-0002.dat" && *record == small.last)
                    });
                Ok(at_end.then_some(checkpoint))
            }
        },
    )
    .await?;

    // Another session locks the table; the next file is read but cannot be applied.
    let mut lock = scratch.pool.acquire().await?;
    sqlx::query("LOCK TABLES ledger WRITE")
        .execute(&mut *lock)
        .await?;
    std::fs::copy(
        examples.join("data/ledger-0001.dat"),
        dir.path().join("data/ledger-0003.dat"),
    )?;
    wait_for_status(&api, "the next file being read", |s| {
        s.events_read > Some(small.records)
    })
    .await?;
    let sent = Command::new("kill")
        .args(["-TERM", &worker.child.id().to_string()])
        .status()?;
    anyhow::ensure!(sent.success(), "kill -TERM failed");
    let port = worker.port;
    poll_until(
        DEADLINE,
        "/readyz to turn 503 while draining",
        || async move {
            match http_get(port, "/readyz") {
                Ok((503, _)) => Ok(Some(())),
                Ok((code, _)) => Err(anyhow!("/readyz answered {code}")),
                Err(e) => Err(e),
            }
        },
    )
    .await?;
    let exit = worker.wait(DEADLINE).await?;
    assert_eq!(exit.code(), Some(1), "a drain past its deadline exits 1");
    let log = std::fs::read_to_string(&worker.log)?;
    assert!(
        log.contains("drain did not finish within --drain-timeout"),
        "the log says why: {log}"
    );
    let after = FileCheckpointStore::new(state.join("checkpoint"), "ledger").load()?;
    assert_eq!(
        before.map(|c| c.sources),
        after.map(|c| c.sources),
        "the checkpoint did not move past unapplied events"
    );

    sqlx::query("UNLOCK TABLES").execute(&mut *lock).await?;
    drop(lock);
    let mut worker = Worker::spawn(kube, ns, dir.path(), &state, &[])?;
    wait_for_status(&api, "the restart to read only ledger-0003.dat", |s| {
        s.events_read == Some(big.records)
    })
    .await?;
    let all = small.ids.union(&big.ids).count() as i64;
    poll_until(DEADLINE, "the sink to hold both files", || async move {
        Ok((mysql_count(&scratch.pool).await? == Some(all)).then_some(()))
    })
    .await?;
    let exit = worker.terminate().await?;
    assert!(exit.success(), "{exit}");
    Ok(())
}

/// The real-time path under the worker: every record is committed to Kafka with the positions.
/// The state directory is then lost (an `emptyDir` on a rescheduled pod): the restarted worker
/// reads the file again, and the path skips every event its positions topic says it already
/// committed, so the topic holds each record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_positions_outlive_the_state_directory() -> anyhow::Result<()> {
    let kube = require!(services::kube());
    let kafka = require!(services::kafka());
    let client = client(&kube).await?;
    apply_syncpipeline_crd(&client).await?;
    let ns = create_namespace(&client, "worker-kafka").await?;
    let result = realtime(
        &kube,
        &kafka.brokers,
        Api::namespaced(client.clone(), &ns),
        &ns,
    )
    .await;
    let cleanup = delete_namespace(&client, &ns).await;
    result?;
    cleanup
}

async fn realtime(
    kube: &Kube,
    brokers: &str,
    api: Api<SyncPipeline>,
    ns: &str,
) -> anyhow::Result<()> {
    let dir = ledger_fixture(&["ledger-0001.dat"])?;
    let examples = repo_root().join("deploy/examples");
    let state = dir.path().join("state");
    let file = decodable(&examples.join("data/ledger-0001.dat"))?;
    // Topics of this test's own: the broker keeps them between runs.
    let prefix = syncmesh_tests::unique_name("worker", '-', 40);
    let topic = format!("{prefix}.bank.ledger");
    let spec = ledger_manifest("SINK")
        .split("  defaultRoute:")
        .next()
        .unwrap_or_default()
        .to_string()
        + &format!(
            r#"  defaultRoute: [realtime]
  realtime:
    brokers: "{brokers}"
    topicTemplate: "{prefix}.{{schema}}.{{table}}"
    transactionalId: "{prefix}"
    positionsTopic: "{prefix}.positions"
    maxBatchEvents: 1500
"#
        );
    api.create(&PostParams::default(), &parse_manifest(&spec)?)
        .await
        .context("creating the SyncPipeline")?;
    let all_read = |s: &SyncPipelineStatus| {
        s.events_read == Some(file.records)
            && s.sources
                .first()
                .and_then(|src| src.position.as_deref())
                .is_some_and(|p| p.starts_with(&format!("ledger-0001.dat record {}", file.last)))
    };

    let mut worker = Worker::spawn(kube, ns, dir.path(), &state, &[])?;
    wait_for_status(&api, "every record committed to Kafka", all_read).await?;
    let exit = worker.terminate().await?;
    assert!(exit.success(), "{exit}");
    let records = syncmesh_tests::committed_records(brokers, &topic, 0).await?;
    assert_eq!(records.len() as u64, file.records, "each record once");

    std::fs::remove_dir_all(&state)?;
    let mut worker = Worker::spawn(kube, ns, dir.path(), &state, &[])?;
    // The status still shows the first run until the new worker writes: watch its metrics.
    let port = worker.port;
    let series = [
        format!(
            "syncmesh_source_events_total{{pipeline=\"ledger\",source=\"ledger\"}} {}",
            file.records
        ),
        format!(
            "syncmesh_kafka_replayed_events_skipped_total{{pipeline=\"ledger\"}} {}",
            file.records
        ),
    ];
    let series = &series;
    poll_until(
        DEADLINE,
        "the file read again and every event skipped",
        || async move {
            let (_, metrics) = http_get(port, "/metrics")?;
            match series.iter().find(|s| !metrics.contains(s.as_str())) {
                None => Ok(Some(())),
                Some(missing) => Err(anyhow!("no `{missing}` yet")),
            }
        },
    )
    .await?;
    let exit = worker.terminate().await?;
    assert!(exit.success(), "{exit}");
    let status = api.get_status("ledger").await?.status.unwrap_or_default();
    assert!(
        all_read(&status),
        "the final status of the restart: {status:?}"
    );
    let records = syncmesh_tests::committed_records(brokers, &topic, 0).await?;
    assert_eq!(
        records.len() as u64,
        file.records,
        "nothing produced twice after the restart"
    );
    Ok(())
}

/// The drain flushes what is still buffered: a batch that neither its size nor its age would
/// close for an hour is committed as a snapshot and applied to the sink on SIGTERM, and the
/// checkpoint moves past it before the worker exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_the_open_snapshot() -> anyhow::Result<()> {
    let kube = require!(services::kube());
    let client = client(&kube).await?;
    apply_syncpipeline_crd(&client).await?;
    let ns = create_namespace(&client, "worker-flush").await?;
    let result = open_snapshot(&kube, Api::namespaced(client.clone(), &ns), &ns).await;
    let cleanup = delete_namespace(&client, &ns).await;
    result?;
    cleanup
}

async fn open_snapshot(kube: &Kube, api: Api<SyncPipeline>, ns: &str) -> anyhow::Result<()> {
    let dir = ledger_fixture(&["ledger-0002.dat"])?;
    let examples = repo_root().join("deploy/examples");
    let file = decodable(&examples.join("data/ledger-0002.dat"))?;
    let spec = ledger_manifest("sqlite://out/sink.db")
        .replace("maxEvents: 4000", "maxEvents: 100000")
        .replace("maxAgeSeconds: 1", "maxAgeSeconds: 3600");
    api.create(&PostParams::default(), &parse_manifest(&spec)?)
        .await
        .context("creating the SyncPipeline")?;
    let state = dir.path().join("state");
    let mut worker = Worker::spawn(kube, ns, dir.path(), &state, &[])?;
    let status = wait_for_status(&api, "the file read", |s| {
        s.events_read == Some(file.records)
    })
    .await?;
    assert_eq!(
        status.sources[0].position, None,
        "nothing acknowledged while the batch is open"
    );
    let manifests = dir.path().join("out/snapshots/bank.ledger/_manifests");
    let committed = |dir: &Path| std::fs::read_dir(dir).map_or(0, |d| d.count());
    assert_eq!(committed(&manifests), 0, "no snapshot committed yet");

    let exit = worker.terminate().await?;
    assert!(exit.success(), "{exit}");
    assert_eq!(committed(&manifests), 1, "the drain committed the snapshot");
    let db = dir.path().join("out/sink.db");
    assert_eq!(sink_count(&db).await?, file.ids.len() as i64);
    let checkpoint = FileCheckpointStore::new(state.join("checkpoint"), "ledger")
        .load()?
        .ok_or_else(|| anyhow!("no checkpoint after the drain"))?;
    match checkpoint
        .sources
        .get("ledger")
        .and_then(|p| p.position.as_ref())
    {
        Some(Position::File {
            file: f, record, ..
        }) => {
            assert_eq!((f.as_str(), *record), ("ledger-0002.dat", file.last));
        }
        other => bail!("checkpoint position {other:?}"),
    }
    let status = api.get_status("ledger").await?.status.unwrap_or_default();
    assert!(
        status.sources[0]
            .position
            .as_deref()
            .is_some_and(|p| p.starts_with(&format!("ledger-0002.dat record {}", file.last))),
        "the final status shows the position the drain saved: {status:?}"
    );
    Ok(())
}

/// Checks that keep failing trip the sink table's breaker, and the status shows both: each
/// check's counts and failures in a row, then the breaker open with its shadow table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_checks_and_the_open_breaker_reach_the_status() -> anyhow::Result<()> {
    let kube = require!(services::kube());
    let client = client(&kube).await?;
    apply_syncpipeline_crd(&client).await?;
    let ns = create_namespace(&client, "worker-breaker").await?;
    let result = failing_checks(&kube, Api::namespaced(client.clone(), &ns), &ns).await;
    let cleanup = delete_namespace(&client, &ns).await;
    result?;
    cleanup
}

async fn failing_checks(kube: &Kube, api: Api<SyncPipeline>, ns: &str) -> anyhow::Result<()> {
    let dir = ledger_fixture(&["ledger-0002.dat"])?;
    let examples = repo_root().join("deploy/examples");
    let file = decodable(&examples.join("data/ledger-0002.dat"))?;
    let spec = ledger_manifest("sqlite://out/sink.db")
        + &CHECK.replace("sqlite://out/sink.db", "sqlite://out/source.db");
    api.create(&PostParams::default(), &parse_manifest(&spec)?)
        .await
        .context("creating the SyncPipeline")?;
    let mut worker = Worker::spawn(kube, ns, dir.path(), &dir.path().join("state"), &[])?;
    let db = dir.path().join("out/sink.db");
    let want = file.ids.len() as i64;
    poll_until(DEADLINE, "the sink to hold ledger-0002.dat", || {
        let db = db.clone();
        async move { Ok((sink_count(&db).await? == want).then_some(())) }
    })
    .await?;

    // The "source" the checker compares with: the sink's rows, one in ten deleted.
    let source = dir.path().join("out/source.db");
    let extra = {
        use sqlx::sqlite::SqlitePoolOptions;
        let sink = SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&format!("sqlite://{}?mode=ro", db.display()))
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "VACUUM INTO '{}'",
            source.display()
        )))
        .execute(&sink)
        .await?;
        sink.close().await;
        let src = SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&format!("sqlite://{}", source.display()))
            .await?;
        let deleted = sqlx::query("DELETE FROM ledger WHERE rowid % 10 = 0")
            .execute(&src)
            .await?
            .rows_affected();
        src.close().await;
        deleted
    };
    anyhow::ensure!(extra > 0, "rows deleted from the check's source");

    for n in 1..=3u32 {
        api.patch(
            "ledger",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {"syncmesh.io/check-requested": n.to_string()}}
            })),
        )
        .await?;
        let status = wait_for_status(&api, &format!("failed check {n}"), |s| {
            s.checks
                .first()
                .is_some_and(|c| c.result == "Failed" && c.consecutive_failures == n)
        })
        .await?;
        let check = &status.checks[0];
        assert_eq!(status.last_check.as_deref(), Some("Failed"));
        assert_eq!(
            (check.extra, check.missing, check.different),
            (extra, 0, 0),
            "{check:?}"
        );
        assert!(check.diff_ratio > 0.0, "{check:?}");
    }
    let status = wait_for_status(&api, "the breaker open", |s| {
        s.breaker.as_deref() == Some("open (1/1)")
    })
    .await?;
    let table = &status.sink_tables[0];
    assert_eq!(table.breaker, "open", "{table:?}");
    assert_eq!(table.failed_checks, 3, "{table:?}");
    assert!(table.shadow.is_some(), "{table:?}");
    assert!(table.since.is_some() && table.reason.is_some(), "{table:?}");
    let exit = worker.terminate().await?;
    assert!(exit.success(), "{exit}");
    Ok(())
}

/// Bad input ends the worker with exit 2 and a message naming the pipeline and the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_naming_the_field() -> anyhow::Result<()> {
    let kube = require!(services::kube());
    let client = client(&kube).await?;
    apply_syncpipeline_crd(&client).await?;
    let ns = create_namespace(&client, "worker-bad").await?;
    let result = bad_input(&kube, Api::namespaced(client.clone(), &ns), &ns).await;
    let cleanup = delete_namespace(&client, &ns).await;
    result?;
    cleanup
}

async fn bad_input(kube: &Kube, api: Api<SyncPipeline>, ns: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let run = |pipeline: String| {
        let kubeconfig = kube.kubeconfig.clone();
        let base = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            Command::new(bin())
                .args([
                    "worker",
                    "--pipeline",
                    &pipeline,
                    "--metrics-addr",
                    "127.0.0.1:0",
                ])
                .arg("--base-dir")
                .arg(&base)
                .arg("--state-dir")
                .arg(base.join("state"))
                .env("KUBECONFIG", kubeconfig)
                .env("RUST_LOG", "warn")
                .output()
        })
    };

    let out = run(format!("{ns}/absent")).await??;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("SyncPipeline {ns}/absent not found")),
        "{err}"
    );

    // Accepted by the API server's schema, refused by the semantic validation.
    let mut twice = parse_manifest(&ledger_manifest("sqlite://out/sink.db"))?;
    let again = twice.spec.sources[0].clone();
    twice.spec.sources.push(again);
    api.create(&PostParams::default(), &twice)
        .await
        .context("creating the SyncPipeline")?;
    let out = run(format!("{ns}/ledger")).await??;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("SyncPipeline {ns}/ledger is invalid"))
            && err.contains("spec.sources[1].name: duplicate source name `ledger`"),
        "{err}"
    );

    let out = run(ns.to_string()).await??;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected NAMESPACE/NAME"));
    Ok(())
}

/// A TiDB changefeed source under the worker: canal-json changes committed five seconds ago are
/// read, produced to Kafka, and the status shows the source's commit-TS position and its lag
/// (source commit to acknowledgement), which flat files do not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changefeed_source_reports_its_position_and_lag() -> anyhow::Result<()> {
    let kube = require!(services::kube());
    let kafka = require!(services::kafka());
    let client = client(&kube).await?;
    apply_syncpipeline_crd(&client).await?;
    let ns = create_namespace(&client, "worker-tidb").await?;
    let result = changefeed(
        &kube,
        &kafka.brokers,
        Api::namespaced(client.clone(), &ns),
        &ns,
    )
    .await;
    let cleanup = delete_namespace(&client, &ns).await;
    result?;
    cleanup
}

async fn changefeed(
    kube: &Kube,
    brokers: &str,
    api: Api<SyncPipeline>,
    ns: &str,
) -> anyhow::Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let prefix = syncmesh_tests::unique_name("worker-tidb", '-', 40);
    let input = format!("{prefix}.ticdc");
    syncmesh_tests::kafka::create_topic(brokers, &input, 1).await?;
    // Commit timestamps (TSO: milliseconds above 18 logical bits) five seconds in the past.
    let committed_ms = chrono::Utc::now().timestamp_millis() as u64 - 5_000;
    let rows = 20u64;
    let mut messages = Vec::new();
    for i in 0..rows {
        let ts = (committed_ms + i) << 18;
        messages.push(serde_json::json!({
            "id": 0, "database": "shop", "table": "orders", "pkNames": ["id"], "isDdl": false,
            "type": "INSERT", "es": committed_ms + i, "ts": committed_ms + i + 5, "sql": "",
            "sqlType": {"id": 4, "name": 12}, "mysqlType": {"id": "int", "name": "varchar"},
            "data": [{"id": (i + 1).to_string(), "name": format!("order {i}")}],
            "old": null, "_tidb": {"commitTs": ts}
        }));
    }
    let last_ts = (committed_ms + rows - 1) << 18;
    messages.push(serde_json::json!({
        "id": 0, "database": "", "table": "", "pkNames": null, "isDdl": false,
        "type": "TIDB_WATERMARK", "es": committed_ms + rows, "ts": committed_ms + rows,
        "sql": "", "sqlType": null, "mysqlType": null, "data": null, "old": null,
        "_tidb": {"watermarkTs": (committed_ms + rows) << 18}
    }));
    let producer: FutureProducer =
        syncmesh_tests::kafka::producer_config(brokers, None).create()?;
    for m in &messages {
        let payload = serde_json::to_vec(m)?;
        producer
            .send(
                FutureRecord::<(), _>::to(&input)
                    .partition(0)
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| anyhow!("produce: {e}"))?;
    }

    let spec = format!(
        r#"
apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata:
  name: ledger
spec:
  sources:
    - name: shop
      tidb:
        brokers: "{brokers}"
        topics: ["{input}"]
        protocol: canal-json
        tables: ["shop.*"]
  defaultRoute: [realtime]
  realtime:
    brokers: "{brokers}"
    topicTemplate: "{prefix}.{{schema}}.{{table}}"
    transactionalId: "{prefix}"
    positionsTopic: "{prefix}.positions"
"#
    );
    api.create(&PostParams::default(), &parse_manifest(&spec)?)
        .await
        .context("creating the SyncPipeline")?;
    let dir = tempfile::tempdir()?;
    let mut worker = Worker::spawn(kube, ns, dir.path(), &dir.path().join("state"), &[])?;
    let status = wait_for_status(&api, "every change acknowledged", |s| {
        s.events_read == Some(rows)
            && s.sources.first().is_some_and(|src| {
                src.position.as_deref() == Some(&format!("commit-ts {last_ts} #0"))
                    && src.lag.is_some()
            })
    })
    .await?;
    let lag = status.sources[0].lag.clone().unwrap_or_default();
    assert_eq!(
        status.lag.as_deref(),
        Some(lag.as_str()),
        "one source: its lag is the pipeline's"
    );
    assert!(
        lag.ends_with('s') && !lag.ends_with("ms"),
        "changes committed 5 s before they were read lag by seconds: {lag}"
    );
    let (_, metrics) = http_get(worker.port, "/metrics")?;
    let gauge = metrics
        .lines()
        .find(|l| l.starts_with("syncmesh_source_lag_seconds{") && l.contains("source=\"shop\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no lag gauge for source shop"))?;
    assert!(gauge >= 5.0, "lag {gauge} s for changes committed 5 s ago");
    let out =
        syncmesh_tests::committed_records(brokers, &format!("{prefix}.shop.orders"), 0).await?;
    assert_eq!(out.len() as u64, rows);
    let exit = worker.terminate().await?;
    assert!(exit.success(), "{exit}");
    Ok(())
}

/// Rows in the MariaDB sink table; `None` before the worker created it.
async fn mysql_count(pool: &sqlx::MySqlPool) -> anyhow::Result<Option<i64>> {
    match sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM ledger")
        .fetch_one(pool)
        .await
    {
        Ok(n) => Ok(Some(n)),
        Err(sqlx::Error::Database(e)) if e.message().contains("doesn't exist") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The records of a data file that decode, its last record number and its distinct keys.
struct Expected {
    records: u64,
    last: u64,
    ids: BTreeSet<i64>,
}

fn decodable(file: &Path) -> anyhow::Result<Expected> {
    let layout = Layout::load(repo_root().join("deploy/examples/ledger.cpy"))?;
    let decoder = RecordDecoder::new(&layout, DecodeOptions::default())?;
    let bytes = std::fs::read(file)?;
    let mut out = Expected {
        records: 0,
        last: (bytes.len() / RECORD) as u64,
        ids: BTreeSet::new(),
    };
    for rec in bytes.chunks(RECORD) {
        if let Ok(values) = decoder.decode(rec) {
            out.records += 1;
            if let Value::Int(id) = values[0] {
                out.ids.insert(id);
            }
        }
    }
    Ok(out)
}

async fn wait_for_status(
    api: &Api<SyncPipeline>,
    what: &str,
    done: impl Fn(&SyncPipelineStatus) -> bool,
) -> anyhow::Result<SyncPipelineStatus> {
    let done = &done;
    poll_until(DEADLINE, &format!("status: {what}"), || async move {
        let status = api.get_status("ledger").await?.status.unwrap_or_default();
        if done(&status) {
            Ok(Some(status))
        } else {
            Err(anyhow!("{}", serde_json::to_string(&status)?))
        }
    })
    .await
}

fn heartbeat(s: &SyncPipelineStatus) -> anyhow::Result<chrono::DateTime<chrono::FixedOffset>> {
    let beat = s
        .heartbeat
        .as_deref()
        .ok_or_else(|| anyhow!("no heartbeat"))?;
    Ok(chrono::DateTime::parse_from_rfc3339(beat)?)
}

/// The field managers that applied to the object (the worker applies only status).
async fn status_managers(api: &Api<SyncPipeline>) -> anyhow::Result<BTreeSet<String>> {
    let p = api.get("ledger").await?;
    Ok(p.metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.operation.as_deref() == Some("Apply"))
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.get("f:status").is_some())
        })
        .filter_map(|m| m.manager)
        .collect())
}

async fn sink_count(db: &Path) -> anyhow::Result<i64> {
    use sqlx::sqlite::SqlitePoolOptions;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await?;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(n)
}

/// A plain HTTP/1.0 GET on loopback: the status code and the body.
fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad response to {path}: {text:.200}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// The worker process; killed if the test ends early.
struct Worker {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Worker {
    fn spawn(
        kube: &Kube,
        ns: &str,
        base: &Path,
        state: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = base.join(format!("worker-{port}.log"));
        let child = Command::new(bin())
            .args(["worker", "--pipeline", &format!("{ns}/ledger")])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .arg("--state-dir")
            .arg(state)
            .arg("--base-dir")
            .arg(base)
            .args(["--status-interval", "1s", "--poll-interval", "200ms"])
            .args(extra)
            .env("KUBECONFIG", &kube.kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawning syncmesh worker")?;
        Ok(Self { child, port, log })
    }

    async fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "kill -TERM failed");
        self.wait(DEADLINE).await
    }

    async fn wait(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let log = self.log.clone();
        let child = &mut self.child;
        poll_until(deadline, "the worker to exit", || {
            let exited = child.try_wait();
            let log = log.clone();
            async move {
                match exited? {
                    Some(status) => {
                        if !status.success() {
                            eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
                        }
                        Ok(Some(status))
                    }
                    None => Ok(None),
                }
            }
        })
        .await
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            eprintln!(
                "worker log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}
