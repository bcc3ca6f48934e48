//! A bounded multi-producer multi-consumer queue: Dmitry Vyukov's bounded MPMC algorithm
//! (<https://www.1024cores.net/home/lock-free-algorithms/queues/bounded-mpmc-queue>), in the
//! packed-stamp form used by crossbeam-queue's `ArrayQueue`.
//!
//! Owns: a fixed ring of slots allocated once in [`ArrayQueue::new`]. Every cross-thread hand-off
//! of the runtime (balancer -> worker inbox, service -> worker commands) goes through it, so a full
//! queue is the back-pressure signal: `push` hands the value back, it never blocks, grows or drops.
//! Must never: allocate after construction, block on a lock, or lose/duplicate a value.
//!
//! # Stamps
//!
//! `head`, `tail` and each slot's `stamp` are *stamps*: one `usize` packing a lap number in the
//! high bits and a slot index in the low bits. `one_lap` is the smallest power of two greater than
//! `cap`, so `stamp & (one_lap - 1)` is the index and `stamp & !(one_lap - 1)` the lap. Moving past
//! the last slot adds one lap and resets the index to 0; laps wrap around `usize` (all lap
//! arithmetic is `wrapping_*`).
//!
//! A slot's stamp says whose turn it is:
//! - `stamp == tail` (same lap and index): the slot is empty and the producer that moves `tail` past
//!   it may write it;
//! - `stamp == head + 1`: the slot holds the value written in this lap and the consumer that moves
//!   `head` past it may read it;
//! - anything else: another thread has claimed the slot and not yet published its write/read, or
//!   the slot is a whole lap ahead/behind (queue full/empty).
//!
//! A producer claims a slot by CAS on `tail`, writes the value, then publishes with
//! `stamp = tail + 1` (Release). A consumer claims by CAS on `head`, reads the value, then frees the
//! slot for the next lap with `stamp = head + one_lap` (Release). The Acquire load of the stamp
//! before the claim is what makes the other side's write/read of the value visible.
//!
//! # Invariants
//! - `head` never passes `tail`, and `tail` is never more than one lap (`cap` slots) ahead of
//!   `head`: 0 <= tail - head <= cap (counted in slots).
//! - A slot's value is initialised exactly when its stamp is `head_of_that_slot + 1`, i.e. between
//!   a producer's publication and the matching consumer's claim; only the thread that won the CAS
//!   touches the value, so no value is read twice or overwritten unread.
//! - At `Drop` (exclusive access, no claim in flight) the initialised slots are exactly the `len()`
//!   slots starting at `head`'s index, and those are the values dropped.
//!
//! Under `--cfg loom` the atomics and cells come from loom (see [`super::shim`]); the loom model
//! tests at the end of this file explore every interleaving of two threads on a tiny queue.

use std::fmt;
use std::mem::MaybeUninit;

use super::cache_padded::CachePadded;
use super::shim::{fence, spin_loop, yield_now, AtomicUsize, Ordering, UnsafeCell};

/// One cell of the ring.
struct Slot<T> {
    /// Whose turn this slot is (see the module doc): equal to `tail` when it may be written,
    /// equal to `head + 1` when it holds a value that may be read.
    stamp: AtomicUsize,
    /// Initialised only between a producer's publication and the consumer's claim.
    value: UnsafeCell<MaybeUninit<T>>,
}

/// A bounded lock-free MPMC queue; `push` returns the value back when the queue is full.
///
/// ```
/// use lapps::sync::mpmc::ArrayQueue;
///
/// let q = ArrayQueue::new(2);
/// assert_eq!(q.push('a'), Ok(()));
/// assert_eq!(q.push('b'), Ok(()));
/// assert_eq!(q.push('c'), Err('c'));
/// assert_eq!(q.pop(), Some('a'));
/// ```
pub struct ArrayQueue<T> {
    /// Stamp of the next slot to read. Padded so consumers and producers do not false-share.
    head: CachePadded<AtomicUsize>,
    /// Stamp of the next slot to write.
    tail: CachePadded<AtomicUsize>,
    slots: Box<[Slot<T>]>,
    /// Stamp value of `{lap: 1, index: 0}`: the smallest power of two greater than `cap`.
    one_lap: usize,
}

