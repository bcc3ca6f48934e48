//! Reading what the receiver under test sends: its frames, checked as RFC 6455 has them,
//! gathered into the outcome the model is compared with.

use super::*;

/// One frame of the peer under test, a client's (`from_client`: masked, unmasked here) or a
/// server's: (fin, opcode, payload), or None at the end of the stream between frames (over
/// TLS: after close_notify); the error says what was wrong.
pub fn next_frame(
    s: &mut impl Read,
    from_client: bool,
) -> Result<Option<(bool, u8, Vec<u8>)>, String> {
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
pub fn lapps_error_code(m: &[u8]) -> Option<i64> {
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
pub fn close_body(payload: &[u8]) -> Result<Option<u16>, String> {
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
pub fn read_answers(mut s: impl Read, answers: Answers) -> Result<Outcome, String> {
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
