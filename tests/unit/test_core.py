"""Table tests of the pure decision core: every transition, driven by status and observations alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from modelrollout import core
from modelrollout.core import (Action, Commands, Observations, Workload, analysis_due, canary_replicas, command_value,
                               decide, desired_state, invalid, target_weight)
from modelrollout.evaluate import MetricSample
from modelrollout.reconcile import status_patch
from modelrollout.spec import PlatformPolicy, SpecError, parse_spec
from modelrollout.status import RolloutStatus
from modelrollout_lab.apiserver_logic import merge_patch

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=timezone.utc)
AUTO = object()


def make_spec(image: str = "model:v1", *, router: str = "gatewayAPI", steps=None, metrics=None, **analysis):
    raw = {
        "model": {"name": "fraud", "version": image.split(":")[-1]},
        "replicas": 4,
        "selector": {"matchLabels": {"app": "fraud"}},
        "template": {"metadata": {"labels": {"app": "fraud"}},
                     "spec": {"containers": [{"name": "server", "image": image}]}},
        "service": {"port": 8080},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud"}} if router == "gatewayAPI" else {"replicas": {}},
        # The replicas router shares traffic by pods: whole pods only, no warm-up skip (pods serve when Ready).
        "strategy": {"warmup": {"readinessTimeout": "60s", "skipAnalysisFor": "10s" if router == "gatewayAPI" else "0s"},
                     "steps": steps or [{"weight": 10 if router == "gatewayAPI" else 25, "hold": "30s"},
                                        {"weight": 50, "hold": "30s"}]},
        "analysis": {"interval": "10s", "prometheus": {"address": "http://prom:9090"},
                     "samples": {"query": "requests{revision=\"{{ revision }}\"}", "min": 100},
                     "noData": {"hold": "60s", "then": "rollback"},
                     "metrics": metrics if metrics is not None else [
                         {"name": "error-rate", "query": "errors{revision=\"{{ revision }}\"}", "max": 0.01, "critical": True},
                         {"name": "latency", "query": "p95{revision=\"{{ revision }}\"}", "max": 0.3, "failureLimit": 2},
                     ], **analysis},
        "rollback": {"scaleDownDelay": "30s"},
    }
    return parse_spec(raw, POLICY)


POLICY = PlatformPolicy(prometheus_url="http://prom:9090", allowed_webhook_urls=("http://hook:80/*",))
V1, V2, V3 = make_spec("model:v1"), make_spec("model:v2"), make_spec("model:v3")


def ready(spec, n=4):
    return {spec.revision: Workload(replicas=n, ready=n)}


def good(**over):
    values = {"error-rate": 0.001, "latency": 0.1, **over}
    return tuple(MetricSample(name, f"q-{name}", value=value, samples=500.0) for name, value in values.items())


class Run:
    """Drives decide() through time the way the reconciler does, feeding the status back."""

    def __init__(self, spec, status=None, now=T0):
        self.spec, self.status, self.now = spec, status or RolloutStatus(), now
        self.decisions = []

    def step(self, *, after=0.0, workloads=None, samples=None, commands=None, generation=1, traffic=AUTO,
             handed_over=None):
        """`traffic` defaults to a cluster that carries at once whatever the last status asked for."""
        self.now += timedelta(seconds=after)
        if traffic is AUTO:
            traffic = target_weight(self.spec, self.status, workloads or {})
        obs = Observations(generation=generation, workloads=workloads or {}, commands=commands or Commands(),
                           samples=samples, traffic=traffic, handed_over=handed_over)
        decision = decide(self.spec, self.status, obs, self.now)
        self.status = RolloutStatus.parse(decision.status.dump())  # as the cluster stores it, and valid
        self.decisions.append(decision)
        return decision


def stable_on_v1():
    run = Run(V1)
    run.step(workloads=ready(V1))
    return run


def canary_in_step0():
    """v1 stable, v2 canary ready at step 0 (weight 10), analysis window open."""
    run = stable_on_v1()
    run.spec = V2
    run.step(after=1)
    run.step(after=1, workloads={**ready(V1), V2.revision: Workload(1, 1)})
    run.step(workloads={**ready(V1), V2.revision: Workload(1, 1)})  # the cluster confirms weight 10
    return run


# ------------------------------------------------------------------ first revision

def test_first_revision_waits_for_replicas_then_becomes_stable():
    run = Run(V1)
    d = run.step(workloads={V1.revision: Workload(4, 2)})
    assert (d.action, d.status.phase) == (Action.WAIT, "Initializing")
    assert "2/4" in d.status.message
    d = run.step(after=1, workloads=ready(V1))
    assert (d.action, d.status.phase, d.status.stable_revision) == (Action.INITIALIZE, "Succeeded", V1.revision)
    assert d.status.canary_revision is None
    assert d.status.history[0].result == "Initialized"


def test_a_rollout_recreated_with_another_template_keeps_the_handed_over_revision_stable():
    """Deleted with `onDelete: Handover`, re-created with v2: v1 still serves users, so it stays
    stable and v2 is a canary judged step by step, never put in v1's place at once."""
    run = Run(V2)
    d = run.step(workloads={V2.revision: Workload(4, 4)}, handed_over=core.HandedOver(V1.revision, "v1"))
    assert (d.action, d.status.phase) == (Action.START, "Progressing")
    assert (d.status.stable_revision, d.status.canary_revision) == (V1.revision, V2.revision)
    assert d.status.model_version == "v1" and d.status.canary_model_version == "v2"
    desired = desired_state(V2, d.status, {V1.revision: Workload(4, 4)}, run.now)
    assert desired.stable_revision == V1.revision and desired.replicas[V1.revision] == 4
    assert desired.canary_weight == 0 and desired.replicas[V2.revision] == canary_replicas(V2, 10)


def test_a_model_not_reported_serving_is_awaited_and_adopted_once_it_serves_never_replaced_meanwhile():
    """The InferenceService's own model is not reported serving at the first pass (a lagging status,
    a Ready that flickers). Before, that one read made the template the first stable revision, put
    in the model's place unjudged. Now the rollout waits, asks the router to write nothing, and
    adopts the model once it serves: the template is then a canary like any other."""
    run = Run(V2)
    users_model = core.HandedOver(V1.revision, None, "the InferenceService's own model", serving=False)
    for after in (0, 1, 20):
        d = run.step(after=after, handed_over=users_model)
        assert (d.action, d.status.phase, d.status.stable_revision) == (Action.WAIT, "Initializing", None)
        assert "AwaitingHandover" in [c.reason for c in d.status.conditions]
        assert desired_state(V2, d.status, {}, run.now).stable_revision is None  # nothing takes its place
    d = run.step(after=1, handed_over=replace(users_model, serving=True))
    assert (d.action, d.status.stable_revision, d.status.canary_revision) == (Action.START, V1.revision, V2.revision)
    assert d.status.awaiting_handover_since is None and "Adopted" in [e.reason for e in d.events]


def test_a_model_that_does_not_serve_within_the_readiness_timeout_is_replaced_by_the_first_template():
    run = Run(V2)
    users_model = core.HandedOver(V1.revision, None, "the InferenceService's own model", serving=False)
    run.step(handed_over=users_model)
    d = run.step(after=59, handed_over=users_model)
    assert desired_state(V2, d.status, {}, run.now).stable_revision is None
    d = run.step(after=1, handed_over=users_model)  # readinessTimeout: 60s
    assert "NotServing" in [e.reason for e in d.events] and d.status.phase == "Initializing"
    assert desired_state(V2, d.status, {}, run.now).stable_revision == V2.revision  # the template is written
    d = run.step(after=1, workloads=ready(V2), handed_over=core.HandedOver(V2.revision))
    assert (d.action, d.status.stable_revision, d.status.awaiting_handover_since) == (Action.INITIALIZE, V2.revision, None)


