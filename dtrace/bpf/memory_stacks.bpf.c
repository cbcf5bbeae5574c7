// SPDX-License-Identifier: MIT OR GPL-2.0
//
// memory_stacks.bpf.c: the Python stack of the code that acquired memory, captured in the
// kernel at the moment it did (SPEC §2.4), for pmt-sample's in-kernel attribution.
//
// Programs:
//   page faults (tracepoints exceptions:page_fault_user and page_fault_kernel, the latter for
//   pages a system call such as read() faults in on the process's behalf): walk the faulting
//   thread's Python frame chain and emit FAULT(page address, stack id);
//   transparent huge pages (tracepoint kmem:mm_page_alloc, allocations of their order): emit
//   HUGE_FAULT after the FAULT it belongs to;
//   anonymous mappings (mmap's syscall tracepoints): emit MMAP_ENTER(length, stack) and
//   MMAP_EXIT(address), so that user space charges the mapping's pages to the stack that made it;
//   munmap, madvise, brk, mremap (syscall tracepoints): emit the ranges the process gives
//   back or moves, so that user space can keep a ledger of which stack owns each page;
//   processes (tracepoints task:task_newtask, sched:sched_process_exec and _exit): a target's
//   child process is captured from its first page with the parent's layout and the forking
//   thread's thread state (EV_FORK); a target that execs or exits leaves PMT_PROCS (EV_EXEC,
//   EV_EXIT), and an exiting or exec'ing thread leaves the per-thread tables;
//   allocator uprobes (same program names as malloc_counters.bpf.c, so the same probe sites
//   apply): count every call's bytes per thread and, once a thread's bytes since its last
//   sample reach a randomised threshold (mean SAMPLE_BYTES), walk the stack and emit
//   ALLOC(stack id, bytes and calls since the thread's previous sample);
//   time (a run that weighs time, `cpu` and `wall`): a program on each CPU's clock (a perf
//   event per CPU, PERIOD ns of CPU time apart) walks the target thread it interrupts and
//   emits CPU_SAMPLE(stack); the scheduler's switch tracepoint walks a target thread leaving
//   its CPU (the stack it waits in, which cannot change until it runs again) into
//   PMT_OFF_CPU, and emits OFF_CPU(from, to, stack) when the thread is switched back in;
//   hardware watchpoints (perf breakpoint events on a container's size field, `pmt heap
//   --diff`): walk the writing thread's stack and count the write, and how much it moved the
//   size, per (watched address, stack id) in PMT_WATCH_HITS (no event: a loop appending
//   millions of times would fill any ring).
//
// The walk: the thread state of the calling thread comes from PMT_THREADS (filled by user space
// each sampler tick, and for a forked child's thread at the fork; a thread not there yet is
// looked up in its interpreter's thread list by its kernel thread id, so threads shorter than
// a tick are found too). From its innermost
// frame the chain is followed through `previous`/`f_back` with bpf_probe_read_user and the
// offsets user space hands over per process in PMT_PROCS (the same layouts the reader uses),
// recording (code object address, instruction position, code tag) triples, innermost first,
// at most MAX_DEPTH of them; 3.12+ shim frames are skipped, 3.14+ tag bits cleared. The faulting
// thread is stopped in the kernel while this runs, so its chain cannot change under the walk.
// A chain is identified by a 64-bit hash of its triples (0: no Python stack) and stored once in
// PMT_STACKS, where user space looks up ids it has not decoded yet. Consecutive events from the
// same innermost frame at the same instruction reuse the thread's last walk (PMT_LAST_WALK).
//
// Everything is filtered to the processes in PMT_PROCS (keys: tgid as the loader sees it).

#include "pmt_bpf.h"

typedef long long __s64;

#define MAX_DEPTH 128          // Python frames recorded per stack (innermost first)
#define MAX_VISITS 192         // frames visited per walk, shims included
#define MAX_THREAD_SCAN 64     // thread states looked at to find a new thread
#define FRAME_SPAN 256         // the window of a frame the walk reads its members from (user
                               // space refuses a layout with a member past it: FRAME_WINDOW)
#define MISS_TTL_NS 2000000ULL // how long a thread found in no thread list stays "not Python"
#define NEW_THREAD_NS 50000000ULL // how long a target's new thread is looked for at every event

// Flags of struct py_layout.
#define F_FRAME_OBJECTS 1      // <= 3.10: PyFrameObject chain, f_lasti is an int
#define F_CFRAME 2             // 3.11-3.12: tstate->cframe->current_frame
#define F_SHIMS 4              // 3.12+: frames owned by the C stack/interpreter are shims
#define F_TAGGED_CODE 8        // 3.14+: f_executable is a tagged _PyStackRef
#define F_NATIVE_ID 16         // tstate->native_thread_id holds the kernel tid (3.11+)

