"""The typed status and the CRD declare the same fields: what the core writes is what the API
server keeps (an undeclared field is pruned without a word, and a step would never start)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from modelrollout.status import RolloutStatus

CRD = yaml.safe_load((Path(__file__).resolve().parents[2] / "crds" / "modelrollout.yaml").read_text())
STATUS_SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]


def _model_of(annotation) -> type[BaseModel] | None:
    """The pydantic model inside a field's type (tuple[X, ...], dict[str, X], X | None), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _object_schema(schema: dict) -> dict | None:
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            return _object_schema(schema[key])
    return schema if "properties" in schema else None


def _compare(model: type[BaseModel], schema: dict, where: str) -> list[str]:
    problems = []
    declared = schema.get("properties") or {}
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    for name in sorted(set(fields) - set(declared)):
        problems.append(f"{where}.{name}: in the typed status, not in the CRD")
    for name in sorted(set(declared) - set(fields)):
        problems.append(f"{where}.{name}: in the CRD, not in the typed status")
    for name, field in fields.items():
        inner = _model_of(field.annotation)
        sub = _object_schema(declared.get(name) or {})
        if inner is not None and sub is not None:
            problems += _compare(inner, sub, f"{where}.{name}")
    return problems


def test_the_typed_status_and_the_crd_declare_the_same_fields():
    assert _compare(RolloutStatus, STATUS_SCHEMA, "status") == []


def test_a_field_the_core_would_write_without_declaring_it_fails_at_once():
    with pytest.raises(TypeError, match="step_strated_at"):
        RolloutStatus().replace(phase="Progressing", step_strated_at="2026-11-29T03:00:00Z")
    with pytest.raises(ValidationError, match="stepStratedAt"):
        RolloutStatus.parse({"phase": "Progressing", "stepStratedAt": "2026-11-29T03:00:00Z"})
    with pytest.raises(ValidationError):
        RolloutStatus.parse({"phase": "Progresing"})


def test_dump_writes_what_was_read_or_set_and_leaves_out_what_was_cleared():
    stored = {"phase": "Progressing", "canaryRevision": "abc", "currentStep": 1, "failures": {"latency": 1},
              "noDataSince": "2026-11-29T03:00:00Z"}
    status = RolloutStatus.parse(stored)
    assert status.dump() == stored  # nothing added: no defaults written
    cleared = status.replace(canary_revision=None, no_data_since=None, failures={}, passed_checks=0).dump()
    # None and {} are left out, so the merge patch deletes them: `failures: {}` would merge into the
    # stored counts and change nothing.
    assert cleared == {"phase": "Progressing", "currentStep": 1, "passedChecks": 0}


def test_a_status_that_does_not_parse_keeps_what_does_and_names_what_it_dropped():
    stored = {
        "phase": "Progressing", "canaryRevision": "abc", "canaryWeight": 10,
        "currentStep": "two",  # hand-edited
        "stepStartedAt": "yesterday",  # not a timestamp: would stop every decision on it
        "legacyField": 1,  # an older operator's
        "failures": {"latency": 1, "errors": "many"},
        "history": [{"revision": "a", "result": "Initialized"}, {"revision": "b"}],
        "conditions": [{"type": "Ready", "status": "Maybe"},
                       {"type": "Applied", "status": "True", "reason": "Applied"}],
    }
    status, dropped = RolloutStatus.parse_lenient(stored)
    assert (status.phase, status.canary_revision, status.canary_weight) == ("Progressing", "abc", 10)
    assert status.current_step is None and status.step_started_at is None
    assert status.failures == {} and [h.revision for h in status.history] == ["a"]
    assert [c.type for c in status.conditions] == ["Applied"]
    assert sorted(d.split(":")[0] for d in dropped) == [
        "conditions.0.status", "currentStep", "failures.errors", "history.1.result", "legacyField", "stepStartedAt"]
    assert "stepStartedAt: not a timestamp" in dropped
    assert RolloutStatus.parse_lenient(status.dump()) == (status, ())  # the next pass reads it cleanly
    assert RolloutStatus.parse_lenient(None) == (RolloutStatus(), ())
    assert RolloutStatus.parse_lenient("garbage")[1] == ("status: not an object (str)",)


def test_a_status_round_trips():
    raw = {"phase": "RolledBack", "canaryWeight": 0, "history": [{"revision": "abc", "result": "RolledBack",
                                                                  "reason": "error-rate: 0.05 > 0.01"}],
           "conditions": [{"type": "Applied", "status": "False", "reason": "Forbidden", "message": "denied"}]}
    status = RolloutStatus.parse(raw)
    assert status.condition("Applied").reason == "Forbidden" and status.history[0].revision == "abc"
    assert RolloutStatus.parse(status.dump()) == status
