"""`make bench` / `python -m benchmarks.run`: every scenario at the same clock (ours vs a Flagger-like
baseline) and at real cadences (ours at its defaults vs Flagger and Argo Rollouts as documented),
the simulated targets, then the scale runs.

Writes benchmarks/results/results.json and results.md and prints rich tables and the targets.

    python -m benchmarks.run                       # everything (~45 min on 2 cores)
    python -m benchmarks.run --quick               # fewer runs, smaller scale
    python -m benchmarks.run --cadence real --scale none   # the real-cadence comparison alone
    python -m benchmarks.run --scenarios errors,latency --runs 20 --scale 100,500
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks import harness, simulate, specs

RESULTS = Path(__file__).resolve().parent / "results"
ALL = [*specs.SCENARIOS, "noisy-healthy", "prometheus-outage"]
REAL_BATCH = 50   # noisy rollouts per lab at real cadence (the operator looks at each every lab second)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        return f"{value:,.{digits}f}"
    return str(value)


def _clean(obj: Any) -> Any:
    """JSON without NaN/Infinity."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else ("inf" if obj > 0 else None)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


BEHAVIOUR_COLUMNS = ("scenario", "policy", "runs", "expected", "promoted/rolled back/undecided", "paused",
                     "false rollbacks", "s bad→weight 0", "real s bad→weight 0", "bad requests",
                     "canary requests to decide", "floor", "s to promote", "real s to promote", "max weight %")
RATIO_COLUMNS = ("scenario", "ours", "baseline", "× sooner to weight 0", "× fewer bad requests", "× faster promote",
                 "false rollbacks ours", "false rollbacks baseline")


def behaviour_cells(r: dict[str, Any]) -> list[str]:
    o = r["outcomes"]
    return [r["scenario"], r["policy"], str(r["runs"]), r["expected"],
            f"{o['promoted']}/{o['rolled_back']}/{o['undecided']}", str(r.get("paused", 0)), str(r["false_rollbacks"]),
            _fmt(r["seconds_to_weight0"]), _fmt(r.get("real_seconds_to_weight0"), 0), _fmt(r["bad_requests"], 0),
            _fmt(r["canary_requests_to_decide"], 0), _fmt(r["floor_requests"], 0), _fmt(r["seconds_to_promote"]),
            _fmt(r.get("real_seconds_to_promote"), 0), _fmt(r["max_weight"], 0)]


def ratio_cells(r: dict[str, Any]) -> list[str]:
    return [r["scenario"], r.get("ours", "ours"), r.get("baseline", "baseline"), _fmt(r["sooner_x"], 2),
            _fmt(r["fewer_bad_x"], 2), _fmt(r["promote_speed_x"], 2), f"{r['false_rollbacks_ours']}/{r['runs']}",
            f"{r['false_rollbacks_baseline']}/{r['baseline_runs']}"]


def _table(title: str, columns: tuple[str, ...], rows: list[list[str]], left: int = 1) -> Table:
    t = Table(title=title)
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i < left else "right")
    for row in rows:
        t.add_row(*row)
    return t


def _md_table(columns: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *("| " + " | ".join(r) + " |" for r in rows)]


# ---------------------------------------------------------------- targets (issue 12)

