"""MLServer: count a runtime's predictions.

    from mlserver import MLModel
    from modelrollout_instrument import ModelMetrics
    from modelrollout_instrument.mlserver import instrument_runtime

    METRICS = ModelMetrics(features=("petal_length", "petal_width"))

    @instrument_runtime(METRICS)
    class Iris(MLModel):
        async def predict(self, payload): ...

MLServer serves the default registry on its metrics port (8082, `/metrics`) next to its own
series. A failed prediction counts under MLServerError's `status_code` (400 for a bad request),
anything else as 500. Use `parallel_workers: 0`, or set PROMETHEUS_MULTIPROC_DIR as MLServer's
docs say, for the workers' counts to reach the metrics port.
"""

from __future__ import annotations

from collections.abc import Callable

from . import ModelMetrics, counting_requests


def instrument_runtime(metrics: ModelMetrics) -> Callable[[type], type]:
    return lambda runtime: counting_requests(runtime, "predict", metrics)
