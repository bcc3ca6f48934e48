//! Server-side framing of the messages Lua sends (unmasked, RFC 6455 section 5.2).
//!
//! The one place the Lua host turns a payload into wire bytes; it never parses input.

use super::host::HostCtx;
use crate::net::handle::ConnId;
use crate::net::hub::{Chunk, Command};
use crate::ws::codec::{encode_message, Role};
use crate::ws::Opcode;

/// Frames `payload` as one message of `opcode` (1 text, 2 binary), split into frames of at
/// most `fragment` payload bytes when set (continuation frames carry opcode 0).
pub(crate) fn frame(opcode: u8, payload: &[u8], fragment: Option<usize>) -> Vec<u8> {
    let opcode = if opcode == 1 {
        Opcode::Text
    } else {
        Opcode::Binary
    };
    let mut out = Vec::with_capacity(payload.len() + 14);
    encode_message(&mut out, Role::Server, opcode, payload, fragment, [0; 4]);
    out
}

/// Checks a message a Lua app sends with an explicit opcode (1 text, 2 binary) against what
/// RFC 6455 requires of it; the `nil, "reason"` text when it cannot be sent.
pub(crate) fn checked_opcode(opcode: i64, payload: &[u8]) -> Result<Opcode, &'static str> {
    match opcode {
        1 if !crate::simd::validate_utf8(payload) => Err("invalid UTF-8"),
        1 => Ok(Opcode::Text),
        2 => Ok(Opcode::Binary),
        _ => Err("bad opcode"),
    }
}

/// [`checked_opcode`], then the framed message.
pub(crate) fn frame_checked(
    opcode: i64,
    payload: &[u8],
    fragment: Option<usize>,
) -> Result<Vec<u8>, &'static str> {
    checked_opcode(opcode, payload).map(|op| frame(op as u8, payload, fragment))
}

/// Messages up to this size are framed into the worker's batch buffer (`HostCtx::send_small`);
/// larger ones get a buffer of their own that the worker queues without copying.
pub(crate) const SMALL_MESSAGE: usize = 4096;

/// Queues a message for `conn` (framed, auto-fragmented as configured).
pub(crate) fn send_message(host: &HostCtx, conn: ConnId, opcode: Opcode, payload: &[u8]) {
    if payload.len() <= SMALL_MESSAGE {
        host.send_small(conn, |b| {
            encode_message(b, Role::Server, opcode, payload, host.auto_fragment, [0; 4])
        });
    } else {
        let f = frame(opcode as u8, payload, host.auto_fragment);
        host.push(
            conn,
            Command::Send {
                conn,
                frame: Chunk::Owned(f),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::frame;

    #[test]
    fn lengths_use_the_shortest_form() {
        assert_eq!(frame(1, b"hi", None), [0x81, 2, b'h', b'i']);
        let f = frame(2, &[7; 126], None);
        assert_eq!(&f[..4], &[0x82, 126, 0, 126]);
        let f = frame(2, &[7; 65536], None);
        assert_eq!(&f[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(f.len(), 65546);
    }

    #[test]
    fn fragments_carry_continuations_and_one_fin() {
        let f = frame(1, b"abcde", Some(2));
        assert_eq!(f, [0x01, 2, b'a', b'b', 0x00, 2, b'c', b'd', 0x80, 1, b'e']);
        assert_eq!(frame(1, b"ab", Some(2)), [0x81, 2, b'a', b'b']);
        assert_eq!(frame(1, b"", Some(2)), [0x81, 0]);
    }
}
