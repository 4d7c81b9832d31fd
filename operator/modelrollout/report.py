"""The incident report of a rollout's last release (`kubectl modelrollout report`), as a debugging worksheet.

Sections: what changed (the pod template diff between stable and canary), the timeline (the release's
start, every event, the decision and who made it), the evidence (each metric's value, threshold,
samples, statistics and the exact query), the impact (canary requests and errors as Prometheus counted
them over the release's window, with the queries), and a chart drawn from Prometheus history (step
weights, each metric with its threshold). Building is pure (objects in, text out); `Prometheus` is the
one reader of numbers, and `draw_png` needs matplotlib (the `lab` extra) and says so when it is missing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from modelrollout.analysis import query_values
from modelrollout.core import parse_ts, ts
from modelrollout.names import LABEL_REVISION
from modelrollout.providers import PROMETHEUS_ERROR_TYPES
from modelrollout.spec import (MetricRule, MetricType, RolloutSpec, SpecError, format_duration, parse_spec,
                               reading_policy, render_query)
from modelrollout.status import MetricResult, RolloutStatus

PNG_SIZE = (1000, 250)  # pixels: width, height per panel (the weights panel plus one per metric)
_STEP_EVENT = re.compile(r"step (\d+): canary weight (\d+)")


Series = tuple[dict[str, str], list[tuple[datetime, float]]]


class ReportError(RuntimeError):
    """Something the report cannot do, said in one line."""


# ---------------------------------------------------------------- the release

@dataclass(frozen=True)
class Release:
    revision: str
    stable_revision: str
    result: str  # RolledBack | Promoted | Superseded | InProgress
    reason: str
    model_version: str
    started: datetime
    finished: datetime

    @property
    def seconds(self) -> float:
        return max(1.0, (self.finished - self.started).total_seconds())


def last_release(status: RolloutStatus, now: datetime) -> Release | None:
    """The running canary if there is one, else the latest finished release (status.history[0])."""
    if status.canary_revision:
        started = parse_ts(status.rollout_started_at) or now
        return Release(status.canary_revision, status.stable_revision or "", "InProgress",
                       status.message or "", status.canary_model_version or "", started, now)
    history = [h for h in status.history if h.result != "Initialized"]
    if not history:
        return None
    entry = history[0]
    previous = next((h.revision for h in history[1:] if h.result == "Promoted"), None)
    initialized = next((h.revision for h in status.history if h.result == "Initialized"), "")
    stable = status.stable_revision or ""
    if entry.result == "Promoted":
        stable = previous or initialized or ""
    finished = parse_ts(entry.finished_at) or now
    return Release(entry.revision or "", stable, entry.result, entry.reason, entry.model_version or "",
                   parse_ts(entry.started_at) or finished, finished)


# ---------------------------------------------------------------- what changed

def _containers(template: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("name", ""): c for c in ((template.get("spec") or {}).get("containers") or [])}


def _env(container: Mapping[str, Any]) -> dict[str, str]:
    return {e.get("name", ""): e["value"] if "value" in e else json.dumps(e.get("valueFrom"), sort_keys=True)
            for e in container.get("env") or []}


def _text(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def template_diff(stable: Mapping[str, Any], canary: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(field, stable, canary) for each difference in image, command, args, env, resources and annotations."""
    rows: list[tuple[str, str, str]] = []
    old, new = _containers(stable), _containers(canary)
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name, {}), new.get(name, {})
        for key in ("image", "command", "args", "resources"):
            if a.get(key) != b.get(key):
                rows.append((f"containers[{name}].{key}", _text(a.get(key)), _text(b.get(key))))
        env_a, env_b = _env(a), _env(b)
        for var in sorted(set(env_a) | set(env_b)):
            if env_a.get(var) != env_b.get(var):
                rows.append((f"containers[{name}].env.{var}", _text(env_a.get(var)), _text(env_b.get(var))))
    notes_a = (stable.get("metadata") or {}).get("annotations") or {}
    notes_b = (canary.get("metadata") or {}).get("annotations") or {}
    for key in sorted(set(notes_a) | set(notes_b)):
        if notes_a.get(key) != notes_b.get(key):
            rows.append((f"annotations.{key}", _text(notes_a.get(key)), _text(notes_b.get(key))))
    return rows


