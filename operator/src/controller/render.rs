//! The objects the operator owns per pipeline, rendered from the SyncPipeline alone (pure):
//! the ConfigMap with the pipeline manifest, the worker Deployment and the metrics Service.
//!
//! Credentials only by reference: Secrets reach the worker as `valueFrom.secretKeyRef` env
//! vars, and anything password-like written into the spec itself is redacted from the
//! ConfigMap.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use syncmesh_crds::{FieldIssue, SyncPipeline, WorkerResources};

/// The worker's metrics, `/healthz` and `/readyz` port.
pub const METRICS_PORT: i32 = 9464;
/// Pod-template annotation holding the hash of the rendered pipeline: a spec change rolls the
/// worker.
pub const HASH_ANNOTATION: &str = "syncmesh.io/pipeline-hash";
/// Label naming the pipeline on every owned object and the worker pods.
pub const PIPELINE_LABEL: &str = "syncmesh.io/pipeline";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by=syncmesh";
/// Where the worker keeps its checkpoint (an emptyDir; relative manifest paths land here too).
const STATE_DIR: &str = "/var/lib/syncmesh";
/// The key of the manifest in the ConfigMap, mounted at `/etc/syncmesh/pipeline.yaml`.
pub const MANIFEST_KEY: &str = "pipeline.yaml";
/// Written in place of a secret value found in the spec.
pub const REDACTED: &str = "REDACTED";

/// Operator-wide defaults for workers.
#[derive(Clone, Debug)]
pub struct WorkerDefaults {
    pub image: String,
    pub service_account: String,
}

pub fn config_map_name(pipeline: &str) -> String {
    format!("{pipeline}-pipeline")
}

pub fn deployment_name(pipeline: &str) -> String {
    format!("{pipeline}-worker")
}

pub fn service_name(pipeline: &str) -> String {
    format!("{pipeline}-metrics")
}

/// The three owned objects, ready for server-side apply.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    /// The hash of the manifest, as on the pod template.
    pub hash: String,
    /// Spec fields whose values looked like secrets and were redacted from the ConfigMap.
    pub redacted: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the SyncPipeline has no {0}")]
    Missing(&'static str),
    #[error("rendering the pipeline manifest: {0}")]
    Manifest(String),
    #[error("building {kind}: {source}")]
    Object {
        kind: &'static str,
        source: serde_json::Error,
    },
}

/// Problems that only matter when the operator runs the pipeline: names too long for the
/// objects derived from them, and `passwordEnv` variables no Secret provides.
pub fn operator_issues(sp: &SyncPipeline) -> Vec<FieldIssue> {
    let mut issues = Vec::new();
    let name = sp.name_any();
    // Service names are DNS-1035 labels (63 characters); `-metrics` is the longest suffix.
    if service_name(&name).len() > 63 {
        issues.push(issue(
            "metadata.name",
            format!(
                "`{name}` is too long: at most {} characters, so that `{}` is a valid Service name",
                63 - "-metrics".len(),
                service_name(&name)
            ),
        ));
    }
    let env = sp
        .spec
        .worker
        .as_ref()
        .map(|w| w.env.as_slice())
        .unwrap_or_default();
    let mut seen = BTreeMap::new();
    for (i, e) in env.iter().enumerate() {
        if let Some(first) = seen.insert(e.name.as_str(), i) {
            issues.push(issue(
                format!("spec.worker.env[{i}].name"),
                format!("`{}` is already set by spec.worker.env[{first}]", e.name),
            ));
        }
    }
    if let Some(r) = sp.spec.worker.as_ref().and_then(|w| w.resources.as_ref()) {
        for (section, map) in [("requests", &r.requests), ("limits", &r.limits)] {
            for (resource, quantity) in map {
                if !is_quantity(quantity) {
                    issues.push(issue(
                        format!("spec.worker.resources.{section}.{resource}"),
                        format!(
                            "`{quantity}` is not a Kubernetes quantity (e.g. `500m`, `2`, `1Gi`)"
                        ),
                    ));
                }
            }
        }
    }
    let provided = |var: &str| env.iter().any(|e| e.name == var);
    let mut wanted = Vec::new();
    for (i, source) in sp.spec.sources.iter().enumerate() {
        if let Some(ora) = &source.oracle
            && let Some(var) = &ora.credentials.password_env
        {
            wanted.push((
                format!("spec.sources[{i}].oracle.credentials.passwordEnv"),
                var,
            ));
        }
        if let Some(snap) = source.tidb.as_ref().and_then(|t| t.snapshot.as_ref())
            && let Some(var) = &snap.password_env
        {
            wanted.push((format!("spec.sources[{i}].tidb.snapshot.passwordEnv"), var));
        }
    }
    if let Some(var) = sp.spec.sink.as_ref().and_then(|s| s.password_env.as_ref()) {
        wanted.push(("spec.sink.passwordEnv".to_string(), var));
    }
    if let Some(var) = sp
        .spec
        .check
        .as_ref()
        .and_then(|c| c.source_password_env.as_ref())
    {
        wanted.push(("spec.check.sourcePasswordEnv".to_string(), var));
    }
    for (path, var) in wanted {
        if !provided(var) {
            issues.push(issue(
                path,
                format!(
                    "`{var}` is not provided to the worker: add it to spec.worker.env with a secretKeyRef"
                ),
            ));
        }
    }
    issues
}

