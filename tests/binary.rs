//! The `lapps` binary as an operator runs it: configuration checks, start-up, SIGTERM.
#[path = "common/binary.rs"]
mod binary;
mod common;
use binary::{output_within, spawn_binary, ONE_SHOT_GUARD};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LAPPS: &str = env!("CARGO_BIN_EXE_lapps");

fn temp_dir_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lapps-test-{name}-{}", std::process::id()))
}

fn temp_dir(name: &str) -> PathBuf {
    let d = temp_dir_path(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_config(dir: &Path, ws: &str, lapps: &str) {
    std::fs::write(dir.join("ws.json"), ws).unwrap();
    std::fs::write(dir.join("lapps.json"), lapps).unwrap();
}

const BUILTIN_ONLY: &str = r#"{ "directories": { "applications": "./lua/apps" },
  "services": { "echo_builtin": { "builtin": "echo", "request_target": "/echo" } } }"#;

#[test]
fn sigterm_closes_connections_with_1001_and_exits_within_5_seconds() {
    let dir = temp_dir("sigterm");
    write_config(
        &dir,
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 2 } }"#,
        BUILTIN_ONLY,
    );
    // The Reaper kills the server if the test fails before it exited.
    let (mut child, addr, _log) = spawn_binary(&dir, |cmd| {
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    });
    let mut socks: Vec<_> = (0..5).map(|_| raw_upgraded(addr, "/echo")).collect();
    let t = Instant::now();
    // SAFETY: kill with a valid pid of our own child and a valid signal number.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    for s in socks.iter_mut() {
        assert_eq!(expect_close(s), Some(1001));
    }
    drop(socks);
    let status = child.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t.elapsed()
    );
}

/// Runs `lapps -c DIR --check-config` from the repository root, which must pass (warnings
/// are not errors, and go to stderr as diagnostics do); its stderr.
fn check_config_passes(dir: &Path) -> String {
    let out = output_within(
        Command::new(LAPPS)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("-c")
            .arg(dir)
            .arg("--check-config"),
        ONE_SHOT_GUARD,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "a warning, not an error: {stderr}");
    assert!(
        stdout.ends_with(&format!("configuration in {} is valid\n", dir.display())),
        "{stdout}"
    );
    assert!(
        !stdout.contains("warning"),
        "warnings go to stderr: {stdout}"
    );
    stderr
}

/// A configuration without a service is valid, and warned of (a trial's `"services": {}`
/// started without a word, answering every upgrade 404); one with a service is not.
#[test]
fn a_configuration_without_services_is_warned_of() {
    let dir = temp_dir("no-services");
    write_config(&dir, binary::ONE_WORKER_WS_JSON, r#"{ "services": {} }"#);
    let stderr = check_config_passes(&dir);
    assert!(
        stderr.contains("warning: lapps.json: no services: every WebSocket upgrade request"),
        "{stderr}"
    );
    write_config(&dir, binary::ONE_WORKER_WS_JSON, BUILTIN_ONLY);
    let stderr = check_config_passes(&dir);
    assert!(!stderr.contains("no services"), "{stderr}");
}

/// A timeout under a second (seconds written for milliseconds: a trial's `"idle_timeout_ms":
/// 1` was taken without a word) is used as written, with a warning at `--check-config` and
/// at the start; 0 (off) and a second or more are not warned of.
#[test]
fn a_timeout_under_a_second_is_warned_of() {
    let dir = temp_dir("short-timeouts");
    write_config(
        &dir,
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 },
             "idle_timeout_ms": 60, "message_timeout_ms": 0, "close_timeout_ms": 1000 }"#,
        BUILTIN_ONLY,
    );
    let wanted = "ws.json: idle_timeout_ms is 60, in milliseconds: under a second, used as \
                  written (for 60 seconds, write 60000)";
    let stderr = check_config_passes(&dir);
    assert!(stderr.contains(&format!("warning: {wanted}")), "{stderr}");
    assert_eq!(stderr.matches("in milliseconds").count(), 1, "{stderr}");
    let (mut child, _addr, _log, start) = binary::spawn_binary_logging(&dir, |cmd| {
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    });
    let warned: Vec<_> = start
        .iter()
        .filter(|l| l.contains("in milliseconds"))
        .collect();
    assert!(
        warned.len() == 1 && warned[0].contains(" WARN ") && warned[0].ends_with(wanted),
        "{start:#?}"
    );
    child.stop();
}

/// Runs `lapps -c DIR --check-config`, which must fail; its stderr.
fn check_config_fails(dir: &Path) -> String {
    let out = output_within(
        Command::new(LAPPS).arg("-c").arg(dir).arg("--check-config"),
        ONE_SHOT_GUARD,
    );
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A FIFO in an app file's place (or a configuration file's) is refused at once, named: the
/// operator trial's `--check-config` waited for a writer for ever, a reload for good.
#[test]
fn a_fifo_in_a_files_place_is_refused_at_once() {
    let fifo = |path: &Path| {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    };
    let dir = temp_dir("fifo-app");
    write_config(
        &dir,
        binary::ONE_WORKER_WS_JSON,
        r#"{ "directories": { "applications": "apps" },
             "services": { "pipe": { "request_target": "/pipe" } } }"#,
    );
    std::fs::create_dir_all(dir.join("apps/pipe")).unwrap();
    fifo(&dir.join("apps/pipe/pipe.lua"));
    let out = output_within(
        Command::new(LAPPS)
            .current_dir(&dir)
            .arg("-c")
            .arg(&dir)
            .arg("--check-config"),
        ONE_SHOT_GUARD,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pipe.lua: not a regular file"), "{stderr}");
    std::fs::remove_file(dir.join("lapps.json")).unwrap();
    fifo(&dir.join("lapps.json"));
    let stderr = check_config_fails(&dir);
    assert!(
        stderr.contains("lapps.json: not a regular file"),
        "{stderr}"
    );
}

#[test]
fn a_config_directory_whose_name_is_not_utf8_is_taken_and_a_bad_argument_is_a_usage_error() {
    use std::os::unix::ffi::OsStrExt;
    let base = temp_dir("non-utf8");
    let dir = base.join(std::ffi::OsStr::from_bytes(b"conf-\xe9"));
    std::fs::create_dir_all(&dir).unwrap();
    write_config(&dir, binary::ONE_WORKER_WS_JSON, BUILTIN_ONLY);
    let out = output_within(
        Command::new(LAPPS)
            .arg("-c")
            .arg(&dir)
            .arg("--check-config")
            .current_dir(env!("CARGO_MANIFEST_DIR")),
        ONE_SHOT_GUARD,
    );
    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let out = output_within(
        Command::new(LAPPS).arg(std::ffi::OsStr::from_bytes(b"--\xff")),
        ONE_SHOT_GUARD,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown argument") && stderr.contains("usage:"),
        "{stderr}"
    );
}

/// `--config=DIR` is `--config DIR` (GNU style; a trial's `--config=DIR` was an unknown
/// argument), and a flag given a value is a usage error.
#[test]
fn long_options_take_their_value_after_an_equals_sign() {
    let dir = temp_dir("equals");
    write_config(&dir, binary::ONE_WORKER_WS_JSON, BUILTIN_ONLY);
    let mut arg = std::ffi::OsString::from("--config=");
    arg.push(&dir);
    let out = output_within(
        Command::new(LAPPS).arg(&arg).arg("--check-config"),
        ONE_SHOT_GUARD,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?} {stderr}", out.status);
    let out = output_within(
        Command::new(LAPPS).arg("--check-config=yes"),
        ONE_SHOT_GUARD,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("\"--check-config\" takes no value"),
        "{stderr}"
    );
    // A missing or empty value is named by the option as given.
    for (args, wanted) in [
        (&["--config="][..], "\"--config\" needs a directory"),
        (&["-c"][..], "\"-c\" needs a directory"),
        (&["--reload"][..], "\"--reload\" needs a process id"),
    ] {
        let out = output_within(Command::new(LAPPS).args(args), ONE_SHOT_GUARD);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
    }
}

#[test]
fn a_log_level_that_is_not_one_is_warned_about() {
    let dir = temp_dir("log-level");
    write_config(&dir, binary::ONE_WORKER_WS_JSON, BUILTIN_ONLY);
    let (_child, _addr, _log, start) = binary::spawn_binary_logging(&dir, |cmd| {
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("LAPPS_LOG", "verbose");
    });
    assert!(
        start
            .iter()
            .any(|l| l.contains("WARN") && l.contains(r#"LAPPS_LOG="verbose" is not a level"#)),
        "{start:#?}"
    );
}

#[test]
fn check_config_names_file_and_key_and_fails() {
    let dir = temp_dir("check");
    write_config(
        &dir,
        r#"{ "port": "abc", "workers": { "max_conections": 5 } }"#,
        BUILTIN_ONLY,
    );
    let err = check_config_fails(&dir);
    assert!(err.contains("ws.json") && err.contains("port"), "{err}");
    assert!(err.contains("max_conections"), "{err}");
}

/// The unit's ExecStartPre runs the check: an app left disabled (auto_start false), broken
/// or not deployed, is a warning there, not a server that cannot start.
#[test]
fn check_config_warns_of_a_disabled_app_that_would_not_compile() {
    let dir = temp_dir("check-off");
    write_config(
        &dir,
        r#"{ "port": 0 }"#,
        r#"{ "directories": { "applications": "./lua/apps" },
  "services": { "echo": {}, "gone": { "auto_start": false } } }"#,
    );
    let err = check_config_passes(&dir);
    assert!(
        err.contains("warning: lapps.json: services.gone: ")
            && err.contains("No such file")
            && err.contains("auto_start is false"),
        "{err}"
    );
}

#[test]
fn check_config_compiles_the_lua_apps_without_running_them() {
    let dir = temp_dir("check-lua");
    for (name, src) in [
        ("broken", "local m = {\nreturn m\n"),
        // Compiles; running it would fail, and it is not run.
        ("fine", "error('this must not run')\nreturn {}\n"),
    ] {
        std::fs::create_dir_all(dir.join("apps").join(name)).unwrap();
        std::fs::write(dir.join("apps").join(name).join(format!("{name}.lua")), src).unwrap();
    }
    let apps = dir.join("apps");
    write_config(
        &dir,
        r#"{ "port": 0 }"#,
        &format!(
            r#"{{ "directories": {{ "applications": "{}" }},
  "services": {{ "broken": {{}}, "fine": {{}}, "missing": {{}} }} }}"#,
            apps.display()
        ),
    );
    let err = check_config_fails(&dir);
    let broken = format!(
        "lapps.json: services.broken: {}",
        apps.join("broken/broken.lua").display()
    );
    assert!(
        err.contains(&format!("{broken}:2: unexpected symbol")),
        "{err}"
    );
    assert!(
        err.contains("services.missing: ") && err.contains("No such file"),
        "{err}"
    );
    assert!(
        !err.contains("services.fine") && !err.contains("must not run"),
        "{err}"
    );
    // Every app missing because the directory is: named once, first.
    write_config(
        &dir,
        r#"{ "port": 0 }"#,
        r#"{ "directories": { "applications": "/nonexistent-apps" }, "services": { "a": {} } }"#,
    );
    let err = check_config_fails(&dir);
    assert!(
        err.contains(
            "invalid:\nlapps.json: directories.applications: /nonexistent-apps is not a directory\n\
             lapps.json: services.a: /nonexistent-apps/a/a.lua"
        ),
        "{err}"
    );
}

/// A `preload` name the service's instances could not load fails the check (it would fail
/// the service's start, and at boot the server's): a typo, a library file that does not
/// compile, a library the service is not allowed. Host modules, the state's own libraries and
/// files in the app's directory or `lib` pass.
#[test]
fn check_config_resolves_every_preload_name() {
    let dir = temp_dir("check-preload");
    let (apps, lib) = (dir.join("apps"), dir.join("lib"));
    std::fs::create_dir_all(apps.join("svc").join("own")).unwrap();
    std::fs::create_dir_all(lib.join("deep")).unwrap();
    std::fs::write(apps.join("svc").join("svc.lua"), "return {}\n").unwrap();
    std::fs::write(apps.join("svc").join("own").join("init.lua"), "return {}\n").unwrap();
    std::fs::write(lib.join("shared.lua"), "return {}\n").unwrap();
    std::fs::write(lib.join("deep").join("mod.lua"), "return {}\n").unwrap();
    std::fs::write(lib.join("broken.lua"), "local m = {\nreturn m\n").unwrap();
    let check = |preload: &str| {
        write_config(
            &dir,
            r#"{ "port": 0 }"#,
            &format!(
                r#"{{ "directories": {{ "applications": "{}", "lib": "{}" }},
                     "services": {{ "svc": {{ "preload": {preload} }} }} }}"#,
                apps.display(),
                lib.display()
            ),
        );
        output_within(
            Command::new(LAPPS)
                .arg("-c")
                .arg(&dir)
                .arg("--check-config"),
            ONE_SHOT_GUARD,
        )
    };
    let fine =
        check(r#"["mqr", "bcast", "string", "bit", "table.new", "own", "shared", "deep.mod"]"#);
    assert!(
        fine.status.success(),
        "{}",
        String::from_utf8_lossy(&fine.stderr)
    );
    let fails = |preload: &str, says: &str| {
        let out = check(preload);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{preload} passed");
        assert!(err.contains(says), "{preload}: {err}");
    };
    fails(
        r#"["mqr", "bcats"]"#,
        &format!(
            "services.svc: preload bcats: no such module (the host's own are time, nap, \
             bcast, cws, mqr, murmur, ws, nljson; no file '{}'",
            apps.join("svc").join("bcats.lua").display()
        ),
    );
    fails(
        r#"["broken"]"#,
        &format!(
            "services.svc: preload broken: {}:2: unexpected symbol",
            lib.join("broken.lua").display()
        ),
    );
    fails(
        r#"["ffi"]"#,
        "services.svc: preload ffi: not available to this service",
    );
}

#[test]
fn check_config_warns_of_certificates_no_endpoint_uses() {
    let dir = temp_dir("check-tls-off");
    write_config(
        &dir,
        r#"{ "port": 0, "tls_certificates": { "cert": "/nonexistent.crt", "key": "/nonexistent.key" } }"#,
        BUILTIN_ONLY,
    );
    let stderr = check_config_passes(&dir);
    assert!(
        stderr.contains("warning: ws.json: tls_certificates is set but no endpoint has"),
        "{stderr}"
    );
}

