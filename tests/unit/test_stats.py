"""Table tests of the pure statistical judges in modelrollout.stats."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from modelrollout.stats import (
    Judgement,
    Verdict,
    histogram_quantile,
    judge_distribution_shift,
    judge_proportion,
    judge_quantile,
    judge_threshold,
    judge_vs_stable,
    required_samples,
)
from modelrollout.stats import _log_lik, _restricted_mle

P, F, INC = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE
INF = math.inf
NAN = math.nan


def test_verdict_values_and_frozen_judgement() -> None:
    assert [v.value for v in Verdict] == ["Pass", "Fail", "Inconclusive"]
    j = judge_threshold(0.1, 10, max=1)
    assert isinstance(j, Judgement)
    with pytest.raises(dataclasses.FrozenInstanceError):
        j.verdict = F  # type: ignore[misc]


# --------------------------------------------------------------------------- judge_threshold


@pytest.mark.parametrize(
    ("value", "samples", "kw", "verdict", "in_reason"),
    [
        (None, 100, {"max": 0.01}, INC, "no data"),
        (NAN, 100, {"max": 0.01}, INC, "no data"),
        (0.005, 100, {"max": 0.01}, P, "0.005 <= max 0.01"),
        (0.01, 100, {"max": 0.01}, P, "<= max"),  # boundary is inclusive
        (0.0100001, 100, {"max": 0.01}, F, "> max 0.01"),
        (0.052, 2310, {"max": 0.01}, F, "0.052 > max 0.01 over 2,310 samples"),
        (0.85, 500, {"min": 0.85}, P, ">= min 0.85"),
        (0.8499, 500, {"min": 0.85}, F, "< min 0.85"),
        (0.9, 500, {"min": 0.85, "max": 0.95}, P, ">= min 0.85 and <= max 0.95"),
        (0.5, 10, {"max": 0.01, "min_samples": 100}, INC, "only 10 samples, need 100"),
        (0.5, 100, {"max": 0.01, "min_samples": 100}, F, "> max"),
        (0.001, None, {"max": 0.01, "min_samples": 100}, P, "<= max"),  # unknown sample count
        (0.001, -5, {"max": 0.01}, INC, "counter reset"),
        (INF, 100, {"max": 0.3}, F, "+Inf > max"),
    ],
)
def test_judge_threshold(value, samples, kw, verdict, in_reason) -> None:
    j = judge_threshold(value, samples, **kw)
    assert j.verdict is verdict, j.reason
    assert in_reason in j.reason


def test_judge_threshold_needs_a_bound() -> None:
    with pytest.raises(ValueError):
        judge_threshold(1.0, 1)


# --------------------------------------------------------------------------- judge_vs_stable


@pytest.mark.parametrize(
    ("canary", "stable", "kw", "verdict", "in_reason"),
    [
        (None, 0.2, {"max_increase": 0.05}, INC, "no data for canary"),
        (0.2, None, {"max_increase": 0.05}, INC, "no data for stable"),
        (0.2, NAN, {"max_increase": 0.05}, INC, "no data for stable"),
        (0.24, 0.2, {"max_increase": 0.05}, P, "within tolerance"),
        (0.25, 0.2, {"max_increase": 0.05}, P, "within tolerance"),  # inclusive (float-safe values)
        (0.26, 0.2, {"max_increase": 0.05}, F, "increase beyond"),
        # relative: +20 % allowed
        (0.24, 0.2, {"max_increase": 0.25, "relative": True}, P, "+20.0%"),
        (0.26, 0.2, {"max_increase": 0.25, "relative": True}, F, "+30.0%"),
        # same numbers, absolute 0.25 tolerance: passes
        (0.26, 0.2, {"max_increase": 0.25}, P, "within"),
        # decreases (quality-like metrics)
        (0.80, 0.90, {"max_decrease": 0.05}, F, "decrease beyond"),
        (0.87, 0.90, {"max_decrease": 0.05}, P, "within"),
        (0.80, 0.90, {"max_decrease": 0.1, "relative": True}, F, "-11.1%"),
        # relative change against a stable value of 0 is undefined
        (0.01, 0.0, {"max_increase": 0.5, "relative": True}, INC, "relative change undefined"),
        (0.0, 0.0, {"max_increase": 0.5, "relative": True}, P, "within"),
        # sample size
        (0.9, 0.1, {"max_increase": 0.05, "min_samples": 100, "samples": 20}, INC, "only 20 samples"),
    ],
)
def test_judge_vs_stable(canary, stable, kw, verdict, in_reason) -> None:
    kw = dict(kw)
    samples = kw.pop("samples", 1000)
    j = judge_vs_stable(canary, stable, samples, **kw)
    assert j.verdict is verdict, j.reason
    assert in_reason in j.reason
    if verdict is not INC or "samples" in in_reason:
        assert j.evidence["canary"] == canary


# --------------------------------------------------------------------------- judge_proportion


@pytest.mark.parametrize(
    ("args", "kw", "verdict", "in_reason"),
    [
        # missing / broken data
        ((None, 1000, 1, 1000), {}, INC, "no data for canary"),
        ((NAN, 1000, 1, 1000), {}, INC, "no data for canary"),
        ((1, 1000, None, None), {}, INC, "no data for stable"),
        ((1, 1000, NAN, 1000), {}, INC, "no data for stable"),
        ((0, 0, 1, 1000), {}, INC, "no canary traffic"),
        ((1, 1000, 0, 0), {}, INC, "no stable traffic"),
        ((-3, 1000, 1, 1000), {}, INC, "counter reset"),
        ((3, -1000, 1, 1000), {}, INC, "counter reset"),
        ((3, 1000, 1, -20), {}, INC, "counter reset"),
        ((30, 20, 1, 1000), {}, INC, "inconsistent counts"),
        # tiny samples: even an awful canary is not judged below min_samples
        ((5, 10, 0, 1000), {"min_samples": 100}, INC, "only 10 canary requests, need 100"),
        ((0, 1000, 0, 50), {"min_samples": 100}, INC, "only 50 stable requests"),
        # clearly bad: 5.2 % vs 0.1 %
        ((120, 2310, 2, 2000), {"tolerance": 0.005}, F, "worse than stable beyond tolerance 0.005 (p<0.0001)"),
        # zero stable errors: still decides
        ((60, 2000, 0, 20000), {"tolerance": 0.005}, F, "vs stable 0 over 2,000"),
        ((0, 20000, 0, 20000), {"tolerance": 0.005}, P, "proven within"),
        # healthy and plenty of traffic: PASS
        ((20, 20000, 19, 19000), {"tolerance": 0.002}, P, "proven within"),
        # healthy but little traffic: INCONCLUSIVE, with an estimate
        ((1, 500, 10, 9500), {"tolerance": 0.002}, INC, "need more samples (~"),
        # a fixed bound, no stable: significantly above / within / undecided
        ((40, 2000, None, None), {"tolerance": None, "bound": 0.01}, F, "error rate 0.02 over 2,000 requests: above max 0.01"),
        ((0, 1000, None, None), {"tolerance": None, "bound": 0.01, "alpha": 0.01}, P, "proven within"),
        ((12, 1000, None, None), {"tolerance": None, "bound": 0.01}, INC, "need more samples"),
        # the case: 2 errors in 40 requests is not "above 5 %" (old code: 0.05 > 0.05? no; 3 in 40 was)
        ((3, 40, None, None), {"tolerance": None, "bound": 0.05, "min_samples": 20}, INC, "need more samples"),
        # a bound and a comparison: the bound alone when stable has no traffic yet
        ((0, 1000, 0, 0), {"tolerance": 0.002, "bound": 0.01, "alpha": 0.01}, P, "over 1,000 requests: proven within"),
        ((30, 1000, 1, 1000), {"tolerance": 0.05, "bound": 0.01}, F, "above max 0.01"),
        # quality, higher is better (first count = correct predictions)
        ((850, 1000, 930, 1000), {"tolerance": 0.02, "direction": "higher_is_better"}, F, "good rate 0.85 vs stable 0.93"),
        ((9300, 10000, 9320, 10000), {"tolerance": 0.02, "direction": "higher_is_better"}, P, "proven within"),
        ((930, 1000, 900, 1000), {"tolerance": 0.02, "direction": "higher_is_better"}, INC, "need more samples (~1"),
        ((1860, 2000, 1800, 2000), {"tolerance": 0.02, "direction": "higher_is_better"}, P, "proven within"),
        ((915, 1000, 930, 1000), {"tolerance": 0.02, "direction": "higher_is_better"}, INC, "need more samples"),
        ((8800, 10000, 9300, 10000), {"tolerance": 0.02, "direction": "higher_is_better"}, F, "worse than stable"),
        ((700, 1000, None, None), {"tolerance": None, "bound": 0.85, "direction": "higher_is_better"}, F,
         "good rate 0.7 over 1,000 requests: below min 0.85"),
        # powered: not failed after the requests that catch tolerance beyond the limit with 80 % power
        ((20, 600, None, None), {"tolerance": None, "bound": 0.05, "pass_rule": "powered", "effect": 0.05}, P,
         "enough to catch 0.1 with 80% power"),
        ((20, 600, None, None), {"tolerance": None, "bound": 0.05, "pass_rule": "powered"}, INC,
         "need more samples"),  # a bound with no effect to catch must be proven
        ((2, 200, None, None), {"tolerance": None, "bound": 0.05, "pass_rule": "powered", "alpha": 0.01,
                                "min_samples": 20, "effect": 0.05}, INC, "need more samples"),
        # a window that may only fail: never PASS
        ((0, 20000, 0, 20000), {"tolerance": 0.005, "fail_only": True}, INC, "not failing"),
        ((120, 2310, 2, 2000), {"tolerance": 0.005, "fail_only": True}, F, "worse than stable"),
        # fractional counts from Prometheus increase() are fine
        ((119.7, 2310.4, 2.1, 2000.2), {"tolerance": 0.005}, F, "worse"),
    ],
)
def test_judge_proportion(args, kw, verdict, in_reason) -> None:
    kw = {"tolerance": 0.002, **kw}
    j = judge_proportion(*args, **kw)
    assert j.verdict is verdict, j.reason
    assert in_reason in j.reason, j.reason


def test_judge_proportion_evidence_and_consistency() -> None:
    j = judge_proportion(120, 2310, 2, 2000, tolerance=0.005, alpha=0.05)
    assert j.verdict is F
    ev = j.evidence
    for key in ("p_value", "canary_rate", "stable_rate", "canary_total", "stable_total"):
        assert key in ev
    assert ev["p_value"] < 0.05
    assert ev["canary_total"] == 2310 and ev["stable_total"] == 2000
    assert ev["canary_rate"] == pytest.approx(120 / 2310)
    assert j.value == pytest.approx(120 / 2310) and j.samples == 2310
    assert "2,310" in j.reason

    # PASS <=> the always-valid upper bound of p_c - p_s is below the tolerance (proven rule)
    for counts in [(20, 20000, 19, 19000), (0, 3000, 1, 3000), (3, 3000, 1, 3000), (1, 500, 10, 9500),
                   (5, 3000, 3, 3000), (0, 2600, 0, 2600), (10, 10000, 10, 10000)]:
        j = judge_proportion(*counts, tolerance=0.002, alpha=0.05)
        assert (j.verdict is P) == (j.evidence["upper_bound"] < 0.002), (counts, j)
        assert j.evidence["upper_bound"] >= j.evidence["canary_rate"] - j.evidence["stable_rate"]


@pytest.mark.parametrize(("xc", "nc", "xs", "ns", "delta"), [
    (5, 100, 1, 1000, 0.01), (0, 300, 0, 3000, 0.005), (30, 200, 2, 4000, 0.02), (0, 50, 40, 900, 0.0),
    (150, 160, 10, 200, 0.3), (3, 1000, 9, 1000, -0.004),
])
def test_restricted_mle_maximises_the_likelihood_on_the_boundary(xc, nc, xs, ns, delta) -> None:
    """The closed form behind the comparison's denominator is the maximum, checked by brute force."""
    pc, ps = _restricted_mle(xc, nc, xs, ns, delta)
    assert pc - ps == pytest.approx(delta)

    def loglik(s: float) -> float:
        return _log_lik(xc, nc, s + delta) + _log_lik(xs, ns, s)

    lo, hi = max(0.0, -delta), min(1.0, 1.0 - delta)
    grid = max(loglik(lo + (hi - lo) * i / 20000) for i in range(20001))
    assert loglik(ps) >= grid - 1e-6


