"""The lab's workload and traffic simulators.

Pure parts (model sampling, routing resolution, one tick over plain dicts) run without any
server; the rest talks to the emulated API server (modelrollout_lab.apiserver) through a
kubeconfig, exactly as the simulators would talk to a real cluster.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest

try:
    import modelrollout  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))

from prometheus_client import generate_latest

from modelrollout_lab import models, scenarios
from modelrollout_lab.models import ModelBehaviour
from modelrollout_lab.traffic import TRAFFIC_LABEL, TrafficSimulator, resolve_target
from modelrollout.names import LABEL_MODEL_VERSION, LABEL_REVISION, LABEL_ROLLOUT

NS = "ml"


def deployment(name, *, app="fraud", ready=1, replicas=None, annotations=None, revision=None, ns=NS):
    labels = {"app": app, LABEL_ROLLOUT: "fraud"}
    if revision:
        labels[LABEL_REVISION] = revision
        labels[LABEL_MODEL_VERSION] = f"v-{revision}"
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": ready if replicas is None else replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels, "annotations": dict(annotations or {})},
                         "spec": {"containers": [{"name": "model", "image": "model:1"}]}},
        },
        "status": {"readyReplicas": ready},
    }


def service(name, selector, ns=NS):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": selector, "ports": [{"port": 8080}]}}


def route(name, backends, ns=NS):
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"rules": [{"backendRefs": [{"name": n, "port": 8080, "weight": w} for n, w in backends]}]}}


def entry(name, target, rps, ns=NS):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": {TRAFFIC_LABEL: "true"}},
            "data": {"target": target, "rps": str(rps)}}


def by_key(*objs):
    return {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs}


# ---------------------------------------------------------------------------------- models


def test_behaviour_from_annotations_defaults_and_parsing():
    d = ModelBehaviour.from_annotations({})
    assert (d.error_rate, d.latency_ms, d.latency_sigma, d.accuracy) == (0.001, 40.0, 0.25, 0.92)
    assert (d.score_mean, d.score_concentration, d.label_fraction, d.label_delay_seconds) == (0.3, 10.0, 0.3, 0.0)
    assert not d.degrades and not d.bad
    b = ModelBehaviour.from_annotations({
        "lab.modelrollout.io/error-rate": "0.2", "lab.modelrollout.io/latency-ms": "120",
        "lab.modelrollout.io/accuracy": "garbage", "lab.modelrollout.io/degrade-after-seconds": "30",
        "lab.modelrollout.io/degraded-error-rate": "0.5", "lab.modelrollout.io/bad": "true",
    })
    assert b.error_rate == 0.2 and b.latency_ms == 120 and b.accuracy == 0.92 and b.bad
    assert b.degrades and b.degraded().error_rate == 0.5 and b.degraded().latency_ms == 120


def test_same_seed_same_counts():
    b = ModelBehaviour(error_rate=0.1)
    one = models.sample_requests(b, 500, random.Random(42))
    two = models.sample_requests(b, 500, random.Random(42))
    other = models.sample_requests(b, 500, random.Random(43))
    assert one == two
    assert one != other
    assert [models.poisson(7.5, random.Random(s)) for s in range(20)] == [
        models.poisson(7.5, random.Random(s)) for s in range(20)]
    assert models.derive_seed(0, "a", "b") == models.derive_seed(0, "a", "b") != models.derive_seed(1, "a", "b")


def test_sampling_statistics():
    rng = random.Random(1)
    batch = models.sample_requests(ModelBehaviour(error_rate=0.2, latency_ms=50, accuracy=0.8,
                                                  label_fraction=0.5), 20000, rng)
    assert batch.errors / batch.requests == pytest.approx(0.2, abs=0.015)
    lat = sorted(batch.latencies)
    assert lat[len(lat) // 2] == pytest.approx(0.050, rel=0.05)
    assert batch.correct / batch.predictions == pytest.approx(0.8, abs=0.015)
    assert batch.labelled / batch.predictions == pytest.approx(0.5, abs=0.015)
    assert sum(batch.scores) / len(batch.scores) == pytest.approx(0.3, abs=0.01)
    assert sum(models.poisson(4.0, rng) for _ in range(5000)) / 5000 == pytest.approx(4.0, abs=0.15)
    assert sum(models.poisson(400.0, rng) for _ in range(2000)) / 2000 == pytest.approx(400.0, abs=2)
    counts = models.split(10000, [0.9, 0.05], rng)
    assert len(counts) == 3 and sum(counts) == 10000
    assert counts[0] / 10000 == pytest.approx(0.9, abs=0.015) and counts[2] / 10000 == pytest.approx(0.05, abs=0.01)
    assert models.split(100, [0.5, 0.5], rng)[2] == 0


# ---------------------------------------------------------------------------------- routing


def test_service_shares_by_ready_pods():
    deps = by_key(deployment("a", ready=3), deployment("b", ready=1), deployment("c", app="other", ready=5),
                  deployment("d", ready=0))
    svcs = by_key(service("fraud", {"app": "fraud"}))
    fr = resolve_target(NS, "service/fraud", routes={}, services=svcs, deployments=deps)
    assert fr == {(NS, "a"): 0.75, (NS, "b"): 0.25}


def test_httproute_weights_times_pod_shares():
    deps = by_key(deployment("stable", app="s", ready=4), deployment("canary1", app="c", ready=1),
                  deployment("canary2", app="c", ready=1))
    svcs = by_key(service("fraud-stable", {"app": "s"}), service("fraud-canary", {"app": "c"}))
    routes = by_key(route("fraud", [("fraud-stable", 90), ("fraud-canary", 10)]))
    fr = resolve_target(NS, "httproute/fraud", routes=routes, services=svcs, deployments=deps)
    assert fr[(NS, "stable")] == pytest.approx(0.9)
    assert fr[(NS, "canary1")] == pytest.approx(0.05) and fr[(NS, "canary2")] == pytest.approx(0.05)
    # A backend without ready pods loses its share (unrouted), it is not given to the others.
    deps[(NS, "canary1")]["status"]["readyReplicas"] = 0
    deps[(NS, "canary2")]["status"]["readyReplicas"] = 0
    fr = resolve_target(NS, "httproute/fraud", routes=routes, services=svcs, deployments=deps)
    assert fr == {(NS, "stable"): pytest.approx(0.9)}
    assert resolve_target(NS, "httproute/missing", routes=routes, services=svcs, deployments=deps) == {}
    assert resolve_target(NS, "service/missing", routes=routes, services=svcs, deployments=deps) == {}
    assert resolve_target("other", "service/fraud-stable", routes=routes, services=svcs, deployments=deps) == {}


def test_httproute_entry_can_name_a_rule_by_path():
    deps = by_key(deployment("model", app="m", ready=2), deployment("console", app="a", ready=1))
    svcs = by_key(service("model-stable", {"app": "m"}), service("admin-svc", {"app": "a"}))
    routes = by_key(route("web", [("model-stable", 100)]))
    routes[(NS, "web")]["spec"]["rules"].append({"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                                                 "backendRefs": [{"name": "admin-svc", "weight": 1}]})
    assert resolve_target(NS, "httproute/web", routes=routes, services=svcs, deployments=deps) == {(NS, "model"): 1.0}
    assert resolve_target(NS, "httproute/web#/admin", routes=routes, services=svcs, deployments=deps) == {
        (NS, "console"): 1.0}
    assert resolve_target(NS, "httproute/web#/nowhere", routes=routes, services=svcs, deployments=deps) == {}


# ---------------------------------------------------------------------------------- one tick, no server


def _state(rps=200.0, good="0.0", bad="0.2", extra=None):
    deps = by_key(deployment("good", ready=1, revision="r1", annotations={"lab.modelrollout.io/error-rate": good}),
                  deployment("bad", ready=1, revision="r2",
                             annotations={"lab.modelrollout.io/error-rate": bad, **(extra or {})}))
    return {"configmaps": by_key(entry("traffic", "service/fraud", rps)),
            "services": by_key(service("fraud", {"app": "fraud"})), "deployments": deps, "httproutes": {}}


def _run(sim, state, seconds, tick=0.2, t0=1000.0):
    n = int(round(seconds / tick))
    for i in range(n + 1):
        sim.step(now=t0 + i * tick, state=state)
    return t0 + n * tick


def test_a_behaviour_configmap_changes_a_revision_mid_run_without_touching_its_deployment():
    """The lab's own channel to change a model mid-release (the operator restores edited Deployments)."""
    state = _state(bad="0.0")
    sim = TrafficSimulator(None, seed=7)
    t = _run(sim, state, 5.0)
    assert sim.snapshot()[f"{NS}/bad"]["errors"] == 0
    state["behaviours"] = by_key(scenarios.behaviour_change(NS, {"r2": {"error-rate": "0.5"}}))
    _run(sim, state, 10.0, t0=t + 0.2)
    snap = sim.snapshot()
    assert snap[f"{NS}/good"]["errors"] == 0
    assert snap[f"{NS}/bad"]["errors"] > 0.3 * snap[f"{NS}/bad"]["requests"] * 10 / 15
    assert state["deployments"][(NS, "bad")]["spec"]["template"]["metadata"]["annotations"] == {
        "lab.modelrollout.io/error-rate": "0.0"}


