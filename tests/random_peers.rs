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

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use common::rng::Rng;
use common::*;
use lapps::ws::Opcode;

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
        n.parse().expect("RANDOM_PEERS_SCRIPTS is a number")
    })
}

// ---------------------------------------------------------------------------------------------
// Client frames as the script writes them, faults included.

/// How the payload length goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Length {
    /// The minimal encoding (RFC 6455 5.2), the only one allowed.
    Minimal,
    /// A 16-bit length for a payload under 126 bytes.
    Wide16,
    /// A 64-bit length for a payload under 65,536 bytes.
    Wide64,
    /// A 64-bit length with its most significant bit set (and no payload after it).
    HighBit,
    /// A declared length of `n` with no payload after it (a message too big to be sent).
    Declared(u64),
}

#[derive(Clone, Debug)]
struct Frame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    /// Masked as its sender must (clients mask, servers do not), or, a fault, the other way.
    masked_right: bool,
    length: Length,
    payload: Vec<u8>,
}

impl Frame {
    fn new(fin: bool, opcode: u8, payload: Vec<u8>) -> Frame {
        Frame {
            fin,
            rsv: 0,
            opcode,
            masked_right: true,
            length: Length::Minimal,
            payload,
        }
    }

    /// The length the header declares.
    fn declared(&self) -> u64 {
        match self.length {
            Length::Declared(n) => n,
            Length::HighBit => 1 << 63,
            _ => self.payload.len() as u64,
        }
    }

    /// The frame's bytes, as a client sends it (`from_client`) or as a server does.
    fn wire(&self, rng: &mut Rng, from_client: bool) -> Vec<u8> {
        let mut f = vec![(u8::from(self.fin) << 7) | (self.rsv << 4) | self.opcode];
        let masked = self.masked_right == from_client;
        let m = if masked { 0x80 } else { 0 };
        let n = self.declared();
        match self.length {
            Length::Minimal | Length::Declared(_) if n < 126 => f.push(m | n as u8),
            Length::Minimal | Length::Declared(_) | Length::Wide16 if n <= 0xFFFF => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&n.to_be_bytes());
            }
        }
        if masked {
            let key = rng.next().to_le_bytes();
            let key = [key[0], key[1], key[2], key[3]];
            f.extend_from_slice(&key);
            f.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            f.extend_from_slice(&self.payload);
        }
        f
    }
}

