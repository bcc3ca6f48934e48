use proptest::prelude::*;

use super::hex;
use crate::lapps_proto::cbor::{decode, decode_with, encode};
use crate::lapps_proto::{Limits, Value};

fn t(s: &str) -> Value {
    Value::text(s)
}

#[test]
fn rfc8949_appendix_a_examples_decode() {
    let cases: Vec<(&str, Value)> = vec![
        ("00", Value::Int(0)),
        ("17", Value::Int(23)),
        ("1818", Value::Int(24)),
        ("1903e8", Value::Int(1000)),
        ("1b000000e8d4a51000", Value::Int(1_000_000_000_000)),
        ("1bffffffffffffffff", Value::UInt(u64::MAX)),
        ("20", Value::Int(-1)),
        ("3903e7", Value::Int(-1000)),
        ("3b7fffffffffffffff", Value::Int(i64::MIN)),
        // -2^64 has no integer form here: nearest float.
        ("3bffffffffffffffff", Value::Float(-18446744073709551616.0)),
        // Bignum 2^64 (tag 2): too big for u64, nearest float.
        (
            "c249010000000000000000",
            Value::Float(18446744073709551616.0),
        ),
        ("c24105", Value::Int(5)),
        ("f93e00", Value::Float(1.5)),
        ("fa47c35000", Value::Float(100000.0)),
        ("fb3ff199999999999a", Value::Float(1.1)),
        ("f97c00", Value::Float(f64::INFINITY)),
        ("fa7f800000", Value::Float(f64::INFINITY)),
        ("f9fc00", Value::Float(f64::NEG_INFINITY)),
        ("f4", Value::Bool(false)),
        ("f5", Value::Bool(true)),
        ("f6", Value::Null),
        ("f7", Value::Null),
        // Tags are dropped, the tagged item kept.
        (
            "c074323031332d30332d32315432303a30343a30305a",
            t("2013-03-21T20:04:00Z"),
        ),
        ("c11a514b67b0", Value::Int(1363896240)),
        (
            "d82076687474703a2f2f7777772e6578616d706c652e636f6d",
            t("http://www.example.com"),
        ),
        ("4401020304", Value::Bytes(vec![1, 2, 3, 4])),
        ("62c3bc", t("\u{fc}")),
        ("80", Value::Array(vec![])),
        ("a0", Value::Map(vec![])),
        (
            "a201020304",
            Value::Map(vec![
                (Value::Int(1), Value::Int(2)),
                (Value::Int(3), Value::Int(4)),
            ]),
        ),
        // Indefinite lengths.
        ("5f42010243030405ff", Value::Bytes(vec![1, 2, 3, 4, 5])),
        ("7f657374726561646d696e67ff", t("streaming")),
        ("9fff", Value::Array(vec![])),
        (
            "9f018202039f0405ffff",
            Value::Array(vec![
                Value::Int(1),
                Value::Array(vec![Value::Int(2), Value::Int(3)]),
                Value::Array(vec![Value::Int(4), Value::Int(5)]),
            ]),
        ),
        (
            "bf61610161629f0203ffff",
            Value::Map(vec![
                (t("a"), Value::Int(1)),
                (t("b"), Value::Array(vec![Value::Int(2), Value::Int(3)])),
            ]),
        ),
    ];
    for (h, want) in cases {
        assert_eq!(decode(&hex(h)), Ok(want), "{h}");
    }
}

#[test]
fn nan_is_kept() {
    for h in ["f97e00", "fa7fc00000", "fb7ff8000000000000"] {
        match decode(&hex(h)) {
            Ok(Value::Float(f)) => assert!(f.is_nan(), "{h}"),
            other => panic!("{h}: {other:?}"),
        }
    }
}

#[test]
fn malformed_inputs_are_errors() {
    for h in [
        "",         // nothing
        "0000",     // trailing bytes after the item
        "ff",       // break outside an indefinite item
        "1c",       // reserved additional info
        "18",       // truncated argument
        "62c3",     // text shorter than declared
        "62fffe",   // text that is not UTF-8
        "f0",       // unassigned simple value
        "9f01",     // indefinite array without break
        "a1 01",    // map without value
        "5f 01 ff", // indefinite bytes with a non-bytes chunk
        "c0",       // tag without item
    ] {
        assert!(decode(&hex(h)).is_err(), "{h:?} should not decode");
    }
}

