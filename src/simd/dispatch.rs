//! The one dispatch point: which kernel level serves `unmask` and `validate_utf8`.
//!
//! - `cfg(lapps_simd = "auto")` on x86_64: the CPU is probed with `is_x86_feature_detected!` on
//!   the first call; the chosen kernel is cached as a function pointer in an atomic (memchr's
//!   scheme), so later calls cost one relaxed load and an indirect call.
//! - `cfg(lapps_simd = "ssse3" | "avx2")`: the level is fixed at compile time; those builds are
//!   compiled with the matching `-C target-feature`, which the `compile_error!`s below enforce,
//!   so no detection happens.
//! - other targets: scalar.
//!
//! Short inputs never reach a vector kernel (measured with `cargo bench --bench simd`, 16 B
//! column): below one AVX2 vector the unmask kernel only adds call overhead to the word loop, and
//! below one 64-byte block the UTF-8 kernel pays for copying its zero-padded tail to the stack
//! (a store-forwarding stall on the 32-byte reload), which makes it slower than the scalar loop.
//!
//! Owns: the choice of kernel. Must never call a kernel whose CPU feature is not established.

use super::scalar;

/// Below this many bytes `unmask` stays on the word loop.
const UNMASK_MIN: usize = 32;
/// Below this many bytes `validate_utf8` stays scalar.
const UTF8_MIN: usize = 64;

#[cfg(all(lapps_simd = "avx2", not(target_feature = "avx2")))]
compile_error!("LAPPS_SIMD=avx2 must be built with RUSTFLAGS=\"-C target-feature=+avx2\"");
#[cfg(all(lapps_simd = "ssse3", not(target_feature = "ssse3")))]
compile_error!("LAPPS_SIMD=ssse3 must be built with RUSTFLAGS=\"-C target-feature=+ssse3\"");

/// A kernel level.
// Only the runtime-detecting build constructs every level.
#[cfg_attr(
    not(all(target_arch = "x86_64", lapps_simd = "auto")),
    allow(dead_code)
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Scalar,
    Ssse3,
    Avx2,
}

impl Level {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Ssse3 => "ssse3",
            Level::Avx2 => "avx2",
        }
    }
}

/// The level in use for this process.
pub(crate) fn level() -> Level {
    #[cfg(all(target_arch = "x86_64", lapps_simd = "avx2"))]
    {
        Level::Avx2
    }
    #[cfg(all(target_arch = "x86_64", lapps_simd = "ssse3"))]
    {
        Level::Ssse3
    }
    #[cfg(all(target_arch = "x86_64", lapps_simd = "auto"))]
    {
        // std caches the CPUID result, so this is cheap after the first call.
        if std::is_x86_feature_detected!("avx2") {
            Level::Avx2
        } else if std::is_x86_feature_detected!("ssse3") {
            Level::Ssse3
        } else {
            Level::Scalar
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Level::Scalar
    }
}

/// XOR `buf` with `key` from key position `offset`, with the best kernel available.
#[inline]
pub(crate) fn unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    if buf.len() < UNMASK_MIN {
        return scalar::unmask_words(buf, key, offset);
    }
    imp::unmask(buf, key, offset)
}

/// True when `bytes` is valid UTF-8, with the best kernel available.
#[inline]
pub(crate) fn validate_utf8(bytes: &[u8]) -> bool {
    if bytes.len() < UTF8_MIN {
        return scalar::validate_utf8(bytes);
    }
    imp::validate_utf8(bytes)
}

#[cfg(all(target_arch = "x86_64", lapps_simd = "auto"))]
mod imp {
    use super::super::{scalar, x86_64};
    use super::Level;
    use std::sync::atomic::{AtomicPtr, Ordering};

    type UnmaskFn = unsafe fn(&mut [u8], [u8; 4], usize);
    type Utf8Fn = unsafe fn(&[u8]) -> bool;

    // Each starts at its `detect_*` function, which replaces itself with the chosen kernel.
    // Relaxed is enough: every value ever stored is a valid kernel for this CPU, and racing
    // first calls all store the same one.
    static UNMASK: AtomicPtr<()> = AtomicPtr::new(detect_unmask as UnmaskFn as *mut ());
    static UTF8: AtomicPtr<()> = AtomicPtr::new(detect_utf8 as Utf8Fn as *mut ());

