//! The `pmt` and `pmt-sample` console scripts: run the Rust CLI of the `pymemtrace` crate
//! in-process with the GIL released, and hand its exit code back to Python.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::process::ExitCode;

/// The number an `ExitCode` stands for (`ExitCode` offers no accessor, only equality).
fn exit_number(code: ExitCode) -> u8 {
    (0..=u8::MAX)
        .find(|n| ExitCode::from(*n) == code)
        .unwrap_or(1)
}

/// Runs `pmt` (`program = "pmt"`) or `pmt-sample` with `argv` (program name first) and
/// returns the exit code.
#[pyfunction]
pub fn run_cli(py: Python<'_>, program: &str, argv: Vec<String>) -> PyResult<u8> {
    let code = match program {
        "pmt" => py.detach(|| pymemtrace::cli::pmt_main(argv)),
        "pmt-sample" => py.detach(|| pymemtrace::cli::pmt_sample_main(argv)),
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown program {other:?}: expected \"pmt\" or \"pmt-sample\""
            )));
        }
    };
    Ok(exit_number(code))
}
