//! LAppS values through the real server, a real Lua app and a real WebSocket client: every
//! CBOR type comes back byte-exact (integers vs floats, byte vs text strings, arrays vs maps,
//! null, non-string keys) whichever way the app holds the message (the view it receives, a
//! changed view, a tree copy, a table for ws:send), and requests in a non-canonical encoding
//! are answered with the canonical encoding of the same values.
mod common;
use common::*;
use lapps::lapps_proto::{cbor, protocol, Value};
use tungstenite::Message;

fn start() -> TestApp {
    start_with("")
}

/// The `lapps_views` service with `settings` added to its config (`"key": value, ...`).
fn start_with(settings: &str) -> TestApp {
    let comma = if settings.is_empty() { "" } else { ", " };
    start_app(
        &ws_json(1),
        &lapps_json(
            "./tests/apps",
            &format!(
                r#"{{ "lapps_views": {{ "protocol": "LAppS", "instances": 1{comma}{settings} }} }}"#
            ),
        ),
    )
}

fn t(s: &str) -> Value {
    Value::text(s)
}

fn request(method: &str, params: Value) -> Vec<u8> {
    cbor::encode(&Value::Map(vec![
        (t("lapps"), Value::Int(1)),
        (t("method"), t(method)),
        (t("params"), params),
    ]))
}

