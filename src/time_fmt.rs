//! Wall-clock times as text: the log's ISO 8601 stamps and HTTP's IMF-fixdate.

use std::time::Duration;

/// The civil date and time of `since_epoch` (UTC): year, month 1-12, day 1-31, hours, minutes,
/// seconds, and the weekday (0 = Sunday). Civil-from-days after H. Hinnant.
fn civil(since_epoch: Duration) -> (i64, i64, i64, u64, u64, u64, usize) {
    let secs = since_epoch.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // 1970-01-01 was a Thursday.
    let weekday = (days + 4).rem_euclid(7) as usize;
    (
        year,
        month,
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        weekday,
    )
}

/// `2026-11-25T10:39:57.123Z` from a duration since the Unix epoch.
pub(crate) fn utc_timestamp(since_epoch: Duration) -> String {
    let (year, month, day, h, m, s, _) = civil(since_epoch);
    format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        since_epoch.subsec_millis()
    )
}

/// `Sat, 05 Dec 2026 15:04:05 GMT`: the IMF-fixdate of RFC 9110 section 5.6.7, for a `Date`
/// header field.
pub(crate) fn http_date(since_epoch: Duration) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day, h, m, s, weekday) = civil(since_epoch);
    let month = MONTHS.get((month - 1) as usize).copied().unwrap_or("Jan");
    let weekday = DAYS.get(weekday).copied().unwrap_or("Sun");
    format!("{weekday}, {day:02} {month} {year:04} {h:02}:{m:02}:{s:02} GMT")
}

/// A duration as the status report gives an uptime: `3d 4h 5m 6s`, leading zero units left out.
pub(crate) fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) => format!("{mins}m {secs}s"),
        (0, _, _) => format!("{hours}h {mins}m {secs}s"),
        _ => format!("{days}d {hours}h {mins}m {secs}s"),
    }
}

/// Now, as a duration since the Unix epoch (zero for a clock set before 1970).
pub(crate) fn now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::uptime;
    use std::time::Duration;

    #[test]
    fn formats_utc_timestamps() {
        let t = Duration::from_millis(1_795_604_417_182);
        assert_eq!(super::utc_timestamp(t), "2026-11-25T11:00:17.182Z");
        assert_eq!(
            super::utc_timestamp(Duration::ZERO),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn formats_uptimes() {
        let s = Duration::from_secs;
        assert_eq!(uptime(s(0)), "0s");
        assert_eq!(uptime(s(59)), "59s");
        assert_eq!(uptime(s(60)), "1m 0s");
        assert_eq!(uptime(s(3600 + 61)), "1h 1m 1s");
        assert_eq!(uptime(s(86_400 + 3)), "1d 0h 0m 3s");
    }

    #[test]
    fn formats_http_dates() {
        // RFC 9110 section 5.6.7's example.
        assert_eq!(
            super::http_date(Duration::from_secs(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            super::http_date(Duration::ZERO),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        // A leap day, and the last second of a year.
        assert_eq!(
            super::http_date(Duration::from_secs(1_709_164_800)),
            "Thu, 29 Feb 2024 00:00:00 GMT"
        );
        assert_eq!(
            super::http_date(Duration::from_secs(1_798_761_599)),
            "Thu, 31 Dec 2026 23:59:59 GMT"
        );
    }
}
