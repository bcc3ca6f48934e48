//! Synchronisation primitives shared by the runtime: the bounded MPMC queue every cross-thread
//! hand-off goes through, its cache padding, and the std/loom shim lock-free code imports from.
pub mod cache_padded;
pub mod mpmc;
pub mod shim;
