#!/usr/bin/env bash
# Runs the pure-Python modules' tests (pymemtrace.process, trace_malloc, debug_malloc_stats,
# redirect_stdout) under each CPython 3.8-3.13 found in $(pyenv root)/versions, each in its own
# venv under .venv-py/ (git-ignored) holding pytest. A version listed in PMT_REQUIRE_PYTHONS
# (e.g. "3.8 3.13") that is missing fails the run; other missing versions are skipped with a message.
# Usage: bash tests/monitor_python.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
required=" ${PMT_REQUIRE_PYTHONS//,/ } "
failed=0
for minor in 8 9 10 11 12 13; do
    version="3.$minor"
    python="$(ls -d "$root"/versions/"$version".*/bin/python"$version" 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -z "$python" ]; then
        if [[ "$required" == *" $version "* ]]; then
            echo "FAIL: CPython $version is required by PMT_REQUIRE_PYTHONS but not found under $root/versions"
            failed=1
        else
            echo "SKIP: CPython $version not found under $root/versions"
        fi
        continue
    fi
    venv=".venv-py/$version"
    if [ ! -x "$venv/bin/pytest" ]; then
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check pytest
    fi
    echo "== pytest (CPython $version: $python)"
    PYTHONPATH=python "$venv/bin/python" -m pytest -q -p no:cacheprovider \
        python/tests/test_process.py python/tests/test_trace_malloc.py \
        python/tests/test_debug_malloc_stats.py python/tests/test_redirect_stdout.py || failed=1
done
exit "$failed"
