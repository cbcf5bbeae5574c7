//! Exposes PyO3's `Py_3_X` cfgs (the CPython version being built for) to this crate.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
