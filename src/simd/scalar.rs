//! The scalar reference: the oracle every SIMD kernel is tested against, and the kernels used on
//! CPUs (or targets) without SSSE3 and for inputs too short to be worth a dispatch.
//!
//! Owns: the byte and 64-bit word unmask loops, the scalar UTF-8 validator, and the code point
//! prefix rules the streaming validator needs. Must never use `unsafe` or index with peer-derived
//! values: everything here is safe slice code, so it can be trusted as the reference.

/// The masking key rotated so that its first byte applies to the first byte of the buffer.
#[inline(always)]
pub(crate) fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    let word = u32::from_le_bytes(key).rotate_right(8 * (offset & 3) as u32);
    word.to_le_bytes()
}

/// Byte-at-a-time unmask, the definition from RFC 6455 section 5.3.
pub fn unmask_bytes(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) & 3];
    }
}

/// Unmask eight bytes at a time with the key replicated into a 64-bit word. A chunk of 8 keeps
/// the key phase, so the remainder continues with the same `offset`.
///
/// This stays a genuine 64-bit word loop: left alone, LLVM turns it into an SSE2 loop, and then
/// neither the "scalar" fallback nor the benchmark baseline would be what they claim to be. The
/// compiler-only fence emits no instruction but keeps the loop vectorizer away.
pub fn unmask_words(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let k = rotate_key(key, offset);
    let word = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        if let Ok(bytes) = <[u8; 8]>::try_from(&*chunk) {
            chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
    unmask_bytes(chunks.into_remainder(), key, offset);
}

/// Length of the valid code point at the start of `s`, or `None` if it is invalid or cut short.
/// The byte ranges are Table 3-7 of the Unicode Standard ("well-formed UTF-8 byte sequences"),
/// which excludes overlongs, surrogates and values above U+10FFFF.
#[inline]
fn code_point_len(s: &[u8]) -> Option<usize> {
    match *s {
        [a, ..] if a < 0x80 => Some(1),
        [0xC2..=0xDF, 0x80..=0xBF, ..] => Some(2),
        [0xE0, 0xA0..=0xBF, 0x80..=0xBF, ..] => Some(3),
        [0xE1..=0xEC | 0xEE..=0xEF, 0x80..=0xBF, 0x80..=0xBF, ..] => Some(3),
        [0xED, 0x80..=0x9F, 0x80..=0xBF, ..] => Some(3),
        [0xF0, 0x90..=0xBF, 0x80..=0xBF, 0x80..=0xBF, ..] => Some(4),
        [0xF1..=0xF3, 0x80..=0xBF, 0x80..=0xBF, 0x80..=0xBF, ..] => Some(4),
        [0xF4, 0x80..=0x8F, 0x80..=0xBF, 0x80..=0xBF, ..] => Some(4),
        _ => None,
    }
}

const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// True when `bytes` is entirely valid UTF-8.
pub fn validate_utf8(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some(&first) = rest.first() {
        if first < 0x80 {
            // ASCII runs are the common case in WebSocket text: skip them 16 bytes at a time.
            while let Some((block, tail)) = rest.split_first_chunk::<16>() {
                let (a, b) = block.split_at(8);
                let a = u64::from_ne_bytes(a.try_into().unwrap_or([0x80; 8]));
                let b = u64::from_ne_bytes(b.try_into().unwrap_or([0x80; 8]));
                if (a | b) & HIGH_BITS != 0 {
                    break;
                }
                rest = tail;
            }
            let ascii = rest.iter().take_while(|b| **b < 0x80).count();
            rest = rest.get(ascii..).unwrap_or_default();
            continue;
        }
        match code_point_len(rest) {
            Some(n) => rest = rest.get(n..).unwrap_or_default(),
            None => return false,
        }
    }
    true
}

/// Number of bytes of the code point introduced by `lead`; 0 for a byte that cannot start one
/// (a continuation, or C0, C1, F5..FF which only ever start overlongs or values > U+10FFFF).
#[inline]
pub(crate) fn lead_width(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 0,
    }
}

