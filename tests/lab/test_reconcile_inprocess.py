"""The reconcile layer in-process, against the lab's API server: each pass acts, reads back and
writes status once; a failure to act is on the resource (Applied=False, a Warning event) and
clears itself; a due decision is not held up by a Prometheus that never answers; a decision
whose status cannot be written is never undone by the next pass."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import datetime, timedelta, timezone

import pytest
from kubernetes import client, config

from modelrollout import core
from modelrollout.config import Config
from modelrollout.kube import Kube, load_configuration
from modelrollout.names import GROUP, LABEL_REVISION, LABEL_ROLLOUT, PLURAL, VERSION, rollout_selector
from modelrollout.reconcile import RolloutMemory, Runtime, run_pass
from modelrollout.spec import template_revision
from modelrollout.workloads import ObservedDeployment
from modelrollout_lab import scenarios
from modelrollout_lab.apiserver import start_in_thread
from modelrollout_lab.kserve import KServeSimulator
from modelrollout_lab.lab import crd_manifest
from modelrollout_lab.workloads import WorkloadSimulator

NS = "default"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    kubeconfig = tmp_path_factory.mktemp("inprocess") / "kubeconfig"
    with start_in_thread(kubeconfig=kubeconfig) as api:
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        client.ApiextensionsV1Api(api_client).create_custom_resource_definition(crd_manifest())
        with WorkloadSimulator(str(kubeconfig)) as _:
            yield api, str(kubeconfig), api_client


class Pass:
    """Runs passes the way the kopf daemon does (`run_pass`, with the memory the daemon keeps),
    observing through the API instead of indexes."""

    def __init__(self, kubeconfig: str, api_client: client.ApiClient, name: str, prometheus: str) -> None:
        self.name, self.api_client = name, api_client
        self.runtime = Runtime(config=Config(kubeconfig=kubeconfig, prometheus_url=prometheus),
                               kube=Kube(load_configuration(kubeconfig)))
        self.memory = RolloutMemory()
        self.events: list[tuple[str, str, str]] = []
        self.loop = asyncio.new_event_loop()  # the client lives on one loop, as in the operator

    def close(self) -> None:
        self.loop.run_until_complete(self.runtime.kube.close())
        self.loop.close()

    def rollout(self) -> dict:
        return client.CustomObjectsApi(self.api_client).get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL,
                                                                                     self.name)

    def observed(self) -> tuple[dict, dict, dict]:
        body = self.rollout()
        selector = rollout_selector(self.name)
        deployments = {
            d.metadata.labels[LABEL_REVISION]: ObservedDeployment(
                d.metadata.name, d.spec.replicas or 0, (d.status and d.status.ready_replicas) or 0,
                ((d.status and d.status.observed_generation) or 0) >= (d.metadata.generation or 0))
            for d in client.AppsV1Api(self.api_client).list_namespaced_deployment(NS, label_selector=selector).items}
        services = {s.metadata.name: dict(s.spec.selector or {})
                    for s in client.CoreV1Api(self.api_client).list_namespaced_service(NS, label_selector=selector).items}
        return body, deployments, services

    def run(self, clock=None) -> float:
        body, deployments, services = self.observed()
        emit = lambda *event: self.events.append(event)  # noqa: E731 - the daemon's kopf.event
        kwargs = {"clock": clock} if clock else {}
        return self.loop.run_until_complete(
            run_pass(self.runtime, self.memory, body, deployments, services, emit, **kwargs))

    def until(self, predicate, passes: int = 200) -> dict:
        for _ in range(passes):
            self.run()
            status = self.rollout().get("status") or {}
            if predicate(status):
                return status
            time.sleep(0.1)
        raise AssertionError(f"never reached: {self.rollout().get('status')}")


def applied(status: dict) -> dict:
    return next(c for c in status.get("conditions") or [] if c["type"] == "Applied")


def test_a_conflicting_route_is_reported_on_the_resource_and_recovers(cluster):
    api, kubeconfig, api_client = cluster
    custom = client.CustomObjectsApi(api_client)
    docs = scenarios.manifests("inproc", router="gatewayAPI", steps=[{"weight": 40, "hold": "1h"}])
    route, rollout = docs[1], docs[2]
    custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", NS, "httproutes", route)
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, rollout)
    run = Pass(kubeconfig, api_client, "inproc", "http://127.0.0.1:9")
    run.until(lambda s: s.get("phase") == "Succeeded")
    release = scenarios.release(rollout, "2.0.0")
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "inproc", {"spec": release["spec"]})
    # Every write of the route meets a 409: the step's weight cannot be applied.
    api.server.faults.set(conflict=1.0, verbs=["update", "patch"], resources=["httproutes.gateway.networking.k8s.io"])
    try:
        status = run.until(lambda s: s.get("stepEnteredAt") and applied(s)["status"] == "False")
        delays = [run.run() for _ in range(7)]
        status = run.rollout()["status"]
    finally:
        api.server.faults.clear()
    assert applied(status)["status"] == "False" and applied(status)["reason"] == "Conflict"
    assert status["canaryWeight"] == 0 and "stepStartedAt" not in status  # nothing hoped for is recorded
    assert ("Warning", "Conflict") in [(t, r) for t, r, _ in run.events]
    assert delays[0] >= 1.0  # backing off, not hammering
    # ... but trying again within one analysis interval (2s), however long it has failed: the backoff once
    # grew to a minute, so under flaky writes a step's weight could stay unapplied for its whole readiness timeout.
    assert max(delays) <= 2.0, delays
    status = run.until(lambda s: s.get("stepStartedAt"))
    assert applied(status)["status"] == "True" and status["canaryWeight"] == 40
    assert ("Normal", "Applied") in [(t, r) for t, r, _ in run.events]
    run.close()


@pytest.fixture
def silent_prometheus():
    """An address that accepts connections and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        yield f"http://127.0.0.1:{silent.getsockname()[1]}"