#[test]
fn check_config_warns_of_a_backlog_the_kernel_caps() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("a Linux host")
        .trim()
        .parse()
        .unwrap();
    let dir = temp_dir("check-backlog");
    write_config(
        &dir,
        &format!(r#"{{ "port": 0, "backlog": {} }}"#, somaxconn + 1),
        BUILTIN_ONLY,
    );
    let stderr = check_config_passes(&dir);
    assert!(
        stderr.contains(&format!(
            "warning: ws.json: backlog {} is above this host's net.core.somaxconn ({somaxconn})",
            somaxconn + 1
        )),
        "{stderr}"
    );
    write_config(
        &dir,
        &format!(r#"{{ "port": 0, "backlog": {somaxconn} }}"#),
        BUILTIN_ONLY,
    );
    assert!(!check_config_passes(&dir).contains("somaxconn"));
}

/// An ACL that denies everybody (a deny policy excluding no one) is legal but rarely meant:
/// the check says so, for the server's and for a service's, and not for one that excludes.
#[test]
fn check_config_warns_of_an_acl_that_denies_every_client() {
    let dir = temp_dir("check-acl-all");
    write_config(
        &dir,
        r#"{ "port": 0, "acl": { "policy": "deny", "exclude": [] } }"#,
        r#"{ "services": { "e": { "builtin": "echo", "request_target": "/e",
                                 "acl": { "policy": "deny" } },
                          "f": { "builtin": "echo", "request_target": "/f",
                                 "acl": { "policy": "deny", "exclude": ["127.0.0.1"] } } } }"#,
    );
    let stderr = check_config_passes(&dir);
    assert!(
        stderr.contains("warning: ws.json: acl denies every client"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "warning: lapps.json: services.e.acl denies every client (policy \"deny\" with \
             nothing in \"exclude\"): every request for \"/e\" is answered 403"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("services.f.acl"), "{stderr}");
}

/// `"::"` is IPv6 only here (IPV6_V6ONLY): an operator who carried it over from a dual-stack
/// setup is told, unless an IPv4 wildcard listens on the same port too.
#[test]
fn check_config_warns_that_a_lone_ipv6_wildcard_leaves_ipv4_clients_out() {
    let dir = temp_dir("check-v6only");
    let warned = |ws: &str| {
        write_config(&dir, ws, BUILTIN_ONLY);
        check_config_passes(&dir).contains("listens on IPv6 only (port 5083)")
    };
    assert!(warned(r#"{ "ip": "::", "port": 5083 }"#));
    assert!(!warned(
        r#"{ "ip": "::", "port": 5083, "endpoints": [ { "ip": "0.0.0.0", "port": 5083 } ] }"#
    ));
    assert!(!warned(r#"{ "ip": "0.0.0.0", "port": 5083 }"#));
}

/// Settings for the handshake (path, ACL, origins, protocol) do nothing on a standalone
/// service: said, not silently accepted.
#[test]
fn check_config_warns_of_network_settings_on_a_standalone_service() {
    let dir = temp_dir("check-standalone-keys");
    let check = |services: &str| {
        write_config(
            &dir,
            r#"{ "port": 0 }"#,
            &format!(
                r#"{{ "directories": {{ "applications": "./lua/apps" }}, "services": {services} }}"#
            ),
        );
        check_config_passes(&dir)
    };
    let warned = check(
        r#"{ "time_broadcast": { "standalone": true, "preload": ["bcast", "nap", "time"],
                                 "request_target": "/tb", "protocol": "LAppS",
                                 "allowed_origins": ["https://example.com"],
                                 "max_inbound_message_size": 1024 } }"#,
    );
    assert!(
        warned.contains(
            "warning: lapps.json: services.time_broadcast: request_target, protocol, \
             allowed_origins, max_inbound_message_size apply only to services clients connect to"
        ),
        "{warned}"
    );
    let one = check(
        r#"{ "time_broadcast": { "standalone": true, "preload": ["bcast", "nap", "time"],
                                 "request_target": "/tb" } }"#,
    );
    assert!(
        one.contains(
            "services.time_broadcast: request_target applies only to services clients connect \
             to; this one is standalone, so it does nothing"
        ),
        "{one}"
    );
    let quiet = check(
        r#"{ "time_broadcast": { "standalone": true, "preload": ["bcast", "nap", "time"] } }"#,
    );
    assert!(!quiet.contains("warning"), "{quiet}");
}

#[test]
fn dash_c_wins_over_the_environment_which_names_the_files_without_it() {
    // SPEC 7: LAPPS_CONF_DIR, WS_CONFIG and LAPPS_CONFIG override, `-c DIR` wins over them.
    let dir = temp_dir("dash-c-wins");
    write_config(&dir, binary::ONE_WORKER_WS_JSON, BUILTIN_ONLY);
    std::fs::write(dir.join("alt-ws.json"), r#"{ "bogus_key": 1 }"#).unwrap();
    std::fs::write(dir.join("alt-lapps.json"), BUILTIN_ONLY).unwrap();
    let with_c = output_within(
        Command::new(LAPPS)
            .arg("-c")
            .arg(&dir)
            .arg("--check-config")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("LAPPS_CONF_DIR", "/nonexistent")
            .env("WS_CONFIG", "/nonexistent/ws.json")
            .env("LAPPS_CONFIG", "/nonexistent/lapps.json"),
        ONE_SHOT_GUARD,
    );
    assert!(
        with_c.status.success(),
        "-c reads the directory's ws.json and lapps.json: {}",
        String::from_utf8_lossy(&with_c.stderr)
    );
    let without = output_within(
        Command::new(LAPPS)
            .arg("--check-config")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("LAPPS_CONF_DIR", &dir)
            .env("WS_CONFIG", "alt-ws.json")
            .env("LAPPS_CONFIG", "alt-lapps.json"),
        ONE_SHOT_GUARD,
    );
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(!without.status.success(), "the overrides apply: {stderr}");
    assert!(
        stderr.contains(&format!(
            "configuration in {} (ws.json from {}, lapps.json from {}) is invalid",
            dir.display(),
            dir.join("alt-ws.json").display(),
            dir.join("alt-lapps.json").display()
        )) && stderr.contains("alt-ws.json: bogus_key: unknown key"),
        "LAPPS_CONF_DIR and WS_CONFIG are read: {stderr}"
    );
}

#[test]
fn check_config_accepts_the_repo_config() {
    let out = output_within(
        Command::new(LAPPS)
            .args(["-c", "etc/lapps", "--check-config"])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
        ONE_SHOT_GUARD,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn version_names_the_simd_variant() {
    let out = output_within(Command::new(LAPPS).arg("--version"), ONE_SHOT_GUARD);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("simd build: auto")
            || s.contains("simd build: avx2")
            || s.contains("simd build: ssse3"),
        "{s}"
    );
}

/// A stdout that cannot take the output (`lapps --version | true`, /dev/full) is no panic (the
/// trial saw status 101 and "failed printing to stdout"): a command whose product is the output
/// fails with 1, one whose product is its verdict keeps it.
#[test]
fn a_stdout_that_cannot_take_the_output_is_no_panic() {
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let run = |args: &[&str]| {
        let out = Command::new(LAPPS)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(full())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        (out.status.code(), stderr)
    };
    assert_eq!(run(&["--version"]).0, Some(1));
    assert_eq!(run(&["--help"]).0, Some(1));
    assert_eq!(run(&["--check-config", "-c", "etc/lapps"]).0, Some(0));
    assert_eq!(
        run(&["--check-config", "-c", "/nonexistent/lapps"]).0,
        Some(1)
    );
    let (code, stderr) = run(&["--bogus"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("unknown argument \"--bogus\""), "{stderr}");
}

#[test]
fn a_refusal_log_names_the_rule_or_the_request_that_refused() {
    let dir = temp_dir("why-403");
    write_config(
        &dir,
        binary::ONE_WORKER_WS_JSON,
        r#"{ "directories": { "applications": "./lua/apps" },
  "services": {
    "origins": { "builtin": "echo", "request_target": "/o", "allowed_origins": ["https://a.example"] },
    "acl": { "builtin": "echo", "request_target": "/a", "acl": { "policy": "deny" } },
    "open": { "builtin": "echo", "request_target": "/o2" } } }"#,
    );
    let (_child, addr, log) = spawn_binary(&dir, |cmd| {
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    });
    let refused = |path: &str, extra: &str| {
        let req = upgrade_request(addr, path).replace("\r\n\r\n", &format!("\r\n{extra}\r\n"));
        let resp = http_exchange(addr, req.as_bytes());
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    };
    // One line per refused connection, with the peer, the path and the rule.
    refused("/o", "Origin: https://b.example\r\n");
    refused("/o", "");
    refused("/a", "");
    // A request refused before routing: its request line says what it asked.
    let post = upgrade_request(addr, "/o").replacen("GET", "POST", 1);
    let resp = http_exchange(addr, post.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    let resp = http_exchange(addr, upgrade_request(addr, "/none").as_bytes());
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    let lines = binary::lines_until(&log, "HTTP 404 for \"/none\"");
    let refusals: Vec<&String> = lines.iter().filter(|l| l.contains("127.0.0.1:")).collect();
    assert_eq!(refusals.len(), 5, "{lines:#?}");
    // A protocol violation names what the peer sent where that was the fault.
    use std::io::Write;
    let mut s = raw_upgraded(addr, "/o2");
    s.write_all(&frame(true, 0, 0x8, &999u16.to_be_bytes(), true))
        .unwrap();
    assert_eq!(expect_close(&mut s), Some(1002));
    // With the handle the app knows the connection by, and its service.
    let lines = binary::lines_until(&log, "protocol violation");
    let line = lines.last().unwrap();
    let (_, handle) = line.split_once(" (0x").unwrap_or_else(|| panic!("{line}"));
    assert!(
        handle.split_once(')').is_some_and(|(h, rest)| {
            u64::from_str_radix(h, 16).is_ok()
                && rest
                    == " of service open: protocol violation (invalid close code 999), \
                             close code 1002"
        }),
        "{line}"
    );
    let expected = [
        r#"HTTP 403 for "/o": Origin "https://b.example" not in allowed_origins"#,
        r#"HTTP 403 for "/o": no Origin, allowed_origins requires one"#,
        r#"HTTP 403 for "/a": not allowed by the service's acl"#,
        r#"HTTP 405 method not allowed: "POST /o HTTP/1.1""#,
        r#"HTTP 404 for "/none""#,
    ];
    for (line, want) in refusals.iter().zip(expected) {
        assert!(
            line.contains("rejected 127.0.0.1:") && line.ends_with(want),
            "{line}"
        );
    }
}

/// The binary with the built-in echo and one standalone test app (`service`: its entry in
/// lapps.json's "services"), run from the repository; its log lines.
fn spawn_with_standalone(
    tag: &str,
    service: &str,
) -> (binary::Reaper, std::sync::mpsc::Receiver<String>) {
    let dir = temp_dir(tag);
    write_config(
        &dir,
        binary::ONE_WORKER_WS_JSON,
        &format!(
            r#"{{ "directories": {{ "applications": "./tests/apps" }},
  "services": {{
    "echo_builtin": {{ "builtin": "echo", "request_target": "/echo" }},
    {service} }} }}"#
        ),
    );
    let (child, _addr, log) = spawn_binary(&dir, |cmd| {
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    });
    (child, log)
}

#[test]
fn a_second_sigterm_during_a_slow_shutdown_exits_at_once_with_143() {
    let (mut child, log) = spawn_with_standalone(
        "second-signal",
        r#""slow_stop": { "standalone": true, "preload": ["nap", "time"], "instruction_budget": 0 }"#,
    );
    let pid = child.0.id() as i32;
    // SAFETY: kill with a valid pid of our own child and a valid signal number.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    // The graceful shutdown has begun and reached the service that holds it up for 10 s.
    let lines = binary::lines_until(&log, "lingering");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("SIGTERM received: shutting down")),
        "{lines:?}"
    );
    let t = Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    // The service holds the graceful shutdown up for 10 s: 8 s tells them apart, with room
    // for a loaded machine.
    let status = child.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    binary::wait_line(&log, "second signal: exiting now");
}

/// A SIGTERM while the services start (here an onStart of 25 s, within its 30 s start
/// timeout) ends the process at once with 143: a stop does not wait for the start, which
/// systemd would let stretch its stop timeout.
#[test]
fn a_sigterm_during_the_start_exits_at_once_with_143() {
    let dir = temp_dir("stop-during-start");
    let app = dir.join("apps").join("slow_init");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("slow_init.lua"),
        r#"return {
  onStart = function()
    print("start begun")
    -- A busy wait on the clock: a network service's nap does not block.
    local until_ms = time.monotonic() + 25000
    while time.monotonic() < until_ms do end
  end,
  onMessage = function() return true end,
}
"#,
    )
    .unwrap();
    write_config(
        &dir,
        binary::ONE_WORKER_WS_JSON,
        &format!(
            r#"{{ "directories": {{ "applications": "{}" }},
                  "services": {{ "slow_init": {{ "preload": ["time"], "instruction_budget": 0 }} }} }}"#,
            dir.join("apps").display()
        ),
    );
    let (mut child, log) = binary::spawn_binary_starting(&dir, |_| {});
    binary::wait_line(&log, "start begun");
    // SAFETY: kill(2) on our own child.
    assert_eq!(
        unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = child.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    binary::wait_line(&log, "SIGTERM received during start-up: exiting now");
}

/// A standalone service whose `run()` keeps failing says so in the status report (a trial's
/// failing receiver looked healthy there: "1 instance(s), standalone").
#[test]
fn the_status_of_a_failing_run_counts_its_failures() {
    let (child, log) = spawn_with_standalone(
        "run-failing-status",
        r#""run_fails": { "standalone": true }"#,
    );
    binary::wait_line(&log, "restarting it in 4 s");
    // SAFETY: kill(2) on our own child process.
    assert_eq!(
        unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGUSR1) },
        0
    );
    let line = binary::wait_line(&log, "status: service run_fails");
    // Three failures by now, or more on a machine slow enough to pass the 4 s wait.
    let failed = line
        .split_once("standalone; run() failed ")
        .and_then(|(_, rest)| rest.split_once(" time(s) in a row in instance 0, "))
        .and_then(|(n, _)| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(failed >= 3, "{line}");
}