// Mirrors `BpfLayout` in src/memory/kernel_stacks.rs (its tests check every member against
// this object's BTF, and the F_* flags, EV_* kinds and T_* slots against this source).
struct py_layout {
    __u64 interp_head;          // address of the pointer to the first interpreter
    __u64 pidns_dev;            // the target's PID namespace, to match native thread ids
    __u64 pidns_ino;
    __u32 flags;
    __u32 interp_threads_head;
    __u32 tstate_next;
    __u32 tstate_frame;
    __u32 cframe_current_frame;
    __u32 tstate_native_id;     // native_thread_id, or glibc's tid in struct pthread (F_NATIVE_ID unset)
    __u32 tstate_thread_id;
    __u32 frame_back;
    __u32 frame_code;
    __u32 frame_lasti;
    __u32 frame_owner;
    __u32 first_shim_owner;
    __u32 code_tag;             // where the code object's tag lies (co_filename, co_name)
    __u32 code_tag_len;         // 8 or 16 bytes, XORed into the tag
};

// Mirrors `RawStack` in src/memory/kernel_stacks.rs (checked the same way).
struct py_stack {
    __u32 depth;
    __u32 truncated;
    __u64 code[MAX_DEPTH];
    __u64 pos[MAX_DEPTH];
    __u64 tag[MAX_DEPTH];       // each code object's tag, so that one freed before user space
                                // decodes the stack is not mistaken for what reused its memory
};

// Event kinds; mirrors `EventKind` in src/memory/kernel_stacks.rs.
#define EV_FAULT 1          // addr: faulted address, stack
#define EV_MUNMAP 2         // addr, len
#define EV_MADVISE 3        // addr, len, arg: advice
#define EV_BRK 4            // addr: the program break after brk()
#define EV_MREMAP_ENTER 5   // addr: old address, len: old length, arg: new length
#define EV_MREMAP_EXIT 6    // addr: the new address (or a negative error)
#define EV_ALLOC 7          // stack, len: bytes, arg: calls, since the thread's last sample
#define EV_HUGE_FAULT 8     // the thread's last fault mapped a transparent huge page
#define EV_MMAP_ENTER 9     // len: length of an anonymous mapping being made, stack
#define EV_MMAP_EXIT 10     // addr: the mapping's address (or a negative error)
#define EV_FORK 11          // addr: the new process, captured from its first page with the
                            // parent's layout (a fork copies the interpreter's memory)
#define EV_EXEC 12          // the process exec'd: its layout no longer applies and was dropped
#define EV_EXIT 13          // the process exited: it left PMT_PROCS
#define EV_CPU_SAMPLE 14    // the thread was on a CPU at a tick of the CPU clock: stack
#define EV_OFF_CPU 15       // the thread is back on a CPU: addr: when it left (ktime ns),
                            // len: when it came back, stack: where it waited

// Mirrors `RawEvent` in src/memory/kernel_stacks.rs, whose tests check every member against
// this object's BTF.
struct event {
    __u32 kind;
    __u32 tid;
    __u32 tgid;
    __u32 pad;
    __u64 addr;
    __u64 len;
    __u64 arg;
    __u64 stack;
};

// Unused by the programs: it puts struct event (only ever a local) in the object's BTF.
const volatile struct event EVENT_LAYOUT = {};

struct last_walk {
    __u64 frame;
    __u64 back;
    __u64 code;
    __u64 pos;
    __u64 stack;
};

struct alloc_sampler {
    __u64 bytes;
    __u64 calls;
    __u64 threshold;
};

struct walk_scratch {
    struct py_stack stack;
    __u8 frame[FRAME_SPAN];
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, struct py_layout);
} PMT_PROCS SEC(".maps");

// Kernel tid (loader's view) -> its PyThreadState address (even), or when it was last looked
// for in vain: (ktime << 2) | 1, or when it was made as a new thread of a target: (ktime << 2) | 3.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u32);
    __type(value, __u64);
} PMT_THREADS SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, __u64);
    __type(value, struct py_stack);
} PMT_STACKS SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u32);
    __type(value, struct last_walk);
} PMT_LAST_WALK SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u32);
    __type(value, struct alloc_sampler);
} PMT_SAMPLERS SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct walk_scratch);
} PMT_SCRATCH SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 16 << 20);
} PMT_EVENTS SEC(".maps");

// Mirrors `Tallies` in src/memory/kernel_stacks.rs: what went wrong, counted.
#define T_LOST_EVENTS 0     // the ring buffer was full
#define T_NO_THREAD 1       // a target thread that has no Python thread state
#define T_READ_FAILED 2     // a frame could not be read (walk recorded up to it)
#define T_STACKS_FULL 3     // PMT_STACKS was full: the event's stack is unknown
#define T_WALKS 4           // stack walks done
#define T_REUSED 5          // events that reused the thread's last walk
#define T_PROCS_FULL 6      // PMT_PROCS was full: a target's child is not captured
#define T_WATCH_FULL 7      // PMT_WATCH_HITS was full: a watchpoint hit is not counted
#define T_COUNT 8
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, T_COUNT);
    __type(key, __u32);
    __type(value, __u64);
} PMT_TALLIES SEC(".maps");

// Kernel thread id (the kernel's own, as the scheduler names it) -> the interval off a CPU it
// is in: filled when a target thread leaves its CPU, emptied when it comes back (and by user
// space, which charges intervals still open at the end and drops those of threads gone).
struct off_cpu {
    __u64 since;                // bpf_ktime_get_ns() when it left (CLOCK_MONOTONIC)
    __u64 stack;                // where it waits
    __u32 tid;                  // the thread and its process, as the loader sees them
    __u32 tgid;
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u32);
    __type(value, struct off_cpu);
} PMT_OFF_CPU SEC(".maps");

