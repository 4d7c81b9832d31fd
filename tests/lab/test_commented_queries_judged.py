"""On a real Prometheus, metrics whose queries carry `# comments` are judged exactly like the same
metrics without them, and `kubectl modelrollout report` counts and draws them the same (the comments
once broke every query built from the user's: a histogram's, a proportion's rate)."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelrollout.analysis import measure
from modelrollout.core import ts
from modelrollout.evaluate import evaluate
from modelrollout.providers.prometheus import PrometheusProvider
from modelrollout.report import build
from modelrollout.spec import PlatformPolicy, parse_spec
from modelrollout.stats import Verdict
from modelrollout.status import RolloutStatus
from modelrollout_lab.prometheus import scraping

pytestmark = pytest.mark.lab


def _load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


servers = _load("preset_servers", "presets/test_presets.py")  # the exposition helpers
queries = _load("query_comments", "unit/test_query_comments.py")  # the metrics, with and without comments
GOOD, BAD = queries.VALUES["canary.revision"], queries.VALUES["stable.revision"]
ERRORS = {GOOD: 0.001, BAD: 0.10}
LATENCY = {GOOD: 0.02, BAD: 3.0}


def exposition(elapsed: float) -> str:
    lines = []
    for revision in (GOOD, BAD):
        n = 200.0 * elapsed
        labels = {"namespace": "ml", "revision": revision}
        lines.append(servers._counter("http_requests_total", {**labels, "code": "200"}, n * (1 - ERRORS[revision])))
        lines.append(servers._counter("http_requests_total", {**labels, "code": "503"}, n * ERRORS[revision]))
        lines += servers._histogram("http_request_duration_seconds", labels, n, LATENCY[revision], servers.SECONDS)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prometheus(prometheus_binary):
    with scraping(exposition) as (prom, _):
        prom.wait_for_scrapes(11, timeout=40)
        yield prom


def raw(comment) -> dict:
    body = queries.raw(comment)
    body["analysis"] = {**body["analysis"], "interval": "5s", "prometheus": {"address": "http://127.0.0.1:9"}}
    return body


async def verdicts(url: str, comment) -> dict[tuple[str, str], Verdict]:
    """Each metric's verdict of either revision as the canary, the other as stable."""
    rollout = parse_spec(raw(comment), PlatformPolicy(prometheus_url="http://127.0.0.1:9"))
    provider = PrometheusProvider(url, timeout=5)
    now = datetime.now(UTC)
    started = ts(now - timedelta(seconds=10))
    found = {}
    try:
        for canary, stable in ((GOOD, BAD), (BAD, GOOD)):
            status = RolloutStatus.parse({"phase": "Progressing", "canaryRevision": canary, "stableRevision": stable,
                                          "currentStep": 0, "canaryWeight": 10, "canaryReadyAt": started,
                                          "stepStartedAt": started})
            rules = {rule.name: rule for rule in rollout.analysis.metrics}
            for sample in await measure(rollout, "ml", "fraud", status, provider, now):
                found[canary, sample.metric] = evaluate(rules[sample.metric], sample, 10).verdict
    finally:
        provider.close()
    return found


def test_commented_metrics_are_judged_like_uncommented_ones(prometheus):
    # Prometheus keeps scraping between the evaluations: a borderline verdict may move with a scrape,
    # so the commented metrics are judged between two judgements of the plain ones, and match one.
    before = asyncio.run(verdicts(prometheus.url, queries.plain))
    with_comments = asyncio.run(verdicts(prometheus.url, queries.commented))
    after = asyncio.run(verdicts(prometheus.url, queries.plain))
    assert with_comments in (before, after), (with_comments, before, after)
    # The comparison judged: the bad revision fails its errors and latency, the good one passes them.
    for metric in ("error-ratio", "error-rate", "latency-p95", "latency-order"):
        assert (with_comments[GOOD, metric], with_comments[BAD, metric]) == (Verdict.PASS, Verdict.FAIL), metric


def impact_counts(text: str) -> dict[str, float]:
    return {label: float(count) for label, count in re.findall(r"^\| (canary [^|]+) \| ([0-9.e+-]+) \|", text, re.M)}


def test_the_report_of_commented_metrics_counts_and_draws_what_it_does_without_them(prometheus, tmp_path):
    now = datetime.now(UTC)
    status = {"phase": "RolledBack", "stableRevision": GOOD, "observedGeneration": 1,
              "history": [{"revision": BAD, "result": "RolledBack", "reason": "error-rate too high",
                           "startedAt": ts(now - timedelta(seconds=8)), "finishedAt": ts(now - timedelta(seconds=6))}]}
    reports = {}
    for comment in (queries.commented, queries.plain):
        rollout = {"metadata": {"namespace": "ml", "name": "fraud", "generation": 1}, "spec": raw(comment),
                   "status": status}
        png = tmp_path / f"{comment.__name__}.png"
        reports[comment] = build(rollout, [], [], prometheus.url, str(png), now)
        assert reports[comment].png_error is None and png.stat().st_size > 0
    counts = impact_counts(reports[queries.commented].text)
    assert counts == impact_counts(reports[queries.plain].text)
    assert counts["canary bad events (error-rate)"] > 0 and counts["canary bad events (error-ratio)"] > 0