/// Sends `bytes` and returns the next binary message, as bytes.
fn call(ws: &mut Client, bytes: Vec<u8>) -> Vec<u8> {
    ws.send(Message::binary(bytes)).unwrap();
    loop {
        match ws.read().expect("a message") {
            Message::Binary(b) => return b.to_vec(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// One of every kind of value the protocol carries.
fn every_type() -> Vec<Value> {
    vec![
        Value::Bytes(vec![0xff, 0x00, 0x80]),
        Value::Bytes(b"valid UTF-8 bytes".to_vec()),
        Value::Bytes(vec![]),
        t("κόσμε"),
        t(""),
        Value::Int(0),
        Value::Int(23),
        Value::Int(24),
        Value::Int(-1),
        Value::Int(i64::MIN),
        Value::Int(i64::MAX),
        Value::UInt(u64::MAX),
        Value::Float(1.0),
        Value::Float(-0.0),
        Value::Float(1.5),
        Value::Float(f64::INFINITY),
        Value::Bool(true),
        Value::Bool(false),
        Value::Null,
        Value::Map(vec![]),
        Value::Array(vec![]),
        Value::Map(vec![
            (Value::Int(1), t("one")),
            (Value::Bytes(b"k".to_vec()), Value::Null),
            (t("s"), Value::Array(vec![Value::Float(2.0), Value::Int(2)])),
        ]),
        Value::Array(vec![Value::Array(vec![Value::Array(vec![])])]),
    ]
}

#[test]
fn every_cbor_type_comes_back_byte_exact_whichever_way_the_app_holds_it() {
    let app = start();
    let mut ws = connect(app.addr, "/lapps_views");
    let params = every_type();
    let want = protocol::encode_response_ok(&params);
    for method in ["echo", "copy", "send"] {
        let got = call(&mut ws, request(method, Value::Array(params.clone())));
        assert_eq!(got, want, "{method}");
    }
    // One at a time too, so that each value is the whole result once.
    for v in params {
        let got = call(&mut ws, request("echo", Value::Array(vec![v.clone()])));
        assert_eq!(
            got,
            protocol::encode_response_ok(std::slice::from_ref(&v)),
            "{v:?}"
        );
    }
}

#[test]
fn the_bench_request_is_answered_byte_exact() {
    let app = start();
    let mut ws = connect(app.addr, "/lapps_views");
    let payload: Vec<u8> = (0u8..16).map(|i| i.wrapping_mul(37) | 0x80).collect();
    let mut req = b"\xa3\x65lapps\x01\x66method\x64echo\x66params\x81\x50".to_vec();
    req.extend_from_slice(&payload);
    let mut want = b"\xa3\x66status\x01\x63cid\x00\x66result\x81\x50".to_vec();
    want.extend_from_slice(&payload);
    assert_eq!(call(&mut ws, req), want);
}

#[test]
fn a_change_through_one_view_is_answered_through_another() {
    let app = start();
    let mut ws = connect(app.addr, "/lapps_views");
    let got = call(
        &mut ws,
        request(
            "mutate",
            Value::Array(vec![Value::Int(1), Value::Bytes(vec![7])]),
        ),
    );
    assert_eq!(
        got,
        protocol::encode_response_ok(&[t("changed"), Value::Bytes(vec![7])])
    );
    let got = call(
        &mut ws,
        request(
            "shape",
            Value::Array(vec![Value::Int(1), Value::Map(vec![])]),
        ),
    );
    assert_eq!(
        cbor::decode(&got).unwrap(),
        cbor::decode(&protocol::encode_response_ok(&[
            t("array"),
            Value::Int(2),
            t("[1,{}]")
        ]))
        .unwrap()
    );
}

#[test]
fn non_canonical_requests_are_answered_in_the_canonical_encoding() {
    let app = start();
    let mut ws = connect(app.addr, "/lapps_views");
    // params: indefinite array of [half 1.5, indefinite bytes 01 02, tag 0 "t", 1-byte head
    // for 5, single float 0.25, undefined].
    let params = [
        &[0x9f][..],
        &[0xf9, 0x3e, 0x00],
        &[0x5f, 0x41, 0x01, 0x41, 0x02, 0xff],
        &[0xc0, 0x61, b't'],
        &[0x18, 0x05],
        &[0xfa, 0x3e, 0x80, 0x00, 0x00],
        &[0xf7],
        &[0xff],
    ]
    .concat();
    let mut req = b"\xa3\x65lapps\x01\x66method\x64echo\x66params".to_vec();
    req.extend_from_slice(&params);
    let want = protocol::encode_response_ok(&[
        Value::Float(1.5),
        Value::Bytes(vec![1, 2]),
        t("t"),
        Value::Int(5),
        Value::Float(0.25),
        Value::Null,
    ]);
    assert_eq!(call(&mut ws, req.clone()), want);
    let copy = [
        &req[..req.len() - params.len() - 12],
        b"\x64copy\x66params",
        &params,
    ]
    .concat();
    assert_eq!(call(&mut ws, copy), want);
}

#[test]
fn a_failing_handler_is_answered_with_32603_and_the_connection_keeps_serving() {
    let app = start();
    let mut ws = connect(app.addr, "/lapps_views");
    let got = cbor::decode(&call(&mut ws, request("fail", Value::Array(vec![])))).unwrap();
    let code = got
        .get("error")
        .and_then(|e| e.get("code"))
        .and_then(Value::as_i64);
    assert_eq!(code, Some(-32603));
    let got = call(&mut ws, request("echo", Value::Array(vec![Value::Int(3)])));
    assert_eq!(got, protocol::encode_response_ok(&[Value::Int(3)]));
}

#[test]
fn a_handler_that_answers_and_then_fails_gets_no_second_response() {
    let app = start();
    let mut ws = connect(app.addr, "/lapps_views");
    for how in ["response", "error", "send"] {
        let got = cbor::decode(&call(
            &mut ws,
            request("answer_then_fail", Value::Array(vec![t(how)])),
        ))
        .unwrap();
        assert_eq!(got.get("cid").and_then(Value::as_i64), Some(0), "{how}");
        let code = got
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64);
        assert_ne!(
            code,
            Some(-32603),
            "{how}: the app's own answer comes first"
        );
        // The next response is the next request's: no -32603 was left in between.
        let got = call(&mut ws, request("echo", Value::Array(vec![t(how)])));
        assert_eq!(got, protocol::encode_response_ok(&[t(how)]), "{how}");
    }
}

#[test]
fn a_request_up_to_the_services_message_size_is_taken_beyond_16_mib() {
    let app = start_with(r#""max_inbound_message_size": 33554432"#);
    let mut ws = connect(app.addr, "/lapps_views");
    let big = Value::Bytes(vec![0x5a; 20 << 20]);
    let got = call(&mut ws, request("echo", Value::Array(vec![big.clone()])));
    assert_eq!(got, protocol::encode_response_ok(&[big]));
}

#[test]
fn a_code_or_cid_that_is_not_a_whole_number_is_refused_not_truncated() {
    let app = start();
    let mut ws = connect(app.addr, "/lapps_views");
    // Each call raised (a programming error), so nothing but the one response was sent.
    let got = call(&mut ws, request("strict", Value::Array(vec![])));
    let no = t("false");
    assert_eq!(
        got,
        protocol::encode_response_ok(&[no.clone(), no.clone(), no.clone(), no])
    );
}

/// A channel past 2^53 is a float in Lua: ws:send_oon takes it up to 2^64, as a client's
/// notification and ws:send's table form do.
#[test]
fn send_oon_takes_a_channel_past_2_to_the_53() {
    let app = start();
    let mut ws = connect(app.addr, "/lapps_views");
    let first = call(&mut ws, request("far", Value::Array(vec![])));
    let second = match ws.read().unwrap() {
        tungstenite::Message::Binary(b) => b.to_vec(),
        other => panic!("{other:?}"),
    };
    // An OON may come before or after the response (SPEC section 4).
    let mut got = [first, second];
    got.sort();
    let mut want = [
        protocol::encode_oon(std::num::NonZeroU64::new(1 << 63).unwrap(), &[t("far")]),
        protocol::encode_response_ok(&[t("true"), t("nil")]),
    ];
    want.sort();
    assert_eq!(got, want);
}

/// `at` request: params `[position, 0, 1, 2, ...]` with `n` elements in all.
fn at_request(position: i64, n: usize) -> Vec<u8> {
    request_of("at", position, n)
}

fn request_of(method: &str, position: i64, n: usize) -> Vec<u8> {
    let mut items = vec![Value::Int(position)];
    items.extend((1..n).map(|i| Value::Int((i % 20) as i64)));
    request(method, Value::Array(items))
}

fn error_code(response: &[u8]) -> Option<i64> {
    let got = cbor::decode(response).unwrap();
    got.get("error")
        .and_then(|e| e.get("code"))
        .and_then(Value::as_i64)
}

#[test]
fn a_message_tree_is_charged_to_the_services_memory_limit() {
    let app = start_with(r#""memory_limit": 8388608"#);
    let mut ws = connect(app.addr, "/lapps_views");
    // One million one-byte items: a tree of ~80 MB for 1 MB of CBOR, ten times the limit.
    let got = cbor::decode(&call(&mut ws, at_request(100, 1_000_000))).unwrap();
    let error = got
        .get("error")
        .expect("an error response, not a tree past the limit");
    // The app's read raised "not enough memory" (in the log); the client is told no more.
    assert_eq!(error.get("code").and_then(Value::as_i64), Some(-32603));
    // Trees within the limit are built, again and again: those of messages gone are given
    // back (20 of these together would be past it).
    for round in 0..20 {
        let got = call(&mut ws, at_request(100, 40_000));
        assert_eq!(
            got,
            protocol::encode_response_ok(&[Value::Int(99 % 20)]),
            "round {round}"
        );
    }
}

#[test]
fn a_request_gets_one_response_however_often_the_app_answers() {
    let app = start();
    let mut ws = connect(app.addr, "/lapps_views");
    let got = call(&mut ws, request("twice", Value::Array(vec![])));
    assert_eq!(got, protocol::encode_response_ok(&[t("first")]));
    // The next response is the next call's, not a second answer to the first.
    let got = call(&mut ws, request("refusals", Value::Array(vec![])));
    let refused = t("nil no request awaiting a response");
    assert_eq!(
        got,
        protocol::encode_response_ok(&[refused.clone(), refused.clone(), refused])
    );
    let got = call(&mut ws, request("echo", Value::Array(vec![Value::Int(7)])));
    assert_eq!(got, protocol::encode_response_ok(&[Value::Int(7)]));
}

#[test]
fn parts_of_a_message_tree_an_app_keeps_stay_charged() {
    let app = start_with(r#""memory_limit": 8388608"#);
    let mut ws = connect(app.addr, "/lapps_views");
    // Each keeps ~2 MB of tree after its message is gone: the limit is reached within a few.
    let refused_after = (0..10).position(|_| {
        let got = call(&mut ws, request_of("keep", 100, 40_000));
        error_code(&got) == Some(-32603)
    });
    assert!(
        matches!(refused_after, Some(1..=5)),
        "kept parts were not charged: {refused_after:?}"
    );
    // Once the app lets them go, their charge is given back.
    call(&mut ws, request("forget", Value::Array(vec![])));
    let got = call(&mut ws, at_request(100, 40_000));
    assert_eq!(got, protocol::encode_response_ok(&[Value::Int(99 % 20)]));
}

/// A request of `method` whose params are one byte string of `n` bytes.
fn bytes_request(method: &str, n: usize) -> Vec<u8> {
    request(method, Value::Array(vec![Value::Bytes(vec![7; n])]))
}

#[test]
fn the_bytes_of_messages_an_app_keeps_are_charged_to_its_memory_limit() {
    let app = start_with(r#""memory_limit": 8388608"#);
    let mut ws = connect(app.addr, "/lapps_views");
    // Each kept message keeps its 1 MiB of bytes: the limit is reached within eight, where
    // nothing bounded them before.
    let refused_after = (0..20).position(|_| {
        let got = call(&mut ws, bytes_request("keep_message", 1 << 20));
        error_code(&got) == Some(-32603)
    });
    assert!(
        matches!(refused_after, Some(5..=8)),
        "kept messages were not charged: {refused_after:?}"
    );
    // Once the app lets them go, their charge is given back.
    call(&mut ws, request("forget_messages", Value::Array(vec![])));
    let got = call(&mut ws, bytes_request("keep_message", 1 << 20));
    assert_eq!(got, protocol::encode_response_ok(&[Value::Int(1)]));
}

#[test]
fn the_bytes_of_messages_gone_are_collected_when_they_reach_the_memory_limit() {
    let app = start_with(r#""memory_limit": 8388608"#);
    let mut ws = connect(app.addr, "/lapps_views");
    // Four times the limit in messages nobody keeps: each is answered, the bytes of those
    // before it given back by a collection instead of waiting for Lua's own pace.
    for round in 0..32 {
        let got = call(&mut ws, bytes_request("echo", 1 << 20));
        assert_eq!(
            got,
            protocol::encode_response_ok(&[Value::Bytes(vec![7; 1 << 20])]),
            "round {round}"
        );
    }
}

#[test]
fn json_text_past_the_memory_limit_is_refused_before_it_is_written() {
    let app = start_with(r#""memory_limit": 8388608"#);
    let mut ws = connect(app.addr, "/lapps_views");
    let params = |depth: i64, n: i64, indent: i64| {
        Value::Array(vec![Value::Int(depth), Value::Int(n), Value::Int(indent)])
    };
    // 40 KB of JSON whose pretty form (64 spaces per level, 30 levels) is ~80 MB: the text
    // stops at the room the state has, instead of being written out in full beside it.
    let got = result_of(&call(&mut ws, request("pretty", params(30, 20_000, 64))));
    assert_eq!(got.first(), Some(&Value::Bool(false)), "{got:?}");
    let error = got.get(1).and_then(Value::as_str).unwrap_or_default();
    assert!(error.contains("bytes this state has room for"), "{got:?}");
    // A text that fits is written as before.
    let got = result_of(&call(&mut ws, request("pretty", params(3, 100, 2))));
    assert_eq!(got.first(), Some(&Value::Bool(true)), "{got:?}");
}

/// The response's result, decoded.
fn result_of(response: &[u8]) -> Vec<Value> {
    let got = cbor::decode(response).unwrap();
    match got.get("result") {
        Some(Value::Array(items)) => items.clone(),
        _ => panic!("not a result: {got:?}"),
    }
}

#[test]
fn trees_an_app_decodes_or_grows_are_charged_to_its_memory_limit() {
    let app = start_with(r#""memory_limit": 8388608"#);
    let mut ws = connect(app.addr, "/lapps_views");
    let int = |n: i64| Value::Array(vec![Value::Int(n)]);
    // A 2 MB JSON text of a million zeros: a tree of ~50 MB, six times the limit.
    let got = result_of(&call(&mut ws, request("decode", int(1_000_000))));
    assert_eq!(
        got,
        [Value::Bool(false), t("nljson.decode: not enough memory")],
        "the tree was built past the limit"
    );
    let got = result_of(&call(&mut ws, request("decode", int(10_000))));
    assert_eq!(got, [Value::Bool(true), Value::Int(10_000)]);
    // Grown one assignment at a time, an array stops short of the limit with an error...
    let got = result_of(&call(&mut ws, request("grow", int(1_000_000))));
    assert_eq!(got.first(), Some(&Value::Bool(false)), "{got:?}");
    let error = got.get(1).and_then(Value::as_str).unwrap_or_default();
    assert!(error.contains("nljson: not enough memory"), "{got:?}");
    let reached = got.get(2).and_then(Value::as_i64).unwrap_or(0);
    assert!((10_000..1_000_000).contains(&reached), "{got:?}");
    // ...and once it is garbage, what it charged is free again, over and over.
    for round in 0..10 {
        let got = result_of(&call(&mut ws, request("grow", int(reached * 2 / 3))));
        assert_eq!(
            got,
            [Value::Bool(true), Value::Int(reached * 2 / 3)],
            "round {round}"
        );
    }
}
