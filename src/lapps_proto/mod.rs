//! The LAppS protocol codec and the `nljson` Lua module, independent of sockets and threads.
//!
//! - [`value`]: the owned value tree shared by CBOR, JSON and Lua, and the decoding [`Limits`].
//! - [`cbor`]: one CBOR item (RFC 8949) in and out, with limits; never panics on peer bytes.
//! - [`json`]: JSON in (keeping object key order) and out (compact or pretty).
//! - [`protocol`]: the LAppS protocol rules (SPEC section 4): inbound requests and
//!   notifications, responses, OONs, and the check of what a Lua app hands to `ws:send`.
//! - [`lua`]: conversion between [`Value`] and mlua values.
//! - [`nljson`]: the `nljson` Lua module and the userdata that decoded containers live in.
//!
//! This module owns encodings and their rules; it must never do I/O on sockets, block, or log
//! per message. The Lua host (`service::lua`) calls it.

pub mod cbor;
mod cbor_de;
mod cid_scan;
mod de;
pub mod json;
pub(crate) mod json_ud;
mod key_index;
pub(crate) mod lazy;
pub mod lua;
pub mod nljson;
pub(crate) mod node;
pub mod protocol;
pub(crate) mod tree_budget;
pub mod value;

#[doc(hidden)]
pub use lazy::views_agree_with_tree;
pub use value::{Limits, Value};

#[cfg(test)]
mod tests;
