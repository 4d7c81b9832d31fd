"""What the caller may do on the lab API server: kube-apiserver's RBAC authorizer, on the stored RBAC objects.

Roles, ClusterRoles and their bindings are ordinary objects in the emulator (``kubectl apply``
them, or let ``Lab`` apply the chart's); every request is authorized against them:

* request attributes as kube-apiserver derives them: the verb from the method (GET on a name is
  ``get``, on a collection ``list``, with ``watch=true`` ``watch``; POST ``create``; PUT ``update``;
  PATCH ``patch``; DELETE ``delete``, on a collection ``deletecollection``), API group, resource,
  subresource (``modelrollouts/status``), namespace and name (``resourceNames``);
* a ClusterRoleBinding grants everywhere, a RoleBinding only in its namespace (to a Role of that
  namespace or a ClusterRole); subjects are Users, Groups and ServiceAccounts;
* ``system:masters`` may do everything (like kube-apiserver's privileged-group short cut), and the
  bootstrap policy every cluster has is built in: authenticated users may read discovery, version
  and OpenAPI, and create SelfSubjectAccessReviews;
* a denial is 403 Forbidden with kube-apiserver's message, and
  ``POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`` answers from the same rules.

The chart's RBAC (``helm template`` of ``helm/modelrollout``, rendered by the real Helm engine) is
shipped beside this module as ``chart/rbac.yaml`` so the lab works outside a checkout with only
the ``lab`` extra; ``python -m modelrollout_lab.rbac`` renders it again (needs helm-python-sdk,
the ``test`` extra) and a lab test fails when it is stale.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from modelrollout_lab import apiserver_protobuf
from modelrollout_lab.auth import MASTERS, OPEN_PATHS, LabAuthority, Unauthorized, UserInfo, service_account

logger = logging.getLogger(__name__)

RBAC_GROUP = 'rbac.authorization.k8s.io'
RELEASE = 'modelrollout'
RELEASE_NAMESPACE = 'modelrollout-system'
RBAC_KINDS = frozenset({'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding'})
ACCESS_REVIEW_PATH = '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews'  # kubectl auth can-i
WHOAMI_PATH = '/apis/authentication.k8s.io/v1/selfsubjectreviews'  # kubectl auth whoami
_VERBS = {'POST': 'create', 'PUT': 'update', 'PATCH': 'patch'}

# The bootstrap policy of every cluster that matters here (system:discovery, system:basic-user).
_BOOTSTRAP_RULES: tuple[dict[str, Any], ...] = (
    {'nonResourceURLs': ['/api', '/api/*', '/apis', '/apis/*', '/openapi', '/openapi/*', '/version', '/version/'],
     'verbs': ['get']},
    {'apiGroups': ['authorization.k8s.io'], 'resources': ['selfsubjectaccessreviews', 'selfsubjectrulesreviews'],
     'verbs': ['create']},
    {'apiGroups': ['authentication.k8s.io'], 'resources': ['selfsubjectreviews'], 'verbs': ['create']},
)


@dataclasses.dataclass(frozen=True)
class Attributes:
    """One request as the authorizer sees it (kube-apiserver's authorizer.Attributes)."""

    verb: str
    resource_request: bool = True
    group: str = ''
    resource: str = ''
    subresource: str = ''
    namespace: str = ''
    name: str = ''
    path: str = ''

    @property
    def full_resource(self) -> str:
        return f'{self.resource}/{self.subresource}' if self.subresource else self.resource


def request_attributes(method: str, path: str, parsed: Mapping[str, Any], params: Mapping[str, str]) -> Attributes:
    """The attributes of an HTTP request (`parsed`: the API server's parse of the path)."""
    method = method.upper()
    if parsed.get('plural') is None:
        return Attributes(verb=method.lower() if method != 'HEAD' else 'get', resource_request=False, path=path)
    name = parsed.get('name') or ''
    if method in ('GET', 'HEAD'):
        if params.get('watch') in ('true', '1'):
            verb = 'watch'
        else:
            verb = 'get' if name else 'list'
        if not name:  # a list or watch of one object by field selector is authorized on that name
            selector = params.get('fieldSelector') or ''
            if selector.startswith('metadata.name=') and ',' not in selector:
                name = selector.partition('=')[2]
    elif method == 'DELETE':
        verb = 'delete' if name else 'deletecollection'
    else:
        verb = _VERBS.get(method, method.lower())
    return Attributes(verb=verb, group=parsed.get('group') or '', resource=parsed['plural'],
                      subresource=parsed.get('subresource') or '', namespace=parsed.get('namespace') or '',
                      name=name, path=path)


def _listed(values: Iterable[str], value: str) -> bool:
    return '*' in values or value in values


def _rule_allows(rule: Mapping[str, Any], attrs: Attributes) -> bool:
    if not _listed(rule.get('verbs') or (), attrs.verb):
        return False
    if not attrs.resource_request:
        return any(url == attrs.path or url == '*' or (url.endswith('*') and attrs.path.startswith(url[:-1]))
                   for url in rule.get('nonResourceURLs') or ())
    if not _listed(rule.get('apiGroups') or (), attrs.group):
        return False
    resources_ = rule.get('resources') or ()
    wanted = attrs.full_resource
    if not ('*' in resources_ or wanted in resources_
            or (attrs.subresource and f'*/{attrs.subresource}' in resources_)
            or (attrs.subresource and f'{attrs.resource}/*' in resources_)):
        return False
    names = rule.get('resourceNames') or ()
    return not names or attrs.name in names


def _subject_matches(subject: Mapping[str, Any], user: UserInfo, binding_namespace: str) -> bool:
    kind = subject.get('kind')
    if kind == 'User':
        return subject.get('name') == user.name
    if kind == 'Group':
        return subject.get('name') in user.all_groups
    if kind == 'ServiceAccount':
        namespace = subject.get('namespace') or binding_namespace
        return service_account(namespace, subject.get('name', '')).name == user.name
    return False


class Authorizer:
    """RBAC over the RBAC objects `objects(plural)` returns (the emulator's store)."""

    def __init__(self, objects: Callable[[str], Iterable[Mapping[str, Any]]]) -> None:
        self._objects = objects

    def _rules(self, user: UserInfo, namespace: str) -> Iterable[Mapping[str, Any]]:
        """Every rule granted to `user` that applies in `namespace` ('' = cluster scope)."""
        yield from _BOOTSTRAP_RULES
        cluster_roles = {r['metadata']['name']: r for r in self._objects('clusterroles')}
        for binding in self._objects('clusterrolebindings'):
            if any(_subject_matches(s, user, '') for s in binding.get('subjects') or ()):
                yield from (cluster_roles.get(binding['roleRef']['name']) or {}).get('rules') or ()
        if not namespace:
            return
        roles = {(r['metadata'].get('namespace'), r['metadata']['name']): r for r in self._objects('roles')}
        for binding in self._objects('rolebindings'):
            if binding['metadata'].get('namespace') != namespace:
                continue
            if not any(_subject_matches(s, user, namespace) for s in binding.get('subjects') or ()):
                continue
            ref = binding['roleRef']
            role = cluster_roles.get(ref['name']) if ref.get('kind') == 'ClusterRole' else roles.get((namespace, ref['name']))
            yield from (role or {}).get('rules') or ()

    def allowed(self, user: UserInfo, attrs: Attributes) -> bool:
        if MASTERS in user.groups:
            return True
        return any(_rule_allows(rule, attrs) for rule in self._rules(user, attrs.namespace))


def forbidden_status(user: UserInfo, attrs: Attributes) -> dict[str, Any]:
    """kube-apiserver's 403 Status for a denied request."""
    if not attrs.resource_request:
        message = f'forbidden: User "{user.name}" cannot {attrs.verb} path "{attrs.path}"'
        return _status(403, 'Forbidden', message, {})
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else 'at the cluster scope'
    why = f'User "{user.name}" cannot {attrs.verb} resource "{attrs.full_resource}" in API group "{attrs.group}" {where}'
    qualified = f'{attrs.resource}.{attrs.group}' if attrs.group else attrs.resource
    subject = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    details: dict[str, Any] = {'name': attrs.name} if attrs.name else {}
    if attrs.group:
        details['group'] = attrs.group
    details['kind'] = attrs.resource
    return _status(403, 'Forbidden', f'{subject} is forbidden: {why}', details)


def unauthorized_status() -> dict[str, Any]:
    return _status(401, 'Unauthorized', 'Unauthorized', None)


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None) -> dict[str, Any]:
    status: dict[str, Any] = {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                              'message': message, 'reason': reason, 'code': code}
    if details is not None:
        status['details'] = details
    return status


