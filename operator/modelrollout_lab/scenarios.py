"""Manifests for lab rollouts: a traffic entry point, optionally an HTTPRoute, and a ModelRollout.

`behaviour` becomes the pod template's lab.modelrollout.io/* annotations, which the lab's
simulators read (see docs/lab.md); changing it, or `version`, is a new release.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from modelrollout.manifests import service_name
from modelrollout.spec import ROUTERS_WITH_STANDBY_STABLE

GOOD = {"load-seconds": "1", "error-rate": "0.001", "latency-ms": "40", "accuracy": "0.92", "score-mean": "0.3"}

FAST_STEPS = [{"weight": 20, "hold": "4s"}, {"weight": 50, "hold": "4s"}]

DEFAULT_METRICS = [
    {"name": "error-rate", "max": 0.02},
    {"name": "latency-p95", "max": 0.2},
]


def traffic_entry(name: str, namespace: str, target: str, rps: float, seed: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"{name}-traffic", "namespace": namespace,
                     "labels": {"lab.modelrollout.io/traffic": "true"}},
        "data": {"target": target, "rps": str(rps), "seed": str(seed)},
    }


def behaviour_change(namespace: str, behaviours: dict[str, dict[str, str]], name: str = "lab-behaviour") -> dict[str, Any]:
    """Change revisions' behaviour mid-release, `{revision: {"error-rate": "0.4"}}`: a lab ConfigMap the
    traffic simulator reads, never the Deployments the operator owns (it would restore them)."""
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"lab.modelrollout.io/behaviour": "true"}},
        "data": {revision: json.dumps(behaviour) for revision, behaviour in behaviours.items()},
    }


def http_route(name: str, namespace: str, port: int = 8080) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"parentRefs": [{"name": "lab-gateway"}],
                 "rules": [{"backendRefs": [{"name": service_name(name, "stable"), "port": port, "weight": 100}]}]},
    }


def virtual_service(name: str, namespace: str, port: int = 8080) -> dict[str, Any]:
    """A VirtualService whose route `primary` carries the rollout and whose route `admin` is the user's own."""
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"hosts": [f"{name}.example.com"], "gateways": ["lab-gateway"],
                 "http": [{"name": "admin", "match": [{"uri": {"prefix": "/admin"}}],
                           "route": [{"destination": {"host": "admin-svc", "port": {"number": 9090}}}],
                           "timeout": "10s"},
                          {"name": "primary", "retries": {"attempts": 2},
                           "route": [{"destination": {"host": f"{service_name(name, 'stable')}.{namespace}.svc.cluster.local",
                                                      "port": {"number": port}}, "weight": 100}]}]},
    }


def inference_service(name: str, namespace: str, mode: str = "Serverless", *, serving: bool = True) -> dict[str, Any]:
    """An existing InferenceService with a model of its own, which the first rollout adopts once it
    serves; `serving=False`: its model never loads (nothing to adopt: the template replaces it)."""
    annotations = {"serving.kserve.io/deploymentMode": mode} if mode != "Serverless" else {}
    behaviour = {**GOOD, "load-seconds": GOOD["load-seconds"] if serving else "inf"}
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations, "labels": {"team": "ml"}},
        "spec": {"predictor": {"containers": [{"name": "kserve-container", "image": f"example/{name}:0.9.0"}],
                               "annotations": {f"lab.modelrollout.io/{k}": v for k, v in behaviour.items()}},
                 "transformer": {"containers": [{"name": "transformer", "image": "example/feature-transformer:3"}]}},
    }


ROUTING = {"kserve": lambda name: {"kserve": {"inferenceService": name}},
           "replicas": lambda name: {"replicas": {}},
           "gatewayAPI": lambda name: {"gatewayAPI": {"httpRoute": name}},
           "istio": lambda name: {"istio": {"virtualService": name, "routes": ["primary"]}}}


def rollout(name: str, *, namespace: str = "default", version: str = "1.0.0", behaviour: dict[str, str] | None = None,
            router: str = "replicas", replicas: int | None = None, steps: list[dict[str, Any]] | None = None,
            metrics: list[dict[str, Any]] | None = None, interval: str = "2s", min_samples: int = 30,
            skip_analysis_for: str | None = None, readiness_timeout: str = "30s", no_data: dict[str, str] | None = None,
            scale_down_delay: str = "2s", promotion_watch: str = "2s") -> dict[str, Any]:
    """With the replicas router traffic is shared by pods: 20 replicas carry any multiple of 5 %, and
    nothing is skipped after Ready (its pods serve at once). With a route, 2 replicas, 1s skipped, and
    the canary watched at full traffic for `promotion_watch` before it becomes stable."""
    if replicas is None:
        replicas = 20 if router == "replicas" else 2
    if skip_analysis_for is None:
        skip_analysis_for = "0s" if router == "replicas" else "1s"
    annotations = {f"lab.modelrollout.io/{k}": v for k, v in {**GOOD, **(behaviour or {})}.items()}
    routing = ROUTING[router](name)
    strategy: dict[str, Any] = {"warmup": {"readinessTimeout": readiness_timeout, "skipAnalysisFor": skip_analysis_for},
                                "steps": copy.deepcopy(steps or FAST_STEPS)}
    if router in ROUTERS_WITH_STANDBY_STABLE:
        strategy["promotion"] = {"watch": promotion_watch}
    return {
        "apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": name, "version": version},
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"containers": [{"name": "server", "image": f"example/{name}:{version}"}]},
            },
            "service": {"port": 8080},
            "trafficRouting": routing,
            "strategy": strategy,
            "analysis": {"interval": interval, "preset": "http", "samples": {"min": min_samples},
                         "noData": no_data or {"hold": "20s", "then": "rollback"},
                         "metrics": copy.deepcopy(metrics if metrics is not None else DEFAULT_METRICS)},
            "rollback": {"scaleDownDelay": scale_down_delay},
        },
    }


def manifests(name: str, *, namespace: str = "default", router: str = "replicas", rps: float = 60,
              seed: int = 0, kserve_mode: str = "Serverless", kserve_serving: bool = False,
              **kwargs: Any) -> list[dict[str, Any]]:
    """Everything one lab release needs, in apply order. The InferenceService (router kserve) is
    created with the rollout, so its own model is not serving yet unless `kserve_serving`."""
    target = {"gatewayAPI": f"httproute/{name}", "istio": f"virtualservice/{name}#primary",
              "kserve": f"inferenceservice/{name}"}.get(router, f"service/{service_name(name, 'shared')}")
    docs = [traffic_entry(name, namespace, target, rps, seed)]
    if router == "kserve":
        docs.append(inference_service(name, namespace, kserve_mode, serving=kserve_serving))
    if router == "gatewayAPI":
        docs.append(http_route(name, namespace))
    if router == "istio":
        docs.append(virtual_service(name, namespace))
    docs.append(rollout(name, namespace=namespace, router=router, **kwargs))
    return docs


def release(manifest: dict[str, Any], version: str, behaviour: dict[str, str] | None = None) -> dict[str, Any]:
    """The same rollout with a new model version (a new template, so a new revision)."""
    new = copy.deepcopy(manifest)
    spec = new["spec"]
    spec["model"]["version"] = version
    template = spec["template"]
    template["spec"]["containers"][0]["image"] = f"example/{new['metadata']['name']}:{version}"
    annotations = {f"lab.modelrollout.io/{k}": v for k, v in {**GOOD, **(behaviour or {})}.items()}
    template["metadata"]["annotations"] = annotations
    return new
