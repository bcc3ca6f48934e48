//! RAW and LAppS connections side by side: each only gets what its protocol allows. A RAW
//! client never agreed to CBOR, and a LAppS client takes CBOR maps only (SPEC sections 3, 4),
//! so the LAppS helpers refuse RAW handlers, raw sends refuse LAppS handlers, and a broadcast
//! reaches only the subscribers that speak its kind.
mod common;
use common::*;
use lapps::lapps_proto::{cbor, Value};
use tungstenite::Message;

fn t(s: &str) -> Value {
    Value::text(s)
}

/// Calls `method(params)` on a LAppS connection: the OONs that came first, and the result.
fn call(ws: &mut Client, method: &str, params: Vec<Value>) -> (Vec<Value>, Vec<Value>) {
    let request = cbor::encode(&Value::Map(vec![
        (t("lapps"), Value::Int(1)),
        (t("method"), t(method)),
        (t("params"), Value::Array(params)),
    ]));
    ws.send(Message::binary(request)).unwrap();
    let mut oons = Vec::new();
    loop {
        let bytes = match ws.read().expect("a message") {
            Message::Binary(b) => b,
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("a LAppS client got {other:?}"),
        };
        let Ok(Value::Map(members)) = cbor::decode(&bytes) else {
            panic!("not a CBOR map: {bytes:02x?}");
        };
        let get = |k: &str| members.iter().find(|(key, _)| *key == t(k)).map(|(_, v)| v);
        match (get("cid"), get("result")) {
            (Some(Value::Int(0)), Some(Value::Array(result))) => return (oons, result.clone()),
            (Some(Value::Int(0)), _) => panic!("an error response: {members:?}"),
            _ => oons.push(Value::Map(members.clone())),
        }
    }
}

/// The RAW `probe` app at /probe and the LAppS `lapps_views` app at /lapps_views, on one
/// worker (frames to different connections leave in the order they were queued).
fn probe_and_lapps_views() -> TestApp {
    start_app(
        &ws_json(1),
        &lapps_json(
            "./tests/apps",
            r#"{ "probe": { "preload": ["bcast"] },
                 "lapps_views": { "protocol": "LAppS", "preload": ["bcast"] } }"#,
        ),
    )
}

#[test]
fn sends_and_broadcasts_reach_only_connections_of_their_protocol() {
    let app = probe_and_lapps_views();
    let mut raw = connect(app.addr, "/probe");
    let mut lapps = connect(app.addr, "/lapps_views");
    let raw_id: f64 = ask(&mut raw, "id").parse().unwrap();
    let (_, who) = call(&mut lapps, "whoami", vec![]);
    let lapps_id = match who[..] {
        [Value::Int(n)] => n as f64,
        [Value::Float(n)] => n,
        _ => panic!("{who:?}"),
    };

    // The LAppS helpers at a RAW handler, and a raw send at a LAppS one: refused.
    let (_, answers) = call(&mut lapps, "cross", vec![Value::Float(raw_id)]);
    let not_lapps = t("nil not a LAppS connection");
    let not_raw = "nil a LAppS connection: use send_response, send_error or send_oon";
    assert_eq!(
        answers,
        vec![
            not_lapps.clone(),
            not_lapps.clone(),
            not_lapps.clone(),
            not_lapps,
            t(not_raw),
            t("false channel 0 is the command channel"),
        ]
    );
    assert_eq!(ask(&mut raw, &format!("stale {lapps_id}")), not_raw);
    // A value that can name no connection is a bad handler to them, as to ws:send.
    let (_, answers) = call(&mut lapps, "cross", vec![Value::Float(-1.0)]);
    assert_eq!(answers[..4], vec![t("nil bad handler"); 4], "{answers:?}");

    // Both subscribed to channel 7 (the LAppS app makes it); an OON reaches the LAppS client only.
    assert_eq!(
        call(&mut lapps, "sub", vec![Value::Int(7)]).1,
        vec![t("true")]
    );
    assert_eq!(ask(&mut raw, "sub 7"), "ok");
    let (oons, n) = call(&mut lapps, "oon_bcast", vec![Value::Int(7)]);
    assert_eq!(n, vec![Value::Int(1)], "recipients");
    assert_eq!(oons.len(), 1, "{oons:?}");
    // A raw broadcast reaches the RAW client only: its first frame since is the broadcast (an
    // OON queued for it before would have come first).
    assert_eq!(ask(&mut raw, "bsend 7 hello"), "hello");
    assert_eq!(text(&mut raw), "n=1");
    // And the LAppS client's next frame is its next answer, not the text.
    let (oons, _) = call(&mut lapps, "whoami", vec![]);
    assert!(oons.is_empty(), "{oons:?}");
}

/// The LAppS helpers and ws:send's value form raise for an argument that is wrong whatever
/// the connection (a result or OON message that is not an array, error data without a CBOR
/// form), at a RAW handler, a
/// stale one and one that never named a connection alike: a programming error, not something
/// `nil, "closed"` may hide until the day the connection is open.
#[test]
fn the_lapps_helpers_raise_for_a_wrong_argument_whatever_the_handler() {
    let app = probe_and_lapps_views();
    let mut raw = connect(app.addr, "/probe");
    let raw_id: f64 = ask(&mut raw, "id").parse().unwrap();
    let mut lapps = connect(app.addr, "/lapps_views");
    let raised = vec![t("raised"); 7];
    let misuse = |lapps: &mut Client, h: f64| call(lapps, "misuse", vec![Value::Float(h)]).1;
    assert_eq!(misuse(&mut lapps, raw_id), raised, "at a RAW handler");
    raw.close(None).unwrap();
    finish_close(raw);
    wait_for("the RAW connection closed", IO_TIMEOUT, || {
        call(&mut lapps, "cross", vec![Value::Float(raw_id)]).1[0] == t("nil closed")
    });
    assert_eq!(misuse(&mut lapps, raw_id), raised, "at a stale handler");
    assert_eq!(misuse(&mut lapps, 0.0), raised, "at handler 0");
    assert_eq!(misuse(&mut lapps, 1e15), raised, "at a handler never given");
}
