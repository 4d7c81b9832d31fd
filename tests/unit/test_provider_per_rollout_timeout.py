"""One rollout's Prometheus timeout is its own: a spec cannot shorten (or stretch) another team's queries
by naming the same Prometheus first (issue 11: what a ModelRollout author can make the operator do)."""

from __future__ import annotations

import asyncio
import copy
import http.server
import json
import threading
import time

import pytest

from modelrollout.config import Config
from modelrollout.providers import ProviderError
from modelrollout.reconcile import Runtime
from modelrollout.spec import parse_spec

ANSWER = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {}, "value": [0, "1"]}]}}).encode()


class _SlowPrometheus(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        time.sleep(0.3)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, *args):
        pass


@pytest.fixture
def prometheus():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowPrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def spec(address: str, timeout: str):
    return parse_spec(copy.deepcopy({
        "selector": {"matchLabels": {"app": "m"}},
        "template": {"metadata": {"labels": {"app": "m"}}, "spec": {"containers": [{"name": "s", "image": "m:1"}]}},
        "service": {"port": 8080}, "trafficRouting": {"gatewayAPI": {"httpRoute": "r"}},
        "strategy": {"steps": [{"weight": 10, "hold": "1m"}]},
        "analysis": {"prometheus": {"address": address, "timeout": timeout},
                     "metrics": [{"name": "up", "query": "up", "max": 1}]},
    }), Config(prometheus_url=address).policy)


def test_a_short_timeout_in_one_spec_does_not_fail_anothers_queries(prometheus):
    runtime = Runtime(Config(prometheus_url=prometheus), kube=None)  # type: ignore[arg-type]  # no API calls here

    async def ask(timeout: str):
        return await runtime.provider(spec(prometheus, timeout)).run_query("up")

    async def both():
        hasty = asyncio.create_task(ask("100ms"))  # the first to name the address
        await asyncio.sleep(0.01)
        patient = await ask("5s")
        return hasty, patient

    hasty, patient = asyncio.run(both())
    assert [series.value for series in patient] == [1.0]
    assert hasty.exception() is not None  # its own 100 ms were too short: its own concern


def test_a_prometheus_too_slow_for_the_timeout_is_said_to_be_slow_not_unreachable(prometheus):
    runtime = Runtime(Config(prometheus_url=prometheus), kube=None)  # type: ignore[arg-type]
    with pytest.raises(ProviderError) as info:
        asyncio.run(runtime.provider(spec(prometheus, "100ms")).run_query("up"))
    assert str(info.value) == "Prometheus did not answer within 0.1s"


def test_distinct_timeouts_do_not_multiply_the_operators_threads(prometheus):
    """A team that gives each of its rollouts another timeout gets its own timeouts, never more of the
    operator's query threads: 40 timeouts, 4 queries each, all at once, on one address."""
    runtime = Runtime(Config(prometheus_url=prometheus), kube=None)  # type: ignore[arg-type]
    before = threading.active_count()

    async def ask_all():
        queries = [runtime.provider(spec(prometheus, f"{5000 + i}ms")).run_query(f"up + {n}")
                   for i in range(40) for n in range(4)]
        return await asyncio.gather(*queries)

    answers = asyncio.run(ask_all())
    assert all([series.value for series in answer] == [1.0] for answer in answers)
    assert threading.active_count() - before <= 32  # one address: one pool of query threads
