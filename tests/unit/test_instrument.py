"""modelrollout_instrument: what a model server exports for the gates, registered once."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import pytest
from prometheus_client import CollectorRegistry, Gauge

from modelrollout_instrument import ModelMetrics, counting_requests

RUNTIME = '''
from modelrollout_instrument import ModelMetrics, counting_requests

REGISTRY = sys.modules["registry_for_the_test"]
METRICS = ModelMetrics(features=("a", "b"), registry=REGISTRY)

class Runtime:
    def predict(self, x):
        if x < 0:
            raise ValueError("negative")
        return x

counting_requests(Runtime, "predict", METRICS)
'''


def _import_fresh(path) -> object:
    """What MLServer does with a runtime's module: import it again, under a new module object."""
    spec = importlib.util.spec_from_file_location("runtime_module", path)
    module = importlib.util.module_from_spec(spec)
    module.sys = sys
    spec.loader.exec_module(module)
    return module


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_a_module_imported_twice_shares_its_collectors_instead_of_failing(tmp_path, monkeypatch) -> None:
    """MLServer re-imports a runtime's module: collectors created at import would raise
    DuplicateTimeseries the second time. Both copies count into the same series."""
    registry = CollectorRegistry()
    monkeypatch.setitem(sys.modules, "registry_for_the_test", registry)
    path = tmp_path / "runtime.py"
    path.write_text(RUNTIME)
    first, second = _import_fresh(path), _import_fresh(path)
    first.Runtime().predict(1)
    second.Runtime().predict(2)
    with pytest.raises(ValueError):
        second.Runtime().predict(-1)
    assert _value(registry, "http_requests_total", code="200") == 2
    assert _value(registry, "http_requests_total", code="500") == 1
    assert _value(registry, "http_request_duration_seconds_count") == 3


def test_a_class_wrapped_twice_counts_each_call_once() -> None:
    registry = CollectorRegistry()
    metrics = ModelMetrics(registry=registry)

    class Model:
        async def predict(self, x):
            return x

    counting_requests(counting_requests(Model, "predict", metrics), "predict", metrics)
    asyncio.run(Model().predict(1))
    assert _value(registry, "http_requests_total", code="200") == 1


def test_an_error_counts_under_the_status_the_server_answers() -> None:
    """A client's bad request (400) is not a server error (5xx): the error-rate gates count 5xx."""
    registry = CollectorRegistry()
    metrics = ModelMetrics(registry=registry)

    class BadRequest(Exception):
        status_code = 400

    for error in (BadRequest(), RuntimeError()):
        with pytest.raises(type(error)), metrics.request():
            raise error
    assert _value(registry, "http_requests_total", code="400") == 1
    assert _value(registry, "http_requests_total", code="500") == 1


def test_inputs_feedback_and_scores() -> None:
    registry = CollectorRegistry()
    metrics = ModelMetrics(features=("a", "b"), registry=registry)
    metrics.inputs([{"a": 0.5, "b": None}, {"a": float("nan"), "b": 0.1}, {"a": 0.9}])
    metrics.predictions([0.95, 0.4])
    metrics.feedback(correct=True)
    metrics.feedback(correct=False, count=3)
    assert _value(registry, "model_input_rows_total") == 3
    assert _value(registry, "model_input_feature_missing_total", feature="a") == 1
    assert _value(registry, "model_input_feature_missing_total", feature="b") == 2
    assert _value(registry, "model_input_feature_value_count", feature="a") == 2
    assert _value(registry, "model_input_feature_value_bucket", feature="a", le="0.5") == 1
    assert _value(registry, "model_prediction_score_count") == 2
    assert _value(registry, "model_feedback_total") == 4
    assert _value(registry, "model_feedback_correct_total") == 1


def test_a_name_taken_by_another_kind_of_collector_is_refused() -> None:
    registry = CollectorRegistry()
    Gauge("model_input_rows_total", "not a counter", registry=registry)
    with pytest.raises(ValueError, match="Gauge"):
        ModelMetrics(registry=registry)
