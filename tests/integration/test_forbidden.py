"""A permission missing from the chart's RBAC is reported, not discovered by users (issue 10).

The lab authorizes the operator (the chart's ServiceAccount) with the chart's RBAC as Helm renders
it, minus one permission: `update` on HTTPRoutes, which the Gateway API router needs to move
traffic. The operator says so at start-up, the rollout shows `Forbidden` (condition and event),
and nothing is half-applied: the route the users' traffic follows is unchanged.
"""

from __future__ import annotations

import socket
import urllib.request

import pytest

from modelrollout_lab import scenarios
from modelrollout_lab.lab import Lab
from modelrollout_lab.rbac import chart_rbac, without_permission

from lab_watch import Recorder, events_of, route_canary_weight

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    rbac = without_permission(chart_rbac(), "gateway.networking.k8s.io", "httproutes", "update")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Lab(str(tmp_path_factory.mktemp("lab")), seed=11, rbac=rbac) as lab:
        lab.start_operator("--metrics-port", str(port))
        lab.metrics_url = f"http://127.0.0.1:{port}/metrics"
        yield lab


def _applied(lab: Lab, name: str) -> dict | None:
    conditions = lab.status(name).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Applied" and c["status"] == "False"), None)


def test_the_operator_names_the_missing_permission_at_start_up(lab):
    line = lab.wait_for(lambda: next((entry for entry in lab.operator_log().splitlines()
                                      if "missing permission" in entry and "httproutes" in entry), None),
                        timeout=30, what="the self-check's report")
    assert "cannot update httproutes cluster-wide" in line
    assert "trafficRouting.gatewayAPI" in line
    assert "cannot get httproutes" not in lab.operator_log()  # only what was taken away is reported
    assert "cannot patch modelrollouts/status" not in lab.operator_log()
    with urllib.request.urlopen(lab.metrics_url, timeout=5) as response:
        exposition = response.read().decode()
    missing = [line for line in exposition.splitlines() if line.startswith("modelrollout_permission_missing{")]
    assert missing == ['modelrollout_permission_missing{group="gateway.networking.k8s.io",namespace="",'
                       'resource="httproutes",verb="update"} 1.0']


def test_a_forbidden_route_write_shows_on_the_rollout_and_leaves_traffic_on_stable(lab):
    docs = scenarios.manifests("routed", router="gatewayAPI", rps=200)
    route_before = None
    with Recorder(lambda: route_canary_weight(lab, "routed")) as weights:
        for doc in docs:
            lab.apply(doc)
        lab.wait_for(lambda: lab.status("routed").get("stableRevision"), timeout=60, what="a stable revision")
        route_before = lab.custom.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", "default", "httproutes", "routed")["spec"]
        lab.apply(scenarios.release(docs[-1], "2.0.0"))
        condition = lab.wait_for(lambda: _applied(lab, "routed"), timeout=60, what="Applied=False")
        events = lab.wait_for(lambda: events_of(lab, "routed", "Forbidden"), timeout=10, what="a Forbidden event")
    assert condition["reason"] == "Forbidden"
    assert 'cannot update resource "httproutes" in API group "gateway.networking.k8s.io"' in condition["message"]
    assert events[0].type == "Warning"
    status = lab.status("routed")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] != "True"  # never Ready while the decided state is not applied
    assert status.get("canaryWeight", 0) == 0 and status["phase"] != "Succeeded"
    # Nothing half-applied: the route still sends every user to stable, as written.
    assert set(weights.values) <= {None, 0}
    assert lab.custom.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", "default", "httproutes", "routed")["spec"] == route_before
