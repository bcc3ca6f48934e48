//! Errors that host functions raise reach the app's Lua code as strings.
//!
//! mlua raises the error a Rust function returns as a userdata (its `WrappedFailure`) with a
//! `__tostring` that prints a "runtime error: " prefix and a stack traceback. Lua code expects
//! a string, as Lua's own functions raise: `"failed: " .. err` or `err:match(...)` on it raised
//! a second error inside the app's error handling. So each host function the app can call is
//! made through [`raising_strings`]: a C closure that calls the mlua function in protected mode
//! and raises [`text`] of its error instead, the message alone, without prefix or traceback.
//! Lua's own `pcall`, `xpcall` and coroutines stay as they are (their stack use, their error
//! positions, yields across `pcall`); an error value of the app's own passes unchanged.
//!
//! The cost is one protected call per host call. The two per-message crossings (`ws:send`
//! and `ws:send_response`) keep their C fast paths and wrap only the general function they
//! fall back to; `time` and `must_stop`, which cannot fail, are not wrapped.

use std::ffi::c_int;

use mlua::{ffi, Error, Function, Lua, Value};

/// `f` as the app calls it: the same results, and any error it raises as [`text`] (a
/// string). Should making the text fail (no memory left for it; a Rust panic, which mlua
/// raises again when the value is read), that failure is raised instead.
pub(crate) fn raising_strings(lua: &Lua, f: Function) -> mlua::Result<Function> {
    // One text maker per state, shared by every closure.
    const TEXT: &str = "lapps.error_text";
    let text = match lua.named_registry_value::<Option<Function>>(TEXT)? {
        Some(t) => t,
        None => {
            let t = lua.create_function(|lua, v: Value| match v {
                Value::Error(e) => Ok(Value::String(lua.create_string(text(&e))?)),
                other => Ok(other),
            })?;
            lua.set_named_registry_value(TEXT, &t)?;
            t
        }
    };
    // SAFETY: pushes a C closure over the two functions; exec_raw returns the one value left.
    unsafe {
        lua.exec_raw((f, text), |l| {
            ffi::lua_pushcclosure(l, raise_strings, 2);
        })
    }
}

/// Every function of the global table `module`, but those named in `except`, made with
/// [`raising_strings`].
pub(crate) fn wrap_module(lua: &Lua, module: &str, except: &[&str]) -> mlua::Result<()> {
    let Ok(t) = lua.globals().get::<mlua::Table>(module) else {
        return Ok(());
    };
    let mut functions = Vec::new();
    for pair in t.pairs::<String, Value>() {
        if let (name, Value::Function(f)) = pair? {
            if !except.contains(&name.as_str()) {
                functions.push((name, f));
            }
        }
    }
    for (name, f) in functions {
        t.raw_set(name, raising_strings(lua, f)?)?;
    }
    Ok(())
}

/// The closure of [`raising_strings`]: upvalue 1 the function, upvalue 2 the text maker.
unsafe extern "C-unwind" fn raise_strings(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: (whole function) `l` is the running state; every index used is pushed here or
    // an upvalue this closure was made with. No Rust value with a destructor is alive, so the
    // error raised at the end may unwind through this frame (as mlua's own raise does).
    unsafe {
        let n = ffi::lua_gettop(l);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
        ffi::lua_insert(l, 1);
        if ffi::lua_pcall(l, n, ffi::LUA_MULTRET, 0) == 0 {
            return ffi::lua_gettop(l);
        }
        if ffi::lua_type(l, -1) == ffi::LUA_TUSERDATA {
            ffi::lua_pushvalue(l, ffi::lua_upvalueindex(2));
            ffi::lua_insert(l, -2);
            // The text, or what making it raised: raised in either case.
            ffi::lua_pcall(l, 1, 1, 0);
        }
        ffi::lua_error(l)
    }
}

/// What an app is told of `e`: the message of the error at its root, in Lua's words.
pub(crate) fn text(e: &Error) -> String {
    match e {
        Error::CallbackError { cause, .. } => text(cause),
        // A Lua error from code a host function ran (a `__tostring` that `print` called)
        // carries the traceback mlua added: the message alone.
        Error::RuntimeError(msg) | Error::MemoryError(msg) => {
            match msg.find("\nstack traceback:") {
                Some(at) => msg[..at].to_owned(),
                None => msg.clone(),
            }
        }
        Error::WithContext { context, cause } => format!("{context}: {}", text(cause)),
        Error::BadArgument { to, pos, cause, .. } => bad_argument(to.as_deref(), *pos, cause),
        Error::FromLuaConversionError { from, to, message } => {
            conversion(from, to, message.as_deref())
        }
        Error::UserDataTypeMismatch => "wrong kind of userdata".to_owned(),
        Error::UserDataDestructed => "use of an object already destroyed".to_owned(),
        other => other.to_string(),
    }
}

/// mlua's "bad argument" (for an argument it converted), as Lua words it for its own.
fn bad_argument(to: Option<&str>, pos: usize, cause: &Error) -> String {
    match to {
        Some(to) => format!("bad argument #{pos} to '{to}' ({})", text(cause)),
        None => format!("bad argument #{pos} ({})", text(cause)),
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

/// The Lua type a Rust type name stands for in a conversion error.
fn lua_type_of(rust: &str) -> &str {
    match rust {
        "f32" | "f64" | "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32"
        | "u64" | "u128" | "usize" | "integer" => "number",
        "String" | "str" | "string" | "BString" | "CString" | "OsString" | "PathBuf" => "string",
        "bool" => "boolean",
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
    fn a_bad_argument_is_worded_as_lua_words_its_own() {
        let e = callback(Error::BadArgument {
            to: Some("os.execute".into()),
            pos: 1,
            name: None,
            cause: Arc::new(Error::FromLuaConversionError {
                from: "table",
                to: "String".into(),
                message: Some("expected string or number".into()),
            }),
        });
        assert_eq!(
            text(&e),
            "bad argument #1 to 'os.execute' (string expected, got table)"
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