// Mean bytes between two allocation samples of a thread (0: every allocation is a sample).
const volatile __u64 SAMPLE_BYTES = 0;

ALWAYS_INLINE void tally(__u32 which)
{
    __u64 *n = bpf_map_lookup_elem(&PMT_TALLIES, &which);
    if (n)
        *n += 1;
}

ALWAYS_INLINE __u64 read_u64(__u64 addr)
{
    __u64 v = 0;
    if (bpf_probe_read_user(&v, sizeof(v), (const void *)addr))
        return 0;
    return v;
}

ALWAYS_INLINE __u64 field_u64(const __u8 *buf, __u32 off)
{
    __u64 v = 0;
    off &= FRAME_SPAN - 1;
    if (off + 8 > FRAME_SPAN)
        return 0;
    __builtin_memcpy(&v, buf + off, 8);
    return v;
}

// The scan of an interpreter's thread list for one kernel thread id (a bpf_loop step each).
struct scan_ctx {
    __u64 tstate;           // the thread state to look at next
    __u64 found;
    __u32 own;              // the kernel thread id, in the target's PID namespace
    __u32 native_id;        // tstate_native_id
    __u32 thread_id;        // tstate_thread_id
    __u32 next;             // tstate_next
    __u32 by_pthread;       // the tid is in glibc's struct pthread, not the thread state
};

static long scan_step(__u32 index, void *data)
{
    struct scan_ctx *c = data;
    if (!c->tstate)
        return 1;
    __u64 at = c->tstate + c->native_id;
    if (c->by_pthread)
        at = read_u64(c->tstate + c->thread_id) + c->native_id;
    __u32 native = 0;
    if (bpf_probe_read_user(&native, sizeof(native), (const void *)at) == 0 && native == c->own) {
        c->found = c->tstate;
        return 1;
    }
    c->tstate = read_u64(c->tstate + c->next);
    return 0;
}

// The thread state of thread `tid`, from PMT_THREADS or else its interpreter's thread list.
static __attribute__((noinline)) __u64 find_thread_state(const struct py_layout *l, __u32 tid)
{
    __u64 *known = bpf_map_lookup_elem(&PMT_THREADS, &tid);
    __u64 now = bpf_ktime_get_ns();
    __u32 fresh = 0;
    if (known) {
        __u64 value = *known;
        if (!(value & 1))
            return value;
        // A remembered miss holds for MISS_TTL_NS (a thread Python does not know costs one scan
        // per MISS_TTL_NS, not one per event). A new thread is looked for at every event for
        // NEW_THREAD_NS instead: its first events come before its interpreter has bound its
        // thread state, and it is found from the first event after.
        if ((value & 3) == 1 && now - (value >> 2) < MISS_TTL_NS)
            return 0;
        fresh = (value & 3) == 3 && now - (value >> 2) < NEW_THREAD_NS;
    }
    struct scan_ctx c = {
        .own = tid,
        .native_id = l->tstate_native_id,
        .thread_id = l->tstate_thread_id,
        .next = l->tstate_next,
        .by_pthread = !(l->flags & F_NATIVE_ID),
    };
    if (l->pidns_ino) {
        struct bpf_pidns_info ns = {};
        if (bpf_get_ns_current_pid_tgid(l->pidns_dev, l->pidns_ino, &ns, sizeof(ns)) == 0)
            c.own = ns.pid;
    }
    __u64 interp = read_u64(l->interp_head);
    c.tstate = interp ? read_u64(interp + l->interp_threads_head) : 0;
    bpf_loop(MAX_THREAD_SCAN, scan_step, &c, 0);
    // A miss is remembered for a while (a thread Python does not know, or not yet), except
    // for a new thread, still looked for at its next event.
    if (c.found || !fresh) {
        __u64 value = c.found ? c.found : (now << 2) | 1;
        bpf_map_update_elem(&PMT_THREADS, &tid, &value, BPF_ANY);
    }
    return c.found;
}

ALWAYS_INLINE __u64 innermost_frame(const struct py_layout *l, __u64 tstate)
{
    __u64 frame = read_u64(tstate + l->tstate_frame);
    if ((l->flags & F_CFRAME) && frame)
        frame = read_u64(frame + l->cframe_current_frame);
    return frame;
}

ALWAYS_INLINE __u64 mix(__u64 h, __u64 v)
{
    h ^= v;
    h *= 0x100000001b3ULL;
    h ^= h >> 29;
    return h;
}

// The walk's state between two steps (bpf_loop calls walk_step once per frame visited).
struct walk_ctx {
    __u64 frame;            // the next frame to visit
    __u64 hash;
    __u64 last_frame, last_back, last_code, last_pos, last_stack;  // the thread's last walk
    __u64 first_frame, first_back, first_code, first_pos;          // this walk's innermost
    __u32 span;
    __u32 flags;
    __u32 frame_back, frame_code, frame_lasti, frame_owner, first_shim_owner;
    __u32 code_tag, code_tag_len;
    __u32 has_last;
    __u32 reused;
    __u32 failed;
};

