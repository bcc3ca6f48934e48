//! The LAppS protocol on the instance side: CBOR requests in, `onMessage(handler, msg_type,
//! message)` with the decoded map as an `nljson` value, protocol errors answered on CCH.
//!
//! Owns the error answers the host gives on the app's behalf: -32700 for a text frame or a
//! payload that is not CBOR / not a map, -32600 for a malformed request (codes and texts from
//! [`crate::lapps_proto::protocol`]), -32603 when the app's handler raises for a request. A
//! client that keeps sending garbage (`max_protocol_errors` in a row) is closed with 1003.
//! Responses to valid requests are the app's: `ws:send_response` / `ws:send_error` / `ws:send`.

use std::cell::RefCell;
use std::collections::HashMap;

use mlua::{Function, Lua, Value};

use super::api::handler_value;
use super::frame::send_message;
use super::host::{one_line, HostCtx};
use crate::lapps_proto::lua::into_lua;
use crate::lapps_proto::protocol::{self, encode_response_error, ProtocolError};
use crate::net::handle::ConnId;

/// What happened to one inbound message.
pub(crate) enum Outcome {
    /// `onMessage` ran and returned this (`true` keeps the connection).
    Returned(mlua::Result<Value>),
    /// The host answered (a protocol error, or -32603 for a failed handler); keep going.
    Answered,
    /// Close the connection with this code.
    Close(u16),
}

pub(crate) struct LappsState {
    max_errors: u32,
    /// Consecutive protocol errors per connection (cleared by a valid message).
    errors: RefCell<HashMap<ConnId, u32>>,
}

impl LappsState {
    pub fn new(max_errors: u32) -> LappsState {
        LappsState {
            max_errors: max_errors.max(1),
            errors: RefCell::new(HashMap::new()),
        }
    }

    pub fn forget(&self, conn: ConnId) {
        self.errors.borrow_mut().remove(&conn);
    }

    pub fn call(
        &self,
        lua: &Lua,
        host: &HostCtx,
        on_message: &Function,
        conn: ConnId,
        opcode: u8,
        payload: &[u8],
    ) -> Outcome {
        let inbound = if opcode == 2 {
            protocol::parse_inbound(payload)
        } else {
            Err(ProtocolError {
                code: protocol::PARSE_ERROR,
                message: "LAppS messages are CBOR maps in binary frames".into(),
            })
        };
        let inbound = match inbound {
            Ok(i) => i,
            Err(e) => return self.refuse(host, conn, e),
        };
        self.errors.borrow_mut().remove(&conn);
        let is_request = !inbound.msg_type().is_notification();
        let msg_type = inbound.msg_type() as u8 as i64;
        let method = inbound.method().to_string();
        let result = into_lua(lua, inbound.into_message())
            .and_then(|m| on_message.call::<Value>((handler_value(conn), msg_type, m)));
        match result {
            Ok(v) => Outcome::Returned(Ok(v)),
            Err(err) => {
                if matches!(err, mlua::Error::MemoryError(_)) {
                    let _ = lua.gc_collect();
                    let _ = lua.gc_collect();
                }
                crate::error!(
                    "{} onMessage failed for method {method:?} of {:#x}: {}",
                    host.tag(),
                    conn.as_u64(),
                    one_line(&err)
                );
                if is_request {
                    let answer =
                        encode_response_error(protocol::INTERNAL_ERROR, "internal error", None);
                    send_cbor(host, conn, &answer);
                }
                Outcome::Answered
            }
        }
    }

    fn refuse(&self, host: &HostCtx, conn: ConnId, e: ProtocolError) -> Outcome {
        send_cbor(host, conn, &encode_response_error(e.code, &e.message, None));
        let mut errors = self.errors.borrow_mut();
        let n = errors.entry(conn).or_insert(0);
        *n += 1;
        if *n >= self.max_errors {
            crate::info!(
                "{} closing {:#x} with 1003: {} protocol errors in a row (last: {} {})",
                host.tag(),
                conn.as_u64(),
                n,
                e.code,
                e.message
            );
            return Outcome::Close(1003);
        }
        Outcome::Answered
    }
}

/// Queues one CBOR message as a binary frame on `conn`.
pub(crate) fn send_cbor(host: &HostCtx, conn: ConnId, cbor: &[u8]) {
    send_message(host, conn, crate::ws::Opcode::Binary, cbor);
}
