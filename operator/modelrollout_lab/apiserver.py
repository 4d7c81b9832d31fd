"""
An emulated Kubernetes API server for the local lab, built on kmock's ``KubernetesEmulator``.

Real clients (kubectl, the kubernetes Python client, kopf) talk to it over HTTPS on 127.0.0.1
(a lab CA) and should not be able to tell it from kube-apiserver for what the project uses:
every request is authenticated (client certificate or bearer token, ``modelrollout_lab.auth``)
and authorized against the stored RBAC objects (``modelrollout_lab.rbac``).

kmock parses each request, logs it, routes it through its reactions (the DSL, then the fallbacks
it registers per Kubernetes action) and keeps the objects (``emulator.objects``). The lab's
strictness comes as layers, one class each, combined in :class:`LabKubernetesEmulator`:

- :class:`AccessControlLayer` (here): authentication and RBAC;
- :class:`~modelrollout_lab.faults.FaultInjection`: faults at rates a test sets;
- :class:`~modelrollout_lab.apiserver_watch.Watches`: watches from a resourceVersion, 410, bookmarks;
- :class:`~modelrollout_lab.apiserver_gc.Deletion`: finalizers, owner-reference GC, namespaces;
- :class:`~modelrollout_lab.apiserver_admission.Admission`: defaulting, pruning, validation;
- :class:`~modelrollout_lab.apiserver_subresources.Subresources`: ``/status`` and ``/scale``;
- :class:`~modelrollout_lab.apiserver_selectors.Selectors`: label and field selectors;
- :class:`~modelrollout_lab.apiserver_discovery.ResourceRegistry`: discovery, OpenAPI, CRDs;
- :class:`~modelrollout_lab.apiserver_storage.ObjectStorage`: resourceVersion, uid and the event
  log on kmock's store.

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
    the server's loop), ``request_counts()`` (requests served by (client, verb, resource)),
    ``status_fields(api_version, plural, fields)`` (a few status fields of every object, by
    (namespace, name), read without a request), ``stop()``; also a (sync) context manager.
``ProcessApiServer(start_timeout=30.0)``
    the same server in a process of its own (as kube-apiserver is; the scale benchmark uses it),
    with the handle's methods that need no live object: ``.url``, ``.port``, ``write_kubeconfig``,
    ``issue_token``, ``rotate_token``, ``open_watches``, ``request_counts``, ``status_fields``, ``stop()``.
``LabKubernetesEmulator``
    the kmock handler itself (a ``kmock.KubernetesEmulator`` subclass); ``.objects`` is kmock's store.
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
import json
import logging
import multiprocessing
import pathlib
import random
import re
import signal
import sys
import threading
import traceback
import uuid
from collections.abc import Coroutine
from typing import Any

import aiohttp.web
import attrs
import yaml
from kmock import K8sCriteria, KubernetesEmulator, Request, Response, method
from kmock._internal import parsing as kmock_parsing
from kmock._internal import references

from modelrollout_lab import apiserver_logic as logic
from modelrollout_lab import faults as lab_faults
from modelrollout_lab.apiserver_admission import Admission
from modelrollout_lab.apiserver_discovery import ResourceRegistry
from modelrollout_lab.apiserver_gc import Deletion
from modelrollout_lab.apiserver_resources import ApiError, ResourceDef, already_exists, as_version, bad_request, \
    decode_body, header, invalid, json_bytes, no_such_path, not_found, parse_path, partial
from modelrollout_lab.apiserver_selectors import Selectors
from modelrollout_lab.apiserver_storage import ObjectStorage
from modelrollout_lab.apiserver_subresources import Subresources
from modelrollout_lab.apiserver_watch import Watches
from modelrollout_lab.auth import ADMIN, LabAuthority, UserInfo
from modelrollout_lab.rbac import RBAC_GROUP, AccessControl, Authorizer

__all__ = [
    'EmulatedApiServer',
    'ThreadedApiServer',
    'ProcessApiServer',
    'LabKubernetesEmulator',
    'ResourceDef',
    'start_in_thread',
    'main',
]

logger = logging.getLogger(__name__)

_NAME_CHARS = 'bcdfghjklmnpqrstvwxz2456789'
JSON_HEADERS = {'Content-Type': 'application/json'}
KEPT_REQUESTS = 1000  # of each reaction's log of the requests it served (kmock keeps them all for assertions)


class AccessControlLayer:
    """
    Authentication and RBAC authorization in front of kmock's request handling.

    kube-apiserver (with ``--anonymous-auth=false``) answers a request without a valid client
    certificate or bearer token with 401, and one its RBAC rules do not allow with 403; it also
    answers SelfSubjectAccessReviews and SelfSubjectReviews (``kubectl auth can-i|whoami``).
    ``access_control`` (:class:`modelrollout_lab.rbac.AccessControl`) decides; None serves everyone,
    as kmock does. Could be offered upstream to kmock as an authentication hook (the peer
    certificate and headers in, a user or a 401 out) beside its DSL.
    """

    access_control: AccessControl | None = None

    async def _handle(self, request: Request) -> aiohttp.web.StreamResponse:
        access = self.access_control
        raw = request._raw_request
        if access is not None and raw is not None:
            ssl_object = raw.transport.get_extra_info('ssl_object') if raw.transport else None
            answer = access.admit(raw.method, raw.path, parse_path(raw.path), request.params, raw.headers,
                                  ssl_object.getpeercert() if ssl_object else None, request.body)
            if answer is not None:
                return _json_response(answer[1], status=answer[0])
        return await super()._handle(request)  # type: ignore[misc, no-any-return]


class LabKubernetesEmulator(AccessControlLayer, lab_faults.FaultInjection, Watches, Deletion, Admission,
                            Subresources, Selectors, ResourceRegistry, ObjectStorage,
                            KubernetesEmulator):  # type: ignore[misc]
    """
    kmock's KubernetesEmulator with kube-apiserver semantics, layer by layer (see the module docs).

    The verbs are kmock's fallback reactions per action (``_serve_list``, ``_serve_fetch``,
    ``_serve_create``, ``_serve_update`` for PATCH, ``_serve_delete``, ``_serve_watch``) plus
    three kmock has no action for: ``_serve_replace`` (PUT), ``_serve_delete_collection`` and
    ``_serve_unsupported`` (405). kmock's DSL reactions (``emulator['get /something'] << {...}``)
    still come first.
    """

    def __init__(self, *, history: int = 20000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.faults = lab_faults.Faults()  # injected on purpose by tests (modelrollout_lab.faults)
        self.requests_served = 0
        self.requests_by_kind: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._init_storage(history)
        self._init_registry()
        self._init_deletion()
        namespaces = self._find_def('', 'v1', 'namespaces')
        assert namespaces is not None
        now = logic.now_rfc3339()
        for ns in ('default', 'kube-system', 'kube-public', 'kube-node-lease'):
            self._commit(namespaces, None, ns, {
                'apiVersion': 'v1', 'kind': 'Namespace',
                'metadata': {'name': ns, 'uid': str(uuid.uuid4()), 'creationTimestamp': now,
                             'labels': {'kubernetes.io/metadata.name': ns}},
                'spec': {'finalizers': ['kubernetes']}, 'status': {'phase': 'Active'},
            }, 'ADDED')
        self._st.floor = self._st.rv  # events after this are replayable

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback[K8sCriteria(method=method.PUT)] << self._serve_replace
        self.fallback[K8sCriteria(method=method.DELETE, action=None)] << self._serve_delete_collection
        self.fallback['get', re.compile(r'/openapi/v3(/.*)?')] << self._serve_openapi
        self.fallback['get', re.compile(r'/(healthz|livez|readyz)')] << Response(
            headers={'Content-Type': 'text/plain; charset=utf-8'}, payload=b'ok')
        self.fallback[K8sCriteria(action=None)] << self._serve_unsupported

    # ---------------------------------------------------------------------------------- request handling
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """kmock's entry point, except for the requests kmock 0.8 cannot parse (docs/lab-apiserver.md)."""
        body = await raw_request.read()
        if _kmock_parses(raw_request.path, body, raw_request.charset):
            return await super().__call__(raw_request)  # type: ignore[no-any-return]
        request = Request(id=len(self._requests), raw_request=raw_request, url=raw_request.url,
                          method=raw_request.method, params=dict(raw_request.query),
                          headers=dict(raw_request.headers), body=body)
        self._requests.append(request)
        try:
            return await self._handle(request)
        except Exception as e:  # as kmock's __call__ answers a failure
            return await self._render_error(e)

    async def _handle(self, request: Request) -> aiohttp.web.StreamResponse:
        self.requests_served += 1
        if self.requests_served % KEPT_REQUESTS == 0:
            for reaction in self._payloads:
                del reaction._requests[:-KEPT_REQUESTS]
        request = _with_kube_path(request)
        self.requests_by_kind[_kind_of(request)] += 1
        try:
            return await super()._handle(request)
        except ApiError as e:
            logger.debug('%s %s -> %s %s', request.method.value, request.url.path_qs, e.code, e.message)
            return _json_response(e.status(), status=e.code)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        """A bug in the emulator: show it to the client as kube-apiserver's InternalError."""
        logger.error('Emulated API server failed', exc_info=exc)
        err = ApiError(500, 'InternalError', f'Internal error occurred: {exc!r}',
                       {'causes': [{'message': ''.join(traceback.format_exception(exc))}]})
        return _json_response(err.status(), status=500)

    def _served_resource(self, request: Request) -> ResourceDef | None:
        """The resource a request is for, if it is served (with that subresource)."""
        res = request.resource
        if res is None or not res.plural:
            return None
        rdef = self._find_def(res.group or '', res.version or '', res.plural)
        return rdef if rdef is not None and self._serves_subresource(rdef, request.subresource) else None

    def _target(self, request: Request) -> tuple[ResourceDef, str | None, str | None, str | None]:
        """(resource, namespace, name, subresource) of a request; 404 unless served."""
        rdef = self._served_resource(request)
        if rdef is None:
            raise no_such_path()
        return rdef, request.namespace if rdef.namespaced else None, request.name, request.subresource

    # ---------------------------------------------------------------------------------- the verbs (kmock reactions)
    async def _serve_list(self, request: Request) -> Response:
        rdef, ns, _, _ = self._target(request)
        return _ok(self._list(rdef, ns, request.params, header(request, 'Accept')))

    async def _serve_fetch(self, request: Request) -> Response:
        rdef, ns, name, sub = self._target(request)
        assert name is not None
        obj = self._get(rdef, ns, name)
        if sub == 'scale':
            return _ok(self._scale_view(rdef, obj))
        return _ok(self._render_one(rdef, obj, header(request, 'Accept'), request.params))

    async def _serve_create(self, request: Request) -> Response:
        rdef, ns, _, _ = self._target(request)
        params = request.params
        obj = decode_body(request.body, header(request, 'Content-Type'))
        return _ok(self._create(rdef, ns, obj, dry_run=bool(params.get('dryRun')),
                                strict=params.get('fieldValidation') == 'Strict'), status=201)

    async def _serve_replace(self, request: Request) -> Response:
        rdef, ns, name, sub = self._target(request)
        if name is None:
            raise _not_allowed()
        params = request.params
        body = decode_body(request.body, _content_type(request))
        dry = bool(params.get('dryRun'))
        if sub == 'scale':
            return _ok(self._update_scale(rdef, ns, name, body, dry))
        return _ok(self._replace(rdef, ns, name, body, sub, dry_run=dry, strict=params.get('fieldValidation') == 'Strict'))

    async def _serve_update(self, request: Request) -> Response:  # kmock's UPDATE action is a PATCH
        rdef, ns, name, sub = self._target(request)
        assert name is not None
        params = request.params
        result = self._patch(rdef, ns, name, request.body, _content_type(request), sub, dry_run=bool(params.get('dryRun')),
                             strict=params.get('fieldValidation') == 'Strict', force=params.get('force') == 'true')
        return _ok(result, status=201 if result.pop('__created__', False) else 200)

    async def _serve_delete(self, request: Request) -> Response:
        rdef, ns, name, _ = self._target(request)
        assert name is not None
        options = decode_body(request.body, 'application/json') if request.body else {}
        if 'propagationPolicy' in request.params:
            options.setdefault('propagationPolicy', request.params['propagationPolicy'])
        return _ok(self._delete(rdef, ns, name, options or {}, dry_run=bool(request.params.get('dryRun'))))

    async def _serve_delete_collection(self, request: Request) -> Response:
        rdef, ns, _, _ = self._target(request)
        return _ok(self._delete_collection(rdef, ns, request.params))

    async def _serve_unsupported(self, request: Request) -> Response:
        self._target(request)
        raise _not_allowed()

    # ---------------------------------------------------------------------------------- reading
    def _get(self, rdef: ResourceDef, ns: str | None, name: str) -> dict[str, Any]:
        obj = self._stored(rdef, ns, name)
        if obj is None:
            raise not_found(rdef, name)
        return obj

    def _list(self, rdef: ResourceDef, ns: str | None, params: dict[str, str], accept: str) -> dict[str, Any]:
        items = self._select(rdef, ns, params)
        rv = str(self.resource_version)
        if 'as=Table' in accept:
            return self._table(rdef, items, params, rv)
        if 'as=PartialObjectMetadataList' in accept:
            return {'kind': 'PartialObjectMetadataList', 'apiVersion': 'meta.k8s.io/v1', 'metadata': {'resourceVersion': rv},
                    'items': [partial(o) for o in items]}
        av = rdef.api_version
        return {'kind': rdef.list_kind, 'apiVersion': av, 'metadata': {'resourceVersion': rv},
                'items': [o if o.get('apiVersion') == av else {**o, 'apiVersion': av} for o in items]}

    def _render_one(self, rdef: ResourceDef, obj: dict[str, Any], accept: str, params: dict[str, str]) -> dict[str, Any]:
        if 'as=Table' in accept:
            return self._table(rdef, [obj], params, obj['metadata'].get('resourceVersion', ''))
        if 'as=PartialObjectMetadata' in accept:
            return partial(obj)
        return as_version(rdef, obj)

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
                row['object'] = as_version(rdef, obj)
            elif include != 'None':
                row['object'] = partial(obj)
            rows.append(row)
        return {'kind': 'Table', 'apiVersion': 'meta.k8s.io/v1', 'metadata': {'resourceVersion': rv},
                'columnDefinitions': self._columns(rdef), 'rows': rows}

    # ---------------------------------------------------------------------------------- writing
    def _create(self, rdef: ResourceDef, ns: str | None, obj: Any, *, dry_run: bool = False,
                strict: bool = False) -> dict[str, Any]:
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
        if self._stored(rdef, ns, name) is not None:
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
        stored = self._commit(rdef, ns, name, obj, 'ADDED')
        if rdef.gp == ('apiextensions.k8s.io', 'customresourcedefinitions'):
            stored = self._crd_established(stored)
        return as_version(rdef, stored)

    def _replace(self, rdef: ResourceDef, ns: str | None, name: str, body: Any, sub: str | None, *,
                 dry_run: bool = False, strict: bool = False) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request('the body of the request was in an unknown format')
        old = self._get(rdef, ns, name)
        meta = body.get('metadata') or {}
        if not isinstance(meta, dict):
            raise bad_request('metadata must be an object')
        if meta.get('name') not in (None, name):
            raise bad_request(f'the name of the object ({meta.get("name")}) does not match the name on the URL ({name})')
        rv = meta.get('resourceVersion')
        self._check_resource_version(rdef, name, old, rv)
        if not rv and rdef.crd:
            raise invalid(rdef, name, [{'reason': 'FieldValueInvalid', 'field': 'metadata.resourceVersion',
                                        'message': 'Invalid value: 0x0: must be specified for an update'}])
        return self._update(rdef, ns, name, old, body, sub, dry_run=dry_run, strict=strict)

    def _update(self, rdef: ResourceDef, ns: str | None, name: str, old: dict[str, Any], new: dict[str, Any],
                sub: str | None, *, dry_run: bool = False, strict: bool = False) -> dict[str, Any]:
        new = self._split_status(rdef, old, new, sub)
        meta = new['metadata'] = dict(new.get('metadata') or {})
        ometa = old['metadata']
        for key in ('name', 'namespace', 'uid', 'creationTimestamp', 'deletionTimestamp',
                    'deletionGracePeriodSeconds', 'generation', 'resourceVersion'):
            if key in ometa:
                meta[key] = ometa[key]
            else:
                meta.pop(key, None)
        self._check_finalizers(rdef, name, ometa, meta)
        new = self._admit(rdef, new, old, strict=strict and sub != 'status')
        if rdef.generation and _spec_part(rdef, new) != _spec_part(rdef, old):
            new['metadata']['generation'] = int(ometa.get('generation', 0)) + 1
        if _comparable(new) == _comparable(old):
            return as_version(rdef, old)  # a no-op: no new resourceVersion, no event
        if dry_run:
            return new
        stored = self._commit(rdef, ns, name, new, 'MODIFIED')
        if new['metadata'].get('deletionTimestamp') and not new['metadata'].get('finalizers'):
            self._remove(rdef, ns, name)
            return as_version(rdef, stored)
        if rdef.gp == ('apiextensions.k8s.io', 'customresourcedefinitions') and sub != 'status':
            stored = self._crd_established(stored)
        return as_version(rdef, stored)

    def _patch(self, rdef: ResourceDef, ns: str | None, name: str, body: bytes, ctype: str, sub: str | None, *,
               dry_run: bool, strict: bool, force: bool) -> dict[str, Any]:
        old = self._stored(rdef, ns, name)
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
        self._check_resource_version(rdef, name, old, (new.get('metadata') or {}).get('resourceVersion'))
        return self._update(rdef, ns, name, old, new, sub, dry_run=dry_run, strict=strict)



