"""Run gates outside Prometheus: an evaluation Job against the canary, or an HTTP webhook.

Runners only report Pending, Passed or Failed with a reason; the core decides what follows.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from modelrollout import manifests
from modelrollout.core import GateResult
from modelrollout.kube import Kube, path
from modelrollout.names import LABEL_REVISION, LABEL_ROLLOUT, rollout_label
from modelrollout.spec import Gate, RolloutSpec
from modelrollout.status import RolloutStatus


# Where the router says each revision is reached (role -> host[:port]), None while not known yet;
# asked only when a Job is to be created.
Addresses = Callable[[], Awaitable[Mapping[str, str] | None]]


def job_manifest(spec: RolloutSpec, gate: Gate, namespace: str, rollout: str, uid: str,
                 status: RolloutStatus, addresses: Mapping[str, str]) -> dict[str, Any]:
    """The gate's Job; CANARY_SERVICE / STABLE_SERVICE only for the revisions with an address."""
    assert gate.job is not None
    revision = status.canary_revision or ""
    template = copy.deepcopy(gate.job.template)
    env = [{"name": f"{role.upper()}_SERVICE", "value": addresses[role]} for role in ("canary", "stable")
           if role in addresses] + [
        {"name": "CANARY_REVISION", "value": revision},
        {"name": "STABLE_REVISION", "value": status.stable_revision or ""},
        {"name": "MODEL_VERSION", "value": spec.model.version},
    ]
    pod_spec = template.setdefault("spec", {})
    pod_spec.setdefault("restartPolicy", "Never")
    for container in pod_spec.get("containers") or []:
        container["env"] = list(container.get("env") or []) + env
    labels = {LABEL_ROLLOUT: rollout_label(rollout), LABEL_REVISION: revision}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": manifests.gate_job_name(rollout, revision, gate.name), "namespace": namespace, "labels": labels,
                     "ownerReferences": [manifests.owner_reference(rollout, uid)]},
        "spec": {"backoffLimit": gate.job.backoff_limit, "activeDeadlineSeconds": int(gate.job.timeout),
                 "template": template},
    }


async def _run_job(kube: Kube, spec: RolloutSpec, gate: Gate, namespace: str, rollout: str, uid: str,
                   status: RolloutStatus, addresses: Addresses) -> GateResult:
    name = manifests.gate_job_name(rollout, status.canary_revision or "", gate.name)
    job = await kube.get(path("batch/v1", "jobs", namespace, name))
    if job is None:
        reached = await addresses()
        if reached is None:
            return GateResult("Pending", "waiting for the platform to report where the revisions are reached")
        await kube.create(path("batch/v1", "jobs", namespace),
                          job_manifest(spec, gate, namespace, rollout, uid, status, reached))
        return GateResult("Pending", "evaluation Job started")
    if not manifests.controlled_by(job, uid):  # created by someone else: its verdict is not the gate's
        return GateResult("Failed", f"Job {name} exists and is not this rollout's: "
                                    "its result is not trusted (delete it to run the gate)")
    job_status = job.get("status") or {}
    if job_status.get("succeeded"):
        return GateResult("Passed", f"Job {name} succeeded")
    for condition in job_status.get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            why = condition.get("message") or condition.get("reason") or "failed"
            return GateResult("Failed", f"Job {name} failed: {why}")
    if job_status.get("failed", 0) > gate.job.backoff_limit:  # type: ignore[union-attr]
        return GateResult("Failed", f"Job {name} failed")
    return GateResult("Pending", "evaluation Job running")


async def _call_webhook(gate: Gate, payload: dict[str, Any]) -> GateResult:
    assert gate.webhook is not None
    last = ""
    async with httpx.AsyncClient(timeout=gate.webhook.timeout, trust_env=False, follow_redirects=False) as http:
        for attempt in range(gate.webhook.retries + 1):
            try:
                response = await http.post(gate.webhook.url, json=payload)
            except httpx.TimeoutException:
                last = f"webhook did not answer within {gate.webhook.timeout:g}s"
            except httpx.HTTPError as exc:
                last = f"webhook unreachable ({type(exc).__name__})"
            else:
                if response.is_success:
                    return GateResult("Passed", f"webhook answered {response.status_code}")
                # The status code only: the body may be anything the URL's server holds.
                last = f"webhook answered {response.status_code}"
                if response.status_code < 500:
                    break  # a refusal, not a hiccup: no retry
            if attempt < gate.webhook.retries:
                await asyncio.sleep(min(2.0 ** attempt, 5.0))
    return GateResult("Failed", last)


async def run_gates(kube: Kube, spec: RolloutSpec, stage: str, namespace: str, rollout: str, uid: str,
                    status: RolloutStatus, addresses: Addresses) -> dict[str, GateResult]:
    """Results of the stage's gates that have none recorded in status yet."""
    results: dict[str, GateResult] = {}
    for gate in spec.strategy.gates.stage(stage):
        if f"{stage}/{gate.name}" in status.gates:
            continue
        if gate.job is not None:
            results[gate.name] = await _run_job(kube, spec, gate, namespace, rollout, uid, status, addresses)
        else:
            payload = {"rollout": rollout, "namespace": namespace, "stage": stage, "gate": gate.name,
                       "canaryRevision": status.canary_revision, "stableRevision": status.stable_revision,
                       "step": status.current_step, "modelVersion": spec.model.version}
            results[gate.name] = await _call_webhook(gate, payload)
    return results
