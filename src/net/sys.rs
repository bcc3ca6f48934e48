//! The one place where raw socket syscalls turn into `io::Result`.

use std::io;
use std::os::fd::RawFd;

/// Evaluates a libc call (written `syscall!(unsafe { libc::f(..) })` at the call site, with
/// its `// SAFETY:` note there) and turns -1 into the last OS error (mio's `syscall!`).
#[macro_export]
macro_rules! syscall {
    ($call:expr) => {{
        let res = $call;
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// A non-blocking, close-on-exec TCP socket of `addr`'s family (listeners and the cws
/// client's connects both start here).
pub fn tcp_socket(addr: std::net::SocketAddr) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let family = match addr {
        std::net::SocketAddr::V4(_) => AddressFamily::Inet,
        std::net::SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
}

/// Sets an int socket option.
pub fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed alongside.
    syscall!(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// The socket's pending error (SO_ERROR), taken: `Some` once the peer reset the connection
/// (or another error ended it), `None` while it is fine.
pub fn socket_error(fd: RawFd) -> Option<io::Error> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` outlive the call, and `len` gives `err`'s size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0 && err != 0).then(|| io::Error::from_raw_os_error(err))
}

/// Bytes received and not yet read (FIONREAD); `None` when the socket cannot say.
pub fn unread_bytes(fd: RawFd) -> Option<usize> {
    byte_count(fd, libc::FIONREAD)
}

/// Bytes written to the socket that its peer has not acknowledged yet (TIOCOUTQ: unsent or
/// in flight); `None` when the socket cannot say.
pub fn unacked_bytes(fd: RawFd) -> Option<usize> {
    byte_count(fd, libc::TIOCOUTQ)
}

/// Makes closing `fd` abortive (SO_LINGER 0): a reset, and what the kernel still holds to send
/// is dropped. For a peer given up on while it does not read: a FIN would wait behind its
/// zero window, and the kernel keep our bytes and the connection for minutes after the
/// server let it go.
pub fn reset_on_close(fd: RawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid `linger` and its size; the call only sets an option of `fd`.
    syscall!(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// The count an ioctl `request` that writes one int (FIONREAD, TIOCOUTQ) gives for `fd`.
fn byte_count(fd: RawFd, request: libc::Ioctl) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: both requests write one int into `n`, which outlives the call.
    let r = unsafe { libc::ioctl(fd, request, &mut n as *mut libc::c_int) };
    (r == 0).then_some(n.max(0) as usize)
}

/// Sends with MSG_NOSIGNAL: a peer that went away yields EPIPE, never SIGPIPE.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid slice for its length.
    syscall!(unsafe {
        libc::send(
            fd,
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    })
    .map(|n| n as usize)
}

/// Vectored send with MSG_NOSIGNAL (writev has no flags argument, sendmsg does). Takes
/// `IoSlice`s, whose borrows keep the buffers alive: safe code cannot hand the kernel a pointer
/// to memory it does not own.
pub fn sendv(fd: RawFd, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: msghdr is plain data; zeroed is a valid "no name, no control" header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix; sendmsg only reads them.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    // SAFETY: `msg` points at `bufs`, borrowed for the call, whose slices borrow live buffers.
    syscall!(unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) }).map(|n| n as usize)
}

/// Whether a TCP peer takes what we send, from one look to the next: its kernel's
/// acknowledgements of at least [`AckProgress::PROGRESS`] more bytes. The acknowledgement of a
/// Ping, a Close frame, an HTTP answer, a FIN, TLS records of our own or a small heartbeat
/// (all smaller) is not that: a peer's kernel acknowledges them while its application hangs,
/// or while nothing but its kernel is left. Used by the idle and close timers of the server's
/// connections and of the cws client's.
#[derive(Debug, Default, Clone, Copy)]
pub struct AckProgress {
    mark: u64,
}

impl AckProgress {
    /// Bytes a peer must take per period to count as reading.
    pub const PROGRESS: u64 = 4096;

    /// Whether `fd`'s peer acknowledged at least [`Self::PROGRESS`] more bytes since the last
    /// call (or [`Self::restart`]). False when the kernel does not tell (before Linux 4.1).
    pub fn took_more(&mut self, fd: RawFd) -> bool {
        match bytes_acked(fd) {
            Some(acked) => {
                let more = acked.saturating_sub(self.mark) >= Self::PROGRESS;
                self.mark = self.mark.max(acked);
                more
            }
            None => false,
        }
    }

    /// Counts from now: what was acknowledged so far is not progress.
    pub fn restart(&mut self, fd: RawFd) {
        self.mark = bytes_acked(fd).unwrap_or(0);
    }
}

/// TCP_INFO of the socket `fd`, with how many of its bytes the kernel filled in (older
/// kernels know fewer fields).
pub fn tcp_info(fd: RawFd) -> io::Result<(libc::tcp_info, usize)> {
    // SAFETY: tcp_info is plain data, all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` outlive the call; `len` holds the buffer's size, and the kernel
    // writes at most that many bytes and stores how many it wrote in `len`.
    syscall!(unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    })?;
    Ok((info, len as usize))
}

/// How many bytes the peer has acknowledged on this TCP connection (`tcpi_bytes_acked` of
/// TCP_INFO, Linux 4.1+); None when the kernel does not say.
pub fn bytes_acked(fd: RawFd) -> Option<u64> {
    let (info, len) = tcp_info(fd).ok()?;
    let end = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + std::mem::size_of::<u64>();
    (len >= end).then_some(info.tcpi_bytes_acked)
}

/// Reads into `buf`.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable slice for its length.
    syscall!(unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) })
        .map(|n| n as usize)
}

/// Copies the first received bytes into `buf` without consuming them (MSG_PEEK); 0 when none
/// have come yet (or the peer closed), as a non-blocking socket cannot tell more in passing.
pub fn peek(fd: RawFd, buf: &mut [u8]) -> usize {
    // SAFETY: `buf` is a valid, writable slice for its length.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).unwrap_or(0)
}
