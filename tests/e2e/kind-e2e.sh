#!/usr/bin/env bash
# End-to-end test on a real Kubernetes (kind): `make e2e`.
#
#   1. create a kind cluster (kind-config.yaml), build the operator image, load it into kind;
#   2. helm install the chart (helm/modelrollout) with the CRD;
#   3. install a minimal Prometheus scraping the model server pods and the operator;
#   4. apply a ModelRollout of a tiny model server: v1 (good) -> v2 (good, expect Succeeded)
#      -> v3 (50% errors, expect RolledBack with stable unchanged), by patching the template;
#   5. check the operator's own metrics in Prometheus, then delete the cluster (trap).
#
# Needs docker (with a running engine), kind, helm and kubectl. When any is missing it prints
# "SKIPPED: ..." and exits 0: it never pretends to pass.
# Environment: E2E_CLUSTER (default modelrollout-e2e), E2E_KEEP=1 keeps the cluster,
# E2E_TIMEOUT seconds per rollout (default 600).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/e2e"
CLUSTER="${E2E_CLUSTER:-modelrollout-e2e}"
IMAGE="modelrollout:e2e"
RELEASE="modelrollout"
OPERATOR_NS="modelrollout-system"
NS="e2e"
ROLLOUT="e2e-model"
TIMEOUT="${E2E_TIMEOUT:-600}"
# kubectl from the lab extra lives in the venv.
export PATH="$ROOT/.venv/bin:$PATH"

skip() {
  echo "SKIPPED: $*"
  exit 0
}

command -v docker >/dev/null 2>&1 || skip "docker/kind not available (no docker command on PATH)"
command -v kind >/dev/null 2>&1 || skip "docker/kind not available (no kind command on PATH)"
docker info >/dev/null 2>&1 || skip "docker/kind not available (docker cannot reach a Docker engine)"
command -v helm >/dev/null 2>&1 || skip "helm not available (install the helm binary to run the e2e)"
command -v kubectl >/dev/null 2>&1 || skip "kubectl not available"

WORK="$(mktemp -d)"
export KUBECONFIG="$WORK/kubeconfig"
CREATED=0

log() { printf '\n=== %s\n' "$*"; }

diagnostics() {
  log "diagnostics"
  kubectl get modelrollouts -A -o wide || true
  kubectl -n "$NS" get modelrollout "$ROLLOUT" -o yaml || true
  kubectl -n "$NS" get deployments,services,pods -o wide || true
  kubectl -n "$NS" get events --sort-by=.lastTimestamp | tail -n 40 || true
  kubectl -n "$OPERATOR_NS" get pods -o wide || true
  kubectl -n "$OPERATOR_NS" logs "deployment/$RELEASE" --tail=200 || true
}

