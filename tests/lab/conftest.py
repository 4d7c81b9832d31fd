"""Fixtures of the lab tests: the emulated Kubernetes API server (`apiserver`, `apiserver_kubeconfig`, `api`)."""
from __future__ import annotations

import pathlib
import sys

import pytest

_OPERATOR = pathlib.Path(__file__).resolve().parents[2] / 'operator'
if str(_OPERATOR) not in sys.path:  # the package may not be pip-installed in the venv
    sys.path.insert(0, str(_OPERATOR))


@pytest.fixture(scope='module')
def apiserver():
    """An emulated API server in a background thread (one per test module): a ThreadedApiServer."""
    from modelrollout_lab.apiserver import start_in_thread
    handle = start_in_thread()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope='module')
def apiserver_kubeconfig(apiserver, tmp_path_factory) -> pathlib.Path:
    """A kubeconfig file pointing to the module's `apiserver` (context `modelrollout-lab`)."""
    return apiserver.write_kubeconfig(tmp_path_factory.mktemp('kube') / 'config')


@pytest.fixture(scope='module')
def api(apiserver_kubeconfig) -> str:
    """The path of the module's kubeconfig, as the operator's client is given it."""
    return str(apiserver_kubeconfig)
