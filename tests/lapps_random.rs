//! Random LAppS sessions: seeded sequences of messages (calls with random params of every kind
//! CBOR and Lua share, written the usual way or with `lapps: "1"` or indefinite-length params;
//! calls to an unknown and to a reserved method, calls whose handler raises, notifications with
//! every form of cid, malformed requests and notifications, requests with a cid that is none,
//! payloads that are not CBOR maps, text frames, Pings) pipelined over one connection in random
//! cuts, many connections at once, to the real `echo_lapps` app. A model of the protocol's
//! rules (docs/lua-api.md) says what comes back: one answer per request in call order (the
//! params echoed, or the error code each fault earns), nothing for a notification, a Pong per
//! Ping, and a Close 1003 after `max_protocol_errors` errors in a row, a well-formed message of
//! any kind (a malformed notification is not one) ending a row; nothing after the Close.
//! A second app (tests/apps/lapps_deferred) answers some calls later than others: the answers
//! must still leave in call order, the host's own ones waiting behind those the app owes, at
//! most 128 of them (the next closes the connection with 1008).
//!
//! A failure names the seed; `LAPPS_RANDOM_SEED=n` runs that one session alone, and
//! `LAPPS_RANDOM_SESSIONS=n` runs n sessions instead of 1,000.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};

use ciborium::Value as Cbor;
use common::rng::Rng;
use common::*;

const MAX_PROTOCOL_ERRORS: usize = 10;
/// Host answers that may wait behind a response the app owes (docs/lua-api.md).
const MAX_HELD_ANSWERS: usize = 128;
const SESSIONS: u64 = 1000;
const AT_ONCE: usize = 32;

/// What the model expects for one message.
#[derive(Clone, Debug, PartialEq)]
enum Answer {
    /// A response with this result.
    Result(Cbor),
    /// An error response with this code.
    Error(i64),
}

/// One message of a session: its frame (opcode, payload), its answer if any, and whether it
/// is a protocol error the host counts (else it ends a run of them).
struct Msg {
    opcode: u8,
    payload: Vec<u8>,
    answer: Option<Answer>,
    counted: bool,
}

fn text(s: &str) -> Cbor {
    Cbor::Text(s.into())
}

fn cbor(v: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).expect("encodes");
    out
}

fn map(pairs: Vec<(&str, Cbor)>) -> Cbor {
    Cbor::Map(pairs.into_iter().map(|(k, v)| (text(k), v)).collect())
}

/// A random value the Lua round trip must keep as it is: integers of the whole 64-bit range
/// and floats stay apart, text and byte strings too, arrays nest.
fn value(rng: &mut Rng, depth: usize) -> Cbor {
    match rng.below(if depth < 2 { 10 } else { 8 }) {
        0 => Cbor::Integer((rng.next() as i64 >> rng.below(64)).into()),
        1 => Cbor::Float(rng.below(1 << 20) as f64 + 0.25),
        2 => {
            let n = rng.below(20);
            Cbor::Text(String::from_utf8(rng.text(n)).expect("text"))
        }
        3 => {
            let n = rng.below(20);
            Cbor::Bytes(rng.bytes(n))
        }
        4 => Cbor::Bool(rng.chance(50)),
        5 => Cbor::Integer(rng.below(24).into()),
        6 => Cbor::Null,
        // An integral float stays a float.
        7 => Cbor::Float(rng.below(100) as f64),
        8 => {
            let n = rng.below(4);
            Cbor::Map(
                (0..n)
                    .map(|i| (text(&format!("k{i}")), value(rng, depth + 1)))
                    .collect(),
            )
        }
        _ => {
            let n = rng.below(4);
            Cbor::Array((0..n).map(|_| value(rng, depth + 1)).collect())
        }
    }
}

fn params(rng: &mut Rng) -> Vec<Cbor> {
    let n = rng.below(5);
    (0..n).map(|_| value(rng, 0)).collect()
}

fn request(method: &str, params: Option<Vec<Cbor>>, cid: Option<Cbor>) -> Vec<u8> {
    let mut m = vec![("lapps", Cbor::Integer(1.into())), ("method", text(method))];
    if let Some(p) = params {
        m.push(("params", Cbor::Array(p)));
    }
    if let Some(cid) = cid {
        m.push(("cid", cid));
    }
    cbor(&map(m))
}

