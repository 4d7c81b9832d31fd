"""`kubectl modelrollout`: watch rollouts and steer them without editing the spec.

Commands are annotations naming the release they are for, with a fresh token (promote, abort,
retry), or a level (paused); the operator acts on each once and never writes the annotations back,
so GitOps tools see no drift in the spec.

Like kubectl, `-n/--namespace`, `--context` and `--kubeconfig` are accepted anywhere on
the line, and the namespace defaults to the kubeconfig context's namespace.

Exit codes: 0 done; 1 error (API refused or unreachable, not found, bad kubeconfig);
2 usage error; 3 with `get --exit-status`: the rollout is RolledBack or InvalidSpec; 4 with
`get --watch --exit-status --timeout`: it had not settled when the timeout ran out.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import click
import yaml
from click.shell_completion import CompletionItem, get_completion_class
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from modelrollout.names import (ANNOTATION_ABORT, ANNOTATION_PAUSED, ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FULL,
                                ANNOTATION_RETRY, GROUP, KIND, LABEL_REVISION, PLURAL, VERSION, rollout_selector)
from modelrollout.core import command_value
from modelrollout.routers import RouteTarget, gateway_api, istio, kserve
from modelrollout.spec import SpecError, parse_spec, reading_policy
from modelrollout.status import RolloutStatus

PROG = "kubectl-modelrollout"
EXIT_ROLLOUT_FAILED = 3
EXIT_TIMED_OUT = 4
FAILED_PHASES = ("RolledBack", "InvalidSpec")
FINAL_PHASES = ("Succeeded", *FAILED_PHASES)
OUTPUTS = ("table", "json", "yaml")


@dataclass
class Target:
    """Where commands go: filled from the kube options wherever they appear on the line."""

    namespace: str | None = None
    context: str | None = None
    kubeconfig: str | None = None
    _client: client.ApiClient | None = field(default=None, repr=False)

    def api_client(self) -> client.ApiClient:
        if self._client is None:
            self._client = config.new_client_from_config(config_file=self.kubeconfig, context=self.context)
        return self._client

    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client())

    def resolved_namespace(self) -> str:
        """`-n` if given, else the context's namespace, else "default" (as kubectl does)."""
        if self.namespace:
            return self.namespace
        contexts, active = config.list_kube_config_contexts(config_file=self.kubeconfig)
        chosen = next((c for c in contexts if c["name"] == self.context), None) if self.context else active
        if chosen is None:
            raise ConfigException(f"context {self.context!r} not found in the kubeconfig")
        return (chosen.get("context") or {}).get("namespace") or "default"


