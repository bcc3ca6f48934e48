//! Process signals: SIGTERM/SIGINT stop, SIGHUP reloads, SIGPIPE is ignored (every send uses
//! MSG_NOSIGNAL anyway). Signals are blocked in all threads and taken with `sigwait` by the
//! main thread, so no handler ever runs inside a worker. Once the first SIGTERM/SIGINT has
//! started the graceful shutdown, [`Signals::exit_on_second_stop`] keeps taking them on a
//! thread of its own: a second one ends the process at once.

use std::os::unix::net::UnixDatagram;

pub enum Signal {
    /// SIGTERM or SIGINT: its name and number.
    Stop(&'static str, libc::c_int),
    Reload,
}

/// The exit status after a second SIGTERM/SIGINT cut the graceful shutdown short: 128 plus the
/// signal's number (143 for SIGTERM, 130 for SIGINT), as a shell reports a process that signal
/// killed, and apart from 0 (clean stop), 1 (bad configuration, failed start) and 2 (usage).
pub fn second_stop_status(signo: libc::c_int) -> i32 {
    128 + signo
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
                libc::SIGINT => Signal::Stop("SIGINT", libc::SIGINT),
                _ => Signal::Stop("SIGTERM", libc::SIGTERM),
            };
        }
    }

    /// Called when the first SIGTERM/SIGINT starts the graceful shutdown, which may take
    /// seconds (close handshakes, every service's `onShutdown`): the signals stay blocked, so
    /// a thread keeps taking them. A second SIGTERM or SIGINT logs one line and `_exit`s with
    /// [`second_stop_status`]; a SIGHUP is ignored (there is nothing left to reload).
    pub fn exit_on_second_stop(self) {
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                match self.wait() {
                    Signal::Reload => crate::info!("SIGHUP during shutdown: ignored"),
                    Signal::Stop(name, signo) => {
                        crate::warn!("second signal: exiting now ({name} during shutdown)");
                        // SAFETY: `_exit` ends the process without running atexit handlers
                        // or destructors, which is the point: the graceful shutdown is
                        // abandoned where it stands. Nothing buffered is lost: log lines are
                        // written to stderr whole, one write each, and stdout is unused.
                        unsafe { libc::_exit(second_stop_status(signo)) };
                    }
                }
            });
        if let Err(e) = spawned {
            crate::error!("cannot start the signal thread ({e}): a second SIGTERM will wait");
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
