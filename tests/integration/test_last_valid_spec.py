"""The last valid spec keeps traffic safe, and status never says more than the cluster confirms
(issue 22), with the real operator in the lab: an invalid spec or a routing change mid-release, and
a route deleted under a stable rollout."""

from __future__ import annotations

import pytest

from lab_watch import route_canary_weight, start_stable
from modelrollout.manifests import service_name
from modelrollout.names import LABEL_REVISION, LABEL_ROLLOUT
from modelrollout.routers.gateway_api import canary_share, managed_rules
from modelrollout_lab import scenarios
from test_gitops_health import health, kubectl_wait, steer

pytestmark = pytest.mark.lab

SAMPLED = {"rps": 400, "min_samples": 300}
AT_50 = [{"weight": 50, "hold": "300s"}]  # a canary that stays at 50 % while the test edits its spec
ROUTES = ("gateway.networking.k8s.io", "v1", "default", "httproutes")


def _served(lab, rollout, revision):
    """Requests served so far by the revision's Deployment."""
    deployment = next(d.metadata.name for d in lab.apps.list_namespaced_deployment(
        "default", label_selector=f"{LABEL_ROLLOUT}={rollout}").items if d.metadata.labels[LABEL_REVISION] == revision)
    return lab.traffic.snapshot().get(f"default/{deployment}", {}).get("requests", 0)


def _unrouted(lab, entry):
    return lab.traffic.unrouted().get(f"default/{entry}-traffic", 0)


def _share_of(lab, route, rollout):
    """The canary share of the rules of `route` that reference `rollout`'s Services."""
    obj = lab.custom.get_namespaced_custom_object(*ROUTES, route)
    managed = managed_rules(obj, rollout)
    return canary_share(obj["spec"]["rules"][managed[0]]["backendRefs"], "default", rollout) if managed else None


def _at_50(lab, manifest):
    """Release v2 (a good model) and wait until the route carries it at 50 %. Returns its revision."""
    name = manifest["metadata"]["name"]
    lab.apply(scenarios.release(manifest, "2.0.0"))
    lab.wait_for(lambda: route_canary_weight(lab, name) == 50 and lab.status(name).get("canaryWeight") == 50,
                 timeout=60, what="the canary at 50 %")
    return lab.status(name)["canaryRevision"]


