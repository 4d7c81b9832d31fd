"""The kserve router against the emulated API server: only this rollout's predictor and its own
canary entry are written; everything else in the InferenceService stays as read."""

from __future__ import annotations

import copy
import time
from dataclasses import replace

import pytest

from modelrollout.kube import path
from modelrollout.names import LABEL_REVISION
from modelrollout.routers import RouteProblem, RouteTarget, router_for
from modelrollout.routers.kserve import KServeRouter, canary_name
from modelrollout.spec import PlatformPolicy, SpecError, parse_spec, template_revision
from modelrollout_lab.scenarios import inference_service, rollout
from modelrollout_lab.traffic import resolve_target

from lab_kube import with_kube

ISVCS = path("serving.kserve.io/v1beta1", "inferenceservices", "default")
POLICY = PlatformPolicy(prometheus_url="http://p:9090")
USER_CANARY = {"trafficPercent": 10, "predictor": {"name": "experimental",
                                                   "containers": [{"name": "m", "image": "example/experimental:1"}]}}


def _target(name, version, stable=None, canary=None):
    spec = parse_spec(rollout(name, router="kserve", version=version)["spec"], POLICY)
    return RouteTarget("default", name, f"uid-{name}", spec, stable_revision=stable or spec.revision,
                       canary_revision=canary)


def test_the_registry_picks_the_kserve_router_and_mirror_steps_are_refused():
    assert isinstance(router_for(_target("pick", "1.0.0").spec), KServeRouter)
    raw = rollout("pick", router="kserve", steps=[{"mirror": 100, "hold": "5s"}, {"weight": 50, "hold": "5s"}])
    with pytest.raises(SpecError) as info:
        parse_spec(raw["spec"], POLICY)
    assert info.value.field == "spec.strategy.steps[0].mirror"


def test_raw_deployment_canary_entry_beside_the_users_own_then_promotion_retargets(api):
    async def scenario(kube):
        isvc = inference_service("raw", "default", "RawDeployment")
        isvc["spec"]["canary"] = [copy.deepcopy(USER_CANARY)]
        await kube.create(ISVCS, isvc)
        router = KServeRouter()
        v1 = _target("raw", "1.0.0")
        await router.reconcile(kube, v1)  # the first revision becomes the predictor
        spec = (await kube.get(f"{ISVCS}/raw"))["spec"]
        assert spec["predictor"]["labels"][LABEL_REVISION] == v1.spec.revision
        assert spec["canary"] == [USER_CANARY] and spec["transformer"] == isvc["spec"]["transformer"]

        v2 = _target("raw", "2.0.0", stable=v1.spec.revision)
        v2 = replace(v2, canary_revision=v2.spec.revision)
        await router.reconcile(kube, v2)
        await router.set_weight(kube, v2, 25)
        spec = (await kube.get(f"{ISVCS}/raw"))["spec"]
        ours = spec["canary"][1]
        assert spec["canary"][0] == USER_CANARY  # the user's entry, as written
        assert ours["trafficPercent"] == 25 and ours["predictor"]["name"] == canary_name(v2.spec.revision)
        assert spec["predictor"]["labels"][LABEL_REVISION] == v1.spec.revision  # stable still serves the rest

        promoted = replace(v2, stable_revision=v2.spec.revision, canary_revision=None)
        await router.reconcile(kube, promoted)
        spec = (await kube.get(f"{ISVCS}/raw"))["spec"]
        assert spec["predictor"] == ours["predictor"]  # KServe's promotion: the stable name runs the canary's pods
        assert spec["canary"] == [USER_CANARY]

    with_kube(api, scenario)


