//! Tests of the codec: one per MUST of sections 5-7, the section 5.7 examples, zero-copy and
//! memory behaviour, and property tests (round trip through random splits, no panic on noise).

use super::*;
use crate::ws::close::{NORMAL, POLICY};
use proptest::prelude::*;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const MAX: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, Vec<u8>),
}

impl From<Event<'_>> for Owned {
    fn from(e: Event<'_>) -> Owned {
        match e {
            Event::Text(b) => Owned::Text(b.to_vec()),
            Event::Binary(b) => Owned::Binary(b.to_vec()),
            Event::Ping(b) => Owned::Ping(b.to_vec()),
            Event::Pong(b) => Owned::Pong(b.to_vec()),
            Event::Close { code, reason } => Owned::Close(code, reason.to_vec()),
        }
    }
}

/// One decode call over `input`; the events it produced and its result.
fn decode_once(dec: &mut Decoder, input: &[u8]) -> (Vec<Owned>, Result<usize, ProtocolError>) {
    let mut buf = input.to_vec();
    let mut events = Vec::new();
    let r = dec.decode(&mut buf, &mut |e| events.push(Owned::from(e)));
    (events, r)
}

/// Feeds `wire` cut at `cuts` the way the IOWorker does: append to what was left, decode, drop
/// the consumed prefix. Stops at the first error.
fn feed(dec: &mut Decoder, wire: &[u8], cuts: &[usize]) -> (Vec<Owned>, Result<(), ProtocolError>) {
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(wire.len())).collect();
    bounds.push(wire.len());
    bounds.sort_unstable();
    let mut pending = Vec::new();
    let mut events = Vec::new();
    let mut start = 0;
    for end in bounds {
        pending.extend_from_slice(&wire[start..end]);
        start = end;
        match dec.decode(&mut pending, &mut |e| events.push(Owned::from(e))) {
            Ok(n) => {
                assert!(n <= pending.len());
                pending.drain(..n);
            }
            Err(e) => return (events, Err(e)),
        }
    }
    (events, Ok(()))
}

/// A frame as a client sends it, built by hand so that invalid headers can be made.
fn raw_frame(b0: u8, payload: &[u8], key: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![b0];
    let mask_bit = if key.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if let Some(k) = key {
        out.extend_from_slice(&k);
    }
    let body = out.len();
    out.extend_from_slice(payload);
    if let Some(k) = key {
        crate::simd::unmask(&mut out[body..], k, 0);
    }
    out
}

/// A masked client frame.
fn cf(b0: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(b0, payload, Some(KEY))
}

fn server() -> Decoder {
    Decoder::new(Role::Server, MAX)
}

fn expect_err(wire: &[u8], code: u16) -> ProtocolError {
    let mut dec = server();
    let (_, r) = decode_once(&mut dec, wire);
    let err = r.expect_err("must be rejected");
    assert_eq!(err.code, code, "{err}");
    err
}

// ---- Section 5.1: masking by role ----

#[test]
fn server_rejects_unmasked_client_frame() {
    let err = expect_err(&raw_frame(0x81, b"Hello", None), PROTOCOL_ERROR);
    assert_eq!(err.reason, "client frame is not masked");
}

#[test]
fn client_rejects_masked_server_frame() {
    let mut dec = Decoder::new(Role::Client, MAX);
    let (events, r) = decode_once(&mut dec, &cf(0x81, b"Hello"));
    assert_eq!(r.unwrap_err().code, PROTOCOL_ERROR);
    assert!(events.is_empty());
}

#[test]
fn client_accepts_unmasked_server_frame() {
    let mut dec = Decoder::new(Role::Client, MAX);
    let (events, r) = decode_once(&mut dec, &raw_frame(0x82, b"\x00\x01", None));
    assert_eq!(r, Ok(4));
    assert_eq!(events, [Owned::Binary(vec![0, 1])]);
}

// ---- Section 5.2: RSV bits and opcodes ----

#[test]
fn rsv_bits_must_be_zero() {
    for rsv in [0x40, 0x20, 0x10] {
        let err = expect_err(&cf(0x81 | rsv, b"x"), PROTOCOL_ERROR);
        assert_eq!(
            err.reason,
            "reserved bits set without a negotiated extension"
        );
    }
}

#[test]
fn reserved_opcodes_are_rejected() {
    for op in (0x3..=0x7).chain(0xB..=0xF) {
        let err = expect_err(&cf(0x80 | op, b""), PROTOCOL_ERROR);
        assert_eq!(err.reason, "reserved opcode", "opcode {op:#x}");
    }
}

// ---- Section 5.5: control frames ----

#[test]
fn control_frame_payload_over_125_is_rejected() {
    for op in [0x88, 0x89, 0x8A] {
        let err = expect_err(&cf(op, &[b'a'; 126]), PROTOCOL_ERROR);
        assert_eq!(err.reason, "control frame payload over 125 bytes");
    }
    // exactly 125 is fine
    let mut dec = server();
    let (events, _) = decode_once(&mut dec, &cf(0x89, &[7; 125]));
    assert_eq!(events, [Owned::Ping(vec![7; 125])]);
}

