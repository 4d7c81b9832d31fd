"""Pure builders of the objects the operator owns: one Deployment per revision, three Services,
their names, and the ownerReference patches that adopt or hand them over."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from modelrollout.names import (API_VERSION, KIND, LABEL_MODEL_VERSION, LABEL_REVISION, LABEL_ROLE, LABEL_ROLLOUT,
                                HASH_LEN, LIMITS, rollout_label, shortened)
from modelrollout.spec import RolloutSpec

NAME_MAX = LIMITS["service"].limit
DEPLOYMENT_NAME_MAX = LIMITS["deployment"].limit
ROLES = ("stable", "canary")  # Service roles with a suffix; the shared Service is `<rollout>`
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# On each Deployment: the pod template it was created with, so that the template of a revision the
# spec no longer holds (the stable one, mid-release) can still be compared and restored.
ANNOTATION_TEMPLATE = "modelrollout.io/pod-template"


def owned_name(*parts: str, max_len: int = NAME_MAX, hashed: bool = False) -> str:
    """`parts` joined by "-" when that is a valid DNS-1035 label within `max_len`; otherwise (or when
    `hashed`) a readable prefix plus a hash of the parts, so distinct parts never share a name.

    DNS-1035 (a letter first) is the strictest rule among the kinds we create (Services).
    """
    readable = "-".join(parts)
    if not hashed and len(readable) <= max_len and _DNS_1035_LABEL.fullmatch(readable):
        return readable
    prefix = re.sub(r"[^a-z0-9]+", "-", readable.lower())[:max_len - HASH_LEN - 1]
    prefix = re.sub(r"^[^a-z]+", "", prefix).rstrip("-") or "mr"
    return shortened(prefix, "/".join(parts), max_len)


def deployment_name(rollout: str, revision: str) -> str:
    return owned_name(rollout, revision, max_len=DEPLOYMENT_NAME_MAX)


def service_name(rollout: str, role: str) -> str:
    """`<rollout>-stable`, `<rollout>-canary`, or `<rollout>` for the shared one (role "shared").

    A rollout named like another's role Service (`x-stable`) gets a hashed shared Service name,
    so rollouts `x` and `x-stable` never share one.
    """
    if role in ROLES:
        return owned_name(rollout, role)
    return owned_name(rollout, hashed=rollout.endswith(tuple(f"-{r}" for r in ROLES)))


def gate_job_name(rollout: str, revision: str, gate: str) -> str:
    """Always hashed: gate names are free-form, so only the hash keeps (rollout, revision, gate) apart."""
    return owned_name(rollout, revision, gate, max_len=LIMITS["gate-job"].limit, hashed=True)


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def _owner_refs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or [])


def _owner_patch(obj: dict[str, Any], refs: list[dict[str, Any]] | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"ownerReferences": refs}
    if (obj.get("metadata") or {}).get("resourceVersion"):
        metadata["resourceVersion"] = obj["metadata"]["resourceVersion"]
    return {"metadata": metadata}


def controlled_by(obj: dict[str, Any], uid: str) -> bool:
    return any(r.get("controller") and r.get("uid") == uid for r in _owner_refs(obj))


def adoptable(obj: dict[str, Any], rollout: str, uid: str) -> bool:
    """Ours to take: it carries our rollout label and no other controller owns it (e.g. a handover)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    others = [r for r in _owner_refs(obj) if r.get("controller") and r.get("uid") != uid]
    return labels.get(LABEL_ROLLOUT) == rollout_label(rollout) and not others


def adopt_patch(obj: dict[str, Any], rollout: str, uid: str) -> dict[str, Any] | None:
    """A merge patch making this rollout the object's controller (None when it already is).
    It carries the read resourceVersion: a concurrent change gets 409 instead of being overwritten."""
    refs = _owner_refs(obj)
    if any(r.get("uid") == uid for r in refs):
        return None
    return _owner_patch(obj, refs + [owner_reference(rollout, uid)])


def release_patch(obj: dict[str, Any], uid: str) -> dict[str, Any] | None:
    """A merge patch removing this rollout's ownerReference, so the garbage collector keeps the object
    (None when the rollout does not own it). Labels stay: a re-created rollout adopts it again."""
    refs = _owner_refs(obj)
    remaining = [r for r in refs if r.get("uid") != uid]
    if len(remaining) == len(refs):
        return None
    return _owner_patch(obj, remaining or None)


def pod_template(spec: RolloutSpec, rollout: str) -> dict[str, Any]:
    """The pod template of the spec's revision, as its Deployment carries it (with our labels)."""
    template = copy.deepcopy(spec.template)
    metadata = template.setdefault("metadata", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), LABEL_ROLLOUT: rollout_label(rollout), LABEL_REVISION: spec.revision}
    if spec.model.version:
        metadata["labels"][LABEL_MODEL_VERSION] = spec.model.version
    return template


