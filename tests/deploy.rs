//! Deploying without a restart (SPEC 7): on SIGHUP (`App::reload`) lapps.json and the app files
//! are read again; a new service starts, a changed one is replaced while the others keep
//! serving, a removed one stops, and a version that fails to load leaves the running one alone.
mod common;
use common::*;
use std::path::PathBuf;
use tungstenite::Message;

struct Site {
    dir: PathBuf,
}

impl Site {
    fn new(name: &str) -> Site {
        let dir = std::env::temp_dir().join(format!("lapps-deploy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("apps")).unwrap();
        std::fs::write(
            dir.join("ws.json"),
            r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 2 }, "close_timeout_ms": 1000 }"#,
        )
        .unwrap();
        Site { dir }
    }

    /// Writes app `name` answering every message with `"<tag> <message>"`.
    fn app(&self, name: &str, tag: &str) {
        let d = self.dir.join("apps").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(format!("{name}.lua")),
            format!(
                "local m = {{}}\nm.onMessage = function(h, op, msg)\n  ws:send(h, 1, {tag:?} .. ' ' .. msg)\n  return true\nend\nreturn m\n"
            ),
        )
        .unwrap();
    }

    /// Writes app `name` with this source.
    fn write_app(&self, name: &str, body: &str) {
        let d = self.dir.join("apps").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("{name}.lua")), body).unwrap();
    }

    fn broken_app(&self, name: &str) {
        let f = self.dir.join("apps").join(name).join(format!("{name}.lua"));
        std::fs::write(f, "local m = {\nreturn m\n").unwrap();
    }

    /// lapps.json with these Lua services (name → /name) plus the builtin echo at /echo.
    fn services(&self, lua: &[&str]) {
        let paths: Vec<String> = lua.iter().map(|n| format!("/{n}")).collect();
        let named: Vec<(&str, &str)> = lua
            .iter()
            .copied()
            .zip(paths.iter().map(|p| p.as_str()))
            .collect();
        self.services_at(&named);
    }

    /// lapps.json with these Lua services (name, path) plus the builtin echo at /echo.
    fn services_at(&self, lua: &[(&str, &str)]) {
        let mut s = String::new();
        for (name, path) in lua {
            s.push_str(&format!(r#", "{name}": {{ "request_target": "{path}" }}"#));
        }
        self.lapps_json(&s);
    }

    /// lapps.json with the builtin echo at /echo and `more` (`, "name": {...}` entries).
    fn lapps_json(&self, more: &str) {
        let root = env!("CARGO_MANIFEST_DIR");
        let s = format!(r#""echo": {{ "builtin": "echo", "request_target": "/echo" }}{more}"#);
        std::fs::write(
            self.dir.join("lapps.json"),
            format!(
                r#"{{ "directories": {{ "applications": "{}", "lib": "{root}/lua/lib" }}, "services": {{ {s} }} }}"#,
                self.dir.join("apps").display()
            ),
        )
        .unwrap();
    }

    fn start(&self) -> lapps::app::App {
        let cfg =
            lapps::config::Config::load(&lapps::config::locate(Some(&self.dir))).expect("config");
        lapps::app::App::start(&cfg).expect("app starts")
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A standalone app that posts "init TAG" to mqr queue `queue` in its init and "stopped TAG"
/// once run() sees must_stop() (needs preload ["mqr", "nap"]).
fn standalone_worker(queue: &str, tag: &str) -> String {
    format!(
        r#"local w = {{}}
w.init = function() assert(mqr:post("{queue}", "init {tag}")) end
w.run = function()
  while not must_stop() do nap:new():sleep(0.01) end
  assert(mqr:post("{queue}", "stopped {tag}"))
end
return w
"#
    )
}

/// The next message on `queue`, as text (within 10 s).
fn next_event(queue: &lapps::service::mqr::Queue) -> String {
    let m = queue
        .receive(std::time::Duration::from_secs(10), &|| false)
        .expect("an event within 10 s");
    String::from_utf8(m.into_vec()).unwrap()
}

fn status_of(addr: std::net::SocketAddr, path: &str) -> String {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let resp = http_exchange_head(addr, &req);
    resp.lines().next().unwrap_or_default().to_string()
}

fn http_exchange_head(addr: std::net::SocketAddr, req: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    read_http_head(&mut s)
}

#[test]
fn a_changed_app_is_replaced_while_the_others_keep_serving() {
    let site = Site::new("replace");
    site.app("svc", "v1");
    site.services(&["svc"]);
    let app = site.start();
    let addr = app.local_addrs()[0];
    let mut old = connect(addr, "/svc");
    let mut other = connect(addr, "/echo");
    assert_eq!(ask(&mut old, "hi"), "v1 hi");

    site.app("svc", "v2");
    app.reload();
    assert_eq!(
        close_code(&mut old),
        Some(1001),
        "clients of the old version are asked to reconnect"
    );
    let mut new = connect(addr, "/svc");
    assert_eq!(ask(&mut new, "hi"), "v2 hi");
    other.send(Message::text("still here")).unwrap();
    assert_eq!(other.read().unwrap(), Message::text("still here"));

    // A version that does not load is reported; the running one keeps serving.
    site.broken_app("svc");
    app.reload();
    assert_eq!(ask(&mut new, "again"), "v2 again");
    let mut after = connect(addr, "/svc");
    assert_eq!(ask(&mut after, "x"), "v2 x");
    app.shutdown();
}

/// Serves app `svc`, which answers with its `lib/tag.lua` module (`lib` is where that file
/// lives: the caller made it reachable as `apps/svc/lib`): "v1", then "v2" once only the
/// module changed and a reload replaced the service; a reload with nothing changed keeps it.
fn a_module_edit_is_a_new_version(site: &Site, lib: &std::path::Path) {
    std::fs::write(
        site.dir.join("apps/svc/svc.lua"),
        "local tag = require('lib.tag')\nlocal m = {}\nm.onMessage = function(h, op, msg)\n  \
         ws:send(h, 1, tag .. ' ' .. msg)\n  return true\nend\nreturn m\n",
    )
    .unwrap();
    std::fs::write(lib.join("tag.lua"), "return 'v1'\n").unwrap();
    site.services(&["svc"]);
    let app = site.start();
    let addr = app.local_addrs()[0];
    let mut old = connect(addr, "/svc");
    assert_eq!(ask(&mut old, "hi"), "v1 hi");

    std::fs::write(lib.join("tag.lua"), "return 'v2'\n").unwrap();
    app.reload();
    assert_eq!(close_code(&mut old), Some(1001));
    let mut new = connect(addr, "/svc");
    assert_eq!(ask(&mut new, "hi"), "v2 hi");

    // Nothing changed: the running version stays.
    app.reload();
    assert_eq!(ask(&mut new, "again"), "v2 again");
    app.shutdown();
}

/// Only a module the app requires changes, in a subdirectory of the app's.
#[test]
fn a_change_to_a_module_the_app_requires_is_a_new_version() {
    let site = Site::new("module");
    let lib = site.dir.join("apps/svc/lib");
    std::fs::create_dir_all(&lib).unwrap();
    a_module_edit_is_a_new_version(&site, &lib);
}

/// The module directory is a symlink to a checkout outside the app's directory (a trial's
/// deploy, which reported success and kept the old code): a change in it is a new version.
/// A link back up the tree (a loop) does not keep the walk going.
#[test]
fn a_change_in_a_symlinked_module_directory_is_a_new_version() {
    let site = Site::new("linked-module");
    let d = site.dir.join("apps").join("svc");
    let shared = site.dir.join("shared-lib");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, d.join("lib")).unwrap();
    std::os::unix::fs::symlink(&d, shared.join("loop")).unwrap();
    a_module_edit_is_a_new_version(&site, &shared);
}

#[test]
fn a_change_to_the_shared_lib_directory_is_a_new_version_of_each_service() {
    let site = Site::new("lib");
    let d = site.dir.join("apps").join("svc");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("svc.lua"),
        "local tag = require('tag')\nlocal m = {}\nm.onMessage = function(h, op, msg)\n  \
         ws:send(h, 1, tag .. ' ' .. msg)\n  return true\nend\nreturn m\n",
    )
    .unwrap();
    let lib = |name: &str, tag: &str| {
        let dir = site.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tag.lua"), format!("return {tag:?}\n")).unwrap();
        std::fs::write(
            site.dir.join("lapps.json"),
            format!(
                r#"{{ "directories": {{ "applications": "{}", "lib": "{}" }},
                     "services": {{ "svc": {{ "request_target": "/svc" }} }} }}"#,
                site.dir.join("apps").display(),
                dir.display()
            ),
        )
        .unwrap();
    };
    lib("lib1", "v1");
    let app = site.start();
    let addr = app.local_addrs()[0];
    let mut ws = connect(addr, "/svc");
    assert_eq!(ask(&mut ws, "hi"), "v1 hi");
    // A module of the lib directory changes.
    lib("lib1", "v2");
    app.reload();
    assert_eq!(close_code(&mut ws), Some(1001));
    let mut ws = connect(addr, "/svc");
    assert_eq!(ask(&mut ws, "hi"), "v2 hi");
    // lapps.json names another lib directory.
    lib("lib2", "v3");
    app.reload();
    assert_eq!(close_code(&mut ws), Some(1001));
    let mut ws = connect(addr, "/svc");
    assert_eq!(ask(&mut ws, "hi"), "v3 hi");
    app.shutdown();
}

