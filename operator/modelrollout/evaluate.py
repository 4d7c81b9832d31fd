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

# A stochasticOrder metric without minDetectableEffect: at any latency, at most 5 more canary
# requests in 100 may be slower than it than stable's.
STOCHASTIC_ORDER_TOLERANCE = 0.05

# The share of a rate's alpha spent on its recent windows (the step's window gets the rest).
RECENT_ALPHA_SHARE = 0.5

Buckets = tuple[tuple[float, float], ...]  # (upper bound `le`, cumulative count), +Inf last


@dataclass(frozen=True)
class RecentCounts:
    """A proportion's counts over the recent window (`core.recent_window`), which may only FAIL it.

    `index` is the window's block number in the step (1, 2, ...): the k-th recent window is tested at
    alpha / 2 / (k (k + 1)), so all of them together spend at most alpha / 2 (docs/analysis.md)."""

    seconds: float
    index: int
    canary_counts: tuple[float, float] | None  # (bad, total)
    stable_counts: tuple[float, float] | None


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
    recent: RecentCounts | None = None
    error: str | None = None


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _worst(judgements: list[Judgement]) -> Judgement:
    for verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE):
        for judgement in judgements:
            if judgement.verdict is verdict:
                return judgement
    return judgements[0]


def _judge_rate(rule: MetricRule, canary: tuple[float, float], stable: tuple[float, float] | None, *,
                min_samples: int, pass_rule: PassRule, alpha: float, fail_only: bool = False) -> Judgement:
    """A proportion's counts against its bound (max of a bad-event rate, min of a success rate) and
    stable's rate plus its tolerance; a rule with neither is compared with stable at tolerance 0."""
    bound = rule.rate_bound
    tolerance = rule.rate_tolerance
    if not rule.compares_with_stable:
        stable = None
    elif tolerance is None:
        tolerance = 0.0

    def events(counts: tuple[float, float] | None) -> tuple[float | None, float | None]:
        """(successes, total) of a success rate, (bad events, total) of a bad-event rate."""
        if counts is None:
            return None, None
        bad, total = counts
        return (total - bad if rule.success_query else bad), total

    return stats.judge_proportion(
        *events(canary), *events(stable), tolerance=tolerance, bound=bound, alpha=alpha,
        min_samples=min_samples, direction="higher_is_better" if rule.success_query else "lower_is_better",
        pass_rule=pass_rule, power=rule.power, effect=rule.min_detectable_effect, fail_only=fail_only)


def _judge_rate_windows(rule: MetricRule, sample: MetricSample, min_samples: int, pass_rule: PassRule,
                        recent_windows: bool) -> Judgement:
    """The step's cumulative window may FAIL or PASS; with recent windows on, each gets half of alpha
    and a recent window that fails fails the metric, so a mid-step degradation is not diluted."""
    assert sample.canary_counts is not None
    share = RECENT_ALPHA_SHARE if recent_windows else 0.0
    judgement = _judge_rate(rule, sample.canary_counts, sample.stable_counts, min_samples=min_samples,
                            pass_rule=pass_rule, alpha=rule.alpha * (1 - share))
    recent = sample.recent
    if not recent_windows or recent is None or recent.canary_counts is None or judgement.verdict is Verdict.FAIL:
        return judgement
    k = recent.index
    latest = _judge_rate(rule, recent.canary_counts, recent.stable_counts, min_samples=min_samples,
                         pass_rule=pass_rule, alpha=rule.alpha * share / (k * (k + 1)), fail_only=True)
    if latest.verdict is not Verdict.FAIL:
        return judgement
    evidence = {**latest.evidence, "window": "recent", "window_seconds": recent.seconds}
    return Judgement(Verdict.FAIL, latest.value, latest.samples,
                     f"in the last {recent.seconds:.0f}s: {latest.reason}", evidence)


def evaluate(rule: MetricRule, sample: MetricSample, default_min_samples: int = 0,
             pass_rule: PassRule = "powered", recent_windows: bool = False) -> Judgement:
    if sample.error:
        return Judgement(Verdict.INCONCLUSIVE, None, None, f"no data: {sample.error}", {})
    min_samples = rule.min_samples if rule.min_samples is not None else default_min_samples
    cmp = rule.compare_to_stable

    if rule.type is MetricType.THRESHOLD:
        if _missing(sample.value):  # however many samples there were: no number is no data
            return Judgement(Verdict.INCONCLUSIVE, None, None, "no data: the query answered nothing", {})
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
        return _judge_rate_windows(rule, sample, min_samples, pass_rule, recent_windows)

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
    if rule.type is MetricType.STOCHASTIC_ORDER:
        tolerance = rule.rate_tolerance
        return stats.judge_stochastic_order(
            list(sample.canary_buckets), list(sample.stable_buckets),
            tolerance=STOCHASTIC_ORDER_TOLERANCE if tolerance is None else tolerance, alpha=rule.alpha,
            min_samples=min_samples, pass_rule=pass_rule, power=rule.power)
    return stats.judge_distribution_shift(
        list(sample.canary_buckets), list(sample.stable_buckets), max_psi=rule.max,
        alpha=rule.alpha, min_count=min_samples)