/// A script: frames, each maybe with a fault; after the first one that ends the connection
/// (a fault, a Close, a too-big header) only a few more, which the server must ignore.
fn script(rng: &mut Rng) -> Vec<Frame> {
    let mut frames = Vec::new();
    let steps = 1 + rng.below(40);
    for _ in 0..steps {
        match rng.below(1000) {
            // A whole message.
            0..=399 => {
                let text = rng.chance(50);
                let n = rng.size();
                let payload = if text { rng.text(n) } else { rng.bytes(n) };
                frames.push(Frame::new(true, if text { 1 } else { 2 }, payload));
            }
            // A fragmented message, control frames between its fragments.
            400..=639 => {
                let text = rng.chance(50);
                let n = rng.size();
                let whole = if text { rng.text(n) } else { rng.bytes(n) };
                let n = whole.len(); // text ends on a whole character
                let parts = 2 + rng.below(4);
                let mut cuts: Vec<usize> = (0..parts - 1).map(|_| rng.below(n + 1)).collect();
                cuts.sort_unstable();
                cuts.push(n);
                let mut from = 0;
                for (i, &to) in cuts.iter().enumerate() {
                    let opcode = match (i, text) {
                        (0, true) => 1,
                        (0, false) => 2,
                        _ => 0,
                    };
                    frames.push(Frame::new(i == parts - 1, opcode, whole[from..to].to_vec()));
                    from = to;
                    if rng.chance(25) {
                        let n = rng.below(126);
                        frames.push(Frame::new(true, 9 + rng.below(2) as u8, rng.bytes(n)));
                    }
                }
            }
            // A message of the limit's size, one byte under or one over, whole or in two.
            640..=649 => {
                let n = MAX_MESSAGE - 1 + rng.below(3);
                let whole = rng.bytes(n);
                if rng.chance(50) {
                    frames.push(Frame::new(true, 2, whole));
                } else {
                    let cut = rng.below(n + 1);
                    frames.push(Frame::new(false, 2, whole[..cut].to_vec()));
                    frames.push(Frame::new(true, 0, whole[cut..].to_vec()));
                }
            }
            650..=799 => {
                let n = rng.below(126);
                frames.push(Frame::new(true, 9, rng.bytes(n)));
            }
            800..=869 => {
                let n = rng.below(126);
                frames.push(Frame::new(true, 10, rng.bytes(n)));
            }
            // The peer closes, validly or not.
            870..=894 => frames.push(close_frame(rng)),
            // Text that is not UTF-8, whole or in fragments.
            895..=924 => {
                let n = rng.size();
                let bad = rng.bad_text(n);
                if rng.chance(50) {
                    frames.push(Frame::new(true, 1, bad));
                } else {
                    let cut = rng.below(bad.len() + 1);
                    frames.push(Frame::new(false, 1, bad[..cut].to_vec()));
                    frames.push(Frame::new(true, 0, bad[cut..].to_vec()));
                }
            }
            // A message that outgrows the limit: one header, or fragments adding up.
            925..=944 => {
                if rng.chance(50) {
                    let mut f = Frame::new(true, 1 + rng.below(2) as u8, Vec::new());
                    let over = MAX_MESSAGE as u64 + 1 + rng.below(1 << 20) as u64;
                    f.length = Length::Declared(over);
                    frames.push(f);
                } else {
                    let piece = MAX_MESSAGE / 3 + 1;
                    frames.push(Frame::new(false, 2, rng.bytes(piece)));
                    for _ in 0..3 {
                        frames.push(Frame::new(false, 0, rng.bytes(piece)));
                    }
                }
            }
            // The first fragment of a message the script may never finish: what follows is
            // inside it (a continuation finishes it; a new message is a violation).
            945..=964 => {
                let text = rng.chance(50);
                let n = rng.size();
                let payload = if text { rng.text(n) } else { rng.bytes(n) };
                frames.push(Frame::new(false, if text { 1 } else { 2 }, payload));
            }
            // One fault in an otherwise good frame.
            _ => frames.push(faulty_frame(rng)),
        }
    }
    frames
}

fn close_frame(rng: &mut Rng) -> Frame {
    const GOOD: [u16; 15] = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4999,
    ];
    const BAD: [u16; 10] = [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000];
    let payload = match rng.below(10) {
        0 => Vec::new(),
        1 => vec![0x03],
        2 => BAD[rng.below(BAD.len())].to_be_bytes().to_vec(),
        3 => {
            let mut p = GOOD[rng.below(GOOD.len())].to_be_bytes().to_vec();
            p.extend_from_slice(b"bye \xff");
            p
        }
        _ => {
            let mut p = GOOD[rng.below(GOOD.len())].to_be_bytes().to_vec();
            let n = rng.below(60);
            p.extend(rng.text(n));
            p.truncate(125);
            if std::str::from_utf8(&p[2..]).is_err() {
                p.truncate(2); // the cut split a character
            }
            p
        }
    };
    Frame::new(true, 8, payload)
}

fn faulty_frame(rng: &mut Rng) -> Frame {
    // The fault goes on a frame of any kind, continuations and Closes included.
    let opcode = [1u8, 2, 9, 10, 0, 8][rng.below(6)];
    let n = if opcode >= 8 {
        rng.below(126)
    } else {
        rng.size()
    };
    let payload = if opcode == 1 {
        rng.text(n)
    } else {
        rng.bytes(n)
    };
    let mut f = Frame::new(true, opcode, payload);
    match rng.below(9) {
        0 => f.rsv = 1 + rng.below(7) as u8,
        1 => f.opcode = [3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15][rng.below(10)],
        2 => f.masked_right = false,
        3 => {
            // A control frame over 125 bytes.
            f.opcode = 9 + rng.below(2) as u8;
            let n = 126 + rng.below(100);
            f.payload = rng.bytes(n);
        }
        4 => {
            f.opcode = 8 + rng.below(3) as u8;
            f.payload.truncate(125);
            f.fin = false; // a fragmented control frame
        }
        5 => f.opcode = 0, // a continuation with no message (unless one is open)
        6 => {
            f.length = Length::Wide16;
            f.payload.truncate(125);
        }
        7 => {
            f.length = Length::Wide64;
            f.payload.truncate(0xFFFF);
        }
        _ => {
            f.length = Length::HighBit;
            f.payload.clear();
        }
    }
    f
}

