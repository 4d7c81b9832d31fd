"""Prometheus through prometheus-api-client (a blocking client, run in worker threads)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import requests
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from modelrollout import metrics
from modelrollout.providers import ProviderError, Series


QUERY_THREADS = 32


class PrometheusProvider:
    def __init__(self, address: str, *, timeout: float = 10.0, bearer_token: str | None = None,
                 ca_file: str | None = None) -> None:
        session = requests.Session()
        if ca_file:
            session.verify = ca_file
        headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else None
        # No retries inside the client: an outage must surface at once as "no data", and the
        # next analysis interval is the retry.
        self._client = PrometheusConnect(url=address.rstrip("/"), headers=headers, session=session,
                                         retry=Retry(total=0), timeout=timeout)
        self.address = address
        # The client blocks, waiting on the network rather than the CPU. asyncio's default pool
        # (cores + 4 threads) capped the queries in flight for a thousand rollouts, so the
        # provider has its own threads, each with a pooled connection.
        self._executor = ThreadPoolExecutor(max_workers=QUERY_THREADS, thread_name_prefix="prometheus")
        session.mount(address.rstrip("/"), requests.adapters.HTTPAdapter(pool_maxsize=QUERY_THREADS,
                                                                         max_retries=Retry(total=0)))

    def _query(self, query: str, at: datetime | None = None) -> list[Series]:
        params = {"time": f"{at.timestamp():.3f}"} if at is not None else None
        try:
            result = self._client.custom_query(query, params=params)
        except Exception as exc:  # connection errors, HTTP errors, bad PromQL
            raise ProviderError(f"Prometheus {self.address}: {exc}") from exc
        series = []
        for item in result:
            _, text = item.get("value", (None, "NaN"))
            series.append(Series(labels=dict(item.get("metric") or {}), value=float(text)))
        return series

    async def run_query(self, query: str, *, at: datetime | None = None) -> list[Series]:
        """Instant query; `at` (timezone-aware) evaluates it at that past moment."""
        try:
            series = await asyncio.get_running_loop().run_in_executor(self._executor, self._query, query, at)
        except ProviderError:
            metrics.record_query(failed=True)
            raise
        metrics.record_query(failed=False)
        return series

    def _online(self) -> bool:
        try:
            return bool(self._client.check_prometheus_connection())
        except requests.RequestException:  # refused, timed out: not online
            return False

    async def is_online(self) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._online)

    def close(self) -> None:
        self._executor.shutdown(wait=False)
        self._client.close()
