"""The traffic simulator: sends seeded synthetic requests along the live routing state.

Entry points are ConfigMaps labelled ``lab.modelrollout.io/traffic: "true"`` (any namespace)::

    data:
      target: httproute/fraud-detector     # or service/<name>, deployment/<name> (same namespace);
                                           # httproute/<name>#/admin: the rule matching path /admin;
                                           # virtualservice/<name>#primary: the http route named primary;
                                           # inferenceservice/<name>: its status' predictor traffic
      rps: "50"                            # read every tick; "0" means no traffic
      seed: "7"                            # optional

Every tick the simulator resolves HTTPRoute weights (one rule's backendRefs: the first rule, or
the one named by path) -> Services -> Deployments (by selector, weighted by
status.readyReplicas), draws Poisson(rps * dt) requests,
splits them, and lets each Deployment's simulated model version (see ``models.py``; behaviour
from its pod template annotations) answer them. Results are exposed at ``/metrics`` in the
Prometheus format, and per-Deployment totals at ``/snapshot`` (JSON). Requests that reach no
Ready pod (a backend Service missing, no Ready endpoints, no such route or rule) are counted as
``lab_unrouted_requests_total{namespace, entrypoint}``.

Mirrors (a VirtualService route's ``mirror`` with ``mirrorPercentage``, an HTTPRoute rule's
``RequestMirror`` filter with ``percent``) send copies of the routed requests to the mirror's
Service: the copies are answered and show in that version's metrics, as a real server would
export them, but their answers are discarded, so ``/snapshot`` counts them apart
(``mirrored``), never in ``requests``.

In-process::

    sim = TrafficSimulator(kubeconfig, port=0, tick=0.2, seed=0).start()
    sim.address        # "127.0.0.1:PORT", a Prometheus scrape target
    sim.snapshot()
    sim.stop()

As a process: ``python -m modelrollout_lab.traffic --kubeconfig K --port P --seed S``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import socketserver
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import make_wsgi_app
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from modelrollout_lab import models
from modelrollout_lab.kserve import is_raw, knative_deployment_name
from modelrollout_lab.models import DURATION_BUCKETS, INPUT_BUCKETS, INPUT_FEATURE, SCORE_BUCKETS, ModelBehaviour
from modelrollout_lab.workloads import Informer, Key, Obj, RawKube, key_of
from modelrollout.names import LABEL_MODEL_VERSION, LABEL_REVISION, LABEL_ROLLOUT

log = logging.getLogger("modelrollout_lab.traffic")

TRAFFIC_LABEL = "lab.modelrollout.io/traffic"
# A ConfigMap so labelled changes how revisions behave from now on, without touching the objects the
# operator owns (it restores an edited Deployment): data `<revision>: {"error-rate": "0.4", ...}`
# (a Deployment without a revision label is keyed by its name)
# (JSON, the short names of the pod template's lab.modelrollout.io/* annotations), over the template's.
BEHAVIOUR_LABEL = "lab.modelrollout.io/behaviour"
DEFAULT_RPS = 20.0
GATEWAY_GROUP = "gateway.networking.k8s.io"
ISTIO_GROUP = "networking.istio.io"
KSERVE_GROUP = "serving.kserve.io"

SERIES_LABELS = ("namespace", "rollout", "revision", "model_version", "deployment")


# --------------------------------------------------------------------------------------------
# Routing resolution: pure functions over plain dicts (as returned by the API).


def _template_labels(deployment: Obj) -> dict[str, str]:
    return ((((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")) or {}


def _template_annotations(deployment: Obj) -> dict[str, str]:
    return ((((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations")) or {}


def behaviour_overrides(config_maps: Mapping[Key, Obj]) -> dict[tuple[str, str], dict[str, str]]:
    """(namespace, revision) -> the lab.modelrollout.io/* annotations its BEHAVIOUR_LABEL ConfigMaps set
    (an entry that is not a JSON object is ignored)."""
    overrides: dict[tuple[str, str], dict[str, str]] = {}
    for (namespace, _), cm in sorted(config_maps.items()):
        for revision, raw in sorted((cm.get("data") or {}).items()):
            try:
                behaviour = json.loads(raw)
            except ValueError:
                continue
            if isinstance(behaviour, dict):
                overrides.setdefault((namespace, revision), {}).update(
                    {models.ANNOTATION_PREFIX + str(k): str(v) for k, v in behaviour.items()})
    return overrides


class DeploymentIndex:
    """Deployments by namespace and by template label, built once a tick: a Service's pods are
    looked for among the Deployments carrying one of its selector's labels, not among every
    Deployment of the namespace (1000 rollouts in one namespace: a tick scanned 2000 Deployments
    per Service, 1.5 s of CPU per 0.2 s tick)."""

    def __init__(self, deployments: Mapping[Key, Obj]) -> None:
        self._by_ns: dict[str, dict[Key, Obj]] = {}
        self._by_label: dict[tuple[str, str, str], dict[Key, Obj]] = {}
        for key, d in deployments.items():
            self._by_ns.setdefault(key[0], {})[key] = d
            for label in _template_labels(d).items():
                self._by_label.setdefault((key[0], *label), {})[key] = d

    def in_namespace(self, namespace: str) -> Mapping[Key, Obj]:
        return self._by_ns.get(namespace, {})

    def behind(self, namespace: str, service: Obj) -> Mapping[Key, Obj]:
        """The Deployments that may match the Service's selector (service_shares checks every label)."""
        selector = (service.get("spec") or {}).get("selector") or {}
        if not selector:
            return {}
        return min((self._by_label.get((namespace, *label), {}) for label in selector.items()), key=len)


def service_shares(namespace: str, service: Obj, deployments: Mapping[Key, Obj]) -> dict[Key, float]:
    """Deployments behind a Service, weighted by ready replicas (sums to 1, or empty)."""
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        return {}
    ready: dict[Key, int] = {}
    for key, d in deployments.items():
        if key[0] != namespace:
            continue
        labels = _template_labels(d)
        if all(labels.get(k) == v for k, v in selector.items()):
            n = int((d.get("status") or {}).get("readyReplicas") or 0)
            if n > 0:
                ready[key] = n
    total = sum(ready.values())
    return {k: n / total for k, n in ready.items()} if total else {}


def route_rule(route: Obj, rule_path: str | None = None) -> Obj | None:
    """The rule with a match on path `rule_path` (any match type), or the first rule when None."""
    rules = (route.get("spec") or {}).get("rules") or []
    if rule_path is None:
        return rules[0] if rules else None
    return next((rule for rule in rules
                 if any(((m or {}).get("path") or {}).get("value") == rule_path for m in rule.get("matches") or [])),
                None)


def route_backends(route: Obj, rule_path: str | None = None) -> list[tuple[str, str, float]]:
    """(namespace or "", service name, weight) of one HTTPRoute rule (see route_rule)."""
    rule = route_rule(route, rule_path)
    if rule is None:
        return []
    out = []
    for ref in rule.get("backendRefs") or []:
        if (ref.get("kind") or "Service") != "Service" or (ref.get("group") or "") not in ("", "core"):
            continue
        w = ref.get("weight", 1)
        try:
            weight = max(0.0, float(1 if w is None else w))
        except (TypeError, ValueError):
            weight = 0.0
        out.append((ref.get("namespace") or "", ref.get("name") or "", weight))
    return out


def _service_of_host(host: str, namespace: str) -> tuple[str, str]:
    """(namespace, Service name) of an Istio destination host: `name`, `name.ns`, `name.ns.svc...`."""
    parts = (host or "").split(".")
    return (parts[1] if len(parts) > 1 else namespace), parts[0]


def vs_route(vs: Obj, route_name: str | None = None) -> Obj | None:
    """The VirtualService http route named `route_name`, or the first one when None."""
    routes = (vs.get("spec") or {}).get("http") or []
    if route_name is None:
        return routes[0] if routes else None
    return next((route for route in routes if route.get("name") == route_name), None)


def vs_backends(vs: Obj, route_name: str | None = None) -> list[tuple[str, str, float]]:
    """(namespace, Service, weight) of one VirtualService route; an omitted weight is 100 for a
    sole destination, else 0 (as Istio reads it)."""
    route = vs_route(vs, route_name)
    destinations = (route or {}).get("route") or []
    out = []
    for d in destinations:
        ns, name = _service_of_host(((d.get("destination") or {}).get("host")) or "", "")
        try:
            weight = max(0.0, float(d.get("weight", 100 if len(destinations) == 1 else 0)))
        except (TypeError, ValueError):
            weight = 0.0
        out.append((ns, name, weight))
    return out


def _percent(value: Any, default: float = 100.0) -> float:
    try:
        return min(100.0, max(0.0, float(default if value is None else value)))
    except (TypeError, ValueError):
        return 0.0


def mirror_backends(kind: str, obj: Obj, rule_key: str | None) -> list[tuple[str, str, float]]:
    """(namespace or "", Service, percent of the rule's requests copied) of one rule's mirrors."""
    if kind == "virtualservice":
        route = vs_route(obj, rule_key) or {}
        mirror = route.get("mirror")
        if not mirror:
            return []
        ns, name = _service_of_host(mirror.get("host") or "", "")
        return [(ns, name, _percent((route.get("mirrorPercentage") or {}).get("value")))]
    rule = route_rule(obj, rule_key) or {}
    out = []
    for f in rule.get("filters") or []:
        if f.get("type") != "RequestMirror":
            continue
        spec = f.get("requestMirror") or {}
        ref = spec.get("backendRef") or {}
        fraction = spec.get("fraction")
        percent = _percent(spec.get("percent")) if fraction is None else \
            _percent(100.0 * float(fraction.get("numerator", 0)) / float(fraction.get("denominator", 100) or 100))
        out.append((ref.get("namespace") or "", ref.get("name") or "", percent))
    return out


def _spread(namespace: str, backends: list[tuple[str, str, float]], total: float, services: Mapping[Key, Obj],
            index: DeploymentIndex) -> dict[Key, float]:
    """Fractions per Deployment when `backends` get weight/total of the traffic each."""
    out: dict[Key, float] = {}
    if total <= 0:
        return out
    for ns, svc_name, w in backends:
        if w <= 0:
            continue
        svc = services.get((ns or namespace, svc_name))
        if not svc:
            continue
        for dkey, share in service_shares(ns or namespace, svc, index.behind(ns or namespace, svc)).items():
            out[dkey] = out.get(dkey, 0.0) + (w / total) * share
    return out


def resolve_mirrors(namespace: str, target: str, *, routes: Mapping[Key, Obj], services: Mapping[Key, Obj],
                    deployments: Mapping[Key, Obj], virtual_services: Mapping[Key, Obj] | None = None,
                    index: DeploymentIndex | None = None) -> dict[Key, float]:
    """Copies per request of an entry point that each Deployment receives through mirrors."""
    kind, _, name = (target or "").strip().partition("/")
    name, _, rule_key = name.partition("#")
    kind = {"vs": "virtualservice"}.get(kind.lower(), kind.lower().removesuffix("s"))
    objects = {"httproute": routes, "virtualservice": virtual_services or {}}.get(kind)
    obj = objects.get((namespace, name)) if objects is not None else None
    if not obj:
        return {}
    return _spread(namespace, mirror_backends(kind, obj, rule_key or None), 100.0, services,
                   index or DeploymentIndex(deployments))


def isvc_shares(namespace: str, isvc: Obj, deployments: Mapping[Key, Obj]) -> dict[Key, float]:
    """An InferenceService's split as KServe reports it (status.components.predictor.traffic, one
    entry per revision: in Serverless mode a Knative revision, run by the Deployment
    ``<revision>-deployment``; in the lab's RawDeployment mode the Deployment itself); revisions
    with no Ready pod get nothing."""
    traffic = ((((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}).get("traffic")) or []
    raw = is_raw(isvc)
    out: dict[Key, float] = {}
    for entry in traffic:
        revision = str(entry.get("revisionName") or "")
        key = (namespace, revision if raw else knative_deployment_name(revision))
        share = _percent(entry.get("percent"), 0.0) / 100.0
        if share > 0 and int(((deployments.get(key) or {}).get("status") or {}).get("readyReplicas") or 0) > 0:
            out[key] = out.get(key, 0.0) + share
    return out


def resolve_target(namespace: str, target: str, *, routes: Mapping[Key, Obj], services: Mapping[Key, Obj],
                   deployments: Mapping[Key, Obj], virtual_services: Mapping[Key, Obj] | None = None,
                   inference_services: Mapping[Key, Obj] | None = None,
                   index: DeploymentIndex | None = None) -> dict[Key, float]:
    """Fraction of an entry point's traffic that each Deployment receives.

    The fractions sum to at most 1; the rest is unrouted (no ready pods, a missing Service,
    zero weights, an unknown target). ``index`` is ``deployments`` indexed (the simulator builds
    one a tick and passes it to every entry point, so a tick stays linear).
    """
    index = index or DeploymentIndex(deployments)
    kind, _, name = (target or "").strip().partition("/")
    name, _, rule_path = name.partition("#")
    kind = kind.lower()
    if not name:
        return {}
    if kind in ("service", "svc", "services"):
        svc = services.get((namespace, name))
        return service_shares(namespace, svc, index.behind(namespace, svc)) if svc else {}
    if kind in ("deployment", "deploy", "deployments"):
        d = deployments.get((namespace, name))
        return {(namespace, name): 1.0} if d and int((d.get("status") or {}).get("readyReplicas") or 0) > 0 else {}
    if kind in ("httproute", "httproutes"):
        route = routes.get((namespace, name))
        backends = route_backends(route, rule_path or None) if route else []
        return _spread(namespace, backends, sum(w for _, _, w in backends), services, index)
    if kind in ("virtualservice", "virtualservices", "vs"):
        vs = (virtual_services or {}).get((namespace, name))
        backends = vs_backends(vs, rule_path or None) if vs else []
        return _spread(namespace, backends, sum(w for _, _, w in backends), services, index)
    if kind in ("inferenceservice", "inferenceservices", "isvc"):
        isvc = (inference_services or {}).get((namespace, name))
        return isvc_shares(namespace, isvc, index.in_namespace(namespace)) if isvc else {}
    return {}


def series_labels(deployment: Obj) -> tuple[str, str, str, str, str]:
    ns, name = key_of(deployment)
    labels = _template_labels(deployment)
    return (
        ns,
        labels.get(LABEL_ROLLOUT, ""),
        labels.get(LABEL_REVISION) or name,
        labels.get(LABEL_MODEL_VERSION, ""),
        name,
    )


def _float(data: Mapping[str, Any], key: str, default: float) -> float:
    try:
        v = float(data.get(key, default))
    except (TypeError, ValueError):
        return default
    return v if v == v and v >= 0 else default


# --------------------------------------------------------------------------------------------
# Accumulators and the Prometheus collector.


@dataclass
class _Series:
    ok: int = 0
    err: int = 0
    duration: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    predictions: int = 0
    score: list[int] = field(default_factory=lambda: [0] * (len(SCORE_BUCKETS) + 1))
    score_sum: float = 0.0
    feedback: int = 0
    feedback_correct: int = 0
    input_rows: int = 0
    input_missing: int = 0
    input_value: list[int] = field(default_factory=lambda: [0] * (len(INPUT_BUCKETS) + 1))
    input_value_sum: float = 0.0


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    out, acc = [], 0
    for b, c in zip(bounds, counts):
        acc += c
        out.append((floatToGoString(b), acc))
    out.append(("+Inf", acc + counts[-1]))
    return out


class _Collector(Collector):
    def __init__(self, sim: TrafficSimulator):
        self.sim = sim

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        with self.sim._lock:
            series = {k: _copy(v) for k, v in self.sim._series.items()}
            unrouted = dict(self.sim._unrouted)
        req = CounterMetricFamily("http_requests", "Simulated HTTP requests by answer code.",
                                  labels=SERIES_LABELS + ("code",))
        dur = HistogramMetricFamily("http_request_duration_seconds", "Simulated request latency.",
                                    labels=SERIES_LABELS)
        pred = CounterMetricFamily("model_predictions", "Successful predictions.", labels=SERIES_LABELS)
        score = HistogramMetricFamily("model_prediction_score", "Prediction scores in [0, 1].",
                                      labels=SERIES_LABELS)
        fb = CounterMetricFamily("model_feedback", "Predictions that received a label.", labels=SERIES_LABELS)
        fbc = CounterMetricFamily("model_feedback_correct", "Labelled predictions that were correct.",
                                  labels=SERIES_LABELS)
        rows = CounterMetricFamily("model_input_rows", "Rows handed to the model.", labels=SERIES_LABELS)
        missing = CounterMetricFamily("model_input_feature_missing", "Rows whose feature was missing (before imputation).",
                                      labels=SERIES_LABELS + ("feature",))
        value = HistogramMetricFamily("model_input_feature_value", "A feature's normalised value as handed to the model.",
                                      labels=SERIES_LABELS + ("feature",))
        unr = CounterMetricFamily("lab_unrouted_requests", "Requests with no ready backend.",
                                  labels=("namespace", "entrypoint"))
        for labels, s in sorted(series.items()):
            lv = list(labels)
            req.add_metric(lv + ["200"], s.ok)
            req.add_metric(lv + ["500"], s.err)
            dur.add_metric(lv, _cumulative(DURATION_BUCKETS, s.duration), s.duration_sum)
            pred.add_metric(lv, s.predictions)
            score.add_metric(lv, _cumulative(SCORE_BUCKETS, s.score), s.score_sum)
            fb.add_metric(lv, s.feedback)
            fbc.add_metric(lv, s.feedback_correct)
            rows.add_metric(lv, s.input_rows)
            missing.add_metric(lv + [INPUT_FEATURE], s.input_missing)
            value.add_metric(lv + [INPUT_FEATURE], _cumulative(INPUT_BUCKETS, s.input_value), s.input_value_sum)
        for (ns, name), n in sorted(unrouted.items()):
            unr.add_metric([ns, name], n)
        return [req, dur, pred, score, fb, fbc, rows, missing, value, unr]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    return floatToGoString(value)


_FAMILIES = (
    ("http_requests_total", "counter", "Simulated HTTP requests by answer code."),
    ("http_request_duration_seconds", "histogram", "Simulated request latency."),
    ("model_predictions_total", "counter", "Successful predictions."),
    ("model_prediction_score", "histogram", "Prediction scores in [0, 1]."),
    ("model_feedback_total", "counter", "Predictions that received a label."),
    ("model_feedback_correct_total", "counter", "Labelled predictions that were correct."),
    ("model_input_rows_total", "counter", "Rows handed to the model."),
    ("model_input_feature_missing_total", "counter", "Rows whose feature was missing (before imputation)."),
    ("model_input_feature_value", "histogram", "A feature's normalised value as handed to the model."),
    ("lab_unrouted_requests_total", "counter", "Requests with no ready backend."),
)
_DURATION_LE = [f'le="{floatToGoString(b)}"' for b in DURATION_BUCKETS] + ['le="+Inf"']
_SCORE_LE = [f'le="{floatToGoString(b)}"' for b in SCORE_BUCKETS] + ['le="+Inf"']
_INPUT_LE = [f'le="{floatToGoString(b)}"' for b in INPUT_BUCKETS] + ['le="+Inf"']


def render_text(series: Mapping[tuple[str, ...], _Series], unrouted: Mapping[Key, int]) -> bytes:
    """The Prometheus text format (0.0.4), written directly: ~10x faster than the generic
    prometheus_client path, which matters with thousands of series scraped every second."""
    items = sorted(series.items())
    labels = {k: ",".join(f'{n}="{_escape(v)}"' for n, v in zip(SERIES_LABELS, k)) for k, _ in items}
    out: list[str] = []

    def header(i: int) -> None:
        name, kind, help_ = _FAMILIES[i]
        base = name[:-6] if kind == "counter" else name
        out.append(f"# HELP {base} {help_}\n# TYPE {name if kind != 'counter' else base} {kind}\n")

    def hist(name: str, les: list[str], lab: str, counts: list[int], total: float) -> None:
        acc = 0
        for le, c in zip(les, counts):
            acc += c
            out.append(f"{name}_bucket{{{lab},{le}}} {acc}.0\n")
        out.append(f"{name}_count{{{lab}}} {acc}.0\n{name}_sum{{{lab}}} {_fmt(total)}\n")

    header(0)
    for k, s in items:
        out.append(f'http_requests_total{{{labels[k]},code="200"}} {s.ok}.0\n'
                   f'http_requests_total{{{labels[k]},code="500"}} {s.err}.0\n')
    header(1)
    for k, s in items:
        hist("http_request_duration_seconds", _DURATION_LE, labels[k], s.duration, s.duration_sum)
    header(2)
    for k, s in items:
        out.append(f"model_predictions_total{{{labels[k]}}} {s.predictions}.0\n")
    header(3)
    for k, s in items:
        hist("model_prediction_score", _SCORE_LE, labels[k], s.score, s.score_sum)
    header(4)
    for k, s in items:
        out.append(f"model_feedback_total{{{labels[k]}}} {s.feedback}.0\n")
    header(5)
    for k, s in items:
        out.append(f"model_feedback_correct_total{{{labels[k]}}} {s.feedback_correct}.0\n")
    header(6)
    for k, s in items:
        out.append(f"model_input_rows_total{{{labels[k]}}} {s.input_rows}.0\n")
    feature = f'feature="{_escape(INPUT_FEATURE)}"'
    header(7)
    for k, s in items:
        out.append(f"model_input_feature_missing_total{{{labels[k]},{feature}}} {s.input_missing}.0\n")
    header(8)
    for k, s in items:
        hist("model_input_feature_value", _INPUT_LE, f"{labels[k]},{feature}", s.input_value, s.input_value_sum)
    header(9)
    for (ns, name), n in sorted(unrouted.items()):
        out.append(f'lab_unrouted_requests_total{{namespace="{_escape(ns)}",entrypoint="{_escape(name)}"}} {n}.0\n')
    return "".join(out).encode()


def _copy(s: _Series) -> _Series:
    return _Series(s.ok, s.err, list(s.duration), s.duration_sum, s.predictions, list(s.score), s.score_sum,
                   s.feedback, s.feedback_correct, s.input_rows, s.input_missing, list(s.input_value),
                   s.input_value_sum)


# --------------------------------------------------------------------------------------------
# Model versions and the simulator.


@dataclass
class _Version:
    key: Key
    rng: random.Random
    input_rng: random.Random  # a stream of its own: inputs never shift the seeded answers
    behaviour: ModelBehaviour
    annotations: dict[str, str]
    labels: tuple[str, str, str, str, str]
    first_served: float | None = None  # monotonic time of the first request
    feedback_queue: deque[tuple[float, int, int]] = field(default_factory=deque)
    # totals for snapshot()
    requests: int = 0
    errors: int = 0
    predictions: int = 0
    incorrect: int = 0
    bad_requests: int = 0
    degraded_requests: int = 0
    degraded_since: float | None = None
    mirrored: int = 0  # copies answered through a mirror: their answers reached nobody

    def current(self, now: float) -> tuple[ModelBehaviour, bool]:
        b = self.behaviour
        if b.degrades and self.first_served is not None and now - self.first_served >= (b.degrade_after_seconds or 0):
            if self.degraded_since is None:
                self.degraded_since = now
            return b.degraded(), True
        return b, False


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:  # noqa: D102
        pass


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


RouteWeights = tuple[tuple[tuple[str, Any], ...], ...]  # per rule: (backend name, weight) pairs


class TrafficSimulator:
    """Seeded synthetic traffic along the live routing state, exposed as Prometheus metrics."""

    def __init__(self, kubeconfig: str | None, port: int = 0, tick: float = 0.2, seed: int = 0, *,
                 host: str = "127.0.0.1", namespace: str | None = None, watch: bool = True,
                 poll_interval: float = 1.0):
        self.kubeconfig = kubeconfig
        self.port = port
        self.tick = tick
        self.seed = seed
        self.host = host
        self.namespace = namespace
        self.watch = watch
        self.poll_interval = poll_interval
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self.tick_count = 0
        self._lock = threading.RLock()
        self._tick_cond = threading.Condition()
        self._series: dict[tuple[str, ...], _Series] = {}
        self._exporting: set[Key] = set()  # Deployments whose series exist (from their first Ready replica)
        self._unrouted: dict[Key, int] = {}
        self._versions: dict[Key, _Version] = {}
        self._overrides: dict[tuple[str, str], dict[str, str]] = {}  # (namespace, revision) -> annotations
        self._entry_rngs: dict[tuple[Key, str], random.Random] = {}
        self._fractions: dict[Key, dict[Key, float]] = {}
        self._route_weights: dict[Key, list[RouteWeights]] = {}  # every distinct state seen, in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: WSGIServer | None = None
        self._server_thread: threading.Thread | None = None
        self._informers: dict[str, Informer] = {}
        self._last: float | None = None

    # ---- lifecycle
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}/metrics"

    def start(self) -> TrafficSimulator:
        if self._thread is not None:
            return self
        self._stop.clear()
        self._start_http()
        ns = f"/namespaces/{self.namespace}" if self.namespace else ""
        specs = {
            "configmaps": (f"/api/v1{ns}/configmaps", f"{TRAFFIC_LABEL}=true"),
            "behaviours": (f"/api/v1{ns}/configmaps", f"{BEHAVIOUR_LABEL}=true"),
            "services": (f"/api/v1{ns}/services", None),
            "deployments": (f"/apis/apps/v1{ns}/deployments", None),
            "httproutes": (f"/apis/{GATEWAY_GROUP}/v1{ns}/httproutes", None),
            "virtualservices": (f"/apis/{ISTIO_GROUP}/v1{ns}/virtualservices", None),
            "inferenceservices": (f"/apis/{KSERVE_GROUP}/v1beta1{ns}/inferenceservices", None),
        }
        for name, (path, selector) in specs.items():
            self._informers[name] = Informer(
                RawKube(self.kubeconfig), path, label_selector=selector, poll_interval=self.poll_interval,
                watch=self.watch, name=name,
            ).start()
        self._thread = threading.Thread(target=self._loop, name="traffic-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for inf in self._informers.values():
            inf.stop(timeout)
            inf.kube.close()
        self._informers = {}
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TrafficSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_synced(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        return all(i.synced.wait(max(0.0, deadline - time.monotonic())) for i in self._informers.values())

    def wait_ticks(self, n: int = 1, timeout: float = 10.0) -> bool:
        """Block until ``n`` more ticks have run."""
        with self._tick_cond:
            target = self.tick_count + n
            return self._tick_cond.wait_for(lambda: self.tick_count >= target, timeout)

    def _start_http(self) -> None:
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            path = environ.get("PATH_INFO", "/")
            if path in ("/metrics", "/metrics/"):
                if "name[]" in environ.get("QUERY_STRING", ""):
                    return metrics_app(environ, start_response)  # filtered: the generic path
                body = self.render_metrics()
                start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                                          ("Content-Length", str(len(body)))])
                return [body]
            if path == "/snapshot":
                body = json.dumps({"deployments": self.snapshot(), "unrouted": self.unrouted(),
                                   "fractions": self.fractions(), "ticks": self.tick_count}).encode()
                start_response("200 OK", [("Content-Type", "application/json")])
                return [body]
            if path in ("/healthz", "/-/ready", "/"):
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"ok\n"]
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]

        self._server = make_server(self.host, self.port, app, server_class=_ThreadingWSGIServer,
                                   handler_class=_QuietHandler)
        self.port = self._server.server_address[1]
        self._server_thread = threading.Thread(target=self._server.serve_forever, name="traffic-http", daemon=True)
        self._server_thread.start()

    def _loop(self) -> None:
        self.wait_synced(10.0)
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += self.tick
            delay = next_at - time.monotonic()
            if delay > 0:
                if self._stop.wait(delay):
                    break
            else:
                next_at = time.monotonic()  # fell behind: do not burst to catch up
            try:
                self.step()
            except Exception:  # noqa: BLE001
                log.exception("traffic tick failed")

    # ---- one tick
    def state(self) -> dict[str, dict[Key, Obj]]:
        return {name: inf.snapshot() for name, inf in self._informers.items()}

    def step(self, now: float | None = None, state: Mapping[str, Mapping[Key, Obj]] | None = None) -> None:
        """Run one tick (the background thread calls this; tests may call it directly)."""
        now = time.monotonic() if now is None else now
        dt = self.tick if self._last is None else min(max(now - self._last, 0.0), 5.0)
        self._last = now
        st = self.state() if state is None else state
        cms = st.get("configmaps", {})
        deployments = st.get("deployments", {})
        services = st.get("services", {})
        routes = st.get("httproutes", {})
        virtual_services = st.get("virtualservices", {})
        inference_services = st.get("inferenceservices", {})
        index = DeploymentIndex(deployments)
        with self._lock:
            self._overrides = behaviour_overrides(st.get("behaviours", {}))
            self._record_route_weights(routes)
            self._export_ready_servers(deployments)
            fractions_now: dict[Key, dict[Key, float]] = {}
            for cm_key, cm in sorted(cms.items()):
                labels = (cm.get("metadata") or {}).get("labels") or {}
                if labels.get(TRAFFIC_LABEL) != "true":
                    continue
                data = cm.get("data") or {}
                fr = resolve_target(cm_key[0], data.get("target", ""), routes=routes, services=services,
                                    deployments=deployments, virtual_services=virtual_services,
                                    inference_services=inference_services, index=index)
                copies = resolve_mirrors(cm_key[0], data.get("target", ""), routes=routes, services=services,
                                         deployments=deployments, virtual_services=virtual_services,
                                         index=index)
                fractions_now[cm_key] = fr
                rps = _float(data, "rps", DEFAULT_RPS)
                rng = self._entry_rng(cm_key, str(data.get("seed", "")))
                n = models.poisson(rps * dt, rng)
                if n <= 0:
                    continue
                keys = sorted(fr)
                counts = models.split(n, [fr[k] for k in keys], rng)
                for dkey, k in zip(keys, counts):
                    if k:
                        self._serve(deployments[dkey], k, now)
                if counts[-1]:
                    self._unrouted[cm_key] = self._unrouted.get(cm_key, 0) + counts[-1]
                if copies:  # a separate stream: the served requests stay as without mirrors
                    mirror_rng = self._entry_rng(cm_key, f"{data.get('seed', '')}/mirror")
                    mirror_keys = sorted(copies)
                    for dkey, k in zip(mirror_keys, models.split(n - counts[-1], [copies[k] for k in mirror_keys],
                                                                 mirror_rng)):
                        if k:
                            self._serve(deployments[dkey], k, now, mirrored=True)
            self._fractions = fractions_now
            self._flush_feedback(now)
        with self._tick_cond:
            self.tick_count += 1
            self._tick_cond.notify_all()

    def _export_ready_servers(self, deployments: Mapping[Key, Obj]) -> None:
        """A model server exports its counters at 0 from the moment it is up, before its first request,
        as Prometheus' instrumentation practice asks ("avoid missing metrics") and prometheus_client does
        for every counter without labels: a rate over its first scrapes then counts its first requests."""
        for key, deployment in deployments.items():
            if key not in self._exporting and int((deployment.get("status") or {}).get("readyReplicas") or 0) > 0:
                self._exporting.add(key)
                self._series.setdefault(series_labels(deployment), _Series())

    def _record_route_weights(self, routes: Mapping[Key, Obj]) -> None:
        for key, route in routes.items():
            weights = tuple(tuple((str(ref.get("name") or ""), ref.get("weight", 1)) for ref in rule.get("backendRefs") or [])
                            for rule in (route.get("spec") or {}).get("rules") or [] if isinstance(rule, dict))
            seen = self._route_weights.setdefault(key, [])
            if not seen or seen[-1] != weights:
                seen.append(weights)

    def route_weights_seen(self) -> dict[str, list[list[dict[str, Any]]]]:
        """Every distinct state of each HTTPRoute's backend weights that a tick routed by, in order:
        "namespace/route" -> [[{backend: weight} for each rule], ...]."""
        with self._lock:
            return {f"{key[0]}/{key[1]}": [[dict(rule) for rule in state] for state in states]
                    for key, states in self._route_weights.items()}

    def _entry_rng(self, cm_key: Key, extra: str) -> random.Random:
        k = (cm_key, extra)
        rng = self._entry_rngs.get(k)
        if rng is None:
            rng = random.Random(models.derive_seed(self.seed, "entry", cm_key[0], cm_key[1], extra))
            self._entry_rngs[k] = rng
        return rng

    def _version(self, deployment: Obj) -> _Version:
        key = key_of(deployment)
        labels = series_labels(deployment)
        ann = {**_template_annotations(deployment), **self._overrides.get((key[0], labels[2]), {})}
        v = self._versions.get(key)
        if v is None:
            v = _Version(key=key, rng=random.Random(models.derive_seed(self.seed, "version", key[0], key[1])),
                         input_rng=random.Random(models.derive_seed(self.seed, "inputs", key[0], key[1])),
                         behaviour=ModelBehaviour.from_annotations(ann), annotations=ann, labels=labels)
            self._versions[key] = v
        elif v.annotations != ann or v.labels != labels:
            v.annotations, v.labels = ann, labels
            v.behaviour = ModelBehaviour.from_annotations(ann)
        return v

    def _serve(self, deployment: Obj, n: int, now: float, mirrored: bool = False) -> None:
        """`n` requests answered by the Deployment's model; `mirrored` copies are exported as metrics
        (the server cannot tell them apart) but counted apart from the answers users received."""
        v = self._version(deployment)
        if v.first_served is None:
            v.first_served = now
        behaviour, degraded = v.current(now)
        batch = models.sample_requests(behaviour, n, v.rng)
        s = self._series.get(v.labels)
        if s is None:
            s = self._series[v.labels] = _Series()
        s.ok += batch.predictions
        s.err += batch.errors
        for i, c in enumerate(models.bucket_counts(batch.latencies, DURATION_BUCKETS)):
            s.duration[i] += c
        s.duration_sum += sum(batch.latencies)
        s.predictions += batch.predictions
        for i, c in enumerate(models.bucket_counts(batch.scores, SCORE_BUCKETS)):
            s.score[i] += c
        s.score_sum += sum(batch.scores)
        inputs = models.sample_inputs(behaviour, n, v.input_rng)
        s.input_rows += inputs.rows
        s.input_missing += inputs.missing
        for i, c in enumerate(models.bucket_counts(inputs.values, INPUT_BUCKETS)):
            s.input_value[i] += c
        s.input_value_sum += sum(inputs.values)
        if batch.labelled:
            delay = behaviour.label_delay_seconds
            if delay <= 0:
                s.feedback += batch.labelled
                s.feedback_correct += batch.labelled_correct
            else:
                v.feedback_queue.append((now + delay, batch.labelled, batch.labelled_correct))
        if mirrored:
            v.mirrored += n
            return
        v.requests += n
        v.errors += batch.errors
        v.predictions += batch.predictions
        v.incorrect += batch.incorrect
        if degraded:
            v.degraded_requests += n
        if behaviour.bad or degraded:
            v.bad_requests += n

    def _flush_feedback(self, now: float) -> None:
        for v in self._versions.values():
            q = v.feedback_queue
            if not q or q[0][0] > now:
                continue
            s = self._series.setdefault(v.labels, _Series())
            while q and q[0][0] <= now:
                _, labelled, correct = q.popleft()
                s.feedback += labelled
                s.feedback_correct += correct

    # ---- queries
    def render_metrics(self) -> bytes:
        """The /metrics body (Prometheus text format); same samples as ``self.registry``."""
        with self._lock:
            series = {k: _copy(v) for k, v in self._series.items()}
            unrouted = dict(self._unrouted)
        return render_text(series, unrouted)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per-Deployment totals since the simulator started, keyed "namespace/name".

        requests, errors (500s), predictions, incorrect (wrong predictions, labelled or not),
        bad_requests (served while degraded or by a version annotated bad), degraded_requests,
        mirrored (copies answered through a mirror, whose answers reached nobody),
        degraded (bool), fraction (current share of all entry points' traffic it receives, summed),
        and the series labels.
        """
        with self._lock:
            frac: dict[Key, float] = {}
            for fr in self._fractions.values():
                for k, f in fr.items():
                    frac[k] = frac.get(k, 0.0) + f
            out = {}
            for key, v in sorted(self._versions.items()):
                ns, rollout, revision, model_version, name = v.labels
                out[f"{key[0]}/{key[1]}"] = {
                    "namespace": ns, "deployment": name, "rollout": rollout, "revision": revision,
                    "model_version": model_version, "requests": v.requests, "errors": v.errors,
                    "predictions": v.predictions, "incorrect": v.incorrect, "bad_requests": v.bad_requests,
                    "degraded_requests": v.degraded_requests, "degraded": v.degraded_since is not None,
                    "fraction": frac.get(key, 0.0), "mirrored": v.mirrored,
                }
            for key, f in frac.items():
                out.setdefault(f"{key[0]}/{key[1]}", {
                    "namespace": key[0], "deployment": key[1], "requests": 0, "errors": 0, "predictions": 0,
                    "incorrect": 0, "bad_requests": 0, "degraded_requests": 0, "degraded": False, "fraction": f,
                    "mirrored": 0,
                })
            return out

    def fractions(self) -> dict[str, dict[str, float]]:
        """Current traffic fraction per entry point ("ns/configmap") and Deployment ("ns/name")."""
        with self._lock:
            return {f"{e[0]}/{e[1]}": {f"{k[0]}/{k[1]}": f for k, f in fr.items()}
                    for e, fr in self._fractions.items()}

    def unrouted(self) -> dict[str, int]:
        with self._lock:
            return {f"{k[0]}/{k[1]}": n for k, n in self._unrouted.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m modelrollout_lab.traffic", description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--port", type=int, default=0, help="metrics port on --host (0: any free port)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tick", type=float, default=0.2, help="seconds between ticks")
    p.add_argument("--namespace", default=None, help="only this namespace (default: all)")
    p.add_argument("--poll", action="store_true", help="poll lists instead of watching")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sim = TrafficSimulator(args.kubeconfig, port=args.port, tick=args.tick, seed=args.seed, host=args.host,
                           namespace=args.namespace, watch=not args.poll)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    sim.start()
    print(f"traffic simulator listening on {sim.address} (metrics: {sim.metrics_url})", flush=True)
    done.wait()
    sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