// ---------------------------------------------------------------------------------------------
// The model: RFC 6455's rules for an endpoint receiving these frames.
//
// Where the RFC leaves the receiver a choice, the model takes the one this server documents:
// every Ping is answered (5.5.3 allows answering only the latest), text fails as soon as its
// bytes cannot become UTF-8 (8.1 allows waiting for the message's end; Autobahn's fail-fast
// cases expect this), a length that is not minimally encoded is refused with 1002 (5.2's
// MUST binds the sender; refusing is allowed), and so is a Close with a code nobody has
// assigned (0-999, 1004-1006, 1015-2999, 5000 and up: 7.4.2 reserves them; 7.4.1 and the IANA
// registry leave 1000-1003, 1007-1014 and 3000-4999 to be sent).

#[derive(Clone, Debug, Default, PartialEq)]
struct Outcome {
    /// Echoed messages: (opcode, payload).
    messages: Vec<(u8, Vec<u8>)>,
    pongs: Vec<Vec<u8>>,
    /// The server's Close: `Some(code)`, or `None` for a Close without a body.
    close: Option<Option<u16>>,
}

/// Whether `b` can still become UTF-8 (valid so far, maybe cut inside its last character).
fn utf8_prefix(b: &[u8]) -> bool {
    match std::str::from_utf8(b) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

fn close_code_valid(code: u16) -> bool {
    // 7.4.1 and the IANA registry: 1000-1003 and 1007-1014 are defined for use, 1004-1006 and
    // 1015 must not be sent, 3000-4999 are for libraries and applications.
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// What the server must answer to a script.
#[derive(Debug)]
struct Expected {
    /// The answer. Its Close is `None` while the script leaves the connection open: the caller
    /// then appends a Close 1000.
    want: Outcome,
    /// How many frames the server reads (the rest come after the end).
    read: usize,
    /// The receiver fails the connection (its Close is not the echo of the peer's).
    failed: bool,
    /// The peer ends TCP without a Close, after the script: a server answers what it
    /// received and ends TCP too, with no Close, or an empty one behind answers a service
    /// owed when the FIN came; the cws client reports an error and 1006 and sends no Close
    /// (RFC 6455 7.1.5: the closure was abnormal, 1006, a code no frame may carry).
    vanish: bool,
    /// LAppS: the service decides on the 1003 on its own thread while the IO worker reads on,
    /// so the frames after the tenth error may still be heard first, Pings answered and a
    /// Close of theirs (the peer's, or a violation's) sent instead of the 1003 (RFC 6455 lets
    /// either side close first). The answer when all of them are heard: no more error answers.
    or_heard_on: Option<Outcome>,
}

fn expect(frames: &[Frame], answers: Answers) -> Expected {
    let mut decided = None;
    let (out, read, failed) = hear(frames, answers, &mut decided);
    match decided {
        None => Expected {
            want: out,
            read,
            failed,
            vanish: false,
            or_heard_on: None,
        },
        Some(want) => Expected {
            want,
            read,
            failed,
            vanish: false,
            or_heard_on: Some(out),
        },
    }
}

/// The server's answer to `frames`, how many it reads and whether it failed the connection
/// (its Close is not the echo of the peer's); `decided` is what the answer is at the LAppS
/// service's 1003, when it comes to one.
fn hear(
    frames: &[Frame],
    answers: Answers,
    decided: &mut Option<Outcome>,
) -> (Outcome, usize, bool) {
    let mut out = Outcome::default();
    // The message being assembled: its opcode and bytes.
    let mut open: Option<(u8, Vec<u8>)> = None;
    for (i, f) in frames.iter().enumerate() {
        let fail = |out: &mut Outcome, code| {
            out.close = Some(Some(code));
            (std::mem::take(out), i + 1, true)
        };
        // 5.2: the length's encoding is read first.
        let minimal = match f.length {
            Length::Minimal | Length::Declared(_) => true,
            Length::Wide16 => f.payload.len() >= 126,
            Length::Wide64 => f.payload.len() > 0xFFFF,
            Length::HighBit => false,
        };
        if !minimal {
            return fail(&mut out, 1002);
        }
        let control = f.opcode >= 8;
        let known = matches!(f.opcode, 0 | 1 | 2 | 8 | 9 | 10);
        if f.rsv != 0 || !known || !f.masked_right {
            return fail(&mut out, 1002);
        }
        if control {
            if f.declared() > 125 || !f.fin {
                return fail(&mut out, 1002);
            }
            match f.opcode {
                9 => out.pongs.push(f.payload.clone()),
                10 => {}
                _ => {
                    return match f.payload.as_slice() {
                        [] => {
                            out.close = Some(None);
                            (out, i + 1, false)
                        }
                        [_] => fail(&mut out, 1002),
                        [hi, lo, reason @ ..] => {
                            let code = u16::from_be_bytes([*hi, *lo]);
                            if !close_code_valid(code) {
                                fail(&mut out, 1002)
                            } else if std::str::from_utf8(reason).is_err() {
                                fail(&mut out, 1007)
                            } else {
                                out.close = Some(Some(code));
                                (out, i + 1, false)
                            }
                        }
                    };
                }
            }
            continue;
        }
        // 5.4: continuations continue an open message; a new one may not start inside it.
        match (f.opcode, &open) {
            (0, None) | (1 | 2, Some(_)) => return fail(&mut out, 1002),
            _ => {}
        }
        let so_far = open.as_ref().map_or(0, |(_, m)| m.len()) as u64;
        if so_far + f.declared() > MAX_MESSAGE as u64 {
            return fail(&mut out, 1009);
        }
        let (opcode, mut message) = open
            .take()
            .unwrap_or_else(|| (f.opcode, Vec::with_capacity(f.payload.len())));
        message.extend_from_slice(&f.payload);
        // 8.1: text fails as soon as its bytes cannot be UTF-8 any more, and at its end
        // unless they are.
        if opcode == 1 && !utf8_prefix(&message) {
            return fail(&mut out, 1007);
        }
        if !f.fin {
            open = Some((opcode, message));
            continue;
        }
        if opcode == 1 && std::str::from_utf8(&message).is_err() {
            return fail(&mut out, 1007);
        }
        if answers != Answers::LappsErrors {
            if decided.is_some() {
                continue; // the app closed: nothing after is echoed
            }
            if answers == Answers::EchoCloser && opcode == 2 && message.len() == 8 {
                if let Some(code) = message.strip_prefix(b"close:") {
                    let mut at_decision = out.clone();
                    at_decision.close = Some(Some(u16::from_be_bytes([code[0], code[1]])));
                    *decided = Some(at_decision);
                    continue;
                }
            }
            out.messages.push((opcode, message));
            continue;
        }
        if decided.is_none() {
            out.messages.push((2, Vec::new()));
            if out.messages.len() == MAX_PROTOCOL_ERRORS {
                let mut at_decision = out.clone();
                at_decision.close = Some(Some(1003));
                *decided = Some(at_decision);
            }
        }
    }
    (out, frames.len(), false)
}

// ---------------------------------------------------------------------------------------------
// Running scripts over real sockets.

/// One frame of the peer under test, a client's (`from_client`: masked, unmasked here) or a
/// server's: (fin, opcode, payload); the error says what was wrong.
/// None at the end of the stream between frames (over TLS: after close_notify).
fn next_frame(s: &mut impl Read, from_client: bool) -> Result<Option<(bool, u8, Vec<u8>)>, String> {
    let mut h = [0u8; 2];
    match s.read(&mut h[..1]) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(e.to_string()),
    }
    s.read_exact(&mut h[1..]).map_err(|e| e.to_string())?;
    if (h[1] & 0x80 != 0) != from_client {
        return Err("a frame masked the wrong way for its sender".into());
    }
    if h[0] & 0x70 != 0 {
        return Err("RSV bits set".into());
    }
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).map_err(|e| e.to_string())?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).map_err(|e| e.to_string())?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    if len > 1 << 20 {
        return Err(format!("a frame of {len} bytes"));
    }
    // 5.5: control frames are never fragmented and carry at most 125 bytes.
    if h[0] & 0x08 != 0 && (h[0] & 0x80 == 0 || len > 125) {
        return Err(format!("a control frame of {len} bytes, FIN {}", h[0] >> 7));
    }
    let mut key = [0u8; 4];
    if from_client {
        s.read_exact(&mut key).map_err(|e| e.to_string())?;
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).map_err(|e| e.to_string())?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    Ok(Some((h[0] & 0x80 != 0, h[0] & 0x0f, payload)))
}

