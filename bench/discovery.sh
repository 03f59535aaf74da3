#!/usr/bin/env bash
# Discovery benchmark: a DatabaseDiscovery over 500 RDS instances in moto (two regions, auth on)
# against the real API server (test control plane). The operator runs from a release build;
# prints a table. BENCH_INSTANCES=N changes the count.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis/target}"
cargo build --release --bin portcullis
export PORTCULLIS_BIN="$CARGO_TARGET_DIR/release/portcullis" TEST_OPERATOR_LOG=info
cargo bench --bench discovery "$@" 2>&1 | grep -E '^\||panicked|^moto'