#[test]
fn services_are_added_and_removed_by_editing_lapps_json() {
    let site = Site::new("add-remove");
    site.app("one", "one");
    site.app("two", "two");
    site.services(&["one"]);
    let app = site.start();
    let addr = app.local_addrs()[0];
    assert!(status_of(addr, "/two").contains("404"));
    let mut one = connect(addr, "/one");

    site.services(&["one", "two"]);
    app.reload();
    let mut two = connect(addr, "/two");
    assert_eq!(ask(&mut two, "a"), "two a");
    assert_eq!(
        ask(&mut one, "b"),
        "one b",
        "an unchanged service is not touched"
    );

    site.services(&["two"]);
    app.reload();
    assert_eq!(close_code(&mut one), Some(1001));
    assert!(status_of(addr, "/one").contains("404"));
    assert_eq!(ask(&mut two, "c"), "two c");
    app.shutdown();
}

/// A service a reload adds does not start while a service it depends on failed to (as at
/// start-up); it starts with the reload that fixes that one.
#[test]
fn a_service_added_beside_a_dependency_that_failed_to_start_waits_for_it() {
    let site = Site::new("add-depends");
    site.app("one", "one");
    site.services(&["one"]);
    let app = site.start();
    let addr = app.local_addrs()[0];
    site.app("base", "base");
    site.broken_app("base");
    site.app("user", "user");
    site.lapps_json(r#", "one": {}, "base": {}, "user": { "depends": ["base"] }"#);
    app.reload();
    assert!(status_of(addr, "/base").contains("404"));
    assert!(
        status_of(addr, "/user").contains("404"),
        "user started without base"
    );
    site.app("base", "base");
    app.reload();
    assert_eq!(ask(&mut connect(addr, "/base"), "a"), "base a");
    assert_eq!(ask(&mut connect(addr, "/user"), "b"), "user b");
    app.shutdown();
}

#[test]
fn a_lua_service_may_depend_on_a_builtin_one() {
    // --check-config accepts it, so the server must start with it too.
    let app = start_app(
        &ws_json(1),
        &lapps_json(
            "./lua/apps",
            r#"{ "echo_builtin": { "builtin": "echo", "request_target": "/echo_builtin" },
                 "echo": { "protocol": "raw", "request_target": "/echo",
                           "depends": ["echo_builtin"] } }"#,
        ),
    );
    let mut ws = connect(app.addr, "/echo");
    ws.send(Message::text("up")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("up"));
}

