"""A Job gate's verdict is the Job the operator started, never one someone else left under its name
(issue 11: a team that may create Jobs must not be able to pass its own model's evaluation gate)."""

from __future__ import annotations

import pytest

from lab_kube import with_kube
from modelrollout.gates import job_manifest, run_gates
from modelrollout.kube import path
from modelrollout.spec import PlatformPolicy, parse_spec
from modelrollout.status import RolloutStatus

pytestmark = pytest.mark.lab

UID = "5f0c1d9e-0000-4000-8000-000000000001"
SPEC = parse_spec({
    "selector": {"matchLabels": {"app": "m"}},
    "template": {"metadata": {"labels": {"app": "m"}}, "spec": {"containers": [{"name": "s", "image": "m:2"}]}},
    "service": {"port": 8080}, "trafficRouting": {"gatewayAPI": {"httpRoute": "m"}},
    "strategy": {"steps": [{"weight": 10, "hold": "1m"}],
                 "gates": {"beforeTraffic": [{"name": "offline-eval", "job": {"template": {
                     "spec": {"containers": [{"name": "eval", "image": "example/eval:1"}]}}}}]}},
    "analysis": {"metrics": [{"name": "up", "query": "up", "max": 1}]},
}, PlatformPolicy(prometheus_url="http://prometheus:9090"))
STATUS = RolloutStatus.model_validate({"stableRevision": "aaaa", "canaryRevision": "bbbb"})
GATE = SPEC.strategy.gates.stage("beforeTraffic")[0]


async def _no_addresses():
    return {}


def _succeeded(kube, job_path):
    return kube.merge_patch(f"{job_path}/status", {"status": {"succeeded": 1}})


@pytest.mark.parametrize("namespace, planted", [("planted", True), ("own", False)])
def test_a_succeeded_job_passes_the_gate_only_when_the_operator_started_it(api, namespace, planted):
    job = job_manifest(SPEC, GATE, namespace, "m", UID, STATUS, {})
    job_path = path("batch/v1", "jobs", namespace, job["metadata"]["name"])

    async def scenario(kube):
        await kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                     "metadata": {"name": namespace}})
        if planted:  # the same name, labels and pod, but not created by (owned by) the rollout
            del job["metadata"]["ownerReferences"]
            await kube.create(path("batch/v1", "jobs", namespace), job)
        else:
            first = await run_gates(kube, SPEC, "beforeTraffic", namespace, "m", UID, STATUS, _no_addresses)
            assert first["offline-eval"].state == "Pending"
        await _succeeded(kube, job_path)
        results = await run_gates(kube, SPEC, "beforeTraffic", namespace, "m", UID, STATUS, _no_addresses)
        verdict = results["offline-eval"]
        if planted:
            assert verdict.state == "Failed" and "is not this rollout's" in verdict.reason
        else:
            assert verdict.state == "Passed"

    with_kube(api, scenario)
