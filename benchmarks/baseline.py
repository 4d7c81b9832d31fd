"""A baseline canary controller modelled on Flagger's documented default analysis.

Flagger (https://docs.flagger.app/usage/how-it-works#canary-analysis, ".../deployment-strategies"):
every `interval` it runs each metric check over the metric's range; a check whose value is out
of its `thresholdRange` *or that returns no values* counts as a failed check; the failed-checks
counter is cumulative for the analysis and when it reaches `threshold` the canary is rolled back
(weight 0, canary scaled to zero). When all checks pass, the weight grows by `stepWeight`, one
step per interval, up to `maxWeight`; the next passing interval promotes.

The operator cannot express that, so this controller drives its own objects in the same lab:
Deployments `<name>-stable` / `<name>-canary` (pod template labels `modelrollout.io/rollout=<name>`
and `modelrollout.io/revision=stable|canary`, so the very same metric names and labels exist),
Services with the same names, and an HTTPRoute `<name>` whose backendRefs weights it sets.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from benchmarks import specs


@dataclass
class BaselineSubject:
    name: str
    stable: dict[str, str]
    canary: dict[str, str]
    quality: bool = False
    # state (Flagger's Canary status)
    phase: str = "Initialized"        # Initialized | Progressing | Promoted | Failed
    weight: int = 0
    failed_checks: int = 0
    checks: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    ready_at: float | None = None
    log: list[dict[str, Any]] = field(default_factory=list)


def _deployment(name: str, role: str, behaviour: dict[str, str], replicas: int) -> dict[str, Any]:
    labels = {"app": f"{name}-{role}", "modelrollout.io/rollout": name, "modelrollout.io/revision": role}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"{name}-{role}", "namespace": specs.NAMESPACE, "labels": {"bench": "baseline"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": f"{name}-{role}"}},
                     "template": {"metadata": {"labels": labels, "annotations": specs.annotations(behaviour)},
                                  "spec": {"containers": [{"name": "server", "image": f"example/{name}:{role}"}]}}}}


def _service(name: str, role: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"{name}-{role}", "namespace": specs.NAMESPACE},
            "spec": {"selector": {"app": f"{name}-{role}"}, "ports": [{"name": "http", "port": 8080}]}}


def _refs(name: str, weight: int) -> list[dict[str, Any]]:
    return [{"name": f"{name}-stable", "port": 8080, "weight": 100 - weight},
            {"name": f"{name}-canary", "port": 8080, "weight": weight}]


def checks(subject: BaselineSubject) -> list[tuple[str, str, float | None, float | None]]:
    """(metric, query, min, max): Flagger's builtin checks, on the lab's metric names."""
    sel = f'namespace="{specs.NAMESPACE}", rollout="{subject.name}", revision="canary"'
    w = specs.BASE_WINDOW
    out = [
        ("error-rate", f'sum(rate(http_requests_total{{{sel}, code=~"5.."}}[{w}])) '
                       f"/ sum(rate(http_requests_total{{{sel}}}[{w}]))", None, specs.ERROR_MAX),
        ("latency-p95", f"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{{sel}}}[{w}])))",
         None, specs.LATENCY_P95_MAX),
    ]
    if subject.quality:
        out.append(("quality", f"sum(rate(model_feedback_correct_total{{{sel}}}[{w}])) "
                               f"/ sum(rate(model_feedback_total{{{sel}}}[{w}]))", specs.QUALITY_MIN, None))
    return out


class BaselineController:
    """One thread drives every baseline subject, one analysis per `interval`."""

    def __init__(self, lab: Any, interval: float = specs.INTERVAL) -> None:
        self.lab = lab
        self.interval = interval
        self.subjects: dict[str, BaselineSubject] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session = requests.Session()

    # ------------------------------------------------------------ objects
    def install(self, subject: BaselineSubject, replicas: int = 2) -> None:
        """The stable version, its Service, an empty canary Service and the route (all to stable)."""
        self.lab.apply(_deployment(subject.name, "stable", subject.stable, replicas))
        self.lab.apply(_service(subject.name, "stable"))
        self.lab.apply(_service(subject.name, "canary"))
        self.lab.apply(specs.http_route(subject.name, _refs(subject.name, 0)))
        with self._lock:
            self.subjects[subject.name] = subject

    def release(self, name: str, replicas: int = 2) -> None:
        """A new version: the canary Deployment; analysis starts once it is ready (Flagger's init)."""
        subject = self.subjects[name]
        self.lab.apply(_deployment(name, "canary", subject.canary, replicas))
        subject.started_at = time.time()
        subject.phase = "Progressing"

    def _set_weight(self, subject: BaselineSubject, weight: int) -> None:
        self.lab.apply(specs.http_route(subject.name, _refs(subject.name, weight)))
        subject.weight = weight

    def _canary_ready(self, subject: BaselineSubject) -> bool:
        dep = self.lab.apps.read_namespaced_deployment_status(f"{subject.name}-canary", specs.NAMESPACE)
        return int(dep.status.ready_replicas or 0) >= int(dep.spec.replicas or 0) > 0

    def _query(self, query: str) -> float | None:
        """One instant query; None is Flagger's "no values found" (empty, NaN, or unreachable)."""
        try:
            resp = self._session.get(f"{self.lab.prometheus.url}/api/v1/query", params={"query": query}, timeout=2)
            resp.raise_for_status()
            result = resp.json()["data"]["result"]
        except Exception:  # noqa: BLE001  (an outage is "no data", as in Flagger)
            return None
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if value != value else value  # NaN

    # ------------------------------------------------------------ the analysis loop
    def step(self, subject: BaselineSubject) -> None:
        if subject.phase != "Progressing":
            return
        if subject.ready_at is None:
            if not self._canary_ready(subject):
                return
            subject.ready_at = time.time()
            self._set_weight(subject, specs.BASE_STEP_WEIGHT)  # Flagger's first step
            return
        if subject.failed_checks >= specs.BASE_THRESHOLD:
            self._rollback(subject)
            return
        failed = []
        for metric, query, lo, hi in checks(subject):
            value = self._query(query)
            if value is None or (hi is not None and value > hi) or (lo is not None and value < lo):
                failed.append((metric, value))
        subject.checks += 1
        subject.log.append({"t": time.time(), "weight": subject.weight, "failed": [m for m, _ in failed]})
        if failed:
            subject.failed_checks += 1
            if subject.failed_checks >= specs.BASE_THRESHOLD:
                self._rollback(subject)
            return
        if subject.weight >= specs.BASE_MAX_WEIGHT:
            self._promote(subject)
            return
        self._set_weight(subject, min(specs.BASE_MAX_WEIGHT, subject.weight + specs.BASE_STEP_WEIGHT))

    def _rollback(self, subject: BaselineSubject) -> None:
        self._set_weight(subject, 0)
        self.lab.apps.patch_namespaced_deployment(f"{subject.name}-canary", specs.NAMESPACE, {"spec": {"replicas": 0}})
        subject.phase = "Failed"
        subject.finished_at = time.time()

    def _promote(self, subject: BaselineSubject) -> None:
        """Flagger copies the canary spec to the primary, then routes all traffic back to it."""
        subject.phase = "Promoted"
        subject.finished_at = time.time()
        self.lab.apply(_deployment(subject.name, "stable", subject.canary, 2))
        self._set_weight(subject, 0)

    def run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            with self._lock:
                subjects = list(self.subjects.values())
            for subject in subjects:
                try:
                    self.step(subject)
                except Exception as exc:  # noqa: BLE001  (an API hiccup: next interval)
                    subject.log.append({"t": time.time(), "error": repr(exc)})
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def start(self) -> BaselineController:
        self._thread = threading.Thread(target=self.run, name="baseline", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
