//! The server out of file descriptors: accepting pauses without spinning, with one warning,
//! and resumes by itself once descriptors are free again. The real binary runs as a child
//! process with a low RLIMIT_NOFILE (a limit of this test process would bind its clients too).
#[path = "common/binary.rs"]
mod binary;
mod common;

use std::net::TcpStream;
use std::path::PathBuf;

use binary::{lines_until, spawn_binary_logging};
use common::connect;
use tungstenite::Message;

/// Low enough to reach with a few dozen connections, above what start-up needs.
const NOFILE: libc::rlim_t = 48;

/// A configuration directory of its own for the test `name` (the tests run side by side: one
/// must not remove another's files while its server reads them).
fn config_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("fd-limit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ws.json"), binary::ONE_WORKER_WS_JSON).unwrap();
    std::fs::write(
        dir.join("lapps.json"),
        r#"{ "services": { "echo": { "builtin": "echo", "request_target": "/echo" } } }"#,
    )
    .unwrap();
    dir
}

/// Starts the child with RLIMIT_NOFILE `soft` and `hard` (each at most the current hard limit).
fn limit(cmd: &mut std::process::Command, soft: libc::rlim_t, hard: libc::rlim_t) {
    binary::limit_child(cmd, libc::RLIMIT_NOFILE, soft, hard);
}

/// This test process's hard RLIMIT_NOFILE.
fn hard_limit() -> libc::rlim_t {
    let mut ours = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `ours` is a valid, writable rlimit.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut ours) },
        0
    );
    ours.rlim_max
}

#[test]
fn a_soft_descriptor_limit_is_raised_to_the_hard_one() {
    let hard = hard_limit();
    assert!(
        hard > 4 * NOFILE,
        "this machine's hard descriptor limit ({hard}) is too low for these tests"
    );
    let dir = config_dir("raise");
    let (_server, _addr, _log, start) =
        spawn_binary_logging(&dir, |cmd| limit(cmd, NOFILE, libc::RLIM_INFINITY));
    let raised = format!("descriptor limit raised from {NOFILE} to {hard}");
    assert!(start.iter().any(|l| l.contains(&raised)), "{start:#?}");
}

/// A server at RLIMIT_NOFILE [`NOFILE`] (hard and soft: it raises a soft limit to the hard one
/// by itself) whose ws.json sets max_connections (left to its default, the count would be
/// lowered to 1: see below), with twice as many clients as descriptors (the rest wait in the
/// backlog), once accepting has failed. The server, its address, log and start-up lines, and
/// the clients.
fn flooded(
    name: &str,
) -> (
    binary::Reaper,
    std::net::SocketAddr,
    std::sync::mpsc::Receiver<String>,
    Vec<String>,
    Vec<TcpStream>,
) {
    let dir = config_dir(name);
    std::fs::write(
        dir.join("ws.json"),
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1, "max_connections": 100000 } }"#,
    )
    .unwrap();
    let (server, addr, log, start) = spawn_binary_logging(&dir, |cmd| limit(cmd, NOFILE, NOFILE));
    let clients: Vec<TcpStream> = (0..2 * NOFILE)
        .map(|_| TcpStream::connect(addr).expect("connect (the backlog takes it)"))
        .collect();
    (server, addr, log, start, clients)
}

#[test]
fn out_of_descriptors_the_listener_pauses_with_one_warning_and_recovers() {
    let (server, addr, log, start, clients) = flooded("exhausted");
    // It said so at start-up, with the numbers.
    assert!(
        start.iter().any(|l| l.contains("WARN")
            && l.contains(&format!(
                "descriptor limit (RLIMIT_NOFILE) is {NOFILE}, below the 105376 needed for the \
                 100000 connections"
            ))),
        "no warning about the descriptor limit: {start:#?}"
    );
    let mut lines = lines_until(&log, "accept failed");
    // The status report counts descriptors by listing /proc/self/fd, which takes one: with
    // none free it says they are all taken (it said 0).
    // SAFETY: kill(2) on our own child process.
    assert_eq!(
        unsafe { libc::kill(server.0.id() as libc::pid_t, libc::SIGUSR1) },
        0
    );
    let status = binary::wait_line(&log, "status: serving for ");
    assert!(
        status.contains(&format!(", all descriptors (limit {NOFILE})")),
        "{status}"
    );
    // Descriptors come free as the server sees these go.
    drop(clients);
    let mut ws = connect(addr, "/echo");
    ws.send(Message::text("back")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("back"));
    lines.extend(lines_until(&log, "accepting again"));
    // A spinning listener logs the failure on every turn: thousands of lines by now.
    let warnings = lines.iter().filter(|l| l.contains("accept failed")).count();
    assert!(
        warnings <= 5,
        "{warnings} accept warnings: the listener must pause, not spin"
    );
}

