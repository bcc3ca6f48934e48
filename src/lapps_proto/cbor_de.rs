//! The CBOR decoder (RFC 8949): one item from a byte slice to a [`Value`], in one pass over the
//! input, enforcing [`Limits`] as it goes.
//!
//! Owns the reading of CBOR heads and items; the rules it implements are those listed in
//! [`super::cbor`] (tags dropped, bignums of up to 16 bytes as numbers, half/single/double
//! floats, undefined as null, other simple values refused, UTF-8 checked per text chunk).
//! Measured reason for not going through ciborium and serde (docs/nljson.md, "Cost"): their
//! per-item dispatch and copies cost more than the rest of a LAppS echo request. ciborium stays
//! as the fuzzing oracle (`cbor::decode_ciborium_with`).
//!
//! It must never panic, never recurse deeper than the limits allow (containers and tags both
//! count), and never size an allocation from a declared length beyond what the remaining input
//! could hold.

use super::cbor::DecodeError;
use super::value::{Limits, Value};

type Result<T> = std::result::Result<T, DecodeError>;

/// Decodes the one item `bytes` hold; bytes after it are an error.
pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Result<Value> {
    let mut d = Decoder::new(bytes, limits, true);
    let v = d.item(0)?;
    d.end()?;
    Ok(v)
}

/// Checks that `bytes` hold one acceptable item, building nothing; whether re-encoding its
/// value gives the same bytes (`cbor::encode` writes definite lengths, shortest heads, 64-bit
/// floats and no tags).
pub(crate) fn validate(bytes: &[u8], limits: &Limits) -> Result<bool> {
    let mut d = Decoder::new(bytes, limits, false);
    d.item(0)?;
    d.end()?;
    Ok(d.canonical)
}

/// Decodes the item of already validated `bytes` at `pos`, and the offsets of the containers
/// it holds outside map keys, in the order they start (which is the order a depth-first walk
/// of the value meets them).
pub(crate) fn decode_recording(bytes: &[u8], pos: usize) -> Option<(Value, Vec<usize>)> {
    let mut d = Decoder::new(bytes, &Limits::default(), true);
    d.pos = pos;
    d.offsets = Some(Vec::new());
    let v = d.item(0).ok()?;
    Some((v, d.offsets.unwrap_or_default()))
}

/// Decodes the item of already validated `bytes` at `pos`.
pub(crate) fn decode_at(bytes: &[u8], pos: usize) -> Option<Value> {
    let mut d = Decoder::new(bytes, &Limits::default(), true);
    d.pos = pos;
    d.item(0).ok()
}

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(DecodeError(msg.into()))
}

/// The additional information of an indefinite length.
const INDEFINITE: u8 = 31;
const BREAK: u8 = 0xff;

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    limits: Limits,
    /// Values built so far (keys included).
    items: usize,
    /// Containers and tags that may still be entered.
    nest_left: usize,
    /// False: only check (every value comes out as null).
    build: bool,
    /// Cleared by anything `cbor::encode` would write differently.
    canonical: bool,
    /// Where containers outside map keys start, when recorded.
    offsets: Option<Vec<usize>>,
    /// Map keys being decoded (containers inside them are not recorded).
    in_key: usize,
}