def test_an_invalid_spec_mid_release_sends_the_canary_users_back_to_stable(lab):
    """A query edited into something that does not parse, at 50 %: the canary's users go back to stable
    within a pass (it served 924 errors in 15 s before), abort is honoured, and deletion hands the
    route to stable with nothing unrouted (it stayed 50/50 towards a deleted Service before)."""
    v1 = start_stable(lab, "broken", router="gatewayAPI", steps=AT_50, **SAMPLED)
    canary = _at_50(lab, v1)
    broken = scenarios.release(v1, "2.0.0")  # the same template: the same canary
    broken["spec"]["analysis"]["metrics"][0]["query"] = "sum(rate(http_requests_total[1m]"
    lab.apply(broken)
    lab.wait_for(lambda: lab.status("broken").get("phase") == "InvalidSpec", timeout=10, what="InvalidSpec")
    lab.wait_for(lambda: route_canary_weight(lab, "broken") == 0, timeout=5, what="the canary's users back to stable")
    lab.wait_for(lambda: lab.status("broken").get("canaryWeight") == 0, timeout=5, what="weight 0 read back")
    lab.traffic.wait_ticks(2)
    served = _served(lab, "broken", canary)
    lab.traffic.wait_ticks(15)
    assert _served(lab, "broken", canary) == served  # the canary serves nobody while it cannot be judged

    steer(lab, "abort", "broken")
    status = lab.wait_for(lambda: (lambda s: s.get("abortedRevision") == canary and s)(lab.status("broken")),
                          timeout=20, what="the abort honoured")
    assert status["phase"] == "InvalidSpec" and "canaryRevision" not in status
    assert status["history"][0]["result"] == "RolledBack" and status["history"][0]["revision"] == canary

    unrouted = _unrouted(lab, "broken")
    lab.delete_rollout("broken")
    lab.wait_for(lambda: not lab.status("broken"), timeout=30, what="the rollout to go")
    refs = lab.custom.get_namespaced_custom_object(*ROUTES, "broken")["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r.get("weight", 1)) for r in refs] == [(service_name("broken", "stable"), 100)]
    lab.traffic.wait_ticks(15)
    assert _unrouted(lab, "broken") == unrouted


def test_an_invalid_spec_gives_the_stable_revision_back_its_pods_with_the_replicas_router(lab):
    """Traffic shared by pods: the canary's pods go and the stable revision is back to full size."""
    v1 = start_stable(lab, "podshare", steps=AT_50, **SAMPLED)
    lab.apply(scenarios.release(v1, "2.0.0"))
    lab.wait_for(lambda: lab.status("podshare").get("canaryWeight") == 50, timeout=60, what="the canary at 50 %")
    canary = lab.status("podshare")["canaryRevision"]
    broken = scenarios.release(v1, "2.0.0")
    broken["spec"]["analysis"]["metrics"][0]["query"] = "sum(rate(http_requests_total[1m]"
    lab.apply(broken)
    lab.wait_for(lambda: lab.status("podshare").get("canaryWeight") == 0, timeout=20, what="weight 0 read back")
    replicas = {d.metadata.labels[LABEL_REVISION]: d.spec.replicas for d in lab.apps.list_namespaced_deployment(
        "default", label_selector=f"{LABEL_ROLLOUT}=podshare").items}
    assert replicas[canary] == 0 and replicas[lab.status("podshare")["stableRevision"]] == v1["spec"]["replicas"]
    served = _served(lab, "podshare", canary)
    lab.traffic.wait_ticks(10)
    assert _served(lab, "podshare", canary) == served


def test_deleting_under_an_invalid_spec_hands_over_through_the_last_valid_routing(lab):
    """Deleted at once after an edit that does not parse: the finalizer, which cannot use the spec,
    hands over through status.appliedRouting (it left the route 50/50 before). The lab's apply kept no
    finalizer (a replace, unlike `kubectl apply`), so this deletion skipped the handover altogether:
    all the stable's traffic unrouted once its Service was collected."""
    v1 = start_stable(lab, "gone", router="gatewayAPI", steps=AT_50, **SAMPLED)
    _at_50(lab, v1)
    broken = scenarios.release(v1, "2.0.0")
    broken["spec"]["analysis"]["metrics"][0]["query"] = "sum(rate(http_requests_total[1m]"
    unrouted = _unrouted(lab, "gone")
    lab.apply(broken)
    lab.delete_rollout("gone")
    lab.wait_for(lambda: not lab.status("gone"), timeout=30, what="the rollout to go")
    assert route_canary_weight(lab, "gone") == 0
    lab.traffic.wait_ticks(15)
    assert _unrouted(lab, "gone") == unrouted


def test_a_routing_change_mid_release_hands_the_old_route_back_to_stable(lab):
    """httpRoute renamed at 50 %: the old route goes back to stable before the new one is used."""
    v1 = start_stable(lab, "moved", router="gatewayAPI", steps=AT_50, **SAMPLED)
    other = scenarios.http_route("moved", "default")
    other["metadata"]["name"] = "moved-next"
    lab.apply(other)
    _at_50(lab, v1)
    moved = scenarios.release(v1, "2.0.0")
    moved["spec"]["trafficRouting"] = {"gatewayAPI": {"httpRoute": "moved-next"}}
    lab.apply(moved)
    lab.wait_for(lambda: route_canary_weight(lab, "moved") == 0, timeout=10, what="the old route back to stable")
    lab.wait_for(lambda: _share_of(lab, "moved-next", "moved") == 50, timeout=30, what="the new route used")
    status = lab.status("moved")
    assert status["appliedRouting"]["trafficRouting"] == {"gatewayAPI": {"httpRoute": "moved-next"}}
    assert route_canary_weight(lab, "moved") == 0  # and it stays there


def test_a_deleted_route_is_neither_ready_nor_healthy_and_its_weight_unknown(lab):
    """HTTPRoute deleted under a Succeeded rollout: it said Healthy=True and kept its last weight."""
    start_stable(lab, "unrouted", router="gatewayAPI", **SAMPLED)
    lab.custom.delete_namespaced_custom_object(*ROUTES, "unrouted")

    def reported():
        status = lab.status("unrouted")
        applied = next((c for c in status.get("conditions", []) if c["type"] == "Applied"), {})
        return applied.get("reason") == "RouteNotFound" and status
    status = lab.wait_for(reported, timeout=70, what="Applied=False RouteNotFound")
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == "False" and conditions["Healthy"] == "False"
    assert status["phase"] == "Degraded" and "HTTPRoute default/unrouted not found" in status["message"]
    assert "canaryWeight" not in status  # unknown, not the last value read
    assert health(lab, "unrouted")[0] == "Degraded"
    assert kubectl_wait(lab, "unrouted", "Ready").returncode != 0
