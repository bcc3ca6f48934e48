//! Log records on stderr (through the writer thread of [`crate::log_writer`] once the server
//! runs: no thread waits for a stalled stderr), one line each but for the few that list several
//! problems. On a terminal every line starts with our timestamp and level; under systemd
//! (stderr connected to the journal, `JOURNAL_STREAM` set) with the `<N>` priority prefix
//! journald reads instead, so `journalctl -p err` finds our errors. Level is set once from
//! `LAPPS_LOG` (error, warn, info, debug, any case); default info.
//!
//! Lines a remote peer can cause (one per bad request, refused connection, timeout, Lua error)
//! go through the `*_limited!` macros: at most [`PER_SECOND`] lines a second per call site
//! ([`write_limited_kind`]: per kind of line of a call site; [`service_log!`](crate::service_log):
//! per Lua service and call site), the rest counted and reported by the next line that passes (or, when none comes, by
//! [`flush_suppressed`] a second or two later, naming the last line written), so a flood of
//! misbehaving clients cannot flood the journal (whose own rate limit would then drop our real
//! errors too).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[repr(u8)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static INIT: OnceLock<()> = OnceLock::new();

static JOURNAL: AtomicBool = AtomicBool::new(false);

fn init() {
    INIT.get_or_init(|| {
        let level = match std::env::var("LAPPS_LOG")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            Ok(v) => level_named(v).unwrap_or(Level::Info),
            Err(_) => Level::Info,
        };
        LEVEL.store(level as u8, Ordering::Relaxed);
        JOURNAL.store(stderr_is_the_journal(), Ordering::Relaxed);
    });
}

fn level_named(v: &str) -> Option<Level> {
    match v {
        "error" => Some(Level::Error),
        "warn" | "warning" => Some(Level::Warn),
        "info" => Some(Level::Info),
        "debug" | "trace" => Some(Level::Debug),
        _ => None,
    }
}

/// `LAPPS_LOG` when it is set to something that is not a level (logging is then at info): for
/// a warning at start-up, so that a typo does not pass for the level it meant.
pub fn unknown_level() -> Option<String> {
    let v = std::env::var("LAPPS_LOG").ok()?;
    level_named(&v.to_ascii_lowercase()).is_none().then_some(v)
}

/// Whether stderr is the journal stream systemd connected (`JOURNAL_STREAM` names its device
/// and inode; a redirected stderr keeps the variable but is another file).
fn stderr_is_the_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat writes into a zeroed stat we own; fd 2 is only inspected.
    let st = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(2, &mut st) != 0 {
            return false;
        }
        st
    };
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

pub fn enabled(level: Level) -> bool {
    init();
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

#[doc(hidden)]
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    crate::log_writer::emit(record(level, args).as_bytes());
}

/// A log record as it goes to stderr: its lines, newline-terminated.
pub(crate) fn record(level: Level, args: std::fmt::Arguments<'_>) -> String {
    let (tag, priority) = match level {
        Level::Error => ("ERROR", 3),
        Level::Warn => ("WARN", 4),
        Level::Info => ("INFO", 6),
        Level::Debug => ("DEBUG", 7),
    };
    if JOURNAL.load(Ordering::Relaxed) {
        // journald stamps the time itself and reads the level from the prefix, line by line:
        // every line of a record carries it (a config error lists one problem per line).
        journal_lines(priority, &format!("{tag} {args}"))
    } else {
        let now = crate::time_fmt::utc_timestamp(crate::time_fmt::now());
        stamped_lines(&now, tag, &args.to_string())
    }
}

/// `text` as log lines each starting with `now` and `tag`, so that a tool reading the log line
/// by line (grep, a log shipper) finds the time and level on every line of a record that
/// lists several problems (an invalid configuration on reload); lines after the first are
/// indented to show they continue it.
fn stamped_lines(now: &str, tag: &str, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + now.len() + tag.len() + 3);
    for (i, line) in text.lines().enumerate() {
        let indent = if i == 0 { "" } else { "  " };
        out.push_str(&format!("{now} {tag} {indent}{line}\n"));
    }
    if out.is_empty() {
        out = format!("{now} {tag} \n");
    }
    out
}

/// `text` with journald's `<priority>` prefix on each of its lines.
fn journal_lines(priority: u8, text: &str) -> String {
    text.lines().map(|l| format!("<{priority}>{l}\n")).collect()
}

/// A failure reported on stderr before (or instead of) logging, e.g. an invalid configuration
/// at start-up or from `--check-config`: as it is on a terminal, each line at error priority
/// under the journal (a systemd `ExecStartPre` check's output included).
pub fn error_text(text: &str) {
    text_at(3, text);
}

