"""`make bench` / `python -m benchmarks.run`: every scenario for both policies, then the scale runs.

Writes benchmarks/results/results.json and results.md and prints rich tables.

    python -m benchmarks.run                       # everything (~20 min on 2 cores)
    python -m benchmarks.run --quick               # fewer runs, smaller scale
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

from benchmarks import harness, specs

RESULTS = Path(__file__).resolve().parent / "results"
ALL = [*specs.SCENARIOS, "noisy-healthy", "prometheus-outage"]


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


def behaviour_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Scenarios (median over runs; ours vs baseline = Flagger defaults)")
    for col in ("scenario", "policy", "runs", "expected", "promoted/rolled back/undecided", "false rollbacks",
                "s bad→weight 0", "bad requests", "canary req. to decide", "floor", "s to promote", "max weight %"):
        t.add_column(col, justify="left" if col in ("scenario", "policy", "expected") else "right")
    for r in rows:
        o = r["outcomes"]
        t.add_row(r["scenario"], r["policy"], str(r["runs"]), r["expected"],
                  f"{o['promoted']}/{o['rolled_back']}/{o['undecided']}", str(r["false_rollbacks"]),
                  _fmt(r["seconds_to_weight0"]), _fmt(r["bad_requests"], 0), _fmt(r["canary_requests_to_decide"], 0),
                  _fmt(r["floor_requests"], 0), _fmt(r["seconds_to_promote"]), _fmt(r["max_weight"], 0))
    return t


def ratio_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Ours vs baseline (baseline ÷ ours; > 1 means ours is better; target 3×)")
    for col in ("scenario", "× sooner to weight 0", "× fewer bad requests", "× faster promote",
                "false rollbacks ours", "false rollbacks baseline"):
        t.add_column(col, justify="left" if col == "scenario" else "right")
    for r in rows:
        t.add_row(r["scenario"], _fmt(r["sooner_x"], 2), _fmt(r["fewer_bad_x"], 2), _fmt(r["promote_speed_x"], 2),
                  f"{r['false_rollbacks_ours']}/{r['runs']}", f"{r['false_rollbacks_baseline']}/{r['runs']}")
    return t


def scale_table(results: list[dict[str, Any]]) -> Table:
    t = Table(title="Scale: one operator, N ModelRollouts in analysis (interval 5 s, 2 queries each)")
    for col in ("N", "analyses/expected", "lag p50 s", "lag p99 s", "p99/interval", "release reaction p50/p99 s",
                "peak RSS MiB", "CPU (cores)", "CPU ms/rollout-interval", "API req/interval", "Prom queries/interval"):
        t.add_column(col, justify="right")
    for r in results:
        if not r.get("complete"):
            t.add_row(str(r["rollouts"]), "incomplete: " + str(r.get("error", ""))[:60], *[""] * 9)
            continue
        rr = r["release_reaction_s"]
        t.add_row(str(r["rollouts"]), f"{r['analyses']}/{r['analyses_expected']}", _fmt(r["lag_s"]["p50"], 2),
                  _fmt(r["lag_s"]["p99"], 2), _fmt(r["lag_p99_over_interval"], 2),
                  f"{_fmt(rr['p50'], 1)}/{_fmt(rr['p99'], 1)}", _fmt(r["operator_peak_rss_mib"], 0),
                  _fmt(r["operator_cpu_share_of_one_core"], 2), _fmt(r["cpu_ms_per_rollout_interval"], 2),
                  _fmt(r["api_requests_per_interval"], 0), _fmt(r["prometheus_queries_per_interval"], 0))
    return t


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        "# Benchmark results", "",
        f"Generated {data['finished']} by `{data['command']}` in {data['seconds']:.0f} s.", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM; Python {m['python']}; {m['prometheus']}; "
        f"{m['platform']}.", "",
        "Policies: **ours** = the recommended spec (benchmarks/specs.py: proportion error-rate vs stable, "
        f"tolerance {specs.ERROR_TOLERANCE}, alpha 0.01, critical; latency p95 <= {specs.LATENCY_P95_MAX}s; "
        f"samples.min 100; noData hold 30s then pause; steps {'/'.join(map(str, specs.STEPS))} % held "
        f"{specs.STEP_HOLD:g}s; interval {specs.INTERVAL:g}s). **baseline** = Flagger's default analysis "
        f"(benchmarks/baseline.py: fixed thresholds error <= {specs.ERROR_MAX}, p95 <= {specs.LATENCY_P95_MAX}s, "
        f"stepWeight {specs.BASE_STEP_WEIGHT}, maxWeight {specs.BASE_MAX_WEIGHT}, threshold {specs.BASE_THRESHOLD} "
        f"cumulative failed checks, no data = failed check, interval {specs.INTERVAL:g}s, range {specs.BASE_WINDOW}).", "",
    ]
    rows = data.get("scenarios") or []
    if rows:
        lines += ["## Scenarios (medians)", "",
                  "| scenario | policy | runs | expected | promoted/rolled back/undecided | false rollbacks | s bad→weight 0 | bad requests | canary requests to decide | floor | s to promote | max weight % |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            o = r["outcomes"]
            lines.append(f"| {r['scenario']} | {r['policy']} | {r['runs']} | {r['expected']} | "
                         f"{o['promoted']}/{o['rolled_back']}/{o['undecided']} | {r['false_rollbacks']} | "
                         f"{_fmt(r['seconds_to_weight0'])} | {_fmt(r['bad_requests'], 0)} | "
                         f"{_fmt(r['canary_requests_to_decide'], 0)} | {_fmt(r['floor_requests'], 0)} | "
                         f"{_fmt(r['seconds_to_promote'])} | {_fmt(r['max_weight'], 0)} |")
        lines += ["", "## Ratios (baseline ÷ ours; > 1: ours better)", "",
                  "| scenario | × sooner to weight 0 | × fewer bad requests | × faster promote | false rollbacks ours | false rollbacks baseline |",
                  "|---|---|---|---|---|---|"]
        for r in data.get("ratios") or []:
            lines.append(f"| {r['scenario']} | {_fmt(r['sooner_x'], 2)} | {_fmt(r['fewer_bad_x'], 2)} | "
                         f"{_fmt(r['promote_speed_x'], 2)} | {r['false_rollbacks_ours']}/{r['runs']} | "
                         f"{r['false_rollbacks_baseline']}/{r['runs']} |")
        outage = [r for r in rows if r.get("outage")]
        if outage:
            lines += ["", "## Prometheus outage", "", "| policy | weight at outage start | max weight during | decided during | outcome |",
                      "|---|---|---|---|---|"]
            for r in outage:
                for o in r["outage"]:
                    lines.append(f"| {r['policy']} | {_fmt(o['weight_at_start'], 0)} | {_fmt(o['max_weight_during'], 0)} | "
                                 f"{o.get('decided_during') or '–'} | {'/'.join(f'{k}={v}' for k, v in r['outcomes'].items())} |")
    scale = data.get("scale") or []
    if scale:
        lines += ["", "## Scale", "",
                  "| N | analyses/expected | lag p50 s | lag p99 s | p99/interval | release reaction p50/p99 s | peak RSS MiB | CPU cores | CPU ms/rollout-interval | API req/interval | Prom queries/interval |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in scale:
            if not r.get("complete"):
                lines.append(f"| {r['rollouts']} | incomplete: {r.get('error', '')} | | | | | | | | | |")
                continue
            rr = r["release_reaction_s"]
            lines.append(f"| {r['rollouts']} | {r['analyses']}/{r['analyses_expected']} | {_fmt(r['lag_s']['p50'], 2)} | "
                         f"{_fmt(r['lag_s']['p99'], 2)} | {_fmt(r['lag_p99_over_interval'], 2)} | "
                         f"{_fmt(rr['p50'])}/{_fmt(rr['p99'])} | {_fmt(r['operator_peak_rss_mib'], 0)} | "
                         f"{_fmt(r['operator_cpu_share_of_one_core'], 2)} | {_fmt(r['cpu_ms_per_rollout_interval'], 2)} | "
                         f"{_fmt(r['api_requests_per_interval'], 0)} | {_fmt(r['prometheus_queries_per_interval'], 0)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="5 noisy runs, scale 100 only, 30 s window")
    p.add_argument("--scenarios", default="all", help=f"comma list of {','.join(ALL)} (or all, none)")
    p.add_argument("--runs", type=int, default=None, help="noisy-healthy runs per policy (default 20)")
    p.add_argument("--scale", default=None, help="comma list of N (default 100,500,1000; 'none' to skip)")
    p.add_argument("--scale-window", type=float, default=None, help="seconds of steady state measured (default 60)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)

    console = Console(width=200)
    say = lambda text: console.log(text)  # noqa: E731
    runs = args.runs or (5 if args.quick else 20)
    scale_ns = [] if args.scale == "none" else [int(x) for x in (args.scale or ("100" if args.quick else "100,500,1000")).split(",") if x]
    window = args.scale_window or (30.0 if args.quick else 60.0)
    chosen = ALL if args.scenarios == "all" else ([] if args.scenarios == "none" else args.scenarios.split(","))
    unknown = set(chosen) - set(ALL)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; known: {ALL}")

    started = time.time()
    records: list[harness.Record] = []
    main_set = [specs.SCENARIOS[s] for s in chosen if s in specs.SCENARIOS]
    if main_set:
        say(f"scenarios {[s.name for s in main_set]} (both policies, concurrently in one lab)")
        records += harness.run_behaviour(main_set, runs=1, seed=args.seed, progress=say)
    if "noisy-healthy" in chosen:
        say(f"noisy healthy canary: {runs} runs per policy, concurrently in one lab")
        records += harness.run_behaviour([specs.NOISY], runs=runs, seed=args.seed + 1, progress=say)
    if "prometheus-outage" in chosen:
        say("Prometheus outage mid-rollout")
        records += harness.run_behaviour([specs.OUTAGE], runs=1, seed=args.seed + 2, outage=True, progress=say)
    rows = harness.summarize(records)
    rats = harness.ratios(rows)
    if rows:
        console.print(behaviour_table(rows))
        console.print(ratio_table(rats))

    scale: list[dict[str, Any]] = []
    for n in scale_ns:
        say(f"scale: {n} ModelRollouts")
        try:
            scale.append(harness.run_scale(n, window=window, progress=say))
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
        "scenarios": rows, "ratios": rats, "scale": scale,
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