/// A call to `echo` written another way the protocol allows: `lapps` as the text "1", or
/// params as an indefinite-length array.
fn echo_request_variant(rng: &mut Rng, p: &[Cbor]) -> Vec<u8> {
    if rng.chance(50) {
        let m = vec![
            ("lapps", text("1")),
            ("method", text("echo")),
            ("params", Cbor::Array(p.to_vec())),
        ];
        return cbor(&map(m));
    }
    let mut out = vec![0xa3]; // a map of three members
    out.extend(cbor(&text("lapps")));
    out.extend(cbor(&Cbor::Integer(1.into())));
    out.extend(cbor(&text("method")));
    out.extend(cbor(&text("echo")));
    out.extend(cbor(&text("params")));
    out.push(0x9f);
    for v in p {
        out.extend(cbor(v));
    }
    out.push(0xff);
    out
}

fn msg(payload: Vec<u8>, answer: Option<Answer>, counted: bool) -> Msg {
    Msg {
        opcode: 2,
        payload,
        answer,
        counted,
    }
}

fn message(rng: &mut Rng) -> Msg {
    // Any positive integer up to 2^64 - 1 is a cid, an integral float too.
    let cid = match rng.below(4) {
        0 => Cbor::Integer(u64::MAX.into()),
        1 => Cbor::Float(7.0),
        _ => Cbor::Integer((1 + rng.below(1000)).into()),
    };
    match rng.below(100) {
        0..=39 => {
            let p = params(rng);
            let answer = Answer::Result(Cbor::Array(p.clone()));
            msg(request("echo", Some(p), None), Some(answer), false)
        }
        40..=44 => {
            let p = params(rng);
            let answer = Answer::Result(Cbor::Array(p.clone()));
            msg(echo_request_variant(rng, &p), Some(answer), false)
        }
        // Notifications: no answer (echo's send_response finds nothing owed).
        45..=54 => msg(request("echo", Some(params(rng)), Some(cid)), None, false),
        // The app answers an unknown method itself; a Lua error gets -32603 from the host.
        55..=57 => msg(
            request("nope", None, None),
            Some(Answer::Error(-32601)),
            false,
        ),
        58..=59 => msg(
            request("fail", None, None),
            Some(Answer::Error(-32603)),
            false,
        ),
        // Reserved names: well-formed, answered by the host (a notification is not).
        60..=63 => msg(
            request("_x", None, None),
            Some(Answer::Error(-32601)),
            false,
        ),
        64..=65 => msg(request("_x", None, Some(cid)), None, false),
        // Malformed requests (-32600) and notifications (no answer), counted.
        66..=79 => {
            let bad: Vec<(&str, Cbor)> = match rng.below(6) {
                0 => vec![("method", text("echo"))],
                1 => vec![("lapps", Cbor::Integer(2.into())), ("method", text("echo"))],
                2 => vec![("lapps", Cbor::Integer(1.into())), ("method", text(""))],
                3 => vec![("lapps", Cbor::Integer(1.into())), ("method", text("a.b"))],
                4 => vec![
                    ("lapps", Cbor::Integer(1.into())),
                    ("method", text("echo")),
                    ("params", Cbor::Integer(5.into())),
                ],
                _ => vec![
                    ("lapps", Cbor::Integer(1.into())),
                    ("method", text("echo")),
                    ("method", text("echo")),
                ],
            };
            if rng.chance(30) {
                let mut note = bad;
                note.push(("cid", cid));
                msg(cbor(&map(note)), None, true)
            } else if rng.chance(20) {
                // A cid that is none (not a positive integer): a malformed request.
                let bad_cid = [
                    Cbor::Integer(0.into()),
                    Cbor::Integer((-1).into()),
                    Cbor::Float(1.5),
                    text("5"),
                ];
                let m = vec![
                    ("lapps", Cbor::Integer(1.into())),
                    ("method", text("echo")),
                    ("cid", bad_cid[rng.below(bad_cid.len())].clone()),
                ];
                msg(cbor(&map(m)), Some(Answer::Error(-32600)), true)
            } else {
                msg(cbor(&map(bad)), Some(Answer::Error(-32600)), true)
            }
        }
        // Not a CBOR map: -32700, counted.
        80..=91 => {
            let payload = match rng.below(4) {
                0 => vec![0xff, 0xff],
                1 => cbor(&Cbor::Array(vec![Cbor::Integer(1.into())])),
                2 => vec![0xa1, 0x65, b'l'], // a map cut inside its first key
                _ => Vec::new(),
            };
            msg(payload, Some(Answer::Error(-32700)), true)
        }
        // A Ping: its Pong, and no bearing on a run of errors.
        92..=95 => {
            let n = rng.below(126);
            Msg {
                opcode: 9,
                payload: rng.bytes(n),
                answer: None,
                counted: false,
            }
        }
        // A text frame: -32700, counted.
        _ => Msg {
            opcode: 1,
            payload: request("echo", None, None)
                .iter()
                .map(|b| b'a' + b % 26)
                .collect(),
            answer: Some(Answer::Error(-32700)),
            counted: true,
        },
    }
}

