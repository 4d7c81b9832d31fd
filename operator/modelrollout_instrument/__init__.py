"""What a model server exports so that modelrollout's gates can judge it.

    from modelrollout_instrument import ModelMetrics
    metrics = ModelMetrics(features=("petal_length", "petal_width"))
    with metrics.request():                    # 200, or the error's status code, and the seconds
        metrics.inputs(rows)                   # missing features and their values, per row
        scores = model.predict_proba(x).max(axis=1)
        metrics.predictions(scores)
    metrics.feedback(correct=True)             # when a label comes back

The names are the ones the `http` preset queries (docs/instrumentation.md). Prometheus adds
`namespace`, `rollout` and `revision` from the pod at scrape time, so nothing here knows about
rollouts. Collectors are created once per registry: a module imported twice (MLServer re-imports
a runtime's module) gets the same collectors instead of a DuplicateTimeseries error.

This package never imports the operator and needs only `prometheus_client`.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

__all__ = ["ModelMetrics", "status_code_of", "counted", "counting_requests",
           "LATENCY_BUCKETS", "SCORE_BUCKETS", "VALUE_BUCKETS"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
VALUE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

_Collector = TypeVar("_Collector", Counter, Histogram)
_lock = threading.Lock()


def _registered(kind: type[_Collector], name: str, documentation: str, registry: CollectorRegistry,
                **kwargs) -> _Collector:
    """The collector `name` of `registry`, created on first use and returned as is afterwards."""
    with _lock:
        existing = registry._names_to_collectors.get(name)  # prometheus_client has no public lookup
        if existing is None:
            return kind(name, documentation, registry=registry, **kwargs)
        if not isinstance(existing, kind):
            raise ValueError(f"{name} is already registered as a {type(existing).__name__}, not a {kind.__name__}")
        return existing


def status_code_of(error: BaseException) -> int:
    """The HTTP status a server answers for `error`: its own `status_code` when it has one
    (MLServer's MLServerError, FastAPI's HTTPException), else 500."""
    code = getattr(error, "status_code", None)
    return code if isinstance(code, int) and 100 <= code <= 599 else 500


class ModelMetrics:
    """The series the gates read, registered once in `registry` (the default one unless given).

    features: the input features `inputs()` reports (their histograms also tell the
    `input-missing-rate` gate how many features there are)."""

    def __init__(self, features: Sequence[str] = (), registry: CollectorRegistry = REGISTRY,
                 latency_buckets: Sequence[float] = LATENCY_BUCKETS,
                 score_buckets: Sequence[float] = SCORE_BUCKETS,
                 value_buckets: Sequence[float] = VALUE_BUCKETS) -> None:
        self.features = tuple(features)
        self.requests = _registered(Counter, "http_requests_total", "Requests answered, by HTTP status code.",
                                    registry, labelnames=("code",))
        self.latency = _registered(Histogram, "http_request_duration_seconds", "Request duration in seconds.",
                                   registry, buckets=latency_buckets)
        self.scores = _registered(Histogram, "model_prediction_score", "Prediction scores (0..1).",
                                  registry, buckets=score_buckets)
        self.feedback_total = _registered(Counter, "model_feedback_total", "Predictions whose label came back.",
                                          registry)
        self.feedback_correct = _registered(Counter, "model_feedback_correct_total",
                                            "Predictions whose label came back and matched.", registry)
        self.rows = _registered(Counter, "model_input_rows_total", "Rows handed to the model.", registry)
        self.missing = _registered(Counter, "model_input_feature_missing_total",
                                   "Rows whose feature was missing before imputation.", registry,
                                   labelnames=("feature",))
        self.values = _registered(Histogram, "model_input_feature_value",
                                  "A feature's value as handed to the model (normalised to 0..1).", registry,
                                  labelnames=("feature",), buckets=value_buckets)

    def answered(self, code: int, seconds: float) -> None:
        self.requests.labels(code=str(code)).inc()
        self.latency.observe(seconds)

    @contextmanager
    def request(self, status: Callable[[BaseException], int] = status_code_of) -> Iterator[None]:
        """Counts the block as one request: 200 when it returns, `status(error)` when it raises."""
        start = time.perf_counter()
        try:
            yield
        except BaseException as error:
            self.answered(status(error), time.perf_counter() - start)
            raise
        self.answered(200, time.perf_counter() - start)

    def predictions(self, scores: Iterable[float]) -> None:
        for score in scores:
            self.scores.observe(float(score))

    def feedback(self, correct: bool, count: int = 1) -> None:
        self.feedback_total.inc(count)
        if correct:
            self.feedback_correct.inc(count)

    def inputs(self, rows: Iterable[Mapping[str, float | None]]) -> None:
        """Each row maps feature to value as handed to the model; None or NaN counts as missing."""
        for row in rows:
            self.rows.inc()
            for feature in self.features:
                value = row.get(feature)
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    self.missing.labels(feature=feature).inc()
                else:
                    self.values.labels(feature=feature).observe(float(value))


def counted(function: Callable, metrics: ModelMetrics,
            status: Callable[[BaseException], int] = status_code_of) -> Callable:
    """`function` (sync or async) counted as one request per call; its signature is kept
    (`functools.wraps`), for frameworks that read it (BentoML)."""
    if getattr(function, "_counted_by", None) is metrics:  # already wrapped (a module imported twice)
        return function
    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def counting(*args, **kwargs):
            with metrics.request(status):
                return await function(*args, **kwargs)
    else:
        @functools.wraps(function)
        def counting(*args, **kwargs):
            with metrics.request(status):
                return function(*args, **kwargs)
    counting._counted_by = metrics  # type: ignore[attr-defined]
    return counting


def counting_requests(cls: type, method: str, metrics: ModelMetrics,
                      status: Callable[[BaseException], int] = status_code_of) -> type:
    """`cls` with `method` counted as one request per call; the class adapters' core."""
    setattr(cls, method, counted(getattr(cls, method), metrics, status))
    return cls