static long walk_step(__u32 index, void *data)
{
    struct walk_ctx *c = data;
    __u32 zero = 0;
    struct walk_scratch *s = bpf_map_lookup_elem(&PMT_SCRATCH, &zero);
    if (!s || !c->frame)
        return 1;
    __u32 span = c->span;
    if (span > FRAME_SPAN)
        span = FRAME_SPAN;
    if (bpf_probe_read_user(s->frame, span, (const void *)c->frame)) {
        c->failed = 1;
        return 1;
    }
    __u64 back = field_u64(s->frame, c->frame_back);
    __u64 code = field_u64(s->frame, c->frame_code);
    if ((c->flags & F_SHIMS) && s->frame[c->frame_owner & (FRAME_SPAN - 1)] >= c->first_shim_owner) {
        c->frame = back;
        return 0;
    }
    if (c->flags & F_TAGGED_CODE)
        code &= ~3ULL;
    if (!code) {
        // An innermost interpreter frame without code is being pushed or popped.
        if (s->stack.depth == 0 && !(c->flags & F_FRAME_OBJECTS)) {
            c->frame = back;
            return 0;
        }
        return 1;
    }
    __u64 pos;
    if (c->flags & F_FRAME_OBJECTS)
        pos = (__u64)(__s32)(__u32)field_u64(s->frame, c->frame_lasti);
    else
        pos = field_u64(s->frame, c->frame_lasti);
    // The depth lives in the map value: the verifier does not track it there, so the loop's
    // states converge (a stack slot would be tracked exactly, one state per depth).
    __u32 depth = s->stack.depth;
    if (depth == 0) {
        if (c->has_last && c->last_frame == c->frame && c->last_back == back &&
            c->last_code == code && c->last_pos == pos) {
            c->reused = 1;
            return 1;
        }
        c->first_frame = c->frame;
        c->first_back = back;
        c->first_code = code;
        c->first_pos = pos;
    }
    if (depth >= MAX_DEPTH) {
        s->stack.truncated = 1;
        return 1;
    }
    __u64 words[2] = {0, 0};
    if (bpf_probe_read_user(words, c->code_tag_len == 16 ? 16 : 8,
                            (const void *)(code + c->code_tag))) {
        c->failed = 1;
        return 1;
    }
    __u64 tag = words[0] ^ words[1];
    s->stack.code[depth & (MAX_DEPTH - 1)] = code;
    s->stack.pos[depth & (MAX_DEPTH - 1)] = pos;
    s->stack.tag[depth & (MAX_DEPTH - 1)] = tag;
    c->hash = mix(mix(mix(c->hash, code), pos), tag);
    s->stack.depth = depth + 1;
    c->frame = back;
    return 0;
}

// The stack id of thread `tid`'s Python stack now (0: none, or not readable).
static __attribute__((noinline)) __u64 walk_stack(const struct py_layout *l, __u32 tid)
{
    __u64 tstate = find_thread_state(l, tid);
    if (!tstate) {
        tally(T_NO_THREAD);
        return 0;
    }
    __u32 zero = 0;
    struct walk_scratch *s = bpf_map_lookup_elem(&PMT_SCRATCH, &zero);
    if (!s)
        return 0;
    struct walk_ctx c = {
        .frame = innermost_frame(l, tstate),
        .hash = 0xcbf29ce484222325ULL,
        .flags = l->flags,
        .frame_back = l->frame_back,
        .frame_code = l->frame_code,
        .frame_lasti = l->frame_lasti,
        .frame_owner = l->frame_owner,
        .first_shim_owner = l->first_shim_owner,
        .code_tag = l->code_tag,
        .code_tag_len = l->code_tag_len,
    };
    if (!c.frame)
        return 0;
    __u32 span = l->frame_owner + 8;
    if (l->frame_lasti + 8 > span)
        span = l->frame_lasti + 8;
    if (l->frame_back + 8 > span)
        span = l->frame_back + 8;
    if (l->frame_code + 8 > span)
        span = l->frame_code + 8;
    c.span = span;
    struct last_walk *last = bpf_map_lookup_elem(&PMT_LAST_WALK, &tid);
    if (last) {
        c.has_last = 1;
        c.last_frame = last->frame;
        c.last_back = last->back;
        c.last_code = last->code;
        c.last_pos = last->pos;
        c.last_stack = last->stack;
    }
    s->stack.truncated = 0;
    s->stack.depth = 0;
    bpf_loop(MAX_VISITS, walk_step, &c, 0);
    __u32 depth = s->stack.depth;
    if (c.reused) {
        tally(T_REUSED);
        return c.last_stack;
    }
    tally(T_WALKS);
    if (c.failed)
        tally(T_READ_FAILED);
    if (depth == 0)
        return 0;
    __u64 hash = mix(c.hash, depth);
    if (hash == 0)
        hash = 1;
    if (!bpf_map_lookup_elem(&PMT_STACKS, &hash) &&
        bpf_map_update_elem(&PMT_STACKS, &hash, &s->stack, BPF_NOEXIST) &&
        !bpf_map_lookup_elem(&PMT_STACKS, &hash)) {
        tally(T_STACKS_FULL);
        hash = 0;
    }
    struct last_walk next = {.frame = c.first_frame, .back = c.first_back, .code = c.first_code,
                             .pos = c.first_pos, .stack = hash};
    bpf_map_update_elem(&PMT_LAST_WALK, &tid, &next, BPF_ANY);
    return hash;
}

