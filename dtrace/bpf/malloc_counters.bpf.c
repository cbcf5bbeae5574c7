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
// The C is self-contained (no libbpf headers): clang alone builds it, which
// build.rs does:  clang -O2 -g -target bpf -D__TARGET_ARCH_<arch> -c FILE -o OUT
//
// Two layers are counted separately:
//   libc:   malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign (calls, bytes);
//           free (frees, NULL excluded).
//   python: CPython's object allocator (pymalloc), requests of at most
//           PYMALLOC_THRESHOLD bytes only: larger ones are passed on by pymalloc
//           to libc malloc and are counted there, so the layers never count the
//           same bytes twice. Frees: every PyObject_Free/PyMem_Free.

typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_NOEXIST 1

// CPython's SMALL_REQUEST_THRESHOLD (3.6 to 3.13).
#define PYMALLOC_THRESHOLD 512

// Helper ids from the kernel's UAPI (include/uapi/linux/bpf.h).
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
                                   __u64 flags) = (void *)2;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
struct bpf_pidns_info {
    __u32 pid;
    __u32 tgid;
};
static long (*bpf_get_ns_current_pid_tgid)(__u64 dev, __u64 ino, struct bpf_pidns_info *nsdata,
                                           __u32 size) = (void *)120;

// The user-visible register layout the kernel passes to uprobe programs.
#if defined(__TARGET_ARCH_x86)
struct pt_regs {
    __u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di;
    __u64 orig_ax, ip, cs, flags, sp, ss;
};
#define ARG1(ctx) ((ctx)->di)
#define ARG2(ctx) ((ctx)->si)
#define ARG3(ctx) ((ctx)->dx)
#elif defined(__TARGET_ARCH_arm64)
struct pt_regs {
    __u64 regs[31];
    __u64 sp, pc, pstate;
};
#define ARG1(ctx) ((ctx)->regs[0])
#define ARG2(ctx) ((ctx)->regs[1])
#define ARG3(ctx) ((ctx)->regs[2])
#else
#error "define __TARGET_ARCH_x86 or __TARGET_ARCH_arm64"
#endif

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

// Set by the loader before the programs are verified. TARGET_TGID is in the loader's PID
// namespace; PIDNS_DEV and PIDNS_INO name that namespace when it is not the initial one (a
// sidecar), so that ids are compared, and threads keyed, as the loader sees them.
const volatile __u32 TARGET_TGID = 0;
const volatile __u64 PIDNS_DEV = 0;
const volatile __u64 PIDNS_INO = 0;

enum field { CALLS, BYTES, FREES, PY_CALLS, PY_BYTES, PY_FREES };

static __attribute__((always_inline)) struct alloc_counts *thread_counts(void)
{
    __u32 tgid, tid;
    if (PIDNS_INO) {
        struct bpf_pidns_info ns = {};
        if (bpf_get_ns_current_pid_tgid(PIDNS_DEV, PIDNS_INO, &ns, sizeof(ns)))
            return 0;
        tgid = ns.tgid;
        tid = ns.pid;
    } else {
        __u64 id = bpf_get_current_pid_tgid();
        tgid = (__u32)(id >> 32);
        tid = (__u32)id;
    }
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

static __attribute__((always_inline)) int count_alloc(__u64 bytes)
{
    struct alloc_counts *c = thread_counts();
    if (c) {
        __sync_fetch_and_add(&c->calls, 1);
        __sync_fetch_and_add(&c->bytes, bytes);
    }
    return 0;
}

static __attribute__((always_inline)) int count_py_alloc(__u64 bytes)
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

static __attribute__((always_inline)) int count_py_free(__u64 ptr)
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
