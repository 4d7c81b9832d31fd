"""Notifications: tell a team's Slack, Teams, PagerDuty or webhook what a rollout did (docs/notifications.md).

Three parts:

* `moments(...)` (pure): what deserves a notification in one reconcile pass (a rollback, a
  promotion, a manual gate starting to wait, a release stuck for lack of data), with its evidence.
* `render(...)` (pure): one moment in a provider's documented shape: Slack incoming webhook
  (`text` + Block Kit `blocks`), Microsoft Teams (an Adaptive Card message), PagerDuty Events API v2
  (`routing_key`, `event_action: trigger`, `payload.summary/severity/source`), or our generic JSON.
* `Notifier`: a bounded queue and a few worker tasks. The reconciler only enqueues (never waits);
  the workers read the Secret, check the URL against the platform's policy, POST with retries and
  backoff, and on a final failure post a Warning event on the rollout. A full queue drops the
  message and counts it (`modelrollout_notifications_dropped_total`).

Nothing a receiver answers is shown anywhere (status, events, logs): only the HTTP status code.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
from prometheus_client import Counter

from modelrollout.core import parse_ts
from modelrollout.kube import Kube, KubeError, path
from modelrollout.metrics import REGISTRY
from modelrollout.spec import Notification, PlatformPolicy, RolloutSpec
from modelrollout.status import MetricResult, RolloutStatus

log = logging.getLogger(__name__)

Emit = Callable[[str, str, str], None]  # (type, reason, message) -> an Event on the rollout

SEVERITY = {"RolledBack": "error", "NoData": "warning", "ManualGate": "info", "Promoted": "info"}
TITLES = {"RolledBack": "rolled back", "Promoted": "promoted", "ManualGate": "waits for promote",
          "NoData": "stuck: no conclusive data"}
RETRIED_STATUSES = {408, 425, 429, 500, 502, 503, 504}
LINK_PLACEHOLDERS = ("namespace", "name", "revision", "from", "to")
LINK_MARGIN = timedelta(minutes=5)  # before the release started and after the moment, in a link's window

SENT = Counter("modelrollout_notifications_total", "Notifications by provider and result (sent, failed, refused).",
               ["provider", "result"], registry=REGISTRY)
DROPPED = Counter("modelrollout_notifications_dropped_total",
                  "Notifications dropped because the delivery queue was full.", registry=REGISTRY)


@dataclass(frozen=True)
class Moment:
    """One notable moment of one rollout, provider-neutral."""

    kind: str  # RolledBack | Promoted | ManualGate | NoData
    namespace: str
    name: str
    revision: str
    model: str
    message: str
    step: int | None = None
    weight: int | None = None
    analysis: tuple[MetricResult, ...] = ()  # status.lastAnalysis entries (failing ones for a rollback)
    command: str = ""  # what to run next
    link: str = ""  # the platform's link for this rollout and release window (--notification-link), if any

    @property
    def severity(self) -> str:
        return SEVERITY[self.kind]

    @property
    def title(self) -> str:
        return f"{self.namespace}/{self.name}: {self.model} {TITLES[self.kind]}"

    def facts(self) -> list[tuple[str, str]]:
        """(label, value) pairs a person reads: where the release was, then each metric's evidence."""
        facts = [("Revision", self.revision)]
        if self.step is not None:
            facts.append(("Step", f"{self.step} (weight {self.weight}%)"))
        for result in self.analysis:
            facts.append((result.metric, f"{result.verdict}: value {_number(result.value)} "
                                         f"threshold {result.threshold} samples {_number(result.samples)}"))
        return facts

    def document(self) -> dict[str, Any]:
        """The generic webhook's JSON (also PagerDuty's custom_details)."""
        return {
            "kind": self.kind, "severity": self.severity,
            "rollout": {"namespace": self.namespace, "name": self.name},
            "model": self.model, "revision": self.revision, "message": self.message,
            "step": self.step, "weight": self.weight,
            "analysis": [{key: getattr(result, key) for key in ("metric", "verdict", "value", "threshold", "samples",
                                                                "query", "at")} for result in self.analysis],
            "command": self.command, "link": self.link or None,
        }


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _condition_reason(status: RolloutStatus, kind: str) -> str | None:
    condition = status.condition(kind)
    return condition.reason if condition is not None and condition.status == "True" else None


