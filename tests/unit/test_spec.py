"""The spec is parsed once into typed objects; a bad field is named in the error."""

from __future__ import annotations

import copy

import pytest

from modelrollout.spec import SpecError, parse_duration, parse_spec, render_query, template_revision

BASE = {
    "selector": {"matchLabels": {"app": "m"}},
    "template": {"metadata": {"labels": {"app": "m"}}, "spec": {"containers": [{"name": "s", "image": "m:1"}]}},
    "service": {"port": 8080},
    "trafficRouting": {"replicas": {}},
    "strategy": {"steps": [{"weight": 10, "hold": "1m"}, {"weight": 100}]},
    "analysis": {"interval": "30s", "prometheus": {"address": "http://prom:9090"}, "preset": "http",
                 "metrics": [{"name": "error-rate"}, {"name": "latency-p95", "max": 0.5}]},
}


def with_(path: str, value):
    raw = copy.deepcopy(BASE)
    node = raw
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if value is KeyError:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return raw


def test_valid_spec_parses_with_preset_queries_filled_in():
    spec = parse_spec(BASE)
    error_rate, latency = spec.analysis.metrics
    assert "http_requests_total" in error_rate.query and error_rate.max == 0.01 and error_rate.critical
    assert latency.max == 0.5  # the spec's own value wins over the preset's
    assert spec.analysis.samples.min == 50 and spec.strategy.steps[1].hold is None
    assert spec.analysis.interval == 30.0


@pytest.mark.parametrize("path,value,field", [
    ("strategy.steps.0.weight", 150, "spec.strategy.steps[0].weight"),
    ("strategy.steps.0.hold", "five minutes", "spec.strategy.steps[0].hold"),
    ("strategy.steps", [], "spec.strategy.steps"),
    ("strategy.steps", [{"weight": 50}, {"weight": 10}], "spec.strategy"),
    ("service.port", 0, "spec.service.port"),
    ("trafficRouting", {}, "spec.trafficRouting"),
    ("trafficRouting", {"replicas": {}, "gatewayAPI": {"httpRoute": "r"}}, "spec.trafficRouting"),
    ("selector", KeyError, "spec.selector"),
    ("analysis.interval", "soon", "spec.analysis.interval"),
    ("analysis.preset", "nope", "spec.analysis.preset"),
    ("analysis.metrics", [{"name": "custom", "query": "up"}], "spec.analysis.metrics[0]"),
    ("analysis.metrics", [{"name": "c", "query": "up{{ nonsense }}", "max": 1}], "spec.analysis.metrics[0].query"),
    ("analysis.metrics", [{"name": "error-rate"}, {"name": "error-rate"}], "spec.analysis.metrics"),
    ("analysis.noData", {"then": "promote"}, "spec.analysis.noData.then"),
    ("template", {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "s"}]}}, "spec"),
])
def test_invalid_field_is_named(path, value, field):
    with pytest.raises(SpecError) as info:
        parse_spec(with_(path, value))
    assert info.value.field.startswith(field), info.value


def test_missing_prometheus_uses_the_operator_default_or_is_named():
    raw = with_("analysis.prometheus", KeyError)
    assert parse_spec(raw, default_prometheus="http://p:9090").analysis.prometheus.address == "http://p:9090"
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    assert info.value.field == "spec.analysis.prometheus.address"


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), (12, 12)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_label_values_are_escaped_not_pasted():
    query = render_query('up{rollout="{{ name }}"}', {"name": 'x"} or vector(1) or up{a="'})
    assert query == 'up{rollout="x\\"} or vector(1) or up{a=\\""}'


def test_revision_depends_on_template_only_and_is_stable():
    a = parse_spec(BASE).revision
    assert a == template_revision(copy.deepcopy(BASE["template"]))
    assert a != parse_spec(with_("template.spec.containers", [{"name": "s", "image": "m:2"}])).revision
    assert a == parse_spec(with_("strategy.steps.0.weight", 20)).revision
