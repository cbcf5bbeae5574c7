// SPDX-License-Identifier: MIT OR GPL-2.0
//
// pmt_bpf.h: what every BPF object of pmt-sample shares: the integer types, the section and
// map-declaration macros, the kernel helpers used (ids from include/uapi/linux/bpf.h), the
// registers uprobe programs see, and the target's ids as the loader sees them.
//
// Self-contained (no libbpf headers): clang alone builds the objects (dtrace/bpf/build.sh).

#ifndef PMT_BPF_H
#define PMT_BPF_H

typedef unsigned char __u8;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name
#define ALWAYS_INLINE static __attribute__((always_inline))

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_RINGBUF 27
#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_F_NO_PREALLOC 1
#define BPF_RB_NO_WAKEUP 1

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
                                   __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static __u32 (*bpf_get_prandom_u32)(void) = (void *)7;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static long (*bpf_probe_read_user)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)112;
struct bpf_pidns_info {
    __u32 pid;
    __u32 tgid;
};
static long (*bpf_get_ns_current_pid_tgid)(__u64 dev, __u64 ino, struct bpf_pidns_info *nsdata,
                                           __u32 size) = (void *)120;
static long (*bpf_ringbuf_output)(void *ringbuf, void *data, __u64 size, __u64 flags) = (void *)130;
static long (*bpf_loop)(__u32 nr_loops, void *callback_fn, void *callback_ctx, __u64 flags) = (void *)181;

// The user-visible register layout the kernel passes to uprobe and kprobe programs.
#if defined(__TARGET_ARCH_x86)
struct pt_regs {
    __u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di;
    __u64 orig_ax, ip, cs, flags, sp, ss;
};
#define ARG1(ctx) ((ctx)->di)
#define ARG2(ctx) ((ctx)->si)
#define ARG3(ctx) ((ctx)->dx)
#define RET(ctx) ((ctx)->ax)
#elif defined(__TARGET_ARCH_arm64)
struct pt_regs {
    __u64 regs[31];
    __u64 sp, pc, pstate;
};
#define ARG1(ctx) ((ctx)->regs[0])
#define ARG2(ctx) ((ctx)->regs[1])
#define ARG3(ctx) ((ctx)->regs[2])
#define RET(ctx) ((ctx)->regs[0])
#else
#error "define __TARGET_ARCH_x86 or __TARGET_ARCH_arm64"
#endif

// Set by the loader before the programs are verified. PIDNS_DEV and PIDNS_INO name the
// loader's PID namespace when it is not the initial one (a sidecar), so that process and
// thread ids are compared, and threads keyed, as the loader sees them.
const volatile __u64 PIDNS_DEV = 0;
const volatile __u64 PIDNS_INO = 0;

// The calling thread's process and thread id as the loader sees them; 0 when the thread is
// not in the loader's namespace.
ALWAYS_INLINE int loader_ids(__u32 *tgid, __u32 *tid)
{
    if (PIDNS_INO) {
        struct bpf_pidns_info ns = {};
        if (bpf_get_ns_current_pid_tgid(PIDNS_DEV, PIDNS_INO, &ns, sizeof(ns)))
            return -1;
        *tgid = ns.tgid;
        *tid = ns.pid;
    } else {
        __u64 id = bpf_get_current_pid_tgid();
        *tgid = (__u32)(id >> 32);
        *tid = (__u32)id;
    }
    return 0;
}

#endif
