"""The Argo CD health check (docs/argocd-health.lua), run under Lua 5.1 as Argo CD runs it, on statuses
produced by the real decision core in each phase."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from lupa import lua51

from modelrollout import core
from modelrollout.core import Commands, Workload
from modelrollout.status import RolloutStatus
from test_core import V1, V2, canary_in_step0, good, make_spec, ready, stable_on_v1

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCRIPT = (DOCS / "argocd-health.lua").read_text()


def argo_health(status: RolloutStatus | dict | None, generation: int = 1) -> tuple[str, str]:
    """(status, message) as Argo CD would show them for a ModelRollout with this status (the core's,
    or as the API server returned it)."""
    obj = {"apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout",
           "metadata": {"name": "fraud", "namespace": "ml", "generation": generation}, "spec": {}}
    if status is not None:
        obj["status"] = status.dump() if isinstance(status, RolloutStatus) else status
    lua = lua51.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return result["status"], result["message"]


def test_progressing_canary_is_progressing():
    status = canary_in_step0().status
    assert status.phase == "Progressing"
    assert argo_health(status) == ("Progressing", status.message)


def test_succeeded_is_healthy():
    status = stable_on_v1().status
    assert status.phase == "Succeeded"
    assert argo_health(status)[0] == "Healthy"


def test_promoted_canary_is_healthy():
    run = canary_in_step0()
    workloads = {**ready(V1), V2.revision: Workload(1, 1)}
    for after in (10, 20):
        run.step(after=after, workloads=workloads, samples=good())
    workloads[V2.revision] = Workload(2, 2)
    run.step(after=10, workloads=workloads, samples=good())
    assert argo_health(run.step(after=30, workloads=workloads, samples=good()).status)[0] == "Progressing"  # Promoting
    watching = run.step(after=1, workloads={**ready(V1), **ready(V2)}).status
    assert argo_health(watching)[0] == "Progressing"  # watched at full traffic: it may still roll back
    run.step(after=1, workloads={**ready(V1), **ready(V2)})  # the cluster carries it: the watch starts
    status = run.step(after=60, workloads={**ready(V1), **ready(V2)}, samples=good()).status  # judged in its watch
    assert status.phase == "Succeeded" and status.stable_revision == V2.revision
    assert argo_health(status)[0] == "Healthy"


def test_paused_by_user_and_manual_gate_are_suspended():
    run = canary_in_step0()
    workloads = {**ready(V1), V2.revision: Workload(1, 1)}
    status = run.step(after=1, workloads=workloads, commands=Commands(paused=True)).status
    assert status.phase == "Paused"
    assert argo_health(status) == ("Suspended", status.message)

    gated = make_spec("model:v2", steps=[{"weight": 20}, {"weight": 100, "hold": "10s"}])
    run = stable_on_v1()
    run.spec = gated
    run.step(after=1)
    workloads = {**ready(V1), gated.revision: Workload(1, 1)}
    run.step(after=1, workloads=workloads)
    status = run.step(after=100, workloads=workloads, samples=good()).status
    assert status.phase == "Paused" and argo_health(status)[0] == "Suspended"


def test_rolled_back_is_degraded_with_the_reason():
    run = canary_in_step0()
    status = run.step(after=10, workloads={**ready(V1), V2.revision: Workload(1, 1)},
                      samples=good(**{"error-rate": 0.052})).status
    assert status.phase == "RolledBack"
    health, message = argo_health(status)
    assert health == "Degraded" and "error-rate" in message and message == status.message


def test_invalid_spec_is_degraded_with_the_field():
    decision = core.invalid(stable_on_v1().status, "spec.strategy.steps[1].weight", "weights never decrease",
                            2, core.Commands(), core.parse_ts("2026-11-21T12:05:00Z"))
    health, message = argo_health(decision.status, generation=2)
    assert health == "Degraded" and "spec.strategy.steps[1].weight" in message


def test_a_generation_the_operator_has_not_seen_is_progressing():
    status = stable_on_v1().status  # Succeeded for generation 1
    health, message = argo_health(status, generation=2)
    assert health == "Progressing" and "generation 2" in message
    assert argo_health(None)[0] == "Progressing"


def test_failing_to_act_is_degraded():
    status = canary_in_step0().status
    failed, _, _ = core.record_act(status, 1, core.ActResult(None, 10, "RouteNotFound", "HTTPRoute ml/fraud not found"),
                                   core.parse_ts("2026-11-21T12:05:00Z"))
    health, message = argo_health(failed)
    assert health == "Degraded" and "HTTPRoute ml/fraud not found" in message


def test_a_stable_rollout_whose_route_is_gone_is_degraded_not_healthy():
    status = stable_on_v1().status
    failed, _, _ = core.record_act(status, 1, core.ActResult(None, 0, "RouteNotFound", "HTTPRoute ml/fraud not found"),
                                   core.parse_ts("2026-11-21T12:05:00Z"))
    assert failed.phase == "Degraded" and failed.canary_weight is None
    assert argo_health(failed) == ("Degraded", "Cannot apply the decided state: HTTPRoute ml/fraud not found (attempt 1)")


def test_a_conflict_being_retried_is_progressing():
    status = canary_in_step0().status
    conflicted, _, _ = core.record_act(status, 1, core.ActResult(None, 10, "Conflict", "HTTPRoute ml/fraud changed"),
                                       core.parse_ts("2026-11-21T12:05:00Z"))
    assert argo_health(conflicted)[0] == "Progressing"


def test_succeeded_but_not_yet_carried_is_progressing():
    status = stable_on_v1().status
    converging, _, _ = core.record_act(status, 1, core.ActResult(5, 0),
                                       core.parse_ts("2026-11-21T12:05:00Z"))
    assert {c.type: c.status for c in converging.conditions}["Ready"] == "False"
    assert argo_health(converging)[0] == "Progressing"


def test_succeeded_while_the_weight_cannot_be_confirmed_is_not_ready():
    """KServe has not yet routed every request to a promoted model (the weight reads as unknown):
    the desired state is not carried, so Ready is not True."""
    status = stable_on_v1().status
    unconfirmed, _, _ = core.record_act(status, 1, core.ActResult(None, 0), core.parse_ts("2026-11-21T12:05:00Z"))
    assert {c.type: c.status for c in unconfirmed.conditions}["Ready"] == "False"
    assert argo_health(unconfirmed)[0] == "Progressing"


def test_the_argocd_cm_snippet_in_the_docs_carries_this_script():
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", (DOCS / "gitops.md").read_text(), re.S)]
    snippet = next(b for b in blocks if b.get("kind") == "ConfigMap" and b["metadata"]["name"] == "argocd-cm")
    assert snippet["data"]["resource.customizations.health.modelrollout.io_ModelRollout"] == SCRIPT


@pytest.mark.parametrize("phase,health", [
    ("Pending", "Progressing"), ("Initializing", "Progressing"), ("Promoting", "Progressing"),
    ("Paused", "Suspended"), ("RolledBack", "Degraded"), ("InvalidSpec", "Degraded"), ("Degraded", "Degraded"),
])
def test_every_phase_maps_even_without_conditions(phase, health):
    assert argo_health(RolloutStatus(phase=phase, observed_generation=1))[0] == health