ALWAYS_INLINE int emit(__u32 kind, __u32 tgid, __u32 tid, __u64 addr, __u64 len, __u64 arg,
                       __u64 stack)
{
    struct event e = {.kind = kind, .tid = tid, .tgid = tgid, .addr = addr, .len = len,
                      .arg = arg, .stack = stack};
    // Adaptive wake-up (flags 0): the reader is woken only by the first event after it
    // caught up, so a reader with nothing to drain can wait on the ring instead of ticking.
    if (bpf_ringbuf_output(&PMT_EVENTS, &e, sizeof(e), 0))
        tally(T_LOST_EVENTS);
    return 0;
}

// The target's layout when the calling thread belongs to a target process.
ALWAYS_INLINE const struct py_layout *target(__u32 *tgid, __u32 *tid)
{
    if (loader_ids(tgid, tid))
        return 0;
    return bpf_map_lookup_elem(&PMT_PROCS, tgid);
}

// --- page faults ---------------------------------------------------------------------------

struct fault_args {
    __u64 common;
    __u64 address;
    __u64 ip;
    __u64 error_code;
};

ALWAYS_INLINE int on_fault(struct fault_args *args)
{
    __u32 tgid, tid;
    const struct py_layout *l = target(&tgid, &tid);
    if (!l)
        return 0;
    __u64 stack = walk_stack(l, tid);
    return emit(EV_FAULT, tgid, tid, args->address, 0, args->error_code, stack);
}

SEC("tracepoint/exceptions/page_fault_user")
int pmt_fault_user(struct fault_args *args) { return on_fault(args); }

SEC("tracepoint/exceptions/page_fault_kernel")
int pmt_fault_kernel(struct fault_args *args) { return on_fault(args); }

// A fault in a region that may use transparent huge pages (numpy madvises its large arrays
// MADV_HUGEPAGE) maps a whole huge page at once. The kernel allocates it in the faulting
// thread, after the fault's tracepoint: an allocation of the huge page's order with the
// flags of a transparent huge page (__GFP_COMP | __GFP_MOVABLE) from a target thread emits
// HUGE_FAULT, and user space gives the whole huge page around the thread's last fault to that
// fault's owner. (A read fault there maps the shared huge zero page, which user space tells by
// the fault's error code.) HUGE_ORDER is set by the loader (0: not watched).
const volatile __u32 HUGE_ORDER = 0;

#define GFP_MOVABLE (1UL << 3)
#define GFP_COMP (1UL << 18)

struct page_alloc_args {  // kmem:mm_page_alloc's format
    __u64 common;
    __u64 pfn;
    __u32 order;
    __u32 pad;
    __u64 gfp_flags;
    __s32 migratetype;
};

SEC("tracepoint/kmem/mm_page_alloc")
int pmt_huge_fault(struct page_alloc_args *a)
{
    if (!HUGE_ORDER || a->order != HUGE_ORDER || a->pfn == (__u64)-1 ||
        (a->gfp_flags & (GFP_MOVABLE | GFP_COMP)) != (GFP_MOVABLE | GFP_COMP))
        return 0;
    __u32 tgid, tid;
    if (!target(&tgid, &tid))
        return 0;
    return emit(EV_HUGE_FAULT, tgid, tid, 0, 0, a->order, 0);
}

// --- processes -------------------------------------------------------------------------

struct newtask_args {  // task:task_newtask's format
    __u64 common;
    __s32 pid;
    char comm[16];
    __u32 pad;
    __u64 clone_flags;
};

#define CLONE_THREAD 0x10000

// A target's new process (not a thread) is captured from its first page: a fork copies the
// interpreter's memory, so the parent's layout walks the child's frames. A target's new thread
// is marked new in PMT_THREADS (see find_thread_state). The new task's id is the initial
// namespace's: with a loader in another namespace children and threads are left to user space.
SEC("tracepoint/task/task_newtask")
int pmt_fork(struct newtask_args *a)
{
    if (PIDNS_INO)
        return 0;
    __u32 tgid, tid;
    const struct py_layout *l = target(&tgid, &tid);
    if (!l)
        return 0;
    __u32 child = (__u32)a->pid;
    if (a->clone_flags & CLONE_THREAD) {
        __u64 made = (bpf_ktime_get_ns() << 2) | 3;
        bpf_map_update_elem(&PMT_THREADS, &child, &made, BPF_ANY);
        return 0;
    }
    struct py_layout copy = *l;
    if (bpf_map_update_elem(&PMT_PROCS, &child, &copy, BPF_NOEXIST)) {
        tally(T_PROCS_FULL);
        return 0;
    }
    // The child's only thread is a copy of the forking one: its thread state lies at the same
    // address, its frames are the forking thread's until it returns from fork. Known from its
    // first page, without waiting for the interpreter to write the child's native id into it.
    __u64 tstate = find_thread_state(l, tid);
    if (tstate)
        bpf_map_update_elem(&PMT_THREADS, &child, &tstate, BPF_ANY);
    return emit(EV_FORK, tgid, tid, child, 0, 0, 0);
}

struct exec_args {  // sched:sched_process_exec's format
    __u64 common;
    __u32 filename;
    __s32 pid;
    __s32 old_pid;
};

