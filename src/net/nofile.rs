//! The process's descriptor limit (RLIMIT_NOFILE) against the connections the configuration
//! promises. Every connection is a descriptor; once they run out, `accept` fails and new
//! clients wait in the backlog without an answer (not even the 503 of a full server), so an
//! operator must hear of a limit below the promise at start-up, not at the first rush.
//!
//! Owns raising the soft limit to the hard one (what a process may do by itself, as Go's
//! runtime and many servers do) and the comparison; nothing else.

use std::io;

use super::hub::{ACCEPT_INBOX, REFUSED_ROOM};

/// Descriptors the server takes besides its connections: listeners, epoll and eventfds per
/// worker, the instances' files, `cws` clients, logs.
pub const RESERVE: u64 = 256;

/// The soft limit after raising it to the hard one, and the limit before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub before: u64,
    pub now: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit.
pub fn raise() -> io::Result<Raised> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    crate::syscall!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard one needs no
        // privilege.
        crate::syscall!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    }
    Ok(Raised {
        before,
        now: lim.rlim_cur,
    })
}

/// The soft RLIMIT_NOFILE now.
pub fn current() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    crate::syscall!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    Ok(lim.rlim_cur)
}

/// Descriptors `workers` workers may hold besides their live connections: refused ones
/// lingering after their 503, and accepted ones waiting in an inbox for their turn.
fn besides(workers: usize) -> u64 {
    (workers as u64).saturating_mul((REFUSED_ROOM + ACCEPT_INBOX) as u64)
}

/// The live connections per worker that `limit` descriptors cover, what [`shortfall`] checks
/// for. When that is less than half the descriptors a worker may hold besides them (many
/// workers, a low LimitNOFILE), half of what the limit leaves beyond the server's own, up to
/// that half: the rest is for refused connections lingering and accepted ones waiting, so
/// that a full server still answers most refusals ([`shortfall`] warns then). The count never
/// falls as the limit rises: a limit just past the descriptors besides the connections used
/// to give a handful (10,498 over 2 workers: 1 each) where one just below gave 2,536. One at
/// the least: a limit within the server's own reserve (`ulimit -n 64`) covers no connection,
/// and the count it gives must still be a count (0 used to keep the default of 100,000, and
/// clients past the limit waited unanswered instead of getting a 503).
pub fn per_worker(limit: u64, workers: usize) -> u64 {
    let workers = workers.max(1) as u64;
    let besides = besides(workers as usize);
    let covered = limit.saturating_sub(besides.saturating_add(RESERVE)) / workers;
    let half = (limit.saturating_sub(RESERVE) / 2 / workers).min(besides / 2 / workers);
    covered.max(half).max(1)
}

/// Where a `max_connections` came from, for the words of [`shortfall`]'s warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxConnections {
    /// ws.json sets it.
    Set,
    /// ws.json does not: the server lowered the default to what the limit covers.
    Lowered,
    /// ws.json does not, and the limit covers too little to lower it to: the default.
    Default,
}