def test_promote_full_replaces_a_model_not_reported_serving_at_once_on_the_users_word():
    run = Run(V2)
    users_model = core.HandedOver(V1.revision, None, "the InferenceService's own model", serving=False)
    d = run.step(handed_over=users_model)
    assert desired_state(V2, d.status, {}, run.now).stable_revision is None
    d = run.step(after=1, handed_over=users_model, commands=Commands(promote_full=command_value(V2.revision, None, "t1")))
    assert [e.reason for e in d.events] == ["NotServing"] and "on request" in d.events[0].message
    assert desired_state(V2, d.status, {}, run.now).stable_revision == V2.revision  # the template is written
    assert d.status.awaiting_handover_since is None and d.status.stable_revision is None


def test_a_rollout_recreated_with_the_same_template_adopts_it_as_its_first_revision():
    d = Run(V1).step(workloads=ready(V1), handed_over=core.HandedOver(V1.revision, "v1"))
    assert (d.action, d.status.stable_revision, d.status.canary_revision) == (Action.INITIALIZE, V1.revision, None)


def test_steady_state_stays_succeeded_and_is_ready_for_gitops():
    run = stable_on_v1()
    d = run.step(after=5, workloads=ready(V1))
    assert d.action is Action.STEADY
    conditions = {c.type: c.status for c in d.status.conditions}
    assert conditions["Ready"] == "True" and conditions["Stalled"] == "False" and conditions["Reconciling"] == "False"


# ------------------------------------------------------------------ warm-up

def test_new_template_starts_a_canary_at_weight_zero():
    run = stable_on_v1()
    run.spec = V2
    d = run.step(after=1, workloads=ready(V1))
    assert d.action is Action.START
    assert d.status.canary_revision == V2.revision and d.status.canary_weight == 0
    assert d.status.phase == "Progressing"
    assert desired_state(V2, d.status, {}, run.now).canary_weight == 0


def test_ready_canary_enters_first_step_and_holds_only_once_the_weight_is_carried():
    run = canary_in_step0()
    entered, confirmed = run.decisions[-2:]
    assert entered.action is Action.ADVANCE and entered.status.current_step == 0
    assert entered.status.canary_weight == 0 and entered.status.step_started_at is None
    assert desired_state(V2, entered.status, {**ready(V1), V2.revision: Workload(1, 1)}, run.now).canary_weight == 10
    assert confirmed.status.canary_weight == 10 and confirmed.status.step_started_at == core.ts(run.now)
    assert any(e.reason == "WeightConfirmed" for e in confirmed.events)


def test_a_step_whose_weight_the_cluster_does_not_carry_never_starts_its_hold():
    run = stable_on_v1()
    run.spec = V2
    run.step(after=1)
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    run.step(after=1, workloads=w)
    for _ in range(5):  # the route still says 0: the step waits, and says what it waits for
        d = run.step(after=10, workloads=w, samples=good(), traffic=0)
        assert d.status.step_started_at is None and d.status.current_step == 0
        assert "carry canary weight 10" in d.status.message
    d = run.step(after=20, workloads=w, samples=good(), traffic=None)
    assert d.action is Action.ROLLBACK and "not confirmed within 60s" in d.status.message


def test_weight_moves_to_a_step_only_once_ready_canary_pods_can_carry_it_and_only_to_planned_weights():
    run = canary_in_step0()
    run.status = run.status.replace(current_step=1, step_weight=50)  # step 1 (50 %) needs 2 of 4 pods
    status = run.status
    assert desired_state(V2, status, {**ready(V1), V2.revision: Workload(2, 0)}, run.now).canary_weight == 0
    # one Ready pod carries 25 %, yet the route stays at step 0's 10 %: never a weight off the plan
    assert desired_state(V2, status, {**ready(V1), V2.revision: Workload(2, 1)}, run.now).canary_weight == 10
    assert desired_state(V2, status, {**ready(V1), V2.revision: Workload(2, 2)}, run.now).canary_weight == 50


def test_canary_not_ready_within_timeout_rolls_back():
    run = stable_on_v1()
    run.spec = V2
    run.step(after=1)
    d = run.step(after=30, workloads={**ready(V1), V2.revision: Workload(1, 0)})
    assert d.action is Action.WAIT and d.status.canary_weight == 0
    d = run.step(after=31, workloads={**ready(V1), V2.revision: Workload(1, 0)})
    assert d.action is Action.ROLLBACK
    assert "not ready within 60s" in d.status.message
    assert d.status.aborted_revision == V2.revision


def test_a_serving_canary_is_analysed_during_the_warmup_skip_but_only_critical_breaches_count():
    run = canary_in_step0()  # ready at +2 s, skipAnalysisFor 10 s, serving since +2 s
    assert analysis_due(V2, run.status, run.now)
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    d = run.step(after=5, workloads=w, samples=good(latency=0.9))  # a cold model is slow: not a failure
    assert d.action is not Action.ROLLBACK and d.status.failures.get("latency", 0) == 0
    d = run.step(after=1, workloads=w, samples=good())  # nor do passes count yet
    assert d.status.passed_checks == 0
    d = run.step(after=1, workloads=w, samples=good(**{"error-rate": 0.5}))  # a broken one is rolled back
    assert d.action is Action.ROLLBACK


# ------------------------------------------------------------------ verdicts

def test_passing_analysis_and_hold_advance_then_promote():
    run = canary_in_step0()
    workloads = {**ready(V1), V2.revision: Workload(1, 1)}
    d = run.step(after=10, workloads=workloads, samples=good())
    assert d.action is Action.HOLD and d.status.passed_checks == 1
    d = run.step(after=20, workloads=workloads, samples=good())
    assert d.action is Action.ADVANCE and (d.status.current_step, d.status.step_weight) == (1, 50)
    workloads[V2.revision] = Workload(2, 2)
    run.step(after=10, workloads=workloads, samples=good())  # weight 50 confirmed: its hold starts
    d = run.step(after=30, workloads=workloads, samples=good())
    assert d.action is Action.PROMOTE and d.status.phase == "Promoting"
    assert desired_state(V2, d.status, {}, run.now).replicas[V2.revision] == 4
    d = run.step(after=1, workloads={**ready(V1), **ready(V2)})
    assert (d.action, d.status.phase) == (Action.ADVANCE, "Promoting")  # all traffic, watched
    d = run.step(after=1, workloads={**ready(V1), **ready(V2)})  # once the cluster carries it
    assert "watched 0s of 60s" in d.status.message
    d = run.step(after=60, workloads={**ready(V1), **ready(V2)}, samples=good())
    assert d.action is Action.PROMOTED
    assert d.status.stable_revision == V2.revision and d.status.canary_revision is None
    assert d.status.history[0].result == "Promoted"
    assert d.status.history[0].reason == "step 1 held 30s with passing analysis"  # not a scaling message
    assert [e.revision for e in d.status.scale_downs] == [V1.revision]


# ------------------------------------------------------------------ the promotion watch

