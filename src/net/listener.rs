//! Listeners: accept connections (non-blocking, close-on-exec), apply the server-wide ACL
//! before anything is read, and pass the socket to the Balancer.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::sys::socket::{self, sockopt, SockaddrStorage};

use super::balancer::{Balancer, NotTaken};
use super::hub::{NewConn, Refused};
use super::per_address::PerAddress;
use super::sys;
use crate::{info, syscall, warn};

/// Decides at accept time whether a peer may connect at all.
pub type AclFn = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Binds `addr` with the given backlog; the socket is non-blocking and close-on-exec, with
/// SO_REUSEADDR (as std sets it). An IPv6 socket is IPV6_V6ONLY (as nginx does): "::" takes a
/// port on IPv6 only, so "0.0.0.0" can listen on the same port beside it, whatever the host's
/// net.ipv6.bindv6only says. An IPv4-mapped address (::ffff:a.b.c.d) is IPv4 traffic only and
/// the kernel refuses it on a V6ONLY socket, so it stays dual-stack.
pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let fd = sys::tcp_socket(addr)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if let SocketAddr::V6(v6) = addr {
        if v6.ip().to_ipv4_mapped().is_none() {
            socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
        }
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    // nix's listen() refuses a backlog above SOMAXCONN; the kernel caps it at
    // net.core.somaxconn instead, which is what the config's range relies on.
    // SAFETY: plain integer arguments on a descriptor `fd` owns; no memory is passed.
    syscall!(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(TcpListener::from(fd))
}

/// How long accepting pauses when the process is out of descriptors or memory: the waiting
/// connection keeps the listening socket readable, so polling again at once would spin.
const EXHAUSTED_PAUSE_MS: i32 = 100;

/// How long accepting pauses when the workers' inboxes are full: they empty them on their
/// next loop, and meanwhile new connections wait in the kernel's accept queue.
const BUSY_PAUSE_MS: i32 = 1;

/// The accepting loop of one listener thread. Returns when `stop_fd` becomes readable.
/// Refusals (HTTP 503) are answered by a worker, which speaks TLS on a wss:// endpoint.
pub fn run(
    listener: Arc<TcpListener>,
    endpoint: usize,
    balancer: Arc<Balancer>,
    acl: Option<AclFn>,
    per_address: Option<Arc<PerAddress>>,
    stop_fd: RawFd,
) {
    let lfd = listener.as_raw_fd();
    // Since when accepting has failed for lack of resources (one warning per episode).
    let mut exhausted: Option<std::time::Instant> = None;
    // A connection accepted while every inbox was full, with the time that began.
    let mut waiting: Option<(NewConn, std::time::Instant)> = None;
    loop {
        if exhausted.is_some() || waiting.is_some() {
            // Only the stop descriptor: the listening socket stays readable meanwhile.
            let pause = if waiting.is_some() {
                BUSY_PAUSE_MS
            } else {
                EXHAUSTED_PAUSE_MS
            };
            if wait_readable(&[stop_fd], pause) == Some(0) {
                return;
            }
        } else {
            // The stop descriptor first: under a steady stream of connections the listening
            // socket is always readable too, and the first readable one is what counts.
            match wait_readable(&[stop_fd, lfd], -1) {
                Some(0) => return,
                Some(_) => {}
                None => continue,
            }
        }
        if let Some((conn, since)) = waiting.take() {
            match hand_over(&balancer, conn) {
                Ok(()) => crate::info_limited!(
                    "listener: the workers took connections again after {} ms",
                    since.elapsed().as_millis()
                ),
                Err(conn) => {
                    waiting = Some((conn, since));
                    continue;
                }
            }
        }
        match accept_all(lfd, endpoint, &balancer, acl.as_ref(), per_address.as_ref()) {
            Accepted::Drained => {
                if let Some(since) = exhausted.take() {
                    info!(
                        "listener: accepting again, {} ms after accept first failed",
                        since.elapsed().as_millis()
                    );
                }
            }
            Accepted::Busy(conn) => {
                // Under a steady storm this comes every few milliseconds: rate-limited.
                crate::info_limited!(
                    "listener: every worker's inbox is full (a burst of connections); \
                     accepting pauses until they catch up"
                );
                waiting = Some((conn, std::time::Instant::now()));
            }
            Accepted::Exhausted(e) => {
                if exhausted.is_none() {
                    let hint = match e.raw_os_error() {
                        Some(libc::EMFILE) => " (raise LimitNOFILE or lower max_connections)",
                        Some(libc::ENFILE) => {
                            " (the system's file table is full: raise fs.file-max or lower \
                             max_connections)"
                        }
                        Some(libc::ENOBUFS | libc::ENOMEM) => {
                            " (the kernel is out of memory for sockets: check the host's \
                             memory and net.ipv4.tcp_mem, or lower max_connections)"
                        }
                        // EPERM/EACCES: a seccomp filter or a security module refuses accept4.
                        Some(libc::EPERM | libc::EACCES) => {
                            " (check the unit's SystemCallFilter and the security modules)"
                        }
                        // Anything else (EINVAL, EBADF) is not the host's: a bug to report.
                        _ => " (unexpected: please report it with this line)",
                    };
                    warn!(
                        "listener: accept failed: {e}; retrying every {EXHAUSTED_PAUSE_MS} ms{hint}"
                    );
                    exhausted = Some(std::time::Instant::now());
                }
            }
        }
    }
}

/// Hands `conn` to a worker, or to one that answers 503 when it is refused (its address at
/// its limit) or every worker is at `max_connections`. Gives it back when the workers'
/// inboxes are full: a burst they have not caught up with yet, not a full server, so the
/// caller keeps it and tries again shortly.
fn hand_over(balancer: &Balancer, mut conn: NewConn) -> Result<(), NewConn> {
    if conn.refuse == Some(Refused::AddressFull) {
        return balancer.refuse(conn);
    }
    // A connection found the server full and then the inboxes too (it waited): try again.
    conn.refuse = None;
    match balancer.dispatch(conn) {
        Ok(_) => Ok(()),
        Err(NotTaken::Busy(conn)) => Err(conn),
        Err(NotTaken::Full(mut conn)) => {
            let peer = conn.peer;
            conn.refuse = Some(Refused::ServerFull);
            // A refused connection holds no place; but one the inboxes cannot take yet comes
            // back to be dispatched again, and keeps its place for that.
            let ticket = conn.ticket.take();
            balancer.refuse(conn).map_err(|mut back| {
                back.ticket = ticket;
                back
            })?;
            crate::info_limited!(
                "rejected {peer}: every worker is at max_connections ({} each, HTTP 503)",
                balancer.max_connections()
            );
            Ok(())
        }
    }
}

/// Polls `fds` for input (`timeout_ms` as poll(2) takes it): the index of the first readable
/// one, `Some(fds.len())` on timeout, `None` when interrupted. Any other poll error is
/// logged and read as a timeout.
fn wait_readable(fds: &[RawFd], timeout_ms: i32) -> Option<usize> {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `polled` is a valid array of pollfd for the duration of the call.
    match syscall!(unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as _, timeout_ms) }) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return None,
        Err(e) => {
            warn!("listener: poll failed: {e}");
            return Some(fds.len());
        }
    }
    Some(
        polled
            .iter()
            .position(|p| p.revents != 0)
            .unwrap_or(fds.len()),
    )
}

