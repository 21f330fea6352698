//! `spec`: what the pipeline reads, how it routes, where it writes.

use crate::SyncPipelineStatus;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A pipeline that captures changes from its sources, routes each change to the real-time path
/// (Kafka) and/or the batch path (object-storage snapshots), applies them to sink tables and
/// reports every run as OpenLineage events.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "syncmesh.io",
    version = "v1alpha1",
    kind = "SyncPipeline",
    plural = "syncpipelines",
    singular = "syncpipeline",
    shortname = "sp",
    namespaced,
    status = "SyncPipelineStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Events","type":"integer","jsonPath":".status.eventsRead"}"#,
    printcolumn = r#"{"name":"Lag","type":"string","jsonPath":".status.lag"}"#,
    printcolumn = r#"{"name":"Breaker","type":"string","jsonPath":".status.breaker"}"#,
    printcolumn = r#"{"name":"Last Check","type":"string","jsonPath":".status.lastCheck"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncPipelineSpec {
    /// Where changes come from. Each source has a unique name; positions, metrics and lineage
    /// inputs are kept per source.
    pub sources: Vec<SourceSpec>,
    /// Ordered routing rules. The first rule whose match fits an event decides the paths the
    /// event takes; events no rule matches take `defaultRoute`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteSpec>,
    /// Paths for events that no rule matches. Defaults to `[batch]`.
    #[serde(default = "default_route")]
    pub default_route: Vec<PathName>,
    /// The batch path: events are collected per table into snapshots in object storage (a
    /// snapshot is visible only once its manifest is written), then applied to the sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSpec>,
    /// The real-time path: each batch of events is produced to Kafka in one transaction, a
    /// topic per table, together with the source positions it reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime: Option<RealtimeSpec>,
    /// The sink database that paths apply changes to (upsert and delete by primary key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkSpec>,
    /// Where records that cannot be read or applied go, with the reason and their position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterSpec>,
    /// Where OpenLineage run events go. Without it, no lineage is emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<LineageSpec>,
    /// Consistency checks of the sink tables against a source database, on a cron schedule
    /// (by default daily at 02:00, the T+1 check) and on demand. Needs `sink`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckSpec>,
    /// How the operator runs this pipeline's worker on Kubernetes (image, service account,
    /// resources, and environment variables taken from Secrets). Ignored by `syncmesh run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerSpec>,
}

fn default_route() -> Vec<PathName> {
    vec![PathName::Batch]
}

/// One source. Set exactly one of the kind fields (`flatFile`, ...).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceSpec {
    /// Unique within the pipeline; used in positions, metrics and routing rules.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$"),
        length(min = 1, max = 63)
    )]
    pub name: String,
    /// Fixed-width records from flat files, described by a COBOL copybook or a YAML layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat_file: Option<FlatFileSource>,
    /// TiDB change data: a TiCDC changefeed read from Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tidb: Option<TidbSource>,
    /// Oracle change data from the redo logs through LogMiner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oracle: Option<OracleSource>,
}

/// The source kind fields, for messages.
pub const SOURCE_KINDS: &str = "`flatFile`, `tidb`, `oracle`";

impl SourceSpec {
    /// The kind fields that are set; exactly one is valid.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.flat_file.is_some() {
            kinds.push("flatFile");
        }
        if self.tidb.is_some() {
            kinds.push("tidb");
        }
        if self.oracle.is_some() {
            kinds.push("oracle");
        }
        kinds
    }
}

