//! The batch path's table applier: applies committed snapshots to the sink tables through each
//! table's circuit breaker.
//!
//! | breaker | a batch goes to | and then |
//! |---|---|---|
//! | closed, journal empty | the table | its latency feeds the breaker's window |
//! | closed, journal not empty | (first) the journal is replayed into the table, oldest first | the batch goes to the table |
//! | open | the shadow table **and** the journal, in one transaction | nothing touches the table |
//! | half-open | the shadow and the journal, as when open | journal pages are replayed into the table: each replay is a probe |
//! | promoted | the table in place (the former shadow) and the journal | the journal is kept until the release, for a rollback |
//!
//! The journal (`_syncmesh_diverted`, next to the table) is the replay source: every diverted
//! event, serialized, in order. A diverted batch and its journal entries commit together, and
//! `apply` returns (so the batch path acknowledges the positions) only after that commit: a
//! crash while open loses nothing, and the restarted worker reads the breaker's state and the
//! journal back from the sink database. A replayed page and the deletion of its journal entries
//! also commit together, so compensation resumes where it stopped. Replays are idempotent
//! upserts and deletes by key, in journal order.

use crate::event::{ChangeEvent, TableId, TableSchema};
use crate::metrics::Metrics;
use crate::paths::batch::TableApplier;
use crate::runtime::PathError;
use crate::sinks::breaker::{Breaker, Breakers, Route};
use crate::sinks::table::promote::{self, ShadowError};
use crate::sinks::table::{
    DurableState, Guard, ShadowTable, TableName, TableSinkError, TableWriter, WritePlan,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DIVERTING: [DurableState; 2] = [DurableState::Open, DurableState::HalfOpen];

/// What the applier does with shadow tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowOptions {
    /// Copy the table's rows into a new shadow table, so that the shadow is complete and can
    /// be promoted (default true).
    pub seed: bool,
    /// Promote a shadow as soon as its breaker opens: the human's confirmation given in the
    /// manifest in advance (`spec.sink.shadow.promote`; default false).
    pub promote: bool,
    /// Journal entries replayed per transaction (default 1000).
    pub replay_page: usize,
    /// How long a write waits for a promotion or rollback in progress (default 10 minutes).
    pub swap_wait: Duration,
}

impl Default for ShadowOptions {
    fn default() -> Self {
        Self {
            seed: true,
            promote: false,
            replay_page: 1000,
            swap_wait: Duration::from_secs(600),
        }
    }
}

