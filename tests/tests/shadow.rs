//! Shadow promotion on real MariaDB and PostgreSQL: a reader looping over the table during the
//! swap never finds it missing; promote, rollback and release move the right rows into place;
//! every refusal names its reason.

mod sink_harness;

use sink_harness::{Events, Harness, Sink, assert_rows};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use syncmesh_connectors::sinks::breaker::{BreakerConfig, BreakerState};
use syncmesh_connectors::sinks::table::DurableState;
use syncmesh_connectors::sinks::table::promote::{self, ShadowError};
use syncmesh_tests::{poll_until, require, services};

fn refused(result: Result<promote::ShadowOutcome, ShadowError>, needle: &str) {
    match result {
        Err(ShadowError::Refused { reason, .. }) => {
            assert!(
                reason.contains(needle),
                "refused for `{reason}`, expected `{needle}`"
            )
        }
        other => panic!("expected a refusal containing `{needle}`, got {other:?}"),
    }
}

/// Counts `SELECT COUNT(*)` rounds on `table` until `stop`; every error is kept.
fn reader(
    sink: Arc<Sink>,
    table: String,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut errors = Vec::new();
        while !stop.load(Ordering::Acquire) {
            if let Err(e) = sink.count(&table).await {
                errors.push(e.to_string());
            }
            rounds.fetch_add(1, Ordering::AcqRel);
        }
        errors
    })
}

/// Runs `action` while a reader loops over the table; fails if the reader ever got an error.
async fn with_reader<T>(
    sink: &Arc<Sink>,
    action: impl std::future::Future<Output = T>,
) -> anyhow::Result<T> {
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let task = reader(
        sink.clone(),
        "accounts".into(),
        stop.clone(),
        rounds.clone(),
    );
    poll_until(Duration::from_secs(10), "the reader to be running", || {
        let r = rounds.load(Ordering::Acquire);
        async move { Ok((r >= 3).then_some(())) }
    })
    .await?;
    let before = rounds.load(Ordering::Acquire);
    let out = action.await;
    // Let the reader run on after the swap, then stop it by the flag.
    poll_until(
        Duration::from_secs(10),
        "the reader to read after the swap",
        || {
            let r = rounds.load(Ordering::Acquire);
            async move { Ok((r >= before + 3).then_some(())) }
        },
    )
    .await?;
    stop.store(true, Ordering::Release);
    let errors = task.await?;
    anyhow::ensure!(
        errors.is_empty(),
        "the reader saw errors during the swap: {errors:?}"
    );
    Ok(out)
}

