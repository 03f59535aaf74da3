#!/usr/bin/env bash
# Runs the whole test suite: unit tests, end-to-end tests against real PostgreSQL (TLS, IAM
# tokens checked by PAM), moto's STS, psql/pgbench and botocore; the Go token checker's
# tests; the moto behaviour probe; and the CRD drift check. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
portcullis_need_root
portcullis_install_deps

echo "== build" >&2
cargo build --locked --bins --tests

echo "== CRD drift (crds/ must equal 'portcullis crd --out-dir crds')" >&2
"$CARGO_TARGET_DIR/debug/portcullis" crd --out-dir crds --check

echo "== token checker (Go) and moto behaviour probe" >&2
bash tests/support/build-rdstokencheck.sh >/dev/null
(cd tests/support/rdstokencheck && CGO_ENABLED=0 go test ./... )
python3 tests/support/moto_auth_probe.py > /tmp/portcullis-moto-probe.log || { cat /tmp/portcullis-moto-probe.log; exit 1; }
tail -n 1 /tmp/portcullis-moto-probe.log

echo "== cargo test" >&2
cargo test --locked --no-fail-fast
