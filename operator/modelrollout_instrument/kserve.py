"""KServe: count a `kserve.Model`'s predictions.

    import kserve
    from modelrollout_instrument import ModelMetrics
    from modelrollout_instrument.kserve import instrument_model

    METRICS = ModelMetrics()

    @instrument_model(METRICS)
    class Iris(kserve.Model):
        def predict(self, payload, headers=None): ...

KServe's ModelServer serves the default registry at `/metrics` on its HTTP port. Errors count
under the status KServe's exception handlers answer (kserve/errors.py): InvalidInput 400,
ModelNotFound 404, ModelNotReady 503, anything else 500.
"""

from __future__ import annotations

from collections.abc import Callable

from . import ModelMetrics, counting_requests, status_code_of

_STATUS_BY_ERROR = {"InvalidInput": 400, "ModelNotFound": 404, "ModelNotReady": 503,
                    "ServerNotReady": 503, "ServerNotLive": 503, "UnsupportedProtocol": 501}


def kserve_status(error: BaseException) -> int:
    """The status KServe answers for `error` (matched by class name: no kserve import needed)."""
    for cls in type(error).__mro__:
        if cls.__module__.startswith("kserve") and cls.__name__ in _STATUS_BY_ERROR:
            return _STATUS_BY_ERROR[cls.__name__]
    return status_code_of(error)


def instrument_model(metrics: ModelMetrics) -> Callable[[type], type]:
    return lambda model: counting_requests(model, "predict", metrics, kserve_status)