impl<'a> Decoder<'a> {
    fn new(input: &'a [u8], limits: &Limits, build: bool) -> Decoder<'a> {
        Decoder {
            input,
            pos: 0,
            limits: *limits,
            items: 0,
            // As ciborium's recursion limit: every container may carry a tag.
            nest_left: limits.max_depth.saturating_mul(2).saturating_add(2),
            build,
            canonical: true,
            offsets: None,
            in_key: 0,
        }
    }

    fn end(&self) -> Result<()> {
        if self.pos != self.input.len() {
            return err(format!(
                "{} bytes after the CBOR item",
                self.input.len() - self.pos
            ));
        }
        Ok(())
    }

    fn byte(&mut self) -> Result<u8> {
        match self.input.get(self.pos) {
            Some(b) => {
                self.pos += 1;
                Ok(*b)
            }
            None => err("truncated CBOR item"),
        }
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let rest = self.input.len() - self.pos;
        if n > rest as u64 {
            return err("truncated CBOR item");
        }
        let s = &self.input[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// The argument of a head whose additional information is `info` (< 28).
    fn argument(&mut self, info: u8) -> Result<u64> {
        let (v, floor) = match info {
            0..=23 => return Ok(info as u64),
            24 => (self.byte()? as u64, 24),
            25 => (be(self.take(2)?), 0x100),
            26 => (be(self.take(4)?), 0x1_0000),
            27 => (be(self.take(8)?), 0x1_0000_0000),
            _ => return err(format!("malformed CBOR at byte {}", self.pos - 1)),
        };
        if v < floor {
            self.canonical = false;
        }
        Ok(v)
    }

    fn count_item(&mut self) -> Result<()> {
        self.items += 1;
        if self.items > self.limits.max_total_items {
            return err(format!(
                "invalid CBOR: more than {} values in total",
                self.limits.max_total_items
            ));
        }
        Ok(())
    }

    fn enter(&mut self) -> Result<()> {
        match self.nest_left.checked_sub(1) {
            Some(n) => {
                self.nest_left = n;
                Ok(())
            }
            None => err("CBOR nesting too deep"),
        }
    }

    /// One item; `depth` is the number of enclosing containers.
    fn item(&mut self, depth: usize) -> Result<Value> {
        let at = self.pos;
        let initial = self.byte()?;
        let (major, info) = (initial >> 5, initial & 0x1f);
        if major == 6 {
            return self.tagged(info, depth);
        }
        if major == 7 {
            return self.simple(info, at);
        }
        if info == INDEFINITE {
            self.canonical = false;
            return match major {
                2 | 3 => self.chunked(major),
                4 => self.array(None, depth, at),
                5 => self.map(None, depth, at),
                _ => err(format!("malformed CBOR at byte {at}")),
            };
        }
        let arg = self.argument(info)?;
        match major {
            0 => {
                self.count_item()?;
                Ok(Value::from_u64(arg))
            }
            1 => {
                self.count_item()?;
                Ok(match i64::try_from(arg) {
                    Ok(n) => Value::Int(-1 - n),
                    Err(_) => {
                        self.canonical = false;
                        Value::Float((-1i128 - arg as i128) as f64)
                    }
                })
            }
            2 => {
                let b = self.take(arg)?;
                self.count_item()?;
                Ok(if self.build {
                    Value::Bytes(b.to_vec())
                } else {
                    Value::Null
                })
            }
            3 => {
                let b = self.take(arg)?;
                let s = std::str::from_utf8(b)
                    .map_err(|_| DecodeError(format!("malformed CBOR at byte {at}")))?;
                self.count_item()?;
                Ok(if self.build {
                    Value::Text(s.to_owned())
                } else {
                    Value::Null
                })
            }
            4 => self.array(Some(arg), depth, at),
            _ => self.map(Some(arg), depth, at),
        }
    }

    /// An indefinite byte (2) or text (3) string: definite chunks of the same major type up to
    /// a break.
    fn chunked(&mut self, major: u8) -> Result<Value> {
        let mut out = Vec::new();
        loop {
            let at = self.pos;
            let b = self.byte()?;
            if b == BREAK {
                break;
            }
            if b >> 5 != major || b & 0x1f == INDEFINITE {
                return err(format!("malformed CBOR at byte {at}"));
            }
            let len = self.argument(b & 0x1f)?;
            let chunk = self.take(len)?;
            if major == 3 && std::str::from_utf8(chunk).is_err() {
                return err(format!("malformed CBOR at byte {at}"));
            }
            if self.build {
                out.extend_from_slice(chunk);
            }
        }
        self.count_item()?;
        if !self.build {
            return Ok(Value::Null);
        }
        if major == 2 {
            return Ok(Value::Bytes(out));
        }
        // Every chunk is UTF-8, so their concatenation is.
        String::from_utf8(out)
            .map(Value::Text)
            .map_err(|_| DecodeError("invalid CBOR: text is not UTF-8".into()))
    }

    fn open(&mut self, depth: usize, at: usize) -> Result<usize> {
        if self.in_key == 0 {
            if let Some(o) = &mut self.offsets {
                o.push(at);
            }
        }
        self.count_item()?;
        self.enter()?;
        let inner = depth + 1;
        if inner > self.limits.max_depth {
            return err(format!(
                "invalid CBOR: nesting deeper than {}",
                self.limits.max_depth
            ));
        }
        Ok(inner)
    }

    fn check_len(&self, n: usize) -> Result<()> {
        if n > self.limits.max_container_len {
            return err(format!(
                "invalid CBOR: a container with more than {} elements",
                self.limits.max_container_len
            ));
        }
        Ok(())
    }

    /// Whether the next byte ends an indefinite container (and consumes it).
    fn at_break(&mut self) -> bool {
        if self.peek() == Some(BREAK) {
            self.pos += 1;
            return true;
        }
        false
    }

    fn array(&mut self, len: Option<u64>, depth: usize, at: usize) -> Result<Value> {
        let inner = self.open(depth, at)?;
        // Each element takes at least one byte: no larger capacity can be needed.
        let room = (self.input.len() - self.pos) as u64;
        let cap = if self.build {
            len.unwrap_or(0).min(room)
        } else {
            0
        };
        let mut out = Vec::with_capacity(cap as usize);
        let mut count = 0usize;
        let mut n = 0u64;
        loop {
            match len {
                Some(l) if n == l => break,
                None if self.at_break() => break,
                _ => {}
            }
            let v = self.item(inner)?;
            if self.build {
                out.push(v);
            }
            n += 1;
            count += 1;
            self.check_len(count)?;
        }
        self.nest_left += 1;
        Ok(if self.build {
            Value::Array(out)
        } else {
            Value::Null
        })
    }

    fn map(&mut self, len: Option<u64>, depth: usize, at: usize) -> Result<Value> {
        let inner = self.open(depth, at)?;
        let room = (self.input.len() - self.pos) as u64 / 2;
        let cap = if self.build {
            len.unwrap_or(0).min(room)
        } else {
            0
        };
        let mut out = Vec::with_capacity(cap as usize);
        let mut count = 0usize;
        let mut n = 0u64;
        loop {
            match len {
                Some(l) if n == l => break,
                None if self.at_break() => break,
                _ => {}
            }
            self.in_key += 1;
            let k = self.item(inner);
            self.in_key -= 1;
            let k = k?;
            let v = self.item(inner)?;
            if self.build {
                out.push((k, v));
            }
            n += 1;
            count += 1;
            self.check_len(count)?;
        }
        self.nest_left += 1;
        Ok(if self.build {
            Value::Map(out)
        } else {
            Value::Null
        })
    }

    /// A tag: dropped, its item kept; bignums (2, 3) of up to 16 definite bytes become numbers.
    fn tagged(&mut self, info: u8, depth: usize) -> Result<Value> {
        if info >= 28 {
            return err(format!("malformed CBOR at byte {}", self.pos - 1));
        }
        let tag = self.argument(info)?;
        self.canonical = false;
        if tag == 2 || tag == 3 {
            if let Some(b) = self.peek() {
                let short = b >> 5 == 2 && b & 0x1f != INDEFINITE;
                if short {
                    let save = self.pos;
                    self.pos += 1;
                    let len = self.argument(b & 0x1f)?;
                    if len <= 16 {
                        let digits = self.take(len)?;
                        let n = digits.iter().fold(0u128, |acc, d| acc << 8 | *d as u128);
                        self.count_item()?;
                        return if tag == 2 {
                            Ok(match u64::try_from(n) {
                                Ok(u) => Value::from_u64(u),
                                Err(_) => Value::Float(n as f64),
                            })
                        } else {
                            match i128::try_from(n) {
                                Ok(n) => Ok(from_i128(-1 - n)),
                                Err(_) => err("invalid CBOR: integer too large"),
                            }
                        };
                    }
                    self.pos = save;
                }
            }
        }
        self.enter()?;
        let v = self.item(depth)?;
        self.nest_left += 1;
        Ok(v)
    }

    fn simple(&mut self, info: u8, at: usize) -> Result<Value> {
        let v = match info {
            20 => Value::Bool(false),
            21 => Value::Bool(true),
            22 => Value::Null,
            23 => {
                self.canonical = false;
                Value::Null
            }
            25 => {
                self.canonical = false;
                Value::Float(half(be(self.take(2)?) as u16))
            }
            26 => {
                self.canonical = false;
                Value::Float(f32::from_bits(be(self.take(4)?) as u32) as f64)
            }
            27 => Value::Float(f64::from_bits(be(self.take(8)?))),
            _ => return err(format!("invalid CBOR at byte {at}: unknown simple value")),
        };
        self.count_item()?;
        Ok(v)
    }
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, d| acc << 8 | *d as u64)
}

/// As `de::from_i128`: exact when it fits `i64`/`u64`, the nearest float otherwise.
fn from_i128(v: i128) -> Value {
    if let Ok(i) = i64::try_from(v) {
        Value::Int(i)
    } else if let Ok(u) = u64::try_from(v) {
        Value::UInt(u)
    } else {
        Value::Float(v as f64)
    }
}

/// An IEEE 754 half as f64 (NaNs keep sign and payload, quieted, as the `half` crate does).
fn half(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = (h >> 10) & 0x1f;
    let mant = (h & 0x3ff) as u64;
    match exp {
        // Subnormal: mant * 2^-24, exact in f64.
        0 => sign * (mant as f64) * f64::from_bits((1023 - 24) << 52),
        31 if mant == 0 => sign * f64::INFINITY,
        31 => f64::from_bits(((h as u64 & 0x8000) << 48) | 0x7ff8_0000_0000_0000 | (mant << 42)),
        // Normal: (1024 + mant) * 2^(exp - 25).
        e => sign * ((1024 + mant) as f64) * f64::from_bits(((1023 + e as u64) - 25) << 52),
    }
}
