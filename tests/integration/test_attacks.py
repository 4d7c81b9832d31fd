"""Issue 11 in the lab: what someone who may only create ModelRollouts can make the operator do.

The operator runs with a platform policy: its Prometheus is a recording proxy in front of the lab's
(so the test sees every header it is sent), a bearer token file, one more allowed Prometheus address
and webhook URLs allowed under `<allowed>/hook*`. Two local listeners record every request: one the
policy allows (it answers 403 with a secret body), one it does not.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from lab_watch import apply_all, events_of, start_stable
from modelrollout.names import LABEL_ROLLOUT
from modelrollout_lab import scenarios
from modelrollout_lab.lab import Lab

pytestmark = pytest.mark.lab

SECRET = "INTERNAL-ONLY: db_password=hunter2"
FIRST_TOKEN, SECOND_TOKEN = "first-token-6c1f", "second-token-9a2e"
FAST = {"rps": 300, "min_samples": 50}
GATE_ACCOUNT = "modelrollout-gates"


class Listener:
    """An HTTP server on 127.0.0.1 that records every request; forwards GETs to `upstream` if given,
    else answers 403 with SECRET."""

    def __init__(self, upstream: str | None = None) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                listener.requests.append((self.command, self.path, dict(self.headers)))
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, body = 403, SECRET.encode()
                if upstream is not None:
                    try:
                        with urllib.request.urlopen(upstream + self.path, timeout=10) as answer:
                            status, body = answer.status, answer.read()
                    except urllib.error.HTTPError as exc:
                        status, body = exc.code, exc.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if upstream else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def tokens(self) -> set[str | None]:
        return {headers.get("Authorization") for _, _, headers in self.requests}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Platform:
    lab: Lab
    prometheus: Listener  # the operator's configured Prometheus (a recording proxy)
    allowed: Listener
    forbidden: Listener
    token_file: Path


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("attacks")
    token_file = workdir / "prometheus-token"
    token_file.write_text(FIRST_TOKEN + "\n")
    allowed, forbidden = Listener(), Listener()
    with Lab(str(workdir / "lab"), seed=11) as lab:
        proxy = Listener(upstream=lab.prometheus.url)
        lab.start_operator("--prometheus-url", proxy.url, "--prometheus-token-file", str(token_file),
                           "--allowed-prometheus-urls", allowed.url,
                           "--allowed-webhook-urls", f"{allowed.url}/hook*",
                           "--gate-service-account", GATE_ACCOUNT)
        yield Platform(lab, proxy, allowed, forbidden, token_file)
        proxy.close()
    allowed.close()
    forbidden.close()


@pytest.fixture(scope="module")
def lab(platform):
    return platform.lab


def shown_anywhere(lab: Lab, name: str) -> str:
    """Everything a reader of the rollout can see: its status, every event, and the operator's log."""
    events = [e.message or "" for e in lab.core.list_namespaced_event("default").items]
    return json.dumps(lab.status(name)) + "\n".join(events) + lab.operator_log()


def invalid_because(lab: Lab, name: str, field: str) -> dict:
    status = lab.wait_for_phase(name, "InvalidSpec", timeout=30)
    assert field in status["message"], status["message"]
    events = lab.wait_for(lambda: events_of(lab, name, "InvalidSpec"), timeout=10, what="an InvalidSpec event")
    assert field in events[0].message
    return status


def test_a_prometheus_the_platform_does_not_allow_is_invalid_and_never_called(platform):
    docs = scenarios.manifests("foreign-prom")
    docs[-1]["spec"]["analysis"]["prometheus"] = {"address": f"{platform.forbidden.url}/anything"}
    apply_all(platform.lab, docs)
    invalid_because(platform.lab, "foreign-prom", "spec.analysis.prometheus.address")
    assert platform.forbidden.requests == []


