"""One lab (emulated API server, simulators, real Prometheus) and one real operator process for the module.

A module may set `OPERATOR_ARGS` (e.g. the platform's policy flags) for its operator.
"""

from __future__ import annotations

import pytest

from modelrollout_lab.lab import Lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory, request):
    with Lab(str(tmp_path_factory.mktemp("lab")), seed=7) as lab:
        lab.start_operator(*getattr(request.module, "OPERATOR_ARGS", ()))
        yield lab
