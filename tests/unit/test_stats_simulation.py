"""Seeded simulations of the operator looking at a canary every interval.

Traffic arrives in intervals (50 canary and 950 stable requests each, i.e. a 5 %
canary), and after every interval judge_proportion sees the cumulative counts,
exactly as the operator would.  We check the two promises of the design:

* a healthy canary is (almost) never failed, however often we look;
* a bad canary is failed close to the statistical floor of PRODUCT.md.

And we show why the design needs an anytime-valid test: a textbook z-test at a
fixed alpha, checked every interval ("peeking"), fails healthy canaries far more
often than its alpha says.

Errors are drawn as exact Bernoulli trials (geometric gaps between errors).
Measured numbers are printed (``pytest -s``) and recorded in docs/analysis.md.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from statistics import NormalDist

import pytest

from modelrollout.stats import Verdict, _null_variance, judge_proportion, required_samples

RUNS = 400
INTERVALS = 40
CANARY_PER_INTERVAL = 50
STABLE_PER_INTERVAL = 950
TOLERANCE = 0.0015
ALPHA = 0.01
MIN_SAMPLES = 100


def bernoulli_count(rng: random.Random, p: float, n: int) -> int:
    """Number of successes in n Bernoulli(p) trials, exactly, via geometric gaps."""
    if p <= 0:
        return 0
    log_q = math.log1p(-p)
    k, pos = 0, -1
    while True:
        pos += 1 + int(math.log(1.0 - rng.random()) / log_q)
        if pos >= n:
            return k
        k += 1


@dataclass
class Run:
    failed_at: int | None = None  # canary requests seen when the first FAIL came
    passed_at: int | None = None  # canary requests seen when the first PASS came
    naive_failed_at: int | None = None


def simulate(seed: int, p_canary: float, p_stable: float, *, tolerance: float = TOLERANCE,
             alpha: float = ALPHA, intervals: int = INTERVALS, naive: bool = False,
             runs: int = RUNS) -> list[Run]:
    rng = random.Random(seed)
    z_crit = NormalDist().inv_cdf(1 - alpha)
    out = []
    for _ in range(runs):
        run = Run()
        xc = xs = nc = ns = 0
        for _ in range(intervals):
            xc += bernoulli_count(rng, p_canary, CANARY_PER_INTERVAL)
            xs += bernoulli_count(rng, p_stable, STABLE_PER_INTERVAL)
            nc += CANARY_PER_INTERVAL
            ns += STABLE_PER_INTERVAL
            if run.failed_at is None and run.passed_at is None:
                j = judge_proportion(xc, nc, xs, ns, tolerance=tolerance, alpha=alpha,
                                     min_samples=MIN_SAMPLES)
                if j.verdict is Verdict.FAIL:
                    run.failed_at = nc
                elif j.verdict is Verdict.PASS:
                    run.passed_at = nc
            if naive and run.naive_failed_at is None and nc >= MIN_SAMPLES:
                # The same statistic (difference over its null standard error), but
                # compared with a fixed-sample critical value at every look.
                v = _null_variance(xc, nc, xs, ns, None, tolerance)
                if (xc / nc - xs / ns - tolerance) / math.sqrt(v) > z_crit:
                    run.naive_failed_at = nc
            if run.failed_at is not None and (not naive or run.naive_failed_at is not None):
                break
        out.append(run)
    return out


def rate(runs: list[Run], attr: str) -> float:
    return sum(getattr(r, attr) is not None for r in runs) / len(runs)


@pytest.fixture(scope="module")
def healthy() -> list[Run]:
    return simulate(seed=1, p_canary=0.001, p_stable=0.001, naive=True)


@pytest.fixture(scope="module")
def bad() -> list[Run]:
    return simulate(seed=2, p_canary=0.01, p_stable=0.001)


def test_healthy_canary_is_almost_never_failed(healthy: list[Run]) -> None:
    false_fail = rate(healthy, "failed_at")
    print(f"\nhealthy 0.1% vs 0.1%: mSPRT false-failure rate {false_fail:.2%} over {RUNS} runs "
          f"x {INTERVALS} looks; PASS reached in {rate(healthy, 'passed_at'):.1%}")
    assert false_fail < 0.01


def test_bad_canary_is_failed_near_the_statistical_floor(bad: list[Run]) -> None:
    floor = required_samples(0.001, 0.01)
    detected = rate(bad, "failed_at")
    # Undetected runs count as infinitely slow, so the median is honest.
    median = statistics.median(r.failed_at if r.failed_at is not None else math.inf for r in bad)
    print(f"\nbad 1% vs 0.1%: detected {detected:.1%} within {INTERVALS * CANARY_PER_INTERVAL} "
          f"canary requests; median requests-to-detect {median:.0f} vs floor {floor} "
          f"({median / floor:.2f}x)")
    assert 250 <= floor <= 400
    assert detected >= 0.95
    assert median <= 2 * floor


def test_no_bad_canary_is_ever_passed(bad: list[Run]) -> None:
    assert rate(bad, "passed_at") == 0


def test_peeking_inflates_a_naive_test_but_not_the_msprt(healthy: list[Run]) -> None:
    # The rare-event scenario above: the naive test already fails more often.
    naive_rare = rate(healthy, "naive_failed_at")
    msprt_rare = rate(healthy, "failed_at")
    # The classic A/A case: 5 % vs 5 %, no tolerance, alpha 0.05, looked at 40 times.
    aa = simulate(seed=3, p_canary=0.05, p_stable=0.05, tolerance=0.0, alpha=0.05, naive=True)
    naive_aa = rate(aa, "naive_failed_at")
    msprt_aa = rate(aa, "failed_at")
    print(f"\npeeking, 0.1% vs 0.1% (alpha {ALPHA}): naive z-test {naive_rare:.2%}, mSPRT {msprt_rare:.2%}"
          f"\npeeking, 5% vs 5% (alpha 0.05, tolerance 0): naive z-test {naive_aa:.1%}, "
          f"mSPRT {msprt_aa:.1%}")
    assert naive_rare >= msprt_rare
    assert msprt_aa <= 0.05  # the promise: anytime-valid at alpha
    assert naive_aa >= 0.15  # several times its nominal 5 %
    assert naive_aa >= 4 * max(msprt_aa, 0.01)
