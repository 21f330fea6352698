//! The pipeline source: mines the redo window by window and pushes committed events.
//!
//! Resume contract: each event's position carries `resume_scn` (where mining restarts so no
//! open transaction is lost) and the commit SCN emitted per redo thread; a restart mines
//! from `resume_scn` and skips every event at or before the committed position.

use super::buffer::BufferConfig;
use super::events::TableDef;
use super::metrics::OracleMetrics;
use super::miner::{
    self, DictionaryMode, MinerConfig, MinerError, contents_query, fetch_window, next_window,
    preflight, start_window, table_def,
};
use super::session::{OracleSession, SessionError};
use super::stream::{ChangeStream, Emitted, StreamError, TableFilter};
use crate::deadletter::DeadLetter;
use crate::event::{Position, TableId};
use crate::runtime::{Emitter, Source, SourceError, SourceItem, SourceProgress, StopSignal};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Opens a session (a new one after a connection loss).
pub type Connect =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Box<dyn OracleSession>, SessionError>> + Send + Sync>;

#[derive(Clone)]
pub struct OracleSourceConfig {
    pub filter: TableFilter,
    pub miner: MinerConfig,
    pub buffer: BufferConfig,
    /// Where a source with no position starts; `None`: the current SCN.
    pub start_scn: Option<u64>,
    /// How long to wait when mining has caught up with the current SCN.
    pub poll_interval: Duration,
    /// After a window, when nothing has been pushed for this long, the source reports the SCN
    /// it has safely passed as a heartbeat, so a quiet source's resume SCN keeps up with the
    /// logs. `None`: never.
    pub heartbeat_interval: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum OracleSourceError {
    #[error("oracle source `{source_name}`: {error}")]
    Miner {
        source_name: String,
        error: MinerError,
    },
    #[error("oracle source `{source_name}`: {error}")]
    Stream {
        source_name: String,
        error: StreamError,
    },
    #[error("oracle source `{source_name}`: cannot connect: {error}")]
    Connect {
        source_name: String,
        error: SessionError,
    },
    #[error(
        "oracle source `{source_name}`: the resume position is not an Oracle position ({found})"
    )]
    Position { source_name: String, found: String },
}

pub struct OracleSource {
    name: Arc<str>,
    pipeline: String,
    config: OracleSourceConfig,
    connect: Connect,
    metrics: Option<OracleMetrics>,
}

impl OracleSource {
    pub fn new(name: &str, pipeline: &str, config: OracleSourceConfig, connect: Connect) -> Self {
        Self {
            name: name.into(),
            pipeline: pipeline.to_string(),
            config,
            connect,
            metrics: None,
        }
    }

