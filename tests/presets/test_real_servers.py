"""The presets against real model servers: MLServer 1.7.1, KServe 0.21's Python ModelServer, a
plain FastAPI app and a BentoML 1.4 service, each with modelrollout_instrument's adapter.

Each server runs from its own venv (`make servers`) on loopback, serving the lab's iris
model instrumented with modelrollout_instrument and slowed to 0.2 s a prediction. A real
Prometheus scrapes it with the labels a PodMonitor adds (namespace, pod, rollout, revision). The
test sends good requests (some with labels, one in four wrongly labelled), failing ones (a
negative measurement makes the model raise: HTTP 500) and, for KServe, rows with a missing
feature (also to FastAPI and BentoML); then every entry of the server's preset, and the `http` preset's entries that read the
library's series, must return what was sent: errors as errors, latencies in seconds.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from test_presets import NAME, NAMESPACE, _spec

from modelrollout.analysis import measure
from modelrollout.core import ts
from modelrollout.providers.prometheus import PrometheusProvider
from modelrollout.spec import load_preset
from modelrollout.status import RolloutStatus
from modelrollout_lab import model_servers
from modelrollout_lab.model_servers import ModelServer
from modelrollout_lab.prometheus import PrometheusServer

pytestmark = pytest.mark.lab

REVISION = "5e7e5e7e5e"
DELAY = 0.2
GOOD, FAILING, MISSING = 80, 8, 20  # requests of one row each
GRPC = 40  # more good requests to MLServer, over gRPC
ROWS = [([5.1, 3.5, 1.4, 0.2], 0), ([7.0, 3.2, 4.7, 1.4], 1), ([6.3, 3.3, 6.0, 2.5], 2), ([5.0, 3.4, 1.5, 0.2], 0)]
BROKEN = [-1.0, 3.0, 1.0, 0.2]


def _post(url: str, body: dict) -> int:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def _mlserver_request(server: ModelServer, row: list[float | None], label: int | None) -> int:
    inputs = [{"name": "features", "datatype": "FP64", "shape": [1, 4], "data": row}]
    if label is not None:
        inputs.append({"name": "labels", "datatype": "INT64", "shape": [1], "data": [label]})
    return _post(f"{server.url}/v2/models/iris/infer", {"inputs": inputs})


def _v1_body(row: list[float | None], label: int | None) -> dict:
    return {"instances": [row]} if label is None else {"instances": [row], "labels": [label]}


def _kserve_request(server: ModelServer, row: list[float | None], label: int | None) -> int:
    return _post(f"{server.url}/v1/models/iris:predict", _v1_body(row, label))


def _predict_request(server: ModelServer, row: list[float | None], label: int | None) -> int:
    """FastAPI's and BentoML's /predict."""
    return _post(f"{server.url}/predict", _v1_body(row, label))


Send = Callable[[ModelServer, list, int | None], int]


def _traffic(server: ModelServer, send: Send, missing: bool) -> list[int]:
    """The test's requests; labels on the good ones, every fourth one wrong."""
    calls = [(ROWS[i % 4][0], (ROWS[i % 4][1] + (1 if i % 4 == 3 else 0)) % 3) for i in range(GOOD)]
    calls += [(BROKEN, None)] * FAILING
    if missing:
        calls += [([5.9, None, 4.2, 1.3], None)] * MISSING
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda call: send(server, *call), calls))


def _scraped_again(prometheus: PrometheusServer, scrapes: int = 3) -> None:
    """Until Prometheus has scraped `scrapes` more times (what was sent is in its data)."""
    done = prometheus.query("count_over_time(up[1m])")
    prometheus.wait_for_scrapes(int(float(done[0]["value"][1])) + scrapes if done else scrapes, timeout=30)


def _served(start: Callable[..., object], send: Send, missing: bool,
            grpc: int = 0) -> Iterator[tuple[PrometheusServer, datetime]]:
    with start(delay=DELAY) as server:
        labels = {"namespace": NAMESPACE, "rollout": NAME, "revision": REVISION, "pod": f"{NAME}-{REVISION}-0"}
        prometheus = PrometheusServer([server.metrics_target], target_labels={server.metrics_target: labels}).start()
        try:
            # One of each kind first, so that every series exists before the counted requests.
            assert send(server, *ROWS[0]) == 200 and send(server, BROKEN, None) == 500
            if missing:
                assert send(server, [5.9, None, 4.2, 1.3], None) == 200
            if grpc:
                assert server.grpc_requests(1) == 1
            _scraped_again(prometheus)
            started = datetime.now(UTC)
            statuses = _traffic(server, send, missing)
            assert statuses.count(500) == FAILING and statuses.count(200) == len(statuses) - FAILING
            assert not grpc or server.grpc_requests(grpc) == grpc
            _scraped_again(prometheus, 8)  # a window of ~10 s: increase() extrapolates by 10-20 %
            yield prometheus, started
        finally:
            prometheus.stop()


@pytest.fixture(scope="module")
def mlserver(prometheus_binary) -> Iterator[tuple[PrometheusServer, datetime]]:
    if model_servers.server_python("mlserver") is None:
        pytest.skip("no .venv-servers/mlserver (make servers)")
    yield from _served(model_servers.mlserver, _mlserver_request, missing=False, grpc=GRPC)