/// Oracle redo through LogMiner (see docs/oracle.md). The position is the SCN to mine from
/// again plus the commit SCN emitted per redo thread, so a restart neither loses nor repeats.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OracleSource {
    /// Where the database is: `oracle://host:port/service_name` (no credentials in the URL).
    #[schemars(length(min = 1))]
    pub url: String,
    /// The connector's database user and its password, by reference only.
    pub credentials: OracleCredentials,
    /// `OWNER.TABLE` globs of the tables to capture (names as the dictionary stores them,
    /// usually upper case). Empty: every table outside Oracle's own schemas. Plain names are
    /// pushed down into the LogMiner query.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// `OWNER.TABLE` globs of tables not to capture, applied after `include`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Where LogMiner reads the data dictionary from.
    #[serde(default)]
    pub dictionary: OracleDictionary,
    /// The SCN a source with no saved position starts mining at; default: the current SCN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_scn: Option<u64>,
    /// Mining window sizes in SCNs: the window doubles while behind and halves once caught up.
    #[serde(default)]
    pub window: OracleWindow,
    /// Transactions open longer than this (database time) are abandoned: dropped, counted
    /// and logged, so they stop holding back the resume SCN. 0 never abandons.
    #[serde(default = "default_abandon_after")]
    pub abandon_after_seconds: u64,
    /// Bytes one transaction may hold in memory before its rows spill to disk.
    #[serde(default = "default_txn_memory")]
    pub transaction_memory_limit_bytes: u64,
    /// Directory for spilled transactions; default: the system temp directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill_dir: Option<String>,
    /// Milliseconds to wait when mining has caught up with the current SCN.
    #[serde(default = "default_oracle_poll")]
    pub poll_interval_ms: u64,
    /// Heartbeat: when the captured tables have had no committed change for this many
    /// milliseconds, the source still reports the SCN it has mined past (never past the start
    /// of an open transaction), and that becomes the saved resume point once everything
    /// before it is delivered. It goes to no sink. Without it, a quiet source's resume SCN
    /// stays where its last change was and can age out of the archived logs. Default 300000
    /// (5 minutes); 0 turns it off.
    #[serde(default = "default_oracle_heartbeat")]
    pub heartbeat_interval_ms: u64,
    /// LOB assembly: CLOB, NCLOB and BLOB values LogMiner writes as separate LOB_WRITE (and
    /// LOB_TRIM, LOB_ERASE) rows after the insert or update are assembled into that change's
    /// event (a write with no insert or update of the row in its transaction becomes an
    /// update of the column). The fragments are held with their transaction until it
    /// commits, within `transactionMemoryLimitBytes` (spilling to `spillDir` past it).
    /// Default true (unlike Debezium's `lob.enabled`): with it off, LOB columns carry only
    /// what the insert or update statement itself wrote, usually an empty value, and the
    /// copy silently differs from the source.
    #[serde(default = "default_true")]
    pub lob_enabled: bool,
}

fn default_oracle_heartbeat() -> u64 {
    300_000
}

fn default_abandon_after() -> u64 {
    4 * 3600
}

fn default_txn_memory() -> u64 {
    64 << 20
}

fn default_oracle_poll() -> u64 {
    1000
}

/// Credentials by reference: never a password in the manifest.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OracleCredentials {
    /// The database user.
    #[schemars(length(min = 1))]
    pub user: String,
    /// Environment variable holding the password (`syncmesh run`, or a Pod env from a Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Kubernetes Secret (in the pipeline's namespace) whose `password` key holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// LogMiner dictionary mode.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OracleDictionary {
    /// `DICT_FROM_ONLINE_CATALOG`: fast; rows are rendered with the current table definitions.
    #[default]
    OnlineCatalog,
    /// `DICT_FROM_REDO_LOGS` with `DDL_DICT_TRACKING`, after `DBMS_LOGMNR_D.BUILD`: rows match
    /// the table as it was when changed, across DDL.
    RedoLogs,
}

/// Mining window bounds, in SCNs.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OracleWindow {
    #[serde(default = "default_window_min")]
    pub min: u64,
    #[serde(default = "default_window_max")]
    pub max: u64,
    #[serde(default = "default_window_initial")]
    pub initial: u64,
}

fn default_window_min() -> u64 {
    1_000
}

fn default_window_max() -> u64 {
    100_000
}

fn default_window_initial() -> u64 {
    20_000
}

impl Default for OracleWindow {
    fn default() -> Self {
        Self {
            min: default_window_min(),
            max: default_window_max(),
            initial: default_window_initial(),
        }
    }
}

