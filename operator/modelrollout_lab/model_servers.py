"""Real model servers on loopback, each run by its own venv's python (`make servers`).

    with mlserver(delay=0.2) as server:     # MLServer 1.7.1 + the iris runtime
        server.url, server.metrics_target   # http://127.0.0.1:P, "127.0.0.1:M"
    with kserve(delay=0.2) as server: ...   # KServe 0.21's Python ModelServer
    with fastapi_app() / bentoml_service()  # a plain FastAPI app, a BentoML 1.4 service

Both serve the lab's iris model (served/served_iris.py), instrumented with modelrollout_instrument.
The servers' dependencies clash with the operator's pins and with each other's, so each has a
venv under `.venv-servers/` (servers/*.txt pins them); `server_python(kind)` finds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVED = Path(__file__).resolve().parent / "served"
VENVS = Path(os.environ.get("MODELROLLOUT_SERVER_VENVS", ROOT / ".venv-servers"))


def server_python(kind: str) -> Path | None:
    """The python of `.venv-servers/<kind>`, None when that venv is not installed."""
    python = VENVS / kind / "bin" / "python"
    return python if python.exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ModelServer:
    url: str
    metrics_target: str  # host:port whose /metrics Prometheus scrapes
    process: subprocess.Popen[bytes]
    log: Path
    grpc_target: str | None = None  # host:port of its gRPC server, when it has one

    def grpc_requests(self, count: int) -> int:
        """Sends `count` good gRPC inference requests (MLServer only); how many answered OK."""
        assert self.grpc_target, "this server has no gRPC endpoint"
        python = server_python("mlserver")
        answer = subprocess.run([str(python), str(SERVED / "mlserver_grpc_client.py"), self.grpc_target, str(count)],
                                check=True, capture_output=True, text=True, timeout=120)
        return int(answer.stdout.strip())


@contextlib.contextmanager
def _running(command: list[str], cwd: str, ready_url: str, url: str, metrics_target: str,
             delay: float, timeout: float = 90.0) -> Iterator[ModelServer]:
    env = {**os.environ, "IRIS_DELAY_SECONDS": str(delay),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(SERVED)])}
    log = Path(cwd) / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = ModelServer(url, metrics_target, process, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited {process.returncode}: {log.read_text()[-2000:]}")
            with contextlib.suppress(urllib.error.URLError, OSError):
                with urllib.request.urlopen(ready_url, timeout=2) as answer:
                    if answer.status == 200:
                        break
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout}s: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def mlserver(delay: float = 0.0) -> Iterator[ModelServer]:
    python = server_python("mlserver")
    assert python, "no .venv-servers/mlserver: run `make servers`"
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="modelrollout-mlserver-") as folder:
        Path(folder, "settings.json").write_text(json.dumps({
            "http_port": http, "grpc_port": grpc, "metrics_port": metrics, "host": "127.0.0.1",
            "parallel_workers": 0}))
        Path(folder, "iris").mkdir()
        Path(folder, "iris", "model-settings.json").write_text(json.dumps({
            "name": "iris", "implementation": "mlserver_iris.IrisRuntime"}))
        with _running([str(python.parent / "mlserver"), "start", folder], folder,
                      f"http://127.0.0.1:{http}/v2/models/iris/ready", f"http://127.0.0.1:{http}",
                      f"127.0.0.1:{metrics}", delay) as server:
            server.grpc_target = f"127.0.0.1:{grpc}"
            yield server


@contextlib.contextmanager
def _one_port_server(venv: str, command: Callable[[Path, int], list[str]], ready_path: str,
                     delay: float) -> Iterator[ModelServer]:
    """A server answering and exporting on one HTTP port: `command(python, port)` starts it."""
    python = server_python(venv)
    assert python, f"no .venv-servers/{venv}: run `make servers`"
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix=f"modelrollout-{venv}-") as folder:
        with _running(command(python, port), folder, f"http://127.0.0.1:{port}{ready_path}",
                      f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", delay) as server:
            yield server


def kserve(delay: float = 0.0) -> contextlib.AbstractContextManager[ModelServer]:
    """KServe 0.21's Python ModelServer (V1 protocol)."""
    return _one_port_server("kserve", lambda python, port: [
        str(python), str(SERVED / "kserve_iris.py"), "--http_port", str(port), "--enable_grpc", "false"],
        "/v1/models/iris", delay)


def fastapi_app(delay: float = 0.0) -> contextlib.AbstractContextManager[ModelServer]:
    """A plain FastAPI app with modelrollout_instrument's middleware (FastAPI and uvicorn come
    with KServe, so it runs from KServe's venv)."""
    return _one_port_server("kserve", lambda python, port: [
        str(python), str(SERVED / "fastapi_iris.py"), str(port)], "/healthz", delay)


def bentoml_service(delay: float = 0.0) -> contextlib.AbstractContextManager[ModelServer]:
    """A BentoML 1.4 service with modelrollout_instrument's `counted_api`."""
    return _one_port_server("bentoml", lambda python, port: [
        str(python.parent / "bentoml"), "serve", "bentoml_iris:Iris", "--host", "127.0.0.1",
        "--port", str(port), "--working-dir", str(SERVED)], "/readyz", delay)
