//! The OpenLineage 2-0-2 `RunEvent` and the facets syncmesh emits, as serde types whose JSON is
//! the spec's (camelCase fields, `schemaURL`, `_producer`/`_schemaURL` on every facet).
//! Facets syncmesh does not model travel in the `other` maps of each facet container.

use crate::event::{ColumnType, TableSchema};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The repository URL when the package declares one; the workspace's otherwise.
const REPOSITORY: &str = if env!("CARGO_PKG_REPOSITORY").is_empty() {
    "https://example.invalid/syncmesh"
} else {
    env!("CARGO_PKG_REPOSITORY")
};

/// The `producer` of every event and facet: syncmesh's repository at its release tag
/// (`<repository>/tree/v<version>`), an absolute URI as the spec requires.
pub fn producer() -> &'static str {
    static PRODUCER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{}/tree/v{}",
            REPOSITORY.trim_end_matches('/'),
            env!("CARGO_PKG_VERSION")
        )
    });
    &PRODUCER
}

/// `schemaURL` of the events: the `RunEvent` definition of spec 2-0-2.
pub const RUN_EVENT_SCHEMA_URL: &str =
    "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";

const SCHEMA_FACET_URL: &str =
    "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet";
const DATASOURCE_FACET_URL: &str = "https://openlineage.io/spec/facets/1-0-1/DatasourceDatasetFacet.json#/$defs/DatasourceDatasetFacet";
const JOB_TYPE_FACET_URL: &str =
    "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet";
const ERROR_MESSAGE_FACET_URL: &str = "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";
const PROCESSING_ENGINE_FACET_URL: &str = "https://openlineage.io/spec/facets/1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet";
const OUTPUT_STATISTICS_FACET_URL: &str = "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet";
const DATA_QUALITY_METRICS_FACET_URL: &str = "https://openlineage.io/spec/facets/1-0-3/DataQualityMetricsInputDatasetFacet.json#/$defs/DataQualityMetricsInputDatasetFacet";

/// The facet key (as it appears in the JSON) and `_schemaURL` of every facet syncmesh models,
/// so tests can check each against its schema file.
pub fn facet_schema_urls() -> &'static [(&'static str, &'static str)] {
    &[
        ("schema", SCHEMA_FACET_URL),
        ("dataSource", DATASOURCE_FACET_URL),
        ("jobType", JOB_TYPE_FACET_URL),
        ("errorMessage", ERROR_MESSAGE_FACET_URL),
        ("processing_engine", PROCESSING_ENGINE_FACET_URL),
        ("outputStatistics", OUTPUT_STATISTICS_FACET_URL),
        ("dataQualityMetrics", DATA_QUALITY_METRICS_FACET_URL),
    ]
}

/// The run-state transition an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    Start,
    Running,
    Complete,
    Abort,
    Fail,
    Other,
}

impl EventType {
    /// COMPLETE, FAIL and ABORT end a run.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EventType::Complete | EventType::Fail | EventType::Abort
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunEvent {
    pub event_type: EventType,
    pub event_time: DateTime<Utc>,
    pub producer: String,
    #[serde(rename = "schemaURL")]
    pub schema_url: String,
    pub run: Run,
    pub job: Job,
    #[serde(default)]
    pub inputs: Vec<InputDataset>,
    #[serde(default)]
    pub outputs: Vec<OutputDataset>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub run_id: Uuid,
    #[serde(default, skip_serializing_if = "RunFacets::is_empty")]
    pub facets: RunFacets,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunFacets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<ErrorMessageRunFacet>,
    /// The spec's key for this facet is snake_case.
    #[serde(
        rename = "processing_engine",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub processing_engine: Option<ProcessingEngineRunFacet>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl RunFacets {
    pub fn is_empty(&self) -> bool {
        self.error_message.is_none() && self.processing_engine.is_none() && self.other.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "JobFacets::is_empty")]
    pub facets: JobFacets,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobFacets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_type: Option<JobTypeJobFacet>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl JobFacets {
    pub fn is_empty(&self) -> bool {
        self.job_type.is_none() && self.other.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputDataset {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "DatasetFacets::is_empty")]
    pub facets: DatasetFacets,
    #[serde(default, skip_serializing_if = "InputDatasetFacets::is_empty")]
    pub input_facets: InputDatasetFacets,
}

impl InputDataset {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            facets: DatasetFacets::default(),
            input_facets: InputDatasetFacets::default(),
        }
    }

    /// Adds the `schema` facet from a table schema.
    pub fn with_schema(mut self, schema: &TableSchema) -> Self {
        self.facets.schema = Some(SchemaDatasetFacet::from_table_schema(schema));
        self
    }

    /// Adds the `dataSource` facet (name and URI of the source system, credentials removed).
    pub fn with_data_source(mut self, name: impl Into<String>, uri: impl Into<String>) -> Self {
        self.facets.data_source = Some(DatasourceDatasetFacet::new(name, uri));
        self
    }

    /// Adds the `dataQualityMetrics` input facet.
    pub fn with_quality_metrics(mut self, metrics: DataQualityMetricsInputDatasetFacet) -> Self {
        self.input_facets.data_quality_metrics = Some(metrics);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputDataset {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "DatasetFacets::is_empty")]
    pub facets: DatasetFacets,
    #[serde(default, skip_serializing_if = "OutputDatasetFacets::is_empty")]
    pub output_facets: OutputDatasetFacets,
}