/// A TiCDC changefeed in Kafka. Create it with `protocol=canal-json&enable-tidb-extension=true`
/// (or `protocol=debezium`). The position is the commit TS, the index within the transaction
/// and the Kafka offsets to read again; partitions are merged in commit order using TiCDC's
/// watermarks, and TiCDC's resends are dropped.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TidbSource {
    /// Kafka bootstrap servers of the changefeed, `host:port[,host:port...]`.
    #[schemars(length(min = 1))]
    pub brokers: String,
    /// The topics the changefeed writes (one topic, or one per table).
    #[schemars(length(min = 1))]
    pub topics: Vec<String>,
    /// The changefeed's protocol.
    #[serde(default)]
    pub protocol: TicdcProtocol,
    /// Tables to take, as `schema.table` globs; empty takes every table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Extra librdkafka consumer properties (security settings, for example). Secrets belong
    /// in files or environment the worker mounts, not here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// The initial load over the MySQL protocol, handed off to the changefeed without a lock
    /// (DBLog watermarks). Omit it when the sink already holds the tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<TidbSnapshotSpec>,
}

/// A chunked, resumable snapshot of tables read over the MySQL protocol (TiDB, MySQL, MariaDB).
/// Each chunk is read between a low and a high watermark written to `watermarkTable`, which
/// the changefeed must capture; a chunk row changed by the stream inside that window is
/// dropped in favour of the change.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TidbSnapshotSpec {
    /// `mysql://user:password@host:port/` of the upstream. Prefer `passwordEnv` to a password
    /// written here.
    #[schemars(length(min = 1))]
    pub url: String,
    /// The name of an environment variable holding the password (from a Secret on Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// The tables to load, as `schema.table`, in this order.
    #[schemars(length(min = 1))]
    pub tables: Vec<String>,
    /// Rows per chunk.
    #[serde(default = "default_chunk_size")]
    #[schemars(range(min = 1, max = 1000000))]
    pub chunk_size: u32,
    /// The watermark table, `schema.table`; created if missing. The changefeed must include it.
    pub watermark_table: String,
}

fn default_chunk_size() -> u32 {
    1000
}

/// TiCDC's message protocols this source reads.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TicdcProtocol {
    /// canal-json with the TiDB extension (`_tidb.commitTs`, `TIDB_WATERMARK`).
    #[default]
    CanalJson,
    /// TiCDC's Debezium envelope (`payload.source.commit_ts`).
    Debezium,
}

/// Fixed-width flat files (COBOL exports). Files are read in name order; the position is the
/// file plus the byte offset of the record, so a restart resumes mid-file.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlatFileSource {
    /// A file, or a directory whose matching files are read in name order. Relative paths are
    /// relative to the manifest's directory when run with `syncmesh run`. Also a URL:
    /// `file:///abs/dir`, or `s3://bucket/prefix/` for the objects directly under the prefix
    /// (read with ranged GETs; credentials from the environment, `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`).
    pub path: String,
    /// S3 connection settings for an `s3://` path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
    /// A glob on file names inside `path` when it is a directory, e.g. `*.dat`.
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// The record layout: a COBOL copybook (`.cpy`, `.cob`, `.cbl`) or a YAML layout
    /// (`.yaml`, `.yml`). Relative to the manifest's directory, like `path`.
    pub layout: String,
    /// The character encoding of text and zoned fields.
    #[serde(default)]
    pub encoding: FileEncoding,
    /// How zoned decimals carry their sign: `ibm` (overpunch `{`, `A`-`I`, `}`, `J`-`R` in
    /// ASCII; zones C/D/F in EBCDIC) or `mf` (Micro Focus / GnuCOBOL: `p`-`y` for negatives).
    #[serde(default)]
    pub sign_convention: SignConvention,
    /// How records are framed: `fixed` (no delimiter), `lines` (each record ends with a line
    /// terminator) or `rdw` (a 4-byte record descriptor word before each record).
    #[serde(default)]
    pub record_format: RecordFormat,
    /// The table the records become rows of, as `schema.table`.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$"))]
    pub table: String,
    /// The fields (names as written in the layout) that identify a record; later records with
    /// the same key update earlier ones in the sink.
    #[schemars(length(min = 1))]
    pub primary_key: Vec<String>,
}

fn default_pattern() -> String {
    "*".to_string()
}

