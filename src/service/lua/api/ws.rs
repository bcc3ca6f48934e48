//! `ws`: sending to and closing connections by `handler`.
//!
//! Sends are framed here, on the instance thread, and queued in the outbox; the IOWorker only
//! copies the bytes to the socket. A stale handler (its connection is gone) is detected by the
//! hub's generation check and answered with `nil, "closed"`.

use std::rc::Rc;

use mlua::{Lua, Value};

use super::{fail, handler, ok, Ret};
use crate::net::hub::{Chunk, Command};
use crate::service::lua::frame::frame;
use crate::service::lua::host::HostCtx;

/// Close codes an application may send (RFC 6455 section 7.4).
pub(crate) fn valid_close_code(code: i64) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

pub(crate) fn install(lua: &Lua, host: &Rc<HostCtx>) -> mlua::Result<()> {
    let t = lua.create_table()?;
    let h = Rc::clone(host);
    t.set(
        "send",
        lua.create_function(
            move |_,
                  (_this, conn, opcode, msg): (Value, Value, i64, mlua::String)|
                  -> mlua::Result<Ret> {
                let Some(conn) = handler(&conn) else {
                    return fail("bad handler");
                };
                if !h.hub.is_live(conn) {
                    return fail("closed");
                }
                let bytes = msg.as_bytes();
                match opcode {
                    1 if std::str::from_utf8(&bytes).is_err() => return fail("invalid UTF-8"),
                    1 | 2 => {}
                    _ => return fail("bad opcode"),
                }
                let f = frame(opcode as u8, &bytes, h.auto_fragment);
                h.push(
                    conn,
                    Command::Send {
                        conn,
                        frame: Chunk::Owned(f),
                    },
                );
                ok(Value::Boolean(true))
            },
        )?,
    )?;
    let h = Rc::clone(host);
    t.set(
        "close",
        lua.create_function(
            move |_, (_this, conn, code): (Value, Value, Option<i64>)| -> mlua::Result<Ret> {
                let Some(conn) = handler(&conn) else {
                    return fail("bad handler");
                };
                let code = code.unwrap_or(1000);
                if !valid_close_code(code) {
                    return fail("bad close code");
                }
                if !h.hub.is_live(conn) {
                    return fail("closed");
                }
                h.push(
                    conn,
                    Command::Close {
                        conn,
                        code: code as u16,
                    },
                );
                ok(Value::Boolean(true))
            },
        )?,
    )?;
    lua.globals().set("ws", t)
}
