//! The hand-off from IOWorkers to one Lua instance: batches, one wake-up per batch, and the
//! back-pressure counters.
//!
//! Owns the instance's bounded queue of [`Batch`]es, the parking protocol of the instance
//! thread and the list of connections paused because the queue was above its high-water mark.
//! It never runs Lua and never blocks a producer: a full queue hands the batch back.
//!
//! Wake-up protocol (no hand-off is lost): the consumer sets `sleeping`, looks at the queue
//! once more and only then parks; a producer pushes and then swaps `sleeping` to false,
//! unparking only when it was true. Both use SeqCst, so either the consumer sees the batch or
//! the producer sees the flag; `unpark` before `park` makes `park` return at once.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::behind::Behind;
use super::busy::Busy;
use crate::net::handle::ConnId;
use crate::sync::mpmc::ArrayQueue;

/// What happened on a connection, in the order the worker saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Open,
    /// A message with this opcode; its payload is `bytes[start..start + len]` of the batch.
    Message(u8),
    /// The connection is ending: close it once the messages before are answered (the worker
    /// chooses the code).
    Drain,
    Close,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Event {
    pub conn: ConnId,
    pub kind: Kind,
    start: usize,
    len: usize,
}

/// Events of one worker for one instance, gathered during one worker loop iteration. All
/// payloads share one arena, so a batch costs one allocation however many messages it holds.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub events: Vec<Event>,
    bytes: Vec<u8>,
    pub messages: usize,
    /// Close events in `events` (what `Inbox::handled_closes` takes off the open count).
    closes: usize,
    /// Connections the worker stopped reading while this batch was gathered; registered by
    /// [`Inbox::push`] before the batch is published, so its `done` resumes them.
    to_pause: Vec<ConnId>,
    /// Connections the worker stopped reading for what they handed over themselves
    /// (`Service::resume_when_handled`): the consumer resumes them once this batch, which
    /// holds the last message of each, is handled.
    pub resume_after: Vec<ConnId>,
    /// The worker that gathered it, and its flush count when it handed the batch over (see
    /// [`Inbox::completed`]).
    pub worker: usize,
    pub flushes: u64,
}

impl Batch {
    pub fn push_message(&mut self, conn: ConnId, opcode: u8, payload: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        self.events.push(Event {
            conn,
            kind: Kind::Message(opcode),
            start,
            len: payload.len(),
        });
        self.messages += 1;
    }

    pub fn push(&mut self, conn: ConnId, kind: Kind) {
        if matches!(kind, Kind::Close) {
            self.closes += 1;
        }
        self.events.push(Event {
            conn,
            kind,
            start: 0,
            len: 0,
        });
    }

    /// Producer: `conn` is paused (once per run of its messages; repeats are dropped here).
    pub fn pause(&mut self, conn: ConnId) {
        if self.to_pause.last() != Some(&conn) {
            self.to_pause.push(conn);
        }
    }

    /// Producer: resume `conn` once this batch is handled.
    pub fn resume_after(&mut self, conn: ConnId) {
        if self.resume_after.last() != Some(&conn) {
            self.resume_after.push(conn);
        }
    }

    pub fn payload(&self, e: &Event) -> &[u8] {
        self.bytes.get(e.start..e.start + e.len).unwrap_or(&[])
    }

    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Empties the batch, keeping its buffers.
    fn clear(&mut self) {
        self.events.clear();
        self.bytes.clear();
        self.messages = 0;
        self.closes = 0;
        self.to_pause.clear();
        self.resume_after.clear();
    }
}

/// What [`Inbox::next_within`] found.
pub(crate) enum Next {
    Batch(Batch),
    /// No batch came within the limit.
    TimedOut,
    /// Stopped, and every batch handed over has been taken.
    Stopped,
}

/// Processed batches kept for the workers to fill again.
const SPARE_BATCHES: usize = 16;
/// A batch whose arena grew beyond this is freed rather than kept.
const SPARE_MAX_BYTES: usize = 256 << 10;

