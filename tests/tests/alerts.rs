//! The alert rules in charts/syncmesh/alerts: `promtool check rules`, the `promtool test rules`
//! unit tests (and proof that those tests can fail), every alert documented and tested both
//! ways, and the file loaded into the real Prometheus with every rule evaluating cleanly.

use anyhow::{Context, anyhow, bail, ensure};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use syncmesh_tests::{poll_until, require, services, unique_name};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

fn alerts_dir() -> PathBuf {
    repo().join("charts/syncmesh/alerts")
}

/// `SYNCMESH_PROMTOOL`, else `promtool` on PATH; None (reported as SKIPPED) without either.
fn promtool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SYNCMESH_PROMTOOL").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        services::missing("promtool", &["SYNCMESH_PROMTOOL"]);
    }
    found
}

fn run(cmd: &mut Command) -> anyhow::Result<(bool, String)> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

fn yaml(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Every alerting rule of the rules file.
fn alerts() -> anyhow::Result<Vec<Value>> {
    let rules = yaml(&alerts_dir().join("syncmesh.rules.yml"))?;
    let mut out = Vec::new();
    for group in rules["groups"].as_array().context("groups")? {
        for rule in group["rules"].as_array().context("rules")? {
            if rule.get("alert").is_some() {
                out.push(rule.clone());
            }
        }
    }
    Ok(out)
}

#[test]
fn rules_pass_promtool_check() -> anyhow::Result<()> {
    let promtool = require!(promtool());
    let (ok, text) = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(alerts_dir().join("syncmesh.rules.yml")))?;
    ensure!(ok, "promtool check rules failed:\n{text}");
    let want = format!("SUCCESS: {} rules found", alerts()?.len());
    ensure!(text.contains(&want), "expected `{want}` in:\n{text}");
    Ok(())
}

#[test]
fn rule_unit_tests_pass() -> anyhow::Result<()> {
    let promtool = require!(promtool());
    let (ok, text) = run(Command::new(&promtool).current_dir(alerts_dir()).args([
        "test",
        "rules",
        "syncmesh.rules.test.yml",
    ]))?;
    ensure!(ok, "promtool test rules failed:\n{text}");
    ensure!(text.contains("SUCCESS"), "{text}");
    Ok(())
}

/// The unit tests are only worth something if a wrong expectation fails them: expect the
/// worker-down alert before its `for` has elapsed, and promtool must say it did not fire.
#[test]
fn rule_unit_tests_can_fail() -> anyhow::Result<()> {
    let promtool = require!(promtool());
    let dir = tempfile::tempdir()?;
    std::fs::copy(
        alerts_dir().join("syncmesh.rules.yml"),
        dir.path().join("syncmesh.rules.yml"),
    )?;
    let wrong = r#"rule_files: [syncmesh.rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="syncmesh", instance="10.0.0.1:9464"}'
        values: '1 1 0x20'
    alert_rule_test:
      - eval_time: 4m
        alertname: SyncmeshWorkerDown
        exp_alerts:
          - exp_labels: {severity: critical, job: syncmesh, instance: "10.0.0.1:9464"}
"#;
    std::fs::write(dir.path().join("wrong.test.yml"), wrong)?;
    let (ok, text) = run(Command::new(&promtool).current_dir(dir.path()).args([
        "test",
        "rules",
        "wrong.test.yml",
    ]))?;
    ensure!(
        !ok,
        "promtool accepted an alert firing before its `for`:\n{text}"
    );
    ensure!(text.contains("SyncmeshWorkerDown"), "{text}");
    Ok(())
}

