//! The LAppS protocol (SPEC section 4) as `--lapps` needs it: the CBOR request sent, the CBOR
//! response expected back, and the recognition of an out-of-order notification (OON) that may
//! arrive between responses. Encodes only the few shapes it needs, by hand (std only); never
//! decodes general CBOR.

/// Appends a CBOR head: major type and argument, in the shortest form (RFC 8949 4.2.1).
fn head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    match arg {
        0..=23 => out.push(m | arg as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, arg as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(arg as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(arg as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&arg.to_be_bytes());
        }
    }
}

const UINT: u8 = 0;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;

fn text(out: &mut Vec<u8>, s: &str) {
    head(out, TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn one_byte_string_array(out: &mut Vec<u8>, b: &[u8]) {
    head(out, ARRAY, 1);
    head(out, BYTES, b.len() as u64);
    out.extend_from_slice(b);
}

/// `{"lapps": 1, "method": "echo", "params": [h'payload']}`.
pub fn echo_request(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 32);
    head(&mut out, MAP, 3);
    text(&mut out, "lapps");
    head(&mut out, UINT, 1);
    text(&mut out, "method");
    text(&mut out, "echo");
    text(&mut out, "params");
    one_byte_string_array(&mut out, payload);
    out
}

/// `{"status": 1, "cid": 0, "result": [h'payload']}`, members in the order the server writes
/// them (its encoding is deterministic: checked against the real server by `run.sh`'s runs,
/// where any other byte would be an echo error).
pub fn echo_response(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 32);
    head(&mut out, MAP, 3);
    text(&mut out, "status");
    head(&mut out, UINT, 1);
    text(&mut out, "cid");
    head(&mut out, UINT, 0);
    text(&mut out, "result");
    one_byte_string_array(&mut out, payload);
    out
}

/// Whether `msg` is an OON as the server encodes one: a map whose first member is `"cid"` with
/// an unsigned value other than 0 (`{"cid": N, "message": [...]}`). Responses start with
/// `"status"`, so a response can never pass for an OON.
pub fn is_oon(msg: &[u8]) -> bool {
    let Some((&m, rest)) = msg.split_first() else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(b"\x63cid") else {
        return false;
    };
    if m >> 5 != MAP {
        return false;
    }
    match rest.first() {
        // Major type 0, argument inline (1..=23) or in the following 1/2/4/8 bytes.
        Some(&b) if b >> 5 == UINT => {
            let n = match b & 0x1f {
                a @ 0..=23 => a as u64,
                24..=27 => {
                    let len = 1usize << ((b & 0x1f) - 24);
                    let Some(bytes) = rest.get(1..1 + len) else {
                        return false;
                    };
                    bytes.iter().fold(0u64, |acc, &x| acc << 8 | x as u64)
                }
                _ => return false,
            };
            n != 0
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_bytes() {
        // Hand-checked against RFC 8949: a3 = map(3), 65 'lapps', 01, 66 'method', 64 'echo',
        // 66 'params', 81 = array(1), 42 = bytes(2).
        let r = echo_request(b"\x00\xff");
        assert_eq!(
            r,
            b"\xa3\x65lapps\x01\x66method\x64echo\x66params\x81\x42\x00\xff".to_vec()
        );
        let e = echo_response(&[7; 300]);
        assert_eq!(&e[..22], b"\xa3\x66status\x01\x63cid\x00\x66result\x81");
        assert_eq!(&e[22..25], b"\x59\x01\x2c"); // bytes(300), two-byte length
        assert_eq!(e.len(), 25 + 300);
    }

    #[test]
    fn oons_are_told_from_responses() {
        assert!(is_oon(b"\xa2\x63cid\x19\x03\xe9\x67message\x81\x01")); // cid 1001
        assert!(is_oon(b"\xa2\x63cid\x05\x67message\x80"));
        assert!(!is_oon(b"\xa2\x63cid\x00\x67message\x80")); // cid 0 is the CCH
        assert!(!is_oon(&echo_response(b"x")));
        assert!(!is_oon(b"\xa2\x63cid\x19\x03")); // truncated argument
        assert!(!is_oon(b""));
    }
}
