//! Every unmask and UTF-8 kernel against its oracle (the byte loop, `std::str::from_utf8`), over
//! all short lengths, alignments and key phases; the streaming validator against the oracle on
//! the whole input, for every way of splitting it.

use lapps::simd::{self, kernels, Utf8Error, Utf8Stream};
use proptest::prelude::*;

type UnmaskFn = fn(&mut [u8], [u8; 4], usize);
type Utf8Fn = fn(&[u8]) -> bool;

/// The kernels this CPU can run, by name; the dispatched public functions are included so the
/// dispatch itself (thresholds, cached pointer) is covered too.
fn unmask_kernels() -> Vec<(&'static str, UnmaskFn)> {
    let mut v: Vec<(&'static str, UnmaskFn)> =
        vec![("words", kernels::unmask_words), ("dispatch", simd::unmask)];
    if kernels::has_ssse3() {
        v.push(("ssse3", kernels::unmask_ssse3));
    }
    if kernels::has_avx2() {
        v.push(("avx2", kernels::unmask_avx2));
    }
    v
}

fn utf8_kernels() -> Vec<(&'static str, Utf8Fn)> {
    let mut v: Vec<(&'static str, Utf8Fn)> = vec![
        ("scalar", kernels::validate_utf8_scalar),
        ("dispatch", simd::validate_utf8),
    ];
    if kernels::has_ssse3() {
        v.push(("ssse3", kernels::validate_utf8_ssse3));
    }
    if kernels::has_avx2() {
        v.push(("avx2", kernels::validate_utf8_avx2));
    }
    v
}

/// Marsaglia's xorshift64: deterministic, dependency-free test data.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

#[test]
fn this_machine_runs_a_simd_kernel() {
    // The acceptance machine has AVX2; on other CPUs this still checks the mapping.
    let expected = if lapps::BUILD_VARIANT != "auto" {
        lapps::BUILD_VARIANT
    } else if kernels::has_avx2() {
        "avx2"
    } else if kernels::has_ssse3() {
        "ssse3"
    } else {
        "scalar"
    };
    assert_eq!(simd::variant(), expected);
    assert_eq!(kernels::dispatched(), expected);
    // The equivalence tests below skip the kernels a CPU lacks: under CI (whose packaging
    // check runs the avx2 package, so its machine has AVX2) none may go untested unseen.
    if std::env::var("CI").as_deref() == Ok("true") {
        assert!(
            kernels::has_ssse3() && kernels::has_avx2(),
            "CI must run on a CPU with SSSE3 and AVX2: their kernels would go untested"
        );
    }
}

#[test]
fn unmask_kernels_equal_byte_loop_over_lengths_alignments_and_key_phases() {
    const GUARD: u8 = 0xA5;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let keys: Vec<[u8; 4]> = (0..4)
        .map(|_| (rng.next() as u32).to_le_bytes())
        .chain([[0, 0, 0, 0], [0xFF, 0x00, 0xFF, 0x01]])
        .collect();
    let mut src = vec![0u8; 256];
    rng.fill(&mut src);
    // 32 bytes of slack in front to reach every alignment from a 32-byte-aligned base, and 32
    // guard bytes behind to catch a kernel writing past the end.
    let mut storage = vec![GUARD; 256 + 32 * 3];
    let base = (32 - storage.as_ptr() as usize % 32) % 32;
    for (name, kernel) in unmask_kernels() {
        for key in &keys {
            for len in 0..=256 {
                for align in 0..32 {
                    for key_offset in 0..4 {
                        let mut expected = src[..len].to_vec();
                        kernels::unmask_bytes(&mut expected, *key, key_offset);
                        storage.fill(GUARD);
                        let start = base + align;
                        storage[start..start + len].copy_from_slice(&src[..len]);
                        kernel(&mut storage[start..start + len], *key, key_offset);
                        assert_eq!(
                            &storage[start..start + len],
                            &expected[..],
                            "{name}: len {len} align {align} key {key:?} offset {key_offset}"
                        );
                        assert!(
                            storage[..start].iter().all(|b| *b == GUARD)
                                && storage[start + len..].iter().all(|b| *b == GUARD),
                            "{name} wrote outside the buffer: len {len} align {align}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn unmask_kernels_equal_byte_loop_on_long_buffers_at_every_cache_line_alignment() {
    // The vector kernels first unmask up to a 64-byte boundary, then 8 vectors per iteration:
    // lengths around those steps, at every alignment within a cache line.
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    let mut src = vec![0u8; 4200];
    rng.fill(&mut src);
    let key = (rng.next() as u32).to_le_bytes();
    // Guard bytes on both sides of every buffer: the base and alignment take at most 126 of the
    // 4200 + 128 bytes, so at least 103 guard bytes follow even the longest buffer (4099).
    const GUARD: u8 = 0xA5;
    let mut storage = vec![GUARD; 4200 + 128];
    let base = (64 - storage.as_ptr() as usize % 64) % 64;
    for (name, kernel) in unmask_kernels() {
        for len in [255, 256, 257, 300, 511, 512, 513, 1000, 4099] {
            for align in 0..64 {
                for key_offset in 0..4 {
                    let mut expected = src[..len].to_vec();
                    kernels::unmask_bytes(&mut expected, key, key_offset);
                    let start = base + align;
                    storage.fill(GUARD);
                    storage[start..start + len].copy_from_slice(&src[..len]);
                    kernel(&mut storage[start..start + len], key, key_offset);
                    assert_eq!(
                        &storage[start..start + len],
                        &expected[..],
                        "{name}: len {len} align {align} offset {key_offset}"
                    );
                    assert!(
                        storage[..start].iter().all(|b| *b == GUARD)
                            && storage[start + len..].iter().all(|b| *b == GUARD),
                        "{name} wrote outside the buffer: len {len} align {align} \
                         offset {key_offset}"
                    );
                }
            }
        }
    }
}

#[test]
fn unmask_large_offset_uses_offset_mod_4() {
    for (name, kernel) in unmask_kernels() {
        let mut a = vec![0u8; 100];
        kernel(&mut a, [1, 2, 3, 4], 4 * 1000 + 3);
        assert_eq!(&a[..5], &[4, 1, 2, 3, 4], "{name}");
    }
}

const INVALID: &[&[u8]] = &[
    &[0xFF],
    &[0xFE],
    &[0x80],
    &[0xBF],
    &[0x80, 0x80],
    &[0xC0, 0x80],             // overlong NUL
    &[0xC1, 0xBF],             // overlong 2-byte
    &[0xE0, 0x80, 0x80],       // overlong 3-byte
    &[0xE0, 0x9F, 0xBF],       // overlong 3-byte, top
    &[0xED, 0xA0, 0x80],       // surrogate U+D800
    &[0xED, 0xBF, 0xBF],       // surrogate U+DFFF
    &[0xF0, 0x80, 0x80, 0x80], // overlong 4-byte
    &[0xF0, 0x8F, 0xBF, 0xBF], // overlong 4-byte, top
    &[0xF4, 0x90, 0x80, 0x80], // U+110000
    &[0xF5, 0x80, 0x80, 0x80],
    &[0xF8, 0x88, 0x80, 0x80, 0x80],
    &[0xC2],             // truncated, then ASCII
    &[0xE2, 0x82],       // truncated
    &[0xF0, 0x9F, 0x98], // truncated
    &[0xC2, 0xC2],
    &[0xE2, 0x28, 0xA1],
    &[0xC2, 0xA9, 0x80],             // extra continuation
    &[0xF0, 0x9F, 0x98, 0x80, 0x80], // extra continuation
    &[0xE2, 0x82, 0xAC, 0xAC],
];

const VALID: &[&[u8]] = &[
    &[0xC2, 0x80],
    &[0xDF, 0xBF],
    &[0xE0, 0xA0, 0x80],
    &[0xED, 0x9F, 0xBF],
    &[0xEE, 0x80, 0x80],
    &[0xEF, 0xBF, 0xBF],
    &[0xF0, 0x90, 0x80, 0x80],
    &[0xF0, 0x9F, 0x98, 0x80],
    &[0xF4, 0x8F, 0xBF, 0xBF],
];

fn assert_all_agree(bytes: &[u8], context: &str) {
    let expected = std::str::from_utf8(bytes).is_ok();
    for (name, kernel) in utf8_kernels() {
        assert_eq!(kernel(bytes), expected, "{name}: {context}: {bytes:02x?}");
    }
}

#[test]
fn utf8_kernels_agree_with_std_on_curated_cases_at_every_position() {
    for (set, cases) in [("invalid", INVALID), ("valid", VALID)] {
        for (c, case) in cases.iter().enumerate() {
            for at in 0..=96 {
                // In a 128-byte ASCII buffer: the case crosses every 16/32/64-byte edge.
                let mut buf = vec![b'a'; 128];
                buf[at..at + case.len()].copy_from_slice(case);
                assert_all_agree(&buf, &format!("{set} #{c} at {at} of 128"));
                // At the very end of a buffer of length at + len: truncation meets the end.
                assert_all_agree(
                    &buf[..at + case.len()],
                    &format!("{set} #{c} ending at {at}"),
                );
                // After a non-ASCII block, so the ASCII fast path is not what catches it.
                let mut mixed = "é".repeat(64).into_bytes();
                mixed[at + at % 2..at + at % 2 + case.len()].copy_from_slice(case);
                assert_all_agree(&mixed, &format!("{set} #{c} in 2-byte text at {at}"));
            }
        }
    }
}

#[test]
fn utf8_incomplete_code_point_at_a_block_end_is_invalid() {
    // The code point is cut exactly at a 64-byte block boundary, then ASCII follows (the fast
    // path must still report the pending lead) or the input ends.
    for lead in [&[0xC3][..], &[0xE2, 0x82], &[0xF0, 0x9F, 0x98]] {
        for total in [64, 128, 192, 256] {
            let mut buf = vec![b'x'; total + 64];
            buf[total - lead.len()..total].copy_from_slice(lead);
            assert_all_agree(&buf, "cut at block end then ASCII");
            assert_all_agree(&buf[..total], "cut at block end then end");
        }
    }
}

/// Code points of each encoded length (index 0: 1 byte ... 3: 4 bytes), with the edges of each
/// range: the lowest and highest, and the neighbours of the surrogate gap.
const CHARS: [&[char]; 4] = [
    &['\0', ' ', '0', 'a', 'z', '\u{7F}'],
    &['\u{80}', 'é', 'ж', '\u{7FF}'],
    &[
        '\u{800}', '€', '字', '\u{D7FF}', '\u{E000}', '\u{FFFD}', '\u{FFFF}',
    ],
    &['\u{10000}', '😀', '𝄞', '\u{10FFFF}'],
];

/// Valid UTF-8 of exactly `len` bytes mixing 1- to 4-byte code points; the last one is picked
/// to fit, so a multi-byte sequence may end the text too.
fn mixed_text(rng: &mut XorShift, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut buf = [0u8; 4];
    while out.len() < len {
        let width = ((rng.next() % 4) as usize + 1).min(len - out.len());
        let pool = CHARS[width - 1];
        let c = pool[(rng.next() % pool.len() as u64) as usize];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    out
}

/// Copies `bytes` to `storage[at..]` and checks every kernel on that copy against std.
fn agree_at(kernels: &[(&str, Utf8Fn)], storage: &mut [u8], at: usize, bytes: &[u8], what: &str) {
    let copy = &mut storage[at..at + bytes.len()];
    copy.copy_from_slice(bytes);
    let expected = std::str::from_utf8(copy).is_ok();
    for (name, kernel) in kernels {
        assert_eq!(kernel(copy), expected, "{name}: {what}: {bytes:02x?}");
    }
}

#[test]
fn utf8_kernels_agree_with_std_on_mixed_text_of_every_length_at_every_offset() {
    let kernels = utf8_kernels();
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    // A 64-byte-aligned base: the offsets 0..32 put the text at every position relative to the
    // vector loads. One spare byte for the inserted 0xFF.
    let mut storage = vec![0u8; 64 + 32 + 257];
    let base = (64 - storage.as_ptr() as usize % 64) % 64;
    let mut bad = Vec::with_capacity(257);
    for len in 0..=256usize {
        // Where to break the text: both ends, the middle, and both sides of every 16-byte
        // edge from the start (16, 32 and 64-byte blocks all end at one of them).
        let positions: Vec<usize> = (0..len)
            .filter(|p| matches!(p % 16, 0 | 15) || [1, len / 2, len.saturating_sub(2)].contains(p))
            .collect();
        for offset in 0..32 {
            let at = base + offset;
            let text = mixed_text(&mut rng, len);
            assert!(std::str::from_utf8(&text).is_ok(), "the generator's text");
            for (name, kernel) in &kernels {
                storage[at..at + len].copy_from_slice(&text);
                assert!(
                    kernel(&storage[at..at + len]),
                    "{name} rejected valid text of {len} bytes at offset {offset}: {text:02x?}"
                );
            }
            for &p in &positions {
                let what = |change: &str| format!("{change} at {p} of {len}, offset {offset}");
                // A continuation or lead byte replaced by ASCII: its sequence is cut short.
                if text[p] >= 0x80 {
                    bad.clear();
                    bad.extend_from_slice(&text);
                    bad[p] = b'a';
                    agree_at(&kernels, &mut storage, at, &bad, &what("'a'"));
                }
                // A stray continuation byte (or one that makes an overlong or surrogate).
                if text[p] != 0x80 {
                    bad.clear();
                    bad.extend_from_slice(&text);
                    bad[p] = 0x80;
                    agree_at(&kernels, &mut storage, at, &bad, &what("0x80"));
                }
                // A byte that never occurs in UTF-8, inserted.
                bad.clear();
                bad.extend_from_slice(&text[..p]);
                bad.push(0xFF);
                bad.extend_from_slice(&text[p..]);
                agree_at(&kernels, &mut storage, at, &bad, &what("0xFF inserted"));
                // The text cut there, maybe inside a code point.
                agree_at(&kernels, &mut storage, at, &text[..p], &what("cut"));
            }
        }
    }
}

#[test]
fn utf8_stray_continuation_after_an_ascii_block_that_follows_a_non_ascii_one() {
    // Regression: a non-ASCII 64-byte block, then an all-ASCII one (the fast path), then a
    // block that opens with a continuation byte nothing leads. The ASCII block must neither
    // hide that byte nor make the same layout with a proper lead fail.
    let e32 = "é".repeat(32);
    let head = [e32.as_bytes(), &[b'a'; 64]].concat();
    let mut third = vec![0x80];
    third.extend_from_slice("é".repeat(31).as_bytes());
    third.push(b'z');
    let invalid = [
        [&head[..], &third].concat(),
        [&head[..], &[0x80], &[b'a'; 63]].concat(),
        [&head[..], &[0xA9], &[b'a'; 63], e32.as_bytes()].concat(),
        [&head[..], &third, e32.as_bytes(), e32.as_bytes()].concat(),
    ];
    let valid = [
        [&head[..], e32.as_bytes()].concat(),
        [&head[..], e32.as_bytes(), e32.as_bytes()].concat(),
        [&head[..], "é".repeat(31).as_bytes(), b"zz"].concat(),
    ];
    let mut storage = vec![0u8; 64 + 32 + 5 * 64];
    let base = (64 - storage.as_ptr() as usize % 64) % 64;
    for (want, cases) in [(false, &invalid[..]), (true, &valid[..])] {
        for (i, case) in cases.iter().enumerate() {
            assert_eq!(std::str::from_utf8(case).is_ok(), want, "case {i} itself");
            for offset in 0..32 {
                let copy = &mut storage[base + offset..base + offset + case.len()];
                copy.copy_from_slice(case);
                for (name, kernel) in utf8_kernels() {
                    assert_eq!(kernel(copy), want, "{name}: case {i} at offset {offset}");
                }
            }
            assert_eq!(stream_ok(&[case]), want, "stream: case {i}");
        }
    }
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    // Mostly high bytes, so that random input forms (and breaks) multi-byte sequences often.
    prop::collection::vec(
        prop_oneof![1 => 0x00u8..0x80, 3 => 0x80u8..=0xFF, 1 => Just(0x80u8)],
        0..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn utf8_kernels_agree_with_std_on_random_bytes(bytes in arb_bytes()) {
        let expected = std::str::from_utf8(&bytes).is_ok();
        for (name, kernel) in utf8_kernels() {
            prop_assert_eq!(kernel(&bytes), expected, "{}", name);
        }
    }

    #[test]
    fn utf8_kernels_agree_with_std_on_valid_text_with_one_byte_changed(
        text in "\\PC{0,150}", at in any::<prop::sample::Index>(), byte in any::<u8>()
    ) {
        let mut bytes = text.into_bytes();
        for (name, kernel) in utf8_kernels() {
            prop_assert!(kernel(&bytes), "{} rejected valid text", name);
        }
        if !bytes.is_empty() {
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let expected = std::str::from_utf8(&bytes).is_ok();
            for (name, kernel) in utf8_kernels() {
                prop_assert_eq!(kernel(&bytes), expected, "{}", name);
            }
        }
    }

    #[test]
    fn unmask_kernels_equal_byte_loop_on_random_input(
        mut bytes in prop::collection::vec(any::<u8>(), 0..2000),
        key in any::<[u8; 4]>(),
        offset in any::<usize>(),
    ) {
        let mut expected = bytes.clone();
        kernels::unmask_bytes(&mut expected, key, offset);
        let original = bytes.clone();
        for (name, kernel) in unmask_kernels() {
            bytes.copy_from_slice(&original);
            kernel(&mut bytes, key, offset);
            prop_assert_eq!(&bytes, &expected, "{}", name);
        }
    }

    #[test]
    fn stream_over_random_splits_equals_std_on_whole(
        bytes in arb_bytes(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for c in cuts {
            pieces.push(&bytes[from..c]);
            from = c;
        }
        pieces.push(&bytes[from..]);
        prop_assert_eq!(stream_ok(&pieces), std::str::from_utf8(&bytes).is_ok());
        check_fails_at_once(&bytes, &pieces);
    }
}

/// Feed all pieces then finish; Ok only if every step is Ok.
fn stream_ok(pieces: &[&[u8]]) -> bool {
    let mut s = Utf8Stream::new();
    pieces.iter().all(|p| s.feed(p).is_ok()) && s.finish().is_ok()
}

/// Index of the byte at which `bytes` becomes invalid whatever follows, if any.
fn definitely_invalid_at(bytes: &[u8]) -> Option<usize> {
    match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_some() => {
            // Grow the prefix until std knows it cannot be completed.
            (e.valid_up_to()..bytes.len()).find(|&k| {
                std::str::from_utf8(&bytes[..=k]).is_err_and(|e| e.error_len().is_some())
            })
        }
        _ => None,
    }
}

/// The feed that delivers the first byte that makes the input invalid fails, and none before.
fn check_fails_at_once(bytes: &[u8], pieces: &[&[u8]]) {
    let bad = definitely_invalid_at(bytes);
    let mut s = Utf8Stream::new();
    let mut end = 0;
    for (n, piece) in pieces.iter().enumerate() {
        let start = end;
        end += piece.len();
        let r = s.feed(piece);
        match bad {
            Some(k) if k < end => {
                assert_eq!(
                    r,
                    Err(Utf8Error),
                    "feed #{n} [{start}..{end}) holds bad byte {k}"
                );
                return;
            }
            _ => assert_eq!(r, Ok(()), "feed #{n} [{start}..{end}) of {bytes:02x?}"),
        }
    }
    assert_eq!(bad, None);
}

/// A text with 1-, 2-, 3- and 4-byte code points.
const TEXT: &str = "a€é😀z𝄞ж字!";

fn stream_inputs() -> Vec<Vec<u8>> {
    let mut inputs = vec![TEXT.as_bytes().to_vec()];
    for case in INVALID {
        for at in [0, 3, 9] {
            let mut v = TEXT.as_bytes().to_vec();
            v.splice(at..at, case.iter().copied());
            inputs.push(v);
        }
        let mut v = TEXT.as_bytes().to_vec();
        v.extend_from_slice(case);
        inputs.push(v);
    }
    for case in VALID {
        let mut v = b"ab".to_vec();
        v.extend_from_slice(case);
        v.extend_from_slice(TEXT.as_bytes());
        inputs.push(v);
    }
    inputs
}

#[test]
fn stream_split_in_two_at_every_position_equals_std_on_whole() {
    for input in stream_inputs() {
        let expected = std::str::from_utf8(&input).is_ok();
        for i in 0..=input.len() {
            let pieces = [&input[..i], &input[i..]];
            assert_eq!(stream_ok(&pieces), expected, "{input:02x?} split at {i}");
            check_fails_at_once(&input, &pieces);
        }
    }
}

#[test]
fn stream_split_in_three_at_every_pair_of_positions_equals_std_on_whole() {
    for input in stream_inputs() {
        let expected = std::str::from_utf8(&input).is_ok();
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let pieces = [&input[..i], &input[i..j], &input[j..]];
                assert_eq!(
                    stream_ok(&pieces),
                    expected,
                    "{input:02x?} split at {i},{j}"
                );
                check_fails_at_once(&input, &pieces);
            }
        }
    }
}

#[test]
fn stream_one_byte_per_feed_fails_at_the_first_impossible_byte() {
    for input in stream_inputs() {
        let pieces: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(stream_ok(&pieces), std::str::from_utf8(&input).is_ok());
        check_fails_at_once(&input, &pieces);
    }
}

#[test]
fn stream_four_byte_code_point_over_three_feeds() {
    let emoji = "😀".as_bytes(); // F0 9F 98 80
    for (a, b) in [(1, 2), (1, 3), (2, 3)] {
        let mut s = Utf8Stream::new();
        assert_eq!(s.feed(&emoji[..a]), Ok(()));
        assert_eq!(s.feed(&emoji[a..b]), Ok(()));
        assert_eq!(s.feed(&emoji[b..]), Ok(()));
        assert_eq!(s.finish(), Ok(()));
    }
    // The same split, but the last feed is not a continuation: fails at that feed.
    let mut s = Utf8Stream::new();
    assert_eq!(s.feed(&emoji[..1]), Ok(()));
    assert_eq!(s.feed(&emoji[1..3]), Ok(()));
    assert_eq!(s.feed(b"A"), Err(Utf8Error));
}

#[test]
fn stream_fails_at_the_feed_not_at_finish() {
    let cases: &[&[&[u8]]] = &[
        &[b"ok", &[0xFF]],
        &[b"ok", &[0xC0]],
        &[&[0xE0], &[0x80]],             // overlong, seen at the 2nd byte
        &[&[0xED], &[0xA0]],             // surrogate ED A0..
        &[&[0xF4], &[0x90]],             // > U+10FFFF
        &[&[0xF0, 0x9F], &[0x98], b"x"], // cut short by ASCII
    ];
    for pieces in cases {
        let mut s = Utf8Stream::new();
        let (last, init) = pieces.split_last().unwrap();
        for p in init {
            assert_eq!(s.feed(p), Ok(()), "{pieces:02x?}");
        }
        assert_eq!(s.feed(last), Err(Utf8Error), "{pieces:02x?}");
    }
}

#[test]
fn stream_finish_fails_inside_a_code_point_and_resets() {
    let mut s = Utf8Stream::new();
    assert_eq!(s.feed(&[b'a', 0xE2, 0x82]), Ok(()));
    assert_eq!(s.finish(), Err(Utf8Error));
    // finish left it reset: the next message starts clean.
    assert_eq!(s.feed(b"next"), Ok(()));
    assert_eq!(s.finish(), Ok(()));
    // reset drops a pending prefix.
    assert_eq!(s.feed(&[0xF0]), Ok(()));
    s.reset();
    assert_eq!(s.feed(b"x"), Ok(()));
    assert_eq!(s.finish(), Ok(()));
}

#[test]
fn stream_long_chunks_use_the_vector_kernels() {
    let text = TEXT.repeat(50);
    let bytes = text.as_bytes();
    for cut in [1, 63, 64, 65, 200, 511] {
        assert!(stream_ok(&[&bytes[..cut], &bytes[cut..]]));
        let mut bad = bytes.to_vec();
        bad[cut + 100] = 0xFF;
        assert!(!stream_ok(&[&bad[..cut], &bad[cut..]]));
    }
}

#[test]
fn stream_state_is_small() {
    assert!(std::mem::size_of::<Utf8Stream>() <= 4);
}