def templates(obj: Mapping[str, Any], spec_revision: str, release: Release,
              deployments: Sequence[Mapping[str, Any]]) -> tuple[tuple[dict[str, Any] | None, str], ...]:
    """(template, where it came from) for stable and canary: their Deployments, or the spec for a canary
    whose Deployment is gone (a rolled-back revision stays in the spec until the next edit)."""
    by_revision = {(d.get("metadata") or {}).get("labels", {}).get(LABEL_REVISION): d for d in deployments}
    found = []
    for revision in (release.stable_revision, release.revision):
        deployment = by_revision.get(revision)
        if deployment is not None:
            found.append((((deployment.get("spec") or {}).get("template") or {}),
                          f"Deployment {deployment['metadata']['name']}"))
        elif revision == spec_revision:
            found.append(((obj.get("spec") or {}).get("template") or {}, "spec.template"))
        else:
            found.append((None, "gone (its Deployment was deleted)"))
    return tuple(found)


# ---------------------------------------------------------------- the timeline

@dataclass(frozen=True)
class Moment:
    at: datetime
    what: str
    by: str


def event_time(event: Mapping[str, Any]) -> datetime | None:
    for key in ("eventTime", "lastTimestamp", "firstTimestamp"):
        moment = parse_ts(event.get(key)) if isinstance(event.get(key), str) else event.get(key)
        if moment:
            return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return parse_ts((event.get("metadata") or {}).get("creationTimestamp"))


def _who(text: str) -> str:
    if "by user" in text or "on request" in text:
        return "a person (kubectl modelrollout / annotation)"
    if "template changed" in text or "template reverted" in text:
        return "a spec change (kubectl apply / GitOps)"
    return "the operator"


def timeline(release: Release, events: Sequence[Mapping[str, Any]], verdicts: Sequence[Moment] = ()) -> list[Moment]:
    """The release's start (an applied template), every event of the rollout within its window, the
    analyses' verdicts (see verdict_runs), and the decision."""
    moments = [Moment(release.started, f"revision {release.revision} (model {release.model_version}) applied; "
                                       "canary started", "a spec change (kubectl apply / GitOps)"), *verdicts]
    posted = timedelta(seconds=2)  # kopf posts events just after the decision that made them
    for event in events:
        at = event_time(event)
        if at is None or not release.started <= at <= release.finished + posted:
            continue
        text = f"{event.get('type', '')} {event.get('reason', '')}: {event.get('message', '')}"
        moments.append(Moment(at, text, _who(event.get("message", ""))))
    if release.result != "InProgress":
        moments.append(Moment(release.finished, f"decision: {release.result}: {release.reason}", _who(release.reason)))
    return sorted(moments, key=lambda m: m.at)


def step_weights(release: Release, events: Sequence[Mapping[str, Any]]) -> list[tuple[datetime, int]]:
    """The canary weight each step asked for, from the StepStarted events, ending at 0 on a rollback;
    none when no event of the release is left (events expire: an unknown weight is not a weight of 0)."""
    if not any((at := event_time(event)) and release.started <= at <= release.finished for event in events):
        return []
    points = [(release.started, 0)]
    for event in sorted(events, key=lambda e: event_time(e) or release.started):
        at = event_time(event)
        found = _STEP_EVENT.search(event.get("message") or "")
        if at and found and event.get("reason") == "StepStarted" and release.started <= at <= release.finished:
            points.append((at, int(found.group(2))))
    if release.result == "RolledBack":
        points.append((release.finished, 0))
    elif release.result == "Promoted":
        points.append((release.finished, 100))
    return points


# ---------------------------------------------------------------- numbers from Prometheus

