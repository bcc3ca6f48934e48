//! The model: RFC 6455's rules for an endpoint receiving a script's frames, and the
//! comparison of what came back with what they say.
//!
//! Where the RFC leaves the receiver a choice, the model takes the one this server documents:
//! every Ping is answered (5.5.3 allows answering only the latest), text fails as soon as its
//! bytes cannot become UTF-8 (8.1 allows waiting for the message's end; Autobahn's fail-fast
//! cases expect this), a length that is not minimally encoded is refused with 1002 (5.2's
//! MUST binds the sender; refusing is allowed), and so is a Close with a code nobody has
//! assigned (0-999, 1004-1006, 1015-2999, 5000 and up: 7.4.2 reserves them; 7.4.1 and the IANA
//! registry leave 1000-1003, 1007-1014 and 3000-4999 to be sent).

use super::*;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Echoed messages: (opcode, payload).
    pub messages: Vec<(u8, Vec<u8>)>,
    pub pongs: Vec<Vec<u8>>,
    /// The server's Close: `Some(code)`, or `None` for a Close without a body.
    pub close: Option<Option<u16>>,
}

/// Whether `b` can still become UTF-8 (valid so far, maybe cut inside its last character).
pub fn utf8_prefix(b: &[u8]) -> bool {
    match std::str::from_utf8(b) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

pub fn close_code_valid(code: u16) -> bool {
    // 7.4.1 and the IANA registry: 1000-1003 and 1007-1014 are defined for use, 1004-1006 and
    // 1015 must not be sent, 3000-4999 are for libraries and applications.
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// What the server must answer to a script.
#[derive(Debug)]
pub struct Expected {
    /// The answer. Its Close is `None` while the script leaves the connection open: the caller
    /// then appends a Close 1000.
    pub want: Outcome,
    /// How many frames the server reads (the rest come after the end).
    pub read: usize,
    /// The receiver fails the connection (its Close is not the echo of the peer's).
    pub failed: bool,
    /// The peer ends TCP without a Close, after the script: a server answers what it
    /// received and ends TCP too, with no Close, or an empty one behind answers a service
    /// owed when the FIN came; the cws client reports an error and 1006 and sends no Close
    /// (RFC 6455 7.1.5: the closure was abnormal, 1006, a code no frame may carry).
    pub vanish: bool,
    /// LAppS: the service decides on the 1003 on its own thread while the IO worker reads on,
    /// so the frames after the tenth error may still be heard first, Pings answered and a
    /// Close of theirs (the peer's, or a violation's) sent instead of the 1003 (RFC 6455 lets
    /// either side close first). The answer when all of them are heard: no more error answers.
    pub or_heard_on: Option<Outcome>,
}

pub fn expect(frames: &[Frame], answers: Answers) -> Expected {
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
pub fn hear(
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

pub fn check(got: Outcome, e: &Expected) -> Result<(), String> {
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

pub fn summary(o: &Outcome) -> String {
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
