"""Batched queries answer each rollout exactly as its own query does, on a real Prometheus.

The exposition is the one tests/presets writes for every preset's server (two revisions), once
more for a second namespace with other rates, plus the `http` preset's series for two rollouts.
Every preset template and a few custom ones are rendered for every namespace, rollout, revision
and two windows; the batched answer, split per caller, must equal each query's own answer at the
same instant.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelrollout import metrics
from modelrollout.providers import ProviderError
from modelrollout.providers.batching import BatchingProvider, batched_query, batches, plan
from modelrollout.providers.prometheus import PrometheusProvider
from modelrollout.spec import histogram_query, load_preset, render_query
from modelrollout_lab.prometheus import scraping

pytestmark = pytest.mark.lab

_spec = importlib.util.spec_from_file_location(
    "preset_servers", Path(__file__).resolve().parents[1] / "presets" / "test_presets.py")
servers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(servers)

PRESETS = ("http", *servers.PRESETS)
NAMESPACES = ("ml", "ml2")
ROLLOUTS = ("fraud", "churn")
REVISIONS = (servers.GOOD, servers.BAD)
WINDOWS = ("20s", "30s")
GAUGES = 30
# Templates that add `or vector(0)` (a labelless 0 cannot be told apart per rollout in one answer)
# or take the max of two quantiles made labelless.
ALONE = {("triton", "samples"), ("triton", "error-rate.totalQuery"), ("mlserver", "samples"),
         ("mlserver", "error-rate.totalQuery"), ("mlserver", "latency-p95"), ("mlserver", "latency-p95.samplesQuery")}
CUSTOM_BATCHED = (
    'sum(rate(http_requests_total{namespace="{{ namespace }}", rollout="{{ name }}", revision="{{ revision }}", code=~"5.."}[{{ window }}]))'
    ' / sum(rate(http_requests_total{namespace="{{ namespace }}", rollout="{{ name }}", revision="{{ revision }}"}[{{ window }}]))',
    'max by (code) (increase(http_requests_total{rollout="{{ name }}", revision="{{ revision }}"}[{{ window }}]))',
    'rate(http_requests_total{namespace="{{ namespace }}", rollout="{{ name }}", revision="{{ revision }}", code="200"}[{{ window }}]) * 60',
    'quantile(0.5, rate(http_requests_total{rollout="{{ name }}", revision="{{ revision }}"}[{{ window }}])) > bool 1',
    'histogram_quantile(0.9, sum by (le) (rate(model_prediction_score_bucket{rollout="{{ name }}", revision="{{ revision }}"}[{{ window }}])))',
    'sum by (rollout) (max(increase(http_requests_total{rollout="{{ name }}", revision="{{ revision }}"}[{{ window }}])))',
    '-avg(increase(http_requests_total{rollout="{{ name }}", revision="{{ revision }}"}[{{ window }}]))'
    ' and count(http_requests_total{rollout="{{ name }}", revision="{{ revision }}"}) > 1',
)
CUSTOM_ALONE = (
    'sum(rate(http_requests_total{rollout="{{ name }}", revision="{{ revision }}"}[{{ window }}] offset 10s))',
    'topk(1, rate(http_requests_total{rollout="{{ name }}", revision="{{ revision }}"}[{{ window }}]))',
    'sum(rate(http_requests_total{rollout="{{ name }}", revision="{{ revision }}"}[{{ window }}])) / sum(rate(http_requests_total[{{ window }}]))',
    'max_over_time(sum(rate(http_requests_total{rollout="{{ name }}", revision="{{ revision }}"}[10s]))[{{ window }}:5s])',
    'sum without (code) (rate(http_requests_total{rollout="{{ name }}", revision="{{ revision }}"}[{{ window }}]))',
    'label_replace(rate(http_requests_total{rollout="{{ name }}", revision="{{ revision }}"}[{{ window }}]), "x", "$1", "code", "(.*)")',
)


def _http_preset(elapsed: float) -> list[str]:
    """The `http` preset's series for every namespace, rollout and revision, each at its own rates."""
    lines: list[str] = []
    for k, (namespace, name, revision) in enumerate(itertools.product(NAMESPACES, ROLLOUTS, REVISIONS)):
        n = (40.0 + 17 * k) * elapsed
        bad = n * (0.002 + 0.01 * k)
        labels = {"namespace": namespace, "rollout": name, "revision": revision}
        lines.append(servers._counter("http_requests_total", {**labels, "code": "200"}, n - bad))
        lines.append(servers._counter("http_requests_total", {**labels, "code": "503"}, bad))
        lines += servers._histogram("http_request_duration_seconds", labels, n, 0.01 * (k + 1), servers.SECONDS)
        lines.append(servers._counter("model_feedback_total", labels, n / 4))
        lines.append(servers._counter("model_feedback_correct_total", labels, n / 4 * (0.95 - 0.02 * k)))
        lines += servers._histogram("model_prediction_score", labels, n, 0.05 * (k + 1), servers.SECONDS)
        lines.append(servers._counter("model_input_rows_total", labels, n))
        lines.append(servers._counter("model_input_feature_missing_total", labels, n * 0.001 * k))
        lines += servers._histogram("model_input_feature_value", labels, n, 0.1 * (k + 1), servers.SECONDS)
    return lines