/// A warning of `--check-config` on stderr, with the warning priority under the journal, so
/// that `journalctl -p warning` shows what an `ExecStartPre`/`ExecReload` check found.
pub fn warning_text(text: &str) {
    text_at(4, text);
}

fn text_at(priority: u8, text: &str) {
    init();
    let out = if JOURNAL.load(Ordering::Relaxed) {
        journal_lines(priority, text)
    } else {
        format!("{text}\n")
    };
    crate::log_writer::emit(out.as_bytes());
}

/// A string a peer sent, fit for a log line: quoted and escaped (no line breaks or control
/// characters can reach the log), and cut to its first 64 characters.
pub fn shown(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
    }
}

/// Most lines a second one `*_limited!` call site writes.
pub const PER_SECOND: u32 = 10;

/// The state of one `*_limited!` call site: the current second, lines written in it, and lines
/// suppressed since the last one written, with the last line written (its level and start) for
/// [`flush_suppressed`].
pub struct Limiter(Mutex<Site>);

struct Site {
    second: u64,
    written: u32,
    suppressed: u64,
    last: Option<(Level, String)>,
    /// In [`PENDING`] (once, however long its flood lasts).
    listed: bool,
}

/// Call sites that suppressed lines no later line of theirs has reported yet.
static PENDING: Mutex<Vec<&'static Limiter>> = Mutex::new(Vec::new());

/// How much of its last line a late report of suppressed lines quotes.
const QUOTED: usize = 100;

impl Limiter {
    pub const fn new() -> Limiter {
        Limiter(Mutex::new(Site {
            second: 0,
            written: 0,
            suppressed: 0,
            last: None,
            listed: false,
        }))
    }

    /// `Some(suppressed)` when a line may be written now (`suppressed` lines were dropped
    /// before it), `None` when it is dropped.
    pub fn admit(&'static self) -> Option<u64> {
        self.admit_at_with(limiter_second(), || {
            PENDING.lock().unwrap_or_else(|e| e.into_inner()).push(self)
        })
    }

    #[cfg(test)]
    fn admit_at(&self, second: u64) -> Option<u64> {
        self.admit_at_with(second, || {})
    }

    /// Admits a line in `second` (see [`admit`](Self::admit)); `first_suppressed` runs when a
    /// line is suppressed and none was since the last one written (to list the site in
    /// [`PENDING`]).
    fn admit_at_with(&self, second: u64, first_suppressed: impl FnOnce()) -> Option<u64> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if s.second != second {
            s.second = second;
            s.written = 0;
        }
        if s.written >= PER_SECOND {
            s.suppressed += 1;
            if !s.listed {
                s.listed = true;
                drop(s);
                first_suppressed();
            }
            return None;
        }
        s.written += 1;
        Some(std::mem::take(&mut s.suppressed))
    }

    fn remember(&self, level: Level, line: &str) {
        let cut = line
            .char_indices()
            .nth(QUOTED)
            .map_or(line.len(), |(i, _)| i);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).last =
            Some((level, line[..cut].to_string()));
    }

    /// The suppressed count and last line, when its flood is over (`second` is past it);
    /// the count starts again.
    fn take_ended(&self, second: u64) -> Option<(u64, Option<(Level, String)>)> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if s.suppressed == 0 || s.second >= second {
            return None;
        }
        let n = std::mem::take(&mut s.suppressed);
        Some((n, s.last.clone()))
    }
}

/// Seconds since the first call, on the monotonic clock: a wall clock stepped back would keep
/// a flood's second from ever being over.
fn limiter_second() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs()
}

/// Reports the lines call sites suppressed when no later line of theirs has (a flood that
/// stopped): one line per site, at the level of its last line, quoting it. Called about once
/// a second by the main thread while it waits for signals.
pub fn flush_suppressed() {
    let now = limiter_second();
    let sites: Vec<&'static Limiter> = {
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        let mut ended = Vec::new();
        pending.retain(|l| {
            // Still in its flood's second: looked at again next time.
            let mut s = l.0.lock().unwrap_or_else(|e| e.into_inner());
            let over = s.second < now;
            if over {
                s.listed = false;
                ended.push(*l);
            }
            !over
        });
        ended
    };
    for site in sites {
        if let Some((n, last)) = site.take_ended(now) {
            let (level, text) = last.unwrap_or((Level::Warn, String::new()));
            if enabled(level) {
                write(
                    level,
                    format_args!("({n} similar lines suppressed; the last one written: {text})"),
                );
            }
        }
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new()
    }
}

