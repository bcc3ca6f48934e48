//! Message assembly, control frames, close rules and outbound framing (RFC 6455 sections 5-7).
//!
//! Owns: the per-connection [`Decoder`] (bytes in, [`Event`]s out, each protocol violation
//! mapped to the close code to send) and the encoders for outbound messages and control frames.
//! It must never do I/O, write replies itself (the caller answers pings and closes, as
//! fastwebsockets hands over what the endpoint is "obligated to send"), or allocate from a
//! declared length: a header alone never makes it reserve memory.
//!
//! Zero-copy: a complete, unfragmented data frame is unmasked in place and handed out as a
//! slice of the caller's input. Only a fragmented message, or a data frame whose payload is only
//! partly present, is copied into the decoder's message buffer, and those bytes are consumed at
//! once, so the caller never keeps more than a partial header or a partial control frame
//! (<= 2 + 4 + 125 bytes). The buffer is released when its message completes, so an idle
//! connection holds no heap.

use std::fmt;

use super::close::{
    is_valid_received_code, INVALID_PAYLOAD, PROTOCOL_ERROR, TOO_BIG, TRY_AGAIN_LATER,
};
use super::frame::{encode_header, FrameHeader};
use super::Opcode;
use crate::simd::{unmask, validate_utf8, Utf8Stream};

/// Which end of the connection this codec plays; it decides the masking rules (section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// A protocol violation by the peer: `code` is the close code to send (section 7.4.1) and
/// `reason` a short static explanation for logs (and, optionally, the close reason);
/// `peer_code` is the close code the peer sent, when that was the fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: u16,
    pub reason: &'static str,
    pub peer_code: Option<u16>,
}

impl ProtocolError {
    /// The reason for a log line, with the peer's close code where that was the fault
    /// ("invalid close code 999").
    pub fn described(&self) -> String {
        match self.peer_code {
            Some(c) => format!("{} {c}", self.reason),
            None => self.reason.to_string(),
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "websocket protocol error {}: {}",
            self.code,
            self.described()
        )
    }
}

impl std::error::Error for ProtocolError {}

const fn protocol(reason: &'static str) -> ProtocolError {
    ProtocolError {
        code: PROTOCOL_ERROR,
        reason,
        peer_code: None,
    }
}

const INVALID_UTF8_TEXT: ProtocolError = ProtocolError {
    code: INVALID_PAYLOAD,
    reason: "text message is not valid UTF-8",
    peer_code: None,
};

/// Not the peer's fault: the caller's allowance for partly received messages is used up.
pub const OVER_ALLOWANCE: ProtocolError = ProtocolError {
    code: TRY_AGAIN_LATER,
    reason: "no room left for messages being received",
    peer_code: None,
};

/// The message (its frames so far plus this one's declared length) is larger than the
/// decoder's `max_message_size`.
pub const TOO_LARGE: ProtocolError = ProtocolError {
    code: TOO_BIG,
    reason: "message larger than max_message_size",
    peer_code: None,
};

