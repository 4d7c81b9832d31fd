"""`modelrollout backtest`: replay a spec's analysis over Prometheus history.

Walks time from `start` to `end` like the operator would: the canary is taken as ready at
`start`, every step's hold elapses in time, analyses run when `core.analysis_due` says so, as
instant queries evaluated at that past moment (`time=`), and `core.decide` itself makes every
decision from a status that advances as it would in the cluster. Manual gates (steps without a
hold) are promoted as soon as the last analysis passed, as a watchful human would.

    rows = await backtest(spec, "ml", "fraud", provider, start, end, canary_revision="f6e5...",
                          stable_revision="a1b2...")
    print(render_table(rows)); print(outcome(rows))
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import yaml

from modelrollout import core
from modelrollout.analysis import measure
from modelrollout.core import Action, Commands, Observations, Phase, Workload, command_value
from modelrollout.providers import MetricsProvider, Series
from modelrollout.spec import PlatformPolicy, RolloutSpec, SpecError, parse_duration, parse_spec
from modelrollout.status import RolloutStatus

_NOTABLE = (Action.ADVANCE, Action.PAUSE, Action.PROMOTE, Action.PROMOTED, Action.ROLLBACK)
MAX_CYCLES = 200_000  # a guard: decide() always moves time forward, this is never reached in practice


# ---------------------------------------------------------------- time arguments

_RELATIVE = re.compile(r"^-\s*(.+)$")


def parse_time(text: str, now: datetime) -> datetime:
    """'now', '-30m' / '-1h30m' (before `now`), RFC 3339 ('2024-05-01T12:00:00Z', offsets too)
    or Unix seconds -> an aware UTC datetime."""
    text = text.strip()
    if not text:
        raise ValueError("empty time")
    if text.lower() == "now":
        return now.astimezone(UTC)
    relative = _RELATIVE.match(text)
    if relative and not re.match(r"^-?\d{4}-", text):
        return (now - timedelta(seconds=parse_duration(relative.group(1).strip()))).astimezone(UTC)
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return datetime.fromtimestamp(float(text), tz=UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use now, -30m, RFC 3339 (2024-05-01T12:00:00Z) "
                         "or Unix seconds") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone: add Z or an offset like +02:00")
    return moment.astimezone(UTC)


# ---------------------------------------------------------------- the replay

@dataclass(frozen=True)
class MetricResult:
    metric: str
    verdict: str
    value: float | None
    reason: str


@dataclass(frozen=True)
class BacktestRow:
    """One moment of the replay where something happened: an analysis ran or the state changed."""

    at: datetime
    step: int | None
    weight: int
    phase: str
    action: str
    metrics: tuple[MetricResult, ...]
    message: str


class _AtTime:
    """A provider whose instant queries are evaluated at one past moment."""

    def __init__(self, provider: MetricsProvider, at: datetime) -> None:
        self._provider = provider
        self._at = at

    async def run_query(self, query: str, *, at: datetime | None = None) -> list[Series]:
        return await self._provider.run_query(query, at=at or self._at)

    async def is_online(self) -> bool:
        return await self._provider.is_online()


def _initial_status(spec: RolloutSpec, start: datetime, stable: str) -> RolloutStatus:
    return RolloutStatus(phase=Phase.PROGRESSING.value, stable_revision=stable, canary_revision=spec.revision,
                         canary_model_version=spec.model.version, current_step=0, canary_weight=0,
                         rollout_started_at=core.ts(start), passed_checks=0)


def _manual_gate_passed(spec: RolloutSpec, status: RolloutStatus) -> bool:
    """At a step without hold, the last analysis of this step passed: a human would promote."""
    if status.phase != Phase.PAUSED.value or not status.canary_revision:
        return False
    steps = spec.strategy.steps
    step = steps[min(status.current_step or 0, len(steps) - 1)]
    if step.hold is not None:
        return False
    if not spec.analysis.metrics:
        return True
    last = core.parse_ts(status.last_analysis_at)
    started = core.parse_ts(status.step_started_at)
    results = status.last_analysis
    return (last is not None and started is not None and last >= started and bool(results)
            and all(r.verdict == "Pass" for r in results))


async def backtest(spec: RolloutSpec, namespace: str, name: str, provider: MetricsProvider,
                   start: datetime, end: datetime, canary_revision: str | None = None,
                   stable_revision: str | None = None) -> list[BacktestRow]:
    """Replay the analysis between `start` and `end` (aware datetimes); see the module doc.

    `canary_revision` / `stable_revision` are the revisions the queries select (the values of
    {{ revision }}); the canary defaults to the spec's own template revision.
    """
    if end <= start:
        raise ValueError("the end of a backtest must be after its start")
    canary = canary_revision or spec.revision
    stable = stable_revision or ""
    internal_stable = stable if stable and stable != spec.revision else "stable"
    status = _initial_status(spec, start, internal_stable)
    workloads = {spec.revision: Workload(replicas=spec.replicas, ready=spec.replicas),
                 internal_stable: Workload(replicas=spec.replicas, ready=spec.replicas)}
    rows: list[BacktestRow] = []
    now = start
    promotes = 0
    for _ in range(MAX_CYCLES):
        samples = None
        commands = Commands()
        if _manual_gate_passed(spec, status):
            promotes += 1  # right after a passing analysis at a manual gate: promote, as a human would
            commands = Commands(promote=command_value(status.canary_revision or "", status.current_step,
                                                      f"backtest-{promotes}"))
        elif core.analysis_due(spec, status, now):
            shown = status.replace(canary_revision=canary, stable_revision=stable)
            samples = await measure(spec, namespace, name, shown, _AtTime(provider, now), now)
        # The replay's cluster carries at once whatever weight the status asks for.
        carried = core.target_weight(spec, status, workloads)
        decision = core.decide(spec, status, Observations(generation=1, workloads=workloads, traffic=carried,
                                                          commands=commands, samples=samples), now)
        before = (status.phase, status.current_step)
        status = decision.status
        changed = (status.phase, status.current_step) != before
        if samples is not None or changed or decision.action in _NOTABLE:
            message = status.message or ""
            if commands.promote:
                message = f"manual gate passed, promoted by the backtest; {message}"
            rows.append(_row(now, status, decision.action, samples is not None, message))
        if status.phase in (Phase.ROLLED_BACK.value, Phase.SUCCEEDED.value):
            break
        wait = max(0.05, decision.requeue_after)  # the operator's own next wake-up
        if _manual_gate_passed(spec, status):
            continue  # promote at once, at the same moment (needs no metrics, even at `end`)
        if status.phase == Phase.PROMOTING.value:
            now += timedelta(seconds=wait)  # promotion needs no metrics: let it finish past `end`
            continue
        if now >= end:
            break
        now = min(end, now + timedelta(seconds=wait))
    return rows


def _row(now: datetime, status: RolloutStatus, action: Action, analysed: bool, message: str) -> BacktestRow:
    metrics: tuple[MetricResult, ...] = ()
    if analysed:
        metrics = tuple(MetricResult(r.metric, r.verdict, r.value, r.reason) for r in status.last_analysis)
    return BacktestRow(at=now, step=status.current_step, weight=status.canary_weight or 0,
                       phase=str(status.phase), action=action.value, metrics=metrics, message=message)


# ---------------------------------------------------------------- presentation

def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def render_table(rows: list[BacktestRow]) -> str:
    metric_names: list[str] = []
    for row in rows:
        for m in row.metrics:
            if m.metric not in metric_names:
                metric_names.append(m.metric)
    header = ["time", "step", "weight", *metric_names, "decision"]
    table = [header]
    for row in rows:
        results = {m.metric: m for m in row.metrics}
        cells = [row.at.strftime("%H:%M:%S"), "-" if row.step is None else str(row.step), str(row.weight)]
        for name in metric_names:
            m = results.get(name)
            cells.append("" if m is None else f"{m.verdict.lower()} {_value(m.value)}")
        cells.append(f"{row.action}: {row.message}")
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    lines = []
    for cells in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + cells[-1])
    return "\n".join(line.rstrip() for line in lines)


def outcome(rows: list[BacktestRow]) -> str:
    """One line: what the operator would have done over this history."""
    if not rows:
        return "nothing happened: no analysis was due in this time range"
    last = rows[-1]
    when = last.at.strftime("%H:%M:%S")
    if last.phase == Phase.ROLLED_BACK.value:
        why = last.message.removeprefix("rolled back: ")
        return f"would have rolled back at {when}: {why}"
    if last.phase == Phase.SUCCEEDED.value:
        return f"would have promoted at {when}"
    step = "-" if last.step is None else last.step
    return f"undecided at {when}: step {step} (weight {last.weight}), {last.phase}: {last.message}"


# ---------------------------------------------------------------- the command

def _load(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    with open(path) as f:
        documents = [d for d in yaml.safe_load_all(f) if d]
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "ModelRollout":
            return document.get("metadata") or {}, document.get("spec") or {}
    if len(documents) == 1 and isinstance(documents[0], dict) and "strategy" in documents[0]:
        return {}, documents[0]  # a bare spec
    raise click.BadParameter(f"{path} holds no ModelRollout", param_hint="-f")


def _local_policy(raw: dict[str, Any], prometheus_url: str | None) -> PlatformPolicy:
    """A backtest runs on the user's machine with their own access: the spec's Prometheus is allowed
    (it gets no token), and webhooks, which a backtest never calls, do not make the spec invalid; nor do
    timeouts the platform's operator may allow."""
    named = ((raw.get("analysis") or {}).get("prometheus") or {}).get("address")
    return PlatformPolicy(prometheus_url=prometheus_url, allowed_prometheus_urls=(named,) if named else (),
                          allowed_webhook_urls=("*",), max_call_timeout=math.inf)


