//! cws: a WebSocket client for the Lua services (the `cws` module), sans event loop.
//!
//! Owns one client connection's life: a non-blocking TCP connect, optional TLS (rustls, ring),
//! the HTTP upgrade with a random key checked against `Sec-WebSocket-Accept`, and RFC 6455
//! framing through the shared protocol core in the client role (every frame masked with a
//! fresh random key, pings answered, the close handshake). It reports what happened as
//! [`Event`]s and never calls Lua, never blocks (a host name is resolved on a thread of its
//! own) and never panics on peer input. The poll loop and the callbacks live in
//! `service::lua::api::cws`.

mod client;
mod gate;
mod lookup;
mod outbuf;
mod tls;
pub mod upgrade;
pub mod url;

pub use client::{Client, Event, KeyPool, CLOSE_TIMEOUT, CONNECT_TIMEOUT, MAX_BACKLOG};
pub use tls::{client_config, trust_stamp, TlsOptions, TrustStamp};
