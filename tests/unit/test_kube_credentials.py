"""The operator's API client authenticates with every credential a kubeconfig or a pod can give it.

Each test runs a real HTTPS server on 127.0.0.1 (certificates from trustme) that records the client
certificate and the Authorization header of every request, and answers like the API server:
401 for a token it does not accept, 403 with a Status for a path the caller may not touch.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import os
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from aiohttp import web

from modelrollout.kube import Kube, KubeError, load_configuration, path

OPERATOR = "modelrollout-operator"  # the client certificate's common name
ROLLOUT = path("modelrollout.io/v1alpha1", "modelrollouts", "ml", "fraud-detector")
FORBIDDEN = path("modelrollout.io/v1alpha1", "modelrollouts", "ml", "fraud-detector", "status")


@dataclass
class Seen:
    subject: str | None
    authorization: str | None


@dataclass
class TlsApiServer:
    """Answers every GET with an object; records who asked. `accepted`: the only valid tokens (None: any)."""

    ca: trustme.CA
    require_certificate: bool
    accepted: set[str] | None = None
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def authorizations(self) -> list[str | None]:
        return [s.authorization for s in self.seen]

    async def handle(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(pair for rdn in peer["subject"] for pair in rdn).get("commonName") if peer else None
        authorization = request.headers.get("Authorization")
        self.seen.append(Seen(subject, authorization))
        if subject is None and (self.accepted is not None and authorization not in self.accepted):
            return web.json_response({"kind": "Status", "status": "Failure", "reason": "Unauthorized",
                                      "message": "Unauthorized", "code": 401}, status=401)
        if request.path == FORBIDDEN:
            user = subject or "system:serviceaccount:modelrollout:modelrollout"
            return web.json_response({
                "kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
                "message": f'modelrollouts.modelrollout.io "fraud-detector" is forbidden: User "{user}" cannot '
                           'patch resource "modelrollouts/status" in API group "modelrollout.io" in the namespace "ml"'},
                status=403)
        return web.json_response({"kind": "ModelRollout", "metadata": {"name": "fraud-detector", "namespace": "ml"}})

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        self.ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED if self.require_certificate else ssl.CERT_OPTIONAL
        return context


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


async def _serve(server: TlsApiServer) -> web.AppRunner:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server.ssl_context())
    await site.start()
    server.port = runner.addresses[0][1]
    return runner


@pytest.fixture
async def cert_server(ca):
    """Refuses the TLS handshake without a client certificate signed by the cluster's CA."""
    server = TlsApiServer(ca, require_certificate=True)
    runner = await _serve(server)
    yield server
    await runner.cleanup()


@pytest.fixture
async def token_server(ca):
    server = TlsApiServer(ca, require_certificate=False)
    runner = await _serve(server)
    yield server
    await runner.cleanup()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _kubeconfig(directory: Path, server: TlsApiServer, user: dict[str, Any]) -> str:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": server.url,
                                                 "certificate-authority-data": _b64(server.ca.cert_pem.bytes())}}],
        "users": [{"name": "operator", "user": user}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "operator"}}],
    }
    target = directory / "kubeconfig"
    target.write_text(yaml.safe_dump(config))
    return str(target)


async def test_client_certificate_from_inline_kubeconfig_data(cert_server, ca, tmp_path):
    client = ca.issue_cert("operator@modelrollout.io", common_name=OPERATOR)
    kube = Kube(load_configuration(_kubeconfig(tmp_path, cert_server, {
        "client-certificate-data": _b64(b"".join(blob.bytes() for blob in client.cert_chain_pems)),
        "client-key-data": _b64(client.private_key_pem.bytes()),
    })))
    try:
        assert (await kube.get(ROLLOUT) or {})["metadata"]["name"] == "fraud-detector"
        await kube.merge_patch(ROLLOUT, {"metadata": {"labels": {"a": None}}})
    finally:
        await kube.close()
    assert [seen.subject for seen in cert_server.seen] == [OPERATOR, OPERATOR]


async def test_client_certificate_from_files_relative_to_the_kubeconfig(cert_server, ca, tmp_path):
    client = ca.issue_cert("operator@modelrollout.io", common_name=OPERATOR)
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.crt"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    kube = Kube(load_configuration(_kubeconfig(tmp_path, cert_server,
                                               {"client-certificate": "client.crt", "client-key": "client.key"})))
    try:
        await kube.get(ROLLOUT)
    finally:
        await kube.close()
    assert [seen.subject for seen in cert_server.seen] == [OPERATOR]


