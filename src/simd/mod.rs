//! Unmasking and UTF-8 validation kernels.
//!
//! Owns: the public, safe entry points the WebSocket codec calls on every payload byte. Layout
//! (after memchr's `src/arch` and simdutf8): `scalar` is the always-compiled reference and
//! fallback; `x86_64` holds one generic algorithm per job instantiated for SSSE3 and AVX2;
//! `dispatch` is the only place that decides which one runs (see `variant`); `stream` carries
//! UTF-8 state across fragments. Must never expose an `unsafe` entry point or a kernel that can
//! run without its CPU feature.

mod dispatch;
#[doc(hidden)]
pub mod kernels;
mod scalar;
mod stream;
#[cfg(target_arch = "x86_64")]
mod x86_64;

pub use stream::Utf8Stream;

/// XOR `buf` with the 4-byte masking `key`, starting at key position `offset % 4`
/// (RFC 6455 section 5.3: octet i of the payload is XORed with key[(offset + i) % 4]).
#[inline]
pub fn unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    dispatch::unmask(buf, key, offset)
}

/// True when `bytes` is entirely valid UTF-8.
#[inline]
pub fn validate_utf8(bytes: &[u8]) -> bool {
    dispatch::validate_utf8(bytes)
}

/// The kernel level in use at run time: `"scalar"`, `"ssse3"` or `"avx2"`.
pub fn variant() -> &'static str {
    dispatch::level().name()
}

/// An invalid UTF-8 sequence was seen (close code 1007).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error;
