"""
An emulated Kubernetes API server for the local lab, built on kmock's ``KubernetesEmulator``.

Real clients (kubectl, the kubernetes Python client, kopf) talk to it over HTTPS on 127.0.0.1
(a lab CA) and should not be able to tell it from kube-apiserver for what the project uses:
every request is authenticated (client certificate or bearer token, ``modelrollout_lab.auth``)
and authorized against the stored RBAC objects (``modelrollout_lab.rbac``).

Public API
==========

``EmulatedApiServer(*, host='127.0.0.1', port=0, history=20000)``
    ``await start()`` / ``await stop()``; ``async with EmulatedApiServer() as srv: ...``;
    ``.url`` (``'https://127.0.0.1:PORT'``), ``.port``, ``.emulator`` (the kmock handler),
    ``.authority`` (the LabAuthority: CA, client certificates, token table);
    ``write_kubeconfig(path, *, context='modelrollout-lab', namespace='default', user=ADMIN, token=None,
    token_file=None) -> Path`` (the CA and, by default, a client certificate in ``system:masters``);
    ``issue_token(user, groups=(), *, ttl=None) -> str``; ``rotate_token(token) -> str``;
    ``get_object(api_version, plural, namespace, name) -> dict | None`` (a deep copy);
    ``list_objects(api_version, plural, namespace=None) -> list[dict]`` (deep copies);
    ``resource_version -> int`` (the global counter);
    ``open_watches(api_version, plural) -> list[dict]`` (the query parameters of the watch requests
    being served, with ``namespace``/``name`` from the URL: a client's watch is in it once the server
    has started sending it events, so tests can sync on it; e.g. ``kubectl get X NAME -w`` skips the
    first event of its watch, the current state, so a change made before its watch is open is never shown).
``start_in_thread(*, host='127.0.0.1', port=0, kubeconfig=None, history=20000) -> ThreadedApiServer``
    runs the server in a daemon thread with its own event loop (for sync code and tests);
    the handle has ``.url``, ``.port``, ``.server`` (the EmulatedApiServer), ``.loop``,
    ``.kubeconfig`` (Path or None), ``write_kubeconfig(path)``, ``call(coro) -> result``
    (runs a coroutine on the server's loop), ``open_watches(api_version, plural)`` (as above, read on
    the server's loop), ``stop()``; also a (sync) context manager.
``LabKubernetesEmulator``
    the kmock handler itself (a ``kmock.KubernetesEmulator`` subclass) with the storage.
``python -m modelrollout_lab.apiserver --port 0 --kubeconfig PATH``
    writes an admin kubeconfig (context ``modelrollout-lab``), prints ``READY <url>``,
    serves until SIGTERM/SIGINT.

Fidelity: see docs/lab-apiserver.md.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import pathlib
import random
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Coroutine
from typing import Any

import aiohttp.web
import yaml
from kmock import KubernetesEmulator, ResourceInfo, Request

from modelrollout_lab import apiserver_logic as logic
from modelrollout_lab import apiserver_protobuf
from modelrollout_lab import faults as lab_faults
from modelrollout_lab import validation
from modelrollout_lab.auth import ADMIN, LabAuthority, UserInfo
from modelrollout_lab.rbac import RBAC_GROUP, AccessControl, Authorizer

__all__ = [
    'EmulatedApiServer',
    'ThreadedApiServer',
    'LabKubernetesEmulator',
    'ResourceDef',
    'start_in_thread',
    'main',
]

logger = logging.getLogger(__name__)

SERVER_VERSION = {
    'major': '1',
    'minor': '31',
    'gitVersion': 'v1.31.0',
    'gitCommit': '9edcffcde5595e8a5b1a35f88c421764e575afce',
    'gitTreeState': 'clean',
    'buildDate': '2024-08-13T07:28:49Z',
    'goVersion': 'go1.22.5',
    'compiler': 'gc',
    'platform': 'linux/amd64',
}
ALL_VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch']
SUB_VERBS = ['get', 'patch', 'update']
_NAME_CHARS = 'bcdfghjklmnpqrstvwxz2456789'


# --------------------------------------------------------------------------------------------------
# Resource definitions.
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ResourceDef:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ''
    short_names: list[str] = dataclasses.field(default_factory=list)
    categories: list[str] = dataclasses.field(default_factory=list)
    list_kind: str = ''
    status: bool = False  # has the status subresource
    scale: bool = False  # has the scale subresource (Deployments)
    generation: bool = False  # maintains metadata.generation
    schema: dict[str, Any] | None = None  # openAPIV3Schema (CRDs)
    printer_columns: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    crd: str | None = None  # the CRD name if defined by a CRD

    def __post_init__(self) -> None:
        self.singular = self.singular or self.kind.lower()
        self.list_kind = self.list_kind or f'{self.kind}List'

    @property
    def api_version(self) -> str:
        return f'{self.group}/{self.version}' if self.group else self.version

    @property
    def gp(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def group_resource(self) -> str:
        return f'{self.plural}.{self.group}' if self.group else self.plural

    @property
    def group_kind(self) -> str:
        return f'{self.kind}.{self.group}' if self.group else self.kind


def _builtin_resources() -> list[ResourceDef]:
    R = ResourceDef
    return [
        R('', 'v1', 'namespaces', 'Namespace', namespaced=False, short_names=['ns'], status=True),
        R('', 'v1', 'services', 'Service', short_names=['svc'], categories=['all'], status=True),
        R('', 'v1', 'events', 'Event', short_names=['ev']),
        R('', 'v1', 'configmaps', 'ConfigMap', short_names=['cm']),
        R('', 'v1', 'secrets', 'Secret'),
        R('', 'v1', 'pods', 'Pod', short_names=['po'], categories=['all'], status=True),
        R('', 'v1', 'serviceaccounts', 'ServiceAccount', short_names=['sa']),
        R('', 'v1', 'endpoints', 'Endpoints', short_names=['ep']),
        R('apps', 'v1', 'deployments', 'Deployment', short_names=['deploy'], categories=['all'],
          status=True, scale=True, generation=True),
        R('apps', 'v1', 'replicasets', 'ReplicaSet', short_names=['rs'], categories=['all'],
          status=True, scale=True, generation=True),
        R('apps', 'v1', 'statefulsets', 'StatefulSet', short_names=['sts'], categories=['all'],
          status=True, scale=True, generation=True),
        R('batch', 'v1', 'jobs', 'Job', categories=['all'], status=True, generation=True),
        R('events.k8s.io', 'v1', 'events', 'Event', short_names=['ev']),
        R('coordination.k8s.io', 'v1', 'leases', 'Lease'),
        R('gateway.networking.k8s.io', 'v1', 'httproutes', 'HTTPRoute', categories=['gateway-api'],
          status=True, generation=True),
        R('gateway.networking.k8s.io', 'v1', 'gateways', 'Gateway', short_names=['gtw'],
          categories=['gateway-api'], status=True, generation=True),
        R('networking.istio.io', 'v1', 'virtualservices', 'VirtualService', short_names=['vs'],
          categories=['istio-io', 'networking-istio-io'], status=True, generation=True),
        R('serving.kserve.io', 'v1beta1', 'inferenceservices', 'InferenceService', short_names=['isvc'],
          status=True, generation=True),
        R('apiextensions.k8s.io', 'v1', 'customresourcedefinitions', 'CustomResourceDefinition',
          namespaced=False, short_names=['crd', 'crds'], categories=['api-extensions'], status=True,
          generation=True),
        # Authorization (modelrollout_lab.rbac reads these; the reviews are answered by its gate).
        R('rbac.authorization.k8s.io', 'v1', 'clusterroles', 'ClusterRole', namespaced=False),
        R('rbac.authorization.k8s.io', 'v1', 'clusterrolebindings', 'ClusterRoleBinding', namespaced=False),
        R('rbac.authorization.k8s.io', 'v1', 'roles', 'Role'),
        R('rbac.authorization.k8s.io', 'v1', 'rolebindings', 'RoleBinding'),
        R('authorization.k8s.io', 'v1', 'selfsubjectaccessreviews', 'SelfSubjectAccessReview', namespaced=False),
        R('authentication.k8s.io', 'v1', 'selfsubjectreviews', 'SelfSubjectReview', namespaced=False),
    ]


# --------------------------------------------------------------------------------------------------
# Errors as kube-apiserver's Status objects.
# --------------------------------------------------------------------------------------------------
class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
            'message': self.message, 'reason': self.reason, 'code': self.code,
        }
        if self.details is not None:
            result['details'] = self.details
        return result


def _details(rdef: ResourceDef, name: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details['name'] = name
    if rdef.group:
        details['group'] = rdef.group
    details['kind'] = rdef.plural
    return details


def not_found(rdef: ResourceDef, name: str) -> ApiError:
    return ApiError(404, 'NotFound', f'{rdef.group_resource} "{name}" not found', _details(rdef, name))


def already_exists(rdef: ResourceDef, name: str) -> ApiError:
    return ApiError(409, 'AlreadyExists', f'{rdef.group_resource} "{name}" already exists', _details(rdef, name))


def conflict(rdef: ResourceDef, name: str) -> ApiError:
    return ApiError(409, 'Conflict',
                    f'Operation cannot be fulfilled on {rdef.group_resource} "{name}": the object has been '
                    f'modified; please apply your changes to the latest version and try again',
                    _details(rdef, name))


def invalid(rdef: ResourceDef, name: str, causes: list[dict[str, str]]) -> ApiError:
    texts = [f'{c["field"]}: {c["message"]}' for c in causes]
    summary = texts[0] if len(texts) == 1 else '[' + ', '.join(texts) + ']'
    details = {'name': name, 'group': rdef.group, 'kind': rdef.kind, 'causes': causes}
    if not rdef.group:
        del details['group']
    return ApiError(422, 'Invalid', f'{rdef.group_kind} "{name}" is invalid: {summary}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, 'BadRequest', message)


# --------------------------------------------------------------------------------------------------
# Watching.
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class _Event:
    rv: int
    gp: tuple[str, str]
    type: str
    obj: dict[str, Any]  # never mutated after creation (copy-on-write storage)
    _cache: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def encoded(self, api_version: str) -> bytes:
        try:
            return self._cache[api_version]
        except KeyError:
            obj = self.obj if self.obj.get('apiVersion') == api_version else {**self.obj, 'apiVersion': api_version}
            data = json.dumps({'type': self.type, 'object': obj}, separators=(',', ':')).encode() + b'\n'
            self._cache[api_version] = data
            return data


_STOP = object()


# --------------------------------------------------------------------------------------------------
# The kmock handler with the storage and the API semantics.
# --------------------------------------------------------------------------------------------------
class LabKubernetesEmulator(KubernetesEmulator):  # type: ignore[misc]
    """
    kmock's KubernetesEmulator with kube-apiserver semantics (see the module docs).

    The storage is our own: ``{(group, plural): {(namespace, name): object}}``; stored objects are
    never mutated in place (every write builds a new dict), so events and lists share them safely.
    kmock's DSL reactions (``emulator['get /something'] << {...}``) still serve unknown URLs.
    """

    def __init__(self, *, history: int = 20000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.__dict__['_lab'] = _LabState(history=history)
        self.__dict__['faults'] = lab_faults.Faults()  # injected on purpose by tests (modelrollout_lab.faults)
        st = self._lab
        for rdef in _builtin_resources():
            self._register(rdef)
        now = logic.now_rfc3339()
        for ns in ('default', 'kube-system', 'kube-public', 'kube-node-lease'):
            st.rv += 1
            st.store[('', 'namespaces')][(None, ns)] = {
                'apiVersion': 'v1', 'kind': 'Namespace',
                'metadata': {'name': ns, 'uid': str(uuid.uuid4()), 'resourceVersion': str(st.rv),
                             'creationTimestamp': now, 'labels': {'kubernetes.io/metadata.name': ns}},
                'spec': {'finalizers': ['kubernetes']}, 'status': {'phase': 'Active'},
            }
        st.floor = st.rv  # events after this are replayable

    @property
    def _lab(self) -> _LabState:
        return self.__dict__['_lab']

    # ---------------------------------------------------------------------------------- registry
    def _register(self, rdef: ResourceDef) -> None:
        st = self._lab
        st.defs[(rdef.group, rdef.version, rdef.plural)] = rdef
        st.store.setdefault(rdef.gp, {})
        subresources = (['status'] if rdef.status else []) + (['scale'] if rdef.scale else [])
        # Also expose it via kmock's own resources registry (for kmock-style introspection).
        self.resources[f'{rdef.group}/{rdef.version}/{rdef.plural}' if rdef.group else f'v1/{rdef.plural}'] = ResourceInfo(
            kind=rdef.kind, singular=rdef.singular, namespaced=rdef.namespaced, verbs=ALL_VERBS,
            shortnames=rdef.short_names, categories=rdef.categories, subresources=subresources)
        st.discovery_rv += 1

    def _unregister_crd(self, crd_name: str) -> None:
        st = self._lab
        for key, rdef in list(st.defs.items()):
            if rdef.crd == crd_name:
                del st.defs[key]
                with contextlib.suppress(KeyError):
                    del self.resources[f'{rdef.group}/{rdef.version}/{rdef.plural}']
        st.discovery_rv += 1

    def _find_def(self, group: str, version: str, plural: str) -> ResourceDef | None:
        return self._lab.defs.get((group, version, plural))

    # ---------------------------------------------------------------------------------- HTTP entry
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            body = await raw_request.read()
            st = self._lab
            st.requests += 1
            path = raw_request.path
            parsed = _parse_path(path)
            request = Request(
                id=st.requests, raw_request=raw_request, url=raw_request.url, method=raw_request.method,
                params=dict(raw_request.query), headers=dict(raw_request.headers), body=body,
                namespace=parsed.get('namespace'), name=parsed.get('name'),
                subresource=parsed.get('subresource'),
            )
            if st.access is not None:  # authentication and RBAC (modelrollout_lab.rbac.AccessControl)
                ssl_object = raw_request.transport.get_extra_info('ssl_object') if raw_request.transport else None
                answer = st.access.admit(raw_request.method, path, parsed, request.params, raw_request.headers,
                                      ssl_object.getpeercert() if ssl_object else None, body)
                if answer is not None:
                    return _json_response(answer[1], status=answer[0])
            response = await self._dispatch(request, parsed, raw_request)
            logger.debug('%s %s -> %s', raw_request.method, raw_request.path_qs, response.status)
            return response
        except ApiError as e:
            logger.debug('%s %s -> %s %s', raw_request.method, raw_request.path_qs, e.code, e.message)
            return _json_response(e.status(), status=e.code)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # pragma: no cover - a bug in the emulator; show it to the client
            logger.exception('Emulated API server failed on %s %s', raw_request.method, raw_request.path_qs)
            err = ApiError(500, 'InternalError', f'Internal error occurred: {e!r}',
                           {'causes': [{'message': traceback.format_exc()}]})
            return _json_response(err.status(), status=500)

    async def _dispatch(self, request: Request, parsed: dict[str, Any], raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw.path.rstrip('/') or '/'
        method = raw.method.upper()
        if parsed.get('plural') is not None:
            rdef = self._find_def(parsed['group'], parsed['version'], parsed['plural'])
            if rdef is None:
                raise ApiError(404, 'NotFound', 'the server could not find the requested resource', {})
            return await self._serve_resource(rdef, parsed, request, raw)
        if method == 'GET':
            if path == '/version':
                return _json_response(SERVER_VERSION)
            if path == '/api':
                return _json_response({'kind': 'APIVersions', 'versions': ['v1'], 'serverAddressByClientCIDRs': [
                    {'clientCIDR': '0.0.0.0/0', 'serverAddress': f'{raw.host}'}]})
            if path == '/apis':
                return _json_response(self._discovery_groups())
            if parsed.get('group') is not None and parsed.get('version') is None and parsed['group']:
                return _json_response(self._discovery_group(parsed['group']))
            if parsed.get('version') is not None:
                return _json_response(self._discovery_resources(parsed['group'], parsed['version']))
            if path == '/openapi/v3':
                return _json_response(self._openapi_root())
            if path.startswith('/openapi/v3/'):
                return _json_response(self._openapi_gv(path[len('/openapi/v3/'):]))
            if path in ('/healthz', '/livez', '/readyz'):
                return aiohttp.web.Response(text='ok')
            if path == '/':
                return _json_response({'paths': sorted(self._root_paths())})
        # Anything else: kmock's DSL reactions (user-declared), or 404 as the real server does.
        try:
            return await super(KubernetesEmulator, self)._handle(request)
        except Exception:
            raise ApiError(404, 'NotFound', 'the server could not find the requested resource', {}) from None

    # ---------------------------------------------------------------------------------- discovery
    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for rdef in self._lab.defs.values():
            if rdef.group and rdef.version not in groups.setdefault(rdef.group, []):
                groups[rdef.group].append(rdef.version)
        for versions in groups.values():
            versions.sort(key=_version_priority)
        return groups

    def _root_paths(self) -> list[str]:
        paths = {'/api', '/api/v1', '/apis', '/version', '/openapi/v3', '/healthz', '/livez', '/readyz'}
        for group, versions in self._groups().items():
            paths.add(f'/apis/{group}')
            paths.update(f'/apis/{group}/{v}' for v in versions)
        return sorted(paths)

    def _group_entry(self, group: str, versions: list[str]) -> dict[str, Any]:
        return {
            'name': group,
            'versions': [{'groupVersion': f'{group}/{v}', 'version': v} for v in versions],
            'preferredVersion': {'groupVersion': f'{group}/{versions[0]}', 'version': versions[0]},
        }

    def _discovery_groups(self) -> dict[str, Any]:
        return {'kind': 'APIGroupList', 'apiVersion': 'v1',
                'groups': [self._group_entry(g, vs) for g, vs in sorted(self._groups().items())]}

    def _discovery_group(self, group: str) -> dict[str, Any]:
        versions = self._groups().get(group)
        if not versions:
            raise ApiError(404, 'NotFound', 'the server could not find the requested resource', {})
        return {'kind': 'APIGroup', 'apiVersion': 'v1', **self._group_entry(group, versions)}

    def _discovery_resources(self, group: str, version: str) -> dict[str, Any]:
        rdefs = [r for r in self._lab.defs.values() if r.group == group and r.version == version]
        if not rdefs:
            raise ApiError(404, 'NotFound', 'the server could not find the requested resource', {})
        resources: list[dict[str, Any]] = []
        for r in sorted(rdefs, key=lambda r: r.plural):
            entry: dict[str, Any] = {
                'name': r.plural, 'singularName': r.singular, 'namespaced': r.namespaced, 'kind': r.kind,
                'verbs': ALL_VERBS,
                'storageVersionHash': base64.b64encode(hashlib.sha256(r.group_resource.encode()).digest()[:8]).decode(),
            }
            if r.short_names:
                entry['shortNames'] = list(r.short_names)
            if r.categories:
                entry['categories'] = list(r.categories)
            resources.append(entry)
            if r.status:
                resources.append({'name': f'{r.plural}/status', 'singularName': '', 'namespaced': r.namespaced,
                                  'kind': r.kind, 'verbs': SUB_VERBS})
            if r.scale:
                resources.append({'name': f'{r.plural}/scale', 'singularName': '', 'namespaced': r.namespaced,
                                  'group': 'autoscaling', 'version': 'v1', 'kind': 'Scale', 'verbs': SUB_VERBS})
        gv = f'{group}/{version}' if group else version
        return {'kind': 'APIResourceList', 'apiVersion': 'v1', 'groupVersion': gv, 'resources': resources}

    # kubectl (--validate=strict, the default) checks in OpenAPI v3 that PATCH accepts `fieldValidation`,
    # then leaves the validation to the server. A minimal document per group-version is enough for it.
    def _openapi_root(self) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        h = self._lab.discovery_rv
        for r in self._lab.defs.values():
            key = f'apis/{r.group}/{r.version}' if r.group else f'api/{r.version}'
            paths[key] = {'serverRelativeURL': f'/openapi/v3/{key}?hash={h:016X}'}
        return {'paths': paths}

    def _openapi_gv(self, key: str) -> dict[str, Any]:
        parts = key.strip('/').split('/')
        if parts[0] == 'api' and len(parts) == 2:
            group, version = '', parts[1]
        elif parts[0] == 'apis' and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            raise ApiError(404, 'NotFound', 'the server could not find the requested resource', {})
        rdefs = [r for r in self._lab.defs.values() if r.group == group and r.version == version]
        if not rdefs:
            raise ApiError(404, 'NotFound', 'the server could not find the requested resource', {})
        prefix = f'/apis/{group}/{version}' if group else f'/api/{version}'
        paths: dict[str, Any] = {}
        params = [{'name': n, 'in': 'query', 'description': n, 'schema': {'type': 'string', 'uniqueItems': True}}
                  for n in ('dryRun', 'fieldManager', 'fieldValidation')]
        for r in rdefs:
            gvk = {'group': group, 'version': version, 'kind': r.kind}
            ns = '/namespaces/{namespace}' if r.namespaced else ''
            paths[f'{prefix}{ns}/{r.plural}/{{name}}'] = {
                'patch': {
                    'operationId': f'patch{r.kind}', 'parameters': params,
                    'responses': {'200': {'description': 'OK'}},
                    'x-kubernetes-action': 'patch', 'x-kubernetes-group-version-kind': gvk,
                },
            }
        return {'openapi': '3.0.0', 'info': {'title': 'Kubernetes', 'version': SERVER_VERSION['gitVersion']},
                'paths': paths, 'components': {'schemas': {}}}

    # ---------------------------------------------------------------------------------- resources
    async def _serve_resource(self, rdef: ResourceDef, parsed: dict[str, Any], request: Request,
                              raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        method = raw.method.upper()
        ns: str | None = parsed.get('namespace') if rdef.namespaced else None
        name: str | None = parsed.get('name')
        sub: str | None = parsed.get('subresource')
        params = request.params
        accept = raw.headers.get('Accept', '')
        if sub is not None and not ((sub == 'status' and rdef.status) or (sub == 'scale' and rdef.scale)):
            raise ApiError(404, 'NotFound', 'the server could not find the requested resource', {})
        injected = await self.faults.intercept(method, rdef, name, sub, params, raw.headers,
                                               lambda: lab_faults.authenticated_name(getattr(self._lab, 'access', None), raw))
        if injected is not None:
            return injected
        if method == 'GET' and params.get('watch') in ('true', '1'):
            return await self._serve_watch(rdef, ns, name, request, raw)
        if name is None:
            if method == 'GET':
                return _json_response(self._list(rdef, ns, params, accept))
            if method == 'POST':
                obj = _decode_body(request.body, raw.headers.get('Content-Type', ''))
                result = self._create(rdef, ns, obj, dry_run=bool(params.get('dryRun')),
                                      strict=params.get('fieldValidation') == 'Strict')
                return _json_response(result, status=201)
            if method == 'DELETE':
                return _json_response(self._delete_collection(rdef, ns, params))
            raise ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')
        if method == 'GET':
            obj = self._get(rdef, ns, name)
            if sub == 'scale':
                return _json_response(self._scale_view(rdef, obj))
            return _json_response(self._render_one(rdef, obj, accept, params))
        if method in ('PUT', 'PATCH'):
            ctype = raw.headers.get('Content-Type', 'application/json').split(';')[0].strip().lower()
            dry = bool(params.get('dryRun'))
            strict = params.get('fieldValidation') == 'Strict'
            if method == 'PUT':
                body = _decode_body(request.body, ctype)
                if sub == 'scale':
                    return _json_response(self._update_scale(rdef, ns, name, body, dry))
                result = self._replace(rdef, ns, name, body, sub, dry_run=dry, strict=strict)
            else:
                result = self._patch(rdef, ns, name, request.body, ctype, sub, dry_run=dry, strict=strict,
                                     force=params.get('force') == 'true')
            return _json_response(result, status=201 if result.pop('__created__', False) else 200)
        if method == 'DELETE':
            options = _decode_body(request.body, 'application/json') if request.body else {}
            if 'propagationPolicy' in params:
                options.setdefault('propagationPolicy', params['propagationPolicy'])
            return _json_response(self._delete(rdef, ns, name, options or {}, dry_run=bool(params.get('dryRun'))))
        raise ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')

    # ---------------------------------------------------------------------------------- reading
    def _get(self, rdef: ResourceDef, ns: str | None, name: str) -> dict[str, Any]:
        obj = self._lab.store[rdef.gp].get((ns, name))
        if obj is None:
            raise not_found(rdef, name)
        return obj

    def _select(self, rdef: ResourceDef, ns: str | None, params: dict[str, str]) -> list[dict[str, Any]]:
        try:
            lreqs = logic.parse_label_selector(params.get('labelSelector'))
            freqs = logic.parse_field_selector(params.get('fieldSelector'))
        except logic.SelectorError as e:
            raise bad_request(str(e)) from None
        items = []
        for (ons, oname), obj in self._lab.store[rdef.gp].items():
            if ns is not None and ons != ns:
                continue
            if lreqs and not logic.match_labels(lreqs, obj['metadata'].get('labels')):
                continue
            if freqs and not logic.match_fields(freqs, obj):
                continue
            items.append(obj)
        items.sort(key=lambda o: (o['metadata'].get('namespace') or '', o['metadata']['name']))
        return items

    def _list(self, rdef: ResourceDef, ns: str | None, params: dict[str, str], accept: str) -> dict[str, Any]:
        items = self._select(rdef, ns, params)
        rv = str(self._lab.rv)
        if 'as=Table' in accept:
            return self._table(rdef, items, params, rv)
        if 'as=PartialObjectMetadataList' in accept:
            return {'kind': 'PartialObjectMetadataList', 'apiVersion': 'meta.k8s.io/v1', 'metadata': {'resourceVersion': rv},
                    'items': [_partial(o) for o in items]}
        av = rdef.api_version
        return {'kind': rdef.list_kind, 'apiVersion': av, 'metadata': {'resourceVersion': rv},
                'items': [o if o.get('apiVersion') == av else {**o, 'apiVersion': av} for o in items]}

    def _render_one(self, rdef: ResourceDef, obj: dict[str, Any], accept: str, params: dict[str, str]) -> dict[str, Any]:
        if 'as=Table' in accept:
            return self._table(rdef, [obj], params, obj['metadata'].get('resourceVersion', ''))
        if 'as=PartialObjectMetadata' in accept:
            return _partial(obj)
        return _as_version(rdef, obj)

    def _columns(self, rdef: ResourceDef) -> list[dict[str, Any]]:
        cols = [{'name': 'Name', 'type': 'string', 'format': 'name', 'priority': 0,
                 'description': 'Name must be unique within a namespace. Is required when creating resources, '
                                'although some resources may allow a client to request the generation of an '
                                'appropriate name automatically.'}]
        if rdef.printer_columns:
            for c in rdef.printer_columns:
                cols.append({'name': c.get('name', ''), 'type': c.get('type', 'string'), 'format': c.get('format', ''),
                             'description': c.get('description', ''), 'priority': int(c.get('priority', 0))})
        else:
            cols.append({'name': 'Age', 'type': 'string', 'format': '', 'priority': 0,
                         'description': 'CreationTimestamp is a timestamp representing the server time when this '
                                        'object was created.'})
        return cols

    def _table(self, rdef: ResourceDef, items: list[dict[str, Any]], params: dict[str, str], rv: str) -> dict[str, Any]:
        include = params.get('includeObject', 'Metadata')
        rows = []
        for obj in items:
            cells: list[Any] = [obj['metadata']['name']]
            if rdef.printer_columns:
                for c in rdef.printer_columns:
                    cells.append(logic.table_cell(logic.simple_jsonpath(obj, c.get('jsonPath', '')), c.get('type', 'string')))
            else:
                cells.append(logic.table_cell(obj['metadata'].get('creationTimestamp'), 'date'))
            row: dict[str, Any] = {'cells': cells}
            if include == 'Object':
                row['object'] = _as_version(rdef, obj)
            elif include != 'None':
                row['object'] = _partial(obj)
            rows.append(row)
        return {'kind': 'Table', 'apiVersion': 'meta.k8s.io/v1', 'metadata': {'resourceVersion': rv},
                'columnDefinitions': self._columns(rdef), 'rows': rows}

    # ---------------------------------------------------------------------------------- writing
    def _create(self, rdef: ResourceDef, ns: str | None, obj: Any, *, dry_run: bool = False,
                strict: bool = False) -> dict[str, Any]:
        st = self._lab
        if not isinstance(obj, dict):
            raise bad_request('the body of the request was in an unknown format')
        obj = dict(obj)
        meta = obj['metadata'] = dict(obj.get('metadata') or {})
        if rdef.namespaced:
            body_ns = meta.get('namespace')
            if ns is None:
                ns = body_ns or 'default'
            elif body_ns and body_ns != ns:
                raise bad_request('the namespace of the provided object does not match the namespace sent on the request')
            meta['namespace'] = ns
        else:
            meta.pop('namespace', None)
            ns = None
        if not meta.get('name'):
            if meta.get('generateName'):
                meta['name'] = meta['generateName'] + ''.join(random.choice(_NAME_CHARS) for _ in range(5))
            else:
                raise invalid(rdef, '', [{'reason': 'FieldValueRequired', 'message': 'Required value: name or generateName is required',
                                          'field': 'metadata.name'}])
        name = meta['name']
        existing = st.store[rdef.gp].get((ns, name))
        if existing is not None:
            raise already_exists(rdef, name)
        for key in ('resourceVersion', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'managedFields', 'selfLink'):
            meta.pop(key, None)
        meta['uid'] = str(uuid.uuid4())
        meta['creationTimestamp'] = logic.now_rfc3339()
        if rdef.generation:
            meta['generation'] = 1
        if rdef.status:
            obj.pop('status', None)
        obj = self._admit(rdef, obj, None, strict=strict)
        if dry_run:
            return obj
        self._commit(rdef, ns, name, obj, 'ADDED')
        if rdef.gp == ('apiextensions.k8s.io', 'customresourcedefinitions'):
            obj = self._crd_established(obj)
        return _as_version(rdef, st.store[rdef.gp][(ns, name)])

    def _replace(self, rdef: ResourceDef, ns: str | None, name: str, body: Any, sub: str | None, *,
                 dry_run: bool = False, strict: bool = False, patching: bool = False) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request('the body of the request was in an unknown format')
        old = self._get(rdef, ns, name)
        meta = body.get('metadata') or {}
        if not isinstance(meta, dict):
            raise bad_request('metadata must be an object')
        if meta.get('name') not in (None, name):
            raise bad_request(f'the name of the object ({meta.get("name")}) does not match the name on the URL ({name})')
        rv = meta.get('resourceVersion')
        if rv and rv != old['metadata'].get('resourceVersion'):
            raise conflict(rdef, name)
        if not rv and not patching and rdef.crd:
            raise invalid(rdef, name, [{'reason': 'FieldValueInvalid', 'field': 'metadata.resourceVersion',
                                        'message': 'Invalid value: 0x0: must be specified for an update'}])
        return self._update(rdef, ns, name, old, body, sub, dry_run=dry_run, strict=strict)

    def _update(self, rdef: ResourceDef, ns: str | None, name: str, old: dict[str, Any], new: dict[str, Any],
                sub: str | None, *, dry_run: bool = False, strict: bool = False) -> dict[str, Any]:
        new = dict(new)
        if sub == 'status':
            status = new.get('status', logic._MISSING)
            new = {k: v for k, v in old.items() if k != 'status'}
            if status is not logic._MISSING:
                new['status'] = status
        else:
            if rdef.status:
                new.pop('status', None)
                if 'status' in old:
                    new['status'] = old['status']
        meta = new['metadata'] = dict(new.get('metadata') or {})
        ometa = old['metadata']
        for key in ('name', 'namespace', 'uid', 'creationTimestamp', 'deletionTimestamp',
                    'deletionGracePeriodSeconds', 'generation', 'resourceVersion'):
            if key in ometa:
                meta[key] = ometa[key]
            else:
                meta.pop(key, None)
        if ometa.get('deletionTimestamp'):
            added = set(meta.get('finalizers') or []) - set(ometa.get('finalizers') or [])
            if added:
                raise ApiError(422, 'Invalid', f'{rdef.group_kind} "{name}" is invalid: metadata.finalizers: Forbidden: '
                               f'no new finalizers can be added if the object is being deleted, found new finalizers '
                               f'{json.dumps(sorted(added))}', {'name': name, 'kind': rdef.kind, 'causes': [
                                   {'reason': 'FieldValueForbidden', 'field': 'metadata.finalizers',
                                    'message': 'Forbidden: no new finalizers can be added if the object is being deleted'}]})
        new = self._admit(rdef, new, old, strict=strict and sub != 'status')
        if rdef.generation and _spec_part(rdef, new) != _spec_part(rdef, old):
            new['metadata']['generation'] = int(ometa.get('generation', 0)) + 1
        if _comparable(new) == _comparable(old):
            return _as_version(rdef, old)  # a no-op: no new resourceVersion, no event
        if dry_run:
            return new
        if new['metadata'].get('deletionTimestamp') and not new['metadata'].get('finalizers'):
            self._commit(rdef, ns, name, new, 'MODIFIED')
            final = self._lab.store[rdef.gp][(ns, name)]
            self._remove(rdef, ns, name)
            return _as_version(rdef, final)
        self._commit(rdef, ns, name, new, 'MODIFIED')
        if rdef.gp == ('apiextensions.k8s.io', 'customresourcedefinitions') and sub != 'status':
            self._crd_established(self._lab.store[rdef.gp][(ns, name)])
        return _as_version(rdef, self._lab.store[rdef.gp][(ns, name)])

    def _patch(self, rdef: ResourceDef, ns: str | None, name: str, body: bytes, ctype: str, sub: str | None, *,
               dry_run: bool, strict: bool, force: bool) -> dict[str, Any]:
        st = self._lab
        old = st.store[rdef.gp].get((ns, name))
        if ctype == 'application/apply-patch+yaml':
            try:
                patch = yaml.safe_load(body.decode() or '{}')
            except yaml.YAMLError as e:
                raise bad_request(f'error decoding YAML: {e}') from None
            if old is None:
                if sub:
                    raise not_found(rdef, name)
                patch = dict(patch or {})
                patch.setdefault('metadata', {})
                patch['metadata'] = {**patch['metadata'], 'name': name}
                if ns:
                    patch['metadata']['namespace'] = ns
                result = self._create(rdef, ns, patch, dry_run=dry_run, strict=strict)
                return {**result, '__created__': True}
            new = logic.merge_patch(old, patch)
        else:
            if old is None:
                raise not_found(rdef, name)
            try:
                patch = json.loads(body.decode() or 'null')
            except ValueError as e:
                raise bad_request(f'error decoding patch: {e}') from None
            if sub == 'scale':
                scale = logic.merge_patch(self._scale_view(rdef, old), patch)
                return self._update_scale(rdef, ns, name, scale, dry_run)
            try:
                if ctype == 'application/json-patch+json':
                    new = logic.json_patch(old, patch)
                elif ctype == 'application/merge-patch+json':
                    new = logic.merge_patch(old, patch)
                elif ctype == 'application/strategic-merge-patch+json':
                    if rdef.crd:
                        raise ApiError(415, 'UnsupportedMediaType',
                                       'the body of the request was in an unknown format - accepted media types include: '
                                       'application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml')
                    new = logic.strategic_merge_patch(old, patch)
                else:
                    raise ApiError(415, 'UnsupportedMediaType',
                                   'the body of the request was in an unknown format - accepted media types include: '
                                   'application/json-patch+json, application/merge-patch+json, '
                                   'application/apply-patch+yaml, application/strategic-merge-patch+json')
            except logic.PatchError as e:
                if e.code == 400:
                    raise bad_request(str(e)) from None
                raise ApiError(422, 'Invalid', str(e), {}) from None
        if not isinstance(new, dict):
            raise bad_request('the patch must produce an object')
        rv = (new.get('metadata') or {}).get('resourceVersion')
        if rv and rv != old['metadata'].get('resourceVersion'):
            raise conflict(rdef, name)
        return self._update(rdef, ns, name, old, new, sub, dry_run=dry_run, strict=strict)

    def _delete(self, rdef: ResourceDef, ns: str | None, name: str, options: dict[str, Any], *,
                dry_run: bool = False) -> dict[str, Any]:
        old = self._get(rdef, ns, name)
        if rdef.gp == ('', 'namespaces') and name in ('default', 'kube-system', 'kube-public'):
            raise ApiError(403, 'Forbidden', f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                           _details(rdef, name))
        pre = options.get('preconditions') or {}
        if pre.get('resourceVersion') and pre['resourceVersion'] != old['metadata'].get('resourceVersion'):
            raise conflict(rdef, name)
        if pre.get('uid') and pre['uid'] != old['metadata'].get('uid'):
            raise conflict(rdef, name)
        if dry_run:
            return _as_version(rdef, old)
        orphan = options.get('propagationPolicy') == 'Orphan' or options.get('orphanDependents') is True
        if old['metadata'].get('finalizers'):
            if old['metadata'].get('deletionTimestamp'):
                return _as_version(rdef, old)
            new = {**old, 'metadata': {**old['metadata'], 'deletionTimestamp': logic.now_rfc3339(),
                                       'deletionGracePeriodSeconds': 0}}
            if rdef.generation:
                new['metadata']['generation'] = int(old['metadata'].get('generation', 0)) + 1
            self._commit(rdef, ns, name, new, 'MODIFIED')
            if orphan:
                self._lab.orphans.add(old['metadata']['uid'])
            return _as_version(rdef, self._lab.store[rdef.gp][(ns, name)])
        if orphan:
            self._lab.orphans.add(old['metadata']['uid'])
        final = self._remove(rdef, ns, name)
        return _as_version(rdef, final)

    def _delete_collection(self, rdef: ResourceDef, ns: str | None, params: dict[str, str]) -> dict[str, Any]:
        items = list(self._select(rdef, ns, params))
        for obj in items:
            with contextlib.suppress(ApiError):
                self._delete(rdef, obj['metadata'].get('namespace'), obj['metadata']['name'], {})
        return {'kind': rdef.list_kind, 'apiVersion': rdef.api_version,
                'metadata': {'resourceVersion': str(self._lab.rv)}, 'items': items}

    # ---------------------------------------------------------------------------------- admission
    def _admit(self, rdef: ResourceDef, obj: dict[str, Any], old: dict[str, Any] | None, *,
               strict: bool = False) -> dict[str, Any]:
        """Defaults, pruning, validation; returns the object to store (no resourceVersion yet)."""
        obj['apiVersion'] = rdef.api_version
        obj['kind'] = rdef.kind
        name = obj['metadata'].get('name', '')
        meta = obj['metadata']
        if not isinstance(meta.get('labels', {}), dict) or not isinstance(meta.get('annotations', {}), dict):
            raise invalid(rdef, name, [{'reason': 'FieldValueTypeInvalid', 'field': 'metadata',
                                        'message': 'Invalid value: labels and annotations must be maps of strings'}])
        for fname in ('labels', 'annotations'):
            for k, v in (meta.get(fname) or {}).items():
                if not isinstance(v, str):
                    raise invalid(rdef, name, [{'reason': 'FieldValueTypeInvalid', 'field': f'metadata.{fname}.{k}',
                                                'message': f'Invalid value: {logic._fmt(v)}: must be a string'}])
        if rdef.schema is not None:
            dropped: list[str] = []
            obj = logic.prune_and_default(obj, rdef.schema, '', dropped, root=True)
            if strict and dropped:
                texts = ', '.join(f'unknown field "{d}"' for d in dropped)
                raise bad_request(f'{rdef.kind} in version "{rdef.version}" cannot be handled as a '
                                  f'{rdef.kind}: strict decoding error: {texts}')
            causes = logic.validate(obj, rdef.schema, '', root=True)
            if causes:
                raise invalid(rdef, name, causes)
        try:  # decoding into the built-in type (400) and kube's validation rules (422)
            obj, causes = validation.admit(rdef, obj, strict=strict)
        except validation.DecodeError as e:
            raise bad_request(str(e)) from None
        if causes:
            raise invalid(rdef, name, causes)
        hook = getattr(self, f'_admit_{rdef.kind.lower()}', None)
        if hook is not None and rdef.group in ('', 'apps', 'apiextensions.k8s.io'):
            obj = hook(rdef, obj, old)
        return obj

    def _admit_deployment(self, rdef: ResourceDef, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        spec = obj['spec'] = dict(obj.get('spec') or {})
        spec.setdefault('replicas', 1)
        spec.setdefault('revisionHistoryLimit', 10)
        spec.setdefault('progressDeadlineSeconds', 600)
        spec.setdefault('strategy', {'type': 'RollingUpdate', 'rollingUpdate': {'maxUnavailable': '25%', 'maxSurge': '25%'}})
        causes = []
        if not isinstance(spec.get('selector'), dict):
            causes.append({'reason': 'FieldValueRequired', 'field': 'spec.selector', 'message': 'Required value'})
        else:
            want = (spec['selector'].get('matchLabels') or {})
            have = ((spec.get('template') or {}).get('metadata') or {}).get('labels') or {}
            if any(have.get(k) != v for k, v in want.items()):
                causes.append({'reason': 'FieldValueInvalid', 'field': 'spec.template.metadata.labels',
                               'message': f'Invalid value: {json.dumps(have)}: `selector` does not match template `labels`'})
        if causes:
            raise invalid(rdef, obj['metadata']['name'], causes)
        return obj

    def _admit_service(self, rdef: ResourceDef, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        spec = obj['spec'] = dict(obj.get('spec') or {})
        spec.setdefault('type', 'ClusterIP')
        spec.setdefault('sessionAffinity', 'None')
        if 'clusterIP' not in spec:
            ip = (old or {}).get('spec', {}).get('clusterIP')
            if ip is None:
                self._lab.ip_counter += 1
                n = self._lab.ip_counter
                ip = f'10.96.{(n // 250) % 250}.{n % 250 + 2}'
            spec['clusterIP'] = ip
            spec['clusterIPs'] = [ip]
        spec['ports'] = [{'protocol': 'TCP', 'targetPort': p.get('port'), **p} if isinstance(p, dict) else p
                         for p in spec.get('ports') or []]
        return obj

    def _admit_namespace(self, rdef: ResourceDef, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        meta = obj['metadata']
        meta['labels'] = {**(meta.get('labels') or {}), 'kubernetes.io/metadata.name': meta['name']}
        obj.setdefault('spec', {'finalizers': ['kubernetes']})
        if old is None:
            obj['status'] = {'phase': 'Active'}
        return obj

    def _admit_secret(self, rdef: ResourceDef, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        if obj.get('stringData'):
            data = dict(obj.get('data') or {})
            for k, v in obj.pop('stringData').items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            obj['data'] = data
        obj.setdefault('type', 'Opaque')
        return obj

    def _admit_customresourcedefinition(self, rdef: ResourceDef, obj: dict[str, Any],
                                        old: dict[str, Any] | None) -> dict[str, Any]:
        spec = obj.get('spec') or {}
        names = spec.get('names') or {}
        group = spec.get('group')
        plural = names.get('plural')
        causes = []
        if not group:
            causes.append({'reason': 'FieldValueRequired', 'field': 'spec.group', 'message': 'Required value'})
        if not plural:
            causes.append({'reason': 'FieldValueRequired', 'field': 'spec.names.plural', 'message': 'Required value'})
        if not names.get('kind'):
            causes.append({'reason': 'FieldValueRequired', 'field': 'spec.names.kind', 'message': 'Required value'})
        if group and plural and obj['metadata']['name'] != f'{plural}.{group}':
            causes.append({'reason': 'FieldValueInvalid', 'field': 'metadata.name',
                           'message': f'Invalid value: "{obj["metadata"]["name"]}": must be spec.names.plural+"."+spec.group'})
        if not spec.get('versions'):
            causes.append({'reason': 'FieldValueRequired', 'field': 'spec.versions', 'message': 'Required value: must have exactly one version marked as storage version'})
        if causes:
            raise invalid(rdef, obj['metadata']['name'], causes)
        return obj

    def _crd_established(self, crd: dict[str, Any]) -> dict[str, Any]:
        """Register the CRD's resources and set its status (as the apiextensions controllers do)."""
        spec = crd['spec']
        names = dict(spec['names'])
        names.setdefault('singular', names['kind'].lower())
        names.setdefault('listKind', f'{names["kind"]}List')
        crd_name = crd['metadata']['name']
        self._unregister_crd(crd_name)
        storage = None
        for v in spec.get('versions', []):
            if v.get('storage'):
                storage = v['name']
            if not v.get('served', True):
                continue
            subs = v.get('subresources') or {}
            self._register(ResourceDef(
                group=spec['group'], version=v['name'], plural=names['plural'], kind=names['kind'],
                namespaced=spec.get('scope', 'Namespaced') == 'Namespaced', singular=names['singular'],
                short_names=list(names.get('shortNames') or []), categories=list(names.get('categories') or []),
                list_kind=names['listKind'], status='status' in subs, scale=False, generation=True,
                schema=(v.get('schema') or {}).get('openAPIV3Schema') or {'type': 'object',
                                                                         'x-kubernetes-preserve-unknown-fields': True},
                printer_columns=list(v.get('additionalPrinterColumns') or []), crd=crd_name))
        now = logic.now_rfc3339()
        status = {
            'conditions': [
                {'type': 'NamesAccepted', 'status': 'True', 'reason': 'NoConflicts', 'message': 'no conflicts found',
                 'lastTransitionTime': now},
                {'type': 'Established', 'status': 'True', 'reason': 'InitialNamesAccepted',
                 'message': 'the initial names have been accepted', 'lastTransitionTime': now},
            ],
            'acceptedNames': names,
            'storedVersions': [storage] if storage else [],
        }
        old_status = crd.get('status') or {}
        if old_status.get('acceptedNames') == names and old_status.get('storedVersions') == status['storedVersions']:
            return crd
        crdef = self._lab.defs[('apiextensions.k8s.io', 'v1', 'customresourcedefinitions')]
        new = {**crd, 'status': status}
        self._commit(crdef, None, crd_name, new, 'MODIFIED')
        return self._lab.store[crdef.gp][(None, crd_name)]

    # ---------------------------------------------------------------------------------- scale
    def _scale_view(self, rdef: ResourceDef, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj['metadata']
        sel = ((obj.get('spec') or {}).get('selector') or {}).get('matchLabels') or {}
        return {'kind': 'Scale', 'apiVersion': 'autoscaling/v1',
                'metadata': {k: meta[k] for k in ('name', 'namespace', 'uid', 'resourceVersion', 'creationTimestamp') if k in meta},
                'spec': {'replicas': (obj.get('spec') or {}).get('replicas', 0)},
                'status': {'replicas': (obj.get('status') or {}).get('replicas', 0),
                           'selector': ','.join(f'{k}={v}' for k, v in sel.items())}}

    def _update_scale(self, rdef: ResourceDef, ns: str | None, name: str, scale: Any, dry_run: bool) -> dict[str, Any]:
        old = self._get(rdef, ns, name)
        if not isinstance(scale, dict):
            raise bad_request('the body of the request was in an unknown format')
        rv = (scale.get('metadata') or {}).get('resourceVersion')
        if rv and rv != old['metadata'].get('resourceVersion'):
            raise conflict(rdef, name)
        replicas = (scale.get('spec') or {}).get('replicas', 0)
        new = {**old, 'spec': {**(old.get('spec') or {}), 'replicas': replicas}}
        self._update(rdef, ns, name, old, new, None, dry_run=dry_run)
        return self._scale_view(rdef, self._lab.store[rdef.gp].get((ns, name), new))

    # ---------------------------------------------------------------------------------- storage & events
    def _commit(self, rdef: ResourceDef, ns: str | None, name: str, obj: dict[str, Any], etype: str) -> None:
        st = self._lab
        st.rv += 1
        obj['metadata'] = {**obj['metadata'], 'resourceVersion': str(st.rv)}
        st.store[rdef.gp][(ns, name)] = obj
        st.uids[obj['metadata']['uid']] = (rdef, ns, name)
        self._emit(_Event(st.rv, rdef.gp, etype, obj))

    def _remove(self, rdef: ResourceDef, ns: str | None, name: str) -> dict[str, Any]:
        st = self._lab
        old = st.store[rdef.gp].pop((ns, name))
        st.rv += 1
        final = {**old, 'metadata': {**old['metadata'], 'resourceVersion': str(st.rv)}}
        uid = old['metadata'].get('uid')
        st.uids.pop(uid, None)
        self._emit(_Event(st.rv, rdef.gp, 'DELETED', final))
        if rdef.gp == ('apiextensions.k8s.io', 'customresourcedefinitions'):
            self._drop_crd(final)
        if rdef.gp == ('', 'namespaces'):
            self._drop_namespace(name)
        if uid:
            asyncio.get_running_loop().call_soon(self._collect_garbage, uid)
        return final

    def _emit(self, event: _Event) -> None:
        st = self._lab
        st.history.append(event)
        if len(st.history) == st.history.maxlen:
            st.floor = st.history[0].rv - 1
        for watcher in st.watchers.get(event.gp, ()):
            watcher.put_nowait(event)

    def _collect_garbage(self, owner_uid: str) -> None:
        """Background cascading deletion of dependents (or orphaning them)."""
        st = self._lab
        orphan = owner_uid in st.orphans
        st.orphans.discard(owner_uid)
        for (group, plural), objs in list(st.store.items()):
            rdef = next((r for r in st.defs.values() if r.gp == (group, plural)), None)
            if rdef is None:
                continue
            for (ns, name), obj in list(objs.items()):
                refs = obj['metadata'].get('ownerReferences') or []
                if not any(r.get('uid') == owner_uid for r in refs):
                    continue
                remaining = [r for r in refs if r.get('uid') != owner_uid]
                try:
                    if orphan or any(r.get('uid') in st.uids for r in remaining):
                        new = {**obj, 'metadata': {**obj['metadata'], 'ownerReferences': remaining}}
                        if not remaining:
                            del new['metadata']['ownerReferences']
                        self._update(rdef, ns, name, obj, new, None)
                    else:
                        self._delete(rdef, ns, name, {})
                except ApiError:  # pragma: no cover
                    logger.debug('GC of %s/%s failed', ns, name, exc_info=True)

    def _drop_crd(self, crd: dict[str, Any]) -> None:
        st = self._lab
        spec = crd.get('spec') or {}
        gp = (spec.get('group'), (spec.get('names') or {}).get('plural'))
        rdef = next((r for r in st.defs.values() if r.crd == crd['metadata']['name']), None)
        self._unregister_crd(crd['metadata']['name'])
        if rdef is not None:
            for (ns, name) in list(st.store.get(gp, {})):
                self._remove(rdef, ns, name)

    def _drop_namespace(self, ns_name: str) -> None:
        st = self._lab
        for rdef in list(st.defs.values()):
            if not rdef.namespaced:
                continue
            for (ns, name) in list(st.store.get(rdef.gp, {})):
                if ns == ns_name and (ns, name) in st.store[rdef.gp]:
                    with contextlib.suppress(ApiError):
                        self._delete(rdef, ns, name, {})

    # ---------------------------------------------------------------------------------- watching
    async def _serve_watch(self, rdef: ResourceDef, ns: str | None, name: str | None, request: Request,
                           raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        st = self._lab
        params = dict(request.params)
        if name is not None:  # /…/plural/name?watch=true (old style): the same as a field selector
            params['fieldSelector'] = ','.join(filter(None, [params.get('fieldSelector'), f'metadata.name={name}']))
        try:
            lreqs = logic.parse_label_selector(params.get('labelSelector'))
            freqs = logic.parse_field_selector(params.get('fieldSelector'))
        except logic.SelectorError as e:
            raise bad_request(str(e)) from None
        accept = raw.headers.get('Accept', '')
        timeout = float(params['timeoutSeconds']) if params.get('timeoutSeconds') else None
        rv_text = params.get('resourceVersion') or ''
        bookmarks = params.get('allowWatchBookmarks') == 'true'

        def matches(obj: dict[str, Any]) -> bool:
            meta = obj['metadata']
            if ns is not None and meta.get('namespace') != ns:
                return False
            if lreqs and not logic.match_labels(lreqs, meta.get('labels')):
                return False
            if freqs and not logic.match_fields(freqs, obj):
                return False
            return True

        # Everything below until the first await is atomic: no events can be missed or duplicated.
        queue: asyncio.Queue[Any] = asyncio.Queue()
        initial: list[bytes] = []
        gone = False
        if params.get('sendInitialEvents') == 'true' or rv_text in ('', '0'):
            for obj in self._select(rdef, ns, params):
                initial.append(self._encode_event(rdef, 'ADDED', obj, accept, params))
            if params.get('sendInitialEvents') == 'true':  # the WatchList protocol: mark the end of the state
                bm = {'type': 'BOOKMARK', 'object': {
                    'kind': rdef.kind, 'apiVersion': rdef.api_version,
                    'metadata': {'resourceVersion': str(st.rv), 'annotations': {'k8s.io/initial-events-end': 'true'}}}}
                initial.append(json.dumps(bm).encode() + b'\n')
        else:
            try:
                since = int(rv_text)
            except ValueError:
                raise bad_request(f'invalid resource version: {rv_text!r}') from None
            if since < st.floor:
                gone = True
            else:
                for event in st.history:
                    if event.rv > since and event.gp == rdef.gp and matches(event.obj):
                        initial.append(self._encode(rdef, event, accept, params))
        if not gone:
            st.watchers.setdefault(rdef.gp, set()).add(queue)
            st.watch_params[queue] = {**request.params, 'namespace': ns or '', 'name': name or ''}

        response = aiohttp.web.StreamResponse(status=200, headers={'Content-Type': 'application/json',
                                                                   'Cache-Control': 'no-cache, private'})
        response.enable_chunked_encoding()
        try:
            await response.prepare(raw)
            if gone:
                status = ApiError(410, 'Expired', f'too old resource version: {rv_text} ({st.floor + 1})').status()
                await response.write(json.dumps({'type': 'ERROR', 'object': status}).encode() + b'\n')
                return response
            for chunk in initial:
                await response.write(chunk)
            deadline = None if timeout is None else time.monotonic() + timeout
            last_bookmark = time.monotonic()
            while True:
                wait = 5.0 if deadline is None else min(5.0, deadline - time.monotonic())
                if wait <= 0:
                    break
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=wait)
                except asyncio.TimeoutError:
                    if raw.transport is None or raw.transport.is_closing():
                        break
                    if bookmarks and time.monotonic() - last_bookmark > 50:
                        last_bookmark = time.monotonic()
                        bm = {'type': 'BOOKMARK', 'object': {'kind': rdef.kind, 'apiVersion': rdef.api_version,
                                                             'metadata': {'resourceVersion': str(st.rv)}}}
                        await response.write(json.dumps(bm).encode() + b'\n')
                    continue
                if event is _STOP:
                    break
                if matches(event.obj):
                    await response.write(self._encode(rdef, event, accept, params))
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            st.watchers.get(rdef.gp, set()).discard(queue)
            st.watch_params.pop(queue, None)
        with contextlib.suppress(Exception):
            await response.write_eof()
        return response

    def _encode(self, rdef: ResourceDef, event: _Event, accept: str, params: dict[str, str]) -> bytes:
        if 'as=Table' in accept or 'as=PartialObjectMetadata' in accept:
            return self._encode_event(rdef, event.type, event.obj, accept, params)
        return event.encoded(rdef.api_version)

    def _encode_event(self, rdef: ResourceDef, etype: str, obj: dict[str, Any], accept: str,
                      params: dict[str, str]) -> bytes:
        if 'as=Table' in accept:
            payload = self._table(rdef, [obj], params, obj['metadata'].get('resourceVersion', ''))
        elif 'as=PartialObjectMetadata' in accept:
            payload = _partial(obj)
        else:
            payload = _as_version(rdef, obj)
        return json.dumps({'type': etype, 'object': payload}, separators=(',', ':')).encode() + b'\n'

    def stop_watchers(self) -> None:
        for queues in self._lab.watchers.values():
            for q in list(queues):
                q.put_nowait(_STOP)

    # ---------------------------------------------------------------------------------- in-process API
    def find_def(self, api_version: str, plural: str) -> ResourceDef | None:
        group, _, version = api_version.rpartition('/')
        return self._find_def(group, version, plural)


@dataclasses.dataclass
class _LabState:
    history: int = 20000
    rv: int = 0
    floor: int = 0
    requests: int = 0
    ip_counter: int = 0
    discovery_rv: int = 0
    defs: dict[tuple[str, str, str], ResourceDef] = dataclasses.field(default_factory=dict)
    store: dict[tuple[str, str], dict[tuple[str | None, str], dict[str, Any]]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(dict))
    uids: dict[str, tuple[ResourceDef, str | None, str]] = dataclasses.field(default_factory=dict)
    orphans: set[str] = dataclasses.field(default_factory=set)
    watchers: dict[tuple[str, str], set[asyncio.Queue[Any]]] = dataclasses.field(default_factory=dict)
    watch_params: dict[asyncio.Queue[Any], dict[str, str]] = dataclasses.field(default_factory=dict)
    history_q: Any = None
    access: Any = None  # modelrollout_lab.rbac.AccessControl: None serves everyone

    def __post_init__(self) -> None:
        self.history_q = None
        size = self.history
        self.history = collections.deque(maxlen=size)  # type: ignore[assignment]


# --------------------------------------------------------------------------------------------------
# Small helpers.
# --------------------------------------------------------------------------------------------------
def _parse_path(path: str) -> dict[str, Any]:
    segs = [s for s in path.strip('/').split('/') if s]
    result: dict[str, Any] = {}
    if not segs or segs[0] not in ('api', 'apis'):
        return result
    if segs[0] == 'api':
        if len(segs) < 2:
            return result
        result['group'], result['version'], rest = '', segs[1], segs[2:]
    else:
        if len(segs) < 2:
            return result
        result['group'] = segs[1]
        if len(segs) < 3:
            return result
        result['version'], rest = segs[2], segs[3:]
    if len(rest) >= 3 and rest[0] == 'namespaces' and rest[2] not in ('status', 'finalize'):
        result['namespace'], rest = rest[1], rest[2:]
    if rest:
        result['plural'] = rest[0]
    if len(rest) >= 2:
        result['name'] = rest[1]
    if len(rest) >= 3:
        result['subresource'] = '/'.join(rest[2:])
    return result


def _version_priority(version: str) -> tuple[int, int, int]:
    import re
    m = re.match(r'^v(\d+)(?:(alpha|beta)(\d+))?$', version)
    if not m:
        return (3, 0, 0)
    stage = {None: 0, 'beta': 1, 'alpha': 2}[m.group(2)]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0))


