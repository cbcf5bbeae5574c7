//! The one stop signal and the one deadline sleep: SIGINT and SIGTERM raise a flag (instead of
//! ending the process) that every loop polls, so that all outputs are flushed before exit; and
//! sleeping until an absolute `CLOCK_MONOTONIC` deadline, woken at once by those signals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to the stop flag. Interrupted sleeps are not restarted, so a
/// loop sleeping in [`sleep_until`] notices at once.
pub fn install_handlers() -> std::io::Result<()> {
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
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The flag the signals raise, for loops that take a stop flag.
pub fn flag() -> &'static AtomicBool {
    &STOP
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sleeps until `deadline`, waking early (returning `false`) once `stop` is raised; a signal
/// interrupts the sleep, so the stop signal is seen at once.
pub fn sleep_until(deadline: Instant, stop: &AtomicBool) -> bool {
    let now = Instant::now();
    let target = add_to(monotonic_now(), deadline.saturating_duration_since(now));
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        // SAFETY: `target` is a valid timespec; a null remainder is allowed with TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &target,
                std::ptr::null_mut(),
            )
        };
        if rc != libc::EINTR {
            return !stop.load(Ordering::Relaxed);
        }
    }
}

/// Waits until one of `fds` is readable or `deadline` passes, waking early once `stop` is
/// raised (a signal interrupts the wait). Returns `true` when one is readable, or when they
/// cannot be waited on (the caller then does what it would have done on data).
pub fn wait_readable_until(
    fds: &[std::os::fd::RawFd],
    deadline: Instant,
    stop: &AtomicBool,
) -> bool {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let timeout = libc::timespec {
            tv_sec: libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(left.subsec_nanos()),
        };
        // SAFETY: `polls` is a valid array of `polls.len()` pollfds; the timeout is a valid
        // timespec and the signal mask pointer may be null.
        let rc = unsafe {
            libc::ppoll(
                polls.as_mut_ptr(),
                polls.len() as libc::nfds_t,
                &timeout,
                std::ptr::null(),
            )
        };
        match rc {
            0 => return false,
            rc if rc > 0 => return true,
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => return true,
        }
    }
}

/// The current `CLOCK_MONOTONIC` time in nanoseconds (the clock `bpf_ktime_get_ns` reads).
pub(crate) fn monotonic_ns() -> u64 {
    let t = monotonic_now();
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// The current `CLOCK_MONOTONIC` time (the clock [`Instant`] reads on Linux).
fn monotonic_now() -> libc::timespec {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t);
    }
    t
}

fn add_to(t: libc::timespec, d: std::time::Duration) -> libc::timespec {
    let total = i128::from(t.tv_nsec) + i128::from(d.subsec_nanos());
    let secs = i128::from(t.tv_sec) + i128::from(d.as_secs()) + total / 1_000_000_000;
    libc::timespec {
        tv_sec: libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX),
        tv_nsec: (total % 1_000_000_000) as libc::c_long,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sleeps_until_the_deadline_or_the_stop() {
        let stop = AtomicBool::new(false);
        let start = Instant::now();
        assert!(sleep_until(start + Duration::from_millis(30), &stop));
        assert!(start.elapsed() >= Duration::from_millis(30));
        stop.store(true, Ordering::Relaxed);
        let start = Instant::now();
        assert!(!sleep_until(start + Duration::from_secs(5), &stop));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn waits_until_a_descriptor_is_readable_or_the_deadline() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let stop = AtomicBool::new(false);
        let (reader, mut writer) = std::io::pipe().expect("pipe");
        let fds = [reader.as_raw_fd()];
        let start = Instant::now();
        assert!(!wait_readable_until(
            &fds,
            start + Duration::from_millis(30),
            &stop
        ));
        assert!(start.elapsed() >= Duration::from_millis(30));
        writer.write_all(b"x").expect("write");
        let start = Instant::now();
        assert!(wait_readable_until(
            &fds,
            start + Duration::from_secs(5),
            &stop
        ));
        assert!(start.elapsed() < Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        assert!(!wait_readable_until(
            &fds,
            start + Duration::from_secs(5),
            &stop
        ));
    }
}
