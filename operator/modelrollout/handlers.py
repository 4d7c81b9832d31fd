"""Kopf handlers, kept thin: each one reads the object, calls modelrollout.reconcile, and returns.

One async daemon per ModelRollout runs reconcile in a loop and sleeps until the core's
`requeue_after`, or until an event wakes it: a spec or annotation change of the rollout,
or a change of one of its Deployments or Services. Deployments are observed through a kopf index, so
a reconcile costs no list calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from modelrollout import access, metrics
from modelrollout.config import Config
from modelrollout.kube import Kube, load_configuration
from modelrollout.manifests import ANNOTATION_TEMPLATE
from modelrollout.names import FINALIZER, GROUP, KIND, LABEL_REVISION, LABEL_ROLLOUT, PLURAL, VERSION, rollout_label
from modelrollout.reconcile import (RolloutMemory, Runtime, finalize, observed_deployments, rollout_object,
                                    run_pass)
from modelrollout.workloads import ObservedDeployment

DAEMON_EXIT_TIMEOUT = 10.0
LAST_PASS_TIMEOUT = 120.0  # a pass is bounded by its calls' timeouts; beyond this one, kopf cancels it
DELETE_TIMEOUT = 300.0  # seconds of retries before a deletion goes ahead without handing traffic back
DELETE_BACKOFF = 5.0
NOTIFICATION_DRAIN = 10.0  # seconds a stopping operator still delivers queued notifications (pods get 30 s)


@dataclass
class _Daemon:
    """What a rollout's running daemon shares with the other handlers."""

    wakeup: asyncio.Event = field(default_factory=asyncio.Event)  # set: pass again now
    passing: asyncio.Lock = field(default_factory=asyncio.Lock)  # held through each pass (and by the finalizer)


def _wake(memo: kopf.Memo, namespace: str, label: str) -> None:
    """Wake the daemon of the rollout whose `modelrollout.io/rollout` label is `label`
    (daemons are kept by label: an owned object carries the label, not always the name)."""
    daemon = memo.daemons.get((namespace, label))
    if daemon is not None:
        daemon.wakeup.set()


async def _last_pass_ended(memo: kopf.Memo, namespace: str, name: str) -> asyncio.Lock | None:
    """The rollout's pass lock, held: the daemon's last pass has ended, and none starts after it.

    A pass that is still running could move traffic or re-adopt objects after the finalizer handed
    them over: a canary destination written back into a route whose Service is then deleted. kopf
    stops the daemon in parallel with the deletion handler and cancels it only after this handler
    returns, and a cancelled pass may still have a write in flight, so the pass is awaited, not
    cancelled. A pass beyond LAST_PASS_TIMEOUT is a temporary failure: kopf then cancels the daemon
    and retries (each retry is a Warning event on the rollout)."""
    daemon = memo.daemons.get((namespace, rollout_label(name)))
    if daemon is None:  # it exited, or never started
        return None
    try:
        await asyncio.wait_for(daemon.passing.acquire(), LAST_PASS_TIMEOUT)
    except asyncio.TimeoutError:
        raise kopf.TemporaryError(f"the rollout's last reconcile pass has run for over {LAST_PASS_TIMEOUT:.0f}s: "
                                  f"traffic is handed back once it ends", delay=DELETE_BACKOFF) from None
    return daemon.passing


def _owned_by_a_rollout(meta: Mapping[str, Any], **_: Any) -> bool:
    """Only objects a ModelRollout owns are observed; handed-over ones are read and adopted instead."""
    return any(ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/")
               for ref in meta.get("ownerReferences") or [])


# Owners of the Deployments KServe runs a predictor in: the InferenceService in RawDeployment/Standard
# mode; in Serverless mode Knative's Revision (knative/serving pkg/reconciler/revision/resources/deploy.go
# MakeDeployment: `<revision>-deployment`, controller reference to the Revision).
KSERVE_OWNERS = {("InferenceService", "serving.kserve.io/"), ("Revision", "serving.knative.dev/")}


def _run_for_a_rollout(meta: Mapping[str, Any], **_: Any) -> bool:
    """Deployments observed as revisions: a ModelRollout's own, and those KServe runs for one (the
    kserve router labels its predictors with the rollout and revision, which Knative's carry too)."""
    return _owned_by_a_rollout(meta) or any(
        (ref.get("kind"), str(ref.get("apiVersion", "")).split("/")[0] + "/") in KSERVE_OWNERS
        for ref in meta.get("ownerReferences") or [])


