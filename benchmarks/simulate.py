"""Seeded simulations of ours at its recommended defaults (specs.ours_default_rollout), for the targets
that need more runs than the lab can carry: requests to catch 0.1 % -> 5 % errors beside Wald's bound,
and the false-rollback rate over hundreds of healthy rollouts.

The error-rate rule is parsed from the benchmark's own spec, exactly as the operator parses it, and
judged by `modelrollout.evaluate` on the step's cumulative counts after every interval, with the
recent windows the operator cuts (`core.recent_window`). Errors are exact Bernoulli counts.
Only the error rate is simulated (the latency gate of a healthy canary is far from its bound).
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from typing import Any

from benchmarks import specs
from modelrollout.evaluate import MetricSample, RecentCounts, evaluate
from modelrollout.spec import MetricRule, PlatformPolicy, RolloutSpec, parse_spec
from modelrollout.stats import Verdict


def ours_default_spec() -> RolloutSpec:
    body = specs.ours_default_rollout("sim", specs.HEALTHY, "1")
    return parse_spec(body["spec"], PlatformPolicy(prometheus_url="http://prometheus:9090"))


def error_rule(spec: RolloutSpec) -> MetricRule:
    return next(rule for rule in spec.analysis.metrics if rule.name == "error-rate")


def binomial(rng: random.Random, p: float, n: int) -> int:
    """Successes in n Bernoulli(p) trials, exactly, by geometric gaps (fast for rare events)."""
    if p <= 0 or n <= 0:
        return 0
    if p >= 1:
        return n
    log_q = math.log1p(-p)
    k, pos = 0, -1
    while True:
        pos += 1 + int(math.log(1.0 - rng.random()) / log_q)
        if pos >= n:
            return k
        k += 1


def wald_bound(p1: float, p0: float, alpha: float) -> float:
    """Wald's expected sample size for an SPRT of level alpha to reject p0 when the rate is p1."""
    kl = p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))
    return math.log(1 / alpha) / kl


def limit_of(rule: MetricRule, p_stable: float) -> float:
    """The rate a FAIL must be shown beyond: the bound, or stable plus the tolerance (the stricter)."""
    limits = []
    if rule.max is not None:
        limits.append(rule.max)
    if rule.compare_to_stable is not None and rule.compare_to_stable.max_increase is not None:
        limits.append(p_stable + rule.compare_to_stable.max_increase)
    return min(limits) if limits else p_stable


@dataclass
class StepOutcome:
    verdict: Verdict | None   # FAIL, PASS, or None (still undecided at the cap)
    looks: int
    canary_requests: int
    paused: bool              # undecided past hold + decideWithin at some look


def run_step(rng: random.Random, spec: RolloutSpec, *, p_canary: float, p_stable: float, canary_per_look: int,
             stable_per_look: int, max_looks: int) -> StepOutcome:
    """One step looked at every interval, as the core runs it: a FAIL rolls back, a PASS ends the
    step once its hold has passed, an undecided step pauses after hold + decideWithin and goes on."""
    rule, analysis = error_rule(spec), spec.analysis
    interval = analysis.interval
    hold = spec.strategy.steps[0].hold or 0.0
    block = round(analysis.recent_block / interval) if analysis.recent_block > 0 else 0
    per_look: list[tuple[int, int]] = []
    paused = False
    for look in range(1, max_looks + 1):
        per_look.append((binomial(rng, p_canary, canary_per_look), binomial(rng, p_stable, stable_per_look)))
        nc, ns = look * canary_per_look, look * stable_per_look
        canary = (sum(c for c, _ in per_look), nc)
        stable = (sum(s for _, s in per_look), ns)
        recent = None
        if block:
            blocks = look // block
            recent = RecentCounts(0.0, 0, None, None)
            if blocks >= 2:
                tail = per_look[(blocks - 1) * block:]
                recent = RecentCounts(len(tail) * interval, blocks - 1,
                                      (sum(c for c, _ in tail), len(tail) * canary_per_look),
                                      (sum(s for _, s in tail), len(tail) * stable_per_look))
        sample = MetricSample(rule.name, "q", samples=nc, canary_counts=canary, stable_counts=stable, recent=recent)
        verdict = evaluate(rule, sample, analysis.samples.min, analysis.pass_rule, bool(block)).verdict
        held = look * interval
        if verdict is Verdict.FAIL or (verdict is Verdict.PASS and held >= hold):
            return StepOutcome(verdict, look, nc, paused)
        paused = paused or held >= hold + analysis.decide_within
    return StepOutcome(None, max_looks, max_looks * canary_per_look, paused)


