"""Notifications: the spec block, the URL policy, what is worth telling, each provider's documented
shape as a local receiver records it, retries, and that delivery never holds the caller.

Receivers are real HTTP servers on 127.0.0.1; the Secrets are read from the lab's API server.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from datetime import datetime, timezone
from typing import Any

import pytest

from modelrollout import metrics
from modelrollout.core import Event
from modelrollout.kube import Kube, load_configuration, path
from modelrollout.notify import Notifier, moments
from modelrollout.spec import DEFAULT_NOTIFICATION_URLS, PlatformPolicy, SpecError, parse_spec, url_matches
from modelrollout.status import RolloutStatus
from modelrollout_lab.receivers import BODY, Receiver

NAMESPACE = "ml"
SECRET = "modelrollout-notifications"
LOCAL = ("http://127.0.0.1:*/*",)
SPEC = {
    "model": {"name": "fraud", "version": "2.4.0"},
    "replicas": 10,
    "selector": {"matchLabels": {"app": "m"}},
    "template": {"metadata": {"labels": {"app": "m"}}, "spec": {"containers": [{"name": "s", "image": "m:1"}]}},
    "service": {"port": 8080},
    "trafficRouting": {"replicas": {}},
    "strategy": {"steps": [{"weight": 10, "hold": "1m"}, {"weight": 100}]},
    "analysis": {"preset": "http", "metrics": [{"name": "error-rate", "max": 0.01}]},
}
POLICY = PlatformPolicy(prometheus_url="http://prom:9090", allowed_notification_urls=LOCAL)
FAILING = {"metric": "error-rate", "value": 0.052, "threshold": "<= 0.01", "verdict": "Fail", "samples": 2310.0,
           "query": 'sum(rate(http_requests_total{code=~"5.."}[30s]))', "at": "2026-01-01T00:00:30Z",
           "reason": "0.052 > 0.01"}
BEFORE = RolloutStatus.parse({"phase": "Progressing", "canaryRevision": "abc123", "currentStep": 1, "canaryWeight": 25,
                              "rolloutStartedAt": "2026-01-01T00:00:00Z"})
DECIDED = datetime(2026, 1, 1, 0, 0, 30, tzinfo=timezone.utc)
AFTER = RolloutStatus.parse({"phase": "RolledBack", "abortedRevision": "abc123", "lastAnalysis": [FAILING],
                             "message": "rolled back: error-rate: 0.052 > 0.01 at step 1 (weight 25)"})
ROLLBACK_EVENTS = (Event("Warning", "RolledBack", AFTER.message),)


def spec_with(*notifications: dict[str, Any], policy: PlatformPolicy = POLICY):
    return parse_spec({**SPEC, "notifications": list(notifications)}, policy)


# ---------------------------------------------------------------- the spec and the policy

def test_notifications_parse_with_all_events_by_default():
    spec = spec_with({"provider": "slack", "secretRef": {"name": SECRET, "key": "slack"}})
    assert spec.notifications[0].events == ("RolledBack", "Promoted", "ManualGate", "NoData")
    assert spec.notifications[0].endpoint is None


@pytest.mark.parametrize("entry, field", [
    ({"provider": "discord", "secretRef": {"name": "s", "key": "k"}}, "spec.notifications[0].provider"),
    ({"provider": "slack", "secretRef": {"name": "S_bad", "key": "k"}}, "spec.notifications[0].secretRef.name"),
    ({"provider": "slack", "secretRef": {"name": "s", "key": "k"}, "events": ["Started"]},
     "spec.notifications[0].events[0]"),
    ({"provider": "slack", "secretRef": {"name": "s", "key": "k"}, "address": "https://x.test/"},
     "spec.notifications[0]"),
    ({"provider": "pagerduty", "secretRef": {"name": "s", "key": "k"}, "address": "http://10.0.0.1/admin"},
     "spec.notifications[0].address"),
])
def test_bad_notifications_are_invalid_naming_the_field(entry, field):
    with pytest.raises(SpecError) as caught:
        spec_with(entry, policy=PlatformPolicy(prometheus_url="http://prom:9090",
                                               allowed_notification_urls=DEFAULT_NOTIFICATION_URLS))
    assert caught.value.field == field


def test_pagerduty_defaults_to_its_public_endpoint_which_the_default_policy_allows():
    policy = PlatformPolicy(prometheus_url="http://prom:9090", allowed_notification_urls=DEFAULT_NOTIFICATION_URLS)
    spec = spec_with({"provider": "pagerduty", "secretRef": {"name": SECRET, "key": "pd"}}, policy=policy)
    assert spec.notifications[0].endpoint == "https://events.pagerduty.com/v2/enqueue"
    with pytest.raises(SpecError, match="not a notification URL"):
        spec_with({"provider": "pagerduty", "secretRef": {"name": SECRET, "key": "pd"}},
                  policy=PlatformPolicy(prometheus_url="http://prom:9090"))


@pytest.mark.parametrize("url, allowed", [
    ("https://hooks.slack.com/services/T0/B0/XYZ", True),
    ("https://contoso.webhook.office.com/webhookb2/abc", True),
    ("https://prod-12.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=1", True),
    ("https://events.pagerduty.com/v2/enqueue", True),
    ("http://hooks.slack.com/services/T0/B0/XYZ", False),  # scheme
    ("https://evil.test/.webhook.office.com/x", False),  # a host wildcard never reaches into the path
    ("https://hooks.slack.com@evil.test/services/x", False),  # user info hides the real host
    ("https://hooks.slack.com.evil.test/services/x", False),
    ("http://10.0.0.1/admin", False),
])
def test_default_notification_urls(url, allowed):
    assert url_matches(url, DEFAULT_NOTIFICATION_URLS) is allowed


# ---------------------------------------------------------------- what is worth telling

def test_a_rollback_tells_metric_value_threshold_samples_query_step_and_the_report_command():
    spec = spec_with({"provider": "webhook", "secretRef": {"name": SECRET, "key": "hook"}})
    (moment,) = moments(NAMESPACE, "fraud", spec, BEFORE, AFTER, ROLLBACK_EVENTS)
    document = moment.document()
    assert document["kind"] == "RolledBack" and document["severity"] == "error"
    assert (document["revision"], document["step"], document["weight"]) == ("abc123", 1, 25)
    assert document["analysis"][0] == {k: FAILING[k] for k in ("metric", "verdict", "value", "threshold", "samples",
                                                               "query", "at")}
    assert document["command"] == "kubectl modelrollout report fraud -n ml"


def test_a_manual_gate_is_told_once_per_step():
    spec = spec_with({"provider": "webhook", "secretRef": {"name": SECRET, "key": "hook"}})
    gate = {"type": "Paused", "status": "True", "reason": "ManualGate"}
    waiting = RolloutStatus.parse({"phase": "Paused", "canaryRevision": "abc", "currentStep": 1, "conditions": [gate],
                                   "message": "step 1 (weight 50) waits for promote"})
    progressing = RolloutStatus.parse({"phase": "Progressing", "canaryRevision": "abc", "currentStep": 0})
    confirmed = (Event("Normal", "WeightConfirmed", "step 1: the cluster carries canary weight 50"),)
    (first,) = moments(NAMESPACE, "fraud", spec, progressing, waiting, confirmed)
    assert first.kind == "ManualGate" and first.command == "kubectl modelrollout promote fraud -n ml"
    assert moments(NAMESPACE, "fraud", spec, waiting, waiting, ()) == []
    assert [m.kind for m in moments(NAMESPACE, "fraud", spec, waiting, waiting.replace(current_step=2), confirmed)] == [
        "ManualGate"]


def test_a_manual_gate_is_told_once_even_when_paused_and_resumed_at_it():
    """One page per gate: pausing and resuming a rollout that waits at a manual gate (decided by the
    real core, pass by pass) does not tell the gate again."""
    from datetime import datetime, timedelta, timezone

    from modelrollout.core import Commands, Observations, Workload, decide, target_weight

    def gated(image: str):
        return parse_spec({**SPEC, "template": {**SPEC["template"], "spec": {"containers": [{"name": "s", "image": image}]}},
                           "strategy": {"steps": [{"weight": 20}, {"weight": 100, "hold": "1m"}]},
                           "notifications": [{"provider": "webhook", "secretRef": {"name": SECRET, "key": "hook"}}]},
                          POLICY)

    v1, v2 = gated("m:1"), gated("m:2")
    status, now, told = RolloutStatus(), datetime(2026, 1, 1, 3, 0, tzinfo=timezone.utc), []
    ready = {v1.revision: Workload(10, 10)}
    for spec, paused in [(v1, False), (v2, False), (v2, False), (v2, False), (v2, False), (v2, True), (v2, True),
                         (v2, False), (v2, False)]:
        if spec is v2:
            ready = {v1.revision: Workload(8, 8), v2.revision: Workload(2, 2)}
        now += timedelta(seconds=5)
        observed = Observations(workloads=ready, commands=Commands(paused=paused),
                                traffic=target_weight(spec, status, ready))
        decision = decide(spec, status, observed, now)
        told += [m.kind for m in moments(NAMESPACE, "fraud", spec, status, decision.status, decision.events)]
        status = RolloutStatus.parse(decision.status.dump())
    assert status.condition("Paused").reason == "ManualGate"  # waiting at the gate again after the resume
    assert told == ["ManualGate"]


def test_promotion_and_no_data_come_from_their_events():
    spec = spec_with({"provider": "webhook", "secretRef": {"name": SECRET, "key": "hook"}})
    events = (Event("Normal", "Promoted", "revision abc promoted to stable"),)
    promoted = RolloutStatus(stable_revision="abc")
    assert [m.kind for m in moments(NAMESPACE, "f", spec, RolloutStatus(), promoted, events)] == ["Promoted"]
    events = (Event("Warning", "NoData", "paused: no conclusive data for 300s"),)
    stuck_at_step0 = RolloutStatus(canary_revision="abc", current_step=0)
    (stuck,) = moments(NAMESPACE, "f", spec, RolloutStatus(), stuck_at_step0, events)
    assert (stuck.kind, stuck.severity) == ("NoData", "warning")


def test_a_step_paused_undecided_for_want_of_requests_is_told_as_stuck():
    """A step still undecided `decideWithin` after its hold pauses for want of canary requests: the
    release waits for a person exactly like a no-data pause, so the team is told the same way."""
    spec = spec_with({"provider": "webhook", "secretRef": {"name": SECRET, "key": "hook"}})
    message = ("paused: step 0 (weight 10) undecided 60s after its hold: error-rate needs ~4,200 more canary "
               "requests (~420s at 10/s); promote to go on, or wait")
    stuck = RolloutStatus(canary_revision="abc", current_step=0, canary_weight=10, message=message)
    (told,) = moments(NAMESPACE, "f", spec, RolloutStatus(), stuck, (Event("Warning", "Undecided", message),))
    assert (told.kind, told.severity, told.message) == ("NoData", "warning", message)
    assert told.command == "kubectl modelrollout explain f -n ml"


# ---------------------------------------------------------------- delivery to local receivers

@pytest.fixture()
def receiver():
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory):
    from modelrollout_lab.apiserver import start_in_thread

    handle = start_in_thread()
    try:
        yield str(handle.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config"))
    finally:
        handle.stop()


async def _put_secret(kube: Kube, data: dict[str, str]) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NAMESPACE},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
    if await kube.get(f"/api/v1/namespaces/{NAMESPACE}") is None:
        await kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    await kube.delete(path("v1", "secrets", NAMESPACE, SECRET))
    await kube.create(path("v1", "secrets", NAMESPACE), body)


def deliver(kubeconfig: str, secret: dict[str, str], notifications: list[dict[str, Any]], *,
            before: RolloutStatus = BEFORE, after: RolloutStatus = AFTER, events=ROLLBACK_EVENTS,
            policy: PlatformPolicy = POLICY, **options: Any) -> tuple[list[tuple[str, str, str]], float]:
    """Notify once, wait for delivery; returns the events posted and how long notify() took (seconds)."""
    emitted: list[tuple[str, str, str]] = []

    async def run() -> float:
        kube = Kube(load_configuration(kubeconfig))
        notifier = Notifier(kube, policy, **{"backoff": 0.01, "timeout": 2.0, **options})
        try:
            await _put_secret(kube, secret)
            spec = spec_with(*notifications)
            started = time.perf_counter()
            notifier.notify(NAMESPACE, "fraud", spec, before, after, events, lambda *e: emitted.append(e), DECIDED)
            took = time.perf_counter() - started
            await asyncio.wait_for(notifier.join(), 30)
            return took
        finally:
            await notifier.close()
            await kube.close()

    return emitted, asyncio.run(run())


def test_slack_gets_text_and_blocks(kubeconfig, receiver):
    emitted, _ = deliver(kubeconfig, {"slack": receiver.url("slack")},
                         [{"provider": "slack", "secretRef": {"name": SECRET, "key": "slack"}}])
    assert emitted == []
    (request,) = receiver.requests
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["json"]
    assert "rolled back" in body["text"] and "error-rate: 0.052 > 0.01" in body["text"]
    assert body["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": "ml/fraud: fraud 2.4.0 rolled back"}}
    fields = [f["text"] for b in body["blocks"] if b["type"] == "section" for f in b.get("fields", [])]
    assert "*Step*\n1 (weight 25%)" in fields
    assert "*error-rate*\nFail: value 0.052 threshold <= 0.01 samples 2310" in fields
    texts = [b["text"]["text"] for b in body["blocks"] if b["type"] == "section" and "text" in b]
    assert any(FAILING["query"] in text for text in texts)
    assert body["blocks"][-1]["elements"][0]["text"] == "Next: `kubectl modelrollout report fraud -n ml`"
    assert all(len(b["text"]["text"]) <= 3000 for b in body["blocks"] if "text" in b)


def test_msteams_gets_an_adaptive_card_message(kubeconfig, receiver):
    deliver(kubeconfig, {"teams": receiver.url("teams")},
            [{"provider": "msteams", "secretRef": {"name": SECRET, "key": "teams"}}])
    body = receiver.requests[0]["json"]
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["$schema"]) == ("AdaptiveCard", "http://adaptivecards.io/schemas/adaptive-card.json")
    kinds = [element["type"] for element in card["body"]]
    assert kinds[:3] == ["TextBlock", "TextBlock", "FactSet"]
    facts = {fact["title"]: fact["value"] for fact in card["body"][2]["facts"]}
    assert facts["error-rate"] == "Fail: value 0.052 threshold <= 0.01 samples 2310"
    assert facts["Step"] == "1 (weight 25%)"


def test_pagerduty_gets_an_events_v2_trigger(kubeconfig, receiver):
    policy = PlatformPolicy(prometheus_url="http://prom:9090", allowed_notification_urls=LOCAL)
    deliver(kubeconfig, {"pd": "R0UTINGKEY"},
            [{"provider": "pagerduty", "secretRef": {"name": SECRET, "key": "pd"}, "address": receiver.url("v2/enqueue")}],
            policy=policy)
    request = receiver.requests[0]
    assert request["path"] == "/v2/enqueue"
    body = request["json"]
    assert body["routing_key"] == "R0UTINGKEY" and body["event_action"] == "trigger"
    assert body["dedup_key"] == "modelrollout/ml/fraud/abc123/RolledBack"
    payload = body["payload"]
    assert payload["severity"] in ("critical", "error", "warning", "info") and payload["severity"] == "error"
    assert payload["source"] == "modelrollout/ml/fraud"
    assert 0 < len(payload["summary"]) <= 1024 and "error-rate" in payload["summary"]
    assert payload["custom_details"]["analysis"][0]["value"] == 0.052


def test_generic_webhook_gets_the_document(kubeconfig, receiver):
    deliver(kubeconfig, {"hook": receiver.url("hook")},
            [{"provider": "webhook", "secretRef": {"name": SECRET, "key": "hook"}, "events": ["RolledBack"]}])
    body = receiver.requests[0]["json"]
    assert body["kind"] == "RolledBack" and body["rollout"] == {"namespace": "ml", "name": "fraud"}
    assert body["link"] is None  # the platform named no --notification-link
    assert body["analysis"][0]["metric"] == "error-rate" and body["analysis"][0]["threshold"] == "<= 0.01"


def test_the_platforms_link_is_filled_in_and_put_where_each_provider_shows_links(kubeconfig, receiver):
    """--notification-link: the rollout, revision and the release's window (Grafana's Unix ms, 5 minutes
    either side) in Slack's context, a Teams card action, PagerDuty's `links` and the webhook's `link`."""
    template = ("https://grafana.example.com/d/modelrollout/modelrollout?var-namespace={namespace}&var-rollout={name}"
                "&from={from}&to={to}&revision={revision}")
    deliver(kubeconfig, {"slack": receiver.url("slack"), "teams": receiver.url("teams"), "pd": "R0UTINGKEY",
                         "hook": receiver.url("hook")},
            [{"provider": "slack", "secretRef": {"name": SECRET, "key": "slack"}},
             {"provider": "msteams", "secretRef": {"name": SECRET, "key": "teams"}},
             {"provider": "pagerduty", "secretRef": {"name": SECRET, "key": "pd"}, "address": receiver.url("v2/enqueue")},
             {"provider": "webhook", "secretRef": {"name": SECRET, "key": "hook"}}], link_template=template)
    link = ("https://grafana.example.com/d/modelrollout/modelrollout?var-namespace=ml&var-rollout=fraud"
            "&from=1767225300000&to=1767225930000&revision=abc123")  # 2025-12-31T23:55:00Z to 2026-01-01T00:05:30Z
    body = {r["path"]: r["json"] for r in receiver.requests}
    assert body["/slack"]["blocks"][-1]["elements"][-1] == {"type": "mrkdwn", "text": f"<{link}|Details>"}
    assert body["/teams"]["attachments"][0]["content"]["actions"] == [
        {"type": "Action.OpenUrl", "title": "Details", "url": link}]
    assert body["/v2/enqueue"]["links"] == [{"href": link, "text": "Details"}]
    assert body["/hook"]["link"] == link