def register(registry: kopf.OperatorRegistry, config: Config) -> None:
    """Register every handler on `registry`, filtered by the configured label selector."""
    labels = dict(config.label_selector) if config.label_selector else None

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        """kopf's own calls use our credentials: certificates, rotating token files, exec plugins."""
        return await load_configuration(config.kubeconfig).connection_info()

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        if config.metrics_port:  # first: what the self-check finds missing is a metric as soon as it is logged
            metrics.start_metrics_server(config.metrics_port)
        memo.runtime = Runtime(config=config, kube=Kube(load_configuration(config.kubeconfig)))
        await access.self_check(memo.runtime.kube, config.namespaces)
        memo.daemons = {}
        memo.seen = {}

    @kopf.on.cleanup(registry=registry)
    async def close(memo: kopf.Memo, **_: Any) -> None:
        await memo.runtime.notifier.close(drain=NOTIFICATION_DRAIN)
        await memo.runtime.kube.close()

    @kopf.index("apps", "v1", "deployments", labels={LABEL_ROLLOUT: kopf.PRESENT}, when=_run_for_a_rollout,
                id="rollout_deployments", registry=registry)
    def rollout_deployments(namespace: str, name: str, labels: Mapping[str, str], spec: Mapping[str, Any],
                            status: Mapping[str, Any], meta: Mapping[str, Any], **_: Any) -> Any:
        observed = ObservedDeployment(
            name=name,
            replicas=int(spec.get("replicas") or 0),
            ready=int(status.get("readyReplicas") or 0),
            up_to_date=int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0),
            template=spec.get("template") or {},
            recorded_template=(meta.get("annotations") or {}).get(ANNOTATION_TEMPLATE),
            rolled_out=int(status.get("updatedReplicas") or 0) >= int(status.get("replicas") or 0),
        )
        return {(namespace, labels[LABEL_ROLLOUT]): (labels.get(LABEL_REVISION), observed)}

    @kopf.index("v1", "services", labels={LABEL_ROLLOUT: kopf.PRESENT}, when=_owned_by_a_rollout,
                id="rollout_services", registry=registry)
    def rollout_services(namespace: str, name: str, labels: Mapping[str, str], spec: Mapping[str, Any],
                         **_: Any) -> Any:
        return {(namespace, labels[LABEL_ROLLOUT]): (name, dict(spec.get("selector") or {}))}

    @kopf.on.event("v1", "services", labels={LABEL_ROLLOUT: kopf.PRESENT}, when=_owned_by_a_rollout,
                   registry=registry)
    @kopf.on.event("apps", "v1", "deployments", labels={LABEL_ROLLOUT: kopf.PRESENT}, registry=registry)
    def deployment_changed(namespace: str, labels: Mapping[str, str], memo: kopf.Memo, **_: Any) -> None:
        _wake(memo, namespace, labels[LABEL_ROLLOUT])

    @kopf.on.event(GROUP, VERSION, PLURAL, labels=labels, registry=registry)
    def rollout_changed(namespace: str, name: str, meta: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
        """Wake the daemon on what a user changes: the spec (generation) or a command annotation."""
        fingerprint = (meta.get("generation"), tuple(sorted((meta.get("annotations") or {}).items())),
                       meta.get("deletionTimestamp"))
        if memo.seen.get((namespace, name)) != fingerprint:
            memo.seen[(namespace, name)] = fingerprint
            _wake(memo, namespace, rollout_label(name))

    # Stopped (the rollout deleted, the operator exiting), the daemon ends its pass and exits on its
    # own within the backoff; only one stuck beyond it is cancelled (which kopf logs as a warning).
    @kopf.daemon(GROUP, VERSION, PLURAL, labels=labels, cancellation_backoff=DAEMON_EXIT_TIMEOUT,
                 cancellation_timeout=5.0, registry=registry)
    async def run_rollout(body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, namespace: str,
                          name: str, rollout_deployments: kopf.Index, rollout_services: kopf.Index,
                          **_: Any) -> None:
        key = (namespace, rollout_label(name))  # how the indexes and memo.daemons know the rollout
        daemon = memo.daemons.setdefault(key, _Daemon())
        memory = RolloutMemory()
        stopping = asyncio.ensure_future(stopped.wait())

        def emit(type_: str, reason: str, message: str) -> None:
            kopf.event(body, type=type_, reason=reason, message=message)

        try:
            while True:
                async with daemon.passing:  # never beside the finalizer: see _last_pass_ended
                    if stopped:
                        break
                    daemon.wakeup.clear()
                    delay = await run_pass(memo.runtime, memory, body,
                                           observed_deployments(rollout_deployments.get(key, [])),
                                           dict(rollout_services.get(key, [])), emit)
                woken = asyncio.ensure_future(daemon.wakeup.wait())
                await asyncio.wait({woken, stopping}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
        finally:
            stopping.cancel()
            if memo.daemons.get(key) is daemon:
                memo.daemons.pop(key)

    @kopf.on.delete(GROUP, VERSION, PLURAL, labels=labels, timeout=DELETE_TIMEOUT, backoff=DELETE_BACKOFF,
                    registry=registry)
    async def restore_stable(body: kopf.Body, memo: kopf.Memo, namespace: str, name: str, **_: Any) -> None:
        """Retried (every failure is a Warning event from kopf) for DELETE_TIMEOUT at most: then kopf
        gives up and releases the finalizer, so a denied or broken cluster never wedges a deletion."""
        memo.seen.pop((namespace, name), None)
        held = await _last_pass_ended(memo, namespace, name)
        try:
            await finalize(memo.runtime, rollout_object(body))
        finally:
            if held is not None:
                held.release()
