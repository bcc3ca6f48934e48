//! The x86_64 kernels: one generic unmask and one generic UTF-8 algorithm written against the
//! small [`Vector`] trait, instantiated for 128-bit SSSE3 (`ssse3.rs`) and 256-bit AVX2
//! (`avx2.rs`) inside `#[target_feature]` functions (the layout of memchr's `src/arch`).
//!
//! Owns: the Keiser–Lemire lookup validator ("Validating UTF-8 in less than one instruction per
//! byte", 2021; the formulation of simdjson and simdutf8) and the vector unmask loop.
//! Must never be called without the CPU feature of the instantiation: every function here is
//! `unsafe` for that reason, and only `dispatch.rs` and `kernels` decide when to call them.

pub(crate) mod avx2;
pub(crate) mod ssse3;

use super::scalar;

/// The vector operations the two algorithms need. Every method is `#[inline(always)]` and
/// `unsafe`: it is only sound once inlined into a function compiled with the matching
/// `#[target_feature]` on a CPU that has it.
pub(crate) trait Vector: Copy {
    /// Vector width in bytes.
    const BYTES: usize;
    /// Vectors per 64-byte block.
    const PER_BLOCK: usize = 64 / Self::BYTES;

    unsafe fn splat(b: u8) -> Self;
    unsafe fn splat_u32(w: u32) -> Self;
    /// The 16-byte table repeated in each 128-bit lane (what `pshufb` looks up in).
    unsafe fn table(t: [u8; 16]) -> Self;
    /// Per-byte threshold: a lead byte in the last three positions still needs bytes.
    unsafe fn incomplete_limits() -> Self;
    unsafe fn load(p: *const u8) -> Self;
    unsafe fn store(self, p: *mut u8);
    unsafe fn or(self, o: Self) -> Self;
    unsafe fn and(self, o: Self) -> Self;
    unsafe fn xor(self, o: Self) -> Self;
    /// High nibble of each byte.
    unsafe fn shr4(self) -> Self;
    /// `pshufb`: byte i is `table[self[i] & 15]` (inputs here are always nibbles).
    unsafe fn lookup(self, table: Self) -> Self;
    unsafe fn saturating_sub(self, o: Self) -> Self;
    /// The vector shifted by 1, 2 or 3 bytes, the gap filled from the end of `prev`.
    unsafe fn prev1(self, prev: Self) -> Self;
    unsafe fn prev2(self, prev: Self) -> Self;
    unsafe fn prev3(self, prev: Self) -> Self;
    /// No byte has its high bit set.
    unsafe fn is_ascii(self) -> bool;
    /// Some bit is set.
    unsafe fn any(self) -> bool;
}

/// XOR `buf` with `key` starting at key position `offset`, eight vectors per iteration.
///
/// # Safety
/// The CPU must support `V`'s instruction set and the caller must be compiled with it.
#[inline(always)]
pub(crate) unsafe fn unmask<V: Vector>(buf: &mut [u8], key: [u8; 4], offset: usize) {
    const UNROLL: usize = 8;
    let len = buf.len();
    // Stores that straddle cache lines cost twice, and two stores to one line can retire
    // together: bring long buffers to cache-line alignment first.
    let head = if len >= UNROLL * V::BYTES {
        buf.as_ptr().align_offset(64).min(len)
    } else {
        0
    };
    if let Some(h) = buf.get_mut(..head) {
        scalar::unmask_words(h, key, offset);
    }
    let k = scalar::rotate_key(key, offset.wrapping_add(head));
    // SAFETY: the caller guarantees the CPU feature (contract of this function).
    let kv = unsafe { V::splat_u32(u32::from_ne_bytes(k)) };
    let p = buf.as_mut_ptr();
    let mut i = head;
    while i + UNROLL * V::BYTES <= len {
        // SAFETY: i + UNROLL * BYTES <= len, so every unaligned load and store is inside `buf`.
        unsafe {
            let mut v = [kv; UNROLL];
            for (j, x) in v.iter_mut().enumerate() {
                *x = V::load(p.add(i + j * V::BYTES)).xor(kv);
            }
            for (j, x) in v.iter().enumerate() {
                x.store(p.add(i + j * V::BYTES));
            }
        }
        i += UNROLL * V::BYTES;
    }
    while i + V::BYTES <= len {
        // SAFETY: i + BYTES <= len.
        unsafe { V::load(p.add(i)).xor(kv).store(p.add(i)) };
        i += V::BYTES;
    }
    // `i - head` is a multiple of the vector width, so the tail keeps the key phase of `k`.
    if let Some(tail) = buf.get_mut(i..) {
        scalar::unmask_words(tail, k, 0);
    }
}

