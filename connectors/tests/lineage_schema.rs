//! Emitted run events validated against the real OpenLineage JSON Schemas (spec 2-0-2 and the
//! facet schemas), loaded from `../../shared/openlineage/spec` relative to this crate or from
//! `SYNCMESH_OPENLINEAGE_SPEC`. All `$ref`s resolve to local files registered by their `$id`;
//! nothing is fetched. Formats (`uuid`, `uri`, `date-time`) are validated too.

use jsonschema::{Registry, Validator};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use syncmesh_connectors::event::{Column, ColumnType, TableId, TableSchema};
use syncmesh_connectors::lineage::{
    ColumnMetrics, DataQualityMetricsInputDatasetFacet, FileEmitter, InputDataset, LineageEmitter,
    OutputDataset, ProcessingType, RunEvents, facet_schema_urls, new_run_id,
};

const ROOT_ID: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json";

fn spec_dir() -> PathBuf {
    let dir = match std::env::var_os("SYNCMESH_OPENLINEAGE_SPEC") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/openlineage/spec"),
    };
    assert!(
        dir.join("OpenLineage.json").is_file(),
        "OpenLineage spec not found at {} (set SYNCMESH_OPENLINEAGE_SPEC)",
        dir.display()
    );
    dir
}

/// The spec: a registry of every schema file by its `$id`, and each facet file's top level.
struct Spec {
    registry: Registry<'static>,
    /// `$id` of each facet file → its JSON.
    facet_files: BTreeMap<String, Value>,
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn spec() -> Spec {
    let dir = spec_dir();
    let root = read_json(&dir.join("OpenLineage.json"));
    assert_eq!(root["$id"], ROOT_ID, "the spec version these tests target");
    let mut facet_files = BTreeMap::new();
    for entry in std::fs::read_dir(dir.join("facets")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let schema = read_json(&path);
            let id = schema["$id"].as_str().expect("facet $id").to_string();
            facet_files.insert(id, schema);
        }
    }
    let registry = Registry::new()
        .add(ROOT_ID, root)
        .unwrap()
        .extend(facet_files.clone())
        .unwrap()
        .prepare()
        .unwrap();
    Spec {
        registry,
        facet_files,
    }
}

impl Spec {
    fn validator(&self, reference: &str) -> Validator {
        jsonschema::options()
            .with_registry(&self.registry)
            .should_validate_formats(true)
            .build(&json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$ref": reference
            }))
            .unwrap_or_else(|e| panic!("cannot build a validator for {reference}: {e}"))
    }

    /// Errors of `event` against the spec, as text; empty when valid.
    fn event_errors(&self, event: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        for reference in [ROOT_ID.to_string(), format!("{ROOT_ID}#/$defs/RunEvent")] {
            let validator = self.validator(&reference);
            errors.extend(
                validator
                    .iter_errors(event)
                    .map(|e| format!("{reference}: {} at {}", e, e.instance_path())),
            );
        }
        errors.extend(self.facet_errors(event));
        errors
    }

    /// Validates every facet of the event against its own schema file (which the root schema
    /// does not reference): `{key: facet}` against the file, and the facet against its
    /// `_schemaURL`.
    fn facet_errors(&self, event: &Value) -> Vec<String> {
        let mut containers: Vec<&Value> = vec![&event["run"]["facets"], &event["job"]["facets"]];
        for side in ["inputs", "outputs"] {
            for dataset in event[side].as_array().into_iter().flatten() {
                containers.push(&dataset["facets"]);
                containers.push(&dataset["inputFacets"]);
                containers.push(&dataset["outputFacets"]);
            }
        }
        let mut errors = Vec::new();
        for (key, facet) in containers
            .into_iter()
            .filter_map(Value::as_object)
            .flatten()
        {
            let Some(url) = facet["_schemaURL"].as_str() else {
                errors.push(format!("facet `{key}` has no _schemaURL"));
                continue;
            };
            let file = url.split('#').next().unwrap();
            let Some(schema) = self.facet_files.get(file) else {
                errors.push(format!("facet `{key}`: no schema file with $id {file}"));
                continue;
            };
            if schema["properties"].get(key).is_none() {
                errors.push(format!("facet `{key}` is not the key {file} defines"));
            }
            let wrapped = json!({ key.clone(): facet });
            for (reference, instance) in [(file, &wrapped), (url, facet)] {
                errors.extend(
                    self.validator(reference).iter_errors(instance).map(|e| {
                        format!("facet `{key}` ({reference}): {e} at {}", e.instance_path())
                    }),
                );
            }
        }
        errors
    }
}

fn accounts() -> TableSchema {
    let col = |name: &str, column_type: ColumnType| Column {
        name: name.into(),
        column_type,
        nullable: true,
    };
    TableSchema {
        table: TableId::new("BANK", "ACCOUNTS"),
        version: 3,
        columns: vec![
            col("ID", ColumnType::Int),
            col(
                "BALANCE",
                ColumnType::Decimal {
                    precision: 18,
                    scale: 2,
                },
            ),
            col("OPENED", ColumnType::TimestampTz),
            col(
                "TAGS",
                ColumnType::Array(Box::new(ColumnType::String {
                    max_length: Some(8),
                })),
            ),
        ],
        primary_key: vec![0],
    }
}

