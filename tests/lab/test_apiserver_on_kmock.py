"""
The lab's API server is kmock's KubernetesEmulator underneath: what it serves is in kmock's store,
kmock's DSL reactions still answer first, and kube's strictness comes on top of kmock's routing.

Real HTTPS requests to 127.0.0.1; nothing is mocked.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import kubernetes
import pytest


@pytest.fixture(scope='module')
def core(apiserver_kubeconfig):
    with kubernetes.config.new_client_from_config(str(apiserver_kubeconfig)) as client:
        yield kubernetes.client.CoreV1Api(client)


def _request(apiserver, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """An admin's request (the lab CA and client certificate): (status, JSON body)."""
    request = urllib.request.Request(apiserver.url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(request, context=apiserver.authority.client_ssl_context(), timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_written_objects_are_in_kmocks_store_with_their_history(apiserver, core):
    core.create_namespaced_config_map('default', {'metadata': {'name': 'kept'}, 'data': {'round': '0'}})
    for round_ in ('1', '2'):
        core.patch_namespaced_config_map('kept', 'default', {'data': {'round': round_}})

    async def read() -> tuple[dict, list[dict]]:
        stored = apiserver.server.emulator.objects['v1/configmaps', 'default', 'kept']
        return dict(stored.raw), [dict(version) for version in stored.history]
    current, history = apiserver.call(read())

    assert current['data'] == {'round': '2'}
    assert [version['data']['round'] for version in history] == ['0', '1', '2']
    versions = [int(version['metadata']['resourceVersion']) for version in history]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert current['metadata']['resourceVersion'] == core.read_namespaced_config_map('kept', 'default').metadata.resource_version

    core.delete_namespaced_config_map('kept', 'default')

    async def deleted() -> bool:
        return bool(apiserver.server.emulator.objects['v1/configmaps', 'default', 'kept'].deleted)
    assert apiserver.call(deleted())  # kmock's soft deletion: the history stays for assertions


def test_a_kmock_reaction_answers_before_the_emulated_api(apiserver, core):
    core.create_namespaced_config_map('default', {'metadata': {'name': 'real'}, 'data': {'k': 'v'}})

    async def declare() -> None:
        emulator = apiserver.server.emulator
        emulator['get /api/v1/namespaces/default/configmaps/real'] << {'kind': 'ConfigMap', 'data': {'k': 'from kmock'}}
        emulator['get /custom/endpoint'] << {'hello': 'kmock'}
    apiserver.call(declare())

    assert _request(apiserver, 'GET', '/api/v1/namespaces/default/configmaps/real') == (
        200, {'kind': 'ConfigMap', 'data': {'k': 'from kmock'}})
    assert _request(apiserver, 'GET', '/custom/endpoint') == (200, {'hello': 'kmock'})
    # Without a reaction, the emulated API answers, as kube-apiserver would.
    status, listed = _request(apiserver, 'GET', '/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name%3Dreal')
    assert status == 200 and [item['data'] for item in listed['items']] == [{'k': 'v'}]


def test_paths_kmocks_parser_cannot_read_are_served(apiserver):
    # kmock 0.8 fails on the namespaces collection and reads /api/v1/namespaces/x as "namespace x".
    assert _request(apiserver, 'POST', '/api/v1/namespaces', {'metadata': {'name': 'parsed'}})[0] == 201
    status, listed = _request(apiserver, 'GET', '/api/v1/namespaces')
    assert status == 200 and 'parsed' in [item['metadata']['name'] for item in listed['items']]
    status, namespace = _request(apiserver, 'GET', '/api/v1/namespaces/parsed/')
    assert (status, namespace['kind'], namespace['status']) == (200, 'Namespace', {'phase': 'Active'})
    status, error = _request(apiserver, 'POST', '/api/v1/namespaces/parsed', {'metadata': {'name': 'parsed'}})
    assert (status, error['reason']) == (405, 'MethodNotAllowed')
    status, error = _request(apiserver, 'GET', '/api/v1/namespaces/parsed/widgets')
    assert (status, error['reason']) == (404, 'NotFound')


def test_watch_1_is_a_watch_as_in_kube(apiserver, core):
    core.create_namespaced_config_map('default', {'metadata': {'name': 'watched'}, 'data': {'k': 'v'}})
    request = urllib.request.Request(
        apiserver.url + '/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dwatched')
    with urllib.request.urlopen(request, context=apiserver.authority.client_ssl_context(), timeout=10) as answer:
        events = [json.loads(line) for line in answer.read().splitlines() if line.strip()]
    assert [(event['type'], event['object']['metadata']['name']) for event in events] == [('ADDED', 'watched')]


def test_the_server_in_a_process_of_its_own_serves_counts_and_stops(tmp_path):
    """The scale benchmark's layout: the server in its own process (so no client waits on the
    benchmark's GIL), with kubeconfigs, the requests it served by client, verb and resource, and a
    few status fields read without a request; stopping it ends the process."""
    from modelrollout_lab.apiserver import ProcessApiServer

    with ProcessApiServer() as server:
        kubeconfig = server.write_kubeconfig(tmp_path / 'kubeconfig')
        with kubernetes.config.new_client_from_config(str(kubeconfig)) as client:
            api = kubernetes.client.CoreV1Api(client)
            api.create_namespace({'metadata': {'name': 'apart'}})
            api.list_namespaced_config_map('apart')
            api.read_namespace_status('apart')
        counts = server.request_counts()
        agent = 'OpenAPI-Generator'  # the kubernetes client's User-Agent
        assert counts[(agent, 'post', 'namespaces')] == 1 and counts[(agent, 'list', 'configmaps')] == 1
        assert counts[(agent, 'get', 'namespaces/status')] == 1
        assert server.status_fields('v1', 'namespaces', ('phase',))[(None, 'apart')] == ('Active',)
    assert not server.process.is_alive()
