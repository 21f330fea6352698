//! `syncmesh operator` on the real API server (Kubernetes 1.20, with kube-controller-manager):
//! the built binary runs as a process scoped to the test's own namespace and Lease. Pods never
//! start here (no kubelet), so the worker's side of status is written the way the worker
//! writes it: server-side apply with field manager `syncmesh-worker` on the status subresource.

mod common;

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use syncmesh_crds::{Condition, SyncPipeline, SyncPipelineSpec};
use syncmesh_tests::kube::{apply_crd, client, create_namespace, delete_namespace};
use syncmesh_tests::{poll_until, services, unique_name};

const WAIT: Duration = Duration::from_secs(60);
const HASH_ANNOTATION: &str = "syncmesh.io/pipeline-hash";

/// An operator process watching one namespace of its own; killed and the namespace deleted on
/// drop.
struct Harness {
    client: Client,
    ns: String,
    operators: Vec<Operator>,
}

struct Operator {
    child: Child,
    log: std::path::PathBuf,
    identity: String,
    /// Where it serves /metrics, /healthz and /readyz.
    metrics: std::net::SocketAddr,
}

impl Harness {
    async fn start(prefix: &str) -> anyhow::Result<Option<Self>> {
        let Some(kube) = services::kube() else {
            return Ok(None);
        };
        let client = client(&kube).await?;
        apply_generated_crd(&client).await?;
        let ns = create_namespace(&client, prefix).await?;
        Ok(Some(Self {
            client,
            ns,
            operators: Vec::new(),
        }))
    }

    /// Starts an operator on this namespace's Lease `lease`, with the default lease duration
    /// (15 s: a loaded machine cannot make it miss renewals).
    fn spawn_operator(&mut self, lease: &str) -> anyhow::Result<String> {
        self.spawn_operator_with(lease, 60, 15)
    }

    /// Starts an operator that deems a worker gone `heartbeat_timeout` seconds after its last
    /// heartbeat, on a Lease of `lease_duration` seconds (renewed every third of it).
    fn spawn_operator_with(
        &mut self,
        lease: &str,
        heartbeat_timeout: u32,
        lease_duration: u32,
    ) -> anyhow::Result<String> {
        let kubeconfig = std::env::var("SYNCMESH_KUBECONFIG").context("SYNCMESH_KUBECONFIG")?;
        let identity = unique_name("op", '-', 40);
        let log = std::env::temp_dir().join(format!("{identity}.log"));
        let file = std::fs::File::create(&log)?;
        // A port free a moment ago; the operator fails to start if it was taken since.
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = Command::new(common::bin())
            .args([
                "operator",
                "--namespace",
                &self.ns,
                "--lease-name",
                lease,
                "--lease-duration",
                &lease_duration.to_string(),
                "--identity",
                &identity,
                "--image",
                "syncmesh:test",
                "--heartbeat-timeout",
                &heartbeat_timeout.to_string(),
                "--metrics-addr",
                &metrics.to_string(),
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("starting syncmesh operator")?;
        self.operators.push(Operator {
            child,
            log,
            identity: identity.clone(),
            metrics,
        });
        Ok(identity)
    }

    fn pipelines(&self) -> Api<SyncPipeline> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The operators' logs, for failure messages.
    fn logs(&self) -> String {
        self.operators
            .iter()
            .map(|o| {
                let text = std::fs::read_to_string(&o.log).unwrap_or_default();
                format!("--- operator {} ---\n{text}", o.identity)
            })
            .collect()
    }

    async fn finish(mut self, result: anyhow::Result<()>) -> anyhow::Result<()> {
        for o in &mut self.operators {
            let _ = o.child.kill();
            let _ = o.child.wait();
        }
        let logs = self.logs();
        // No operator is left to run the finalizers: drop them, or the namespace would stay
        // Terminating for ever.
        let unfinalized = self.drop_finalizers().await;
        let cleanup = delete_namespace(&self.client, &self.ns).await;
        result.map_err(|e| anyhow!("{e:#}\n{logs}"))?;
        unfinalized.and(cleanup)
    }

    async fn drop_finalizers(&self) -> anyhow::Result<()> {
        let api = self.pipelines();
        let patch = json!({ "metadata": { "finalizers": null } });
        for sp in api.list(&ListParams::default()).await? {
            if !sp.finalizers().is_empty() {
                api.patch(
                    &sp.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            }
        }
        Ok(())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for o in &mut self.operators {
            let _ = o.child.kill();
            let _ = o.child.wait();
        }
    }
}

/// The CRD as shipped (deploy/crds), not as generated in this process.
async fn apply_generated_crd(client: &Client) -> anyhow::Result<()> {
    let path = common::repo_root().join("deploy/crds/syncpipelines.syncmesh.io.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&text)?;
    apply_crd(client, &crd).await?;
    Ok(())
}

fn spec(value: Value) -> anyhow::Result<SyncPipelineSpec> {
    Ok(serde_json::from_value(value)?)
}

/// A flat-file pipeline with an Oracle source whose password is in a Secret, and a sink URL
/// with a password written into it (which must not reach the ConfigMap).
fn pipeline_spec(max_events: u64) -> Value {
    json!({
        "sources": [
            { "name": "ledger", "flatFile": {
                "path": "/data/ledger", "pattern": "*.dat", "layout": "/data/ledger.cpy",
                "table": "bank.ledger", "primaryKey": ["ACCOUNT-ID"] } },
            { "name": "ora", "oracle": {
                "url": "oracle://db:1521/ORCL",
                "credentials": { "user": "cdc", "secretName": "ora-cdc" } } }
        ],
        "batch": { "url": "s3://snapshots/ledger", "maxEvents": max_events },
        "sink": { "url": "postgres://app:pa55-in-url@pg:5432/analytics" },
        "worker": {
            "resources": { "limits": { "cpu": "1", "memory": "512Mi" } },
            "env": [{ "name": "AWS_SECRET_ACCESS_KEY",
                      "secretKeyRef": { "name": "s3-creds", "key": "secret" } }]
        }
    })
}

/// Changes the spec as a user would, without racing the operator's status writes.
async fn set_spec(h: &Harness, name: &str, value: Value) -> anyhow::Result<SyncPipeline> {
    spec(value.clone())?;
    let patch = json!({ "spec": value });
    Ok(h.pipelines()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?)
}

fn condition<'a>(sp: &'a SyncPipeline, type_: &str) -> Option<&'a Condition> {
    sp.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

fn describe(sp: &SyncPipeline) -> String {
    match &sp.status {
        Some(s) => format!(
            "phase {:?}, observedGeneration {:?}, conditions {:?}",
            s.phase,
            s.observed_generation,
            s.conditions
                .iter()
                .map(|c| format!("{}={} {} {}", c.type_, c.status, c.reason, c.message))
                .collect::<Vec<_>>()
        ),
        None => "no status".into(),
    }
}

/// Polls the pipeline until `check` accepts it.
async fn wait_pipeline(
    h: &Harness,
    name: &str,
    what: &str,
    check: impl Fn(&SyncPipeline) -> bool,
) -> anyhow::Result<SyncPipeline> {
    let api = h.pipelines();
    poll_until(WAIT, what, || {
        let api = api.clone();
        let check = &check;
        async move {
            let sp = api.get(name).await?;
            if check(&sp) {
                Ok(Some(sp))
            } else {
                Err(anyhow!("{}", describe(&sp)))
            }
        }
    })
    .await
}

async fn events(h: &Harness, pipeline: &str) -> anyhow::Result<Vec<Event>> {
    let list = h.api::<Event>().list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pipeline)
                && e.reporting_controller.as_deref() == Some("syncmesh")
        })
        .collect())
}