/// What a slice holding at most one code point (possibly cut short) amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefix {
    /// A whole, valid code point.
    Complete,
    /// A valid beginning that more bytes could complete.
    Incomplete,
    /// No continuation can make this valid.
    Invalid,
}

/// Classify `s`, the first `s.len()` bytes of one code point. Used by the streaming validator so
/// that an invalid prefix fails at the feed that makes it invalid, not at `finish`.
pub(crate) fn prefix_state(s: &[u8]) -> Prefix {
    let Some(&lead) = s.first() else {
        return Prefix::Incomplete;
    };
    let width = lead_width(lead);
    if width == 0 || s.len() > width {
        return Prefix::Invalid;
    }
    // The second byte's range is narrowed for E0 (overlong), ED (surrogates), F0 (overlong) and
    // F4 (above U+10FFFF); every other continuation is 80..BF.
    let (lo, hi) = match lead {
        0xE0 => (0xA0, 0xBF),
        0xED => (0x80, 0x9F),
        0xF0 => (0x90, 0xBF),
        0xF4 => (0x80, 0x8F),
        _ => (0x80, 0xBF),
    };
    for (i, &b) in s.iter().enumerate().skip(1) {
        let ok = if i == 1 {
            (lo..=hi).contains(&b)
        } else {
            (0x80..=0xBF).contains(&b)
        };
        if !ok {
            return Prefix::Invalid;
        }
    }
    if s.len() == width {
        Prefix::Complete
    } else {
        Prefix::Incomplete
    }
}

/// Where the code point left unfinished at the end of `chunk` starts, or `chunk.len()` if the
/// chunk does not end inside one. Only the last three bytes can belong to an unfinished code
/// point (a four-byte one lacking its last byte); anything else is left to full validation.
pub(crate) fn unfinished_tail_start(chunk: &[u8]) -> usize {
    let n = chunk.len();
    for back in 1..=n.min(3) {
        let i = n - back;
        let Some(&b) = chunk.get(i) else { break };
        if b & 0xC0 == 0x80 {
            continue;
        }
        let width = lead_width(b);
        return if width > back { i } else { n };
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_key_starts_at_offset() {
        assert_eq!(rotate_key([1, 2, 3, 4], 0), [1, 2, 3, 4]);
        assert_eq!(rotate_key([1, 2, 3, 4], 1), [2, 3, 4, 1]);
        assert_eq!(rotate_key([1, 2, 3, 4], 7), [4, 1, 2, 3]);
    }

    #[test]
    fn word_loop_equals_byte_loop() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            for offset in 0..4 {
                let src: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(31)).collect();
                let mut a = src.clone();
                let mut b = src.clone();
                unmask_bytes(&mut a, key, offset);
                unmask_words(&mut b, key, offset);
                assert_eq!(a, b, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn prefix_state_follows_table_3_7() {
        assert_eq!(prefix_state(&[0xE0]), Prefix::Incomplete);
        assert_eq!(prefix_state(&[0xE0, 0x9F]), Prefix::Invalid);
        assert_eq!(prefix_state(&[0xED, 0xA0]), Prefix::Invalid);
        assert_eq!(prefix_state(&[0xF4, 0x90]), Prefix::Invalid);
        assert_eq!(prefix_state(&[0xF0, 0x9F, 0x98]), Prefix::Incomplete);
        assert_eq!(prefix_state(&[0xF0, 0x9F, 0x98, 0x80]), Prefix::Complete);
        assert_eq!(prefix_state(&[0xC0]), Prefix::Invalid);
        assert_eq!(prefix_state(&[0xFF]), Prefix::Invalid);
        assert_eq!(prefix_state(&[0x80]), Prefix::Invalid);
    }

    #[test]
    fn unfinished_tail_is_found() {
        assert_eq!(unfinished_tail_start(b"ab"), 2);
        assert_eq!(unfinished_tail_start(&[b'a', 0xE2, 0x82]), 1);
        assert_eq!(unfinished_tail_start(&[b'a', 0xE2, 0x82, 0xAC]), 4);
        assert_eq!(unfinished_tail_start(&[0xF0, 0x9F, 0x98]), 0);
        assert_eq!(unfinished_tail_start(&[0xF0, 0x9F, 0x98, 0x80]), 4);
    }
}
