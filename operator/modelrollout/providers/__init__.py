"""Metrics providers: they fetch numbers, they never judge (see modelrollout.evaluate).

One module per provider behind the `MetricsProvider` protocol, picked from `PROVIDERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    value: float


# Prometheus' own error types (api/v1): short, fixed words, safe to repeat; an answer's other text is not
# (the address may be one a rollout's author chose: docs/security.md).
PROMETHEUS_ERROR_TYPES = frozenset({"timeout", "canceled", "execution", "bad_data", "internal", "unavailable",
                                    "not_found", "not_acceptable"})


class ProviderError(RuntimeError):
    """The provider could not answer (unreachable, bad query): a verdict becomes inconclusive."""


class PrometheusRejected(ProviderError):
    """Prometheus answered, but with an error or with something that is not a query result."""


class MetricsProvider(Protocol):
    async def run_query(self, query: str, *, at: datetime | None = None) -> list[Series]:
        """An instant query: every series of the result with its value (NaN kept as NaN).

        `at` evaluates the query at that moment of the past (Prometheus' `time` parameter),
        for `modelrollout backtest`; None means now, as the operator always asks.
        """

    async def is_online(self) -> bool: ...

    def with_timeout(self, timeout: float) -> MetricsProvider:
        """The same provider (its connections, threads and credentials) with another timeout."""


def make_provider(kind: str, address: str, *, timeout: float = 10.0,
                  bearer_token: Callable[[], str | None] | None = None, ca_file: str | None = None) -> MetricsProvider:
    """`bearer_token` is read at each request (rotation); only the operator's own Prometheus gets one.

    Queries that many rollouts ask at about the same time go out as one (providers.batching).
    """
    from modelrollout.providers.batching import BatchingProvider
    from modelrollout.providers.prometheus import PrometheusProvider

    providers = {"prometheus": PrometheusProvider}
    provider = providers[kind](address, timeout=timeout, bearer_token=bearer_token, ca_file=ca_file)
    return BatchingProvider(provider)
