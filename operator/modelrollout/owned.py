"""Create, adopt and hand over the objects a rollout owns (Deployments, Services).

A handover (deletion with `onDelete: Handover`) removes our ownerReference and keeps our labels;
a ModelRollout of the same name created later adopts such an object instead of failing on 409.
An object with our name that another rollout or controller owns is never taken over.
"""

from __future__ import annotations

from typing import Any

from modelrollout import manifests
from modelrollout.core import HandedOver
from modelrollout.kube import Kube, KubeError, path
from modelrollout.names import LABEL_MODEL_VERSION, LABEL_REVISION, LABEL_ROLLOUT, rollout_selector


def _describe(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', 'object')} {meta.get('namespace')}/{meta.get('name')}"


async def adopt(kube: Kube, object_path: str, current: dict[str, Any], rollout: str, uid: str) -> dict[str, Any]:
    """The object, now controlled by this rollout; KubeError 409 when it is someone else's."""
    if not manifests.adoptable(current, rollout, uid):
        labels = (current.get("metadata") or {}).get("labels") or {}
        owners = [f"{r.get('kind')}/{r.get('name')}" for r in (current["metadata"].get("ownerReferences") or [])]
        raise KubeError(409, "AlreadyExists",
                        f"{_describe(current)} exists and is not this rollout's ({LABEL_ROLLOUT}="
                        f"{labels.get(LABEL_ROLLOUT, '<none>')}, owners {owners or 'none'}): rename or delete it")
    patch = manifests.adopt_patch(current, rollout, uid)
    return current if patch is None else await kube.merge_patch(object_path, patch)


async def create_or_adopt(kube: Kube, collection: str, body: dict[str, Any], rollout: str, uid: str) -> dict[str, Any]:
    """Create `body`; when its name is taken (409), adopt the existing object if it is ours to take."""
    try:
        return await kube.create(collection, body)
    except KubeError as exc:
        if exc.status != 409:
            raise
    object_path = f"{collection}/{body['metadata']['name']}"
    current = await kube.get(object_path)
    if current is None:  # deleted meanwhile: the next reconcile creates it
        return {}
    return await adopt(kube, object_path, {"kind": body.get("kind"), **current}, rollout, uid)


async def handed_over(kube: Kube, namespace: str, rollout: str, uid: str) -> HandedOver | None:
    """The revision whose Deployment a deleted rollout of this name handed over and this one does
    not own yet (the one with the most Ready pods, should there be several)."""
    deployments = await kube.list(path("apps/v1", "deployments", namespace),
                                  label_selector=f"{rollout_selector(rollout)},{LABEL_REVISION}")
    left = [d for d in deployments if manifests.adoptable(d, rollout, uid)
            and not any(ref.get("uid") == uid for ref in d["metadata"].get("ownerReferences") or [])]
    if not left:
        return None
    serving = max(left, key=lambda d: (int((d.get("status") or {}).get("readyReplicas") or 0), d["metadata"]["name"]))
    pod_labels = ((((serving.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")) or {}
    return HandedOver(serving["metadata"]["labels"][LABEL_REVISION], pod_labels.get(LABEL_MODEL_VERSION))


async def release(kube: Kube, object_path: str, current: dict[str, Any], uid: str) -> None:
    """Remove this rollout's ownerReference so the garbage collector keeps the object."""
    patch = manifests.release_patch(current, uid)
    if patch is not None:
        await kube.merge_patch(object_path, patch)


async def ensure_service(kube: Kube, wanted: dict[str, Any], observed_selector: dict[str, str] | None,
                         rollout: str, uid: str) -> None:
    """Create, adopt or re-select one Service. `observed_selector` is what the watch saw of an owned
    Service with that name (None: not seen, so read it: it may be missing or handed over)."""
    namespace, name = wanted["metadata"]["namespace"], wanted["metadata"]["name"]
    selector = wanted["spec"]["selector"]
    if observed_selector == selector:
        return
    object_path = path("v1", "services", namespace, name)
    if observed_selector is None:
        current = await kube.get(object_path)
        if current is None:
            await create_or_adopt(kube, path("v1", "services", namespace), wanted, rollout, uid)
            return
        current = await adopt(kube, object_path, {"kind": "Service", **current}, rollout, uid)
        observed_selector = (current.get("spec") or {}).get("selector") or {}
    if observed_selector != selector:  # a merge patch: keys no longer wanted are nulled
        stale = {key: None for key in observed_selector if key not in selector}
        await kube.merge_patch(object_path, {"spec": {"selector": {**stale, **selector}}})