def test_a_tick_over_1000_rollouts_in_one_namespace_is_linear_and_splits_each_by_its_pods():
    """The scale benchmark's shape: 1000 entry points, each a Service over its rollout's two revisions,
    all in one namespace. Each Service's traffic goes to its own two Deployments only, and a tick
    costs little CPU (scanning every Deployment per Service took ~1.5 s of CPU a tick: the lab, not
    the operator, would have carried the 1000-rollout run)."""
    deps, svcs, entries = {}, {}, {}
    for i in range(1000):
        app = f"r{i:04d}"
        deps.update(by_key(deployment(f"{app}-a", app=app, ready=1, revision="a"),
                           deployment(f"{app}-b", app=app, ready=3, revision="b")))
        svcs.update(by_key(service(app, {"app": app})))
        entries.update(by_key(entry(f"{app}-traffic", f"service/{app}", 10)))
    state = {"configmaps": entries, "services": svcs, "deployments": deps, "httproutes": {}}
    sim = TrafficSimulator(None, seed=1)
    sim.step(now=1000.0, state=state)
    started = time.thread_time()
    sim.step(now=1000.2, state=state)
    assert time.thread_time() - started < 0.3  # CPU seconds of one tick (0.04 measured, 1.5 before)
    assert sim.fractions()[f"{NS}/r0500-traffic"] == {f"{NS}/r0500-a": 0.25, f"{NS}/r0500-b": 0.75}