/// A session's messages, the answers due, and where the host closes with 1003, if it does.
fn session(rng: &mut Rng) -> (Vec<Msg>, Vec<Answer>, Option<Closes>) {
    // Runs of garbage, so that 1003 is reached often enough.
    let garbage_bias = rng.chance(40);
    let n = 1 + rng.below(60);
    let mut msgs = Vec::new();
    for _ in 0..n {
        let mut m = message(rng);
        if garbage_bias && rng.chance(93) {
            while !m.counted {
                m = message(rng);
            }
        }
        msgs.push(m);
    }
    let mut answers = Vec::new();
    let mut row = 0;
    for (i, m) in msgs.iter().enumerate() {
        if m.opcode == 9 {
            continue; // a Ping is no message of the protocol
        }
        answers.extend(m.answer.clone());
        row = if m.counted { row + 1 } else { 0 };
        if row == MAX_PROTOCOL_ERRORS {
            return (msgs, answers, Some(Closes { at: i, code: 1003 }));
        }
    }
    (msgs, answers, None)
}

/// A session with the `lapps_deferred` app: calls it answers at once (`echo`), later
/// (`later`, whose params the next `release` or `settle` sends), or not (`fail`, an unknown
/// method, `settle` after sending the kept ones: -32603 from the host), `answer_fail` (sends a
/// response, then raises), and the host's own
/// answers to reserved names, malformed requests and garbage (never ten in a row). A
/// `release` ends every session, so that nothing is owed at its Close.
///
/// The rule the model follows (docs/lua-api.md): each request has its place in call order;
/// what the app sends fills the oldest place still owed, whichever request it was meant for;
/// the host's answers hold their requests' own places (to messages that never reached the
/// app, and the -32603 for a handler that raised with its own place still owed), each sent
/// once every place before it is filled.
///
/// One session in ten is a flood of host answers (reserved names, handlers that raise): at
/// most 128 may wait behind a place the app owes; the next closes the connection with 1008,
/// after the answers before that place, the waiting ones dropped.
fn deferred_session(rng: &mut Rng) -> (Vec<Msg>, Vec<Answer>, Option<Closes>) {
    let flood = rng.chance(10);
    let n = if flood {
        100 + rng.below(100)
    } else {
        1 + rng.below(60)
    };
    let mut msgs = Vec::new();
    let mut places: Vec<Option<Answer>> = Vec::new();
    let mut owed = std::collections::VecDeque::new();
    let mut kept: Vec<Answer> = Vec::new();
    let mut row = 0;
    let released = Answer::Result(Cbor::Array(vec![text("released")]));
    // A host answer for the next place: false when it would be one more than may wait (then
    // the connection closes with 1008).
    let room = |places: &[Option<Answer>], owed: &std::collections::VecDeque<usize>| {
        owed.front().is_none_or(|&first| {
            places[first + 1..].iter().filter(|p| p.is_some()).count() < MAX_HELD_ANSWERS
        })
    };
    let closed =
        |msgs: Vec<Msg>, places: Vec<Option<Answer>>, owed: &std::collections::VecDeque<usize>| {
            let at = msgs.len() - 1;
            let sent = places[..owed[0]].iter().map(|a| a.clone().expect("filled"));
            (msgs, sent.collect(), Some(Closes { at, code: 1008 }))
        };
    for i in 0..=n {
        let pick = match i {
            _ if i == n => 55,
            // A reserved name, or a handler that raises; else `later` (an `echo` would fill
            // the oldest place owed).
            _ if flood && rng.chance(90) => [80, 70][rng.below(2)],
            _ if flood => 30,
            _ => rng.below(100),
        };
        let garbage = pick >= 85 && row + 1 < MAX_PROTOCOL_ERRORS;
        if garbage {
            row += 1;
            let (payload, code) = if pick < 93 {
                (cbor(&map(vec![("method", text("echo"))])), -32600)
            } else {
                (vec![0xff], -32700)
            };
            msgs.push(msg(payload, None, true));
            if !room(&places, &owed) {
                return closed(msgs, places, &owed);
            }
            places.push(Some(Answer::Error(code)));
            continue;
        }
        row = 0;
        if (80..85).contains(&pick) {
            msgs.push(msg(request("_x", None, None), None, false));
            if !room(&places, &owed) {
                return closed(msgs, places, &owed);
            }
            places.push(Some(Answer::Error(-32601)));
            continue;
        }
        // The app's own place, and what it sends.
        owed.push_back(places.len());
        places.push(None);
        let (payload, sends) = match pick {
            0..=29 => {
                let p = params(rng);
                let a = Answer::Result(Cbor::Array(p.clone()));
                (request("echo", Some(p), None), vec![a])
            }
            30..=54 => {
                let p = params(rng);
                kept.push(Answer::Result(Cbor::Array(p.clone())));
                (request("later", Some(p), None), Vec::new())
            }
            55..=64 => {
                let mut sends = std::mem::take(&mut kept);
                sends.push(released.clone());
                (request("release", None, None), sends)
            }
            65..=69 => (request("settle", None, None), std::mem::take(&mut kept)),
            70..=74 => (request("fail", None, None), Vec::new()),
            // Only with nothing owed before it: its response then answers its own call, and
            // the host sends no -32603 (had it filled an earlier place, the params kept for
            // that one would be one too many for the next `release`).
            78..=79 if kept.is_empty() => {
                let p = params(rng);
                let a = Answer::Result(Cbor::Array(p.clone()));
                (request("answer_fail", Some(p), None), vec![a])
            }
            // (85 and up: garbage that would make ten errors in a row; a call instead.)
            75..=79 | 85.. => (request("nope", None, None), Vec::new()),
            _ => unreachable!("reserved names are handled above"),
        };
        for a in sends {
            let at = owed
                .pop_front()
                .expect("the app never sends more than it owes");
            places[at] = Some(a);
        }
        // A handler that raised: the host's -32603 takes the request's own place, after the
        // ones owed before it, unless that place is filled already (`answer_fail` with
        // nothing owed before it answers its own call: then no -32603).
        msgs.push(msg(payload, None, false));
        if pick >= 65 {
            let own = places.len() - 1;
            if let Some(at) = owed.iter().position(|&p| p == own) {
                owed.remove(at);
                if !room(&places, &owed) {
                    return closed(msgs, places, &owed);
                }
                places[own] = Some(Answer::Error(-32603));
            }
        }
    }
    assert!(
        owed.is_empty() && kept.is_empty(),
        "the last release answers all"
    );
    let answers = places.into_iter().map(|a| a.expect("filled")).collect();
    (msgs, answers, None)
}

