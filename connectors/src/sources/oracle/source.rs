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
                let rows = s
                    .query(
                        miner::sql::LAST_DICTIONARY,
                        &[(
                            "startscn",
                            super::session::Bind::Int(from.max(pre.current_scn)),
                        )],
                    )
                    .await
                    .map_err(|source| {
                        self.miner_err(MinerError::Session {
                            statement: "V$ARCHIVED_LOG (dictionary)",
                            source,
                        })
                    })?;
                rows.iter().next().and_then(|r| r.number("FIRST_CHANGE#"))
            }
        };
        let query = contents_query(&self.config.filter);
        let mut window = self.config.miner.window_initial.max(1);
        let labels = [self.pipeline.as_str(), &*self.name];
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
                self.emit(&mut stream, out).await?;
            }
            stream
                .end_window(&mut lookup)
                .map_err(|e| self.stream_err(e))?;
            self.emit(&mut stream, out).await?;
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

    async fn emit(&self, stream: &mut ChangeStream, out: &mut Emitter) -> Result<(), SourceError> {
        let items: Vec<Emitted> = stream.drain().collect();
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
        }
        Ok(())
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
