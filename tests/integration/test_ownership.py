"""What the operator owns, as users see it (issue 9: 3, 4, 5, 9): a gate's verdict is its own, a
route's other rules stay as written, deletion never leaves traffic pointing at nothing, and two
rollouts whose pods share labels never serve each other's traffic."""

from __future__ import annotations

import copy
import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from lab_watch import Recorder, apply_all, events_of, recreate_with_a_bad_model, route_canary_weight, start_stable
from modelrollout.core import command_value
from modelrollout.manifests import service_name
from modelrollout.names import LABEL_REVISION, LABEL_ROLLOUT
from modelrollout_lab import scenarios

pytestmark = pytest.mark.lab

SAMPLED = {"rps": 400, "min_samples": 300}
LONG = "fraud-detector-for-the-european-card-payments-team-v2ab"  # 55 characters, as reported
ROUTES = ("gateway.networking.k8s.io", "v1", "default", "httproutes")


def _job_gate(name, result, seconds):
    return {"name": name, "job": {"template": {
        "metadata": {"annotations": {"lab.modelrollout.io/job-result": result,
                                     "lab.modelrollout.io/job-seconds": str(seconds),
                                     "lab.modelrollout.io/job-message": f"{name} {result}"}},
        "spec": {"containers": [{"name": "eval", "image": "example/eval:1"}]}}}}


def _route(lab, name):
    return lab.custom.get_namespaced_custom_object(*ROUTES[:3], ROUTES[3], name)


def _release_and_promote(lab, manifest, version):
    """Apply a new version and wait for its promotion; returns the status."""
    name, previous = manifest["metadata"]["name"], lab.status(manifest["metadata"]["name"])["stableRevision"]
    lab.apply(scenarios.release(manifest, version))

    def done():
        status = lab.status(name)
        return (status.get("phase") == "Succeeded" and status.get("stableRevision") != previous
                and (status.get("history") or [{}])[0].get("result") == "Promoted" and status)
    return lab.wait_for(done, timeout=90, what=f"{name} promoted")


def _unrouted(lab, entry):
    return lab.traffic.unrouted().get(f"default/{entry}-traffic", 0)


def _served(lab, deployment):
    return lab.traffic.snapshot().get(f"default/{deployment}", {}).get("requests", 0)


def _deployments(lab, rollout):
    return lab.apps.list_namespaced_deployment("default", label_selector=f"{LABEL_ROLLOUT}={rollout}").items


def _service(lab, name):
    try:
        return lab.core.read_namespaced_service(name, "default")
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_two_job_gates_of_a_long_named_rollout_each_give_their_own_verdict(lab):
    v1 = start_stable(lab, LONG, router="gatewayAPI", **SAMPLED)
    v2 = scenarios.release(v1, "2.0.0")
    v2["spec"]["strategy"]["gates"] = {"beforeTraffic": [_job_gate("smoke", "succeeded", 1),
                                                         _job_gate("offline-eval", "failed", 2)]}
    with Recorder(lambda: route_canary_weight(lab, LONG)) as weights:
        lab.apply(v2)
        status = lab.wait_for_phase(LONG, "RolledBack", timeout=60)
    assert "offline-eval" in status["message"]
    assert set(weights.values) == {0}  # the canary never got a request
    batch = client.BatchV1Api(lab.custom.api_client)
    jobs = [j.metadata.name for j in batch.list_namespaced_job("default", label_selector=f"{LABEL_ROLLOUT}={LONG}").items]
    assert len(set(jobs)) == 2 and all(len(n) <= 63 for n in jobs)


ADMIN_RULE = {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
              "filters": [{"type": "RequestHeaderModifier",
                           "requestHeaderModifier": {"add": [{"name": "x-admin", "value": "1"}]}}],
              "backendRefs": [{"name": "admin-svc", "port": 9090}]}


def _admin_console():
    labels = {"app": "admin-console"}
    annotations = {f"lab.modelrollout.io/{k}": v for k, v in scenarios.GOOD.items()}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "admin-console", "namespace": "default"},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels, "annotations": annotations},
                               "spec": {"containers": [{"name": "admin", "image": "example/admin:1"}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "admin-svc", "namespace": "default"},
         "spec": {"selector": labels, "ports": [{"port": 9090, "targetPort": 9090}]}},
    ]


