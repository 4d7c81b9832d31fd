"""The workload simulator: plays the Deployment controller and the kubelet for the lab.

It reaches the API only through a kubeconfig, so it can run beside a real (kubelet-less)
cluster unchanged. Deployments become "ready" after the model load time given by the pod
template annotation ``lab.modelrollout.io/load-seconds`` (default 1.0; "inf" never loads);
scale-downs show at once; scale-ups become ready after the load time. Status is written to
the status subresource with a merge patch. Optionally, Jobs whose pod template carries
``lab.modelrollout.io/job-result`` finish after ``lab.modelrollout.io/job-seconds``.

In-process::

    sim = WorkloadSimulator("/path/kubeconfig").start()
    ...
    sim.stop()

As a process: ``python -m modelrollout_lab.workloads --kubeconfig K``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from modelrollout_lab.models import A_LOAD_SECONDS, ANNOTATION_PREFIX

log = logging.getLogger("modelrollout_lab.workloads")

A_JOB_RESULT = ANNOTATION_PREFIX + "job-result"
A_JOB_SECONDS = ANNOTATION_PREFIX + "job-seconds"
A_JOB_REASON = ANNOTATION_PREFIX + "job-reason"
A_JOB_MESSAGE = ANNOTATION_PREFIX + "job-message"

MERGE_PATCH = "application/merge-patch+json"

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)


# --------------------------------------------------------------------------------------------
# A thin raw-JSON client over the kubernetes package's ApiClient (kubeconfig, auth, TLS).


class KubeError(Exception):
    def __init__(self, status: int, body: str, method: str, path: str):
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


class RawKube:
    """Plain-dict access to any API path, authenticated from an ordinary kubeconfig."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None):
        import kubernetes  # noqa: PLC0415 (the lab is the only user)

        self.kubeconfig = kubeconfig

        if kubeconfig is None:
            self.api = kubernetes.config.new_client_from_config(context=context)
        else:
            self.api = kubernetes.config.new_client_from_config(config_file=kubeconfig, context=context)

    def _call(self, method: str, path: str, query: dict[str, Any] | None, body: Any,
              content_type: str | None, timeout: Any) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        m, url, h, b, pp = self.api.param_serialize(
            method, path, query_params=params, header_params=headers, body=body,
            auth_settings=["BearerToken"],
        )
        return self.api.call_api(m, url, h, b, pp, _request_timeout=timeout)

    def request(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
                content_type: str | None = None, timeout: float = 10.0) -> Obj:
        resp = self._call(method, path, query, body, content_type, timeout)
        data = resp.read()
        if not 200 <= resp.status < 300:
            raise KubeError(resp.status, data.decode("utf-8", "replace"), method, path)
        return json.loads(data) if data else {}

    def get(self, path: str, **query: Any) -> Obj:
        return self.request("GET", path, query)

    def patch(self, path: str, body: Any, content_type: str = MERGE_PATCH) -> Obj:
        return self.request("PATCH", path, body=body, content_type=content_type)

    def stream(self, path: str, query: dict[str, Any], timeout: Any = (5.0, 90.0)) -> Any:
        """Open a watch; returns the raw urllib3 response (iterate with iter_lines, close())."""
        resp = self._call("GET", path, query, None, None, timeout)
        if not 200 <= resp.status < 300:
            data = resp.read()
            raise KubeError(resp.status, data.decode("utf-8", "replace"), "WATCH", path)
        return resp.response

    def close(self) -> None:
        try:
            self.api.close()
        except Exception:  # noqa: BLE001
            pass


def iter_lines(resp: Any) -> Iterator[str]:
    buffer = bytearray()
    for chunk in resp.stream(amt=None, decode_content=False):
        buffer.extend(chunk if isinstance(chunk, bytes) else chunk.encode())
        while True:
            i = buffer.find(b"\n")
            if i < 0:
                break
            line = bytes(buffer[:i]).strip()
            del buffer[: i + 1]
            if line:
                yield line.decode("utf-8", "replace")
    if buffer.strip():
        yield bytes(buffer).decode("utf-8", "replace")