// SAFETY: the queue owns its values; sending the queue sends them, which is fine when `T: Send`.
unsafe impl<T: Send> Send for ArrayQueue<T> {}
// SAFETY: the slot protocol (a CAS on head/tail claims a slot for exactly one thread, stamps
// published with Release and read with Acquire) guarantees each value is accessed by one thread at
// a time and moved between threads whole, so sharing `&ArrayQueue` needs only `T: Send`.
unsafe impl<T: Send> Sync for ArrayQueue<T> {}

/// Spin a little, then yield: short waits are common (another thread is between its claim and
/// its publication), long ones mean that thread was descheduled.
struct Backoff {
    step: u32,
}

impl Backoff {
    const SPIN_LIMIT: u32 = 6;

    fn new() -> Self {
        Self { step: 0 }
    }

    /// After a lost CAS: another thread made progress, retry soon.
    fn spin(&mut self) {
        for _ in 0..1u32 << self.step.min(Self::SPIN_LIMIT) {
            spin_loop();
        }
        if self.step <= Self::SPIN_LIMIT {
            self.step += 1;
        }
    }

    /// Waiting on another thread to publish a stamp: spin, and yield once spinning is long.
    fn snooze(&mut self) {
        if self.step <= Self::SPIN_LIMIT {
            for _ in 0..1u32 << self.step {
                spin_loop();
            }
            self.step += 1;
        } else {
            yield_now();
        }
    }
}

impl<T> ArrayQueue<T> {
    /// A queue holding at most `cap` values.
    ///
    /// # Panics
    /// If `cap` is 0 (a queue that can never accept a value is a configuration bug) or so large
    /// that no lap bit would remain.
    pub fn new(cap: usize) -> Self {
        Self::with_first_lap(cap, 0)
    }

