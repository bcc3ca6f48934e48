//! The runtime: listeners accept, the balancer picks an IOWorker, IOWorkers do all socket I/O.
//!
//! - [`handle`]: `ConnId`, the identity of a connection across threads.
//! - [`hub`]: how other threads (service instances) reach a worker's connections.

pub mod handle;
pub mod hub;