def watched_at_full_traffic():
    """v2 passed every step, has all its replicas and serves all traffic, watched; v1 stands by."""
    run = canary_in_step0()
    run.status = run.status.replace(phase="Promoting", current_step=1, step_weight=50)
    d = run.step(after=1, workloads={**ready(V1), **ready(V2)}, traffic=50)
    assert (d.action, d.status.phase, d.status.watching_since) == (Action.ADVANCE, "Promoting", core.ts(run.now))
    assert [e.reason for e in d.events] == ["Watching"]
    desired = desired_state(V2, d.status, {**ready(V1), **ready(V2)}, run.now)
    assert (desired.canary_weight, desired.stable_revision, desired.replicas[V1.revision]) == (100, V1.revision, 4)
    d = run.step(after=1, workloads={**ready(V1), **ready(V2)}, traffic=50)  # not carried yet: the watch waits
    assert "waiting for the cluster to carry all traffic" in d.status.message and d.status.step_started_at is None
    d = run.step(after=1, workloads={**ready(V1), **ready(V2)}, traffic=100)
    assert d.status.step_started_at == core.ts(run.now) and "watched 0s of 60s" in d.status.message
    return run


def test_a_canary_that_fails_while_watched_at_full_traffic_goes_back_to_the_stable_still_ready():
    """A step passes on what Prometheus had scraped: a canary that turned bad in its last seconds
    was promoted unjudged. Watched at full traffic, it is rolled back, and v1 never stopped serving."""
    run = watched_at_full_traffic()
    full = {**ready(V1), **ready(V2)}
    assert analysis_due(V2, run.status, run.now + timedelta(seconds=10))
    d = run.step(after=10, workloads=full, samples=good(**{"error-rate": 0.08}))
    assert (d.action, d.status.phase) == (Action.ROLLBACK, "RolledBack")
    assert d.status.stable_revision == V1.revision and d.status.aborted_revision == V2.revision
    assert "while watched at full traffic" in d.status.message and "error-rate" in d.status.message
    assert d.status.history[0].result == "RolledBack"
    desired = desired_state(V2, d.status, full, run.now)
    assert (desired.canary_weight, desired.stable_revision, desired.replicas[V1.revision]) == (0, V1.revision, 4)


def test_a_watched_canary_becomes_stable_once_its_watch_had_an_analysis_with_data():
    """The watch may only fail (its stable serves no one, so comparisons are undecided): an analysis
    in it with every metric's data is enough."""
    run = watched_at_full_traffic()
    full = {**ready(V1), **ready(V2)}
    for samples in (good(), None, None, None, None):
        d = run.step(after=10, workloads=full, samples=samples)
        assert (d.action, d.status.phase, d.status.no_data_since) == (Action.HOLD, "Promoting", None), d.status.message
        assert "watched" in d.status.message and d.requeue_after <= 10
    d = run.step(after=10, workloads=full)
    assert (d.action, d.status.stable_revision, d.status.watching_since) == (Action.PROMOTED, V2.revision, None)
    assert [e.revision for e in d.status.scale_downs] == [V1.revision]


NO_ANSWER = tuple(MetricSample(name, "q", error="Prometheus down") for name in ("error-rate", "latency"))


@pytest.mark.parametrize(("name", "watch_samples"), [
    ("no analysis at all", [None] * 6),
    ("Prometheus down throughout", [NO_ANSWER] * 6),
    ("a NaN answer with enough samples", [good(latency=float("nan"))] * 6),
    ("data, then none until the end", [good(), NO_ANSWER, NO_ANSWER, NO_ANSWER, NO_ANSWER, NO_ANSWER]),
])
def test_a_watch_that_ends_with_no_conclusive_analysis_never_promotes_the_no_data_policy_acts(name, watch_samples):
    """Issue 22: the promotion watch once returned "over" whatever its analysis said: a canary was made
    stable on silence. Silence is no pass: the no-data clock runs, and its policy (rollback) acts."""
    run = watched_at_full_traffic()
    full = {**ready(V1), **ready(V2)}
    decisions = [run.step(after=10, workloads=full, samples=samples) for samples in watch_samples]  # the 60s watch
    for _ in range(6):  # the noData hold: 60s
        decisions.append(run.step(after=10, workloads=full))
    actions = [d.action for d in decisions]
    assert Action.PROMOTED not in actions and Action.ROLLBACK in actions, name
    d = decisions[actions.index(Action.ROLLBACK)]
    assert (d.status.phase, d.status.stable_revision) == ("RolledBack", V1.revision), name
    assert "no conclusive data" in d.status.message and "NoData" in [e.reason for e in d.events]


def test_a_canary_is_judged_while_its_replicas_scale_up_for_promotion():
    run = canary_in_step0()
    run.status = run.status.replace(phase="Promoting", current_step=1, step_weight=50, canary_weight=50)
    assert analysis_due(V2, run.status, run.now + timedelta(seconds=10))
    d = run.step(after=10, workloads={**ready(V1), V2.revision: Workload(4, 2)}, samples=good(**{"error-rate": 0.08}))
    assert (d.action, d.status.stable_revision) == (Action.ROLLBACK, V1.revision)


def test_promote_full_ends_the_watch_and_abort_rolls_it_back():
    full = {**ready(V1), **ready(V2)}
    run = watched_at_full_traffic()
    d = run.step(after=5, workloads=full, commands=Commands(promote_full=command_value(V2.revision, None, "t1")))
    assert (d.action, d.status.stable_revision) == (Action.PROMOTED, V2.revision)
    assert "WatchSkipped" in [e.reason for e in d.events]
    run = watched_at_full_traffic()
    d = run.step(after=5, workloads=full, commands=Commands(abort=command_value(V2.revision, None, "t1")))
    assert (d.action, d.status.stable_revision, d.status.aborted_revision) == (Action.ROLLBACK, V1.revision, V2.revision)


def test_promote_full_during_a_step_skips_the_watch_too():
    run = canary_in_step0()
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    d = run.step(after=5, workloads=w, commands=Commands(promote_full=command_value(V2.revision, None, "t1")))
    assert (d.action, d.status.phase) == (Action.PROMOTE, "Promoting")
    d = run.step(after=1, workloads={**ready(V1), **ready(V2)})
    assert (d.action, d.status.stable_revision) == (Action.PROMOTED, V2.revision)


def test_with_the_replicas_router_a_canary_rolled_back_while_promoting_leaves_stable_pods_serving():
    """Pods are the weight: the stable gave up one pod per canary pod of the last step, and no more
    while the canary scales up for promotion, so a rollback then (analysis, abort) stops the canary's
    pods at once and the stable's still serve. It once gave up every pod: users met none Ready."""
    v1, v2 = make_spec("model:v1", router="replicas"), make_spec("model:v2", router="replicas")
    run = Run(v1)
    run.step(workloads=ready(v1))
    run.spec = v2
    run.step(after=1, workloads=ready(v1))
    run.status = run.status.replace(phase="Promoting", current_step=1, step_weight=50, step_entered_at=core.ts(run.now),
                                    step_started_at=core.ts(run.now), canary_ready_at=core.ts(run.now))
    full = {v1.revision: Workload(2, 2), v2.revision: Workload(4, 4)}
    assert desired_state(v2, run.status, full, run.now).replicas[v1.revision] == 2  # 4 - the last step's 2 pods
    d = run.step(after=10, workloads=full, samples=good(**{"error-rate": 0.08}))
    assert (d.action, d.status.stable_revision) == (Action.ROLLBACK, v1.revision)
    desired = desired_state(v2, d.status, full, run.now)
    assert (desired.replicas[v2.revision], desired.replicas[v1.revision]) == (0, 4)  # v1's 2 Ready pods serve


