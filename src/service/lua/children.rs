//! The child processes of a service with `allow_os_execute`: `os.execute` and `io.popen`
//! start them with the signal state of a fresh process, not the server's (SIGTERM, SIGINT
//! and SIGHUP blocked in every thread, SIGPIPE handled; see src/signals.rs): each child is
//! started with the signals unblocked in the calling thread for the moment that takes.
//!
//! `os.execute` runs `/bin/sh -c` itself and answers what LuaJIT's does (the wait status, as
//! `system(3)` returns it): LuaJIT's calls `system`, which would hold the signals unblocked
//! for as long as the command runs, and set SIGINT to ignored in the whole process, losing a
//! Ctrl-C sent to the server meanwhile. `io.popen` stays LuaJIT's (its file object is
//! LuaJIT's own).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use mlua::{Function, Lua, MultiValue, Table};

const SHELL: &str = "/bin/sh";

/// Replaces `os.execute` and wraps `io.popen` in `lua` (which has both).
pub(crate) fn install(lua: &Lua, os: &Table, io: &Table) -> mlua::Result<()> {
    os.set(
        "execute",
        lua.create_function(|_, cmd: Option<mlua::String>| Ok(execute(cmd)))?,
    )?;
    let popen: Function = io.get("popen")?;
    io.set(
        "popen",
        lua.create_function(move |_, args: MultiValue| {
            crate::signals::unblocked_for_a_child(|| popen.call::<MultiValue>(args))
        })?,
    )
}

/// `os.execute([cmd])` of Lua 5.1: without a command, whether a shell is there (non-zero);
/// with one, its wait status (`exit 3` gives 768, a SIGTERM 15), -1 when it cannot start.
fn execute(cmd: Option<mlua::String>) -> i64 {
    let Some(cmd) = cmd else {
        return i64::from(std::path::Path::new(SHELL).exists());
    };
    let mut sh = Command::new(SHELL);
    sh.arg("-c").arg(OsStr::from_bytes(&cmd.as_bytes()));
    // Only the start needs the signals unblocked: a SIGTERM while the command runs is the
    // server's to take, at once.
    match crate::signals::unblocked_for_a_child(|| sh.spawn()).and_then(|mut c| c.wait()) {
        Ok(status) => i64::from(status.into_raw()),
        Err(_) => -1,
    }
}
