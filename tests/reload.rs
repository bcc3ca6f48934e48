//! The real binary's process-level behaviour (reloads and stops): a reload runs beside the
//! signal loop, so a stop is served even while a new version's `init()` never returns;
//! `lapps --reload`; a standalone `onShutdown`'s budget; log lines under the journal.
#[path = "common/binary.rs"]
mod binary;
mod common;
use common::{ask, connect};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use binary::{spawn_binary, wait_line, Reaper};

fn site(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("apps/stuck")).unwrap();
    std::fs::write(dir.join("ws.json"), binary::ONE_WORKER_WS_JSON).unwrap();
    dir
}

fn lapps_json(dir: &std::path::Path, more: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::write(
        dir.join("lapps.json"),
        format!(
            r#"{{ "directories": {{ "applications": "{}", "lib": "{root}/lua/lib" }},
                 "services": {{ "echo": {{ "builtin": "echo", "request_target": "/echo" }}{more} }} }}"#,
            dir.join("apps").display()
        ),
    )
    .unwrap();
}

/// Writes the standalone app `name` (`preload`: the JSON list's items) and a lapps.json with it
/// beside the echo.
fn with_standalone(dir: &std::path::Path, name: &str, source: &str, preload: &str) {
    std::fs::create_dir_all(dir.join("apps").join(name)).unwrap();
    std::fs::write(dir.join(format!("apps/{name}/{name}.lua")), source).unwrap();
    lapps_json(
        dir,
        &format!(r#", "{name}": {{ "standalone": true, "preload": [{preload}] }}"#),
    );
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

#[test]
fn sigterm_stops_the_server_while_a_reload_hangs_in_a_new_init() {
    let dir = site("reload");
    lapps_json(&dir, "");
    let (mut server, _addr, log) = spawn_binary(&dir, |_| {});
    // A new standalone service whose init() waits for a message that never comes.
    with_standalone(
        &dir,
        "stuck",
        r#"local s = {}
s.init = function() mqr:receive("reload.never") end
s.run = function() end
return s
"#,
        r#""mqr""#,
    );
    let pid = server.0.id();
    signal(pid, libc::SIGHUP);
    wait_line(&log, "SIGHUP received");
    // A requester waiting behind the stuck reload hears that the server ended, at once.
    let requester = std::thread::spawn(move || lapps_reload(pid));
    wait_line(&log, "reload asked for by process");
    signal(pid, libc::SIGTERM);
    wait_line(&log, "SIGTERM received");
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    let out = requester.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ended before it answered"),
        "{out:?}"
    );
}

/// Starts the binary with stderr going to `log` and `JOURNAL_STREAM` set to `journal`, waits
/// for it to listen, stops it; returns what it logged.
fn run_logging_to(
    dir: &std::path::Path,
    log: &std::path::Path,
    journal: impl FnOnce(&std::fs::File) -> String,
) -> String {
    let file = std::fs::File::create(log).unwrap();
    let stream = journal(&file);
    let mut child = Reaper(
        std::process::Command::new(env!("CARGO_BIN_EXE_lapps"))
            .arg("-c")
            .arg(dir)
            .env("JOURNAL_STREAM", stream)
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(log)
        .unwrap()
        .contains("listening on")
    {
        assert!(Instant::now() < deadline, "never listened");
        std::thread::sleep(Duration::from_millis(20)); // polling interval of the log wait
    }
    signal(child.0.id(), libc::SIGTERM);
    let status = child.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    std::fs::read_to_string(log).unwrap()
}

#[test]
fn under_the_journal_each_line_carries_its_syslog_priority() {
    use std::os::unix::fs::MetadataExt;
    let dir = site("journal");
    lapps_json(&dir, "");
    let journal = run_logging_to(&dir, &dir.join("journal.log"), |f| {
        let m = f.metadata().unwrap();
        format!("{}:{}", m.dev(), m.ino())
    });
    let first = journal.lines().next().unwrap();
    assert!(first.starts_with("<6>INFO lapps "), "{first}");
    // Another file than the one JOURNAL_STREAM names: the terminal format, timestamp first.
    let plain = run_logging_to(&dir, &dir.join("plain.log"), |_| "1:1".into());
    let first = plain.lines().next().unwrap();
    assert!(
        first.starts_with("20") && first.contains(" INFO lapps "),
        "{first}"
    );
}

#[test]
fn under_the_journal_every_line_of_a_config_error_is_an_error() {
    use std::os::unix::fs::MetadataExt;
    let dir = site("journal-config");
    lapps_json(&dir, "");
    // Two problems: the error is three lines (what, then one per problem).
    std::fs::write(
        dir.join("ws.json"),
        r#"{ "port": "abc", "workers": { "max_conections": 5 } }"#,
    )
    .unwrap();
    let log = dir.join("journal.log");
    let file = std::fs::File::create(&log).unwrap();
    let m = file.metadata().unwrap();
    let mut child = Reaper(
        std::process::Command::new(env!("CARGO_BIN_EXE_lapps"))
            .arg("-c")
            .arg(&dir)
            .arg("--check-config")
            .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap(),
    );
    assert!(!child.wait_exit(binary::ONE_SHOT_GUARD).success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "{text}");
    assert!(lines.iter().all(|l| l.starts_with("<3>")), "{text}");
    assert!(text.contains("max_conections"), "{text}");
}

#[test]
fn a_reload_says_that_ws_json_changes_need_a_restart() {
    let dir = site("ws-changed");
    lapps_json(&dir, "");
    let (mut server, _addr, log) = spawn_binary(&dir, |_| {});
    let pid = server.0.id();
    // Unchanged: the reload says nothing of a restart.
    signal(pid, libc::SIGHUP);
    let quiet = binary::lines_until(&log, "no certificate to reload");
    assert!(!quiet.iter().any(|l| l.contains("restart")), "{quiet:?}");
    std::fs::write(
        dir.join("ws.json"),
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 }, "close_timeout_ms": 1234 }"#,
    )
    .unwrap();
    signal(pid, libc::SIGHUP);
    let line = wait_line(&log, "ws.json changed");
    assert!(
        line.ends_with(
            "ws.json changed (close_timeout_ms); its changes take effect at the next restart \
             (systemctl restart lapps)"
        ),
        "{line}"
    );
    server.stop();
}

