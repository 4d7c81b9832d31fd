"""Releases still finish as planned while the API server fails ~10 % of the operator's requests.

The lab injects 409 Conflicts on writes, 500s, 429s with Retry-After, slow answers and 410 Expired
watches on the operator's requests only; the traffic simulator reports every route weight it routed by.
"""

from __future__ import annotations

import pytest

from modelrollout_lab import scenarios

from lab_watch import start_stable

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
    assert weights == [0, *PLANNED, 0]  # every step once, in order: none repeated, none skipped

    status, weights = release_finishes(lab, v1, "3.0.0", {"error-rate": "0.05"}, "RolledBack")
    assert status["phase"] == "RolledBack" and "error-rate" in status["message"]
    assert weights[0] == 0 and weights[-1] == 0 and weights[1:-1] == PLANNED[:len(weights) - 2] and len(weights) > 2

    injected = lab.faults.counts
    lab.faults.clear()
    assert all(injected[kind] > 0 for kind in ("conflict", "error", "throttle", "slow", "gone_watch")), injected
    every_weight = {w for states in lab.traffic.route_weights_seen().values() for rules in states
                    for backend, w in (rules[0] if rules else {}).items() if backend.endswith("-canary")}
    assert every_weight <= {0, *PLANNED}
