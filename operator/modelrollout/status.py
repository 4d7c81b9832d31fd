"""The ModelRollout status, typed: one frozen declaration of every field the operator writes.

The reconciler parses the cluster's status once per pass (`parse_lenient`: a field that does not
parse is dropped and named, never a crash loop), the decision core returns new statuses with
`replace`, and `dump()` gives the JSON written back once: the fields that were read or set, by
their camelCase names, without the ones cleared (the merge patch then deletes them).
Tests keep these models and `crds/` declaring the same fields.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# What core.ts() writes; a timestamp that does not parse is refused here, not in the middle of a decision.
Timestamp = Annotated[str, Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Condition(_Frozen):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: Timestamp | None = Field(default=None, alias="lastTransitionTime")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


class MetricResult(_Frozen):
    metric: str
    value: float | None = None
    threshold: str = ""
    verdict: Literal["Pass", "Fail", "Inconclusive"]
    reason: str = ""
    samples: float | None = None
    query: str = ""
    at: Timestamp | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)


class HistoryEntry(_Frozen):
    revision: str | None = None
    model_version: str | None = Field(default=None, alias="modelVersion")
    result: str
    reason: str = ""
    started_at: Timestamp | None = Field(default=None, alias="startedAt")
    finished_at: Timestamp | None = Field(default=None, alias="finishedAt")


class ScaleDown(_Frozen):
    revision: str
    at: Timestamp


class GateRecord(_Frozen):
    result: Literal["Passed", "Failed"]
    reason: str = ""
    at: Timestamp | None = None


Phase = Literal["Pending", "Initializing", "Progressing", "Paused", "Promoting", "Succeeded", "RolledBack",
                "InvalidSpec", "Degraded"]


class RolloutStatus(_Frozen):
    phase: Phase | None = None
    message: str | None = None
    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    stable_revision: str | None = Field(default=None, alias="stableRevision")
    canary_revision: str | None = Field(default=None, alias="canaryRevision")
    model_version: str | None = Field(default=None, alias="modelVersion")
    canary_model_version: str | None = Field(default=None, alias="canaryModelVersion")
    current_step: int | None = Field(default=None, alias="currentStep")
    step_weight: int | None = Field(default=None, alias="stepWeight")
    step_mirror: int | None = Field(default=None, alias="stepMirror")
    canary_weight: int | None = Field(default=None, alias="canaryWeight")
    canary_mirror: int | None = Field(default=None, alias="canaryMirror")
    rollout_started_at: Timestamp | None = Field(default=None, alias="rolloutStartedAt")
    canary_ready_at: Timestamp | None = Field(default=None, alias="canaryReadyAt")
    step_entered_at: Timestamp | None = Field(default=None, alias="stepEnteredAt")
    step_started_at: Timestamp | None = Field(default=None, alias="stepStartedAt")
    serving_since: Timestamp | None = Field(default=None, alias="servingSince")
    last_analysis_at: Timestamp | None = Field(default=None, alias="lastAnalysisAt")
    no_data_since: Timestamp | None = Field(default=None, alias="noDataSince")
    no_data_reason: str | None = Field(default=None, alias="noDataReason")
    no_data_paused: bool | None = Field(default=None, alias="noDataPaused")
    act_failures: int | None = Field(default=None, alias="actFailures")
    gating: Literal["beforeTraffic", "beforePromotion"] | None = None
    gates: dict[str, GateRecord] = Field(default_factory=dict)
    paused_at: Timestamp | None = Field(default=None, alias="pausedAt")
    promotion_reason: str | None = Field(default=None, alias="promotionReason")
    # When the promoting canary began to serve all traffic, watched (spec.strategy.promotion.watch).
    watching_since: Timestamp | None = Field(default=None, alias="watchingSince")
    # When the first revision began to wait for a model that may have users to serve (HandedOver).
    awaiting_handover_since: Timestamp | None = Field(default=None, alias="awaitingHandoverSince")
    aborted_revision: str | None = Field(default=None, alias="abortedRevision")
    # The routing of the last valid spec the cluster was routed through (spec.applied_routing): an
    # invalid spec, a routing change and a deletion hand traffic back to stable through it.
    applied_routing: dict[str, Any] | None = Field(default=None, alias="appliedRouting")
    failures: dict[str, int] = Field(default_factory=dict)
    passed_checks: int | None = Field(default=None, alias="passedChecks")
    handled_commands: dict[str, str] = Field(default_factory=dict, alias="handledCommands")
    scale_downs: tuple[ScaleDown, ...] = Field(default=(), alias="scaleDowns")
    last_analysis: tuple[MetricResult, ...] = Field(default=(), alias="lastAnalysis")
    history: tuple[HistoryEntry, ...] = Field(default=(), max_length=20)
    conditions: tuple[Condition, ...] = ()

    @classmethod
    def parse(cls, raw: Any) -> RolloutStatus:
        """A status that must be valid (unknown fields refused, types checked)."""
        return cls.model_validate(dict(raw or {}))

    @classmethod
    def parse_lenient(cls, raw: Any) -> tuple[RolloutStatus, tuple[str, ...]]:
        """A status as a cluster holds it, which a user or an older operator may have written:
        what does not parse is dropped (the entry of a list, else the whole field: a merge patch
        cannot delete one entry of a map) and named in the second value. The next status write
        leaves the dropped parts out, so the cluster's status parses again."""
        if not isinstance(raw, Mapping):
            return cls(), ((f"status: not an object ({type(raw).__name__})",) if raw else ())
        data = dict(raw)
        dropped: list[str] = []
        while data:  # each round drops at least one part of it
            try:
                return cls.model_validate(data), tuple(dropped)
            except ValidationError as exc:
                errors = exc.errors(include_url=False, include_input=False)
            entries: defaultdict[str, set[int]] = defaultdict(set)
            for error in errors:
                loc = error["loc"]
                key, index = (str(loc[0]) if loc else ""), (loc[1] if len(loc) > 1 else None)
                why = "not a timestamp" if error["type"] == "string_pattern_mismatch" else error["msg"]
                dropped.append(f"{'.'.join(str(part) for part in loc) or 'status'}: {why}")
                if isinstance(index, int) and isinstance(data.get(key), list):
                    entries[key].add(index)
                elif key in data:
                    del data[key]
                else:
                    data.clear()  # an error this loop cannot place: keep nothing rather than loop
            for key, bad in entries.items():
                if key in data:
                    data[key] = [item for i, item in enumerate(data[key]) if i not in bad]
        return cls(), tuple(dropped)

    def replace(self, **changes: Any) -> RolloutStatus:
        """A copy with these fields (python names) changed; None, or {} for a map, clears a field."""
        if not changes.keys() <= _FIELD_NAMES:
            raise TypeError(f"RolloutStatus has no field {', '.join(sorted(changes.keys() - _FIELD_NAMES))}")
        return self.model_copy(update=changes)

    def dump(self) -> dict[str, Any]:
        """The JSON to store: the fields read or set, without the ones cleared to None or to an empty
        map (in a merge patch `{}` changes nothing: the old entries would stay on the cluster)."""
        raw = self.model_dump(by_alias=True, exclude_unset=True)
        return {key: value for key, value in raw.items() if value is not None and value != {}}

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)


_FIELD_NAMES = frozenset(RolloutStatus.model_fields)
