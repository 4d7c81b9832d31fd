"""Notifications from the real operator in the lab: a rollback is told to Slack and a webhook with the
metric, value, threshold, samples, query and step, while receivers that hang or answer 500 delay
nothing (measured) and a final failure is a Warning event with the status code only."""

from __future__ import annotations

import base64
import re
import time
from datetime import datetime

import pytest

from modelrollout_lab import scenarios
from modelrollout_lab.receivers import BODY, Receiver

from lab_watch import apply_all, events_of

pytestmark = pytest.mark.lab

LINK = "https://grafana.example.com/d/modelrollout/modelrollout?var-namespace={namespace}&var-rollout={name}&from={from}&to={to}"
OPERATOR_ARGS = ("--allowed-notification-urls", "http://127.0.0.1:*/*", "--notification-link", LINK)
SECRET = "modelrollout-notifications"  # the one Secret name the chart lets the operator read (default values)
SAMPLED = {"rps": 400, "min_samples": 300}
ERRORS = [{"name": "error-rate", "max": 0.01, "critical": True}]


@pytest.fixture(scope="module")
def receiver():
    server = Receiver()
    yield server
    server.stop()


def secret(data: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": "default"},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}


def test_a_rollback_is_told_to_slack_and_a_webhook_and_slow_receivers_delay_nothing(lab, receiver):
    lab.apply(secret({"slack": receiver.url("slack"), "hook": receiver.url("hook"),
                      "hang": receiver.url("hang"), "fail": receiver.url("fail")}))
    docs = scenarios.manifests("told", metrics=ERRORS, **SAMPLED)
    docs[-1]["spec"]["notifications"] = [
        {"provider": "webhook", "secretRef": {"name": SECRET, "key": "hang"}},
        {"provider": "webhook", "secretRef": {"name": SECRET, "key": "fail"}, "events": ["RolledBack"]},
        {"provider": "slack", "secretRef": {"name": SECRET, "key": "slack"}, "events": ["RolledBack"]},
        {"provider": "webhook", "secretRef": {"name": SECRET, "key": "hook"}, "events": ["RolledBack", "Promoted"]},
    ]
    apply_all(lab, docs)
    lab.wait_for_phase("told", "Succeeded", timeout=60)
    assert receiver.requests == []  # becoming stable the first time is not a promotion

    lab.apply(scenarios.release(docs[-1], "2.0.0", {"error-rate": "0.05"}))
    status = lab.wait_for_phase("told", "RolledBack", timeout=60)
    seen_rolled_back = time.monotonic()
    slack = lab.wait_for(lambda: receiver.to("slack"), timeout=10, what="the Slack message")
    hook = lab.wait_for(lambda: receiver.to("hook"), timeout=10, what="the webhook message")
    (failing,) = [r for r in status["lastAnalysis"] if r["verdict"] == "Fail"]
    rolled_back = status["history"][0]

    # Slack: its documented shape, with the evidence as status has it.
    body = slack[0]["json"]
    assert body["text"].startswith("default/told: told 2.0.0 rolled back: ") and "error-rate" in body["text"]
    fields = [f["text"] for block in body["blocks"] if block["type"] == "section" for f in block.get("fields", [])]
    assert f"*error-rate*\nFail: value {failing['value']:.4g} threshold {failing['threshold']} " \
           f"samples {failing['samples']:.4g}" in fields
    assert "*Step*\n0 (weight 20%)" in fields
    assert any(failing["query"] in block["text"]["text"] for block in body["blocks"] if "text" in block
               and block["type"] == "section")

    # The webhook: the same numbers, exactly.
    document = hook[0]["json"]
    assert document["kind"] == "RolledBack" and document["revision"] == rolled_back["revision"]
    assert (document["step"], document["weight"]) == (0, 20)
    assert document["analysis"] == [{key: failing[key] for key in ("metric", "verdict", "value", "threshold",
                                                                   "samples", "query", "at")}]
    assert document["command"] == "kubectl modelrollout report told -n default"
    # The platform's link: this rollout, from before the release started to after the rollback.
    link = re.fullmatch(r"https://grafana\.example\.com/d/modelrollout/modelrollout\?var-namespace=default"
                        r"&var-rollout=told&from=(\d+)&to=(\d+)", document["link"])
    assert link, document["link"]
    started, finished = (datetime.fromisoformat(rolled_back[key].replace("Z", "+00:00")).timestamp() * 1000
                         for key in ("startedAt", "finishedAt"))
    assert int(link.group(1)) < started and int(link.group(2)) > finished

    # Slow receivers delay nothing: the decision was taken in the pass that judged the failure, the hanging
    # receiver's request arrives only after the rollback is written (messages are queued after the status
    # write), the other receivers are served meanwhile, and the canary's pods go (the replicas router's
    # weight 0) while the receiver still hangs.
    assert rolled_back["finishedAt"] == failing["at"]
    hang = lab.wait_for(lambda: receiver.to("hang"), timeout=10, what="the hanging receiver's request")
    assert hang[0]["wall"] >= datetime.fromisoformat(rolled_back["finishedAt"].replace("Z", "+00:00")).timestamp()
    assert not receiver.release.is_set()
    deleted = lab.wait_for(lambda: not [d for d in lab.apps.list_namespaced_deployment("default").items
                                        if d.metadata.labels.get("modelrollout.io/revision") == rolled_back["revision"]
                                        and (d.spec.replicas or 0) > 0],
                           timeout=15, what="the canary scaled down")
    scaled_down = time.monotonic()
    assert deleted and not receiver.release.is_set()
    print(f"\nrollback seen {seen_rolled_back - hang[0]['at']:+.2f}s after the hanging request arrived; "
          f"slack {slack[0]['at'] - hang[0]['at']:+.2f}s after it; canary pods gone {scaled_down - seen_rolled_back:.2f}s "
          f"after the rollback was seen, while the receiver still hung")
    assert scaled_down - seen_rolled_back < 2.0  # within one analysis interval (2 s)
    assert abs(slack[0]["at"] - hang[0]["at"]) < 1.0

    # The 500 receiver: retried with backoff, then one Warning event with the status code only.
    failed = lab.wait_for(lambda: events_of(lab, "told", "NotificationFailed"), timeout=30, what="NotificationFailed")
    assert failed[0].type == "Warning"
    assert failed[0].message == "webhook notification of RolledBack not sent: HTTP 500 after 4 attempts"
    assert len(receiver.to("fail")) == 4
    assert BODY.decode() not in lab.operator_log() and all(BODY.decode() not in (e.message or "")
                                                           for e in lab.core.list_namespaced_event("default").items)
    assert len(receiver.to("slack")) == 1 and len(receiver.to("hook")) == 1  # told once