#[test]
fn control_frame_must_not_be_fragmented() {
    for op in [0x08, 0x09, 0x0A] {
        let err = expect_err(&cf(op, b""), PROTOCOL_ERROR);
        assert_eq!(err.reason, "fragmented control frame");
    }
}

#[test]
fn ping_event_carries_payload_for_pong_reply() {
    let mut dec = server();
    let (events, r) = decode_once(&mut dec, &cf(0x89, b"are you there"));
    assert_eq!(r, Ok(6 + 13));
    assert_eq!(events, [Owned::Ping(b"are you there".to_vec())]);
    // the caller's answer: a Pong with the same payload
    let mut out = Vec::new();
    encode_control(
        &mut out,
        Role::Server,
        Opcode::Pong,
        b"are you there",
        [0; 4],
    );
    assert_eq!(out, raw_frame(0x8A, b"are you there", None));
}

#[test]
fn unsolicited_pong_is_an_event_only() {
    let mut dec = server();
    let mut wire = cf(0x8A, b"beat");
    wire.extend(cf(0x81, b"after"));
    let (events, r) = decode_once(&mut dec, &wire);
    assert_eq!(r, Ok(wire.len()));
    assert_eq!(
        events,
        [
            Owned::Pong(b"beat".to_vec()),
            Owned::Text(b"after".to_vec())
        ]
    );
    assert!(!dec.is_closed());
}

#[test]
fn control_frames_interleave_inside_fragmented_message() {
    let mut wire = cf(0x01, b"Hel");
    wire.extend(cf(0x89, b"p1"));
    wire.extend(cf(0x00, b"l"));
    wire.extend(cf(0x8A, b"p2"));
    wire.extend(cf(0x80, b"o"));
    let mut dec = server();
    let (events, r) = decode_once(&mut dec, &wire);
    assert_eq!(r, Ok(wire.len()));
    assert_eq!(
        events,
        [
            Owned::Ping(b"p1".to_vec()),
            Owned::Pong(b"p2".to_vec()),
            Owned::Text(b"Hello".to_vec())
        ]
    );
}

// ---- Section 5.4: fragmentation ----

#[test]
fn continuation_without_message_in_progress_is_rejected() {
    let err = expect_err(&cf(0x80, b"orphan"), PROTOCOL_ERROR);
    assert_eq!(err.reason, "continuation frame with no message in progress");
}

#[test]
fn new_data_frame_inside_fragmented_message_is_rejected() {
    for second in [0x81, 0x82, 0x01, 0x02] {
        let mut wire = cf(0x02, b"part");
        wire.extend(cf(second, b"intruder"));
        let err = expect_err(&wire, PROTOCOL_ERROR);
        assert_eq!(err.reason, "new data frame inside a fragmented message");
    }
}

#[test]
fn fragmented_binary_message_is_reassembled() {
    let mut wire = cf(0x02, &[1, 2]);
    wire.extend(cf(0x00, &[]));
    wire.extend(cf(0x00, &[3]));
    wire.extend(cf(0x80, &[4, 5]));
    let mut dec = server();
    let (events, r) = decode_once(&mut dec, &wire);
    assert_eq!(r, Ok(wire.len()));
    assert_eq!(events, [Owned::Binary(vec![1, 2, 3, 4, 5])]);
}

#[test]
fn empty_messages_are_delivered() {
    let mut wire = cf(0x81, b"");
    wire.extend(cf(0x02, b""));
    wire.extend(cf(0x80, b""));
    let mut dec = server();
    let (events, r) = decode_once(&mut dec, &wire);
    assert_eq!(r, Ok(wire.len()));
    assert_eq!(events, [Owned::Text(vec![]), Owned::Binary(vec![])]);
}

// ---- Size limit (1009) ----

#[test]
fn declared_length_over_max_is_too_big_before_any_allocation() {
    let mut dec = Decoder::new(Role::Server, 1000);
    // Only the header of a 2^40-byte frame: the verdict comes from the header alone.
    let mut wire = vec![0x82, 0xFF];
    wire.extend_from_slice(&(1u64 << 40).to_be_bytes());
    wire.extend_from_slice(&KEY);
    let (events, r) = decode_once(&mut dec, &wire);
    assert_eq!(r.unwrap_err().code, TOO_BIG);
    assert!(events.is_empty());
    assert_eq!(dec.message.capacity(), 0);
    // one byte over the limit, one byte under it
    let mut dec = Decoder::new(Role::Server, 1000);
    assert_eq!(
        decode_once(&mut dec, &cf(0x82, &[0; 1001]))
            .1
            .unwrap_err()
            .code,
        TOO_BIG
    );
    let mut dec = Decoder::new(Role::Server, 1000);
    assert_eq!(decode_once(&mut dec, &cf(0x82, &[0; 1000])).1, Ok(1008));
}

