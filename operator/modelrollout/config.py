"""The operator's configuration: one typed object built at startup (flags and environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Config:
    kubeconfig: str | None = None
    prometheus_url: str | None = None  # used when a spec names no Prometheus address
    prometheus_token_file: str | None = None
    prometheus_ca_file: str | None = None
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    label_selector: dict[str, str] | None = None  # shard by ModelRollout labels
    metrics_port: int | None = None
    min_requeue: float = 0.2
    max_requeue: float = 60.0

    def prometheus_token(self) -> str | None:
        if not self.prometheus_token_file:
            return None
        return Path(self.prometheus_token_file).read_text().strip()
