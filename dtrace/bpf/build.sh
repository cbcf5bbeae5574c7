#!/usr/bin/env bash
# Compiles malloc_counters.bpf.c into the committed BPF objects that build.rs embeds, one per
# architecture the sampler supports (the C source reads pt_regs by __TARGET_ARCH_*), and writes
# malloc_counters.stamp: the source's FNV-1a 64 hash and the clang version used. The objects are
# reproducible: debug paths are relative and nothing depends on the time.
# Usage: bash dtrace/bpf/build.sh [OUT_DIR]   (default: dtrace/bpf; needs clang, PMT_CLANG names another)
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-dtrace/bpf}"
clang="${PMT_CLANG:-clang}"
command -v "$clang" >/dev/null || { echo "dtrace/bpf/build.sh: $clang not found: install clang (Debian: apt-get install clang)" >&2; exit 1; }
mkdir -p "$out"
for arch in x86 arm64; do
    "$clang" -O2 -g -target bpf "-D__TARGET_ARCH_${arch}" \
        -fdebug-prefix-map="$PWD"=. -fdebug-compilation-dir=. \
        -c dtrace/bpf/malloc_counters.bpf.c -o "$out/malloc_counters.${arch}.bpf.o"
done
hash=$(python3 - <<'PY'
h = 0xcbf29ce484222325
for b in open("dtrace/bpf/malloc_counters.bpf.c", "rb").read():
    h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
print(f"{h:016x}")
PY
)
{
    echo "source-fnv1a64: $hash"
    echo "clang: $("$clang" --version | head -n1)"
} > "$out/malloc_counters.stamp"
echo "wrote $out/malloc_counters.{x86,arm64}.bpf.o and $out/malloc_counters.stamp"
