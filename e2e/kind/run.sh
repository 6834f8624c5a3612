#!/usr/bin/env bash
# `make e2e-kind`: for machines with Docker. Creates a kind cluster, builds and loads the image, installs the
# chart with the in-cluster mock LLM, applies a CR set, runs smoke tests (chat, stream, 401, a rate limit) through
# the Service, and deletes the cluster. Needs docker, kubectl and helm; installs kind with Go when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=${CLUSTER:-tollway-e2e}
IMAGE=${IMAGE:-tollway/tollway:dev}
NAMESPACE=tollway

need() { command -v "$1" >/dev/null 2>&1 || { echo "e2e-kind: $1 is required ($2)" >&2; exit 2; }; }
need docker "https://docs.docker.com/engine/install/"
docker info >/dev/null 2>&1 || { echo "e2e-kind: no Docker engine is running; this flow needs one" >&2; exit 2; }
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/"
if ! command -v kind >/dev/null 2>&1; then
  need go "https://go.dev/dl/ (used to install kind)"
  echo ">> installing kind with go install (first run only)"
  GOBIN="${HOME}/.cache/tollway/bin" go install sigs.k8s.io/kind@v0.29.0
  export PATH="${HOME}/.cache/tollway/bin:${PATH}"
fi

cleanup() {
  [ -n "${PF_PID:-}" ] && kill "$PF_PID" 2>/dev/null || true
  [ "${KEEP_CLUSTER:-}" = 1 ] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo ">> kind cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --wait 120s
echo ">> image $IMAGE"
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

echo ">> helm install"
helm install tollway helm/tollway --namespace "$NAMESPACE" --create-namespace --wait --timeout 5m \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --set mock.enabled=true --set dataplane.hpa.enabled=false --set dataplane.replicas=2

echo ">> resources"
kubectl apply -n "$NAMESPACE" -f e2e/kind/resources.yaml
kubectl wait -n "$NAMESPACE" --for=condition=Accepted airoute/smoke --timeout=60s
kubectl get -n "$NAMESPACE" airoutes,consumers,providerkeypools,tokenratelimits

kubectl port-forward -n "$NAMESPACE" svc/tollway 18080:80 >/dev/null 2>&1 &
PF_PID=$!
for _ in $(seq 1 60); do
  curl -fsS http://127.0.0.1:18080/readyz >/dev/null 2>&1 && break
  sleep 1
done

echo ">> smoke tests"
.venv/bin/python e2e/kind/smoke.py http://127.0.0.1:18080
echo ">> e2e-kind passed"