def test_the_users_other_rule_is_untouched_through_a_whole_release(lab):
    docs = scenarios.manifests("admin", router="gatewayAPI", **SAMPLED)
    docs[1]["spec"]["rules"].append(copy.deepcopy(ADMIN_RULE))
    apply_all(lab, _admin_console() + [scenarios.traffic_entry("admin-panel", "default", "httproute/admin#/admin", 50)]
              + docs)
    lab.wait_for_phase("admin", "Succeeded", timeout=60)
    written = json.dumps(_route(lab, "admin")["spec"]["rules"][1])
    lab.wait_for(lambda: lab.traffic.fractions().get("default/admin-panel-traffic"), timeout=10, what="the admin console")
    unrouted = _unrouted(lab, "admin-panel")
    with Recorder(lambda: json.dumps(_route(lab, "admin")["spec"]["rules"][1])) as admin_rule, \
            Recorder(lambda: route_canary_weight(lab, "admin")) as weights:
        _release_and_promote(lab, docs[-1], "2.0.0")
    assert weights.values[-1] == 0 and max(weights.values) > 0  # a release went through the first rule
    assert admin_rule.values == [written]  # the /admin rule, byte for byte, all along
    assert lab.traffic.fractions()["default/admin-panel-traffic"] == {"default/admin-console": 1.0}
    assert _unrouted(lab, "admin-panel") == unrouted


def test_a_route_with_no_rule_of_the_rollout_is_reported_on_the_resource(lab):
    docs = scenarios.manifests("stranger", router="gatewayAPI", **SAMPLED)
    docs[1]["spec"]["rules"] = [copy.deepcopy(ADMIN_RULE)]
    apply_all(lab, docs)

    def reported():
        conditions = {c["type"]: c for c in lab.status("stranger").get("conditions") or []}
        applied = conditions.get("Applied") or {}
        return applied.get("status") == "False" and applied.get("reason") == "RouteNotManaged" and conditions
    conditions = lab.wait_for(reported, timeout=30, what="RouteNotManaged on the rollout")
    assert service_name("stranger", "stable") in conditions["Applied"]["message"]
    assert conditions["Ready"]["status"] != "True"
    assert _route(lab, "stranger")["spec"]["rules"] == [ADMIN_RULE]  # the user's route, untouched
    lab.wait_for(lambda: events_of(lab, "stranger", "RouteNotManaged"), timeout=10, what="a Warning event")


@pytest.mark.parametrize("router", ["gatewayAPI", "replicas"])
def test_deleting_a_rollout_hands_the_stable_revision_over_and_no_request_goes_unrouted(lab, router):
    name = f"handover-{router.lower()}"
    v1 = start_stable(lab, name, router=router, **SAMPLED)
    stable = _release_and_promote(lab, v1, "2.0.0")
    deployment = next(d.metadata.name for d in _deployments(lab, name)
                      if d.metadata.labels[LABEL_REVISION] == stable["stableRevision"])
    unrouted = _unrouted(lab, name)
    lab.delete_rollout(name)
    lab.wait_for(lambda: not lab.status(name), timeout=30, what="the rollout to go")
    lab.wait_for(lambda: _service(lab, service_name(name, "canary")) is None, timeout=20,
                 what="the garbage collector to delete the canary Service")
    served = _served(lab, deployment)
    lab.traffic.wait_ticks(15)
    assert _unrouted(lab, name) == unrouted  # not one request unrouted, during the deletion or after it
    assert _served(lab, deployment) > served  # the handed-over stable revision still serves
    kept = [service_name(name, "stable")] + ([service_name(name, "shared")] if router == "replicas" else [])
    for service in kept:
        svc = _service(lab, service)
        assert svc is not None and not svc.metadata.owner_references
        assert svc.metadata.labels[LABEL_ROLLOUT] == name  # so a re-created rollout adopts it
    remaining = _deployments(lab, name)
    assert [d.metadata.name for d in remaining] == [deployment] and not remaining[0].metadata.owner_references
    if router == "gatewayAPI":
        refs = _route(lab, name)["spec"]["rules"][0]["backendRefs"]
        assert [(r["name"], r["weight"]) for r in refs] == [(service_name(name, "stable"), 100)]
        # Re-created with another template: what was handed over stays stable, the new one is judged.
        recreate_with_a_bad_model(lab, v1, stable["stableRevision"])
        uid = lab.rollout(name)["metadata"]["uid"]
        lab.wait_for(lambda: [(d.metadata.name, [o.uid for o in d.metadata.owner_references or []])
                              for d in _deployments(lab, name)] == [(deployment, [uid])],
                     timeout=20, what="the handed-over Deployment adopted, the rolled-back canary gone")
        assert route_canary_weight(lab, name) == 0 and _unrouted(lab, name) == unrouted
        return
    # Re-created with the same template: it adopts what was handed over, with no new revision.
    lab.apply(scenarios.release(v1, "2.0.0"))
    status = lab.wait_for_phase(name, "Succeeded", timeout=60)
    assert status["stableRevision"] == stable["stableRevision"]
    uid = lab.rollout(name)["metadata"]["uid"]
    lab.wait_for(lambda: all(_service(lab, s).metadata.owner_references for s in kept), timeout=20, what="adoption")
    assert all(_service(lab, s).metadata.owner_references[0].uid == uid for s in kept)
    assert [d.metadata.owner_references[0].uid for d in _deployments(lab, name)] == [uid]
    assert _unrouted(lab, name) == unrouted


