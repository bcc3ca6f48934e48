//! LAppS: a Lua Application Server over WebSockets.
//!
//! The layers, bottom-up (see "What it is" and "Layout" in the README; the modules not listed
//! here serve the binary: start-up, logging, signals, reloads):
//! - [`simd`]: unmasking and UTF-8 validation kernels (scalar, SSSE3, AVX2) behind one dispatch.
//! - [`ws`]: RFC 6455, sans-IO: handshake parsing, frame parsing, message assembly, close rules.
//! - [`sync`]: the Vyukov bounded MPMC queue used for hand-offs between threads.
//! - [`net`]: listeners, balancer, pinned IOWorkers over edge-triggered epoll.
//! - [`service`]: the services connections are routed to (built-in and Lua).
//! - [`lapps_proto`]: the LAppS protocol codec (CBOR) and the `nljson` Lua module.
//! - [`config`]: the JSON configuration with defaults and precise errors.
//! - [`cpu`]: the start-up check that the CPU runs this build's SIMD variant.

pub mod app;
pub mod cert_expiry;
pub mod config;
pub mod cpu;
pub mod fatal;
pub mod file_read;
pub mod lapps_proto;
pub mod log;
pub mod log_writer;
pub mod memory_trim;
pub mod net;
pub mod reload_request;
pub mod service;
pub mod signals;
pub mod simd;
pub mod sync;
pub(crate) mod time_fmt;
pub mod ws;

/// The SIMD variant this binary was built for (`auto`, `ssse3` or `avx2`), fixed by `build.rs`.
pub const BUILD_VARIANT: &str = env!("LAPPS_SIMD_VARIANT");
