"""`kubectl modelrollout` parses its command line like kubectl: no cluster needed for any of these."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone

import pytest
import yaml
from click import ClickException
from click.testing import CliRunner
from kubernetes.config.config_exception import ConfigException

from modelrollout.plugin import Target, command_annotation, main, table
from modelrollout.spec import template_revision
from modelrollout_lab import scenarios


def parsed(*args: str) -> tuple[Target, str, dict]:
    """Parse a command line with the real click parser (no command runs): (target, command, its params)."""
    ctx = main.make_context("kubectl-modelrollout", list(args))
    name, command, rest = main.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
    sub = command.make_context(name, rest, parent=ctx)
    return sub.find_object(Target), name, sub.params


@pytest.mark.parametrize("args", [
    ("-n", "ml", "--context", "prod", "get", "fraud"),          # before the command (the old way)
    ("get", "fraud", "-n", "ml", "--context", "prod"),          # kubectl's order
    ("get", "-n", "ml", "fraud", "--context=prod"),             # between, and with =
    ("--context", "prod", "get", "fraud", "--namespace", "ml"),  # split across both sides
])
def test_kube_options_are_accepted_anywhere_on_the_line(args):
    target, command, params = parsed(*args)
    assert (command, params["name"]) == ("get", "fraud")
    assert (target.namespace, target.context, target.kubeconfig) == ("ml", "prod", None)


def test_the_last_namespace_wins_as_in_kubectl():
    target, _, _ = parsed("-n", "first", "promote", "fraud", "-n", "second")
    assert target.namespace == "second"


@pytest.mark.parametrize("command", ["list", "get", "promote", "abort", "retry", "pause", "resume", "explain", "report"])
def test_every_rollout_command_takes_the_kube_options_after_it(command):
    args = [command] if command == "list" else [command, "fraud"]
    target, name, _ = parsed(*args, "--kubeconfig", "/tmp/kc", "-n", "ml")
    assert name == command and (target.kubeconfig, target.namespace) == ("/tmp/kc", "ml")


def test_list_flags():
    _, _, params = parsed("list", "-A", "-o", "json")
    assert params == {"all_namespaces": True, "output": "json"}
    _, _, params = parsed("list")
    assert params == {"all_namespaces": False, "output": "table"}


@pytest.mark.parametrize("args", [
    ["get"],                          # NAME missing
    ["get", "fraud", "-o", "xml"],    # not an output format
    ["list", "--bogus"],
    ["frobnicate"],
    ["get", "fraud", "-n"],           # -n without a value
    ["completion", "powershell"],
])
def test_usage_errors_exit_2_before_any_api_call(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output


def write_kubeconfig(path, contexts: dict[str, str | None], current: str):
    """A kubeconfig whose contexts point at a closed port: only parsing can succeed."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": name, "context": {"cluster": "c", "user": "u", **({"namespace": ns} if ns else {})}}
                     for name, ns in contexts.items()],
        "current-context": current,
    }))
    return str(path)


def test_namespace_defaults_to_the_contexts_namespace_like_kubectl(tmp_path):
    kubeconfig = write_kubeconfig(tmp_path / "kc", {"dev": "ml-dev", "prod": "ml", "bare": None}, current="dev")
    assert Target(kubeconfig=kubeconfig).resolved_namespace() == "ml-dev"
    assert Target(kubeconfig=kubeconfig, context="prod").resolved_namespace() == "ml"
    assert Target(kubeconfig=kubeconfig, context="bare").resolved_namespace() == "default"
    assert Target(kubeconfig=kubeconfig, context="prod", namespace="other").resolved_namespace() == "other"
    with pytest.raises(ConfigException, match="nope"):
        Target(kubeconfig=kubeconfig, context="nope").resolved_namespace()


def test_an_unknown_context_is_an_error_with_exit_1(tmp_path):
    kubeconfig = write_kubeconfig(tmp_path / "kc", {"dev": "ml"}, current="dev")
    result = CliRunner().invoke(main, ["get", "fraud", "--context", "nope", "--kubeconfig", kubeconfig])
    assert result.exit_code == 1
    assert "kubeconfig" in result.output and "nope" in result.output and "Traceback" not in result.output


def test_an_unreachable_api_server_is_an_error_with_exit_1(tmp_path):
    kubeconfig = write_kubeconfig(tmp_path / "kc", {"dev": "ml"}, current="dev")
    result = CliRunner().invoke(main, ["list", "--kubeconfig", kubeconfig])
    assert result.exit_code == 1
    assert "cannot reach the API server" in result.output