def test_ticks_are_repeatable_and_split_by_pods():
    runs = []
    for _ in range(2):
        sim = TrafficSimulator(None, seed=7)
        _run(sim, _state(), 20.0)
        runs.append(sim.snapshot())
    assert runs[0] == runs[1]
    snap = runs[0]
    good, bad = snap[f"{NS}/good"], snap[f"{NS}/bad"]
    total = good["requests"] + bad["requests"]
    assert total == pytest.approx(4000, rel=0.1)
    assert good["requests"] / total == pytest.approx(0.5, abs=0.05)
    assert good["errors"] == 0
    assert bad["errors"] / bad["requests"] == pytest.approx(0.2, abs=0.05)
    assert good["fraction"] == 0.5 and bad["revision"] == "r2" and bad["model_version"] == "v-r2"
    other = TrafficSimulator(None, seed=8)
    _run(other, _state(), 20.0)
    assert other.snapshot() != snap


def test_rps_zero_sends_nothing_and_unrouted_is_counted():
    sim = TrafficSimulator(None)
    _run(sim, _state(rps=0), 5.0)
    assert all(d["requests"] == 0 for d in sim.snapshot().values())
    state = _state(rps=100)
    for d in state["deployments"].values():
        d["status"]["readyReplicas"] = 0
    _run(sim, state, 5.0)
    assert all(d["requests"] == 0 for d in sim.snapshot().values())
    assert sim.unrouted()[f"{NS}/traffic"] == pytest.approx(500, rel=0.2)