class Prometheus:
    """Instant and range queries (the HTTP API); errors are ReportError with the status code and Prometheus'
    error type, never the answer's text (the address may be the one the rollout's author wrote)."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.address = address.rstrip("/")
        self._client = httpx.Client(timeout=timeout)

    def _get(self, endpoint: str, params: dict[str, str]) -> list[dict[str, Any]]:
        try:
            response = self._client.get(f"{self.address}/api/v1/{endpoint}", params=params)
        except httpx.HTTPError as exc:
            raise ReportError(f"Prometheus {self.address}: {type(exc).__name__}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or payload.get("status") != "success":
            error_type = payload.get("errorType") if isinstance(payload, dict) else None
            detail = f" ({error_type})" if error_type in PROMETHEUS_ERROR_TYPES else ""
            raise ReportError(f"Prometheus {self.address}: HTTP {response.status_code}{detail}")
        return list(payload["data"]["result"])

    def vector(self, query: str, at: datetime) -> list[tuple[dict[str, str], float]]:
        """Every series at `at`: (labels, value)."""
        result = self._get("query", {"query": query, "time": f"{at.timestamp():.3f}"})
        return [(dict(r.get("metric") or {}), float(r["value"][1])) for r in result]

    def instant(self, query: str, at: datetime) -> float | None:
        """The sum of every series at `at` (None: no series)."""
        result = self.vector(query, at)
        return float(sum(value for _, value in result)) if result else None

    def matrix(self, query: str, start: datetime, end: datetime, step: float) -> list[Series]:
        """Every series over [start, end]: (labels, [(time, value), ...])."""
        result = self._get("query_range", {"query": query, "start": f"{start.timestamp():.3f}",
                                           "end": f"{end.timestamp():.3f}", "step": f"{step:g}"})
        return [(dict(series.get("metric") or {}),
                 [(datetime.fromtimestamp(float(t), timezone.utc), float(v)) for t, v in series["values"]])
                for series in result]

    def series(self, query: str, start: datetime, end: datetime, step: float) -> list[tuple[datetime, float]]:
        """The sum of every series over [start, end]."""
        sums: dict[datetime, float] = {}
        for _, points in self.matrix(query, start, end, step):
            for t, v in points:
                sums[t] = sums.get(t, 0.0) + v
        return sorted(sums.items())


def report_spec(obj: Mapping[str, Any], prometheus_url: str | None) -> RolloutSpec:
    """The spec with its preset's queries resolved; the report only reads, so any address is accepted."""
    spec = dict(obj.get("spec") or {})
    try:
        return parse_spec(spec, reading_policy(spec, prometheus_url))
    except SpecError as exc:
        raise ReportError(f"the spec does not parse ({exc.field}: {exc.message})") from None


def canary_values(spec: RolloutSpec, obj: Mapping[str, Any], release: Release, window: float,
                  revision: str | None = None) -> dict[str, str]:
    meta = obj["metadata"]
    status = RolloutStatus(canary_revision=release.revision, stable_revision=release.stable_revision)
    values = query_values(spec, meta["namespace"], meta["name"], status, revision or release.revision, release.finished)
    values["window"] = format_duration(window)
    return values


def _bad_events_query(rule: MetricRule) -> str | None:
    """The query counting bad events of an error-like metric (a `max`): a proportion's `query`, or the
    numerator of a ratio query `errors / requests`."""
    if rule.max is None:
        return None
    if rule.type is MetricType.PROPORTION and rule.query:
        return rule.query
    if rule.type is MetricType.THRESHOLD and rule.query:
        depth, text = 0, rule.query  # the template is not PromQL yet ({{ placeholders }}): split its text
        for index, char in enumerate(text):
            depth += char in "([{"
            depth -= char in ")]}"
            if char == "/" and depth == 0:
                return text[:index].strip()
    return None


@dataclass(frozen=True)
class Count:
    label: str
    value: float | None
    query: str


@dataclass
class Impact:
    at: datetime
    window: float
    counts: list[Count] = field(default_factory=list)


def impact(spec: RolloutSpec, obj: Mapping[str, Any], release: Release, prometheus: Prometheus) -> Impact:
    """Canary requests and bad events over the release's whole window, as Prometheus counts them. A finished
    release's window runs one analysis interval past the decision: the decision's last analysis was scraped
    after it, and the canary served until the weight it decided reached the route."""
    end = release.finished
    if release.result != "InProgress":
        end += timedelta(seconds=spec.analysis.interval)
    window = (end - release.started).total_seconds()
    values = canary_values(spec, obj, release, window)
    result = Impact(end, window)
    samples = spec.analysis.samples.query
    if samples:
        query = render_query(samples, values)
        result.counts.append(Count("canary requests served", prometheus.instant(query, end), query))
    for rule in spec.analysis.metrics:
        bad = _bad_events_query(rule)
        if bad:
            query = render_query(bad, values)
            result.counts.append(Count(f"canary bad events ({rule.name})", prometheus.instant(query, end), query))
    return result


def verdicts_query(namespace: str, name: str) -> str:
    """The operator's own counters of its verdicts on one rollout, rendered like every query (render_query)."""
    template = 'modelrollout_analysis_verdicts_total{namespace="{{ namespace }}", name="{{ name }}"}'
    return render_query(template, {"namespace": namespace, "name": name})


