"""The istio router with the real operator in the lab: a good model promoted, a bad one rolled back,
the user's other route unchanged byte for byte, and traffic still served after deletion."""

from __future__ import annotations

import json

import pytest

from lab_watch import Recorder, start_stable
from modelrollout.manifests import service_name
from modelrollout.names import LABEL_REVISION, LABEL_ROLLOUT
from modelrollout_lab import scenarios

pytestmark = pytest.mark.lab

SAMPLED = {"rps": 400, "min_samples": 300}
VS = ("networking.istio.io", "v1", "default", "virtualservices")


def _vs(lab, name):
    return lab.custom.get_namespaced_custom_object(*VS, name)


def _primary_weights(lab, name):
    """(stable, canary) weights of the route `primary`, as Istio would read them."""
    route = next(r for r in _vs(lab, name)["spec"]["http"] if r.get("name") == "primary")
    weights = {d["destination"]["host"].split(".")[0]: d.get("weight", 100) for d in route["route"]}
    return weights.get(service_name(name, "stable"), 0), weights.get(service_name(name, "canary"), 0)


def _canary_weight(lab, name):
    return _primary_weights(lab, name)[1]


def _unrouted(lab, name):
    return lab.traffic.unrouted().get(f"default/{name}-traffic", 0)


def _served(lab, deployment):
    return lab.traffic.snapshot().get(f"default/{deployment}", {}).get("requests", 0)


def test_good_model_promoted_bad_one_rolled_back_and_the_other_route_untouched(lab):
    v1 = start_stable(lab, "mesh", router="istio", **SAMPLED)
    admin = json.dumps(_vs(lab, "mesh")["spec"]["http"][0])
    with Recorder(lambda: _canary_weight(lab, "mesh")) as weights, \
            Recorder(lambda: json.dumps(_vs(lab, "mesh")["spec"]["http"][0])) as admin_states:
        v2 = scenarios.release(v1, "2.0.0")
        lab.apply(v2)
        promoted = lab.wait_for(lambda: (s := lab.status("mesh")).get("phase") == "Succeeded"
                                and (s.get("history") or [{}])[0].get("result") == "Promoted" and s,
                                timeout=90, what="promotion")
        lab.wait_for(lambda: _canary_weight(lab, "mesh") == 0, timeout=10, what="all traffic on the new stable")
        assert weights.values == [0, 20, 50, 0]  # read back from the VirtualService, in order

        lab.apply(scenarios.release(v2, "3.0.0", {"error-rate": "0.2"}))
        status = lab.wait_for_phase("mesh", "RolledBack", timeout=60)
    assert status["stableRevision"] == promoted["stableRevision"]
    assert "error-rate" in status["message"]
    assert _primary_weights(lab, "mesh") == (100, 0)  # all traffic back on the previous model
    assert admin_states.values == [admin]  # the user's /admin route never changed, byte for byte


def test_deleting_the_rollout_keeps_traffic_served(lab):
    v1 = start_stable(lab, "mesh-gone", router="istio", **SAMPLED, steps=[{"weight": 40, "hold": "60s"}])
    stable = lab.status("mesh-gone")["stableRevision"]
    lab.apply(scenarios.release(v1, "2.0.0"))
    lab.wait_for(lambda: _canary_weight(lab, "mesh-gone") == 40, timeout=60, what="weight 40")
    unrouted = _unrouted(lab, "mesh-gone")
    lab.delete_rollout("mesh-gone")
    lab.wait_for(lambda: not lab.status("mesh-gone"), timeout=30, what="the rollout to go")
    deployment = next(d.metadata.name for d in lab.apps.list_namespaced_deployment(
        "default", label_selector=f"{LABEL_ROLLOUT}=mesh-gone").items if d.metadata.labels[LABEL_REVISION] == stable)
    served = _served(lab, deployment)
    lab.traffic.wait_ticks(15)
    assert _primary_weights(lab, "mesh-gone") == (100, 0)
    assert [d["destination"]["host"] for d in _vs(lab, "mesh-gone")["spec"]["http"][1]["route"]] == [
        "mesh-gone-stable.default.svc.cluster.local"]  # the canary destination is gone with its Service
    assert _unrouted(lab, "mesh-gone") == unrouted  # not one request unrouted
    assert _served(lab, deployment) > served  # the handed-over stable revision still serves