#[test]
fn fragmented_running_total_over_max_is_too_big() {
    let mut dec = Decoder::new(Role::Server, 10);
    let mut wire = cf(0x01, b"12345");
    wire.extend(cf(0x00, b"12345"));
    wire.extend(cf(0x80, b"1"));
    let (events, r) = decode_once(&mut dec, &wire);
    let err = r.unwrap_err();
    assert_eq!(err.code, TOO_BIG);
    assert!(events.is_empty());
    assert_eq!(
        dec.message.capacity(),
        0,
        "the partial message is released on failure"
    );
}

// ---- Section 5.5.1 / 7.4: close ----

#[test]
fn close_with_one_byte_payload_is_protocol_error() {
    let err = expect_err(&cf(0x88, &[0x03]), PROTOCOL_ERROR);
    assert_eq!(err.reason, "close frame with a 1-byte payload");
}

#[test]
fn close_with_invalid_code_is_protocol_error() {
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        let err = expect_err(&cf(0x88, &code.to_be_bytes()), PROTOCOL_ERROR);
        assert_eq!(err.reason, "invalid close code", "code {code}");
        assert_eq!(err.described(), format!("invalid close code {code}"));
    }
}

#[test]
fn close_with_invalid_utf8_reason_is_1007() {
    let mut body = NORMAL.to_be_bytes().to_vec();
    body.extend_from_slice(b"bye \xC3\x28");
    expect_err(&cf(0x88, &body), INVALID_PAYLOAD);
}

#[test]
fn close_without_body_has_no_code() {
    let mut dec = server();
    let (events, r) = decode_once(&mut dec, &cf(0x88, b""));
    assert_eq!(r, Ok(6));
    assert_eq!(events, [Owned::Close(None, vec![])]);
    assert!(dec.is_closed());
}

#[test]
fn close_with_valid_code_and_reason() {
    let mut body = POLICY.to_be_bytes().to_vec();
    body.extend_from_slice("déjà vu".as_bytes());
    let mut dec = server();
    let (events, _) = decode_once(&mut dec, &cf(0x88, &body));
    assert_eq!(
        events,
        [Owned::Close(Some(POLICY), "déjà vu".as_bytes().to_vec())]
    );
}

#[test]
fn data_after_close_is_not_processed() {
    let close = cf(0x88, &NORMAL.to_be_bytes());
    let mut wire = close.clone();
    wire.extend(cf(0x81, b"late"));
    wire.extend(raw_frame(0xFF, b"garbage", None));
    let mut dec = server();
    let (events, r) = decode_once(&mut dec, &wire);
    assert_eq!(
        r,
        Ok(close.len()),
        "decode stops right after the Close frame"
    );
    assert_eq!(events, [Owned::Close(Some(NORMAL), vec![])]);
    // the caller calls again with the rest: discarded, no events, no error
    let (events, r) = decode_once(&mut dec, &wire[close.len()..]);
    assert_eq!(r, Ok(wire.len() - close.len()));
    assert!(events.is_empty());
    assert!(dec.is_closed());
}

#[test]
fn close_inside_fragmented_message_releases_the_buffer() {
    let mut wire = cf(0x02, &[1; 100]);
    wire.extend(cf(0x88, b""));
    let mut dec = server();
    let (events, _) = decode_once(&mut dec, &wire);
    assert_eq!(events, [Owned::Close(None, vec![])]);
    assert_eq!(dec.message.capacity(), 0);
    assert!(!dec.in_message(), "the message is over");
}

// ---- Section 8.1: UTF-8 ----

#[test]
fn text_not_utf8_is_1007() {
    expect_err(&cf(0x81, b"ok \xFF"), INVALID_PAYLOAD);
    expect_err(&cf(0x81, b"\xED\xA0\x80"), INVALID_PAYLOAD); // a surrogate
    expect_err(&cf(0x81, b"\xE2\x82"), INVALID_PAYLOAD); // ends mid code point
}

#[test]
fn text_invalid_prefix_fails_at_once() {
    // A 1000-byte frame whose first chunk already holds an invalid byte: the error comes with
    // that chunk, not when the frame completes.
    let mut payload = vec![b'a'; 1000];
    payload[3] = 0xC0;
    let wire = cf(0x81, &payload);
    let mut dec = server();
    let (events, r) = decode_once(&mut dec, &wire[..20]);
    assert_eq!(r.unwrap_err().code, INVALID_PAYLOAD);
    assert!(events.is_empty());
    // same across fragments: the second fragment is never needed
    let mut dec = server();
    let (_, r) = decode_once(&mut dec, &cf(0x01, b"\xFF"));
    assert_eq!(r.unwrap_err().code, INVALID_PAYLOAD);
}

