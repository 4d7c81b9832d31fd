"""Fixtures shared by the test folders: `prometheus_binary`, for the tests that start a real Prometheus."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    """The prometheus binary, never installed from here (`make test` installs it): without one, the
    tests that need it are skipped."""
    from modelrollout_lab.prometheus import PrometheusError, find_prometheus
    try:
        return find_prometheus(install=False)
    except PrometheusError as exc:
        pytest.skip(str(exc))
