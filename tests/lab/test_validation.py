"""The lab API server refuses what kube-apiserver 1.31 refuses, with the same status, reason and causes.

Real clients only (the kubernetes Python client and kubectl) against the emulated server on loopback.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess

import kubernetes
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
KUBECTL = ROOT / '.venv' / 'bin' / 'kubectl'
CRD = ROOT / 'crds' / 'modelrollout.yaml'
NS = 'default'


@pytest.fixture(scope='module')
def api(apiserver_kubeconfig):
    client = kubernetes.config.new_client_from_config(config_file=str(apiserver_kubeconfig))
    yield client
    client.close()


@pytest.fixture(scope='module')
def kubectl(apiserver_kubeconfig):
    env = {**os.environ, 'KUBECONFIG': str(apiserver_kubeconfig)}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(KUBECTL), *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)
    return run


@pytest.fixture(scope='module')
def crd_installed(kubectl):
    result = kubectl('apply', '-f', str(CRD))
    assert result.returncode == 0, result.stderr


def deployment(name: str = 'web', **spec_changes) -> dict:
    spec = {'replicas': 2, 'selector': {'matchLabels': {'app': name}},
            'template': {'metadata': {'labels': {'app': name}},
                         'spec': {'containers': [{'name': 'server', 'image': 'example/web:1',
                                                  'ports': [{'containerPort': 8080}]}]}}}
    spec.update(spec_changes)
    return {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': {'name': name, 'namespace': NS}, 'spec': spec}


def service(name: str = 'web', port: int = 8080) -> dict:
    return {'apiVersion': 'v1', 'kind': 'Service', 'metadata': {'name': name, 'namespace': NS},
            'spec': {'selector': {'app': 'web'}, 'ports': [{'port': port, 'targetPort': 8080}]}}


def job(name: str) -> dict:
    return {'apiVersion': 'batch/v1', 'kind': 'Job', 'metadata': {'name': name, 'namespace': NS},
            'spec': {'backoffLimit': 0, 'template': {'spec': {
                'restartPolicy': 'Never', 'containers': [{'name': 'eval', 'image': 'example/eval:1'}]}}}}


def send(api, method: str, path: str, body: dict, content_type: str = 'application/json') -> tuple[int, dict]:
    """One request as any client sends it (the typed client would refuse a mistyped body itself)."""
    m, url, headers, data, _ = api.param_serialize(method, path, body=body, auth_settings=['BearerToken'],
                                                   header_params={'Content-Type': content_type,
                                                                  'Accept': 'application/json'})
    response = api.call_api(m, url, headers, data)
    return response.status, json.loads(response.read())


PATHS = {'Deployment': '/apis/apps/v1/namespaces/default/deployments', 'Service': '/api/v1/namespaces/default/services',
         'Job': '/apis/batch/v1/namespaces/default/jobs', 'ConfigMap': '/api/v1/namespaces/default/configmaps',
         'HTTPRoute': '/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes'}


def create(api, body: dict) -> tuple[int, dict]:
    return send(api, 'POST', PATHS[body['kind']], body)


def causes_by_field(status: dict) -> dict[str, str]:
    return {c['field']: c['message'] for c in status['details']['causes']}


def test_service_name_over_63_characters_is_invalid(api):
    name = 's' * 64
    code, status = create(api, service(name))
    assert (code, status['reason'], status['kind']) == (422, 'Invalid', 'Status')
    assert status['details']['kind'] == 'Service' and status['details']['name'] == name
    assert causes_by_field(status)['metadata.name'] == f'Invalid value: "{name}": must be no more than 63 characters'
    assert status['message'].startswith(f'Service "{name}" is invalid: metadata.name: Invalid value')
    code, status = create(api, service('9-starts-with-a-digit'))  # a DNS-1035 label
    assert code == 422 and 'DNS-1035 label' in causes_by_field(status)['metadata.name']
    assert create(api, service('s' * 63))[0] == 201


def test_job_name_over_63_characters_cannot_become_its_job_name_label(api):
    name = 'gate-' + 'j' * 59
    code, status = create(api, job(name))
    assert (code, status['reason']) == (422, 'Invalid')
    assert causes_by_field(status)['spec.template.labels'] == f'Invalid value: "{name}": must be no more than 63 characters'
    assert create(api, job(name[:63]))[0] == 201


def test_label_value_of_64_characters_and_a_bad_key_are_invalid(api):
    body = deployment('labelled')
    body['metadata']['labels'] = {'team': 'x' * 64}
    code, status = create(api, body)
    assert code == 422 and causes_by_field(status)['metadata.labels'].endswith('must be no more than 63 characters')
    body['metadata']['labels'] = {'-bad/key': 'ok'}
    code, status = create(api, body)
    assert code == 422 and 'prefix part' in causes_by_field(status)['metadata.labels']
    body = deployment('labelled')
    body['spec']['template']['metadata']['labels']['model'] = 'v' * 64
    code, status = create(api, body)
    assert code == 422 and 'spec.template.metadata.labels' in causes_by_field(status)
    body['spec']['template']['metadata']['labels']['model'] = 'v' * 63
    assert create(api, body)[0] == 201


def test_annotations_over_256_kib_in_total_are_too_long(api):
    half = 'a' * (128 * 1024)  # each annotation alone is fine; together (with their keys) they are too much
    body = {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': 'annotated', 'annotations': {'a': half, 'b': half}}}
    code, status = create(api, body)
    assert (code, status['reason']) == (422, 'Invalid')
    assert status['details']['causes'] == [{'reason': 'FieldValueTooLong', 'field': 'metadata.annotations',
                                            'message': 'Too long: must have at most 262144 bytes'}]
    body['metadata']['annotations'] = {'a': half, 'b': half[:-2]}  # exactly 262144 bytes
    assert create(api, body)[0] == 201
    code, _ = send(api, 'PATCH', PATHS['ConfigMap'] + '/annotated', {'metadata': {'annotations': {'c': 'x'}}},
                   'application/merge-patch+json')
    assert code == 422  # an update that crosses the limit is refused too


def test_out_of_range_and_mistyped_integers(api):
    # int32 fields: the Go decoder refuses values it cannot hold, before validation (400, not 422).
    code, status = create(api, deployment('huge', replicas=2**31))
    assert (code, status['reason']) == (400, 'BadRequest')
    assert status['message'] == ('Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal '
                                 'number 2147483648 into Go struct field DeploymentSpec.spec.replicas of type int32')
    code, status = create(api, deployment('typed', replicas='3'))
    assert (code, status['reason']) == (400, 'BadRequest')
    assert 'cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32' in status['message']
    code, status = create(api, deployment('negative', replicas=-1))
    assert code == 422 and causes_by_field(status)['spec.replicas'] == 'Invalid value: -1: must be greater than or equal to 0'
    code, status = create(api, service('far', port=70000))
    assert (code, status['reason']) == (422, 'Invalid')
    assert causes_by_field(status)['spec.ports[0].port'] == 'Invalid value: 70000: must be between 1 and 65535, inclusive'
    assert create(api, deployment('largest', replicas=2**31 - 1))[0] == 201


def test_required_fields_and_enums_of_built_in_kinds(api):
    body = deployment('unselected')
    del body['spec']['selector']
    code, status = create(api, body)
    assert (code, status['reason']) == (422, 'Invalid') and causes_by_field(status)['spec.selector'] == 'Required value'
    body = deployment('imageless')
    del body['spec']['template']['spec']['containers'][0]['image']
    code, status = create(api, body)
    assert code == 422 and 'spec.template.spec.containers[0].image' in causes_by_field(status)
    body = job('restarts')
    body['spec']['template']['spec']['restartPolicy'] = 'Always'
    code, status = create(api, body)
    assert code == 422
    assert causes_by_field(status)['spec.template.spec.restartPolicy'].startswith('Unsupported value: "Always"')


def test_unknown_fields_are_dropped_or_refused_when_strict(api, kubectl):
    body = deployment('extra')
    body['spec']['surprise'] = True
    code, created = create(api, body)
    assert code == 201 and 'surprise' not in created['spec']  # without fieldValidation=Strict: dropped
    manifest = yaml.safe_dump({**deployment('extra-strict'), 'spec': {**deployment('x')['spec'], 'surprise': True}})
    result = kubectl('apply', '-f', '-', stdin=manifest)  # kubectl's default is --validate=strict
    assert result.returncode != 0 and 'unknown field "spec.surprise"' in result.stderr


def test_httproute_backend_refs_within_the_published_limits(api):
    refs = [{'name': f'svc-{i}', 'port': 8080, 'weight': 1} for i in range(17)]
    route = {'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'HTTPRoute', 'metadata': {'name': 'wide'},
             'spec': {'parentRefs': [{'name': 'gw'}], 'rules': [{'backendRefs': refs}]}}
    code, status = create(api, route)
    assert code == 422
    assert causes_by_field(status)['spec.rules[0].backendRefs'] == 'Too many: 17: must have at most 16 items'
    route['spec']['rules'][0]['backendRefs'] = [{'name': 'stable', 'port': 70000, 'weight': 1000001}]
    code, status = create(api, route)
    assert code == 422
    assert set(causes_by_field(status)) == {'spec.rules[0].backendRefs[0].port', 'spec.rules[0].backendRefs[0].weight'}
    route['spec']['rules'][0]['backendRefs'] = [{'name': 'stable', 'port': 8080, 'weight': 1000000}]
    assert create(api, route)[0] == 201


def test_kubectl_shows_the_servers_refusal(kubectl):
    name = 'k' * 64
    result = kubectl('apply', '-f', '-', stdin=yaml.safe_dump(service(name)))
    assert result.returncode != 0
    assert (f'The Service "{name}" is invalid: metadata.name: Invalid value: "{name}": must be no more than 63 characters'
            in result.stderr)
    result = kubectl('apply', '-f', '-', stdin=yaml.safe_dump(deployment('kubectl-huge', replicas=2**31)))
    assert result.returncode != 0
    assert 'Error from server (BadRequest)' in result.stderr and 'DeploymentSpec.spec.replicas of type int32' in result.stderr


def test_custom_resources_get_the_metadata_rules_and_examples_still_apply(kubectl, crd_installed):
    for path in sorted((ROOT / 'examples').glob('*.yaml')):
        result = kubectl('apply', '-f', str(path))
        assert result.returncode == 0, f'{path.name}: {result.stderr}'
    doc = next(d for d in yaml.safe_load_all((ROOT / 'examples' / 'fraud-detector.yaml').read_text()) if d)
    doc['metadata']['name'] = 'r' * 254
    result = kubectl('apply', '-f', '-', stdin=yaml.safe_dump(doc))
    assert result.returncode != 0 and 'must be no more than 253 characters' in result.stderr
    doc['metadata']['name'] = 'Upper'
    result = kubectl('apply', '-f', '-', stdin=yaml.safe_dump(doc))
    assert result.returncode != 0 and 'RFC 1123 subdomain' in result.stderr
