"""Watches in the lab's API server: from a resourceVersion, 410 Gone, bookmarks, timeouts."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from kmock import Response
from kmock._internal import rendering

from modelrollout_lab.apiserver_resources import ApiError, ResourceDef, as_version, bad_request, header, partial
from modelrollout_lab.apiserver_storage import Event

_STOP = object()
WATCH_HEADERS = {'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private'}


class Watches:
    """
    Watches as kube-apiserver serves them, as kmock's watch reaction (``_serve_watch``).

    kmock streams the current objects, then every later change of the resource. kube-apiserver
    resumes from ``resourceVersion`` (replaying the changes after it from the event log of
    :class:`~modelrollout_lab.apiserver_storage.ObjectStorage`, or answering an ERROR event
    ``410 Expired`` once it is older than the log), supports ``sendInitialEvents`` with the
    ``k8s.io/initial-events-end`` bookmark, ``allowWatchBookmarks``, ``timeoutSeconds``, label and
    field selectors, and Table/PartialObjectMetadata watches (``kubectl get -w``). Every event is
    serialized once and shared by all watchers. Could be offered upstream to kmock as watch
    resumption (it needs a resourceVersion on every write first).
    """

    def open_watches(self, rdef: ResourceDef) -> list[dict[str, str]]:
        """The query parameters (plus ``namespace``, ``name`` of the URL) of the watches being served."""
        st = self._st  # type: ignore[attr-defined]
        return [dict(st.watch_params[q]) for q in list(st.watchers.get(rdef.gp, ())) if q in st.watch_params]

    def stop_watchers(self) -> None:
        for queues in self._st.watchers.values():  # type: ignore[attr-defined]
            for q in list(queues):
                q.put_nowait(_STOP)

    async def _serve_watch(self, request: rendering.Request) -> Any:
        rdef, ns, name, _ = self._target(request)  # type: ignore[attr-defined]
        params = dict(request.params)
        if name is not None:  # /…/plural/name?watch=true (old style): the same as a field selector
            params['fieldSelector'] = ','.join(filter(None, [params.get('fieldSelector'), f'metadata.name={name}']))
        matches = self._matcher(ns, params)  # type: ignore[attr-defined]
        rv_text = params.get('resourceVersion') or ''
        since = None
        if params.get('sendInitialEvents') != 'true' and rv_text not in ('', '0'):
            try:
                since = int(rv_text)
            except ValueError:
                raise bad_request(f'invalid resource version: {rv_text!r}') from None
        accept = header(request, 'Accept')
        events = self._events(rdef, ns, name, request, params, since, matches, accept)
        return Response(status=200, headers=WATCH_HEADERS, payload=events)

    async def _events(self, rdef: ResourceDef, ns: str | None, name: str | None, request: rendering.Request,
                      params: dict[str, str], since: int | None, matches: Callable[[dict[str, Any]], bool],
                      accept: str) -> AsyncIterator[bytes]:
        st = self._st  # type: ignore[attr-defined]
        # Everything until the first yield is atomic: no events can be missed or duplicated.
        queue: asyncio.Queue[Any] = asyncio.Queue()
        initial: list[bytes] = []
        if since is None:
            for obj in self._select(rdef, ns, params):  # type: ignore[attr-defined]
                initial.append(self._encode_event(rdef, 'ADDED', obj, accept, params))
            if params.get('sendInitialEvents') == 'true':  # the WatchList protocol: mark the end of the state
                bm = {'type': 'BOOKMARK', 'object': {
                    'kind': rdef.kind, 'apiVersion': rdef.api_version,
                    'metadata': {'resourceVersion': str(st.rv), 'annotations': {'k8s.io/initial-events-end': 'true'}}}}
                initial.append(json.dumps(bm).encode() + b'\n')
        elif since < st.floor:
            status = ApiError(410, 'Expired', f'too old resource version: {since} ({st.floor + 1})').status()
            yield json.dumps({'type': 'ERROR', 'object': status}).encode() + b'\n'
            return
        else:
            for event in st.history:
                if event.rv > since and event.gp == rdef.gp and matches(event.obj):
                    initial.append(self._encode(rdef, event, accept, params))
        st.watchers.setdefault(rdef.gp, set()).add(queue)
        st.watch_params[queue] = {**request.params, 'namespace': ns or '', 'name': name or ''}
        raw = request._raw_request
        timeout = float(params['timeoutSeconds']) if params.get('timeoutSeconds') else None
        bookmarks = params.get('allowWatchBookmarks') == 'true'
        try:
            yield b''  # the headers go now, even if nothing happens for a while
            for chunk in initial:
                yield chunk
            deadline = None if timeout is None else time.monotonic() + timeout
            last_bookmark = time.monotonic()
            while True:
                wait = 5.0 if deadline is None else min(5.0, deadline - time.monotonic())
                if wait <= 0:
                    break
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=wait)
                except asyncio.TimeoutError:
                    if raw is None or raw.transport is None or raw.transport.is_closing():
                        break
                    if bookmarks and time.monotonic() - last_bookmark > 50:
                        last_bookmark = time.monotonic()
                        yield json.dumps({'type': 'BOOKMARK', 'object': {
                            'kind': rdef.kind, 'apiVersion': rdef.api_version,
                            'metadata': {'resourceVersion': str(st.rv)}}}).encode() + b'\n'
                    continue
                if event is _STOP:
                    break
                if matches(event.obj):
                    yield self._encode(rdef, event, accept, params)
        finally:
            st.watchers.get(rdef.gp, set()).discard(queue)
            st.watch_params.pop(queue, None)

    def _encode(self, rdef: ResourceDef, event: Event, accept: str, params: dict[str, str]) -> bytes:
        if 'as=Table' in accept or 'as=PartialObjectMetadata' in accept:
            return self._encode_event(rdef, event.type, event.obj, accept, params)
        return event.encoded(rdef.api_version)

    def _encode_event(self, rdef: ResourceDef, etype: str, obj: dict[str, Any], accept: str,
                      params: dict[str, str]) -> bytes:
        if 'as=Table' in accept:
            payload = self._table(rdef, [obj], params, obj['metadata'].get('resourceVersion', ''))  # type: ignore[attr-defined]
        elif 'as=PartialObjectMetadata' in accept:
            payload = partial(obj)
        else:
            payload = as_version(rdef, obj)
        return json.dumps({'type': etype, 'object': payload}, separators=(',', ':')).encode() + b'\n'
