"""Model-based test of the whole state machine (issue 22): the real pure core (`decide`,
`desired_state`, `record_act`, `invalid`), the real measurement code (`analysis.measure`) and
`reconcile.commands_from`, driven against a small model of the cluster (one route, Deployments,
Prometheus answers) through random interleavings of user commands, spec edits (valid, invalid,
too long), template changes, write failures, drift, a deleted route, odd metric answers and
operator restarts. After every step it checks the safety invariants of PRODUCT.md that the pure
layer plus the model can see (the `check_*` methods name them).

CI runs a bounded number of examples (200 x 30 steps, under 10 s) checking every invariant; `make fuzz`
(MODELROLLOUT_FUZZ=long) runs 2000 x 60 steps. MODELROLLOUT_FUZZ_ONLY=<invariant> checks one invariant
alone; tests/fuzz/findings.py measures how many examples each needs to fail (docs/testing.md).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
import pytest

from modelrollout import core
from modelrollout.analysis import measure
from modelrollout.core import Observations, Workload
from modelrollout.providers import Series
from modelrollout.reconcile import commands_from
from modelrollout.spec import PlatformPolicy, SpecError, applied_routing, parse_spec
from modelrollout.status import RolloutStatus

T0 = datetime(2026, 12, 8, 3, 0, tzinfo=timezone.utc)
POLICY = PlatformPolicy(prometheus_url="http://prom:9090")
LABEL_LIMIT = 63  # a Kubernetes label value
GOOD, BAD, STABLE_QUALITY = 0.95, 0.40, 0.95
ANNOTATIONS = {"promote": "modelrollout.io/promote", "promote_full": "modelrollout.io/promote-full",
               "abort": "modelrollout.io/abort", "retry": "modelrollout.io/retry"}
STATUS_KEYS = {"promote": "promote", "promote_full": "promoteFull", "abort": "abort", "retry": "retry"}
ONLY = os.environ.get("MODELROLLOUT_FUZZ_ONLY")  # check this invariant alone
FIRST_FAILURE: dict[str, int] = {}  # invariant -> examples run when it first failed (docs/testing.md)
EXAMPLES = [0]


# ---------------------------------------------------------------- the adapter to the command and status format

def command_annotation(kind: str, token: str, status: RolloutStatus) -> str:
    """The annotation value written for a command issued while the rollout shows `status`, in the format of
    docs/resource.md (Commands): the revision (and, for promote, the step) it is for. Code that reads a bare
    token takes the whole value as one."""
    step = f",step={status.current_step}" if kind == "promote" else ""
    return f"revision={commanded_revision(kind, status) or ''}{step},id={token}"


def command_acted(kind: str, before: RolloutStatus, after: RolloutStatus) -> bool:
    """Whether a command this pass handled changed what the rollout does (an ignored one changes nothing)."""
    if kind == "abort":
        return after.phase == "RolledBack" and before.phase != "RolledBack"
    if kind == "retry":
        return after.canary_revision is not None and before.canary_revision is None
    if kind == "promote_full":
        return after.stable_revision != before.stable_revision or after.phase == "Promoting" != before.phase
    return (after.current_step or 0) > (before.current_step or 0) or \
        (after.phase == "Promoting" and before.phase != "Promoting")


def commanded_revision(kind: str, status: RolloutStatus) -> str | None:
    """The revision a command acts on while the rollout shows `status`: retry, the rolled-back one."""
    if kind == "retry":
        return status.aborted_revision or status.canary_revision
    return status.canary_revision


def raw_spec(image: str, *, version: str | None = None, query: str = 'quality{revision="{{ revision }}"}',
             quality_min: float = 0.85, route: str = "scorer") -> dict[str, Any]:
    return {
        "model": {"name": "scorer", "version": version or image.split(":")[-1]},
        "replicas": 4,
        "selector": {"matchLabels": {"app": "scorer"}},
        "template": {"metadata": {"labels": {"app": "scorer"}},
                     "spec": {"containers": [{"name": "server", "image": image}]}},
        "service": {"port": 8080},
        "trafficRouting": {"gatewayAPI": {"httpRoute": route}},
        "strategy": {"warmup": {"readinessTimeout": "60s", "skipAnalysisFor": "0s"},
                     "steps": [{"weight": 20, "hold": "30s"}, {"weight": 50, "hold": "30s"}]},
        "analysis": {"interval": "10s", "prometheus": {"address": "http://prom:9090"},
                     "samples": {"query": 'requests{revision="{{ revision }}"}', "min": 100},
                     "noData": {"hold": "60s", "then": "rollback"},
                     "metrics": [{"name": "quality", "query": query, "min": quality_min}]},
        "rollback": {"scaleDownDelay": "20s"},
    }


class ModelPrometheus:
    """Answers a query from the revision it names and how the model's quality truly is."""

    def __init__(self, machine: RolloutMachine) -> None:
        self.machine = machine

    async def run_query(self, query: str, *, at: datetime | None = None) -> list[Series]:
        revision = re.search(r'revision="([^"]*)"', query).group(1)  # type: ignore[union-attr]
        mode = self.machine.answers
        if mode == "missing":
            return []
        if query.startswith("requests"):
            return [Series({"revision": revision}, 500.0)]
        truth = self.machine.truth.get(revision, GOOD)
        if mode == "nan":
            return [Series({"revision": revision}, math.nan)]
        if mode == "several":  # one series per revision: a query without its `sum`
            return [Series({"revision": revision}, truth), Series({"revision": "stable"}, STABLE_QUALITY)]
        return [Series({"revision": revision}, truth)]

    async def is_online(self) -> bool:
        return True

    def with_timeout(self, timeout: float) -> ModelPrometheus:
        return self


class RolloutMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        EXAMPLES[0] += 1
        self.now = T0
        self.version = 1
        self.raw = raw_spec("model:v1")
        self.spec = parse_spec(self.raw, POLICY)
        self.generation = 1
        self.truth = {self.spec.revision: GOOD}  # revision -> its true quality
        self.answers = "true"  # true | several | nan | missing
        self.status = RolloutStatus()
        self.annotations: dict[str, str] = {}
        self.issued: dict[str, tuple[str, str | None, int | None]] = {}  # kind -> (token, canary, step)
        self.tokens = 0
        self.replicas: dict[str, int] = {}
        self.drifted: set[str] = set()
        # The user's HTTPRoutes, by name: (canary revision, its weight). The spec routes through one.
        self.routes: dict[str, tuple[str | None, int]] = {"scorer": (None, 0), "scorer-b": (None, 0)}
        self.route_name = "scorer"  # the route of the last valid spec
        self.deleted_routes: set[str] = set()
        self.fail_next_write = False
        self.judged_good: set[str] = set()  # canaries that had a conclusive passing analysis
        self.silent_since: datetime | None = None  # canary serving with no evidence since
        self.silent_answers = self.answers  # the kind of answer it has had since
        self.promoted_unjudged: str | None = None
        self.stale_acted: tuple[str, str] | None = None  # (command, what it did)
        self.user_vouched: set[str] = set()  # canaries the user promoted by a command naming them
        self.run_pass()
        self.run_pass()  # v1's pods are Ready: v1 is stable

    @property
    def route(self) -> tuple[str | None, int]:
        return self.routes[self.route_name]

    @property
    def route_exists(self) -> bool:
        return self.route_name not in self.deleted_routes

    # ------------------------------------------------------------ one reconcile pass, as reconcile() does it
    def run_pass(self) -> None:
        before = self.status
        try:
            spec = parse_spec(self.raw, POLICY)
        except SpecError as exc:
            decision = core.invalid(before, exc.field, exc.message, self.generation, commands_from(self.annotations),
                                    self.now)
            status = decision.status
            if before.applied_routing:  # the canary's users back to stable through the last valid spec's route
                status, _, _ = core.record_act(status, self.generation, self.hand_back(), self.now)
            self.status = RolloutStatus.parse(status.dump())
            self.observe(before, None)
            return
        routing = applied_routing(spec)
        if before.applied_routing not in (None, routing):  # the previous spec's route goes back to stable first
            handed_back = self.hand_back()
            if handed_back.failure_reason:
                status, _, _ = core.record_act(before, self.generation, handed_back, self.now)
                self.status = RolloutStatus.parse(status.dump())
                return
        before = before.replace(applied_routing=routing)
        self.spec = spec
        self.route_name = self.raw["trafficRouting"]["gatewayAPI"]["httpRoute"]
        workloads = {rev: Workload(n, n, rev not in self.drifted) for rev, n in self.replicas.items() if n}
        traffic = self.route[1] if self.route_exists else None
        samples = None
        if core.analysis_due(spec, before, self.now) and not core.no_data_overdue(spec, before, self.now):
            samples = asyncio.run(measure(spec, "ns", "scorer", before, ModelPrometheus(self), self.now))
        obs = Observations(generation=self.generation, workloads=workloads, traffic=traffic,
                           commands=commands_from(self.annotations), samples=samples)
        decision = core.decide(spec, before, obs, self.now)
        desired = core.desired_state(spec, decision.status, workloads, self.now)
        failure: tuple[str, str] | None = None
        confirmed = traffic
        if self.fail_next_write:
            self.fail_next_write = False
            failure = ("ApplyFailed", "the API server refused the write")
        else:
            for revision, wanted in desired.replicas.items():
                if wanted is None:
                    self.replicas.pop(revision, None)
                elif wanted >= 0:
                    self.replicas[revision] = wanted
            if self.route_exists:
                self.routes[self.route_name] = (desired.canary_revision,
                                                desired.canary_weight if desired.canary_revision else 0)
                confirmed = self.route[1]
            else:
                failure = ("RouteNotFound", "HTTPRoute scorer not found")
            restored = {revision for revision in self.drifted if desired.replicas.get(revision) is not None}
            if restored:  # the act layer puts the template back; its pods are replaced meanwhile (reconcile)
                self.drifted -= restored
                failure = ("Drift", f"Deployments of {sorted(restored)} ran another pod template: restored")
        result = core.ActResult(confirmed, desired.canary_weight, *(failure or (None, "")))
        status, _, _ = core.record_act(decision.status, self.generation, result, self.now)
        self.status = RolloutStatus.parse(status.dump())
        self.observe(before, samples)

    def hand_back(self) -> core.ActResult:
        """All traffic to stable through the route of the last valid spec (the routers' `finalize`), read back."""
        if self.fail_next_write:
            self.fail_next_write = False
            return core.ActResult(None, 0, "ApplyFailed", "the API server refused the write")
        if not self.route_exists:
            return core.ActResult(None, 0, "RouteNotFound", f"HTTPRoute {self.route_name} not found")
        self.routes[self.route_name] = (None, 0)
        return core.ActResult(0, 0)

    def observe(self, before: RolloutStatus, samples: Any) -> None:
        """What the model learns from a pass: judgements, promotions, commands that acted."""
        canary = before.canary_revision
        if samples is not None and canary and self.answers == "true" and self.truth.get(canary, GOOD) >= 0.85:
            self.judged_good.add(canary)
        serving = self.route_exists and self.route[1] > 0
        if not serving or (samples is not None and self.answers == "true") or self.answers != self.silent_answers:
            self.silent_since, self.silent_answers = None, self.answers  # silence is timed per kind of answer
        if serving and self.answers != "true" and self.silent_since is None:
            self.silent_since = self.now
        promoted = self.status.stable_revision
        if before.stable_revision and promoted != before.stable_revision and \
                promoted not in self.judged_good | self.user_vouched:
            self.promoted_unjudged = promoted
        for kind, (token, issued_canary, issued_step) in list(self.issued.items()):
            key = STATUS_KEYS[kind]
            if self.status.handled_commands.get(key) == token and before.handled_commands.get(key) != token:
                del self.issued[kind]
                stale = commanded_revision(kind, before) != issued_canary or \
                    (kind == "promote" and before.current_step != issued_step)
                acted = command_acted(kind, before, self.status)
                if acted and not stale and kind.startswith("promote"):
                    self.user_vouched.add(issued_canary)  # type: ignore[arg-type]
                if stale and acted:
                    self.stale_acted = kind, f"{kind} issued for {issued_canary} step {issued_step} acted on " \
                                       f"{commanded_revision(kind, before)} step {before.current_step}"

    # ------------------------------------------------------------ rules
    @rule(seconds=st.sampled_from([1, 5, 10, 30, 60, 120]))
    def tick(self, seconds: int) -> None:
        """Time passes; the operator looks at least once an analysis interval (invariant 7)."""
        interval = self.spec.analysis.interval
        while seconds > 0:
            self.now += timedelta(seconds=min(seconds, interval))
            seconds -= interval
            self.run_pass()

    @rule(bad=st.booleans())
    def new_template(self, bad: bool) -> None:
        self.version += 1
        self.raw = raw_spec(f"model:v{self.version}")
        self.truth[parse_spec(self.raw, POLICY).revision] = BAD if bad else GOOD
        self.generation += 1
        self.run_pass()

    @rule(kind=st.sampled_from(sorted(ANNOTATIONS)))
    def command(self, kind: str) -> None:
        self.tokens += 1
        value = command_annotation(kind, f"t{self.tokens}", self.status)
        self.annotations[ANNOTATIONS[kind]] = value
        self.issued[kind] = (value, commanded_revision(kind, self.status), self.status.current_step)
        self.run_pass()

    @rule(edit=st.sampled_from(["invalid-query", "threshold", "long-version", "other-route", "back"]))
    def edit_spec(self, edit: str) -> None:
        image = f"model:v{self.version}"
        self.raw = {"invalid-query": raw_spec(image, query='quality{revision="{{ revision }}"'),
                    "threshold": raw_spec(image, quality_min=0.8),
                    "long-version": raw_spec(image, version="v" * 82),
                    "other-route": raw_spec(image, route="scorer-b"),
                    "back": raw_spec(image)}[edit]
        if edit == "long-version":  # the version is part of the template's revision; keep its truth
            try:
                self.truth.setdefault(parse_spec(self.raw, POLICY).revision, self.truth[self.spec.revision])
            except SpecError:
                pass
        self.generation += 1
        self.run_pass()

    @rule(mode=st.sampled_from(["true", "several", "nan", "missing"]))
    def prometheus_answers(self, mode: str) -> None:
        self.answers = mode

    @rule()
    def write_fails(self) -> None:
        self.fail_next_write = True

    @precondition(lambda self: self.status.stable_revision in self.replicas)
    @rule()
    def drift_stable(self) -> None:
        """Someone edits the stable revision's Deployment: its pods run something else."""
        self.drifted.add(self.status.stable_revision)  # type: ignore[arg-type]
        self.run_pass()  # the operator watches its Deployments

    @rule(exists=st.booleans())
    def route_deleted_or_recreated(self, exists: bool) -> None:
        if exists and not self.route_exists:
            self.routes[self.route_name] = (None, 0)  # re-created by the user: all traffic to stable
        (self.deleted_routes.discard if exists else self.deleted_routes.add)(self.route_name)
        self.run_pass()  # the operator looks again within an interval

    @rule()
    def restart(self) -> None:
        """The operator restarts: status is what the API server stored, memory is gone."""
        self.status = RolloutStatus.parse(self.status.dump())
        self.run_pass()

    # ------------------------------------------------------------ invariants (PRODUCT.md numbers)
    def fail(self, name: str, message: str) -> None:
        if ONLY and name != ONLY:
            return
        FIRST_FAILURE.setdefault(name, EXAMPLES[0])
        raise AssertionError(f"{name}: {message}\nstatus: {self.status.phase} {self.status.message}")

    def act_failure_shown(self) -> bool:
        """A write that failed leaves the route as it was; the resource says so (Applied=False) and the
        next pass tries again. Invariants about the route hold once acting works."""
        applied = self.status.condition("Applied")
        return applied is not None and applied.status == "False"

    @invariant()
    def check_1_canary_serves_only_while_judged(self) -> None:
        canary, weight = self.route
        judged = self.status.phase in ("Progressing", "Paused", "Promoting") and self.status.canary_revision == canary
        if self.route_exists and weight > 0 and not judged and not self.act_failure_shown():
            self.fail("inv1-serves-unjudged", f"canary {canary} at weight {weight} while {self.status.phase}")
        for name, (canary, weight) in self.routes.items():
            if name != self.route_name and name not in self.deleted_routes and weight > 0:
                self.fail("inv1-old-route-keeps-users", f"route {name}, no longer the spec's, gives canary {canary} "
                                                        f"weight {weight}")

    @invariant()
    def check_2_weight_within_step(self) -> None:
        _, weight = self.route
        if self.status.phase in ("Progressing", "Paused") and self.status.current_step is not None:
            steps = self.spec.strategy.steps
            step_weight = steps[min(self.status.current_step, len(steps) - 1)].weight
            if weight > step_weight and not self.act_failure_shown():
                self.fail("inv2-weight-above-step", f"route weight {weight} > step weight {step_weight}")

    @invariant()
    def check_3_promoted_only_when_judged(self) -> None:
        if self.promoted_unjudged:
            self.fail("inv3-promoted-unjudged", f"{self.promoted_unjudged} promoted with no conclusive passing "
                                                f"analysis (true quality {self.truth.get(self.promoted_unjudged)})")

    @invariant()
    def check_11_stale_command_never_acts(self) -> None:
        if self.stale_acted:
            self.fail(f"inv11-stale-{self.stale_acted[0]}", self.stale_acted[1])

    @invariant()
    def check_12_no_period_passes_on_silence(self) -> None:
        limit = self.spec.analysis.no_data.hold + 2 * self.spec.analysis.interval
        if self.silent_since is not None and (self.now - self.silent_since).total_seconds() > limit:
            answers = self.silent_answers
            self.fail(f"inv12-silence-{answers}", f"canary served with no evidence ({answers} answers) since "
                                                  f"{self.silent_since:%H:%M:%S}, now {self.now:%H:%M:%S}")

    @invariant()
    def check_12_drift_never_reported_stable(self) -> None:
        ready = self.status.condition("Ready")
        if self.status.stable_revision in self.drifted and ready is not None and ready.status == "True":
            self.fail("inv12-drift", f"Ready=True ({ready.message}) while {self.status.stable_revision}'s pods "
                                     "run something else")

    @invariant()
    def check_8_status_never_says_more_than_the_cluster(self) -> None:
        if self.route_exists:
            return
        healthy = self.status.condition("Healthy")
        if self.status.phase == "Succeeded" or (healthy is not None and healthy.status == "True"):
            self.fail("inv8-route-missing", f"{self.status.phase}, Healthy={healthy and healthy.status} "
                                            "with the route missing")
        if self.status.canary_weight is not None:
            self.fail("inv8-weight-unread", f"canaryWeight {self.status.canary_weight} with the route missing")

    @invariant()
    def check_limits_found_when_the_spec_is_read(self) -> None:
        try:
            spec = parse_spec(self.raw, POLICY)
        except SpecError:
            return
        if len(spec.model.version or "") > LABEL_LIMIT:
            self.fail("limits", f"a spec whose model-version label has {len(spec.model.version or '')} "
                                f"characters (> {LABEL_LIMIT}) was accepted")


LONG = os.environ.get("MODELROLLOUT_FUZZ") == "long"
RolloutMachine.TestCase.settings = settings(
    max_examples=2000 if LONG else 200, stateful_step_count=60 if LONG else 30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow], derandomize=not LONG)
TestRolloutStateMachine = RolloutMachine.TestCase


def test_a_bad_model_is_not_promoted_on_one_series_per_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    """A query without its `sum` answers one series per revision: a canary of quality 0.40 beside a
    stable of 0.95 must never pass as 1.35 and become stable."""
    monkeypatch.setattr(sys.modules[__name__], "ONLY", "inv3-promoted-unjudged")
    machine = RolloutMachine()
    machine.new_template(bad=True)
    machine.prometheus_answers("several")
    for _ in range(8):
        machine.tick(30)
        machine.check_3_promoted_only_when_judged()
    assert machine.status.stable_revision != machine.spec.revision
