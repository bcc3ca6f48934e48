//! Frame header parsing and encoding (RFC 6455 section 5.2).
//!
//! Owns: the wire layout of one frame header (FIN, RSV, opcode, MASK, the 7/16/64-bit payload
//! length, the masking key) and the length-encoding MUSTs. It must never look at payloads,
//! allocate, or apply the message-level rules (which opcodes are allowed when, masking by role,
//! size limits): those belong to [`crate::ws::codec`].

use super::close::PROTOCOL_ERROR;
use super::codec::ProtocolError;
use super::Opcode;

/// The longest header: 2 fixed bytes + 8 length bytes + 4 masking-key bytes.
pub const MAX_HEADER_LEN: usize = 14;

/// One parsed frame header. `opcode` is raw (reserved values included) so that the codec decides
/// what is a violation; `rsv` holds RSV1..RSV3 as bits 2..0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

const NON_MINIMAL_LEN: ProtocolError = ProtocolError {
    code: PROTOCOL_ERROR,
    reason: "payload length not minimally encoded",
    peer_code: None,
};

impl FrameHeader {
    /// Parses the header at the start of `buf`.
    ///
    /// `Ok(None)` when more bytes are needed (nothing is consumed; call again with more bytes),
    /// `Ok(Some((header, header_len)))` otherwise. A length error is reported as soon as the
    /// length bytes are present, even if the masking key is not.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let (b0, b1) = match buf {
            [b0, b1, ..] => (*b0, *b1),
            _ => return Ok(None),
        };
        let masked = b1 & 0x80 != 0;
        let (payload_len, len_end) = match b1 & 0x7F {
            126 => {
                let Some(bytes) = buf.get(2..4) else {
                    return Ok(None);
                };
                let len = u16::from_be_bytes([bytes[0], bytes[1]]) as u64;
                // 5.2: "the minimal number of bytes MUST be used to encode the length".
                if len < 126 {
                    return Err(NON_MINIMAL_LEN);
                }
                (len, 4)
            }
            127 => {
                let Some(bytes) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut be = [0u8; 8];
                be.copy_from_slice(bytes);
                let len = u64::from_be_bytes(be);
                // 5.2: "the most significant bit MUST be 0".
                if len >> 63 != 0 {
                    return Err(ProtocolError {
                        code: PROTOCOL_ERROR,
                        reason: "64-bit payload length has its most significant bit set",
                        peer_code: None,
                    });
                }
                if len <= u16::MAX as u64 {
                    return Err(NON_MINIMAL_LEN);
                }
                (len, 10)
            }
            short => (short as u64, 2),
        };
        let (mask, header_len) = if masked {
            let Some(bytes) = buf.get(len_end..len_end + 4) else {
                return Ok(None);
            };
            let mut key = [0u8; 4];
            key.copy_from_slice(bytes);
            (Some(key), len_end + 4)
        } else {
            (None, len_end)
        };
        Ok(Some((
            FrameHeader {
                fin: b0 & 0x80 != 0,
                rsv: (b0 >> 4) & 0x7,
                opcode: b0 & 0x0F,
                mask,
                payload_len,
            },
            header_len,
        )))
    }

    /// The opcode, or `None` when it is one of the reserved values.
    pub fn opcode(&self) -> Option<Opcode> {
        Opcode::from_u8(self.opcode)
    }
}

/// The number of bytes [`encode_header`] writes for a payload of `len` bytes.
pub fn header_len(len: usize, masked: bool) -> usize {
    let ext = match len {
        0..=125 => 0,
        126..=0xFFFF => 2,
        _ => 8,
    };
    2 + ext + if masked { 4 } else { 0 }
}

