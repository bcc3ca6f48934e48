//! Safety of the Lua host: errors, runaway loops and memory bombs close only their connection
//! (1011) and the instance keeps serving; start-up errors name file and line; the sandbox
//! leaves out what the config did not allow. What a connection sees goes through the real
//! server and a real client; start-up errors are asked of the Registry.
mod common;
#[path = "common/lua_host.rs"]
mod host;

use common::*;
use host::{example_app, hub, next_text as next_of, test_app, write_app};
use lapps::service::registry::Registry;
use std::path::PathBuf;

/// The probe test app alone on one instance and one worker, so that the failed callback and
/// the next ones share a Lua state; `keys` are more of its service keys.
fn probe_alone(keys: &str) -> TestApp {
    let services = lapps_json(
        "./tests/apps",
        &format!(r#"{{ "probe": {{ "instances": 1, "preload": ["bcast"], {keys} }} }}"#),
    );
    start_app(&ws_json(1), &services)
}

fn stopped_with_1011_and_others_keep_working(cmd: &str, keys: &str) {
    let app = probe_alone(keys);
    let mut other = connect(app.addr, "/probe");
    assert_eq!(ask(&mut other, "before"), "before");
    let mut victim = connect(app.addr, "/probe");
    send(&mut victim, cmd);
    assert_eq!(ws_close_code(&mut victim), 1011, "{cmd}");
    finish_close(victim);
    // The same (only) instance serves the open connection and a new one.
    for i in 0..3 {
        assert_eq!(ask(&mut other, &format!("after {i}")), format!("after {i}"));
    }
    let mut next = connect(app.addr, "/probe");
    assert_eq!(ask(&mut next, "next"), "next");
    let big = "y".repeat(100_000);
    assert_eq!(
        ask(&mut next, &big),
        big,
        "{cmd}: the state is usable again"
    );
}

/// A budget small enough for a runaway callback to end in well under a second.
const BUDGET: &str = r#""instruction_budget": 5000000"#;

#[test]
fn a_lua_error_closes_only_that_connection_with_1011() {
    stopped_with_1011_and_others_keep_working("error", BUDGET);
}

#[test]
fn a_runaway_loop_is_stopped_by_the_instruction_budget() {
    stopped_with_1011_and_others_keep_working("loop", BUDGET);
}

#[test]
fn a_coroutine_does_not_take_the_budget_hook_away() {
    stopped_with_1011_and_others_keep_working("coloop", BUDGET);
}

#[test]
fn an_xpcall_message_handler_does_not_run_past_the_budget() {
    stopped_with_1011_and_others_keep_working("xploop", BUDGET);
}

#[test]
fn a_replaced_global_type_does_not_open_the_xpcall_handler_to_run_past_the_budget() {
    stopped_with_1011_and_others_keep_working("typeloop", BUDGET);
}

#[test]
fn an_app_cannot_make_a_finalizer_that_runs_without_a_budget() {
    stopped_with_1011_and_others_keep_working("gcloop", BUDGET);
}

#[test]
fn the_jit_cannot_be_turned_back_on_under_a_budget() {
    stopped_with_1011_and_others_keep_working("jitloop", BUDGET);
}

#[test]
fn must_stop_gives_a_network_callback_no_new_budget() {
    stopped_with_1011_and_others_keep_working("mustloop", BUDGET);
}

#[test]
fn a_memory_bomb_is_stopped_by_the_memory_limit() {
    // No budget: the memory limit alone must stop it, with the JIT on.
    stopped_with_1011_and_others_keep_working(
        "bomb",
        r#""memory_limit": 33554432, "instruction_budget": 0"#,
    );
}

#[test]
fn a_memory_bomb_under_a_budget_is_stopped_too() {
    stopped_with_1011_and_others_keep_working(
        "bomb",
        &format!(r#""memory_limit": 33554432, {BUDGET}"#),
    );
}

#[test]
fn after_a_callback_fails_near_the_memory_limit_its_garbage_is_collected() {
    // A 16 MiB state: a callback builds about 13 MiB of strings and raises an ordinary error
    // (not a memory error). What it built is garbage, and LuaJIT never collects to make room
    // for an allocation: unless the failure is followed by a full collection, the next
    // callback's 3 MiB string (6 MiB while it is built) does not fit.
    let app = probe_alone(r#""memory_limit": 16777216, "instruction_budget": 0"#);
    let mut a = connect(app.addr, "/probe");
    send(&mut a, "garbage 13000");
    assert_eq!(ws_close_code(&mut a), 1011);
    finish_close(a);
    let mut b = connect(app.addr, "/probe");
    assert_eq!(ask(&mut b, "big 3072"), "3145728");
}

#[test]
fn a_message_is_not_refused_for_garbage_a_collection_would_free() {
    // Ten messages of 1.8 MiB, each unlike the others (LuaJIT interns equal strings), into a
    // 4 MiB state whose app keeps none of them and has stopped the incremental collector (as
    // it may not reach large strings in time): when the push of a message is refused, a full
    // collection frees the ones before and the push is made again, rather than the message
    // failing its connection with 1011.
    let apps = AppsDir::new(
        "garbage",
        &[(
            "garbage",
            b"collectgarbage('stop')
local m = {}
m.onMessage = function(h, op, msg) ws:send(h, 1, 'got ' .. #msg) return true end
return m
",
        )],
    );
    let app = apps.start(r#"{ "garbage": { "instances": 1, "memory_limit": 4194304 } }"#);
    let mut ws = connect(app.addr, "/garbage");
    let size = 1800 << 10;
    for i in 0..10 {
        let message = format!("{i}{}", "x".repeat(size - 1));
        assert_eq!(ask(&mut ws, &message), format!("got {size}"), "message {i}");
    }
}

#[test]
fn coroutines_keep_their_behaviour_under_the_stack_guard() {
    // coroutine.resume and coroutine.wrap are the sandbox's (they check the thread's stack
    // first): values in and out, yields, and error values (tables) pass unchanged.
    let app = probe_alone(BUDGET);
    let mut ws = connect(app.addr, "/probe");
    assert_eq!(ask(&mut ws, "co"), "2 20 false 7 false 8 dead");
}

#[test]
fn a_syntax_error_refuses_to_start_with_file_and_line() {
    let hub = hub(1);
    let e = Registry::start(vec![example_app("echo"), test_app("broken")], hub.clone())
        .err()
        .expect("must refuse to start");
    assert_eq!(e.service, "broken");
    assert!(
        e.message.contains("tests/apps/broken/broken.lua:4:"),
        "{}",
        e.message
    );
}

#[test]
fn a_broken_service_without_auto_start_is_refused_alone() {
    let hub = hub(1);
    let mut broken = test_app("broken");
    broken.auto_start = false;
    let reg = Registry::start(vec![example_app("echo"), broken], hub.clone()).unwrap();
    let e = reg.start_service("broken").unwrap_err();
    assert!(e.message.contains("broken.lua:4:"), "{e}");
    assert!(reg.route("/broken").is_none());
    assert!(reg.route("/echo").is_some());
    let names: Vec<(String, bool)> = reg
        .services()
        .into_iter()
        .map(|s| (s.name, s.running))
        .collect();
    assert_eq!(
        names,
        [("echo".to_string(), true), ("broken".to_string(), false)]
    );
}

#[test]
fn a_server_with_a_broken_service_not_auto_started_serves_the_others() {
    let services = lapps_json(
        "./tests/apps",
        r#"{ "probe": { "preload": ["bcast"] }, "broken": { "auto_start": false } }"#,
    );
    let app = start_app(&ws_json(1), &services);
    let refused = http_exchange(app.addr, upgrade_request(app.addr, "/broken").as_bytes());
    assert!(refused.starts_with("HTTP/1.1 404"), "{refused}");
    let mut ws = connect(app.addr, "/probe");
    assert_eq!(ask(&mut ws, "still serving"), "still serving");
}

/// A directory of apps under target/, each `name/name.lua` from its source; removed on drop.
struct AppsDir(PathBuf);

impl AppsDir {
    fn new(tag: &str, apps: &[(&str, &[u8])]) -> AppsDir {
        let dir = repo_root()
            .join("target")
            .join(format!("lua_safety-{tag}-{}", std::process::id()));
        for (name, src) in apps {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join(format!("{name}.lua")), src).unwrap();
        }
        AppsDir(dir)
    }

    /// The server on these apps with `services` (the text of lapps.json's services object).
    fn start(&self, services: &str) -> TestApp {
        start_app(
            &ws_json(1),
            &lapps_json(&self.0.display().to_string(), services),
        )
    }
}

impl Drop for AppsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn app_in_tmp(name: &str, src: impl AsRef<[u8]>) -> lapps::service::lua::ServiceSpec {
    write_app(&host::scratch("test", name), name, src)
}

const SANDBOX_CHECK: &str = r#"
local m = {}
m.onMessage = function(h, op, msg)
  ws:send(h, 1, string.format("ffi=%s debug=%s execute=%s popen=%s exit=%s jit=%s locale=%s/%s",
    tostring(pcall(require, "ffi")), type(debug), type(os.execute), type(io.popen),
    type(os.exit), type(jit), tostring(os.setlocale("C")), tostring(os.setlocale())))
  return true
end
return m
"#;

#[test]
fn the_sandbox_leaves_out_what_the_config_does_not_allow() {
    let apps = AppsDir::new(
        "sandbox",
        &[
            ("strict", SANDBOX_CHECK.as_bytes()),
            ("lenient", SANDBOX_CHECK.as_bytes()),
        ],
    );
    let app = apps.start(
        r#"{ "strict": {},
             "lenient": { "allow_ffi": true, "allow_debug": true, "allow_os_execute": true,
                          "instruction_budget": 0 } }"#,
    );
    let mut strict = connect(app.addr, "/strict");
    let mut lenient = connect(app.addr, "/lenient");
    assert_eq!(
        ask(&mut strict, "?"),
        "ffi=false debug=nil execute=nil popen=nil exit=nil jit=nil locale=nil/C"
    );
    assert_eq!(
        ask(&mut lenient, "?"),
        "ffi=true debug=table execute=function popen=function exit=nil jit=table locale=nil/C"
    );
}

/// The ways into ffi, and to bytecode LuaJIT does not verify, of a state without allow_ffi.
const BACK_DOORS: &str = r#"
local m = {}
local function binary(f, ...)
  local ok, fn, err = pcall(f, ...)
  return tostring(ok and fn == nil and tostring(err):find("wrong mode", 1, true) ~= nil)
end
m.onMessage = function(h, op, msg)
  -- A 64-bit literal makes LuaJIT load the ffi library on demand.
  local lit = load("return 1LL")
  if lit then lit() end
  local dir = "@DIR@"
  local f = assert(io.open(dir .. "/bin.lua", "wb"))
  f:write("\27LJ\2\0")
  f:close()
  package.path = dir .. "/?.lua;" .. package.path
  ws:send(h, 1, string.format(
    "ffi=%s buffer=%s dump=%s load=%s loadstring=%s loadfile=%s dofile=%s require=%s",
    tostring(pcall(require, "ffi")), tostring(pcall(require, "string.buffer")),
    type(string.dump), binary(load, "\27LJ\2\0"), binary(loadstring, "\27LJ\2\0"),
    binary(loadfile, dir .. "/bin.lua"), binary(function(p) return nil, select(2, pcall(dofile, p)) end, dir .. "/bin.lua"),
    binary(function(n) return nil, select(2, pcall(require, n)) end, "bin")))
  return true
end
return m
"#;

#[test]
fn a_state_without_allow_ffi_has_no_way_into_ffi_or_unverified_bytecode() {
    let scratch = AppsDir::new("back-doors-files", &[]);
    std::fs::create_dir_all(&scratch.0).unwrap();
    let src = BACK_DOORS.replace("@DIR@", &scratch.0.display().to_string());
    let apps = AppsDir::new("back-doors", &[("doors", src.as_bytes())]);
    let app = apps.start(r#"{ "doors": {} }"#);
    let mut ws = connect(app.addr, "/doors");
    assert_eq!(
        ask(&mut ws, "?"),
        "ffi=false buffer=false dump=nil load=true loadstring=true loadfile=true dofile=true require=true"
    );
}

#[test]
fn an_app_file_in_bytecode_runs_only_in_a_state_made_unsafe() {
    let bytecode = mlua::Lua::new()
        .load("return { onMessage = function() return true end }")
        .into_function()
        .unwrap()
        .dump(false);
    let hub = hub(1);
    let e = Registry::start(vec![app_in_tmp("bytecode", &bytecode)], hub.clone())
        .err()
        .expect("bytecode LuaJIT does not verify was loaded");
    assert!(e.message.contains("attempt to load a binary chunk"), "{e}");
    // allow_ffi made the state unsafe by design: a precompiled app is the operator's call.
    let mut s = app_in_tmp("bytecode_ffi", &bytecode);
    s.allow_ffi = true;
    assert!(Registry::start(vec![s], hub.clone()).is_ok());
}

#[test]
fn a_missing_on_message_or_a_bad_module_is_a_start_error() {
    let hub = hub(1);
    let e = Registry::start(vec![app_in_tmp("nomsg", "return {}")], hub.clone())
        .err()
        .unwrap();
    assert!(e.message.contains("no onMessage"), "{e}");
    let e = Registry::start(vec![app_in_tmp("notable", "return 42")], hub.clone())
        .err()
        .unwrap();
    assert!(e.message.contains("module table"), "{e}");
    let e = Registry::start(
        vec![app_in_tmp(
            "throws",
            "local x = nil\nlocal y = x.field\nreturn {}",
        )],
        hub.clone(),
    )
    .err()
    .unwrap();
    assert!(e.message.contains("throws.lua:2:"), "{e}");
}

/// The measurement behind "a budget turns the JIT off": LuaJIT does not run count hooks inside
/// compiled traces. If a future LuaJIT does, this fails and the trade-off can be revisited.
#[test]
fn jit_traces_skip_count_hooks_which_is_why_a_budget_turns_the_jit_off() {
    use std::cell::Cell;
    use std::rc::Rc;
    let hooks_in = |jit: bool| {
        let lua = mlua::Lua::new();
        if !jit {
            lua.load("jit.off()").exec().unwrap();
        }
        let n = Rc::new(Cell::new(0u64));
        let n2 = Rc::clone(&n);
        lua.set_hook(
            mlua::HookTriggers::new().every_nth_instruction(1000),
            move |_, _| {
                n2.set(n2.get() + 1);
                Ok(mlua::VmState::Continue)
            },
        )
        .unwrap();
        lua.load("local s = 0 for i = 1, 2000000 do s = s + i % 7 end")
            .exec()
            .unwrap();
        n.get()
    };
    let interpreted = hooks_in(false);
    let compiled = hooks_in(true);
    assert!(interpreted > 5000, "interpreter: {interpreted} hook calls");
    assert!(compiled < 10, "JIT: {compiled} hook calls");
}

fn standalone_in_tmp(name: &str, src: &str) -> lapps::service::lua::ServiceSpec {
    let mut s = app_in_tmp(name, src);
    s.standalone = true;
    s.preload = vec!["mqr".into()];
    s
}

#[test]
fn an_init_that_loops_on_must_stop_is_stopped_by_its_budget() {
    let mut s = standalone_in_tmp(
        "initloop",
        "local s = {}\ns.init = function() while not must_stop() do end end\ns.run = function() end\nreturn s",
    );
    s.instruction_budget = Some(5_000_000);
    let e = Registry::start(vec![s], hub(1))
        .err()
        .expect("a start error");
    assert!(e.message.contains("instruction budget"), "{e}");
}

/// The CPUs this machine gives the test, when it has the two that the parallel start tests
/// need (one CPU starts one instance at a time).
fn cpus_for_a_parallel_start() -> Option<usize> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        cannot_run("one CPU starts one instance at a time");
        return None;
    }
    Some(cpus)
}

/// A service's instances start one per CPU at the same time: each init here waits until all
/// of them have begun theirs (one after another, the first would wait for ever for the
/// second).
#[test]
fn the_instances_of_a_service_start_at_the_same_time() {
    let Some(cpus) = cpus_for_a_parallel_start() else {
        return;
    };
    let n = cpus.min(4);
    let mut s = standalone_in_tmp(
        "initmeet",
        &format!(
            r#"local s = {{}}
s.init = function()
  for j = 0, {last} do assert(mqr:post("safety.meet." .. j, tostring(instance_id))) end
  for k = 1, {n} do
    local m, e = mqr:receive("safety.meet." .. instance_id, 15)
    if not m then error("only " .. (k - 1) .. " of {n} instances began their start: " .. e) end
  end
end
s.run = function() end
return s"#,
            last = n - 1
        ),
    );
    s.instances = n;
    let reg = Registry::start(vec![s], hub(1)).expect("all started");
    reg.shutdown();
}

/// More instances than CPUs: the next one starts as one ends its start, and all serve.
#[test]
fn instances_past_the_cpus_start_as_earlier_ones_finish() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut s = standalone_in_tmp(
        "initmany",
        r#"local s = {}
s.init = function() assert(mqr:post("safety.many", tostring(instance_id))) end
s.run = function() end
return s"#,
    );
    s.instances = cpus + 2;
    let log = lapps::service::mqr::registry().open("safety.many", cpus + 2);
    let reg = Registry::start(vec![s], hub(1)).expect("all started");
    let mut started = Vec::new();
    while let Some(m) = log.poll() {
        started.push(
            String::from_utf8(m.into_vec())
                .unwrap()
                .parse::<usize>()
                .unwrap(),
        );
    }
    started.sort();
    assert_eq!(started, (0..cpus + 2).collect::<Vec<_>>());
    reg.shutdown();
}

/// One instance's failed start is reported as soon as it is known, not after the others'
/// start timeout: those still starting are given up on (their `run()` and `onShutdown` never
/// run) and see `must_stop()`, so that their waits end.
#[test]
fn a_failed_instance_start_is_reported_before_the_others_time_out() {
    if cpus_for_a_parallel_start().is_none() {
        return;
    }
    let mut s = standalone_in_tmp(
        "initfail",
        r#"local s = {}
local function log(what) assert(mqr:post("safety.fail.log", what)) end
s.init = function()
  if instance_id == 1 then error("instance 1 cannot start") end
  local m, e = mqr:receive("safety.fail.never")
  log("init returned: " .. tostring(e))
end
s.run = function() log("run") end
s.onShutdown = function() log("onShutdown") end
return s"#,
    );
    s.instances = 2;
    s.start_timeout = std::time::Duration::from_secs(20);
    let log = lapps::service::mqr::registry().open("safety.fail.log", 16);
    let began = std::time::Instant::now();
    let e = Registry::start(vec![s], hub(1))
        .err()
        .expect("a start error");
    // A bound with a wide margin, not a measurement: waiting for instance 0 takes 20 s.
    assert!(began.elapsed() < std::time::Duration::from_secs(10));
    assert!(e.message.contains("instance 1: "), "{e}");
    assert!(e.message.contains("instance 1 cannot start"), "{e}");
    // Instance 0's init returns (must_stop()), then its thread ends (its name is set only
    // once it runs: the log line comes first).
    wait_for("instance 0's init to return", IO_TIMEOUT, || {
        !log.is_empty()
    });
    wait_for("instance 0's thread to end", IO_TIMEOUT, || {
        !std::fs::read_dir("/proc/self/task").unwrap().any(|t| {
            let comm = t.unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == "lua-initfail#0")
        })
    });
    let mut logged = Vec::new();
    while let Some(m) = log.poll() {
        logged.push(String::from_utf8(m.into_vec()).unwrap());
    }
    assert_eq!(logged, ["init returned: stopped"]);
}

