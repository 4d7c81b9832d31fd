"""The operator's own Prometheus metrics (what the operator did, not what the models do).

All series live in a private registry, ``REGISTRY``, so importing this module twice
(tests, the lab) never collides with the default registry or another library's metrics.
``start_metrics_server(port)`` serves it on ``/metrics`` (the chart's metrics Service
and ServiceMonitor point at it); ``exposition()`` returns the same text for tests.

The reconciler calls the small ``record_*`` functions; none of them does I/O, and
all are cheap and thread-safe (kopf runs sync handlers in a thread pool):

* ``record_phase(ns, name, phase, since)`` -> ``modelrollout_rollout_phase_since_seconds`` and the
  census ``modelrollout_rollouts{phase}`` (rollouts per phase, kept from every rollout's last phase)
* ``record_weight(ns, name, weight)``      -> ``modelrollout_canary_weight``
* ``record_analysis(ns, name, verdicts, lag_s)`` -> ``modelrollout_analyses_total``,
  ``modelrollout_analysis_verdicts_total`` and ``modelrollout_analysis_lag_seconds``
* ``record_query(failed)`` -> ``modelrollout_prometheus_queries_total`` /
  ``modelrollout_prometheus_query_errors_total`` (queries sent)
* ``record_query_asked()`` -> ``modelrollout_prometheus_queries_asked_total`` (queries analyses
  asked for; batching sends fewer)
* ``record_result(ns, name, "promoted"|"rolledback", duration_s)``
  -> ``modelrollout_promotions_total`` / ``modelrollout_rollbacks_total`` and
  ``modelrollout_rollout_duration_seconds{result}``
* ``forget(ns, name)`` drops every per-rollout series when a ModelRollout is deleted, and takes
  it out of the census.

The chart's PrometheusRule alerts are written against exactly these names:
``increase(modelrollout_rollbacks_total[10m]) > 0`` (a rollback happened) and
``time() - modelrollout_rollout_phase_since_seconds{phase=~"Progressing|Paused"} > 3600``
(a rollout stuck for over an hour).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)

__all__ = [
    "PHASES",
    "REGISTRY",
    "RESULTS",
    "VERDICTS",
    "exposition",
    "forget",
    "record_analysis",
    "record_phase",
    "record_query",
    "record_query_asked",
    "record_result",
    "record_verdict",
    "record_weight",
    "reset",
    "start_metrics_server",
]

#: The phases of status.phase (crds/modelrollout.yaml); each is always exported, 0 if none.
PHASES: tuple[str, ...] = (
    "Pending",
    "Initializing",
    "Progressing",
    "Paused",
    "Promoting",
    "Succeeded",
    "RolledBack",
    "InvalidSpec",
)
#: Verdicts of one analysis check (status.lastAnalysis[].verdict).
VERDICTS: tuple[str, ...] = ("Pass", "Fail", "Inconclusive")
#: How a rollout ends.
RESULTS: tuple[str, ...] = ("promoted", "rolledback")

# Rollouts take minutes to hours: buckets from 1 minute to 1 day.
DURATION_BUCKETS: tuple[float, ...] = (
    60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, float("inf"),
)
# An analysis is late by the reconcile lag: from well under a second to (overloaded) minutes.
LAG_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, float("inf"))

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

ROLLOUTS = Gauge(
    "modelrollout_rollouts",
    "ModelRollouts served by this operator, by status.phase.",
    ["phase"],
    registry=REGISTRY,
)
PHASE_SINCE = Gauge(
    "modelrollout_rollout_phase_since_seconds",
    "Unix time at which the rollout entered its current phase (one series per rollout).",
    ["namespace", "name", "phase"],
    registry=REGISTRY,
)
CANARY_WEIGHT = Gauge(
    "modelrollout_canary_weight",
    "Share of traffic (percent, 0-100) the canary revision currently receives.",
    ["namespace", "name"],
    registry=REGISTRY,
)
ANALYSES = Counter(
    "modelrollout_analyses_total",
    "Analyses run (one per analysis interval while a canary is judged).",
    ["namespace", "name"],
    registry=REGISTRY,
)
ANALYSIS_LAG = Histogram(
    "modelrollout_analysis_lag_seconds",
    "How late each analysis ran after it was due (the previous one plus the interval): the reconcile lag.",
    buckets=LAG_BUCKETS,
    registry=REGISTRY,
)
PROMETHEUS_QUERIES = Counter(
    "modelrollout_prometheus_queries_total",
    "Instant queries sent to Prometheus.",
    registry=REGISTRY,
)
PROMETHEUS_QUERIES_ASKED = Counter(
    "modelrollout_prometheus_queries_asked_total",
    "Instant queries analyses asked for; queries_total counts those sent, fewer when many are batched into one.",
    registry=REGISTRY,
)
PROMETHEUS_QUERY_ERRORS = Counter(
    "modelrollout_prometheus_query_errors_total",
    "Prometheus queries that failed (unreachable, HTTP error, bad PromQL); their metric is judged on no data.",
    registry=REGISTRY,
)
ANALYSIS_VERDICTS = Counter(
    "modelrollout_analysis_verdicts_total",
    "Analysis checks by metric and verdict (Pass, Fail, Inconclusive).",
    ["namespace", "name", "metric", "verdict"],
    registry=REGISTRY,
)
ROLLBACKS = Counter(
    "modelrollout_rollbacks_total",
    "Rollouts that ended rolled back (automatically or by abort).",
    ["namespace", "name"],
    registry=REGISTRY,
)
PROMOTIONS = Counter(
    "modelrollout_promotions_total",
    "Rollouts that ended with the canary promoted to stable.",
    ["namespace", "name"],
    registry=REGISTRY,
)
ROLLOUT_DURATION = Histogram(
    "modelrollout_rollout_duration_seconds",
    "Time from the start of a rollout to its end, by result.",
    ["result"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)

_lock = threading.Lock()
# Per-rollout label sets we created, so forget() can remove exactly those series.
_verdict_keys: dict[tuple[str, str], set[tuple[str, str]]] = {}
_phase_of: dict[tuple[str, str], str] = {}
_counted: set[tuple[str, str]] = set()
_weighted: set[tuple[str, str]] = set()


def _count_phases() -> None:
    """Set ``modelrollout_rollouts{phase}`` from every rollout's last phase (call with ``_lock`` held).

    Every known phase is exported, 0 when no rollout is in it.
    """
    counts: dict[str, int] = dict.fromkeys(PHASES, 0)
    for phase in _phase_of.values():
        counts[phase] = counts.get(phase, 0) + 1
    for phase, count in counts.items():
        ROLLOUTS.labels(phase=phase).set(count)


_count_phases()


def record_phase(namespace: str, name: str, phase: str, since: float | None = None) -> None:
    """Note that a rollout is in ``phase`` since ``since`` (unix seconds; default: now).

    Keeps one series per rollout: entering a new phase removes the old phase's series, and
    moves the rollout from one phase to the other in ``modelrollout_rollouts{phase}``.
    Calling it again with the same phase keeps the earlier ``since`` unless one is given.
    """
    key = (namespace, name)
    with _lock:
        previous = _phase_of.get(key)
        if previous == phase and since is None:
            return
        if previous is not None and previous != phase:
            _remove(PHASE_SINCE, namespace, name, previous)
        _phase_of[key] = phase
        PHASE_SINCE.labels(namespace, name, phase).set(time.time() if since is None else since)
        if previous != phase:
            _count_phases()


def record_weight(namespace: str, name: str, weight: int | float) -> None:
    """The canary's current traffic weight in percent."""
    with _lock:
        _weighted.add((namespace, name))
        CANARY_WEIGHT.labels(namespace, name).set(weight)