// Error classes of the lookup tables (simdjson's names). A byte pair (prev1, input) is in error
// when the three lookups agree on some class; TWO_CONTS is the one class that is not an error
// when the pair is the 3rd/4th byte of a longer sequence, which `must_be_2_3_continuation`
// accounts for.
const TOO_SHORT: u8 = 1 << 0;
const TOO_LONG: u8 = 1 << 1;
const OVERLONG_3: u8 = 1 << 2;
const TOO_LARGE: u8 = 1 << 3;
const SURROGATE: u8 = 1 << 4;
const OVERLONG_2: u8 = 1 << 5;
const TOO_LARGE_1000: u8 = 1 << 6;
const OVERLONG_4: u8 = 1 << 6;
const TWO_CONTS: u8 = 1 << 7;
const CARRY: u8 = TOO_SHORT | TOO_LONG | TWO_CONTS;

const BYTE_1_HIGH: [u8; 16] = [
    TOO_LONG,
    TOO_LONG,
    TOO_LONG,
    TOO_LONG,
    TOO_LONG,
    TOO_LONG,
    TOO_LONG,
    TOO_LONG,
    TWO_CONTS,
    TWO_CONTS,
    TWO_CONTS,
    TWO_CONTS,
    TOO_SHORT | OVERLONG_2,
    TOO_SHORT,
    TOO_SHORT | OVERLONG_3 | SURROGATE,
    TOO_SHORT | TOO_LARGE | TOO_LARGE_1000 | OVERLONG_4,
];

const BYTE_1_LOW: [u8; 16] = [
    CARRY | OVERLONG_3 | OVERLONG_2 | OVERLONG_4,
    CARRY | OVERLONG_2,
    CARRY,
    CARRY,
    CARRY | TOO_LARGE,
    CARRY | TOO_LARGE | TOO_LARGE_1000,
    CARRY | TOO_LARGE | TOO_LARGE_1000,
    CARRY | TOO_LARGE | TOO_LARGE_1000,
    CARRY | TOO_LARGE | TOO_LARGE_1000,
    CARRY | TOO_LARGE | TOO_LARGE_1000,
    CARRY | TOO_LARGE | TOO_LARGE_1000,
    CARRY | TOO_LARGE | TOO_LARGE_1000,
    CARRY | TOO_LARGE | TOO_LARGE_1000,
    CARRY | TOO_LARGE | TOO_LARGE_1000 | SURROGATE,
    CARRY | TOO_LARGE | TOO_LARGE_1000,
    CARRY | TOO_LARGE | TOO_LARGE_1000,
];

const BYTE_2_HIGH: [u8; 16] = [
    TOO_SHORT,
    TOO_SHORT,
    TOO_SHORT,
    TOO_SHORT,
    TOO_SHORT,
    TOO_SHORT,
    TOO_SHORT,
    TOO_SHORT,
    TOO_LONG | OVERLONG_2 | TWO_CONTS | OVERLONG_3 | TOO_LARGE_1000 | OVERLONG_4,
    TOO_LONG | OVERLONG_2 | TWO_CONTS | OVERLONG_3 | TOO_LARGE,
    TOO_LONG | OVERLONG_2 | TWO_CONTS | SURROGATE | TOO_LARGE,
    TOO_LONG | OVERLONG_2 | TWO_CONTS | SURROGATE | TOO_LARGE,
    TOO_SHORT,
    TOO_SHORT,
    TOO_SHORT,
    TOO_SHORT,
];

/// Running state of the validator across vectors.
struct Utf8State<V> {
    /// The previous vector, whose last bytes are the context of the next one.
    prev: V,
    /// Lead bytes at the end of the last non-ASCII block that still wait for continuations.
    incomplete: V,
    /// Accumulated error bits; any set bit means invalid.
    error: V,
}

