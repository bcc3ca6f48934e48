//! Throughput of the unmask and UTF-8 kernels against their baselines: the scalar loops, memcpy
//! (the ceiling for an in-place pass over the bytes), `std::str::from_utf8` and simdutf8.
//!
//! `cargo bench --bench simd` prints one table in GB/s (10^9 bytes/s), each figure the median of
//! several timed runs, then the ratios the acceptance criteria ask for.

use lapps::simd::kernels;
use std::hint::black_box;

/// Bytes processed per timed run (the call count is this divided by the input size).
const BYTES_PER_RUN: usize = 48 << 20;
/// Timed runs per figure; the median is reported.
const RUNS: usize = 9;
/// Back-to-back rounds for each acceptance ratio.
const RATIO_ROUNDS: usize = 15;

const SIZES: [(usize, &str); 5] = [
    (16, "16 B"),
    (1 << 10, "1 KiB"),
    (16 << 10, "16 KiB"),
    (64 << 10, "64 KiB"),
    (1 << 20, "1 MiB"),
];

/// CPU time consumed by this thread, in seconds. The bench shares its cores with other
/// processes; wall time would count the slices spent descheduled, CPU time does not.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Median throughput in GB/s of `f`, which processes `len` bytes per call.
fn gbps(len: usize, mut f: impl FnMut()) -> f64 {
    let calls = (BYTES_PER_RUN / len).max(1);
    time(calls / 8 + 1, &mut f);
    let mut rates: Vec<f64> = (0..RUNS)
        .map(|_| (calls * len) as f64 / time(calls, &mut f) / 1e9)
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[RUNS / 2]
}

/// Thread CPU seconds for `calls` calls of `f`.
fn time(calls: usize, f: &mut impl FnMut()) -> f64 {
    let start = thread_cpu_seconds();
    for _ in 0..calls {
        f();
    }
    thread_cpu_seconds() - start
}

/// Median over rounds of speed(a) / speed(b), the two timed back to back in each round so that
/// load from other processes on a shared machine hits both alike.
fn paired_ratio(len: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> f64 {
    let calls = (BYTES_PER_RUN / len).max(1);
    time(calls / 8 + 1, &mut a);
    time(calls / 8 + 1, &mut b);
    let mut ratios: Vec<f64> = (0..RATIO_ROUNDS)
        .map(|_| time(calls, &mut b) / time(calls, &mut a))
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[RATIO_ROUNDS / 2]
}

/// Marsaglia's xorshift64, for reproducible inputs.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick(&mut self, lo: u32, hi: u32) -> char {
        let c = lo + (self.next() % u64::from(hi - lo + 1)) as u32;
        char::from_u32(c).unwrap_or('?')
    }
}

/// Text of exactly `len` bytes where about 30% of the code points are multi-byte (Latin-1 and
/// Cyrillic 2-byte, CJK 3-byte, emoji 4-byte), the rest ASCII words.
fn mixed_text(len: usize) -> Vec<u8> {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut s = String::with_capacity(len + 4);
    while s.len() < len {
        let roll = rng.next() % 100;
        let c = match roll {
            0..=69 => {
                if rng.next() % 6 == 0 {
                    ' '
                } else {
                    rng.pick('a' as u32, 'z' as u32)
                }
            }
            70..=79 => rng.pick(0xE0, 0xFF),
            80..=84 => rng.pick(0x430, 0x44F),
            85..=95 => rng.pick(0x4E00, 0x9FA5),
            _ => rng.pick(0x1F600, 0x1F64F),
        };
        s.push(c);
    }
    while s.len() > len {
        s.pop();
    }
    let mut bytes = s.into_bytes();
    bytes.resize(len, b'a');
    assert!(std::str::from_utf8(&bytes).is_ok());
    bytes
}

fn ascii_text(len: usize) -> Vec<u8> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    (0..len).map(|_| b' ' + (rng.next() % 95) as u8).collect()
}

type UnmaskFn = fn(&mut [u8], [u8; 4], usize);
type Utf8Fn = fn(&[u8]) -> bool;

fn std_utf8(b: &[u8]) -> bool {
    std::str::from_utf8(b).is_ok()
}

fn simdutf8_basic(b: &[u8]) -> bool {
    simdutf8::basic::from_utf8(b).is_ok()
}

