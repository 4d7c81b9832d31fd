"""Who is calling the lab API server: a lab CA, client certificates and bearer tokens.

kube-apiserver's authenticators, as far as the project needs them:

* **Client certificates** signed by the cluster CA: the subject's CN is the user name and each O
  is a group (what kind, minikube and kubeadm write into an admin kubeconfig).
* **Bearer tokens** from a static table the lab issues (``issue_token``); a token can expire, be
  revoked, or be rotated (``rotate_token``: the old token stops working at once, as a projected
  ServiceAccount token does once the kubelet has replaced it and the old one is past its lifetime).
* Anonymous requests are refused with 401 (``--anonymous-auth=false``), except the health
  endpoints, which a 1.31 AuthenticationConfiguration typically leaves open.

Every authenticated user is also in ``system:authenticated``; ServiceAccounts are in
``system:serviceaccounts`` and ``system:serviceaccounts:<namespace>``.
"""

from __future__ import annotations

import dataclasses
import datetime
import secrets
import ssl
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MASTERS = 'system:masters'
AUTHENTICATED = 'system:authenticated'
OPEN_PATHS = frozenset({'/healthz', '/livez', '/readyz'})


@dataclasses.dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()

    @property
    def all_groups(self) -> tuple[str, ...]:
        return self.groups if AUTHENTICATED in self.groups else (*self.groups, AUTHENTICATED)


ADMIN = UserInfo('lab-admin', (MASTERS,))


def service_account(namespace: str, name: str) -> UserInfo:
    """The identity kube-apiserver gives a ServiceAccount's token or certificate."""
    return UserInfo(f'system:serviceaccount:{namespace}:{name}',
                    ('system:serviceaccounts', f'system:serviceaccounts:{namespace}'))


class Unauthorized(Exception):
    """No valid credential: kube-apiserver answers 401 with a bare 'Unauthorized' Status."""


@dataclasses.dataclass(frozen=True)
class ClientCertificate:
    cert_pem: bytes
    key_pem: bytes


@dataclasses.dataclass
class _Token:
    user: UserInfo
    expires: float | None  # time.time(); None: never


class LabAuthority:
    """The lab's CA, the API server's serving certificate, and the static token table."""

    def __init__(self) -> None:
        self.ca = trustme.CA(organization_name='modelrollout lab', organization_unit_name='kubernetes CA')
        self._server_cert = self.ca.issue_cert('127.0.0.1', 'localhost', 'kubernetes.default.svc',
                                               common_name='kube-apiserver')
        self._ca_key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), password=None)
        self._ca_cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())
        self._tokens: dict[str, _Token] = {}

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem.bytes()

    def server_ssl_context(self) -> ssl.SSLContext:
        """TLS for the server: its certificate, and client certificates checked against the lab CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_cert.configure_cert(context)
        self.ca.configure_trust(context)
        context.verify_mode = ssl.CERT_OPTIONAL  # a client may authenticate by token instead
        return context

    def client_ssl_context(self, user: UserInfo = ADMIN) -> ssl.SSLContext:
        """TLS for a plain HTTP client (urllib): trusts the lab CA, presents a certificate for `user`."""
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        cert = self.client_certificate(user)
        with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain reads files only
            path = Path(tmp) / 'client.pem'
            path.write_bytes(cert.key_pem + cert.cert_pem)
            context.load_cert_chain(path)
        return context

    def client_certificate(self, user: UserInfo, *, valid_for: datetime.timedelta = datetime.timedelta(days=1)
                           ) -> ClientCertificate:
        """A client certificate for `user`: CN = name, one O per group (trustme allows only one O)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in user.groups]
                            + [x509.NameAttribute(NameOID.COMMON_NAME, user.name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(subject).issuer_name(self._ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + valid_for)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(self._ca_key, hashes.SHA256()))  # type: ignore[arg-type]
        return ClientCertificate(
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))

    # ------------------------------------------------------------------ tokens
    def issue_token(self, user: str | UserInfo, groups: tuple[str, ...] | list[str] = (), *,
                    ttl: float | None = None) -> str:
        """A new bearer token for `user` (a name plus `groups`, or a UserInfo); `ttl` in seconds."""
        info = user if isinstance(user, UserInfo) else UserInfo(user, tuple(groups))
        token = secrets.token_urlsafe(32)
        self._tokens[token] = _Token(info, None if ttl is None else time.time() + ttl)
        return token

    def rotate_token(self, token: str, *, ttl: float | None = None) -> str:
        """A new token for the same identity; the old one stops working at once."""
        entry = self._tokens.pop(token)
        return self.issue_token(entry.user, ttl=ttl)

    def revoke_token(self, token: str) -> None:
        self._tokens.pop(token, None)

    # ------------------------------------------------------------------ authentication
    def authenticate(self, headers: Mapping[str, str], peercert: Mapping[str, Any] | None) -> UserInfo:
        """The caller, from a verified client certificate or a bearer token; else Unauthorized.

        Like kube-apiserver, a request that carries a bearer token is judged by the token even if
        the connection also presents a certificate; an invalid token is never excused by it.
        """
        scheme, _, credential = (headers.get('Authorization') or '').partition(' ')
        if scheme.lower() == 'bearer' and credential.strip():
            entry = self._tokens.get(credential.strip())
            if entry is None or (entry.expires is not None and entry.expires <= time.time()):
                raise Unauthorized()
            return entry.user
        if peercert:
            return _user_from_subject(peercert.get('subject') or ())
        raise Unauthorized()


def _user_from_subject(subject: Any) -> UserInfo:
    """CN and O out of ssl.getpeercert()'s subject (a tuple of RDNs of (key, value) pairs)."""
    pairs = [pair for rdn in subject for pair in rdn]
    names = [value for key, value in pairs if key == 'commonName']
    if not names:
        raise Unauthorized()
    return UserInfo(names[0], tuple(value for key, value in pairs if key == 'organizationName'))
