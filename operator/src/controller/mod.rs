//! `syncmesh operator`: the SyncPipeline controller.
//!
//! Per pipeline it server-side applies (field manager `syncmesh`) a ConfigMap with the rendered
//! manifest, the worker Deployment and a metrics Service, all owned by the pipeline; writes
//! `observedGeneration`, `phase` and `conditions` (the worker writes the rest of status); and
//! records an Event for every condition transition, apply and cleanup. A finalizer deletes the
//! owned objects on deletion, so that works without a garbage collector too. Only the holder of
//! the Lease reconciles.

pub mod conditions;
pub mod lease;
pub mod metrics;
pub mod render;

use chrono::Utc;
use conditions::{Desired, Observed, Transition};
use futures::{FutureExt, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use lease::{Elector, LeaseConfig};
use metrics::OperatorMetrics;
use render::{Rendered, WorkerDefaults};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};
use syncmesh_crds::{SyncPipeline, validate_spec};
use tracing::{info, warn};

/// The field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "syncmesh";
/// Removed only once the owned objects are gone.
pub const FINALIZER: &str = "syncmesh.io/cleanup";

/// What `syncmesh operator` was started with.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Watch only this namespace; `None` watches all.
    pub namespace: Option<String>,
    pub worker: WorkerDefaults,
    pub lease: LeaseConfig,
    /// A worker heartbeat older than this makes the pipeline not Ready.
    pub heartbeat_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Render(#[from] render::RenderError),
    #[error("{0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{kind} {name} exists and is not owned by this SyncPipeline; delete or rename it")]
    NotOwned { kind: &'static str, name: String },
    #[error("waiting for {0} to be deleted")]
    CleanupPending(String),
    #[error("lost the leader lease {0}")]
    LeadershipLost(String),
}

struct Context {
    client: Client,
    recorder: Recorder,
    config: OperatorConfig,
    metrics: Arc<OperatorMetrics>,
    /// Per owned object (`Kind/ns/name`): the resourceVersion our last apply left and the
    /// hash of what we applied. While both still hold, the object is as we left it and the
    /// apply is skipped: every worker heartbeat triggers a reconcile, and a read is much
    /// cheaper for the API server than a server-side apply.
    applied: std::sync::Mutex<HashMap<String, (String, u64)>>,
}

/// Waits for the Lease, then runs the controller until `shutdown` resolves (then releases the
/// Lease) or the Lease is lost (an error: the process should exit and start over as a
/// candidate, as client-go's elector does).
pub async fn run_controller(
    client: Client,
    config: OperatorConfig,
    metrics: Arc<OperatorMetrics>,
    mut shutdown: futures::channel::oneshot::Receiver<()>,
) -> Result<(), Error> {
    let mut elector = Elector::new(client.clone(), config.lease.clone());
    let lease_name = format!("{}/{}", config.lease.namespace, config.lease.name);
    loop {
        let round = elector.try_acquire_or_renew().await;
        metrics.set_ready(round.is_ok());
        match round {
            Ok(true) => break,
            Ok(false) => info!(lease = %lease_name, "another replica leads; waiting"),
            Err(e) => warn!(lease = %lease_name, error = %e, "leader election failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(config.lease.retry) => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
    info!(lease = %lease_name, identity = %config.lease.identity, "leading");
    metrics.leader.set(1);

    let (lost_tx, lost_rx) = futures::channel::oneshot::channel::<()>();
    let renew = tokio::spawn(async move {
        let mut renewed = Instant::now();
        loop {
            let retry = elector.config().retry;
            tokio::time::sleep(retry).await;
            // A hung request must not outlive the lease: one round takes at most `retry`.
            let round = tokio::time::timeout(retry, elector.try_acquire_or_renew())
                .await
                .unwrap_or_else(|_| Err(kube::Error::Service("lease renewal timed out".into())));
            match round {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => break,
                // Keep leading through short API outages, never past the lease's life.
                Err(e) if renewed.elapsed() < elector.config().duration * 2 / 3 => {
                    warn!(error = %e, "renewing the lease failed; retrying");
                }
                Err(e) => {
                    warn!(error = %e, "could not renew the lease in time");
                    break;
                }
            }
        }
        let _ = lost_tx.send(());
    });

    let ns_api = |client: &Client| match &config.namespace {
        Some(ns) => Api::<SyncPipeline>::namespaced(client.clone(), ns),
        None => Api::<SyncPipeline>::all(client.clone()),
    };
    let owned = watcher::Config::default().labels(render::MANAGED_BY);
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "syncmesh".into(),
                instance: Some(config.lease.identity.clone()),
            },
        ),
        config: config.clone(),
        metrics: metrics.clone(),
        applied: Default::default(),
    });
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lost_flag = lost.clone();
    Controller::new(ns_api(&client), watcher::Config::default())
        .owns(owned_api::<Deployment>(&client, &config), owned.clone())
        .owns(owned_api::<ConfigMap>(&client, &config), owned.clone())
        .owns(owned_api::<Service>(&client, &config), owned)
        .graceful_shutdown_on(shutdown.map(|_| ()))
        .graceful_shutdown_on(lost_rx.map(move |_| {
            lost_flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                // A deleted pipeline's last requeue: nothing to do.
                Err(kube::runtime::controller::Error::ObjectNotFound(o)) => {
                    tracing::debug!(object = %o, "gone before its requeue");
                }
                Err(e) => warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    metrics.leader.set(0);
    metrics.set_ready(false);

    if lost.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Error::LeadershipLost(lease_name));
    }
    renew.abort();
    if let Err(e) = Elector::new(client, config.lease.clone()).release().await {
        warn!(lease = %lease_name, error = %e, "could not release the lease; it expires by itself");
    }
    info!(lease = %lease_name, "released the lease");
    Ok(())
}

fn owned_api<K>(client: &Client, config: &OperatorConfig) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The reconciler: the finalizer around apply (desired objects and status) and cleanup.
async fn reconcile(sp: Arc<SyncPipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(sp, &ctx).await;
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics.reconciles.with_label_values(&[label]).inc();
    ctx.metrics
        .reconcile_seconds
        .with_label_values(&[label])
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(sp: Arc<SyncPipeline>, ctx: &Context) -> Result<Action, Error> {
    let ns = sp
        .namespace()
        .ok_or(render::RenderError::Missing("namespace"))?;
    let api: Api<SyncPipeline> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, sp, |event| async {
        match event {
            Finalized::Apply(sp) => apply(&sp, ctx, &ns).await,
            Finalized::Cleanup(sp) => cleanup(&sp, ctx, &ns).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(sp: Arc<SyncPipeline>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(pipeline = %sp.name_any(), namespace = ?sp.namespace(), %error, "will retry in 5s");
    Action::requeue(Duration::from_secs(5))
}

async fn apply(sp: &SyncPipeline, ctx: &Context, ns: &str) -> Result<Action, Error> {
    let mut issues = validate_spec(&sp.spec);
    issues.extend(render::operator_issues(sp));

    // An invalid spec gets no objects: whatever ran before keeps running, and the worker
    // refuses the new generation itself.
    let mut apply_error = None;
    let mut deployment = None;
    if issues.is_empty() {
        match apply_owned(sp, ctx, ns).await {
            Ok(d) => deployment = Some(d),
            Err(e) => apply_error = Some(e),
        }
    }
    let status = sp.status.clone().unwrap_or_default();
    let now = Utc::now();
    let error_text = apply_error.as_ref().map(ToString::to_string);
    let desired = conditions::derive(&Observed {
        issues: &issues,
        apply_error: error_text.as_deref(),
        deployment: deployment.as_ref(),
        status: &status,
        now,
        heartbeat_timeout: ctx.config.heartbeat_timeout,
    });
    let ready = desired
        .iter()
        .any(|d| d.type_ == conditions::READY && d.status);
    write_status(sp, ctx, ns, desired).await?;
    if let Some(e) = apply_error {
        return Err(e);
    }
    // Staleness of the heartbeat is a matter of time, not of a watch event: look again once
    // it could have expired.
    Ok(Action::requeue(if ready {
        ctx.config.heartbeat_timeout + Duration::from_secs(1)
    } else {
        Duration::from_secs(300)
    }))
}

/// Applies the ConfigMap, Service and Deployment; returns the Deployment as applied.
async fn apply_owned(sp: &SyncPipeline, ctx: &Context, ns: &str) -> Result<Deployment, Error> {
    let Rendered {
        config_map,
        deployment,
        service,
        redacted,
        hash,
    } = render::render(sp, &ctx.config.worker)?;
    let mut changed = Vec::new();
    apply_one(sp, ctx, ns, "ConfigMap", &config_map, &mut changed).await?;
    apply_one(sp, ctx, ns, "Service", &service, &mut changed).await?;
    let applied = apply_one(sp, ctx, ns, "Deployment", &deployment, &mut changed).await?;
    if !changed.is_empty() {
        info!(pipeline = %sp.name_any(), namespace = ns, objects = ?changed, "applied");
        publish(
            ctx,
            sp,
            EventType::Normal,
            "Applied",
            "Apply",
            format!("{} (pipeline hash {hash})", changed.join(", ")),
        )
        .await;
        if !redacted.is_empty() {
            publish(
                ctx,
                sp,
                EventType::Warning,
                "SecretInSpec",
                "Apply",
                format!(
                    "redacted from the ConfigMap: {}; give credentials by Secret reference (spec.worker.env)",
                    redacted.join(", ")
                ),
            )
            .await;
        }
    }
    Ok(applied)
}

/// Server-side applies one owned object, refusing to take over one the pipeline does not own.
/// Notes `"<Kind> <name> created|updated"` in `changed` when the object changed.
async fn apply_one<K>(
    sp: &SyncPipeline,
    ctx: &Context,
    ns: &str,
    kind: &'static str,
    object: &K,
    changed: &mut Vec<String>,
) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let name = object.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let before = api.get_opt(&name).await?;
    if let Some(existing) = &before
        && !owned_by(existing, sp)
    {
        return Err(Error::NotOwned { kind, name });
    }
    let key = format!("{kind}/{ns}/{name}");
    let desired = serde_json::to_vec(object)
        .map(|bytes| xxhash_rust::xxh3::xxh3_64(&bytes))
        .unwrap_or_default();
    if let Some(existing) = &before
        && let Some(rv) = existing.resource_version()
        && last_applied(ctx, &key) == Some((rv, desired))
    {
        ctx.metrics
            .applies
            .with_label_values(&[kind, "unchanged"])
            .inc();
        return Ok(existing.clone());
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let after = api.patch(&name, &params, &Patch::Apply(object)).await?;
    ctx.metrics
        .applies
        .with_label_values(&[kind, "applied"])
        .inc();
    if let (Ok(mut applied), Some(rv)) = (ctx.applied.lock(), after.resource_version()) {
        applied.insert(key, (rv, desired));
    }
    match before.and_then(|b| b.resource_version()) {
        None => changed.push(format!("{kind} {name} created")),
        Some(rv) if Some(&rv) != after.resource_version().as_ref() => {
            changed.push(format!("{kind} {name} updated"));
        }
        Some(_) => {}
    }
    Ok(after)
}

fn last_applied(ctx: &Context, key: &str) -> Option<(String, u64)> {
    ctx.applied.lock().ok()?.get(key).cloned()
}

fn owned_by<K: Resource>(object: &K, sp: &SyncPipeline) -> bool {
    let uid = sp.uid();
    object
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == uid.as_ref())
}

/// Writes `observedGeneration`, `phase` and `conditions` when they changed, and an Event per
/// condition transition.
async fn write_status(
    sp: &SyncPipeline,
    ctx: &Context,
    ns: &str,
    desired: Vec<Desired>,
) -> Result<(), Error> {
    let old = sp.status.clone().unwrap_or_default();
    let phase = conditions::phase(&desired);
    let generation = sp.metadata.generation;
    let (merged, transitions) = conditions::merge(&old.conditions, desired, Utc::now(), generation);
    if old.observed_generation == generation
        && old.phase.as_deref() == Some(phase)
        && old.conditions == merged
    {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": SyncPipeline::api_version(&()),
        "kind": SyncPipeline::kind(&()),
        "status": {
            "observedGeneration": generation,
            "phase": phase,
            "conditions": merged,
        }
    });
    let api: Api<SyncPipeline> = Api::namespaced(ctx.client.clone(), ns);
    api.patch_status(
        &sp.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    for t in transitions {
        transition_event(ctx, sp, &t).await;
    }
    Ok(())
}

async fn transition_event(ctx: &Context, sp: &SyncPipeline, t: &Transition) {
    let to = if t.to.status { "True" } else { "False" };
    let from = t
        .from
        .as_ref()
        .map_or("(none)".to_string(), |(s, r)| format!("{s} ({r})"));
    let kind = if t.to.is_warning() {
        EventType::Warning
    } else {
        EventType::Normal
    };
    let note = format!(
        "{} {from} -> {to} ({}): {}",
        t.to.type_, t.to.reason, t.to.message
    );
    publish(ctx, sp, kind, t.to.reason, t.to.type_, note).await;
}

/// Records an Event about the pipeline; failures are logged, never fatal.
async fn publish(
    ctx: &Context,
    sp: &SyncPipeline,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    // The API's limit on a note is 1 kB.
    let mut note = note;
    if note.len() > 1000 {
        let mut cut = 997;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &sp.object_ref(&())).await {
        warn!(pipeline = %sp.name_any(), error = %e, "could not record an event");
    }
}

/// Deletes the owned objects and waits until they are gone, so deletion does not depend on
/// the garbage collector.
async fn cleanup(sp: &SyncPipeline, ctx: &Context, ns: &str) -> Result<Action, Error> {
    let name = sp.name_any();
    let mut pending = Vec::new();
    let deployment = render::deployment_name(&name);
    let service = render::service_name(&name);
    let config_map = render::config_map_name(&name);
    pending.extend(delete_owned::<Deployment>(sp, ctx, ns, "Deployment", &deployment).await?);
    pending.extend(delete_owned::<Service>(sp, ctx, ns, "Service", &service).await?);
    pending.extend(delete_owned::<ConfigMap>(sp, ctx, ns, "ConfigMap", &config_map).await?);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pending.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut still = Vec::new();
        for (kind, object) in pending {
            let gone = match kind {
                "Deployment" => gone::<Deployment>(ctx, ns, &object).await?,
                "Service" => gone::<Service>(ctx, ns, &object).await?,
                _ => gone::<ConfigMap>(ctx, ns, &object).await?,
            };
            if !gone {
                still.push((kind, object));
            }
        }
        pending = still;
    }
    if !pending.is_empty() {
        let names: Vec<String> = pending.iter().map(|(k, n)| format!("{k} {n}")).collect();
        return Err(Error::CleanupPending(names.join(", ")));
    }
    if let Ok(mut applied) = ctx.applied.lock() {
        applied.retain(|key, _| {
            ![&deployment, &service, &config_map]
                .iter()
                .any(|object| key.ends_with(&format!("/{ns}/{object}")))
        });
    }
    info!(pipeline = %name, namespace = ns, "cleaned up");
    publish(
        ctx,
        sp,
        EventType::Normal,
        "CleanedUp",
        "Cleanup",
        format!("deleted Deployment {deployment}, Service {service}, ConfigMap {config_map}"),
    )
    .await;
    Ok(Action::await_change())
}

/// Deletes the object if this pipeline owns it; returns it when it has to be waited for.
async fn delete_owned<K>(
    sp: &SyncPipeline,
    ctx: &Context,
    ns: &str,
    kind: &'static str,
    name: &str,
) -> Result<Option<(&'static str, String)>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    match api.get_opt(name).await? {
        Some(object) if owned_by(&object, sp) => {}
        _ => return Ok(None),
    }
    // Background: the Deployment goes at once; its ReplicaSets follow by garbage collection.
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(Some((kind, name.to_string()))),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn gone<K>(ctx: &Context, ns: &str, name: &str) -> Result<bool, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api.get_opt(name).await?.is_none())
}
