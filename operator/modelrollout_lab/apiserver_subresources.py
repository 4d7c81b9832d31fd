"""The status and scale subresources (the lab's API server)."""
from __future__ import annotations

from typing import Any

from modelrollout_lab import apiserver_logic as logic
from modelrollout_lab.apiserver_resources import ResourceDef, bad_request


class Subresources:
    """
    ``/status`` and ``/scale`` as kube-apiserver serves them.

    With a status subresource, a write to the object ignores its ``status``, a write to
    ``/status`` changes only ``status``, and status is dropped on create; ``/scale`` of a
    Deployment reads and writes ``spec.replicas`` as an ``autoscaling/v1`` Scale. kmock stores what
    a PATCH sends, wherever it is sent. Could be offered upstream to kmock as subresource support
    (a resource declares its subresources in ``ResourceInfo.subresources`` already).
    """

    def _serves_subresource(self, rdef: ResourceDef, sub: str | None) -> bool:
        return sub is None or (sub == 'status' and rdef.status) or (sub == 'scale' and rdef.scale)

    def _split_status(self, rdef: ResourceDef, old: dict[str, Any], new: dict[str, Any], sub: str | None) -> dict[str, Any]:
        """What a write of `new` to the object (sub None) or to its /status stores."""
        if sub == 'status':
            status = new.get('status', logic._MISSING)
            new = {k: v for k, v in old.items() if k != 'status'}
            if status is not logic._MISSING:
                new['status'] = status
        elif rdef.status:
            new = {k: v for k, v in new.items() if k != 'status'}
            if 'status' in old:
                new['status'] = old['status']
        return new

    def _scale_view(self, rdef: ResourceDef, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj['metadata']
        sel = ((obj.get('spec') or {}).get('selector') or {}).get('matchLabels') or {}
        return {'kind': 'Scale', 'apiVersion': 'autoscaling/v1',
                'metadata': {k: meta[k] for k in ('name', 'namespace', 'uid', 'resourceVersion', 'creationTimestamp') if k in meta},
                'spec': {'replicas': (obj.get('spec') or {}).get('replicas', 0)},
                'status': {'replicas': (obj.get('status') or {}).get('replicas', 0),
                           'selector': ','.join(f'{k}={v}' for k, v in sel.items())}}

    def _update_scale(self, rdef: ResourceDef, ns: str | None, name: str, scale: Any, dry_run: bool) -> dict[str, Any]:
        old = self._get(rdef, ns, name)  # type: ignore[attr-defined]
        if not isinstance(scale, dict):
            raise bad_request('the body of the request was in an unknown format')
        self._check_resource_version(rdef, name, old, (scale.get('metadata') or {}).get('resourceVersion'))  # type: ignore[attr-defined]
        replicas = (scale.get('spec') or {}).get('replicas', 0)
        new = {**old, 'spec': {**(old.get('spec') or {}), 'replicas': replicas}}
        self._update(rdef, ns, name, old, new, None, dry_run=dry_run)  # type: ignore[attr-defined]
        return self._scale_view(rdef, self._stored(rdef, ns, name) or new)  # type: ignore[attr-defined]