def key_of(obj: Obj) -> Key:
    md = obj.get("metadata") or {}
    return (md.get("namespace") or "", md.get("name") or "")


class Informer:
    """A list+watch cache of one collection, with a polling fallback.

    ``items`` maps (namespace, name) to the latest object (plain dicts). ``on_event(type, obj)``
    is called from the informer's thread for ADDED/MODIFIED/DELETED. A missing collection (404,
    e.g. no Gateway API CRD) counts as empty and is retried every ``poll_interval``.
    """

    def __init__(self, kube: RawKube, path: str, *, label_selector: str | None = None,
                 on_event: Callable[[str, Obj], None] | None = None, poll_interval: float = 1.0,
                 watch: bool = True, name: str = ""):
        self.kube = kube
        self.path = path
        self.label_selector = label_selector
        self.on_event = on_event
        self.poll_interval = poll_interval
        self.use_watch = watch
        self.name = name or path
        self.items: dict[Key, Obj] = {}
        self.synced = threading.Event()
        self.available = False  # the collection exists
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread: threading.Thread | None = None

    # public
    def start(self) -> Informer:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"informer:{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            try:
                resp.shutdown() if hasattr(resp, "shutdown") else None
            except Exception:  # noqa: BLE001
                pass
            try:
                resp.close()
            except Exception:  # noqa: BLE001
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def snapshot(self) -> dict[Key, Obj]:
        with self._lock:
            return dict(self.items)

    def resync(self) -> None:
        """List now (from the caller's thread) and apply the result."""
        self._relist()

    # internals
    def _emit(self, kind: str, obj: Obj) -> None:
        if self.on_event is not None:
            try:
                self.on_event(kind, obj)
            except Exception:  # noqa: BLE001
                log.exception("%s: event handler failed", self.name)

    def _relist(self) -> str:
        try:
            data = self.kube.get(self.path, labelSelector=self.label_selector)
            self.available = True
        except KubeError as e:
            if e.status != 404:
                raise
            data = {"items": [], "metadata": {}}
            self.available = False
        fresh = {key_of(o): o for o in data.get("items") or []}
        with self._lock:
            old = self.items
            self.items = fresh
        for k, o in old.items():
            if k not in fresh:
                self._emit("DELETED", o)
        for k, o in fresh.items():
            prev = old.get(k)
            if prev is None:
                self._emit("ADDED", o)
            elif (prev.get("metadata") or {}).get("resourceVersion") != (o.get("metadata") or {}).get(
                "resourceVersion"
            ) or prev != o:
                self._emit("MODIFIED", o)
        self.synced.set()
        return str((data.get("metadata") or {}).get("resourceVersion") or "")

    def _run(self) -> None:
        backoff = self.poll_interval
        while not self._stop.is_set():
            try:
                rv = self._relist()
                if not self.use_watch or not self.available:
                    self._stop.wait(self.poll_interval)
                    continue
                while not self._stop.is_set():
                    rv = self._watch(rv)
                    if rv is None:  # expired: relist
                        break
                backoff = self.poll_interval
            except Exception as e:  # noqa: BLE001
                if self._stop.is_set():
                    break
                log.debug("%s: %s; relisting in %.1fs", self.name, e, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _watch(self, rv: str) -> str | None:
        query = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": 60,
                 "labelSelector": self.label_selector}
        if rv:
            query["resourceVersion"] = rv
        resp = self.kube.stream(self.path, query)
        self._resp = resp
        try:
            if self._stop.is_set():
                return rv
            for line in iter_lines(resp):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    return None
                new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                if new_rv:
                    rv = str(new_rv)
                if kind == "BOOKMARK":
                    continue
                if kind not in ("ADDED", "MODIFIED", "DELETED"):
                    continue
                k = key_of(obj)
                with self._lock:
                    if kind == "DELETED":
                        self.items.pop(k, None)
                    else:
                        self.items[k] = obj
                self._emit(kind, obj)
            return rv
        finally:
            self._resp = None
            try:
                resp.release_conn()
            except Exception:  # noqa: BLE001
                pass


