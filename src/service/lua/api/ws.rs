//! `ws`: sending to and closing connections by `handler`.
//!
//! Sends are framed here, on the instance thread, and queued in the outbox; the IOWorker only
//! copies the bytes to the socket. A stale handler (its connection is gone) is detected by the
//! hub's generation check and answered with `nil, "closed"`.

use std::rc::Rc;

use mlua::{Lua, MultiValue, Value};

use std::num::NonZeroU64;

use super::{fail, handler, method_args, ok, Ret};
use crate::lapps_proto::lua::from_lua;
use crate::lapps_proto::node::number_key_text;
use crate::lapps_proto::protocol;
use crate::lapps_proto::value::Value as CborValue;
use crate::net::handle::ConnId;
use crate::net::hub::Speaks;
use crate::service::lua::error_values::raising_strings;
use crate::service::lua::fastpath::{reason, NOT_LAPPS, NOT_RAW};
use crate::service::lua::frame::{checked_opcode, send_message};
use crate::service::lua::host::HostCtx;
use crate::service::lua::lapps::send_cbor;
use crate::service::lua::{fastpath, lapps_fast};
use crate::ws::close::MAX_REASON;

/// Close codes an application may send (RFC 6455 section 7.4).
/// Close codes a server app may send (RFC 6455 7.4.1, the IANA registry): 1010 is a
/// client's (the server did not negotiate an extension it expected), 1012-1014 (service
/// restart, try again later, bad gateway) are a server's.
pub(crate) fn valid_server_close_code(code: i64) -> bool {
    matches!(code, 1000..=1003 | 1007..=1009 | 1011..=1014 | 3000..=4999)
}

/// Close codes a client (`cws`) may send: 1010 yes, the server's 1012-1014 no.
pub(crate) fn valid_client_close_code(code: i64) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// A whole-number argument within 64 bits; anything else (a fraction, NaN, a string) is a
/// programming error.
fn whole(v: &Value, what: &str) -> mlua::Result<i64> {
    // 2^63: a whole number below it in size fits an i64 (mlua hands most over as Integer).
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    match v {
        Value::Integer(i) => Ok(*i),
        Value::Number(n) if n.fract() == 0.0 && (-LIMIT..LIMIT).contains(n) => Ok(*n as i64),
        // As Lua would print it.
        Value::Number(n) if n.fract() == 0.0 => Err(mlua::Error::runtime(format!(
            "{what} must fit in 64 bits (-2^63 to 2^63 - 1), got {}",
            number_key_text(*n)
        ))),
        other => Err(mlua::Error::runtime(format!(
            "{what} must be a whole number, got {}",
            match other {
                Value::Number(n) => number_key_text(*n),
                o => crate::lapps_proto::lua::lua_type(o).to_string(),
            }
        ))),
    }
}

/// A close code argument: absent or nil is 1000; a number must be a whole one.
pub(crate) fn close_code_arg(v: Option<&Value>) -> Option<i64> {
    match v {
        None | Some(Value::Nil) => Some(1000),
        Some(Value::Integer(i)) => Some(*i),
        Some(Value::Number(n)) if n.fract() == 0.0 && n.abs() < 1e15 => Some(*n as i64),
        Some(_) => None,
    }
}

