"""What GitOps tools read from rollouts the real operator drives in the lab: the Argo CD health check
(docs/argocd-health.lua under Lua 5.1) and kstatus conditions through `kubectl wait` (as Flux reads them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab_watch import start_stable
from modelrollout_lab import scenarios
from modelrollout.plugin import main as plugin

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_argocd_health import argo_health  # noqa: E402  (one Lua runner for the unit and lab tests)

pytestmark = pytest.mark.lab


def kubectl_wait(lab, name, condition, timeout="1s"):
    kubectl = Path(sys.executable).with_name("kubectl")
    return subprocess.run([str(kubectl), "wait", f"modelrollout/{name}", f"--for=condition={condition}",
                           f"--timeout={timeout}"], env={**os.environ, "KUBECONFIG": lab.kubeconfig},
                          capture_output=True, text=True)


def health(lab, name):
    obj = lab.rollout(name)
    return argo_health(obj.get("status"), generation=obj["metadata"]["generation"])


def steer(lab, *args):
    result = CliRunner().invoke(plugin, [*args, "--kubeconfig", lab.kubeconfig])
    assert result.exit_code == 0, result.output


def test_health_through_a_release_that_is_paused_then_aborted(lab):
    v1 = start_stable(lab, "health", rps=300, min_samples=100, replicas=4, steps=[{"weight": 25, "hold": "60s"}])
    assert health(lab, "health")[0] == "Healthy"
    assert kubectl_wait(lab, "health", "Ready").returncode == 0

    lab.apply(scenarios.release(v1, "2.0.0"))
    lab.wait_for(lambda: lab.status("health").get("canaryWeight") == 25, timeout=60, what="step 0")
    assert health(lab, "health")[0] == "Progressing"
    assert kubectl_wait(lab, "health", "Reconciling").returncode == 0
    assert kubectl_wait(lab, "health", "Ready").returncode != 0  # kubectl wait times out: not ready

    steer(lab, "pause", "health")
    lab.wait_for_phase("health", "Paused", timeout=20)
    assert health(lab, "health")[0] == "Suspended"

    steer(lab, "abort", "health")
    status = lab.wait_for_phase("health", "RolledBack", timeout=20)
    assert health(lab, "health") == ("Degraded", status["message"])
    assert kubectl_wait(lab, "health", "Stalled").returncode == 0  # Flux fails the Kustomization at once


def test_an_invalid_spec_is_degraded(lab):
    lab.apply(scenarios.rollout("bad-steps", steps=[{"weight": 50}, {"weight": 10}]))
    status = lab.wait_for_phase("bad-steps", "InvalidSpec", timeout=30)
    assert health(lab, "bad-steps") == ("Degraded", status["message"])
    assert kubectl_wait(lab, "bad-steps", "Stalled").returncode == 0


@pytest.mark.parametrize("name,changes,field", [
    ("long-version", {"version": "2." * 41}, "spec.model.version"),  # a label value: 82 characters
    ("last-step-zero", {"router": "gatewayAPI", "steps": [{"weight": 0, "hold": "5s"}]}, "spec.strategy.steps[0].weight"),
])
def test_a_limit_is_invalid_spec_at_once_and_stalled(lab, name, changes, field):
    """Issue 22: beyond a limit the rollout is InvalidSpec naming the field when the spec is read, and
    Stalled, so `kubectl wait --for=condition=Stalled` returns instead of hanging (the old code tried
    the write, got a 422, and stayed Initializing, or waited forever at weight 0)."""
    lab.apply(scenarios.rollout(name, **changes))
    status = lab.wait_for_phase(name, "InvalidSpec", timeout=30)
    assert field in status["message"], status["message"]
    assert kubectl_wait(lab, name, "Stalled", timeout="5s").returncode == 0


def test_a_rollout_with_a_70_character_name_becomes_stable_and_is_released(lab):
    """Issue 22: a custom resource's name may have 253 characters; the operator's labels made from it are
    shortened, so its Deployments and Services are created, their watch events reach the rollout's daemon,
    its pods' series answer the preset's queries, and `kubectl wait --for=condition=Ready` returns (the
    old code: a 422 on every write, Initializing for ever, Stalled=False)."""
    name = "fraud-detector-for-the-european-card-payments-team-eu-west-1-canary-v2"
    docs = scenarios.manifests(name, rps=400, min_samples=300)
    v1 = docs[-1]
    v1["spec"]["selector"]["matchLabels"] = v1["spec"]["template"]["metadata"]["labels"] = {"app": "fraud"}
    for doc in docs:
        lab.apply(doc)
    lab.wait_for_phase(name, "Succeeded", timeout=60)
    assert kubectl_wait(lab, name, "Ready", timeout="5s").returncode == 0
    lab.apply(scenarios.release(v1, "2.0.0"))
    status = lab.wait_for(lambda: (s := lab.status(name)).get("history", [{}])[0].get("result") == "Promoted" and s,
                          timeout=90, what="promotion")
    assert status["phase"] == "Succeeded" and status["modelVersion"] == "2.0.0", status
