//! Random peers: seeded scripts of frames (messages whole and fragmented, control frames between
//! fragments, unfinished messages, and every way RFC 6455 lets a frame be wrong) written in
//! random cuts over real sockets, many connections at once: as a client's frames to the
//! built-in echo (plain and over TLS), the Lua echo, an app that closes among them and a LAppS
//! service, and as a server's frames to the cws client. A model of RFC 6455's receiving rules,
//! written here from the RFC and independent of the codec, says what the receiver must answer:
//! the echo of every message completed, in order (LAppS: an error answer each, and a 1003 after
//! the tenth); a Pong per Ping, in order; then one Close with the code its first violation
//! earns, the app's, or the peer's code echoed; then the server ends TCP, and sends nothing
//! after its Close. Every connection is checked, so one peer's garbage must leave the others'
//! exchanges exact.
//!
//! A failure names the seed; `RANDOM_PEERS_SEED=n` runs that one script alone, and
//! `RANDOM_PEERS_SCRIPTS=n` runs n scripts per receiver instead of 2,000.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/tls.rs"]
mod tls;

mod cws_client;
mod model;
mod script;
mod wire;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use common::rng::Rng;
use common::*;
use cws_client::*;
use lapps::ws::Opcode;
use model::*;
use script::*;
use wire::*;

/// The message size limit of the services under test: small, so that 1009 is reachable with
/// 16-bit lengths and by fragments adding up.
const MAX_MESSAGE: usize = 4096;

/// `max_protocol_errors` of the LAppS service: garbage messages answered before a 1003.
const MAX_PROTOCOL_ERRORS: usize = 10;

/// What the service answers to a message.
#[derive(Clone, Copy, PartialEq)]
enum Answers {
    /// The message itself, opcode and payload.
    Echo,
    /// An error response (LAppS: no script message is a request), a binary CBOR map that the
    /// outcome records as `(2, [])`; the `MAX_PROTOCOL_ERRORS`th is followed by Close 1003.
    LappsErrors,
    /// The message itself, except a binary `close:` with a 2-byte code, for which the app
    /// (tests/apps/echo_closer) closes the connection with that code instead.
    EchoCloser,
}

/// ws.json for the Lua receivers: a close timeout (how long a connection that ends waits for
/// the answers its service owes) far above what a busy CI machine can delay an instance.
fn lua_ws_json() -> String {
    ws_json_close_timeout(2, 10_000)
}

/// The codes the echo_closer app closes with (codes `ws:close` accepts).
const APP_CLOSE_CODES: [u16; 7] = [1000, 1001, 1008, 1011, 3000, 4000, 4999];

/// Scripts per service, and how many run at once.
const SCRIPTS: u64 = 2000;
const AT_ONCE: usize = 64;

/// [`SCRIPTS`], or `RANDOM_PEERS_SCRIPTS` for a longer hunt by hand.
fn scripts() -> u64 {
    std::env::var("RANDOM_PEERS_SCRIPTS").map_or(SCRIPTS, |n| {
        let n = n.parse().expect("RANDOM_PEERS_SCRIPTS is a number");
        assert!(n > 0, "RANDOM_PEERS_SCRIPTS=0 would test nothing");
        n
    })
}