/// How a round of accepting ended.
enum Accepted {
    /// Nothing more waiting, a whole round taken, or an error that concerned one connection
    /// only.
    Drained,
    /// Out of descriptors or memory, or an error that is not one connection's (a seccomp
    /// filter's or a security module's EPERM): connections keep waiting in the backlog, and
    /// retrying at once would spin.
    Exhausted(io::Error),
    /// Every worker's inbox is full: this connection waits for room, the next ones in the
    /// kernel's accept queue.
    Busy(NewConn),
}

/// Connections taken in one round before the stop descriptor is looked at again: a backlog
/// that never empties (a connection flood) must not keep a SIGTERM from stopping the listener.
const ACCEPT_ROUND: usize = 256;

fn accept_all(
    lfd: RawFd,
    endpoint: usize,
    balancer: &Balancer,
    acl: Option<&AclFn>,
    per_address: Option<&Arc<PerAddress>>,
) -> Accepted {
    for _ in 0..ACCEPT_ROUND {
        // SAFETY: sockaddr_storage is plain data; zeroed is valid and large enough for any family.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `storage`/`len` describe a writable buffer of the right size.
        let res = syscall!(unsafe {
            libc::accept4(
                lfd,
                &mut storage as *mut _ as *mut libc::sockaddr,
                &mut len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        });
        let fd = match res {
            Ok(fd) => fd,
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN) => return Accepted::Drained,
                // One connection's trouble, which took it off the queue (accept(2): the
                // pending network errors of TCP/IP): the next one is tried.
                Some(
                    libc::EINTR
                    | libc::ECONNABORTED
                    | libc::EPROTO
                    | libc::ENETDOWN
                    | libc::ENOPROTOOPT
                    | libc::EHOSTDOWN
                    | libc::ENONET
                    | libc::EHOSTUNREACH
                    | libc::EOPNOTSUPP
                    | libc::ENETUNREACH,
                ) => continue,
                // Anything else leaves the connection queued and the socket readable.
                _ => return Accepted::Exhausted(e),
            },
        };
        // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let Some(peer) = to_socket_addr(&storage) else {
            continue;
        };
        if let Some(acl) = acl {
            if !acl(peer.ip()) {
                crate::info_limited!("rejected {peer}: denied by the server ACL");
                continue; // dropping `fd` closes it before anything was read
            }
        }
        let (mut ticket, mut refuse) = (None, None);
        if let Some(p) = per_address {
            match p.admit(peer.ip()) {
                Some(t) => ticket = Some(Box::new(t)),
                None => {
                    crate::info_limited!(
                        "rejected {peer}: {} connections from {} are open \
                         (max_connections_per_address)",
                        p.limit(),
                        p.describe(peer.ip())
                    );
                    refuse = Some(Refused::AddressFull);
                }
            }
        }
        let conn = NewConn {
            fd,
            peer,
            listener: endpoint,
            refuse,
            ticket,
        };
        if let Err(conn) = hand_over(balancer, conn) {
            return Accepted::Busy(conn);
        }
    }
    // More may be waiting: the caller's next poll finds the socket readable again.
    Accepted::Drained
}