def link(template: str, namespace: str, name: str, revision: str, started: datetime, now: datetime) -> str:
    """The platform's URL template filled in: {namespace}, {name}, {revision}, and {from}/{to} in Unix
    milliseconds (Grafana's), from 5 minutes before the release started to 5 minutes after `now`."""
    values = {"namespace": namespace, "name": name, "revision": revision,
              "from": int((started - LINK_MARGIN).timestamp() * 1000), "to": int((now + LINK_MARGIN).timestamp() * 1000)}
    return template.format_map({key: quote(str(value), safe="") for key, value in values.items()})


def moments(namespace: str, name: str, spec: RolloutSpec, before: RolloutStatus, after: RolloutStatus,
            events: Sequence[Any], *, link_template: str | None = None, now: datetime | None = None) -> list[Moment]:
    """What in this pass (status `before` -> `after`, with the decision's events, decided at `now`)
    deserves a notification."""
    found = _moments(namespace, name, spec, before, after, events)
    if link_template and now is not None:
        started = parse_ts(before.rollout_started_at or after.rollout_started_at) or now
        found = [replace(m, link=link(link_template, namespace, name, m.revision, started, now)) for m in found]
    return found


def _moments(namespace: str, name: str, spec: RolloutSpec, before: RolloutStatus, after: RolloutStatus,
             events: Sequence[Any]) -> list[Moment]:
    reasons = {event.reason: event.message for event in events}
    model = f"{spec.model.name or name} {after.canary_model_version or spec.model.version}".strip()
    report = f"kubectl modelrollout report {name} -n {namespace}"
    found = []
    if "RolledBack" in reasons:
        failing = tuple(r for r in after.last_analysis if r.verdict == "Fail")
        found.append(Moment("RolledBack", namespace, name, before.canary_revision or "", model,
                            reasons["RolledBack"], before.current_step, before.canary_weight, failing, report))
    if "Promoted" in reasons:
        found.append(Moment("Promoted", namespace, name, after.stable_revision or "", model,
                            reasons["Promoted"], command=report))
    # A gate is told in the pass whose weight the cluster confirmed, once per step entered: waiting again
    # after a pause, a resume or a no-data pause at the same gate is no new gate.
    if "WeightConfirmed" in reasons and _condition_reason(after, "Paused") == "ManualGate":
        found.append(Moment("ManualGate", namespace, name, after.canary_revision or "", model,
                            after.message or "", after.current_step, after.canary_weight, after.last_analysis,
                            f"kubectl modelrollout promote {name} -n {namespace}"))
    stuck = reasons.get("NoData") or reasons.get("Undecided")  # paused for want of data, or of enough of it
    if stuck:
        found.append(Moment("NoData", namespace, name, after.canary_revision or "", model, stuck,
                            after.current_step, after.canary_weight, after.last_analysis,
                            f"kubectl modelrollout explain {name} -n {namespace}"))
    return found


# ---------------------------------------------------------------- provider shapes (pure)

