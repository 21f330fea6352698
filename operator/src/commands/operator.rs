//! `syncmesh operator`: run the SyncPipeline controller (see docs/operator.md).

use crate::Failure;
use crate::controller::lease::LeaseConfig;
use crate::controller::metrics::{OperatorMetrics, serve};
use crate::controller::render::WorkerDefaults;
use crate::controller::{OperatorConfig, run_controller};
use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct OperatorArgs {
    /// Reconcile SyncPipelines in this namespace only (default: all namespaces).
    #[arg(long, env = "SYNCMESH_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// The worker image for pipelines that set no `spec.worker.image`.
    #[arg(long, env = "SYNCMESH_WORKER_IMAGE", default_value = concat!("syncmesh/syncmesh:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// The ServiceAccount of workers whose pipeline sets no `spec.worker.serviceAccountName`.
    #[arg(long, default_value = "syncmesh-worker")]
    pub worker_service_account: String,
    /// The Lease that elects the one replica that reconciles.
    #[arg(long, default_value = "syncmesh-operator")]
    pub lease_name: String,
    /// The Lease's namespace (default: `--namespace`, else `$POD_NAMESPACE`, else `default`).
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// Seconds a Lease lives without renewal; another replica takes over after that.
    #[arg(long, default_value_t = 15)]
    pub lease_duration: u64,
    /// This replica's identity in the Lease (default: `$POD_NAME`, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds after the worker's last heartbeat before the pipeline stops being Ready.
    #[arg(long, default_value_t = 60)]
    pub heartbeat_timeout: u64,
    /// Serve `/metrics`, `/healthz` and `/readyz` here, e.g. `0.0.0.0:8080` (default: not served).
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
}

pub async fn run(args: OperatorArgs) -> Result<(), Failure> {
    if args.lease_duration < 3 {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--lease-duration must be at least 3 seconds"
        )));
    }
    let lease_namespace = args
        .lease_namespace
        .or_else(|| args.namespace.clone())
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".to_string());
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "syncmesh".to_string());
        format!("{host}-{}", std::process::id())
    });
    let duration = Duration::from_secs(args.lease_duration);
    let config = OperatorConfig {
        namespace: args.namespace,
        worker: WorkerDefaults {
            image: args.image,
            service_account: args.worker_service_account,
        },
        lease: LeaseConfig {
            namespace: lease_namespace,
            name: args.lease_name,
            identity,
            duration,
            retry: duration / 3,
        },
        heartbeat_timeout: Duration::from_secs(args.heartbeat_timeout),
    };
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")
        .map_err(Failure::failed)?;

    let metrics = Arc::new(
        OperatorMetrics::new()
            .context("registering the operator's metrics")
            .map_err(Failure::failed)?,
    );
    if let Some(addr) = args.metrics_addr {
        serve(addr, metrics.clone())
            .await
            .with_context(|| format!("serving metrics on {addr}"))
            .map_err(Failure::failed)?;
    }

    let (stop_tx, stop_rx) = futures::channel::oneshot::channel();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(());
    });
    run_controller(client, config, metrics, stop_rx)
        .await
        .context("the operator stopped")
        .map_err(Failure::failed)
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
