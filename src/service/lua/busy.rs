//! How long a network instance has been busy with one batch of messages. A callback that does
//! not return (a loop with `"instruction_budget": 0`, which nothing stops) holds its instance
//! and the connections bound to it, and spins a core: the status report (SIGUSR1) names an
//! instance busy for [`REPORT_AFTER`], the server's once-a-second watch warns of one busy for
//! [`WARN_AFTER`], and the instance says when that batch is done.
//!
//! Owns two atomics per instance: the instance writes `since` at the start and the end of each
//! batch (no lock, nothing else on its path), the watch and the report read it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The status report names an instance busy with one batch for this long.
pub(crate) const REPORT_AFTER: Duration = Duration::from_secs(1);
/// The watch warns (once per batch) of an instance busy with one batch for this long.
pub(crate) const WARN_AFTER: Duration = Duration::from_secs(10);

/// Milliseconds since the first call, plus one: 0 means "not busy".
fn now_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_millis())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

#[derive(Debug, Default)]
pub(crate) struct Busy {
    /// When the batch being handled began (`now_ms`), 0 between batches.
    since: AtomicU64,
    /// The `since` of the batch the watch warned of.
    warned: AtomicU64,
}

impl Busy {
    /// The instance: a batch begins.
    pub fn begin(&self) {
        self.since.store(now_ms(), Ordering::Relaxed);
    }

    /// The instance: the batch is done. How long it took when the watch had warned of it (for
    /// the line that says it is over), else None.
    pub fn end(&self) -> Option<Duration> {
        let since = self.since.swap(0, Ordering::Relaxed);
        // Cleared: a next batch begun within the same millisecond is another one.
        let warned = self.warned.swap(0, Ordering::Relaxed);
        (since != 0 && warned == since)
            .then(|| Duration::from_millis(now_ms().saturating_sub(since)))
    }

    /// How long the current batch has run (None between batches).
    pub fn busy_for(&self) -> Option<Duration> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
        }
    }

    /// The watch: how long the current batch has run, once per batch, when that is `after` or
    /// more.
    pub fn warn_once(&self, after: Duration) -> Option<Duration> {
        let since = self.since.load(Ordering::Relaxed);
        let took = Duration::from_millis(now_ms().saturating_sub(since));
        if since == 0 || took < after || self.warned.swap(since, Ordering::Relaxed) == since {
            return None;
        }
        Some(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_warned_of_once_and_its_end_is_reported_only_then() {
        let b = Busy::default();
        assert_eq!(b.busy_for(), None);
        assert_eq!(b.warn_once(Duration::ZERO), None, "between batches");
        b.begin();
        assert!(b.busy_for().is_some());
        assert_eq!(b.warn_once(Duration::from_secs(3600)), None, "not long yet");
        assert!(b.warn_once(Duration::ZERO).is_some());
        assert_eq!(b.warn_once(Duration::ZERO), None, "once per batch");
        assert!(b.end().is_some(), "the end of a batch warned of is told");
        assert_eq!(b.busy_for(), None);
        // A batch nobody warned of ends without a word.
        b.begin();
        assert_eq!(b.end(), None);
    }
}
