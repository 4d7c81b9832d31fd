"""The pure decision core: `decide(spec, status, observations, now) -> Decision`.

No I/O, no kopf, no clock. Status is the only state: everything a later call needs
(step, weight, timers, failure counts, handled commands) is written back into the new
status, a frozen `RolloutStatus` (modelrollout.status) that every function here takes and
returns. `desired_state(spec, status, now)` then says what the cluster must look like for a
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
from modelrollout.spec import MetricRule, RolloutSpec, Step
from modelrollout.status import Condition, GateRecord, HistoryEntry, MetricResult, RolloutStatus, ScaleDown
from modelrollout.stats import Judgement, Verdict

HISTORY_LIMIT = 20
CONFIRM_POLL = 0.5  # seconds between read-backs while the cluster has not confirmed a step's weight
ACT_CONDITIONS = ("Applied",)  # conditions the act layer owns (see record_act)
WARMUP_POLL = 1.0  # seconds between readiness checks while waiting for pods
STEADY_REQUEUE = 60.0
PROMOTED_FULL = "promoted by user (full)"  # a promotion that skips the remaining steps and the promotion watch


class Phase(str, Enum):
    PENDING = "Pending"
    INITIALIZING = "Initializing"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    INVALID_SPEC = "InvalidSpec"
    DEGRADED = "Degraded"  # Succeeded, but the cluster does not carry it (record_act): a route gone, a write refused


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
    """User commands from annotations, as written (`revision=<rev>[,step=<n>],id=<token>`, see
    parse_command). A value acts once: status.handledCommands remembers it."""

    promote: str | None = None
    promote_full: str | None = None
    abort: str | None = None
    retry: str | None = None
    paused: bool = False


@dataclass(frozen=True)
class CommandTarget:
    """What a promote/abort/retry annotation names: `revision=<rev>[,step=<n>],id=<token>`."""

    revision: str
    step: int | None
    id: str


def parse_command(value: str) -> CommandTarget | None:
    """The release a command value names; None for a value that names none (a bare token)."""
    fields = dict(part.partition("=")[::2] for part in value.split(","))
    if not fields.get("revision") or not fields.get("id"):
        return None
    step = fields.get("step")
    if step is not None and not step.isdigit():
        return None
    return CommandTarget(fields["revision"], None if step is None else int(step), fields["id"])


def command_value(revision: str, step: int | None, token: str) -> str:
    return f"revision={revision}{'' if step is None else f',step={step}'},id={token}"


def _names_nothing(name: str) -> str:
    return f"it names no release (write revision=<revision>{',step=<step>' if name == 'promote' else ''}," \
           f"id=<new token>)"


def _command_text(name: str, value: str) -> str:
    label = "promote --full" if name == "promote_full" else name
    named = parse_command(value)
    if named is None:
        return f"{label} {value!r}"
    return f"{label} for revision {named.revision}" + ("" if named.step is None else f" step {named.step}")


@dataclass(frozen=True)
class GateResult:
    state: str  # Pending | Passed | Failed
    reason: str


@dataclass(frozen=True)
class HandedOver:
    """A revision that serves users before the rollout has a stable one: handed over by a deleted
    ModelRollout of the same name (`onDelete: Handover`), or the model an InferenceService served
    before its first rollout. The rollout adopts it as stable."""

    revision: str
    model_version: str | None = None
    origin: str = "handed over by a deleted ModelRollout of this name"
    # False: a model the platform does not report serving, nor ever having served (an
    # InferenceService's own model while KServe says nothing either way): adopted if it serves
    # within `warmup.readinessTimeout`, else the template takes its place (it has no users to keep).
    serving: bool = True


@dataclass(frozen=True)
class Observations:
    generation: int = 1
    workloads: Mapping[str, Workload] = field(default_factory=dict)
    commands: Commands = Commands()
    # None: no analysis ran in this cycle. A tuple (maybe with errors) when it did.
    samples: tuple[MetricSample, ...] | None = None
    # Results of the gates of the stage status.gating names, run in this cycle.
    gates: Mapping[str, GateResult] = field(default_factory=dict)
    # The canary's share of user traffic that the cluster carries now (router read-back, Ready
    # pods); None when it could not be read. Steps count from this, never from a hoped-for weight.
    traffic: int | None = None
    # The percent of live requests the cluster copies to the canary (router read-back of a mirror);
    # None when unknown, or when the spec has no mirror step (nothing is read then).
    mirror: int | None = None
    # Read only while the rollout has no stable revision: what a deleted namesake left serving.
    handed_over: HandedOver | None = None


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    action: Action
    status: RolloutStatus
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
    canary_mirror: int = 0  # percent of live requests copied to the canary (answers discarded)


# ---------------------------------------------------------------- time helpers

def ts(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _since(stamp: str | None, now: datetime) -> float | None:
    moment = parse_ts(stamp)
    return None if moment is None else (now - moment).total_seconds()


# ---------------------------------------------------------------- replica arithmetic

def canary_replicas(spec: RolloutSpec, weight: int) -> int:
    """Canary pods a step needs.

    replicas router: traffic is shared by Ready pods, so the canary gets exactly N*w/100 pods
    and the stable gives up as many (spec validation refuses weights that are not whole pods).
    Other routers: the route splits traffic; the canary needs capacity for its share,
    ceil(N*w/100), at least one so it can warm up before it takes traffic.
    """
    n = spec.replicas
    if n == 0:
        return 0
    wanted = math.ceil(n * weight / 100)
    if spec.traffic_routing.router == "replicas":
        return min(n, wanted)
    return max(1, min(n, wanted))


def carried_weight(spec: RolloutSpec, ready_canary: int) -> int:
    """The highest weight that `ready_canary` Ready pods can carry (capacity for N*w/100 pods)."""
    if spec.replicas == 0:
        return 100
    return min(100, (100 * ready_canary) // spec.replicas)


def _step_index(spec: RolloutSpec, status: RolloutStatus) -> int:
    return min(status.current_step or 0, len(spec.strategy.steps) - 1)


def _step_load(step: Step) -> int:
    """The percent of live requests a step has the canary answer: served (weight) or copied (mirror)."""
    return max(step.weight, step.mirror)


def _step_text(step: Step) -> str:
    return f"mirror {step.mirror}%" if step.mirror else f"weight {step.weight}"


def target_mirror(spec: RolloutSpec, status: RolloutStatus, workloads: Mapping[str, Workload]) -> int:
    """The percent of live requests to copy to the canary now: a mirror step's, once entered, capped
    by Ready canary capacity like a weight; zero in every other step and phase."""
    canary = status.canary_revision
    if not canary or not status.step_entered_at:
        return 0
    if status.phase not in (Phase.PROGRESSING.value, Phase.PAUSED.value):
        return 0
    mirror = spec.strategy.steps[_step_index(spec, status)].mirror
    workload = workloads.get(canary)
    return min(mirror, carried_weight(spec, workload.ready if workload else 0))


def target_weight(spec: RolloutSpec, status: RolloutStatus, workloads: Mapping[str, Workload]) -> int:
    """The canary weight to apply now: the entered step's weight, capped by Ready canary capacity.

    Zero while the canary warms up, waits for gates before traffic, or has been rolled back; with
    the replicas router a Ready canary pod serves at once, so its first step starts with the canary.
    """
    canary = status.canary_revision
    if not canary or not (status.step_entered_at or spec.traffic_routing.router == "replicas"):
        return 0
    if status.phase not in (Phase.PROGRESSING.value, Phase.PAUSED.value, Phase.PROMOTING.value):
        return 0
    workload = workloads.get(canary)
    capacity = carried_weight(spec, workload.ready if workload else 0)
    planned = [step.weight for step in spec.strategy.steps[:_step_index(spec, status) + 1]]
    if status.phase == Phase.PROMOTING.value and status.watching_since:
        planned.append(100)  # the promotion watch: all traffic, while the stable stands by
    # The highest weight of the plan so far that the Ready canary pods carry: traffic only ever
    # takes the plan's weights, and moves to the step's once its capacity is Ready.
    return max([0] + [weight for weight in planned if weight <= capacity])


def desired_state(spec: RolloutSpec, status: RolloutStatus, workloads: Mapping[str, Workload],
                  now: datetime) -> Desired:
    stable = status.stable_revision
    canary = status.canary_revision
    phase = status.phase
    replicas: dict[str, int | None] = {}
    stable_serves = stable is not None and stable in workloads and workloads[stable].ready > 0
    for entry in status.scale_downs:
        due = parse_ts(entry.at)
        if spec.traffic_routing.router == "replicas" and not stable_serves:
            replicas[entry.revision] = -1  # its pods are the only Ready ones: kept until a stable pod is
        elif due is not None and now >= due:
            replicas[entry.revision] = None
        elif spec.traffic_routing.router == "replicas":
            replicas[entry.revision] = 0  # its pods would still take traffic: stop at once
        else:
            replicas[entry.revision] = -1  # keep as it is until the delay ends
    step_pods = 0
    if canary:
        step_pods = canary_replicas(spec, _step_load(spec.strategy.steps[_step_index(spec, status)]))
        replicas[canary] = spec.replicas if phase == Phase.PROMOTING.value else step_pods
    if stable:
        replicas[stable] = spec.replicas
        if canary and spec.traffic_routing.router == "replicas":
            # Pods are the weight: the stable gives up one pod for each Ready canary pod (never
            # more than the step plans), so the canary's share never exceeds the step's weight.
            # Promoting, it keeps the rest: a rollback stops the canary's pods at once, and the
            # stable's must still serve.
            ready_canary = workloads[canary].ready if canary in workloads else 0
            replicas[stable] = spec.replicas - min(step_pods, ready_canary)
    elif spec.revision:
        replicas[spec.revision] = spec.replicas  # the first revision: Initializing
    return Desired(
        replicas=replicas,
        stable_revision=stable or (None if awaits_handover(spec, status, now) else spec.revision),
        canary_revision=canary,
        canary_weight=target_weight(spec, status, workloads),
        canary_mirror=target_mirror(spec, status, workloads),
    )


# ---------------------------------------------------------------- conditions

def _conditions(phase: Phase, reason: str, message: str, generation: int,
                previous: tuple[Condition, ...], now: datetime) -> tuple[Condition, ...]:
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
    before = {c.type: c for c in previous}
    result = [c for c in previous if c.type in ACT_CONDITIONS]
    for kind, (truth, why) in wanted.items():
        result.append(_condition(kind, truth, why, message if truth else "", generation, before.get(kind), now))
    return tuple(result)


def _condition(kind: str, truth: bool, reason: str, message: str, generation: int, old: Condition | None,
               now: datetime) -> Condition:
    """A condition; its lastTransitionTime moves only when its status changes."""
    value = "True" if truth else "False"
    if old is not None and (old.status, old.reason, old.message, old.observed_generation) == \
            (value, reason, message, generation) and old.last_transition_time:
        return old  # unchanged: most passes change no condition, and a model is not free to build
    since = old.last_transition_time if old is not None and old.status == value else None
    return Condition(type=kind, status=value, reason=reason, message=message, observed_generation=generation,
                     last_transition_time=since or ts(now))


def _set_condition(conditions: tuple[Condition, ...], kind: str, truth: bool, reason: str, message: str,
                   generation: int, now: datetime) -> tuple[Condition, ...]:
    old = next((c for c in conditions if c.type == kind), None)
    new = _condition(kind, truth, reason, message, generation, old, now)
    return conditions + (new,) if old is None else tuple(new if c.type == kind else c for c in conditions)


ACT_BACKOFF_CAP = 60.0


@dataclass(frozen=True)
class ActResult:
    """What acting on a decision achieved: the weight read back, or why it failed."""

    confirmed_weight: int | None
    target_weight: int
    failure_reason: str | None = None  # RouteNotFound, Forbidden, Conflict, ApplyFailed, ...
    failure_message: str = ""
    confirmed_mirror: int | None = None  # None: not read (no mirror step in the spec) or unknown
    target_mirror: int = 0


def record_act(status: RolloutStatus, generation: int, result: ActResult, now: datetime,
               max_backoff: float = ACT_BACKOFF_CAP) -> tuple[RolloutStatus, tuple[Event, ...], float | None]:
    """Fold what the act layer achieved into the status: the confirmed weight, the `Applied`
    condition, and Ready only while the cluster carries what the status asks for.

    Returns the status, the events (a Warning when acting starts failing or changes reason) and,
    on failure, a capped exponential backoff before the next try.
    """
    changes: dict[str, Any] = {"canary_weight": result.confirmed_weight}  # None: unknown, not the last value read
    if result.confirmed_mirror is not None:
        changes["canary_mirror"] = result.confirmed_mirror
    conditions = status.conditions
    before = status.condition("Applied")
    events: list[Event] = []
    backoff = None
    if result.failure_reason:
        attempts = (status.act_failures or 0) + 1
        changes["act_failures"] = attempts
        message = f"{result.failure_message} (attempt {attempts})"
        conditions = _set_condition(conditions, "Applied", False, result.failure_reason, message, generation, now)
        if status.phase == Phase.SUCCEEDED.value:  # never Succeeded while the cluster does not carry it
            changes.update(phase=Phase.DEGRADED.value, message=f"not applied: {result.failure_message}")
        if before is None or before.status != "False" or before.reason != result.failure_reason:
            events.append(Event("Warning", result.failure_reason, result.failure_message))
        backoff = min(max_backoff, ACT_BACKOFF_CAP, 2.0 ** min(attempts - 1, 6))
    else:
        changes["act_failures"] = None
        conditions = _set_condition(conditions, "Applied", True, "Applied",
                                    "the cluster carries the decided state", generation, now)
        if before is not None and before.status == "False":
            events.append(Event("Normal", "Applied", "acting works again: the cluster carries the decided state"))
    # A weight that cannot be read back (unknown, e.g. KServe still moving traffic) is not carried.
    converged = result.confirmed_weight == result.target_weight and \
        (result.confirmed_mirror is None or result.confirmed_mirror == result.target_mirror)
    if result.failure_reason:
        conditions = _withhold_ready(conditions, result.failure_reason, result.failure_message, generation, now)
    elif not converged:
        conditions = _withhold_ready(conditions, "Converging", _carried_text(result.confirmed_weight,
                                                                             result.target_weight), generation, now)
    return status.replace(conditions=conditions, **changes), tuple(events), backoff


def _withhold_ready(conditions: tuple[Condition, ...], reason: str, message: str, generation: int,
                    now: datetime) -> tuple[Condition, ...]:
    """Ready and Healthy False, where True: the cluster does not carry the decided state."""
    for kind in ("Ready", "Healthy"):
        condition = next((c for c in conditions if c.type == kind), None)
        if condition is not None and condition.status == "True":
            conditions = _set_condition(conditions, kind, False, reason, message, generation, now)
    return conditions


def _carried_text(carried: int | None, target: int) -> str:
    return f"canary weight {'unknown' if carried is None else carried} carried, {target} decided"


def _routing(desired: Desired) -> tuple[str | None, str | None, int, int]:
    return desired.stable_revision, desired.canary_revision, desired.canary_weight, desired.canary_mirror


def write_before_acting(spec: RolloutSpec, stored: RolloutStatus, decided: RolloutStatus,
                        workloads: Mapping[str, Workload], now: datetime) -> bool:
    """Whether a decided status routes users otherwise than the status stored on the cluster does
    (another stable or canary revision, weight or mirror). Such a decision is written before it is
    acted on: an operator restarted after acting, before a later write, would start from the stored
    status and route traffic back (re-open a rolled-back canary, repeat a step)."""
    return _routing(desired_state(spec, stored, workloads, now)) != \
        _routing(desired_state(spec, decided, workloads, now))


def intent(status: RolloutStatus, generation: int, carried: int | None, target: int,
           now: datetime) -> RolloutStatus:
    """A decided status as written before acting on it: the weight carried so far, and Ready False
    until the cluster carries the decided one (the write after acting records that)."""
    if carried == target:
        return status
    return status.replace(conditions=_withhold_ready(status.conditions, "Converging", _carried_text(carried, target),
                                                     generation, now))


# ---------------------------------------------------------------- the decision


class _Builder:
    """Accumulates one decision: a copy of the status, events and the next wake-up."""

    def __init__(self, spec: RolloutSpec | None, status: RolloutStatus, obs: Observations, now: datetime) -> None:
        # None: an invalid spec (core.invalid), which uses only the status, commands and history.
        self.spec = spec
        self.old = status
        self.status = status
        self.obs = obs
        self.now = now
        self.events: list[Event] = []
        self.wakeups: list[float] = []
        if obs.traffic is not None:  # the weight the cluster carries, as read back
            self.set(canary_weight=obs.traffic)
            if obs.traffic > 0 and status.canary_revision and not status.serving_since:
                self.set(serving_since=ts(now))
        if obs.mirror is not None:  # the mirror the cluster carries, as read back
            self.set(canary_mirror=obs.mirror)

    def set(self, **changes: Any) -> None:
        self.status = self.status.replace(**changes)

    # -- commands: a value acts once, and only on the release (and step) it names
    def _take(self, name: str) -> str | None:
        """The command's value if not handled yet; it is handled from now on."""
        value = getattr(self.obs.commands, name)
        key = {"promote_full": "promoteFull"}.get(name, name)
        if not value or self.status.handled_commands.get(key) == value:
            return None
        self.set(handled_commands={**self.status.handled_commands, key: value})
        return value

    def command(self, name: str, revision: str, step: int | None = None) -> bool:
        """Whether a new command names `revision` (and, for promote, `step`); one naming anything
        else is handled without acting, with a CommandIgnored event saying why."""
        value = self._take(name)
        if value is None:
            return False
        named = parse_command(value)
        if named is None:
            why = _names_nothing(name)
        elif named.revision != revision:
            why = f"revision {named.revision} is not the {'rolled-back' if name == 'retry' else 'canary'} " \
                  f"revision ({revision})"
        elif name == "promote" and named.step != step:
            why = f"the current step is {step}"
        else:
            return True
        self.event("Warning", "CommandIgnored", f"{_command_text(name, value)} ignored: {why}")
        return False

    def ignore_commands(self, why: str, *names: str) -> None:
        """Commands with nothing to act on here are handled, visibly."""
        for name in names:
            value = self._take(name)
            if value is not None:
                reason = why if parse_command(value) else _names_nothing(name)
                self.event("Warning", "CommandIgnored", f"{_command_text(name, value)} ignored: {reason}")

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def wake_in(self, seconds: float | None) -> None:
        if seconds is not None:
            self.wakeups.append(max(0.05, seconds))

    def history(self, revision: str | None, result: str, reason: str, started: str | None) -> None:
        model_version = self.status.canary_model_version or (self.spec.model.version if self.spec else None)
        entry = HistoryEntry(revision=revision, model_version=model_version, result=result, reason=reason,
                             started_at=started or ts(self.now), finished_at=ts(self.now))
        self.set(history=((entry,) + self.status.history)[:HISTORY_LIMIT])

    def schedule_scale_down(self, revision: str | None) -> None:
        if not revision:
            return
        delay = self.spec.rollback.scale_down_delay
        entries = tuple(e for e in self.status.scale_downs if e.revision != revision)
        self.set(scale_downs=entries + (ScaleDown(revision=revision, at=ts(self.now + timedelta(seconds=delay))),))

    def finish(self, action: Action, phase: Phase, reason: str, message: str) -> Decision:
        self.set(phase=phase.value, message=message, observed_generation=self.obs.generation,
                 model_version=self.status.model_version or self.spec.model.version,
                 scale_downs=self._pending_scale_downs(),
                 conditions=_conditions(phase, reason, message, self.obs.generation, self.old.conditions, self.now))
        requeue = min(self.wakeups) if self.wakeups else STEADY_REQUEUE
        return Decision(action=action, status=self.status, events=tuple(self.events), requeue_after=requeue)

    def _pending_scale_downs(self) -> tuple[ScaleDown, ...]:
        """Entries stay until their delay has passed (the reconciler deletes the Deployment then)."""
        keep = []
        live = {self.status.stable_revision, self.status.canary_revision}
        for entry in self.status.scale_downs:
            if entry.revision in live:
                continue
            due = parse_ts(entry.at)
            if due is not None and due > self.now:
                self.wake_in((due - self.now).total_seconds())
            keep.append(entry)
        return tuple(keep)


