"""Routers against the emulated API server; the Prometheus provider against a real Prometheus."""

from __future__ import annotations

import asyncio
import copy
import json
import math
import time
from dataclasses import replace

import pytest

from modelrollout import manifests
from modelrollout.kube import Kube, KubeError, load_configuration, path
from modelrollout.names import LABEL_ROLLOUT
from modelrollout_lab.prometheus import scraping
from modelrollout_lab.scenarios import http_route, rollout
from modelrollout.providers import ProviderError
from modelrollout.providers.prometheus import PrometheusProvider
from modelrollout.routers import RouteNotManaged, RouteTarget
from modelrollout.routers.gateway_api import GatewayApiRouter
from modelrollout.routers.replicas import ReplicasRouter
from modelrollout.spec import PlatformPolicy, parse_spec

from lab_kube import RacingKube


def run(coro):
    return asyncio.run(coro)


def _gateway_target(name):
    spec = parse_spec(rollout(name, router="gatewayAPI")["spec"], PlatformPolicy(prometheus_url="http://p:9090"))
    return RouteTarget("default", name, f"uid-{name}", spec)


def test_gateway_router_writes_absolute_weights_and_reads_them_back(api):
    async def scenario():
        kube = Kube(load_configuration(api))
        try:
            route = http_route("gw", "default")
            route["spec"]["rules"].append({"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                                           "backendRefs": [{"name": "gw-stable", "port": 8080}]})
            await kube.create(path("gateway.networking.k8s.io/v1", "httproutes", "default"), route)
            target = _gateway_target("gw")
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
            target = _gateway_target("race")
            await GatewayApiRouter().set_weight(kube, target, 10)  # a fresh read succeeds and keeps the edit
            route = await kube.get(path("gateway.networking.k8s.io/v1", "httproutes", "default", "race"))
            assert route["metadata"]["labels"] == {"edited": "by-someone"}
            assert await GatewayApiRouter().get_weight(kube, target) == 10
        finally:
            await kube.close()

    run(scenario())


ROUTES = path("gateway.networking.k8s.io/v1", "httproutes", "default")
ADMIN_RULE = {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}, "headers": [{"name": "x-team", "value": "ops"}]}],
              "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-admin", "value": "1"}]}}],
              "backendRefs": [{"name": "admin-svc", "port": 9090, "weight": 3}, {"name": "admin-b", "port": 9090}],
              "timeouts": {"request": "10s"}}


def test_gateway_router_edits_only_the_backend_refs_of_its_own_services(api):
    """The user's /admin rule, a user backend beside ours and every match and filter stay as written."""
    async def scenario():
        kube = Kube(load_configuration(api))
        try:
            route = http_route("own", "default")
            route["spec"]["rules"][0]["matches"] = [{"path": {"type": "PathPrefix", "value": "/"}}]
            route["spec"]["rules"].append(copy.deepcopy(ADMIN_RULE))
            route["spec"]["rules"].append({"matches": [{"path": {"type": "Exact", "value": "/mixed"}}],
                                           "backendRefs": [{"name": "legacy", "port": 8080, "weight": 50},
                                                           {"name": "own-stable", "port": 8080, "weight": 100}]})
            await kube.create(ROUTES, route)
            target, router = _gateway_target("own"), GatewayApiRouter()
            before = await kube.get(f"{ROUTES}/own")
            for weight in (30, 60):
                await router.set_weight(kube, target, weight)
                assert await router.get_weight(kube, target) == weight
                after = await kube.get(f"{ROUTES}/own")
                rules = after["spec"]["rules"]
                assert json.dumps(rules[1]) == json.dumps(before["spec"]["rules"][1])  # byte for byte
                assert rules[0]["matches"] == before["spec"]["rules"][0]["matches"]
                assert [(r["name"], r["weight"]) for r in rules[0]["backendRefs"]] == [("own-stable", 100 - weight),
                                                                                        ("own-canary", weight)]
                assert [(r["name"], r["weight"]) for r in rules[2]["backendRefs"]] == [
                    ("legacy", 50), ("own-stable", 100 - weight), ("own-canary", weight)]
                assert after["spec"]["parentRefs"] == before["spec"]["parentRefs"]
            await router.finalize(kube, target)
            final = await kube.get(f"{ROUTES}/own")
            assert json.dumps(final["spec"]["rules"][1]) == json.dumps(before["spec"]["rules"][1])
            assert [(r["name"], r["weight"]) for r in final["spec"]["rules"][0]["backendRefs"]] == [("own-stable", 100)]
            assert [r["name"] for r in final["spec"]["rules"][2]["backendRefs"]] == ["legacy", "own-stable"]
        finally:
            await kube.close()

    run(scenario())


