"""A KServe controller for the lab: InferenceServices become Deployments and a traffic split.

Just enough of KServe (and Knative) for the kserve router's tests, reached only through a
kubeconfig like the other simulators. Each predictor becomes a Deployment whose pod template has
the predictor's containers, labels and annotations (the workload simulator then makes it ready
after ``lab.modelrollout.io/load-seconds``), labelled ``serving.kserve.io/inferenceservice``;
RawDeployment's are owned by the InferenceService, Serverless ones by a Knative Revision (below). The split is written to
``status.components.predictor.traffic`` as ``[{revisionName: <Deployment>, percent, latestRevision}]``,
which the traffic simulator routes by (``inferenceservice/<name>``).

* Serverless (default): a changed predictor (``canaryTrafficPercent`` aside) is a new Knative
  revision ``<isvc>-predictor-0000N``, run by the Deployment ``<revision>-deployment`` that Knative
  owns by the Revision, not the InferenceService, labelled ``serving.knative.dev/revision`` and
  with the revision's (the predictor's) labels (knative/serving
  ``pkg/reconciler/revision/resources/deploy.go`` ``MakeDeployment``, ``names.Deployment``). With ``canaryTrafficPercent: p`` the latest Ready revision
  gets p % and the last rolled-out one the rest; without it the latest Ready revision gets 100 % and
  becomes the rolled-out one. Revisions with no traffic are scaled to zero. With
  ``serving.kserve.io/enable-tag-routing: "true"`` each entry has Knative's tag (``latest``,
  ``prev``) and its URL ``http://<tag>-<isvc>-predictor.<namespace>.example.com``.
* RawDeployment / Standard (annotation ``serving.kserve.io/deploymentMode``; KServe v0.20): the
  predictor is ``<isvc>-predictor`` (``<isvc>-<name>-predictor`` when named), each ``spec.canary[]``
  entry ``<isvc>-<predictor.name>-predictor`` with its ``trafficPercent``; the predictor gets the rest.

The ``Ready`` condition is True once a revision the split routes to has a Ready pod.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
from typing import Any

from modelrollout_lab.workloads import KubeError, RawKube, now_rfc3339

log = logging.getLogger("modelrollout_lab.kserve")

Obj = dict[str, Any]
ISVC_LABEL = "serving.kserve.io/inferenceservice"
DEPLOYMENT_LABEL = "lab.modelrollout.io/kserve-deployment"
HASH_ANNOTATION = "lab.modelrollout.io/predictor-hash"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
REVISION_LABEL = "serving.knative.dev/revision"
# Fields of a predictor that are KServe's, not the pod's.
COMPONENT_FIELDS = ("minReplicas", "maxReplicas", "labels", "annotations", "canaryTrafficPercent", "name",
                    "scaleTarget", "scaleMetric", "model")
ISVCS = "/apis/serving.kserve.io/v1beta1/inferenceservices"


def is_raw(isvc: Obj) -> bool:
    return ((isvc.get("metadata") or {}).get("annotations") or {}).get(MODE_ANNOTATION) in ("RawDeployment", "Standard")


def predictor_hash(predictor: Obj) -> str:
    body = {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def knative_deployment_name(revision: str) -> str:
    """knative/serving pkg/reconciler/revision/resources/names/names.go ``Deployment``."""
    return f"{revision}-deployment"


def _isvc_owner(isvc: Obj) -> Obj:
    meta = isvc["metadata"]
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "name": meta["name"], "uid": meta["uid"], "controller": True}


def _revision_owner(isvc: Obj, revision: str) -> Obj:
    """Knative's controller reference to the Revision (``kmeta.NewControllerRef(rev)`` in
    ``MakeDeployment``); the lab stores no Revision object, so its uid names no object."""
    uid = hashlib.sha256(f"{isvc['metadata']['uid']}/{revision}".encode()).hexdigest()[:32]
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Revision", "name": revision, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def deployment_for(isvc: Obj, name: str, predictor: Obj, replicas: int, *, owner: Obj | None = None,
                   labels: Obj | None = None) -> Obj:
    meta = isvc["metadata"]
    labels = {**(predictor.get("labels") or {}), ISVC_LABEL: meta["name"], **(labels or {})}
    pod_spec = {k: v for k, v in predictor.items() if k not in COMPONENT_FIELDS}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels,
                     "annotations": {HASH_ANNOTATION: predictor_hash(predictor)},
                     "ownerReferences": [owner or _isvc_owner(isvc)]},
        "spec": {"replicas": replicas,
                 "selector": {"matchLabels": {ISVC_LABEL: meta["name"], DEPLOYMENT_LABEL: name}},
                 "template": {"metadata": {"labels": {**labels, DEPLOYMENT_LABEL: name},
                                           "annotations": dict(predictor.get("annotations") or {})},
                              "spec": pod_spec}},
    }


def _replicas(predictor: Obj) -> int:
    return int(predictor.get("minReplicas") or 1)


def _ready(deployment: Obj | None) -> bool:
    return bool(deployment) and int((deployment.get("status") or {}).get("readyReplicas") or 0) > 0


def _tagged(entry: Obj, domain: str) -> Obj:
    """A split entry with Knative's tag and the URL that reaches its revision alone."""
    tag = "latest" if entry["latestRevision"] else "prev"
    return {**entry, "tag": tag, "url": f"http://{tag}-{domain}"}