/// The warning for a limit of `limit` descriptors when `workers` workers may each hold
/// `max_connections` connections, or None when the limit covers them.
pub fn shortfall(
    limit: u64,
    workers: usize,
    max_connections: usize,
    origin: MaxConnections,
) -> Option<String> {
    let promised = (workers as u64).saturating_mul(max_connections as u64);
    let besides = besides(workers);
    let needed = promised.saturating_add(besides).saturating_add(RESERVE);
    let (allowed, remedy) = match origin {
        MaxConnections::Set => (
            format!("ws.json allows ({workers} workers x max_connections {max_connections})"),
            "raise LimitNOFILE, or ulimit -n, or lower max_connections",
        ),
        MaxConnections::Lowered => (
            format!(
                "the server allows (ws.json sets no max_connections, so it took \
                 {max_connections} per worker x {workers} workers)"
            ),
            "raise LimitNOFILE, or ulimit -n, or run fewer IO workers",
        ),
        MaxConnections::Default => (
            format!(
                "the server allows (ws.json sets no max_connections: the default \
                 {max_connections} per worker x {workers} workers)"
            ),
            "raise LimitNOFILE, or ulimit -n, or set a small max_connections in ws.json",
        ),
    };
    // A limit below the reserve itself (`ulimit -n 100`) has no "past about 0".
    let from = if limit > RESERVE {
        format!(
            "past about {} open connections of any of these kinds",
            limit - RESERVE
        )
    } else {
        "from the first open connection on (the limit is below even that reserve)".to_owned()
    };
    (limit < needed).then(|| {
        format!(
            "the descriptor limit (RLIMIT_NOFILE) is {limit}, below the {needed} needed for the \
             {promised} connections {allowed}, {besides} the workers may hold besides (refused \
             ones answered 503, accepted ones waiting for their worker) and {RESERVE} for the \
             server itself: {from} they take what was kept for the server (its files, the \
             services' own sockets and files may then fail), and at the limit accepting pauses \
             and new clients wait unanswered ({remedy})"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_below_the_reserve_says_so_not_past_about_0() {
        let w = shortfall(100, 2, 100_000, MaxConnections::Set).expect("a warning");
        assert!(
            w.contains(
                "server itself: from the first open connection on (the limit is below \
                        even that reserve) they take what was kept"
            ) && !w.contains("past about"),
            "{w}"
        );
    }

    #[test]
    fn a_limit_below_the_promise_names_both_numbers() {
        let w = shortfall(20_000, 2, 100_000, MaxConnections::Set).expect("a warning");
        assert!(w.contains("is 20000"), "{w}");
        assert!(w.contains("200000 connections"), "{w}");
        assert!(w.contains("10240 the workers may hold besides"), "{w}");
        assert!(
            w.contains("past about 19744 open connections of any of these kinds they take what")
                && w.contains("at the limit accepting pauses"),
            "{w}"
        );
        assert!(w.contains("about 19744 open connections"), "{w}");
        // Live connections; per worker 1024 refused and 4096 waiting; the server's own.
        assert_eq!(
            shortfall(200_000 + 10_240 + 256, 2, 100_000, MaxConnections::Set),
            None
        );
        assert!(shortfall(200_000 + 10_240 + 255, 2, 100_000, MaxConnections::Set).is_some());
    }

    #[test]
    fn a_max_connections_the_server_chose_is_not_blamed_on_ws_json() {
        let w = shortfall(3_000, 2, 686, MaxConnections::Lowered).expect("a warning");
        assert!(
            w.contains(
                "below the 11868 needed for the 1372 connections the server allows (ws.json \
                 sets no max_connections, so it took 686 per worker x 2 workers)"
            ) && w.ends_with("(raise LimitNOFILE, or ulimit -n, or run fewer IO workers)"),
            "{w}"
        );
        let w = shortfall(300, 2, 1 << 20, MaxConnections::Default).expect("a warning");
        assert!(
            w.contains("(ws.json sets no max_connections: the default 1048576 per worker")
                && w.ends_with("or set a small max_connections in ws.json)"),
            "{w}"
        );
        let w = shortfall(3_000, 2, 686, MaxConnections::Set).expect("a warning");
        assert!(
            w.contains(
                "needed for the 1372 connections ws.json allows (2 workers x max_connections 686)"
            ) && w.ends_with("or lower max_connections)"),
            "{w}"
        );
    }

    #[test]
    fn per_worker_is_the_most_the_check_lets_pass() {
        for (limit, workers) in [(1_048_576, 10), (1_048_576, 32), (524_288, 3), (8_000, 1)] {
            let n = per_worker(limit, workers) as usize;
            assert!(n >= 1, "{limit} over {workers}");
            assert_eq!(
                shortfall(limit, workers, n, MaxConnections::Set),
                None,
                "{limit} over {workers}"
            );
            assert!(
                shortfall(limit, workers, n + 1, MaxConnections::Set).is_some(),
                "{limit} over {workers}"
            );
        }
        // LimitNOFILE of the packaged unit on a 10-core host: just below SPEC's 100000.
        assert_eq!(per_worker(1_048_576, 10), 99_712);
        // A limit below the rooms besides the connections (16 workers hold 81920 besides
        // them): half of it is for live connections, not none (which left max_connections
        // at its default, far past the limit); the check still warns.
        assert_eq!(per_worker(65_536, 16), 2040);
        assert!(shortfall(65_536, 16, 2040, MaxConnections::Set).is_some());
        // One that covers them keeps the rule above: no warning.
        assert_eq!(per_worker(65_536, 8), 3040);
        assert_eq!(shortfall(65_536, 8, 3040, MaxConnections::Set), None);
        // Just past the descriptors besides the connections (2 x 5120 + 256), and just below.
        assert_eq!(per_worker(10_400, 2), 2536);
        assert_eq!(per_worker(10_498, 2), 2560);
        assert!(shortfall(10_498, 2, 2560, MaxConnections::Lowered).is_some());
        // Within the server's reserve: one each, not none (which left the default).
        assert_eq!(per_worker(48, 1), 1);
        assert_eq!(per_worker(0, 4), 1);
        assert_eq!(per_worker(259, 2), 1);
        assert_eq!(per_worker(260, 2), 1);
    }

    #[test]
    fn raising_the_limit_never_lowers_the_connections_per_worker() {
        for workers in [1, 2, 3, 16] {
            let mut before = 1;
            for limit in (0..200_000).step_by(7) {
                let n = per_worker(limit, workers);
                assert!(n >= before, "{limit} over {workers}: {n} after {before}");
                before = n;
            }
        }
    }
}