def deployment(spec: RolloutSpec, namespace: str, rollout: str, uid: str, replicas: int) -> dict[str, Any]:
    """The Deployment of the spec's current template revision."""
    revision = spec.revision
    ours = {LABEL_ROLLOUT: rollout_label(rollout), LABEL_REVISION: revision}
    template = pod_template(spec, rollout)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(rollout, revision),
            "namespace": namespace,
            "labels": dict(ours),
            "annotations": {ANNOTATION_TEMPLATE: json.dumps(template, sort_keys=True, separators=(",", ":"))},
            "ownerReferences": [owner_reference(rollout, uid)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {**spec.selector.match_labels, **ours}},
            "template": template,
        },
    }


def recorded_template(annotation: str | None) -> dict[str, Any] | None:
    """The pod template a Deployment was created with (None: not recorded, or unreadable)."""
    try:
        template = json.loads(annotation) if annotation else None
    except ValueError:
        return None
    return template if isinstance(template, dict) else None


def template_drift(intended: dict[str, Any], live: dict[str, Any]) -> str | None:
    """Where a live pod template differs from the intended one (None: it carries it).

    Labels and annotations must be equal; elsewhere the API server adds defaults, so every intended
    field must be there with its value (lists of equal length, element by element), and extra
    fields are allowed."""
    intended_meta, live_meta = intended.get("metadata") or {}, live.get("metadata") or {}
    differ = [f"template.metadata.{key}" for key in ("labels", "annotations")
              if (intended_meta.get(key) or {}) != (live_meta.get(key) or {})]
    differ += _differences(intended.get("spec") or {}, live.get("spec") or {}, "template.spec")
    return ", ".join(differ) or None


def template_restore_patch(intended: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """A merge patch of a Deployment putting `intended` back as its pod template: lists (containers,
    volumes) are replaced whole, and labels or annotations it does not set are removed."""
    metadata = dict(intended.get("metadata") or {})
    for key in ("labels", "annotations"):
        extra = {name: None for name in ((live.get("metadata") or {}).get(key) or {}) if name not in (metadata.get(key) or {})}
        metadata[key] = {**extra, **(metadata.get(key) or {})}
    return {"spec": {"template": {**intended, "metadata": metadata}}}


def _differences(intended: Any, live: Any, where: str) -> list[str]:
    if isinstance(intended, dict) and isinstance(live, dict):
        return [found for key, value in intended.items() for found in _differences(value, live.get(key), f"{where}.{key}")]
    if isinstance(intended, list) and isinstance(live, list) and len(intended) == len(live):
        return [found for i, (a, b) in enumerate(zip(intended, live)) for found in _differences(a, b, f"{where}[{i}]")]
    if intended == live or (_QUANTITY_FIELD.search(where) and _quantity(intended) == _quantity(live) is not None):
        return []
    return [where]


# Fields whose values the API server stores as canonical quantities (`cpu: 0.5` reads back `500m`,
# `memory: 1024Mi` reads back `1Gi`): equal amounts are not drift.
_QUANTITY_FIELD = re.compile(r"\.(resources\.(limits|requests|claims)\.[^.]+|sizeLimit)$")
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
_SUFFIXES = {"": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal("1e3"),
             "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"), "P": Decimal("1e15"),
             "E": Decimal("1e18"), **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))}}


def _quantity(value: Any) -> Decimal | None:
    """The amount a Kubernetes quantity (`500m`, `1Gi`, `0.5`, 2) stands for; None if it is none."""
    found = _QUANTITY.match(str(value)) if isinstance(value, (str, int, float)) else None
    if found is None:
        return None
    try:
        return Decimal(found.group(1)) * _SUFFIXES[found.group(2) or ""]
    except InvalidOperation:
        return None


def service_selector(spec: RolloutSpec, rollout: str, revision: str | None) -> dict[str, str]:
    """The user's selector narrowed to this rollout's pods (and to one revision, unless None):
    two rollouts whose pods share the user's labels never receive each other's traffic."""
    selector = {**spec.selector.match_labels, LABEL_ROLLOUT: rollout_label(rollout)}
    if revision is not None:
        selector[LABEL_REVISION] = revision
    return selector


def service(spec: RolloutSpec, namespace: str, rollout: str, uid: str, role: str,
            revision: str | None) -> dict[str, Any]:
    """`<rollout>-stable` / `<rollout>-canary` select one revision; `<rollout>` (role shared) selects all."""
    target = spec.service.target_port if spec.service.target_port is not None else spec.service.port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(rollout, role),
            "namespace": namespace,
            "labels": {LABEL_ROLLOUT: rollout_label(rollout), LABEL_ROLE: role},
            "ownerReferences": [owner_reference(rollout, uid)],
        },
        "spec": {
            "selector": service_selector(spec, rollout, revision),
            "ports": [{"name": "http", "port": spec.service.port, "targetPort": target, "protocol": "TCP"}],
        },
    }
