//! `lapps --reload PID`: a reload whose requester hears when it is done, so that `systemctl
//! reload lapps` (the unit's `ExecReload=`) returns once the reload is over, and fails when it
//! failed, rather than as soon as a SIGHUP is sent (Debian 12's systemd 252 has no
//! `Type=notify-reload`).
//!
//! The requester sends [`request_signal`], a realtime signal: unlike SIGHUP, requests queue
//! and each carries its sender's pid. The server blocks it with the other signals it takes,
//! reloads as for SIGHUP, and answers with [`done_signal`] or [`failed_signal`] through a pidfd
//! opened as the request arrived, so that a pid reused meanwhile never gets the answer. A
//! realtime signal's default action ends a process: the server gives the request a handler (so
//! it never does, even should it escape the wait), and the requester sends one only to a
//! process that has one (its `SigCgt` in /proc/PID/status), that is, a lapps server.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// What a requester waits for at most: below the 90 s systemd gives an `ExecReload=` by default.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(80);

/// Asks for a reload with an answer.
pub fn request_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

/// The answer: the reload is done, every part of it applied.
pub fn done_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

/// The answer: the reload is done, but some part failed (the server's log says which).
pub fn failed_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

/// A pidfd for `pid` (pidfd_open(2)).
fn pidfd_open(pid: libc::pid_t) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor pidfd_open just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Sends `signo` to the process `pidfd` refers to (pidfd_send_signal(2), as kill(2) does).
fn pidfd_send_signal(pidfd: &OwnedFd, signo: libc::c_int) -> std::io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, no siginfo (as kill(2)), no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signo,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The sender of a reload request, waiting for its answer.
pub struct Requester {
    pid: libc::pid_t,
    pidfd: OwnedFd,
}

impl Requester {
    /// The process that sent a request: None when it is gone already, or when it is this
    /// process (an answer sent to itself would end the server).
    pub fn open(pid: libc::pid_t) -> Option<Requester> {
        if pid <= 0 || pid == std::process::id() as libc::pid_t {
            return None;
        }
        let pidfd = pidfd_open(pid).ok()?;
        Some(Requester { pid, pidfd })
    }

    /// Its process id.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Tells the requester how the reload went.
    pub fn answer(self, ok: bool) {
        let signo = if ok { done_signal() } else { failed_signal() };
        if let Err(e) = pidfd_send_signal(&self.pidfd, signo) {
            crate::debug!(
                "reload requester {} did not wait for its answer: {e}",
                self.pid
            );
        }
    }
}

/// Asks the lapps server `pid` for a reload and waits up to `timeout` for its answer: `Ok(true)`
/// when it is done, `Ok(false)` when it failed in part (the server's log says how); `Err` when
/// no request could be made or no answer came.
pub fn request(pid: libc::pid_t, timeout: Duration) -> Result<bool, String> {
    // Blocked before anything is sent, so that no answer is lost: sigtimedwait takes it.
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let answers = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, done_signal());
        libc::sigaddset(&mut set, failed_signal());
        set
    };
    // SAFETY: `answers` is initialised; this changes the calling thread's mask only.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &answers, std::ptr::null_mut()) };
    let pidfd = pidfd_open(pid).map_err(|e| format!("no process {pid}: {e}"))?;
    let status = proc_status(pid)?;
    if !catches(&status, request_signal()) {
        return Err(format!(
            "process {pid} does not take reload requests (not a lapps server, or one older \
             than this one): `kill -HUP {pid}` reloads it without an answer"
        ));
    }
    become_owner_of(&status)?;
    pidfd_send_signal(&pidfd, request_signal())
        .map_err(|e| format!("cannot signal process {pid}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no answer from process {pid} within {} s: the reload may still be running \
                 (its log ends it with a `reload done:` line)",
                timeout.as_secs()
            ));
        }
        let wait = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: siginfo_t is plain data that sigtimedwait fills before it is read.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid set, out pointer and timeout.
        let signo = unsafe { libc::sigtimedwait(&answers, &mut info, &wait) };
        // SAFETY: for a signal sent with kill(2) or pidfd_send_signal(2), the sender's pid is
        // the siginfo's si_pid.
        if signo > 0 && unsafe { info.si_pid() } == pid {
            return Ok(signo == done_signal());
        }
        // Timed out (the loop says so), interrupted, or another process's signal: wait on.
    }
}

/// /proc/PID/status.
fn proc_status(pid: libc::pid_t) -> Result<String, String> {
    let path = format!("/proc/{pid}/status");
    std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))
}

/// The first number of a /proc/PID/status line (`SigCgt:` in hex, `Uid:` / `Gid:` the real
/// id in decimal).
fn status_field(status: &str, name: &str, radix: u32) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix(name))?;
    u64::from_str_radix(line.split_whitespace().next()?, radix).ok()
}

/// Whether the process has a handler for `signo` (`SigCgt`: dispositions are the process's;
/// masks are per thread, and a thread in sigwaitinfo shows the signals it waits for unblocked).
fn catches(status: &str, signo: libc::c_int) -> bool {
    let caught = status_field(status, "SigCgt:", 16).unwrap_or(0);
    (1..=64).contains(&signo) && caught >> (signo - 1) & 1 == 1
}

/// Run as root for a server that is not (an operator's `sudo lapps --reload PID`), takes the
/// server's user and group: a process may signal only processes of its own user, and the
/// answer must be allowed to come back.
fn become_owner_of(status: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let (Some(uid), Some(gid)) = (
        status_field(status, "Uid:", 10),
        status_field(status, "Gid:", 10),
    ) else {
        return Err("no Uid/Gid in the server's /proc status".into());
    };
    if uid == 0 {
        return Ok(());
    }
    // SAFETY: plain calls dropping privileges, groups first (setuid would forbid them after).
    let dropped = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(gid as libc::gid_t) == 0
            && libc::setuid(uid as libc::uid_t) == 0
    };
    if !dropped {
        return Err(format!(
            "cannot take the server's user {uid} (for its answer to reach us): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
