//! The runtime: listeners accept, the balancer picks an IOWorker, IOWorkers do all socket I/O.
//!
//! - [`server`]: starts and stops everything.
//! - [`listener`], [`balancer`]: accept, ACL at accept, hand-off through the worker's inbox.
//! - [`worker`]: the edge-triggered epoll loop over a [`slab`] of [`conn`]ections.
//! - [`hub`]: how other threads (service instances) reach a worker's connections.
//! - [`handle`]: `ConnId`, the identity of a connection across threads.
//! - [`epoll`], [`sys`], [`outq`]: the selector, raw syscalls, outbound queues.
//! - [`tls`]: wss:// (rustls configuration, reload, a connection's session); [`tls_failure`]:
//!   a failed handshake in words.
//! - [`assembly`]: the process-wide cap on partly received messages.
//! - [`per_address`]: the per-address connection limit.

pub mod assembly;
pub mod balancer;
pub mod conn;
pub mod epoll;
pub mod handle;
pub mod hub;
pub mod listener;
pub mod nofile;
pub mod outq;
pub mod per_address;
pub mod server;
pub mod shared_answers;
pub mod slab;
pub mod sys;
pub mod tls;
pub mod tls_failure;
pub mod worker;