#[test]
fn text_code_point_split_over_three_frames_is_valid() {
    let euro = "€".as_bytes(); // E2 82 AC
    let mut wire = cf(0x01, &euro[..1]);
    wire.extend(cf(0x00, &euro[1..2]));
    wire.extend(cf(0x80, &euro[2..]));
    let mut dec = server();
    let (events, r) = decode_once(&mut dec, &wire);
    assert_eq!(r, Ok(wire.len()));
    assert_eq!(events, [Owned::Text(euro.to_vec())]);
}

#[test]
fn text_message_ending_mid_code_point_is_1007() {
    let mut wire = cf(0x01, b"ok");
    wire.extend(cf(0x80, b"\xE2\x82"));
    expect_err(&wire, INVALID_PAYLOAD);
}

// ---- Zero-copy and memory ----

#[test]
fn complete_unfragmented_frame_is_zero_copy() {
    let mut wire = cf(0x82, &[9; 300]);
    let range = wire.as_ptr_range();
    let mut dec = server();
    let mut seen = None;
    let n = dec
        .decode(&mut wire, &mut |e| {
            if let Event::Binary(b) = e {
                seen = Some((b.as_ptr(), b.len()));
            }
        })
        .unwrap();
    assert_eq!(n, wire.len());
    let (ptr, len) = seen.expect("binary event");
    assert_eq!(len, 300);
    assert!(
        range.contains(&ptr),
        "the event slice points into the input"
    );
    assert_eq!(&wire[4 + 4..], &[9; 300][..], "unmasked in place");
}

#[test]
fn partial_header_is_left_unconsumed() {
    let wire = cf(0x82, &[1; 200]); // 2 + 2 + 4 header bytes
    for cut in 0..8 {
        let mut dec = server();
        let (events, r) = decode_once(&mut dec, &wire[..cut]);
        assert_eq!(r, Ok(0), "cut {cut}");
        assert!(events.is_empty());
    }
}

#[test]
fn partial_control_frame_is_left_unconsumed() {
    let wire = cf(0x89, &[1; 125]);
    let mut dec = server();
    let (events, r) = decode_once(&mut dec, &wire[..wire.len() - 1]);
    assert_eq!(r, Ok(0));
    assert!(events.is_empty());
    let (events, r) = decode_once(&mut dec, &wire);
    assert_eq!(r, Ok(wire.len()));
    assert_eq!(events, [Owned::Ping(vec![1; 125])]);
}

#[test]
fn partial_data_frame_is_consumed_and_buffered() {
    let payload: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let wire = cf(0x82, &payload); // 14-byte header
    let mut dec = server();
    // header + 1001 payload bytes: all consumed, nothing delivered yet
    let (events, r) = decode_once(&mut dec, &wire[..14 + 1001]);
    assert_eq!(r, Ok(14 + 1001));
    assert!(events.is_empty());
    assert_eq!(dec.buffered(), 1001);
    // the rest, in two pieces that do not fall on a mask-key boundary
    let (events, r) = decode_once(&mut dec, &wire[14 + 1001..14 + 5003]);
    assert_eq!(r, Ok(4002));
    assert!(events.is_empty());
    let (events, r) = decode_once(&mut dec, &wire[14 + 5003..]);
    assert_eq!(r, Ok(wire.len() - 14 - 5003));
    assert_eq!(events, [Owned::Binary(payload)]);
    assert_eq!(
        dec.message.capacity(),
        0,
        "buffer released once the message completes"
    );
}

/// Feeds `pieces` one decode_within call each (the worker's reads), keeping leftovers.
fn feed_within(
    dec: &mut Decoder,
    pieces: &[&[u8]],
    allowance: usize,
) -> (Vec<Owned>, Result<(), ProtocolError>) {
    let mut pending = Vec::new();
    let mut events = Vec::new();
    for p in pieces {
        pending.extend_from_slice(p);
        match dec.decode_within(&mut pending, allowance, &mut |e| {
            events.push(Owned::from(e))
        }) {
            Ok(n) => drop(pending.drain(..n)),
            Err(e) => return (events, Err(e)),
        }
    }
    (events, Ok(()))
}

#[test]
fn message_buffer_stays_within_the_allowance() {
    // A fragmented message of 3 x 4000 bytes under an allowance of 10,000: the third
    // fragment would need 12,000 bytes of buffer, so it fails with 1013 before the copy.
    let frag = vec![7u8; 4000];
    let (first, second, third) = (cf(0x02, &frag), cf(0x00, &frag), cf(0x80, &frag));
    let mut dec = server();
    let (events, r) = feed_within(&mut dec, &[&first, &second], 10_000);
    assert_eq!(r, Ok(()));
    assert!(events.is_empty());
    assert!(dec.held() <= 10_000, "held {}", dec.held());
    let (events, r) = feed_within(&mut dec, &[&third], 10_000);
    assert_eq!(r, Err(OVER_ALLOWANCE));
    assert_eq!(OVER_ALLOWANCE.code, 1013);
    assert_eq!(
        dec.refused_size(),
        12_000,
        "its last frame tells its whole size"
    );
    assert!(events.is_empty());
    assert_eq!(dec.held(), 0, "the buffer is released with the failure");
    // Refused before its last frame: the size it had reached, the bytes that found no room
    // included.
    let mut dec = server();
    let (_, r) = feed_within(&mut dec, &[&first, &second], 6_000);
    assert_eq!((r, dec.refused_size()), (Err(OVER_ALLOWANCE), 8_000));

    // The same message within 12,000 is delivered; complete unfragmented frames need no
    // buffer, so an allowance of 0 lets them through.
    let mut dec = server();
    let (events, r) = feed_within(&mut dec, &[&first, &second, &third], 12_000);
    assert_eq!(r, Ok(()));
    assert_eq!(events, [Owned::Binary(vec![7u8; 12_000])]);
    let mut dec = server();
    let (events, r) = feed_within(&mut dec, &[&cf(0x82, &frag)], 0);
    assert_eq!(r, Ok(()));
    assert_eq!(events, [Owned::Binary(frag.clone())]);
}

