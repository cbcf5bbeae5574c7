#!/usr/bin/env bash
# Runs every test of the project: Rust unit and integration tests (against real CPython
# processes), then the exact-mode Python package's pytest suites under each CPython.
# Usage: bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test"
cargo test --release --all-targets 2>&1

echo "== exact mode: pymemtrace Python package under each CPython 3.8-3.13"
bash python/run_pytests.sh
