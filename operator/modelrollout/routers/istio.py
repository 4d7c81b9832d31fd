"""Istio: the user's VirtualService, edited only in the http routes that carry this rollout.

A route is managed when it is named in `trafficRouting.istio.routes` (or, with no names given,
whenever it has a destination whose host is `<rollout>-stable` or `<rollout>-canary`) and one of
its destinations points at those Services (host as the short Service name, `name.namespace`,
`name.namespace.svc` or the FQDN: all are read; a destination the router adds copies the stable
one's form). In managed routes the router sets the weights of exactly those two destinations and
their `mirror`/`mirrorPercentage` when it mirrors; every other route, destination, match,
retry, timeout, header rule and field is written back exactly as read.

The two destinations share what the route gives this rollout (their weight sum, 100 when the
stable destination is alone), so a user destination beside them keeps its weight and the route
still sums to 100. A mirror another tool set on a managed route is never replaced (MirrorInUse).

Writes are PUTs carrying the read resourceVersion; a 409 is retried from a fresh read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from modelrollout.kube import Kube, path
from modelrollout.manifests import service_name
from modelrollout.routers import RouteProblem, RouteTarget, edit_entries, RevisionsInOwnDeployments, write_back

GROUP_VERSION = "networking.istio.io/v1"

log = logging.getLogger(__name__)

Route = dict[str, Any]


def _vs_path(target: RouteTarget) -> str:
    istio = target.spec.traffic_routing.istio
    assert istio is not None
    return path(GROUP_VERSION, "virtualservices", target.namespace, istio.virtual_service)


def _services(target: RouteTarget) -> tuple[str, str]:
    return service_name(target.name, "stable"), service_name(target.name, "canary")


def host_is(host: str | None, namespace: str, service: str) -> bool:
    """Whether a destination host names `service` in `namespace` (short, namespaced or FQDN)."""
    if not host:
        return False
    parts = host.split(".")
    if parts[0] != service:
        return False
    return len(parts) == 1 or (parts[1] == namespace and (len(parts) == 2 or parts[2] == "svc"))


def _host_of(destination: dict[str, Any]) -> str | None:
    return (destination.get("destination") or {}).get("host")


def _is(destination: dict[str, Any], target: RouteTarget, service: str) -> bool:
    return host_is(_host_of(destination), target.namespace, service)


def _renamed(host: str, old: str, new: str) -> str:
    return new + host[len(old):]


def managed_routes(vs: dict[str, Any], target: RouteTarget) -> list[int]:
    """Indices of the http routes this rollout may edit."""
    istio = target.spec.traffic_routing.istio
    assert istio is not None
    routes = (vs.get("spec") or {}).get("http") or []
    return [i for i, route in enumerate(routes)
            if (not istio.routes or route.get("name") in istio.routes)
            and any(_is(d, target, svc) for d in route.get("route") or [] for svc in _services(target))]


def _weight(destination: dict[str, Any], alone: bool) -> int:
    """Istio's reading of a weight: an omitted one is 100 for a sole destination, else 0."""
    return int(destination.get("weight", 100 if alone else 0))


def weighted(route: Route, target: RouteTarget, weight: int) -> Route:
    """`route` with the canary at `weight` percent of the rollout's share; other destinations as read."""
    stable, canary = _services(target)
    destinations = route.get("route") or []
    alone = len(destinations) == 1
    ours = [d for d in destinations if _is(d, target, stable) or _is(d, target, canary)]
    share = sum(_weight(d, alone) for d in ours)
    if not share and len(ours) == len(destinations):
        share = 100  # the route is ours alone: it must still sum to 100
    canary_weight = share * weight // 100  # rounded down: the canary never gets more than the step's weight
    out: list[dict[str, Any]] = []
    for d in destinations:
        if _is(d, target, stable):
            out.append({**d, "weight": share - canary_weight})
            if not any(_is(o, target, canary) for o in ours):
                host = _host_of(d) or stable
                out.append({**d, "destination": {**d["destination"], "host": _renamed(host, stable, canary)},
                            "weight": canary_weight})
        elif _is(d, target, canary):
            if not any(_is(o, target, stable) for o in ours):
                host = _host_of(d) or canary
                out.append({**d, "destination": {**d["destination"], "host": _renamed(host, canary, stable)},
                            "weight": share - canary_weight})
            out.append({**d, "weight": canary_weight})
        else:
            out.append(d)
    return {**route, "route": out}


def _mirror_is_ours(route: Route, target: RouteTarget) -> bool:
    mirror = route.get("mirror")
    return mirror is None or host_is(mirror.get("host"), target.namespace, _services(target)[1])