pub(crate) struct Inbox {
    queue: ArrayQueue<Batch>,
    /// Processed batches on their way back to the workers (buffers reused, not reallocated).
    spare: ArrayQueue<Batch>,
    consumer: OnceLock<Thread>,
    sleeping: AtomicBool,
    stop: AtomicBool,
    /// Set by the consumer when, stopped, it found its queue empty and ended for good: a
    /// batch pushed after is lost ([`Inbox::take_lost`]). Set, and checked after a push
    /// once stopped, under `ending`.
    ended: AtomicBool,
    ending: Mutex<()>,
    /// Events and close events of batches pushed after the end, not yet reported.
    lost_events: AtomicUsize,
    lost_closes: AtomicUsize,
    /// Messages and payload bytes handed over and not yet processed.
    queued_msgs: AtomicUsize,
    queued_bytes: AtomicUsize,
    high_msgs: usize,
    high_bytes: usize,
    paused: Mutex<Vec<ConnId>>,
    has_paused: AtomicBool,
    /// Connections opened on this instance whose close it has not handled yet (a retiring
    /// version stops only once every `onDisconnect` has run, see `Registry::retire`).
    open_conns: AtomicUsize,
    /// Per worker, the `flushes` of the last batch of that worker whose messages the instance
    /// has handled and whose replies it has posted to the worker's command queue.
    completed: Box<[AtomicU64]>,
    /// How long the instance has been busy with the batch it handles.
    busy: Busy,
    /// The watch's view of the queue staying above its high-water mark.
    behind: Behind,
    /// Connections were paused since the watch's last look: `has_paused` alone goes false
    /// for the moment between a drain below half the mark and the next pause, which a look
    /// once a second may land in.
    paused_lately: AtomicBool,
}

impl Inbox {
    pub fn new(workers: usize, batches: usize, high_msgs: usize, high_bytes: usize) -> Inbox {
        Inbox {
            queue: ArrayQueue::new(batches.max(1)),
            spare: ArrayQueue::new(SPARE_BATCHES),
            consumer: OnceLock::new(),
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            ending: Mutex::new(()),
            lost_events: AtomicUsize::new(0),
            lost_closes: AtomicUsize::new(0),
            queued_msgs: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            high_msgs: high_msgs.max(1),
            high_bytes: high_bytes.max(1),
            paused: Mutex::new(Vec::new()),
            open_conns: AtomicUsize::new(0),
            has_paused: AtomicBool::new(false),
            completed: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            busy: Busy::default(),
            behind: Behind::default(),
            paused_lately: AtomicBool::new(false),
        }
    }

    /// Consumer: every message of `worker`'s batches up to `flushes` is handled and the
    /// commands it led to are posted (Release: a worker that reads this finds them queued).
    pub fn set_completed(&self, worker: usize, flushes: u64) {
        if let Some(c) = self.completed.get(worker) {
            c.store(flushes, Ordering::Release);
        }
    }

