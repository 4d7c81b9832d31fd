"""The pure decision core: `decide(spec, status, observations, now) -> Decision`.

No I/O, no kopf, no clock. Status is the only state: everything a later call needs
(step, weight, timers, failure counts, handled commands) is written back into the new
status. `desired_state(spec, status, now)` then says what the cluster must look like for a
status, so the reconciler can converge to it with absolute, repeatable writes — after a
restart, from status alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from modelrollout.evaluate import MetricSample, evaluate
from modelrollout.spec import MetricRule, RolloutSpec
from modelrollout.stats import Judgement, Verdict

HISTORY_LIMIT = 20
WARMUP_POLL = 1.0  # seconds between readiness checks while waiting for pods
STEADY_REQUEUE = 60.0


class Phase(str, Enum):
    PENDING = "Pending"
    INITIALIZING = "Initializing"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    INVALID_SPEC = "InvalidSpec"


class Action(str, Enum):
    """What this decision did, for logs, events and tests."""

    INITIALIZE = "Initialize"
    WAIT = "Wait"
    START = "Start"
    ADVANCE = "Advance"
    HOLD = "Hold"
    PAUSE = "Pause"
    ROLLBACK = "Rollback"
    PROMOTE = "Promote"
    PROMOTED = "Promoted"
    STEADY = "Steady"
    INVALID = "Invalid"


@dataclass(frozen=True)
class Workload:
    """What the cluster says about one revision's Deployment."""

    replicas: int
    ready: int
    up_to_date: bool = True


@dataclass(frozen=True)
class Commands:
    """User commands from annotations. Tokens act once: status.handledCommands remembers them."""

    promote: str | None = None
    promote_full: str | None = None
    abort: str | None = None
    retry: str | None = None
    paused: bool = False


@dataclass(frozen=True)
class GateResult:
    state: str  # Pending | Passed | Failed
    reason: str


@dataclass(frozen=True)
class Observations:
    generation: int = 1
    workloads: Mapping[str, Workload] = field(default_factory=dict)
    commands: Commands = Commands()
    # None: no analysis ran in this cycle. A tuple (maybe with errors) when it did.
    samples: tuple[MetricSample, ...] | None = None
    # Results of the gates of the stage status.gating names, run in this cycle.
    gates: Mapping[str, GateResult] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    action: Action
    status: dict[str, Any]
    events: tuple[Event, ...] = ()
    requeue_after: float = STEADY_REQUEUE


@dataclass(frozen=True)
class Desired:
    """The world a status asks for.

    `replicas` maps revisions to a replica count, None ("delete the Deployment") or -1
    ("leave it as it is": a replaced revision still serving in-flight requests until its
    scale-down delay ends).
    """

    replicas: Mapping[str, int | None]
    stable_revision: str | None
    canary_revision: str | None
    canary_weight: int


# ---------------------------------------------------------------- time helpers