def mirrored(route: Route, target: RouteTarget, percent: int) -> Route:
    """`route` copying `percent` of its requests to the canary (none: our mirror removed). Istio takes
    `mirror` or `mirrors` on a route, not both: a `mirrors` list is another tool's mirror."""
    if not _mirror_is_ours(route, target):
        raise RouteProblem("MirrorInUse", f"route {route.get('name') or '(unnamed)'} already mirrors to "
                                          f"{route['mirror'].get('host')}: the rollout never replaces another mirror")
    if percent and route.get("mirrors"):
        hosts = ", ".join(str((m.get("destination") or {}).get("host")) for m in route["mirrors"])
        raise RouteProblem("MirrorInUse", f"route {route.get('name') or '(unnamed)'} already mirrors to {hosts} "
                                          f"(mirrors): Istio takes mirror or mirrors, and the rollout never "
                                          f"replaces another mirror")
    out = {k: v for k, v in route.items() if k not in ("mirror", "mirrorPercentage")}
    if percent:
        stable, canary = _services(target)
        host = next((_host_of(d) for d in route.get("route") or [] if _is(d, target, stable)), stable) or stable
        port = next(((d.get("destination") or {}).get("port") for d in route.get("route") or []
                     if _is(d, target, stable)), None)
        out["mirror"] = {"host": _renamed(host, stable, canary), **({"port": port} if port else {})}
        out["mirrorPercentage"] = {"value": float(percent)}
    return out


def stable_only(route: Route, target: RouteTarget) -> Route:
    """All of the rollout's share on stable, the canary destination and our mirror gone."""
    _, canary = _services(target)
    route = weighted(route, target, 0)
    route = {**route, "route": [d for d in route["route"] if not _is(d, target, canary)]}
    return mirrored(route, target, 0) if _mirror_is_ours(route, target) else route


def canary_share(route: Route, target: RouteTarget) -> int:
    """The canary's percent of what the route sends to this rollout."""
    stable, canary = _services(target)
    destinations = route.get("route") or []
    alone = len(destinations) == 1

    def weight_of(service: str) -> int:
        return sum(_weight(d, alone) for d in destinations if _is(d, target, service))

    total = weight_of(stable) + weight_of(canary)
    return round(100 * weight_of(canary) / total) if total else 0


def mirror_share(route: Route, target: RouteTarget) -> int:
    """The percent of the route's requests copied to the canary (Istio: 100 when unset)."""
    mirror = route.get("mirror")
    if mirror is None or not host_is(mirror.get("host"), target.namespace, _services(target)[1]):
        return 0
    return round(float((route.get("mirrorPercentage") or {}).get("value", 100.0)))


class IstioRouter(RevisionsInOwnDeployments):
    async def _virtual_service(self, kube: Kube, target: RouteTarget) -> tuple[dict[str, Any], list[int]]:
        """The VirtualService and its managed routes (RouteProblem: RouteNotFound, RouteNotManaged)."""
        istio = target.spec.traffic_routing.istio
        assert istio is not None
        vs = await kube.get(_vs_path(target))
        if vs is None:
            raise RouteProblem("RouteNotFound", f"VirtualService {target.namespace}/{istio.virtual_service} not found")
        managed = managed_routes(vs, target)
        named = {vs["spec"]["http"][i].get("name") for i in managed}
        missing = [name for name in istio.routes if name not in named]
        if not managed or missing:
            which = f"no http route named {', '.join(missing)}" if missing else "no http route"
            stable = _services(target)[0]
            raise RouteProblem("RouteNotManaged",
                               f"VirtualService {target.namespace}/{istio.virtual_service} has {which} with a "
                               f"destination to {' or '.join(_services(target))}: add {{destination: {{host: {stable}, "
                               f"port: {{number: {target.spec.service.port}}}}}}} to the route(s) this rollout should "
                               f"carry; other routes are never edited")
        return vs, managed

    async def _edit(self, kube: Kube, target: RouteTarget, edit: Callable[[Route], Route]) -> None:
        """Apply `edit` to each managed route; write only when something changed."""
        await write_back(kube, _vs_path(target), lambda: self._virtual_service(kube, target),
                         lambda read: edit_entries(read[0], read[0]["spec"]["http"], read[1], edit))

    async def _agreed(self, kube: Kube, target: RouteTarget, read: Callable[[Route, RouteTarget], int]) -> int | None:
        vs, managed = await self._virtual_service(kube, target)
        values = {read(vs["spec"]["http"][i], target) for i in managed}
        return values.pop() if len(values) == 1 else None

    async def reconcile(self, kube: Kube, target: RouteTarget) -> None:
        """The VirtualService is the user's; set_weight reads it (and says so when it is missing)."""

    async def set_weight(self, kube: Kube, target: RouteTarget, weight: int) -> None:
        await self._edit(kube, target, lambda route: weighted(route, target, weight))

    async def get_weight(self, kube: Kube, target: RouteTarget) -> int | None:
        """The managed routes' canary weight (None when they disagree)."""
        return await self._agreed(kube, target, canary_share)

    async def set_mirror(self, kube: Kube, target: RouteTarget, percent: int) -> None:
        await self._edit(kube, target, lambda route: mirrored(route, target, percent))

    async def get_mirror(self, kube: Kube, target: RouteTarget) -> int | None:
        """The percent of the managed routes' requests copied to the canary (None when they disagree)."""
        return await self._agreed(kube, target, mirror_share)

    async def finalize(self, kube: Kube, target: RouteTarget) -> None:
        """Managed routes to stable alone, our mirror removed. The VirtualService stays the user's."""
        try:
            await self._edit(kube, target, lambda route: stable_only(route, target))
        except RouteProblem as exc:  # no VirtualService, or no route of ours: nothing to restore
            log.info("%s/%s deleted: %s", target.namespace, target.name, exc)
