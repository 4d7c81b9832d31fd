"""Every manifest in examples/ validates against the CRD's schema and parses into a spec."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from modelrollout.spec import PlatformPolicy, applied_routing, parse_spec
from modelrollout.status import RolloutStatus

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "modelrollout.yaml").read_text())


def _json_schema(schema):
    """OpenAPI v3 (Kubernetes flavour) to JSON Schema: drop x-kubernetes-*, map nullable and int-or-string."""
    if isinstance(schema, list):
        return [_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _json_schema(v) for k, v in schema.items() if not k.startswith("x-kubernetes") and k != "nullable"}
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if out.get("exclusiveMinimum") is True:
        out["exclusiveMinimum"] = out.pop("minimum")
    return out


SCHEMA = _json_schema(CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
ROLLOUTS = [(path.name, doc) for path in sorted((ROOT / "examples").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("kind") == "ModelRollout"]


def test_there_are_examples():
    assert len(ROLLOUTS) >= 3


@pytest.mark.parametrize("name,doc", ROLLOUTS, ids=[n for n, _ in ROLLOUTS])
def test_example_validates_and_parses(name, doc):
    jsonschema.validate(doc, SCHEMA)
    # The platform of the examples: its Prometheus is the one they name (or use when they name none).
    spec = parse_spec(doc["spec"], PlatformPolicy(prometheus_url="http://prometheus.monitoring:9090"))
    assert spec.strategy.steps


def test_schema_rejects_what_it_can():
    doc = ROLLOUTS[0][1]
    bad = yaml.safe_load(yaml.safe_dump(doc))
    bad["spec"]["strategy"]["steps"][0]["weight"] = 150
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


@pytest.mark.parametrize("name,doc", ROLLOUTS, ids=[n for n, _ in ROLLOUTS])
def test_an_unchanged_routing_reads_back_from_status_as_unchanged(name, doc):
    """status.appliedRouting, stored as JSON and read again, equals the same spec's routing: else every
    pass would take it for a routing change and hand the route back to stable (the istio router's
    `routes` list came back unequal to a tuple, and no mirror step was ever confirmed)."""
    spec = parse_spec(doc["spec"], PlatformPolicy(prometheus_url="http://prometheus.monitoring:9090"))
    stored = RolloutStatus.parse(json.loads(json.dumps(RolloutStatus(applied_routing=applied_routing(spec)).dump())))
    assert stored.applied_routing == applied_routing(spec)