#[test]
fn a_reload_ends_with_one_line_that_counts_what_it_did() {
    let dir = site("summary");
    lapps_json(&dir, "");
    let (mut server, _addr, log) = spawn_binary(&dir, |_| {});
    let pid = server.0.id();
    for (name, text) in [
        (
            "good",
            "local a = {}\na.onMessage = function() return true end\nreturn a\n",
        ),
        ("bad", "local a = {\nreturn a\n"),
    ] {
        std::fs::create_dir_all(dir.join("apps").join(name)).unwrap();
        std::fs::write(dir.join(format!("apps/{name}/{name}.lua")), text).unwrap();
    }
    lapps_json(
        &dir,
        r#", "good": { "request_target": "/good" }, "bad": { "request_target": "/bad" }"#,
    );
    signal(pid, libc::SIGHUP);
    let line = wait_line(&log, "reload done");
    assert!(
        line.contains(" ERROR "),
        "a failure shows as an error: {line}"
    );
    assert!(
        line.contains(
            "1 started, 0 replaced, 0 stopped, 0 unchanged, 1 failed (1 of them not running now)"
        ),
        "{line}"
    );
    lapps_json(&dir, r#", "good": { "request_target": "/good" }"#);
    signal(pid, libc::SIGHUP);
    let line = wait_line(&log, "reload done");
    assert!(line.contains(" INFO "), "{line}");
    assert!(
        line.contains("0 started, 0 replaced, 0 stopped, 1 unchanged, 0 failed"),
        "{line}"
    );
    // A replacement says what made it a new version.
    std::fs::write(
        dir.join("apps/good/good.lua"),
        "local a = {}\na.onMessage = function() return false end\nreturn a\n",
    )
    .unwrap();
    signal(pid, libc::SIGHUP);
    let line = wait_line(&log, "replaced service good");
    assert!(
        line.ends_with(
            "replaced service good (its app directory changed; 0 connection(s) asked to reconnect)"
        ),
        "{line}"
    );
    lapps_json(
        &dir,
        r#", "good": { "request_target": "/good", "instances": 2 }"#,
    );
    signal(pid, libc::SIGHUP);
    let line = wait_line(&log, "replaced service good");
    assert!(line.contains("(its lapps.json entry changed; "), "{line}");
    wait_line(&log, "reload done");
    // A standalone service's old version stops before its new one starts: a new one that
    // fails is counted once, as failed, and said not to run (it was counted as stopped too).
    std::fs::create_dir_all(dir.join("apps/solo")).unwrap();
    std::fs::write(
        dir.join("apps/solo/solo.lua"),
        "local a = {}\na.run = function() end\nreturn a\n",
    )
    .unwrap();
    let services = r#", "good": { "request_target": "/good", "instances": 2 },
                      "solo": { "standalone": true }"#;
    lapps_json(&dir, services);
    signal(pid, libc::SIGHUP);
    let line = wait_line(&log, "reload done");
    assert!(
        line.contains("1 started, 0 replaced, 0 stopped, 1 unchanged, 0 failed"),
        "{line}"
    );
    std::fs::write(
        dir.join("apps/solo/solo.lua"),
        "local a = {}\na.init = function() error('no') end\na.run = function() end\nreturn a\n",
    )
    .unwrap();
    signal(pid, libc::SIGHUP);
    let line = wait_line(&log, "reload done");
    assert!(
        line.contains(
            "0 started, 0 replaced, 0 stopped, 1 unchanged, 1 failed (1 of them not running now)"
        ),
        "{line}"
    );
    server.stop();
}

/// The server with its log in a file rather than a pipe: a line is in the file once the
/// server's write(2) returns, which a test can rely on when the server signals afterwards.
fn spawn_logging_to_file(dir: &std::path::Path) -> (Reaper, PathBuf) {
    let log = dir.join("lapps.log");
    let mut server = Reaper(
        std::process::Command::new(env!("CARGO_BIN_EXE_lapps"))
            .arg("-c")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn lapps"),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on ")) {
        assert!(Instant::now() < deadline, "lapps never listened");
        assert!(server.0.try_wait().unwrap().is_none(), "lapps exited");
        std::thread::sleep(Duration::from_millis(10)); // polling interval of the start wait
    }
    (server, log)
}