def test_with_the_replicas_router_a_rolled_back_canary_keeps_its_pods_until_a_stable_pod_is_ready():
    """At a weight-100 step the stable has no pod left: stopping the canary's pods at once would leave
    the Service with none Ready until the stable's load. They stop as soon as one stable pod is Ready."""
    steps = [{"weight": 50, "hold": "30s"}, {"weight": 100, "hold": "30s"}]
    v1, v2 = (make_spec(image, router="replicas", steps=steps) for image in ("model:v1", "model:v2"))
    run = Run(v1)
    run.step(workloads=ready(v1))
    run.spec = v2
    run.step(after=1, workloads=ready(v1))
    run.status = run.status.replace(current_step=1, step_weight=100, step_entered_at=core.ts(run.now),
                                    step_started_at=core.ts(run.now), canary_ready_at=core.ts(run.now))
    at_100 = {v1.revision: Workload(0, 0), v2.revision: Workload(4, 4)}
    assert desired_state(v2, run.status, at_100, run.now).replicas[v1.revision] == 0
    d = run.step(after=10, workloads=at_100, commands=Commands(abort=command_value(v2.revision, None, "t1")))
    assert (d.action, d.status.stable_revision) == (Action.ROLLBACK, v1.revision)
    loading = desired_state(v2, d.status, {v1.revision: Workload(4, 0), v2.revision: Workload(4, 4)}, run.now)
    assert loading.replicas[v1.revision] == 4 and loading.replicas[v2.revision] == -1  # kept as it is
    serving = desired_state(v2, d.status, {v1.revision: Workload(4, 1), v2.revision: Workload(4, 4)}, run.now)
    assert serving.replicas[v2.revision] == 0 and serving.canary_weight == 0


def test_a_watch_of_0s_promotes_as_soon_as_the_replicas_are_ready():
    unwatched = make_spec("model:v2", steps=[{"weight": 10, "hold": "30s"}, {"weight": 50, "hold": "30s"}])
    unwatched = unwatched.model_copy(update={"strategy": unwatched.strategy.model_copy(
        update={"promotion": unwatched.strategy.promotion.model_copy(update={"watch": 0.0})})})
    run = canary_in_step0()
    run.spec = unwatched
    run.status = run.status.replace(phase="Promoting", current_step=1, step_weight=50)
    d = run.step(after=1, workloads={**ready(V1), **ready(V2)}, traffic=50)
    assert (d.action, d.status.stable_revision) == (Action.PROMOTED, V2.revision)


def test_a_new_template_waits_until_the_cluster_carries_the_promoted_revision_alone():
    """KServe takes a while to route every request to a promoted revision (read back as unknown
    until then). A canary started meanwhile would be split against the older model still serving,
    and its rollback would go back to that one, not to the promoted stable."""
    run = stable_on_v1()
    run.spec = V2
    d = run.step(after=1, workloads=ready(V1), traffic=None)
    assert (d.action, d.status.canary_revision) == (Action.WAIT, None)
    assert d.status.phase == "Progressing" and "unknown" in d.status.message and d.requeue_after <= 1
    d = run.step(after=1, workloads=ready(V1), traffic=20)  # an older split still carried
    assert (d.action, d.status.canary_revision) == (Action.WAIT, None) and "20" in d.status.message
    d = run.step(after=1, workloads=ready(V1), traffic=0)
    assert (d.action, d.status.canary_revision) == (Action.START, V2.revision)


def test_hold_elapsed_without_analysis_does_not_advance():
    run = canary_in_step0()
    d = run.step(after=31, workloads={**ready(V1), V2.revision: Workload(1, 1)})
    assert d.action is Action.HOLD and d.status.current_step == 0


@pytest.mark.parametrize("metric,value,action", [
    ("error-rate", 0.05, Action.ROLLBACK),   # critical: first failure rolls back
    ("latency", 0.9, Action.HOLD),           # failureLimit 2: first failure holds
])
def test_failure_handling_by_criticality(metric, value, action):
    run = canary_in_step0()
    d = run.step(after=10, workloads={**ready(V1), V2.revision: Workload(1, 1)}, samples=good(**{metric: value}))
    assert d.action is action


def test_rollback_message_names_metric_value_threshold_samples_and_step():
    run = canary_in_step0()
    d = run.step(after=10, workloads={**ready(V1), V2.revision: Workload(1, 1)}, samples=good(**{"error-rate": 0.052}))
    assert d.status.phase == "RolledBack"
    message = d.status.message
    for part in ("error-rate", "0.052", "0.01", "500", "step 0", "weight 10"):
        assert part in message
    assert any(e.type == "Warning" and e.reason == "RolledBack" for e in d.events)
    assert desired_state(V2, d.status, {}, run.now).canary_weight == 0
    conditions = {c.type: c.status for c in d.status.conditions}
    assert conditions["RolledBack"] == "True" and conditions["Stalled"] == "True" and conditions["Ready"] == "False"


def test_consecutive_failures_reach_failure_limit():
    run = canary_in_step0()
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    assert run.step(after=10, workloads=w, samples=good(latency=0.9)).action is Action.HOLD
    assert run.step(after=10, workloads=w, samples=good(latency=0.9)).action is Action.ROLLBACK


def test_a_pass_resets_consecutive_failures():
    run = canary_in_step0()
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    run.step(after=10, workloads=w, samples=good(latency=0.9))
    run.step(after=10, workloads=w, samples=good())
    assert run.step(after=10, workloads=w, samples=good(latency=0.9)).action is not Action.ROLLBACK


def test_rolled_back_revision_stays_rolled_back_until_retry():
    run = canary_in_step0()
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    run.step(after=10, workloads=w, samples=good(**{"error-rate": 0.5}))
    d = run.step(after=60, workloads=ready(V1))
    assert d.status.phase == "RolledBack" and d.status.canary_revision is None
    d = run.step(after=1, workloads=ready(V1), commands=Commands(retry=command_value(V2.revision, None, "t1")))
    assert d.action is Action.START and d.status.canary_revision == V2.revision
    d = run.step(after=1, workloads=ready(V1), commands=Commands(retry=command_value(V2.revision, None, "t1")))
    assert d.action is Action.WAIT  # the same token does not restart it again


def test_a_retried_canary_does_not_inherit_the_failure_counts_the_cluster_stored_for_the_last_one():
    """Each status goes through the API server as the reconciler writes it (a JSON merge patch): a
    cleared failure count must be gone there too, or the retried canary is rolled back on its first
    non-critical failure (failureLimit 2)."""
    run = canary_in_step0()
    stored = run.status.dump()

    def step(**kwargs):
        nonlocal stored
        decision = run.step(**kwargs)
        stored = merge_patch(stored, status_patch(stored, decision.status.dump()))
        run.status = RolloutStatus.parse(stored)
        return decision

    w = {**ready(V1), V2.revision: Workload(1, 1)}
    step(after=11, workloads=w, samples=good(latency=0.9))  # one latency failure of two allowed
    assert step(after=10, workloads=w, samples=good(**{"error-rate": 0.5})).action is Action.ROLLBACK
    step(after=1, workloads=ready(V1), commands=Commands(retry=command_value(V2.revision, None, "t1")))
    step(after=1, workloads=w)
    step(workloads=w)  # weight 10 confirmed
    assert run.status.failures == {}
    d = step(after=11, workloads=w, samples=good(latency=0.9))  # the retried canary's first latency failure
    assert d.action is Action.HOLD and d.status.failures == {"error-rate": 0, "latency": 1}


# ------------------------------------------------------------------ no data

def _inconclusive():
    return tuple(MetricSample(name, "q", value=None, samples=None) for name in ("error-rate", "latency"))


