//! One CBOR data item (RFC 8949) to a [`Value`] and back.
//!
//! Decoding is ciborium's low-level layer (`ciborium_ll::Decoder` reads every head) driven by
//! `cbor_de`, which walks the slice once, borrows payloads, and applies the rules and limits
//! below. ciborium's serde deserializer with our limit-checking visitor (`de::Seed`) is kept
//! only as the oracle the fuzz target and tests compare it to ([`decode_ciborium_with`]).
//! Rules:
//! - exactly one item: bytes after it are an error;
//! - definite and indefinite lengths are accepted;
//! - tags are dropped and the tagged item kept (bignums that fit 128 bits become numbers,
//!   nearest `f64` beyond `u64`/`i64`);
//! - half, single and double floats become `f64`; NaN and infinities are kept;
//! - simple values other than false/true/null/undefined are an error; undefined becomes null;
//! - byte and text strings are read in chunks as the input supplies them, so a declared length
//!   larger than the input fails at the end of input instead of allocating.
//!
//! Encoding writes definite lengths and the shortest integer heads (the preferred
//! serialization of RFC 8949 section 4.2.1 for integers). Floats are always written as 64-bit
//! floats: simpler, exact, and at most 6 bytes longer than the shortest form.
//!
//! This module must never panic on any input.

use std::cell::Cell;
use std::fmt;

use super::de::Budget;
use super::value::{Limits, Value};

/// Why bytes are not one acceptable CBOR item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes exactly one CBOR item with the default [`Limits`].
pub fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    decode_with(bytes, &Limits::default())
}

/// Decodes exactly one CBOR item within `limits`.
pub fn decode_with(bytes: &[u8], limits: &Limits) -> Result<Value, DecodeError> {
    if bytes.len() > limits.max_input {
        return Err(DecodeError(format!(
            "input of {} bytes exceeds the limit of {}",
            bytes.len(),
            limits.max_input
        )));
    }
    if bytes.is_empty() {
        return Err(DecodeError("empty input".into()));
    }
    super::cbor_de::decode(bytes, limits)
}

/// Whether `error` (from [`decode_with`] on `bytes`) is one of the RFC 8949 rules our decoder
/// enforces and ciborium's serde path does not, so that the two may differ there: an
/// indefinite-length string whose chunk is itself indefinite (section 3.2.3: chunks are
/// definite strings), and a simple value below 32 written with the one-byte extension `f8`
/// (section 3.3: not well-formed). Found by the fuzz target (`7f 7f ff ff`). Also a bignum tag
/// (2, 3) on something other than a byte string (sections 3.4.3, 5.3.2).
#[doc(hidden)]
pub fn stricter_than_ciborium(bytes: &[u8], error: &DecodeError) -> bool {
    if error
        .0
        .contains("(a bignum) on something other than a byte string")
    {
        return true;
    }
    let at = error
        .0
        .split("at byte ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok());
    match at.and_then(|at| bytes.get(at..)) {
        Some([0x5f | 0x7f, ..]) => true,
        Some([0xf8, n, ..]) => *n < 32,
        _ => false,
    }
}

/// [`decode_with`] through ciborium: the reference the fuzz target checks the decoder against.
#[doc(hidden)]
pub fn decode_ciborium_with(bytes: &[u8], limits: &Limits) -> Result<Value, DecodeError> {
    if bytes.len() > limits.max_input {
        return Err(DecodeError("input too large".into()));
    }
    let mut rest = bytes;
    // ciborium counts a tag as one level too; twice our container depth lets each container
    // carry a tag while still bounding the stack.
    let recursion = limits.max_depth.saturating_mul(2).saturating_add(2);
    // ciborium only takes `DeserializeOwned` types, not seeds: the limits reach the visitor
    // through a thread-local that `Limited::deserialize` takes back out.
    PENDING_LIMITS.with(|p| p.set(Some(*limits)));
    let result = ciborium::de::from_reader_with_recursion_limit::<Limited, _>(&mut rest, recursion);
    PENDING_LIMITS.with(|p| p.set(None));
    let Limited(value) = result.map_err(|e| DecodeError(describe(&e)))?;
    if !rest.is_empty() {
        return Err(DecodeError(format!(
            "{} bytes after the CBOR item",
            rest.len()
        )));
    }
    Ok(value)
}

thread_local! {
    static PENDING_LIMITS: Cell<Option<Limits>> = const { Cell::new(None) };
}

/// A [`Value`] decoded under the limits `decode_with` left in `PENDING_LIMITS`.
struct Limited(Value);

impl<'de> serde::Deserialize<'de> for Limited {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Limited, D::Error> {
        let limits = PENDING_LIMITS.with(|p| p.take()).unwrap_or_default();
        let budget = Budget::new(limits);
        serde::de::DeserializeSeed::deserialize(budget.seed(), d).map(Limited)
    }
}

fn describe<E: fmt::Debug>(e: &ciborium::de::Error<E>) -> String {
    use ciborium::de::Error;
    match e {
        Error::Io(_) => "truncated CBOR item".into(),
        Error::Syntax(at) => format!("malformed CBOR at byte {at}"),
        Error::Semantic(Some(at), msg) => format!("invalid CBOR at byte {at}: {msg}"),
        Error::Semantic(None, msg) => format!("invalid CBOR: {msg}"),
        Error::RecursionLimitExceeded => "CBOR nesting too deep".into(),
    }
}

/// Encodes `value` as one CBOR item.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

/// Appends the CBOR encoding of `value` to `out`.
pub fn encode_into(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(0xf6),
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Int(i) if *i >= 0 => head(out, 0, *i as u64),
        // -1 - n for major type 1: !i is exactly that for negative i.
        Value::Int(i) => head(out, 1, !*i as u64),
        Value::UInt(u) => head(out, 0, *u),
        Value::Float(f) => {
            out.push(0xfb);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Value::Text(s) => {
            head(out, 3, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bytes(b) => {
            head(out, 2, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Array(a) => {
            head(out, 4, a.len() as u64);
            for v in a {
                encode_into(v, out);
            }
        }
        Value::Map(m) => {
            head(out, 5, m.len() as u64);
            for (k, v) in m {
                encode_into(k, out);
                encode_into(v, out);
            }
        }
    }
}

/// Writes a major type and its argument in the shortest form.
pub(crate) fn head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if arg <= u8::MAX as u64 {
        out.extend_from_slice(&[m | 24, arg as u8]);
    } else if arg <= u16::MAX as u64 {
        out.push(m | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= u32::MAX as u64 {
        out.push(m | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}
