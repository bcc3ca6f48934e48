//! The LAppS protocol (SPEC section 4, the original's `LAppS_Protocol_Specification.md`):
//! what a client may send, what the server answers, and the check of what a Lua app hands to
//! `ws:send(handler, value)`.
//!
//! Inbound rules, each with its JSON-RPC code:
//! - -32700 parse error: the message is not one CBOR item, or the item is not a map;
//! - -32600 invalid request:
//!   - `lapps` missing, or not `1` (the integer, an integral float, or the text `"1"`: the
//!     original's text says `"1"`, its examples and code use the number);
//!   - `method` missing, not text, empty, or containing `.`;
//!   - `params` present and not an array;
//!   - `cid` present and not an integer in `1..=2^64-1` (channel 0 is the command channel, a
//!     client notification must name another one);
//!   - one of those members present twice (ambiguous);
//! - -32601 method not found: names starting with `_` are reserved for extensions, and this
//!   server implements none, so such a method exists nowhere.
//!
//! Members other than these are allowed and reach the app untouched (the original did the same).
//! A request has no `cid`; a client notification has one and gets no response.
//! `msg_type` follows the original: an empty `params` array counts as "without params".
//!
//! This module owns the rules; it must never decide what to do with a bad message (answer,
//! ignore, close): the host does, with the code given here.

use std::fmt;
use std::num::NonZeroU64;

use super::cbor;
use super::lazy::{Doc, NAMES};
use super::value::{Limits, Value};

/// JSON-RPC 2.0 codes used by LAppS.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// A message that breaks the protocol, with the code to answer it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: i64,
    pub message: String,
    /// The message carried a valid client-notification `cid`: it gets no response, not even
    /// an error (a client matches responses to its calls by order).
    pub notification: bool,
}

impl ProtocolError {
    fn new(code: i64, message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            code,
            message: message.into(),
            notification: false,
        }
    }

    fn in_notification(mut self, notification: bool) -> ProtocolError {
        self.notification = notification;
        self
    }
}

/// Whether a map key names the member `name`: as text, or as a byte string with the same
/// bytes (nljson lookups find members by either, so the checks must too).
pub(super) fn is_named(key: &Value, name: &str) -> bool {
    match key {
        Value::Text(s) => s == name,
        Value::Bytes(b) => b == name.as_bytes(),
        _ => false,
    }
}

/// The error for a message that does not decode: -32700, a client notification all the same
/// when a `cid` naming a channel can be read in it (so that it gets no answer either, see
/// [`super::cid_scan`]).
pub(crate) fn undecodable(bytes: &[u8], e: impl fmt::Display) -> ProtocolError {
    ProtocolError::new(PARSE_ERROR, format!("parse error: {e}"))
        .in_notification(super::cid_scan::notification_cid(bytes).is_some())
}

/// A `cid` member's value as a client-notification channel.
pub(crate) fn notification_cid(v: &Value) -> Option<NonZeroU64> {
    let cid = match v {
        Value::UInt(u) => Some(*u),
        // Integral floats up to 2^64 (exclusive), as the unsigned channel they stand for.
        Value::Float(f) if f.fract() == 0.0 && *f >= 0.0 && *f < 2f64.powi(64) => Some(*f as u64),
        v => v.as_i64().and_then(|i| u64::try_from(i).ok()),
    };
    cid.and_then(NonZeroU64::new)
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ProtocolError {}

/// The `msg_type` argument of a LAppS `onMessage`, numbered as in the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    /// Client notification without params.
    Notification = 1,
    /// Client notification with a non-empty `params` array.
    NotificationWithParams = 2,
    /// Request without params.
    Request = 3,
    /// Request with a non-empty `params` array.
    RequestWithParams = 4,
}

impl MsgType {
    pub fn is_notification(self) -> bool {
        matches!(
            self,
            MsgType::Notification | MsgType::NotificationWithParams
        )
    }
}

/// A valid inbound message: its kind, the fields the host needs, and the whole decoded map
/// (what `onMessage` receives as `message`).
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    msg_type: MsgType,
    method: String,
    cid: Option<NonZeroU64>,
    message: Value,
}

