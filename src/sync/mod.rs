//! Synchronisation primitives shared by the runtime.
pub mod mpmc;