/// Runs script `seed` on a new connection to `path` and checks the answer against the model.
fn run_one(addr: SocketAddr, path: &str, seed: u64, answers: Answers) -> Result<(), String> {
    let (wire, want, mut rng) = prepare(seed, answers, true);
    let io = |e: std::io::Error| e.to_string();
    let mut s = TcpStream::connect(addr).map_err(io)?;
    s.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    s.set_nodelay(true).map_err(io)?;
    let mut cuts = cuts(wire.len(), &mut rng).into_iter().peekable();
    // Now and then the first frames come with the upgrade request, in the same write.
    let mut request = upgrade_request(addr, path).into_bytes();
    if rng.chance(20) {
        if let Some(first) = cuts.next() {
            request.extend_from_slice(&wire[first]);
        }
    }
    s.write_all(&request).map_err(io)?;
    if rng.chance(5) {
        // A peer that aborts: its frames, then a reset, half the time somewhere inside them
        // (a frame's head or payload cut short). Nothing to check on this connection; what it
        // held must still be given back (what the callers wait for: wait_all_ended).
        let stop = if rng.chance(50) {
            rng.below(wire.len() + 1)
        } else {
            wire.len()
        };
        for cut in cuts {
            let end = cut.end.min(stop);
            if cut.start >= end || s.write_all(&wire[cut.start..end]).is_err() {
                break;
            }
        }
        close_with_reset(s);
        return Ok(());
    }
    let mut reader = s.try_clone().map_err(io)?;
    let answers = std::thread::spawn(move || {
        let head = read_http_head(&mut reader);
        if !head.starts_with("HTTP/1.1 101") {
            return Err(format!("upgrade: {head:?}"));
        }
        read_answers(reader, answers)
    });
    for cut in cuts {
        // The server may end the connection before the last bytes: writes may then fail.
        if s.write_all(&wire[cut]).is_err() {
            break;
        }
    }
    let _ = s.shutdown(Shutdown::Write);
    check(answers.join().map_err(|_| "reader panicked")??, &want)
}

/// [`run_one`] over TLS. All of the script is written before the answers are read (small
/// scripts: they fit in the socket buffers).
fn run_one_tls(
    addr: SocketAddr,
    path: &str,
    seed: u64,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<(), String> {
    let (wire, want, mut rng) = prepare(seed, Answers::Echo, true);
    let mut s = tls::tls_connect(addr, cfg).map_err(|e| format!("tls: {e}"))?;
    s.write_all(upgrade_request(addr, path).as_bytes())
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).map_err(|e| format!("upgrade: {e}"))?;
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!("upgrade: {}", String::from_utf8_lossy(&head)));
    }
    // Each cut of the script is a TLS record of its own, and the records go out in cuts of
    // their own: the server's reads end inside records as well as between them.
    let mut records = Vec::new();
    for cut in cuts(wire.len(), &mut rng) {
        s.conn
            .writer()
            .write_all(&wire[cut])
            .map_err(|e| e.to_string())?;
        while s.conn.wants_write() {
            s.conn.write_tls(&mut records).map_err(|e| e.to_string())?;
        }
    }
    if want.vanish && rng.chance(50) {
        // A peer that goes away politely as far as TLS goes.
        s.conn.send_close_notify();
        while s.conn.wants_write() {
            s.conn.write_tls(&mut records).map_err(|e| e.to_string())?;
        }
    }
    if rng.chance(5) {
        // A peer that aborts: its records up to a random byte (inside a record or between
        // two), then a reset. Nothing to check on this connection; what it held must still
        // be given back (what the caller waits for: wait_all_ended).
        let stop = rng.below(records.len() + 1);
        for cut in cuts(stop, &mut rng) {
            if s.sock.write_all(&records[cut]).is_err() {
                break;
            }
        }
        close_with_reset(s.sock);
        return Ok(());
    }
    for cut in cuts(records.len(), &mut rng) {
        if s.sock.write_all(&records[cut]).is_err() {
            break;
        }
    }
    if want.vanish {
        let _ = s.sock.shutdown(Shutdown::Write);
    }
    check(read_answers(s, Answers::Echo)?, &want)
}

