//! TiDB source metrics, labelled by pipeline and source.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct TidbMetrics {
    /// The smallest watermark over all partitions (a TSO).
    pub resolved_ts: IntGaugeVec,
    /// Wall-clock now minus the physical time of the resolved TS, in milliseconds.
    pub checkpoint_lag_ms: IntGaugeVec,
    pub events: IntCounterVec,
    pub duplicates: IntCounterVec,
    pub held: IntGaugeVec,
    pub snapshot_chunks_remaining: IntGaugeVec,
    pub snapshot_rows: IntCounterVec,
}

impl TidbMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), &["pipeline", "source"])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        Ok(Self {
            resolved_ts: gauge(
                "syncmesh_tidb_resolved_ts",
                "Smallest TiCDC watermark over the changefeed's partitions (TSO)",
            )?,
            checkpoint_lag_ms: gauge(
                "syncmesh_tidb_checkpoint_lag_milliseconds",
                "Now minus the physical time of the resolved TS",
            )?,
            events: counter(
                "syncmesh_tidb_events_total",
                "Change events read from the changefeed, per table",
                &["pipeline", "source", "table"],
            )?,
            duplicates: counter(
                "syncmesh_tidb_duplicates_total",
                "TiCDC resends dropped (below the watermark, or twice in one transaction)",
                &["pipeline", "source"],
            )?,
            held: gauge(
                "syncmesh_tidb_held_events",
                "Changes waiting for a watermark on every partition",
            )?,
            snapshot_chunks_remaining: gauge(
                "syncmesh_tidb_snapshot_chunks_remaining",
                "Snapshot chunks still to read (estimated from the engine's row counts)",
            )?,
            snapshot_rows: counter(
                "syncmesh_tidb_snapshot_rows_total",
                "Rows read by the initial snapshot, per table",
                &["pipeline", "source", "table"],
            )?,
        })
    }
}

/// The physical part of a TiDB TSO, in ms since the epoch.
pub fn tso_physical_ms(ts: u64) -> i64 {
    (ts >> 18) as i64
}
