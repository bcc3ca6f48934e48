//! The 256-bit instantiation: AVX2 for everything.
//!
//! Owns: the `Vector` impl for `__m256i` and the two `#[target_feature(enable = "avx2")]`
//! entry points. Must never be called on a CPU without AVX2 (the callers check or pin it).

use core::arch::x86_64::{
    __m256i, _mm256_alignr_epi8, _mm256_and_si256, _mm256_broadcastsi128_si256, _mm256_loadu_si256,
    _mm256_movemask_epi8, _mm256_or_si256, _mm256_permute2x128_si256, _mm256_set1_epi32,
    _mm256_set1_epi8, _mm256_shuffle_epi8, _mm256_srli_epi16, _mm256_storeu_si256,
    _mm256_subs_epu8, _mm256_testz_si256, _mm256_xor_si256, _mm_loadu_si128,
};

use super::Vector;

impl Vector for __m256i {
    const BYTES: usize = 32;

    #[inline(always)]
    unsafe fn splat(b: u8) -> Self {
        // SAFETY: AVX2 (contract of the trait).
        unsafe { _mm256_set1_epi8(b as i8) }
    }

    #[inline(always)]
    unsafe fn splat_u32(w: u32) -> Self {
        // SAFETY: AVX2 (contract of the trait).
        unsafe { _mm256_set1_epi32(w as i32) }
    }

    #[inline(always)]
    unsafe fn table(t: [u8; 16]) -> Self {
        // SAFETY: `t` is 16 readable bytes; AVX2 (contract of the trait). `vpshufb` looks up
        // within each 128-bit lane, so both lanes get the same table.
        unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr().cast())) }
    }

    #[inline(always)]
    unsafe fn incomplete_limits() -> Self {
        let mut t = [0xFFu8; 32];
        t[29] = 0xF0 - 1;
        t[30] = 0xE0 - 1;
        t[31] = 0xC0 - 1;
        // SAFETY: `t` is 32 readable bytes.
        unsafe { _mm256_loadu_si256(t.as_ptr().cast()) }
    }

    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        // SAFETY: the caller guarantees 32 readable bytes at `p`.
        unsafe { _mm256_loadu_si256(p.cast()) }
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        // SAFETY: the caller guarantees 32 writable bytes at `p`.
        unsafe { _mm256_storeu_si256(p.cast(), self) }
    }

    #[inline(always)]
    unsafe fn or(self, o: Self) -> Self {
        // SAFETY: AVX2 (contract of the trait).
        unsafe { _mm256_or_si256(self, o) }
    }

    #[inline(always)]
    unsafe fn and(self, o: Self) -> Self {
        // SAFETY: AVX2 (contract of the trait).
        unsafe { _mm256_and_si256(self, o) }
    }

    #[inline(always)]
    unsafe fn xor(self, o: Self) -> Self {
        // SAFETY: AVX2 (contract of the trait).
        unsafe { _mm256_xor_si256(self, o) }
    }

    #[inline(always)]
    unsafe fn shr4(self) -> Self {
        // SAFETY: AVX2 (contract of the trait). No 8-bit shift exists: shift 16-bit lanes and
        // mask off the bits that crossed in from the neighbouring byte.
        unsafe { _mm256_and_si256(_mm256_srli_epi16::<4>(self), _mm256_set1_epi8(0x0F)) }
    }

    #[inline(always)]
    unsafe fn lookup(self, table: Self) -> Self {
        // SAFETY: AVX2 (contract of the trait).
        unsafe { _mm256_shuffle_epi8(table, self) }
    }

    #[inline(always)]
    unsafe fn saturating_sub(self, o: Self) -> Self {
        // SAFETY: AVX2 (contract of the trait).
        unsafe { _mm256_subs_epu8(self, o) }
    }

    // `vpalignr` works per 128-bit lane, so the byte shifted in is taken from a vector whose low
    // lane is `prev`'s high lane and whose high lane is `self`'s low lane.
    #[inline(always)]
    unsafe fn prev1(self, prev: Self) -> Self {
        // SAFETY: AVX2 (contract of the trait).
        unsafe { _mm256_alignr_epi8::<15>(self, _mm256_permute2x128_si256::<0x21>(prev, self)) }
    }

    #[inline(always)]
    unsafe fn prev2(self, prev: Self) -> Self {
        // SAFETY: AVX2 (contract of the trait).
        unsafe { _mm256_alignr_epi8::<14>(self, _mm256_permute2x128_si256::<0x21>(prev, self)) }
    }

    #[inline(always)]
    unsafe fn prev3(self, prev: Self) -> Self {
        // SAFETY: AVX2 (contract of the trait).
        unsafe { _mm256_alignr_epi8::<13>(self, _mm256_permute2x128_si256::<0x21>(prev, self)) }
    }

    #[inline(always)]
    unsafe fn is_ascii(self) -> bool {
        // SAFETY: AVX2 (contract of the trait).
        unsafe { _mm256_movemask_epi8(self) == 0 }
    }

    #[inline(always)]
    unsafe fn any(self) -> bool {
        // SAFETY: AVX2 (contract of the trait).
        unsafe { _mm256_testz_si256(self, self) == 0 }
    }
}

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // SAFETY: this function runs with AVX2 enabled (its own contract).
    unsafe { super::unmask::<__m256i>(buf, key, offset) }
}

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn validate_utf8(bytes: &[u8]) -> bool {
    // SAFETY: this function runs with AVX2 enabled (its own contract).
    unsafe { super::validate_utf8::<__m256i>(bytes) }
}
