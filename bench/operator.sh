#!/usr/bin/env bash
# Operator benchmark: 1,000 Databases at once against the real API server (test control plane).
# The operator runs from a release build; prints a table. BENCH_DATABASES=N changes the count.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis/target}"
cargo build --release --bin portcullis
export PORTCULLIS_BIN="$CARGO_TARGET_DIR/release/portcullis" TEST_OPERATOR_LOG=info
cargo bench --bench operator 2>&1 | grep -E '^\||panicked'
