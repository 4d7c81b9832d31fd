"""Routers against the emulated API server; the Prometheus provider against a real Prometheus."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelrollout.kube import Kube, KubeError, load_configuration, path
from modelrollout_lab.apiserver import start_in_thread
from modelrollout_lab.prometheus import PrometheusServer
from modelrollout_lab.scenarios import http_route, rollout
from modelrollout.providers import ProviderError
from modelrollout.providers.prometheus import PrometheusProvider
from modelrollout.routers import RouteTarget
from modelrollout.routers.gateway_api import GatewayApiRouter
from modelrollout.spec import parse_spec


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    server = start_in_thread()
    kubeconfig = tmp_path_factory.mktemp("kube") / "kubeconfig"
    server.write_kubeconfig(str(kubeconfig))
    yield str(kubeconfig)
    server.stop()


def run(coro):
    return asyncio.run(coro)


def test_gateway_router_writes_absolute_weights_and_reads_them_back(api):
    async def scenario():
        kube = Kube(load_configuration(api))
        try:
            route = http_route("gw", "default")
            route["spec"]["rules"].append({"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                                           "backendRefs": [{"name": "gw-stable", "port": 8080}]})
            await kube.create(path("gateway.networking.k8s.io/v1", "httproutes", "default"), route)
            target = RouteTarget("default", "gw", "uid-1", parse_spec(rollout("gw", router="gatewayAPI")["spec"],
                                                                          default_prometheus="http://p:9090"))
            router = GatewayApiRouter()
            await router.set_weight(kube, target, 30)
            assert await router.get_weight(kube, target) == 30
            first = await kube.get(path("gateway.networking.k8s.io/v1", "httproutes", "default", "gw"))
            await router.set_weight(kube, target, 30)  # repeating an absolute write changes nothing
            again = await kube.get(path("gateway.networking.k8s.io/v1", "httproutes", "default", "gw"))
            assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
            for rule in again["spec"]["rules"]:  # every rule, and the user's matches stay
                assert [(r["name"], r["weight"]) for r in rule["backendRefs"]] == [("gw-stable", 70), ("gw-canary", 30)]
            assert again["spec"]["rules"][1]["matches"][0]["path"]["value"] == "/v2"
            assert again["spec"]["parentRefs"] == [{"name": "lab-gateway"}]
            await router.finalize(kube, target)
            assert await router.get_weight(kube, target) == 0
        finally:
            await kube.close()

    run(scenario())


def test_a_concurrent_route_edit_is_a_conflict_not_a_lost_write(api):
    async def scenario():
        kube = Kube(load_configuration(api))
        try:
            collection = path("gateway.networking.k8s.io/v1", "httproutes", "default")
            await kube.create(collection, http_route("race", "default"))
            stale = await kube.get(path("gateway.networking.k8s.io/v1", "httproutes", "default", "race"))
            await kube.merge_patch(path("gateway.networking.k8s.io/v1", "httproutes", "default", "race"),
                                   {"metadata": {"labels": {"edited": "by-someone"}}})
            stale["spec"]["rules"][0]["backendRefs"][0]["weight"] = 50
            with pytest.raises(KubeError) as info:
                await kube.replace(path("gateway.networking.k8s.io/v1", "httproutes", "default", "race"), stale)
            assert info.value.status == 409
            target = RouteTarget("default", "race", "uid-2", parse_spec(rollout("race", router="gatewayAPI")["spec"],
                                                                            default_prometheus="http://p:9090"))
            await GatewayApiRouter().set_weight(kube, target, 10)  # a fresh read succeeds and keeps the edit
            route = await kube.get(path("gateway.networking.k8s.io/v1", "httproutes", "default", "race"))
            assert route["metadata"]["labels"] == {"edited": "by-someone"}
            assert await GatewayApiRouter().get_weight(kube, target) == 10
        finally:
            await kube.close()

    run(scenario())


class _Exposition(BaseHTTPRequestHandler):
    started = time.time()

    def do_GET(self):  # noqa: N802
        seconds = time.time() - self.started
        body = (f'requests_total{{revision="a"}} {int(100 * seconds)}\n'
                f'requests_total{{revision="b"}} {int(10 * seconds)}\n'
                f'gauge_nan NaN\n').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def prometheus():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exposition)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with PrometheusServer([f"127.0.0.1:{server.server_address[1]}"]) as prom:
        deadline = time.time() + 30
        while time.time() < deadline and not prom.query('rate(requests_total[3s])'):
            time.sleep(0.5)
        yield prom
    server.shutdown()


def test_provider_fetches_series_values_and_nan(prometheus):
    provider = PrometheusProvider(prometheus.url)
    series = run(provider.run_query('sum by (revision) (rate(requests_total[3s]))'))
    rates = {s.labels["revision"]: s.value for s in series}
    assert rates["a"] > 5 * rates["b"] > 0
    assert math.isnan(run(provider.run_query("gauge_nan"))[0].value)
    assert run(provider.run_query('requests_total{revision="none"}')) == []
    assert run(provider.is_online())


def test_provider_reports_bad_queries_and_outages_as_errors(prometheus):
    with pytest.raises(ProviderError):
        run(PrometheusProvider(prometheus.url).run_query("sum(("))
    offline = PrometheusProvider("http://127.0.0.1:9", timeout=2)
    with pytest.raises(ProviderError):
        run(offline.run_query("up"))
    assert not run(offline.is_online())