async fn wait_event(h: &Harness, pipeline: &str, reason: &str) -> anyhow::Result<Event> {
    poll_until(
        WAIT,
        &format!("an Event {reason} on {pipeline}"),
        || async {
            let all = events(h, pipeline).await?;
            match all.iter().find(|e| e.reason.as_deref() == Some(reason)) {
                Some(e) => Ok(Some(e.clone())),
                None => Err(anyhow!(
                    "events so far: {:?}",
                    all.iter().map(|e| e.reason.clone()).collect::<Vec<_>>()
                )),
            }
        },
    )
    .await
}

fn owned_by_and_applied<K: Resource>(object: &K, sp: &SyncPipeline) -> anyhow::Result<()> {
    let owners = object.meta().owner_references.clone().unwrap_or_default();
    let owner = owners
        .iter()
        .find(|o| Some(&o.uid) == sp.metadata.uid.as_ref())
        .ok_or_else(|| anyhow!("{} is not owned by the pipeline", object.name_any()))?;
    if owner.controller != Some(true) || owner.kind != "SyncPipeline" {
        bail!("owner reference {owner:?} is not a controller reference to the SyncPipeline");
    }
    let managers = object.meta().managed_fields.clone().unwrap_or_default();
    if !managers.iter().any(|m| {
        m.manager.as_deref() == Some("syncmesh") && m.operation.as_deref() == Some("Apply")
    }) {
        bail!(
            "{} has no Apply by field manager syncmesh: {:?}",
            object.name_any(),
            managers.iter().map(|m| &m.manager).collect::<Vec<_>>()
        );
    }
    Ok(())
}

