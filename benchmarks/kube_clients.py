"""Which async Kubernetes client should carry the operator's own calls? Measured, not guessed.

Drives N rollouts' worth of calls against the lab's emulated API server: every rollout reads its
object and merge-patches its status, all rollouts at once (as 1000 kopf daemons do), for a few
rounds. Prints, per client: wall time, CPU seconds of the client's thread (the server runs in
another thread of this process), and p50/p99 latency of a call.

    python -m benchmarks.kube_clients                 # N=1000, 3 rounds, every candidate
    python -m benchmarks.kube_clients --rollouts 200 --rounds 2 --clients kubernetes-asyncio,lightkube

The candidates that are not the operator's own dependencies are not installed with it:
`pip install lightkube==1.0.1 kr8s==0.20.15` (the versions measured in docs/performance.md);
a candidate whose library is missing is skipped with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ssl
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelrollout_lab.apiserver import start_in_thread
from modelrollout_lab.auth import ADMIN

NAMESPACE = "default"
POOL = 20  # connections per client, where the library lets us choose (the operator's setting)


@dataclass
class Adapter:
    """One client behind the two calls a reconcile pass makes most: read the object, patch its status."""

    get: Callable[[str], Awaitable[Any]]
    patch: Callable[[str, dict[str, Any]], Awaitable[Any]]
    close: Callable[[], Awaitable[None]]


def _cluster_of(kubeconfig: Path) -> tuple[str, ssl.SSLContext, str]:
    """Server, TLS context trusting the lab's CA, and bearer token of a token kubeconfig."""
    document = yaml.safe_load(kubeconfig.read_text())
    cluster = document["clusters"][0]["cluster"]
    context = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    return str(cluster["server"]), context, str(document["users"][0]["user"]["token"])


async def _modelrollout(kubeconfig: Path) -> Adapter:
    """The operator's own Kube (whatever kube.py is built on today)."""
    from modelrollout.kube import Kube, load_configuration, path

    kube = Kube(load_configuration(str(kubeconfig)))
    return Adapter(get=lambda name: kube.get(path("v1", "configmaps", NAMESPACE, name)),
                   patch=lambda name, body: kube.merge_patch(path("v1", "configmaps", NAMESPACE, name), body),
                   close=kube.close)


