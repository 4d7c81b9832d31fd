"""The operator's metrics, checked through the text Prometheus scrapes."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelrollout import metrics
from modelrollout.providers import ProviderError
from modelrollout.providers.prometheus import PrometheusProvider


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


def test_rollouts_per_phase_move_with_each_rollouts_phase_and_its_deletion():
    """modelrollout_rollouts{phase} counts rollouts by their last recorded phase (it was never set: always 0)."""
    assert {dict(k)["phase"]: v for k, v in samples("modelrollout_rollouts").items()} == dict.fromkeys(metrics.PHASES, 0)
    metrics.record_phase("ml", "fraud", "Progressing")
    metrics.record_phase("ml", "ranker", "Progressing")
    metrics.record_phase("search", "fraud", "Paused")
    assert value("modelrollout_rollouts", phase="Progressing") == 2
    assert value("modelrollout_rollouts", phase="Paused") == 1
    metrics.record_phase("ml", "fraud", "RolledBack")
    metrics.record_phase("ml", "fraud", "RolledBack", since=1000.0)  # the same phase again: no double count
    assert value("modelrollout_rollouts", phase="Progressing") == 1
    assert value("modelrollout_rollouts", phase="RolledBack") == 1
    metrics.forget("ml", "fraud")
    assert value("modelrollout_rollouts", phase="RolledBack") == 0
    assert sum(samples("modelrollout_rollouts").values()) == 2


def test_an_analysis_counts_itself_its_verdicts_and_its_lag():
    lag_before = value("modelrollout_analysis_lag_seconds_count") or 0
    metrics.record_analysis("ml", "fraud", [("error-rate", "Pass"), ("latency-p95", "Inconclusive")], lag_s=0.3)
    metrics.record_analysis("ml", "fraud", [("error-rate", "Fail")], lag_s=None)  # first of a step: nothing was due
    assert value("modelrollout_analyses_total", namespace="ml", name="fraud") == 2
    assert value("modelrollout_analysis_verdicts_total", namespace="ml", name="fraud", metric="error-rate",
                 verdict="Fail") == 1
    assert value("modelrollout_analysis_lag_seconds_count") == lag_before + 1
    metrics.forget("ml", "fraud")
    assert samples("modelrollout_analyses_total") == {}


async def test_a_prometheus_query_that_fails_is_counted_as_an_error():
    queries = value("modelrollout_prometheus_queries_total") or 0
    errors = value("modelrollout_prometheus_query_errors_total") or 0
    provider = PrometheusProvider("http://127.0.0.1:1", timeout=1.0)  # nothing listens on port 1
    try:
        with pytest.raises(ProviderError):
            await provider.run_query("up")
    finally:
        provider.close()
    metrics.record_query(failed=False)
    assert value("modelrollout_prometheus_queries_total") == queries + 2
    assert value("modelrollout_prometheus_query_errors_total") == errors + 1


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
    hist = "modelrollout_rollout_duration_seconds"
    # The duration histogram is labelled by result only: other tests in this process add to it.
    series = [(hist + "_count", {"result": "promoted"}), (hist + "_sum", {"result": "promoted"}),
              (hist + "_count", {"result": "rolledback"}), (hist + "_bucket", {"result": "rolledback", "le": "120.0"}),
              (hist + "_bucket", {"result": "rolledback", "le": "60.0"})]
    before = [value(name, **labels) or 0.0 for name, labels in series]
    metrics.record_result("ml", "fraud", "promoted", 1200)
    metrics.record_result("ml", "fraud", "rolledback", 90)
    metrics.record_result("ml", "fraud", "RolledBack", None)
    assert value("modelrollout_promotions_total", namespace="ml", name="fraud") == 1
    assert value("modelrollout_rollbacks_total", namespace="ml", name="fraud") == 2
    added = [value(name, **labels) - old for (name, labels), old in zip(series, before)]
    # promoted: one of 1200 s; rolledback: one of 90 s (a None duration is counted, not observed)
    assert added == [1, 1200, 1, 1, 0]
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
