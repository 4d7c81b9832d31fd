"""Simulated model versions: how one revision of a model server answers requests.

Pure and seeded: nothing here reads a clock or the network. The traffic simulator builds a
``ModelBehaviour`` from a Deployment's pod template annotations (``lab.modelrollout.io/*``)
and asks ``sample_requests`` what happened to ``n`` requests, with a ``random.Random`` that is
derived from the simulator seed, so the same seed gives the same counts.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

ANNOTATION_PREFIX = "lab.modelrollout.io/"

# Annotation names (pod template annotations of a Deployment), all optional.
A_LOAD_SECONDS = ANNOTATION_PREFIX + "load-seconds"
A_ERROR_RATE = ANNOTATION_PREFIX + "error-rate"
A_LATENCY_MS = ANNOTATION_PREFIX + "latency-ms"
A_LATENCY_SIGMA = ANNOTATION_PREFIX + "latency-sigma"
A_ACCURACY = ANNOTATION_PREFIX + "accuracy"
A_SCORE_MEAN = ANNOTATION_PREFIX + "score-mean"
A_SCORE_CONCENTRATION = ANNOTATION_PREFIX + "score-concentration"
A_LABEL_FRACTION = ANNOTATION_PREFIX + "label-fraction"
A_LABEL_DELAY = ANNOTATION_PREFIX + "label-delay-seconds"
A_DEGRADE_AFTER = ANNOTATION_PREFIX + "degrade-after-seconds"
A_DEGRADED_ERROR_RATE = ANNOTATION_PREFIX + "degraded-error-rate"
A_DEGRADED_LATENCY_MS = ANNOTATION_PREFIX + "degraded-latency-ms"
A_DEGRADED_ACCURACY = ANNOTATION_PREFIX + "degraded-accuracy"
A_DEGRADED_SCORE_MEAN = ANNOTATION_PREFIX + "degraded-score-mean"
A_BAD = ANNOTATION_PREFIX + "bad"
# What the server's preprocessing hands the model (docs/presets.md, input-side gates): the share
# of rows whose feature is missing as it parses them, what it puts in place of a missing value (a
# number, or "drop" to drop the row), and the mean of the feature's normalised value. Both
# revisions receive the same requests; a preprocessing change shows here first.
A_INPUT_MISSING_RATE = ANNOTATION_PREFIX + "input-missing-rate"
A_INPUT_IMPUTE = ANNOTATION_PREFIX + "input-impute"
A_INPUT_MEAN = ANNOTATION_PREFIX + "input-mean"

INPUT_FEATURE = "amount"  # the one feature the simulated servers report
INPUT_CONCENTRATION = 10.0
# The feature's histogram: values are in (0, 1); a bucket at 0 holds the sentinel -1 that the
# default preprocessing imputes, so where missing values go shows in the distribution.
INPUT_BUCKETS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

# Histogram buckets of the exposed metrics (upper bounds, +Inf implied).
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0,
)
SCORE_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _float(annotations: Mapping[str, str], key: str, default: float | None) -> float | None:
    raw = annotations.get(key)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return default
    if math.isnan(value):
        return default
    return value


def _clamp01(value: float) -> float:
    return min(1.0, max(0.0, value))


@dataclass(frozen=True)
class ModelBehaviour:
    """How one model version behaves; defaults are a healthy model."""

    error_rate: float = 0.001
    latency_ms: float = 40.0  # median
    latency_sigma: float = 0.25  # lognormal sigma
    accuracy: float = 0.92
    score_mean: float = 0.3
    score_concentration: float = 10.0
    label_fraction: float = 0.3
    label_delay_seconds: float = 0.0
    degrade_after_seconds: float | None = None
    degraded_error_rate: float | None = None
    degraded_latency_ms: float | None = None
    degraded_accuracy: float | None = None
    degraded_score_mean: float | None = None
    bad: bool = False  # benchmark marker: every request this version serves counts as "bad"
    input_missing_rate: float = 0.05
    input_impute: float | None = -1.0  # None: rows missing the feature are dropped
    input_mean: float = 0.4

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str] | None) -> ModelBehaviour:
        """Parse the pod template annotations; malformed values fall back to the defaults."""
        a = dict(annotations or {})
        d = cls()
        return cls(
            error_rate=_clamp01(_float(a, A_ERROR_RATE, d.error_rate)),  # type: ignore[arg-type]
            latency_ms=max(0.0, _float(a, A_LATENCY_MS, d.latency_ms)),  # type: ignore[type-var]
            latency_sigma=max(0.0, _float(a, A_LATENCY_SIGMA, d.latency_sigma)),  # type: ignore[type-var]
            accuracy=_clamp01(_float(a, A_ACCURACY, d.accuracy)),  # type: ignore[arg-type]
            score_mean=min(0.999, max(0.001, _float(a, A_SCORE_MEAN, d.score_mean))),  # type: ignore[type-var]
            score_concentration=max(0.01, _float(a, A_SCORE_CONCENTRATION, d.score_concentration)),  # type: ignore[type-var]
            label_fraction=_clamp01(_float(a, A_LABEL_FRACTION, d.label_fraction)),  # type: ignore[arg-type]
            label_delay_seconds=max(0.0, _float(a, A_LABEL_DELAY, d.label_delay_seconds)),  # type: ignore[type-var]
            degrade_after_seconds=_float(a, A_DEGRADE_AFTER, None),
            degraded_error_rate=_opt01(_float(a, A_DEGRADED_ERROR_RATE, None)),
            degraded_latency_ms=_float(a, A_DEGRADED_LATENCY_MS, None),
            degraded_accuracy=_opt01(_float(a, A_DEGRADED_ACCURACY, None)),
            degraded_score_mean=_float(a, A_DEGRADED_SCORE_MEAN, None),
            bad=str(a.get(A_BAD, "")).strip().lower() in ("1", "true", "yes"),
            input_missing_rate=_clamp01(_float(a, A_INPUT_MISSING_RATE, d.input_missing_rate)),  # type: ignore[arg-type]
            input_impute=None if str(a.get(A_INPUT_IMPUTE, "")).strip().lower() == "drop"
            else _float(a, A_INPUT_IMPUTE, d.input_impute),
            input_mean=min(0.999, max(0.001, _float(a, A_INPUT_MEAN, d.input_mean))),  # type: ignore[type-var]
        )

    @property
    def degrades(self) -> bool:
        return self.degrade_after_seconds is not None

    def degraded(self) -> ModelBehaviour:
        """The behaviour after ``degrade_after_seconds`` of serving (unchanged values stay)."""
        return dataclasses.replace(
            self,
            error_rate=self.error_rate if self.degraded_error_rate is None else self.degraded_error_rate,
            latency_ms=self.latency_ms if self.degraded_latency_ms is None else self.degraded_latency_ms,
            accuracy=self.accuracy if self.degraded_accuracy is None else self.degraded_accuracy,
            score_mean=(
                self.score_mean
                if self.degraded_score_mean is None
                else min(0.999, max(0.001, self.degraded_score_mean))
            ),
            degrade_after_seconds=None,
        )


def _opt01(value: float | None) -> float | None:
    return None if value is None else _clamp01(value)


@dataclass
class Batch:
    """What happened to ``requests`` requests sent to one model version."""

    requests: int = 0
    errors: int = 0  # answered 500
    latencies: list[float] = field(default_factory=list)  # seconds, one per request
    scores: list[float] = field(default_factory=list)  # one per successful prediction
    correct: int = 0  # successful predictions that were right (labelled or not)
    labelled: int = 0  # successful predictions that will get a label
    labelled_correct: int = 0  # ... of which correct

    @property
    def predictions(self) -> int:
        return self.requests - self.errors

    @property
    def incorrect(self) -> int:
        return self.predictions - self.correct


def sample_requests(behaviour: ModelBehaviour, n: int, rng: random.Random) -> Batch:
    """Simulate ``n`` requests against a model version (deterministic for a given rng state)."""
    b = Batch(requests=n)
    if n <= 0:
        return b
    median_s = behaviour.latency_ms / 1000.0
    sigma = behaviour.latency_sigma
    alpha = behaviour.score_mean * behaviour.score_concentration
    beta = (1.0 - behaviour.score_mean) * behaviour.score_concentration
    rand = rng.random
    gauss = rng.gauss
    for _ in range(n):
        latency = median_s * math.exp(sigma * gauss(0.0, 1.0)) if sigma > 0 else median_s
        b.latencies.append(latency)
        if rand() < behaviour.error_rate:
            b.errors += 1
            continue
        b.scores.append(rng.betavariate(alpha, beta))
        correct = rand() < behaviour.accuracy
        if correct:
            b.correct += 1
        if rand() < behaviour.label_fraction:
            b.labelled += 1
            if correct:
                b.labelled_correct += 1
    return b


@dataclass
class Inputs:
    """What the model was handed: ``rows`` rows, ``missing`` of them with the feature missing (then
    imputed), and the feature's value in each row (imputed ones included)."""

    rows: int = 0
    missing: int = 0
    values: list[float] = field(default_factory=list)


