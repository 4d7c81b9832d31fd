"""One reconcile of one ModelRollout: observe -> decide (pure) -> act -> read back -> write status.

Status is written after acting, with the weight the cluster confirms and an `Applied` condition
saying whether acting worked. A decision that routes users otherwise than the stored status
(a rollback, a promotion, a step, a new canary) is written before acting too, so that a restart
after acting resumes from it rather than route traffic back (re-open a rolled-back canary). Any
other crash before the write is harmless: the next pass decides again and repeats the same
absolute writes. A write that fails after acting is retried briefly; if it still fails, the daemon
keeps the decided status in memory and the next pass starts from it (`RolloutMemory`), never from
the older status on the cluster.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from modelrollout import core, metrics
from modelrollout.analysis import measure
from modelrollout.config import Config
from modelrollout.core import Commands, Observations, Workload
from modelrollout.gates import run_gates
from modelrollout.kube import Kube, KubeError, path
from modelrollout.notify import Notifier
from modelrollout.names import (ANNOTATION_ABORT, ANNOTATION_PAUSED, ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FULL,
                                ANNOTATION_RETRY, GROUP, PLURAL, VERSION)
from modelrollout.evaluate import MetricSample
from modelrollout.providers import MetricsProvider, make_provider
from modelrollout.routers import RUNS_WORKLOADS, RouteProblem, Router, RouteTarget, router_for
from modelrollout.spec import (ROUTERS_WITH_STANDBY_STABLE, RolloutSpec, SpecError, applied_routing,
                               is_operator_prometheus, parse_spec, routing_spec)
from modelrollout.status import RolloutStatus
from modelrollout.workloads import (ObservedDeployment, ensure_services, hand_over, restore_drift, runs_its_revision,
                                   scale_down, scale_up)

log = logging.getLogger(__name__)

Emit = Callable[[str, str, str], None]  # (type, reason, message) -> an Event on the rollout
STATUS_WRITE_ATTEMPTS = 3
STATUS_WRITE_RETRY = 0.25  # seconds, doubled per attempt
ERROR_BACKOFF = 2.0  # seconds after a failed pass, doubled per failure up to the cap
ERROR_BACKOFF_CAP = 60.0


@dataclass
class Runtime:
    """What lives in kopf's memo: clients and caches, no rollout state."""

    config: Config
    kube: Kube
    providers: dict[tuple[str, float], MetricsProvider] = field(default_factory=dict)  # by address and timeout
    # The parsed spec per rollout uid, with the generation it was parsed at: parse once per change.
    specs: dict[str, tuple[int, RolloutSpec | SpecError]] = field(default_factory=dict)
    notifier: Notifier = field(init=False, repr=False)  # the rollouts' notifications (never waited for)

    def __post_init__(self) -> None:
        self.notifier = Notifier(self.kube, self.config.policy, self.config.notification_link)

    def spec_of(self, obj: RolloutObject) -> RolloutSpec:
        """The typed spec of this generation (raises SpecError for an invalid one)."""
        cached = self.specs.get(obj.uid)
        if cached is None or cached[0] != obj.generation:
            try:
                parsed: RolloutSpec | SpecError = parse_spec(dict(obj.spec), self.config.policy)
            except SpecError as exc:
                parsed = exc
            cached = self.specs[obj.uid] = (obj.generation, parsed)
        parsed = cached[1]
        if isinstance(parsed, SpecError):
            raise SpecError(parsed.field, parsed.message)
        return parsed

    def provider(self, spec: RolloutSpec) -> MetricsProvider:
        """The provider of the spec's Prometheus: only the operator's own is sent the token. One per
        address and timeout, so that a spec's timeout never applies to another rollout's queries, all
        of an address over the same connections and threads (a spec cannot multiply them)."""
        assert spec.analysis.prometheus is not None
        address, timeout = spec.analysis.prometheus.address.rstrip("/"), spec.analysis.prometheus.timeout
        if (address, timeout) not in self.providers:
            same_address = next((p for (a, _), p in self.providers.items() if a == address), None)
            if same_address is not None:
                self.providers[address, timeout] = same_address.with_timeout(timeout)
            else:
                own = is_operator_prometheus(self.config.policy, address)
                self.providers[address, timeout] = make_provider(
                    "prometheus", address, timeout=timeout,
                    bearer_token=self.config.prometheus_token if own else None, ca_file=self.config.prometheus_ca_file)
        return self.providers[address, timeout]