impl Inbound {
    pub fn msg_type(&self) -> MsgType {
        self.msg_type
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    /// The channel of a client notification; `None` for a request (answered on CCH).
    pub fn cid(&self) -> Option<NonZeroU64> {
        self.cid
    }

    /// The `params` array, if present.
    pub fn params(&self) -> Option<&[Value]> {
        self.message.get("params").and_then(Value::as_array)
    }

    /// The whole request map.
    pub fn message(&self) -> &Value {
        &self.message
    }

    pub fn into_message(self) -> Value {
        self.message
    }

    /// Its kind, method and whole map, without copying them.
    pub fn into_parts(self) -> (MsgType, String, Value) {
        (self.msg_type, self.method, self.message)
    }
}

/// Decodes and checks one inbound binary message with the default limits.
pub fn parse_inbound(bytes: &[u8]) -> Result<Inbound, ProtocolError> {
    parse_inbound_with(bytes, &Limits::default())
}

/// Decodes and checks one inbound binary message within `limits`.
pub fn parse_inbound_with(bytes: &[u8], limits: &Limits) -> Result<Inbound, ProtocolError> {
    let message = cbor::decode_with(bytes, limits).map_err(|e| undecodable(bytes, e))?;
    check_inbound(message)
}

/// Applies the request rules to an already decoded value.
pub fn check_inbound(message: Value) -> Result<Inbound, ProtocolError> {
    let Value::Map(members) = &message else {
        return Err(ProtocolError::new(
            PARSE_ERROR,
            "parse error: a LAppS message is a CBOR map",
        ));
    };
    // A notification, malformed or not, is never answered: the client counts no answer for
    // it (an error response would be taken for the answer to its oldest call). Any `cid`
    // member with a channel makes one, given twice too.
    let notification = members
        .iter()
        .any(|(k, v)| is_named(k, "cid") && notification_cid(v).is_some());
    let (msg_type, method, cid) =
        check_members(members).map_err(|e| e.in_notification(notification))?;
    Ok(Inbound {
        msg_type,
        method,
        cid,
        message,
    })
}

/// The checks of [`check_inbound`] on the members of its map: kind, method and cid.
fn check_members(
    members: &[(Value, Value)],
) -> Result<(MsgType, String, Option<NonZeroU64>), ProtocolError> {
    let member = |name: &str| -> Result<Option<&Value>, ProtocolError> {
        let mut found = members.iter().filter(|(k, _)| is_named(k, name));
        let first = found.next().map(|(_, v)| v);
        if found.next().is_some() {
            return Err(ProtocolError::new(
                INVALID_REQUEST,
                format!("invalid request: member '{name}' appears twice"),
            ));
        }
        Ok(first)
    };
    let invalid =
        |why: &str| ProtocolError::new(INVALID_REQUEST, format!("invalid request: {why}"));

    match member("lapps")? {
        None => return Err(invalid("member 'lapps' is missing")),
        Some(v) if v.as_i64() == Some(1) || v.as_str() == Some("1") => {}
        Some(_) => return Err(invalid("member 'lapps' must be 1")),
    }
    let method = match member("method")? {
        None => return Err(invalid("member 'method' is missing")),
        Some(Value::Text(m)) => m,
        Some(_) => return Err(invalid("member 'method' must be a string")),
    };
    check_method_name(method)?;
    let has_params = match member("params")? {
        None => false,
        Some(Value::Array(p)) => !p.is_empty(),
        Some(_) => return Err(invalid("member 'params' must be an array")),
    };
    let cid = match member("cid")? {
        None => None,
        Some(v) => match notification_cid(v) {
            Some(c) => Some(c),
            None => {
                return Err(invalid(
                    "member 'cid' must be a positive integer (a notification's channel; 0 is for responses)",
                ))
            }
        },
    };
    check_not_reserved(method)?;
    let msg_type = match (cid.is_some(), has_params) {
        (true, false) => MsgType::Notification,
        (true, true) => MsgType::NotificationWithParams,
        (false, false) => MsgType::Request,
        (false, true) => MsgType::RequestWithParams,
    };
    Ok((msg_type, method.clone(), cid))
}

/// [`parse_inbound`] the way the server reads requests (validated in place, checked without a
/// tree): the message type, or the same error. For the fuzz target and tests, which compare
/// the two.
#[doc(hidden)]
pub fn parse_inbound_in_place(bytes: &[u8]) -> Result<MsgType, ProtocolError> {
    let doc = Doc::parse(bytes, &Limits::default()).map_err(|e| undecodable(bytes, e))?;
    check_doc(&doc).map(|i| i.msg_type)
}

/// A valid inbound message read in place ([`check_doc`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DocInbound {
    pub msg_type: MsgType,
    /// Where the `method` text is in the message.
    pub method_at: usize,
}

