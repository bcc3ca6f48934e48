//! Random LAppS sessions: seeded sequences of messages (calls with random params, calls to an
//! unknown and to a reserved method, calls whose handler raises, notifications, malformed
//! requests and notifications, payloads that are not CBOR maps, text frames) pipelined over
//! one connection in random cuts, many connections at once, to the real `echo_lapps` app. A
//! model of the protocol's rules (docs/lua-api.md) says what comes back: one answer per request
//! in call order (the params echoed, or the error code each fault earns), nothing for a
//! notification, and a Close 1003 after `max_protocol_errors` errors in a row, a well-formed
//! message of any kind (a malformed notification is not one) ending a row.
//!
//! A failure names the seed; `LAPPS_RANDOM_SEED=n` runs that one session alone, and
//! `LAPPS_RANDOM_SESSIONS=n` runs n sessions instead of 1,000.

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr};

use ciborium::Value as Cbor;
use common::rng::Rng;
use common::*;

const MAX_PROTOCOL_ERRORS: usize = 10;
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
    match rng.below(if depth < 2 { 7 } else { 6 }) {
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

fn request(method: &str, params: Option<Vec<Cbor>>, cid: Option<i64>) -> Vec<u8> {
    let mut m = vec![("lapps", Cbor::Integer(1.into())), ("method", text(method))];
    if let Some(p) = params {
        m.push(("params", Cbor::Array(p)));
    }
    if let Some(cid) = cid {
        m.push(("cid", Cbor::Integer(cid.into())));
    }
    cbor(&map(m))
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
    let cid = 1 + rng.below(1000) as i64;
    match rng.below(100) {
        0..=44 => {
            let p = params(rng);
            let answer = Answer::Result(Cbor::Array(p.clone()));
            msg(request("echo", Some(p), None), Some(answer), false)
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
                note.push(("cid", Cbor::Integer(cid.into())));
                msg(cbor(&map(note)), None, true)
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

/// A session's messages, the answers due, and whether it ends with the 1003 (after which the
/// session's remaining messages, sent anyway, must go unanswered).
fn session(rng: &mut Rng) -> (Vec<Msg>, Vec<Answer>, bool) {
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
    for m in &msgs {
        answers.extend(m.answer.clone());
        row = if m.counted { row + 1 } else { 0 };
        if row == MAX_PROTOCOL_ERRORS {
            return (msgs, answers, true);
        }
    }
    (msgs, answers, false)
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

fn run_session(addr: SocketAddr, seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed);
    let (msgs, want, closes) = session(&mut rng);
    let mut wire = Vec::new();
    for m in &msgs {
        wire.extend(frame_of(m, &mut rng));
    }
    let mut s = raw_upgraded(addr, "/echo_lapps");
    let mut reader = s.try_clone().map_err(|e| e.to_string())?;
    let answers = std::thread::spawn(move || -> Result<(Vec<Answer>, Option<u16>), String> {
        let mut got = Vec::new();
        loop {
            let f = read_frame(&mut reader)
                .ok_or_else(|| format!("EOF before a Close, after {} answers", got.len()))?;
            match f.opcode {
                2 => got.push(answer_of(&f.payload)?),
                8 => {
                    let code = (f.payload.len() >= 2)
                        .then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
                    return Ok((got, code));
                }
                op => return Err(format!("opcode {op} from the server")),
            }
        }
    });
    let mut at = 0;
    while at < wire.len() {
        let n = (1 + rng.below(400)).min(wire.len() - at);
        s.write_all(&wire[at..at + n]).map_err(|e| e.to_string())?;
        at += n;
    }
    if !closes {
        // Our Close once everything is written: its echo follows the last answer.
        s.write_all(&frame(true, 0, 0x8, &1000u16.to_be_bytes(), true))
            .map_err(|e| e.to_string())?;
    }
    let (got, code) = answers.join().map_err(|_| "reader panicked")??;
    let want_code = if closes { 1003 } else { 1000 };
    if got != want || code != Some(want_code) {
        return Err(format!(
            "got {} answers and close {code:?}, want {} and {want_code}; first difference at \
             {:?}",
            got.len(),
            want.len(),
            got.iter().zip(&want).position(|(g, w)| g != w)
        ));
    }
    // The server ends TCP after its Close (and, for its own Close, our reply).
    if closes {
        s.write_all(&frame(true, 0, 0x8, &1003u16.to_be_bytes(), true))
            .map_err(|e| e.to_string())?;
    }
    if !closed_by_server(&mut s) {
        return Err("the server did not end TCP after its Close".into());
    }
    let _ = s.shutdown(Shutdown::Both);
    Ok(())
}

#[test]
fn random_lapps_sessions_get_what_the_protocol_says() {
    let services = format!(
        r#"{{ "echo_lapps": {{ "protocol": "LAppS", "request_target": "/echo_lapps",
                             "instances": 2, "preload": ["bcast"],
                             "max_protocol_errors": {MAX_PROTOCOL_ERRORS} }} }}"#
    );
    let app = start_app(&ws_json(2), &lapps_json("./lua/apps", &services));
    let addr = app.addr;
    let seeds: Vec<u64> = match std::env::var("LAPPS_RANDOM_SEED") {
        Ok(s) => vec![s.parse().expect("LAPPS_RANDOM_SEED is a number")],
        Err(_) => (0..std::env::var("LAPPS_RANDOM_SESSIONS").map_or(SESSIONS, |n| {
            n.parse().expect("LAPPS_RANDOM_SESSIONS is a number")
        }))
            .collect(),
    };
    // The sessions reach both endings, and carry every kind of message.
    let closing = seeds.iter().filter(|&&s| session(&mut Rng(s)).2).count();
    if seeds.len() >= SESSIONS as usize {
        assert!(
            closing > 50 && closing < seeds.len() - 50,
            "{closing} of {} sessions end with 1003",
            seeds.len()
        );
    }
    let failures: Vec<String> = seeds
        .chunks(AT_ONCE)
        .flat_map(|batch| {
            std::thread::scope(|scope| {
                let runs: Vec<_> = batch
                    .iter()
                    .map(|&seed| scope.spawn(move || (seed, run_session(addr, seed))))
                    .collect();
                runs.into_iter()
                    .map(|r| r.join().expect("session thread"))
                    .filter_map(|(seed, r)| r.err().map(|e| format!("seed {seed}: {e}")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} sessions went wrong ({closing} end with 1003):\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
    // Every connection ended, and the workers hold nothing of theirs.
    wait_all_ended(&app.hub());
}