# --------------------------------------------------------------------------------------------------
# Small helpers.
# --------------------------------------------------------------------------------------------------
def _kmock_parses(path: str, body: bytes, charset: str | None) -> bool:
    """Whether kmock 0.8's request parser reads this request (it raises on /api/v1/namespaces and
    on bodies that are not text, such as kubectl's protobuf)."""
    try:
        kmock_parsing.parse_path(path)
        body.decode(charset or 'utf-8')
    except ValueError:
        return False
    return True


def _kind_of(request: Request) -> tuple[str, str, str]:
    """(client, verb, resource[/subresource]) of a request, as an audit log would group it; the client is
    the first word of its User-Agent (modelrollout, kopf, kubectl; OpenAPI-Generator: the lab's own)."""
    client = (request.headers.get('User-Agent') or request.headers.get('user-agent') or '-').split('/')[0]
    verb = request.method.value.lower()
    if verb == 'get':
        verb = 'watch' if request.params.get('watch') == 'true' else 'get' if request.name else 'list'
    plural = request.resource.plural if request.resource is not None else None
    resource = (plural or request.url.path) + (f'/{request.subresource}' if request.subresource else '')
    return client, verb, resource


def _with_kube_path(request: Request) -> Request:
    """The request with its resource, namespace, name and subresource as kube-apiserver reads the path
    (and without a trailing slash: ``/version/`` is ``/version``)."""
    url = request.url
    if len(url.path) > 1 and url.path.endswith('/'):
        url = url.with_path(url.path.rstrip('/') or '/')
    parsed = parse_path(url.path)
    res = request.resource
    current = (res.group, res.version, res.plural) if res is not None else (None, None, None)
    wanted = (parsed.get('group'), parsed.get('version'), parsed.get('plural'))
    params = dict(request.params)
    if params.get('watch') == '1':  # kube reads watch=1 as watch=true; kmock only the latter
        params['watch'] = 'true'
    if url is request.url and current == wanted and params == request.params and (
            request.namespace, request.name, request.subresource) == (
            parsed.get('namespace'), parsed.get('name'), parsed.get('subresource')):
        return request
    path = kmock_parsing.ParsedPath(*wanted, parsed.get('namespace'), parsed.get('name'), parsed.get('subresource'))
    return attrs.evolve(
        request, url=url, params=params, resource=None if wanted[0] is None else references.resource(*wanted),
        namespace=path.namespace, name=path.name, subresource=path.subresource,
        action=kmock_parsing.guess_k8s(path, request.method, params))


