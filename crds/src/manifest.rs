//! Reading a manifest from YAML with errors that name the field path.
//!
//! YAML is parsed with `serde-saphyr` (a maintained, pure-Rust successor of the archived
//! `serde_yaml`) into a JSON tree first, so that typed deserialization can go through
//! `serde_path_to_error` and report `spec.sources[0].flatFile.layout` rather than a line number
//! of a structure the user never wrote.

use crate::{FieldIssue, GROUP, SyncPipeline, VERSION, validate_spec};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not valid YAML: {0}")]
    Syntax(String),
    #[error("{path}: {reason}")]
    Field { path: String, reason: String },
    #[error("{}", FieldIssue::join(.0))]
    Invalid(Vec<FieldIssue>),
}

/// Parses and validates a `SyncPipeline` manifest.
pub fn parse_manifest(text: &str) -> Result<SyncPipeline, ManifestError> {
    let tree: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
    let obj = tree.as_object().ok_or_else(|| ManifestError::Field {
        path: "(document)".into(),
        reason: "expected a mapping with apiVersion, kind, metadata and spec".into(),
    })?;
    for key in obj.keys() {
        if !["apiVersion", "kind", "metadata", "spec", "status"].contains(&key.as_str()) {
            return Err(ManifestError::Field {
                path: key.clone(),
                reason: "unknown field, expected one of `apiVersion`, `kind`, `metadata`, `spec`"
                    .into(),
            });
        }
    }
    let expected_api = format!("{GROUP}/{VERSION}");
    match obj.get("apiVersion").and_then(|v| v.as_str()) {
        Some(v) if v == expected_api => {}
        other => {
            return Err(ManifestError::Field {
                path: "apiVersion".into(),
                reason: format!("expected `{expected_api}`, found {}", describe(other)),
            });
        }
    }
    match obj.get("kind").and_then(|v| v.as_str()) {
        Some("SyncPipeline") => {}
        other => {
            return Err(ManifestError::Field {
                path: "kind".into(),
                reason: format!("expected `SyncPipeline`, found {}", describe(other)),
            });
        }
    }
    if obj.get("metadata").and_then(|m| m.get("name")).is_none() {
        return Err(ManifestError::Field {
            path: "metadata.name".into(),
            reason: "missing field `name`".into(),
        });
    }
    let pipeline: SyncPipeline = serde_path_to_error::deserialize(&tree).map_err(|e| {
        let path = e.path().to_string();
        ManifestError::Field {
            path: if path == "." {
                "(document)".into()
            } else {
                path
            },
            reason: e.into_inner().to_string(),
        }
    })?;
    let issues = validate_spec(&pipeline.spec);
    if issues.is_empty() {
        Ok(pipeline)
    } else {
        Err(ManifestError::Invalid(issues))
    }
}

fn describe(v: Option<&str>) -> String {
    v.map_or_else(|| "nothing".to_string(), |s| format!("`{s}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata:
  name: ledger
spec:
  sources:
    - name: ledger
      flatFile:
        path: data
        layout: ledger.cpy
        table: bank.ledger
        primaryKey: [ACCOUNT-ID]
  batch:
    url: out/snapshots
  sink:
    url: sqlite://out/sink.db
"#;

    fn field_error(text: &str) -> (String, String) {
        match parse_manifest(text) {
            Err(ManifestError::Field { path, reason }) => (path, reason),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn good_manifest_parses_with_defaults() {
        let p = parse_manifest(GOOD).unwrap();
        assert_eq!(p.spec.default_route, vec![crate::PathName::Batch]);
        let ff = p.spec.sources[0].flat_file.as_ref().unwrap();
        assert_eq!(ff.pattern, "*");
        assert_eq!(ff.record_format, crate::RecordFormat::Fixed);
        assert_eq!(p.spec.batch.as_ref().unwrap().max_events, 50_000);
    }

    #[test]
    fn unknown_field_names_its_path() {
        let (path, reason) = field_error(&GOOD.replace("table: bank.ledger", "tabel: bank.ledger"));
        assert_eq!(path, "spec.sources[0].flatFile.tabel");
        assert!(reason.contains("unknown field `tabel`"), "{reason}");
    }

    #[test]
    fn wrong_type_names_its_path() {
        let (path, reason) = field_error(&GOOD.replace(
            "url: out/snapshots",
            "url: out/snapshots\n    maxEvents: lots",
        ));
        assert_eq!(path, "spec.batch.maxEvents");
        assert!(reason.contains("invalid type"), "{reason}");
    }

    #[test]
    fn missing_required_field_names_its_parent() {
        let (path, reason) = field_error(&GOOD.replace("        layout: ledger.cpy\n", ""));
        assert_eq!(path, "spec.sources[0].flatFile");
        assert!(reason.contains("missing field `layout`"), "{reason}");
    }

    #[test]
    fn bad_enum_value_is_refused() {
        let (path, reason) =
            field_error(&GOOD.replace("primaryKey", "encoding: utf7\n        primaryKey"));
        assert_eq!(path, "spec.sources[0].flatFile.encoding");
        assert!(reason.contains("utf7"), "{reason}");
    }

    #[test]
    fn wrong_kind_is_refused() {
        let (path, _) = field_error(&GOOD.replace("kind: SyncPipeline", "kind: Pipeline"));
        assert_eq!(path, "kind");
    }

    #[test]
    fn yaml_syntax_error_is_reported() {
        assert!(matches!(
            parse_manifest("spec: [unclosed"),
            Err(ManifestError::Syntax(_))
        ));
    }
}