    /// Producer: the `flushes` up to which `worker`'s messages are handled and answered (see
    /// [`Inbox::set_completed`]); a message handed over when the worker's count was `n` is
    /// among them once this is `n` or more, since a worker's batches are handled in order.
    pub fn completed(&self, worker: usize) -> u64 {
        self.completed
            .get(worker)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// The consumer's time with its current batch.
    pub fn busy(&self) -> &Busy {
        &self.busy
    }

    /// For the watch, once a second: whether connections are paused until this queue drains
    /// (it went above its high-water mark), now or since its last look; and its view of that.
    pub fn behind(&self) -> (bool, &Behind) {
        let lately = self.paused_lately.swap(false, Ordering::SeqCst);
        (
            lately || self.has_paused.load(Ordering::SeqCst),
            &self.behind,
        )
    }

    /// Messages and payload bytes handed over and not yet processed (for the status report).
    pub fn queued(&self) -> (usize, usize) {
        (
            self.queued_msgs.load(Ordering::Relaxed),
            self.queued_bytes.load(Ordering::Relaxed),
        )
    }

    /// Producer: would the queue be above its high-water mark with `msgs`/`bytes` more?
    pub fn over_high_water(&self, msgs: usize, bytes: usize) -> bool {
        self.queued_msgs.load(Ordering::Relaxed) + msgs > self.high_msgs
            || self.queued_bytes.load(Ordering::Relaxed) + bytes > self.high_bytes
    }

    /// Producer: hand a batch over with at most one wake-up; gives it back when the queue is full.
    /// The connections it paused are remembered first: each gets a Resume later.
    /// A batch pushed after the consumer ended reaches no one: it is dropped and counted
    /// ([`Inbox::take_lost`]).
    // The batch comes back by value for the retry: boxing it would cost an allocation per
    // hand-off to save a copy of a few words when the queue is full.
    #[allow(clippy::result_large_err)]
    pub fn push(&self, mut batch: Batch) -> Result<(), Batch> {
        if self.ended.load(Ordering::SeqCst) {
            self.lose(&batch);
            return Ok(());
        }
        let mut paused_here = Vec::new();
        if !batch.to_pause.is_empty() {
            let mut p = self.paused.lock().unwrap_or_else(|e| e.into_inner());
            p.extend_from_slice(&batch.to_pause);
            paused_here = std::mem::take(&mut batch.to_pause);
            self.has_paused.store(true, Ordering::SeqCst);
            self.paused_lately.store(true, Ordering::SeqCst);
        }
        let (msgs, bytes) = (batch.messages, batch.byte_len());
        // Count before publishing so that the consumer's decrement can never come first.
        self.queued_msgs.fetch_add(msgs, Ordering::Relaxed);
        self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Err(mut back) = self.queue.push(batch) {
            self.queued_msgs.fetch_sub(msgs, Ordering::Relaxed);
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            // Its pauses go back with it: left here, the `done` of an earlier batch would
            // resume them while their messages still wait in the producer's hands. (One that
            // did so already resumed early: its next read pauses it again.)
            if !paused_here.is_empty() {
                let mut p = self.paused.lock().unwrap_or_else(|e| e.into_inner());
                let before = p.len();
                p.retain(|c| !paused_here.contains(c));
                if p.len() < before {
                    back.to_pause = paused_here;
                }
            }
            return Err(back);
        }
        // Against the consumer's end (`next_within`), which looks at the queue a last time
        // and sets `ended` under `ending`: a push it did not see came after that look, so
        // this finds `ended` set (its lock taken after the consumer's) and the batch lost. A
        // push before `stop` was set is seen by the consumer's looks, which all follow it.
        if self.stop.load(Ordering::SeqCst) {
            let _end = self.ending.lock().unwrap_or_else(|e| e.into_inner());
            if self.ended.load(Ordering::SeqCst) {
                while let Some(b) = self.queue.pop() {
                    self.queued_msgs.fetch_sub(b.messages, Ordering::Relaxed);
                    self.queued_bytes.fetch_sub(b.byte_len(), Ordering::Relaxed);
                    self.lose(&b);
                }
                return Ok(());
            }
        }
        self.wake();
        Ok(())
    }

    fn lose(&self, batch: &Batch) {
        self.lost_events
            .fetch_add(batch.events.len(), Ordering::Relaxed);
        self.lost_closes.fetch_add(batch.closes, Ordering::Relaxed);
    }

    /// Events and close events (connections whose `onDisconnect` will not run) of batches
    /// pushed after the consumer ended, since the last call.
    pub fn take_lost(&self) -> (usize, usize) {
        (
            self.lost_events.swap(0, Ordering::Relaxed),
            self.lost_closes.swap(0, Ordering::Relaxed),
        )
    }

    fn wake(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            if let Some(t) = self.consumer.get() {
                t.unpark();
            }
        }
    }

    /// Producer: a connection bound to this instance opened.
    pub fn opened(&self) {
        self.open_conns.fetch_add(1, Ordering::SeqCst);
    }

    /// Consumer: the close events of `batch` have been handled.
    pub fn handled_closes(&self, batch: &Batch) {
        if batch.closes > 0 {
            self.open_conns.fetch_sub(batch.closes, Ordering::SeqCst);
        }
    }

    /// Connections opened here whose close has not been handled yet.
    pub fn open_conns(&self) -> usize {
        self.open_conns.load(Ordering::SeqCst)
    }

