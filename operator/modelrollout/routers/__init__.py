"""Traffic routers: one module each behind the `Router` protocol, picked from `ROUTERS`.

Writes are absolute ("canary weight 30"), so repeating one is harmless, and each router can
read back the weight it set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from modelrollout.kube import Kube
from modelrollout.spec import RolloutSpec


@dataclass(frozen=True)
class RouteTarget:
    namespace: str
    name: str
    uid: str
    spec: RolloutSpec
    # Selectors of the rollout's Services as the watch saw them (name -> selector); may lag.
    service_selectors: Mapping[str, dict[str, str]] = field(default_factory=dict)


class Router(Protocol):
    async def reconcile(self, kube: Kube, target: RouteTarget) -> None:
        """Make sure the routing objects exist."""

    async def set_weight(self, kube: Kube, target: RouteTarget, weight: int) -> None:
        """Send `weight` percent to the canary Service and the rest to the stable one."""

    async def get_weight(self, kube: Kube, target: RouteTarget) -> int | None:
        """The canary weight in effect now, read back from the cluster."""

    async def finalize(self, kube: Kube, target: RouteTarget) -> None:
        """All traffic to stable, before the rollout goes."""


def router_for(spec: RolloutSpec) -> Router:
    from modelrollout.routers.gateway_api import GatewayApiRouter
    from modelrollout.routers.replicas import ReplicasRouter

    routers: dict[str, Router] = {"replicas": ReplicasRouter(), "gatewayAPI": GatewayApiRouter()}
    return routers[spec.traffic_routing.router]
