//! Apps written for the original C++ LAppS, in its forms, run here as they are (SPEC: "names
//! of config keys, Lua callbacks and modules follow the original so that existing LAppS apps
//! and configs carry over"): `bcast` without a `preload` entry in standalone and LAppS
//! services, `nap:usleep` and `nap:nsleep`, and OONs carrying the original's `status = 1`
//! through `ws:send` and `bcast:send` (sent without it, as SPEC section 4's OON has none).
//! The mqr side (nljson messages) is in tests/lua_mqr.rs.
mod common;
use ciborium::Value as Cbor;
use common::*;
use tungstenite::Message;

fn get<'a>(v: &'a Cbor, key: &str) -> Option<&'a Cbor> {
    v.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

fn cid(v: &Cbor) -> Option<i128> {
    get(v, "cid")?.as_integer().map(i128::from)
}

fn first_text(v: &Cbor, key: &str) -> Option<String> {
    get(v, key)?
        .as_array()?
        .first()?
        .as_text()
        .map(str::to_string)
}

fn read_cbor(ws: &mut Client) -> Cbor {
    loop {
        match ws.read().expect("a message") {
            Message::Binary(b) => return ciborium::from_reader(&b[..]).expect("CBOR"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn an_app_in_the_originals_forms_broadcasts_and_pushes_as_it_did_there() {
    // The original's example config gave these two no "bcast" (and the LAppS one nothing).
    let app = start_app(
        &ws_json(1),
        &lapps_json(
            "./tests/apps",
            r#"{ "orig_lapps": { "protocol": "LAppS", "preload": [], "depends": ["orig_ticker"] },
                 "orig_ticker": { "standalone": true, "preload": ["nap"] } }"#,
        ),
    );
    let mut ws = connect(app.addr, "/orig_lapps");
    let mut req = Vec::new();
    ciborium::into_writer(
        &Cbor::Map(vec![
            (Cbor::Text("lapps".into()), Cbor::Integer(1.into())),
            (Cbor::Text("method".into()), Cbor::Text("subscribe".into())),
        ]),
        &mut req,
    )
    .unwrap();
    ws.send(Message::binary(req)).unwrap();
    let (mut answered, mut welcomed, mut ticks) = (false, false, 0);
    while !(answered && welcomed && ticks >= 3) {
        let m = read_cbor(&mut ws);
        match cid(&m) {
            Some(0) => {
                assert_eq!(first_text(&m, "result").as_deref(), Some("ok"), "{m:?}");
                answered = true;
            }
            Some(3) => {
                assert_eq!(first_text(&m, "message").as_deref(), Some("welcome"));
                assert!(
                    get(&m, "status").is_none(),
                    "an OON goes without status: {m:?}"
                );
                welcomed = true;
            }
            Some(5) => {
                let tick = first_text(&m, "message").unwrap_or_default();
                assert!(tick.starts_with("tick "), "{m:?}");
                assert!(
                    get(&m, "status").is_none(),
                    "an OON goes without status: {m:?}"
                );
                ticks += 1;
            }
            _ => panic!("unexpected {m:?}"),
        }
    }
}