async fn get_all(
    h: &Harness,
    name: &str,
) -> anyhow::Result<Option<(ConfigMap, Deployment, Service)>> {
    let cm = h
        .api::<ConfigMap>()
        .get_opt(&format!("{name}-pipeline"))
        .await?;
    let dep = h
        .api::<Deployment>()
        .get_opt(&format!("{name}-worker"))
        .await?;
    let svc = h
        .api::<Service>()
        .get_opt(&format!("{name}-metrics"))
        .await?;
    Ok(match (cm, dep, svc) {
        (Some(c), Some(d), Some(s)) => Some((c, d, s)),
        _ => None,
    })
}

fn template_hash(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(HASH_ANNOTATION)
        .cloned()
}

/// Writes status fields the way the worker does (its own field manager, server-side apply).
async fn worker_status(h: &Harness, name: &str, status: Value) -> anyhow::Result<()> {
    let patch = json!({
        "apiVersion": "syncmesh.io/v1alpha1",
        "kind": "SyncPipeline",
        "status": status,
    });
    h.pipelines()
        .patch_status(
            name,
            &PatchParams::apply("syncmesh-worker").force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn lifecycle_owned_objects_status_events_and_cleanup() -> anyhow::Result<()> {
    let Some(mut h) = Harness::start("operator-life").await? else {
        return Ok(()); // skipped: services::kube() said why
    };
    let result = match h.spawn_operator("syncmesh-operator") {
        Ok(_) => lifecycle(&h).await,
        Err(e) => Err(e),
    };
    h.finish(result).await
}

async fn lifecycle(h: &Harness) -> anyhow::Result<()> {
    let secret_value = "0racle-s3cret-value";
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "ora-cdc" },
        "stringData": { "password": secret_value }
    }))?;
    h.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await?;

    let name = "ledger";
    let created = h
        .pipelines()
        .create(
            &PostParams::default(),
            &SyncPipeline::new(name, spec(pipeline_spec(100))?),
        )
        .await?;

    // The three owned objects, owned and applied by `syncmesh`.
    let (cm, dep, svc) = poll_until(WAIT, "the ConfigMap, Deployment and Service", || async {
        get_all(h, name).await
    })
    .await?;
    let sp = h.pipelines().get(name).await?;
    assert_eq!(sp.metadata.uid, created.metadata.uid);
    for check in [
        owned_by_and_applied(&cm, &sp),
        owned_by_and_applied(&dep, &sp),
        owned_by_and_applied(&svc, &sp),
    ] {
        check?;
    }
    assert!(
        sp.finalizers().iter().any(|f| f == "syncmesh.io/cleanup"),
        "finalizer set: {:?}",
        sp.finalizers()
    );

    // Credentials by reference only: no secret value in the ConfigMap or the Deployment.
    let manifest = cm
        .data
        .as_ref()
        .and_then(|d| d.get("pipeline.yaml"))
        .ok_or_else(|| anyhow!("ConfigMap without pipeline.yaml"))?;
    let deployment_json = serde_json::to_string(&dep)?;
    for text in [manifest.as_str(), deployment_json.as_str()] {
        assert!(!text.contains(secret_value), "secret value leaked: {text}");
        assert!(!text.contains("pa55-in-url"), "URL password leaked: {text}");
    }
    assert!(
        manifest.contains("postgres://app:REDACTED@pg:5432/analytics"),
        "{manifest}"
    );
    assert!(manifest.contains("secretName: ora-cdc"), "{manifest}");
    let pod = dep
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or_else(|| anyhow!("no pod spec"))?;
    let env = pod.containers[0].env.clone().unwrap_or_default();
    let refs: Vec<(String, String, String)> = env
        .iter()
        .filter_map(|e| {
            let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            assert!(e.value.is_none(), "{} has a literal value", e.name);
            Some((e.name.clone(), r.name.clone(), r.key.clone()))
        })
        .collect();
    assert_eq!(
        refs,
        [
            (
                "SYNCMESH_SECRET_ORA_CDC".into(),
                "ora-cdc".into(),
                "password".into()
            ),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                "s3-creds".into(),
                "secret".into()
            ),
        ]
    );
    let args = pod.containers[0].args.clone().unwrap_or_default();
    assert_eq!(
        args[..3],
        [
            "worker".to_string(),
            "--pipeline".into(),
            format!("{}/{name}", h.ns)
        ]
    );
    let hash1 = template_hash(&dep).ok_or_else(|| anyhow!("no template hash"))?;

    // Status: pods never run here, so the worker is unavailable and the rollout in progress.
    let sp = wait_pipeline(h, name, "Ready=False WorkerUnavailable", |sp| {
        condition(sp, "Ready")
            .is_some_and(|c| c.status == "False" && c.reason == "WorkerUnavailable")
            && sp.status.as_ref().and_then(|s| s.observed_generation) == sp.metadata.generation
    })
    .await?;
    let status = sp.status.clone().unwrap_or_default();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        [
            "Ready",
            "Progressing",
            "Degraded",
            "BreakerOpen",
            "ShadowPending",
            "CheckFailed"
        ]
    );
    for c in &status.conditions {
        assert!(c.last_transition_time.is_some(), "{c:?}");
        assert_eq!(c.observed_generation, sp.metadata.generation, "{c:?}");
    }
    assert_eq!(
        condition(&sp, "Progressing").map(|c| c.status.as_str()),
        Some("True")
    );
    assert_eq!(
        condition(&sp, "Degraded").map(|c| c.status.as_str()),
        Some("False")
    );
    let applied = wait_event(h, name, "Applied").await?;
    assert!(
        applied
            .note
            .as_deref()
            .unwrap_or("")
            .contains("Deployment ledger-worker created"),
        "{applied:?}"
    );
    let unavailable = wait_event(h, name, "WorkerUnavailable").await?;
    assert_eq!(unavailable.type_.as_deref(), Some("Warning"));
    let warning = wait_event(h, name, "SecretInSpec").await?;
    assert!(
        warning
            .note
            .as_deref()
            .unwrap_or("")
            .contains("spec.sink.url"),
        "{warning:?}"
    );
    assert!(
        !warning.note.as_deref().unwrap_or("").contains("pa55"),
        "{warning:?}"
    );

    // The worker reports: a heartbeat, an open breaker with a shadow backlog, a failed check.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    worker_status(
        h,
        name,
        json!({
            "heartbeat": now,
            "breaker": "open (1/1)",
            "lastCheck": "Failed",
            "sinkTables": [{ "table": "ledger", "breaker": "open", "reason": "p99 900 ms > 400 ms",
                             "shadow": "ledger_shadow", "pendingReplay": 42 }],
            "checks": [{ "table": "bank.ledger", "sinkTable": "ledger", "result": "Failed",
                         "finishedAt": now, "sourceRows": 100, "sinkRows": 98, "missing": 2,
                         "diffRatio": 0.02, "consecutiveFailures": 1 }]
        }),
    )
    .await?;
    let sp = wait_pipeline(
        h,
        name,
        "Ready=True with BreakerOpen and CheckFailed",
        |sp| {
            let is = |t: &str, s: &str| condition(sp, t).is_some_and(|c| c.status == s);
            is("Ready", "True")
                && is("BreakerOpen", "True")
                && is("ShadowPending", "True")
                && is("CheckFailed", "True")
                && is("Degraded", "True")
        },
    )
    .await?;
    let status = sp.status.clone().unwrap_or_default();
    assert_eq!(status.phase.as_deref(), Some("Degraded"));
    assert_eq!(
        status.breaker.as_deref(),
        Some("open (1/1)"),
        "the worker's fields stay"
    );
    let msg = |t: &str| {
        condition(&sp, t)
            .map(|c| c.message.clone())
            .unwrap_or_default()
    };
    assert!(
        msg("BreakerOpen").contains("ledger open (p99 900 ms > 400 ms)"),
        "{}",
        msg("BreakerOpen")
    );
    assert!(msg("ShadowPending").contains("42 diverted event(s) in ledger_shadow"));
    assert!(msg("CheckFailed").contains("2 missing"));
    let breaker = wait_event(h, name, "BreakerOpen").await?;
    assert_eq!(breaker.type_.as_deref(), Some("Warning"));
    wait_event(h, name, "WorkerRunning").await?;

    // Drift is repaired: a deleted Service comes back.
    let old_uid = svc.metadata.uid.clone();
    h.api::<Service>()
        .delete(&format!("{name}-metrics"), &DeleteParams::default())
        .await?;
    poll_until(WAIT, "the Service to be re-created", || async {
        let svc = h
            .api::<Service>()
            .get_opt(&format!("{name}-metrics"))
            .await?;
        Ok(svc.filter(|s| s.metadata.uid != old_uid))
    })
    .await?;

    // A spec change rolls the worker: new template hash, new observedGeneration.
    let updated = set_spec(h, name, pipeline_spec(200)).await?;
    let generation = updated.metadata.generation;
    poll_until(WAIT, "a new template hash", || async {
        let d = h.api::<Deployment>().get(&format!("{name}-worker")).await?;
        match template_hash(&d) {
            Some(hash) if hash != hash1 => Ok(Some(())),
            other => Err(anyhow!("hash {other:?}")),
        }
    })
    .await?;
    wait_pipeline(h, name, "observedGeneration of the update", |sp| {
        sp.status.as_ref().and_then(|s| s.observed_generation) == generation
            && condition(sp, "Ready").is_some_and(|c| c.observed_generation == generation)
    })
    .await?;

    // Deletion: the finalizer deletes the owned objects, then the pipeline goes.
    h.pipelines().delete(name, &DeleteParams::default()).await?;
    poll_until(WAIT, "the pipeline and its objects to be gone", || async {
        let sp = h.pipelines().get_opt(name).await?;
        let cm = h
            .api::<ConfigMap>()
            .get_opt(&format!("{name}-pipeline"))
            .await?;
        let dep = h
            .api::<Deployment>()
            .get_opt(&format!("{name}-worker"))
            .await?;
        let svc = h
            .api::<Service>()
            .get_opt(&format!("{name}-metrics"))
            .await?;
        if sp.is_none() && cm.is_none() && dep.is_none() && svc.is_none() {
            Ok(Some(()))
        } else {
            Err(anyhow!(
                "left: pipeline {} configmap {} deployment {} service {}",
                sp.is_some(),
                cm.is_some(),
                dep.is_some(),
                svc.is_some()
            ))
        }
    })
    .await?;
    let cleaned = wait_event(h, name, "CleanedUp").await?;
    assert!(
        cleaned
            .note
            .as_deref()
            .unwrap_or("")
            .contains("Deployment ledger-worker")
    );
    Ok(())
}

