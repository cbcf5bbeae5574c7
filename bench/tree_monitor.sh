#!/usr/bin/env bash
# Runs bench/tree_monitor.py: CPU of `pmt tree` vs psrecord and pymemtrace 0.4.0's process_tree.py
# on one 200-process tree at 10 Hz. Needs: a release build, psrecord (PSRECORD, default
# /opt/peers/bin/psrecord), pymemtrace 0.4.0's source (PYMEMTRACE_SRC, default /work/ref/pymemtrace-0.4.0).
# Creates bench/.venv (git-ignored) with psutil and colorama for process_tree.py.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin pmt
if [ ! -x bench/.venv/bin/python ]; then
    python3 -m venv bench/.venv
    bench/.venv/bin/python -m pip install -q --disable-pip-version-check psutil colorama
fi
exec bench/.venv/bin/python bench/tree_monitor.py \
    --psrecord "${PSRECORD:-/opt/peers/bin/psrecord}" \
    --pymemtrace-src "${PYMEMTRACE_SRC:-/work/ref/pymemtrace-0.4.0}" "$@"
