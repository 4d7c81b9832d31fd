"""The kserve router with the real operator in the lab's KServe: in both deployment modes a good
model is promoted the way KServe promotes, a bad one rolled back to the previous model, the
InferenceService's other parts unchanged, and traffic still served after deleting the rollout."""

from __future__ import annotations

import pytest

from lab_watch import Recorder, apply_all, events_of, recreate_with_a_bad_model, start_stable
from modelrollout.names import LABEL_REVISION
from modelrollout.spec import template_revision
from modelrollout_lab import scenarios

pytestmark = pytest.mark.lab

SAMPLED = {"rps": 400, "min_samples": 300}
ISVC = ("serving.kserve.io", "v1beta1", "default", "inferenceservices")
MODES = ["Serverless", "RawDeployment"]


def _isvc(lab, name):
    return lab.custom.get_namespaced_custom_object(*ISVC, name)


def _served_by_revision(lab, name):
    """Requests served so far per rollout revision (KServe's pods carry the rollout's labels)."""
    totals = {}
    for totals_of_one in lab.traffic.snapshot().values():
        if totals_of_one.get("rollout") == name:
            revision = totals_of_one["revision"]
            totals[revision] = totals.get(revision, 0) + totals_of_one["requests"]
    return totals


def _keeps_serving(lab, name, revision):
    """The revision serves more requests within a few seconds (the simulators poll)."""
    before = _served_by_revision(lab, name).get(revision, 0)
    return lab.wait_for(lambda: _served_by_revision(lab, name).get(revision, 0) > before + 50, timeout=30,
                        what=f"revision {revision} to serve")


def _split(lab, name):
    """The split KServe reports, as (revision of the latest, its percent)."""
    traffic = _isvc(lab, name).get("status", {}).get("components", {}).get("predictor", {}).get("traffic") or []
    return tuple(sorted((t["revisionName"], t["percent"]) for t in traffic))


def _canary_percent(lab, name):
    isvc = _isvc(lab, name)
    spec = isvc["spec"]
    if spec.get("canary") is not None or isvc["metadata"].get("annotations"):
        return sum(int(e.get("trafficPercent") or 0) for e in spec.get("canary") or [])
    return spec["predictor"].get("canaryTrafficPercent")


@pytest.mark.parametrize("mode", MODES)
def test_good_model_promoted_bad_one_rolled_back_other_parts_untouched(lab, mode):
    name = f"isvc-{mode.lower()}"
    v1 = start_stable(lab, name, router="kserve", kserve_mode=mode, **SAMPLED)
    stable = lab.status(name)["stableRevision"]
    transformer = _isvc(lab, name)["spec"]["transformer"]
    with Recorder(lambda: _canary_percent(lab, name)) as percents:
        v2 = scenarios.release(v1, "2.0.0")
        lab.apply(v2)
        promoted = lab.wait_for(lambda: (s := lab.status(name)).get("phase") == "Succeeded"
                                and (s.get("history") or [{}])[0].get("result") == "Promoted" and s,
                                timeout=90, what="promotion")
    assert promoted["stableRevision"] != stable
    spec = _isvc(lab, name)["spec"]
    assert spec["predictor"]["labels"][LABEL_REVISION] == promoted["stableRevision"]  # KServe's promotion
    assert "canaryTrafficPercent" not in spec["predictor"] and not spec.get("canary")
    assert [p for p in percents.values if p] == [20, 50]  # the steps, as KServe's traffic field

    lab.apply(scenarios.release(v2, "3.0.0", {"error-rate": "0.2"}))
    status = lab.wait_for_phase(name, "RolledBack", timeout=60)
    assert "error-rate" in status["message"] and status["stableRevision"] == promoted["stableRevision"]
    lab.wait_for(lambda: _canary_percent(lab, name) in (0, None), timeout=10, what="all traffic on the previous model")
    bad = status["history"][0]["revision"]
    lab.wait_for(lambda: not any(t.get("fraction") for t in lab.traffic.snapshot().values() if t.get("revision") == bad),
                 timeout=15, what="the traffic simulator to route by the rolled-back split")
    served_bad = _served_by_revision(lab, name).get(bad, 0)
    _keeps_serving(lab, name, promoted["stableRevision"])
    assert _served_by_revision(lab, name).get(bad, 0) == served_bad  # not one more request to the bad model
    assert _isvc(lab, name)["spec"]["transformer"] == transformer
    assert _isvc(lab, name)["metadata"]["labels"] == {"team": "ml"}