/// `lapps --reload` while clients take every descriptor the server has is answered: the server
/// keeps two spare descriptors for the requester's pidfd and /proc status. (An operator trial:
/// the server logged "cannot answer the reload requester ... it will time out", and the
/// requester, the unit's ExecReload, waited for its 30 minutes.) The reload itself cannot read
/// the configuration then and fails: the answer says so.
#[test]
fn a_reload_requester_is_answered_when_every_descriptor_is_taken() {
    let (server, _, log, _, clients) = flooded("reload-exhausted");
    lines_until(&log, "accept failed");
    let out = binary::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_lapps"))
            .arg("--reload")
            .arg(server.0.id().to_string()),
        std::time::Duration::from_secs(20),
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(said.contains("failed in part"), "{said}");
    let lines = lines_until(&log, "reload done");
    assert!(
        !lines.iter().any(|l| l.contains("cannot answer")),
        "{lines:#?}"
    );
    // Not "invalid": nothing is wrong with the files.
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("configuration unreadable, services unchanged")),
        "{lines:#?}"
    );
    drop(clients);
}

/// A limit within the server's own reserve of 256 covers no connection: a `max_connections`
/// left to its default is lowered to one per worker, so that the next client is answered 503
/// rather than left waiting in the backlog (an operator trial at `ulimit -n 64`: the default
/// of 100000 was kept, and 46 of 100 clients got no answer at all).
#[test]
fn a_limit_within_the_servers_reserve_still_lowers_a_default_max_connections() {
    let dir = config_dir("reserve");
    let (_server, addr, _log, start) = spawn_binary_logging(&dir, |cmd| limit(cmd, NOFILE, NOFILE));
    assert!(
        start.iter().any(|l| l.contains(&format!(
            "max_connections is not set in ws.json: 1 per worker, what the descriptor limit \
             {NOFILE} covers"
        ))),
        "{start:#?}"
    );
    let live = common::raw_upgraded(addr, "/echo");
    assert_eq!(answer_head(addr), b"HTTP/1.1 503", "one past the one");
    drop(live);
}

