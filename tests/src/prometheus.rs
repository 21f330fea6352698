//! Prometheus helpers: register a scrape target through file_sd, query the HTTP API, and lint an
//! exposition with `promtool check metrics`.

use crate::services::Prometheus;
use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A local address with a port that was free a moment ago: bind `127.0.0.1:0`, read the port,
/// release it. For servers that take a `SocketAddr` rather than a listener.
pub fn free_local_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A scrape target registered through Prometheus's file_sd directory (job `syncmesh`). The file
/// is removed when this is dropped.
pub struct SdTarget {
    pub path: PathBuf,
    /// The `instance` label Prometheus gives the target (`host:port`).
    pub instance: String,
}

impl SdTarget {
    /// Writes `<sd_dir>/<name>.json` with one target and `labels`, atomically (a temporary file
    /// that the file_sd glob does not match, then a rename), so Prometheus never reads half a
    /// file.
    pub fn register(
        prometheus: &Prometheus,
        name: &str,
        target: SocketAddr,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let instance = target.to_string();
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let body = serde_json::to_vec_pretty(&serde_json::json!([
            { "targets": [instance], "labels": labels }
        ]))?;
        let path = prometheus.sd_dir.join(format!("{name}.json"));
        let tmp = prometheus.sd_dir.join(format!(".{name}.json.tmp"));
        std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(Self { path, instance })
    }
}

impl Drop for SdTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The Prometheus HTTP API.
#[derive(Clone)]
pub struct PromApi {
    pub url: String,
    http: reqwest::Client,
}

impl PromApi {
    pub fn new(prometheus: &Prometheus) -> Self {
        Self {
            url: prometheus.url.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a plain HTTP client builds"),
        }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let mut url = url::Url::parse(&format!("{}{path}", self.url))?;
        url.query_pairs_mut().extend_pairs(query);
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("GET {url}: reading the JSON body ({status})"))?;
        if body["status"] != "success" {
            bail!("GET {url} {query:?}: {status} {body}");
        }
        Ok(body["data"].clone())
    }

    /// The active targets of `/api/v1/targets`.
    pub async fn active_targets(&self) -> anyhow::Result<Vec<Value>> {
        let data = self.get("/api/v1/targets", &[("state", "active")]).await?;
        Ok(data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The target whose `instance` label is `instance`, if Prometheus has it.
    pub async fn target(&self, instance: &str) -> anyhow::Result<Option<Value>> {
        Ok(self
            .active_targets()
            .await?
            .into_iter()
            .find(|t| t["labels"]["instance"] == instance))
    }

    /// Polls until the target `instance` is scraped with health `up`.
    pub async fn wait_target_up(&self, instance: &str, deadline: Duration) -> anyhow::Result<()> {
        crate::poll_until(
            deadline,
            &format!("Prometheus target {instance} to be up"),
            || async {
                match self.target(instance).await? {
                    None => Err(anyhow!("target not discovered yet")),
                    Some(t) if t["health"] == "up" => Ok(Some(())),
                    Some(t) => Err(anyhow!(
                        "health {} lastError {}",
                        t["health"],
                        t["lastError"]
                    )),
                }
            },
        )
        .await
    }

    /// An instant query: each series' labels and value.
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<(Value, f64)>> {
        let data = self.get("/api/v1/query", &[("query", promql)]).await?;
        let result = data["result"].as_array().cloned().unwrap_or_default();
        result
            .into_iter()
            .map(|s| {
                let v = s["value"][1]
                    .as_str()
                    .ok_or_else(|| anyhow!("sample without a value: {s}"))?
                    .parse::<f64>()?;
                Ok((s["metric"].clone(), v))
            })
            .collect()
    }

    /// Polls `promql` until it returns exactly one series with value `want`.
    pub async fn wait_query_value(
        &self,
        promql: &str,
        want: f64,
        deadline: Duration,
    ) -> anyhow::Result<Value> {
        crate::poll_until(deadline, &format!("`{promql}` to be {want}"), || async {
            let series = self.query(promql).await?;
            match series.as_slice() {
                [(labels, v)] if *v == want => Ok(Some(labels.clone())),
                other => Err(anyhow!("query returned {other:?}")),
            }
        })
        .await
    }
}

/// Runs `promtool check metrics` on an exposition; Ok when promtool is satisfied, otherwise an
/// error carrying promtool's complaints (naming conventions, missing help, ...).
pub fn promtool_check_metrics(promtool: &std::path::Path, exposition: &str) -> anyhow::Result<()> {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} check metrics", promtool.display()))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(exposition.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "promtool check metrics failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