fn lapps_reload(pid: u32) -> std::process::Output {
    binary::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_lapps"))
            .arg("--reload")
            .arg(pid.to_string()),
        Duration::from_secs(90),
    )
}

/// `lapps --reload PID` (the unit's ExecReload) returns once the reload is done, answering how
/// it went: here the reload takes a second (a new service's init() naps), and the log already
/// says `reload done` when the requesters exit, two of them at once, both answered.
#[test]
fn lapps_reload_returns_when_the_reload_is_done_and_says_how_it_went() {
    let dir = site("reload-answer");
    lapps_json(&dir, "");
    let (mut server, log) = spawn_logging_to_file(&dir);
    with_standalone(
        &dir,
        "slow",
        r#"local s = {}
s.init = function() nap:new():sleep(1) end
s.run = function() local n = nap:new() while not must_stop() do n:sleep(1) end end
return s
"#,
        r#""nap""#,
    );
    let pid = server.0.id();
    let other = std::thread::spawn(move || lapps_reload(pid));
    let out = lapps_reload(pid);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        out.status.success(),
        "{out:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("process {pid} reloaded")),
        "{out:?}"
    );
    assert!(
        logged.contains("reload done: Lua services: 1 started"),
        "the requester returned before the reload was done:\n{logged}"
    );
    assert!(other.join().unwrap().status.success());

    // A reload that fails in part is answered so: status 1.
    std::fs::create_dir_all(dir.join("apps/bad")).unwrap();
    std::fs::write(dir.join("apps/bad/bad.lua"), "local a = {\nreturn a\n").unwrap();
    lapps_json(
        &dir,
        r#", "slow": { "standalone": true, "preload": ["nap"] }, "bad": { "request_target": "/bad" }"#,
    );
    let out = lapps_reload(pid);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("failed in part"), "{out:?}");
    // A server that logs to a file, not the journal: no journalctl hint (also when it has
    // JOURNAL_STREAM from a test run under systemd: its stderr is another file).
    assert!(!said.contains("journalctl"), "{said}");
    assert!(std::fs::read_to_string(&log).unwrap().contains("1 failed"));
    server.stop();
}