pub(crate) fn install(lua: &Lua, host: &Rc<HostCtx>) -> mlua::Result<()> {
    let t = lua.create_table()?;
    let h = Rc::clone(host);
    let slow_send = lua.create_function(move |lua, args: MultiValue| -> mlua::Result<Ret> {
        let (conn, a, b): (Value, Value, Option<Value>) = method_args(lua, args)?;
        // The original's LAppS form: ws:send(handler, value). The value is checked first,
        // whatever the handler, as send_response and the other helpers check theirs.
        if let value @ (Value::Table(_) | Value::UserData(_)) = &a {
            let cbor = encode_value(lua, value)?;
            let Some(conn) = handler(&conn) else {
                return fail("bad handler");
            };
            return match h.hub.speaks(conn) {
                None => fail("closed"),
                Some(Speaks::Lapps) => sent(send_cbor(&h, conn, &cbor)),
                Some(Speaks::Raw) => fail(reason(NOT_LAPPS)),
            };
        }
        let Some(conn) = handler(&conn) else {
            return fail("bad handler");
        };
        let Some(speaks) = h.hub.speaks(conn) else {
            return fail("closed");
        };
        let opcode = match a {
            _ if speaks == Speaks::Lapps => return fail(reason(NOT_RAW)),
            Value::Integer(i) => i,
            Value::Number(n) if n.fract() == 0.0 => n as i64,
            _ => return fail("bad opcode"),
        };
        let msg = match b {
            None | Some(Value::Nil) => return fail("no message"),
            Some(v @ (Value::String(_) | Value::Integer(_) | Value::Number(_))) => {
                match lua.coerce_string(v)? {
                    Some(s) => s,
                    None => return fail("bad message"),
                }
            }
            Some(_) => return fail("bad message"),
        };
        let bytes = msg.as_bytes();
        match checked_opcode(opcode, &bytes) {
            Ok(op) => send_message(&h, conn, op, &bytes),
            Err(reason) => return fail(reason),
        }
        ok(Value::Boolean(true))
    })?;
    // The common shape (number opcode, string message) is served without mlua's conversions.
    // The fast path passes any other call on to the general function: its errors reach the
    // app as strings, as every host function's do (the module's others are wrapped by the
    // caller).
    let slow_send = raising_strings(lua, slow_send)?;
    t.set("send", fastpath::send_function(lua, host, slow_send)?)?;
    let h = Rc::clone(host);
    let slow_response = lua.create_function(move |lua, args: MultiValue| -> mlua::Result<Ret> {
        let (conn, result): (Value, Value) = method_args(lua, args)?;
        // Arguments first: a programming error raises whatever the connection.
        let result = array_of(lua, &result)
            .map_err(|e| mlua::Error::runtime(format!("ws:send_response: result: {e}")))?;
        let conn = match live_lapps(&h, &conn) {
            Ok(c) => c,
            Err(reason) => return fail(reason),
        };
        sent(send_cbor(&h, conn, &protocol::encode_response_ok(&result)))
    })?;
    // An nljson array result is encoded straight from its tree, without mlua's conversions.
    t.set(
        "send_response",
        lapps_fast::send_response_function(lua, host, raising_strings(lua, slow_response)?)?,
    )?;
    let h = Rc::clone(host);
    t.set(
        "send_error",
        lua.create_function(move |lua, args: MultiValue| -> mlua::Result<Ret> {
            let (conn, code, message, data): (Value, Value, Value, Value) = method_args(lua, args)?;
            let code = whole(&code, "ws:send_error: code")?;
            // A number is taken as its text, as Lua's own string functions take one.
            let message = match message {
                Value::String(s) => s,
                n @ (Value::Integer(_) | Value::Number(_)) => lua
                    .coerce_string(n)?
                    .ok_or_else(|| mlua::Error::runtime("ws:send_error: message"))?,
                other => {
                    return Err(mlua::Error::runtime(format!(
                        "bad argument #3 to 'ws:send_error' (string expected, got {})",
                        crate::lapps_proto::lua::lua_type(&other)
                    )))
                }
            };
            let data = match data {
                Value::Nil => None,
                v => Some(
                    from_lua(lua, &v)
                        .map_err(|e| mlua::Error::runtime(format!("ws:send_error: data: {e}")))?,
                ),
            };
            let conn = match live_lapps(&h, &conn) {
                Ok(c) => c,
                Err(reason) => return fail(reason),
            };
            let answer =
                protocol::encode_response_error(code, &message.to_string_lossy(), data.as_ref());
            sent(send_cbor(&h, conn, &answer))
        })?,
    )?;
    let h = Rc::clone(host);
    t.set(
        "send_oon",
        lua.create_function(move |lua, args: MultiValue| -> mlua::Result<Ret> {
            let (conn, cid, message): (Value, Value, Value) = method_args(lua, args)?;
            // Raised whatever the handler (as every argument error here): a programming error,
            // not a closed connection. Past 2^53 a Lua number is a float: up to 2^64 it still
            // names a channel, as a client's notification may.
            let cid = match cid {
                Value::Number(n) if n.fract() == 0.0 && n >= 2f64.powi(53) && n < 2f64.powi(64) => {
                    n as u64
                }
                Value::Number(n) if n.fract() == 0.0 && n >= 2f64.powi(64) => {
                    return Err(mlua::Error::runtime(format!(
                        "ws:send_oon: cid must be below 2^64, got {}",
                        number_key_text(n)
                    )))
                }
                other => u64::try_from(whole(&other, "ws:send_oon: cid")?)
                    .map_err(|_| mlua::Error::runtime("ws:send_oon: cid must not be negative"))?,
            };
            let Some(cid) = NonZeroU64::new(cid) else {
                return Err(mlua::Error::runtime(
                    "ws:send_oon: channel 0 is the command channel",
                ));
            };
            let message = array_of(lua, &message)
                .map_err(|e| mlua::Error::runtime(format!("ws:send_oon: message: {e}")))?;
            let conn = match live_lapps(&h, &conn) {
                Ok(c) => c,
                Err(reason) => return fail(reason),
            };
            sent(send_cbor(&h, conn, &protocol::encode_oon(cid, &message)))
        })?,
    )?;
    let h = Rc::clone(host);
    t.set(
        "close",
        lua.create_function(move |lua, args: MultiValue| -> mlua::Result<Ret> {
            let (conn, code, reason): (Value, Option<Value>, Option<Value>) =
                method_args(lua, args)?;
            let Some(conn) = handler(&conn) else {
                return fail("bad handler");
            };
            let Some(code) = close_code_arg(code.as_ref()).filter(|&c| valid_server_close_code(c))
            else {
                return fail("bad close code");
            };
            // The original's third argument: a reason the Close frame carries (RFC 6455 5.5.1:
            // UTF-8, within the control frame's 125 bytes).
            let reason = match reason {
                None | Some(Value::Nil) => None,
                Some(Value::String(s)) => match std::str::from_utf8(&s.as_bytes()) {
                    Ok(r) if r.len() <= MAX_REASON => Some(Box::from(r)),
                    Ok(_) => return fail("close reason too long (at most 123 bytes)"),
                    Err(_) => return fail("invalid UTF-8"),
                },
                Some(_) => return fail("bad close reason"),
            };
            if !h.hub.is_live(conn) {
                return fail("closed");
            }
            h.close_with(conn, code as u16, reason);
            ok(Value::Boolean(true))
        })?,
    )?;
    lua.globals().set("ws", t)
}

