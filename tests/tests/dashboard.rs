//! The Grafana dashboard (charts/syncmesh/dashboards/syncmesh.json) against real data: a real
//! `syncmesh run --follow` serves its metrics, the real Prometheus scrapes it, and every
//! panel query, with the dashboard's variables filled in, must be valid PromQL
//! (`/api/v1/format_query`) and return a series with a number.
//!
//! The pipeline is chosen so that every panel has data: the example ledger (flat file) on
//! both paths (Kafka, transactional, and local snapshots) into a SQLite sink with its
//! breaker, one bad record (a dead letter), a consistency check every minute, and a TiDB
//! changefeed (canal-json as TiCDC writes it, produced by the test) because flat-file records
//! carry no source commit time, and lag and end-to-end latency are measured from it. New
//! files and changes keep arriving while the test waits, so rates and quantiles are not empty.

use anyhow::{Context, anyhow, ensure};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use syncmesh_tests::kafka::{create_topic, producer_config};
use syncmesh_tests::prometheus::{PromApi, SdTarget, free_local_addr};
use syncmesh_tests::{poll_until, require, services, unique_name};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The `syncmesh` binary of this build (target/<profile>/syncmesh, beside deps/); cargo builds
/// it for `cargo test --workspace`. None (SKIPPED) when it has not been built.
fn syncmesh_binary() -> Option<PathBuf> {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("syncmesh")))
        .filter(|p| p.is_file());
    if bin.is_none() {
        services::missing(
            "the syncmesh binary (cargo build -p syncmesh)",
            &["CARGO_TARGET_DIR"],
        );
    }
    bin
}

/// Kills the run when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every panel query of the dashboard, as (panel title, expression).
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let nested = panel["panels"].as_array().into_iter().flatten();
        for p in std::iter::once(panel).chain(nested) {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((
                        p["title"].as_str().unwrap_or("?").to_string(),
                        expr.to_string(),
                    ));
                }
            }
        }
    }
    out
}

/// What Grafana would send: the variables replaced by this run's values.
fn fill(expr: &str, pipeline: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "5s")
        .replace("$__range", "1h")
        .replace("$pipeline", pipeline)
}

fn api_url(base: &str, path: &str, query: &[(&str, &str)]) -> anyhow::Result<url::Url> {
    let mut url = url::Url::parse(&format!("{base}{path}"))?;
    url.query_pairs_mut().extend_pairs(query);
    Ok(url)
}

const RECORD: usize = 100;

/// `n` records of the example ledger, the first one's account id made unreadable when `bad`.
fn records(sample: &[u8], n: usize, bad: bool) -> Vec<u8> {
    let mut out = sample[..n * RECORD].to_vec();
    if bad {
        // ACCOUNT-ID is PIC 9(10): letters are not digits, so the record is a dead letter.
        out[..10].copy_from_slice(b"NOTANUMBER");
    }
    out
}

/// A TiDB TSO for now: physical milliseconds shifted past the 18 logical bits.
fn now_tso() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms << 18
}

/// One committed insert into `<db>.items` as TiCDC's canal-json (TiDB extension) writes it,
/// followed by the watermark that releases it.
fn changefeed_messages(db: &str, id: u32) -> [Value; 2] {
    let ts = now_tso();
    let ms = (ts >> 18) as i64;
    [
        json!({
            "id": 0, "database": db, "table": "items", "pkNames": ["id"], "isDdl": false,
            "type": "INSERT", "es": ms, "ts": ms + 5, "sql": "",
            "sqlType": {"id": 4, "name": 12}, "mysqlType": {"id": "int", "name": "varchar"},
            "data": [{"id": id.to_string(), "name": format!("item-{id}")}], "old": null,
            "_tidb": {"commitTs": ts}
        }),
        json!({
            "id": 0, "database": "", "table": "", "pkNames": null, "isDdl": false,
            "type": "TIDB_WATERMARK", "es": ms, "ts": ms, "sql": "", "sqlType": null,
            "mysqlType": null, "data": null, "old": null, "_tidb": {"watermarkTs": ts + 1}
        }),
    ]
}

async fn produce(producer: &FutureProducer, topic: &str, messages: &[Value]) -> anyhow::Result<()> {
    for m in messages {
        let payload = serde_json::to_vec(m)?;
        producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .partition(0)
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| anyhow!("producing to {topic}: {e}"))?;
    }
    Ok(())
}