async def test_a_rotated_token_file_is_used_by_the_next_request(token_server, tmp_path):
    token = tmp_path / "token"
    token.write_text("first\n")
    kube = Kube(load_configuration(_kubeconfig(tmp_path, token_server, {"tokenFile": str(token)})))
    try:
        await kube.get(ROLLOUT)
        await kube.get(ROLLOUT)
        rotated = tmp_path / "token.new"
        rotated.write_text("second\n")
        os.replace(rotated, token)  # as the kubelet does: the new token appears at once, whole
        await kube.get(ROLLOUT)
    finally:
        await kube.close()
    assert token_server.authorizations() == ["Bearer first", "Bearer first", "Bearer second"]


def _exec_plugin(tmp_path: Path, expires_in: float) -> dict[str, Any]:
    """A kubeconfig exec section running a python script that issues exec-1, exec-2, ... tokens."""
    script = tmp_path / "credential_plugin.py"
    script.write_text(
        "import datetime, json, os, pathlib\n"
        "count = pathlib.Path(os.environ['COUNT_FILE'])\n"
        "n = int(count.read_text()) + 1 if count.exists() else 1\n"
        "count.write_text(str(n))\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['kind'] == 'ExecCredential', info\n"
        "expiry = datetime.datetime.now(datetime.timezone.utc)"
        " + datetime.timedelta(seconds=float(os.environ['EXPIRES_IN']))\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', 'kind': 'ExecCredential',\n"
        "                  'status': {'token': f'exec-{n}',\n"
        "                             'expirationTimestamp': expiry.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}}))\n")
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
                     "args": [str(script)], "interactiveMode": "Never",
                     "env": [{"name": "COUNT_FILE", "value": str(tmp_path / "count")},
                             {"name": "EXPIRES_IN", "value": str(expires_in)}]}}


async def test_an_exec_plugin_credential_is_used_and_run_again_when_it_expires(token_server, tmp_path):
    kube = Kube(load_configuration(_kubeconfig(tmp_path, token_server, _exec_plugin(tmp_path, expires_in=1.5))))
    try:
        await asyncio.gather(*(kube.get(ROLLOUT) for _ in range(5)))  # one run serves concurrent requests
        await asyncio.sleep(1.6)
        await kube.get(ROLLOUT)
        await kube.get(ROLLOUT)
    finally:
        await kube.close()
    assert token_server.authorizations() == ["Bearer exec-1"] * 5 + ["Bearer exec-2"] * 2


async def test_a_refused_exec_credential_is_renewed_once_and_the_requests_retried(token_server, tmp_path):
    kube = Kube(load_configuration(_kubeconfig(tmp_path, token_server, _exec_plugin(tmp_path, expires_in=3600))))
    try:
        await kube.get(ROLLOUT)
        token_server.accepted = {"Bearer exec-2"}  # the server revoked exec-1 before it expired
        answers = await asyncio.gather(*(kube.get(ROLLOUT) for _ in range(5)))
    finally:
        await kube.close()
    assert all(answer is not None for answer in answers)
    assert sorted(token_server.authorizations()) == ["Bearer exec-1"] * 6 + ["Bearer exec-2"] * 5
    assert (tmp_path / "count").read_text() == "2"  # five refusals, one more run of the plugin


async def test_in_cluster_service_account_token_is_reread_when_the_kubelet_rotates_it(token_server, ca, tmp_path,
                                                                                     monkeypatch):
    account = tmp_path / "serviceaccount"
    account.mkdir()
    ca.cert_pem.write_to_path(str(account / "ca.crt"))
    (account / "namespace").write_text("modelrollout")
    (account / "token").write_text("projected-1")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(token_server.port))
    access = load_configuration(None, service_account=account)
    kube = Kube(access)
    try:
        await kube.get(ROLLOUT)
        (account / "token.new").write_text("projected-2")
        os.replace(account / "token.new", account / "token")
        await kube.get(ROLLOUT)
        info = await access.connection_info()  # kopf's watches log in with the same service account
    finally:
        await kube.close()
    assert token_server.authorizations() == ["Bearer projected-1", "Bearer projected-2"]
    assert (info.server, info.token, info.default_namespace) == (token_server.url, "projected-2", "modelrollout")


def _certificate_exec_plugin(tmp_path: Path, ca: trustme.CA, expires_in: float) -> dict[str, Any]:
    """An exec plugin that issues client certificates (as Teleport's `tsh kube credentials` does):
    exec-1, exec-2, ... as their common names, each expiring after `expires_in` seconds."""
    for n in (1, 2, 3):
        issued = ca.issue_cert("operator@modelrollout.io", common_name=f"exec-{n}")
        issued.cert_chain_pems[0].write_to_path(str(tmp_path / f"exec-{n}.crt"))
        issued.private_key_pem.write_to_path(str(tmp_path / f"exec-{n}.key"))
    script = tmp_path / "certificate_plugin.py"
    script.write_text(
        "import datetime, json, os, pathlib\n"
        "here = pathlib.Path(os.environ['DIR'])\n"
        "count = here / 'count'\n"
        "n = int(count.read_text()) + 1 if count.exists() else 1\n"
        "count.write_text(str(n))\n"
        "expiry = datetime.datetime.now(datetime.timezone.utc)"
        " + datetime.timedelta(seconds=float(os.environ['EXPIRES_IN']))\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', 'kind': 'ExecCredential',\n"
        "                  'status': {'clientCertificateData': (here / f'exec-{n}.crt').read_text(),\n"
        "                             'clientKeyData': (here / f'exec-{n}.key').read_text(),\n"
        "                             'expirationTimestamp': expiry.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}}))\n")
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
                     "args": [str(script)], "interactiveMode": "Never",
                     "env": [{"name": "DIR", "value": str(tmp_path)}, {"name": "EXPIRES_IN", "value": str(expires_in)}]}}