#[test]
fn invalid_text_is_1007_even_where_its_bytes_would_not_fit_the_allowance() {
    let first = cf(0x01, &[b'a'; 4000]);
    let mut bad = vec![0xFF];
    bad.extend([b'b'; 3999]);
    let mut dec = server();
    let (_, r) = feed_within(&mut dec, &[&first, &cf(0x80, &bad)], 5_000);
    assert_eq!(r.map_err(|e| e.code), Err(INVALID_PAYLOAD));
}

#[test]
fn a_partial_frame_counts_against_the_allowance_as_it_arrives() {
    // One 70,000-byte frame arriving in pieces: the buffer grows with the bytes that came, so
    // 40,000 of them fit an allowance of 50,000 and the rest does not.
    let payload = vec![1u8; 70_000];
    let wire = cf(0x82, &payload); // 14-byte header
    let mut dec = server();
    let (_, r) = feed_within(&mut dec, &[&wire[..14 + 40_000]], 50_000);
    assert_eq!(r, Ok(()));
    assert!(
        (40_000..=50_000).contains(&dec.held()),
        "held {}",
        dec.held()
    );
    let (_, r) = feed_within(&mut dec, &[&wire[14 + 40_000..]], 50_000);
    assert_eq!(r, Err(OVER_ALLOWANCE));
    assert_eq!(dec.refused_size(), 70_000);
}

#[test]
fn message_buffer_never_exceeds_the_message_limit() {
    // Doubling from a small start would pass a limit that is not a power of two; the buffer
    // stops at the limit itself.
    let limit = 100_000;
    let mut dec = Decoder::new(Role::Server, limit);
    let payload = vec![3u8; limit];
    let (got, most) = feed_by_1000(&mut dec, &cf(0x82, &payload));
    assert_eq!(got, [Owned::Binary(payload)]);
    assert!(most <= limit, "buffer grew to {most}");
}

/// Feeds `wire` 1000 bytes at a time (none may fail): the events, and the most the decoder
/// held at any point.
fn feed_by_1000(dec: &mut Decoder, wire: &[u8]) -> (Vec<Owned>, usize) {
    let mut pending = Vec::new();
    let mut most = 0;
    let mut got = Vec::new();
    for p in wire.chunks(1000) {
        pending.extend_from_slice(p);
        let n = dec
            .decode(&mut pending, &mut |e| got.push(Owned::from(e)))
            .expect("within the limit");
        pending.drain(..n);
        most = most.max(dec.held());
    }
    (got, most)
}

/// A message's last frame says how much is left: the buffer grows no larger than the whole
/// message (doubling alone took a 300,000-byte message past 500,000 bytes), fragmented or not.
#[test]
fn the_buffer_of_a_message_stops_at_its_size() {
    for fragments in [1, 3] {
        let size = 300_000;
        let mut dec = Decoder::new(Role::Server, 1 << 20);
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        let per = size / fragments;
        for f in 0..fragments {
            let b0 = match (f == 0, f == fragments - 1) {
                (true, true) => 0x82,
                (true, false) => 0x02,
                (false, true) => 0x80,
                (false, false) => 0x00,
            };
            wire.extend(cf(b0, &payload[f * per..(f + 1) * per]));
        }
        let (got, most) = feed_by_1000(&mut dec, &wire);
        assert_eq!(got, [Owned::Binary(payload)]);
        assert!(
            most <= size,
            "{fragments} fragment(s): buffer grew to {most}"
        );
    }
}

/// The worker's per-turn fairness counts frames: empty ones, control ones and each fragment
/// count alike, and a frame cut across reads counts once.
#[test]
fn frames_counts_every_frame_header_once() {
    let mut dec = server();
    assert_eq!(dec.frames_decoded(), 0);
    let mut wire = Vec::new();
    for _ in 0..3 {
        wire.extend(cf(0x8A, b"")); // unsolicited empty Pongs
    }
    wire.extend(cf(0x02, b"ab")); // a message in three fragments, a Ping between them
    wire.extend(cf(0x89, b"p"));
    wire.extend(cf(0x00, b""));
    wire.extend(cf(0x80, b"cd"));
    wire.extend(cf(0x82, &[7; 300])); // one whole frame
    let (events, r) = feed(&mut dec, &wire, &[1, 7, 8, 20, 31, 40]);
    r.expect("valid input");
    assert_eq!(events.len(), 6, "{events:?}"); // 3 Pongs, the Ping, two messages
    assert_eq!(dec.frames_decoded(), 8);
}

