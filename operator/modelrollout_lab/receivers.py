"""A recording HTTP receiver on 127.0.0.1: what a Slack, Teams, PagerDuty or webhook endpoint was sent.

Every POST is kept (path, headers, JSON body, arrival time). Answers are scripted: `answers` is
consumed one status per request (then 200), paths starting with `/fail` always answer 500, and
requests to paths starting with `/hang` wait until `release` is set. Every answer carries a body that must never be echoed by the operator (`BODY`).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BODY = b"INTERNAL-ONLY: db_password=hunter2"


class Receiver:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body),
                                          "at": time.monotonic(), "wall": time.time()})
                if self.path.startswith("/hang"):
                    receiver.release.wait(60)
                status = 500 if self.path.startswith("/fail") else receiver.answers.pop(0) if receiver.answers else 200
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(BODY)))
                    self.end_headers()
                    self.wfile.write(BODY)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a hang outlasting its timeout)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/{route}"

    def to(self, route: str) -> list[dict[str, Any]]:
        """The requests sent to one path."""
        return [r for r in self.requests if r["path"] == f"/{route}"]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
