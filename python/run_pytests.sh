#!/usr/bin/env bash
# Builds the `pymemtrace` Python package (pip install . with maturin) for every CPython
# 3.8-3.13 found under $(pyenv root)/versions and runs python/tests under each.
# Each version gets a venv in target/pyvenvs/X.Y (git-ignored) with maturin and pytest from PyPI.
# A version listed in PMT_REQUIRE_PYTHONS (e.g. "3.8 3.9 3.10") that is missing fails the run;
# other missing versions are skipped with a message.
# Usage: bash python/run_pytests.sh [3.12 ...]   (default: every supported version)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
required=" ${PMT_REQUIRE_PYTHONS:-} "
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.8 3.9 3.10 3.11 3.12 3.13)
status=0
newest=$(ls -d "$root"/versions/3.1[0-3].*/bin/python3.1[0-3] 2>/dev/null | sort -V | tail -1 || true)
if [ -n "$newest" ]; then
    echo "== cargo test -p pymemtrace-python (unit tests, linked against $newest)"
    PYO3_PYTHON=$newest cargo test --release -p pymemtrace-python 2>&1 || status=1
fi
for version in "${versions[@]}"; do
    python=$(ls -d "$root"/versions/"$version".*/bin/python"$version" 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$python" ]; then
        if [[ $required == *" $version "* ]]; then
            echo "FAIL: python$version is required (PMT_REQUIRE_PYTHONS) but not under $root/versions"
            status=1
        else
            echo "SKIP: python$version not installed under $root/versions"
        fi
        continue
    fi
    echo "== pytest python/tests under $python"
    venv=$repo/target/pyvenvs/$version
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" pytest
    PATH=$venv/bin:$PATH "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        --no-build-isolation --force-reinstall --no-deps "$repo"
    workdir=$(mktemp -d)
    if ! (cd "$workdir" && "$venv/bin/python" -m pytest "$repo/python/tests" -q -p no:cacheprovider --basetemp "$workdir/pytest-tmp"); then
        status=1
    fi
    rm -rf "$workdir"
done
exit $status
