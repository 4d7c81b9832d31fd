"""The one evaluator: a metric rule and the numbers a provider fetched -> a verdict.

Providers only fetch numbers (`MetricSample`); every judgement is made here, by the pure
judges of `modelrollout.stats`, so the same rule means the same thing for every provider.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelrollout import stats
from modelrollout.spec import MetricRule, MetricType
from modelrollout.stats import Judgement, PassRule, Verdict

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


def _judge_rate(rule: MetricRule, sample: MetricSample, min_samples: int, pass_rule: PassRule) -> Judgement:
    """A proportion's counts against its bound (max of a bad-event rate, min of a success rate) and
    stable's rate plus its tolerance; a rule with neither is compared with stable at tolerance 0."""
    assert sample.canary_counts is not None
    bound = rule.min if rule.success_query else rule.max
    tolerance = rule.rate_tolerance
    if bound is None and tolerance is None:
        tolerance = 0.0

    def events(counts: tuple[float, float] | None) -> tuple[float | None, float | None]:
        """(successes, total) of a success rate, (bad events, total) of a bad-event rate."""
        if counts is None:
            return None, None
        bad, total = counts
        return (total - bad if rule.success_query else bad), total

    return stats.judge_proportion(
        *events(sample.canary_counts), *events(sample.stable_counts), tolerance=tolerance, bound=bound,
        alpha=rule.alpha, min_samples=min_samples,
        direction="higher_is_better" if rule.success_query else "lower_is_better",
        pass_rule=pass_rule, power=rule.power, effect=rule.min_detectable_effect)


def evaluate(rule: MetricRule, sample: MetricSample, default_min_samples: int = 0,
             pass_rule: PassRule = "powered") -> Judgement:
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
        return _judge_rate(rule, sample, min_samples, pass_rule)

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
