//! OpenLineage run events.
//!
//! Every pipeline run reports itself as OpenLineage `RunEvent`s (spec 2-0-2): START when it
//! begins, RUNNING for progress of streaming runs, COMPLETE with output statistics, FAIL with
//! an `errorMessage` facet, ABORT when it was stopped. The events carry the job (with a
//! `jobType` facet: integration `SYNCMESH`, job type `PIPELINE`, processing `STREAMING` or
//! `BATCH`), the input and output datasets (with `schema` and `dataSource` facets) and, on
//! outputs, `outputStatistics`. Every facet carries `_producer` and `_schemaURL`.
//!
//! [`RunEvents`] builds the events of one run; a [`LineageEmitter`] sends them:
//! [`FileEmitter`] (JSON lines), [`HttpEmitter`] (Marquez/DataHub `POST /api/v1/lineage`) or
//! [`NoopEmitter`]. A Kafka emitter is later work.
//!
//! Dataset naming follows the OpenLineage naming conventions: the namespace is the data
//! source (`oracle://host:1521`, `mysql://host:4000`, `file://host`, `s3://bucket`), the name
//! the table (`schema.table`) or path.

mod builder;
mod emit;
mod model;
mod quality;

pub use builder::{ProcessingType, RunEvents, new_run_id};
pub use emit::{FileEmitter, HttpEmitter, LineageEmitter, LineageError, NoopEmitter};
pub use model::{
    ColumnMetrics, DataQualityMetricsInputDatasetFacet, DatasetFacets, DatasourceDatasetFacet,
    ErrorMessageRunFacet, EventType, FacetBase, InputDataset, InputDatasetFacets, Job, JobFacets,
    JobTypeJobFacet, OutputDataset, OutputDatasetFacets, OutputStatisticsOutputDatasetFacet,
    ProcessingEngineRunFacet, RUN_EVENT_SCHEMA_URL, Run, RunEvent, RunFacets, SchemaDatasetFacet,
    SchemaField, facet_schema_urls, producer,
};
pub use quality::{
    Assertion, DATA_QUALITY_ASSERTIONS_FACET_URL, DataQualityAssertionsDatasetFacet,
};