@dataclass(frozen=True)
class RolloutObject:
    namespace: str
    name: str
    uid: str
    generation: int
    annotations: Mapping[str, str]
    spec: Mapping[str, Any]
    status: Mapping[str, Any]  # what the pass decides from
    # The status the cluster holds, when `status` is a decision this operator acted on but could not write.
    stored_status: Mapping[str, Any] | None = None


def rollout_object(body: Mapping[str, Any]) -> RolloutObject:
    meta = body.get("metadata") or {}
    return RolloutObject(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 1),
        annotations=dict(meta.get("annotations") or {}),
        spec=dict(body.get("spec") or {}),
        status=dict(body.get("status") or {}),
    )


class StatusNotWritten(Exception):
    """A pass decided (and acted on) `status` but could not write it."""

    def __init__(self, status: Mapping[str, Any], cause: Exception) -> None:
        super().__init__(str(cause))
        self.status, self.cause = status, cause


def commands_from(annotations: Mapping[str, str]) -> Commands:
    return Commands(
        promote=annotations.get(ANNOTATION_PROMOTE),
        promote_full=annotations.get(ANNOTATION_PROMOTE_FULL),
        abort=annotations.get(ANNOTATION_ABORT),
        retry=annotations.get(ANNOTATION_RETRY),
        paused=annotations.get(ANNOTATION_PAUSED, "").lower() in ("true", "1", "yes"),
    )


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `old` into `new` at the top level (null deletes removed keys)."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


def _transient(exc: Exception) -> bool:
    """Worth retrying at once: anything but an API answer that will not change (401, 403, 422, ...)."""
    return not isinstance(exc, KubeError) or exc.status in (409, 429) or exc.status >= 500


async def write_status(kube: Kube, obj: RolloutObject, new: Mapping[str, Any],
                       attempts: int = STATUS_WRITE_ATTEMPTS) -> dict[str, Any] | None:
    """Merge-patch the status (absolute: repeating it is harmless), retried briefly on conflicts,
    throttling, server and connection errors; StatusNotWritten carries `new` when it still fails."""
    stored = obj.stored_status if obj.stored_status is not None else obj.status
    patch = status_patch(stored, new)
    if not patch:
        return None
    target = path(f"{GROUP}/{VERSION}", PLURAL, obj.namespace, obj.name, "status")
    failed = 0
    while True:
        try:
            return await kube.merge_patch(target, {"status": patch})
        except Exception as exc:
            if isinstance(exc, KubeError) and exc.status == 404:
                return None  # deleted meanwhile
            failed += 1
            if not _transient(exc) or failed == attempts:
                raise StatusNotWritten(new, exc) from exc
        await asyncio.sleep(STATUS_WRITE_RETRY * 2 ** (failed - 1))


def read_status(obj: RolloutObject, emit: Emit) -> RolloutStatus:
    """The status this pass decides from, parsed once. Parts that do not parse (edited by hand, or
    written by an older operator) are dropped, said in a Warning event, and gone from the cluster
    after this pass's write: the rollout goes on instead of failing every pass."""
    status, dropped = RolloutStatus.parse_lenient(obj.status)
    if dropped:
        message = f"status parts that do not parse were dropped: {'; '.join(dropped)}"[:1000]
        log.warning("%s/%s: %s", obj.namespace, obj.name, message)
        emit("Warning", "StatusRepaired", message)
    return status


Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def act_failure(exc: Exception) -> tuple[str, str]:
    """(condition reason, message) for an error met while acting; the API's message, never a body."""
    if isinstance(exc, RouteProblem):
        return exc.reason, str(exc)
    if isinstance(exc, KubeError):
        reason = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
                  422: "Invalid", 429: "Throttled"}.get(exc.status, "ApplyFailed")
        return reason, str(exc)[:500]
    return "ApplyFailed", f"{type(exc).__name__}: {exc}"[:500]


