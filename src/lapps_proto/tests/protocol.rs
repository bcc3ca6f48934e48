use std::num::NonZeroU64;

use super::hex;
use crate::lapps_proto::cbor::encode;
use crate::lapps_proto::lazy::Doc;
use crate::lapps_proto::protocol::{
    check_doc, encode_oon, encode_response_error, encode_response_ok, parse_inbound,
    validate_outbound, MsgType, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR,
};
use crate::lapps_proto::{Limits, Value};

fn t(s: &str) -> Value {
    Value::text(s)
}

fn map(members: &[(&str, Value)]) -> Value {
    Value::Map(members.iter().map(|(k, v)| (t(k), v.clone())).collect())
}

fn code_of(bytes: &[u8]) -> i64 {
    match parse_inbound(bytes) {
        Ok(m) => panic!("accepted: {m:?}"),
        Err(e) => e.code,
    }
}

#[test]
fn request_hex_from_a_client_is_accepted() {
    // {"lapps": 1, "method": "echo", "params": ["hi"]}
    let msg = parse_inbound(&hex(
        "a3 656c61707073 01 666d6574686f64 646563686f 66706172616d73 81 626869",
    ))
    .unwrap();
    assert_eq!(msg.msg_type(), MsgType::RequestWithParams);
    assert_eq!(msg.method(), "echo");
    assert_eq!(msg.cid(), None);
    assert_eq!(msg.params(), Some(&[t("hi")][..]));
}

#[test]
fn message_types_follow_the_original() {
    let one = Value::Int(1);
    let p = Value::Array(vec![Value::Int(5)]);
    let cases = [
        (
            map(&[("lapps", one.clone()), ("method", t("m"))]),
            MsgType::Request,
        ),
        (
            map(&[
                ("lapps", one.clone()),
                ("method", t("m")),
                ("params", p.clone()),
            ]),
            MsgType::RequestWithParams,
        ),
        // An empty params array counts as none, as in the original.
        (
            map(&[
                ("lapps", one.clone()),
                ("method", t("m")),
                ("params", Value::Array(vec![])),
            ]),
            MsgType::Request,
        ),
        (
            map(&[
                ("lapps", one.clone()),
                ("method", t("m")),
                ("cid", Value::Int(3)),
            ]),
            MsgType::Notification,
        ),
        (
            map(&[
                ("lapps", one.clone()),
                ("method", t("m")),
                ("cid", Value::Int(3)),
                ("params", p),
            ]),
            MsgType::NotificationWithParams,
        ),
    ];
    for (v, want) in cases {
        let got = parse_inbound(&encode(&v)).unwrap();
        assert_eq!(got.msg_type(), want, "{v:?}");
        assert_eq!(got.msg_type().is_notification(), got.cid().is_some());
        assert_eq!(got.message(), &v);
    }
    let n = parse_inbound(&encode(&map(&[
        ("lapps", Value::Int(1)),
        ("method", t("m")),
        ("cid", Value::UInt(u64::MAX)),
    ])))
    .unwrap();
    assert_eq!(n.cid(), NonZeroU64::new(u64::MAX));
    // A channel sent as an integral float is one up to the same ceiling (a JavaScript or Lua
    // client may hand one over so), parsed by the full check and the in-place one alike.
    for (f, want) in [
        (2f64.powi(63), NonZeroU64::new(1 << 63)),
        (2f64.powi(64) - 2048.0, NonZeroU64::new(u64::MAX - 2047)),
    ] {
        let bytes = encode(&map(&[
            ("lapps", Value::Int(1)),
            ("method", t("m")),
            ("cid", Value::Float(f)),
        ]));
        assert_eq!(parse_inbound(&bytes).unwrap().cid(), want, "{f}");
        let doc = Doc::parse(&bytes, &Limits::default()).unwrap();
        assert!(
            check_doc(&doc).is_ok_and(|d| d.msg_type.is_notification()),
            "{f}"
        );
    }
    let past = encode(&map(&[
        ("lapps", Value::Int(1)),
        ("method", t("m")),
        ("cid", Value::Float(2f64.powi(64))),
    ]));
    assert_eq!(code_of(&past), INVALID_REQUEST);
}

