//! The CBOR decoder (RFC 8949): one item from a byte slice to a [`Value`], in one pass over the
//! input, enforcing [`Limits`] as it goes.
//!
//! Layers: ciborium's own low-level decoder, `ciborium_ll::Decoder`, reads every head (major
//! type, argument, float, simple value, break; reserved and ill-formed heads, truncation).
//! This module owns what ciborium-ll leaves to its caller: the payloads, the structure, the
//! rules listed in [`super::cbor`] (tags dropped, bignums of up to 16 bytes as numbers, half/
//! single/double floats, undefined as null, other simple values refused, UTF-8 checked per
//! text chunk), the limits, and `canonical`. ciborium's serde layer is not used here: its
//! per-item dispatch and copies cost more than the rest of a LAppS echo request
//! (docs/nljson.md, "Cost"); it stays as the fuzzing oracle (`cbor::decode_ciborium_with`).
//!
//! Each head is pulled by a `ciborium_ll::Decoder` made over the rest of the slice (a slice
//! and two words), and the position advanced by its `offset()`: a `Decoder` can only step over
//! a payload by copying it out, while here definite payloads are borrowed from the input by
//! offset. Two things a `Header` cannot tell are read from the head's first byte (see
//! [`Head`]): whether the argument used the shortest form and how wide a float was (both for
//! `canonical`), and a simple value written with a one-byte extension (refused, as RFC 8949
//! makes it ill-formed when below 32).
//!
//! It must never panic, never recurse deeper than the limits allow (containers and tags both
//! count), and never size an allocation from a declared length beyond what the remaining input
//! could hold.

use ciborium_ll::Header;

use super::cbor::DecodeError;
use super::de::from_i128;
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
    d.check_next(0, false)?;
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

/// A simple value that is well-formed but has no meaning (RFC 8949 3.3, 5.3.1).
fn unassigned_simple<T>(at: usize, value: u8) -> Result<T> {
    err(format!(
        "invalid CBOR at byte {at}: unassigned simple value {value}"
    ))
}

/// Input that is not well-formed CBOR (RFC 8949 Appendix F), with what is wrong.
fn malformed<T>(at: usize, what: &str) -> Result<T> {
    err(format!("malformed CBOR at byte {at}: {what}"))
}

/// The head `0xf8 value`: a simple value in two bytes, not well-formed below 32.
fn two_byte_simple<T>(at: usize, value: Option<u8>) -> Result<T> {
    match value {
        None => err("truncated CBOR item"),
        Some(v) if v < 32 => malformed(at, "a simple value below 32 written in two bytes"),
        Some(v) => unassigned_simple(at, v),
    }
}

/// The additional information of an indefinite length.
const INDEFINITE: u8 = 31;
const BREAK: u8 = 0xff;
const MAJOR_SIMPLE: u8 = 7;

/// One head as ciborium-ll read it, with what its `Header` does not keep.
struct Head {
    /// Where the head starts.
    at: usize,
    /// Its additional information (low 5 bits of the first byte): 24..=27 give the width of
    /// the argument or float that follows, which `Header` folds away.
    info: u8,
    header: Header,
}

/// The input after a head's start, as ciborium-ll's reader: a slice whose `read_exact` skips
/// the copy for the empty argument of a head below 24 (the common case), which the slice's own
/// `read_exact` hands to `memcpy`.
struct Rest<'a>(&'a [u8]);

impl std::io::Read for Rest<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }

    #[inline]
    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        match (buf, self.0) {
            ([], _) => Ok(()),
            ([one], [b, rest @ ..]) => {
                *one = *b;
                self.0 = rest;
                Ok(())
            }
            (buf, _) => self.0.read_exact(buf),
        }
    }
}

/// The `Header` ciborium-ll reads from a head that is its first byte alone (additional
/// information below 24), or None for every other head. Built here because ciborium-ll's
/// `Title` to `Header` conversion is not inlined and returns through memory: for the small
/// items requests are made of, that was half of validation. `tests/cbor.rs` checks all 256
/// first bytes against ciborium-ll.
#[inline]
pub(crate) fn one_byte_header(initial: u8) -> Option<Header> {
    let info = initial & 0x1f;
    if info >= 24 {
        return None;
    }
    Some(match initial >> 5 {
        0 => Header::Positive(info.into()),
        1 => Header::Negative(info.into()),
        2 => Header::Bytes(Some(info.into())),
        3 => Header::Text(Some(info.into())),
        4 => Header::Array(Some(info.into())),
        5 => Header::Map(Some(info.into())),
        6 => Header::Tag(info.into()),
        _ => Header::Simple(info),
    })
}

