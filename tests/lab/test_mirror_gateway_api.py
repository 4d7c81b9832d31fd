"""The gatewayAPI router's mirror (a RequestMirror filter with `percent`) against the emulated API
server, and the traffic simulator's reading of it: copies counted apart from served answers."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest

from modelrollout.kube import Kube, load_configuration, path
from modelrollout.routers import RouteProblem, RouteTarget
from modelrollout.routers.gateway_api import GatewayApiRouter
from modelrollout.spec import PlatformPolicy, parse_spec
from modelrollout_lab.scenarios import http_route, rollout
from modelrollout_lab.traffic import resolve_mirrors, resolve_target

ROUTES = path("gateway.networking.k8s.io/v1", "httproutes", "default")
USER_FILTER = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-team", "value": "ml"}]}}
ADMIN_RULE = {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
              "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "audit", "port": 80}}}],
              "backendRefs": [{"name": "admin-svc", "port": 9090}]}


def _target(name):
    raw = rollout(name, router="gatewayAPI", steps=[{"mirror": 50, "hold": "5s"}, {"weight": 20, "hold": "5s"}])
    return RouteTarget("default", name, f"uid-{name}", parse_spec(raw["spec"], PlatformPolicy(prometheus_url="http://p:9090")))


def test_the_mirror_filter_goes_only_into_our_rule_beside_the_users_filters(api):
    async def scenario():
        kube = Kube(load_configuration(api))
        try:
            route = http_route("gm", "default")
            route["spec"]["rules"][0]["filters"] = [copy.deepcopy(USER_FILTER)]
            route["spec"]["rules"].append(copy.deepcopy(ADMIN_RULE))
            await kube.create(ROUTES, route)
            before = await kube.get(f"{ROUTES}/gm")
            target, router = _target("gm"), GatewayApiRouter()
            await router.set_weight(kube, target, 0)
            await router.set_mirror(kube, target, 50)
            assert (await router.get_mirror(kube, target), await router.get_weight(kube, target)) == (50, 0)
            rules = (await kube.get(f"{ROUTES}/gm"))["spec"]["rules"]
            assert rules[0]["filters"] == [USER_FILTER, {"type": "RequestMirror", "requestMirror": {
                "backendRef": {"name": "gm-canary", "port": 8080}, "percent": 50}}]
            assert json.dumps(rules[1]) == json.dumps(before["spec"]["rules"][1])  # the user's own mirror stays
            await router.finalize(kube, target)  # deletion removes our mirror with the canary
            rules = (await kube.get(f"{ROUTES}/gm"))["spec"]["rules"]
            assert rules[0]["filters"] == [USER_FILTER] and await router.get_mirror(kube, target) == 0

            taken = await kube.get(f"{ROUTES}/gm")
            taken["spec"]["rules"][0]["filters"].append(copy.deepcopy(ADMIN_RULE["filters"][0]))
            await kube.replace(f"{ROUTES}/gm", taken)
            with pytest.raises(RouteProblem) as info:
                await router.set_mirror(kube, target, 50)
            assert info.value.reason == "MirrorInUse"
        finally:
            await kube.close()

    asyncio.run(scenario())


def test_traffic_simulator_counts_request_mirror_copies_by_percent():
    route = http_route("sim", "default")
    route["spec"]["rules"][0]["filters"] = [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"name": "sim-canary", "port": 8080}, "percent": 30}}]
    services = {("default", n): {"metadata": {"name": n, "namespace": "default"}, "spec": {"selector": {"app": a}}}
                for n, a in (("sim-stable", "v1"), ("sim-canary", "v2"))}
    deployments = {("default", d): {"metadata": {"name": d, "namespace": "default"},
                                    "spec": {"template": {"metadata": {"labels": {"app": a}}}},
                                    "status": {"readyReplicas": 1}} for d, a in (("d1", "v1"), ("d2", "v2"))}
    kwargs = dict(routes={("default", "sim"): route}, services=services, deployments=deployments)
    assert resolve_target("default", "httproute/sim", **kwargs) == {("default", "d1"): 1.0}  # served: stable only
    assert resolve_mirrors("default", "httproute/sim", **kwargs) == {("default", "d2"): 0.3}
