//! Behaviour of the queue under real threads (and under Miri, with smaller sizes).

use super::ArrayQueue;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Scale a workload down under Miri, which runs code ~1000x slower.
const fn scaled(normal: usize, miri: usize) -> usize {
    if cfg!(miri) {
        miri
    } else {
        normal
    }
}

/// A guard against a bug turning a wait loop into a hang: the loops below wait on a condition
/// (never a sleep) and panic once this deadline is past.
fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(if cfg!(miri) { 600 } else { 60 })
}

fn check(deadline: Instant, what: &str) {
    assert!(Instant::now() < deadline, "timed out waiting: {what}");
}

#[test]
fn new_queue_is_empty() {
    let q = ArrayQueue::<u32>::new(4);
    assert_eq!(q.capacity(), 4);
    assert_eq!(q.len(), 0);
    assert!(q.is_empty());
    assert!(!q.is_full());
    assert_eq!(q.pop(), None);
}

#[test]
#[should_panic(expected = "capacity must be non-zero")]
fn zero_capacity_panics() {
    let _ = ArrayQueue::<u32>::new(0);
}

#[test]
fn full_push_returns_the_same_value_and_empty_pop_returns_none() {
    let q = ArrayQueue::new(3);
    for i in 0..3 {
        assert_eq!(q.push(format!("v{i}")), Ok(()));
        assert_eq!(q.len(), i + 1);
    }
    assert!(q.is_full());
    assert_eq!(q.push("extra".to_string()), Err("extra".to_string()));
    assert_eq!(q.len(), 3);
    assert_eq!(q.pop().as_deref(), Some("v0"));
    assert!(!q.is_full());
    assert_eq!(q.push("v3".to_string()), Ok(()));
    assert_eq!(q.push("nope".to_string()), Err("nope".to_string()));
    for expected in ["v1", "v2", "v3"] {
        assert_eq!(q.pop().as_deref(), Some(expected));
    }
    assert_eq!(q.pop(), None);
    assert!(q.is_empty());
}

#[test]
fn capacity_one_alternates_full_and_empty() {
    let q = ArrayQueue::new(1);
    for i in 0..scaled(1000, 50) {
        assert_eq!(q.push(i), Ok(()));
        assert!(q.is_full());
        assert_eq!(q.len(), 1);
        assert_eq!(q.push(i + 1), Err(i + 1));
        assert_eq!(q.pop(), Some(i));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
    }
}

#[test]
fn wraps_around_many_laps_keeping_fifo_order() {
    let q = ArrayQueue::new(3);
    let mut next_in = 0usize;
    let mut next_out = 0usize;
    // Vary the fill level so head and tail cross the ring end at every relative position.
    for round in 0..scaled(5000, 100) {
        for _ in 0..(round % 3) + 1 {
            if q.push(next_in).is_ok() {
                next_in += 1;
            }
        }
        for _ in 0..(round % 2) + 1 {
            if let Some(v) = q.pop() {
                assert_eq!(v, next_out);
                next_out += 1;
            }
        }
        assert_eq!(q.len(), next_in - next_out);
    }
    while let Some(v) = q.pop() {
        assert_eq!(v, next_out);
        next_out += 1;
    }
    assert_eq!(next_out, next_in);
    assert!(next_in > q.capacity() * 100 || cfg!(miri));
}

#[test]
fn lap_counter_wraps_past_usize_max() {
    // Start two laps before the lap bits overflow, then run ten laps.
    let q = ArrayQueue::with_first_lap(5, usize::MAX - 2 * 8 - 7);
    let start = q.tail.load(Ordering::Relaxed);
    let mut out = 0;
    for i in 0..50usize {
        assert_eq!(q.push(i), Ok(()));
        if i % 5 == 4 {
            assert!(q.is_full());
            assert_eq!(q.push(99), Err(99));
            for _ in 0..5 {
                assert_eq!(q.pop(), Some(out));
                out += 1;
            }
            assert!(q.is_empty());
        }
    }
    assert!(q.tail.load(Ordering::Relaxed) < start, "tail did not wrap");
}

#[test]
fn spsc_delivers_every_value_once_in_order() {
    let n = scaled(100_000, 200);
    let q = Arc::new(ArrayQueue::new(16));
    let producer = {
        let q = Arc::clone(&q);
        thread::spawn(move || {
            let limit = deadline();
            for i in 0..n {
                let mut v = i;
                while let Err(back) = q.push(v) {
                    v = back;
                    check(limit, "space in the queue");
                    thread::yield_now();
                }
            }
        })
    };
    let limit = deadline();
    let mut expected = 0;
    while expected < n {
        match q.pop() {
            Some(v) => {
                assert_eq!(v, expected);
                expected += 1;
            }
            None => {
                check(limit, "a value from the producer");
                thread::yield_now();
            }
        }
    }
    producer.join().unwrap();
    assert_eq!(q.pop(), None);
}

