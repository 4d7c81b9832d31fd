"""A plain FastAPI (or Starlette) app: count its prediction routes and serve `/metrics`.

    app = FastAPI()
    METRICS = ModelMetrics()
    instrument_app(app, METRICS, counted=lambda path: path.startswith("/predict"))

Every request whose path `counted` accepts counts once, under the status the app answered
(an exception that escapes the app counts as 500).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from . import ModelMetrics


def instrument_app(app, metrics: ModelMetrics, counted: Callable[[str], bool] = lambda path: path != "/metrics",
                   registry: CollectorRegistry = REGISTRY, metrics_path: str = "/metrics") -> None:
    from starlette.responses import Response  # FastAPI's own dependency

    @app.middleware("http")
    async def count_request(request, call_next):
        if not counted(request.url.path):
            return await call_next(request)
        start = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            metrics.answered(500, time.perf_counter() - start)
            raise
        metrics.answered(response.status_code, time.perf_counter() - start)
        return response

    def exposition(request):
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_route(metrics_path, exposition, methods=["GET"])
