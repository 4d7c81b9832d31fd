"""Names shared by the operator, the kubectl plugin and the lab: the API group and our labels.

Everything the operator owns carries LABEL_ROLLOUT and LABEL_REVISION so that watches,
Services and the lab's traffic simulator can find one rollout's revisions.
"""

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