#[tokio::test]
async fn invalid_spec_is_a_condition_naming_the_field_and_gets_no_objects() -> anyhow::Result<()> {
    let Some(mut h) = Harness::start("operator-invalid").await? else {
        return Ok(()); // skipped: services::kube() said why
    };
    let result = match h.spawn_operator("syncmesh-operator") {
        Ok(_) => invalid(&h).await,
        Err(e) => Err(e),
    };
    h.finish(result).await
}

async fn invalid(h: &Harness) -> anyhow::Result<()> {
    let name = "broken";
    // Schema-valid, semantically wrong: a route to a path that is not configured, and an
    // Oracle password variable no Secret provides to the worker.
    let bad = json!({
        "sources": [{ "name": "ora", "oracle": {
            "url": "oracle://db:1521/ORCL",
            "credentials": { "user": "cdc", "passwordEnv": "ORA_PASSWORD" } } }],
        "routes": [{ "name": "rt", "match": { "tables": ["*"] }, "to": ["realtime"] }],
        "batch": { "url": "s3://b/p" }
    });
    h.pipelines()
        .create(
            &PostParams::default(),
            &SyncPipeline::new(name, spec(bad.clone())?),
        )
        .await?;
    let sp = wait_pipeline(h, name, "Degraded=True InvalidSpec", |sp| {
        condition(sp, "Degraded").is_some_and(|c| c.status == "True" && c.reason == "InvalidSpec")
    })
    .await?;
    let degraded = condition(&sp, "Degraded").cloned().unwrap_or_default();
    assert!(
        degraded.message.contains("spec.routes[0].to[0]"),
        "{}",
        degraded.message
    );
    assert!(
        degraded
            .message
            .contains("spec.sources[0].oracle.credentials.passwordEnv"),
        "{}",
        degraded.message
    );
    let ready = condition(&sp, "Ready").cloned().unwrap_or_default();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert_eq!(
        sp.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed")
    );
    // The status was written after the decision not to apply: nothing exists.
    assert!(
        h.api::<ConfigMap>()
            .get_opt("broken-pipeline")
            .await?
            .is_none()
    );
    assert!(
        h.api::<Deployment>()
            .get_opt("broken-worker")
            .await?
            .is_none()
    );
    assert!(
        h.api::<Service>()
            .get_opt("broken-metrics")
            .await?
            .is_none()
    );
    let event = wait_event(h, name, "InvalidSpec").await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    // Fixed: the password comes from a Secret, the route goes to the batch path.
    let mut fixed = bad;
    fixed["routes"][0]["to"] = json!(["batch"]);
    fixed["worker"] = json!({ "env": [{ "name": "ORA_PASSWORD",
        "secretKeyRef": { "name": "ora", "key": "password" } }] });
    set_spec(h, name, fixed).await?;
    poll_until(WAIT, "the owned objects of the fixed spec", || async {
        get_all(h, name).await
    })
    .await?;
    wait_pipeline(h, name, "InvalidSpec gone", |sp| {
        condition(sp, "Degraded").is_some_and(|c| c.status == "False")
            && condition(sp, "Ready").is_some_and(|c| c.reason == "WorkerUnavailable")
            && sp.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn one_leader_reconciles_and_a_successor_takes_over() -> anyhow::Result<()> {
    let Some(mut h) = Harness::start("operator-lease").await? else {
        return Ok(()); // skipped: services::kube() said why
    };
    let result = leadership(&mut h).await;
    h.finish(result).await
}

/// `GET path` over HTTP/1.0: the status code and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {response}"))?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    Ok((code, body.unwrap_or_default()))
}

/// The value of an unlabelled metric in a text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn holder(h: &Harness, lease: &str) -> anyhow::Result<Option<String>> {
    Ok(h.api::<Lease>()
        .get_opt(lease)
        .await?
        .and_then(|l| l.spec?.holder_identity))
}

async fn leadership(h: &mut Harness) -> anyhow::Result<()> {
    let lease = "syncmesh-operator";
    // 6 s: a quick takeover, still renewals 2 s apart that may each take up to 2 s.
    let first = h.spawn_operator_with(lease, 60, 6)?;
    let hr = &*h;
    let leader = poll_until(WAIT, "a lease holder", || async { holder(hr, lease).await }).await?;
    assert_eq!(leader, first);
    let second = h.spawn_operator_with(lease, 60, 6)?;
    let hr = &*h;

    let name = "ha";
    h.pipelines()
        .create(
            &PostParams::default(),
            &SyncPipeline::new(name, spec(pipeline_spec(10))?),
        )
        .await?;
    poll_until(WAIT, "the owned objects", || async {
        get_all(hr, name).await
    })
    .await?;

    // Both replicas are ready; only the leader says it leads and has reconciled.
    for (i, leads) in [(0, 1.0), (1, 0.0)] {
        let addr = hr.operators[i].metrics;
        poll_until(WAIT, "/readyz to answer 200", || async {
            Ok((http_get(addr, "/readyz").await?.0 == 200).then_some(()))
        })
        .await?;
        assert_eq!(http_get(addr, "/healthz").await?.0, 200);
        let (_, text) = http_get(addr, "/metrics").await?;
        assert_eq!(
            metric(&text, "syncmesh_operator_leader"),
            Some(leads),
            "{text}"
        );
        let reconciled = text.contains("syncmesh_operator_reconciles_total{result=\"ok\"}");
        assert_eq!(reconciled, leads == 1.0, "{text}");
    }
    let managers: Vec<String> = events(hr, name)
        .await?
        .iter()
        .filter_map(|e| e.reporting_instance.clone())
        .collect();
    assert!(
        managers.iter().all(|m| *m == first),
        "only the leader records events: {managers:?}"
    );

    // The leader dies without releasing: the other takes over once the lease expires (6 s).
    let o = &mut h.operators[0];
    o.child.kill()?;
    o.child.wait()?;
    let hr = &*h;
    poll_until(WAIT, "the second operator to lead", || async {
        match holder(hr, lease).await? {
            Some(id) if id == second => Ok(Some(())),
            other => Err(anyhow!("holder {other:?}")),
        }
    })
    .await?;

    // The successor reconciles: a spec change reaches the Deployment.
    let before = hr
        .api::<Deployment>()
        .get(&format!("{name}-worker"))
        .await?;
    set_spec(hr, name, pipeline_spec(11)).await?;
    poll_until(WAIT, "the successor to roll the worker", || async {
        let d = hr
            .api::<Deployment>()
            .get(&format!("{name}-worker"))
            .await?;
        Ok((template_hash(&d) != template_hash(&before)).then_some(()))
    })
    .await?;

    // A clean stop releases the lease at once.
    let mut op = h.operators.remove(1);
    let pid = op.child.id();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(status.success());
    let exit = poll_until(WAIT, "the operator to exit on SIGTERM", || {
        let exited = op.child.try_wait();
        async move { Ok(exited?) }
    })
    .await;
    h.operators.push(op);
    let exit = exit?;
    assert!(exit.success(), "exit status {exit:?}");
    assert_eq!(holder(h, lease).await?, None, "released on shutdown");
    Ok(())
}

#[tokio::test]
async fn a_running_worker_makes_the_pipeline_ready_and_its_death_does_not_go_unnoticed()
-> anyhow::Result<()> {
    let Some(mut h) = Harness::start("operator-worker").await? else {
        return Ok(()); // skipped: services::kube() said why
    };
    let result = match h.spawn_operator_with("syncmesh-operator", 5, 15) {
        Ok(_) => with_worker(&h).await,
        Err(e) => Err(e),
    };
    h.finish(result).await
}

async fn with_worker(h: &Harness) -> anyhow::Result<()> {
    // The flat-file quickstart data into SQLite, run by a real worker process.
    let dir = common::ledger_fixture(&["ledger-0001.dat"])?;
    let name = "ledger";
    let pipeline = syncmesh_crds::parse_manifest(&common::ledger_manifest("sqlite://out/sink.db"))?;
    h.pipelines()
        .create(&PostParams::default(), &pipeline)
        .await?;
    wait_pipeline(h, name, "Ready=False WorkerUnavailable", |sp| {
        condition(sp, "Ready").is_some_and(|c| c.reason == "WorkerUnavailable")
    })
    .await?;

    // The worker as a process beside the operator, against the same API server: the two
    // meet only in the pipeline's status.
    let kubeconfig = std::env::var("SYNCMESH_KUBECONFIG").context("SYNCMESH_KUBECONFIG")?;
    let log = dir.path().join("worker.log");
    let mut worker = Command::new(common::bin())
        .args(["worker", "--pipeline", &format!("{}/{name}", h.ns)])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--base-dir")
        .arg(dir.path())
        .args(["--status-interval", "1s"])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("spawning syncmesh worker")?;
    let running = wait_pipeline(h, name, "Ready=True from the worker's heartbeat", |sp| {
        condition(sp, "Ready").is_some_and(|c| c.status == "True" && c.reason == "WorkerRunning")
            && sp.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    let killed = worker.kill().and_then(|()| worker.wait());
    let sp = running.map_err(|e| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        anyhow!("{e:#}\n--- worker ---\n{text}")
    })?;
    killed?;
    // Heartbeats reconcile, but objects as the operator left them are not applied again.
    let (_, text) = http_get(h.operators[0].metrics, "/metrics").await?;
    let applies = |outcome: &str| {
        let series =
            format!("syncmesh_operator_applies_total{{kind=\"ConfigMap\",outcome=\"{outcome}\"}}");
        metric(&text, &series).unwrap_or(0.0)
    };
    assert_eq!(applies("applied"), 1.0, "{text}");
    assert!(applies("unchanged") >= 2.0, "{text}");
    let status = sp.status.clone().unwrap_or_default();
    assert!(status.heartbeat.is_some(), "{status:?}");
    assert_eq!(
        condition(&sp, "BreakerOpen").map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("False", "BreakersClosed"))
    );
    assert_eq!(
        condition(&sp, "Degraded").map(|c| c.status.as_str()),
        Some("False")
    );
    // Both writers own their part of status (1.20 records no subresource per entry).
    let managers: Vec<String> = sp
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    for m in ["syncmesh", "syncmesh-worker"] {
        assert!(managers.iter().any(|x| x == m), "{m} in {managers:?}");
    }

    // The worker is gone (SIGKILL: no last words): 5 s without a heartbeat and it is noticed.
    let sp = wait_pipeline(h, name, "Ready=False after the heartbeat stops", |sp| {
        condition(sp, "Ready").is_some_and(|c| c.status == "False")
    })
    .await?;
    let ready = condition(&sp, "Ready").cloned().unwrap_or_default();
    assert_eq!(ready.reason, "WorkerUnavailable", "{ready:?}");
    assert!(ready.message.contains("last worker heartbeat"), "{ready:?}");
    assert_eq!(
        sp.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    Ok(())
}

/// Every example pipeline in deploy/examples, applied as a user would: the operator either
/// creates its objects and reports the worker as not running yet, or says which field is wrong.
#[tokio::test]
async fn every_example_pipeline_is_reconciled_to_objects_or_a_clear_invalid_spec()
-> anyhow::Result<()> {
    let Some(mut h) = Harness::start("operator-examples").await? else {
        return Ok(()); // skipped: services::kube() said why
    };
    let result = match h.spawn_operator("syncmesh-operator") {
        Ok(_) => examples(&h).await,
        Err(e) => Err(e),
    };
    h.finish(result).await
}

async fn examples(h: &Harness) -> anyhow::Result<()> {
    let dir = common::repo_root().join("deploy/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut names = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let pipeline = syncmesh_crds::parse_manifest(&text)
            .with_context(|| format!("{} is not a valid manifest", file.display()))?;
        let name = pipeline.name_any();
        // The file as written, not its typed round trip (which would add every default).
        let raw: Value = serde_saphyr::from_str(&text)?;
        h.pipelines()
            .patch(
                &name,
                &PatchParams::apply("kubectl").force(),
                &Patch::Apply(&raw),
            )
            .await
            .with_context(|| format!("applying {}", file.display()))?;
        names.push((file.clone(), name));
    }
    assert!(names.len() >= 4, "examples: {names:?}");
    let mut with_objects = Vec::new();
    for (file, name) in &names {
        let sp = wait_pipeline(
            h,
            name,
            &format!("a decision on {}", file.display()),
            |sp| {
                condition(sp, "Ready")
                    .is_some_and(|c| c.reason == "WorkerUnavailable" || c.reason == "InvalidSpec")
            },
        )
        .await?;
        let ready = condition(&sp, "Ready").cloned().unwrap_or_default();
        if ready.reason == "InvalidSpec" {
            // Clearly degraded: the message names the field.
            assert!(
                ready.message.starts_with("spec."),
                "{}: {ready:?}",
                file.display()
            );
            assert_eq!(
                sp.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Failed")
            );
            eprintln!("{}: InvalidSpec: {}", file.display(), ready.message);
        } else {
            let objects = get_all(h, name).await?;
            let (cm, dep, svc) =
                objects.ok_or_else(|| anyhow!("{}: owned objects missing", file.display()))?;
            for check in [
                owned_by_and_applied(&cm, &sp),
                owned_by_and_applied(&dep, &sp),
                owned_by_and_applied(&svc, &sp),
            ] {
                check.with_context(|| file.display().to_string())?;
            }
            with_objects.push(name.clone());
        }
    }
    // Every example runs on Kubernetes as written; the Oracle and TiDB ones take their
    // passwords from Secrets by reference.
    for expected in [
        "quickstart",
        "ledger-kafka",
        "bank-from-oracle",
        "shop-from-tidb",
    ] {
        assert!(
            with_objects.iter().any(|n| n == expected),
            "{expected} got its objects: {with_objects:?}"
        );
    }
    assert_eq!(with_objects.len(), names.len(), "no example is refused");
    let dep = h.api::<Deployment>().get("bank-from-oracle-worker").await?;
    let env = dep
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].env.clone().unwrap_or_default())
        .unwrap_or_default();
    let secret = env
        .iter()
        .find(|e| e.name == "SYNCMESH_SECRET_ORACLE_CDC")
        .and_then(|e| e.value_from.as_ref()?.secret_key_ref.clone())
        .ok_or_else(|| anyhow!("no Oracle password reference in {env:?}"))?;
    assert_eq!(
        (secret.name.as_str(), secret.key.as_str()),
        ("oracle-cdc", "password")
    );
    Ok(())
}

