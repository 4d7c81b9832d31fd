"""A PNG timeline of a lab story: canary weight, error rate, p95 latency and quality per revision, each
metric's panel with the threshold the rollout judges it by."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WINDOW = "5s"
COLOURS = {"step": "#888888", "promoted": "#2e7d32", "rolledback": "#c62828", "start": "#1565c0",
           "threshold": "#d81b60"}


def _range(prometheus: Any, expr: str, start: float, end: float) -> dict[str, list[tuple[float, float]]]:
    """One range query, step 1s: {revision: [(t, value), ...]} with NaN dropped."""
    result = prometheus.api("query_range", query=expr, start=start, end=end, step="1s")["result"]
    series: dict[str, list[tuple[float, float]]] = {}
    for item in result:
        label = item["metric"].get("model_version") or item["metric"].get("revision", "?")
        points = [(float(t) - start, float(v)) for t, v in item["values"] if not math.isnan(float(v))]
        series.setdefault(label, []).extend(points)
    return series


def thresholds(metrics: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[str, float]]]:
    """{metric name: [("max", 0.01), ...]}: the bounds a ModelRollout's spec.analysis.metrics set."""
    return {m["name"]: [(bound, float(m[bound])) for bound in ("min", "max") if m.get(bound) is not None]
            for m in metrics}


def draw_timeline(prometheus: Any, rollout: str, recording: Any, path: str,
                  metrics: Sequence[Mapping[str, Any]] = ()) -> None:
    """`metrics`: the rollout's spec.analysis.metrics; each one's min/max is drawn on its panel."""
    start, end = recording.started, time.time()
    sel = f'rollout="{rollout}"'
    by = "model_version"
    bounds = thresholds(metrics)
    panels = [  # (metric name in the spec, axis title, query)
        ("error-rate", "error rate", f"sum by ({by}) (rate(http_requests_total{{{sel},code=~\"5..\"}}[{WINDOW}]))"
                       f" / sum by ({by}) (rate(http_requests_total{{{sel}}}[{WINDOW}]))"),
        ("latency-p95", "p95 latency (s)", f"histogram_quantile(0.95, sum by ({by}, le) "
                            f"(rate(http_request_duration_seconds_bucket{{{sel}}}[{WINDOW}])))"),
        ("quality", "quality (accuracy)", f"sum by ({by}) (rate(model_feedback_correct_total{{{sel}}}[15s]))"
                               f" / sum by ({by}) (rate(model_feedback_total{{{sel}}}[15s]))"),
    ]
    fig, axes = plt.subplots(len(panels) + 1, 1, figsize=(12, 10), sharex=True)
    times = [t for t, _ in recording.weights]
    weights = [w for _, w in recording.weights]
    axes[0].step(times, weights, where="post", color="#6a1b9a", linewidth=2)
    axes[0].set_ylabel("canary weight %")
    axes[0].set_ylim(-5, 105)
    axes[0].set_title(f"ModelRollout {rollout}: every decision from Prometheus, in the lab")
    for ax, (metric, title, expr) in zip(axes[1:], panels):
        for version, points in sorted(_range(prometheus, expr, start, end).items()):
            if points:
                ax.plot([t for t, _ in points], [v for _, v in points], label=f"v{version}")
        for bound, value in bounds.get(metric, []):
            ax.axhline(value, color=COLOURS["threshold"], linestyle=":", linewidth=1.4,
                       label=f"{metric} {bound} {value:g}")
        ax.set_ylabel(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=8)
    for ax in axes:
        for mark in recording.marks:
            ax.axvline(mark.at, color=COLOURS[mark.kind], linestyle="--" if mark.kind == "step" else "-",
                       linewidth=0.8 if mark.kind == "step" else 1.6, alpha=0.7)
    for mark in recording.marks:
        if mark.kind != "step":
            axes[0].annotate(mark.label, (mark.at, 100), rotation=90, fontsize=8, va="top", ha="right",
                             color=COLOURS[mark.kind])
    axes[-1].set_xlabel("seconds since the demo started")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
