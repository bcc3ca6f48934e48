//! MQR: named, bounded message queues between the services of one process.
//!
//! Owns the process-wide table of queues (created on first use, never removed, so a service
//! restarted in place finds its queue and what was left in it) and the blocking protocol of
//! each queue. A message is an owned [`Message`]: posting moves it into the ring and receiving
//! moves it out, so the payload is never copied between the two Lua states except into the
//! receiving state's own string. It must never grow a queue past its capacity, drop or
//! duplicate a message, or spin while waiting: a full queue is reported to the poster and
//! blocking calls sleep on a condition variable.
//!
//! Wake-up protocol (no lost wake-ups): a waiter takes the queue's lock, announces itself in
//! `recv_waiters`/`post_waiters`, retries the ring once, and only then waits (which releases
//! the lock). The other side changes the ring first and then reads the waiter count; both
//! sides put a SeqCst fence between the two steps, so either the waiter's retry sees the
//! change or the other side sees the waiter and notifies it under the lock (the waiter holds
//! the lock until it is actually waiting). A post counts its bytes before it tries the ring;
//! refused by a full ring, it gives them back, and one made without the lock (`try_post`) then
//! wakes the posters, since a receive meanwhile may have woken one that found no room for them. Shutdown (`wake_all`) notifies every waiter under
//! the lock after the stop flag is set, and waiters check their stop flag under the lock.

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::sync::mpmc::ArrayQueue;

/// Largest capacity a queue may have: the ring allocates every slot up front.
pub const MAX_CAPACITY: usize = 1 << 20;

/// Payload bytes a queue holds at most. A count alone bounds nothing in memory (1024 slots of
/// 16 MiB strings are 16 GiB): a post that would pass this is refused as for a full queue, and
/// a message larger than this on its own can never be posted (see [`Queue::fits`]).
pub const MAX_QUEUE_BYTES: usize = 64 << 20;

/// Queues the process may have: each holds its name, locks and ring, and none is ever removed.
pub const MAX_QUEUES: usize = 65_536;

/// Ring slots all queues together may have (each slot is allocated when its queue is created,
/// 32 bytes, 256 MiB for these): eight queues of [`MAX_CAPACITY`], or 8192 of the default
/// 1024. Queues are made on first use by any service; without a bound, one that made them in a
/// loop (or named a reply queue per request) would take the process's memory.
pub const MAX_SLOTS: usize = 8 << 20;

/// How long a poster refused for the bound of all queues together sleeps before it looks
/// again: room made in another queue wakes nobody waiting on this one.
const TOTAL_RECHECK: Duration = Duration::from_millis(10);

/// Why [`Queue::push`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Its bytes did not fit; nothing was counted.
    Bytes,
    /// Its bytes fitted the queue but not the bound of all queues ([`Total`]): they were
    /// counted in the queue for a while, then given back.
    Total,
    /// Its bytes fitted but the ring was full: they were counted, then given back.
    GaveBack,
}

/// The payload bytes all queues of one table hold together, and their bound. A queue's own
/// bound ([`MAX_QUEUE_BYTES`]) times the queues a table may have is far more memory than any
/// host has: an app that posts to queues nobody receives from (one per client, or a receiver
/// that stopped) would otherwise take the process's memory, 64 MiB per queue. Past it a post
/// is refused as by a full queue.
#[derive(Debug)]
pub struct Total {
    bytes: AtomicUsize,
    max: usize,
}

impl Total {
    /// A bound of `max` bytes (0: none).
    pub fn new(max: usize) -> Total {
        Total {
            bytes: AtomicUsize::new(0),
            max: if max == 0 { usize::MAX } else { max },
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// The bound (`usize::MAX`: none).
    pub fn max(&self) -> usize {
        self.max
    }

    fn reserve(&self, n: usize) -> bool {
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                b.checked_add(n).filter(|&t| t <= self.max)
            })
            .is_ok()
    }

    fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::AcqRel);
    }

    fn release(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Why a blocking call ended without a message / without posting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The queue stayed full (post) or empty (receive) for the whole timeout.
    Timeout,
    /// The calling service is shutting down (and, for receive, the queue is empty).
    Stopped,
}

/// A queued message: its bytes, owned, and what they were posted as.
#[derive(Debug)]
pub struct Message {
    bytes: Box<[u8]>,
    kind: Kind,
    /// Its place among the queue's posts (wrapping; set by the push), for
    /// [`Queue::put_back`]: one poster's messages have increasing numbers.
    seq: u32,
}

/// What a [`Message`]'s bytes are, so that the receiver gets back what was posted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A string (or anything posted as bytes from Rust).
    Bytes,
    /// An nljson value, as CBOR (the original's `mqr` carried nljson values).
    Nljson,
}

impl Message {
    pub fn new(bytes: Box<[u8]>, kind: Kind) -> Self {
        Message {
            bytes,
            kind,
            seq: 0,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.bytes.into_vec()
    }
}

/// Whether `a` was posted before `b`, for the messages a queue holds at once (far fewer than
/// 2^31: [`MAX_SLOTS`]).
fn posted_before(a: &Message, b: &Message) -> bool {
    (a.seq.wrapping_sub(b.seq) as i32) < 0
}

// A slot is its stamp and a message: 32 bytes, as MAX_SLOTS and docs/lua-api.md count them.
const _: () = assert!(std::mem::size_of::<Message>() == 24);

/// Equal when they carry the same bytes as the same kind (wherever they were posted).
impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.bytes == other.bytes && self.kind == other.kind
    }
}

