//! When to remind the operator of the served certificate's end.
//!
//! Owns: the rule. Start-up and every reload tell of an expired certificate, or of one within
//! [`EXPIRY_NOTICE_SECS`] of its end (`net::tls`), and record it here. A server that runs for
//! months between reloads would otherwise say nothing when a renewal fails and its certificate
//! runs out, so the main thread looks every [`LOOK_EVERY`] and tells again when [`Reminders::due`]
//! says so: once a day while the notice holds, and at the look after the certificate changed,
//! its start came or its end passed. (A certificate not valid yet is told of too: one put in
//! place early, or a host clock that is behind.)
//!
//! Must never: read files, block or log: the caller does that with what this answers.

use std::time::{Duration, Instant};

use crate::net::tls::CertInfo;

/// How long before its end a certificate is said to expire soon.
pub const EXPIRY_NOTICE_SECS: i64 = 14 * 86_400;

/// How often the main thread looks at the served certificate.
pub const LOOK_EVERY: Duration = Duration::from_secs(3600);

/// How often the same notice is told again while it holds.
pub const REPEAT_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Where a certificate stands at a moment, as far as notices go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    NotValidYet,
    Valid,
    Expired,
}

impl Standing {
    fn of(info: &CertInfo, unix: i64) -> Standing {
        if info.not_before_unix.is_some_and(|start| unix < start) {
            Standing::NotValidYet
        } else if info.expired_at(unix) {
            Standing::Expired
        } else {
            Standing::Valid
        }
    }
}

/// What the last notice was about.
#[derive(Debug)]
struct Told {
    fingerprint: String,
    standing: Standing,
    at: Instant,
}

/// The notices told so far (see the module documentation).
#[derive(Debug, Default)]
pub struct Reminders {
    last: Option<Told>,
}

impl Reminders {
    /// The certificate `info` was just told of at `now` (start-up, a reload), `unix` the same
    /// moment as seconds since the epoch; or it had nothing to tell, which forgets the past.
    pub fn told(&mut self, info: &CertInfo, unix: i64, now: Instant) {
        self.last = info.expiry_notice(unix).map(|_| Told {
            fingerprint: info.fingerprint.clone(),
            standing: Standing::of(info, unix),
            at: now,
        });
    }

