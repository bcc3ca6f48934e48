//! Tests of the codec and the nljson module, one file per concern.

mod cbor;
mod json;
mod nljson;
mod protocol;
mod views;

/// Bytes from hex written as in RFC 8949 appendix A / cbor.me (spaces ignored).
pub(super) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => panic!("not hex: {s}"),
        })
        .collect();
    assert!(digits.len() % 2 == 0, "odd hex: {s}");
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}