def _slack(moment: Moment) -> dict[str, Any]:
    """Slack incoming webhook: `text` (the notification and fallback) plus Block Kit blocks."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": moment.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": moment.message[:3000]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{label}*\n{value}"[:2000]}
                                       for label, value in moment.facts()[:10]]},
    ]
    blocks += [{"type": "section", "text": {"type": "mrkdwn", "text": f"`{r.metric}` query:\n```{r.query}```"[:3000]}}
               for r in moment.analysis if r.query][:5]
    context = [{"type": "mrkdwn", "text": f"Next: `{moment.command}`"}]
    if moment.link:
        context.append({"type": "mrkdwn", "text": f"<{moment.link}|Details>"})
    blocks.append({"type": "context", "elements": context})
    return {"text": f"{moment.title}: {moment.message}", "blocks": blocks}


def _msteams(moment: Moment) -> dict[str, Any]:
    """Microsoft Teams (Workflows or Incoming Webhook): a message with one Adaptive Card attachment."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": moment.title, "weight": "Bolder", "size": "Medium", "wrap": True,
         "color": "Attention" if moment.severity == "error" else "Default"},
        {"type": "TextBlock", "text": moment.message, "wrap": True},
        {"type": "FactSet", "facts": [{"title": label, "value": value} for label, value in moment.facts()]},
    ]
    body += [{"type": "TextBlock", "text": f"{r.metric}: {r.query}", "fontType": "Monospace",
              "wrap": True, "size": "Small"} for r in moment.analysis if r.query]
    body.append({"type": "TextBlock", "text": f"Next: {moment.command}", "fontType": "Monospace", "wrap": True})
    card: dict[str, Any] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                            "version": "1.4", "body": body}
    if moment.link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Details", "url": moment.link}]
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


def _pagerduty(moment: Moment, routing_key: str) -> dict[str, Any]:
    """PagerDuty Events API v2: a trigger event; one alert per rollout, revision and kind (dedup_key)."""
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": f"modelrollout/{moment.namespace}/{moment.name}/{moment.revision}/{moment.kind}",
        "payload": {
            "summary": f"{moment.title}: {moment.message}"[:1024],
            "source": f"modelrollout/{moment.namespace}/{moment.name}",
            "severity": moment.severity,
            "component": moment.model,
            "group": moment.namespace,
            "class": moment.kind,
            "custom_details": moment.document(),
        },
        "client": "modelrollout",
    }
    if moment.link:
        event["links"] = [{"href": moment.link, "text": "Details"}]
    return event


def render(notification: Notification, moment: Moment, secret: str) -> tuple[str, dict[str, Any]]:
    """(URL, JSON body) of one delivery; `secret` is the Secret's value: a URL, or PagerDuty's routing key."""
    if notification.provider == "pagerduty":
        return notification.endpoint or "", _pagerduty(moment, secret)
    if notification.provider == "slack":
        return secret, _slack(moment)
    if notification.provider == "msteams":
        return secret, _msteams(moment)
    return secret, moment.document()


# ---------------------------------------------------------------- delivery

@dataclass(frozen=True)
class Delivery:
    notification: Notification
    moment: Moment
    emit: Emit


class Undeliverable(Exception):
    """A delivery that retrying would not fix (refused by policy, Secret missing, 4xx); the text is safe to show."""


