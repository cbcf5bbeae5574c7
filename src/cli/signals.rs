//! The stop flag of the sampling commands: SIGINT and SIGTERM raise it, and `q` in `pmt top`.
//!
//! Owns: the handlers. (To be replaced by the kernel-facing layer's signal handling in
//! `attach/` when that lands: callers only use [`STOP`] and [`install_stop_handlers`].)

use anyhow::bail;
use std::sync::atomic::{AtomicBool, Ordering};

/// Raised by SIGINT and SIGTERM.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM raise [`STOP`] (without restarting interrupted sleeps, so the
/// sampling loop notices at once).
pub fn install_stop_handlers() -> anyhow::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the
        // sigaction struct is fully initialised before use.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = 0;
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            bail!(
                "cannot install a handler for signal {signal}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}