def test_only_the_events_asked_for_are_sent(kubeconfig, receiver):
    deliver(kubeconfig, {"hook": receiver.url("hook")},
            [{"provider": "webhook", "secretRef": {"name": SECRET, "key": "hook"}, "events": ["Promoted"]}])
    assert receiver.requests == []


def test_5xx_is_retried_with_backoff_and_4xx_is_not(kubeconfig, receiver):
    receiver.answers = [500, 503]
    emitted, _ = deliver(kubeconfig, {"hook": receiver.url("hook")},
                         [{"provider": "webhook", "secretRef": {"name": SECRET, "key": "hook"}}])
    assert len(receiver.requests) == 3 and emitted == []
    receiver.requests.clear()
    receiver.answers = [400]
    emitted, _ = deliver(kubeconfig, {"hook": receiver.url("hook")},
                         [{"provider": "webhook", "secretRef": {"name": SECRET, "key": "hook"}}])
    assert len(receiver.requests) == 1
    assert emitted == [("Warning", "NotificationFailed",
                        "webhook notification of RolledBack not sent: the receiver answered HTTP 400")]


def test_a_failure_is_an_event_with_the_status_code_never_the_body(kubeconfig, receiver):
    receiver.answers = [500] * 4
    emitted, _ = deliver(kubeconfig, {"hook": receiver.url("hook")},
                         [{"provider": "webhook", "secretRef": {"name": SECRET, "key": "hook"}}])
    assert len(receiver.requests) == 4
    ((kind, reason, message),) = emitted
    assert (kind, reason) == ("Warning", "NotificationFailed")
    assert message == "webhook notification of RolledBack not sent: HTTP 500 after 4 attempts"
    assert BODY.decode() not in message and "hunter2" not in message


