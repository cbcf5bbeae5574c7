#!/usr/bin/env bash
# Compiles the BPF programs into the committed objects that build.rs embeds, one per
# architecture the sampler supports (the C reads pt_regs by __TARGET_ARCH_*):
#   malloc_counters.bpf.c -> malloc_counters.{x86,arm64}.bpf.o  (allocator counters, SPEC §2.3)
#   memory_stacks.bpf.c   -> memory_stacks.x86.bpf.o            (in-kernel stacks, SPEC §2.4; x86
#                            only: the page-fault tracepoints it needs exist on x86 kernels only)
# and writes NAME.stamp for each: the FNV-1a 64 hash of its source followed by the shared
# header pmt_bpf.h, and the clang version used. The objects are reproducible: debug paths are
# relative and nothing depends on the time.
# Usage: bash dtrace/bpf/build.sh [OUT_DIR]   (default: dtrace/bpf; needs clang, PMT_CLANG names another)
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-dtrace/bpf}"
clang="${PMT_CLANG:-clang}"
command -v "$clang" >/dev/null || { echo "dtrace/bpf/build.sh: $clang not found: install clang (Debian: apt-get install clang)" >&2; exit 1; }
mkdir -p "$out"
for name in malloc_counters memory_stacks; do
    arches="x86 arm64"
    [ "$name" = memory_stacks ] && arches="x86"
    for arch in $arches; do
        "$clang" -O2 -g -target bpf "-D__TARGET_ARCH_${arch}" -Wall -Werror \
            -fdebug-prefix-map="$PWD"=. -fdebug-compilation-dir=. \
            -c "dtrace/bpf/$name.bpf.c" -o "$out/$name.${arch}.bpf.o"
    done
    hash=$(python3 - "dtrace/bpf/$name.bpf.c" dtrace/bpf/pmt_bpf.h <<'PY'
import sys
h = 0xcbf29ce484222325
for path in sys.argv[1:]:
    for b in open(path, "rb").read():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
print(f"{h:016x}")
PY
)
    {
        echo "source-fnv1a64: $hash"
        echo "clang: $("$clang" --version | head -n1)"
    } > "$out/$name.stamp"
    echo "wrote $out/$name.{${arches// /,}}.bpf.o and $out/$name.stamp"
done