#[test]
fn lapps_version_is_one_as_number_or_text() {
    for ok in [Value::Int(1), t("1"), Value::Float(1.0)] {
        let v = map(&[("lapps", ok.clone()), ("method", t("m"))]);
        assert!(parse_inbound(&encode(&v)).is_ok(), "{ok:?}");
    }
    for bad in [
        Value::Int(2),
        t("2"),
        t("1.0"),
        Value::Null,
        Value::Float(1.5),
        Value::Bool(true),
    ] {
        let v = map(&[("lapps", bad.clone()), ("method", t("m"))]);
        assert_eq!(code_of(&encode(&v)), INVALID_REQUEST, "{bad:?}");
    }
    assert_eq!(
        code_of(&encode(&map(&[("method", t("m"))]))),
        INVALID_REQUEST
    );
}

#[test]
fn parse_errors_are_32700() {
    assert_eq!(code_of(&hex("ff")), PARSE_ERROR); // not CBOR
    assert_eq!(code_of(&hex("")), PARSE_ERROR); // empty message
    assert_eq!(code_of(&hex("8101")), PARSE_ERROR); // an array, not a map
    assert_eq!(code_of(&hex("6161")), PARSE_ERROR); // a string
    assert_eq!(code_of(&hex("a0 00")), PARSE_ERROR); // trailing byte
    assert_eq!(code_of(&hex("a1 6161")), PARSE_ERROR); // truncated map
}

#[test]
fn method_rules() {
    let with = |m: Value| encode(&map(&[("lapps", Value::Int(1)), ("method", m)]));
    assert_eq!(
        code_of(&encode(&map(&[("lapps", Value::Int(1))]))),
        INVALID_REQUEST
    );
    assert_eq!(code_of(&with(Value::Int(5))), INVALID_REQUEST);
    assert_eq!(
        code_of(&with(Value::Bytes(b"echo".to_vec()))),
        INVALID_REQUEST
    );
    assert_eq!(code_of(&with(t(""))), INVALID_REQUEST);
    assert_eq!(code_of(&with(t("a.b"))), INVALID_REQUEST);
    assert_eq!(code_of(&with(t("_internal"))), METHOD_NOT_FOUND);
    // {"lapps":1,"method":"a","method":"b"}: ambiguous.
    assert_eq!(
        code_of(&hex(
            "a3 656c61707073 01 666d6574686f64 6161 666d6574686f64 6162"
        )),
        INVALID_REQUEST
    );
}

#[test]
fn params_and_cid_rules() {
    let with = |k: &str, v: Value| {
        encode(&map(&[
            ("lapps", Value::Int(1)),
            ("method", t("m")),
            (k, v),
        ]))
    };
    assert_eq!(code_of(&with("params", t("x"))), INVALID_REQUEST);
    assert_eq!(
        code_of(&with("params", Value::Map(vec![]))),
        INVALID_REQUEST
    );
    assert_eq!(code_of(&with("params", Value::Null)), INVALID_REQUEST);
    for bad in [
        Value::Int(0),
        Value::Int(-1),
        t("1"),
        Value::Float(1.5),
        Value::Null,
    ] {
        assert_eq!(
            code_of(&with("cid", bad.clone())),
            INVALID_REQUEST,
            "{bad:?}"
        );
    }
}

#[test]
fn response_ok_is_byte_exact() {
    // {"status": 1, "cid": 0, "result": []}
    assert_eq!(
        encode_response_ok(&[]),
        hex("a3 66737461747573 01 63636964 00 66726573756c74 80")
    );
    // {"status": 1, "cid": 0, "result": ["hi", 1000]}
    assert_eq!(
        encode_response_ok(&[t("hi"), Value::Int(1000)]),
        hex("a3 66737461747573 01 63636964 00 66726573756c74 82 626869 1903e8")
    );
}

