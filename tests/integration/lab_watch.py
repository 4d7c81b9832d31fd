"""What the integration tests watch: route weights and status over time, as a user would see them."""

from __future__ import annotations

import threading
import time

from kubernetes.client.rest import ApiException

from modelrollout.routers.gateway_api import canary_share, managed_rules
from modelrollout_lab import scenarios


def events_of(lab, name, reason):
    """Events posted on one object with one reason (kopf posts them asynchronously)."""
    return [e for e in lab.core.list_namespaced_event("default").items
            if e.involved_object.name == name and e.reason == reason]


def apply_all(lab, docs):
    for doc in docs:
        lab.apply(doc)


def route_canary_weight(lab, name, namespace="default"):
    try:
        route = lab.custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes", name)
    except ApiException:
        return None
    managed = managed_rules(route, name)  # the rules that reference the rollout's Services
    return canary_share(route["spec"]["rules"][managed[0]]["backendRefs"], namespace, name) if managed else None


class Recorder:
    """Polls in the background and keeps every distinct value of `probe()`, in order."""

    def __init__(self, probe, interval=0.1):
        self.probe, self.interval, self.values = probe, interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        try:
            value = self.probe()
        except Exception:  # the API may blip while the operator restarts; keep watching
            return
        if value is not None and (not self.values or self.values[-1] != value):
            self.values.append(value)

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()  # the state the test waited for, even if it came after the last poll


def start_stable(lab, name, **kwargs):
    """Apply v1 and wait until it is the stable revision. Returns the applied ModelRollout manifest."""
    docs = scenarios.manifests(name, **kwargs)
    apply_all(lab, docs)
    # An InferenceService's own model that never loads is awaited for the readiness timeout (30 s).
    lab.wait_for_phase(name, "Succeeded", timeout=90)
    return docs[-1]


def recreate_with_a_bad_model(lab, manifest, stable):
    """Re-create a deleted rollout with another template, one that fails its analysis: the revision
    the deletion handed over is adopted as stable and keeps serving, the new template is a canary,
    judged and rolled back, never put in its place unjudged. Returns the status."""
    name = manifest["metadata"]["name"]
    lab.apply(scenarios.release(manifest, "3.0.0", {"error-rate": "0.2"}))
    canary = lab.wait_for(lambda: lab.status(name).get("canaryRevision"), timeout=20, what="the canary")
    assert lab.status(name)["stableRevision"] == stable and canary != stable
    status = lab.wait_for_phase(name, "RolledBack", timeout=60)
    assert status["stableRevision"] == stable and "error-rate" in status["message"]
    assert status["history"][0]["revision"] == canary
    return status
