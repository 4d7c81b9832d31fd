"""`modelrollout-lab demo`: v1 becomes stable, v2 (good) is promoted, v3 (bad) is rolled back.

Everything runs for real in the lab: the operator process decides from Prometheus's answers
about simulated traffic. Progress is shown live; the end is a summary table and a PNG
timeline of canary weight, error rate, latency and quality with every decision and each metric's
threshold marked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from modelrollout.status import RolloutStatus
from modelrollout_lab import scenarios
from modelrollout_lab.lab import Lab

NAME = "fraud-detector"
STEPS = [{"weight": 10, "hold": "6s"}, {"weight": 30, "hold": "6s"}, {"weight": 60, "hold": "6s"}]
METRICS = [
    {"name": "error-rate", "max": 0.01, "critical": True},
    {"name": "latency-p95", "max": 0.25, "failureLimit": 2},
    {"name": "quality", "min": 0.85, "minSamples": 30},
]
RELEASES = [
    ("1.0.0", "first version: becomes stable directly", {}),
    ("2.0.0", "a better model: should be promoted", {"accuracy": "0.94", "latency-ms": "35"}),
    ("3.0.0", "a broken model: 6% errors, should be rolled back", {"error-rate": "0.06"}),
]


@dataclass
class Mark:
    at: float
    label: str
    kind: str  # step | promoted | rolledback | start


@dataclass
class Recording:
    started: float = field(default_factory=time.time)
    weights: list[tuple[float, int]] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)


def _status(lab: Lab) -> RolloutStatus:
    return RolloutStatus.parse_lenient(lab.status(NAME))[0]


def _status_table(status: RolloutStatus, elapsed: float, release: str) -> Table:
    table = Table(title=f"modelrollout demo - {release}  ({elapsed:.0f}s)", expand=True)
    for column in ("phase", "stable", "canary", "step", "weight", "message"):
        table.add_column(column)
    table.add_row(status.phase or "-", status.stable_revision or "-", status.canary_revision or "-",
                  "-" if status.current_step is None else str(status.current_step), f"{status.canary_weight or 0}%",
                  status.message or "")
    for result in status.last_analysis:
        table.add_row("", "", "", "", result.verdict, f"{result.metric}: {result.reason}")
    return table


def _watch_release(lab: Lab, live: Live, rec: Recording, version: str, done: Any, timeout: float) -> RolloutStatus:
    deadline = time.monotonic() + timeout
    last_step = last_phase = None
    while time.monotonic() < deadline:
        status = _status(lab)
        now = time.time() - rec.started
        rec.weights.append((now, status.canary_weight or 0))
        step, phase = status.current_step, status.phase
        if step is not None and step != last_step and status.canary_weight:
            rec.marks.append(Mark(now, f"{version} step {step}: {status.canary_weight}%", "step"))
        last_step = step
        live.update(_status_table(status, now, f"releasing {version}"))
        if phase != last_phase and done(status):
            return status
        time.sleep(0.25)
    raise TimeoutError(f"release {version} did not finish in {timeout}s:\n" + lab.operator_log()[-3000:])


def run_demo(png: str | None, console: Console | None = None, workdir: str | None = None) -> list[dict[str, Any]]:
    console = console or Console()
    rec = Recording()
    with Lab(workdir, seed=1) as lab:
        lab.start_operator()
        manifest: dict[str, Any] | None = None
        with Live(console=console, refresh_per_second=4) as live:
            for version, story, behaviour in RELEASES:
                if manifest is not None:
                    time.sleep(4)  # a few seconds of the new stable serving alone, visible in the timeline
                begun = time.time()
                rec.marks.append(Mark(begun - rec.started, f"apply {version}", "start"))
                if manifest is None:
                    docs = scenarios.manifests(NAME, rps=300, version=version, behaviour=behaviour, steps=STEPS,
                                               metrics=METRICS, min_samples=200, replicas=10)
                    for doc in docs:
                        lab.apply(doc)
                    manifest = docs[-1]
                else:
                    manifest = scenarios.release(manifest, version, behaviour)
                    lab.apply(manifest)
                before = len(_status(lab).history)
                status = _watch_release(
                    lab, live, rec, version,
                    lambda s: len(s.history) > before and s.phase in ("Succeeded", "RolledBack"),
                    timeout=120)
                entry = status.history[0]
                kind = {"Promoted": "promoted", "RolledBack": "rolledback"}.get(entry.result, "step")
                rec.marks.append(Mark(time.time() - rec.started, f"{version} {entry.result}", kind))
                rec.summary.append({"version": version, "story": story, "revision": entry.revision,
                                    "result": entry.result, "reason": entry.reason,
                                    "seconds": round(time.time() - begun, 1)})
        time.sleep(2)  # let Prometheus scrape the last seconds
        if png:
            from modelrollout_lab.timeline import draw_timeline

            draw_timeline(lab.prometheus, NAME, rec, png, METRICS)
    table = Table(title="modelrollout demo: summary")
    for column in ("version", "revision", "result", "reason", "duration"):
        table.add_column(column)
    for row in rec.summary:
        table.add_row(row["version"], row["revision"], row["result"], row["reason"], f"{row['seconds']}s")
    console.print(table)
    if png:
        console.print(f"timeline written to {Path(png).resolve()}")
    return rec.summary