def release_at_30_percent_without_data(cluster, name: str, prometheus: str) -> Pass:
    """A gatewayAPI rollout released to a first step of 30 % (held for an hour), analysed every
    10 s, rolling back after 30 s without data: the step has started when this returns."""
    _, kubeconfig, api_client = cluster
    custom = client.CustomObjectsApi(api_client)
    docs = scenarios.manifests(name, router="gatewayAPI", steps=[{"weight": 30, "hold": "1h"}],
                               interval="10s", no_data={"hold": "30s", "then": "rollback"})
    custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", NS, "httproutes", docs[1])
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, docs[2])
    run = Pass(kubeconfig, api_client, name, prometheus)
    run.until(lambda s: s.get("phase") == "Succeeded")
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name,
                                          {"spec": scenarios.release(docs[2], "2.0.0")["spec"]})
    run.until(lambda s: s.get("stepStartedAt"))
    return run


def test_an_overdue_no_data_rollback_is_not_held_up_by_a_silent_prometheus(cluster, silent_prometheus):
    run = release_at_30_percent_without_data(cluster, "overdue", silent_prometheus)
    started = time.monotonic()
    run.run()  # an analysis against the silent Prometheus: bounded by half an interval, starts the clock
    assert time.monotonic() - started < 10.0 / 2 + 2.0
    status = run.rollout()["status"]
    assert status.get("noDataSince"), status.get("lastAnalysis")
    later = core.parse_ts(status["noDataSince"]) + timedelta(seconds=31)
    started = time.monotonic()
    run.run(clock=lambda: later)  # the limit is overdue: act now, without asking Prometheus again
    assert time.monotonic() - started < 2.0
    status = run.rollout()["status"]
    assert status["phase"] == "RolledBack" and "no conclusive data" in status["message"]
    run.close()