def raw_plan(isvc: Obj) -> tuple[list[Obj], list[Obj]]:
    """(Deployments, traffic) of a RawDeployment InferenceService."""
    name, spec = isvc["metadata"]["name"], isvc.get("spec") or {}
    predictor = spec.get("predictor") or {}
    stable_name = f"{name}-{predictor['name']}-predictor" if predictor.get("name") else f"{name}-predictor"
    deployments = [deployment_for(isvc, stable_name, predictor, _replicas(predictor))]
    traffic, rest = [], 100
    for entry in spec.get("canary") or []:
        canary = entry.get("predictor") or {}
        canary_name = f"{name}-{canary.get('name')}-predictor"
        deployments.append(deployment_for(isvc, canary_name, canary, _replicas(canary)))
        percent = int(entry.get("trafficPercent") or 0)
        traffic.append({"revisionName": canary_name, "percent": percent, "latestRevision": True})
        rest -= percent
    return deployments, [{"revisionName": stable_name, "percent": max(0, rest), "latestRevision": False}] + traffic


class KServeSimulator:
    def __init__(self, kubeconfig: str | None, *, tick: float = 0.2) -> None:
        self.kubeconfig, self.tick = kubeconfig, tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.kube: RawKube | None = None

    def start(self) -> KServeSimulator:
        self.kube = RawKube(self.kubeconfig)
        self._thread = threading.Thread(target=self._loop, name="kserve-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.kube is not None:
            self.kube.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                items = self.kube.get(ISVCS).get("items") or []  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001 - a lab controller keeps going, like a real one
                log.exception("kserve: listing InferenceServices failed")
                continue
            for isvc in items:
                try:
                    self.sync(isvc)
                except Exception:  # noqa: BLE001 - one that fails never holds back the others, as in KServe
                    log.exception("kserve: syncing %s/%s failed", isvc["metadata"].get("namespace"),
                                  isvc["metadata"].get("name"))

    # ---------------------------------------------------------------- one InferenceService
    def _deployments(self, isvc: Obj) -> dict[str, Obj]:
        ns, name = isvc["metadata"]["namespace"], isvc["metadata"]["name"]
        items = self.kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments",  # type: ignore[union-attr]
                              labelSelector=f"{ISVC_LABEL}={name}").get("items") or []
        return {d["metadata"]["name"]: d for d in items}

    def _revisions(self, isvc: Obj) -> dict[str, Obj]:
        """Serverless: the Deployments by the Knative revision they run."""
        return {d["metadata"]["labels"][REVISION_LABEL]: d for d in self._deployments(isvc).values()
                if REVISION_LABEL in d["metadata"]["labels"]}

    def _apply(self, current: Obj | None, wanted: Obj) -> None:
        ns = wanted["metadata"]["namespace"]
        collection = f"/apis/apps/v1/namespaces/{ns}/deployments"
        if current is None:
            self.kube.request("POST", collection, body=wanted)  # type: ignore[union-attr]
            return
        same = (current["spec"].get("template") == wanted["spec"]["template"]
                and current["spec"].get("replicas") == wanted["spec"]["replicas"]
                and current["metadata"].get("labels") == wanted["metadata"]["labels"])
        if not same:  # a merge patch: labels and template keys no longer wanted are nulled
            stale = {k: None for k in current["metadata"].get("labels") or {} if k not in wanted["metadata"]["labels"]}
            body = copy.deepcopy(wanted["spec"]["template"])
            old_labels = ((current["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
            body["metadata"]["labels"] = {**{k: None for k in old_labels if k not in body["metadata"]["labels"]},
                                          **body["metadata"]["labels"]}
            old_spec = (current["spec"].get("template") or {}).get("spec") or {}
            body["spec"] = {**{k: None for k in old_spec if k not in body["spec"]}, **body["spec"]}
            self.kube.patch(f"{collection}/{wanted['metadata']['name']}",  # type: ignore[union-attr]
                            {"metadata": {"annotations": wanted["metadata"]["annotations"],
                                          "labels": {**stale, **wanted["metadata"]["labels"]}},
                             "spec": {"replicas": wanted["spec"]["replicas"], "template": body}})

    def sync(self, isvc: Obj) -> None:
        if is_raw(isvc):
            existing = self._deployments(isvc)
            wanted, traffic = raw_plan(isvc)
            for deployment in wanted:
                self._apply(existing.get(deployment["metadata"]["name"]), deployment)
            self._write_status(isvc, {"traffic": traffic}, existing)
            for gone in set(existing) - {d["metadata"]["name"] for d in wanted}:  # no longer routed to: deleted
                self._delete(isvc, gone)
        else:
            revisions = self._revisions(isvc)
            self._write_status(isvc, self._serverless(isvc, revisions), revisions)

    def _serverless(self, isvc: Obj, existing: dict[str, Obj]) -> Obj:
        name, spec = isvc["metadata"]["name"], isvc.get("spec") or {}
        predictor = spec.get("predictor") or {}
        before = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
        revisions = sorted(existing)
        latest = revisions[-1] if revisions else None
        if latest is None or existing[latest]["metadata"].get("annotations", {}).get(HASH_ANNOTATION) != predictor_hash(predictor):
            latest = f"{name}-predictor-{len(revisions) + 1:05d}"
            self._apply(None, deployment_for(isvc, knative_deployment_name(latest), predictor, _replicas(predictor),
                                             owner=_revision_owner(isvc, latest), labels={REVISION_LABEL: latest}))
            existing = self._revisions(isvc)
        rolled, previous = before.get("latestRolledoutRevision"), before.get("previousRolledoutRevision")
        percent = predictor.get("canaryTrafficPercent")
        if not _ready(existing.get(latest)):
            traffic = [{"revisionName": rolled, "percent": 100, "latestRevision": False}] if rolled else []
        elif percent is None or rolled in (None, latest):
            if rolled != latest:
                rolled, previous = latest, rolled
            traffic = [{"revisionName": latest, "percent": 100, "latestRevision": True}]
        else:
            traffic = [{"revisionName": rolled, "percent": 100 - int(percent), "latestRevision": False},
                       {"revisionName": latest, "percent": int(percent), "latestRevision": True}]
        if (isvc["metadata"].get("annotations") or {}).get(TAG_ROUTING_ANNOTATION) == "true":
            domain = f"{name}-predictor.{isvc['metadata']['namespace']}.example.com"
            traffic = [_tagged(entry, domain) for entry in traffic]
        serving = {t["revisionName"] for t in traffic} | {latest}
        for revision, deployment in existing.items():  # Knative scales unrouted revisions to zero
            if revision not in serving and deployment["spec"].get("replicas"):
                self.kube.patch(f"/apis/apps/v1/namespaces/{isvc['metadata']['namespace']}/deployments/"
                                f"{deployment['metadata']['name']}",  # type: ignore[union-attr]
                                {"spec": {"replicas": 0}})
        return {"latestCreatedRevision": latest, "latestReadyRevision": latest if _ready(existing.get(latest)) else None,
                "latestRolledoutRevision": rolled, "previousRolledoutRevision": previous, "traffic": traffic}

    def _delete(self, isvc: Obj, deployment: str) -> None:
        try:
            self.kube.request("DELETE", f"/apis/apps/v1/namespaces/{isvc['metadata']['namespace']}"  # type: ignore[union-attr]
                                        f"/deployments/{deployment}")
        except KubeError as exc:
            if exc.status != 404:
                raise

    def _write_status(self, isvc: Obj, predictor_status: Obj, deployments: dict[str, Obj]) -> None:
        """Ready, as KServe says it, once a revision the split routes to has a Ready pod."""
        meta = isvc["metadata"]
        old = isvc.get("status") or {}
        ready = any(int(t.get("percent") or 0) > 0 and _ready(deployments.get(t["revisionName"]))
                    for t in predictor_status.get("traffic") or [])
        condition = {"type": "Ready", "status": "True" if ready else "False"}
        new = {"observedGeneration": meta.get("generation"), "components": {"predictor": predictor_status},
               "conditions": [{**condition, "lastTransitionTime": now_rfc3339()}]}
        if old.get("observedGeneration") == new["observedGeneration"] and old.get("components") == new["components"] \
                and [{k: c.get(k) for k in condition} for c in old.get("conditions") or []] == [condition]:
            return
        self.kube.patch(f"{ISVCS.replace('/inferenceservices', '')}/namespaces/{meta['namespace']}"  # type: ignore[union-attr]
                        f"/inferenceservices/{meta['name']}/status", {"status": new})
