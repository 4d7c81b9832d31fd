"""The ModelRollout status, typed: one frozen declaration of every field the operator writes.

`RolloutStatus.parse(raw)` reads a status (unknown fields refused, types checked); `dump()`
gives the JSON the API server stores. The decision core still builds the next status as a
plain dict (most of its moves are one-key updates), but every status it returns is parsed
here first, so a misspelt or undeclared field fails at once instead of being pruned without a
word by the API server (tests check that these models and `crds/` declare the same fields).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Condition(_Frozen):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = Field(default=None, alias="lastTransitionTime")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


class MetricResult(_Frozen):
    metric: str
    value: float | None = None
    threshold: str = ""
    verdict: Literal["Pass", "Fail", "Inconclusive"]
    reason: str = ""
    samples: float | None = None
    query: str = ""
    at: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)


class HistoryEntry(_Frozen):
    revision: str | None = None
    model_version: str | None = Field(default=None, alias="modelVersion")
    result: str
    reason: str = ""
    started_at: str | None = Field(default=None, alias="startedAt")
    finished_at: str | None = Field(default=None, alias="finishedAt")


class ScaleDown(_Frozen):
    revision: str
    at: str


class GateRecord(_Frozen):
    result: Literal["Passed", "Failed"]
    reason: str = ""
    at: str | None = None


Phase = Literal["Pending", "Initializing", "Progressing", "Paused", "Promoting", "Succeeded", "RolledBack",
                "InvalidSpec"]


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
    rollout_started_at: str | None = Field(default=None, alias="rolloutStartedAt")
    canary_ready_at: str | None = Field(default=None, alias="canaryReadyAt")
    step_entered_at: str | None = Field(default=None, alias="stepEnteredAt")
    step_started_at: str | None = Field(default=None, alias="stepStartedAt")
    serving_since: str | None = Field(default=None, alias="servingSince")
    last_analysis_at: str | None = Field(default=None, alias="lastAnalysisAt")
    no_data_since: str | None = Field(default=None, alias="noDataSince")
    no_data_reason: str | None = Field(default=None, alias="noDataReason")
    no_data_paused: bool | None = Field(default=None, alias="noDataPaused")
    act_failures: int | None = Field(default=None, alias="actFailures")
    gating: Literal["beforeTraffic", "beforePromotion"] | None = None
    gates: dict[str, GateRecord] = Field(default_factory=dict)
    paused_at: str | None = Field(default=None, alias="pausedAt")
    promotion_reason: str | None = Field(default=None, alias="promotionReason")
    aborted_revision: str | None = Field(default=None, alias="abortedRevision")
    failures: dict[str, int] = Field(default_factory=dict)
    passed_checks: int | None = Field(default=None, alias="passedChecks")
    handled_commands: dict[str, str] = Field(default_factory=dict, alias="handledCommands")
    scale_downs: tuple[ScaleDown, ...] = Field(default=(), alias="scaleDowns")
    last_analysis: tuple[MetricResult, ...] = Field(default=(), alias="lastAnalysis")
    history: tuple[HistoryEntry, ...] = Field(default=(), max_length=20)
    conditions: tuple[Condition, ...] = ()

    @classmethod
    def parse(cls, raw: Any) -> RolloutStatus:
        return cls.model_validate(dict(raw or {}))

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_defaults=True)

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)