def test_judge_proportion_inconclusive_estimate_is_roughly_right() -> None:
    j = judge_proportion(1, 1000, 19, 19000, tolerance=0.002, alpha=0.05)
    assert j.verdict is INC
    need = j.evidence["samples_needed"]
    k = need / 1000 * 1.02
    later = judge_proportion(1 * k, 1000 * k, 19 * k, 19000 * k, tolerance=0.002, alpha=0.05)
    assert later.verdict is P


def test_judge_proportion_more_samples_more_decisive() -> None:
    # Same rates, 10x the traffic: the p-value can only get stronger for a bad canary.
    small = judge_proportion(6, 600, 1, 1000, tolerance=0.002, alpha=0.01)
    big = judge_proportion(60, 6000, 10, 10000, tolerance=0.002, alpha=0.01)
    assert big.evidence["p_value"] < small.evidence["p_value"]
    assert big.verdict is F


@pytest.mark.parametrize(
    "good, labelled, verdict",
    [
        (150, 200, F),  # 25 % wrong against min accuracy 0.85: one Beta prior for both tests needed ~10 more
        (250, 270, P),  # 7.4 % wrong: proven within it (one Beta: ~17 more)
    ],
)
def test_a_bound_on_a_common_rate_is_decided_by_alternatives_on_its_own_side(good, labelled, verdict) -> None:
    """Quality's `min: 0.85` mixes over wrong-prediction rates 1.5-13 times the bound's odds to FAIL
    and 1/1.5-1/13 of them to PASS, not over one Beta centred at 45 % wrong (docs/analysis.md)."""
    j = judge_proportion(good, labelled, bound=0.85, tolerance=None, direction="higher_is_better", alpha=0.01,
                         min_samples=30)
    assert j.verdict is verdict, j.reason