/// Errors of the applier beyond the writer's own.
#[derive(Debug, thiserror::Error)]
pub enum ApplierError {
    #[error(transparent)]
    Sink(#[from] TableSinkError),
    #[error("table {table}: {reason}")]
    Shadow { table: String, reason: String },
    #[error(transparent)]
    Promote(#[from] ShadowError),
}

/// Per sink table: its names, breaker, durable state and journal position.
struct TableState {
    st: ShadowTable,
    breaker: Arc<Breaker>,
    durable: DurableState,
    /// Journal entries of this table (pending replay unless promoted).
    journal: u64,
    next_seq: i64,
}

impl TableState {
    fn publish(&self) {
        let pending = if self.durable == DurableState::Promoted {
            0
        } else {
            self.journal
        };
        self.breaker.set_pending_replay(pending);
    }
}

/// How a replay ended.
enum Replayed {
    Drained,
    Reopened,
    Fenced,
}

/// Applies snapshot batches to the sink tables, through their breakers.
pub struct SinkApplier {
    writer: Arc<TableWriter>,
    pipeline: String,
    metrics: Arc<Metrics>,
    breakers: Arc<Breakers>,
    options: ShadowOptions,
    tables: HashMap<TableName, TableState>,
}

impl SinkApplier {
    pub fn new(
        writer: Arc<TableWriter>,
        pipeline: impl Into<String>,
        metrics: Arc<Metrics>,
        breakers: Arc<Breakers>,
        options: ShadowOptions,
    ) -> Self {
        Self {
            writer,
            pipeline: pipeline.into(),
            metrics,
            breakers,
            options,
            tables: HashMap::new(),
        }
    }

    /// The breakers, for the consistency checker (`Breaker::record_check`) and status.
    pub fn breakers(&self) -> Arc<Breakers> {
        self.breakers.clone()
    }

    /// Applies `events` (all of one source table, in order) to its sink table.
    pub async fn apply_events(
        &mut self,
        table: &TableId,
        events: &[Arc<ChangeEvent>],
    ) -> Result<(), ApplierError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let schema = last.schema.clone();
        let target = self.writer.target_for(table);
        if !self.tables.contains_key(&target) {
            let ts = self.restore(&target).await?;
            self.tables.insert(target.clone(), ts);
        }
        let Some(mut ts) = self.tables.remove(&target) else {
            return Ok(());
        };
        let result = self.apply_table(&mut ts, table, &schema, events).await;
        ts.publish();
        self.tables.insert(target, ts);
        result
    }

    /// Reads a table's breaker state and journal back from the sink database.
    async fn restore(&self, target: &TableName) -> Result<TableState, ApplierError> {
        let st = ShadowTable::new(target.clone());
        let breaker = self
            .breakers
            .get_or_create(&target.to_string(), &st.shadow.to_string());
        let row = self.writer.control_row(&st).await?;
        let (journal, max_seq) = self.writer.journal_stats(&st).await?;
        let mut ts = TableState {
            st,
            breaker,
            durable: DurableState::Closed,
            journal,
            next_seq: max_seq + 1,
        };
        if let Some(row) = row {
            self.adopt(&mut ts, row.state);
        }
        if ts.durable != DurableState::Closed || ts.journal > 0 {
            tracing::warn!(
                table = %target, state = %ts.durable, journal = ts.journal,
                "sink table breaker state restored from the sink database"
            );
        }
        ts.publish();
        Ok(ts)
    }

    /// Makes the in-memory breaker follow a durable state another actor set.
    fn adopt(&self, ts: &mut TableState, state: DurableState) {
        ts.durable = state;
        match state {
            DurableState::Open | DurableState::HalfOpen => {
                ts.breaker.set_promoted(false);
                ts.breaker.restore_open();
            }
            DurableState::Promoted => {
                ts.breaker.force_close("promotion");
                ts.breaker.set_promoted(true);
            }
            DurableState::Closed => {
                ts.breaker.force_close("release");
                ts.breaker.set_promoted(false);
            }
            DurableState::Swapping => {}
        }
    }

    async fn reload(&self, ts: &mut TableState) -> Result<(), ApplierError> {
        let state = self
            .writer
            .control_row(&ts.st)
            .await?
            .map_or(DurableState::Closed, |r| r.state);
        let (journal, max_seq) = self.writer.journal_stats(&ts.st).await?;
        ts.journal = journal;
        ts.next_seq = ts.next_seq.max(max_seq + 1);
        tracing::info!(table = %ts.st.table, state = %state, "sink table breaker state changed by an operator");
        self.adopt(ts, state);
        Ok(())
    }

    /// Waits while a promotion or rollback is between its steps.
    async fn wait_swap(&self, ts: &mut TableState) -> Result<(), ApplierError> {
        let deadline = Instant::now() + self.options.swap_wait;
        while ts.durable == DurableState::Swapping {
            if Instant::now() >= deadline {
                return Err(ApplierError::Shadow {
                    table: ts.st.table.to_string(),
                    reason: format!(
                        "a promotion or rollback has been in progress for {:?}; finish it with `syncmesh shadow promote|rollback`",
                        self.options.swap_wait
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.reload(ts).await?;
        }
        Ok(())
    }

    async fn apply_table(
        &self,
        ts: &mut TableState,
        source: &TableId,
        schema: &TableSchema,
        events: &[Arc<ChangeEvent>],
    ) -> Result<(), ApplierError> {
        let label = source.to_string();
        loop {
            match ts.durable {
                DurableState::Swapping => {
                    self.wait_swap(ts).await?;
                    continue;
                }
                DurableState::Promoted => {
                    let table = ts.st.table.clone();
                    match self
                        .write_journaled(ts, events, &table, &[DurableState::Promoted])
                        .await
                    {
                        Err(ApplierError::Sink(TableSinkError::Fenced { .. })) => {
                            self.reload(ts).await?;
                            continue;
                        }
                        other => return other.map(|_| ()),
                    }
                }
                _ => {}
            }
            let ticket = ts.breaker.route();
            match ticket.route {
                Route::Shadow | Route::Probe => {
                    if !ts.durable.diverting() {
                        self.open(ts, schema).await?;
                    }
                    if ticket.route == Route::Probe
                        && ts.durable == DurableState::Open
                        && !self
                            .writer
                            .set_state(
                                &ts.st,
                                DurableState::HalfOpen,
                                "cool-down elapsed",
                                &[DurableState::Open],
                            )
                            .await?
                    {
                        self.reload(ts).await?;
                        continue;
                    }
                    if ticket.route == Route::Probe {
                        ts.durable = DurableState::HalfOpen;
                    }
                    if self.options.promote && ticket.route == Route::Shadow {
                        match promote::promote(&self.writer, &ts.st).await {
                            Ok(done) => {
                                tracing::warn!(table = %ts.st.table, ?done, "shadow table promoted (spec.sink.shadow.promote)");
                                self.reload(ts).await?;
                                continue;
                            }
                            Err(ShadowError::Refused { reason, .. }) => {
                                tracing::warn!(table = %ts.st.table, %reason, "shadow table not promoted");
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    let shadow = ts.st.shadow.clone();
                    match self.write_journaled(ts, events, &shadow, &DIVERTING).await {
                        Ok(rows) => ts.breaker.add_diverted(rows),
                        Err(ApplierError::Sink(TableSinkError::Fenced { .. })) => {
                            self.reload(ts).await?;
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                    if ticket.route == Route::Probe
                        && let Replayed::Fenced = self.replay(ts, &label).await?
                    {
                        self.reload(ts).await?;
                    }
                    return Ok(());
                }
                Route::Original => {
                    if ts.journal > 0 {
                        if let Replayed::Fenced = self.replay(ts, &label).await? {
                            self.reload(ts).await?;
                        }
                        continue;
                    }
                    if ts.durable.diverting() {
                        self.close(ts).await?;
                        continue;
                    }
                    let started = Instant::now();
                    let result = self.writer.apply(events).await;
                    let elapsed = started.elapsed();
                    match result {
                        Ok(stats) => {
                            ts.breaker.record_write(ticket, Some(elapsed));
                            self.observe(&label, elapsed, (stats.upserts + stats.deletes) as u64);
                            return Ok(());
                        }
                        Err(e) if e.is_sink_fault() => {
                            ts.breaker.record_write(ticket, None);
                            if ts.breaker.route().route == Route::Original {
                                return Err(e.into());
                            }
                            tracing::warn!(table = %ts.st.table, error = %e, "write failed and tripped the breaker: diverting the batch");
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }

    fn observe(&self, label: &str, elapsed: Duration, rows: u64) {
        let labels = [self.pipeline.as_str(), label];
        self.metrics
            .sink_write_seconds
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
        self.metrics
            .sink_rows
            .with_label_values(&labels)
            .inc_by(rows);
    }

    /// The breaker just opened: bookkeeping tables, the shadow (created like the table and
    /// seeded), then the durable state.
    async fn open(&self, ts: &mut TableState, schema: &TableSchema) -> Result<(), ApplierError> {
        let dialect = self.writer.dialect();
        ts.st
            .check_names(dialect)
            .map_err(|reason| ApplierError::Shadow {
                table: ts.st.table.to_string(),
                reason,
            })?;
        self.writer.ensure_bookkeeping(&ts.st).await?;
        if !self.writer.table_exists(&ts.st.table).await? {
            self.writer.ensure_table(schema, &ts.st.table).await?;
        }
        // A shadow left by an earlier, finished diversion is stale: start it again. One that
        // goes with a journal not yet replayed is the current one.
        if ts.journal == 0 || !self.writer.table_exists(&ts.st.shadow).await? {
            self.writer
                .create_shadow(&ts.st, schema, self.options.seed)
                .await?;
        }
        let reason = ts
            .breaker
            .status()
            .reason
            .unwrap_or_else(|| "opened".into());
        self.writer
            .write_control(&ts.st, DurableState::Open, &reason)
            .await?;
        ts.durable = DurableState::Open;
        tracing::warn!(table = %ts.st.table, shadow = %ts.st.shadow, %reason, "writes diverted to the shadow table");
        Ok(())
    }

    /// The journal is replayed and the breaker is closed: record it durably.
    async fn close(&self, ts: &mut TableState) -> Result<(), ApplierError> {
        if self
            .writer
            .set_state(
                &ts.st,
                DurableState::Closed,
                "compensation replayed",
                &DIVERTING,
            )
            .await?
        {
            ts.durable = DurableState::Closed;
            tracing::info!(table = %ts.st.table, "sink table breaker closed: diverted events replayed");
        } else {
            self.reload(ts).await?;
        }
        Ok(())
    }

    /// Writes `events` to `target` and appends them to the journal, in one transaction behind
    /// a guard on the durable state. Returns the rows written.
    async fn write_journaled(
        &self,
        ts: &mut TableState,
        events: &[Arc<ChangeEvent>],
        target: &TableName,
        expect: &[DurableState],
    ) -> Result<u64, ApplierError> {
        let journal = self.writer.journal_rows(&ts.st, events, ts.next_seq)?;
        let plan = WritePlan {
            target: Some(target),
            before: vec![journal],
            after: vec![],
            guard: Some(self.guard(&ts.st, expect)),
        };
        let stats = self.writer.apply_with(events, plan).await?;
        ts.next_seq += events.len() as i64;
        ts.journal += events.len() as u64;
        Ok((stats.upserts + stats.deletes) as u64)
    }

    fn guard(&self, st: &ShadowTable, expect: &[DurableState]) -> Guard {
        let mut args = vec![st.key().to_string()];
        args.extend(expect.iter().map(|s| s.as_str().to_string()));
        Guard::new(
            st.control.clone(),
            self.writer.dialect().guard_sql(&st.control, expect.len()),
            args,
            expect
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" or "),
        )
    }

    /// Replays the journal into the table, a page per transaction, each page a write the
    /// breaker judges (a probe when half-open), until it is empty or the breaker reopens.
    async fn replay(&self, ts: &mut TableState, label: &str) -> Result<Replayed, ApplierError> {
        while ts.journal > 0 {
            let ticket = ts.breaker.route();
            if ticket.route == Route::Shadow {
                return Ok(Replayed::Reopened);
            }
            let page = self
                .writer
                .journal_page(&ts.st, self.options.replay_page)
                .await?;
            if page.is_empty() {
                ts.journal = 0;
                break;
            }
            let seqs: Vec<i64> = page.iter().map(|(s, _)| *s).collect();
            let events: Vec<ChangeEvent> = page.into_iter().map(|(_, e)| e).collect();
            let table = ts.st.table.clone();
            let plan = WritePlan {
                target: Some(&table),
                before: vec![],
                after: vec![self.writer.journal_deletes(&ts.st, &seqs)],
                guard: Some(self.guard(&ts.st, &DIVERTING)),
            };
            let started = Instant::now();
            let result = self.writer.apply_with(&events, plan).await;
            let elapsed = started.elapsed();
            match result {
                Ok(stats) => {
                    ts.breaker.record_write(ticket, Some(elapsed));
                    self.observe(label, elapsed, (stats.upserts + stats.deletes) as u64);
                    ts.journal = ts.journal.saturating_sub(seqs.len() as u64);
                    ts.breaker.add_replayed(seqs.len() as u64);
                    ts.publish();
                    tracing::debug!(table = %ts.st.table, events = seqs.len(), ms = elapsed.as_millis() as u64, left = ts.journal, "replayed diverted events");
                }
                Err(TableSinkError::Fenced { .. }) => return Ok(Replayed::Fenced),
                Err(e) if e.is_sink_fault() => {
                    ts.breaker.record_write(ticket, None);
                    if ts.breaker.route().route == Route::Shadow {
                        tracing::warn!(table = %ts.st.table, error = %e, "replay failed: the breaker reopened");
                        return Ok(Replayed::Reopened);
                    }
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Replayed::Drained)
    }
}

#[async_trait::async_trait]
impl TableApplier for SinkApplier {
    async fn apply(
        &mut self,
        table: &TableId,
        events: &[Arc<ChangeEvent>],
    ) -> Result<(), PathError> {
        self.apply_events(table, events).await.map_err(Into::into)
    }
}
