#!/usr/bin/env bash
# Build the local Kubernetes control plane used by the e2e tier:
# kube-apiserver, etcd, kubectl and helm, compiled from the Go module proxy.
#
# The binaries land in a versioned cache directory outside the repository:
#   ${TOLLWAY_CACHE:-$HOME/.cache/tollway}/k8s-<v>-etcd-<v>-helm-<v>/bin/
# A rerun with the binaries present does nothing but print that directory.
#
# Usage:
#   e2e/controlplane/build.sh                 build if needed; last stdout line is the bin dir
#   e2e/controlplane/build.sh --print-bin-dir print the bin dir (built or not) and exit
#
# Versions can be overridden with TOLLWAY_K8S_VERSION, TOLLWAY_ETCD_VERSION and
# TOLLWAY_HELM_VERSION (e.g. v1.33.13 / v3.5.21 if the pinned pair will not build).
set -euo pipefail

K8S_VERSION="${TOLLWAY_K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${TOLLWAY_ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${TOLLWAY_HELM_VERSION:-v3.22.0}"
CACHE="${TOLLWAY_CACHE:-$HOME/.cache/tollway}"

KEY="k8s-${K8S_VERSION#v}-etcd-${ETCD_VERSION#v}-helm-${HELM_VERSION#v}"
OUT="$CACHE/$KEY"
BIN="$OUT/bin"
BINARIES=(kube-apiserver etcd kubectl helm)

