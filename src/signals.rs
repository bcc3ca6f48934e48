//! Process signals: SIGTERM/SIGINT stop, SIGHUP reloads, a reload request of `lapps --reload`
//! reloads and answers (see [`crate::reload_request`]), SIGUSR1 logs the server's status,
//! SIGPIPE does nothing (every send uses MSG_NOSIGNAL anyway), nor does SIGXFSZ (a log file at
//! its size limit: the write fails and the log counts what it lost). Signals are blocked in all
//! threads and taken with `sigtimedwait` (a 1 s tick) by the main thread, so no handler ever
//! runs inside a worker. Once the first SIGTERM/SIGINT has started the graceful shutdown,
//! [`Signals::exit_on_second_stop`] keeps taking them on a thread of its own: a second one
//! ends the process at once.
//!
//! A child process inherits the signal mask of the thread that starts it and every ignored
//! signal, across exec: started as they are, a Lua app's `io.popen` child would shrug off
//! systemd's SIGTERM until the stop's SIGKILL, and its pipelines would not end on SIGPIPE.
//! So SIGPIPE (and SIGXFSZ) gets a handler that does nothing (exec resets a handled signal to
//! its default), and [`unblocked_for_a_child`] opens the mask while a child is started.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::reload_request::{self, Requester};

/// The signals [`Signals::block`] blocks (besides the reload request's).
const TAKEN: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1];

/// How long an exit "at once" still waits for the log's last records to reach stderr.
const EXIT_LOG_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// [`TAKEN`] as a signal set.
fn taken_set() -> libc::sigset_t {
    signal_set(&TAKEN)
}

/// `signals` as a signal set.
fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signo in signals {
            libc::sigaddset(&mut set, signo);
        }
        set
    }
}

/// Signals of [`TAKEN`] that reached a thread while [`unblocked_for_a_child`] had them
/// unblocked: one bit per signal number, raised again once they are blocked.
static CAUGHT: AtomicU32 = AtomicU32::new(0);

extern "C" fn catch(signo: libc::c_int) {
    // Async-signal-safe: a lock-free atomic.
    CAUGHT.fetch_or(1 << signo, Ordering::SeqCst);
}

extern "C" fn do_nothing(_: libc::c_int) {}

/// Gives `signo` a handler that does nothing: a signal whose default action would end the
/// process, taken by sigwaitinfo/sigtimedwait while it is blocked, can then never end it.
pub(crate) fn handle_with_nothing(signo: libc::c_int) {
    handle(signo, do_nothing);
}

/// Installs `handler` for `signo`, restarting interrupted calls.
fn handle(signo: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags); the handlers only
    // touch an atomic (`catch`) or nothing (`do_nothing`), which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signo, &action, std::ptr::null_mut());
    }
}

/// Runs `start`, a call that starts a child process (`io.popen`), with SIGTERM, SIGINT, SIGHUP
/// and SIGUSR1 unblocked in this thread, so that the child starts with no standard signal
/// blocked (the reload request's realtime signal stays blocked: nothing sends it to a child).
/// One of them arriving meanwhile is caught (see [`Signals::block`]) and raised again once
/// they are blocked: the thread taking signals gets it as usual, a moment later.
pub fn unblocked_for_a_child<R>(start: impl FnOnce() -> R) -> R {
    struct Reblock(libc::sigset_t);
    impl Drop for Reblock {
        fn drop(&mut self) {
            // SAFETY: `self.0` is the mask `pthread_sigmask` gave back below.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
            let caught = CAUGHT.swap(0, Ordering::SeqCst);
            for signo in TAKEN {
                if caught & (1 << signo) != 0 {
                    // SAFETY: kill(2) on this process; blocked in every thread again, the
                    // signal waits for `sigtimedwait`.
                    unsafe { libc::kill(libc::getpid(), signo) };
                }
            }
        }
    }
    let set = taken_set();
    // SAFETY: sigset_t is plain data; pthread_sigmask fills `old` before it is read.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is initialised; `old` is a valid out pointer.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, &mut old) };
    let _reblock = Reblock(old);
    start()
}

pub enum Signal {
    /// SIGTERM or SIGINT: its name and number.
    Stop(&'static str, libc::c_int),
    /// SIGHUP or the reload request's signal (its name), with the requester that waits for
    /// the answer, if any.
    Reload(&'static str, Option<Requester>),
    /// SIGUSR1: log the server's status.
    Status,
}

/// The exit status after a second SIGTERM/SIGINT cut the graceful shutdown short: 128 plus the
/// signal's number (143 for SIGTERM, 130 for SIGINT), as a shell reports a process that signal
/// killed, and apart from 0 (clean stop), 1 (bad configuration, failed start) and 2 (usage).
pub fn second_stop_status(signo: libc::c_int) -> i32 {
    128 + signo
}

pub struct Signals {
    set: libc::sigset_t,
    /// When [`Signals::wait_ticking`] last ran its tick.
    last_tick: std::cell::Cell<std::time::Instant>,
}

/// A file size limit (LimitFSIZE, `ulimit -f`) reached by the log file: its writes fail with
/// EFBIG (the log counts the lines lost) instead of SIGXFSZ ending the server. First thing in
/// `main`, before anything is logged; a child still gets the default at exec.
pub fn survive_file_size_limit() {
    handle(libc::SIGXFSZ, do_nothing);
}

impl Signals {
    /// Blocks SIGTERM, SIGINT, SIGHUP, SIGUSR1 and the reload request for this thread and every
    /// thread it starts later, with a handler for the moments [`unblocked_for_a_child`] unblocks
    /// the first four (the request stays blocked: re-raised, it would lose its sender); SIGPIPE
    /// gets a handler that does nothing (where Rust's runtime ignored it).
    pub fn block() -> Signals {
        let mut set = taken_set();
        // SAFETY: `set` is initialised; the signal number is valid.
        unsafe { libc::sigaddset(&mut set, reload_request::request_signal()) };
        // SAFETY: `set` is initialised; the call only changes this thread's signal mask.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        for signo in TAKEN {
            handle(signo, catch);
        }
        handle(libc::SIGPIPE, do_nothing);
        // Taken by sigtimedwait like the others; the handler only makes sure a realtime signal
        // never ends the process, and tells `lapps --reload` that this one takes requests.
        handle_with_nothing(reload_request::request_signal());
        Signals {
            set,
            last_tick: std::cell::Cell::new(std::time::Instant::now()),
        }
    }

    /// Waits for the next signal of the set. Meanwhile, once a second, reports the log lines
    /// a flood suppressed that no later line has ([`crate::log::flush_suppressed`]).
    pub fn wait(&self) -> Signal {
        self.wait_ticking(&mut || {})
    }

    /// [`Signals::wait`], running `tick` too about once a second, however often signals come.
    pub fn wait_ticking(&self, tick: &mut dyn FnMut()) -> Signal {
        let tick_if_due = |tick: &mut dyn FnMut()| {
            if self.last_tick.get().elapsed() >= std::time::Duration::from_secs(1) {
                self.last_tick.set(std::time::Instant::now());
                tick();
            }
        };
        let second = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        loop {
            // SAFETY: siginfo_t is plain data that sigtimedwait fills before it is read.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `self.set` was initialised in `block`; `info` and `second` are valid
            // pointers for the call.
            let sig = unsafe { libc::sigtimedwait(&self.set, &mut info, &second) };
            if sig < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
                crate::log::flush_suppressed();
                tick_if_due(tick);
                continue;
            }
            tick_if_due(tick);
            return match sig {
                libc::SIGHUP => Signal::Reload("SIGHUP", None),
                libc::SIGINT => Signal::Stop("SIGINT", libc::SIGINT),
                libc::SIGTERM => Signal::Stop("SIGTERM", libc::SIGTERM),
                libc::SIGUSR1 => Signal::Status,
                s if s == reload_request::request_signal() => {
                    Signal::Reload("SIGRTMIN+1", Requester::of(&info))
                }
                _ => continue, // interrupted
            };
        }
    }

    /// While the services start, which may take minutes (each instance's `init` within its
    /// start timeout, one batch per CPU), a SIGTERM or SIGINT ends the process at once with
    /// [`second_stop_status`]: nothing is served yet to close gracefully, and a stop must not
    /// wait for the start (whose EXTEND_TIMEOUT_USEC lines would stretch systemd's stop
    /// timeout too). A reload waits for the start to end. Until the returned guard is dropped,
    /// which `main` does once the services run, before the listeners open.
    pub fn exit_on_stop_during_start(&self) -> StartWatch {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = std::sync::Arc::clone(&done);
        let stops = signal_set(&[libc::SIGTERM, libc::SIGINT]);
        let spawned = std::thread::Builder::new()
            .name("start-signals".into())
            .spawn(move || {
                // How often the thread looks whether the start is over.
                let tick = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 100_000_000,
                };
                while !seen.load(Ordering::Acquire) {
                    // SAFETY: `stops` is initialised; a null info pointer is allowed.
                    let sig = unsafe { libc::sigtimedwait(&stops, std::ptr::null_mut(), &tick) };
                    let name = match sig {
                        libc::SIGTERM => "SIGTERM",
                        libc::SIGINT => "SIGINT",
                        _ => continue, // the tick, or interrupted
                    };
                    if seen.load(Ordering::Acquire) {
                        // Taken as the start ended: the services run, so the stop is the
                        // graceful one. Pending again, blocked everywhere, for `wait`.
                        // SAFETY: kill(2) on this process with the signal just taken.
                        unsafe { libc::kill(libc::getpid(), sig) };
                        return;
                    }
                    crate::warn!("{name} received during start-up: exiting now");
                    notify_systemd("STOPPING=1");
                    crate::log_writer::flush(EXIT_LOG_DRAIN);
                    // SAFETY: as in `exit_on_second_stop`: the start is abandoned where it
                    // stands, nothing has been served.
                    unsafe { libc::_exit(second_stop_status(sig)) };
                }
            });
        match spawned {
            Ok(thread) => StartWatch {
                done,
                thread: Some(thread),
            },
            Err(e) => {
                crate::error!("cannot start the signal thread ({e}): a stop waits for the start");
                StartWatch { done, thread: None }
            }
        }
    }

    /// Called when the first SIGTERM/SIGINT starts the graceful shutdown, which may take
    /// seconds (close handshakes, every service's `onShutdown`): the signals stay blocked, so
    /// a thread keeps taking them. A second SIGTERM or SIGINT logs one line and `_exit`s with
    /// [`second_stop_status`]; a reload is not made (there is nothing left to reload), and a
    /// requester waiting for one is told it failed.
    pub fn exit_on_second_stop(self) {
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                match self.wait() {
                    Signal::Status => crate::info!("status asked for during shutdown: ignored"),
                    Signal::Reload(_, requester) => {
                        crate::info!("reload asked for during shutdown: ignored");
                        if let Some(r) = requester {
                            r.answer(false);
                        }
                    }
                    Signal::Stop(name, signo) => {
                        crate::warn!("second signal: exiting now ({name} during shutdown)");
                        // The log's queue first (stdout is unused), for a bounded time.
                        crate::log_writer::flush(EXIT_LOG_DRAIN);
                        // SAFETY: `_exit` ends the process without running atexit handlers
                        // or destructors, which is the point: the graceful shutdown is
                        // abandoned where it stands.
                        unsafe { libc::_exit(second_stop_status(signo)) };
                    }
                }
            });
        if let Err(e) = spawned {
            crate::error!("cannot start the signal thread ({e}): a second SIGTERM will wait");
        }
    }
}

/// The thread of [`Signals::exit_on_stop_during_start`]: dropped when the start is over, it
/// ends it (within its 100 ms tick); a stop arriving after waits for [`Signals::wait`].
pub struct StartWatch {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for StartWatch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends a state line to systemd when run as a `Type=notify` service (`NOTIFY_SOCKET`);
/// does nothing otherwise. Abstract socket names start with '@'.
pub fn notify_systemd(state: &str) {
    // Once stopping, a reload still starting instances must not stretch the stop timeout
    // (systemd applies EXTEND_TIMEOUT_USEC to whichever timeout runs). One lock over the
    // check and the send: no extension can follow STOPPING=1.
    static STOPPING: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut stopping = STOPPING.lock().unwrap_or_else(|e| e.into_inner());
    if state == "STOPPING=1" {
        *stopping = true;
    } else if *stopping && state.starts_with("EXTEND_TIMEOUT_USEC=") {
        return;
    }
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
