//! The `lapps` binary as an operator runs it: configuration checks, start-up, SIGTERM.
mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LAPPS: &str = env!("CARGO_BIN_EXE_lapps");

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lapps-test-{name}-{}", std::process::id()));
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

/// Starts the binary and returns it with the address it reports listening on. The caller
/// waits for the child (clippy cannot see through the return); a failed start reaps it here.
#[allow(clippy::zombie_processes)]
fn spawn(dir: &Path) -> (Child, std::net::SocketAddr, mpsc::Receiver<String>) {
    let mut child = Command::new(LAPPS)
        .arg("-c")
        .arg(dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn lapps");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lapps did not log 'listening on'");
        };
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
            return (child, addr, rx);
        }
    }
}

fn wait_exit(child: &mut Child, guard: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + guard;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10)); // polling interval
    }
}

#[test]
fn sigterm_closes_connections_with_1001_and_exits_within_5_seconds() {
    let dir = temp_dir("sigterm");
    write_config(
        &dir,
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 2 } }"#,
        BUILTIN_ONLY,
    );
    let (mut child, addr, _log) = spawn(&dir);
    let mut socks: Vec<_> = (0..5).map(|_| raw_upgraded(addr, "/echo")).collect();
    let t = Instant::now();
    // SAFETY: kill with a valid pid of our own child and a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for s in socks.iter_mut() {
        assert_eq!(expect_close(s), Some(1001));
    }
    drop(socks);
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("lapps exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t.elapsed()
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
    let out = Command::new(LAPPS)
        .arg("-c")
        .arg(&dir)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ws.json") && err.contains("port"), "{err}");
    assert!(err.contains("max_conections"), "{err}");
}

#[test]
fn check_config_accepts_the_repo_config() {
    let out = Command::new(LAPPS)
        .args(["-c", "etc/lapps", "--check-config"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn version_names_the_simd_variant() {
    let out = Command::new(LAPPS).arg("--version").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("simd build: auto")
            || s.contains("simd build: avx2")
            || s.contains("simd build: ssse3"),
        "{s}"
    );
}