/// A realtime signal would end a process that does not expect it: `lapps --reload` sends its
/// request only to a process that blocks it (a lapps server), and says so otherwise.
#[test]
fn lapps_reload_leaves_a_process_that_is_not_a_lapps_server_alone() {
    let mut sleeper = Reaper(
        std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep"),
    );
    let out = lapps_reload(sleeper.0.id());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not take reload requests"),
        "{out:?}"
    );
    assert!(sleeper.0.try_wait().unwrap().is_none(), "sleep was killed");
    let out = lapps_reload(i32::MAX as u32);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no process"));
}

/// The request's signal sent by hand (a shell's `kill -s RTMIN+1`, `systemctl kill`) reloads
/// without an answer: the answer's default action would end the sender, and PID 1 reads
/// RTMIN+2/+3 as commands. Only `lapps --reload`'s queued request is answered.
#[test]
fn a_request_signal_sent_by_hand_reloads_and_leaves_its_sender_alone() {
    let dir = site("reload-by-hand");
    lapps_json(&dir, "");
    let (mut server, _addr, log) = spawn_binary(&dir, |_| {});
    let pid = server.0.id();
    // Sends the signal as kill(2) does.
    let sender = until_stdin_ends(&format!(
        "import os, signal; os.kill({pid}, signal.SIGRTMIN + 1)"
    ));
    let reload = binary::lines_until(&log, "reload done");
    assert!(
        reload.iter().any(|l| l.contains("SIGRTMIN+1 received")),
        "{reload:?}"
    );
    server.stop();
    let status = end_stdin(sender);
    assert!(status.success(), "the sender was answered: {status:?}");
}

/// A Python process that runs `script`, then waits for the end of its stdin (which
/// [`end_stdin`] gives it). It handles no signal: an answer to a reload request, sent any
/// time before the test ends its stdin, ends it by that signal.
fn until_stdin_ends(script: &str) -> Reaper {
    Reaper(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(format!("{script}\nimport sys; sys.stdin.read()"))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("python3"),
    )
}

/// Ends the stdin of an [`until_stdin_ends`] process and returns how it exited: a signal
/// queued to it before is taken first (it is pending as its read returns).
fn end_stdin(mut waiter: Reaper) -> std::process::ExitStatus {
    drop(waiter.0.stdin.take());
    waiter.wait_exit(Duration::from_secs(15))
}

/// The kernel does not check the pid a queued signal claims to come from: a request naming
/// another process (here a Python process, which does not handle the answers) gets a reload without an
/// answer, and the named process lives on.
#[test]
fn a_request_naming_a_process_that_does_not_wait_is_not_answered() {
    let dir = site("reload-forged");
    lapps_json(&dir, "");
    let (mut server, _addr, log) = spawn_binary(&dir, |_| {});
    let bystander = until_stdin_ends("pass");
    let forged = lapps::reload_request::QueuedSiginfo::new(
        libc::SIGRTMIN() + 1,
        bystander.0.id() as libc::pid_t,
        lapps::reload_request::REQUEST_VALUE,
    );
    // SAFETY: rt_sigqueueinfo to the server this test started, with a siginfo-sized value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigqueueinfo,
            server.0.id() as libc::pid_t,
            libc::SIGRTMIN() + 1,
            &forged as *const lapps::reload_request::QueuedSiginfo,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let reload = binary::lines_until(&log, "reload done");
    assert!(
        reload
            .iter()
            .any(|l| l.contains("which does not wait for an answer")),
        "{reload:?}"
    );
    // Any answer went out before the server's exit.
    server.stop();
    let status = end_stdin(bystander);
    assert!(
        status.success(),
        "the named process was answered: {status:?}"
    );
}

