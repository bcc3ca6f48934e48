//! Errors that host functions raise reach the app's Lua code as strings.
//!
//! mlua raises the error a Rust function returns as a userdata (its `WrappedFailure`) with a
//! `__tostring` that prints a "runtime error: " prefix and a stack traceback. Lua code expects
//! a string, as Lua's own functions raise: `"failed: " .. err` or `err:match(...)` on it raised
//! a second error inside the app's error handling. So `pcall`, `xpcall` (the error its handler
//! gets) and `coroutine.resume` hand the app [`text`] of such an error instead: the message
//! alone, without prefix or traceback. Any other error value passes unchanged, a table given
//! to `error()` included.
//!
//! An error nobody catches still reaches the host as it was, and is logged with its traceback.
//! The text is made only when an error is caught, so a call that raises nothing pays one
//! Lua function call more per `pcall`.

use mlua::{Error, Lua, Value};

/// `pcall`, `xpcall` and `coroutine.resume` that hand the app host errors as text. Run before
/// the budget's `xpcall` and the stack guard's `coroutine.resume` wrap these in turn.
const STRING_ERRORS: &str = r#"
local text, pcall, xpcall, resume = ...
-- Captured: an app that assigns a global `type` (a missing `local`) must not change this.
local type = type
local function settle(ok, ...)
  if ok or type((...)) ~= "userdata" then return ok, ... end
  return false, text((...))
end
_G.pcall = function(f, ...) return settle(pcall(f, ...)) end
_G.xpcall = function(f, handler, ...)
  -- What xpcall itself refuses (a handler that is not a function), it refuses as before.
  if type(handler) ~= "function" then return xpcall(f, handler, ...) end
  return xpcall(f, function(e)
    if type(e) == "userdata" then e = text(e) end
    return handler(e)
  end, ...)
end
coroutine.resume = function(co, ...) return settle(resume(co, ...)) end
"#;

/// Installs the `pcall`, `xpcall` and `coroutine.resume` of the module doc in `lua`.
pub(crate) fn install(lua: &Lua) -> mlua::Result<()> {
    let g = lua.globals();
    let coroutine: mlua::Table = g.get("coroutine")?;
    let text = lua.create_function(|lua, v: Value| match v {
        Value::Error(e) => Ok(Value::String(lua.create_string(text(&e))?)),
        other => Ok(other),
    })?;
    lua.load(STRING_ERRORS).set_name("=sandbox").call::<()>((
        text,
        g.get::<mlua::Function>("pcall")?,
        g.get::<mlua::Function>("xpcall")?,
        coroutine.get::<mlua::Function>("resume")?,
    ))
}

/// What an app is told of `e`: the message of the error at its root, in Lua's words.
pub(crate) fn text(e: &Error) -> String {
    match e {
        Error::CallbackError { cause, .. } => text(cause),
        Error::RuntimeError(msg) | Error::MemoryError(msg) => msg.clone(),
        Error::WithContext { context, cause } => format!("{context}: {}", text(cause)),
        Error::BadArgument {
            to,
            pos,
            name,
            cause,
        } => bad_argument(to.as_deref(), *pos, name.as_deref(), cause),
        Error::FromLuaConversionError { from, to, .. } => conversion(from, to),
        Error::UserDataTypeMismatch => "wrong kind of userdata".to_owned(),
        Error::UserDataDestructed => "use of an object already destroyed".to_owned(),
        other => other.to_string(),
    }
}

/// mlua's "bad argument" for a function or method (`to` is `Type.method` for a method of a
/// userdata, whose `self` mlua counts as argument 1), as Lua words it for its own.
fn bad_argument(to: Option<&str>, pos: usize, name: Option<&str>, cause: &Error) -> String {
    let Some(to) = to else {
        return format!("bad argument #{pos} ({})", text(cause));
    };
    match to.split_once('.') {
        Some((ty, method)) => {
            let object = object_name(ty);
            if name == Some("self") {
                return format!("{object}:{method}: call it with a colon, {object}:{method}(...)");
            }
            let pos = pos.saturating_sub(1);
            format!(
                "bad argument #{pos} to '{object}:{method}' ({})",
                cause_text(cause)
            )
        }
        None => format!("bad argument #{pos} to '{to}' ({})", cause_text(cause)),
    }
}

fn cause_text(cause: &Error) -> String {
    match cause {
        Error::FromLuaConversionError { from, to, .. } => conversion(from, to),
        other => text(other),
    }
}

/// A value of Lua type `from` where a Rust `to` was wanted, as Lua's own functions say it
/// (LuaJIT has no integer type: mlua's "integer" is a number).
fn conversion(from: &str, to: &str) -> String {
    let from = match from {
        "integer" => "number",
        "missing argument" => "no value",
        other => other,
    };
    format!("{} expected, got {from}", lua_type_of(to))
}

/// The name the docs give an object of a userdata type (`q` for a queue, `n` for a nap).
fn object_name(ty: &str) -> &str {
    match ty {
        "LuaQueue" => "q",
        "Nap" => "n",
        other => other,
    }
}

/// The Lua type a Rust type name stands for in a conversion error.
fn lua_type_of(rust: &str) -> &str {
    match rust {
        "f32" | "f64" | "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32"
        | "u64" | "u128" | "usize" | "integer" => "number",
        "String" | "str" | "string" | "BString" | "CString" | "OsString" | "PathBuf" => "string",
        "bool" => "boolean",
        "LuaQueue" => "queue",
        "Nap" => "nap",
        other => other,
    }
}

// mlua's error keeps its causes in an `Arc`, which these tests build as mlua would.
#[cfg(test)]
#[allow(clippy::arc_with_non_send_sync)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn callback(cause: Error) -> Error {
        Error::CallbackError {
            traceback: "stack traceback:\n\t[C]: in ?".into(),
            cause: Arc::new(cause),
        }
    }

    #[test]
    fn the_root_message_without_prefix_or_traceback() {
        let e = callback(Error::runtime("mqr:create: queue name expected, got table"));
        assert_eq!(text(&e), "mqr:create: queue name expected, got table");
        assert_eq!(
            text(&callback(Error::MemoryError("not enough memory".into()))),
            "not enough memory"
        );
    }

    #[test]
    fn a_method_argument_is_counted_and_named_as_the_app_wrote_it() {
        let e = callback(Error::BadArgument {
            to: Some("Nap.sleep".into()),
            pos: 2,
            name: None,
            cause: Arc::new(Error::FromLuaConversionError {
                from: "string",
                to: "f64".into(),
                message: Some("expected number or string coercible to number".into()),
            }),
        });
        assert_eq!(
            text(&e),
            "bad argument #1 to 'n:sleep' (number expected, got string)"
        );
        let e = callback(Error::BadArgument {
            to: Some("LuaQueue.size".into()),
            pos: 1,
            name: Some("self".into()),
            cause: Arc::new(Error::UserDataTypeMismatch),
        });
        assert_eq!(text(&e), "q:size: call it with a colon, q:size(...)");
    }
}