def verdict_runs(matrix: Sequence[Series], start: datetime) -> list[Moment]:
    """The analyses' verdicts from the operator's counters by metric and verdict, as Prometheus sampled
    them from `start`: each sample where a counter rose is one analysis (its time: when Prometheus saw
    it), and consecutive analyses with the same verdicts are one row ("x N, the last at ...")."""
    seen: dict[datetime, dict[str, str]] = {}
    for labels, points in matrix:
        # A series first sampled after `start` was born in the window: it rose from 0.
        previous = 0.0 if points and points[0][0] > start else None
        for at, value in points:
            if previous is not None and value != previous:
                rose = value - previous if value > previous else value  # below: the operator restarted
                seen.setdefault(at, {})[labels.get("metric", "")] = \
                    labels.get("verdict", "") + (f" x{rose:.0f}" if round(rose) > 1 else "")
            previous = value
    runs: list[tuple[datetime, datetime, str, int]] = []
    for at in sorted(seen):
        what = ", ".join(f"{metric} {verdict}" for metric, verdict in sorted(seen[at].items()))
        if runs and runs[-1][2] == what:
            first, _, _, count = runs[-1]
            runs[-1] = (first, at, what, count + 1)
        else:
            runs.append((at, at, what, 1))
    return [Moment(first, f"analysis: {what}" + (f" (x{count}, the last at {ts(last)})" if count > 1 else ""),
                   "the operator (analysis)") for first, last, what, count in runs]


def verdict_moments(spec: RolloutSpec, obj: Mapping[str, Any], release: Release,
                    prometheus: Prometheus) -> tuple[str, list[Moment]]:
    """(the query, every verdict of the release) if Prometheus scrapes the operator's /metrics (else no
    verdicts). The deciding analysis is scraped after the decision: the range ends a little after it."""
    meta = obj["metadata"]
    # Each operator process's counters on their own: summed, a replaced pod's series ending would read as a reset.
    query = verdicts_query(meta["namespace"], meta["name"])

    step = max(1.0, spec.analysis.interval / 2, release.seconds / 5000)
    start, end = release.started - timedelta(seconds=step), release.finished + timedelta(seconds=3 * step)
    return query, verdict_runs(prometheus.matrix(query, start, end, step), start)


def metric_series(spec: RolloutSpec, obj: Mapping[str, Any], release: Release,
                  prometheus: Prometheus) -> dict[str, list[tuple[datetime, float]]]:
    """Each metric with one value (threshold or proportion) as the analysis saw it, one interval at a time,
    across the release (and a margin)."""
    interval = spec.analysis.interval
    values = canary_values(spec, obj, release, interval)
    margin = timedelta(seconds=max(2 * interval, 10))
    step = max(1.0, (release.seconds + 2 * margin.total_seconds()) / 300)
    found = {}
    for rule in spec.analysis.metrics:
        query = _value_query(rule)
        if query:
            points = prometheus.series(render_query(query, values), release.started - margin,
                                       release.finished + margin, step)
            found[rule.name] = [(t, v) for t, v in points if math.isfinite(v)]
    return found


def weight_history(obj: Mapping[str, Any], release: Release, prometheus: Prometheus,
                   step: float) -> list[tuple[datetime, float]]:
    """The canary weight the operator recorded (its modelrollout_canary_weight), if Prometheus scrapes it."""
    meta = obj["metadata"]
    query = f'max(modelrollout_canary_weight{{namespace="{meta["namespace"]}", name="{meta["name"]}"}})'
    return prometheus.series(query, release.started - timedelta(seconds=step),
                             release.finished + timedelta(seconds=3 * step), step)  # the decision's weight, scraped


def weight_changes(weights: Sequence[tuple[datetime, float]]) -> list[Moment]:
    """A timeline row for each change of the recorded canary weight."""
    changes, previous = [], None
    for at, weight in weights:
        if weight != previous:
            changes.append(Moment(at, f"canary weight {weight:g}% (modelrollout_canary_weight, as Prometheus "
                                      "scraped it)", "the operator"))
        previous = weight
    return changes


def _value_query(rule: MetricRule) -> str | None:
    """The query of the value a rule bounds: its own, or for a proportion the rate of bad events (or successes)."""
    if rule.type is MetricType.THRESHOLD:
        return rule.query
    if rule.type is MetricType.PROPORTION and rule.total_query:
        return f"({rule.success_query or rule.query}) / ({rule.total_query})"
    return None  # histogram rules compare distributions: no single line to draw