/// [`check_inbound`] on a validated message without decoding it: the same verdicts, codes
/// and texts (the tests compare the two).
pub(crate) fn check_doc(doc: &Doc) -> Result<DocInbound, ProtocolError> {
    let root = doc.root();
    if !doc.is_map(root) {
        return Err(ProtocolError::new(
            PARSE_ERROR,
            "parse error: a LAppS message is a CBOR map",
        ));
    }
    // Per name: the first value's offset, and whether the name came again.
    let mut found: [(Option<usize>, bool); 4] = [(None, false); 4];
    match doc.named() {
        Some(named) => {
            for (i, f) in found.iter_mut().enumerate() {
                *f = (named.at[i], named.twice[i]);
            }
        }
        None => doc.each_member(root, |key, value| {
            let Some(name) = member_name(doc, key) else {
                return;
            };
            if let Some(i) = NAMES.iter().position(|n| n.as_bytes() == &name[..]) {
                match found[i].0 {
                    Some(_) => found[i].1 = true,
                    None => found[i].0 = Some(value),
                }
            }
        }),
    }
    let is_channel = |at: usize| doc.scalar(at).as_ref().and_then(notification_cid).is_some();
    let notification = match found[3] {
        (Some(at), false) => is_channel(at),
        // Given twice: any of them (as `check_inbound`), looked for only in this rare case.
        (Some(_), true) => {
            let mut any = false;
            doc.each_member(root, |key, value| {
                if member_name(doc, key).is_some_and(|n| &n[..] == b"cid") && is_channel(value) {
                    any = true;
                }
            });
            any
        }
        (None, _) => false,
    };
    check_found(doc, &found).map_err(|e| e.in_notification(notification))
}

/// The name of the member whose key is at `key`: a text key, or a byte-string key with the
/// same bytes (as `names` reads them); None for other keys.
fn member_name<'d>(doc: &'d Doc, key: usize) -> Option<std::borrow::Cow<'d, [u8]>> {
    doc.text_bytes(key).or_else(|| match doc.scalar(key) {
        Some(Value::Bytes(b)) => Some(std::borrow::Cow::Owned(b)),
        _ => None,
    })
}

/// The checks of [`check_doc`] on the members found: kind and where the method is.
fn check_found(doc: &Doc, found: &[(Option<usize>, bool); 4]) -> Result<DocInbound, ProtocolError> {
    let member = |i: usize| -> Result<Option<usize>, ProtocolError> {
        match found[i] {
            (_, true) => Err(ProtocolError::new(
                INVALID_REQUEST,
                format!("invalid request: member '{}' appears twice", NAMES[i]),
            )),
            (v, false) => Ok(v),
        }
    };
    let invalid =
        |why: &str| ProtocolError::new(INVALID_REQUEST, format!("invalid request: {why}"));

    match member(0)? {
        None => return Err(invalid("member 'lapps' is missing")),
        // 0x01: the unsigned integer 1, as every client writes it.
        Some(at) if doc.bytes().get(at) == Some(&0x01) => {}
        Some(at) => match doc.scalar(at) {
            Some(v) if v.as_i64() == Some(1) || v.as_str() == Some("1") => {}
            _ => return Err(invalid("member 'lapps' must be 1")),
        },
    }
    let method_at = member(1)?.ok_or_else(|| invalid("member 'method' is missing"))?;
    let method = doc
        .text(method_at)
        .ok_or_else(|| invalid("member 'method' must be a string"))?;
    check_method_name(&method)?;
    let has_params = match member(2)? {
        None => false,
        Some(at) => doc
            .array_non_empty(at)
            .ok_or_else(|| invalid("member 'params' must be an array"))?,
    };
    let has_cid = match member(3)? {
        None => false,
        Some(at) => {
            if doc.scalar(at).as_ref().and_then(notification_cid).is_none() {
                return Err(invalid(
                    "member 'cid' must be a positive integer (a notification's channel; 0 is for responses)",
                ));
            }
            true
        }
    };
    check_not_reserved(&method)?;
    let msg_type = match (has_cid, has_params) {
        (true, false) => MsgType::Notification,
        (true, true) => MsgType::NotificationWithParams,
        (false, false) => MsgType::Request,
        (false, true) => MsgType::RequestWithParams,
    };
    Ok(DocInbound {
        msg_type,
        method_at,
    })
}