/// `true`, or `nil, reason` for a CBOR message `send_cbor` did not send.
fn sent(r: Result<(), &'static std::ffi::CStr>) -> mlua::Result<Ret> {
    match r {
        Ok(()) => ok(Value::Boolean(true)),
        Err(why) => fail(reason(why)),
    }
}

/// The live LAppS connection a Lua handler names, or why not.
fn live_lapps(h: &HostCtx, v: &Value) -> Result<ConnId, &'static str> {
    // As ws:send answers: a value that can name no connection is not a closed one.
    let conn = handler(v).ok_or("bad handler")?;
    match h.hub.speaks(conn) {
        None => Err("closed"),
        Some(Speaks::Raw) => Err(reason(NOT_LAPPS)),
        Some(Speaks::Lapps) => Ok(conn),
    }
}

/// A Lua array (table or nljson array) as CBOR values.
fn array_of(lua: &Lua, v: &Value) -> Result<Vec<CborValue>, String> {
    match from_lua(lua, v)? {
        CborValue::Array(items) => Ok(items),
        // `{}` converts to an empty object: as a result it means "no values".
        CborValue::Map(m) if m.is_empty() => Ok(Vec::new()),
        CborValue::Map(_) => Err(match crate::lapps_proto::lua::array_hole(v) {
            Some(i) => format!(
                "an array expected, got a table without element {i} (an array's keys are \
                 exactly 1..n: store nljson.null for a missing element)"
            ),
            None => "an array expected, got an object (a table with named keys)".into(),
        }),
        _ => Err(format!(
            "an array expected, got {}",
            crate::lapps_proto::lua::lua_type(v)
        )),
    }
}

/// `ws:send(handler, value)`: a response or OON checked, CBOR-encoded and sent as one frame.
/// The LAppS value form's `value`, checked and CBOR-encoded; a malformed one raises.
fn encode_value(lua: &Lua, value: &Value) -> mlua::Result<Vec<u8>> {
    from_lua(lua, value)
        .and_then(|v| protocol::validate_outbound(&v))
        .map_err(|e| mlua::Error::runtime(format!("ws:send: {e}")))
}
