"""Two operator replicas with the chart's peering: one acts, the other stands by (issue 9, item 11).

Without peering both replicas act on every rollout and each decision is posted twice. With the
chart's peering and kopf's default (equal) priorities, kopf pauses *every* operator that sees a
same-priority peer: nothing acts at all. The operator gives each replica a priority by start
time, so the oldest leads and the others pause until it leaves.
"""

from __future__ import annotations

import collections
import signal
from pathlib import Path

import pytest
import yaml

from modelrollout_lab import scenarios
from modelrollout_lab.lab import Lab
from modelrollout_lab.rbac import render_chart_rbac

from lab_watch import start_stable

pytestmark = pytest.mark.lab

CHART = Path(__file__).resolve().parents[2] / "helm" / "modelrollout"
PEERING = "modelrollout"  # the chart's peering name for a release named modelrollout (its full name)
PEERED = ("--peering", "--peering-name", PEERING, "--log-level", "debug")  # debug: kopf logs its watches
ROLLOUT_DAEMON = "Daemon 'register.<locals>.run_rollout' is invoked"
PAUSED = "Pausing the watch-stream for modelrollouts.v1alpha1.modelrollout.io cluster-wide (blockers: modelrollout"
RESUMED = "Resuming the watch-stream for modelrollouts.v1alpha1.modelrollout.io"
SAMPLED = {"rps": 400, "min_samples": 300}  # enough canary requests that a healthy canary passes quickly


def peers(lab: Lab) -> dict[str, dict]:
    """The operators announced in the peering object (kopf keeps them in its status)."""
    body = lab.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", PEERING)
    return dict(body.get("status") or {})


def rollout_events(lab: Lab, name: str) -> list[tuple[str, str]]:
    return [(e.reason, e.message) for e in lab.core.list_namespaced_event("default").items
            if e.involved_object.name == name]


def promoted(lab: Lab, name: str) -> bool:
    status = lab.status(name)
    return status.get("phase") == "Succeeded" and (status.get("history") or [{}])[0].get("result") == "Promoted"


@pytest.fixture(scope="module")
def peered_lab(tmp_path_factory):
    """The lab with the chart's RBAC and peering CRDs as `replicas: 2, peering.enabled: true` installs them."""
    rbac = render_chart_rbac(CHART, {"replicas": 2, "peering": {"enabled": True}})
    with Lab(str(tmp_path_factory.mktemp("peering")), seed=11, rbac=rbac) as lab:
        for crd in yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()):
            lab.apply(crd)
        lab.apply({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}})
        lab.start_operator(*PEERED)
        lab.wait_for(lambda: len(peers(lab)) == 1, timeout=30, what="the first replica in the peering")
        lab.start_peer_operator(*PEERED)
        lab.wait_for(lambda: len(peers(lab)) == 2, timeout=30, what="the second replica in the peering")
        yield lab


def test_with_two_peered_replicas_only_one_acts(peered_lab):
    lab = peered_lab
    v1 = start_stable(lab, "peered", router="gatewayAPI", **SAMPLED)
    lab.apply(scenarios.release(v1, "2.0.0"))
    lab.wait_for(lambda: promoted(lab, "peered"), timeout=90, what="promotion")

    # kopf posts events in the background: the status can say Promoted before its event is there.
    events = lab.wait_for(lambda: (found := rollout_events(lab, "peered")) and
                          "Promoted" in {reason for reason, _ in found} and found, timeout=10, what="the Promoted event")
    twice = [event for event, count in collections.Counter(events).items() if count > 1]
    assert twice == [], f"posted more than once: {twice}"
    active, standby = lab.operator_log(), (lab.workdir / "peer-operator.log").read_text()
    assert RESUMED in active and ROLLOUT_DAEMON in active
    assert PAUSED in standby and RESUMED not in standby and ROLLOUT_DAEMON not in standby


def test_the_standby_takes_over_when_the_active_replica_stops(peered_lab):
    lab = peered_lab
    lab.kill_operator(signal.SIGTERM)  # a clean exit leaves the peering at once
    lab.wait_for(lambda: RESUMED in (lab.workdir / "peer-operator.log").read_text(), timeout=30,
                 what="the standby resuming")
    v1 = start_stable(lab, "after-failover", router="gatewayAPI", **SAMPLED)
    lab.apply(scenarios.release(v1, "2.0.0"))
    lab.wait_for(lambda: promoted(lab, "after-failover"), timeout=90, what="promotion by the standby")
    events = rollout_events(lab, "after-failover")
    assert [event for event, count in collections.Counter(events).items() if count > 1] == []
