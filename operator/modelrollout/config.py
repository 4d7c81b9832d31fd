"""The operator's configuration: one typed object built at startup (flags and environment)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from modelrollout.spec import DEFAULT_MAX_CALL_TIMEOUT, DEFAULT_NOTIFICATION_URLS, PlatformPolicy


class SecretFile:
    """A mounted secret, read again whenever the file changes.

    Kubernetes rotates projected ServiceAccount tokens and Secret volumes in place (a new file
    behind the same path), so reading once at startup would keep sending an expired token.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._value = ""

    def read(self) -> str:
        stat = self.path.stat()  # follows the symlink Kubernetes swaps on an update
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._value, self._stamp = self.path.read_text().strip(), stamp
            return self._value


@dataclass(frozen=True)
class Config:
    kubeconfig: str | None = None
    prometheus_url: str | None = None  # used when a spec names no Prometheus address; the only one given the token
    prometheus_token_file: str | None = None
    prometheus_ca_file: str | None = None
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    label_selector: dict[str, str] | None = None  # shard by ModelRollout labels
    metrics_port: int | None = None
    min_requeue: float = 0.2
    max_requeue: float = 60.0
    # The platform's policy (docs/security.md): what a ModelRollout may make the operator do.
    allowed_prometheus_urls: tuple[str, ...] = ()
    allowed_webhook_urls: tuple[str, ...] = ()
    gate_service_account: str | None = None
    gate_service_account_token: bool = False
    allowed_notification_urls: tuple[str, ...] = DEFAULT_NOTIFICATION_URLS
    max_call_timeout: float = DEFAULT_MAX_CALL_TIMEOUT
    notification_link: str | None = None  # a URL template put in every notification (docs/notifications.md)
    _token: SecretFile | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.prometheus_token_file:
            object.__setattr__(self, "_token", SecretFile(self.prometheus_token_file))

    def prometheus_token(self) -> str | None:
        """The bearer token for the operator's Prometheus as the file holds it now."""
        return self._token.read() if self._token else None

    @property
    def policy(self) -> PlatformPolicy:
        return PlatformPolicy(
            prometheus_url=self.prometheus_url,
            allowed_prometheus_urls=self.allowed_prometheus_urls,
            allowed_webhook_urls=self.allowed_webhook_urls,
            gate_service_account=self.gate_service_account,
            gate_service_account_token=self.gate_service_account_token,
            allowed_notification_urls=self.allowed_notification_urls,
            max_call_timeout=self.max_call_timeout,
        )
