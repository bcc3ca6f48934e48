//! The thread that writes the log to stderr, so that no other thread ever waits for it.
//!
//! Under systemd stderr is a stream socket to journald, and a journald that stops reading (it
//! is restarting, or stuck on a slow disk) would otherwise stop every thread at its next log
//! line: an IO worker with all its connections, a Lua instance with all its clients. Once
//! [`start`] has run (the server does, at start-up), a log record is appended to a queue of at
//! most [`QUEUE_BYTES`] (besides what this thread is writing) and this thread writes it out; a
//! record that finds the queue full is dropped and counted, and so is every record after it
//! until this thread takes the queue, which then writes the count (a warning) right after the
//! records queued before the drops: a gap in the log is always said, where it is. Records keep
//! their order; each leaves in one piece.
//! Before [`start`] (a `--check-config` run, the library in tests) records are written at once,
//! as the thread that makes them waits.
//!
//! A write that stderr refuses (a log file on a full disk) loses what it did not take; the next
//! write that goes through first ends the line it stopped in, then says how many lines were
//! lost (a warning), so that a torn record never runs into the next one and a gap is said
//! where it is.
//!
//! Every way out of the process gives the records queued so far a bounded time to leave first
//! ([`flush`]): the end of `main`, the `_exit` of a SIGTERM during the start or a second one
//! during the shutdown, a panic (its message goes through the queue too, see `crate::fatal`).
//!
//! Owns: the queue, its writer thread and the count of records dropped.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most bytes of records that may wait for stderr besides those being written (a few seconds
/// of the busiest logging, minutes of a normal one).
pub const QUEUE_BYTES: usize = 4 << 20;

std::thread_local! {
    /// Set on the writer's own thread (which must never wait for itself).
    static WRITER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

struct Queue {
    /// Whole records, one after the other, in the order they were made.
    bytes: Vec<u8>,
    /// Records dropped since the last report of them (while not 0, every record is dropped:
    /// the report must be where the gap is).
    dropped: u64,
    /// Bytes ever queued, and of those the ones written (or given up on by a failed write).
    queued: u64,
    written: u64,
    /// Reports of dropped records written.
    reports: u64,
    /// The writer waits for records: a new one must wake it.
    sleeping: bool,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    bytes: Vec::new(),
    dropped: 0,
    queued: 0,
    written: 0,
    reports: 0,
    sleeping: false,
});
/// A record came (for the writer).
static CAME: Condvar = Condvar::new();
/// The writer wrote what it took (for [`flush`]).
static WROTE: Condvar = Condvar::new();
/// Set while the writer runs: records go through the queue.
static RUNNING: AtomicBool = AtomicBool::new(false);

fn lock() -> MutexGuard<'static, Queue> {
    QUEUE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the writer thread; false (and records keep being written where they are made) when
/// the thread cannot be started. Once is enough; later calls do nothing.
pub fn start() -> bool {
    static STARTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("lapps-log".into())
            .spawn(|| {
                WRITER.with(|w| w.set(true));
                // A panic here (a bug) must not leave records queued for nobody: from then on
                // they are written where they are made again.
                let _ = std::panic::catch_unwind(write_out);
                // Under the lock: a flush between its look at RUNNING and its wait would
                // otherwise miss this and wait out its whole timeout.
                let _q = lock();
                RUNNING.store(false, Ordering::SeqCst);
                WROTE.notify_all();
            });
        if spawned.is_ok() {
            RUNNING.store(true, Ordering::SeqCst);
        }
        spawned.is_ok()
    })
}

/// Whether records go through the queue (the writer runs and this is not its thread).
pub fn running() -> bool {
    RUNNING.load(Ordering::Acquire) && !WRITER.with(|w| w.get())
}

/// One whole record (its lines, newline-terminated): queued, or dropped and counted when the
/// queue is full; written at once before [`start`].
pub(crate) fn emit(record: &[u8]) {
    if !running() {
        // One write per record so that records of different threads never interleave.
        let _ = std::io::stderr().lock().write_all(record);
        return;
    }
    let mut q = lock();
    if q.dropped > 0 || q.bytes.len() + record.len() > QUEUE_BYTES {
        q.dropped += 1;
    } else {
        q.bytes.extend_from_slice(record);
        q.queued += record.len() as u64;
    }
    // (A record larger than the whole queue finds it empty: its count must be written too.)
    if q.sleeping {
        q.sleeping = false;
        CAME.notify_one();
    }
}

