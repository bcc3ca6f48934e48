//! What the codecs allocate, measured by a counting global allocator (its own test binary, so
//! the count sees only these tests): lengths a peer declares must not size our buffers, and a
//! JSON text stops at the room it is given.
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed on to `System` unchanged; only byte counts are kept aside.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The count is process-wide: each test holds this for its whole body, so that no other test
/// of this binary allocates while it measures.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Eight nested arrays, each declaring 2^32 - 1 elements, around one 4 MiB byte string, and
/// then the input ends. Every level used to reserve room for as many elements as the rest of
/// the input could hold (4 Mi x 32 bytes = 128 MiB each, 1 GiB in all, ~34 GiB for 64 levels of
/// a 16 MiB message: an abort under strict overcommit or a memory rlimit).
#[test]
fn declared_lengths_of_nested_containers_do_not_size_the_decoders_buffers() {
    let _alone = alone();
    let payload = 4usize << 20;
    let mut input = Vec::with_capacity(payload + 128);
    for _ in 0..8 {
        input.extend_from_slice(&[0x9b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    }
    input.extend_from_slice(&[0x5a, 0x00, 0x40, 0x00, 0x00]); // bstr of 4 MiB
    input.resize(input.len() + payload, 0xab);

    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let r = lapps::lapps_proto::cbor::decode_with(&input, &Default::default());
    let peak = PEAK.load(Relaxed) - before;
    assert!(r.is_err(), "the arrays are not complete: {r:?}");
    // The byte string's copy (4 MiB) and small change; never a reservation per level.
    assert!(
        peak <= 2 * payload,
        "decoding {} bytes took {peak} bytes at its peak",
        input.len()
    );
}

/// A deep tree written with a wide indent: 30 levels of 64 spaces before each of 20,000
/// numbers make ~40 MB of text from a 40 KB tree. Given 1 MiB, the writer stops near it.
#[test]
fn a_json_text_with_a_bound_stops_near_it() {
    let _alone = alone();
    use lapps::lapps_proto::json::{encode_with, Style};
    use lapps::lapps_proto::Value;
    let mut v = Value::Array(vec![Value::Int(0); 20_000]);
    for _ in 0..29 {
        v = Value::Array(vec![v]);
    }
    let bound = 1usize << 20;
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let style = Style {
        indent: Some(64),
        max_output: Some(bound),
        ..Default::default()
    };
    let r = encode_with(&v, style);
    let peak = PEAK.load(Relaxed) - before;
    assert!(r.is_err(), "the text is far past the bound");
    assert!(peak <= 4 * bound, "writing took {peak} bytes at its peak");
}

/// One string of control characters: each is written as `\u0001`, six bytes for one. Given
/// 1 MiB, the writer refuses the 4 MiB string before writing any of its 24 MiB of text.
#[test]
fn a_json_string_past_the_bound_is_refused_before_it_is_escaped() {
    let _alone = alone();
    use lapps::lapps_proto::json::{encode_with, Style};
    use lapps::lapps_proto::Value;
    let v = Value::Array(vec![Value::Text("\u{1}".repeat(4 << 20))]);
    let bound = 1usize << 20;
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let style = Style {
        max_output: Some(bound),
        ..Default::default()
    };
    let r = encode_with(&v, style);
    let peak = PEAK.load(Relaxed) - before;
    assert!(r.is_err(), "the text is past the bound");
    assert!(peak <= bound, "writing took {peak} bytes at its peak");
}

/// A request whose first key is a large array (valid CBOR: a key may be any item, and members
/// whose names are not text are ignored) is checked the way the server checks requests without
/// building that key: the check used to decode it into a tree (32 bytes per element) twice,
/// outside any budget, and the app's reads of `method` and `params` each did it again.
#[test]
fn a_container_key_is_skipped_not_decoded_when_a_request_is_checked() {
    use lapps::lapps_proto::protocol::{parse_inbound_in_place, MsgType};
    let _alone = alone();
    let n = 1usize << 19;
    let mut input = vec![0xa4, 0x9a]; // a map of 4 members; the first key: an array of n ...
    input.extend_from_slice(&(n as u32).to_be_bytes());
    input.resize(input.len() + n, 0x00); // ... zeros
    input.push(0x00); // its value
    input.extend_from_slice(b"\x65lapps\x01\x66method\x64echo\x66params\x81\x01");

    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let r = parse_inbound_in_place(&input);
    let peak = PEAK.load(Relaxed) - before;
    assert_eq!(r.map_err(|e| e.code), Ok(MsgType::RequestWithParams));
    // A copy of the message at most; the key as a tree would be 16 MiB.
    assert!(
        peak <= 2 * input.len(),
        "checking {} bytes took {peak} bytes at its peak",
        input.len()
    );
}

/// `nljson.decode` in a state with a memory limit stops parsing at the values the limit could
/// ever hold: a 2 MB text of a million zeros (a tree of ~50 MB, refused either way) no longer
/// builds its whole decoded value outside the state before the refusal.
#[test]
fn nljson_decode_stops_at_the_values_the_memory_limit_could_hold() {
    use lapps::lapps_proto::{cbor, Value};
    use tungstenite::Message;
    let _alone = alone();
    let app = common::start_app(
        &common::ws_json(1),
        &common::lapps_json(
            "./tests/apps",
            r#"{ "lapps_views": { "protocol": "LAppS", "instances": 1, "memory_limit": 8388608 } }"#,
        ),
    );
    let mut ws = common::connect(app.addr, "/lapps_views");
    let t = |s: &str| Value::text(s);
    let call = |ws: &mut common::Client, n: i64| -> Value {
        let request = Value::Map(vec![
            (t("lapps"), Value::Int(1)),
            (t("method"), t("decode")),
            (t("params"), Value::Array(vec![Value::Int(n)])),
        ]);
        ws.send(Message::binary(cbor::encode(&request))).unwrap();
        loop {
            match ws.read().expect("a message") {
                Message::Binary(b) => return cbor::decode(&b).unwrap(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    // Warm: the state, its allocator and the connection's buffers exist before the count.
    let got = call(&mut ws, 10_000);
    assert_eq!(
        got.get("result"),
        Some(&Value::Array(vec![Value::Bool(true), Value::Int(10_000)]))
    );
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let got = call(&mut ws, 1_000_000);
    let peak = PEAK.load(Relaxed) - before;
    assert_eq!(
        got.get("result"),
        Some(&Value::Array(vec![
            Value::Bool(false),
            t("nljson.decode: not enough memory")
        ])),
    );
    // The text (2 MB, made in the state) and what the parse stops at (~8 MiB of values).
    assert!(peak < 20 << 20, "{} MiB at the peak", peak >> 20);
}