def _clear_canary(b: _Builder) -> None:
    """Forget the canary's progress. `canaryWeight` stays: it is what the cluster carries until a
    read-back says otherwise."""
    b.set(canary_revision=None, canary_model_version=None, current_step=None, step_weight=None, step_mirror=None,
          canary_ready_at=None, step_entered_at=None, step_started_at=None, serving_since=None,
          last_analysis_at=None, no_data_since=None, no_data_reason=None, no_data_paused=None, paused_at=None,
          rollout_started_at=None, gating=None, gates={}, promotion_reason=None, watching_since=None, failures={},
          passed_checks=0)


def _start_canary(b: _Builder, revision: str) -> Decision:
    _clear_canary(b)
    b.set(canary_revision=revision, canary_model_version=b.spec.model.version, current_step=0,
          rollout_started_at=ts(b.now), aborted_revision=None)
    b.event("Normal", "CanaryStarted", f"revision {revision} started as canary; waiting for it to be ready")
    b.wake_in(WARMUP_POLL)
    return b.finish(Action.START, Phase.PROGRESSING, "CanaryStarted",
                    f"canary {revision} started; waiting for readiness")


def _rollback(b: _Builder, reason: str, message: str) -> Decision:
    canary = b.status.canary_revision
    step = b.status.current_step
    weight = b.status.canary_weight
    if b.status.watching_since:
        full = f"rolled back: {message} while watched at full traffic before promotion (weight {weight})"
    elif step is not None:
        full = f"rolled back: {message} at step {step} (weight {weight})"
    else:
        full = f"rolled back: {message}"
    b.history(canary, "RolledBack", message, b.status.rollout_started_at)
    b.schedule_scale_down(canary)
    _clear_canary(b)
    b.set(aborted_revision=canary)
    b.event("Warning", "RolledBack", full)
    return b.finish(Action.ROLLBACK, Phase.ROLLED_BACK, reason, full)