/// An object of the same name that the pipeline does not own is never taken over: the apply
/// fails visibly and is retried until the way is clear.
#[tokio::test]
async fn a_foreign_object_in_the_way_is_reported_not_taken_over() -> anyhow::Result<()> {
    let Some(mut h) = Harness::start("operator-foreign").await? else {
        return Ok(()); // skipped: services::kube() said why
    };
    let result = match h.spawn_operator("syncmesh-operator") {
        Ok(_) => foreign(&h).await,
        Err(e) => Err(e),
    };
    h.finish(result).await
}

async fn foreign(h: &Harness) -> anyhow::Result<()> {
    let name = "taken";
    let theirs: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "taken-pipeline" },
        "data": { "owner": "someone else" }
    }))?;
    h.api::<ConfigMap>()
        .create(&PostParams::default(), &theirs)
        .await?;
    h.pipelines()
        .create(
            &PostParams::default(),
            &SyncPipeline::new(name, spec(pipeline_spec(5))?),
        )
        .await?;
    let sp = wait_pipeline(h, name, "Degraded=True ApplyFailed", |sp| {
        condition(sp, "Degraded").is_some_and(|c| c.status == "True" && c.reason == "ApplyFailed")
    })
    .await?;
    let degraded = condition(&sp, "Degraded").cloned().unwrap_or_default();
    assert!(
        degraded
            .message
            .contains("ConfigMap taken-pipeline exists and is not owned"),
        "{degraded:?}"
    );
    assert_eq!(
        sp.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Degraded")
    );
    let cm = h.api::<ConfigMap>().get("taken-pipeline").await?;
    assert_eq!(
        cm.data.unwrap_or_default().get("owner").map(String::as_str),
        Some("someone else"),
        "left as it was"
    );
    wait_event(h, name, "ApplyFailed").await?;

    // Out of the way: the retry creates the pipeline's own.
    h.api::<ConfigMap>()
        .delete("taken-pipeline", &DeleteParams::default())
        .await?;
    poll_until(WAIT, "the owned objects after the retry", || async {
        get_all(h, name).await
    })
    .await?;
    wait_pipeline(h, name, "ApplyFailed gone", |sp| {
        condition(sp, "Degraded").is_some_and(|c| c.status == "False")
    })
    .await?;
    Ok(())
}

