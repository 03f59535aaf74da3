#!/usr/bin/env bash
# Packs release binaries for Krew and prints the plugin manifest (plugins/portcullis.yaml of a
# Krew index) with their checksums.
#
#   scripts/krew-manifest.sh OUT_DIR BASE_URL OS/ARCH=BINARY...
#   scripts/krew-manifest.sh dist https://github.com/portcullis/portcullis/releases/download/v0.1.0 \
#       linux/amd64=target/x86_64-unknown-linux-musl/release/portcullis darwin/arm64=…
#
# Each binary goes into OUT_DIR/kubectl-portcullis_OS_ARCH.tar.gz as `kubectl-portcullis` (the
# name kubectl looks for; the binary answers as the plugin under it), beside LICENSE when the
# repository has one; the manifest's uri is BASE_URL/<archive>. The version is Cargo.toml's.
set -euo pipefail

cd "$(dirname "$0")/.."
if (($# < 3)); then
  echo "usage: $0 OUT_DIR BASE_URL OS/ARCH=BINARY..." >&2
  exit 2
fi
out=$1 base=${2%/}
shift 2
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
mkdir -p "$out"
platforms=""
for spec in "$@"; do
  platform=${spec%%=*} binary=${spec#*=}
  os=${platform%/*} arch=${platform#*/}
  if [[ $platform != */* || -z $os || -z $arch || ! -x $binary ]]; then
    echo "krew-manifest: $spec is not OS/ARCH=EXECUTABLE" >&2
    exit 2
  fi
  stage=$(mktemp -d)
  cp "$binary" "$stage/kubectl-portcullis"
  [[ -f LICENSE ]] && cp LICENSE "$stage/"
  archive="kubectl-portcullis_${os}_${arch}.tar.gz"
  tar -C "$stage" -czf "$out/$archive" --owner=0 --group=0 --numeric-owner .
  rm -rf "$stage"
  sum=$(sha256sum "$out/$archive" | cut -d' ' -f1)
  platforms+="  - selector:
      matchLabels:
        os: $os
        arch: $arch
    uri: $base/$archive
    sha256: $sum
    bin: kubectl-portcullis
"
done
cat <<YAML
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: portcullis
spec:
  version: v$version
  homepage: https://github.com/portcullis/portcullis
  shortDescription: Identity-aware, audited access to AWS databases
  description: |
    Lists the databases your AccessRoles let you reach (db ls), gets a short-lived
    client certificate with your Kubernetes login and starts psql, mariadb, mongosh
    or the AWS CLI through the Portcullis proxy (db connect), or opens a local tunnel
    for GUI tools (db proxy --tunnel); no database passwords, no AWS keys.
  caveats: |
    Needs the Portcullis operator in the cluster. Connect with:
      kubectl portcullis db ls
      kubectl portcullis db connect DATABASE
  platforms:
$platforms
YAML
