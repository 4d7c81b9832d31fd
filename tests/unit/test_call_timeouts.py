"""A spec cannot make the operator wait longer than the platform allows for one call it makes for the
rollout (a webhook gate's POST, a Prometheus query): above `--max-call-timeout` (default 60s) the spec
is InvalidSpec naming the field and the limit, never silently clamped; the CRD refuses what no platform
may allow."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import yaml

from modelrollout.cli import run
from modelrollout.spec import CALL_TIMEOUT_CEILING, PlatformPolicy, SpecError, parse_duration, parse_spec

ROOT = Path(__file__).resolve().parents[2]
HOOK = "https://gates.example.com/check"
WEBHOOK_TIMEOUT = "spec.strategy.gates.beforePromotion[0].webhook.timeout"
PROMETHEUS_TIMEOUT = "spec.analysis.prometheus.timeout"


def rollout(webhook_timeout: str | None = None, prometheus_timeout: str | None = None) -> dict:
    webhook = {"url": HOOK, **({"timeout": webhook_timeout} if webhook_timeout else {})}
    prometheus = {"address": "http://prom:9090", **({"timeout": prometheus_timeout} if prometheus_timeout else {})}
    return {
        "replicas": 10,
        "selector": {"matchLabels": {"app": "m"}},
        "template": {"metadata": {"labels": {"app": "m"}}, "spec": {"containers": [{"name": "s", "image": "m:1"}]}},
        "service": {"port": 8080},
        "trafficRouting": {"replicas": {}},
        "strategy": {"steps": [{"weight": 10, "hold": "1m"}, {"weight": 100}],
                     "gates": {"beforePromotion": [{"name": "approval", "webhook": webhook}]}},
        "analysis": {"prometheus": prometheus, "preset": "http"},
    }


def platform(**limits) -> PlatformPolicy:
    return PlatformPolicy(prometheus_url="http://prom:9090", allowed_webhook_urls=(f"{HOOK}*",), **limits)


@pytest.mark.parametrize("raw,field,said", [
    (rollout(webhook_timeout="2h"), WEBHOOK_TIMEOUT, "2h"),
    (rollout(webhook_timeout="1m0.5s"), WEBHOOK_TIMEOUT, "1m0.5s"),
    (rollout(prometheus_timeout="61s"), PROMETHEUS_TIMEOUT, "61s"),
])
def test_a_call_timeout_above_the_platforms_maximum_is_refused_naming_field_and_limit(raw, field, said):
    with pytest.raises(SpecError) as refused:
        parse_spec(raw, platform())
    assert refused.value.field == field
    assert said in refused.value.message and "60s" in refused.value.message
    assert "--max-call-timeout" in refused.value.message  # what the platform team would change


def test_timeouts_up_to_the_maximum_are_the_specs_own():
    spec = parse_spec(rollout(webhook_timeout="60s", prometheus_timeout="1m"), platform())
    assert spec.strategy.gates.before_promotion[0].webhook.timeout == 60.0
    assert spec.analysis.prometheus.timeout == 60.0
    defaults = parse_spec(rollout(), platform())
    assert (defaults.strategy.gates.before_promotion[0].webhook.timeout, defaults.analysis.prometheus.timeout) == (10, 10)


def test_a_platform_may_allow_longer_calls():
    spec = parse_spec(rollout(webhook_timeout="5m", prometheus_timeout="2m"), platform(max_call_timeout=300.0))
    assert (spec.strategy.gates.before_promotion[0].webhook.timeout, spec.analysis.prometheus.timeout) == (300, 120)
    with pytest.raises(SpecError) as refused:
        parse_spec(rollout(webhook_timeout="5m1s"), platform(max_call_timeout=300.0))
    assert refused.value.field == WEBHOOK_TIMEOUT and "300s" in refused.value.message


def test_the_operators_flag_sets_the_maximum_within_what_the_crd_allows():
    assert run.make_context("run", []).params["max_call_timeout"] == 60.0
    assert run.make_context("run", ["--max-call-timeout", "2m"]).params["max_call_timeout"] == 120.0
    for refused in ("0s", "11m", "soon"):
        with pytest.raises(click.BadParameter):
            run.make_context("run", ["--max-call-timeout", refused])


def _crd_timeouts() -> dict[str, dict]:
    """The schema of every timeout field in the CRD, by its path."""
    crd = yaml.safe_load((ROOT / "crds" / "modelrollout.yaml").read_text())
    found: dict[str, dict] = {}

    def walk(schema: dict, path: str) -> None:
        for name, sub in (schema.get("properties") or {}).items():
            if name == "timeout":
                found[f"{path}.{name}"] = sub
            walk(sub, f"{path}.{name}")
        if "items" in schema:
            walk(schema["items"], f"{path}[]")

    walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"], "spec")
    return found


def test_the_crd_bounds_every_call_timeout_at_the_ceiling_the_flag_may_reach():
    timeouts = _crd_timeouts()
    calls = {"spec.analysis.prometheus.timeout", "spec.strategy.gates.beforeTraffic[].webhook.timeout",
             "spec.strategy.gates.beforePromotion[].webhook.timeout"}
    assert calls < set(timeouts)  # a Job gate's timeout is how long its Job may run, not a call
    for path in calls:
        (rule,) = timeouts[path]["x-kubernetes-validations"]
        ceiling = rule["rule"].removeprefix("duration(self) <= duration('").removesuffix("')")
        assert parse_duration(ceiling) == CALL_TIMEOUT_CEILING, path
        assert timeouts[path]["maxLength"] <= 32  # the rule's cost is bounded (the API server estimates it)
    assert run.make_context("run", ["--max-call-timeout", f"{CALL_TIMEOUT_CEILING:g}s"]).params["max_call_timeout"] \
        == CALL_TIMEOUT_CEILING
