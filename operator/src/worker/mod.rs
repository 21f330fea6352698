//! `syncmesh worker`: one SyncPipeline's data plane inside the cluster. Reads its pipeline
//! from the API server, runs it as `syncmesh run --follow` does, writes the worker's status
//! fields back, and drains on SIGTERM or when the spec changes (the Deployment restarts it
//! with the new spec).

mod status;
mod writer;

use crate::Failure;
use crate::commands::run::{build, create_state_dir, options, run_failure, wait_for_signal};
use anyhow::{Context, anyhow};
use futures::StreamExt;
use kube::Api;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use syncmesh_connectors::checker::CheckTrigger;
use syncmesh_connectors::checkpoint::FileCheckpointStore;
use syncmesh_connectors::decider::Routes;
use syncmesh_connectors::metrics::{Metrics, serve_with_readiness};
use syncmesh_connectors::runtime::{RunSummary, StopSignal};
use syncmesh_crds::{FieldIssue, SyncPipeline, validate_spec};
use tokio::sync::watch;
use tokio::time::Instant;
use writer::{Sources, StatusWriter};

/// Changing this annotation's value on the SyncPipeline asks the worker to run the
/// consistency checks of `spec.check` now, e.g.
/// `kubectl annotate sp ledger syncmesh.io/check-requested="$(date +%s)" --overwrite`.
pub const CHECK_ANNOTATION: &str = "syncmesh.io/check-requested";

/// How a worker is hosted (from the command line).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub namespace: String,
    pub name: String,
    pub metrics_addr: SocketAddr,
    pub state_dir: PathBuf,
    pub base_dir: PathBuf,
    pub poll: Duration,
    pub status_interval: Duration,
    pub drain_timeout: Duration,
}

/// Why the pipeline was asked to stop.
#[derive(Debug, Clone)]
enum StopReason {
    Signal,
    SpecChanged { from: Option<i64>, to: Option<i64> },
    Deleted,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Signal => write!(f, "signal"),
            StopReason::SpecChanged { from, to } => write!(
                f,
                "spec changed (generation {} -> {})",
                from.unwrap_or_default(),
                to.unwrap_or_default()
            ),
            StopReason::Deleted => write!(f, "pipeline deleted"),
        }
    }
}

pub async fn run(cfg: WorkerConfig) -> Result<(), Failure> {
    let id = format!("{}/{}", cfg.namespace, cfg.name);
    let client = kube::Client::try_default()
        .await
        .context(
            "cannot configure the Kubernetes client (in-cluster service account or KUBECONFIG)",
        )
        .map_err(Failure::failed)?;
    let api: Api<SyncPipeline> = Api::namespaced(client, &cfg.namespace);
    let manifest = fetch(&api, &cfg.name, &id).await?;
    let generation = manifest.metadata.generation;

    create_state_dir(&cfg.state_dir)?;
    let metrics = Arc::new(Metrics::new());
    let (ready_tx, ready_rx) = watch::channel(false);
    serve_with_readiness(cfg.metrics_addr, metrics.clone(), Some(ready_rx))
        .await
        .with_context(|| format!("cannot serve metrics on {}", cfg.metrics_addr))
        .map_err(Failure::bad_input)?;
    tracing::info!(addr = %cfg.metrics_addr, "serving /metrics, /healthz and /readyz");
    let pipeline = build(
        &manifest,
        &options(cfg.base_dir.clone(), cfg.state_dir.clone(), Some(cfg.poll)),
        metrics.clone(),
        &format!("invalid SyncPipeline {id}"),
    )
    .await?;

    let (stop_tx, stop) = StopSignal::new();
    let reason: Arc<OnceLock<StopReason>> = Arc::new(OnceLock::new());
    tokio::spawn(stop_on_signal(stop_tx.clone(), reason.clone()));
    let watch_task = tokio::spawn(watch_spec(
        api.clone(),
        Watched {
            name: cfg.name.clone(),
            generation,
            check_request: check_request(&manifest),
        },
        pipeline.check_trigger(),
        pipeline.routes(),
        stop_tx.clone(),
        reason.clone(),
    ));

    let sources = Sources {
        pipeline: cfg.name.clone(),
        source_names: manifest
            .spec
            .sources
            .iter()
            .map(|s| s.name.clone())
            .collect(),
        metrics,
        counters: pipeline.counters(),
        checkpoint: FileCheckpointStore::new(cfg.state_dir.join("checkpoint"), cfg.name.clone()),
        breakers: pipeline.breakers(),
        outcomes: pipeline.check_outcomes(),
    };
    let (done_tx, done_rx) = watch::channel(false);
    let writer = tokio::spawn(
        StatusWriter::new(api, cfg.name.clone(), cfg.status_interval).run(sources, done_rx),
    );
    let mut run = tokio::spawn(pipeline.run(stop_tx, stop.clone()));
    let _ = ready_tx.send(true);
    tracing::info!(pipeline = %id, generation = generation.unwrap_or_default(), "worker running");

    let mut stopping = stop;
    let (joined, deadline) = tokio::select! {
        r = &mut run => (r, None),
        _ = stopping.stopped() => {
            let _ = ready_tx.send(false);
            let why = reason.get().map_or_else(|| "the pipeline failed".to_string(), ToString::to_string);
            tracing::info!(reason = %why, timeout = ?cfg.drain_timeout,
                "draining: stopping sources, finishing the open batches, saving positions");
            let deadline = Instant::now() + cfg.drain_timeout;
            match tokio::time::timeout_at(deadline, &mut run).await {
                Ok(r) => (r, Some(deadline)),
                Err(_) => {
                    // Whatever was not acknowledged is read again on restart: nothing is lost,
                    // but the pod did not stop cleanly and the platform should know.
                    tracing::error!(timeout = ?cfg.drain_timeout,
                        "drain did not finish within --drain-timeout; exiting without a final checkpoint (unacknowledged events will be read again)");
                    std::process::exit(i32::from(crate::EXIT_FAILED));
                }
            }
        }
    };
    let _ = ready_tx.send(false);
    watch_task.abort();

    // The final status: what was read and the positions just persisted.
    let _ = done_tx.send(true);
    let final_wait = deadline
        .map(|d| d.saturating_duration_since(Instant::now()))
        .unwrap_or(cfg.drain_timeout)
        .max(Duration::from_secs(2));
    match tokio::time::timeout(final_wait, writer).await {
        Ok(Ok(true)) => tracing::info!("final status written"),
        Ok(_) => tracing::warn!("the final status was not written"),
        Err(_) => tracing::warn!("gave up on the final status write at the drain deadline"),
    }

    let summary = joined
        .map_err(|e| Failure::failed(anyhow!("the pipeline task ended abnormally: {e}")))?
        .map_err(run_failure)?;
    log_end(reason.get(), &summary);
    Ok(())
}

