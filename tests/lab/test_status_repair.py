"""A status on the cluster that does not parse (edited by hand, or written by an older operator)
never stops a rollout: the pass drops what does not parse, says so in a Warning event, goes on,
and its write leaves the cluster's status clean."""

from __future__ import annotations

from kubernetes import client

from modelrollout.names import GROUP, PLURAL, VERSION
from modelrollout_lab import scenarios
from test_reconcile_inprocess import NS, Pass, cluster  # noqa: F401  (the fixture, shared)


def repairs(run: Pass) -> list[str]:
    return [message for kind, reason, message in run.events if (kind, reason) == ("Warning", "StatusRepaired")]


def test_a_status_edited_by_hand_is_repaired_and_the_rollout_goes_on(cluster):  # noqa: F811
    api, kubeconfig, api_client = cluster
    custom = client.CustomObjectsApi(api_client)
    docs = scenarios.manifests("edited", router="gatewayAPI", steps=[{"weight": 30, "hold": "1h"}])
    custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", NS, "httproutes", docs[1])
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, docs[2])
    run = Pass(kubeconfig, api_client, "edited", "http://127.0.0.1:9")
    run.until(lambda s: s.get("phase") == "Succeeded")
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "edited",
                                          {"spec": scenarios.release(docs[2], "2.0.0")["spec"]})
    status = run.until(lambda s: s.get("stepStartedAt"))
    # What the CRD's schema lets through but no pass could decide from: a time that is no time,
    # and a history entry without its result.
    history = status["history"] + [{"revision": "hand-made"}]
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "edited",
                                                 {"status": {"stepStartedAt": "yesterday", "history": history}})
    run.run()
    (message,) = repairs(run)
    assert "stepStartedAt: not a timestamp" in message and "history.1.result" in message
    status = run.rollout()["status"]
    assert status["phase"] == "Progressing" and status["canaryWeight"] == 30
    assert status.get("stepStartedAt") != "yesterday" and "hand-made" not in str(status["history"])
    run.until(lambda s: s.get("stepStartedAt"))  # the step's hold starts again, from a real time
    assert len(repairs(run)) == 1  # the cluster's status parses again: said once
    run.close()