class AccessControl:
    """The API server's gate: authenticate (LabAuthority), then authorize (Authorizer)."""

    def __init__(self, authority: LabAuthority, authorizer: Authorizer) -> None:
        self.authority = authority
        self.authorizer = authorizer

    def admit(self, method: str, path: str, parsed: Mapping[str, Any], params: Mapping[str, str],
              headers: Mapping[str, str], peercert: Mapping[str, Any] | None, body: bytes
              ) -> tuple[int, dict[str, Any]] | None:
        """None to serve the request; else the (code, body) to answer instead (a denial or a review)."""
        if path in OPEN_PATHS:
            return None
        try:
            user = self.authority.authenticate(headers, peercert)
        except Unauthorized:
            return 401, unauthorized_status()
        attrs = request_attributes(method, path, parsed, params)
        if not self.authorizer.allowed(user, attrs):
            denial = forbidden_status(user, attrs)
            logger.info('RBAC: %s', denial['message'])  # like kube-apiserver's RBAC DENY lines
            return 403, denial
        if path.rstrip('/') not in (ACCESS_REVIEW_PATH, WHOAMI_PATH):
            return None
        if method.upper() != 'POST':
            return 405, _status(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource', None)
        try:
            review = _decode_review(body, headers.get('Content-Type') or '')
        except (ValueError, apiserver_protobuf.UnsupportedProtobuf):
            return 400, _status(400, 'BadRequest', 'the body of the request was in an unknown format', None)
        if path.rstrip('/') == WHOAMI_PATH:
            return 201, {'kind': 'SelfSubjectReview', 'apiVersion': 'authentication.k8s.io/v1',
                         'metadata': {'creationTimestamp': None},
                         'status': {'userInfo': {'username': user.name, 'groups': list(user.all_groups)}}}
        return 201, self._access_review(user, review.get('spec') or {})

    def _access_review(self, user: UserInfo, spec: Mapping[str, Any]) -> dict[str, Any]:
        if 'resourceAttributes' in spec:
            ra = spec['resourceAttributes'] or {}
            attrs = Attributes(verb=ra.get('verb', ''), group=ra.get('group', ''), resource=ra.get('resource', ''),
                               subresource=ra.get('subresource', ''), namespace=ra.get('namespace', ''),
                               name=ra.get('name', ''))
        else:
            nra = spec.get('nonResourceAttributes') or {}
            attrs = Attributes(verb=nra.get('verb', ''), resource_request=False, path=nra.get('path', ''))
        return {'kind': 'SelfSubjectAccessReview', 'apiVersion': 'authorization.k8s.io/v1',
                'metadata': {'creationTimestamp': None}, 'spec': dict(spec),
                'status': {'allowed': self.authorizer.allowed(user, attrs)}}


def _decode_review(body: bytes, content_type: str) -> dict[str, Any]:
    if 'protobuf' in content_type:  # kubectl's typed clients
        return apiserver_protobuf.decode(body)
    review = json.loads(body or b'{}')
    if not isinstance(review, dict):
        raise ValueError('not an object')
    return review


# ---------------------------------------------------------------------------------------- the chart
def chart_rbac() -> list[dict[str, Any]]:
    """The chart's ServiceAccount and RBAC objects, as rendered by Helm (shipped with the lab)."""
    text = resources.files('modelrollout_lab').joinpath('chart', 'rbac.yaml').read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def operator_identity(documents: Iterable[Mapping[str, Any]]) -> UserInfo:
    """The user the operator runs as: the chart's ServiceAccount."""
    for doc in documents:
        if doc.get('kind') == 'ServiceAccount':
            return service_account(doc['metadata']['namespace'], doc['metadata']['name'])
    raise ValueError('the rendered chart has no ServiceAccount')


def without_permission(documents: Iterable[Mapping[str, Any]], group: str, resource: str, verb: str
                       ) -> list[dict[str, Any]]:
    """A copy of the rendered RBAC with `verb` on `resource` (in `group`) taken out of every role."""
    result = copy.deepcopy(list(documents))
    for doc in result:
        if doc.get('kind') not in ('ClusterRole', 'Role'):
            continue
        for rule in doc.get('rules') or []:
            if group in (rule.get('apiGroups') or ()) and resource in (rule.get('resources') or ()):
                others = [r for r in rule['resources'] if r != resource]
                if others:  # keep the verb for the rule's other resources
                    doc['rules'].append({**rule, 'resources': others})
                rule['resources'] = [resource]
                rule['verbs'] = [v for v in rule['verbs'] if v != verb]
    return result


def render_chart_rbac(chart: str | Path, values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Render the chart with the real Helm engine (helm-python-sdk) and keep the RBAC documents."""
    import helm_python

    with helm_python.Chart.load(str(chart)) as loaded:
        manifests = loaded.render(dict(values or {}), name=RELEASE, namespace=RELEASE_NAMESPACE, is_install=True)
    documents = []
    for path, text in sorted(manifests.items()):
        if not path.endswith('.yaml'):  # NOTES.txt
            continue
        documents.extend(doc for doc in yaml.safe_load_all(text) if doc and doc.get('kind') in RBAC_KINDS)
    return documents


def main() -> int:
    """Render helm/modelrollout's RBAC into the lab's packaged copy (run from a checkout)."""
    root = Path(__file__).resolve().parents[2]
    target = Path(__file__).with_name('chart') / 'rbac.yaml'
    target.parent.mkdir(exist_ok=True)
    documents = render_chart_rbac(root / 'helm' / 'modelrollout')
    header = '# Rendered from helm/modelrollout by `python -m modelrollout_lab.rbac` (Helm engine); do not edit.\n'
    target.write_text(header + yaml.safe_dump_all(documents, sort_keys=False))
    print(f'wrote {target} ({len(documents)} documents)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