def decide(spec: RolloutSpec, status: RolloutStatus, obs: Observations, now: datetime) -> Decision:
    """The next status for this rollout, with events and when to look again."""
    b = _Builder(spec, status, obs, now)
    revision = spec.revision
    stable = status.stable_revision
    canary = status.canary_revision

    if not stable:
        return _initialize(b, revision)
    if revision == stable:
        return _steady(b, canary)
    if canary != revision:
        if status.aborted_revision == revision:
            return _stay_rolled_back(b, revision)
        if canary:
            b.history(canary, "Superseded", f"template changed to revision {revision}", status.rollout_started_at)
            b.schedule_scale_down(canary)
            b.event("Normal", "Superseded", f"canary {canary} superseded by revision {revision}; traffic back to stable first")
        elif obs.traffic != 0:
            return _await_stable_alone(b, revision)
        return _start_canary(b, revision)
    return _progress(b, revision)


def _await_stable_alone(b: _Builder, revision: str) -> Decision:
    """A canary starts only once the cluster carries the stable revision alone: a platform still
    moving traffic to a promoted revision (KServe) would split the canary against an older model."""
    shown = "unknown" if b.obs.traffic is None else str(b.obs.traffic)
    b.wake_in(CONFIRM_POLL)
    return b.finish(Action.WAIT, Phase.PROGRESSING, "WaitingForStable",
                    f"revision {revision} starts as canary once the cluster carries stable "
                    f"{b.status.stable_revision} alone (canary weight carried: {shown})")