impl OutputDataset {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            facets: DatasetFacets::default(),
            output_facets: OutputDatasetFacets::default(),
        }
    }

    pub fn with_schema(mut self, schema: &TableSchema) -> Self {
        self.facets.schema = Some(SchemaDatasetFacet::from_table_schema(schema));
        self
    }

    pub fn with_data_source(mut self, name: impl Into<String>, uri: impl Into<String>) -> Self {
        self.facets.data_source = Some(DatasourceDatasetFacet::new(name, uri));
        self
    }

    /// Adds the `outputStatistics` facet: rows written and, when known, bytes.
    pub fn with_statistics(mut self, row_count: u64, size: Option<u64>) -> Self {
        self.output_facets.output_statistics = Some(OutputStatisticsOutputDatasetFacet {
            base: FacetBase::new(OUTPUT_STATISTICS_FACET_URL),
            row_count: Some(row_count),
            size,
            file_count: None,
        });
        self
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetFacets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaDatasetFacet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source: Option<DatasourceDatasetFacet>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl DatasetFacets {
    pub fn is_empty(&self) -> bool {
        self.schema.is_none() && self.data_source.is_none() && self.other.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputDatasetFacets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_quality_metrics: Option<DataQualityMetricsInputDatasetFacet>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl InputDatasetFacets {
    pub fn is_empty(&self) -> bool {
        self.data_quality_metrics.is_none() && self.other.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputDatasetFacets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_statistics: Option<OutputStatisticsOutputDatasetFacet>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl OutputDatasetFacets {
    pub fn is_empty(&self) -> bool {
        self.output_statistics.is_none() && self.other.is_empty()
    }
}

/// The two fields every facet carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacetBase {
    #[serde(rename = "_producer")]
    pub producer: String,
    #[serde(rename = "_schemaURL")]
    pub schema_url: String,
}

impl FacetBase {
    pub fn new(schema_url: &str) -> Self {
        Self {
            producer: producer().to_string(),
            schema_url: schema_url.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaDatasetFacet {
    #[serde(flatten)]
    pub base: FacetBase,
    pub fields: Vec<SchemaField>,
}

impl SchemaDatasetFacet {
    /// One field per column, typed with the SQL-ish names syncmesh uses everywhere
    /// (`BIGINT`, `DECIMAL(18,2)`, `VARCHAR(40)`, `TIMESTAMP WITH TIME ZONE`, `ARRAY<BIGINT>`).
    pub fn from_table_schema(schema: &TableSchema) -> Self {
        Self {
            base: FacetBase::new(SCHEMA_FACET_URL),
            fields: schema
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| SchemaField {
                    name: c.name.clone(),
                    field_type: Some(type_name(&c.column_type)),
                    description: None,
                    ordinal_position: Some(i as u32 + 1),
                })
                .collect(),
        }
    }
}

fn type_name(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Bool => "BOOLEAN".into(),
        ColumnType::Int => "BIGINT".into(),
        ColumnType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
        ColumnType::Float => "DOUBLE".into(),
        ColumnType::String {
            max_length: Some(n),
        } => format!("VARCHAR({n})"),
        ColumnType::String { max_length: None } => "VARCHAR".into(),
        ColumnType::Bytes => "VARBINARY".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Timestamp => "TIMESTAMP".into(),
        ColumnType::TimestampTz => "TIMESTAMP WITH TIME ZONE".into(),
        ColumnType::Array(inner) => format!("ARRAY<{}>", type_name(inner)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaField {
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub field_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordinal_position: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasourceDatasetFacet {
    #[serde(flatten)]
    pub base: FacetBase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

impl DatasourceDatasetFacet {
    pub fn new(name: impl Into<String>, uri: impl Into<String>) -> Self {
        Self {
            base: FacetBase::new(DATASOURCE_FACET_URL),
            name: Some(name.into()),
            uri: Some(uri.into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobTypeJobFacet {
    #[serde(flatten)]
    pub base: FacetBase,
    /// `BATCH` or `STREAMING`.
    pub processing_type: String,
    /// `SYNCMESH`.
    pub integration: String,
    /// `PIPELINE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
}

impl JobTypeJobFacet {
    pub fn new(processing_type: &str) -> Self {
        Self {
            base: FacetBase::new(JOB_TYPE_FACET_URL),
            processing_type: processing_type.to_string(),
            integration: "SYNCMESH".into(),
            job_type: Some("PIPELINE".into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorMessageRunFacet {
    #[serde(flatten)]
    pub base: FacetBase,
    pub message: String,
    /// `RUST`.
    pub programming_language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_trace: Option<String>,
}

impl ErrorMessageRunFacet {
    pub fn new(message: impl Into<String>, stack_trace: Option<String>) -> Self {
        Self {
            base: FacetBase::new(ERROR_MESSAGE_FACET_URL),
            message: message.into(),
            programming_language: "RUST".into(),
            stack_trace,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessingEngineRunFacet {
    #[serde(flatten)]
    pub base: FacetBase,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ProcessingEngineRunFacet {
    /// syncmesh and its version.
    pub fn syncmesh() -> Self {
        Self {
            base: FacetBase::new(PROCESSING_ENGINE_FACET_URL),
            version: env!("CARGO_PKG_VERSION").into(),
            name: Some("syncmesh".into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputStatisticsOutputDatasetFacet {
    #[serde(flatten)]
    pub base: FacetBase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<u64>,
    /// Bytes written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_count: Option<u64>,
}

/// Data-quality metrics of an input (for the consistency checker, later).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataQualityMetricsInputDatasetFacet {
    #[serde(flatten)]
    pub base: FacetBase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Keyed by column name; required by the spec (may be empty).
    pub column_metrics: BTreeMap<String, ColumnMetrics>,
}

impl DataQualityMetricsInputDatasetFacet {
    pub fn new(row_count: Option<u64>, column_metrics: BTreeMap<String, ColumnMetrics>) -> Self {
        Self {
            base: FacetBase::new(DATA_QUALITY_METRICS_FACET_URL),
            row_count,
            bytes: None,
            column_metrics,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnMetrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}
