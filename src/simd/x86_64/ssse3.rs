//! The 128-bit instantiation: SSE2 for the arithmetic, SSSE3 for `pshufb` (the nibble lookups)
//! and `palignr` (the shifted views of the previous vector).
//!
//! Owns: the `Vector` impl for `__m128i` and the two `#[target_feature(enable = "ssse3")]`
//! entry points. Must never be called on a CPU without SSSE3 (the callers check or pin it).

use core::arch::x86_64::{
    __m128i, _mm_alignr_epi8, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8,
    _mm_or_si128, _mm_set1_epi32, _mm_set1_epi8, _mm_setzero_si128, _mm_shuffle_epi8,
    _mm_srli_epi16, _mm_storeu_si128, _mm_subs_epu8, _mm_xor_si128,
};

use super::Vector;

impl Vector for __m128i {
    const BYTES: usize = 16;

    #[inline(always)]
    unsafe fn splat(b: u8) -> Self {
        // SAFETY: SSE2 is part of the x86_64 baseline.
        unsafe { _mm_set1_epi8(b as i8) }
    }

    #[inline(always)]
    unsafe fn splat_u32(w: u32) -> Self {
        // SAFETY: SSE2 is part of the x86_64 baseline.
        unsafe { _mm_set1_epi32(w as i32) }
    }

    #[inline(always)]
    unsafe fn table(t: [u8; 16]) -> Self {
        // SAFETY: `t` is 16 readable bytes; unaligned load.
        unsafe { _mm_loadu_si128(t.as_ptr().cast()) }
    }

    #[inline(always)]
    unsafe fn incomplete_limits() -> Self {
        let mut t = [0xFFu8; 16];
        t[13] = 0xF0 - 1;
        t[14] = 0xE0 - 1;
        t[15] = 0xC0 - 1;
        // SAFETY: as `table`.
        unsafe { Self::table(t) }
    }

    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        // SAFETY: the caller guarantees 16 readable bytes at `p`.
        unsafe { _mm_loadu_si128(p.cast()) }
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        // SAFETY: the caller guarantees 16 writable bytes at `p`.
        unsafe { _mm_storeu_si128(p.cast(), self) }
    }

    #[inline(always)]
    unsafe fn or(self, o: Self) -> Self {
        // SAFETY: SSE2 baseline.
        unsafe { _mm_or_si128(self, o) }
    }

    #[inline(always)]
    unsafe fn and(self, o: Self) -> Self {
        // SAFETY: SSE2 baseline.
        unsafe { _mm_and_si128(self, o) }
    }

    #[inline(always)]
    unsafe fn xor(self, o: Self) -> Self {
        // SAFETY: SSE2 baseline.
        unsafe { _mm_xor_si128(self, o) }
    }

    #[inline(always)]
    unsafe fn shr4(self) -> Self {
        // SAFETY: SSE2 baseline. There is no 8-bit shift: shift 16-bit lanes and mask off the
        // bits that crossed in from the neighbouring byte.
        unsafe { _mm_and_si128(_mm_srli_epi16::<4>(self), _mm_set1_epi8(0x0F)) }
    }

    #[inline(always)]
    unsafe fn lookup(self, table: Self) -> Self {
        // SAFETY: the caller runs with SSSE3 (contract of the trait).
        unsafe { _mm_shuffle_epi8(table, self) }
    }

    #[inline(always)]
    unsafe fn saturating_sub(self, o: Self) -> Self {
        // SAFETY: SSE2 baseline.
        unsafe { _mm_subs_epu8(self, o) }
    }

    #[inline(always)]
    unsafe fn prev1(self, prev: Self) -> Self {
        // SAFETY: SSSE3 (contract of the trait).
        unsafe { _mm_alignr_epi8::<15>(self, prev) }
    }

    #[inline(always)]
    unsafe fn prev2(self, prev: Self) -> Self {
        // SAFETY: SSSE3 (contract of the trait).
        unsafe { _mm_alignr_epi8::<14>(self, prev) }
    }

    #[inline(always)]
    unsafe fn prev3(self, prev: Self) -> Self {
        // SAFETY: SSSE3 (contract of the trait).
        unsafe { _mm_alignr_epi8::<13>(self, prev) }
    }

    #[inline(always)]
    unsafe fn is_ascii(self) -> bool {
        // SAFETY: SSE2 baseline.
        unsafe { _mm_movemask_epi8(self) == 0 }
    }

    #[inline(always)]
    unsafe fn any(self) -> bool {
        // SAFETY: SSE2 baseline (`ptest` would need SSE4.1).
        unsafe { _mm_movemask_epi8(_mm_cmpeq_epi8(self, _mm_setzero_si128())) != 0xFFFF }
    }
}

/// # Safety
/// The CPU must support SSSE3.
#[target_feature(enable = "ssse3")]
pub(crate) unsafe fn unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // SAFETY: this function runs with SSSE3 enabled (its own contract).
    unsafe { super::unmask::<__m128i>(buf, key, offset) }
}

/// # Safety
/// The CPU must support SSSE3.
#[target_feature(enable = "ssse3")]
pub(crate) unsafe fn validate_utf8(bytes: &[u8]) -> bool {
    // SAFETY: this function runs with SSSE3 enabled (its own contract).
    unsafe { super::validate_utf8::<__m128i>(bytes) }
}