// An exec replaces the interpreter: the layout no longer applies, nor does what the per-thread
// tables hold for the exec'ing thread (under its id before and after: a thread other than the
// leader takes the leader's id), which a new image added later must not find.
SEC("tracepoint/sched/sched_process_exec")
int pmt_exec(struct exec_args *a)
{
    __u32 tgid, tid;
    if (!target(&tgid, &tid))
        return 0;
    bpf_map_delete_elem(&PMT_PROCS, &tgid);
    bpf_map_delete_elem(&PMT_THREADS, &tid);
    bpf_map_delete_elem(&PMT_LAST_WALK, &tid);
    bpf_map_delete_elem(&PMT_SAMPLERS, &tid);
    __u32 old = (__u32)a->old_pid;
    if (!PIDNS_INO && old != tid) {
        bpf_map_delete_elem(&PMT_THREADS, &old);
        bpf_map_delete_elem(&PMT_LAST_WALK, &old);
        bpf_map_delete_elem(&PMT_SAMPLERS, &old);
    }
    return emit(EV_EXEC, tgid, tid, 0, 0, 0, 0);
}

// An exiting thread of a target leaves the per-thread tables; the process leaves PMT_PROCS
// when its main thread exits.
SEC("tracepoint/sched/sched_process_exit")
int pmt_exit(void *a)
{
    __u32 tgid, tid;
    if (!target(&tgid, &tid))
        return 0;
    bpf_map_delete_elem(&PMT_THREADS, &tid);
    bpf_map_delete_elem(&PMT_LAST_WALK, &tid);
    bpf_map_delete_elem(&PMT_SAMPLERS, &tid);
    if (tid != tgid)
        return 0;
    bpf_map_delete_elem(&PMT_PROCS, &tgid);
    return emit(EV_EXIT, tgid, tid, 0, 0, 0, 0);
}

// --- time: on-CPU samples and off-CPU intervals -------------------------------------------

// A tick of a CPU's clock (one perf event per CPU, every PERIOD ns): the thread it interrupts
// is on that CPU. (The kernel runs no perf-event program while a tracepoint's program runs on
// the same CPU, so the per-CPU scratch of a walk is never shared.)
SEC("perf_event")
int pmt_cpu_sample(void *ctx)
{
    __u32 tgid, tid;
    const struct py_layout *l = target(&tgid, &tid);
    if (!l)
        return 0;
    // A thread on a CPU is in no interval off CPUs: one user space opened for it as it ran
    // (not knowing it did) is dropped.
    __u32 self = (__u32)bpf_get_current_pid_tgid();
    bpf_map_delete_elem(&PMT_OFF_CPU, &self);
    return emit(EV_CPU_SAMPLE, tgid, tid, 0, 0, 0, walk_stack(l, tid));
}

struct switch_args {  // sched:sched_switch's format
    __u64 common;
    char prev_comm[16];
    __s32 prev_pid;
    __s32 prev_prio;
    __s64 prev_state;
    char next_comm[16];
    __s32 next_pid;
    __s32 next_prio;
};

#define EXIT_STATES 0x30    // the reported prev_state of a thread leaving for good (X, Z)

// Runs in the thread leaving the CPU (`prev`, whose memory is the current one): a target
// thread's stack is walked as it leaves, and its interval charged when `next` comes back.
SEC("tracepoint/sched/sched_switch")
int pmt_switch(struct switch_args *a)
{
    __u64 now = bpf_ktime_get_ns();
    __u32 next = (__u32)a->next_pid;
    struct off_cpu *back = bpf_map_lookup_elem(&PMT_OFF_CPU, &next);
    if (back) {
        emit(EV_OFF_CPU, back->tgid, back->tid, back->since, now, 0, back->stack);
        bpf_map_delete_elem(&PMT_OFF_CPU, &next);
    }
    if (a->prev_state & EXIT_STATES)
        return 0;
    __u32 tgid, tid;
    const struct py_layout *l = target(&tgid, &tid);
    if (!l)
        return 0;
    __u32 prev = (__u32)a->prev_pid;
    struct off_cpu away = {.since = now, .stack = walk_stack(l, tid), .tid = tid, .tgid = tgid};
    bpf_map_update_elem(&PMT_OFF_CPU, &prev, &away, BPF_ANY);
    return 0;
}

// --- what gives pages back -----------------------------------------------------------------

struct syscall_enter_args {
    __u64 common;
    __s32 nr;
    __u32 pad;
    __u64 args[6];
};

struct syscall_exit_args {
    __u64 common;
    __s32 nr;
    __u32 pad;
    long ret;
};

