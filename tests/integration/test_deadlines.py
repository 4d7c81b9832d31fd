"""A decision that is due reaches the cluster within one analysis interval of its due time, however
long the analysis takes (issue 9 item 8: a no-data rollback came 18 s late during an outage)."""

from __future__ import annotations

import socket
import threading

import pytest

from modelrollout import core
from modelrollout_lab import scenarios
from modelrollout_lab.lab import Lab

from lab_watch import Recorder, route_canary_weight, start_stable

pytestmark = pytest.mark.lab

INTERVAL = 2.0
HOLD = 6.0


class SilentServer:
    """A 'Prometheus' that accepts connections and never answers: every query hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    silent = SilentServer()
    with Lab(str(tmp_path_factory.mktemp("lab")), seed=3) as lab:
        lab.start_operator("--prometheus-url", silent.url)
        yield lab
    silent.close()


def test_a_no_data_rollback_during_a_hanging_prometheus_is_on_time(lab):
    v1 = start_stable(lab, "outage", router="gatewayAPI", interval=f"{INTERVAL:g}s",
                      no_data={"hold": f"{HOLD:g}s", "then": "rollback"},
                      steps=[{"weight": 30, "hold": "60s"}])
    with Recorder(lambda: lab.status("outage").get("noDataSince"), interval=0.05) as since:
        lab.apply(scenarios.release(v1, "2.0.0"))
        status = lab.wait_for_phase("outage", "RolledBack", timeout=60)
    assert since.values, "the no-data clock never started"
    due = core.parse_ts(since.values[0]) + core.timedelta(seconds=HOLD)
    rolled_back = core.parse_ts(status["history"][0]["finishedAt"])
    assert status["history"][0]["result"] == "RolledBack" and "no conclusive data" in status["message"]
    assert (rolled_back - due).total_seconds() <= INTERVAL, (due, rolled_back)
    lab.wait_for(lambda: route_canary_weight(lab, "outage") == 0, timeout=INTERVAL * 2, what="traffic back on stable")
