"""Scenarios and the policies' specs, shared by the harness, the baseline and the smoke test.

Two comparisons, both time-compressed in the lab (Prometheus scrapes every lab second):

* same clock: ours and a Flagger-like baseline both analyse every 3 s, steps hold 6 s;
* real cadence: every documented duration divided by COMPRESSION (Flagger's 1m interval is 4 lab
  seconds) and traffic multiplied by it, so requests per real minute are as stated (REAL_RPS).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

from modelrollout_lab import scenarios

NAMESPACE = "default"
INTERVAL = 3.0            # analysis interval of both policies (seconds)
STEPS = (5, 10, 25, 50)   # ours: canary weights, each held STEP_HOLD seconds, then promotion
STEP_HOLD = 6.0
BASE_STEP_WEIGHT = 10     # baseline (Flagger defaults, time-compressed): +10 per passing interval
BASE_MAX_WEIGHT = 50      # ... up to 50, then promote
BASE_THRESHOLD = 5        # ... rollback when cumulative failed checks reach 5
BASE_WINDOW = "5s"        # the baseline's metric range (Flagger: the metric's `interval`)
ERROR_MAX = 0.01          # both: error rate bound (Flagger's request-success-rate >= 99 %)
ERROR_TOLERANCE = 0.01    # ours: canary error rate may exceed stable by this much (exact test, alpha 0.01)
LATENCY_P95_MAX = 0.2     # both: p95 latency bound, seconds
QUALITY_MIN = 0.85        # both: accuracy bound (labelled feedback)
QUALITY_TOLERANCE = 0.05  # ours: wrong-prediction rate may exceed stable by this much

# Real cadence: one lab second is COMPRESSION real seconds, for every policy alike.
COMPRESSION = 15.0        # 1 real minute = 4 lab s; the lab's 1 s scrape is a 15 s scrape in real time
REAL_RPS = 100.0          # real requests per second of the service (the lab sends REAL_RPS * COMPRESSION)
REAL_NOISY_RPS = 40.0
OURS_REAL_INTERVAL = 5.0   # ours looks every 5 real seconds, three looks per 15 s scrape: its tests may be
                           # looked at any time, and a look then waits ~2.5 s for a scrape, not ~7.5 s
OURS_REAL_RECENT = 60.0    # ... and cuts its recent windows in blocks of 1m, four 15 s scrapes (5 intervals would
                           # be 25 s: increase() over under two scrapes is mostly extrapolation, docs/analysis.md)
OURS_REAL_STEPS = (10, 25, 50)  # ... each held at least OURS_REAL_HOLD, then promotion
OURS_REAL_HOLD = 30.0
OURS_REAL_WATCH = 60.0    # ... and watched at full traffic for the default 1m before it becomes stable
ARGO_STEPS = (20, 40, 60, 80)  # Argo's example: setWeight steps, each followed by a 10m pause
ARGO_PAUSE = 600.0
ARGO_EXAMPLE_SECONDS = len(ARGO_STEPS) * ARGO_PAUSE  # real seconds to its promotion

HEALTHY = {"error-rate": "0.001", "latency-ms": "40", "latency-sigma": "0.25", "accuracy": "0.92",
           "load-seconds": "1"}


@dataclass(frozen=True)
class Scenario:
    name: str
    stable: dict[str, str]
    canary: dict[str, str]
    rps: float = 200.0
    bad: bool = True                 # is the canary supposed to be rolled back?
    bad_measure: str = "errors"      # snapshot field counting bad requests: errors | bad_requests
    quality: bool = False            # add the quality metric
    drift: bool = False              # add the prediction-drift metric (ours only: the baseline has none)
    floor: tuple[float, float] | None = None  # (p0, p1) for modelrollout.stats.required_samples
    floor_per_request: float = 1.0   # share of canary requests that count as samples (labels)
    timeout: float = 150.0
    # Runs of it in each lab: more where one run's result varies most (a label-driven test's decision
    # time: its 90th percentile is ~1.8 times its median in simulation), so its median is measured,
    # not drawn.
    runs_per_lab: int = 1
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


def _h(**over: str) -> dict[str, str]:
    return {**HEALTHY, **over}


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("healthy", _h(), _h(), bad=False, timeout=240.0,
             notes="canary identical to stable; should promote"),
    Scenario("errors", _h(), _h(**{"error-rate": "0.05"}), floor=(0.001, 0.05),
             notes="5% errors vs 0.1% from the first request"),
    Scenario("degradation", _h(), _h(**{"degrade-after-seconds": "12", "degraded-error-rate": "0.05"}),
             bad_measure="bad_requests", floor=(0.001, 0.05),
             notes="healthy for 12 s of serving, then 5% errors"),
    Scenario("latency", _h(), _h(**{"latency-ms": "400", "bad": "true"}), bad_measure="bad_requests",
             notes="median latency 40 ms -> 400 ms"),
    Scenario("quality", _h(), _h(**{"accuracy": "0.75", "bad": "true"}), bad_measure="bad_requests",
             quality=True, floor=(0.08, 0.25), floor_per_request=0.3, runs_per_lab=3,
             notes="accuracy 0.92 -> 0.75 (30% of predictions labelled)"),
    Scenario("drift", _h(), _h(**{"score-mean": "0.55", "bad": "true"}), bad_measure="bad_requests",
             drift=True, notes="prediction scores shifted 0.3 -> 0.55, same errors, latency and accuracy"),
    Scenario("no-traffic", _h(), _h(), rps=0.0, bad=False, bad_measure="bad_requests", timeout=60.0,
             notes="rps 0: must never promote"),
)}

# The noisy healthy canary: truly identical to stable, but noisy and with little traffic.
NOISY = Scenario("noisy-healthy", _h(**{"error-rate": "0.005", "latency-sigma": "0.5"}),
                 _h(**{"error-rate": "0.005", "latency-sigma": "0.5"}), rps=40.0, bad=False,
                 timeout=150.0, notes="0.5% errors on both, latency sigma 0.5, 40 rps")
OUTAGE = Scenario("prometheus-outage", _h(), _h(), bad=False, timeout=240.0,
                  notes="healthy canary; Prometheus stopped for 20 s mid-rollout")

OUTAGE_AFTER = 12.0    # seconds after the release
OUTAGE_FOR = 20.0


def annotations(behaviour: dict[str, str]) -> dict[str, str]:
    return {f"lab.modelrollout.io/{k}": v for k, v in behaviour.items()}


def traffic_configmap(name: str, target: str, rps: float, seed: int) -> dict[str, Any]:
    return scenarios.traffic_entry(name, NAMESPACE, target, rps, seed)


def http_route(name: str, refs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"parentRefs": [{"name": "lab-gateway"}], "rules": [{"backendRefs": refs}]}}


# ---------------------------------------------------------------- ours

_SEL = 'namespace="{{ namespace }}", rollout="{{ name }}", revision="{{ revision }}"'


def ours_metrics(quality: bool, drift: bool = False) -> list[dict[str, Any]]:
    metrics: list[dict[str, Any]] = [
        {"name": "error-rate", "type": "proportion", "critical": True, "minSamples": 30,
         "query": f'sum(increase(http_requests_total{{{_SEL}, code=~"5.."}}[{{{{ window }}}}]))',
         "totalQuery": f"sum(increase(http_requests_total{{{_SEL}}}[{{{{ window }}}}]))",
         "compareToStable": {"maxIncrease": ERROR_TOLERANCE}},
        {"name": "latency-p95", "max": LATENCY_P95_MAX, "failureLimit": 2, "minSamples": 100},
    ]
    if quality:
        metrics.append(
            {"name": "quality", "type": "proportion", "critical": True, "minSamples": 30,
             "successQuery": f"sum(increase(model_feedback_correct_total{{{_SEL}}}[{{{{ window }}}}]))",
             "totalQuery": f"sum(increase(model_feedback_total{{{_SEL}}}[{{{{ window }}}}]))",
             "compareToStable": {"maxIncrease": QUALITY_TOLERANCE}})
    if drift:
        metrics.append({"name": "prediction-drift", "max": 0.1, "minSamples": 200, "critical": True})
    return metrics


def ours_rollout(name: str, behaviour: dict[str, str], version: str, quality: bool = False,
                 replicas: int = 2, drift: bool = False) -> dict[str, Any]:
    body = scenarios.rollout(
        name, namespace=NAMESPACE, version=version, router="gatewayAPI", replicas=replicas,
        steps=[{"weight": w, "hold": f"{STEP_HOLD:g}s"} for w in STEPS], metrics=ours_metrics(quality, drift),
        interval=f"{INTERVAL:g}s", min_samples=100, skip_analysis_for="0s", readiness_timeout="60s",
        no_data={"hold": "30s", "then": "pause"}, scale_down_delay="5s")
    body["spec"]["template"] = ours_template(name, behaviour, version)
    return body


def ours_template(name: str, behaviour: dict[str, str], version: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": name}, "annotations": annotations(behaviour)},
            "spec": {"containers": [{"name": "server", "image": f"example/{name}:{version}"}]}}


# ---------------------------------------------------------------- real cadence

def lab_seconds(real_seconds: float) -> float:
    return real_seconds / COMPRESSION


def lab_duration(real_seconds: float) -> str:
    """A real duration as the lab's spec duration ('4s', '500ms')."""
    lab = lab_seconds(real_seconds)
    return f"{lab:g}s" if lab == int(lab) else f"{round(lab * 1000)}ms"