# ---------------------------------------------------------------- markdown

def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() else f"{value:.6g}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    clean = [[str(cell).replace("|", "\\|").replace("\n", " ") for cell in row] for row in rows]
    return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}", *(f"| {' | '.join(row)} |" for row in clean)]


def markdown(obj: Mapping[str, Any], release: Release, diff: list[tuple[str, str, str]] | None,
             sources: tuple[str, str], moments: list[Moment], evidence: Sequence[MetricResult],
             counts: Impact | str, verdict_query: str | None, chart: str) -> str:
    meta = obj["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    lines = [f"# Incident report: {namespace}/{name}, revision {release.revision}: {release.result}", "",
             f"- **Result:** {release.result}: {release.reason}",
             f"- **Model version:** {release.model_version or '-'}",
             f"- **Window:** {ts(release.started)} to {ts(release.finished)} ({release.seconds:.0f}s)",
             f"- **Stable revision:** {release.stable_revision or '-'}", "",
             "## 1. What changed", "",
             f"Pod template of stable {release.stable_revision} ({sources[0]}) against canary "
             f"{release.revision} ({sources[1]}).", ""]
    if diff is None:
        lines.append("One of the two templates is gone: no diff (compare the revisions in Git).")
    elif not diff:
        lines.append("No difference in images, commands, args, env, resources or annotations.")
    else:
        lines += _table(["Field", "Stable", "Canary"], [(f"`{f}`", f"`{a}`", f"`{b}`") for f, a, b in diff])
    lines += ["", "## 2. Timeline", "", "Events expire (1 h by default); status.history and Prometheus stay.", ""]
    lines += _table(["Time (UTC)", "+s", "What", "By"],
                    [(ts(m.at), f"{(m.at - release.started).total_seconds():.1f}", m.what, m.by) for m in moments])
    if verdict_query is not None:
        analysed = any(m.by == "the operator (analysis)" for m in moments)
        lines += ["", "The analysis rows are the operator's verdict counters (its /metrics) as Prometheus scraped them"
                      + ("" if analysed else ": none in this Prometheus (is it scraping the operator?)") + ":",
                  "", "```promql", verdict_query, "```"]
    lines += ["", "## 3. Evidence", "", "The last analysis (the one that decided), as status.lastAnalysis has it:", ""]
    if not evidence:
        lines.append("No analysis recorded.")
    for result in evidence:
        lines += [f"### {result.metric}: {result.verdict}", "",
                  f"- value **{_number(result.value)}**, threshold **{result.threshold}**, "
                  f"samples **{_number(result.samples)}**, at {result.at}",
                  f"- {result.reason}"]
        for key, value in result.evidence.items():
            lines.append(f"- {key}: {_number(value)}")
        lines += ["", "```promql", result.query, "```", ""]
    lines += ["## 4. Impact", ""]
    if isinstance(counts, str):
        lines.append(counts)
    else:
        lines += [f"Counted by Prometheus over the whole release and one analysis interval past its decision "
                  f"({format_duration(counts.window)}), evaluated at {ts(counts.at)} (`time={counts.at.timestamp():.3f}`):", ""]
        lines += _table(["What", "Count", "Query"], [(c.label, _number(c.value), f"`{c.query}`") for c in counts.counts])
    lines += ["", "## 5. Chart", "", chart, "",
              "## Worksheet", "",
              "- [ ] Is every change in section 1 intended? Which one explains the failing metric?",
              "- [ ] Paste the failing query (section 3) into Prometheus: does the canary differ from stable?",
              "- [ ] Were users hurt (section 4)? Who needs to know?",
              f"- [ ] Fixed: apply a new template; or retry this one: `kubectl modelrollout retry {name} -n {namespace}`",
              ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- the chart

def draw_png(path: str, release: Release, spec: RolloutSpec, weights: Sequence[tuple[datetime, float]],
             series: Mapping[str, list[tuple[datetime, float]]]) -> None:
    """Step weights on top (a note when they are unknown), then each metric with its threshold(s), the
    decision marked on all panels."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportError("--png needs matplotlib: pip install 'modelrollout[lab]' (or pip install matplotlib)") from None
    rules = {rule.name: rule for rule in spec.analysis.metrics}
    panels = 1 + len(series)
    dpi = 100
    figure, axes = plt.subplots(panels, 1, sharex=True, figsize=(PNG_SIZE[0] / dpi, PNG_SIZE[1] * panels / dpi), dpi=dpi,
                                squeeze=False)
    top = axes[0][0]
    if weights:
        times, values = zip(*weights)
        top.step(list(times) + [max(times[-1], release.finished)], list(values) + [values[-1]], where="post",
                 color="tab:blue")
    else:
        top.text(0.5, 0.5, "weights unknown: the release's events expired and Prometheus does not scrape the operator",
                 transform=top.transAxes, ha="center", va="center", color="grey")
    top.set_ylabel("canary weight %")
    top.set_ylim(-5, 105)
    top.set_title(f"{release.revision}: {release.result}")
    for axis, (name, points) in zip((row[0] for row in axes[1:]), series.items()):
        if points:
            axis.plot([t for t, _ in points], [v for _, v in points], color="tab:orange", label=name)
        rule = rules[name]
        for bound, text in ((rule.max, "max"), (rule.min, "min")):
            if bound is not None:
                axis.axhline(bound, color="tab:red", linestyle="--", label=f"{text} {bound:g}")
        axis.set_ylabel(name)
        axis.legend(loc="upper left", fontsize="small")
    for row in axes:
        row[0].axvline(release.finished, color="grey", linestyle=":")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)


# ---------------------------------------------------------------- all of it

@dataclass(frozen=True)
class Built:
    text: str
    png_error: str | None = None  # why --png wrote nothing


def accepted_address(obj: Mapping[str, Any], status: RolloutStatus, spec: RolloutSpec) -> str | None:
    """The spec's Prometheus, once the operator accepted this generation of the spec under the platform's
    policy (which the report cannot see); before that, or if refused, the address may be anything."""
    accepted = status.observed_generation == (obj.get("metadata") or {}).get("generation") and status.phase != "InvalidSpec"
    return spec.analysis.prometheus.address if accepted and spec.analysis.prometheus else None


def build(obj: Mapping[str, Any], deployments: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]],
          prometheus_url: str | None, png: str | None, now: datetime) -> Built:
    """The report of `obj`'s last release; numbers from Prometheus at `prometheus_url` (else the spec's address)."""
    status = RolloutStatus.parse_lenient(obj.get("status"))[0]
    release = last_release(status, now)
    if release is None:
        raise ReportError(f"{obj['metadata']['name']} has had no release yet (only its first revision)")
    spec = report_spec(obj, prometheus_url)
    stable, canary = templates(obj, spec.revision, release, deployments)
    diff = template_diff(stable[0], canary[0]) if stable[0] is not None and canary[0] is not None else None
    evidence = status.last_analysis
    address = prometheus_url or accepted_address(obj, status, spec)
    counts: Impact | str
    verdict_query = None
    analyses: list[Moment] = []
    series: dict[str, list[tuple[datetime, float]]] = {}
    weights: Sequence[tuple[datetime, float]] = []
    prometheus = Prometheus(address) if address else None
    try:
        if prometheus is None:
            raise ReportError("no Prometheus address the operator accepted in the spec: pass --prometheus-url "
                              "(e.g. after kubectl port-forward)")
        counts = impact(spec, obj, release, prometheus)
        verdict_query, analyses = verdict_moments(spec, obj, release, prometheus)
        weights = weight_history(obj, release, prometheus, max(1.0, spec.analysis.interval / 2, release.seconds / 5000))
        if png:
            series = metric_series(spec, obj, release, prometheus)
    except ReportError as exc:
        counts = f"Not counted: {exc}."
    if not step_weights(release, events):  # the release's events expired: its steps from the weights Prometheus kept
        analyses += weight_changes(weights)
    moments = timeline(release, events, analyses)
    chart, png_error = "Run with `--png FILE` for a chart of the step weights and each metric against its threshold.", None
    if png:
        source = "the operator's modelrollout_canary_weight in Prometheus" if weights else "the StepStarted events"
        weights = weights or step_weights(release, events)
        try:
            draw_png(png, release, spec, weights, series)
            chart = f"![timeline]({png}): step weights ({source if weights else 'unknown'}), then each metric " \
                    "(as one analysis interval sees it) with its threshold; the dotted line is the decision."
        except ReportError as exc:
            chart, png_error = f"No chart: {exc}.", str(exc)
    return Built(markdown(obj, release, diff, (stable[1], canary[1]), moments, evidence, counts, verdict_query, chart),
                 png_error)
