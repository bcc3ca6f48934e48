//! Loom models: every interleaving of two threads on a tiny queue.
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --lib sync::mpmc`.

use super::ArrayQueue;
use loom::sync::Arc;
use loom::thread;

#[test]
fn loom_push_pop_concurrent_delivers_in_order_once() {
    loom::model(|| {
        let q = Arc::new(ArrayQueue::new(2));
        let consumer = {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..2 {
                    if let Some(v) = q.pop() {
                        got.push(v);
                    }
                }
                got
            })
        };
        let mut pushed = Vec::new();
        for v in 1..=3u32 {
            if q.push(v).is_ok() {
                pushed.push(v);
            }
        }
        let mut got = consumer.join().unwrap();
        while let Some(v) = q.pop() {
            got.push(v);
        }
        // FIFO and exactly once, whatever the interleaving; the first two pushes always fit.
        assert_eq!(got, pushed);
        assert!(
            pushed.len() >= 2,
            "two pushes into an empty cap-2 queue must fit"
        );
    });
}

#[test]
fn loom_two_producers_on_capacity_one() {
    loom::model(|| {
        let q = Arc::new(ArrayQueue::new(1));
        let other = {
            let q = Arc::clone(&q);
            thread::spawn(move || q.push(1u32))
        };
        let mine = q.push(2u32);
        let theirs = other.join().unwrap();
        // Exactly one of the two fits; the loser gets its own value back.
        match (mine, theirs) {
            (Ok(()), Err(1)) => assert_eq!(q.pop(), Some(2)),
            (Err(2), Ok(())) => assert_eq!(q.pop(), Some(1)),
            other => panic!("unexpected outcome {other:?}"),
        }
        assert_eq!(q.pop(), None);
    });
}

#[test]
fn loom_two_consumers_take_each_value_once_and_drop_the_rest() {
    loom::model(|| {
        let q = Arc::new(ArrayQueue::new(2));
        q.push(Arc::new(10u32)).unwrap();
        q.push(Arc::new(20u32)).unwrap();
        let witness = Arc::new(0u32);
        let other = {
            let q = Arc::clone(&q);
            thread::spawn(move || q.pop().map(|v| *v))
        };
        let mine = q.pop().map(|v| *v);
        let theirs = other.join().unwrap();
        let mut got = [mine, theirs];
        got.sort();
        assert_eq!(got, [Some(10), Some(20)]);
        // A value left behind is dropped with the queue (Arc count proves it).
        let w = Arc::clone(&witness);
        q.push(w).unwrap();
        drop(q);
        assert_eq!(Arc::strong_count(&witness), 1);
    });
}