#[test]
fn an_init_that_never_returns_fails_the_start_after_its_timeout() {
    let mut s = standalone_in_tmp(
        "initwait",
        "local s = {}\ns.init = function() mqr:receive(\"safety.never\") end\ns.run = function() end\nreturn s",
    );
    s.start_timeout = std::time::Duration::from_secs(1);
    let e = Registry::start(vec![s], hub(1))
        .err()
        .expect("a start error");
    assert!(e.message.contains("did not finish"), "{e}");
}

/// An init that never returns (blocked in a C call, which nothing can cut short) fails its
/// start, and its thread runs on: the status report names it rather than leave the service
/// looking stopped while the thread holds on (or spins a core).
#[test]
fn a_start_given_up_on_leaves_its_thread_in_the_status_report() {
    let reg = Registry::start(vec![], hub(1)).unwrap();
    let mut s = standalone_in_tmp(
        "initblocked",
        r#"local ffi = require("ffi")
ffi.cdef[[ int poll(void *fds, unsigned long nfds, int timeout); ]]
local s = {}
s.init = function() ffi.C.poll(nil, 0, 60000) end
s.run = function() end
return s"#,
    );
    s.allow_ffi = true;
    s.start_timeout = std::time::Duration::from_millis(300);
    let e = reg.add(s).expect_err("a start error");
    assert!(e.message.contains("did not finish"), "{e}");
    let status = reg.status();
    assert!(
        status.iter().any(|l| l
            .starts_with("service initblocked instance 0: its thread still runs, ")
            && l.contains(" after its start timed out")),
        "{status:#?}"
    );
    reg.shutdown();
}