#[test]
fn a_renamed_service_keeps_its_path_and_swapped_paths_both_serve() {
    let site = Site::new("rename");
    site.app("one", "one");
    site.app("two", "two");
    site.app("three", "three");
    site.services_at(&[("one", "/x"), ("three", "/y")]);
    let app = site.start();
    let addr = app.local_addrs()[0];
    assert_eq!(ask(&mut connect(addr, "/x"), "a"), "one a");

    // "one" is gone and "two" takes its path: the removal must not unroute it.
    site.services_at(&[("two", "/x"), ("three", "/y")]);
    app.reload();
    assert_eq!(ask(&mut connect(addr, "/x"), "b"), "two b");

    // Two services trade paths.
    site.services_at(&[("two", "/y"), ("three", "/x")]);
    app.reload();
    assert_eq!(ask(&mut connect(addr, "/x"), "c"), "three c");
    assert_eq!(ask(&mut connect(addr, "/y"), "d"), "two d");
    app.shutdown();
}

/// A rename whose new service fails to load: the old one keeps serving the path (it is stopped
/// only once its successor runs), instead of the path answering 404 until the next SIGHUP.
#[test]
fn a_rename_whose_new_service_fails_to_load_keeps_the_old_one_serving() {
    let site = Site::new("rename-broken");
    site.app("one", "one");
    site.services_at(&[("one", "/x")]);
    let app = site.start();
    let addr = app.local_addrs()[0];
    let mut before = connect(addr, "/x");
    assert_eq!(ask(&mut before, "a"), "one a");
    site.app("two", "two");
    site.broken_app("two");
    site.services_at(&[("two", "/x")]);
    app.reload();
    assert_eq!(
        ask(&mut before, "b"),
        "one b",
        "its clients were not sent away"
    );
    assert_eq!(ask(&mut connect(addr, "/x"), "c"), "one c");
    // Fixed, the rename goes through.
    site.app("two", "two");
    app.reload();
    assert_eq!(close_code(&mut before), Some(1001));
    assert_eq!(ask(&mut connect(addr, "/x"), "d"), "two d");
    app.shutdown();
}