@pytest.fixture(scope="module")
def kserve(prometheus_binary) -> Iterator[tuple[PrometheusServer, datetime]]:
    if model_servers.server_python("kserve") is None:
        pytest.skip("no .venv-servers/kserve (make servers)")
    yield from _served(model_servers.kserve, _kserve_request, missing=True)


@pytest.fixture(scope="module")
def fastapi(prometheus_binary) -> Iterator[tuple[PrometheusServer, datetime]]:
    if model_servers.server_python("kserve") is None:
        pytest.skip("no .venv-servers/kserve (make servers)")
    yield from _served(model_servers.fastapi_app, _predict_request, missing=True)


@pytest.fixture(scope="module")
def bentoml(prometheus_binary) -> Iterator[tuple[PrometheusServer, datetime]]:
    if model_servers.server_python("bentoml") is None:
        pytest.skip("no .venv-servers/bentoml (make servers)")
    yield from _served(model_servers.bentoml_service, _predict_request, missing=True)


async def _measured(served: tuple[PrometheusServer, datetime], preset: str, metrics: list[str]) -> dict:
    prometheus, started = served
    spec = _spec(preset, metrics)
    begun = ts(started - timedelta(seconds=1))
    status = RolloutStatus.parse({"phase": "Progressing", "canaryRevision": REVISION, "stableRevision": "0000000000",
                                  "currentStep": 0, "canaryWeight": 10, "canaryReadyAt": begun, "stepStartedAt": begun})
    provider = PrometheusProvider(prometheus.url, timeout=5)
    try:
        samples = await measure(spec, NAMESPACE, NAME, status, provider, datetime.now(UTC))
    finally:
        provider.close()
    assert not [s for s in samples if s.error], samples
    return {sample.metric: sample for sample in samples}


def _counts(sample, bad: float, total: float) -> None:
    """(bad, total) as sent; Prometheus' increase() extrapolates to the window's edges (up to a
    scrape interval more at each end of a few seconds' window), the fraction stays."""
    assert sample.canary_counts is not None, sample
    measured_bad, measured_total = sample.canary_counts
    assert measured_total == pytest.approx(total, rel=0.25), sample
    assert measured_bad / measured_total == pytest.approx(bad / total, rel=0.25), sample


async def test_mlserver_preset_against_mlserver(mlserver) -> None:
    """REST and gRPC clients: MLServer counts both in its inference counters, but times them in
    two histograms (starlette_exporter's for REST, py-grpc-prometheus' for gRPC)."""
    measured = await _measured(mlserver, "mlserver", list(load_preset("mlserver")["metrics"]))
    _counts(measured["error-rate"], FAILING, GOOD + FAILING + GRPC)
    assert DELAY <= measured["latency-p95"].value <= 0.5, measured["latency-p95"]   # seconds, not ms
    assert measured["latency-p95"].samples == pytest.approx(GOOD + FAILING + GRPC, rel=0.25), measured["latency-p95"]
    assert DELAY <= measured["latency-avg"].value <= DELAY + 0.1, measured["latency-avg"]


async def test_kserve_preset_against_kserve_modelserver(kserve) -> None:
    """RawDeployment mode: no queue-proxy, so error-rate and app-latency-p95 have no data here
    (docs/presets.md); the ModelServer's own series and the library's outcomes do."""
    measured = await _measured(kserve, "kserve", ["server-error-rate", "latency-p95"])
    _counts(measured["server-error-rate"], FAILING, GOOD + FAILING + MISSING)
    assert DELAY <= measured["latency-p95"].value <= 0.5, measured["latency-p95"]
    assert measured["latency-p95"].samples == pytest.approx(GOOD + FAILING + MISSING, rel=0.25)


@pytest.mark.parametrize("served", ["mlserver", "kserve", "fastapi", "bentoml"])
async def test_library_series_answer_the_http_presets_quality_drift_and_input_gates(request, served: str) -> None:
    # MLServer's JSON tensors have no null, and it also answers gRPC (unlabelled) requests
    missing = MISSING if served != "mlserver" else 0
    grpc = GRPC if served == "mlserver" else 0
    measured = await _measured(request.getfixturevalue(served), "http",
                               ["error-rate", "latency-p95", "quality", "prediction-drift",
                                "input-missing-rate", "input-drift"])
    rows = GOOD + FAILING + missing + grpc
    _counts(measured["error-rate"], FAILING, rows)
    assert DELAY <= measured["latency-p95"].value <= 0.5, measured["latency-p95"]
    _counts(measured["quality"], GOOD / 4, GOOD)  # one label in four is wrong
    predicted = rows - FAILING  # imputed rows are predicted too; failing ones are not
    assert measured["prediction-drift"].canary_buckets[-1][1] == pytest.approx(predicted, rel=0.25)
    # every row is counted, failing ones included; each missing row lacks one of four features
    _counts(measured["input-missing-rate"], missing, rows * 4)
    assert measured["input-drift"].canary_buckets[-1][1] == pytest.approx(rows * 4 - missing, rel=0.25)
