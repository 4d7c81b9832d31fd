"""Names shared by the operator, the kubectl plugin and the lab: the API group and our labels.

Everything the operator owns carries LABEL_ROLLOUT and LABEL_REVISION so that watches,
Services and the lab's traffic simulator can find one rollout's revisions.
LIMITS is the one table of every name and label value the operator generates, with its limit.
"""

import hashlib
from dataclasses import dataclass

GROUP = "modelrollout.io"
VERSION = "v1alpha1"
PLURAL = "modelrollouts"
KIND = "ModelRollout"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_ROLLOUT = "modelrollout.io/rollout"
LABEL_REVISION = "modelrollout.io/revision"
LABEL_MODEL_VERSION = "modelrollout.io/model-version"
LABEL_ROLE = "modelrollout.io/role"  # on Services: stable | canary | shared

# User commands: the kubectl plugin sets these annotations; the operator never writes them.
# promote/abort/retry name the release they are for and carry a fresh token each time
# (`revision=<rev>[,step=<n>],id=<token>`, docs/resource.md "Commands"); status.handledCommands
# remembers the last value handled, so a command acts once and the operator never edits the user's object.
ANNOTATION_PROMOTE = "modelrollout.io/promote"
ANNOTATION_PROMOTE_FULL = "modelrollout.io/promote-full"
ANNOTATION_ABORT = "modelrollout.io/abort"
ANNOTATION_RETRY = "modelrollout.io/retry"
ANNOTATION_PAUSED = "modelrollout.io/paused"  # level-triggered: "true" pauses, removing it resumes

FINALIZER = "modelrollout.io/traffic-to-stable"


@dataclass(frozen=True)
class Limit:
    """A name or label value the operator generates: what it is, what makes it, its limit, what happens beyond."""

    what: str
    made_by: str
    limit: int
    beyond: str


HASH_LEN = 8  # not the 10 of a revision, so a shortened name never reads as `<rollout>-<revision>`
_SHORTENED = f"readable prefix + `-` + {HASH_LEN}-hex hash of the whole (deterministic, distinct per input)"
LIMITS: dict[str, Limit] = {
    # A ReplicaSet is `<deployment>-<pod-template-hash>` (up to 10 characters) and its pods carry that name
    # as a label: 52 keeps it within 63.
    "deployment": Limit("Deployment `<rollout>-<revision>`", "manifests.deployment_name", 52, _SHORTENED),
    "service": Limit("Services `<rollout>-stable`, `<rollout>-canary`, `<rollout>` (DNS-1035 label)",
                     "manifests.service_name", 63, _SHORTENED),
    "gate-job": Limit("gate Job (its pods' `job-name` label)", "manifests.gate_job_name", 63,
                      f"always {_SHORTENED}: gate names are free-form"),
    "rollout-label": Limit(f"label `{LABEL_ROLLOUT}` on Deployments, pods, Services, Jobs, KServe predictors",
                           "names.rollout_label", 63, _SHORTENED),
    "revision-label": Limit(f"label `{LABEL_REVISION}` (the template hash)", "spec.RolloutSpec.revision", 63,
                            "never: 10 hex characters"),
    "model-version-label": Limit(f"label `{LABEL_MODEL_VERSION}` on pods and KServe predictors",
                                 "spec.model.version", 63,
                                 "InvalidSpec naming `spec.model.version` when the spec is read"),
    "kserve-predictor": Limit("KServe canary predictor `rev-<revision>`", "routers.kserve.canary_name", 63,
                              "never: 14 characters"),
    "finalizer": Limit("finalizer", "names.FINALIZER", 63, "never: a constant"),
}


def shortened(readable: str, digest_of: str, limit: int) -> str:
    """`readable` cut to fit `limit` with a hash of `digest_of` appended: the way Kubernetes' own
    controllers shorten names. The cut ends on a letter or digit, so the result is a valid label value
    and DNS label whenever `readable` consists of lowercase letters, digits, `-` and `.`."""
    digest = hashlib.sha256(digest_of.encode()).hexdigest()[:HASH_LEN]
    return f"{readable[:limit - HASH_LEN - 1].rstrip('-.')}-{digest}"


def rollout_label(rollout: str) -> str:
    """The `modelrollout.io/rollout` label value of a rollout: its name while that is a label value (every
    rollout that worked before keeps it), else shortened: a custom resource's name may have 253 characters."""
    limit = LIMITS["rollout-label"].limit
    return rollout if len(rollout) <= limit else shortened(rollout, rollout, limit)


def rollout_selector(rollout: str) -> str:
    """The label selector of the objects a rollout owns."""
    return f"{LABEL_ROLLOUT}={rollout_label(rollout)}"