/// A Kubernetes quantity: a decimal number, then an optional binary (`Ki`..`Ei`), decimal
/// (`n`, `u`, `m`, `k`, `M`..`E`) or exponent (`e3`) suffix.
fn is_quantity(q: &str) -> bool {
    let digits_end = q
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '+' || c == '-'))))
        .map_or(q.len(), |(i, _)| i);
    let (number, suffix) = q.split_at(digits_end);
    let number = number.trim_start_matches(['+', '-']);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return false;
    }
    const SUFFIXES: [&str; 16] = [
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    SUFFIXES.contains(&suffix)
        || suffix
            .strip_prefix(['e', 'E'])
            .map(|e| e.trim_start_matches(['+', '-']))
            .is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()))
}

fn issue(path: impl Into<String>, reason: impl Into<String>) -> FieldIssue {
    FieldIssue {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Renders the owned objects. Call only for a valid spec.
pub fn render(sp: &SyncPipeline, defaults: &WorkerDefaults) -> Result<Rendered, RenderError> {
    let name = sp
        .metadata
        .name
        .clone()
        .ok_or(RenderError::Missing("name"))?;
    let namespace = sp
        .metadata
        .namespace
        .clone()
        .ok_or(RenderError::Missing("namespace"))?;
    let owner = sp
        .controller_owner_ref(&())
        .ok_or(RenderError::Missing("uid"))?;
    let owner = serde_json::to_value(owner).map_err(|e| RenderError::Manifest(e.to_string()))?;

    let (manifest, redacted) = manifest_yaml(sp, &name, &namespace)?;
    // The routes change in a running worker (it watches its pipeline), so they are left out
    // of the hash that rolls the Deployment.
    let mut without_routes = sp.clone();
    without_routes.spec.routes.clear();
    without_routes.spec.default_route.clear();
    let (restart_manifest, _) = manifest_yaml(&without_routes, &name, &namespace)?;
    let hash = format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(restart_manifest.as_bytes())
    );
    let labels = json!({
        "app.kubernetes.io/name": "syncmesh-worker",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": "syncmesh",
        PIPELINE_LABEL: name,
    });
    let selector = json!({
        "app.kubernetes.io/component": "worker",
        PIPELINE_LABEL: name,
    });
    let meta = |object_name: String| {
        json!({
            "name": object_name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner],
        })
    };

    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(config_map_name(&name)),
        "data": { MANIFEST_KEY: manifest },
    });

    let worker = sp.spec.worker.clone().unwrap_or_default();
    let image = worker.image.unwrap_or_else(|| defaults.image.clone());
    let service_account = worker
        .service_account_name
        .unwrap_or_else(|| defaults.service_account.clone());
    let resources = resources(worker.resources.as_ref());
    let env = secret_env(sp);
    let state_volume = match &worker.state_volume_claim {
        Some(claim) => json!({ "name": "state", "persistentVolumeClaim": { "claimName": claim } }),
        None => json!({ "name": "state", "emptyDir": {} }),
    };
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(deployment_name(&name)),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 3,
            // One writer per pipeline: the old worker is gone before the new one starts.
            "strategy": { "type": "Recreate" },
            "selector": { "matchLabels": selector },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        HASH_ANNOTATION: hash,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": METRICS_PORT.to_string(),
                    },
                },
                "spec": {
                    "serviceAccountName": service_account,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "worker",
                        "image": image,
                        "args": [
                            "worker",
                            "--pipeline", format!("{namespace}/{name}"),
                            "--metrics-addr", format!("0.0.0.0:{METRICS_PORT}"),
                            "--state-dir", STATE_DIR,
                        ],
                        "workingDir": STATE_DIR,
                        "env": env,
                        "ports": [{ "name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP" }],
                        "resources": resources,
                        "livenessProbe": {
                            "httpGet": { "path": "/healthz", "port": "metrics" },
                            "periodSeconds": 10,
                            "failureThreshold": 3,
                        },
                        "readinessProbe": {
                            "httpGet": { "path": "/readyz", "port": "metrics" },
                            "periodSeconds": 5,
                            "failureThreshold": 3,
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                        "volumeMounts": [
                            { "name": "state", "mountPath": STATE_DIR },
                            { "name": "tmp", "mountPath": "/tmp" },
                            { "name": "pipeline", "mountPath": "/etc/syncmesh", "readOnly": true },
                        ],
                    }],
                    "volumes": [
                        state_volume,
                        { "name": "tmp", "emptyDir": {} },
                        { "name": "pipeline", "configMap": { "name": config_map_name(&name) } },
                    ],
                },
            },
        },
    });

    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(service_name(&name)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{ "name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP" }],
        },
    });

    Ok(Rendered {
        config_map: typed("ConfigMap", config_map)?,
        deployment: typed("Deployment", deployment)?,
        service: typed("Service", service)?,
        hash,
        redacted,
    })
}

