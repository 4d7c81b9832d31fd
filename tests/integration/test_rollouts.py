"""The operator, as a real process against the lab, releases models the way a user expects."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelrollout_lab import scenarios

from lab_watch import Recorder, events_of, route_canary_weight, start_stable

pytestmark = pytest.mark.lab

# Enough canary requests per judged interval that 5% errors cannot hide (see docs/analysis.md).
SAMPLED = {"rps": 400, "min_samples": 300}
ERRORS = [{"name": "error-rate", "max": 0.01, "critical": True}]


def test_healthy_canary_is_promoted_and_route_weights_follow_the_plan(lab):
    v1 = start_stable(lab, "healthy", router="gatewayAPI", **SAMPLED)
    with Recorder(lambda: route_canary_weight(lab, "healthy")) as weights:
        lab.apply(scenarios.release(v1, "2.0.0"))
        status = lab.wait_for(lambda: (s := lab.status("healthy")).get("phase") == "Succeeded"
                              and s.get("stableRevision") != v1["spec"]["template"] and s.get("history", [{}])[0]
                              .get("result") == "Promoted" and s, timeout=90, what="promotion")
        lab.wait_for(lambda: route_canary_weight(lab, "healthy") == 0, timeout=10, what="all traffic on the new stable")
    assert weights.values == [0, 20, 50, 100, 0]  # read back from the HTTPRoute, in order: steps, watch, stable
    assert status["history"][0]["result"] == "Promoted"
    # The last analysis is the watch's, at full traffic: nothing failed (compared with a stable that
    # served no one, a metric may be undecided, which the watch ignores).
    assert status["lastAnalysis"] and all(r["verdict"] != "Fail" for r in status["lastAnalysis"])


@pytest.mark.parametrize("name,behaviour,metrics", [
    ("errors", {"error-rate": "0.05"}, ERRORS),
    ("slow", {"latency-ms": "400"}, [{"name": "latency-p95", "max": 0.25}]),
    ("dumb", {"accuracy": "0.55", "label-fraction": "0.5"}, [{"name": "quality", "min": 0.85, "minSamples": 40}]),
])
def test_bad_canary_is_rolled_back_with_an_explanation(lab, name, behaviour, metrics):
    v1 = start_stable(lab, name, metrics=metrics, **SAMPLED)
    lab.apply(scenarios.release(v1, "2.0.0", behaviour))
    lab.wait_for_phase(name, "RolledBack", timeout=60)
    # canaryWeight is what the cluster carries: 0 once the canary's pods are gone, a pass later
    status = lab.wait_for(lambda: (s := lab.status(name)).get("canaryWeight") == 0 and s, timeout=10,
                          what="the cluster to carry no canary traffic")
    assert "canaryRevision" not in status
    assert status["stableRevision"] == status["history"][-1]["revision"]  # v1 still stable
    assert metrics[0]["name"] in status["message"] and "step 0" in status["message"]
    events = lab.wait_for(lambda: events_of(lab, name, "RolledBack"), timeout=10, what="a RolledBack event")
    assert events[0].type == "Warning"


def test_five_percent_errors_roll_back_at_the_first_judged_interval(lab):
    v1 = start_stable(lab, "first", metrics=ERRORS, **SAMPLED)
    with Recorder(lambda: tuple((r["metric"], r["verdict"], r["at"]) for r in lab.status("first").get("lastAnalysis") or [])) as analyses:
        lab.apply(scenarios.release(v1, "2.0.0", {"error-rate": "0.05"}))
        lab.wait_for_phase("first", "RolledBack", timeout=60)
    judged = [a for a in analyses.values if a and a[0][1] != "Inconclusive"]
    assert judged and judged[0][0][1] == "Fail"  # no pass ever came before the failure


def test_no_traffic_holds_and_is_never_promoted(lab):
    v1 = start_stable(lab, "quiet", rps=60, no_data={"hold": "5m", "then": "rollback"})
    lab.apply({**scenarios.traffic_entry("quiet", "default", "service/quiet", 0)})
    lab.apply(scenarios.release(v1, "2.0.0"))
    lab.wait_for(lambda: lab.status("quiet").get("lastAnalysis"), timeout=30, what="an analysis")
    time.sleep(12)  # three times the steps' holds
    status = lab.status("quiet")
    assert status["phase"] == "Progressing" and status["currentStep"] == 0
    assert {r["verdict"] for r in status["lastAnalysis"]} == {"Inconclusive"}
    assert not any(h["result"] == "Promoted" for h in status.get("history") or [] if h["revision"] == status["canaryRevision"])


def test_sigkill_mid_rollout_then_restart_completes_without_repeating_or_skipping(lab):
    v1 = start_stable(lab, "crash", router="gatewayAPI", **SAMPLED,
                      steps=[{"weight": 10, "hold": "4s"}, {"weight": 30, "hold": "4s"}, {"weight": 60, "hold": "4s"}])
    with Recorder(lambda: route_canary_weight(lab, "crash")) as weights, \
            Recorder(lambda: lab.status("crash").get("currentStep")) as steps:
        lab.apply(scenarios.release(v1, "2.0.0"))
        # One read of the status: two could pair step 0's stepStartedAt with step 1's currentStep,
        # written (the decision first) before the route was.
        lab.wait_for(lambda: (s := lab.status("crash")).get("stepStartedAt") and s.get("currentStep") == 1,
                     timeout=60, what="step 1 carried by the cluster")
        lab.kill_operator(signal.SIGKILL)
        try:
            assert route_canary_weight(lab, "crash") == 30  # traffic stays where the plan had it
        finally:
            lab.start_operator()  # the module's other tests need it, whatever this one found
        status = lab.wait_for(lambda: (s := lab.status("crash")).get("phase") == "Succeeded"
                              and (s.get("history") or [{}])[0].get("result") == "Promoted" and s, timeout=90,
                              what="promotion after restart")
    assert weights.values == [0, 10, 30, 60, 100, 0]  # the steps, the promotion watch, then stable
    assert steps.values == [0, 1, 2]
    assert [h["result"] for h in status["history"]].count("Promoted") == 1


def test_invalid_spec_is_reported_while_a_valid_rollout_beside_it_completes(lab):
    valid = start_stable(lab, "neighbour", **SAMPLED)
    broken = scenarios.rollout("broken", steps=[{"weight": 50, "hold": "4s"}, {"weight": 10, "hold": "4s"}])
    lab.apply(broken)
    lab.apply(scenarios.release(valid, "2.0.0"))
    status = lab.wait_for_phase("broken", "InvalidSpec", timeout=30)
    assert "spec.strategy" in status["message"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["InvalidSpec"]["status"] == "True" and conditions["Stalled"]["status"] == "True"
    events = lab.wait_for(lambda: events_of(lab, "broken", "InvalidSpec"), timeout=10, what="an InvalidSpec event")
    assert events[0].type == "Warning" and "spec.strategy" in events[0].message
    lab.wait_for(lambda: (lab.status("neighbour").get("history") or [{}])[0].get("result") == "Promoted",
                 timeout=90, what="the neighbour's promotion")
    broken["spec"]["strategy"]["steps"] = [{"weight": 10, "hold": "4s"}]
    lab.apply(broken)  # fixing the spec recovers
    lab.wait_for_phase("broken", "Succeeded", timeout=60)


def test_template_change_mid_rollout_supersedes_the_canary(lab):
    v1 = start_stable(lab, "super", router="gatewayAPI", **SAMPLED,
                      steps=[{"weight": 20, "hold": "6s"}, {"weight": 50, "hold": "4s"}])
    v2 = scenarios.release(v1, "2.0.0")
    lab.apply(v2)
    first = lab.wait_for(lambda: (s := lab.status("super")).get("canaryWeight") == 20 and s, timeout=60, what="step 0")
    lab.apply(scenarios.release(v1, "3.0.0"))
    lab.wait_for(lambda: lab.status("super").get("canaryRevision") not in (None, first["canaryRevision"]),
                 timeout=20, what="the new canary")
    status = lab.wait_for(lambda: (s := lab.status("super")).get("phase") == "Succeeded"
                          and (s.get("history") or [{}])[0].get("result") == "Promoted" and s, timeout=90,
                          what="promotion of v3")
    results = {h["revision"]: h["result"] for h in status["history"]}
    assert results[first["canaryRevision"]] == "Superseded"
    assert status["stableRevision"] != first["canaryRevision"]
    lab.wait_for(lambda: not [d for d in lab.apps.list_namespaced_deployment("default").items
                              if d.metadata.name == f"super-{first['canaryRevision']}"], timeout=20,
                 what="the superseded canary's Deployment to go")


def test_deleting_mid_rollout_leaves_traffic_on_stable(lab):
    v1 = start_stable(lab, "gone", router="gatewayAPI", **SAMPLED,
                      steps=[{"weight": 40, "hold": "60s"}])
    lab.apply(scenarios.release(v1, "2.0.0"))
    lab.wait_for(lambda: route_canary_weight(lab, "gone") == 40, timeout=60, what="weight 40")
    logged = len(lab.operator_log())
    lab.delete_rollout("gone")
    lab.wait_for(lambda: not lab.status("gone"), timeout=30, what="the rollout to go")
    assert route_canary_weight(lab, "gone") == 0
    # Its reconcile loop ended on its own: before, kopf cancelled it and warned on every deletion.
    assert "is cancelled" not in lab.operator_log()[logged:]


def test_kubectl_get_shows_the_printer_columns(lab):
    start_stable(lab, "columns")
    kubectl = Path(sys.executable).with_name("kubectl")
    env = {**os.environ, "KUBECONFIG": lab.kubeconfig}
    out = subprocess.run([str(kubectl), "get", "modelrollouts"], env=env, capture_output=True, text=True, check=True).stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "STEP", "WEIGHT", "STABLE", "CANARY", "AGE"]
    row = next(line for line in out.splitlines() if line.startswith("columns "))
    assert "Succeeded" in row
    wide = subprocess.run([str(kubectl), "get", "mro", "-o", "wide"], env=env, capture_output=True, text=True,
                          check=True).stdout
    assert "MESSAGE" in wide.splitlines()[0] and "is stable" in wide