/// Each alert: a `for`, a severity, summary/description, a runbook section that exists in
/// docs/operations.md, and unit tests that show it both firing and not firing.
#[test]
fn every_alert_is_documented_and_tested_both_ways() -> anyhow::Result<()> {
    let docs = std::fs::read_to_string(repo().join("docs/operations.md"))?;
    let tests = yaml(&alerts_dir().join("syncmesh.rules.test.yml"))?;
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .context("tests")?
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .collect();
    let alerts = alerts()?;
    ensure!(alerts.len() >= 7, "only {} alerts", alerts.len());
    for rule in &alerts {
        let name = rule["alert"].as_str().context("alert name")?;
        ensure!(rule["for"].is_string(), "{name}: no `for`");
        let severity = rule["labels"]["severity"].as_str().unwrap_or("");
        ensure!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity `{severity}`"
        );
        for key in ["summary", "description"] {
            ensure!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{name}: no {key}"
            );
        }
        let anchor = name.to_ascii_lowercase();
        ensure!(
            rule["annotations"]["runbook_url"] == format!("docs/operations.md#{anchor}"),
            "{name}: runbook_url {}",
            rule["annotations"]["runbook_url"]
        );
        ensure!(
            docs.lines().any(|l| l.trim() == format!("### {name}")),
            "{name}: docs/operations.md has no `### {name}` runbook section"
        );
        let of_alert = || cases.iter().filter(|c| c["alertname"] == name);
        ensure!(
            of_alert().any(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty())),
            "{name}: no unit test where it fires"
        );
        ensure!(
            of_alert().any(|c| c["exp_alerts"].as_array().is_some_and(|a| a.is_empty())),
            "{name}: no unit test where it does not fire"
        );
    }
    Ok(())
}

/// Removes a rule file from Prometheus's rules directory and reloads, when the test ends.
struct LoadedRules {
    path: PathBuf,
    url: String,
}

impl Drop for LoadedRules {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let url = format!("{}/-/reload", self.url);
        // Best effort from a destructor: a blocking POST on a scoped runtime-free thread.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(async { reqwest::Client::new().post(url).send().await }))
        })
        .join();
    }
}

/// The real Prometheus loads the file and evaluates every rule without error.
#[tokio::test]
async fn rules_load_and_evaluate_in_prometheus() -> anyhow::Result<()> {
    let prometheus = require!(services::prometheus());
    let Some(rules_dir) = prometheus.rules_dir.clone() else {
        services::missing("prometheus rules dir", &["SYNCMESH_PROMETHEUS_RULES_DIR"]);
        return Ok(());
    };
    let file = format!("{}.yml", unique_name("alerts", '-', 60));
    let path = rules_dir.join(&file);
    // Written under a name the rule_files glob does not match, then renamed.
    let tmp = rules_dir.join(format!(".{file}.tmp"));
    std::fs::copy(alerts_dir().join("syncmesh.rules.yml"), &tmp)?;
    std::fs::rename(&tmp, &path)?;
    let _loaded = LoadedRules {
        path: path.clone(),
        url: prometheus.url.clone(),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let reload = http
        .post(format!("{}/-/reload", prometheus.url))
        .send()
        .await?;
    ensure!(reload.status().is_success(), "reload: {}", reload.status());
    let want = alerts()?.len();
    poll_until(
        Duration::from_secs(60),
        "Prometheus to load and evaluate the syncmesh rules",
        || async {
            let body: Value = http
                .get(format!("{}/api/v1/rules", prometheus.url))
                .send()
                .await?
                .json()
                .await?;
            let groups = body["data"]["groups"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let Some(group) = groups
                .iter()
                .find(|g| g["file"].as_str().is_some_and(|f| f.ends_with(&file)))
            else {
                bail!("group of {file} not loaded yet");
            };
            let rules = group["rules"].as_array().cloned().unwrap_or_default();
            ensure!(rules.len() == want, "{} of {want} rules", rules.len());
            for r in &rules {
                if r["health"] == "err" {
                    // A rule that errors will not heal by waiting.
                    return Ok(Some(Err(anyhow!(
                        "rule {} fails: {}",
                        r["name"],
                        r["lastError"]
                    ))));
                }
                ensure!(
                    r["health"] == "ok",
                    "rule {} health {}",
                    r["name"],
                    r["health"]
                );
            }
            Ok(Some(Ok(())))
        },
    )
    .await?
}
