//! A network instance that stays behind: its queue went above its high-water mark, so the
//! connections that send to it are not read (back-pressure) until it drains to half the
//! mark, and has not for [`WARN_AFTER`] or more (the watch looks once a second, and counts a
//! pause since its last look as still behind). The
//! server's once-a-second watch warns of it once, and says when it has caught up: an
//! operator saw only a queue growing in the status report, and no line at any level (a
//! trial's service took 50-200 ms per message while clients sent 50 a second).
//!
//! Owns the watch's state per instance, behind a lock only the watch takes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The watch warns of an instance behind for this long.
pub(crate) const WARN_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(crate) struct Behind(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    /// When the watch first saw the instance behind (None: not behind at its last look).
    since: Option<Instant>,
    /// The watch warned of this time behind.
    warned: bool,
}

/// What the watch has to say of an instance.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum News {
    Nothing,
    /// Behind for this long: warn (once per time behind).
    Behind(Duration),
    /// No longer behind, after this long, and the watch had warned of it.
    CaughtUp(Duration),
}

impl Behind {
    /// The watch: the instance is `behind` now (at `now`); what to say of it.
    pub fn look(&self, behind: bool, now: Instant) -> News {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match (behind, s.since) {
            (true, None) => {
                s.since = Some(now);
                News::Nothing
            }
            (true, Some(since)) if !s.warned && now.duration_since(since) >= WARN_AFTER => {
                s.warned = true;
                News::Behind(now.duration_since(since))
            }
            (false, Some(since)) => {
                let warned = std::mem::take(&mut *s).warned;
                if warned {
                    News::CaughtUp(now.duration_since(since))
                } else {
                    News::Nothing
                }
            }
            _ => News::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_is_warned_of_once_and_caught_up_said_only_then() {
        let b = Behind::default();
        let t = Instant::now();
        assert_eq!(b.look(false, t), News::Nothing);
        assert_eq!(b.look(true, t), News::Nothing, "just behind");
        assert_eq!(b.look(true, t + Duration::from_secs(4)), News::Nothing);
        assert_eq!(
            b.look(true, t + WARN_AFTER),
            News::Behind(WARN_AFTER),
            "behind long enough"
        );
        assert_eq!(
            b.look(true, t + Duration::from_secs(9)),
            News::Nothing,
            "once"
        );
        assert_eq!(
            b.look(false, t + Duration::from_secs(12)),
            News::CaughtUp(Duration::from_secs(12))
        );
        // A short time behind, not warned of: its end is not news either.
        assert_eq!(b.look(true, t + Duration::from_secs(20)), News::Nothing);
        assert_eq!(b.look(false, t + Duration::from_secs(21)), News::Nothing);
    }
}
