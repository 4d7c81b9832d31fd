"""ML-specific gates in the lab: prediction drift, quality from delayed labels, evaluation Job and webhook gates."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from lab_watch import Recorder, events_of, route_canary_weight, start_stable
from modelrollout_lab import scenarios

pytestmark = pytest.mark.lab

SAMPLED = {"rps": 400, "min_samples": 300}
# This platform allows webhook gates on loopback (the gatekeeper below); by default none are allowed.
OPERATOR_ARGS = ("--allowed-webhook-urls", "http://127.0.0.1:*/gate")


def test_drift_only_regression_is_rolled_back(lab):
    drift = [{"name": "prediction-drift", "max": 0.1, "minSamples": 200},
             {"name": "error-rate", "max": 0.02}, {"name": "latency-p95", "max": 0.2}]
    v1 = start_stable(lab, "drift", metrics=drift, **SAMPLED)
    lab.apply(scenarios.release(v1, "2.0.0", {"score-mean": "0.55"}))  # same errors and latency, shifted scores
    status = lab.wait_for_phase("drift", "RolledBack", timeout=60)
    assert "prediction-drift" in status["message"]
    verdicts = {r["metric"]: r["verdict"] for r in status["lastAnalysis"]} if status.get("lastAnalysis") else {}
    history = status["history"][0]
    assert history["result"] == "RolledBack" and "prediction-drift" in history["reason"]
    assert verdicts.get("error-rate") in (None, "Pass", "Inconclusive")


def test_quality_regression_found_only_through_delayed_labels_is_rolled_back(lab):
    quality = [{"name": "quality", "min": 0.85, "minSamples": 40}]
    v1 = start_stable(lab, "labels", metrics=quality, **SAMPLED)
    with Recorder(lambda: tuple(r["verdict"] for r in lab.status("labels").get("lastAnalysis") or [])) as verdicts:
        lab.apply(scenarios.release(v1, "2.0.0", {"accuracy": "0.6", "label-delay-seconds": "5"}))
        status = lab.wait_for_phase("labels", "RolledBack", timeout=60)
    assert "quality" in status["message"]
    assert ("Inconclusive",) in verdicts.values  # the step waited for labels, never advanced on missing ones
    assert status["history"][0]["result"] == "RolledBack"


def test_failing_evaluation_job_stops_the_rollout_before_any_traffic(lab):
    v1 = start_stable(lab, "evaljob", router="gatewayAPI", **SAMPLED)
    v2 = scenarios.release(v1, "2.0.0")
    v2["spec"]["strategy"]["gates"] = {"beforeTraffic": [{"name": "offline-eval", "job": {"template": {
        "metadata": {"annotations": {"lab.modelrollout.io/job-result": "failed",
                                     "lab.modelrollout.io/job-seconds": "1",
                                     "lab.modelrollout.io/job-reason": "EvaluationFailed",
                                     "lab.modelrollout.io/job-message": "accuracy 0.71 below 0.80 on the holdout set"}},
        "spec": {"containers": [{"name": "eval", "image": "example/eval:1"}]}}}}]}
    with Recorder(lambda: route_canary_weight(lab, "evaljob")) as weights:
        lab.apply(v2)
        status = lab.wait_for_phase("evaljob", "RolledBack", timeout=60)
    assert "offline-eval" in status["message"] and "accuracy 0.71" in status["message"]
    assert set(weights.values) == {0}  # the canary never got a request


class _Gatekeeper(http.server.BaseHTTPRequestHandler):
    answer = 200
    payloads: list = []

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        type(self).payloads.append(json.loads(self.rfile.read(length)))
        self.send_response(type(self).answer)
        self.end_headers()
        self.wfile.write(b"no" if type(self).answer >= 400 else b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def gatekeeper():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gatekeeper)
    _Gatekeeper.payloads = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.mark.parametrize("answer,phase", [(200, "Succeeded"), (403, "RolledBack")])
def test_webhook_gate_before_promotion(lab, gatekeeper, answer, phase):
    name = f"hook{answer}"
    _Gatekeeper.answer = answer
    v1 = start_stable(lab, name, **SAMPLED, steps=[{"weight": 30, "hold": "3s"}])
    v2 = scenarios.release(v1, "2.0.0")
    url = f"http://127.0.0.1:{gatekeeper.server_address[1]}/gate"
    v2["spec"]["strategy"]["gates"] = {"beforePromotion": [{"name": "approval", "webhook": {"url": url, "retries": 0}}]}
    lab.apply(v2)
    status = lab.wait_for(lambda: (s := lab.status(name)).get("phase") == phase
                          and (s.get("history") or [{}])[0].get("result") in ("Promoted", "RolledBack") and s,
                          timeout=60, what=phase)
    payload = _Gatekeeper.payloads[-1]
    assert payload["rollout"] == name and payload["stage"] == "beforePromotion"
    assert payload["canaryRevision"] == status["history"][0]["revision"] and payload["stableRevision"]
    if answer >= 400:
        assert "approval" in status["message"] and "403" in status["message"]


def test_a_preset_alone_judges_by_its_default_metrics(lab):
    """Issue 9 item 2: `preset: http` with no metrics listed once promoted a canary with 50 % errors."""
    v1 = start_stable(lab, "presetonly", metrics=[], **SAMPLED)
    lab.apply(scenarios.release(v1, "2.0.0", {"error-rate": "0.5"}))
    status = lab.wait_for_phase("presetonly", "RolledBack", timeout=60)
    assert "error-rate" in status["message"]
    assert {r["metric"] for r in status["lastAnalysis"]} == {"error-rate", "latency-p95"}


PER_REVISION_ACCURACY = (  # no revision matcher and `by (revision)`: one series per revision
    'sum by (revision) (increase(model_feedback_correct_total{namespace="{{ namespace }}", rollout="{{ name }}"}[{{ window }}]))'
    ' / sum by (revision) (increase(model_feedback_total{namespace="{{ namespace }}", rollout="{{ name }}"}[{{ window }}]))')


def test_a_query_answering_one_series_per_revision_never_promotes_the_bad_canary(lab):
    """Issue 22: the series were summed, `accuracy Pass 1.337 >= min 0.85`, and a canary at 40 % accuracy
    was promoted. Several series where one is expected are no evidence: inconclusive, the no-data clock
    runs, and its policy rolls the canary back."""
    quality = [{"name": "accuracy", "query": PER_REVISION_ACCURACY, "min": 0.85}]
    v1 = start_stable(lab, "perrev", metrics=quality, no_data={"hold": "8s", "then": "rollback"}, **SAMPLED)
    with Recorder(lambda: lab.status("perrev").get("stableRevision")) as stable:
        lab.apply(scenarios.release(v1, "2.0.0", {"accuracy": "0.4"}))
        status = lab.wait_for_phase("perrev", "RolledBack", timeout=60)
    assert len(stable.values) == 1  # v1 stayed stable throughout: the 40 % canary was never promoted
    assert "no conclusive data" in status["message"] and "2 series where one is expected" in status["message"]
    assert status["history"][0]["result"] == "RolledBack"
    assert lab.wait_for(lambda: events_of(lab, "perrev", "NoData"), timeout=10, what="a NoData event")


def test_a_nan_answer_with_enough_samples_starts_the_no_data_clock(lab):
    """Issue 22: a NaN with enough samples was "undecided evidence": held at 20 % for minutes, no
    NoData event, nothing ended it before decideWithin (30 min). NaN is no number: no data."""
    nan = [{"name": "score", "max": 0.5, "query": 'sum(increase(http_requests_total{namespace="{{ namespace }}", '
                                                   'rollout="{{ name }}", revision="{{ revision }}"}[{{ window }}])) * NaN'}]
    v1 = start_stable(lab, "nanscore", metrics=nan, no_data={"hold": "8s", "then": "rollback"}, **SAMPLED)
    lab.apply(scenarios.release(v1, "2.0.0"))
    status = lab.wait_for_phase("nanscore", "RolledBack", timeout=60)
    assert "no conclusive data" in status["message"] and "not a finite number" in status["message"]
    assert status["history"][0]["result"] == "RolledBack"
    assert lab.wait_for(lambda: events_of(lab, "nanscore", "NoData"), timeout=10, what="a NoData event")
