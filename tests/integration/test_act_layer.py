"""The act layer, seen by users (issue 9): it records what the cluster carries, waits for capacity,
re-plans when the steps change under it, keeps weight-0 steps dark, and says when it cannot act."""

from __future__ import annotations

import time

import pytest

from modelrollout_lab import scenarios

from lab_watch import Recorder, apply_all, events_of, route_canary_weight, start_stable

pytestmark = pytest.mark.lab

SAMPLED = {"rps": 400, "min_samples": 300}


def conditions(lab, name):
    return {c["type"]: c for c in lab.status(name).get("conditions") or []}


def canary_requests(lab, name, revision):
    """Requests the canary's pods answered, as the traffic simulator counted them."""
    return sum(v["requests"] for v in lab.traffic.snapshot().values()
               if v.get("rollout") == name and v.get("revision") == revision)


def test_a_missing_route_is_reported_on_the_rollout_and_it_is_never_ready(lab):
    docs = scenarios.manifests("noroute", router="gatewayAPI")
    route = next(d for d in docs if d["kind"] == "HTTPRoute")
    apply_all(lab, [d for d in docs if d["kind"] != "HTTPRoute"])
    applied = lab.wait_for(lambda: (c := conditions(lab, "noroute").get("Applied")) and c["status"] == "False" and c,
                           timeout=30, what="Applied=False")
    assert applied["reason"] == "RouteNotFound" and "noroute" in applied["message"]
    time.sleep(3)  # however long it lasts, Ready never turns True while nothing routes to it
    assert conditions(lab, "noroute")["Ready"]["status"] != "True"
    event = lab.wait_for(lambda: events_of(lab, "noroute", "RouteNotFound"), timeout=10, what="a RouteNotFound event")
    assert event[0].type == "Warning"
    lab.apply(route)  # the route appears: acting works again, the rollout becomes Ready
    lab.wait_for(lambda: conditions(lab, "noroute").get("Ready", {}).get("status") == "True", timeout=30,
                 what="Ready once the route exists")
    assert conditions(lab, "noroute")["Applied"]["status"] == "True"


def test_the_route_never_carries_more_than_ready_canary_pods_can(lab):
    v1 = start_stable(lab, "capacity", router="gatewayAPI", replicas=4, **SAMPLED,
                      steps=[{"weight": 50, "hold": "3s"}, {"weight": 75, "hold": "3s"}])
    release = scenarios.release(v1, "2.0.0", {"load-seconds": "3"})

    def weight_and_ready():
        weight = route_canary_weight(lab, "capacity")  # read the route first: readiness only grows after
        # The revision the route's canary backend reaches (a promotion is in the status before the route moves).
        canary = lab.core.read_namespaced_service("capacity-canary", "default").spec.selector.get(
            "modelrollout.io/revision")
        ready = sum((d.status.ready_replicas or 0) for d in lab.apps.list_namespaced_deployment("default").items
                    if canary and (d.metadata.labels or {}).get("modelrollout.io/revision") == canary)
        return weight, ready

    with Recorder(weight_and_ready, interval=0.05) as seen:
        lab.apply(release)
        lab.wait_for(lambda: (lab.status("capacity").get("history") or [{}])[0].get("result") == "Promoted",
                     timeout=90, what="promotion")
    raised = [(w, r) for w, r in seen.values if w]
    assert raised, seen.values
    assert all(w * 4 <= 100 * r for w, r in raised), seen.values  # 50 % needs 2 Ready pods of 4, 75 % needs 3


def test_shrinking_the_steps_mid_step_replans_instead_of_promoting(lab):
    v1 = start_stable(lab, "shrink", router="gatewayAPI", **SAMPLED,
                      steps=[{"weight": 10, "hold": "2s"}, {"weight": 20, "hold": "2s"},
                             {"weight": 50, "hold": "60s"}, {"weight": 80, "hold": "60s"}])
    release = scenarios.release(v1, "2.0.0")
    lab.apply(release)
    lab.wait_for(lambda: route_canary_weight(lab, "shrink") == 50, timeout=60, what="step 2 at weight 50")
    release["spec"]["strategy"]["steps"] = [{"weight": 10, "hold": "2s"}, {"weight": 20, "hold": "60s"}]
    lab.apply(release)
    lab.wait_for(lambda: route_canary_weight(lab, "shrink") == 20, timeout=15, what="weight back to step 1's 20")
    time.sleep(5)
    status = lab.status("shrink")
    assert status["phase"] == "Progressing" and status["currentStep"] == 1 and status["canaryWeight"] == 20
    assert not any(h["result"] == "Promoted" and h["revision"] == status["canaryRevision"]
                   for h in status.get("history") or [])


def test_a_weight_zero_step_sends_the_canary_no_user_and_a_bad_canary_is_caught_when_it_serves(lab):
    v1 = start_stable(lab, "dark", router="gatewayAPI", metrics=[{"name": "error-rate", "max": 0.01, "critical": True}],
                      **SAMPLED, steps=[{"weight": 0, "hold": "4s"}, {"weight": 30, "hold": "30s"}])
    def requests_then_step():  # requests first: a step read after them is never older than they are
        canary = lab.status("dark").get("canaryRevision")
        served = canary_requests(lab, "dark", canary) if canary else 0
        status = lab.status("dark")
        return (status.get("stepWeight"), served) if status.get("canaryRevision") == canary else None

    with Recorder(requests_then_step, interval=0.05) as seen:
        lab.apply(scenarios.release(v1, "2.0.0", {"error-rate": "0.5"}))
        lab.wait_for(lambda: lab.status("dark").get("stepWeight") == 30, timeout=60, what="step 1")
    assert (0, 0) in seen.values  # the dark step happened...
    assert all(served == 0 for weight, served in seen.values if weight == 0)  # ...and nobody reached the canary
    final = lab.wait_for_phase("dark", "RolledBack", timeout=60)
    assert "error-rate" in final["message"] and "step 1" in final["message"]


def test_the_replicas_router_refuses_a_weight_zero_step_naming_it(lab):
    docs = scenarios.manifests("darkpods", steps=[{"weight": 0, "hold": "4s"}, {"weight": 50, "hold": "4s"}])
    apply_all(lab, docs)
    status = lab.wait_for_phase("darkpods", "InvalidSpec", timeout=30)
    assert "spec.strategy.steps[0].weight" in status["message"]
