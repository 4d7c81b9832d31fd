"""Smoke test of the benchmark harness (benchmarks/): same code as `make bench`, tiny sizes.

Asserts only that the harness produces complete records (fields present, numbers finite),
never the figures themselves: those are what `make bench` reports.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil

import pytest

from benchmarks import harness, run, simulate, specs

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None and not os.path.exists("/usr/bin/prometheus"),
                                reason="needs Debian's prometheus")

RECORD_FIELDS = ("scenario", "policy", "outcome", "seconds_to_weight0", "bad_requests", "canary_requests_to_decide",
                 "floor_requests", "seconds_to_decide", "max_weight", "time_scale", "paused")
SCALE_FIELDS = ("lag_s", "operator_peak_rss_mib", "operator_cpu_seconds", "cpu_ms_per_rollout_interval",
                "api_requests_per_interval", "prometheus_queries_per_interval", "release_reaction_s")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_bad_scenario_at_both_cadences_the_targets_and_small_scale(tmp_path) -> None:
    """One lab: the errors scenario for ours and the baseline at the same clock, and for ours-default,
    Flagger and Argo at real cadence for 15 lab seconds (3.75 real minutes); the simulations at a few
    runs and the targets table; then 5 rollouts at scale."""
    real_errors = dataclasses.replace(specs.real_cadence(specs.SCENARIOS["errors"]), timeout=15.0)
    records = harness.run_behaviour([(specs.SCENARIOS["errors"], harness.SAME_CLOCK),
                                     (real_errors, harness.REAL_CADENCE)], workdir=str(tmp_path / "lab"))
    assert {r.policy for r in records} == {"ours", "baseline", "ours-default", "flagger", "argo"}
    for record in records:
        data = record.as_dict()
        for name in RECORD_FIELDS:
            assert name in data, name
        assert data["outcome"] in ("promoted", "rolled_back", "undecided")
        assert data["time_scale"] == (specs.COMPRESSION if data["policy"] in harness.REAL_CADENCE else 1.0)
        for name in ("bad_requests", "floor_requests", "max_weight"):
            assert _finite(data[name]), (name, data)
        if data["outcome"] != "undecided":
            assert _finite(data["seconds_to_decide"]) and _finite(data["canary_requests_to_decide"]), data
        if data["outcome"] == "rolled_back":
            assert _finite(data["seconds_to_weight0"]), data
    rows = harness.summarize(records)
    assert len(rows) == 5 and len(harness.ratios(rows)) == 1
    for row in rows:
        if row["seconds_to_weight0"] is not None:
            assert row["real_seconds_to_weight0"] == pytest.approx(row["seconds_to_weight0"] * row["time_scale"])
    real_rows = [r for r in rows if r["policy"] in harness.REAL_CADENCE]
    real_ratios = harness.ratios(real_rows, ours="ours-default", baseline="flagger")
    assert len(real_ratios) == 1

    sim = {"catch": simulate.requests_to_catch(runs=5), "healthy": simulate.healthy_rollouts(runs=5)}
    assert _finite(sim["catch"]["median_requests"]) and _finite(sim["catch"]["wald_bound"]), sim
    targets = run.targets(real_rows, None, sim)
    assert targets[0]["target"].startswith("errors: >= 3x fewer bad requests")
    assert all(t["met"] in (True, False) for t in targets), targets

    scale = harness.run_scale(5, window=6.0, workdir=str(tmp_path / "scale"), setup_timeout=60.0, interval=2.0)
    assert scale["complete"], scale
    for name in SCALE_FIELDS:
        assert name in scale, name
    for name in ("operator_peak_rss_mib", "operator_cpu_seconds", "api_requests_per_interval",
                 "prometheus_queries_per_interval"):
        assert _finite(scale[name]), (name, scale)
    assert _finite(scale["lag_s"]["p99"]) and _finite(scale["release_reaction_s"]["p50"]), scale

    md = run.markdown(run._clean({
        "machine": harness.machine(), "finished": "now", "command": "smoke", "seconds": 1.0,
        "scenarios": [r for r in rows if r["policy"] in harness.SAME_CLOCK], "ratios": harness.ratios(rows),
        "real_cadence": {"settings": run.REAL_SETTINGS, "scenarios": real_rows, "ratios": real_ratios},
        "targets": targets, "scale": [scale]}))
    assert "## Scale" in md and "## Real cadence" in md and "## Targets" in md and "ours-default" in md