def _store(attribute: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is not None:
            setattr(ctx.ensure_object(Target), attribute, value)
    return callback


def kube_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """-n/--namespace, --context, --kubeconfig: on the group and on every command, so any position works."""
    for decls, attribute, text in reversed((
        (("-n", "--namespace"), "namespace", "Namespace (default: the context's namespace)."),
        (("--context",), "context", "kubeconfig context to use."),
        (("--kubeconfig",), "kubeconfig", "Path to the kubeconfig (default: $KUBECONFIG or ~/.kube/config)."),
    )):
        command = click.option(*decls, attribute, default=None, expose_value=False, callback=_store(attribute),
                               help=text)(command)
    return command


def _server_error(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    return f"Error from server ({body.get('reason') or exc.reason}): {body.get('message') or exc.body or exc.status}"


class KubectlGroup(click.Group):
    """Turns API and kubeconfig failures into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiException as exc:
            raise click.ClickException(_server_error(exc)) from exc
        except ConfigException as exc:
            raise click.ClickException(f"kubeconfig: {exc}") from exc
        except HTTPError as exc:
            raise click.ClickException(f"cannot reach the API server: {exc}") from exc


def _rollout_names(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Shell completion of NAME: the rollouts in the namespace (nothing when the cluster is unreachable)."""
    target = ctx.find_object(Target) or Target()
    try:
        found = target.custom().list_namespaced_custom_object(GROUP, VERSION, target.resolved_namespace(), PLURAL)
    except Exception:  # noqa: BLE001  (completion must never print a traceback into the shell)
        return []
    return [CompletionItem(o["metadata"]["name"]) for o in found.get("items", [])
            if o["metadata"]["name"].startswith(incomplete)]


def rollout_argument(name: str = "name") -> Callable[..., Any]:
    return click.argument(name, shell_complete=_rollout_names)


def _token() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def command_annotation(command: str, obj: dict[str, Any], token: str) -> dict[str, str]:
    """The annotation that asks `command` (promote, promote_full, abort, retry) of the release the
    rollout runs now, naming its revision (and, for promote, its step): the operator ignores it once
    that release is gone. A click error (exit 1) when there is nothing to act on."""
    status = rollout_status(obj)
    phase, canary, step = status.phase or "Pending", status.canary_revision, status.current_step
    name = obj["metadata"]["name"]
    label = "promote --full" if command == "promote_full" else command
    if command == "retry":
        revision = status.aborted_revision if phase == "RolledBack" else None
        nothing = "it is not rolled back"
    elif command == "promote_full" and phase == "Initializing" and status.awaiting_handover_since:
        revision = _template_revision(obj)  # replaces an awaited model (the operator's AwaitingHandover)
        nothing = "its spec is invalid"
    else:
        # Under an invalid spec the canary stays recorded (its users back on stable): it can still be aborted.
        acting = phase in ("Progressing", "Paused") or (phase == "Promoting" and command != "promote") or \
            (phase == "InvalidSpec" and command == "abort")
        revision = canary if acting and (command != "promote" or step is not None) else None
        nothing = "it has no canary in a step" if command == "promote" else "it has no canary"
    if revision is None:
        raise click.ClickException(f"{name}: nothing to {label}: {nothing} (phase {phase}"
                                   f"{f': {status.message}' if status.message else ''})")
    annotation = {"promote": ANNOTATION_PROMOTE, "promote_full": ANNOTATION_PROMOTE_FULL, "abort": ANNOTATION_ABORT,
                  "retry": ANNOTATION_RETRY}[command]
    return {annotation: command_value(revision, step if command == "promote" else None, token)}


def _template_revision(obj: dict[str, Any]) -> str | None:
    try:
        return parse_spec(dict(obj.get("spec") or {}), reading_policy(obj.get("spec") or {})).revision
    except SpecError:
        return None


def _command(target: Target, name: str, command: str) -> str:
    """Reads the rollout, then writes the command naming its current release; returns that value."""
    annotations = command_annotation(command, _read(target, name), _token())
    _annotate(target, name, dict(annotations))
    return next(iter(annotations.values()))


def _annotate(target: Target, name: str, annotations: dict[str, str | None]) -> None:
    target.custom().patch_namespaced_custom_object(GROUP, VERSION, target.resolved_namespace(), PLURAL, name,
                                                   {"metadata": {"annotations": annotations}})


def _read(target: Target, name: str) -> dict[str, Any]:
    return target.custom().get_namespaced_custom_object(GROUP, VERSION, target.resolved_namespace(), PLURAL, name)


# ---- rendering (pure: objects in, text out) ----

def age(created: str | None, now: datetime) -> str:
    """A short age like kubectl's: 42s, 7m, 5h, 3d."""
    if not created:
        return "<unknown>"
    seconds = max(0, int((now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def rollout_status(obj: dict[str, Any]) -> RolloutStatus:
    """The rollout's status as far as it parses: a part someone wrote by hand never stops the plugin."""
    return RolloutStatus.parse_lenient(obj.get("status"))[0]


def table(objects: list[dict[str, Any]], now: datetime, with_namespace: bool) -> str:
    """The printer columns of the CRD (plus the message), aligned like `kubectl get`."""
    header = ["NAME", "PHASE", "STEP", "WEIGHT", "STABLE", "CANARY", "AGE", "MESSAGE"]
    rows = []
    for obj in objects:
        meta, status = obj["metadata"], rollout_status(obj)
        row = [meta["name"], status.phase or "Pending", "" if status.current_step is None else str(status.current_step),
               str(status.canary_weight or 0), status.stable_revision or "", status.canary_revision or "",
               age(meta.get("creationTimestamp"), now), status.message or ""]
        rows.append([meta["namespace"], *row] if with_namespace else row)
    if with_namespace:
        header = ["NAMESPACE", *header]
    if not rows:
        return "No resources found."
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header, *rows])


def serialized(document: Any, output: str) -> str:
    if output == "json":
        return json.dumps(document, indent=2)
    return yaml.safe_dump(document, sort_keys=False).rstrip()


def describe(obj: dict[str, Any]) -> str:
    """One line a person reads first: namespace/name, phase, step and weight."""
    status = rollout_status(obj)
    meta = obj["metadata"]
    steps = len(((obj.get("spec") or {}).get("strategy") or {}).get("steps") or [])
    step = status.current_step
    where = f"step {step} of {steps}" if step is not None else "no step"
    return (f"{meta['namespace']}/{meta['name']}: {status.phase or 'Pending'}  {where}  "
            f"weight {status.canary_weight or 0}%")


# The routing object each mesh router edits: (group/version, plural, the spec field naming it).
ROUTING_OBJECTS = {"gatewayAPI": (gateway_api.GROUP_VERSION, "httproutes", "httpRoute"),
                   "istio": (istio.GROUP_VERSION, "virtualservices", "virtualService"),
                   "kserve": (kserve.GROUP_VERSION, "inferenceservices", "inferenceService")}


def _agreed(values: set[int]) -> int | None:
    return values.pop() if len(values) == 1 else None


def canary_route_share(obj: dict[str, Any], route: dict[str, Any]) -> tuple[int | None, int | None]:
    """(canary weight, mirror percent) as the rollout's router reads them back from its routing object
    (HTTPRoute, VirtualService, InferenceService); None when unknown (managed parts disagree, the
    spec does not parse)."""
    meta, status = obj["metadata"], rollout_status(obj)
    try:
        spec = parse_spec(dict(obj.get("spec") or {}), reading_policy(obj.get("spec") or {}))
    except SpecError:
        return None, None
    target = RouteTarget(meta["namespace"], meta["name"], meta.get("uid", ""), spec,
                         stable_revision=status.stable_revision, canary_revision=status.canary_revision)
    router = spec.traffic_routing.router
    if router == "gatewayAPI":
        rules = [route["spec"]["rules"][i] for i in gateway_api.managed_rules(route, target.name)]
        return (_agreed({gateway_api.canary_share(rule.get("backendRefs") or [], target.namespace, target.name)
                         for rule in rules}),
                _agreed({gateway_api.mirror_share(rule, target.namespace, target.name) for rule in rules}))
    if router == "istio":
        routes = [route["spec"]["http"][i] for i in istio.managed_routes(route, target)]
        return (_agreed({istio.canary_share(r, target) for r in routes}),
                _agreed({istio.mirror_share(r, target) for r in routes}))
    weight = kserve.raw_weight(route, target) if kserve.is_raw(route) else kserve.serverless_weight(route, target)
    return weight, 0


def _route_weights(obj: dict[str, Any], deployments: list[dict[str, Any]],
                   route: dict[str, Any] | None) -> dict[str, str]:
    """What each revision really gets: with a mesh router the canary's and stable's shares of the
    rollout's traffic (and the mirror) in its routing object; with no mesh the share of ready pods."""
    status = rollout_status(obj)
    routing = (obj.get("spec") or {}).get("trafficRouting") or {}
    if any(router in routing for router in ROUTING_OBJECTS):
        if route is None:
            return {}  # the routing object is not there: the weights are unknown, not the pods' shares
        weight, mirror = canary_route_share(obj, route)
        shares = {status.stable_revision: None if weight is None else 100 - weight,
                  status.canary_revision: weight}
        shown = {revision: "-" if share is None else f"{share}%" for revision, share in shares.items() if revision}
        if status.canary_revision and mirror:
            shown[status.canary_revision] += f"  mirror {mirror}%"
        return shown
    ready = {(d["metadata"].get("labels") or {}).get(LABEL_REVISION): int((d.get("status") or {}).get("readyReplicas") or 0)
             for d in deployments}
    total = sum(ready.values())
    return {revision: f"{round(100 * count / total)}%" if total else "-" for revision, count in ready.items()}


def tree(obj: dict[str, Any], deployments: list[dict[str, Any]], route: dict[str, Any] | None) -> str:
    """rollout -> revisions (stable/canary, ready replicas, route weight) -> the latest verdicts."""
    status = rollout_status(obj)
    meta = obj["metadata"]
    lines = [describe(obj)]
    if meta.get("generation") != status.observed_generation:
        lines.append(f"│ generation {meta.get('generation')} not yet observed (status is of {status.observed_generation})")
    if status.message:
        lines.append(f"│ {status.message}")
    roles = {status.stable_revision: "stable", status.canary_revision: "canary"}
    by_revision = {(d["metadata"].get("labels") or {}).get(LABEL_REVISION): d for d in deployments}
    revisions = [r for r in roles if r] + sorted(r for r in by_revision if r not in roles and r)
    weights = _route_weights(obj, deployments, route)
    branches: list[tuple[str, list[str]]] = []
    for revision in revisions:
        deployment = by_revision.get(revision)
        if deployment is None:
            pods = "no Deployment"
        else:
            d_status = deployment.get("status") or {}
            pods = f"ready {int(d_status.get('readyReplicas') or 0)}/{int((deployment.get('spec') or {}).get('replicas') or 0)}"
        branches.append((f"revision {revision}  {roles.get(revision, 'old')}  {pods}  "
                         f"route weight {weights.get(revision, '-')}", []))
    verdicts = [f"{r.verdict:<12} {r.metric:<18} {r.reason}" for r in status.last_analysis]
    if verdicts:
        branches.append((f"analysis at {status.last_analysis_at or '-'}", verdicts))
    for i, (label, children) in enumerate(branches):
        last = i == len(branches) - 1
        lines.append(f"{'└──' if last else '├──'} {label}")
        for j, child in enumerate(children):
            lines.append(f"{'    ' if last else '│   '}{'└──' if j == len(children) - 1 else '├──'} {child}")
    return "\n".join(lines)


def explain(obj: dict[str, Any]) -> str:
    """Every recorded decision with its evidence: analysis, history and conditions."""
    status = rollout_status(obj)
    lines = [describe(obj), f"  {status.message or ''}", "", "Analysis (latest):"]
    for result in status.last_analysis:
        lines.append(f"  {result.metric}: {result.verdict} - {result.reason}")
        lines.append(f"    value {result.value} threshold {result.threshold} samples {result.samples}")
        lines.append(f"    query {result.query}")
        for key, value in result.evidence.items():
            lines.append(f"    {key}: {value}")
    lines.append("History:")
    for entry in status.history:
        lines.append(f"  {entry.finished_at}  {entry.revision}  {entry.result}: {entry.reason}")
    lines.append("Conditions:")
    for condition in status.conditions:
        lines.append(f"  {condition.type}={condition.status} ({condition.reason}) {condition.message}")
    return "\n".join(lines)


def settled(obj: dict[str, Any]) -> bool:
    """The rollout reached a final phase for the spec as it is now (not a stale status of an older one)."""
    status = rollout_status(obj)
    return status.phase in FINAL_PHASES and status.observed_generation == obj["metadata"].get("generation")


# ---- commands ----

@click.group(cls=KubectlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@kube_options
@click.pass_context
def main(ctx: click.Context) -> None:
    """Watch and steer ModelRollouts: list, get, promote, abort, retry, pause, resume, explain, report.

    -n/--namespace, --context and --kubeconfig go anywhere on the line. Exit codes: 0 done,
    1 error (API, not found, kubeconfig), 2 usage, 3 (get --exit-status) rollout RolledBack or InvalidSpec,
    4 (get --watch --exit-status --timeout) not settled in time.
    """
    ctx.ensure_object(Target)


output_option = click.option("-o", "--output", type=click.Choice(OUTPUTS), default="table",
                             help="table (default), json or yaml.")


@main.command(name="list")
@kube_options
@click.option("-A", "--all-namespaces", is_flag=True, help="Rollouts of every namespace.")
@output_option
@click.pass_obj
def list_command(target: Target, all_namespaces: bool, output: str) -> None:
    """The rollouts of the namespace (-A: of all namespaces), like `kubectl get modelrollouts`."""
    api = target.custom()
    if all_namespaces:
        found = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    else:
        found = api.list_namespaced_custom_object(GROUP, VERSION, target.resolved_namespace(), PLURAL)
    items = sorted(found.get("items", []), key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))
    if output == "table":
        click.echo(table(items, datetime.now(timezone.utc), with_namespace=all_namespaces))
    else:
        click.echo(serialized({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {}}, output))


def _observe(target: Target, name: str) -> tuple[dict[str, Any], str]:
    """The rollout and its tree: its Deployments and its routing object (HTTPRoute, VirtualService or
    InferenceService) when a mesh router carries its traffic."""
    obj = _read(target, name)
    namespace = obj["metadata"]["namespace"]
    api_client = target.api_client()
    deployments = client.AppsV1Api(api_client).list_namespaced_deployment(namespace, label_selector=rollout_selector(name))
    routing = (obj.get("spec") or {}).get("trafficRouting") or {}
    route = None
    for router, (group_version, plural, field_name) in ROUTING_OBJECTS.items():
        route_name = (routing.get(router) or {}).get(field_name)
        if not route_name:
            continue
        group, version = group_version.split("/")
        try:
            route = target.custom().get_namespaced_custom_object(group, version, namespace, plural, route_name)
        except ApiException as exc:
            if exc.status != 404:
                raise
    return obj, tree(obj, api_client.sanitize_for_serialization(deployments.items), route)


@main.command()
@kube_options
@rollout_argument()
@output_option
@click.option("--watch", "-w", "watching", is_flag=True, help="Print the tree again on every change until interrupted.")
@click.option("--timeout", type=int, default=0, help="With --watch: stop after this many seconds.")
@click.option("--exit-status", is_flag=True,
              help=f"Exit {EXIT_ROLLOUT_FAILED} if the rollout is RolledBack or InvalidSpec; with --watch, "
                   f"stop once it is Succeeded, RolledBack or InvalidSpec (exit {EXIT_TIMED_OUT} if --timeout "
                   "runs out first).")
@click.pass_obj
def get(target: Target, name: str, output: str, watching: bool, timeout: int, exit_status: bool) -> None:
    """The rollout as a tree: revisions, ready replicas, route weights, step, latest verdicts.

    --watch re-reads every second and prints the tree (or the object, with -o) when it changed.
    """
    deadline = time.monotonic() + timeout if timeout else None
    last = None
    while True:
        obj, text = _observe(target, name)
        if output != "table":
            text = serialized(obj, output)
        if text != last:
            click.echo(text + ("\n" if watching else ""))
            last = text
        done = exit_status and settled(obj)
        if not watching or done:
            break
        if deadline and time.monotonic() > deadline:
            if exit_status:  # a wait that ran out is no success (as kubectl wait)
                meta = obj["metadata"]
                click.echo(f"error: timed out after {timeout}s waiting for {meta['namespace']}/{meta['name']} to "
                           f"settle ({rollout_status(obj).phase or 'Pending'})", err=True)
                raise SystemExit(EXIT_TIMED_OUT)
            break
        time.sleep(1.0)
    if exit_status and rollout_status(obj).phase in FAILED_PHASES:
        raise SystemExit(EXIT_ROLLOUT_FAILED)


@main.command()
@kube_options
@rollout_argument()
@click.option("--full", is_flag=True, help="Skip every remaining step and the promotion watch, and promote now "
                                           "(kserve: replace an awaited model of the InferenceService's own now).")
@click.pass_obj
def promote(target: Target, name: str, full: bool) -> None:
    """Pass the current manual gate (or, with --full, promote at once)."""
    value = _command(target, name, "promote_full" if full else "promote")
    click.echo(f"{name}: promote{' --full' if full else ''} requested ({value})")


def _annotation_command(name: str, doc: str, done: str, act: Callable[[Target, str], str | None]) -> None:
    """A command that sets an annotation: one naming the current release (acted on once), or the paused level."""

    @kube_options
    @rollout_argument("rollout")
    @click.pass_obj
    def command(target: Target, rollout: str) -> None:
        value = act(target, rollout)
        click.echo(f"{rollout}: {done}{f' ({value})' if value else ''}")

    command.__doc__ = doc
    main.command(name=name)(command)


_annotation_command("abort", "Roll the canary back now.", "abort requested",
                    lambda target, rollout: _command(target, rollout, "abort"))
_annotation_command("retry", "Start the rolled-back revision again.", "retry requested",
                    lambda target, rollout: _command(target, rollout, "retry"))
_annotation_command("pause", "Hold the rollout where it is (analysis goes on; the hold clock stops).", "paused",
                    lambda target, rollout: _annotate(target, rollout, {ANNOTATION_PAUSED: "true"}))
_annotation_command("resume", "Go on from where it was paused.", "resumed",
                    lambda target, rollout: _annotate(target, rollout, {ANNOTATION_PAUSED: None}))


@main.command(name="explain")
@kube_options
@rollout_argument()
@click.pass_obj
def explain_command(target: Target, name: str) -> None:
    """Why the rollout is where it is: verdicts with values, thresholds, samples and queries."""
    click.echo(explain(_read(target, name)))


@main.command()
@kube_options
@rollout_argument()
@click.option("--prometheus-url", envvar="MODELROLLOUT_PROMETHEUS_URL", default=None,
              help="Prometheus to count impact and draw the chart from (default: the spec's "
                   "analysis.prometheus.address, once the operator accepted that spec).")
@click.option("--png", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also draw step weights and each metric against its threshold into this PNG (needs matplotlib).")
@click.pass_obj
def report(target: Target, name: str, prometheus_url: str | None, png: str | None) -> None:
    """Incident report of the last release, in markdown: what changed, timeline, evidence, impact, chart."""
    from modelrollout import report as incident  # noqa: PLC0415  (httpx and the spec parser only when asked)

    obj = _read(target, name)
    namespace = obj["metadata"]["namespace"]
    api_client = target.api_client()
    deployments = client.AppsV1Api(api_client).list_namespaced_deployment(
        namespace, label_selector=rollout_selector(name)).items
    events = [e for e in api_client.sanitize_for_serialization(
        client.CoreV1Api(api_client).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items)
        if (e.get("involvedObject") or {}).get("kind") == KIND and (e.get("involvedObject") or {}).get("name") == name]
    try:
        built = incident.build(obj, api_client.sanitize_for_serialization(deployments), events, prometheus_url, png,
                               datetime.now(timezone.utc))
    except incident.ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(built.text)
    if built.png_error:
        raise click.ClickException(built.png_error)


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: `source <(kubectl-modelrollout completion bash)`."""
    completer = get_completion_class(shell)
    assert completer is not None
    click.echo(completer(main, {}, PROG, "_KUBECTL_MODELROLLOUT_COMPLETE").source())
