// SPDX-License-Identifier: MIT OR GPL-2.0
//
// malloc_counters.bpf.c: per-thread allocator counters for pmt-sample (SPEC §2.3).
//
// Uprobe programs for the allocator entry points of one target process. Each
// hit adds to the counters of the calling thread (key: kernel tid) in the hash
// map ALLOC_COUNTS; user space (src/memory/malloc) reads the whole map each
// sampler tick. Counters are cumulative since attach and never reset here.
//
// Concurrency: a thread's entry is only ever written by that thread (its own
// tid is the key), and every update is an atomic add, so a reader iterating the
// map concurrently sees each counter monotonic and untorn.
//
// The C is self-contained (no libbpf headers; see pmt_bpf.h): clang alone builds it,
// dtrace/bpf/build.sh does:  clang -O2 -g -target bpf -D__TARGET_ARCH_<arch> -c FILE -o OUT
//
// Two layers are counted separately:
//   libc:   malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign (calls, bytes);
//           free (frees, NULL excluded).
//   python: CPython's object allocator (pymalloc), requests of at most
//           PYMALLOC_THRESHOLD bytes only: larger ones are passed on by pymalloc
//           to libc malloc and are counted there, so the layers never count the
//           same bytes twice. Frees: every PyObject_Free/PyMem_Free.

#include "pmt_bpf.h"

// CPython's SMALL_REQUEST_THRESHOLD (3.6 to 3.13).
#define PYMALLOC_THRESHOLD 512

// Mirrors `RawCounts` in src/memory/malloc/mod.rs: same field order, all u64.
struct alloc_counts {
    __u64 calls;
    __u64 bytes;
    __u64 frees;
    __u64 py_calls;
    __u64 py_bytes;
    __u64 py_frees;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, struct alloc_counts);
} ALLOC_COUNTS SEC(".maps");

// Slot 0: events lost because ALLOC_COUNTS was full.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} ALLOC_LOST SEC(".maps");

// Set by the loader before the programs are verified: the target, in the loader's PID namespace.
const volatile __u32 TARGET_TGID = 0;

enum field { CALLS, BYTES, FREES, PY_CALLS, PY_BYTES, PY_FREES };

ALWAYS_INLINE struct alloc_counts *thread_counts(void)
{
    __u32 tgid, tid;
    if (loader_ids(&tgid, &tid))
        return 0;
    if (tgid != TARGET_TGID)
        return 0;
    struct alloc_counts *c = bpf_map_lookup_elem(&ALLOC_COUNTS, &tid);
    if (c)
        return c;
    struct alloc_counts zero = {};
    bpf_map_update_elem(&ALLOC_COUNTS, &tid, &zero, BPF_NOEXIST);
    c = bpf_map_lookup_elem(&ALLOC_COUNTS, &tid);
    if (!c) {
        __u32 slot = 0;
        __u64 *lost = bpf_map_lookup_elem(&ALLOC_LOST, &slot);
        if (lost)
            __sync_fetch_and_add(lost, 1);
    }
    return c;
}

ALWAYS_INLINE int count_alloc(__u64 bytes)
{
    struct alloc_counts *c = thread_counts();
    if (c) {
        __sync_fetch_and_add(&c->calls, 1);
        __sync_fetch_and_add(&c->bytes, bytes);
    }
    return 0;
}

ALWAYS_INLINE int count_py_alloc(__u64 bytes)
{
    if (bytes > PYMALLOC_THRESHOLD)
        return 0;
    struct alloc_counts *c = thread_counts();
    if (c) {
        __sync_fetch_and_add(&c->py_calls, 1);
        __sync_fetch_and_add(&c->py_bytes, bytes);
    }
    return 0;
}

// libc: malloc(size), calloc(n, size), realloc(ptr, size), free(ptr),
// posix_memalign(out, align, size), aligned_alloc(align, size), memalign(align, size).
SEC("uprobe") int pmt_malloc(struct pt_regs *ctx) { return count_alloc(ARG1(ctx)); }
SEC("uprobe") int pmt_calloc(struct pt_regs *ctx) { return count_alloc(ARG1(ctx) * ARG2(ctx)); }
SEC("uprobe") int pmt_realloc(struct pt_regs *ctx) { return count_alloc(ARG2(ctx)); }
SEC("uprobe") int pmt_posix_memalign(struct pt_regs *ctx) { return count_alloc(ARG3(ctx)); }
SEC("uprobe") int pmt_aligned_alloc(struct pt_regs *ctx) { return count_alloc(ARG2(ctx)); }

SEC("uprobe") int pmt_free(struct pt_regs *ctx)
{
    if (ARG1(ctx) == 0)
        return 0;
    struct alloc_counts *c = thread_counts();
    if (c)
        __sync_fetch_and_add(&c->frees, 1);
    return 0;
}

// CPython's exported wrappers: PyObject_Malloc(size), PyObject_Calloc(n, size),
// PyObject_Realloc(ptr, size), PyObject_Free(ptr), and the PyMem_ ones alike.
SEC("uprobe") int pmt_py_malloc(struct pt_regs *ctx) { return count_py_alloc(ARG1(ctx)); }
SEC("uprobe") int pmt_py_calloc(struct pt_regs *ctx) { return count_py_alloc(ARG1(ctx) * ARG2(ctx)); }
SEC("uprobe") int pmt_py_realloc(struct pt_regs *ctx) { return count_py_alloc(ARG2(ctx)); }

// CPython's allocator implementations, where the symbol table has them
// (_PyObject_Malloc(ctx, size) ...): they also see the calls that the compiler
// inlined past the exported wrappers.
SEC("uprobe") int pmt_py_impl_malloc(struct pt_regs *ctx) { return count_py_alloc(ARG2(ctx)); }
SEC("uprobe") int pmt_py_impl_calloc(struct pt_regs *ctx) { return count_py_alloc(ARG2(ctx) * ARG3(ctx)); }
SEC("uprobe") int pmt_py_impl_realloc(struct pt_regs *ctx) { return count_py_alloc(ARG3(ctx)); }

ALWAYS_INLINE int count_py_free(__u64 ptr)
{
    if (ptr == 0)
        return 0;
    struct alloc_counts *c = thread_counts();
    if (c)
        __sync_fetch_and_add(&c->py_frees, 1);
    return 0;
}

SEC("uprobe") int pmt_py_free(struct pt_regs *ctx) { return count_py_free(ARG1(ctx)); }
SEC("uprobe") int pmt_py_impl_free(struct pt_regs *ctx) { return count_py_free(ARG2(ctx)); }

char LICENSE[] SEC("license") = "Dual MIT/GPL";