@dataclass
class Notifier:
    """Bounded, non-blocking delivery. `notify` only enqueues; `workers` tasks deliver."""

    kube: Kube
    policy: PlatformPolicy
    link_template: str | None = None  # --notification-link
    capacity: int = 200
    workers: int = 4
    attempts: int = 4
    backoff: float = 1.0  # seconds before the first retry; doubles each time (with jitter)
    timeout: float = 5.0  # per request
    _queue: asyncio.Queue[Delivery] | None = field(default=None, init=False, repr=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False, repr=False)
    _client: httpx.AsyncClient | None = field(default=None, init=False, repr=False)
    _opening: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def notify(self, namespace: str, name: str, spec: RolloutSpec, before: RolloutStatus,
               after: RolloutStatus, events: Sequence[Any], emit: Emit, now: datetime | None = None) -> None:
        """Enqueue the notifications this pass (decided at `now`) calls for; never waits (a full queue
        drops and counts)."""
        if not spec.notifications:
            return
        for moment in moments(namespace, name, spec, before, after, events, link_template=self.link_template, now=now):
            for notification in spec.notifications:
                if moment.kind in notification.events:
                    self._enqueue(Delivery(notification, moment, emit))

    def _enqueue(self, delivery: Delivery) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=self.capacity)
            self._tasks = [asyncio.create_task(self._work(), name=f"notifier-{i}") for i in range(self.workers)]
        try:
            self._queue.put_nowait(delivery)
        except asyncio.QueueFull:
            DROPPED.inc()
            log.warning("notification queue full (%d): %s of %s/%s dropped", self.capacity, delivery.moment.kind,
                        delivery.moment.namespace, delivery.moment.name)

    async def join(self) -> None:
        """Wait until every queued delivery is done (tests, shutdown)."""
        if self._queue is not None:
            await self._queue.join()

    async def close(self, drain: float = 0.0) -> None:
        """Stop the workers, first letting them deliver what is queued for up to `drain` seconds (a
        rollback decided just before the operator stops is still told)."""
        if drain and self._queue is not None:
            try:
                await asyncio.wait_for(self._queue.join(), drain)
            except asyncio.TimeoutError:
                log.warning("stopping with %d notification(s) not delivered after %gs", self._queue.qsize(), drain)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        self._queue, self._tasks, self._client = None, [], None

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            delivery = await self._queue.get()
            try:
                await self._deliver(delivery)
            except Exception as exc:  # noqa: BLE001  (a worker must survive anything one delivery does)
                log.exception("notification worker: %s", type(exc).__name__)
            finally:
                self._queue.task_done()

    async def _deliver(self, delivery: Delivery) -> None:
        notification, moment = delivery.notification, delivery.moment
        provider = notification.provider
        try:
            secret = await self._secret(moment.namespace, notification)
            url, body = render(notification, moment, secret)
            if not self.policy.notification_allowed(url):
                raise Undeliverable(f"the URL in Secret {notification.secret_ref.name} (key "
                                    f"{notification.secret_ref.key}) is not one this platform allows")
            await self._post(url, body)
        except Undeliverable as exc:
            SENT.labels(provider, "failed").inc()
            delivery.emit("Warning", "NotificationFailed", f"{provider} notification of {moment.kind} not sent: {exc}")
            return
        SENT.labels(provider, "sent").inc()

    async def _secret(self, namespace: str, notification: Notification) -> str:
        ref = notification.secret_ref
        try:
            secret = await self.kube.get(path("v1", "secrets", namespace, ref.name))
        except KubeError as exc:
            raise Undeliverable(f"cannot read Secret {ref.name}: HTTP {exc.status} {exc.reason}".rstrip()) from None
        if secret is None:
            raise Undeliverable(f"Secret {ref.name} not found")
        encoded = (secret.get("data") or {}).get(ref.key)
        if not encoded:
            raise Undeliverable(f"Secret {ref.name} has no key {ref.key}")
        try:
            return base64.b64decode(encoded).decode().strip()
        except ValueError:
            raise Undeliverable(f"Secret {ref.name} key {ref.key} is not UTF-8 text") from None

    async def _http(self) -> httpx.AsyncClient:
        """One client for every worker, made in a thread: loading the CA bundle takes ~0.1 s of CPU that
        would otherwise stall every rollout's reconcile on the event loop. Redirects are not followed: a
        redirect could lead past the URL policy."""
        async with self._opening:
            if self._client is None:
                self._client = await asyncio.to_thread(httpx.AsyncClient, timeout=self.timeout, follow_redirects=False)
        return self._client

    async def _post(self, url: str, body: dict[str, Any]) -> None:
        """POST with retries on timeouts, connection errors, 429 and 5xx; exponential backoff with jitter."""
        client = await self._http()
        outcome = ""
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1) * random.uniform(0.8, 1.2))
            try:
                response = await client.post(url, json=body)
            except httpx.TimeoutException:
                outcome = f"no answer within {self.timeout:g}s"
                continue
            except httpx.HTTPError as exc:
                outcome = f"connection failed ({type(exc).__name__})"
                continue
            if response.is_success:
                return
            outcome = f"HTTP {response.status_code}"
            if response.status_code not in RETRIED_STATUSES:
                raise Undeliverable(f"the receiver answered {outcome}")
        raise Undeliverable(f"{outcome} after {self.attempts} attempts")
