"""Releases still finish as planned while the API server fails ~10 % of the operator's requests.

The lab injects 409 Conflicts on writes, 500s, 429s with Retry-After, slow answers and 410 Expired
watches on the operator's requests only; the traffic simulator reports every route weight it routed by.
"""

from __future__ import annotations

import signal
import time

import pytest

from modelrollout_lab import scenarios

from lab_watch import events_of, start_stable

pytestmark = pytest.mark.lab

SAMPLED = {"rps": 400, "min_samples": 300}
STEPS = [{"weight": 20, "hold": "4s"}, {"weight": 50, "hold": "4s"}]
PLANNED = [step["weight"] for step in STEPS]
# ~10 % of the operator's requests fail (a tenth of its writes conflict); a watch from a resourceVersion expires
# more often than not: the operator opens only a handful of watches, and each kind must be seen to happen.
FAULTS = {"conflict": 0.1, "error": 0.05, "throttle": 0.05, "slow": (0.05, 0.3), "gone_watch": 0.6}


def canary_weights(lab, name, since=0):
    """The canary weights the traffic simulator routed by, in order, from its `since`-th route state."""
    states = lab.traffic.route_weights_seen().get(f"default/{name}", [])[since:]
    weights = []
    for rules in states:
        backends = rules[0] if rules else {}
        canary = sum(w for backend, w in backends.items() if backend.endswith("-canary"))
        assert sum(backends.values()) == 100, f"route weights do not add up to 100: {backends}"
        if not weights or weights[-1] != canary:
            weights.append(canary)
    return weights


def current_route_state(lab, name):
    """The index of the route state the simulator routes by now (the release starts from it)."""
    return max(0, len(lab.traffic.route_weights_seen().get(f"default/{name}", [])) - 1)


def release_finishes(lab, manifest, version, behaviour, result, timeout=150):
    since = current_route_state(lab, manifest["metadata"]["name"])
    lab.apply(scenarios.release(manifest, version, behaviour))
    name = manifest["metadata"]["name"]
    status = lab.wait_for(lambda: (s := lab.status(name)).get("phase") in ("Succeeded", "RolledBack")
                          and s.get("observedGeneration") == lab.rollout(name)["metadata"]["generation"]
                          and (s.get("history") or [{}])[0].get("result") == result and s,
                          timeout=timeout, what=f"{version}: {result}")
    lab.wait_for(lambda: canary_weights(lab, name, since)[-1:] == [0], timeout=15, what="traffic back on one revision")
    return status, canary_weights(lab, name, since)


def test_releases_under_api_faults_finish_as_planned_with_every_weight_on_the_plan(lab):
    lab.inject_faults(**FAULTS)  # from the first release on: v1 becomes stable under faults too
    v1 = start_stable(lab, "faulty", router="gatewayAPI", steps=STEPS,
                      metrics=[{"name": "error-rate", "max": 0.01, "critical": True}], **SAMPLED)

    status, weights = release_finishes(lab, v1, "2.0.0", None, "Promoted")
    assert status["phase"] == "Succeeded"
    assert weights == [0, *PLANNED, 100, 0]  # every step once, in order, then the watch: none repeated or skipped

    status, weights = release_finishes(lab, v1, "3.0.0", {"error-rate": "0.05"}, "RolledBack")
    assert status["phase"] == "RolledBack" and "error-rate" in status["message"]
    assert weights[0] == 0 and weights[-1] == 0 and weights[1:-1] == PLANNED[:len(weights) - 2] and len(weights) > 2, \
        (weights, status["message"])

    injected = lab.faults.counts
    lab.faults.clear()
    assert all(injected[kind] > 0 for kind in ("conflict", "error", "throttle", "slow", "gone_watch")), injected
    every_weight = {w for states in lab.traffic.route_weights_seen().values() for rules in states
                    for backend, w in (rules[0] if rules else {}).items() if backend.endswith("-canary")}
    assert every_weight <= {0, *PLANNED, 100}  # 100: the promotion watch


def test_a_rollback_acted_on_but_not_written_stays_rolled_back_after_the_operator_restarts(lab):
    """The operator rolls a bad canary back (route weight 0), then its status write fails and it dies before
    retrying; the next operator cannot judge the canary (Prometheus is down) and must not re-open it."""
    lab.faults.clear()
    name = "restarted"
    v1 = start_stable(lab, name, router="gatewayAPI", steps=[{"weight": 20, "hold": "60s"}],
                      metrics=[{"name": "error-rate", "max": 0.01, "critical": True}],
                      no_data={"hold": "5m", "then": "rollback"}, **SAMPLED)
    since = current_route_state(lab, name)
    failed_before = lab.faults.counts["error"]
    # Every status write that records canary weight 0 (the rollback, carried by the cluster) fails.
    lab.inject_faults(error=1.0, verbs=["patch"], resources=["modelrollouts/status"], body=r'"canaryWeight":\s*0\b')
    lab.apply(scenarios.release(v1, "2.0.0", {"error-rate": "0.05"}))
    lab.wait_for(lambda: canary_weights(lab, name, since) == [0, 20, 0] and lab.faults.counts["error"] > failed_before,
                 timeout=60, what="the rollback acted on and its status write refused")
    lab.wait_for(lambda: events_of(lab, name, "RolledBack") and [
        e for e in events_of(lab, name, "ApplyFailed") if "reconcile failed" in e.message],
        timeout=10, what="events: RolledBack, and why its status was not written")
    lab.kill_operator(signal.SIGKILL)  # before its next try
    killed = current_route_state(lab, name)
    lab.prometheus.stop(keep_data=True)  # the next operator cannot judge the canary again
    lab.faults.clear()
    try:
        lab.start_operator()
        lab.wait_for(lambda: max(canary_weights(lab, name, killed)) > 0 or (
            (s := lab.status(name)).get("phase") == "RolledBack" and s.get("canaryWeight") == 0),
            timeout=40, what="the restarted operator's first pass")
        time.sleep(6)  # three analysis intervals: time enough to re-open the canary, had it forgotten the rollback
        assert canary_weights(lab, name, killed) == [0]  # the rolled-back canary never served users again
        status = lab.status(name)
        assert status["phase"] == "RolledBack" and "error-rate" in status["message"] and "step 0" in status["message"]
        assert status["history"][0]["result"] == "RolledBack" and "canaryRevision" not in status
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Stalled"]["status"] == "True" and conditions["Applied"]["status"] == "True"
        assert [e.type for e in events_of(lab, name, "RolledBack")] == ["Warning"]  # told once, not repeated
    finally:
        lab.prometheus.start()
