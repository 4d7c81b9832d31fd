"""Run one analysis: render each metric's queries for canary (and stable), fetch the numbers.

Only fetching happens here; `modelrollout.evaluate` judges what this returns.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from datetime import datetime

from modelrollout.core import analysis_window, recent_window
from modelrollout.evaluate import Buckets, MetricSample, RecentCounts
from modelrollout.manifests import deployment_name, service_name
from modelrollout.names import rollout_label
from modelrollout.providers import MetricsProvider, ProviderError, Series
from modelrollout.spec import (MetricRule, MetricType, QueryError, RolloutSpec, check_query_values, format_duration,
                               histogram_query, render_query)
from modelrollout.status import RolloutStatus


def query_values(spec: RolloutSpec, namespace: str, name: str, status: RolloutStatus,
                 revision: str, now: datetime) -> dict[str, str]:
    """The values of every {{ placeholder }}, for the revision being measured."""
    return {
        "namespace": namespace,
        "name": rollout_label(name),  # as the pods' label gives it to their series: the name, if it fits
        "revision": revision,
        "workload": deployment_name(name, revision) if revision else "",  # its Deployment, as Istio names it
        "canary.revision": status.canary_revision or "",
        "stable.revision": status.stable_revision or "",
        "canary.service": service_name(name, "canary"),
        "stable.service": service_name(name, "stable"),
        "model.name": spec.model.name,
        "model.version": spec.model.version,
        "interval": format_duration(spec.analysis.interval),
        "window": format_duration(analysis_window(spec, status, now)),
    }


class NotEvidence(ValueError):
    """An answer that is not one finite number where one is expected: its metric is inconclusive and
    counts for the no-data clock, exactly as a missing answer does (docs/analysis.md)."""


def _checked(value: float, *, count: bool) -> float:
    """`value` if it can be evidence: finite, and not negative when it is a `count`."""
    if not math.isfinite(value):
        raise NotEvidence(f"the query answered {value}, not a finite number")
    if count and value < 0:
        raise NotEvidence(f"a negative count ({value:g})")
    return value


def _one_number(series: list[Series], *, count: bool = False) -> float | None:
    """The one number an answer gives (None when it gives none), never a sum of several series."""
    if not series:
        return None
    if len(series) > 1:
        raise NotEvidence(f"{len(series)} series where one is expected: add sum() or by()")
    return _checked(series[0].value, count=count)


async def _scalar(provider: MetricsProvider, query: str, *, count: bool = False) -> float | None:
    return _one_number(await provider.run_query(query), count=count)


async def _nothing() -> None:
    return None


async def _buckets(provider: MetricsProvider, query: str) -> Buckets:
    """One finite, non-negative cumulative count per bound, never decreasing as the bound grows."""
    points: dict[float, float] = {}
    for s in await provider.run_query(query):
        bound = s.labels.get("le")
        if bound is None:
            continue
        le = float(bound)
        if le in points:
            raise NotEvidence(f"2 series for the bucket le={bound} where one is expected: add sum by (le)")
        points[le] = _checked(s.value, count=True)
    ordered = tuple(sorted(points.items()))
    for (low, below), (high, above) in zip(ordered, ordered[1:]):
        if above < below:
            raise NotEvidence(f"impossible histogram: le={high:g} counts {above:g}, fewer than le={low:g} ({below:g})")
    return ordered


async def _counts(rule: MetricRule, provider: MetricsProvider, values: dict[str, str]) -> tuple[float, float] | None:
    """A proportion's (bad events, total) for one revision, None when Prometheus has no total."""
    total, events = await asyncio.gather(_scalar(provider, render_query(rule.total_query or "", values), count=True),
                                         _scalar(provider, render_query(rule.success_query or rule.query or "", values),
                                                 count=True))
    if rule.success_query:
        bad = None if events is None or total is None else total - events
    else:
        bad = 0.0 if events is None and total is not None else events  # no error series yet: zero errors
    if total is None or bad is None:
        return None
    if not 0 <= bad <= total:
        counted = "successes" if rule.success_query else "bad events"
        raise NotEvidence(f"impossible counts: {events:g} {counted} of {total:g}")
    return bad, total


async def _window_counts(rule: MetricRule, provider: MetricsProvider, canary: dict[str, str],
                         stable: dict[str, str] | None) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """Canary's and (when given) stable's counts over the same window, asked at once."""
    if stable is None:
        return await _counts(rule, provider, canary), None
    both = await asyncio.gather(_counts(rule, provider, canary), _counts(rule, provider, stable))
    return both[0], both[1]


async def _measure_one(rule: MetricRule, spec: RolloutSpec, provider: MetricsProvider,
                       canary: dict[str, str], stable: dict[str, str],
                       recent: tuple[float, int] | None) -> MetricSample:
    samples_query = rule.samples_query or spec.analysis.samples.query
    template = rule.query or rule.total_query or rule.histogram or ""
    try:
        shown = render_query(template, canary)
    except QueryError:
        shown = template
    try:
        check_query_values(canary)
        check_query_values(stable)

        def ask_samples() -> Awaitable[float | None]:
            return _scalar(provider, render_query(samples_query, canary), count=True) if samples_query else _nothing()

        # Every query of a metric is asked at once: one after another, an analysis took their sum.
        if rule.type is MetricType.THRESHOLD:
            samples, value, stable_value = await asyncio.gather(
                ask_samples(), _scalar(provider, render_query(rule.query or "", canary)),
                _scalar(provider, render_query(rule.query or "", stable)) if rule.compare_to_stable else _nothing())
            return MetricSample(rule.name, shown, value=value, samples=samples, stable_value=stable_value)
        if rule.type is MetricType.PROPORTION:
            compare = rule.compares_with_stable  # a bound alone needs no stable counts

            def over(seconds: float | None) -> Awaitable[tuple[tuple[float, float] | None, ...]]:
                window = {} if seconds is None else {"window": format_duration(seconds)}
                return _window_counts(rule, provider, {**canary, **window}, {**stable, **window} if compare else None)

            # The step's window, and its latest blocks, which may only FAIL.
            step, latest = await asyncio.gather(over(None), over(recent[0]) if recent else _nothing())
            canary_counts, stable_counts = step
            return MetricSample(rule.name, shown, samples=canary_counts[1] if canary_counts else await ask_samples(),
                                canary_counts=canary_counts, stable_counts=stable_counts,
                                recent=RecentCounts(recent[0], recent[1], *latest) if recent and latest else None)
        buckets = histogram_query(rule.histogram or "")
        samples, canary_buckets, stable_buckets = await asyncio.gather(
            ask_samples(), _buckets(provider, render_query(buckets, canary)),
            _buckets(provider, render_query(buckets, stable)))
        return MetricSample(rule.name, shown, samples=samples, canary_buckets=canary_buckets,
                            stable_buckets=stable_buckets)
    except (ProviderError, QueryError, NotEvidence) as exc:  # QueryError: a value that would change the query's shape
        return MetricSample(rule.name, shown, error=str(exc))


async def measure(spec: RolloutSpec, namespace: str, name: str, status: RolloutStatus,
                  provider: MetricsProvider, now: datetime) -> tuple[MetricSample, ...]:
    canary = query_values(spec, namespace, name, status, status.canary_revision or "", now)
    stable = query_values(spec, namespace, name, status, status.stable_revision or "", now)
    recent = recent_window(spec, status, now)
    results = await asyncio.gather(*(_measure_one(rule, spec, provider, canary, stable, recent)
                                     for rule in spec.analysis.metrics))
    return tuple(results)