/// Character encoding of a flat file.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileEncoding {
    /// ASCII / UTF-8 text.
    #[default]
    Ascii,
    /// EBCDIC, US/Canada.
    Cp037,
    /// EBCDIC, International.
    Cp500,
    /// EBCDIC, Open Systems (z/OS Unix).
    Cp1047,
}

/// Sign convention of zoned decimals.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignConvention {
    /// IBM: EBCDIC zones C/D/F, or their ASCII overpunch characters.
    #[default]
    Ibm,
    /// Micro Focus / GnuCOBOL ASCII convention.
    Mf,
}

/// Record framing of a flat file.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    /// Fixed-length records with no delimiter.
    #[default]
    Fixed,
    /// Fixed-length records, each followed by `\n` or `\r\n`.
    Lines,
    /// Variable-length records, each preceded by a 4-byte record descriptor word.
    Rdw,
}

/// A path an event can take.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PathName {
    /// Kafka, exactly-once.
    Realtime,
    /// Snapshots in object storage.
    Batch,
}

impl PathName {
    pub fn as_str(self) -> &'static str {
        match self {
            PathName::Realtime => "realtime",
            PathName::Batch => "batch",
        }
    }
}

/// A routing rule.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// Names the rule in metrics and logs.
    pub name: String,
    /// What the rule matches. An empty match matches every event.
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// The paths a matching event takes. An empty list discards matching events (counted).
    pub to: Vec<PathName>,
}

/// Conditions of a routing rule; every condition given must hold.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    /// Source names the rule applies to; empty means any source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// `schema.table` globs, e.g. `bank.*` or `*.ledger_??`; empty means any table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Operations; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<OperationName>,
    /// Only rows at least this large: the bytes of the row's values as the change event
    /// carries them (text and binary by length, numbers and times by their fixed width).
    /// Wide rows (documents, blobs) can so be kept off the real-time path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_row_bytes: Option<u64>,
    /// Only rows at most this large (same measure as `minRowBytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_row_bytes: Option<u64>,
    /// Only while the wall clock is inside this daily window, e.g. to keep a table on the
    /// batch path during business hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_window: Option<TimeWindowSpec>,
}

/// A daily window of wall-clock time, `[start, end)`. A window whose end is before its
/// start spans midnight (`22:00`-`06:00`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeWindowSpec {
    /// `HH:MM`, 24-hour clock.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// `HH:MM`, 24-hour clock; the window ends just before this minute.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub end: String,
    /// The clock's offset from UTC, `+HH:MM` or `-HH:MM`. Default `+00:00`.
    #[serde(default = "default_utc_offset")]
    #[schemars(regex(pattern = r"^[+-]([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub utc_offset: String,
}

fn default_utc_offset() -> String {
    "+00:00".into()
}

/// A [`TimeWindowSpec`] in minutes of the day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DailyWindow {
    /// First minute inside the window, 0..1440.
    pub start: u32,
    /// First minute after the window, 0..1440.
    pub end: u32,
    /// Seconds east of UTC.
    pub offset_seconds: i32,
}

impl DailyWindow {
    /// Whether `minute` (of the day, in the window's clock) is inside the window. Equal start
    /// and end mean the whole day.
    pub fn contains(&self, minute: u32) -> bool {
        match self.start.cmp(&self.end) {
            std::cmp::Ordering::Less => (self.start..self.end).contains(&minute),
            std::cmp::Ordering::Greater => minute >= self.start || minute < self.end,
            std::cmp::Ordering::Equal => true,
        }
    }
}

fn parse_clock(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl TimeWindowSpec {
    /// Parses the window; the error names the field that is wrong.
    pub fn daily(&self) -> Result<DailyWindow, (&'static str, String)> {
        let clock = |field: &'static str, text: &str| {
            parse_clock(text).ok_or((field, format!("`{text}` is not a time of day as HH:MM")))
        };
        let start = clock("start", &self.start)?;
        let end = clock("end", &self.end)?;
        let bad_offset = || {
            (
                "utcOffset",
                format!("`{}` is not an offset as +HH:MM or -HH:MM", self.utc_offset),
            )
        };
        let (sign, rest) = match self.utc_offset.split_at_checked(1) {
            Some(("+", rest)) => (1, rest),
            Some(("-", rest)) => (-1, rest),
            _ => return Err(bad_offset()),
        };
        let minutes = parse_clock(rest).ok_or_else(bad_offset)?;
        Ok(DailyWindow {
            start,
            end,
            offset_seconds: sign * minutes as i32 * 60,
        })
    }
}

