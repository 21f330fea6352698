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
            "import helm_python, kubernetes_validate, yamllint, yaml, grafana_foundation_sdk",
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
        "dashboard-model",
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

/// Renders the chart through check_chart.py --render-json.
fn render_chart(
    python: &Path,
    values: &Value,
    namespace: &str,
    release: &str,
) -> anyhow::Result<Vec<Value>> {
    let out = Command::new(python)
        .current_dir(repo())
        .args(["tests/chart/check_chart.py", "--render-json"])
        .arg(values.to_string())
        .args(["--namespace", namespace, "--release", release])
        .output()?;
    ensure!(
        out.status.success(),
        "rendering the chart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running kubectl")?;
    let mut input = child.stdin.take().context("stdin")?;
    input.write_all(stdin.unwrap_or("").as_bytes())?;
    drop(input);
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A kubeconfig for ServiceAccount `sa` of `namespace`: the test cluster's entry and the
/// account's token (the 1.20 token controller of kube-controller-manager makes it).
async fn service_account_kubeconfig(
    client: &kube::Client,
    admin: &Path,
    namespace: &str,
    sa: &str,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), namespace);
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
    let token = syncmesh_tests::poll_until(
        std::time::Duration::from_secs(60),
        &format!("a token for ServiceAccount {namespace}/{sa}"),
        || async {
            let account = accounts.get(sa).await?;
            let Some(name) = account
                .secrets
                .unwrap_or_default()
                .into_iter()
                .find_map(|r| r.name)
            else {
                return Ok(None);
            };
            let secret = secrets.get(&name).await?;
            Ok(secret
                .data
                .and_then(|d| d.get("token").cloned())
                .map(|t| String::from_utf8_lossy(&t.0).into_owned()))
        },
    )
    .await?;
    let text = std::fs::read_to_string(admin)?;
    let mut config: Value =
        serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", admin.display()))?;
    let cluster = config["clusters"][0]["name"].clone();
    config["users"] = serde_json::json!([{ "name": sa, "user": { "token": token } }]);
    config["contexts"] = serde_json::json!([{ "name": sa,
        "context": { "cluster": cluster, "user": sa, "namespace": namespace } }]);
    config["current-context"] = Value::String(sa.to_string());
    let path = dir.join(format!("{namespace}-{sa}.kubeconfig"));
    // JSON is YAML: kubectl and kube-rs read it as a kubeconfig.
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(path)
}

/// Every label of `selector` is on `labels`.
fn labels_match(labels: &Value, selector: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels[k] == *v))
}

/// Removes what the RBAC test made, however it ends.
struct Installed {
    admin: PathBuf,
    namespaces: Vec<String>,
    cluster_objects: Vec<String>,
    processes: Vec<std::process::Child>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        for p in &mut self.processes {
            let _ = p.kill();
            let _ = p.wait();
        }
        for o in &self.cluster_objects {
            let _ = kubectl(&self.admin, &["delete", o, "--ignore-not-found"], None);
        }
        for ns in &self.namespaces {
            let _ = kubectl(
                &self.admin,
                &["delete", "namespace", ns, "--wait=false"],
                None,
            );
        }
    }
}

