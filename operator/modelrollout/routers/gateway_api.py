"""Gateway API: the user's HTTPRoute, edited only where it references this rollout's Services.

A rule is managed when one of its backendRefs names `<rollout>-stable` or `<rollout>-canary` (see
manifests.service_name; a core Service in the route's namespace). In managed rules the router sets
the weights of exactly those two backendRefs, stable 100 - w and canary w, adding the canary one
(a copy of the stable one) when it is missing. Every other rule and backendRef, and every match,
filter and parentRef, is written back exactly as read. A route without a managed rule raises
RouteNotManaged: the router never guesses which rule is meant. During a mirror step the router
adds its own RequestMirror filter (backendRef: the canary Service, `percent`) to managed rules
and removes it after; a rule that already mirrors elsewhere raises MirrorInUse.

Writes are PUTs carrying the read resourceVersion: a concurrent edit answers 409 and the write
is retried from a fresh read, so the other edit is kept, never overwritten.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from modelrollout.kube import Kube, path
from modelrollout.manifests import service_name
from modelrollout.routers import RouteNotManaged, RouteProblem, RouteTarget, edit_entries, RevisionsInOwnDeployments, write_back

GROUP_VERSION = "gateway.networking.k8s.io/v1"

log = logging.getLogger(__name__)

Refs = list[dict[str, Any]]


def _route_path(target: RouteTarget) -> str:
    gateway = target.spec.traffic_routing.gateway_api
    assert gateway is not None
    return path(GROUP_VERSION, "httproutes", target.namespace, gateway.http_route)


def _services(rollout: str) -> tuple[str, str]:
    return service_name(rollout, "stable"), service_name(rollout, "canary")


def _refers_to(ref: dict[str, Any], namespace: str, service: str) -> bool:
    return (ref.get("name") == service and (ref.get("kind") or "Service") == "Service"
            and (ref.get("group") or "") in ("", "core") and ref.get("namespace", namespace) == namespace)


def managed_rules(route: dict[str, Any], rollout: str) -> list[int]:
    """Indices of the rules holding a backendRef to the rollout's stable or canary Service (the
    rollout's namespace is the route's: a route never points at another namespace's rollout)."""
    namespace = (route.get("metadata") or {}).get("namespace", "")
    rules = (route.get("spec") or {}).get("rules") or []
    return [i for i, rule in enumerate(rules)
            if any(_refers_to(ref, namespace, svc) for ref in rule.get("backendRefs") or [] for svc in _services(rollout))]


def weighted(refs: Refs, target: RouteTarget, weight: int) -> Refs:
    """`refs` with stable at 100 - weight and canary at weight; other backendRefs unchanged."""
    stable, canary = _services(target.name)
    has_stable = any(_refers_to(r, target.namespace, stable) for r in refs)
    has_canary = any(_refers_to(r, target.namespace, canary) for r in refs)
    out: Refs = []
    for ref in refs:
        if _refers_to(ref, target.namespace, stable):
            out.append({**ref, "weight": 100 - weight})
            if not has_canary:
                out.append({**ref, "name": canary, "weight": weight})
        elif _refers_to(ref, target.namespace, canary):
            if not has_stable:
                out.append({**ref, "name": stable, "weight": 100 - weight})
            out.append({**ref, "weight": weight})
        else:
            out.append(ref)
    return out


def stable_only(refs: Refs, target: RouteTarget) -> Refs:
    """All of this rollout's traffic on stable and the canary backendRef gone (its Service is going)."""
    _, canary = _services(target.name)
    return [ref for ref in weighted(refs, target, 0) if not _refers_to(ref, target.namespace, canary)]


def _is_our_mirror(flt: dict[str, Any], namespace: str, rollout: str) -> bool:
    backend = (flt.get("requestMirror") or {}).get("backendRef") or {}
    return flt.get("type") == "RequestMirror" and _refers_to(backend, namespace, _services(rollout)[1])


def mirrored(rule: dict[str, Any], target: RouteTarget, percent: int) -> dict[str, Any]:
    """`rule` with a RequestMirror filter copying `percent` of its requests to the canary (0: ours
    removed). Another RequestMirror filter in the rule is never replaced (MirrorInUse)."""
    stable, canary = _services(target.name)
    filters = rule.get("filters") or []
    others = [f for f in filters if not _is_our_mirror(f, target.namespace, target.name)]
    if percent and any(f.get("type") == "RequestMirror" for f in others):
        raise RouteProblem("MirrorInUse", "a managed rule already has a RequestMirror filter to another backend: "
                                          "the rollout never replaces another mirror")
    if percent:
        port = next((ref.get("port") for ref in rule.get("backendRefs") or []
                     if _refers_to(ref, target.namespace, stable) and ref.get("port")), target.spec.service.port)
        others.append({"type": "RequestMirror",
                       "requestMirror": {"backendRef": {"name": canary, "port": port}, "percent": percent}})
    if others == filters:
        return rule
    out = {k: v for k, v in rule.items() if k != "filters"}
    return {**out, "filters": others} if others else out


