use crate::lapps_proto::json::{decode, encode, encode_with, Style};
use crate::lapps_proto::Value;

#[test]
fn object_members_keep_file_order() {
    let v = decode(br#"{"z": 1, "a": [true, null, 1.5, -2], "m": {}}"#).unwrap();
    let Value::Map(m) = &v else { panic!("{v:?}") };
    let keys: Vec<_> = m.iter().map(|(k, _)| k.as_str().unwrap()).collect();
    assert_eq!(keys, ["z", "a", "m"]);
    assert_eq!(
        encode(&v).unwrap(),
        r#"{"z":1,"a":[true,null,1.5,-2],"m":{}}"#
    );
}

#[test]
fn numbers_keep_integer_and_float_forms() {
    assert_eq!(decode(b"18446744073709551615"), Ok(Value::UInt(u64::MAX)));
    assert_eq!(decode(b"-9223372036854775808"), Ok(Value::Int(i64::MIN)));
    assert_eq!(decode(b"1.0"), Ok(Value::Float(1.0)));
    assert_eq!(encode(&Value::Float(1.0)).unwrap(), "1.0");
    assert_eq!(encode(&Value::Float(f64::NAN)).unwrap(), "null");
}

#[test]
fn numbers_read_as_the_nearest_float_and_write_back_to_it() {
    // An integer beyond 64 bits and decimals whose nearest double a fast parser misses by an
    // ulp (found by the json fuzz target): each reads as Rust's correctly rounded parse does,
    // and survives encode/decode.
    for text in [
        "-9223372036854901234567890123",
        "18406744073709551615123",
        "2.2250738585072011e-308",
        "0.30000000000000004",
        "9007199254740993.0",
        "1.7976931348623157e308",
    ] {
        let want: f64 = text.parse().unwrap();
        let got = decode(text.as_bytes()).unwrap();
        assert_eq!(got, Value::Float(want), "{text}");
        assert_eq!(decode(encode(&got).unwrap().as_bytes()), Ok(got), "{text}");
    }
}

#[test]
fn bad_json_and_trailing_text_are_errors() {
    for s in ["", "{", "[1,]", "{\"a\" 1}", "1 2", "nul", "\"\\ud800\""] {
        assert!(decode(s.as_bytes()).is_err(), "{s:?}");
    }
    let deep = "[".repeat(65) + &"]".repeat(65);
    assert!(decode(deep.as_bytes()).is_err());
    let ok = "[".repeat(64) + &"]".repeat(64);
    assert!(decode(ok.as_bytes()).is_ok());
}

#[test]
fn strings_are_escaped_and_pretty_printing_indents() {
    let v = Value::Map(vec![
        (Value::text("s"), Value::text("a\"b\\c\n\u{1}é")),
        (
            Value::Int(7),
            Value::Array(vec![Value::Int(1), Value::Array(vec![])]),
        ),
    ]);
    assert_eq!(
        encode(&v).unwrap(),
        r#"{"s":"a\"b\\c\n\u0001é","7":[1,[]]}"#
    );
    let pretty = encode_with(
        &v,
        Style {
            indent: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        pretty,
        "{\n  \"s\": \"a\\\"b\\\\c\\n\\u0001é\",\n  \"7\": [\n    1,\n    []\n  ]\n}"
    );
    assert_eq!(
        decode(pretty.as_bytes()).unwrap(),
        decode(encode(&v).unwrap().as_bytes()).unwrap()
    );
}

#[test]
fn binary_without_utf8_has_no_json_form_unless_lossy() {
    let v = Value::Bytes(vec![0xff, b'a']);
    assert!(encode(&v).is_err());
    let lossy = Style {
        lossy: true,
        ..Default::default()
    };
    assert_eq!(encode_with(&v, lossy).unwrap(), "\"\u{fffd}a\"");
    let container_key = Value::Map(vec![(Value::Array(vec![]), Value::Null)]);
    assert!(encode(&container_key).is_err());
}
