//! WebSocket framing as the load generator needs it: the client frame is built (and masked) once,
//! and replies are checked byte by byte against the sent payload as they stream in, so the
//! per-message cost is a memcmp and no allocation. Never trusts the server: every malformed,
//! unexpected or differing byte is an error, never a panic.

pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;

/// One masked client frame. One fixed masking key for every frame is valid on the wire (the
/// server cannot tell) and lets the whole burst of frames be prepared once.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&MASK);
    f.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
    f
}

/// An OON longer than this is an error rather than memory the server can make us hold.
const MAX_OTHER: usize = 1 << 20;

/// Incremental checker of the server's echo stream for one connection.
#[derive(Default)]
pub struct EchoChecker {
    hdr: [u8; 14],
    hdr_have: usize,
    payload_left: u64,
    frame_is_data: bool,
    frame_fin: bool,
    in_message: bool,
    msg_off: usize,
    /// `--lapps`: a message that stops matching is collected (rare) and must be an OON.
    tolerate_oon: bool,
    other: Option<Vec<u8>>,
}

impl EchoChecker {
    /// A checker that skips LAppS out-of-order notifications between the expected messages.
    pub fn tolerating_oons() -> EchoChecker {
        EchoChecker {
            tolerate_oon: true,
            ..EchoChecker::default()
        }
    }

    /// Consumes `data` from the server and returns how many complete echoes it finished. Each
    /// echo must be of type `opcode` and equal to `expected` (fragmentation is allowed).
    pub fn feed(&mut self, data: &[u8], opcode: u8, expected: &[u8]) -> Result<usize, String> {
        let mut done = 0;
        let mut rest = data;
        while !rest.is_empty() {
            if self.payload_left == 0 {
                let take = (self.header_len() - self.hdr_have).min(rest.len());
                self.hdr[self.hdr_have..self.hdr_have + take].copy_from_slice(&rest[..take]);
                self.hdr_have += take;
                rest = &rest[take..];
                if self.hdr_have == self.header_len() {
                    self.start_frame(opcode, expected)?;
                    if self.payload_left == 0 {
                        done += self.end_frame(expected.len())?;
                    }
                }
                continue;
            }
            let take = self.payload_left.min(rest.len() as u64) as usize;
            if self.frame_is_data {
                let got = &rest[..take];
                if let Some(other) = &mut self.other {
                    if other.len() + take > MAX_OTHER {
                        return Err("unexpected message longer than 1 MiB".into());
                    }
                    other.extend_from_slice(got);
                } else if expected.get(self.msg_off..self.msg_off + take) != Some(got) {
                    if !self.tolerate_oon {
                        return Err(format!("echo differs near byte {}", self.msg_off));
                    }
                    let mut other = expected.get(..self.msg_off).unwrap_or(&[]).to_vec();
                    other.extend_from_slice(got);
                    self.other = Some(other);
                }
                self.msg_off += take;
            }
            self.payload_left -= take as u64;
            rest = &rest[take..];
            if self.payload_left == 0 {
                done += self.end_frame(expected.len())?;
            }
        }
        Ok(done)
    }

    /// Bytes of the header being collected: 2 until the length byte is known.
    fn header_len(&self) -> usize {
        if self.hdr_have < 2 {
            return 2;
        }
        let mask = if self.hdr[1] & 0x80 != 0 { 4 } else { 0 };
        mask + match self.hdr[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        }
    }

    fn start_frame(&mut self, opcode: u8, expected: &[u8]) -> Result<(), String> {
        let (b0, b1) = (self.hdr[0], self.hdr[1]);
        self.hdr_have = 0;
        if b1 & 0x80 != 0 {
            return Err("server frame is masked".into());
        }
        if b0 & 0x70 != 0 {
            return Err("reserved bits set".into());
        }
        let len = match b1 & 0x7f {
            126 => u16::from_be_bytes([self.hdr[2], self.hdr[3]]) as u64,
            127 => u64::from_be_bytes(self.hdr[2..10].try_into().unwrap_or_default()),
            n => n as u64,
        };
        let op = b0 & 0x0f;
        self.frame_fin = b0 & 0x80 != 0;
        self.frame_is_data = op < 8;
        match op {
            0 if self.in_message => {}
            0 => return Err("continuation without a message".into()),
            o if o == opcode && !self.in_message => {}
            OP_TEXT | OP_BINARY => return Err(format!("unexpected data opcode {op}")),
            OP_CLOSE => return Err("server sent close".into()),
            9 | 10 => {} // ping/pong payloads are skipped; an echo server has no reason to ping
            _ => return Err(format!("bad opcode {op}")),
        }
        if self.frame_is_data
            && self.other.is_none()
            && self.msg_off as u64 + len > expected.len() as u64
        {
            if !self.tolerate_oon {
                return Err("echo longer than the message sent".into());
            }
            self.other = Some(expected.get(..self.msg_off).unwrap_or(&[]).to_vec());
        }
        self.payload_left = len;
        Ok(())
    }