    fn scalar_unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
        scalar::unmask_words(buf, key, offset)
    }

    fn select_unmask() -> UnmaskFn {
        match super::level() {
            Level::Avx2 => x86_64::avx2::unmask,
            Level::Ssse3 => x86_64::ssse3::unmask,
            Level::Scalar => scalar_unmask,
        }
    }

    fn select_utf8() -> Utf8Fn {
        match super::level() {
            Level::Avx2 => x86_64::avx2::validate_utf8,
            Level::Ssse3 => x86_64::ssse3::validate_utf8,
            Level::Scalar => scalar::validate_utf8,
        }
    }

    /// # Safety
    /// None beyond that of the kernel it selects, which `select_unmask` only picks when the CPU
    /// has its feature.
    unsafe fn detect_unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
        let f = select_unmask();
        UNMASK.store(f as *mut (), Ordering::Relaxed);
        // SAFETY: `select_unmask` returned a kernel whose CPU feature was detected.
        unsafe { f(buf, key, offset) }
    }

    /// # Safety
    /// As `detect_unmask`.
    unsafe fn detect_utf8(bytes: &[u8]) -> bool {
        let f = select_utf8();
        UTF8.store(f as *mut (), Ordering::Relaxed);
        // SAFETY: `select_utf8` returned a kernel whose CPU feature was detected.
        unsafe { f(bytes) }
    }

    #[inline]
    pub(super) fn unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
        let p = UNMASK.load(Ordering::Relaxed);
        // SAFETY: UNMASK only ever holds `detect_unmask` or a result of `select_unmask`, all of
        // type `UnmaskFn`, and each is sound to call on this CPU.
        unsafe {
            let f = std::mem::transmute::<*mut (), UnmaskFn>(p);
            f(buf, key, offset)
        }
    }

    #[inline]
    pub(super) fn validate_utf8(bytes: &[u8]) -> bool {
        let p = UTF8.load(Ordering::Relaxed);
        // SAFETY: UTF8 only ever holds `detect_utf8` or a result of `select_utf8`, all of type
        // `Utf8Fn`, and each is sound to call on this CPU.
        unsafe {
            let f = std::mem::transmute::<*mut (), Utf8Fn>(p);
            f(bytes)
        }
    }
}

#[cfg(all(target_arch = "x86_64", lapps_simd = "avx2"))]
mod imp {
    use super::super::x86_64::avx2;

    #[inline]
    pub(super) fn unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
        // SAFETY: this build is compiled with `target-feature=+avx2` (enforced above), so
        // the compiler may emit AVX2 instructions anywhere in it: the binary refuses to start
        // on a CPU without them (`crate::cpu::exit_unless_supported`, run before std's start-up
        // and first thing in `main`), and this call needs no more than the rest of the code.
        unsafe { avx2::unmask(buf, key, offset) }
    }

    #[inline]
    pub(super) fn validate_utf8(bytes: &[u8]) -> bool {
        // SAFETY: as `unmask`.
        unsafe { avx2::validate_utf8(bytes) }
    }
}

#[cfg(all(target_arch = "x86_64", lapps_simd = "ssse3"))]
mod imp {
    use super::super::x86_64::ssse3;

    #[inline]
    pub(super) fn unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
        // SAFETY: this build is compiled with `target-feature=+ssse3` (enforced above), so
        // the compiler may emit SSSE3 instructions anywhere in it: the binary refuses to start
        // on a CPU without them (`crate::cpu::exit_unless_supported`, run before std's start-up
        // and first thing in `main`), and this call needs no more than the rest of the code.
        unsafe { ssse3::unmask(buf, key, offset) }
    }

    #[inline]
    pub(super) fn validate_utf8(bytes: &[u8]) -> bool {
        // SAFETY: as `unmask`.
        unsafe { ssse3::validate_utf8(bytes) }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub(super) use super::super::scalar::{unmask_words as unmask, validate_utf8};
}