/// A standalone service's `onShutdown` gets one instruction budget, as `init()` does: a loop
/// over polling points there (each `n:sleep` answers "stopping" at once by then) is stopped by
/// the budget, not left spinning through the service's whole grace.
#[test]
fn on_shutdown_of_a_standalone_service_cannot_renew_its_budget() {
    let dir = site("shutdown-budget");
    with_standalone(
        &dir,
        "spinner",
        r#"local s = {}
s.run = function() local n = nap:new() while not must_stop() do n:sleep(1) end end
s.onShutdown = function() local n = nap:new() while true do n:sleep(0.01) end end
return s
"#,
        r#""nap""#,
    );
    // A small budget, so that it runs out at once once it is no longer renewed.
    lapps_json(
        &dir,
        r#", "spinner": { "standalone": true, "preload": ["nap"], "instruction_budget": 100000 }"#,
    );
    let (mut server, _addr, log) = spawn_binary(&dir, |_| {});
    signal(server.0.id(), libc::SIGTERM);
    let stop = binary::lines_until(&log, "INFO stopped");
    assert!(server.wait_exit(Duration::from_secs(15)).success());
    let line = stop
        .iter()
        .find(|l| l.contains("onShutdown") && l.contains("instruction budget"))
        .unwrap_or_else(|| panic!("{stop:?}"));
    // Said once, with the app's line and a traceback (the budget's error is an mlua error
    // object, whose text has the prefix already).
    assert_eq!(line.matches("runtime error").count(), 1, "{line}");
    assert!(
        line.contains("spinner.lua:3:") && line.contains("stack traceback"),
        "{line}"
    );
    assert!(!stop.iter().any(|l| l.contains("did not stop")), "{stop:?}");
}

/// A standalone service whose new version fails its `init()` is down until a later SIGHUP:
/// the status report (SIGUSR1) names it as not running, and why.
#[test]
fn the_status_report_names_a_service_a_failed_reload_left_down() {
    let dir = site("status-down");
    let worker = r#"local s = {}
s.run = function() local n = nap:new() while not must_stop() do n:sleep(0.05) end end
return s
"#;
    with_standalone(&dir, "flaky", worker, r#""nap""#);
    let (mut server, _addr, log) = spawn_binary(&dir, |_| {});
    let pid = server.0.id();
    std::fs::write(
        dir.join("apps/flaky/flaky.lua"),
        "return { init = function() error('cannot start') end, run = function() end }\n",
    )
    .unwrap();
    signal(pid, libc::SIGHUP);
    let line = wait_line(&log, "reload done");
    assert!(line.contains("1 failed"), "{line}");
    signal(pid, libc::SIGUSR1);
    let status = binary::lines_until(&log, "status: bcast");
    assert!(
        status.iter().any(|l| l.ends_with(
            "status: service flaky: not running, its last start failed (see the deploy: lines); \
             the next SIGHUP tries again"
        )),
        "{status:#?}"
    );
    server.stop();
}

/// A Lua service given the path a builtin serves until the restart waits for it: the reload
/// counts it as waiting (not failed), and the status report says why it does not run.
#[test]
fn a_service_waiting_for_the_restart_is_counted_and_reported() {
    let dir = site("status-waiting");
    lapps_json(&dir, "");
    let (mut server, _addr, log) = spawn_binary(&dir, |_| {});
    let pid = server.0.id();
    std::fs::create_dir_all(dir.join("apps/svc")).unwrap();
    std::fs::write(
        dir.join("apps/svc/svc.lua"),
        "return { onMessage = function() return true end }\n",
    )
    .unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::write(
        dir.join("lapps.json"),
        format!(
            r#"{{ "directories": {{ "applications": "{}", "lib": "{root}/lua/lib" }},
                 "services": {{ "echo": {{ "builtin": "echo", "request_target": "/e2" }},
                                "svc": {{ "request_target": "/echo" }} }} }}"#,
            dir.join("apps").display()
        ),
    )
    .unwrap();
    signal(pid, libc::SIGHUP);
    let line = wait_line(&log, "reload done");
    assert!(
        line.contains(" INFO ")
            && line.ends_with(
                "0 started, 0 replaced, 0 stopped, 0 unchanged, 0 failed, 1 waiting for the restart"
            ),
        "{line}"
    );
    signal(pid, libc::SIGUSR1);
    let status = binary::lines_until(&log, "status: bcast");
    assert!(
        status.iter().any(|l| l.ends_with(
            "status: service svc: not running, it waits for the restart (builtin service echo \
             serves \"/echo\" until then)"
        )),
        "{status:#?}"
    );
    server.stop();
}

