//! Fuzzes the CBOR decoder and the LAppS rules on top of it: no input may panic; the decoder
//! gives the same answer as the ciborium-based reference, and the in-place request check the
//! same as the tree check; whatever
//! decodes re-encodes to bytes that decode to the same value; the protocol check and the
//! outbound check give an answer (never a panic) on every decoded value, and what the outbound
//! check accepts is itself a decodable map.
#![no_main]

use lapps::lapps_proto::{cbor, json, protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = lapps::lapps_proto::Limits::default();
    let reference = cbor::decode_ciborium_with(data, &limits);
    // Error texts differ; the verdict and the value may not, except where our decoder applies
    // an RFC 8949 rule ciborium does not (cbor::stricter_than_ciborium).
    let ours = cbor::decode_with(data, &limits);
    let known =
        matches!((&ours, &reference), (Err(e), Ok(_)) if cbor::stricter_than_ciborium(data, e));
    if !known {
        assert_eq!(ours.ok(), reference.ok(), "differs from ciborium");
    }
    // The server's in-place reading of a request gives the tree check's answer, texts included.
    assert_eq!(
        protocol::parse_inbound_in_place(data),
        protocol::parse_inbound(data).map(|m| m.msg_type()),
        "in-place check differs"
    );
    let Ok(value) = cbor::decode(data) else {
        assert!(protocol::parse_inbound(data).is_err());
        return;
    };
    let again = cbor::decode(&cbor::encode(&value));
    assert_eq!(
        again.as_ref(),
        Ok(&value),
        "encode/decode changed the value"
    );

    match protocol::check_inbound(value.clone()) {
        Ok(msg) => {
            assert!(!msg.method().is_empty() && !msg.method().contains('.'));
            assert_eq!(msg.msg_type().is_notification(), msg.cid().is_some());
        }
        Err(e) => assert!((-32768..=-32000).contains(&e.code), "{e:?}"),
    }
    if let Ok(bytes) = protocol::validate_outbound(&value) {
        assert!(matches!(
            cbor::decode(&bytes),
            Ok(lapps::lapps_proto::Value::Map(_))
        ));
    }
    let _ = json::encode(&value);
});
