//! `pymemtrace.cMemLeak`: objects that hold a block allocated through one specific allocator
//! (C `malloc`, `PyMem_RawMalloc`, `PyMem_Malloc`) until they are deleted, so tests of every
//! tool here can make allocations they know the size and allocator of.
//!
//! Unlike pymemtrace 0.4.0 the block is filled with zeros, so its pages are resident and the
//! allocation shows in RSS (an untouched block would only reserve address space).

use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::prelude::*;

/// Which allocator a block came from.
#[derive(Clone, Copy)]
enum Allocator {
    C,
    PyRaw,
    Py,
}

/// A block of memory, freed by the allocator that made it.
struct Block {
    allocator: Allocator,
    size: usize,
    ptr: usize,
}

impl Block {
    fn new(allocator: Allocator, size: isize) -> PyResult<Self> {
        let size = usize::try_from(size)
            .map_err(|_| PyValueError::new_err("size must not be negative"))?
            .max(1);
        // SAFETY: plain allocation calls; the GIL is held for the PyMem ones (PyO3 methods).
        let ptr = unsafe {
            match allocator {
                Allocator::C => libc::malloc(size),
                Allocator::PyRaw => pyo3::ffi::PyMem_RawMalloc(size),
                Allocator::Py => pyo3::ffi::PyMem_Malloc(size),
            }
        };
        if ptr.is_null() {
            return Err(PyMemoryError::new_err(format!(
                "Can not allocate {size} bytes"
            )));
        }
        // SAFETY: `ptr` points to `size` writable bytes.
        unsafe { std::ptr::write_bytes(ptr.cast::<u8>(), 0, size) };
        Ok(Block {
            allocator,
            size,
            ptr: ptr as usize,
        })
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let ptr = self.ptr as *mut libc::c_void;
        // SAFETY: freed once, by the allocator that made it. PyO3 drops pyclass contents with
        // the GIL held (tp_dealloc), as PyMem_Free requires.
        unsafe {
            match self.allocator {
                Allocator::C => libc::free(ptr),
                Allocator::PyRaw => pyo3::ffi::PyMem_RawFree(ptr),
                Allocator::Py => pyo3::ffi::PyMem_Free(ptr),
            }
        }
    }
}

macro_rules! block_class {
    ($name:ident, $pyname:literal, $allocator:expr, $doc:literal) => {
        #[doc = $doc]
        #[pyclass(frozen, module = "cMemLeak", name = $pyname, subclass)]
        pub struct $name {
            block: Block,
        }

        #[pymethods]
        impl $name {
            #[new]
            #[pyo3(signature = (size))]
            fn new(size: isize) -> PyResult<Self> {
                Ok($name {
                    block: Block::new($allocator, size)?,
                })
            }

            /// Buffer size in bytes (at least 1).
            #[getter]
            fn size(&self) -> usize {
                self.block.size
            }

            /// Buffer address.
            #[getter]
            fn buffer(&self) -> usize {
                self.block.ptr
            }
        }
    };
}

block_class!(
    CMalloc,
    "CMalloc",
    Allocator::C,
    "A block of ``size`` bytes from C ``malloc()``, zero-filled, freed with ``free()`` when deleted."
);
block_class!(
    PyRawMalloc,
    "PyRawMalloc",
    Allocator::PyRaw,
    "A block of ``size`` bytes from ``PyMem_RawMalloc()``, zero-filled, freed with ``PyMem_RawFree()``."
);
block_class!(
    PyMalloc,
    "PyMalloc",
    Allocator::Py,
    "A block of ``size`` bytes from ``PyMem_Malloc()``, zero-filled, freed with ``PyMem_Free()``."
);

/// Adds the classes to the `cMemLeak` module.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<CMalloc>()?;
    module.add_class::<PyRawMalloc>()?;
    module.add_class::<PyMalloc>()?;
    Ok(())
}
