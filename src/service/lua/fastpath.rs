//! The crossings between Rust and Lua written against the Lua C API: the two per-message ones,
//! calling `onMessage` for a run of RAW messages and `ws:send(handler, opcode, string)`; and
//! the protected call with its message handler that every other callback (`init`, `run`,
//! `onStart`, `onShutdown`) goes through, which also renders error values for the log.
//!
//! Everything else goes through mlua. Measured reason
//! (docs/threading.md): through mlua each crossing converts every argument into a `Value`
//! (a registry reference each), pushes a fresh traceback closure and checks the stack, which
//! cost more than the echo itself. Here a message costs four pushes and one `lua_pcall`, and a
//! send reads its arguments in place (the payload is not copied before it is framed).
//!
//! Error discipline: Lua errors are caught by our own `lua_pcall` (never unwind through Rust),
//! so the only Lua calls outside it are pushes and the full collection after a failed call
//! (`collect`), which can fail only when out of memory; mlua's `exec_raw` catches that around
//! the run (the error unwinds through our frames as an
//! external exception: the vendored LuaJIT's default build, LUAJIT_UNWIND_EXTERNAL), and the
//! run goes on after the message whose push failed. `fast_send` runs its Rust part under
//! `catch_unwind`; the loop in [`call_messages`]'s closure has no panicking operation on the
//! peer's bytes (checked slicing only): a panic there would reach LuaJIT's `lua_pcall`, which
//! drops a foreign exception, and Rust then aborts the process (the `C-unwind` contract).