/// A service that is not started (`auto_start: false`) claims no path: a removed service
/// whose path it has is stopped (its clients get 1001, the path 404) rather than kept
/// running for a successor that never comes; and a running service switched to
/// `auto_start: false` is stopped and unrouted too.
#[test]
fn a_path_left_to_a_service_that_does_not_start_is_unrouted() {
    let site = Site::new("disabled-successor");
    site.app("one", "one");
    site.app("two", "two");
    site.services_at(&[("one", "/x")]);
    let app = site.start();
    let addr = app.local_addrs()[0];
    let mut before = connect(addr, "/x");
    assert_eq!(ask(&mut before, "a"), "one a");
    site.lapps_json(r#", "two": { "request_target": "/x", "auto_start": false }"#);
    app.reload();
    assert_eq!(close_code(&mut before), Some(1001));
    assert!(status_of(addr, "/x").contains("404"));

    site.services_at(&[("two", "/x")]);
    app.reload();
    assert_eq!(ask(&mut connect(addr, "/x"), "b"), "two b");
    site.lapps_json(r#", "two": { "request_target": "/x", "auto_start": false }"#);
    app.reload();
    assert!(status_of(addr, "/x").contains("404"));

    // Nor does a builtin service that does not start.
    site.services_at(&[("one", "/x")]);
    app.reload();
    let mut before = connect(addr, "/x");
    assert_eq!(ask(&mut before, "c"), "one c");
    site.lapps_json(r#", "e": { "builtin": "echo", "request_target": "/x", "auto_start": false }"#);
    app.reload();
    assert_eq!(close_code(&mut before), Some(1001));
    assert!(status_of(addr, "/x").contains("404"));
    app.shutdown();
}

#[test]
fn a_move_to_a_new_path_that_fails_to_load_keeps_the_old_path() {
    let site = Site::new("move-broken");
    site.app("svc", "v1");
    site.services_at(&[("svc", "/a")]);
    let app = site.start();
    let addr = app.local_addrs()[0];
    site.broken_app("svc");
    site.services_at(&[("svc", "/b")]);
    app.reload();
    assert_eq!(ask(&mut connect(addr, "/a"), "x"), "v1 x");
    assert!(status_of(addr, "/b").contains("404"));
    app.shutdown();
}

#[test]
fn a_standalone_service_is_stopped_before_its_new_version_starts() {
    let site = Site::new("standalone");
    let events = lapps::service::mqr::registry().open("deploy.standalone", 64);
    let write = |tag: &str| site.write_app("worker", &standalone_worker("deploy.standalone", tag));
    let next = || next_event(&events);
    write("v1");
    site.lapps_json(r#", "worker": { "standalone": true, "preload": ["mqr", "nap"] }"#);
    let app = site.start();
    assert_eq!(next(), "init v1");
    write("v2");
    app.reload();
    assert_eq!(next(), "stopped v1", "the old version ends first");
    assert_eq!(next(), "init v2");

    // A new version that does not compile is found out before the old one is stopped: v2
    // goes on (it stops only when v3 replaces it), and the failed deploy is not remembered as
    // done, so the fixed app is deployed at the next SIGHUP.
    site.broken_app("worker");
    assert!(!app.reload(), "the reload reports the failed deploy");
    // (A stop is over when the reload returns: "stopped v2" would be queued by now.)
    assert!(
        events.is_empty(),
        "v2 was stopped for a version that does not compile"
    );
    write("v3");
    app.reload();
    assert_eq!(next(), "stopped v2", "v2 ran until v3 replaced it");
    assert_eq!(next(), "init v3");

    // One that fails only when it runs (its init raises) leaves nothing running; fixing it
    // and sending SIGHUP again starts it.
    site.write_app(
        "worker",
        "return { init = function() error('v4 cannot start') end, run = function() end }\n",
    );
    app.reload();
    assert_eq!(next(), "stopped v3");
    write("v5");
    app.reload();
    assert_eq!(next(), "init v5");
    app.shutdown();
    assert_eq!(next(), "stopped v5");
}

/// The version recorded as deployed at start-up is the one that loaded: an app edited while
/// the services were starting is a new version at the next SIGHUP (it was recorded with the
/// edit, so the SIGHUP found nothing changed and the old code ran on).
#[test]
fn an_app_edited_while_the_services_start_is_deployed_at_the_next_sighup() {
    let site = Site::new("edited-at-start");
    let write = |tag: &str| {
        site.write_app(
            "late",
            &format!(
                r#"local m = {{}}
m.onStart = function()
  mqr:create("deploy.late.started")
  while not mqr:poll("deploy.late.go") do end
end
m.onMessage = function(h, op, msg) ws:send(h, 1, "{tag} " .. msg) return true end
return m
"#
            ),
        );
    };
    write("v1");
    site.lapps_json(
        r#", "late": { "request_target": "/late", "preload": ["mqr"], "instruction_budget": 0 }"#,
    );
    let go = lapps::service::mqr::registry().open("deploy.late.go", 4);
    let app = std::thread::scope(|s| {
        let starting = s.spawn(|| site.start());
        wait_for(
            "onStart to begin",
            std::time::Duration::from_secs(30),
            || {
                lapps::service::mqr::registry()
                    .get("deploy.late.started")
                    .is_some()
            },
        );
        write("v2");
        go.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
        starting.join().expect("start")
    });
    let addr = app.local_addrs()[0];
    assert_eq!(ask(&mut connect(addr, "/late"), "a"), "v1 a");
    go.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    assert!(app.reload());
    assert_eq!(ask(&mut connect(addr, "/late"), "b"), "v2 b");
    app.shutdown();
}

/// A deploy that removes an mqr receiver and a service that `depends` on it stops them in
/// that order, as a shutdown does: what the sender posts as it ends (an onDisconnect of a
/// client sent away) reaches the receiver while it drains. The receiver, with no connection
/// to wait for, stopped at once, and those posts were left in its queue.
#[test]
fn a_receiver_removed_with_its_sender_stops_after_it() {
    let site = Site::new("remove-pair");
    let events = lapps::service::mqr::registry().open("deploy.pair.report", 8);
    while events.poll().is_some() {}
    for (name, body) in [
        (
            "pair_receiver",
            r#"local r = { n = 0 }
r.init = function() assert(mqr:create("deploy.pair.q", 16)) end
r.run = function()
  while true do
    local m, err = mqr:receive("deploy.pair.q", 0.05)
    if m then r.n = r.n + 1 elseif err == "stopped" then return end
  end
end
r.onShutdown = function() assert(mqr:post("deploy.pair.report", "received " .. r.n)) end
return r
"#,
        ),
        (
            "pair_sender",
            r#"local s = {}
s.onMessage = function() return true end
s.onDisconnect = function() assert(mqr:post("deploy.pair.q", "bye")) end
return s
"#,
        ),
    ] {
        site.write_app(name, body);
    }
    site.lapps_json(
        r#", "pair_receiver": { "standalone": true, "preload": ["mqr"] },
             "pair_sender": { "request_target": "/pair", "preload": ["mqr"],
                              "depends": ["pair_receiver"] }"#,
    );
    let app = site.start();
    let mut client = connect(app.local_addrs()[0], "/pair");
    site.lapps_json("");
    app.reload();
    // The sender waits for its client, and the receiver for the sender.
    assert!(
        events
            .receive(std::time::Duration::from_secs(1), &|| false)
            .is_err(),
        "the receiver stopped before the sender"
    );
    assert_eq!(ws_close_code(&mut client), 1001);
    finish_close(client);
    let report = events
        .receive(std::time::Duration::from_secs(10), &|| false)
        .expect("the receiver's report");
    assert_eq!(&*report, b"received 1");
    app.shutdown();
}

/// A standalone service whose new version depends on a service that is not running (it
/// failed to start in the same reload) keeps running its old version: it was stopped first,
/// then refused, and ran no more until the next SIGHUP.
#[test]
fn a_standalone_service_whose_dependency_is_down_keeps_its_old_version() {
    let site = Site::new("standalone-depends");
    let events = lapps::service::mqr::registry().open("deploy.standalone_depends", 64);
    let write = |name: &str, body: &str| site.write_app(name, body);
    let worker = |tag: &str| standalone_worker("deploy.standalone_depends", tag);
    let next = || next_event(&events);
    write("base", &worker("base v1"));
    write("user", &worker("user v1"));
    site.lapps_json(
        r#", "base": { "standalone": true, "preload": ["mqr", "nap"] },
             "user": { "standalone": true, "preload": ["mqr", "nap"], "depends": ["base"] }"#,
    );
    let app = site.start();
    assert_eq!(next(), "init base v1");
    assert_eq!(next(), "init user v1");
    // base's new version fails as it starts (base is down after it); user's new version
    // depends on it.
    write(
        "base",
        "return { init = function() error('base v2 cannot start') end, run = function() end }\n",
    );
    write("user", &worker("user v2"));
    assert!(!app.reload(), "the reload reports the failed deploys");
    assert_eq!(next(), "stopped base v1");
    assert!(
        events.is_empty(),
        "user v1 was stopped for a version that cannot start"
    );
    // base fixed: it starts, and user's new version replaces the old one, which ran till now.
    write("base", &worker("base v3"));
    app.reload();
    assert_eq!(next(), "init base v3");
    assert_eq!(
        next(),
        "stopped user v1",
        "user v1 ran until user v2 could start"
    );
    assert_eq!(next(), "init user v2");
    app.shutdown();
    let mut last = vec![next(), next()];
    last.sort();
    assert_eq!(last, ["stopped base v3", "stopped user v2"]);
}

/// A network service's new version whose dependency is down (a standalone one that failed
/// its own redeploy) is refused as a new service would be, and the running version keeps
/// serving its clients until a reload finds the dependency running again.
#[test]
fn a_network_service_whose_dependency_is_down_keeps_its_old_version() {
    let site = Site::new("network-depends");
    let events = lapps::service::mqr::registry().open("deploy.network_depends", 64);
    let next = || next_event(&events);
    site.write_app(
        "base",
        &standalone_worker("deploy.network_depends", "base v1"),
    );
    site.app("user", "user v1");
    let services = r#", "base": { "standalone": true, "preload": ["mqr", "nap"] },
        "user": { "request_target": "/user", "depends": ["base"] }"#;
    site.lapps_json(services);
    let app = site.start();
    let addr = app.local_addrs()[0];
    assert_eq!(next(), "init base v1");
    let mut client = connect(addr, "/user");
    assert_eq!(ask(&mut client, "a"), "user v1 a");
    site.write_app(
        "base",
        "return { init = function() error('base v2 cannot start') end, run = function() end }\n",
    );
    assert!(!app.reload(), "the reload reports base's failure");
    assert_eq!(next(), "stopped base v1");
    site.app("user", "user v2");
    assert!(!app.reload(), "the reload reports user's refusal");
    assert_eq!(
        ask(&mut client, "b"),
        "user v1 b",
        "user v1 was replaced while base is down"
    );
    assert_eq!(ask(&mut connect(addr, "/user"), "c"), "user v1 c");
    site.write_app(
        "base",
        &standalone_worker("deploy.network_depends", "base v3"),
    );
    assert!(app.reload());
    assert_eq!(next(), "init base v3");
    assert_eq!(close_code(&mut client), Some(1001));
    assert_eq!(ask(&mut connect(addr, "/user"), "d"), "user v2 d");
    app.shutdown();
    assert_eq!(next(), "stopped base v3");
}

/// A builtin service moved away from its path keeps it until the restart (builtins change
/// only then): a Lua service given that path waits for the restart too, rather than hide the
/// builtin, which its new path does not serve yet. Not a failed reload.
#[test]
fn a_lua_service_given_a_running_builtins_path_waits_for_the_restart() {
    let site = Site::new("builtin-path");
    site.app("svc", "svc");
    site.services(&[]);
    let app = site.start();
    let addr = app.local_addrs()[0];
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::write(
        site.dir.join("lapps.json"),
        format!(
            r#"{{ "directories": {{ "applications": "{}", "lib": "{root}/lua/lib" }},
                 "services": {{ "echo": {{ "builtin": "echo", "request_target": "/echo2" }},
                                "svc": {{ "request_target": "/echo" }} }} }}"#,
            site.dir.join("apps").display()
        ),
    )
    .unwrap();
    assert!(app.reload(), "waiting for the restart is not a failure");
    assert_eq!(
        ask(&mut connect(addr, "/echo"), "still the builtin"),
        "still the builtin"
    );
    assert!(status_of(addr, "/echo2").contains("404"));
    app.shutdown();
}

/// A running service that waits for the restart (moved to a builtin's path) keeps serving
/// where it is, and that path stays its own: another service given it waits as well.
#[test]
fn the_path_of_a_service_waiting_for_the_restart_stays_its_own() {
    let site = Site::new("waiting-path");
    site.app("one", "one");
    site.app("two", "two");
    site.services_at(&[("one", "/a")]);
    let app = site.start();
    let addr = app.local_addrs()[0];
    let mut client = connect(addr, "/a");
    assert_eq!(ask(&mut client, "x"), "one x");
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::write(
        site.dir.join("lapps.json"),
        format!(
            r#"{{ "directories": {{ "applications": "{}", "lib": "{root}/lua/lib" }},
                 "services": {{ "echo": {{ "builtin": "echo", "request_target": "/e2" }},
                                "one": {{ "request_target": "/echo" }},
                                "two": {{ "request_target": "/a" }} }} }}"#,
            site.dir.join("apps").display()
        ),
    )
    .unwrap();
    assert!(app.reload(), "waiting for the restart is not a failure");
    assert_eq!(ask(&mut client, "y"), "one y", "one's client stays");
    assert_eq!(
        ask(&mut connect(addr, "/a"), "z"),
        "one z",
        "/a is still one's"
    );
    assert_eq!(ask(&mut connect(addr, "/echo"), "e"), "e", "the builtin's");
    app.shutdown();
}

