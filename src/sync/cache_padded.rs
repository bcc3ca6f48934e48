//! A value alone on its own cache line(s), so that two hot atomics written by different threads
//! (a queue's head and tail) do not false-share.
//!
//! 128 bytes rather than 64: Intel CPUs since Sandy Bridge prefetch cache lines in adjacent pairs
//! (the "spatial prefetcher"), so two values 64 bytes apart still contend. crossbeam-utils makes
//! the same choice for x86_64 and aarch64.

use std::ops::{Deref, DerefMut};

/// `T` aligned (and therefore padded) to 128 bytes.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CachePadded<T>(T);

impl<T> CachePadded<T> {
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for CachePadded<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::CachePadded;

    #[test]
    fn two_padded_values_never_share_128_bytes() {
        assert_eq!(std::mem::align_of::<CachePadded<u8>>(), 128);
        assert_eq!(std::mem::size_of::<CachePadded<u8>>(), 128);
        let pair = [CachePadded::new(0u64), CachePadded::new(1u64)];
        let a = &*pair[0] as *const u64 as usize;
        let b = &*pair[1] as *const u64 as usize;
        assert!(b - a >= 128);
        assert_eq!(*pair[1], 1);
    }
}
