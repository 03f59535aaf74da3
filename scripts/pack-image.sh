#!/usr/bin/env bash
# Packs a portcullis binary into a FROM-scratch OCI image archive for the test node (no
# registry, no base image to pull): the binary at /portcullis as the entrypoint, the shared
# libraries `ldd` names, the CA bundle, user 65532, and the Dockerfile's OCI labels.
#
#   scripts/pack-image.sh [REF]     # default REF localhost/portcullis:test
#
# Packs the binary PORTCULLIS_BIN names (the tests pass the one they were built with), or else
# the release binary, building it if needed (cargo, cached in $CARGO_TARGET_DIR). Debug
# information is stripped from the packed copy (symbols stay, so backtraces keep their names).
# Prints the archive's path as the last line; import it with `ctr -n k8s.io images import`.
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${1:-localhost/portcullis:test}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis/target}"
if [ -n "${PORTCULLIS_BIN:-}" ]; then
  bin=$PORTCULLIS_BIN
  [ -x "$bin" ] || { echo "pack-image: PORTCULLIS_BIN=$bin is not an executable" >&2; exit 1; }
else
  cargo build --locked --release --bin portcullis >&2
  bin=$CARGO_TARGET_DIR/release/portcullis
fi
stripped=$(mktemp)
trap 'rm -f "$stripped"' EXIT
objcopy --strip-debug "$bin" "$stripped"
chmod 755 "$stripped"
bin=$stripped
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
out=${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}/images
mkdir -p "$out"
tar=$out/portcullis-$(echo "$ref" | tr '/:' '__').tar
python3 scripts/lib/ociimage.py "$tar" "$ref" "$bin" --libs --ca-certs --user 65532:65532 \
  --label org.opencontainers.image.title=portcullis \
  --label "org.opencontainers.image.description=Identity-aware, audited access to AWS databases" \
  --label org.opencontainers.image.source=https://github.com/portcullis/portcullis \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label "org.opencontainers.image.version=$version" >&2
echo "$tar"