log() { printf '[controlplane] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ "${1:-}" == "--print-bin-dir" ]]; then
    echo "$BIN"
    exit 0
elif [[ $# -gt 0 ]]; then
    die "unknown argument: $1 (usage: $0 [--print-bin-dir])"
fi

all_built() {
    local b
    [[ -f "$OUT/.complete" ]] || return 1
    for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
}

if all_built; then
    log "control-plane binaries cached at $BIN"
    echo "$BIN"
    exit 0
fi

# ---------------------------------------------------------------------------
# Toolchain and caches
# ---------------------------------------------------------------------------
GO="$(command -v go || true)"
[[ -n "$GO" ]] || { [[ -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go; }
[[ -n "$GO" ]] || die "the Go toolchain was not found (put 'go' on PATH)"

mkdir -p "$BIN" "$CACHE/src"
export GOMODCACHE="$CACHE/go-mod"
export GOCACHE="$CACHE/go-build"
export CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"
export GOWORK=off
unset GOOS GOARCH || true

# One build at a time per cache (parallel test runners may all call this).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.build.lock"
    flock 9
    if all_built; then
        log "control-plane binaries cached at $BIN"
        echo "$BIN"
        exit 0
    fi
fi

START=$SECONDS
log "building the control plane into $OUT (first run only, ~6 min on 2 cores)"
log "  kube-apiserver + kubectl $K8S_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION; $("$GO" version)"

# gomod_field MODULE@VERSION FIELD: download a module and print one field of its metadata.
gomod_field() {
    local json
    json="$("$GO" mod download -json "$1")" || die "go mod download $1 failed: $json"
    printf '%s' "$json" | sed -n "s/^[[:space:]]*\"$2\": \"\\(.*\\)\",\{0,1\}\$/\\1/p" | sed -n 1p
}

# go_directive GOMOD_FILE: print the 'go' directive of a go.mod file.
go_directive() { awk '$1 == "go" { print $2; exit }' "$1"; }

# install_bin TMP NAME: move a freshly built binary into place atomically.
install_bin() { chmod +x "$1"; mv -f "$1" "$BIN/$2"; }

# ---------------------------------------------------------------------------
# etcd: go.etcd.io/etcd/server/v3 maps its sibling modules with local replace
# lines, so it is built through a throw-away main module that requires it.
# ---------------------------------------------------------------------------
build_etcd() {
    local dir="$CACHE/src/etcd-${ETCD_VERSION#v}" gomod
    log "building etcd $ETCD_VERSION into $BIN (first run only, ~1 min)"
    gomod="$(gomod_field "go.etcd.io/etcd/server/v3@$ETCD_VERSION" GoMod)"
    [[ -f "$gomod" ]] || die "could not resolve go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    rm -rf "$dir" && mkdir -p "$dir"
    cat >"$dir/go.mod" <<GOMOD
module tollway.local/controlplane/etcd

go $(go_directive "$gomod")

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
    (cd "$dir" && "$GO" get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
        && "$GO" build -trimpath -ldflags "-s -w" -o "$dir/etcd" go.etcd.io/etcd/server/v3) \
        || die "etcd $ETCD_VERSION failed to build"
    install_bin "$dir/etcd" etcd
}

# ---------------------------------------------------------------------------
# kube-apiserver and kubectl: k8s.io/kubernetes requires its staging modules at
# v0.0.0 and maps them to local folders (kubernetes/kubernetes#79384). The
# throw-away module replaces each of them with the published v0.<minor>.<patch>.
# ---------------------------------------------------------------------------
build_kube() {
    local dir="$CACHE/src/k8s-${K8S_VERSION#v}" gomod staging minor mods ldflags m pkg
    gomod="$(gomod_field "k8s.io/kubernetes@$K8S_VERSION" GoMod)"
    [[ -f "$gomod" ]] || die "could not resolve k8s.io/kubernetes@$K8S_VERSION"
    IFS=. read -r _ minor _ <<<"${K8S_VERSION#v}"
    staging="v0.${K8S_VERSION#v1.}"
    # Every k8s.io module the kubernetes go.mod requires at the placeholder v0.0.0.
    mods="$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$gomod" | sort -u)"
    [[ -n "$mods" ]] || die "no v0.0.0 staging requirements found in $gomod"
    log "k8s.io/kubernetes $K8S_VERSION: replacing $(wc -l <<<"$mods" | tr -d ' ') staging modules with $staging"

    rm -rf "$dir" && mkdir -p "$dir"
    {
        echo "module tollway.local/controlplane/kubernetes"
        echo
        echo "go $(go_directive "$gomod")"
        echo
        echo "require k8s.io/kubernetes $K8S_VERSION"
        echo
        echo "replace ("
        for m in $mods; do echo "	$m => $m $staging"; done
        echo ")"
    } >"$dir/go.mod"

    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean"
    done

    (cd "$dir" && "$GO" get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
        "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION") \
        || die "resolving k8s.io/kubernetes $K8S_VERSION failed"

    if [[ ! -x "$BIN/kube-apiserver" ]]; then
        log "building kube-apiserver $K8S_VERSION into $BIN (first run only, ~3 min)"
        (cd "$dir" && "$GO" build -trimpath -ldflags "$ldflags" -o "$dir/kube-apiserver" \
            k8s.io/kubernetes/cmd/kube-apiserver) || die "kube-apiserver $K8S_VERSION failed to build"
        install_bin "$dir/kube-apiserver" kube-apiserver
    fi
    if [[ ! -x "$BIN/kubectl" ]]; then
        log "building kubectl $K8S_VERSION into $BIN (shares the kube-apiserver dependencies)"
        (cd "$dir" && "$GO" build -trimpath -ldflags "$ldflags" -o "$dir/kubectl" \
            k8s.io/kubernetes/cmd/kubectl) || die "kubectl $K8S_VERSION failed to build"
        install_bin "$dir/kubectl" kubectl
    fi
}

# ---------------------------------------------------------------------------
# helm: no replace lines, so `go install` works. Its default Kubernetes version
# (used for .Capabilities.KubeVersion and lint) is stamped to match the API server.
# ---------------------------------------------------------------------------
build_helm() {
    local dir minor ldflags pkg gobin="$CACHE/src/helm-${HELM_VERSION#v}"
    log "building helm $HELM_VERSION into $BIN (first run only, ~1 min)"
    dir="$(gomod_field "helm.sh/helm/v3@$HELM_VERSION" Dir)"
    [[ -d "$dir" ]] || die "could not resolve helm.sh/helm/v3@$HELM_VERSION"
    IFS=. read -r _ minor _ <<<"${K8S_VERSION#v}"
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for pkg in pkg/chartutil pkg/lint/rules; do
        if grep -qs 'k8sVersionMajor' "$dir/$pkg"/*.go; then
            ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$minor"
        fi
    done
    rm -rf "$gobin" && mkdir -p "$gobin"
    GOBIN="$gobin" GOFLAGS=-buildvcs=false "$GO" install -trimpath -ldflags "$ldflags" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" || die "helm $HELM_VERSION failed to build"
    install_bin "$gobin/helm" helm
}

[[ -x "$BIN/etcd" ]] || build_etcd
[[ -x "$BIN/helm" ]] || build_helm
if [[ ! -x "$BIN/kube-apiserver" || ! -x "$BIN/kubectl" ]]; then build_kube; fi

for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || die "$b is missing from $BIN after the build"; done
"$BIN/kube-apiserver" --version >&2
"$BIN/etcd" --version | sed -n 1p >&2  # sed reads all of it: head would SIGPIPE the writer under pipefail
"$BIN/kubectl" version --client 2>/dev/null | sed -n 1p >&2
"$BIN/helm" version --short >&2
touch "$OUT/.complete"

log "built in $(( (SECONDS - START) / 60 ))m$(( (SECONDS - START) % 60 ))s; control-plane binaries cached at $BIN"
echo "$BIN"