impl Eq for Message {}

impl std::ops::Deref for Message {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl From<Box<[u8]>> for Message {
    fn from(bytes: Box<[u8]>) -> Self {
        Message::new(bytes, Kind::Bytes)
    }
}

/// One named queue. Many posters and many receivers; each message is received exactly once,
/// and the messages of one poster are received in the order it posted them.
pub struct Queue {
    name: Arc<str>,
    ring: ArrayQueue<Message>,
    lock: Mutex<()>,
    not_empty: Condvar,
    not_full: Condvar,
    recv_waiters: AtomicUsize,
    post_waiters: AtomicUsize,
    /// Payload bytes of the messages in the ring (reserved before a push, released after a
    /// pop), at most `max_bytes`, and of the returned ones.
    bytes: AtomicUsize,
    max_bytes: usize,
    /// What the queues of its table hold together.
    total: Arc<Total>,
    /// Messages a receiver took and gave back undelivered ([`Queue::put_back`]): taken before
    /// the ring, so that each keeps its place ahead of what its sender posted after it.
    returned: Mutex<std::collections::VecDeque<Message>>,
    /// How many are in `returned` (read without its lock on every pop).
    returned_len: AtomicUsize,
    /// The number the next push gives its message.
    next_seq: std::sync::atomic::AtomicU32,
    /// Messages receivers took and hold for want of memory, to deliver at their next receive
    /// ([`Queue::hold`]): still this queue's, for the shutdown's count of what is left.
    held: AtomicUsize,
    /// Posts a caller was told were refused for want of room ([`Queue::count_refused`]), for
    /// the status report.
    refused: std::sync::atomic::AtomicU64,
    /// Posts that found no room under the lock and went to wait (tests watch it).
    #[cfg(test)]
    waits: AtomicUsize,
}

/// What a test runs inside a push (see `BEFORE_GIVE_BACK`).
#[cfg(test)]
type Hold = Box<dyn FnOnce(&Queue)>;

#[cfg(test)]
thread_local! {
    /// Runs once, in this thread's next push that reserved bytes and then found the ring full,
    /// before it gives the bytes back: the window tests hold open.
    static BEFORE_GIVE_BACK: std::cell::Cell<Option<Hold>> =
        const { std::cell::Cell::new(None) };
}

impl Queue {
    fn new(name: Arc<str>, capacity: usize, total: Arc<Total>) -> Queue {
        Queue::with_bounds(name, capacity, MAX_QUEUE_BYTES, total)
    }

    #[cfg(test)]
    fn with_max_bytes(name: Arc<str>, capacity: usize, max_bytes: usize) -> Queue {
        Queue::with_bounds(name, capacity, max_bytes, Arc::new(Total::new(0)))
    }