def test_a_server_exports_its_counters_at_zero_once_ready_before_any_request():
    """As prometheus_client does for a counter without labels (and Prometheus' instrumentation practice
    asks of every series): a canary's series exist at 0 from its first Ready replica, so the scrape after
    its first requests already gives a rate, instead of a lone first sample that `increase()` cannot use."""
    sim = TrafficSimulator(None, seed=1)
    state = _state(rps=0)
    state["deployments"][(NS, "starting")] = deployment("starting", ready=0, revision="r3")
    _run(sim, state, 1.0)
    for text in (sim.render_metrics().decode(), generate_latest(sim.registry).decode()):
        exported = {}
        for line in text.splitlines():
            if line.startswith(("model_feedback_total{", "http_requests_total{")):
                deployment_name = line.split('deployment="')[1].split('"')[0]
                exported.setdefault(deployment_name, []).append(float(line.split()[-1]))
        assert exported == {"bad": [0.0, 0.0, 0.0], "good": [0.0, 0.0, 0.0]}  # not the one still loading


def test_degradation_label_delay_and_exposition():
    extra = {"lab.modelrollout.io/degrade-after-seconds": "5", "lab.modelrollout.io/degraded-error-rate": "1.0",
             "lab.modelrollout.io/label-delay-seconds": "3", "lab.modelrollout.io/label-fraction": "1"}
    sim = TrafficSimulator(None, seed=1)
    state = _state(rps=100, bad="0.0", extra=extra)
    t = _run(sim, state, 4.0)
    bad = sim.snapshot()[f"{NS}/bad"]
    assert bad["errors"] == 0 and not bad["degraded"] and bad["bad_requests"] == 0
    text = generate_latest(sim.registry).decode()
    fb = [line for line in text.splitlines() if line.startswith("model_feedback_total") and 'deployment="bad"' in line]
    assert fb and 0 < float(fb[0].split()[-1]) < bad["predictions"]  # labels lag 3 s behind predictions
    _run(sim, state, 4.0, t0=t + 0.2)
    bad = sim.snapshot()[f"{NS}/bad"]
    assert bad["degraded"] and bad["errors"] > 0 and bad["bad_requests"] == bad["degraded_requests"] > 0
    text = generate_latest(sim.registry).decode()
    for name in ("http_requests_total", "http_request_duration_seconds_bucket", "model_predictions_total",
                 "model_prediction_score_bucket", "model_feedback_total", "model_feedback_correct_total"):
        assert name + "{" in text, name
    assert ('http_requests_total{code="500",deployment="bad",model_version="v-r2",namespace="ml",'
            'revision="r2",rollout="fraud"}') in text
    assert 'le="0.005"' in text and 'le="+Inf"' in text and 'model_prediction_score_bucket{' in text


