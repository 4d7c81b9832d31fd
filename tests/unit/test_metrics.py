"""The operator's metrics, checked through the text Prometheus scrapes."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelrollout import metrics


@pytest.fixture(autouse=True)
def _clean_registry():
    metrics.reset()
    yield
    metrics.reset()


def samples(name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """All samples called ``name`` in the exposition, keyed by their sorted labels."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(metrics.exposition()):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(series: str, /, **labels: str) -> float | None:
    return samples(series).get(tuple(sorted(labels.items())))


def test_every_phase_is_exported_and_a_census_replaces_the_last():
    assert {dict(k)["phase"] for k in samples("modelrollout_rollouts")} >= set(metrics.PHASES)
    metrics.set_phases({"Progressing": 3, "Succeeded": 10})
    assert value("modelrollout_rollouts", phase="Progressing") == 3
    assert value("modelrollout_rollouts", phase="Succeeded") == 10
    assert value("modelrollout_rollouts", phase="Paused") == 0
    metrics.set_phases({"Paused": 1})
    assert value("modelrollout_rollouts", phase="Progressing") == 0
    assert value("modelrollout_rollouts", phase="Paused") == 1


def test_canary_weight_gauge():
    metrics.record_weight("ml", "fraud", 5)
    metrics.record_weight("ml", "fraud", 25)
    metrics.record_weight("ml", "ranker", 50)
    assert value("modelrollout_canary_weight", namespace="ml", name="fraud") == 25
    assert value("modelrollout_canary_weight", namespace="ml", name="ranker") == 50


def test_verdicts_are_counted_per_metric_and_normalized():
    metrics.record_verdict("ml", "fraud", "error-rate", "Pass")
    metrics.record_verdict("ml", "fraud", "error-rate", "pass")
    metrics.record_verdict("ml", "fraud", "error-rate", "Fail")
    metrics.record_verdict("ml", "fraud", "latency-p95", "inconclusive")
    name = "modelrollout_analysis_verdicts_total"
    assert value(name, namespace="ml", name="fraud", metric="error-rate", verdict="Pass") == 2
    assert value(name, namespace="ml", name="fraud", metric="error-rate", verdict="Fail") == 1
    assert (
        value(name, namespace="ml", name="fraud", metric="latency-p95", verdict="Inconclusive")
        == 1
    )
    with pytest.raises(ValueError):
        metrics.record_verdict("ml", "fraud", "error-rate", "maybe")


def test_results_count_and_observe_duration():
    metrics.record_result("ml", "fraud", "promoted", 1200)
    metrics.record_result("ml", "fraud", "rolledback", 90)
    metrics.record_result("ml", "fraud", "RolledBack", None)
    assert value("modelrollout_promotions_total", namespace="ml", name="fraud") == 1
    assert value("modelrollout_rollbacks_total", namespace="ml", name="fraud") == 2
    hist = "modelrollout_rollout_duration_seconds"
    assert value(hist + "_count", result="promoted") == 1
    assert value(hist + "_sum", result="promoted") == 1200
    assert value(hist + "_count", result="rolledback") == 1  # None duration: counted, not observed
    assert value(hist + "_bucket", result="rolledback", le="120.0") == 1
    assert value(hist + "_bucket", result="rolledback", le="60.0") == 0
    with pytest.raises(ValueError):
        metrics.record_result("ml", "fraud", "exploded", 1)


def test_phase_since_keeps_one_series_per_rollout():
    metrics.record_phase("ml", "fraud", "Progressing", since=1000.0)
    metrics.record_phase("ml", "fraud", "Progressing")  # same phase: keeps the start time
    name = "modelrollout_rollout_phase_since_seconds"
    assert value(name, namespace="ml", name="fraud", phase="Progressing") == 1000.0
    metrics.record_phase("ml", "fraud", "Paused", since=2000.0)
    assert value(name, namespace="ml", name="fraud", phase="Progressing") is None
    assert value(name, namespace="ml", name="fraud", phase="Paused") == 2000.0


def test_forget_drops_only_that_rollouts_series():
    for rollout in ("fraud", "ranker"):
        metrics.record_weight("ml", rollout, 10)
        metrics.record_verdict("ml", rollout, "error-rate", "Pass")
        metrics.record_result("ml", rollout, "rolledback", 60)
        metrics.record_phase("ml", rollout, "RolledBack")
    metrics.forget("ml", "fraud")
    text = metrics.exposition()
    assert 'name="fraud"' not in text
    assert 'name="ranker"' in text
    for series in (
        "modelrollout_canary_weight",
        "modelrollout_analysis_verdicts_total",
        "modelrollout_rollbacks_total",
        "modelrollout_rollout_phase_since_seconds",
    ):
        assert [dict(k)["name"] for k in samples(series)] == ["ranker"], series
    metrics.forget("ml", "never-seen")  # harmless


def test_exposition_has_help_and_types():
    metrics.record_verdict("ml", "fraud", "error-rate", "Pass")
    text = metrics.exposition()
    assert "# TYPE modelrollout_analysis_verdicts_total counter" in text
    assert "# TYPE modelrollout_rollouts gauge" in text
    assert "# TYPE modelrollout_rollout_duration_seconds histogram" in text
    assert "# HELP modelrollout_canary_weight" in text


def test_metrics_server_serves_the_registry():
    metrics.record_weight("ml", "served", 42)
    server, thread = metrics.start_metrics_server(0, addr="127.0.0.1")
    try:
        port = server.server_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as rsp:
            body = rsp.read().decode()
        assert 'modelrollout_canary_weight{name="served",namespace="ml"} 42.0' in body
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