/// A change operation, as named in routing rules.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OperationName {
    Insert,
    Update,
    Delete,
    Ddl,
    /// A row read by a snapshot or from a flat file.
    Read,
}

/// The batch path.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchSpec {
    /// Object storage: a local directory (relative to the manifest when embedded),
    /// `file:///abs/path`, or `s3://bucket/prefix`.
    pub url: String,
    /// Commit a snapshot once this many events are pending.
    #[serde(default = "default_max_events")]
    #[schemars(range(min = 1))]
    pub max_events: u64,
    /// Commit a snapshot once its oldest pending event is this many seconds old.
    #[serde(default = "default_max_age")]
    #[schemars(range(min = 1))]
    pub max_age_seconds: u64,
    /// S3 connection settings for `s3://` URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
    /// Data file format: `parquet` (typed columns, zstd) or `jsonl` (Debezium envelopes).
    #[serde(default)]
    pub format: SnapshotFormatName,
    /// Commit a snapshot once the pending events hold about this many bytes of row data.
    #[serde(default = "default_max_bytes")]
    #[schemars(range(min = 1))]
    pub max_bytes: u64,
    /// The scheduled full snapshot (the T+1 job): the latest row per key of each table, from
    /// the previous full snapshot and the micro-batches committed since (docs/batch.md).
    #[serde(default, skip_serializing_if = "is_default")]
    pub full_snapshot: FullSnapshotSpec,
    /// How long a snapshot commit keeps retrying transient object-storage errors (5xx,
    /// timeouts, refused connections) before the path fails; nothing is acknowledged meanwhile.
    #[serde(default = "default_batch_retry")]
    #[schemars(range(min = 1))]
    pub retry_timeout_seconds: u64,
}

/// Data file format of the batch path.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotFormatName {
    /// Parquet: envelope columns plus the row's columns typed from the table schema.
    #[default]
    Parquet,
    /// One Debezium JSON envelope per line (no full snapshots: they read Parquet back).
    Jsonl,
}

/// When full snapshots are taken.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FullSnapshotSpec {
    /// Take full snapshots on the schedule (needs `format: parquet`).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A cron expression of five fields (minute hour day-of-month month day-of-week), in UTC.
    /// Default `0 2 * * *`, daily at 02:00.
    #[serde(default = "default_full_schedule")]
    pub schedule: String,
}

impl Default for FullSnapshotSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            schedule: default_full_schedule(),
        }
    }
}

/// A schedule of five cron fields, minute first (no seconds field); the error quotes it.
fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    if text.split_whitespace().count() != 5 {
        return Err(format!(
            "`{text}` is not a cron expression of five fields (minute hour day-of-month month day-of-week)"
        ));
    }
    croner::parser::CronParser::new()
        .parse(text)
        .map_err(|e| format!("`{text}` is not a valid cron expression: {e}"))
}

impl FullSnapshotSpec {
    /// The parsed schedule: five fields, minute first (no seconds field).
    pub fn cron(&self) -> Result<croner::Cron, String> {
        parse_cron(&self.schedule)
    }
}

fn default_full_schedule() -> String {
    "0 2 * * *".to_string()
}

fn default_max_bytes() -> u64 {
    64 << 20
}

fn default_batch_retry() -> u64 {
    300
}

fn default_max_events() -> u64 {
    50_000
}

fn default_max_age() -> u64 {
    60
}

/// S3-compatible object storage.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Spec {
    /// Endpoint for S3-compatible servers; omit for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region. Default `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Allow plain HTTP endpoints (test servers).
    #[serde(default)]
    pub allow_http: bool,
}

