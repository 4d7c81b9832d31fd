"""The demo's PNG timeline draws each metric's threshold on its panel (real Prometheus, drawn by matplotlib)."""
from __future__ import annotations

import time

import matplotlib.image
import numpy as np
import pytest

from modelrollout_lab.demo import METRICS, Mark, Recording
from modelrollout_lab.prometheus import PrometheusServer
from modelrollout_lab.timeline import COLOURS, draw_timeline, thresholds


def test_thresholds_come_from_the_spec_metrics():
    assert thresholds(METRICS) == {"error-rate": [("max", 0.01)], "latency-p95": [("max", 0.25)],
                                   "quality": [("min", 0.85)]}


def _rows_with(image: np.ndarray, colour: str) -> np.ndarray:
    """Row indexes holding pixels of `colour` (#rrggbb)."""
    rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    hits = np.all(np.abs(image[:, :, :3] - rgb) < 0.06, axis=2)
    return np.nonzero(hits.sum(axis=1) > 20)[0]


@pytest.mark.parametrize("metrics, panels_with_lines", [(METRICS, 3), ([], 0)])
def test_each_metric_panel_gets_its_threshold_line(tmp_path, metrics, panels_with_lines):
    with PrometheusServer([]) as prometheus:
        recording = Recording(started=time.time() - 20, weights=[(0.0, 0), (5.0, 10), (12.0, 30), (18.0, 0)],
                              marks=[Mark(18.0, "3.0.0 RolledBack", "rolledback")])
        path = tmp_path / "timeline.png"
        draw_timeline(prometheus, "fraud-detector", recording, str(path), metrics)
    image = matplotlib.image.imread(str(path))
    assert image.shape[:2] == (1000, 1200)  # figsize 12x10 at 100 dpi
    rows = _rows_with(image, COLOURS["threshold"])
    # One horizontal line per metric panel: the four panels split the height in quarters (weights first).
    quarters = sorted({int(row * 4 / image.shape[0]) for row in rows})
    assert quarters == [1, 2, 3][:panels_with_lines]