# --------------------------------------------------------------------------------------------
# Deployment and Job status, computed from the spec and the simulated pods.


def now_rfc3339(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, tz=timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def _annotation_float(obj: Obj, name: str, default: float) -> float:
    ann = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
    try:
        value = float(ann.get(name, default))
    except (TypeError, ValueError):
        return default
    return default if math.isnan(value) or value < 0 else value


def load_seconds(deployment: Obj) -> float:
    return _annotation_float(deployment, A_LOAD_SECONDS, 1.0)


def _template_fingerprint(obj: Obj) -> str:
    return json.dumps((obj.get("spec") or {}).get("template") or {}, sort_keys=True)


def _max_unavailable(deployment: Obj, desired: int) -> int:
    ru = (((deployment.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {})
    raw = ru.get("maxUnavailable", "25%")
    try:
        if isinstance(raw, str) and raw.endswith("%"):
            return int(math.floor(desired * float(raw[:-1]) / 100.0))
        return int(raw)
    except (TypeError, ValueError):
        return 0


@dataclass
class _Pods:
    uid: str
    template: str
    ready: int = 0
    pending: list[list[float]] = field(default_factory=list)  # [due, count], oldest first
    update_due: float | None = None  # a template change is rolling out until then

    @property
    def total(self) -> int:
        return self.ready + int(sum(c for _, c in self.pending))

    def next_due(self) -> float | None:
        dues = [d for d, _ in self.pending]
        if self.update_due is not None:
            dues.append(self.update_due)
        return min(dues) if dues else None


def _strip_times(conditions: list[Obj] | None) -> list[tuple[Any, ...]]:
    return sorted(
        (c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in conditions or []
    )


def _status_equal(a: Obj | None, b: Obj | None) -> bool:
    a, b = dict(a or {}), dict(b or {})
    ca, cb = a.pop("conditions", None), b.pop("conditions", None)
    return a == b and _strip_times(ca) == _strip_times(cb)


def _merge_conditions(old: list[Obj] | None, new: list[Obj], stamp: str) -> list[Obj]:
    previous = {c.get("type"): c for c in old or []}
    out = []
    for c in new:
        p = previous.get(c["type"])
        c = dict(c)
        same = p is not None and p.get("status") == c["status"]
        c["lastTransitionTime"] = p.get("lastTransitionTime", stamp) if same else stamp
        unchanged = same and p.get("reason") == c.get("reason") and p.get("message") == c.get("message")
        c["lastUpdateTime"] = p.get("lastUpdateTime", stamp) if unchanged else stamp
        out.append(c)
    return out


class WorkloadSimulator:
    """Acts as the Deployment controller + kubelet (and optionally the Job controller)."""

    def __init__(self, kubeconfig: str | None, *, jobs: bool = True, namespace: str | None = None,
                 default_load_seconds: float = 1.0, poll_interval: float = 1.0, watch: bool = True):
        self.kubeconfig = kubeconfig
        self.jobs = jobs
        self.namespace = namespace
        self.default_load_seconds = default_load_seconds
        self.poll_interval = poll_interval
        self.watch = watch
        self.writes = 0  # status patches sent
        self.errors = 0
        self._pods: dict[Key, _Pods] = {}
        self._job_due: dict[Key, tuple[str, float]] = {}  # key -> (uid, due)
        self._last_written: dict[tuple[str, Key], Obj] = {}
        self._dirty: set[tuple[str, Key]] = set()
        self._heap: list[tuple[float, str, Key]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kube: RawKube | None = None
        self._informers: list[Informer] = []
        self.deployments: Informer | None = None
        self.jobs_informer: Informer | None = None

    # ---- lifecycle
    def start(self) -> WorkloadSimulator:
        if self._thread is not None:
            return self
        self._stop.clear()
        self._kube = RawKube(self.kubeconfig)
        ns = f"/namespaces/{self.namespace}" if self.namespace else ""
        self.deployments = Informer(
            RawKube(self.kubeconfig), f"/apis/apps/v1{ns}/deployments",
            on_event=lambda t, o: self._mark("deployment", o), poll_interval=self.poll_interval,
            watch=self.watch, name="deployments",
        )
        self._informers = [self.deployments]
        if self.jobs:
            self.jobs_informer = Informer(
                RawKube(self.kubeconfig), f"/apis/batch/v1{ns}/jobs",
                on_event=lambda t, o: self._mark("job", o), poll_interval=self.poll_interval,
                watch=self.watch, name="jobs",
            )
            self._informers.append(self.jobs_informer)
        for inf in self._informers:
            inf.start()
        self._thread = threading.Thread(target=self._loop, name="workload-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for inf in self._informers:
            inf.stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
        for inf in self._informers:
            inf.kube.close()
        if self._kube is not None:
            self._kube.close()

    def __enter__(self) -> WorkloadSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_synced(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        return all(inf.synced.wait(max(0.0, deadline - time.monotonic())) for inf in self._informers)

    # ---- event plumbing
    def _mark(self, kind: str, obj: Obj) -> None:
        with self._cond:
            self._dirty.add((kind, key_of(obj)))
            self._cond.notify()

    def _schedule(self, due: float, kind: str, key: Key) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, kind, key))
            self._cond.notify()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, kind, key = heapq.heappop(self._heap)
                    self._dirty.add((kind, key))
                if not self._dirty:
                    wait = self._heap[0][0] - now if self._heap else 1.0
                    self._cond.wait(min(max(wait, 0.005), 1.0))
                    continue
                work, self._dirty = self._dirty, set()
            for kind, key in sorted(work):
                if self._stop.is_set():
                    return
                try:
                    if kind == "deployment":
                        self._sync_deployment(key)
                    else:
                        self._sync_job(key)
                except Exception as e:  # noqa: BLE001
                    self.errors += 1
                    log.warning("sync %s %s/%s failed: %s", kind, key[0], key[1], e)
                    self._schedule(time.monotonic() + 0.5, kind, key)

    # ---- Deployments
    def _sync_deployment(self, key: Key) -> None:
        assert self.deployments is not None
        obj = self.deployments.items.get(key)
        if obj is None:
            self._pods.pop(key, None)
            self._last_written.pop(("deployment", key), None)
            return
        md, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        status = obj.get("status") or {}
        if md.get("deletionTimestamp"):
            return
        now = time.monotonic()
        desired = spec.get("replicas")
        desired = 1 if desired is None else max(0, int(desired))
        load = _annotation_float(obj, A_LOAD_SECONDS, self.default_load_seconds)
        generation = md.get("generation") or 1
        uid = md.get("uid") or ""
        template = _template_fingerprint(obj)
        pods = self._pods.get(key)
        if pods is None or pods.uid != uid:
            pods = _Pods(uid=uid, template=template)
            self._pods[key] = pods
            # Adopt pods that a previous simulator run (or a real cluster) already made ready.
            if status.get("observedGeneration") == generation:
                pods.ready = min(int(status.get("readyReplicas") or 0), desired)
        elif pods.template != template:
            pods.template = template
            pods.update_due = now + load
            pods.ready = min(pods.ready, desired)
            # The controller replaces pods still loading the old template with pods of the new one.
            loading = int(sum(count for _, count in pods.pending))
            pods.pending = [[now + load, loading]] if loading else []
        total = pods.total
        if desired > total:
            pods.pending.append([now + load, desired - total])
        elif desired < total:
            excess = total - desired
            while excess > 0 and pods.pending:  # unready pods go first, newest first
                d, c = pods.pending[-1]
                take = min(excess, int(c))
                excess -= take
                if take == c:
                    pods.pending.pop()
                else:
                    pods.pending[-1][1] = c - take
            pods.ready -= excess
        # pods that finished loading
        still = []
        for d, c in pods.pending:
            if d <= now:
                pods.ready += int(c)
            else:
                still.append([d, c])
        pods.pending = still
        if pods.update_due is not None and pods.update_due <= now:
            pods.update_due = None
        due = pods.next_due()
        if due is not None and math.isfinite(due):
            self._schedule(due, "deployment", key)

        total = pods.total
        ready = pods.ready
        updated = total if pods.update_due is None else int(sum(c for _, c in pods.pending))
        complete = pods.update_due is None and not pods.pending and ready == desired
        available = ready >= desired - _max_unavailable(obj, desired)
        new_status: Obj = {
            "observedGeneration": generation,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, total - ready),
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if available else "False",
                    "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                    "message": "Deployment has minimum availability." if available
                    else "Deployment does not have minimum availability.",
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                    "message": f'ReplicaSet "{md.get("name")}" has successfully progressed.' if complete
                    else f'ReplicaSet "{md.get("name")}" is progressing ({ready}/{desired} ready).',
                },
            ],
        }
        self._write_status("deployment", key, f"/apis/apps/v1/namespaces/{key[0]}/deployments/{key[1]}/status",
                           status, new_status)

    def _write_status(self, kind: str, key: Key, path: str, current: Obj, new_status: Obj) -> None:
        wk = (kind, key)
        if _status_equal(current, new_status) or _status_equal(self._last_written.get(wk), new_status):
            return
        stamp = now_rfc3339()
        if "conditions" in new_status:
            new_status["conditions"] = _merge_conditions(current.get("conditions"), new_status["conditions"], stamp)
        assert self._kube is not None
        try:
            self._kube.patch(path, {"status": new_status})
        except KubeError as e:
            if e.status == 404:
                return
            raise
        self.writes += 1
        self._last_written[wk] = new_status

    # ---- Jobs
    def _sync_job(self, key: Key) -> None:
        assert self.jobs_informer is not None
        obj = self.jobs_informer.items.get(key)
        if obj is None:
            self._job_due.pop(key, None)
            self._last_written.pop(("job", key), None)
            return
        md = obj.get("metadata") or {}
        ann = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
        result = str(ann.get(A_JOB_RESULT, "")).strip().lower()
        if result not in ("succeeded", "failed"):
            return
        status = obj.get("status") or {}
        if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in status.get("conditions") or []):
            return
        uid = md.get("uid") or ""
        entry = self._job_due.get(key)
        now = time.monotonic()
        if entry is None or entry[0] != uid:
            entry = (uid, now + _annotation_float(obj, A_JOB_SECONDS, 1.0))
            self._job_due[key] = entry
        path = f"/apis/batch/v1/namespaces/{key[0]}/jobs/{key[1]}/status"
        start = status.get("startTime") or now_rfc3339()
        if now < entry[1]:
            self._write_status("job", key, path, status, {"startTime": start, "active": 1})
            if math.isfinite(entry[1]):
                self._schedule(entry[1], "job", key)
            return
        ok = result == "succeeded"
        ctype = "Complete" if ok else "Failed"
        reason = ann.get(A_JOB_REASON) or ("Completed" if ok else "BackoffLimitExceeded")
        message = ann.get(A_JOB_MESSAGE) or ("Job completed" if ok else "Job has reached the specified backoff limit")
        new_status: Obj = {
            "startTime": start,
            "active": 0,
            "ready": 0,
            "succeeded" if ok else "failed": 1,
            "conditions": [{"type": ctype, "status": "True", "reason": reason, "message": message}],
        }
        if ok:
            new_status["completionTime"] = now_rfc3339()
        self._write_status("job", key, path, status, new_status)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m modelrollout_lab.workloads", description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--namespace", default=None, help="only this namespace (default: all)")
    p.add_argument("--no-jobs", action="store_true", help="do not simulate Jobs")
    p.add_argument("--load-seconds", type=float, default=1.0, help="default model load time")
    p.add_argument("--poll", action="store_true", help="poll lists instead of watching")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sim = WorkloadSimulator(args.kubeconfig, jobs=not args.no_jobs, namespace=args.namespace,
                            default_load_seconds=args.load_seconds, watch=not args.poll)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    sim.start()
    print("workload simulator running", flush=True)
    done.wait()
    sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