#[test]
fn response_error_is_byte_exact() {
    // {"status": 0, "cid": 0, "error": {"code": -32600, "message": "bad"}}
    assert_eq!(
        encode_response_error(-32600, "bad", None),
        hex("a3 66737461747573 00 63636964 00 656572726f72 a2 64636f6465 397f57 676d657373616765 63626164")
    );
    // ... with "data": null
    assert_eq!(
        encode_response_error(-32603, "", Some(&Value::Null)),
        hex("a3 66737461747573 00 63636964 00 656572726f72 a3 64636f6465 397f5a 676d657373616765 60 6464617461 f6")
    );
}

#[test]
fn oon_is_byte_exact() {
    // {"cid": 5, "message": ["tick"]}
    assert_eq!(
        encode_oon(NonZeroU64::new(5).unwrap(), &[t("tick")]),
        hex("a2 63636964 05 676d657373616765 81 647469636b")
    );
    // cid beyond i64 stays an unsigned integer
    assert_eq!(
        encode_oon(NonZeroU64::new(u64::MAX).unwrap(), &[]),
        hex("a2 63636964 1bffffffffffffffff 676d657373616765 80")
    );
}

#[test]
fn outbound_shapes_are_checked_and_canonicalised() {
    let ok = map(&[
        ("result", Value::Array(vec![Value::Int(1)])),
        ("cid", Value::Int(0)),
        ("status", Value::Int(1)),
    ]);
    assert_eq!(
        validate_outbound(&ok),
        Ok(encode_response_ok(&[Value::Int(1)]))
    );
    // An empty Lua table arrives as an empty map; it is an empty result.
    let empty = map(&[
        ("cid", Value::Int(0)),
        ("status", Value::Int(1)),
        ("result", Value::Map(vec![])),
    ]);
    assert_eq!(validate_outbound(&empty), Ok(encode_response_ok(&[])));
    let err = map(&[
        ("cid", Value::Int(0)),
        ("status", Value::Int(0)),
        (
            "error",
            map(&[
                ("code", Value::Int(-32602)),
                ("message", t("no")),
                ("data", t("d")),
            ]),
        ),
    ]);
    assert_eq!(
        validate_outbound(&err),
        Ok(encode_response_error(-32602, "no", Some(&t("d"))))
    );
    let oon = map(&[
        ("cid", Value::Float(7.0)),
        ("message", Value::Array(vec![t("x")])),
        ("lapps", Value::Int(1)),
    ]);
    assert_eq!(
        validate_outbound(&oon),
        Ok(encode_oon(NonZeroU64::new(7).unwrap(), &[t("x")]))
    );
    // The original's OON form, with `status = 1`: the same bytes, without it.
    let original = map(&[
        ("status", Value::Int(1)),
        ("cid", Value::Int(7)),
        ("message", Value::Array(vec![t("x")])),
    ]);
    assert_eq!(
        validate_outbound(&original),
        Ok(encode_oon(NonZeroU64::new(7).unwrap(), &[t("x")]))
    );
    // Past 2^53 a Lua number is a float; up to 2^64 it still names a channel.
    let far = map(&[
        ("cid", Value::Float(2f64.powi(63))),
        ("message", Value::Array(vec![])),
    ]);
    assert_eq!(
        validate_outbound(&far),
        Ok(encode_oon(NonZeroU64::new(1 << 63).unwrap(), &[]))
    );

    let e = validate_outbound(&map(&[
        ("cid", Value::Int(3)),
        ("status", Value::Int(0)),
        (
            "error",
            map(&[("code", Value::Int(1)), ("message", t("m"))]),
        ),
    ]));
    assert_eq!(
        e,
        Err("status 0 is an error response, which goes on cid 0, not cid 3".into())
    );
    let bad = [
        Value::Array(vec![]),
        map(&[("status", Value::Int(1)), ("result", Value::Array(vec![]))]),
        map(&[
            ("cid", Value::Int(0)),
            ("status", Value::Int(2)),
            ("result", Value::Array(vec![])),
        ]),
        map(&[
            ("cid", Value::Int(0)),
            ("status", Value::Int(1)),
            ("result", t("x")),
        ]),
        map(&[("cid", Value::Int(0)), ("status", Value::Int(1))]),
        map(&[
            ("cid", Value::Int(0)),
            ("status", Value::Int(0)),
            ("error", map(&[("message", t("m"))])),
        ]),
        map(&[
            ("cid", Value::Int(0)),
            ("status", Value::Int(0)),
            ("error", map(&[("code", Value::Int(1))])),
        ]),
        map(&[
            ("cid", Value::Int(0)),
            ("status", Value::Int(0)),
            (
                "error",
                map(&[
                    ("code", Value::Int(1)),
                    ("message", t("m")),
                    ("x", Value::Null),
                ]),
            ),
        ]),
        map(&[
            ("cid", Value::Int(3)),
            ("status", Value::Int(0)),
            ("message", Value::Array(vec![])),
        ]),
        map(&[
            ("cid", Value::Int(3)),
            ("status", Value::Int(1)),
            ("result", Value::Array(vec![])),
            ("message", Value::Array(vec![])),
        ]),
        map(&[
            ("cid", Value::Int(3)),
            ("message", map(&[("a", Value::Int(1))])),
        ]),
        map(&[("cid", Value::Int(3))]),
        map(&[("cid", Value::Int(-3)), ("message", Value::Array(vec![]))]),
        map(&[("cid", Value::Int(0)), ("message", Value::Array(vec![]))]),
        map(&[
            ("cid", Value::Int(3)),
            ("message", Value::Array(vec![])),
            ("extra", Value::Int(1)),
        ]),
    ];
    for v in bad {
        let e = validate_outbound(&v);
        assert!(e.is_err(), "{v:?} accepted");
        assert!(!e.unwrap_err().is_empty());
    }
}

