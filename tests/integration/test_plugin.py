"""`kubectl modelrollout` steers a rollout without editing its spec: promote, pause, resume, abort, retry, explain."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from lab_watch import start_stable
from modelrollout_lab import scenarios
from modelrollout.plugin import main as plugin

pytestmark = pytest.mark.lab


def kubectl_modelrollout(lab, *args):
    result = CliRunner().invoke(plugin, ["--kubeconfig", lab.kubeconfig, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_manual_gate_pause_resume_and_promote_without_touching_the_spec(lab):
    v1 = start_stable(lab, "gated", rps=300, min_samples=100, steps=[{"weight": 25}, {"weight": 60, "hold": "3s"}])
    lab.apply(scenarios.release(v1, "2.0.0"))
    status = lab.wait_for(lambda: (s := lab.status("gated")).get("phase") == "Paused" and s, timeout=60,
                          what="the manual gate")
    generation = lab.rollout("gated")["metadata"]["generation"]
    assert status["currentStep"] == 0 and "waits for promote" in status["message"]

    kubectl_modelrollout(lab, "pause", "gated")
    lab.wait_for(lambda: "paused by user" in lab.status("gated").get("message", ""), timeout=20, what="pause")
    kubectl_modelrollout(lab, "promote", "gated")  # a promote while paused waits for resume
    kubectl_modelrollout(lab, "resume", "gated")
    status = lab.wait_for(lambda: (s := lab.status("gated")).get("phase") == "Succeeded"
                          and (s.get("history") or [{}])[0].get("result") == "Promoted" and s, timeout=60,
                          what="promotion through the gate")
    assert lab.rollout("gated")["metadata"]["generation"] == generation  # the spec was never written
    assert "Promoted" in kubectl_modelrollout(lab, "explain", "gated")


def test_abort_then_retry(lab):
    v1 = start_stable(lab, "steer", rps=300, min_samples=100, steps=[{"weight": 25, "hold": "60s"}])
    lab.apply(scenarios.release(v1, "2.0.0"))
    lab.wait_for(lambda: lab.status("steer").get("canaryWeight") == 25, timeout=60, what="step 0")
    kubectl_modelrollout(lab, "abort", "steer")
    status = lab.wait_for_phase("steer", "RolledBack", timeout=20)
    assert "aborted by user" in status["message"] and status["canaryWeight"] == 0
    kubectl_modelrollout(lab, "retry", "steer")
    status = lab.wait_for(lambda: (s := lab.status("steer")).get("canaryWeight") == 25 and s, timeout=60,
                          what="the retried canary")
    assert status["canaryRevision"] == status["history"][0]["revision"]
    out = kubectl_modelrollout(lab, "get", "steer")
    assert "steer: Progressing" in out and "weight 25%" in out