def test_the_token_goes_to_the_configured_prometheus_only_and_follows_rotation(platform):
    lab = platform.lab
    v1 = start_stable(lab, "tokened", **FAST, steps=[{"weight": 50, "hold": "30s"}])
    lab.apply(scenarios.release(v1, "2.0.0"))
    lab.wait_for(lambda: f"Bearer {FIRST_TOKEN}" in platform.prometheus.tokens(), timeout=60, what="a query with the token")
    staged = platform.token_file.with_suffix(".new")  # replaced atomically, as the kubelet does
    staged.write_text(SECOND_TOKEN + "\n")
    staged.replace(platform.token_file)
    lab.wait_for(lambda: f"Bearer {SECOND_TOKEN}" in platform.prometheus.tokens(), timeout=60,
                 what="a query with the rotated token")
    assert platform.prometheus.tokens() <= {f"Bearer {FIRST_TOKEN}", f"Bearer {SECOND_TOKEN}"}


def test_an_allowed_foreign_prometheus_gets_no_token_and_its_answer_is_not_echoed(platform):
    lab = platform.lab
    v1 = start_stable(lab, "echo", **FAST, steps=[{"weight": 50, "hold": "4s"}], no_data={"hold": "4s", "then": "rollback"})
    v2 = scenarios.release(v1, "2.0.0")
    v2["spec"]["analysis"]["prometheus"] = {"address": platform.allowed.url}
    lab.apply(v2)
    status = lab.wait_for_phase("echo", "RolledBack", timeout=60)
    reasons = [result.get("reason") or "" for result in status.get("lastAnalysis") or []]
    assert any("HTTP 403" in reason for reason in reasons), status
    assert platform.allowed.requests and platform.allowed.tokens() == {None}
    assert SECRET not in shown_anywhere(lab, "echo") and "db_password" not in shown_anywhere(lab, "echo")


def test_a_webhook_the_platform_does_not_allow_is_invalid_and_never_called(platform):
    docs = scenarios.manifests("foreign-hook")
    docs[-1]["spec"]["strategy"]["gates"] = {
        "beforePromotion": [{"name": "approval", "webhook": {"url": f"{platform.forbidden.url}/hook"}}]}
    apply_all(platform.lab, docs)
    invalid_because(platform.lab, "foreign-hook", "spec.strategy.gates.beforePromotion[0].webhook.url")
    assert platform.forbidden.requests == []


def test_a_webhook_gate_may_not_wait_longer_than_the_platform_allows(platform):
    """A hung webhook would hold the rollout's step (and its analysis, abort and rollback) for its timeout,
    every retry: 5m is within the CRD's bound but above the operator's default --max-call-timeout."""
    docs = scenarios.manifests("slow-hook")
    docs[-1]["spec"]["strategy"]["gates"] = {
        "beforePromotion": [{"name": "approval", "webhook": {"url": f"{platform.allowed.url}/hook-slow", "timeout": "5m"}}]}
    apply_all(platform.lab, docs)
    status = invalid_because(platform.lab, "slow-hook", "spec.strategy.gates.beforePromotion[0].webhook.timeout")
    assert "5m" in status["message"] and "60s" in status["message"], status["message"]
    assert not [path for _, path, _ in platform.allowed.requests if path == "/hook-slow"]


def test_a_webhooks_refusal_is_a_status_code_never_its_body(platform):
    lab = platform.lab
    v1 = start_stable(lab, "hook403", **FAST, steps=[{"weight": 50, "hold": "3s"}])
    v2 = scenarios.release(v1, "2.0.0")
    v2["spec"]["strategy"]["gates"] = {
        "beforePromotion": [{"name": "approval", "webhook": {"url": f"{platform.allowed.url}/hook", "retries": 0}}]}
    lab.apply(v2)
    status = lab.wait_for_phase("hook403", "RolledBack", timeout=60)
    assert "approval" in status["message"] and "403" in status["message"]
    assert any(method == "POST" and path == "/hook" for method, path, _ in platform.allowed.requests)
    assert SECRET not in shown_anywhere(lab, "hook403") and "db_password" not in shown_anywhere(lab, "hook403")


