"""The Helm chart, rendered and linted by the real Helm engine (helm-python-sdk embeds Helm v4).

Every rendered manifest is validated against the Kubernetes OpenAPI schemas of several
Kubernetes versions (kubernetes-validate, strict: unknown fields fail). The Prometheus
Operator and Kopf peering kinds have no schema there: they are checked structurally,
and the PrometheusRule's groups go through `promtool check rules` and `promtool test rules`.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is in the [test] extra")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "modelrollout"
RELEASE = "mr"
NAMESPACE = "modelrollout-system"
FULLNAME = "mr-modelrollout"

# Kinds whose schemas kubernetes-validate does not ship (CRD-defined): checked structurally.
NOT_IN_KUBERNETES_SCHEMAS = {"ServiceMonitor", "PrometheusRule", "ClusterKopfPeering", "KopfPeering"}
KUBE_VERSIONS = sorted({"1.30.0", "1.31.0", kubernetes_validate.latest_version()})

SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "peering": {"peering": {"enabled": True}, "replicas": 2},
    "peering-namespaced": {
        "peering": {"enabled": True, "name": "shard-a"},
        "replicas": 3,
        "watchNamespaces": ["team-a"],
    },
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    },
    "prometheus-secrets": {
        "prometheus": {
            "address": "https://prometheus.monitoring.svc:9091",
            "bearerTokenSecret": {"name": "prom-token", "key": "token"},
            "caSecret": {"name": "prom-ca", "key": "ca.crt"},
        },
        "logFormat": "plain",
        "logLevel": "debug",
    },
    "sharded": {
        "labelSelector": "modelrollout.io/shard=a",
        "image": {"digest": "sha256:" + "a" * 64},
        "rbac": {"gatewayAPI": False, "istio": False, "kserve": False},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "podAnnotations": {"example.com/team": "ml-platform"},
        "extraEnv": [{"name": "EXTRA", "value": "1"}],
    },
}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Render like `helm template mr helm/modelrollout -n modelrollout-system`, parsed."""
    manifests = chart.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (operator,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return operator


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request, chart):
    return request.param, render(chart, SCENARIOS[request.param])


# --- Helm itself ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_helm_lint_is_clean(name):
    report = helm.lint(CHART, copy.deepcopy(SCENARIOS[name]), strict=True, namespace=NAMESPACE)
    findings = [m for m in report["messages"] if m["severity"] >= 2]  # 2 = warning, 3 = error
    assert not report["errors"] and not findings, report


def test_default_values_match_the_schema(chart):
    assert chart.schema is not None
    chart.validate_schema(chart.values)


