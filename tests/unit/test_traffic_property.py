"""Property test of the decide -> act loop against a model cluster (issue 9's invariants 1 and 2).

Random step lists, replica counts, routers, pod start-up times and reconcile cadences; the model
cluster applies `desired_state` the way Kubernetes would (pods become Ready some time after they
are asked for, disappear at once when scaled down; a route weight is in effect once written),
and the reconcile loop reads back what the cluster carries. After every pass:

- the canary's real share of traffic never exceeds the weight of the step the status is in
  (zero before the first step and after a rollback), except while promoting;
- a route weight is raised only as far as Ready canary pods can carry it;
- a canary the cluster lets serve is analysed within one interval.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout import core
from modelrollout.core import Commands, Observations, Workload
from modelrollout.evaluate import MetricSample
from modelrollout.spec import PlatformPolicy, parse_spec
from modelrollout.status import RolloutStatus

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)
POLICY = PlatformPolicy(prometheus_url="http://prom:9090")


def build_spec(router: str, replicas: int, weights: list[int], holds: list[int], image: str):
    return parse_spec({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "m"}},
        "template": {"metadata": {"labels": {"app": "m"}}, "spec": {"containers": [{"name": "s", "image": image}]}},
        "service": {"port": 8080},
        "trafficRouting": {"replicas": {}} if router == "replicas" else {"gatewayAPI": {"httpRoute": "m"}},
        "strategy": {"warmup": {"readinessTimeout": "10m"},
                     "steps": [{"weight": w, "hold": f"{h}s"} for w, h in zip(weights, holds)]},
        "analysis": {"interval": "5s", "noData": {"hold": "10m"},
                     "metrics": [{"name": "errors", "query": 'e{r="{{ revision }}"}', "max": 0.01, "critical": True}]},
        "rollback": {"scaleDownDelay": "5s"},
    }, POLICY)


@st.composite
def scenarios(draw):
    router = draw(st.sampled_from(["replicas", "gatewayAPI"]))
    if router == "replicas":
        replicas = draw(st.sampled_from([1, 2, 4, 5, 10]))
        choices = [100 * k // replicas for k in range(1, replicas + 1)]
    else:
        replicas = draw(st.integers(1, 8))
        choices = list(range(0, 101, 5))
    weights = sorted(draw(st.lists(st.sampled_from(choices), min_size=1, max_size=5)
                          .filter(lambda ws: max(ws) > 0)))  # a last step of weight 0 is InvalidSpec
    holds = draw(st.lists(st.integers(1, 30), min_size=len(weights), max_size=len(weights)))
    return router, replicas, weights, holds, draw(st.integers(0, 2**32 - 1))


@dataclass
class ModelCluster:
    """Deployments whose pods become Ready after a random start-up time, and a route weight."""

    rng: random.Random
    replicas: dict[str, int] = field(default_factory=dict)
    starting: dict[str, list[float]] = field(default_factory=dict)  # Ready-at times of pods not Ready yet
    ready: dict[str, int] = field(default_factory=dict)
    route_weight: int = 0

    def apply(self, desired: core.Desired, now: float) -> None:
        for revision, wanted in desired.replicas.items():
            if wanted is None:
                wanted = 0
            elif wanted < 0:
                continue
            have = self.replicas.get(revision, 0)
            self.replicas[revision] = wanted
            if wanted > have:
                self.starting.setdefault(revision, []).extend(
                    now + self.rng.uniform(0.5, 20.0) for _ in range(wanted - have))
            else:  # scaled down: starting pods go first, then Ready ones, at once
                pending = self.starting.get(revision, [])
                drop = have - wanted
                cut = min(drop, len(pending))
                self.starting[revision] = sorted(pending)[:len(pending) - cut]
                self.ready[revision] = self.ready.get(revision, 0) - (drop - cut)
        self.route_weight = desired.canary_weight

    def tick(self, now: float) -> None:
        for revision, times in self.starting.items():
            done = [t for t in times if t <= now]
            self.starting[revision] = [t for t in times if t > now]
            self.ready[revision] = self.ready.get(revision, 0) + len(done)

    def workloads(self) -> dict[str, Workload]:
        return {rev: Workload(replicas=n, ready=self.ready.get(rev, 0)) for rev, n in self.replicas.items()}

    def canary_share(self, router: str, stable: str | None) -> float:
        """The share of users' requests the canary (any non-stable revision) answers."""
        if router == "replicas":
            total = sum(self.ready.values())
            return 0.0 if total == 0 else 100.0 * (total - self.ready.get(stable or "", 0)) / total
        return float(self.route_weight)


