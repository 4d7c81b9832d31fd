"""The istio router against the emulated API server: only the named routes' destinations to this
rollout's Services change; everything else in the VirtualService stays as the user wrote it."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest

from modelrollout.kube import load_configuration, path
from modelrollout.routers import RouteProblem, RouteTarget, router_for
from modelrollout.routers.istio import IstioRouter, mirror_share, mirrored, weighted
from modelrollout.spec import PlatformPolicy, parse_spec
from modelrollout_lab.scenarios import rollout, virtual_service
from modelrollout_lab.traffic import resolve_mirrors, resolve_target

from lab_kube import RacingKube, with_kube

VS = path("networking.istio.io/v1", "virtualservices", "default")


def _target(name, routes=("primary",)):
    raw = rollout(name, router="istio")["spec"]
    raw["trafficRouting"]["istio"]["routes"] = list(routes)
    spec = parse_spec(raw, PlatformPolicy(prometheus_url="http://p:9090"))
    return RouteTarget("default", name, f"uid-{name}", spec)


def _dests(route):
    return [(d["destination"]["host"], d.get("weight")) for d in route["route"]]


def test_the_registry_picks_the_istio_router():
    assert isinstance(router_for(_target("pick").spec), IstioRouter)


def test_weights_move_only_in_the_named_route_and_read_back(api):
    async def scenario(kube):
        await kube.create(VS, virtual_service("iw", "default"))
        before = await kube.get(f"{VS}/iw")
        target, router = _target("iw"), IstioRouter()
        fqdn = "iw-{}.default.svc.cluster.local"
        for weight in (5, 40):
            await router.set_weight(kube, target, weight)
            assert await router.get_weight(kube, target) == weight
            after = await kube.get(f"{VS}/iw")
            admin, primary = after["spec"]["http"]
            assert json.dumps(admin) == json.dumps(before["spec"]["http"][0])  # byte for byte
            assert _dests(primary) == [(fqdn.format("stable"), 100 - weight), (fqdn.format("canary"), weight)]
            assert primary["retries"] == {"attempts": 2}
            assert primary["route"][1]["destination"]["port"] == {"number": 8080}
            assert after["spec"]["hosts"] == before["spec"]["hosts"]
            assert after["spec"]["gateways"] == before["spec"]["gateways"]
        written = (await kube.get(f"{VS}/iw"))["metadata"]["resourceVersion"]
        await router.set_weight(kube, target, 40)  # an absolute write repeated changes nothing
        assert (await kube.get(f"{VS}/iw"))["metadata"]["resourceVersion"] == written
        await router.finalize(kube, target)
        final = await kube.get(f"{VS}/iw")
        assert _dests(final["spec"]["http"][1]) == [(fqdn.format("stable"), 100)]
        assert json.dumps(final["spec"]["http"][0]) == json.dumps(before["spec"]["http"][0])
        assert await router.get_weight(kube, target) == 0

    with_kube(api, scenario)


def test_short_host_names_and_a_user_destination_beside_ours(api):
    """A short host is read as the Service; a user's destination in the same route keeps its weight,
    and the route still sums to 100."""
    async def scenario(kube):
        vs = virtual_service("mix", "default")
        vs["spec"]["http"][1]["route"] = [{"destination": {"host": "legacy"}, "weight": 50},
                                          {"destination": {"host": "mix-stable"}, "weight": 50}]
        await kube.create(VS, vs)
        target, router = _target("mix"), IstioRouter()
        await router.set_weight(kube, target, 20)
        primary = (await kube.get(f"{VS}/mix"))["spec"]["http"][1]
        assert _dests(primary) == [("legacy", 50), ("mix-stable", 40), ("mix-canary", 10)]
        assert await router.get_weight(kube, target) == 20
        await router.finalize(kube, target)
        primary = (await kube.get(f"{VS}/mix"))["spec"]["http"][1]
        assert _dests(primary) == [("legacy", 50), ("mix-stable", 50)]

    with_kube(api, scenario)


def test_missing_virtual_service_or_route_is_reported_and_nothing_is_written(api):
    async def scenario(kube):
        with pytest.raises(RouteProblem) as missing:
            await IstioRouter().set_weight(kube, _target("nope"), 10)
        assert missing.value.reason == "RouteNotFound"
        await kube.create(VS, virtual_service("named", "default"))
        before = await kube.get(f"{VS}/named")
        for routes in (("canary-route",), ("admin",)):  # absent, or not carrying our Services
            with pytest.raises(RouteProblem) as info:
                await IstioRouter().set_weight(kube, _target("named", routes), 10)
            assert info.value.reason == "RouteNotManaged"
            assert routes[0] in str(info.value) and "named-stable" in str(info.value)
        await IstioRouter().finalize(kube, _target("named", ("canary-route",)))  # nothing to restore: no error
        assert (await kube.get(f"{VS}/named"))["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    with_kube(api, scenario)


def test_a_concurrent_edit_between_read_and_write_is_kept(api):
    async def run():
        kube = RacingKube(load_configuration(api))
        try:
            await kube.create(VS, virtual_service("race", "default"))
            kube.other_edit = {"metadata": {"labels": {"edited": "by-someone"}}}
            await IstioRouter().set_weight(kube, _target("race"), 30)  # 409, then a fresh read
            vs = await kube.get(f"{VS}/race")
            assert vs["metadata"]["labels"] == {"edited": "by-someone"}
            assert await IstioRouter().get_weight(kube, _target("race")) == 30
        finally:
            await kube.close()

    asyncio.run(run())


def test_mirror_is_set_only_on_our_route_and_never_replaces_another(api):
    async def scenario(kube):
        vs = virtual_service("shadow", "default")
        vs["spec"]["http"][0]["mirror"] = {"host": "audit-svc"}  # the user's own mirror on /admin
        vs["spec"]["http"][0]["mirrorPercentage"] = {"value": 5.0}
        await kube.create(VS, vs)
        before = await kube.get(f"{VS}/shadow")
        target, router = _target("shadow"), IstioRouter()
        await router.set_weight(kube, target, 0)
        await router.set_mirror(kube, target, 100)
        assert await router.get_mirror(kube, target) == 100
        assert await router.get_weight(kube, target) == 0
        primary = (await kube.get(f"{VS}/shadow"))["spec"]["http"][1]
        assert primary["mirror"] == {"host": "shadow-canary.default.svc.cluster.local", "port": {"number": 8080}}
        assert primary["mirrorPercentage"] == {"value": 100.0}
        assert [w for _, w in _dests(primary)] == [100, 0]  # no user sees a canary answer
        admin = (await kube.get(f"{VS}/shadow"))["spec"]["http"][0]
        assert json.dumps(admin) == json.dumps(before["spec"]["http"][0])
        await router.set_mirror(kube, target, 0)
        assert "mirror" not in (await kube.get(f"{VS}/shadow"))["spec"]["http"][1]
        await router.set_mirror(kube, target, 100)
        await router.finalize(kube, target)  # deletion mid-mirror: our mirror goes with the canary
        after = (await kube.get(f"{VS}/shadow"))["spec"]["http"]
        assert "mirror" not in after[1] and "mirrorPercentage" not in after[1]
        assert json.dumps(after[0]) == json.dumps(before["spec"]["http"][0])  # the user's mirror stays

        taken = copy.deepcopy(await kube.get(f"{VS}/shadow"))
        taken["spec"]["http"][1]["mirror"] = {"host": "someone-else"}
        await kube.replace(f"{VS}/shadow", taken)
        with pytest.raises(RouteProblem) as info:
            await router.set_mirror(kube, target, 50)
        assert info.value.reason == "MirrorInUse"
        assert (await kube.get(f"{VS}/shadow"))["spec"]["http"][1]["mirror"] == {"host": "someone-else"}

    with_kube(api, scenario)


def test_a_route_with_a_mirrors_list_of_its_own_is_never_given_a_mirror_too():
    """Istio accepts `mirror` or `mirrors` on a route, not both: a route mirroring through `mirrors`
    is another tool's mirror (MirrorInUse), and removing ours leaves that list as it was."""
    route = {"name": "primary", "mirrors": [{"destination": {"host": "audit-svc"}, "percentage": {"value": 5.0}}],
             "route": [{"destination": {"host": "m-stable"}, "weight": 100}]}
    with pytest.raises(RouteProblem) as info:
        mirrored(route, _target("m"), 100)
    assert info.value.reason == "MirrorInUse" and "audit-svc" in str(info.value)
    assert mirrored(route, _target("m"), 0) == route
    assert mirror_share(route, _target("m")) == 0


