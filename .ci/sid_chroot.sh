#!/usr/bin/env bash
# Makes (or completes) the Debian sid chroot that holds the newest CPythons the tests attach to:
# python3.13, python3.14, python3.15, libpython3.14 (a program embeds it), their -dev headers
# (the layout cross-check and exact mode's builds) and venv support, and a C compiler.
# The chroot is made by debootstrap from Debian's archive; sid's Release file can be past its
# Valid-Until date, so apt inside it is told not to check that. Idempotent: a complete chroot
# is left as it is.
# Usage: bash .ci/sid_chroot.sh [ROOT]   (default: $PMT_SID_ROOT or /srv/pmt-sid)
set -euo pipefail
root=${1:-${PMT_SID_ROOT:-/srv/pmt-sid}}
mirror=${PMT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=(python3.13 python3.14 python3.15 libpython3.14
          python3.13-dev python3.14-dev python3.15-dev
          python3.13-venv python3.14-venv python3.15-venv
          gcc libc6-dev)
stamp=$root/.pmt-sid-complete
want="${packages[*]}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
command -v debootstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
}
if [ ! -x "$root/usr/bin/apt-get" ]; then
    start=$(date +%s)
    debootstrap --variant=minbase sid "$root" "$mirror" >/dev/null
    echo "sid chroot: debootstrap took $(( $(date +%s) - start )) s"
fi
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
start=$(date +%s)
apt_opts=(-o Acquire::Check-Valid-Until=false -o APT::Install-Recommends=false -qq)
chroot "$root" apt-get "${apt_opts[@]}" update
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get "${apt_opts[@]}" install -y "${packages[@]}" >/dev/null
echo "sid chroot: packages took $(( $(date +%s) - start )) s"
for v in 3.13 3.14 3.15; do chroot "$root" "python$v" -c 'import sys; print("sid chroot:", sys.version.split()[0])'; done
echo "$want" > "$stamp"