#[test]
fn a_run_that_returns_early_keeps_on_shutdown_for_the_shutdown() {
    let s = standalone_in_tmp(
        "earlyrun",
        r#"local s = {}
s.run = function() assert(mqr:post("safety.early", "ran")) end
s.onShutdown = function() assert(mqr:post("safety.early", "onShutdown, stopping=" .. tostring(must_stop()))) end
return s"#,
    );
    let q = lapps::service::mqr::registry().open("safety.early", 4);
    let reg = Registry::start(vec![s], hub(1)).unwrap();
    let next = || next_of(&q);
    assert_eq!(next(), "ran");
    reg.shutdown();
    assert_eq!(next(), "onShutdown, stopping=true");
}

/// `n:sleep(math.huge)` sleeps until the service stops (the longest sleep, 10^9 s), as an
/// idle loop would ask: it answered "bad duration" at once.
#[test]
fn a_sleep_of_math_huge_lasts_until_the_stop() {
    let mut s = standalone_in_tmp(
        "hugenap",
        r#"local s = {}
s.run = function()
  assert(mqr:post("safety.hugenap", "sleeping"))
  local r, e = nap:new():sleep(math.huge)
  assert(mqr:post("safety.hugenap", tostring(r) .. " " .. tostring(e)))
end
return s"#,
    );
    s.preload.push("nap".into());
    let q = lapps::service::mqr::registry().open("safety.hugenap", 4);
    let reg = Registry::start(vec![s], hub(1)).unwrap();
    let next = || next_of(&q);
    assert_eq!(next(), "sleeping");
    reg.shutdown();
    assert_eq!(next(), "nil stopping");
}

