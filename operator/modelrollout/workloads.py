"""Converge owned Deployments and Services to what the core's `Desired` says, with absolute writes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from modelrollout import manifests
from modelrollout.core import Desired
from modelrollout.kube import Kube, KubeError, path
from modelrollout.spec import RolloutSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObservedDeployment:
    name: str
    replicas: int
    ready: int
    up_to_date: bool


async def _create(kube: Kube, collection: str, body: dict) -> None:
    try:
        await kube.create(collection, body)
    except KubeError as exc:
        if exc.status != 409:  # already there: the watch had not told us yet
            raise


async def scale_up(kube: Kube, spec: RolloutSpec, namespace: str, rollout: str, uid: str,
                   desired: Desired, observed: Mapping[str, ObservedDeployment]) -> None:
    """Create missing revisions and raise replica counts (before traffic moves to them)."""
    collection = path("apps/v1", "deployments", namespace)
    for revision, replicas in desired.replicas.items():
        if replicas is None or replicas < 0:
            continue
        current = observed.get(revision)
        if current is None:
            if revision == spec.revision:
                await _create(kube, collection, manifests.deployment(spec, namespace, rollout, uid, replicas))
            else:
                log.warning("%s/%s: revision %s has no Deployment and its template is gone", namespace, rollout, revision)
        elif current.replicas < replicas:
            await kube.merge_patch(path("apps/v1", "deployments", namespace, current.name), {"spec": {"replicas": replicas}})


async def scale_down(kube: Kube, namespace: str, desired: Desired,
                     observed: Mapping[str, ObservedDeployment]) -> None:
    """Lower replica counts and delete revisions nobody needs (after traffic left them)."""
    for revision, current in observed.items():
        wanted = desired.replicas.get(revision)
        target = path("apps/v1", "deployments", namespace, current.name)
        if wanted is None:
            await kube.delete(target)
        elif 0 <= wanted < current.replicas:
            await kube.merge_patch(target, {"spec": {"replicas": wanted}})


async def ensure_services(kube: Kube, spec: RolloutSpec, namespace: str, rollout: str, uid: str,
                          desired: Desired, observed_selectors: Mapping[str, dict] | None) -> None:
    """`<rollout>-stable` selects the stable revision, `<rollout>-canary` the canary (or stable when none)."""
    for role, revision in (("stable", desired.stable_revision), ("canary", desired.canary_revision or desired.stable_revision)):
        wanted = manifests.service(spec, namespace, rollout, uid, role, revision)
        name = wanted["metadata"]["name"]
        current = (observed_selectors or {}).get(name)
        if current is None:
            existing = await kube.get(path("v1", "services", namespace, name))
            if existing is None:
                await _create(kube, path("v1", "services", namespace), wanted)
                continue
            current = existing["spec"].get("selector") or {}
        if current != wanted["spec"]["selector"]:
            await kube.merge_patch(path("v1", "services", namespace, name), {"spec": {"selector": wanted["spec"]["selector"]}})
