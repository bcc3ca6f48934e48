//! The real `lapps` binary as a child process, for what only a whole process shows (signals,
//! resource limits): started on a config directory, its log lines on a channel.
#![allow(dead_code)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const LOG_WAIT: Duration = Duration::from_secs(10);

/// The ws.json of most binary tests: one IO worker on a free loopback port.
pub const ONE_WORKER_WS_JSON: &str =
    r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 } }"#;

/// Kills the server if the test fails before it stopped it.
pub struct Reaper(pub Child);

impl Reaper {
    /// Waits up to `guard` for the process to exit; past it the test fails (and the drop kills
    /// the process).
    pub fn wait_exit(&mut self, guard: Duration) -> ExitStatus {
        let deadline = Instant::now() + guard;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait on lapps") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lapps still running {guard:?} later"
            );
            std::thread::sleep(Duration::from_millis(10)); // polling interval of the exit wait
        }
    }

    /// SIGTERM, then the clean exit (status 0) within 15 s.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on the child this Reaper holds.
        assert_eq!(
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) },
            0
        );
        let status = self.wait_exit(Duration::from_secs(15));
        assert!(status.success(), "lapps stopped with {status:?}");
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `lapps -c dir` (`configure` may adjust the command first); returns the process, the
/// address it logged as listening on, and its stderr lines.
pub fn spawn_binary(
    dir: &Path,
    configure: impl FnOnce(&mut Command),
) -> (Reaper, SocketAddr, Receiver<String>) {
    let (child, addr, rx, _) = spawn_binary_logging(dir, configure);
    (child, addr, rx)
}

/// [`spawn_binary`], also returning the log lines up to the one saying where it listens.
pub fn spawn_binary_logging(
    dir: &Path,
    configure: impl FnOnce(&mut Command),
) -> (Reaper, SocketAddr, Receiver<String>, Vec<String>) {
    let (child, rx) = spawn_binary_starting(dir, configure);
    let start = lines_until(&rx, "listening on ");
    let addr = start
        .last()
        .unwrap()
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (child, addr, rx, start)
}

/// [`spawn_binary`] without waiting for the start to end: the process and its stderr lines.
pub fn spawn_binary_starting(
    dir: &Path,
    configure: impl FnOnce(&mut Command),
) -> (Reaper, Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lapps"));
    cmd.arg("-c")
        .arg(dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    configure(&mut cmd);
    // In the Reaper at once: whatever fails from here on, the process does not outlive the test.
    let mut child = Reaper(cmd.spawn().expect("spawn lapps"));
    let stderr = child.0.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The first log line containing `what` (bounded wait).
pub fn wait_line(rx: &Receiver<String>, what: &str) -> String {
    lines_until(rx, what).pop().unwrap()
}

/// Every log line up to and including the first one containing `what` (bounded wait).
pub fn lines_until(rx: &Receiver<String>, what: &str) -> Vec<String> {
    let deadline = Instant::now() + LOG_WAIT;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(what);
                lines.push(line);
                if found {
                    return lines;
                }
            }
            Err(_) => panic!("no log line containing {what:?}"),
        }
    }
}

/// How long a command that only checks and exits (`--check-config`, `--version`) may take.
pub const ONE_SHOT_GUARD: Duration = Duration::from_secs(30);

/// Runs `cmd` to completion like `Command::output`, but fails the test (and kills the process)
/// if it is still running after `guard`: a hung check must not hang the suite.
pub fn output_within(cmd: &mut Command, guard: Duration) -> std::process::Output {
    use std::io::Read;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Reaper(cmd.spawn().expect("spawn lapps"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.0.stdout.take().expect("stdout piped")));
    let stderr = drain(Box::new(child.0.stderr.take().expect("stderr piped")));
    let status = child.wait_exit(guard);
    std::process::Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Whether every thread of process `pid` is stopped (state T in /proc).
pub fn all_stopped(pid: libc::pid_t) -> bool {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks.map(|t| t.unwrap().path().join("stat")).all(|stat| {
        // The state follows the command name's closing parenthesis.
        std::fs::read_to_string(stat)
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
            .unwrap_or(true)
    })
}

/// Starts the child with `resource` (an `RLIMIT_*`) at `soft` and `hard`, each at most the
/// current hard limit (a child may lower its hard limit, never raise it).
pub fn limit_child(
    cmd: &mut Command,
    resource: libc::__rlimit_resource_t,
    soft: libc::rlim_t,
    hard: libc::rlim_t,
) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getrlimit and setrlimit are async-signal-safe and touch only the child being
    // started.
    unsafe {
        cmd.pre_exec(move || {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(resource, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_max = hard.min(lim.rlim_max);
            lim.rlim_cur = soft.min(lim.rlim_max);
            if libc::setrlimit(resource, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
