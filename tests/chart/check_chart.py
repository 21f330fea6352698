#!/usr/bin/env python3
"""Checks the Helm chart charts/syncmesh with real tools, and keeps deploy/manifests in step.

    python check_chart.py                      # every check; kubectl too when KUBECONFIG is set
    python check_chart.py --update-manifests   # rewrite deploy/manifests/syncmesh.yaml first
    python check_chart.py --render-json '{"tenants": [{"namespace": "a"}]}' --namespace NS --release R

Run it with the test venv's python (tests/services/install.sh installs helm-python-sdk,
kubernetes-validate and yamllint there); tests/tests/chart.rs does. Checks:

- helm lint (strict) with the default values and with every optional feature on;
- rendering both ways, with values.schema.json enforced, and bad values refused by the schema;
- every rendered manifest validated offline for Kubernetes 1.20 (kubernetes-validate, strict:
  unknown fields are errors); the monitoring.coreos.com kinds have no published schema there
  and are checked for their shape instead (the PrometheusRule must carry the alert file);
- yamllint on the rendered manifests and the chart's own YAML;
- deploy/manifests/syncmesh.yaml equal to the default rendering, and the dashboard JSON equal
  to what tests/chart/gen_dashboard.py writes and read by Grafana's own dashboard model
  (grafana-foundation-sdk) without losing or changing a field;
- with KUBECONFIG (and kubectl): the chart's CRD and every rendered object applied with
  `kubectl apply --server-side --dry-run=server` to the real API server, in namespaces made
  for the run and deleted after.

The last line printed is a JSON summary: {"passed": [...], "skipped": {...}}. Exit 1 on the
first failing check, with what failed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import helm_python as helm
from grafana_foundation_sdk.cog.encoder import JSONEncoder as GrafanaEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard as GrafanaDashboard
import kubernetes_validate
import yaml
from yamllint import config as yamllint_config
from yamllint import linter as yamllint_linter

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHART = ROOT / "charts/syncmesh"
MANIFESTS = ROOT / "deploy/manifests/syncmesh.yaml"
KUBE_VERSION = "1.20.0"
RELEASE = "syncmesh"
NAMESPACE = "syncmesh-system"

sys.path.insert(0, str(HERE))
import gen_dashboard  # noqa: E402

# Every optional feature on: tenants with quotas and policies, monitoring objects, extras.
FULL_VALUES = {
    "image": {"tag": "0.1.0-test", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "operator": {
        "replicas": 2,
        "watchNamespace": "team-a",
        "leaseName": "syncmesh-leader-test",
        "extraArgs": ["--status-interval=10s"],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "syncmesh", "effect": "NoSchedule"}],
        "podLabels": {"team": "data"},
        "podAnnotations": {"example.com/owner": "data"},
    },
    "serviceAccount": {"annotations": {"example.com/role": "syncmesh"}},
    "tenants": [
        {
            "namespace": "team-a",
            "resourceQuota": {
                "requests.cpu": "4",
                "requests.memory": "8Gi",
                "limits.cpu": 8,
                "limits.memory": "16Gi",
                "pods": "20",
            },
            "networkPolicy": True,
        },
        {"namespace": "team-b", "networkPolicy": False},
    ],
    "tenantNetworkPolicy": {
        "egress": [
            {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 5432, "protocol": "TCP"}]}
        ]
    },
    "metrics": {
        "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kube-prometheus"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus"}},
    },
    "dashboard": {"namespace": "monitoring", "annotations": {"grafana_folder": "syncmesh"}},
}

# Values the schema must refuse, each with the reason it should give.
BAD_VALUES = [
    ({"operator": {"replicas": "two"}}, "operator.replicas is not an integer"),
    ({"operator": {"replica": 2}}, "unknown key operator.replica"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy outside its enum"),
    ({"tenants": [{"networkPolicy": True}]}, "tenant without a namespace"),
    ({"tenants": [{"namespace": "Team_A"}]}, "tenant namespace not a DNS label"),
    ({"tenants": [{"namespace": "a", "resourceQuota": {"pods": "lots"}}]}, "quota not a quantity"),
    ({"metrics": {"serviceMonitor": {"interval": "soon"}}}, "interval not a duration"),
    ({"operator": {"logFormat": "xml"}}, "logFormat outside its enum"),
    ({"dashbaord": {"enabled": True}}, "unknown top-level key"),
]

KNOWN_UNVALIDATED = {"ServiceMonitor", "PrometheusRule"}

YAMLLINT_CONFIG = """
extends: default
rules:
  # toYaml writes block sequences unindented (as kubectl does); the dashboard's PromQL is long.
  indentation: {spaces: consistent, indent-sequences: whatever}
  line-length: {max: 200}
  document-start: disable
  comments: {min-spaces-from-content: 1}
  truthy: {check-keys: false}
  braces: {max-spaces-inside: 1}
  brackets: {max-spaces-inside: 1}
