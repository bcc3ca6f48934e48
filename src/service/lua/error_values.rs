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
//! An error nobody catches still reaches the host as it was, and is logged with its traceback
//! (`coroutine.wrap` passes errors on unchanged, for that). The text is made only when an
//! error is caught, so a call that raises nothing pays two Lua function calls more per
//! `pcall`. Should making the text fail (no memory left for it; a Rust panic, which mlua
//! raises again when the value is read), the app gets the error value as it was.

use mlua::{Error, Lua, Value};

/// `pcall` and `xpcall` that hand the app host errors as text. Run before the budget's
/// `xpcall` wraps this one in turn.
const STRING_ERRORS: &str = r#"
local text, pcall, xpcall = ...
-- Captured: an app that assigns a global `type` (a missing `local`) must not change this.
local type = type
local function as_text(e)
  if type(e) ~= "userdata" then return e end
  local ok, t = pcall(text, e)
  if ok then return t end
  return e
end
local function settle(ok, ...)
  if ok then return true, ... end
  return false, as_text((...))
end
_G.pcall = function(f, ...) return settle(pcall(f, ...)) end
_G.xpcall = function(f, handler, ...)
  -- What xpcall itself refuses (a handler that is not a function), it refuses as before.
  if type(handler) ~= "function" then return xpcall(f, handler, ...) end
  return xpcall(f, function(e) return handler(as_text(e)) end, ...)
end
return settle
"#;

/// `coroutine.resume` that hands the app host errors as text. Run after the stack guard
/// (`cstack`) has built its `resume` and, on it, `wrap`: `wrap` passes errors on as they
/// were raised.
const STRING_RESUME: &str = r#"
local settle, resume = ...
coroutine.resume = function(co, ...) return settle(resume(co, ...)) end
"#;

/// Installs the `pcall` and `xpcall` of the module doc in `lua`; returns what
/// [`install_resume`] needs.
pub(crate) fn install(lua: &Lua) -> mlua::Result<mlua::Function> {
    let g = lua.globals();
    let text = lua.create_function(|lua, v: Value| match v {
        Value::Error(e) => Ok(Value::String(lua.create_string(text(&e))?)),
        other => Ok(other),
    })?;
    lua.load(STRING_ERRORS).set_name("=sandbox").call((
        text,
        g.get::<mlua::Function>("pcall")?,
        g.get::<mlua::Function>("xpcall")?,
    ))
}

/// Installs the `coroutine.resume` of the module doc in `lua`; `settle` is what [`install`]
/// returned.
pub(crate) fn install_resume(lua: &Lua, settle: mlua::Function) -> mlua::Result<()> {
    let coroutine: mlua::Table = lua.globals().get("coroutine")?;
    lua.load(STRING_RESUME)
        .set_name("=sandbox")
        .call::<()>((settle, coroutine.get::<mlua::Function>("resume")?))
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
        Error::FromLuaConversionError { from, to, message } => {
            conversion(from, to, message.as_deref())
        }
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
            let wrong_self = matches!(
                cause,
                Error::UserDataTypeMismatch | Error::FromLuaConversionError { .. }
            );
            if name == Some("self") {
                if wrong_self {
                    return format!(
                        "{object}:{method}: call it with a colon, {object}:{method}(...)"
                    );
                }
                return format!("{object}:{method}: bad self ({})", text(cause));
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
        Error::FromLuaConversionError { from, to, message } => {
            conversion(from, to, message.as_deref())
        }
        other => text(other),
    }
}

/// A value of Lua type `from` where a Rust `to` was wanted, as Lua's own functions say it
/// (LuaJIT has no integer type: mlua's "integer" is a number), with mlua's `message` when it
/// says more than what was expected (a number out of range).
fn conversion(from: &str, to: &str, message: Option<&str>) -> String {
    let from = match from {
        "integer" => "number",
        "missing argument" => "no value",
        "lightuserdata" => "userdata",
        "other" => "cdata",
        other => other,
    };
    let expected = lua_type_of(to);
    match message.filter(|m| !m.starts_with("expected")) {
        Some(m) => format!("{expected} expected, got {from}: {m}"),
        None => format!("{expected} expected, got {from}"),
    }
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
        // A self of the right kind that cannot be used is not a call with a dot.
        let e = callback(Error::BadArgument {
            to: Some("LuaQueue.size".into()),
            pos: 1,
            name: Some("self".into()),
            cause: Arc::new(Error::UserDataDestructed),
        });
        assert_eq!(
            text(&e),
            "q:size: bad self (use of an object already destroyed)"
        );
    }

    #[test]
    fn a_conversion_keeps_what_mlua_says_beyond_the_expected_type() {
        let out_of_range = Error::FromLuaConversionError {
            from: "integer",
            to: "u8".into(),
            message: Some("out of range".into()),
        };
        assert_eq!(
            text(&out_of_range),
            "number expected, got number: out of range"
        );
        let coercible = Error::FromLuaConversionError {
            from: "lightuserdata",
            to: "f64".into(),
            message: Some("expected number or string coercible to number".into()),
        };
        assert_eq!(text(&coercible), "number expected, got userdata");
    }
}
