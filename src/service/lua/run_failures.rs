//! A standalone service's `run()` failing again and again, for the status report (SIGUSR1): a
//! service whose `run()` failed in a loop looked healthy there (a trial's receiver logged one
//! error per back-off while its status line said only "standalone").
//!
//! Owns two atomics per instance, written by the instance's thread when its `run()` fails
//! and read by the report. No lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct RunFailures {
    per_instance: Box<[Failures]>,
}

#[derive(Debug, Default)]
struct Failures {
    /// Failures in a row (0: none since `run()` last ran long enough to count as working).
    in_a_row: AtomicU32,
    /// When `run()` is started again, in milliseconds of [`clock`].
    next_try_ms: AtomicU64,
}

/// Milliseconds since the first call: a clock the atomics can hold.
fn clock() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl RunFailures {
    pub fn new(instances: usize) -> RunFailures {
        RunFailures {
            per_instance: (0..instances).map(|_| Failures::default()).collect(),
        }
    }

    /// `run()` of `instance` failed and starts again in `wait`; `first` when the failure is
    /// the first in a row (the run before it worked for a while).
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

    /// The report's words for the instances whose `run()` failed, or None: `run() failed 3
    /// time(s) in a row in instance 0, started again in 4 s` (or `running again for 2 s`).
    pub fn summary(&self) -> Option<String> {
        let now = clock();
        let parts: Vec<String> = self
            .per_instance
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let n = f.in_a_row.load(Ordering::Relaxed);
                (n > 0).then(|| {
                    let at = f.next_try_ms.load(Ordering::Relaxed);
                    let when = if at > now {
                        format!("started again in {} s", (at - now).div_ceil(1000))
                    } else {
                        format!("running again for {} s", (now - at) / 1000)
                    };
                    format!("run() failed {n} time(s) in a row in instance {i}, {when}")
                })
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
        let f = RunFailures::new(2);
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
    }
}
