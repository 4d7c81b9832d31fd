"""Which queries may be batched, how a batch is formed, and what each caller gets back.

Equality of the answers themselves is proven against a real Prometheus in
tests/lab/test_query_batching.py; here the batcher's own decisions.
"""

from __future__ import annotations

import asyncio
import re

import promql_parser
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout.providers import PrometheusRejected, ProviderError, Series
from modelrollout.providers.batching import Batch, BatchingProvider, batched_query, batches, plan
from modelrollout.spec import render_query

ERRORS = 'sum(increase(http_requests_total{{namespace="ml", rollout="{r}", revision="{v}", code=~"5.."}}[{w}]))'


def errors(rollout: str, revision: str = "r1", window: str = "60s") -> str:
    return ERRORS.format(r=rollout, v=revision, w=window)


@pytest.mark.parametrize("query", [
    'sum(rate(x{rollout="a"}[5m] offset 1m))',
    'sum(rate(x{rollout="a"}[5m] @ 1700000000))',
    'max_over_time(sum(rate(x{rollout="a"}[1m]))[5m:1m])',
    'sum without (code) (x{rollout="a"})',
    'x{rollout="a"} / on (rollout) y{rollout="a"}',
    'x{rollout="a"} / ignoring (code) group_left y{rollout="a"}',
    'topk(1, x{rollout="a"})',
    'count_values("v", x{rollout="a"})',
    'label_replace(x{rollout="a"}, "b", "$1", "rollout", "(.*)")',
    'absent(x{rollout="a"})',
    'scalar(sum(x{rollout="a"}))',
    'sum(x{rollout="a"}) or vector(0)',
    'sum(x{rollout="a"}) / sum(x)',  # a share of everything: the right side is no rollout's
    'sum(rate(x[5m]))',  # nothing pinned
    'x{rollout=""}',  # an empty value also selects series without the label
    'x{rollout="a"} / y{rollout="b"}',  # the sides pin different rollouts
    'sum(x{rollout="a"}) or rate(y{rollout="a"}[1m])',  # sides that keep different labels
])
def test_queries_that_cannot_be_proven_equal_go_alone(query):
    assert plan(query) is None


def test_a_rollouts_queries_batch_with_other_rollouts_of_the_same_template_only():
    a, b = plan(errors("a")), plan(errors("b", "r2"))
    assert a.key == b.key and a.labels == ("namespace", "revision", "rollout")
    assert plan(errors("a").replace('code=~"5.."', 'code=~"4.."')).key != a.key
    assert plan(errors("a").replace("sum(", "max(")).key != a.key


def test_the_batched_query_selects_every_caller_and_groups_by_the_pinned_labels():
    text = batched_query([plan(errors("a")), plan(errors("b.c+d", "r2"))])
    tree = promql_parser.parse(text)
    assert sorted(tree.modifier.labels) == ["namespace", "revision", "rollout"]
    matchers = {m.name: (str(m.op), m.value) for m in tree.expr.args[0].vector_selector.matchers.matchers}
    assert matchers["rollout"] == ("MatchOp.Re", r"a|b\.c\+d")  # a value's dots and pluses are literal
    assert matchers["code"] == ("MatchOp.Re", "5..")


def test_each_caller_gets_its_own_series_with_only_its_own_labels():
    histogram = plan('histogram_quantile(0.9, sum by (le) (rate(h_bucket{rollout="a", revision="r1"}[1m])))')
    raw = plan('rate(x{rollout="a", revision="r1"}[1m])')
    answer = [Series({"le": "0.5", "rollout": "a", "revision": "r1"}, 1.0),
              Series({"le": "0.5", "rollout": "a", "revision": "r2"}, 2.0),  # another caller's (or no one's)
              Series({"le": "0.5", "rollout": "b", "revision": "r1"}, 3.0)]
    assert histogram.own(answer) == [Series({"le": "0.5"}, 1.0)]
    assert raw.own([Series({"rollout": "a", "revision": "r1", "pod": "p"}, 4.0)]) == \
        [Series({"rollout": "a", "revision": "r1", "pod": "p"}, 4.0)]  # its own answer carries them


def test_a_label_an_inner_aggregation_dropped_is_not_handed_back():
    regrouped = plan('sum by (rollout) (sum(x{rollout="a"}))')  # its own answer: one series, no labels
    assert regrouped.own([Series({"rollout": "a"}, 1.0)]) == [Series({}, 1.0)]


def test_two_windows_of_one_rollout_never_share_a_batch():
    queries = [errors("a", window="60s"), errors("a", window="20s"), errors("b", window="60s")]
    formed = batches({q: plan(q) for q in queries}, limit=10)
    assert [sorted(b.queries) for b in formed] == [sorted([queries[0], queries[2]]), [queries[1]]]


def test_a_branch_never_selects_another_branchs_caller():
    batch = Batch(limit=10)

    def add(rollout, revision, window):
        query = errors(rollout, revision, window)
        admitted = batch.admits(plan(query))
        if admitted:
            batch.add(query, plan(query))
        return admitted

    assert add("a", "r1", "60s") and add("b", "r2", "60s")  # the 60s branch selects {a, b} x {r1, r2}
    assert not add("a", "r2", "20s")  # among those: it would be answered by both branches
    assert add("c", "r3", "20s")
    assert add("c", "r1", "60s")  # the 60s branch now selects {a, b, c} x {r1, r2}: not (c, r3)
    assert not add("a", "r3", "60s")  # it would select (c, r3), the 20s branch's caller


