"""Gateway API: the user's HTTPRoute gets two weighted backendRefs, `<rollout>-stable` and `<rollout>-canary`.

We own only the backendRefs of the route's rules; parentRefs, matches and filters stay the
user's. Writes are PUTs with the read resourceVersion, so a concurrent edit gives 409 and
the next reconcile retries from a fresh read instead of overwriting it.
"""

from __future__ import annotations

from typing import Any

from modelrollout.kube import Kube, KubeError, path
from modelrollout.routers import RouteTarget

GROUP_VERSION = "gateway.networking.k8s.io/v1"


def _route_path(target: RouteTarget) -> str:
    gateway = target.spec.traffic_routing.gateway_api
    assert gateway is not None
    return path(GROUP_VERSION, "httproutes", target.namespace, gateway.http_route)


def backend_refs(target: RouteTarget, weight: int) -> list[dict[str, Any]]:
    port = target.spec.service.port
    return [
        {"name": f"{target.name}-stable", "port": port, "weight": 100 - weight},
        {"name": f"{target.name}-canary", "port": port, "weight": weight},
    ]


class GatewayApiRouter:
    async def _route(self, kube: Kube, target: RouteTarget) -> dict[str, Any]:
        route = await kube.get(_route_path(target))
        if route is None:
            gateway = target.spec.traffic_routing.gateway_api
            raise KubeError(404, "NotFound", f"HTTPRoute {target.namespace}/{gateway.http_route if gateway else ''} not found")
        return route

    async def reconcile(self, kube: Kube, target: RouteTarget) -> None:
        """The route is the user's; set_weight reads it (and says so when it is missing)."""

    async def set_weight(self, kube: Kube, target: RouteTarget, weight: int) -> None:
        route = await self._route(kube, target)
        wanted = backend_refs(target, weight)
        rules = route.get("spec", {}).get("rules") or [{}]
        if all(rule.get("backendRefs") == wanted for rule in rules):
            return
        route["spec"]["rules"] = [{**rule, "backendRefs": wanted} for rule in rules]
        await kube.replace(_route_path(target), route)

    async def get_weight(self, kube: Kube, target: RouteTarget) -> int | None:
        route = await self._route(kube, target)
        for ref in (route.get("spec", {}).get("rules") or [{}])[0].get("backendRefs") or []:
            if ref.get("name") == f"{target.name}-canary":
                return int(ref.get("weight", 1))
        return 0

    async def finalize(self, kube: Kube, target: RouteTarget) -> None:
        try:
            await self.set_weight(kube, target, 0)
        except KubeError as exc:
            if exc.status != 404:
                raise