def _json_response(data: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=json.dumps(data, separators=(',', ':')).encode(), status=status,
                                content_type='application/json')


def _decode_body(body: bytes, ctype: str) -> Any:
    if 'protobuf' in ctype:
        try:
            return apiserver_protobuf.decode(body)
        except (apiserver_protobuf.UnsupportedProtobuf, IndexError, UnicodeDecodeError) as e:
            raise ApiError(415, 'UnsupportedMediaType', f'the body of the request was in an unknown format - '
                           f'accepted media types include: application/json, application/yaml ({e})') from None
    if 'cbor' in ctype:
        raise ApiError(415, 'UnsupportedMediaType', 'the body of the request was in an unknown format - '
                       'accepted media types include: application/json, application/yaml')
    if not body:
        return {}
    try:
        if 'yaml' in ctype:
            return yaml.safe_load(body.decode())
        return json.loads(body.decode())
    except (ValueError, yaml.YAMLError) as e:
        raise bad_request(f'the body of the request was in an unknown format: {e}') from None


def _as_version(rdef: ResourceDef, obj: dict[str, Any]) -> dict[str, Any]:
    if obj.get('apiVersion') == rdef.api_version and obj.get('kind') == rdef.kind:
        return obj
    return {**obj, 'apiVersion': rdef.api_version, 'kind': rdef.kind}


