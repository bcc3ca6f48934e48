//! PLACEHOLDER: Vyukov bounded MPMC queue (to be implemented).
//! API: `ArrayQueue::<T>::new(cap)`, `push(&self, T) -> Result<(), T>`, `pop(&self) -> Option<T>`,
//! `len`, `is_empty`, `capacity`.
use std::collections::VecDeque;
use std::sync::Mutex;

pub struct ArrayQueue<T> {
    inner: Mutex<VecDeque<T>>,
    cap: usize,
}

impl<T> ArrayQueue<T> {
    pub fn new(cap: usize) -> Self {
        assert!(cap > 0);
        Self {
            inner: Mutex::new(VecDeque::with_capacity(cap)),
            cap,
        }
    }
    pub fn push(&self, v: T) -> Result<(), T> {
        let mut q = self.inner.lock().unwrap();
        if q.len() >= self.cap {
            return Err(v);
        }
        q.push_back(v);
        Ok(())
    }
    pub fn pop(&self) -> Option<T> {
        self.inner.lock().unwrap().pop_front()
    }
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn capacity(&self) -> usize {
        self.cap
    }
}
