//! `lapps --reload PID`: a reload whose requester hears when it is done, so that `systemctl
//! reload lapps` (the unit's `ExecReload=`) returns once the reload is over, and fails when it
//! failed, rather than as soon as a SIGHUP is sent (Debian 12's systemd 252 has no
//! `Type=notify-reload`).
//!
//! The requester sends [`request_signal`], a realtime signal: unlike SIGHUP, requests queue
//! and each carries its sender's pid, and it is queued as sigqueue(3) does (`SI_QUEUE`) with
//! [`REQUEST_VALUE`]. The server takes it with the other signals it waits for and reloads as
//! for SIGHUP; it answers [`done_signal`] or [`failed_signal`] only to such a request (a plain
//! `kill -s RTMIN+1` from a shell, or `systemctl kill` whose sender is PID 1, reloads without
//! an answer: those answers' default action would end the sender, and systemd reads RTMIN+2 and
//! +3 as commands), through a pidfd opened as soon as the request is taken. A realtime signal's
//! default action ends a process: each side gives the signals it waits for a handler that does
//! nothing (so they never do, even should one escape the wait), and sends only to a process
//! that has those handlers (its `SigCgt` in /proc/PID/status): the requester to a lapps
//! server, the server to a requester. (The kernel does not check the pid a queued signal
//! claims to come from; a process of the server's user could name another one, which is then
//! answered only if it waits for these signals.)

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// What a requester waits for at most. Under systemd the unit's own reload timeout (90 s by
/// default) ends it first, unless the server extends it (EXTEND_TIMEOUT_USEC as each changed
/// service starts: a redeploy of several slow-starting services may legitimately take
/// minutes, which a fixed 80 s here reported as a failed reload while it went on to succeed);
/// run by hand, a bound on a server that never answers.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The value a request carries ("lapp"): what tells it from the same signal sent by hand.
pub const REQUEST_VALUE: usize = 0x6c61_7070;

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

/// Descriptors kept open (on /dev/null) for answering a requester when every other one is
/// taken: its pidfd and the read of its /proc status need two. Without them, a `lapps
/// --reload` while a server had no descriptor free (clients filling the limit) waited out its
/// whole timeout: 30 minutes, or the unit's reload timeout.
static SPARES: std::sync::Mutex<Vec<OwnedFd>> = std::sync::Mutex::new(Vec::new());
const SPARE_COUNT: usize = 2;

/// Opens the spare descriptors, as many as are missing and can be opened (the server calls it
/// at start-up; taken back after each answer).
pub fn keep_spare_descriptors() {
    let mut spares = SPARES.lock().unwrap_or_else(|e| e.into_inner());
    while spares.len() < SPARE_COUNT {
        match std::fs::File::open("/dev/null") {
            Ok(f) => spares.push(f.into()),
            Err(_) => break,
        }
    }
}

/// A pidfd for the requester `pid`, and its /proc status. With no descriptor free, the spares
/// are given up for it (another thread may take them first: then it fails as before).
fn open_requester(pid: libc::pid_t) -> std::io::Result<(OwnedFd, String)> {
    let open = || -> std::io::Result<(OwnedFd, String)> {
        let pidfd = pidfd_open(pid)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        Ok((pidfd, status))
    };
    let opened = open().or_else(|e| {
        if e.raw_os_error() != Some(libc::EMFILE) {
            return Err(e);
        }
        SPARES.lock().unwrap_or_else(|e| e.into_inner()).clear();
        open()
    });
    // What is free again (the status's descriptor; the pidfd's once the answer is sent).
    keep_spare_descriptors();
    opened
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

/// A siginfo as sigqueue(3) fills it, in the 64-bit Linux layout: three ints and padding,
/// then the `_rt` member of the union (pid, uid, sigval). Public for the tests, which forge
/// one with rt_sigqueueinfo(2).
#[repr(C)]
pub struct QueuedSiginfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    _pad: libc::c_int,
    pid: libc::pid_t,
    uid: libc::uid_t,
    value: usize,
    _rest: [u8; 96],
}