def planned_weight(spec, status) -> int:
    """The weight users may see: the current step's from its start (from the canary's start with
    the replicas router, whose Ready pods serve at once; spec validation keeps its steps > 0)."""
    if not status.canary_revision:
        return 0
    if not status.step_entered_at and spec.traffic_routing.router != "replicas":
        return 0
    return spec.strategy.steps[min(status.current_step or 0, len(spec.strategy.steps) - 1)].weight


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_canary_share_never_exceeds_the_step_and_a_serving_canary_is_analysed(scenario):
    router, replicas, weights, holds, seed = scenario
    rng = random.Random(seed)
    v1 = build_spec(router, replicas, weights, holds, "m:1")
    v2 = build_spec(router, replicas, weights, holds, "m:2")
    cluster = ModelCluster(rng)
    spec, status, now = v1, RolloutStatus(), T0
    for tick in range(400):
        if status.stable_revision == v1.revision:
            spec = v2  # a new template as soon as v1 is stable
        seconds = (now - T0).total_seconds()
        cluster.tick(seconds)
        stable = status.stable_revision or spec.revision
        carried = (round(cluster.canary_share(router, stable)) if router == "replicas"
                   else cluster.route_weight)
        samples = None
        if core.analysis_due(spec, status, now):
            bad = rng.random() < 0.01
            samples = (MetricSample("errors", "q", value=0.5 if bad else 0.0, samples=1000.0),)
        decision = core.decide(spec, status, Observations(workloads=cluster.workloads(), traffic=carried,
                                                           commands=Commands(), samples=samples), now)
        status = decision.status
        if carried > 0 and status.phase in ("Progressing", "Paused", "Promoting") and status.canary_revision:
            # The canary serves: an analysis must be due within one interval.
            assert core.analysis_due(spec, status, now + timedelta(seconds=spec.analysis.interval)), status
        cluster.apply(core.desired_state(spec, status, cluster.workloads(), now), seconds)
        share = cluster.canary_share(router, status.stable_revision or spec.revision)
        stable_ready = cluster.ready.get(status.stable_revision or "", 0)
        if router == "replicas" and status.stable_revision:
            # Users never meet the Service without a Ready pod: a rolled-back canary's pods stop only
            # once a stable pod is Ready (at a weight-100 step the stable has none left).
            assert sum(cluster.ready.values()) > 0, status
        if status.phase != "Promoting" and (router != "replicas" or stable_ready > 0):
            assert share <= planned_weight(spec, status) + 1e-9, (share, status.current_step, status)
        if router == "gatewayAPI" and status.canary_revision:
            # Raised only as far as Ready canary pods carry (N*w/100 of them for weight w), and only
            # ever to a weight of the plan.
            assert cluster.route_weight * spec.replicas <= 100 * cluster.ready.get(status.canary_revision, 0)
            watched = status.phase == "Promoting" and status.watching_since  # all traffic, stable on standby
            assert cluster.route_weight in {0, *weights, *([100] if watched else [])}
        if v2.revision in (status.stable_revision, status.aborted_revision) \
                and status.phase in ("Succeeded", "RolledBack") and not status.scale_downs:
            break
        now += timedelta(seconds=min(decision.requeue_after, rng.uniform(0.2, 5.0)))