/// The chart's RBAC is enough and no more: the chart is installed for real (RBAC,
/// ServiceAccounts, tenant Role) and `syncmesh operator`, started with the rendered
/// Deployment's arguments under the operator ServiceAccount's own token, takes its Lease,
/// reconciles a SyncPipeline (owned objects, status, Events) and cleans up after its deletion;
/// `syncmesh worker` under the tenant's worker ServiceAccount runs the pipeline and writes its
/// status. Neither logs a `forbidden`, and the worker may not read Secrets. The chart's
/// NetworkPolicy and worker ServiceMonitor select the labels and port the operator gives the
/// worker's pods and Service.
#[tokio::test(flavor = "multi_thread")]
async fn operator_and_worker_work_with_exactly_the_charts_rbac() -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{ConfigMap, Event, Service};
    use kube::Api;
    use kube::api::{DeleteParams, PostParams};
    use std::process::Stdio;
    use std::time::Duration;
    use syncmesh_crds::SyncPipeline;
    use syncmesh_tests::kube::{apply_syncpipeline_crd, client, create_namespace};
    use syncmesh_tests::{poll_until, unique_name};

    let Some(python) = chart_python() else {
        return Ok(());
    };
    let Some(kube_svc) = services::kube() else {
        return Ok(());
    };
    let Some(bin) = syncmesh_binary() else {
        return Ok(());
    };
    if std::env::var("SYNCMESH_KUBE_CONTROLLER_MANAGER").as_deref() != Ok("1") {
        // ServiceAccount tokens come from its token controller.
        services::missing(
            "kube-controller-manager",
            &["SYNCMESH_KUBE_CONTROLLER_MANAGER"],
        );
        return Ok(());
    }
    let admin = kube_svc.kubeconfig.clone();
    let client = client(&kube_svc).await?;
    apply_syncpipeline_crd(&client).await?;
    let release_ns = create_namespace(&client, "chart-rel").await?;
    let tenant = create_namespace(&client, "chart-tenant").await?;
    let release = unique_name("rbac", '-', 30);
    let mut installed = Installed {
        admin: admin.clone(),
        namespaces: vec![release_ns.clone(), tenant.clone()],
        cluster_objects: Vec::new(),
        processes: Vec::new(),
    };
    let values = serde_json::json!({
        "operator": { "watchNamespace": tenant },
        "tenants": [{ "namespace": tenant, "networkPolicy": true }],
        "metrics": { "serviceMonitor": { "enabled": true } },
    });
    let objects = render_chart(&python, &values, &release_ns, &release)?;
    let mut operator_args: Vec<String> = Vec::new();
    // What the chart expects of the objects the operator makes: the labels its NetworkPolicy
    // and worker ServiceMonitor select, and the metrics port.
    let mut selects: Vec<(String, Value)> = Vec::new();
    for obj in &objects {
        let kind = obj["kind"].as_str().unwrap_or("");
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        match kind {
            "NetworkPolicy" => {
                selects.push((
                    "pod".into(),
                    obj["spec"]["podSelector"]["matchLabels"].clone(),
                ));
                selects.push((
                    "port".into(),
                    obj["spec"]["ingress"][0]["ports"][0]["port"].clone(),
                ));
            }
            // The Prometheus Operator's CRDs are not installed here.
            "ServiceMonitor" => {
                if name.ends_with("-workers") {
                    selects.push((
                        "service".into(),
                        obj["spec"]["selector"]["matchLabels"].clone(),
                    ));
                    selects.push((
                        "service-port".into(),
                        obj["spec"]["endpoints"][0]["port"].clone(),
                    ));
                }
                continue;
            }
            // No kubelet runs pods here: the operator is started as a process below.
            "Deployment" => {
                operator_args = obj["spec"]["template"]["spec"]["containers"][0]["args"]
                    .as_array()
                    .context("operator args")?
                    .iter()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect();
                continue;
            }
            "ClusterRole" | "ClusterRoleBinding" => installed
                .cluster_objects
                .push(format!("{}/{name}", kind.to_ascii_lowercase())),
            _ => {}
        }
        kubectl(
            &admin,
            &[
                "apply",
                "--server-side",
                "--field-manager=syncmesh-chart-test",
                "-f",
                "-",
            ],
            Some(&obj.to_string()),
        )?;
    }
    let dir = tempfile::tempdir()?;
    let operator_sa = format!("{release}-syncmesh");
    let operator_config =
        service_account_kubeconfig(&client, &admin, &release_ns, &operator_sa, dir.path()).await?;
    let worker_config =
        service_account_kubeconfig(&client, &admin, &tenant, "syncmesh-worker", dir.path()).await?;

    // The operator with the chart's arguments, its metrics on a free local port.
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let args: Vec<String> = operator_args
        .iter()
        .map(|a| {
            if a.starts_with("--metrics-addr=") {
                format!("--metrics-addr={metrics}")
            } else {
                a.clone()
            }
        })
        .collect();
    ensure!(
        args.iter().any(|a| a == "operator"),
        "no operator subcommand in {args:?}"
    );
    let identity = unique_name("op", '-', 40);
    let operator_log = dir.path().join("operator.log");
    installed.processes.push(
        Command::new(&bin)
            .args(&args)
            .env("KUBECONFIG", &operator_config)
            .env("POD_NAME", &identity)
            .env("POD_NAMESPACE", &release_ns)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&operator_log)?)
            .spawn()?,
    );
    let logs = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();

    // It leads through the chart's Lease, in the release namespace.
    let lease_name = args
        .iter()
        .find_map(|a| a.strip_prefix("--lease-name="))
        .context("--lease-name")?
        .to_string();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &release_ns);
    poll_until(
        Duration::from_secs(60),
        "the operator to hold the chart's Lease",
        || async {
            let lease = leases.get_opt(&lease_name).await?;
            let holder = lease.and_then(|l| l.spec).and_then(|s| s.holder_identity);
            Ok((holder.as_deref() == Some(identity.as_str())).then_some(()))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", logs(&operator_log)))?;

    // A pipeline the worker can run here: the example ledger on local disk into SQLite.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let examples = repo().join("deploy/examples");
    std::fs::copy(
        examples.join("data/ledger-0002.dat"),
        data.join("ledger-0002.dat"),
    )?;
    let records = std::fs::metadata(data.join("ledger-0002.dat"))?.len() / 100;
    let spec = serde_json::json!({
        "sources": [{ "name": "ledger", "flatFile": {
            "path": data, "pattern": "ledger-*.dat",
            "layout": examples.join("ledger.cpy"),
            "table": "bank.ledger", "primaryKey": ["ACCOUNT-ID"] } }],
        "batch": { "url": format!("file://{}", dir.path().join("snapshots").display()), "maxAgeSeconds": 1 },
        "sink": { "url": format!("sqlite://{}", dir.path().join("sink.db").display()) },
    });
    let name = unique_name("rbac", '-', 30);
    let sp: SyncPipeline = serde_json::from_value(serde_json::json!({
        "apiVersion": "syncmesh.io/v1alpha1", "kind": "SyncPipeline",
        "metadata": { "name": name, "namespace": tenant }, "spec": spec,
    }))?;
    let pipelines: Api<SyncPipeline> = Api::namespaced(client.clone(), &tenant);
    pipelines.create(&PostParams::default(), &sp).await?;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &tenant);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &tenant);
    let services_api: Api<Service> = Api::namespaced(client.clone(), &tenant);
    let events: Api<Event> = Api::namespaced(client.clone(), &tenant);
    poll_until(
        Duration::from_secs(90),
        "the operator to apply the worker's objects, status and an Event",
        || async {
            let Some(d) = deployments.get_opt(&format!("{name}-worker")).await? else {
                return Err(anyhow::anyhow!("no Deployment yet"));
            };
            let sa = d
                .spec
                .and_then(|s| s.template.spec)
                .and_then(|p| p.service_account_name);
            ensure!(
                sa.as_deref() == Some("syncmesh-worker"),
                "worker ServiceAccount {sa:?}"
            );
            ensure!(
                config_maps
                    .get_opt(&format!("{name}-pipeline"))
                    .await?
                    .is_some(),
                "no ConfigMap yet"
            );
            ensure!(
                services_api
                    .get_opt(&format!("{name}-metrics"))
                    .await?
                    .is_some(),
                "no Service yet"
            );
            let sp = pipelines.get(&name).await?;
            let status = sp.status.unwrap_or_default();
            ensure!(
                !status.conditions.is_empty() && status.observed_generation.is_some(),
                "no conditions yet"
            );
            let listed = events.list(&Default::default()).await?;
            ensure!(
                listed
                    .items
                    .iter()
                    .any(|e| e.involved_object.name.as_deref() == Some(name.as_str())),
                "no Event yet"
            );
            Ok(Some(()))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", logs(&operator_log)))?;

    ensure!(
        selects.len() == 4,
        "NetworkPolicy or ServiceMonitor not rendered: {selects:?}"
    );
    let deployment = serde_json::to_value(deployments.get(&format!("{name}-worker")).await?)?;
    let service = serde_json::to_value(services_api.get(&format!("{name}-metrics")).await?)?;
    let pod = &deployment["spec"]["template"];
    let container_port = pod["spec"]["containers"][0]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "metrics")
        .map(|p| p["containerPort"].clone());
    for (what, want) in &selects {
        let ok = match what.as_str() {
            "pod" => labels_match(&pod["metadata"]["labels"], want),
            "service" => labels_match(&service["metadata"]["labels"], want),
            "port" => container_port.as_ref() == Some(want),
            _ => service["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == *want),
        };
        ensure!(
            ok,
            "the chart selects {what} {want}, which the operator's worker objects do not have:\n{deployment}\n{service}"
        );
    }

    // The worker, as its ServiceAccount, runs the pipeline and writes status.
    let worker_log = dir.path().join("worker.log");
    let worker_metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    installed.processes.push(
        Command::new(&bin)
            .args(["worker", "--pipeline", &format!("{tenant}/{name}")])
            .arg(format!("--metrics-addr={worker_metrics}"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("KUBECONFIG", &worker_config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&worker_log)?)
            .spawn()?,
    );
    poll_until(
        Duration::from_secs(90),
        "the worker to report every record read, with a heartbeat",
        || async {
            let status = pipelines.get(&name).await?.status.unwrap_or_default();
            let read = status.events_read.unwrap_or(0);
            ensure!(
                status.heartbeat.is_some() && read >= records,
                "eventsRead {read} of {records}, heartbeat {:?}",
                status.heartbeat
            );
            Ok(Some(()))
        },
    )
    .await
    .with_context(|| format!("worker log:\n{}", logs(&worker_log)))?;
    let worker_sa = format!("system:serviceaccount:{tenant}:syncmesh-worker");
    for (verb, resource, subresource, allowed) in [
        ("get", "secrets", "", false),
        ("update", "syncpipelines", "", false),
        ("patch", "syncpipelines", "status", true),
    ] {
        let mut can_i = Command::new("kubectl");
        can_i
            .args([
                "auth", "can-i", verb, resource, "-n", &tenant, "--as", &worker_sa,
            ])
            .env("KUBECONFIG", &admin);
        if !subresource.is_empty() {
            can_i.arg(format!("--subresource={subresource}"));
        }
        let answer = String::from_utf8_lossy(&can_i.output()?.stdout)
            .trim()
            .to_string();
        ensure!(
            (answer == "yes") == allowed,
            "worker can-i {verb} {resource} {subresource}: {answer}"
        );
    }

    // Deleting the pipeline: the operator's finalizer cleans up and lets it go.
    pipelines.delete(&name, &DeleteParams::default()).await?;
    poll_until(
        Duration::from_secs(90),
        "the pipeline and its worker Deployment to be gone",
        || async {
            ensure!(
                pipelines.get_opt(&name).await?.is_none(),
                "pipeline still there"
            );
            ensure!(
                deployments
                    .get_opt(&format!("{name}-worker"))
                    .await?
                    .is_none(),
                "Deployment still there"
            );
            Ok(Some(()))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", logs(&operator_log)))?;

    for (who, log) in [("operator", &operator_log), ("worker", &worker_log)] {
        let text = logs(log);
        ensure!(
            !text.to_ascii_lowercase().contains("forbidden"),
            "the {who} was refused something under the chart's RBAC:\n{text}"
        );
    }
    drop(installed);
    Ok(())
}