fn to_socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is large enough and aligned.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6; storage is large enough and aligned.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::hub::Hub;

    #[test]
    fn a_stop_is_seen_before_connections_still_waiting() {
        // Under a connection flood the listening socket never stops being readable: a stop
        // must not wait for a backlog that never empties.
        let hub = Arc::new(Hub::new(1, 1000).unwrap());
        let balancer = Arc::new(Balancer::new(Arc::clone(&hub), 1.0));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let _waiting: Vec<_> = (0..20)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let stop = unsafe { libc::eventfd(1, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(stop >= 0);
        // SAFETY: `stop` is a fresh descriptor that nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        run(
            Arc::new(listener),
            0,
            balancer,
            None,
            None,
            stop.as_raw_fd(),
        );
        assert_eq!(hub.port(0).accepts.len(), 0, "accepted after the stop");
    }

    /// A NewConn over one end of a socket pair, from `peer`.
    fn new_conn(
        peer: &str,
        ticket: Option<Box<super::super::per_address::AddressTicket>>,
    ) -> NewConn {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        NewConn {
            fd: a.into(),
            peer: peer.parse().unwrap(),
            listener: 0,
            refuse: None,
            ticket,
        }
    }

    #[test]
    fn a_connection_back_from_full_workers_and_full_inboxes_keeps_its_address_place() {
        // One worker with one slot, taken; an inbox of one, full.
        let hub = Arc::new(Hub::with_inbox(1, 1, 1).unwrap());
        let balancer = Balancer::new(Arc::clone(&hub), 1.0);
        let port = hub.port(0);
        assert!(port.reserve_slot());
        port.accepts.push(new_conn("192.0.2.9:1", None)).unwrap();
        let limit = PerAddress::new(1, 64).unwrap();
        let ip = "192.0.2.1".parse().unwrap();
        let ticket = limit.admit(ip).map(Box::new);
        let back = hand_over(&balancer, new_conn("192.0.2.1:2", ticket)).unwrap_err();
        assert!(back.ticket.is_some(), "it comes back with its place");
        assert_eq!(limit.count(ip), 1);
        // Room again: dispatched (not refused), still holding its place.
        port.accepts.pop().unwrap();
        port.release_slot();
        hand_over(&balancer, back).unwrap();
        let taken = port.accepts.pop().unwrap();
        assert_eq!(taken.refuse, None);
        assert!(taken.ticket.is_some());
        drop(taken);
        assert_eq!(limit.count(ip), 0);
    }

    /// Connections waiting in the kernel's accept queue of the listening socket `fd`
    /// (`tcpi_unacked` of a socket in LISTEN state).
    fn accept_queue(fd: RawFd) -> u32 {
        let (info, _) = sys::tcp_info(fd).expect("TCP_INFO");
        info.tcpi_unacked
    }

    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_burst_beyond_the_inboxes_waits_for_the_workers_instead_of_getting_503() {
        // Inboxes of 2 and far from max_connections: the third connection of a burst must
        // wait until the worker takes one, not be refused as if the server were full.
        let hub = Arc::new(Hub::with_inbox(1, 1000, 2).unwrap());
        let balancer = Arc::new(Balancer::new(Arc::clone(&hub), 1.0));
        let listener = Arc::new(bind("127.0.0.1:0".parse().unwrap(), 16).unwrap());
        let addr = listener.local_addr().unwrap();
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(stop >= 0);
        // SAFETY: `stop` is a fresh descriptor that nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let stop_fd = stop.as_raw_fd();
        let thread = {
            let l = Arc::clone(&listener);
            std::thread::spawn(move || run(l, 0, balancer, None, None, stop_fd))
        };
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let port = hub.port(0);
        wait_for("a full inbox and an empty accept queue", || {
            port.accepts.len() == 2 && accept_queue(listener.as_raw_fd()) == 0
        });
        // The worker takes one: the third connection follows it into the inbox.
        let first = port.accepts.pop().unwrap();
        assert!(first.refuse.is_none());
        port.release_slot();
        wait_for("the third connection in the inbox", || {
            port.accepts.len() == 2
        });
        let mut taken = vec![first];
        while let Some(nc) = port.accepts.pop() {
            assert!(nc.refuse.is_none(), "{} was to be refused", nc.peer);
            taken.push(nc);
        }
        assert_eq!(taken.len(), 3);
        // Nobody was answered (and every accepted socket is still open here): each client's
        // socket has nothing to read.
        for mut c in clients {
            c.set_nonblocking(true).unwrap();
            let mut b = [0u8; 64];
            let r = std::io::Read::read(&mut c, &mut b);
            assert!(
                matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
                "a client was answered: {r:?}"
            );
        }
        // SAFETY: writes 8 bytes from a live u64 to the eventfd.
        let one = 1u64;
        assert_eq!(
            unsafe { libc::write(stop_fd, &one as *const u64 as *const libc::c_void, 8) },
            8
        );
        thread.join().unwrap();
    }
}