@click.command("backtest")
@click.option("-f", "--filename", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A ModelRollout manifest (or its spec).")
@click.option("--from", "start_text", default="-30m", show_default=True,
              help="Start: RFC 3339, Unix seconds, or a duration ago like -30m.")
@click.option("--to", "end_text", default="now", show_default=True, help="End: RFC 3339, Unix seconds, -5m or now.")
@click.option("--prometheus", "prometheus_url", envvar="MODELROLLOUT_PROMETHEUS_URL", default=None,
              help="Prometheus to ask (default: the spec's analysis.prometheus.address).")
@click.option("--canary-revision", default=None, help="Revision label of the canary (default: the template's revision).")
@click.option("--stable-revision", default=None, help="Revision label of the stable revision, for comparisons.")
@click.option("--namespace", default=None, help="Namespace for {{ namespace }} (default: the manifest's, else default).")
@click.option("--name", default=None, help="Rollout name for {{ name }} (default: the manifest's).")
def backtest_command(filename: str, start_text: str, end_text: str, prometheus_url: str | None,
                     canary_revision: str | None, stable_revision: str | None, namespace: str | None,
                     name: str | None) -> None:
    """Replay a rollout's analysis over Prometheus history and say what would have happened."""
    from modelrollout.providers import make_provider

    metadata, raw = _load(filename)
    try:
        spec = parse_spec(raw, _local_policy(raw, prometheus_url))
    except SpecError as exc:
        raise click.ClickException(f"invalid spec: {exc}") from None
    if not spec.analysis.metrics:
        raise click.ClickException("the spec has no analysis.metrics: nothing to replay")
    address = prometheus_url or (spec.analysis.prometheus.address if spec.analysis.prometheus else None)
    if not address:
        raise click.ClickException("no Prometheus: pass --prometheus")
    now = datetime.now(UTC)
    try:
        start, end = parse_time(start_text, now), parse_time(end_text, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if end <= start:
        raise click.BadParameter("--to must be after --from")
    namespace = namespace or metadata.get("namespace") or "default"
    name = name or metadata.get("name") or spec.model.name or "rollout"
    timeout = spec.analysis.prometheus.timeout if spec.analysis.prometheus else 10.0
    provider = make_provider("prometheus", address, timeout=timeout)

    async def run() -> list[BacktestRow]:
        return await backtest(spec, namespace, name, provider, start, end, canary_revision, stable_revision)

    try:
        rows = asyncio.run(run())
    finally:
        close = getattr(provider, "close", None)
        if close:
            close()
    click.echo(f"backtest {namespace}/{name}: canary {canary_revision or spec.revision}, "
               f"stable {stable_revision or '-'}, {start:%Y-%m-%dT%H:%M:%SZ} .. {end:%Y-%m-%dT%H:%M:%SZ} (UTC), "
               f"interval {spec.analysis.interval:g}s, {address}")
    if rows:
        click.echo(render_table(rows))
    click.echo(outcome(rows))
