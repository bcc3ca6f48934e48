//! LAppS protocol conformance through the real server, the real Lua `echo_lapps` app and a
//! real WebSocket client: request shapes, every error code, OONs interleaved with responses,
//! and 10,000 pipelined requests answered in order.
mod common;
use ciborium::Value as Cbor;
use common::*;
use std::time::{Duration, Instant};
use tungstenite::Message;

struct App {
    app: Option<lapps::app::App>,
    addr: std::net::SocketAddr,
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(a) = self.app.take() {
            a.shutdown();
        }
    }
}

fn start() -> App {
    let root = env!("CARGO_MANIFEST_DIR");
    let ws = r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 2 } }"#;
    let lapps = format!(
        r#"{{ "directories": {{ "applications": "{root}/lua/apps", "lib": "{root}/lua/lib" }},
             "services": {{
               "echo_lapps": {{ "protocol": "LAppS", "instances": 2, "preload": ["bcast"],
                                "depends": ["time_broadcast"], "max_protocol_errors": 12 }},
               "time_broadcast": {{ "standalone": true, "preload": ["bcast", "nap", "time"] }} }} }}"#
    );
    let cfg = lapps::config::Config::from_strs(
        std::path::Path::new(root),
        ("ws.json", ws),
        ("lapps.json", &lapps),
        std::path::Path::new(root),
    )
    .expect("config");
    let app = lapps::app::App::start(&cfg).expect("app starts");
    let addr = app.local_addrs()[0];
    App {
        app: Some(app),
        addr,
    }
}

fn text(s: &str) -> Cbor {
    Cbor::Text(s.into())
}

fn map(pairs: Vec<(&str, Cbor)>) -> Cbor {
    Cbor::Map(pairs.into_iter().map(|(k, v)| (text(k), v)).collect())
}

fn int(i: i64) -> Cbor {
    Cbor::Integer(i.into())
}

fn cbor(v: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

fn request(method: &str, params: Option<Vec<Cbor>>) -> Vec<u8> {
    let mut m = vec![("lapps", int(1)), ("method", text(method))];
    if let Some(p) = params {
        m.push(("params", Cbor::Array(p)));
    }
    cbor(&map(m))
}

fn get<'a>(v: &'a Cbor, key: &str) -> Option<&'a Cbor> {
    v.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

fn as_i64(v: Option<&Cbor>) -> Option<i64> {
    v.and_then(|v| v.as_integer()).map(|i| i128::from(i) as i64)
}

