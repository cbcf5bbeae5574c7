#!/usr/bin/env bash
# Makes the venv the interop tests read outputs with, from their formats' own definitions:
# - pprof: Python's `protobuf` package and `profile_pb2.py` generated from proto/profile.proto
#   by protoc (from `grpcio-tools`), both from PyPI;
# - speedscope: the file-format JSON schema shipped in the `speedscope` npm package
#   (fetched with `npm pack`), checked with Python's `jsonschema` from PyPI.
# The venv is target/interop-venv (git-ignored); running this again only re-generates.
# Prints the venv's python on its last line.
# Usage: bash tests/interop/setup_venv.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
venv=$repo/target/interop-venv
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
python=$(ls -d "$root"/versions/3.1[0-3].*/bin/python3.1[0-3] 2>/dev/null | sort -V | tail -1 || true)
[ -n "$python" ] || python=$(command -v python3)
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import google.protobuf, grpc_tools, jsonschema" 2>/dev/null; then
    "$python" -m venv "$venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check protobuf grpcio-tools jsonschema >&2
fi
mkdir -p "$venv/gen"
"$venv/bin/python" -m grpc_tools.protoc -I "$repo/proto" --python_out="$venv/gen" "$repo/proto/profile.proto" >&2
schema=$venv/gen/speedscope-file-format-schema.json
if [ ! -s "$schema" ]; then
    pack=$(mktemp -d)
    (cd "$pack" && npm pack --silent speedscope@1.25.0 >/dev/null)
    tar xzf "$pack"/speedscope-1.25.0.tgz -C "$pack" package/dist/release/file-format-schema.json
    mv "$pack"/package/dist/release/file-format-schema.json "$schema"
    rm -rf "$pack"
fi
echo "$venv/bin/python"
