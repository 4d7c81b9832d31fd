"""Which resources the lab's API server serves: the registry, discovery, OpenAPI, and CRDs."""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
from typing import Any

from kmock import ResourceInfo
from kmock._internal import rendering

from modelrollout_lab import apiserver_logic as logic
from modelrollout_lab.apiserver_resources import ALL_VERBS, SERVER_VERSION, SUB_VERBS, ResourceDef, \
    builtin_resources, header, no_such_path, version_priority


class ResourceRegistry:
    """
    Discovery as kube-apiserver serves it, and CustomResourceDefinitions that register resources.

    kmock's scaffold guesses discovery from ``resources`` and the reactions; kube-apiserver's
    documents carry what kubectl relies on: verbs per subresource (``plural/status``,
    ``plural/scale`` as ``autoscaling/v1 Scale``), short names and categories (``kubectl get
    all``), ``storageVersionHash``, the preferred version by kube's version priority, and a
    minimal ``/openapi/v3`` (kubectl reads it to leave validation to the server). Creating a CRD
    registers its served versions (and sets ``Established``, as the apiextensions controllers
    do); deleting it unregisters them. This layer overrides kmock's own discovery reactions
    (``_serve_api``, ``_serve_apis``, ``_serve_group``, ``_serve_version``, ...), so kmock's routing
    to them stays, and mirrors every resource into kmock's ``resources``. Could be offered
    upstream to kmock as richer discovery documents and CRD registration.
    """

    def _init_registry(self) -> None:
        self.__dict__['_registry'] = _RegistryState()
        for rdef in builtin_resources():
            self._register(rdef)

    @property
    def _reg(self) -> _RegistryState:
        return self.__dict__['_registry']  # type: ignore[no-any-return]

    def find_def(self, api_version: str, plural: str) -> ResourceDef | None:
        group, _, version = api_version.rpartition('/')
        return self._find_def(group, version, plural)

    def _register(self, rdef: ResourceDef) -> None:
        st = self._reg
        st.defs[(rdef.group, rdef.version, rdef.plural)] = rdef
        subresources = (['status'] if rdef.status else []) + (['scale'] if rdef.scale else [])
        self.resources[rdef.kmock_resource] = ResourceInfo(  # type: ignore[attr-defined]
            kind=rdef.kind, singular=rdef.singular, namespaced=rdef.namespaced, verbs=ALL_VERBS,
            shortnames=rdef.short_names, categories=rdef.categories, subresources=subresources)
        st.discovery_rv += 1

    def _unregister_crd(self, crd_name: str) -> None:
        st = self._reg
        for key, rdef in list(st.defs.items()):
            if rdef.crd == crd_name:
                del st.defs[key]
                with contextlib.suppress(KeyError):
                    del self.resources[rdef.kmock_resource]  # type: ignore[attr-defined]
        st.discovery_rv += 1

    def _find_def(self, group: str, version: str, plural: str) -> ResourceDef | None:
        return self._reg.defs.get((group, version, plural))

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for rdef in self._reg.defs.values():
            if rdef.group and rdef.version not in groups.setdefault(rdef.group, []):
                groups[rdef.group].append(rdef.version)
        for versions in groups.values():
            versions.sort(key=version_priority)
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
            raise no_such_path()
        return {'kind': 'APIGroup', 'apiVersion': 'v1', **self._group_entry(group, versions)}

    def _discovery_resources(self, group: str, version: str) -> dict[str, Any]:
        rdefs = [r for r in self._reg.defs.values() if r.group == group and r.version == version]
        if not rdefs:
            raise no_such_path()
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
        h = self._reg.discovery_rv
        for r in self._reg.defs.values():
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
            raise no_such_path()
        rdefs = [r for r in self._reg.defs.values() if r.group == group and r.version == version]
        if not rdefs:
            raise no_such_path()
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
        crdef = self._reg.defs[('apiextensions.k8s.io', 'v1', 'customresourcedefinitions')]
        return self._commit(crdef, None, crd_name, {**crd, 'status': status}, 'MODIFIED')  # type: ignore[attr-defined, no-any-return]

    # kmock's discovery reactions (registered by KubernetesScaffold), answered from the registry.
    async def _serve_server_version(self, request: rendering.Request) -> Any:
        return SERVER_VERSION

    async def _serve_api(self, request: rendering.Request) -> Any:
        return {'kind': 'APIVersions', 'versions': ['v1'], 'serverAddressByClientCIDRs': [
            {'clientCIDR': '0.0.0.0/0', 'serverAddress': header(request, 'Host') or request.url.host}]}

    async def _serve_apis(self, request: rendering.Request) -> Any:
        return self._discovery_groups()

    async def _serve_group(self, request: rendering.Request) -> Any:
        assert request.resource is not None
        return self._discovery_group(request.resource.group or '')

    async def _serve_version(self, request: rendering.Request) -> Any:
        assert request.resource is not None
        return self._discovery_resources(request.resource.group or '', request.resource.version or '')

    async def _serve_root(self, request: rendering.Request) -> Any:
        return {'paths': sorted(self._root_paths())}

    async def _serve_openapi(self, request: rendering.Request) -> Any:
        path = request.url.path.rstrip('/')
        return self._openapi_root() if path == '/openapi/v3' else self._openapi_gv(path[len('/openapi/v3/'):])


@dataclasses.dataclass
class _RegistryState:
    defs: dict[tuple[str, str, str], ResourceDef] = dataclasses.field(default_factory=dict)
    discovery_rv: int = 0