def exposition(elapsed: float) -> str:
    other_namespace = servers.exposition(elapsed * 0.6).replace('="ml"', '="ml2"')
    gauges = [f'batch_gauge{{rollout="r{i}", revision="x"}} {i}' for i in range(GAUGES)]
    return servers.exposition(elapsed) + other_namespace + "\n".join(_http_preset(elapsed) + gauges) + "\n"


@pytest.fixture(scope="module")
def prometheus(prometheus_binary):
    with scraping(exposition) as (prom, _):
        prom.wait_for_scrapes(32)  # the 30 s windows hold samples
        yield prom


def _templates(preset: str) -> dict[str, str]:
    """Every query template of a preset, by where it is written."""
    body = load_preset(preset)
    found = {"samples": body["samples"]["query"]}
    for name, metric in body["metrics"].items():
        for field in ("query", "totalQuery", "successQuery", "samplesQuery"):
            if metric.get(field):
                found[f"{name}.{field}" if field != "query" else name] = metric[field]
        if metric.get("histogram"):
            found[f"{name}.histogram"] = histogram_query(metric["histogram"])
    return found


def _rendered(template: str) -> list[str]:
    queries = []
    for namespace, name, revision, window in itertools.product(NAMESPACES, ROLLOUTS, REVISIONS, WINDOWS):
        values = {"namespace": namespace, "name": name, "revision": revision, "workload": f"{name}-{revision}",
                  "canary.revision": revision,
                  "stable.revision": REVISIONS[0], "canary.service": f"{name}-canary",
                  "stable.service": f"{name}-stable", "model.name": name, "model.version": "2",
                  "interval": "10s", "window": window}
        queries.append(render_query(template, values))
    return list(dict.fromkeys(queries))


def _same(ours, theirs) -> bool:
    def norm(series):
        return sorted((sorted(s.labels.items()), s.value) for s in series)
    a, b = norm(ours), norm(theirs)
    return len(a) == len(b) and all(
        la == lb and (va == vb or (math.isnan(va) and math.isnan(vb)) or math.isclose(va, vb, rel_tol=1e-9))
        for (la, va), (lb, vb) in zip(a, b))


