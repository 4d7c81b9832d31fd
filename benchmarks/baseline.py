"""Baseline canary controllers: Flagger's documented default analysis and Argo Rollouts' documented
background-analysis example, driving their own objects in the same lab as the operator.

Flagger (https://docs.flagger.app/usage/how-it-works#canary-analysis, ".../deployment-strategies"):
every `interval` it runs each metric check over the metric's range; a check whose value is out
of its `thresholdRange` *or that returns no values* counts as a failed check; the failed-checks
counter is cumulative for the analysis and when it reaches `threshold` the canary is rolled back
(weight 0, canary scaled to zero). When all checks pass, the weight grows by `stepWeight`, one
step per interval, up to `maxWeight`; the next passing interval promotes, one state a tick as its
scheduler does (pkg/controller/scheduler.go): that tick copies the canary's template to the
primary (`Promoting`, the split unchanged); the next, once the primary is ready, routes all traffic
to it (`Finalising`); the next scales the canary to zero (`Succeeded`).

Argo Rollouts (docs/features/analysis.md, "Background Analysis"): steps setWeight 20/40/60/80,
each followed by `pause: {duration: 10m}`, then the rollout completes (promotion). An AnalysisRun
of the `success-rate` template starts at `startingStep: 2` (setWeight 40) and measures
`sum(irate(non-5xx[5m])) / sum(irate(all[5m]))` at once and then every `interval: 5m`;
`successCondition: result[0] >= 0.95`, `failureLimit: 3`. The controller fails a metric when its
failed measurements exceed `failureLimit` (the 4th failure) and when consecutive errors (no
result: the query fails or returns an empty vector) exceed `consecutiveErrorLimit` (default 4);
either aborts the rollout (canary weight 0). A NaN result (0/0, no canary traffic) fails the
condition: a failed measurement.

The operator cannot express either, so this controller drives its own objects: Deployments
`<name>-stable` / `<name>-canary` (pod template labels `modelrollout.io/rollout=<name>` and
`modelrollout.io/revision=stable|canary`, so the very same metric names and labels exist),
Services with the same names, and an HTTPRoute `<name>` whose backendRefs weights it sets.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from benchmarks import specs


@dataclass
class BaselineSubject:
    name: str
    stable: dict[str, str]
    canary: dict[str, str]
    policy: BaselinePolicy
    quality: bool = False
    # state (the tool's own status)
    phase: str = "Initialized"        # Initialized | Progressing | Promoting | Finalising | Promoted | Failed
    weight: int = 0
    failed_checks: int = 0
    errors_in_a_row: int = 0
    checks: int = 0
    step: int = 0                     # Argo: index of the current setWeight step
    started_at: float | None = None
    finished_at: float | None = None
    all_traffic_at: float | None = None  # when the new version serves every request
    ready_at: float | None = None
    step_at: float | None = None      # when the current step began
    next_check_at: float = 0.0
    log: list[dict[str, Any]] = field(default_factory=list)


Check = tuple[str, str, "float | None", "float | None"]  # (metric, query, min, max)


class BaselinePolicy(Protocol):
    name: str

    def advance(self, ctl: BaselineController, subject: BaselineSubject, now: float) -> None:
        """One tick of the tool's controller for a Progressing subject whose canary is ready."""


def _sel(name: str) -> str:
    return f'namespace="{specs.NAMESPACE}", rollout="{name}", revision="canary"'


