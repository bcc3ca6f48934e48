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
use std::ffi::CStr;
use std::rc::Rc;

use super::frame::send_message;
use super::host::{one_line_str, HostCtx};
use crate::lapps_proto::lazy::Doc;
use crate::lapps_proto::protocol::{self, encode_response_error, DocInbound, ProtocolError};
use crate::lapps_proto::Limits;
use crate::net::handle::ConnId;

/// What the host did with an inbound message that did not reach the app.
pub(crate) enum Outcome {
    /// The host answered a protocol error; keep going.
    Answered,
    /// Close the connection with this code, and this reason in the Close frame (none when
    /// empty).
    Close(u16, &'static str),
}

pub(crate) struct LappsState {
    max_errors: u32,
    /// The decoding limits, with the service's message size as the input limit (the worker
    /// refused larger messages with 1009 already).
    limits: Limits,
    /// Consecutive protocol errors per connection (cleared by a valid message).
    errors: RefCell<HashMap<ConnId, u32>>,
}

impl LappsState {
    pub fn new(max_errors: u32, max_message_size: usize) -> LappsState {
        LappsState {
            max_errors: max_errors.max(1),
            limits: Limits {
                max_input: max_message_size,
                ..Limits::default()
            },
            errors: RefCell::new(HashMap::new()),
        }
    }

    pub fn forget(&self, conn: ConnId) {
        self.errors.borrow_mut().remove(&conn);
    }

    /// The checked request in `payload`, or what the host did instead (a protocol error was
    /// answered, or the connection must close with 1003).
    pub fn inbound(
        &self,
        host: &HostCtx,
        conn: ConnId,
        opcode: u8,
        payload: &[u8],
    ) -> Result<(Rc<Doc>, DocInbound), Outcome> {
        // The peer's bytes drive this, and it runs inside the fast path's `exec_raw`, where a
        // panic would unwind into LuaJIT and abort the whole process. Pure Rust (no Lua call
        // can raise in it), so a panic is caught here and costs only this connection.
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if opcode == 2 {
                Doc::parse(payload, &self.limits)
                    .map_err(|e| protocol::undecodable(payload, e))
                    .and_then(|doc| protocol::check_doc(&doc).map(|i| (doc, i)))
            } else {
                Err(ProtocolError {
                    code: protocol::PARSE_ERROR,
                    message: "LAppS messages are CBOR maps in binary frames".into(),
                    notification: false,
                })
            }
        }));
        let Ok(inbound) = parsed else {
            crate::service_log!(
                host,
                crate::log::Level::Error,
                "{} bug: reading a LAppS message of {:#x} panicked ({} bytes); closing it with \
                 1011",
                host.tag(),
                conn.as_u64(),
                payload.len()
            );
            return Err(Outcome::Close(1011, ""));
        };
        match inbound {
            Ok(i) => {
                let mut errors = self.errors.borrow_mut();
                if !errors.is_empty() {
                    errors.remove(&conn);
                }
                Ok(i)
            }
            Err(e) => Err(self.refuse(host, conn, e)),
        }
    }

    /// The app's handler raised `error` for `method`: logged, and answered with -32603 when
    /// the message was a request the app has not answered. Some close code when the connection
    /// must close (too many answers waiting, see [`HeldAnswers`](super::held::HeldAnswers)).
    pub fn failed(
        &self,
        host: &HostCtx,
        conn: ConnId,
        method: &str,
        is_request: bool,
        error: &str,
    ) -> Option<u16> {
        let error = one_line_str(error);
        crate::service_log!(
            host,
            crate::log::Level::Error,
            "{} onMessage failed for method {} of {:#x}: {}",
            host.tag(),
            crate::log::shown(method),
            conn.as_u64(),
            error
        );
        // One response per request. Responses answer the oldest requests first, and this is
        // the newest, so it has had its answer exactly when nothing is owed any more (the
        // handler may have answered it, or an earlier one, before it raised).
        let owed = host.hub.owed_responses(conn).unwrap_or(0);
        if is_request && owed > 0 && host.hub.take_response(conn) {
            let answer = encode_response_error(protocol::INTERNAL_ERROR, "internal error", None);
            return self.answer(host, conn, answer, true).err();
        }
        None
    }

    /// A host answer, in order behind the app's (see [`HeldAnswers`](super::held::HeldAnswers));
    /// Err(1008) when too many wait already: the client keeps sending requests the host must
    /// answer while the app owes an earlier one.
    fn answer(&self, host: &HostCtx, conn: ConnId, answer: Vec<u8>, took: bool) -> Result<(), u16> {
        if host.held.answer(host, conn, answer, took) {
            return Ok(());
        }
        crate::service_log!(
            host,
            crate::log::Level::Info,
            "{} closing {:#x} with 1008: {} host answers wait behind a response its app owes",
            host.tag(),
            conn.as_u64(),
            super::held::MAX_WAITING
        );
        Err(1008)
    }

    /// A valid message of `len` bytes did not fit this instance's memory budget even after a
    /// full collection (the app keeps that much of earlier messages): dropped with an error in
    /// the log; a request is answered with -32603 (after the responses its app owes, and not
    /// counted as the client's protocol error). Some close code as for [`Self::failed`].
    pub fn no_room(
        &self,
        host: &HostCtx,
        conn: ConnId,
        is_request: bool,
        len: usize,
    ) -> Option<u16> {
        crate::service_log!(
            host,
            crate::log::Level::Error,
            "{} no room for a message of {len} bytes from {:#x} beside what this instance keeps \
             (memory_limit): dropped",
            host.tag(),
            conn.as_u64()
        );
        if !is_request {
            return None;
        }
        let answer = encode_response_error(protocol::INTERNAL_ERROR, "not enough memory", None);
        self.answer(host, conn, answer, false).err()
    }

    fn refuse(&self, host: &HostCtx, conn: ConnId, e: ProtocolError) -> Outcome {
        if e.notification {
            // A client notification gets no response, not even an error: the client would
            // take it for the answer to its oldest pending call. Its one trace is this line
            // (rate-limited: a client sending garbage cannot flood the log).
            crate::service_log!(
                host,
                crate::log::Level::Info,
                "{} dropped a malformed notification from {:#x}: {} ({})",
                host.tag(),
                conn.as_u64(),
                e.message,
                e.code
            );
        } else {
            // The client hears why in the answer; the operator, at debug (a line each would
            // let one client fill the log with its own mistakes).
            crate::debug!(
                "{} answered a malformed request from {:#x}: {} ({})",
                host.tag(),
                conn.as_u64(),
                e.message,
                e.code
            );
            // Never reached the app, so not counted as owed; after the responses it owes.
            let answer = encode_response_error(e.code, &e.message, None);
            if let Err(code) = self.answer(host, conn, answer, false) {
                return Outcome::Close(code, "");
            }
        }
        // A call to a reserved name is a well-formed message, answered -32601 as an unknown
        // method would be: not garbage, so it ends a run of errors as any call does.
        if e.code == protocol::METHOD_NOT_FOUND {
            self.errors.borrow_mut().remove(&conn);
            return Outcome::Answered;
        }
        let mut errors = self.errors.borrow_mut();
        let n = errors.entry(conn).or_insert(0);
        *n += 1;
        if *n >= self.max_errors {
            crate::service_log!(
                host,
                crate::log::Level::Info,
                "{} closing {:#x} with 1003: {} protocol errors in a row (last: {} {})",
                host.tag(),
                conn.as_u64(),
                n,
                e.code,
                e.message
            );
            return Outcome::Close(1003, "too many malformed messages in a row");
        }
        Outcome::Answered
    }
}