#[test]
fn errors_say_malformed_invalid_or_past_a_limit_as_rfc_8949_tells_them_apart() {
    let why = |h: &str| decode(&hex(h)).unwrap_err().to_string();
    for (h, said) in [
        (
            "82ff01",
            "malformed CBOR at byte 1: a break (0xff) where an item must be",
        ),
        (
            "bf6161ff",
            "malformed CBOR at byte 3: a break (0xff) where an item must be",
        ),
        (
            "c1ff",
            "malformed CBOR at byte 1: a break (0xff) where an item must be",
        ),
        (
            "fc",
            "malformed CBOR at byte 0: reserved additional information 28",
        ),
        (
            "7c",
            "malformed CBOR at byte 0: reserved additional information 28",
        ),
        (
            "1f",
            "malformed CBOR at byte 0: an indefinite length on an integer or a tag",
        ),
        (
            "f818",
            "malformed CBOR at byte 0: a simple value below 32 written in two bytes",
        ),
        (
            "f8ff",
            "invalid CBOR at byte 0: unassigned simple value 255",
        ),
        ("f0", "invalid CBOR at byte 0: unassigned simple value 16"),
        (
            "c26161",
            "invalid CBOR at byte 1: tag 2 (a bignum) on something other than a byte string",
        ),
        (
            "d80301",
            "invalid CBOR at byte 2: tag 3 (a bignum) on something other than a byte string",
        ),
        (
            "c350ffffffffffffffffffffffffffffffff",
            "CBOR past a limit: a negative bignum below -2^127",
        ),
    ] {
        assert_eq!(why(h), said, "{h}");
        // The build-free walk of LAppS requests says the same.
        let walked = crate::lapps_proto::cbor_de::validate(&hex(h), &Limits::default());
        assert_eq!(walked.unwrap_err().to_string(), said, "{h} walked");
    }
    let tags = "c1".repeat(200) + "01";
    assert_eq!(why(&tags), "CBOR past a limit: tags nested too deep");
}

#[test]
fn nesting_beyond_the_limit_is_refused() {
    let limits = Limits::default();
    let mut ok = vec![0x81u8; limits.max_depth - 1];
    ok.push(0x80);
    assert!(decode(&ok).is_ok(), "depth {} must pass", limits.max_depth);
    let mut deep = vec![0x81u8; limits.max_depth];
    deep.push(0x80);
    assert!(decode(&deep).is_err());
    // A bomb far deeper than any stack: indefinite arrays, maps and tags.
    for opener in [0x9fu8, 0xbf, 0xc6, 0x81] {
        let bomb = vec![opener; 200_000];
        assert!(decode(&bomb).is_err(), "{opener:#x}");
    }
}

#[test]
fn huge_declared_lengths_fail_without_allocating() {
    // Each declares about 2^32 or 2^64 elements/bytes in a few bytes; if the decoder sized a
    // buffer from the header this test would abort on allocation failure.
    for h in [
        "9bffffffffffffffff",
        "bbffffffffffffffff",
        "5bffffffffffffffff",
        "7bffffffffffffffff",
        "5a ffffffff 00",
        "7a ffffffff 61",
        "9a ffffffff 00",
        "5f 5bffffffffffffffff ff",
    ] {
        assert!(decode(&hex(h)).is_err(), "{h}");
    }
}

