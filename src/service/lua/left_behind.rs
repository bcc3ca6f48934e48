//! Instance threads the server gave up waiting for: a start past its timeout, a stop past its
//! grace. Nothing can end a thread from outside; a callback that never returns keeps its thread,
//! and a core while it spins, until the process exits. They are listed here so that the status
//! report (SIGUSR1) names them until they end, instead of the service looking stopped.
//!
//! Owns the process-wide list; entries whose thread has ended are dropped as it is read.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Mutex;
use std::time::Instant;

struct Left {
    service: String,
    index: usize,
    /// What was given up: "its start timed out", "it did not stop in time".
    what: &'static str,
    since: Instant,
    /// The instance's word that its thread is about to end (dropped with the thread).
    finished: Receiver<()>,
}

impl Left {
    fn runs(&self) -> bool {
        matches!(self.finished.try_recv(), Err(TryRecvError::Empty))
    }
}

static LEFT: Mutex<Vec<Left>> = Mutex::new(Vec::new());

/// Instance `index` of `service` is no longer waited for (`what` says why); its thread runs
/// on, and `finished` hears when it ends. The caller drops the thread's handle (detaching it:
/// its stack is unmapped as it exits, not kept for a join that never comes).
pub(crate) fn note(service: &str, index: usize, what: &'static str, finished: Receiver<()>) {
    let mut left = LEFT.lock().unwrap_or_else(|e| e.into_inner());
    sweep_ended(&mut left);
    left.push(Left {
        service: service.to_string(),
        index,
        what,
        since: Instant::now(),
        finished,
    });
}

/// What the error of a start given up at its timeout begins with.
pub(crate) const START_TIMEOUT_TEXT: &str = "init/onStart did not finish within";

/// What [`note`] is told of a start given up at its timeout.
pub(crate) const START_TIMED_OUT: &str = "its start timed out";

/// Whether a start of `service` given up at its timeout still runs (its `init` or `onStart`
/// has not returned yet).
pub(crate) fn start_still_runs(service: &str) -> bool {
    let mut left = LEFT.lock().unwrap_or_else(|e| e.into_inner());
    sweep_ended(&mut left);
    left.iter()
        .any(|l| l.service == service && l.what == START_TIMED_OUT)
}

/// One status line for each such thread still running.
pub fn status() -> Vec<String> {
    let mut left = LEFT.lock().unwrap_or_else(|e| e.into_inner());
    sweep_ended(&mut left);
    left.iter()
        .map(|l| {
            format!(
                "service {} instance {}: its thread still runs, {} after {} (a callback that \
                 does not return keeps it, and a core while it spins, until the process exits)",
                l.service,
                l.index,
                crate::time_fmt::uptime(l.since.elapsed()),
                l.what
            )
        })
        .collect()
}

/// Drops the threads that have ended, each with a line saying so (the status report named it
/// until now; the operator waiting for it learns when it is gone). Called once a second too.
pub(crate) fn sweep() {
    sweep_ended(&mut LEFT.lock().unwrap_or_else(|e| e.into_inner()));
}

fn sweep_ended(left: &mut Vec<Left>) {
    left.retain(|l| {
        let runs = l.runs();
        if !runs {
            crate::info!(
                "service {} instance {}: its thread has ended, {} after {}",
                l.service,
                l.index,
                crate::time_fmt::uptime(l.since.elapsed()),
                l.what
            );
        }
        runs
    });
}