def test_table_has_a_namespace_column_only_with_all_namespaces():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    rollout = {"metadata": {"name": "fraud", "namespace": "ml", "creationTimestamp": "2026-01-01T11:55:00Z"},
               "status": {"phase": "Progressing", "currentStep": 1, "canaryWeight": 25, "stableRevision": "a1",
                          "canaryRevision": "b2", "message": "step 1: holding"}}
    lines = table([rollout], now, with_namespace=True).splitlines()
    assert lines[0].split()[:3] == ["NAMESPACE", "NAME", "PHASE"]
    assert lines[1].split() == ["ml", "fraud", "Progressing", "1", "25", "a1", "b2", "5m", "step", "1:", "holding"]
    assert table([rollout], now, with_namespace=False).splitlines()[0].split()[0] == "NAME"
    assert table([], now, with_namespace=False) == "No resources found."


def complete(words: str) -> list[str]:
    """What bash completion offers for the last word of `words` (click's own completion protocol)."""
    result = CliRunner().invoke(main, [], prog_name="kubectl-modelrollout", env={
        "_KUBECTL_MODELROLLOUT_COMPLETE": "bash_complete", "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))})
    return [line.split(",", 1)[1] for line in result.output.splitlines()]


def test_completion_offers_commands_and_options():
    assert complete("kubectl-modelrollout pro") == ["promote"]
    assert "--all-namespaces" in complete("kubectl-modelrollout list --all")
    assert set(complete("kubectl-modelrollout get fraud -o ")) == {"table", "json", "yaml"}


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_is_valid_shell(shell):
    result = CliRunner().invoke(main, ["completion", shell])
    assert result.exit_code == 0 and "_KUBECTL_MODELROLLOUT_COMPLETE" in result.output
    interpreter = shutil.which(shell)
    if interpreter is None:
        pytest.skip(f"{shell} is not installed")
    check = subprocess.run([interpreter, "-n"], input=result.output, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr


def rollout(**status):
    return {"metadata": {"name": "scorer"}, "spec": {}, "status": status}


@pytest.mark.parametrize("command,status,annotation", [
    ("promote", {"phase": "Paused", "canaryRevision": "abc", "currentStep": 1},
     {"modelrollout.io/promote": "revision=abc,step=1,id=T"}),
    ("promote_full", {"phase": "Progressing", "canaryRevision": "abc", "currentStep": 0},
     {"modelrollout.io/promote-full": "revision=abc,id=T"}),
    ("promote_full", {"phase": "Promoting", "canaryRevision": "abc", "currentStep": 2},
     {"modelrollout.io/promote-full": "revision=abc,id=T"}),
    ("abort", {"phase": "Promoting", "canaryRevision": "abc", "currentStep": 2},
     {"modelrollout.io/abort": "revision=abc,id=T"}),
    ("retry", {"phase": "RolledBack", "stableRevision": "old", "abortedRevision": "abc"},
     {"modelrollout.io/retry": "revision=abc,id=T"}),
    # An invalid spec hands the canary's users back but keeps it recorded: it can still be aborted.
    ("abort", {"phase": "InvalidSpec", "canaryRevision": "abc", "currentStep": 1},
     {"modelrollout.io/abort": "revision=abc,id=T"}),
])
def test_a_command_names_the_release_the_rollout_runs_now(command, status, annotation):
    assert command_annotation(command, rollout(**status), "T") == annotation


@pytest.mark.parametrize("command,status,says", [
    ("promote", {"phase": "RolledBack", "stableRevision": "old", "abortedRevision": "abc", "message": "rolled back"},
     "scorer: nothing to promote: it has no canary in a step (phase RolledBack: rolled back)"),
    ("promote_full", {"phase": "RolledBack", "stableRevision": "old", "abortedRevision": "abc"},
     "nothing to promote --full: it has no canary (phase RolledBack)"),
    ("abort", {"phase": "RolledBack", "stableRevision": "old", "abortedRevision": "abc"}, "nothing to abort"),
    ("promote", {"phase": "Promoting", "canaryRevision": "abc", "currentStep": 2}, "nothing to promote"),
    ("retry", {"phase": "Progressing", "canaryRevision": "abc", "currentStep": 0},
     "nothing to retry: it is not rolled back"),
    *[(command, {"phase": "Succeeded", "stableRevision": "abc"}, "(phase Succeeded)")
      for command in ("promote", "promote_full", "abort", "retry")],
    ("abort", {}, "(phase Pending)"),
    ("promote", {"phase": "InvalidSpec", "canaryRevision": "abc", "currentStep": 1}, "nothing to promote"),
])
def test_a_command_with_nothing_to_act_on_is_refused(command, status, says):
    with pytest.raises(ClickException) as refused:
        command_annotation(command, rollout(**status), "T")
    assert says in refused.value.message and refused.value.exit_code == 1


def test_promote_full_while_the_first_revision_awaits_a_model_names_the_template():
    obj = scenarios.rollout("scorer", router="kserve")
    obj["status"] = {"phase": "Initializing", "awaitingHandoverSince": "2026-01-01T00:00:00Z"}
    revision = template_revision(obj["spec"]["template"])
    assert command_annotation("promote_full", obj, "T") == {"modelrollout.io/promote-full": f"revision={revision},id=T"}
    with pytest.raises(ClickException, match="nothing to abort"):
        command_annotation("abort", obj, "T")
