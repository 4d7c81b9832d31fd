"""
Conformance of the emulated API server with real clients: kubernetes (Python), kubectl, kopf.

Everything talks HTTP to 127.0.0.1; nothing is mocked.
"""
from __future__ import annotations

import json
import os
import pathlib
import queue
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

import kubernetes
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
KUBECTL = ROOT / '.venv' / 'bin' / 'kubectl'
CRD = ROOT / 'crds' / 'modelrollout.yaml'
GROUP, VERSION, PLURAL = 'modelrollout.io', 'v1alpha1', 'modelrollouts'
JSON_PATCH = 'application/json-patch+json'


def rollout(name: str, weight: int = 10, **labels: str) -> dict:
    return {
        'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'ModelRollout',
        'metadata': {'name': name, 'labels': labels or {'app': name}},
        'spec': {
            'selector': {'matchLabels': {'app': name}},
            'template': {'metadata': {'labels': {'app': name}},
                         'spec': {'containers': [{'name': 'model', 'image': 'model:1'}]}},
            'service': {'port': 8080},
            'trafficRouting': {'replicas': {}},
            'strategy': {'steps': [{'weight': weight, 'hold': '10s'}]},
        },
    }


def wait_for(fn, timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out waiting for {fn}')
        time.sleep(interval)


@pytest.fixture(scope='module')
def api(apiserver_kubeconfig) -> kubernetes.client.ApiClient:
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(str(apiserver_kubeconfig), client_configuration=cfg)
    with kubernetes.client.ApiClient(cfg) as client:
        yield client


@pytest.fixture(scope='module')
def crd_installed(api) -> None:
    body = yaml.safe_load(CRD.read_text())
    co = kubernetes.client.CustomObjectsApi(api)
    created = co.create_cluster_custom_object('apiextensions.k8s.io', 'v1', 'customresourcedefinitions', body)
    assert created['metadata']['name'] == 'modelrollouts.modelrollout.io'
    crd = co.get_cluster_custom_object('apiextensions.k8s.io', 'v1', 'customresourcedefinitions', created['metadata']['name'])
    conditions = {c['type']: c['status'] for c in crd['status']['conditions']}
    assert conditions == {'Established': 'True', 'NamesAccepted': 'True'}


@pytest.fixture()
def co(api, crd_installed) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


def status_of(exc: kubernetes.client.ApiException) -> dict:
    return json.loads(exc.body)


# ------------------------------------------------------------------------------------------------
# The kubernetes Python client.
# ------------------------------------------------------------------------------------------------
def test_create_get_list_with_server_fields_and_defaults(co):
    created = co.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, rollout('crud-a'))
    meta = created['metadata']
    assert meta['uid'] and int(meta['resourceVersion']) > 0
    assert meta['generation'] == 1 and meta['creationTimestamp'].endswith('Z')
    assert created['spec']['replicas'] == 1  # the schema's default
    assert created['kind'] == 'ModelRollout' and created['apiVersion'] == f'{GROUP}/{VERSION}'
    co.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, rollout('crud-b'))
    fetched = co.get_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'crud-a')
    assert fetched['metadata']['uid'] == meta['uid']
    listed = co.list_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL)
    assert listed['kind'] == 'ModelRolloutList' and listed['apiVersion'] == f'{GROUP}/{VERSION}'
    assert int(listed['metadata']['resourceVersion']) >= int(meta['resourceVersion']) + 1
    assert {'crud-a', 'crud-b'} <= {i['metadata']['name'] for i in listed['items']}
    assert all(i['kind'] == 'ModelRollout' for i in listed['items'])

    with pytest.raises(kubernetes.client.ApiException) as e:
        co.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, rollout('crud-a'))
    assert e.value.status == 409
    assert status_of(e.value)['reason'] == 'AlreadyExists'
    with pytest.raises(kubernetes.client.ApiException) as e:
        co.get_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'missing')
    st = status_of(e.value)
    assert e.value.status == 404 and st['kind'] == 'Status' and st['reason'] == 'NotFound'
    assert st['details']['name'] == 'missing' and st['message'] == 'modelrollouts.modelrollout.io "missing" not found'


