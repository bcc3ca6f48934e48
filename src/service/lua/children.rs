//! The child processes of a service with `allow_os_execute`: `os.execute` and `io.popen`
//! start them with the standard signals as a fresh process has them, not as the server does
//! (SIGTERM, SIGINT and SIGHUP blocked in every thread; see src/signals.rs): each child is
//! started with those unblocked in the calling thread for the moment that takes. (The reload
//! request's realtime signal stays blocked in children: nothing sends it to them.) (SIGPIPE needs nothing here:
//! the server handles it, and exec resets a handled signal to its default.) std's `Command`
//! would not do it for us: it passes the calling thread's mask on (measured: the child's
//! mask at exec is the server's).
//!
//! `os.execute` runs `sh -c` itself and answers what LuaJIT's does (the wait status, as
//! `system(3)` returns it): LuaJIT's calls `system`, which would hold the signals unblocked
//! for as long as the command runs, and set SIGINT to ignored in the whole process, losing a
//! Ctrl-C sent to the server meanwhile. `io.popen` stays LuaJIT's (its file object is
//! LuaJIT's own), its errors raised as they were.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;

use mlua::{Function, Lua, MultiValue, Table};

const SHELL: &str = "/bin/sh";

/// Replaces `os.execute` and wraps `io.popen` in `lua` (which has both).
pub(crate) fn install(lua: &Lua, os: &Table, io: &Table) -> mlua::Result<()> {
    let execute = lua.create_function(|_, cmd: Option<mlua::String>| Ok(execute(cmd)))?;
    os.set(
        "execute",
        super::error_values::raising_strings(lua, execute)?,
    )?;
    let popen: Function = io.get("popen")?;
    let pcall: Function = lua.globals().get("pcall")?;
    // `pcall` inside the window: popen's error comes back as it was raised (through mlua it
    // would come back with a traceback appended), for ANSWER to raise again.
    let start = lua.create_function(move |_, args: MultiValue| {
        // LuaJIT's popen flushes every stdio stream first: done before the window, so that
        // a stalled pipe cannot hold it open.
        // SAFETY: fflush(NULL) flushes all open output streams; it takes no pointer of ours.
        unsafe { libc::fflush(std::ptr::null_mut()) };
        crate::signals::unblocked_for_a_child(|| pcall.call::<MultiValue>((popen.clone(), args)))
    })?;
    let wrap: Function = lua.load(ANSWER).set_name("=io.popen").call(start)?;
    io.set("popen", wrap)
}

/// Makes `io.popen` of the wrapped start: its results, or its error raised again unchanged.
const ANSWER: &str = r#"
local start = ...
local error = error
local function answer(ok, ...)
  if ok then return ... end
  error((...), 0)
end
return function(...) return answer(start(...)) end
"#;

/// `os.execute([cmd])` of Lua 5.1: without a command, whether a shell is there (non-zero);
/// with one, its wait status (`exit 3` gives 768, a SIGTERM 15) as `system(3)` returns it:
/// 127 << 8 when the shell cannot run, -1 when no process can be started. (A command with a
/// NUL byte is not run at all: -1, where `system` would run what precedes the NUL.)
fn execute(cmd: Option<mlua::String>) -> i64 {
    let Some(cmd) = cmd else {
        return i64::from(std::path::Path::new(SHELL).exists());
    };
    let mut sh = Command::new(SHELL);
    // As glibc runs it: `--` so that a command starting with '-' or '+' is not an option.
    sh.arg0("sh")
        .arg("-c")
        .arg("--")
        .arg(OsStr::from_bytes(&cmd.as_bytes()));
    // Only the start needs the signals unblocked: a SIGTERM while the command runs is the
    // server's to take, at once.
    match crate::signals::unblocked_for_a_child(|| sh.spawn()).and_then(|mut c| c.wait()) {
        Ok(status) => i64::from(status.into_raw()),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied) => 127 << 8,
        Err(_) => -1,
    }
}