#[test]
fn a_sigterm_ends_the_restart_back_off_of_a_failing_run_at_once() {
    let (mut child, log) =
        spawn_with_standalone("run-back-off", r#""run_fails": { "standalone": true }"#);
    // Each failure is logged with its error and the wait before the next attempt, which
    // doubles (1 s, 2 s, 4 s): after the third the instance is in a 4 s wait.
    let line = binary::wait_line(&log, "restarting it in 4 s");
    assert!(
        line.contains("[run_fails#0] run() failed") && line.contains("run_fails fails"),
        "{line}"
    );
    // SAFETY: kill with a valid pid of our own child and a valid signal number.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = child.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = Vec::new();
    while let Ok(line) = log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        after.push(line);
    }
    // By the server's own clock (not this test's, which a loaded machine may delay): it
    // stopped before the 4 s wait was over, which a SIGTERM waiting for the wait cannot.
    let stopped = after
        .iter()
        .find(|l| l.ends_with(" stopped"))
        .unwrap_or_else(|| panic!("no stopped line: {after:#?}"));
    let waited = ms_between(&line, stopped);
    assert!(waited < 4000, "stopped {waited} ms into the 4 s wait");
    // Nor did it end the wait by running run() again (and failing a fourth time).
    assert!(
        !after.iter().any(|l| l.contains("run() failed")),
        "run() ran again after the SIGTERM: {after:#?}"
    );
}

/// Milliseconds from the time stamp of log line `from` to that of `to` (each begins
/// `YYYY-MM-DDTHH:MM:SS.mmmZ`; at most a day apart).
fn ms_between(from: &str, to: &str) -> i64 {
    let ms_of_day = |line: &str| -> i64 {
        let t = line
            .get(11..23)
            .unwrap_or_else(|| panic!("no time stamp: {line}"));
        let field = |r: std::ops::Range<usize>| -> i64 {
            t.get(r)
                .and_then(|f| f.parse().ok())
                .unwrap_or_else(|| panic!("time stamp of {line}"))
        };
        ((field(0..2) * 60 + field(3..5)) * 60 + field(6..8)) * 1000 + field(9..12)
    };
    (ms_of_day(to) - ms_of_day(from)).rem_euclid(24 * 3600 * 1000)
}

/// Set in the copy of this test binary that `a_panic_in_an_io_or_listener_thread_aborts_the_process`
/// runs: the name of the thread to panic in.
const PANIC_CHILD: &str = "LAPPS_TEST_PANIC_THREAD";
/// Set beside it: the child starts the log's writer thread first, as the server does.
const PANIC_CHILD_WRITER: &str = "LAPPS_TEST_PANIC_WITH_WRITER";

#[test]
fn a_panic_in_an_io_or_listener_thread_aborts_the_process() {
    if let Ok(name) = std::env::var(PANIC_CHILD) {
        if std::env::var_os(PANIC_CHILD_WRITER).is_some() {
            lapps::log_writer::start();
        }
        lapps::fatal::install();
        let t = std::thread::Builder::new().name(name);
        let _ = t.spawn(|| panic!("injected by the test")).unwrap().join();
        std::process::exit(0); // only when the panic was not fatal
    }
    use std::os::unix::process::ExitStatusExt;
    // As the library runs in tests (records written where they are made), and as the server
    // runs (through the log's writer thread, std's message too).
    for (writer, (thread, fatal)) in [false, true].into_iter().flat_map(|w| {
        [
            ("lapps-io-0", true),
            ("lapps-accept-0.1", true),
            ("lua-echo#0", false),
        ]
        .map(|t| (w, t))
    }) {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "a_panic_in_an_io_or_listener_thread_aborts_the_process",
            "--test-threads=1",
        ])
        .env(PANIC_CHILD, thread);
        if writer {
            cmd.env(PANIC_CHILD_WRITER, "1");
        }
        let out = output_within(&mut cmd, ONE_SHOT_GUARD);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // With the writer, the panic's own message (ours then, not std's, which libtest
        // captures here) is out before the end.
        assert!(
            !writer
                || stderr.lines().any(|l| l.contains(&format!(
                    "ERROR thread '{thread}' panicked at tests/binary.rs"
                ))) && stderr.contains("injected by the test\n"),
            "{thread} (writer: {writer}): {stderr}"
        );
        if fatal {
            assert_eq!(
                out.status.signal(),
                Some(libc::SIGABRT),
                "{thread}: {stderr}"
            );
            // One error line with the cause: std's own message has no journal priority.
            assert!(
                stderr.lines().any(|l| l
                    .contains(&format!("thread {thread} panicked (panicked at"))
                    && l.contains("injected by the test): aborting")),
                "{stderr}"
            );
        } else {
            assert!(out.status.success(), "{thread}: {:?} {stderr}", out.status);
        }
    }
}

#[test]
fn a_malformed_lapps_notification_gets_no_answer_and_one_log_line() {
    let dir = temp_dir("bad-notification");
    write_config(
        &dir,
        binary::ONE_WORKER_WS_JSON,
        r#"{ "directories": { "applications": "./lua/apps" },
  "services": { "echo_lapps": { "protocol": "LAppS", "request_target": "/echo_lapps",
                                "preload": ["bcast"] } } }"#,
    );
    let (_child, addr, log) = spawn_binary(&dir, |cmd| {
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("LAPPS_LOG", "debug");
    });
    let mut ws = connect(addr, "/echo_lapps");
    // {"lapps": 2, "method": "echo"}: a request the host answers (-32600), at debug.
    let mut bad = vec![0xa2, 0x65];
    bad.extend_from_slice(b"lapps");
    bad.extend_from_slice(&[0x02, 0x66]);
    bad.extend_from_slice(b"method");
    bad.push(0x64);
    bad.extend_from_slice(b"echo");
    ws.send(tungstenite::Message::binary(bad)).unwrap();
    let line = binary::wait_line(&log, "answered a malformed request");
    assert!(
        line.contains("DEBUG") && line.contains("(-32600)"),
        "{line}"
    );
    ws.read().expect("the error response");
    // {"lapps": 1, "cid": 3}: a notification (cid 3) without its method.
    let mut cbor = vec![0xa2, 0x65];
    cbor.extend_from_slice(b"lapps");
    cbor.extend_from_slice(&[0x01, 0x63]);
    cbor.extend_from_slice(b"cid");
    cbor.push(0x03);
    ws.send(tungstenite::Message::binary(cbor)).unwrap();
    let line = binary::wait_line(&log, "malformed notification");
    assert!(line.contains("INFO") && line.contains("method"), "{line}");
    // No answer for it: the next message is the response to the next request.
    use ciborium::Value as Cbor;
    let text = |s: &str| Cbor::Text(s.into());
    let request = Cbor::Map(vec![
        (text("lapps"), Cbor::Integer(1.into())),
        (text("method"), text("echo")),
        (text("params"), Cbor::Array(vec![Cbor::Integer(7.into())])),
    ]);
    let mut bytes = Vec::new();
    ciborium::into_writer(&request, &mut bytes).unwrap();
    ws.send(tungstenite::Message::binary(bytes)).unwrap();
    let answer = match ws.read().expect("the response") {
        tungstenite::Message::Binary(b) => ciborium::from_reader::<Cbor, _>(&b[..]).unwrap(),
        other => panic!("{other:?}"),
    };
    let result = answer
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k == &text("result")))
        .map(|(_, v)| v.clone());
    assert_eq!(
        result,
        Some(Cbor::Array(vec![Cbor::Integer(7.into())])),
        "{answer:?}"
    );
}

/// A port another process holds fails the start before any service ran (its onStart would
/// otherwise have run, and a standalone init() have done its work, for nothing).
#[test]
fn a_port_in_use_fails_the_start_before_any_service_starts() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = temp_dir("port-in-use");
    std::fs::create_dir_all(dir.join("apps/starter")).unwrap();
    std::fs::write(
        dir.join("apps/starter/starter.lua"),
        "return { onStart = function() print('starter onStart ran') end,\n\
         onMessage = function() return true end }\n",
    )
    .unwrap();
    write_config(
        &dir,
        &format!(r#"{{ "ip": "127.0.0.1", "port": {port}, "workers": {{ "workers": 1 }} }}"#),
        &format!(
            r#"{{ "directories": {{ "applications": "{}" }},
  "services": {{ "starter": {{ "request_target": "/s" }} }} }}"#,
            dir.join("apps").display()
        ),
    );
    let out = output_within(
        Command::new(LAPPS)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("-c")
            .arg(&dir),
        ONE_SHOT_GUARD,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("starter onStart ran"), "{stderr}");
    drop(held);
}

/// A message over the service's limit and a Lua state out of memory: each log line names the
/// lapps.json setting an operator would change, and its value.
#[test]
fn a_limit_hit_is_logged_with_the_setting_that_set_it() {
    let dir = temp_dir("limit-lines");
    std::fs::create_dir_all(dir.join("apps/hungry")).unwrap();
    std::fs::write(
        dir.join("apps/hungry/hungry.lua"),
        "return { onMessage = function(h, op, msg)\n  local t = {}\n  \
         for i = 1, 1e7 do t[i] = msg .. i end\n  return true\nend }\n",
    )
    .unwrap();
    write_config(
        &dir,
        binary::ONE_WORKER_WS_JSON,
        &format!(
            r#"{{ "directories": {{ "applications": "{}" }},
  "services": {{
    "small": {{ "builtin": "echo", "request_target": "/small", "max_inbound_message_size": 100 }},
    "hungry": {{ "request_target": "/hungry", "memory_limit": 2097152, "instruction_budget": 0 }} }} }}"#,
            dir.join("apps").display()
        ),
    );
    let (_child, addr, log) = spawn_binary(&dir, |cmd| {
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    });
    let mut small = connect(addr, "/small");
    small
        .send(tungstenite::Message::binary(vec![7u8; 101]))
        .unwrap();
    assert_eq!(ws_close_code(&mut small), 1009);
    let line = binary::wait_line(&log, "max_inbound_message_size");
    assert!(
        line.contains(
            ") of service small: message larger than its service's \
                       max_inbound_message_size (100 bytes), close code 1009"
        ),
        "{line}"
    );
    let mut hungry = connect(addr, "/hungry");
    send(&mut hungry, "x");
    assert_eq!(ws_close_code(&mut hungry), 1011);
    let line = binary::wait_line(&log, "onMessage failed");
    assert!(
        line.ends_with("not enough memory (the service's memory_limit is 2097152 bytes)"),
        "{line}"
    );
}

/// A server started for a test: the child, its address and its log.
type Served = (
    binary::Reaper,
    std::net::SocketAddr,
    std::sync::mpsc::Receiver<String>,
);

/// The real binary serving one Lua app, `name` with source `src`, written under a fresh
/// `temp_dir(dir)`: the child, its address and its log.
fn one_app_binary(dir: &str, name: &str, src: &str) -> Served {
    one_app_binary_with(binary::ONE_WORKER_WS_JSON, dir, name, src)
}

/// A ws.json on 127.0.0.1 (any port) with one IO worker and `workers` keys `extra`.
fn one_worker_ws(extra: &str) -> String {
    format!(r#"{{ "ip": "127.0.0.1", "port": 0, "workers": {{ "workers": 1, {extra} }} }}"#)
}

/// [`one_app_binary`] with `ws` as its ws.json.
fn one_app_binary_with(ws: &str, dir: &str, name: &str, src: &str) -> Served {
    let services = format!(r#""{name}": {{ "instances": 1 }}"#);
    let (child, addr, log, _) = apps_binary(ws, dir, &[(name, src)], &services);
    (child, addr, log)
}

/// The real binary serving Lua apps (name, source) written under a fresh `temp_dir(dir)`, with
/// `services` as the entries of lapps.json's "services" and `ws` as ws.json: the child, its
/// address, its log and the log's lines up to the one saying where it listens.
fn apps_binary(
    ws: &str,
    dir: &str,
    apps: &[(&str, &str)],
    services: &str,
) -> (
    binary::Reaper,
    std::net::SocketAddr,
    std::sync::mpsc::Receiver<String>,
    Vec<String>,
) {
    let dir = temp_dir(dir);
    for (name, src) in apps {
        std::fs::create_dir_all(dir.join("apps").join(name)).unwrap();
        std::fs::write(dir.join("apps").join(name).join(format!("{name}.lua")), src).unwrap();
    }
    write_config(
        &dir,
        ws,
        &format!(
            r#"{{ "directories": {{ "applications": "{}" }}, "services": {{ {services} }} }}"#,
            dir.join("apps").display()
        ),
    );
    binary::spawn_binary_logging(&dir, |cmd| {
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    })
}

/// An app whose onDisconnect fails, and a client that opens and closes connections in a loop:
/// the error lines are limited to `PER_SECOND` a second (as for onMessage), or one line per
/// connection would flood the journal, whose own limit then drops the server's real errors.
#[test]
fn a_failing_on_disconnect_cannot_flood_the_log() {
    let (_child, addr, log) = one_app_binary(
        "disc-flood",
        "discfail",
        r#"local app, n = {}, 0
app.onMessage = function(h, op, msg)
  if msg == "count" then print("disconnects " .. n) end
  ws:send(h, 1, tostring(n))
  return true
end
local function missing()
  error("state missing for this connection")
end
app.onDisconnect = function()
  n = n + 1
  missing()
end
return app
"#,
    );
    const CONNECTIONS: usize = 200;
    let started = Instant::now();
    for _ in 0..CONNECTIONS {
        let s = raw_upgraded(addr, "/discfail");
        s.shutdown(std::net::Shutdown::Both).unwrap();
    }
    let mut ws = connect(addr, "/discfail");
    wait_for("every onDisconnect to have run", IO_TIMEOUT, || {
        ask(&mut ws, "n").parse::<usize>().unwrap() == CONNECTIONS
    });
    let seconds = started.elapsed().as_secs() + 1;
    // The instance logs its errors before it handles the next message: all are in by then.
    ws.send(tungstenite::Message::text("count")).unwrap();
    let lines = binary::lines_until(&log, &format!("disconnects {CONNECTIONS}"));
    let errors: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("onDisconnect:"))
        .collect();
    // With LuaJIT's own traceback, as onMessage's (mlua's `Function::call` would have
    // searched _G at every level, and said "in upvalue 'missing'").
    assert!(
        errors[0].contains("state missing for this connection | stack traceback: |")
            && errors[0].contains("discfail.lua:8: in function 'missing'"),
        "{}",
        errors[0]
    );
    let errors = errors.len();
    let most = lapps::log::PER_SECOND as usize * (seconds as usize + 1);
    assert!(
        errors <= most && errors < CONNECTIONS,
        "{errors} onDisconnect error lines for {CONNECTIONS} connections in {seconds} s"
    );
}

/// An app whose `onMessage` spins for `ms` milliseconds (it needs `time` preloaded and
/// `"instruction_budget": 0`), then echoes the message when `echo`.
fn spinning_app(ms: u32, echo: bool) -> String {
    let send = if echo {
        "  ws:send(h, kind, message)\n"
    } else {
        ""
    };
    format!(
        "local app = {{}}\n\
         app.onMessage = function(h, kind, message)\n\
         \x20 local until_ms = time.monotonic() + {ms}\n\
         \x20 while time.monotonic() < until_ms do end\n\
         {send}\
         \x20 return true\n\
         end\n\
         return app\n"
    )
}

/// A client that does not read what it is sent is not read either (above
/// `outbound_high_water`): a message it was sending when reading stopped stays incomplete, and
/// the line of its message timeout says why (a trial's line blamed a slow sender that had sent
/// hundreds of whole messages).
#[test]
fn a_message_timeout_of_a_client_that_does_not_read_says_so() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let pusher = r#"local app = {}
app.onMessage = function(h, op, msg)
  if msg == "push" then
    local chunk = string.rep("p", 1024 * 1024)
    for _ = 1, 8 do ws:send(h, 2, chunk) end
  end
  return true
end
return app
"#;
    let (_child, addr, log, _) = apps_binary(
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 },
             "message_timeout_ms": 1000, "outbound_high_water": 65536 }"#,
        "timeout-not-read",
        &[("pusher", pusher)],
        r#""pusher": { "request_target": "/pusher" }"#,
    );
    let mut s = raw_upgraded(addr, "/pusher");
    lapps::net::sys::setsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 16 << 10)
        .unwrap();
    // In one write, read in one go: the request for 8 MiB, then the first 1000 bytes of a
    // message of 100,000. The 8 MiB are never read.
    let mut bytes = frame(true, 0, 0x1, b"push", true);
    let next = frame(true, 0, 0x2, &vec![1u8; 100_000], true);
    bytes.extend_from_slice(&next[..1000]);
    s.write_all(&bytes).unwrap();
    let line = binary::wait_line(&log, "a message still incomplete");
    assert!(
        line.contains("as it was not read: it does not read what we send (")
            && line.contains(" bytes queued for it, above outbound_high_water), close code 1008"),
        "{line}"
    );
}

