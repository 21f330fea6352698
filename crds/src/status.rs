//! `status`: what the pipeline is doing, written by the worker and the operator.
//!
//! Ownership, so that two server-side-apply field managers never fight over a field:
//! - the operator (`syncmesh`) writes `observedGeneration`, `phase` and `conditions`;
//! - the worker (`syncmesh-worker`) writes everything else: what it read, its positions and
//!   lag, the sink tables' breakers and the checks' results (`breaker` and `lastCheck` are
//!   one-word summaries of those for `kubectl get sp`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a pipeline.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncPipelineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Running, Completed, Degraded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Events read from all sources in the current run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_read: Option<u64>,
    /// Time from the newest source commit to its acknowledgement, e.g. `1.2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<String>,
    /// The last acknowledged position per source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceStatus>,
    /// Conditions, following the Kubernetes API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The circuit breaker and shadow table of each sink table the pipeline has written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sink_tables: Vec<SinkTableStatus>,
    /// `closed` when every sink table's breaker is closed, else the worst state and how many
    /// tables are in it, e.g. `open (1/3)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
    /// The verdict of the most recent consistency check over all tables: `Passed`, `Failed`
    /// or `Error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    /// The most recent consistency check of each table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<TableCheckStatus>,
    /// When the worker last wrote this status (RFC 3339); the operator treats a worker that
    /// has not written for a while as not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<String>,
}

/// The most recent consistency check of one table.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableCheckStatus {
    /// The source table, `schema.table`.
    pub table: String,
    /// The sink table it was compared with.
    pub sink_table: String,
    /// `Passed`, `Failed` or `Error` (the check could not run).
    pub result: String,
    /// When the check finished (RFC 3339).
    pub finished_at: String,
    #[serde(default)]
    pub source_rows: u64,
    #[serde(default)]
    pub sink_rows: u64,
    /// Rows in the source and not in the sink.
    #[serde(default)]
    pub missing: u64,
    /// Rows in the sink and not in the source.
    #[serde(default)]
    pub extra: u64,
    /// Rows on both sides with different values.
    #[serde(default)]
    pub different: u64,
    /// (missing + extra + different) / max(source rows, sink rows).
    #[serde(default)]
    pub diff_ratio: f64,
    /// Checks failed in a row, this one included; three trip the breaker.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Why the check could not run, for `Error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A sink table's circuit breaker and shadow table.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SinkTableStatus {
    /// The sink table.
    pub table: String,
    /// `closed`, `open`, `half-open`, or `promoted` (the shadow replaced the table; the old
    /// table is kept until released or rolled back).
    pub breaker: String,
    /// Why the breaker is in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the breaker entered this state (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The shadow table that takes the writes while the breaker is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
    /// Rows written to the shadow table instead of the table, in this run.
    #[serde(default)]
    pub diverted_rows: u64,
    /// Diverted events not yet replayed into the table.
    #[serde(default)]
    pub pending_replay: u64,
    /// Consecutive failed consistency checks.
    #[serde(default)]
    pub failed_checks: u32,
    /// The p99 write latency over the breaker's window, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_p99_ms: Option<u64>,
}

/// Progress of one source.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub name: String,
    /// The last position every path has acknowledged, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// Time from the source commit of the last acknowledged event to its acknowledgement,
    /// e.g. `1.2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<String>,
    /// Events read from this source in the current run.
    #[serde(default)]
    pub events_read: u64,
}

/// A condition (type, status, reason, message), as in `metav1.Condition`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Ready, Progressing, Degraded, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// A CamelCase reason.
    pub reason: String,
    /// A human-readable message.
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