    pub fn with_metrics(mut self, metrics: OracleMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn miner_err(&self, error: MinerError) -> SourceError {
        Box::new(OracleSourceError::Miner {
            source_name: self.name.to_string(),
            error,
        })
    }

    fn stream_err(&self, error: StreamError) -> SourceError {
        Box::new(OracleSourceError::Stream {
            source_name: self.name.to_string(),
            error,
        })
    }

    async fn mine(
        &self,
        resume: SourceProgress,
        out: &mut Emitter,
        stop: &mut StopSignal,
    ) -> Result<(), SourceError> {
        let mut s = (self.connect)()
            .await
            .map_err(|error| OracleSourceError::Connect {
                source_name: self.name.to_string(),
                error,
            })?;
        let s: &mut dyn OracleSession = &mut *s;
        let pre = preflight(s, &self.config.filter)
            .await
            .map_err(|e| self.miner_err(e))?;
        let resume_at = match &resume.position {
            None => None,
            Some(p @ Position::Oracle { .. }) => Some(p.clone()),
            Some(other) => {
                return Err(Box::new(OracleSourceError::Position {
                    source_name: self.name.to_string(),
                    found: other.to_string(),
                }));
            }
        };
        let mut from = match &resume_at {
            Some(Position::Oracle { resume_scn, .. }) => *resume_scn,
            _ => self.config.start_scn.unwrap_or(pre.current_scn),
        };
        let mut buffer = self.config.buffer.clone();
        // After a restart, a transaction whose START lies before the resume SCN was either
        // emitted already or abandoned: never emit half of one.
        buffer.require_start = resume_at.is_some();
        let mut stream =
            ChangeStream::new(&self.name, buffer, self.config.filter.clone(), resume_at);
        for pattern in &self.config.filter.include_patterns {
            if let Some((o, t)) = pattern.split_once('.')
                && !pattern.contains(['*', '?', '[', '{'])
                && let Some(def) = table_def(s, &TableId::new(o, t))
                    .await
                    .map_err(|e| self.miner_err(e))?
            {
                stream.builder().define(def, false);
            }
        }
        let dictionary_from = match self.config.miner.dictionary {
            DictionaryMode::OnlineCatalog => None,
            DictionaryMode::RedoLogs => {
                s.execute(miner::sql::DICTIONARY_BUILD, &[])
                    .await
                    .map_err(|source| {
                        self.miner_err(MinerError::Session {
                            statement: "DBMS_LOGMNR_D.BUILD",
                            source,
                        })
                    })?;
                // LogMiner reads the dictionary from the logs it is given, so the build must
                // begin at or before the first SCN mined.
                let rows = s
                    .query(
                        miner::sql::LAST_DICTIONARY,
                        &[("startscn", super::session::Bind::Int(from))],
                    )
                    .await
                    .map_err(|source| {
                        self.miner_err(MinerError::Session {
                            statement: "V$ARCHIVED_LOG (dictionary)",
                            source,
                        })
                    })?;
                match rows.iter().next().and_then(|r| r.number("FIRST_CHANGE#")) {
                    Some(scn) => Some(scn),
                    None => {
                        return Err(self.miner_err(MinerError::Preflight(format!(
                            "dictionary redoLogs: no LogMiner dictionary build in the archived \
                             logs at or before SCN {from} (V$ARCHIVED_LOG.DICTIONARY_BEGIN). One \
                             was just built (DBMS_LOGMNR_D.BUILD): once its log is archived \
                             (ALTER SYSTEM ARCHIVE LOG CURRENT), start the source at or after \
                             its FIRST_CHANGE#, or use dictionary onlineCatalog"
                        ))));
                    }
                }
            }
        };
        let query = contents_query(&self.config.filter, self.config.buffer.lobs);
        let mut window = self.config.miner.window_initial.max(1);
        let labels = [self.pipeline.as_str(), &*self.name];
        let mut beat = Heartbeat::new(self.config.heartbeat_interval);
        while !stop.is_stopped() {
            let current = miner::current_scn(s).await.map_err(|e| self.miner_err(e))?;
            if from > current {
                out.flush().await?;
                tokio::select! {
                    _ = stop.stopped() => break,
                    _ = tokio::time::sleep(self.config.poll_interval) => continue,
                }
            }
            let to = current.min(from.saturating_add(window - 1));
            let started = Instant::now();
            start_window(s, &self.config.miner, from, to, dictionary_from)
                .await
                .map_err(|e| self.miner_err(e))?;
            let rows = fetch_window(s, &query, from, to)
                .await
                .map_err(|e| self.miner_err(e))?;
            // Definitions after DDL come from the catalog, read before the rows are fed.
            let mut defs: HashMap<TableId, Option<TableDef>> = HashMap::new();
            for row in rows.iter().filter(|r| r.op == super::contents::OpCode::Ddl) {
                let table = TableId::new(row.seg_owner.clone(), row.table_name.clone());
                if self.config.filter.matches(&table.schema, &table.table)
                    && !defs.contains_key(&table)
                {
                    let def = table_def(s, &table).await.map_err(|e| self.miner_err(e))?;
                    defs.insert(table, def);
                }
            }
            let mut lookup = |t: &TableId| defs.get(t).cloned().flatten();
            for row in rows {
                stream
                    .push(row, &mut lookup)
                    .map_err(|e| self.stream_err(e))?;
                self.emit(&mut stream, out, &mut beat).await?;
            }
            stream
                .end_window(&mut lookup)
                .map_err(|e| self.stream_err(e))?;
            self.emit(&mut stream, out, &mut beat).await?;
            // Everything up to `to` is mined and its commits emitted.
            if let Some(position) = beat.due(&stream, to + 1) {
                out.heartbeat(position.clone()).await?;
                if let (Some(m), Position::Oracle { resume_scn, .. }) = (&self.metrics, &position) {
                    m.heartbeats.with_label_values(&labels).inc();
                    m.heartbeat_scn
                        .with_label_values(&labels)
                        .set(*resume_scn as i64);
                }
                beat.sent(position);
            }
            if let Some(m) = &self.metrics {
                m.fetch_seconds
                    .with_label_values(&labels)
                    .observe(started.elapsed().as_secs_f64());
                m.window_size.with_label_values(&labels).set(window as i64);
                m.offset_scn
                    .with_label_values(&labels)
                    .set(stream.resume_scn().unwrap_or(to + 1) as i64);
                for (thread, scn) in stream.committed() {
                    m.committed_scn
                        .with_label_values(&[labels[0], labels[1], &thread.to_string()])
                        .set(*scn as i64);
                }
                m.active_transactions
                    .with_label_values(&labels)
                    .set(stream.buffer().active() as i64);
                if let Some(t) = stream.last_time() {
                    let lag = chrono::Utc::now().naive_utc() - t;
                    m.lag_seconds
                        .with_label_values(&labels)
                        .set(lag.num_seconds().max(0));
                }
            }
            window = next_window(&self.config.miner, window, to, current);
            from = to + 1;
        }
        out.flush().await?;
        Ok(())
    }

    async fn emit(
        &self,
        stream: &mut ChangeStream,
        out: &mut Emitter,
        beat: &mut Heartbeat,
    ) -> Result<(), SourceError> {
        let items: Vec<Emitted> = stream.drain().collect();
        if let Some(last) = items.last() {
            beat.sent(match last {
                Emitted::Event(e) => e.position.clone(),
                Emitted::Bad { position, .. } => position.clone(),
            });
        }
        for item in items {
            match item {
                Emitted::Event(e) => out.push(SourceItem::Event(e)).await?,
                Emitted::Bad {
                    position,
                    reason,
                    raw,
                } => {
                    out.push(SourceItem::Bad(DeadLetter {
                        source: self.name.to_string(),
                        position,
                        reason,
                        raw: raw.into_bytes(),
                    }))
                    .await?
                }
            }
        }
        let labels = [self.pipeline.as_str(), &*self.name];
        for (xid, reason) in stream.take_ignored() {
            tracing::warn!(source = %self.name, xid, reason, "committed transaction not emitted");
            if let Some(m) = &self.metrics {
                m.transactions
                    .with_label_values(&[labels[0], labels[1], "ignored"])
                    .inc();
            }
        }
        for (xid, start_scn) in stream.take_abandoned() {
            tracing::warn!(source = %self.name, xid, start_scn, "transaction abandoned: open longer than abandonAfter");
            if let Some(m) = &self.metrics {
                m.transactions
                    .with_label_values(&[labels[0], labels[1], "abandoned"])
                    .inc();
            }
        }
        if let Some(m) = &self.metrics {
            let st = stream.buffer().stats();
            let set = |outcome: &str, v: u64| {
                let c = m
                    .transactions
                    .with_label_values(&[labels[0], labels[1], outcome]);
                c.inc_by(v.saturating_sub(c.get()));
            };
            set("committed", st.committed);
            set("rolled_back", st.rolled_back);
            let lobs = &stream.stats().lobs;
            for (outcome, v) in [("assembled", lobs.assembled), ("bad", lobs.bad)] {
                let c = m
                    .lob_columns
                    .with_label_values(&[labels[0], labels[1], outcome]);
                c.inc_by(v.saturating_sub(c.get()));
            }
        }
        Ok(())
    }
}

/// When the source reports a heartbeat: `interval` after the last position it pushed, and
/// only if the position has moved since.
struct Heartbeat {
    interval: Option<Duration>,
    last_sent: Instant,
    last_position: Option<Position>,
}

impl Heartbeat {
    fn new(interval: Option<Duration>) -> Self {
        Self {
            interval,
            last_sent: Instant::now(),
            last_position: None,
        }
    }