def ts(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _since(status: Mapping[str, Any], key: str, now: datetime) -> float | None:
    moment = parse_ts(status.get(key))
    return None if moment is None else (now - moment).total_seconds()


# ---------------------------------------------------------------- replica arithmetic

def canary_replicas(spec: RolloutSpec, weight: int) -> int:
    """Canary size for a planned weight.

    replicas router: the canary's share of ready pods is the weight, the stable keeps its
    full size, so canary = N*w/(100-w) (capped at N; N at 100%). gatewayAPI: the route
    splits traffic, the canary only needs capacity for its share: ceil(N*w/100).
    Never below 1, so the canary can warm up before it takes traffic.
    """
    n = spec.replicas
    if n == 0:
        return 0
    if spec.traffic_routing.router == "replicas":
        wanted = n if weight >= 100 else math.ceil(n * weight / (100 - weight))
    else:
        wanted = math.ceil(n * weight / 100)
    return max(1, min(n, wanted))


def desired_state(spec: RolloutSpec, status: Mapping[str, Any], now: datetime) -> Desired:
    stable = status.get("stableRevision")
    canary = status.get("canaryRevision")
    phase = status.get("phase")
    replicas: dict[str, int | None] = {}
    for entry in status.get("scaleDowns") or []:
        due = parse_ts(entry.get("at"))
        if due is not None and now >= due:
            replicas[entry["revision"]] = None
        elif spec.traffic_routing.router == "replicas":
            replicas[entry["revision"]] = 0  # its pods would still take traffic: stop at once
        else:
            replicas[entry["revision"]] = -1  # keep as it is until the delay ends
    if stable:
        replicas[stable] = spec.replicas
    elif spec.revision:
        replicas[spec.revision] = spec.replicas  # the first revision: Initializing
    if canary:
        if phase == Phase.PROMOTING.value:
            replicas[canary] = spec.replicas
        else:
            steps = spec.strategy.steps
            step = min(int(status.get("currentStep") or 0), len(steps) - 1)
            replicas[canary] = canary_replicas(spec, steps[step].weight)
    return Desired(
        replicas=replicas,
        stable_revision=stable or spec.revision,
        canary_revision=canary,
        canary_weight=int(status.get("canaryWeight") or 0) if canary else 0,
    )


# ---------------------------------------------------------------- conditions

def _conditions(phase: Phase, reason: str, message: str, generation: int,
                previous: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Our own conditions plus the kstatus trio (Ready, Reconciling, Stalled) for GitOps tools."""
    in_progress = phase in (Phase.PENDING, Phase.INITIALIZING, Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING)
    stalled = phase in (Phase.ROLLED_BACK, Phase.INVALID_SPEC)
    wanted = {
        "Ready": (phase is Phase.SUCCEEDED, reason),
        "Reconciling": (in_progress, reason),
        "Stalled": (stalled, reason),
        "Progressing": (in_progress, reason),
        "Healthy": (phase is Phase.SUCCEEDED, reason),
        "Paused": (phase is Phase.PAUSED, reason if phase is Phase.PAUSED else "NotPaused"),
        "RolledBack": (phase is Phase.ROLLED_BACK, reason if phase is Phase.ROLLED_BACK else "NotRolledBack"),
        "InvalidSpec": (phase is Phase.INVALID_SPEC, reason if phase is Phase.INVALID_SPEC else "SpecValid"),
    }
    before = {c.get("type"): c for c in previous or []}
    result = []
    for kind, (truth, why) in wanted.items():
        value = "True" if truth else "False"
        old = before.get(kind)
        changed = old is None or old.get("status") != value
        result.append({
            "type": kind,
            "status": value,
            "reason": why,
            "message": message if truth else "",
            "observedGeneration": generation,
            "lastTransitionTime": ts(now) if changed else old.get("lastTransitionTime", ts(now)),
        })
    return result


# ---------------------------------------------------------------- the decision


class _Builder:
    """Accumulates one decision: a copy of the status, events and the next wake-up."""

    def __init__(self, spec: RolloutSpec, status: Mapping[str, Any], obs: Observations, now: datetime) -> None:
        self.spec = spec
        self.old = status
        self.status: dict[str, Any] = {k: v for k, v in status.items()}
        self.obs = obs
        self.now = now
        self.events: list[Event] = []
        self.wakeups: list[float] = []

    # -- commands: a token acts once
    def command(self, name: str) -> str | None:
        token = getattr(self.obs.commands, name)
        handled = dict(self.status.get("handledCommands") or {})
        key = {"promote_full": "promoteFull"}.get(name, name)
        if token and handled.get(key) != token:
            handled[key] = token
            self.status["handledCommands"] = handled
            return token
        return None

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def wake_in(self, seconds: float | None) -> None:
        if seconds is not None:
            self.wakeups.append(max(0.05, seconds))

    def history(self, revision: str, result: str, reason: str, started: str | None) -> None:
        entry = {
            "revision": revision,
            "modelVersion": self.status.get("canaryModelVersion") or self.spec.model.version,
            "result": result,
            "reason": reason,
            "startedAt": started or ts(self.now),
            "finishedAt": ts(self.now),
        }
        self.status["history"] = ([entry] + list(self.status.get("history") or []))[:HISTORY_LIMIT]

    def schedule_scale_down(self, revision: str | None) -> None:
        if not revision:
            return
        delay = self.spec.rollback.scale_down_delay
        entries = [e for e in self.status.get("scaleDowns") or [] if e.get("revision") != revision]
        entries.append({"revision": revision, "at": ts(self.now + timedelta(seconds=delay))})
        self.status["scaleDowns"] = entries

    def finish(self, action: Action, phase: Phase, reason: str, message: str) -> Decision:
        self.status["phase"] = phase.value
        self.status["message"] = message
        self.status["observedGeneration"] = self.obs.generation
        self.status["modelVersion"] = self.status.get("modelVersion") or self.spec.model.version
        self._prune_scale_downs()
        self.status["conditions"] = _conditions(
            phase, reason, message, self.obs.generation, list(self.old.get("conditions") or []), self.now)
        requeue = min(self.wakeups) if self.wakeups else STEADY_REQUEUE
        return Decision(action=action, status=self.status, events=tuple(self.events), requeue_after=requeue)

    def _prune_scale_downs(self) -> None:
        """Entries stay until their delay has passed (the reconciler deletes the Deployment then)."""
        keep = []
        live = {self.status.get("stableRevision"), self.status.get("canaryRevision")}
        for entry in self.status.get("scaleDowns") or []:
            if entry.get("revision") in live:
                continue
            due = parse_ts(entry.get("at"))
            if due is not None and due > self.now:
                self.wake_in((due - self.now).total_seconds())
            keep.append(entry)
        self.status["scaleDowns"] = keep


def _clear_canary(b: _Builder) -> None:
    for key in ("canaryRevision", "canaryModelVersion", "currentStep", "canaryReadyAt", "stepStartedAt",
                "lastAnalysisAt", "noDataSince", "noDataPaused", "pausedAt", "rolloutStartedAt", "gating", "gates"):
        b.status.pop(key, None)
    b.status["canaryWeight"] = 0
    b.status["failures"] = {}
    b.status["passedChecks"] = 0


def _start_canary(b: _Builder, revision: str) -> Decision:
    _clear_canary(b)
    b.status.update({
        "canaryRevision": revision,
        "canaryModelVersion": b.spec.model.version,
        "currentStep": 0,
        "canaryWeight": 0,
        "rolloutStartedAt": ts(b.now),
    })
    b.status.pop("abortedRevision", None)
    b.event("Normal", "CanaryStarted", f"revision {revision} started as canary; waiting for it to be ready")
    b.wake_in(WARMUP_POLL)
    return b.finish(Action.START, Phase.PROGRESSING, "CanaryStarted",
                    f"canary {revision} started; waiting for readiness")


def _rollback(b: _Builder, reason: str, message: str) -> Decision:
    canary = b.status.get("canaryRevision")
    step = b.status.get("currentStep")
    weight = b.status.get("canaryWeight")
    full = f"rolled back: {message} at step {step} (weight {weight})" if step is not None else f"rolled back: {message}"
    b.history(canary, "RolledBack", message, b.status.get("rolloutStartedAt"))
    b.schedule_scale_down(canary)
    _clear_canary(b)
    b.status["abortedRevision"] = canary
    b.event("Warning", "RolledBack", full)
    return b.finish(Action.ROLLBACK, Phase.ROLLED_BACK, reason, full)


def decide(spec: RolloutSpec, status: Mapping[str, Any], obs: Observations, now: datetime) -> Decision:
    """The next status for this rollout, with events and when to look again."""
    b = _Builder(spec, status, obs, now)
    revision = spec.revision
    stable = status.get("stableRevision")
    canary = status.get("canaryRevision")

    if not stable:
        return _initialize(b, revision)
    if revision == stable:
        return _steady(b, canary)
    if canary != revision:
        if status.get("abortedRevision") == revision:
            return _stay_rolled_back(b, revision)
        if canary:
            b.history(canary, "Superseded", f"template changed to revision {revision}", status.get("rolloutStartedAt"))
            b.schedule_scale_down(canary)
            b.event("Normal", "Superseded", f"canary {canary} superseded by revision {revision}; traffic back to stable first")
        return _start_canary(b, revision)
    return _progress(b, revision)


def _initialize(b: _Builder, revision: str) -> Decision:
    workload = b.obs.workloads.get(revision)
    wanted = b.spec.replicas
    if workload is not None and workload.up_to_date and workload.ready >= wanted:
        b.status.update({"stableRevision": revision, "modelVersion": b.spec.model.version, "canaryWeight": 0})
        b.history(revision, "Initialized", "first revision became stable", None)
        b.event("Normal", "Initialized", f"revision {revision} is stable with {wanted} ready replicas")
        return b.finish(Action.INITIALIZE, Phase.SUCCEEDED, "Initialized", f"revision {revision} is stable")
    ready = workload.ready if workload else 0
    b.wake_in(WARMUP_POLL)
    return b.finish(Action.WAIT, Phase.INITIALIZING, "WaitingForReplicas",
                    f"first revision {revision}: {ready}/{wanted} replicas ready")


def _steady(b: _Builder, canary: str | None) -> Decision:
    b.command("abort")
    b.command("retry")
    b.command("promote")
    b.command("promote_full")
    if canary:
        b.history(canary, "Superseded", "template reverted to the stable revision", b.status.get("rolloutStartedAt"))
        b.schedule_scale_down(canary)
        b.event("Normal", "CanaryAbandoned", f"template reverted to stable {b.status['stableRevision']}; canary {canary} abandoned")
        _clear_canary(b)
    b.status.pop("abortedRevision", None)
    return b.finish(Action.STEADY, Phase.SUCCEEDED, "Stable", f"revision {b.status['stableRevision']} is stable")


def _stay_rolled_back(b: _Builder, revision: str) -> Decision:
    if b.command("retry"):
        b.event("Normal", "Retry", f"retrying revision {revision} on request")
        return _start_canary(b, revision)
    b.command("abort")
    message = b.old.get("message") or f"revision {revision} was rolled back"
    return b.finish(Action.STEADY, Phase.ROLLED_BACK, "RolledBack", message)


def _progress(b: _Builder, revision: str) -> Decision:
    spec, obs, now, status = b.spec, b.obs, b.now, b.status
    steps = spec.strategy.steps
    step_index = min(int(status.get("currentStep") or 0), len(steps) - 1)

    if b.command("abort"):
        return _rollback(b, "Aborted", "aborted by user")

    if status.get("phase") == Phase.PROMOTING.value:
        return _finish_promotion(b, revision)

    # Warm-up: the canary must be ready before it takes traffic.
    if not status.get("canaryReadyAt"):
        workload = obs.workloads.get(revision)
        wanted = canary_replicas(spec, steps[step_index].weight)
        if workload is None or not workload.up_to_date or workload.ready < wanted:
            return _warming_up(b, revision, workload, wanted)
        status["canaryReadyAt"] = ts(now)

    if not status.get("stepStartedAt"):
        waiting = _gates(b, "beforeTraffic")
        return waiting or _enter_step(b, step_index, f"canary {revision} is ready")
    return _in_step(b, revision, step_index)


def _warming_up(b: _Builder, revision: str, workload: Workload | None, wanted: int) -> Decision:
    timeout = b.spec.strategy.warmup.readiness_timeout
    waited = _since(b.status, "rolloutStartedAt", b.now) or 0.0
    ready = workload.ready if workload else 0
    if waited >= timeout:
        return _rollback(b, "ReadinessTimeout", f"canary not ready within {timeout:g}s ({ready}/{wanted} ready)")
    b.wake_in(min(WARMUP_POLL, timeout - waited))
    return b.finish(Action.WAIT, Phase.PROGRESSING, "WarmingUp", f"canary {revision} warming up: {ready}/{wanted} ready")


def _in_step(b: _Builder, revision: str, step_index: int) -> Decision:
    spec, obs, now, status = b.spec, b.obs, b.now, b.status
    steps = spec.strategy.steps

    # Analysis results of this cycle.
    if obs.samples is not None:
        verdict = _judge(b, obs.samples)
        if verdict is not None:
            return verdict

    # Pause (level-triggered): hold weight, keep analysing, resume where it was.
    if obs.commands.paused:
        if not status.get("pausedAt"):
            status["pausedAt"] = ts(now)
            b.event("Normal", "Paused", "paused by user")
        _schedule_analysis(b)
        return b.finish(Action.PAUSE, Phase.PAUSED, "PausedByUser",
                        f"paused by user at step {step_index} (weight {status.get('canaryWeight')})")
    if status.get("pausedAt"):
        paused_for = _since(status, "pausedAt", now) or 0.0
        status.pop("pausedAt")
        started = parse_ts(status.get("stepStartedAt"))
        if started is not None:  # the pause does not count toward the step's hold
            status["stepStartedAt"] = ts(started + timedelta(seconds=paused_for))
        b.event("Normal", "Resumed", "resumed by user")

    if b.command("promote_full"):
        return _begin_promotion(b, revision, "promoted by user (full)")

    no_data_paused = status.get("noDataPaused")
    step = steps[step_index]
    analysis_ok = _analysis_allows_advance(b)
    if step.hold is None:
        if b.command("promote"):
            return _advance(b, step_index, "promoted by user")
        _schedule_analysis(b)
        return b.finish(Action.HOLD, Phase.PAUSED, "ManualGate",
                        f"step {step_index} (weight {step.weight}) waits for promote; {_analysis_summary(b)}")
    if b.command("promote"):
        return _advance(b, step_index, "promoted by user")
    if no_data_paused:
        _schedule_analysis(b)
        return b.finish(Action.PAUSE, Phase.PAUSED, "NoData", status.get("message") or "paused: no data")
    held = _since(status, "stepStartedAt", now) or 0.0
    if held >= step.hold and analysis_ok:
        return _advance(b, step_index, f"step {step_index} held {step.hold:g}s with passing analysis")
    if held < step.hold:
        b.wake_in(step.hold - held)
    _schedule_analysis(b)
    return b.finish(Action.HOLD, Phase.PROGRESSING, "Analyzing",
                    f"step {step_index} (weight {status.get('canaryWeight')}): {_analysis_summary(b)}")


def _enter_step(b: _Builder, index: int, why: str) -> Decision:
    step = b.spec.strategy.steps[index]
    b.status.update({"currentStep": index, "canaryWeight": step.weight, "stepStartedAt": ts(b.now),
                     "passedChecks": 0})
    b.status.pop("noDataSince", None)
    b.status.pop("noDataPaused", None)
    b.event("Normal", "StepStarted", f"{why}; step {index}: canary weight {step.weight}")
    _schedule_analysis(b)
    if step.hold is not None:
        b.wake_in(step.hold)
    return b.finish(Action.ADVANCE, Phase.PROGRESSING, "StepStarted",
                    f"step {index}: canary weight {step.weight}")


def _advance(b: _Builder, index: int, why: str) -> Decision:
    if index + 1 < len(b.spec.strategy.steps):
        return _enter_step(b, index + 1, why)
    return _gates(b, "beforePromotion") or _begin_promotion(b, b.status["canaryRevision"], why)


def _gates(b: _Builder, stage: str) -> Decision | None:
    """None when every gate of the stage passed; else a wait, or a rollback on a failed gate."""
    gates = b.spec.strategy.gates.stage(stage)
    if not gates:
        return None
    recorded = dict(b.status.get("gates") or {})
    for name, result in b.obs.gates.items():
        if result.state in ("Passed", "Failed"):
            recorded[f"{stage}/{name}"] = {"result": result.state, "reason": result.reason, "at": ts(b.now)}
            b.event("Normal" if result.state == "Passed" else "Warning", f"Gate{result.state}",
                    f"gate {name} ({stage}): {result.reason}")
    b.status["gates"] = recorded
    for gate in gates:
        entry = recorded.get(f"{stage}/{gate.name}")
        if entry and entry["result"] == "Failed":
            return _rollback(b, "GateFailed", f"gate {gate.name} ({stage}) failed: {entry['reason']}")
    pending = [gate.name for gate in gates if f"{stage}/{gate.name}" not in recorded]
    if not pending:
        b.status.pop("gating", None)
        return None
    b.status["gating"] = stage
    b.wake_in(WARMUP_POLL)
    state = b.obs.gates.get(pending[0])
    detail = f": {state.reason}" if state else ""
    return b.finish(Action.WAIT, Phase.PROGRESSING, "Gating", f"waiting for gate {pending[0]} ({stage}){detail}")


def _begin_promotion(b: _Builder, revision: str, why: str) -> Decision:
    b.event("Normal", "Promoting", f"{why}; scaling canary {revision} to {b.spec.replicas} replicas")
    b.wake_in(WARMUP_POLL)
    return b.finish(Action.PROMOTE, Phase.PROMOTING, "Promoting", f"promoting {revision}: {why}")


def _finish_promotion(b: _Builder, revision: str) -> Decision:
    workload = b.obs.workloads.get(revision)
    if workload is None or not workload.up_to_date or workload.ready < b.spec.replicas:
        ready = workload.ready if workload else 0
        b.wake_in(WARMUP_POLL)
        return b.finish(Action.WAIT, Phase.PROMOTING, "Promoting",
                        f"promoting {revision}: {ready}/{b.spec.replicas} replicas ready")
    old_stable = b.status.get("stableRevision")
    b.history(revision, "Promoted", b.status.get("message") or "all steps passed", b.status.get("rolloutStartedAt"))
    _clear_canary(b)
    b.status["stableRevision"] = revision
    b.status["modelVersion"] = b.spec.model.version
    b.schedule_scale_down(old_stable)
    b.event("Normal", "Promoted", f"revision {revision} promoted to stable; {old_stable} scaled down after "
                                  f"{b.spec.rollback.scale_down_delay:g}s")
    return b.finish(Action.PROMOTED, Phase.SUCCEEDED, "Promoted", f"revision {revision} promoted and stable")


# ---------------------------------------------------------------- analysis

def analysis_window_start(spec: RolloutSpec, status: Mapping[str, Any]) -> datetime | None:
    """Samples count from the later of the step's start and the end of the warm-up skip."""
    ready = parse_ts(status.get("canaryReadyAt"))
    step = parse_ts(status.get("stepStartedAt"))
    if ready is None or step is None:
        return None
    return max(step, ready + timedelta(seconds=spec.strategy.warmup.skip_analysis_for))


def analysis_due(spec: RolloutSpec, status: Mapping[str, Any], now: datetime) -> bool:
    """Whether the reconciler should run the queries before calling decide()."""
    if not spec.analysis.metrics or not status.get("canaryRevision"):
        return False
    if status.get("phase") not in (Phase.PROGRESSING.value, Phase.PAUSED.value):
        return False
    if int(status.get("canaryWeight") or 0) <= 0:
        return False
    start = analysis_window_start(spec, status)
    if start is None or now < start:
        return False
    last = _since(status, "lastAnalysisAt", now)
    return last is None or last >= spec.analysis.interval - 0.05


def analysis_window(spec: RolloutSpec, status: Mapping[str, Any], now: datetime) -> float:
    """Seconds of samples a query should cover: the step so far, at least one interval, at most maxWindow."""
    start = analysis_window_start(spec, status)
    elapsed = (now - start).total_seconds() if start else 0.0
    return max(spec.analysis.interval, min(elapsed, spec.analysis.window_cap))


def _schedule_analysis(b: _Builder) -> None:
    if not b.spec.analysis.metrics or not b.status.get("canaryRevision"):
        return
    start = analysis_window_start(b.spec, b.status)
    if start is not None and b.now < start:
        b.wake_in((start - b.now).total_seconds())
        return
    last = _since(b.status, "lastAnalysisAt", b.now)
    b.wake_in(0.05 if last is None else b.spec.analysis.interval - last)


def _analysis_allows_advance(b: _Builder) -> bool:
    """A step may end only on a complete, passing analysis taken during the step."""
    if not b.spec.analysis.metrics:
        return True
    last = parse_ts(b.status.get("lastAnalysisAt"))
    started = parse_ts(b.status.get("stepStartedAt"))
    if last is None or started is None or last < started:
        return False
    results = b.status.get("lastAnalysis") or []
    return bool(results) and all(r.get("verdict") == Verdict.PASS.value for r in results) \
        and int(b.status.get("passedChecks") or 0) >= 1


def _analysis_summary(b: _Builder) -> str:
    results = b.status.get("lastAnalysis") or []
    if not b.spec.analysis.metrics:
        return "no metrics configured"
    if not results:
        return "waiting for the first analysis"
    return "; ".join(f"{r['metric']} {r['verdict'].lower()}" for r in results)


def _judge(b: _Builder, samples: tuple[MetricSample, ...]) -> Decision | None:
    """Judge this cycle's samples; returns a rollback/pause decision, or None to go on."""
    spec, status, now = b.spec, b.status, b.now
    rules = {m.name: m for m in spec.analysis.metrics}
    failures = dict(status.get("failures") or {})
    results = []
    worst: tuple[str, Judgement] | None = None
    inconclusive: list[tuple[str, Judgement]] = []
    for sample in samples:
        rule = rules[sample.metric]
        judgement = evaluate(rule, sample, spec.analysis.samples.min)
        results.append({
            "metric": rule.name,
            "value": _finite(judgement.value),
            "threshold": rule.threshold_text,
            "verdict": judgement.verdict.value,
            "reason": judgement.reason,
            "samples": _finite(judgement.samples),
            "query": sample.query,
            "at": ts(now),
            "evidence": {k: (_finite(v) if isinstance(v, float) else v) for k, v in judgement.evidence.items()},
        })
        if judgement.verdict is Verdict.FAIL:
            failures[rule.name] = int(failures.get(rule.name, 0)) + 1
            if (rule.critical or failures[rule.name] >= rule.failure_limit) and worst is None:
                worst = (rule.name, judgement)
        elif judgement.verdict is Verdict.PASS:
            failures[rule.name] = 0
        else:
            inconclusive.append((rule.name, judgement))
    status["lastAnalysis"] = results
    status["lastAnalysisAt"] = ts(now)
    status["failures"] = failures
    if worst is not None:
        name, judgement = worst
        return _rollback(b, "AnalysisFailed", f"{name}: {judgement.reason}")
    missing = [(name, j) for name, j in inconclusive if _lacks_data(rules[name], j, spec.analysis.samples.min)]
    if missing:
        status.setdefault("noDataSince", ts(now))
        quiet = _since(status, "noDataSince", now) or 0.0
        policy = spec.analysis.no_data
        name, judgement = missing[0]
        if quiet >= policy.hold:
            why = f"no conclusive data for {quiet:.0f}s: {name}: {judgement.reason}"
            if policy.then == "rollback":
                return _rollback(b, "NoData", why)
            if not status.get("noDataPaused"):
                b.event("Warning", "NoData", f"paused: {why}")
            status["noDataPaused"] = True
            status["message"] = f"paused: {why}"
        else:
            b.wake_in(policy.hold - quiet)
        return None
    status.pop("noDataSince", None)
    status.pop("noDataPaused", None)
    if inconclusive:
        return None  # enough samples, evidence still undecided: hold the step, it is not "no data"
    status.pop("noDataSince", None)
    status.pop("noDataPaused", None)
    status["passedChecks"] = int(status.get("passedChecks") or 0) + 1
    return None


def _lacks_data(rule: MetricRule, judgement: Judgement, default_min_samples: int) -> bool:
    """Inconclusive for want of data (none, NaN, too few samples), as opposed to undecided evidence."""
    needed = rule.min_samples if rule.min_samples is not None else default_min_samples
    samples = judgement.samples
    return samples is None or (isinstance(samples, float) and math.isnan(samples)) or samples < max(needed, 1)


def _finite(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def invalid(status: Mapping[str, Any], field_path: str, message: str, generation: int, now: datetime) -> Decision:
    """An invalid spec: say so, keep every other field (traffic stays where it is)."""
    new = dict(status)
    text = f"invalid spec: {field_path}: {message}"
    first_time = status.get("phase") != Phase.INVALID_SPEC.value or status.get("observedGeneration") != generation
    new["phase"] = Phase.INVALID_SPEC.value
    new["message"] = text
    new["observedGeneration"] = generation
    new["conditions"] = _conditions(Phase.INVALID_SPEC, "InvalidSpec", text, generation,
                                    list(status.get("conditions") or []), now)
    events = (Event("Warning", "InvalidSpec", text),) if first_time else ()
    return Decision(action=Action.INVALID, status=new, events=events, requeue_after=STEADY_REQUEUE * 10)
