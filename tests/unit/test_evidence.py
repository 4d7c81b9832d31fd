"""Only one finite number per query is evidence (issue 22): several series where one is expected, NaN,
±Inf, negative or impossible counts make the metric Inconclusive with a reason naming the cause, with no
sample count, so the no-data clock counts it exactly as a missing answer; never Pass."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import pytest
from test_query_comments import plain, raw

from modelrollout.analysis import measure
from modelrollout.core import ts
from modelrollout.evaluate import evaluate
from modelrollout.providers import Series
from modelrollout.spec import PlatformPolicy, parse_spec
from modelrollout.status import RolloutStatus

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CANARY, STABLE = "a1b2c3d4e5", "f6e5d4c3b2"
METRICS = {
    "accuracy": {"query": 'accuracy{revision="{{ revision }}"}', "min": 0.85},
    "errors": {"type": "proportion", "query": 'bad{revision="{{ revision }}"}',
               "totalQuery": 'all{revision="{{ revision }}"}', "max": 0.05},
    "success": {"type": "proportion", "successQuery": 'good{revision="{{ revision }}"}',
                "totalQuery": 'all{revision="{{ revision }}"}', "min": 0.9},
    "latency": {"type": "quantile", "quantile": 0.95, "max": 0.5, "histogram": 'lat_bucket{revision="{{ revision }}"}'},
}


def one(value: float, **labels: str) -> list[Series]:
    return [Series(labels=labels, value=value)]


def buckets(*counts: float, bounds=(0.1, 0.5, math.inf)) -> list[Series]:
    return [Series(labels={"le": "+Inf" if math.isinf(le) else str(le)}, value=c) for le, c in zip(bounds, counts)]


HEALTHY = {"accuracy": one(0.92), "requests": one(500.0), "bad": one(1.0), "all": one(500.0), "good": one(499.0),
           "lat_bucket": buckets(400.0, 500.0, 500.0)}


class Answers:
    """A Prometheus that answers each query by the metric name it asks about, the canary's answers first."""

    def __init__(self, canary: dict[str, list[Series]]) -> None:
        self.canary = canary

    async def run_query(self, query, *, at=None):
        answers = self.canary if CANARY in query else HEALTHY
        return next(series for name, series in answers.items() if f"{name}{{" in query)


def judged(metric: str, **canary: list[Series]):
    manifest = {**raw(plain), "analysis": {"interval": "30s", "metrics": [{"name": metric, **METRICS[metric]}],
                                           "samples": {"query": 'requests{revision="{{ revision }}"}', "min": 10}}}
    rollout = parse_spec(manifest, PlatformPolicy(prometheus_url="http://prometheus:9090"))
    started = ts(NOW - timedelta(minutes=20))
    status = RolloutStatus.parse({"phase": "Progressing", "canaryRevision": CANARY, "stableRevision": STABLE,
                                  "currentStep": 0, "canaryWeight": 10, "canaryReadyAt": started,
                                  "stepStartedAt": started})
    (sample,) = asyncio.run(measure(rollout, "ml", "fraud", status, Answers({**HEALTHY, **canary}), NOW))
    return evaluate(rollout.analysis.metrics[0], sample, rollout.analysis.samples.min)


@pytest.mark.parametrize("metric", list(METRICS))
def test_one_finite_number_per_query_is_judged(metric):
    assert judged(metric).verdict.value == "Pass"


@pytest.mark.parametrize(("metric", "canary", "cause"), [
    # one series per revision (the query lacks sum or by): 0.92 + 0.40 was "Pass 1.32 >= min 0.85"
    ("accuracy", {"accuracy": one(0.92, revision="a") + one(0.40, revision="b")},
     "2 series where one is expected: add sum() or by()"),
    ("accuracy", {"accuracy": one(math.nan)}, "nan, not a finite number"),
    ("accuracy", {"accuracy": one(math.inf)}, "inf, not a finite number"),
    ("accuracy", {"accuracy": []}, "the query answered nothing"),  # with 500 samples: still no data
    ("accuracy", {"requests": one(300.0) + one(200.0)}, "2 series where one is expected"),
    ("accuracy", {"requests": one(-500.0)}, "a negative count (-500)"),
    ("errors", {"bad": one(1.0, pod="p1") + one(0.0, pod="p2")}, "2 series where one is expected"),
    ("errors", {"all": one(-500.0)}, "a negative count (-500)"),
    ("errors", {"bad": one(600.0)}, "impossible counts: 600 bad events of 500"),
    ("errors", {"all": one(math.nan)}, "nan, not a finite number"),
    ("success", {"good": one(520.0)}, "impossible counts: 520 successes of 500"),
    ("latency", {"lat_bucket": buckets(400.0, 300.0, 500.0)}, "impossible histogram: le=0.5 counts 300"),
    ("latency", {"lat_bucket": buckets(400.0, 400.0, 500.0, bounds=(0.1, 0.1, math.inf))},
     "2 series for the bucket le=0.1 where one is expected"),
    ("latency", {"lat_bucket": buckets(400.0, math.nan, 500.0)}, "nan, not a finite number"),
    ("latency", {"lat_bucket": buckets(-4.0, 500.0, 500.0)}, "a negative count (-4)"),
])
def test_anything_but_one_finite_number_is_inconclusive_naming_its_cause_and_counts_as_no_data(metric, canary, cause):
    judgement = judged(metric, **canary)
    assert judgement.verdict.value == "Inconclusive" and cause in judgement.reason
    assert judgement.samples is None  # what the no-data clock counts (core._lacks_data)