def test_raw_deployment_rollback_removes_only_our_entry(api):
    async def scenario(kube):
        isvc = inference_service("rb", "default", "RawDeployment")
        isvc["spec"]["canary"] = [copy.deepcopy(USER_CANARY)]
        await kube.create(ISVCS, isvc)
        router, v1 = KServeRouter(), _target("rb", "1.0.0")
        await router.reconcile(kube, v1)
        v2 = replace(_target("rb", "2.0.0"), stable_revision=v1.spec.revision)
        await router.reconcile(kube, replace(v2, canary_revision=v2.spec.revision))
        rolled_back = replace(v2, canary_revision=None)
        await router.reconcile(kube, rolled_back)
        spec = (await kube.get(f"{ISVCS}/rb"))["spec"]
        assert spec["canary"] == [USER_CANARY]
        assert spec["predictor"]["labels"][LABEL_REVISION] == v1.spec.revision

    with_kube(api, scenario)


def test_serverless_split_pins_and_promotes_with_canary_traffic_percent(api):
    async def scenario(kube):
        await kube.create(ISVCS, inference_service("sl", "default"))
        router, v1 = KServeRouter(), _target("sl", "1.0.0")
        await router.reconcile(kube, v1)
        v2 = replace(_target("sl", "2.0.0"), stable_revision=v1.spec.revision)
        canary = replace(v2, canary_revision=v2.spec.revision)
        await router.reconcile(kube, canary)
        predictor = (await kube.get(f"{ISVCS}/sl"))["spec"]["predictor"]
        assert predictor["canaryTrafficPercent"] == 0 and predictor["labels"][LABEL_REVISION] == v2.spec.revision
        await router.set_weight(kube, canary, 30)
        assert (await kube.get(f"{ISVCS}/sl"))["spec"]["predictor"]["canaryTrafficPercent"] == 30
        assert await router.get_weight(kube, canary) is None  # KServe has not reported this generation yet
        await router.set_weight(kube, canary, 0)  # rollback: every request to the rolled-out revision
        assert (await kube.get(f"{ISVCS}/sl"))["spec"]["predictor"]["canaryTrafficPercent"] == 0
        promoted = replace(canary, stable_revision=v2.spec.revision, canary_revision=None)
        await router.set_weight(kube, promoted, 0)
        assert "canaryTrafficPercent" not in (await kube.get(f"{ISVCS}/sl"))["spec"]["predictor"]

    with_kube(api, scenario)


def test_a_serverless_promotion_is_confirmed_only_once_kserve_routes_everything_to_it(api):
    """Before, a predictor naming the stable revision read back as weight 0 whatever KServe routed:
    a promotion was confirmed while KServe still sent every request to an older model (its new
    revision not ready yet), and the next release's rollback went back to that older model."""
    async def scenario(kube):
        await kube.create(ISVCS, inference_service("confirm", "default"))
        router, v1 = KServeRouter(), _target("confirm", "1.0.0")
        await router.reconcile(kube, v1)
        v2 = replace(_target("confirm", "2.0.0"), stable_revision=v1.spec.revision)
        await router.reconcile(kube, replace(v2, canary_revision=v2.spec.revision))
        promoted = replace(v2, stable_revision=v2.spec.revision, canary_revision=None)
        await router.set_weight(kube, promoted, 0)
        isvc = await kube.get(f"{ISVCS}/confirm")
        status_path = f"{ISVCS}/confirm/status"

        async def kserve_reports(*traffic):
            await kube.merge_patch(status_path, {"status": {
                "observedGeneration": isvc["metadata"]["generation"],
                "components": {"predictor": {"traffic": [dict(t) for t in traffic]}}}})

        await kserve_reports({"revisionName": "confirm-predictor-00001", "percent": 100, "latestRevision": False},
                             {"revisionName": "confirm-predictor-00002", "percent": 0, "latestRevision": True})
        assert await router.get_weight(kube, promoted) is None  # the older model still serves
        await kserve_reports({"revisionName": "confirm-predictor-00002", "percent": 100, "latestRevision": True})
        assert await router.get_weight(kube, promoted) == 0

    with_kube(api, scenario)


def test_a_missing_inference_service_is_reported(api):
    async def scenario(kube):
        with pytest.raises(RouteProblem) as info:
            await KServeRouter().reconcile(kube, _target("nope", "1.0.0"))
        assert info.value.reason == "RouteNotFound"

    with_kube(api, scenario)