/// The sink database.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SinkSpec {
    /// `sqlite://path` (relative to the manifest when embedded), `mysql://user@host/db` or
    /// `postgres://user@host/db`. Put no password here: name it in `passwordEnv`.
    pub url: String,
    /// Environment variable holding the password of the URL's user (`syncmesh run`, or a Pod
    /// env from a Secret through `spec.worker.env`). Used by the sink writer and by the
    /// consistency checker, which reads the sink too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Create a missing sink table from the source schema.
    #[serde(default = "default_true")]
    pub create_tables: bool,
    /// Source table (`schema.table`) to sink table name. Unlisted tables keep their table
    /// name without the schema.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, String>,
    /// The circuit breaker of each sink table: when writes get slow or checks keep failing,
    /// writes go to `<table>_shadow` and the table is left alone (docs/breaker.md).
    #[serde(default, skip_serializing_if = "is_default")]
    pub breaker: BreakerSpec,
    /// Shadow tables: how they are filled, and whether to promote them without asking.
    #[serde(default, skip_serializing_if = "is_default")]
    pub shadow: ShadowSpec,
}

fn default_true() -> bool {
    true
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Thresholds of the sink tables' circuit breakers. Changing them takes effect at once for
/// every table (the set is swapped whole).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BreakerSpec {
    /// Watch write latency and check results, and divert writes when tripped.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Trip when the p99 write latency over the window exceeds this many milliseconds.
    #[serde(default = "default_breaker_threshold_ms")]
    #[schemars(range(min = 1))]
    pub latency_threshold_ms: u64,
    /// Seconds of writes the p99 is computed over.
    #[serde(default = "default_breaker_window")]
    #[schemars(range(min = 1))]
    pub window_seconds: u64,
    /// Writes the window must hold before its p99 is judged.
    #[serde(default = "default_breaker_min_samples")]
    #[schemars(range(min = 1))]
    pub min_samples: u32,
    /// The newest writes the window keeps at most.
    #[serde(default = "default_breaker_max_samples")]
    #[schemars(range(min = 1))]
    pub max_samples: u32,
    /// Trip after this many consecutive failed consistency checks.
    #[serde(default = "default_breaker_failed_checks")]
    #[schemars(range(min = 1))]
    pub failed_checks: u32,
    /// Seconds an open breaker waits before probing the table again. A breaker opened by
    /// failed checks waits for a passing check instead.
    #[serde(default = "default_breaker_cool_down")]
    pub cool_down_seconds: u64,
    /// Consecutive healthy probe writes (replays of diverted events) that close the breaker.
    #[serde(default = "default_breaker_probes")]
    #[schemars(range(min = 1))]
    pub probes_to_close: u32,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            latency_threshold_ms: default_breaker_threshold_ms(),
            window_seconds: default_breaker_window(),
            min_samples: default_breaker_min_samples(),
            max_samples: default_breaker_max_samples(),
            failed_checks: default_breaker_failed_checks(),
            cool_down_seconds: default_breaker_cool_down(),
            probes_to_close: default_breaker_probes(),
        }
    }
}

fn default_breaker_threshold_ms() -> u64 {
    500
}

fn default_breaker_window() -> u64 {
    60
}

fn default_breaker_min_samples() -> u32 {
    5
}

fn default_breaker_max_samples() -> u32 {
    1000
}

fn default_breaker_failed_checks() -> u32 {
    3
}

fn default_breaker_cool_down() -> u64 {
    30
}

fn default_breaker_probes() -> u32 {
    3
}

/// Shadow tables (`<table>_shadow`, created like the table).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShadowSpec {
    /// Copy the table's rows into a new shadow, so that the shadow is complete and can be
    /// promoted.
    #[serde(default = "default_true")]
    pub seed: bool,
    /// A human's confirmation, given in advance: promote the shadow of a table as soon as its
    /// breaker opens. The swap is atomic and the previous table is kept as `<table>_old`
    /// until `syncmesh shadow release` (or `rollback` puts it back).
    #[serde(default)]
    pub promote: bool,
}

impl Default for ShadowSpec {
    fn default() -> Self {
        Self {
            seed: true,
            promote: false,
        }
    }
}

/// The dead-letter destination.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeadLetterSpec {
    /// A JSON-lines file (relative to the manifest when embedded).
    pub file: String,
}

