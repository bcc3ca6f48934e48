//! The per-message crossings of the LAppS protocol on the Lua C API: calling `onMessage` for a
//! run of LAppS messages, and `ws:send_response(handler, array)` with an nljson array.
//!
//! Owns only these two hot paths; the rules (what is a valid request, what is answered) stay in
//! [`super::lapps`] and `lapps_proto::protocol`. Same reason and error discipline as
//! [`super::fastpath`]: a message costs its decode, four pushes and one `lua_pcall` with our
//! traceback handler; the app's errors never unwind through Rust (Lua's out-of-memory error
//! does, running our destructors: see `fastpath`'s module doc); the Rust parts of
//! `fast_send_response` run under `catch_unwind` and raise nothing.

use std::cell::RefCell;
use std::ffi::{c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use mlua::{ffi, Function, Lua};

use super::fastpath::{fail, handler_of, string_at};
use super::host::HostCtx;
use super::inbox::{Batch, Event, Kind};
use super::lapps::{send_cbor, LappsState, Outcome};
use crate::lapps_proto::json_ud;
use crate::lapps_proto::lazy::{self, Handle};
use crate::lapps_proto::lua::UNLIMITED_COPY_BYTES;
use crate::lapps_proto::node::{CopyRoom, Node};
use crate::lapps_proto::protocol::{self, DocInbound};
use crate::lapps_proto::tree_budget;
use crate::lapps_proto::Limits;
use crate::net::handle::ConnId;
use crate::net::hub::Speaks;

/// Calls `on_message(handler, msg_type, message)` for every valid LAppS message of `events`
/// (a run without opens or closes), answering protocol errors and failed requests as
/// [`LappsState`] says. Connections this instance closes or lets go (`host.closing`) are
/// skipped; those that must close are handed to `close` (1003 after too many protocol
/// errors), except that one whose `onMessage` did not return `true` goes away (1000) after
/// the answers it is owed ([`HostCtx::go_away`]). `traceback` is
/// [`super::fastpath::traceback_function`].
///
/// A push that runs out of memory fails that message only, as an error in its `onMessage`
/// would (a request gets -32603): the run goes on after it. Err only when the views'
/// metatable cannot be made (nothing of the run is handled then).
#[allow(clippy::too_many_arguments)]
pub(crate) fn call_requests(
    lua: &Lua,
    host: &HostCtx,
    lapps: &LappsState,
    on_message: &Function,
    traceback: &Function,
    batch: &Batch,
    events: &[Event],
    close: impl Fn(&HostCtx, ConnId, u16, &str),
) -> mlua::Result<()> {
    crate::lapps_proto::nljson::ensure_metatable(lua)?;
    let mut next = 0;
    while next < events.len() {
        // The message under way, for a push that raises: its index, and once the app is to
        // see it (a request's response expected) its document, method and kind.
        let current: RefCell<Option<(usize, Option<Calling>)>> = RefCell::new(None);
        // SAFETY: the closure uses the Lua C API on the state mlua hands it, keeps the stack
        // balanced (settop back to slot 3 after each message: handler, function and the views'
        // metatable, which ensure_metatable installed) and calls Lua code only through
        // lua_pcall with our message handler, so the app's errors never unwind through it. A
        // push that runs out of memory raises (as may a full collection, nothing else: LuaJIT
        // drops the errors of finalizers, `fastpath`'s module doc), which exec_raw's protected
        // call turns into Err: that
        // error unwinds through frames owning an `Rc<Doc>`, sound because the vendored LuaJIT
        // is built with external unwinding (LUAJIT_UNWIND_EXTERNAL: its errors run Rust
        // destructors); exec_raw resets the stack. The peer's bytes are read under
        // `catch_unwind` (`Lapps::inbound`): no panic unwinds into Lua.
        let done = unsafe {
            lua.exec_raw::<()>((traceback, on_message), |l| {
                json_ud::push_metatable(l);
                for (i, e) in events.iter().enumerate().skip(next) {
                    let Kind::Message(opcode) = e.kind else {
                        continue;
                    };
                    let conn = e.conn;
                    *current.borrow_mut() = Some((i, None));
                    {
                        let closing = host.closing.borrow();
                        if !closing.is_empty() && closing.contains(&conn) {
                            continue;
                        }
                    }
                    let inbound = match lapps.inbound(host, conn, opcode, batch.payload(e)) {
                        Ok(i) => i,
                        Err(Outcome::Close(code, reason)) => {
                            close(host, conn, code, reason);
                            continue;
                        }
                        Err(Outcome::Answered) => continue,
                    };
                    let (
                        doc,
                        DocInbound {
                            msg_type,
                            method_at,
                        },
                    ) = inbound;
                    let is_request = !msg_type.is_notification();
                    if lazy::over_budget() {
                        // The bytes of messages whose views are garbage now, kept until their
                        // finalizers run. Not for a message past the limit on its own, which no
                        // collection makes room for (a client could make every message cost one).
                        // The cycle itself may run out of memory (it shrinks the string
                        // table): then this message fails as a push would (1011).
                        if !lazy::never_fits(&doc) {
                            ffi::lua_gc(l, ffi::LUA_GCCOLLECT, 0);
                        }
                        if lazy::over_budget() {
                            let doc_len = doc.bytes().len();
                            drop(doc);
                            if let Some(code) = lapps.no_room(host, conn, is_request, doc_len) {
                                close(host, conn, code, "");
                            }
                            continue;
                        }
                    }
                    let root = doc.root();
                    host.reset_budget();
                    if is_request {
                        // False when the client is gone: its request is still the app's to see.
                        host.hub.expect_response(conn);
                        if !host.held.is_empty() {
                            host.held.request_reached_app(conn);
                        }
                    }
                    *current.borrow_mut() = Some((
                        i,
                        Some(Calling {
                            doc: Rc::clone(&doc),
                            method_at,
                            is_request,
                        }),
                    ));
                    ffi::lua_pushvalue(l, 2);
                    ffi::lua_pushnumber(l, conn.as_u64() as f64);
                    ffi::lua_pushinteger(l, msg_type as u8 as ffi::lua_Integer);
                    json_ud::push_handle_with(l, Handle::Raw(Rc::clone(&doc), root), 3);
                    match ffi::lua_pcall(l, 3, 1, 1) {
                        0 => {
                            if ffi::lua_type(l, -1) != ffi::LUA_TBOOLEAN
                                || ffi::lua_toboolean(l, -1) == 0
                            {
                                // After the answers it is owed (some may come from
                                // another thread later): not a Close that refuses them.
                                host.go_away(conn, 1000);
                            }
                        }
                        status => {
                            let error = string_at(l, -1);
                            let out_of_memory = super::collect::ran_out_of_memory(status, &error);
                            // What the failed call built is garbage now (see `collect`).
                            ffi::lua_settop(l, 3);
                            super::collect::after_failed_call(l, out_of_memory);
                            // The bytes stay as they came, whatever the app changed.
                            let method = doc.text(method_at).unwrap_or_default();
                            if let Some(code) =
                                lapps.failed(host, conn, &method, is_request, &error)
                            {
                                close(host, conn, code, "");
                            }
                        }
                    }
                    ffi::lua_settop(l, 3);
                    *current.borrow_mut() = None;
                }
            })
        };
        let Err(err) = done else {
            break;
        };
        // What the pushes built is garbage now (see `collect`).
        super::collect::after_failed_callback(lua, &err);
        match current.into_inner() {
            Some((i, calling)) => {
                let conn = events[i].conn;
                let code = match calling {
                    Some(c) => {
                        let method = c.doc.text(c.method_at).unwrap_or_default();
                        lapps.failed(host, conn, &method, c.is_request, &err.to_string())
                    }
                    None => {
                        log_failed_run(host, &err);
                        Some(1011)
                    }
                };
                if let Some(code) = code {
                    close(host, conn, code, "");
                }
                next = i + 1;
            }
            None => {
                // Before any message (exec_raw's own pushes): the rest of the run fails.
                log_failed_run(host, &err);
                for e in &events[next..] {
                    if matches!(e.kind, Kind::Message(_))
                        && !host.closing.borrow().contains(&e.conn)
                    {
                        close(host, e.conn, 1011, "");
                    }
                }
                break;
            }
        }
    }
    Ok(())
}

/// A message on its way into `onMessage` (see [`call_requests`]).
struct Calling {
    doc: Rc<lazy::Doc>,
    method_at: usize,
    is_request: bool,
}

/// The line of a run of requests whose `onMessage` call failed outside any one request.
fn log_failed_run(host: &HostCtx, err: &mlua::Error) {
    crate::service_log!(
        host,
        crate::log::Level::Error,
        "{} onMessage: {}",
        host.tag(),
        err
    );
}

/// The `ws:send_response` function: `fast_send_response` with the host, the general
/// implementation `slow` and the nljson metatable as upvalues.
pub(crate) fn send_response_function(
    lua: &Lua,
    host: &Rc<HostCtx>,
    slow: Function,
) -> mlua::Result<Function> {
    crate::lapps_proto::nljson::ensure_metatable(lua)?;
    let metatable = json_ud::metatable(lua)?;
    super::fastpath::host_closure(lua, host, (slow, metatable), fast_send_response)
}

thread_local! {
    /// The CBOR of the response being sent (framed from here; reused to spare an allocation).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `ws:send_response(handler, result)` with a number handler and an nljson array result,
/// encoded straight from the tree; any other shape (and a tree too deep to encode) is passed on
/// to the general function, which also gives the errors.
unsafe extern "C-unwind" fn fast_send_response(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: (whole function) `l` is the running state; indices are checked with lua_type
    // before use; the node reference stays valid while the userdata is on the stack (index 3)
    // and is used only before this function returns.
    unsafe {
        if ffi::lua_gettop(l) == 3 && ffi::lua_type(l, 2) == ffi::LUA_TNUMBER {
            if let Some(handle) = json_ud::get_with(l, 3, ffi::lua_upvalueindex(3)) {
                let host = &*(ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *const HostCtx);
                // Not a live LAppS connection: the general path answers, after checking the
                // result (a result that is not an array raises whatever the handler).
                let conn = handler_of(ffi::lua_tonumber(l, 2))
                    .filter(|&c| host.hub.speaks(c) == Some(Speaks::Lapps));
                if let Some(conn) = conn {
                    match catch_unwind(AssertUnwindSafe(|| send_handle(host, conn, handle))).ok() {
                        Some(Some(Ok(()))) => {
                            ffi::lua_pushboolean(l, 1);
                            return 1;
                        }
                        Some(Some(Err(why))) => return fail(l, why),
                        Some(None) => {}
                        None => return fail(l, c"internal error"),
                    }
                }
            }
        }
        // The general path: a tail call. No Rust value with a destructor is alive here, so its
        // errors may unwind through us.
        let n = ffi::lua_gettop(l);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(2));
        ffi::lua_insert(l, 1);
        ffi::lua_call(l, n, ffi::LUA_MULTRET);
        ffi::lua_gettop(l)
    }
}

/// Encodes `{status = 1, cid = 0, result = array}` and queues it (what `send_cbor` answered);
/// `None` when `handle` is not an array or cannot be encoded here (nothing was sent).
fn send_handle(host: &HostCtx, conn: ConnId, handle: &Handle) -> Option<Result<(), &'static CStr>> {
    SCRATCH.with(|s| {
        let Ok(mut out) = s.try_borrow_mut() else {
            return None;
        };
        out.clear();
        if let Some((n, items)) = handle.canonical_array() {
            // Already the encoder's bytes: copied as they are.
            protocol::begin_response_ok(&mut out, n as usize);
            out.extend_from_slice(items);
            return Some(send_cbor(host, conn, &out));
        }
        let node = handle.resolve()?;
        let Node::Array(items) = &node else {
            return None;
        };
        let items = items.try_borrow().ok()?;
        protocol::begin_response_ok(&mut out, items.len());
        // The result array is the outermost container, as when it is converted to a Value,
        // and the copy's bounds apply (past them the general path raises as it says).
        let limits = Limits::default();
        let depth = limits.max_depth - 1;
        let room_bytes = tree_budget::room_at_most().unwrap_or(UNLIMITED_COPY_BYTES);
        let mut room = CopyRoom::new(limits.max_total_items, room_bytes);
        room.take(0).ok()?;
        if items
            .iter()
            .any(|n| n.encode_cbor(&mut out, depth, &mut room).is_err())
        {
            return None;
        }
        Some(send_cbor(host, conn, &out))
    })
}
