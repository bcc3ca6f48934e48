//! Fuzzes the in-place reading of LAppS messages (the views `onMessage` gets): for any bytes
//! that are one CBOR item, `#v`, every lookup by key or index and the bytes
//! `ws:send_response` copies as they are give what the tree decoded from the same bytes
//! gives, before and after the message's tree is built; no input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = lapps::lapps_proto::views_agree_with_tree(data) {
        panic!("{e}");
    }
});
