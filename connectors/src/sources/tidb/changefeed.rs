//! The TiCDC changefeed source: consumes the changefeed's topics from Kafka, merges the
//! partitions in commit order and emits change events.
//!
//! Resume contract: the committed position holds, per `topic/partition`, the offset to read
//! again and the watermark seen before it; the consumer is assigned those offsets (no
//! consumer group, no offsets committed to Kafka) and everything at or before the committed
//! `(commit_ts, index)` is dropped on the way out.

use super::merge::{Merger, Released};
use super::message::{DecodeError, Message, RowChange};
use super::metrics::{TidbMetrics, tso_physical_ms};
use super::schemas::Schemas;
use super::snapshot::{SnapshotError, Snapshotter, Window};
use super::{canal, debezium};
use crate::deadletter::DeadLetter;
use crate::event::{ChangeEvent, Operation, Position, SnapshotCursor, TableId, Transaction};
use crate::runtime::{Emitter, Source, SourceError, SourceItem, SourceProgress, StopSignal};
use globset::{Glob, GlobSet, GlobSetBuilder};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;
use syncmesh_crds as crd;

#[derive(Debug, thiserror::Error)]
pub enum TidbError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("source `{source_name}`: Kafka: {error}")]
    Kafka {
        source_name: String,
        error: rdkafka::error::KafkaError,
    },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("source `{source_name}`: topic `{topic}`: {reason}")]
    Topic {
        source_name: String,
        topic: String,
        reason: String,
    },
}

pub struct ChangefeedSource {
    name: Arc<str>,
    pipeline: String,
    spec: crd::TidbSource,
    /// The spec's field path, for errors found at run time.
    at: String,
    tables: Option<GlobSet>,
    metrics: Option<TidbMetrics>,
}

impl ChangefeedSource {
    /// Checks the spec; connects to nothing. `at` is the field path used in errors.
    pub fn new(
        pipeline: &str,
        name: &str,
        spec: &crd::TidbSource,
        at: &str,
    ) -> Result<Self, TidbError> {
        let tables = if spec.tables.is_empty() {
            None
        } else {
            let mut b = GlobSetBuilder::new();
            for (j, t) in spec.tables.iter().enumerate() {
                b.add(Glob::new(t).map_err(|e| TidbError::Invalid {
                    field: format!("{at}.tidb.tables[{j}]"),
                    reason: e.to_string(),
                })?);
            }
            Some(b.build().map_err(|e| TidbError::Invalid {
                field: format!("{at}.tidb.tables"),
                reason: e.to_string(),
            })?)
        };
        Ok(Self {
            name: name.into(),
            pipeline: pipeline.to_string(),
            spec: spec.clone(),
            at: at.to_string(),
            tables,
            metrics: None,
        })
    }

    pub fn with_metrics(mut self, metrics: TidbMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn consumer(&self) -> Result<StreamConsumer, TidbError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.spec.brokers)
            .set(
                "group.id",
                format!("syncmesh-{}-{}", self.pipeline, self.name),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        for (k, v) in &self.spec.properties {
            config.set(k, v);
        }
        config.create().map_err(|error| self.kafka(error))
    }

    fn kafka(&self, error: rdkafka::error::KafkaError) -> TidbError {
        TidbError::Kafka {
            source_name: self.name.to_string(),
            error,
        }
    }

