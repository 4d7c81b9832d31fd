"""Admission in the lab's API server: defaulting, pruning and validation before anything is stored."""
from __future__ import annotations

import base64
import json
from typing import Any

from modelrollout_lab import apiserver_logic as logic
from modelrollout_lab import validation
from modelrollout_lab.apiserver_resources import ResourceDef, bad_request, invalid


class Admission:
    """
    What kube-apiserver does to an object between decoding and storage.

    Custom resources are pruned, defaulted and validated against the CRD's ``openAPIV3Schema``
    (422 Invalid with kube's causes; unknown fields a 400 with ``fieldValidation=Strict``); built-in
    kinds are decoded into their Go types and validated as kube's validation code does
    (:mod:`modelrollout_lab.validation`: 400 for a wrong type or an int32 overflow, 422 for names,
    labels, annotation sizes, required fields, ports); built-ins get their defaults (Deployment
    strategy, Service clusterIP, Secret ``stringData``, Namespace labels). kmock stores whatever a
    client sends. Could be offered upstream to kmock as an admission hook (``emulator.admit(resource,
    obj, old) -> obj``, raising a 4xx) with schema validation as its first user.
    """

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
                self.__dict__['_cluster_ips'] = n = self.__dict__.get('_cluster_ips', 0) + 1
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