#[test]
fn committed_fuzz_seeds_mean_what_their_names_say() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/cbor");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let bytes = std::fs::read(&path).unwrap();
        let decoded = crate::lapps_proto::cbor::decode(&bytes);
        if name.starts_with("valid_") {
            assert!(
                parse_inbound(&bytes).is_ok(),
                "{name}: {:?}",
                parse_inbound(&bytes)
            );
        } else if name.starts_with("response_") || name == "oon" {
            assert!(validate_outbound(&decoded.unwrap()).is_ok(), "{name}");
        } else if name.starts_with("garbage_") || name == "deep" {
            assert!(decoded.is_err(), "{name}");
        } else {
            assert!(decoded.is_ok(), "{name}: {decoded:?}");
        }
        seen += 1;
    }
    assert!(seen >= 10);
}

#[test]
fn responses_are_told_from_oons_by_their_encoding() {
    use crate::lapps_proto::protocol::is_response;
    assert!(is_response(&encode_response_ok(&[])));
    assert!(is_response(&encode_response_ok(&[t("x")])));
    assert!(is_response(&encode_response_error(-32000, "e", None)));
    assert!(is_response(&encode_response_error(
        -32000,
        "e",
        Some(&t("d"))
    )));
    let oon = encode_oon(NonZeroU64::new(7).unwrap(), &[t("status")]);
    assert!(!is_response(&oon));
    assert!(!is_response(b""));
}

#[test]
fn a_member_named_by_a_byte_string_key_is_checked_like_its_text_form() {
    use crate::lapps_proto::protocol::parse_inbound_in_place;
    // {"lapps": 1, h'6d6574686f64': "_admin", "method": "echo"}: two members named method.
    let bytes = encode(&Value::Map(vec![
        (t("lapps"), Value::Int(1)),
        (Value::Bytes(b"method".to_vec()), t("_admin")),
        (t("method"), t("echo")),
    ]));
    for e in [
        parse_inbound(&bytes).unwrap_err(),
        parse_inbound_in_place(&bytes).unwrap_err(),
    ] {
        assert_eq!(e.code, INVALID_REQUEST, "{e}");
        assert!(e.message.contains("'method' appears twice"), "{e}");
    }
    // Alone, the byte-string-keyed method is read, and its reserved name refused.
    let bytes = encode(&Value::Map(vec![
        (t("lapps"), Value::Int(1)),
        (Value::Bytes(b"method".to_vec()), t("_admin")),
    ]));
    assert_eq!(parse_inbound(&bytes).unwrap_err().code, METHOD_NOT_FOUND);
    assert_eq!(
        parse_inbound_in_place(&bytes).unwrap_err().code,
        METHOD_NOT_FOUND
    );
}