def test_patches_resource_versions_and_generation(co):
    obj = co.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, rollout('patchy'))
    rv0 = int(obj['metadata']['resourceVersion'])
    # Metadata-only change: new resourceVersion, same generation.
    obj = co.patch_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'patchy', {'metadata': {'labels': {'x': 'y'}}})
    assert int(obj['metadata']['resourceVersion']) > rv0 and obj['metadata']['generation'] == 1
    # Spec change with a merge-patch null deleting a key: generation bumps.
    obj = co.patch_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'patchy',
                                            {'spec': {'model': {'name': 'm', 'version': '1'}}})
    obj = co.patch_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'patchy',
                                            {'spec': {'model': {'version': None}}})
    assert obj['spec']['model'] == {'name': 'm'} and obj['metadata']['generation'] == 3
    # A no-op patch changes nothing, not even the resourceVersion.
    same = co.patch_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'patchy', {'spec': {'model': {'name': 'm'}}})
    assert same['metadata']['resourceVersion'] == obj['metadata']['resourceVersion']
    # JSON patch: a passing `test` applies, a failing `test` is 422 and applies nothing.
    rv = obj['metadata']['resourceVersion']
    obj = co.patch_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'patchy', [
        {'op': 'test', 'path': '/metadata/resourceVersion', 'value': rv},
        {'op': 'add', 'path': '/metadata/annotations', 'value': {'a': 'b'}},
    ], _content_type=JSON_PATCH)
    assert obj['metadata']['annotations'] == {'a': 'b'}
    with pytest.raises(kubernetes.client.ApiException) as e:
        co.patch_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'patchy', [
            {'op': 'test', 'path': '/metadata/resourceVersion', 'value': rv},  # stale now
            {'op': 'replace', 'path': '/metadata/annotations', 'value': {'a': 'c'}},
        ], _content_type=JSON_PATCH)
    assert e.value.status == 422
    assert co.get_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'patchy')['metadata']['annotations'] == {'a': 'b'}
    # A merge patch carrying a stale resourceVersion conflicts.
    with pytest.raises(kubernetes.client.ApiException) as e:
        co.patch_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'patchy',
                                          {'metadata': {'resourceVersion': rv, 'labels': {'z': 'z'}}})
    assert e.value.status == 409 and status_of(e.value)['reason'] == 'Conflict'


def test_replace_with_stale_resource_version_conflicts(co):
    obj = co.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, rollout('repl'))
    stale = json.loads(json.dumps(obj))
    obj['spec']['replicas'] = 2
    obj = co.replace_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'repl', obj)
    assert obj['spec']['replicas'] == 2 and obj['metadata']['generation'] == 2
    stale['spec']['replicas'] = 5
    with pytest.raises(kubernetes.client.ApiException) as e:
        co.replace_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'repl', stale)
    assert e.value.status == 409
    st = status_of(e.value)
    assert st['reason'] == 'Conflict' and 'the object has been modified' in st['message']
    assert co.get_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'repl')['spec']['replicas'] == 2


def test_status_subresource_isolation_and_pruning(co):
    co.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, {**rollout('stat'), 'status': {'phase': 'Succeeded'}})
    obj = co.get_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'stat')
    assert 'status' not in obj  # status is dropped on create
    # Status through the main resource is ignored.
    obj = co.patch_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'stat', {'status': {'phase': 'Paused'}})
    assert 'status' not in obj
    # Through /status: only the status changes; undeclared fields are pruned silently; generation stays.
    obj = co.patch_namespaced_custom_object_status(GROUP, VERSION, 'default', PLURAL, 'stat', {
        'spec': {'replicas': 7}, 'metadata': {'labels': {'sneaky': 'yes'}},
        'status': {'phase': 'Progressing', 'canaryWeight': 10, 'undeclared': 'x',
                   'kopf': {'progress': {}}, 'lastAnalysis': [{'metric': 'm', 'value': None, 'junk': 1}]},
    })
    assert obj['status'] == {'phase': 'Progressing', 'canaryWeight': 10, 'lastAnalysis': [{'metric': 'm', 'value': None}]}
    assert obj['spec']['replicas'] == 1 and 'sneaky' not in obj['metadata']['labels']
    assert obj['metadata']['generation'] == 1
    # Status is validated too.
    with pytest.raises(kubernetes.client.ApiException) as e:
        co.patch_namespaced_custom_object_status(GROUP, VERSION, 'default', PLURAL, 'stat', {'status': {'phase': 'Bogus'}})
    assert e.value.status == 422 and status_of(e.value)['details']['causes'][0]['field'] == 'status.phase'


