"""BentoML 1.4: count a service's API calls.

    import bentoml
    from modelrollout_instrument import ModelMetrics
    from modelrollout_instrument.bentoml import counted_api

    METRICS = ModelMetrics()

    @bentoml.service
    class Iris:
        @bentoml.api
        @counted_api(METRICS)
        async def predict(self, instances: list[list[float]]) -> list[int]: ...

BentoML serves `/metrics` on the service's port, gathering its workers' series from
PROMETHEUS_MULTIPROC_DIR, which it sets before the workers import the service: collectors made
with ModelMetrics there are among them. Errors count under BentoMLException's `error_code`
(BadInput 400, NotFound 404, ...), anything else as 500.
"""

from __future__ import annotations

from collections.abc import Callable

from . import ModelMetrics, counted, status_code_of


def bentoml_status(error: BaseException) -> int:
    code = getattr(error, "error_code", None)
    return int(code) if code is not None and 100 <= int(code) <= 599 else status_code_of(error)


def counted_api(metrics: ModelMetrics) -> Callable[[Callable], Callable]:
    return lambda function: counted(function, metrics, bentoml_status)
