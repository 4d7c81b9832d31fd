"""Resource definitions and kube-apiserver's error answers (``Status`` objects), shared by the layers
of the lab's API server (:mod:`modelrollout_lab.apiserver`)."""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import yaml
from kmock import resource

from modelrollout_lab import apiserver_protobuf

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
    def kmock_resource(self) -> resource:
        return resource(group=self.group, version=self.version, plural=self.plural)

    @property
    def group_kind(self) -> str:
        return f'{self.kind}.{self.group}' if self.group else self.kind


def builtin_resources() -> list[ResourceDef]:
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


def status_details(rdef: ResourceDef, name: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details['name'] = name
    if rdef.group:
        details['group'] = rdef.group
    details['kind'] = rdef.plural
    return details


def not_found(rdef: ResourceDef, name: str) -> ApiError:
    return ApiError(404, 'NotFound', f'{rdef.group_resource} "{name}" not found', status_details(rdef, name))


def already_exists(rdef: ResourceDef, name: str) -> ApiError:
    return ApiError(409, 'AlreadyExists', f'{rdef.group_resource} "{name}" already exists', status_details(rdef, name))


def conflict(rdef: ResourceDef, name: str) -> ApiError:
    return ApiError(409, 'Conflict',
                    f'Operation cannot be fulfilled on {rdef.group_resource} "{name}": the object has been '
                    f'modified; please apply your changes to the latest version and try again',
                    status_details(rdef, name))


def invalid(rdef: ResourceDef, name: str, causes: list[dict[str, str]]) -> ApiError:
    texts = [f'{c["field"]}: {c["message"]}' for c in causes]
    summary = texts[0] if len(texts) == 1 else '[' + ', '.join(texts) + ']'
    details = {'name': name, 'group': rdef.group, 'kind': rdef.kind, 'causes': causes}
    if not rdef.group:
        del details['group']
    return ApiError(422, 'Invalid', f'{rdef.group_kind} "{name}" is invalid: {summary}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, 'BadRequest', message)


def no_such_path() -> ApiError:
    return ApiError(404, 'NotFound', 'the server could not find the requested resource', {})


# --------------------------------------------------------------------------------------------------
# Small helpers.
# --------------------------------------------------------------------------------------------------
def parse_path(path: str) -> dict[str, Any]:
    """group, version, namespace, plural, name, subresource of an API path (the keys that are present).

    Unlike kmock 0.8's parser, ``namespaces`` is a resource: ``/api/v1/namespaces/x`` is the namespace
    ``x`` and ``/api/v1/namespaces/x/status`` its status."""
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


def version_priority(version: str) -> tuple[int, int, int]:
    m = re.match(r'^v(\d+)(?:(alpha|beta)(\d+))?$', version)
    if not m:
        return (3, 0, 0)
    stage = {None: 0, 'beta': 1, 'alpha': 2}[m.group(2)]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0))


def json_bytes(data: Any) -> bytes:
    return json.dumps(data, separators=(',', ':')).encode()


def decode_body(body: bytes, ctype: str) -> Any:
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


def as_version(rdef: ResourceDef, obj: dict[str, Any]) -> dict[str, Any]:
    if obj.get('apiVersion') == rdef.api_version and obj.get('kind') == rdef.kind:
        return obj
    return {**obj, 'apiVersion': rdef.api_version, 'kind': rdef.kind}


def partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/v1', 'metadata': obj['metadata']}


def header(request: Any, name: str) -> str:
    """A request header by its case-insensitive name ('' if absent): kmock's Request keeps a plain dict."""
    raw = request._raw_request
    if raw is not None:
        return str(raw.headers.get(name, ''))
    lowered = name.lower()
    return next((str(v) for k, v in request.headers.items() if k.lower() == lowered), '')
