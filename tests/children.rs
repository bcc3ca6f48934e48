//! The child processes of a Lua app allowed `os.execute` and `io.popen`: they start with the
//! signal state of a fresh process, not the server's (which blocks SIGTERM, SIGINT, SIGHUP and
//! SIGUSR1 in every thread and does not let SIGPIPE kill it). Only the real binary sets that
//! state up, so it runs as a child process here.
#[path = "common/binary.rs"]
mod binary;
mod common;

use std::path::PathBuf;
use std::time::Duration;

use binary::{lines_until, spawn_binary};
use common::{ask, connect, send, text};

/// Text commands, each answered with one text message:
/// - `popen <cmd>`: what `<cmd>`, started with `io.popen`, wrote;
/// - `popenerr`: `pcall(io.popen, {})` as "<ok> <type of the error> <error>";
/// - `execute <cmd>`: what `os.execute` returns (`execute` alone: called without a command);
/// - `spawn <file>`: `io.popen` children one after another until `<file>` exists; their count.
const APP: &str = r#"
local m = {}
m.onMessage = function(h, op, msg)
  local cmd, arg = msg:match("^(%w+) ?(.*)$")
  if cmd == "popen" then
    local f = io.popen(arg)
    local out = f:read("*a")
    f:close()
    ws:send(h, 1, out)
  elseif cmd == "popenerr" then
    local ok, err = pcall(io.popen, {})
    ws:send(h, 1, tostring(ok) .. " " .. type(err) .. " " .. tostring(err))
  elseif cmd == "execute" then
    if arg == "" then arg = nil end
    ws:send(h, 1, tostring(os.execute(arg)))
  elseif cmd == "spawn" then
    local n = 0
    while not io.open(arg) do
      io.popen("true"):close()
      n = n + 1
    end
    ws:send(h, 1, tostring(n))
  end
  return true
end
return m
"#;

/// Prints the signal masks of the process that runs it.
const MASKS: &str = "grep -E '^Sig(Blk|Ign)' /proc/self/status";
/// Prints "survived" only when SIGTERM could not end the shell that runs it.
const TERM_SELF: &str = "kill -TERM $$; echo survived";

fn site(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("children-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("apps/kids")).unwrap();
    std::fs::write(dir.join("apps/kids/kids.lua"), APP).unwrap();
    std::fs::write(dir.join("ws.json"), binary::ONE_WORKER_WS_JSON).unwrap();
    std::fs::write(
        dir.join("lapps.json"),
        format!(
            r#"{{ "directories": {{ "applications": "{}", "lib": "{}/lua/lib" }},
                 "services": {{ "kids": {{ "allow_os_execute": true }} }} }}"#,
            dir.join("apps").display(),
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    dir
}

/// `SigBlk` and `SigIgn` of /proc/PID/status as grep printed them: no signal from 1 to 31
/// blocked or ignored. (glibc's posix_spawn leaves its internal signals 32 and 33 ignored in
/// every child it starts; no program uses them.)
fn assert_fresh(masks: &str, how: &str) {
    let lines: Vec<&str> = masks.lines().collect();
    assert_eq!(lines.len(), 2, "{how}: {masks:?}");
    for line in lines {
        let (name, bits) = line.split_once(':').unwrap();
        let bits = u64::from_str_radix(bits.trim(), 16).unwrap();
        let standard: Vec<u32> = (1..32).filter(|s| bits & (1 << (s - 1)) != 0).collect();
        assert!(
            standard.is_empty(),
            "{how}: {name} has signals {standard:?}"
        );
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

#[test]
fn children_start_with_no_signal_blocked_or_ignored() {
    let dir = site("masks");
    let (mut server, addr, _log) = spawn_binary(&dir, |_| {});
    let mut ws = connect(addr, "/kids");
    assert_fresh(&ask(&mut ws, &format!("popen {MASKS}")), "io.popen");
    assert_eq!(ask(&mut ws, &format!("popen {TERM_SELF}")), "", "io.popen");
    let out = dir.join("execute.txt");
    let status = ask(&mut ws, &format!("execute {MASKS} > '{}'", out.display()));
    assert_eq!(status, "0");
    assert_fresh(&std::fs::read_to_string(&out).unwrap(), "os.execute");
    let out = dir.join("survived.txt");
    let status = ask(
        &mut ws,
        &format!("execute {TERM_SELF} > '{}'", out.display()),
    );
    assert_eq!(status, libc::SIGTERM.to_string(), "os.execute");
    assert!(!out.exists(), "os.execute: the shell survived its SIGTERM");
    signal(server.0.id(), libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(15)).success());
}

#[test]
fn os_execute_answers_as_luajits_did() {
    let dir = site("status");
    let (_server, addr, _log) = spawn_binary(&dir, |_| {});
    let mut ws = connect(addr, "/kids");
    // Lua 5.1: the wait status as system(3) returns it; without a command, a shell is there.
    assert_eq!(ask(&mut ws, "execute exit 3"), (3 << 8).to_string());
    assert_eq!(
        ask(&mut ws, "execute kill -KILL $$"),
        libc::SIGKILL.to_string()
    );
    assert_eq!(ask(&mut ws, "execute"), "1");
    // `sh -c -- cmd` as glibc runs it: a command, not an option of the shell (not found: 127).
    assert_eq!(ask(&mut ws, "execute -x"), (127 << 8).to_string());
}

#[test]
fn io_popen_raises_its_errors_as_it_did() {
    let dir = site("popen-error");
    let (_server, addr, _log) = spawn_binary(&dir, |_| {});
    let mut ws = connect(addr, "/kids");
    let answer = ask(&mut ws, "popenerr");
    assert!(
        answer.starts_with("false string ") && answer.contains("bad argument #1"),
        "{answer}"
    );
    assert!(!answer.contains("traceback"), "{answer}");
}

/// A stop or reload signal that reaches the instance thread while it has them unblocked to
/// start a child is served as any other. Each SIGHUP here is sent to the instance thread
/// itself (tgkill): it waits there, blocked, until the thread's next `io.popen` unblocks it,
/// and must then be one reload, the process living on (with its default action, a SIGHUP
/// ends the process).
#[test]
fn signals_while_children_start_are_served_as_usual() {
    const SIGHUPS: usize = 20;
    let dir = site("storm");
    let (mut server, addr, log) = spawn_binary(&dir, |_| {});
    let pid = server.0.id();
    let instance = thread_named(pid, "lua-kids#0");
    let mut ws = connect(addr, "/kids");
    let stop = dir.join("stop");
    send(&mut ws, &format!("spawn {}", stop.display()));
    for _ in 0..SIGHUPS {
        // SAFETY: tgkill(2) on a thread of the child this test started.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                pid as libc::c_long,
                instance as libc::c_long,
                libc::SIGHUP as libc::c_long,
            )
        };
        assert_eq!(rc, 0, "tgkill: {}", std::io::Error::last_os_error());
        lines_until(&log, "reload done");
    }
    std::fs::write(&stop, "").unwrap();
    let spawned: u64 = text(&mut ws).parse().unwrap();
    assert!(spawned > 0, "no child started");
    signal(pid, libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(15)).success());
}

/// The id of the thread of process `pid` named `name` (its instance threads are named after
/// the service, started before the server listens).
fn thread_named(pid: u32, name: &str) -> u32 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(Result::ok)
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .unwrap_or_else(|| panic!("no thread {name:?} in {pid}"))
        .file_name()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}
