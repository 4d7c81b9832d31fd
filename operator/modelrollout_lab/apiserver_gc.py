"""Deletion in the lab's API server: finalizers, garbage collection by owner references, and what
deleting a namespace or a CRD deletes."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from modelrollout_lab import apiserver_logic as logic
from modelrollout_lab.apiserver_resources import ApiError, ResourceDef, as_version, conflict, status_details

logger = logging.getLogger('modelrollout_lab.apiserver')


class Deletion:
    """
    Deletion as kube-apiserver and kube-controller-manager do it.

    An object with finalizers is only marked (``deletionTimestamp``) and goes when its last
    finalizer is removed; no finalizer can be added while it is being deleted; preconditions
    (``uid``, ``resourceVersion``) are checked. Dependents are garbage-collected in the background
    by ``ownerReferences`` (``propagationPolicy: Orphan`` orphans them instead); deleting a
    namespace deletes its objects (``default``, ``kube-system``, ``kube-public`` cannot be
    deleted); deleting a CRD deletes its objects. kmock's emulator knows finalizers and
    ``deletionTimestamp`` but not owners, namespaces or preconditions. The garbage collector could be
    offered upstream to kmock on its own (it needs only the store and a delete).
    """

    def _init_deletion(self) -> None:
        self.__dict__['_orphans'] = set()  # uids whose dependents are orphaned, not deleted

    @property
    def _orphans(self) -> set[str]:
        return self.__dict__['_orphans']  # type: ignore[no-any-return]

    def _check_finalizers(self, rdef: ResourceDef, name: str, old_meta: dict[str, Any], meta: dict[str, Any]) -> None:
        if not old_meta.get('deletionTimestamp'):
            return
        added = set(meta.get('finalizers') or []) - set(old_meta.get('finalizers') or [])
        if added:
            raise ApiError(422, 'Invalid', f'{rdef.group_kind} "{name}" is invalid: metadata.finalizers: Forbidden: '
                           f'no new finalizers can be added if the object is being deleted, found new finalizers '
                           f'{json.dumps(sorted(added))}', {'name': name, 'kind': rdef.kind, 'causes': [
                               {'reason': 'FieldValueForbidden', 'field': 'metadata.finalizers',
                                'message': 'Forbidden: no new finalizers can be added if the object is being deleted'}]})

    def _remove(self, rdef: ResourceDef, ns: str | None, name: str) -> dict[str, Any]:
        final: dict[str, Any] = super()._remove(rdef, ns, name)  # type: ignore[misc]
        if rdef.gp == ('apiextensions.k8s.io', 'customresourcedefinitions'):
            self._drop_crd(final)
        if rdef.gp == ('', 'namespaces'):
            self._drop_namespace(name)
        uid = final['metadata'].get('uid')
        if uid:
            asyncio.get_running_loop().call_soon(self._collect_garbage, uid)
        return final

    def _delete(self, rdef: ResourceDef, ns: str | None, name: str, options: dict[str, Any], *,
                dry_run: bool = False) -> dict[str, Any]:
        old = self._get(rdef, ns, name)
        if rdef.gp == ('', 'namespaces') and name in ('default', 'kube-system', 'kube-public'):
            raise ApiError(403, 'Forbidden', f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                           status_details(rdef, name))
        pre = options.get('preconditions') or {}
        self._check_resource_version(rdef, name, old, pre.get('resourceVersion'))
        if pre.get('uid') and pre['uid'] != old['metadata'].get('uid'):
            raise conflict(rdef, name)
        if dry_run:
            return as_version(rdef, old)
        orphan = options.get('propagationPolicy') == 'Orphan' or options.get('orphanDependents') is True
        if old['metadata'].get('finalizers'):
            if old['metadata'].get('deletionTimestamp'):
                return as_version(rdef, old)
            new = {**old, 'metadata': {**old['metadata'], 'deletionTimestamp': logic.now_rfc3339(),
                                       'deletionGracePeriodSeconds': 0}}
            if rdef.generation:
                new['metadata']['generation'] = int(old['metadata'].get('generation', 0)) + 1
            if orphan:
                self._orphans.add(old['metadata']['uid'])
            return as_version(rdef, self._commit(rdef, ns, name, new, 'MODIFIED'))
        if orphan:
            self._orphans.add(old['metadata']['uid'])
        final = self._remove(rdef, ns, name)
        return as_version(rdef, final)

    def _delete_collection(self, rdef: ResourceDef, ns: str | None, params: dict[str, str]) -> dict[str, Any]:
        items = list(self._select(rdef, ns, params))
        for obj in items:
            with contextlib.suppress(ApiError):
                self._delete(rdef, obj['metadata'].get('namespace'), obj['metadata']['name'], {})
        return {'kind': rdef.list_kind, 'apiVersion': rdef.api_version,
                'metadata': {'resourceVersion': str(self.resource_version)}, 'items': items}

    def _collect_garbage(self, owner_uid: str) -> None:
        """Background cascading deletion of dependents (or orphaning them)."""
        orphan = owner_uid in self._orphans
        self._orphans.discard(owner_uid)
        for rdef in {r.gp: r for r in self._reg.defs.values()}.values():
            for (ns, name), obj in self._stored_items(rdef):
                refs = obj['metadata'].get('ownerReferences') or []
                if not any(r.get('uid') == owner_uid for r in refs):
                    continue
                remaining = [r for r in refs if r.get('uid') != owner_uid]
                try:
                    if orphan or any(self._exists_uid(r.get('uid')) for r in remaining):
                        new = {**obj, 'metadata': {**obj['metadata'], 'ownerReferences': remaining}}
                        if not remaining:
                            del new['metadata']['ownerReferences']
                        self._update(rdef, ns, name, obj, new, None)
                    else:
                        self._delete(rdef, ns, name, {})
                except ApiError:  # pragma: no cover
                    logger.debug('GC of %s/%s failed', ns, name, exc_info=True)

    def _drop_crd(self, crd: dict[str, Any]) -> None:
        rdef = next((r for r in self._reg.defs.values() if r.crd == crd['metadata']['name']), None)
        self._unregister_crd(crd['metadata']['name'])
        if rdef is not None:
            for (ns, name), _ in self._stored_items(rdef):
                self._remove(rdef, ns, name)

    def _drop_namespace(self, ns_name: str) -> None:
        for rdef in {r.gp: r for r in self._reg.defs.values() if r.namespaced}.values():
            for (ns, name), _ in self._stored_items(rdef):
                if ns == ns_name and self._stored(rdef, ns, name) is not None:
                    with contextlib.suppress(ApiError):
                        self._delete(rdef, ns, name, {})
