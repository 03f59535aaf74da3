#!/usr/bin/env bash
# Runs the whole test suite: rustfmt, clippy and the module-graph check; unit tests,
# end-to-end tests against real PostgreSQL (TLS, IAM tokens checked by PAM), moto's STS,
# psql/pgbench and botocore; the Go token checker's tests; the moto behaviour probe; and the
# CRD drift check. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
portcullis_need_root
portcullis_install_deps

echo "== format (rustfmt.toml) and the module graph (no import cycles, layout rules)" >&2
cargo fmt --all --check
python3 scripts/import-graph.py

echo "== build" >&2
cargo build --locked --bins --tests
echo "== clippy (every target, warnings are errors)" >&2
cargo clippy --locked --all-targets -- -D warnings

echo "== CRD drift (crds/ must equal 'portcullis crd --out-dir crds')" >&2
"$CARGO_TARGET_DIR/debug/portcullis" crd --out-dir crds --check

echo "== token checker (Go) and moto behaviour probe" >&2
bash tests/support/build-rdstokencheck.sh >/dev/null
(cd tests/support/rdstokencheck && CGO_ENABLED=0 go test ./... )
python3 tests/support/moto_auth_probe.py > /tmp/portcullis-moto-probe.log || { cat /tmp/portcullis-moto-probe.log; exit 1; }
tail -n 1 /tmp/portcullis-moto-probe.log

echo "== Kubernetes test cluster (testenv: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl, helm)" >&2
bash testenv/build.sh >/dev/null
echo "== chart and install manifests (deploy/ and the chart's crds/ must equal what scripts/render-deploy.sh makes)" >&2
bash scripts/render-deploy.sh --check

echo "== cargo test" >&2
status=0
log=$(mktemp)
cargo test --locked --no-fail-fast 2>&1 | tee "$log" || status=$?

echo "== nothing left behind" >&2
left=$(pgrep -af 'portcullis/testenv/[^ ]*/bin/|/tmp/portcullis-test-|moto_server -H ' || true)
if [ -n "$left" ]; then
  echo "processes left behind by the tests:" >&2; echo "$left" >&2; status=1
fi
bash scripts/cluster.sh leftovers || status=1
if ls /etc/pam.d/portcullis-test-* >/dev/null 2>&1 || [ -n "$(ip netns list 2>/dev/null | grep '^pc')" ]; then
  echo "PAM services or network namespaces left behind by the tests" >&2; status=1
fi
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
rm -f "$log"
[ "$passed" -gt 0 ] || status=1
echo "cargo test: $passed passed, $failed failed"
exit $status