use std::cell::Cell;
use std::ffi::{c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use mlua::{ffi, FromLuaMulti, Function, IntoLuaMulti, Lua};

use super::frame::{checked_opcode, send_message};
use super::host::HostCtx;
use super::inbox::{Batch, Event, Kind};
use crate::net::handle::ConnId;
use crate::net::hub::Speaks;

/// LuaJIT's own `luaL_traceback` (lj_debug.c), which mlua-sys does not bind for LuaJIT: its
/// `ffi::luaL_traceback` there is a port of Lua 5.3's, which names each level's function by
/// searching `_G` and every table in it. An app holding a 200,000-entry global table paid
/// ~12 ms per traceback for it, so a client sending requests that raise held an instance to
/// ~80 calls/s. LuaJIT's names functions from the calling code alone.
mod luajit {
    use std::ffi::{c_char, c_int};

    use mlua::ffi::lua_State;

    extern "C-unwind" {
        /// Pushes `msg` (when not null) and the traceback of `l1` from `level` on, as one
        /// string, onto `l`. Raises only out of memory.
        pub fn luaL_traceback(
            l: *mut lua_State,
            l1: *mut lua_State,
            msg: *const c_char,
            level: c_int,
        );
    }
}

/// How one `onMessage` call ended, when it did not return `true`.
pub(crate) enum Failed {
    /// Returned something else: close with 1000.
    Returned(ConnId),
    /// Raised: the message with its traceback.
    Raised { conn: ConnId, error: String },
    /// Its message (`bytes` long) did not fit in the state even after a full collection: it
    /// never reached `onMessage`.
    NoRoom { conn: ConnId, bytes: usize },
}

/// Calls `on_message(handler, opcode, payload)` for every `Message` event of `events` (the
/// caller passes a run without opens or closes), skipping connections `skip` names and those
/// whose call already failed in this run. Returns the calls that did not return `true`, in
/// order. `traceback` is [`traceback_function`].
///
/// A push that runs out of memory is made once more after the full collection that follows
/// (LuaJIT has no emergency collection: the garbage of the messages before, which the
/// incremental collector may not have reached, would otherwise cost this one). Refused again
/// (a message that does not fit the state's `memory_limit` beside what it holds), it fails
/// that message's connection only, as an error in its `onMessage` would: the run goes on
/// after it.
pub(crate) fn call_messages(
    lua: &Lua,
    host: &HostCtx,
    on_message: &Function,
    traceback: &Function,
    batch: &Batch,
    events: &[Event],
    skip: impl Fn(ConnId) -> bool,
) -> Vec<Failed> {
    let mut failed = Vec::new();
    let mut next = 0;
    // The event whose push was refused once already.
    let mut retried = None;
    while next < events.len() {
        // The event whose pushes and call are under way, for a push that raises.
        let current: Cell<Option<usize>> = Cell::new(None);
        // SAFETY: the closure only uses the Lua C API on the state mlua hands it, keeps the
        // stack balanced (settop back to the two arguments after each call) and calls Lua code
        // only through lua_pcall with our message handler, so Lua errors never unwind through
        // it. A push that runs out of memory raises (as may the full collection after a failed
        // call, `collect`; no app finalizer can run in it: `newproxy` is gone and LuaJIT runs
        // no table `__gc`), which exec_raw's protected call turns into Err: that error unwinds
        // through this closure's frames, sound because the vendored
        // LuaJIT is built with external unwinding (LUAJIT_UNWIND_EXTERNAL: its errors run Rust
        // destructors); exec_raw resets the stack.
        let done = unsafe {
            lua.exec_raw::<()>((traceback, on_message), |l| {
                for (i, e) in events.iter().enumerate().skip(next) {
                    let Kind::Message(opcode) = e.kind else {
                        continue;
                    };
                    if skip(e.conn) || failed.iter().any(|f: &Failed| f.conn() == e.conn) {
                        continue;
                    }
                    current.set(Some(i));
                    host.reset_budget();
                    let payload = batch.payload(e);
                    ffi::lua_pushvalue(l, 2);
                    ffi::lua_pushnumber(l, e.conn.as_u64() as f64);
                    ffi::lua_pushinteger(l, opcode as ffi::lua_Integer);
                    ffi::lua_pushlstring(l, payload.as_ptr().cast(), payload.len());
                    match ffi::lua_pcall(l, 3, 1, 1) {
                        0 => {
                            if ffi::lua_type(l, -1) != ffi::LUA_TBOOLEAN
                                || ffi::lua_toboolean(l, -1) == 0
                            {
                                failed.push(Failed::Returned(e.conn));
                            }
                        }
                        status => {
                            let error = string_at(l, -1);
                            let out_of_memory = super::collect::ran_out_of_memory(status, &error);
                            failed.push(Failed::Raised {
                                conn: e.conn,
                                error,
                            });
                            // What the failed call built is garbage now (see `collect`).
                            ffi::lua_settop(l, 2);
                            super::collect::after_failed_call(l, out_of_memory);
                        }
                    }
                    ffi::lua_settop(l, 2);
                    current.set(None);
                }
            })
        };
        let Err(err) = done else {
            break;
        };
        // What the pushes built is garbage now (see `collect`).
        super::collect::after_failed_callback(lua, &err);
        let error = err.to_string();
        match current.get() {
            Some(i) if retried != Some(i) && super::collect::is_out_of_memory(&err) => {
                retried = Some(i);
                next = i;
            }
            Some(i) if retried == Some(i) && super::collect::is_out_of_memory(&err) => {
                failed.push(Failed::NoRoom {
                    conn: events[i].conn,
                    bytes: batch.payload(&events[i]).len(),
                });
                next = i + 1;
            }
            Some(i) => {
                failed.push(Failed::Raised {
                    conn: events[i].conn,
                    error,
                });
                next = i + 1;
            }
            None => {
                // Before any message (exec_raw's own pushes): the rest of the run fails.
                for e in &events[next..] {
                    if matches!(e.kind, Kind::Message(_))
                        && !skip(e.conn)
                        && !failed.iter().any(|f| f.conn() == e.conn)
                    {
                        failed.push(Failed::Raised {
                            conn: e.conn,
                            error: error.clone(),
                        });
                    }
                }
                break;
            }
        }
    }
    failed
}

impl Failed {
    fn conn(&self) -> ConnId {
        match self {
            Failed::Returned(c)
            | Failed::Raised { conn: c, .. }
            | Failed::NoRoom { conn: c, .. } => *c,
        }
    }
}

/// Calls `f(args)` as `onMessage` is called: in protected mode under [`callback_handler`]'s
/// message handler, so that its error reads the same in the log (a table's fields, one
/// traceback, LuaJIT's). Every app callback goes through here or the per-message paths:
/// mlua's `Function::call` takes its traceback with mlua-sys's, which searches `_G` at every
/// level ([`luajit`]). The error comes back as mlua's: `MemoryError` when Lua ran out of
/// memory, else `RuntimeError` with the message and its traceback. An error mlua raised (a
/// Rust function's, the instruction budget's, a panic) is handed back to mlua: a panic
/// resumes (the instance ends the process, see `crate::fatal`), any other comes back as its
/// message and the traceback taken where it was raised.
pub(crate) fn call_traced<R: FromLuaMulti>(
    lua: &Lua,
    handler: &Function,
    f: &Function,
    args: impl IntoLuaMulti,
) -> mlua::Result<R> {
    let failed: Cell<Option<(c_int, String)>> = Cell::new(None);
    FAILURE_TRACE.with(|t| t.take());
    let mut pushed = args.into_lua_multi(lua)?;
    pushed.push_front(mlua::Value::Function(f.clone()));
    pushed.push_front(mlua::Value::Function(handler.clone()));
    // SAFETY: the closure calls Lua code only through lua_pcall with our message handler (at
    // index 1, `f` at 2, its arguments above), so Lua errors never unwind through it but the
    // one it raises itself: mlua's own error object, raised again for exec_raw's protected
    // call to take (no Rust value with a destructor is alive then, and the vendored LuaJIT
    // unwinds externally, see the module's notes). string_at copies the error before the
    // stack is emptied; on success only `f`'s results are left, for exec_raw to convert.
    let done = unsafe {
        lua.exec_raw::<R>(pushed, |l| {
            let status = ffi::lua_pcall(l, ffi::lua_gettop(l) - 2, ffi::LUA_MULTRET, 1);
            if status != 0 && ffi::lua_type(l, -1) == ffi::LUA_TUSERDATA {
                ffi::lua_error(l);
            }
            if status != 0 {
                failed.set(Some((status, string_at(l, -1))));
                ffi::lua_settop(l, 0);
            } else {
                ffi::lua_remove(l, 1);
            }
        })
    };
    if let Some((status, text)) = failed.take() {
        return Err(match super::collect::ran_out_of_memory(status, &text) {
            true => mlua::Error::MemoryError(text),
            false => mlua::Error::RuntimeError(text),
        });
    }
    done.map_err(|e| match FAILURE_TRACE.with(|t| t.take()) {
        Some(trace) => {
            let text = format!("{}\n{trace}", super::error_values::text(&e));
            match e {
                mlua::Error::MemoryError(_) => mlua::Error::MemoryError(text),
                _ => mlua::Error::RuntimeError(text),
            }
        }
        None => e,
    })
}

std::thread_local! {
    /// The traceback [`callback_handler`] took for an mlua error object it left as it was.
    static FAILURE_TRACE: std::cell::Cell<Option<String>> = const { std::cell::Cell::new(None) };
}

/// The message handler of [`call_traced`], created once per state where it is used.
pub(crate) fn callback_handler(lua: &Lua) -> mlua::Result<Function> {
    // SAFETY: `traceback_keeping_failures` follows the lua_CFunction contract (see its body).
    unsafe { lua.create_c_function(traceback_keeping_failures) }
}

/// [`traceback`], but for a userdata error object (mlua's: an error a Rust function or the
/// budget's hook raised, or a panic): the object stays as it is, for mlua to read (a panic
/// must resume), and its traceback goes to [`FAILURE_TRACE`].
unsafe extern "C-unwind" fn traceback_keeping_failures(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: the error object is at index 1; luaL_traceback pushes one string, copied by
    // string_at before it is popped.
    unsafe {
        if ffi::lua_type(l, 1) != ffi::LUA_TUSERDATA {
            return traceback(l);
        }
        luajit::luaL_traceback(l, l, std::ptr::null(), 1);
        let trace = string_at(l, -1);
        FAILURE_TRACE.with(|t| t.set(Some(trace)));
        ffi::lua_settop(l, 1);
    }
    1
}

/// The message handler [`call_messages`] needs, created once per state.
pub(crate) fn traceback_function(lua: &Lua) -> mlua::Result<Function> {
    // SAFETY: `traceback` follows the lua_CFunction contract (see its body).
    unsafe { lua.create_c_function(traceback) }
}

/// The `ws:send` function: `fast_send` with the host and the general implementation `slow`
/// as upvalues.
pub(crate) fn send_function(
    lua: &Lua,
    host: &Rc<HostCtx>,
    slow: Function,
) -> mlua::Result<Function> {
    host_closure(lua, host, slow, fast_send)
}

/// A C closure `fast` whose upvalues are the host (a light userdata) and then `upvalues`: first
/// `slow`, the general implementation it passes any other shape of call on to, then any others
/// `fast` needs.
pub(crate) fn host_closure(
    lua: &Lua,
    host: &Rc<HostCtx>,
    upvalues: impl IntoLuaMulti,
    fast: ffi::lua_CFunction,
) -> mlua::Result<Function> {
    let host_ptr = Rc::as_ptr(host) as *mut c_void;
    // The state keeps the host alive for as long as the closure can run.
    lua.set_app_data(Rc::clone(host));
    // SAFETY: pushes a light userdata and a closure over it and the upvalues; exec_raw returns
    // the one value left. The pointer stays valid: the state owns an Rc of the host (above),
    // and it is the state's one host (`set_app_data` keeps one value per type: each instance
    // makes one HostCtx, instance.rs, so none replaces it). Only the `debug` library
    // (`allow_debug`, which gives up memory safety: sandbox.rs) could swap the upvalue.
    unsafe {
        lua.exec_raw(upvalues, |l| {
            let n = ffi::lua_gettop(l);
            ffi::lua_pushlightuserdata(l, host_ptr);
            ffi::lua_insert(l, 1);
            ffi::lua_pushcclosure(l, fast, n + 1);
        })
    }
}

/// `ws:send(handler, opcode, message)` with a number opcode and a string message, framed
/// straight from the Lua string; any other shape is passed on to the general function.
unsafe extern "C-unwind" fn fast_send(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: (whole function) `l` is the running state; indices are checked with lua_type
    // before use; the payload pointer stays valid while the string is on the stack (index 4)
    // and is used only before this function returns.
    unsafe {
        let fast = ffi::lua_gettop(l) == 4
            && ffi::lua_type(l, 3) == ffi::LUA_TNUMBER
            && ffi::lua_type(l, 4) == ffi::LUA_TSTRING;
        if !fast {
            // The general path (the LAppS value form, wrong arguments): a tail call. No Rust
            // value with a destructor is alive here, so its errors may unwind through us.
            let n = ffi::lua_gettop(l);
            ffi::lua_pushvalue(l, ffi::lua_upvalueindex(2));
            ffi::lua_insert(l, 1);
            ffi::lua_call(l, n, ffi::LUA_MULTRET);
            return ffi::lua_gettop(l);
        }
        let host = &*(ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *const HostCtx);
        let conn = match ffi::lua_type(l, 2) {
            ffi::LUA_TNUMBER => handler_of(ffi::lua_tonumber(l, 2)),
            _ => None,
        };
        let opcode = ffi::lua_tonumber(l, 3);
        let mut len = 0usize;
        let ptr = ffi::lua_tolstring(l, 4, &mut len);
        let payload = std::slice::from_raw_parts(ptr.cast::<u8>(), len);
        let sent = catch_unwind(AssertUnwindSafe(|| send(host, conn, opcode, payload)));
        match sent {
            Ok(Ok(())) => {
                ffi::lua_pushboolean(l, 1);
                1
            }
            Ok(Err(reason)) => fail(l, reason),
            Err(_) => fail(l, c"internal error"),
        }
    }
}

/// Why `ws:send(handler, opcode, message)` refuses a LAppS connection: its client takes CBOR
/// maps only (SPEC section 4), which the host's LAppS helpers guarantee and raw bytes do not.
pub(crate) const NOT_RAW: &CStr = c"a LAppS connection: use send_response, send_error or send_oon";
/// Why the LAppS helpers refuse a RAW connection: its client never agreed to CBOR.
pub(crate) const NOT_LAPPS: &CStr = c"not a LAppS connection";

/// One of the reasons above as the `&str` the mlua-based functions answer with.
pub(crate) fn reason(why: &'static CStr) -> &'static str {
    why.to_str().unwrap_or("refused")
}

fn send(
    host: &HostCtx,
    conn: Option<ConnId>,
    opcode: f64,
    payload: &[u8],
) -> Result<(), &'static CStr> {
    let Some(conn) = conn else {
        return Err(c"bad handler");
    };
    match host.hub.speaks(conn) {
        None => return Err(c"closed"),
        Some(Speaks::Lapps) => return Err(NOT_RAW),
        Some(Speaks::Raw) => {}
    }
    // 1.0 and 2.0 are the only opcodes; anything else (fractions included) is refused.
    let opcode = if opcode == 1.0 || opcode == 2.0 {
        opcode as i64
    } else {
        0
    };
    match checked_opcode(opcode, payload) {
        Ok(op) => {
            send_message(host, conn, op, payload);
            Ok(())
        }
        Err("invalid UTF-8") => Err(c"invalid UTF-8"),
        Err(_) => Err(c"bad opcode"),
    }
}

/// A handler from its number form, as `api::handler` does for a `Value` (without `fract`, which
/// is a libm call on baseline x86-64).
pub(crate) fn handler_of(n: f64) -> Option<ConnId> {
    if !(0.0..9_007_199_254_740_992.0).contains(&n) || (n as u64) as f64 != n {
        return None;
    }
    ConnId::from_u64(n as u64)
}

/// Returns `nil, reason`.
pub(crate) unsafe fn fail(l: *mut ffi::lua_State, reason: &CStr) -> c_int {
    // SAFETY: two pushes on the running state (a C function has LUA_MINSTACK slots).
    unsafe {
        ffi::lua_pushnil(l);
        ffi::lua_pushstring(l, reason.as_ptr());
    }
    2
}

/// Message handler of [`call_messages`]: the error (a string or a number, or anything with
/// `__tostring`, such as mlua's wrapped errors; else its type, and a table's first fields)
/// followed by the Lua traceback, unless it carries one already
/// (mlua's error from a Rust function, `mqr:post` given a table, does: twice would make the
/// log line twice as long for nothing).
unsafe extern "C-unwind" fn traceback(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: the handler gets the error object at index 1; luaL_traceback and lua_pushstring
    // copy `msg` before anything it points into could be collected (the string stays on the
    // stack, and CStr::from_ptr reads it there, NUL-terminated as lua_tostring returns it).
    unsafe {
        let msg = if ffi::lua_isstring(l, 1) != 0 {
            // A string, or a number (`error(42)`), as Lua's own interpreter prints one.
            ffi::lua_tostring(l, 1)
        } else if let Some(text) = tostring_metamethod(l) {
            text
        } else if ffi::lua_type(l, 1) == ffi::LUA_TTABLE {
            // `error({code = 42})`, the idiom of structured errors: what it holds.
            let text = format!("(error object is a table value: {})", table_fields(l, 1));
            ffi::lua_pushlstring(l, text.as_ptr().cast(), text.len());
            ffi::lua_tostring(l, -1)
        } else {
            // As lua.c words it: `error()` says what it raised.
            let kind = ffi::lua_typename(l, ffi::lua_type(l, 1));
            ffi::lua_pushfstring(l, c"(error object is a %s value)".as_ptr(), kind)
        };
        if memchr::memmem::find(CStr::from_ptr(msg).to_bytes(), b"\nstack traceback:").is_some() {
            ffi::lua_pushstring(l, msg);
        } else {
            luajit::luaL_traceback(l, l, msg, 1);
        }
    }
    1
}

/// The error object's `__tostring`, called in protected mode: one that raises (or runs out of
/// budget) leaves the error to be described by its type and fields, instead of failing the
/// message handler itself ("error in error handling", without a traceback: a re-trial's).
unsafe fn tostring_metamethod(l: *mut ffi::lua_State) -> Option<*const std::ffi::c_char> {
    // SAFETY: index 1 is the error object; the stack is back at 1 when None is returned, and
    // the string returned stays on the stack for the caller.
    unsafe {
        if ffi::luaL_getmetafield(l, 1, c"__tostring".as_ptr()) == 0 {
            return None;
        }
        ffi::lua_pushvalue(l, 1);
        if ffi::lua_pcall(l, 1, 1, 0) == 0 && ffi::lua_isstring(l, -1) != 0 {
            return Some(ffi::lua_tostring(l, -1));
        }
        ffi::lua_settop(l, 1);
        None
    }
}

/// The table at `idx` in Lua's constructor syntax, for an error message: its first
/// [`FIELDS_SHOWN`] fields in `next`'s order (raw: no metamethod runs), strings quoted and cut
/// at [`STRING_SHOWN`] bytes, nested tables and other values by their type.
unsafe fn table_fields(l: *mut ffi::lua_State, idx: c_int) -> String {
    // SAFETY: `idx` is an absolute index of a table; lua_next gets its own key back untouched
    // (each key is converted from a copy), and the stack is where it was at the end. A push
    // that runs out of memory raises through this frame (LUAJIT_UNWIND_EXTERNAL, see the
    // module's notes), dropping `out`.
    unsafe {
        let mut out = String::from("{");
        let mut shown = 0;
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, idx) != 0 {
            if shown == FIELDS_SHOWN {
                out.push_str(", ...");
                ffi::lua_settop(l, -3);
                break;
            }
            if shown > 0 {
                out.push_str(", ");
            }
            shown += 1;
            let key = ffi::lua_gettop(l) - 1;
            let name = (ffi::lua_type(l, key) == ffi::LUA_TSTRING)
                .then(|| string_prefix_at(l, key, STRING_SHOWN))
                .filter(|(k, cut)| !cut && is_name(k));
            match name {
                Some((k, _)) => out.push_str(&k),
                _ => {
                    out.push('[');
                    out.push_str(&shown_value(l, key));
                    out.push(']');
                }
            }
            out.push_str(" = ");
            out.push_str(&shown_value(l, key + 1));
            ffi::lua_settop(l, -2);
        }
        out.push('}');
        out
    }
}

