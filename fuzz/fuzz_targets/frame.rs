//! Fuzz target for the frame decoder (`lapps::ws::codec`).
//!
//! Feeds arbitrary bytes to a server-role decoder the way the IOWorker does: cut into chunks at
//! positions chosen by the input, each call gets what was left unconsumed plus the next chunk.
//! Checks that decoding never panics, never claims more than it was given, and that the caller
//! never has to keep more than a partial header or partial control frame. Then checks that the
//! input, used as a payload, survives encode (client, fragmented) -> decode (server), and that
//! stopping after events (as the IOWorker does when a service pauses) and passing the rest
//! again gives the same events and the same verdict as decoding in one go.
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
    decode_in_chunks(bytes, split_seed);
    round_trip(bytes, split_seed);
    stop_and_resume(bytes, split_seed);
});

/// An event, owned, to compare two decodings.
fn owned(e: Event<'_>) -> (u8, Option<u16>, Vec<u8>) {
    match e {
        Event::Text(b) => (1, None, b.to_vec()),
        Event::Binary(b) => (2, None, b.to_vec()),
        Event::Ping(b) => (9, None, b.to_vec()),
        Event::Pong(b) => (10, None, b.to_vec()),
        Event::Close { code, reason } => (8, code, reason.to_vec()),
    }
}

fn stop_and_resume(bytes: &[u8], split_seed: u8) {
    let mut whole = bytes.to_vec();
    let mut expected = Vec::new();
    let verdict = Decoder::new(Role::Server, MAX_MESSAGE)
        .decode(&mut whole, &mut |e| expected.push(owned(e)))
        .map_err(|e| e.code);

    let mut dec = Decoder::new(Role::Server, MAX_MESSAGE);
    let mut rest = bytes.to_vec();
    let mut got = Vec::new();
    let period = split_seed as usize % 3 + 1;
    let resumed = loop {
        let mut stopped = false;
        let r = dec.decode_while(&mut rest, &mut |e| {
            assert!(!stopped, "an event after a stop");
            got.push(owned(e));
            stopped = got.len() % period == 0;
            !stopped
        });
        match r {
            Ok(n) => {
                assert!(n <= rest.len());
                rest.drain(..n);
                if !stopped {
                    break Ok(());
                }
            }
            Err(e) => break Err(e.code),
        }
    };
    assert_eq!(got, expected, "stopping changed the events");
    assert_eq!(resumed.is_err(), verdict.is_err(), "stopping changed the verdict");
    if let (Err(a), Err(b)) = (resumed, verdict) {
        assert_eq!(a, b);
    }
}

fn decode_in_chunks(bytes: &[u8], split_seed: u8) {
    let mut dec = Decoder::new(Role::Server, MAX_MESSAGE);
    let mut pending: Vec<u8> = Vec::new();
    let mut rest = bytes;
    let mut step = split_seed as usize;
    while !rest.is_empty() {
        // Chunk sizes come from the data itself (1..=256), so the fuzzer controls the splits.
        let take = (step % 256 + 1).min(rest.len());
        step = step.wrapping_mul(31).wrapping_add(rest[0] as usize);
        pending.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        match dec.decode(&mut pending, &mut |e| check_event(e)) {
            Ok(n) => {
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
                    matches!(e.code, 1002 | 1007 | 1009),
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