/// Copies into the host (`nljson.encode`, `to_cbor`) of a table small in Lua and huge as a
/// copy: one 1 MiB string 100 times, or a table built by doubling a reference 40 times (2^40
/// leaves). Refused as too large once the copy's strings pass what the state has room for or
/// it passes 2^21 values, instead of a copy made on the host's heap without bound (the second
/// would take hours and more memory than the host has).
const COPIES: &str = r#"
local m = {}
m.onMessage = function(h, op, msg)
  local t
  if msg == "numbers" then
    t = {}
    for i = 1, 1500000 do t[i] = i end
    local cbor, err = nljson.to_cbor(t)
    ws:send(h, 1, cbor and string.format("%d numbers in %d bytes", #t, #cbor) or err)
    return true
  elseif msg == "strings" then
    local s = string.rep("x", 1024 * 1024)
    t = {}
    for i = 1, 100 do t[i] = s end
  else
    t = {"x"}
    for i = 1, 40 do t = {t, t} end
  end
  local a, b = nljson.encode(t)
  local c, d = nljson.to_cbor(t)
  ws:send(h, 1, string.format("%s %s | %s %s", tostring(a), tostring(b), tostring(c), tostring(d)))
  return true
end
return m
"#;

#[test]
fn a_copy_into_the_host_is_bounded_however_small_the_table_is_in_lua() {
    let apps = AppsDir::new("copies", &[("copies", COPIES.as_bytes())]);
    let app = apps.start(r#"{ "copies": { "memory_limit": 33554432 } }"#);
    let mut ws = connect(app.addr, "/copies");
    // Copies of millions of values take seconds in a debug build (4 s here alone): a longer
    // guard than IO_TIMEOUT, so that a loaded machine does not fail it.
    ws.get_ref()
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let strings = ask(&mut ws, "strings");
    assert_eq!(
        strings.matches("too large to copy: more than the").count(),
        2,
        "{strings}"
    );
    let tables = ask(&mut ws, "tables");
    assert_eq!(
        tables
            .matches("too large to copy: more than 2097152 values")
            .count(),
        2,
        "{tables}"
    );
    // A plain array of 1.5 million numbers (~12 MB in Lua) is copied: the bound is no tighter
    // than the state's own memory.
    let numbers = ask(&mut ws, "numbers");
    assert!(numbers.starts_with("1500000 numbers in "), "{numbers}");
}

#[test]
fn a_start_out_of_memory_names_the_memory_limit() {
    let hub = hub(1);
    let mut s = app_in_tmp(
        "hungry",
        "local big = string.rep('x', 4 * 1024 * 1024)\nreturn { onMessage = function() return true end }",
    );
    s.memory_limit = 1 << 20;
    let e = Registry::start(vec![s], hub.clone())
        .err()
        .expect("a start error");
    assert!(
        e.message
            .contains("not enough memory (the service's memory_limit is 1048576 bytes)"),
        "{e}"
    );
}

/// An app file may be one expression that gives the module (it delegates to a module of its
/// directory), as a file that returns it.
#[test]
fn an_app_file_that_is_one_expression_gives_its_value() {
    let hub = hub(1);
    for src in [
        "require \"delegate_impl\" -- the whole app\n",
        "require \"delegate_impl\";\n\n",
    ] {
        let s = app_in_tmp("delegate", src);
        std::fs::write(
            s.app_file.parent().unwrap().join("delegate_impl.lua"),
            "return { onMessage = function() return true end }\n",
        )
        .unwrap();
        assert!(Registry::start(vec![s], hub.clone()).is_ok(), "{src:?}");
    }
}

#[test]
fn an_app_that_only_raises_names_its_file_and_line() {
    let hub = hub(1);
    for src in [
        "error('boom at load')",
        "\n\nerror('boom at load')\n",
        "\n\nerror('boom at load') -- a comment on the last line",
    ] {
        let e = Registry::start(vec![app_in_tmp("raiser", src)], hub.clone())
            .err()
            .expect("a start error");
        let line = if src.starts_with('\n') { 3 } else { 1 };
        assert!(
            e.message
                .contains(&format!("raiser.lua:{line}: boom at load")),
            "{e}"
        );
    }
}