/// Fields of an error table that its log line shows.
const FIELDS_SHOWN: usize = 8;
/// Bytes of a string field shown.
const STRING_SHOWN: usize = 100;

/// A Lua name (an identifier, not a keyword), which a table constructor writes without
/// brackets.
fn is_name(s: &str) -> bool {
    const KEYWORDS: [&str; 22] = [
        "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
        "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
    ];
    s.bytes().next().is_some_and(|b| !b.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !KEYWORDS.contains(&s)
}

/// The first `max` bytes of the string at `idx` (lossy), and whether it is longer: a field of
/// an error table may be megabytes, which the message handler must not copy whole.
unsafe fn string_prefix_at(l: *mut ffi::lua_State, idx: c_int, max: usize) -> (String, bool) {
    // SAFETY: lua_tolstring on a valid index holding a string (no conversion in place); the
    // bytes are copied before the value can go.
    unsafe {
        let mut len = 0usize;
        let p = ffi::lua_tolstring(l, idx, &mut len);
        if p.is_null() {
            return (String::new(), false);
        }
        let bytes = std::slice::from_raw_parts(p.cast::<u8>(), len.min(max));
        (String::from_utf8_lossy(bytes).into_owned(), len > max)
    }
}

/// The value at `idx` as a field of [`table_fields`]: a string quoted (and cut), a number or a
/// boolean as Lua prints it, anything else by its type.
unsafe fn shown_value(l: *mut ffi::lua_State, idx: c_int) -> String {
    // SAFETY: `idx` is a valid index; a number is converted from a copy (lua_tolstring would
    // turn a key in place into a string), popped after.
    unsafe {
        match ffi::lua_type(l, idx) {
            ffi::LUA_TSTRING => {
                let (s, cut) = string_prefix_at(l, idx, STRING_SHOWN);
                let more = if cut { "..." } else { "" };
                format!("{s:?}{more}")
            }
            ffi::LUA_TNUMBER => {
                ffi::lua_pushvalue(l, idx);
                let s = string_at(l, -1);
                ffi::lua_settop(l, -2);
                s
            }
            ffi::LUA_TBOOLEAN => (ffi::lua_toboolean(l, idx) != 0).to_string(),
            t => {
                let name = CStr::from_ptr(ffi::lua_typename(l, t));
                format!("<{}>", name.to_string_lossy())
            }
        }
    }
}

/// The string at `idx` (lossy), for an error message.
pub(crate) unsafe fn string_at(l: *mut ffi::lua_State, idx: c_int) -> String {
    // SAFETY: lua_tolstring on a valid index; the bytes are copied before the value can go.
    unsafe {
        let mut len = 0usize;
        let p = ffi::lua_tolstring(l, idx, &mut len);
        if p.is_null() {
            return "(error object is not a string)".into();
        }
        String::from_utf8_lossy(std::slice::from_raw_parts(p.cast::<u8>(), len)).into_owned()
    }
}

#[cfg(test)]
mod tests {
    /// Keys an error table's line writes bare are those Lua's constructor takes bare.
    #[test]
    fn only_names_that_are_not_keywords_are_written_bare() {
        for bare in ["code", "msg", "_x1", "endpoint"] {
            assert!(super::is_name(bare), "{bare}");
        }
        for bracketed in ["end", "while", "nil", "1a", "two words", "", "é"] {
            assert!(!super::is_name(bracketed), "{bracketed}");
        }
    }
}