async def _compare(provider: PrometheusProvider, queries: list[str], at: datetime) -> tuple[int, int]:
    """Batched and alone answers of every query; returns (queries with data, batched queries sent)."""
    plans = {q: plan(q) for q in queries}
    assert all(plans.values()), [q for q, p in plans.items() if p is None]
    by_key: dict[str, dict] = {}
    for q, p in plans.items():
        by_key.setdefault(p.key, {})[q] = p
    with_data = sent = 0
    for group in by_key.values():
        for batch in batches(group, limit=200):
            answer = await provider.run_query(batched_query(list(batch.queries.values())), at=at)
            sent += 1
            for q, p in batch.queries.items():
                alone = await provider.run_query(q, at=at)
                assert _same(p.own(answer), alone), f"{q}\nbatched: {p.own(answer)}\nalone: {alone}"
                with_data += bool(alone)
    return with_data, sent


def test_every_preset_template_batched_answers_each_rollout_as_alone(prometheus):
    provider = PrometheusProvider(prometheus.url, timeout=10)
    at = datetime.now(UTC) - timedelta(seconds=2)
    asked = sent = 0
    for preset in PRESETS:
        for where, template in _templates(preset).items():
            queries = _rendered(template)
            if (preset, where) in ALONE:
                assert all(plan(q) is None for q in queries), (preset, where)
                continue
            with_data, batched = asyncio.run(_compare(provider, queries, at))
            assert with_data >= len(queries) // 2, (preset, where, with_data)  # the comparison saw numbers
            asked, sent = asked + len(queries), sent + batched
    assert sent * 4 <= asked  # 16 renderings of a template: a few queries (windows and revisions that collide)


def test_custom_queries_batch_when_provably_equal_and_go_alone_otherwise(prometheus):
    provider = PrometheusProvider(prometheus.url, timeout=10)
    at = datetime.now(UTC) - timedelta(seconds=2)
    for template in CUSTOM_BATCHED:
        with_data, _ = asyncio.run(_compare(provider, _rendered(template), at))
        assert with_data, template
    for template in CUSTOM_ALONE:
        assert all(plan(q) is None for q in _rendered(template)), template


def _counted(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name) or 0.0


def test_concurrent_analyses_share_one_query_and_each_gets_its_own_value(prometheus):
    async def scenario():
        provider = BatchingProvider(PrometheusProvider(prometheus.url, timeout=10))
        return await asyncio.gather(*(provider.run_query(
            f'sum(last_over_time(batch_gauge{{rollout="r{i}", revision="x"}}[30s]))') for i in range(GAUGES)))

    sent, asked = _counted("modelrollout_prometheus_queries_total"), _counted("modelrollout_prometheus_queries_asked_total")
    answers = asyncio.run(scenario())
    assert [[(s.labels, s.value) for s in a] for a in answers] == [[({}, float(i))] for i in range(GAUGES)]
    assert _counted("modelrollout_prometheus_queries_total") - sent == 1
    assert _counted("modelrollout_prometheus_queries_asked_total") - asked == GAUGES


def test_an_outage_is_an_error_for_every_caller_of_a_batch():
    async def scenario():
        provider = BatchingProvider(PrometheusProvider("http://127.0.0.1:9", timeout=2))
        return await asyncio.gather(*(provider.run_query(
            f'sum(last_over_time(batch_gauge{{rollout="r{i}", revision="x"}}[30s]))') for i in range(5)),
            return_exceptions=True)

    sent = _counted("modelrollout_prometheus_queries_total")
    answers = asyncio.run(scenario())
    assert all(isinstance(a, ProviderError) and "unreachable" in str(a) for a in answers)
    assert _counted("modelrollout_prometheus_queries_total") - sent == 1  # one attempt, not five


def test_a_query_longer_than_a_url_may_be_is_posted_and_answered(prometheus):
    """Proxies in front of Prometheus refuse URLs of a few KB and Prometheus itself over 1 MB."""
    query = 'sum by (rollout) (batch_gauge{rollout=~"r7|r8"})\n# ' + "x" * 1_100_000
    series = asyncio.run(PrometheusProvider(prometheus.url, timeout=10).run_query(query))
    assert sorted((s.labels["rollout"], s.value) for s in series) == [("r7", 7.0), ("r8", 8.0)]
