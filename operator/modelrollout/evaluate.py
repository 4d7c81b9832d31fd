"""The one evaluator: a metric rule and the numbers a provider fetched -> a verdict.

Providers only fetch numbers (`MetricSample`); every judgement is made here, by the pure
judges of `modelrollout.stats`, so the same rule means the same thing for every provider.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelrollout import stats
from modelrollout.spec import MetricRule, MetricType
from modelrollout.stats import Judgement, Verdict

Buckets = tuple[tuple[float, float], ...]  # (upper bound `le`, cumulative count), +Inf last


@dataclass(frozen=True)
class MetricSample:
    """What was measured for one metric in one analysis. Which fields are set depends on its type."""

    metric: str
    query: str
    value: float | None = None
    samples: float | None = None
    stable_value: float | None = None
    canary_counts: tuple[float, float] | None = None  # (bad, total)
    stable_counts: tuple[float, float] | None = None
    canary_buckets: Buckets | None = None
    stable_buckets: Buckets | None = None
    error: str | None = None


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _worst(judgements: list[Judgement]) -> Judgement:
    for verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE):
        for judgement in judgements:
            if judgement.verdict is verdict:
                return judgement
    return judgements[0]


def evaluate(rule: MetricRule, sample: MetricSample, default_min_samples: int = 0) -> Judgement:
    if sample.error:
        return Judgement(Verdict.INCONCLUSIVE, None, None, f"no data: {sample.error}", {})
    min_samples = rule.min_samples if rule.min_samples is not None else default_min_samples
    cmp = rule.compare_to_stable

    if rule.type is MetricType.THRESHOLD:
        judgements = []
        if rule.min is not None or rule.max is not None:
            judgements.append(stats.judge_threshold(
                sample.value, sample.samples, min=rule.min, max=rule.max, min_samples=min_samples))
        if cmp is not None:
            judgements.append(stats.judge_vs_stable(
                sample.value, sample.stable_value, sample.samples, max_increase=cmp.max_increase,
                max_decrease=cmp.max_decrease, relative=cmp.relative, min_samples=min_samples))
        return _worst(judgements)

    if rule.type is MetricType.PROPORTION:
        if sample.canary_counts is None:
            return Judgement(Verdict.INCONCLUSIVE, None, None, "no data: no counts", {})
        tolerance = rule.min_detectable_effect
        if tolerance is None and cmp is not None:
            tolerance = cmp.max_increase if cmp.max_increase is not None else cmp.max_decrease
        canary_bad, canary_total = sample.canary_counts
        stable_bad, stable_total = sample.stable_counts or (None, None)
        baseline = None
        if sample.stable_counts is None:
            # No stable to compare with: judge against the fixed bound as a known baseline.
            baseline = rule.max if rule.max is not None else (1 - rule.min if rule.min is not None else None)
        return stats.judge_proportion(
            canary_bad, canary_total, stable_bad, stable_total, tolerance=tolerance or 0.0,
            alpha=rule.alpha, min_samples=min_samples, baseline=baseline)

    if rule.type is MetricType.QUANTILE:
        if not sample.canary_buckets:
            return Judgement(Verdict.INCONCLUSIVE, None, None, "no data: empty histogram", {})
        return stats.judge_quantile(
            list(sample.canary_buckets), list(sample.stable_buckets) if sample.stable_buckets else None,
            q=rule.quantile or 0.95, max=rule.max,
            max_increase=cmp.max_increase if cmp else None, relative=cmp.relative if cmp else False,
            min_samples=min_samples)

    if not sample.canary_buckets or not sample.stable_buckets:
        return Judgement(Verdict.INCONCLUSIVE, None, None, "no data: a histogram is empty", {})
    return stats.judge_distribution_shift(
        list(sample.canary_buckets), list(sample.stable_buckets), max_psi=rule.max,
        alpha=rule.alpha, min_count=min_samples)