fn k(s: &str) -> Value {
    Value::text(s)
}

/// `{"status": 1, "cid": 0, "result": [...]}`.
pub fn encode_response_ok(result: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    begin_response_ok(&mut out, result.len());
    for v in result {
        cbor::encode_into(v, &mut out);
    }
    out
}

/// How every response this module encodes begins: a map of three, first member "status".
/// OONs begin otherwise (a map of two, first member "cid").
pub const RESPONSE_HEAD: &[u8] = b"\xa3\x66status";

/// Whether `cbor` is a response (cid 0) as this module encodes it, not an OON.
pub fn is_response(cbor: &[u8]) -> bool {
    cbor.starts_with(RESPONSE_HEAD)
}

/// Appends everything of a status 1 response up to its `items` result values, which the
/// caller appends as CBOR items.
pub fn begin_response_ok(out: &mut Vec<u8>, items: usize) {
    // {"status": 1, "cid": 0, "result": [ (map of 3, shortest heads)
    out.extend_from_slice(RESPONSE_HEAD);
    out.extend_from_slice(b"\x01\x63cid\x00\x66result");
    cbor::head(out, 4, items as u64);
}

/// `{"status": 0, "cid": 0, "error": {"code": N, "message": "...", "data": ...}}`, `data` only
/// when given.
pub fn encode_response_error(code: i64, message: &str, data: Option<&Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + message.len());
    cbor::head(&mut out, 5, 3);
    cbor::encode_into(&k("status"), &mut out);
    cbor::encode_into(&Value::Int(0), &mut out);
    cbor::encode_into(&k("cid"), &mut out);
    cbor::encode_into(&Value::Int(0), &mut out);
    cbor::encode_into(&k("error"), &mut out);
    cbor::head(&mut out, 5, if data.is_some() { 3 } else { 2 });
    cbor::encode_into(&k("code"), &mut out);
    cbor::encode_into(&Value::Int(code), &mut out);
    cbor::encode_into(&k("message"), &mut out);
    cbor::encode_into(&k(message), &mut out);
    if let Some(d) = data {
        cbor::encode_into(&k("data"), &mut out);
        cbor::encode_into(d, &mut out);
    }
    out
}

/// An out-of-order notification `{"cid": N, "message": [...]}`.
pub fn encode_oon(cid: NonZeroU64, message: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    cbor::head(&mut out, 5, 2);
    cbor::encode_into(&k("cid"), &mut out);
    cbor::encode_into(&Value::from_u64(cid.get()), &mut out);
    cbor::encode_into(&k("message"), &mut out);
    cbor::head(&mut out, 4, message.len() as u64);
    for v in message {
        cbor::encode_into(v, &mut out);
    }
    out
}

