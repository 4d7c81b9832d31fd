"""The storage layer of the lab's API server: kmock's object store plus kube-apiserver's write
bookkeeping (resourceVersion, uid, an event log for watches).

Objects live in kmock's own store (``KubernetesEmulator.objects``, an ``ObjectsArray`` of ``Object``
histories, soft-deleted on deletion), so ``emulator.objects['apps/v1/deployments', 'ns', 'x']`` and
kmock's history assertions work on what the lab serves.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
from typing import Any

import kmock
from kmock import KubernetesEmulator
from kmock._internal import rendering

from modelrollout_lab.apiserver_resources import ResourceDef, conflict

KEPT_VERSIONS = 8  # of each object's history in kmock's store (a long-running lab writes often)


@dataclasses.dataclass(eq=False)
class Event:
    """A watch event; ``obj`` is never mutated (every write stores a new dict), so it is shared."""

    rv: int
    gp: tuple[str, str]
    type: str
    obj: dict[str, Any]
    _cache: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def encoded(self, api_version: str) -> bytes:
        try:
            return self._cache[api_version]
        except KeyError:
            obj = self.obj if self.obj.get('apiVersion') == api_version else {**self.obj, 'apiVersion': api_version}
            data = json.dumps({'type': self.type, 'object': obj}, separators=(',', ':')).encode() + b'\n'
            self._cache[api_version] = data
            return data


class ObjectStorage:
    """
    resourceVersion and optimistic concurrency on kmock's object store.

    kube-apiserver stamps every write with a cluster-wide increasing ``metadata.resourceVersion``
    (and a ``uid`` at creation), refuses an update carrying a stale one with 409 Conflict, answers
    lists with the version they reflect, and keeps a log of changes so a watch can resume from a
    resourceVersion (or get 410 Gone once it is compacted). kmock's ``KubernetesEmulator`` stores
    plain dicts with none of this; this layer adds it on top of kmock's ``ObjectsArray`` (one
    ``Object`` history per object, trimmed to the last ``KEPT_VERSIONS``; deletion is kmock's soft
    deletion). It could be offered upstream as kmock's ``resourceVersion`` support.

    Why not kmock's ``_handle``: kmock's emulator writes every create/patch/delete into the store
    with its own merge semantics *before* any reaction runs, so a write that kube would refuse
    (409, 422, a patch of the status subresource only) would already be stored. This layer hands
    requests to kmock's reaction dispatch (``RawHandler._handle``: the DSL reactions and the
    fallbacks kmock registers per action) and the writes happen in those reactions
    (``_serve_create`` & co.), after every check. Live fan-out to watchers is a set of queues, not
    kmock's ``aiobus.Bus``: writes happen in synchronous code (admission, garbage collection) and
    the Bus only takes items with ``await``.
    """

    def _init_storage(self, history: int) -> None:
        self.__dict__['_storage'] = _StorageState(history=history)

    @property
    def _st(self) -> _StorageState:
        return self.__dict__['_storage']  # type: ignore[no-any-return]

    @property
    def resource_version(self) -> int:
        return self._st.rv

    async def _handle(self, request: rendering.Request) -> Any:
        # kmock's reactions find a request by scanning its request log with every reaction's
        # criteria, so the log holds the request being dispatched only (see docs/lab-apiserver.md).
        self._requests[:] = [request]  # type: ignore[attr-defined]
        return await super(KubernetesEmulator, self)._handle(request)  # type: ignore[misc]

    def _key(self, rdef: ResourceDef) -> kmock.resource:
        """One kmock resource per group and plural: every served version reads the same objects."""
        res = self._st.resources.get(rdef.gp)
        if res is None:
            res = self._st.resources[rdef.gp] = rdef.kmock_resource
        return res

    def _stored(self, rdef: ResourceDef, ns: str | None, name: str) -> dict[str, Any] | None:
        obj = self._st.live[rdef.gp].get((ns, name))
        return None if obj is None else obj.last.raw

    def _stored_items(self, rdef: ResourceDef) -> list[tuple[tuple[str | None, str], dict[str, Any]]]:
        return self.objects_of(rdef.group, rdef.plural)

    def objects_of(self, group: str, plural: str) -> list[tuple[tuple[str | None, str], dict[str, Any]]]:
        """((namespace, name), object) of every stored object of a group and plural."""
        return [(key, obj.last.raw) for key, obj in self._st.live[(group, plural)].items()]

    def _check_resource_version(self, rdef: ResourceDef, name: str, current: dict[str, Any], rv: str | None) -> None:
        if rv and rv != current['metadata'].get('resourceVersion'):
            raise conflict(rdef, name)

    def _commit(self, rdef: ResourceDef, ns: str | None, name: str, obj: dict[str, Any], etype: str) -> dict[str, Any]:
        """Store a new version with the next resourceVersion and tell the watchers; returns it."""
        st = self._st
        st.rv += 1
        obj['metadata'] = {**obj['metadata'], 'resourceVersion': str(st.rv)}
        key = (self._key(rdef), ns, name)
        objects = self.objects  # type: ignore[attr-defined]
        if key in objects:
            history = objects[key].history
            history.append(obj)
            if len(history) > 2 * KEPT_VERSIONS:
                del history[:-KEPT_VERSIONS]
        else:
            objects[key] = obj
        st.live[rdef.gp][(ns, name)] = objects[key]
        st.uids[obj['metadata']['uid']] = (rdef, ns, name)
        self._emit(Event(st.rv, rdef.gp, etype, obj))
        return obj

    def _remove(self, rdef: ResourceDef, ns: str | None, name: str) -> dict[str, Any]:
        """Delete (kmock's soft deletion) with a last resourceVersion; returns the final state."""
        st = self._st
        obj = st.live[rdef.gp].pop((ns, name))
        old = obj.last.raw
        obj.delete()
        st.rv += 1
        final = {**old, 'metadata': {**old['metadata'], 'resourceVersion': str(st.rv)}}
        st.uids.pop(old['metadata'].get('uid'), None)
        self._emit(Event(st.rv, rdef.gp, 'DELETED', final))
        return final

    def _exists_uid(self, uid: str | None) -> bool:
        return uid in self._st.uids

    def _emit(self, event: Event) -> None:
        st = self._st
        st.history.append(event)
        if len(st.history) == st.history.maxlen:
            st.floor = st.history[0].rv - 1
        for watcher in st.watchers.get(event.gp, ()):
            watcher.put_nowait(event)


@dataclasses.dataclass
class _StorageState:
    history: Any = 20000  # the size of the event log; a deque of Events after __post_init__
    rv: int = 0
    floor: int = 0  # watches from a resourceVersion below this get 410 Gone
    resources: dict[tuple[str, str], kmock.resource] = dataclasses.field(default_factory=dict)
    live: dict[tuple[str, str], dict[tuple[str | None, str], kmock.Object]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(dict))  # kmock's objects not deleted, by resource
    uids: dict[str, tuple[ResourceDef, str | None, str]] = dataclasses.field(default_factory=dict)
    watchers: dict[tuple[str, str], set[asyncio.Queue[Any]]] = dataclasses.field(default_factory=dict)
    watch_params: dict[asyncio.Queue[Any], dict[str, str]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.history = collections.deque(maxlen=self.history)
