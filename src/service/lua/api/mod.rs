//! The Lua-facing host modules (documented in docs/lua-api.md).
//!
//! Each submodule owns one global table. Runtime conditions (a closed handler, an unknown
//! channel) are returned as `nil, "message"`; only programming errors (wrong argument types)
//! raise. No function here blocks except `nap:sleep` and the blocking forms of `mqr`.

pub mod bcast;
pub(crate) mod cws;
pub(crate) mod mqr;
pub(crate) mod murmur;
pub(crate) mod nap;
pub(crate) mod time;
pub(crate) mod ws;

use std::rc::Rc;

use mlua::{FromLuaMulti, IntoLua, IntoLuaMulti, Lua, MultiValue, Value, Variadic};

use super::host::HostCtx;
use crate::net::handle::ConnId;

/// `value` on success, `nil, "message"` on a runtime failure. Success is the one value, as
/// for Lua's own functions: no trailing nil for `select('#', ...)` or `table.pack` to see.
pub(crate) struct Ret<R = &'static str>(pub Value, pub Option<R>);

impl<R: IntoLua> IntoLuaMulti for Ret<R> {
    fn into_lua_multi(self, lua: &Lua) -> mlua::Result<MultiValue> {
        match self.1 {
            None => self.0.into_lua_multi(lua),
            Some(why) => (self.0, why).into_lua_multi(lua),
        }
    }
}

pub(crate) fn ok(v: Value) -> mlua::Result<Ret> {
    Ok(Ret(v, None))
}

pub(crate) fn fail(msg: &'static str) -> mlua::Result<Ret> {
    Ok(Ret(Value::Nil, Some(msg)))
}

/// The arguments of a module function called either way: `ws:send(h, ...)` (the module
/// table first, as the docs write it) or `ws.send(h, ...)` (as some of the original's
/// examples do). No argument of these functions is a table in first place, so a leading
/// table is the module.
pub(crate) fn method_args<T: FromLuaMulti>(lua: &Lua, mut a: MultiValue) -> mlua::Result<T> {
    if matches!(a.front(), Some(Value::Table(_))) {
        a.pop_front();
    }
    T::from_lua_multi(a, lua)
}

/// The object a method was called on, `object:method(...)`; a call with a dot (no object
/// first) raises saying so.
pub(crate) fn this<T: 'static>(
    a: &MultiValue,
    object: &str,
    method: &str,
) -> mlua::Result<mlua::UserDataRef<T>> {
    match a.front() {
        Some(Value::UserData(ud)) => ud.borrow::<T>().map_err(|_| colon(object, method)),
        _ => Err(colon(object, method)),
    }
}

fn colon(object: &str, method: &str) -> mlua::Error {
    mlua::Error::runtime(format!(
        "{object}:{method}: call it with a colon, {object}:{method}(...)"
    ))
}

/// The methods of a userdata type: a table for its `__index`, each function made with
/// `raising_strings` (mlua's own methods would raise its error userdata).
pub(crate) fn method_table(
    lua: &Lua,
    methods: Vec<(&str, mlua::Function)>,
) -> mlua::Result<mlua::Table> {
    let t = lua.create_table()?;
    for (name, f) in methods {
        t.set(name, super::error_values::raising_strings(lua, f)?)?;
    }
    Ok(t)
}

/// A Lua `handler` back to a connection handle (`None` when it cannot name one).
pub(crate) fn handler(v: &Value) -> Option<ConnId> {
    let n = match *v {
        Value::Integer(i) => u64::try_from(i).ok()?,
        Value::Number(f) if f >= 0.0 && f.fract() == 0.0 && f < 9007199254740992.0 => f as u64,
        _ => return None,
    };
    ConnId::from_u64(n)
}

/// The Lua form of a handle (exact, in number and in text: handles are below 10^14).
pub(crate) fn handler_value(conn: ConnId) -> Value {
    Value::Number(conn.as_u64() as f64)
}

/// Globals every state gets: `print` (to the server log), `must_stop()`, `instance_id`.
pub(crate) fn install_globals(lua: &Lua, host: &Rc<HostCtx>) -> mlua::Result<()> {
    let g = lua.globals();
    let h = Rc::clone(host);
    let tostring: mlua::Function = g.get("tostring")?;
    let print = lua.create_function(move |lua, args: Variadic<Value>| {
        // The cut counts the bytes printed, not what they become in the log (an invalid
        // byte is 3 bytes of U+FFFD there, a control character an escape).
        let mut bytes: Vec<u8> = Vec::new();
        let mut more = 0usize;
        for (i, v) in args.into_iter().enumerate() {
            // Lua's own print says the same of a __tostring that returns no string.
            let s = match tostring.call::<Value>(v)? {
                Value::String(s) => s,
                n @ (Value::Integer(_) | Value::Number(_)) => lua
                    .coerce_string(n)?
                    .ok_or_else(|| mlua::Error::runtime("print: a number"))?,
                _ => {
                    return Err(mlua::Error::runtime(
                        "'tostring' must return a string to 'print'",
                    ))
                }
            };
            let tab: &[u8] = if i > 0 { b"\t" } else { b"" };
            for part in [tab, &s.as_bytes()[..]] {
                let room = MAX_PRINT.saturating_sub(bytes.len());
                more += part.len().saturating_sub(room);
                bytes.extend_from_slice(&part[..part.len().min(room)]);
            }
        }
        let line = String::from_utf8_lossy(&bytes);
        if more > 0 {
            crate::info!("{} {} ... ({more} bytes more)", h.tag(), printable(&line));
        } else {
            crate::info!("{} {}", h.tag(), printable(&line));
        }
        Ok(())
    })?;
    // print raises for a __tostring that does: as a string, as every host function does.
    g.set("print", super::error_values::raising_strings(lua, print)?)?;
    let h = Rc::clone(host);
    g.set(
        "must_stop",
        lua.create_function(move |lua, _: MultiValue| {
            // A polling point of a standalone loop: hand over what it sent, new budget slice.
            h.flush();
            h.polling_point(lua);
            Ok(h.stop.is_set())
        })?,
    )?;
    g.set("instance_id", host.instance as i64)?;
    Ok(())
}

/// The bytes of a `print` line that reach the log (an app printing a client's 16 MiB message
/// would otherwise write a line of ~100 MiB, escapes included).
const MAX_PRINT: usize = 8192;

/// A `print` line as it may enter the log: line breaks become " | ", other control characters
/// (NUL, CR, ESC: they split or rewrite log lines) are escaped; tabs stay.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.replace("\r\n", "\n").chars() {
        match c {
            '\n' => out.push_str(" | "),
            '\t' => out.push('\t'),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn print_lines_carry_no_control_characters() {
        assert_eq!(super::printable("a\nb\r\nc\td"), "a | b | c\td");
        assert_eq!(
            super::printable("x\0<3>ERROR fake\r\u{1b}[2J"),
            "x\\u{0}<3>ERROR fake\\r\\u{1b}[2J"
        );
    }
}