async def _measure_in_time(runtime: Runtime, spec: RolloutSpec, obj: RolloutObject, status: RolloutStatus,
                           now: datetime) -> tuple[MetricSample, ...]:
    """The analysis, bounded by half an interval: a hanging Prometheus must not make a decision that
    falls due meanwhile late by more than one interval."""
    assert spec.analysis.prometheus is not None
    limit = min(spec.analysis.interval / 2, spec.analysis.prometheus.timeout + 1.0)
    try:
        return await asyncio.wait_for(
            measure(spec, obj.namespace, obj.name, status, runtime.provider(spec), now), timeout=limit)
    except asyncio.TimeoutError:
        return tuple(MetricSample(rule.name, "", error=f"no answer from Prometheus within {limit:g}s")
                     for rule in spec.analysis.metrics)


async def reconcile(runtime: Runtime, obj: RolloutObject, deployments: Mapping[str, ObservedDeployment],
                    services: Mapping[str, dict[str, str]], emit: Emit,
                    clock: Clock = utc_now) -> tuple[float, dict[str, Any] | None]:
    """One pass: observe -> decide -> (write a rerouting decision first) -> act -> read back -> write status.

    Returns (seconds until the next pass, the object as written or None when nothing was written).
    Decisions are taken with the time after observing (a slow Prometheus never makes a due
    decision late), and the status records the weight the cluster confirms after acting, with
    the `Applied` condition saying whether acting worked.
    """
    before = read_status(obj, emit)
    try:
        spec = runtime.spec_of(obj)
    except SpecError as exc:
        decision = core.invalid(before, exc.field, exc.message, obj.generation, commands_from(obj.annotations),
                                clock())
        status, events, requeue = decision.status, decision.events, decision.requeue_after
        if before.applied_routing:  # the canary's users back to stable, through the last valid spec's routing
            result = await _hand_back(runtime.kube, obj, before.applied_routing, deployments, before)
            status, act_events, backoff = core.record_act(status, obj.generation, result, clock())
            events += act_events
            if backoff is not None:
                requeue = backoff
            elif result.confirmed_weight != 0:
                requeue = core.CONFIRM_POLL  # read the weight back soon (the replicas router: pods going)
        for event in events:
            emit(event.type, event.reason, event.message)
        _record_metrics(obj, before, decision, clock())
        return min(max(requeue, runtime.config.min_requeue), runtime.config.max_requeue), \
            await write_status(runtime.kube, obj, status.dump())

    routing = applied_routing(spec)
    if before.applied_routing not in (None, routing):  # what the previous spec routed through goes back first
        handed_back = await _hand_back(runtime.kube, obj, before.applied_routing, deployments, before)
        if handed_back.failure_reason:
            status, events, backoff = core.record_act(before, obj.generation, handed_back, clock())
            for event in events:
                emit(event.type, event.reason, event.message)
            return backoff or core.CONFIRM_POLL, await write_status(runtime.kube, obj, status.dump())
    before = before.replace(applied_routing=routing)
    runs_pods = spec.traffic_routing.router not in RUNS_WORKLOADS  # KServe runs its own pods
    workloads = {rev: Workload(d.replicas, d.ready, runs_its_revision(spec, obj.name, rev, d) if runs_pods
                               else d.up_to_date) for rev, d in deployments.items()}
    router = router_for(spec)
    target = RouteTarget(obj.namespace, obj.name, obj.uid, spec, services,
                         ready={rev: d.ready for rev, d in deployments.items()},
                         stable_revision=before.stable_revision or spec.revision,
                         canary_revision=before.canary_revision)
    failure: tuple[str, str] | None = None
    traffic: int | None = None
    mirror: int | None = None
    reads_mirror = spec.strategy.mirrors or bool(before.canary_mirror)
    handed_over = None
    try:
        if not before.stable_revision:  # a deleted namesake may have left a revision serving users
            handed_over = await router.handed_over(runtime.kube, target)
        traffic = await router.get_weight(runtime.kube, target)
        if reads_mirror:
            mirror = await router.get_mirror(runtime.kube, target)
    except (KubeError, RouteProblem) as exc:
        failure = act_failure(exc)
    _report_weight_drift(spec, before, traffic, emit)
    samples = None
    started = clock()
    if core.analysis_due(spec, before, started) and not core.no_data_overdue(spec, before, started):
        samples = await _measure_in_time(runtime, spec, obj, before, started)
    gates = {}
    if before.gating and before.canary_revision == spec.revision:
        gates = await run_gates(runtime.kube, spec, before.gating, obj.namespace, obj.name, obj.uid, before,
                                lambda: router.addresses(runtime.kube, target))
    observations = Observations(generation=obj.generation, workloads=workloads, traffic=traffic, mirror=mirror,
                                commands=commands_from(obj.annotations), samples=samples, gates=gates,
                                handed_over=handed_over)
    now = clock()
    decision = core.decide(spec, before, observations, now)
    desired = core.desired_state(spec, decision.status, workloads, now)
    obj, written_first = await _write_intent(runtime.kube, obj, spec, before, decision.status, workloads, traffic,
                                             desired, now)

    confirmed, confirmed_mirror = traffic, mirror
    try:
        decided = replace(target, stable_revision=desired.stable_revision, canary_revision=desired.canary_revision)
        drift = []
        if runs_pods:  # invariant 12: restored, and never stable meanwhile
            drift = await restore_drift(runtime.kube, spec, obj.namespace, obj.name, desired, deployments,
                                        services, emit)
        confirmed = await converge(runtime.kube, router, decided, spec, desired, deployments, traffic)
        if reads_mirror and mirror != desired.canary_mirror:
            await router.set_mirror(runtime.kube, target, desired.canary_mirror)
            confirmed_mirror = await router.get_mirror(runtime.kube, target)
        if confirmed is not None:
            failure = None  # a read that failed before acting was read again, successfully, after it
        if drift:
            failure = ("Drift", "; ".join(drift))
    except Exception as exc:  # any failure to act is on the resource (Applied=False), never only in a log
        log.warning("%s/%s: acting failed: %s", obj.namespace, obj.name, exc)
        failure = act_failure(exc)
    result = core.ActResult(confirmed, desired.canary_weight, *(failure or (None, "")),
                            confirmed_mirror=confirmed_mirror if reads_mirror else None,
                            target_mirror=desired.canary_mirror)
    # Backing off, but trying again within one interval: a due decision must not wait longer (invariant 7).
    status, act_events, backoff = core.record_act(decision.status, obj.generation, result, clock(),
                                                  max_backoff=spec.analysis.interval)
    # What was done is told even when its status cannot be written (then the next pass starts from it).
    for event in decision.events + act_events:
        emit(event.type, event.reason, event.message)
    runtime.notifier.notify(obj.namespace, obj.name, spec, before, status, decision.events, emit, now)
    _record_metrics(obj, before, decision, now, spec.analysis.interval)
    written = await write_status(runtime.kube, obj, status.dump()) or written_first

    requeue = decision.requeue_after
    if backoff is not None:
        requeue = backoff
    elif confirmed != desired.canary_weight or (reads_mirror and confirmed_mirror != desired.canary_mirror):
        requeue = min(requeue, core.CONFIRM_POLL)  # read the weight back soon
    return min(max(requeue, runtime.config.min_requeue), runtime.config.max_requeue), written