/// The code of a LAppS error response (status 0, cid 0), if `m` is one.
fn lapps_error_code(m: &[u8]) -> Option<i64> {
    use ciborium::Value;
    let v: Value = ciborium::from_reader(m).ok()?;
    let get = |v: &Value, key: &str| -> Option<Value> {
        let (_, v) = v.as_map()?.iter().find(|(k, _)| k.as_text() == Some(key))?;
        Some(v.clone())
    };
    let int = |v: Option<Value>| v?.as_integer().and_then(|i| i64::try_from(i).ok());
    if int(get(&v, "status")) != Some(0) || int(get(&v, "cid")) != Some(0) {
        return None;
    }
    int(get(&get(&v, "error")?, "code"))
}

/// A Close frame's code (None: no body), if its body is one a peer may send (5.5.1, 7.4.1).
fn close_body(payload: &[u8]) -> Result<Option<u16>, String> {
    match payload {
        [] => Ok(None),
        [hi, lo, reason @ ..] if close_code_valid(u16::from_be_bytes([*hi, *lo])) => {
            std::str::from_utf8(reason).map_err(|_| "a Close reason that is not UTF-8")?;
            Ok(Some(u16::from_be_bytes([*hi, *lo])))
        }
        _ => Err(format!("a Close body that may not be sent: {payload:02x?}")),
    }
}