/// An instance whose queue stays above its high-water mark (its connections not read) is warned
/// of, and says when it has caught up (a trial's operator saw only the queue grow in the status
/// report).
#[test]
fn an_instance_that_stays_behind_is_warned_of_and_says_when_it_caught_up() {
    use std::io::Write;
    let slow = spinning_app(150, false);
    let (_child, addr, log, _) = apps_binary(
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 } }"#,
        "behind",
        &[("slowq", &slow)],
        r#""slowq": { "request_target": "/slowq", "preload": ["time"], "queue_capacity": 10,
                      "instruction_budget": 0 }"#,
    );
    let mut s = raw_upgraded(addr, "/slowq");
    // 60 messages of 150 ms each: 9 s of work, more than 10 of them waiting for over 7 s.
    let bytes: Vec<u8> = (0..60)
        .flat_map(|i: u32| frame(true, 0, 0x1, i.to_string().as_bytes(), true))
        .collect();
    s.write_all(&bytes).unwrap();
    let warned = binary::wait_line(&log, "[slowq#0] behind for ");
    assert!(
        warned.contains(" WARN ")
            && warned.contains("above its queue's high-water mark (queue_capacity 10, ")
            && warned.contains("the connections that send to it are not read meanwhile"),
        "{warned}"
    );
    let caught_up = binary::wait_line(&log, "[slowq#0] caught up");
    assert!(caught_up.contains(" INFO "), "{caught_up}");
}

/// An instance that does not stop in the shutdown's grace is named with what held it: a
/// network instance drains its queue first (a trial's line gave no reason, and the instance
/// had 389 messages of closed clients to handle).
#[test]
fn an_instance_that_does_not_stop_in_time_says_what_held_it() {
    use std::io::Write;
    let slow = spinning_app(150, false);
    let (mut child, addr, log, _) = apps_binary(
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 } }"#,
        "not-stopped",
        &[("slowstop", &slow)],
        r#""slowstop": { "request_target": "/slowstop", "preload": ["time"],
                         "instruction_budget": 0 }"#,
    );
    let mut s = raw_upgraded(addr, "/slowstop");
    // 100 messages of 150 ms each: 15 s of work, past the 5 s grace.
    let bytes: Vec<u8> = (0..100)
        .flat_map(|i: u32| frame(true, 0, 0x1, i.to_string().as_bytes(), true))
        .collect();
    s.write_all(&bytes).unwrap();
    wait_for("the server to read them", IO_TIMEOUT, || {
        server_unread(addr, s.local_addr().unwrap()) == Some(0)
    });
    // SAFETY: kill(2) on our own child process.
    assert_eq!(
        unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let line = binary::wait_line(&log, "service slowstop instance 0 did not stop within");
    assert!(
        line.contains(" (busy with one batch of messages for ")
            && line.contains(" message(s) handed to it and not yet done, that batch's included)"),
        "{line}"
    );
    child.wait_exit(Duration::from_secs(30));
}

/// A client that ends TCP in the middle of its upgrade request gets a line, as a refused one
/// does (a trial's got none); one that sent nothing (a health check) gets none.
#[test]
fn an_upgrade_request_ended_unfinished_is_logged() {
    use std::io::Write;
    let (child, addr, log) = one_app_binary(
        "unfinished-request",
        "quiet",
        "return { onMessage = function() return true end }",
    );
    let silent = std::net::TcpStream::connect(addr).unwrap();
    silent.shutdown(std::net::Shutdown::Write).unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /quiet HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut lines = binary::lines_until(&log, "with its upgrade request unfinished");
    let line = lines.last().unwrap().clone();
    // A marker after both ends: a status report, asked for once both are gone.
    wait_for("both connections to end", IO_TIMEOUT, || {
        // SAFETY: kill(2) on our own child process.
        assert_eq!(
            unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGUSR1) },
            0
        );
        let report = binary::lines_until(&log, "status: bcast");
        let gone = report
            .iter()
            .any(|l| l.contains("status: 0 connection(s) on "));
        lines.extend(report);
        gone
    });
    assert!(
        line.contains(&format!("closed {}: ", s.local_addr().unwrap()))
            && line.ends_with("(30 byte(s) of it received)"),
        "{line}"
    );
    // A reset in the middle of its request gets its line too.
    let mut reset = std::net::TcpStream::connect(addr).unwrap();
    reset.write_all(b"GET /quiet HTTP/1.1\r\n").unwrap();
    let reset_end = reset.local_addr().unwrap();
    wait_for("the server to read it", IO_TIMEOUT, || {
        server_unread(addr, reset_end) == Some(0)
    });
    close_with_reset(reset);
    let line = binary::wait_line(&log, "with its upgrade request unfinished");
    assert!(
        line.contains(&format!(
            "closed {reset_end}: its connection failed (a reset?) with its upgrade request \
             unfinished (21 byte(s) of it received)"
        )),
        "{line}"
    );
    let silent_end = silent.local_addr().unwrap().to_string();
    assert!(
        !lines.iter().any(|l| l.contains(&silent_end)),
        "a connection that sent nothing is not logged: {lines:#?}"
    );
}

/// A standalone instance that does not stop in time is named with what held it: its `run()`,
/// or, once that has returned, its `onShutdown` (a review found both blamed on `run()`).
#[test]
fn a_standalone_instance_that_does_not_stop_says_whether_run_or_on_shutdown_held_it() {
    let in_run = r#"local s = {}
s.run = function()
  local n = nap:new()
  while not must_stop() do n:sleep(1) end
  local until_ms = time.monotonic() + 8000
  while time.monotonic() < until_ms do end
end
return s
"#;
    let in_shutdown = r#"local s = {}
s.run = function()
  local n = nap:new()
  while not must_stop() do n:sleep(1) end
end
s.onShutdown = function()
  local until_ms = time.monotonic() + 8000
  while time.monotonic() < until_ms do end
end
return s
"#;
    let standalone =
        r#"{ "standalone": true, "preload": ["nap", "time"], "instruction_budget": 0 }"#;
    let (mut child, _addr, log, _) = apps_binary(
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 } }"#,
        "not-stopped-standalone",
        &[("inrun", in_run), ("inshutdown", in_shutdown)],
        &format!(r#""inrun": {standalone}, "inshutdown": {standalone}"#),
    );
    // SAFETY: kill(2) on our own child process.
    assert_eq!(
        unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let mut lines = binary::lines_until(&log, "did not stop within");
    lines.extend(binary::lines_until(&log, "did not stop within"));
    let line_of = |name: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("service {name} instance 0 did not stop within")))
            .unwrap_or_else(|| panic!("{name}: {lines:#?}"))
            .clone()
    };
    let run = line_of("inrun");
    assert!(
        run.contains("(its run() had not returned: it does not look at must_stop()"),
        "{run}"
    );
    let shutdown = line_of("inshutdown");
    assert!(shutdown.ends_with("(in its onShutdown)"), "{shutdown}");
    child.wait_exit(Duration::from_secs(30));
}

/// An app that answers any message with `times` binary messages of `kib` KiB, then keeps the
/// connection open or, with `stays_open` false, closes it (returns false).
fn pushing_app(kib: usize, times: usize, stays_open: bool) -> String {
    format!(
        "local app = {{}}\n\
         app.onMessage = function(h, op, msg)\n\
         \x20 local chunk = string.rep(\"p\", {kib} * 1024)\n\
         \x20 for _ = 1, {times} do ws:send(h, 2, chunk) end\n\
         \x20 return {stays_open}\n\
         end\n\
         return app\n"
    )
}

/// A WebSocket client of `path` with a receive buffer of 4 KiB, for tests of a client that
/// reads nothing: the server's bytes pile up on the server's side.
fn connect_small_window(addr: std::net::SocketAddr, path: &str) -> Client {
    use std::os::fd::AsRawFd;
    let ws = connect(addr, path);
    lapps::net::sys::setsockopt_int(
        ws.get_ref().as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        4096,
    )
    .unwrap();
    ws
}

/// A close timeout that passes while our Close still waits behind bytes the peer has not read
/// says so, not that the peer did not answer a Close it could not have seen (a re-trial).
#[test]
fn a_close_timeout_before_our_close_reached_the_peer_says_so() {
    let pusher = pushing_app(1024, 16, false);
    let (_child, addr, log, _) = apps_binary(
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 },
             "close_timeout_ms": 500 }"#,
        "close-unsent",
        &[("pushclose", &pusher)],
        r#""pushclose": { "request_target": "/pushclose" }"#,
    );
    let mut s = connect_small_window(addr, "/pushclose");
    // 16 MiB, then the Close: more than the kernels' buffers take, and none of it read.
    send(&mut s, "go");
    let line = binary::wait_line(&log, "before our Close reached it");
    assert!(
        line.contains("the peer stopped reading before our Close reached it (close_timeout_ms)"),
        "{line}"
    );
}

/// A client closed as a slow consumer is named with its handle and the service whose sends
/// overran it (a trial's operator could not tell which feed it was).
#[test]
fn the_slow_consumer_line_names_the_handle_and_the_service() {
    let pusher = pushing_app(64, 256, true);
    let (_child, addr, log, _) = apps_binary(
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 },
             "outbound_high_water": 65536 }"#,
        "slow-consumer-line",
        &[("feed", &pusher)],
        r#""feed": { "request_target": "/feed", "max_inbound_message_size": 1024 }"#,
    );
    let mut s = connect_small_window(addr, "/feed");
    // 16 MiB for a client that reads none of it: past what the kernel's buffers take, four
    // high-water marks and one message.
    send(&mut s, "go");
    let line = binary::wait_line(&log, "slow consumer");
    assert!(
        line.contains(") of service feed: slow consumer (")
            && line.contains(" bytes queued for it), close code 1008")
            && line.contains(" (0x"),
        "{line}"
    );
}

/// Each service's lines have a limit of their own: one service's flood of errors neither
/// hides another's error nor lends it its count of suppressed lines (a trial's memory error
/// of one service was missing from the log while another failed in a loop, and once it got
/// through it carried the other's count).
#[test]
fn one_services_flood_of_errors_does_not_hide_anothers() {
    let noisy = r#"local app = {}
app.onMessage = function() error("noisy fails") end
return app
"#;
    let quiet = r#"local app = {}
app.onMessage = function() error("quiet fails once") end
return app
"#;
    let (_child, addr, log, _) = apps_binary(
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 } }"#,
        "flood-per-service",
        &[("noisy", noisy), ("quiet", quiet)],
        r#""noisy": { "request_target": "/noisy" }, "quiet": { "request_target": "/quiet" }"#,
    );
    // Connections that each send a message, in a loop: an error line each for noisy (the
    // same line as quiet's).
    let flood = |addr| {
        let mut s = raw_upgraded(addr, "/noisy");
        std::io::Write::write_all(&mut s, &frame(true, 0, 0x1, b"fail", true)).unwrap();
    };
    let line = line_during_a_flood(addr, &log, flood, "[noisy#0] onMessage failed", "/quiet");
    assert!(
        line.contains("quiet fails once") && !line.contains("suppressed"),
        "{line}"
    );
}

/// Within one service too, a flood of one kind of line hides no other kind: a client that
/// makes `onDisconnect` fail in a loop hides no `onMessage` error of the same service (a
/// review found one limit per service let a client's flood of info lines hide its errors).
#[test]
fn one_kind_of_a_services_lines_does_not_hide_another() {
    let mixed = r#"local app = {}
app.onMessage = function(h, op, msg)
  if msg == "fail" then error("mixed fails once") end
  return true
end
app.onDisconnect = function() error("disconnect fails") end
return app
"#;
    let (_child, addr, log, _) = apps_binary(
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 } }"#,
        "flood-per-kind",
        &[("mixed", mixed)],
        r#""mixed": { "request_target": "/mixed" }"#,
    );
    // Connections opened and closed in a loop: an onDisconnect error line each.
    let flood = |addr| {
        let s = raw_upgraded(addr, "/mixed");
        s.shutdown(std::net::Shutdown::Both).unwrap();
    };
    let line = line_during_a_flood(addr, &log, flood, "[mixed#0] onDisconnect", "/mixed");
    assert!(
        line.contains("mixed fails once") && !line.contains("suppressed"),
        "{line}"
    );
}

