"""Prometheus' HTTP API (`/api/v1/query`) through a pooled requests session, run in worker threads.

What goes wrong is reported as a status code and a short reason of our own wording, never the
answer's body: an address may be a server the spec's author wants us to read for them
(docs/security.md).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import requests
from urllib3.util.retry import Retry

from modelrollout import metrics
from modelrollout.providers import PROMETHEUS_ERROR_TYPES, PrometheusRejected, ProviderError, Series

QUERY_THREADS = 32
LONG_QUERY = 4000  # characters; longer ones (batched queries) are POSTed: URLs have length limits


class _Bearer(requests.auth.AuthBase):
    """The token as it is now: read at each request, so a rotated token is used at once."""

    def __init__(self, token: Callable[[], str | None]) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self._token()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        return request


class PrometheusProvider:
    def __init__(self, address: str, *, timeout: float = 10.0, bearer_token: Callable[[], str | None] | None = None,
                 ca_file: str | None = None) -> None:
        """`bearer_token` is called for each request; give it only for the operator's own Prometheus."""
        self.address = address.rstrip("/")
        self._timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy or .netrc credentials from the environment
        if ca_file:
            self._session.verify = ca_file
        if bearer_token is not None:
            self._session.auth = _Bearer(bearer_token)
        # The client blocks, waiting on the network rather than the CPU. asyncio's default pool
        # (cores + 4 threads) capped the queries in flight for a thousand rollouts, so the
        # provider has its own threads, each with a pooled connection. No retries: an outage must
        # surface at once as "no data", and the next analysis interval is the retry.
        self._executor = ThreadPoolExecutor(max_workers=QUERY_THREADS, thread_name_prefix="prometheus")
        # read=False: a read timeout surfaces as itself (with total=0 alone, urllib3 wraps it and
        # requests reports a connection error).
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=QUERY_THREADS, max_retries=Retry(total=0, read=False))
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def with_timeout(self, timeout: float) -> PrometheusProvider:
        """This provider's connections and threads with another timeout: every spec's timeout is its
        own, and no number of distinct timeouts makes the operator open more of either."""
        view = copy.copy(self)
        view._timeout = timeout
        return view

    def _request(self, api_path: str, params: dict[str, str] | None = None, *, post: bool = False) -> requests.Response:
        try:
            return self._session.request("POST" if post else "GET", f"{self.address}{api_path}",
                                         params=None if post else params, data=params if post else None,
                                         timeout=self._timeout, allow_redirects=False)
        except requests.Timeout:
            raise ProviderError(f"Prometheus did not answer within {self._timeout:g}s") from None
        except requests.ConnectionError:
            raise ProviderError("Prometheus unreachable (connection failed)") from None
        except (requests.RequestException, OSError) as exc:  # OSError: the token file could not be read
            raise ProviderError(f"Prometheus request failed ({type(exc).__name__})") from None

    def _query(self, query: str, at: datetime | None = None) -> list[Series]:
        params = {"query": query}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        response = self._request("/api/v1/query", params, post=len(query) > LONG_QUERY)
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            error_type = body.get("errorType") if isinstance(body, dict) else None
            detail = f" ({error_type})" if error_type in PROMETHEUS_ERROR_TYPES else ""
            raise PrometheusRejected(f"Prometheus answered HTTP {response.status_code}{detail}")
        return _series(body)

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
            return self._request("/").ok
        except ProviderError:  # refused, timed out: not online
            return False

    async def is_online(self) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._online)

    def close(self) -> None:
        self._executor.shutdown(wait=False)
        self._session.close()


def _series(body: Any) -> list[Series]:
    """The series of an instant query's answer (a scalar is one series without labels)."""
    not_a_result = PrometheusRejected("Prometheus answered with something that is not a query result")
    data = body.get("data") if isinstance(body, dict) and body.get("status") == "success" else None
    if not isinstance(data, dict):
        raise not_a_result
    try:
        if data.get("resultType") == "scalar":
            return [Series(labels={}, value=float(data["result"][1]))]
        if data.get("resultType") in ("matrix", "string"):
            raise PrometheusRejected(f"the query returned a {data['resultType']}, not an instant vector")
        if data.get("resultType") != "vector":
            raise not_a_result
        return [Series(labels={str(k): str(v) for k, v in (item.get("metric") or {}).items()},
                       value=float(item["value"][1])) for item in data["result"]]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        raise not_a_result from None