def test_a_url_outside_the_policy_is_never_called_nor_shown(kubeconfig, receiver):
    url = receiver.url("internal/admin")
    emitted, _ = deliver(kubeconfig, {"hook": url}, [{"provider": "webhook", "secretRef": {"name": SECRET, "key": "hook"}}],
                         policy=PlatformPolicy(prometheus_url="http://prom:9090",
                                               allowed_notification_urls=DEFAULT_NOTIFICATION_URLS))
    assert receiver.requests == []
    ((_, reason, message),) = emitted
    assert reason == "NotificationFailed" and "not one this platform allows" in message and url not in message


def test_a_missing_secret_key_is_an_event(kubeconfig, receiver):
    emitted, _ = deliver(kubeconfig, {"other": "x"}, [{"provider": "slack", "secretRef": {"name": SECRET, "key": "slack"}}])
    assert emitted == [("Warning", "NotificationFailed",
                        f"slack notification of RolledBack not sent: Secret {SECRET} has no key slack")]


def test_a_hanging_receiver_never_holds_the_caller_nor_the_other_receivers(kubeconfig, receiver):
    """notify() only enqueues: it returns in well under a millisecond while one receiver hangs, and the
    other receiver is served meanwhile by another worker."""
    notifications = [{"provider": "webhook", "secretRef": {"name": SECRET, "key": "hang"}},
                     {"provider": "slack", "secretRef": {"name": SECRET, "key": "slack"}}]
    threading.Timer(1.5, receiver.release.set).start()
    started = time.monotonic()
    emitted, took = deliver(kubeconfig, {"hang": receiver.url("hang"), "slack": receiver.url("slack")},
                            notifications, timeout=5.0)
    assert took < 0.005, f"notify() took {took * 1000:.2f} ms"
    slack = next(r for r in receiver.requests if r["path"] == "/slack")
    assert slack["at"] - started < 1.0  # not queued behind the hanging one
    assert emitted == []


