"""Drift (issue 22): what the API server adds is no drift; what a user edits is, and is put back."""

import copy

import pytest

from modelrollout.manifests import pod_template, template_drift, template_restore_patch
from modelrollout.spec import PlatformPolicy, parse_spec
from modelrollout.workloads import ObservedDeployment, runs_its_revision
from modelrollout_lab import scenarios
from modelrollout_lab.apiserver_logic import merge_patch

INTENDED = {"metadata": {"labels": {"app": "m"}, "annotations": {"a": "1"}},
            "spec": {"containers": [{"name": "server", "image": "example/m:2", "env": [{"name": "X", "value": "1"}]}]}}
DEFAULTED = {"metadata": {"labels": {"app": "m"}, "annotations": {"a": "1"}},
             "spec": {"containers": [{"name": "server", "image": "example/m:2", "env": [{"name": "X", "value": "1"}],
                                      "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log"}],
                      "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"}}


def _edited(path, value):
    edited = copy.deepcopy(DEFAULTED)
    *parents, last = path
    target = edited
    for key in parents:
        target = target[key]
    target[last] = value
    return edited


def test_the_api_servers_defaults_are_no_drift():
    assert template_drift(INTENDED, DEFAULTED) is None


def _with_resources(resources):
    template = copy.deepcopy(INTENDED)
    template["spec"]["containers"][0]["resources"] = resources
    return template


def test_quantities_the_api_server_rewrote_into_canonical_form_are_no_drift():
    """A real API server stores `cpu: 0.5` as `500m`, `memory: 1024Mi` as `1Gi` and `cpu: 1` as "1": the
    same amounts, so no DriftCorrected every pass and Ready is not withheld for ever."""
    written = _with_resources({"limits": {"cpu": "0.5", "memory": "1024Mi"}, "requests": {"cpu": 1}})
    stored = _with_resources({"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "1"}})
    assert template_drift(written, stored) is None
    edited = _with_resources({"limits": {"cpu": "600m", "memory": "1Gi"}, "requests": {"cpu": "1"}})
    assert template_drift(written, edited) == "template.spec.containers[0].resources.limits.cpu"


@pytest.mark.parametrize("path, value, where", [
    (("spec", "containers", 0, "image"), "example/other:9", "template.spec.containers[0].image"),
    (("metadata", "annotations"), {"a": "1", "lab.modelrollout.io/error-rate": "0.4"}, "template.metadata.annotations"),
    (("metadata", "labels"), {}, "template.metadata.labels"),
    (("spec", "containers", 0, "env"), [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
     "template.spec.containers[0].env"),
    (("spec", "containers"), [], "template.spec.containers"),
])
def test_an_edit_is_drift_and_says_where(path, value, where):
    assert template_drift(INTENDED, _edited(path, value)) == where


def test_the_restore_patch_puts_the_intended_template_back_over_any_edit():
    edited = _edited(("metadata", "annotations"), {"a": "2", "lab.modelrollout.io/error-rate": "0.4"})
    edited["spec"]["containers"][0]["image"] = "example/other:9"
    edited["spec"]["containers"].append({"name": "sidecar", "image": "example/sidecar:1"})
    restored = merge_patch({"spec": {"template": edited}}, template_restore_patch(INTENDED, edited))
    assert template_drift(INTENDED, restored["spec"]["template"]) is None


def test_a_revision_becomes_stable_only_once_every_pod_runs_its_template():
    spec = parse_spec(scenarios.rollout("m")["spec"], PlatformPolicy(prometheus_url="http://prom:9090"))
    intended = pod_template(spec, "m")

    def observed(template, rolled_out=True):
        return ObservedDeployment("m-x", 4, 4, True, template=template, recorded_template=None, rolled_out=rolled_out)
    assert runs_its_revision(spec, "m", spec.revision, observed(intended))
    edited = copy.deepcopy(intended)
    edited["spec"]["containers"][0]["image"] = "example/other:9"
    assert not runs_its_revision(spec, "m", spec.revision, observed(edited))
    assert not runs_its_revision(spec, "m", spec.revision, observed(intended, rolled_out=False))  # restored, rolling
