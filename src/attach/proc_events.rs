//! The kernel's process events connector (netlink `NETLINK_CONNECTOR`, `CN_IDX_PROC`): fork,
//! exec, comm-change and exit events of every process on the machine, so `pmt tree` learns of
//! children coming and going without re-reading every process's children list each tick.
//!
//! It owns the socket and the wire format only; which processes matter is the tree's business.
//! Listening needs the initial PID and user namespaces (and `CAP_NET_ADMIN` before Linux 6.6);
//! where the kernel does not answer, [`ProcEvents::subscribe`] fails and the caller polls instead.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;

const PROC_EVENT_NONE: u32 = 0;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_COMM: u32 = 0x0000_0200;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// `struct nlmsghdr`.
const NLMSG_HDR: usize = 16;
/// `struct cn_msg` without its data.
const CN_MSG: usize = 20;
/// Where `struct proc_event` starts in a message.
const EVENT_AT: usize = NLMSG_HDR + CN_MSG;
/// Where `proc_event.event_data` starts (after `what`, `cpu` and the 8-byte timestamp).
const DATA_AT: usize = EVENT_AT + 16;

/// How long to wait for the kernel to acknowledge a subscription.
const ACK_TIMEOUT: Duration = Duration::from_millis(250);
/// Receive buffer asked for, so a burst of forks between two ticks is not lost.
const RECEIVE_BUFFER: libc::c_int = 4 << 20;

/// One process event, PIDs as the initial PID namespace sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcEvent {
    /// A task was created: a process when `child_pid == child_tgid`, else a thread.
    Fork {
        /// The process (thread group) of the new task's parent.
        parent_tgid: i32,
        /// The new task.
        child_pid: i32,
        /// The new task's process.
        child_tgid: i32,
    },
    /// A task called `execve`: its name and memory changed.
    Exec {
        /// The task.
        pid: i32,
        /// Its process.
        tgid: i32,
    },
    /// A task changed its name (`prctl(PR_SET_NAME)`, or a write to `comm`).
    Comm {
        /// The task.
        pid: i32,
        /// Its process.
        tgid: i32,
    },
    /// A task exited: the process when `pid == tgid`.
    Exit {
        /// The task.
        pid: i32,
        /// Its process.
        tgid: i32,
    },
}

fn word(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn pid_at(bytes: &[u8], at: usize) -> Option<i32> {
    word(bytes, at).map(|w| w as i32)
}

/// What one netlink message from the connector holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    /// An event the tree uses.
    Event(ProcEvent),
    /// The answer to a (un)subscription: the request's `ack` plus one, and an error number.
    Ack { ack: u32, err: u32 },
    /// Anything else (another connector, an event kind not asked for).
    Other,
}

/// Parses one netlink message (header included) from the process events connector.
fn parse_message(msg: &[u8]) -> Option<Message> {
    if word(msg, 16)? != CN_IDX_PROC || word(msg, 20)? != CN_VAL_PROC {
        return Some(Message::Other);
    }
    let what = word(msg, EVENT_AT)?;
    let pair = |at| Some((pid_at(msg, at)?, pid_at(msg, at + 4)?));
    let message = match what {
        PROC_EVENT_NONE => Message::Ack {
            ack: word(msg, 28)?,
            err: word(msg, DATA_AT)?,
        },
        PROC_EVENT_FORK => Message::Event(ProcEvent::Fork {
            parent_tgid: pid_at(msg, DATA_AT + 4)?,
            child_pid: pid_at(msg, DATA_AT + 8)?,
            child_tgid: pid_at(msg, DATA_AT + 12)?,
        }),
        PROC_EVENT_EXEC => {
            let (pid, tgid) = pair(DATA_AT)?;
            Message::Event(ProcEvent::Exec { pid, tgid })
        }
        PROC_EVENT_COMM => {
            let (pid, tgid) = pair(DATA_AT)?;
            Message::Event(ProcEvent::Comm { pid, tgid })
        }
        PROC_EVENT_EXIT => {
            let (pid, tgid) = pair(DATA_AT)?;
            Message::Event(ProcEvent::Exit { pid, tgid })
        }
        _ => Message::Other,
    };
    Some(message)
}

