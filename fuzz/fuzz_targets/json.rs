//! Fuzzes the JSON decoder behind `nljson.decode` (apps decode text their peers sent): no input
//! may panic; what serde_json itself refuses is refused (our limits refuse more: nesting,
//! counts, size); and what decodes re-encodes, compact and pretty, to text that decodes to the
//! same value (integers stay integers, floats floats, duplicate keys and member order kept).
#![no_main]

use lapps::lapps_proto::json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = json::decode(data) else {
        return;
    };
    assert!(
        serde_json::from_slice::<serde_json::Value>(data).is_ok(),
        "accepted what serde_json refuses"
    );
    for style in [
        json::Style::default(),
        json::Style {
            indent: Some(2),
            ..Default::default()
        },
    ] {
        let text = json::encode_with(&value, style).expect("a decoded value has an encoding");
        assert_eq!(
            json::decode(text.as_bytes()).as_ref(),
            Ok(&value),
            "re-encoding changed the value: {text}"
        );
    }
});
