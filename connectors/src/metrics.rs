//! Prometheus metrics. Names follow the Prometheus conventions: `syncmesh_` prefix, `_total`
//! for counters, base units (seconds, bytes). Every series carries the pipeline name.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::net::SocketAddr;

pub struct Metrics {
    pub registry: Registry,
    pub events_read: IntCounterVec,
    pub decisions: IntCounterVec,
    /// Events the real-time path's fallback sent to the batch path while it was degraded.
    pub route_fallbacks: IntCounterVec,
    /// Attempts to change the routes of a running pipeline, by outcome.
    pub route_reloads: IntCounterVec,
    pub path_events: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub in_flight: IntGaugeVec,
    pub checkpoint_saves: IntCounterVec,
    pub snapshots: IntCounterVec,
    pub snapshot_rows: IntCounterVec,
    pub snapshot_bytes: IntCounterVec,
    pub snapshot_seconds: HistogramVec,
    pub sink_rows: IntCounterVec,
    pub sink_write_seconds: HistogramVec,
    pub breaker_state: IntGaugeVec,
    pub breaker_transitions: IntCounterVec,
    pub sink_diverted_rows: IntCounterVec,
    pub sink_replayed_events: IntCounterVec,
    /// Source commit time to acknowledgement by a path, per path.
    pub end_to_end_seconds: HistogramVec,
    /// Source commit time to acknowledgement of the newest committed event, per source.
    pub source_lag_seconds: GaugeVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let buckets = vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    histogram_with(r, name, help, labels, buckets)
}

fn histogram_with(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric definition");
    r.register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "syncmesh_events_in_flight",
                "Events dispatched to paths and not yet acknowledged by all of them",
            ),
            &["pipeline"],
        )
        .expect("valid metric definition");
        r.register(Box::new(in_flight.clone()))
            .expect("metric registered once");
        let breaker_state = IntGaugeVec::new(
            Opts::new(
                "syncmesh_sink_breaker_state",
                "Circuit breaker of a sink table: 0 closed, 1 open, 2 half-open, 3 shadow promoted",
            ),
            &["pipeline", "table"],
        )
        .expect("valid metric definition");
        r.register(Box::new(breaker_state.clone()))
            .expect("metric registered once");
        Self {
            events_read: counter(
                &r,
                "syncmesh_source_events_total",
                "Change events read from a source",
                &["pipeline", "source"],
            ),
            decisions: counter(
                &r,
                "syncmesh_route_decisions_total",
                "Routing decisions, per rule (`default` for the default route)",
                &["pipeline", "route"],
            ),
            path_events: counter(
                &r,
                "syncmesh_path_acknowledged_events_total",
                "Events a path has made durable and acknowledged",
                &["pipeline", "path"],
            ),
            dead_letters: counter(
                &r,
                "syncmesh_dead_letters_total",
                "Records sent to the dead-letter destination",
                &["pipeline", "source"],
            ),
            in_flight,
            checkpoint_saves: counter(
                &r,
                "syncmesh_checkpoint_saves_total",
                "Checkpoints persisted",
                &["pipeline"],
            ),
            snapshots: counter(
                &r,
                "syncmesh_snapshots_committed_total",
                "Snapshots committed (manifest written) to object storage",
                &["pipeline", "table"],
            ),
            snapshot_rows: counter(
                &r,
                "syncmesh_snapshot_rows_total",
                "Rows written into committed snapshots",
                &["pipeline", "table"],
            ),
            snapshot_bytes: counter(
                &r,
                "syncmesh_snapshot_bytes_total",
                "Bytes of data files in committed snapshots",
                &["pipeline", "table"],
            ),
            snapshot_seconds: histogram(
                &r,
                "syncmesh_snapshot_commit_duration_seconds",
                "Time to write a snapshot's files and manifest",
                &["pipeline"],
            ),
            sink_rows: counter(
                &r,
                "syncmesh_sink_rows_total",
                "Rows applied to sink tables",
                &["pipeline", "table"],
            ),
            sink_write_seconds: histogram(
                &r,
                "syncmesh_sink_write_duration_seconds",
                "Time to apply one batch to a sink table",
                &["pipeline", "table"],
            ),
            breaker_state,
            breaker_transitions: counter(
                &r,
                "syncmesh_sink_breaker_transitions_total",
                "Circuit breaker state changes of a sink table",
                &["pipeline", "table", "from", "to"],
            ),
            sink_diverted_rows: counter(
                &r,
                "syncmesh_sink_diverted_rows_total",
                "Rows written to a shadow table while the table's breaker was open",
                &["pipeline", "table"],
            ),
            sink_replayed_events: counter(
                &r,
                "syncmesh_sink_replayed_events_total",
                "Diverted events replayed into the original table by compensation",
                &["pipeline", "table"],
            ),
            // Seconds to hours: a batch path acknowledges at snapshot commit, and a file
            // source's "commit time" may be the file's age.
            end_to_end_seconds: histogram_with(
                &r,
                "syncmesh_end_to_end_latency_seconds",
                "Time from an event's source commit to its acknowledgement by a path",
                &["pipeline", "path"],
                // Fine below a second, where the real-time path's objective (p99 100 ms) is.
                vec![
                    0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
                ],
            ),
            source_lag_seconds: {
                let g = GaugeVec::new(
                    Opts::new(
                        "syncmesh_source_lag_seconds",
                        "Time from the source commit of the newest event every path has \
                         acknowledged to that acknowledgement",
                    ),
                    &["pipeline", "source"],
                )
                .expect("valid metric definition");
                r.register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            route_fallbacks: counter(
                &r,
                "syncmesh_route_fallbacks_total",
                "Events routed to the batch path because the real-time path was degraded",
                &["pipeline"],
            ),
            route_reloads: counter(
                &r,
                "syncmesh_route_reloads_total",
                "Changes of a running pipeline's routes, by outcome (applied, unchanged, rejected)",
                &["pipeline", "outcome"],
            ),
            registry: r,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `GET /metrics` (and `/healthz`) on `addr` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    metrics: std::sync::Arc<Metrics>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    serve_with_readiness(addr, metrics, None).await
}

/// [`serve`], plus `GET /readyz` when `ready` is given: 200 while it holds `true`, else 503.
pub async fn serve_with_readiness(
    addr: SocketAddr,
    metrics: std::sync::Arc<Metrics>,
    ready: Option<tokio::sync::watch::Receiver<bool>>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use axum::{Router, http::StatusCode, routing::get};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let mut app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    if let Some(ready) = ready {
        app = app.route(
            "/readyz",
            get(move || {
                let ready = *ready.borrow();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        );
    }
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    }))
}