async def _httpx(kubeconfig: Path) -> Adapter:
    """The hand-written httpx client kube.py used to be (a bare AsyncClient and a static token)."""
    import httpx

    server, tls, token = _cluster_of(kubeconfig)
    http = httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {token}"}, verify=tls,
                             limits=httpx.Limits(max_connections=POOL))

    async def get(name: str) -> Any:
        return (await http.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{name}")).json()

    async def patch(name: str, body: dict[str, Any]) -> Any:
        response = await http.patch(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{name}", json=body,
                                    headers={"Content-Type": "application/merge-patch+json"})
        return response.json()

    return Adapter(get, patch, http.aclose)


async def _kubernetes_asyncio(kubeconfig: Path) -> Adapter:
    """kubernetes-asyncio (aiohttp), raw calls through ApiClient.call_api, no model decoding."""
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = POOL
    api = client.ApiClient(configuration)

    async def call(method: str, name: str, body: Any = None, content_type: str = "application/json") -> Any:
        response = await api.call_api(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{name}", method, body=body,
                                      header_params={"Accept": "application/json", "Content-Type": content_type},
                                      auth_settings=["BearerToken"], _preload_content=False)
        async with response:
            return await response.json()

    return Adapter(get=lambda name: call("GET", name),
                   patch=lambda name, body: call("PATCH", name, body, "application/merge-patch+json"),
                   close=api.close)


async def _lightkube(kubeconfig: Path) -> Adapter:
    """lightkube (httpx2), its typed API: the ConfigMap model is decoded on every answer."""
    from lightkube import AsyncClient, KubeConfig
    from lightkube.resources.core_v1 import ConfigMap
    from lightkube.types import PatchType

    api = AsyncClient(KubeConfig.from_file(kubeconfig))
    return Adapter(get=lambda name: api.get(ConfigMap, name, namespace=NAMESPACE),
                   patch=lambda name, body: api.patch(ConfigMap, name, body, namespace=NAMESPACE,
                                                      patch_type=PatchType.MERGE),
                   close=api.close)


async def _kr8s(kubeconfig: Path) -> Adapter:
    """kr8s (httpx), raw calls through Api.call_api."""
    import kr8s.asyncio

    api = await kr8s.asyncio.api(kubeconfig=str(kubeconfig))

    async def call(method: str, name: str, **kwargs: Any) -> Any:
        async with api.call_api(method, version="v1", namespace=NAMESPACE, url=f"configmaps/{name}",
                                **kwargs) as response:
            return response.json()

    async def close() -> None:
        if api._session is not None:  # kr8s keeps one session per Api and has no public close
            await api._session.aclose()

    return Adapter(get=lambda name: call("GET", name),
                   patch=lambda name, body: call("PATCH", name, json=body,
                                                 headers={"Content-Type": "application/merge-patch+json"}),
                   close=close)


CANDIDATES: dict[str, Callable[[Path], Awaitable[Adapter]]] = {
    "modelrollout.kube": _modelrollout,
    "httpx (old kube.py)": _httpx,
    "kubernetes-asyncio": _kubernetes_asyncio,
    "lightkube": _lightkube,
    "kr8s": _kr8s,
}


@dataclass
class Result:
    client: str
    calls: int
    wall: float
    cpu: float
    p50_ms: float
    p99_ms: float


async def _measure(name: str, kubeconfig: Path, rollouts: int, rounds: int) -> Result:
    adapter = await CANDIDATES[name](kubeconfig)
    latencies: list[float] = []

    async def timed(call: Awaitable[Any]) -> None:
        start = time.perf_counter()
        await call
        latencies.append(time.perf_counter() - start)

    async def one_rollout(index: int, round_: int) -> None:
        await timed(adapter.get(f"rollout-{index}"))
        await timed(adapter.patch(f"rollout-{index}", {"data": {"round": str(round_), "client": name}}))

    try:
        await asyncio.gather(*(one_rollout(i, -1) for i in range(min(rollouts, 50))))  # connect, warm up
        latencies.clear()
        wall, cpu = time.perf_counter(), time.thread_time()
        for round_ in range(rounds):
            await asyncio.gather(*(one_rollout(i, round_) for i in range(rollouts)))
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    finally:
        await adapter.close()
    ordered = sorted(latencies)
    return Result(name, len(ordered), wall, cpu, 1000 * statistics.median(ordered),
                  1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))])


async def _seed(kubeconfig: Path, rollouts: int) -> None:
    from modelrollout.kube import Kube, load_configuration, path

    kube = Kube(load_configuration(str(kubeconfig)))
    try:
        for index in range(rollouts):
            await kube.create(path("v1", "configmaps", NAMESPACE), {
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"rollout-{index}"}, "data": {"round": "0"}})
    finally:
        await kube.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kube_clients", description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default=",".join(CANDIDATES), help="comma-separated, from: " + ", ".join(CANDIDATES))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        with start_in_thread() as api:
            # A bearer token, over TLS, for every client: the old httpx client cannot send a certificate.
            api.write_kubeconfig(kubeconfig, token=api.issue_token(ADMIN))
            asyncio.run(_seed(kubeconfig, args.rollouts))
            results = []
            for name in (name.strip() for name in args.clients.split(",")):
                try:
                    results.append(asyncio.run(_measure(name, kubeconfig, args.rollouts, args.rounds)))
                except ImportError as exc:
                    print(f"skipped {name}: {exc}")
    print(f"{args.rollouts} rollouts x {args.rounds} rounds (GET + merge-patch each), all concurrent, TLS + token")
    print("| client | calls | wall s | client CPU s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.client} | {r.calls} | {r.wall:.2f} | {r.cpu:.2f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} |")


if __name__ == "__main__":
    main()