impl<V: Vector> Utf8State<V> {
    #[inline(always)]
    unsafe fn check_vector(&mut self, input: V) {
        // SAFETY: the caller guarantees the CPU feature.
        unsafe {
            let prev1 = input.prev1(self.prev);
            let special = prev1
                .shr4()
                .lookup(V::table(BYTE_1_HIGH))
                .and(prev1.and(V::splat(0x0F)).lookup(V::table(BYTE_1_LOW)))
                .and(input.shr4().lookup(V::table(BYTE_2_HIGH)));
            // A byte two (three) after a 3-byte (4-byte) lead must be a continuation: that is
            // exactly where TWO_CONTS (bit 7) is expected, so XOR clears it there and flags it
            // anywhere else.
            let third = input.prev2(self.prev).saturating_sub(V::splat(0xE0 - 0x80));
            let fourth = input.prev3(self.prev).saturating_sub(V::splat(0xF0 - 0x80));
            let must23 = third.or(fourth).and(V::splat(0x80));
            self.error = self.error.or(must23.xor(special));
            self.prev = input;
        }
    }

    /// One 64-byte block: an all-ASCII block only has to check that the previous block did not
    /// end inside a code point.
    #[inline(always)]
    unsafe fn check_block(&mut self, p: *const u8) {
        // SAFETY: the caller guarantees 64 readable bytes at `p` and the CPU feature.
        unsafe {
            let mut v = [V::splat(0); 4];
            let mut any = V::splat(0);
            for (j, slot) in v.iter_mut().enumerate().take(V::PER_BLOCK) {
                *slot = V::load(p.add(j * V::BYTES));
                any = any.or(*slot);
            }
            if any.is_ascii() {
                self.error = self.error.or(self.incomplete);
                return;
            }
            for slot in v.iter().take(V::PER_BLOCK) {
                self.check_vector(*slot);
            }
            self.incomplete = self.prev.saturating_sub(V::incomplete_limits());
        }
    }
}

/// True when `bytes` is valid UTF-8.
///
/// # Safety
/// The CPU must support `V`'s instruction set and the caller must be compiled with it.
#[inline(always)]
pub(crate) unsafe fn validate_utf8<V: Vector>(bytes: &[u8]) -> bool {
    let len = bytes.len();
    let p = bytes.as_ptr();
    // SAFETY: (whole function) the caller guarantees the CPU feature; pointer ranges are
    // checked against `len` before each block.
    unsafe {
        let mut st = Utf8State {
            prev: V::splat(0),
            incomplete: V::splat(0),
            error: V::splat(0),
        };
        let mut i = 0;
        // Pure ASCII prefix: nothing can be pending, so test 128 bytes per branch and carry no
        // state at all.
        while i + 128 <= len {
            let mut any = V::splat(0);
            for j in 0..128 / V::BYTES {
                any = any.or(V::load(p.add(i + j * V::BYTES)));
            }
            if !any.is_ascii() {
                break;
            }
            i += 128;
        }
        while i + 64 <= len {
            // SAFETY: i + 64 <= len.
            st.check_block(p.add(i));
            i += 64;
        }
        if i < len {
            // The tail is padded with zeros (ASCII): a code point cut by the end of input then
            // meets an ASCII byte and is flagged as TOO_SHORT.
            let mut tmp = [0u8; 64];
            copy_short(&mut tmp, bytes.get(i..).unwrap_or_default());
            st.check_block(tmp.as_ptr());
        }
        st.error = st.error.or(st.incomplete);
        !st.error.any()
    }
}

/// Copy fewer than 64 bytes with fixed-size moves: a `memcpy` call for the tail costs more than
/// validating a whole block when inputs are short.
#[inline(always)]
fn copy_short(dst: &mut [u8; 64], src: &[u8]) {
    let mut i = 0;
    for size in [32, 16, 8, 4, 2, 1] {
        if src.len() - i >= size {
            if let (Some(d), Some(s)) = (dst.get_mut(i..i + size), src.get(i..i + size)) {
                d.copy_from_slice(s);
            }
            i += size;
        }
    }
}
