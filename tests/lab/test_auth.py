"""The lab API server authenticates and authorizes like kube-apiserver (issue 10).

Anonymous and unknown credentials get 401; kubectl works with the admin's client certificate;
the chart's ServiceAccount may do exactly what the chart's RBAC grants (403 with kube-apiserver's
message otherwise, and SelfSubjectAccessReviews say so); and a whole release completes with the
operator on each credential the lab offers, including a token rotated mid-release.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import kubernetes
import pytest

from modelrollout_lab import scenarios
from modelrollout_lab.auth import ADMIN
from modelrollout_lab.lab import Lab, crd_manifest
from modelrollout.access import NEEDED
from modelrollout_lab.rbac import Attributes, Authorizer, chart_rbac, operator_identity

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = str(Path(sys.executable).with_name("kubectl"))
SA = operator_identity(chart_rbac())
STATUS_PATCH = {"status": {"message": "written by the operator's identity"}}


def raw_request(server, path: str, *, token: str | None = None, context: ssl.SSLContext | None = None):
    """GET `path` with urllib (no client library in between): (code, decoded JSON body)."""
    request = urllib.request.Request(server.url + path)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    context = context or ssl.create_default_context(cadata=server.authority.ca_pem.decode())
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def client(kubeconfig: Path) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(str(kubeconfig))


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          timeout=30)


@pytest.fixture(scope="module")
def cluster(apiserver, apiserver_kubeconfig):
    """The module's API server with the CRD, the chart's RBAC (as the lab applies it) and one rollout."""
    admin = client(apiserver_kubeconfig)
    dynamic = kubernetes.dynamic.DynamicClient(admin)
    for doc in [crd_manifest(), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "modelrollout-system"}},
                *chart_rbac()]:
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        resource.create(body=doc, namespace=doc["metadata"].get("namespace"))
    kubernetes.client.CustomObjectsApi(admin).create_namespaced_custom_object(
        "modelrollout.io", "v1alpha1", "default", "modelrollouts", scenarios.rollout("fraud"))
    kubernetes.client.CoreV1Api(admin).create_namespaced_secret(
        "default", {"metadata": {"name": "db-password"}, "stringData": {"password": "hunter2"}})
    return apiserver


def test_anonymous_requests_are_refused_with_401(cluster):
    code, body = raw_request(cluster, "/api/v1/namespaces/default/secrets")
    assert code == 401
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    assert raw_request(cluster, "/version")[0] == 401
    with urllib.request.urlopen(cluster.url + "/readyz", timeout=5,
                                context=ssl.create_default_context(cadata=cluster.authority.ca_pem.decode())) as r:
        assert r.status == 200  # health endpoints stay open, as on a cluster


def test_unknown_expired_and_rotated_tokens_are_refused_with_401(cluster):
    assert raw_request(cluster, "/api/v1/namespaces", token="not-a-token")[0] == 401
    short = cluster.issue_token(ADMIN, ttl=0.3)
    assert raw_request(cluster, "/api/v1/namespaces", token=short)[0] == 200
    time.sleep(0.4)
    assert raw_request(cluster, "/api/v1/namespaces", token=short)[0] == 401
    old = cluster.issue_token(ADMIN)
    new = cluster.rotate_token(old)
    assert raw_request(cluster, "/api/v1/namespaces", token=old)[0] == 401
    assert raw_request(cluster, "/api/v1/namespaces", token=new)[0] == 200
    # A bad token is not excused by a valid certificate on the same connection.
    admin_tls = cluster.authority.client_ssl_context()
    assert raw_request(cluster, "/api/v1/namespaces", context=admin_tls)[0] == 200
    assert raw_request(cluster, "/api/v1/namespaces", token="not-a-token", context=admin_tls)[0] == 401


def test_kubectl_works_with_the_admin_client_certificate(cluster, apiserver_kubeconfig, tmp_path):
    whoami = kubectl(apiserver_kubeconfig, "auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    user = json.loads(whoami.stdout)["status"]["userInfo"]
    assert user["username"] == "lab-admin" and "system:masters" in user["groups"]
    listed = kubectl(apiserver_kubeconfig, "get", "secrets", "-o", "name")
    assert listed.returncode == 0 and "secret/db-password" in listed.stdout
    # A kubeconfig whose token was rotated away: kubectl reports what kube-apiserver says.
    stale = cluster.issue_token(ADMIN)
    cluster.rotate_token(stale)
    refused = kubectl(cluster.write_kubeconfig(tmp_path / "stale", token=stale), "get", "secrets")
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr


@pytest.mark.parametrize("credential", ["certificate", "token"])
def test_the_chart_service_account_gets_exactly_the_charts_permissions(cluster, tmp_path, credential):
    kubeconfig = (cluster.write_kubeconfig(tmp_path / "sa", user=SA) if credential == "certificate"
                  else cluster.write_kubeconfig(tmp_path / "sa", token=cluster.issue_token(SA)))
    with client(kubeconfig) as api:
        custom = kubernetes.client.CustomObjectsApi(api)
        patched = custom.patch_namespaced_custom_object_status("modelrollout.io", "v1alpha1", "default",
                                                               "modelrollouts", "fraud", STATUS_PATCH)
        assert patched["status"]["message"] == STATUS_PATCH["status"]["message"]
        with pytest.raises(kubernetes.client.ApiException) as denied:
            kubernetes.client.CoreV1Api(api).read_namespaced_secret("db-password", "default")
        with pytest.raises(kubernetes.client.ApiException) as spec_write:
            custom.replace_namespaced_custom_object("modelrollout.io", "v1alpha1", "default", "modelrollouts", "fraud",
                                                    custom.get_namespaced_custom_object(
                                                        "modelrollout.io", "v1alpha1", "default", "modelrollouts",
                                                        "fraud"))
    assert denied.value.status == 403
    status = json.loads(denied.value.body)
    assert status["reason"] == "Forbidden" and status["details"] == {"name": "db-password", "kind": "secrets"}
    assert status["message"] == (
        'secrets "db-password" is forbidden: User "system:serviceaccount:modelrollout-system:modelrollout" '
        'cannot get resource "secrets" in API group "" in the namespace "default"')
    assert spec_write.value.status == 403  # the chart grants patch on modelrollouts, never update
    assert 'cannot update resource "modelrollouts" in API group "modelrollout.io"' in json.loads(
        spec_write.value.body)["message"]


def test_self_subject_access_reviews_answer_from_the_same_rules(cluster, tmp_path):
    kubeconfig = cluster.write_kubeconfig(tmp_path / "sa", user=SA)
    with client(kubeconfig) as api:
        reviews = kubernetes.client.AuthorizationV1Api(api)

        def can(verb, resource, group="", subresource="", namespace="ml"):
            body = {"spec": {"resourceAttributes": {"verb": verb, "resource": resource, "group": group,
                                                    "subresource": subresource, "namespace": namespace}}}
            return reviews.create_self_subject_access_review(body).status.allowed

        assert can("patch", "modelrollouts", "modelrollout.io", "status")
        assert can("watch", "modelrollouts", "modelrollout.io", namespace="")  # cluster-wide (ClusterRoleBinding)
        assert can("create", "deployments", "apps")
        assert not can("get", "secrets")
        assert not can("update", "modelrollouts", "modelrollout.io")
        assert not can("delete", "modelrollouts", "modelrollout.io", "status")
    for args, answer in [(("patch", "modelrollouts.modelrollout.io", "--subresource=status", "-n", "ml"), "yes"),
                         (("get", "secrets", "-n", "ml"), "no")]:
        result = kubectl(kubeconfig, "auth", "can-i", *args)
        assert result.stdout.strip() == answer, result.stderr


def test_the_packaged_chart_rbac_is_what_helm_renders_today():
    pytest.importorskip("helm_python", reason="helm-python-sdk is in the [test] extra")
    from modelrollout_lab.rbac import render_chart_rbac

    assert chart_rbac() == render_chart_rbac(ROOT / "helm" / "modelrollout"), \
        "helm/modelrollout changed: run `python -m modelrollout_lab.rbac` to render the lab's copy again"


def test_a_namespaced_install_grants_only_in_its_namespaces():
    """watchNamespaces renders a Role and RoleBinding per namespace: nothing elsewhere, nothing cluster-wide."""
    pytest.importorskip("helm_python", reason="helm-python-sdk is in the [test] extra")
    from modelrollout_lab.rbac import render_chart_rbac

    documents = render_chart_rbac(ROOT / "helm" / "modelrollout", {"watchNamespaces": ["team-a"]})
    authorizer = Authorizer(lambda plural: [d for d in documents if f"{d['kind'].lower()}s" == plural])
    status_patch = {"verb": "patch", "group": "modelrollout.io", "resource": "modelrollouts", "subresource": "status"}
    assert authorizer.allowed(SA, Attributes(**status_patch, namespace="team-a"))
    assert not authorizer.allowed(SA, Attributes(**status_patch, namespace="team-b"))
    assert not authorizer.allowed(SA, Attributes(**status_patch))  # cluster-wide
    assert authorizer.allowed(SA, Attributes("list", group="apiextensions.k8s.io", resource="customresourcedefinitions"))


def test_the_operators_self_check_asks_only_for_what_the_chart_grants():
    """access.NEEDED (what the code calls) and the chart's RBAC stay in step: a chart without one of them
    would make every install report a missing permission."""
    documents = chart_rbac()
    authorizer = Authorizer(lambda plural: [d for d in documents if f"{d['kind'].lower()}s" == plural])
    for permission in NEEDED:
        resource, _, subresource = permission.resource.partition("/")
        for verb in permission.verbs:
            attrs = Attributes(verb, group=permission.group, resource=resource, subresource=subresource,
                               namespace="ml")
            assert authorizer.allowed(SA, attrs), f"the chart does not grant {verb} {permission.resource}"


# ------------------------------------------------------------------------------------------------
# A whole release with the operator on each credential.
# ------------------------------------------------------------------------------------------------
def _release(lab: Lab, name: str, during=None) -> dict:
    docs = scenarios.manifests(name, router="gatewayAPI", rps=200)
    for doc in docs:
        lab.apply(doc)
    v1 = lab.wait_for_phase(name, "Succeeded", timeout=60)["stableRevision"]
    lab.apply(scenarios.release(docs[-1], "2.0.0"))
    if during is not None:
        lab.wait_for(lambda: (lab.status(name).get("canaryWeight") or 0) > 0, timeout=60, what="a canary with traffic")
        during()
    return lab.wait_for(lambda: (s := lab.status(name)).get("phase") == "Succeeded" and s["stableRevision"] != v1
                        and s["history"][0]["result"] == "Promoted" and s, timeout=90, what="promotion")


@pytest.mark.lab
@pytest.mark.parametrize("credential", ["certificate", "token"])
def test_a_release_completes_with_the_operator_on_each_credential(tmp_path, credential):
    with Lab(str(tmp_path), operator_credential=credential) as lab:
        lab.start_operator()
        status = _release(lab, f"by-{credential}")
        assert status["history"][0]["result"] == "Promoted"
        assert "Unauthorized" not in lab.operator_log() and "Forbidden" not in lab.operator_log()
        assert "access self-check: all" in lab.operator_log()  # the chart grants what the operator needs


@pytest.mark.lab
def test_a_release_completes_across_a_token_rotation(tmp_path):
    with Lab(str(tmp_path), operator_credential="token-file") as lab:
        lab.start_operator()
        old_token = Path(tmp_path, "operator-token").read_text()
        status = _release(lab, "rotated", during=lab.rotate_operator_token)
        assert status["history"][0]["result"] == "Promoted"
        new_token = Path(tmp_path, "operator-token").read_text()
        assert new_token != old_token
        # The old token is dead: every status write after the rotation (up to the promotion) used the new one.
        assert raw_request(lab.api, "/api/v1/namespaces", token=old_token)[0] == 401