/// The OpenLineage target. Set exactly one of `file` and `http`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LineageSpec {
    /// The job namespace in lineage events.
    #[serde(default = "default_lineage_namespace")]
    pub namespace: String,
    /// Append events as JSON lines to this file (relative to the manifest when embedded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// POST events to this OpenLineage HTTP endpoint (Marquez, DataHub), e.g.
    /// `http://marquez:5000`; `/api/v1/lineage` is appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

fn default_lineage_namespace() -> String {
    "syncmesh".to_string()
}

/// The real-time path (Kafka, transactional).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RealtimeSpec {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Topic of each table; `{pipeline}`, `{schema}` and `{table}` are replaced; characters
    /// Kafka does not allow become `_`. Default `{pipeline}.{schema}.{table}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_template: Option<String>,
    /// The producer's `transactional.id`; `{pipeline}` is replaced. Default
    /// `syncmesh-{pipeline}`. Two workers with the same id fence each other: the newer aborts
    /// what the older left open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
    /// Compacted topic holding each source's last committed position, written in the same
    /// transaction as the events. Default `_syncmesh.{pipeline}.positions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions_topic: Option<String>,
    /// Commit a transaction once this many events are pending.
    #[serde(default = "default_rt_max_events")]
    #[schemars(range(min = 1))]
    pub max_batch_events: u64,
    /// Commit a transaction once its oldest pending event is this many milliseconds old
    /// (default 20). Most of an event's end-to-end latency at steady rates: each transaction
    /// costs the brokers a few round trips, so a longer linger trades latency for fewer of them.
    #[serde(default = "default_rt_linger_ms")]
    #[schemars(range(min = 1))]
    pub linger_ms: u64,
    /// Record value format.
    #[serde(default)]
    pub format: KafkaFormatName,
    /// Partitions of the table topics the path creates (existing topics are left alone).
    #[serde(default = "default_one")]
    #[schemars(range(min = 1))]
    pub partitions: i32,
    /// Replication factor of the topics the path creates.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1))]
    pub replication_factor: i32,
    /// Seconds that starting, committing, aborting and creating topics may take.
    #[serde(default = "default_rt_timeout")]
    #[schemars(range(min = 1))]
    pub operation_timeout_seconds: u64,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, `compression.type`, ...).
    /// `bootstrap.servers`, `transactional.id` and `enable.idempotence` cannot be overridden.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// What happens to events routed to real time while the path is degraded (a transaction
    /// has been open longer than `degradedAfterMs`, e.g. because the brokers are down).
    #[serde(default)]
    pub fallback: FallbackPolicy,
    /// How long a transaction may stay open before the path counts as degraded.
    #[serde(default = "default_rt_degraded_after_ms")]
    #[schemars(range(min = 1))]
    pub degraded_after_ms: u64,
    /// Records too large for the brokers are stored in object storage and Kafka carries a
    /// reference to them (a claim check), so no event is dropped or halts the pipeline.
    #[serde(default)]
    pub claim_check: ClaimCheckSpec,
    /// Where records the brokers refuse go (too large, invalid, not authorized, against a
    /// topic policy), with the reason and the position, in the same transaction as the rest of
    /// the batch. `{pipeline}` is replaced. Default `_syncmesh.{pipeline}.dead-letters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// How long a failed transaction is retried in place (aborted, then the same batch
    /// produced again, backing off from 100 ms to 10 s) before the path gives up and the run
    /// fails. A fenced producer (another worker took over) gives up at once.
    #[serde(default = "default_rt_retry_for")]
    #[schemars(range(min = 0))]
    pub retry_for_seconds: u64,
}

fn default_rt_retry_for() -> u64 {
    300
}

/// Where oversized records go. The Kafka record then holds
/// `{"claimCheck": {"url", "bytes", "xxh3"}, "table", "op", "position"}` and the header
/// `syncmesh.claim-check` names the object.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimCheckSpec {
    /// A record whose key and value together exceed this many bytes is claim-checked. Keep it
    /// below the brokers' `message.max.bytes` (1 MB by default).
    #[serde(default = "default_claim_check_bytes")]
    #[schemars(range(min = 1))]
    pub max_record_bytes: u64,
    /// Object storage for the payloads (`s3://bucket/prefix`, `file:///dir` or a path).
    /// Default: the batch path's `url`, else `claim-checks/` in the state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// S3 connection settings for an `s3://` url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
}