/// What one connection got back: messages (reassembled), pongs and the Close, then whether
/// EOF followed the Close.
fn read_answers(mut s: impl Read, answers: Answers) -> Result<Outcome, String> {
    let mut got = Outcome::default();
    let mut open: Option<(u8, Vec<u8>)> = None;
    loop {
        let Some((fin, opcode, payload)) = next_frame(&mut s, false)
            .map_err(|e| format!("{e} before a Close, after {}", summary(&got)))?
        else {
            // The end without a Close: `check` says whether that is right.
            return match open {
                None => Ok(got),
                Some(_) => Err("the end inside a fragmented message".into()),
            };
        };
        match opcode {
            8 => {
                got.close = Some(close_body(&payload)?);
                break;
            }
            9 => return Err("the server sent a Ping".into()),
            10 => got.pongs.push(payload),
            0 => {
                let (_, m) = open.as_mut().ok_or("a continuation with no message")?;
                m.extend_from_slice(&payload);
            }
            1 | 2 => {
                if open.is_some() {
                    return Err("a new message inside a fragmented one".into());
                }
                open = Some((opcode, payload));
            }
            op => return Err(format!("opcode {op} from the server")),
        }
        if fin && matches!(opcode, 0..=2) {
            let (opcode, m) = open.take().expect("open");
            if answers != Answers::LappsErrors {
                got.messages.push((opcode, m));
            } else if opcode == 2
                && lapps_error_code(&m).is_some_and(|c| matches!(c, -32700 | -32600))
            {
                got.messages.push((2, Vec::new()));
            } else {
                return Err(format!("not a LAppS error answer: {opcode}, {m:02x?}"));
            }
        }
    }
    if open.is_some() {
        return Err("a Close inside a fragmented message".into());
    }
    // After its Close the server sends nothing, and ends TCP.
    let mut rest = [0u8; 64];
    match s.read(&mut rest) {
        Ok(0) => Ok(got),
        Ok(n) => Err(format!("{n} bytes after the Close")),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(got),
        Err(e) => Err(format!("no EOF after the Close: {e}")),
    }
}