def test_no_data_holds_weight_and_never_advances():
    run = canary_in_step0()
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    for _ in range(5):
        d = run.step(after=10, workloads=w, samples=_inconclusive())
        assert d.action is Action.HOLD and d.status.canary_weight == 10 and d.status.current_step == 0
    assert d.status.last_analysis[0].verdict == "Inconclusive"


def test_no_data_after_hold_applies_the_policy_rollback():
    run = canary_in_step0()
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    for _ in range(6):
        d = run.step(after=10, workloads=w, samples=_inconclusive())
    d = run.step(after=10, workloads=w, samples=_inconclusive())
    assert d.action is Action.ROLLBACK and "no conclusive data" in d.status.message


def test_a_step_whose_weight_the_cluster_never_carries_rolls_back_for_that_not_for_no_data():
    """The route write keeps failing: the canary gets no traffic, so its analysis finds no data. That
    is the weight's failure, said by the step's confirmation at its readiness timeout; the no-data
    limit (20s here) once rolled it back first, blaming the metrics."""
    spec = make_spec("model:v2", noData={"hold": "20s", "then": "rollback"})
    run = stable_on_v1()
    run.spec = spec
    run.step(after=1)
    w = {**ready(V1), spec.revision: Workload(1, 1)}
    d = run.step(after=1, workloads=w, traffic=0)
    for _ in range(5):
        d = run.step(after=10, workloads=w, samples=_inconclusive(), traffic=0)
        assert (d.action, d.status.no_data_since) == (Action.WAIT, None), d.status.message
    d = run.step(after=10, workloads=w, samples=_inconclusive(), traffic=0)
    assert (d.action, d.status.phase) == (Action.ROLLBACK, "RolledBack")
    assert "weight 10 not confirmed within 60s (carried: 0)" in d.status.message


def test_no_data_policy_pause_pauses_and_recovers_when_data_returns():
    spec = make_spec("model:v2", noData={"hold": "20s", "then": "pause"})
    run = stable_on_v1()
    run.spec = spec
    run.step(after=1)
    w = {**ready(V1), spec.revision: Workload(1, 1)}
    run.step(after=1, workloads=w)
    for _ in range(3):
        d = run.step(after=10, workloads=w, samples=_inconclusive())
    assert d.status.phase == "Paused" and d.status.canary_weight == 10
    d = run.step(after=10, workloads=w, samples=good())
    assert d.status.phase == "Progressing"


@pytest.mark.parametrize(("name", "samples"), [
    ("no analysis in the hold", None),
    ("a NaN answer with enough samples", good(latency=float("nan"))),
    ("no answer for a threshold with enough samples", good(latency=None)),
])
def test_a_step_hold_that_ends_with_no_conclusive_analysis_is_not_passed_the_no_data_policy_acts(name, samples):
    """Issue 22: a NaN with enough samples was "undecided evidence", not no data: held at its weight
    until decideWithin, no NoData event. No number is no data; a hold that ends in silence has not
    passed: the no-data clock runs and its policy (rollback after 60s) acts, with a NoData event."""
    run = canary_in_step0()
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    decisions = [run.step(after=10, workloads=w, samples=samples) for _ in range(12)]  # hold 30s, noData 60s
    actions = [d.action for d in decisions]
    assert Action.ADVANCE not in actions and Action.ROLLBACK in actions, name
    assert decisions[1].status.no_data_since or samples is None, name  # the clock runs from the first silent look
    d = decisions[actions.index(Action.ROLLBACK)]
    assert "no conclusive data" in d.status.message and "NoData" in [e.reason for e in d.events], name


def test_few_samples_are_inconclusive_not_pass():
    run = canary_in_step0()
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    samples = tuple(MetricSample(n, "q", value=0.0, samples=12.0) for n in ("error-rate", "latency"))
    d = run.step(after=10, workloads=w, samples=samples)
    assert {r.verdict for r in d.status.last_analysis} == {"Inconclusive"}
    d = run.step(after=25, workloads=w, samples=samples)
    assert d.status.current_step == 0  # hold elapsed, still no advance


def test_provider_error_is_inconclusive():
    run = canary_in_step0()
    samples = tuple(MetricSample(n, "q", error="connection refused") for n in ("error-rate", "latency"))
    d = run.step(after=10, workloads={**ready(V1), V2.revision: Workload(1, 1)}, samples=samples)
    assert d.action is Action.HOLD and "connection refused" in d.status.last_analysis[0].reason


# ------------------------------------------------------------------ manual gates and commands

def test_step_without_hold_waits_for_promote():
    spec = make_spec("model:v2", steps=[{"weight": 20}, {"weight": 100, "hold": "10s"}])
    run = stable_on_v1()
    run.spec = spec
    run.step(after=1)
    w = {**ready(V1), spec.revision: Workload(1, 1)}
    run.step(after=1, workloads=w)
    d = run.step(after=100, workloads=w, samples=good())
    assert d.status.phase == "Paused" and d.status.current_step == 0
    assert {c.type: c.reason for c in d.status.conditions}["Paused"] == "ManualGate"
    d = run.step(after=1, workloads=w, commands=Commands(promote=command_value(spec.revision, 0, "p1")))
    assert d.action is Action.ADVANCE and d.status.step_weight == 100


def test_abort_rolls_back_at_once():
    run = canary_in_step0()
    d = run.step(after=1, workloads={**ready(V1), V2.revision: Workload(1, 1)}, commands=Commands(abort=command_value(V2.revision, None, "a1")))
    assert d.action is Action.ROLLBACK and "aborted by user" in d.status.message


def test_pause_holds_and_does_not_count_toward_hold():
    run = canary_in_step0()
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    run.step(after=10, workloads=w, samples=good())
    d = run.step(after=1, workloads=w, commands=Commands(paused=True))
    assert d.status.phase == "Paused"
    d = run.step(after=100, workloads=w, commands=Commands(paused=True), samples=good())
    assert d.status.phase == "Paused" and d.status.current_step == 0
    d = run.step(after=1, workloads=w, samples=good())  # resumed
    assert d.status.phase == "Progressing" and d.status.current_step == 0


def test_promote_full_skips_remaining_steps():
    run = canary_in_step0()
    d = run.step(after=1, workloads={**ready(V1), V2.revision: Workload(1, 1)}, commands=Commands(promote_full=command_value(V2.revision, None, "f")))
    assert d.action is Action.PROMOTE


# ------------------------------------------------------------------ commands name their release

def rolled_back_v2():
    """v2 rolled back (by its error rate), v1 stable."""
    run = canary_in_step0()
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    run.step(after=10, workloads=w, samples=good(**{"error-rate": 0.5}))
    run.step(after=60, workloads=ready(V1))
    assert run.status.phase == "RolledBack"
    return run


def ignored(decision):
    return [e.message for e in decision.events if e.reason == "CommandIgnored" and e.type == "Warning"]


@pytest.mark.parametrize("commands,why", [
    (Commands(promote=command_value(V2.revision, 0, "p1")), f"promote for revision {V2.revision} step 0 ignored: "
                                                            f"revision {V2.revision} was rolled back"),
    (Commands(promote_full=command_value(V2.revision, None, "f1")), "promote --full for revision"),
    (Commands(abort=command_value(V2.revision, None, "a1")), "abort for revision"),
    (Commands(promote="p1"), "promote 'p1' ignored: it names no release (write revision=<revision>,step=<step>,"
                             "id=<new token>)"),
])
def test_a_command_sent_to_a_rolled_back_rollout_is_ignored_visibly_and_never_reaches_the_next_release(
        commands, why):
    run = rolled_back_v2()
    d = run.step(after=1, workloads=ready(V1), commands=commands)
    assert d.status.phase == "RolledBack" and len(ignored(d)) == 1 and why in ignored(d)[0]
    run.spec = V3  # the next version is applied; the stale annotation is still on the object
    w = {**ready(V1), V3.revision: Workload(1, 1)}
    run.step(after=1, commands=commands)
    for _ in range(3):  # ready, weight confirmed, analysed before its hold ends
        d = run.step(after=1, workloads=w, commands=commands, samples=good())
    assert (d.status.canary_revision, d.status.current_step, d.status.phase) == (V3.revision, 0, "Progressing")
    assert all(not ignored(d) for d in run.decisions[-4:])  # handled once, not again