def _partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/v1', 'metadata': obj['metadata']}


def _spec_part(rdef: ResourceDef, obj: dict[str, Any]) -> dict[str, Any]:
    skip = ('metadata', 'status', 'apiVersion', 'kind') if rdef.status else ('metadata', 'apiVersion', 'kind')
    return {k: v for k, v in obj.items() if k not in skip}


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj['metadata'].items() if k not in ('resourceVersion', 'managedFields')}
    return {**obj, 'metadata': meta}


# --------------------------------------------------------------------------------------------------
# Serving.
# --------------------------------------------------------------------------------------------------
class EmulatedApiServer:
    """The emulated API server on a TCP port (see the module docs)."""

    def __init__(self, *, host: str = '127.0.0.1', port: int = 0, history: int = 20000) -> None:
        self.host = host
        self._port = port
        self.emulator = LabKubernetesEmulator(history=history)
        self.authority = LabAuthority()
        store = self.emulator._lab.store
        self.emulator._lab.access = AccessControl(
            self.authority, Authorizer(lambda plural: list(store[(RBAC_GROUP, plural)].values())))
        self._runner: aiohttp.web.ServerRunner | None = None
        self._site: aiohttp.web.TCPSite | None = None

    async def start(self) -> EmulatedApiServer:
        await self.emulator.__aenter__()
        server = aiohttp.web.Server(self.emulator, access_log=None)
        self._runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        self._site = aiohttp.web.TCPSite(self._runner, self.host, self._port, reuse_address=True,
                                         ssl_context=self.authority.server_ssl_context())
        await self._site.start()
        sockets = self._site._server.sockets if self._site._server else []  # type: ignore[union-attr]
        self._port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.emulator.stop_watchers()
        await asyncio.sleep(0)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(Exception):
            await self.emulator.__aexit__(None, None, None)

    async def __aenter__(self) -> EmulatedApiServer:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f'https://{self.host}:{self._port}'

    @property
    def faults(self) -> lab_faults.Faults:
        """The fault injector (``set(conflict=..., error=..., throttle=..., slow=..., gone_watch=...)``)."""
        return self.emulator.faults  # type: ignore[no-any-return]

    @property
    def resource_version(self) -> int:
        return self.emulator._lab.rv

    def write_kubeconfig(self, path: str | pathlib.Path, *, context: str = 'modelrollout-lab',
                         namespace: str = 'default', user: UserInfo = ADMIN, token: str | None = None,
                         token_file: str | pathlib.Path | None = None) -> pathlib.Path:
        """A kubeconfig trusting the lab CA: a client certificate for `user` (the admin by default),
        or a bearer `token`, or a `token_file` (``tokenFile``: re-read when it is rotated)."""
        if token is not None:
            credentials: dict[str, str] = {'token': token}
        elif token_file is not None:
            credentials = {'tokenFile': str(token_file)}
        else:
            cert = self.authority.client_certificate(user)
            credentials = {'client-certificate-data': base64.b64encode(cert.cert_pem).decode(),
                           'client-key-data': base64.b64encode(cert.key_pem).decode()}
        return write_kubeconfig(path, self.url, self.authority.ca_pem, credentials, context=context,
                                namespace=namespace)

    def issue_token(self, user: str | UserInfo, groups: tuple[str, ...] | list[str] = (), *,
                    ttl: float | None = None) -> str:
        return self.authority.issue_token(user, groups, ttl=ttl)

    def rotate_token(self, token: str) -> str:
        return self.authority.rotate_token(token)

    def get_object(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        rdef = self.emulator.find_def(api_version, plural)
        if rdef is None:
            return None
        obj = self.emulator._lab.store[rdef.gp].get((namespace if rdef.namespaced else None, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list_objects(self, api_version: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        rdef = self.emulator.find_def(api_version, plural)
        if rdef is None:
            return []
        return [copy.deepcopy(o) for o in self.emulator._select(rdef, namespace, {})]

    def open_watches(self, api_version: str, plural: str) -> list[dict[str, str]]:
        """The query parameters (plus ``namespace``, ``name`` of the URL) of the watches being served."""
        rdef = self.emulator.find_def(api_version, plural)
        if rdef is None:
            return []
        st = self.emulator._lab
        return [dict(st.watch_params[q]) for q in list(st.watchers.get(rdef.gp, ())) if q in st.watch_params]


def write_kubeconfig(path: str | pathlib.Path, url: str, ca_pem: bytes, credentials: dict[str, str], *,
                     context: str = 'modelrollout-lab', namespace: str = 'default') -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cluster = {'server': url, 'certificate-authority-data': base64.b64encode(ca_pem).decode()}
    config = {
        'apiVersion': 'v1', 'kind': 'Config', 'preferences': {},
        'clusters': [{'name': context, 'cluster': cluster}],
        'users': [{'name': context, 'user': credentials}],
        'contexts': [{'name': context, 'context': {'cluster': context, 'user': context, 'namespace': namespace}}],
        'current-context': context,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


class ThreadedApiServer:
    """An EmulatedApiServer running in a daemon thread with its own event loop."""

    def __init__(self, server: EmulatedApiServer, loop: asyncio.AbstractEventLoop, thread: threading.Thread,
                 kubeconfig: pathlib.Path | None = None) -> None:
        self.server = server
        self.loop = loop
        self.thread = thread
        self.kubeconfig = kubeconfig

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def write_kubeconfig(self, path: str | pathlib.Path, **kwargs: Any) -> pathlib.Path:
        return self.server.write_kubeconfig(path, **kwargs)

    @property
    def authority(self) -> LabAuthority:
        return self.server.authority

    def issue_token(self, user: str | UserInfo, groups: tuple[str, ...] | list[str] = (), *,
                    ttl: float | None = None) -> str:
        return self.server.issue_token(user, groups, ttl=ttl)

    def rotate_token(self, token: str) -> str:
        return self.server.rotate_token(token)

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float | None = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def open_watches(self, api_version: str, plural: str) -> list[dict[str, str]]:
        async def read() -> list[dict[str, str]]:
            return self.server.open_watches(api_version, plural)
        return self.call(read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        if not self.loop.is_closed() and self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(self.server.stop(), timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)

    def __enter__(self) -> ThreadedApiServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_in_thread(*, host: str = '127.0.0.1', port: int = 0, kubeconfig: str | pathlib.Path | None = None,
                    history: int = 20000) -> ThreadedApiServer:
    loop = asyncio.new_event_loop()
    server = EmulatedApiServer(host=host, port=port, history=history)
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as e:  # pragma: no cover
            failure.append(e)
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    thread = threading.Thread(target=run, name='emulated-apiserver', daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        raise failure[0]
    path = server.write_kubeconfig(kubeconfig) if kubeconfig else None
    return ThreadedApiServer(server, loop, thread, path)


async def _amain(port: int, kubeconfig: str | None, host: str) -> None:
    server = EmulatedApiServer(host=host, port=port)
    await server.start()
    if kubeconfig:
        server.write_kubeconfig(kubeconfig)
    print(f'READY {server.url}', flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m modelrollout_lab.apiserver',
                                     description='The emulated Kubernetes API server of the modelrollout lab.')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0, help='0 picks a free port')
    parser.add_argument('--kubeconfig', default=None, help='write a kubeconfig pointing to the server here')
    parser.add_argument('--log-level', default='WARNING')
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    asyncio.run(_amain(args.port, args.kubeconfig, args.host))
    return 0


if __name__ == '__main__':
    sys.exit(main())
