#!/usr/bin/env bash
# Runs benchmarks side by side with their peers. Installs the peers (py-spy, austin, memray,
# psrecord) from PyPI into bench/.venv first.
# Usage: bash bench/run.sh [NAME...]   (default: the benchmarks listed below; any bench/NAME.py by name,
# e.g. attribution_vs_memray and slowdown_vs_memray, which make their own bench/.venv-real)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x bench/.venv/bin/py-spy ]; then
    python3 -m venv bench/.venv
    bench/.venv/bin/pip install -q py-spy==0.4.3 'austin-dist<4' memray psrecord
fi
export PATH="$PWD/bench/.venv/bin:$PATH"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(stack_read sampler_cost sampler_overhead attribution_vs_austin subprocesses)
for name in "${names[@]}"; do
    if [ -f "bench/$name.py" ]; then
        cargo build --release -q
        python3 "bench/$name.py"
    else
        cargo bench --bench "$name"
    fi
done
