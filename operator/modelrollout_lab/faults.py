"""Faults the lab API server injects on purpose, at rates a test sets, so tests see what clients see
from a busy or flaky kube-apiserver:

* ``conflict``: 409 Conflict on writes (update, patch), as on a stale resourceVersion;
* ``error``: 500 InternalError;
* ``throttle``: 429 TooManyRequests with ``Retry-After`` (and ``details.retryAfterSeconds``),
  as API Priority and Fairness answers;
* ``slow``: ``(rate, seconds)``: the answer comes that much later (on top of any other fault);
* ``gone_watch``: a watch from a resourceVersion gets the ERROR event ``410 Expired`` (too old
  resource version) and is closed, so the client must list again.

Each rule can be limited to requests whose authenticated identity, User-Agent or body matches a
regular expression, to some verbs (get, list, watch, create, update, patch, delete, deletecollection)
and to some resources (``deployments``, ``modelrollouts/status``, ``httproutes.gateway.networking.k8s.io``):
``body=r'"canaryWeight": 0\b'`` fails only the status writes that record a weight of 0.
Draws come from one seeded generator: the same requests in the same order meet the same faults.
``counts`` says how many of each were injected.

    server.faults.set(conflict=0.1, error=0.05, throttle=0.05, slow=(0.05, 0.5), gone_watch=0.1,
                      user_agent=r'^kopf/', seed=7)
    server.faults.clear()
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import random
import re
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

import aiohttp.web

__all__ = ['Faults', 'FaultInjection', 'FaultRule', 'kube_verb']

WRITE_VERBS = frozenset({'update', 'patch'})


class _Resource(Protocol):
    group: str
    plural: str
    group_resource: str


@dataclasses.dataclass(frozen=True)
class FaultRule:
    conflict: float = 0.0
    error: float = 0.0
    throttle: float = 0.0
    slow: tuple[float, float] | None = None  # (rate, seconds)
    gone_watch: float = 0.0
    retry_after: int = 1
    identity: str | None = None  # a regex searched in the authenticated user name
    user_agent: str | None = None  # a regex searched in the User-Agent header
    body: str | None = None  # a regex searched in the request body (a write's object or patch)
    verbs: frozenset[str] | None = None
    resources: frozenset[str] | None = None

    def applies(self, verb: str, rdef: _Resource, subresource: str | None, user_agent: str,
                identity: Callable[[], str | None], body: bytes) -> bool:
        if self.verbs is not None and verb not in self.verbs:
            return False
        if self.resources is not None:
            plural = f'{rdef.plural}/{subresource}' if subresource else rdef.plural
            names = {plural, rdef.plural, f'{plural}.{rdef.group}' if rdef.group else plural, rdef.group_resource}
            if not names & self.resources:
                return False
        if self.user_agent is not None and not re.search(self.user_agent, user_agent):
            return False
        if self.body is not None and not re.search(self.body, body.decode(errors='replace')):
            return False
        if self.identity is not None and not re.search(self.identity, identity() or ''):
            return False
        return True


def kube_verb(method: str, name: str | None, params: Mapping[str, str]) -> str:
    """The verb kube-apiserver's authorizer would see for this request."""
    method = method.upper()
    if method == 'GET':
        if params.get('watch') in ('true', '1'):
            return 'watch'
        return 'get' if name else 'list'
    if method == 'DELETE':
        return 'delete' if name else 'deletecollection'
    return {'POST': 'create', 'PUT': 'update', 'PATCH': 'patch'}.get(method, method.lower())