fn typed<T: serde::de::DeserializeOwned>(kind: &'static str, v: Value) -> Result<T, RenderError> {
    serde_json::from_value(v).map_err(|source| RenderError::Object { kind, source })
}

/// Requests and limits: the spec's, over the defaults (requests 100m CPU and 256Mi, limit 1Gi).
fn resources(spec: Option<&WorkerResources>) -> Value {
    let mut requests: BTreeMap<String, String> = [
        ("cpu".to_string(), "100m".to_string()),
        ("memory".to_string(), "256Mi".to_string()),
    ]
    .into();
    let mut limits: BTreeMap<String, String> = [("memory".to_string(), "1Gi".to_string())].into();
    if let Some(r) = spec {
        requests.extend(r.requests.clone());
        limits.extend(r.limits.clone());
    }
    json!({ "requests": requests, "limits": limits })
}

/// The worker's env: each Oracle `secretName` as `SYNCMESH_SECRET_<NAME>` from the Secret's
/// `password` key (the name the Oracle source reads), then `spec.worker.env`.
pub fn secret_env(sp: &SyncPipeline) -> Vec<Value> {
    let mut env: Vec<Value> = Vec::new();
    let mut names = Vec::new();
    for source in &sp.spec.sources {
        if let Some(secret) = source
            .oracle
            .as_ref()
            .and_then(|o| o.credentials.secret_name.as_ref())
        {
            let var = format!("SYNCMESH_SECRET_{secret}")
                .to_ascii_uppercase()
                .replace(['-', '.'], "_");
            if !names.contains(&var) {
                env.push(secret_ref(&var, secret, "password"));
                names.push(var);
            }
        }
    }
    for e in sp.spec.worker.iter().flat_map(|w| &w.env) {
        if !names.contains(&e.name) {
            env.push(secret_ref(
                &e.name,
                &e.secret_key_ref.name,
                &e.secret_key_ref.key,
            ));
            names.push(e.name.clone());
        }
    }
    env
}

fn secret_ref(var: &str, secret: &str, key: &str) -> Value {
    json!({ "name": var, "valueFrom": { "secretKeyRef": { "name": secret, "key": key } } })
}

/// The pipeline as a manifest (apiVersion, kind, metadata, spec), with secret-looking values
/// redacted; also the field paths that were.
fn manifest_yaml(
    sp: &SyncPipeline,
    name: &str,
    namespace: &str,
) -> Result<(String, Vec<String>), RenderError> {
    let mut spec =
        serde_json::to_value(&sp.spec).map_err(|e| RenderError::Manifest(e.to_string()))?;
    let mut redacted = Vec::new();
    redact(&mut spec, "spec", &mut redacted);
    let manifest = json!({
        "apiVersion": SyncPipeline::api_version(&()),
        "kind": SyncPipeline::kind(&()),
        "metadata": { "name": name, "namespace": namespace },
        "spec": spec,
    });
    let text =
        serde_saphyr::to_string(&manifest).map_err(|e| RenderError::Manifest(e.to_string()))?;
    Ok((text, redacted))
}

