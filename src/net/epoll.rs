//! A small epoll selector (after mio's `sys/unix/selector/epoll.rs`).
//!
//! Edge-triggered contract: after an event for a token, the owner must read (or write) until
//! the call returns `WouldBlock`; otherwise no further event comes for that readiness.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::syscall;

pub struct Selector {
    ep: OwnedFd,
}

/// Readiness reported for one token.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
    /// Peer hung up or an error is pending: read to find out (EOF or the error).
    pub hangup: bool,
    /// An error is pending (EPOLLERR: a reset, a timeout), within `hangup`.
    pub error: bool,
}

/// The interest set every connection uses: both directions, edge-triggered, peer half-close.
/// Built in exactly this one place.
fn interest_flags(edge: bool) -> u32 {
    let base = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP) as u32;
    if edge {
        base | libc::EPOLLET as u32
    } else {
        libc::EPOLLIN as u32
    }
}

impl Selector {
    pub fn new() -> io::Result<Selector> {
        // SAFETY: plain integer arguments; no memory is passed.
        let fd = syscall!(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` is a fresh descriptor owned by nothing else.
        Ok(Selector {
            ep: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Registers a connection socket: readable + writable, edge-triggered.
    pub fn register(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest_flags(true), token)
    }

    /// Registers a wake-up eventfd or a listening socket: readable, level-triggered.
    pub fn register_level(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest_flags(false), token)
    }

    pub fn deregister(&self, fd: RawFd) -> io::Result<()> {
        // A non-null event pointer keeps kernels before 2.6.9 happy; the content is ignored.
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        syscall!(unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) })
            .map(|_| ())
    }

    fn ctl(&self, op: i32, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        syscall!(unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev) }).map(|_| ())
    }

    /// Waits for events (EINTR is reported as zero events).
    pub fn select(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let ms = timeout.map_or(-1, wait_ms);
        events.len = 0;
        // SAFETY: `events.buf` has room for `capacity` entries; the kernel writes at most that many.
        match syscall!(unsafe {
            libc::epoll_wait(
                self.ep.as_raw_fd(),
                events.buf.as_mut_ptr(),
                events.buf.len() as i32,
                ms,
            )
        }) {
            Ok(n) => {
                events.len = n as usize;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }
}

pub struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    pub fn with_capacity(n: usize) -> Events {
        Events {
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; n.max(1)],
            len: 0,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.buf[..self.len].iter().map(|e| {
            let ev = e.events as i32;
            Event {
                token: e.u64,
                readable: ev & libc::EPOLLIN != 0,
                writable: ev & libc::EPOLLOUT != 0,
                hangup: ev & (libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) != 0,
                error: ev & libc::EPOLLERR != 0,
            }
        })
    }
}

/// A wait in whole milliseconds for epoll_wait, rounded up: rounded down, a timer less than
/// 1 ms away would make the loop poll with 0 again and again (a busy wait) until it is due.
fn wait_ms(t: Duration) -> i32 {
    t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
}

#[cfg(test)]
mod wait_tests {
    use super::wait_ms;
    use std::time::Duration;

    #[test]
    fn waits_round_up_to_whole_milliseconds() {
        assert_eq!(wait_ms(Duration::ZERO), 0);
        assert_eq!(wait_ms(Duration::from_nanos(1)), 1);
        assert_eq!(wait_ms(Duration::from_micros(999)), 1);
        assert_eq!(wait_ms(Duration::from_millis(1)), 1);
        assert_eq!(wait_ms(Duration::from_micros(1001)), 2);
        assert_eq!(wait_ms(Duration::from_secs(u64::MAX)), i32::MAX);
    }
}