def test_the_clock_is_read_after_observing(cluster):
    """Decisions are stamped with the time after the analysis, not when the pass began."""
    times = iter([datetime(2026, 11, 29, tzinfo=timezone.utc) + timedelta(seconds=s) for s in range(100)])
    stamps = []

    def clock():
        moment = next(times)
        stamps.append(moment)
        return moment

    api, kubeconfig, api_client = cluster
    custom = client.CustomObjectsApi(api_client)
    docs = scenarios.manifests("clocked", router="gatewayAPI")
    custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", NS, "httproutes", docs[1])
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, docs[2])
    run = Pass(kubeconfig, api_client, "clocked", "http://127.0.0.1:9")
    run.run(clock=clock)
    status = run.rollout()["status"]
    stamped = {c["lastTransitionTime"] for c in status["conditions"]}
    run.close()
    assert core.ts(stamps[0]) not in stamped and stamped <= {core.ts(t) for t in stamps[1:]}


def canary_route_weight(api_client: client.ApiClient, name: str) -> int:
    route = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", NS, "httproutes", name)
    return sum(ref.get("weight", 1) for rule in route["spec"]["rules"] for ref in rule["backendRefs"]
               if ref["name"].endswith("-canary"))


def test_a_rollback_whose_status_cannot_be_written_is_not_undone_by_the_next_pass(cluster, silent_prometheus):
    """The pass that rolls back moves traffic to stable, then cannot write its status (the API
    server fails every status write). The next pass must start from that decision: the older status
    on the cluster still says "progressing at 30 %", and deciding from it put the rolled-back canary
    back in front of users (seen under injected API faults: route weights 20 -> 0 -> 20 -> 0)."""
    api, _, api_client = cluster
    run = release_at_30_percent_without_data(cluster, "unwritten", silent_prometheus)
    run.run()  # an analysis with no answer: the no-data clock starts
    status = run.rollout()["status"]
    assert canary_route_weight(api_client, "unwritten") == 30 and status.get("noDataSince")
    later = core.parse_ts(status["noDataSince"]) + timedelta(seconds=31)

    api.server.faults.set(error=1.0, verbs=["patch", "update"], resources=["modelrollouts/status"])
    try:
        delay = run.run(clock=lambda: later)  # overdue: roll back; the status write fails
    finally:
        api.server.faults.clear()
    assert canary_route_weight(api_client, "unwritten") == 0
    assert run.rollout()["status"]["phase"] == "Progressing"  # the cluster still holds the older status
    assert ("Warning", "RolledBack") in [(t, r) for t, r, _ in run.events]  # what was done is told
    assert any(t == "Warning" and "reconcile failed" in m for t, _, m in run.events) and delay >= 1.0

    for _ in range(3):  # the clock is back to now: the older status alone would resume the step at 30 %
        run.run()
        assert canary_route_weight(api_client, "unwritten") == 0
    status = run.rollout()["status"]
    assert status["phase"] == "RolledBack" and "no conclusive data" in status["message"]
    run.close()


def test_a_rollback_acted_on_but_not_written_is_not_undone_by_a_restarted_operator(cluster, silent_prometheus):
    """As above, but the operator restarts before its next pass (a new process: no memory). The
    rollback is written before the route changes, so the restarted operator starts from it."""
    api, kubeconfig, api_client = cluster
    run = release_at_30_percent_without_data(cluster, "restarted", silent_prometheus)
    run.run()  # an analysis with no answer: the no-data clock starts
    later = core.parse_ts(run.rollout()["status"]["noDataSince"]) + timedelta(seconds=31)

    # The status write that records what acting achieved (weight 0 carried) fails; the others land.
    api.server.faults.set(error=1.0, verbs=["patch"], resources=["modelrollouts/status"], body=r'"canaryWeight":\s*0\b')
    try:
        run.run(clock=lambda: later)  # overdue: roll back
    finally:
        api.server.faults.clear()
    assert canary_route_weight(api_client, "restarted") == 0
    assert any(t == "Warning" and "reconcile failed" in m for t, _, m in run.events)
    run.close()

    restarted = Pass(kubeconfig, api_client, "restarted", silent_prometheus)
    for _ in range(3):  # Prometheus still says nothing: the older status alone would resume the step at 30 %
        restarted.run()
        assert canary_route_weight(api_client, "restarted") == 0
    status = restarted.rollout()["status"]
    assert status["phase"] == "RolledBack" and "no conclusive data" in status["message"]
    assert status["canaryWeight"] == 0 and applied(status)["status"] == "True"
    restarted.close()