/// Checks that `value` (what a Lua app passed to `ws:send(handler, value)` or
/// `bcast:send(id, value)`) is a LAppS response or OON, and encodes it in the canonical member
/// order. Accepted shapes:
/// - `{cid = 0, status = 1, result = {...}}`;
/// - `{cid = 0, status = 0, error = {code = N, message = "...", data = any?}}`;
/// - `{cid = N ~= 0, message = {...}}`, with or without the original's `status = 1` (not sent).
///
/// `result` and `message` must be arrays (an empty Lua table counts as one here); `cid`,
/// `status` and `code` integers (integral floats accepted); `lapps` is tolerated and dropped
/// (responses do not carry it); any other member is an error, so a typo does not go unnoticed.
pub fn validate_outbound(value: &Value) -> Result<Vec<u8>, String> {
    let Value::Map(members) = value else {
        let got = value.type_name();
        let article = if got.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        return Err(format!(
            "a LAppS message is a table of named members (cid, ...), not {article} {got}"
        ));
    };
    let mut cid = None;
    let mut status = None;
    let mut result = None;
    let mut error = None;
    let mut message = None;
    for (key, v) in members {
        let slot = match key.as_str() {
            Some("cid") => &mut cid,
            Some("status") => &mut status,
            Some("result") => &mut result,
            Some("error") => &mut error,
            Some("message") => &mut message,
            Some("lapps") => continue,
            Some(other) => return Err(format!("unexpected member '{other}' in a LAppS message")),
            None => return Err("a LAppS message has only string keys".into()),
        };
        if slot.replace(v).is_some() {
            return Err(format!(
                "member '{}' appears twice",
                key.as_str().unwrap_or_default()
            ));
        }
    }
    let cid = match cid {
        None => return Err("member 'cid' is missing (0 for a response, N for an OON)".into()),
        // A channel as a client's notification names one (an integral float too: a Lua
        // number past 2^53 is one), or 0.
        Some(v) => match notification_cid(v) {
            Some(channel) => channel.get(),
            None if v.as_i64() == Some(0) => 0,
            None => return Err("member 'cid' must be a non-negative integer".into()),
        },
    };
    if let Some(cid) = NonZeroU64::new(cid) {
        // The original required `status = 1` on an OON as well (its apps' OONs carry it): it
        // is accepted and left out, as SPEC section 4's OON has no `status`.
        match status.map(Value::as_i64) {
            None | Some(Some(1)) => {}
            Some(Some(0)) => {
                return Err(format!(
                    "status 0 is an error response, which goes on cid 0, not cid {cid}"
                ))
            }
            Some(_) => {
                return Err("member 'status' of an OON (cid ~= 0) may only be 1, or absent".into())
            }
        }
        if result.is_some() || error.is_some() {
            return Err("an OON (cid ~= 0) carries only 'cid' and 'message'".into());
        }
        let message = message.ok_or("member 'message' of an OON is missing")?;
        let message = as_array(message).ok_or("member 'message' of an OON must be an array")?;
        return Ok(encode_oon(cid, message));
    }
    if message.is_some() {
        return Err("a response (cid 0) carries no 'message'; OONs use a cid other than 0".into());
    }
    match status.and_then(Value::as_i64) {
        Some(1) => {
            if error.is_some() {
                return Err("a response with status 1 carries no 'error'".into());
            }
            let result = result.ok_or("member 'result' of a status 1 response is missing")?;
            let result = as_array(result).ok_or("member 'result' must be an array")?;
            Ok(encode_response_ok(result))
        }
        Some(0) => {
            if result.is_some() {
                return Err("a response with status 0 carries no 'result'".into());
            }
            let error = error.ok_or("member 'error' of a status 0 response is missing")?;
            let Value::Map(fields) = error else {
                return Err("member 'error' must be a table with 'code' and 'message'".into());
            };
            let (mut code, mut text, mut data) = (None, None, None);
            for (key, v) in fields {
                let slot = match key.as_str() {
                    Some("code") => &mut code,
                    Some("message") => &mut text,
                    Some("data") => &mut data,
                    _ => return Err("member 'error' has only 'code', 'message' and 'data'".into()),
                };
                if slot.replace(v).is_some() {
                    return Err("a member of 'error' appears twice".into());
                }
            }
            let code = code
                .and_then(Value::as_i64)
                .ok_or("member 'error.code' must be an integer")?;
            let text = text
                .and_then(Value::as_str)
                .ok_or("member 'error.message' must be a string")?;
            Ok(encode_response_error(code, text, data))
        }
        _ => Err("member 'status' of a response must be 0 or 1".into()),
    }
}

/// An array, or an empty map (an empty Lua table converts to an empty map).
fn as_array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) => Some(a),
        Value::Map(m) if m.is_empty() => Some(&[]),
        _ => None,
    }
}

/// The form SPEC section 4 gives a method name: not empty, no `.` (-32600).
fn check_method_name(method: &str) -> Result<(), ProtocolError> {
    let invalid =
        |why: &str| ProtocolError::new(INVALID_REQUEST, format!("invalid request: {why}"));
    if method.is_empty() {
        return Err(invalid("member 'method' is empty"));
    }
    if method.contains('.') {
        return Err(invalid("method names contain no '.'"));
    }
    Ok(())
}

/// -32601 for a reserved method name: checked after the members' form, which a request must
/// have right first (JSON-RPC 2.0: -32601 is for an otherwise valid request).
fn check_not_reserved(method: &str) -> Result<(), ProtocolError> {
    if method.starts_with('_') {
        return Err(ProtocolError::new(
            METHOD_NOT_FOUND,
            format!(
                "method not found: {} (names starting with '_' are reserved)",
                crate::log::shown(method)
            ),
        ));
    }
    Ok(())
}