def test_deleting_mid_release_with_the_replicas_router_gives_stable_back_its_pods(lab):
    """Mid-release the stable revision has given pods to the canary: the handover restores its size."""
    v1 = start_stable(lab, "midway", steps=[{"weight": 50, "hold": "60s"}], **SAMPLED)
    stable = lab.status("midway")["stableRevision"]
    lab.apply(scenarios.release(v1, "2.0.0"))
    lab.wait_for(lambda: lab.status("midway").get("canaryWeight") == 50, timeout=60, what="weight 50")
    deployment = next(d for d in _deployments(lab, "midway") if d.metadata.labels[LABEL_REVISION] == stable)
    assert deployment.spec.replicas < v1["spec"]["replicas"]
    unrouted = _unrouted(lab, "midway")
    lab.delete_rollout("midway")
    lab.wait_for(lambda: [d.metadata.name for d in _deployments(lab, "midway")] == [deployment.metadata.name],
                 timeout=30, what="the canary's Deployment to go")
    kept = lab.apps.read_namespaced_deployment(deployment.metadata.name, "default")
    assert kept.spec.replicas == v1["spec"]["replicas"] and not kept.metadata.owner_references
    lab.traffic.wait_ticks(10)
    assert _unrouted(lab, "midway") == unrouted

    # Re-created with another template: the handed-over pods stay stable, the new ones a judged canary.
    recreate_with_a_bad_model(lab, v1, stable)
    uid = lab.rollout("midway")["metadata"]["uid"]
    lab.wait_for(lambda: [(d.metadata.name, d.spec.replicas, [o.uid for o in d.metadata.owner_references or []])
                          for d in _deployments(lab, "midway")] == [(deployment.metadata.name, v1["spec"]["replicas"], [uid])],
                 timeout=20, what="the handed-over Deployment adopted at full size, the rolled-back canary gone")
    assert _unrouted(lab, "midway") == unrouted