def test_an_analysis_with_the_replicas_router_costs_one_api_request_and_records_the_ready_share(cluster):
    """At 1000 rollouts every request of a pass is a load on the API server: a pass in analysis
    writes its status and reads nothing back (the canary's share is the Ready pods the Deployment
    watch reports), and the weight it records is still that share, never the step's plan."""
    api, kubeconfig, api_client = cluster
    custom = client.CustomObjectsApi(api_client)
    docs = scenarios.manifests("shared", replicas=2, steps=[{"weight": 50, "hold": "1h"}], interval="10s",
                               no_data={"hold": "1h", "then": "pause"})
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, docs[-1])
    run = Pass(kubeconfig, api_client, "shared", "http://127.0.0.1:9")
    run.until(lambda s: s.get("phase") == "Succeeded")
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "shared",
                                          {"spec": scenarios.release(docs[-1], "2.0.0")["spec"]})
    status = run.until(lambda s: s.get("stepStartedAt") and s.get("canaryWeight") == 50)
    later = core.parse_ts(status.get("lastAnalysisAt") or status["stepStartedAt"])

    def operator_requests() -> int:
        return sum(n for (agent, _, _), n in api.request_counts().items() if agent == "modelrollout")

    def analyse() -> int:
        """One pass with the clock an interval on (a due analysis); the operator's requests in it."""
        nonlocal later
        later += timedelta(seconds=10)
        before = operator_requests()
        run.run(clock=lambda: later)
        return operator_requests() - before

    costs = [analyse() for _ in range(8)]  # the first passes may still scale (the stable gives up a pod)
    assert costs[-3:] == [1, 1, 1], costs
    status = run.rollout()["status"]
    assert status.get("lastAnalysisAt") == core.ts(later) and status["canaryWeight"] == 50, status
    canary = client.AppsV1Api(api_client).read_namespaced_deployment(
        f"shared-{status['canaryRevision']}", NS)  # the share recorded is what the cluster reports
    assert canary.status.ready_replicas == 1
    run.close()


def test_a_rollout_with_a_70_character_name_becomes_stable_and_is_released(cluster):
    """A custom resource's name may have 253 characters: the labels generated from it are shortened into
    shape (issue 22: a 422 on every write, Initializing forever, Stalled=False)."""
    _, kubeconfig, api_client = cluster
    custom = client.CustomObjectsApi(api_client)
    name = "fraud-detector-for-the-european-card-payments-team-eu-west-1-canary-v2"
    assert len(name) == 70
    doc = scenarios.manifests(name, replicas=2, steps=[{"weight": 50, "hold": "1h"}], interval="10s",
                              no_data={"hold": "1h", "then": "pause"})[-1]
    doc["spec"]["selector"]["matchLabels"] = doc["spec"]["template"]["metadata"]["labels"] = {"app": "fraud"}
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, doc)
    run = Pass(kubeconfig, api_client, name, "http://127.0.0.1:9")
    status = run.until(lambda s: s.get("phase") in ("Succeeded", "InvalidSpec"), passes=100)
    assert status["phase"] == "Succeeded" and applied(status)["status"] == "True", status
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name,
                                          {"spec": scenarios.release(doc, "2.0.0")["spec"]})
    status = run.until(lambda s: s.get("stepStartedAt") and s.get("canaryWeight") == 50)
    deployments = client.AppsV1Api(api_client).list_namespaced_deployment(NS, label_selector=rollout_selector(name)).items
    assert {d.metadata.labels[LABEL_REVISION]: d.status.ready_replicas for d in deployments} == \
        {status["stableRevision"]: 1, status["canaryRevision"]: 1}
    assert all(len(d.metadata.labels[LABEL_ROLLOUT]) <= 63 for d in deployments)
    assert not [e for e in run.events if e[0] == "Warning"], run.events
    run.close()


