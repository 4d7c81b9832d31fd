"""`kubectl modelrollout`: watch rollouts and steer them without editing the spec.

Commands are annotations carrying a fresh token (promote, abort, retry) or a level
(paused); the operator acts on each token once and never writes the annotations back,
so GitOps tools see no drift in the spec.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import click
from kubernetes import client, config, watch

from modelrollout.names import (ANNOTATION_ABORT, ANNOTATION_PAUSED, ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FULL,
                                ANNOTATION_RETRY, GROUP, PLURAL, VERSION)


def _api(kubeconfig: str | None) -> client.CustomObjectsApi:
    config.load_kube_config(config_file=kubeconfig)
    return client.CustomObjectsApi()


def _annotate(ctx: click.Context, name: str, annotations: dict[str, str | None]) -> None:
    api = _api(ctx.obj["kubeconfig"])
    api.patch_namespaced_custom_object(GROUP, VERSION, ctx.obj["namespace"], PLURAL, name,
                                       {"metadata": {"annotations": annotations}})


def _token() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def describe(obj: dict[str, Any]) -> str:
    """A few lines a person reads: phase, revisions, step and weight, message, last verdicts."""
    status = obj.get("status") or {}
    meta = obj["metadata"]
    lines = [
        f"{meta['namespace']}/{meta['name']}: {status.get('phase', 'Pending')}",
        f"  stable {status.get('stableRevision', '-')}  canary {status.get('canaryRevision', '-')}  "
        f"step {status.get('currentStep', '-')}  weight {status.get('canaryWeight', 0)}%",
        f"  {status.get('message', '')}",
    ]
    for result in status.get("lastAnalysis") or []:
        lines.append(f"  {result['verdict']:<12} {result['metric']:<18} {result.get('reason', '')}")
    return "\n".join(lines)


def explain(obj: dict[str, Any]) -> str:
    """Every recorded decision with its evidence: analysis, history and conditions."""
    status = obj.get("status") or {}
    lines = [describe(obj), "", "Analysis (latest):"]
    for result in status.get("lastAnalysis") or []:
        lines.append(f"  {result['metric']}: {result['verdict']} - {result.get('reason', '')}")
        lines.append(f"    value {result.get('value')} threshold {result.get('threshold')} samples {result.get('samples')}")
        lines.append(f"    query {result.get('query')}")
        for key, value in (result.get("evidence") or {}).items():
            lines.append(f"    {key}: {value}")
    lines.append("History:")
    for entry in status.get("history") or []:
        lines.append(f"  {entry.get('finishedAt')}  {entry.get('revision')}  {entry.get('result')}: {entry.get('reason')}")
    lines.append("Conditions:")
    for condition in status.get("conditions") or []:
        lines.append(f"  {condition['type']}={condition['status']} ({condition.get('reason')}) {condition.get('message', '')}")
    return "\n".join(lines)


@click.group()
@click.option("-n", "--namespace", default="default")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None)
@click.pass_context
def main(ctx: click.Context, namespace: str, kubeconfig: str | None) -> None:
    """Steer ModelRollouts: get, promote, abort, retry, pause, resume, explain."""
    ctx.obj = {"namespace": namespace, "kubeconfig": kubeconfig}


@main.command()
@click.argument("name")
@click.option("--watch", "-w", "watching", is_flag=True, help="Print every change until interrupted.")
@click.option("--timeout", type=int, default=0, help="With --watch: stop after this many seconds.")
@click.pass_context
def get(ctx: click.Context, name: str, watching: bool, timeout: int) -> None:
    """Phase, revisions, step, weight, message and the latest verdicts (--watch: every change)."""
    api = _api(ctx.obj["kubeconfig"])
    ns = ctx.obj["namespace"]
    obj = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    click.echo(describe(obj))
    if not watching:
        return
    last = describe(obj)
    deadline = time.monotonic() + timeout if timeout else None
    stream = watch.Watch().stream(api.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL,
                                  field_selector=f"metadata.name={name}", timeout_seconds=timeout or None)
    for event in stream:
        text = describe(event["object"])
        if text != last:
            click.echo(text)
            last = text
        if deadline and time.monotonic() > deadline:
            break


@main.command()
@click.argument("name")
@click.option("--full", is_flag=True, help="Skip every remaining step and promote now.")
@click.pass_context
def promote(ctx: click.Context, name: str, full: bool) -> None:
    """Pass the current manual gate (or, with --full, promote at once)."""
    _annotate(ctx, name, {ANNOTATION_PROMOTE_FULL if full else ANNOTATION_PROMOTE: _token()})
    click.echo(f"{name}: promote requested")


def _token_command(name: str, annotation: str, doc: str, done: str) -> None:
    """A command that sets a fresh token: the operator acts on each token once."""

    @click.argument("rollout")
    @click.pass_context
    def command(ctx: click.Context, rollout: str) -> None:
        _annotate(ctx, rollout, {annotation: _token()})
        click.echo(f"{rollout}: {done}")

    command.__doc__ = doc
    main.command(name=name)(command)


_token_command("abort", ANNOTATION_ABORT, "Roll the canary back now.", "abort requested")
_token_command("retry", ANNOTATION_RETRY, "Start the rolled-back revision again.", "retry requested")


@main.command()
@click.argument("name")
@click.pass_context
def pause(ctx: click.Context, name: str) -> None:
    """Hold the rollout where it is (analysis goes on; the hold clock stops)."""
    _annotate(ctx, name, {ANNOTATION_PAUSED: "true"})
    click.echo(f"{name}: paused")


@main.command()
@click.argument("name")
@click.pass_context
def resume(ctx: click.Context, name: str) -> None:
    """Go on from where it was paused."""
    _annotate(ctx, name, {ANNOTATION_PAUSED: None})
    click.echo(f"{name}: resumed")


@main.command(name="explain")
@click.argument("name")
@click.pass_context
def explain_command(ctx: click.Context, name: str) -> None:
    """Why the rollout is where it is: verdicts with values, thresholds, samples and queries."""
    api = _api(ctx.obj["kubeconfig"])
    click.echo(explain(api.get_namespaced_custom_object(GROUP, VERSION, ctx.obj["namespace"], PLURAL, name)))
