"""Traffic routers: one module each behind the `Router` protocol, picked from `ROUTERS`.

Writes are absolute ("canary weight 30"), so repeating one is harmless, and each router can
read back the weight it set.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from modelrollout import owned
from modelrollout.core import HandedOver
from modelrollout.kube import Kube, KubeError
from modelrollout.manifests import service_name
from modelrollout.spec import RolloutSpec


@dataclass(frozen=True)
class RouteTarget:
    namespace: str
    name: str
    uid: str
    spec: RolloutSpec
    # Selectors of the rollout's Services as the watch saw them (name -> selector); may lag.
    service_selectors: Mapping[str, dict[str, str]] = field(default_factory=dict)
    # Ready pods per revision as the watch saw them, and the stable revision: every other
    # revision's Ready pod is canary traffic (a rolled-back canary serves until it is gone).
    ready: Mapping[str, int] = field(default_factory=dict)
    stable_revision: str | None = None
    # The canary revision of the state acted on: the pass's status before deciding, then the
    # decided one (None: no canary, e.g. after a rollback).
    canary_revision: str | None = None


# Routers whose platform runs the revisions' pods (the operator creates no Deployments or Services).
RUNS_WORKLOADS = frozenset({"kserve"})


class RouteProblem(RuntimeError):
    """The routing object cannot be acted on as the spec says; `reason` becomes the rollout's
    `Applied` condition reason (RouteNotFound, RouteNotManaged, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RouteNotManaged(RouteProblem):
    """The user's route has no rule that references this rollout's Services, so there is nothing
    the router may edit. The message says which backendRef to add."""

    def __init__(self, kind: str, namespace: str, name: str, services: tuple[str, ...], port: int) -> None:
        wanted = " or ".join(services)
        super().__init__("RouteNotManaged",
                         f"{kind} {namespace}/{name} has no rule with a backendRef to {wanted}: add "
                         f"{{name: {services[0]}, port: {port}}} to the backendRefs of the rule(s) this rollout "
                         f"should carry; other rules are never edited")



WRITE_ATTEMPTS = 3  # reads and writes before a run of 409s is reported
Read = TypeVar("Read")


async def write_back(kube: Kube, object_path: str, read: Callable[[], Awaitable[Read]],
                     change: Callable[[Read], dict[str, Any] | None]) -> None:
    """Read a user's object, change only what this rollout owns in it (`change` returns the object
    to write, or None when nothing changes) and PUT it back with the read resourceVersion: a
    concurrent edit answers 409 and is retried from a fresh read, so it is kept, never overwritten."""
    for attempt in range(WRITE_ATTEMPTS):
        wanted = change(await read())
        if wanted is None:
            return
        try:
            await kube.replace(object_path, wanted)
            return
        except KubeError as exc:
            if exc.status != 409 or attempt == WRITE_ATTEMPTS - 1:
                raise


def edit_entries(obj: dict[str, Any], entries: list[dict[str, Any]], owned: list[int],
                 edit: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
    """Apply `edit` to the owned entries (rules, routes) of `obj`'s list; `obj` if one changed, else None."""
    changed = False
    for i in owned:
        wanted = edit(entries[i])
        if wanted != entries[i]:
            entries[i] = wanted
            changed = True
    return obj if changed else None

class Router(Protocol):
    async def reconcile(self, kube: Kube, target: RouteTarget) -> None:
        """Make sure the routing objects exist."""

    async def set_weight(self, kube: Kube, target: RouteTarget, weight: int) -> None:
        """Send `weight` percent to the canary Service and the rest to the stable one."""

    async def get_weight(self, kube: Kube, target: RouteTarget) -> int | None:
        """The canary weight in effect now, read back from the cluster."""

    async def set_mirror(self, kube: Kube, target: RouteTarget, percent: int) -> None:
        """Copy `percent` of the live requests the router carries to the canary (0: no mirror);
        answers from the copies are discarded."""

    async def get_mirror(self, kube: Kube, target: RouteTarget) -> int | None:
        """The mirror percent in effect now, read back from the cluster."""

    async def finalize(self, kube: Kube, target: RouteTarget) -> None:
        """All traffic to stable, before the rollout goes."""

    async def handed_over(self, kube: Kube, target: RouteTarget) -> HandedOver | None:
        """The revision a deleted rollout of this name left serving users (finalize, `onDelete:
        Handover`), which a re-created one adopts as stable; None when there is none."""

    async def addresses(self, kube: Kube, target: RouteTarget) -> Mapping[str, str] | None:
        """Where a gate reaches each revision directly, as host[:port] by role ("canary",
        "stable"); a role with no address of its own is left out. None: not known yet."""


class RevisionsInOwnDeployments:
    """What the routers whose revisions run in the rollout's own Deployments, each selected by one of
    its own Services, share: a deleted namesake hands Deployments over, and gates reach the Services."""

    async def handed_over(self, kube: Kube, target: RouteTarget) -> HandedOver | None:
        return await owned.handed_over(kube, target.namespace, target.name, target.uid)

    async def addresses(self, kube: Kube, target: RouteTarget) -> dict[str, str]:
        return {role: f"{service_name(target.name, role)}.{target.namespace}.svc:{target.spec.service.port}"
                for role in ("canary", "stable")}


def router_for(spec: RolloutSpec) -> Router:
    from modelrollout.routers.gateway_api import GatewayApiRouter
    from modelrollout.routers.istio import IstioRouter
    from modelrollout.routers.kserve import KServeRouter
    from modelrollout.routers.replicas import ReplicasRouter

    routers: dict[str, Router] = {"replicas": ReplicasRouter(), "gatewayAPI": GatewayApiRouter(),
                                  "istio": IstioRouter(), "kserve": KServeRouter()}
    return routers[spec.traffic_routing.router]