@dataclass(frozen=True)
class Flagger:
    """Flagger's analysis: fixed thresholds, cumulative failed checks, no data = failed check."""

    interval: float
    metric_range: str                 # the metric's `interval` (Prometheus range)
    error_max: float                  # request-success-rate >= 1 - error_max
    latency_quantile: float           # request-duration is a p99 in Flagger's builtin
    latency_max: float                # seconds
    step_weight: int = 10
    max_weight: int = 50
    threshold: int = 5
    quality_min: float = specs.QUALITY_MIN
    name: str = "flagger"

    def checks(self, subject: BaselineSubject) -> list[Check]:
        sel, w = _sel(subject.name), self.metric_range
        out: list[Check] = [
            ("error-rate", f'sum(rate(http_requests_total{{{sel}, code=~"5.."}}[{w}])) '
                           f"/ sum(rate(http_requests_total{{{sel}}}[{w}]))", None, self.error_max),
            ("latency", f"histogram_quantile({self.latency_quantile}, sum by (le) "
                        f"(rate(http_request_duration_seconds_bucket{{{sel}}}[{w}])))", None, self.latency_max),
        ]
        if subject.quality:  # a custom MetricTemplate, as a Flagger user would add for a model
            out.append(("quality", f"sum(rate(model_feedback_correct_total{{{sel}}}[{w}])) "
                                   f"/ sum(rate(model_feedback_total{{{sel}}}[{w}]))", self.quality_min, None))
        return out

    def advance(self, ctl: BaselineController, subject: BaselineSubject, now: float) -> None:
        subject.next_check_at = now + self.interval
        if subject.phase == "Promoting":
            if ctl.primary_ready(subject):  # else the next tick looks again
                ctl.set_weight(subject, 0)
                subject.phase, subject.all_traffic_at = "Finalising", now
            return
        if subject.phase == "Finalising":
            ctl.promote(subject)
            return
        if subject.weight == 0:
            ctl.set_weight(subject, self.step_weight)  # Flagger's first step
            return
        failed = [metric for metric, query, lo, hi in self.checks(subject)
                  if not _within(ctl.query(query), lo, hi)]
        subject.checks += 1
        subject.log.append({"t": now, "weight": subject.weight, "failed": failed})
        if failed:
            subject.failed_checks += 1
            if subject.failed_checks >= self.threshold:
                ctl.rollback(subject)
            return
        if subject.weight >= self.max_weight:
            ctl.copy_to_primary(subject)
            subject.phase = "Promoting"
            return
        ctl.set_weight(subject, min(self.max_weight, subject.weight + self.step_weight))


@dataclass(frozen=True)
class Argo:
    """Argo Rollouts' background analysis: timed steps; the AnalysisRun may only abort."""

    steps: tuple[tuple[int, float], ...]   # (setWeight, pause seconds)
    starting_step: int                     # index into `steps` where the AnalysisRun starts
    interval: float
    metric_range: str
    success_min: float = 0.95
    failure_limit: int = 3
    consecutive_error_limit: int = 4
    name: str = "argo"

    def query(self, subject: BaselineSubject) -> str:
        sel, w = _sel(subject.name), self.metric_range
        return (f'sum(irate(http_requests_total{{{sel}, code!~"5.."}}[{w}])) '
                f"/ sum(irate(http_requests_total{{{sel}}}[{w}]))")

    def advance(self, ctl: BaselineController, subject: BaselineSubject, now: float) -> None:
        if subject.weight == 0:
            subject.step, subject.step_at = 0, now
            ctl.set_weight(subject, self.steps[0][0])
            subject.next_check_at = now
            return
        weight, pause = self.steps[subject.step]
        if subject.step >= self.starting_step and now >= subject.next_check_at:
            subject.next_check_at = now + self.interval
            value = ctl.query(self.query(subject), nan_is_value=True)
            subject.checks += 1
            if value is None:
                subject.errors_in_a_row += 1
            else:
                subject.errors_in_a_row = 0
                if not value >= self.success_min:  # NaN fails the condition
                    subject.failed_checks += 1
            subject.log.append({"t": now, "weight": weight, "value": value, "failed": subject.failed_checks})
            if subject.failed_checks > self.failure_limit or subject.errors_in_a_row > self.consecutive_error_limit:
                ctl.rollback(subject)
                return
        if now - (subject.step_at or now) < pause:
            return
        if subject.step + 1 >= len(self.steps):
            ctl.promote(subject)
            return
        subject.step += 1
        subject.step_at = now
        ctl.set_weight(subject, self.steps[subject.step][0])
        if subject.step == self.starting_step:
            subject.next_check_at = now  # the AnalysisRun's first measurement is taken at once


# Flagger as documented: interval 1m, threshold 5, stepWeight 10, maxWeight 50,
# request-success-rate >= 99 % and request-duration (its p99) <= 500 ms, each over the 1m range.
FLAGGER_DOCUMENTED = Flagger(interval=specs.lab_seconds(60), metric_range=specs.lab_duration(60), error_max=0.01,
                             latency_quantile=0.99, latency_max=0.5)
# The same-clock baseline: Flagger's rules at ours' clock (3 s), p95 <= 0.2 s like ours.
FLAGGER_SAME_CLOCK = Flagger(interval=specs.INTERVAL, metric_range=specs.BASE_WINDOW, error_max=specs.ERROR_MAX,
                             latency_quantile=0.95, latency_max=specs.LATENCY_P95_MAX,
                             step_weight=specs.BASE_STEP_WEIGHT, max_weight=specs.BASE_MAX_WEIGHT,
                             threshold=specs.BASE_THRESHOLD)
