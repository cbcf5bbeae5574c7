//! Hooks that do nothing, for bench/heap_hook_cost.py: the floor under the heap view's hook.
//! - An empty reference tracer (3.13+): what CPython itself spends calling any tracer at every
//!   object's creation and destruction, the floor of following objects recycled through free
//!   lists with `PyRefTracer_SetTracer`.
//! - Pass-through allocator wrappers (PEP 445, the raw, mem and object domains), each calling
//!   the allocator it wraps and nothing else: the floor of any allocator hook, on an
//!   interpreter that calls its own allocator inlined while it is the one installed.
//!
//! Built by the bench with `rustc --crate-type cdylib`; loaded by the workload's wrapper with
//! `ctypes.PyDLL(...)`, whose calls hold the GIL.

use std::ffi::{c_char, c_int, c_void};

unsafe extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

type RefTracer = unsafe extern "C" fn(*mut c_void, c_int, *mut c_void) -> c_int;
type SetRefTracer = unsafe extern "C" fn(Option<RefTracer>, *mut c_void) -> c_int;

/// `PyMemAllocatorEx`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Allocator {
    ctx: *mut c_void,
    malloc: unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
    calloc: unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void,
    realloc: unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void,
    free: unsafe extern "C" fn(*mut c_void, *mut c_void),
}

type GetAllocator = unsafe extern "C" fn(c_int, *mut Allocator);
type SetAllocator = unsafe extern "C" fn(c_int, *mut Allocator);

/// The wrapped allocators, one per domain, filled before the wrappers are installed.
static mut WRAPPED: [Option<Allocator>; 3] = [None; 3];

unsafe extern "C" fn empty(_obj: *mut c_void, _event: c_int, _data: *mut c_void) -> c_int {
    0
}

fn wrapped<const D: usize>() -> Allocator {
    // SAFETY: written once, with the GIL held, before the wrappers that read it are installed.
    unsafe { (*(&raw const WRAPPED))[D].unwrap() }
}

unsafe extern "C" fn pass_malloc<const D: usize>(_: *mut c_void, size: usize) -> *mut c_void {
    let a = wrapped::<D>();
    // SAFETY: passing the call through to the allocator it was made to.
    unsafe { (a.malloc)(a.ctx, size) }
}

unsafe extern "C" fn pass_calloc<const D: usize>(_: *mut c_void, n: usize, size: usize) -> *mut c_void {
    let a = wrapped::<D>();
    // SAFETY: as above.
    unsafe { (a.calloc)(a.ctx, n, size) }
}

unsafe extern "C" fn pass_realloc<const D: usize>(
    _: *mut c_void,
    ptr: *mut c_void,
    size: usize,
) -> *mut c_void {
    let a = wrapped::<D>();
    // SAFETY: as above.
    unsafe { (a.realloc)(a.ctx, ptr, size) }
}

unsafe extern "C" fn pass_free<const D: usize>(_: *mut c_void, ptr: *mut c_void) {
    let a = wrapped::<D>();
    // SAFETY: as above.
    unsafe { (a.free)(a.ctx, ptr) }
}

/// Installs the empty tracer; -1 where the interpreter has no `PyRefTracer_SetTracer`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pmt_bench_install_empty_tracer() -> c_int {
    // SAFETY: looked up among the process's global symbols (the interpreter's), called with
    // the GIL held as its documentation asks.
    unsafe {
        let set = dlsym(std::ptr::null_mut(), c"PyRefTracer_SetTracer".as_ptr());
        if set.is_null() {
            return -1;
        }
        let set: SetRefTracer = std::mem::transmute(set);
        set(Some(empty), std::ptr::null_mut())
    }
}

/// Wraps the three allocator domains in pass-through wrappers; -1 if the API is missing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pmt_bench_install_pass_through_allocators() -> c_int {
    // SAFETY: PEP 445's functions, called with the GIL held; each domain's wrapped allocator
    // is stored before its wrapper is installed.
    unsafe {
        let get = dlsym(std::ptr::null_mut(), c"PyMem_GetAllocator".as_ptr());
        let set = dlsym(std::ptr::null_mut(), c"PyMem_SetAllocator".as_ptr());
        if get.is_null() || set.is_null() {
            return -1;
        }
        let get: GetAllocator = std::mem::transmute(get);
        let set: SetAllocator = std::mem::transmute(set);
        let wrappers = [
            (pass_malloc::<0> as _, pass_calloc::<0> as _, pass_realloc::<0> as _, pass_free::<0> as _),
            (pass_malloc::<1> as _, pass_calloc::<1> as _, pass_realloc::<1> as _, pass_free::<1> as _),
            (pass_malloc::<2> as _, pass_calloc::<2> as _, pass_realloc::<2> as _, pass_free::<2> as _),
        ];
        for (domain, (malloc, calloc, realloc, free)) in wrappers.into_iter().enumerate() {
            let mut original = std::mem::MaybeUninit::<Allocator>::uninit();
            get(domain as c_int, original.as_mut_ptr());
            (*(&raw mut WRAPPED))[domain] = Some(original.assume_init());
            let mut wrapper = Allocator { ctx: std::ptr::null_mut(), malloc, calloc, realloc, free };
            set(domain as c_int, &mut wrapper);
        }
        0
    }
}