/// START, RUNNING, COMPLETE, FAIL and ABORT of one run, written through the file emitter and
/// read back line by line.
async fn emitted_events() -> Vec<Value> {
    let schema = accounts();
    let mut metrics = BTreeMap::new();
    metrics.insert(
        "BALANCE".to_string(),
        ColumnMetrics {
            null_count: Some(0),
            sum: Some(1234.5),
            ..ColumnMetrics::default()
        },
    );
    let input = InputDataset::new("oracle://ledger-db:1521", "ORCL.BANK.ACCOUNTS")
        .with_schema(&schema)
        .with_data_source("ledger-db", "oracle://ledger-db:1521")
        .with_quality_metrics(DataQualityMetricsInputDatasetFacet::new(Some(10), metrics));
    let output = || {
        OutputDataset::new("mysql://dw:3306", "dw.accounts")
            .with_schema(&schema)
            .with_data_source("dw", "mysql://dw:3306/dw")
    };
    let mut run = RunEvents::new("syncmesh://prod/payments", "ledger-to-dw", new_run_id())
        .with_processing_type(ProcessingType::Streaming);
    let events = vec![
        run.start(vec![input], vec![output()]),
        run.running(vec![output().with_statistics(5, Some(4096))]),
        run.complete(vec![output().with_statistics(10, None)]),
        run.fail("sink table dw.accounts: upsert of 3 row(s) failed at key 7: NOT NULL"),
        run.abort(),
    ];

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lineage/events.jsonl");
    let emitter = FileEmitter::open(&path).await.unwrap();
    let emitter: Arc<dyn LineageEmitter> = Arc::new(emitter);
    for event in &events {
        emitter.emit(event).await.unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), events.len(), "one event per line");
    lines
}

#[tokio::test]
async fn emitted_events_are_valid_openlineage() {
    let spec = spec();
    let events = emitted_events().await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["START", "RUNNING", "COMPLETE", "FAIL", "ABORT"]);
    for event in &events {
        let errors = spec.event_errors(event);
        assert!(
            errors.is_empty(),
            "{} event is invalid:\n{}\n{event:#}",
            event["eventType"],
            errors.join("\n")
        );
    }
    // The facets syncmesh models all appear and point at files of this spec.
    let all = serde_json::to_string(&events).unwrap();
    for (key, url) in facet_schema_urls() {
        assert!(
            all.contains(&format!("\"{key}\":")),
            "facet {key} never emitted"
        );
        let file = url.split('#').next().unwrap();
        assert!(
            spec.facet_files.contains_key(file),
            "{url} is not in the spec"
        );
    }
    let complete = &events[2];
    assert_eq!(
        complete["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"],
        10
    );
    assert_eq!(
        events[3]["run"]["facets"]["errorMessage"]["programmingLanguage"],
        "RUST"
    );
    assert_eq!(
        complete["job"]["facets"]["jobType"]["processingType"],
        "STREAMING"
    );
}

#[tokio::test]
async fn broken_events_fail_validation() {
    let spec = spec();
    let events = emitted_events().await;

    let mut no_time = events[0].clone();
    no_time.as_object_mut().unwrap().remove("eventTime");
    assert!(
        !spec.event_errors(&no_time).is_empty(),
        "an event without eventTime must be invalid"
    );

    let mut bad_run_id = events[2].clone();
    bad_run_id["run"]["runId"] = json!("not-a-uuid");
    assert!(
        !spec.event_errors(&bad_run_id).is_empty(),
        "runId must be a UUID"
    );

    let mut bad_type = events[2].clone();
    bad_type["eventType"] = json!("FINISHED");
    assert!(
        !spec.event_errors(&bad_type).is_empty(),
        "unknown eventType"
    );

    let mut no_producer = events[0].clone();
    no_producer["inputs"][0]["facets"]["schema"]
        .as_object_mut()
        .unwrap()
        .remove("_producer");
    assert!(
        !spec.event_errors(&no_producer).is_empty(),
        "facets need _producer"
    );

    let mut no_language = events[3].clone();
    no_language["run"]["facets"]["errorMessage"]
        .as_object_mut()
        .unwrap()
        .remove("programmingLanguage");
    let errors = spec.event_errors(&no_language);
    assert!(
        errors.iter().any(|e| e.contains("programmingLanguage")),
        "the errorMessage facet schema requires programmingLanguage: {errors:?}"
    );

    let mut bad_metrics = events[0].clone();
    bad_metrics["inputs"][0]["inputFacets"]["dataQualityMetrics"]
        .as_object_mut()
        .unwrap()
        .remove("columnMetrics");
    assert!(
        !spec.event_errors(&bad_metrics).is_empty(),
        "dataQualityMetrics requires columnMetrics"
    );
}