/// A new version that does not start (one of its instances fails) keeps the running one: what
/// its instances log while they start is tagged `new version`, and what those that had
/// started still log (their `onShutdown`) `failed start`, so that neither is read as the
/// running version's (a trial saw `[vecho#0]` on both).
#[test]
fn what_a_version_that_did_not_start_logs_is_tagged_so() {
    let dir = site("failed-start-tag");
    std::fs::create_dir_all(dir.join("apps/two")).unwrap();
    let ready = dir.join("ready0");
    std::fs::write(
        dir.join("apps/two/two.lua"),
        "local a = {}\na.onMessage = function() return true end\nreturn a\n",
    )
    .unwrap();
    let service = r#", "two": { "request_target": "/two", "instances": 2, "preload": ["time"],
                      "instruction_budget": 0 }"#;
    lapps_json(&dir, service);
    let (mut server, _addr, log) = spawn_binary(&dir, |_| {});
    // Instance 1 fails once instance 0 has started (it leaves a file, then returns).
    std::fs::write(
        dir.join("apps/two/two.lua"),
        format!(
            r#"local ready = {ready:?}
local a = {{}}
a.onStart = function()
  if instance_id == 0 then
    print("starting v2")
    io.open(ready, "w"):close()
    return
  end
  local give_up = time.monotonic() + 10000
  while not io.open(ready) and time.monotonic() < give_up do end
  local settle = time.monotonic() + 500
  while time.monotonic() < settle do end
  error("instance 1 does not start")
end
a.onShutdown = function() print("shutting down v2") end
a.onMessage = function() return true end
return a
"#
        ),
    )
    .unwrap();
    signal(server.0.id(), libc::SIGHUP);
    // While it starts beside the running version, its lines are told apart too.
    let line = wait_line(&log, "starting v2");
    assert!(line.contains(" [two#0 new version] "), "{line}");
    let line = wait_line(&log, "shutting down v2");
    assert!(line.contains(" [two#0 failed start] "), "{line}");
    let line = wait_line(&log, "reload done");
    assert!(line.contains("1 failed"), "{line}");
    server.stop();
}

/// A dependency whose new version fails leaves the services that depend on it running without
/// it: the deploy warns, naming both (a trial's echo_lapps lost its time broadcast unsaid).
#[test]
fn a_service_left_without_its_dependency_is_warned_of() {
    let dir = site("missing-dependency");
    for name in ["base", "user"] {
        std::fs::create_dir_all(dir.join("apps").join(name)).unwrap();
    }
    std::fs::write(
        dir.join("apps/base/base.lua"),
        "local a = {}\na.run = function() end\nreturn a\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("apps/user/user.lua"),
        "local a = {}\na.onMessage = function() return true end\nreturn a\n",
    )
    .unwrap();
    lapps_json(
        &dir,
        r#", "base": { "standalone": true },
             "user": { "request_target": "/user", "depends": ["base", "echo"] }"#,
    );
    let (mut server, _addr, log) = spawn_binary(&dir, |_| {});
    std::fs::write(
        dir.join("apps/base/base.lua"),
        "local a = {}\na.init = function() error('no') end\na.run = function() end\nreturn a\n",
    )
    .unwrap();
    signal(server.0.id(), libc::SIGHUP);
    let lines = binary::lines_until(&log, "reload done");
    let warned: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("runs without"))
        .collect();
    assert!(
        warned.len() == 1
            && warned[0].contains(" WARN ")
            && warned[0].ends_with(
                "deploy: service user runs without base, which it depends on and which is not \
                 running"
            ),
        "{lines:#?}"
    );
    server.stop();
}

