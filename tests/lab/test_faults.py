"""Faults injected by the lab API server, as the kubernetes Python client sees them."""
from __future__ import annotations

import json
import time

import kubernetes
import pytest
from kubernetes.client.rest import ApiException

NS = 'default'


@pytest.fixture(scope='module')
def faults(apiserver):
    return apiserver.server.faults


@pytest.fixture()
def core(apiserver_kubeconfig, faults):
    """A CoreV1Api with its own User-Agent (so rules can pick it) and a ConfigMap to work on; no faults after.

    Its retries are off, so each answer is seen as sent (urllib3 retries a 429 after its Retry-After by default).
    """
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(apiserver_kubeconfig), client_configuration=configuration)
    configuration.retries = False
    client = kubernetes.client.ApiClient(configuration)
    client.user_agent = 'fault-test/1'
    api = kubernetes.client.CoreV1Api(client)
    faults.clear()
    try:
        api.create_namespaced_config_map(NS, {'metadata': {'name': 'target'}, 'data': {'k': 'v'}})
    except ApiException as e:
        assert e.status == 409
    yield api
    faults.clear()
    client.close()


def status_of(caught: pytest.ExceptionInfo[ApiException]) -> dict:
    return json.loads(caught.value.body)


def test_conflict_on_writes_only(core, faults):
    faults.set(conflict=1.0)
    assert core.read_namespaced_config_map('target', NS).data == {'k': 'v'}  # reads are never conflicts
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_config_map('target', NS, {'data': {'k': 'w'}})
    status = status_of(caught)
    assert (caught.value.status, status['reason']) == (409, 'Conflict')
    assert 'the object has been modified' in status['message'] and status['details']['name'] == 'target'
    faults.clear()
    assert core.read_namespaced_config_map('target', NS).data == {'k': 'v'}  # the refused write changed nothing


def test_a_rule_can_pick_the_writes_whose_body_matches(core, faults):
    faults.set(error=1.0, body=r'"k": "x"')
    core.patch_namespaced_config_map('target', NS, {'data': {'k': 'w'}})  # another body: served
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_config_map('target', NS, {'data': {'k': 'x'}})
    assert caught.value.status == 500
    assert core.read_namespaced_config_map('target', NS).data == {'k': 'w'}
    core.patch_namespaced_config_map('target', NS, {'data': {'k': 'v'}})


def test_internal_error(core, faults):
    faults.set(error=1.0)
    with pytest.raises(ApiException) as caught:
        core.list_namespaced_config_map(NS)
    assert (caught.value.status, status_of(caught)['reason']) == (500, 'InternalError')


def test_throttle_with_retry_after(core, faults):
    faults.set(throttle=1.0, retry_after=3)
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_config_map('target', NS)
    assert caught.value.status == 429 and caught.value.headers['Retry-After'] == '3'
    status = status_of(caught)
    assert status['reason'] == 'TooManyRequests' and status['details']['retryAfterSeconds'] == 3


def test_slow_answers(core, faults):
    faults.set(slow=(1.0, 0.4))
    started = time.monotonic()
    assert core.read_namespaced_config_map('target', NS).data == {'k': 'v'}
    assert time.monotonic() - started >= 0.4


def test_watch_from_a_resource_version_expires(core, faults):
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    faults.set(gone_watch=1.0)
    events = core.list_namespaced_config_map(NS, watch=True, resource_version=rv, timeout_seconds=5,
                                             _preload_content=False)
    lines = [json.loads(line) for line in events.read().splitlines() if line.strip()]
    assert events.status == 200 and len(lines) == 1  # one ERROR event, then the server closes the watch
    assert lines[0]['type'] == 'ERROR'
    assert (lines[0]['object']['code'], lines[0]['object']['reason']) == (410, 'Expired')
    with pytest.raises(ApiException) as caught:  # what the client's watch helper makes of it
        for _ in kubernetes.watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=rv,
                                                 timeout_seconds=5):
            pass
    assert caught.value.status == 410


def test_rules_pick_identity_user_agent_verb_and_resource(core, faults, apiserver_kubeconfig):
    other_client = kubernetes.config.new_client_from_config(config_file=str(apiserver_kubeconfig))
    other = kubernetes.client.CoreV1Api(other_client)  # the default User-Agent: OpenAPI-Generator/...
    try:
        faults.set(error=1.0, user_agent=r'^fault-test/')
        assert other.read_namespaced_config_map('target', NS)
        with pytest.raises(ApiException):
            core.read_namespaced_config_map('target', NS)
        faults.set(error=1.0, verbs=['list'])
        assert core.read_namespaced_config_map('target', NS)
        with pytest.raises(ApiException):
            core.list_namespaced_config_map(NS)
        faults.set(error=1.0, resources=['secrets'])
        assert core.read_namespaced_config_map('target', NS)
        faults.set(error=1.0, identity=r'^no-such-user$')
        assert core.read_namespaced_config_map('target', NS)
    finally:
        other_client.close()


def outcomes(core, n: int) -> list[int]:
    codes = []
    for _ in range(n):
        try:
            core.read_namespaced_config_map('target', NS)
            codes.append(200)
        except ApiException as e:
            codes.append(e.status)
    return codes


def test_rates_are_honoured_and_seeded_draws_repeat(core, faults):
    before = dict(faults.counts)
    faults.set(error=0.2, throttle=0.1, seed=11)
    first = outcomes(core, 300)
    assert 30 <= first.count(500) <= 90 and 10 <= first.count(429) <= 50
    assert faults.counts['error'] - before.get('error', 0) == first.count(500)
    assert faults.counts['throttle'] - before.get('throttle', 0) == first.count(429)
    faults.set(error=0.2, throttle=0.1, seed=11)
    assert outcomes(core, 300) == first
    with pytest.raises(ValueError):
        faults.set(error=1.5)


def test_rules_pick_the_authenticated_identity(core, faults, apiserver):
    if getattr(apiserver.server, 'authority', None) is None:
        pytest.skip('this lab API server does not authenticate requests')
    from modelrollout_lab.auth import ADMIN  # the fixture's kubeconfig: the admin's client certificate
    faults.set(error=1.0, identity=f'^{ADMIN.name}$')
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_config_map('target', NS)
    assert caught.value.status == 500
    faults.set(error=1.0, identity=f'^{ADMIN.name}-not$')
    assert core.read_namespaced_config_map('target', NS)