#[test]
fn errors_in_a_client_notification_are_marked_as_such() {
    use crate::lapps_proto::protocol::parse_inbound_in_place;
    let with = |members: Vec<(Value, Value)>| encode(&Value::Map(members));
    let lapps = || (t("lapps"), Value::Int(1));
    for (bytes, notification) in [
        (
            with(vec![
                lapps(),
                (t("method"), t("_x")),
                (t("cid"), Value::Int(5)),
            ]),
            true,
        ),
        (
            with(vec![
                lapps(),
                (t("method"), t("a.b")),
                (t("cid"), Value::Int(5)),
            ]),
            true,
        ),
        (
            with(vec![
                lapps(),
                (t("method"), t("m")),
                (t("params"), Value::Int(1)),
                (t("cid"), Value::Int(5)),
            ]),
            true,
        ),
        (
            with(vec![(t("method"), t("m")), (t("cid"), Value::Int(5))]),
            true,
        ),
        (with(vec![lapps(), (t("method"), t("_x"))]), false),
        (
            with(vec![
                lapps(),
                (t("method"), t("_x")),
                (t("cid"), Value::Int(0)),
            ]),
            false,
        ),
        // A cid given twice: still a notification when either names a channel (the client
        // counts no answer for it), as a byte-string key too; not when neither does.
        (
            with(vec![
                lapps(),
                (t("method"), t("_x")),
                (t("cid"), Value::Int(5)),
                (t("cid"), Value::Int(6)),
            ]),
            true,
        ),
        (
            with(vec![
                lapps(),
                (t("method"), t("m")),
                (t("cid"), Value::Int(0)),
                (Value::Bytes(b"cid".to_vec()), Value::Int(6)),
            ]),
            true,
        ),
        (
            with(vec![(t("cid"), Value::Int(5)), (t("cid"), Value::Int(5))]),
            true,
        ),
        // Text keys only (the in-place check's fast path): the channel second.
        (
            with(vec![
                lapps(),
                (t("method"), t("m")),
                (t("cid"), Value::Int(0)),
                (t("cid"), Value::Int(6)),
            ]),
            true,
        ),
        (
            with(vec![
                lapps(),
                (t("method"), t("m")),
                (t("cid"), Value::Int(0)),
                (t("cid"), t("x")),
            ]),
            false,
        ),
    ] {
        let e = parse_inbound(&bytes).unwrap_err();
        assert_eq!(e.notification, notification, "{e}");
        assert_eq!(parse_inbound_in_place(&bytes).unwrap_err(), e);
    }
}

/// A reserved name (-32601) in a request whose members are malformed is an invalid request
/// (-32600): JSON-RPC 2.0 answers "method not found" only for an otherwise valid request.
#[test]
fn a_malformed_request_with_a_reserved_name_is_an_invalid_request() {
    use crate::lapps_proto::protocol::parse_inbound_in_place;
    let bad_params = encode(&map(&[
        ("lapps", Value::Int(1)),
        ("method", t("_x")),
        ("params", Value::Int(5)),
    ]));
    let bad_cid = encode(&map(&[
        ("lapps", Value::Int(1)),
        ("method", t("_x")),
        ("cid", t("a")),
    ]));
    let params_twice = encode(&map(&[
        ("lapps", Value::Int(1)),
        ("method", t("_x")),
        ("params", Value::Array(vec![])),
        ("params", Value::Array(vec![])),
    ]));
    for bytes in [bad_params, bad_cid, params_twice] {
        assert_eq!(code_of(&bytes), INVALID_REQUEST);
        assert_eq!(
            parse_inbound_in_place(&bytes).unwrap_err().code,
            INVALID_REQUEST
        );
    }
    let well_formed = encode(&map(&[
        ("lapps", Value::Int(1)),
        ("method", t("_x")),
        ("params", Value::Array(vec![Value::Int(1)])),
    ]));
    assert_eq!(code_of(&well_formed), METHOD_NOT_FOUND);
    assert_eq!(
        parse_inbound_in_place(&well_formed).unwrap_err().code,
        METHOD_NOT_FOUND
    );
}