    fn with_bounds(name: Arc<str>, capacity: usize, max_bytes: usize, total: Arc<Total>) -> Queue {
        Queue {
            bytes: AtomicUsize::new(0),
            max_bytes,
            total,
            name,
            ring: ArrayQueue::new(capacity.clamp(1, MAX_CAPACITY)),
            lock: Mutex::new(()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            recv_waiters: AtomicUsize::new(0),
            post_waiters: AtomicUsize::new(0),
            returned: Mutex::new(std::collections::VecDeque::new()),
            returned_len: AtomicUsize::new(0),
            next_seq: std::sync::atomic::AtomicU32::new(0),
            held: AtomicUsize::new(0),
            refused: std::sync::atomic::AtomicU64::new(0),
            #[cfg(test)]
            waits: AtomicUsize::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Messages waiting (a snapshot).
    pub fn len(&self) -> usize {
        self.ring.len() + self.returned_len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A post its caller was told was refused, the queue being full (of messages or bytes).
    pub fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A receiver took a message from here and keeps it for its next receive: counted as
    /// left in the queue until [`Queue::unhold`] (delivered, or given back with `put_back`).
    pub fn hold(&self) {
        self.held.fetch_add(1, Ordering::AcqRel);
    }

    /// A message counted by [`Queue::hold`] left the receiver's keeping.
    pub fn unhold(&self) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Whether a message of `len` bytes can ever be posted here (an empty queue would take it).
    pub fn fits(&self, len: usize) -> bool {
        len <= self.max_bytes.min(self.total.max())
    }

    /// Into the ring, within both bounds (slots and bytes); handed back otherwise, with
    /// [`Refused::GaveBack`] when its bytes were counted for a while: a receive meanwhile may
    /// have woken a poster that then found no room for those bytes and went back to sleep, so
    /// a caller that does not hold the lock must wake the posters (`push` cannot: `post` calls
    /// it holding the lock, and needs not).
    fn push(&self, mut msg: Message) -> Result<(), (Message, Refused)> {
        let n = msg.len();
        let reserved = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                b.checked_add(n).filter(|&t| t <= self.max_bytes)
            })
            .is_ok();
        if !reserved {
            crate::warn_limited!(
                "mqr: queue {} refused a message of {n} bytes: it holds {} bytes of messages, \
                 and may hold {}; is its receiver slow or missing?",
                self.name,
                self.bytes.load(Ordering::Acquire),
                self.max_bytes
            );
            return Err((msg, Refused::Bytes));
        }
        if !self.total.reserve(n) {
            self.bytes.fetch_sub(n, Ordering::AcqRel);
            crate::warn_limited!(
                "mqr: queue {} refused a message of {n} bytes: all queues together hold {} \
                 bytes, and may hold {} (a quarter of the memory); is a receiver missing?",
                self.name,
                self.total.held(),
                self.total.max()
            );
            return Err((msg, Refused::Total));
        }
        msg.seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        match self.ring.push(msg) {
            Ok(()) => Ok(()),
            Err(msg) => {
                #[cfg(test)]
                if let Some(hold) = BEFORE_GIVE_BACK.take() {
                    hold(self);
                }
                self.total.release(n);
                self.bytes.fetch_sub(n, Ordering::AcqRel);
                Err((msg, Refused::GaveBack))
            }
        }
    }

    /// A returned message first, else out of the ring; releasing its bytes.
    fn pop(&self) -> Option<Message> {
        let m = self.take_returned().or_else(|| self.ring.pop())?;
        self.bytes.fetch_sub(m.len(), Ordering::AcqRel);
        self.total.release(m.len());
        Some(m)
    }

    fn take_returned(&self) -> Option<Message> {
        if self.returned_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut returned = self.returned.lock().unwrap_or_else(|e| e.into_inner());
        let m = returned.pop_front()?;
        self.returned_len.store(returned.len(), Ordering::Release);
        Some(m)
    }

    /// Gives back a message a receiver took and could not deliver (its Lua state went away):
    /// the next receive of any receiver gets it, before the ring. It was accepted once, so it
    /// is taken whatever the bounds say now; never blocks. Messages given back keep the order
    /// they were posted in, whatever order their receivers give them back in (two receivers
    /// of a version being replaced, each with one).
    pub fn put_back(&self, msg: Message) {
        self.bytes.fetch_add(msg.len(), Ordering::AcqRel);
        self.total.add(msg.len());
        {
            let mut returned = self.returned.lock().unwrap_or_else(|e| e.into_inner());
            let at = returned
                .iter()
                .rposition(|m| posted_before(m, &msg))
                .map_or(0, |i| i + 1);
            returned.insert(at, msg);
            self.returned_len.store(returned.len(), Ordering::Release);
        }
        self.wake(&self.recv_waiters, &self.not_empty);
    }

    /// Appends `msg`, or hands it back when the queue is full (of messages or of bytes).
    /// Never blocks.
    pub fn try_post(&self, msg: impl Into<Message>) -> Result<(), Message> {
        match self.push(msg.into()) {
            Ok(()) => {
                self.wake(&self.recv_waiters, &self.not_empty);
                Ok(())
            }
            Err((msg, refused)) => {
                if refused != Refused::Bytes {
                    self.wake_posters();
                }
                Err(msg)
            }
        }
    }

    /// Takes the oldest message, if any. Never blocks.
    pub fn poll(&self) -> Option<Message> {
        let m = self.pop()?;
        self.wake_posters();
        Some(m)
    }

    /// Appends `msg`, waiting up to `timeout` for room. `stopping` is checked before every
    /// wait (under the lock); a stopping caller does not wait. On failure the message is
    /// handed back: it was not accepted.
    pub fn post(
        &self,
        msg: impl Into<Message>,
        timeout: Duration,
        stopping: &dyn Fn() -> bool,
    ) -> Result<(), (Message, Wait)> {
        let deadline = Instant::now().checked_add(timeout);
        let mut msg = match self.try_post(msg) {
            Ok(()) => return Ok(()),
            Err(m) => m,
        };
        let mut by_total;
        loop {
            let g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.post_waiters.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            msg = match self.push(msg) {
                Ok(()) => {
                    self.post_waiters.fetch_sub(1, Ordering::SeqCst);
                    drop(g);
                    self.wake(&self.recv_waiters, &self.not_empty);
                    return Ok(());
                }
                // No wake-up for bytes given back here: this poster holds the lock until it
                // waits, so a receive meanwhile notifies (under that lock) only after they are
                // back. (Notifying here would have waiting posters wake each other for ever.)
                Err((m, why)) => {
                    by_total = why == Refused::Total;
                    m
                }
            };
            #[cfg(test)]
            self.waits.fetch_add(1, Ordering::SeqCst);
            let left = match wait_left(deadline, stopping) {
                Ok(left) => left,
                Err(why) => {
                    self.post_waiters.fetch_sub(1, Ordering::SeqCst);
                    return Err((msg, why));
                }
            };
            // Refused for the bound of all queues: room made elsewhere wakes nobody here.
            let left = if by_total {
                left.min(TOTAL_RECHECK)
            } else {
                left
            };
            let (g, _) = self
                .not_full
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner());
            self.post_waiters.fetch_sub(1, Ordering::SeqCst);
            drop(g);
        }
    }

    /// Takes the oldest message, waiting up to `timeout` for one. A stopping caller still
    /// gets what is queued (so it can drain) but never waits: `Err(Stopped)` means stopping
    /// *and* empty.
    pub fn receive(&self, timeout: Duration, stopping: &dyn Fn() -> bool) -> Result<Message, Wait> {
        let deadline = Instant::now().checked_add(timeout);
        if let Some(m) = self.poll() {
            return Ok(m);
        }
        loop {
            let g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.recv_waiters.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if let Some(m) = self.pop() {
                self.recv_waiters.fetch_sub(1, Ordering::SeqCst);
                drop(g);
                self.wake_posters();
                return Ok(m);
            }
            let left = match wait_left(deadline, stopping) {
                Ok(left) => left,
                Err(why) => {
                    self.recv_waiters.fetch_sub(1, Ordering::SeqCst);
                    return Err(why);
                }
            };
            let (g, _) = self
                .not_empty
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner());
            self.recv_waiters.fetch_sub(1, Ordering::SeqCst);
            drop(g);
        }
    }

