//! `syncmesh run PIPELINE.yaml`: one pipeline in-process. A finite source ends the run once
//! every path has acknowledged everything; `--follow` keeps polling until SIGINT/SIGTERM,
//! which drains (flush, acknowledge, checkpoint) before exiting. SIGHUP applies the
//! manifest's routes again without a restart.

use super::validate::{base_dir, load};
use crate::Failure;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use syncmesh_connectors::decider::Routes;
use syncmesh_connectors::metrics::{Metrics, serve};
use syncmesh_connectors::pipeline::{BuildError, Pipeline, PipelineOptions};
use syncmesh_connectors::runtime::{RunSummary, RuntimeError, StopSignal};
use syncmesh_crds::SyncPipeline;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The SyncPipeline manifest (the same file you would `kubectl apply`).
    pub pipeline: PathBuf,
    /// Keep polling the sources for new data until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// Polling interval with --follow, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
    /// Where the checkpoint (and default dead-letter file) live.
    /// Default: `.syncmesh/<pipeline name>` next to the manifest.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// No progress display, even on a terminal.
    #[arg(long)]
    pub quiet: bool,
}

pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let manifest = load(&args.pipeline)?;
    let name = manifest.metadata.name.clone().unwrap_or_default();
    let base = base_dir(&args.pipeline);
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| base.join(".syncmesh").join(&name));
    create_state_dir(&state_dir)?;
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = args.metrics_addr {
        serve(addr, metrics.clone())
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))
            .map_err(Failure::bad_input)?;
        tracing::info!(%addr, "serving metrics at /metrics");
    }
    let options = options(
        base,
        state_dir,
        args.follow.then(|| Duration::from_millis(args.poll_ms)),
    );
    let pipeline = build(
        &manifest,
        &options,
        metrics,
        &format!("invalid manifest {}", args.pipeline.display()),
    )
    .await?;

    #[cfg(unix)]
    reload_routes_on_hangup(args.pipeline.clone(), pipeline.routes());

    let (stop_tx, stop) = StopSignal::new();
    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            "stopping: draining paths and saving the checkpoint (signal again to abort)"
        );
        let _ = signal_tx.send(true);
        wait_for_signal().await;
        std::process::exit(130);
    });

    let counters = pipeline.counters();
    let progress = (!args.quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        let c = counters.clone();
        let b = bar.clone();
        tokio::spawn(async move {
            loop {
                let read = c.events_read.load(Ordering::Relaxed);
                let acked: u64 = c
                    .acknowledged
                    .iter()
                    .map(|a| a.load(Ordering::Relaxed))
                    .sum();
                b.set_message(format!("{read} events read, {acked} acknowledged"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        bar
    });

    let result = pipeline.run(stop_tx, stop).await;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let summary = result.map_err(run_failure)?;
    print_summary(&name, &summary);
    Ok(())
}

/// Creates the state directory (checkpoint, dead letters); failing is bad input.
pub(crate) fn create_state_dir(state_dir: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))
        .map_err(Failure::bad_input)
}

/// How `syncmesh run` and `syncmesh worker` host a pipeline.
pub(crate) fn options(
    base_dir: PathBuf,
    state_dir: PathBuf,
    follow: Option<Duration>,
) -> PipelineOptions {
    PipelineOptions {
        base_dir,
        state_dir,
        follow,
        channel_capacity: 16,
        checkpoint_interval: Duration::from_millis(500),
    }
}

/// Builds the pipeline; `invalid` prefixes errors in the manifest (bad input).
pub(crate) async fn build(
    manifest: &SyncPipeline,
    options: &PipelineOptions,
    metrics: Arc<Metrics>,
    invalid: &str,
) -> Result<Pipeline, Failure> {
    Pipeline::build(manifest, options, metrics)
        .await
        .map_err(|e| match e {
            // A database that cannot be reached is a failure of the run, not of the input.
            BuildError::Sink(_) => Failure::failed(anyhow::Error::new(e)),
            other => Failure::bad_input(anyhow::Error::new(other).context(invalid.to_string())),
        })
}

/// The exit code of a run that ended in an error.
pub(crate) fn run_failure(e: RuntimeError) -> Failure {
    match e {
        // An unreadable or corrupt checkpoint is bad input: the user must decide what to do.
        RuntimeError::Checkpoint(_) => Failure::bad_input(e),
        other => Failure::failed(other),
    }
}

pub(crate) fn print_summary(name: &str, s: &RunSummary) {
    let secs = s.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        s.events_read as f64 / secs
    } else {
        0.0
    };
    println!(
        "pipeline {name}: {} events read in {secs:.2}s ({rate:.0} events/s)",
        s.events_read
    );
    for (path, n) in &s.acknowledged {
        println!("  {path:<9} {n} events acknowledged");
    }
    if s.dead_letters > 0 {
        println!("  dead letters: {}", s.dead_letters);
    }
    for (source, p) in &s.progress {
        match &p.position {
            Some(pos) => println!("  source {source}: at {pos}"),
            None => println!("  source {source}: nothing read yet"),
        }
    }
}

/// On SIGHUP, reads the manifest again and applies its routes: `spec.routes` and
/// `spec.defaultRoute` change without a restart; any other change is refused (logged) and the
/// running routes stay.
#[cfg(unix)]
fn reload_routes_on_hangup(path: PathBuf, routes: Arc<Routes>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler: routes cannot be reloaded");
            return;
        }
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let manifest = match load(&path) {
                Ok(m) => m,
                Err(e) => {
                    let error = format!("{:#}", e.error);
                    tracing::error!(%error, "SIGHUP: routes not reloaded, the running ones stay");
                    continue;
                }
            };
            match routes.reload(&manifest.spec) {
                Ok(true) => tracing::info!(manifest = %path.display(), "SIGHUP: routes reloaded"),
                Ok(false) => tracing::info!(manifest = %path.display(), "SIGHUP: routes unchanged"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: routes not reloaded, the running ones stay")
                }
            }
        }
    });
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
