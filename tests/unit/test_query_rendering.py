"""Placeholders cannot change a query's shape (issue 11).

Whatever a placeholder's value and whatever quote surrounds it (double, single, backtick), the
rendered query parses (promql-parser) into the template's tree, with each placeholder's value
landing whole inside its own string literal. The oracle here walks the trees itself.
"""

from __future__ import annotations

from importlib import resources

import promql_parser
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from modelrollout.spec import PLACEHOLDERS, QueryError, check_query_values, histogram_query, load_preset, render_query

STRING_PLACEHOLDERS = sorted(PLACEHOLDERS - {"interval", "window"})
# Each template with the placeholders it holds in backticks (a raw string: no escapes there).
TEMPLATES = {
    'sum(rate(http_requests_total{namespace="{{ namespace }}", rollout="{{ name }}", code=~"5.."}[{{ window }}]))': (),
    "up{job='{{ name }}', revision='{{ revision }}'}": (),
    "up{job=`{{ name }}`} > 0": ("name",),
    "up{a=\"{{ name }}-{{ revision }}\", b='x{{ namespace }}y', c=`{{ model.version }}z`}": ("model.version",),
    'label_replace(up, "dst", "{{ model.version }}", "src", "(.*)")': (),
    'up{a!="{{ model.name }}|other"} # {{ interval }} in a comment is only text': (),
    "sum(up{a=\"{{ canary.service }}\"}) / on() sum(up{a='{{ stable.service }}'})": (),
    '{__name__="up", a="{{ canary.revision }}" or b=`{{ stable.revision }}`}': ("stable.revision",),
}
NASTY = "\"'`\\{}()[],=~!#\n\r\t\x00 or-.|"
values_of = st.one_of(st.text(max_size=24), st.text(alphabet=NASTY, max_size=24),
                      st.sampled_from(['"} or vector(1) or up{a="', "'} or vector(1) or up{a='", "`} or vector(1) #",
                                       '\\"} or vector(1) #', "\\", "\n} or vector(1)"]))
placeholder_values = st.fixed_dictionaries({name: values_of for name in STRING_PLACEHOLDERS})


def structure(tree, fill=lambda text: text) -> list[tuple]:
    """Every node of the tree in walk order: kinds, operators, label names, and every string's value."""
    nodes: list[tuple] = []

    def visit(node) -> None:
        kind = type(node).__name__
        if isinstance(node, promql_parser.VectorSelector):
            group = lambda matchers: [(m.name, str(m.op), fill(m.value)) for m in matchers]  # noqa: E731
            nodes.append((kind, node.name, group(node.matchers.matchers),
                          [group(alternative) for alternative in node.matchers.or_matchers]))
        elif isinstance(node, promql_parser.StringLiteral):
            nodes.append((kind, fill(node.val)))
        elif isinstance(node, promql_parser.Call):
            nodes.append((kind, node.func.name))
        elif isinstance(node, (promql_parser.BinaryExpr, promql_parser.AggregateExpr)):
            nodes.append((kind, str(node.op)))
        elif isinstance(node, promql_parser.MatrixSelector):
            nodes.append((kind, node.range))
        else:
            nodes.append((kind,))

    promql_parser.walk(tree, visit)
    return nodes


def expected_structure(template: str, values: dict[str, str]) -> list[tuple]:
    """The template parsed with a plain marker per placeholder, each marker then read as its value."""
    markers = {f"MARK{index}X": name for index, name in enumerate(STRING_PLACEHOLDERS)}
    marked = template.replace("{{ window }}", "5m").replace("{{ interval }}", "30s")
    for marker, name in markers.items():
        marked = marked.replace(f"{{{{ {name} }}}}", marker)

    def fill(text: str) -> str:
        for marker, name in markers.items():
            text = text.replace(marker, values[name])
        return text

    return structure(promql_parser.parse(marked), fill)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template=st.sampled_from(sorted(TEMPLATES)), values=placeholder_values)
@example(template="up{job='{{ name }}', revision='{{ revision }}'}",  # issue 11: broke out of single quotes
         values={**{name: "x" for name in STRING_PLACEHOLDERS}, "name": "x'} or vector(1) or up{a='"})
def test_values_only_ever_fill_their_own_string_literal(template, values):
    full = {**values, "window": "5m", "interval": "30s"}
    try:
        rendered = render_query(template, full)
    except QueryError:
        # Only a backtick string may refuse: it has no escapes for a backtick or a backslash.
        assert any(any(c in "`\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in values[name])
                   for name in TEMPLATES[template])
        return
    assert structure(promql_parser.parse(rendered)) == expected_structure(template, values)


def _preset_templates() -> list[str]:
    """Every query the presets hold (input gates and distribution shifts included), as the operator renders them."""
    templates = set()
    for preset in sorted(path.stem for path in resources.files("modelrollout").joinpath("presets").iterdir()
                         if path.name.endswith(".yaml")):
        loaded = load_preset(preset)
        templates.add((loaded.get("samples") or {}).get("query"))
        for rule in (loaded.get("metrics") or {}).values():
            templates.update(rule.get(key) for key in ("query", "samplesQuery", "successQuery", "totalQuery"))
            if rule.get("histogram"):
                templates.add(histogram_query(rule["histogram"]))
    return sorted(t for t in templates if t)


PRESET_TEMPLATES = _preset_templates()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template=st.sampled_from(PRESET_TEMPLATES), values=placeholder_values)
def test_preset_queries_keep_their_shape_whatever_the_values(template, values):
    """Even values Kubernetes would never allow (the check that refuses them aside) stay inside their strings."""
    rendered = render_query(template, {**values, "window": "5m", "interval": "30s"})
    assert structure(promql_parser.parse(rendered)) == expected_structure(template, values)


def test_the_property_sees_every_kind_of_preset_query():
    """The property above is only as good as its templates: counts, ratios and histogram (drift) queries."""
    assert len(PRESET_TEMPLATES) > 20
    assert any(t.startswith("sum by (le) (increase(model_input_feature_value_bucket") for t in PRESET_TEMPLATES)


@given(window=st.text(max_size=12))
def test_durations_are_durations_or_refused(window):
    try:
        rendered = render_query("rate(up[{{ window }}])", {"window": window})
    except QueryError:
        return
    assert rendered == f"rate(up[{window}])" and window[:-1].rstrip("m").isdigit()


@pytest.mark.parametrize("name,good,bad", [
    ("namespace", "ml-team", "ml_team"),
    ("name", "fraud.detector", "Fraud"),
    ("revision", "0a1b2c3d4e", 'x"}'),
    ("canary.service", "fraud-canary", "fraud canary"),
    ("model.name", "meta-llama/Llama-3-8B", "llama\"} or vector(1)"),
    ("model.version", "2.4.0+build.7", "2.4.0\n"),
])
def test_values_are_what_kubernetes_allows_for_them(name, good, bad):
    check_query_values({name: good})
    with pytest.raises(QueryError):
        check_query_values({name: bad})


@given(value=st.text(max_size=70))
def test_namespace_values_are_dns_labels(value):
    try:
        check_query_values({"namespace": value})
    except QueryError:
        return
    assert value == "" or (len(value) <= 63 and value.replace("-", "").isalnum() and value == value.lower()
                           and value[0] != "-" and value[-1] != "-" and value.isascii())
