"""The whole lab in one object: emulated API server, simulators, real Prometheus, real operator.

    with Lab(workdir) as lab:          # API server, workload + traffic simulators, Prometheus
        lab.start_operator()            # `modelrollout run` as a separate process
        lab.apply(manifest)
        lab.wait_for_phase("fraud-detector", "Succeeded", timeout=60)

Every piece reaches the API server only through a kubeconfig, as it would beside a real
cluster: `lab.kubeconfig` is an admin's (client certificate in system:masters) for the tests,
the simulators and kubectl; the operator runs as the chart's ServiceAccount
(`lab.operator_kubeconfig`), authorized by the chart's RBAC, which the lab applies at start.
`operator_credential` picks how the operator authenticates: "certificate" (a client certificate
for the ServiceAccount's user), "token" (a bearer token in the kubeconfig), or "token-file" (a
`tokenFile` that `rotate_operator_token()` rewrites, as the kubelet does with a projected token).
The operator is a real process: tests SIGKILL it and start it again. The API server runs in a
thread of the lab's process (`api_server="thread"`, the default: tests inject faults into it), or
in a process of its own (`"process"`, as kube-apiserver is: the scale benchmark, whose simulators
and polling would otherwise make every API call wait on one GIL).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
import kubernetes
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modelrollout_lab.apiserver import ProcessApiServer, start_in_thread
from modelrollout_lab.faults import FaultRule, Faults
from modelrollout_lab.rbac import RELEASE_NAMESPACE, chart_rbac, operator_identity
from modelrollout_lab.prometheus import PrometheusServer, spawn
from modelrollout_lab.kserve import KServeSimulator
from modelrollout_lab.traffic import TrafficSimulator
from modelrollout_lab.workloads import WorkloadSimulator
from modelrollout.names import GROUP, PLURAL, VERSION

APPLY_ATTEMPTS = 5  # reads and PUTs of `Lab.apply` before a run of 409 Conflicts is raised
OPERATOR_CREDENTIALS = ("certificate", "token", "token-file")
API_SERVER_MODES = ("thread", "process")


# Without an authenticated identity, the operator's requests are told apart by what they are not: the lab's
# simulators and the tests use the synchronous kubernetes client (the operator an async one), tests use kubectl.
LAB_USER_AGENTS = rf"OpenAPI-Generator/{re.escape(kubernetes.__version__)}/python|kubectl/"
OPERATOR_USER_AGENTS = rf"^(?!{LAB_USER_AGENTS})"


def crd_manifest() -> dict[str, Any]:
    """The CRD, shipped as package data (a link to crds/, the one source, copied into the wheel)."""
    return yaml.safe_load(resources.files("modelrollout_lab").joinpath("crds", "modelrollout.yaml").read_text())


class Lab:
    def __init__(self, workdir: str | None = None, *, seed: int = 0, scrape_interval: str = "1s",
                 traffic_tick: float = 0.2, operator_credential: str = "certificate",
                 rbac: list[dict[str, Any]] | None = None, api_server: str = "thread") -> None:
        if operator_credential not in OPERATOR_CREDENTIALS:
            raise ValueError(f"operator_credential: {operator_credential!r} is not one of {OPERATOR_CREDENTIALS}")
        if api_server not in API_SERVER_MODES:
            raise ValueError(f"api_server: {api_server!r} is not one of {API_SERVER_MODES}")
        self.api_server = api_server
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="modelrollout-lab-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = str(self.workdir / "kubeconfig")
        self.operator_kubeconfig = str(self.workdir / "operator-kubeconfig")
        self.operator_credential = operator_credential
        self.rbac = rbac if rbac is not None else chart_rbac()  # the chart's, as Helm renders it
        self.operator_user = operator_identity(self.rbac)
        self._operator_token: str | None = None
        self.seed = seed
        self.scrape_interval = scrape_interval
        self.traffic_tick = traffic_tick
        self.api: Any = None
        self.workloads: WorkloadSimulator | None = None
        self.kserve: KServeSimulator | None = None
        self.traffic: TrafficSimulator | None = None
        self.prometheus: PrometheusServer | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.peer_operator: subprocess.Popen[bytes] | None = None  # a second process, for peering tests
        self._operator_log: Any = None
        self._api_client: client.ApiClient | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> Lab:
        self.api = start_in_thread() if self.api_server == "thread" else ProcessApiServer()
        self.api.write_kubeconfig(self.kubeconfig)
        self._api_client = config.new_client_from_config(config_file=self.kubeconfig)
        self.apply(crd_manifest())
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RELEASE_NAMESPACE}})
        for document in self.rbac:
            self.apply(document)
        self._write_operator_kubeconfig()
        self.workloads = WorkloadSimulator(self.kubeconfig).start()
        self.kserve = KServeSimulator(self.kubeconfig).start()
        self.traffic = TrafficSimulator(self.kubeconfig, seed=self.seed, tick=self.traffic_tick).start()
        self.prometheus = PrometheusServer([self.traffic.address], scrape_interval=self.scrape_interval).start()
        return self

    def start_operator(self, *extra_args: str) -> subprocess.Popen[bytes]:
        self._operator_log = open(self.workdir / "operator.log", "ab")
        self.operator = self._spawn_operator(self._operator_log, extra_args)
        return self.operator

    def start_peer_operator(self, *extra_args: str) -> subprocess.Popen[bytes]:
        """A second operator process beside `operator` (peering tests); its log is peer-operator.log."""
        with open(self.workdir / "peer-operator.log", "ab") as log:
            self.peer_operator = self._spawn_operator(log, extra_args)
        return self.peer_operator

    def _spawn_operator(self, log: Any, extra_args: tuple[str, ...]) -> subprocess.Popen[bytes]:
        assert self.prometheus is not None
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return spawn(
            [sys.executable, "-m", "modelrollout", "run", "--kubeconfig", self.operator_kubeconfig,
             "--prometheus-url", self.prometheus.url, *extra_args],
            stdout=log, stderr=subprocess.STDOUT, env=env)

    def _write_operator_kubeconfig(self) -> None:
        if self.operator_credential == "certificate":
            self.api.write_kubeconfig(self.operator_kubeconfig, user=self.operator_user)
            return
        self._operator_token = self.api.issue_token(self.operator_user)
        if self.operator_credential == "token":
            self.api.write_kubeconfig(self.operator_kubeconfig, token=self._operator_token)
            return
        self._token_file.write_text(self._operator_token)
        self.api.write_kubeconfig(self.operator_kubeconfig, token_file=self._token_file)

    @property
    def _token_file(self) -> Path:
        return self.workdir / "operator-token"

    def rotate_operator_token(self) -> None:
        """Replace the operator's token (credential "token-file"): the old one stops working at once
        and the token file holds the new one (written atomically, as the kubelet does)."""
        if self.operator_credential != "token-file" or self._operator_token is None:
            raise RuntimeError('rotate_operator_token needs operator_credential="token-file"')
        self._operator_token = self.api.rotate_token(self._operator_token)
        staged = self._token_file.with_suffix(".new")
        staged.write_text(self._operator_token)
        staged.replace(self._token_file)

    def kill_operator(self, sig: int = signal.SIGKILL) -> None:
        if self.operator is not None and self.operator.poll() is None:
            os.killpg(self.operator.pid, sig)
            self.operator.wait(timeout=15)
        self.operator = None

    def operator_log(self) -> str:
        path = self.workdir / "operator.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.peer_operator is not None and self.peer_operator.poll() is None:
            os.killpg(self.peer_operator.pid, signal.SIGKILL)
            self.peer_operator.wait(timeout=15)
        if self.operator is not None:
            try:
                self.kill_operator(signal.SIGTERM)
            except subprocess.TimeoutExpired:
                self.kill_operator(signal.SIGKILL)
        for piece in (self.prometheus, self.traffic, self.kserve, self.workloads):
            if piece is not None:
                piece.stop()
        if self.api is not None:
            self.api.stop()
        if self._operator_log is not None:
            self._operator_log.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Lab:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- injected API faults
    @property
    def faults(self) -> Faults:
        """The API server's fault injector (modelrollout_lab.faults): rules for any client."""
        if self.api_server != "thread":
            raise RuntimeError('faults are injected into the in-thread API server: Lab(api_server="thread")')
        return self.api.server.faults  # type: ignore[no-any-return]

    def inject_faults(self, **rule: Any) -> FaultRule:
        """API faults on the operator's requests only (the simulators and the test's calls are spared),
        seeded with the lab's seed: ``lab.inject_faults(conflict=0.1, error=0.05, gone_watch=0.1)``.
        Takes the arguments of ``Faults.set``; ``lab.faults.clear()`` ends them."""
        if "identity" not in rule and "user_agent" not in rule:
            user = getattr(self, "operator_user", None)  # the ServiceAccount the operator authenticates as
            if user is not None:
                rule["identity"] = f"^{re.escape(user.name)}$"
            else:
                rule["user_agent"] = OPERATOR_USER_AGENTS
        rule.setdefault("seed", self.seed)
        return self.faults.set(**rule)

    # ---------------------------------------------------------------- the API, as a user would use it
    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self._api_client)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self._api_client)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self._api_client)

    def apply(self, manifest: dict[str, Any] | str | Path) -> None:
        """Create or replace each document (like `kubectl apply` for what the lab needs)."""
        if isinstance(manifest, (str, Path)):
            docs = [d for d in yaml.safe_load_all(Path(manifest).read_text()) if d]
        else:
            docs = [manifest]
        for doc in docs:
            self._apply_one(doc)

    def _apply_one(self, doc: dict[str, Any]) -> None:
        from kubernetes import dynamic

        dyn = dynamic.DynamicClient(self._api_client)
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        meta = doc["metadata"]
        namespace = meta.get("namespace", "default") if resource.namespaced else None
        for attempt in range(APPLY_ATTEMPTS):  # kubectl apply patches; a PUT races the operator's status writes
            try:
                current = resource.get(name=meta["name"], namespace=namespace)
            except dynamic.exceptions.NotFoundError:
                resource.create(body=doc, namespace=namespace)
                return
            body = dict(doc)
            # kubectl apply keeps what the manifest never set, the operator's finalizer first: a replace
            # without it let a deletion right after an edit skip the finalizer's handover.
            kept = {"finalizers": list(current.metadata.finalizers or [])} if "finalizers" not in meta else {}
            body["metadata"] = {**kept, **meta, "resourceVersion": current.metadata.resourceVersion}
            try:
                resource.replace(body=body, namespace=namespace)
                return
            except dynamic.exceptions.ConflictError:
                if attempt == APPLY_ATTEMPTS - 1:
                    raise

    def rollout(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def patch_rollout(self, name: str, patch: dict[str, Any], namespace: str = "default") -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)

    def delete_rollout(self, name: str, namespace: str = "default") -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def status(self, name: str, namespace: str = "default") -> dict[str, Any]:
        try:
            return self.rollout(name, namespace).get("status") or {}
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise

    def wait_for(self, predicate: Callable[[], Any], timeout: float, interval: float = 0.2,
                 what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}\n--- operator log tail:\n"
                           + "\n".join(self.operator_log().splitlines()[-40:]))

    def wait_for_phase(self, name: str, phase: str, timeout: float, namespace: str = "default",
                       revision: str | None = None) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.status(name, namespace)
            if status.get("phase") != phase:
                return None
            if revision and status.get("stableRevision") != revision and status.get("abortedRevision") != revision:
                return None
            return status
        return self.wait_for(reached, timeout, what=f"{name} phase {phase}")