#[test]
fn idle_decoder_is_small_and_holds_no_heap() {
    assert!(
        std::mem::size_of::<Decoder>() <= 64,
        "{}",
        std::mem::size_of::<Decoder>()
    );
    let mut dec = server();
    assert_eq!(dec.message.capacity(), 0);
    let mut wire = cf(0x01, b"frag");
    wire.extend(cf(0x80, b"mented"));
    let (events, _) = decode_once(&mut dec, &wire);
    assert_eq!(events, [Owned::Text(b"fragmented".to_vec())]);
    assert_eq!(dec.message.capacity(), 0);
    assert_eq!(dec.buffered(), 0);
}

#[test]
fn decode_after_error_is_refused() {
    let mut dec = server();
    assert!(decode_once(&mut dec, &raw_frame(0x81, b"x", None))
        .1
        .is_err());
    let (events, r) = decode_once(&mut dec, &cf(0x81, b"fine"));
    assert!(r.is_err());
    assert!(events.is_empty());
}

// ---- RFC 6455 section 5.7 examples, decode and encode ----

#[test]
fn rfc_5_7_single_frame_unmasked_hello() {
    let wire = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let mut dec = Decoder::new(Role::Client, MAX);
    let (events, r) = decode_once(&mut dec, &wire);
    assert_eq!(r, Ok(7));
    assert_eq!(events, [Owned::Text(b"Hello".to_vec())]);
    let mut out = Vec::new();
    encode_message(&mut out, Role::Server, Opcode::Text, b"Hello", None, KEY);
    assert_eq!(out, wire);
}

#[test]
fn rfc_5_7_single_frame_masked_hello() {
    let wire = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let (events, r) = decode_once(&mut server(), &wire);
    assert_eq!(r, Ok(11));
    assert_eq!(events, [Owned::Text(b"Hello".to_vec())]);
    let mut out = Vec::new();
    encode_message(&mut out, Role::Client, Opcode::Text, b"Hello", None, KEY);
    assert_eq!(out, wire);
}

#[test]
fn rfc_5_7_fragmented_unmasked_hel_lo() {
    let wire = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    let mut dec = Decoder::new(Role::Client, MAX);
    let (events, r) = decode_once(&mut dec, &wire);
    assert_eq!(r, Ok(9));
    assert_eq!(events, [Owned::Text(b"Hello".to_vec())]);
    let mut out = Vec::new();
    encode_message(&mut out, Role::Server, Opcode::Text, b"Hello", Some(3), KEY);
    assert_eq!(out, wire);
}

#[test]
fn rfc_5_7_unmasked_ping() {
    let wire = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let mut dec = Decoder::new(Role::Client, MAX);
    let (events, r) = decode_once(&mut dec, &wire);
    assert_eq!(r, Ok(7));
    assert_eq!(events, [Owned::Ping(b"Hello".to_vec())]);
    let mut out = Vec::new();
    encode_control(&mut out, Role::Server, Opcode::Ping, b"Hello", KEY);
    assert_eq!(out, wire);
}

#[test]
fn rfc_5_7_masked_pong() {
    let wire = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let (events, r) = decode_once(&mut server(), &wire);
    assert_eq!(r, Ok(11));
    assert_eq!(events, [Owned::Pong(b"Hello".to_vec())]);
    let mut out = Vec::new();
    encode_control(&mut out, Role::Client, Opcode::Pong, b"Hello", KEY);
    assert_eq!(out, wire);
}

#[test]
fn rfc_5_7_256_byte_binary() {
    let payload: Vec<u8> = (0..=255u8).collect();
    let mut out = Vec::new();
    encode_message(&mut out, Role::Server, Opcode::Binary, &payload, None, KEY);
    assert_eq!(out[..4], [0x82, 0x7E, 0x01, 0x00]);
    assert_eq!(out[4..], payload[..]);
    let (events, r) = decode_once(&mut Decoder::new(Role::Client, MAX), &out);
    assert_eq!(r, Ok(260));
    assert_eq!(events, [Owned::Binary(payload)]);
}

#[test]
fn rfc_5_7_64k_binary() {
    let payload = vec![0xA5; 65536];
    let mut out = Vec::new();
    encode_message(&mut out, Role::Server, Opcode::Binary, &payload, None, KEY);
    assert_eq!(out[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]);
    assert_eq!(out.len(), 10 + 65536);
    let (events, r) = decode_once(&mut Decoder::new(Role::Client, MAX), &out);
    assert_eq!(r, Ok(out.len()));
    assert_eq!(events, [Owned::Binary(payload)]);
}