    fn end_frame(&mut self, size: usize) -> Result<usize, String> {
        if !self.frame_is_data {
            return Ok(0);
        }
        if !self.frame_fin {
            self.in_message = true;
            return Ok(0);
        }
        self.in_message = false;
        let len = std::mem::take(&mut self.msg_off);
        if let Some(other) = self.other.take() {
            return if crate::lapps::is_oon(&other) {
                Ok(0)
            } else {
                Err(format!(
                    "a message of {len} bytes that is neither the expected one nor an OON: {}",
                    hex_prefix(&other)
                ))
            };
        }
        if len != size {
            return Err(format!("echo of {len} bytes, sent {size}"));
        }
        Ok(1)
    }
}

fn hex_prefix(b: &[u8]) -> String {
    let mut s: String = b.iter().take(32).map(|x| format!("{x:02x}")).collect();
    if b.len() > 32 {
        s.push_str("..");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = client_frame(b0 & 0x0f, payload);
        f[0] = b0;
        // Strip the mask: the server's frames are unmasked.
        let hl = f.len() - payload.len();
        f[1] &= 0x7f;
        let mut out = f[..hl - 4].to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn counts_echoes_split_at_every_byte() {
        let p: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut stream = server_frame(0x82, &p);
        stream.extend(server_frame(0x82, &p));
        for cut in 0..stream.len() {
            let mut c = EchoChecker::default();
            let a = c.feed(&stream[..cut], OP_BINARY, &p).unwrap();
            let b = c.feed(&stream[cut..], OP_BINARY, &p).unwrap();
            assert_eq!(a + b, 2, "cut at {cut}");
        }
    }

    #[test]
    fn accepts_fragmented_echo_and_rejects_a_changed_byte() {
        let p = b"hello world";
        let mut s = server_frame(0x01, &p[..5]);
        s.extend(server_frame(0x89, b"x")); // a ping between fragments
        s.extend(server_frame(0x80, &p[5..]));
        assert_eq!(EchoChecker::default().feed(&s, OP_TEXT, p), Ok(1));
        let bad = server_frame(0x81, b"hellO world");
        assert!(EchoChecker::default().feed(&bad, OP_TEXT, p).is_err());
        let short = server_frame(0x81, b"hello");
        assert!(EchoChecker::default().feed(&short, OP_TEXT, p).is_err());
        let wrong_type = server_frame(0x82, p);
        assert!(EchoChecker::default()
            .feed(&wrong_type, OP_TEXT, p)
            .is_err());
    }

    #[test]
    fn client_frame_lengths_and_mask() {
        assert_eq!(client_frame(2, &[0; 125]).len(), 2 + 4 + 125);
        assert_eq!(client_frame(2, &[0; 126]).len(), 4 + 4 + 126);
        assert_eq!(client_frame(2, &[0; 70000]).len(), 10 + 4 + 70000);
        let f = client_frame(1, b"a");
        assert_eq!(f[6] ^ f[2], b'a');
    }
}

#[cfg(test)]
mod oon_tests {
    use super::*;

    fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![b0];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn oons_between_responses_are_skipped_at_any_split() {
        let expected = crate::lapps::echo_response(&[0xab; 16]);
        let short_oon =
            b"\xa2\x63cid\x19\x03\xe9\x67message\x81\x1b\x00\x00\x01\x9a\x00\x00\x00\x00";
        let long_oon = [
            &b"\xa2\x63cid\x05\x67message\x81\x59\x01\x00"[..],
            &[1; 256],
        ]
        .concat();
        let mut s = server_frame(0x82, &expected);
        s.extend(server_frame(0x82, short_oon));
        s.extend(server_frame(0x82, &expected));
        s.extend(server_frame(0x82, &long_oon));
        s.extend(server_frame(0x82, &expected));
        for cut in 0..s.len() {
            let mut c = EchoChecker::tolerating_oons();
            let a = c.feed(&s[..cut], OP_BINARY, &expected).unwrap();
            let b = c.feed(&s[cut..], OP_BINARY, &expected).unwrap();
            assert_eq!(a + b, 3, "cut at {cut}");
        }
        // Without tolerance the same stream is an error.
        assert!(EchoChecker::default()
            .feed(&s, OP_BINARY, &expected)
            .is_err());
    }

    #[test]
    fn a_wrong_response_is_still_an_error_when_oons_are_tolerated() {
        let expected = crate::lapps::echo_response(&[0xab; 16]);
        let mut wrong = expected.clone();
        wrong[30] ^= 1;
        let s = server_frame(0x82, &wrong);
        assert!(EchoChecker::tolerating_oons()
            .feed(&s, OP_BINARY, &expected)
            .is_err());
        let error_response = b"\xa3\x66status\x00\x63cid\x00\x65error\xa0";
        let s = server_frame(0x82, error_response);
        assert!(EchoChecker::tolerating_oons()
            .feed(&s, OP_BINARY, &expected)
            .is_err());
    }
}