def record_verdict(namespace: str, name: str, metric: str, verdict: str) -> None:
    """Count one analysis check: ``verdict`` is Pass, Fail or Inconclusive (any case)."""
    normalized = _normalize_verdict(verdict)
    with _lock:
        _verdict_keys.setdefault((namespace, name), set()).add((metric, normalized))
        ANALYSIS_VERDICTS.labels(namespace, name, metric, normalized).inc()


def record_analysis(namespace: str, name: str, verdicts: list[tuple[str, str]], lag_s: float | None) -> None:
    """One analysis ran: its ``(metric, verdict)`` pairs, and how late it was (None: nothing was due before)."""
    with _lock:
        ANALYSES.labels(namespace, name).inc()
        _verdict_keys.setdefault((namespace, name), set())
        if lag_s is not None:
            ANALYSIS_LAG.observe(max(0.0, lag_s))
    for metric, verdict in verdicts:
        record_verdict(namespace, name, metric, verdict)


def record_query(failed: bool) -> None:
    """One Prometheus query was sent; ``failed`` when it raised instead of answering."""
    PROMETHEUS_QUERIES.inc()
    if failed:
        PROMETHEUS_QUERY_ERRORS.inc()


def record_query_asked() -> None:
    """An analysis asked for one query (it may go out batched with others)."""
    PROMETHEUS_QUERIES_ASKED.inc()