#[doc(hidden)]
pub fn write_limited(level: Level, limiter: &'static Limiter, args: std::fmt::Arguments<'_>) {
    let Some(n) = limiter.admit() else {
        return;
    };
    let text = args.to_string();
    limiter.remember(level, &text);
    if n == 0 {
        write(level, format_args!("{text}"));
    } else {
        write(level, format_args!("{text} ({n} similar lines suppressed)"));
    }
}

/// Kinds of line [`write_limited_kind`] keeps a limiter for; later kinds share one.
const KINDS_MAX: usize = 64;

/// [`write_limited`] for a call site whose lines say different things (why a connection was
/// closed): each `kind` (static texts the line is made of) has a limiter of its own, so that a
/// flood of one kind neither hides the others nor is counted as theirs.
pub fn write_limited_kind(
    level: Level,
    kind: (&'static str, &'static str),
    args: std::fmt::Arguments<'_>,
) {
    if enabled(level) {
        write_limited(level, limiter_of(kind), args)
    }
}

/// The limiter of one kind of line (see [`write_limited_kind`]).
fn limiter_of(kind: (&'static str, &'static str)) -> &'static Limiter {
    type Kinds = Vec<((&'static str, &'static str), &'static Limiter)>;
    static KINDS: Mutex<Kinds> = Mutex::new(Vec::new());
    static OTHERS: Limiter = Limiter::new();
    let mut kinds = KINDS.lock().unwrap_or_else(|e| e.into_inner());
    match kinds.iter().find(|(k, _)| *k == kind) {
        Some(&(_, l)) => l,
        None if kinds.len() < KINDS_MAX => {
            // Once per kind, and kinds are few: the limiter lives as long as the process.
            let l: &'static Limiter = Box::leak(Box::new(Limiter::new()));
            kinds.push((kind, l));
            l
        }
        None => &OTHERS,
    }
}

/// Call sites of services [`limiter_of_service`] keeps a limiter for; later ones share one.
const SERVICE_SITES_MAX: usize = 4096;

/// The limiter of one call site's lines about one Lua service (`site` names the call site):
/// a flood of one service's lines neither hides another's nor is counted as theirs (a trial's
/// failing service, 20 clients in a loop, left none of another service's memory errors in the
/// log, and gave the one that got through its own count of suppressed lines), and within a
/// service, a flood of one kind (a client's malformed notifications, at info) hides no line
/// of another kind (its errors).
pub fn limiter_of_service(name: &str, site: &'static str) -> &'static Limiter {
    /// By call site, then by service: the services of a site are few.
    type Sites = std::collections::HashMap<&'static str, Vec<(Box<str>, &'static Limiter)>>;
    static SITES: Mutex<(Option<Sites>, usize)> = Mutex::new((None, 0));
    static OTHERS: Limiter = Limiter::new();
    let mut guard = SITES.lock().unwrap_or_else(|e| e.into_inner());
    let (sites, count) = &mut *guard;
    let services = sites
        .get_or_insert_with(Sites::new)
        .entry(site)
        .or_default();
    if let Some(&(_, l)) = services.iter().find(|(s, _)| &**s == name) {
        return l;
    }
    if *count >= SERVICE_SITES_MAX {
        return &OTHERS;
    }
    // Once per service name and site, kept across its versions: as long as the process.
    let l: &'static Limiter = Box::leak(Box::new(Limiter::new()));
    services.push((name.into(), l));
    *count += 1;
    l
}

/// A line about a Lua service, limited with the other lines of that service from the same
/// call site (see [`limiter_of_service`]): `$host` is its instance's host (`HostCtx`), or
/// `name: $name` gives the service's name.
#[macro_export]
macro_rules! service_log {
    (name: $name:expr, $lvl:expr, $($arg:tt)*) => {
        if $crate::log::enabled($lvl) {
            let site = concat!(file!(), ":", line!(), ":", column!());
            let limiter = $crate::log::limiter_of_service(&$name, site);
            $crate::log::write_limited($lvl, limiter, format_args!($($arg)*))
        }
    };
    // `line!()` and `column!()` are those of the first macro invocation: the caller's.
    ($host:expr, $lvl:expr, $($arg:tt)*) => {
        $crate::service_log!(name: $host.service, $lvl, $($arg)*)
    };
}

#[macro_export]
macro_rules! log_limited_at {
    ($lvl:expr, $($arg:tt)*) => {
        if $crate::log::enabled($lvl) {
            static LIMITER: $crate::log::Limiter = $crate::log::Limiter::new();
            $crate::log::write_limited($lvl, &LIMITER, format_args!($($arg)*))
        }
    };
}
#[macro_export]
macro_rules! info_limited { ($($arg:tt)*) => { $crate::log_limited_at!($crate::log::Level::Info, $($arg)*) } }
#[macro_export]
macro_rules! warn_limited { ($($arg:tt)*) => { $crate::log_limited_at!($crate::log::Level::Warn, $($arg)*) } }
#[macro_export]
macro_rules! error_limited { ($($arg:tt)*) => { $crate::log_limited_at!($crate::log::Level::Error, $($arg)*) } }

