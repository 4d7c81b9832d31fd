"""`kubectl modelrollout` steers a rollout without editing its spec: promote, pause, resume, abort, retry, explain.

Every command line is written in kubectl's order: the command, then its arguments, then the kube options.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml
from click.testing import CliRunner

from lab_watch import events_of, start_stable
from modelrollout_lab import scenarios
from modelrollout.core import command_value
from modelrollout.names import LABEL_REVISION, LABEL_ROLLOUT
from modelrollout.plugin import EXIT_ROLLOUT_FAILED, EXIT_TIMED_OUT
from modelrollout.plugin import main as plugin

pytestmark = pytest.mark.lab


def run(lab, *args, kubeconfig=None):
    return CliRunner().invoke(plugin, [*args, "--kubeconfig", kubeconfig or lab.kubeconfig], catch_exceptions=False)


def kubectl_modelrollout(lab, *args, kubeconfig=None):
    result = run(lab, *args, kubeconfig=kubeconfig)
    assert result.exit_code == 0, result.output
    return result.output


def test_manual_gate_pause_resume_and_promote_without_touching_the_spec(lab):
    v1 = start_stable(lab, "gated", rps=300, min_samples=100, replicas=4, steps=[{"weight": 25}, {"weight": 50, "hold": "3s"}])
    lab.apply(scenarios.release(v1, "2.0.0"))
    status = lab.wait_for(lambda: (s := lab.status("gated")).get("phase") == "Paused" and s, timeout=60,
                          what="the manual gate")
    generation = lab.rollout("gated")["metadata"]["generation"]
    assert status["currentStep"] == 0 and "waits for promote" in status["message"]

    kubectl_modelrollout(lab, "pause", "gated")
    lab.wait_for(lambda: "paused by user" in lab.status("gated").get("message", ""), timeout=20, what="pause")
    kubectl_modelrollout(lab, "promote", "gated")  # a promote while paused waits for resume
    kubectl_modelrollout(lab, "resume", "gated", "-n", "default")
    # --watch --exit-status follows the rollout until it settles, as a deploy script would.
    watched = kubectl_modelrollout(lab, "get", "gated", "--watch", "--exit-status", "--timeout", "60")
    assert "default/gated: Succeeded" in watched.split("\n\n")[-2]
    status = lab.status("gated")
    assert status["phase"] == "Succeeded" and status["history"][0]["result"] == "Promoted"
    assert lab.rollout("gated")["metadata"]["generation"] == generation  # the spec was never written
    assert "Promoted" in kubectl_modelrollout(lab, "explain", "gated")


def test_abort_then_retry(lab):
    v1 = start_stable(lab, "steer", rps=300, min_samples=100, replicas=4, steps=[{"weight": 25, "hold": "60s"}])
    lab.apply(scenarios.release(v1, "2.0.0"))
    lab.wait_for(lambda: lab.status("steer").get("canaryWeight") == 25, timeout=60, what="step 0")
    # A deploy script waiting for the release: still holding when the wait times out is not a success.
    waited = run(lab, "get", "steer", "--watch", "--exit-status", "--timeout", "2")
    assert waited.exit_code == EXIT_TIMED_OUT, waited.output
    assert "timed out after 2s waiting for default/steer to settle (Progressing)" in waited.output
    kubectl_modelrollout(lab, "abort", "steer")
    status = lab.wait_for_phase("steer", "RolledBack", timeout=20)
    assert "aborted by user" in status["message"]
    # The weight the route carries, read back a moment after the decision (written before acting).
    lab.wait_for(lambda: lab.status("steer").get("canaryWeight") == 0, timeout=5, what="canary weight 0")
    failed = run(lab, "get", "steer", "--exit-status")
    assert failed.exit_code == EXIT_ROLLOUT_FAILED and "default/steer: RolledBack" in failed.output
    kubectl_modelrollout(lab, "retry", "steer")
    status = lab.wait_for(lambda: (s := lab.status("steer")).get("canaryWeight") == 25 and s, timeout=60,
                          what="the retried canary")
    assert status["canaryRevision"] == status["history"][0]["revision"]
    out = kubectl_modelrollout(lab, "get", "steer")
    assert "steer: Progressing" in out and "weight 25%" in out


def test_a_promote_left_from_a_rolled_back_release_never_skips_a_step_of_the_next_one(lab):
    """The bug seen in the lab: a promote sent to a RolledBack rollout was kept and skipped the next
    release's step 0 (promote --full made it stable unjudged)."""
    v1 = start_stable(lab, "stale", rps=300, min_samples=100, replicas=4,
                      steps=[{"weight": 25, "hold": "30s"}, {"weight": 50, "hold": "30s"}])
    lab.apply(scenarios.release(v1, "2.0.0"))
    lab.wait_for(lambda: lab.status("stale").get("canaryWeight") == 25, timeout=60, what="step 0 of 2.0.0")
    kubectl_modelrollout(lab, "abort", "stale")
    v2 = lab.wait_for_phase("stale", "RolledBack", timeout=20)["abortedRevision"]
    # What the plugin wrote for 2.0.0 (a script that ran late), and what a GitOps tool carries.
    lab.patch_rollout("stale", {"metadata": {"annotations": {
        "modelrollout.io/promote": command_value(v2, 0, "late"), "modelrollout.io/promote-full": "now"}}})
    lab.patch_rollout("stale", {"spec": scenarios.release(v1, "3.0.0")["spec"]})  # kubectl apply keeps annotations
    lab.wait_for(lambda: (s := lab.status("stale")).get("canaryWeight") == 25 and s.get("canaryRevision") != v2,
                 timeout=60, what="step 0 of 3.0.0")
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:  # step 0 holds its 30s: nothing promotes it
        status = lab.status("stale")
        seen = (status["phase"], status.get("currentStep"), status.get("canaryWeight"))
        assert seen == ("Progressing", 0, 25), status
        time.sleep(0.2)
    said = sorted(e.message for e in events_of(lab, "stale", "CommandIgnored"))
    assert said == ["promote --full 'now' ignored: it names no release (write revision=<revision>,id=<new token>)",
                    f"promote for revision {v2} step 0 ignored: revision {v2} was rolled back"], said
    # The plugin refuses what it cannot do, with a non-zero exit.
    lab.patch_rollout("stale", {"spec": v1["spec"]})  # back to the stable revision: Succeeded
    lab.wait_for_phase("stale", "Succeeded", timeout=30)
    for command in (["promote"], ["promote", "--full"], ["abort"], ["retry"]):
        refused = run(lab, *command, "stale")
        assert refused.exit_code == 1 and "stale: nothing to" in refused.output and "(phase Succeeded" in \
            refused.output, refused.output