fn row(label: &str, cells: &[f64]) {
    print!("{label:<30}");
    for c in cells {
        print!("{c:>10.2}");
    }
    println!();
}

fn main() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    println!(
        "CPU: {cpu}; dispatched level: {}; build variant: {}",
        kernels::dispatched(),
        lapps::BUILD_VARIANT
    );
    println!(
        "GB/s, median of {RUNS} runs of {} MiB each",
        BYTES_PER_RUN >> 20
    );
    print!("{:<30}", "");
    for (_, name) in SIZES {
        print!("{name:>10}");
    }
    println!();

    let key = [0x37, 0xFA, 0x21, 0x3D];
    let mut unmask: Vec<(&str, UnmaskFn)> = vec![
        ("unmask byte loop", kernels::unmask_bytes),
        ("unmask word loop", kernels::unmask_words),
    ];
    if kernels::has_ssse3() {
        unmask.push(("unmask ssse3", kernels::unmask_ssse3));
    }
    if kernels::has_avx2() {
        unmask.push(("unmask avx2", kernels::unmask_avx2));
    }
    for (name, f) in &unmask {
        let cells: Vec<f64> = SIZES
            .iter()
            .map(|&(len, _)| {
                let mut buf = ascii_text(len);
                gbps(len, || {
                    f(black_box(&mut buf), black_box(key), black_box(1));
                    black_box(&mut buf);
                })
            })
            .collect();
        row(name, &cells);
    }
    let memcpy: Vec<f64> = SIZES
        .iter()
        .map(|&(len, _)| {
            let src = ascii_text(len);
            let mut dst = vec![0u8; len];
            gbps(len, || {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            })
        })
        .collect();
    row("memcpy (ceiling)", &memcpy);

    let mut utf8: Vec<(&str, Utf8Fn)> = vec![("scalar", kernels::validate_utf8_scalar)];
    if kernels::has_ssse3() {
        utf8.push(("ssse3", kernels::validate_utf8_ssse3));
    }
    if kernels::has_avx2() {
        utf8.push(("avx2", kernels::validate_utf8_avx2));
    }
    utf8.push(("std::str::from_utf8", std_utf8));
    utf8.push(("simdutf8::basic", simdutf8_basic));
    for (text, make) in [
        ("ascii", ascii_text as fn(usize) -> Vec<u8>),
        ("mixed", mixed_text),
    ] {
        for (name, f) in &utf8 {
            let cells: Vec<f64> = SIZES
                .iter()
                .map(|&(len, _)| {
                    let data = make(len);
                    assert!(f(&data), "{name} rejected valid {text} text");
                    gbps(len, || {
                        black_box(f(black_box(&data)));
                    })
                })
                .collect();
            row(&format!("utf8 {text} {name}"), &cells);
        }
    }

    println!();
    println!("acceptance ratios (median of {RATIO_ROUNDS} back-to-back rounds; table figures above are independent runs):");
    let verdict = |ratio: f64, target: f64| {
        if ratio >= target {
            "ok"
        } else {
            "BELOW TARGET"
        }
    };
    if kernels::has_avx2() {
        let len = 16 << 10;
        let mut a = ascii_text(len);
        let mut b = ascii_text(len);
        let r = paired_ratio(
            len,
            || {
                kernels::unmask_avx2(black_box(&mut a), black_box(key), black_box(1));
                black_box(&mut a);
            },
            || {
                kernels::unmask_words(black_box(&mut b), black_box(key), black_box(1));
                black_box(&mut b);
            },
        );
        println!(
            "  unmask avx2 / word loop @ 16 KiB:     {r:>6.2}x (target >= 3.00x) {}",
            verdict(r, 3.0)
        );
        for (text, make) in [
            ("ascii", ascii_text as fn(usize) -> Vec<u8>),
            ("mixed", mixed_text),
        ] {
            let data = make(64 << 10);
            let r = paired_ratio(
                data.len(),
                || {
                    black_box(kernels::validate_utf8_avx2(black_box(&data)));
                },
                || {
                    black_box(simdutf8_basic(black_box(&data)));
                },
            );
            println!(
                "  utf8 avx2 / simdutf8 @ 64 KiB {text}:  {r:>6.2}x (target >= 0.95x) {}",
                verdict(r, 0.95)
            );
        }
    }
}
