"""Table tests of the mirror step in the pure core: copies of live requests go to the canary, no
user sees a canary answer, the canary is judged on them, and a failing canary never serves."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from modelrollout.core import (Action, Observations, Workload, analysis_due, decide, desired_state, record_act,
                               ActResult)
from modelrollout.evaluate import MetricSample
from modelrollout.spec import PlatformPolicy, SpecError, parse_spec
from modelrollout.status import RolloutStatus
from modelrollout_lab.scenarios import rollout

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=timezone.utc)
POLICY = PlatformPolicy(prometheus_url="http://prom:9090")
STEPS = [{"mirror": 100, "hold": "10s"}, {"weight": 50, "hold": "10s"}]
METRICS = [{"name": "errors", "query": 'errors{revision="{{ revision }}"}', "max": 0.02, "critical": True},
           {"name": "latency", "query": 'p95{revision="{{ revision }}"}', "max": 0.2, "failureLimit": 2}]


def spec_of(version, steps=STEPS, router="istio"):
    raw = rollout("fraud", version=version, router=router, replicas=4, steps=steps, interval="5s",
                  skip_analysis_for="2s", metrics=METRICS)["spec"]
    return parse_spec(raw, POLICY)


V1, V2 = spec_of("1.0.0"), spec_of("2.0.0")
READY = {V1.revision: Workload(4, 4), V2.revision: Workload(4, 4)}


def samples(**values):
    values = {"errors": 0.001, "latency": 0.05, **values}
    return tuple(MetricSample(name, f"q-{name}", value=value, samples=500.0) for name, value in values.items())


class Cluster:
    """Drives decide() as the reconciler does, with a cluster that carries at once what is desired."""

    def __init__(self):
        self.now, self.status = T0, RolloutStatus()
        self.weight, self.mirror = 0, 0
        self.weights_seen, self.mirrors_seen = [], []
        self.pass_(V1)

    def pass_(self, spec, *, after=0.0, samples_=None):
        self.now += timedelta(seconds=after)
        obs = Observations(workloads=READY, traffic=self.weight, mirror=self.mirror, samples=samples_)
        decision = decide(spec, self.status, obs, self.now)
        desired = desired_state(spec, decision.status, READY, self.now)
        self.weight, self.mirror = desired.canary_weight, desired.canary_mirror
        self.weights_seen.append(self.weight)
        self.mirrors_seen.append(self.mirror)
        self.status, _, _ = record_act(decision.status, 1, ActResult(self.weight, desired.canary_weight,
                                                                     confirmed_mirror=self.mirror,
                                                                     target_mirror=desired.canary_mirror), self.now)
        return decision


def in_mirror_step():
    cluster = Cluster()
    cluster.pass_(V2, after=1)  # canary started
    decision = cluster.pass_(V2, after=1)  # ready: step 0 entered
    assert decision.status.step_mirror == 100 and decision.status.step_weight == 0
    return cluster


def test_a_mirror_step_copies_requests_serves_no_user_and_starts_its_hold_once_the_mirror_is_carried():
    cluster = in_mirror_step()
    assert (cluster.weight, cluster.mirror) == (0, 100)  # no user sees a canary answer
    decision = cluster.pass_(V2)  # the cluster reads back mirror 100
    assert decision.status.step_started_at and "mirror 100%" in decision.status.message + str(decision.events)
    assert analysis_due(V2, cluster.status, cluster.now + timedelta(seconds=6))  # judged although weight 0


def test_a_mirror_step_waits_while_the_cluster_does_not_carry_the_mirror():
    cluster = in_mirror_step()
    cluster.mirror = 0  # the router has not set it (yet)
    decision = cluster.pass_(V2)
    assert decision.status.phase == "Progressing" and decision.status.step_started_at is None
    assert "mirror 100%" in decision.status.message and "mirror 0%" in decision.status.message


def test_a_mirror_step_ends_only_on_passing_analysis_never_on_its_hold_alone():
    cluster = in_mirror_step()
    cluster.pass_(V2)
    decision = cluster.pass_(V2, after=11)  # the hold is over, nothing judged yet
    assert decision.action is not Action.ADVANCE and decision.status.current_step == 0
    decision = cluster.pass_(V2, after=1, samples_=samples())
    assert decision.action is Action.ADVANCE and decision.status.current_step == 1
    assert (cluster.weight, cluster.mirror) == (50, 0)  # the mirror goes when users get the canary
    assert decision.status.step_mirror is None


@pytest.mark.parametrize("bad", [{"errors": 0.2}, {"latency": 0.9}])
def test_a_canary_failing_in_its_mirror_step_is_rolled_back_and_never_served(bad):
    cluster = in_mirror_step()
    cluster.pass_(V2)
    for _ in range(2):  # the latency gate needs two failed checks in a row
        decision = cluster.pass_(V2, after=5, samples_=samples(**bad))
        if decision.action is Action.ROLLBACK:
            break
    assert decision.action is Action.ROLLBACK and decision.status.phase == "RolledBack"
    assert (cluster.weight, cluster.mirror) == (0, 0)  # copies stop too
    assert set(cluster.weights_seen) == {0}  # never one user request to the canary


def test_mirror_steps_are_checked():
    with pytest.raises(SpecError) as weight:
        spec_of("2.0.0", steps=[{"mirror": 50, "weight": 10, "hold": "5s"}])
    assert weight.value.field.startswith("spec.strategy.steps[0]") and "mirror" in weight.value.message
    with pytest.raises(SpecError) as replicas:  # the replicas router cannot send copies: its pods serve users
        spec_of("2.0.0", steps=[{"mirror": 100, "hold": "5s"}, {"weight": 50, "hold": "5s"}], router="replicas")
    assert replicas.value.field == "spec.strategy.steps[0].weight"
    assert spec_of("2.0.0").strategy.mirrors and not spec_of("2.0.0", steps=[{"weight": 5}]).strategy.mirrors