#[macro_export]
macro_rules! log_at {
    ($lvl:expr, $($arg:tt)*) => {
        if $crate::log::enabled($lvl) { $crate::log::write($lvl, format_args!($($arg)*)) }
    };
}
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Error, $($arg)*) } }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Warn, $($arg)*) } }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Info, $($arg)*) } }
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Debug, $($arg)*) } }

#[cfg(test)]
mod tests {
    /// Why connections were closed, from one call site: a flood of handshake timeouts used up
    /// the site's budget, and the one "no Close from the peer" line was suppressed and counted
    /// as one of them.
    #[test]
    fn each_kind_of_line_has_its_own_limit() {
        let silent = super::limiter_of(("test: nothing received", ""));
        let no_close = super::limiter_of(("test: no Close", ""));
        let reset = super::limiter_of(("test: no Close", " (reset)"));
        assert!(std::ptr::eq(
            silent,
            super::limiter_of(("test: nothing received", ""))
        ));
        for _ in 0..super::PER_SECOND {
            assert_eq!(silent.admit_at(7), Some(0));
        }
        assert_eq!(silent.admit_at(7), None, "its own budget is spent");
        assert_eq!(
            no_close.admit_at(7),
            Some(0),
            "another kind still has its own"
        );
        assert_eq!(reset.admit_at(7), Some(0));
    }

    #[test]
    fn every_line_of_a_record_carries_the_time_and_level() {
        assert_eq!(
            super::stamped_lines("T", "ERROR", "one line"),
            "T ERROR one line\n"
        );
        assert_eq!(
            super::stamped_lines("T", "ERROR", "invalid:\nws.json: a\nws.json: b"),
            "T ERROR invalid:\nT ERROR   ws.json: a\nT ERROR   ws.json: b\n"
        );
        // A text that ends its last line (a panic's backtrace) gets no empty line after it.
        assert_eq!(
            super::stamped_lines("T", "ERROR", "a\nb\n"),
            "T ERROR a\nT ERROR   b\n"
        );
    }

    #[test]
    fn a_limited_call_site_writes_at_most_per_second_lines_and_counts_the_rest() {
        let l = super::Limiter::new();
        let first: Vec<_> = (0..25).map(|_| l.admit_at(7)).collect();
        assert!(first[..10].iter().all(|a| *a == Some(0)), "{first:?}");
        assert!(first[10..].iter().all(|a| a.is_none()), "{first:?}");
        // The next second: the first line written reports the 15 dropped, then the count
        // starts again.
        assert_eq!(l.admit_at(8), Some(15));
        assert_eq!(l.admit_at(8), Some(0));
    }

    #[test]
    fn lines_suppressed_at_the_end_of_a_flood_are_reported_once_it_is_over() {
        use super::Level;
        let l = super::Limiter::new();
        let mut listed = 0;
        for i in 0..25 {
            if l.admit_at_with(7, || listed += 1).is_some() {
                l.remember(Level::Warn, &format!("line {i} {}", "x".repeat(200)));
            }
        }
        assert_eq!(listed, 1, "listed once for the flush");
        assert_eq!(l.take_ended(7), None, "its second is not over");
        let (n, last) = l.take_ended(8).unwrap();
        assert_eq!(n, 15);
        let (level, text) = last.unwrap();
        assert_eq!(level, Level::Warn);
        assert!(
            text.starts_with("line 9 x") && text.len() == super::QUOTED,
            "{text}"
        );
        assert_eq!(l.take_ended(9), None, "reported once");

        // A flood that goes on for seconds before a flush looks: listed once, not each second.
        let l = super::Limiter::new();
        let mut listed = 0;
        for second in 1..=5 {
            for _ in 0..25 {
                let _ = l.admit_at_with(second, || listed += 1);
            }
        }
        assert_eq!(listed, 1);
    }

    #[test]
    fn peer_strings_are_quoted_escaped_and_cut() {
        assert_eq!(super::shown("echo"), "\"echo\"");
        assert_eq!(super::shown("a\nERROR b"), "\"a\\nERROR b\"");
        let long = "x".repeat(100);
        assert_eq!(
            super::shown(&long),
            format!("\"{}\"... (100 bytes)", "x".repeat(64))
        );
    }
}
