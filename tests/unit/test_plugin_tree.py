"""`kubectl modelrollout get` draws the tree from the routing object each router edits: an HTTPRoute's
backendRefs, a VirtualService's managed routes (with the mirror) and an InferenceService's split, read
the way the operator reads them back; with no mesh, the share of ready pods."""

from __future__ import annotations

import copy

import pytest

from modelrollout.manifests import service_name
from modelrollout.names import LABEL_REVISION, LABEL_ROLLOUT
from modelrollout.plugin import tree
from modelrollout_lab import scenarios

STABLE, CANARY = "aaaa1111", "bbbb2222"


def rollout(router: str) -> dict:
    obj = scenarios.rollout("fraud", namespace="ml", router=router, steps=[{"weight": 30, "hold": "1m"}])
    obj["metadata"].update(uid="u-1", generation=2)
    obj["status"] = {"phase": "Progressing", "observedGeneration": 2, "stableRevision": STABLE,
                     "canaryRevision": CANARY, "currentStep": 0, "canaryWeight": 30}
    return obj


def deployment(revision: str, ready: int, replicas: int = 2) -> dict:
    return {"metadata": {"name": f"fraud-{revision}", "labels": {LABEL_ROLLOUT: "fraud", LABEL_REVISION: revision}},
            "spec": {"replicas": replicas}, "status": {"readyReplicas": ready}}


DEPLOYMENTS = [deployment(STABLE, 2), deployment(CANARY, 1)]


def revision_lines(text: str) -> dict[str, str]:
    return {role: next(line for line in text.splitlines() if f"revision {revision}" in line)
            for role, revision in (("stable", STABLE), ("canary", CANARY))}


def virtual_service(canary_weight: int, mirror: int | None = None) -> dict:
    vs = scenarios.virtual_service("fraud", "ml")
    primary = vs["spec"]["http"][1]
    stable = primary["route"][0]
    primary["route"] = [{**stable, "weight": 100 - canary_weight},
                        {"destination": {**stable["destination"], "host": f"{service_name('fraud', 'canary')}.ml.svc"},
                         "weight": canary_weight}]
    if mirror is not None:
        primary["mirror"] = {"host": service_name("fraud", "canary")}
        primary["mirrorPercentage"] = {"value": float(mirror)}
    return vs


def test_istio_tree_shows_the_virtual_service_weights_of_the_managed_route():
    text = tree(rollout("istio"), DEPLOYMENTS, virtual_service(30))
    lines = revision_lines(text)
    assert lines["stable"].endswith("stable  ready 2/2  route weight 70%"), text
    assert lines["canary"].endswith("canary  ready 1/2  route weight 30%"), text


def test_istio_tree_shows_a_mirror_step():
    lines = revision_lines(tree(rollout("istio"), DEPLOYMENTS, virtual_service(0, mirror=100)))
    assert lines["stable"].endswith("route weight 100%")
    assert lines["canary"].endswith("route weight 0%  mirror 100%")


def inference_service(mode: str) -> dict:
    isvc = scenarios.inference_service("fraud", "ml", mode)
    isvc["metadata"].update(generation=3)
    labels = {LABEL_ROLLOUT: "fraud"}
    if mode == "Serverless":
        isvc["spec"]["predictor"] = {"labels": {**labels, LABEL_REVISION: CANARY}, "canaryTrafficPercent": 25}
        isvc["status"] = {"observedGeneration": 3, "components": {"predictor": {"traffic": [
            {"revisionName": "fraud-predictor-00002", "percent": 25, "latestRevision": True},
            {"revisionName": "fraud-predictor-00001", "percent": 75, "latestRevision": False}]}}}
    else:
        isvc["spec"]["predictor"] = {"labels": {**labels, LABEL_REVISION: STABLE}}
        isvc["spec"]["canary"] = [{"trafficPercent": 25,
                                   "predictor": {"name": f"rev-{CANARY}", "labels": {**labels, LABEL_REVISION: CANARY}}}]
        isvc["status"] = {"observedGeneration": 3}
    return isvc


@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_kserve_tree_shows_the_inference_service_split(mode):
    text = tree(rollout("kserve"), DEPLOYMENTS, inference_service(mode))
    lines = revision_lines(text)
    assert lines["stable"].endswith("route weight 75%"), text
    assert lines["canary"].endswith("route weight 25%"), text


def test_kserve_tree_says_unknown_while_kserve_has_not_acted_on_the_spec():
    isvc = inference_service("Serverless")
    isvc["metadata"]["generation"] = 4  # a write KServe has not reconciled yet: its split is of the old spec
    lines = revision_lines(tree(rollout("kserve"), DEPLOYMENTS, isvc))
    assert lines["stable"].endswith("route weight -") and lines["canary"].endswith("route weight -")


def test_gateway_tree_shows_the_route_weights_and_unknown_when_managed_rules_disagree():
    refs = [{"name": service_name("fraud", "stable"), "port": 8080, "weight": 70},
            {"name": service_name("fraud", "canary"), "port": 8080, "weight": 30}]
    route = {"metadata": {"name": "fraud", "namespace": "ml"},
             "spec": {"rules": [{"backendRefs": refs}, {"backendRefs": [{"name": "other", "port": 80}]}]}}
    lines = revision_lines(tree(rollout("gatewayAPI"), DEPLOYMENTS, route))
    assert lines["stable"].endswith("route weight 70%") and lines["canary"].endswith("route weight 30%")
    split = copy.deepcopy(route)
    split["spec"]["rules"].append({"backendRefs": [{**refs[0], "weight": 50}, {**refs[1], "weight": 50}]})
    lines = revision_lines(tree(rollout("gatewayAPI"), DEPLOYMENTS, split))
    assert lines["canary"].endswith("route weight -")


def test_replicas_tree_shows_the_share_of_ready_pods():
    lines = revision_lines(tree(rollout("replicas"), [deployment(STABLE, 15, 15), deployment(CANARY, 5, 5)], None))
    assert lines["stable"].endswith("route weight 75%") and lines["canary"].endswith("route weight 25%")


@pytest.mark.parametrize("router", ["gatewayAPI", "istio", "kserve"])
def test_a_missing_routing_object_shows_unknown_weights_not_the_pods_shares(router):
    lines = revision_lines(tree(rollout(router), DEPLOYMENTS, None))
    assert lines["stable"].endswith("route weight -") and lines["canary"].endswith("route weight -")
