"""Smoke test of the benchmark harness (benchmarks/): same code as `make bench`, tiny sizes.

Asserts only that the harness produces complete records (fields present, numbers finite),
never the figures themselves: those are what `make bench` reports.
"""

from __future__ import annotations

import math
import os
import shutil

import pytest

from benchmarks import harness, run, specs

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None and not os.path.exists("/usr/bin/prometheus"),
                                reason="needs Debian's prometheus")

RECORD_FIELDS = ("scenario", "policy", "outcome", "seconds_to_weight0", "bad_requests", "canary_requests_to_decide",
                 "floor_requests", "seconds_to_decide", "max_weight")
SCALE_FIELDS = ("lag_s", "operator_peak_rss_mib", "operator_cpu_seconds", "cpu_ms_per_rollout_interval",
                "api_requests_per_interval", "prometheus_queries_per_interval", "release_reaction_s")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_bad_scenario_both_policies_and_small_scale(tmp_path) -> None:
    records = harness.run_behaviour([specs.SCENARIOS["errors"]], runs=1, workdir=str(tmp_path / "lab"))
    assert {r.policy for r in records} == {"ours", "baseline"}
    for record in records:
        data = record.as_dict()
        for name in RECORD_FIELDS:
            assert name in data, name
        assert data["outcome"] in ("promoted", "rolled_back", "undecided")
        for name in ("bad_requests", "floor_requests", "max_weight"):
            assert _finite(data[name]), (name, data)
        if data["outcome"] != "undecided":
            assert _finite(data["seconds_to_decide"]) and _finite(data["canary_requests_to_decide"]), data
        if data["outcome"] == "rolled_back":
            assert _finite(data["seconds_to_weight0"]), data
    rows = harness.summarize(records)
    assert len(rows) == 2 and len(harness.ratios(rows)) == 1

    scale = harness.run_scale(10, window=12.0, workdir=str(tmp_path / "scale"), setup_timeout=60.0)
    assert scale["complete"], scale
    for name in SCALE_FIELDS:
        assert name in scale, name
    for name in ("operator_peak_rss_mib", "operator_cpu_seconds", "api_requests_per_interval",
                 "prometheus_queries_per_interval"):
        assert _finite(scale[name]), (name, scale)
    assert _finite(scale["lag_s"]["p99"]) and _finite(scale["release_reaction_s"]["p50"]), scale

    md = run.markdown(run._clean({"machine": harness.machine(), "finished": "now", "command": "smoke", "seconds": 1.0,
                                  "scenarios": rows, "ratios": harness.ratios(rows), "scale": [scale]}))
    assert "## Scale" in md and "errors" in md