def _report_weight_drift(spec: RolloutSpec, before: RolloutStatus, read: int | None, emit: Emit) -> None:
    """A route rule's weight (gatewayAPI, istio) read otherwise than the last pass confirmed, with
    nothing failing since, was edited by someone else: converge rewrites it, and this says so."""
    applied = before.condition("Applied")
    if (spec.traffic_routing.router in ROUTERS_WITH_STANDBY_STABLE and read is not None
            and before.canary_weight is not None and read != before.canary_weight
            and applied is not None and applied.status == "True"):
        emit("Warning", "DriftCorrected", f"the route gave the canary {read} %, not the {before.canary_weight} % "
                                          f"this rollout carries: rewritten")


async def _write_intent(kube: Kube, obj: RolloutObject, spec: RolloutSpec, before: RolloutStatus,
                        decided: RolloutStatus, workloads: Mapping[str, Workload], carried: int | None,
                        desired: core.Desired, now: datetime) -> tuple[RolloutObject, dict[str, Any] | None]:
    """Write a decision that routes users otherwise than the stored status before acting on it
    (core.write_before_acting). Returns the rollout with it as the stored status, and the object as
    written (None when nothing was). One attempt: a failing API never delays taking traffic away;
    acting goes on, and the write after acting is retried."""
    stored = before if obj.stored_status is None else RolloutStatus.parse_lenient(obj.stored_status)[0]
    if not core.write_before_acting(spec, stored, decided, workloads, now):
        return obj, None
    status = core.intent(decided, obj.generation, carried, desired.canary_weight, now).dump()
    try:
        written = await write_status(kube, obj, status, attempts=1)
    except StatusNotWritten as exc:
        log.warning("%s/%s: the decision could not be written before acting: %s", obj.namespace, obj.name, exc)
        return obj, None
    return replace(obj, stored_status=status), written


