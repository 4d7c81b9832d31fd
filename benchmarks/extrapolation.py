"""How much Prometheus' `increase()` extrapolation inflates false failures of the count tests.

The judges take `increase(...[window])` as observed trials, but Prometheus scales the samples
inside a window out to its edges (by up to about one scrape interval at each end), so a window of
a few scrapes overstates the evidence. This seeded simulation runs the real-cadence spec's
`error-rate` rule (`simulate.ours_default_spec`: the `http` preset's bound and stable comparison,
both windows, alpha shared) through one long step, with a canary at a given share of its limit:
traffic every half second, scrapes every `scrape` seconds at a random phase, a look every `look`
seconds, and each window's counts as `increase()` reports them (Prometheus' `extrapolatedRate`)
or as observed. docs/analysis.md ("A known gap") quotes its output.

    python -m benchmarks.extrapolation --look 5 --recent 60 --runs 1600
"""

from __future__ import annotations

import argparse
import random

from benchmarks.simulate import binomial, error_rule, limit_of, ours_default_spec
from modelrollout.evaluate import MetricSample, RecentCounts, evaluate
from modelrollout.stats import Verdict

Samples = list[tuple[float, float]]
SERIES = ("canary_bad", "canary_total", "stable_bad", "stable_total")
TICK = 0.5  # seconds of traffic between two draws


def increase(samples: Samples, start: float, end: float, extrapolate: bool) -> float | None:
    """A counter's increase over [start, end] from its samples, as Prometheus' extrapolatedRate
    computes it (no counter resets here), or the observed difference of its first and last sample."""
    inside = [(t, v) for t, v in samples if start <= t <= end]
    if len(inside) < 2:
        return None
    (first_t, first_v), (last_t, last_v) = inside[0], inside[-1]
    delta, sampled = last_v - first_v, last_t - first_t
    if not extrapolate:
        return delta
    average = sampled / (len(inside) - 1)
    to_start = first_t - start if first_t - start < 1.1 * average else average / 2
    if delta > 0 and first_v >= 0:
        to_start = min(to_start, sampled * first_v / delta)  # a counter is not extrapolated below zero
    to_end = end - last_t if end - last_t < 1.1 * average else average / 2
    return delta * (sampled + to_start + to_end) / sampled


def scrape(rng: random.Random, canary_rate: float, stable_rate: float, canary_rps: float, stable_rps: float,
           scrape_every: float, until: float) -> dict[str, Samples]:
    """The four counters as Prometheus stores them: the canary serves from 0 (its counters exist,
    at 0, before), stable from two minutes before."""
    counts = dict.fromkeys(SERIES, 0.0)
    series: dict[str, Samples] = {name: [] for name in SERIES}
    t = -120.0
    next_scrape = t + rng.random() * scrape_every
    while t < until + scrape_every:
        if t >= 0:
            n = int(canary_rps * TICK)
            counts["canary_total"] += n
            counts["canary_bad"] += binomial(rng, canary_rate, n)
        n = int(stable_rps * TICK)
        counts["stable_total"] += n
        counts["stable_bad"] += binomial(rng, stable_rate, n)
        t += TICK
        while next_scrape <= t:
            for name in SERIES:
                series[name].append((next_scrape, counts[name]))
            next_scrape += scrape_every
    return series


def falsely_failed(seed: int, *, share: float, look: float, recent: float, scrape_every: float, step: float,
                   extrapolate: bool) -> bool:
    """Whether one release of a canary at `share` of its limit is failed within one step."""
    spec = ours_default_spec()
    rule, analysis = error_rule(spec), spec.analysis
    stable_rate = 0.001
    limit = limit_of(rule, stable_rate)
    rng = random.Random(seed)
    series = scrape(rng, share * limit, stable_rate, 10.0, 90.0, scrape_every, step)

    def counts(start: float, now: float) -> list[float] | None:
        values = [increase(series[name], start, now, extrapolate) for name in SERIES]
        return None if any(v is None for v in values) else [float(v) for v in values if v is not None]

    now = rng.random() * look
    while now <= step:
        now += look
        whole = counts(now - max(look, now), now)  # the step so far, at least one interval (core.analysis_window)
        if whole is None:
            continue
        recent_counts = RecentCounts(0.0, 0, None, None)
        blocks = int(now // recent)
        if blocks >= 2:
            seconds = now - (blocks - 1) * recent
            part = counts(now - seconds, now)
            recent_counts = RecentCounts(seconds, blocks - 1, (part[0], part[1]) if part else None,
                                         (part[2], part[3]) if part else None)
        sample = MetricSample(rule.name, "increase", samples=whole[1], canary_counts=(whole[0], whole[1]),
                              stable_counts=(whole[2], whole[3]), recent=recent_counts)
        if evaluate(rule, sample, analysis.samples.min, analysis.pass_rule, True).verdict is Verdict.FAIL:
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1600)
    parser.add_argument("--share", type=float, default=1.0, help="the canary's error rate as a share of its limit")
    parser.add_argument("--look", type=float, default=15.0, help="seconds between analyses")
    parser.add_argument("--recent", type=float, default=0.0, help="recent block in seconds (default 5 looks)")
    parser.add_argument("--scrape", type=float, default=15.0, help="Prometheus' scrape interval in seconds")
    parser.add_argument("--step", type=float, default=600.0, help="seconds of the step")
    args = parser.parse_args()
    recent = args.recent or 5 * args.look
    for extrapolate in (True, False):
        failed = sum(falsely_failed(seed, share=args.share, look=args.look, recent=recent, scrape_every=args.scrape,
                                    step=args.step, extrapolate=extrapolate) for seed in range(args.runs))
        print(f"canary at {args.share:g} of its limit, a look every {args.look:g} s, recent blocks of {recent:g} s, "
              f"{'extrapolated' if extrapolate else 'observed'} counts: falsely failed {failed} of {args.runs} "
              f"({failed / args.runs:.2%})", flush=True)


if __name__ == "__main__":
    main()
