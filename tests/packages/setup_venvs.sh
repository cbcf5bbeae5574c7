#!/usr/bin/env bash
# Makes the venvs that hold the PyPI packages some tests run real programs of (servers and
# libraries nobody here wrote): gunicorn, flask, uvicorn, fastapi, networkx and numpy, for
# - pyenv's newest 3.12 on the host: target/pkg-venv-3.12 (git-ignored);
# - Debian sid's python3.14 in the sid chroot (.ci/sid_chroot.sh): /opt/pmt-pkgs-3.14 inside it
#   (pip there uses a copy of the host's CA bundle).
# Idempotent: a venv that already imports every package is left as it is.
# Usage: bash tests/packages/setup_venvs.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
packages=(gunicorn flask uvicorn fastapi networkx numpy)
check="import gunicorn, flask, uvicorn, fastapi, networkx, numpy"

root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
python=$(ls -d "$root"/versions/3.12.*/bin/python3.12 2>/dev/null | sort -V | tail -1 || true)
if [ -n "$python" ]; then
    venv=$PWD/target/pkg-venv-3.12
    if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "${packages[@]}"
    fi
    echo "packages: $venv ready"
else
    echo "packages: no pyenv 3.12 under $root; the tests that need it will say so"
fi

sid=${PMT_SID_ROOT:-/srv/pmt-sid}
if [ -x "$sid/usr/bin/python3.14" ]; then
    venv=/opt/pmt-pkgs-3.14
    if ! chroot "$sid" "$venv/bin/python" -c "$check" 2>/dev/null; then
        cp /etc/ssl/certs/ca-certificates.crt "$sid/etc/pmt-host-ca.crt"
        chroot "$sid" python3.14 -m venv "$venv"
        chroot "$sid" env -u PIP_FIND_LINKS SSL_CERT_FILE=/etc/pmt-host-ca.crt PIP_CERT=/etc/pmt-host-ca.crt \
            "$venv/bin/python" -m pip install -q --disable-pip-version-check "${packages[@]}"
    fi
    echo "packages: $sid$venv ready"
else
    echo "packages: no sid chroot at $sid; the tests that need it will say so"
fi