def test_retry_acts_only_on_the_rolled_back_revision_it_names():
    run = rolled_back_v2()
    d = run.step(after=1, workloads=ready(V1), commands=Commands(retry=command_value(V3.revision, None, "r1")))
    assert d.status.phase == "RolledBack" and "is not the rolled-back revision" in ignored(d)[0]
    d = run.step(after=1, workloads=ready(V1), commands=Commands(retry=command_value(V2.revision, None, "r2")))
    assert (d.action, d.status.canary_revision, ignored(d)) == (Action.START, V2.revision, [])


def test_promote_for_another_step_is_ignored_and_the_step_keeps_its_hold():
    run = canary_in_step0()
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    d = run.step(after=1, workloads=w, commands=Commands(promote=command_value(V2.revision, 1, "p1")))
    assert (d.status.current_step, ignored(d)) == \
        (0, [f"promote for revision {V2.revision} step 1 ignored: the current step is 0"])
    d = run.step(after=1, workloads=w, commands=Commands(promote=command_value(V2.revision, 0, "p2")))
    assert (d.action, d.status.current_step, ignored(d)) == (Action.ADVANCE, 1, [])


@pytest.mark.parametrize("name", ["promote", "promote_full", "abort", "retry"])
def test_commands_on_a_succeeded_rollout_are_ignored_with_an_event(name):
    run = stable_on_v1()
    command = Commands(**{name: command_value(V1.revision, 0 if name == "promote" else None, "t1")})
    d = run.step(after=1, workloads=ready(V1), commands=command)
    assert (d.status.phase, d.status.stable_revision) == ("Succeeded", V1.revision)
    assert len(ignored(d)) == 1 and "the rollout is Succeeded" in ignored(d)[0]
    assert not ignored(run.step(after=1, workloads=ready(V1), commands=command))  # once


@pytest.mark.parametrize("commands,action", [
    (Commands(abort=command_value(V2.revision, None, "a1")), Action.ROLLBACK),
    (Commands(promote_full=command_value(V2.revision, None, "f1")), Action.PROMOTE),
    (Commands(promote=command_value(V2.revision, 0, "p1")), Action.ADVANCE),
    (Commands(abort=command_value(V1.revision, None, "a1")), Action.HOLD),  # names the stable revision
    (Commands(abort="now"), Action.HOLD),  # a bare token written by hand
])
def test_a_command_acts_once_and_only_on_the_canary_it_names(commands, action):
    run = canary_in_step0()
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    d = run.step(after=1, workloads=w, commands=commands)
    assert d.action is action and bool(ignored(d)) == (action is Action.HOLD)
    if action is Action.ADVANCE:
        d = run.step(after=1, workloads=w, commands=commands)
        assert d.status.current_step == 1  # the same value does not advance again


# ------------------------------------------------------------------ superseding

def test_new_template_during_rollout_supersedes_canary():
    run = canary_in_step0()
    run.spec = V3
    d = run.step(after=1, workloads={**ready(V1), V2.revision: Workload(1, 1)})
    assert d.action is Action.START and d.status.canary_revision == V3.revision
    assert d.status.history[0].result == "Superseded"
    desired = desired_state(V3, d.status, {}, run.now)
    assert desired.canary_weight == 0 and V2.revision in desired.replicas


def test_template_reverted_to_stable_abandons_canary():
    run = canary_in_step0()
    run.spec = V1
    d = run.step(after=1, workloads=ready(V1))
    assert d.status.phase == "Succeeded" and d.status.canary_revision is None


def test_scale_down_after_delay_deletes_old_revision():
    run = canary_in_step0()
    d = run.step(after=1, workloads={**ready(V1), V2.revision: Workload(1, 1)}, commands=Commands(abort=command_value(V2.revision, None, "a")))
    assert desired_state(V2, d.status, {}, run.now).replicas[V2.revision] == -1  # kept while the delay runs
    assert desired_state(V2, d.status, {}, run.now + timedelta(seconds=31)).replicas[V2.revision] is None


# ------------------------------------------------------------------ restart safety

def test_decide_is_deterministic_from_status_alone():
    """Replaying the same status and observations gives the same decision: no hidden state."""
    run = canary_in_step0()
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    stored = run.status.dump()
    now = run.now + timedelta(seconds=10)
    a = decide(V2, RolloutStatus.parse(stored), Observations(workloads=w, samples=good()), now)
    b = decide(V2, RolloutStatus.parse(stored), Observations(workloads=w, samples=good()), now)
    assert a == b and a.status.dump() == b.status.dump()


def test_weights_always_follow_the_plan():
    run = canary_in_step0()
    w = {**ready(V1), V2.revision: Workload(4, 4)}
    seen = []
    for _ in range(20):
        d = run.step(after=10, workloads=w, samples=good() if analysis_due(V2, run.status, run.now + timedelta(seconds=10)) else None)
        seen.append(d.status.canary_weight)
    assert all(weight in {0, 10, 50, 100} for weight in seen)
    during = seen[:seen.index(0)] if 0 in seen else seen
    assert during == sorted(during) and during[-1] == 100  # weights only go up: the plan, then the watch
    assert run.status.stable_revision == V2.revision


def _written_first(run, **step):
    """Whether the next decision of `run` is written before it is acted on (see reconcile)."""
    stored = run.status
    d = run.step(**step)
    return d.action, core.write_before_acting(run.spec, stored, d.status, step.get("workloads") or {}, run.now)


def test_decisions_that_route_users_otherwise_are_written_before_acting_the_others_are_not():
    """A restart between acting and writing would start from the stored status: only decisions whose
    routing that status would undo (revisions, weight) need the write before acting."""
    run = stable_on_v1()
    run.spec = V2
    assert _written_first(run, after=1, workloads=ready(V1)) == (Action.START, True)  # a new canary revision
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    assert _written_first(run, after=1, workloads=w) == (Action.ADVANCE, True)  # weight 0 -> 10
    assert _written_first(run, workloads=w) == (Action.HOLD, False)  # the cluster carries 10: its hold starts
    assert _written_first(run, after=10, workloads=w, samples=good()) == (Action.HOLD, False)  # judged: same routing
    w[V2.revision] = Workload(2, 2)
    assert _written_first(run, after=20, workloads=w, samples=good()) == (Action.ADVANCE, True)  # 10 -> 50
    run.step(after=10, workloads=w, samples=good())
    assert _written_first(run, after=30, workloads=w, samples=good()) == (Action.PROMOTE, False)  # still 50
    w = {**ready(V1), **ready(V2)}
    assert _written_first(run, after=1, workloads=w) == (Action.ADVANCE, True)  # 50 -> 100: the watch
    assert _written_first(run, after=1, workloads=w) == (Action.HOLD, False)  # carried: the watch starts
    assert _written_first(run, after=10, workloads=w, samples=good()) == (Action.HOLD, False)  # watched
    assert _written_first(run, after=60, workloads=w) == (Action.PROMOTED, True)  # v2 stable


