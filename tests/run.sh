#!/usr/bin/env bash
# Runs every test of the project: Rust unit and integration tests (against real CPython
# processes; the interop tests decode pprof with a venv this script makes first), then the `pymemtrace` Python package's pytest suites (exact mode and the
# pure-Python modules), and pymemtrace 0.4.0's own test suite against it, under each CPython
# 3.8-3.13 and Debian sid's 3.14 and 3.15 (in the chroot .ci/sid_chroot.sh makes).
# It first installs what the tests need (.ci/setup: clang, bpftrace, go, tmux, npm, the sid
# chroot, tracefs; idempotent, a few seconds when all is there), so that on a fresh machine
# this one command is all it takes.
# Usage: bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== set-up (.ci/setup, idempotent)"
bash .ci/setup

echo "== the interop tests' pprof decoder (protobuf + protoc from PyPI, in target/interop-venv)"
bash tests/interop/setup_venv.sh

echo "== PyPI packages some tests run real programs of (gunicorn, flask, uvicorn, fastapi, networkx)"
bash tests/packages/setup_venvs.sh

echo "== the allocation hook's own unit tests (heap_hook/ is built by rustc alone)"
mkdir -p target
rustc --edition 2024 --test -C opt-level=2 heap_hook/src/lib.rs -o target/heap_hook_tests
target/heap_hook_tests

echo "== cargo test"
cargo test --release --no-fail-fast 2>&1

echo "== the pymemtrace Python package under each CPython 3.8-3.13, sid 3.14 and 3.15"
bash python/run_pytests.sh
