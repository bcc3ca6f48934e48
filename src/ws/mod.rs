//! RFC 6455, sans-IO: bytes in, events and bytes-to-write out. No sockets here.
//!
//! - [`handshake`]: the HTTP/1.1 upgrade request parser and the responses (101 and errors).
//! - [`frame`]: frame header parsing and encoding.
//! - [`codec`]: message assembly, control frames, close rules, outbound framing.
//! - [`close`]: close codes and their validity (section 7.4).

pub mod close;
pub mod codec;
pub mod frame;
pub mod handshake;

/// Frame opcodes (RFC 6455 section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    /// `None` for the reserved opcodes 0x3-0x7 and 0xB-0xF.
    pub fn from_u8(v: u8) -> Option<Opcode> {
        Some(match v {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}
