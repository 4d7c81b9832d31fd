"""Runs the state-machine test once per invariant (the others switched off) and prints how many
examples each needed to fail, and the shrunk example: the table in docs/testing.md.

    PYTHONPATH=operator:tests/unit python tests/fuzz/findings.py [invariant ...]
"""

from __future__ import annotations

import sys

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

import test_state_machine as machine

INVARIANTS = sys.argv[1:] or (
    "inv1-serves-unjudged", "inv1-old-route-keeps-users", "inv2-weight-above-step", "inv3-promoted-unjudged", "inv11-stale-abort",
    "inv11-stale-promote", "inv11-stale-promote_full", "inv11-stale-retry", "inv12-silence-nan",
    "inv12-silence-several", "inv12-silence-missing", "inv12-drift", "inv8-route-missing", "inv8-weight-unread",
    "limits")

# A bounded, derandomized search per invariant, so that the table is reproducible.
SEARCH = settings(max_examples=1000, stateful_step_count=30, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow])


def main() -> None:
    for name in INVARIANTS:
        machine.ONLY, machine.EXAMPLES[0] = name, 0
        machine.FIRST_FAILURE.clear()
        try:
            run_state_machine_as_test(machine.RolloutMachine, settings=SEARCH)
        except AssertionError as exc:
            notes = "\n".join(getattr(exc, "__notes__", []))
            steps = [line.strip() for line in notes.splitlines() if line.strip().startswith("state.")
                     and ".check_" not in line and "teardown" not in line]
            print(f"{name}: FAILS after {machine.FIRST_FAILURE.get(name)} examples; shrunk: {'; '.join(steps)}")
            print("   ", str(exc).splitlines()[0])
        else:
            print(f"{name}: holds over {SEARCH.max_examples} examples")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