/// Script `seed` on the wire, what the server must answer, and the generator for the cuts.
fn prepare(seed: u64, answers: Answers, from_client: bool) -> (Vec<u8>, Expected, Rng) {
    let mut rng = Rng(seed);
    let mut frames = script(&mut rng);
    if answers == Answers::EchoCloser && rng.chance(60) {
        // The app is asked to close somewhere in the script (inside a fragmented message,
        // the request itself is the violation).
        let code = APP_CLOSE_CODES[rng.below(APP_CLOSE_CODES.len())];
        let mut ask = b"close:".to_vec();
        ask.extend_from_slice(&code.to_be_bytes());
        let at = rng.below(frames.len() + 1);
        frames.insert(at, Frame::new(true, 2, ask));
    }
    let mut e = expect(&frames, answers);
    // Sometimes a peer that leaves the connection open just ends TCP instead of closing.
    e.vanish = e.or_heard_on.is_none() && e.want.close.is_none() && rng.chance(20);
    // Half the time its FIN comes inside its last frame, which the server then never has.
    let cut_last = e.vanish && !frames.is_empty() && rng.chance(50);
    if cut_last {
        e = Expected {
            vanish: true,
            ..expect(&frames[..frames.len() - 1], answers)
        };
    }
    let last = e.or_heard_on.as_mut().unwrap_or(&mut e.want);
    if e.vanish {
        // Its FIN follows (the caller shuts its side).
    } else if last.close.is_none() {
        let mut bye = Frame::new(true, 8, 1000u16.to_be_bytes().to_vec());
        if rng.chance(30) {
            bye.payload.extend_from_slice(b"done");
        }
        frames.push(bye);
        last.close = Some(Some(1000));
    } else {
        // What follows the end is not read: at most a few frames of it are sent.
        frames.truncate(e.read + rng.below(3));
    }
    let mut wire = Vec::new();
    let mut last_start = 0;
    for f in &frames {
        last_start = wire.len();
        wire.extend(f.wire(&mut rng, from_client));
    }
    if cut_last {
        let keep = last_start + rng.below(wire.len() - last_start);
        wire.truncate(keep);
    }
    (wire, e, rng)
}

/// Random cuts: the server sees the frames split anywhere, headers included.
fn cuts(len: usize, rng: &mut Rng) -> Vec<std::ops::Range<usize>> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < len {
        let n = (1 + rng.below(300)).min(len - at);
        out.push(at..at + n);
        at += n;
    }
    out
}

fn check(got: Outcome, e: &Expected) -> Result<(), String> {
    if got == e.want {
        return Ok(());
    }
    if e.vanish
        && got.close == Some(None)
        && got.messages == e.want.messages
        && got.pongs == e.want.pongs
    {
        return Ok(());
    }
    let Some(heard) = &e.or_heard_on else {
        return Err(format!("got {}, want {}", summary(&got), summary(&e.want)));
    };
    // The 1003 after some of the later Pings were answered, or the later frames' own Close
    // after all of them were.
    let pongs_between =
        got.pongs.len() >= e.want.pongs.len() && heard.pongs.starts_with(&got.pongs);
    let fits = got.messages == e.want.messages
        && ((got.close == e.want.close && pongs_between)
            || (got.close == heard.close && got.pongs == heard.pongs));
    if !fits {
        return Err(format!(
            "got {}, want {} or, with the frames after the tenth error heard, {}",
            summary(&got),
            summary(&e.want),
            summary(heard)
        ));
    }
    Ok(())
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
        // A peer that aborts: its frames, then a reset. Nothing to check on this connection;
        // what it held must still be given back (the callers' wait_all_ended).
        for cut in cuts {
            if s.write_all(&wire[cut]).is_err() {
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

/// The scripted server of the cws client tests: one listener for all of them (each script
/// of its own would leave a port in TIME_WAIT, and a long hunt runs out of ports). A
/// connection's upgrade names its script's seed in the path; its server side plays that
/// script, reads the client's Pongs and Close, ends TCP, and reports what the client sent.
fn script_server() -> SocketAddr {
    static ADDR: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();
    *ADDR.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
        let addr = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                std::thread::spawn(move || play_to_client(s));
            }
        });
        addr
    })
}