async def test_an_exec_plugin_client_certificate_is_renewed_when_it_expires(cert_server, ca, tmp_path):
    """Before: the certificate of the first run was presented for ever, and once it expired every
    call was refused ("the exec plugin returned no token") until the operator restarted."""
    kube = Kube(load_configuration(_kubeconfig(tmp_path, cert_server, _certificate_exec_plugin(tmp_path, ca, 1.5))))
    try:
        await asyncio.gather(*(kube.get(ROLLOUT) for _ in range(3)))
        await asyncio.sleep(1.6)
        await asyncio.gather(*(kube.get(ROLLOUT) for _ in range(3)))  # one run, one new connection
        await kube.merge_patch(ROLLOUT, {"metadata": {"labels": {"a": None}}})
    finally:
        await kube.close()
    # exec-1 went to the client library's own first run, which cannot know when a certificate expires
    assert [seen.subject for seen in cert_server.seen] == ["exec-2"] * 3 + ["exec-3"] * 4


async def test_kopf_logs_in_with_the_same_certificate_and_exec_token(ca, tmp_path, token_server):
    client = ca.issue_cert("operator@modelrollout.io", common_name=OPERATOR)
    user = {"client-certificate-data": _b64(client.cert_chain_pems[0].bytes()),
            "client-key-data": _b64(client.private_key_pem.bytes()), **_exec_plugin(tmp_path, expires_in=600)}
    info = await load_configuration(_kubeconfig(tmp_path, token_server, user)).connection_info()
    assert Path(str(info.certificate_path)).read_bytes() == client.cert_chain_pems[0].bytes()
    assert Path(str(info.private_key_path)).read_bytes() == client.private_key_pem.bytes()
    assert info.token == "exec-1" and info.expiration is not None  # kopf logs in again when it expires
    assert info.expiration > datetime.datetime.now(datetime.timezone.utc)


async def test_forbidden_is_a_kube_error_with_the_apis_status_and_reason(cert_server, ca, tmp_path):
    client = ca.issue_cert("operator@modelrollout.io", common_name=OPERATOR)
    kube = Kube(load_configuration(_kubeconfig(tmp_path, cert_server, {
        "client-certificate-data": _b64(client.cert_chain_pems[0].bytes()),
        "client-key-data": _b64(client.private_key_pem.bytes())})))
    try:
        with pytest.raises(KubeError) as denied:
            await kube.merge_patch(FORBIDDEN, {"status": {"phase": "Progressing"}})
    finally:
        await kube.close()
    assert (denied.value.status, denied.value.reason) == (403, "Forbidden")
    assert f'User "{OPERATOR}" cannot patch resource "modelrollouts/status"' in str(denied.value)


async def test_a_refused_static_token_is_reported_not_retried(token_server, tmp_path):
    token_server.accepted = {"Bearer right"}
    kube = Kube(load_configuration(_kubeconfig(tmp_path, token_server, {"token": "wrong"})))
    try:
        with pytest.raises(KubeError) as denied:
            await kube.get(ROLLOUT)
    finally:
        await kube.close()
    assert (denied.value.status, denied.value.reason) == (401, "Unauthorized")
    assert token_server.authorizations() == ["Bearer wrong"]  # nothing to refresh: one request


async def test_a_failing_exec_plugin_is_an_unauthorized_kube_error_with_its_message(token_server, tmp_path):
    kube = Kube(load_configuration(_kubeconfig(tmp_path, token_server, _exec_plugin(tmp_path, expires_in=1))))
    try:
        await kube.get(ROLLOUT)
        (tmp_path / "credential_plugin.py").write_text(  # the next run fails, as an expired SSO login does
            "import sys\nsys.exit('error: the SSO session has expired, run aws sso login')\n")
        await asyncio.sleep(1.1)
        with pytest.raises(KubeError) as denied:
            await kube.get(ROLLOUT)
    finally:
        await kube.close()
    assert (denied.value.status, denied.value.reason) == (401, "Unauthorized")
    assert "the SSO session has expired" in str(denied.value)
    assert token_server.authorizations() == ["Bearer exec-1"]