def awaits_handover(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> bool:
    """The first revision waits for a model that may have users (`HandedOver.serving` False) to
    serve, and nothing may take its place yet."""
    waited = _since(status.awaiting_handover_since, now)
    return status.stable_revision is None and waited is not None and waited < spec.strategy.warmup.readiness_timeout


def _initialize(b: _Builder, revision: str) -> Decision:
    adopted = b.obs.handed_over
    if adopted is not None and adopted.revision != revision:
        if adopted.serving:
            # Users are served by what was there before this rollout: it stays stable, and the new
            # template is a canary like any other, never put in its place unjudged.
            b.set(stable_revision=adopted.revision, model_version=adopted.model_version, canary_weight=0,
                  awaiting_handover_since=None)
            b.event("Normal", "Adopted", f"revision {adopted.revision}, {adopted.origin}, is stable; "
                                         f"revision {revision} is released as a canary")
            return _start_canary(b, revision)
        # Not reported serving is not proof of no users (a status that lags, a Ready that flickers).
        b.set(awaiting_handover_since=b.status.awaiting_handover_since or ts(b.now))
        timeout = b.spec.strategy.warmup.readiness_timeout
        if b.command("promote_full", revision):  # the user's word that it has no users to keep
            b.set(awaiting_handover_since=None)
            b.event("Normal", "NotServing", f"{adopted.origin} is replaced by revision {revision} on request "
                                           f"(promote --full)")
        elif awaits_handover(b.spec, b.status, b.now):
            b.wake_in(min(WARMUP_POLL, timeout - (_since(b.status.awaiting_handover_since, b.now) or 0.0)))
            return b.finish(Action.WAIT, Phase.INITIALIZING, "AwaitingHandover",
                            f"{adopted.origin} is not reported serving: it is adopted as stable if it serves "
                            f"within {timeout:g}s, else revision {revision} takes its place (promote --full: now)")
        else:
            b.event("Normal", "NotServing", f"{adopted.origin} did not serve within {timeout:g}s: revision "
                                           f"{revision} takes its place as the first stable revision")
    else:
        b.set(awaiting_handover_since=None)
    workload = b.obs.workloads.get(revision)
    wanted = b.spec.replicas
    if workload is not None and workload.up_to_date and workload.ready >= wanted:
        b.set(stable_revision=revision, model_version=b.spec.model.version, canary_weight=0,
              awaiting_handover_since=None)
        b.history(revision, "Initialized", "first revision became stable", None)
        b.event("Normal", "Initialized", f"revision {revision} is stable with {wanted} ready replicas")
        return b.finish(Action.INITIALIZE, Phase.SUCCEEDED, "Initialized", f"revision {revision} is stable")
    ready = workload.ready if workload else 0
    b.wake_in(WARMUP_POLL)
    return b.finish(Action.WAIT, Phase.INITIALIZING, "WaitingForReplicas",
                    f"first revision {revision}: {ready}/{wanted} replicas ready")


def _steady(b: _Builder, canary: str | None) -> Decision:
    stable = b.status.stable_revision
    b.ignore_commands(f"the rollout is Succeeded (revision {stable} is stable): nothing to act on",
                      "abort", "retry", "promote", "promote_full")
    if canary:
        b.history(canary, "Superseded", "template reverted to the stable revision", b.status.rollout_started_at)
        b.schedule_scale_down(canary)
        b.event("Normal", "CanaryAbandoned", f"template reverted to stable {stable}; canary {canary} abandoned")
        _clear_canary(b)
    b.set(aborted_revision=None)
    return b.finish(Action.STEADY, Phase.SUCCEEDED, "Stable", f"revision {stable} is stable")


def _stay_rolled_back(b: _Builder, revision: str) -> Decision:
    if b.command("retry", revision):
        b.event("Normal", "Retry", f"retrying revision {revision} on request")
        return _start_canary(b, revision)
    b.ignore_commands(f"revision {revision} was rolled back", "abort", "promote", "promote_full")
    message = b.old.message or f"revision {revision} was rolled back"
    return b.finish(Action.STEADY, Phase.ROLLED_BACK, "RolledBack", message)


def _progress(b: _Builder, revision: str) -> Decision:
    spec, obs, now = b.spec, b.obs, b.now
    steps = spec.strategy.steps
    step_index = _step_index(spec, b.status)

    if b.command("abort", revision):
        return _rollback(b, "Aborted", "aborted by user")

    # A canary that serves users is judged, whatever else it waits for (warm-up, gates, capacity).
    if obs.samples is not None:
        verdict = _judge(b, obs.samples)
        if verdict is not None:
            return verdict
    overdue = _no_data_limit(b)
    if overdue is not None:
        return overdue

    if b.status.phase == Phase.PROMOTING.value:
        return _finish_promotion(b, revision)

    # Warm-up: the canary must be ready before it takes traffic.
    if not b.status.canary_ready_at:
        workload = obs.workloads.get(revision)
        wanted = canary_replicas(spec, _step_load(steps[step_index]))
        if workload is None or not workload.up_to_date or workload.ready < max(wanted, 1):
            return _warming_up(b, revision, workload, max(wanted, 1))
        b.set(canary_ready_at=ts(now))

    if not b.status.step_entered_at:
        waiting = _gates(b, "beforeTraffic")
        return waiting or _enter_step(b, step_index, f"canary {revision} is ready")
    if (b.status.current_step or 0) != step_index or b.status.step_weight != steps[step_index].weight \
            or (b.status.step_mirror or 0) != steps[step_index].mirror:
        # The spec's steps changed under a running step: re-enter the step the index now names,
        # at its own weight, and hold it afresh.
        return _enter_step(b, step_index, "the steps changed")
    return _in_step(b, revision, step_index)


def _warming_up(b: _Builder, revision: str, workload: Workload | None, wanted: int) -> Decision:
    timeout = b.spec.strategy.warmup.readiness_timeout
    waited = _since(b.status.rollout_started_at, b.now) or 0.0
    ready = workload.ready if workload else 0
    if waited >= timeout:
        return _rollback(b, "ReadinessTimeout", f"canary not ready within {timeout:g}s ({ready}/{wanted} ready)")
    b.wake_in(min(WARMUP_POLL, timeout - waited))
    _schedule_analysis(b)
    return b.finish(Action.WAIT, Phase.PROGRESSING, "WarmingUp", f"canary {revision} warming up: {ready}/{wanted} ready")


def _in_step(b: _Builder, revision: str, step_index: int) -> Decision:
    spec, obs, now = b.spec, b.obs, b.now
    steps = spec.strategy.steps
    step = steps[step_index]

    # Pause (level-triggered): hold weight, keep analysing, resume where it was.
    if obs.commands.paused:
        if not b.status.paused_at:
            b.set(paused_at=ts(now))
            b.event("Normal", "Paused", "paused by user")
        _schedule_analysis(b)
        return b.finish(Action.PAUSE, Phase.PAUSED, "PausedByUser",
                        f"paused by user at step {step_index} (weight {b.status.canary_weight})")
    if b.status.paused_at:
        paused_for = _since(b.status.paused_at, now) or 0.0
        b.set(paused_at=None)
        started = parse_ts(b.status.step_started_at)
        if started is not None:  # the pause does not count toward the step's hold
            b.set(step_started_at=ts(started + timedelta(seconds=paused_for)))
        b.event("Normal", "Resumed", "resumed by user")

    if b.command("promote_full", revision):
        return _begin_promotion(b, revision, PROMOTED_FULL)

    if not b.status.step_started_at:
        waiting = _confirm_weight(b, step_index)
        if waiting is not None:
            return waiting

    # A step that sends users nothing has nothing to judge: its hold alone ends it, and the next
    # step is judged. The last step is never such a step (nothing judged is never promoted).
    # A mirror step is judged: the canary answers copies of live requests.
    analysis_ok = _analysis_allows_advance(b) or (step.weight == 0 and not step.mirror and b.obs.traffic == 0
                                                  and step_index + 1 < len(steps))
    if step.hold is None:
        if b.command("promote", revision, step_index):
            return _advance(b, step_index, "promoted by user")
        _schedule_analysis(b)
        return b.finish(Action.HOLD, Phase.PAUSED, "ManualGate",
                        f"step {step_index} (weight {step.weight}) waits for promote; {_analysis_summary(b)}")
    if b.command("promote", revision, step_index):
        return _advance(b, step_index, "promoted by user")
    if b.status.no_data_paused:
        _schedule_analysis(b)
        return b.finish(Action.PAUSE, Phase.PAUSED, "NoData", b.status.message or "paused: no data")
    held = _since(b.status.step_started_at, now) or 0.0
    if held >= step.hold and analysis_ok:
        return _advance(b, step_index, f"step {step_index} held {step.hold:g}s with passing analysis")
    if held < step.hold:
        b.wake_in(step.hold - held)
    elif _silent(b, f"step {step_index}'s hold"):
        _schedule_analysis(b)
        return b.finish(Action.HOLD, Phase.PROGRESSING, "NoData",
                        f"step {step_index} (weight {b.status.canary_weight}) held {held:.0f}s with no conclusive "
                        f"analysis: {b.status.no_data_reason}")
    undecided_at = step.hold + spec.analysis.decide_within
    if held >= undecided_at:
        return _undecided(b, step_index, held - step.hold)
    b.wake_in(undecided_at - held)
    _schedule_analysis(b)
    return b.finish(Action.HOLD, Phase.PROGRESSING, "Analyzing",
                    f"step {step_index} (weight {b.status.canary_weight}): {_analysis_summary(b)}")


def _undecided(b: _Builder, step_index: int, overdue: float) -> Decision:
    """A step past its hold and `decideWithin` whose analysis has not passed: pause (weight kept,
    analysis running, it advances on the first PASS) and say what it still needs."""
    needs = []
    window = analysis_window(b.spec, b.status, parse_ts(b.status.last_analysis_at) or b.now)
    for result in b.status.last_analysis:
        needed, seen = result.evidence.get("samples_needed"), result.evidence.get("canary_total")
        if result.verdict == Verdict.PASS.value or needed is None or not seen:
            continue
        rate = seen / window
        more = max(0.0, needed - seen)
        needs.append(f"{result.metric} needs ~{more:,.0f} more canary requests "
                     f"(~{more / rate:,.0f}s at {rate:.3g}/s)")
    what = "; ".join(needs) or _analysis_summary(b)
    message = (f"paused: step {step_index} (weight {b.status.canary_weight}) undecided {overdue:.0f}s "
               f"after its hold: {what}; promote to go on, or wait")
    if b.old.phase != Phase.PAUSED.value:
        b.event("Warning", "Undecided", message)
    _schedule_analysis(b)
    return b.finish(Action.PAUSE, Phase.PAUSED, "Undecided", message)


def _confirm_weight(b: _Builder, step_index: int) -> Decision | None:
    """A step's hold starts only once the cluster carries its weight (router read-back, Ready pods)."""
    step = b.spec.strategy.steps[step_index]
    carried = b.obs.traffic
    mirrored = b.obs.mirror if step.mirror else 0  # a mirror step holds once its mirror is carried too
    if carried == step.weight and mirrored == step.mirror:
        b.set(step_started_at=ts(b.now))
        b.event("Normal", "WeightConfirmed", f"step {step_index}: the cluster carries canary {_step_text(step)}")
        if step.hold is not None:
            b.wake_in(step.hold)
        return None
    timeout = b.spec.strategy.warmup.readiness_timeout
    waited = _since(b.status.step_entered_at, b.now) or 0.0
    shown = "unknown" if carried is None else str(carried)
    if step.mirror:
        shown = f"weight {shown}, mirror {'unknown' if mirrored is None else f'{mirrored}%'}"
    if waited >= timeout:
        return _rollback(b, "WeightNotConfirmed",
                         f"step {step_index}: {_step_text(step)} not confirmed within {timeout:g}s (carried: {shown})")
    b.wake_in(min(CONFIRM_POLL, timeout - waited))
    _schedule_analysis(b)
    return b.finish(Action.WAIT, Phase.PROGRESSING, "ConfirmingWeight",
                    f"step {step_index}: waiting for the cluster to carry canary {_step_text(step)} "
                    f"(carried: {shown})")


def _enter_step(b: _Builder, index: int, why: str) -> Decision:
    step = b.spec.strategy.steps[index]
    b.set(current_step=index, step_weight=step.weight, step_mirror=step.mirror or None, step_entered_at=ts(b.now),
          passed_checks=0, serving_since=b.status.serving_since or ts(b.now), step_started_at=None,
          no_data_since=None, no_data_reason=None, no_data_paused=None)
    b.event("Normal", "StepStarted", f"{why}; step {index}: canary {_step_text(step)}")
    b.wake_in(CONFIRM_POLL)
    _schedule_analysis(b)
    return b.finish(Action.ADVANCE, Phase.PROGRESSING, "StepStarted",
                    f"step {index}: setting canary {_step_text(step)}")


def _advance(b: _Builder, index: int, why: str) -> Decision:
    if index + 1 < len(b.spec.strategy.steps):
        return _enter_step(b, index + 1, why)
    return _gates(b, "beforePromotion") or _begin_promotion(b, b.status.canary_revision or "", why)


def _gates(b: _Builder, stage: str) -> Decision | None:
    """None when every gate of the stage passed; else a wait, or a rollback on a failed gate."""
    gates = b.spec.strategy.gates.stage(stage)
    if not gates:
        return None
    recorded = dict(b.status.gates)
    for name, result in b.obs.gates.items():
        if result.state in ("Passed", "Failed"):
            recorded[f"{stage}/{name}"] = GateRecord(result=result.state, reason=result.reason, at=ts(b.now))
            b.event("Normal" if result.state == "Passed" else "Warning", f"Gate{result.state}",
                    f"gate {name} ({stage}): {result.reason}")
    b.set(gates=recorded)
    for gate in gates:
        entry = recorded.get(f"{stage}/{gate.name}")
        if entry and entry.result == "Failed":
            return _rollback(b, "GateFailed", f"gate {gate.name} ({stage}) failed: {entry.reason}")
    pending = [gate.name for gate in gates if f"{stage}/{gate.name}" not in recorded]
    if not pending:
        b.set(gating=None)
        return None
    b.set(gating=stage)
    b.wake_in(WARMUP_POLL)
    state = b.obs.gates.get(pending[0])
    detail = f": {state.reason}" if state else ""
    return b.finish(Action.WAIT, Phase.PROGRESSING, "Gating", f"waiting for gate {pending[0]} ({stage}){detail}")


def _begin_promotion(b: _Builder, revision: str, why: str) -> Decision:
    b.event("Normal", "Promoting", f"{why}; scaling canary {revision} to {b.spec.replicas} replicas")
    b.set(promotion_reason=why)  # the history says why, not the last scaling message
    b.wake_in(WARMUP_POLL)
    return b.finish(Action.PROMOTE, Phase.PROMOTING, "Promoting", f"promoting {revision}: {why}")


def _finish_promotion(b: _Builder, revision: str) -> Decision:
    workload = b.obs.workloads.get(revision)
    if workload is None or not workload.up_to_date or workload.ready < b.spec.replicas:
        ready = workload.ready if workload else 0
        b.wake_in(WARMUP_POLL)
        _schedule_analysis(b)
        return b.finish(Action.WAIT, Phase.PROMOTING, "Promoting",
                        f"promoting {revision}: {ready}/{b.spec.replicas} replicas ready")
    if b.command("promote_full", revision):
        b.event("Normal", "WatchSkipped", f"promotion of {revision} completed by user, without its watch")
    else:
        watching = _watch(b, revision)
        if watching is not None:
            return watching
    old_stable = b.status.stable_revision
    b.history(revision, "Promoted", b.status.promotion_reason or "all steps passed", b.status.rollout_started_at)
    _clear_canary(b)
    b.set(stable_revision=revision, model_version=b.spec.model.version)
    b.schedule_scale_down(old_stable)
    b.event("Normal", "Promoted", f"revision {revision} promoted to stable; {old_stable} scaled down after "
                                  f"{b.spec.rollback.scale_down_delay:g}s")
    return b.finish(Action.PROMOTED, Phase.SUCCEEDED, "Promoted", f"revision {revision} promoted and stable")


def _watch(b: _Builder, revision: str) -> Decision | None:
    """The promotion watch: the canary serves all traffic, still judged, while the stable stands by,
    Ready, for a rollback in one write. The analysis a step passed on lags what Prometheus has not
    scraped yet; a canary that turned bad in that lag is caught here, before it becomes stable.
    Like a step's hold, it counts from when the cluster carries all traffic on the canary, and its
    window starts afresh then. None once the watch is over with a conclusive analysis in it (or there
    is none): a watch that ends in silence runs the no-data clock instead."""
    watch = b.spec.promotion_watch
    if not watch or b.status.promotion_reason == PROMOTED_FULL:
        return None
    action = Action.HOLD
    if not b.status.watching_since:
        b.set(watching_since=ts(b.now), step_started_at=None)
        b.event("Normal", "Watching", f"canary {revision} serves all traffic for {watch:g}s, still judged; a failing "
                                      f"metric routes everyone back to stable {b.status.stable_revision}")
        action = Action.ADVANCE
    elif not b.status.step_started_at and b.obs.traffic == 100:
        b.set(step_started_at=ts(b.now))
        b.event("Normal", "WeightConfirmed", f"the cluster carries all traffic on canary {revision}; watched {watch:g}s")
    _schedule_analysis(b)
    if not b.status.step_started_at:
        b.wake_in(CONFIRM_POLL)
        carried = "unknown" if b.obs.traffic is None else str(b.obs.traffic)
        return b.finish(action, Phase.PROMOTING, "Watching",
                        f"promoting {revision}: waiting for the cluster to carry all traffic on it for its watch "
                        f"(carried: {carried})")
    watched = _since(b.status.step_started_at, b.now) or 0.0
    if watched >= watch:
        if not _silent(b, "the promotion watch"):
            return None
        return b.finish(action, Phase.PROMOTING, "NoData",
                        f"promoting {revision}: watched {watched:.0f}s of {watch:g}s with no conclusive analysis: "
                        f"{b.status.no_data_reason}; it is not stable on that")
    b.wake_in(watch - watched)
    return b.finish(action, Phase.PROMOTING, "Watching",
                    f"promoting {revision}: serving all traffic, watched {watched:.0f}s of {watch:g}s before it "
                    f"becomes stable; {_analysis_summary(b)}")


# ---------------------------------------------------------------- analysis

def _warm_until(spec: RolloutSpec, status: RolloutStatus) -> datetime | None:
    ready = parse_ts(status.canary_ready_at)
    return None if ready is None else ready + timedelta(seconds=spec.strategy.warmup.skip_analysis_for)


def in_warmup_skip(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> bool:
    """Within `skipAnalysisFor` of readiness: only critical breaches count (a loading model is
    not failing, a broken one still rolls back)."""
    until = _warm_until(spec, status)
    return until is None or now < until


def analysis_window_start(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> datetime | None:
    """Samples count from when the canary began to serve, or its step's hold began, whichever is
    later; after the warm-up skip, never from before the skip ended."""
    starts = [t for t in (parse_ts(status.serving_since), parse_ts(status.step_started_at)) if t]
    if not starts:
        return None
    start = max(starts)
    until = _warm_until(spec, status)
    if until is not None and now >= until:
        start = max(start, until)
    return start


def _serving(status: RolloutStatus) -> bool:
    """The canary may answer live requests, served or mirrored: the cluster says so, or a step asked for it."""
    load = (status.step_weight or 0) + (status.step_mirror or 0)
    return bool(status.canary_revision) and (
        (status.canary_weight or 0) > 0 or (status.canary_mirror or 0) > 0
        or (bool(status.step_entered_at) and load > 0))


def analysis_due(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> bool:
    """Whether the reconciler should run the queries before calling decide(): every interval
    while the canary serves anyone, until it is stable."""
    if not spec.analysis.metrics or not _serving(status):
        return False
    if status.phase not in (Phase.PROGRESSING.value, Phase.PAUSED.value, Phase.PROMOTING.value):
        return False
    if analysis_window_start(spec, status, now) is None:
        return False
    last = _since(status.last_analysis_at, now)
    return last is None or last >= spec.analysis.interval - 0.05


def analysis_window(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> float:
    """Seconds of samples a query should cover: the step so far, at least one interval, at most maxWindow."""
    start = analysis_window_start(spec, status, now)
    elapsed = (now - start).total_seconds() if start else 0.0
    return max(spec.analysis.interval, min(elapsed, spec.analysis.window_cap))


def recent_window(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> tuple[float, int] | None:
    """The recent window of rates from counts, which may only FAIL: from the start of the previous
    block of `recentWindow` within the step, so it spans one to two blocks. Returns its seconds and
    the block's index k >= 1 (which spends alpha), or None while the step is shorter than two blocks."""
    block = spec.analysis.recent_block
    start = analysis_window_start(spec, status, now)
    if block <= 0 or start is None:
        return None
    elapsed = (now - start).total_seconds()
    blocks = int(elapsed // block)
    if blocks < 2:
        return None
    return elapsed - (blocks - 1) * block, blocks - 1


def _schedule_analysis(b: _Builder) -> None:
    if not b.spec.analysis.metrics or not _serving(b.status):
        return
    last = _since(b.status.last_analysis_at, b.now)
    b.wake_in(0.05 if last is None else b.spec.analysis.interval - last)


def _analysis_allows_advance(b: _Builder) -> bool:
    """A step may end only on a complete, passing analysis taken during its hold, after the
    warm-up skip. No metric means nothing was judged: only a person can promote then."""
    if not b.spec.analysis.metrics:
        return False
    last = parse_ts(b.status.last_analysis_at)
    started = parse_ts(b.status.step_started_at)
    if last is None or started is None or last <= started or in_warmup_skip(b.spec, b.status, last):
        return False
    results = b.status.last_analysis
    return bool(results) and all(r.verdict == Verdict.PASS.value for r in results) \
        and (b.status.passed_checks or 0) >= 1


def _analysis_summary(b: _Builder) -> str:
    results = b.status.last_analysis
    if not b.spec.analysis.metrics:
        return "no metrics configured"
    if not results:
        return "waiting for the first analysis"
    return "; ".join(f"{r.metric} {r.verdict.lower()}" for r in results)


def _judge(b: _Builder, samples: tuple[MetricSample, ...]) -> Decision | None:
    """Judge this cycle's samples; returns a rollback decision, or None to go on."""
    spec, stamp = b.spec, ts(b.now)
    warming = in_warmup_skip(spec, b.status, b.now)
    rules = {m.name: m for m in spec.analysis.metrics}
    failures = dict(b.status.failures)
    results = []
    worst: tuple[str, Judgement] | None = None
    inconclusive: list[tuple[str, Judgement]] = []
    for sample in samples:
        rule = rules[sample.metric]
        judgement = evaluate(rule, sample, spec.analysis.samples.min, spec.analysis.pass_rule,
                             recent_windows=spec.analysis.recent_block > 0)
        results.append(MetricResult(
            metric=rule.name,
            value=_finite(judgement.value),
            threshold=rule.threshold_text,
            verdict=judgement.verdict.value,
            reason=judgement.reason,
            samples=_finite(judgement.samples),
            query=sample.query,
            at=stamp,
            evidence={k: (_finite(v) if isinstance(v, float) else v) for k, v in judgement.evidence.items()},
        ))
        if judgement.verdict is Verdict.FAIL and (rule.critical or not warming):
            failures[rule.name] = failures.get(rule.name, 0) + 1
            if (rule.critical or failures[rule.name] >= rule.failure_limit) and worst is None:
                worst = (rule.name, judgement)
        elif judgement.verdict is Verdict.PASS:
            failures[rule.name] = 0
        else:
            inconclusive.append((rule.name, judgement))
    judged: dict[str, Any] = {"last_analysis": tuple(results), "last_analysis_at": stamp, "failures": failures}
    if worst is not None:
        b.set(**judged)
        name, judgement = worst
        return _rollback(b, "AnalysisFailed", f"{name}: {judgement.reason}")
    # Warm-up samples prove nothing either way (only a critical breach counts); nor do a canary's that the
    # cluster gives no traffic yet: its data is missing because its weight is (the step's confirmation, and
    # its readiness timeout, deal with that), not for want of requests. A promotion's samples pass no check,
    # they may only fail (its steps passed; compared with a stable that serves no one, most are undecided),
    # but their silence runs the no-data clock: no judgement period passes on it.
    carried = (b.status.canary_weight or 0) > 0 or (b.status.canary_mirror or 0) > 0
    if not warming and carried:
        lacking = [f"{name}: {j.reason}" for name, j in inconclusive
                   if _lacks_data(rules[name], j, spec.analysis.samples.min)]
        if lacking:
            judged.update(no_data_since=b.status.no_data_since or stamp, no_data_reason=lacking[0])
        else:
            judged.update(no_data_since=None, no_data_reason=None, no_data_paused=None)
            # enough samples but undecided evidence holds the step; it is not "no data"
            if not inconclusive and b.status.phase != Phase.PROMOTING.value:
                judged["passed_checks"] = (b.status.passed_checks or 0) + 1
    b.set(**judged)
    return None


def no_data_overdue(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> bool:
    """The no-data limit has passed: act on it now rather than wait for another analysis."""
    quiet = _since(status.no_data_since, now)
    return quiet is not None and quiet >= spec.analysis.no_data.hold


def _no_data_limit(b: _Builder) -> Decision | None:
    """The no-data policy, checked on every pass so it acts when due, not at the next analysis."""
    quiet = _since(b.status.no_data_since, b.now)
    if quiet is None:
        return None
    policy = b.spec.analysis.no_data
    if quiet < policy.hold:
        b.wake_in(policy.hold - quiet)
        return None
    why = f"no conclusive data for {quiet:.0f}s: {b.status.no_data_reason or 'no samples'}"
    if policy.then == "rollback":
        b.event("Warning", "NoData", f"rolling back: {why}")
        return _rollback(b, "NoData", why)
    if not b.status.no_data_paused:
        b.event("Warning", "NoData", f"paused: {why}")
    b.set(no_data_paused=True, message=f"paused: {why}")
    return None


def _silent(b: _Builder, period: str) -> bool:
    """Whether a judgement period that has ended had no conclusive analysis in it: then it has not
    passed, and the no-data clock runs (from now, when no analysis came at all) until its policy acts."""
    if b.status.no_data_since:
        return True
    last, started = parse_ts(b.status.last_analysis_at), parse_ts(b.status.step_started_at)
    if last is not None and started is not None and last > started:
        return False
    b.set(no_data_since=ts(b.now), no_data_reason=f"no analysis during {period}")
    b.wake_in(b.spec.analysis.no_data.hold)
    return True


def _lacks_data(rule: MetricRule, judgement: Judgement, default_min_samples: int) -> bool:
    """Inconclusive for want of data (none, NaN, too few samples), as opposed to undecided evidence."""
    needed = rule.min_samples if rule.min_samples is not None else default_min_samples
    samples = judgement.samples
    return samples is None or (isinstance(samples, float) and math.isnan(samples)) or samples < max(needed, 1)


def _finite(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def invalid(status: RolloutStatus, field_path: str, message: str, generation: int, commands: Commands,
            now: datetime) -> Decision:
    """An invalid spec: say so. The canary's users go back to stable (the reconciler hands traffic back
    through the last valid spec's routing, status.appliedRouting); the canary stays recorded, to be
    judged again once the spec is valid, unless an abort rolls it back."""
    text = f"invalid spec: {field_path}: {message}"
    b = _Builder(None, status, Observations(generation=generation, commands=commands), now)
    canary = status.canary_revision
    if canary and b.command("abort", canary):
        b.history(canary, "RolledBack", "aborted by user", status.rollout_started_at)
        _clear_canary(b)
        b.set(aborted_revision=canary)
        b.event("Warning", "RolledBack", f"rolled back: aborted by user (canary {canary}, under an invalid spec)")
    first_time = status.phase != Phase.INVALID_SPEC.value or status.observed_generation != generation
    if first_time:
        b.event("Warning", "InvalidSpec", text)
    b.set(phase=Phase.INVALID_SPEC.value, message=text, observed_generation=generation,
          conditions=_conditions(Phase.INVALID_SPEC, "InvalidSpec", text, generation, status.conditions, now))
    return Decision(action=Action.INVALID, status=b.status, events=tuple(b.events), requeue_after=STEADY_REQUEUE * 10)
