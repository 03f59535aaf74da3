#!/usr/bin/env bash
# Build the test control plane (kube-apiserver, kube-controller-manager, etcd),
# the test node (kubelet, kube-proxy, kube-scheduler), kubectl and helm from the modules pinned in testenv/go.mod and testenv/helm/go.mod.
#
#   bin=$(testenv/build.sh | tail -n1)     # -> .../testenv/<key>/bin
#   testenv/build.sh --force               # rebuild even if the binaries exist
#
# Output goes to ${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}/testenv/<key>/bin,
# where <key> hashes both modules' go.mod/go.sum, this script and the Go
# toolchain version: when that directory is complete nothing is built ("up to
# date"). Progress goes to stderr; the bin directory is the last stdout line.
# GOCACHE / GOMODCACHE are the user's own (not overridden) so rebuilds after a
# bump only recompile what changed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
force=0
[[ ${1-} == --force ]] && force=1

export GOTOOLCHAIN=local CGO_ENABLED=0
# Nothing here may rewrite go.mod/go.sum: the committed files are complete.
export GOFLAGS="-mod=readonly -buildvcs=false"
command -v go >/dev/null || { echo "testenv: go is not installed" >&2; exit 1; }

bins=(kube-apiserver kube-controller-manager etcd helm kubelet kube-proxy kube-scheduler kubectl)
key=$(
  cd "$here"
  { cat go.mod go.sum helm/go.mod helm/go.sum build.sh; go version; go env GOOS GOARCH; } |
    sha256sum | cut -c1-16
)
root=${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}/testenv
out=$root/$key/bin

complete=1
for b in "${bins[@]}"; do [[ -x $out/$b ]] || complete=0; done
if (( complete && !force )); then
  touch "$root/$key"
  echo "testenv: up to date ($out)" >&2
  echo "$out"
  exit 0
fi

modver() { (cd "$1" && go list -m -f '{{.Version}}' "$2"); }
kver=$(modver "$here" k8s.io/kubernetes)
[[ $kver =~ ^v([0-9]+)\.([0-9]+)\. ]] || { echo "testenv: odd k8s.io/kubernetes version $kver" >&2; exit 1; }
kmajor=${BASH_REMATCH[1]} kminor=${BASH_REMATCH[2]}
# buildDate = the release's tag time, so the binaries are reproducible.
kdate=$(cd "$here" && go list -m -json k8s.io/kubernetes | sed -nE 's/^\s*"Time": "([^"]+)".*/\1/p')
kdate=$(date -u -d "${kdate:-1970-01-01T00:00:00Z}" +%Y-%m-%dT%H:%M:%SZ)
etcdver=$(modver "$here" go.etcd.io/etcd/server/v3)
helmver=$(modver "$here/helm" helm.sh/helm/v3)
clientgo=$(modver "$here/helm" k8s.io/client-go)   # helm's default .Capabilities.KubeVersion,
[[ $clientgo =~ ^v0\.([0-9]+)\. ]] ||               # as helm's own Makefile derives it
  { echo "testenv: odd k8s.io/client-go version $clientgo in helm/go.mod" >&2; exit 1; }
helmkminor=${BASH_REMATCH[1]}

kflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kflags+=" -X $pkg.gitVersion=$kver -X $pkg.gitMajor=$kmajor -X $pkg.gitMinor=$kminor"
  # The proxy does not record the release's commit: clear the "$Format:%H$" placeholder.
  kflags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean -X $pkg.buildDate=$kdate"
done
hflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helmver"
hflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  hflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$helmkminor"
done

echo "testenv: building kubernetes $kver, etcd $etcdver, helm $helmver into $out" >&2
tmp=$root/$key/bin.tmp.$$
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
(
  cd "$here"
  go build -trimpath -ldflags "$kflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
  cd helm
  go build -trimpath -ldflags "$hflags" -o "$tmp/helm" helm.sh/helm/v3/cmd/helm
)
for b in "${bins[@]}"; do
  [[ -x $tmp/$b ]] || { echo "testenv: $b was not built" >&2; exit 1; }
done
"$tmp/kube-apiserver" --version >&2
"$tmp/etcd" --version | head -n1 >&2
"$tmp/helm" version --short >&2

rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
# Each set of binaries is a few hundred MB: drop sets unused for 14 days
# (not all other keys: another checkout may be on another version).
find "$root" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -mtime +14 -exec rm -rf {} + || true
echo "testenv: built in $((SECONDS - start)) s" >&2
echo "$out"