    /// After a post: notify one waiting receiver, if there is one (any of them can take any
    /// message).
    fn wake(&self, waiters: &AtomicUsize, cv: &Condvar) {
        fence(Ordering::SeqCst);
        if waiters.load(Ordering::SeqCst) > 0 {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            cv.notify_one();
        }
    }

    /// After a receive: notify every waiting poster. Posters are not interchangeable once
    /// the byte bound applies: the freed room may fit a small message and not a large one, and
    /// one wake-up given to the large one would leave the small one asleep beside the room.
    fn wake_posters(&self) {
        fence(Ordering::SeqCst);
        if self.post_waiters.load(Ordering::SeqCst) > 0 {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.not_full.notify_all();
        }
    }

    /// Wakes every waiter so that it re-checks its stop flag.
    fn wake_all(&self) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name)
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// The queues of the process, by name.
pub struct Mqr {
    queues: RwLock<HashMap<Arc<str>, Arc<Queue>>>,
    /// Ring slots of all queues (reserved before a queue is built).
    slots: AtomicUsize,
    /// Held while a queue is made (not while one is looked up): creators of one name wait
    /// for the first, rather than find its slots reserved and no queue yet. A creation waits
    /// for the one under way (a ring of the largest capacity takes milliseconds).
    creating: Mutex<()>,
    max_queues: usize,
    max_slots: usize,
    /// The payload bytes of all its queues.
    total: Arc<Total>,
}

impl Default for Mqr {
    /// The limits above, and a quarter of the memory (the host's, or its cgroup's limit when
    /// lower) for what all queues hold together.
    fn default() -> Mqr {
        let quarter = crate::config::quarter_of_memory();
        Mqr::with_limits(MAX_QUEUES, MAX_SLOTS)
            .with_total_bytes(usize::try_from(quarter).unwrap_or(usize::MAX))
    }
}

/// Why [`Mqr::try_open`] made no queue.
pub const TOO_MANY_QUEUES: &str = "too many queues";

/// The process-wide table every service shares.
pub fn registry() -> &'static Mqr {
    static MQR: OnceLock<Mqr> = OnceLock::new();
    MQR.get_or_init(Mqr::default)
}

impl Mqr {
    /// The queue `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// A table whose queues may number `max_queues` and have `max_slots` slots together.
    pub fn with_limits(max_queues: usize, max_slots: usize) -> Mqr {
        Mqr {
            queues: RwLock::new(HashMap::new()),
            slots: AtomicUsize::new(0),
            creating: Mutex::new(()),
            max_queues,
            max_slots,
            total: Arc::new(Total::new(0)),
        }
    }

    /// This table with its queues holding at most `max` payload bytes together (0: no bound).
    pub fn with_total_bytes(mut self, max: usize) -> Mqr {
        self.total = Arc::new(Total::new(max));
        self
    }

    /// What all the queues hold together, and their bound.
    pub fn total(&self) -> &Total {
        &self.total
    }