@pytest.mark.parametrize("router", ["gatewayAPI", "istio", "kserve"])
def test_get_shows_the_tree_of_revisions_as_the_cluster_has_them(lab, router):
    """Route weights as the HTTPRoute, the VirtualService or the InferenceService carries them."""
    name = f"treed-{router.lower()}"
    v1 = start_stable(lab, name, router=router, rps=300, min_samples=100, steps=[{"weight": 30, "hold": "60s"}])
    lab.apply(scenarios.release(v1, "2.0.0"))
    status = lab.wait_for(lambda: (s := lab.status(name)).get("canaryWeight") == 30 and s.get("lastAnalysis") and s,
                          timeout=60, what="step 0 with an analysis")
    out = kubectl_modelrollout(lab, "get", name, "-n", "default")
    deployments = {d.metadata.labels[LABEL_REVISION]: d for d in
                   lab.apps.list_namespaced_deployment("default", label_selector=f"{LABEL_ROLLOUT}={name}").items}
    for role, weight in (("stable", 70), ("canary", 30)):
        revision = status[f"{role}Revision"]
        ready = deployments[revision].status.ready_replicas or 0
        line = next(line for line in out.splitlines() if f"revision {revision}" in line)
        assert f"{role}  ready {ready}/{deployments[revision].spec.replicas}  route weight {weight}%" in line, out
    assert "analysis at" in out and all(r["metric"] in out for r in status["lastAnalysis"])


def test_list_and_get_across_namespaces_contexts_and_output_formats(lab, tmp_path):
    start_stable(lab, "listed")
    lab.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}})
    # Steps that go down are invalid: the rollout stops in InvalidSpec (a failed rollout for --exit-status).
    lab.apply(scenarios.rollout("broken", namespace="ml", steps=[{"weight": 50}, {"weight": 10}]))
    lab.wait_for_phase("broken", "InvalidSpec", namespace="ml", timeout=30)

    everywhere = kubectl_modelrollout(lab, "list", "-A").splitlines()
    assert everywhere[0].split()[:3] == ["NAMESPACE", "NAME", "PHASE"]
    rows = {tuple(line.split()[:3]) for line in everywhere[1:]}
    assert {("default", "listed", "Succeeded"), ("ml", "broken", "InvalidSpec")} <= rows
    here = kubectl_modelrollout(lab, "list")  # the context's namespace: default
    assert "listed" in here and "broken" not in here

    listed = json.loads(kubectl_modelrollout(lab, "list", "-o", "json", "-n", "ml"))
    assert listed["kind"] == "List" and [o["metadata"]["name"] for o in listed["items"]] == ["broken"]
    got = yaml.safe_load(kubectl_modelrollout(lab, "get", "broken", "-o", "yaml", "-n", "ml"))
    assert got["status"]["phase"] == "InvalidSpec" and got["status"] == lab.status("broken", "ml")

    other = tmp_path / "kubeconfig"
    lab.api.write_kubeconfig(other, context="ml-team", namespace="ml")
    failed = run(lab, "get", "broken", "--context", "ml-team", "--exit-status", kubeconfig=str(other))
    assert failed.exit_code == EXIT_ROLLOUT_FAILED and "ml/broken: InvalidSpec" in failed.output

    missing = run(lab, "get", "nothere", "-n", "ml")
    assert missing.exit_code == 1 and "NotFound" in missing.output

    # Shell completion of NAME asks the cluster, in the namespace given anywhere on the line.
    words = f"kubectl-modelrollout get -n ml --kubeconfig {lab.kubeconfig} b"
    completed = CliRunner().invoke(plugin, [], prog_name="kubectl-modelrollout", env={
        "_KUBECTL_MODELROLLOUT_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)})
    assert completed.output.splitlines() == ["plain,broken"]
