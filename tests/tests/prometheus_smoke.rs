//! The worker's metrics endpoint (`syncmesh_connectors::metrics`) scraped by a real Prometheus,
//! and its exposition linted by `promtool check metrics`.

use std::sync::Arc;
use std::time::Duration;
use syncmesh_connectors::metrics::{Metrics, serve};
use syncmesh_tests::prometheus::{PromApi, SdTarget, free_local_addr, promtool_check_metrics};
use syncmesh_tests::{poll_until, require, services, unique_name};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Gives every metric family a series, so the exposition (and promtool's lint) covers them all.
fn touch_all(m: &Metrics, pipeline: &str) {
    m.events_read
        .with_label_values(&[pipeline, "src"])
        .inc_by(42);
    m.decisions.with_label_values(&[pipeline, "default"]).inc();
    m.path_events.with_label_values(&[pipeline, "batch"]).inc();
    m.dead_letters.with_label_values(&[pipeline, "src"]).inc();
    m.in_flight.with_label_values(&[pipeline]).set(3);
    m.checkpoint_saves.with_label_values(&[pipeline]).inc();
    m.snapshots
        .with_label_values(&[pipeline, "bank.accounts"])
        .inc();
    m.snapshot_rows
        .with_label_values(&[pipeline, "bank.accounts"])
        .inc_by(10);
    m.snapshot_bytes
        .with_label_values(&[pipeline, "bank.accounts"])
        .inc_by(1000);
    m.snapshot_seconds
        .with_label_values(&[pipeline])
        .observe(0.2);
    m.sink_rows
        .with_label_values(&[pipeline, "accounts"])
        .inc_by(10);
    m.sink_write_seconds
        .with_label_values(&[pipeline, "accounts"])
        .observe(0.01);
}

#[tokio::test]
async fn metrics_endpoint_is_scraped_and_lint_clean() -> anyhow::Result<()> {
    let prometheus = require!(services::prometheus());
    let pipeline = unique_name("prom-smoke", '-', 60);

    let metrics = Arc::new(Metrics::new());
    touch_all(&metrics, &pipeline);
    let addr = free_local_addr()?;
    let server = serve(addr, metrics.clone()).await?;

    let http = reqwest::Client::new();
    let exposition = poll_until(TIMEOUT, &format!("GET http://{addr}/metrics"), || async {
        let r = http.get(format!("http://{addr}/metrics")).send().await?;
        anyhow::ensure!(r.status().is_success(), "status {}", r.status());
        Ok(Some(r.text().await?))
    })
    .await?;
    let line = format!("syncmesh_source_events_total{{pipeline=\"{pipeline}\",source=\"src\"}} 42");
    assert!(
        exposition.contains(&line),
        "{line} missing from:\n{exposition}"
    );

    match &prometheus.promtool {
        Some(promtool) => promtool_check_metrics(promtool, &exposition)?,
        None => eprintln!("SYNCMESH_PROMTOOL not set: promtool check metrics not run"),
    }

    let target = SdTarget::register(&prometheus, &pipeline, addr, &[("test", &pipeline)])?;
    let api = PromApi::new(&prometheus);
    api.wait_target_up(&target.instance, TIMEOUT).await?;
    let labels = api
        .wait_query_value(
            &format!("syncmesh_source_events_total{{pipeline=\"{pipeline}\"}}"),
            42.0,
            TIMEOUT,
        )
        .await?;
    assert_eq!(labels["source"], "src");
    assert_eq!(labels["job"], "syncmesh");
    assert_eq!(labels["test"], pipeline.as_str());

    drop(target);
    server.abort();
    Ok(())
}
