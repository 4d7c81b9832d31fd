"""A canary that turns bad in the middle of a long step is rolled back on its recent window (issue 12).

The real operator against the lab: the step's window holds thousands of healthy requests when the
canary starts failing 5 % of its requests, so the step's window alone would take as many bad requests
again to show it; the recent window (`analysis.recentWindow`, queried with its own `{{ window }}`)
sees only the bad part.
"""

from __future__ import annotations

import pytest

from modelrollout_lab import scenarios

from lab_watch import start_stable

pytestmark = pytest.mark.lab


def test_a_mid_step_degradation_is_rolled_back_from_the_recent_window(lab):
    v1 = start_stable(lab, "midstep", router="gatewayAPI", rps=800, interval="1s", min_samples=100,
                      steps=[{"weight": 20, "hold": "5m"}, {"weight": 50, "hold": "5m"}],
                      metrics=[{"name": "error-rate", "max": 0.01, "critical": True}])
    release = scenarios.release(v1, "2.0.0", {"degrade-after-seconds": "15", "degraded-error-rate": "0.05"})
    release["spec"]["analysis"]["recentWindow"] = "2s"
    lab.apply(release)
    status = lab.wait_for_phase("midstep", "RolledBack", timeout=60)
    canary = lab.traffic.snapshot()[f"default/midstep-{status['history'][0]['revision']}"]
    print(f"\nhealthy canary requests {canary['requests'] - canary['degraded_requests']}, "
          f"bad {canary['degraded_requests']}: {status['message']}")
    assert "error-rate: in the last" in status["message"] and "above max 0.01" in status["message"]
    # ~2,400 healthy requests before it. Measured: 860-960 bad requests served until weight 0; with
    # recentWindow 0s (the step's window alone) the same release served 1,184.
    assert canary["requests"] - canary["degraded_requests"] >= 1500
    assert canary["degraded_requests"] <= 1100