@dataclass
class RolloutMemory:
    """What one rollout's daemon carries from pass to pass (in memory only)."""

    written: Mapping[str, Any] | None = None  # the object as our last status write returned it
    unwritten: Mapping[str, Any] | None = None  # a status decided and acted on, not written yet
    failures: int = 0
    last_failure: tuple[str, str] | None = None

    def rollout(self, body: Mapping[str, Any]) -> RolloutObject:
        """The rollout to decide on: the freshest status we know, our unwritten decision first."""
        obj = rollout_object(_newer(self.written, body))
        if self.unwritten is not None:
            obj = replace(obj, status=self.unwritten, stored_status=obj.status)
        return obj


def _newer(written: Mapping[str, Any] | None, body: Mapping[str, Any]) -> Mapping[str, Any]:
    """The fresher of kopf's live body and the object our own last status write returned.

    The watch may not have delivered our write yet; deciding on the older status would
    repeat a step. resourceVersions are opaque, but numeric on every real API server;
    when they are not, the watched body wins.
    """
    if written is None:
        return body
    try:
        mine = int(written["metadata"]["resourceVersion"])
        seen = int(body["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return body
    return written if mine > seen else body


async def run_pass(runtime: Runtime, memory: RolloutMemory, body: Mapping[str, Any],
                   deployments: Mapping[str, ObservedDeployment], services: Mapping[str, dict[str, str]],
                   emit: Emit, clock: Clock = utc_now) -> float:
    """One pass of a rollout's daemon; never raises. Returns the seconds until the next pass:
    the reconcile's, or a capped exponential backoff after a failure, which is also a Warning
    event on the rollout once per distinct failure."""
    obj = memory.rollout(body)
    try:
        delay, fresh = await reconcile(runtime, obj, deployments, services, emit, clock)
        memory.written = fresh or memory.written
        memory.unwritten, memory.failures, memory.last_failure = None, 0, None
        return delay
    except StatusNotWritten as exc:
        memory.unwritten = exc.status
        failure = exc.cause
    except Exception as exc:  # an outage or a bug: never crash the loop
        failure = exc
    memory.failures += 1
    delay = min(ERROR_BACKOFF_CAP, ERROR_BACKOFF * 2 ** min(memory.failures - 1, 5))
    reason, message = act_failure(failure)
    log.warning("%s/%s: reconcile failed (%s), retrying in %.0fs: %s", obj.namespace, obj.name, reason, delay, message)
    if (reason, message) != memory.last_failure:
        emit("Warning", reason, f"reconcile failed: {message}")
        memory.last_failure = (reason, message)
    return delay


async def converge(kube: Kube, router: Router, target: RouteTarget, spec: RolloutSpec, desired: core.Desired,
                   deployments: Mapping[str, ObservedDeployment], carried: int | None) -> int | None:
    """Make the cluster match `desired`: capacity first, then Services and weights, then scale-downs.

    `deployments` and the Services are what the watches saw; only differences cause writes.
    Returns the canary weight read back after any weight change (`carried` when none was needed).
    """
    runs_pods = spec.traffic_routing.router not in RUNS_WORKLOADS  # KServe runs its own pods
    if runs_pods:
        await scale_up(kube, spec, target.namespace, target.name, target.uid, desired, deployments)
        await ensure_services(kube, spec, target.namespace, target.name, target.uid, desired, target.service_selectors)
    await router.reconcile(kube, target)
    if carried != desired.canary_weight:
        await router.set_weight(kube, target, desired.canary_weight)
        carried = await router.get_weight(kube, target)
    if runs_pods:
        await scale_down(kube, target.namespace, desired, deployments)
    return carried


async def _hand_back(kube: Kube, obj: RolloutObject, applied: Mapping[str, Any],
                     deployments: Mapping[str, ObservedDeployment], status: RolloutStatus) -> core.ActResult:
    """All traffic to stable through a recorded routing (status.appliedRouting), read back."""
    spec = routing_spec(applied)
    target = RouteTarget(obj.namespace, obj.name, obj.uid, spec, {},
                         ready={rev: d.ready for rev, d in deployments.items()},
                         stable_revision=status.stable_revision, canary_revision=status.canary_revision)
    router = router_for(spec)
    try:
        await router.finalize(kube, target)
        return core.ActResult(await router.get_weight(kube, target), 0)
    except Exception as exc:  # any failure to act is on the resource (Applied=False), never only in a log
        return core.ActResult(None, 0, *act_failure(exc))


async def finalize(runtime: Runtime, obj: RolloutObject) -> None:
    """On deletion, before the owned objects are garbage-collected: all traffic to stable, then
    (`onDelete: Handover`, the default) the stable revision's Deployment and Services handed over,
    so users' traffic never points at nothing. An invalid spec still hands over: safe by default."""
    runtime.specs.pop(obj.uid, None)
    status = RolloutStatus.parse_lenient(obj.status)[0]
    stable = status.stable_revision
    try:
        spec: RolloutSpec | None = parse_spec(dict(obj.spec), runtime.config.policy)
    except SpecError:
        log.warning("%s/%s deleted with an invalid spec: handed over through the last valid spec's routing",
                    obj.namespace, obj.name)
        spec = None
    # Through what the cluster was last routed through, and through the spec's routing where it differs.
    routed = [routing_spec(status.applied_routing)] if status.applied_routing else []
    if spec is not None:
        routed = [spec] + [old for old in routed if applied_routing(old) != applied_routing(spec)]
    for through in routed:
        await router_for(through).finalize(runtime.kube, RouteTarget(obj.namespace, obj.name, obj.uid, through, {}))
    if stable and (spec is None or spec.on_delete == "Handover"):
        await hand_over(runtime.kube, obj.namespace, obj.name, obj.uid, stable)
    metrics.forget(obj.namespace, obj.name)


def _record_metrics(obj: RolloutObject, before: RolloutStatus, decision: core.Decision, now: datetime,
                    interval: float | None = None) -> None:
    status = decision.status
    since = core.parse_ts(_phase_since(status))
    metrics.record_phase(obj.namespace, obj.name, status.phase or "", since=since.timestamp() if since else None)
    metrics.record_weight(obj.namespace, obj.name, status.canary_weight or 0)
    if status.last_analysis_at != before.last_analysis_at:
        verdicts = [(result.metric, result.verdict) for result in status.last_analysis]
        metrics.record_analysis(obj.namespace, obj.name, verdicts, _analysis_lag(before, status, interval))
    started = core.parse_ts(before.rollout_started_at)
    duration = (now - started).total_seconds() if started else 0.0
    if decision.action is core.Action.ROLLBACK:
        metrics.record_result(obj.namespace, obj.name, "rolledback", duration)
    elif decision.action is core.Action.PROMOTED:
        metrics.record_result(obj.namespace, obj.name, "promoted", duration)


def _analysis_lag(before: RolloutStatus, after: RolloutStatus, interval: float | None) -> float | None:
    """Seconds an analysis ran after it was due: the previous analysis of the same step plus the interval."""
    previous = core.parse_ts(before.last_analysis_at)
    latest = core.parse_ts(after.last_analysis_at)
    step = core.parse_ts(after.step_started_at)
    if interval is None or previous is None or latest is None or step is None or previous < step:
        return None
    return (latest - previous).total_seconds() - interval


def _phase_since(status: RolloutStatus) -> str | None:
    """When the current phase began: the Reconciling (or Ready/Stalled) condition's transition time."""
    for condition in status.conditions:
        if condition.status == "True" and condition.type in ("Reconciling", "Ready", "Stalled"):
            return condition.last_transition_time
    return None


def observed_deployments(entries: Any) -> dict[str, ObservedDeployment]:
    """From the kopf index values [(revision, ObservedDeployment), ...] to a dict by revision."""
    return {revision: deployment for revision, deployment in entries or []}