/// The writer thread: takes what is queued, writes it in one go, the report of the records
/// dropped after it (if any) at its end.
fn write_out() {
    let mut spare = Vec::new();
    let mut stderr = Refusals::default();
    loop {
        let (mut out, dropped, upto) = {
            let mut q = lock();
            while q.bytes.is_empty() && q.dropped == 0 {
                q.sleeping = true;
                q = CAME.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            let dropped = std::mem::take(&mut q.dropped);
            let upto = q.queued;
            (std::mem::replace(&mut q.bytes, spare), dropped, upto)
        };
        if dropped > 0 {
            let report = crate::log::record(
                crate::log::Level::Warn,
                format_args!(
                    "({dropped} log records dropped: stderr did not take the log as fast as it \
                     came)"
                ),
            );
            out.extend_from_slice(report.as_bytes());
        }
        let written = stderr.write(&out);
        if dropped > 0 && written < out.len() {
            // The report of the records dropped did not go through (it is last): those
            // records are lost, not its one line, which was counted as lost in their place.
            stderr.lost_lines += dropped - 1;
        }
        out.clear();
        // A burst's buffer is not kept for good.
        if out.capacity() > 64 << 10 {
            out = Vec::new();
        }
        spare = out;
        let mut q = lock();
        q.written = upto;
        if dropped > 0 {
            q.reports += 1;
        }
        WROTE.notify_all();
    }
}

/// What the writer knows of stderr's refusals: the lines lost since the last report of them,
/// and whether the last byte that went through ends a line.
#[derive(Default)]
struct Refusals {
    lost_lines: u64,
    last_error: Option<std::io::Error>,
    mid_line: bool,
}

impl Refusals {
    /// Writes `bytes` (whole lines), after the report of the lines lost before them, if any;
    /// what stderr refuses is counted for the next report. Returns how many of `bytes` went
    /// through.
    fn write(&mut self, bytes: &[u8]) -> usize {
        if self.lost_lines > 0 {
            let mut head = Vec::new();
            if self.mid_line {
                head.push(b'\n');
            }
            let error = self
                .last_error
                .as_ref()
                .map_or(String::new(), |e| format!(": {e}"));
            let report = crate::log::record(
                crate::log::Level::Warn,
                format_args!(
                    "({} log lines lost: stderr refused them{error})",
                    self.lost_lines
                ),
            );
            head.extend_from_slice(report.as_bytes());
            let lost = self.lost_lines;
            let through = self.write_through(&head) == head.len();
            // The report's own line is not a record lost (counted, one more line per failed
            // write: a re-trial's 171 lines lost one by one were reported as about 340).
            self.lost_lines = lost;
            if !through {
                // The report stays before the records that came after the gap.
                self.lost_lines += lines(bytes);
                return 0;
            }
            self.lost_lines = 0;
            self.last_error = None;
        }
        self.write_through(bytes)
    }

    /// How many of `bytes` went through; the lines of the rest are counted.
    fn write_through(&mut self, bytes: &[u8]) -> usize {
        let mut out = std::io::stderr().lock();
        let mut at = 0;
        while at < bytes.len() {
            match out.write(&bytes[at..]) {
                Ok(0) => break,
                Ok(n) => {
                    at += n;
                    self.mid_line = bytes[at - 1] != b'\n';
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.last_error = Some(e);
                    break;
                }
            }
        }
        self.lost_lines += lines(&bytes[at..]);
        at
    }
}

/// The lines that `bytes` holds or begins.
fn lines(bytes: &[u8]) -> u64 {
    let ends = memchr::memchr_iter(b'\n', bytes).count();
    (ends + usize::from(bytes.last().is_some_and(|&b| b != b'\n'))) as u64
}

/// Waits until the records queued before this call are written, and the report of any
/// dropped before it, at most `timeout` (stderr may not take them at all); true when they
/// are. Immediate before [`start`], and on the writer's own thread.
pub fn flush(timeout: Duration) -> bool {
    if !running() {
        return true;
    }
    let deadline = Instant::now() + timeout;
    let mut q = lock();
    let target = q.queued;
    let report = (q.dropped > 0).then_some(q.reports + 1);
    while q.written < target || report.is_some_and(|r| q.reports < r) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !RUNNING.load(Ordering::Acquire) {
            return false;
        }
        q = WROTE
            .wait_timeout(q, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    true
}
