//! The thread that writes the log to stderr, so that no other thread ever waits for it.
//!
//! Under systemd stderr is a stream socket to journald, and a journald that stops reading (it
//! is restarting, or stuck on a slow disk) would otherwise stop every thread at its next log
//! line: an IO worker with all its connections, a Lua instance with all its clients. Once
//! [`start`] has run (the server does, at start-up), a log record is appended to a queue of at
//! most [`QUEUE_BYTES`] and this thread writes it out; a record that finds the queue full is
//! dropped and counted, and the count is logged (a warning) once the queue has room again, so
//! a gap in the log is always said. Records keep their order; each leaves in one piece.
//! Before [`start`] (a `--check-config` run, the library in tests) records are written at once,
//! as the thread that makes them waits.
//!
//! Every way out of the process gives the queue a bounded time to drain first ([`flush`]): the
//! end of `main`, the `_exit` of a second SIGTERM, the abort after a worker's panic.
//!
//! Owns: the queue, its writer thread and the count of records dropped.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most bytes of records that may wait for stderr (a few seconds of the busiest logging,
/// minutes of a normal one).
pub const QUEUE_BYTES: usize = 4 << 20;

struct Queue {
    /// Whole records, one after the other, in the order they were made.
    bytes: Vec<u8>,
    /// Records dropped since the last report of them.
    dropped: u64,
    /// The writer is writing what it took (the queue may be empty and stderr still busy).
    writing: bool,
    /// The writer waits for records: a new one must wake it.
    sleeping: bool,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    bytes: Vec::new(),
    dropped: 0,
    writing: false,
    sleeping: false,
});
/// A record came (for the writer).
static CAME: Condvar = Condvar::new();
/// The queue is empty and nothing is being written (for [`flush`]).
static DRAINED: Condvar = Condvar::new();
/// Set once the writer runs: records go through the queue from then on.
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
            .spawn(write_out);
        if spawned.is_ok() {
            RUNNING.store(true, Ordering::SeqCst);
        }
        spawned.is_ok()
    })
}

/// One whole record (its lines, newline-terminated): queued, or dropped and counted when the
/// queue is full; written at once before [`start`].
pub(crate) fn emit(record: &[u8]) {
    if !RUNNING.load(Ordering::Acquire) {
        // One write per record so that records of different threads never interleave.
        let _ = std::io::stderr().lock().write_all(record);
        return;
    }
    let mut q = lock();
    if q.bytes.len() + record.len() > QUEUE_BYTES {
        q.dropped += 1;
    } else {
        q.bytes.extend_from_slice(record);
    }
    // (A record larger than the whole queue finds it empty: its count must be written too.)
    if q.sleeping {
        q.sleeping = false;
        CAME.notify_one();
    }
}

/// The writer thread: takes what is queued, writes it in one go, then says how many records
/// were dropped meanwhile, if any.
fn write_out() {
    let mut spare = Vec::new();
    loop {
        let (mut out, dropped) = {
            let mut q = lock();
            while q.bytes.is_empty() && q.dropped == 0 {
                q.sleeping = true;
                q = CAME.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            q.writing = true;
            let dropped = std::mem::take(&mut q.dropped);
            (std::mem::replace(&mut q.bytes, spare), dropped)
        };
        if dropped > 0 {
            // After the records queued before the drops: the gap is where they were.
            out.extend_from_slice(
                crate::log::record(
                    crate::log::Level::Warn,
                    format_args!(
                        "({dropped} log records dropped: stderr did not take them as fast as \
                         they came, and {} bytes waited already)",
                        QUEUE_BYTES
                    ),
                )
                .as_bytes(),
            );
        }
        let _ = std::io::stderr().lock().write_all(&out);
        out.clear();
        // A burst's buffer is not kept for good.
        if out.capacity() > 64 << 10 {
            out = Vec::new();
        }
        spare = out;
        let mut q = lock();
        q.writing = false;
        if q.bytes.is_empty() && q.dropped == 0 {
            DRAINED.notify_all();
        }
    }
}

/// Waits until every record queued so far is written, at most `timeout` (stderr may not take
/// them at all); true when they are. Immediate before [`start`].
pub fn flush(timeout: Duration) -> bool {
    if !RUNNING.load(Ordering::Acquire) {
        return true;
    }
    let deadline = Instant::now() + timeout;
    let mut q = lock();
    while !q.bytes.is_empty() || q.dropped > 0 || q.writing {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        q = DRAINED
            .wait_timeout(q, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    true
}
