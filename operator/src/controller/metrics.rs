//! The operator's own metrics and probes: `GET /metrics`, `/healthz` (the process serves) and
//! `/readyz` (the API server answered the leader election; followers are ready too, they
//! only wait).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct OperatorMetrics {
    registry: Registry,
    /// Reconciles by result (`ok`, `error`).
    pub reconciles: IntCounterVec,
    pub reconcile_seconds: HistogramVec,
    /// Owned objects by kind and outcome: `applied` (server-side apply sent) or `unchanged`
    /// (as the last apply left it, skipped).
    pub applies: IntCounterVec,
    /// 1 while this replica holds the Lease.
    pub leader: IntGauge,
    ready: AtomicBool,
}

impl OperatorMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "syncmesh_operator_reconciles_total",
                "SyncPipeline reconciles by result",
            ),
            &["result"],
        )?;
        let reconcile_seconds = HistogramVec::new(
            HistogramOpts::new(
                "syncmesh_operator_reconcile_duration_seconds",
                "Time one SyncPipeline reconcile took",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["result"],
        )?;
        let applies = IntCounterVec::new(
            Opts::new(
                "syncmesh_operator_applies_total",
                "Owned objects applied, or skipped as unchanged since the last apply",
            ),
            &["kind", "outcome"],
        )?;
        let leader = IntGauge::new(
            "syncmesh_operator_leader",
            "1 while this replica holds the leader Lease",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_seconds.clone()))?;
        registry.register(Box::new(applies.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            reconcile_seconds,
            applies,
            leader,
            ready: AtomicBool::new(false),
        })
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding well-formed families into a Vec does not fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Serves the endpoints on `addr` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<OperatorMetrics>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use axum::{Router, http::StatusCode, routing::get};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let for_metrics = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = for_metrics.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = metrics.ready.load(Ordering::SeqCst);
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        );
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    }))
}