/// A version whose start timed out while its init/onStart still runs (a loop that never
/// returns) is not started again by the next reload until it changes: each try held the
/// reload for the whole start timeout (30 s) and left one more spinning thread (a trial's
/// queued reload waited twice). The running version keeps serving throughout.
#[test]
fn a_version_whose_start_timed_out_is_not_started_again_while_it_runs() {
    const STUCK_GUARD: Duration = Duration::from_secs(60);
    let dir = site("stuck-again");
    std::fs::create_dir_all(dir.join("apps/spin")).unwrap();
    let echo = |tag: &str| {
        format!(
            "local a = {{}}\na.onMessage = function(h, op, m) ws:send(h, 1, '{tag} ' .. m) \
             return true end\nreturn a\n"
        )
    };
    std::fs::write(dir.join("apps/spin/spin.lua"), echo("v1")).unwrap();
    lapps_json(
        &dir,
        r#", "spin": { "request_target": "/spin", "instruction_budget": 0 }"#,
    );
    let (mut server, addr, log) = spawn_binary(&dir, |_| {});
    let mut ws = connect(addr, "/spin");
    assert_eq!(ask(&mut ws, "hi"), "v1 hi");
    std::fs::write(
        dir.join("apps/spin/spin.lua"),
        "local a = {}\na.onStart = function() while true do end end\n\
         a.onMessage = function() return true end\nreturn a\n",
    )
    .unwrap();
    signal(server.0.id(), libc::SIGHUP);
    let deadline = Instant::now() + STUCK_GUARD;
    let mut first = Vec::new();
    while !first
        .last()
        .is_some_and(|l: &String| l.contains("reload done"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        first.push(log.recv_timeout(left).expect("the stuck reload ends"));
    }
    assert!(
        first
            .iter()
            .any(|l| l.contains("did not finish within 30s")),
        "{first:#?}"
    );
    // Nothing changed: this version is not tried again while its start still runs.
    signal(server.0.id(), libc::SIGHUP);
    let again = binary::lines_until(&log, "reload done");
    assert!(
        again.iter().any(|l| l.contains(
            "deploy: service spin: this version is not started again: its last start timed \
             out and its init/onStart still runs (change the app, or restart the server); the \
             running version keeps serving"
        )) && again.last().unwrap().contains("1 failed"),
        "{again:#?}"
    );
    assert_eq!(ask(&mut ws, "still"), "v1 still");
    // A change is a new version: tried at once.
    std::fs::write(dir.join("apps/spin/spin.lua"), echo("v3")).unwrap();
    signal(server.0.id(), libc::SIGHUP);
    let fixed = binary::lines_until(&log, "reload done");
    assert!(fixed.last().unwrap().contains("1 replaced"), "{fixed:#?}");
    let mut ws = connect(addr, "/spin");
    assert_eq!(ask(&mut ws, "hi"), "v3 hi");
    server.stop();
}

/// An instance thread given up on (a `run()` that goes on past the stop's grace) is named by
/// the status report while it runs; once it ends, a line says so (a trial's operator saw it
/// drop from the report unsaid).
#[test]
fn a_thread_given_up_on_is_logged_when_it_ends() {
    const GUARD: Duration = Duration::from_secs(20);
    let dir = site("left-behind-ends");
    with_standalone(
        &dir,
        "late",
        r#"local a = {}
a.run = function()
  while not must_stop() do end
  local done = time.monotonic() + 6000
  while time.monotonic() < done do end
end
return a
"#,
        r#""time""#,
    );
    let lapps = std::fs::read_to_string(dir.join("lapps.json")).unwrap();
    std::fs::write(
        dir.join("lapps.json"),
        lapps.replace(
            r#""standalone": true"#,
            r#""standalone": true, "instruction_budget": 0"#,
        ),
    )
    .unwrap();
    let (mut server, _addr, log) = spawn_binary(&dir, |_| {});
    lapps_json(&dir, "");
    signal(server.0.id(), libc::SIGHUP);
    let deadline = Instant::now() + GUARD;
    let mut lines = Vec::new();
    while !lines
        .last()
        .is_some_and(|l: &String| l.contains("its thread has ended"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        lines.push(log.recv_timeout(left).expect("the thread's end is logged"));
    }
    assert!(
        lines
            .last()
            .unwrap()
            .contains("service late instance 0: its thread has ended, ")
            && lines
                .last()
                .unwrap()
                .ends_with(" after it did not stop in time"),
        "{lines:#?}"
    );
    server.stop();
}