    /// The queue `name`, created with `capacity` (clamped to 1..=[`MAX_CAPACITY`]) if it does
    /// not exist yet; an existing queue keeps its capacity. [`TOO_MANY_QUEUES`] when a new one
    /// would pass the table's limits ([`MAX_QUEUES`], [`MAX_SLOTS`]): the services' way in.
    pub fn try_open(&self, name: &str, capacity: usize) -> Result<Arc<Queue>, &'static str> {
        if let Some(q) = self.get(name) {
            return Ok(q);
        }
        let _creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
        // Made while this one waited (instances that create their queue in `init` start at
        // once).
        if let Some(q) = self.get(name) {
            return Ok(q);
        }
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let (max, used) = (self.max_slots, &self.slots);
        if used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n + capacity <= max).then_some(n + capacity)
            })
            .is_err()
        {
            // Unless `open` (past the limits) made it meanwhile.
            return self.get(name).ok_or(TOO_MANY_QUEUES);
        }
        // Built before the table is locked: a large ring takes a while to allocate and stamp,
        // and every other service's lookup would wait for it (only other creations do). If a
        // racing `open` (past the limits) wins, this one is dropped unused (and its slots
        // given back).
        let fresh = Arc::new(Queue::new(name.into(), capacity, Arc::clone(&self.total)));
        let mut queues = self.queues.write().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = queues.get(name) {
            used.fetch_sub(capacity, Ordering::SeqCst);
            return Ok(Arc::clone(q));
        }
        if queues.len() >= self.max_queues {
            used.fetch_sub(capacity, Ordering::SeqCst);
            return Err(TOO_MANY_QUEUES);
        }
        queues.insert(name.into(), Arc::clone(&fresh));
        Ok(fresh)
    }

    /// [`try_open`](Self::try_open) past the limits, for the host and the tests (which open
    /// a few queues of their own).
    pub fn open(&self, name: &str, capacity: usize) -> Arc<Queue> {
        self.try_open(name, capacity).unwrap_or_else(|_| {
            let mut queues = self.queues.write().unwrap_or_else(|e| e.into_inner());
            let q = queues.entry(name.into()).or_insert_with(|| {
                Arc::new(Queue::new(name.into(), capacity, Arc::clone(&self.total)))
            });
            Arc::clone(q)
        })
    }

    /// Queues made, and the messages all of them hold (given back ones too).
    pub fn usage(&self) -> (usize, usize) {
        let queues = self.queues.read().unwrap_or_else(|e| e.into_inner());
        let held = queues
            .values()
            .map(|q| q.len() + q.held.load(Ordering::Acquire))
            .sum();
        (queues.len(), held)
    }

    /// The status report's line for each queue that holds messages or has refused a post,
    /// fullest first, at most `most` of them (and a line counting the others).
    pub fn queue_status(&self, most: usize) -> Vec<String> {
        let queues = self.queues.read().unwrap_or_else(|e| e.into_inner());
        let mut busy: Vec<(usize, u64, &Arc<Queue>)> = queues
            .values()
            .map(|q| {
                let n = q.len() + q.held.load(Ordering::Acquire);
                (n, q.refused.load(Ordering::Relaxed), q)
            })
            .filter(|&(n, refused, _)| n > 0 || refused > 0)
            .collect();
        // Fullest first (by the share of its slots or of its bytes taken, whichever is more),
        // then those that refused most, then by name: a queue full by bytes, or one emptied
        // since it refused thousands of posts, is not cut for nearly empty ones.
        busy.sort_by(|a, b| {
            let share = |(n, _, q): &(usize, u64, &Arc<Queue>)| {
                let slots = *n as f64 / q.capacity() as f64;
                let bytes = q.bytes.load(Ordering::Relaxed) as f64 / q.max_bytes.max(1) as f64;
                slots.max(bytes)
            };
            share(b)
                .total_cmp(&share(a))
                .then_with(|| b.1.cmp(&a.1))
                .then_with(|| a.2.name().cmp(b.2.name()))
        });
        let others = busy.len().saturating_sub(most);
        let mut lines: Vec<String> = busy
            .iter()
            .take(most)
            .map(|(n, refused, q)| {
                format!(
                    "mqr queue {}: {n} message(s) of {} slot(s), {} bytes; {refused} post(s) \
                     refused as full so far",
                    q.name(),
                    q.capacity(),
                    q.bytes.load(Ordering::Relaxed)
                )
            })
            .collect();
        if others > 0 {
            lines.push(format!(
                "mqr: {others} more queue(s) hold messages or have refused posts"
            ));
        }
        lines
    }

    /// Every non-empty queue with its message count, by name.
    pub fn leftovers(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = self
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|q| {
                (
                    q.name().to_string(),
                    q.len() + q.held.load(Ordering::Acquire),
                )
            })
            .filter(|&(_, n)| n > 0)
            .collect();
        v.sort();
        v
    }

    /// Logs what is still queued (at server shutdown): accepted messages nobody received are
    /// reported, never lost silently.
    pub fn log_leftovers(&self) {
        for (name, n) in self.leftovers() {
            crate::warn!("mqr: {n} message(s) left in queue {name} (accepted, never received)");
        }
    }

    /// Wakes every blocked post/receive so that it re-checks its service's stop flag.
    pub fn wake_all(&self) {
        let queues: Vec<Arc<Queue>> = self
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for q in queues {
            q.wake_all();
        }
    }
}