class Faults:
    """The server's fault injector: no faults until ``set`` is called."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rules: list[FaultRule] = []
        self.counts: collections.Counter[str] = collections.Counter()

    def set(self, *, conflict: float = 0.0, error: float = 0.0, throttle: float = 0.0,
            slow: tuple[float, float] | None = None, gone_watch: float = 0.0, retry_after: int = 1,
            identity: str | None = None, user_agent: str | None = None, body: str | None = None,
            verbs: Collection[str] | None = None, resources: Collection[str] | None = None,
            seed: int | None = None) -> FaultRule:
        """Replace the rules with this one (``add`` keeps the others); reseed when ``seed`` is given."""
        with self._lock:
            self._rules = []
            if seed is not None:
                self._rng.seed(seed)
        return self.add(conflict=conflict, error=error, throttle=throttle, slow=slow, gone_watch=gone_watch,
                        retry_after=retry_after, identity=identity, user_agent=user_agent, body=body, verbs=verbs,
                        resources=resources)

    def add(self, *, conflict: float = 0.0, error: float = 0.0, throttle: float = 0.0,
            slow: tuple[float, float] | None = None, gone_watch: float = 0.0, retry_after: int = 1,
            identity: str | None = None, user_agent: str | None = None, body: str | None = None,
            verbs: Collection[str] | None = None, resources: Collection[str] | None = None) -> FaultRule:
        for rate in (conflict, error, throttle, gone_watch, *(slow[:1] if slow else ())):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f'a fault rate is a probability in [0, 1], not {rate}')
        rule = FaultRule(conflict=conflict, error=error, throttle=throttle, slow=slow, gone_watch=gone_watch,
                         retry_after=retry_after, identity=identity, user_agent=user_agent, body=body,
                         verbs=frozenset(verbs) if verbs is not None else None,
                         resources=frozenset(resources) if resources is not None else None)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def draw(self, verb: str, rdef: _Resource, subresource: str | None, user_agent: str,
             identity: Callable[[], str | None], body: bytes, *,
             has_resource_version: bool) -> tuple[float, str | None, int]:
        """(delay in seconds, the fault to answer with or None, its Retry-After) for one request."""
        delay, fault, retry_after = 0.0, None, 1
        with self._lock:
            for rule in self._rules:
                if not rule.applies(verb, rdef, subresource, user_agent, identity, body):
                    continue
                if rule.slow and self._rng.random() < rule.slow[0]:
                    delay = max(delay, rule.slow[1])
                    self.counts['slow'] += 1
                if fault is not None:
                    continue
                candidates = [('error', rule.error), ('throttle', rule.throttle)]
                if verb in WRITE_VERBS:
                    candidates.insert(0, ('conflict', rule.conflict))
                if verb == 'watch' and has_resource_version:
                    candidates.insert(0, ('gone_watch', rule.gone_watch))
                for kind, rate in candidates:
                    if rate and self._rng.random() < rate:
                        fault, retry_after = kind, rule.retry_after
                        self.counts[kind] += 1
                        break
        return delay, fault, retry_after

    async def intercept(self, method: str, rdef: _Resource, name: str | None, subresource: str | None,
                        params: Mapping[str, str], headers: Mapping[str, str],
                        identity: Callable[[], str | None], body: bytes) -> aiohttp.web.StreamResponse | None:
        """The server's hook: sleeps for a slow answer; returns the faulty answer, or None to serve."""
        if not self._rules:
            return None
        verb = kube_verb(method, name, params)
        rv = params.get('resourceVersion') or ''
        delay, fault, retry_after = self.draw(verb, rdef, subresource, headers.get('User-Agent', ''), identity, body,
                                              has_resource_version=rv not in ('', '0'))
        if delay:
            await asyncio.sleep(delay)
        if fault is None:
            return None
        if fault == 'gone_watch':  # what a watch from a compacted resourceVersion gets: 200, one ERROR event
            event = {'type': 'ERROR', 'object': _status(410, 'Expired', f'too old resource version: {rv} ({rv})')}
            return aiohttp.web.Response(body=json.dumps(event).encode() + b'\n', status=200,
                                        content_type='application/json')
        if fault == 'conflict':
            status = _status(409, 'Conflict', f'Operation cannot be fulfilled on {rdef.group_resource} "{name}": the '
                             'object has been modified; please apply your changes to the latest version and try again',
                             {'name': name, 'group': rdef.group, 'kind': rdef.plural})
            return _response(status)
        if fault == 'throttle':
            status = _status(429, 'TooManyRequests', 'Too many requests, please try again later.',
                             {'retryAfterSeconds': retry_after})
            return _response(status, {'Retry-After': str(retry_after)})
        status = _status(500, 'InternalError', 'Internal error occurred: injected by the lab (faults.error)',
                         {'causes': [{'message': 'injected by the lab (faults.error)'}]})
        return _response(status)


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                              'message': message, 'reason': reason, 'code': code}
    if details is not None:
        status['details'] = {k: v for k, v in details.items() if v}
    return status


def _response(status: dict[str, Any], headers: Mapping[str, str] | None = None) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=json.dumps(status).encode(), status=status['code'],
                                content_type='application/json', headers=dict(headers or {}))


class FaultInjection:
    """
    A request-handling layer of the lab's API server (a mixin before kmock's ``_handle``): answers
    a request to a served resource with the fault its ``faults`` rules draw, or delays it.

    Not kube-apiserver behaviour but what clients meet on a busy or flaky one (see the module
    docs). Could be offered upstream to kmock as a fault-injection helper: kmock's DSL can already
    answer a matching request with a status, but not at a seeded rate, per identity, or as a
    watch's 410.
    """

    faults: Faults

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        rdef = self._served_resource(request)  # type: ignore[attr-defined]
        raw = request._raw_request
        if rdef is not None and raw is not None:
            injected = await self.faults.intercept(
                request.method.value, rdef, request.name, request.subresource, request.params, raw.headers,
                lambda: authenticated_name(self.access_control, raw),  # type: ignore[attr-defined]
                request.body)
            if injected is not None:
                return injected
        return await super()._handle(request)  # type: ignore[misc, no-any-return]


def authenticated_name(access: Any, raw: aiohttp.web.BaseRequest) -> str | None:
    """The user name the server's authenticator (``modelrollout_lab.auth``) gives this request, if any."""
    authority = getattr(access, 'authority', None)
    if authority is None:
        return None
    ssl_object = raw.transport.get_extra_info('ssl_object') if raw.transport else None
    try:
        return str(authority.authenticate(raw.headers, ssl_object.getpeercert() if ssl_object else None).name)
    except Exception:  # noqa: BLE001 - unauthenticated requests were already refused; no name, no match
        return None