# ---------------------------------------------------------------------------------- against the emulated API


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Emulated API server + workload simulator + traffic simulator, all via a kubeconfig."""
    from modelrollout_lab.apiserver import start_in_thread
    from modelrollout_lab.workloads import RawKube, WorkloadSimulator

    srv = start_in_thread()
    kubeconfig = str(tmp_path_factory.mktemp("lab") / "kubeconfig")
    srv.write_kubeconfig(kubeconfig)
    workloads = WorkloadSimulator(kubeconfig).start()
    traffic = TrafficSimulator(kubeconfig, tick=0.1, seed=3).start()
    assert workloads.wait_synced() and traffic.wait_synced()
    try:
        yield RawKube(kubeconfig), workloads, traffic
    finally:
        traffic.stop()
        workloads.stop()
        srv.stop()


_ns_counter = iter(range(1000))


def make_ns(kube) -> str:
    ns = f"t{next(_ns_counter)}"
    kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    return ns


def create(kube, ns, obj):
    group_version = obj["apiVersion"]
    plural = {"Deployment": "deployments", "Service": "services", "ConfigMap": "configmaps",
              "HTTPRoute": "httproutes", "Job": "jobs"}[obj["kind"]]
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    obj = {**obj, "metadata": {**obj["metadata"], "namespace": ns}}
    obj.pop("status", None)
    return kube.request("POST", f"{base}/namespaces/{ns}/{plural}", body=obj)


def get_status(kube, ns, name):
    return kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}").get("status") or {}


def test_deployment_ready_only_after_its_load_time(lab):
    kube, _, _ = lab
    ns = make_ns(kube)
    t0 = time.monotonic()
    create(kube, ns, deployment("slow", replicas=2, annotations={"lab.modelrollout.io/load-seconds": "1.5"}))
    status = wait_until(lambda: get_status(kube, ns, "slow").get("observedGeneration"), 5)
    status = get_status(kube, ns, "slow")
    assert status["readyReplicas"] == 0 and status["replicas"] == 2
    assert {c["type"]: c["status"] for c in status["conditions"]}["Available"] == "False"
    assert wait_until(lambda: get_status(kube, ns, "slow").get("readyReplicas") == 2, 5)
    assert time.monotonic() - t0 >= 1.4
    status = get_status(kube, ns, "slow")
    assert status["availableReplicas"] == status["updatedReplicas"] == 2 and status["observedGeneration"] == 1
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {"Available": ("True", "MinimumReplicasAvailable"),
                          "Progressing": ("True", "NewReplicaSetAvailable")}
    # Scale up: the new replicas load first. Scale down: at once.
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/slow"
    kube.patch(path, {"spec": {"replicas": 4}})
    assert wait_until(lambda: get_status(kube, ns, "slow").get("replicas") == 4, 3)
    assert get_status(kube, ns, "slow")["readyReplicas"] == 2
    assert wait_until(lambda: get_status(kube, ns, "slow").get("readyReplicas") == 4, 5)
    t1 = time.monotonic()
    kube.patch(path, {"spec": {"replicas": 0}})
    assert wait_until(lambda: get_status(kube, ns, "slow").get("replicas") == 0, 3)
    assert get_status(kube, ns, "slow")["readyReplicas"] == 0 and time.monotonic() - t1 < 1.5
    assert get_status(kube, ns, "slow")["observedGeneration"] == 3


def test_a_new_template_replaces_pods_still_loading_the_old_one(lab):
    """As KServe does with a RawDeployment predictor: a Deployment whose model never loads gets a
    new template (and more replicas); the Deployment controller replaces the unready pods, so every
    replica is Ready after the new model's load time. The pods loading the old model were kept
    before, never Ready: 1 of 2 forever, and a rollout waiting for 2 never became stable."""
    kube, _, _ = lab
    ns = make_ns(kube)
    create(kube, ns, deployment("stuck", ready=0, replicas=1, annotations={"lab.modelrollout.io/load-seconds": "inf"}))
    assert wait_until(lambda: get_status(kube, ns, "stuck").get("replicas") == 1, 5)  # its pod is loading
    kube.patch(f"/apis/apps/v1/namespaces/{ns}/deployments/stuck",
               {"spec": {"replicas": 2, "template": {"metadata": {"annotations": {
                   "lab.modelrollout.io/load-seconds": "0.3"}}}}})
    assert wait_until(lambda: get_status(kube, ns, "stuck").get("readyReplicas") == 2, 5), get_status(kube, ns, "stuck")
    status = get_status(kube, ns, "stuck")
    assert status["replicas"] == status["updatedReplicas"] == 2 and status["observedGeneration"] == 2


def test_jobs_finish_as_annotated(lab):
    kube, _, _ = lab
    ns = make_ns(kube)

    def job(name, result, **ann):
        annotations = {"lab.modelrollout.io/job-result": result, "lab.modelrollout.io/job-seconds": "0.3",
                       **{f"lab.modelrollout.io/{k.replace('_', '-')}": v for k, v in ann.items()}}
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                "spec": {"template": {"metadata": {"annotations": annotations},
                                      "spec": {"restartPolicy": "Never",
                                               "containers": [{"name": "c", "image": "x"}]}}}}

    create(kube, ns, job("good", "succeeded"))
    create(kube, ns, job("bad", "failed", job_reason="AnalysisFailed", job_message="error rate 0.2"))

    def jstatus(name):
        return kube.get(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}").get("status") or {}

    assert wait_until(lambda: jstatus("good").get("succeeded") == 1 and jstatus("bad").get("failed") == 1, 5)
    good, bad = jstatus("good"), jstatus("bad")
    assert [(c["type"], c["status"]) for c in good["conditions"]] == [("Complete", "True")]
    assert good["completionTime"] and good["startTime"]
    assert [(c["type"], c["reason"], c["message"]) for c in bad["conditions"]] == [
        ("Failed", "AnalysisFailed", "error rate 0.2")]


def test_httproute_weights_split_traffic_and_rps_zero_stops_it(lab):
    kube, _, traffic = lab
    ns = make_ns(kube)
    fast = {"lab.modelrollout.io/load-seconds": "0.1"}
    create(kube, ns, deployment("stable", app="s", revision="r1", annotations=fast))
    create(kube, ns, deployment("canary", app="c", revision="r2", annotations=fast))
    create(kube, ns, service("svc-stable", {"app": "s"}))
    create(kube, ns, service("svc-canary", {"app": "c"}))
    create(kube, ns, route("web", [("svc-stable", 90), ("svc-canary", 10)]))
    create(kube, ns, entry("traffic", "httproute/web", 1000))
    expected = {f"{ns}/stable": pytest.approx(0.9), f"{ns}/canary": pytest.approx(0.1)}
    assert wait_until(lambda: traffic.fractions().get(f"{ns}/traffic") == expected, 5)
    before = traffic.snapshot()
    time.sleep(2.0)
    after = traffic.snapshot()
    sent = {k: after[k]["requests"] - before.get(k, {}).get("requests", 0) for k in (f"{ns}/stable", f"{ns}/canary")}
    total = sum(sent.values())
    assert total == pytest.approx(2000, rel=0.25)
    assert sent[f"{ns}/canary"] / total == pytest.approx(0.1, abs=0.03)
    # rps "0": no traffic (the ConfigMap is read every tick).
    kube.patch(f"/api/v1/namespaces/{ns}/configmaps/traffic", {"data": {"rps": "0"}})
    time.sleep(0.3)
    traffic.wait_ticks(2)
    quiet = traffic.snapshot()
    time.sleep(1.0)
    assert traffic.snapshot()[f"{ns}/stable"]["requests"] == quiet[f"{ns}/stable"]["requests"]
    assert traffic.snapshot()[f"{ns}/canary"]["requests"] == quiet[f"{ns}/canary"]["requests"]


def wait_until(predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)



def test_module_entry_points(lab):
    """`python -m modelrollout_lab.traffic|workloads --kubeconfig K` run as processes, stop on SIGTERM."""
    import json
    import os
    import signal
    import subprocess
    import urllib.request

    kube = lab[0]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "operator"))
    ns = make_ns(kube)
    create(kube, ns, deployment("one", annotations={"lab.modelrollout.io/load-seconds": "0.1"}))
    create(kube, ns, service("svc", {"app": "fraud"}))
    create(kube, ns, entry("traffic", "service/svc", 100))
    procs = []
    try:
        traffic = subprocess.Popen([sys.executable, "-m", "modelrollout_lab.traffic", "--kubeconfig", kube.kubeconfig,
                                    "--port", "0", "--seed", "5", "--namespace", ns],
                                   stdout=subprocess.PIPE, text=True, env=env)
        procs.append(traffic)
        workloads = subprocess.Popen([sys.executable, "-m", "modelrollout_lab.workloads", "--kubeconfig",
                                      kube.kubeconfig, "--namespace", ns], stdout=subprocess.PIPE, text=True, env=env)
        procs.append(workloads)
        line = traffic.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line
        address = line.split("listening on ")[1].split()[0]

        def served():
            with urllib.request.urlopen(f"http://{address}/snapshot", timeout=2) as r:
                return json.loads(r.read())["deployments"].get(f"{ns}/one", {}).get("requests", 0)

        assert wait_until(lambda: served() > 20, 10)
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=2) as r:
            assert f'namespace="{ns}"' in r.read().decode()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        assert [p.wait(10) for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)


def test_fast_exposition_matches_the_registry():
    from prometheus_client.parser import text_string_to_metric_families

    sim = TrafficSimulator(None, seed=2)
    state = _state(rps=300)
    state["configmaps"].update(by_key(entry("nowhere", "service/missing", 50)))
    _run(sim, state, 3.0)

    def samples(text):
        return sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                      for f in text_string_to_metric_families(text) for s in f.samples)

    fast = samples(sim.render_metrics().decode())
    assert fast == samples(generate_latest(sim.registry).decode())
    assert any(name == "lab_unrouted_requests_total" and value > 0 for name, _, value in fast)