    /// The heartbeat to send now, if one is due, with everything below `next_scn` mined.
    fn due(&self, stream: &ChangeStream, next_scn: u64) -> Option<Position> {
        let interval = self.interval?;
        if self.last_sent.elapsed() < interval {
            return None;
        }
        let position = stream.heartbeat(next_scn);
        (self.last_position.as_ref() != Some(&position)).then_some(position)
    }

    fn sent(&mut self, position: Position) {
        self.last_sent = Instant::now();
        self.last_position = Some(position);
    }
}

#[async_trait::async_trait]
impl Source for OracleSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        self: Box<Self>,
        resume: SourceProgress,
        mut out: Emitter,
        mut stop: StopSignal,
    ) -> Result<(), SourceError> {
        self.mine(resume, &mut out, &mut stop).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChangeEvent, Value};
    use crate::runtime::{Queued, Tracker};
    use crate::sources::oracle::recorded::RecordedSession;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/oracle")
            .join(name)
    }

    fn config() -> OracleSourceConfig {
        OracleSourceConfig {
            filter: TableFilter::new(&["BANK.ACCOUNTS".into()], &[]).unwrap(),
            miner: MinerConfig {
                window_min: 4,
                window_max: 64,
                window_initial: 8,
                retry_backoff: Duration::from_millis(1),
                ..Default::default()
            },
            buffer: BufferConfig::default(),
            start_scn: Some(1000),
            poll_interval: Duration::from_millis(5),
            heartbeat_interval: None,
        }
    }

    struct Run {
        events: Vec<ChangeEvent>,
        /// Every position pushed, in order: `true` for a heartbeat.
        pushed: Vec<(bool, Position)>,
        /// Dead letters: position and reason.
        bad: Vec<(Position, String)>,
        error: Option<String>,
        calls: Vec<String>,
    }

    /// The recording's last current SCN.
    fn last_scn(session: &str) -> u64 {
        if session.contains("quiet") {
            1800
        } else if session.contains("lob") {
            1240
        } else {
            1040
        }
    }

    /// Whether the source has mined through the recording's last current SCN and flushed:
    /// two current-SCN polls after the last window's contents query.
    fn caught_up(calls: &[String], last: u64) -> bool {
        let end = format!("endscn={last}");
        calls
            .iter()
            .rposition(|c| c.starts_with("contents ") && c.ends_with(&end))
            .is_some_and(|i| calls[i..].iter().filter(|c| *c == "current_scn").count() >= 2)
    }

    async fn run(session: &str, resume: Option<Position>, expect_end: bool) -> Run {
        run_with(session, config(), resume, expect_end, None).await
    }

    /// Runs the source on a recorded session until it has mined everything and pushed its
    /// events, then stops it; with `expect_end`, waits for it to end by itself (an error).
    async fn run_with(
        session: &str,
        config: OracleSourceConfig,
        resume: Option<Position>,
        expect_end: bool,
        metrics: Option<OracleMetrics>,
    ) -> Run {
        let recorded = RecordedSession::load(&fixture(session)).unwrap();
        let handle = recorded.clone();
        let connect: Connect = Arc::new(move || {
            let s = recorded.clone();
            Box::pin(async move { Ok(Box::new(s) as Box<dyn OracleSession>) })
        });
        let mut source = OracleSource::new("ora", "p", config, connect);
        if let Some(m) = metrics {
            source = source.with_metrics(m);
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let (stop_tx, stop) = StopSignal::new();
        let progress = SourceProgress {
            position: resume,
            ..Default::default()
        };
        let mut task = tokio::spawn(Box::new(source).run(progress, Emitter::new(0, tx), stop));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut finished = None;
        while !expect_end && !caught_up(&handle.calls(), last_scn(session)) {
            tokio::select! {
                r = &mut task => { finished = Some(r); break; }
                _ = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the source did not catch up: {:?}",
                handle.calls()
            );
        }
        let _ = stop_tx.send(!expect_end);
        let result = match finished {
            Some(r) => r.unwrap(),
            None => tokio::time::timeout_at(deadline, task)
                .await
                .expect("the source ends")
                .unwrap(),
        };
        let mut events = Vec::new();
        let mut pushed = Vec::new();
        let mut bad = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            for item in batch.items {
                match item {
                    Queued::Item(SourceItem::Event(e)) => {
                        pushed.push((false, e.position.clone()));
                        events.push(e);
                    }
                    Queued::Item(SourceItem::Bad(letter)) => {
                        pushed.push((false, letter.position.clone()));
                        bad.push((letter.position, letter.reason));
                    }
                    Queued::Item(other) => pushed.push((false, other.position().clone())),
                    Queued::Heartbeat(p) => pushed.push((true, p)),
                }
            }
        }
        Run {
            events,
            pushed,
            bad,
            error: result.err().map(|e| e.to_string()),
            calls: handle.calls(),
        }
    }

    fn key(e: &ChangeEvent) -> (String, u32, String, String) {
        let (xid, index) = match &e.position {
            Position::Oracle { xid, index, .. } => (xid.clone(), *index),
            _ => panic!("not an Oracle position"),
        };
        (
            xid,
            index,
            e.op.name().to_string(),
            format!("{:?}/{:?}", e.before, e.after),
        )
    }

    #[tokio::test]
    async fn mines_the_recorded_session_in_commit_order_with_typed_values() {
        let r = run("session_basic.yaml", None, false).await;
        assert_eq!(r.error, None);
        let ops: Vec<(String, u32, String)> = r
            .events
            .iter()
            .map(|e| {
                let (x, i, op, _) = key(e);
                (x, i, op)
            })
            .collect();
        let o = |x: &str, i, op: &str| (x.to_string(), i, op.to_string());
        assert_eq!(
            ops,
            [
                o("0A001B00C4010000", 0, "insert"),
                o("0A001B00C4010000", 1, "update"),
                o("0D000100F0040000", 0, "ddl"),
                o("0C000900E1030000", 0, "insert"),
                o("0C000900E1030000", 1, "insert"),
                o("0E000200A1050000", 0, "delete"),
                o("0F000300B2060000", 0, "update"),
            ]
        );
        let first = &r.events[0];
        let after = first.after.as_ref().unwrap();
        assert_eq!(
            after[0],
            Value::Int(1001),
            "NUMBER(10,0) from the dictionary"
        );
        assert_eq!(after[9].to_json(), "1500.25");
        assert_eq!(first.schema.primary_key, vec![0]);
        assert_eq!(first.key_text(), "1001");
        // The DDL re-reads the dictionary: version 2 carries TIER.
        assert_eq!(r.events[2].schema.version, 2);
        assert!(r.events[2].schema.column_index("TIER").is_some());
        match &r.events[6].position {
            Position::Oracle {
                thread, committed, ..
            } => {
                assert_eq!(*thread, 2);
                assert_eq!(committed.get(&1), Some(&1031));
                assert_eq!(committed.get(&2), Some(&1031));
            }
            p => panic!("{p:?}"),
        }
        // ORA-01291 on the first START_LOGMNR: logs listed again and the start retried.
        let starts: Vec<&String> = r
            .calls
            .iter()
            .filter(|c| c.starts_with("start_logmnr"))
            .collect();
        assert_eq!(
            starts,
            [
                "start_logmnr startscn=1000 endscn=1007",
                "start_logmnr startscn=1000 endscn=1007",
                // Behind the current SCN (1012, then 1040): the window doubles, never past it.
                "start_logmnr startscn=1008 endscn=1023",
                "start_logmnr startscn=1024 endscn=1040",
            ]
        );
        assert!(
            r.calls
                .iter()
                .any(|c| c == "add_logfile name=/u01/arch/1_41_1122334455.arc")
        );
        assert!(
            r.calls.iter().any(|c| c == "nls"),
            "NLS formats set before mining"
        );
    }

    #[tokio::test]
    async fn restart_from_any_persisted_position_emits_nothing_twice_and_misses_nothing() {
        let full = run("session_basic.yaml", None, false).await;
        assert_eq!(full.events.len(), 7);
        restart_everywhere("session_basic.yaml", config(), &full).await;
    }

    /// Restarts the source from the persisted position of every event of `full` in turn:
    /// the events up to it plus those after the restart must be exactly `full`.
    async fn restart_everywhere(session: &str, config: OracleSourceConfig, full: &Run) {
        for k in 0..full.events.len() {
            // The runtime persisted the position of event k; the process stopped.
            let persisted: Position =
                serde_json::from_value(serde_json::to_value(&full.events[k].position).unwrap())
                    .unwrap();
            let rest = run_with(
                session,
                config.clone(),
                Some(persisted.clone()),
                false,
                None,
            )
            .await;
            assert_eq!(rest.error, None);
            let mut joined: Vec<_> = full.events[..=k].iter().map(key).collect();
            joined.extend(rest.events.iter().map(key));
            let want: Vec<_> = full.events.iter().map(key).collect();
            assert_eq!(joined, want, "restart after event {k} ({persisted})");
            if let Position::Oracle { resume_scn, .. } = persisted {
                let first_start = rest.calls.iter().find(|c| c.starts_with("start_logmnr"));
                assert_eq!(
                    first_start.map(String::as_str),
                    Some(
                        format!(
                            "start_logmnr startscn={resume_scn} endscn={}",
                            if resume_scn <= 1012 {
                                (resume_scn + 7).min(1012)
                            } else {
                                resume_scn + 7
                            }
                        )
                        .as_str()
                    ),
                    "mining restarts at the resume SCN (current SCN: 1012, then 1040)"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_log_gap_stops_the_source_naming_the_missing_scn_range() {
        let full = run("session_basic.yaml", None, false).await;
        // Resume inside T1 (started at SCN 1000): its redo on thread 1 is gone.
        let r = run(
            "session_gap.yaml",
            Some(full.events[0].position.clone()),
            true,
        )
        .await;
        let error = r.error.expect("the source fails");
        assert!(error.contains("log gap on redo thread 1"), "{error}");
        assert!(
            error.contains("SCN 1000..1014 is no longer available"),
            "{error}"
        );
        assert!(
            error.contains("RESTORE ARCHIVELOG FROM SCN 1000 UNTIL SCN 1014 THREAD 1"),
            "{error}"
        );
        assert!(r.events.is_empty());
    }

    #[tokio::test]
    async fn preflight_names_every_problem_and_its_fix_before_mining() {
        let r = run("session_preflight.yaml", None, true).await;
        let error = r.error.expect("the source fails");
        for want in [
            "NOARCHIVELOG mode: LogMiner CDC needs ARCHIVELOG",
            "minimal supplemental logging is off (ALTER DATABASE ADD SUPPLEMENTAL LOG DATA)",
            "table BANK.ACCOUNTS has no all-column supplemental logging (ALTER TABLE \"BANK\".\"ACCOUNTS\" ADD SUPPLEMENTAL LOG DATA (ALL) COLUMNS)",
            "lacks LOGMINING (GRANT LOGMINING TO <user>)",
            "lacks SELECT ANY TRANSACTION",
            "lacks EXECUTE_CATALOG_ROLE",
        ] {
            assert!(error.contains(want), "{want}: {error}");
        }
        // SELECT_CATALOG_ROLE stands in for SELECT ANY DICTIONARY.
        assert!(!error.contains("SELECT ANY DICTIONARY"), "{error}");
        assert_eq!(r.calls[0], "nls", "NLS formats set first");
        assert!(!r.calls.iter().any(|c| c.starts_with("start_logmnr")));
        assert!(r.events.is_empty());
    }

    #[tokio::test]
    async fn log_switches_while_starting_are_retried_then_reported() {
        let basic = run("session_basic.yaml", None, false).await;
        let r = run("session_log_switch.yaml", None, false).await;
        assert_eq!(r.error, None);
        let keys = |r: &Run| r.events.iter().map(key).collect::<Vec<_>>();
        assert_eq!(keys(&r), keys(&basic));
        // Each failed start ends the session and lists the logs again before the next one.
        let first_window: Vec<&str> = r
            .calls
            .iter()
            .map(String::as_str)
            .skip_while(|c| !c.starts_with("archived_logs"))
            .take_while(|c| !c.starts_with("contents"))
            .filter(|c| !c.starts_with("add_logfile") && !c.starts_with("online_logs"))
            .collect();
        let attempt = [
            "archived_logs startscn=1000",
            "start_logmnr startscn=1000 endscn=1007",
        ];
        let mut want: Vec<&str> = Vec::new();
        for _ in 0..3 {
            want.extend(attempt);
            want.push("end_logmnr");
        }
        want.extend(attempt);
        assert_eq!(first_window, want);

        // With three attempts allowed, the third ORA-00310 is reported with the window.
        let mut cfg = config();
        cfg.miner.start_attempts = 3;
        let r = run_with("session_log_switch.yaml", cfg, None, true, None).await;
        let error = r.error.expect("the source fails");
        assert!(
            error.contains(
                "START_LOGMNR for SCN 1000..1007 kept failing (3 attempts, last: ORA-00310"
            ),
            "{error}"
        );
        assert!(r.events.is_empty());
    }

    #[tokio::test]
    async fn dictionary_in_the_redo_logs_mines_from_the_latest_build() {
        let basic = run("session_basic.yaml", None, false).await;
        let mut cfg = config();
        cfg.miner.dictionary = DictionaryMode::RedoLogs;
        let r = run_with(
            "session_redo_dictionary.yaml",
            cfg.clone(),
            None,
            false,
            None,
        )
        .await;
        assert_eq!(r.error, None);
        let keys = |r: &Run| r.events.iter().map(key).collect::<Vec<_>>();
        assert_eq!(keys(&r), keys(&basic));
        let calls: Vec<&str> = r.calls.iter().map(String::as_str).collect();
        let at = |c: &str| calls.iter().position(|x| *x == c);
        // Per-table all-column logging satisfies preflight.
        assert!(at("table_logging").is_some());
        let build = at("dictionary_build").expect("DBMS_LOGMNR_D.BUILD");
        let last = at("last_dictionary startscn=1000").expect("the build at or before SCN 1000");
        assert!(build < last);
        // Every window starts at the dictionary build, with its log added.
        assert!(calls.contains(&"add_logfile name=/u01/arch/1_40_1122334455.arc"));
        let starts: Vec<&&str> = calls
            .iter()
            .filter(|c| c.starts_with("start_logmnr"))
            .collect();
        assert_eq!(starts[0], &"start_logmnr startscn=850 endscn=1007");
        assert!(
            starts
                .iter()
                .all(|c| c.starts_with("start_logmnr startscn=850 "))
        );
        // Without a build at or before the start SCN the source stops and says what to do.
        let r = run_with("session_basic.yaml", cfg, None, true, None).await;
        let error = r.error.expect("the source fails");
        assert!(
            error.contains(
                "no LogMiner dictionary build in the archived logs at or before SCN 1000"
            ),
            "{error}"
        );
        assert!(!r.calls.iter().any(|c| c.starts_with("start_logmnr")));
        // The contents query still reads only the window.
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("contents startscn=1000 endscn=1007"))
        );
    }

    #[tokio::test]
    async fn abandoned_transactions_stop_pinning_the_resume_scn() {
        let mut cfg = config();
        cfg.buffer.abandon_after = Some(chrono::Duration::seconds(300));
        let registry = prometheus::Registry::new();
        let metrics = OracleMetrics::register(&registry).unwrap();
        let full = run_with(
            "session_abandon.yaml",
            cfg.clone(),
            None,
            false,
            Some(metrics),
        )
        .await;
        assert_eq!(full.error, None);
        let ids: Vec<String> = full
            .events
            .iter()
            .map(|e| e.after.as_ref().unwrap()[0].to_json().to_string())
            .collect();
        // 2001 and 2004 belong to the transaction open since 09:00:00.
        assert_eq!(ids, ["2002", "2003", "2005"]);
        let resume: Vec<u64> = full
            .events
            .iter()
            .map(|e| match &e.position {
                Position::Oracle { resume_scn, .. } => *resume_scn,
                p => panic!("{p:?}"),
            })
            .collect();
        // Pinned by the open transaction's start (1000) until it is abandoned.
        assert_eq!(resume, [1000, 1012, 1032]);
        let text = metric_text(&registry);
        assert!(text.contains(r#"syncmesh_oracle_transactions_total{outcome="abandoned",pipeline="p",source="ora"} 1"#), "{text}");
        assert!(text.contains(r#"syncmesh_oracle_transactions_total{outcome="ignored",pipeline="p",source="ora"} 1"#), "{text}");
        restart_everywhere("session_abandon.yaml", cfg, &full).await;
    }

    #[tokio::test]
    async fn a_transaction_over_the_memory_limit_spills_and_emits_the_same_events() {
        let basic = run("session_basic.yaml", None, false).await;
        let dir =
            std::env::temp_dir().join(format!("syncmesh-oracle-spill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = config();
        cfg.buffer.memory_limit = 1;
        cfg.buffer.spill_dir = dir.clone();
        let r = run_with("session_basic.yaml", cfg, None, false, None).await;
        assert_eq!(r.error, None);
        let full = |r: &Run| {
            r.events
                .iter()
                .map(|e| (key(e), e.schema.version))
                .collect::<Vec<_>>()
        };
        assert_eq!(full(&r), full(&basic));
        // Spill files are read back at commit (or rollback) and deleted.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let _ = std::fs::remove_dir(&dir);
    }

    #[tokio::test]
    async fn metrics_follow_the_mining() {
        let registry = prometheus::Registry::new();
        let metrics = OracleMetrics::register(&registry).unwrap();
        let r = run_with("session_basic.yaml", config(), None, false, Some(metrics)).await;
        assert_eq!(r.error, None);
        let text = metric_text(&registry);
        for want in [
            r#"syncmesh_oracle_committed_scn{pipeline="p",source="ora",thread="1"} 1031"#,
            r#"syncmesh_oracle_committed_scn{pipeline="p",source="ora",thread="2"} 1031"#,
            r#"syncmesh_oracle_transactions_total{outcome="committed",pipeline="p",source="ora"} 5"#,
            r#"syncmesh_oracle_transactions_total{outcome="rolled_back",pipeline="p",source="ora"} 1"#,
            r#"syncmesh_oracle_active_transactions{pipeline="p",source="ora"} 0"#,
            r#"syncmesh_oracle_offset_scn{pipeline="p",source="ora"} 1041"#,
            r#"syncmesh_oracle_mining_window_scns{pipeline="p",source="ora"} "#,
            r#"syncmesh_oracle_fetch_duration_seconds_count{pipeline="p",source="ora"} "#,
            r#"syncmesh_oracle_lag_seconds{pipeline="p",source="ora"} "#,
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
    }

    fn resume_of(p: &Position) -> u64 {
        match p {
            Position::Oracle { resume_scn, .. } => *resume_scn,
            p => panic!("{p:?}"),
        }
    }

    /// The positions the runtime persists as each pushed item is dispatched and its event
    /// acknowledged at once (heartbeats go to no path).
    fn persisted(pushed: &[(bool, Position)]) -> Vec<Position> {
        let mut tracker = Tracker::new(1, vec![SourceProgress::default()]);
        pushed
            .iter()
            .map(|(heartbeat, p)| {
                let seq = tracker.dispatch(0, p.clone(), if *heartbeat { 0 } else { 1 }, false);
                tracker.ack(0, seq);
                tracker.progress()[0].position.clone().expect("committed")
            })
            .collect()
    }

    fn quiet_config() -> OracleSourceConfig {
        OracleSourceConfig {
            heartbeat_interval: Some(Duration::ZERO),
            ..config()
        }
    }

    #[tokio::test]
    async fn heartbeats_move_a_quiet_sources_position_but_never_past_an_open_transaction() {
        let registry = prometheus::Registry::new();
        let metrics = OracleMetrics::register(&registry).unwrap();
        let full = run_with(
            "session_quiet.yaml",
            quiet_config(),
            None,
            false,
            Some(metrics),
        )
        .await;
        assert_eq!(full.error, None);
        let ids: Vec<String> = full
            .events
            .iter()
            .map(|e| e.after.as_ref().unwrap()[0].to_json().to_string())
            .collect();
        assert_eq!(ids, ["3001", "3002"], "only BANK.ACCOUNTS is captured");
        let beats: Vec<u64> = full
            .pushed
            .iter()
            .filter(|(h, _)| *h)
            .map(|(_, p)| resume_of(p))
            .collect();
        assert!(beats.len() >= 8, "a heartbeat per window: {beats:?}");
        assert!(beats.is_sorted(), "{beats:?}");
        let saved = persisted(&full.pushed);
        // While the transaction that starts at SCN 1300 is open (until its event), nothing
        // persisted lies past its start, yet the position moved through the quiet SCNs.
        let late = full.pushed.iter().position(|(h, p)| {
            !h && matches!(
                p,
                Position::Oracle {
                    commit_scn: 1600,
                    ..
                }
            )
        });
        let late = late.expect("the late transaction's event");
        assert!(saved[..late].iter().all(|p| resume_of(p) <= 1300));
        assert!(
            saved[..late].iter().any(|p| resume_of(p) == 1300),
            "{saved:?}"
        );
        assert!(
            saved[..late]
                .iter()
                .any(|p| (1100..1300).contains(&resume_of(p)))
        );
        // After the last window (SCN 1800) the persisted position resumes at 1801.
        let last = saved.last().unwrap();
        assert_eq!(resume_of(last), 1801, "{last:?}");
        assert!(
            full.pushed.last().unwrap().0,
            "the last item is a heartbeat"
        );
        let text = metric_text(&registry);
        assert!(
            text.contains(r#"syncmesh_oracle_heartbeat_scn{pipeline="p",source="ora"} 1801"#),
            "{text}"
        );
        assert!(text.contains(&format!(
            r#"syncmesh_oracle_heartbeats_total{{pipeline="p",source="ora"}} {}"#,
            beats.len()
        )));

        // Without heartbeats the saved position stays at the last event's (SCN 1600).
        let plain = run("session_quiet.yaml", None, false).await;
        assert!(plain.pushed.iter().all(|(h, _)| !h));
        assert_eq!(resume_of(persisted(&plain.pushed).last().unwrap()), 1600);

        // A restart from every persisted position emits the rest exactly once, starting to
        // mine at the persisted resume SCN.
        for (k, at) in saved.iter().enumerate() {
            if resume_of(at) > 1800 {
                // Past the recording's last SCN: nothing is left to mine.
                continue;
            }
            let at: Position = serde_json::from_value(serde_json::to_value(at).unwrap()).unwrap();
            let rest = run_with(
                "session_quiet.yaml",
                quiet_config(),
                Some(at.clone()),
                false,
                None,
            )
            .await;
            assert_eq!(rest.error, None);
            let before = full.pushed[..=k].iter().filter(|(h, _)| !h).count();
            let mut joined: Vec<_> = full.events[..before].iter().map(key).collect();
            joined.extend(rest.events.iter().map(key));
            assert_eq!(
                joined,
                full.events.iter().map(key).collect::<Vec<_>>(),
                "restart at {at}"
            );
            let first_start = rest
                .calls
                .iter()
                .find(|c| c.starts_with("start_logmnr"))
                .unwrap();
            assert!(
                first_start.starts_with(&format!("start_logmnr startscn={} ", resume_of(&at))),
                "{first_start}"
            );
        }
    }

    fn lob_config() -> OracleSourceConfig {
        OracleSourceConfig {
            filter: TableFilter::new(&["BANK.DOCS".into()], &[]).unwrap(),
            ..config()
        }
    }

    /// `(op, ID, TITLE, BODY, IMG)` of each event, as JSON.
    fn docs(r: &Run) -> Vec<(String, String, String, String, String)> {
        r.events
            .iter()
            .map(|e| {
                let v = e.after.as_ref().unwrap();
                let col = |i: usize| v.get(i).map_or("-".into(), |v| v.to_json().to_string());
                (e.op.name().to_string(), col(0), col(1), col(2), col(3))
            })
            .collect()
    }

    #[tokio::test]
    async fn lob_writes_are_assembled_into_their_events() {
        let registry = prometheus::Registry::new();
        let metrics = OracleMetrics::register(&registry).unwrap();
        let mut cfg = lob_config();
        // Every transaction spills: LOB rows are read back from disk like the rest.
        let dir = tempfile::tempdir().unwrap();
        cfg.buffer.memory_limit = 1;
        cfg.buffer.spill_dir = dir.path().to_path_buf();
        let full = run_with("session_lob.yaml", cfg.clone(), None, false, Some(metrics)).await;
        assert_eq!(full.error, None);
        let d = |op: &str, id: &str, title: &str, body: &str, img: &str| {
            (
                op.to_string(),
                id.to_string(),
                title.to_string(),
                body.to_string(),
                img.to_string(),
            )
        };
        assert_eq!(
            docs(&full),
            [
                // Multi-chunk CLOB (one chunk split by CSF) and a BLOB in two writes.
                d(
                    "insert",
                    "1",
                    r#""first""#,
                    r#""Hello, it's a multi-chunk world""#,
                    r#""yv66vgE=""#
                ),
                // An update, then the CLOB trimmed to nothing and written again.
                d("update", "1", r#""second""#, r#""Bye""#, "null"),
                // Only the LOB changed: an update of that column (the key from the locator).
                d("update", "1", "null", r#""Goodbye!""#, "null"),
                // Written, two characters erased to spaces, trimmed.
                d("insert", "2", r#""erase""#, r#""ab  ef""#, r#""""#),
                // Writes spread over three mining windows.
                d("insert", "4", r#""slow""#, r#""one two three""#, r#""""#),
                // The broken fragment's row keeps what its insert wrote; the next row is whole.
                d("insert", "5", r#""broken""#, r#""""#, r#""""#),
                d("insert", "6", r#""fine""#, r#""""#, r#""""#),
                // Written, the row updated, written again: the insert has the first value,
                // the update the value it carried on to.
                d("insert", "7", r#""twice""#, r#""abc""#, r#""""#),
                d("update", "7", r#""again""#, r#""abcdef""#, "null"),
            ]
        );
        // The LOB-only update's before image holds the key it was located by.
        let before = full.events[2].before.as_ref().unwrap();
        assert_eq!(before[0], Value::Int(1));
        assert_eq!(before[2], Value::Null);
        // The slow transaction's writes (SCN 1103, 1150, 1185) fall in different windows.
        let contents: Vec<&String> = full
            .calls
            .iter()
            .filter(|c| c.starts_with("contents"))
            .collect();
        for window in [
            "startscn=1056 endscn=1119",
            "startscn=1120 endscn=1183",
            "startscn=1184 endscn=1240",
        ] {
            assert!(contents.iter().any(|c| c.ends_with(window)), "{contents:?}");
        }
        let text = metric_text(&registry);
        for want in [
            r#"syncmesh_oracle_lob_columns_total{outcome="assembled",pipeline="p",source="ora"} 8"#,
            r#"syncmesh_oracle_lob_columns_total{outcome="bad",pipeline="p",source="ora"} 2"#,
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "spill files deleted"
        );
        restart_everywhere("session_lob.yaml", cfg, &full).await;
    }

    #[tokio::test]
    async fn a_lob_that_cannot_be_assembled_is_a_dead_letter_naming_row_column_and_scn() {
        let r = run_with("session_lob.yaml", lob_config(), None, false, None).await;
        assert_eq!(r.error, None);
        let reasons: Vec<&str> = r.bad.iter().map(|(_, reason)| reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:#?}");
        // The fragment itself: its row, SCN and byte.
        for want in [
            "SCN 1203, XID 50000700D7000000",
            "column SQL_REDO at byte 10: LOB fragment: expected a closing `'` of the string",
        ] {
            assert!(reasons[0].contains(want), "{want}: {}", reasons[0]);
        }
        // The value it belonged to: the locator row, the column and the row's key.
        for want in [
            "SCN 1202, XID 50000700D7000000",
            "LOB column BANK.DOCS.BODY of the row where ID = 5: value not assembled: a fragment of it could not be read",
        ] {
            assert!(reasons[1].contains(want), "{want}: {}", reasons[1]);
        }
        // Part of a LOB whose earlier value the redo does not hold.
        for want in [
            "SCN 1211",
            "LOB column BANK.DOCS.BODY of the row where ID = 6: value not assembled: units 1..2 keep their value from before this transaction, which the redo does not hold, and its length before it is not in the redo either (no trim ends it)",
        ] {
            assert!(reasons[2].contains(want), "{want}: {}", reasons[2]);
        }
        match &r.bad[2].0 {
            Position::Oracle {
                scn, commit_scn, ..
            } => assert_eq!((*scn, *commit_scn), (1211, 1213)),
            p => panic!("{p:?}"),
        }
    }

    #[tokio::test]
    async fn with_lob_assembly_off_lob_columns_carry_what_the_statement_wrote() {
        let mut cfg = lob_config();
        cfg.buffer.lobs = false;
        let r = run_with("session_lob.yaml", cfg, None, false, None).await;
        assert_eq!(r.error, None);
        assert!(r.bad.is_empty());
        let bodies: Vec<String> = docs(&r)
            .into_iter()
            .map(|d| format!("{} {} {}", d.0, d.1, d.3))
            .collect();
        assert_eq!(
            bodies,
            [
                r#"insert 1 """#,
                "update 1 null",
                r#"insert 2 """#,
                r#"insert 4 """#,
                r#"insert 5 """#,
                r#"insert 6 """#,
                r#"insert 7 """#,
                "update 7 null"
            ]
        );
    }

    fn metric_text(registry: &prometheus::Registry) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }
}