/// Runs [`SCRIPTS`] seeds (or the one of `RANDOM_PEERS_SEED`), [`AT_ONCE`] connections at a
/// time, against `path`.
fn run_scripts(
    path: &'static str,
    base: u64,
    (answers, from_client): (Answers, bool),
    run: impl Fn(u64) -> Result<(), String> + Sync,
) {
    let seeds: Vec<u64> = match std::env::var("RANDOM_PEERS_SEED") {
        Ok(s) => vec![s.parse().expect("RANDOM_PEERS_SEED is a number")],
        Err(_) => (base..base + scripts()).collect(),
    };
    let failures = run_seeds(&seeds, AT_ONCE, run);
    // The scripts reach every ending the model knows, or this test checks less than it says.
    if seeds.len() >= SCRIPTS as usize {
        let mut endings = std::collections::BTreeMap::new();
        let mut messages = 0;
        for &seed in &seeds {
            let o = prepare(seed, answers, from_client).1.want;
            messages += o.messages.len();
            *endings.entry(o.close).or_insert(0) += 1;
        }
        eprintln!("{path}: {messages} messages before the ends; endings {endings:?}");
        // (None: the peer ends TCP without a Close.)
        for code in [
            None,
            Some(None),
            Some(Some(1002)),
            Some(Some(1007)),
            Some(Some(1009)),
        ] {
            assert!(endings.contains_key(&code), "no script ends with {code:?}");
        }
        assert!(messages > SCRIPTS as usize, "too few messages: {messages}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} scripts on {path} went wrong:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}

#[test]
fn the_model_knows_the_rules() {
    // A few scripts by hand, so that the model itself is checked against the RFC.
    let f = |fin, op: u8, p: &[u8]| Frame::new(fin, op, p.to_vec());
    let echo = |frames: &[Frame]| {
        let e = expect(frames, Answers::Echo);
        assert!(e.or_heard_on.is_none());
        (e.want, e.read)
    };
    let (o, n) = echo(&[f(false, 1, b"h\xc3"), f(true, 0, b"\xa9!")]);
    assert_eq!(o.messages, vec![(1, "h\u{e9}!".as_bytes().to_vec())]);
    assert_eq!((o.close, n), (None, 2));
    let (o, _) = echo(&[f(true, 1, b"a\xc3")]);
    assert_eq!(o.close, Some(Some(1007)), "text ending inside a character");
    let (o, n) = echo(&[f(true, 9, b"p"), f(true, 0, b"x"), f(true, 9, b"q")]);
    assert_eq!(
        (o.pongs, o.close, n),
        (vec![b"p".to_vec()], Some(Some(1002)), 2)
    );
    let (o, _) = echo(&[f(true, 8, &[0x03, 0xed])]);
    assert_eq!(
        o.close,
        Some(Some(1002)),
        "close code 1005 may not be received"
    );
    let (o, _) = echo(&[f(true, 8, b"\x03\xe8\xff")]);
    assert_eq!(o.close, Some(Some(1007)), "close reason not UTF-8");
    let mut big = f(true, 2, b"");
    big.length = Length::Declared(MAX_MESSAGE as u64 + 1);
    assert_eq!(echo(&[big]).0.close, Some(Some(1009)));
    let mut wide = f(true, 2, b"x");
    wide.length = Length::Wide16;
    wide.rsv = 1;
    assert_eq!(echo(&[wide]).0.close, Some(Some(1002)));
    // LAppS: the tenth error answer decides a 1003; what follows may be heard before it.
    let mut frames = vec![f(true, 2, b"x"); MAX_PROTOCOL_ERRORS + 2];
    frames.insert(MAX_PROTOCOL_ERRORS, f(true, 9, b"p"));
    frames.push(f(true, 8, b""));
    let e = expect(&frames, Answers::LappsErrors);
    let answers = vec![(2, Vec::new()); MAX_PROTOCOL_ERRORS];
    assert_eq!(
        (&e.want.messages, e.want.pongs.len(), e.want.close),
        (&answers, 0, Some(Some(1003)))
    );
    let heard = e.or_heard_on.expect("frames after the decision");
    assert_eq!(
        (&heard.messages, heard.pongs.len(), heard.close, e.read),
        (&answers, 1, Some(None), frames.len())
    );
}

#[test]
fn random_peers_get_exactly_what_rfc_6455_says_from_the_builtin_echo() {
    let budget = Arc::new(lapps::net::assembly::AssemblyBudget::default());
    let srv = start_with(
        |o| {
            o.workers = 2;
            // The echoes leave in fragments of 700 bytes: the reader reassembles them.
            o.worker.auto_fragment = Some(700);
            // Small reads, one per connection per turn: frames cut across reads and turns.
            o.worker.read_buffer = 4096;
            o.worker.max_inbounds_skip = 1;
            o.worker.assembly = budget.clone();
        },
        Arc::new(EchoRouter::new(MAX_MESSAGE)),
    );
    let addr = srv.addr;
    run_scripts("/echo", 0, (Answers::Echo, true), |seed| {
        run_one(addr, "/echo", seed, Answers::Echo)
    });
    // Every connection ended, and what it held is given back: the partly received messages
    // of those that ended inside one, and their queued bytes.
    wait_all_ended(&srv.hub());
    assert_eq!(budget.held(), 0, "bytes of messages being received");
}

#[test]
fn random_peers_get_exactly_what_rfc_6455_says_from_the_lua_echo() {
    let services = format!(
        r#"{{ "echo": {{ "request_target": "/echo", "instances": 2,
                       "max_inbound_message_size": {MAX_MESSAGE} }} }}"#
    );
    let app = start_app(&lua_ws_json(), &lapps_json("./lua/apps", &services));
    let addr = app.addr;
    run_scripts("/echo", 1_000_000, (Answers::Echo, true), |seed| {
        run_one(addr, "/echo", seed, Answers::Echo)
    });
    app.wait_every_connection_forgotten();
}