@pytest.mark.parametrize("mode", MODES)
def test_deleting_the_rollout_keeps_the_inference_service_serving(lab, mode):
    name = f"isvc-gone-{mode.lower()}"
    v1 = start_stable(lab, name, router="kserve", kserve_mode=mode, **SAMPLED, steps=[{"weight": 40, "hold": "60s"}])
    stable = lab.status(name)["stableRevision"]
    lab.apply(scenarios.release(v1, "2.0.0"))
    lab.wait_for(lambda: _canary_percent(lab, name) == 40, timeout=60, what="weight 40")
    lab.delete_rollout(name)
    lab.wait_for(lambda: not lab.status(name), timeout=30, what="the rollout to go")
    lab.wait_for(lambda: _canary_percent(lab, name) in (0, None), timeout=10, what="the canary's share gone")
    unrouted = lab.traffic.unrouted().get(f"default/{name}-traffic", 0)
    _keeps_serving(lab, name, stable)
    assert lab.traffic.unrouted().get(f"default/{name}-traffic", 0) == unrouted

    recreate_with_a_bad_model(lab, v1, stable)
    lab.wait_for(lambda: _canary_percent(lab, name) in (0, None), timeout=10, what="all traffic on the adopted model")
    _keeps_serving(lab, name, stable)
    assert lab.traffic.unrouted().get(f"default/{name}-traffic", 0) == unrouted


def _share_of(lab, predicate):
    """The current share of the users' requests of the Deployments `predicate` picks."""
    return sum(t.get("fraction") or 0.0 for t in lab.traffic.snapshot().values() if predicate(t))


def _served_by_deployment(lab, deployment):
    return (lab.traffic.snapshot().get(f"default/{deployment}") or {}).get("requests", 0)


@pytest.mark.parametrize("mode", MODES)
def test_the_first_rollout_on_a_serving_inference_service_releases_its_template_as_a_canary(lab, mode):
    """An InferenceService the user created serves model X; a ModelRollout whose template is Y is
    applied. Before, Y replaced X at once for every user, never judged. Now X is adopted as stable,
    a bad Y is judged at the first step's weight and rolled back while X keeps serving, and a good
    Z then goes through the steps and is promoted the way KServe promotes."""
    name = f"isvc-own-{mode.lower()}"
    entry, isvc, manifest = scenarios.manifests(name, router="kserve", kserve_mode=mode, kserve_serving=True,
                                                   **SAMPLED)
    apply_all(lab, [entry, isvc])
    users_model = lab.wait_for(lambda: next((t["deployment"] for t in lab.traffic.snapshot().values()
                                             if t["deployment"].startswith(name) and t.get("fraction") == 1.0), None),
                               timeout=30, what="the InferenceService to serve its own model")
    transformer, labels = isvc["spec"]["transformer"], isvc["metadata"]["labels"]

    bad = scenarios.release(manifest, "2.0.0", {"error-rate": "0.2"})
    bad_revision = template_revision(bad["spec"]["template"])
    with Recorder(lambda: round(_share_of(lab, lambda t: t.get("revision") == bad_revision), 2)) as bad_shares:
        lab.apply(bad)
        status = lab.wait_for(lambda: (s := lab.status(name)).get("phase") in ("RolledBack", "Succeeded") and s,
                              timeout=90, what="a verdict on the bad model")
    assert max(bad_shares.values) <= 0.2, f"the bad model served shares {bad_shares.values} (the first step is 20 %)"
    assert status["phase"] == "RolledBack" and "error-rate" in status["message"]
    lab.wait_for(lambda: _share_of(lab, lambda t: t.get("revision") == bad_revision) == 0, timeout=15,
                 what="no traffic to the bad model")
    adopted = status["stableRevision"]
    assert adopted != bad_revision and status["history"][0]["revision"] == bad_revision
    assert any(e.message and adopted in e.message for e in events_of(lab, name, "Adopted"))
    served = _served_by_deployment(lab, users_model)
    lab.wait_for(lambda: _served_by_deployment(lab, users_model) > served + 50, timeout=30,
                 what="the users' model to keep serving")

    with Recorder(lambda: _canary_percent(lab, name)) as percents:
        good = scenarios.release(manifest, "3.0.0")
        lab.apply(good)
        promoted = lab.wait_for(lambda: (s := lab.status(name)).get("phase") == "Succeeded"
                                and (s.get("history") or [{}])[0].get("result") == "Promoted" and s,
                                timeout=90, what="promotion")
    assert promoted["stableRevision"] == template_revision(good["spec"]["template"])
    assert [p for p in percents.values if p] == [20, 50]  # the steps, as KServe's traffic field
    lab.wait_for(lambda: _share_of(lab, lambda t: t.get("revision") == promoted["stableRevision"]) == 1.0,
                 timeout=30, what="the promoted model to serve every request")
    after = _isvc(lab, name)
    assert after["spec"]["transformer"] == transformer and after["metadata"]["labels"] == labels