/// Runs `flood` on a thread, over and over, until the lines containing `flooded` it causes
/// are being suppressed for the rest of a second; then sends "fail" on a connection to `path`
/// (whose app raises for it) and returns the line of that failure, once the flood has stopped.
fn line_during_a_flood(
    addr: std::net::SocketAddr,
    log: &std::sync::mpsc::Receiver<String>,
    flood: fn(std::net::SocketAddr),
    flooded: &str,
    path: &str,
) -> String {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                flood(addr);
            }
        })
    };
    // The line that says lines are suppressed is the first of a second; once the rest of that
    // second's lines are written, every other line of its limiter is suppressed this second.
    binary::wait_line(log, "similar lines suppressed");
    for _ in 1..lapps::log::PER_SECOND {
        binary::wait_line(log, flooded);
    }
    let mut ws = connect(addr, path);
    ws.send(tungstenite::Message::text("fail")).unwrap();
    let service = path.trim_start_matches('/');
    let line = binary::wait_line(log, &format!("[{service}#0] onMessage failed"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flooding.join().unwrap();
    line
}

/// `print` of a client's large message writes at most 8 KiB of it to the log, and says how
/// much it left out (a 1 MiB message would otherwise be a line of megabytes).
#[test]
fn a_print_line_is_cut_at_8_kib_and_says_how_much_more() {
    let (_child, addr, log) = one_app_binary(
        "print-cap",
        "printer",
        r#"local app = {}
app.onMessage = function(h, op, msg)
  if op == 2 then print("bin", msg, "end") else print("got", msg) end
  ws:send(h, 1, "printed")
  return true
end
return app
"#,
    );
    let mut ws = connect(addr, "/printer");
    assert_eq!(ask(&mut ws, &"m".repeat(1 << 20)), "printed");
    let lines = binary::lines_until(&log, "bytes more)");
    let line = lines.last().unwrap();
    // "got", a tab, then the message's first 8188 bytes: 8192 in all.
    let shown = 8192 - "got\t".len();
    assert!(
        line.ends_with(&format!(
            "got\t{} ... ({} bytes more)",
            "m".repeat(shown),
            (1 << 20) - shown
        )),
        "{} bytes: ...{}",
        line.len(),
        &line[line.len().saturating_sub(80)..]
    );
    // Bytes that are not UTF-8 count as the bytes printed, not as their U+FFFD in the log:
    // 3,000 of them leave room for what follows.
    ws.send(tungstenite::Message::binary(vec![0xffu8; 3000]))
        .unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("printed"));
    let lines = binary::lines_until(&log, "bin\t");
    let line = lines.last().unwrap();
    assert!(
        line.ends_with(&format!("bin\t{}\tend", "\u{fffd}".repeat(3000))),
        "{} bytes: ...{}",
        line.len(),
        &line[line.len().saturating_sub(80)..]
    );
}

/// The original set `LAPPS_APPS_DIR` to the applications directory, and its apps read it
/// (its console app: `os.getenv("LAPPS_APPS_DIR") .. "/console"`).
#[test]
fn apps_find_the_applications_directory_in_lapps_apps_dir() {
    let (_child, addr, _log) = one_app_binary(
        "apps-dir",
        "where",
        r#"local app = {}
app.onMessage = function(h, op, msg)
  local dir = os.getenv("LAPPS_APPS_DIR")
  local f = dir and io.open(dir .. "/where/where.lua")
  ws:send(h, 1, tostring(dir) .. " " .. tostring(f ~= nil))
  if f then f:close() end
  return true
end
return app
"#,
    );
    let mut ws = connect(addr, "/where");
    let answer = ask(&mut ws, "?");
    let want = temp_dir_path("apps-dir").join("apps");
    assert_eq!(answer, format!("{} true", want.display()));
}

/// A flood of refusals past the per-second limit that then stops: the lines suppressed at its
/// end are still reported (by the main thread, a second or so later), quoting the last line
/// written, though no later refusal comes to carry the count.
#[test]
fn the_lines_a_flood_suppressed_at_its_end_are_reported_when_it_stops() {
    let (_child, addr, log) = one_app_binary(
        "suppressed",
        "quiet",
        "return { onMessage = function() return true end }",
    );
    let report = "similar lines suppressed; the last one written: rejected";
    // 30 refusals take a few milliseconds; should a second begin just before the last few
    // (those of the second before are then reported inline), another burst settles it.
    let mut found = None;
    for _ in 0..3 {
        for _ in 0..30 {
            let answer = http_exchange(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
            assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while let Ok(line) =
            log.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            if line.contains(report) {
                found = Some(line);
                break;
            }
        }
        if found.is_some() {
            break;
        }
    }
    let line = found.expect("no report of the suppressed lines");
    assert!(line.contains("HTTP 404 for \"/nope\""), "{line}");
}

/// Voluntary context switches of the thread of `pid` named `name` (from /proc).
fn context_switches(pid: u32, name: &str) -> u64 {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        if std::fs::read_to_string(task.join("comm")).unwrap().trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("voluntary_ctxt_switches:"))
            .unwrap();
        return line.split_whitespace().nth(1).unwrap().parse().unwrap();
    }
    panic!("no thread {name} in {pid}");
}

/// While a service's queue refuses the worker's batch, the worker retries with a wait that
/// doubles up to max_poll_wait_ms, not every millisecond: a backed-up service must not make
/// its workers spin.
#[test]
fn a_worker_retries_a_full_service_queue_with_a_growing_wait() {
    use std::io::Write;
    let dir = temp_dir("retry-backoff");
    std::fs::create_dir_all(dir.join("apps").join("stuck")).unwrap();
    std::fs::write(
        dir.join("apps").join("stuck").join("stuck.lua"),
        r#"local app = {}
app.onMessage = function(h, op, msg)
  if msg == "hold" then
    ws:send(h, 1, "holding")
    must_stop() -- hands "holding" over now
    while true do end
  end
  return true
end
return app
"#,
    )
    .unwrap();
    write_config(
        &dir,
        r#"{ "ip": "127.0.0.1", "port": 0,
             "workers": { "workers": 1, "max_poll_wait_ms": 1000 } }"#,
        &format!(
            r#"{{ "directories": {{ "applications": "{}" }},
                 "services": {{ "stuck": {{ "instances": 1, "instruction_budget": 0,
                                           "queue_capacity": 1 }} }} }}"#,
            dir.join("apps").display()
        ),
    );
    let (child, addr, _log) = spawn_binary(&dir, |_| {});
    let mut held = raw_upgraded(addr, "/stuck");
    held.write_all(&frame(true, 0, 0x1, b"hold", true)).unwrap();
    assert_eq!(read_frame(&mut held).expect("holding").payload, b"holding");
    // One message a worker turn, more batches than the instance's queue takes (1 + 8): the
    // worker holds the last one and retries it.
    let mut fillers = Vec::new();
    for _ in 0..16 {
        let mut c = raw_upgraded(addr, "/stuck");
        c.write_all(&frame(true, 0, 0x1, b"x", true)).unwrap();
        let client_end = c.local_addr().unwrap();
        wait_for("the server to read it", IO_TIMEOUT, || {
            server_unread(addr, client_end) == Some(0)
        });
        fillers.push(c);
    }
    // Its wake-ups over a second (a measurement window, not a wait for anything): 1, 2, 4 ...
    // 512 ms, then 1 s, about 10; every millisecond was 1000.
    let pid = child.0.id();
    let before = context_switches(pid, "lapps-io-0");
    std::thread::sleep(Duration::from_secs(1));
    let woke = context_switches(pid, "lapps-io-0") - before;
    assert!(woke < 100, "the worker woke {woke} times in a second");
    drop(child);
    drop(fillers);
}

/// Under systemd (Type=notify) every Lua service's start tells the manager how long it may
/// take (EXTEND_TIMEOUT_USEC, its start timeout and a margin; its instances start at once),
/// before READY=1: services start one after another, which may take longer than the unit's
/// TimeoutStartSec.
#[test]
fn each_service_start_extends_systemds_start_timeout_before_ready() {
    let dir = temp_dir("notify");
    let socket = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    notify.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write_config(
        &dir,
        binary::ONE_WORKER_WS_JSON,
        r#"{ "directories": { "applications": "./lua/apps" },
             "services": { "echo": { "protocol": "raw", "instances": 3 },
                           "chat": { "protocol": "raw", "instances": 2, "request_target": "/chat",
                                     "preload": ["bcast"] } } }"#,
    );
    let (_child, _addr, _log) = spawn_binary(&dir, |cmd| {
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("NOTIFY_SOCKET", &socket);
    });
    let mut states = Vec::new();
    let mut buf = [0u8; 4096];
    while !states.iter().any(|s| s == "READY=1") {
        let n = notify.recv(&mut buf).expect("a state before READY=1");
        states.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // The start timeout and 5 s, or more where the instances outnumber the CPUs.
    let extends: Vec<u64> = states
        .iter()
        .filter_map(|s| s.strip_prefix("EXTEND_TIMEOUT_USEC="))
        .map(|usec| usec.parse().unwrap())
        .collect();
    assert_eq!(extends.len(), 2, "{states:?}");
    assert!(extends.iter().all(|&usec| usec >= 35_000_000), "{states:?}");
    assert_eq!(
        states.last().map(String::as_str),
        Some("READY=1"),
        "{states:?}"
    );
}