/// A replica that finds its Lease taken stops reconciling and exits non-zero (to start over
/// as a candidate), rather than lead beside the new holder.
#[tokio::test]
async fn a_leader_whose_lease_is_taken_stops() -> anyhow::Result<()> {
    let Some(mut h) = Harness::start("operator-lost").await? else {
        return Ok(()); // skipped: services::kube() said why
    };
    let result = lost_lease(&mut h).await;
    h.finish(result).await
}

async fn lost_lease(h: &mut Harness) -> anyhow::Result<()> {
    let lease = "syncmesh-operator";
    let me = h.spawn_operator_with(lease, 60, 6)?;
    let hr = &*h;
    poll_until(WAIT, "the operator to lead", || async {
        Ok(holder(hr, lease).await?.filter(|id| *id == me))
    })
    .await?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let patch = json!({ "spec": { "holderIdentity": "intruder", "renewTime": now,
                                  "leaseDurationSeconds": 60 } });
    hr.api::<Lease>()
        .patch(lease, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let mut op = h.operators.remove(0);
    let exit = poll_until(WAIT, "the operator to exit", || {
        let exited = op.child.try_wait();
        async move { Ok(exited?) }
    })
    .await;
    h.operators.push(op);
    let exit = exit?;
    assert_eq!(exit.code(), Some(1), "{exit:?}");
    let log = std::fs::read_to_string(&h.operators[0].log)?;
    assert!(log.contains("lost the leader lease"), "{log}");
    assert_eq!(holder(h, lease).await?.as_deref(), Some("intruder"));
    Ok(())
}
