//! Process signals: SIGTERM/SIGINT stop, SIGHUP reloads, SIGPIPE is ignored (every send uses
//! MSG_NOSIGNAL anyway). Signals are blocked in all threads and taken with `sigwait` by the
//! main thread, so no handler ever runs inside a worker.

use std::os::unix::net::UnixDatagram;

pub enum Signal {
    Stop(&'static str),
    Reload,
}

pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks SIGTERM, SIGINT and SIGHUP for this thread and every thread it starts later,
    /// and ignores SIGPIPE.
    pub fn block() -> Signals {
        // SAFETY: sigset_t is plain data; it is initialised by sigemptyset before use, and the
        // calls only read/modify this process's signal state.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGHUP);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            Signals { set }
        }
    }

    /// Waits for the next signal of the set.
    pub fn wait(&self) -> Signal {
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `self.set` was initialised in `block`; `sig` is a valid out pointer.
            let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
            if rc != 0 {
                continue;
            }
            return match sig {
                libc::SIGHUP => Signal::Reload,
                libc::SIGINT => Signal::Stop("SIGINT"),
                _ => Signal::Stop("SIGTERM"),
            };
        }
    }
}

/// Sends a state line to systemd when run as a `Type=notify` service (`NOTIFY_SOCKET`);
/// does nothing otherwise. Abstract socket names start with '@'.
pub fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let res = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = res {
        crate::warn!("cannot notify systemd ({state}): {e}");
    }
}
