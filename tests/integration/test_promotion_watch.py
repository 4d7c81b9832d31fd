"""A canary that turns bad after its last step passed is rolled back while watched at full traffic,
never made stable (issue 12's degradation runs: a canary that turned bad 19-23 s before its promotion
was promoted, because the last analysis saw only what Prometheus had scraped).

The real operator against the lab and a real Prometheus, with the gatewayAPI router.
"""

from __future__ import annotations

import pytest

from modelrollout.manifests import deployment_name
from modelrollout_lab import scenarios

from lab_watch import events_of, route_canary_weight, start_stable

pytestmark = pytest.mark.lab


def test_a_canary_that_turns_bad_after_its_steps_is_rolled_back_from_full_traffic_to_the_stable(lab):
    """The canary passes its one step healthy, then serves all traffic while watched; 12 s after its
    first request it fails 5 % of requests. Without the watch it was stable by then (and stayed so)."""
    v1 = start_stable(lab, "late", router="gatewayAPI", rps=800, interval="1s", min_samples=100,
                      steps=[{"weight": 50, "hold": "2s"}], promotion_watch="60s",
                      metrics=[{"name": "error-rate", "max": 0.01, "critical": True}])
    stable = lab.status("late")["stableRevision"]
    lab.apply(scenarios.release(v1, "2.0.0", {"degrade-after-seconds": "12", "degraded-error-rate": "0.05"}))
    watching = lab.wait_for(lambda: (s := lab.status("late")).get("watchingSince") and s, timeout=11,
                            what="the canary watched at full traffic before it degrades")
    assert watching["phase"] == "Promoting" and watching["stableRevision"] == stable
    assert lab.wait_for(lambda: route_canary_weight(lab, "late") == 100, timeout=5, what="all traffic on the canary")

    status = lab.wait_for_phase("late", "RolledBack", timeout=60)
    print(f"\n{status['message']}")
    assert status["stableRevision"] == stable and status["abortedRevision"] == watching["canaryRevision"]
    assert "while watched at full traffic" in status["message"] and "error-rate" in status["message"]
    # The decision is written before it is acted on (a crash in between resumes it): traffic follows
    # within the analysis interval (1 s), not necessarily by the time the status is read.
    lab.wait_for(lambda: route_canary_weight(lab, "late") == 0, timeout=5, what="all traffic back on the stable")
    # The stable stood by with all its replicas Ready: routing back to it took one write.
    deployment = lab.apps.read_namespaced_deployment(deployment_name("late", stable), "default")
    assert (deployment.spec.replicas, deployment.status.ready_replicas) == (2, 2)
    assert events_of(lab, "late", "Watching") and events_of(lab, "late", "RolledBack")
    assert all(entry["result"] != "Promoted" for entry in status["history"] if entry["revision"] != stable)
