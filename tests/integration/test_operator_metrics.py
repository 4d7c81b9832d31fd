"""The operator's own /metrics, scraped from the real operator process while rollouts change phase."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab_watch import start_stable
from modelrollout_lab import scenarios
from modelrollout_lab.lab import Lab

pytestmark = pytest.mark.lab


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(str(tmp_path_factory.mktemp("lab")), seed=11) as lab:
        lab.start_operator("--metrics-port", str(METRICS_PORT))
        yield lab


def scrape() -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def per_phase() -> dict[str, float]:
    try:
        found = scrape()
    except OSError:  # the operator is still starting its metrics server
        return {}
    return {dict(labels)["phase"]: v for (name, labels), v in found.items() if name == "modelrollout_rollouts"}


def until_phases(lab, **expected):
    return lab.wait_for(lambda: (p := per_phase()) and all(p.get(k) == v for k, v in expected.items()) and p,
                        timeout=20, what=f"modelrollout_rollouts {expected}")


def test_rollouts_per_phase_follow_phase_changes_and_deletions(lab):
    good = start_stable(lab, "census", rps=300, min_samples=100)
    start_stable(lab, "neighbour")
    lab.apply(scenarios.rollout("broken", steps=[{"weight": 50}, {"weight": 10}]))  # weights going down
    lab.wait_for_phase("broken", "InvalidSpec", timeout=30)
    until_phases(lab, Succeeded=2, InvalidSpec=1, RolledBack=0)

    lab.apply(scenarios.release(good, "2.0.0", behaviour={"error-rate": "0.3"}))
    lab.wait_for_phase("census", "RolledBack", timeout=60)
    phases = until_phases(lab, Succeeded=1, InvalidSpec=1, RolledBack=1)
    assert sum(phases.values()) == 3
    found = scrape()
    rollout = frozenset({("namespace", "default"), ("name", "census")})
    assert found[("modelrollout_rollbacks_total", rollout)] == 1
    assert found[("modelrollout_analyses_total", rollout)] >= 1
    assert found[("modelrollout_prometheus_queries_total", frozenset())] > 0

    lab.delete_rollout("neighbour")
    lab.wait_for(lambda: not lab.status("neighbour"), timeout=20, what="neighbour deleted")
    until_phases(lab, Succeeded=0, InvalidSpec=1, RolledBack=1)
