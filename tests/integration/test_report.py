"""`kubectl modelrollout report` on a lab release that was rolled back: every section, the numbers equal
to the status and to what Prometheus answers for the printed queries, and the PNG with thresholds."""

from __future__ import annotations

import re
import struct
import time
import sys

import httpx
import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner

from lab_watch import start_stable
from modelrollout.plugin import main as plugin
from modelrollout.report import PNG_SIZE
from modelrollout_lab import scenarios
from modelrollout_lab.prometheus import free_port

pytestmark = pytest.mark.lab

SAMPLED = {"rps": 400, "min_samples": 300}
METRICS_PORT = free_port()
OPERATOR_ARGS = ("--metrics-port", str(METRICS_PORT))  # the lab's Prometheus scrapes the operator too
METRICS = [{"name": "error-rate", "max": 0.01, "critical": True}, {"name": "latency-p95", "max": 0.2}]


def report(lab, *args):
    return CliRunner().invoke(plugin, ["report", "reported", *args, "--kubeconfig", lab.kubeconfig],
                              catch_exceptions=False)


def prometheus_value(lab, query, at):
    answer = httpx.get(f"{lab.prometheus.url}/api/v1/query", params={"query": query, "time": at}).json()
    return sum(float(r["value"][1]) for r in answer["data"]["result"])