def test_schema_validation_messages(co):
    with pytest.raises(kubernetes.client.ApiException) as e:
        co.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, rollout('bad', weight=150))
    st = status_of(e.value)
    assert e.value.status == 422 and st['reason'] == 'Invalid'
    assert st['details']['causes'][0]['field'] == 'spec.strategy.steps[0].weight'
    assert st['message'] == ('ModelRollout.modelrollout.io "bad" is invalid: spec.strategy.steps[0].weight: Invalid value: '
                             '150: spec.strategy.steps[0].weight in body should be less than or equal to 100')
    body = rollout('bad2')
    del body['spec']['service']
    body['spec']['trafficRouting'] = {'replicas': {}, 'gatewayAPI': {'httpRoute': ''}}
    body['spec']['strategy']['steps'][0]['hold'] = 'soon'
    body['spec']['analysis'] = {'preset': 'nope'}
    with pytest.raises(kubernetes.client.ApiException) as e:
        co.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, body)
    fields = {c['field']: c['reason'] for c in status_of(e.value)['details']['causes']}
    assert fields == {
        'spec.service': 'FieldValueRequired',
        'spec.trafficRouting': 'FieldValueTooMany',
        'spec.trafficRouting.gatewayAPI.httpRoute': 'FieldValueInvalid',
        'spec.strategy.steps[0].hold': 'FieldValueInvalid',
        'spec.analysis.preset': 'FieldValueNotSupported',
    }


def test_strategic_merge_patch_and_deployment_status(api):
    apps = kubernetes.client.AppsV1Api(api)
    dep = {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': {'name': 'smp'},
           'spec': {'selector': {'matchLabels': {'app': 'smp'}},
                    'template': {'metadata': {'labels': {'app': 'smp'}},
                                 'spec': {'containers': [{'name': 'a', 'image': 'a:1'}, {'name': 'b', 'image': 'b:1',
                                                                                       'env': [{'name': 'X', 'value': '1'}]}]}}}}
    created = apps.create_namespaced_deployment('default', dep)
    assert created.spec.replicas == 1 and created.metadata.generation == 1
    patched = apps.patch_namespaced_deployment('smp', 'default', {'spec': {'template': {'spec': {'containers': [
        {'name': 'b', 'image': 'b:2', 'env': [{'name': 'Y', 'value': '2'}]}]}}}})
    containers = {c.name: c for c in patched.spec.template.spec.containers}
    assert set(containers) == {'a', 'b'} and containers['b'].image == 'b:2'
    assert {e.name for e in containers['b'].env} == {'X', 'Y'}
    assert patched.metadata.generation == 2
    st = apps.patch_namespaced_deployment_status('smp', 'default', {'status': {'readyReplicas': 1, 'observedGeneration': 2}})
    assert st.status.ready_replicas == 1 and st.metadata.generation == 2
    again = apps.patch_namespaced_deployment('smp', 'default', {'status': {'readyReplicas': 5}})
    assert again.status.ready_replicas == 1