@pytest.mark.parametrize(
    "values",
    [
        {"logFormat": "xml"},
        {"watchNamespaces": ["Not_A_Namespace"]},
        {"prometheus": {"address": "prometheus:9090"}},
        {"rbac": {"extraRules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]}},
        {"watchnamespaces": ["typo"]},
    ],
    ids=["log-format", "namespace-name", "address-scheme", "wildcard-extra-rule", "unknown-key"],
)
def test_schema_rejects_bad_values(chart, values):
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_several_replicas_need_peering(chart):
    with pytest.raises(helm.HelmError, match="peering"):
        chart.render({"replicas": 2}, name=RELEASE, namespace=NAMESPACE)
    with pytest.raises(helm.HelmError, match="twice"):
        chart.render({"watchNamespaces": ["a", "a"]}, name=RELEASE, namespace=NAMESPACE)


# --- Kubernetes schemas -----------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_rendered_manifests_validate(scenario, version):
    _name, docs = scenario
    assert docs
    for doc in docs:
        if doc["kind"] in NOT_IN_KUBERNETES_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {where}: {exc.message}")


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_chart_crds_validate(chart, version):
    crds = [doc for entry in chart.crds for doc in yaml.safe_load_all(entry["data"]) if doc]
    names = {crd["metadata"]["name"] for crd in crds}
    assert names == {
        "modelrollouts.modelrollout.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    for crd in crds:
        kubernetes_validate.validate(crd, version, strict=True)


def test_chart_crd_is_a_byte_identical_copy():
    source = (ROOT / "crds" / "modelrollout.yaml").read_bytes()
    copied = (CHART / "crds" / "modelrollout.yaml").read_bytes()
    assert copied == source, "run: cp crds/modelrollout.yaml helm/modelrollout/crds/modelrollout.yaml"


def test_every_object_is_labelled_and_namespaced_correctly(scenario):
    _name, docs = scenario
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in doc["metadata"]
        else:
            assert doc["metadata"]["namespace"]


# --- RBAC -------------------------------------------------------------------------------------

OPERATOR_NEEDS = {
    ("modelrollout.io", "modelrollouts"): {"get", "list", "watch", "patch"},
    ("modelrollout.io", "modelrollouts/status"): {"get", "patch", "update"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "watch", "patch", "update"},
    ("networking.istio.io", "virtualservices"): {"get", "list", "watch", "patch", "update"},
    ("serving.kserve.io", "inferenceservices"): {"get", "list", "watch", "patch", "update"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    # Notifications: one Secret, by name (notifications.secretNames), read only.
    ("", "secrets", ("modelrollout-notifications",)): {"get"},
}
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACES = ("", "namespaces")
CLUSTER_PEERINGS = ("kopf.dev", "clusterkopfpeerings")
PEERINGS = ("kopf.dev", "kopfpeerings")


def grants(role: dict[str, Any]) -> dict[tuple[Any, ...], set[str]]:
    """(apiGroup, resource) -> verbs, merged over the role's rules; a rule limited to named objects
    is keyed (apiGroup, resource, names)."""
    merged: dict[tuple[Any, ...], set[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule, rule
        names = tuple(rule.get("resourceNames") or ())
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                merged.setdefault((group, resource, names) if names else (group, resource), set()).update(rule["verbs"])
    return merged


def test_rbac_has_no_wildcards(scenario):
    _name, docs = scenario
    roles = of_kind(docs, "ClusterRole") + of_kind(docs, "Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                for item in rule.get(field, []):
                    assert "*" not in item, f"{role['kind']}/{role['metadata']['name']}: {field} {item}"


def test_cluster_wide_rbac_is_exactly_what_the_operator_uses(chart):
    docs = render(chart, {})
    assert not of_kind(docs, "Role") and not of_kind(docs, "RoleBinding")
    role = one(docs, "ClusterRole")
    expected = dict(OPERATOR_NEEDS)
    expected[CRDS] = {"get", "list", "watch"}
    expected[NAMESPACES] = {"list", "watch"}
    assert grants(role) == expected
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    ]
    assert one(docs, "ServiceAccount")["metadata"]["name"] == FULLNAME
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == FULLNAME
    assert not [a for a in container(docs)["args"] if a.startswith(("--namespace", "--peering"))]


def test_namespaced_mode_uses_a_role_per_namespace(chart):
    docs = render(chart, SCENARIOS["namespaced"])
    roles = of_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert grants(role) == OPERATOR_NEEDS
    bindings = of_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == NAMESPACE
    # The one cluster-scoped grant left: read-only CRD discovery for Kopf. No namespaces.
    (crd_role,) = of_kind(docs, "ClusterRole")
    assert grants(crd_role) == {CRDS: {"get", "list", "watch"}}
    args = container(docs)["args"]
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]

    without_discovery = render(chart, {**SCENARIOS["namespaced"], "rbac": {"crdDiscovery": False}})
    assert not of_kind(without_discovery, "ClusterRole")
    assert not of_kind(without_discovery, "ClusterRoleBinding")


def test_rbac_can_be_left_to_the_cluster_admin(chart):
    docs = render(chart, {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops"}})
    kinds = {doc["kind"] for doc in docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"}
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


def test_router_grants_are_optional(chart):
    role = one(render(chart, SCENARIOS["sharded"]), "ClusterRole")
    assert ("gateway.networking.k8s.io", "httproutes") not in grants(role)
    assert ("networking.istio.io", "virtualservices") not in grants(role)
    assert ("serving.kserve.io", "inferenceservices") not in grants(role)


def test_notification_secrets_are_read_by_name_only(chart):
    role = one(render(chart, {"notifications": {"secretNames": ["team-a-alerts", "pager"]}}), "ClusterRole")
    secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert secret_rules == [{"apiGroups": [""], "resources": ["secrets"],
                             "resourceNames": ["team-a-alerts", "pager"], "verbs": ["get"]}]
    none = one(render(chart, {"notifications": {"secretNames": []}}), "ClusterRole")
    assert not [r for r in none["rules"] if "secrets" in r["resources"]]


def test_notification_link_is_passed_as_a_flag_the_operator_accepts(chart):
    from modelrollout.cli import run

    link = "https://grafana.example.com/d/modelrollout/modelrollout?var-namespace={namespace}&var-rollout={name}" \
           "&from={from}&to={to}"
    args = container(render(chart, {"notifications": {"link": link}}))["args"]
    assert f"--notification-link={link}" in args
    assert run.make_context("run", list(args)).params["notification_link"] == link  # the operator's own parser
    assert not [a for a in container(render(chart, {}))["args"] if a.startswith("--notification-link")]
    with pytest.raises(helm.HelmValuesError):
        chart.render({"notifications": {"link": "grafana/{name}"}}, name=RELEASE, namespace=NAMESPACE)


def test_the_longest_call_a_spec_may_set_is_passed_as_a_flag_the_operator_accepts(chart):
    from modelrollout.cli import run

    for values, flag, seconds in (({}, "--max-call-timeout=60s", 60.0),
                                  ({"maxCallTimeout": "2m"}, "--max-call-timeout=2m", 120.0)):
        args = container(render(chart, values))["args"]
        assert [a for a in args if a.startswith("--max-call-timeout")] == [flag]
        assert run.make_context("run", list(args)).params["max_call_timeout"] == seconds  # the operator's own parser
    with pytest.raises(helm.HelmValuesError):
        chart.render({"maxCallTimeout": "two minutes"}, name=RELEASE, namespace=NAMESPACE)


def test_notification_url_policy_is_passed_as_flags(chart):
    default = [a for a in container(render(chart, {}))["args"] if a.startswith("--allowed-notification-urls")]
    assert "--allowed-notification-urls=https://hooks.slack.com/services/*" in default
    assert "--allowed-notification-urls=https://events.pagerduty.com/v2/enqueue" in default
    custom = render(chart, {"notifications": {"allowedURLs": ["https://hooks.example.com/*"]}})
    assert [a for a in container(custom)["args"] if a.startswith("--allowed-notification-urls")] == [
        "--allowed-notification-urls=https://hooks.example.com/*"]
    nothing = render(chart, {"notifications": {"allowedURLs": []}})
    assert [a for a in container(nothing)["args"] if a.startswith("--allowed-notification-urls")] == [
        "--allowed-notification-urls="]


def test_extra_rules_are_appended(chart):
    extra = {"apiGroups": ["split.smi-spec.io"], "resources": ["trafficsplits"], "verbs": ["get", "patch"]}
    role = one(render(chart, {"rbac": {"extraRules": [extra]}}), "ClusterRole")
    assert grants(role)[("split.smi-spec.io", "trafficsplits")] == {"get", "patch"}


# --- The operator's pod -----------------------------------------------------------------------


def test_pod_security(scenario):
    _name, docs = scenario
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(docs)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in sc or sc["privileged"] is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    # The read-only root needs exactly one writable place: /tmp, an emptyDir (HOME points there).
    mounts = {m["name"]: m for m in container(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert "emptyDir" in volumes["tmp"]
    env = {e["name"]: e for e in container(docs)["env"]}
    assert env["HOME"]["value"] == "/tmp"
    for name, mount in mounts.items():
        if name != "tmp":
            assert mount.get("readOnly") is True, name


def test_operator_deployment_shape(chart):
    docs = render(chart, {})
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    op = container(docs)
    assert op["image"] == "ghcr.io/modelrollout/modelrollout:" + chart.metadata["appVersion"]
    assert op["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-healthz"}
    ports = {p["name"]: p["containerPort"] for p in op["ports"]}
    assert ports == {"http-healthz": 8080, "http-metrics": 9090}
    assert "--liveness=http://0.0.0.0:8080/healthz" in op["args"]
    assert "--metrics-port=9090" in op["args"]
    assert "--log-format=json" in op["args"]
    assert "--log-level=info" in op["args"]
    assert set(op["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(op["resources"]["requests"])
    assert {"cpu", "memory"} <= set(op["resources"]["limits"])
    env = {e["name"]: e for e in op["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert not {"MODELROLLOUT_PROMETHEUS_URL", "MODELROLLOUT_PROMETHEUS_TOKEN_FILE"} & set(env)
    # The metrics Service reaches the pod's metrics port.
    service = one(docs, "Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http-metrics"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_prometheus_address_token_and_ca_are_wired_as_files(chart):
    docs = render(chart, SCENARIOS["prometheus-secrets"])
    op = container(docs)
    env = {e["name"]: e.get("value") for e in op["env"]}
    assert env["MODELROLLOUT_PROMETHEUS_URL"] == "https://prometheus.monitoring.svc:9091"
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in op["volumeMounts"]}
    for env_name, volume, secret, key in (
        ("MODELROLLOUT_PROMETHEUS_TOKEN_FILE", "prometheus-token", "prom-token", "token"),
        ("MODELROLLOUT_PROMETHEUS_CA_FILE", "prometheus-ca", "prom-ca", "ca.crt"),
    ):
        assert volumes[volume]["secret"]["secretName"] == secret
        assert volumes[volume]["secret"]["items"] == [{"key": key, "path": key}]
        assert env[env_name] == f"{mounts[volume]}/{key}"
    assert "--log-format=plain" in op["args"] and "--log-level=debug" in op["args"]


def test_sharding_by_label_selector_and_image_digest(chart):
    docs = render(chart, SCENARIOS["sharded"])
    op = container(docs)
    assert "--selector=modelrollout.io/shard=a" in op["args"]
    assert op["image"] == "ghcr.io/modelrollout/modelrollout@sha256:" + "a" * 64


def test_peering_cluster_wide(chart):
    docs = render(chart, SCENARIOS["peering"])
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    args = container(docs)["args"]
    assert "--peering" in args and f"--peering-name={FULLNAME}" in args
    peering = one(docs, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert peering["metadata"]["name"] == FULLNAME
    assert grants(one(docs, "ClusterRole"))[CLUSTER_PEERINGS] == {"get", "list", "watch", "patch"}


def test_peering_namespaced(chart):
    docs = render(chart, SCENARIOS["peering-namespaced"])
    assert "--peering-name=shard-a" in container(docs)["args"]
    (peering,) = of_kind(docs, "KopfPeering")
    assert peering["metadata"] == {**peering["metadata"], "name": "shard-a", "namespace": "team-a"}
    assert not of_kind(docs, "ClusterKopfPeering")
    (role,) = of_kind(docs, "Role")
    assert grants(role)[PEERINGS] == {"get", "list", "watch", "patch"}


def test_no_peering_objects_or_grants_without_peering(chart):
    for values in ({}, SCENARIOS["namespaced"]):
        docs = render(chart, values)
        assert not of_kind(docs, "ClusterKopfPeering") and not of_kind(docs, "KopfPeering")
        for role in of_kind(docs, "ClusterRole") + of_kind(docs, "Role"):
            assert not {CLUSTER_PEERINGS, PEERINGS} & set(grants(role))


# --- Prometheus Operator objects --------------------------------------------------------------


def test_monitoring_objects_are_off_by_default(chart):
    kinds = {doc["kind"] for doc in render(chart, {})}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}


def test_service_monitor_selects_the_metrics_service(chart):
    docs = render(chart, SCENARIOS["monitoring"])
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # keep the rollout's own `namespace` label
    assert set(monitor["spec"]) <= {"jobLabel", "namespaceSelector", "selector", "endpoints"}


def prometheus_rule(chart) -> dict[str, Any]:
    return one(render(chart, SCENARIOS["monitoring"]), "PrometheusRule")


def test_prometheus_rule_structure(chart):
    rule = prometheus_rule(chart)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    (group,) = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert {"ModelRolloutRolledBack", "ModelRolloutStuck"} <= set(alerts)
    assert alerts["ModelRolloutRolledBack"]["expr"] == "increase(modelrollout_rollbacks_total[10m]) > 0"
    assert "modelrollout_rollout_phase_since_seconds" in alerts["ModelRolloutStuck"]["expr"]
    for alert in alerts.values():
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}
        assert alert["labels"]["severity"]
        assert alert["annotations"]["summary"]


def test_alerts_use_only_metrics_the_operator_exports(chart):
    from modelrollout import metrics  # noqa: PLC0415 - the package under test

    exported = metrics.exposition()
    (group,) = prometheus_rule(chart)["spec"]["groups"]
    for rule in group["rules"]:
        for series in ("modelrollout_rollbacks_total", "modelrollout_rollout_phase_since_seconds"):
            if series in rule["expr"]:
                assert f"# TYPE {series} " in exported


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not on PATH (Debian package `prometheus`; `make test` installs it)")
    return path


def write_rules(chart, tmp_path: Path) -> Path:
    rules_file = tmp_path / "modelrollout-rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": prometheus_rule(chart)["spec"]["groups"]}))
    return rules_file


def test_prometheus_rule_passes_promtool_check(chart, tmp_path):
    rules_file = write_rules(chart, tmp_path)
    result = subprocess.run(
        [promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_alerts_fire_on_the_operators_series(chart, tmp_path):
    """`promtool test rules`: the alerts fire on the series metrics.py exports, and only then."""
    rules_file = write_rules(chart, tmp_path)
    tests = tmp_path / "modelrollout-rules-test.yaml"
    tests.write_text(
        textwrap.dedent(
            f"""\
            rule_files: [{rules_file.name}]
            evaluation_interval: 1m
            tests:
              - interval: 1m
                input_series:
                  - series: 'modelrollout_rollbacks_total{{namespace="ml",name="fraud"}}'
                    values: '0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
                  - series: 'modelrollout_rollbacks_total{{namespace="ml",name="ranker"}}'
                    values: '0x20'
                  # "slow" entered Progressing at t=0 and stays; "done" finished (not alerted)
                  - series: 'modelrollout_rollout_phase_since_seconds{{namespace="ml",name="slow",phase="Progressing"}}'
                    values: '0x80'
                  - series: 'modelrollout_rollout_phase_since_seconds{{namespace="ml",name="done",phase="Succeeded"}}'
                    values: '0x80'
                  - series: 'up{{service="{FULLNAME}-metrics",namespace="{NAMESPACE}"}}'
                    values: '1x80'
                alert_rule_test:
                  - eval_time: 5m
                    alertname: ModelRolloutRolledBack
                    exp_alerts:
                      - exp_labels: {{severity: warning, namespace: ml, name: fraud}}
                        exp_annotations:
                          summary: "ModelRollout ml/fraud rolled back"
                          description: "The canary of ml/fraud was rolled back; traffic is on the stable revision. See: kubectl -n ml describe modelrollout fraud"
                  - eval_time: 19m
                    alertname: ModelRolloutRolledBack
                    exp_alerts: []
                  - eval_time: 30m
                    alertname: ModelRolloutStuck
                    exp_alerts: []
                  - eval_time: 70m
                    alertname: ModelRolloutStuck
                    exp_alerts:
                      - exp_labels: {{severity: warning, namespace: ml, name: slow, phase: Progressing}}
                        exp_annotations:
                          summary: "ModelRollout ml/slow is stuck in Progressing"
                          description: "ml/slow has been Progressing for more than 3600 seconds: a manual gate waiting for promote, a pause, or analysis without data. See: kubectl -n ml modelrollout explain slow"
                  - eval_time: 70m
                    alertname: ModelRolloutOperatorDown
                    exp_alerts: []
            """
        )
    )
    result = subprocess.run(
        [promtool(), "test", "rules", str(tests)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- The chart and the operator's command line agree ------------------------------------------


def test_rendered_arguments_are_accepted_by_the_operator_cli(scenario):
    """Every flag the chart passes to `modelrollout run` exists there (click parses, nothing runs)."""
    click = pytest.importorskip("click")
    from modelrollout import cli  # noqa: PLC0415 - the package under test

    _name, docs = scenario
    op = container(docs)
    try:
        cli.run.make_context("run", list(op["args"]))
    except click.UsageError as exc:
        pytest.fail(f"`modelrollout run {' '.join(op['args'])}`: {exc.format_message()}")


def test_platform_policy_becomes_the_operators_flags(chart):
    """Which Prometheus addresses and webhooks a ModelRollout may name, and the identity of gate pods."""
    assert not [a for a in container(render(chart, {}))["args"]
                if a.startswith(("--allowed-prometheus-urls", "--allowed-webhook-urls", "--gate-"))]
    docs = render(chart, {"prometheus": {"allowedAddresses": ["http://thanos.monitoring:9090"]},
                          "gates": {"allowedWebhookURLs": ["https://gates.example.com/*"],
                                    "serviceAccount": "modelrollout-gates", "automountServiceAccountToken": True}})
    args = container(docs)["args"]
    for flag in ("--allowed-prometheus-urls=http://thanos.monitoring:9090",
                 "--allowed-webhook-urls=https://gates.example.com/*",
                 "--gate-service-account=modelrollout-gates", "--gate-service-account-token"):
        assert flag in args
