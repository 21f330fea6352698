//! The sink breaker on real MariaDB and PostgreSQL: latency injected into the sink (a trigger
//! that sleeps on every write to the table) trips it; diverted writes land in the shadow
//! table and the journal and the table is left alone; a restarted worker picks the open
//! breaker up from the database; when the sink recovers the journal is replayed (the probes,
//! then compensation) and every row of the table is compared with the model.

mod sink_harness;

use sink_harness::{Events, Harness, Kind, Sink, assert_rows};
use std::time::Duration;
use syncmesh_connectors::sinks::breaker::{BreakerState, Cause};
use syncmesh_connectors::sinks::table::DurableState;
use syncmesh_tests::{require, services};

async fn latency_trips_diverts_and_compensates(sink: Sink) -> anyhow::Result<()> {
    let writer = sink.writer().await?;
    let mut h = Harness::new(writer.clone());
    let st = h.st.clone();
    writer
        .ensure_table(&sink_harness::schema(), &st.table)
        .await?;
    sink.install_latency("accounts").await?;
    let mut ev = Events::default();

    // Healthy: batches go to the table.
    for k in 0..3 {
        let batch = ev.upserts(k * 10 + 1..=k * 10 + 10);
        h.apply(&batch).await?;
    }
    assert_eq!(h.breaker().state(), BreakerState::Closed);
    assert_rows(&writer, &st.table, &ev.rows(), "healthy").await?;

    // Slow: a write over the 400 ms threshold puts the p99 of the window (four writes, so the
    // p99 is their maximum) over it and trips the breaker.
    let per_write = match sink.kind {
        Kind::MariaDb => 250,   // per row: a batch of 5 rows takes 1.25 s
        Kind::Postgres => 1200, // per statement
    };
    sink.set_latency(per_write).await?;
    h.apply(&ev.mixed(&[1, 2, 3], &[], &[31, 32])).await?;
    assert_eq!(h.breaker().state(), BreakerState::Open);
    let history = h.breaker().history();
    assert!(
        matches!(history.last().map(|t| &t.cause), Some(Cause::SlowWrites { p99, .. }) if *p99 > Duration::from_millis(400)),
        "{history:?}"
    );
    // The slow write committed before the trip: the table holds it.
    let frozen = ev.rows();
    assert_rows(&writer, &st.table, &frozen, "at the trip").await?;

    // Open: updates, deletes and inserts go to the shadow (seeded with the table's rows) and
    // the journal; the table does not change. Still slow, so a write to it would show.
    let mut diverted = 0;
    for k in 0..4 {
        let batch = ev.mixed(&[6 + k, 20 + k], &[10 + k], &[40 + k, 50 + k]);
        diverted += batch.len();
        h.apply(&batch).await?;
    }
    assert_eq!(h.breaker().state(), BreakerState::Open);
    assert_rows(&writer, &st.table, &frozen, "table while open").await?;
    assert_rows(&writer, &st.shadow, &ev.rows(), "shadow while open").await?;
    assert_eq!(writer.journal_stats(&st).await?.0, diverted as u64);
    let status = h.breaker().status();
    assert_eq!(status.breaker, "open");
    assert_eq!(status.pending_replay, diverted as u64);
    assert!(status.diverted_rows >= diverted as u64, "{status:?}");
    assert_eq!(
        writer.control_row(&st).await?.map(|r| r.state),
        Some(DurableState::Open)
    );
    let text = h.metrics.render();
    assert!(
        text.contains("syncmesh_sink_breaker_state{pipeline=\"breaker-test\",table=\"")
            && text.contains("} 1"),
        "{text}"
    );

    // A crash while open: a new worker reads the open breaker and the journal back and keeps
    // diverting; nothing the old one acknowledged is lost.
    drop(h);
    let mut h = Harness::new(writer.clone());
    assert_eq!(
        h.breaker().state(),
        BreakerState::Closed,
        "not read back until first use"
    );
    let batch = ev.mixed(&[7], &[11], &[60]);
    diverted += batch.len();
    h.apply(&batch).await?;
    assert_eq!(h.breaker().state(), BreakerState::Open);
    assert_rows(&writer, &st.table, &frozen, "table after the restart").await?;
    assert_eq!(writer.journal_stats(&st).await?.0, diverted as u64);

    // Still slow after the cool-down: the first probe (a journal page replayed into the
    // table) is slow and reopens the breaker; the page itself is applied and leaves the
    // journal, so nothing is replayed twice.
    h.clock.advance(Duration::from_secs(31));
    let batch = ev.upserts([70]);
    diverted += batch.len();
    h.apply(&batch).await?;
    assert_eq!(
        h.breaker().state(),
        BreakerState::Open,
        "{:?}",
        h.breaker().history()
    );
    let left = writer.journal_stats(&st).await?.0;
    assert_eq!(left, diverted as u64 - 7, "one page of 7 replayed");

    // Recovered: after the cool-down the probes are healthy, the breaker closes, and
    // compensation replays the rest of the journal in order.
    sink.set_latency(0).await?;
    h.clock.advance(Duration::from_secs(31));
    h.apply(&ev.upserts([71, 1])).await?;
    assert_eq!(
        h.breaker().state(),
        BreakerState::Closed,
        "{:?}",
        h.breaker().history()
    );
    assert_eq!(writer.journal_stats(&st).await?.0, 0);
    assert_rows(&writer, &st.table, &ev.rows(), "table after compensation").await?;
    // The next batch goes straight to the table, and the durable state says closed.
    h.apply(&ev.mixed(&[2], &[3], &[80])).await?;
    assert_eq!(
        writer.control_row(&st).await?.map(|r| r.state),
        Some(DurableState::Closed)
    );
    assert_rows(&writer, &st.table, &ev.rows(), "table after recovery").await?;
    let causes: Vec<String> = h
        .breaker()
        .history()
        .iter()
        .map(|t| format!("{}->{}", t.from, t.to))
        .collect();
    assert_eq!(
        causes,
        [
            "closed->open",
            "open->half-open",
            "half-open->open",
            "open->half-open",
            "half-open->closed"
        ]
    );
    writer.close().await;
    sink.drop().await
}

#[tokio::test]
async fn mariadb_latency_trips_diverts_and_compensates() -> anyhow::Result<()> {
    let db = require!(services::mysql());
    latency_trips_diverts_and_compensates(Sink::mariadb(&db.url).await?).await
}

#[tokio::test]
async fn postgres_latency_trips_diverts_and_compensates() -> anyhow::Result<()> {
    let db = require!(services::postgres());
    latency_trips_diverts_and_compensates(Sink::postgres(&db.url).await?).await
}