cleanup() {
  local rc=$?
  if [[ $rc -ne 0 && $CREATED -eq 1 ]]; then
    diagnostics
  fi
  if [[ $CREATED -eq 1 && "${E2E_KEEP:-0}" != "1" ]]; then
    log "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" || true
  elif [[ $CREATED -eq 1 ]]; then
    echo "E2E_KEEP=1: cluster $CLUSTER kept (KUBECONFIG=$KUBECONFIG)"
  fi
  if [[ "${E2E_KEEP:-0}" != "1" ]]; then
    rm -rf "$WORK"
  fi
  if [[ $rc -eq 0 ]]; then
    echo "E2E PASSED"
  else
    echo "E2E FAILED (exit $rc)"
  fi
  exit "$rc"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

field() {  # field JSONPATH: one field of the ModelRollout
  kubectl -n "$NS" get modelrollout "$ROLLOUT" -o "jsonpath=$1" 2>/dev/null || true
}

# wait_for PHASE [STABLE_BEFORE]: until status.phase == PHASE for the current generation.
# Fails early on InvalidSpec, on RolledBack when waiting for Succeeded, and (waiting for
# RolledBack) if the stable revision moves away from STABLE_BEFORE: a bad canary was promoted.
wait_for() {
  local want="$1" stable_before="${2:-}" deadline=$((SECONDS + TIMEOUT))
  local generation observed phase stable line last=""
  while ((SECONDS < deadline)); do
    generation="$(field '{.metadata.generation}')"
    observed="$(field '{.status.observedGeneration}')"
    phase="$(field '{.status.phase}')"
    stable="$(field '{.status.stableRevision}')"
    line="phase=${phase:-?} step=$(field '{.status.currentStep}') weight=$(field '{.status.canaryWeight}') stable=${stable:-?} canary=$(field '{.status.canaryRevision}') :: $(field '{.status.message}')"
    if [[ "$line" != "$last" ]]; then echo "  [$((SECONDS))s] $line"; fi
    last="$line"
    if [[ -n "$generation" && "$observed" == "$generation" ]]; then
      if [[ "$phase" == "$want" ]]; then
        return 0
      fi
      if [[ "$phase" == "InvalidSpec" ]]; then
        fail "the ModelRollout was judged invalid: $(field '{.status.message}')"
      fi
      if [[ "$want" == "Succeeded" && "$phase" == "RolledBack" ]]; then
        fail "a good version was rolled back: $(field '{.status.message}')"
      fi
    fi
    if [[ "$want" == "RolledBack" && -n "$stable_before" && -n "$stable" && "$stable" != "$stable_before" ]]; then
      fail "the bad version was promoted (stable $stable_before -> $stable)"
    fi
    sleep 5
  done
  fail "timed out after ${TIMEOUT}s waiting for phase $want (last: $last)"
}

patch_version() {  # patch_version VERSION ERROR_RATE: a new pod template = a new rollout
  kubectl -n "$NS" patch modelrollout "$ROLLOUT" --type=json -p "[
    {\"op\": \"replace\", \"path\": \"/spec/model/version\", \"value\": \"$1\"},
    {\"op\": \"replace\", \"path\": \"/spec/template/spec/containers/0/env\", \"value\": [
      {\"name\": \"MODEL_VERSION\", \"value\": \"$1\"},
      {\"name\": \"ERROR_RATE\", \"value\": \"$2\"}]}]"
}

prom_query() {  # prom_query PROMQL: the first sample's value, or empty
  kubectl -n monitoring exec deploy/prometheus -- \
    wget -qO- "http://localhost:9090/api/v1/query?query=$1" 2>/dev/null |
    sed -n 's/.*"value":\[[^,]*,"\([^"]*\)"\].*/\1/p' | head -n 1
}

log "creating kind cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" --kubeconfig "$KUBECONFIG" --wait 120s
CREATED=1

log "building $IMAGE"
docker build -t "$IMAGE" "$ROOT"
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "installing Prometheus"
kubectl apply -f "$HERE/manifests/prometheus.yaml"

log "helm install $RELEASE"
helm install "$RELEASE" "$ROOT/helm/modelrollout" \
  --namespace "$OPERATOR_NS" --create-namespace \
  --set image.repository=modelrollout --set image.tag=e2e --set image.pullPolicy=Never \
  --set prometheus.address=http://prometheus.monitoring.svc:9090 \
  --set logFormat=plain \
  --wait --timeout 5m
kubectl wait --for=condition=Established crd/modelrollouts.modelrollout.io --timeout=60s
kubectl -n monitoring rollout status deployment/prometheus --timeout=5m

log "the operator runs as UID 10001 on a read-only root filesystem"
uid="$(kubectl -n "$OPERATOR_NS" exec "deployment/$RELEASE" -- python -c 'import os; print(os.getuid())')"
[[ "$uid" == "10001" ]] || fail "operator runs as UID $uid"
if kubectl -n "$OPERATOR_NS" exec "deployment/$RELEASE" -- python -c 'open("/opt/probe", "w")' 2>/dev/null; then
  fail "the operator's root filesystem is writable"
fi

log "v1: first version (good)"
kubectl apply -f "$HERE/manifests/model-server.yaml"
kubectl apply -f "$HERE/manifests/modelrollout.yaml"
wait_for Succeeded
v1="$(field '{.status.stableRevision}')"
[[ -n "$v1" ]] || fail "no stable revision after v1"
kubectl -n "$NS" rollout status deployment/e2e-loadgen --timeout=3m

log "v2: a good new version -> expect Succeeded"
patch_version 2 0
wait_for Succeeded
v2="$(field '{.status.stableRevision}')"
[[ "$v2" != "$v1" ]] || fail "v2 finished but stable is still $v1"
[[ "$(field '{.status.canaryWeight}')" =~ ^(0|100)?$ ]] || fail "weight after promotion: $(field '{.status.canaryWeight}')"

log "v3: a bad version (50% errors) -> expect RolledBack"
patch_version 3 0.5
wait_for RolledBack "$v2"
[[ "$(field '{.status.stableRevision}')" == "$v2" ]] || fail "stable moved off v2 after the rollback"
[[ "$(field '{.status.canaryWeight}')" =~ ^0?$ ]] || fail "canary still gets $(field '{.status.canaryWeight}')% after the rollback"
echo "  rollback message: $(field '{.status.message}')"
kubectl -n "$NS" get events --field-selector "involvedObject.name=$ROLLOUT" | tail -n 10 || true

log "the operator's metrics reached Prometheus"
deadline=$((SECONDS + 120))
rollbacks=""
while ((SECONDS < deadline)); do
  rollbacks="$(prom_query 'sum(modelrollout_rollbacks_total)')"
  if [[ -n "$rollbacks" && "$rollbacks" != "0" ]]; then break; fi
  sleep 5
done
[[ -n "$rollbacks" && "$rollbacks" != "0" ]] || fail "modelrollout_rollbacks_total not seen in Prometheus"
echo "  modelrollout_rollbacks_total = $rollbacks"
echo "  modelrollout_promotions_total = $(prom_query 'sum(modelrollout_promotions_total)')"

log "deleting the ModelRollout (the finalizer restores stable first)"
kubectl -n "$NS" delete modelrollout "$ROLLOUT" --timeout=2m