def test_label_and_field_selectors(api):
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({'metadata': {'name': 'sel'}})
    for name, labels in [('c1', {'tier': 'a', 'env': 'prod'}), ('c2', {'tier': 'b', 'env': 'dev'}), ('c3', {'tier': 'c'})]:
        core.create_namespaced_config_map('sel', {'metadata': {'name': name, 'labels': labels}, 'data': {'k': 'v'}})

    def names(**kw):
        return sorted(i.metadata.name for i in core.list_namespaced_config_map('sel', **kw).items)
    assert names(label_selector='tier=a') == ['c1']
    assert names(label_selector='tier==b') == ['c2']
    assert names(label_selector='tier!=a') == ['c2', 'c3']
    assert names(label_selector='tier in (a,c)') == ['c1', 'c3']
    assert names(label_selector='tier notin (a,c)') == ['c2']
    assert names(label_selector='env') == ['c1', 'c2']
    assert names(label_selector='!env') == ['c3']
    assert names(label_selector='env,tier notin (b)') == ['c1']
    assert names(field_selector='metadata.name=c2') == ['c2']
    assert names(field_selector='metadata.name!=c2') == ['c1', 'c3']
    listed = core.list_config_map_for_all_namespaces(field_selector='metadata.namespace=sel')
    assert len(listed.items) == 3 and listed.kind == 'ConfigMapList'


def test_watch_from_resource_version_sees_only_later_events(co):
    co.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, rollout('w-a', app='watched'))
    rv = co.list_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL)['metadata']['resourceVersion']
    co.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, rollout('w-b', app='watched'))
    co.patch_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'w-a', {'spec': {'replicas': 4}})
    co.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, rollout('w-other', app='other'))
    co.delete_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'w-b')
    w = kubernetes.watch.Watch()
    events = [(ev['type'], ev['object']['metadata']['name'], ev['object']['kind'])
              for ev in w.stream(co.list_namespaced_custom_object, GROUP, VERSION, 'default', PLURAL,
                                 resource_version=rv, label_selector='app=watched', timeout_seconds=1)]
    assert events == [('ADDED', 'w-b', 'ModelRollout'), ('MODIFIED', 'w-a', 'ModelRollout'), ('DELETED', 'w-b', 'ModelRollout')]
    # Without a resourceVersion: the existing objects first, as ADDED.
    w = kubernetes.watch.Watch()
    names = [(ev['type'], ev['object']['metadata']['name'])
             for ev in w.stream(co.list_namespaced_custom_object, GROUP, VERSION, 'default', PLURAL,
                                label_selector='app=watched', timeout_seconds=1)]
    assert names == [('ADDED', 'w-a')]


def test_watch_live_events_and_gone_resource_version(tmp_path):
    from modelrollout_lab.apiserver import start_in_thread
    with start_in_thread(history=5) as srv:
        cfg = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(str(srv.write_kubeconfig(tmp_path / 'config')), client_configuration=cfg)
        with kubernetes.client.ApiClient(cfg) as client:
            core = kubernetes.client.CoreV1Api(client)
            start_rv = core.list_namespaced_config_map('default').metadata.resource_version
            received: list = []

            def consume():
                w = kubernetes.watch.Watch()
                for ev in w.stream(core.list_namespaced_config_map, 'default', resource_version=start_rv, timeout_seconds=3):
                    received.append((ev['type'], ev['object'].metadata.name))
                    if len(received) == 2:
                        w.stop()
            t = threading.Thread(target=consume)
            t.start()
            time.sleep(0.3)
            core.create_namespaced_config_map('default', {'metadata': {'name': 'live'}})
            core.delete_namespaced_config_map('live', 'default')
            t.join(10)
            assert received == [('ADDED', 'live'), ('DELETED', 'live')]
            for i in range(10):  # push the start out of the bounded history
                core.create_namespaced_config_map('default', {'metadata': {'name': f'h{i}'}})
            with urllib.request.urlopen(f'{srv.url}/api/v1/namespaces/default/configmaps?watch=true'
                                        f'&resourceVersion={start_rv}', timeout=5,
                                        context=srv.authority.client_ssl_context()) as resp:
                line = json.loads(resp.readline())
            assert line['type'] == 'ERROR' and line['object']['code'] == 410 and line['object']['reason'] == 'Expired'


