#!/usr/bin/env bash
# Runs every test of the project: Rust unit and integration tests (against real CPython
# processes; the interop tests decode pprof with a venv this script makes first), then the `pymemtrace` Python package's pytest suites (exact mode and the
# pure-Python modules) under each CPython 3.8-3.13.
# Usage: bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== the interop tests' pprof decoder (protobuf + protoc from PyPI, in target/interop-venv)"
bash tests/interop/setup_venv.sh

echo "== cargo test"
cargo test --release 2>&1

echo "== the pymemtrace Python package under each CPython 3.8-3.13"
bash python/run_pytests.sh