#[test]
fn container_and_total_item_limits() {
    let limits = Limits {
        max_container_len: 3,
        max_total_items: 10,
        ..Limits::default()
    };
    assert!(decode_with(&hex("83010203"), &limits).is_ok());
    assert!(decode_with(&hex("8401020304"), &limits).is_err());
    assert!(decode_with(&hex("9f01020304ff"), &limits).is_err());
    assert!(decode_with(&hex("a4 0101 0202 0303 0404"), &limits).is_err());
    // 3 arrays of 3 plus the outer one: 13 values > 10.
    assert!(decode_with(&hex("83 83010203 83010203 83010203"), &limits).is_err());
    let small = Limits {
        max_input: 4,
        ..Limits::default()
    };
    assert!(decode_with(&hex("83010203"), &small).is_ok());
    assert!(decode_with(&hex("8401020304"), &small).is_err());
}

#[test]
fn encoding_uses_shortest_integer_heads_and_f64() {
    let cases: Vec<(Value, &str)> = vec![
        (Value::Int(0), "00"),
        (Value::Int(23), "17"),
        (Value::Int(24), "1818"),
        (Value::Int(255), "18ff"),
        (Value::Int(256), "190100"),
        (Value::Int(65535), "19ffff"),
        (Value::Int(65536), "1a00010000"),
        (Value::Int(u32::MAX as i64), "1affffffff"),
        (Value::Int(u32::MAX as i64 + 1), "1b0000000100000000"),
        (Value::UInt(u64::MAX), "1bffffffffffffffff"),
        (Value::Int(-1), "20"),
        (Value::Int(-24), "37"),
        (Value::Int(-25), "3818"),
        (Value::Int(-1000), "3903e7"),
        (Value::Int(i64::MIN), "3b7fffffffffffffff"),
        (Value::Float(1.5), "fb3ff8000000000000"),
        (Value::Null, "f6"),
        (Value::Bool(true), "f5"),
        (t("a"), "6161"),
        (Value::Bytes(vec![1, 2]), "420102"),
        (
            Value::Map(vec![(t("a"), Value::Array(vec![Value::Int(1)]))]),
            "a1616181 01",
        ),
    ];
    for (v, h) in cases {
        assert_eq!(encode(&v), hex(h), "{v:?}");
    }
}

pub(crate) fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(Value::UInt),
        any::<u64>().prop_map(|b| Value::Float(f64::from_bits(b))),
        ".{0,12}".prop_map(Value::Text),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((inner.clone(), inner), 0..6).prop_map(Value::Map),
        ]
    })
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(v in arb_value()) {
        prop_assert_eq!(decode(&encode(&v)), Ok(v));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_reencode_stably(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(v) = decode(&bytes) {
            prop_assert_eq!(decode(&encode(&v)), Ok(v));
        }
    }
}

/// Compares the decoder with the ciborium-based one on `bytes`: the same answer (value, or
/// refusal) for everything both understand alike.
fn same_as_ciborium(bytes: &[u8]) -> Result<(), TestCaseError> {
    let limits = Limits::default();
    let ours = decode_with(bytes, &limits);
    let theirs = crate::lapps_proto::cbor::decode_ciborium_with(bytes, &limits);
    if let (Err(e), Ok(_)) = (&ours, &theirs) {
        if crate::lapps_proto::cbor::stricter_than_ciborium(bytes, e) {
            return Ok(());
        }
    }
    prop_assert_eq!(
        ours.is_ok(),
        theirs.is_ok(),
        "{:02x?}: {:?} vs {:?}",
        bytes,
        ours,
        theirs
    );
    if let (Ok(a), Ok(b)) = (ours, theirs) {
        prop_assert_eq!(a, b);
    }
    validate_agrees(bytes)
}

/// `cbor_de::validate` (the build-free walk LAppS requests go through) gives the decoder's
/// verdict on non-empty `bytes`: the same error text, or Ok with `canonical` telling whether
/// re-encoding gives the same bytes.
fn validate_agrees(bytes: &[u8]) -> Result<(), TestCaseError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let limits = Limits::default();
    let checked = crate::lapps_proto::cbor_de::validate(bytes, &limits);
    match decode_with(bytes, &limits) {
        Ok(v) => prop_assert_eq!(checked, Ok(encode(&v) == bytes), "{:02x?}", bytes),
        Err(e) => prop_assert_eq!(checked, Err(e), "{:02x?}", bytes),
    }
    Ok(())
}

