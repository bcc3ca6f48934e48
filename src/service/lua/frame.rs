//! Server-side framing of the messages Lua sends (unmasked, RFC 6455 section 5.2).
//!
//! The one place the Lua host turns a payload into wire bytes; it never parses input.
// TODO(merge): use ws::codec::encode_message once the protocol core lands.

/// Frames `payload` as one message of `opcode` (1 text, 2 binary), split into frames of at
/// most `fragment` payload bytes when set (continuation frames carry opcode 0).
pub(crate) fn frame(opcode: u8, payload: &[u8], fragment: Option<usize>) -> Vec<u8> {
    let size = match fragment {
        Some(n) if n > 0 && payload.len() > n => n,
        _ => {
            return frame_one(
                opcode,
                true,
                payload,
                Vec::with_capacity(payload.len() + 10),
            )
        }
    };
    let frames = payload.len().div_ceil(size);
    let mut out = Vec::with_capacity(payload.len() + frames * 10);
    for (i, part) in payload.chunks(size).enumerate() {
        let op = if i == 0 { opcode } else { 0 };
        out = frame_one(op, i + 1 == frames, part, out);
    }
    out
}

fn frame_one(opcode: u8, fin: bool, payload: &[u8], mut out: Vec<u8>) -> Vec<u8> {
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0F));
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
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