@pytest.mark.parametrize("samples,commands,action", [
    (good(**{"error-rate": 0.05}), None, Action.ROLLBACK),
    (None, Commands(abort=command_value(V2.revision, None, "a")), Action.ROLLBACK),
    (good(latency=0.9), None, Action.HOLD),  # a first non-critical failure holds
])
def test_a_rollback_is_written_before_traffic_leaves_the_canary(samples, commands, action):
    run = canary_in_step0()
    w = {**ready(V1), V2.revision: Workload(1, 1)}
    assert _written_first(run, after=10, workloads=w, samples=samples, commands=commands) == \
        (action, action is Action.ROLLBACK)


def test_a_decision_written_before_acting_is_not_ready_until_the_cluster_carries_it():
    """GitOps health stays true while the decision waits for acting: a promotion is not Ready before
    its traffic moved, and once carried, the written status says what the decision says."""
    run = canary_in_step0()
    run.status = run.status.replace(phase="Promoting", current_step=1, step_weight=50, watching_since=core.ts(run.now))
    d = run.step(after=60, workloads={**ready(V1), **ready(V2)}, traffic=50, samples=good())
    assert d.action is Action.PROMOTED and d.status.condition("Ready").status == "True"
    written = core.intent(d.status, 1, 50, 0, run.now)
    assert written.condition("Ready").status == "False" and written.condition("Ready").reason == "Converging"
    assert written.phase == "Succeeded" and written.stable_revision == V2.revision
    assert core.intent(d.status, 1, 0, 0, run.now) == d.status


# ------------------------------------------------------------------ invalid spec and routing arithmetic

def test_invalid_spec_keeps_traffic_and_warns_once():
    run = canary_in_step0()
    d = invalid(run.status, "spec.strategy.steps[0].weight", "must be <= 100", 2, Commands(), run.now)
    assert d.status.phase == "InvalidSpec" and d.status.canary_weight == 10
    assert [e.reason for e in d.events] == ["InvalidSpec"]
    again = invalid(d.status, "spec.strategy.steps[0].weight", "must be <= 100", 2, Commands(), run.now)
    assert again.events == ()


def test_an_abort_under_an_invalid_spec_rolls_the_canary_back():
    """The spec cannot be parsed, yet the abort annotation is honoured: the canary is rolled back, and
    stays so when the spec is valid again (the same template is not re-opened)."""
    run = canary_in_step0()
    d = invalid(run.status, "spec.x", "bad", 2, Commands(abort=command_value(V2.revision, None, "t1")), run.now)
    assert d.status.canary_revision is None and d.status.aborted_revision == V2.revision
    assert d.status.history[0].result == "RolledBack" and d.status.history[0].reason == "aborted by user"
    assert [e.reason for e in d.events] == ["RolledBack", "InvalidSpec"]
    run.status = d.status
    again = run.step(after=10, workloads={**ready(V1), V2.revision: Workload(1, 1)}, traffic=0, generation=3)
    assert again.status.canary_revision is None and again.status.phase == "RolledBack"


@pytest.mark.parametrize("failure,confirmed", [("RouteNotFound", None), (None, None)])
def test_status_never_says_more_than_the_cluster_confirms(failure, confirmed):
    """A route that cannot be read back (deleted, or unknown): canaryWeight unknown, not the last value
    read, neither Ready nor Healthy True, and a route that fails is not Succeeded."""
    status = stable_on_v1().status.replace(canary_weight=50)
    assert status.condition("Healthy").status == "True"
    result = core.ActResult(confirmed, 0, failure, "HTTPRoute ns/r not found" if failure else "")
    recorded, _, _ = core.record_act(status, 1, result, T0)
    assert recorded.canary_weight is None
    assert recorded.condition("Ready").status == "False" and recorded.condition("Healthy").status == "False"
    assert recorded.phase == ("Degraded" if failure else "Succeeded")  # unknown while KServe moves traffic


def test_recovery_from_invalid_spec_resumes_the_rollout():
    run = canary_in_step0()
    run.status = invalid(run.status, "spec.x", "bad", 2, Commands(), run.now).status
    d = run.step(after=10, workloads={**ready(V1), V2.revision: Workload(1, 1)}, samples=good(), generation=3)
    assert d.status.phase == "Progressing" and d.status.current_step == 0


@pytest.mark.parametrize("router,weight,expected", [
    ("replicas", 25, 1), ("replicas", 50, 2), ("replicas", 75, 3), ("replicas", 100, 4), ("replicas", 0, 0),
    ("gatewayAPI", 10, 1), ("gatewayAPI", 50, 2), ("gatewayAPI", 100, 4), ("gatewayAPI", 0, 1),
])
def test_canary_replicas(router, weight, expected):
    assert canary_replicas(make_spec(router=router), weight) == expected


# ------------------------------------------------------------------ gates

def gated_spec(stage="beforeTraffic"):
    raw = make_spec("model:v2").model_dump(by_alias=True)
    raw["strategy"]["gates"] = {stage: [
        {"name": "offline-eval", "job": {"template": {"spec": {"containers": [{"name": "eval", "image": "eval:1"}]}}}},
        {"name": "approval", "webhook": {"url": "http://hook:80/gate"}}]}
    raw["strategy"]["warmup"] = {"readinessTimeout": "60s", "skipAnalysisFor": "10s"}
    raw["strategy"]["steps"] = [{"weight": 10, "hold": "30s"}]
    return parse_spec(raw, POLICY)


def test_gates_before_traffic_hold_weight_zero_until_all_pass():
    from modelrollout.core import GateResult
    spec = gated_spec()
    run = stable_on_v1()
    run.spec = spec
    run.step(after=1)
    w = {**ready(V1), spec.revision: Workload(1, 1)}
    d = run.step(after=1, workloads=w)
    assert d.status.gating == "beforeTraffic" and d.status.canary_weight == 0 and "offline-eval" in d.status.message
    d = run.step(after=1, workloads=w)  # no results yet: still waiting
    assert d.status.canary_weight == 0
    obs_gates = {"offline-eval": GateResult("Passed", "ok"), "approval": GateResult("Pending", "calling")}
    d = decide(spec, run.status, Observations(workloads=w, gates=obs_gates), run.now)
    assert d.status.canary_weight == 0 and "approval" in d.status.message
    d = decide(spec, d.status, Observations(workloads=w, gates={"approval": GateResult("Passed", "200")}), run.now)
    assert d.action is Action.ADVANCE and d.status.step_weight == 10 and d.status.gating is None


def test_a_failed_gate_rolls_back_before_any_traffic_with_its_reason():
    from modelrollout.core import GateResult
    spec = gated_spec()
    run = stable_on_v1()
    run.spec = spec
    run.step(after=1)
    w = {**ready(V1), spec.revision: Workload(1, 1)}
    run.step(after=1, workloads=w)
    d = decide(spec, run.status, Observations(workloads=w, gates={
        "offline-eval": GateResult("Failed", "Job failed: accuracy 0.71 < 0.80 on holdout")}), run.now)
    assert d.action is Action.ROLLBACK and "accuracy 0.71" in d.status.message
    assert all(h.result != "Promoted" for h in d.status.history)


