"""`modelrollout`: run the operator, backtest a spec. The lab and the demo are `modelrollout-lab` (the [lab] extra)."""

from __future__ import annotations

import asyncio
import logging
import os

import click

from modelrollout.config import Config
from modelrollout.spec import CALL_TIMEOUT_CEILING, DEFAULT_MAX_CALL_TIMEOUT, DEFAULT_NOTIFICATION_URLS, parse_duration


@click.group()
def main() -> None:
    """Staged, Prometheus-judged releases of ML model servers on Kubernetes."""


def _selector(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    pairs = [part.split("=", 1) for part in text.split(",") if part]
    if any(len(pair) != 2 for pair in pairs):
        raise click.BadParameter("use key=value[,key=value]", param_hint="--selector")
    return {key.strip(): value.strip() for key, value in pairs}


def _link_template(_ctx: click.Context, _param: click.Parameter, template: str | None) -> str | None:
    """A --notification-link refused at start rather than at the first rollback: an http(s) URL whose
    only placeholders are the ones filled in."""
    if not template:
        return None
    from modelrollout.notify import LINK_PLACEHOLDERS

    try:
        filled = template.format_map(dict.fromkeys(LINK_PLACEHOLDERS, "x"))
    except (KeyError, IndexError, ValueError) as exc:
        raise click.BadParameter(f"{exc}: the placeholders are {', '.join(f'{{{p}}}' for p in LINK_PLACEHOLDERS)}")
    if not filled.startswith(("https://", "http://")):
        raise click.BadParameter("not an http(s) URL")
    return template


def _call_timeout_limit(_ctx: click.Context, _param: click.Parameter, text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not 0 < seconds <= CALL_TIMEOUT_CEILING:
        raise click.BadParameter(f"must be above 0 and at most {CALL_TIMEOUT_CEILING:g}s (the CRD's bound)")
    return seconds


@main.command()
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Path of a kubeconfig; in-cluster when unset.")
@click.option("--namespace", "namespaces", multiple=True, help="Watch only these namespaces (repeatable).")
@click.option("--selector", default=None, help="Serve only ModelRollouts with these labels (key=value,...), to shard.")
@click.option("--prometheus-url", envvar="MODELROLLOUT_PROMETHEUS_URL", default=None,
              help="Prometheus used when a spec names none.")
@click.option("--prometheus-token-file", envvar="MODELROLLOUT_PROMETHEUS_TOKEN_FILE", default=None,
              help="Bearer token for --prometheus-url only (never for an address a spec names); re-read when it changes.")
@click.option("--prometheus-ca-file", envvar="MODELROLLOUT_PROMETHEUS_CA_FILE", default=None)
@click.option("--allowed-prometheus-urls", "allowed_prometheus_urls", multiple=True,
              help="Another Prometheus address a ModelRollout may name (repeatable; sent no token). "
                   "Default: only --prometheus-url.")
@click.option("--allowed-webhook-urls", "allowed_webhook_urls", multiple=True,
              help="Glob pattern of URLs webhook gates may call, e.g. 'https://gates.example.com/*' "
                   "(repeatable). Default: none, webhook gates are refused.")
@click.option("--allowed-notification-urls", "allowed_notification_urls", multiple=True,
              help="Glob pattern of URLs notifications may go to (repeatable; each part matched on its own: "
                   "scheme, host:port, path). Default: Slack, Teams and PagerDuty's public endpoints; "
                   "one empty value allows none.")
@click.option("--notification-link", default=None, callback=_link_template,
              help="URL put in every notification, with {namespace}, {name}, {revision}, {from} and {to} (Unix ms), "
                   "e.g. the chart's Grafana dashboard for the rollout and the release's window.")
@click.option("--max-call-timeout", default=f"{DEFAULT_MAX_CALL_TIMEOUT:g}s", show_default=True,
              callback=_call_timeout_limit,
              help="The longest timeout a ModelRollout may set for one call the operator makes for it "
                   f"(a webhook gate's, analysis.prometheus.timeout); at most {CALL_TIMEOUT_CEILING:g}s.")
@click.option("--gate-service-account", default=None,
              help="ServiceAccount of Job gates' pods (must exist in each rollout's namespace). "
                   "Default: the namespace's default ServiceAccount.")
@click.option("--gate-service-account-token/--no-gate-service-account-token", default=False,
              help="Let Job gates' pods mount their ServiceAccount token (default: no token).")
@click.option("--metrics-port", type=int, default=None, help="Serve operator metrics on this port.")
@click.option("--liveness", default=None, help="Kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz.")
@click.option("--peering", is_flag=True, help="Coordinate several replicas with kopf peering (else standalone).")
@click.option("--peering-name", envvar="MODELROLLOUT_PEERING_NAME", default=None,
              help="Kopf peering object (one per release or shard); with --peering.")
@click.option("--log-format", type=click.Choice(["plain", "json"]), default="plain")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
def run(kubeconfig: str | None, namespaces: tuple[str, ...], selector: str | None, prometheus_url: str | None,
        prometheus_token_file: str | None, prometheus_ca_file: str | None, allowed_prometheus_urls: tuple[str, ...],
        allowed_webhook_urls: tuple[str, ...], allowed_notification_urls: tuple[str, ...],
        notification_link: str | None, max_call_timeout: float, gate_service_account: str | None,
        gate_service_account_token: bool, metrics_port: int | None, liveness: str | None, peering: bool,
        peering_name: str | None, log_format: str, log_level: str) -> None:
    """Run the operator."""
    import kopf

    from modelrollout import handlers

    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own login reads it too
    config = Config(
        kubeconfig=kubeconfig,
        prometheus_url=prometheus_url,
        prometheus_token_file=prometheus_token_file,
        prometheus_ca_file=prometheus_ca_file,
        allowed_prometheus_urls=allowed_prometheus_urls,
        allowed_webhook_urls=allowed_webhook_urls,
        allowed_notification_urls=tuple(u for u in allowed_notification_urls if u) if allowed_notification_urls
        else DEFAULT_NOTIFICATION_URLS,
        notification_link=notification_link or None,
        max_call_timeout=max_call_timeout,
        gate_service_account=gate_service_account or None,
        gate_service_account_token=gate_service_account_token,
        namespaces=namespaces,
        label_selector=_selector(selector),
        metrics_port=metrics_port,
    )
    kopf.configure(verbose=log_level == "debug", log_format=kopf.LogFormat.JSON if log_format == "json"
                   else kopf.LogFormat.PLAIN, log_prefix=False)
    logging.getLogger().setLevel(log_level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the decisions
    if log_level != "debug":
        # kopf logs every handled event at INFO ("Handler ... succeeded"): at 1000 rollouts that is most
        # of the log and a measurable share of the CPU. Our decisions are events and warnings.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, config)
    asyncio.run(kopf.operator(
        registry=registry,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        standalone=not peering,
        peering_name=(peering_name or "default") if peering else None,
        priority=_peering_priority() if peering else None,
        liveness_endpoint=liveness,
    ))


def _peering_priority() -> int:
    """The oldest replica leads. Kopf pauses every operator that sees a peer of the same priority
    (so equal replicas would all stand still): an earlier start is a higher priority, and random
    low digits keep two replicas started in the same millisecond apart."""
    import random
    import time

    return -(int(time.time() * 1000) * 1000 + random.randrange(1000))


def _register_backtest() -> None:
    from modelrollout.backtest import backtest_command

    main.add_command(backtest_command)


_register_backtest()