def test_a_stopping_operator_still_delivers_what_is_queued(kubeconfig, receiver):
    """A rollback decided just before the operator stops (an upgrade, a node drain) is still told: close()
    lets the workers finish for up to `drain` seconds instead of cancelling them mid-delivery."""
    def sent() -> float:
        return metrics.REGISTRY.get_sample_value("modelrollout_notifications_total",
                                                 {"provider": "webhook", "result": "sent"}) or 0.0

    async def stop_right_after_notifying(drain: float) -> float:
        kube = Kube(load_configuration(kubeconfig))
        notifier = Notifier(kube, POLICY, backoff=0.01, timeout=5.0)
        try:
            await _put_secret(kube, {"hang": receiver.url("hang")})
            before = sent()
            receiver.release.clear()
            threading.Timer(0.5, receiver.release.set).start()  # the receiver answers after 0.5 s
            notifier.notify(NAMESPACE, "fraud", spec_with({"provider": "webhook", "secretRef": {"name": SECRET,
                                                                                               "key": "hang"}}),
                            BEFORE, AFTER, ROLLBACK_EVENTS, lambda *e: None)
            await asyncio.sleep(0.1)
            await notifier.close(drain=drain)
            return sent() - before
        finally:
            await kube.close()

    assert asyncio.run(stop_right_after_notifying(drain=5.0)) == 1
    time.sleep(0.6)
    assert asyncio.run(stop_right_after_notifying(drain=0.0)) == 0  # without a drain it was lost


def test_a_full_queue_drops_and_counts(kubeconfig, receiver):
    dropped = metrics.REGISTRY.get_sample_value("modelrollout_notifications_dropped_total") or 0.0
    receiver.release.clear()
    threading.Timer(1.0, receiver.release.set).start()
    notifications = [{"provider": "webhook", "secretRef": {"name": SECRET, "key": "hang"}}] * 5
    deliver(kubeconfig, {"hang": receiver.url("hang")}, notifications, capacity=2, workers=1)
    assert metrics.REGISTRY.get_sample_value("modelrollout_notifications_dropped_total") == dropped + 3
    assert len(receiver.requests) == 2
