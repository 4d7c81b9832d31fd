"""The benchmark harness: runs scenarios for both policies in one lab and measures them.

Everything here is shared by `benchmarks.run` and tests/bench (same code, smaller sizes).
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from benchmarks import specs
from benchmarks.baseline import (ARGO_EXAMPLE, FLAGGER_DOCUMENTED, FLAGGER_SAME_CLOCK, BaselineController,
                                 BaselinePolicy, BaselineSubject)
from benchmarks.specs import Scenario
from modelrollout_lab.lab import Lab
from modelrollout.manifests import service_name
from modelrollout.names import GROUP, PLURAL, VERSION
from modelrollout.spec import template_revision
from modelrollout.stats import required_samples

POLL = 0.25

# Policies: ours (the operator, from a spec builder) or a baseline controller's policy.
# Same clock: ours vs baseline. Real cadence: ours-default vs flagger and argo.
OURS: dict[str, Any] = {"ours": specs.ours_rollout, "ours-default": specs.ours_default_rollout}
BASELINES: dict[str, BaselinePolicy] = {"baseline": FLAGGER_SAME_CLOCK, "flagger": FLAGGER_DOCUMENTED,
                                        "argo": ARGO_EXAMPLE}
SAME_CLOCK = ("ours", "baseline")
REAL_CADENCE = ("ours-default", "flagger", "argo")
_LETTER = {"ours": "o", "baseline": "b", "ours-default": "d", "flagger": "f", "argo": "a"}


@dataclass
class Record:
    """One rollout of one policy in one scenario: the figures the report is built from."""

    scenario: str
    policy: str                      # a key of OURS or BASELINES
    run: int
    name: str
    expected: str                    # rollback | promote | hold
    outcome: str = "undecided"       # promoted | rolled_back | undecided
    correct: bool = False
    false_rollback: bool = False
    seconds_to_weight0: float | None = None    # canary turned bad -> canary gets no traffic
    bad_requests: float | None = None          # bad requests served before that
    canary_requests_to_decide: float | None = None
    floor_requests: float | None = None        # statistical floor (modelrollout.stats.required_samples)
    seconds_to_promote: float | None = None    # release -> promoted (healthy): the new revision is stable
    seconds_to_all_traffic: float | None = None  # release -> the new revision serves all traffic (ours: its watch)
    seconds_to_decide: float | None = None     # release -> promoted or rolled back
    max_weight: float = 0.0                    # highest canary traffic share seen (percent)
    outage: dict[str, Any] | None = None
    time_scale: float = 1.0                    # real seconds per lab second (specs.COMPRESSION at real cadence)
    paused: bool = False                       # ours paused undecided (a step past hold + decideWithin) at any time
    t_release: float = 0.0
    t_bad: float | None = None
    t_zero: float | None = None
    t_decided: float | None = None
    t_all_traffic: float | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Subject:
    record: Record
    scenario: Scenario
    canary_revision: str             # the `revision` label of the canary's series
    baseline: BaselineSubject | None = None
    seen_traffic: bool = False
    released: bool = False
    done: bool = False
    last: dict[str, Any] = field(default_factory=dict)


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = 0.0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    import platform
    import subprocess
    try:
        prom = subprocess.run(["prometheus", "--version"], capture_output=True, text=True, timeout=10)
        prom_version = (prom.stdout or prom.stderr).splitlines()[0]
    except Exception:  # noqa: BLE001
        prom_version = "unknown"
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(mem_gb, 1),
            "python": platform.python_version(), "platform": platform.platform(), "prometheus": prom_version}


def _floor(scenario: Scenario) -> float | None:
    if scenario.floor is None:
        return None
    return required_samples(*scenario.floor) / scenario.floor_per_request


# ---------------------------------------------------------------- behaviour scenarios

def run_behaviour(cases: list[tuple[Scenario, tuple[str, ...]]], runs: int = 1, seed: int = 1,
                  workdir: str | None = None, outage: bool = False, progress: Any = None) -> list[Record]:
    """All (scenario, run, policy) rollouts of the cases (a scenario and the policies run on it) at
    once in one lab; returns one Record each."""
    say = progress or (lambda *_: None)
    subjects: list[_Subject] = []
    with Lab(workdir, seed=seed) as lab:
        lab.start_operator("--log-level", "warning")
        controller = BaselineController(lab)
        for scenario, policies in cases:
            for run in range(runs * scenario.runs_per_lab):
                for policy in policies:
                    subjects.append(_install(lab, controller, scenario, run, policy, seed))
        say(f"installed {len(subjects)} rollouts; waiting for the stable versions")
        _wait_stable(lab, subjects)
        controller.start()
        time.sleep(8.0)  # Prometheus' first scrape comes ~5 s after start; some stable history
        release_at = time.time()
        releaser = _Releaser(lab, controller, subjects)
        say(f"releasing {len(subjects)} canaries")
        timeout = max(s.scenario.timeout for s in subjects)
        outage_state = _Outage(lab, release_at) if outage else None
        last_status = 0.0
        statuses: dict[str, dict[str, Any]] = {}
        while not all(s.done for s in subjects):
            releaser.check(deadline=release_at + timeout)
            now = time.time()
            if outage_state is not None:
                outage_state.tick(now, subjects)
            if now - last_status >= 0.5:
                statuses = _ours_statuses(lab)
                last_status = now
            snap = lab.traffic.snapshot()  # type: ignore[union-attr]
            for subject in subjects:
                if subject.released and not subject.done:
                    _observe(subject, snap, statuses, now)
                    if now - subject.record.t_release > subject.scenario.timeout:
                        subject.done = True
            time.sleep(POLL)
        if outage_state is not None:
            outage_state.finish(subjects)
        controller.stop()
    for subject in subjects:
        _finalize(subject)
    return [s.record for s in subjects]


class _Releaser:
    """Releases the canaries one after another in a thread, each stamped with its own release time,
    while the caller already observes the first ones. Released before anyone looked, the last of 105
    canaries went out 8 lab s (two real minutes) after the first: the first were decided, or already
    serving, unseen, and their time to weight 0 was lost or counted from the wrong moment."""

    def __init__(self, lab: Lab, controller: BaselineController, subjects: list[_Subject]) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(lab, controller, subjects), daemon=True)
        self.thread.start()

    def _run(self, lab: Lab, controller: BaselineController, subjects: list[_Subject]) -> None:
        try:
            for subject in subjects:
                subject.record.t_release = time.time()
                _release(lab, controller, subject)
                subject.released = True
        except BaseException as exc:  # noqa: BLE001  (raised in the observing thread by check)
            self.error = exc

    def check(self, deadline: float) -> None:
        if self.error is not None:
            raise RuntimeError("releasing the canaries failed") from self.error
        if self.thread.is_alive() and time.time() > deadline:
            raise TimeoutError("releasing the canaries took longer than the scenarios' timeout")


class _Outage:
    def __init__(self, lab: Lab, release_at: float) -> None:
        self.lab = lab
        self.start_at = release_at + specs.OUTAGE_AFTER
        self.end_at = self.start_at + specs.OUTAGE_FOR
        self.state = "before"
        self.weights_at_start: dict[str, float] = {}

    def tick(self, now: float, subjects: list[_Subject]) -> None:
        if self.state == "before" and now >= self.start_at:
            for s in subjects:
                self.weights_at_start[s.record.name] = s.last.get("weight", 0.0)
                s.record.outage = {"weight_at_start": s.last.get("weight", 0.0), "max_weight_during": 0.0,
                                   "decided_during": None, "outage_seconds": specs.OUTAGE_FOR}
            self.lab.prometheus.stop(keep_data=True)  # type: ignore[union-attr]
            self.state = "down"
        elif self.state == "down":
            for s in subjects:
                o = s.record.outage or {}
                o["max_weight_during"] = max(o.get("max_weight_during", 0.0), s.last.get("weight", 0.0))
                if s.record.t_decided is not None and o.get("decided_during") is None \
                        and s.record.t_decided >= self.start_at:
                    o["decided_during"] = s.record.outcome
            if now >= self.end_at:
                self.lab.prometheus.start()  # type: ignore[union-attr]
                self.state = "up"

    def finish(self, subjects: list[_Subject]) -> None:
        if self.state == "down":
            self.lab.prometheus.start()  # type: ignore[union-attr]
        for s in subjects:
            if s.record.outage is not None:
                o = s.record.outage
                o["advanced_during"] = o["max_weight_during"] > o["weight_at_start"] + 0.5
                o["promoted_during"] = o.get("decided_during") == "promoted"


def _name(scenario: Scenario, run: int, policy: str) -> str:
    return f"{scenario.name}-{_LETTER[policy]}{run}"


def _install(lab: Lab, controller: BaselineController, scenario: Scenario, run: int, policy: str,
             seed: int) -> _Subject:
    name = _name(scenario, run, policy)
    expected = "rollback" if scenario.bad else ("hold" if scenario.rps == 0 else "promote")
    record = Record(scenario=scenario.name, policy=policy, run=run, name=name, expected=expected,
                    floor_requests=_floor(scenario), time_scale=specs.COMPRESSION if policy in REAL_CADENCE else 1.0)
    lab.apply(specs.traffic_configmap(name, f"httproute/{name}", scenario.rps, seed * 1000 + run))
    if policy in OURS:
        lab.apply(specs.http_route(name, [{"name": service_name(name, "stable"), "port": 8080, "weight": 100}]))
        lab.apply(OURS[policy](name, scenario.stable, "1", quality=scenario.quality, drift=scenario.drift))
        revision = template_revision(specs.ours_template(name, scenario.canary, "2"))
        return _Subject(record, scenario, revision)
    subject = BaselineSubject(name, scenario.stable, scenario.canary, BASELINES[policy], quality=scenario.quality)
    controller.install(subject)
    return _Subject(record, scenario, "canary", baseline=subject)


def _wait_stable(lab: Lab, subjects: list[_Subject], timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    pending = {s.record.name for s in subjects if s.baseline is None}
    while pending and time.time() < deadline:
        statuses = _ours_statuses(lab)
        pending = {n for n in pending if statuses.get(n, {}).get("phase") != "Succeeded"}
        time.sleep(0.5)
    if pending:
        raise TimeoutError(f"rollouts never became stable: {sorted(pending)[:5]}\n" + lab.operator_log()[-3000:])
    for s in subjects:
        if s.baseline is not None:
            lab.wait_for(lambda s=s: _ready(lab, f"{s.record.name}-stable"), 60, what="baseline stable")


def _ready(lab: Lab, deployment: str) -> bool:
    dep = lab.apps.read_namespaced_deployment_status(deployment, specs.NAMESPACE)
    return int(dep.status.ready_replicas or 0) >= int(dep.spec.replicas or 1)


def _release(lab: Lab, controller: BaselineController, subject: _Subject) -> None:
    name = subject.record.name
    if subject.baseline is not None:
        controller.release(name)
        return
    lab.patch_rollout(name, {"spec": {"model": {"version": "2"},
                                      "template": specs.ours_template(name, subject.scenario.canary, "2")}},
                      specs.NAMESPACE)


def _ours_statuses(lab: Lab) -> dict[str, dict[str, Any]]:
    items = lab.custom.list_namespaced_custom_object(GROUP, VERSION, specs.NAMESPACE, PLURAL).get("items", [])
    return {o["metadata"]["name"]: (o.get("status") or {}) for o in items}


def _canary_entry(subject: _Subject, snap: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    for entry in snap.values():
        if entry.get("rollout") == subject.record.name and entry.get("revision") == subject.canary_revision:
            return entry
    return None


def _observe(subject: _Subject, snap: dict[str, dict[str, Any]], statuses: dict[str, dict[str, Any]],
             now: float) -> None:
    rec, scenario = subject.record, subject.scenario
    entry = _canary_entry(subject, snap) or {}
    weight = 100.0 * float(entry.get("fraction", 0.0))
    subject.last = {"weight": weight, **{k: entry.get(k, 0) for k in ("requests", "errors", "bad_requests")}}
    rec.max_weight = max(rec.max_weight, weight)
    if weight > 0 and not subject.seen_traffic:
        subject.seen_traffic = True
    if weight >= 99.5 and rec.t_all_traffic is None:  # ours: watched at full traffic before it becomes stable
        rec.t_all_traffic = now
    # When did the canary turn bad?
    if rec.t_bad is None and scenario.bad:
        degrades = "degrade-after-seconds" in scenario.canary
        if (degrades and entry.get("degraded")) or (not degrades and weight > 0):
            rec.t_bad = now
    # Outcome of the policy.
    outcome = None
    if subject.baseline is not None:
        if subject.baseline.all_traffic_at is not None and rec.t_all_traffic is None:
            rec.t_all_traffic = subject.baseline.all_traffic_at
        outcome = {"Promoted": "promoted", "Failed": "rolled_back"}.get(subject.baseline.phase)
        if outcome == "rolled_back":
            rec.reason = f"{subject.baseline.failed_checks} failed checks"
    else:
        status = statuses.get(rec.name, {})
        rec.paused = rec.paused or status.get("phase") == "Paused"
        if rec.outcome == "undecided":  # why, should the run end undecided
            rec.reason = f"{status.get('phase')} at step {status.get('currentStep')}: {status.get('message', '')}"[:300]
        if status.get("phase") == "Succeeded" and status.get("stableRevision") == subject.canary_revision:
            outcome = "promoted"
        elif status.get("phase") == "RolledBack" and status.get("abortedRevision") == subject.canary_revision:
            outcome = "rolled_back"
            rec.reason = str(status.get("message", ""))[:200]
    if outcome and rec.t_decided is None:
        rec.t_decided = now
        if outcome == "promoted" and rec.t_all_traffic is None:
            rec.t_all_traffic = now
        rec.outcome = outcome
        rec.canary_requests_to_decide = float(entry.get("requests", 0))
    if rec.t_decided is not None:
        if rec.outcome == "promoted" or weight <= 0:
            if rec.outcome == "rolled_back" and rec.t_zero is None:
                rec.t_zero = now
                rec.bad_requests = float(entry.get(scenario.bad_measure, 0)) if scenario.bad else 0.0
            subject.done = True


def _finalize(subject: _Subject) -> None:
    rec = subject.record
    if rec.outcome == "promoted":
        rec.seconds_to_promote = rec.t_decided - rec.t_release if rec.t_decided else None
        rec.seconds_to_all_traffic = rec.t_all_traffic - rec.t_release if rec.t_all_traffic else None
    if rec.t_decided is not None:
        rec.seconds_to_decide = rec.t_decided - rec.t_release
    if subject.scenario.bad:
        rec.correct = rec.outcome == "rolled_back"
        if rec.t_bad is not None and rec.t_zero is not None:
            rec.seconds_to_weight0 = max(0.0, rec.t_zero - rec.t_bad)
        if rec.bad_requests is None:  # promoted or undecided: everything it served so far was bad
            rec.bad_requests = float(subject.last.get(subject.scenario.bad_measure, 0) or 0)
    else:
        rec.false_rollback = rec.outcome == "rolled_back"
        rec.correct = rec.outcome == ("undecided" if rec.expected == "hold" else "promoted") \
            or (rec.expected == "promote" and rec.outcome == "undecided")
        if rec.expected == "hold":
            rec.correct = rec.outcome != "promoted"


# ---------------------------------------------------------------- scale

def _api_requests(lab: Lab) -> dict[tuple[str, str, str], int]:
    """Requests the API server served, by (client, verb, resource)."""
    return lab.api.request_counts()  # type: ignore[no-any-return]


def _requests_by(before: dict[tuple[str, str, str], int], after: dict[tuple[str, str, str], int],
                 per: float) -> dict[str, float]:
    """The requests served between two counts, per `per` (an interval), as "client verb resource"."""
    counts = {k: (after.get(k, 0) - before.get(k, 0)) / per for k in after}
    return {" ".join(k): round(v, 1) for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if v >= 0.05}


def _peek(lab: Lab, *fields: str) -> dict[str, tuple[Any, ...]]:
    """Status fields of every ModelRollout by name, read inside the API server (no request that would load it)."""
    return {key[1]: values for key, values in lab.api.status_fields(f"{GROUP}/{VERSION}", PLURAL, fields).items()}


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads, summed by thread name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            cpu, _ = _proc(int(tid), f"/proc/self/task/{tid}")
        except OSError:  # ended meanwhile
            continue
        name = names.get(int(tid), "other")
        out[name] = out.get(name, 0.0) + cpu
    return out


def _proc(pid: int, root: str | None = None) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of a process (or of a thread: root /proc/PID/task/TID)."""
    root = root or f"/proc/{pid}"
    with open(f"{root}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = 0.0
    with open(f"{root}/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                hwm = int(line.split()[1]) / 1024
    return cpu, hwm


def _prom_queries(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def run_scale(n: int, window: float = 60.0, workdir: str | None = None, progress: Any = None,
              setup_timeout: float = 600.0, interval: float = specs.SCALE_INTERVAL,
              api_server: str = "process", rps: float = 0.0) -> dict[str, Any]:
    """n ModelRollouts on one operator, all in analysis (one error-rate metric every `interval`).

    The API server runs in a process of its own by default, as kube-apiserver does (`api_server="thread"`:
    in the benchmark's process, sharing its GIL with the simulators and this harness). With `rps`, each
    rollout's Service gets that traffic from the simulator (scraped by Prometheus every second), so
    every analysis judges data; without, every analysis finds none."""
    from datetime import datetime

    say = progress or (lambda *_: None)
    result: dict[str, Any] = {"rollouts": n, "interval_s": interval, "window_s": window, "complete": False,
                              "api_server": api_server, "rps": rps, "load_average_start": list(os.getloadavg())}
    with Lab(workdir, seed=7, api_server=api_server) as lab:
        proc = lab.start_operator("--log-level", "warning")
        t0 = time.time()
        bodies = [specs.scale_rollout(f"r{i:04d}", "1", interval=interval) for i in range(n)]
        for i, body in enumerate(bodies):
            lab.custom.create_namespaced_custom_object(GROUP, VERSION, specs.NAMESPACE, PLURAL, body)
            if rps:
                name = body["metadata"]["name"]
                lab.core.create_namespaced_config_map(
                    specs.NAMESPACE, specs.traffic_configmap(name, f"service/{service_name(name, 'shared')}", rps, i))
        result["create_seconds"] = round(time.time() - t0, 1)
        deadline = time.time() + setup_timeout
        initialized = 0
        while time.time() < deadline:
            initialized = sum(1 for (phase,) in _peek(lab, "phase").values() if phase == "Succeeded")
            if initialized >= n:
                break
            time.sleep(2.0)
        result["initialize_seconds"] = round(time.time() - t0, 1)
        result["initialized"] = initialized
        say(f"scale {n}: {initialized}/{n} initialized after {result['initialize_seconds']} s")
        # Release: change every template; time until the canary shows in status.
        patched_at: dict[str, float] = {}
        t1 = time.time()
        for i in range(n):
            name = f"r{i:04d}"
            lab.patch_rollout(name, {"spec": {"model": {"version": "2"},
                                              "template": specs.ours_template(name, {"load-seconds": "0.5"}, "2")}},
                              specs.NAMESPACE)
            patched_at[name] = time.time()
        result["patch_seconds"] = round(time.time() - t1, 1)
        reacted: dict[str, float] = {}
        deadline = time.time() + setup_timeout
        while len(reacted) < n and time.time() < deadline:
            now = time.time()
            for name, (canary,) in _peek(lab, "canaryRevision").items():
                if canary and name not in reacted and name in patched_at:
                    reacted[name] = now - patched_at[name]
            time.sleep(0.5)
        lags = list(reacted.values())
        result["release_reaction_s"] = {"p50": _pct(lags, 0.5), "p99": _pct(lags, 0.99), "max": max(lags, default=None),
                                        "reacted": len(reacted)}
        say(f"scale {n}: {len(reacted)}/{n} canaries started; reaction p50 {_pct(lags, 0.5)}")
        time.sleep(2 * interval)  # canaries become ready and analysis starts
        # Steady state: measure analysis gaps, CPU, API requests and Prometheus queries over the window.
        api_pid = getattr(getattr(lab.api, "process", None), "pid", None)
        cpu0, _ = _proc(proc.pid)
        api_cpu0 = _proc(api_pid)[0] if api_pid else None
        lab_cpu0, threads0 = _proc(os.getpid())[0], _thread_cpu()
        prom_cpu0 = _proc(lab.prometheus.pid)[0]  # type: ignore[union-attr]
        api0 = _api_requests(lab)
        prom0 = _prom_queries(lab.prometheus.url)  # type: ignore[union-attr]
        start = time.time()
        seen: dict[str, list[str]] = {}
        while time.time() - start < window:
            for name, (at,) in _peek(lab, "lastAnalysisAt").items():
                if at and (not seen.get(name) or seen[name][-1] != at):
                    seen.setdefault(name, []).append(at)
            time.sleep(0.5)
        elapsed = time.time() - start
        cpu1, hwm = _proc(proc.pid)
        api_cpu1 = _proc(api_pid)[0] if api_pid else None
        lab_cpu1, threads1 = _proc(os.getpid())[0], _thread_cpu()
        prom_cpu1 = _proc(lab.prometheus.pid)[0]  # type: ignore[union-attr]
        api1 = _api_requests(lab)
        prom1 = _prom_queries(lab.prometheus.url)  # type: ignore[union-attr]
        gaps = []
        for stamps in seen.values():
            moments = [datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps]
            gaps += [b - a for a, b in zip(moments, moments[1:])]
        lag = [max(0.0, g - interval) for g in gaps]
        intervals = elapsed / interval
        analyses = sum(max(0, len(v) - 1) for v in seen.values())
        api_total = sum(api1.values()) - sum(api0.values())
        operator_requests = sum(v - api0.get(k, 0) for k, v in api1.items() if k[0] in ("modelrollout", "kopf"))
        result.update({
            "complete": True,
            "measured_seconds": round(elapsed, 1),
            "load_average_end": list(os.getloadavg()),
            "rollouts_analysing": len(seen),
            "analyses": analyses,
            "analyses_expected": round(n * intervals),
            "lag_s": {"p50": _pct(lag, 0.5), "p99": _pct(lag, 0.99), "max": max(lag, default=None)},
            "lag_p99_over_interval": (_pct(lag, 0.99) or 0.0) / interval if lag else None,
            "operator_peak_rss_mib": round(hwm, 1),
            "operator_cpu_seconds": round(cpu1 - cpu0, 2),
            "operator_cpu_share_of_one_core": round((cpu1 - cpu0) / elapsed, 3),
            "cpu_ms_per_rollout_interval": round(1000 * (cpu1 - cpu0) / max(1.0, n * intervals), 3),
            # Where the rest of the machine's CPU went (cores): the API server, the lab's own process
            # (simulators and this harness, by thread) and Prometheus.
            "api_server_cpu_cores": round((api_cpu1 - api_cpu0) / elapsed, 3) if api_pid else None,  # type: ignore[operator]
            "lab_process_cpu_cores": round((lab_cpu1 - lab_cpu0) / elapsed, 3),
            "lab_threads_cpu_cores": {k: round((v - threads0.get(k, 0.0)) / elapsed, 3)
                                      for k, v in sorted(threads1.items(), key=lambda kv: -(kv[1] - threads0.get(kv[0], 0.0)))
                                      if v - threads0.get(k, 0.0) > 0.005 * elapsed},
            "prometheus_cpu_cores": round((prom_cpu1 - prom_cpu0) / elapsed, 3),
            "api_requests_per_interval": round(api_total / intervals, 1),
            "api_requests_per_rollout_interval": round(api_total / intervals / n, 3),
            "api_requests_by_kind_per_interval": _requests_by(api0, api1, intervals),
            "operator_api_requests_per_analysis": round(operator_requests / analyses, 2) if analyses else None,
            "prometheus_queries_per_interval": round((prom1 - prom0) / intervals, 1),
            "prometheus_queries_per_rollout_interval": round((prom1 - prom0) / intervals / n, 3),
        })
        result["rollouts_with_data"] = sum(  # their last analysis counted requests
            1 for (analysis,) in _peek(lab, "lastAnalysis").values()
            if any((entry.get("samples") or 0) > 0 for entry in analysis or []))
        if lab.operator is None or lab.operator.poll() is not None:
            result["operator_died"] = True
    return result


# ---------------------------------------------------------------- summaries

def _median(values: list[float | None], missing_is_never: bool = False) -> float | None:
    """The median of the values; with `missing_is_never`, a run without one (a bad canary never taken
    to weight 0) counts as never, so failed runs cannot improve the median. None for no value or never."""
    vals = [math.inf if v is None and missing_is_never else v for v in values]
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    median = statistics.median(vals) if vals else None
    return median if median is not None and math.isfinite(median) else None


def summarize(records: list[Record]) -> list[dict[str, Any]]:
    """One row per (scenario, policy); times in lab seconds and, scaled by the cadence, real seconds."""
    rows = []
    order = {p: i for i, p in enumerate((*SAME_CLOCK, *REAL_CADENCE))}
    keys = sorted({(r.scenario, r.policy) for r in records}, key=lambda k: (k[0], order.get(k[1], 99)))
    for scenario, policy in keys:
        rs = [r for r in records if r.scenario == scenario and r.policy == policy]
        scale = rs[0].time_scale
        to_weight0 = _median([r.seconds_to_weight0 for r in rs], missing_is_never=rs[0].expected == "rollback")
        to_promote = _median([r.seconds_to_promote for r in rs], missing_is_never=rs[0].expected == "promote")
        to_all = _median([r.seconds_to_all_traffic for r in rs], missing_is_never=rs[0].expected == "promote")
        rows.append({
            "scenario": scenario, "policy": policy, "runs": len(rs),
            "expected": rs[0].expected,
            "outcomes": {o: sum(1 for r in rs if r.outcome == o) for o in ("promoted", "rolled_back", "undecided")},
            "correct": sum(1 for r in rs if r.correct),
            "false_rollbacks": sum(1 for r in rs if r.false_rollback),
            "paused": sum(1 for r in rs if r.paused),
            "seconds_to_weight0": to_weight0,
            "bad_requests": _median([r.bad_requests for r in rs]),
            "canary_requests_to_decide": _median([r.canary_requests_to_decide for r in rs]),
            "floor_requests": rs[0].floor_requests,
            "seconds_to_promote": to_promote,
            "time_scale": scale,
            "real_seconds_to_weight0": None if to_weight0 is None else to_weight0 * scale,
            "real_seconds_to_promote": None if to_promote is None else to_promote * scale,
            "real_seconds_to_all_traffic": None if to_all is None else to_all * scale,
            "max_weight": max(r.max_weight for r in rs),
            "outage": [r.outage for r in rs if r.outage] or None,
        })
    return rows


def ratios(rows: list[dict[str, Any]], ours: str = "ours", baseline: str = "baseline") -> list[dict[str, Any]]:
    """baseline / ours per scenario for time-to-weight-0, bad requests, promote time; false rollbacks."""
    out = []
    by = {(r["scenario"], r["policy"]): r for r in rows}
    for scenario in sorted({r["scenario"] for r in rows}):
        o, b = by.get((scenario, ours)), by.get((scenario, baseline))
        if not o or not b:
            continue

        def ratio(key: str) -> float | None:
            if o[key] is None or b[key] is None:
                return None
            return b[key] / o[key] if o[key] > 0 else (math.inf if b[key] > 0 else 1.0)

        out.append({"scenario": scenario, "ours": ours, "baseline": baseline,
                    "sooner_x": ratio("seconds_to_weight0"),
                    "fewer_bad_x": ratio("bad_requests"),
                    "promote_speed_x": ratio("seconds_to_promote"),
                    "false_rollbacks_ours": o["false_rollbacks"], "false_rollbacks_baseline": b["false_rollbacks"],
                    "runs": o["runs"], "baseline_runs": b["runs"]})
    return out