async fn promote_rollback_release(sink: Sink) -> anyhow::Result<()> {
    let sink = Arc::new(sink);
    let writer = sink.writer().await?;
    // Latency is not what this test is about: a threshold no loaded machine reaches.
    let mut h = Harness::with_config(
        writer.clone(),
        BreakerConfig {
            latency_threshold: Duration::from_secs(30),
            ..sink_harness::config()
        },
    );
    let st = h.st.clone();
    let mut ev = Events::default();
    h.apply(&ev.upserts(1..=20)).await?;

    // Closed, nothing diverted: nothing to promote.
    refused(promote::promote(&writer, &st).await, "never opened");

    // Three failed checks trip the breaker; writes go to the (seeded) shadow.
    for _ in 0..3 {
        h.breaker().record_check(false);
    }
    assert_eq!(h.breaker().state(), BreakerState::Open);
    let frozen = ev.rows();
    h.apply(&ev.mixed(&[1, 2], &[3, 4], &[21, 22])).await?;
    h.apply(&ev.mixed(&[5], &[6], &[23])).await?;
    assert_rows(&writer, &st.table, &frozen, "table while open").await?;
    assert_rows(&writer, &st.shadow, &ev.rows(), "shadow while open").await?;
    refused(
        promote::rollback(&writer, &st).await,
        "only a promoted shadow",
    );
    refused(
        promote::release(&writer, &st).await,
        "only a promoted shadow",
    );

    // Promote while a reader loops over the table.
    let done = with_reader(&sink, promote::promote(&writer, &st)).await??;
    assert_eq!(done.state, "promoted");
    assert_rows(&writer, &st.table, &ev.rows(), "table after promotion").await?;
    assert_rows(&writer, &st.old, &frozen, "previous table kept").await?;
    assert!(!writer.table_exists(&st.shadow).await?);
    refused(promote::promote(&writer, &st).await, "already promoted");

    // The worker notices (its guarded write is refused), writes to the table in place and
    // keeps journaling for a rollback.
    h.apply(&ev.mixed(&[7], &[8], &[24])).await?;
    assert!(h.breaker().is_promoted());
    assert_eq!(h.breaker().status().breaker, "promoted");
    assert_rows(
        &writer,
        &st.table,
        &ev.rows(),
        "table written after promotion",
    )
    .await?;
    let journal = writer.journal_stats(&st).await?.0;
    assert_eq!(
        journal,
        6 + 3 + 3,
        "every event since the trip is journaled"
    );

    // Roll back under the reader: the previous table is back, the promoted one is the shadow
    // again, and the breaker is open (restored from the database, so with a cool-down).
    let done = with_reader(&sink, promote::rollback(&writer, &st)).await??;
    assert_eq!(done.state, "open");
    assert_rows(&writer, &st.table, &frozen, "table after rollback").await?;
    assert_rows(&writer, &st.shadow, &ev.rows(), "shadow after rollback").await?;
    h.apply(&ev.mixed(&[9], &[], &[25])).await?;
    assert_eq!(h.breaker().state(), BreakerState::Open);
    assert_rows(&writer, &st.table, &frozen, "table stays frozen").await?;
    assert_rows(
        &writer,
        &st.shadow,
        &ev.rows(),
        "shadow after rollback writes",
    )
    .await?;

    // After the cool-down the journal (kept since the trip) is replayed into the table, so it
    // catches up with everything, promotion period included.
    h.clock.advance(Duration::from_secs(31));
    h.apply(&ev.upserts([26])).await?;
    h.apply(&ev.upserts([27])).await?;
    assert_eq!(
        h.breaker().state(),
        BreakerState::Closed,
        "{:?}",
        h.breaker().history()
    );
    assert_rows(&writer, &st.table, &ev.rows(), "table after compensation").await?;
    assert_eq!(writer.journal_stats(&st).await?.0, 0);
    assert_eq!(
        writer.control_row(&st).await?.map(|r| r.state),
        Some(DurableState::Closed)
    );

    // Trip again, promote, release: the previous table and the journal go, the breaker closes.
    for _ in 0..3 {
        h.breaker().record_check(false);
    }
    h.apply(&ev.mixed(&[10], &[11], &[28])).await?;
    with_reader(&sink, promote::promote(&writer, &st)).await??;
    let released = promote::release(&writer, &st).await?;
    assert_eq!(released.state, "closed");
    assert!(!writer.table_exists(&st.old).await?);
    assert_eq!(writer.journal_stats(&st).await?.0, 0);
    h.apply(&ev.mixed(&[12], &[13], &[29])).await?;
    assert!(!h.breaker().is_promoted());
    assert_eq!(h.breaker().state(), BreakerState::Closed);
    assert_rows(&writer, &st.table, &ev.rows(), "table after release").await?;
    refused(promote::release(&writer, &st).await, "breaker is closed");
    refused(
        promote::promote(&writer, &st).await,
        "closed and nothing is pending",
    );

    // A shadow that went missing is named.
    for _ in 0..3 {
        h.breaker().record_check(false);
    }
    h.apply(&ev.upserts([30])).await?;
    sink.exec(&format!("DROP TABLE {}", sink.qualified(&st.shadow.table)))
        .await?;
    refused(promote::promote(&writer, &st).await, "does not exist");

    drop(h);
    writer.close().await;
    match Arc::try_unwrap(sink) {
        Ok(sink) => sink.drop().await,
        Err(_) => anyhow::bail!("the reader still holds the sink"),
    }
}

#[tokio::test]
async fn mariadb_promote_rollback_release() -> anyhow::Result<()> {
    let db = require!(services::mysql());
    promote_rollback_release(Sink::mariadb(&db.url).await?).await
}

#[tokio::test]
async fn postgres_promote_rollback_release() -> anyhow::Result<()> {
    let db = require!(services::postgres());
    promote_rollback_release(Sink::postgres(&db.url).await?).await
}