/// Splits a datagram into its netlink messages and parses each; malformed ones are skipped.
fn parse_datagram(datagram: &[u8], mut each: impl FnMut(Message)) {
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDR {
        let Some(len) = word(rest, 0).map(|l| l as usize) else {
            break;
        };
        if len < NLMSG_HDR || len > rest.len() {
            break;
        }
        if let Some(message) = parse_message(&rest[..len]) {
            each(message);
        }
        // NLMSG_ALIGN: messages start on 4-byte boundaries.
        let next = (len + 3) & !3;
        rest = rest.get(next..).unwrap_or(&[]);
    }
}

/// What one [`ProcEvents::drain`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// The kernel dropped events (the receive buffer overflowed): the caller must re-read
    /// the tree from `/proc` to be sure of it.
    pub lost: bool,
}

/// A subscription to the process events connector.
#[derive(Debug)]
pub struct ProcEvents {
    socket: OwnedFd,
    buf: Vec<u8>,
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// The subscription request: `nlmsghdr`, `cn_msg` (carrying `nonce` as its `ack`), then
/// `proc_input` (`op`, and the event kinds wanted, when `filter` is given; Linux 6.6 and later
/// read it) or only the `op` word.
fn request(op: u32, filter: Option<u32>, nonce: u32) -> Vec<u8> {
    let payload: Vec<u32> = match filter {
        Some(kinds) => vec![op, kinds],
        None => vec![op],
    };
    let data_len = payload.len() * 4;
    let total = NLMSG_HDR + CN_MSG + data_len;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_ne_bytes());
    out.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&std::process::id().to_ne_bytes());
    for w in [CN_IDX_PROC, CN_VAL_PROC, 0, nonce] {
        out.extend_from_slice(&w.to_ne_bytes());
    }
    out.extend_from_slice(&(data_len as u16).to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes());
    for w in payload {
        out.extend_from_slice(&w.to_ne_bytes());
    }
    out
}

impl ProcEvents {
    /// Opens the connector and subscribes to fork, exec, comm and exit events. Fails where the
    /// kernel lacks `CONFIG_PROC_EVENTS`, refuses (not root, not in the initial namespaces), or
    /// does not acknowledge the subscription.
    pub fn subscribe() -> io::Result<ProcEvents> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_CONNECTOR,
            )
        };
        if fd < 0 {
            return Err(last_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = CN_IDX_PROC;
        // SAFETY: `addr` is a valid sockaddr_nl of the length given.
        let bound = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                std::ptr::addr_of!(addr).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if bound < 0 {
            return Err(last_error());
        }
        let size: libc::c_int = RECEIVE_BUFFER;
        for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: the option value is a c_int of the length given.
            let set = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    std::ptr::addr_of!(size).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if set == 0 {
                break;
            }
        }
        let mut events = ProcEvents {
            socket,
            buf: vec![0; 8192],
        };
        // The one-word request is what every kernel acknowledges. Linux 6.6+ also reads a
        // two-word one that filters by kind, but drops its own acknowledgement under that
        // filter (the acknowledgement is event kind "none"), so it is sent after, unanswered;
        // older kernels ignore it.
        events.request_and_wait(PROC_CN_MCAST_LISTEN)?;
        let wanted = PROC_EVENT_FORK | PROC_EVENT_EXEC | PROC_EVENT_COMM | PROC_EVENT_EXIT;
        events.send(&request(PROC_CN_MCAST_LISTEN, Some(wanted), 0))?;
        Ok(events)
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain data; all-zero addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `bytes` and `kernel` are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                std::ptr::addr_of!(kernel).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 { Err(last_error()) } else { Ok(()) }
    }

    /// Sends a one-word request and waits for its acknowledgement, which echoes the request's
    /// `ack` field plus one (its `seq` is the kernel's own counter); events read meanwhile are
    /// dropped (the tree is read whole from `/proc` after subscribing).
    fn request_and_wait(&mut self, op: u32) -> io::Result<()> {
        let nonce = std::process::id().wrapping_mul(2_654_435_761) | 1;
        self.send(&request(op, None, nonce))?;
        let deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the process events connector did not answer",
                ));
            }
            let mut poll = libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, left.as_millis().max(1) as libc::c_int) };
            if ready < 0 {
                let err = last_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let mut answer = None;
            while let Some(n) = self.receive()? {
                parse_datagram(&self.buf[..n], |message| {
                    if let Message::Ack { ack, err } = message
                        && ack == nonce.wrapping_add(1)
                    {
                        answer = Some(err);
                    }
                });
            }
            match answer {
                Some(0) => return Ok(()),
                Some(err) => return Err(io::Error::from_raw_os_error(err as i32)),
                None => {}
            }
        }
    }

    /// One datagram into `buf`: `Ok(None)` when none is waiting. A lost-events error is
    /// returned as `ENOBUFS`.
    fn receive(&mut self) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let err = last_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(None),
                _ => return Err(err),
            }
        }
    }

    /// Hands every waiting event to `each`, in the order the kernel sent them, without blocking.
    /// An error other than lost events means the subscription is broken.
    pub fn drain(&mut self, mut each: impl FnMut(ProcEvent)) -> io::Result<Drained> {
        let mut drained = Drained::default();
        loop {
            match self.receive() {
                Ok(Some(n)) => parse_datagram(&self.buf[..n], |message| {
                    if let Message::Event(event) = message {
                        each(event);
                    }
                }),
                Ok(None) => return Ok(drained),
                Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => drained.lost = true,
                Err(err) => return Err(err),
            }
        }
    }
}