def mirror_share(rule: dict[str, Any], namespace: str, rollout: str) -> int:
    """The percent of the rule's requests our RequestMirror filter copies to the canary."""
    for flt in rule.get("filters") or []:
        if _is_our_mirror(flt, namespace, rollout):
            spec = flt["requestMirror"]
            fraction = spec.get("fraction")
            if fraction is not None:
                return round(100 * int(fraction.get("numerator", 0)) / int(fraction.get("denominator", 100) or 100))
            return int(spec.get("percent", 100))
    return 0


def canary_share(refs: Refs, namespace: str, rollout: str) -> int:
    """The canary's percent of what the rule sends to this rollout (a weight defaults to 1)."""
    stable, canary = _services(rollout)

    def weight_of(service: str) -> int:
        return sum(int(r.get("weight", 1)) for r in refs if _refers_to(r, namespace, service))

    total = weight_of(stable) + weight_of(canary)
    return round(100 * weight_of(canary) / total) if total else 0


class GatewayApiRouter(RevisionsInOwnDeployments):
    async def _route(self, kube: Kube, target: RouteTarget) -> tuple[dict[str, Any], list[int]]:
        """The route and its managed rules (RouteProblem: RouteNotFound, RouteNotManaged)."""
        gateway = target.spec.traffic_routing.gateway_api
        assert gateway is not None
        route = await kube.get(_route_path(target))
        if route is None:
            raise RouteProblem("RouteNotFound", f"HTTPRoute {target.namespace}/{gateway.http_route} not found")
        managed = managed_rules(route, target.name)
        if not managed:
            raise RouteNotManaged("HTTPRoute", target.namespace, gateway.http_route, _services(target.name),
                                  target.spec.service.port)
        return route, managed

    async def _edit(self, kube: Kube, target: RouteTarget, edit: Callable[[Refs], Refs]) -> None:
        """Apply `edit` to the backendRefs of each managed rule; write only when something changed."""
        def edit_refs(rule: dict[str, Any]) -> dict[str, Any]:
            refs = rule.get("backendRefs") or []
            wanted = edit(refs)
            return rule if wanted == refs else {**rule, "backendRefs": wanted}

        await self._edit_rules(kube, target, edit_refs)

    async def _edit_rules(self, kube: Kube, target: RouteTarget, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Apply `edit` to each managed rule; write only when something changed."""
        await write_back(kube, _route_path(target), lambda: self._route(kube, target),
                         lambda read: edit_entries(read[0], read[0]["spec"]["rules"], read[1], edit))

    async def reconcile(self, kube: Kube, target: RouteTarget) -> None:
        """The route is the user's; set_weight reads it (and says so when it is missing)."""

    async def set_weight(self, kube: Kube, target: RouteTarget, weight: int) -> None:
        await self._edit(kube, target, lambda refs: weighted(refs, target, weight))

    async def get_weight(self, kube: Kube, target: RouteTarget) -> int | None:
        """The managed rules' canary weight (None when they disagree)."""
        route, managed = await self._route(kube, target)
        shares = {canary_share(route["spec"]["rules"][i].get("backendRefs") or [], target.namespace, target.name)
                  for i in managed}
        return shares.pop() if len(shares) == 1 else None

    async def set_mirror(self, kube: Kube, target: RouteTarget, percent: int) -> None:
        await self._edit_rules(kube, target, lambda rule: mirrored(rule, target, percent))

    async def get_mirror(self, kube: Kube, target: RouteTarget) -> int | None:
        """The percent of the managed rules' requests copied to the canary (None when they disagree)."""
        route, managed = await self._route(kube, target)
        shares = {mirror_share(route["spec"]["rules"][i], target.namespace, target.name) for i in managed}
        return shares.pop() if len(shares) == 1 else None

    async def finalize(self, kube: Kube, target: RouteTarget) -> None:
        """Managed rules to stable alone, our mirror removed. The route itself is the user's: nothing to hand over."""
        try:
            await self._edit_rules(kube, target, lambda rule: mirrored(rule, target, 0))
            await self._edit(kube, target, lambda refs: stable_only(refs, target))
        except RouteProblem as exc:  # no route, or none of its rules ours: nothing to restore
            log.info("%s/%s deleted: %s", target.namespace, target.name, exc)