/// Where a script's server side reports, by seed.
type Reports = std::sync::Mutex<
    std::collections::HashMap<u64, std::sync::mpsc::Sender<Result<Outcome, String>>>,
>;

fn reports() -> &'static Reports {
    static REPORTS: std::sync::OnceLock<Reports> = std::sync::OnceLock::new();
    REPORTS.get_or_init(Default::default)
}

fn play_to_client(mut s: TcpStream) {
    let head = read_http_head(&mut s);
    let Some(seed) = head
        .strip_prefix("GET /")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
    else {
        return;
    };
    let result = play(s, &head, seed);
    if let Some(to) = reports().lock().unwrap().remove(&seed) {
        let _ = to.send(result);
    }
}

fn play(mut s: TcpStream, head: &str, seed: u64) -> Result<Outcome, String> {
    let (wire, e, mut rng) = prepare(seed, Answers::Echo, false);
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .ok_or("no key in the upgrade request")?;
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        lapps::ws::handshake::accept_key(key.trim())
    );
    s.write_all(answer.as_bytes()).map_err(|e| e.to_string())?;
    for cut in cuts(wire.len(), &mut rng) {
        s.write_all(&wire[cut]).map_err(|e| e.to_string())?;
    }
    let mut sent = Outcome::default();
    if e.vanish {
        // We end TCP without a Close: the client's Pongs, then its end, and no Close of its
        // own unless its app closed before our FIN reached it (the connection is closed,
        // abnormally: 1006, 7.1.5).
        shut().lock().unwrap().insert(seed);
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        while let Some((_, opcode, payload)) = next_frame(&mut s, true)
            .map_err(|e| format!("{e} after our FIN, after {}", summary(&sent)))?
        {
            match opcode {
                10 if sent.close.is_none() => sent.pongs.push(payload),
                8 if sent.close.is_none() => sent.close = Some(close_body(&payload)?),
                op => return Err(format!("opcode {op} from the client after our FIN")),
            }
        }
        return Ok(sent);
    }
    // The client's Pongs, then its Close.
    loop {
        let (_, opcode, payload) = next_frame(&mut s, true)
            .map_err(|e| format!("{e} before the client's Close, after {}", summary(&sent)))?
            .ok_or_else(|| format!("EOF before the client's Close, after {}", summary(&sent)))?;
        match opcode {
            10 => sent.pongs.push(payload),
            8 => {
                sent.close = Some(close_body(&payload)?);
                break;
            }
            op => return Err(format!("opcode {op} from the client")),
        }
    }
    // The server ends TCP first (7.1.1); the client sends nothing after its Close, and ends
    // its side once it has our FIN.
    shut().lock().unwrap().insert(seed);
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = [0u8; 64];
    match s.read(&mut rest) {
        Ok(0) => Ok(sent),
        Ok(n) => Err(format!("{n} bytes from the client after its Close")),
        Err(e) => Err(format!("no EOF from the client after its Close: {e}")),
    }
}

/// The scripts whose server side has ended TCP: a client must not be done before.
fn shut() -> &'static std::sync::Mutex<std::collections::HashSet<u64>> {
    static SHUT: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<u64>>> =
        std::sync::OnceLock::new();
    SHUT.get_or_init(Default::default)
}

