"""The lab's Prometheus runner: a real Prometheus (Debian's package) on loopback."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

try:
    import modelrollout  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))

from modelrollout_lab import prometheus as promlib
from modelrollout_lab.prometheus import PrometheusError, PrometheusServer, free_port

pytestmark = pytest.mark.lab
OPERATOR_SRC = str(Path(__file__).resolve().parents[2] / "operator")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie nobody reaped yet is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def test_start_scrape_stop_leaves_no_process():
    port = free_port()
    with PrometheusServer([f"127.0.0.1:{port}"], port=port) as prom:  # scrapes itself
        assert prom.url == f"http://127.0.0.1:{port}"
        pid, tmp = prom.pid, prom._dir
        assert alive(pid) and os.path.isdir(tmp)
        with urllib.request.urlopen(prom.url + "/-/ready", timeout=2) as r:
            assert r.status == 200
        up = wait_until(lambda: prom.query_values("up", by="job"), timeout=10)
        assert up == {"lab": 1.0}
    assert not alive(pid)
    assert not os.path.exists(tmp)
    prom.stop()  # idempotent


def test_outage_then_restart_on_the_same_port():
    prom = PrometheusServer([]).start()
    try:
        port, first = prom.port, prom.pid
        prom.stop(keep_data=True)
        assert not alive(first)
        with pytest.raises((urllib.error.URLError, OSError)):
            urllib.request.urlopen(prom.url + "/-/ready", timeout=1)
        prom.start()
        assert prom.port == port and prom.pid != first and prom.running
        assert prom.query("vector(1)")[0]["value"][1] == "1"
        prom.add_target(f"127.0.0.1:{port}")
        assert wait_until(lambda: prom.query_values("up", by="instance"), timeout=10) == {f"127.0.0.1:{port}": 1.0}
        second = prom.pid
    finally:
        prom.stop()
    assert not alive(first) and not alive(second)


def test_child_dies_with_its_parent():
    script = textwrap.dedent(f"""
        import sys, threading, time
        sys.path.insert(0, {OPERATOR_SRC!r})
        from modelrollout_lab.prometheus import PrometheusServer
        box = []
        t = threading.Thread(target=lambda: box.append(PrometheusServer([]).start()))
        t.start(); t.join()          # started from a thread that has exited since
        print(box[0].pid, flush=True)
        time.sleep(60)
    """)
    # Become the subreaper of the orphan, so the test can reap it instead of leaving a zombie.
    libc = ctypes.CDLL(None, use_errno=True)
    subreaper = libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        pid = int(parent.stdout.readline())
        time.sleep(0.3)
        assert alive(pid), "prometheus must outlive the thread that started it"
        parent.kill()
        parent.wait(5)
        assert wait_until(lambda: not alive(pid), timeout=5), "prometheus survived its parent"
    finally:
        parent.kill()
        parent.wait(5)
        if subreaper:
            if pid is not None:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            libc.prctl(36, 0, 0, 0, 0)


def test_missing_binary_says_how_to_install(monkeypatch):
    monkeypatch.setattr(promlib.shutil, "which", lambda name: None)
    monkeypatch.setattr(promlib.os, "access", lambda path, mode: False)
    monkeypatch.setattr(promlib.os, "geteuid", lambda: 1000)
    with pytest.raises(PrometheusError, match="apt-get install prometheus"):
        PrometheusServer([]).start()


def test_prometheus_sees_the_error_ratio_per_revision(tmp_path):
    """Emulated API -> workload + traffic simulators -> a real Prometheus scraping on loopback."""
    from modelrollout_lab.apiserver import start_in_thread
    from modelrollout_lab.traffic import TRAFFIC_LABEL, TrafficSimulator
    from modelrollout_lab.workloads import RawKube, WorkloadSimulator
    from modelrollout.names import LABEL_REVISION, LABEL_ROLLOUT

    srv = start_in_thread()
    kubeconfig = str(tmp_path / "kubeconfig")
    srv.write_kubeconfig(kubeconfig)
    workloads = WorkloadSimulator(kubeconfig).start()
    traffic = TrafficSimulator(kubeconfig, seed=11).start()
    prom = PrometheusServer([traffic.address]).start()  # first scrape comes ~5 s after start
    try:
        kube = RawKube(kubeconfig)
        kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": "ml"}})
        for name, rate in (("fraud-r1", "0.0"), ("fraud-r2", "0.2")):
            labels = {"app": "fraud", LABEL_ROLLOUT: "fraud", LABEL_REVISION: name[-2:]}
            kube.request("POST", "/apis/apps/v1/namespaces/ml/deployments", body={
                "metadata": {"name": name},
                "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                    "metadata": {"labels": labels, "annotations": {"lab.modelrollout.io/error-rate": rate,
                                                                   "lab.modelrollout.io/load-seconds": "0.2"}},
                    "spec": {"containers": [{"name": "model", "image": "model:1"}]}}}})
        kube.request("POST", "/api/v1/namespaces/ml/services", body={
            "metadata": {"name": "fraud"}, "spec": {"selector": {"app": "fraud"}, "ports": [{"port": 8080}]}})
        kube.request("POST", "/api/v1/namespaces/ml/configmaps", body={
            "metadata": {"name": "traffic", "labels": {TRAFFIC_LABEL: "true"}},
            "data": {"target": "service/fraud", "rps": "200"}})
        expr = ('sum by (revision)(rate(http_requests_total{code="500"}[5s]))'
                ' / sum by (revision)(rate(http_requests_total[5s]))')
        ratios = wait_until(lambda: (lambda v: v if len(v) == 2 else None)(prom.query_values(expr, by="revision")),
                            timeout=20, interval=0.5)
        assert ratios, prom.query("http_requests_total")
        time.sleep(2.0)  # a fuller 5 s window
        ratios = prom.query_values(expr, by="revision")
        assert ratios["r1"] == 0.0
        assert ratios["r2"] == pytest.approx(0.2, abs=0.07)
        shares = prom.query_values("sum by (revision)(rate(http_requests_total[5s]))", by="revision")
        assert shares["r1"] / shares["r2"] == pytest.approx(1.0, abs=0.35)  # equal ready pods, equal shares
        assert 100 < shares["r1"] + shares["r2"] < 300
        assert prom.query_values("sum by (job)(up)", by="job") == {"lab": 1.0}
    finally:
        pid = prom.pid
        prom.stop()
        traffic.stop()
        workloads.stop()
        srv.stop()
    assert not alive(pid)