/// What the decoder found. Slices borrow the caller's input (zero-copy) or the decoder's
/// message buffer; they are valid only during the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text message, validated as UTF-8.
    Text(&'a [u8]),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// The caller must answer with a Pong carrying the same payload (5.5.2).
    Ping(&'a [u8]),
    /// Unsolicited or not, a Pong needs no answer (5.5.3).
    Pong(&'a [u8]),
    /// The peer closed: `code` is valid per 7.4, `reason` is UTF-8. The caller answers with a
    /// Close (echoing the code) if it has not sent one; the decoder accepts no more input.
    Close { code: Option<u16>, reason: &'a [u8] },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// A Close frame was received: further input is discarded (5.5.1: after sending a Close
    /// the peer "MUST NOT send any more data frames").
    Closed,
    /// A violation was reported; the connection must be failed, not decoded further.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Assembling {
    None,
    Text,
    Binary,
}

/// The first capacity of a message buffer (as `Vec` would start for a first chunk this small).
const MIN_MESSAGE_BUFFER: usize = 8;

/// The per-connection decoder. Small on purpose (<= 64 bytes): it lives in every connection.
#[derive(Debug)]
pub struct Decoder {
    /// The message being assembled; `Vec::new()` (no heap) whenever none is.
    message: Vec<u8>,
    max_message_size: usize,
    /// Payload bytes of the current data frame still to arrive (meaningful when `frame_open`).
    frame_remaining: u64,
    frame_mask: Option<[u8; 4]>,
    utf8: Utf8Stream,
    role: Role,
    state: State,
    assembling: Assembling,
    /// A data frame's header was consumed and its payload is being streamed into `message`.
    frame_open: bool,
    frame_fin: bool,
    /// Position in the masking key of the next payload byte of the current frame (0..4).
    frame_mask_offset: u8,
    /// Frame headers decoded so far, wrapping (see [`Decoder::frames_decoded`]).
    frames: u32,
    /// The size the message being assembled had reached, with the bytes that did not fit,
    /// when it failed with [`OVER_ALLOWANCE`] (see [`Decoder::refused_size`]).
    /// u32 (saturating) keeps the decoder within 64 bytes.
    refused_size: u32,
}

impl Decoder {
    /// A decoder for one connection. `max_message_size` bounds a whole (possibly fragmented)
    /// data message; anything larger fails with 1009.
    pub fn new(role: Role, max_message_size: usize) -> Decoder {
        Decoder {
            message: Vec::new(),
            max_message_size,
            frame_remaining: 0,
            frame_mask: None,
            utf8: Utf8Stream::new(),
            role,
            state: State::Open,
            assembling: Assembling::None,
            frame_open: false,
            frame_fin: false,
            frame_mask_offset: 0,
            frames: 0,
            refused_size: 0,
        }
    }

    /// Frame headers decoded so far, wrapping. What input costs to decode follows its frames
    /// as much as its bytes (64 KiB of empty frames are 10,922 of them): the worker bounds
    /// the frames it decodes per connection per turn with it.
    pub fn frames_decoded(&self) -> u32 {
        self.frames
    }

    /// True once a Close frame was received.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Bytes of a partly received message held by the decoder.
    pub fn buffered(&self) -> usize {
        self.message.len()
    }

    /// True while a data message has begun and not ended (a fragmented message, or one
    /// frame whose payload has only partly arrived).
    pub fn in_message(&self) -> bool {
        self.assembling != Assembling::None
    }

    /// The bound of a whole message it was made with.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// After [`OVER_ALLOWANCE`]: the size the refused message had reached, counting the bytes
    /// that found no room (its whole size when its last frame had begun). The error lines say
    /// it beside the allowance.
    pub fn refused_size(&self) -> usize {
        self.refused_size as usize
    }

    /// Heap the decoder holds (its message buffer's capacity), for memory accounting.
    pub fn held(&self) -> usize {
        self.message.capacity()
    }

    /// Decodes as much of `input` as possible, unmasking it in place and calling `on_event` for
    /// each event. Returns the number of bytes consumed; the caller keeps the rest and calls
    /// again with more bytes appended. Returns right after a Close event; later calls consume
    /// everything and report nothing. An error carries the close code to send; the decoder
    /// then refuses further input.
    pub fn decode(
        &mut self,
        input: &mut [u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, ProtocolError> {
        self.decode_within(input, usize::MAX, on_event)
    }

    /// [`Decoder::decode`], with the message buffer never grown past `allowance` bytes of
    /// capacity: a message being assembled that needs more fails with [`OVER_ALLOWANCE`]
    /// (1013) before the bytes are copied. Complete unfragmented frames take no buffer, so
    /// they pass whatever the allowance. The caller's share of a budget shared by many
    /// decoders (the worker's process-wide cap); the message size limit still applies first.
    pub fn decode_within(
        &mut self,
        input: &mut [u8],
        allowance: usize,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, ProtocolError> {
        match self.state {
            State::Open => {}
            State::Closed => return Ok(input.len()),
            State::Failed => return Err(protocol("input after a protocol error")),
        }
        let result = self.decode_open(input, allowance, on_event);
        if result.is_err() {
            self.state = State::Failed;
            self.message = Vec::new();
        }
        result
    }

    fn decode_open(
        &mut self,
        input: &mut [u8],
        allowance: usize,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, ProtocolError> {
        let mut pos = 0;
        loop {
            if self.frame_open {
                pos += self.stream_payload(&mut input[pos..], allowance)?;
                if self.frame_remaining > 0 {
                    return Ok(pos); // every available byte was taken; wait for more
                }
                self.frame_open = false;
                if self.frame_fin {
                    self.complete_message(on_event)?;
                }
                continue;
            }

            let Some((header, header_len)) = FrameHeader::parse(&input[pos..])? else {
                return Ok(pos);
            };
            let opcode = self.check_header(&header)?;
            self.frames = self.frames.wrapping_add(1);
            let payload_start = pos + header_len;
            // Both lengths were bounded by check_header: <= 125 for control frames,
            // <= max_message_size (a usize) for data frames.
            let len = header.payload_len as usize;

            if opcode.is_control() {
                let Some(payload) = input.get_mut(payload_start..payload_start + len) else {
                    return Ok(pos); // a partial control frame stays with the caller
                };
                if let Some(key) = header.mask {
                    unmask(payload, key, 0);
                }
                pos = payload_start + len;
                match opcode {
                    Opcode::Ping => on_event(Event::Ping(payload)),
                    Opcode::Pong => on_event(Event::Pong(payload)),
                    _ => {
                        let (code, reason) = parse_close_payload(payload)?;
                        self.state = State::Closed;
                        // A message it interrupted is over (nothing more is read).
                        self.message = Vec::new();
                        self.assembling = Assembling::None;
                        self.utf8.reset();
                        on_event(Event::Close { code, reason });
                        return Ok(pos);
                    }
                }
                continue;
            }

            let whole_frame_present = input.len() - payload_start >= len;
            if self.assembling == Assembling::None && header.fin && whole_frame_present {
                // The common case: one complete frame, one message. No copy.
                let payload = &mut input[payload_start..payload_start + len];
                if let Some(key) = header.mask {
                    unmask(payload, key, 0);
                }
                pos = payload_start + len;
                if opcode == Opcode::Text {
                    if !validate_utf8(payload) {
                        return Err(INVALID_UTF8_TEXT);
                    }
                    on_event(Event::Text(payload));
                } else {
                    on_event(Event::Binary(payload));
                }
                continue;
            }

            if self.assembling == Assembling::None {
                self.assembling = if opcode == Opcode::Text {
                    Assembling::Text
                } else {
                    Assembling::Binary
                };
                self.utf8.reset();
            }
            self.frame_open = true;
            self.frame_remaining = header.payload_len;
            self.frame_mask = header.mask;
            self.frame_mask_offset = 0;
            self.frame_fin = header.fin;
            pos = payload_start;
        }
    }

    /// Applies the frame-level MUSTs to a parsed header; returns its opcode when acceptable.
    fn check_header(&self, h: &FrameHeader) -> Result<Opcode, ProtocolError> {
        // 5.2: RSV1-3 "MUST be 0 unless an extension is negotiated"; we negotiate none.
        if h.rsv != 0 {
            return Err(protocol("reserved bits set without a negotiated extension"));
        }
        // 5.2: "If an unknown opcode is received, the receiving endpoint MUST _Fail the
        // WebSocket Connection_."
        let Some(opcode) = h.opcode() else {
            return Err(protocol("reserved opcode"));
        };
        match (self.role, h.mask) {
            // 5.1: "The server MUST close the connection upon receiving a frame that is not
            // masked."
            (Role::Server, None) => return Err(protocol("client frame is not masked")),
            // 5.1: "A client MUST close a connection if it detects a masked frame."
            (Role::Client, Some(_)) => return Err(protocol("server frame is masked")),
            _ => {}
        }
        if opcode.is_control() {
            // 5.5: "All control frames MUST have a payload length of 125 bytes or less and
            // MUST NOT be fragmented."
            if h.payload_len > 125 {
                return Err(protocol("control frame payload over 125 bytes"));
            }
            if !h.fin {
                return Err(protocol("fragmented control frame"));
            }
            return Ok(opcode);
        }
        // 5.4: a message is one unfragmented frame, or a first frame with a data opcode, then
        // continuation frames; fragments of different messages MUST NOT be interleaved.
        match (opcode, self.assembling) {
            (Opcode::Continuation, Assembling::None) => {
                return Err(protocol("continuation frame with no message in progress"))
            }
            (Opcode::Text | Opcode::Binary, Assembling::Text | Assembling::Binary) => {
                return Err(protocol("new data frame inside a fragmented message"))
            }
            _ => {}
        }
        // Checked from the header, before any byte of the payload is buffered. No overflow:
        // both terms are below 2^63.
        if self.message.len() as u64 + h.payload_len > self.max_message_size as u64 {
            return Err(TOO_LARGE);
        }
        Ok(opcode)
    }

    /// Moves the available part of the current frame's payload into `message`, unmasked and
    /// (for text) validated as it arrives. Returns the number of bytes taken.
    fn stream_payload(
        &mut self,
        available: &mut [u8],
        allowance: usize,
    ) -> Result<usize, ProtocolError> {
        let n = self.frame_remaining.min(available.len() as u64) as usize;
        let chunk = &mut available[..n];
        if let Some(key) = self.frame_mask {
            unmask(chunk, key, self.frame_mask_offset as usize);
        }
        // 8.1: fail as soon as the bytes seen so far cannot start valid UTF-8 (before asking
        // for room: invalid text is 1007 whatever the memory cap says).
        if self.assembling == Assembling::Text && self.utf8.feed(chunk).is_err() {
            return Err(INVALID_UTF8_TEXT);
        }
        self.make_room(n, allowance)?;
        self.message.extend_from_slice(chunk);
        self.frame_remaining -= n as u64;
        self.frame_mask_offset = ((self.frame_mask_offset as usize + n) & 3) as u8;
        Ok(n)
    }

    /// Makes room for `n` more bytes in `message`: the capacity doubles as `Vec`'s would, but
    /// never past the message size limit or `allowance` (so a message's buffer holds at most
    /// `max_message_size` bytes, not twice that), nor, in the message's last frame, past the
    /// message's own size (a 20 MB message held 32 MB, and the overshoot counted against the
    /// allowance other connections share).
    fn make_room(&mut self, n: usize, allowance: usize) -> Result<(), ProtocolError> {
        let needed = self.message.len() + n; // <= max_message_size: checked by check_header
        if needed <= self.message.capacity() {
            return Ok(());
        }
        if needed > allowance {
            let size = match self.frame_fin {
                true => self.message.len() + self.frame_remaining as usize,
                false => needed,
            };
            self.refused_size = u32::try_from(size).unwrap_or(u32::MAX);
            return Err(OVER_ALLOWANCE);
        }
        // In the last frame the whole size is known: what is held plus what the frame still
        // brings (n is part of it). Within max_message_size, which check_header enforced.
        let whole = match self.frame_fin {
            true => self.message.len() + self.frame_remaining as usize,
            false => usize::MAX,
        };
        let grown = (self.message.capacity() * 2)
            .max(MIN_MESSAGE_BUFFER)
            .min(self.max_message_size)
            .min(allowance)
            .min(whole)
            .max(needed);
        self.message.reserve_exact(grown - self.message.len());
        Ok(())
    }

    fn complete_message(
        &mut self,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ProtocolError> {
        let kind = std::mem::replace(&mut self.assembling, Assembling::None);
        // Taking the buffer leaves Vec::new() behind: no heap held between messages.
        let message = std::mem::take(&mut self.message);
        if kind == Assembling::Text {
            // A message may not end inside a code point.
            if self.utf8.finish().is_err() {
                return Err(INVALID_UTF8_TEXT);
            }
            on_event(Event::Text(&message));
        } else {
            on_event(Event::Binary(&message));
        }
        Ok(())
    }
}

/// Splits and validates a Close frame body (5.5.1, 7.4).
fn parse_close_payload(payload: &[u8]) -> Result<(Option<u16>, &[u8]), ProtocolError> {
    match payload {
        [] => Ok((None, &[])),
        // 5.5.1: "If there is a body, the first two bytes of the body MUST be a 2-byte
        // unsigned integer"; one byte cannot be.
        [_] => Err(protocol("close frame with a 1-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_received_code(code) {
                return Err(ProtocolError {
                    peer_code: Some(code),
                    ..protocol("invalid close code")
                });
            }
            // 5.5.1: the rest of the body is UTF-8 text.
            if !validate_utf8(reason) {
                return Err(ProtocolError {
                    code: INVALID_PAYLOAD,
                    reason: "close reason is not valid UTF-8",
                    peer_code: None,
                });
            }
            Ok((Some(code), reason))
        }
    }
}

/// Appends `payload` as one frame, or as frames of at most `fragment` payload bytes (the first
/// carries `opcode`, then Continuation frames, FIN on the last). `fragment` of `None` or 0
/// means no fragmentation. `Role::Client` masks, starting with `mask_key`; later fragments use
/// keys derived from it, which are distinct but predictable; use [`encode_message_with_keys`]
/// when each frame needs an independently random key (5.3).
pub fn encode_message(
    out: &mut Vec<u8>,
    role: Role,
    opcode: Opcode,
    payload: &[u8],
    fragment: Option<usize>,
    mask_key: [u8; 4],
) {
    let mut key = mask_key;
    encode_message_with_keys(out, role, opcode, payload, fragment, &mut || {
        let current = key;
        key = derive_key(key);
        current
    });
}

/// [`encode_message`] with one key drawn from `next_key` per frame (client role only).
pub fn encode_message_with_keys(
    out: &mut Vec<u8>,
    role: Role,
    opcode: Opcode,
    payload: &[u8],
    fragment: Option<usize>,
    next_key: &mut dyn FnMut() -> [u8; 4],
) {
    debug_assert!(
        !opcode.is_control(),
        "control frames go through encode_control"
    );
    let step = match fragment {
        Some(size) if size > 0 && size < payload.len() => size,
        _ => payload.len().max(1),
    };
    let frames = payload.len().div_ceil(step).max(1);
    out.reserve(payload.len() + frames * super::frame::MAX_HEADER_LEN);
    if payload.is_empty() {
        write_frame(out, role, true, opcode, payload, next_key);
        return;
    }
    let mut chunks = payload.chunks(step).peekable();
    let mut frame_opcode = opcode;
    while let Some(chunk) = chunks.next() {
        let fin = chunks.peek().is_none();
        write_frame(out, role, fin, frame_opcode, chunk, next_key);
        frame_opcode = Opcode::Continuation;
    }
}

/// Appends a Close frame. With `code: None` the body is empty (the reason is ignored, since a
/// body must start with a code). The reason is cut to 123 bytes on a UTF-8 boundary so the
/// frame stays within the 125-byte control limit.
pub fn encode_close(
    out: &mut Vec<u8>,
    role: Role,
    code: Option<u16>,
    reason: &[u8],
    mask_key: [u8; 4],
) {
    let mut body = [0u8; 125];
    let len = match code {
        None => 0,
        Some(code) => {
            body[..2].copy_from_slice(&code.to_be_bytes());
            let reason = truncate_utf8(reason, 123);
            body[2..2 + reason.len()].copy_from_slice(reason);
            2 + reason.len()
        }
    };
    write_frame(out, role, true, Opcode::Close, &body[..len], &mut || {
        mask_key
    });
}

/// Appends a Ping or Pong. The payload is cut to 125 bytes (5.5); a Pong answering a received
/// Ping can always carry the Ping's payload whole, since the decoder enforces the same bound.
pub fn encode_control(
    out: &mut Vec<u8>,
    role: Role,
    opcode: Opcode,
    payload: &[u8],
    mask_key: [u8; 4],
) {
    debug_assert!(opcode.is_control(), "data frames go through encode_message");
    debug_assert!(payload.len() <= 125, "control payload over 125 bytes");
    let payload = &payload[..payload.len().min(125)];
    write_frame(out, role, true, opcode, payload, &mut || mask_key);
}

fn write_frame(
    out: &mut Vec<u8>,
    role: Role,
    fin: bool,
    opcode: Opcode,
    payload: &[u8],
    next_key: &mut dyn FnMut() -> [u8; 4],
) {
    match role {
        Role::Server => {
            encode_header(out, fin, opcode, payload.len(), None);
            out.extend_from_slice(payload);
        }
        Role::Client => {
            let key = next_key();
            encode_header(out, fin, opcode, payload.len(), Some(key));
            let start = out.len();
            out.extend_from_slice(payload);
            unmask(&mut out[start..], key, 0); // masking is the same XOR
        }
    }
}

/// The longest prefix of `bytes` of at most `max` bytes that does not end inside a code point.
fn truncate_utf8(bytes: &[u8], max: usize) -> &[u8] {
    if bytes.len() <= max {
        return bytes;
    }
    let mut end = max;
    // Step back over continuation bytes (10xxxxxx) so the cut lands before a lead byte.
    while end > 0 && bytes[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    &bytes[..end]
}

/// A distinct next key (xorshift32 step); never maps a non-zero key to zero.
fn derive_key(key: [u8; 4]) -> [u8; 4] {
    let mut x = u32::from_le_bytes(key);
    if x == 0 {
        x = 0x9E37_79B9;
    }
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    x.to_le_bytes()
}

#[cfg(test)]
mod tests;