/// The cws client's side of script `seed`, played by [`script_server`]: what the client
/// reports (its messages and `onclose` code) and sends (Pongs, its Close) must be what the
/// model says, and the client waits for the server to end TCP (RFC 6455 7.1.1).
fn run_one_client(seed: u64) -> Result<(), String> {
    use lapps::service::cws::{url, Client, Event, KeyPool};
    let e = prepare(seed, Answers::Echo, false).1;
    let (to, report) = std::sync::mpsc::channel();
    reports().lock().unwrap().insert(seed, to);
    let u = url::parse(&format!("ws://{}/{seed}", script_server())).map_err(|e| e.to_string())?;
    let mut keys = KeyPool::default();
    let mut c = Client::connect(&u, None, &mut keys, MAX_MESSAGE)?;
    // Half the time the app closes the connection itself, once it has had `close_after`
    // messages (or more: a round may deliver several), if the server has not closed first.
    let mut choice = Rng(seed ^ 0x5eed);
    let app_close = choice.chance(50).then(|| {
        let after = choice.below(e.want.messages.len() + 1);
        (after, APP_CLOSE_CODES[choice.below(APP_CLOSE_CODES.len())])
    });
    // The messages delivered when the app closed (none may follow).
    let mut app_closed = None;
    let delivered = std::cell::Cell::new(0);
    let mut events = Vec::new();
    let mut on = |ev: Event<'_>| {
        events.push(match ev {
            Event::Open => "open".to_string(),
            Event::Message(m, op) => {
                delivered.set(delivered.get() + 1);
                format!("{op:?} {m:02x?}")
            }
            Event::Error(_) => "error".to_string(),
            Event::Closed(code) => format!("closed {code}"),
        })
    };
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while !c.is_done() {
        if std::time::Instant::now() > deadline {
            return Err("the client is not done within the guard".into());
        }
        let mut pfd = libc::pollfd {
            fd: c.fd(),
            events: c.interest(),
            revents: 0,
        };
        // SAFETY: one valid pollfd, exclusively borrowed for the call.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        c.ready(pfd.revents, &mut keys, &mut on);
        c.tick(std::time::Instant::now(), &mut keys, &mut on);
        if let Some((after, code)) = app_close {
            if app_closed.is_none() && c.is_open() && delivered.get() >= after {
                let before = delivered.get();
                app_closed = c.close(code, &mut keys, &mut on).is_ok().then_some(before);
            }
        }
    }
    if !shut().lock().unwrap().contains(&seed) {
        return Err("the client was done before the server ended TCP".into());
    }
    drop(c); // its socket: the server side reads its end
    let mut sent = report
        .recv_timeout(IO_TIMEOUT)
        .map_err(|_| "no report from the script's server side")??;
    // What the client reported: the model's messages (those before its app closed), then
    // its close code.
    let mut want_events = vec!["open".to_string()];
    let shown = app_closed.unwrap_or(e.want.messages.len());
    for (op, m) in e.want.messages.iter().take(shown) {
        let op = if *op == 1 {
            Opcode::Text
        } else {
            Opcode::Binary
        };
        want_events.push(format!("{op:?} {m:02x?}"));
    }
    // (An end of TCP where a Close was due is a failure only while the connection is open.)
    if e.failed || (e.vanish && app_closed.is_none()) {
        want_events.push("error".into());
    }
    let code = match e.want.close {
        Some(code) => code.unwrap_or(1005),
        None => 1006, // e.vanish
    };
    want_events.push(format!("closed {code}"));
    if events != want_events {
        return Err(format!("events {events:?}, want {want_events:?}"));
    }
    if app_closed.is_some() {
        // Its own Close, Pongs only before it.
        let (_, code) = app_close.expect("closed by the app");
        if sent.close != Some(Some(code)) || !e.want.pongs.starts_with(&sent.pongs) {
            return Err(format!(
                "the app closed with {code}: the client sent {}, want its Close and a \
                 prefix of the {} Pongs",
                summary(&sent),
                e.want.pongs.len()
            ));
        }
        return Ok(());
    }
    // A server's FIN without its Close: the client sends no Close of its own (no empty one
    // either, which `check` allows a server behind answers it owed).
    if e.vanish && sent.close.is_some() {
        return Err(format!(
            "the client sent a Close after our FIN: {}",
            summary(&sent)
        ));
    }
    // (The messages were checked in the events: what the client sent holds none.)
    sent.messages = e.want.messages.clone();
    check(sent, &e)
}

fn summary(o: &Outcome) -> String {
    let sizes: Vec<String> = o
        .messages
        .iter()
        .map(|(op, m)| format!("{op}:{}", m.len()))
        .collect();
    format!(
        "messages [{}], {} pongs, close {:?}",
        sizes.join(" "),
        o.pongs.len(),
        o.close
    )
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
    wait_all_ended(&app.hub());
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
    wait_all_ended(&app.hub());
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
    wait_all_ended(&app.hub());
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
