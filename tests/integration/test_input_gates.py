"""Input-side gates in the lab (issue 13): a canary whose preprocessing hands the model different
inputs, with the same errors, latency and predictions, is rolled back; identical inputs pass."""

from __future__ import annotations

import pytest

from lab_watch import start_stable
from modelrollout_lab import scenarios

pytestmark = pytest.mark.lab

SAMPLED = {"rps": 400, "min_samples": 300}
ERRORS = {"name": "error-rate", "max": 0.02}
INPUT_GATES = [{"name": "input-missing-rate"}, {"name": "input-drift"}, ERRORS]


@pytest.mark.parametrize("name,inputs,gate", [
    # the 5 % of rows missing the feature are dropped instead of imputed (a dependency bump)
    ("drops-missing", {"input-impute": "drop"}, "input-drift"),
    # the parser loses the feature in a third of the rows
    ("loses-feature", {"input-missing-rate": "0.3"}, "input-missing-rate"),
    # the feature is rescaled before it reaches the model
    ("rescaled", {"input-mean": "0.6"}, "input-drift"),
])
def test_a_canary_whose_inputs_alone_differ_is_rolled_back(lab, name, inputs, gate):
    """Each gate alone (beside error-rate) catches its case: a lost feature also shifts the distribution."""
    v1 = start_stable(lab, name, metrics=[{"name": gate}, ERRORS], **SAMPLED)
    lab.apply(scenarios.release(v1, "2.0.0", inputs))
    status = lab.wait_for_phase(name, "RolledBack", timeout=60)
    assert gate in status["message"]
    assert status["history"][0]["result"] == "RolledBack"


def test_a_canary_with_the_same_inputs_passes_the_input_gates(lab):
    # Proving a 5 % missing rate within 0.03 of stable's takes a few thousand canary rows.
    v1 = start_stable(lab, "same-inputs", metrics=INPUT_GATES, rps=800, min_samples=300,
                      steps=[{"weight": 50, "hold": "4s"}])
    lab.apply(scenarios.release(v1, "2.0.0"))
    status = lab.wait_for(lambda: (s := lab.status("same-inputs")).get("phase") == "Succeeded"
                          and (s.get("history") or [{}])[0].get("result") == "Promoted" and s,
                          timeout=120, what="promotion")
    assert status["history"][0]["result"] == "Promoted"
