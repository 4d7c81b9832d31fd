"""The pure parts of `modelrollout backtest`: time arguments, the table and the one-line outcome.

The replay itself runs against a real Prometheus in tests/lab/test_backtest_prometheus.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from modelrollout.backtest import BacktestRow, MetricResult, outcome, parse_time, render_table

NOW = datetime(2025, 3, 1, 12, 30, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW),
    ("NOW", NOW),
    ("-30m", NOW - timedelta(minutes=30)),
    ("-1h30m", NOW - timedelta(minutes=90)),
    ("- 45s", NOW - timedelta(seconds=45)),
    ("-500ms", NOW - timedelta(milliseconds=500)),
    ("2025-03-01T12:04:30Z", datetime(2025, 3, 1, 12, 4, 30, tzinfo=UTC)),
    ("2025-03-01T12:04:30.250Z", datetime(2025, 3, 1, 12, 4, 30, 250000, tzinfo=UTC)),
    ("2025-03-01T14:04:30+02:00", datetime(2025, 3, 1, 12, 4, 30, tzinfo=UTC)),
    ("1740832270", datetime(2025, 3, 1, 12, 31, 10, tzinfo=UTC)),
    ("1740832270.5", datetime(2025, 3, 1, 12, 31, 10, 500000, tzinfo=UTC)),
])
def test_parse_time(text: str, expected: datetime) -> None:
    parsed = parse_time(text, NOW)
    assert parsed == expected
    assert parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0)


def test_parse_time_keeps_the_instant_of_another_zone() -> None:
    now = NOW.astimezone(timezone(timedelta(hours=-5)))
    assert parse_time("-10m", now) == NOW - timedelta(minutes=10)


@pytest.mark.parametrize("text", ["", "yesterday", "-30x", "-", "2025-03-01T12:04:30", "2025-13-01T00:00:00Z"])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text, NOW)


def _row(second: int, action: str, phase: str, message: str, *metrics: MetricResult, step: int | None = 0,
         weight: int = 10) -> BacktestRow:
    return BacktestRow(at=NOW + timedelta(seconds=second), step=step, weight=weight, phase=phase, action=action,
                       metrics=metrics, message=message)


def test_outcome_rolled_back() -> None:
    rows = [
        _row(0, "Advance", "Progressing", "step 0: canary weight 10"),
        _row(30, "Hold", "Progressing", "step 0 (weight 10): error-rate pass",
             MetricResult("error-rate", "Pass", 0.001, "ok")),
        _row(60, "Rollback", "RolledBack", "rolled back: error-rate 0.052 > 0.01 at step 0 (weight 10)",
             MetricResult("error-rate", "Fail", 0.052, "0.052 > 0.01"), step=None, weight=0),
    ]
    assert outcome(rows) == "would have rolled back at 12:31:00: error-rate 0.052 > 0.01 at step 0 (weight 10)"
    table = render_table(rows).splitlines()
    assert table[0].split() == ["time", "step", "weight", "error-rate", "decision"]
    assert table[2].split()[:5] == ["12:30:30", "0", "10", "pass", "0.001"]
    assert table[3].split()[:5] == ["12:31:00", "-", "0", "fail", "0.052"]
    assert table[3].endswith("Rollback: rolled back: error-rate 0.052 > 0.01 at step 0 (weight 10)")


def test_outcome_promoted_and_undecided() -> None:
    promoted = [_row(0, "Advance", "Progressing", "step 0"), _row(90, "Promoted", "Succeeded", "promoted", step=None)]
    assert outcome(promoted) == "would have promoted at 12:31:30"
    holding = [_row(10, "Hold", "Progressing", "step 0 (weight 10): error-rate inconclusive",
                    MetricResult("error-rate", "Inconclusive", None, "need more samples"))]
    assert outcome(holding).startswith("undecided at 12:30:10: step 0 (weight 10), Progressing")
    assert "inconclusive -" in render_table(holding)
    assert outcome([]).startswith("nothing happened")