fn frame_of(m: &Msg, rng: &mut Rng) -> Vec<u8> {
    let mut f = vec![0x80 | m.opcode];
    let n = m.payload.len();
    match n {
        0..=125 => f.push(0x80 | n as u8),
        126..=0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = rng.next().to_le_bytes();
    f.extend_from_slice(&key[..4]);
    f.extend(m.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

fn as_i64(v: Option<&Cbor>) -> Option<i64> {
    v.and_then(|v| v.as_integer()).map(|i| i128::from(i) as i64)
}

fn get<'a>(v: &'a Cbor, key: &str) -> Option<&'a Cbor> {
    v.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

/// A server message as the model's answer.
fn answer_of(payload: &[u8]) -> Result<Answer, String> {
    let v: Cbor = ciborium::from_reader(payload).map_err(|e| format!("not CBOR: {e}"))?;
    if as_i64(get(&v, "cid")) != Some(0) {
        return Err(format!("not a response: {v:?}"));
    }
    match as_i64(get(&v, "status")) {
        Some(1) => Ok(Answer::Result(
            get(&v, "result").cloned().ok_or("no result")?,
        )),
        Some(0) => Ok(Answer::Error(
            as_i64(get(&v, "error").and_then(|e| get(e, "code"))).ok_or("no error code")?,
        )),
        _ => Err(format!("no status: {v:?}")),
    }
}

fn run_session(addr: SocketAddr, path: &str, seed: u64, session: Session) -> Result<(), String> {
    let mut rng = Rng(seed);
    let (msgs, want, closes) = session(&mut rng);
    // The Pongs: every Ping's, or, with the host's Close, those of the Pings before the
    // message that decided it and maybe some after (the decision is the instance's, while the
    // IO worker reads on), never any after the Close.
    let pings: Vec<&[u8]> = msgs
        .iter()
        .filter(|m| m.opcode == 9)
        .map(|m| m.payload.as_slice())
        .collect();
    let pings_before = msgs[..closes.map_or(msgs.len(), |c| c.at + 1)]
        .iter()
        .filter(|m| m.opcode == 9)
        .count();
    let mut wire = Vec::new();
    for m in &msgs {
        wire.extend(frame_of(m, &mut rng));
    }
    let io = |e: std::io::Error| e.to_string();
    let mut s = try_raw_upgraded(addr, path)?;
    s.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    let mut reader = s.try_clone().map_err(io)?;
    type Got = (Vec<Answer>, Vec<Vec<u8>>, Option<u16>);
    let answers = std::thread::spawn(move || -> Result<Got, String> {
        let (mut got, mut pongs) = (Vec::new(), Vec::new());
        loop {
            let f = read_frame(&mut reader)
                .ok_or_else(|| format!("EOF before a Close, after {} answers", got.len()))?;
            match f.opcode {
                2 => got.push(answer_of(&f.payload)?),
                10 => pongs.push(f.payload),
                8 => {
                    let code = (f.payload.len() >= 2)
                        .then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
                    return Ok((got, pongs, code));
                }
                op => return Err(format!("opcode {op} from the server")),
            }
        }
    });
    // After its Close the server may end the connection before the last bytes: writes may
    // then fail (the answers say whether that was right).
    let mut at = 0;
    while at < wire.len() {
        let n = (1 + rng.below(400)).min(wire.len() - at);
        if s.write_all(&wire[at..at + n]).is_err() {
            break;
        }
        at += n;
    }
    if closes.is_none() {
        // Our Close once everything is written: its echo follows the last answer.
        s.write_all(&frame(true, 0, 0x8, &1000u16.to_be_bytes(), true))
            .map_err(io)?;
    }
    let (got, pongs, code) = answers.join().map_err(|_| "reader panicked")??;
    let want_code = closes.map_or(1000, |c| c.code);
    let pongs_fit = if closes.is_some() {
        pongs.len() >= pings_before && pongs.len() <= pings.len()
    } else {
        pongs.len() == pings.len()
    } && pongs.iter().zip(&pings).all(|(p, q)| p == q);
    if !pongs_fit {
        return Err(format!(
            "{} Pongs, want those of the {} Pings ({pings_before} before the Close was \
             decided), in order",
            pongs.len(),
            pings.len()
        ));
    }
    if got != want || code != Some(want_code) {
        return Err(format!(
            "got {} answers and close {code:?}, want {} and {want_code}; first difference at \
             {:?}",
            got.len(),
            want.len(),
            got.iter()
                .zip(&want)
                .position(|(g, w)| g != w)
                .map(|i| (i, &got[i], &want[i]))
        ));
    }
    // The server ends TCP after its Close (and, for its own Close, our reply), and sends
    // nothing after its Close.
    if closes.is_some() {
        let _ = s.write_all(&frame(true, 0, 0x8, &want_code.to_be_bytes(), true));
    }
    let mut rest = [0u8; 64];
    match s.read(&mut rest) {
        Ok(0) => {}
        Ok(n) => return Err(format!("{n} bytes after the server's Close")),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => return Err(format!("no end of TCP after the Close: {e}")),
    }
    let _ = s.shutdown(Shutdown::Both);
    Ok(())
}

/// ws.json for these tests: a close timeout (how long an ending connection waits for the
/// answers its app owes) far above what a busy CI machine can delay an instance.
fn lua_ws_json() -> String {
    ws_json_close_timeout(2, 10_000)
}

/// Where the host closes a session, if it does: after `msgs[at]`, with `code` (the remaining
/// messages, sent anyway, must go unanswered).
#[derive(Clone, Copy)]
struct Closes {
    at: usize,
    code: u16,
}

/// A session generator: messages, the answers due, where the host closes.
type Session = fn(&mut Rng) -> (Vec<Msg>, Vec<Answer>, Option<Closes>);

/// Runs the sessions (`LAPPS_RANDOM_SEED`, or [`SESSIONS`] from `base`, or
/// `LAPPS_RANDOM_SESSIONS` of them) against `path`, [`AT_ONCE`] at a time.
fn run_sessions(app: &TestApp, path: &'static str, base: u64, session: Session) {
    let addr = app.addr;
    let seeds: Vec<u64> = match std::env::var("LAPPS_RANDOM_SEED") {
        Ok(s) => vec![s.parse().expect("LAPPS_RANDOM_SEED is a number")],
        Err(_) => (base..base
            + std::env::var("LAPPS_RANDOM_SESSIONS").map_or(SESSIONS, |n| {
                let n = n.parse().expect("LAPPS_RANDOM_SESSIONS is a number");
                assert!(n > 0, "LAPPS_RANDOM_SESSIONS=0 would test nothing");
                n
            }))
            .collect(),
    };
    let closing = seeds
        .iter()
        .filter(|&&s| session(&mut Rng(s)).2.is_some())
        .count();
    let failures = run_seeds(&seeds, AT_ONCE, |seed| {
        run_session(addr, path, seed, session)
    });
    assert!(
        failures.is_empty(),
        "{} of {} sessions on {path} went wrong ({closing} end with the host's Close):\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
    // Every connection ended, the workers hold nothing of theirs, and the services nothing
    // either (onDisconnect run for each, bcast subscriptions gone).
    app.wait_every_connection_forgotten();
}

#[test]
fn random_lapps_sessions_get_what_the_protocol_says() {
    let services = format!(
        r#"{{ "echo_lapps": {{ "protocol": "LAppS", "request_target": "/echo_lapps",
                             "instances": 2, "preload": ["bcast"],
                             "max_protocol_errors": {MAX_PROTOCOL_ERRORS} }} }}"#
    );
    let app = start_app(&lua_ws_json(), &lapps_json("./lua/apps", &services));
    // The sessions reach both endings.
    let closing = (0..SESSIONS)
        .filter(|&s| session(&mut Rng(s)).2.is_some())
        .count() as u64;
    assert!(
        closing > 50 && closing < SESSIONS - 50,
        "{closing} of {SESSIONS} sessions end with 1003"
    );
    run_sessions(&app, "/echo_lapps", 0, session);
}

#[test]
fn random_sessions_get_their_answers_in_call_order_when_the_app_answers_some_later() {
    // tests/apps/lapps_deferred: `later` keeps its params unanswered, `release` answers what
    // this connection has kept, then itself; the host's error answers meanwhile wait their
    // turn behind the responses the app owes.
    let app = start_app(
        &lua_ws_json(),
        &lapps_json(
            "./tests/apps",
            r#"{ "lapps_deferred": { "protocol": "LAppS", "instances": 2, "preload": ["mqr"] } }"#,
        ),
    );
    // Some sessions end with the 1008 of too many held answers.
    let closing = (1_000_000..1_000_000 + SESSIONS)
        .filter(|&s| deferred_session(&mut Rng(s)).2.is_some())
        .count() as u64;
    assert!(
        closing > 20 && closing < SESSIONS / 5,
        "{closing} of {SESSIONS} sessions end with 1008"
    );
    run_sessions(&app, "/lapps_deferred", 1_000_000, deferred_session);
}