SEC("tracepoint/syscalls/sys_enter_munmap")
int pmt_munmap(struct syscall_enter_args *a)
{
    __u32 tgid, tid;
    if (!target(&tgid, &tid))
        return 0;
    return emit(EV_MUNMAP, tgid, tid, a->args[0], a->args[1], 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_madvise")
int pmt_madvise(struct syscall_enter_args *a)
{
    __u32 tgid, tid;
    if (!target(&tgid, &tid))
        return 0;
    __u64 advice = a->args[2];
    // MADV_DONTNEED, MADV_FREE, MADV_REMOVE, MADV_DONTNEED_LOCKED: the range's pages go.
    if (advice != 4 && advice != 8 && advice != 9 && advice != 24)
        return 0;
    return emit(EV_MADVISE, tgid, tid, a->args[0], a->args[1], advice, 0);
}

// Anonymous private read-write mappings (malloc's large blocks; user space sets pymalloc's
// arenas apart by their size) belong to the stack that made them: their pages, whoever touches them first, are charged to it (memray
// charges allocations where they are made). Thread stacks (MAP_STACK), reservations (no access,
// MAP_NORESERVE: glibc's per-thread heaps) and shared mappings are left to their faults.
#define MAP_SHARED 0x01
#define MAP_ANONYMOUS 0x20
#define MAP_NORESERVE 0x4000
#define MAP_STACK 0x20000

SEC("tracepoint/syscalls/sys_enter_mmap")
int pmt_mmap_enter(struct syscall_enter_args *a)
{
    __u32 tgid, tid;
    const struct py_layout *l = target(&tgid, &tid);
    if (!l)
        return 0;
    __u64 prot = a->args[2], flags = a->args[3];
    if (!(flags & MAP_ANONYMOUS) || (flags & (MAP_SHARED | MAP_NORESERVE | MAP_STACK)) || !prot)
        return 0;
    return emit(EV_MMAP_ENTER, tgid, tid, 0, a->args[1], 0, walk_stack(l, tid));
}

SEC("tracepoint/syscalls/sys_exit_mmap")
int pmt_mmap_exit(struct syscall_exit_args *a)
{
    __u32 tgid, tid;
    if (!target(&tgid, &tid))
        return 0;
    return emit(EV_MMAP_EXIT, tgid, tid, (__u64)a->ret, 0, 0, 0);
}

SEC("tracepoint/syscalls/sys_exit_brk")
int pmt_brk(struct syscall_exit_args *a)
{
    __u32 tgid, tid;
    if (!target(&tgid, &tid))
        return 0;
    return emit(EV_BRK, tgid, tid, (__u64)a->ret, 0, 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_mremap")
int pmt_mremap_enter(struct syscall_enter_args *a)
{
    __u32 tgid, tid;
    if (!target(&tgid, &tid))
        return 0;
    return emit(EV_MREMAP_ENTER, tgid, tid, a->args[0], a->args[1], a->args[2], 0);
}

SEC("tracepoint/syscalls/sys_exit_mremap")
int pmt_mremap_exit(struct syscall_exit_args *a)
{
    __u32 tgid, tid;
    if (!target(&tgid, &tid))
        return 0;
    return emit(EV_MREMAP_EXIT, tgid, tid, (__u64)a->ret, 0, 0, 0);
}

// --- allocation-time stacks ----------------------------------------------------------------

// CPython's SMALL_REQUEST_THRESHOLD: larger pymalloc requests reach libc malloc and are
// counted there (as in malloc_counters.bpf.c).
#define PYMALLOC_THRESHOLD 512

ALWAYS_INLINE __u64 next_threshold(void)
{
    // Uniform in [SAMPLE_BYTES/2, 3*SAMPLE_BYTES/2): the mean is SAMPLE_BYTES, and the
    // jitter keeps a periodic allocation pattern from always sampling the same call.
    __u64 half = SAMPLE_BYTES / 2;
    return half + (SAMPLE_BYTES ? (bpf_get_prandom_u32() % (SAMPLE_BYTES | 1)) : 0);
}

ALWAYS_INLINE int sample_alloc(__u64 bytes)
{
    __u32 tgid, tid;
    const struct py_layout *l = target(&tgid, &tid);
    if (!l)
        return 0;
    struct alloc_sampler *s = bpf_map_lookup_elem(&PMT_SAMPLERS, &tid);
    if (!s) {
        struct alloc_sampler fresh = {.threshold = next_threshold()};
        bpf_map_update_elem(&PMT_SAMPLERS, &tid, &fresh, BPF_NOEXIST);
        s = bpf_map_lookup_elem(&PMT_SAMPLERS, &tid);
        if (!s)
            return 0;
    }
    s->bytes += bytes;
    s->calls += 1;
    if (s->bytes < s->threshold)
        return 0;
    __u64 taken = s->bytes, calls = s->calls;
    s->bytes = 0;
    s->calls = 0;
    s->threshold = next_threshold();
    __u64 stack = walk_stack(l, tid);
    return emit(EV_ALLOC, tgid, tid, 0, taken, calls, stack);
}

ALWAYS_INLINE int sample_py_alloc(__u64 bytes)
{
    return bytes > PYMALLOC_THRESHOLD ? 0 : sample_alloc(bytes);
}

SEC("uprobe") int pmt_malloc(struct pt_regs *ctx) { return sample_alloc(ARG1(ctx)); }
SEC("uprobe") int pmt_calloc(struct pt_regs *ctx) { return sample_alloc(ARG1(ctx) * ARG2(ctx)); }
SEC("uprobe") int pmt_realloc(struct pt_regs *ctx) { return sample_alloc(ARG2(ctx)); }
SEC("uprobe") int pmt_posix_memalign(struct pt_regs *ctx) { return sample_alloc(ARG3(ctx)); }
SEC("uprobe") int pmt_aligned_alloc(struct pt_regs *ctx) { return sample_alloc(ARG2(ctx)); }
SEC("uprobe") int pmt_py_malloc(struct pt_regs *ctx) { return sample_py_alloc(ARG1(ctx)); }
SEC("uprobe") int pmt_py_calloc(struct pt_regs *ctx) { return sample_py_alloc(ARG1(ctx) * ARG2(ctx)); }
SEC("uprobe") int pmt_py_realloc(struct pt_regs *ctx) { return sample_py_alloc(ARG2(ctx)); }
SEC("uprobe") int pmt_py_impl_malloc(struct pt_regs *ctx) { return sample_py_alloc(ARG2(ctx)); }
SEC("uprobe") int pmt_py_impl_calloc(struct pt_regs *ctx) { return sample_py_alloc(ARG2(ctx) * ARG3(ctx)); }
SEC("uprobe") int pmt_py_impl_realloc(struct pt_regs *ctx) { return sample_py_alloc(ARG3(ctx)); }

// --- hardware watchpoints ------------------------------------------------------------------

// Mirrors `WatchKey` and `WatchCount` in src/memory/watchpoints.rs.
struct watch_key {
    __u64 addr;                 // the watched size field
    __u64 stack;                // the writing thread's stack id (0: none)
};

struct watch_count {
    __u64 writes;               // hits: writes to the field
    __u64 grew;                 // writes that made the size larger
    __u64 added;                // the sum of what those added
    __u64 removed;              // the sum of what the others took away
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16384);
    __type(key, struct watch_key);
    __type(value, struct watch_count);
} PMT_WATCH_HITS SEC(".maps");

// Watched address -> the size it last held (seeded by user space when the watch starts).
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, __u64);
    __type(value, __s64);
} PMT_WATCH_LAST SEC(".maps");

// Mirrors `WatchIdentity` in src/memory/watchpoints.rs: which object a watched size field
// belongs to, so that writes made after it was freed (by whatever reuses its memory) are not
// charged to it. It is gone once a write finds its type pointer changed, its reference count
// at 0 (a deque's dealloc empties it), or, for a container that is on the collector's lists
// from creation to dealloc (a list, a deque), its GC link cleared (untracked: deallocated, or
// a new object at the same address not yet tracked).
struct watch_identity {
    __u64 object;               // the holder's address (its reference count)
    __u64 type;                 // its type pointer when watching began
    __u64 type_at;              // where its type pointer lies
    __u64 gc_next_at;           // where its GC link lies (0: not checked)
    __u64 gone;                 // writes seen since it went (0: still there)
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, __u64);
    __type(value, struct watch_identity);
} PMT_WATCH_IDENTITY SEC(".maps");