/// Why a response is not sent: every request of the connection that reached its app has had
/// its response. One more would be taken by the client for the answer to its next call.
pub(crate) const NOT_OWED: &CStr = c"no request awaiting a response";

/// Queues one CBOR message as a binary frame on `conn`. A response (cid 0) must be owed (see
/// `Hub::take_response`): otherwise nothing is sent and the reason is returned.
/// Host answers waiting behind it follow it: those of any instance, from this thread's outbox
/// (`shared_answers`; then this instance's own, which `release` finds sent or due).
pub(crate) fn send_cbor(host: &HostCtx, conn: ConnId, cbor: &[u8]) -> Result<(), &'static CStr> {
    let response = protocol::is_response(cbor);
    if response && !host.hub.take_response(conn) {
        return Err(if host.hub.is_live(conn) {
            NOT_OWED
        } else {
            c"closed"
        });
    }
    let answers = host.hub.answers();
    let shared = response && answers.any_waiting();
    if shared {
        send_host_answers(host, conn, answers.due_before_response(conn));
    }
    send_message(host, conn, crate::ws::Opcode::Binary, cbor);
    if response {
        host.queued_counted(conn);
        if shared {
            send_host_answers(host, conn, answers.due_after_response(conn));
        }
        if !host.held.is_empty() {
            host.held.release(host, conn);
        }
    }
    Ok(())
}

/// Queues host answers another instance held (each counted as unposted by `Hub::hold_answer`
/// until this thread posts it).
fn send_host_answers(host: &HostCtx, conn: ConnId, answers: Vec<Vec<u8>>) {
    for cbor in answers {
        send_message(host, conn, crate::ws::Opcode::Binary, &cbor);
        host.queued_counted(conn);
    }
}
