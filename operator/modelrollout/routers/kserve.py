"""KServe: releases through an existing InferenceService, with KServe's own traffic fields.

The model comes from the ModelRollout's `template` (docs/routers.md says why): the router renders
it as a predictor (the pod spec's fields, the template's labels and annotations plus the rollout's
and revision's labels, `minReplicas: replicas`) and KServe runs the pods. Which fields it writes
depends on the InferenceService's deployment mode:

* Serverless (Knative, the default): `spec.predictor` holds the newest model; a new predictor
  makes KServe create a revision and `canaryTrafficPercent` splits traffic between it and the last
  rolled-out one. Rollback is `canaryTrafficPercent: 0` (every request to the previous model),
  promotion removes `canaryTrafficPercent` (the new revision takes 100 % and becomes the rolled-out
  one), as KServe documents them. The weight is read back from `status.components.predictor.traffic`.
* RawDeployment / Standard (KServe v0.20 `spec.canary[]`): `spec.predictor` holds the stable model,
  the canary is an entry of `spec.canary` named `rev-<revision>` with `trafficPercent`. Rollback
  removes the entry; promotion retargets `spec.predictor` to the canary's predictor (same name, so
  KServe keeps its pods) and removes the entry.

Only this rollout's predictor and its own canary entries are written; the InferenceService's
metadata, other components (transformer, explainer), other canary entries and every other field
stay as read. Writes are PUTs with the read resourceVersion, retried from a fresh read on 409.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from modelrollout.core import HandedOver
from modelrollout.kube import Kube, path
from modelrollout.names import LABEL_MODEL_VERSION, LABEL_REVISION, LABEL_ROLLOUT, rollout_label
from modelrollout.routers import RouteProblem, RouteTarget, write_back
from modelrollout.spec import template_revision

GROUP_VERSION = "serving.kserve.io/v1beta1"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
RAW_MODES = ("RawDeployment", "Standard")

log = logging.getLogger(__name__)

Obj = dict[str, Any]


def _isvc_name(target: RouteTarget) -> str:
    kserve = target.spec.traffic_routing.kserve
    assert kserve is not None
    return kserve.inference_service


def _isvc_path(target: RouteTarget) -> str:
    return path(GROUP_VERSION, "inferenceservices", target.namespace, _isvc_name(target))


def is_raw(isvc: Obj) -> bool:
    return ((isvc.get("metadata") or {}).get("annotations") or {}).get(MODE_ANNOTATION) in RAW_MODES


def canary_name(revision: str) -> str:
    return f"rev-{revision}"


def predictor_for(target: RouteTarget) -> Obj:
    """The spec's template as a KServe predictor of its revision."""
    spec = target.spec
    template = copy.deepcopy(spec.template)
    metadata = template.get("metadata") or {}
    labels = {**(metadata.get("labels") or {}), LABEL_ROLLOUT: rollout_label(target.name), LABEL_REVISION: spec.revision}
    if spec.model.version:
        labels[LABEL_MODEL_VERSION] = spec.model.version
    predictor: Obj = {**(template.get("spec") or {}), "labels": labels, "minReplicas": spec.replicas}
    if metadata.get("annotations"):
        predictor["annotations"] = metadata["annotations"]
    return predictor


def revision_of(predictor: Obj | None, rollout: str) -> str | None:
    """The rollout revision a predictor runs (None: not this rollout's)."""
    labels = (predictor or {}).get("labels") or {}
    return labels.get(LABEL_REVISION) if labels.get(LABEL_ROLLOUT) == rollout_label(rollout) else None


def _ours(entry: Obj, rollout: str) -> bool:
    return revision_of(entry.get("predictor"), rollout) is not None


def _applied(isvc: Obj) -> bool:
    """KServe has acted on the current spec (its status is of this generation)."""
    status = isvc.get("status") or {}
    return int(status.get("observedGeneration") or 0) >= int((isvc.get("metadata") or {}).get("generation") or 0)