def test_an_inference_service_that_cannot_be_taken_over_is_refused_on_the_resource(cluster):
    """The InferenceService runs a canary of the user's own: the rollout writes nothing to it and
    says why in its Applied condition and a Warning event."""
    _, kubeconfig, api_client = cluster
    custom = client.CustomObjectsApi(api_client)
    isvc_api = ("serving.kserve.io", "v1beta1", NS, "inferenceservices")
    _, isvc, rollout = scenarios.manifests("inproc-split", router="kserve")
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = 10
    created = custom.create_namespaced_custom_object(*isvc_api, isvc)
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, rollout)
    run = Pass(kubeconfig, api_client, "inproc-split", "http://127.0.0.1:9")
    status = run.until(lambda s: any(c["type"] == "Applied" for c in s.get("conditions") or []))
    run.close()
    assert applied(status)["status"] == "False" and applied(status)["reason"] == "InferenceServiceInCanary"
    assert "canaryTrafficPercent: 10" in applied(status)["message"] and not status.get("stableRevision")
    assert ("Warning", "InferenceServiceInCanary") in [(t, r) for t, r, _ in run.events]
    after = custom.get_namespaced_custom_object(*isvc_api, "inproc-split")
    assert after["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_a_serving_model_whose_kserve_status_lags_is_never_replaced_unjudged_by_the_first_rollout(cluster):
    """RawDeployment: the InferenceService serves the users' model; the user has just edited its
    transformer, so KServe's status is of the previous generation when the first rollout arrives.
    Before, the first pass took that for "not serving" and wrote the template over the users' model,
    unjudged (CI saw the bad model serve every request). Now the rollout waits, writes nothing, and
    adopts the model once KServe reports it: the template is a canary entry beside it."""
    _, kubeconfig, api_client = cluster
    custom = client.CustomObjectsApi(api_client)
    isvc_api = ("serving.kserve.io", "v1beta1", NS, "inferenceservices")
    name = "inproc-lagging"
    _, isvc, rollout = scenarios.manifests(name, router="kserve", kserve_mode="RawDeployment", kserve_serving=True)
    created = custom.create_namespaced_custom_object(*isvc_api, isvc)
    ready = {"status": {"observedGeneration": created["metadata"]["generation"],
                        "conditions": [{"type": "Ready", "status": "True"}]}}
    custom.patch_namespaced_custom_object_status(*isvc_api, name, ready)
    edited = custom.get_namespaced_custom_object(*isvc_api, name)
    edited["spec"]["transformer"]["containers"][0]["image"] = "example/feature-transformer:4"
    edited = custom.replace_namespaced_custom_object(*isvc_api, name, edited)
    users_model = edited["spec"]["predictor"]
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, rollout)
    run = Pass(kubeconfig, api_client, name, "http://127.0.0.1:9")
    try:
        for _ in range(3):
            run.run()
        status = run.rollout()["status"]
        assert custom.get_namespaced_custom_object(*isvc_api, name)["spec"] == edited["spec"]  # nothing written
        assert status["phase"] == "Initializing" and "not reported serving" in status["message"]
        ready["status"]["observedGeneration"] = edited["metadata"]["generation"]  # KServe catches up
        custom.patch_namespaced_custom_object_status(*isvc_api, name, ready)
        status = run.until(lambda s: s.get("canaryRevision"))
    finally:
        run.close()
    spec = custom.get_namespaced_custom_object(*isvc_api, name)["spec"]
    assert status["stableRevision"] == template_revision(users_model) and spec["predictor"] == users_model
    assert [e["predictor"]["labels"][LABEL_REVISION] for e in spec["canary"]] == [status["canaryRevision"]]
    assert ("Normal", "Adopted") in [(t, r) for t, r, _ in run.events]