/// Reads the next CCH message (cid 0), collecting OONs seen on the way.
fn next_response(ws: &mut Client, oons: &mut Vec<Cbor>) -> Cbor {
    loop {
        match ws.read().expect("a message") {
            Message::Binary(b) => {
                let v: Cbor = ciborium::from_reader(&b[..]).expect("server sends CBOR");
                if as_i64(get(&v, "cid")) == Some(0) {
                    return v;
                }
                oons.push(v);
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn error_code(v: &Cbor) -> Option<i64> {
    assert_eq!(
        as_i64(get(v, "status")),
        Some(0),
        "expected an error response: {v:?}"
    );
    as_i64(get(get(v, "error")?, "code"))
}

fn call(ws: &mut Client, bytes: Vec<u8>) -> Cbor {
    ws.send(Message::binary(bytes)).unwrap();
    next_response(ws, &mut Vec::new())
}

#[test]
fn request_with_params_gets_its_result_on_cch() {
    let app = start();
    let mut ws = connect(app.addr, "/echo_lapps");
    let r = call(
        &mut ws,
        request(
            "echo",
            Some(vec![
                text("hello"),
                int(42),
                Cbor::Array(vec![int(1), int(2)]),
            ]),
        ),
    );
    assert_eq!(as_i64(get(&r, "status")), Some(1));
    assert_eq!(
        get(&r, "result"),
        Some(&Cbor::Array(vec![
            text("hello"),
            int(42),
            Cbor::Array(vec![int(1), int(2)])
        ]))
    );
}

#[test]
fn request_without_params_and_string_version_are_accepted() {
    let app = start();
    let mut ws = connect(app.addr, "/echo_lapps");
    let r = call(&mut ws, request("echo", None));
    assert_eq!(get(&r, "result"), Some(&Cbor::Array(vec![])));
    let r = call(
        &mut ws,
        cbor(&map(vec![
            ("lapps", text("1")),
            ("method", text("echo")),
            ("params", Cbor::Array(vec![Cbor::Bytes(vec![0, 255])])),
        ])),
    );
    assert_eq!(
        get(&r, "result"),
        Some(&Cbor::Array(vec![Cbor::Bytes(vec![0, 255])])),
        "byte strings stay byte strings"
    );
}

#[test]
fn values_survive_the_lua_round_trip() {
    let app = start();
    let mut ws = connect(app.addr, "/echo_lapps");
    let params = vec![
        Cbor::Float(1.5),
        int(-7),
        int(1 << 40),
        Cbor::Bool(true),
        Cbor::Null,
        map(vec![("k", text("v"))]),
        Cbor::Map(vec![]),
        Cbor::Array(vec![]),
        text("κόσμε"),
    ];
    let r = call(&mut ws, request("echo", Some(params.clone())));
    assert_eq!(get(&r, "result"), Some(&Cbor::Array(params)));
}

#[test]
fn notification_gets_no_response() {
    let app = start();
    let mut ws = connect(app.addr, "/echo_lapps");
    let note = cbor(&map(vec![
        ("lapps", int(1)),
        ("method", text("echo")),
        ("cid", int(5)),
        ("params", Cbor::Array(vec![int(1)])),
    ]));
    ws.send(Message::binary(note)).unwrap();
    let r = call(&mut ws, request("echo", Some(vec![text("after")])));
    assert_eq!(
        get(&r, "result"),
        Some(&Cbor::Array(vec![text("after")])),
        "the first response answers the request, not the notification"
    );
}

#[test]
fn a_malformed_notification_gets_no_error_response_either() {
    let app = start();
    let mut ws = connect(app.addr, "/echo_lapps");
    for method in ["_reserved", "a.b"] {
        let note = cbor(&map(vec![
            ("lapps", int(1)),
            ("method", text(method)),
            ("cid", int(5)),
        ]));
        ws.send(Message::binary(note)).unwrap();
    }
    // Well-formed CBOR past the decoder's limits (64 levels, 2^20 items in an array), its cid
    // after the params: it does not decode, and is still a notification.
    let mut deep = Cbor::Array(vec![int(1)]);
    for _ in 0..70 {
        deep = Cbor::Array(vec![deep]);
    }
    let long = Cbor::Array(vec![int(0); (1 << 20) + 1]);
    for params in [deep.clone(), long] {
        let note = cbor(&map(vec![
            ("lapps", int(1)),
            ("method", text("echo")),
            ("params", params),
            ("cid", int(5)),
        ]));
        ws.send(Message::binary(note)).unwrap();
    }
    // One that does not decode, its cid given twice (the first no channel).
    let note = cbor(&map(vec![
        ("lapps", int(1)),
        ("method", text("echo")),
        ("cid", int(0)),
        ("params", deep),
        ("cid", int(5)),
    ]));
    ws.send(Message::binary(note)).unwrap();
    // Its cid given twice (the second 0, or the same): a notification all the same.
    for second in [int(0), int(5)] {
        let note = cbor(&map(vec![
            ("lapps", int(1)),
            ("method", text("echo")),
            ("cid", int(5)),
            ("cid", second),
        ]));
        ws.send(Message::binary(note)).unwrap();
    }
    let r = call(&mut ws, request("echo", Some(vec![text("after")])));
    assert_eq!(
        get(&r, "result"),
        Some(&Cbor::Array(vec![text("after")])),
        "an error for a notification would be taken for this call's answer: {r:?}"
    );
}

#[test]
fn every_error_code_is_answered_and_the_connection_keeps_serving() {
    let app = start();
    let mut ws = connect(app.addr, "/echo_lapps");
    ws.send(Message::text("not cbor")).unwrap();
    assert_eq!(
        error_code(&next_response(&mut ws, &mut Vec::new())),
        Some(-32700),
        "text frame"
    );
    assert_eq!(
        error_code(&call(&mut ws, vec![0xff, 0x00, 0x13])),
        Some(-32700),
        "not CBOR"
    );
    assert_eq!(
        error_code(&call(&mut ws, cbor(&Cbor::Array(vec![int(1)])))),
        Some(-32700),
        "not a map"
    );
    assert_eq!(
        error_code(&call(&mut ws, cbor(&map(vec![("method", text("echo"))])))),
        Some(-32600),
        "no lapps"
    );
    assert_eq!(
        error_code(&call(
            &mut ws,
            cbor(&map(vec![("lapps", int(2)), ("method", text("echo"))]))
        )),
        Some(-32600),
        "bad version"
    );
    assert_eq!(
        error_code(&call(
            &mut ws,
            cbor(&map(vec![
                ("lapps", int(1)),
                ("method", text("echo")),
                ("params", int(3))
            ]))
        )),
        Some(-32600),
        "params not an array"
    );
    assert_eq!(
        error_code(&call(
            &mut ws,
            cbor(&map(vec![("lapps", int(1)), ("method", int(3))]))
        )),
        Some(-32600),
        "method not text"
    );
    assert_eq!(
        error_code(&call(&mut ws, request("nope", None))),
        Some(-32601),
        "unknown method"
    );
    assert_eq!(
        error_code(&call(&mut ws, request("_reserved", None))),
        Some(-32601),
        "reserved name"
    );
    assert_eq!(
        error_code(&call(&mut ws, request("add", Some(vec![text("x")])))),
        Some(-32602),
        "invalid params"
    );
    assert_eq!(
        error_code(&call(&mut ws, request("fail", None))),
        Some(-32603),
        "Lua error in the handler"
    );
    let r = call(&mut ws, request("add", Some(vec![int(2), int(3)])));
    assert_eq!(get(&r, "result"), Some(&Cbor::Array(vec![int(5)])));
}

#[test]
fn well_formed_cbor_past_a_limit_is_named_as_such_not_as_invalid() {
    let app = start();
    let mut ws = connect(app.addr, "/echo_lapps");
    let mut deep = Cbor::Array(vec![int(1)]);
    for _ in 0..70 {
        deep = Cbor::Array(vec![deep]);
    }
    let long = Cbor::Array(vec![int(0); (1 << 20) + 1]);
    for (params, why) in [
        (deep, "nesting deeper than 64"),
        (long, "a container with more than 1048576 elements"),
    ] {
        let r = call(&mut ws, request("echo", Some(vec![params])));
        assert_eq!(error_code(&r), Some(-32700), "{why}");
        let message = get(get(&r, "error").unwrap(), "message");
        assert_eq!(
            message.and_then(Cbor::as_text),
            Some(format!("parse error: CBOR past a limit: {why}").as_str())
        );
    }
}

#[test]
fn a_client_that_keeps_sending_garbage_is_closed_with_1003() {
    let app = start();
    let mut s = raw_upgraded(app.addr, "/echo_lapps");
    use std::io::Write;
    for _ in 0..12 {
        s.write_all(&frame(true, 0, 0x2, b"\xff\xff", true))
            .unwrap();
    }
    assert_eq!(
        expect_close_reason(&mut s),
        (Some(1003), "too many malformed messages in a row".into())
    );
}

#[test]
fn calls_to_reserved_names_are_answered_and_never_close_the_connection() {
    // Well-formed messages, answered -32601 like an unknown method: not garbage, so not
    // counted towards the 1003 (max_protocol_errors is 12 here).
    let app = start();
    let mut ws = connect(app.addr, "/echo_lapps");
    for _ in 0..12 {
        assert_eq!(
            error_code(&call(&mut ws, request("_reserved", None))),
            Some(-32601)
        );
    }
    // Nor are errors "in a row" across one: nine, a reserved name, nine more.
    for round in 0..2 {
        for _ in 0..9 {
            assert_eq!(
                error_code(&call(&mut ws, b"\xff\xff".to_vec())),
                Some(-32700)
            );
        }
        if round == 0 {
            assert_eq!(
                error_code(&call(&mut ws, request("_reserved", None))),
                Some(-32601)
            );
        }
    }
    let r = call(&mut ws, request("echo", Some(vec![int(1)])));
    assert_eq!(get(&r, "result"), Some(&Cbor::Array(vec![int(1)])));
}

#[test]
fn oons_interleave_with_responses_which_stay_in_order() {
    let app = start();
    let mut ws = connect(app.addr, "/echo_lapps");
    let mut oons = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seq = 0i64;
    while oons.len() < 3 {
        assert!(Instant::now() < deadline, "no time_broadcast OONs arrived");
        let r = {
            ws.send(Message::binary(request("echo", Some(vec![int(seq)]))))
                .unwrap();
            next_response(&mut ws, &mut oons)
        };
        assert_eq!(get(&r, "result"), Some(&Cbor::Array(vec![int(seq)])));
        seq += 1;
        // Polling interval while waiting for the once-a-second OONs, not synchronisation:
        // requests keep flowing between them without a busy loop of round trips.
        std::thread::sleep(Duration::from_millis(5));
    }
    for o in &oons {
        assert_eq!(as_i64(get(o, "cid")), Some(1001));
        let msg = get(o, "message")
            .and_then(|m| m.as_array())
            .expect("message array");
        assert!(
            as_i64(msg.first()).is_some_and(|t| t > 1_700_000_000_000),
            "{o:?}"
        );
    }
}

/// echo_lapps subscribes a client before running its first request, so one whose first call
/// raised (answered -32603 by the host) gets the time_broadcast stream too.
#[test]
fn a_client_whose_first_call_failed_still_gets_the_oons() {
    let app = start();
    let mut ws = connect(app.addr, "/echo_lapps");
    let r = call(&mut ws, request("fail", None));
    assert_eq!(error_code(&r), Some(-32603));
    // No other request: what comes next is a tick (the read timeout is the guard).
    let tick = loop {
        match ws.read().expect("a time_broadcast OON") {
            Message::Binary(b) => break ciborium::from_reader::<Cbor, _>(&b[..]).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(as_i64(get(&tick, "cid")), Some(1001), "{tick:?}");
}

#[test]
fn ten_thousand_pipelined_requests_are_answered_in_order() {
    let app = start();
    let mut ws = connect(app.addr, "/echo_lapps");
    let n = 10_000i64;
    for i in 0..n {
        ws.write(Message::binary(request("echo", Some(vec![int(i)]))))
            .unwrap();
    }
    ws.flush().unwrap();
    let mut oons = Vec::new();
    for i in 0..n {
        let r = next_response(&mut ws, &mut oons);
        assert_eq!(
            get(&r, "result"),
            Some(&Cbor::Array(vec![int(i)])),
            "response {i}"
        );
    }
}
