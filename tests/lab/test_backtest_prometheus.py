"""`modelrollout backtest` against a real Prometheus holding a known history.

A small exposition server writes Istio's metrics for three revisions of one rollout: a stable
one and a healthy canary that stay good, and a bad canary whose errors start at a known moment.
A real Prometheus scrapes it every second. Replaying the same history must roll the bad canary
back after that moment (never before), and promote the healthy one.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

try:
    import modelrollout  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))

from modelrollout.backtest import backtest, backtest_command, outcome
from modelrollout_lab.prometheus import PrometheusServer, scraping
from modelrollout.providers.prometheus import PrometheusProvider
from modelrollout.spec import PlatformPolicy, parse_spec

pytestmark = pytest.mark.lab

NAMESPACE, NAME = "ml", "fraud"
STABLE, HEALTHY, BAD = "0000stable", "1111health", "2222broken"
RPS = 5000.0
BAD_AFTER = 10.0  # seconds after the exposition starts, the bad canary starts failing 20 %
BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


def _series(revision: str, elapsed: float) -> list[str]:
    labels = (f'reporter="destination",destination_workload_namespace="{NAMESPACE}",'
              f'destination_workload="{NAME}-{revision}",destination_canonical_revision="latest"')
    n = RPS * elapsed
    errors = n * 0.0005
    if revision == BAD and elapsed > BAD_AFTER:
        errors += RPS * (elapsed - BAD_AFTER) * 0.2
    lines = [f'istio_requests_total{{{labels},response_code="200"}} {n - errors:.3f}',
             f'istio_requests_total{{{labels},response_code="503"}} {errors:.3f}']
    for bound in BOUNDS_MS:  # every request takes 20 ms
        lines.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="{bound}"}} {n if bound >= 20 else 0:.3f}')
    lines.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="+Inf"}} {n:.3f}')
    return lines


def exposition(elapsed: float) -> str:
    return "\n".join(line for r in (STABLE, HEALTHY, BAD) for line in _series(r, elapsed)) + "\n"


ROLLOUT = {
    "apiVersion": "modelrollout.io/v1alpha1",
    "kind": "ModelRollout",
    "metadata": {"name": NAME, "namespace": NAMESPACE},
    "spec": {
        "model": {"name": NAME, "version": "2"},
        "replicas": 10,  # the replicas router shares traffic by pods: 10 % is one of 10
        "selector": {"matchLabels": {"app": NAME}},
        "template": {"metadata": {"labels": {"app": NAME}}, "spec": {"containers": [{"name": "m", "image": "m:2"}]}},
        "service": {"port": 8080},
        "trafficRouting": {"replicas": {}},
        "strategy": {"steps": [{"weight": 10, "hold": "6s"}, {"weight": 50, "hold": "6s"}, {"weight": 100}]},
        "analysis": {"interval": "2s", "preset": "istio", "noData": {"hold": "30s"},
                     "metrics": [{"name": "error-rate"}, {"name": "latency-p95"}]},
    },
}


@pytest.fixture(scope="module")
def history(prometheus_binary):
    """(prometheus, moment the exposition started), once 18 s of history exist."""
    with scraping(exposition) as (prom, started):
        time.sleep(max(0.0, started + 19 - time.time()))
        assert prom.query("count_over_time(up[1m])"), prom.log_tail()
        yield prom, datetime.fromtimestamp(started, tz=UTC)


async def _replay(prom: PrometheusServer, started: datetime, canary: str):
    spec = parse_spec(ROLLOUT["spec"], PlatformPolicy(prometheus_url=prom.url))
    provider = PrometheusProvider(prom.url, timeout=5)
    try:
        return await backtest(spec, NAMESPACE, NAME, provider, started + timedelta(seconds=1),
                              started + timedelta(seconds=18.5), canary_revision=canary, stable_revision=STABLE)
    finally:
        provider.close()


async def test_bad_history_rolls_back_after_the_errors_start_and_not_before(history) -> None:
    prom, started = history
    rows = await _replay(prom, started, BAD)
    bad_from = started + timedelta(seconds=BAD_AFTER)
    last = rows[-1]
    assert last.phase == "RolledBack", [r.message for r in rows]
    assert last.at >= bad_from - timedelta(seconds=0.5), (last.at, bad_from)
    assert last.at <= bad_from + timedelta(seconds=5)
    assert any(m.metric == "error-rate" and m.verdict == "Fail" for m in last.metrics)
    before = [r for r in rows if r.at < bad_from - timedelta(seconds=0.5)]
    assert any(r.metrics for r in before), "analyses ran before the errors started"
    for row in before:
        assert row.phase != "RolledBack"
        assert all(m.verdict != "Fail" for m in row.metrics), row
    assert any(r.action == "Advance" and r.step == 1 for r in before), "step 0 passed while healthy"
    text = outcome(rows)
    assert text.startswith(f"would have rolled back at {last.at:%H:%M:%S}: error-rate"), text


async def test_healthy_history_promotes(history) -> None:
    prom, started = history
    rows = await _replay(prom, started, HEALTHY)
    assert rows[-1].phase == "Succeeded", [(r.at, r.action, r.message, r.metrics) for r in rows]
    assert all(m.verdict != "Fail" for r in rows for m in r.metrics)
    assert [r.step for r in rows if r.action == "Advance"][:2] == [0, 1]
    assert outcome(rows).startswith("would have promoted at ")


def test_command_prints_the_table_and_the_outcome(history, tmp_path) -> None:
    prom, started = history
    manifest = tmp_path / "rollout.yaml"
    manifest.write_text(yaml.safe_dump(ROLLOUT))
    begin = (started + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    end = f"{(started + timedelta(seconds=18.5)).timestamp():.3f}"
    result = CliRunner().invoke(backtest_command, ["-f", str(manifest), "--from", begin, "--to", end,
                                                   "--prometheus", prom.url, "--canary-revision", BAD,
                                                   "--stable-revision", STABLE])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split()[:5] == ["time", "step", "weight", "error-rate", "latency-p95"], result.output
    assert "fail" in result.output
    assert lines[-1].startswith("would have rolled back at "), result.output
