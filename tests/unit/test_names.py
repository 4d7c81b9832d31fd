"""Names of the objects the operator owns: valid, within 63 characters, never shared (invariant 4)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout import manifests
from modelrollout.analysis import query_values
from modelrollout.gates import job_manifest
from modelrollout.manifests import DEPLOYMENT_NAME_MAX, deployment_name, gate_job_name, owned_name, service_name
from modelrollout.names import LABEL_REVISION, LABEL_ROLLOUT, LIMITS, rollout_label
from modelrollout.routers import RouteTarget
from modelrollout.routers.kserve import canary_name, predictor_for
from modelrollout.spec import PlatformPolicy, parse_spec, render_query
from modelrollout.status import RolloutStatus
from modelrollout_lab.scenarios import rollout
from modelrollout_lab.traffic import series_labels

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]

DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LONG = "fraud-detector-for-the-european-card-payments-team-v2ab"  # 55 characters
REV = "0123456789"
POLICY = PlatformPolicy(prometheus_url="http://prometheus:9090")


@pytest.mark.parametrize("name,expected", [
    (deployment_name("fraud", REV), "fraud-0123456789"),
    (service_name("fraud", "stable"), "fraud-stable"),
    (service_name("fraud", "canary"), "fraud-canary"),
    (service_name("fraud", "shared"), "fraud"),
    (service_name(LONG, "stable"), f"{LONG}-stable"),  # 62: fits, stays readable
])
def test_short_names_stay_readable(name, expected):
    assert name == expected


@pytest.mark.parametrize("name,limit,prefix", [
    (deployment_name(LONG, REV), DEPLOYMENT_NAME_MAX, LONG[:40]),
    (service_name(LONG + "-eu", "canary"), 63, LONG[:54]),
    (gate_job_name(LONG, REV, "offline-eval"), 63, LONG[:54]),
    (owned_name("a" * 300), 63, "a" * 50),
])
def test_long_names_are_shortened_with_a_hash_and_keep_a_readable_prefix(name, limit, prefix):
    assert len(name) <= limit and DNS_1035_LABEL.fullmatch(name)
    assert name.startswith(prefix)
    assert re.search(r"-[0-9a-f]{8}$", name)


@pytest.mark.parametrize("parts", [("2fast",), ("fraud.v2", "stable"), ("-x-",)])
def test_names_that_would_be_invalid_are_made_valid_and_distinct(parts):
    name = owned_name(*parts)
    assert DNS_1035_LABEL.fullmatch(name) and len(name) <= 63
    assert name != "-".join(parts)


@pytest.mark.parametrize("a,b", [
    # rollouts `x` and `x-stable`: x's stable Service must not be x-stable's shared one
    (service_name("x", "stable"), service_name("x-stable", "shared")),
    (service_name("x", "canary"), service_name("x-canary", "shared")),
    # two gates of the 55-character rollout (the report: one Job read for both)
    (gate_job_name(LONG, REV, "offline-eval"), gate_job_name(LONG, REV, "offline-eval-2")),
    (gate_job_name(LONG, REV, "a"), gate_job_name(LONG, "1123456789", "a")),
    # dashes moved between parts
    (gate_job_name("a", REV, f"b-{REV}-c"), gate_job_name(f"a-{REV}-b", REV, "c")),
    # long names alike up to the cut
    (deployment_name(LONG + "-one", REV), deployment_name(LONG + "-two", REV)),
])
def test_confusable_inputs_get_distinct_names(a, b):
    assert a != b


def test_two_job_gates_of_a_long_rollout_get_their_own_jobs():
    raw = rollout(LONG, router="gatewayAPI")["spec"]
    job = {"template": {"spec": {"containers": [{"name": "eval", "image": "eval:1"}]}}}
    raw["strategy"]["gates"] = {"beforeTraffic": [{"name": "passes", "job": job}, {"name": "fails", "job": job}]}
    spec = parse_spec(raw, POLICY)
    status = RolloutStatus(canary_revision=spec.revision, stable_revision=REV)
    names = {job_manifest(spec, gate, "default", LONG, "uid", status, {})["metadata"]["name"]
             for gate in spec.strategy.gates.before_traffic}
    assert len(names) == 2 and all(len(n) <= 63 for n in names)


def test_services_and_deployments_select_only_this_rollouts_pods():
    spec = parse_spec(rollout("x", router="gatewayAPI")["spec"], POLICY)
    for role, revision in (("stable", REV), ("canary", REV), ("shared", None)):
        selector = manifests.service(spec, "default", "x", "uid", role, revision)["spec"]["selector"]
        assert selector[LABEL_ROLLOUT] == "x" and selector["app"] == "x"
        assert selector.get(LABEL_REVISION) == revision
    deployment = manifests.deployment(spec, "default", "x", "uid", 1)
    assert deployment["spec"]["selector"]["matchLabels"][LABEL_ROLLOUT] == "x"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels[k] == v for k, v in deployment["spec"]["selector"]["matchLabels"].items())


def test_ownership_patches_adopt_only_our_unowned_objects_and_release_only_our_reference():
    ours = {"metadata": {"name": "x-stable", "resourceVersion": "7", "labels": {LABEL_ROLLOUT: "x"}}}
    assert manifests.adoptable(ours, "x", "uid-2")
    patch = manifests.adopt_patch(ours, "x", "uid-2")
    assert patch == {"metadata": {"resourceVersion": "7", "ownerReferences": [manifests.owner_reference("x", "uid-2")]}}
    owned = {"metadata": {**ours["metadata"], "ownerReferences": [manifests.owner_reference("x", "uid-2")]}}
    assert manifests.adopt_patch(owned, "x", "uid-2") is None
    assert not manifests.adoptable(owned, "x", "uid-3")  # another rollout's controller: never taken over
    assert not manifests.adoptable(ours, "y", "uid-2")  # another rollout's label
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "keep", "uid": "cm"}
    both = {"metadata": {**ours["metadata"], "ownerReferences": [other, manifests.owner_reference("x", "uid-2")]}}
    assert manifests.release_patch(both, "uid-2") == {"metadata": {"resourceVersion": "7", "ownerReferences": [other]}}
    assert manifests.release_patch(owned, "uid-2") == {"metadata": {"resourceVersion": "7", "ownerReferences": None}}
    assert manifests.release_patch(ours, "uid-2") is None


# ------------------------------------------------------------------ properties

LABEL = r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?"
rollouts = st.one_of(
    st.from_regex(rf"{LABEL}(-(stable|canary))?", fullmatch=True),
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,80}[a-z0-9])?", fullmatch=True),
    st.from_regex(rf"{LABEL}(\.{LABEL}){{0,2}}", fullmatch=True),  # object names may be DNS subdomains
)
revisions = st.from_regex(r"[0-9a-f]{10}", fullmatch=True)
gates = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True)
roles = st.sampled_from(["stable", "canary", "shared"])


def _valid(name: str, limit: int = 63) -> bool:
    return len(name) <= limit and DNS_1035_LABEL.fullmatch(name) is not None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(rollouts, revisions, gates, roles), min_size=2, max_size=12))
def test_names_are_valid_and_never_shared(objects):
    deployments = {(r, rev): deployment_name(r, rev) for r, rev, _, _ in objects}
    services = {(r, role): service_name(r, role) for r, _, _, role in objects}
    jobs = {(r, rev, g): gate_job_name(r, rev, g) for r, rev, g, _ in objects}
    assert all(_valid(n, DEPLOYMENT_NAME_MAX) for n in deployments.values())
    assert all(_valid(n) for n in [*services.values(), *jobs.values()])
    for names in (deployments, services, jobs):  # injective within each kind
        assert len(set(names.values())) == len(names)


@settings(max_examples=300, deadline=None)
@given(rollouts, revisions, st.lists(gates, min_size=2, max_size=6, unique=True))
def test_every_gate_and_role_of_one_rollout_has_its_own_object(rollout_name, revision, gate_names):
    assert len({gate_job_name(rollout_name, revision, g) for g in gate_names}) == len(gate_names)
    assert len({service_name(rollout_name, role) for role in ("stable", "canary", "shared")}) == 3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True), min_size=3, max_size=8), revisions)
def test_moving_dashes_between_rollout_and_gate_never_shares_a_job(words, revision):
    """`a` + gate `b-c` and `a-b` + gate `c`: the same joined text, different objects."""
    splits = {("-".join(words[:i]), "-".join(words[i:])) for i in range(1, len(words))}
    assert len({gate_job_name(r, revision, g) for r, g in splits}) == len(splits)


# ------------------------------------------------------------------ limits (issue 22)

LABEL_VALUE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
LONGEST = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253: the longest name of a custom resource
VERSION_63 = "v" + "1.2-rc_3" * 7 + "9" * 6


def generated(name: str, version: str = VERSION_63) -> tuple[dict[str, str], dict[str, str]]:
    """Every name (by LIMITS key) and label value the operator generates for one rollout."""
    raw = rollout(name, router="gatewayAPI", version=version)["spec"]
    raw["selector"]["matchLabels"] = raw["template"]["metadata"]["labels"] = {"app": "m"}  # the user's: not ours
    job = {"template": {"spec": {"containers": [{"name": "eval", "image": "eval:1"}]}}}
    raw["strategy"]["gates"] = {"beforeTraffic": [{"name": "g" * 40, "job": job}]}
    spec = parse_spec(raw, POLICY)
    status = RolloutStatus(canary_revision=spec.revision, stable_revision=REV)
    deployment = manifests.deployment(spec, "default", name, "uid", 1)
    services = [manifests.service(spec, "default", name, "uid", role, REV) for role in ("stable", "canary", "shared")]
    job_object = job_manifest(spec, spec.strategy.gates.before_traffic[0], "default", name, "uid", status, {})
    predictor = predictor_for(RouteTarget("default", name, "uid", spec))
    names = {"deployment": deployment["metadata"]["name"], "gate-job": job_object["metadata"]["name"],
             "kserve-predictor": canary_name(spec.revision),
             **{f"service {s['spec']['selector'].get(LABEL_REVISION, '')} {i}": s["metadata"]["name"]
                for i, s in enumerate(services)}}
    label_sets = [deployment["metadata"]["labels"], deployment["spec"]["selector"]["matchLabels"],
                  deployment["spec"]["template"]["metadata"]["labels"], job_object["metadata"]["labels"],
                  predictor["labels"], *(s["metadata"]["labels"] for s in services),
                  *(s["spec"]["selector"] for s in services)]
    labels = {f"{key} {i}": value for i, label_set in enumerate(label_sets) for key, value in label_set.items()}
    return names, labels


@pytest.mark.parametrize("name", [LONGEST, "r" * 70, "x" * 64, "fraud"])
def test_every_generated_name_and_label_stays_within_its_limit(name):
    names, labels = generated(name)
    for key, value in names.items():
        limit = LIMITS[key.split()[0]].limit
        assert len(value) <= limit and DNS_1035_LABEL.fullmatch(value), (key, value)
    assert all(len(value) <= 63 and LABEL_VALUE.fullmatch(value) for value in labels.values()), labels


def test_distinct_long_rollouts_get_distinct_names_and_labels():
    one, two = generated(LONGEST[:-1] + "1"), generated(LONGEST[:-1] + "2")
    assert set(one[0].values()).isdisjoint(two[0].values())
    assert rollout_label(LONGEST[:-1] + "1") != rollout_label(LONGEST[:-1] + "2")


@pytest.mark.parametrize("name", ["fraud", "a.b-c", "r" * 63])
def test_a_rollout_label_that_fits_is_the_name_as_before(name):
    assert rollout_label(name) == name


def test_the_limits_table_is_documented():
    """docs/resource.md lists every row of names.LIMITS with its limit."""
    doc = (ROOT / "docs" / "resource.md").read_text()
    for limit in LIMITS.values():
        assert f"| {limit.what} | `{limit.made_by}` | {limit.limit} | {limit.beyond} |" in doc


def test_a_long_rollouts_queries_select_the_series_its_pods_are_labelled_with():
    """Prometheus gets `rollout` from the pods' modelrollout.io/rollout label (docs/presets.md), so
    `{{ name }}` renders that label: the name, shortened beyond 63 characters like the label."""
    name = "r" * 70
    spec = parse_spec(rollout(name, router="gatewayAPI")["spec"], POLICY)  # the http preset
    status = RolloutStatus(canary_revision=spec.revision, stable_revision=REV)
    values = query_values(spec, "default", name, status, spec.revision, datetime(2026, 1, 1, tzinfo=timezone.utc))
    _, series_rollout, *_ = series_labels(manifests.deployment(spec, "default", name, "uid", 1))
    assert len(series_rollout) <= 63
    assert f'rollout="{series_rollout}"' in render_query(spec.analysis.metrics[0].query, values)
