"""The operator's access self-check: `kubectl auth can-i` for everything it needs, once at start-up.

A missing permission otherwise shows up late and far from its cause (a 403 on some status
write in the middle of a release). At start-up the operator asks the API server, with
SelfSubjectAccessReviews on its own credentials, for each permission below in each served
namespace (or cluster-wide), and logs every one it lacks:

    missing permission: cannot patch modelrollouts/status in namespace ml (writes what it learns to status)

A router's resource (HTTPRoutes, VirtualServices, InferenceServices) is needed only by the
rollouts that use that router, and a chart may leave it out on purpose (``rbac.gatewayAPI: false``):
its absence is a warning that names the router, the others are errors. Each missing permission
is also the series ``modelrollout_permission_missing{verb,resource,group,namespace} 1``.
The check never stops the operator: what it may still do, it does.

The list mirrors the chart's RBAC (helm/modelrollout/templates/_helpers.tpl, namespacedRules)
restricted to the calls the code makes; the lab test that drops a permission keeps them in step.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

from modelrollout.kube import Kube
from modelrollout.metrics import REGISTRY
from modelrollout.names import GROUP

logger = logging.getLogger(__name__)

REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"

MISSING = Gauge("modelrollout_permission_missing",
                "1 for each permission the operator needs and was denied at start-up (SelfSubjectAccessReview).",
                ["verb", "resource", "group", "namespace"], registry=REGISTRY)


@dataclass(frozen=True)
class Permission:
    group: str
    resource: str  # "plural" or "plural/subresource"
    verbs: tuple[str, ...]
    why: str
    router: str | None = None  # only rollouts with this spec.trafficRouting need it


NEEDED: tuple[Permission, ...] = (
    Permission(GROUP, "modelrollouts", ("get", "list", "watch", "patch"),
               "watches rollouts, keeps its finalizer on them"),
    Permission(GROUP, "modelrollouts/status", ("patch",), "writes what it learns to status"),
    Permission("", "events", ("create",), "explains each decision in an event"),
    Permission("apps", "deployments", ("get", "list", "watch", "create", "patch", "delete"),
               "runs the stable and canary Deployments"),
    Permission("", "services", ("get", "list", "watch", "create", "patch"),
               "runs the stable and canary Services"),
    Permission("batch", "jobs", ("get", "create"), "runs evaluation Jobs (gates)"),
    Permission("gateway.networking.k8s.io", "httproutes", ("get", "update"), "sets backend weights",
               router="gatewayAPI"),
    Permission("networking.istio.io", "virtualservices", ("get", "update"), "sets destination weights",
               router="istio"),
    Permission("serving.kserve.io", "inferenceservices", ("get", "update"), "sets canaryTrafficPercent",
               router="kserve"),
)


@dataclass(frozen=True)
class Denied:
    verb: str
    permission: Permission
    namespace: str  # "" = cluster-wide

    def __str__(self) -> str:
        where = f"in namespace {self.namespace}" if self.namespace else "cluster-wide"
        group = f"API group {self.permission.group or 'core'}"
        why = self.permission.why
        if self.permission.router:
            why += f"; needed only by rollouts with trafficRouting.{self.permission.router}"
        return f"cannot {self.verb} {self.permission.resource} {where} ({group}; {why})"


def _review(verb: str, permission: Permission, namespace: str) -> dict[str, Any]:
    resource, _, subresource = permission.resource.partition("/")
    attributes = {"verb": verb, "group": permission.group, "resource": resource}
    if subresource:
        attributes["subresource"] = subresource
    if namespace:
        attributes["namespace"] = namespace
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes}}


async def missing_permissions(kube: Kube, namespaces: tuple[str, ...]) -> list[Denied]:
    """Every needed permission the API server denies, in each namespace ("" = cluster-wide)."""
    checks = [(verb, permission, namespace) for namespace in (namespaces or ("",))
              for permission in NEEDED for verb in permission.verbs]
    answers = await asyncio.gather(*(kube.create(REVIEWS, _review(*check)) for check in checks))
    return [Denied(*check) for check, answer in zip(checks, answers)
            if not (answer.get("status") or {}).get("allowed")]


async def self_check(kube: Kube, namespaces: tuple[str, ...]) -> list[Denied]:
    """Log and export what the operator may not do; never raises (the operator runs on regardless)."""
    MISSING.clear()
    try:
        denied = await missing_permissions(kube, namespaces)
    except Exception as exc:  # 401 (credentials refused), no reviews API, an outage: say so and go on
        logger.error("access self-check failed, permissions unknown: %s", exc)
        return []
    for item in denied:
        logger.log(logging.WARNING if item.permission.router else logging.ERROR, "missing permission: %s", item)
        MISSING.labels(item.verb, item.permission.resource, item.permission.group, item.namespace).set(1)
    if not denied:
        logger.info("access self-check: all %d permissions granted", sum(len(p.verbs) for p in NEEDED))
    return denied