def test_gates_before_promotion_run_after_the_last_step():
    from modelrollout.core import GateResult
    spec = gated_spec("beforePromotion")
    run = stable_on_v1()
    run.spec = spec
    run.step(after=1)
    w = {**ready(V1), spec.revision: Workload(1, 1)}
    run.step(after=1, workloads=w)
    run.step(after=10, workloads=w, samples=good())  # weight confirmed: the 30 s hold starts
    d = run.step(after=25, workloads=w, samples=good())
    assert d.status.gating is None
    d = run.step(after=10, workloads=w, samples=good())
    assert d.status.gating == "beforePromotion" and d.status.phase == "Progressing"
    gates = {"offline-eval": GateResult("Passed", "ok"), "approval": GateResult("Passed", "200")}
    d = decide(spec, d.status, Observations(workloads=w, gates=gates), run.now)
    assert d.action is Action.PROMOTE


def test_undecided_evidence_with_enough_samples_holds_but_is_not_no_data():
    """A well-sampled but undecided verdict holds the step; only missing data starts the noData clock."""
    spec = make_spec("model:v2", metrics=[{"name": "errors", "type": "proportion", "query": "bad{revision=\"{{ revision }}\"}",
                                           "totalQuery": "all{revision=\"{{ revision }}\"}", "minDetectableEffect": 0.002}])
    run = stable_on_v1()
    run.spec = spec
    run.step(after=1)
    w = {**ready(V1), spec.revision: Workload(1, 1)}
    run.step(after=1, workloads=w)
    undecided = (MetricSample("errors", "q", samples=400.0, canary_counts=(1.0, 400.0), stable_counts=(4.0, 4000.0)),)
    for _ in range(12):  # 120 s, twice the noData hold
        d = run.step(after=10, workloads=w, samples=undecided)
        assert d.status.last_analysis[0].verdict == "Inconclusive"
        assert d.action is Action.HOLD and d.status.no_data_since is None
    assert d.status.current_step == 0  # and it never advanced on it


def test_analysis_window_grows_with_the_step_up_to_max_window():
    from modelrollout.core import analysis_window
    run = canary_in_step0()  # interval 10s, skipAnalysisFor 10s
    assert analysis_window(V2, run.status, run.now + timedelta(seconds=12)) == 10  # at least one interval
    assert analysis_window(V2, run.status, run.now + timedelta(seconds=70)) == 60
    assert analysis_window(V2, run.status, run.now + timedelta(seconds=500)) == 490  # the whole step by default
    capped = make_spec("model:v2", maxWindow="30s")
    assert analysis_window(capped, run.status, run.now + timedelta(seconds=500)) == 30


def test_a_weight_zero_step_serves_nobody_is_not_analysed_and_its_hold_alone_ends_it():
    spec = make_spec("model:v2", steps=[{"weight": 0, "hold": "10s"}, {"weight": 50, "hold": "10s"}])
    run = stable_on_v1()
    run.spec = spec
    run.step(after=1)
    w = {**ready(V1), spec.revision: Workload(2, 2)}
    d = run.step(after=1, workloads=w)
    assert d.status.step_weight == 0 and desired_state(spec, d.status, w, run.now).canary_weight == 0
    d = run.step(workloads=w)  # the route carries 0: the hold starts
    assert not analysis_due(spec, d.status, run.now + timedelta(seconds=30))
    d = run.step(after=11, workloads=w)
    assert d.action is Action.ADVANCE and d.status.step_weight == 50


def test_a_last_step_of_weight_zero_never_promotes_unjudged():
    """It would wait for ever or promote a canary no user was served by: the spec is refused (issue 22)."""
    with pytest.raises(SpecError) as info:
        make_spec("model:v2", steps=[{"weight": 0, "hold": "10s"}])
    assert info.value.field == "spec.strategy.steps[0].weight"



# ------------------------------------------------------------------ rates from counts: pass rule, undecided steps

RATE = [{"name": "errors", "type": "proportion", "query": "bad{revision=\"{{ revision }}\"}",
         "totalQuery": "all{revision=\"{{ revision }}\"}", "max": 0.05, "critical": True}]


def _counts(bad, total):
    return (MetricSample("errors", "q", samples=float(total), canary_counts=(float(bad), float(total)),
                         stable_counts=(0.0, 10.0 * total)),)


def _rate_canary(spec):
    run = stable_on_v1()
    run.spec = spec
    run.step(after=1)
    w = {**ready(V1), spec.revision: Workload(1, 1)}
    run.step(after=1, workloads=w)
    run.step(workloads=w)  # the cluster carries weight 10: the 30 s hold starts
    return run, w


@pytest.mark.parametrize(("pass_rule", "verdict"), [(None, "Pass"), ("powered", "Pass"), ("proven", "Inconclusive")])
def test_the_pass_rule_decides_when_a_rate_within_its_bound_passes(pass_rule, verdict):
    """30 errors in 1,000 requests against max 0.05 (and stable + 0.05): enough requests to have caught
    0.10 with 80 % power (powered, the default), not yet a proof that the rate is below 0.05 (proven)."""
    metrics = [{**RATE[0], "minDetectableEffect": 0.05}]
    spec = make_spec("model:v2", metrics=metrics, **({"pass": pass_rule} if pass_rule else {}))
    run, w = _rate_canary(spec)
    d = run.step(after=31, workloads=w, samples=_counts(30, 1000))
    assert d.status.last_analysis[0].verdict == verdict
    assert (d.action is Action.ADVANCE) == (verdict == "Pass")


def test_a_step_undecided_past_its_hold_and_decide_within_pauses_saying_what_it_needs():
    spec = make_spec("model:v2", metrics=RATE, decideWithin="60s")
    run, w = _rate_canary(spec)
    decisions = [run.step(after=10, workloads=w, samples=_counts(2, 100)) for _ in range(12)]
    assert all(d.status.last_analysis[0].verdict == "Inconclusive" for d in decisions)
    # Analysing until the hold (30 s) plus decideWithin (60 s) has passed, then paused, weight kept.
    assert [d.status.phase for d in decisions[:8]] == ["Progressing"] * 8
    d = decisions[-1]
    assert (d.action, d.status.phase, d.status.canary_weight) == (Action.PAUSE, "Paused", 10)
    assert "undecided" in d.status.message and "errors needs ~" in d.status.message
    assert "more canary requests (~" in d.status.message and "s at " in d.status.message
    paused = {c.type: c for c in d.status.conditions}["Paused"]
    assert (paused.status, paused.reason) == ("True", "Undecided")
    warnings = [e for d in decisions for e in d.events if e.reason == "Undecided"]
    assert len(warnings) == 1 and warnings[0].type == "Warning"
    assert core.analysis_due(spec, d.status, run.now + timedelta(seconds=10))  # still analysing
    d = run.step(after=10, workloads=w, samples=_counts(2, 5000))  # the evidence arrives: it goes on
    assert d.action is Action.ADVANCE and d.status.current_step == 1


@pytest.mark.parametrize(("elapsed", "spec_args", "expected"), [
    (90, {}, None),                      # shorter than two blocks of 5 intervals (50 s each)
    (100, {}, (50.0, 1)),                # the last block, from the start of block 1
    (130, {}, (80.0, 1)),                # one to two blocks long
    (260, {}, (60.0, 4)),                # block index 4 spends alpha / 2 / 20
    (260, {"recentWindow": "30s"}, (50.0, 7)),
    (260, {"recentWindow": "0s"}, None),  # turned off
])
def test_recent_window_spans_the_steps_latest_one_to_two_blocks(elapsed, spec_args, expected):
    from modelrollout.core import analysis_window_start, recent_window
    spec = make_spec("model:v2", **spec_args)
    run = canary_in_step0()  # interval 10s
    start = analysis_window_start(spec, run.status, run.now + timedelta(seconds=1000))
    assert recent_window(spec, run.status, start + timedelta(seconds=elapsed)) == expected