def sample_inputs(behaviour: ModelBehaviour, n: int, rng: random.Random) -> Inputs:
    """The inputs of ``n`` requests (one row each), from their own ``rng`` so that adding input
    metrics leaves the seeded answers of every request as they were."""
    out = Inputs()
    alpha = behaviour.input_mean * INPUT_CONCENTRATION
    beta = (1.0 - behaviour.input_mean) * INPUT_CONCENTRATION
    for _ in range(n):
        if rng.random() < behaviour.input_missing_rate:
            if behaviour.input_impute is None:
                continue  # dropped: the model never sees the row
            out.missing += 1
            out.values.append(behaviour.input_impute)
        else:
            out.values.append(rng.betavariate(alpha, beta))
        out.rows += 1
    return out


def poisson(lam: float, rng: random.Random) -> int:
    """A Poisson draw: Knuth's method for small means, a rounded normal for large ones."""
    if lam <= 0:
        return 0
    if lam < 30:
        limit = math.exp(-lam)
        k, p = 0, 1.0
        while True:
            p *= rng.random()
            if p <= limit:
                return k
            k += 1
    return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))


def split(n: int, fractions: Sequence[float], rng: random.Random) -> list[int]:
    """Multinomial split of ``n`` items over ``fractions``; the remainder (1 - sum) is the
    last element of the result (unrouted). Returns len(fractions) + 1 counts."""
    cumulative: list[float] = []
    total = 0.0
    for f in fractions:
        total += max(0.0, f)
        cumulative.append(total)
    counts = [0] * (len(fractions) + 1)
    if n <= 0:
        return counts
    if total >= 1.0 - 1e-12 and fractions:
        cumulative[-1] = 1.0 + 1e-9  # no remainder by rounding
    for _ in range(n):
        counts[bisect.bisect_right(cumulative, rng.random())] += 1
    return counts


def derive_seed(seed: int | str, *parts: object) -> int:
    """A stable 64-bit seed from the simulator seed and names (never Python's hash())."""
    h = hashlib.sha256(repr((seed,) + tuple(str(p) for p in parts)).encode()).digest()
    return int.from_bytes(h[:8], "big")


def bucket_counts(values: Sequence[float], bounds: Sequence[float]) -> list[int]:
    """Non-cumulative counts per bucket: len(bounds) + 1 entries (the last is +Inf)."""
    counts = [0] * (len(bounds) + 1)
    for v in values:
        counts[bisect.bisect_left(bounds, v)] += 1
    return counts