    /// Every `topic/partition` of the changefeed's topics.
    fn partitions(&self, consumer: &StreamConsumer) -> Result<Vec<(String, i32)>, TidbError> {
        let mut out = Vec::new();
        for topic in &self.spec.topics {
            let md = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .map_err(|e| self.kafka(e))?;
            let t = md.topics().iter().find(|t| t.name() == topic);
            match t {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    out.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
                }
                Some(t) => {
                    return Err(TidbError::Topic {
                        source_name: self.name.to_string(),
                        topic: topic.clone(),
                        reason: match t.error() {
                            Some(e) => format!(
                                "{e:?}: create the changefeed first (TiCDC creates its topics)"
                            ),
                            None => "has no partitions".into(),
                        },
                    });
                }
                None => {
                    return Err(TidbError::Topic {
                        source_name: self.name.to_string(),
                        topic: topic.clone(),
                        reason: "not found on the brokers".into(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Exports how far the snapshot has got: the chunks still to read, estimated (0 when done).
    fn report_chunks(
        &self,
        window: &Option<Window>,
        s: &Snapshotter,
        cursor: &Option<SnapshotCursor>,
    ) {
        if let Some(m) = &self.metrics {
            let left = if window.is_some() {
                s.chunks_remaining(cursor.as_ref())
            } else {
                0
            };
            m.snapshot_chunks_remaining
                .with_label_values(&[self.pipeline.as_str(), &*self.name])
                .set(i64::try_from(left).unwrap_or(i64::MAX));
        }
    }

    fn decode(&self, key: Option<&[u8]>, payload: &[u8]) -> Result<Message, DecodeError> {
        match self.spec.protocol {
            crd::TicdcProtocol::CanalJson => canal::decode(payload),
            crd::TicdcProtocol::Debezium => debezium::decode(key, payload),
        }
    }

    /// Drops rows and DDL of tables the source does not take (watermarks always pass).
    /// The snapshot's watermark table always passes.
    fn keep(&self, message: Message, watermarks: &Option<TableId>) -> Message {
        let Some(set) = &self.tables else {
            return message;
        };
        match message {
            Message::Rows(rows) => Message::Rows(
                rows.into_iter()
                    .filter(|r| {
                        set.is_match(r.table.to_string()) || Some(&r.table) == watermarks.as_ref()
                    })
                    .collect(),
            ),
            Message::Ddl(d) if !set.is_match(d.table.to_string()) => Message::Rows(Vec::new()),
            other => other,
        }
    }
}

fn event_of(source: &Arc<str>, schemas: &mut Schemas, released: Released) -> (ChangeEvent, String) {
    let transaction = |ts: u64, ms: Option<i64>| {
        Some(Transaction {
            id: ts.to_string(),
            commit_time: ms
                .or(Some(tso_physical_ms(ts)))
                .and_then(chrono::DateTime::from_timestamp_millis),
        })
    };
    match released {
        Released::Row(row, position) => {
            let schema = schemas.for_row(&row);
            let table = row.table.to_string();
            let RowChange {
                commit_ts,
                op,
                before,
                after,
                event_time_ms,
                ..
            } = row;
            (
                ChangeEvent {
                    source: source.clone(),
                    position,
                    transaction: transaction(commit_ts, event_time_ms),
                    schema,
                    op,
                    before,
                    after,
                    ddl: None,
                },
                table,
            )
        }
        Released::Ddl(ddl, position) => {
            let schema = schemas.for_ddl(&ddl);
            let table = ddl.table.to_string();
            (
                ChangeEvent {
                    source: source.clone(),
                    position,
                    transaction: transaction(ddl.commit_ts, ddl.event_time_ms),
                    schema,
                    op: Operation::Ddl,
                    before: None,
                    after: None,
                    ddl: Some(ddl.sql),
                },
                table,
            )
        }
    }
}

/// Attaches the snapshot cursor to a TiDB position.
fn with_cursor(mut position: Position, cursor: &Option<SnapshotCursor>) -> Position {
    if let Position::Tidb { snapshot, .. } = &mut position {
        snapshot.clone_from(cursor);
    }
    position
}

/// The `mark` column of a watermark-table row change.
fn mark_of(row: &RowChange) -> Option<&str> {
    let i = row.columns.iter().position(|c| c.name == "mark")?;
    match row.after.as_ref()?.get(i)? {
        crate::event::Value::String(s) => Some(s),
        _ => None,
    }
}

#[async_trait::async_trait]
impl Source for ChangefeedSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        self: Box<Self>,
        resume: SourceProgress,
        mut out: Emitter,
        mut stop: StopSignal,
    ) -> Result<(), SourceError> {
        let consumer = self.consumer()?;
        let parts = self.partitions(&consumer)?;
        let keys: Vec<String> = parts.iter().map(|(t, p)| format!("{t}/{p}")).collect();
        let mut merger = Merger::new(&keys, resume.position.as_ref());
        let start = merger.start_offsets();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), key) in parts.iter().zip(&keys) {
            let offset = start.get(key).copied().unwrap_or(0);
            tpl.add_partition_offset(topic, *partition, Offset::Offset(offset))
                .map_err(|e| self.kafka(e))?;
        }
        consumer.assign(&tpl).map_err(|e| self.kafka(e))?;
        tracing::info!(source = %self.name, partitions = keys.len(), ?start, "changefeed assigned");

        let mut schemas = Schemas::default();
        let labels = [self.pipeline.as_str(), &*self.name];

        // The initial snapshot: where it stands, and the chunk window open now.
        let mut snapshotter = match &self.spec.snapshot {
            Some(spec) => Some(
                Snapshotter::connect(spec, format!("{}/{}", self.pipeline, self.name), &self.at)
                    .await?,
            ),
            None => None,
        };
        let mut cursor: Option<SnapshotCursor> = match (&snapshotter, &resume.position) {
            (None, _) => None,
            (
                Some(_),
                Some(Position::Tidb {
                    snapshot: Some(c), ..
                }),
            ) => Some(c.clone()),
            (Some(s), _) => Some(s.start()),
        };
        let mut window = None;
        if let (Some(s), Some(c)) = (snapshotter.as_mut(), &cursor) {
            for t in s.tables().to_vec() {
                schemas.seed(s.schema(&t).await?);
            }
            window = s.open(c).await?;
            self.report_chunks(&window, s, &cursor);
        }
        let watermark_table = snapshotter.as_ref().map(|s| s.watermark_table.clone());

        loop {
            let message = tokio::select! {
                _ = stop.stopped() => break,
                m = consumer.recv() => m.map_err(|e| self.kafka(e))?,
            };
            let topic = message.topic().to_string();
            let key = format!("{topic}/{}", message.partition());
            let offset = message.offset();
            let payload = message.payload().unwrap_or_default();
            match self.decode(message.key(), payload) {
                Ok(decoded) => merger.push(&key, offset, self.keep(decoded, &watermark_table)),
                Err(e) => {
                    let letter = DeadLetter {
                        source: self.name.to_string(),
                        position: with_cursor(merger.current_position(), &cursor),
                        reason: format!("{key} offset {offset}: {e}"),
                        raw: payload.to_vec(),
                    };
                    out.push(SourceItem::Bad(letter)).await?;
                    out.flush().await?;
                    continue;
                }
            }
            let released = merger.release();
            if let Some(m) = &self.metrics {
                let resolved = merger.resolved_ts();
                m.resolved_ts
                    .with_label_values(&labels)
                    .set(resolved as i64);
                if resolved > 0 {
                    let lag = chrono::Utc::now().timestamp_millis() - tso_physical_ms(resolved);
                    m.checkpoint_lag_ms.with_label_values(&labels).set(lag);
                }
                m.held.with_label_values(&labels).set(merger.held() as i64);
            }
            if released.is_empty() {
                continue;
            }
            for r in released {
                // Snapshot watermarks steer the window and are not emitted.
                if let Released::Row(row, position) = &r
                    && Some(&row.table) == watermark_table.as_ref()
                {
                    let Some(w) = window.as_mut() else { continue };
                    let mark = mark_of(row);
                    if mark == Some(w.low.as_str()) {
                        w.opened = true;
                    } else if mark == Some(w.high.as_str())
                        && let Some(w) = window.take()
                    {
                        let (rows, next, schema) = w.into_rows();
                        let table = schema.table.to_string();
                        let Position::Tidb {
                            commit_ts,
                            index,
                            offsets,
                            ..
                        } = position.clone()
                        else {
                            continue;
                        };
                        // The high watermark is alone in its transaction: the indices after
                        // it are free for the chunk's rows.
                        for (i, (keys, values)) in rows.into_iter().enumerate() {
                            let position = Position::Tidb {
                                commit_ts,
                                index: index + 1 + i as u32,
                                offsets: offsets.clone(),
                                snapshot: Some(SnapshotCursor {
                                    table: Some(table.clone()),
                                    after: keys,
                                }),
                            };
                            out.push(SourceItem::Event(ChangeEvent {
                                source: self.name.clone(),
                                position,
                                transaction: None,
                                schema: schema.clone(),
                                op: Operation::Read,
                                before: None,
                                after: Some(values),
                                ddl: None,
                            }))
                            .await?;
                            if let Some(m) = &self.metrics {
                                m.snapshot_rows
                                    .with_label_values(&[
                                        self.pipeline.as_str(),
                                        &*self.name,
                                        &table,
                                    ])
                                    .inc();
                            }
                        }
                        cursor = Some(next);
                        if let (Some(s), Some(c)) = (snapshotter.as_mut(), &cursor) {
                            window = s.open(c).await?;
                            self.report_chunks(&window, s, &cursor);
                            if window.is_none() {
                                tracing::info!(source = %self.name, "snapshot complete");
                            }
                        }
                    }
                    continue;
                }
                if let (Released::Row(row, _), Some(w)) = (&r, window.as_mut())
                    && row.table == w.table
                {
                    w.supersede(row.key_text());
                }
                let (mut event, table) = event_of(&self.name, &mut schemas, r);
                event.position = with_cursor(event.position, &cursor);
                if let Some(m) = &self.metrics {
                    m.events
                        .with_label_values(&[self.pipeline.as_str(), &*self.name, &table])
                        .inc();
                }
                out.push(SourceItem::Event(event)).await?;
            }
            out.flush().await?;
            if let Some(m) = &self.metrics {
                let d = m.duplicates.with_label_values(&labels);
                d.inc_by(merger.stats.duplicates.saturating_sub(d.get()));
            }
        }
        out.flush().await?;
        Ok(())
    }
}