const _: () =
    assert!(std::mem::size_of::<QueuedSiginfo>() == std::mem::size_of::<libc::siginfo_t>());

impl QueuedSiginfo {
    /// `signo` queued with `value`, claiming to come from process `pid` (and this user).
    pub fn new(signo: libc::c_int, pid: libc::pid_t, value: usize) -> QueuedSiginfo {
        QueuedSiginfo {
            signo,
            errno: 0,
            code: libc::SI_QUEUE,
            _pad: 0,
            pid,
            // SAFETY: getuid has no preconditions.
            uid: unsafe { libc::getuid() },
            value,
            _rest: [0; 96],
        }
    }
}

/// Sends `signo` to the process `pidfd` refers to (pidfd_send_signal(2)): as kill(2) does, or
/// queued with `value` as sigqueue(3) does.
fn pidfd_send_signal(
    pidfd: &OwnedFd,
    signo: libc::c_int,
    value: Option<usize>,
) -> std::io::Result<()> {
    let queued =
        value.map(|value| QueuedSiginfo::new(signo, std::process::id() as libc::pid_t, value));
    let info = queued.as_ref().map_or(std::ptr::null(), |q| {
        (q as *const QueuedSiginfo).cast::<libc::siginfo_t>()
    });
    // SAFETY: a valid pidfd, a signal number, no siginfo (as kill(2)) or one of siginfo_t's
    // size (checked above) laid out as the kernel reads an SI_QUEUE one, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signo,
            info,
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The sender of a reload request, waiting for its answer; told the reload failed if it is
/// dropped unanswered (a reload that panicked).
pub struct Requester {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
}

impl Requester {
    /// Who sent the request `info` describes, if it waits for an answer: queued with
    /// [`REQUEST_VALUE`] (as `lapps --reload` does), by a process other than PID 1 and this one.
    /// None otherwise: a reload without an answer.
    pub fn of(info: &libc::siginfo_t) -> Option<Requester> {
        if info.si_code != libc::SI_QUEUE {
            return None;
        }
        // SAFETY: an SI_QUEUE siginfo's union holds the `_rt` member: pid, uid, sigval.
        let (pid, value) = unsafe { (info.si_pid(), info.si_value().sival_ptr as usize) };
        if value != REQUEST_VALUE || pid <= 1 || pid == std::process::id() as libc::pid_t {
            return None;
        }
        let (pidfd, status) = match open_requester(pid) {
            Ok(opened) => opened,
            Err(e) => {
                crate::warn!("cannot answer the reload requester {pid} ({e}): it will time out");
                return None;
            }
        };
        // Only a process that waits for the answers gets one (their default action would end
        // it): `lapps --reload` handles both.
        let waits = catches(&status, done_signal()) && catches(&status, failed_signal());
        if !waits {
            crate::warn!(
                "reload request naming process {pid}, which does not wait for an answer: \
                 reloading without one"
            );
            return None;
        }
        Some(Requester {
            pid,
            pidfd: Some(pidfd),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Tells the requester how the reload went.
    pub fn answer(mut self, ok: bool) {
        self.send(ok);
    }

    fn send(&mut self, ok: bool) {
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        let signo = if ok { done_signal() } else { failed_signal() };
        if let Err(e) = pidfd_send_signal(&pidfd, signo, None) {
            crate::debug!(
                "reload requester {} did not wait for its answer: {e}",
                self.pid
            );
        }
        drop(pidfd);
        keep_spare_descriptors();
    }
}

impl Drop for Requester {
    fn drop(&mut self) {
        self.send(false);
    }
}

/// Whether process `pid` writes its stderr to the journal: systemd put `JOURNAL_STREAM`
/// (the device and inode of the stream it connected) in its environment, and its descriptor
/// 2 is still that stream (a shell started under systemd passes the variable on to a server
/// whose stderr it redirects to a file). For the hint where to read why a reload failed;
/// false when the process's environment or descriptors cannot be read (call it before
/// [`request`], which gives up root).
pub fn logs_to_journal(pid: libc::pid_t) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let Some(stream) = env
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(b"JOURNAL_STREAM="))
    else {
        return false;
    };
    let Some((dev, ino)) = std::str::from_utf8(stream)
        .ok()
        .and_then(|s| s.split_once(':'))
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
    else {
        return false;
    };
    std::fs::metadata(format!("/proc/{pid}/fd/2")).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
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
    // Handled too: the server answers only a process that handles them.
    crate::signals::handle_with_nothing(done_signal());
    crate::signals::handle_with_nothing(failed_signal());
    let pidfd = pidfd_open(pid).map_err(|e| format!("no process {pid}: {e}"))?;
    let status = proc_status(pid)?;
    if !catches(&status, request_signal()) {
        return Err(format!(
            "process {pid} does not take reload requests (not a lapps server, or one older \
             than this one): `kill -HUP {pid}` reloads it without an answer"
        ));
    }
    become_owner_of(&status)?;
    pidfd_send_signal(&pidfd, request_signal(), Some(REQUEST_VALUE))
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
        // An answer sent just before the end still counts: looked for once more, no wait.
        if exited(&pidfd) {
            return take_answer(&answers, pid, Duration::ZERO)
                .ok_or_else(|| format!("process {pid} ended before it answered"));
        }
        // In slices, to notice a server that stops meanwhile (its queued requests die with it).
        if let Some(done) = take_answer(&answers, pid, left.min(Duration::from_millis(100))) {
            return Ok(done);
        }
    }
}

/// Waits up to `wait` for the answer of process `pid` (one of `answers`, blocked): whether the
/// reload was done; None on a timeout, an interruption or another process's signal.
fn take_answer(answers: &libc::sigset_t, pid: libc::pid_t, wait: Duration) -> Option<bool> {
    let wait = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: siginfo_t is plain data that sigtimedwait fills before it is read.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid set, out pointer and timeout.
    let signo = unsafe { libc::sigtimedwait(answers, &mut info, &wait) };
    // SAFETY: for a signal sent with kill(2) or pidfd_send_signal(2) without a siginfo, as
    // the server answers, the kernel sets si_pid to the sender's pid.
    (signo > 0 && unsafe { info.si_pid() } == pid).then(|| signo == done_signal())
}

/// Whether the process `pidfd` refers to has ended (a pidfd polls readable then).
fn exited(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
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
    // A process that changed its user is not dumpable, which hides its /proc entry from a
    // server under ProtectProc=invisible: the server reads our status before it answers.
    // SAFETY: prctl(PR_SET_DUMPABLE, 1) has no other effect; nothing secret is held here.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child whose stderr is a file stands for a server under systemd when `JOURNAL_STREAM`
    /// names that file's device and inode; not when the variable names another stream (its
    /// stderr was redirected) or is missing.
    #[test]
    fn a_process_started_by_systemd_for_the_journal_is_told_from_one_that_was_not() {
        use std::os::unix::fs::MetadataExt;
        let path = std::env::temp_dir().join(format!("lapps-journal-test-{}", std::process::id()));
        let stderr = std::fs::File::create(&path).unwrap();
        let m = stderr.metadata().unwrap();
        let same = format!("{}:{}", m.dev(), m.ino());
        let other = format!("{}:{}", m.dev(), m.ino() + 1);
        let spawn = |stream: Option<&str>| {
            let mut c = std::process::Command::new("sleep");
            c.arg("30")
                .env_remove("JOURNAL_STREAM")
                .stderr(stderr.try_clone().unwrap());
            if let Some(v) = stream {
                c.env("JOURNAL_STREAM", v);
            }
            c.spawn().unwrap()
        };
        for (stream, journal) in [
            (Some(same.as_str()), true),
            (Some(&other), false),
            (None, false),
        ] {
            let mut child = spawn(stream);
            let pid = child.id() as libc::pid_t;
            // Until it has exec'd, the child shows our environment.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"sleep\0"))
            {
                assert!(Instant::now() < deadline, "sleep did not start");
                std::thread::yield_now();
            }
            assert_eq!(logs_to_journal(pid), journal);
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert!(!logs_to_journal(-1), "no such process");
        let _ = std::fs::remove_file(&path);
    }
}