@pytest.fixture(scope="module")
def rolled_back(lab):
    lab.prometheus.add_target(f"127.0.0.1:{METRICS_PORT}")
    v1 = start_stable(lab, "reported", metrics=METRICS, **SAMPLED)
    v2 = scenarios.release(v1, "2.0.0", {"error-rate": "0.05"})
    v2["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "BATCH", "value": "64"}]
    lab.apply(v2)
    status = lab.wait_for_phase("reported", "RolledBack", timeout=60)
    time.sleep(3)  # Prometheus scrapes past the decision: counts at its time are final
    return status


def test_report_of_a_rolled_back_release(lab, rolled_back, tmp_path):
    status = rolled_back
    png = tmp_path / "reported.png"
    result = report(lab, "--prometheus-url", lab.prometheus.url, "--png", str(png))
    assert result.exit_code == 0, result.output
    text = result.output
    for section in ("# Incident report: default/reported", "## 1. What changed", "## 2. Timeline", "## 3. Evidence",
                    "## 4. Impact", "## 5. Chart", "## Worksheet"):
        assert section in text
    entry = status["history"][0]
    assert f"revision {entry['revision']}: RolledBack" in text and entry["reason"] in text

    # What changed: image, env and the model's behaviour annotation, stable against canary.
    assert "| `containers[server].image` | `example/reported:1.0.0` | `example/reported:2.0.0` |" in text
    assert "| `containers[server].env.BATCH` | `-` | `64` |" in text
    assert "| `annotations.lab.modelrollout.io/error-rate` | `0.001` | `0.05` |" in text

    # Timeline: the apply, each step, the decision and who took it.
    assert "canary started | a spec change (kubectl apply / GitOps)" in text
    assert "Normal StepStarted" in text and f"decision: RolledBack: {entry['reason']} | the operator" in text
    # ... and every analysis's verdicts, from the operator's counters in Prometheus, the last one the failure.
    analyses = re.findall(r"^\| \S+ \| [0-9.]+ \| analysis: (.+?) \| the operator \(analysis\) \|$", text, re.MULTILINE)
    assert analyses and "error-rate Fail" in analyses[-1] and "latency-p95 Pass" in analyses[-1], text
    assert all("error-rate Fail" not in row for row in analyses[:-1])  # one critical failure rolls back

    # Evidence: exactly status.lastAnalysis.
    for result_ in status["lastAnalysis"]:
        assert f"### {result_['metric']}: {result_['verdict']}" in text
        assert f"threshold **{result_['threshold']}**" in text
        assert f"```promql\n{result_['query']}\n```" in text
    (failing,) = [r for r in status["lastAnalysis"] if r["verdict"] == "Fail"]
    assert f"value **{failing['value']:.6g}**" in text and f"samples **{failing['samples']:.6g}**" in text

    # Impact: each count equals Prometheus's answer to the printed query at the printed time.
    at = re.search(r"`time=([0-9.]+)`", text).group(1)
    rows = re.findall(r"^\| (canary [^|]+) \| ([0-9.e+-]+) \| `(.+)` \|$", text, re.MULTILINE)
    assert {row[0] for row in rows} == {"canary requests served", "canary bad events (error-rate)"}
    for label, count, query in rows:  # printed to 6 significant digits (increase() extrapolates: not whole)
        assert float(count) == pytest.approx(prometheus_value(lab, query.replace("\\|", "|"), at), rel=5e-6), label
    counted = {label: float(count) for label, count, _ in rows}
    # The whole release covers the last window, but increase() over it cannot see what the canary's
    # series counted before its first scrape (a shorter window extrapolates over it): ~1 s of traffic.
    assert counted["canary requests served"] >= failing["samples"] * 0.9
    assert 0 < counted["canary bad events (error-rate)"] < counted["canary requests served"]

    # The PNG: valid, the expected size (a weights panel plus one per threshold metric).
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (PNG_SIZE[0], PNG_SIZE[1] * (1 + len(METRICS)))  # weights + each metric
    # Each metric's panel carries its threshold: one horizontal dashed line each in the threshold colour, below
    # the weights panel (the top one).
    image = matplotlib.image.imread(str(png))
    threshold = np.array([0xD6, 0x27, 0x28]) / 255  # matplotlib's tab:red
    rows = np.nonzero((np.all(np.abs(image[:, :, :3] - threshold) < 0.06, axis=2)).sum(axis=1) > PNG_SIZE[0] / 4)[0]
    lines = [run for run in np.split(rows, np.nonzero(np.diff(rows) > 3)[0] + 1) if len(run)]
    assert len(lines) == len(METRICS) and rows.min() > PNG_SIZE[1], rows
    assert f"![timeline]({png})" in text
    assert "step weights (the operator's modelrollout_canary_weight in Prometheus)" in text


def test_the_report_after_the_events_expired_still_has_the_step_weights(lab, rolled_back, tmp_path):
    """After the fact: the rollout's events are gone (1 h by default), Prometheus still has the weights."""
    for event in lab.core.list_namespaced_event("default").items:
        lab.core.delete_namespaced_event(event.metadata.name, "default")
    png = tmp_path / "later.png"
    result = report(lab, "--prometheus-url", lab.prometheus.url, "--png", str(png))
    assert result.exit_code == 0, result.output
    assert "Normal StepStarted" not in result.output  # the events are gone indeed
    assert "| canary weight 20% (modelrollout_canary_weight, as Prometheus scraped it) | the operator |" in result.output
    assert "step weights (the operator's modelrollout_canary_weight in Prometheus)" in result.output
    # The weights panel (the top one) draws the step: its line at two heights, 0 and the step's 20 %.
    image = matplotlib.image.imread(str(png))[:PNG_SIZE[1]]
    weight = np.array([0x1F, 0x77, 0xB4]) / 255  # matplotlib's tab:blue
    rows = np.nonzero((np.all(np.abs(image[:, :, :3] - weight) < 0.06, axis=2)).sum(axis=1) > 50)[0]
    assert len(np.split(rows, np.nonzero(np.diff(rows) > 3)[0] + 1)) == 2, rows


def test_report_without_matplotlib_says_how_to_install_it(lab, rolled_back, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    png = tmp_path / "none.png"
    result = report(lab, "--png", str(png), "--prometheus-url", lab.prometheus.url)
    assert result.exit_code == 1 and not png.exists()
    assert "## 4. Impact" in result.output  # the report is still printed
    assert "pip install 'modelrollout[lab]'" in result.output
