//! The LogMiner source's Prometheus metrics, registered on the pipeline's registry.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, core::Collector,
};

#[derive(Clone)]
pub struct OracleMetrics {
    /// The SCN mining would restart from (start of the oldest open transaction).
    pub offset_scn: IntGaugeVec,
    /// The last commit SCN emitted, per redo thread.
    pub committed_scn: IntGaugeVec,
    /// Seconds between the database time of the latest mined change and now.
    pub lag_seconds: IntGaugeVec,
    pub active_transactions: IntGaugeVec,
    pub transactions: IntCounterVec,
    pub window_size: IntGaugeVec,
    pub fetch_seconds: HistogramVec,
    /// Heartbeats sent: positions reported while no captured change was emitted.
    pub heartbeats: IntCounterVec,
    /// The resume SCN the latest heartbeat reported.
    pub heartbeat_scn: IntGaugeVec,
    /// LOB columns assembled from LOB_WRITE / LOB_TRIM / LOB_ERASE rows.
    pub lob_columns: IntCounterVec,
}

fn reg<C: Collector + Clone + 'static>(r: &Registry, c: C) -> Result<C, prometheus::Error> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl OracleMetrics {
    /// Registers the metrics; once per registry, shared by every Oracle source of a pipeline.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let ps = &["pipeline", "source"];
        Ok(Self {
            offset_scn: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "syncmesh_oracle_offset_scn",
                        "SCN mining restarts from: the start of the oldest open transaction",
                    ),
                    ps,
                )?,
            )?,
            committed_scn: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "syncmesh_oracle_committed_scn",
                        "Last commit SCN emitted, per redo thread",
                    ),
                    &["pipeline", "source", "thread"],
                )?,
            )?,
            lag_seconds: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "syncmesh_oracle_lag_seconds",
                        "Seconds between the latest mined change (database time) and now",
                    ),
                    ps,
                )?,
            )?,
            active_transactions: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "syncmesh_oracle_active_transactions",
                        "Open transactions held in the buffer",
                    ),
                    ps,
                )?,
            )?,
            transactions: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "syncmesh_oracle_transactions_total",
                        "Transactions by outcome: committed, rolled_back, abandoned, ignored",
                    ),
                    &["pipeline", "source", "outcome"],
                )?,
            )?,
            window_size: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "syncmesh_oracle_mining_window_scns",
                        "Size of the current mining window in SCNs",
                    ),
                    ps,
                )?,
            )?,
            fetch_seconds: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "syncmesh_oracle_fetch_duration_seconds",
                        "Time to start LogMiner and fetch one window",
                    )
                    .buckets(vec![
                        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ]),
                    ps,
                )?,
            )?,
            heartbeats: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "syncmesh_oracle_heartbeats_total",
                        "Positions reported with no captured change to carry them",
                    ),
                    ps,
                )?,
            )?,
            heartbeat_scn: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "syncmesh_oracle_heartbeat_scn",
                        "Resume SCN the latest heartbeat reported",
                    ),
                    ps,
                )?,
            )?,
            lob_columns: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "syncmesh_oracle_lob_columns_total",
                        "LOB column values assembled from LOB rows, by outcome: assembled, bad",
                    ),
                    &["pipeline", "source", "outcome"],
                )?,
            )?,
        })
    }
}
