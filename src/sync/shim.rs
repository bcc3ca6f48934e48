//! The one place the lock-free code gets its atomics, cells and spin hints from.
//!
//! Under `--cfg loom` everything comes from `loom`, so the model checker sees every atomic access
//! and every access to a cell; otherwise from `std`, at zero cost. Lock-free code in this crate
//! must import these items from here, never from `std` directly, or loom cannot check it.
//!
//! `std::cell::UnsafeCell` and loom's differ in API (loom tracks each access through closures),
//! so the std side gets a thin wrapper with loom's `with` / `with_mut` shape.

#[cfg(loom)]
pub use loom::cell::UnsafeCell;
#[cfg(loom)]
pub use loom::hint::spin_loop;
#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicUsize, Ordering};
#[cfg(loom)]
pub use loom::thread::yield_now;

#[cfg(not(loom))]
pub use std::hint::spin_loop;
#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub use std::thread::yield_now;

/// `std::cell::UnsafeCell` with loom's access API (`with` for reads, `with_mut` for writes).
#[cfg(not(loom))]
#[derive(Debug)]
pub struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a shared raw pointer to the contents; the caller upholds aliasing rules.
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a mutable raw pointer to the contents; the caller upholds aliasing rules.
    #[inline(always)]
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