/// The repository's own configuration runs its mqr example: every message mqr_sender posts
/// reaches mqr_receiver, in order, and a SIGTERM loses none (the receiver stops last and
/// drains). Each `print` line names the service and instance that printed it.
#[test]
fn the_repo_configs_mqr_example_delivers_every_message_and_print_names_its_service() {
    let dir = temp_dir("mqr-example");
    let lapps = std::fs::read_to_string(repo_root().join("etc/lapps/lapps.json")).unwrap();
    write_config(&dir, binary::ONE_WORKER_WS_JSON, &lapps);
    let (mut child, _addr, log, mut lines) = binary::spawn_binary_logging(&dir, |cmd| {
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    });
    // The sender posts once a second: two messages seen, then stop.
    if !lines.iter().any(|l| l.contains("mqr_receiver: counter 2 ")) {
        lines.extend(binary::lines_until(&log, "mqr_receiver: counter 2 "));
    }
    child.stop();
    lines.extend(binary::lines_until(&log, "message(s) received"));
    let printed = |service: &str| -> Vec<&str> {
        let prefix = format!("{service}: ");
        lines
            .iter()
            .filter_map(|l| l.split_once(&prefix))
            .map(|(head, rest)| {
                assert!(
                    head.trim_end().ends_with(&format!("[{service}#0]")),
                    "a print line that does not name its service: {head}{prefix}{rest}"
                );
                rest
            })
            .collect()
    };
    let received = printed("mqr_receiver");
    let counters: Vec<u64> = received
        .iter()
        .filter_map(|l| l.strip_prefix("counter "))
        .map(|l| {
            assert!(l.contains(" from sender #0, "), "{l}");
            l.split(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    let n = counters.len() as u64;
    assert_eq!(counters, (1..=n).collect::<Vec<_>>(), "{received:#?}");
    assert_eq!(
        received.last().copied(),
        Some(format!("{n} message(s) received").as_str()),
        "{received:#?}"
    );
    let sent = printed("mqr_sender");
    assert!(
        sent.iter().all(|l| !l.contains("not accepted")),
        "{sent:#?}"
    );
}

/// A Lua error in a handler is logged on one line with its traceback (the function and the
/// file:line that raised), the RAW connection is closed with 1011 and a LAppS request is
/// answered -32603 with the connection kept.
#[test]
fn a_handlers_error_is_logged_on_one_line_with_its_traceback() {
    let app = r#"local app = {}
local function explode(what)
  error("no thanks: " .. tostring(what))
end
app.onMessage = function(h, kind, message)
  explode(type(message) == "string" and message or message.method)
  return true
end
return app
"#;
    let (_child, addr, log, _) = apps_binary(
        binary::ONE_WORKER_WS_JSON,
        "traceback",
        &[("boom", app), ("boom_lapps", app)],
        r#""boom": { "request_target": "/boom" },
           "boom_lapps": { "protocol": "LAppS", "request_target": "/boom_lapps" }"#,
    );
    let check = |line: &str, service: &str| {
        let file = format!("{service}.lua:3: no thanks: ");
        for part in [
            format!("[{service}#0] onMessage failed"),
            file,
            " | stack traceback: | ".into(),
            // LuaJIT's own traceback (Lua 5.3's port in mlua-sys says "in upvalue 'explode'",
            // after searching _G at every level: see fastpath.rs).
            format!("{service}.lua:3: in function 'explode'"),
            format!("{service}.lua:6: in function"),
        ] {
            assert!(line.contains(&part), "{part:?} missing in {line}");
        }
    };
    let mut ws = connect(addr, "/boom");
    send(&mut ws, "hello");
    assert_eq!(ws_close_code(&mut ws), 1011);
    check(&binary::wait_line(&log, "no thanks: hello"), "boom");

    let mut ws = connect(addr, "/boom_lapps");
    use ciborium::Value as Cbor;
    let text = |s: &str| Cbor::Text(s.into());
    let request = Cbor::Map(vec![
        (text("lapps"), Cbor::Integer(1.into())),
        (text("method"), text("detonate")),
    ]);
    let mut bytes = Vec::new();
    ciborium::into_writer(&request, &mut bytes).unwrap();
    for _ in 0..2 {
        ws.send(tungstenite::Message::binary(bytes.clone()))
            .unwrap();
        let answer = match ws.read().expect("the response") {
            tungstenite::Message::Binary(b) => ciborium::from_reader::<Cbor, _>(&b[..]).unwrap(),
            other => panic!("{other:?}"),
        };
        let code = answer
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k == &text("error")))
            .and_then(|(_, e)| e.as_map())
            .and_then(|e| e.iter().find(|(k, _)| k == &text("code")))
            .and_then(|(_, c)| c.as_integer())
            .map(i128::from);
        assert_eq!(code, Some(-32603), "{answer:?}");
    }
    let line = binary::wait_line(&log, "no thanks: detonate");
    assert!(line.contains("for method \"detonate\""), "{line}");
    check(&line, "boom_lapps");
}

/// The log line of the failed onMessage of app `name` (a service at `/name` with the further
/// service keys `keys`), made to fail by one message: the connection closes with 1011.
fn failed_on_message_line(dir: &str, name: &str, app: &str, keys: &str, wanted: &str) -> String {
    let (_child, addr, log, _) = apps_binary(
        binary::ONE_WORKER_WS_JSON,
        dir,
        &[(name, app)],
        &format!(r#""{name}": {{ "request_target": "/{name}", {keys} }}"#),
    );
    let mut ws = connect(addr, &format!("/{name}"));
    send(&mut ws, "hello");
    assert_eq!(ws_close_code(&mut ws), 1011);
    binary::wait_line(&log, wanted)
}

/// An error raised by a host function (mqr:post given a table) is logged with one traceback,
/// the message handler's, which names the app's line.
#[test]
fn a_host_functions_error_is_logged_with_one_traceback() {
    let app = r#"local app = {}
app.onMessage = function(h, kind, message)
  mqr:post("q", {})
  return true
end
return app
"#;
    let line = failed_on_message_line(
        "host-error",
        "host_error",
        app,
        r#""preload": ["mqr"]"#,
        "bad argument #2 to 'mqr:post' (string or nljson object or array expected, got table)",
    );
    assert!(line.contains("host_error.lua:3:"), "{line}");
    assert_eq!(line.matches("stack traceback:").count(), 1, "{line}");
}

/// An error value that is neither a string nor has `__tostring` is logged by its type, as Lua's
/// own interpreter words it (a trial found "(error object is not a string)" said nothing of
/// what was raised), and a table (`error({code = 42})`, structured errors) with its first
/// fields; a number stays the text `error` made of it. A standalone `run()` raising a table
/// is logged the same way (it was `table: 0x...`).
#[test]
fn a_handlers_error_that_is_not_a_string_is_logged_by_its_type_and_a_tables_fields() {
    let app = r#"local app = {}
app.onMessage = function(h, kind, message)
  if message == "table" then error({code = 42}) end
  if message == "bad tostring" then
    error(setmetatable({code = 44}, {__tostring = function() error("nope") end}))
  end
  if message == "long field" then error({["end"] = string.rep("y", 1000000)}) end
  error(42)
end
return app
"#;
    let run = r#"local app = {}
app.run = function() error({code = 43, why = "run"}) end
return app
"#;
    let (_child, addr, log, start) = apps_binary(
        binary::ONE_WORKER_WS_JSON,
        "error-object",
        &[("errobj", app), ("errrun", run)],
        r#""errobj": { "request_target": "/errobj" }, "errrun": { "standalone": true }"#,
    );
    for (message, wanted) in [
        (
            "table",
            "with 1011: (error object is a table value: {code = 42}) | stack traceback:",
        ),
        (
            "bad tostring",
            "with 1011: (error object is a table value: {code = 44}) | stack traceback:",
        ),
        (
            "long field",
            &format!(
                "with 1011: (error object is a table value: {{[\"end\"] = \"{}\"...}}) | stack \
                 traceback:",
                "y".repeat(100)
            ),
        ),
        ("number", "errobj.lua:8: 42 | stack traceback:"),
    ] {
        let mut ws = connect(addr, "/errobj");
        send(&mut ws, message);
        assert_eq!(ws_close_code(&mut ws), 1011);
        let line = binary::wait_line(&log, "onMessage failed");
        assert!(line.contains(wanted), "{wanted:?} missing in {line}");
    }
    // It fails again after each back-off: a line the waits above passed over comes again.
    let line = match start.iter().find(|l| l.contains("run() failed")) {
        Some(l) => l.clone(),
        None => binary::wait_line(&log, "run() failed"),
    };
    let fields = ["code = 43", "why = \"run\""];
    assert!(
        line.contains("(error object is a table value: {")
            && fields.iter().all(|f| line.contains(f))
            && line.contains("errrun.lua:2:"),
        "{line}"
    );
}

/// A runaway loop inside a generator of `coroutine.wrap`: once the budget is spent, the error
/// is raised again at every instruction, the first of them in the sandbox's `wrap` (Lua
/// code of its own, see `cstack`); the log line names the app's line that called the
/// generator, not the sandbox's.
#[test]
fn a_budget_spent_inside_a_coroutine_is_reported_at_the_apps_line() {
    let app = r#"local app = {}
app.onMessage = function(h, kind, message)
  local gen = coroutine.wrap(function()
    while true do end
  end)
  gen()
  return true
end
return app
"#;
    let line = failed_on_message_line(
        "budget-in-coroutine",
        "budget_co",
        app,
        r#""instruction_budget": 1000000"#,
        "instruction budget of 1000000 exceeded",
    );
    assert!(
        line.contains("budget_co.lua:6: instruction budget"),
        "{line}"
    );
}

/// A connection with a backlog of input cannot keep the worker from the others: each is read
/// `workers.max_inbounds_skip` times a turn, then the next ready one has its turn. With the
/// server stopped (SIGSTOP), one client fills its socket with a backlog (a text message every
/// KiB, unsolicited Pongs between them: read and ignored, so the backlog never waits for the
/// app) and another then sends one message; resumed, the worker finds both ready, the backlog
/// first. The app counts the backlog's messages and tells the second client how many came
/// before its own: those of the backlog's first read (a read takes up to 64 KiB), not what the
/// server's socket held (some 110 KiB) or the whole backlog, as when each connection is read
/// until it runs dry.
#[test]
fn a_connection_with_a_backlog_is_read_a_budget_at_a_time() {
    let (child, addr, _log) = one_app_binary_with(
        &one_worker_ws(r#""max_inbounds_skip": 1"#),
        "inbounds-skip",
        "tally",
        r#"local app, n = {}, 0
app.onMessage = function(h, op, msg)
  if msg == "count?" then ws:send(h, 1, tostring(n)) else n = n + 1 end
  return true
end
return app
"#,
    );
    use std::io::Write;
    let pid = child.0.id() as libc::pid_t;
    let mut backlog = raw_upgraded(addr, "/tally");
    let mut asker = connect(addr, "/tally");
    let pong = frame(true, 0, 0xA, b"", true);
    let mut chunk = frame(true, 0, 0x1, b"x", true);
    chunk.extend(pong.repeat(1014 / pong.len()));
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    wait_for("every thread of the server stopped", IO_TIMEOUT, || {
        binary::all_stopped(pid)
    });
    backlog.set_nonblocking(true).unwrap();
    let mut written = 0usize;
    // Large writes: the backlog fills the server's socket (small ones fill it with overhead).
    let many = chunk.repeat(256);
    loop {
        let at = written % many.len();
        match backlog.write(&many[at..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    send(&mut asker, "count?");
    // Its frame (12 bytes) in the server's socket before the server resumes: the worker's
    // first wait then finds both connections ready.
    let asker_end = asker.get_ref().local_addr().unwrap();
    wait_for("the message in the server's socket", IO_TIMEOUT, || {
        socket_queues(addr, asker_end).is_some_and(|(_, unread)| unread >= 12)
    });
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    // The chunk a full socket cut short, finished.
    backlog.set_nonblocking(false).unwrap();
    let at = written % chunk.len();
    if at > 0 {
        backlog.write_all(&chunk[at..]).unwrap();
    }
    let total = written.div_ceil(chunk.len());
    let before: usize = text(&mut asker).parse().unwrap();
    const READ: usize = 64 << 10;
    assert!(
        written > 4 * READ,
        "a backlog of {written} bytes only: too small to tell"
    );
    assert!(
        before <= READ / chunk.len() + 1,
        "{before} of the backlog's {total} messages were read before the other connection's"
    );
    // Nothing of the backlog was lost on the way.
    wait_for("the whole backlog counted", IO_TIMEOUT, || {
        send(&mut asker, "count?");
        text(&mut asker).parse::<usize>().unwrap() == total
    });
}

/// A connection refused at accept (every worker full) is answered 503 without waiting for its
/// request; a HEAD that came with the connection gets the answer without content (RFC 9110
/// section 9.3.2). With the server stopped the connection waits in the backlog, its HEAD in
/// the server's socket; resumed, the worker accepts and answers it.
#[test]
fn a_head_refused_at_accept_gets_its_503_without_content() {
    let (child, addr, log) = one_app_binary_with(
        &one_worker_ws(r#""max_connections": 1"#),
        "head-503",
        "quiet",
        "return { onMessage = function() return true end }",
    );
    use std::io::{Read, Write};
    let pid = child.0.id() as libc::pid_t;
    let _live = connect(addr, "/quiet");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    wait_for("every thread of the server stopped", IO_TIMEOUT, || {
        binary::all_stopped(pid)
    });
    let mut head = std::net::TcpStream::connect(addr).unwrap();
    let request = b"HEAD /quiet HTTP/1.1\r\nHost: x\r\n\r\n";
    head.write_all(request).unwrap();
    let end = head.local_addr().unwrap();
    wait_for("the HEAD in the server's socket", IO_TIMEOUT, || {
        socket_queues(addr, end).is_some_and(|(_, unread)| unread >= request.len() as u64)
    });
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    head.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut answer = String::new();
    head.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
    let length = answer
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map(|n| n.parse::<usize>().unwrap());
    assert!(length.is_some_and(|n| n > 0), "{answer:?}");
    assert!(
        answer.ends_with("\r\n\r\n"),
        "content after the head: {answer:?}"
    );
    // The line says what the limit is (start-up may have lowered it).
    let line = binary::wait_line(&log, "every worker is at max_connections");
    assert!(
        line.contains("max_connections (1 each, HTTP 503)"),
        "{line}"
    );
}

/// An app's module may be a proxy (its callbacks found through `__index`, which runs Lua) and
/// may set its callbacks in `onStart`: the host looks them up after `onStart`, each lookup
/// with a fresh instruction budget. Here `onDisconnect` is set in `onStart`, and spends the
/// whole budget of the last callback before the stop: that must not make the lookup of
/// `onShutdown` fail (it was skipped without a word).
#[test]
fn callbacks_set_in_on_start_or_behind_index_are_found() {
    let app = r#"local impl = {}
function impl.onStart()
  impl.onDisconnect = function(h)
    print("disconnected")
    while true do end
  end
end
function impl.onMessage(h, op, msg) return true end
function impl.onShutdown() print("bye") end
return setmetatable({}, { __index = function(_, k) return impl[k] end })
"#;
    let (mut child, addr, log) = one_app_binary("proxied", "proxied", app);
    let mut ws = connect(addr, "/proxied");
    ws.close(None).unwrap();
    binary::wait_line(&log, "disconnected");
    // Its budget spent: the error is logged, and the instance goes on.
    binary::wait_line(&log, "onDisconnect");
    child.stop();
    binary::wait_line(&log, "bye");
}

/// A strict module (its `__index` raises for a name it lacks, a common Lua idiom) without
/// `onStart` and `onShutdown` starts, serves and stops without an error: a lookup that raises
/// means no such callback.
#[test]
fn a_strict_module_without_optional_callbacks_starts_and_stops_cleanly() {
    let app = r#"local impl = {}
function impl.onMessage(h, op, msg) ws:send(h, op, msg) return true end
return setmetatable({}, { __index = function(_, k)
  local v = impl[k]
  if v == nil then error("undefined " .. k) end
  return v
end })
"#;
    let (mut child, addr, log) = one_app_binary("strict", "strict", app);
    let mut ws = connect(addr, "/strict");
    send(&mut ws, "x");
    assert_eq!(text(&mut ws), "x");
    child.stop();
    let lines: Vec<String> = log.iter().collect();
    assert!(!lines.iter().any(|l| l.contains("undefined")), "{lines:?}");
}

/// `onStart` and `onShutdown` run once per instance: three instances, three of each, one per
/// instance_id, each line naming its instance.
#[test]
fn on_start_and_on_shutdown_run_once_per_instance() {
    let app = r#"local app = {}
app.onStart = function() print("onStart of", instance_id) end
app.onMessage = function(h, op, msg) return true end
app.onShutdown = function() print("onShutdown of", instance_id) end
return app
"#;
    let (mut child, _addr, log, mut lines) = apps_binary(
        binary::ONE_WORKER_WS_JSON,
        "once-per-instance",
        &[("thrice", app)],
        r#""thrice": { "instances": 3 }"#,
    );
    child.stop();
    // The process is gone: the log ends (the reader's channel closes) after its last line.
    lines.extend(log.iter());
    for what in ["onStart of", "onShutdown of"] {
        let mut seen: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.split_once(" [thrice#"))
            .filter(|(_, rest)| rest.contains(what))
            .map(|(_, rest)| rest)
            .collect();
        seen.sort();
        let want: Vec<String> = (0..3).map(|i| format!("{i}] {what}\t{i}")).collect();
        assert_eq!(seen, want, "{lines:#?}");
    }
}

/// After a redeploy, what the replaced version's instances still log is tagged
/// `[name#i retiring]`, told from the new version's lines under the same name: for a network
/// service (retired in the background) and a standalone one (handed over before its new
/// version starts).
#[test]
fn a_replaced_versions_last_lines_are_tagged_retiring() {
    let app = |v: &str| {
        format!(
            r#"local app = {{}}
app.onStart = function() print("onStart {v}") end
app.onMessage = function(h, op, msg) return true end
app.onShutdown = function() print("onShutdown {v}") end
return app
"#
        )
    };
    let solo = |v: &str| {
        format!(
            r#"local s = {{}}
s.init = function() print("onStart {v}") end
s.run = function() local n = nap:new() while not must_stop() do n:sleep(0.05) end end
s.onShutdown = function() print("onShutdown {v}") end
return s
"#
        )
    };
    let (mut child, _addr, log, _) = apps_binary(
        binary::ONE_WORKER_WS_JSON,
        "retiring-tag",
        &[("ver", &app("v1")), ("solo", &solo("v1"))],
        r#""ver": { "instances": 1 }, "solo": { "standalone": true, "preload": ["nap"] }"#,
    );
    let dir = std::env::temp_dir().join(format!("lapps-test-retiring-tag-{}", std::process::id()));
    for (name, src) in [("ver", app("v2")), ("solo", solo("v2"))] {
        let file = dir.join(format!("apps/{name}/{name}.lua"));
        assert!(file.exists(), "{file:?}");
        std::fs::write(&file, src).unwrap();
    }
    // SAFETY: kill with the pid of our own child and a valid signal number.
    assert_eq!(
        unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGHUP) },
        0
    );
    let mut lines = binary::lines_until(&log, "reload done");
    child.stop();
    lines.extend(log.iter());
    let tagged = |service: &str, what: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!(" [{service}#")) && l.ends_with(what))
            .and_then(|l| l.split_once(&format!(" [{service}#")))
            .map(|(_, rest)| rest.to_string())
    };
    for service in ["ver", "solo"] {
        assert_eq!(
            tagged(service, "onShutdown v1").as_deref(),
            Some("0 retiring] onShutdown v1"),
            "{lines:#?}"
        );
        // A network service's new version starts beside the running one: told apart while
        // it does; a standalone one starts once the old one has stopped.
        let starting = if service == "ver" {
            "0 new version] onStart v2"
        } else {
            "0] onStart v2"
        };
        assert_eq!(
            tagged(service, "onStart v2").as_deref(),
            Some(starting),
            "{lines:#?}"
        );
        assert_eq!(
            tagged(service, "onShutdown v2").as_deref(),
            Some("0] onShutdown v2"),
            "{lines:#?}"
        );
    }
}

/// `math.huge` is the longest wait an mqr receive can ask for, not "bad timeout" (on which a
/// loop meant to wait for ever spun until its instruction budget ended it): the receiver waits
/// and gets what comes, a message past its memory_limit's room as `nil, "too big"` with the
/// room in the log, then the next one. And a queue at its 64 MiB says so in the log.
#[test]
fn a_receiver_waiting_with_math_huge_gets_what_comes() {
    let apps = [
        (
            "poster",
            r#"local app = {}
local mib = string.rep("m", 1048576)
app.onMessage = function(h, op, msg)
  if msg == "pile" then
    local taken = 0
    while mqr:post("pile", mib) do taken = taken + 1 end
    ws:send(h, 1, tostring(taken))
  else
    ws:send(h, 1, tostring(mqr:post("big", string.rep("x", tonumber(msg)))))
  end
  return true
end
return app
"#,
        ),
        (
            "taker",
            r#"local app = {}
app.run = function()
  while true do
    local ok, m, err = pcall(mqr.receive, mqr, "big", math.huge)
    if not ok then print("taker raised: " .. tostring(m)) return end
    if m then print("taker took " .. #m) else print("taker: " .. tostring(err)) end
    if err == "stopped" then return end
  end
end
return app
"#,
        ),
    ];
    let (_child, addr, log, _) = apps_binary(
        binary::ONE_WORKER_WS_JSON,
        "mqr-room",
        &apps,
        r#""poster": { "request_target": "/poster", "preload": ["mqr"] },
           "taker": { "standalone": true, "preload": ["mqr"], "memory_limit": 8388608 }"#,
    );
    let mut ws = connect(addr, "/poster");
    let taken = |log: &std::sync::mpsc::Receiver<String>| {
        let line = binary::wait_line(log, "] taker");
        line.split_once("] taker").unwrap().1.to_string()
    };
    assert_eq!(ask(&mut ws, &(16 << 20).to_string()), "true");
    let line = binary::wait_line(&log, "leaves room for (");
    assert!(line.contains("from queue \"big\""), "{line}");
    assert_eq!(taken(&log), ": too big");
    assert_eq!(ask(&mut ws, "5"), "true");
    assert_eq!(taken(&log), " took 5");
    // A queue nobody reads takes 64 MiB, then refuses, with a warning naming it.
    assert_eq!(ask(&mut ws, "pile"), "64");
    let line = binary::wait_line(&log, "refused a message of");
    assert!(
        line.contains("WARN")
            && line.contains("mqr: queue pile refused a message of 1048576 bytes"),
        "{line}"
    );
}

/// A configuration directory whose one service, `flood`, runs `source` (the log tests' app).
fn flood_site(name: &str, source: &str) -> PathBuf {
    let dir = temp_dir(name);
    let apps = dir.join("apps");
    std::fs::create_dir_all(apps.join("flood")).unwrap();
    std::fs::write(apps.join("flood").join("flood.lua"), source).unwrap();
    write_config(
        &dir,
        binary::ONE_WORKER_WS_JSON,
        &format!(
            r#"{{ "directories": {{ "applications": "{}" }}, "services": {{ "flood": {{}} }} }}"#,
            apps.display()
        ),
    );
    dir
}

/// A log file that stops taking records (its disk is full) loses what it refuses; once it
/// takes them again, the line a refused write stopped in is ended and a warning counts the
/// lines lost, before the next record. A file size limit plays the full disk: writes past it
/// fail until the limit is raised: EFBIG, and SIGXFSZ, which the server must not die of (a
/// re-trial's `prlimit --fsize` killed it as its log reached the limit).
#[test]
fn a_log_file_that_refuses_records_gets_their_count_and_no_torn_line() {
    const LINE: usize = 1000;
    const PRINTS: usize = 200;
    const LIMIT: libc::rlim_t = 64 << 10;
    let dir = flood_site(
        "full-log",
        &format!(
            r#"local app = {{}}
app.onMessage = function(h, op, msg)
  if msg == "mark" then
    print("after the gap")
  elseif msg == "one" then
    print("one line")
  else
    for _ = 1, tonumber(msg) do print(string.rep("x", {LINE})) end
  end
  ws:send(h, 1, "done")
  return true
end
return app
"#
        ),
    );
    let log_path = dir.join("lapps.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap();
    let mut cmd = Command::new(LAPPS);
    cmd.arg("-c")
        .arg(&dir)
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(log);
    binary::limit_child(&mut cmd, libc::RLIMIT_FSIZE, LIMIT, libc::RLIM_INFINITY);
    let mut child = binary::Reaper(cmd.spawn().expect("spawn lapps"));
    let file_lines = || -> Vec<String> {
        let bytes = std::fs::read(&log_path).unwrap();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let until = |what: &str| -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = file_lines();
            if lines.iter().any(|l| l.contains(what)) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {what:?}: {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(10)); // polling interval of the file
        }
    };
    let start = until("listening on ");
    let addr: std::net::SocketAddr = start
        .iter()
        .find_map(|l| l.split("listening on ").nth(1))
        .and_then(|at| at.split_whitespace().next()?.parse().ok())
        .unwrap();
    let mut ws = connect(addr, "/flood");
    assert_eq!(ask(&mut ws, &PRINTS.to_string()), "done");
    // The log writer thread writes the prints after the reply may have left (a loaded CI
    // machine saw 40 KiB of the 64 when it looked at once).
    wait_for("the file at its limit", IO_TIMEOUT, || {
        std::fs::metadata(&log_path).unwrap().len() >= LIMIT
    });
    let full = std::fs::read(&log_path).unwrap();
    assert_eq!(full.len() as u64, LIMIT, "the file is at its limit");
    let stopped_mid_line = full.last() != Some(&b'\n');
    // Lines lost one at a time, each its own failed write (awaited in turn).
    const SINGLES: usize = 5;
    for _ in 0..SINGLES {
        assert_eq!(ask(&mut ws, "one"), "done");
    }
    // The disk has room again.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let pid = child.0.id() as libc::pid_t;
    // SAFETY: prlimit on the child this test started, with valid rlimit pointers.
    unsafe {
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut lim),
            0
        );
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()),
            0
        );
    }
    assert_eq!(ask(&mut ws, "mark"), "done");
    let lines = until("after the gap");
    let full_line = "x".repeat(LINE);
    let written = lines.iter().filter(|l| l.ends_with(&full_line)).count();
    let report = lines
        .iter()
        .position(|l| l.contains(" log lines lost: stderr refused them"))
        .unwrap_or_else(|| {
            let tails: Vec<_> = lines
                .iter()
                .rev()
                .take(3)
                .map(|l| &l[l.len().saturating_sub(80)..])
                .collect();
            panic!("no count of the lines lost; the last lines end: {tails:?}")
        });
    let lost: usize = lines[report]
        .split(" log lines lost")
        .next()
        .and_then(|h| h.rsplit('(').next()?.parse().ok())
        .unwrap();
    assert!(
        written < PRINTS && written + lost == PRINTS + SINGLES,
        "{written} prints written, {lost} lines counted lost of {PRINTS} and {SINGLES}"
    );
    // Whole lines from the gap on: the torn one ended where it stopped, the report, the mark.
    let before = &lines[report - 1];
    assert!(
        before.contains('x') && before.ends_with(&full_line) != stopped_mid_line,
        "the line before the report is the torn print ({stopped_mid_line}): {before:?}"
    );
    assert!(lines[report].contains("WARN"), "{}", lines[report]);
    assert!(lines[report + 1].ends_with("after the gap"), "{lines:?}");
    ws.close(None).unwrap();
    finish_close(ws);
    child.stop();
}