fn manifest(name: &str, brokers: &str, changefeed: &str, db: &str) -> String {
    format!(
        r#"apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata:
  name: {name}
spec:
  sources:
    - name: ledger
      flatFile:
        path: data
        pattern: "ledger-*.dat"
        layout: ledger.cpy
        table: bank.ledger
        primaryKey: [ACCOUNT-ID]
    - name: shop
      tidb:
        brokers: "{brokers}"
        topics: ["{changefeed}"]
        protocol: canal-json
        tables: ["{db}.items"]
  routes:
    - name: ledger-everywhere
      match: {{tables: ["bank.*"]}}
      to: [realtime, batch]
  defaultRoute: [realtime, batch]
  realtime:
    brokers: "{brokers}"
    topicTemplate: "{name}.{{schema}}.{{table}}"
    transactionalId: "{name}"
    positionsTopic: "_{name}.positions"
    lingerMs: 50
  batch:
    url: out/snapshots
    maxAgeSeconds: 1
  sink:
    url: sqlite://out/sink.db
  deadLetter:
    file: out/dead-letters.jsonl
  check:
    schedule: "* * * * *"
    tables: [bank.ledger]
    sourceUrl: sqlite://out/sink.db
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_returns_data_from_a_real_run() -> anyhow::Result<()> {
    let prometheus = require!(services::prometheus());
    let kafka = require!(services::kafka());
    let Some(bin) = syncmesh_binary() else {
        return Ok(());
    };
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(
        repo().join("charts/syncmesh/dashboards/syncmesh.json"),
    )?)?;
    let queries = panel_queries(&dashboard);
    ensure!(queries.len() >= 15, "only {} queries", queries.len());
    for (title, expr) in &queries {
        ensure!(
            expr.contains("$pipeline") || expr.contains("up{"),
            "panel `{title}` ignores the $pipeline variable: {expr}"
        );
    }

    let name = unique_name("dash", '-', 40);
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let examples = repo().join("deploy/examples");
    std::fs::copy(examples.join("ledger.cpy"), dir.path().join("ledger.cpy"))?;
    let sample = std::fs::read(examples.join("data/ledger-0002.dat"))?;
    std::fs::write(data.join("ledger-0001.dat"), &sample)?;
    std::fs::write(data.join("ledger-0002.dat"), records(&sample, 3, true))?;
    let db = unique_name("shop", '_', 30);
    let changefeed = unique_name("ticdc-dash", '-', 60);
    create_topic(&kafka.brokers, &changefeed, 1).await?;
    let producer: FutureProducer = producer_config(&kafka.brokers, None).create()?;
    let pipeline = dir.path().join("pipeline.yaml");
    std::fs::write(&pipeline, manifest(&name, &kafka.brokers, &changefeed, &db))?;

    let addr = free_local_addr()?;
    let log = std::fs::File::create(dir.path().join("run.log"))?;
    let child = Command::new(&bin)
        .arg("run")
        .arg(&pipeline)
        .args(["--follow", "--poll-ms", "200", "--metrics-addr"])
        .arg(addr.to_string())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut run = Running(child);
    let _target = SdTarget::register(&prometheus, &name, addr, &[("test", "dashboard")])?;
    let api = PromApi::new(&prometheus);
    let run_log = || std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default();
    api.wait_target_up(&addr.to_string(), Duration::from_secs(60))
        .await
        .with_context(|| format!("run log:\n{}", run_log()))?;

    // Until every panel has a number: keep events flowing (a new file and a TiDB change per
    // poll) and wait for the minute's consistency check.
    let mut file_no = 10_000u32;
    let result = poll_until(
        Duration::from_secs(150),
        "every dashboard query to return a series with a number",
        || {
            file_no += 1;
            let feed = data.join(format!("ledger-{file_no}.dat"));
            let chunk = records(&sample, 20, false);
            let change = changefeed_messages(&db, file_no);
            let (api, queries, name, producer, changefeed) =
                (&api, &queries, &name, &producer, &changefeed);
            let exited = run.0.try_wait();
            async move {
                if let Ok(Some(status)) = exited {
                    return Ok(Some(Err(anyhow!("the run exited early: {status}"))));
                }
                std::fs::write(&feed, chunk)?;
                produce(producer, changefeed, &change).await?;
                let mut empty = Vec::new();
                for (title, expr) in queries {
                    let series = api.query(&fill(expr, name)).await?;
                    if !series.iter().any(|(_, v)| v.is_finite()) {
                        empty.push(format!("{title}: {expr} -> {series:?}"));
                    }
                }
                if empty.is_empty() {
                    Ok(Some(Ok(())))
                } else {
                    Err(anyhow!("no data yet:\n  {}", empty.join("\n  ")))
                }
            }
        },
    )
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) | Err(e) => return Err(e.context(format!("run log:\n{}", run_log()))),
    }

    // Every expression is PromQL the server parses (and normalises).
    let http = reqwest::Client::new();
    for (title, expr) in &queries {
        let q = fill(expr, &name);
        let body: Value = http
            .get(api_url(
                &prometheus.url,
                "/api/v1/format_query",
                &[("query", &q)],
            )?)
            .send()
            .await?
            .json()
            .await?;
        ensure!(
            body["status"] == "success",
            "panel `{title}`: format_query refused {q}: {body}"
        );
    }

    // The $pipeline variable's own query lists this run.
    let body: Value = http
        .get(api_url(
            &prometheus.url,
            "/api/v1/label/pipeline/values",
            &[("match[]", "syncmesh_source_events_total")],
        )?)
        .send()
        .await?
        .json()
        .await?;
    let values = body["data"].as_array().cloned().unwrap_or_default();
    ensure!(
        values.iter().any(|v| v == name.as_str()),
        "label_values(syncmesh_source_events_total, pipeline) lacks {name}: {body}"
    );
    Ok(())
}
