"""A small async Kubernetes client for the objects the operator owns.

Authentication comes from the kubernetes library (in-cluster service account or a
kubeconfig); requests go through httpx.AsyncClient so no handler blocks the event loop.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config


class KubeError(RuntimeError):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


def load_configuration(kubeconfig: str | None = None) -> k8s_client.Configuration:
    configuration = k8s_client.Configuration()
    if kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
            return configuration
        except k8s_config.ConfigException:
            pass
    k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


class Kube:
    def __init__(self, configuration: k8s_client.Configuration, *, timeout: float = 15.0) -> None:
        headers = {"Accept": "application/json"}
        token = configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken")
        if token:
            prefix = configuration.api_key_prefix.get("authorization", "")
            headers["Authorization"] = f"{prefix} {token}".strip() if not token.startswith("Bearer") else token
        verify: Any = configuration.ssl_ca_cert or configuration.verify_ssl
        cert = (configuration.cert_file, configuration.key_file) if configuration.cert_file else None
        self._http = httpx.AsyncClient(base_url=configuration.host, headers=headers, verify=verify, cert=cert,
                                       timeout=timeout, limits=httpx.Limits(max_connections=20))

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                    params: dict[str, str] | None = None) -> dict[str, Any] | None:
        content = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        response = await self._http.request(method, path, content=content, headers=headers, params=params)
        if response.status_code == 404 and method == "GET":
            return None
        if response.status_code >= 400:
            try:
                payload = response.json()
            except ValueError:
                payload = {}
            raise KubeError(response.status_code, payload.get("reason", ""), payload.get("message", response.text))
        return response.json() if response.content else {}

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