def test_a_route_that_gives_the_rollout_nothing_keeps_summing_to_100():
    route = {"name": "primary", "route": [{"destination": {"host": "legacy"}, "weight": 100},
                                          {"destination": {"host": "zero-stable"}, "weight": 0}]}
    out = weighted(route, _target("zero"), 30)
    assert [d["weight"] for d in out["route"]] == [100, 0, 0]


def test_a_canary_in_a_route_shared_with_a_user_destination_never_exceeds_the_step_weight():
    """The route gives the rollout 10 of its 100: the canary gets at most the step's share of those
    10 (1 at weight 15, never 2, which would be 20 % of the rollout's traffic)."""
    route = {"name": "primary", "route": [{"destination": {"host": "legacy"}, "weight": 90},
                                          {"destination": {"host": "part-stable"}, "weight": 10}]}
    for weight in range(101):
        legacy, stable, canary = [d["weight"] for d in weighted(route, _target("part"), weight)["route"]]
        assert (legacy, stable + canary) == (90, 10)
        assert canary * 100 <= weight * 10, f"weight {weight}: canary {canary} of 10"


def _deployment(name, app, ready):
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"template": {"metadata": {"labels": {"app": app}}}}, "status": {"readyReplicas": ready}}


def _service(name, app):
    return {"metadata": {"name": name, "namespace": "default"}, "spec": {"selector": {"app": app}}}


def test_traffic_simulator_routes_by_virtual_service_and_counts_mirrors_apart():
    vs = virtual_service("sim", "default")
    primary = vs["spec"]["http"][1]
    primary["route"] = [{"destination": {"host": "sim-stable.default.svc.cluster.local"}, "weight": 75},
                        {"destination": {"host": "sim-canary"}, "weight": 25}]
    primary["mirror"] = {"host": "shadow"}
    primary["mirrorPercentage"] = {"value": 40.0}
    services = {("default", n): _service(n, a) for n, a in
                (("sim-stable", "v1"), ("sim-canary", "v2"), ("admin-svc", "admin"), ("shadow", "v3"))}
    deployments = {("default", d): _deployment(d, a, 2) for d, a in
                   (("d1", "v1"), ("d2", "v2"), ("da", "admin"), ("d3", "v3"))}
    kwargs = dict(routes={}, services=services, deployments=deployments, virtual_services={("default", "sim"): vs})
    assert resolve_target("default", "virtualservice/sim#primary", **kwargs) == {("default", "d1"): 0.75,
                                                                                ("default", "d2"): 0.25}
    assert resolve_target("default", "virtualservice/sim", **kwargs) == {("default", "da"): 1.0}  # the first route
    assert resolve_mirrors("default", "virtualservice/sim#primary", **kwargs) == {("default", "d3"): 0.4}
    assert resolve_mirrors("default", "virtualservice/sim#admin", **kwargs) == {}
