//! Fuzzes the SIMD kernels against their references, both ways: every UTF-8 kernel
//! (scalar, SSSE3, AVX2 where the CPU has them, and the dispatched one) answers as
//! `std::str::from_utf8` for the input at every start offset of a few (alignments), and the
//! streaming validator, fed the input cut where the input's own first bytes say, accepts it
//! exactly when std does and never fails while what it was fed may still begin valid text; every
//! unmask kernel gives the scalar one's bytes for a key and offset the input picks.
#![no_main]

use lapps::simd::{self, kernels, Utf8Stream};
use libfuzzer_sys::fuzz_target;

fn utf8_kernels(bytes: &[u8]) -> Vec<(&'static str, bool)> {
    let mut got = vec![
        ("scalar", kernels::validate_utf8_scalar(bytes)),
        ("dispatched", simd::validate_utf8(bytes)),
    ];
    if kernels::has_ssse3() {
        got.push(("ssse3", kernels::validate_utf8_ssse3(bytes)));
    }
    if kernels::has_avx2() {
        got.push(("avx2", kernels::validate_utf8_avx2(bytes)));
    }
    got
}

fuzz_target!(|data: &[u8]| {
    // Control bytes: cut lengths for the stream, the mask key and offset.
    let (control, text) = data.split_at(data.len().min(8));
    for start in 0..text.len().min(4) {
        let bytes = &text[start..];
        let valid = std::str::from_utf8(bytes).is_ok();
        for (name, ok) in utf8_kernels(bytes) {
            assert_eq!(ok, valid, "{name} at offset {start}: {bytes:02x?}");
        }
    }

    let valid = std::str::from_utf8(text).is_ok();
    let mut stream = Utf8Stream::new();
    let mut at = 0;
    let mut failed_at = None;
    for (i, &c) in control.iter().cycle().enumerate() {
        if at >= text.len() || i > text.len() {
            break;
        }
        let end = (at + usize::from(c) % 97).min(text.len());
        if stream.feed(&text[at..end]).is_err() {
            failed_at = Some(end);
            break;
        }
        at = end;
    }
    if failed_at.is_none() && at < text.len() && stream.feed(&text[at..]).is_err() {
        failed_at = Some(text.len());
    }
    let finished = failed_at.is_none() && stream.finish().is_ok();
    assert_eq!(finished, valid, "stream on {text:02x?}");
    if let Some(failed) = failed_at {
        // Failing is right only once what was fed can begin no valid text: not merely
        // incomplete (error_len None) at its end.
        let seen = std::str::from_utf8(&text[..failed]);
        assert!(
            seen.is_err_and(|e| e.error_len().is_some()),
            "failed after {failed} bytes, which may begin valid text: {text:02x?}"
        );
    }

    let key = [
        control.first().copied().unwrap_or(0),
        control.get(1).copied().unwrap_or(0x5a),
        control.get(2).copied().unwrap_or(0xa5),
        control.get(3).copied().unwrap_or(0xff),
    ];
    let offset = usize::from(control.get(4).copied().unwrap_or(0));
    let mut want = text.to_vec();
    kernels::unmask_bytes(&mut want, key, offset);
    let mut got = text.to_vec();
    simd::unmask(&mut got, key, offset);
    assert_eq!(
        got, want,
        "dispatched unmask, key {key:02x?} offset {offset}"
    );
    if kernels::has_ssse3() {
        let mut got = text.to_vec();
        kernels::unmask_ssse3(&mut got, key, offset);
        assert_eq!(got, want, "ssse3 unmask, key {key:02x?} offset {offset}");
    }
    if kernels::has_avx2() {
        let mut got = text.to_vec();
        kernels::unmask_avx2(&mut got, key, offset);
        assert_eq!(got, want, "avx2 unmask, key {key:02x?} offset {offset}");
    }
});