/// The most elements a container reserves room for before they arrive.
const MAX_PRESIZE: usize = 1024;

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
        let rest = self.input.len().saturating_sub(self.pos);
        if rest != 0 {
            return err(format!("{rest} bytes after the CBOR item"));
        }
        Ok(())
    }

    /// The next `n` bytes, borrowed from the input.
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n);
        match end.and_then(|e| self.input.get(self.pos..e)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => err("truncated CBOR item"),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// Reads the head at `pos` and steps over it; clears `canonical` when its argument is not
    /// in the shortest form. Inlined so that the `Head` stays in registers: returned through
    /// memory, its moves stalled on store forwarding.
    #[inline(always)]
    fn head(&mut self) -> Result<Head> {
        let at = self.pos;
        if let Some(&initial) = self.input.get(at) {
            if let Some(header) = one_byte_header(initial) {
                self.pos = at + 1;
                let info = initial & 0x1f;
                return Ok(Head { at, info, header });
            }
        }
        self.pulled_head()
    }

    /// [`Self::head`] for a head that is not one byte, pulled with ciborium-ll.
    #[inline(never)]
    fn pulled_head(&mut self) -> Result<Head> {
        let at = self.pos;
        let rest = self.input.get(at..).unwrap_or_default();
        let Some(&initial) = rest.first() else {
            return err("truncated CBOR item");
        };
        let info = initial & 0x1f;
        let mut heads = ciborium_ll::Decoder::from(Rest(rest));
        let header = match heads.pull() {
            Ok(h) => h,
            // 0xf8 (one-byte simple value) and 0xfc..=0xfe are refused whatever follows.
            Err(_) if initial >> 5 == MAJOR_SIMPLE && info == 24 => {
                return two_byte_simple(at, rest.get(1).copied())
            }
            Err(_) if matches!(info, 28..=30) => {
                return malformed(at, &format!("reserved additional information {info}"))
            }
            Err(_) if info == INDEFINITE && matches!(initial >> 5, 0 | 1 | 6) => {
                return malformed(at, "an indefinite length on an integer or a tag")
            }
            Err(ciborium_ll::Error::Io(_)) => return err("truncated CBOR item"),
            Err(ciborium_ll::Error::Syntax(o)) => {
                return err(format!("malformed CBOR at byte {}", at + o))
            }
        };
        self.pos = at + heads.offset();
        let arg = match header {
            Header::Positive(n) | Header::Negative(n) | Header::Tag(n) => n,
            Header::Bytes(Some(n))
            | Header::Text(Some(n))
            | Header::Array(Some(n))
            | Header::Map(Some(n)) => n as u64,
            _ => 0,
        };
        // The smallest argument each extension width is needed for.
        let floor = match info {
            24 => 24,
            25 => 0x100,
            26 => 0x1_0000,
            27 => 0x1_0000_0000,
            _ => 0,
        };
        if initial >> 5 != MAJOR_SIMPLE && arg < floor {
            self.canonical = false;
        }
        Ok(Head { at, info, header })
    }

    fn count_item(&mut self) -> Result<()> {
        self.items += 1;
        if self.items > self.limits.max_total_items {
            return err(format!(
                "CBOR past a limit: more than {} values in total",
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
            // Containers meet their own limit first: this is tags around tags.
            None => err("CBOR past a limit: tags nested too deep"),
        }
    }

    /// One item; `depth` is the number of enclosing containers.
    fn item(&mut self, depth: usize) -> Result<Value> {
        let h = self.head()?;
        self.item_from(h, depth)
    }

    /// The item whose head `h` was just pulled.
    fn item_from(&mut self, h: Head, depth: usize) -> Result<Value> {
        match h.header {
            Header::Positive(n) => {
                self.count_item()?;
                Ok(Value::from_u64(n))
            }
            Header::Negative(n) => {
                self.count_item()?;
                Ok(match i64::try_from(n) {
                    Ok(n) => Value::Int(-1 - n),
                    Err(_) => {
                        self.canonical = false;
                        Value::Float((-1i128 - n as i128) as f64)
                    }
                })
            }
            Header::Bytes(Some(len)) => {
                let b = self.take(len)?;
                self.count_item()?;
                Ok(if self.build {
                    Value::Bytes(b.to_vec())
                } else {
                    Value::Null
                })
            }
            Header::Text(Some(len)) => {
                let b = self.take(len)?;
                let s = std::str::from_utf8(b)
                    .map_err(|_| DecodeError(format!("malformed CBOR at byte {}", h.at)))?;
                self.count_item()?;
                Ok(if self.build {
                    Value::Text(s.to_owned())
                } else {
                    Value::Null
                })
            }
            Header::Bytes(None) => {
                self.canonical = false;
                self.chunked(2)
            }
            Header::Text(None) => {
                self.canonical = false;
                self.chunked(3)
            }
            Header::Array(len) => self.array(len, depth, h.at),
            Header::Map(len) => self.map(len, depth, h.at),
            Header::Tag(tag) => self.tagged(tag, depth),
            Header::Float(f) => {
                // `cbor::encode` writes every float in 64 bits.
                if h.info != 27 {
                    self.canonical = false;
                }
                self.count_item()?;
                Ok(Value::Float(f))
            }
            // 0xf8 with its extension byte: ill-formed below 32, unassigned above.
            Header::Simple(s) if h.info == 24 => two_byte_simple(h.at, Some(s)),
            Header::Simple(s) => self.simple(s, h.at),
            Header::Break => malformed(h.at, "a break (0xff) where an item must be"),
        }
    }

    /// [`Self::item_from`] without building, for the next item: the same checks in the same
    /// order (so the same first error) for the kinds a request is made of; the rest are handed
    /// to `item_from`, which builds nothing when `build` is off. False at the break that ends
    /// an indefinite container (`indefinite`: one is open here).
    ///
    /// Validation is most of what a small request costs. This walk keeps each head in
    /// registers: a `Result<Head>` returned through `?` at every level was copied through the
    /// stack with stalls on store forwarding, which took most of the time.
    fn check_next(&mut self, depth: usize, indefinite: bool) -> Result<bool> {
        debug_assert!(!self.build);
        let at = self.pos;
        let header = match self.input.get(at).copied().and_then(one_byte_header) {
            Some(header) => {
                self.pos = at + 1;
                header
            }
            None => {
                let h = self.pulled_head()?;
                match h.header {
                    Header::Break if indefinite => return Ok(false),
                    Header::Positive(_)
                    | Header::Negative(_)
                    | Header::Bytes(Some(_))
                    | Header::Text(Some(_))
                    | Header::Array(_)
                    | Header::Map(_) => h.header,
                    _ => return self.item_from(h, depth).map(|_| true),
                }
            }
        };
        match header {
            Header::Positive(_) => self.count_item()?,
            Header::Negative(n) => {
                if i64::try_from(n).is_err() {
                    self.canonical = false;
                }
                self.count_item()?
            }
            Header::Bytes(Some(len)) => {
                self.take(len)?;
                self.count_item()?
            }
            Header::Text(Some(len)) => {
                let b = self.take(len)?;
                if !b.is_ascii() && std::str::from_utf8(b).is_err() {
                    return err(format!("malformed CBOR at byte {at}"));
                }
                self.count_item()?
            }
            Header::Array(len) => {
                let inner = self.open(len, depth, at)?;
                let mut n = 0usize;
                while len != Some(n) {
                    if !self.check_next(inner, len.is_none())? {
                        break;
                    }
                    n += 1;
                    self.check_len(n)?;
                }
                self.nest_left += 1;
            }
            Header::Map(len) => {
                let inner = self.open(len, depth, at)?;
                let mut n = 0usize;
                while len != Some(n) {
                    self.in_key += 1;
                    let key = self.check_next(inner, len.is_none());
                    self.in_key -= 1;
                    if !key? {
                        break;
                    }
                    self.check_next(inner, false)?;
                    n += 1;
                    self.check_len(n)?;
                }
                self.nest_left += 1;
            }
            // One-byte tags and simple values.
            _ => {
                let info = self.input.get(at).map_or(0, |b| b & 0x1f);
                self.item_from(Head { at, info, header }, depth)?;
            }
        }
        Ok(true)
    }

    /// An indefinite byte (2) or text (3) string: definite chunks of the same major type up to
    /// a break.
    fn chunked(&mut self, major: u8) -> Result<Value> {
        let mut out = Vec::new();
        loop {
            let at = self.pos;
            // A chunk must be a definite string of the same major type: checked on its first
            // byte so that what follows a wrong one is not read.
            match self.peek() {
                None => return err("truncated CBOR item"),
                Some(BREAK) => {}
                Some(b) if b >> 5 != major || b & 0x1f == INDEFINITE => {
                    return err(format!("malformed CBOR at byte {at}"))
                }
                Some(_) => {}
            }
            let len = match self.head()?.header {
                Header::Break => break,
                Header::Bytes(Some(n)) | Header::Text(Some(n)) => n,
                _ => return err(format!("malformed CBOR at byte {at}")),
            };
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

    fn open(&mut self, len: Option<usize>, depth: usize, at: usize) -> Result<usize> {
        if len.is_none() {
            self.canonical = false;
        }
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
                "CBOR past a limit: nesting deeper than {}",
                self.limits.max_depth
            ));
        }
        Ok(inner)
    }

    fn check_len(&self, n: usize) -> Result<()> {
        if n > self.limits.max_container_len {
            return err(format!(
                "CBOR past a limit: a container with more than {} elements",
                self.limits.max_container_len
            ));
        }
        Ok(())
    }

    /// The next element's head, or None at the break ending an indefinite container.
    #[inline(always)]
    fn element(&mut self, len: Option<usize>) -> Result<Option<Head>> {
        let h = self.head()?;
        if len.is_none() && h.header == Header::Break {
            return Ok(None);
        }
        Ok(Some(h))
    }

    /// Room for `len` elements of at least `each` bytes in what is left of the input (no
    /// larger capacity can be needed), and at most [`MAX_PRESIZE`]: a declared length is the
    /// peer's word, and every level of a nest of containers reserves before the innermost one
    /// fails, so a larger container grows as its elements actually arrive.
    fn capacity(&self, len: Option<usize>, each: usize) -> usize {
        if !self.build {
            return 0;
        }
        let room = self.input.len().saturating_sub(self.pos) / each;
        len.unwrap_or(0).min(room).min(MAX_PRESIZE)
    }

    fn array(&mut self, len: Option<usize>, depth: usize, at: usize) -> Result<Value> {
        let inner = self.open(len, depth, at)?;
        let mut out = Vec::with_capacity(self.capacity(len, 1));
        let mut n = 0usize;
        while len != Some(n) {
            let Some(h) = self.element(len)? else { break };
            let v = self.item_from(h, inner)?;
            if self.build {
                out.push(v);
            }
            n += 1;
            self.check_len(n)?;
        }
        self.nest_left += 1;
        Ok(if self.build {
            Value::Array(out)
        } else {
            Value::Null
        })
    }

    fn map(&mut self, len: Option<usize>, depth: usize, at: usize) -> Result<Value> {
        let inner = self.open(len, depth, at)?;
        let mut out = Vec::with_capacity(self.capacity(len, 2));
        let mut n = 0usize;
        while len != Some(n) {
            let Some(h) = self.element(len)? else { break };
            self.in_key += 1;
            let k = self.item_from(h, inner);
            self.in_key -= 1;
            let k = k?;
            let v = self.item(inner)?;
            if self.build {
                out.push((k, v));
            }
            n += 1;
            self.check_len(n)?;
        }
        self.nest_left += 1;
        Ok(if self.build {
            Value::Map(out)
        } else {
            Value::Null
        })
    }

    /// A tag: dropped, its item kept; bignums (2, 3) of up to 16 definite bytes become numbers.
    fn tagged(&mut self, tag: u64, depth: usize) -> Result<Value> {
        self.canonical = false;
        // A bignum's content is a byte string (RFC 8949 3.4.3); a decoder that reads the tag
        // checks its content's type (5.3.2).
        if (tag == 2 || tag == 3) && self.peek().is_some_and(|b| b >> 5 != 2) {
            return err(format!(
                "invalid CBOR at byte {}: tag {tag} (a bignum) on something other than a byte \
                 string",
                self.pos
            ));
        }
        // Only a definite byte string can be a bignum read as a number: anything else is
        // decoded below as the tagged item, under the nesting limit.
        let definite_bytes =
            matches!(self.peek(), Some(b) if b >> 5 == 2 && b & 0x1f != INDEFINITE);
        if (tag == 2 || tag == 3) && definite_bytes {
            let save = self.pos;
            if let Header::Bytes(Some(len @ 0..=16)) = self.head()?.header {
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
                        Err(_) => err("CBOR past a limit: a negative bignum below -2^127"),
                    }
                };
            }
            self.pos = save;
        }
        self.enter()?;
        let v = self.item(depth)?;
        self.nest_left += 1;
        Ok(v)
    }

    /// A simple value written in the head itself (`item_from` refused the one-byte extension).
    fn simple(&mut self, s: u8, at: usize) -> Result<Value> {
        let v = match s {
            20 => Value::Bool(false),
            21 => Value::Bool(true),
            22 => Value::Null,
            23 => {
                self.canonical = false;
                Value::Null
            }
            _ => return unassigned_simple(at, s),
        };
        self.count_item()?;
        Ok(v)
    }
}
