"""The spec is parsed once into typed objects; a bad field is named in the error.

Parsing happens under the platform's policy (which Prometheus, which webhooks, which identity
for Job gates): what the policy does not allow is InvalidSpec too, naming the field.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from modelrollout.spec import PlatformPolicy, SpecError, parse_duration, parse_spec, render_query, template_revision

ROOT = Path(__file__).resolve().parents[2]
POLICY = PlatformPolicy(prometheus_url="http://prom:9090")
BASE = {
    "replicas": 10,
    "selector": {"matchLabels": {"app": "m"}},
    "template": {"metadata": {"labels": {"app": "m"}}, "spec": {"containers": [{"name": "s", "image": "m:1"}]}},
    "service": {"port": 8080},
    "trafficRouting": {"replicas": {}},
    "strategy": {"steps": [{"weight": 10, "hold": "1m"}, {"weight": 100}]},
    "analysis": {"interval": "30s", "prometheus": {"address": "http://prom:9090"}, "preset": "http",
                 "metrics": [{"name": "error-rate"}, {"name": "latency-p95", "max": 0.5}]},
}
GATEWAY = {"gatewayAPI": {"httpRoute": "r"}}
JOB = {"spec": {"containers": [{"name": "eval", "image": "eval:1"}]}}
GATE_POD = "spec.strategy.gates.beforePromotion[0].job.template.spec"


def with_(path: str, value, raw=None):
    raw = copy.deepcopy(raw or BASE)
    node = raw
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if value is KeyError:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return raw


def job_gate(pod_spec_changes: dict, container_changes: dict | None = None) -> dict:
    template = copy.deepcopy(JOB)
    template["spec"].update(pod_spec_changes)
    template["spec"]["containers"][0].update(container_changes or {})
    return with_("strategy.gates", {"beforePromotion": [{"name": "eval", "job": {"template": template}}]})


def metric(**fields) -> dict:
    return with_("analysis.metrics", [{"name": "custom", "query": "up", "max": 1, **fields}])


def test_valid_spec_parses_with_preset_queries_filled_in():
    spec = parse_spec(BASE, POLICY)
    error_rate, latency = spec.analysis.metrics
    assert "http_requests_total" in error_rate.query and error_rate.max == 0.01 and error_rate.critical
    assert latency.max == 0.5  # the spec's own value wins over the preset's
    assert spec.analysis.samples.min == 50 and spec.strategy.steps[1].hold is None
    assert spec.analysis.interval == 30.0


@pytest.mark.parametrize("path,value,field", [
    ("strategy.steps.0.weight", 150, "spec.strategy.steps[0].weight"),
    ("strategy.steps.0.hold", "five minutes", "spec.strategy.steps[0].hold"),
    ("strategy.steps", [], "spec.strategy.steps"),
    ("strategy.steps", [{"weight": 50}, {"weight": 10}], "spec.strategy"),
    ("service.port", 0, "spec.service.port"),
    ("trafficRouting", {}, "spec.trafficRouting"),
    ("trafficRouting", {"replicas": {}, "gatewayAPI": {"httpRoute": "r"}}, "spec.trafficRouting"),
    ("selector", KeyError, "spec.selector"),
    ("analysis.interval", "soon", "spec.analysis.interval"),
    ("analysis.preset", "nope", "spec.analysis.preset"),
    ("analysis.metrics", [{"name": "custom", "query": "up"}], "spec.analysis.metrics[0]"),
    ("analysis.metrics", [{"name": "c", "query": "up{{ nonsense }}", "max": 1}], "spec.analysis.metrics[0].query"),
    ("analysis.metrics", [{"name": "error-rate"}, {"name": "error-rate"}], "spec.analysis.metrics"),
    ("analysis.noData", {"then": "promote"}, "spec.analysis.noData.then"),
    ("template", {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "s"}]}}, "spec"),
    ("model.version", "1.0\"} or vector(1)", "spec.model.version"),
    ("model.name", "", None),
])
def test_invalid_field_is_named(path, value, field):
    if field is None:
        parse_spec(with_(path, value), POLICY)
        return
    with pytest.raises(SpecError) as info:
        parse_spec(with_(path, value), POLICY)
    assert info.value.field.startswith(field), info.value


# Issue 9 item 2 and item 10: nothing judged, impossible bounds, PromQL that does not parse.
@pytest.mark.parametrize("raw,field,words", [
    (with_("analysis", {"interval": "30s"}), "spec.analysis.metrics", "nothing to judge"),
    (with_("analysis.metrics", []), "spec.analysis.metrics", None),  # no preset here? BASE has one: defaults
    (metric(min=0.9, max=0.1), "spec.analysis.metrics[0].max", "below min"),
    (metric(query="sum(rate(x[5m])"), "spec.analysis.metrics[0].query", "does not parse"),
    (metric(query="up", samplesQuery="sum by (le (x)"), "spec.analysis.metrics[0].samplesQuery", "does not parse"),
    (with_("analysis.metrics", [{"name": "p", "type": "proportion", "min": 0.9, "totalQuery": "up",
                                 "successQuery": "up{a=\"{{ name }}\""}]), "spec.analysis.metrics[0].successQuery",
     "does not parse"),
    (with_("analysis.metrics", [{"name": "p", "type": "proportion", "max": 0.1, "query": "up",
                                 "totalQuery": "up +"}]), "spec.analysis.metrics[0].totalQuery", "does not parse"),
    (with_("analysis.samples", {"query": "sum(x"}), "spec.analysis.samples.query", "does not parse"),
    (with_("analysis.metrics", [{"name": "d", "type": "distributionShift", "max": 0.1,
                                 "histogram": "score_bucket{a=\"b\"} or vector(1)"}]),
     "spec.analysis.metrics[0].histogram", "series selector"),
    (with_("analysis.metrics", [{"name": "d", "type": "distributionShift", "max": 0.1, "histogram": "score_bucket{"}]),
     "spec.analysis.metrics[0].histogram", "does not parse"),
    (metric(query="up{rollout={{ name }}}"), "spec.analysis.metrics[0].query", "inside a quoted string"),
    (metric(query="errors{{ revision }}"), "spec.analysis.metrics[0].query", "inside a quoted string"),
    (metric(query="up{a=\"{{ nonsense }}\"}"), "spec.analysis.metrics[0].query", "unknown placeholder"),
])
def test_what_cannot_be_judged_is_refused(raw, field, words):
    if words is None:  # a preset with no metrics listed: its defaults apply
        assert [m.name for m in parse_spec(raw, POLICY).analysis.metrics] == ["error-rate", "latency-p95"]
        return
    with pytest.raises(SpecError) as info:
        parse_spec(raw, POLICY)
    assert info.value.field == field and words in info.value.message, info.value


# Issue 22: limits found when the spec is read, not when the API server refuses a write, or never.
@pytest.mark.parametrize("raw,field,words", [
    (with_("model.version", "1." * 41), "spec.model.version", "82 characters, at most 63 (it is a label value)"),
    (with_("model.version", "2.4.0+build.7"), "spec.model.version", "it is a label value"),
    (with_("model.version", "v2."), "spec.model.version", "it is a label value"),
    (with_("replicas", 0, with_("trafficRouting", GATEWAY)), "spec.replicas", "greater than or equal to 1"),
    (with_("strategy.steps", [{"weight": 0, "hold": "1m"}], with_("trafficRouting", GATEWAY)),
     "spec.strategy.steps[0].weight", "the last step must send users to the canary"),
    (with_("strategy.steps", [{"mirror": 100, "hold": "1m"}], with_("trafficRouting", GATEWAY)),
     "spec.strategy.steps[0].weight", "the last step must send users to the canary"),
])
def test_limits_are_invalid_spec_naming_the_field(raw, field, words):
    with pytest.raises(SpecError) as info:
        parse_spec(raw, POLICY)
    assert info.value.field == field and words in info.value.message, info.value


def test_a_63_character_version_is_a_label_value():
    assert parse_spec(with_("model.version", "v" + "1.2-rc_3" * 7 + "9" * 6), POLICY).model.version.startswith("v1.2")


def test_preset_alone_judges_by_its_defaults():
    spec = parse_spec(with_("analysis", {"preset": "http"}), POLICY)
    error_rate, latency = spec.analysis.metrics
    assert (error_rate.name, error_rate.max, latency.name) == ("error-rate", 0.01, "latency-p95")


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "operator" / "modelrollout" / "presets").glob("*.yaml")))
def test_every_preset_alone_judges_errors_and_latency(preset):
    names = [m.name for m in parse_spec(with_("analysis", {"preset": preset}), POLICY).analysis.metrics]
    assert names[0] == "error-rate" and len(names) == 2 and "latency" in names[1]


@pytest.mark.parametrize("query", [
    "holt_winters(up[5m], 0.5, 0.5)",  # Prometheus 2's name
    "double_exponential_smoothing(up[5m], 0.5, 0.5)",
    'sort_by_label(sum by (revision) (up{rollout="{{ name }}"}), "revision")',
])
def test_prometheus_2_and_3_queries_parse(query):
    assert parse_spec(metric(query=query), POLICY).analysis.metrics[0].query == query


def test_every_quote_style_and_placeholder_parses():
    query = "sum(rate(x{a=\"{{ name }}\", b='{{ namespace }}', c=`{{ revision }}`}[{{ window }}])) # {{ interval }}"
    kept = query.removesuffix("# {{ interval }}")  # the comment is dropped (tests/unit/test_query_comments.py)
    assert parse_spec(metric(query=query), POLICY).analysis.metrics[0].query == kept


# Replicas router: traffic is shared by pod count.
@pytest.mark.parametrize("raw,field,words", [
    (with_("strategy.steps.0.weight", 25), "spec.strategy.steps[0].weight", "multiples of 10"),
    (with_("replicas", 4), "spec.strategy.steps[0].weight", "multiple of 10"),
    (with_("strategy.steps", [{"weight": 0, "hold": "10s"}, {"weight": 50}]), "spec.strategy.steps[0].weight",
     "weight 0"),
    (with_("strategy.gates", {"beforeTraffic": [{"name": "smoke", "job": {"template": JOB}}]}),
     "spec.strategy.gates.beforeTraffic", "before traffic"),
    (with_("strategy.warmup", {"skipAnalysisFor": "30s"}), "spec.strategy.warmup.skipAnalysisFor", "readiness probe"),
])
def test_replicas_router_refuses_what_pod_counts_cannot_carry(raw, field, words):
    with pytest.raises(SpecError) as info:
        parse_spec(raw, POLICY)
    assert info.value.field == field and words in info.value.message, info.value
    parse_spec(with_("trafficRouting", GATEWAY, raw), POLICY)  # a route can carry all of it


def test_promotion_watch_is_defaulted_where_the_router_keeps_the_stable_ready_and_refused_where_it_cannot():
    """A canary at full traffic can only be routed back in one write to a stable still Ready: behind a
    route, yes; with the replicas router the stable has given its pods up by then."""
    assert parse_spec(with_("trafficRouting", GATEWAY, BASE), POLICY).promotion_watch == 60
    assert parse_spec(with_("strategy.promotion", {"watch": "0s"}, with_("trafficRouting", GATEWAY, BASE)),
                      POLICY).promotion_watch == 0
    assert parse_spec(BASE, POLICY).promotion_watch == 0  # replicas router: no watch by default
    with pytest.raises(SpecError) as info:
        parse_spec(with_("strategy.promotion", {"watch": "1m"}, BASE), POLICY)
    assert info.value.field == "spec.strategy.promotion.watch" and "replicas router" in info.value.message


def test_replicas_router_accepts_whole_pods():
    spec = parse_spec(with_("strategy.steps", [{"weight": 25, "hold": "1m"}, {"weight": 50}, {"weight": 100}],
                            with_("replicas", 4)), POLICY)
    assert [s.weight for s in spec.strategy.steps] == [25, 50, 100]


# Issue 11: the platform's policy.
def test_prometheus_address_must_be_the_operators_or_allowed():
    foreign = with_("analysis.prometheus.address", "http://127.0.0.1:18081/anything")
    with pytest.raises(SpecError) as info:
        parse_spec(foreign, POLICY)
    assert info.value.field == "spec.analysis.prometheus.address"
    allowed = PlatformPolicy(prometheus_url="http://prom:9090", allowed_prometheus_urls=("http://127.0.0.1:18081/anything/",))
    assert parse_spec(foreign, allowed).analysis.prometheus.address == "http://127.0.0.1:18081/anything"
    assert parse_spec(with_("analysis.prometheus.address", "http://prom:9090/"), POLICY)


def test_missing_prometheus_uses_the_operator_default_or_is_named():
    raw = with_("analysis.prometheus", KeyError)
    assert parse_spec(raw, PlatformPolicy(prometheus_url="http://p:9090")).analysis.prometheus.address == "http://p:9090"
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    assert info.value.field == "spec.analysis.prometheus.address"


@pytest.mark.parametrize("url,patterns,allowed", [
    ("http://127.0.0.1:9/admin", (), False),  # none allowed by default
    ("https://gates.example.com/check", ("https://gates.example.com/*",), True),
    ("https://gates.example.com.evil.net/check", ("https://gates.example.com/*",), False),
    ("https://gates.example.com@127.0.0.1/check", ("https://gates.example.com*",), False),
    ("http://gates.example.com/check", ("https://gates.example.com/*",), False),
    # a `*` in the host matches hosts only, never a path that looks like the host
    ("https://evil.test/.example.com/check", ("https://*.example.com/*",), False),
    ("https://gates.example.com/check", ("https://*.example.com/*",), True),
    # a host is letters, digits, dots and dashes (or an IP): no escapes for a resolver to read otherwise
    ("https://evil.net\\.example.com/check", ("https://*.example.com/*",), False),
    ("https://evil.net%2f.example.com/check", ("https://*.example.com/*",), False),
    ("https://gates.example.com:8443/check", ("https://gates.example.com:*/*",), True),
    ("https://gates.example.com:x.example.com/check", ("https://gates.example.com:*/*",), False),
    ("http://[fd00::1]:8080/check", ("http://[fd00::1]:8080/*",), True),
])
def test_webhook_urls_are_allowed_by_pattern_only(url, patterns, allowed):
    raw = with_("strategy.gates", {"beforePromotion": [{"name": "hook", "webhook": {"url": url}}]})
    policy = PlatformPolicy(prometheus_url="http://prom:9090", allowed_webhook_urls=patterns)
    if allowed:
        assert parse_spec(raw, policy).strategy.gates.before_promotion[0].webhook.url == url
        return
    with pytest.raises(SpecError) as info:
        parse_spec(raw, policy)
    assert info.value.field == "spec.strategy.gates.beforePromotion[0].webhook.url"


@pytest.mark.parametrize("pod,container,field", [
    ({"serviceAccountName": "modelrollout"}, None, "serviceAccountName"),
    ({"serviceAccount": "modelrollout"}, None, "serviceAccount"),
    ({"automountServiceAccountToken": True}, None, "automountServiceAccountToken"),
    ({"hostNetwork": True}, None, "hostNetwork"),
    ({"hostPID": True}, None, "hostPID"),
    ({"hostIPC": True}, None, "hostIPC"),
    ({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}, None, "volumes[0].hostPath"),
    ({"volumes": [{"name": "n", "nfs": {"server": "x", "path": "/"}}]}, None, "volumes[0].nfs"),
    ({"securityContext": {"runAsUser": 0}}, None, "securityContext.runAsUser"),
    ({"securityContext": {"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}]}}, None,
     "securityContext.sysctls"),
    ({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}, None, "securityContext.seccompProfile.type"),
    ({}, {"securityContext": {"privileged": True}}, "containers[0].securityContext.privileged"),
    ({}, {"securityContext": {"allowPrivilegeEscalation": True}}, "containers[0].securityContext.allowPrivilegeEscalation"),
    ({}, {"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}, "containers[0].securityContext.capabilities.add"),
    ({}, {"securityContext": {"runAsNonRoot": False}}, "containers[0].securityContext.runAsNonRoot"),
    ({}, {"securityContext": {"procMount": "Unmasked"}}, "containers[0].securityContext.procMount"),
    ({}, {"ports": [{"containerPort": 80, "hostPort": 80}]}, "containers[0].ports[0].hostPort"),
    ({"initContainers": [{"name": "i", "image": "i", "securityContext": {"privileged": True}}]}, None,
     "initContainers[0].securityContext.privileged"),
    ({"ephemeralContainers": [{"name": "e", "image": "e", "securityContext": {"runAsUser": 0}}]}, None,
     "ephemeralContainers[0].securityContext.runAsUser"),
    ({}, {"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}, "containers[0].securityContext.seLinuxOptions.type"),
    ({}, {"securityContext": {"appArmorProfile": {"type": "Unconfined"}}},
     "containers[0].securityContext.appArmorProfile.type"),
    # a projected token is a mounted token too: the platform's ServiceAccount's, which the spec may not have
    ({"volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]}, None,
     "volumes[0].projected.sources[0].serviceAccountToken"),
    ({"initContainers": ["eval:1"]}, None, "initContainers[0]"),
    ({}, {"ports": [8080]}, "containers[0].ports[0]"),
])
def test_job_gate_pods_are_held_to_pod_security_restricted(pod, container, field):
    with pytest.raises(SpecError) as info:
        parse_spec(job_gate(pod, container), POLICY)
    assert info.value.field == f"{GATE_POD}.{field}", info.value


def test_an_unconfined_apparmor_annotation_is_refused_in_every_pod():
    """The annotation form of AppArmor, which kubelets still honour, is checked like the field."""
    unconfined = {"container.apparmor.security.beta.kubernetes.io/eval": "unconfined"}
    gate = job_gate({})
    gate["strategy"]["gates"]["beforePromotion"][0]["job"]["template"]["metadata"] = {"annotations": unconfined}
    with pytest.raises(SpecError) as info:
        parse_spec(gate, POLICY)
    assert info.value.field == ("spec.strategy.gates.beforePromotion[0].job.template.metadata.annotations"
                                "[container.apparmor.security.beta.kubernetes.io/eval]")
    own = with_("template.metadata.annotations", {"container.apparmor.security.beta.kubernetes.io/s": "unconfined"})
    with pytest.raises(SpecError) as info:
        parse_spec(own, POLICY)
    assert info.value.field == "spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/s]"
    confined = with_("template.metadata.annotations", {"container.apparmor.security.beta.kubernetes.io/s": "runtime/default"})
    assert parse_spec(confined, POLICY)


def test_a_projected_token_needs_the_platforms_leave_like_the_automounted_one():
    projected = {"volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]}
    with_token = PlatformPolicy(prometheus_url="http://prom:9090", gate_service_account_token=True)
    assert parse_spec(job_gate(projected), with_token)


@pytest.mark.parametrize("pod,container", [
    ({"securityContext": None}, {"securityContext": None}),
    ({}, {"securityContext": {"capabilities": None}}),
    # a null field would otherwise survive the defaults: root, no seccomp, privilege escalation
    ({"securityContext": {"runAsNonRoot": None, "seccompProfile": None}},
     {"securityContext": {"allowPrivilegeEscalation": None}}),
])
def test_job_gate_pods_with_empty_security_contexts_get_the_restricted_defaults(pod, container):
    """An explicit null is the same as leaving the field out (as the API server reads it)."""
    hardened = parse_spec(job_gate(pod, container), POLICY).strategy.gates.before_promotion[0].job.template["spec"]
    assert hardened["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    context = hardened["containers"][0]["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]


def test_job_gate_pods_run_with_the_platforms_identity_and_restricted_defaults():
    allowed = {"securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["NET_RAW"]}}}
    policy = PlatformPolicy(prometheus_url="http://prom:9090", gate_service_account="modelrollout-gates")
    pod = parse_spec(job_gate({}, allowed), policy).strategy.gates.before_promotion[0].job.template["spec"]
    assert pod["serviceAccountName"] == "modelrollout-gates" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    context = pod["containers"][0]["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"add": ["NET_BIND_SERVICE"], "drop": ["NET_RAW", "ALL"]}
    with_token = PlatformPolicy(prometheus_url="http://prom:9090", gate_service_account_token=True)
    assert parse_spec(job_gate({}), with_token).strategy.gates.before_promotion[0].job.template["spec"][
        "automountServiceAccountToken"] is True


@pytest.mark.parametrize("pod,container,field", [
    ({}, {"securityContext": {"privileged": True}}, "containers[0].securityContext.privileged"),
    ({"hostNetwork": True}, {}, "hostNetwork"),
    ({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}, {}, "volumes[0].hostPath"),
    ({}, {"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}, "containers[0].securityContext.capabilities.add"),
    ({}, {"ports": [{"containerPort": 8080, "hostPort": 8080}]}, "containers[0].ports[0].hostPort"),
    ({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}, {}, "securityContext.sysctls"),
    ({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}, {}, "securityContext.seLinuxOptions.type"),
    ({}, {"securityContext": {"seLinuxOptions": {"user": "system_u"}}}, "containers[0].securityContext.seLinuxOptions.user"),
])
def test_the_rollouts_own_pods_are_held_to_pod_security_baseline(pod, container, field):
    raw = copy.deepcopy(BASE)
    raw["template"]["spec"].update(pod)
    raw["template"]["spec"]["containers"][0].update(container)
    with pytest.raises(SpecError) as info:
        parse_spec(raw, POLICY)
    assert info.value.field == f"spec.template.spec.{field}", info.value


def test_the_rollouts_own_pods_choose_their_service_account_and_user():
    """Baseline, not restricted: a model server's identity and user are its team's to choose."""
    raw = copy.deepcopy(BASE)
    raw["template"]["spec"].update({"serviceAccountName": "fraud-model", "securityContext": {"runAsUser": 0}})
    assert parse_spec(raw, POLICY).template["spec"]["serviceAccountName"] == "fraud-model"


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), (12, 12)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_label_values_are_escaped_not_pasted():
    query = render_query('up{rollout="{{ name }}"}', {"name": 'x"} or vector(1) or up{a="'})
    assert query == 'up{rollout="x\\"} or vector(1) or up{a=\\""}'


def test_single_quoted_placeholder_cannot_break_out():
    query = render_query("up{job='{{ name }}'}", {"name": "x'} or vector(1) or up{a='"})
    assert query == "up{job='x\\'} or vector(1) or up{a=\\''}"


def test_revision_depends_on_template_only_and_is_stable():
    a = parse_spec(BASE, POLICY).revision
    assert a == template_revision(copy.deepcopy(BASE["template"]))
    assert a != parse_spec(with_("template.spec.containers", [{"name": "s", "image": "m:2"}]), POLICY).revision
    assert a == parse_spec(with_("strategy.steps.0.weight", 20), POLICY).revision
