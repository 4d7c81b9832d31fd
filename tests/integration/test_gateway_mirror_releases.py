"""A mirror step through the gatewayAPI router with the real operator: a canary whose predictions
drift is rolled back on mirrored copies (a RequestMirror filter), having served no user."""

from __future__ import annotations

import pytest

from lab_watch import Recorder, route_canary_weight, start_stable
from modelrollout.names import LABEL_REVISION, LABEL_ROLLOUT
from modelrollout_lab import scenarios

pytestmark = pytest.mark.lab

DRIFT = [{"name": "prediction-drift", "max": 0.1, "minSamples": 200},
         {"name": "error-rate", "max": 0.02}, {"name": "latency-p95", "max": 0.2}]


def _mirror_percent(lab, name):
    route = lab.custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", "default", "httproutes", name)
    return next((f["requestMirror"].get("percent") for f in route["spec"]["rules"][0].get("filters") or []
                 if f.get("type") == "RequestMirror"), None)


def test_a_drifting_canary_is_rolled_back_in_its_mirror_step_through_an_httproute(lab):
    v1 = start_stable(lab, "gw-shadow", router="gatewayAPI", metrics=DRIFT, rps=400, min_samples=300,
                      steps=[{"mirror": 100, "hold": "20s"}, {"weight": 50, "hold": "4s"}])
    with Recorder(lambda: route_canary_weight(lab, "gw-shadow")) as weights, \
            Recorder(lambda: _mirror_percent(lab, "gw-shadow")) as mirrors:
        lab.apply(scenarios.release(v1, "2.0.0", {"score-mean": "0.55"}))
        canary = lab.wait_for(lambda: lab.status("gw-shadow").get("canaryRevision"), timeout=20, what="the canary")
        status = lab.wait_for_phase("gw-shadow", "RolledBack", timeout=60)
        lab.wait_for(lambda: _mirror_percent(lab, "gw-shadow") is None, timeout=10, what="the mirror filter removed")
    assert "prediction-drift" in status["message"]
    deployment = next(d.metadata.name for d in lab.apps.list_namespaced_deployment(
        "default", label_selector=f"{LABEL_ROLLOUT}=gw-shadow").items if d.metadata.labels[LABEL_REVISION] == canary)
    totals = lab.traffic.snapshot()[f"default/{deployment}"]
    assert totals["requests"] == 0 and totals["mirrored"] > 300
    assert set(weights.values) == {0} and 100 in mirrors.values
