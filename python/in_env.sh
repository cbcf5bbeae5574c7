#!/usr/bin/env bash
# Runs a command on the host or inside a chroot, in a given directory, with the given environment
# variables and the command's venv (if it is one) first on PATH, so that maturin, pip and pytest
# find their own tools wherever the interpreter lives.
# Usage: bash python/in_env.sh host / [NAME=VALUE...] DIR CMD [ARGS...]
#        bash python/in_env.sh chroot ROOT [NAME=VALUE...] DIR CMD [ARGS...]
set -euo pipefail
where=$1
top=$2
shift 2
vars=()
while [[ $# -gt 0 && $1 == *=* ]]; do
    vars+=("$1")
    shift
done
dir=$1
shift
bin=$(dirname "$1")
path=
for v in "${vars[@]}"; do
    [[ $v == PATH=* ]] && path=${v#PATH=}
done
vars+=("PATH=$bin:$path")
case $where in
    host) cd "$dir" && exec env "${vars[@]}" "$@" ;;
    chroot) exec chroot "$top" /usr/bin/env -i "${vars[@]}" TMPDIR=/tmp LANG=C.UTF-8 \
        sh -c 'cd "$0" && exec "$@"' "$dir" "$@" ;;
    *) echo "in_env.sh: first argument must be host or chroot, not $where" >&2; exit 2 ;;
esac
