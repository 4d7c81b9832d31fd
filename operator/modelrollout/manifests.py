"""Pure builders of the objects the operator owns: one Deployment per revision, three Services."""

from __future__ import annotations

import copy
from typing import Any

from modelrollout.names import API_VERSION, KIND, LABEL_MODEL_VERSION, LABEL_REVISION, LABEL_ROLE, LABEL_ROLLOUT
from modelrollout.spec import RolloutSpec


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def deployment_name(rollout: str, revision: str) -> str:
    return f"{rollout}-{revision}"


def deployment(spec: RolloutSpec, namespace: str, rollout: str, uid: str, replicas: int) -> dict[str, Any]:
    """The Deployment of the spec's current template revision."""
    revision = spec.revision
    ours = {LABEL_ROLLOUT: rollout, LABEL_REVISION: revision}
    template = copy.deepcopy(spec.template)
    metadata = template.setdefault("metadata", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **ours}
    if spec.model.version:
        metadata["labels"][LABEL_MODEL_VERSION] = spec.model.version
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(rollout, revision),
            "namespace": namespace,
            "labels": dict(ours),
            "ownerReferences": [owner_reference(rollout, uid)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {**spec.selector.match_labels, LABEL_REVISION: revision}},
            "template": template,
        },
    }


def service(spec: RolloutSpec, namespace: str, rollout: str, uid: str, role: str,
            revision: str | None) -> dict[str, Any]:
    """`<rollout>-stable` / `<rollout>-canary` select one revision; `<rollout>` (role shared) selects all."""
    selector = dict(spec.selector.match_labels)
    if revision is not None:
        selector[LABEL_REVISION] = revision
    target = spec.service.target_port if spec.service.target_port is not None else spec.service.port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": rollout if role == "shared" else f"{rollout}-{role}",
            "namespace": namespace,
            "labels": {LABEL_ROLLOUT: rollout, LABEL_ROLE: role},
            "ownerReferences": [owner_reference(rollout, uid)],
        },
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": spec.service.port, "targetPort": target, "protocol": "TCP"}],
        },
    }