/// Appends a frame header with the minimal length encoding. Servers pass `mask: None`
/// (5.1: "A server MUST NOT mask any frames"); clients pass a fresh key per frame.
pub fn encode_header(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: Opcode,
    len: usize,
    mask: Option<[u8; 4]>,
) {
    let b0 = if fin { 0x80 } else { 0 } | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(b0);
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(buf: &[u8]) -> (FrameHeader, usize) {
        FrameHeader::parse(buf).unwrap().expect("complete header")
    }

    fn encoded(fin: bool, opcode: Opcode, len: usize, mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_header(&mut out, fin, opcode, len, mask);
        assert_eq!(out.len(), header_len(len, mask.is_some()));
        out
    }

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    // RFC 6455 section 5.7 examples, header part.

    #[test]
    fn rfc_5_7_single_frame_unmasked_hello() {
        let wire = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, n) = parse_ok(&wire);
        assert_eq!(n, 2);
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                rsv: 0,
                opcode: 1,
                mask: None,
                payload_len: 5
            }
        );
        assert_eq!(encoded(true, Opcode::Text, 5, None), wire[..2]);
    }

    #[test]
    fn rfc_5_7_single_frame_masked_hello() {
        let wire = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = parse_ok(&wire);
        assert_eq!(n, 6);
        assert_eq!(h.mask, Some(KEY));
        assert_eq!(h.payload_len, 5);
        assert!(h.fin);
        assert_eq!(h.opcode(), Some(Opcode::Text));
        assert_eq!(encoded(true, Opcode::Text, 5, Some(KEY)), wire[..6]);
    }

    #[test]
    fn rfc_5_7_fragmented_unmasked_hel_lo() {
        let first = [0x01, 0x03, 0x48, 0x65, 0x6c];
        let second = [0x80, 0x02, 0x6c, 0x6f];
        let (h1, _) = parse_ok(&first);
        assert!(!h1.fin);
        assert_eq!(h1.opcode(), Some(Opcode::Text));
        assert_eq!(h1.payload_len, 3);
        let (h2, _) = parse_ok(&second);
        assert!(h2.fin);
        assert_eq!(h2.opcode(), Some(Opcode::Continuation));
        assert_eq!(h2.payload_len, 2);
        assert_eq!(encoded(false, Opcode::Text, 3, None), first[..2]);
        assert_eq!(encoded(true, Opcode::Continuation, 2, None), second[..2]);
    }

    #[test]
    fn rfc_5_7_unmasked_ping_and_masked_pong() {
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, _) = parse_ok(&ping);
        assert_eq!(h.opcode(), Some(Opcode::Ping));
        assert_eq!(h.mask, None);
        let (h, _) = parse_ok(&pong);
        assert_eq!(h.opcode(), Some(Opcode::Pong));
        assert_eq!(h.mask, Some(KEY));
        assert_eq!(encoded(true, Opcode::Ping, 5, None), ping[..2]);
        assert_eq!(encoded(true, Opcode::Pong, 5, Some(KEY)), pong[..6]);
    }

    #[test]
    fn rfc_5_7_256_byte_binary_uses_16_bit_length() {
        let wire = [0x82, 0x7E, 0x01, 0x00];
        let (h, n) = parse_ok(&wire);
        assert_eq!((h.payload_len, n), (256, 4));
        assert_eq!(h.opcode(), Some(Opcode::Binary));
        assert_eq!(encoded(true, Opcode::Binary, 256, None), wire);
    }

    #[test]
    fn rfc_5_7_64k_binary_uses_64_bit_length() {
        let wire = [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00];
        let (h, n) = parse_ok(&wire);
        assert_eq!((h.payload_len, n), (65536, 10));
        assert_eq!(encoded(true, Opcode::Binary, 65536, None), wire);
    }

    #[test]
    fn incomplete_header_needs_more_bytes() {
        let wire = [0x82, 0xFF, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00, 1, 2, 3, 4];
        for cut in 0..wire.len() {
            assert_eq!(FrameHeader::parse(&wire[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_ok(&wire).1, 14);
    }

    #[test]
    fn length_must_be_minimally_encoded_16() {
        // "the length of a 124-byte-long string can't be encoded as the sequence 126, 0, 124"
        let err = FrameHeader::parse(&[0x82, 0x7E, 0x00, 124]).unwrap_err();
        assert_eq!(err.code, PROTOCOL_ERROR);
        assert!(FrameHeader::parse(&[0x82, 0x7E, 0x00, 126])
            .unwrap()
            .is_some());
    }

    #[test]
    fn length_must_be_minimally_encoded_64() {
        let err = FrameHeader::parse(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]).unwrap_err();
        assert_eq!(err.code, PROTOCOL_ERROR);
        let err = FrameHeader::parse(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 5]).unwrap_err();
        assert_eq!(err.code, PROTOCOL_ERROR);
    }

    #[test]
    fn length_64_bit_msb_must_be_0() {
        let err = FrameHeader::parse(&[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(err.code, PROTOCOL_ERROR);
        let (h, _) = parse_ok(&[0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(h.payload_len, i64::MAX as u64);
    }

    #[test]
    fn length_error_is_reported_before_the_masking_key_arrives() {
        assert!(FrameHeader::parse(&[0x82, 0xFE, 0x00, 0x01]).is_err());
    }

    #[test]
    fn rsv_bits_and_raw_opcode_are_reported() {
        let (h, _) = parse_ok(&[0x7B, 0x00]);
        assert!(!h.fin);
        assert_eq!(h.rsv, 0b111);
        assert_eq!(h.opcode, 0xB);
        assert_eq!(h.opcode(), None);
    }

    #[test]
    fn encode_parse_round_trip_at_length_boundaries() {
        for len in [0usize, 1, 125, 126, 127, 0xFFFF, 0x1_0000, 1 << 40] {
            for mask in [None, Some(KEY)] {
                let wire = encoded(false, Opcode::Binary, len, mask);
                let (h, n) = parse_ok(&wire);
                assert_eq!(n, wire.len());
                assert_eq!(h.payload_len, len as u64);
                assert_eq!(h.mask, mask);
                assert!(!h.fin);
            }
        }
    }
}
