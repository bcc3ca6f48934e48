//! Where a standalone instance's `run()` stands, for the status report (SIGUSR1) and the
//! stop's warning: its failures in a row (a service whose `run()` failed in a loop looked
//! healthy in the report: a trial's receiver logged one error per back-off while its status
//! line said only "standalone"), and whether it has returned (an instance that does not stop
//! in time is held by its `run()` or by its `onShutdown`), and the `cws` connections its
//! instances hold (each one a descriptor, which the report's total alone did not place).
//!
//! Owns three atomics per instance, written by the instance's thread and read by the report,
//! and one count for the service. No lock.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A `run()` that has run this long since it was started again counts as working: its
/// failures before are history (the back-off starts over, and the report leaves them out).
pub(crate) const WORKING_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct RunState {
    per_instance: Box<[Instance]>,
    /// `cws` connections of all its instances, from `cws:new` until each is dropped.
    cws: AtomicUsize,
}

#[derive(Debug, Default)]
struct Instance {
    /// Failures in a row (0: none since `run()` last worked, or it returned).
    in_a_row: AtomicU32,
    /// When `run()` is started again, in milliseconds of [`clock`].
    next_try_ms: AtomicU64,
    /// `run()` has returned: the instance idles until the stop, or runs `onShutdown`.
    returned: AtomicBool,
}

/// Milliseconds since the first call: a clock the atomics can hold.
fn clock() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl RunState {
    pub fn new(instances: usize) -> RunState {
        RunState {
            per_instance: (0..instances).map(|_| Instance::default()).collect(),
            cws: AtomicUsize::new(0),
        }
    }

    /// A `cws` connection was made.
    pub fn cws_made(&self) {
        self.cws.fetch_add(1, Ordering::Relaxed);
    }

    /// A `cws` connection was dropped (its socket closed).
    pub fn cws_dropped(&self) {
        self.cws.fetch_sub(1, Ordering::Relaxed);
    }

    /// The report's words for the `cws` connections held, or None without any.
    pub fn cws_summary(&self) -> Option<String> {
        match self.cws.load(Ordering::Relaxed) {
            0 => None,
            n => Some(format!("{n} cws connection(s)")),
        }
    }

    /// `run()` of `instance` failed and starts again in `wait`; `first` when the failure is
    /// the first in a row (the run before it worked for [`WORKING_AFTER`]).
    pub fn failed(&self, instance: usize, wait: Duration, first: bool) {
        let Some(f) = self.per_instance.get(instance) else {
            return;
        };
        if first {
            f.in_a_row.store(1, Ordering::Relaxed);
        } else {
            f.in_a_row.fetch_add(1, Ordering::Relaxed);
        }
        let at = clock().saturating_add(wait.as_millis() as u64);
        f.next_try_ms.store(at, Ordering::Relaxed);
    }

    /// `run()` of `instance` has returned (or the instance never runs one).
    pub fn returned(&self, instance: usize) {
        if let Some(f) = self.per_instance.get(instance) {
            f.in_a_row.store(0, Ordering::Relaxed);
            f.returned.store(true, Ordering::Relaxed);
        }
    }

    /// Whether `run()` of `instance` has returned.
    pub fn has_returned(&self, instance: usize) -> bool {
        self.per_instance
            .get(instance)
            .is_some_and(|f| f.returned.load(Ordering::Relaxed))
    }

    /// The report's words for the instances whose `run()` is failing, or None: `run() failed
    /// 3 time(s) in a row in instance 0, started again in 4 s` (or `running again for 2 s`,
    /// until it has run for [`WORKING_AFTER`]).
    pub fn summary(&self) -> Option<String> {
        self.summary_at(clock())
    }

    /// [`summary`](Self::summary) at `now` ([`clock`]'s milliseconds).
    fn summary_at(&self, now: u64) -> Option<String> {
        let working = WORKING_AFTER.as_millis() as u64;
        let parts: Vec<String> = self
            .per_instance
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let n = f.in_a_row.load(Ordering::Relaxed);
                let at = f.next_try_ms.load(Ordering::Relaxed);
                if n == 0 || now >= at.saturating_add(working) {
                    return None;
                }
                let when = if at > now {
                    format!("started again in {} s", (at - now).div_ceil(1000))
                } else {
                    format!("running again for {} s", (now - at) / 1000)
                };
                Some(format!(
                    "run() failed {n} time(s) in a row in instance {i}, {when}"
                ))
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_the_failures_in_a_row_and_the_wait() {
        let f = RunState::new(2);
        assert_eq!(f.summary(), None, "no failure yet");
        f.failed(1, Duration::from_secs(1), true);
        f.failed(1, Duration::from_secs(30), false);
        // Out of range: ignored, not a panic.
        f.failed(2, Duration::from_secs(1), true);
        let s = f.summary().expect("a failure");
        assert!(
            s.starts_with("run() failed 2 time(s) in a row in instance 1, started again in ")
                && s.ends_with(" s"),
            "{s}"
        );
        // A run that had worked for a while starts the count over.
        f.failed(1, Duration::ZERO, true);
        assert_eq!(
            f.summary().as_deref(),
            Some("run() failed 1 time(s) in a row in instance 1, running again for 0 s")
        );
        // A run() that returned is not failing.
        assert!(!f.has_returned(1));
        f.returned(1);
        assert_eq!(f.summary(), None);
        assert!(f.has_returned(1));
    }

    #[test]
    fn failures_are_left_out_once_run_has_worked_again_for_a_while() {
        let f = RunState::new(1);
        f.failed(0, Duration::ZERO, true);
        let again = f.per_instance[0].next_try_ms.load(Ordering::Relaxed);
        let working = WORKING_AFTER.as_millis() as u64;
        assert!(
            f.summary_at(again + working - 1).is_some(),
            "not yet working"
        );
        assert_eq!(f.summary_at(again + working), None);
    }
}