def record_result(namespace: str, name: str, result: str, duration_s: float | None) -> None:
    """A rollout ended: ``result`` is "promoted" or "rolledback"; ``duration_s`` may be None."""
    normalized = result.lower().replace("_", "").replace("-", "").replace(" ", "")
    if normalized == "rolledback":
        counter = ROLLBACKS
    elif normalized == "promoted":
        counter = PROMOTIONS
    else:
        raise ValueError(f"result must be 'promoted' or 'rolledback', not {result!r}")
    with _lock:
        _counted.add((namespace, name))
        counter.labels(namespace, name).inc()
        if duration_s is not None and duration_s >= 0:
            ROLLOUT_DURATION.labels(result=normalized).observe(duration_s)


def forget(namespace: str, name: str) -> None:
    """Drop every per-rollout series of a deleted ModelRollout."""
    key = (namespace, name)
    with _lock:
        if key in _verdict_keys:
            _remove(ANALYSES, namespace, name)
        for metric, verdict in _verdict_keys.pop(key, set()):
            _remove(ANALYSIS_VERDICTS, namespace, name, metric, verdict)
        phase = _phase_of.pop(key, None)
        if phase is not None:
            _remove(PHASE_SINCE, namespace, name, phase)
            _count_phases()
        if key in _weighted:
            _weighted.discard(key)
            _remove(CANARY_WEIGHT, namespace, name)
        if key in _counted:
            _counted.discard(key)
            _remove(ROLLBACKS, namespace, name)
            _remove(PROMOTIONS, namespace, name)


def reset() -> None:
    """Forget every per-rollout series, which empties the phase census (tests, lab restarts)."""
    with _lock:
        keys = set(_verdict_keys) | set(_phase_of) | _weighted | _counted
    for namespace, name in keys:
        forget(namespace, name)


def exposition() -> str:
    """The registry in Prometheus text format, exactly as ``/metrics`` serves it."""
    return generate_latest(REGISTRY).decode("utf-8")


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> Any:
    """Serve ``REGISTRY`` on ``http://addr:port/metrics`` from a daemon thread.

    Returns what prometheus-client returns (the server and its thread), so a caller
    can ``server.shutdown()``. Port 0 picks a free port (``server.server_port``).
    """
    return start_http_server(port, addr=addr, registry=REGISTRY)


def _normalize_verdict(verdict: str) -> str:
    for known in VERDICTS:
        if verdict.lower() == known.lower():
            return known
    raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")


def _remove(metric: Any, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass
