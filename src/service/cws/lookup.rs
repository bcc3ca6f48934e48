//! Host-name lookups for cws connections: the system's resolver blocks, so each lookup runs on
//! a thread of its own and wakes the instance's event loop through an eventfd.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

/// The longest a connection waits for its host name's addresses. The system's resolver has
/// no deadline of its own (a nameserver that does not answer costs its timeout times its
/// attempts times the nameservers).
pub(super) const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The addresses of `host` by the system's resolver (`getaddrinfo`).
pub(super) fn system_lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// A host name's lookup by the system's resolver, which blocks, on a thread of its own: the
/// instance's other connections go on meanwhile. The answer comes on `rx`, and the thread
/// then signals `wake` (an eventfd), which the event loop polls as the descriptor of every
/// connection waiting for it: connections of one instance to the same host and port started
/// while it runs (before its answer) share it ([`Lookup::start`]). A lookup that outlives its
/// connections ends unseen on its thread.
#[derive(Debug)]
pub(super) struct Lookup {
    host: String,
    rx: std::sync::mpsc::Receiver<io::Result<Vec<SocketAddr>>>,
    /// What came on `rx`, for the other connections sharing the lookup.
    answer: RefCell<Option<Result<Vec<SocketAddr>, String>>>,
    wake: Arc<OwnedFd>,
}

/// Lookups an instance may run at once (each a thread in the system's resolver, which may
/// keep a lookup for half a minute when its nameservers do not answer): one whose nameserver
/// is silent and that keeps opening connections to new names finds out at once, rather than
/// piling up threads.
pub(super) const MAX_LOOKUPS: usize = 64;

/// The resolver function a lookup runs (the system's, or a test's).
pub(super) type Resolver = fn(&str, u16) -> io::Result<Vec<SocketAddr>>;

/// One thread's (instance's) lookups.
#[derive(Default)]
struct Lookups {
    /// How many run, counted until their thread ends.
    running: Arc<AtomicUsize>,
    /// The ones connections wait for, by host and port.
    waited: RefCell<HashMap<(String, u16), Weak<Lookup>>>,
}

std::thread_local! {
    static LOOKUPS: Lookups = Lookups::default();
}

/// Ends a lookup's thread, however it ends (a resolver that panics too): its place is given
/// back, then the connections waiting are woken (so that one that reconnects from its
/// callback finds the place free).
struct LookupDone {
    running: Arc<AtomicUsize>,
    wake: Arc<OwnedFd>,
}

impl Drop for LookupDone {
    fn drop(&mut self) {
        self.running.fetch_sub(1, SeqCst);
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one` to the eventfd `wake` keeps open (shared with
        // the connections, closed when all are done with it).
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

impl Lookup {
    /// The lookup of `host`:`port` for a connection of this thread: the one running already
    /// for another connection, or a new one; refused past [`MAX_LOOKUPS`].
    pub(super) fn start(host: &str, port: u16, resolver: Resolver) -> Result<Rc<Lookup>, String> {
        LOOKUPS.with(|Lookups { running, waited }| {
            let mut waited = waited.borrow_mut();
            waited.retain(|_, l| l.strong_count() > 0);
            let key = (host.to_string(), port);
            // Only while it runs: an answer kept for its sharers (an error, say) is not one
            // for a connection started later (an app reconnecting after that error).
            if let Some(l) = waited
                .get(&key)
                .and_then(Weak::upgrade)
                .filter(|l| l.answer().is_none())
            {
                return Ok(l);
            }
            if running.fetch_add(1, SeqCst) >= MAX_LOOKUPS {
                running.fetch_sub(1, SeqCst);
                return Err(format!(
                    "cannot resolve {host}: {MAX_LOOKUPS} lookups are running already"
                ));
            }
            // (A failed start has given the place back.)
            let l = Lookup::spawn(host, port, resolver, Arc::clone(running))
                .map_err(|e| format!("cannot resolve {host}: {e}"))?;
            let l = Rc::new(l);
            waited.insert(key, Rc::downgrade(&l));
            Ok(l)
        })
    }

    /// The thread and its eventfd; the thread gives its place in `running` back when done,
    /// and a start that fails gives it back at once.
    fn spawn(
        host: &str,
        port: u16,
        resolver: Resolver,
        running: Arc<AtomicUsize>,
    ) -> io::Result<Lookup> {
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            running.fetch_sub(1, SeqCst);
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let (tx, rx) = std::sync::mpsc::channel();
        let name = host.to_string();
        // From here the guard gives the place back: when the thread ends, or with the closure
        // if the thread cannot be started.
        let done = LookupDone {
            running,
            wake: Arc::clone(&wake),
        };
        std::thread::Builder::new()
            .name("cws-resolve".into())
            .spawn(move || {
                let _done = done;
                // Dropped before the guard wakes the connections, also on a panic: the wake
                // finds the answer, or the channel closed, never an empty one.
                let tx = tx;
                let _ = tx.send(resolver(&name, port));
            })?;
        Ok(Lookup {
            host: host.to_string(),
            rx,
            answer: RefCell::new(None),
            wake,
        })
    }

    /// The addresses, once the lookup has answered: `None` while it has not.
    pub(super) fn answer(&self) -> Option<Result<Vec<SocketAddr>, String>> {
        let mut answer = self.answer.borrow_mut();
        if answer.is_none() {
            *answer = Some(match self.rx.try_recv() {
                Err(std::sync::mpsc::TryRecvError::Empty) => return None,
                // The resolver panicked (a bug).
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    Err(format!("cannot resolve {}", self.host))
                }
                Ok(Err(e)) => Err(format!("cannot resolve {}: {e}", self.host)),
                Ok(Ok(addrs)) if addrs.is_empty() => Err(format!("cannot resolve {}", self.host)),
                Ok(Ok(addrs)) => Ok(addrs),
            });
        }
        answer.clone()
    }

    /// The name being resolved, for messages.
    pub(super) fn host(&self) -> &str {
        &self.host
    }

    /// The eventfd the lookup's thread signals when done: the waiting connections' descriptor
    /// for the event loop.
    pub(super) fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }
}
