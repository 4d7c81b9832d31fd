"""A user's query may hold PromQL `# comments`; every query the operator builds from it (a histogram's
`sum by (le) (...)`, a proportion's counts and rate, the report's bad events) asks what the same query
without its comments asks, instead of the comment swallowing the rest of the built query."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import promql_parser
import pytest

from modelrollout.analysis import measure
from modelrollout.core import ts
from modelrollout.report import _bad_events_query, _value_query
from modelrollout.spec import PlatformPolicy, SpecError, parse_spec, render_query
from modelrollout.status import RolloutStatus

ERRORS = 'sum(increase(http_requests_total{code=~"5..", revision="{{ revision }}"}[{{ window }}]))'
REQUESTS = 'sum(increase(http_requests_total{revision="{{ revision }}"}[{{ window }}]))'
BUCKETS = 'http_request_duration_seconds_bucket{revision="{{ revision }}"}'
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
VALUES = {"namespace": "ml", "name": "fraud", "revision": "a1b2c3d4e5", "workload": "fraud-a1b2c3d4e5",
          "canary.revision": "a1b2c3d4e5", "stable.revision": "f6e5d4c3b2", "canary.service": "fraud-canary",
          "stable.service": "fraud-stable", "model.name": "fraud", "model.version": "2", "interval": "30s",
          "window": "5m"}


def metrics(comment) -> list[dict]:
    """Every kind of metric that builds queries from the user's; `comment(query, note)` writes the query."""
    return [
        {"name": "error-ratio", "max": 0.01,
         "query": comment(ERRORS, "server errors (5xx") + "\n/ " + comment(REQUESTS, "every request {{ name }}")},
        {"name": "error-rate", "type": "proportion", "max": 0.01, "compareToStable": {"maxIncrease": 0.005},
         "query": comment(ERRORS, "bad events: 5xx / all"), "totalQuery": comment(REQUESTS, "requests")},
        {"name": "success-rate", "type": "proportion", "min": 0.9,
         "successQuery": comment(REQUESTS, "good )"), "totalQuery": comment(REQUESTS, "all")},
        {"name": "latency-p95", "type": "quantile", "quantile": 0.95, "max": 0.3,
         "histogram": comment(BUCKETS, "seconds, by le")},
        {"name": "latency-order", "type": "stochasticOrder", "histogram": comment(BUCKETS, "[{{ window }}]")},
    ]


def raw(comment) -> dict:
    return {
        "replicas": 10,
        "selector": {"matchLabels": {"app": "fraud"}},
        "template": {"metadata": {"labels": {"app": "fraud"}}, "spec": {"containers": [{"name": "m", "image": "m:2"}]}},
        "service": {"port": 8080},
        "trafficRouting": {"replicas": {}},
        "strategy": {"steps": [{"weight": 10, "hold": "1m"}, {"weight": 100}]},
        "analysis": {"interval": "30s", "metrics": metrics(comment),
                     "samples": {"query": comment(REQUESTS, "# twice"), "min": 10}},
    }


def spec(comment):
    return parse_spec(raw(comment), PlatformPolicy(prometheus_url="http://prometheus:9090"))


def plain(query: str, note: str) -> str:
    return query


def commented(query: str, note: str) -> str:
    return f"{query} # {note}"


def same_promql(queries: list[str]) -> list[str]:
    return sorted(str(promql_parser.parse(query)) for query in queries)


class Asked:
    """A provider that records every query an analysis asks (it has no data: analysis only asks)."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def run_query(self, query, *, at=None):
        self.queries.append(query)
        return []


def asked_by_analysis(rollout) -> list[str]:
    started = ts(NOW - timedelta(minutes=20))
    status = RolloutStatus.parse({"phase": "Progressing", "canaryRevision": "a1b2c3d4e5",
                                  "stableRevision": "f6e5d4c3b2", "currentStep": 0, "canaryWeight": 10,
                                  "canaryReadyAt": started, "stepStartedAt": started})
    provider = Asked()
    samples = asyncio.run(measure(rollout, "ml", "fraud", status, provider, NOW))
    assert [sample.error for sample in samples] == [None] * len(samples)
    return provider.queries


def test_an_analysis_asks_what_it_asks_without_the_comments():
    asked = asked_by_analysis(spec(commented))
    assert asked and same_promql(asked) == same_promql(asked_by_analysis(spec(plain)))
    assert not any("#" in query for query in asked)


def test_the_report_counts_and_draws_what_it_does_without_the_comments():
    for with_comments, without in zip(spec(commented).analysis.metrics, spec(plain).analysis.metrics):
        for compose in (_bad_events_query, _value_query):
            built, expected = compose(with_comments), compose(without)
            assert (built is None) == (expected is None), (with_comments.name, compose.__name__)
            if built is not None:
                assert same_promql([render_query(built, VALUES)]) == same_promql([render_query(expected, VALUES)])


def test_a_hash_inside_a_string_is_no_comment():
    rule = spec(lambda query, note: query.replace('code=~"5.."', 'code=~"5..|#"')).analysis.metrics[1]
    assert '"5..|#"' in rule.query


def test_a_query_that_is_only_a_comment_is_refused_naming_its_field():
    with pytest.raises(SpecError) as refused:
        spec(lambda query, note: f"# {query}" if "bucket" in query else query)
    assert refused.value.field == "spec.analysis.metrics[3].histogram"

