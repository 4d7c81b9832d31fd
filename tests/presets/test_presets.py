"""Every built-in preset against a real Prometheus scraping each server's own metric names.

One tiny HTTP server writes, for two revisions of one rollout, the exposition text that Istio,
KServe (ModelServer + Knative queue-proxy), Triton, vLLM, MLServer and Seldon Core 2 would
write (their real metric and label names; counters grow with time). One real Prometheus
scrapes it every second. For each preset, `analysis.measure` runs the preset's queries through
the real `PrometheusProvider` and `evaluate` must fail every metric of the bad revision and
pass every metric of the good one.

Pod-scraped servers get the labels `namespace` and `revision` that the relabelling in
docs/presets.md adds from the pod; Istio series carry Istio's own destination_* labels.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

try:
    import modelrollout  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))

from modelrollout.analysis import measure, query_values
from modelrollout.core import ts
from modelrollout.evaluate import evaluate
from modelrollout_lab.prometheus import PrometheusServer, scraping
from modelrollout.providers.prometheus import PrometheusProvider
from modelrollout.manifests import deployment_name
from modelrollout.spec import PlatformPolicy, load_preset, parse_spec, placeholders, render_query, PLACEHOLDERS
from modelrollout.stats import Verdict
from modelrollout.status import RolloutStatus

pytestmark = pytest.mark.lab

PRESETS = ("istio", "kserve", "triton", "vllm", "mlserver", "seldon")
NAMESPACE = "ml"
NAME = "fraud"
GOOD, BAD = "a1b2c3d4e5", "f6e5d4c3b2"
RPS = 200.0

# What each revision does: error fraction, and per latency a value in seconds.
BEHAVIOUR = {
    GOOD: {"errors": 0.001, "latency": 0.02, "queue": 0.001, "ttft": 0.08, "e2e": 1.5, "missing": 0.4},
    BAD: {"errors": 0.10, "latency": 3.0, "queue": 1.0, "ttft": 4.0, "e2e": 45.0, "missing": 0.6},
}
INPUT_FEATURES = ("amount", "country", "merchant")
INPUT_BUCKETS = (0.25, 0.5, 0.75, 1.0)
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MILLIS = tuple(b * 1000 for b in SECONDS)


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _counter(name: str, labels: dict[str, str], value: float) -> str:
    return f"{name}{_labels(labels)} {value:.6f}"


def _histogram(name: str, labels: dict[str, str], count: float, observed: float,
               bounds: tuple[float, ...]) -> list[str]:
    """Every observation equals `observed` (in the histogram's own unit)."""
    lines = []
    for bound in bounds:
        lines.append(_counter(f"{name}_bucket", {**labels, "le": f"{bound:g}"}, count if observed <= bound else 0.0))
    lines.append(_counter(f"{name}_bucket", {**labels, "le": "+Inf"}, count))
    lines.append(_counter(f"{name}_sum", labels, count * observed))
    lines.append(_counter(f"{name}_count", labels, count))
    return lines


def exposition(elapsed: float) -> str:
    lines: list[str] = []
    for revision, b in BEHAVIOUR.items():
        n = RPS * elapsed
        bad = n * b["errors"]
        ok = n - bad
        pod = {"namespace": NAMESPACE, "revision": revision}  # from relabelling the pod's labels

        # Istio: the server-side proxy's view; the workload is the Deployment "<rollout>-<revision>".
        dest = {"reporter": "destination", "destination_workload_namespace": NAMESPACE,
                "destination_workload": f"{NAME}-{revision}", "destination_canonical_revision": "latest",
                "destination_service_name": NAME, "request_protocol": "http"}
        lines.append(_counter("istio_requests_total", {**dest, "response_code": "200"}, ok))
        lines.append(_counter("istio_requests_total", {**dest, "response_code": "503"}, bad))
        lines += _histogram("istio_request_duration_milliseconds", {**dest, "response_code": "200"}, n,
                            b["latency"] * 1000, MILLIS)
        # The client side reports the same calls with the client's view: must not be counted twice.
        src = {**dest, "reporter": "source", "source_workload": "gateway"}
        lines.append(_counter("istio_requests_total", {**src, "response_code": "200"}, ok))

        # KServe ModelServer (instrumented with modelrollout_instrument's http_requests_total{code})
        # and Knative 1.21's queue-proxy: kn.serving.invocation.duration as Prometheus names it
        # (seconds, status code as an attribute).
        lines += _histogram("request_predict_seconds", {**pod, "model_name": "fraud"}, n, b["latency"], SECONDS)
        lines.append(_counter("http_requests_total", {**pod, "code": "200"}, ok))
        lines.append(_counter("http_requests_total", {**pod, "code": "500"}, bad))
        kn = {**pod, "kn_revision_name": "fraud-predictor-00002", "kn_configuration_name": "fraud-predictor",
              "kn_service_name": "fraud-predictor", "k8s_pod_name": f"fraud-predictor-{revision}-x",
              "otel_scope_name": "knative.dev/serving/pkg/queue"}
        lines += _histogram("kn_serving_invocation_duration_seconds", {**kn, "http_response_status_code": "200"},
                            ok, b["latency"], SECONDS)
        lines += _histogram("kn_serving_invocation_duration_seconds", {**kn, "http_response_status_code": "500"},
                            bad, b["latency"], SECONDS)

        # Triton: counters without _total; cumulative microseconds, added up for successes only.
        tr = {**pod, "model": "fraud", "version": "1"}
        lines.append(_counter("nv_inference_request_success", tr, ok))
        lines.append(_counter("nv_inference_request_failure", {**tr, "reason": "BACKEND"}, bad))
        lines.append(_counter("nv_inference_count", tr, n))
        lines.append(_counter("nv_inference_exec_count", tr, n))
        lines.append(_counter("nv_inference_request_duration_us", tr, ok * b["latency"] * 1e6))
        lines.append(_counter("nv_inference_queue_duration_us", tr, ok * b["queue"] * 1e6))

        # vLLM: colons in engine metric names; HTTP outcomes from the FastAPI instrumentator.
        vl = {**pod, "model_name": "meta-llama/Llama-3.1-8B-Instruct", "engine": "0"}
        http = {**pod, "handler": "/v1/chat/completions", "method": "POST"}
        lines.append(_counter("http_requests_total", {**http, "status": "2xx"}, ok))
        lines.append(_counter("http_requests_total", {**http, "status": "5xx"}, bad))
        lines.append(_counter("http_requests_total", {**pod, "handler": "/health", "method": "GET", "status": "2xx"}, n))
        lines.append(_counter("vllm:request_success_total", {**vl, "finished_reason": "stop"}, ok))
        lines.append(_counter("vllm:request_success_total", {**vl, "finished_reason": "error"}, bad))
        lines += _histogram("vllm:time_to_first_token_seconds", vl, ok, b["ttft"], SECONDS)
        lines += _histogram("vllm:e2e_request_latency_seconds", vl, ok, b["e2e"], SECONDS)
        lines.append(_counter("vllm:num_requests_running", vl, 4))

        # MLServer: prometheus_client counters (_total) and a summary; REST histogram by path.
        ml = {**pod, "model": "fraud", "version": "v1"}
        lines.append(_counter("model_infer_request_success_total", ml, ok))
        lines.append(_counter("model_infer_request_failure_total", ml, bad))
        lines.append(_counter("model_infer_request_duration_sum", ml, n * b["latency"]))
        lines.append(_counter("model_infer_request_duration_count", ml, n))
        rest = {**pod, "app_name": "mlserver", "method": "POST", "path": "/v2/models/{model_name}/infer"}
        lines.append(_counter("rest_server_requests_total", {**rest, "status_code": "200"}, ok))
        lines.append(_counter("rest_server_requests_total", {**rest, "status_code": "500"}, bad))
        # The good revision's clients call over REST and gRPC, the bad one's over gRPC only
        # (py-grpc-prometheus' histogram, its own buckets).
        grpc = {**pod, "grpc_type": "UNARY", "grpc_service": "inference.GRPCInferenceService", "grpc_method": "ModelInfer"}
        if revision == GOOD:
            lines += _histogram("rest_server_request_duration_seconds",
                                {**pod, "app_name": "mlserver", "method": "POST", "path": "/v2/models/{model_name}/infer"},
                                n / 2, b["latency"], SECONDS)
        lines += _histogram("grpc_server_handling_seconds", grpc, n / 2 if revision == GOOD else n, b["latency"],
                            (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0))
        lines += _histogram("rest_server_request_duration_seconds",  # health checks are fast: not counted
                            {**pod, "app_name": "mlserver", "method": "GET", "path": "/v2/health/ready"},
                            n, 0.001, SECONDS)

        # Seldon Core 2 agent: REST codes are HTTP statuses, gRPC codes are names.
        sd = {**pod, "server": "mlserver", "server_replica": "0", "model": "fraud", "model_internal": "fraud_1"}
        lines.append(_counter("seldon_model_infer_total", {**sd, "method_type": "rest", "code": "200"}, ok / 2))
        lines.append(_counter("seldon_model_infer_total", {**sd, "method_type": "grpc", "code": "OK"}, ok / 2))
        lines.append(_counter("seldon_model_infer_total", {**sd, "method_type": "rest", "code": "500"}, bad / 2))
        lines.append(_counter("seldon_model_infer_total", {**sd, "method_type": "grpc", "code": "Internal"}, bad / 2))
        lines.append(_counter("seldon_model_infer_seconds_total", {**sd, "method_type": "rest", "code": "200"},
                              n * b["latency"]))
        lines += _histogram("seldon_model_infer_api_seconds",
                            {**pod, "server": "mlserver", "server_replica": "0", "method": "rest", "code": "200"},
                            n, b["latency"], SECONDS)

        # Input-side gates (http preset): three features, each missing in a share of the rows, so
        # the missing values outnumber the rows.
        rows = {**pod, "rollout": NAME}
        lines.append(_counter("model_input_rows_total", rows, n))
        for feature in INPUT_FEATURES:
            lines.append(_counter("model_input_feature_missing_total", {**rows, "feature": feature}, n * b["missing"]))
            lines += _histogram("model_input_feature_value", {**rows, "feature": feature}, n, 0.5, INPUT_BUCKETS)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prometheus(prometheus_binary):
    with scraping(exposition) as (prom, _):
        prom.wait_for_scrapes(11, timeout=40)  # windows of 10s hold 9+ points
        yield prom


def _spec(preset: str, metrics: list[str]):
    return parse_spec({
        "model": {"name": NAME, "version": "2"},
        "replicas": 10,  # the replicas router shares traffic by pods: 10 % is one of 10
        "selector": {"matchLabels": {"app": NAME}},
        "template": {"metadata": {"labels": {"app": NAME}}, "spec": {"containers": [{"name": "m", "image": "m:2"}]}},
        "service": {"port": 8080},
        "trafficRouting": {"replicas": {}},
        "strategy": {"steps": [{"weight": 10, "hold": "1m"}, {"weight": 100}]},
        "analysis": {"interval": "5s", "preset": preset, "metrics": [{"name": m} for m in metrics]},
    }, PlatformPolicy(prometheus_url="http://127.0.0.1:9"))


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_is_complete(preset: str) -> None:
    """Every entry parses into a rule, uses known placeholders only, and selects a revision."""
    data = load_preset(preset)
    assert data["samples"]["query"] and data["samples"]["min"] > 0
    assert "error-rate" in data["metrics"]
    spec = _spec(preset, list(data["metrics"]))
    texts = [spec.analysis.samples.query or ""]
    for rule in spec.analysis.metrics:
        texts += [t for t in (rule.query, rule.total_query, rule.success_query, rule.samples_query) if t]
        assert rule.min is not None or rule.max is not None
    for text in texts:
        assert placeholders(text) <= PLACEHOLDERS
        assert ("{{ revision }}" in text or "{{ workload }}" in text) and "{{ window }}" in text, text


async def _verdicts(prometheus: PrometheusServer, spec) -> dict[str, dict[str, tuple[Verdict, str]]]:
    """Each metric's verdict (and why) of GOOD as canary against BAD as stable, and the reverse."""
    provider = PrometheusProvider(prometheus.url, timeout=5)
    now = datetime.now(UTC)
    started = ts(now - timedelta(seconds=10))
    verdicts: dict[str, dict[str, tuple[Verdict, str]]] = {}
    try:
        for canary, stable in ((GOOD, BAD), (BAD, GOOD)):
            status = RolloutStatus.parse({"phase": "Progressing", "canaryRevision": canary, "stableRevision": stable,
                                          "currentStep": 0, "canaryWeight": 10, "canaryReadyAt": started,
                                          "stepStartedAt": started})
            samples = await measure(spec, NAMESPACE, NAME, status, provider, now)
            rules = {rule.name: rule for rule in spec.analysis.metrics}
            verdicts[canary] = {}
            for sample in samples:
                judgement = evaluate(rules[sample.metric], sample, spec.analysis.samples.min)
                verdicts[canary][sample.metric] = (judgement.verdict, f"{judgement.reason} | {sample}")
    finally:
        provider.close()
    return verdicts


@pytest.mark.parametrize("preset", PRESETS)
async def test_preset_fails_bad_revision_and_passes_good_one(prometheus: PrometheusServer, preset: str) -> None:
    metrics = list(load_preset(preset)["metrics"])
    verdicts = await _verdicts(prometheus, _spec(preset, metrics))
    for metric in metrics:
        verdict, why = verdicts[GOOD][metric]
        assert verdict is Verdict.PASS, f"{preset} {metric} (good revision): {why}"
        verdict, why = verdicts[BAD][metric]
        assert verdict is Verdict.FAIL, f"{preset} {metric} (bad revision): {why}"


@pytest.mark.parametrize(("preset", "metric"), [("triton", "latency-avg"), ("triton", "queue-latency-avg"),
                                                ("mlserver", "latency-avg"), ("seldon", "latency-avg")])
async def test_mean_latencies_are_the_requests_own_in_seconds(prometheus: PrometheusServer, preset: str,
                                                               metric: str) -> None:
    """A mean is duration over the requests that added to it: Triton adds durations for successful
    requests only, so dividing by successes and failures made a 3 s canary with 10 % errors 2.7 s."""
    spec = _spec(preset, [metric])
    status = RolloutStatus.parse({"phase": "Progressing", "canaryRevision": BAD, "stableRevision": GOOD,
                                  "currentStep": 0, "canaryWeight": 10,
                                  "canaryReadyAt": ts(datetime.now(UTC) - timedelta(seconds=10))})
    provider = PrometheusProvider(prometheus.url, timeout=5)
    try:
        [sample] = await measure(spec, NAMESPACE, NAME, status, provider, datetime.now(UTC))
    finally:
        provider.close()
    expected = BEHAVIOUR[BAD]["queue" if metric == "queue-latency-avg" else "latency"]
    assert sample.value == pytest.approx(expected, rel=1e-3), sample


async def test_input_missing_rate_is_a_rate_per_feature_value_with_several_features(prometheus: PrometheusServer) -> None:
    """Three features each missing in 40 % of the good revision's rows and 60 % of the bad one's: the
    share of missing feature values is 0.4 and 0.6, never the 1.2 missing values per row it adds up to."""
    verdicts = await _verdicts(prometheus, _spec("http", ["input-missing-rate"]))
    verdict, why = verdicts[GOOD]["input-missing-rate"]
    assert verdict is Verdict.PASS, why
    verdict, why = verdicts[BAD]["input-missing-rate"]
    assert verdict is Verdict.FAIL and "0.6" in why, why


def test_the_istio_preset_selects_the_revisions_deployment_whatever_the_rollouts_name() -> None:
    """Istio names the workload after the Deployment, `<rollout>-<revision>` only while that fits: a
    long rollout name gets a hashed Deployment name, and the queries must select that one."""
    long_name = "fraud-detector-for-the-european-card-payments-team-v2ab"
    spec = _spec("istio", ["error-rate"])
    status = RolloutStatus.parse({"phase": "Progressing", "canaryRevision": BAD, "stableRevision": GOOD})
    for name in (NAME, long_name):
        for revision in (BAD, GOOD):
            values = query_values(spec, NAMESPACE, name, status, revision, datetime.now(UTC))
            rendered = render_query(spec.analysis.samples.query or "", values)
            assert f'destination_workload="{deployment_name(name, revision)}"' in rendered, rendered
