//! Reminders of the served certificate's end while the server runs.
//!
//! Owns: when to say that the certificate expired or expires soon. Start-up and every reload
//! say it already (`net::tls`); a server that runs for months between reloads would otherwise
//! say nothing when a renewal fails and its certificate runs out. The main thread looks once
//! an hour and logs a warning at most once a day per certificate, and at once when the
//! certificate changed or crossed its end.
//!
//! Must never: read files or block: it looks at what the TLS context already holds.

use std::time::{Duration, Instant};

use crate::net::tls::CertInfo;

/// How often the served certificate is looked at.
pub const LOOK_EVERY: Duration = Duration::from_secs(3600);

/// How often the same notice is repeated while it holds.
pub const REPEAT_EVERY: Duration = Duration::from_secs(24 * 3600);

/// What the last notice was about.
struct Told {
    fingerprint: String,
    expired: bool,
    at: Instant,
}

/// See the module documentation.
pub struct ExpiryWatch {
    next_look: Instant,
    last: Option<Told>,
}

impl ExpiryWatch {
    /// A watch begun at `now`, the start-up having said what it said of `served` (the
    /// certificate at `unix`, seconds since the epoch): that counts as the first notice.
    pub fn new(now: Instant, unix: i64, served: Option<&CertInfo>) -> ExpiryWatch {
        let last = served
            .filter(|info| info.expiry_notice(unix).is_some())
            .map(|info| Told {
                fingerprint: info.fingerprint.clone(),
                expired: info.expired_at(unix),
                at: now,
            });
        ExpiryWatch {
            next_look: now + LOOK_EVERY,
            last,
        }
    }

    /// The warning to log at `now` (`unix` the same moment as seconds since the epoch) for the
    /// certificate served then (asked of `served` only when a look is due), if one is due.
    pub fn look(
        &mut self,
        now: Instant,
        unix: i64,
        served: impl FnOnce() -> Option<CertInfo>,
    ) -> Option<String> {
        if now < self.next_look {
            return None;
        }
        self.next_look = now + LOOK_EVERY;
        let info = &served()?;
        let Some(notice) = info.expiry_notice(unix) else {
            self.last = None;
            return None;
        };
        let expired = info.expired_at(unix);
        let due = self.last.as_ref().is_none_or(|told| {
            told.fingerprint != info.fingerprint
                || told.expired != expired
                || now.duration_since(told.at) >= REPEAT_EVERY
        });
        if !due {
            return None;
        }
        self.last = Some(Told {
            fingerprint: info.fingerprint.clone(),
            expired,
            at: now,
        });
        Some(format!(
            "tls: the served certificate (CN={}) {notice}",
            info.subject.as_deref().unwrap_or("-")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn cert(fingerprint: &str, not_after_unix: i64) -> CertInfo {
        CertInfo {
            subject: Some("example.org".into()),
            fingerprint: fingerprint.into(),
            not_after: Some("2027-01-01 00:00:00 UTC".into()),
            not_after_unix: Some(not_after_unix),
        }
    }

    #[test]
    fn a_certificate_far_from_its_end_is_never_mentioned() {
        let t0 = Instant::now();
        let c = cert("a", 100 * DAY);
        let mut w = ExpiryWatch::new(t0, 0, Some(&c));
        for hour in 1..=48 {
            let later = t0 + LOOK_EVERY * hour;
            assert_eq!(
                w.look(later, i64::from(hour) * 3600, || Some(c.clone())),
                None
            );
        }
        assert_eq!(w.look(t0 + LOOK_EVERY, 0, || None), None);
    }

    #[test]
    fn an_end_near_is_told_once_a_day_and_its_passing_at_the_next_look() {
        let t0 = Instant::now();
        // Twenty days to go at the start: nothing said then.
        let c = cert("a", 20 * DAY);
        let mut w = ExpiryWatch::new(t0, 0, Some(&c));
        // Not before the first look is due.
        assert_eq!(
            w.look(t0 + LOOK_EVERY / 2, 7 * DAY, || Some(c.clone())),
            None
        );
        let at = |days: u32, hours: u32| {
            (
                t0 + Duration::from_secs(u64::from(days) * 86_400 + u64::from(hours) * 3600),
                i64::from(days) * DAY + i64::from(hours) * 3600,
            )
        };
        // Six days later (fourteen left): told, with the days left.
        let (now, unix) = at(6, 1);
        let told = w
            .look(now, unix, || Some(c.clone()))
            .expect("the first notice");
        assert!(told.starts_with("tls: the served certificate (CN=example.org) expires at 2027-01-01 00:00:00 UTC, in 13 days"), "{told}");
        // Not again within the day...
        for hour in 2..=24 {
            let (now, unix) = at(6, hour);
            assert_eq!(w.look(now, unix, || Some(c.clone())), None, "hour {hour}");
        }
        // ...but the next day.
        let (now, unix) = at(7, 1);
        assert!(w.look(now, unix, || Some(c.clone())).is_some());
        // Its end passing is told at the next look, whatever was said an hour before.
        let (now, unix) = at(20, 0);
        assert!(w.look(now, unix, || Some(c.clone())).is_some());
        let (now, unix) = at(20, 1);
        let told = w
            .look(now, unix, || Some(c.clone()))
            .expect("the end passed");
        assert!(
            told.contains("expired at 2027-01-01 00:00:00 UTC; clients will refuse it"),
            "{told}"
        );
        // A renewed certificate far from its end: quiet again; a new near one is told at once.
        let (now, unix) = at(20, 2);
        assert_eq!(w.look(now, unix, || Some(cert("b", 100 * DAY))), None);
        let (now, unix) = at(20, 3);
        assert!(w.look(now, unix, || Some(cert("c", 21 * DAY))).is_some());
    }

    #[test]
    fn what_the_start_up_said_is_not_said_again_within_the_day() {
        let t0 = Instant::now();
        let c = cert("a", -DAY);
        let mut w = ExpiryWatch::new(t0, 0, Some(&c));
        for hour in 1..=23 {
            assert_eq!(w.look(t0 + LOOK_EVERY * hour, 0, || Some(c.clone())), None);
        }
        assert!(w
            .look(t0 + LOOK_EVERY * 24, 0, || Some(c.clone()))
            .is_some());
    }
}
