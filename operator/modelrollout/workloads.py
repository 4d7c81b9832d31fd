"""Converge owned Deployments and Services to what the core's `Desired` says, with absolute writes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelrollout import manifests, owned
from modelrollout.core import Desired
from modelrollout.kube import Kube, path
from modelrollout.names import LABEL_REVISION, LABEL_ROLE, rollout_selector
from modelrollout.spec import RolloutSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObservedDeployment:
    name: str
    replicas: int
    ready: int
    up_to_date: bool
    template: Mapping[str, Any] | None = field(default=None, compare=False)  # None: not compared
    recorded_template: str | None = None  # manifests.ANNOTATION_TEMPLATE
    rolled_out: bool = True  # every pod runs the current template (status.updatedReplicas)


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
                # already there (409): the watch had not told us yet, or a handed-over one to adopt
                await owned.create_or_adopt(kube, collection, manifests.deployment(spec, namespace, rollout, uid, replicas),
                                            rollout, uid)
            else:  # a Deployment handed over by a deleted rollout of this name, adopted as stable
                await _adopt(kube, namespace, rollout, uid, revision, replicas)
        elif current.replicas < replicas:
            await kube.merge_patch(path("apps/v1", "deployments", namespace, current.name), {"spec": {"replicas": replicas}})


async def _adopt(kube: Kube, namespace: str, rollout: str, uid: str, revision: str, replicas: int) -> None:
    deployment_path = path("apps/v1", "deployments", namespace, manifests.deployment_name(rollout, revision))
    current = await kube.get(deployment_path)
    if current is None:
        log.warning("%s/%s: revision %s has no Deployment and its template is gone", namespace, rollout, revision)
        return
    adopted = await owned.adopt(kube, deployment_path, {"kind": "Deployment", **current}, rollout, uid)
    if int((adopted.get("spec") or {}).get("replicas") or 0) < replicas:
        await kube.merge_patch(deployment_path, {"spec": {"replicas": replicas}})


async def restore_drift(kube: Kube, spec: RolloutSpec, namespace: str, rollout: str, desired: Desired,
                        observed: Mapping[str, ObservedDeployment], service_selectors: Mapping[str, dict],
                        emit: Callable[[str, str, str], None]) -> list[str]:
    """Put back the pod template of each kept revision whose Deployment was edited (one merge patch each,
    a `DriftCorrected` event naming it and what differed), and report each owned Service whose
    selector is none this rollout writes (ensure_services and the router re-select it next).
    Returns what differed, and each revision whose pods do not all run its template yet: while
    any, no revision is reported stable."""
    drifted = []
    shared = manifests.service_name(rollout, "shared")
    for name, selector in service_selectors.items():
        revision = selector.get(LABEL_REVISION)  # the shared Service selects every revision, the others one we run
        if (selector != manifests.service_selector(spec, rollout, revision)
                or (revision is None) != (name == shared) or (revision is not None and revision not in observed)):
            emit("Warning", "DriftCorrected", f"Service {namespace}/{name}: spec.selector {selector} is not one "
                                              f"this rollout writes: restored")
            drifted.append(f"Service {name} selected {selector}: restored")
    for revision, current in observed.items():
        if desired.replicas.get(revision) is None:
            continue
        where = template_drift(spec, rollout, revision, current)
        if where is not None:
            intended = _intended_template(spec, rollout, revision, current)
            assert intended is not None
            await kube.merge_patch(path("apps/v1", "deployments", namespace, current.name),
                                   manifests.template_restore_patch(intended, dict(current.template or {})))
            emit("Warning", "DriftCorrected",
                 f"Deployment {namespace}/{current.name}: {where} differed from revision {revision}: restored")
            drifted.append(f"Deployment {current.name} ran another pod template ({where} differed): restored, "
                           f"its pods are being replaced")
        elif not current.rolled_out:
            drifted.append(f"Deployment {current.name}: pods of another template are still being replaced")
    return drifted


def _intended_template(spec: RolloutSpec, rollout: str, revision: str,
                       current: ObservedDeployment) -> dict[str, Any] | None:
    """The revision's pod template: the spec's, or the one recorded on its Deployment (None: not
    known, or the Deployment's template not observed)."""
    if current.template is None:
        return None
    if revision == spec.revision:
        return manifests.pod_template(spec, rollout)
    return manifests.recorded_template(current.recorded_template)


def template_drift(spec: RolloutSpec, rollout: str, revision: str, current: ObservedDeployment) -> str | None:
    """Where the Deployment's pod template differs from its revision's (None: it does not, or the
    revision's template is not known: neither the spec's nor recorded on the Deployment)."""
    intended = _intended_template(spec, rollout, revision, current)
    return None if intended is None else manifests.template_drift(intended, dict(current.template or {}))


def runs_its_revision(spec: RolloutSpec, rollout: str, revision: str, current: ObservedDeployment) -> bool:
    """Every pod of the Deployment runs its revision's template: only then may it become stable."""
    return current.up_to_date and current.rolled_out and template_drift(spec, rollout, revision, current) is None


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
        await owned.ensure_service(kube, wanted, (observed_selectors or {}).get(wanted["metadata"]["name"]), rollout, uid)


async def hand_over(kube: Kube, namespace: str, rollout: str, uid: str, stable_revision: str) -> None:
    """On deletion: what users' traffic reaches loses our ownerReference, so the garbage collector
    keeps it: the stable revision's Deployment, `<rollout>-stable` and the shared `<rollout>`
    Service. Labels stay, so a re-created rollout of the same name adopts them. The rest goes."""
    ours = rollout_selector(rollout)
    deployments = await kube.list(path("apps/v1", "deployments", namespace),
                                  label_selector=f"{ours},{LABEL_REVISION}={stable_revision}")
    for deployment in deployments:
        await owned.release(kube, path("apps/v1", "deployments", namespace, deployment["metadata"]["name"]),
                            deployment, uid)
    for service in await kube.list(path("v1", "services", namespace), label_selector=ours):
        if service["metadata"].get("labels", {}).get(LABEL_ROLE) in ("stable", "shared"):
            await owned.release(kube, path("v1", "services", namespace, service["metadata"]["name"]), service, uid)