@pytest.mark.parametrize("leave", ["abort", "delete"])
def test_leaving_a_weight_100_step_with_the_replicas_router_never_leaves_users_without_a_ready_pod(lab, leave):
    """At a weight-100 step the stable has given every pod to the canary. Aborted, or deleted, the
    canary's pods stopped at once, and users met no Ready pod until the stable's loaded (3 s here):
    now they stop once a stable pod is Ready."""
    name = f"full-{leave}"
    v1 = start_stable(lab, name, behaviour={"load-seconds": "3"}, steps=[{"weight": 100, "hold": "60s"}], **SAMPLED)
    stable = lab.status(name)["stableRevision"]
    lab.apply(scenarios.release(v1, "2.0.0", {"load-seconds": "0.5"}))
    lab.wait_for(lambda: lab.status(name).get("canaryWeight") == 100 and not any(
        d.status.ready_replicas for d in _deployments(lab, name) if d.metadata.labels[LABEL_REVISION] == stable),
        timeout=60, what="weight 100, no stable pod left")
    unrouted = _unrouted(lab, name)
    if leave == "abort":
        abort = command_value(lab.status(name)["canaryRevision"], None, "now")
        lab.custom.patch_namespaced_custom_object("modelrollout.io", "v1alpha1", "default", "modelrollouts", name,
                                                  {"metadata": {"annotations": {"modelrollout.io/abort": abort}}})
        lab.wait_for_phase(name, "RolledBack", timeout=30)
        gone = lambda: [d.metadata.labels[LABEL_REVISION] for d in _deployments(lab, name)  # noqa: E731
                        if d.spec.replicas] == [stable]
    else:
        lab.delete_rollout(name)
        gone = lambda: [d.metadata.labels[LABEL_REVISION] for d in _deployments(lab, name)] == [stable]  # noqa: E731
    lab.wait_for(gone, timeout=30, what="only the stable's pods left")
    lab.traffic.wait_ticks(10)
    assert _unrouted(lab, name) == unrouted  # not one request met the Service without a Ready pod


def test_delete_all_removes_everything_the_rollout_created(lab):
    docs = scenarios.manifests("purge", router="gatewayAPI", **SAMPLED)
    docs[-1]["spec"]["onDelete"] = "DeleteAll"
    apply_all(lab, docs)
    lab.wait_for_phase("purge", "Succeeded", timeout=60)
    lab.delete_rollout("purge")
    lab.wait_for(lambda: not _deployments(lab, "purge") and _service(lab, service_name("purge", "stable")) is None,
                 timeout=30, what="everything to go")


def test_rollouts_whose_pods_share_labels_never_serve_each_others_traffic(lab):
    names = ("twin-a", "twin-b")
    for name in names:
        docs = scenarios.manifests(name, rps=100)
        for obj in (docs[-1]["spec"]["selector"]["matchLabels"], docs[-1]["spec"]["template"]["metadata"]["labels"]):
            obj.clear()
            obj["app"] = "twins"
        docs.append(scenarios.traffic_entry(f"{name}-stable", "default", f"service/{service_name(name, 'stable')}", 100))
        apply_all(lab, docs)
    for name in names:
        lab.wait_for_phase(name, "Succeeded", timeout=60)
    lab.traffic.wait_ticks(3)
    fractions = lab.traffic.fractions()
    for name in names:
        own = {f"default/{d.metadata.name}" for d in _deployments(lab, name)}
        for entry in (f"default/{name}-traffic", f"default/{name}-stable-traffic"):  # shared and stable Services
            assert fractions[entry] and set(fractions[entry]) <= own, (entry, fractions[entry], own)


def _ready(lab, name):
    ready = [c for c in lab.status(name).get("conditions") or [] if c["type"] == "Ready"]
    return (ready[0]["status"], ready[0]["reason"]) if ready else None


def _stable_deployment(lab, name):
    stable = lab.status(name)["stableRevision"]
    return next(d for d in _deployments(lab, name) if d.metadata.labels[LABEL_REVISION] == stable)


def test_an_edited_stable_deployment_is_restored_reported_and_never_ready_meanwhile(lab):
    """Issue 22: a user patched the stable revision's image (here also a failing model): it was
    never restored nor reported, and the rollout stayed Ready "revision ... is stable"."""
    start_stable(lab, "edited", **SAMPLED)
    deployment = _stable_deployment(lab, "edited")
    intended = deployment.spec.template.spec.containers[0].image
    assert _ready(lab, "edited")[0] == "True"
    with Recorder(lambda: _ready(lab, "edited")) as ready:
        lab.apps.patch_namespaced_deployment(deployment.metadata.name, "default", {"spec": {"template": {
            "metadata": {"annotations": {"lab.modelrollout.io/error-rate": "0.4"}},
            "spec": {"containers": [{"name": deployment.spec.template.spec.containers[0].name,
                                     "image": "example/someone-elses:9"}]}}}})
        restored = lambda: _stable_deployment(lab, "edited").spec.template  # noqa: E731
        lab.wait_for(lambda: restored().spec.containers[0].image == intended
                     and restored().metadata.annotations == deployment.spec.template.metadata.annotations,
                     timeout=6, what="the intended template back (2 s interval)")
        lab.wait_for(lambda: _ready(lab, "edited")[0] == "True", timeout=10, what="Ready again")
    assert ("False", "Drift") in ready.values  # not Ready while its pods ran something else
    events = events_of(lab, "edited", "DriftCorrected")
    assert events and deployment.metadata.name in events[0].message and "image" in events[0].message