impl Default for ClaimCheckSpec {
    fn default() -> Self {
        Self {
            max_record_bytes: default_claim_check_bytes(),
            url: None,
            s3: None,
        }
    }
}

fn default_claim_check_bytes() -> u64 {
    900_000
}

fn default_rt_degraded_after_ms() -> u64 {
    5_000
}

/// The health-aware fallback of the real-time path.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FallbackPolicy {
    /// Keep routing to real time; the path's queue fills and holds the sources back
    /// (backpressure) until Kafka recovers. Kafka consumers miss nothing.
    #[default]
    Buffer,
    /// Route what would go to real time to the batch path instead, so sources keep flowing;
    /// those events then reach Kafka consumers never, and the sink through snapshots. Needs
    /// `spec.batch`.
    Batch,
}

/// How change events are written as Kafka record values.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KafkaFormatName {
    /// The Debezium envelope.
    #[default]
    DebeziumJson,
    /// Canal JSON, as TiCDC writes it (`data`, `old`, `mysqlType`, `_tidb.commitTs`).
    CanalJson,
}

fn default_rt_max_events() -> u64 {
    5_000
}

fn default_rt_linger_ms() -> u64 {
    20
}

fn default_one() -> i32 {
    1
}

fn default_rt_timeout() -> u64 {
    60
}

/// Scheduled consistency checks: each table is split into primary-key chunks whose row counts
/// and row hashes are compared between the source database and the sink; differing chunks are
/// bisected down to rows.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckSpec {
    /// When checks run: a cron expression of five fields (minute hour day-of-month month
    /// day-of-week), in UTC. Default `0 2 * * *`, daily at 02:00.
    #[serde(default = "default_check_schedule")]
    pub schedule: String,
    /// Rows per primary-key chunk (one digest query per side per chunk).
    #[serde(default = "default_check_chunk_size")]
    #[schemars(range(min = 2))]
    pub chunk_size: u64,
    /// Source tables to check, as `schema.table`. Empty: the pipeline's tables (flat-file
    /// tables and TiDB table names that are not globs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// The database the sink is compared with: `mysql://` (MariaDB, MySQL, TiDB),
    /// `postgres://` or `sqlite://`. Put no password here: name it in `sourcePasswordEnv`.
    pub source_url: String,
    /// Environment variable holding the password of `sourceUrl`'s user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_password_env: Option<String>,
}

impl CheckSpec {
    /// The parsed schedule: five fields, minute first (no seconds field).
    pub fn cron(&self) -> Result<croner::Cron, String> {
        parse_cron(&self.schedule)
    }
}

fn default_check_schedule() -> String {
    "0 2 * * *".to_string()
}

fn default_check_chunk_size() -> u64 {
    50_000
}

/// The worker Deployment the operator runs for the pipeline (one replica: one writer).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerSpec {
    /// Container image of the worker. Default: the operator's `--image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// ServiceAccount the worker runs as; it needs `get`/`watch` on its SyncPipeline and
    /// `patch` on its status. Default `syncmesh-worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub service_account_name: Option<String>,
    /// CPU and memory of the worker container. Default: requests `cpu: 100m`,
    /// `memory: 256Mi`; limits `memory: 1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<WorkerResources>,
    /// Environment variables whose values come from Secrets in the pipeline's namespace: name
    /// here every `passwordEnv` the spec uses. Values are never copied anywhere; the pod reads
    /// them through `valueFrom.secretKeyRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<SecretEnvVar>,
    /// A PersistentVolumeClaim in the pipeline's namespace mounted as the worker's state
    /// directory (checkpoints, positions), so they survive the pod moving to another node.
    /// Default: an emptyDir, kept across container restarts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub state_volume_claim: Option<String>,
}

/// Requests and limits, as Kubernetes quantities (`500m`, `1Gi`), keyed by `cpu`/`memory`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerResources {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

/// An environment variable of the worker taken from a key of a Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretEnvVar {
    /// The variable's name, e.g. the `passwordEnv` of a source.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// The Secret and key holding the value.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret in the pipeline's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub name: String,
    /// The key within the Secret.
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"), length(min = 1))]
    pub key: String,
}
