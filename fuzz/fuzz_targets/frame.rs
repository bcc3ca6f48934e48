//! Fuzz target for the frame decoder (`lapps::ws::codec`).
//!
//! Feeds arbitrary bytes to a server-role decoder the way the IOWorker does, and to a
//! client-role one the way the cws client does: cut into chunks at positions chosen by the
//! input, each call gets what was left unconsumed plus the next chunk. Checks that decoding
//! never panics, never claims more than it was given, and that the caller never has to keep
//! more than a partial header or partial control frame. The server-role decoder gets an
//! allowance for its message buffer (the worker's share of the process-wide cap) chosen by the
//! input: its buffer never holds more, and running out is 1013. Then checks that the input,
//! used as a payload, survives encode (client, fragmented) -> decode (server).
#![no_main]

use lapps::ws::codec::{encode_message, Decoder, Event, Role};
use lapps::ws::Opcode;
use libfuzzer_sys::fuzz_target;

/// Small, so the 1009 path and message assembly both get exercised.
const MAX_MESSAGE: usize = 4096;
/// The most a caller may be left holding: a 14-byte header or a 2+4+125-byte control frame.
const MAX_LEFTOVER: usize = 2 + 4 + 125;

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, bytes)) = data.split_first() else {
        return;
    };
    decode_in_chunks(bytes, split_seed, Role::Server);
    // The cws client decodes what a remote server sends (unmasked frames).
    decode_in_chunks(bytes, split_seed, Role::Client);
    round_trip(bytes, split_seed);
});

fn decode_in_chunks(bytes: &[u8], split_seed: u8, role: Role) {
    let mut dec = Decoder::new(role, MAX_MESSAGE);
    // 0..=8160 bytes for the server (most of them below MAX_MESSAGE); none for the client.
    let allowance = match role {
        Role::Server => split_seed as usize * 32,
        Role::Client => usize::MAX,
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut rest = bytes;
    let mut step = split_seed as usize;
    while !rest.is_empty() {
        // Chunk sizes come from the data itself (1..=256), so the fuzzer controls the splits.
        let take = (step % 256 + 1).min(rest.len());
        step = step.wrapping_mul(31).wrapping_add(rest[0] as usize);
        pending.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        match dec.decode_within(&mut pending, allowance, &mut |e| check_event(e)) {
            Ok(n) => {
                assert!(
                    dec.held() <= allowance.min(MAX_MESSAGE),
                    "held {}",
                    dec.held()
                );
                assert!(n <= pending.len());
                pending.drain(..n);
                if !dec.is_closed() {
                    assert!(
                        pending.len() <= MAX_LEFTOVER,
                        "caller left holding {}",
                        pending.len()
                    );
                }
            }
            Err(e) => {
                assert!(
                    matches!(e.code, 1002 | 1007 | 1009)
                        || (e.code == 1013 && allowance < MAX_MESSAGE),
                    "unexpected code {}",
                    e.code
                );
                return;
            }
        }
        assert!(dec.buffered() <= MAX_MESSAGE);
    }
}

fn check_event(e: Event<'_>) {
    match e {
        Event::Text(t) => assert!(std::str::from_utf8(t).is_ok() && t.len() <= MAX_MESSAGE),
        Event::Binary(b) => assert!(b.len() <= MAX_MESSAGE),
        Event::Ping(p) | Event::Pong(p) => assert!(p.len() <= 125),
        Event::Close { code, reason } => {
            assert!(code.is_some() || reason.is_empty());
            assert!(std::str::from_utf8(reason).is_ok());
        }
    }
}

fn round_trip(payload: &[u8], split_seed: u8) {
    let fragment = match split_seed % 4 {
        0 => None,
        _ => Some(split_seed as usize / 4 + 1),
    };
    let key = [split_seed, 0x5A, split_seed.wrapping_mul(7), 0xC3];
    let opcode = if std::str::from_utf8(payload).is_ok() {
        Opcode::Text
    } else {
        Opcode::Binary
    };
    let mut wire = Vec::new();
    encode_message(&mut wire, Role::Client, opcode, payload, fragment, key);
    let mut dec = Decoder::new(Role::Server, payload.len());
    let mut got: Option<Vec<u8>> = None;
    let n = dec
        .decode(&mut wire, &mut |e| match e {
            Event::Text(m) | Event::Binary(m) => {
                assert!(got.is_none(), "one message in, one message out");
                got = Some(m.to_vec());
            }
            other => panic!("unexpected event {other:?}"),
        })
        .expect("our own encoding must decode");
    assert_eq!(n, wire.len());
    assert_eq!(got.as_deref(), Some(payload));
}