/// Replaces, in place, the password of URLs with credentials (`scheme://user:pw@host`) and
/// string values under keys naming a secret (`sasl.password`, `ssl.key.password`, `token`...),
/// but not the references (`passwordEnv`, `secretName`).
fn redact(v: &mut Value, path: &str, redacted: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                let child_path = format!("{path}.{key}");
                if let Value::String(s) = child
                    && secret_key(key)
                    && !s.is_empty()
                {
                    *s = REDACTED.to_string();
                    redacted.push(child_path);
                } else {
                    redact(child, &child_path, redacted);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                redact(child, &format!("{path}[{i}]"), redacted);
            }
        }
        Value::String(s) => {
            if let Some(clean) = url_without_password(s) {
                *s = clean;
                redacted.push(path.to_string());
            }
        }
        _ => {}
    }
}

fn secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key == "passwordenv" || key == "secretname" {
        return false;
    }
    ["password", "passwd", "secret", "token", "credential"]
        .iter()
        .any(|word| key.contains(word))
}

/// `scheme://user:pw@host/...` -> `scheme://user:REDACTED@host/...`; None without a password.
fn url_without_password(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let (userinfo, host) = authority.rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    if password.is_empty() || password == REDACTED {
        return None;
    }
    Some(format!(
        "{scheme}://{user}:{REDACTED}@{host}{}",
        &rest[authority_end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncmesh_crds::SyncPipelineSpec;

    fn pipeline(spec: Value) -> SyncPipeline {
        let spec: SyncPipelineSpec = serde_json::from_value(spec).expect("test spec parses");
        let mut sp = SyncPipeline::new("ledger", spec);
        sp.metadata.namespace = Some("tenant-a".into());
        sp.metadata.uid = Some("0000-1111".into());
        sp
    }

    fn defaults() -> WorkerDefaults {
        WorkerDefaults {
            image: "syncmesh:test".into(),
            service_account: "syncmesh-worker".into(),
        }
    }

    fn oracle_spec() -> Value {
        json!({
            "sources": [
                { "name": "ora", "oracle": {
                    "url": "oracle://db:1521/ORCL",
                    "credentials": { "user": "cdc", "secretName": "ora-cdc" } } },
                { "name": "ti", "tidb": {
                    "brokers": "k:9092", "topics": ["t"],
                    "properties": { "sasl.password": "hunter2", "sasl.username": "u" },
                    "snapshot": { "url": "mysql://root:s3cr3t@tidb:4000/", "passwordEnv": "TIDB_PW",
                                  "tables": ["a.b"], "watermarkTable": "a.w" } } }
            ],
            "sink": { "url": "postgres://app:pa55@pg/db" },
            "batch": { "url": "s3://bucket/x" },
            "worker": {
                "image": "registry/syncmesh:1.2",
                "resources": { "limits": { "memory": "2Gi", "cpu": "2" } },
                "env": [{ "name": "TIDB_PW", "secretKeyRef": { "name": "tidb", "key": "pw" } }]
            }
        })
    }

    #[test]
    fn renders_three_owned_objects_with_owner_refs() {
        let sp = pipeline(oracle_spec());
        let r = render(&sp, &defaults()).expect("renders");
        for meta in [
            &r.config_map.metadata,
            &r.deployment.metadata,
            &r.service.metadata,
        ] {
            let owners = meta.owner_references.clone().unwrap_or_default();
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(owners[0].uid, "0000-1111");
            assert_eq!(owners[0].kind, "SyncPipeline");
            assert_eq!(meta.namespace.as_deref(), Some("tenant-a"));
        }
        assert_eq!(
            r.config_map.metadata.name.as_deref(),
            Some("ledger-pipeline")
        );
        assert_eq!(r.deployment.metadata.name.as_deref(), Some("ledger-worker"));
        assert_eq!(r.service.metadata.name.as_deref(), Some("ledger-metrics"));

        let spec = r.deployment.spec.as_ref().expect("deployment spec");
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(
            spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
            Some("Recreate")
        );
        let pod = spec.template.spec.as_ref().expect("pod spec");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("registry/syncmesh:1.2"));
        assert_eq!(
            c.args.clone().unwrap_or_default()[..3],
            ["worker", "--pipeline", "tenant-a/ledger"]
        );
        let sc = c
            .security_context
            .as_ref()
            .expect("container security context");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            pod.security_context
                .as_ref()
                .and_then(|s| s.run_as_non_root),
            Some(true)
        );
        let res = c.resources.as_ref().expect("resources");
        let limits = res.limits.clone().unwrap_or_default();
        assert_eq!(limits.get("memory").map(|q| q.0.as_str()), Some("2Gi"));
        let requests = res.requests.clone().unwrap_or_default();
        assert_eq!(requests.get("cpu").map(|q| q.0.as_str()), Some("100m"));
        assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some());
        assert_eq!(pod.service_account_name.as_deref(), Some("syncmesh-worker"));
        let annotations = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone());
        assert_eq!(
            annotations.unwrap_or_default().get(HASH_ANNOTATION),
            Some(&r.hash)
        );
    }

    #[test]
    fn a_routes_change_keeps_the_pipeline_hash_and_other_changes_roll_the_worker() {
        let hash = |sp: &SyncPipeline| render(sp, &defaults()).expect("renders").hash;
        let sp = pipeline(oracle_spec());
        let mut rerouted = sp.clone();
        rerouted.spec.default_route = vec![syncmesh_crds::PathName::Realtime];
        rerouted.spec.routes = serde_json::from_value(serde_json::json!([
            {"name": "all", "match": {"tables": ["*"]}, "to": []}
        ]))
        .expect("routes parse");
        assert_eq!(
            hash(&sp),
            hash(&rerouted),
            "routes change in the running worker"
        );
        let r = render(&rerouted, &defaults()).expect("renders");
        let data = r
            .config_map
            .data
            .as_ref()
            .and_then(|d| d.get(MANIFEST_KEY))
            .cloned()
            .unwrap_or_default();
        assert!(
            data.contains("name: all"),
            "the ConfigMap still holds the whole spec"
        );
        let mut other = sp.clone();
        other.spec.sources[0].name = "renamed".into();
        assert_ne!(
            hash(&sp),
            hash(&other),
            "any other change restarts the worker"
        );
    }

    #[test]
    fn objects_survive_the_typed_round_trip() {
        // A misspelt field would be dropped by the typed structs: the JSON must equal its
        // round trip, so every field written is one Kubernetes knows.
        let sp = pipeline(oracle_spec());
        let r = render(&sp, &defaults()).expect("renders");
        let d = serde_json::to_value(&r.deployment).expect("serializes");
        let again: Deployment = serde_json::from_value(d.clone()).expect("parses");
        assert_eq!(serde_json::to_value(&again).expect("serializes"), d);
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(
            pod["containers"][0]["volumeMounts"]
                .as_array()
                .map(Vec::len),
            Some(3)
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(
            pod["containers"][0]["ports"][0]["containerPort"],
            METRICS_PORT
        );
    }

    #[test]
    fn secrets_reach_the_worker_by_reference_only() {
        let sp = pipeline(oracle_spec());
        let r = render(&sp, &defaults()).expect("renders");
        let env = secret_env(&sp);
        assert_eq!(
            env,
            vec![
                json!({"name": "SYNCMESH_SECRET_ORA_CDC", "valueFrom": {"secretKeyRef": {"name": "ora-cdc", "key": "password"}}}),
                json!({"name": "TIDB_PW", "valueFrom": {"secretKeyRef": {"name": "tidb", "key": "pw"}}}),
            ]
        );
        let yaml = &r.config_map.data.as_ref().expect("data")[MANIFEST_KEY];
        for secret in ["hunter2", "s3cr3t", "pa55"] {
            assert!(!yaml.contains(secret), "{secret} leaked into:\n{yaml}");
        }
        assert!(yaml.contains("mysql://root:REDACTED@tidb:4000/"), "{yaml}");
        assert!(yaml.contains("passwordEnv: TIDB_PW"), "{yaml}");
        assert!(yaml.contains("secretName: ora-cdc"), "{yaml}");
        assert_eq!(
            r.redacted,
            [
                "spec.sink.url",
                "spec.sources[1].tidb.properties.sasl.password",
                "spec.sources[1].tidb.snapshot.url",
            ]
        );
        // The manifest reads back as the same pipeline, but for the redactions.
        let back = syncmesh_crds::parse_manifest(yaml).expect("the ConfigMap manifest parses");
        assert_eq!(back.spec.sources.len(), 2);
        assert_eq!(back.spec.worker, sp.spec.worker);
    }

    #[test]
    fn state_is_an_empty_dir_or_the_named_claim() {
        let volume = |spec: Value| {
            let r = render(&pipeline(spec), &defaults()).expect("renders");
            let d = serde_json::to_value(&r.deployment).expect("serializes");
            d["spec"]["template"]["spec"]["volumes"][0].clone()
        };
        assert_eq!(
            volume(oracle_spec()),
            json!({ "name": "state", "emptyDir": {} })
        );
        let mut spec = oracle_spec();
        spec["worker"]["stateVolumeClaim"] = json!("ledger-state");
        assert_eq!(
            volume(spec),
            json!({ "name": "state", "persistentVolumeClaim": { "claimName": "ledger-state" } })
        );
    }

    #[test]
    fn a_spec_change_changes_the_hash() {
        let a = render(&pipeline(oracle_spec()), &defaults()).expect("renders");
        let mut spec = oracle_spec();
        spec["batch"]["maxEvents"] = json!(7);
        let b = render(&pipeline(spec), &defaults()).expect("renders");
        assert_ne!(a.hash, b.hash);
        let again = render(&pipeline(oracle_spec()), &defaults()).expect("renders");
        assert_eq!(a.hash, again.hash);
    }

    #[test]
    fn password_envs_need_a_secret_and_names_must_fit() {
        let mut spec = oracle_spec();
        spec["worker"]["env"] = json!([
            { "name": "OTHER", "secretKeyRef": { "name": "s", "key": "k" } },
            { "name": "OTHER", "secretKeyRef": { "name": "s", "key": "k2" } }
        ]);
        let mut sp = pipeline(spec);
        sp.metadata.name = Some("x".repeat(56));
        let issues = operator_issues(&sp);
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "metadata.name",
                "spec.worker.env[1].name",
                "spec.sources[1].tidb.snapshot.passwordEnv"
            ]
        );
        assert!(issues[2].reason.contains("`TIDB_PW`"));
        assert!(operator_issues(&pipeline(oracle_spec())).is_empty());

        // The sink's password and the checked database's come from the worker's env too.
        let mut spec = oracle_spec();
        spec["sink"] = json!({ "url": "postgres://app@pg/db", "passwordEnv": "SINK_PW" });
        spec["check"] = json!({ "sourceUrl": "mysql://chk@src/db", "sourcePasswordEnv": "SRC_PW" });
        let paths = |spec: &Value| -> Vec<String> {
            operator_issues(&pipeline(spec.clone()))
                .into_iter()
                .map(|i| i.path)
                .collect()
        };
        assert_eq!(
            paths(&spec),
            ["spec.sink.passwordEnv", "spec.check.sourcePasswordEnv"]
        );
        spec["worker"]["env"] = json!([
            { "name": "TIDB_PW", "secretKeyRef": { "name": "tidb", "key": "pw" } },
            { "name": "SINK_PW", "secretKeyRef": { "name": "sink", "key": "pw" } },
            { "name": "SRC_PW", "secretKeyRef": { "name": "src", "key": "pw" } }
        ]);
        assert!(paths(&spec).is_empty());
    }

    #[test]
    fn quantities_are_checked() {
        for good in ["1", "500m", "0.5", "1Gi", "256Mi", "2e3", "1.5G", "+1"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "2 GB", "1gi", "Gi", "1..5", ".", "1e", "abc"] {
            assert!(!is_quantity(bad), "{bad}");
        }
        let mut spec = oracle_spec();
        spec["worker"]["resources"] = json!({ "limits": { "memory": "2 GB" } });
        let issues = operator_issues(&pipeline(spec));
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].path, "spec.worker.resources.limits.memory");
    }

    #[test]
    fn url_passwords_are_found() {
        assert_eq!(
            url_without_password("mysql://u:p@h:1/db?x=1").as_deref(),
            Some("mysql://u:REDACTED@h:1/db?x=1")
        );
        assert_eq!(url_without_password("mysql://u@h/db"), None);
        assert_eq!(url_without_password("s3://bucket/a@b:c"), None);
        assert_eq!(url_without_password("plain text"), None);
    }
}