"""


class CheckFailed(Exception):
    pass


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def lint(values: dict | None, what: str) -> None:
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    # Severity 1 is info (e.g. "icon is recommended"); warnings fail a strict lint.
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    if bad or report.get("errors"):
        raise CheckFailed(f"helm lint ({what}): {json.dumps(bad + report.get('errors', []), indent=2)}")


def render(values: dict | None, namespace: str = NAMESPACE, release: str = RELEASE) -> list[tuple[str, dict]]:
    """The rendered objects, in file order, as (template, object); NOTES.txt left out."""
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values=values, name=release, namespace=namespace, is_install=True)
    docs = []
    for template in sorted(files):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(files[template]):
            if doc:
                docs.append((template, doc))
    return docs


def render_text(values: dict | None) -> dict[str, str]:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def schema_rejects() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(chart.values)
        for values, reason in BAD_VALUES:
            try:
                chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
            except helm.HelmValuesError as e:
                print(f"  refused ({reason}): {str(e).splitlines()[-1].strip()}")
                continue
            raise CheckFailed(f"values.schema.json accepted bad values ({reason}): {values}")


def validate_offline(docs: list[tuple[str, dict]], what: str) -> list[str]:
    kinds = []
    for template, obj in docs:
        kind = obj.get("kind", "?")
        kinds.append(kind)
        if kind in KNOWN_UNVALIDATED:
            check_monitoring_shape(obj)
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise CheckFailed(f"{what}: {template} {kind}/{obj['metadata'].get('name')}: {e.message} at {list(e.path)}")
        except kubernetes_validate.SchemaNotFoundError as e:
            raise CheckFailed(f"{what}: {template}: {kind} {obj.get('apiVersion')} is not served by Kubernetes {KUBE_VERSION}: {e}")
    return kinds


def check_monitoring_shape(obj: dict) -> None:
    """No schema for the Prometheus Operator kinds here: check the fields they require."""
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    if obj.get("apiVersion") != "monitoring.coreos.com/v1":
        raise CheckFailed(f"{name}: apiVersion {obj.get('apiVersion')}")
    spec = obj.get("spec") or {}
    if obj["kind"] == "ServiceMonitor":
        if not spec.get("selector") or not spec.get("endpoints"):
            raise CheckFailed(f"{name}: needs selector and endpoints")
        for ep in spec["endpoints"]:
            if set(ep) - {"port", "path", "interval", "relabelings"}:
                raise CheckFailed(f"{name}: unexpected endpoint fields {sorted(ep)}")
    else:
        rules = yaml.safe_load((CHART / "alerts/syncmesh.rules.yml").read_text())
        if spec != rules:
            raise CheckFailed(f"{name}: spec differs from alerts/syncmesh.rules.yml")


def run_yamllint(texts: dict[str, str]) -> None:
    conf = yamllint_config.YamlLintConfig(YAMLLINT_CONFIG)
    problems = []
    for name, text in texts.items():
        # Helm leaves the newline after a template's leading `{{- if }}`; `helm template`
        # prints each file after a `---` and `# Source:` line, where it is harmless.
        for p in yamllint_linter.run(text.lstrip("\n"), conf):
            if p.level == "error" or p.level == "warning":
                problems.append(f"{name}:{p.line}:{p.column}: {p.level} {p.desc} ({p.rule})")
    if problems:
        raise CheckFailed("yamllint:\n" + "\n".join(problems))


def manifests_text() -> str:
    header = (
        "# Generated by tests/chart/check_chart.py --update-manifests from charts/syncmesh with\n"
        "# default values (release `syncmesh`, namespace `syncmesh-system`). Do not edit: change\n"
        "# the chart and regenerate. Apply the CRD first:\n"
        "#   kubectl apply --server-side -f deploy/crds/syncpipelines.syncmesh.io.yaml\n"
        "#   kubectl apply --server-side -f deploy/manifests/syncmesh.yaml\n"
    )
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    parts = [yaml.safe_dump(ns, sort_keys=False)]
    files = render_text(None)
    for template in sorted(files):
        if template.endswith("NOTES.txt"):
            continue
        body = files[template].strip()
        if body:
            parts.append(f"# Source: {template}\n{body}\n")
    return header + "---\n" + "---\n".join(parts)


def kubectl(args: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise CheckFailed(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def server_dry_run() -> list[str]:
    """Dry-runs the CRD and a full rendering (into fresh namespaces) on the API server."""
    suffix = f"{int(time.time())}-{os.getpid()}"
    release_ns, tenant_ns = f"chart-{suffix}", f"chart-tenant-{suffix}"
    # The chart's CRD is checked by the same dry run, not applied: other tests share the server,
    # and the objects below do not need it (tests/tests/chart.rs installs it for real).
    for crd in sorted((CHART / "crds").glob("*.yaml")):
        kubectl(["apply", "--server-side", "--dry-run=server", "--force-conflicts",
                 "--field-manager=syncmesh-chart-test", "-f", str(crd)])
    values = merge(FULL_VALUES, {
        "operator": {"watchNamespace": tenant_ns},
        "tenants": [{"namespace": tenant_ns, "resourceQuota": {"pods": "10", "requests.cpu": "2"}, "networkPolicy": True}],
        "dashboard": {"namespace": release_ns},
    })
    docs = render(values, namespace=release_ns, release=f"sm-{suffix}")
    applied = []
    for ns in (release_ns, tenant_ns):
        kubectl(["create", "namespace", ns])
    try:
        for template, obj in docs:
            kind = obj["kind"]
            if kind in KNOWN_UNVALIDATED:
                continue  # the Prometheus Operator's CRDs are not installed on the test server
            text = yaml.safe_dump(obj, sort_keys=False)
            proc = kubectl(
                ["apply", "--server-side", "--dry-run=server", "--field-manager=syncmesh-chart-test", "-o", "name", "-f", "-"],
                stdin=text, check=False,
            )
            if proc.returncode != 0:
                raise CheckFailed(f"server dry-run of {template} {kind}/{obj['metadata']['name']}:\n{proc.stderr}")
            applied.append(kind)
        # An invalid object must be refused by the same route, or the check above proves nothing.
        bad = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "bad", "namespace": release_ns}, "spec": {"replicas": "two"}}
        proc = kubectl(["apply", "--server-side", "--dry-run=server", "-f", "-"],
                       stdin=yaml.safe_dump(bad), check=False)
        if proc.returncode == 0:
            raise CheckFailed("the API server accepted a Deployment with replicas: two in a dry run")
    finally:
        for ns in (release_ns, tenant_ns):
            kubectl(["delete", "namespace", ns, "--wait=false"], check=False)
    return applied


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-manifests", action="store_true", help="rewrite deploy/manifests first")
    parser.add_argument("--no-kubectl", action="store_true", help="skip the API-server dry run")
    parser.add_argument("--render-json", metavar="VALUES", help="only print the rendering with these JSON values")
    parser.add_argument("--namespace", default=NAMESPACE, help="release namespace for --render-json")
    parser.add_argument("--release", default=RELEASE, help="release name for --render-json")
    args = parser.parse_args()
    if args.render_json is not None:
        docs = render(json.loads(args.render_json), namespace=args.namespace, release=args.release)
        print(json.dumps([obj for _, obj in docs]))
        return 0
    passed: list[str] = []
    skipped: dict[str, str] = {}

    def step(name: str, fn, *a):
        print(f"== {name}", flush=True)
        out = fn(*a)
        passed.append(name)
        return out

    if args.update_manifests:
        MANIFESTS.parent.mkdir(parents=True, exist_ok=True)
        MANIFESTS.write_text(manifests_text())
        print(f"wrote {MANIFESTS.relative_to(ROOT)}")

    full = merge(helm.Chart.load(str(CHART)).values, FULL_VALUES)
    try:
        step("lint-default", lint, None, "default values")
        step("lint-full", lint, FULL_VALUES, "every feature on")
        default_docs = step("render-default", render, None)
        full_docs = step("render-full", render, FULL_VALUES)
        step("schema-rejects-bad-values", schema_rejects)
        kinds = step("validate-default", validate_offline, default_docs, "default values")
        full_kinds = step("validate-full", validate_offline, full_docs, "every feature on")
        for want in ("Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                     "RoleBinding", "Service", "ConfigMap"):
            if want not in kinds:
                raise CheckFailed(f"the default rendering has no {want}")
        for want in ("ResourceQuota", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"):
            if want not in full_kinds:
                raise CheckFailed(f"the full rendering has no {want}")
        check_security(default_docs)
        texts = {f"default:{t}": s for t, s in render_text(None).items() if not t.endswith("NOTES.txt")}
        with helm.Chart.load(str(CHART)) as chart:
            rendered_full = chart.render(values=full, name=RELEASE, namespace=NAMESPACE)
        texts.update({f"full:{t}": s for t, s in rendered_full.items() if not t.endswith("NOTES.txt")})
        for f in ("Chart.yaml", "values.yaml", "alerts/syncmesh.rules.yml", "alerts/syncmesh.rules.test.yml"):
            texts[f] = (CHART / f).read_text()
        texts["deploy/manifests/syncmesh.yaml"] = MANIFESTS.read_text() if MANIFESTS.exists() else ""
        step("yamllint", run_yamllint, texts)
        step("manifests-up-to-date", check_manifests)
        step("dashboard-up-to-date", check_dashboard)
        step("dashboard-model", check_dashboard_model)
        if args.no_kubectl:
            skipped["kubectl-dry-run"] = "--no-kubectl"
        elif not os.environ.get("KUBECONFIG"):
            skipped["kubectl-dry-run"] = "KUBECONFIG not set (start the kube-apiserver service)"
        elif not shutil.which("kubectl"):
            skipped["kubectl-dry-run"] = "kubectl not on PATH"
        else:
            applied = step("kubectl-dry-run", server_dry_run)
            print(f"  server accepted: {', '.join(applied)}")
    except CheckFailed as e:
        print(f"FAILED: {e}", flush=True)
        print(json.dumps({"passed": passed, "skipped": skipped, "failed": str(e).splitlines()[0]}))
        return 1
    print(json.dumps({"passed": passed, "skipped": skipped}))
    return 0


def check_security(docs: list[tuple[str, dict]]) -> None:
    """The operator pod runs non-root, read-only, without capabilities, with probes and limits."""
    deployments = [o for _, o in docs if o["kind"] == "Deployment"]
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        if pod.get("securityContext", {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
            raise CheckFailed(f"{d['metadata']['name']}: seccomp profile is not RuntimeDefault")
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            raise CheckFailed(f"{d['metadata']['name']}: pod may run as root")
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
                    and sc.get("capabilities", {}).get("drop") == ["ALL"]):
                raise CheckFailed(f"{c['name']}: not read-only / no-escalation / drop ALL: {sc}")
            if not (c.get("livenessProbe") and c.get("readinessProbe")):
                raise CheckFailed(f"{c['name']}: probes missing")
            res = c.get("resources", {})
            if not (res.get("requests") and res.get("limits")):
                raise CheckFailed(f"{c['name']}: requests and limits missing")
            if not any(a.startswith("--lease-name=") for a in c.get("args", [])):
                raise CheckFailed(f"{c['name']}: no leader-election Lease argument")


def check_manifests() -> None:
    want = manifests_text()
    have = MANIFESTS.read_text() if MANIFESTS.exists() else ""
    if have != want:
        raise CheckFailed(
            "deploy/manifests/syncmesh.yaml is not the chart's default rendering: run "
            "`~/.cache/syncmesh/venv/bin/python tests/chart/check_chart.py --update-manifests`"
        )
    for doc in yaml.safe_load_all(have):
        if doc and doc.get("kind") != "Namespace" and doc["metadata"].get("namespace") not in (None, NAMESPACE):
            raise CheckFailed(f"{doc['kind']}/{doc['metadata']['name']} in namespace {doc['metadata']['namespace']}")


def check_dashboard() -> None:
    have = (CHART / "dashboards/syncmesh.json").read_text()
    if have != gen_dashboard.render():
        raise CheckFailed("charts/syncmesh/dashboards/syncmesh.json is stale: run python3 tests/chart/gen_dashboard.py")
    # The ConfigMap carries the file byte for byte.
    cm = [o for _, o in render(None) if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    if len(cm) != 1 or cm[0]["data"]["syncmesh.json"] != have.rstrip("\n"):
        raise CheckFailed("the dashboard ConfigMap does not carry dashboards/syncmesh.json")
    if cm[0]["metadata"]["labels"].get("grafana_dashboard") != "1":
        raise CheckFailed("the dashboard ConfigMap lacks the grafana_dashboard: \"1\" label")


def check_dashboard_model() -> None:
    """Grafana cannot run here; its dashboard model (the schema Grafana's SDKs are generated
    from) must read the JSON and write every field back unchanged."""
    data = json.loads((CHART / "dashboards/syncmesh.json").read_text())
    model = GrafanaDashboard.from_json(data)
    back = json.loads(json.dumps(model, cls=GrafanaEncoder))
    problems: list[str] = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in a:
                if k not in b:
                    problems.append(f"{path}/{k} dropped by the model")
                else:
                    walk(a[k], b[k], f"{path}/{k}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{path}[{i}]")
        elif a != b:
            problems.append(f"{path}: {a!r} read back as {b!r}")

    walk(data, back, "")
    if problems:
        raise CheckFailed("the dashboard does not fit Grafana's model:\n" + "\n".join(problems))
    ids = [p["id"] for p in data["panels"]]
    if len(set(ids)) != len(ids):
        raise CheckFailed(f"duplicate panel ids: {ids}")
    for p in data["panels"]:
        if p["type"] == "row":
            continue
        refs = [t["refId"] for t in p.get("targets", [])]
        if not refs or len(set(refs)) != len(refs):
            raise CheckFailed(f"panel {p['title']!r}: no query, or duplicate refIds {refs}")


if __name__ == "__main__":
    sys.exit(main())
