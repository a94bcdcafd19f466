#!/usr/bin/env bash
# The end-to-end scenarios on a real Kubernetes cluster (kind), through ingress-nginx.
#
# Needs: docker, kind, kubectl, helm, and this repository's virtualenv (.venv, from the
# README's first command). Creates the cluster, builds the image with scripts/build-image
# (cached; docker builds it here) and loads its archive, installs a
# 3-node NATS cluster with JetStream and the neurelay chart, then runs the same client
# scenarios as the local e2e suite (e2e/scenarios.py) through the ingress, disturbing the
# cluster meanwhile: a gateway pod killed, a NATS pod killed, a gateway rollout (drain).
#
# Usage: e2e/kind/run.sh [--keep]    (--keep leaves the cluster running afterwards)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cluster=neurelay-e2e
namespace=neurelay
image=neurelay:e2e
keep=false
[[ ${1:-} == --keep ]] && keep=true

log() { printf '[kind-e2e] %s\n' "$*" >&2; }

cleanup() {
  if [[ $keep == false ]]; then
    log "deleting cluster $cluster"
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { log "missing $tool"; exit 1; }
done
[[ -x $root/.venv/bin/python ]] || { log "missing .venv: run the README's first command"; exit 1; }

log "creating cluster $cluster"
kind create cluster --config "$here/kind-config.yaml" --wait 120s

log "installing ingress-nginx for kind"
kubectl apply -f https://kind.sigs.k8s.io/examples/ingress/deploy-ingress-nginx.yaml
kubectl wait -n ingress-nginx --for=condition=Ready pod \
  -l app.kubernetes.io/component=controller --timeout=180s

log "building and loading $image"
archive="$("$root/scripts/build-image" --tag "$image")"
kind load image-archive "$archive" --name "$cluster"

log "installing a 3-node NATS cluster with JetStream"
helm repo add nats https://nats-io.github.io/k8s/helm/charts/ >/dev/null
helm upgrade --install nats nats/nats --namespace "$namespace" --create-namespace --wait \
  --set config.cluster.enabled=true --set config.cluster.replicas=3 \
  --set config.jetstream.enabled=true --set config.jetstream.fileStore.pvc.size=1Gi \
  --set config.merge.max_payload=8388608

secret="$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
kubectl create secret generic neurelay-jwt -n "$namespace" \
  --from-literal=secret="$secret" --dry-run=client -o yaml | kubectl apply -f -

log "installing the neurelay chart"
helm upgrade --install neurelay "$root/charts/neurelay" --namespace "$namespace" --wait \
  --set image.repository=neurelay --set image.tag=e2e --set image.pullPolicy=Never \
  --set gateway.spec.replicas=3 \
  --set gateway.spec.nats.url="nats://nats.$namespace.svc:4222" \
  --set gateway.spec.ingress.host=localhost \
  --set gateway.spec.ingress.className=nginx \
  --set gateway.spec.limits.messagesPerSecond=1000 \
  --set gateway.channels[2].history.replicas=3
kubectl wait -n "$namespace" --for=condition=Ready rtgw/neurelay --timeout=300s

url=ws://localhost/ws
scenario() {
  "$root/.venv/bin/python" -m e2e.scenarios --url "$url" --secret "$secret" "$@"
}
cd "$root"
log "steady traffic, 1000 clients"
scenario --name steady --subscribers 1000
log "a gateway pod killed under load"
scenario --name kill-gateway --subscribers 300 --during \
  "kubectl delete pod -n $namespace -l app.kubernetes.io/instance=neurelay,app.kubernetes.io/name=neurelay-gateway --grace-period=0 --force --wait=false"
log "a NATS pod killed under load"
scenario --name kill-nats --subscribers 300 --during \
  "kubectl delete pod -n $namespace nats-2 --grace-period=0 --force --wait=false"
log "a rolling restart of the gateways (drain with 1012)"
scenario --name drain --subscribers 300 --during \
  "kubectl rollout restart -n $namespace deployment/neurelay"
log "all scenarios passed"