    /// The queue with `head` = `tail` = `{lap: first_lap, index: 0}`; tests start near the end
    /// of the `usize` range to exercise lap wrap-around.
    fn with_first_lap(cap: usize, first_lap: usize) -> Self {
        assert!(cap > 0, "ArrayQueue capacity must be non-zero");
        let one_lap = (cap + 1)
            .checked_next_power_of_two()
            .expect("ArrayQueue capacity too large");
        let start = first_lap & !(one_lap - 1);
        // Slot i is writable by the producer whose tail is `{lap: start, index: i}`.
        let slots = (0..cap)
            .map(|i| Slot {
                stamp: AtomicUsize::new(start | i),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Self {
            head: CachePadded::new(AtomicUsize::new(start)),
            tail: CachePadded::new(AtomicUsize::new(start)),
            slots,
            one_lap,
        }
    }

    /// The stamp following `stamp`: next index, or index 0 of the next lap after the last slot.
    #[inline]
    fn next(&self, stamp: usize) -> usize {
        let index = stamp & (self.one_lap - 1);
        if index + 1 < self.slots.len() {
            // No carry into the lap bits: index + 1 < cap < one_lap.
            stamp + 1
        } else {
            (stamp & !(self.one_lap - 1)).wrapping_add(self.one_lap)
        }
    }

    /// Appends `value`, or hands it back in `Err` when the queue is full. Never blocks.
    pub fn push(&self, value: T) -> Result<(), T> {
        let mut backoff = Backoff::new();
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            let index = tail & (self.one_lap - 1);
            let Some(slot) = self.slots.get(index) else {
                // A stamp's index is always < cap (see `next`); unreachable.
                debug_assert!(false, "tail index {index} out of range");
                return Err(value);
            };
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == tail {
                // The slot is free in this lap: claim it by moving the tail.
                match self.tail.compare_exchange_weak(
                    tail,
                    self.next(tail),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: winning the CAS from `tail` makes this thread the only one that
                        // may touch the slot until it publishes `tail + 1`; the Acquire load of
                        // `stamp == tail` ordered the previous consumer's read before this write,
                        // and the slot is uninitialised (its previous value was moved out).
                        slot.value
                            .with_mut(|p| unsafe { p.write(MaybeUninit::new(value)) });
                        slot.stamp.store(tail + 1, Ordering::Release);
                        return Ok(());
                    }
                    Err(current) => {
                        tail = current;
                        backoff.spin();
                    }
                }
            } else if stamp.wrapping_add(self.one_lap) == tail + 1 {
                // The slot still holds last lap's value: full, unless a consumer moved on since.
                fence(Ordering::SeqCst);
                let head = self.head.load(Ordering::Relaxed);
                if head.wrapping_add(self.one_lap) == tail {
                    return Err(value);
                }
                // A consumer claimed the slot and has not freed it yet: a wait on another
                // thread, which may be descheduled on this very core (a pinned worker).
                backoff.snooze();
                tail = self.tail.load(Ordering::Relaxed);
            } else {
                // Another producer claimed this slot and has not published yet, or our `tail` is
                // stale: wait for the stamp to move.
                backoff.snooze();
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Removes the oldest value, or `None` when the queue is empty. Never blocks.
    pub fn pop(&self) -> Option<T> {
        let mut backoff = Backoff::new();
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let index = head & (self.one_lap - 1);
            let Some(slot) = self.slots.get(index) else {
                debug_assert!(false, "head index {index} out of range");
                return None;
            };
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == head.wrapping_add(1) {
                // The slot holds this lap's value: claim it by moving the head.
                match self.head.compare_exchange_weak(
                    head,
                    self.next(head),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: winning the CAS from `head` makes this thread the only reader of
                        // the slot; the Acquire load of `stamp == head + 1` synchronised with the
                        // producer's Release store, so the value is initialised and visible. It is
                        // moved out exactly once and the slot is marked free for the next lap.
                        let value = slot.value.with(|p| unsafe { p.read().assume_init() });
                        slot.stamp
                            .store(head.wrapping_add(self.one_lap), Ordering::Release);
                        return Some(value);
                    }
                    Err(current) => {
                        head = current;
                        backoff.spin();
                    }
                }
            } else if stamp == head {
                // The slot was not written in this lap: empty, unless a producer moved on since.
                fence(Ordering::SeqCst);
                let tail = self.tail.load(Ordering::Relaxed);
                if tail == head {
                    return None;
                }
                // A producer claimed the slot and has not published it yet (as below).
                backoff.snooze();
                head = self.head.load(Ordering::Relaxed);
            } else {
                // A producer claimed the slot and has not published yet, or `head` is stale.
                backoff.snooze();
                head = self.head.load(Ordering::Relaxed);
            }
        }
    }

    /// Number of values in the queue; a snapshot that may be stale as soon as it is returned.
    pub fn len(&self) -> usize {
        loop {
            let tail = self.tail.load(Ordering::SeqCst);
            let head = self.head.load(Ordering::SeqCst);
            // Only a (head, tail) pair read while tail stood still is consistent.
            if self.tail.load(Ordering::SeqCst) == tail {
                let mask = self.one_lap - 1;
                let (hix, tix) = (head & mask, tail & mask);
                return if hix < tix {
                    tix - hix
                } else if hix > tix {
                    self.slots.len() - hix + tix
                } else if tail == head {
                    0
                } else {
                    self.slots.len()
                };
            }
            spin_loop();
        }
    }

    /// Whether the queue holds no value (a snapshot, like [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        let head = self.head.load(Ordering::SeqCst);
        let tail = self.tail.load(Ordering::SeqCst);
        head == tail
    }

    /// Whether the queue holds `capacity()` values (a snapshot).
    pub fn is_full(&self) -> bool {
        let tail = self.tail.load(Ordering::SeqCst);
        let head = self.head.load(Ordering::SeqCst);
        head.wrapping_add(self.one_lap) == tail
    }

    /// The most values the queue holds at once.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

impl<T> Drop for ArrayQueue<T> {
    fn drop(&mut self) {
        if !std::mem::needs_drop::<T>() {
            return;
        }
        let cap = self.slots.len();
        let hix = self.head.load(Ordering::Relaxed) & (self.one_lap - 1);
        for i in 0..self.len() {
            let index = if hix + i < cap {
                hix + i
            } else {
                hix + i - cap
            };
            if let Some(slot) = self.slots.get(index) {
                // SAFETY: `&mut self` means no claim is in flight, so (module invariants) the
                // `len()` slots from head's index on hold initialised values that nobody else will
                // read; each is dropped once here and `MaybeUninit` will not drop it again.
                slot.value.with_mut(|p| unsafe { (*p).assume_init_drop() });
            }
        }
    }
}

impl<T> fmt::Debug for ArrayQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayQueue")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;