/// How long a blocked `post`/`receive` may still wait, or why it must return now. A caller
/// that is stopping never waits; `None` deadlines (a timeout too large for an `Instant`) wait
/// in long slices.
fn wait_left(deadline: Option<Instant>, stopping: &dyn Fn() -> bool) -> Result<Duration, Wait> {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    if stopping() {
        Err(Wait::Stopped)
    } else if left == Some(Duration::ZERO) {
        Err(Wait::Timeout)
    } else {
        Ok(left.unwrap_or(Duration::from_secs(3600)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Instances creating the same large queue at once (as in their `init`) all get it: only
    /// one could reserve its slots, and the others must not take the queue the first is still
    /// building for one past the limits.
    #[test]
    fn creators_of_one_queue_at_once_all_get_it_though_two_would_not_fit() {
        let t = Mqr::with_limits(10, 1_500_000);
        let start = std::sync::Barrier::new(8);
        let got: Vec<_> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        t.try_open("big", 1_000_000)
                    })
                })
                .collect();
            threads.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let first = got[0].as_ref().expect("opened").clone();
        for q in &got {
            let q = q.as_ref().expect("every creator gets the queue");
            assert!(Arc::ptr_eq(q, &first));
        }
        assert_eq!(t.slots.load(Ordering::SeqCst), 1_000_000);
    }

    use std::sync::atomic::AtomicBool;

    fn msg(s: &str) -> Box<[u8]> {
        s.as_bytes().into()
    }

    #[test]
    fn all_queues_of_a_table_share_one_bound_of_bytes() {
        let t = Mqr::with_limits(16, 1024).with_total_bytes(100);
        let (a, b) = (t.open("a", 8), t.open("b", 8));
        a.try_post(vec![1u8; 60].into_boxed_slice()).unwrap();
        // b is empty, but 60 + 60 passes what both may hold together: refused, as if full.
        assert_eq!(
            b.try_post(vec![2u8; 60].into_boxed_slice())
                .map_err(|m| m.len()),
            Err(60)
        );
        assert_eq!((t.total().held(), b.len()), (60, 0));
        b.try_post(vec![2u8; 40].into_boxed_slice())
            .expect("40 fits beside 60");
        assert_eq!(t.total().held(), 100);
        // A message past the bound of all queues can never be posted, however empty they are.
        assert!(b.fits(100) && !b.fits(101));
        // A blocking post to b waits for room anywhere: a receive from a (which wakes nobody
        // waiting on b) makes it, and the poster finds it when it looks again.
        let (tx, posted) = std::sync::mpsc::channel();
        {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                let r = b.post(
                    vec![3u8; 50].into_boxed_slice(),
                    Duration::from_secs(60),
                    &|| false,
                );
                let _ = tx.send(r.map_err(|(_, why)| why));
            });
        }
        let guard = Instant::now() + Duration::from_secs(10);
        while b.waits.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < guard, "the poster never waited");
            std::thread::yield_now();
        }
        assert_eq!(a.poll().unwrap().len(), 60);
        // Well before its own timeout: it looked again.
        assert_eq!(posted.recv_timeout(Duration::from_secs(20)), Ok(Ok(())));
        assert_eq!(t.total().held(), 90);
        // Taken out and given back: counted again, whatever the bound.
        let m = b.poll().unwrap();
        b.put_back(m);
        assert_eq!(t.total().held(), 90);
        while b.poll().is_some() {}
        assert_eq!(t.total().held(), 0);
        // The process's table: a quarter of the memory.
        let quarter = crate::config::quarter_of_memory();
        assert_eq!(Mqr::default().total().max() as u64, quarter);
    }

    #[test]
    fn a_receive_wakes_the_poster_whose_message_fits_not_only_the_first_one() {
        let q = Arc::new(Queue::with_max_bytes("bytes".into(), 8, 100));
        q.try_post(vec![1u8; 60].into_boxed_slice()).unwrap();
        q.try_post(vec![2u8; 40].into_boxed_slice()).unwrap();
        let never = || false;
        // A poster thread: its thread id, and where its post's result arrives.
        let poster = |len: usize| {
            let q = Arc::clone(&q);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                let _ = tx.send(Ok(unsafe { libc::gettid() }));
                let r = q.post(
                    vec![3u8; len].into_boxed_slice(),
                    Duration::from_secs(30),
                    &|| false,
                );
                let _ = tx.send(Err(r.map_err(|(_, why)| why)));
            });
            let tid = rx.recv().unwrap().unwrap();
            (tid, rx)
        };
        // Until `tid` sleeps in the queue: counted as a waiting poster (which it becomes
        // holding the queue's lock) and asleep (holding that lock, it can only sleep on the
        // condition variable).
        let asleep = |tid: libc::pid_t, n: usize| {
            let guard = Instant::now() + Duration::from_secs(10);
            let state = || {
                let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"));
                stat.ok()
                    .and_then(|s| s.rsplit(") ").next().map(|r| r.starts_with('S')))
                    .unwrap_or(false)
            };
            while q.post_waiters.load(Ordering::SeqCst) < n || !state() {
                assert!(Instant::now() < guard, "the poster never waited");
                std::thread::yield_now();
            }
        };
        // The large one waits first (woken first), then the small one.
        let (tid, large) = poster(80);
        asleep(tid, 1);
        let (tid, small) = poster(30);
        asleep(tid, 2);
        // 60 bytes out: room for 30 (40 + 30 <= 100), not for 80.
        assert_eq!(q.receive(Duration::ZERO, &never).unwrap().len(), 60);
        assert_eq!(
            small.recv_timeout(Duration::from_secs(10)),
            Ok(Err(Ok(()))),
            "the small poster was left asleep beside the room it needed"
        );
        assert!(large.try_recv().is_err(), "the large one still waits");
        assert_eq!(q.poll().unwrap().len(), 40);
        assert_eq!(q.poll().unwrap().len(), 30);
        assert_eq!(large.recv_timeout(Duration::from_secs(10)), Ok(Err(Ok(()))));
    }

    /// A post whose bytes fitted but found the ring full gives its bytes back; a receive in
    /// between woke a waiting poster that found no room for them (they were still counted)
    /// and slept again: the give-back must wake it, or it sleeps beside the room until the
    /// next receive or its timeout.
    #[test]
    fn bytes_given_back_by_a_refused_post_wake_the_poster_that_needed_them() {
        let q = Arc::new(Queue::with_max_bytes("give back".into(), 3, 100));
        for _ in 0..3 {
            q.try_post(vec![0u8; 10].into_boxed_slice()).unwrap();
        }
        // B waits for a slot with 40 bytes.
        let waiter = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                q.post(
                    vec![1u8; 40].into_boxed_slice(),
                    Duration::from_secs(30),
                    &|| false,
                )
                .map_err(|(_, why)| why)
            })
        };
        let waits = |n: usize| {
            let guard = Instant::now() + Duration::from_secs(10);
            while q.waits.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < guard, "the poster never waited");
                std::thread::yield_now();
            }
            // It counted itself holding the lock, which it keeps until it sleeps.
            drop(q.lock.lock().unwrap());
        };
        waits(1);
        // A: 60 bytes fit (30 + 60), the ring does not. Before A gives them back, a receive
        // frees a slot and wakes B, which finds 90 + 40 > 100 and waits again.
        BEFORE_GIVE_BACK.set(Some(Box::new(move |q: &Queue| {
            assert_eq!(q.poll().unwrap().len(), 10);
            let guard = Instant::now() + Duration::from_secs(10);
            while q.waits.load(Ordering::SeqCst) < 2 {
                assert!(Instant::now() < guard, "the woken poster never retried");
                std::thread::yield_now();
            }
            drop(q.lock.lock().unwrap());
        })));
        assert!(
            q.try_post(vec![2u8; 60].into_boxed_slice()).is_err(),
            "the ring was full"
        );
        // 20 bytes and one slot free: B's post goes in, well before its timeout.
        let done = Instant::now() + Duration::from_secs(10);
        while !waiter.is_finished() {
            assert!(
                Instant::now() < done,
                "the poster slept beside the room it needed"
            );
            std::thread::yield_now();
        }
        assert_eq!(waiter.join().unwrap(), Ok(()));
    }

    /// Posters blocked on a full ring sleep: none wakes the others when it is refused again.
    #[test]
    fn posters_waiting_on_a_full_ring_do_not_wake_each_other() {
        let q = Arc::new(Queue::with_max_bytes("no spin".into(), 1, 100));
        q.try_post(msg("x")).unwrap();
        let posters: Vec<_> = (0..2)
            .map(|_| {
                let q = Arc::clone(&q);
                std::thread::spawn(move || {
                    q.post(msg("y"), Duration::from_secs(30), &|| false)
                        .map_err(|(_, why)| why)
                })
            })
            .collect();
        let guard = Instant::now() + Duration::from_secs(10);
        while q.waits.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < guard, "the posters never waited");
            std::thread::yield_now();
        }
        // A window in which nothing happens to the queue: waking each other, the two would go
        // back to wait thousands of times in it.
        std::thread::sleep(Duration::from_millis(200));
        let waits = q.waits.load(Ordering::SeqCst);
        assert!(waits <= 4, "waiting posters woke each other {waits} times");
        assert_eq!(q.poll().unwrap().len(), 1);
        assert_eq!(
            q.receive(Duration::from_secs(10), &|| false).unwrap().len(),
            1
        );
        assert_eq!(
            q.receive(Duration::from_secs(10), &|| false).unwrap().len(),
            1
        );
        for p in posters {
            assert_eq!(p.join().unwrap(), Ok(()));
        }
    }

    #[test]
    fn queues_past_the_tables_limits_are_refused_and_existing_ones_still_open() {
        let m = Mqr::with_limits(3, 100);
        let a = m.try_open("a", 60).unwrap();
        assert_eq!(
            m.try_open("b", 50).err(),
            Some(TOO_MANY_QUEUES),
            "110 slots"
        );
        let b = m.try_open("b", 40).unwrap();
        assert!(Arc::ptr_eq(&a, &m.try_open("a", 1_000_000).unwrap()));
        assert_eq!(m.try_open("c", 1).err(), Some(TOO_MANY_QUEUES), "101 slots");
        assert_eq!(
            m.try_open("c", 0).err(),
            Some(TOO_MANY_QUEUES),
            "at least 1"
        );
        let m = Mqr::with_limits(2, 100);
        m.try_open("a", 1).unwrap();
        m.try_open("b", 1).unwrap();
        assert_eq!(
            m.try_open("c", 1).err(),
            Some(TOO_MANY_QUEUES),
            "third queue"
        );
        // The refused one's slots were given back.
        assert_eq!(m.slots.load(Ordering::SeqCst), 2);
        drop(b);
    }

    #[test]
    fn a_full_queue_hands_the_message_back_and_keeps_order() {
        let m = Mqr::default();
        let q = m.open("t", 2);
        assert!(Arc::ptr_eq(&q, &m.open("t", 99)));
        assert_eq!(q.capacity(), 2);
        q.try_post(msg("a")).unwrap();
        q.try_post(msg("b")).unwrap();
        assert_eq!(&*q.try_post(msg("c")).unwrap_err(), b"c");
        let never = || false;
        let (back, why) = q
            .post(msg("c"), Duration::from_millis(20), &never)
            .unwrap_err();
        assert_eq!((&*back, why), (&b"c"[..], Wait::Timeout));
        assert_eq!(m.leftovers(), vec![("t".to_string(), 2)]);
        assert_eq!(&*q.poll().unwrap(), b"a");
        assert_eq!(&*q.receive(Duration::ZERO, &never).unwrap(), b"b");
        assert_eq!(
            q.receive(Duration::from_millis(10), &never),
            Err(Wait::Timeout)
        );
        assert!(m.leftovers().is_empty());
    }

    #[test]
    fn a_message_given_back_is_received_before_those_posted_after_it() {
        let q = Queue::with_max_bytes("back".into(), 2, 4);
        q.try_post(msg("ab")).unwrap();
        q.try_post(msg("cd")).unwrap();
        let first = q.poll().unwrap();
        // Its place taken meanwhile (the ring is full again, in slots and bytes).
        q.try_post(msg("ef")).unwrap();
        q.put_back(first);
        assert_eq!(q.len(), 3);
        assert_eq!(
            &*q.poll().unwrap(),
            b"ab",
            "it goes first, as it was posted first"
        );
        assert_eq!(&*q.poll().unwrap(), b"cd");
        assert_eq!(&*q.receive(Duration::ZERO, &|| false).unwrap(), b"ef");
        assert!(q.is_empty());
        // Its bytes were released with it: the queue takes a full load again.
        q.try_post(msg("gh")).unwrap();
        q.try_post(msg("ij")).unwrap();
        assert!(q.try_post(msg("k")).is_err());
    }

    /// Two receivers of a version being replaced each took a message and give it back, the
    /// later one first: the new version still receives them in the order they were posted.
    #[test]
    fn messages_given_back_out_of_order_are_received_in_the_order_posted() {
        let q = Queue::with_max_bytes("back".into(), 8, 64);
        for m in ["m1", "m2", "m3"] {
            q.try_post(msg(m)).unwrap();
        }
        let (m1, m2) = (q.poll().unwrap(), q.poll().unwrap());
        q.put_back(m2);
        q.put_back(m1);
        for m in ["m1", "m2", "m3"] {
            assert_eq!(&*q.poll().unwrap(), m.as_bytes());
        }
        // Numbers wrap: the order holds across the wrap.
        q.next_seq.store(u32::MAX, Ordering::Relaxed);
        for m in ["w1", "w2"] {
            q.try_post(msg(m)).unwrap();
        }
        let (w1, w2) = (q.poll().unwrap(), q.poll().unwrap());
        q.put_back(w2);
        q.put_back(w1);
        assert_eq!(&*q.poll().unwrap(), b"w1");
        assert_eq!(&*q.poll().unwrap(), b"w2");
    }

    #[test]
    fn a_queue_holds_at_most_max_bytes_of_payload() {
        let q = Queue::with_max_bytes("b".into(), 100, 100);
        q.try_post(vec![1; 40].into_boxed_slice()).unwrap();
        q.try_post(vec![2; 40].into_boxed_slice()).unwrap();
        // Room for 98 more messages, not for 40 more bytes.
        assert_eq!(
            q.try_post(vec![3; 40].into_boxed_slice())
                .unwrap_err()
                .len(),
            40
        );
        let never = || false;
        let (_, why) = q
            .post(
                vec![3; 40].into_boxed_slice(),
                Duration::from_millis(10),
                &never,
            )
            .unwrap_err();
        assert_eq!(why, Wait::Timeout);
        q.try_post(vec![4; 20].into_boxed_slice()).unwrap();
        // Taking one frees its bytes.
        assert_eq!(q.poll().unwrap()[0], 1);
        q.try_post(vec![5; 40].into_boxed_slice()).unwrap();
        assert!(q.fits(100) && !q.fits(101));
        let got: Vec<u8> = std::iter::from_fn(|| q.poll()).map(|m| m[0]).collect();
        assert_eq!(got, vec![2, 4, 5]);
        q.try_post(vec![6; 100].into_boxed_slice()).unwrap();
    }

    #[test]
    fn a_stopping_receiver_drains_first_and_a_blocked_one_wakes_on_stop() {
        let q = Arc::new(Queue::new("s".into(), 4, Arc::new(Total::new(0))));
        q.try_post(msg("x")).unwrap();
        let yes = || true;
        assert_eq!(&*q.receive(Duration::from_secs(60), &yes).unwrap(), b"x");
        assert_eq!(q.receive(Duration::from_secs(60), &yes), Err(Wait::Stopped));

        let stop = Arc::new(AtomicBool::new(false));
        let (q2, s2) = (Arc::clone(&q), Arc::clone(&stop));
        let t = std::thread::spawn(move || {
            q2.receive(Duration::from_secs(60), &|| s2.load(Ordering::SeqCst))
        });
        // Wait until the receiver is announced, then stop it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while q.recv_waiters.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "receiver never waited");
            std::thread::yield_now();
        }
        stop.store(true, Ordering::SeqCst);
        q.wake_all();
        assert_eq!(t.join().unwrap(), Err(Wait::Stopped));
    }

    #[test]
    fn blocking_post_and_receive_move_every_message_exactly_once() {
        let q = Arc::new(Queue::new("p".into(), 3, Arc::new(Total::new(0))));
        let producers: Vec<_> = (0..4u32)
            .map(|p| {
                let q = Arc::clone(&q);
                std::thread::spawn(move || {
                    for i in 0..2000u32 {
                        let m: Box<[u8]> = [p.to_le_bytes(), i.to_le_bytes()].concat().into();
                        q.post(m, Duration::from_secs(30), &|| false).unwrap();
                    }
                })
            })
            .collect();
        let total = Arc::new(AtomicUsize::new(0));
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let (q, total) = (Arc::clone(&q), Arc::clone(&total));
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let all_in = || total.load(Ordering::SeqCst) == 8000;
                    loop {
                        match q.receive(Duration::from_millis(200), &all_in) {
                            Ok(m) => {
                                let p = u32::from_le_bytes(m[..4].try_into().unwrap());
                                let i = u32::from_le_bytes(m[4..].try_into().unwrap());
                                got.push((p, i));
                                total.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(Wait::Stopped) => return got,
                            Err(Wait::Timeout) => {}
                        }
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut all = Vec::new();
        for c in consumers {
            let got = c.join().unwrap();
            for p in 0..4 {
                let seq: Vec<u32> = got.iter().filter(|g| g.0 == p).map(|g| g.1).collect();
                assert!(seq.windows(2).all(|w| w[0] < w[1]), "order of producer {p}");
            }
            all.extend(got);
        }
        all.sort();
        let want: Vec<(u32, u32)> = (0..4)
            .flat_map(|p| (0..2000).map(move |i| (p, i)))
            .collect();
        assert_eq!(all, want);
    }
}
