"""A real Prometheus server (Debian's ``prometheus`` package) on loopback, for the lab.

    with PrometheusServer(["127.0.0.1:9100"]) as prom:
        prom.url                      # http://127.0.0.1:PORT
        prom.query('up')              # instant query -> result list
        prom.stop(); prom.start()     # an outage, then back on the same port

The child runs in its own process group, dies with its parent (PR_SET_PDEATHSIG on Linux),
is stopped at interpreter exit, and ``stop()`` is idempotent.

As a process: ``python -m modelrollout_lab.prometheus --target 127.0.0.1:9100 [--port P]``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INSTALL_HINT = (
    "Prometheus is not installed: run 'sudo apt-get install prometheus' (Debian/Ubuntu), "
    "or put a prometheus binary on PATH, or pass binary=/path/to/prometheus."
)

_live: weakref.WeakSet[PrometheusServer] = weakref.WeakSet()


class PrometheusError(RuntimeError):
    pass


def find_prometheus(install: bool = True) -> str:
    """The prometheus binary; installs Debian's package when missing and running as root."""
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None)
    if found:
        return found
    if install and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
                           check=True, env=env, stdout=subprocess.DEVNULL)
        except (OSError, subprocess.CalledProcessError) as e:
            raise PrometheusError(f"{INSTALL_HINT} (automatic install failed: {e})") from e
        found = shutil.which("prometheus") or "/usr/bin/prometheus"
        if os.access(found, os.X_OK):
            return found
    raise PrometheusError(INSTALL_HINT)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. So
# every child is forked from one long-lived daemon thread, which lives as long as the process.
_spawn_q: queue.Queue[tuple[Any, ...]] = queue.Queue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _spawn_loop() -> None:
    while True:
        args, kwargs, box, done = _spawn_q.get()
        try:
            box.append(subprocess.Popen(args, **kwargs))
        except BaseException as e:  # noqa: BLE001
            box.append(e)
        done.set()


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes  # noqa: PLC0415

        return ctypes.CDLL(None, use_errno=True).prctl
    except Exception:  # noqa: BLE001
        return None


_prctl = _load_prctl()  # resolved before any fork: the child must not import


