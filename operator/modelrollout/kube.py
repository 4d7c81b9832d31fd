"""The operator's Kubernetes client: kubernetes-asyncio (aiohttp) for every call, credentials kept fresh.

kubernetes-asyncio reads the kubeconfig (client certificate and key from files or inline data, CA,
token, tokenFile, exec plugins) or the pod's service account, and sends the requests; it was the
cheapest of the candidates at 1000 rollouts (benchmarks/kube_clients.py, docs/performance.md).
What it lacks, this module adds, as client-go does:
- a token *file* (the service account's projected token, a kubeconfig `tokenFile`) is re-read
  whenever the file changes, because the kubelet rotates it;
- an exec plugin's credential (token or client certificate) is run again when its
  `expirationTimestamp` has passed; a new certificate opens a new connection;
- a 401 refreshes the credential once and retries the request.
`ClusterAccess.connection_info()` hands kopf the same credentials, so its watches authenticate
exactly as our own calls do.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import kopf
import yaml
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.exec_provider import ExecProvider
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader
from kubernetes_asyncio.config.kube_config import ConfigNode, KubeConfigLoader

from modelrollout import __version__

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = "~/.kube/config"
USER_AGENT = f"modelrollout/{__version__}"  # what API server audit logs show for our own calls


class KubeError(RuntimeError):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


class _Credential(Protocol):
    async def authorization(self) -> str | None:
        """The Authorization header of the next request (None: the TLS client certificate, or nobody)."""

    async def refresh(self, refused: str | None) -> bool:
        """`refused` was answered 401: fetch the credential again, unless a concurrent request already
        did; True when the next request carries a different one, so a retry can succeed."""


class _NoToken:
    async def authorization(self) -> str | None:
        return None

    async def refresh(self, refused: str | None) -> bool:
        return False


@dataclass
class _StaticToken:
    token: str

    async def authorization(self) -> str | None:
        return f"Bearer {self.token}"

    async def refresh(self, refused: str | None) -> bool:
        return False


class _TokenFile:
    """A token re-read whenever its file changes (the kubelet swaps a projected token's symlink)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    async def authorization(self) -> str | None:
        try:
            stat = os.stat(self._path)
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                self._stamp, self._token = stamp, self._path.read_text().strip()
        except OSError as exc:
            raise KubeError(401, "Unauthorized", f"token file {self._path}: {exc.strerror}") from exc
        return f"Bearer {self._token}"

    async def refresh(self, refused: str | None) -> bool:
        self._stamp = None
        return await self.authorization() != refused


class _ExecPlugin:
    """A client.authentication.k8s.io ExecCredential: run when missing, expired or refused (401).

    It returns a token or a client certificate (Teleport's `tsh`, some on-premises SSO helpers);
    a new certificate needs a new TLS connection, which `Kube` opens when `renewals` moves.
    """

    def __init__(self, exec_config: dict[str, Any], token: str | None, expiry: datetime.datetime | None) -> None:
        self._provider = ExecProvider(ConfigNode("exec", exec_config))
        self._token = token  # "Bearer ..." as kubernetes-asyncio's first run left it, or None
        self.certificate: tuple[bytes, bytes] | None = None  # (certificate PEM, key PEM)
        self.renewals = 0  # runs that gave a new certificate
        self._expiry = expiry
        self._running = asyncio.Lock()

    @property
    def expiry(self) -> datetime.datetime | None:
        return self._expiry

    def identity(self) -> str | None:
        """What a request sent: the Authorization header, or which certificate it presented."""
        return self._token or (f"certificate #{self.renewals}" if self.certificate else None)

    def _valid(self) -> bool:
        return self.identity() is not None and (
            self._expiry is None or datetime.datetime.now(datetime.timezone.utc) < self._expiry)

    async def authorization(self) -> str | None:
        if not self._valid():
            async with self._running:  # a thousand requests at once run the plugin once
                if not self._valid():
                    await self._run()
        return self._token

    async def refresh(self, refused: str | None) -> bool:
        async with self._running:  # a thousand refused requests run the plugin once
            if self.identity() == refused:
                await self._run()
        return self.identity() != refused

    async def _run(self) -> None:
        try:
            status = await self._provider.run()
        except (ConfigException, OSError) as exc:
            raise KubeError(401, "Unauthorized", f"exec plugin {self._provider.args[0]}: {exc}") from exc
        if "token" in status:
            self._token, self.certificate = f"Bearer {status['token']}", None
        elif "clientCertificateData" in status and "clientKeyData" in status:
            self._token = None
            self.certificate = (status["clientCertificateData"].encode(), status["clientKeyData"].encode())
            self.renewals += 1
        else:
            raise KubeError(401, "Unauthorized", "the exec plugin returned neither a token nor a client certificate")
        expiry = status.get("expirationTimestamp")
        self._expiry = datetime.datetime.fromisoformat(expiry) if expiry else None


def _named(items: list[dict[str, Any]] | None, name: str, kind: str) -> dict[str, Any]:
    for item in items or []:
        if item.get("name") == name:
            return item.setdefault(kind, {}) or {}
    raise ValueError(f"kubeconfig: no {kind} named {name!r}")


def _current_user(document: dict[str, Any]) -> dict[str, Any]:
    """The `user` section of the current context (the document's own dict, not a copy)."""
    context = _named(document.get("contexts"), document.get("current-context", ""), "context")
    return _named(document.get("users"), context["user"], "user") if context.get("user") else {}


@dataclass(frozen=True)
class ClusterAccess:
    """Where the API server is and who we are: a kubeconfig document, or the pod's service account."""

    kubeconfig: dict[str, Any] | None  # None: in-cluster
    base: Path  # the kubeconfig's directory (relative paths), or the service account directory

    async def connect(self) -> tuple[Configuration, _Credential]:
        """The library's configuration (server, CA, client certificate) and the source of our token."""
        configuration = Configuration()
        if self.kubeconfig is None:
            InClusterConfigLoader(token_filename=str(self.base / "token"), cert_filename=str(self.base / "ca.crt"),
                                  try_refresh_token=False).load_and_set(configuration)
            return configuration, _TokenFile(self.base / "token")
        document = copy.deepcopy(self.kubeconfig)
        user = _current_user(document)
        if user.get("exec"):  # client-go runs a relative command (with a slash) from the kubeconfig's directory
            command = str(user["exec"].get("command", ""))
            if "/" in command and not os.path.isabs(command):
                user["exec"]["command"] = str(self.base / command)
        loader = KubeConfigLoader(config_dict=document, config_base_path=str(self.base))
        await loader.load_and_set(configuration)
        credential: _Credential
        if user.get("exec"):
            token = getattr(loader, "token", None)  # a certificate the loader got has no expiry: run again
            credential = _ExecPlugin(user["exec"], token if token and token.startswith("Bearer ") else None,
                                     getattr(loader, "exec_plugin_expiry", None))
        elif user.get("token"):
            credential = _StaticToken(str(user["token"]))
        elif user.get("tokenFile"):
            credential = _TokenFile(self.base / os.path.expanduser(str(user["tokenFile"])))
        else:
            credential = _NoToken()
        return configuration, credential

    async def connection_info(self) -> kopf.ConnectionInfo:
        """The same server and credentials for kopf's own calls; kopf logs in again on expiry or 401."""
        configuration, credential = await self.connect()
        authorization = await credential.authorization()
        expiry = credential.expiry if isinstance(credential, _ExecPlugin) else None
        namespace = None
        if self.kubeconfig is None and (self.base / "namespace").exists():
            namespace = (self.base / "namespace").read_text().strip()
        return kopf.ConnectionInfo(
            server=configuration.host,
            ca_path=configuration.ssl_ca_cert,
            insecure=not configuration.verify_ssl,
            certificate_path=configuration.cert_file,
            private_key_path=configuration.key_file,
            scheme="Bearer" if authorization else None,
            token=authorization.removeprefix("Bearer ") if authorization else None,
            default_namespace=namespace,
            expiration=expiry,
        )


def load_configuration(kubeconfig: str | None = None, *, service_account: Path = SERVICE_ACCOUNT) -> ClusterAccess:
    """In-cluster when no kubeconfig is named and the pod has a service account, else the kubeconfig
    (`kubeconfig`, $KUBECONFIG, ~/.kube/config). Nothing is contacted or run until the first call."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST") and (service_account / "token").exists():
        return ClusterAccess(kubeconfig=None, base=service_account)
    path = Path(kubeconfig or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG).expanduser()
    document = yaml.safe_load(path.read_text()) or {}
    return ClusterAccess(kubeconfig=document, base=path.resolve().parent)


class Kube:
    """get/list/create/replace/merge_patch/delete by path, answers as dicts, API errors as KubeError."""

    def __init__(self, access: ClusterAccess, *, timeout: float = 15.0, connections: int = 20) -> None:
        self._access = access
        self._timeout = timeout
        self._connections = connections
        self._api: ApiClient | None = None
        self._configuration: Configuration | None = None
        self._credential: _Credential = _NoToken()
        self._opening = asyncio.Lock()
        self._renewals = 0  # of an exec plugin's certificate, as the open connection presents it
        self._retired: ApiClient | None = None  # the connection before the last certificate renewal
        self._certificates = tempfile.TemporaryDirectory(prefix="modelrollout-")

    async def _connected(self) -> ApiClient:
        if self._api is None:
            async with self._opening:
                if self._api is None:
                    self._configuration, self._credential = await self._access.connect()
                    self._configuration.connection_pool_maxsize = self._connections
                    self._api = self._client(self._configuration)
        return self._api

    @staticmethod
    def _client(configuration: Configuration) -> ApiClient:
        api = ApiClient(configuration)
        api.user_agent = USER_AGENT
        return api

    async def _present(self, credential: _ExecPlugin) -> ApiClient:
        """A connection presenting the exec plugin's latest certificate (its files private to us)."""
        assert self._api is not None and self._configuration is not None and credential.certificate is not None
        if credential.renewals != self._renewals:
            directory = Path(self._certificates.name)
            for name, pem in zip(("client.crt", "client.key"), credential.certificate):
                target = directory / f"{credential.renewals}-{name}"
                target.write_bytes(pem)
                target.chmod(0o600)
            configuration = copy.copy(self._configuration)
            configuration.cert_file = str(directory / f"{credential.renewals}-client.crt")
            configuration.key_file = str(directory / f"{credential.renewals}-client.key")
            retired, self._retired = self._retired, self._api
            self._configuration, self._api = configuration, self._client(configuration)
            self._renewals = credential.renewals
            if retired is not None:  # two renewals ago: its requests have long timed out
                await retired.close()
        return self._api

    async def close(self) -> None:
        for api in (self._api, self._retired):
            if api is not None:
                await api.close()
        self._api = self._retired = None
        self._certificates.cleanup()

    async def _send(self, method: str, path: str, body: Any, content_type: str,
                    params: dict[str, str] | None) -> tuple[int, bytes, str | None]:
        """Status, body, and the Authorization the request carried."""
        api = await self._connected()
        headers = {"Accept": "application/json", "Content-Type": content_type}
        authorization = await self._credential.authorization()
        sent = authorization
        if authorization:
            headers["Authorization"] = authorization
        elif isinstance(self._credential, _ExecPlugin) and self._credential.certificate is not None:
            api, sent = await self._present(self._credential), self._credential.identity()
        response = await api.call_api(path, method, query_params=list((params or {}).items()), header_params=headers,
                                      body=body, _preload_content=False, _request_timeout=self._timeout)
        async with response:
            return response.status, await response.read(), sent

    async def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                    params: dict[str, str] | None = None) -> dict[str, Any] | None:
        status, content, sent = await self._send(method, path, body, content_type, params)
        if status == 401 and await self._credential.refresh(sent):
            status, content, _ = await self._send(method, path, body, content_type, params)
        if status == 404 and method == "GET":
            return None
        if status >= 400:
            try:
                payload = json.loads(content)
            except ValueError:
                payload = {}
            if not isinstance(payload, dict):
                payload = {}
            raise KubeError(status, payload.get("reason", ""),
                            payload.get("message") or content.decode(errors="replace"))
        return json.loads(content) if content else {}

    async def get(self, path: str) -> dict[str, Any] | None:
        return await self._call("GET", path)

    async def list(self, path: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self._call("GET", path, params=params)
        return list((result or {}).get("items") or [])

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", path, body) or {}

    async def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT with the body's resourceVersion: a stale read gets 409 Conflict, never a lost write."""
        return await self._call("PUT", path, body) or {}

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", path, patch, "application/merge-patch+json") or {}

    async def delete(self, path: str) -> None:
        try:
            await self._call("DELETE", path, {"propagationPolicy": "Background"})
        except KubeError as exc:
            if exc.status != 404:
                raise


def path(group_version: str, plural: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    result = f"{root}/namespaces/{quote(namespace)}/{plural}"
    if name:
        result += f"/{quote(name)}"
    if sub:
        result += f"/{sub}"
    return result