/// The SyncPipeline, checked as `syncmesh validate` checks a manifest.
async fn fetch(api: &Api<SyncPipeline>, name: &str, id: &str) -> Result<SyncPipeline, Failure> {
    let manifest = api
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read SyncPipeline {id}"))
        .map_err(Failure::failed)?
        .ok_or_else(|| Failure::bad_input(anyhow!("SyncPipeline {id} not found")))?;
    let issues = validate_spec(&manifest.spec);
    if !issues.is_empty() {
        return Err(Failure::bad_input(anyhow!(
            "SyncPipeline {id} is invalid: {}",
            FieldIssue::join(&issues)
        )));
    }
    Ok(manifest)
}

/// The first SIGTERM/SIGINT starts the drain; a second one exits at once.
async fn stop_on_signal(stop_tx: watch::Sender<bool>, reason: Arc<OnceLock<StopReason>>) {
    wait_for_signal().await;
    let _ = reason.set(StopReason::Signal);
    let _ = stop_tx.send(true);
    wait_for_signal().await;
    tracing::error!("second signal: exiting without draining");
    std::process::exit(130);
}

fn log_end(reason: Option<&StopReason>, summary: &RunSummary) {
    let acknowledged: u64 = summary.acknowledged.values().sum();
    match reason {
        Some(StopReason::SpecChanged { .. }) => tracing::info!(
            events_read = summary.events_read,
            acknowledged,
            "drained after a spec change; exiting so the new spec is run"
        ),
        Some(r) => tracing::info!(
            reason = %r, events_read = summary.events_read, acknowledged, "drained; exiting"
        ),
        None => tracing::info!(
            events_read = summary.events_read,
            acknowledged,
            "every source has ended; exiting"
        ),
    }
}

/// What the worker started from.
struct Watched {
    name: String,
    generation: Option<i64>,
    /// The value of [`CHECK_ANNOTATION`] at start (a request already served or ignored).
    check_request: Option<String>,
}

fn check_request(p: &SyncPipeline) -> Option<String> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CHECK_ANNOTATION).cloned())
}

/// Watches the pipeline: a new generation that changes only the routes is applied in place; any
/// other spec change or its deletion stops the run (the Deployment starts it again with the new
/// spec); a new value of [`CHECK_ANNOTATION`] runs the checks.
async fn watch_spec(
    api: Api<SyncPipeline>,
    mut seen: Watched,
    checks: Option<CheckTrigger>,
    routes: Arc<Routes>,
    stop_tx: watch::Sender<bool>,
    reason: Arc<OnceLock<StopReason>>,
) {
    let mut generation = seen.generation;
    let mut backoff = Duration::from_millis(500);
    let stream = kube::runtime::watcher::watch_object(api, &seen.name);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Some(p)) if p.metadata.generation == generation => {
                backoff = Duration::from_millis(500);
                let request = check_request(&p);
                if request.is_some() && request != seen.check_request {
                    match &checks {
                        Some(t) if t.request() => {
                            tracing::info!(annotation = CHECK_ANNOTATION, value = ?request, "consistency checks requested");
                        }
                        Some(_) => tracing::warn!(
                            "consistency checks requested, but the checker has stopped"
                        ),
                        None => tracing::warn!(
                            "consistency checks requested, but the pipeline has no spec.check"
                        ),
                    }
                }
                seen.check_request = request;
            }
            // Routes are all that changed: swapped in place, the run goes on.
            Ok(Some(p)) if routes.reload(&p.spec).is_ok() => {
                tracing::info!(
                    from = generation.unwrap_or_default(),
                    to = p.metadata.generation.unwrap_or_default(),
                    "the pipeline's routes changed; applied without a restart"
                );
                generation = p.metadata.generation;
            }
            Ok(Some(p)) => {
                let r = StopReason::SpecChanged {
                    from: generation,
                    to: p.metadata.generation,
                };
                tracing::info!(reason = %r, "the pipeline's spec changed; draining to restart with it");
                let _ = reason.set(r);
                let _ = stop_tx.send(true);
                return;
            }
            Ok(None) => {
                tracing::info!("the pipeline was deleted; draining");
                let _ = reason.set(StopReason::Deleted);
                let _ = stop_tx.send(true);
                return;
            }
            Err(e) => {
                // The watcher resumes on the next poll; pause so an unreachable API server
                // is not hammered.
                tracing::warn!(error = %e, retry_in = ?backoff, "watching the pipeline failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