def test_finalizers_and_owner_reference_gc(api):
    core = kubernetes.client.CoreV1Api(api)
    owner = core.create_namespaced_config_map('default', {'metadata': {'name': 'owner', 'finalizers': ['lab/hold']}})
    ref = {'apiVersion': 'v1', 'kind': 'ConfigMap', 'name': 'owner', 'uid': owner.metadata.uid}
    core.create_namespaced_config_map('default', {'metadata': {'name': 'child', 'ownerReferences': [ref]}})
    core.create_namespaced_config_map('default', {'metadata': {'name': 'unrelated'}})
    core.delete_namespaced_config_map('owner', 'default')
    held = core.read_namespaced_config_map('owner', 'default')
    assert held.metadata.deletion_timestamp is not None and held.metadata.finalizers == ['lab/hold']
    time.sleep(0.2)
    assert core.read_namespaced_config_map('child', 'default')  # the owner still exists
    core.patch_namespaced_config_map('owner', 'default', {'metadata': {'finalizers': None}})
    with pytest.raises(kubernetes.client.ApiException) as e:
        core.read_namespaced_config_map('owner', 'default')
    assert e.value.status == 404

    def child_gone():
        try:
            core.read_namespaced_config_map('child', 'default')
        except kubernetes.client.ApiException as exc:
            return exc.status == 404
        return False
    wait_for(child_gone, timeout=5)
    assert core.read_namespaced_config_map('unrelated', 'default')


# ------------------------------------------------------------------------------------------------
# Real kubectl.
# ------------------------------------------------------------------------------------------------
MANIFEST = """\
apiVersion: modelrollout.io/v1alpha1
kind: ModelRollout
metadata:
  name: {name}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{containers: [{{name: model, image: "model:1"}}]}}
  service: {{port: 8080}}
  trafficRouting: {{replicas: {{}}}}
  strategy:
    steps: [{{weight: {weight}, hold: 10s}}]
"""


@pytest.fixture(scope='module')
def kubectl(apiserver_kubeconfig, tmp_path_factory):
    home = tmp_path_factory.mktemp('kubectl-home')
    env = {**os.environ, 'KUBECONFIG': str(apiserver_kubeconfig), 'HOME': str(home),
           'KUBECACHEDIR': str(home / 'cache')}

    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([str(KUBECTL), *args], env=env, input=input, capture_output=True, text=True, timeout=30)
        if check and result.returncode != 0:
            raise AssertionError(f'kubectl {" ".join(args)} failed: {result.stderr}')
        return result
    run.env = env  # type: ignore[attr-defined]
    return run


def test_kubectl_apply_get_patch_delete(kubectl, crd_installed, co):
    out = kubectl('apply', '-f', str(CRD)).stdout
    assert 'customresourcedefinition.apiextensions.k8s.io/modelrollouts.modelrollout.io' in out
    assert 'created' in kubectl('apply', '-f', '-', input=MANIFEST.format(name='kc', weight=10)).stdout
    assert 'unchanged' in kubectl('apply', '-f', '-', input=MANIFEST.format(name='kc', weight=10)).stdout
    assert 'configured' in kubectl('apply', '-f', '-', input=MANIFEST.format(name='kc', weight=20)).stdout
    obj = co.get_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'kc')
    assert obj['spec']['strategy']['steps'] == [{'weight': 20, 'hold': '10s'}] and obj['metadata']['generation'] == 2

    co.patch_namespaced_custom_object_status(GROUP, VERSION, 'default', PLURAL, 'kc', {'status': {
        'phase': 'Progressing', 'currentStep': 0, 'canaryWeight': 20, 'stableRevision': 'abc12',
        'canaryRevision': 'def34', 'message': 'analysing step 0'}})
    table = kubectl('get', 'modelrollouts', 'kc').stdout.splitlines()
    assert table[0].split() == ['NAME', 'PHASE', 'STEP', 'WEIGHT', 'STABLE', 'CANARY', 'AGE']
    row = table[1].split()
    assert row[:6] == ['kc', 'Progressing', '0', '20', 'abc12', 'def34'] and row[6].endswith(('s', 'm'))
    wide = kubectl('get', 'mro', 'kc', '-o', 'wide').stdout.splitlines()
    assert wide[0].split()[-1] == 'MESSAGE' and wide[1].endswith('analysing step 0')
    assert 'kc' in kubectl('get', 'mro').stdout

    bad = kubectl('apply', '-f', '-', input=MANIFEST.format(name='kc-bad', weight=150), check=False)
    assert bad.returncode != 0
    assert 'spec.strategy.steps[0].weight' in bad.stderr and 'less than or equal to 100' in bad.stderr
    unknown = MANIFEST.format(name='kc-unknown', weight=10).replace('{port: 8080}', '{port: 8080, foo: 1}')
    strict = kubectl('apply', '-f', '-', input=unknown, check=False)  # kubectl's default --validate=strict
    assert strict.returncode != 0 and 'unknown field "spec.service.foo"' in strict.stderr

    assert 'patched' in kubectl('patch', 'mro', 'kc', '--type', 'merge', '-p', '{"spec":{"replicas":3}}').stdout
    assert co.get_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'kc')['spec']['replicas'] == 3
    got = json.loads(kubectl('get', 'mro', 'kc', '-o', 'json').stdout)
    assert got['status']['phase'] == 'Progressing'

    assert 'deleted' in kubectl('delete', 'mro', 'kc', '--timeout=10s').stdout
    assert 'NotFound' in kubectl('get', 'mro', 'kc', check=False).stderr