#[test]
fn mpmc_4x4_consumes_every_value_exactly_once() {
    const THREADS: usize = 4;
    let per_producer = scaled(25_000, 50);
    let total = THREADS * per_producer;
    let q = Arc::new(ArrayQueue::new(8));
    let seen: Arc<Vec<AtomicUsize>> = Arc::new((0..total).map(|_| AtomicUsize::new(0)).collect());
    let consumed = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(2 * THREADS));
    let mut handles = Vec::new();
    for p in 0..THREADS {
        let (q, start) = (Arc::clone(&q), Arc::clone(&start));
        handles.push(thread::spawn(move || {
            start.wait();
            let limit = deadline();
            for i in 0..per_producer {
                let mut v = p * per_producer + i;
                while let Err(back) = q.push(v) {
                    v = back;
                    check(limit, "space in the queue");
                    thread::yield_now();
                }
            }
        }));
    }
    for _ in 0..THREADS {
        let (q, start) = (Arc::clone(&q), Arc::clone(&start));
        let (seen, consumed) = (Arc::clone(&seen), Arc::clone(&consumed));
        handles.push(thread::spawn(move || {
            start.wait();
            let limit = deadline();
            while consumed.load(Ordering::Relaxed) < total {
                match q.pop() {
                    Some(v) => {
                        seen[v].fetch_add(1, Ordering::Relaxed);
                        consumed.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        check(limit, "values from the producers");
                        thread::yield_now();
                    }
                }
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(consumed.load(Ordering::Relaxed), total);
    for (v, count) in seen.iter().enumerate() {
        assert_eq!(count.load(Ordering::Relaxed), 1, "value {v}");
    }
    assert!(q.is_empty());
}

/// Records its own drop in a per-id counter, so a leak (0) and a double drop (2) both show.
struct Tracked {
    id: usize,
    drops: Arc<Vec<AtomicUsize>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops[self.id].fetch_add(1, Ordering::SeqCst);
    }
}

fn counters(n: usize) -> Arc<Vec<AtomicUsize>> {
    Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect())
}

fn drop_counts(drops: &[AtomicUsize]) -> Vec<usize> {
    drops.iter().map(|d| d.load(Ordering::SeqCst)).collect()
}

#[test]
fn every_value_is_dropped_exactly_once_including_those_left_in_the_queue() {
    let drops = counters(10);
    let make = |id| Tracked {
        id,
        drops: Arc::clone(&drops),
    };
    let q = ArrayQueue::new(4);
    // Move head and tail off index 0 so the remaining values straddle the ring's end.
    for id in 0..3 {
        assert!(q.push(make(id)).is_ok());
    }
    for id in 0..3 {
        assert_eq!(q.pop().map(|t| t.id), Some(id)); // dropped here
    }
    for id in 3..7 {
        assert!(q.push(make(id)).is_ok());
    }
    let rejected = q.push(make(7)).expect_err("queue is full");
    assert_eq!(rejected.id, 7);
    drop(rejected);
    assert_eq!(q.pop().map(|t| t.id), Some(3));
    assert_eq!(drop_counts(&drops), [1, 1, 1, 1, 0, 0, 0, 1, 0, 0]);
    drop(q); // holds 4, 5, 6
    assert_eq!(drop_counts(&drops), [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
}

#[test]
fn full_queue_drops_all_its_values() {
    let drops = counters(3);
    let q = ArrayQueue::new(3);
    for id in 0..3 {
        assert!(q
            .push(Tracked {
                id,
                drops: Arc::clone(&drops)
            })
            .is_ok());
    }
    assert!(q.is_full());
    drop(q);
    assert_eq!(drop_counts(&drops), [1, 1, 1]);
}

#[test]
fn concurrent_traffic_neither_leaks_nor_double_drops() {
    let n = scaled(20_000, 60);
    let drops = counters(n);
    let q = Arc::new(ArrayQueue::new(4));
    let producer = {
        let (q, drops) = (Arc::clone(&q), Arc::clone(&drops));
        thread::spawn(move || {
            let limit = deadline();
            for id in 0..n {
                let mut v = Tracked {
                    id,
                    drops: Arc::clone(&drops),
                };
                while let Err(back) = q.push(v) {
                    v = back;
                    check(limit, "space in the queue");
                    thread::yield_now();
                }
            }
        })
    };
    // Pop only half, so the rest is dropped by the queue itself.
    let limit = deadline();
    let mut popped = 0;
    while popped < n / 2 {
        if q.pop().is_some() {
            popped += 1;
        } else {
            check(limit, "a value from the producer");
            thread::yield_now();
        }
    }
    // The producer cannot finish while the queue is full, so drain without counting.
    while !producer.is_finished() {
        let _ = q.pop();
        check(limit, "the producer to finish");
        thread::yield_now();
    }
    producer.join().unwrap();
    drop(Arc::try_unwrap(q).expect("last reference"));
    assert!(drop_counts(&drops).iter().all(|&c| c == 1));
}

#[test]
fn is_send_and_sync_when_t_is_send() {
    fn assert_send_sync<X: Send + Sync>() {}
    assert_send_sync::<ArrayQueue<Box<u8>>>();
    assert_send_sync::<ArrayQueue<std::cell::Cell<u8>>>();
}