def _content_type(request: Request) -> str:
    return (header(request, 'Content-Type') or 'application/json').split(';')[0].strip().lower()


def _ok(data: Any, status: int = 200) -> Response:
    return Response(status=status, headers=JSON_HEADERS, payload=json_bytes(data))


def _not_allowed() -> ApiError:
    return ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')


def _json_response(data: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=json_bytes(data), status=status, content_type='application/json')


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
        emulator = self.emulator
        emulator.access_control = AccessControl(
            self.authority, Authorizer(lambda plural: [obj for _, obj in emulator.objects_of(RBAC_GROUP, plural)]))
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
        return self.emulator.resource_version

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
        obj = self.emulator._stored(rdef, namespace if rdef.namespaced else None, name)
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
        return self.emulator.open_watches(rdef)

    def request_counts(self) -> dict[tuple[str, str, str], int]:
        """Requests served by (client, verb, resource), as an audit log would count them."""
        return dict(self.emulator.requests_by_kind)

    def status_fields(self, api_version: str, plural: str, fields: tuple[str, ...]
                      ) -> dict[tuple[str | None, str], tuple[Any, ...]]:
        """A few top-level status fields of every object, by (namespace, name): what a benchmark
        polls, read without a request (which would load the server it measures)."""
        rdef = self.emulator.find_def(api_version, plural)
        if rdef is None:
            return {}
        return {key: tuple((obj.get('status') or {}).get(f) for f in fields)
                for key, obj in self.emulator.objects_of(rdef.group, rdef.plural)}


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

    def request_counts(self) -> dict[tuple[str, str, str], int]:
        async def read() -> dict[tuple[str, str, str], int]:
            return self.server.request_counts()
        return self.call(read())  # type: ignore[no-any-return]

    def status_fields(self, api_version: str, plural: str, fields: tuple[str, ...]
                      ) -> dict[tuple[str | None, str], tuple[Any, ...]]:
        async def read() -> dict[tuple[str | None, str], tuple[Any, ...]]:
            return self.server.status_fields(api_version, plural, fields)
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


