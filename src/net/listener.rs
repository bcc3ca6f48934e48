//! Listeners: accept connections (non-blocking, close-on-exec), apply the server-wide ACL
//! before anything is read, and pass the socket to the Balancer.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::balancer::Balancer;
use super::hub::NewConn;
use super::sys;
use crate::ws::handshake::error_response;
use crate::{info, syscall, warn};

/// Decides at accept time whether a peer may connect at all.
pub type AclFn = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Binds `addr` with the given backlog; the socket is non-blocking and close-on-exec.
pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    // std sets SO_REUSEADDR and CLOEXEC; listen() again to apply our backlog.
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    // SAFETY: Calling listen() again on a listening socket only changes the backlog (Linux).
    syscall!(unsafe { libc::listen(l.as_raw_fd(), backlog) })?;
    Ok(l)
}

/// The accepting loop of one listener thread. Returns when `stop_fd` becomes readable.
pub fn run(
    listener: Arc<TcpListener>,
    endpoint: usize,
    balancer: Arc<Balancer>,
    acl: Option<AclFn>,
    stop_fd: RawFd,
) {
    let lfd = listener.as_raw_fd();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: lfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        match syscall!(unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) }) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!("listener: poll failed: {e}");
                return;
            }
        }
        if fds[1].revents != 0 {
            return;
        }
        accept_all(lfd, endpoint, &balancer, acl.as_ref());
    }
}

fn accept_all(lfd: RawFd, endpoint: usize, balancer: &Balancer, acl: Option<&AclFn>) {
    loop {
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
                Some(libc::EAGAIN) => return,
                Some(libc::EINTR) | Some(libc::ECONNABORTED) | Some(libc::EPROTO) => continue,
                Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS)
                | Some(libc::ENOMEM) => {
                    warn!("listener: accept failed: {e} (raise LimitNOFILE / max_connections)");
                    return;
                }
                _ => {
                    warn!("listener: accept failed: {e}");
                    return;
                }
            },
        };
        // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let Some(peer) = to_socket_addr(&storage) else {
            continue;
        };
        if let Some(acl) = acl {
            if !acl(peer.ip()) {
                info!("rejected {peer}: denied by the server ACL");
                continue; // dropping `fd` closes it before anything was read
            }
        }
        let conn = NewConn {
            fd,
            peer,
            listener: endpoint,
            reject_full: false,
        };
        if let Err(back) = balancer.dispatch(conn) {
            info!("rejected {peer}: every worker is at max_connections (HTTP 503)");
            if let Err(back) = balancer.reject_full(back) {
                let _ = sys::send(back.fd.as_raw_fd(), &error_response(503, "server full"));
            }
        }
    }
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