def _die_with_parent(parent: int) -> None:
    if _prctl is not None:
        _prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def spawn(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Popen in a new process group that gets SIGKILL if this process dies."""
    global _spawner
    parent = os.getpid()
    kwargs.setdefault("start_new_session", True)
    kwargs["preexec_fn"] = lambda: _die_with_parent(parent)
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner = threading.Thread(target=_spawn_loop, name="lab-spawner", daemon=True)
            _spawner.start()
    box: list[Any] = []
    done = threading.Event()
    _spawn_q.put((args, kwargs, box, done))
    done.wait()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _stop_all() -> None:
    for server in list(_live):
        try:
            server.stop(timeout=3)
        except Exception:  # noqa: BLE001
            pass


atexit.register(_stop_all)


class PrometheusServer:
    """One Prometheus process scraping ``targets`` ("host:port") every ``scrape_interval``."""

    def __init__(self, targets: Iterable[str] = (), scrape_interval: str = "1s", port: int = 0, *,
                 host: str = "127.0.0.1", binary: str | None = None, job: str = "lab",
                 extra_args: Iterable[str] = (), ready_timeout: float = 30.0,
                 target_labels: Mapping[str, Mapping[str, str]] | None = None):
        self.targets = list(targets)
        self.target_labels = dict(target_labels or {})  # per target, as a PodMonitor's relabelling adds them
        self.scrape_interval = scrape_interval
        self.port = port
        self.host = host
        self.binary = binary
        self.job = job
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None
        self._lock = threading.RLock()

    # ---- paths
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def config_path(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "prometheus.yml")

    @property
    def data_path(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "data")

    @property
    def log_path(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "prometheus.log")

    def config_text(self) -> str:
        cfg = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval,
                       "scrape_timeout": self.scrape_interval},
            "scrape_configs": [{
                "job_name": self.job,
                "honor_labels": True,
                "scrape_interval": self.scrape_interval,
                "static_configs": [{"targets": [target], "labels": dict(self.target_labels.get(target, {}))}
                                   for target in self.targets],
            }],
        }
        return json.dumps(cfg, indent=2)  # JSON is YAML

    # ---- lifecycle
    def start(self) -> PrometheusServer:
        with self._lock:
            if self.running:
                return self
            binary = self.binary or find_prometheus()
            if self._dir is None:
                self._dir = tempfile.mkdtemp(prefix="modelrollout-prometheus-")
                os.makedirs(self.data_path, exist_ok=True)
            if not self.port:
                self.port = free_port(self.host)
            with open(self.config_path, "w") as f:
                f.write(self.config_text())
            args = [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_path}",
                f"--web.listen-address={self.host}:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
                *self.extra_args,
            ]
            log = open(self.log_path, "ab")
            try:
                self.proc = spawn(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  cwd=self._dir)
            finally:
                log.close()
            _live.add(self)
            try:
                self._wait_ready()
            except BaseException:
                self.stop(keep_data=True)
                raise
            return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.proc.returncode if self.proc else '?'}:\n"
                                      f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready after {self.ready_timeout}s on {self.url}:\n{self.log_tail()}")

    def wait_for_scrapes(self, count: int, timeout: float = 60.0) -> None:
        """Until `count` scrapes of one target lie within the last minute (windows hold samples)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query("count_over_time(up[1m])")
            if result and float(result[0]["value"][1]) >= count:
                return
            time.sleep(0.5)
        raise PrometheusError(f"fewer than {count} scrapes within {timeout:g}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except (OSError, AssertionError):
            return ""

    def stop(self, timeout: float = 10.0, *, keep_data: bool = False) -> None:
        """Terminate (SIGTERM, then SIGKILL after ``timeout``) and, unless ``keep_data``, remove
        the temp dir. Safe to call twice. ``start()`` afterwards reuses the same port."""
        with self._lock:
            proc, self.proc = self.proc, None
            if proc is not None:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGTERM)
                    except (ProcessLookupError, PermissionError):
                        proc.terminate()
                    try:
                        proc.wait(timeout)
                    except subprocess.TimeoutExpired:
                        try:
                            os.killpg(proc.pid, signal.SIGKILL)
                        except (ProcessLookupError, PermissionError):
                            proc.kill()
                        proc.wait(5)
                else:
                    proc.wait()
            _live.discard(self)
            if not keep_data and self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def restart(self) -> PrometheusServer:
        self.stop(keep_data=True)
        return self.start()

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort; stop() is the API
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.stop(timeout=2)
        except Exception:  # noqa: BLE001
            pass

    # ---- targets
    def add_target(self, target: str) -> None:
        if target not in self.targets:
            self.targets.append(target)
            self.reload()

    def set_targets(self, targets: Iterable[str]) -> None:
        self.targets = list(targets)
        self.reload()

    def reload(self) -> None:
        """Rewrite the config and POST /-/reload (no-op while stopped)."""
        with self._lock:
            if self._dir is None:
                return
            with open(self.config_path, "w") as f:
                f.write(self.config_text())
            if self.running:
                req = urllib.request.Request(f"{self.url}/-/reload", method="POST", data=b"")
                with urllib.request.urlopen(req, timeout=10) as r:
                    r.read()

    # ---- queries (HTTP API)
    def api(self, path: str, **params: Any) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, time_: float | None = None) -> list[dict[str, Any]]:
        """Instant query; returns data.result (a list of {metric, value})."""
        params: dict[str, Any] = {"query": expr}
        if time_ is not None:
            params["time"] = time_
        return self.api("query", **params)["result"]

    def query_values(self, expr: str, by: str) -> dict[str, float]:
        """Instant query -> {label value of ``by``: float value}."""
        return {r["metric"].get(by, ""): float(r["value"][1]) for r in self.query(expr)}

    def active_targets(self) -> list[dict[str, Any]]:
        return self.api("targets")["activeTargets"]


@contextlib.contextmanager
def scraping(exposition: Callable[[float], str],
             scrape_interval: str = "1s") -> Iterator[tuple[PrometheusServer, float]]:
    """A real Prometheus scraping `exposition(seconds since start)` (the text format), served on
    loopback: yields (the server, the start as a Unix time). For tests that need real PromQL
    answers over series whose values they choose."""
    started = time.time()

    class Exposition(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the handler's protocol
            body = exposition(time.time() - started).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Exposition)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    prometheus = PrometheusServer([f"127.0.0.1:{server.server_address[1]}"], scrape_interval=scrape_interval)
    try:
        yield prometheus.start(), started
    finally:
        prometheus.stop()
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m modelrollout_lab.prometheus",
                                description="Run a loopback Prometheus scraping the given targets.")
    p.add_argument("--target", action="append", default=[], help="host:port to scrape (repeatable)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--scrape-interval", default="1s")
    args = p.parse_args(argv)
    server = PrometheusServer(args.target, scrape_interval=args.scrape_interval, port=args.port)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    server.start()
    print(f"prometheus ready at {server.url} (pid {server.pid})", flush=True)
    try:
        while not done.wait(1.0):
            if not server.running:
                print("prometheus exited:\n" + server.log_tail(), file=sys.stderr)
                return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