    /// Asks the consumer to finish: it drains what is queued, then `next_within` returns
    /// `Next::Stopped`.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.sleeping.store(false, Ordering::SeqCst);
        if let Some(t) = self.consumer.get() {
            t.unpark();
        }
    }

    /// Consumer: the next batch, parking while there is none; `None` once stopped and drained.
    #[cfg(test)]
    pub fn next(&self) -> Option<Batch> {
        match self.next_within(None) {
            Next::Batch(b) => Some(b),
            Next::TimedOut | Next::Stopped => None,
        }
    }

    /// Consumer: the next batch, parking while there is none but at most `limit` (for ever
    /// without one); [`Next::Stopped`] once stopped and drained.
    pub fn next_within(&self, limit: Option<Duration>) -> Next {
        let _ = self.consumer.set(std::thread::current());
        let deadline = limit.map(|l| Instant::now() + l);
        loop {
            if let Some(b) = self.queue.pop() {
                return Next::Batch(b);
            }
            if self.stop.load(Ordering::SeqCst) {
                if let Some(b) = self.queue.pop() {
                    return Next::Batch(b);
                }
                // The end, for good only when a last look under `ending` finds nothing: what a
                // producer pushes after is its to count lost (see `push`).
                let _end = self.ending.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(b) = self.queue.pop() {
                    return Next::Batch(b);
                }
                self.ended.store(true, Ordering::SeqCst);
                return Next::Stopped;
            }
            self.sleeping.store(true, Ordering::SeqCst);
            if !self.queue.is_empty() || self.stop.load(Ordering::SeqCst) {
                self.sleeping.store(false, Ordering::SeqCst);
                continue;
            }
            match deadline {
                None => std::thread::park(),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.sleeping.store(false, Ordering::SeqCst);
                        // A batch pushed meanwhile is taken now, not after the caller's turn.
                        return self.queue.pop().map_or(Next::TimedOut, Next::Batch);
                    }
                    // Wakes at `at`, or earlier (an unpark, or spuriously: looked at again).
                    std::thread::park_timeout(left);
                }
            }
            self.sleeping.store(false, Ordering::SeqCst);
        }
    }

    /// Producer: an empty batch to gather the next one in (a processed one when available).
    pub fn fresh_batch(&self) -> Batch {
        self.spare.pop().unwrap_or_default()
    }

    /// Consumer: hands a processed batch back for reuse (its contents are dropped).
    pub fn recycle(&self, mut batch: Batch) {
        if batch.bytes.capacity() > SPARE_MAX_BYTES {
            return;
        }
        batch.clear();
        let _ = self.spare.push(batch);
    }

    /// Consumer: a batch of `msgs`/`bytes` is done. Returns the paused connections to resume
    /// once the queue is below half its high-water mark.
    pub fn done(&self, msgs: usize, bytes: usize) -> Vec<ConnId> {
        let m = self
            .queued_msgs
            .fetch_sub(msgs, Ordering::Relaxed)
            .saturating_sub(msgs);
        let b = self
            .queued_bytes
            .fetch_sub(bytes, Ordering::Relaxed)
            .saturating_sub(bytes);
        if !self.has_paused.load(Ordering::SeqCst)
            || m > self.high_msgs / 2
            || b > self.high_bytes / 2
        {
            return Vec::new();
        }
        let mut p = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        self.has_paused.store(false, Ordering::SeqCst);
        std::mem::take(&mut *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn every_message_of_every_producer_arrives_once_without_lost_wake_ups() {
        const PRODUCERS: usize = 3;
        const PER: u32 = 20_000;
        let inbox = Arc::new(Inbox::new(3, 4, usize::MAX / 2, usize::MAX / 2));
        let (tx, rx) = channel();
        let consumer = {
            let inbox = Arc::clone(&inbox);
            std::thread::spawn(move || {
                let mut seen = vec![vec![false; PER as usize]; PRODUCERS];
                let mut n = 0usize;
                while let Some(b) = inbox.next() {
                    for e in &b.events {
                        let w = e.conn.worker();
                        let i = u32::from_le_bytes(b.payload(e).try_into().unwrap());
                        assert!(!seen[w][i as usize], "duplicate");
                        seen[w][i as usize] = true;
                        n += 1;
                    }
                    inbox.done(b.messages, b.byte_len());
                }
                tx.send(n).unwrap();
            })
        };
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|w| {
                let inbox = Arc::clone(&inbox);
                std::thread::spawn(move || {
                    let mut batch = Batch::default();
                    for i in 0..PER {
                        batch.push_message(ConnId::new(w, 0, 0), 2, &i.to_le_bytes());
                        // Small, irregular batches; a full queue hands the batch back.
                        if i % (w as u32 + 2) == 0 {
                            while let Err(back) = inbox.push(std::mem::take(&mut batch)) {
                                batch = back;
                                std::thread::yield_now();
                            }
                        }
                    }
                    while !batch.is_empty() {
                        match inbox.push(std::mem::take(&mut batch)) {
                            Ok(()) => {}
                            Err(back) => {
                                batch = back;
                                std::thread::yield_now();
                            }
                        }
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        inbox.stop();
        let n = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("consumer hung");
        consumer.join().unwrap();
        assert_eq!(n, PRODUCERS * PER as usize);
    }

    #[test]
    fn a_wait_with_a_limit_ends_with_a_batch_when_one_comes_and_times_out_otherwise() {
        let inbox = Arc::new(Inbox::new(1, 4, 100, 1 << 20));
        assert!(matches!(
            inbox.next_within(Some(Duration::from_millis(1))),
            Next::TimedOut
        ));
        // A batch pushed while the consumer waits ends the wait (an hour's limit: the test
        // would hang, not pass, if the push did not wake it).
        let producer = {
            let inbox = Arc::clone(&inbox);
            std::thread::spawn(move || {
                let mut b = Batch::default();
                b.push_message(ConnId::new(0, 1, 1), 2, b"x");
                assert!(inbox.push(b).is_ok());
            })
        };
        match inbox.next_within(Some(Duration::from_secs(3600))) {
            Next::Batch(b) => assert_eq!(b.messages, 1),
            _ => panic!("no batch"),
        }
        producer.join().unwrap();
        inbox.stop();
        assert!(matches!(
            inbox.next_within(Some(Duration::from_secs(3600))),
            Next::Stopped
        ));
    }

    /// A batch handed over once the consumer has drained its queue and ended (a worker's
    /// retry after a retiring version was given up on) reaches no one: it is counted as
    /// lost, for a log line, not left in a queue nobody reads.
    #[test]
    fn a_batch_pushed_after_the_consumer_ended_is_counted_lost() {
        let inbox = Inbox::new(1, 4, 100, 1 << 20);
        inbox.stop();
        assert!(matches!(inbox.next_within(None), Next::Stopped));
        let mut b = Batch::default();
        b.push_message(ConnId::new(0, 1, 1), 1, b"x");
        b.push(ConnId::new(0, 1, 1), Kind::Close);
        assert!(inbox.push(b).is_ok());
        assert!(inbox.queue.is_empty());
        assert_eq!(inbox.take_lost(), (2, 1));
        assert_eq!(inbox.take_lost(), (0, 0), "reported once");
        assert!(!inbox.over_high_water(100, 0), "not counted as queued");
    }

    #[test]
    fn paused_connections_are_resumed_once_below_half_the_mark() {
        let inbox = Inbox::new(1, 8, 4, 1 << 20);
        let c = ConnId::new(0, 1, 1);
        let mut b = Batch::default();
        for _ in 0..5 {
            b.push_message(c, 1, b"x");
        }
        assert!(inbox.over_high_water(b.messages, b.byte_len()));
        b.pause(c);
        b.pause(c);
        assert!(inbox.push(b).is_ok());
        let got = inbox.next().unwrap();
        assert_eq!(inbox.done(got.messages, got.byte_len()), vec![c]);
        assert!(inbox.done(0, 0).is_empty(), "resumed once");
    }

    /// A batch the full queue refuses takes its pauses back: the `done` of a batch ahead of it
    /// must not resume a connection whose messages have not reached the queue yet.
    #[test]
    fn a_refused_batch_keeps_its_pauses() {
        let inbox = Inbox::new(1, 1, 4, 1 << 20);
        let (a, c) = (ConnId::new(0, 1, 1), ConnId::new(0, 2, 1));
        let mut first = Batch::default();
        first.push_message(a, 1, b"x");
        assert!(inbox.push(first).is_ok());
        let mut second = Batch::default();
        for _ in 0..5 {
            second.push_message(c, 1, b"y");
        }
        second.pause(c);
        let mut second = inbox.push(second).expect_err("the queue is full");
        let got = inbox.next().unwrap();
        assert!(
            inbox.done(got.messages, got.byte_len()).is_empty(),
            "not resumed before its messages are queued"
        );
        second = match inbox.push(second) {
            Ok(()) => Batch::default(),
            Err(b) => b,
        };
        assert_eq!(second.messages, 0, "queued now");
        let got = inbox.next().unwrap();
        assert_eq!(inbox.done(got.messages, got.byte_len()), vec![c]);
    }
}