def _traffic(isvc: Obj) -> list[Obj]:
    """KServe's split: [{revisionName, percent, latestRevision}]."""
    return ((((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}).get("traffic")) or []


def serves(isvc: Obj) -> bool:
    """KServe reports the InferenceService Ready for its current spec: its model serves users."""
    conditions = (isvc.get("status") or {}).get("conditions") or []
    return _applied(isvc) and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _has_served(isvc: Obj) -> bool:
    """A model of the InferenceService serves users now, or (Serverless) KServe once rolled one out:
    its `latestRolledoutRevision`, which no later status takes back, unlike a Ready that flickers."""
    predictor_status = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
    return serves(isvc) or bool(not is_raw(isvc) and predictor_status.get("latestRolledoutRevision"))


def _never_served(isvc: Obj) -> bool:
    """KServe says, for the current spec, that no model of the InferenceService ever served: a
    Serverless one that is not Ready and has rolled out no revision. (RawDeployment reports no
    such history: a not-Ready one may have served, and still serve, until it reports Ready again.)"""
    return not is_raw(isvc) and _applied(isvc) and not _has_served(isvc)


def _own_model(isvc: Obj) -> Obj | None:
    """The predictor no rollout wrote, serving alone (not split by a `canaryTrafficPercent` of the
    user's), if any: the model users have, or may have, before the first rollout on it."""
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    if not predictor or LABEL_ROLLOUT in (predictor.get("labels") or {}) or "canaryTrafficPercent" in predictor:
        return None
    return predictor


def _replaces_unjudged(isvc: Obj, wanted: Obj) -> bool:
    """`wanted` puts a rollout's model in place of the InferenceService's own model, which serves or
    has served users, without a canary: only a split starting at 0 % (Serverless) or a promoted
    canary entry (RawDeployment) may take its place."""
    own, new = _own_model(isvc), wanted.get("predictor") or {}
    if own is None or new == own or not _has_served(isvc):
        return False
    was_canary = any(entry.get("predictor") == new for entry in (isvc.get("spec") or {}).get("canary") or [])
    return not was_canary and "canaryTrafficPercent" not in new


# ---------------------------------------------------------------- the two modes, as pure edits

def raw_reconciled(spec: Obj, target: RouteTarget) -> Obj:
    """RawDeployment: the stable predictor in `spec.predictor`, our canary entry for the decided
    canary only (promotion retargets the predictor to it, rollback removes it)."""
    rollout, stable, canary, current = target.name, target.stable_revision, target.canary_revision, target.spec.revision
    entries = list(spec.get("canary") or [])
    promoted = next((e for e in entries if revision_of(e.get("predictor"), rollout) == stable), None)
    out = dict(spec)
    if promoted is not None and revision_of(spec.get("predictor"), rollout) != stable:
        out["predictor"] = promoted["predictor"]  # KServe's promotion: the stable name now runs the canary's pods
    elif revision_of(spec.get("predictor"), rollout) != stable and stable == current:
        out["predictor"] = predictor_for(target)
    kept = [e for e in entries if not _ours(e, rollout) or (revision_of(e.get("predictor"), rollout) == canary
                                                            and canary != stable)]
    if canary and canary == current and canary != stable and not any(_ours(e, rollout) for e in kept):
        kept.append({"trafficPercent": 0, "predictor": {**predictor_for(target), "name": canary_name(canary)}})
    if kept:
        out["canary"] = kept
    else:
        out.pop("canary", None)
    return out


def raw_weighted(spec: Obj, target: RouteTarget, weight: int) -> Obj:
    entries = [dict(e, trafficPercent=weight) if _ours(e, target.name) else e for e in spec.get("canary") or []]
    if not any(_ours(e, target.name) for e in entries):
        if weight:
            raise RouteProblem("CanaryNotRunning", f"no canary entry of {target.name} in the InferenceService "
                                                   f"to give {weight} % of the traffic")
        return spec
    return {**spec, "canary": entries}


def raw_weight(isvc: Obj, target: RouteTarget) -> int | None:
    if not _applied(isvc):
        return None
    return sum(int(e.get("trafficPercent") or 0) for e in (isvc.get("spec") or {}).get("canary") or []
               if _ours(e, target.name))


def serverless_reconciled(spec: Obj, target: RouteTarget) -> Obj:
    """Serverless: `spec.predictor` runs the decided canary (with a traffic split), or the stable
    revision when there is none and the template is the stable one. A rolled-back predictor stays
    as KServe left it (pinned at 0 %) until the template changes."""
    wanted = target.canary_revision or target.stable_revision
    predictor = spec.get("predictor") or {}
    if wanted != target.spec.revision or revision_of(predictor, target.name) == wanted:
        return spec
    new = predictor_for(target)
    if target.canary_revision:
        new["canaryTrafficPercent"] = 0  # KServe starts the revision; set_weight moves traffic to it
    return {**spec, "predictor": new}


def serverless_weighted(spec: Obj, target: RouteTarget, weight: int) -> Obj:
    predictor = dict(spec.get("predictor") or {})
    if revision_of(predictor, target.name) == target.stable_revision and weight == 0:
        predictor.pop("canaryTrafficPercent", None)  # KServe's promotion, or nothing to split
    else:
        predictor["canaryTrafficPercent"] = weight
    return {**spec, "predictor": predictor}


def serverless_weight(isvc: Obj, target: RouteTarget) -> int | None:
    """The canary's share as KServe reports routing it: the latest revision's, or, when the latest
    is the stable model (after a promotion), 0 only once KServe sends it every request: until then
    an older model may still be serving, and a promotion is not confirmed (None)."""
    if not _applied(isvc):
        return None
    latest = [int(t.get("percent") or 0) for t in _traffic(isvc) if t.get("latestRevision")]
    if revision_of((isvc.get("spec") or {}).get("predictor"), target.name) == target.stable_revision:
        return 0 if latest == [100] else None
    return latest[0] if latest else None


def _refuse_if_taken(isvc: Obj, target: RouteTarget) -> None:
    """RouteProblem when the InferenceService cannot be released by this rollout: a model of
    another ModelRollout runs in it, or it runs a Serverless canary of the user's own."""
    spec = isvc.get("spec") or {}
    predictor = spec.get("predictor") or {}
    described = f"InferenceService {target.namespace}/{_isvc_name(target)}"
    predictors = [predictor] + [entry.get("predictor") or {} for entry in spec.get("canary") or []]
    owners = {(p.get("labels") or {}).get(LABEL_ROLLOUT) for p in predictors} - {None, rollout_label(target.name)}
    if owners:
        raise RouteProblem("InferenceServiceInUse",
                           f"{described} runs the model of ModelRollout {', '.join(sorted(owners))}: one "
                           f"InferenceService is released by one ModelRollout")
    if not is_raw(isvc) and revision_of(predictor, target.name) is None and "canaryTrafficPercent" in predictor:
        raise RouteProblem("InferenceServiceInCanary",
                           f"{described} runs a canary of its own (canaryTrafficPercent: "
                           f"{predictor['canaryTrafficPercent']}): promote or roll it back first; the model it "
                           f"then serves becomes this rollout's stable revision")


class KServeRouter:
    async def _read(self, kube: Kube, target: RouteTarget) -> Obj:
        isvc = await kube.get(_isvc_path(target))
        if isvc is None:
            raise RouteProblem("RouteNotFound", f"InferenceService {target.namespace}/{_isvc_name(target)} not found")
        _refuse_if_taken(isvc, target)
        return isvc

    async def _edit(self, kube: Kube, target: RouteTarget, raw: Callable[[Obj], Obj],
                    serverless: Callable[[Obj], Obj]) -> None:
        def change(isvc: Obj) -> Obj | None:
            spec = isvc.get("spec") or {}
            wanted = (raw if is_raw(isvc) else serverless)(spec)
            if _replaces_unjudged(isvc, wanted):  # its model was not adopted (yet): never replaced unjudged
                raise RouteProblem("InferenceServiceNotAdopted",
                                   f"InferenceService {target.namespace}/{_isvc_name(target)} serves a model "
                                   f"of its own that this rollout has not adopted as stable: it is replaced only "
                                   f"by a canary that passes the steps")
            return None if wanted == spec else {**isvc, "spec": wanted}

        await write_back(kube, _isvc_path(target), lambda: self._read(kube, target), change)

    async def reconcile(self, kube: Kube, target: RouteTarget) -> None:
        await self._edit(kube, target, lambda spec: raw_reconciled(spec, target),
                         lambda spec: serverless_reconciled(spec, target))

    async def set_weight(self, kube: Kube, target: RouteTarget, weight: int) -> None:
        await self._edit(kube, target, lambda spec: raw_weighted(spec, target, weight),
                         lambda spec: serverless_weighted(spec, target, weight))

    async def get_weight(self, kube: Kube, target: RouteTarget) -> int | None:
        isvc = await self._read(kube, target)
        return raw_weight(isvc, target) if is_raw(isvc) else serverless_weight(isvc, target)

    async def set_mirror(self, kube: Kube, target: RouteTarget, percent: int) -> None:
        if percent:  # spec validation refuses mirror steps with this router
            raise RouteProblem("MirrorUnsupported", "KServe cannot mirror requests")

    async def get_mirror(self, kube: Kube, target: RouteTarget) -> int | None:
        return 0

    async def finalize(self, kube: Kube, target: RouteTarget) -> None:
        """All traffic to the stable model: our canary entries removed (RawDeployment), a split
        pinned to the rolled-out revision (Serverless). The InferenceService stays and serves."""
        def raw(spec: Obj) -> Obj:
            kept = [e for e in spec.get("canary") or [] if not _ours(e, target.name)]
            out = {k: v for k, v in spec.items() if k != "canary"}
            return {**out, "canary": kept} if kept else out

        def serverless(spec: Obj) -> Obj:
            predictor = spec.get("predictor") or {}
            if int(predictor.get("canaryTrafficPercent", 0) or 0) == 0:
                return spec
            return {**spec, "predictor": {**predictor, "canaryTrafficPercent": 0}}

        try:
            await self._edit(kube, target, raw, serverless)
        except RouteProblem as exc:
            log.info("%s/%s deleted: %s", target.namespace, target.name, exc)

    async def addresses(self, kube: Kube, target: RouteTarget) -> dict[str, str] | None:
        """The revisions' own URLs KServe reports in its Serverless split with tag routing
        (`serving.kserve.io/enable-tag-routing`: Knative's `latest` and `prev`); no Service of ours
        exists, and no name is guessed. None until KServe reports the canary's revision."""
        isvc = await self._read(kube, target)
        if is_raw(isvc):
            return {}  # a RawDeployment split reports no address per predictor
        if not _applied(isvc):
            return None
        predictor = (isvc.get("spec") or {}).get("predictor")
        canary_runs = target.canary_revision is not None and revision_of(predictor, target.name) == target.canary_revision
        found: dict[str, str] = {}
        for entry in _traffic(isvc):
            address = urlsplit(str(entry.get("url") or "")).netloc
            role = "canary" if entry.get("latestRevision") else "stable"
            if address and (role == "stable" or canary_runs):
                found[role] = address
        if canary_runs and found and "canary" not in found:
            return None  # tagged URLs are reported, the canary's revision not yet
        return found

    async def handed_over(self, kube: Kube, target: RouteTarget) -> HandedOver | None:
        """The model the InferenceService serves before this rollout has a stable revision:
        * its own predictor, written by no rollout (the first rollout on it), unless KServe says it
          never served (then the template takes its place); `serving` False while KServe reports
          it neither Ready nor rolled out: it may still have users, so the rollout waits for it;
        * else the model of this rollout it still serves: RawDeployment's `spec.predictor`; in
          Serverless mode the predictor once rolled out, else (a split pinned at 0 % by the
          deletion) the revision KServe still runs with Ready pods, or, none of this rollout's, the
          revision KServe rolled out before it and still routes requests to, whatever its Ready says
          (named as KServe names it)."""
        isvc = await kube.get(_isvc_path(target))
        if isvc is not None:
            _refuse_if_taken(isvc, target)
        users_model = f"the model InferenceService {target.namespace}/{_isvc_name(target)} served before this rollout"
        own = _own_model(isvc or {})
        if own is not None and not _never_served(isvc or {}):
            return HandedOver(template_revision(own), (own.get("labels") or {}).get(LABEL_MODEL_VERSION), users_model,
                              serving=_has_served(isvc or {}))
        predictor = ((isvc or {}).get("spec") or {}).get("predictor")
        revision = revision_of(predictor, target.name)
        if revision is None:
            return None
        if not is_raw(isvc or {}) and "canaryTrafficPercent" in (predictor or {}):
            serving = {rev: ready for rev, ready in target.ready.items() if rev != revision and ready > 0}
            if serving:
                return HandedOver(max(serving, key=lambda rev: (serving[rev], rev)))
            # None of this rollout's: what KServe rolled out before it, the users' own model.
            rolled_out = [t["revisionName"] for t in _traffic(isvc or {})
                          if not t.get("latestRevision") and int(t.get("percent") or 0) > 0 and t.get("revisionName")]
            return HandedOver(rolled_out[0], None, users_model) if rolled_out else None
        return HandedOver(revision, ((predictor or {}).get("labels") or {}).get(LABEL_MODEL_VERSION))
