#!/usr/bin/env bash
# Print the path of a helm binary for the chart tests and `make manifests`, building it once.
#
# helm is compiled from the Go module proxy (`go install helm.sh/helm/v3/cmd/helm@VERSION`) with this
# machine's Go toolchain -- no release tarball download -- and cached in
#   ${CALYX_CACHE:-~/.cache/calyx}/helm-VERSION/helm
# The Go build and module caches are shared with tests/cluster/build.py (gocache/, gomod/), so the
# Kubernetes client modules it needs are usually already downloaded. A cold build takes a few
# minutes on 2 cores; later calls return at once.
#
#   tools/helm.sh            build if needed, print the binary's path (only the path on stdout)
#   tools/helm.sh --print    print the path if built, else exit 1 (never builds)
#   tools/helm.sh --version  print the pinned version
#
# Environment: CALYX_HELM (use this binary instead), CALYX_HELM_VERSION (pin override).
# Exit codes: 0 ok, 1 not built (--print), 3 no Go toolchain, other: build failure.
set -euo pipefail

HELM_VERSION="${CALYX_HELM_VERSION:-v3.22.0}"
CACHE="${CALYX_CACHE:-$HOME/.cache/calyx}"
DEST="$CACHE/helm-$HELM_VERSION"
BIN="$DEST/helm"

if [[ "${1:-}" == "--version" ]]; then echo "$HELM_VERSION"; exit 0; fi

if [[ -n "${CALYX_HELM:-}" ]]; then echo "$CALYX_HELM"; exit 0; fi

if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
if [[ "${1:-}" == "--print" ]]; then echo "helm $HELM_VERSION not built ($BIN)" >&2; exit 1; fi

GO="$(command -v go || true)"
[[ -z "$GO" && -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go
if [[ -z "$GO" ]]; then
  echo "tools/helm.sh: no Go toolchain (need go on PATH or /usr/local/go) to build helm" >&2
  exit 3
fi

mkdir -p "$DEST"
partial="$DEST/bin.partial"
rm -rf "$partial"
mkdir -p "$partial"
echo "tools/helm.sh: building helm $HELM_VERSION with $("$GO" env GOVERSION) (a few minutes, once)" >&2
start=$SECONDS
(
  cd "$DEST"
  export GOCACHE="${GOCACHE:-$CACHE/gocache}" GOMODCACHE="${GOMODCACHE:-$CACHE/gomod}"
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" GOBIN="$partial"
  export GOMAXPROCS="${GOMAXPROCS:-2}"
  # Like helm's own Makefile: the default Kubernetes version of `helm template`/`lint` (the
  # Capabilities.KubeVersion charts are checked against) is derived from helm's client-go.
  gomod="$("$GO" mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  kminor="$(sed -n 's/^[[:space:]]*k8s\.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod" | head -n1)"
  [[ -n "$kminor" ]] || { echo "tools/helm.sh: cannot read client-go version from $gomod" >&2; exit 4; }
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kminor"
  done
  "$GO" install -trimpath -ldflags="$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
)
mv "$partial/helm" "$BIN"
rm -rf "$partial"
echo "tools/helm.sh: built $BIN in $((SECONDS - start))s" >&2
"$BIN" version --short >&2
echo "$BIN"
