"""The incident report's pure parts: which release, what changed, who decided, which query counts errors."""

from __future__ import annotations

import http.server
import json
import threading
from datetime import datetime, timedelta, timezone

import pytest

from modelrollout.report import (Prometheus, Release, ReportError, _bad_events_query, build, last_release, step_weights,
                                 template_diff, timeline, verdict_runs, verdicts_query, weight_changes)
from modelrollout.spec import MetricRule
from modelrollout.status import RolloutStatus

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> str:
    return (NOW + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def template(image: str, **container: object) -> dict:
    return {"metadata": {"annotations": {"team": "fraud"}},
            "spec": {"containers": [{"name": "server", "image": image, **container}]}}


def test_the_diff_names_image_args_env_resources_and_annotations():
    stable = template("m:1", args=["--batch=32"], env=[{"name": "A", "value": "1"}, {"name": "OLD", "value": "x"}])
    canary = template("m:2", args=["--batch=64"], env=[{"name": "A", "value": "2"},
                                                       {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                      resources={"limits": {"nvidia.com/gpu": 1}})
    canary["metadata"]["annotations"]["model-uri"] = "s3://models/2"
    assert template_diff(stable, canary) == [
        ("containers[server].image", "m:1", "m:2"),
        ("containers[server].args", '["--batch=32"]', '["--batch=64"]'),
        ("containers[server].resources", "-", '{"limits": {"nvidia.com/gpu": 1}}'),
        ("containers[server].env.A", "1", "2"),
        ("containers[server].env.KEY", "-", '{"secretKeyRef": {"key": "k", "name": "s"}}'),
        ("containers[server].env.OLD", "x", "-"),
        ("annotations.model-uri", "-", "s3://models/2"),
    ]
    assert template_diff(stable, stable) == []


def test_the_last_release_is_the_running_canary_or_the_latest_finished_one():
    history = [
        {"revision": "c", "result": "RolledBack", "reason": "error-rate", "startedAt": at(-60), "finishedAt": at(-30)},
        {"revision": "b", "result": "Promoted", "reason": "all steps passed", "startedAt": at(-300), "finishedAt": at(-200)},
        {"revision": "a", "result": "Initialized", "reason": "first", "startedAt": at(-900), "finishedAt": at(-900)},
    ]
    rolled_back = last_release(RolloutStatus.parse({"stableRevision": "b", "history": history}), NOW)
    assert (rolled_back.revision, rolled_back.stable_revision, rolled_back.result, rolled_back.seconds) == (
        "c", "b", "RolledBack", 30.0)
    promoted = last_release(RolloutStatus.parse({"stableRevision": "b", "history": history[1:]}), NOW)
    assert (promoted.revision, promoted.stable_revision) == ("b", "a")  # against the stable it replaced
    running = last_release(RolloutStatus.parse({"stableRevision": "b", "canaryRevision": "d",
                                                "rolloutStartedAt": at(-5), "history": history}), NOW)
    assert (running.revision, running.result, running.finished) == ("d", "InProgress", NOW)
    assert last_release(RolloutStatus.parse({"stableRevision": "a", "history": history[2:]}), NOW) is None


def test_the_timeline_says_who_decided_and_keeps_to_the_release():
    release = Release("c", "b", "RolledBack", "aborted by user", "2.0", NOW - timedelta(seconds=60), NOW)
    events = [
        {"type": "Normal", "reason": "Initialized", "message": "old", "lastTimestamp": at(-600)},
        {"type": "Normal", "reason": "StepStarted", "message": "canary c is ready; step 0: canary weight 10",
         "lastTimestamp": at(-50)},
        {"type": "Normal", "reason": "StepStarted", "message": "promoted by user; step 1: canary weight 40",
         "eventTime": at(-20)},
    ]
    moments = timeline(release, events)
    assert [m.what.split(":")[0] for m in moments] == [
        "revision c (model 2.0) applied; canary started", "Normal StepStarted", "Normal StepStarted", "decision"]
    assert [m.by for m in moments] == ["a spec change (kubectl apply / GitOps)", "the operator",
                                       "a person (kubectl modelrollout / annotation)",
                                       "a person (kubectl modelrollout / annotation)"]
    assert step_weights(release, events) == [(release.started, 0), (NOW - timedelta(seconds=50), 10),
                                             (NOW - timedelta(seconds=20), 40), (NOW, 0)]
    assert step_weights(release, events[:1]) == []  # the release's events expired: unknown, not a weight of 0


def test_errors_are_the_numerator_of_an_error_ratio_or_a_proportions_bad_events():
    ratio = MetricRule(name="e", max=0.01, query='sum(increase(r{code=~"5..", ns="{{ namespace }}"}[{{ window }}])) '
                                                  "/ sum(increase(r[{{ window }}]))")
    assert _bad_events_query(ratio) == 'sum(increase(r{code=~"5..", ns="{{ namespace }}"}[{{ window }}]))'
    proportion = MetricRule(name="e", type="proportion", max=0.01, query="sum(bad)", totalQuery="sum(all)")
    assert _bad_events_query(proportion) == "sum(bad)"
    assert _bad_events_query(MetricRule(name="q", min=0.8, query="sum(a) / sum(b)")) is None  # a quality, not errors
    assert _bad_events_query(MetricRule(name="l", max=0.3, query="histogram_quantile(0.95, sum by (le) (x))")) is None


SECRET = "INTERNAL-ONLY: db_password=hunter2"


class _Answers(http.server.BaseHTTPRequestHandler):
    """A server on 127.0.0.1 that refuses every query, saying SECRET."""

    def do_GET(self):  # noqa: N802
        json_body = self.path.startswith("/json")
        body = json.dumps({"status": "error", "errorType": "bad_data", "error": SECRET}) if json_body else SECRET
        self.send_response(422 if json_body else 403)
        self.send_header("Content-Length", str(len(body.encode())))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path,said", [("/json", "HTTP 422 (bad_data)"), ("/text", "HTTP 403")])
def test_the_report_says_how_prometheus_refused_never_what_it_answered(refusing, path, said):
    """The address may be the one a rollout's author wrote: the report repeats no answer's text."""
    with pytest.raises(ReportError) as info:
        Prometheus(refusing + path).instant("up", NOW)
    assert said in str(info.value) and "db_password" not in str(info.value)


def test_the_verdicts_query_is_rendered_like_any_other():
    query = verdicts_query("ml", 'x"} or vector(1) or up{a="')
    assert query == 'modelrollout_analysis_verdicts_total{namespace="ml", name="x\\"} or vector(1) or up{a=\\""}'


class _Recorder(http.server.BaseHTTPRequestHandler):
    heard: list[str] = []

    def do_GET(self):  # noqa: N802
        type(self).heard.append(self.path)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("phase,generation,asked", [
    ("RolledBack", 3, True),  # the operator accepted this generation's spec, address included
    ("InvalidSpec", 3, False),  # the platform's policy refused it: the address may be anything
    ("RolledBack", 2, False),  # not judged yet by the operator
])
def test_the_report_asks_the_specs_prometheus_only_once_the_operator_accepted_it(phase, generation, asked):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.heard = []
    address = f"http://127.0.0.1:{server.server_address[1]}"
    obj = {"metadata": {"name": "m", "namespace": "ml", "generation": 3},
           "spec": {"selector": {"matchLabels": {"app": "m"}},
                    "template": {"metadata": {"labels": {"app": "m"}}, "spec": {"containers": [{"name": "s", "image": "m:2"}]}},
                    "service": {"port": 8080}, "trafficRouting": {"gatewayAPI": {"httpRoute": "r"}},
                    "strategy": {"steps": [{"weight": 10, "hold": "1m"}]},
                    "analysis": {"prometheus": {"address": address}, "preset": "http"}},
           "status": {"phase": phase, "observedGeneration": generation, "stableRevision": "aaaaaaaaaa",
                      "history": [{"revision": "bbbbbbbbbb", "result": "RolledBack", "reason": "error-rate",
                                   "startedAt": at(-120), "finishedAt": at(-60)}]}}
    try:
        built = build(obj, [], [], None, None, NOW)
    finally:
        server.shutdown()
        server.server_close()
    assert bool(_Recorder.heard) == asked
    if not asked:
        assert "--prometheus-url" in built.text


def test_every_verdict_is_a_row_and_repeats_are_one_row_with_their_count():
    """From the operator's counters as Prometheus sampled them (every 5 s from NOW): analyses every 10 s."""
    def t(seconds: float) -> datetime:
        return NOW + timedelta(seconds=seconds)

    matrix = [
        ({"metric": "error-rate", "verdict": "Pass"}, [(t(0), 4.0), (t(5), 4.0), (t(10), 5.0), (t(15), 5.0), (t(20), 6.0)]),
        ({"metric": "error-rate", "verdict": "Fail"}, [(t(30), 1.0)]),  # born in the window: rose from 0
        ({"metric": "latency", "verdict": "Inconclusive"}, [(t(0), 9.0), (t(10), 10.0), (t(20), 11.0), (t(30), 1.0)]),
    ]
    rows = verdict_runs(matrix, NOW)
    assert [(m.at, m.what, m.by) for m in rows] == [
        (t(10), f"analysis: error-rate Pass, latency Inconclusive (x2, the last at {at(20)})", "the operator (analysis)"),
        (t(30), "analysis: error-rate Fail, latency Inconclusive", "the operator (analysis)"),  # counter reset: 1
    ]
    # Another operator process took over at 20 s (peering): its own series, born in the window; the old
    # process's series ends. Neither is a reset.
    handed_over = [
        ({"metric": "error-rate", "verdict": "Pass", "pod": "a"}, [(t(0), 4.0), (t(10), 5.0), (t(15), 5.0)]),
        ({"metric": "error-rate", "verdict": "Pass", "pod": "b"}, [(t(20), 1.0), (t(25), 1.0)]),
    ]
    assert [(m.at, m.what) for m in verdict_runs(handed_over, NOW)] == [
        (t(10), f"analysis: error-rate Pass (x2, the last at {at(20)})")]
    release = Release("c", "b", "RolledBack", "error-rate", "2.0", NOW, t(30))
    assert [m.what.split(":")[0] for m in timeline(release, [], rows)] == ["revision c (model 2.0) applied; canary started",
                                                                           "analysis", "analysis", "decision"]


def test_weight_changes_are_timeline_rows():
    points = [(NOW, 0.0), (NOW + timedelta(seconds=5), 0.0), (NOW + timedelta(seconds=10), 20.0),
              (NOW + timedelta(seconds=15), 20.0), (NOW + timedelta(seconds=20), 0.0)]
    assert [(m.at, m.what.split(" (")[0]) for m in weight_changes(points)] == [
        (NOW, "canary weight 0%"), (NOW + timedelta(seconds=10), "canary weight 20%"),
        (NOW + timedelta(seconds=20), "canary weight 0%")]