/// A stderr that stops taking the log (a journald that hangs) stops no thread: an app that
/// prints far more than the pipe and the log's queue hold goes on and answers, and the IO
/// worker answers a refusal it logs. Once stderr is read again, every record is either there
/// or counted in a warning, and the server stops cleanly.
#[test]
fn a_stalled_stderr_stops_no_thread_and_the_records_it_missed_are_counted() {
    use std::io::{BufRead, Write};
    const LINE: usize = 8000;
    const FLOOD_GUARD: Duration = Duration::from_secs(30);
    let dir = flood_site(
        "stalled-stderr",
        &format!(
            r#"local app = {{}}
app.onMessage = function(h, op, msg)
  local line = string.rep("x", {LINE})
  for _ = 1, tonumber(msg) do print(line) end
  ws:send(h, 1, "done")
  return true
end
return app
"#
        ),
    );
    let mut cmd = Command::new(LAPPS);
    cmd.arg("-c")
        .arg(&dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = binary::Reaper(cmd.spawn().expect("spawn lapps"));
    let mut log = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    let addr: std::net::SocketAddr = loop {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "no listening line");
        if let Some(at) = line.split("listening on ").nth(1) {
            break at.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Nobody reads stderr from here on: the pipe fills, then the queue (the writer may hold
    // as much again, taken before it blocked).
    let prints = 2 * lapps::log_writer::QUEUE_BYTES / LINE + 300;
    let mut ws = connect(addr, "/flood");
    // A guard, not a wait: about 10 MiB of prints, escaped and formatted by a debug build on
    // a busy machine, may take seconds.
    ws.get_ref().set_read_timeout(Some(FLOOD_GUARD)).unwrap();
    assert_eq!(ask(&mut ws, &prints.to_string()), "done", "the app went on");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(upgrade_request(addr, "/nope").as_bytes())
        .unwrap();
    let head = read_http_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 404 "), "{head:?}");

    // Read again: the prints written plus those counted as dropped are all of them.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in log.lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let (mut written, mut dropped) = (0, 0);
    let deadline = Instant::now() + FLOOD_GUARD;
    while written + dropped < prints {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{written} prints written, {dropped} counted dropped"));
        if l.ends_with(&"x".repeat(LINE)) {
            written += 1;
        } else if let Some(n) = l.split(" log records dropped").next().and_then(|h| {
            l.contains(" log records dropped")
                .then(|| h.rsplit('(').next()?.parse::<usize>().ok())?
        }) {
            dropped += n;
        }
    }
    assert!(
        dropped > 0 && written > 0,
        "{written} written, {dropped} dropped"
    );
    ws.close(None).unwrap();
    finish_close(ws);
    child.stop();
    assert!(
        rx.iter().any(|l| l.ends_with(" stopped")),
        "the last record is written before the exit"
    );
}

/// A connection that ends while its service is still busy with what it sent waits for the
/// replies at most `close_timeout_ms`; past it, the log says the rest are dropped (a trial's
/// redeploy cut replies off without a word, even at debug).
#[test]
fn replies_dropped_at_the_close_timeout_are_logged() {
    let app = spinning_app(300, true);
    let (_child, addr, log, _) = apps_binary(
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 }, "close_timeout_ms": 200 }"#,
        "dropped-replies",
        &[("slow", &app)],
        r#""slow": { "request_target": "/slow", "preload": ["time"], "instruction_budget": 0 }"#,
    );
    let mut ws = connect(addr, "/slow");
    // Its first reply says the service runs; the Close then comes while it is busy with the
    // next four (1.2 s, its replies posted once they are all handled).
    assert_eq!(ask(&mut ws, "0"), "0");
    for i in 1..5 {
        send(&mut ws, &i.to_string());
    }
    ws.close(None).unwrap();
    let line = binary::wait_line(&log, "had not handled all it sent");
    assert!(
        line.contains(" INFO ")
            && line.contains("with a Close: ")
            && line.contains(
                "service slow had not handled all it sent within 200 ms (close_timeout_ms); \
                 the replies it sends from now on are dropped"
            ),
        "{line}"
    );
}

/// The same for a LAppS connection whose app never sends a response it owes: the line says
/// responses were owed, which may be another service's to send (a trial's service had handled
/// everything; the standalone it handed the requests to had not answered).
#[test]
fn owed_responses_dropped_at_the_close_timeout_are_logged_as_such() {
    let app = "return { onMessage = function(h, kind, message) return true end }\n";
    let (_child, addr, log, _) = apps_binary(
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 }, "close_timeout_ms": 200 }"#,
        "dropped-responses",
        &[("keeps", app)],
        r#""keeps": { "request_target": "/keeps", "protocol": "LAppS" }"#,
    );
    let mut ws = connect(addr, "/keeps");
    let call = lapps::lapps_proto::cbor::encode(&lapps::lapps_proto::Value::Map(vec![
        (
            lapps::lapps_proto::Value::Text("lapps".into()),
            lapps::lapps_proto::Value::Int(1),
        ),
        (
            lapps::lapps_proto::Value::Text("method".into()),
            lapps::lapps_proto::Value::Text("never".into()),
        ),
    ]));
    ws.send(tungstenite::Message::binary(call)).unwrap();
    ws.close(None).unwrap();
    let line = binary::wait_line(&log, "had not handled all it sent");
    assert!(
        line.contains(
            "service keeps had not handled all it sent, or the responses it is owed were not \
             all sent (by it or a service it hands requests to), within 200 ms"
        ),
        "{line}"
    );
}

/// A peer that takes our last bytes slowly gets more close timeouts; when it stops taking
/// them, the line that says it was given up on counts the timeouts it was given (it said
/// only `close_timeout_ms`, as if one had passed, after several).
#[test]
fn a_close_given_up_on_after_extensions_counts_them() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let echo = r#"local app = {}
app.onMessage = function(h, op, msg) ws:send(h, op, msg) return true end
return app
"#;
    let (_child, addr, log, _) = apps_binary(
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 }, "close_timeout_ms": 2000 }"#,
        "close-extensions",
        &[("echo", echo)],
        r#""echo": { "request_target": "/echo" }"#,
    );
    let mut s = raw_upgraded(addr, "/echo");
    // A small window: most of the echo stays on the server's side until it is read.
    lapps::net::sys::setsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 16 << 10)
        .unwrap();
    let mut bytes = frame(true, 0, 0x2, &vec![7u8; 2 << 20], true);
    bytes.extend(frame(true, 0, 0x8, &1000u16.to_be_bytes(), true));
    s.write_all(&bytes).unwrap();
    // The stimulus: a read (of what the 16 KiB buffer has) every 250 ms, an eighth of a close
    // timeout, for three seconds, then nothing: the server extends its wait while this reads,
    // not after (a stall of this thread under 1.75 s still leaves it taking bytes in time).
    let mut chunk = vec![0u8; 64 << 10];
    for _ in 0..12 {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "the echo is still coming");
        std::thread::sleep(Duration::from_millis(250));
    }
    let line = binary::wait_line(&log, "the peer did not take our last bytes");
    let times: u32 = line
        .split("(extended ")
        .nth(1)
        .and_then(|rest| {
            rest.strip_suffix(
                " while it took our bytes slowly) (reset: bytes of ours still unacknowledged)",
            )
        })
        .and_then(|n| match n {
            "once" => Some(1),
            n => n.strip_suffix(" times")?.parse().ok(),
        })
        .unwrap_or_else(|| panic!("no count of extensions: {line}"));
    assert!(
        (1..20).contains(&times) && line.contains("within close_timeout_ms (extended "),
        "{line}"
    );
}

