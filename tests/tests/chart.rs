//! The Helm chart, checked by real tools through tests/chart/check_chart.py (run with the test
//! venv's python, where tests/services/install.sh installs helm-python-sdk,
//! kubernetes-validate and yamllint): lint, render with values.schema.json enforced, bad values
//! refused, every manifest validated for Kubernetes 1.20, yamllint, deploy/manifests up to
//! date, and a server-side dry run on the real API server when it runs.

use anyhow::{Context, ensure};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use syncmesh_tests::services;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The venv's python, when it has the chart tools; None (SKIPPED) otherwise.
fn chart_python() -> Option<PathBuf> {
    let cache = std::env::var_os("SYNCMESH_CACHE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/syncmesh")))?;
    let python = cache.join("venv/bin/python");
    let ok = Command::new(&python)
        .args([
            "-c",
            "import helm_python, kubernetes_validate, yamllint, yaml",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(python)
    } else {
        services::missing(
            "chart tools (venv with helm-python-sdk; tests/services/install.sh venv)",
            &["SYNCMESH_CACHE"],
        );
        None
    }
}

#[test]
fn chart_passes_lint_schema_validation_yamllint_and_server_dry_run() -> anyhow::Result<()> {
    let Some(python) = chart_python() else {
        return Ok(());
    };
    // With the API server configured the dry run must happen; `kube()` also makes a missing
    // server a failure when services are required.
    let kube = services::kube();
    let mut cmd = Command::new(&python);
    cmd.current_dir(repo()).arg("tests/chart/check_chart.py");
    match &kube {
        Some(k) => {
            cmd.env("KUBECONFIG", &k.kubeconfig);
        }
        None => {
            cmd.env_remove("KUBECONFIG");
        }
    }
    let out = cmd.output().context("running tests/chart/check_chart.py")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "check_chart.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .with_context(|| format!("no JSON summary in:\n{stdout}"))?;
    let passed: Vec<&str> = summary["passed"]
        .as_array()
        .context("passed")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut want = vec![
        "lint-default",
        "lint-full",
        "render-default",
        "render-full",
        "schema-rejects-bad-values",
        "validate-default",
        "validate-full",
        "yamllint",
        "manifests-up-to-date",
        "dashboard-up-to-date",
    ];
    if kube.is_some() {
        want.push("kubectl-dry-run");
    }
    for check in want {
        ensure!(
            passed.contains(&check),
            "check `{check}` did not run: {summary}\n{stdout}"
        );
    }
    // Every bad value was refused, each with the schema's reason.
    ensure!(
        stdout.matches("  refused (").count() >= 9,
        "fewer refusals than bad values:\n{stdout}"
    );
    Ok(())
}

/// The Oracle LogMiner example names its password only by reference.
#[test]
fn oracle_example_has_no_inline_credentials() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(repo().join("deploy/examples/oracle-logminer.yaml"))?;
    let manifest = syncmesh_crds::parse_manifest(&text)
        .map_err(|e| anyhow::anyhow!("deploy/examples/oracle-logminer.yaml: {e}"))?;
    let source = manifest
        .spec
        .sources
        .iter()
        .find_map(|s| s.oracle.as_ref())
        .context("no oracle source")?;
    ensure!(
        source.credentials.secret_name.is_some() || source.credentials.password_env.is_some(),
        "the Oracle credentials name no Secret"
    );
    ensure!(
        !source.url.contains('@'),
        "credentials in the URL: {}",
        source.url
    );
    Ok(())
}

/// The `syncmesh` binary of this build, beside deps/ (built by `cargo test --workspace`).
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

/// Every example pipeline in deploy/examples passes `syncmesh validate` (schema, semantics and
/// the files it references).
#[test]
fn every_example_pipeline_passes_syncmesh_validate() -> anyhow::Result<()> {
    let Some(bin) = syncmesh_binary() else {
        return Ok(());
    };
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/examples"))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    examples.sort();
    let names: Vec<String> = examples
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .collect();
    for want in [
        "quickstart.yaml",
        "tidb-changefeed.yaml",
        "oracle-logminer.yaml",
    ] {
        ensure!(
            names.iter().any(|n| n == want),
            "no example {want}: {names:?}"
        );
    }
    for example in &examples {
        let out = Command::new(&bin).arg("validate").arg(example).output()?;
        ensure!(
            out.status.success(),
            "syncmesh validate {}: {}{}",
            example.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