#[test]
fn random_peers_get_exactly_what_rfc_6455_says_from_a_lapps_service() {
    // No script message is a LAppS request: each gets an error answer from the host, and the
    // tenth in a row a Close 1003, unless the frames end the connection first.
    let services = format!(
        r#"{{ "echo_lapps": {{ "protocol": "LAppS", "request_target": "/echo_lapps",
                             "instances": 2, "preload": ["bcast"],
                             "max_protocol_errors": {MAX_PROTOCOL_ERRORS},
                             "max_inbound_message_size": {MAX_MESSAGE} }} }}"#
    );
    let app = start_app(&lua_ws_json(), &lapps_json("./lua/apps", &services));
    let addr = app.addr;
    run_scripts(
        "/echo_lapps",
        3_000_000,
        (Answers::LappsErrors, true),
        |seed| run_one(addr, "/echo_lapps", seed, Answers::LappsErrors),
    );
    app.wait_every_connection_forgotten();
}

#[test]
fn random_peers_get_exactly_what_rfc_6455_says_from_an_app_that_closes_among_their_frames() {
    // The app's Close is decided on its instance's thread while the IO worker reads on: the
    // frames after the request may still be heard first (as for the LAppS 1003).
    let services = format!(
        r#"{{ "echo_closer": {{ "request_target": "/echo_closer", "instances": 2,
                              "max_inbound_message_size": {MAX_MESSAGE} }} }}"#
    );
    let app = start_app(&lua_ws_json(), &lapps_json("./tests/apps", &services));
    let addr = app.addr;
    run_scripts(
        "/echo_closer",
        5_000_000,
        (Answers::EchoCloser, true),
        |seed| run_one(addr, "/echo_closer", seed, Answers::EchoCloser),
    );
    app.wait_every_connection_forgotten();
}

#[test]
fn a_random_server_gets_from_the_cws_client_exactly_what_rfc_6455_says() {
    run_scripts(
        "(cws client)",
        4_000_000,
        (Answers::Echo, false),
        run_one_client,
    );
}

#[test]
fn random_peers_over_tls_get_exactly_what_rfc_6455_says() {
    let dir = tls::temp_dir("random-peers");
    let pair = tls::self_signed_server("localhost");
    let (cert, key) = tls::write_pair(&dir, "server", &pair);
    let small = format!(
        r#", "echo_small": {{ "builtin": "echo", "request_target": "/echo_small",
                             "max_inbound_message_size": {MAX_MESSAGE} }}"#
    );
    tls::write_config(&dir, &tls::tls_json(&cert, &key, None), &small);
    let app = tls::start_app(&dir);
    let addr = app.local_addrs()[0];
    let cfg = tls::client_config(&pair.cert_der, None);
    run_scripts("/echo_small", 2_000_000, (Answers::Echo, true), |seed| {
        run_one_tls(addr, "/echo_small", seed, cfg.clone())
    });
    wait_all_ended(&app.hub().expect("running"));
    app.shutdown();
}