@pytest.mark.parametrize("name,pod,container,field", [
    ("gate-sa", {"serviceAccountName": "modelrollout"}, {}, "spec.serviceAccountName"),
    ("gate-priv", {}, {"securityContext": {"privileged": True}}, "spec.containers[0].securityContext.privileged"),
    ("gate-hostnet", {"hostNetwork": True}, {}, "spec.hostNetwork"),
    ("gate-hostpath", {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
     {"volumeMounts": [{"name": "root", "mountPath": "/host"}]}, "spec.volumes[0].hostPath"),
    ("gate-token", {"volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]},
     {"volumeMounts": [{"name": "t", "mountPath": "/var/run/secrets/tokens"}]},
     "spec.volumes[0].projected.sources[0].serviceAccountToken"),
    ("gate-spc", {}, {"securityContext": {"seLinuxOptions": {"type": "spc_t"}}},
     "spec.containers[0].securityContext.seLinuxOptions.type"),
    ("gate-root", {"securityContext": {"runAsUser": 0}}, {}, "spec.securityContext.runAsUser"),
])
def test_job_gates_cannot_escalate(platform, name, pod, container, field):
    docs = scenarios.manifests(name)
    template = {"spec": {"containers": [{"name": "eval", "image": "example/eval:1", **container}], **pod}}
    docs[-1]["spec"]["strategy"]["gates"] = {"beforePromotion": [{"name": "eval", "job": {"template": template}}]}
    apply_all(platform.lab, docs)
    invalid_because(platform.lab, name, f"spec.strategy.gates.beforePromotion[0].job.template.{field}")
    jobs = client.BatchV1Api(platform.lab.core.api_client).list_namespaced_job("default").items
    assert not [job for job in jobs if job.metadata.name.startswith(name)]


def test_the_rollouts_own_pods_cannot_be_privileged(platform):
    docs = scenarios.manifests("own-priv")
    docs[-1]["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    apply_all(platform.lab, docs)
    invalid_because(platform.lab, "own-priv", "spec.template.spec.containers[0].securityContext.privileged")
    deployments = client.AppsV1Api(platform.lab.core.api_client).list_namespaced_deployment("default").items
    assert not [d for d in deployments if d.metadata.name.startswith("own-priv")]


def test_a_gate_job_runs_as_the_platform_with_no_token_and_restricted_defaults(platform):
    lab = platform.lab
    v1 = start_stable(lab, "gate-runs", **FAST, steps=[{"weight": 50, "hold": "2s"}])
    v2 = scenarios.release(v1, "2.0.0")
    v2["spec"]["strategy"]["gates"] = {"beforePromotion": [{"name": "eval", "job": {"template": {
        "metadata": {"annotations": {"lab.modelrollout.io/job-result": "succeeded", "lab.modelrollout.io/job-seconds": "1"}},
        "spec": {"containers": [{"name": "eval", "image": "example/eval:1"}]}}}}]}
    lab.apply(v2)
    jobs = client.BatchV1Api(lab.core.api_client)
    [job] = lab.wait_for(lambda: jobs.list_namespaced_job("default", label_selector=f"{LABEL_ROLLOUT}=gate-runs").items,
                         timeout=60, what="the gate's Job")
    lab.wait_for_phase("gate-runs", "Succeeded", timeout=60)
    pod = job.spec.template.spec
    assert pod.service_account_name == GATE_ACCOUNT and pod.automount_service_account_token is False
    assert pod.security_context.run_as_non_root is True and pod.security_context.seccomp_profile.type == "RuntimeDefault"
    context = pod.containers[0].security_context
    assert context.allow_privilege_escalation is False and context.capabilities.drop == ["ALL"]


@pytest.mark.parametrize("name,change,field", [
    # the value a placeholder would carry: model.version is quoted in every preset query
    ("inject-version", {"model": {"name": "m", "version": "2.0.0'} or vector(1) #"}}, "spec.model.version"),
    ("inject-unquoted", {"analysis": {"metrics": [{"name": "custom", "max": 1,
                                                   "query": "up{job='x'} or {{ model.version }}"}]}},
     "spec.analysis.metrics[0].query"),
])
def test_a_placeholder_cannot_change_a_querys_shape(platform, name, change, field):
    docs = scenarios.manifests(name)
    spec = docs[-1]["spec"]
    for key, value in change.items():
        spec[key] = {**(spec.get(key) or {}), **value}
    apply_all(platform.lab, docs)
    invalid_because(platform.lab, name, field)


def test_no_request_reached_the_forbidden_listener_and_no_token_left_the_platform(platform):
    """After everything above: the one address not allowed heard nothing, the allowed one no token."""
    assert platform.forbidden.requests == []
    assert platform.allowed.tokens() == {None}
    assert platform.prometheus.tokens() <= {f"Bearer {FIRST_TOKEN}", f"Bearer {SECOND_TOKEN}"}