# Argo Rollouts' "Background Analysis" example (docs/features/analysis.md): setWeight 20/40/60/80 with
# a 10m pause after each, the success-rate AnalysisRun from startingStep 2 (the setWeight 40 step),
# every 5m over irate([5m]), successCondition result[0] >= 0.95, failureLimit 3.
ARGO_EXAMPLE = Argo(steps=tuple((w, specs.lab_seconds(specs.ARGO_PAUSE)) for w in specs.ARGO_STEPS), starting_step=1,
                    interval=specs.lab_seconds(300), metric_range=specs.lab_duration(300))


def _within(value: float | None, lo: float | None, hi: float | None) -> bool:
    return value is not None and (hi is None or value <= hi) and (lo is None or value >= lo)


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


class BaselineController:
    """One thread drives every baseline subject, each on its own policy's clock."""

    TICK = 0.1

    def __init__(self, lab: Any) -> None:
        self.lab = lab
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

    def set_weight(self, subject: BaselineSubject, weight: int) -> None:
        self.lab.apply(specs.http_route(subject.name, _refs(subject.name, weight)))
        subject.weight = weight

    def _canary_ready(self, subject: BaselineSubject) -> bool:
        dep = self.lab.apps.read_namespaced_deployment_status(f"{subject.name}-canary", specs.NAMESPACE)
        return int(dep.status.ready_replicas or 0) >= int(dep.spec.replicas or 0) > 0

    def query(self, query: str, nan_is_value: bool = False) -> float | None:
        """One instant query; None is "no values found" (empty or unreachable; NaN too unless asked)."""
        try:
            resp = self._session.get(f"{self.lab.prometheus.url}/api/v1/query", params={"query": query}, timeout=2)
            resp.raise_for_status()
            result = resp.json()["data"]["result"]
        except Exception:  # noqa: BLE001  (an outage is "no data", as in Flagger)
            return None
        if not result:
            return None
        value = float(result[0]["value"][1])
        return value if nan_is_value or value == value else None

    # ------------------------------------------------------------ the analysis loop
    def step(self, subject: BaselineSubject, now: float) -> None:
        if subject.phase not in ("Progressing", "Promoting", "Finalising") or now < subject.next_check_at:
            return
        if subject.ready_at is None:
            if not self._canary_ready(subject):
                subject.next_check_at = now + 1.0
                return
            subject.ready_at = now
        subject.policy.advance(self, subject, now)

    def rollback(self, subject: BaselineSubject) -> None:
        self.set_weight(subject, 0)
        self.lab.apps.patch_namespaced_deployment(f"{subject.name}-canary", specs.NAMESPACE, {"spec": {"replicas": 0}})
        subject.phase = "Failed"
        subject.finished_at = time.time()

    def copy_to_primary(self, subject: BaselineSubject) -> None:
        self.lab.apply(_deployment(subject.name, "stable", subject.canary, 2))

    def primary_ready(self, subject: BaselineSubject) -> bool:
        """The primary runs the canary's template on all its replicas, Ready (Flagger's IsPrimaryReady)."""
        dep = self.lab.apps.read_namespaced_deployment(f"{subject.name}-stable", specs.NAMESPACE)
        annotations = dep.spec.template.metadata.annotations or {}
        return (annotations == specs.annotations(subject.canary)
                and (dep.status.observed_generation or 0) >= (dep.metadata.generation or 0)
                and int(dep.status.updated_replicas or 0) >= int(dep.spec.replicas or 0)
                and int(dep.status.ready_replicas or 0) >= int(dep.spec.replicas or 0))

    def promote(self, subject: BaselineSubject) -> None:
        """The canary's template on the primary/stable, all traffic to it, the canary scaled to zero
        (Argo in one go at its last step; Flagger's last tick, after `Promoting` and `Finalising`)."""
        if subject.all_traffic_at is None:
            self.copy_to_primary(subject)
            self.set_weight(subject, 0)
            subject.all_traffic_at = time.time()
        self.lab.apps.patch_namespaced_deployment(f"{subject.name}-canary", specs.NAMESPACE, {"spec": {"replicas": 0}})
        subject.phase = "Promoted"
        subject.finished_at = time.time()

    def run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                subjects = list(self.subjects.values())
            for subject in subjects:
                try:
                    self.step(subject, time.time())
                except Exception as exc:  # noqa: BLE001  (an API hiccup: next tick)
                    subject.log.append({"t": time.time(), "error": repr(exc)})
            self._stop.wait(self.TICK)

    def start(self) -> BaselineController:
        self._thread = threading.Thread(target=self.run, name="baseline", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