// Whether the holder of a watched field is gone (and then counts the write as after it).
ALWAYS_INLINE int holder_gone(__u64 addr)
{
    struct watch_identity *id = bpf_map_lookup_elem(&PMT_WATCH_IDENTITY, &addr);
    if (!id)
        return 0;
    if (!id->gone) {
        // The low 32 bits are the count in 3.12+ (flags share the word); 0 means freed.
        __u32 refcnt = (__u32)read_u64(id->object);
        if (read_u64(id->type_at) == id->type && refcnt != 0 &&
            (!id->gc_next_at || read_u64(id->gc_next_at) != 0))
            return 0;
    }
    __sync_fetch_and_add(&id->gone, 1);
    return 1;
}

// What a perf_event program sees (struct bpf_perf_event_data): the user registers, then the
// sample period and address (a breakpoint's: the watched address).
struct perf_event_ctx {
    struct pt_regs regs;
    __u64 sample_period;
    __u64 addr;
};

// A data breakpoint traps after the write, in the writing thread: its Python frames are
// those of the code that wrote, the C function it called still running.
SEC("perf_event")
int pmt_watch(struct perf_event_ctx *ctx)
{
    __u32 tgid, tid;
    const struct py_layout *l = target(&tgid, &tid);
    if (!l)
        return 0;
    __u64 addr = ctx->addr;
    if (holder_gone(addr))
        return 0;
    __s64 now = (__s64)read_u64(addr);
    struct watch_key key = {.addr = addr, .stack = walk_stack(l, tid)};
    __s64 before = now;
    __s64 *last = bpf_map_lookup_elem(&PMT_WATCH_LAST, &addr);
    if (last) {
        before = *last;
        *last = now;
    } else {
        bpf_map_update_elem(&PMT_WATCH_LAST, &addr, &now, BPF_ANY);
    }
    struct watch_count *c = bpf_map_lookup_elem(&PMT_WATCH_HITS, &key);
    if (!c) {
        struct watch_count fresh = {};
        bpf_map_update_elem(&PMT_WATCH_HITS, &key, &fresh, BPF_NOEXIST);
        c = bpf_map_lookup_elem(&PMT_WATCH_HITS, &key);
        if (!c) {
            tally(T_WATCH_FULL);
            return 0;
        }
    }
    __sync_fetch_and_add(&c->writes, 1);
    if (now > before) {
        __sync_fetch_and_add(&c->grew, 1);
        __sync_fetch_and_add(&c->added, (__u64)(now - before));
    } else if (now < before) {
        __sync_fetch_and_add(&c->removed, (__u64)(before - now));
    }
    return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