def test_an_edited_service_selector_is_restored_and_reported(lab):
    start_stable(lab, "reselected", **SAMPLED)
    stable_service = service_name("reselected", "stable")
    intended = _service(lab, stable_service).spec.selector
    lab.core.patch_namespaced_service(stable_service, "default", {"spec": {"selector": {LABEL_REVISION: "someone-elses"}}})
    lab.wait_for(lambda: _service(lab, stable_service).spec.selector == intended, timeout=6,
                 what="the intended selector back (2 s interval)")
    events = events_of(lab, "reselected", "DriftCorrected")
    assert events and stable_service in events[0].message and "someone-elses" in events[0].message
    # Ready was withheld (Applied=False, reason Drift) by the pass that restored it, and is back.
    lab.wait_for(lambda: events_of(lab, "reselected", "Drift"), timeout=5, what="the Drift warning")
    lab.wait_for(lambda: _ready(lab, "reselected")[0] == "True", timeout=10, what="Ready again")


def test_the_stable_deployment_edited_mid_release_is_restored_from_its_recorded_template(lab):
    """Mid-release the spec holds the canary's template only: the stable's comes from its Deployment."""
    v1 = start_stable(lab, "midedit", steps=[{"weight": 20, "hold": "60s"}], **SAMPLED)
    deployment = _stable_deployment(lab, "midedit")
    intended = deployment.spec.template.spec.containers[0].image
    lab.apply(scenarios.release(v1, "2.0.0"))
    lab.wait_for(lambda: lab.status("midedit").get("canaryWeight") == 20, timeout=30, what="the canary at 20 %")
    lab.apps.patch_namespaced_deployment(deployment.metadata.name, "default", {"spec": {"template": {"spec": {
        "containers": [{"name": deployment.spec.template.spec.containers[0].name, "image": "example/someone-elses:9"}]}}}})
    lab.wait_for(lambda: _stable_deployment(lab, "midedit").spec.template.spec.containers[0].image == intended,
                 timeout=6, what="the stable's template back (2 s interval)")
    events = events_of(lab, "midedit", "DriftCorrected")
    assert events and deployment.metadata.name in events[0].message
    assert lab.status("midedit")["phase"] == "Progressing"


def test_an_edited_route_weight_is_rewritten_and_reported(lab):
    v1 = start_stable(lab, "reweighed", router="gatewayAPI", steps=[{"weight": 20, "hold": "60s"}], **SAMPLED)
    lab.apply(scenarios.release(v1, "2.0.0"))
    lab.wait_for(lambda: route_canary_weight(lab, "reweighed") == 20, timeout=30, what="the canary at 20 %")
    lab.wait_for(lambda: lab.status("reweighed").get("canaryWeight") == 20, timeout=10, what="20 % confirmed")
    rule = _route(lab, "reweighed")["spec"]["rules"][0]
    for backend in rule["backendRefs"]:
        backend["weight"] = 50
    lab.custom.patch_namespaced_custom_object(*ROUTES[:3], ROUTES[3], "reweighed", {"spec": {"rules": [rule]}})
    with Recorder(lambda: route_canary_weight(lab, "reweighed")) as weights:
        lab.wait_for(lambda: route_canary_weight(lab, "reweighed") == 20, timeout=6, what="20 % again (2 s interval)")
    assert weights.values[0] == 50
    events = events_of(lab, "reweighed", "DriftCorrected")
    assert events and "50 %" in events[0].message and "20 %" in events[0].message