// ---- Encoders ----

/// Parses a server-encoded stream into (fin, opcode, payload) triples.
fn frames(mut wire: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        let (h, n) = FrameHeader::parse(wire).unwrap().unwrap();
        let len = h.payload_len as usize;
        let mut payload = wire[n..n + len].to_vec();
        if let Some(k) = h.mask {
            crate::simd::unmask(&mut payload, k, 0);
        }
        out.push((h.fin, h.opcode, payload));
        wire = &wire[n + len..];
    }
    out
}

#[test]
fn encode_message_auto_fragments() {
    let mut out = Vec::new();
    encode_message(
        &mut out,
        Role::Server,
        Opcode::Binary,
        b"0123456789",
        Some(4),
        KEY,
    );
    assert_eq!(
        frames(&out),
        [
            (false, 0x2, b"0123".to_vec()),
            (false, 0x0, b"4567".to_vec()),
            (true, 0x0, b"89".to_vec())
        ]
    );
    // an exact multiple: no empty trailing frame
    let mut out = Vec::new();
    encode_message(
        &mut out,
        Role::Server,
        Opcode::Text,
        b"abcdef",
        Some(3),
        KEY,
    );
    assert_eq!(
        frames(&out),
        [(false, 0x1, b"abc".to_vec()), (true, 0x0, b"def".to_vec())]
    );
    // fragment size >= payload, or 0: one frame
    for fragment in [Some(6), Some(100), Some(0), None] {
        let mut out = Vec::new();
        encode_message(
            &mut out,
            Role::Server,
            Opcode::Text,
            b"abcdef",
            fragment,
            KEY,
        );
        assert_eq!(frames(&out), [(true, 0x1, b"abcdef".to_vec())]);
    }
    // an empty message is one empty FIN frame
    let mut out = Vec::new();
    encode_message(&mut out, Role::Server, Opcode::Text, b"", Some(3), KEY);
    assert_eq!(out, [0x81, 0x00]);
}

#[test]
fn client_fragments_use_distinct_mask_keys() {
    let mut out = Vec::new();
    encode_message(
        &mut out,
        Role::Client,
        Opcode::Binary,
        &[0; 9],
        Some(3),
        KEY,
    );
    let mut keys = Vec::new();
    let mut wire = &out[..];
    while !wire.is_empty() {
        let (h, n) = FrameHeader::parse(wire).unwrap().unwrap();
        keys.push(h.mask.expect("client frames are masked"));
        wire = &wire[n + h.payload_len as usize..];
    }
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[0], KEY);
    assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
    let (events, _) = decode_once(&mut server(), &out);
    assert_eq!(events, [Owned::Binary(vec![0; 9])]);
}

#[test]
fn encode_close_frames() {
    let mut out = Vec::new();
    encode_close(&mut out, Role::Server, Some(NORMAL), b"bye", KEY);
    assert_eq!(out, [0x88, 0x05, 0x03, 0xE8, b'b', b'y', b'e']);
    let mut out = Vec::new();
    encode_close(&mut out, Role::Server, None, b"ignored", KEY);
    assert_eq!(out, [0x88, 0x00]);
    let mut out = Vec::new();
    encode_close(&mut out, Role::Client, Some(TOO_BIG), b"", KEY);
    let (events, _) = decode_once(&mut server(), &out);
    assert_eq!(events, [Owned::Close(Some(TOO_BIG), vec![])]);
}

#[test]
fn encode_close_cuts_long_reason_on_a_char_boundary() {
    let reason = "é".repeat(100); // 200 bytes of 2-byte code points
    let mut out = Vec::new();
    encode_close(&mut out, Role::Server, Some(NORMAL), reason.as_bytes(), KEY);
    let f = frames(&out);
    assert_eq!(f.len(), 1);
    let body = &f[0].2;
    assert!(body.len() <= 125);
    assert_eq!(body.len(), 2 + 122, "123 would split a code point");
    assert!(std::str::from_utf8(&body[2..]).is_ok());
    let (events, r) = decode_once(&mut Decoder::new(Role::Client, MAX), &out);
    assert!(r.is_ok());
    assert_eq!(events.len(), 1);
}

// ---- Property tests ----

#[derive(Debug, Clone)]
enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
}

fn msg_strategy() -> impl Strategy<Value = Msg> {
    prop_oneof![
        ".{0,300}".prop_map(Msg::Text),
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(Msg::Binary),
        proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Msg::Ping),
    ]
}