/// SIGUSR1 logs the status report, one `status:` line each: the process, the IO workers'
/// connections, each Lua service with the connections it holds and what its Lua states take,
/// the bcast channels and the mqr queues. The server goes on serving.
#[test]
fn sigusr1_logs_the_connections_services_channels_and_queues() {
    let echo = r#"local app = {}
app.onMessage = function(h, op, msg) ws:send(h, op, msg) return true end
return app
"#;
    let keeper = r#"local app = {}
app.init = function()
  assert(bcast:create(5))
  local q = assert(mqr:create("status_q", 2))
  assert(q:post("one"))
  assert(q:post("two"))
  assert(q:post("three") == nil)
  kept = string.rep("i", 4 * 1024 * 1024)
end
app.run = function()
  -- Taken after the start's figure: seen as the nap begins, not once it is over.
  grown = string.rep("r", 3 * 1024 * 1024)
  local n = nap:new()
  n:sleep(1e9)
end
return app
"#;
    let (child, addr, log, _) = apps_binary(
        &one_worker_ws(r#""max_connections": 100"#),
        "status",
        &[
            ("statusecho", echo),
            ("statuskeep", keeper),
            ("statusidle", echo),
        ],
        r#""statusecho": { "instances": 2, "memory_limit": 8388608 },
           "statuskeep": { "standalone": true, "preload": ["bcast", "mqr", "nap"] },
           "statusidle": { "auto_start": false }"#,
    );
    // Each connection answered once: its open has reached the service.
    let mut clients: Vec<_> = (0..3).map(|_| connect(addr, "/statusecho")).collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(ask(ws, &format!("m{i}")), format!("m{i}"));
    }
    // SAFETY: kill(2) on our own child process.
    assert_eq!(
        unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGUSR1) },
        0
    );
    let lines = binary::lines_until(&log, "status: bcast");
    let status: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once("status: ").map(|(_, s)| s))
        .collect();
    // After the totals, a line for each queue that holds messages or refused a post.
    let queue = binary::wait_line(&log, "status: mqr");
    assert!(
        queue.ends_with(
            "status: mqr queue status_q: 2 message(s) of 2 slot(s), 6 bytes; 1 post(s) refused \
             as full so far"
        ),
        "{queue}"
    );
    assert!(
        status[0].starts_with("serving for ") && status[0].contains(" descriptors (limit "),
        "{status:?}"
    );
    assert!(
        status.contains(&"3 connection(s) on 1 IO worker(s) (3); 0 refused one(s) lingering after their answer; 0 bytes queued to send; 0 WebSocket connection(s) ended without a close handshake since the start (a reset, an error or an end of TCP while open)"),
        "{status:?}"
    );
    // What the two states take: each a plain state with a small app, under a megabyte.
    let echo_line = status
        .iter()
        .find(|l| l.starts_with("service statusecho"))
        .unwrap_or_else(|| panic!("{status:?}"));
    let memory = echo_line
        .strip_prefix("service statusecho: 2 instance(s), Raw at /statusecho: 3 connection(s), 0 close(s) not yet handled, 0 message(s) (0 bytes) waiting for its instances; Lua memory ")
        .and_then(|m| m.strip_suffix(" MiB in one instance (memory_limit 8.0 MiB)"))
        .and_then(|m| m.split_once(" MiB, at most "))
        .unwrap_or_else(|| panic!("{echo_line}"));
    let (total, most) = (mib(memory.0), mib(memory.1));
    assert!(
        0.0 < most && most < 1.0 && most <= total && total <= 2.0 * most,
        "{echo_line}"
    );
    // The standalone state: 4 MiB kept by init(), 3 more by run(), seen at a polling point.
    wait_for("run()'s memory in the report", IO_TIMEOUT, || {
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGUSR1) },
            0
        );
        let line = binary::lines_until(&log, "status: service statuskeep");
        let line = line.last().map_or("", String::as_str);
        let m = line
            .split_once("status: service statuskeep: 1 instance(s), standalone; Lua memory ")
            .and_then(|(_, m)| m.strip_suffix(" MiB (memory_limit 64.0 MiB)"))
            .map_or_else(|| panic!("{line}"), mib);
        assert!((4.0..16.0).contains(&m), "{line}");
        m >= 7.0
    });
    // A configured service that does not run is named too.
    assert!(
        status.contains(&"service statusidle: not running, auto_start is false"),
        "{status:?}"
    );
    assert!(
        status.contains(&"bcast: 1 channel(s), 0 subscription(s); mqr: 1 queue(s), 2 message(s) not yet received, 6 bytes in the queues"),
        "{status:?}"
    );
    // Still serving, and the report follows what changed.
    drop(clients.pop());
    assert_eq!(ask(&mut clients[0], "again"), "again");
    wait_for("the closed connection to be gone", IO_TIMEOUT, || {
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGUSR1) },
            0
        );
        let report = binary::lines_until(&log, "status: service statusecho");
        let gone = report
            .last()
            .is_some_and(|l| l.contains(": 2 connection(s)"));
        // Dropped without a Close: counted as such once it is gone.
        gone && report.iter().any(|l| {
            l.contains("status: 2 connection(s) on 1 IO worker(s) (2); ")
                && l.contains(
                    "; 1 WebSocket connection(s) ended without a close handshake since the start",
                )
        })
    });
    // A reset is counted too.
    let mut reset = raw_upgraded(addr, "/statusecho");
    std::io::Write::write_all(&mut reset, &frame(true, 0, 0x1, b"r", true)).unwrap();
    assert_eq!(read_frame(&mut reset).expect("the echo").payload, b"r");
    close_with_reset(reset);
    wait_for("the reset to be counted", IO_TIMEOUT, || {
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGUSR1) },
            0
        );
        binary::lines_until(&log, "status: service statusecho")
            .iter()
            .any(|l| {
                l.contains(
                    "; 2 WebSocket connection(s) ended without a close handshake since the start",
                )
            })
    });
    // Not a connection never upgraded (a TCP health check); and once only one that ends TCP
    // after a message, is answered, and then resets.
    drop(std::net::TcpStream::connect(addr).unwrap());
    let mut half = raw_upgraded(addr, "/statusecho");
    std::io::Write::write_all(&mut half, &frame(true, 0, 0x1, b"h", true)).unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_frame(&mut half).expect("the echo").payload, b"h");
    close_with_reset(half);
    let mut settled = String::new();
    wait_for("both to be gone", IO_TIMEOUT, || {
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGUSR1) },
            0
        );
        let report = binary::lines_until(&log, "status: service statusecho");
        match report
            .iter()
            .find(|l| l.contains("status: 2 connection(s) on 1 IO worker(s) (2); "))
        {
            Some(l) => {
                settled = l.clone();
                true
            }
            None => false,
        }
    });
    assert!(
        settled.contains("; 3 WebSocket connection(s) ended without a close handshake"),
        "{settled}"
    );
}

/// A status report's figure in MiB (`1.5` of `1.5 MiB`).
fn mib(figure: &str) -> f64 {
    figure
        .parse()
        .unwrap_or_else(|_| panic!("not a figure: {figure:?}"))
}

/// Whether the process's main thread has SIGUSR1 blocked (`SigBlk` of /proc/PID/status).
fn sigusr1_blocked(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask >> (libc::SIGUSR1 - 1) & 1 == 1)
}

/// A callback that does not return (a loop with `"instruction_budget": 0`) holds its instance
/// and spins a core: the status report names the instance busy with one batch, the server's
/// once-a-second watch warns of it at 10 s (with the budget's hint), and the instance says when
/// the batch is done. A version a reload replaces meanwhile is in the report as retiring, where
/// nothing named it before (the trial saw a core spin for 30 s without a word).
#[test]
fn an_instance_busy_with_one_batch_is_reported_warned_of_and_its_end_told() {
    let spin = |v: &str| {
        format!(
            r#"local app = {{}}
app.onMessage = function(h, op, msg)
  local till = time.monotonic() + tonumber(msg)
  while time.monotonic() < till do end
  ws:send(h, op, "{v}")
  return true
end
return app
"#
        )
    };
    let (child, addr, log, _) = apps_binary(
        binary::ONE_WORKER_WS_JSON,
        "busy",
        &[("spin", &spin("v1"))],
        r#""spin": { "instances": 1, "instruction_budget": 0, "preload": ["time"] }"#,
    );
    let pid = child.0.id() as libc::pid_t;
    let mut ws = connect(addr, "/spin");
    ws.send(tungstenite::Message::text("12000")).unwrap();
    ws.flush().unwrap();
    let status_with = |what: &str| {
        let mut report = Vec::new();
        wait_for(&format!("a status line with {what:?}"), IO_TIMEOUT, || {
            // SAFETY: kill(2) on our own child process.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
            report = binary::lines_until(&log, "status: bcast");
            report.iter().any(|l| l.contains(what))
        });
        report
    };
    status_with("service spin: 1 instance(s), Raw at /spin: 1 connection(s), 0 close(s) not yet handled, 1 message(s) (5 bytes) waiting for its instances; instance 0 busy with one batch for ");
    let dir = std::env::temp_dir().join(format!("lapps-test-busy-{}", std::process::id()));
    std::fs::write(dir.join("apps/spin/spin.lua"), spin("v2")).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    binary::wait_line(&log, "reload done");
    let report = status_with("service spin (retiring version): 1 instance(s), Raw at /spin: ");
    let retiring = report
        .iter()
        .find(|l| l.contains("(retiring version)"))
        .unwrap();
    assert!(
        retiring.contains("; instance 0 busy with one batch for "),
        "{report:#?}"
    );
    let warned = binary::wait_line(&log, "busy with one batch of messages for");
    assert!(
        warned.contains("[spin#0 retiring] busy with one batch of messages for 1")
            && warned.contains(
                "(a callback that does not return? nothing stops one: its instruction_budget is 0)"
            ),
        "{warned}"
    );
    let done = binary::wait_line(&log, "busy no longer");
    assert!(
        done.contains(
            "[spin#0 retiring] busy no longer: the batch of messages that held it is done after 1"
        ),
        "{done}"
    );
}

/// The status report is written whatever `LAPPS_LOG` says: it was asked for. At warn the
/// info lines ("listening on") are left out; the report is not.
#[test]
fn sigusr1_reports_at_the_warn_level_too() {
    let dir = temp_dir("status-warn");
    std::fs::create_dir_all(dir.join("apps/quiet")).unwrap();
    std::fs::write(
        dir.join("apps/quiet/quiet.lua"),
        "return { onMessage = function() return true end }\n",
    )
    .unwrap();
    write_config(
        &dir,
        binary::ONE_WORKER_WS_JSON,
        &format!(
            r#"{{ "directories": {{ "applications": "{}" }}, "services": {{ "quiet": {{}} }} }}"#,
            dir.join("apps").display()
        ),
    );
    let (mut child, log) = binary::spawn_binary_starting(&dir, |cmd| {
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("LAPPS_LOG", "warn");
    });
    let pid = child.0.id();
    // Until the main thread blocks it, SIGUSR1's default action would end the process. Once
    // blocked it waits, pending, for the main loop, which runs once the services do.
    wait_for("SIGUSR1 to be blocked", IO_TIMEOUT, || {
        // A process that ended never blocks it: say how it ended, with what it logged.
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "lapps ended ({status}) before blocking SIGUSR1: {:?}",
                log.try_iter().collect::<Vec<_>>()
            );
        }
        sigusr1_blocked(pid)
    });
    // SAFETY: kill(2) on our own child process.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR1) }, 0);
    let lines = binary::lines_until(&log, "status: bcast");
    assert!(
        lines.iter().any(|l| l.contains("status: serving for ")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("status: service quiet: 1 instance(s)")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("listening on")),
        "the server did not log at warn: {lines:?}"
    );
}

/// A message that does not fit in a RAW service's state even after a full collection closes
/// its connection with 1011, and the line says so, with its size: not "onMessage failed" (a
/// trial's operator read that as an app bug), since the message never reached onMessage.
#[test]
fn a_message_too_big_for_the_state_is_logged_as_such() {
    use std::io::Write;
    let app = "local app = {}\n\
               app.onMessage = function(h, op, msg) ws:send(h, op, 'got ' .. #msg) return true end\n\
               return app\n";
    let (_child, addr, log, _) = apps_binary(
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 } }"#,
        "no-room",
        &[("roomy", app)],
        r#""roomy": { "request_target": "/roomy", "memory_limit": 2097152 }"#,
    );
    let mut s = raw_upgraded(addr, "/roomy");
    s.write_all(&frame(true, 0, 0x2, &vec![5u8; 3_000_000], true))
        .unwrap();
    let line = binary::wait_line(&log, "closing 0x");
    assert!(
        line.contains("with 1011: its message of 3000000 bytes does not fit in the state")
            && line.contains("memory_limit 2097152 bytes); onMessage did not run"),
        "{line}"
    );
}

/// A message refused for max_inbound_assembly_bytes: the line gives its size beside the
/// limit (its last frame had begun, so the size is the whole message's), the code 1013.
#[test]
fn a_message_over_the_assembly_allowance_is_logged_with_its_size() {
    use std::io::Write;
    let app = "local app = {}\n\
               app.onMessage = function(h, op, msg) return true end\n\
               return app\n";
    let (_child, addr, log, _) = apps_binary(
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 },
             "max_inbound_assembly_bytes": 100000 }"#,
        "over-assembly",
        &[("quiet", app)],
        r#""quiet": { "request_target": "/quiet" }"#,
    );
    let mut s = raw_upgraded(addr, "/quiet");
    s.write_all(&frame(false, 0, 0x2, &[1u8; 60_000], true))
        .unwrap();
    s.write_all(&frame(true, 0, 0x0, &[2u8; 90_000], true))
        .unwrap();
    let line = binary::wait_line(&log, "closing ");
    assert!(
        line.contains(
            "its message (150000 bytes at least) needs more than \
                       max_inbound_assembly_bytes (100000 bytes)"
        ) && line.ends_with("close code 1013"),
        "{line}"
    );
}