def test_a_canary_nearer_the_bound_than_the_grid_is_still_decided_in_the_end() -> None:
    """1.2 times the bound's odds lies between 1 and the grid's first point (1.5), where the grid alone
    would never fail it: the Beta share catches it, later."""
    j = judge_proportion(12, 1000, bound=0.01, tolerance=None, alpha=0.01, min_samples=30)
    assert j.verdict is INC and "need more samples" in j.reason, j.reason
    need = j.evidence["samples_needed"] * 1.05
    assert judge_proportion(0.012 * need, need, bound=0.01, tolerance=None, alpha=0.01).verdict is F


def test_judge_proportion_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        judge_proportion(1, 10, 1, 10, tolerance=0.1, direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        judge_proportion(1, 10, 1, 10, tolerance=0.1, alpha=0)
    with pytest.raises(ValueError):
        judge_proportion(1, 10, 1, 10, tolerance=-0.1)
    with pytest.raises(ValueError):
        judge_proportion(1, 10, 1, 10)
    with pytest.raises(ValueError):
        judge_proportion(1, 10, bound=0.1, pass_rule="hopeful")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- histograms


LAT = [(0.1, 10), (0.25, 50), (0.5, 90), (1.0, 98), (INF, 100)]


@pytest.mark.parametrize(
    ("q", "buckets", "expected", "in_inf"),
    [
        (0.5, LAT, 0.25, False),  # rank 50 lands exactly on a bound
        (0.95, LAT, 0.5 + 0.5 * (95 - 90) / 8, False),
        (0.05, LAT, 0.05, False),  # lowest bucket interpolates from 0
        (0.99, LAT, 1.0, True),  # Prometheus reports the highest finite bound
        (1.0, LAT, 1.0, True),
        (0.5, list(reversed(LAT)), 0.25, False),  # order does not matter
        (0.5, [(0.1, 0), (INF, 0)], NAN, False),  # no observations
        (0.5, [(0.1, 5), (0.2, 10)], NAN, False),  # no +Inf bucket
        (0.5, [(-1.0, 10), (0.0, 10), (INF, 10)], -1.0, False),  # lowest bound <= 0
        (0.5, [(0.1, 10), (0.2, 8), (INF, 20)], 0.1, False),  # non-monotonic: raised to 10, like Prometheus
        (0.6, [(0.1, 10), (0.2, 8), (INF, 20)], 0.2, True),
        (-0.1, LAT, -INF, False),
        (1.1, LAT, INF, False),
    ],
)
def test_histogram_quantile_matches_prometheus(q, buckets, expected, in_inf) -> None:
    value, flag = histogram_quantile(q, buckets)
    if math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == pytest.approx(expected)
    assert flag is in_inf


STABLE_LAT = [(0.1, 30), (0.25, 80), (0.5, 95), (1.0, 100), (INF, 100)]
ALL_SLOW = [(0.1, 0), (0.25, 0), (0.5, 0), (1.0, 0), (INF, 100)]


@pytest.mark.parametrize(
    ("canary", "stable", "kw", "verdict", "in_reason"),
    [
        (None, None, {"q": 0.95, "max": 0.3}, INC, "no data for canary"),
        ([(0.1, 0), (INF, 0)], None, {"q": 0.95, "max": 0.3}, INC, "only 0 canary observations"),
        (LAT[:-1], None, {"q": 0.95, "max": 0.3}, INC, "no +Inf bucket"),
        ([(0.1, -1), (INF, 100)], None, {"q": 0.95, "max": 0.3}, INC, "counter reset"),
        ([(0.1, NAN), (INF, 100)], None, {"q": 0.95, "max": 0.3}, INC, "NaN"),
        (LAT, None, {"q": 0.95, "max": 1.0}, P, "p95 0.812 <= max 1"),
        (LAT, None, {"q": 0.95, "max": 0.8}, F, "p95 0.812 > max 0.8"),
        (LAT, None, {"q": 0.5, "max": 0.25}, P, "<= max 0.25"),  # exact boundary passes
        # +Inf bucket: say so, and FAIL even if max is above the top finite bound
        (LAT, None, {"q": 0.99, "max": 0.3}, F, "above the highest finite bucket bound 1"),
        (LAT, None, {"q": 0.99, "max": 5.0}, F, "Prometheus would report 1"),
        # tiny samples
        ([(0.1, 1), (INF, 10)], None, {"q": 0.95, "max": 0.3, "min_samples": 50}, INC, "only 10 canary"),
        # vs stable: absolute and relative
        (LAT, STABLE_LAT, {"q": 0.95, "max_increase": 0.5}, P, "within +0.5"),
        (LAT, STABLE_LAT, {"q": 0.95, "max_increase": 0.2}, F, "increase beyond +0.2"),
        (LAT, STABLE_LAT, {"q": 0.95, "max_increase": 0.5, "relative": True}, F, "+62.5%"),
        (LAT, STABLE_LAT, {"q": 0.95, "max_increase": 0.7, "relative": True}, P, "+62.5%"),
        (LAT, None, {"q": 0.95, "max_increase": 0.2}, INC, "no data for stable"),
        (LAT, [(0.1, 1), (INF, 5)], {"q": 0.95, "max_increase": 0.2}, INC, "only 5 stable"),
        # both max and stable: any failure fails
        (LAT, STABLE_LAT, {"q": 0.95, "max": 0.5, "max_increase": 0.5}, F, "> max 0.5"),
        # missing stable but max breached: FAIL beats INCONCLUSIVE
        (LAT, None, {"q": 0.95, "max": 0.5, "max_increase": 0.5}, F, "> max 0.5"),
        # +Inf on both sides: cannot compare
        (ALL_SLOW, ALL_SLOW, {"q": 0.95, "max_increase": 0.1}, INC, "both above the highest finite"),
        (ALL_SLOW, STABLE_LAT, {"q": 0.95, "max_increase": 0.1}, F, "above every finite bucket"),
    ],
)
def test_judge_quantile(canary, stable, kw, verdict, in_reason) -> None:
    j = judge_quantile(canary, stable, **kw)
    assert j.verdict is verdict, j.reason
    assert in_reason in j.reason, j.reason


def test_judge_quantile_evidence_marks_inf_bucket() -> None:
    j = judge_quantile(LAT, q=0.99, max=0.3)
    assert j.evidence["canary_in_inf_bucket"] == "true"
    assert j.value == 1.0 and j.samples == 100


# --------------------------------------------------------------------------- distribution shift


def cumulative(counts: list[float], bounds: list[float] | None = None) -> list[tuple[float, float]]:
    bounds = bounds or [0.1 * (i + 1) for i in range(len(counts) - 1)] + [INF]
    out, total = [], 0.0
    for le, c in zip(bounds, counts):
        total += c
        out.append((le, total))
    return out


SAME = cumulative([100, 200, 300, 300, 100])
SHIFTED = cumulative([300, 300, 200, 150, 50])


SCORE_SHARES = [0.002, 0.008, 0.04, 0.15, 0.3, 0.3, 0.15, 0.04, 0.008, 0.002]  # sparse tails, as model scores
SCORE_BOUNDS = [0.1 * (i + 1) for i in range(9)] + [INF]


def first_shift_failure(rng: random.Random, canary_shares: list[float]) -> int | None:
    """Canary observations at the first FAIL when a step is judged every 50 canary observations
    (stable serving 9x as many) up to 1500, or None: what an analysis interval does to the judge."""
    canary, stable, seen = [0] * 10, [0] * 10, 0
    for n in range(100, 1501, 50):
        for i in rng.choices(range(10), canary_shares, k=n - seen):
            canary[i] += 1
        for i in rng.choices(range(10), SCORE_SHARES, k=(n - seen) * 9):
            stable[i] += 1
        seen = n
        if judge_distribution_shift(cumulative(canary, SCORE_BOUNDS), cumulative(stable, SCORE_BOUNDS),
                                    max_psi=0.1).verdict is F:
            return n
    return None


def test_looking_at_the_drift_judge_every_interval_keeps_false_rollbacks_within_alpha() -> None:
    """400 healthy canaries (same score distribution as stable), each judged 29 times: a chi-square
    test at a fixed alpha failed 12 of them (3 %, three times alpha 0.01); the anytime-valid test
    may fail at most alpha of them however often it is looked at."""
    rng = random.Random(20261129)
    false_rollbacks = sum(first_shift_failure(rng, SCORE_SHARES) is not None for _ in range(400))
    assert false_rollbacks <= 0.01 * 400


def test_a_real_drift_is_still_caught_within_a_few_hundred_canary_observations() -> None:
    drifted = [0.001, 0.004, 0.02, 0.08, 0.2, 0.3, 0.22, 0.12, 0.04, 0.015]  # PSI ~0.29 against stable
    rng = random.Random(7)
    caught = sorted(n for n in (first_shift_failure(rng, drifted) for _ in range(50)) if n is not None)
    assert len(caught) == 50 and caught[25] <= 300


@pytest.mark.parametrize(
    ("canary", "stable", "kw", "verdict", "in_reason"),
    [
        (None, SAME, {"max_psi": 0.1}, INC, "no data for canary"),
        (SAME, None, {"max_psi": 0.1}, INC, "no data for stable"),
        (SAME, SAME, {"max_psi": 0.1}, P, "no shift: PSI 0 <= 0.1"),
        (SAME, SHIFTED, {"max_psi": 0.1}, F, "distribution shifted: PSI"),
        (SAME, SHIFTED, {"max_js": 0.1}, F, "JS"),
        (SAME, SHIFTED, {"max_psi": 5.0}, P, "no shift"),
        # below min_count on either side
        (cumulative([1, 2, 3, 3, 1]), SHIFTED, {"max_psi": 0.1}, INC, "only 10 canary observations"),
        (SHIFTED, cumulative([1, 2, 3, 3, 1]), {"max_psi": 0.1}, INC, "only 10 stable observations"),
        # a large PSI from few counts is not significant: INCONCLUSIVE, not FAIL
        (cumulative([5, 5, 10, 10, 0]), cumulative([10, 10, 5, 5, 0]),
         {"max_psi": 0.1, "min_count": 20}, INC, "not significant"),
        # the same shape with 100x the counts is significant
        (cumulative([500, 500, 1000, 1000, 0]), cumulative([1000, 1000, 500, 500, 0]),
         {"max_psi": 0.1, "min_count": 20}, F, "shifted"),
        # empty buckets on one side: epsilon smoothing, no crash
        (cumulative([0, 0, 500, 500, 0]), cumulative([500, 500, 0, 0, 0]), {"max_psi": 0.1}, F, "shifted"),
        # different bucket layouts
        (SAME, cumulative([100, 200, 300, 300, 100], [0.2, 0.4, 0.6, 0.8, INF]), {"max_psi": 0.1}, INC,
         "different buckets"),
        ([(0.1, -5), (INF, 100)], SAME, {"max_psi": 0.1}, INC, "counter reset"),
    ],
)
def test_judge_distribution_shift(canary, stable, kw, verdict, in_reason) -> None:
    j = judge_distribution_shift(canary, stable, **kw)
    assert j.verdict is verdict, j.reason
    assert in_reason in j.reason, j.reason


def test_distribution_shift_metrics() -> None:
    j = judge_distribution_shift(SAME, SHIFTED, max_psi=0.1)
    ev = j.evidence
    c = [0.1, 0.2, 0.3, 0.3, 0.1]
    s = [0.3, 0.3, 0.2, 0.15, 0.05]
    psi = sum((a - b) * math.log(a / b) for a, b in zip(c, s))
    assert ev["psi"] == pytest.approx(psi, rel=1e-3)
    m = [(a + b) / 2 for a, b in zip(c, s)]
    jsd = 0.5 * sum(a * math.log2(a / x) for a, x in zip(c, m)) + 0.5 * sum(b * math.log2(b / x) for b, x in zip(s, m))
    assert ev["js"] == pytest.approx(math.sqrt(jsd))
    assert 0 <= ev["js"] <= 1
    assert ev["p_value"] < 1e-10 and ev["log_e"] > math.log(1e10)
    assert ev["canary_count"] == 1000 and ev["stable_count"] == 1000
    # disjoint supports: JS distance is exactly 1 (base 2)
    d = judge_distribution_shift(cumulative([0, 0, 500, 500, 0]), cumulative([500, 500, 0, 0, 0]), max_js=0.5)
    assert d.evidence["js"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- required samples


@pytest.mark.parametrize(
    ("p0", "p1", "kw", "low", "high"),
    [
        (0.001, 0.01, {}, 300, 340),  # PRODUCT.md: "about 300"
        (0.01, 0.02, {}, 800, 1000),  # PRODUCT.md: "800-1000"
        (0.001, 0.01, {"method": "score"}, 220, 235),
        (0.01, 0.02, {"method": "score"}, 780, 800),
        (0.01, 0.02, {"alpha": 0.01}, 1400, 1500),
        (0.9, 0.85, {}, 250, 300),  # a drop (accuracy) works the same way
    ],
)
def test_required_samples(p0, p1, kw, low, high) -> None:
    assert low <= required_samples(p0, p1, **kw) <= high


def test_required_samples_monotone_and_validated() -> None:
    assert required_samples(0.01, 0.02, power=0.9) > required_samples(0.01, 0.02)
    assert required_samples(0.01, 0.03) < required_samples(0.01, 0.02)
    with pytest.raises(ValueError):
        required_samples(0.01, 0.01)
    with pytest.raises(ValueError):
        required_samples(0.01, 1.5)


# --------------------------------------------------------------------------- evaluate: rate rules from the spec

from modelrollout.evaluate import MetricSample, evaluate  # noqa: E402
from modelrollout.spec import PlatformPolicy, SpecError, parse_spec  # noqa: E402

_BAD = {"type": "proportion", "query": 'bad{revision="{{ revision }}"}', "totalQuery": 'all{revision="{{ revision }}"}'}
_GOOD = {"type": "proportion", "successQuery": 'ok{revision="{{ revision }}"}', "totalQuery": 'all{revision="{{ revision }}"}'}


def _rule(**metric):
    spec = parse_spec({
        "selector": {"matchLabels": {"app": "m"}},
        "template": {"metadata": {"labels": {"app": "m"}}, "spec": {"containers": [{"name": "s", "image": "m:1"}]}},
        "service": {"port": 8080}, "trafficRouting": {"gatewayAPI": {"httpRoute": "m"}},
        "strategy": {"steps": [{"weight": 10, "hold": "1m"}]},
        "analysis": {"metrics": [{"name": "rate", **metric}]},
    }, PlatformPolicy(prometheus_url="http://prom:9090"))
    return spec.analysis.metrics[0]


@pytest.mark.parametrize(("metric", "canary", "stable", "verdict", "in_reason"), [
    ({**_BAD, "max": 0.01}, (40, 2000), (2, 2000), F, "error rate 0.02 over 2,000 requests: above max 0.01"),
    ({**_BAD, "max": 0.01}, (0, 2000), None, P, "proven within"),  # no stable series: the bound alone
    ({**_BAD, "minDetectableEffect": 0.005}, (60, 2000), (2, 2000), F, "worse than stable beyond tolerance 0.005"),
    ({**_BAD, "compareToStable": {"maxIncrease": 0.005}}, (60, 2000), (2, 2000), F, "beyond tolerance 0.005"),
    ({**_BAD}, (60, 2000), (2, 2000), F, "beyond tolerance 0 "),  # no bound, no tolerance: no worse than stable
    ({**_GOOD, "min": 0.85}, (300, 1000), (80, 1000), F, "good rate 0.7 "),
    ({**_GOOD, "compareToStable": {"maxIncrease": 0.05}}, (250, 1000), (80, 1000), F, "beyond tolerance 0.05"),
    ({**_GOOD, "compareToStable": {"maxDecrease": 0.05}}, (250, 1000), (80, 1000), F, "beyond tolerance 0.05"),
])
def test_evaluate_maps_a_rate_rule_to_its_tests(metric, canary, stable, verdict, in_reason) -> None:
    """Counts arrive as (bad, total) whatever the rule counts; the rule's bound and tolerance apply."""
    sample = MetricSample("rate", "q", samples=canary[1], canary_counts=canary, stable_counts=stable)
    j = evaluate(_rule(**metric), sample, 100)
    assert j.verdict is verdict, j.reason
    assert in_reason in j.reason, j.reason


@pytest.mark.parametrize(("metric", "message"), [
    ({**_BAD, "min": 0.9}, "bound it with max, not min"),
    ({**_GOOD, "max": 0.1}, "bound it with min, not max"),
    ({**_BAD, "compareToStable": {"maxIncrease": 0.2, "relative": True}}, "relative is not supported"),
])
def test_a_rate_rule_that_cannot_mean_anything_is_refused(metric, message) -> None:
    with pytest.raises(SpecError, match=message) as error:
        _rule(**metric)
    assert error.value.field.startswith("spec.analysis.metrics[0]")


# --------------------------------------------------------------------------- judge_stochastic_order

from modelrollout.stats import judge_stochastic_order  # noqa: E402

_LE = (0.05, 0.1, 0.25, 0.5, 1.0)


def _cumulative(*per_bucket: float) -> list[tuple[float, float]]:
    """Per-bucket counts for le = 0.05, 0.1, 0.25, 0.5, 1, +Inf as cumulative buckets."""
    out, total = [], 0.0
    for le, count in zip((*_LE, INF), per_bucket):
        total += count
        out.append((le, total))
    return out


LAT_FAST = _cumulative(6000, 3000, 900, 90, 10, 0)        # stable: 10,000 observations, p90 ~ 0.1 s
LAT_SAME = _cumulative(1200, 600, 180, 18, 2, 0)          # canary: the same shape, 2,000 observations
LAT_TAIL = _cumulative(1100, 550, 150, 100, 60, 40)       # canary: 10 % of requests far slower
LAT_SLOW = _cumulative(0, 200, 1000, 700, 100, 0)         # canary: everything ~5x slower


@pytest.mark.parametrize(("canary", "stable", "kw", "verdict", "in_reason"), [
    (None, LAT_FAST, {}, INC, "no data for canary"),
    (LAT_SAME, None, {}, INC, "no data for stable"),
    (_cumulative(10, 5, 1, 0, 0, 0), LAT_FAST, {}, INC, "only 16 canary observations, need 100"),
    ([(0.1, 5), (INF, 10)], LAT_FAST, {}, INC, "different buckets"),
    (LAT_SLOW, LAT_FAST, {}, F, "canary slower: 90.0% of canary observations above le=0.1 vs 10.0% of stable's"),
    (LAT_TAIL, LAT_FAST, {}, F, "10.0% of canary observations above le=0.25 vs 1.0% of stable's"),  # a p50 would not see it
    (LAT_FAST, LAT_FAST, {"tolerance": 0.05}, P, "not slower beyond tolerance 0.05 at any of 5 bucket bounds"),
    (LAT_SAME, LAT_FAST, {"tolerance": 0.005}, INC, "need more samples"),
    (LAT_FAST, LAT_SLOW, {}, P, "not slower"),  # faster than stable is never a failure
])
def test_judge_stochastic_order(canary, stable, kw, verdict, in_reason) -> None:
    j = judge_stochastic_order(canary, stable, **{"tolerance": 0.02, **kw})
    assert j.verdict is verdict, j.reason
    assert in_reason in j.reason, j.reason


def test_stochastic_order_is_judged_from_a_spec_metric() -> None:
    rule = _rule(type="stochasticOrder", histogram='latency_bucket{revision="{{ revision }}"}')
    sample = MetricSample("rate", "q", canary_buckets=tuple(LAT_TAIL), stable_buckets=tuple(LAT_FAST))
    j = evaluate(rule, sample, 100)
    assert j.verdict is F and j.evidence["tolerance"] == 0.05, j.reason