def real_cadence(scenario: Scenario, real_rps: float = REAL_RPS) -> Scenario:
    """The scenario at real cadence: its traffic is real_rps in real time; its lab-second timings
    (model load, degradation after 12 s of serving = 3 real minutes) are kept."""
    return replace(scenario, rps=real_rps * COMPRESSION if scenario.rps else 0.0,
                   timeout=lab_seconds(ARGO_EXAMPLE_SECONDS + 300.0))


def ours_default_rollout(name: str, behaviour: dict[str, str], version: str, quality: bool = False,
                         drift: bool = False) -> dict[str, Any]:
    """Ours at its recommended defaults, every duration compressed: the `http` preset's default metrics
    (error-rate max 0.01 as an exact test, critical; latency p95 <= 0.3 s, failureLimit 2; plus its
    quality and prediction-drift metrics where the scenario has them), samples.min, alpha, `pass:
    powered`, decideWithin 30m, noData 5m then rollback, scaleDownDelay 30s, the promotion watch 1m all
    as defaulted; analysis every 5 s with recent blocks of 1m; steps 10/25/50 % held at least 30 s."""
    body = ours_rollout(name, behaviour, version, quality=quality, drift=drift)
    spec = body["spec"]
    spec["strategy"] = {"warmup": {"readinessTimeout": lab_duration(600)},
                        "steps": [{"weight": w, "hold": lab_duration(OURS_REAL_HOLD)} for w in OURS_REAL_STEPS],
                        "promotion": {"watch": lab_duration(OURS_REAL_WATCH)}}
    names = ["error-rate", "latency-p95"] + ["quality"] * quality + ["prediction-drift"] * drift
    spec["analysis"] = {"interval": lab_duration(OURS_REAL_INTERVAL), "recentWindow": lab_duration(OURS_REAL_RECENT),
                        "preset": "http",
                        "decideWithin": lab_duration(1800), "noData": {"hold": lab_duration(300), "then": "rollback"},
                        "metrics": [{"name": n} for n in names]}
    spec["rollback"] = {"scaleDownDelay": lab_duration(30)}
    return body