    /// At a look: the notice to tell of `info` now, if one is due (and then it counts as told).
    pub fn due(&mut self, info: &CertInfo, unix: i64, now: Instant) -> Option<String> {
        let Some(notice) = info.expiry_notice(unix) else {
            self.last = None;
            return None;
        };
        let standing = Standing::of(info, unix);
        let due = self.last.as_ref().is_none_or(|told| {
            told.fingerprint != info.fingerprint
                || told.standing != standing
                || now.saturating_duration_since(told.at) >= REPEAT_EVERY
        });
        if due {
            self.told(info, unix, now);
        }
        due.then_some(notice)
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
            not_before: Some("2026-01-01 00:00:00 UTC".into()),
            not_before_unix: Some(0),
        }
    }

    #[test]
    fn notices_say_how_long_is_left_in_words() {
        let c = cert("a", 20 * DAY);
        assert_eq!(c.expiry_notice(0), None);
        assert_eq!(c.expiry_notice(6 * DAY), None);
        let at = "expires at 2027-01-01 00:00:00 UTC, in";
        let renew = "renew it (a reload reads the renewed files)";
        for (now, left) in [
            (6 * DAY + 1, "13 days"),
            (19 * DAY, "1 day"),
            (19 * DAY + 1, "23 hours"),
            (20 * DAY - 3600, "1 hour"),
            (20 * DAY - 3599, "less than an hour"),
            (20 * DAY, "less than an hour"),
        ] {
            assert_eq!(
                c.expiry_notice(now),
                Some(format!("{at} {left}: {renew}")),
                "{now}"
            );
        }
        assert_eq!(
            c.expiry_notice(20 * DAY + 1).unwrap(),
            "expired at 2027-01-01 00:00:00 UTC; clients will refuse it"
        );
    }

    #[test]
    fn a_certificate_not_valid_yet_is_told_of_and_again_when_its_end_comes_near_at_once() {
        let t0 = Instant::now();
        let mut r = Reminders::default();
        // Valid from day 10 to day 20 (a short-lived certificate put in place early).
        let c = CertInfo {
            not_before_unix: Some(10 * DAY),
            ..cert("a", 20 * DAY)
        };
        assert_eq!(
            c.expiry_notice(8 * DAY - 1).unwrap(),
            "is not valid before 2026-01-01 00:00:00 UTC, in 2 days: clients refuse it until \
             then (is this host's clock right?)"
        );
        assert!(c
            .expiry_notice(10 * DAY - 1)
            .unwrap()
            .contains("in less than an hour"));
        r.told(&c, 8 * DAY, t0);
        assert_eq!(r.due(&c, 8 * DAY + 3600, t0 + LOOK_EVERY), None);
        // Its start comes within 14 days of its end: that is told at the next look.
        let told = r
            .due(&c, 10 * DAY, t0 + LOOK_EVERY * 48)
            .expect("valid now, and near its end");
        assert!(told.starts_with("expires at"), "{told}");
    }

    #[test]
    fn a_certificate_far_from_its_end_is_never_due() {
        let t0 = Instant::now();
        let mut r = Reminders::default();
        let c = cert("a", 100 * DAY);
        r.told(&c, 0, t0);
        for hour in 1..=48u32 {
            let now = t0 + LOOK_EVERY * hour;
            assert_eq!(r.due(&c, i64::from(hour) * 3600, now), None);
        }
    }

    #[test]
    fn a_notice_is_due_once_a_day_and_at_once_when_the_end_passes_or_the_certificate_changes() {
        let t0 = Instant::now();
        let mut r = Reminders::default();
        let c = cert("a", 20 * DAY);
        let at = |hours: u32| (i64::from(hours) * 3600, t0 + LOOK_EVERY * hours);
        // Twenty days to go at the start: nothing told then.
        r.told(&c, 0, t0);
        assert_eq!(r.due(&c, at(1).0, at(1).1), None);
        // Fourteen days left: due at the first look, then not within the day...
        let first = 6 * 24 + 1;
        assert!(r.due(&c, at(first).0, at(first).1).is_some());
        for h in first + 1..first + 24 {
            assert_eq!(r.due(&c, at(h).0, at(h).1), None, "hour {h}");
        }
        // ...but a day later.
        assert!(r.due(&c, at(first + 24).0, at(first + 24).1).is_some());
        // Its end passing is due at the next look, whatever was told an hour before.
        let end = 20 * 24;
        assert!(r.due(&c, at(end - 1).0, at(end - 1).1).is_some()); // a day after the last

        let told = r
            .due(&c, at(end + 1).0, at(end + 1).1)
            .expect("the end passed");
        assert!(told.starts_with("expired at"), "{told}");
        // A renewed certificate far from its end: quiet; a new near one is due at once.
        assert_eq!(
            r.due(&cert("b", 100 * DAY), at(end + 2).0, at(end + 2).1),
            None
        );
        let near = cert("c", 21 * DAY);
        assert!(r.due(&near, at(end + 3).0, at(end + 3).1).is_some());
    }

    #[test]
    fn what_a_start_up_or_a_reload_told_is_not_due_again_within_the_day() {
        let t0 = Instant::now();
        let mut r = Reminders::default();
        let c = cert("a", -DAY);
        r.told(&c, 0, t0);
        for hour in 1..24u32 {
            assert_eq!(r.due(&c, 0, t0 + LOOK_EVERY * hour), None);
        }
        assert!(r.due(&c, 0, t0 + LOOK_EVERY * 24).is_some());
        // A reload that told of a new certificate: that one is not due at the next look.
        let d = cert("d", DAY);
        r.told(&d, 0, t0 + LOOK_EVERY * 25);
        assert_eq!(r.due(&d, 0, t0 + LOOK_EVERY * 26), None);
    }
}