def requests_to_catch(runs: int = 200, p_stable: float = 0.001, p_canary: float = 0.05, canary_per_look: int = 10,
                      weight: int = specs.OURS_REAL_STEPS[0], seed: int = 12) -> dict[str, Any]:
    """Median canary requests until a canary at p_canary is failed, `canary_per_look` per interval
    (fine-grained, to resolve the statistic; the lab's figure comes in whole intervals of traffic)."""
    spec = ours_default_spec()
    rule = error_rule(spec)
    rng = random.Random(seed)
    stable_per_look = round(canary_per_look * (100 - weight) / weight)
    caught, passed = [], 0
    for _ in range(runs):
        out = run_step(rng, spec, p_canary=p_canary, p_stable=p_stable, canary_per_look=canary_per_look,
                       stable_per_look=stable_per_look, max_looks=400)
        if out.verdict is Verdict.FAIL:
            caught.append(out.canary_requests)
        passed += out.verdict is Verdict.PASS
    limit = limit_of(rule, p_stable)
    wald = wald_bound(p_canary, limit, rule.alpha)
    median = statistics.median(caught) if caught else math.inf
    return {"runs": runs, "p_stable": p_stable, "p_canary": p_canary, "limit": limit, "alpha": rule.alpha,
            "canary_per_look": canary_per_look, "caught": len(caught), "passed": passed,
            "median_requests": median, "wald_bound": wald, "ratio": median / wald}


def healthy_rollouts(runs: int = 400, rps: float = specs.REAL_NOISY_RPS, p_error: float = 0.005,
                     real_cap: float = specs.ARGO_EXAMPLE_SECONDS + 300.0, seed: int = 400) -> dict[str, Any]:
    """`runs` healthy rollouts (the same error rate on both sides) through every step of ours at
    default cadence, `rps` real requests a second: false rollbacks, promotions, pauses, real seconds
    to promote (looks only; the lab adds read-backs and Prometheus' scrape delay)."""
    spec = ours_default_spec()
    rule = error_rule(spec)
    interval_real = specs.OURS_REAL_INTERVAL
    rng = random.Random(seed)
    rolled_back = promoted = paused = 0
    to_promote = []
    for _ in range(runs):
        elapsed, was_paused, verdict = 0.0, False, None
        for weight in specs.OURS_REAL_STEPS:
            per_look = rps * interval_real
            left = max(1, int((real_cap - elapsed) // interval_real))
            out = run_step(rng, spec, p_canary=p_error, p_stable=p_error,
                           canary_per_look=round(per_look * weight / 100),
                           stable_per_look=round(per_look * (100 - weight) / 100), max_looks=left)
            elapsed += out.looks * interval_real
            was_paused = was_paused or out.paused
            verdict = out.verdict
            if verdict is not Verdict.PASS:
                break
        rolled_back += verdict is Verdict.FAIL
        promoted += verdict is Verdict.PASS
        paused += was_paused
        if verdict is Verdict.PASS:
            to_promote.append(elapsed)
    return {"runs": runs, "rps": rps, "p_error": p_error, "alpha": rule.alpha, "rolled_back": rolled_back,
            "false_rollback_rate": rolled_back / runs, "promoted": promoted, "paused": paused,
            "undecided": runs - promoted - rolled_back, "real_cap_s": real_cap,
            "median_real_seconds_to_promote": statistics.median(to_promote) if to_promote else None}
