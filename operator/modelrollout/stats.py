"""Pure statistical judges: a measured value (or counts, or histograms) in, a verdict out.

Everything here is pure: no I/O, no clock, no kopf, standard library only.  Each
judge returns a :class:`Judgement` whose ``verdict`` is PASS, FAIL or
INCONCLUSIVE, with a short human ``reason`` carrying the numbers and an
``evidence`` mapping that the operator copies into ``status.lastAnalysis``.

The design rules (see docs/analysis.md):

* Missing data is never a pass and never a failure: it is INCONCLUSIVE.
* Few samples are INCONCLUSIVE, never PASS.
* The operator looks at a canary every interval, so tests on counts are
  *anytime-valid* (exact e-processes): looking often does not inflate false failures.

Invalid *arguments* (a judge with no bound, a quantile outside [0, 1]) are a
programming or spec error and raise ``ValueError``; invalid *data* (NaN, counter
resets, empty histograms) never raises and yields INCONCLUSIVE.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

__all__ = [
    "Verdict",
    "Judgement",
    "judge_threshold",
    "judge_vs_stable",
    "judge_proportion",
    "judge_quantile",
    "judge_distribution_shift",
    "judge_stochastic_order",
    "required_samples",
    "histogram_quantile",
]

_NORMAL = NormalDist()


class Verdict(enum.Enum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True)
class Judgement:
    """The outcome of one judge on one observation."""

    verdict: Verdict
    value: float | None
    samples: float | None
    reason: str
    evidence: dict[str, float | str] = field(default_factory=dict)


# --------------------------------------------------------------------------- formatting


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _num(x: float) -> str:
    """A measured value, short: 0.052, 0.0004, 1.23e+03, inf."""
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-4:
        return f"{x:.3g}"
    return f"{x:.4g}" if abs(x) >= 1 else f"{x:.3g}"


def _count(n: float) -> str:
    """A sample count with thousands separators: 2,310 (fractional counts rounded)."""
    if math.isinf(n) or math.isnan(n):
        return str(n)
    return f"{round(n):,}"


def _p(p: float) -> str:
    if p < 1e-4:
        return "<0.0001"
    return f"{p:.2g}" if p < 0.01 else f"{p:.3f}".rstrip("0").rstrip(".")


def _peq(p: float) -> str:
    return "p<0.0001" if p < 1e-4 else f"p={_p(p)}"


def _inconclusive(reason: str, value: float | None, samples: float | None,
                  evidence: dict[str, float | str]) -> Judgement:
    return Judgement(Verdict.INCONCLUSIVE, value, samples, reason, dict(evidence))


def _samples_gate(samples: float | None, min_samples: float) -> str | None:
    """The reason to stay inconclusive because of sample size, or None."""
    if samples is None:
        return None
    if _missing(samples):
        return None
    if samples < 0:
        return f"sample count {_num(samples)} is negative (counter reset?)"
    if samples < min_samples:
        return f"only {_count(samples)} samples, need {_count(min_samples)}"
    return None


# --------------------------------------------------------------------------- 1. fixed thresholds


def judge_threshold(
    value: float | None,
    samples: float | None,
    *,
    min: float | None = None,  # noqa: A002 - mirrors the spec's field names
    max: float | None = None,  # noqa: A002
    min_samples: float = 0,
) -> Judgement:
    """Judge a value against fixed bounds; bounds are inclusive (value == max passes).

    ``samples`` is the number of observations behind the value, or None when
    unknown (then ``min_samples`` cannot be enforced).
    """
    if min is None and max is None:
        raise ValueError("judge_threshold needs min or max")
    ev: dict[str, float | str] = {}
    if min is not None:
        ev["min"] = float(min)
    if max is not None:
        ev["max"] = float(max)
    if samples is not None and not _missing(samples):
        ev["samples"] = float(samples)
    if _missing(value):
        return _inconclusive("no data", None, samples, ev)
    assert value is not None
    ev["value"] = float(value)
    gate = _samples_gate(samples, min_samples)
    if gate:
        return _inconclusive(f"{gate} (value {_num(value)})", value, samples, ev)
    over = f" over {_count(samples)} samples" if samples is not None and not _missing(samples) else ""
    if max is not None and value > max:
        return Judgement(Verdict.FAIL, value, samples, f"{_num(value)} > max {_num(max)}{over}", ev)
    if min is not None and value < min:
        return Judgement(Verdict.FAIL, value, samples, f"{_num(value)} < min {_num(min)}{over}", ev)
    parts = []
    if min is not None:
        parts.append(f">= min {_num(min)}")
    if max is not None:
        parts.append(f"<= max {_num(max)}")
    return Judgement(Verdict.PASS, value, samples, f"{_num(value)} {' and '.join(parts)}{over}", ev)


# --------------------------------------------------------------------------- 2. canary vs stable value


def _change(canary: float, stable: float, relative: bool) -> float | None:
    if not relative:
        return canary - stable
    if stable == 0:
        return 0.0 if canary == 0 else None
    return (canary - stable) / abs(stable)


def judge_vs_stable(
    canary: float | None,
    stable: float | None,
    samples: float | None,
    *,
    max_increase: float | None = None,
    max_decrease: float | None = None,
    relative: bool = False,
    min_samples: float = 0,
) -> Judgement:
    """Judge a canary value against the stable value of the same query and window.

    The change is ``canary - stable`` (absolute) or ``(canary - stable) / |stable|``
    (``relative=True``, so 0.2 means 20 %).  FAIL when the change exceeds
    ``max_increase`` or falls below ``-max_decrease``; tolerances are inclusive.
    A relative change against a stable value of 0 is undefined: INCONCLUSIVE.
    """
    if max_increase is None and max_decrease is None:
        raise ValueError("judge_vs_stable needs max_increase or max_decrease")
    ev: dict[str, float | str] = {"mode": "relative" if relative else "absolute"}
    if max_increase is not None:
        ev["max_increase"] = float(max_increase)
    if max_decrease is not None:
        ev["max_decrease"] = float(max_decrease)
    if samples is not None and not _missing(samples):
        ev["samples"] = float(samples)
    if _missing(canary):
        return _inconclusive("no data for canary", None, samples, ev)
    assert canary is not None
    ev["canary"] = float(canary)
    if _missing(stable):
        return _inconclusive(f"canary {_num(canary)} but no data for stable to compare with",
                             canary, samples, ev)
    assert stable is not None
    ev["stable"] = float(stable)
    gate = _samples_gate(samples, min_samples)
    if gate:
        return _inconclusive(f"{gate} (canary {_num(canary)} vs stable {_num(stable)})",
                             canary, samples, ev)
    change = _change(canary, stable, relative)
    if change is None:
        return _inconclusive(f"canary {_num(canary)} vs stable 0: relative change undefined",
                             canary, samples, ev)
    ev["change"] = change

    def show(c: float) -> str:
        return f"{c:+.1%}" if relative else f"{c:+.3g}"

    head = f"canary {_num(canary)} vs stable {_num(stable)} ({show(change)})"
    over = f" over {_count(samples)} samples" if samples is not None and not _missing(samples) else ""
    if max_increase is not None and change > max_increase:
        return Judgement(Verdict.FAIL, canary, samples,
                         f"{head}{over}: increase beyond {show(max_increase)}", ev)
    if max_decrease is not None and change < -max_decrease:
        return Judgement(Verdict.FAIL, canary, samples,
                         f"{head}{over}: decrease beyond {show(-max_decrease)}", ev)
    return Judgement(Verdict.PASS, canary, samples, f"{head}{over}: within tolerance", ev)


# --------------------------------------------------------------------------- 3. rates from counts (exact e-processes)
#
# Every request is a Bernoulli trial (bad or not).  For a null hypothesis H0 about the bad-rate(s)
# the judge computes an e-process by universal inference (Wasserman, Ramdas, Balakrishnan 2020):
#
#     E = [ likelihood of the counts mixed over alternatives ] / [ max likelihood under H0 ]
#
# For any rates in H0, E is at most the Bayes-mixture likelihood ratio against those rates, which
# is a non-negative martingale over the sequence of requests (whatever the traffic does over time
# and however often it is looked at), so P(E ever >= 1/alpha) <= alpha by Ville's inequality.
# No normal approximation: exact for 0 errors, 2 errors or 0.1 %.  The mixture only decides which
# alternatives are caught fastest, never validity.


def _log_lik(x: float, n: float, p: float) -> float:
    """Binomial log-likelihood without the constant: x log p + (n - x) log(1 - p), 0 log 0 = 0."""
    total = 0.0
    for k, q in ((x, p), (n - x, 1.0 - p)):
        if k > 0:
            if q <= 0:
                return -math.inf
            total += k * math.log(q)
    return total


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _log_marginal(x: float, n: float, prior: tuple[float, float]) -> float:
    """log of the Beta(a, b)-mixture of the binomial likelihood (without the constant)."""
    a, b = prior
    return _log_beta(x + a, n - x + b) - _log_beta(a, b)


def _prior(mean: float, shape: float) -> tuple[float, float]:
    mean = min(0.5, max(0.001, mean))
    return shape, shape * (1.0 - mean) / mean


def _priors(scale: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """Mixing priors for the canary and the stable rate, from the spec's tolerance or bound only
    (never from data; a bound mixes the canary's with its odds grid).  The canary's Beta(1, .) is centred at three times the scale (a bad canary
    is usually several tolerances off); stable's Beta(1/2, .) at the scale.  Chosen by simulation
    (docs/analysis.md); any choice keeps the tests valid."""
    scale = scale if scale > 0 else 0.003
    return _prior(3 * scale, 1.0), _prior(scale, 0.5)


# A bound's tests mix over fixed alternatives on their own side of it, spaced geometrically in odds
# (scale-free: the same for a 1 % error bound as for a 15 % wrong-prediction bound): the FAIL test
# over canaries 1.5 to 13 times the bound's odds, the PASS test over 1/1.5 to 1/13 of them, and
# both over one Beta prior (a seventh, equal share), so that a canary between the grid's points,
# however near the bound, is still decided in the end. An average of likelihood ratios against
# fixed rates is itself one: validity does not depend on the grid. Against the Beta prior alone,
# shared by both tests, it decided in ~20 % fewer samples whichever side of the bound the canary
# was on, by simulation (docs/analysis.md).
_ODDS_RATIOS = (1.5, 2.0, 3.0, 5.0, 8.0, 13.0)


def _log_mean_exp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values) / len(values))


@functools.lru_cache(maxsize=1024)
def _odds_grid(bound: float, above: bool) -> tuple[tuple[float, float], ...]:
    """The fixed alternatives a bound's FAIL (``above``) or PASS test mixes over, as (log p, log(1 - p)):
    a judgement evaluates them some dozens of times (the searches for the requests still needed)."""
    clamped = min(1 - 1e-9, max(1e-9, bound))
    odds = clamped / (1 - clamped)
    rates = (odds * r / (1 + odds * r) for r in (_ODDS_RATIOS if above else [1 / r for r in _ODDS_RATIOS]))
    return tuple((math.log(p), math.log1p(-p)) for p in rates)


def _restricted_mle(xc: float, nc: float, xs: float, ns: float, delta: float) -> tuple[float, float]:
    """MLE of (p_canary, p_stable) subject to p_canary - p_stable = delta.

    Closed form of Miettinen & Nurminen (1985) / Farrington & Manning (1990).
    """
    nt = nc + ns
    t = xc + xs
    l3 = nt
    l2 = (nc + 2 * ns) * delta - nt - t
    l1 = (ns * delta - nt - 2 * xs) * delta + t
    l0 = xs * delta * (1 - delta)
    q = l2**3 / (3 * l3) ** 3 - l1 * l2 / (6 * l3**2) + l0 / (2 * l3)
    inner = l2**2 / (3 * l3) ** 2 - l1 / (3 * l3)
    if inner <= 0:
        ps = -l2 / (3 * l3)
    else:
        p = math.copysign(math.sqrt(inner), q) if q != 0 else math.sqrt(inner)
        arg = max(-1.0, min(1.0, q / p**3))
        a = (math.pi + math.acos(arg)) / 3
        ps = 2 * p * math.cos(a) - l2 / (3 * l3)
    lo = max(0.0, -delta)
    hi = min(1.0, 1.0 - delta)
    ps = min(hi, max(lo, ps))
    return ps + delta, ps


@dataclass(frozen=True)
class _Counts:
    """Bad events and trials of the canary, and of stable when it is compared."""

    xc: float
    nc: float
    xs: float | None = None
    ns: float | None = None

    def scaled(self, n: float, pc: float) -> _Counts:
        """The same stable rate and traffic split with n canary requests at canary rate pc."""
        if self.xs is None or self.ns is None:
            return _Counts(pc * n, n)
        k = n / self.nc
        return _Counts(pc * n, n, self.xs * k, self.ns * k)


@dataclass(frozen=True)
class _RateTest:
    """H0: canary bad-rate <= boundary (the FAIL test) and its mirror (the proven PASS test).

    With stable counts the boundary is ``stable + margin`` (a comparison), else ``margin`` itself
    (a bound).
    """

    margin: float
    compare: bool
    # The mixing priors (canary, stable); by default from the margin (rare events). Shares that are
    # anywhere in [0, 1], like a histogram's, mix over uniform priors.
    priors: tuple[tuple[float, float], tuple[float, float]] | None = None

    @property
    def by_side(self) -> bool:
        """Whether the FAIL and the PASS test mix over different alternatives (a bound's odds grids)."""
        return not self.compare and self.priors is None

    def log_mixture(self, c: _Counts, above: bool) -> float:
        """log of the counts' marginal likelihood under the FAIL (``above``) or PASS test's mixture
        (the numerator): a bound's odds grid, or the mixing priors of a comparison."""
        canary_prior, stable_prior = self.priors or _priors(self.margin)
        total = _log_marginal(c.xc, c.nc, canary_prior)
        if self.by_side:
            good = c.nc - c.xc
            return _log_mean_exp([*(c.xc * log_p + good * log_q for log_p, log_q in _odds_grid(self.margin, above)),
                                  total])
        if self.compare:
            assert c.xs is not None and c.ns is not None
            total += _log_marginal(c.xs, c.ns, stable_prior)
        return total

    def log_null_max(self, c: _Counts, above: bool, margin: float) -> float:
        """log of the counts' maximum likelihood under H0: rate (or difference) <= margin (``above``,
        the FAIL test) or >= margin (the PASS test)."""
        if not self.compare:
            phat = c.xc / c.nc
            return _log_lik(c.xc, c.nc, min(phat, margin) if above else max(phat, margin))
        assert c.xs is not None and c.ns is not None
        pc, ps = c.xc / c.nc, c.xs / c.ns
        if (pc - ps <= margin) != above:
            pc, ps = _restricted_mle(c.xc, c.nc, c.xs, c.ns, margin)
        return _log_lik(c.xc, c.nc, pc) + _log_lik(c.xs, c.ns, ps)

    def log_e(self, c: _Counts, above: bool) -> float:
        """log E against H0 at the test's own margin."""
        return self.log_mixture(c, above) - self.log_null_max(c, above, self.margin)

    def log_e_both(self, c: _Counts) -> tuple[float, float]:
        """log E of the FAIL test and of the PASS test (one numerator for both, unless a bound's)."""
        fail = self.log_mixture(c, True)
        passing = self.log_mixture(c, False) if self.by_side else fail
        return fail - self.log_null_max(c, True, self.margin), passing - self.log_null_max(c, False, self.margin)

    def reference(self, c: _Counts) -> float:
        """The bad-rate the canary is held to now: the bound, or stable's rate plus the margin."""
        if not self.compare:
            return self.margin
        assert c.xs is not None and c.ns is not None
        return c.xs / c.ns + self.margin

    def upper_bound(self, c: _Counts, alpha: float) -> float:
        """Upper end of the (1 - alpha) anytime-valid confidence sequence of the canary's bad-rate
        (or of the difference canary - stable): the least margin the PASS test rejects."""
        crit = math.log(1.0 / alpha)
        mixture = self.log_mixture(c, above=False)
        lo = c.xc / c.nc - (c.xs / c.ns if self.compare and c.xs is not None and c.ns else 0.0)
        hi = 1.0
        if mixture - self.log_null_max(c, False, hi) < crit:
            return hi
        while hi - lo > 1e-5:
            mid = 0.5 * (lo + hi)
            if mixture - self.log_null_max(c, False, mid) >= crit:
                hi = mid
            else:
                lo = mid
        return hi

    def powered_at(self, c: _Counts, alpha: float, power: float, effect: float) -> float | None:
        """Canary requests at which the FAIL test catches, with probability ``power``, a canary
        whose bad-rate is ``effect`` beyond the boundary: the (1 - power) quantile of its rate
        estimate must reach 1/alpha.  None when no number of requests would (boundary at 1)."""
        p1 = self.reference(c) + effect
        if p1 >= 1.0:
            return None
        z = _NORMAL.inv_cdf(power)
        crit = math.log(1.0 / alpha)

        def enough(n: float) -> bool:
            low = p1 - z * math.sqrt(p1 * (1.0 - p1) / n)
            return low > 0 and self.log_e(c.scaled(n, low), above=True) >= crit

        return _least_requests(enough, 1.0, 16.0, 1e10)


def _proven_needed(test: _RateTest, c: _Counts, alpha: float) -> float | None:
    """Canary requests at which, at today's rates and split, either test would decide."""
    crit = math.log(1.0 / alpha)
    pc = c.xc / c.nc

    def decides(n: float) -> bool:
        return max(test.log_e_both(c.scaled(n, pc))) >= crit

    return _least_requests(decides, c.nc, 2 * c.nc, 1000 * c.nc)


def _least_requests(enough: Callable[[float], bool], lo: float, hi: float, limit: float) -> int | None:
    """The least n (within 2 %) at which the monotone `enough(n)` holds, searching up from [lo, hi]
    by doubling, then bisecting; None when even `limit` is not enough."""
    if not enough(limit):
        return None
    while not enough(hi):
        lo, hi = hi, hi * 2
    while hi - lo > max(1.0, 0.02 * hi):
        mid = 0.5 * (lo + hi)
        if enough(mid):
            hi = mid
        else:
            lo = mid
    return math.ceil(hi)


PassRule = Literal["proven", "powered"]


@dataclass(frozen=True)
class _Outcome:
    verdict: Verdict
    text: str
    needed: float | None = None


def _run_test(test: _RateTest, c: _Counts, *, alpha: float, power: float, effect: float | None,
              pass_rule: PassRule, fail_only: bool, what: str, limit: str, show: Callable[[float], float],
              show_upper: Callable[[float], float], ev: dict[str, float | str], key: str) -> _Outcome:
    """One test's verdict; ``show`` turns a bad-rate into the metric's rate, ``show_upper`` the
    confidence sequence's upper end into what the user reads (a rate, or a difference)."""
    crit = math.log(1.0 / alpha)
    log_fail, log_pass = test.log_e_both(c)
    p_fail = min(1.0, math.exp(-log_fail)) if log_fail > -700 else 1.0
    ev[f"{key}p_value"] = p_fail
    if log_fail >= crit:
        return _Outcome(Verdict.FAIL, f"{what} ({_peq(p_fail)})")
    if fail_only:
        return _Outcome(Verdict.INCONCLUSIVE, "")
    p_pass = min(1.0, math.exp(-log_pass)) if log_pass > -700 else 1.0
    upper = test.upper_bound(c, alpha)
    ev[f"{key}p_value_no_worse"] = p_pass
    ev[f"{key}upper_bound"] = upper
    if log_pass >= crit:
        return _Outcome(Verdict.PASS, f"proven within {limit} (always-valid bound {_num(show_upper(upper))}, "
                                      f"{_peq(p_pass)})")
    powered = test.powered_at(c, alpha, power, effect) if pass_rule == "powered" and effect is not None else None
    if powered is not None:
        assert effect is not None
        ev[f"{key}powered_at"] = float(powered)
        if c.nc >= powered:
            return _Outcome(Verdict.PASS, f"not beyond {limit} after {_count(c.nc)} canary requests, enough to catch "
                                          f"{_num(show(test.reference(c) + effect))} with {power:.0%} power")
    proven = _proven_needed(test, c, alpha)
    # Whichever PASS comes first (a proof, or the powered sample size).
    needed = [n for n in (powered, proven) if n is not None]
    return _Outcome(Verdict.INCONCLUSIVE, "", min(needed) if needed else None)


def judge_proportion(
    canary_bad: float | None,
    canary_total: float | None,
    stable_bad: float | None = None,
    stable_total: float | None = None,
    *,
    tolerance: float | None = None,
    bound: float | None = None,
    alpha: float = 0.05,
    min_samples: float = 100,
    direction: Literal["lower_is_better", "higher_is_better"] = "lower_is_better",
    pass_rule: PassRule = "proven",
    power: float = 0.8,
    effect: float | None = None,
    fail_only: bool = False,
) -> Judgement:
    """Anytime-valid, exact judgement of a rate built from counts (errors of requests, correct of
    labelled predictions), against a fixed ``bound`` and/or stable's rate plus ``tolerance``.

    Counts are increases over the same window (fractional counts from ``increase()`` are fine).
    With ``direction="higher_is_better"`` the first count of each arm is the *good* events and
    ``bound`` is a minimum good-rate; the tests run on the complementary bad-rates.

    * FAIL when the canary is significantly beyond the bound, or worse than stable by more than
      the tolerance: an exact e-process reaches 1/alpha (anytime-valid p < alpha).
    * PASS (``pass_rule="proven"``) when it is significantly within every limit.
    * PASS (``pass_rule="powered"``) also once the canary has the requests at which a canary
      ``effect`` beyond the limit would have been failed with probability ``power``, and it was
      not.  ``effect`` defaults to the tolerance; a bound without an ``effect`` must be proven.
    * otherwise INCONCLUSIVE, with the canary requests still needed.

    ``fail_only`` judges a recent window that may only fail (PASS becomes INCONCLUSIVE).
    Without stable counts a comparison cannot be made: only the bound is judged, or INCONCLUSIVE.
    """
    if direction not in ("lower_is_better", "higher_is_better"):
        raise ValueError(f"direction must be lower_is_better or higher_is_better, not {direction!r}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError("alpha and power must be in (0, 1)")
    if tolerance is None and bound is None:
        raise ValueError("judge_proportion needs a tolerance or a bound")
    if tolerance is not None and not (0 <= tolerance < 1):
        raise ValueError("tolerance must be in [0, 1)")
    if bound is not None and not (0 <= bound <= 1):
        raise ValueError("bound must be a rate in [0, 1]")
    if pass_rule not in ("proven", "powered"):
        raise ValueError(f"pass_rule must be proven or powered, not {pass_rule!r}")
    higher = direction == "higher_is_better"
    ev: dict[str, float | str] = {"alpha": float(alpha), "direction": direction, "pass": pass_rule}
    if tolerance is not None:
        ev["tolerance"] = float(tolerance)
    if bound is not None:
        ev["bound"] = float(bound)

    def shown(bad_rate: float) -> float:
        return 1.0 - bad_rate if higher else bad_rate

    values = [canary_bad, canary_total, stable_bad, stable_total]
    if _missing(canary_bad) or _missing(canary_total):
        return _inconclusive("no data for canary", None, None, ev)
    assert canary_bad is not None and canary_total is not None
    ev["canary_total"] = float(canary_total)
    if any(v is not None and not _missing(v) and v < 0 for v in values):
        return _inconclusive("counter reset (negative increase); waiting for the next window",
                             None, canary_total, ev)
    have_stable = not (_missing(stable_bad) or _missing(stable_total)) and tolerance is not None
    if tolerance is not None and not have_stable and bound is None:
        return _inconclusive("no data for stable to compare with", None, canary_total, ev)
    if canary_total == 0:
        return _inconclusive("no canary traffic in the window", None, 0.0, ev)
    if canary_bad > canary_total or (have_stable and stable_bad > stable_total):  # type: ignore[operator]
        return _inconclusive("inconsistent counts (events > total); waiting for the next window",
                             None, canary_total, ev)
    nc = float(canary_total)
    xc = nc - canary_bad if higher else float(canary_bad)
    ev["canary_rate"] = shown(xc / nc)
    counts = _Counts(xc, nc)
    name = "good rate" if higher else "error rate"
    head = f"{name} {_num(shown(xc / nc))}"
    if have_stable:
        assert stable_bad is not None and stable_total is not None
        ns = float(stable_total)
        ev["stable_total"] = ns
        if ns == 0:
            if bound is None:
                return _inconclusive("no stable traffic in the window to compare with",
                                     shown(xc / nc), nc, ev)
            have_stable = False
        else:
            xs = ns - stable_bad if higher else float(stable_bad)
            counts = _Counts(xc, nc, xs, ns)
            ev["stable_rate"] = shown(xs / ns)
            head += f" vs stable {_num(shown(xs / ns))}"
    head += f" over {_count(nc)} {'canary requests' if have_stable else 'requests'}"
    short = [(n, who) for n, who in ((nc, "canary"), (counts.ns, "stable")) if n is not None and n < min_samples]
    if short:
        n, who = short[0]
        return _inconclusive(f"{head}: only {_count(n)} {who} requests, need {_count(min_samples)}",
                             shown(xc / nc), nc, ev)

    tests: list[tuple[_RateTest, _Counts, str, str, str, float | None]] = []
    if bound is not None:
        bad_bound = 1.0 - bound if higher else float(bound)
        limit = f"{'min' if higher else 'max'} {_num(bound)}"
        tests.append((_RateTest(bad_bound, compare=False), _Counts(xc, nc),
                      f"{'below' if higher else 'above'} {limit}", limit, "", effect))
    if have_stable:
        assert tolerance is not None
        tests.append((_RateTest(float(tolerance), compare=True), counts,
                      f"worse than stable beyond tolerance {_num(tolerance)}",
                      f"stable {'-' if higher else '+'} {_num(tolerance)}", "vs_stable_" if bound is not None else "",
                      effect if effect is not None else max(float(tolerance), 0.001)))
    elif tolerance is not None:
        ev["stable"] = "absent: judged by the bound alone"
    outcomes = []
    for test, c, word, limit, key, eff in tests:
        outcomes.append(_run_test(test, c, alpha=alpha, power=power, effect=eff, pass_rule=pass_rule,
                                  fail_only=fail_only, what=word, limit=limit, show=shown,
                                  show_upper=shown if not test.compare else (lambda d: -d if higher else d),
                                  ev=ev, key=key))
    value = shown(xc / nc)
    failed = [o.text for o in outcomes if o.verdict is Verdict.FAIL]
    if failed:
        return Judgement(Verdict.FAIL, value, nc, f"{head}: {'; '.join(failed)}", ev)
    if fail_only:
        return Judgement(Verdict.INCONCLUSIVE, value, nc, f"{head}: not failing", ev)
    if all(o.verdict is Verdict.PASS for o in outcomes):
        return Judgement(Verdict.PASS, value, nc, f"{head}: {'; '.join(o.text for o in outcomes)}", ev)
    needs = [o.needed for o in outcomes if o.verdict is Verdict.INCONCLUSIVE]
    if any(n is None for n in needs):
        more = "the rate sits at its limit; more samples may not settle it"
    else:
        need = max(n for n in needs if n is not None)
        ev["samples_needed"] = float(need)
        more = f"need more samples (~{_count(max(0.0, need - nc))} more canary requests at these rates)"
    p = min(float(v) for k, v in ev.items() if k.endswith("p_value") and isinstance(v, float))
    return Judgement(Verdict.INCONCLUSIVE, value, nc, f"{head}: {more} ({_peq(p)})", ev)


# --------------------------------------------------------------------------- 4. histogram quantiles


Buckets = Sequence[tuple[float, float]]


def _clean_buckets(buckets: Iterable[tuple[float, float]]) -> tuple[list[tuple[float, float]], str | None]:
    """Sort by ``le``, merge equal bounds (summing, as Prometheus coalesces), check +Inf.

    Returns (buckets, problem).  Decreasing cumulative counts are raised to the
    running maximum like Prometheus' ensureMonotonic; negative counts are a
    counter reset.
    """
    merged: dict[float, float] = {}
    for le, count in buckets:
        le = float(le)
        count = float(count)
        if math.isnan(le):
            continue
        if math.isnan(count):
            return [], "NaN bucket count"
        if count < 0:
            return [], "counter reset (negative bucket increase)"
        merged[le] = merged.get(le, 0.0) + count
    out = sorted(merged.items())
    if not out:
        return [], "no data"
    if not math.isinf(out[-1][0]):
        return [], "histogram has no +Inf bucket"
    fixed: list[tuple[float, float]] = []
    running = 0.0
    for le, count in out:
        running = max(running, count)
        fixed.append((le, running))
    return fixed, None


def _paired_histograms(canary_buckets: Buckets | None, stable_buckets: Buckets | None,
                       ev: dict[str, float | str]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]] | Judgement:
    """Both cumulative histograms, cleaned and with one bucket layout, or the INCONCLUSIVE saying why not."""
    if canary_buckets is None or stable_buckets is None:
        return _inconclusive(f"no data for {'canary' if canary_buckets is None else 'stable'}", None, None, ev)
    cb, cp = _clean_buckets(canary_buckets)
    sb, sp = _clean_buckets(stable_buckets)
    if cp or sp:
        return _inconclusive(f"{'canary' if cp else 'stable'} {cp or sp}", None, None, ev)
    if [le for le, _ in cb] != [le for le, _ in sb]:
        return _inconclusive("canary and stable histograms have different buckets", None, None, ev)
    return cb, sb


def _too_few_observations(nc: float, ns: float, minimum: float, ev: dict[str, float | str]) -> Judgement | None:
    """Records both counts in the evidence; INCONCLUSIVE when either side has fewer than `minimum`."""
    ev["canary_count"], ev["stable_count"] = nc, ns
    if nc >= minimum and ns >= minimum:
        return None
    who, n = ("canary", nc) if nc < minimum else ("stable", ns)
    return _inconclusive(f"only {_count(n)} {who} observations, need {_count(minimum)}", None, nc, ev)


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> tuple[float, bool]:
    """Prometheus' histogram_quantile on cumulative buckets (le, count) incl. +Inf.

    Returns (value, in_inf_bucket).  Like Prometheus, a quantile that falls in
    the +Inf bucket is reported as the highest finite bound, with the flag set;
    the lowest bucket interpolates from 0 (or returns its bound when <= 0).
    NaN when there are no observations or no +Inf bucket.
    """
    if math.isnan(q):
        return math.nan, False
    if q < 0:
        return -math.inf, False
    if q > 1:
        return math.inf, False
    bs, problem = _clean_buckets(buckets)
    if problem or len(bs) < 2:
        return math.nan, False
    total = bs[-1][1]
    if total == 0:
        return math.nan, False
    rank = q * total
    b = next(i for i, (_, c) in enumerate(bs) if c >= rank)
    if b == len(bs) - 1:
        return bs[-2][0], True
    if b == 0 and bs[0][0] <= 0:
        return bs[0][0], False
    start = 0.0 if b == 0 else bs[b - 1][0]
    end = bs[b][0]
    count = bs[b][1]
    if b > 0:
        count -= bs[b - 1][1]
        rank -= bs[b - 1][1]
    if count == 0:
        return end, False
    return start + (end - start) * (rank / count), False


def judge_quantile(
    canary_buckets: Buckets | None,
    stable_buckets: Buckets | None = None,
    *,
    q: float,
    max: float | None = None,  # noqa: A002
    max_increase: float | None = None,
    relative: bool = False,
    min_samples: float = 50,
) -> Judgement:
    """Judge a histogram quantile (e.g. p95 latency) against ``max`` and/or stable.

    Buckets are cumulative ``(le, count)`` pairs including ``+Inf`` (increases
    over the window).  The quantile is interpolated like Prometheus'
    histogram_quantile.  When it falls in the +Inf bucket the true value is
    above the highest finite bound (Prometheus silently reports that bound):
    the reason says so and, when ``max`` is given, the verdict is FAIL (the
    histogram cannot show compliance).  Fewer observations than ``min_samples``
    on either side is INCONCLUSIVE.
    """
    if not (0 <= q <= 1):
        raise ValueError("q must be in [0, 1]")
    if max is None and max_increase is None:
        raise ValueError("judge_quantile needs max or max_increase")
    label = f"p{q * 100:g}"
    ev: dict[str, float | str] = {"q": q}
    if max is not None:
        ev["max"] = float(max)
    if max_increase is not None:
        ev["max_increase"] = float(max_increase)
    if canary_buckets is None:
        return _inconclusive(f"{label}: no data for canary", None, None, ev)
    cb, problem = _clean_buckets(canary_buckets)
    if problem:
        return _inconclusive(f"{label}: canary {problem}", None, None, ev)
    c_total = cb[-1][1]
    ev["canary_count"] = c_total
    if c_total < min_samples:
        return _inconclusive(f"{label}: only {_count(c_total)} canary observations, need {_count(min_samples)}",
                             None, c_total, ev)
    c_val, c_inf = histogram_quantile(q, cb)
    if math.isnan(c_val):
        return _inconclusive(f"{label}: no canary observations", None, c_total, ev)
    ev["canary"] = c_val
    top = cb[-2][0] if len(cb) >= 2 else math.nan
    c_txt = f"above {_num(top)} (in the +Inf bucket)" if c_inf else _num(c_val)
    if c_inf:
        ev["canary_in_inf_bucket"] = "true"
    over = f"over {_count(c_total)} observations"

    fails: list[str] = []
    inconclusive: list[str] = []
    oks: list[str] = []
    if max is not None:
        if c_inf:
            fails.append(f"canary {label} is above the highest finite bucket bound {_num(top)} "
                         f"(Prometheus would report {_num(top)}), cannot show <= max {_num(max)}")
        elif c_val > max:
            fails.append(f"canary {label} {c_txt} > max {_num(max)}")
        else:
            oks.append(f"canary {label} {c_txt} <= max {_num(max)}")
    if max_increase is not None:
        sb: list[tuple[float, float]] = []
        s_problem = "no data for stable" if stable_buckets is None else None
        if stable_buckets is not None:
            sb, s_problem = _clean_buckets(stable_buckets)
            if s_problem:
                s_problem = f"stable {s_problem}"
        if s_problem:
            inconclusive.append(f"{s_problem} to compare with")
        else:
            s_total = sb[-1][1]
            ev["stable_count"] = s_total
            if s_total < min_samples:
                inconclusive.append(f"only {_count(s_total)} stable observations, need {_count(min_samples)}")
            else:
                s_val, s_inf = histogram_quantile(q, sb)
                ev["stable"] = s_val
                s_top = sb[-2][0] if len(sb) >= 2 else math.nan
                if s_inf:
                    ev["stable_in_inf_bucket"] = "true"
                if c_inf and s_inf:
                    inconclusive.append(f"canary and stable {label} both above the highest finite "
                                        f"bucket bound {_num(top)}: cannot compare")
                elif c_inf:
                    fails.append(f"canary {label} {c_txt} vs stable {_num(s_val)}: above every "
                                 "finite bucket, cannot show the increase is within tolerance")
                elif s_inf:
                    oks.append(f"canary {label} {_num(c_val)} vs stable above {_num(s_top)} "
                               "(in the +Inf bucket)")
                else:
                    change = _change(c_val, s_val, relative)
                    if change is None:
                        inconclusive.append(f"canary {label} {_num(c_val)} vs stable 0: relative change undefined")
                    else:
                        ev["change"] = change
                        shown = f"{change:+.1%}" if relative else f"{change:+.3g}"
                        tol = f"{max_increase:+.1%}" if relative else f"{max_increase:+.3g}"
                        if change > max_increase:
                            fails.append(f"canary {label} {_num(c_val)} vs stable {_num(s_val)} "
                                         f"({shown}): increase beyond {tol}")
                        else:
                            oks.append(f"canary {label} {_num(c_val)} vs stable {_num(s_val)} "
                                       f"({shown}) within {tol}")
    if fails:
        return Judgement(Verdict.FAIL, c_val, c_total, f"{'; '.join(fails)} {over}", ev)
    if inconclusive:
        return Judgement(Verdict.INCONCLUSIVE, c_val, c_total, f"{'; '.join(inconclusive)} {over}", ev)
    return Judgement(Verdict.PASS, c_val, c_total, f"{'; '.join(oks)} {over}", ev)


# --------------------------------------------------------------------------- 4b. stochastic order (is the canary slower?)


_UNIFORM = ((1.0, 1.0), (1.0, 1.0))
_JEFFREYS = (0.5, 0.5)


def judge_stochastic_order(
    canary_buckets: Buckets | None,
    stable_buckets: Buckets | None,
    *,
    tolerance: float,
    alpha: float = 0.01,
    min_samples: float = 100,
    pass_rule: PassRule = "proven",
    power: float = 0.8,
) -> Judgement:
    """Is the canary slower than stable anywhere in the distribution (Lindon, Sanden, Shirikian,
    "Rapid Regression Detection in Software Deployments through Sequential Testing", KDD 2022)?

    Every finite bucket bound ``le`` splits requests into "slower than le" or not; the canary's share
    slower than ``le`` may exceed stable's by at most ``tolerance`` (0.02: two more requests in a
    hundred), at every bound at once.  Each bound is the exact two-sample test of
    :func:`judge_proportion`, at alpha / (number of bounds), so the whole judge stays anytime-valid:

    * FAIL when at some bound the canary is significantly slower beyond the tolerance;
    * PASS when at every bound it is shown within it (proven), or has had the requests that catch
      a canary slower by twice the tolerance with ``power`` (powered, when sooner);
    * otherwise INCONCLUSIVE.  Fewer than ``min_samples`` observations on a side: INCONCLUSIVE.
    """
    if not (0 <= tolerance < 1):
        raise ValueError("tolerance must be in [0, 1)")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError("alpha and power must be in (0, 1)")
    ev: dict[str, float | str] = {"tolerance": float(tolerance), "alpha": float(alpha), "pass": pass_rule}
    paired = _paired_histograms(canary_buckets, stable_buckets, ev)
    if isinstance(paired, Judgement):
        return paired
    cb, sb = paired
    nc, ns = cb[-1][1], sb[-1][1]
    counts = f"{_count(nc)} canary vs {_count(ns)} stable observations"
    too_few = _too_few_observations(nc, ns, max(min_samples, 1), ev)
    if too_few is not None:
        return too_few
    bounds = [(le, nc - c, ns - s) for (le, c), (_, s) in zip(cb[:-1], sb[:-1])]
    if not bounds:
        return _inconclusive("the histogram has no finite bucket", None, nc, ev)
    each = alpha / len(bounds)
    crit = math.log(1.0 / each)
    test = _RateTest(float(tolerance), compare=True, priors=_UNIFORM)
    worst: tuple[float, float, float, float] | None = None  # (log E, le, canary share, stable share)
    pending: list[float] = []
    for le, slow_c, slow_s in bounds:
        c = _Counts(slow_c, nc, slow_s, ns)
        log_fail = test.log_e(c, above=True)
        if worst is None or log_fail > worst[0]:
            worst = (log_fail, le, slow_c / nc, slow_s / ns)
        if log_fail >= crit or test.log_e(c, above=False) >= crit:
            continue
        powered = test.powered_at(c, each, power, max(tolerance, 0.001)) if pass_rule == "powered" else None
        if powered is None or nc < powered:
            pending.append(powered if powered is not None else (_proven_needed(test, c, each) or math.inf))
    assert worst is not None
    log_fail, le, share_c, share_s = worst
    p_value = min(1.0, len(bounds) * math.exp(-log_fail)) if log_fail > -700 else 1.0
    ev.update({"bound": le, "canary_share_slower": share_c, "stable_share_slower": share_s, "p_value": p_value,
               "buckets": float(len(bounds))})
    where = f"{share_c:.1%} of canary observations above le={_num(le)} vs {share_s:.1%} of stable's"
    if log_fail >= crit:
        return Judgement(Verdict.FAIL, share_c - share_s, nc, f"canary slower: {where} over {counts}, "
                                                              f"beyond tolerance {_num(tolerance)} ({_peq(p_value)})", ev)
    if not pending:
        return Judgement(Verdict.PASS, share_c - share_s, nc,
                         f"not slower beyond tolerance {_num(tolerance)} at any of {len(bounds)} bucket bounds "
                         f"over {counts} (closest: {where})", ev)
    need = max(pending)
    more = ("more samples may not settle it" if math.isinf(need)
            else f"need more samples (~{_count(max(0.0, need - nc))} more canary observations)")
    if not math.isinf(need):
        ev["samples_needed"] = float(need)
    return Judgement(Verdict.INCONCLUSIVE, share_c - share_s, nc, f"{where} over {counts}: {more} ({_peq(p_value)})", ev)


# --------------------------------------------------------------------------- 5. distribution shift


def _increments(cb: list[tuple[float, float]]) -> list[float]:
    out = []
    prev = 0.0
    for _, c in cb:
        out.append(c - prev)
        prev = c
    return out


def _log_e_homogeneity(canary: Sequence[float], stable: Sequence[float]) -> float:
    """log of an anytime-valid e-value against "canary and stable have one distribution".

    Condition on which bucket each observation falls in (Lindon & Malek, NeurIPS 2022): under the
    null every observation is the canary's with one probability (its share of the traffic),
    whatever its bucket.  The alternative gives each bucket its own probability, mixed over a
    Jeffreys Beta(1/2, 1/2); the null is the most likely common probability.  For the true
    common probability the ratio is a test martingale, and dividing by the most likely one only
    makes it smaller, so P(ever >= 1/alpha) <= alpha by Ville's inequality: looking at every
    interval costs no validity, unlike a chi-square test at a fixed alpha.
    """
    nc, ns = sum(canary), sum(stable)
    mixed = sum(_log_marginal(c, c + s, _JEFFREYS) for c, s in zip(canary, stable) if c + s > 0)
    return mixed - _log_lik(nc, nc + ns, nc / (nc + ns))


def judge_distribution_shift(
    canary_buckets: Buckets | None,
    stable_buckets: Buckets | None,
    *,
    max_psi: float | None = None,
    max_js: float | None = None,
    alpha: float = 0.01,
    min_count: float = 100,
    epsilon: float = 1e-4,
) -> Judgement:
    """Compare canary and stable distributions (e.g. prediction scores) bucket by bucket.

    Cumulative histograms become per-bucket counts.  PSI = sum (c - s) ln(c / s)
    over bucket shares (shares floored at ``epsilon`` and renormalised so empty
    buckets do not blow up), and the Jensen-Shannon distance (base 2, in [0, 1]).
    Sample-size aware: FAIL only when a metric exceeds its threshold AND the
    anytime-valid test of equal distributions (:func:`_log_e_homogeneity`) rejects at
    ``alpha``, however often it is looked at; above threshold but not significant is
    INCONCLUSIVE; below every threshold with at least ``min_count`` observations on
    both sides is PASS.
    """
    if max_psi is None and max_js is None:
        raise ValueError("judge_distribution_shift needs max_psi or max_js")
    ev: dict[str, float | str] = {"alpha": alpha}
    if max_psi is not None:
        ev["max_psi"] = float(max_psi)
    if max_js is not None:
        ev["max_js"] = float(max_js)
    paired = _paired_histograms(canary_buckets, stable_buckets, ev)
    if isinstance(paired, Judgement):
        return paired
    c, s = _increments(paired[0]), _increments(paired[1])
    nc, ns = sum(c), sum(s)
    too_few = _too_few_observations(nc, ns, min_count, ev)
    if too_few is not None:
        return too_few
    # shares, floored and renormalised for PSI
    k = len(c)
    cf = [max(x / nc, epsilon) for x in c]
    sf = [max(x / ns, epsilon) for x in s]
    cs, ss = sum(cf), sum(sf)
    cf = [x / cs for x in cf]
    sf = [x / ss for x in sf]
    psi = sum((a - b) * math.log(a / b) for a, b in zip(cf, sf))
    # Jensen-Shannon on raw shares (0 log 0 = 0), base 2
    pc = [x / nc for x in c]
    psh = [x / ns for x in s]
    js_div = 0.0
    for a, b in zip(pc, psh):
        m = 0.5 * (a + b)
        if a > 0:
            js_div += 0.5 * a * math.log2(a / m)
        if b > 0:
            js_div += 0.5 * b * math.log2(b / m)
    js = math.sqrt(max(0.0, js_div))
    log_e = _log_e_homogeneity(c, s)
    p_value = math.exp(-log_e) if log_e > 0 else 1.0
    ev.update({"psi": psi, "js": js, "log_e": log_e, "p_value": p_value, "buckets": float(k)})
    value = psi if max_psi is not None else js
    over = []
    within = []
    if max_psi is not None:
        (over if psi > max_psi else within).append(
            f"PSI {_num(psi)} {'>' if psi > max_psi else '<='} {_num(max_psi)}")
    if max_js is not None:
        (over if js > max_js else within).append(
            f"JS {_num(js)} {'>' if js > max_js else '<='} {_num(max_js)}")
    counts = f"{_count(nc)} canary vs {_count(ns)} stable observations"
    test = f"anytime-valid {_peq(p_value)}"
    if over and log_e >= math.log(1.0 / alpha):
        return Judgement(Verdict.FAIL, value, nc,
                         f"distribution shifted: {', '.join(over)} over {counts} ({test})", ev)
    if over:
        return Judgement(Verdict.INCONCLUSIVE, value, nc,
                         f"{', '.join(over)} but not significant at alpha {_num(alpha)} over {counts} "
                         f"({test}): need more samples", ev)
    return Judgement(Verdict.PASS, value, nc, f"no shift: {', '.join(within)} over {counts} ({test})", ev)


# --------------------------------------------------------------------------- 6. sample size


def required_samples(
    p0: float,
    p1: float,
    alpha: float = 0.05,
    power: float = 0.8,
    *,
    method: Literal["arcsine", "score"] = "arcsine",
) -> int:
    """Fixed sample size to detect a rate moving from a known ``p0`` to ``p1``.

    One-sided one-sample test against a known baseline, level ``alpha``, given
    ``power``.  Default ``method="arcsine"`` (Cohen's h, variance-stabilised):

        n = ((z_{1-alpha} + z_{power}) / (2 asin sqrt(p1) - 2 asin sqrt(p0)))^2

    which gives 329 for 0.001 -> 0.01 and 888 for 0.01 -> 0.02 (PRODUCT.md's
    "about 300" and "800-1000").  ``method="score"`` is the textbook normal
    approximation with the null variance under H0 and the alternative's under H1:

        n = ((z_{1-alpha} sqrt(p0 (1-p0)) + z_{power} sqrt(p1 (1-p1))) / (p1 - p0))^2

    (227 and 792 for the same pairs; the normal approximation is poor for rare
    events, where the arcsine and the exact Poisson answer -- 300 for the first
    pair -- agree better).
    """
    if not (0 <= p0 <= 1 and 0 <= p1 <= 1):
        raise ValueError("p0 and p1 must be rates in [0, 1]")
    if p0 == p1:
        raise ValueError("p0 and p1 must differ")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError("alpha and power must be in (0, 1)")
    za = _NORMAL.inv_cdf(1 - alpha)
    zb = _NORMAL.inv_cdf(power)
    if method == "arcsine":
        h = abs(2 * math.asin(math.sqrt(p1)) - 2 * math.asin(math.sqrt(p0)))
        n = ((za + zb) / h) ** 2
    elif method == "score":
        n = ((za * math.sqrt(p0 * (1 - p0)) + zb * math.sqrt(p1 * (1 - p1))) / abs(p1 - p0)) ** 2
    else:
        raise ValueError(f"unknown method {method!r}")
    return math.ceil(n - 1e-9)