impl Drop for ProcEvents {
    fn drop(&mut self) {
        // Tell the kernel one listener fewer; it stops producing events once none listen.
        let _ = self.send(&request(PROC_CN_MCAST_IGNORE, None, 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(what: u32, data: &[u32], seq: u32, ack: u32) -> Vec<u8> {
        let mut event = vec![what, 0, 0, 0];
        event.extend_from_slice(data);
        let len = (NLMSG_HDR + CN_MSG + event.len() * 4) as u32;
        let mut out = Vec::new();
        for w in [len, 0, 0, 0, CN_IDX_PROC, CN_VAL_PROC, seq, ack] {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        out.extend_from_slice(&((event.len() * 4) as u16).to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        for w in event {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        out
    }

    #[test]
    fn parses_the_event_kinds() {
        let fork = message(PROC_EVENT_FORK, &[10, 10, 12, 12], 0, 0);
        assert_eq!(
            parse_message(&fork),
            Some(Message::Event(ProcEvent::Fork {
                parent_tgid: 10,
                child_pid: 12,
                child_tgid: 12
            }))
        );
        let exit = message(PROC_EVENT_EXIT, &[13, 12, 0, 17, 10, 10], 0, 0);
        assert_eq!(
            parse_message(&exit),
            Some(Message::Event(ProcEvent::Exit { pid: 13, tgid: 12 }))
        );
        let exec = message(PROC_EVENT_EXEC, &[12, 12], 0, 0);
        assert_eq!(
            parse_message(&exec),
            Some(Message::Event(ProcEvent::Exec { pid: 12, tgid: 12 }))
        );
        let ack = message(PROC_EVENT_NONE, &[1], 77, 1);
        assert_eq!(parse_message(&ack), Some(Message::Ack { ack: 1, err: 1 }));
        assert_eq!(
            parse_message(&message(0x4, &[1, 1, 0, 0], 0, 0)),
            Some(Message::Other)
        );
        assert_eq!(parse_message(&fork[..40]), None);
    }

    #[test]
    fn splits_a_datagram_and_stops_at_garbage() {
        let mut datagram = message(PROC_EVENT_EXEC, &[5, 5], 0, 0);
        datagram.extend(message(PROC_EVENT_EXIT, &[6, 6, 0, 0, 1, 1], 0, 0));
        datagram.extend_from_slice(&[0xff; 20]);
        let mut seen = Vec::new();
        parse_datagram(&datagram, |m| seen.push(m));
        assert_eq!(
            seen,
            [
                Message::Event(ProcEvent::Exec { pid: 5, tgid: 5 }),
                Message::Event(ProcEvent::Exit { pid: 6, tgid: 6 })
            ]
        );
    }

    #[test]
    fn request_layout_matches_the_kernel_structs() {
        let bytes = request(PROC_CN_MCAST_LISTEN, Some(PROC_EVENT_FORK), 9);
        assert_eq!(bytes.len(), NLMSG_HDR + CN_MSG + 8);
        assert_eq!(word(&bytes, 0), Some(bytes.len() as u32));
        assert_eq!(word(&bytes, 16), Some(CN_IDX_PROC));
        assert_eq!(word(&bytes, 28), Some(9));
        assert_eq!(u16::from_ne_bytes([bytes[32], bytes[33]]), 8);
        assert_eq!(word(&bytes, 36), Some(PROC_CN_MCAST_LISTEN));
        assert_eq!(word(&bytes, 40), Some(PROC_EVENT_FORK));
    }
}
