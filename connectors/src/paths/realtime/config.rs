//! How the real-time path is configured. The doc comments here are meant to become the
//! `spec.realtime` reference of the `SyncPipeline` CRD.

use crate::event::TableId;
use std::collections::BTreeMap;
use std::time::Duration;

/// How a change event is written as a Kafka record value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaFormat {
    /// The Debezium envelope `{before, after, source, op, ts_ms, transaction}` (the default):
    /// what Flink, StarRocks Routine Load and ksqlDB read.
    #[default]
    DebeziumJson,
    /// Canal's JSON (`{data, old, type, database, table, pkNames, ...}`), as TiCDC writes it.
    /// Values are strings typed by `mysqlType`; `old` lists the columns an update changed;
    /// `_tidb.commitTs` is set for events from TiDB.
    CanalJson,
}

impl KafkaFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaFormat::DebeziumJson => "debezium-json",
            KafkaFormat::CanalJson => "canal-json",
        }
    }
}

/// The real-time path: every batch of events is produced to Kafka in one transaction, together
/// with the source positions it reaches, so a read_committed consumer sees each event once.
#[derive(Debug, Clone, PartialEq)]
pub struct RealtimeConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic of each table. `{pipeline}`, `{schema}` and `{table}` are replaced; characters
    /// Kafka does not allow in a topic name become `_`. Default `{pipeline}.{schema}.{table}`.
    pub topic_template: String,
    /// The producer's `transactional.id`. `{pipeline}` is replaced. Default
    /// `syncmesh-{pipeline}`. Two workers with the same id fence each other: the newer one
    /// aborts what the older left open.
    pub transactional_id: String,
    /// The compacted topic holding the last committed position of each source, written in
    /// the same transaction as the events. `{pipeline}` is replaced. Default
    /// `_syncmesh.{pipeline}.positions`.
    pub positions_topic: String,
    /// Commit a transaction once this many events are pending. Default 5,000.
    pub max_batch_events: usize,
    /// Commit a transaction once its oldest pending event is this old. Default 20 ms.
    pub linger: Duration,
    /// The record value format. Default `DebeziumJson`.
    pub format: KafkaFormat,
    /// Partitions of each table topic the path creates (existing topics are left as they
    /// are). Records are keyed by primary key, so a row's changes stay in order. Default 1.
    pub partitions: i32,
    /// Replication factor of the topics the path creates. Default 1.
    pub replication_factor: i32,
    /// How long starting the producer (`init_transactions`), committing and aborting a
    /// transaction, and creating topics may take before the path fails. Default 60 s.
    pub operation_timeout: Duration,
    /// Extra librdkafka properties for the producer and the admin client (`security.protocol`,
    /// `sasl.*`, `compression.type`, `transaction.timeout.ms`, ...). `bootstrap.servers`,
    /// `transactional.id` and `enable.idempotence` are set by the path and cannot be overridden.
    pub properties: BTreeMap<String, String>,
    /// A transaction open longer than this marks the path degraded (see
    /// [`RealtimePath::health`](super::RealtimePath::health)) until it ends. Default 5 s.
    pub degraded_after: Duration,
    /// Where records the brokers refuse go, with the reason and the position. `{pipeline}` is
    /// replaced. Default `_syncmesh.{pipeline}.dead-letters`.
    pub dead_letter_topic: String,
    /// How long a failed transaction is retried in place before the path fails. Default 300 s.
    pub retry_for: Duration,
}

impl RealtimeConfig {
    pub const DEFAULT_TOPIC_TEMPLATE: &'static str = "{pipeline}.{schema}.{table}";
    pub const DEFAULT_TRANSACTIONAL_ID: &'static str = "syncmesh-{pipeline}";
    pub const DEFAULT_POSITIONS_TOPIC: &'static str = "_syncmesh.{pipeline}.positions";
    pub const DEFAULT_DEAD_LETTER_TOPIC: &'static str = "_syncmesh.{pipeline}.dead-letters";

    /// The defaults, with `brokers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic_template: Self::DEFAULT_TOPIC_TEMPLATE.into(),
            transactional_id: Self::DEFAULT_TRANSACTIONAL_ID.into(),
            positions_topic: Self::DEFAULT_POSITIONS_TOPIC.into(),
            max_batch_events: 5_000,
            linger: Duration::from_millis(20),
            format: KafkaFormat::DebeziumJson,
            partitions: 1,
            replication_factor: 1,
            operation_timeout: Duration::from_secs(60),
            properties: BTreeMap::new(),
            degraded_after: Duration::from_secs(5),
            dead_letter_topic: Self::DEFAULT_DEAD_LETTER_TOPIC.into(),
            retry_for: Duration::from_secs(300),
        }
    }

    /// The topic of `table` in `pipeline`.
    pub fn topic_for(&self, pipeline: &str, table: &TableId) -> String {
        topic_name(
            &self
                .topic_template
                .replace("{pipeline}", pipeline)
                .replace("{schema}", &table.schema)
                .replace("{table}", &table.table),
        )
    }

    pub fn transactional_id_for(&self, pipeline: &str) -> String {
        self.transactional_id.replace("{pipeline}", pipeline)
    }

    pub fn positions_topic_for(&self, pipeline: &str) -> String {
        topic_name(&self.positions_topic.replace("{pipeline}", pipeline))
    }

    pub fn dead_letter_topic_for(&self, pipeline: &str) -> String {
        topic_name(&self.dead_letter_topic.replace("{pipeline}", pipeline))
    }

    /// The largest record value the producer may send, from `message.max.bytes` (librdkafka's
    /// default 1,000,000), less room for the key and headers.
    pub fn max_value_bytes(&self) -> usize {
        self.properties
            .get("message.max.bytes")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1_000_000)
            .saturating_sub(4_096)
    }
}

/// Kafka topic names are `[a-zA-Z0-9._-]{1,249}`: anything else becomes `_`.
pub fn topic_name(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(249)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_resolve_to_legal_topic_names() {
        let c = RealtimeConfig::new("b:9092");
        assert_eq!(
            c.topic_for("p1", &TableId::new("bank", "ledger$2")),
            "p1.bank.ledger_2"
        );
        assert_eq!(c.positions_topic_for("p1"), "_syncmesh.p1.positions");
        assert_eq!(c.transactional_id_for("p1"), "syncmesh-p1");
        assert_eq!(c.dead_letter_topic_for("p1"), "_syncmesh.p1.dead-letters");
    }
}
