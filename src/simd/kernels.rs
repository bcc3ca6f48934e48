//! Every kernel by name, for the equivalence tests and the benchmark (not a stable API).
//!
//! The SIMD wrappers check the CPU feature on each call and panic without it: they are only
//! reached from tests and benchmarks, never from peer input (production goes through
//! `dispatch`). Use `has_ssse3`/`has_avx2` to skip instead.

pub use super::scalar::{unmask_bytes, unmask_words, validate_utf8 as validate_utf8_scalar};

/// The level `dispatch` would pick on this CPU and build: `"scalar"`, `"ssse3"` or `"avx2"`.
pub fn dispatched() -> &'static str {
    super::dispatch::level().name()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::x86_64::{avx2, ssse3};

    pub fn has_ssse3() -> bool {
        std::is_x86_feature_detected!("ssse3")
    }

    pub fn has_avx2() -> bool {
        std::is_x86_feature_detected!("avx2")
    }

    /// The SSSE3 unmask kernel. Panics if the CPU lacks SSSE3.
    pub fn unmask_ssse3(buf: &mut [u8], key: [u8; 4], offset: usize) {
        assert!(has_ssse3(), "CPU lacks SSSE3");
        // SAFETY: SSSE3 was just detected.
        unsafe { ssse3::unmask(buf, key, offset) }
    }

    /// The AVX2 unmask kernel. Panics if the CPU lacks AVX2.
    pub fn unmask_avx2(buf: &mut [u8], key: [u8; 4], offset: usize) {
        assert!(has_avx2(), "CPU lacks AVX2");
        // SAFETY: AVX2 was just detected.
        unsafe { avx2::unmask(buf, key, offset) }
    }

    /// The SSSE3 UTF-8 kernel. Panics if the CPU lacks SSSE3.
    pub fn validate_utf8_ssse3(bytes: &[u8]) -> bool {
        assert!(has_ssse3(), "CPU lacks SSSE3");
        // SAFETY: SSSE3 was just detected.
        unsafe { ssse3::validate_utf8(bytes) }
    }

    /// The AVX2 UTF-8 kernel. Panics if the CPU lacks AVX2.
    pub fn validate_utf8_avx2(bytes: &[u8]) -> bool {
        assert!(has_avx2(), "CPU lacks AVX2");
        // SAFETY: AVX2 was just detected.
        unsafe { avx2::validate_utf8(bytes) }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::*;

/// Without x86_64 there is no SSSE3.
#[cfg(not(target_arch = "x86_64"))]
pub fn has_ssse3() -> bool {
    false
}

/// Without x86_64 there is no AVX2.
#[cfg(not(target_arch = "x86_64"))]
pub fn has_avx2() -> bool {
    false
}
