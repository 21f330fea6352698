//! `syncmesh worker --pipeline NS/NAME`: the data plane of one SyncPipeline in the cluster
//! (the operator's Deployment runs it). See docs/worker.md.

use crate::Failure;
use crate::worker::{WorkerConfig, run as run_worker};
use anyhow::anyhow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The SyncPipeline to run, as NAMESPACE/NAME.
    #[arg(long)]
    pub pipeline: String,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long, default_value = "0.0.0.0:9464")]
    pub metrics_addr: SocketAddr,
    /// Checkpoint and default dead-letter file; mount a volume here so positions survive
    /// the pod. Default: `.syncmesh/NAMESPACE/NAME` under the working directory.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Relative paths in the spec (flat files, layouts, SQLite sinks) are resolved here.
    #[arg(long, default_value = ".")]
    pub base_dir: PathBuf,
    /// How often sources are polled for new data (`500ms`, `1s`, ...).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Status is written on change (at most once a second) and at least this often, as the
    /// heartbeat.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub status_interval: Duration,
    /// On SIGTERM or a spec change, the time allowed to drain before exiting non-zero. Keep it
    /// under the pod's terminationGracePeriodSeconds.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

pub async fn run(args: WorkerArgs) -> Result<(), Failure> {
    let (namespace, name) = parse_pipeline(&args.pipeline).map_err(Failure::bad_input)?;
    let state_dir = args
        .state_dir
        .unwrap_or_else(|| PathBuf::from(".syncmesh").join(&namespace).join(&name));
    run_worker(WorkerConfig {
        namespace,
        name,
        metrics_addr: args.metrics_addr,
        state_dir,
        base_dir: args.base_dir,
        poll: args.poll_interval,
        status_interval: args.status_interval,
        drain_timeout: args.drain_timeout,
    })
    .await
}

/// `NAMESPACE/NAME`, both non-empty Kubernetes names.
fn parse_pipeline(s: &str) -> anyhow::Result<(String, String)> {
    let valid = |part: &str| {
        !part.is_empty()
            && part.len() <= 253
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    match s.split_once('/') {
        Some((ns, name)) if valid(ns) && valid(name) => Ok((ns.to_string(), name.to_string())),
        _ => Err(anyhow!(
            "--pipeline `{s}`: expected NAMESPACE/NAME (lower-case names, e.g. `sales/ledger`)"
        )),
    }
}

/// `250ms`, `5s`, `2m`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}`: expected a duration such as 500ms, 5s or 2m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        other => return Err(format!("`{s}`: unknown unit `{other}` (use ms, s or m)")),
    };
    if d.is_zero() {
        return Err(format!("`{s}`: must be greater than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_is_namespace_slash_name() {
        assert_eq!(
            parse_pipeline("sales/ledger-1").unwrap(),
            ("sales".into(), "ledger-1".into())
        );
        for bad in ["ledger", "/ledger", "sales/", "sales/a/b", "Sales/ledger"] {
            let e = parse_pipeline(bad).unwrap_err().to_string();
            assert!(e.contains("NAMESPACE/NAME") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("greater than zero")
        );
        assert!(
            parse_duration("5h")
                .unwrap_err()
                .contains("unknown unit `h`")
        );
        assert!(parse_duration("fast").unwrap_err().contains("fast"));
    }
}