proptest! {
    #[test]
    fn round_trip_through_random_splits(
        msgs in proptest::collection::vec(msg_strategy(), 1..8),
        fragment in proptest::option::of(1usize..64),
        key in any::<[u8; 4]>(),
        cuts in proptest::collection::vec(0usize..6000, 0..20),
    ) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for m in &msgs {
            match m {
                Msg::Text(s) => {
                    encode_message(&mut wire, Role::Client, Opcode::Text, s.as_bytes(), fragment, key);
                    expected.push(Owned::Text(s.as_bytes().to_vec()));
                }
                Msg::Binary(b) => {
                    encode_message(&mut wire, Role::Client, Opcode::Binary, b, fragment, key);
                    expected.push(Owned::Binary(b.clone()));
                }
                Msg::Ping(p) => {
                    encode_control(&mut wire, Role::Client, Opcode::Ping, p, key);
                    expected.push(Owned::Ping(p.clone()));
                }
            }
        }
        encode_close(&mut wire, Role::Client, Some(NORMAL), b"done", key);
        expected.push(Owned::Close(Some(NORMAL), b"done".to_vec()));
        let mut dec = Decoder::new(Role::Server, MAX);
        let (events, r) = feed(&mut dec, &wire, &cuts);
        prop_assert_eq!(r, Ok(()));
        prop_assert_eq!(events, expected);
        prop_assert!(dec.is_closed());
        prop_assert_eq!(dec.message.capacity(), 0);
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        cuts in proptest::collection::vec(0usize..400, 0..8),
        client in any::<bool>(),
        max in 0usize..300,
    ) {
        let role = if client { Role::Client } else { Role::Server };
        let mut dec = Decoder::new(role, max);
        let _ = feed(&mut dec, &bytes, &cuts);
        let _ = FrameHeader::parse(&bytes);
    }

    #[test]
    fn masked_random_frames_never_panic(
        b0 in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        tail in proptest::collection::vec(any::<u8>(), 0..50),
        cuts in proptest::collection::vec(0usize..300, 0..6),
    ) {
        // Valid-looking masked headers get past the first checks more often than pure noise.
        let mut wire = cf(b0, &payload);
        wire.extend(tail);
        let mut dec = Decoder::new(Role::Server, 150);
        let _ = feed(&mut dec, &wire, &cuts);
    }
}

// ---- Oracle: tungstenite on the other end ----

/// An in-memory socket for tungstenite: reads from `input` (WouldBlock when drained), writes
/// to `output`.
struct Pipe {
    input: std::io::Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl std::io::Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.input.read(buf)? {
            0 if !buf.is_empty() => Err(std::io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }
}

impl std::io::Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn tungstenite_peer(input: Vec<u8>) -> tungstenite::WebSocket<Pipe> {
    let pipe = Pipe {
        input: std::io::Cursor::new(input),
        output: Vec::new(),
    };
    tungstenite::WebSocket::from_raw_socket(pipe, tungstenite::protocol::Role::Client, None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn tungstenite_client_frames_decode(
        msgs in proptest::collection::vec(msg_strategy(), 1..6),
        cuts in proptest::collection::vec(0usize..4000, 0..10),
    ) {
        use tungstenite::Message;
        let mut ws = tungstenite_peer(Vec::new());
        let mut expected = Vec::new();
        for m in &msgs {
            let (msg, owned) = match m {
                Msg::Text(s) => (Message::text(s.clone()), Owned::Text(s.as_bytes().to_vec())),
                Msg::Binary(b) => (Message::binary(b.clone()), Owned::Binary(b.clone())),
                Msg::Ping(p) => (Message::Ping(p.clone().into()), Owned::Ping(p.clone())),
            };
            ws.send(msg).unwrap();
            expected.push(owned);
        }
        let wire = std::mem::take(&mut ws.get_mut().output);
        let mut dec = server();
        let (events, r) = feed(&mut dec, &wire, &cuts);
        prop_assert_eq!(r, Ok(()));
        prop_assert_eq!(events, expected);
    }

    #[test]
    fn server_encoding_is_read_by_tungstenite(
        msgs in proptest::collection::vec(msg_strategy(), 1..6),
        fragment in proptest::option::of(1usize..64),
    ) {
        use tungstenite::Message;
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for m in &msgs {
            match m {
                Msg::Text(s) => {
                    encode_message(&mut wire, Role::Server, Opcode::Text, s.as_bytes(), fragment, KEY);
                    expected.push(Message::text(s.clone()));
                }
                Msg::Binary(b) => {
                    encode_message(&mut wire, Role::Server, Opcode::Binary, b, fragment, KEY);
                    expected.push(Message::binary(b.clone()));
                }
                Msg::Ping(p) => {
                    encode_control(&mut wire, Role::Server, Opcode::Ping, p, KEY);
                    expected.push(Message::Ping(p.clone().into()));
                }
            }
        }
        encode_close(&mut wire, Role::Server, Some(POLICY), b"acl", KEY);
        let mut ws = tungstenite_peer(wire);
        for want in expected {
            prop_assert_eq!(ws.read().unwrap(), want);
        }
        match ws.read().unwrap() {
            Message::Close(Some(frame)) => {
                prop_assert_eq!(u16::from(frame.code), POLICY);
                prop_assert_eq!(frame.reason.as_str(), "acl");
            }
            other => prop_assert!(false, "expected a close, got {:?}", other),
        }
    }
}