def test_a_batch_holds_at_most_its_limit():
    queries = {errors(f"r{i}"): plan(errors(f"r{i}")) for i in range(5)}
    assert [len(b.queries) for b in batches(queries, limit=2)] == [2, 2, 1]


class Answering:
    """A provider answering each rollout's error query with a number of its own (no HTTP: the
    batcher's behaviour around a provider); it refuses batched queries when told to."""

    def __init__(self, refuse_batches: bool = False) -> None:
        self.sent: list[str] = []
        self.refuse_batches = refuse_batches

    async def run_query(self, query, *, at=None):
        self.sent.append(query)
        await asyncio.sleep(0.01)
        selector = promql_parser.parse(query).expr.args[0].vector_selector
        rollout = next(m for m in selector.matchers.matchers if m.name == "rollout")
        if str(rollout.op) == "MatchOp.Equal":
            return [Series({}, float(len(rollout.value)))]
        if self.refuse_batches:
            raise PrometheusRejected("Prometheus answered HTTP 422 (execution)")
        return [Series({"namespace": "ml", "rollout": r, "revision": "r1"}, float(len(r)))
                for r in rollout.value.split("|")]

    async def is_online(self):
        return True


def _ask(provider, queries):
    async def scenario():
        return await asyncio.gather(*(provider.run_query(q) for q in queries), return_exceptions=True)
    return asyncio.run(scenario())


def test_queries_asked_together_are_sent_once_and_identical_ones_shared():
    inner = Answering()
    queries = [errors("a"), errors("bb"), errors("ccc"), errors("a")]
    answers = _ask(BatchingProvider(inner), queries)
    assert answers == [[Series({}, 1.0)], [Series({}, 2.0)], [Series({}, 3.0)], [Series({}, 1.0)]]
    assert len(inner.sent) == 1


def test_a_batch_prometheus_refuses_is_asked_again_query_by_query():
    inner = Answering(refuse_batches=True)
    answers = _ask(BatchingProvider(inner), [errors("a"), errors("bb")])
    assert answers == [[Series({}, 1.0)], [Series({}, 2.0)]]
    assert inner.sent[1:] == [errors("a"), errors("bb")]


def test_a_query_for_a_past_moment_is_sent_alone_and_unchanged():
    inner = Answering()

    async def scenario():
        from datetime import UTC, datetime
        provider = BatchingProvider(inner)
        return await asyncio.gather(provider.run_query(errors("a"), at=datetime.now(UTC)),
                                    provider.run_query(errors("bb"), at=datetime.now(UTC)))

    assert asyncio.run(scenario()) == [[Series({}, 1.0)], [Series({}, 2.0)]]
    assert inner.sent == [errors("a"), errors("bb")]


def test_a_caller_that_gave_up_does_not_stop_the_others():
    inner = Answering()

    async def scenario():
        provider = BatchingProvider(inner)
        impatient = asyncio.create_task(asyncio.wait_for(provider.run_query(errors("a")), timeout=0.001))
        patient = asyncio.create_task(provider.run_query(errors("bb")))
        with pytest.raises(asyncio.TimeoutError):
            await impatient
        return await patient

    assert asyncio.run(scenario()) == [Series({}, 2.0)]


def test_an_error_reaches_every_caller_as_the_providers_error():
    class Down(Answering):
        async def run_query(self, query, *, at=None):
            self.sent.append(query)
            raise ProviderError("Prometheus unreachable (connection failed)")

    inner = Down()
    answers = _ask(BatchingProvider(inner), [errors("a"), errors("bb")])
    assert [str(a) for a in answers] == ["Prometheus unreachable (connection failed)"] * 2
    assert len(inner.sent) == 1


NASTY = "\"'`\\{}()[],=~!#\n\t\x00 or-.|+*?^$:/"


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.text(alphabet=st.sampled_from(NASTY) | st.characters(exclude_categories=("Cs",)),
                                min_size=1, max_size=12),
                       min_size=1, max_size=5, unique=True),
       stranger=st.text(max_size=12))
def test_a_batched_query_selects_exactly_its_callers_values(values, stranger):
    """Whatever a placeholder's value, once rendered and batched it is a literal alternative of the
    batch's regex: it selects its callers' series and nobody else's (issue 11: no shape changes)."""
    template = 'sum(increase(x{namespace="ml", version="{{ model.version }}"}[{{ window }}]))'
    plans = [plan(render_query(template, {"model.version": value, "window": "1m"})) for value in values]
    assert all(p is not None for p in plans)
    tree = promql_parser.parse(batched_query(plans))
    [selector] = [node for node in _nodes(tree) if isinstance(node, promql_parser.VectorSelector)]
    [version] = [m for m in selector.matchers.matchers if m.name == "version"]
    assert str(version.op) == "MatchOp.Re"
    for value in values:
        assert re.fullmatch(version.value, value, flags=re.DOTALL)
    assert bool(re.fullmatch(version.value, stranger, flags=re.DOTALL)) == (stranger in values)


def _nodes(tree):
    found = []
    promql_parser.walk(tree, found.append)
    return found