#[test]
fn shutdown_waits_for_a_replaced_version_to_finish_stopping() {
    let site = Site::new("retiring");
    let events = lapps::service::mqr::registry().open("deploy.retiring", 64);
    let write = |tag: &str| {
        site.write_app(
            "svc",
            &format!(
                r#"local m = {{}}
m.onMessage = function(h, op, msg) ws:send(h, 1, "{tag} " .. msg) return true end
m.onShutdown = function() assert(mqr:post("deploy.retiring", "shutdown {tag}")) end
return m
"#
            ),
        );
    };
    write("v1");
    site.lapps_json(r#", "svc": { "request_target": "/svc", "preload": ["mqr"] }"#);
    let app = site.start();
    let addr = app.local_addrs()[0];
    // A client of v1 that never answers the close: v1 retires slowly.
    let _silent = raw_upgraded(addr, "/svc");
    write("v2");
    app.reload();
    app.shutdown();
    // Both versions ran onShutdown before shutdown returned, the replaced one included.
    let mut got: Vec<String> = std::iter::from_fn(|| events.poll())
        .map(|m| String::from_utf8(m.into_vec()).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["shutdown v1", "shutdown v2"]);
}

#[test]
fn a_network_service_that_becomes_standalone_sends_its_clients_away() {
    let site = Site::new("to-standalone");
    site.app("svc", "v1");
    site.services(&["svc"]);
    let app = site.start();
    let addr = app.local_addrs()[0];
    let mut old = connect(addr, "/svc");
    assert_eq!(ask(&mut old, "hi"), "v1 hi");

    std::fs::write(
        site.dir.join("apps/svc/svc.lua"),
        "local p = {}\np.init = function() end\n\
         p.run = function()\n  local n = nap:new()\n  while not must_stop() do n:sleep(0.05) end\nend\nreturn p\n",
    )
    .unwrap();
    site.lapps_json(r#", "svc": { "standalone": true, "preload": ["nap"] }"#);
    app.reload();
    // Not left attached to a service that no longer serves them.
    assert_eq!(close_code(&mut old), Some(1001));
    assert!(status_of(addr, "/svc").contains("404"));
    app.shutdown();
}

/// A replaced version's connections get 1001 only after the replies its instance still owes:
/// a message it was handling when the new version came is not left without its answer.
#[test]
fn a_retired_version_answers_what_it_took_before_its_clients_get_1001() {
    let site = Site::new("retire-answers");
    let d = site.dir.join("apps").join("svc");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("svc.lua"),
        "local m = {}\nm.onMessage = function(h, op, msg)\n  if msg == 'hold' then\n    \
         ws:send(h, 1, 'holding')\n    must_stop()\n    \
         while not mqr:poll('deploy.release') do end\n    ws:send(h, 1, 'v1 released')\n  \
         else\n    ws:send(h, 1, 'v1 ' .. msg)\n  end\n  return true\nend\nreturn m\n",
    )
    .unwrap();
    site.lapps_json(
        r#", "svc": { "request_target": "/svc", "preload": ["mqr"], "instruction_budget": 0 }"#,
    );
    let app = site.start();
    let addr = app.local_addrs()[0];
    let mut old = connect(addr, "/svc");
    // The old version's instance is busy with "hold" while the new one replaces it.
    assert_eq!(ask(&mut old, "hold"), "holding");
    site.app("svc", "v2");
    app.reload();
    let mut new = connect(addr, "/svc");
    assert_eq!(ask(&mut new, "hi"), "v2 hi");
    lapps::service::mqr::registry()
        .open("deploy.release", 1)
        .try_post(b"go".to_vec().into_boxed_slice())
        .unwrap();
    match old.read() {
        Ok(Message::Text(t)) => assert_eq!(t.as_str(), "v1 released"),
        other => panic!("expected the old version's reply before its Close, got {other:?}"),
    }
    assert_eq!(close_code(&mut old), Some(1001));
    app.shutdown();
}
