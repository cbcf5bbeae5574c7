#!/usr/bin/env bash
# Builds the `pymemtrace` Python package (pip install . with maturin) for every CPython exact
# mode supports and runs two suites under each: ours (python/tests) and pymemtrace 0.4.0's own
# (python/seed_suite.sh, its sdist's tests unmodified against our package).
# Interpreters: 3.8-3.13 under $(pyenv root)/versions, and Debian sid's 3.14 and 3.15 (labels
# sid3.14, sid3.15) inside the chroot made by .ci/sid_chroot.sh ($PMT_SID_ROOT, default
# /srv/pmt-sid). For the chroot this script bind-mounts the repository (at the same path) and the
# host's ~/.rustup and ~/.cargo (at /root/...) into it, idempotently, so that maturin builds the
# extension there with the host's Rust toolchain; its cargo output goes to target/sid.
# Each interpreter gets a venv in target/pyvenvs/LABEL (git-ignored) with maturin and pytest
# from PyPI. A label listed in PMT_REQUIRE_PYTHONS (e.g. "3.8 3.13 sid3.14") that is missing
# fails the run; other missing interpreters are skipped with a message.
# Usage: bash python/run_pytests.sh [3.12 sid3.14 ...]   (default: every supported one)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
sid=${PMT_SID_ROOT:-/srv/pmt-sid}
required=" ${PMT_REQUIRE_PYTHONS:-} "
labels=("$@")
[ ${#labels[@]} -gt 0 ] || labels=(3.8 3.9 3.10 3.11 3.12 3.13 sid3.14 sid3.15)
status=0
host_ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
sid_ca=/etc/pmt-host-ca-certificates.crt

# Binds $1 (a directory or a file) onto $2 unless something is mounted there already.
bind() {
    if [ -d "$1" ]; then mkdir -p "$2"; else touch "$2"; fi
    findmnt -rn --mountpoint "$2" >/dev/null || mount --bind "$1" "$2"
}

# Makes the repository and the host's Rust toolchain visible inside the sid chroot.
prepare_sid() {
    bind "$repo" "$sid$repo"
    bind "$HOME/.rustup" "$sid/root/.rustup"
    bind "$HOME/.cargo" "$sid/root/.cargo"
    # The host's CA bundle (which trusts any TLS-inspecting proxy the host is configured for),
    # so pip and cargo inside the chroot reach PyPI and crates.io as they do on the host.
    bind "$host_ca" "$sid$sid_ca"
    mountpoint -q "$sid/proc" || mount -t proc proc "$sid/proc"
    mountpoint -q "$sid/dev/shm" || mount -t tmpfs shm "$sid/dev/shm"
}

# Sets `run` (a command prefix: `"${run[@]}" DIR CMD...` runs CMD in DIR beside the interpreter,
# with its PATH first) and `python` for a label; returns 1 when that interpreter is not here.
locate() {
    local label=$1
    case $label in
        sid*)
            local version=${label#sid}
            [ -x "$sid/usr/bin/python$version" ] || return 1
            prepare_sid
            run=(bash python/in_env.sh chroot "$sid" HOME=/root PATH=/root/.cargo/bin:/usr/bin:/bin
                 CARGO_TARGET_DIR="$repo/target/sid" PIP_CERT=$sid_ca SSL_CERT_FILE=$sid_ca
                 REQUESTS_CA_BUNDLE=$sid_ca CARGO_HTTP_CAINFO=$sid_ca)
            python=/usr/bin/python$version
            ;;
        *)
            run=(bash python/in_env.sh host / PATH="$PATH")
            python=$(ls -d "$root"/versions/"$label".*/bin/python"$label" 2>/dev/null | sort -V | tail -1 || true)
            [ -n "$python" ] || return 1
            ;;
    esac
}

newest=$(ls -d "$root"/versions/3.1[0-3].*/bin/python3.1[0-3] 2>/dev/null | sort -V | tail -1 || true)
if [ -n "$newest" ]; then
    echo "== cargo test -p pymemtrace-python (unit tests, linked against $newest)"
    PYO3_PYTHON=$newest cargo test --release -p pymemtrace-python 2>&1 || status=1
fi
for label in "${labels[@]}"; do
    if ! locate "$label"; then
        if [[ $required == *" $label "* ]]; then
            echo "FAIL: $label is required (PMT_REQUIRE_PYTHONS) but not found (pyenv: $root/versions, sid: $sid)"
            status=1
        else
            echo "SKIP: $label not installed (pyenv: $root/versions, sid: $sid)"
        fi
        continue
    fi
    venv=$repo/target/pyvenvs/$label
    echo "== [$label] pip install . with $python"
    [ -x "$venv/bin/python" ] || "${run[@]}" "$repo" "$python" -m venv "$venv"
    "${run[@]}" "$repo" "$venv/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" pytest
    "${run[@]}" "$repo" "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        --no-build-isolation --force-reinstall --no-deps "$repo"
    echo "== [$label] pytest python/tests"
    mkdir -p "$repo/target"
    workdir=$(mktemp -d -p "$repo/target" pytest.XXXXXX)
    "${run[@]}" "$workdir" "$venv/bin/python" -m pytest "$repo/python/tests" -q -p no:cacheprovider \
        --rootdir "$workdir" --basetemp "$workdir/pytest-tmp" || status=1
    rm -rf "$workdir"
    echo "== [$label] pymemtrace 0.4.0's own test suite against our package"
    bash python/seed_suite.sh "$label" "$venv" "${run[@]}" || status=1
done
exit $status