def test_kubectl_get_watch_streams_changes(kubectl, co, apiserver):
    co.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, rollout('kw'))
    proc = subprocess.Popen([str(KUBECTL), 'get', 'mro', 'kw', '-w', '--request-timeout=20s'], env=kubectl.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        assert lines.get(timeout=15).split()[0] == 'NAME'
        assert lines.get(timeout=15).split()[0] == 'kw'
        # kubectl GETs the object, prints it, then watches it from resourceVersion=0 and skips the first
        # event (the synthetic ADDED of the current state): a change made before that watch is open is
        # folded into the skipped ADDED and never printed (with kube-apiserver too). So wait for the watch.
        wait_for(lambda: any(w.get('fieldSelector') == 'metadata.name=kw'
                             for w in apiserver.open_watches(f'{GROUP}/{VERSION}', PLURAL)), timeout=15)
        co.patch_namespaced_custom_object_status(GROUP, VERSION, 'default', PLURAL, 'kw',
                                                 {'status': {'phase': 'Paused', 'canaryWeight': 30}})
        deadline = time.monotonic() + 15
        while True:  # tolerate unchanged rows (kubectl skips only the first event of its watch)
            changed = lines.get(timeout=max(0.1, deadline - time.monotonic())).split()
            if 'Paused' in changed:
                break
        assert changed[:2] == ['kw', 'Paused'] and '30' in changed
    finally:
        proc.kill()
        proc.wait()


def test_kubectl_namespaces_and_builtins(kubectl):
    assert 'namespace/team-a created' in kubectl('create', 'namespace', 'team-a').stdout
    assert 'team-a' in kubectl('get', 'ns').stdout
    cm = 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: team-a}\ndata: {k: v}\n'
    assert 'created' in kubectl('apply', '-f', '-', input=cm).stdout
    assert json.loads(kubectl('get', 'cm', 'cfg', '-n', 'team-a', '-o', 'json').stdout)['data'] == {'k': 'v'}
    out = kubectl('create', 'configmap', 'made', '-n', 'team-a', '--from-literal=a=b').stdout
    assert 'configmap/made created' in out
    made = json.loads(kubectl('get', 'cm', 'made', '-n', 'team-a', '-o', 'json').stdout)
    assert made['data'] == {'a': 'b'} and made['metadata']['namespace'] == 'team-a'