class ProcessApiServer:
    """The emulated API server in a process of its own, as kube-apiserver is: clients never wait on
    the GIL of the process that started it. The handle offers ThreadedApiServer's methods that need
    no live object (kubeconfigs, tokens, request counts, status fields, open watches), through a pipe;
    faults and coroutines need the in-thread server."""

    def __init__(self, start_timeout: float = 30.0) -> None:
        context = multiprocessing.get_context('spawn')  # never fork a process that runs threads
        self._pipe, child = context.Pipe()
        self._lock = threading.Lock()
        self.process = context.Process(target=_serve_in_process, args=(child,), name='emulated-apiserver',
                                       daemon=True)
        self.process.start()
        child.close()
        if not self._pipe.poll(start_timeout):
            self.process.kill()
            raise RuntimeError(f'the emulated API server did not start within {start_timeout:g}s')
        self.url: str = self._pipe.recv()
        self.port = int(self.url.rsplit(':', 1)[1])

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self._pipe.send((method, args, kwargs))
            ok, value = self._pipe.recv()
        if not ok:
            raise RuntimeError(f'emulated API server: {method} failed: {value}')
        return value

    def write_kubeconfig(self, path: str | pathlib.Path, **kwargs: Any) -> pathlib.Path:
        return self._call('write_kubeconfig', path, **kwargs)  # type: ignore[no-any-return]

    def issue_token(self, user: str | UserInfo, groups: tuple[str, ...] | list[str] = (), *,
                    ttl: float | None = None) -> str:
        return self._call('issue_token', user, groups, ttl=ttl)  # type: ignore[no-any-return]

    def rotate_token(self, token: str) -> str:
        return self._call('rotate_token', token)  # type: ignore[no-any-return]

    def open_watches(self, api_version: str, plural: str) -> list[dict[str, str]]:
        return self._call('open_watches', api_version, plural)  # type: ignore[no-any-return]

    def request_counts(self) -> dict[tuple[str, str, str], int]:
        return self._call('request_counts')  # type: ignore[no-any-return]

    def status_fields(self, api_version: str, plural: str, fields: tuple[str, ...]
                      ) -> dict[tuple[str | None, str], tuple[Any, ...]]:
        return self._call('status_fields', api_version, plural, fields)  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(OSError, EOFError):
                self._call('stop')
            self.process.join(timeout=15)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(timeout=5)
        self._pipe.close()

    def __enter__(self) -> ProcessApiServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _serve_in_process(pipe: Any) -> None:
    """The child of ProcessApiServer: the server on its own thread, calls answered from the pipe."""
    api = start_in_thread()
    pipe.send(api.url)
    try:
        while True:
            try:
                method, args, kwargs = pipe.recv()
            except EOFError:  # the parent went away
                return
            if method == 'stop':
                api.stop()
                pipe.send((True, None))
                return
            try:
                pipe.send((True, getattr(api, method)(*args, **kwargs)))
            except Exception as e:  # noqa: BLE001 - told to the caller, which raises it
                pipe.send((False, repr(e)))
    finally:
        api.stop()


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
