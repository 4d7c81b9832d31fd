"""The Grafana dashboard the chart ships: rendered by the real Helm engine, every query parsed by a
PromQL parser, every series it reads exported by the operator (modelrollout.metrics)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Iterator

import promql_parser
import pytest

from modelrollout import metrics
from test_helm_chart import CHART, KUBE_VERSIONS, NAMESPACE, RELEASE, helm, kubernetes_validate, of_kind, one, render

ENABLED = {"dashboard": {"enabled": True}}
# Grafana's variables, replaced by what Grafana substitutes before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "6h", "$__interval": "30s",
                     "$job": ".*", "$namespace": ".*", "$rollout": ".*"}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def dashboard(chart) -> dict[str, Any]:
    config_map = one(render(chart, ENABLED), "ConfigMap")
    (text,) = config_map["data"].values()
    return json.loads(text)


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target, annotation and query variable."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for annotation in dashboard["annotations"]["list"]:
        yield f"annotation {annotation['name']}", annotation["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            selector = re.fullmatch(r"label_values\((.*), *\w+\)", variable["query"]["query"])
            assert selector, variable
            yield f"variable {variable['name']}", selector.group(1)


def as_prometheus_sees_it(expr: str) -> str:
    for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(variable, GRAFANA_VARIABLES[variable])
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def series_names(node: Any) -> Iterator[str]:
    """Every metric name a PromQL tree selects."""
    pp = promql_parser
    if isinstance(node, pp.VectorSelector):
        yield node.name
    elif isinstance(node, pp.MatrixSelector):
        yield from series_names(node.vector_selector)
    elif isinstance(node, pp.Call):
        for arg in node.args:
            yield from series_names(arg)
    elif isinstance(node, pp.AggregateExpr):
        yield from series_names(node.expr)
        if isinstance(node.param, pp.Expr):
            yield from series_names(node.param)
    elif isinstance(node, pp.BinaryExpr):
        yield from series_names(node.lhs)
        yield from series_names(node.rhs)
    elif isinstance(node, (pp.UnaryExpr, pp.ParenExpr, pp.SubqueryExpr)):
        yield from series_names(node.expr)


def exported_series() -> set[str]:
    """The sample names the operator's registry can expose, labelled children or not."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    return {family.name + suffix for family in metrics.REGISTRY.collect()
            for suffix in suffixes.get(family.type, ("",))}


def test_off_by_default(chart):
    assert of_kind(render(chart, {}), "ConfigMap") == []


def test_config_map_is_labelled_for_the_grafana_sidecar(chart):
    config_map = one(render(chart, ENABLED), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == NAMESPACE
    moved = one(render(chart, {"dashboard": {"enabled": True, "namespace": "monitoring",
                                             "labels": {"grafana_dashboard": "yes"},
                                             "annotations": {"grafana_folder": "ModelRollout"}}}), "ConfigMap")
    assert moved["metadata"]["namespace"] == "monitoring"
    assert moved["metadata"]["labels"]["grafana_dashboard"] == "yes"
    assert moved["metadata"]["annotations"] == {"grafana_folder": "ModelRollout"}


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_config_map_validates(chart, version):
    kubernetes_validate.validate(one(render(chart, ENABLED), "ConfigMap"), version, strict=True)


def test_helm_lint_is_clean_with_the_dashboard():
    report = helm.lint(CHART, copy.deepcopy(ENABLED), strict=True, namespace=NAMESPACE)
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report


@pytest.mark.parametrize("values", [{"dashboard": {"enabled": "yes"}}, {"dashboard": {"namespace": "Not_A_NS"}},
                                    {"dashboard": {"enable": True}}], ids=["enabled-type", "namespace", "unknown-key"])
def test_schema_rejects_bad_dashboard_values(chart, values):
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_dashboard_has_the_panels_people_look_for(dashboard):
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Rollouts by phase", "Canary weight", "Analysis verdicts", "Promotions and rollbacks",
            "Reconcile lag", "Prometheus queries and errors"} <= titles
    assert dashboard["uid"] and len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_query_parses(dashboard):
    for where, expr in queries(dashboard):
        try:
            promql_parser.parse(as_prometheus_sees_it(expr))
        except ValueError as exc:
            pytest.fail(f"{where}: {expr}: {exc}")


def test_every_series_it_reads_is_one_the_operator_exports(dashboard):
    exported = exported_series()
    read = set()
    for where, expr in queries(dashboard):
        names = set(series_names(promql_parser.parse(as_prometheus_sees_it(expr))))
        assert names, f"{where} reads no series"
        assert names <= exported, f"{where}: {sorted(names - exported)} not exported by modelrollout.metrics"
        read |= names
    # The dashboard shows what the issue asks for, from the series made for it.
    assert {"modelrollout_rollouts", "modelrollout_canary_weight", "modelrollout_analysis_verdicts_total",
            "modelrollout_rollbacks_total", "modelrollout_promotions_total", "modelrollout_analysis_lag_seconds_bucket",
            "modelrollout_analyses_total", "modelrollout_prometheus_query_errors_total"} <= read