GATE = {"beforeTraffic": [{"name": "eval", "job": {"template": {
    "spec": {"containers": [{"name": "eval", "image": "example/eval:1"}]}}}}]}


def first_gate_job(cluster, name: str, routed: dict, rollout: dict) -> tuple[dict, dict]:
    """Create the routing object and the rollout (with a beforeTraffic Job gate), release 2.0.0 and
    run passes until the gate's Job exists: (the Job's env, the rollout's status)."""
    _, kubeconfig, api_client = cluster
    custom, batch = client.CustomObjectsApi(api_client), client.BatchV1Api(api_client)
    group, version, plural = routed.pop("_api")
    custom.create_namespaced_custom_object(group, version, NS, plural, routed)
    rollout["spec"]["strategy"]["gates"] = GATE
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, rollout)
    run = Pass(kubeconfig, api_client, name, "http://127.0.0.1:9")
    jobs = lambda: batch.list_namespaced_job(NS, label_selector=f"{LABEL_ROLLOUT}={name}").items  # noqa: E731
    try:
        run.until(lambda s: s.get("phase") == "Succeeded")
        custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name,
                                              {"spec": scenarios.release(rollout, "2.0.0")["spec"]})
        status = run.until(lambda s: jobs())
    finally:
        run.close()
    return {e.name: e.value for e in jobs()[0].spec.template.spec.containers[0].env}, status


def test_a_job_gate_reaches_the_revisions_through_the_rollouts_own_services(cluster):
    _, _, api_client = cluster
    _, route, rollout = scenarios.manifests("inproc-gate-route", router="gatewayAPI")
    env, status = first_gate_job(cluster, "inproc-gate-route",
                                 {**route, "_api": ("gateway.networking.k8s.io", "v1", "httproutes")}, rollout)
    for role in ("canary", "stable"):
        host, port = env[f"{role.upper()}_SERVICE"].split(":")
        service = client.CoreV1Api(api_client).read_namespaced_service(host.split(".")[0], NS)
        assert host == f"{service.metadata.name}.{NS}.svc" and port == "8080"
        assert service.spec.selector[LABEL_REVISION] == status[f"{role}Revision"]


@pytest.mark.parametrize("tag_routing", [True, False])
def test_a_kserve_job_gate_is_handed_what_kserve_reports_never_services_that_do_not_exist(cluster, tag_routing):
    """The operator creates no Services for a kserve rollout. Before, a Job gate's CANARY_SERVICE
    and STABLE_SERVICE named `<name>-canary` and `<name>-stable` all the same: names that resolve
    to nothing. Now they are the revisions' own addresses KServe reports (Serverless with tag
    routing: Knative's `latest` and `prev` URLs), or absent when KServe reports none."""
    _, kubeconfig, api_client = cluster
    name = f"inproc-gate-{str(tag_routing).lower()}"
    _, isvc, rollout = scenarios.manifests(name, router="kserve")
    if tag_routing:
        isvc["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"] = "true"
    kserve = KServeSimulator(kubeconfig).start()
    try:
        env, status = first_gate_job(cluster, name, {**isvc, "_api": ("serving.kserve.io", "v1beta1", "inferenceservices")},
                                     rollout)
    finally:
        kserve.stop()
    services = {s.metadata.name for s in client.CoreV1Api(api_client).list_namespaced_service(NS).items}
    named = {key: env[key] for key in ("CANARY_SERVICE", "STABLE_SERVICE") if key in env}
    assert not any(value.split(".")[0] in {f"{name}-canary", f"{name}-stable"} - services for value in named.values()), named
    if tag_routing:
        assert named == {"CANARY_SERVICE": f"latest-{name}-predictor.{NS}.example.com",
                         "STABLE_SERVICE": f"prev-{name}-predictor.{NS}.example.com"}
    else:
        assert named == {}
    assert env["CANARY_REVISION"] == status["canaryRevision"]