/// The first 12 bytes of the answer to an upgrade request to `/echo` (`HTTP/1.1 503` for a
/// full server): it must come, not wait in the backlog.
fn answer_head(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut past = TcpStream::connect(addr).unwrap();
    past.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    let request = common::upgrade_request(addr, "/echo");
    std::io::Write::write_all(&mut past, request.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    let n = std::io::Read::read(&mut past, &mut head).expect("an answer, not a wait");
    head[..n].to_vec()
}

/// With exactly the descriptors the start-up check asks for (no warning), a full server keeps
/// answering 503: the refused connections lingering after their answer come out of a room the
/// check counts, and past it a refusal is closed at once. Before, a worker let up to
/// max_connections + 1024 refusals linger, past what the check counted: accepting failed with
/// EMFILE and new clients waited unanswered.
#[test]
fn a_full_server_with_the_descriptors_it_asks_for_answers_every_refusal() {
    // Enough that the old room (max_connections + 1024 refused) outgrew the check's figure.
    const LIVE: usize = 5000;
    const REFUSALS: usize = 6000;
    // nofile::shortfall for 1 worker: live + REFUSED_ROOM (1024) + ACCEPT_INBOX (4096) +
    // RESERVE (256).
    const ASKED: libc::rlim_t = (LIVE + 1024 + 4096 + 256) as libc::rlim_t;
    let mut ours = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit; this test's clients need descriptors.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut ours);
        ours.rlim_cur = ours.rlim_cur.max(ours.rlim_max.min(65536));
        libc::setrlimit(libc::RLIMIT_NOFILE, &ours);
    }
    let needs = (LIVE + REFUSALS + 64) as libc::rlim_t;
    assert!(ours.rlim_cur > needs, "this test needs {needs} descriptors");
    let dir = config_dir("full");
    std::fs::write(
        dir.join("ws.json"),
        format!(
            r#"{{ "ip": "127.0.0.1", "port": 0, "close_timeout_ms": 60000,
                  "workers": {{ "workers": 1, "max_connections": {LIVE} }} }}"#
        ),
    )
    .unwrap();
    let (_server, addr, _log, start) = spawn_binary_logging(&dir, |cmd| limit(cmd, ASKED, ASKED));
    assert!(
        !start.iter().any(|l| l.contains("RLIMIT_NOFILE")),
        "the limit is what the check asks for: {start:#?}"
    );
    let live: Vec<TcpStream> = (0..LIVE)
        .map(|_| common::raw_upgraded(addr, "/echo"))
        .collect();
    // Refused clients that never close: the first ones linger on the server after their 503.
    let request = common::upgrade_request(addr, "/echo");
    let mut refused: Vec<TcpStream> = (0..REFUSALS)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
            std::io::Write::write_all(&mut s, request.as_bytes()).unwrap();
            s
        })
        .collect();
    let mut answered = 0;
    for (i, s) in refused.iter_mut().enumerate() {
        let mut head = [0u8; 12];
        match std::io::Read::read(s, &mut head) {
            Ok(n) => {
                assert!(
                    n == 0 || head[..n].starts_with(b"HTTP/1.1 503"),
                    "client {i}: {:?}",
                    String::from_utf8_lossy(&head[..n])
                );
                answered += usize::from(n > 0);
            }
            // Closed at once past the room, its request unread: the 503 may be lost to the reset.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("client {i} got no answer: {e}"),
        }
    }
    // Those in the room at least were answered (a server that closed every refusal without a
    // word would pass the loop above).
    assert!(
        answered >= 1024,
        "{answered} of {REFUSALS} refusals answered 503"
    );
    drop(live);
}

/// A `max_connections` left to its default is lowered at start-up to what the descriptor limit
/// covers: one connection past it is answered 503 at once (it does not wait unanswered in the
/// backlog), nothing warns, and a reload does not take the lowered figure for a ws.json change.
#[test]
fn a_default_max_connections_is_lowered_to_what_the_descriptors_cover() {
    // At least half the rooms besides (below that the count is half the limit, with a warning).
    const COVERED: usize = 2600;
    // nofile::per_worker for 1 worker: REFUSED_ROOM (1024) + ACCEPT_INBOX (4096) + RESERVE (256).
    const LIMIT: libc::rlim_t = (COVERED + 1024 + 4096 + 256) as libc::rlim_t;
    let hard = hard_limit();
    assert!(
        hard >= LIMIT,
        "this test needs a hard descriptor limit of {LIMIT}, not {hard}"
    );
    // The test holds COVERED clients itself.
    common::raise_nofile();
    let dir = config_dir("lowered");
    let (server, addr, log, start) = spawn_binary_logging(&dir, |cmd| limit(cmd, LIMIT, LIMIT));
    assert!(
        start.iter().any(|l| l.contains(&format!(
            "max_connections is not set in ws.json: {COVERED} per worker, what the descriptor \
             limit {LIMIT} covers (IO workers: 1;"
        ))),
        "{start:#?}"
    );
    assert!(
        !start.iter().any(|l| l.contains("RLIMIT_NOFILE")),
        "no warning once lowered: {start:#?}"
    );
    let live: Vec<TcpStream> = (0..COVERED)
        .map(|_| common::raw_upgraded(addr, "/echo"))
        .collect();
    assert_eq!(answer_head(addr), b"HTTP/1.1 503", "one past {COVERED}");
    drop(live);
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(
        unsafe { libc::kill(server.0.id() as libc::pid_t, libc::SIGHUP) },
        0
    );
    let reload = lines_until(&log, "reload done");
    assert!(
        !reload.iter().any(|l| l.contains("restart")),
        "ws.json is unchanged: {reload:#?}"
    );
}
