"""The kind e2e script (`make e2e`) without a cluster: syntax, lint, honest skipping, manifests.

The real run needs docker + kind + helm; here we check that it parses, that it skips with
"SKIPPED" (exit 0) when its tools are missing instead of pretending to pass, and that the
manifests it applies are valid Kubernetes objects.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "e2e" / "kind-e2e.sh"
MANIFESTS = ROOT / "tests" / "e2e" / "manifests"
BASH = shutil.which("bash") or "/bin/bash"


def test_script_parses():
    result = subprocess.run([BASH, "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_script_is_strict_and_cleans_up():
    text = SCRIPT.read_text()
    assert "set -euo pipefail" in text
    assert "trap cleanup EXIT" in text
    assert "kind delete cluster" in text
    for step in ("kind create cluster", "docker build", "kind load docker-image", "helm install",
                 "kubectl apply", "RolledBack", "Succeeded"):
        assert step in text, step


def test_shellcheck_if_available():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not on PATH (not a pinned dependency)")
    result = subprocess.run([shellcheck, "-x", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def fake_bin(tmp_path: Path, tools: dict[str, str]) -> dict[str, str]:
    """An environment whose PATH has bash, coreutils and the given fake tools only."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("dirname", "mktemp", "cat", "rm", "sed", "head", "tail", "printf", "sleep"):
        real = shutil.which(name)
        if real:
            (bindir / name).symlink_to(real)
    for name, body in tools.items():
        tool = bindir / name
        tool.write_text(f"#!{BASH}\n{body}\n")
        tool.chmod(0o755)
    # ROOT/.venv/bin is prepended by the script itself: keep its kubectl out of the way.
    return {"PATH": str(bindir), "HOME": str(tmp_path)}


@pytest.mark.parametrize(
    ("tools", "reason"),
    [
        ({}, "no docker command"),
        ({"docker": "exit 0"}, "no kind command"),
        ({"docker": "exit 1", "kind": "exit 0"}, "cannot reach a Docker engine"),
        ({"docker": "exit 0", "kind": "exit 0"}, "helm not available"),
    ],
    ids=["no-docker", "no-kind", "no-engine", "no-helm"],
)
def test_skips_honestly_without_its_tools(tmp_path, tools, reason):
    env = fake_bin(tmp_path, tools)
    result = subprocess.run(
        [BASH, str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("SKIPPED: "), result.stdout
    assert reason in result.stdout
    assert "PASSED" not in result.stdout


def manifests() -> list[dict]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def test_manifests_validate_against_kubernetes():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kinds = set()
    for doc in manifests():
        kinds.add(doc["kind"])
        if doc["kind"] == "ModelRollout":
            continue
        kubernetes_validate.validate(doc, "1.31.0", strict=True)
    assert {"Deployment", "ConfigMap", "Service", "ModelRollout"} <= kinds


def test_model_rollout_matches_the_crd():
    jsonschema = pytest.importorskip("jsonschema")
    crd = yaml.safe_load((ROOT / "crds" / "modelrollout.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def strip(node):  # OpenAPI extensions are not JSON Schema keywords
        if isinstance(node, dict):
            out = {k: strip(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
            if out.get("exclusiveMinimum") is True:
                out["exclusiveMinimum"] = out.pop("minimum")
            out.pop("nullable", None)
            return out
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    (rollout,) = [doc for doc in manifests() if doc["kind"] == "ModelRollout"]
    jsonschema.validate(rollout, strip(schema))
    # What the script patches exists where it patches it.
    container = rollout["spec"]["template"]["spec"]["containers"][0]
    assert [e["name"] for e in container["env"]] == ["MODEL_VERSION", "ERROR_RATE"]
    assert rollout["spec"]["model"]["version"] == "1"


def test_model_server_code_compiles():
    (code,) = [d for d in manifests() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "e2e-model-code"]
    for name, source in code["data"].items():
        compile(source, name, "exec")


def test_prometheus_config_is_valid(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian package `prometheus`)")
    (config,) = [d for d in manifests() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "prometheus-config"]
    parsed = yaml.safe_load(config["data"]["prometheus.yml"])
    # Debian builds Prometheus without Kubernetes service discovery: check everything else
    # (globals, relabelling) with a static target standing in for the pod discovery.
    for job in parsed["scrape_configs"]:
        sd = job.pop("kubernetes_sd_configs")
        assert sd[0]["role"] == "pod"
        job["static_configs"] = [{"targets": ["localhost:8080"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(parsed))
    result = subprocess.run([promtool, "check", "config", "--syntax-only", str(path)],
                            capture_output=True, text=True, timeout=60, env={**os.environ})
    assert result.returncode == 0, result.stdout + result.stderr