def targets(real_rows: list[dict[str, Any]], noisy: dict[str, Any] | None, sim: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 12 with its numbers and met / not met (None: not measured in this run)."""
    by = {(r["scenario"], r["policy"]): r for r in real_rows}
    out: list[dict[str, Any]] = []

    def add(name: str, met: bool | None, numbers: str) -> None:
        out.append({"target": name, "met": met, "numbers": numbers})

    for scenario in sorted({s for s, _ in by}):
        o, f = by.get((scenario, "ours-default")), by.get((scenario, "flagger"))
        if not o or not f or o["expected"] != "rollback":
            continue
        fewer = None if o["bad_requests"] is None or f["bad_requests"] is None else \
            (f["bad_requests"] / o["bad_requests"] if o["bad_requests"] > 0 else math.inf)
        t_o, t_f = o["real_seconds_to_weight0"], f["real_seconds_to_weight0"]
        if t_f is None and f["outcomes"]["rolled_back"] == 0:
            t_f = math.inf  # Flagger never took the bad canary's traffic away (promoted it, or still serving)
        sooner = None if t_o is None or t_f is None else (t_f / t_o if t_o > 0 else math.inf)
        met = fewer is not None and sooner is not None and fewer >= 3 and sooner >= 3
        add(f"{scenario}: >= 3x fewer bad requests and >= 3x sooner to weight 0 than Flagger-default", met,
            f"bad requests {_fmt(o['bad_requests'], 0)} vs {_fmt(f['bad_requests'], 0)} ({_fmt(fewer, 1)}x); "
            f"real s to weight 0 {_fmt(t_o, 0)} vs {_fmt(t_f, 0)} ({_fmt(sooner, 1)}x)")

    catch = sim["catch"]
    lab = by.get(("errors", "ours-default"))
    add("median canary requests to catch 0.1 % -> 5 % within 1.5x Wald's bound", catch["ratio"] <= 1.5,
        f"{_fmt(catch['median_requests'], 0)} (simulated, {catch['runs']} runs, {catch['canary_per_look']} per look) "
        f"vs Wald {catch['wald_bound']:.0f} for limit {catch['limit']:g} at alpha {catch['alpha']:g} "
        f"({catch['ratio']:.2f}x); lab at real cadence: "
        f"{_fmt(lab['canary_requests_to_decide'] if lab else None, 0)} (whole intervals of traffic)")

    o, f = by.get(("healthy", "ours-default")), by.get(("healthy", "flagger"))
    if o and f:
        # Both moments of a promotion, each against Flagger's own: the new model serves every user (ours:
        # the promotion watch begins, the old stable on standby; Flagger: it routes all traffic to the
        # primary), and the release is done (ours: stable after the watch; Flagger: Succeeded).
        t_o, t_f = o.get("real_seconds_to_all_traffic"), f.get("real_seconds_to_all_traffic")
        p_o, p_f = o.get("real_seconds_to_promote"), f.get("real_seconds_to_promote")
        add(f"healthy canary at {specs.REAL_RPS:g} rps promoted no later than Flagger-default (serving all "
            "traffic, and done)",
            t_o is not None and p_o is not None and (t_f is None or t_o <= t_f) and (p_f is None or p_o <= p_f),
            f"all traffic: ours {_fmt(t_o, 0)} real s vs Flagger {_fmt(t_f, 0)}; done: ours stable after its "
            f"watch at {_fmt(p_o, 0)} real s vs Flagger Succeeded at {_fmt(p_f, 0)}")
    if noisy:
        n = noisy["outcomes"]
        add(f"{noisy['runs']} of {noisy['runs']} noisy healthy canaries at {specs.REAL_NOISY_RPS:g} rps promoted, "
            "none stuck, 0 false rollbacks",
            n["promoted"] == noisy["runs"] and noisy["paused"] == 0 and noisy["false_rollbacks"] == 0,
            f"promoted {n['promoted']}, rolled back {n['rolled_back']}, undecided {n['undecided']}, paused at some "
            f"point {noisy['paused']} within {specs.lab_seconds(specs.ARGO_EXAMPLE_SECONDS + 300) * specs.COMPRESSION:.0f}"
            f" real s; median real s to promote {_fmt(noisy['real_seconds_to_promote'], 0)}")
    healthy = sim["healthy"]
    if healthy:
        add(f"false-rollback rate over {healthy['runs']} simulated healthy rollouts <= alpha",
            healthy["false_rollback_rate"] <= healthy["alpha"],
            f"{healthy['rolled_back']}/{healthy['runs']} = {healthy['false_rollback_rate']:.4f} (alpha "
            f"{healthy['alpha']:g}; {healthy['p_error']:g} errors on both sides, {healthy['rps']:g} rps, every step); "
            f"promoted {healthy['promoted']}, paused {healthy['paused']}")
    return out


def target_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    return [[t["target"], {True: "met", False: "not met", None: "–"}[t["met"]], t["numbers"]] for t in items]


def _cpu_split(r: dict[str, Any]) -> str:
    """API server process / lab process (simulators and harness) CPU, in cores."""
    api = r.get("api_server_cpu_cores")
    return f"{'in lab' if api is None else _fmt(api, 2)} / {_fmt(r.get('lab_process_cpu_cores'), 2)}"


def scale_table(results: list[dict[str, Any]]) -> Table:
    t = Table(title="Scale: one operator, N ModelRollouts in analysis (one error-rate metric each)")
    for col in ("N", "analyses/expected", "lag p50 s", "lag p99 s", "p99/interval", "release reaction p50/p99 s",
                "peak RSS MiB", "CPU (cores)", "CPU ms/rollout-interval", "API req/interval",
                "operator API req/analysis", "API server / lab CPU cores", "Prom queries/interval"):
        t.add_column(col, justify="right")
    for r in results:
        if not r.get("complete"):
            t.add_row(str(r["rollouts"]), "incomplete: " + str(r.get("error", ""))[:60], *[""] * 11)
            continue
        rr = r["release_reaction_s"]
        t.add_row(str(r["rollouts"]), f"{r['analyses']}/{r['analyses_expected']}", _fmt(r["lag_s"]["p50"], 2),
                  _fmt(r["lag_s"]["p99"], 2), _fmt(r["lag_p99_over_interval"], 2),
                  f"{_fmt(rr['p50'], 1)}/{_fmt(rr['p99'], 1)}", _fmt(r["operator_peak_rss_mib"], 0),
                  _fmt(r["operator_cpu_share_of_one_core"], 2), _fmt(r["cpu_ms_per_rollout_interval"], 2),
                  _fmt(r["api_requests_per_interval"], 0), _fmt(r.get("operator_api_requests_per_analysis"), 2),
                  _cpu_split(r), _fmt(r["prometheus_queries_per_interval"], 0))
    return t


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        "# Benchmark results", "",
        f"Generated {data['finished']} by `{data['command']}` in {data['seconds']:.0f} s.", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM; Python {m['python']}; {m['prometheus']}; "
        f"{m['platform']}.", "",
    ]
    rows = data.get("scenarios") or []
    if rows:
        lines += [
            "Same clock: **ours** = the recommended spec (benchmarks/specs.py: proportion error-rate vs stable, "
            f"tolerance {specs.ERROR_TOLERANCE}, alpha 0.01, critical; latency p95 <= {specs.LATENCY_P95_MAX}s; "
            f"samples.min 100; noData hold 30s then pause; steps {'/'.join(map(str, specs.STEPS))} % held "
            f"{specs.STEP_HOLD:g}s; interval {specs.INTERVAL:g}s). **baseline** = Flagger's default analysis "
            f"(benchmarks/baseline.py: fixed thresholds error <= {specs.ERROR_MAX}, p95 <= {specs.LATENCY_P95_MAX}s, "
            f"stepWeight {specs.BASE_STEP_WEIGHT}, maxWeight {specs.BASE_MAX_WEIGHT}, threshold {specs.BASE_THRESHOLD} "
            f"cumulative failed checks, no data = failed check, interval {specs.INTERVAL:g}s, range {specs.BASE_WINDOW}).",
            "", "## Same clock: scenarios (medians)", "", *_md_table(BEHAVIOUR_COLUMNS, [behaviour_cells(r) for r in rows]),
            "", "## Same clock: ratios (baseline ÷ ours; > 1: ours better)", "",
            *_md_table(RATIO_COLUMNS, [ratio_cells(r) for r in data.get("ratios") or []])]
        outage = [r for r in rows if r.get("outage")]
        if outage:
            lines += ["", "## Prometheus outage", "", "| policy | weight at outage start | max weight during | decided during | outcome |",
                      "|---|---|---|---|---|"]
            for r in outage:
                for o in r["outage"]:
                    lines.append(f"| {r['policy']} | {_fmt(o['weight_at_start'], 0)} | {_fmt(o['max_weight_during'], 0)} | "
                                 f"{o.get('decided_during') or '–'} | {'/'.join(f'{k}={v}' for k, v in r['outcomes'].items())} |")
    real = data.get("real_cadence") or {}
    if real.get("scenarios"):
        lines += ["", "## Real cadence: scenarios (medians)", "", real["settings"], "",
                  *_md_table(BEHAVIOUR_COLUMNS, [behaviour_cells(r) for r in real["scenarios"]]),
                  "", "## Real cadence: ratios (baseline ÷ ours-default; > 1: ours better)", "",
                  *_md_table(RATIO_COLUMNS, [ratio_cells(r) for r in real.get("ratios") or []])]
    if data.get("targets"):
        lines += ["", "## Targets (issue 12)", "", *_md_table(("target", "result", "numbers"), target_rows(data["targets"]))]
    scale = data.get("scale") or []
    if scale:
        lines += ["", "## Scale", "",
                  "| N | API server | analyses/expected | lag p50 s | lag p99 s | p99/interval | release reaction p50/p99 s | peak RSS MiB | CPU cores | CPU ms/rollout-interval | API req/interval | operator API req/analysis | API server / lab CPU cores | Prom queries/interval | load average |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in scale:
            if not r.get("complete"):
                lines.append(f"| {r['rollouts']} | {r.get('api_server', '')} | incomplete: {r.get('error', '')} | | | | | | | | | | | | |")
                continue
            rr = r["release_reaction_s"]
            lines.append(f"| {r['rollouts']}{' at ' + _fmt(r['rps'], 0) + ' rps' if r.get('rps') else ''} | {r.get('api_server', 'thread')} | {r['analyses']}/{r['analyses_expected']} | {_fmt(r['lag_s']['p50'], 2)} | "
                         f"{_fmt(r['lag_s']['p99'], 2)} | {_fmt(r['lag_p99_over_interval'], 2)} | "
                         f"{_fmt(rr['p50'])}/{_fmt(rr['p99'])} | {_fmt(r['operator_peak_rss_mib'], 0)} | "
                         f"{_fmt(r['operator_cpu_share_of_one_core'], 2)} | {_fmt(r['cpu_ms_per_rollout_interval'], 2)} | "
                         f"{_fmt(r['api_requests_per_interval'], 0)} | {_fmt(r.get('operator_api_requests_per_analysis'), 2)} | "
                         f"{_cpu_split(r)} | {_fmt(r['prometheus_queries_per_interval'], 0)} | "
                         f"{_fmt((r.get('load_average_end') or [None])[0], 1)} |")
        lines += ["", "API requests per interval by client, verb and resource:", ""]
        for r in scale:
            if r.get("complete"):
                kinds = "; ".join(f"{k} {_fmt(v, 0)}" for k, v in r["api_requests_by_kind_per_interval"].items() if v >= 0.5)
                threads = ", ".join(f"{k} {_fmt(v, 2)}" for k, v in r.get("lab_threads_cpu_cores", {}).items()) or "–"
                lines.append(f"* {r['rollouts']}{' at ' + _fmt(r['rps'], 0) + ' rps' if r.get('rps') else ''}: {kinds}. "
                             f"Lab process threads (cores): {threads}; Prometheus {_fmt(r.get('prometheus_cpu_cores'), 2)} "
                             f"cores; {r.get('rollouts_with_data', '–')} rollouts judged data in their last analysis")
    return "\n".join(lines) + "\n"


REAL_SETTINGS = (
    f"Real cadence: every duration divided by {specs.COMPRESSION:g} (1 real minute = "
    f"{specs.lab_seconds(60):g} lab s; Prometheus scrapes every lab second = {specs.COMPRESSION:g} real s), "
    f"traffic multiplied by it: {specs.REAL_RPS:g} real rps ({specs.REAL_NOISY_RPS:g} for the noisy runs). "
    "**ours-default** = the `http` preset's default metrics (error-rate max 0.01 and stable + 0.01, exact tests, critical; latency "
    "p95 <= 0.3 s, failureLimit 2; its quality / prediction-drift metrics in those scenarios), every analysis "
    f"default (alpha 0.01, pass powered, decideWithin 30m, noData 5m then rollback), "
    f"interval {specs.OURS_REAL_INTERVAL:g} s, recentWindow {specs.OURS_REAL_RECENT:g} s, steps {'/'.join(map(str, specs.OURS_REAL_STEPS))} % held "
    f"{specs.OURS_REAL_HOLD:g} s. **flagger** = Flagger as documented: interval 1m, threshold 5, stepWeight 10, "
    "maxWeight 50, request-success-rate >= 99 %, request-duration (p99) <= 500 ms over 1m (accuracy >= 0.85 "
    "added in the quality scenario). **argo** = Argo Rollouts' Background Analysis example "
    "(docs/features/analysis.md): setWeight 20/40/60/80 each paused 10m, success-rate AnalysisRun from "
    "startingStep 2 every 5m, irate over 5m, successCondition >= 0.95, failureLimit 3. Times in real seconds "
    "are lab seconds times the compression.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="5 noisy runs, scale 100 only, 30 s window")
    p.add_argument("--scenarios", default="all", help=f"comma list of {','.join(ALL)} (or all, none)")
    p.add_argument("--cadence", choices=("same", "real", "both"), default="both",
                   help="same clock (ours vs baseline), real cadence (ours-default vs Flagger and Argo), or both")
    p.add_argument("--runs", type=int, default=None, help="noisy-healthy runs per policy at the same clock (default 20)")
    p.add_argument("--real-runs", type=int, default=None, help="noisy-healthy runs of ours at real cadence (default 100)")
    p.add_argument("--bad-runs", type=int, default=None,
                   help="runs of each scenario at real cadence, one lab each, medians reported (default 5; Argo once)")
    p.add_argument("--sim-runs", type=int, default=400, help="simulated healthy rollouts for the false-rollback target")
    p.add_argument("--scale", default=None, help="comma list of N (default 100,500,1000,2000; 'none' to skip)")
    p.add_argument("--scale-window", type=float, default=None, help="seconds of steady state measured (default 60)")
    p.add_argument("--scale-interval", type=float, default=specs.SCALE_INTERVAL, help="analysis interval of the scale runs")
    p.add_argument("--scale-api-server", choices=("process", "thread"), default="process",
                   help="the scale runs' emulated API server: its own process (default) or a thread of the benchmark's")
    p.add_argument("--scale-rps", type=float, default=0.0,
                   help="simulated requests a second to each scale rollout (default 0: analyses find no data)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)

    console = Console(width=200)
    say = lambda text: console.log(text)  # noqa: E731
    runs = args.runs or (5 if args.quick else 20)
    real_runs = args.real_runs or (10 if args.quick else 100)
    bad_runs = args.bad_runs or (2 if args.quick else 5)
    default_scale = "100" if args.quick else "100,500,1000,2000"
    scale_ns = [] if args.scale == "none" else [int(x) for x in (args.scale or default_scale).split(",") if x]
    window = args.scale_window or (30.0 if args.quick else 60.0)
    chosen = ALL if args.scenarios == "all" else ([] if args.scenarios == "none" else args.scenarios.split(","))
    unknown = set(chosen) - set(ALL)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; known: {ALL}")

    started = time.time()
    records: list[harness.Record] = []
    main_set = [specs.SCENARIOS[s] for s in chosen if s in specs.SCENARIOS]
    if args.cadence in ("same", "both"):
        if main_set:
            say(f"same clock: scenarios {[s.name for s in main_set]} (both policies, concurrently in one lab)")
            records += harness.run_behaviour([(s, harness.SAME_CLOCK) for s in main_set], seed=args.seed, progress=say)
        if "noisy-healthy" in chosen:
            say(f"same clock: noisy healthy canary, {runs} runs per policy, concurrently in one lab")
            records += harness.run_behaviour([(specs.NOISY, harness.SAME_CLOCK)], runs=runs, seed=args.seed + 1,
                                             progress=say)
        if "prometheus-outage" in chosen:
            say("same clock: Prometheus outage mid-rollout")
            records += harness.run_behaviour([(specs.OUTAGE, harness.SAME_CLOCK)], seed=args.seed + 2, outage=True,
                                             progress=say)
    rows = harness.summarize(records)
    rats = harness.ratios(rows)
    if rows:
        console.print(_table("Same clock: scenarios (median over runs; ours vs baseline = Flagger's rules at our clock)",
                             BEHAVIOUR_COLUMNS, [behaviour_cells(r) for r in rows], left=4))
        console.print(_table("Same clock: baseline ÷ ours (> 1 means ours is better)", RATIO_COLUMNS,
                             [ratio_cells(r) for r in rats], left=3))

    real: dict[str, Any] = {}
    target_list: list[dict[str, Any]] = []
    if args.cadence in ("real", "both"):
        real_records: list[harness.Record] = []
        if main_set:
            for run in range(bad_runs):
                # One lab per run, so the load of one lab stays what one run puts on it (five runs in
                # one lab slowed both operators); Argo's example, 40 real minutes a run, runs once.
                policies = tuple(p for p in harness.REAL_CADENCE if run == 0 or p != "argo")
                say(f"real cadence: scenarios {[s.name for s in main_set]}, run {run + 1} of {bad_runs} "
                    f"({', '.join(policies)} in one lab)")
                run_records = harness.run_behaviour([(specs.real_cadence(s), policies) for s in main_set],
                                                    seed=args.seed + 3 + 1000 * run, progress=say)
                for record in run_records:
                    record.run += run * specs.SCENARIOS[record.scenario].runs_per_lab
                real_records += run_records
        if "noisy-healthy" in chosen:
            noisy = specs.real_cadence(specs.NOISY, specs.REAL_NOISY_RPS)
            for first in range(0, real_runs, REAL_BATCH):
                batch = min(REAL_BATCH, real_runs - first)
                say(f"real cadence: noisy healthy canaries {first + 1}-{first + batch} of {real_runs} (ours-default)")
                batch_records = harness.run_behaviour([(noisy, ("ours-default",))], runs=batch,
                                                      seed=args.seed + 4 + first, progress=say)
                for record in batch_records:
                    record.run += first
                real_records += batch_records
        real_rows = harness.summarize(real_records)
        real_ratios = [r for baseline in ("flagger", "argo")
                       for r in harness.ratios(real_rows, ours="ours-default", baseline=baseline)]
        say(f"simulation: requests to catch 0.1 % -> 5 %, and {args.sim_runs} healthy rollouts")
        sim = {"catch": simulate.requests_to_catch(),
               "healthy": simulate.healthy_rollouts(runs=args.sim_runs) if args.sim_runs > 0 else None}
        noisy_row = next((r for r in real_rows if r["scenario"] == "noisy-healthy"), None)
        target_list = targets(real_rows, noisy_row, sim)
        real = {"settings": REAL_SETTINGS, "scenarios": real_rows, "ratios": real_ratios, "simulation": sim,
                "records": [r.as_dict() for r in real_records]}
        if real_rows:
            console.print(_table("Real cadence: scenarios (median over runs)", BEHAVIOUR_COLUMNS,
                                 [behaviour_cells(r) for r in real_rows], left=4))
            console.print(_table("Real cadence: baseline ÷ ours-default (> 1 means ours is better)", RATIO_COLUMNS,
                                 [ratio_cells(r) for r in real_ratios], left=3))
        console.print(_table("Targets (issue 12)", ("target", "result", "numbers"), target_rows(target_list), left=3))

    scale: list[dict[str, Any]] = []
    for n in scale_ns:
        say(f"scale: {n} ModelRollouts, analysis every {args.scale_interval:g} s")
        try:
            scale.append(harness.run_scale(n, window=window, progress=say, interval=args.scale_interval,
                                           api_server=args.scale_api_server, rps=args.scale_rps))
        except Exception as exc:  # noqa: BLE001  (report what was measured and why it stopped)
            scale.append({"rollouts": n, "complete": False, "error": repr(exc)[:300]})
    if scale:
        console.print(scale_table(scale))

    data = {
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "seconds": time.time() - started,
        "machine": harness.machine(),
        "settings": {k: getattr(specs, k) for k in dir(specs) if k.isupper() and isinstance(getattr(specs, k), (int, float, str, tuple))},
        "scenarios": rows, "ratios": rats, "real_cadence": real, "targets": target_list, "scale": scale,
        "records": [r.as_dict() for r in records],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(_clean(data), indent=2, default=str) + "\n")
    (out / "results.md").write_text(markdown(_clean(data)))
    say(f"wrote {out / 'results.json'} and {out / 'results.md'} in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