def _on(isvc, name, version):
    """A target of rollout `name` whose trafficRouting names InferenceService `isvc`."""
    raw = rollout(name, router="kserve", version=version)
    raw["spec"]["trafficRouting"] = {"kserve": {"inferenceService": isvc}}
    spec = parse_spec(raw["spec"], POLICY)
    return RouteTarget("default", name, f"uid-{name}", spec, stable_revision=spec.revision)


@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_a_second_rollout_on_the_same_inference_service_is_refused_and_writes_nothing(api, mode):
    """The predictor runs rollout `first`'s model: rollout `second` naming the same InferenceService
    must not replace it, move its traffic or pin it at deletion."""
    isvc = f"shared-{mode.lower()}"

    async def scenario(kube):
        await kube.create(ISVCS, inference_service(isvc, "default", mode))
        router = KServeRouter()
        await router.reconcile(kube, _on(isvc, "first", "1.0.0"))
        before = await kube.get(f"{ISVCS}/{isvc}")
        second = _on(isvc, "second", "2.0.0")
        second = replace(second, canary_revision=second.spec.revision)
        for act in (router.reconcile(kube, second), router.set_weight(kube, second, 30), router.get_weight(kube, second),
                    router.handed_over(kube, second)):
            with pytest.raises(RouteProblem) as info:
                await act
            assert info.value.reason == "InferenceServiceInUse" and "first" in str(info.value)
        await router.finalize(kube, second)
        assert (await kube.get(f"{ISVCS}/{isvc}"))["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    with_kube(api, scenario)


async def _kserve_reports(kube, name, ready, **predictor_status):
    """KServe's status for the InferenceService's current spec."""
    isvc = await kube.get(f"{ISVCS}/{name}")
    await kube.merge_patch(f"{ISVCS}/{name}/status", {"status": {
        "observedGeneration": isvc["metadata"]["generation"], "components": {"predictor": predictor_status},
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}})
    return await kube.get(f"{ISVCS}/{name}")


async def _kserve_reports_ready(kube, name):
    """Ready: its model serving users."""
    return await _kserve_reports(kube, name, True)


@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_a_model_not_reported_serving_is_waited_for_not_replaced_unless_kserve_says_it_never_served(api, mode):
    """Before, the first rollout took "not Ready for the current generation" at one read as "no
    users": a status that lagged behind a user's edit, or a Ready that flickered, had the template
    replace a serving model at once, unjudged (seen in CI: the bad model served every request).
    Now only KServe's word that no model of it ever served (Serverless: nothing rolled out) lets the
    template take its place at once; otherwise the model is awaited (`serving` False)."""
    name = f"flicker-{mode.lower()}"

    async def scenario(kube):
        await kube.create(ISVCS, inference_service(name, "default", mode))
        router, first = KServeRouter(), _on(name, name, "1.0.0")
        users_model = (await kube.get(f"{ISVCS}/{name}"))["spec"]["predictor"]
        awaited = await router.handed_over(kube, first)  # KServe has not reported on it yet
        assert awaited is not None and awaited.revision == template_revision(users_model) and not awaited.serving

        await _kserve_reports_ready(kube, name)
        assert (await router.handed_over(kube, first)).serving
        isvc = await kube.get(f"{ISVCS}/{name}")  # the user edits another part: KServe's status lags behind
        isvc["spec"]["transformer"]["containers"][0]["image"] = "example/feature-transformer:4"
        await kube.replace(f"{ISVCS}/{name}", isvc)
        lagging = await router.handed_over(kube, first)
        assert lagging is not None and lagging.revision == template_revision(users_model) and not lagging.serving

        rolled_out = {"latestRolledoutRevision": f"{name}-predictor-00001"} if mode == "Serverless" else {}
        await _kserve_reports(kube, name, False, **rolled_out)  # Ready flickers False
        flickered = await router.handed_over(kube, first)
        assert flickered is not None and flickered.revision == template_revision(users_model)
        assert flickered.serving is (mode == "Serverless")  # KServe rolled it out: it has served

        if mode == "Serverless":  # KServe says nothing of it was ever rolled out: nobody to keep serving
            await _kserve_reports(kube, name, False, latestRolledoutRevision=None)
            assert await router.handed_over(kube, first) is None

    with_kube(api, scenario)


@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_the_model_an_inference_service_serves_is_adopted_and_never_replaced_unjudged(api, mode):
    """The InferenceService serves a model of its own (a predictor no rollout wrote). Before, the
    first rollout's template replaced it at once; now it is the stable revision the first rollout
    adopts, and the router refuses to put the template in its place other than as a canary."""
    name = f"own-{mode.lower()}"

    async def scenario(kube):
        await kube.create(ISVCS, inference_service(name, "default", mode))
        router, first = KServeRouter(), _on(name, name, "1.0.0")
        users_model = (await _kserve_reports_ready(kube, name))["spec"]["predictor"]
        adopted = await router.handed_over(kube, first)
        assert adopted is not None and adopted.revision == template_revision(users_model)
        assert f"InferenceService default/{name}" in adopted.origin

        before = await kube.get(f"{ISVCS}/{name}")
        with pytest.raises(RouteProblem) as info:  # the template as stable, in the model's place: refused
            await router.reconcile(kube, first)
        assert info.value.reason == "InferenceServiceNotAdopted"
        assert (await kube.get(f"{ISVCS}/{name}"))["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

        canary = replace(first, stable_revision=adopted.revision, canary_revision=first.spec.revision)
        await router.reconcile(kube, canary)
        await router.set_weight(kube, canary, 20)
        spec = (await kube.get(f"{ISVCS}/{name}"))["spec"]
        if mode == "RawDeployment":  # the model keeps serving from spec.predictor, the template is a canary entry
            assert spec["predictor"] == users_model
            assert [e["trafficPercent"] for e in spec["canary"]] == [20]
        else:  # KServe splits between the rolled-out model and the canary predictor
            assert spec["predictor"]["labels"][LABEL_REVISION] == first.spec.revision
            assert spec["predictor"]["canaryTrafficPercent"] == 20
        assert spec["transformer"] == before["spec"]["transformer"]

    with_kube(api, scenario)


def test_a_recreated_rollout_adopts_the_users_model_a_pinned_split_still_serves(api):
    """Serverless: a rollout that adopted the users' model was deleted during its canary, which left
    its template pinned at 0 % and the users' model (KServe's rolled-out revision, no rollout's)
    serving. Before, re-created with the same template it found nothing to adopt, so its template
    became stable and the pin was removed: every user on a model never judged."""
    async def scenario(kube):
        await kube.create(ISVCS, inference_service("pinned", "default"))
        users_model = (await _kserve_reports_ready(kube, "pinned"))["spec"]["predictor"]
        router, target = KServeRouter(), _on("pinned", "pinned", "2.0.0")
        canary = replace(target, stable_revision=template_revision(users_model), canary_revision=target.spec.revision)
        await router.reconcile(kube, canary)
        await router.finalize(kube, canary)  # deleted: the split pinned at 0 %
        isvc = await kube.get(f"{ISVCS}/pinned")
        assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0
        await kube.merge_patch(f"{ISVCS}/pinned/status", {"status": {
            "observedGeneration": isvc["metadata"]["generation"],
            "components": {"predictor": {"traffic": [
                {"revisionName": "pinned-predictor-00001", "percent": 100, "latestRevision": False},
                {"revisionName": "pinned-predictor-00002", "percent": 0, "latestRevision": True}]}}}})
        recreated = replace(target, ready={target.spec.revision: 2})  # the pinned template's pods are Ready
        adopted = await router.handed_over(kube, recreated)
        assert adopted is not None and adopted.revision == "pinned-predictor-00001" and adopted.serving
        assert "InferenceService default/pinned" in adopted.origin
        # KServe's Ready flickers False (the pinned revision's pods restart): the model KServe routes
        # every request to still serves. Before, it was then not adopted and the template replaced it.
        await kube.merge_patch(f"{ISVCS}/pinned/status", {"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
        flickered = await router.handed_over(kube, recreated)
        assert flickered is not None and flickered.revision == "pinned-predictor-00001" and flickered.serving

    with_kube(api, scenario)


def test_a_canary_entry_of_another_rollout_claims_the_inference_service(api):
    """RawDeployment keeps the users' model in spec.predictor while a rollout's canary runs as an
    entry: a second rollout naming the same InferenceService must not adopt it and add its own."""
    async def scenario(kube):
        await kube.create(ISVCS, inference_service("claimed", "default", "RawDeployment"))
        await _kserve_reports_ready(kube, "claimed")
        router, first = KServeRouter(), _on("claimed", "first", "1.0.0")
        adopted = await router.handed_over(kube, first)
        await router.reconcile(kube, replace(first, stable_revision=adopted.revision,
                                             canary_revision=first.spec.revision))
        before = await kube.get(f"{ISVCS}/claimed")
        second = _on("claimed", "second", "2.0.0")
        for act in (router.handed_over(kube, second), router.reconcile(kube, second), router.get_weight(kube, second)):
            with pytest.raises(RouteProblem) as info:
                await act
            assert info.value.reason == "InferenceServiceInUse" and "first" in str(info.value)
        assert (await kube.get(f"{ISVCS}/claimed"))["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    with_kube(api, scenario)


def test_a_serverless_canary_of_the_users_own_is_refused_and_left_alone(api):
    """The user splits traffic themselves (`canaryTrafficPercent` on their predictor): which model is
    stable is theirs to settle; the rollout writes nothing and says why."""
    async def scenario(kube):
        isvc = inference_service("split", "default")
        isvc["spec"]["predictor"]["canaryTrafficPercent"] = 10
        await kube.create(ISVCS, isvc)
        before = await _kserve_reports_ready(kube, "split")
        router, target = KServeRouter(), _on("split", "split", "1.0.0")
        for act in (router.handed_over(kube, target), router.reconcile(kube, target), router.set_weight(kube, target, 0)):
            with pytest.raises(RouteProblem) as info:
                await act
            assert info.value.reason == "InferenceServiceInCanary" and "canaryTrafficPercent: 10" in str(info.value)
        await router.finalize(kube, target)
        assert (await kube.get(f"{ISVCS}/split"))["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    with_kube(api, scenario)


def test_gate_addresses_wait_for_the_canarys_tagged_url(api):
    """Serverless with tag routing: until KServe reports the canary's own URL there is nothing to
    hand a gate (None: the Job is not created yet, rather than created without CANARY_SERVICE)."""
    async def scenario(kube):
        await kube.create(ISVCS, inference_service("tagged", "default"))
        router, v1 = KServeRouter(), _on("tagged", "tagged", "1.0.0")
        canary = replace(_on("tagged", "tagged", "2.0.0"), stable_revision=v1.spec.revision)
        canary = replace(canary, canary_revision=canary.spec.revision)
        await router.reconcile(kube, canary)
        generation = (await kube.get(f"{ISVCS}/tagged"))["metadata"]["generation"]
        prev = {"revisionName": "tagged-predictor-00001", "percent": 100, "latestRevision": False, "tag": "prev",
                "url": "http://prev-tagged-predictor.default.example.com"}
        latest = {"revisionName": "tagged-predictor-00002", "percent": 0, "latestRevision": True, "tag": "latest",
                  "url": "http://latest-tagged-predictor.default.example.com"}
        for traffic, wanted in (([prev], None), ([prev, latest], {"stable": "prev-tagged-predictor.default.example.com",
                                                                  "canary": "latest-tagged-predictor.default.example.com"})):
            await kube.merge_patch(f"{ISVCS}/tagged/status", {"status": {
                "observedGeneration": generation, "components": {"predictor": {"traffic": traffic}}}})
            assert await router.addresses(kube, canary) == wanted

    with_kube(api, scenario)


def test_traffic_simulator_routes_by_the_split_kserve_reports():
    """The lab routes an InferenceService's requests by status.components.predictor.traffic; a
    revision without a Ready pod gets nothing (its share is unrouted), as Knative would not serve it."""
    isvc = {"status": {"components": {"predictor": {"traffic": [
        {"revisionName": "sim-predictor-00001", "percent": 70, "latestRevision": False},
        {"revisionName": "sim-predictor-00002", "percent": 30, "latestRevision": True}]}}}}
    deployments = {("default", name): {"metadata": {"name": name}, "status": {"readyReplicas": ready}}
                   for name, ready in (("sim-predictor-00001-deployment", 2), ("sim-predictor-00002-deployment", 1))}
    kwargs = dict(routes={}, services={}, inference_services={("default", "sim"): isvc})
    assert resolve_target("default", "inferenceservice/sim", deployments=deployments, **kwargs) == {
        ("default", "sim-predictor-00001-deployment"): 0.7, ("default", "sim-predictor-00002-deployment"): 0.3}
    deployments[("default", "sim-predictor-00002-deployment")]["status"]["readyReplicas"] = 0
    assert resolve_target("default", "inferenceservice/sim", deployments=deployments, **kwargs) == {
        ("default", "sim-predictor-00001-deployment"): 0.7}


def test_one_inference_service_the_lab_cannot_sync_never_holds_back_the_others(api):
    """The lab's KServe reconciles each InferenceService on its own, as a real controller does: one
    it fails on (here a malformed minReplicas, listed first) no longer stops it syncing the rest
    every tick, which left a rollout on a later one waiting for a status that never came."""
    from modelrollout_lab.kserve import KServeSimulator

    broken = inference_service("a-unsyncable", "default", "RawDeployment")
    broken["spec"]["predictor"]["minReplicas"] = "two"
    good = inference_service("b-synced", "default", "RawDeployment")

    async def create(kube):
        for isvc in (broken, good):
            await kube.create(ISVCS, isvc)

    with_kube(api, create)
    simulator = KServeSimulator(api, tick=0.05).start()
    seen = []

    async def read_status(kube):
        seen.append((await kube.get(f"{ISVCS}/b-synced")).get("status"))

    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (seen and seen[-1]):
            with_kube(api, read_status)
            time.sleep(0.1)
        assert seen and seen[-1], "the lab's KServe never synced the second InferenceService"
    finally:
        simulator.stop()


def test_a_serverless_revision_runs_in_knatives_deployment_which_the_operator_observes(api):
    """Knative, not KServe, creates a Serverless revision's Deployment: `<revision>-deployment`,
    owned by the Revision (knative/serving pkg/reconciler/revision/resources/deploy.go
    MakeDeployment). The operator observed only Deployments owned by an InferenceService, so it never
    saw KServe's pods: a first revision stayed Initializing and every canary timed out."""
    from modelrollout.handlers import _run_for_a_rollout
    from modelrollout_lab.kserve import KServeSimulator

    router, v1 = KServeRouter(), _target("knative", "1.0.0")

    async def create(kube):
        await kube.create(ISVCS, inference_service("knative", "default", "Serverless"))
        await router.reconcile(kube, v1)

    with_kube(api, create)
    simulator = KServeSimulator(api, tick=0.05).start()
    found = []

    async def read_deployments(kube):
        found[:] = await kube.list(path("apps/v1", "deployments", "default"),
                                   label_selector="serving.kserve.io/inferenceservice=knative")

    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not found:
            with_kube(api, read_deployments)
            time.sleep(0.1)
    finally:
        simulator.stop()
    [deployment] = found
    meta = deployment["metadata"]
    assert meta["name"] == "knative-predictor-00001-deployment"
    assert [(ref["kind"], ref["name"]) for ref in meta["ownerReferences"]] == [("Revision", "knative-predictor-00001")]
    assert meta["labels"][LABEL_REVISION] == v1.spec.revision
    assert _run_for_a_rollout(meta)