def test_a_route_with_no_rule_of_ours_is_reported_and_left_alone(api):
    async def scenario():
        kube = Kube(load_configuration(api))
        try:
            route = http_route("alien", "default")
            route["spec"]["rules"] = [copy.deepcopy(ADMIN_RULE)]
            await kube.create(ROUTES, route)
            before = await kube.get(f"{ROUTES}/alien")
            target = _gateway_target("alien")
            with pytest.raises(RouteNotManaged, match="alien-stable") as info:
                await GatewayApiRouter().set_weight(kube, target, 20)
            assert info.value.reason == "RouteNotManaged"
            with pytest.raises(RouteNotManaged):
                await GatewayApiRouter().get_weight(kube, target)
            await GatewayApiRouter().finalize(kube, target)  # nothing of ours to restore: no error
            assert (await kube.get(f"{ROUTES}/alien"))["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        finally:
            await kube.close()

    run(scenario())


def test_managed_rules_that_disagree_read_back_as_unknown(api):
    async def scenario():
        kube = Kube(load_configuration(api))
        try:
            route = http_route("split", "default")
            route["spec"]["rules"].append({"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                                           "backendRefs": [{"name": "split-stable", "port": 8080, "weight": 90},
                                                           {"name": "split-canary", "port": 8080, "weight": 10}]})
            await kube.create(ROUTES, route)
            assert await GatewayApiRouter().get_weight(kube, _gateway_target("split")) is None
        finally:
            await kube.close()

    run(scenario())


def test_a_concurrent_route_edit_between_read_and_write_is_kept(api):
    async def scenario():
        kube = RacingKube(load_configuration(api))
        try:
            route = http_route("busy", "default")
            route["spec"]["rules"].append({"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                                           "backendRefs": [{"name": "v1-svc", "port": 8080}]})
            await kube.create(ROUTES, route)
            edited = await kube.get(f"{ROUTES}/busy")
            edited["spec"]["rules"][1]["backendRefs"][0]["port"] = 8081  # the user's own edit, meanwhile
            kube.other_edit = {"spec": {"rules": edited["spec"]["rules"]}}
            target = _gateway_target("busy")
            await GatewayApiRouter().set_weight(kube, target, 40)  # 409 once, then a fresh read
            final = await kube.get(f"{ROUTES}/busy")
            assert kube.other_edit is None
            assert final["spec"]["rules"][1]["backendRefs"] == [{"name": "v1-svc", "port": 8081}]
            assert await GatewayApiRouter().get_weight(kube, target) == 40
        finally:
            await kube.close()

    run(scenario())


SERVICES = path("v1", "services", "default")


def test_replicas_router_reselects_adopts_and_refuses_services(api):
    """Services made before the rollout label was in selectors get it; a handed-over Service is
    adopted; a Service of the same name that is not the rollout's is never taken over."""
    async def scenario():
        kube = Kube(load_configuration(api))
        try:
            spec = parse_spec(rollout("svc", replicas=2, steps=[{"weight": 50, "hold": "1s"}])["spec"],
                              PlatformPolicy(prometheus_url="http://p:9090"))
            target = RouteTarget("default", "svc", "uid-svc", spec)
            old = manifests.service(spec, "default", "svc", "uid-svc", "shared", None)
            old["spec"]["selector"] = {"app": "svc", "tier": "web"}  # as an older operator wrote it
            await kube.create(SERVICES, old)
            await ReplicasRouter().reconcile(kube, replace(target, service_selectors={"svc": old["spec"]["selector"]}))
            assert (await kube.get(f"{SERVICES}/svc"))["spec"]["selector"] == {"app": "svc", LABEL_ROLLOUT: "svc"}

            await kube.merge_patch(f"{SERVICES}/svc", {"metadata": {"ownerReferences": None}})  # handed over
            await ReplicasRouter().reconcile(kube, replace(target, uid="uid-new"))  # the watch does not index it
            adopted = await kube.get(f"{SERVICES}/svc")
            assert [r["uid"] for r in adopted["metadata"]["ownerReferences"]] == ["uid-new"]

            users = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mine", "namespace": "default"},
                     "spec": {"selector": {"app": "mine"}, "ports": [{"port": 80}]}}
            await kube.create(SERVICES, users)
            mine = parse_spec(rollout("mine", replicas=2, steps=[{"weight": 50, "hold": "1s"}])["spec"],
                              PlatformPolicy(prometheus_url="http://p:9090"))
            with pytest.raises(KubeError, match="not this rollout's") as info:
                await ReplicasRouter().reconcile(kube, RouteTarget("default", "mine", "uid-mine", mine))
            assert info.value.status == 409
            untouched = await kube.get(f"{SERVICES}/mine")
            assert untouched["spec"]["selector"] == {"app": "mine"} and not untouched["metadata"].get("ownerReferences")
        finally:
            await kube.close()

    run(scenario())


def exposition(seconds: float) -> str:
    return (f'requests_total{{revision="a"}} {int(100 * seconds)}\n'
            f'requests_total{{revision="b"}} {int(10 * seconds)}\n'
            'gauge_nan NaN\n')


@pytest.fixture(scope="module")
def prometheus():
    with scraping(exposition) as (prom, _):
        deadline = time.time() + 30
        while time.time() < deadline and not prom.query('rate(requests_total[3s])'):
            time.sleep(0.5)
        yield prom


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