# ------------------------------------------------------------------------------------------------
# Kopf, as a real operator process.
# ------------------------------------------------------------------------------------------------
KOPF_OPERATOR = '''
import kopf

@kopf.on.startup()
def configure(settings, **_):
    settings.posting.level = 10

@kopf.on.create('modelrollout.io', 'v1alpha1', 'modelrollouts')
def created(body, patch, logger, **_):
    kopf.event(body, type='Normal', reason='Seen', message='seen by kopf')
    patch.status['phase'] = 'Initializing'
    patch.status['message'] = 'seen by kopf'
    logger.info('created!')

@kopf.on.delete('modelrollout.io', 'v1alpha1', 'modelrollouts')
def deleted(logger, **_):
    logger.info('deleted!')
'''


def test_kopf_operator_handles_create_and_delete(apiserver_kubeconfig, co, tmp_path, api):
    script = tmp_path / 'op.py'
    script.write_text(textwrap.dedent(KOPF_OPERATOR))
    env = {**os.environ, 'KUBECONFIG': str(apiserver_kubeconfig)}
    kopf_bin = pathlib.Path(sys.executable).parent / 'kopf'
    log = tmp_path / 'kopf.log'
    with open(log, 'w') as logf:
        proc = subprocess.Popen([str(kopf_bin), 'run', '--standalone', '--namespace=kopf-ns', str(script)],
                                env=env, stdout=logf, stderr=subprocess.STDOUT)
    try:
        kubernetes.client.CoreV1Api(api).create_namespace({'metadata': {'name': 'kopf-ns'}})
        co.create_namespaced_custom_object(GROUP, VERSION, 'kopf-ns', PLURAL, rollout('kopfed'))

        def handled():
            obj = co.get_namespaced_custom_object(GROUP, VERSION, 'kopf-ns', PLURAL, 'kopfed')
            return obj if (obj.get('status') or {}).get('phase') == 'Initializing' else None
        obj = wait_for(handled, timeout=30)
        assert obj['status']['message'] == 'seen by kopf'
        assert 'kopf' not in obj['status']  # kopf's progress/status fields are pruned by the schema
        assert 'kopf.zalando.org/KopfFinalizerMarker' in obj['metadata']['finalizers']
        assert 'kopf.zalando.org/last-handled-configuration' in obj['metadata']['annotations']
        assert obj['metadata']['generation'] == 1
        core = kubernetes.client.CoreV1Api(api)
        wait_for(lambda: any(e.involved_object.name == 'kopfed' and e.reason == 'Seen'
                             for e in core.list_namespaced_event('kopf-ns').items))  # kopf.event() was posted

        co.delete_namespaced_custom_object(GROUP, VERSION, 'kopf-ns', PLURAL, 'kopfed')

        def gone():
            try:
                co.get_namespaced_custom_object(GROUP, VERSION, 'kopf-ns', PLURAL, 'kopfed')
            except kubernetes.client.ApiException as e:
                return e.status == 404
            return False
        wait_for(gone, timeout=30)
        text = log.read_text()
        assert 'created!' in text and 'deleted!' in text
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    text = log.read_text()
    assert 'Traceback' not in text and 'APIClientError' not in text and 'APIServerError' not in text, text


# ------------------------------------------------------------------------------------------------
# The command-line entry point.
# ------------------------------------------------------------------------------------------------
def test_cli_entry_point_writes_kubeconfig_and_serves(tmp_path):
    kubeconfig = tmp_path / 'kubeconfig'
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT / 'operator'), os.environ.get('PYTHONPATH')]))}
    proc = subprocess.Popen([sys.executable, '-m', 'modelrollout_lab.apiserver', '--port', '0', '--kubeconfig', str(kubeconfig)],
                            env=env, stdout=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline().split()
        assert ready[0] == 'READY' and ready[1].startswith('https://127.0.0.1:')
        config = yaml.safe_load(kubeconfig.read_text())
        assert config['current-context'] == 'modelrollout-lab'
        assert config['clusters'][0]['cluster']['server'] == ready[1]
        with kubernetes.config.new_client_from_config(str(kubeconfig)) as client:  # the CA and an admin certificate
            assert kubernetes.client.VersionApi(client).get_code().git_version.startswith('v1.3')
        proc.send_signal(15)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
