"""No mesh: one Service (`<rollout>`) selects both revisions; weight = canary share of ready pods.

The weight is carried by replica counts (see core.canary_replicas), which the workload
convergence sets; this router owns the shared Service and reads the share back from the
Deployments' `readyReplicas` as the operator's watch last delivered them (`RouteTarget.ready`),
not with a list per pass: a replica write changes no pod's readiness at once, so a list right
after it would read the same counts, and a change of readiness wakes the next pass.
"""

from __future__ import annotations

from modelrollout import manifests, owned
from modelrollout.kube import Kube, path
from modelrollout.names import LABEL_REVISION, rollout_selector
from modelrollout.routers import RouteProblem, RouteTarget, RevisionsInOwnDeployments


class ReplicasRouter(RevisionsInOwnDeployments):
    async def reconcile(self, kube: Kube, target: RouteTarget) -> None:
        wanted = manifests.service(target.spec, target.namespace, target.name, target.uid, "shared", None)
        await owned.ensure_service(kube, wanted, target.service_selectors.get(wanted["metadata"]["name"]),
                                   target.name, target.uid)

    async def set_weight(self, kube: Kube, target: RouteTarget, weight: int) -> None:
        """Nothing to write: the replica counts are the weight."""

    async def get_weight(self, kube: Kube, target: RouteTarget) -> int | None:
        total = sum(target.ready.values())
        if total == 0:
            return None
        canary = target.canary_revision
        return round(100 * target.ready.get(canary, 0) / total) if canary else 0

    async def set_mirror(self, kube: Kube, target: RouteTarget, percent: int) -> None:
        if percent:  # spec validation refuses mirror steps with this router
            raise RouteProblem("MirrorUnsupported", "the replicas router cannot mirror: its pods serve users")

    async def get_mirror(self, kube: Kube, target: RouteTarget) -> int | None:
        return 0

    async def finalize(self, kube: Kube, target: RouteTarget) -> None:
        """Only stable pods behind the Service: the stable revision back to full size first (it gave
        pods up to the canary), then every other revision scaled to zero, once a stable pod is Ready
        (after a weight-100 step it has none: until one loads, the canary's pods are all users have).
        Raises StableNotReady meanwhile, so the deletion is retried."""
        rollout = await kube.get(path("modelrollout.io/v1alpha1", "modelrollouts", target.namespace, target.name))
        stable = ((rollout or {}).get("status") or {}).get("stableRevision")
        deployments = await kube.list(path("apps/v1", "deployments", target.namespace),
                                      label_selector=rollout_selector(target.name))
        deployments.sort(key=lambda d: d["metadata"]["labels"].get(LABEL_REVISION) != stable)  # stable first
        stable_ready = 0
        for deployment in deployments:
            is_stable = deployment["metadata"]["labels"].get(LABEL_REVISION) == stable
            replicas = int((deployment.get("spec") or {}).get("replicas") or 0)
            wanted = max(replicas, target.spec.replicas) if is_stable else 0
            if is_stable:
                stable_ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
            elif wanted != replicas and stable and not stable_ready:
                raise RouteProblem("StableNotReady", f"stable revision {stable} has no Ready pod yet: the other "
                                                     "revisions' pods keep serving until one is")
            if wanted != replicas:
                await kube.merge_patch(path("apps/v1", "deployments", target.namespace, deployment["metadata"]["name"]),
                                       {"spec": {"replicas": wanted}})