#[test]
fn one_byte_heads_read_as_ciborium_reads_them() {
    for initial in 0..=255u8 {
        let byte = [initial];
        let mut pulled = ciborium_ll::Decoder::from(&byte[..]);
        let theirs = match pulled.pull() {
            Ok(h) if pulled.offset() == 1 => Some(h),
            _ => None,
        };
        let ours = crate::lapps_proto::cbor_de::one_byte_header(initial);
        // Every head whose argument is in its first byte (indefinite lengths and the break
        // are left to ciborium-ll).
        let expected = theirs.filter(|_| initial & 0x1f < 24);
        assert_eq!(ours, expected, "{initial:#04x}");
    }
}

#[test]
fn validation_agrees_with_decoding_on_limits() {
    let deep = [&[0x81u8; 70][..], &[0x01]].concat();
    let mut wide = vec![0x99, 0x01, 0x00];
    wide.extend(std::iter::repeat_n(0x00, 256));
    for bytes in [deep, wide] {
        for limits in [
            Limits::default(),
            Limits {
                max_container_len: 100,
                max_total_items: 50,
                ..Limits::default()
            },
        ] {
            let checked = crate::lapps_proto::cbor_de::validate(&bytes, &limits);
            let decoded = decode_with(&bytes, &limits).map(|_| true);
            assert_eq!(checked, decoded);
        }
    }
}

proptest! {
    #[test]
    fn decoder_agrees_with_ciborium_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..48)
    ) {
        same_as_ciborium(&bytes)?;
    }

    #[test]
    fn decoder_agrees_with_ciborium_on_damaged_encodings(
        v in arb_value(), at in any::<prop::sample::Index>(), byte in any::<u8>()
    ) {
        let mut bytes = encode(&v);
        same_as_ciborium(&bytes)?;
        let i = at.index(bytes.len());
        bytes[i] = byte;
        same_as_ciborium(&bytes)?;
    }
}

#[test]
fn decoder_agrees_with_ciborium_on_tags_bignums_and_chunks() {
    for h in [
        "c249010000000000000000",
        "c34100",
        "c350ffffffffffffffffffffffffffffffff",
        "c3507fffffffffffffffffffffffffffffff",
        "c25100000000000000000000000000000001ff",
        "c2 5f 41 01 ff",
        "c6c6c6 01",
        "7f 61 61 62 c3bc ff",
        "f9 7e01",
        "f9 fe00",
        "f9 0001",
        "f8 20",
        "d9d9f7 83 01 02 03",
    ] {
        same_as_ciborium(&hex(h)).unwrap();
    }
}

#[test]
fn decoder_agrees_with_ciborium_on_the_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/cbor");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        same_as_ciborium(&bytes).unwrap();
        seen += 1;
    }
    assert!(seen > 0);
}

#[test]
fn nested_indefinite_string_chunks_are_refused_where_ciborium_accepts_them() {
    // RFC 8949 section 3.2.3: the chunks of an indefinite-length string are definite strings.
    // The fuzz target's input, and its smallest form.
    let found = [
        0xbf, 0x81, 0x82, 0x27, 0x27, 0x27, 0x27, 0x27, 0x27, 0x81, 0x81, 0x7f, 0x7f, 0xff, 0xff,
        0xff,
    ];
    for bytes in [
        &found[..],
        &[0x7f, 0x7f, 0xff, 0xff],
        &[0x5f, 0x5f, 0xff, 0xff],
    ] {
        let limits = Limits::default();
        let e = decode_with(bytes, &limits).expect_err("ill-formed");
        assert!(crate::lapps_proto::cbor::decode_ciborium_with(bytes, &limits).is_ok());
        assert!(
            crate::lapps_proto::cbor::stricter_than_ciborium(bytes, &e),
            "{e}"
        );
    }
    // A different refusal is not excused.
    let e = decode_with(&[0x7f, 0x61], &Limits::default()).expect_err("truncated");
    assert!(!crate::lapps_proto::cbor::stricter_than_ciborium(
        &[0x7f, 0x61],
        &e
    ));
}