# ---------------------------------------------------------------- scale

SCALE_INTERVAL = 10.0     # the scale runs' analysis interval (seconds, not compressed)


def scale_rollout(name: str, version: str, namespace: str = NAMESPACE,
                  interval: float = SCALE_INTERVAL) -> dict[str, Any]:
    """A small rollout that stays in analysis (one long step) and queries Prometheus every interval."""
    body = ours_rollout(name, {"load-seconds": "0.5"}, version, replicas=2)  # replicas router: 50 % is 1 of 2 pods
    body["metadata"]["namespace"] = namespace
    spec = body["spec"]
    spec["trafficRouting"] = {"replicas": {}}
    spec["strategy"] = {"warmup": {"readinessTimeout": "600s"}, "steps": [{"weight": 50, "hold": "1h"}]}
    spec["analysis"] = {"interval": f"{interval:g}s", "preset": "http", "samples": {"min": 100},
                        "noData": {"hold": "1h", "then": "pause"},
                        "metrics": [{"name": "error-rate"}]}
    return body


def with_template(body: dict[str, Any], behaviour: dict[str, str], version: str) -> dict[str, Any]:
    body = copy.deepcopy(body)
    name = body["metadata"]["name"]
    body["spec"]["model"]["version"] = version
    body["spec"]["template"] = ours_template(name, behaviour, version)
    return body
