//! The start-up check that this CPU can run the SIMD variant the binary was built for.
//!
//! The packaged binaries are compiled with `-C target-feature=+sse3,+ssse3` (lapps-ssse3) or
//! `+avx,+avx2` (lapps-avx2), so the compiler may use those instructions anywhere in our code.
//! On a CPU without them the process would die with SIGILL at some arbitrary later point; `main`
//! calls [`exit_unless_supported`] first, which refuses with one clear line and status 1.
//!
//! Where it runs: an ELF constructor (`.init_array.00090`, installed by `src/main.rs`) calls
//! [`exit_unless_supported`] before anything else of ours or of std's runs; `main` calls it
//! again first thing, for targets without that section. The constructor is needed because with
//! `lto = "fat"` std's own start-up code (the C `main`, `lang_start`, std's argv constructor at
//! `.init_array.00099`) is code-generated together with ours, with the build's target features:
//! in the avx2 package it holds VEX instructions (`vmovups %ymm0, ...`) that run before Rust's
//! `main` is reached. Lower priorities run first, so ours precedes std's.
//!
//! Why the check itself cannot trip over the instructions it guards against:
//! - the probe is CPUID and XGETBV plus bit tests on the integer registers they fill, over a
//!   small enum; the answer is a pointer and a length in registers;
//! - the refusal writes a static string with write(2) and leaves with `_exit(2)`: no Rust
//!   runtime code, nothing allocated, formatted or copied through vector registers;
//! - [`check_build_variant`] and [`exit_unless_supported`] are `#[inline(never)]`, so LLVM
//!   cannot merge vector work of a caller into them. tests/packaging.sh disassembles both in the
//!   avx2 package and fails if any vector register appears there.
//!
//! Owns: the CPU features each variant requires and the refusal message. Must never allocate,
//! format, or do anything but integer work before the check has passed.

/// A CPU feature a build variant may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Sse3,
    Ssse3,
    Sse41,
    Sse42,
    Avx,
    Avx2,
}

/// What one build variant needs from the CPU and what it says when the CPU falls short.
#[derive(Debug)]
pub struct Variant {
    pub name: &'static str,
    /// Every feature `-C target-feature` enables for this variant, implied ones included
    /// (LLVM's `+avx` implies SSE3 up to SSE4.2).
    pub requires: &'static [Feature],
    /// The whole line printed on refusal, newline included.
    pub refusal: &'static str,
}

/// `LAPPS_SIMD=auto`: kernels are chosen at run time, so any x86-64 (or other) CPU will do.
pub const AUTO: Variant = Variant {
    name: "auto",
    requires: &[],
    refusal: "",
};

/// The lapps-ssse3 package.
pub const SSSE3: Variant = Variant {
    name: "ssse3",
    requires: &[Feature::Sse3, Feature::Ssse3],
    refusal: "lapps: this build needs a CPU with SSSE3 (variant ssse3); \
              build lapps from source with LAPPS_SIMD=auto for this CPU\n",
};

/// The lapps-avx2 package.
pub const AVX2: Variant = Variant {
    name: "avx2",
    requires: &[
        Feature::Sse3,
        Feature::Ssse3,
        Feature::Sse41,
        Feature::Sse42,
        Feature::Avx,
        Feature::Avx2,
    ],
    refusal: "lapps: this build needs a CPU with AVX2 (variant avx2); \
              install the lapps-ssse3 package instead\n",
};

/// The variant this binary was compiled as (`build.rs`, `LAPPS_SIMD`).
#[cfg(lapps_simd = "avx2")]
pub const BUILD: Variant = AVX2;
#[cfg(lapps_simd = "ssse3")]
pub const BUILD: Variant = SSSE3;
#[cfg(not(any(lapps_simd = "avx2", lapps_simd = "ssse3")))]
pub const BUILD: Variant = AUTO;

/// `Err(refusal line)` unless `probe` reports every feature `variant` requires.
pub fn check(variant: &Variant, probe: impl Fn(Feature) -> bool) -> Result<(), &'static str> {
    for &f in variant.requires {
        if !probe(f) {
            return Err(variant.refusal);
        }
    }
    Ok(())
}

/// Whether the running CPU (and OS, for AVX state) supports `f`, asked of CPUID itself.
///
/// Not `is_x86_feature_detected!`: that macro answers `true` at compile time for every feature
/// the build enables with `-C target-feature`, which would fold this whole check away in
/// exactly the builds it exists for.
#[cfg(target_arch = "x86_64")]
pub fn detected(f: Feature) -> bool {
    let ids = CpuIds::read();
    match f {
        Feature::Sse3 => bit(ids.leaf1_ecx, 0),
        Feature::Ssse3 => bit(ids.leaf1_ecx, 9),
        Feature::Sse41 => bit(ids.leaf1_ecx, 19),
        Feature::Sse42 => bit(ids.leaf1_ecx, 20),
        Feature::Avx => ids.avx_usable(),
        Feature::Avx2 => ids.avx_usable() && bit(ids.leaf7_ebx, 5),
    }
}

#[cfg(target_arch = "x86_64")]
fn bit(reg: u32, n: u32) -> bool {
    reg & (1 << n) != 0
}

/// The CPUID words the variants' features live in.
#[cfg(target_arch = "x86_64")]
struct CpuIds {
    leaf1_ecx: u32,
    leaf7_ebx: u32,
}

#[cfg(target_arch = "x86_64")]
impl CpuIds {
    fn read() -> CpuIds {
        use std::arch::x86_64::__cpuid_count;
        // SAFETY: CPUID exists on every x86-64 CPU; leaf 0 reports the highest leaf, and leaf 7
        // is only asked for when it is within range. (`unsafe` for Rust < 1.87, where the
        // intrinsic was not yet a safe function.)
        #[allow(unused_unsafe)]
        let (leaf1_ecx, leaf7_ebx) = unsafe {
            let max = __cpuid_count(0, 0).eax;
            let l1 = if max >= 1 { __cpuid_count(1, 0).ecx } else { 0 };
            let l7 = if max >= 7 { __cpuid_count(7, 0).ebx } else { 0 };
            (l1, l7)
        };
        CpuIds {
            leaf1_ecx,
            leaf7_ebx,
        }
    }

    /// AVX needs the CPU bit and the OS saving the YMM state (OSXSAVE, then XCR0 bits 1 and 2).
    fn avx_usable(&self) -> bool {
        if !(bit(self.leaf1_ecx, 28) && bit(self.leaf1_ecx, 27)) {
            return false;
        }
        let (lo, _hi): (u32, u32);
        // SAFETY: CPUID.1:ECX.OSXSAVE (bit 27) is set, so the OS has enabled XGETBV; XCR0 is
        // register 0. The instruction only reads XCR0 into EDX:EAX.
        unsafe {
            std::arch::asm!(
                "xgetbv",
                in("ecx") 0u32,
                out("eax") lo,
                out("edx") _hi,
                options(nomem, nostack, preserves_flags)
            );
        }
        lo & 0b110 == 0b110
    }
}

/// Off x86-64 only the `auto` variant builds (build.rs refuses the others), which requires
/// nothing, so no feature is ever asked about.
#[cfg(not(target_arch = "x86_64"))]
pub fn detected(_f: Feature) -> bool {
    false
}

/// Checks the running CPU against this binary's variant ([`BUILD`]).
#[inline(never)]
#[export_name = "lapps_cpu_check_build_variant"]
pub fn check_build_variant() -> Result<(), &'static str> {
    check(&BUILD, detected)
}

/// Prints the refusal to stderr and exits with status 1 when this CPU cannot run this build.
/// Called by the ELF constructor before std's start-up, and first thing in `main`; exported
/// under a fixed name so that tests/packaging.sh can find and disassemble it.
#[inline(never)]
#[export_name = "lapps_cpu_exit_unless_supported"]
pub extern "C" fn exit_unless_supported() {
    if let Err(line) = check_build_variant() {
        // SAFETY: `getenv` reads the environment with a NUL-terminated static name (nothing
        // has changed the environment this early); `line` and the prefix are valid static
        // strings of the lengths given; fd 2 may be closed, in which case write fails
        // harmlessly and the exit status still tells. `_exit` ends the process without
        // running any Rust or atexit code, none of which has anything to flush this early.
        unsafe {
            // Under systemd stderr is the journal: the error priority, as `log` gives its
            // error lines, so that `journalctl -p err` shows the refusal.
            if !libc::getenv(c"JOURNAL_STREAM".as_ptr()).is_null() {
                libc::write(2, b"<3>".as_ptr().cast(), 3);
            }
            libc::write(2, line.as_ptr().cast(), line.len());
            libc::_exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_but(missing: Feature) -> impl Fn(Feature) -> bool {
        move |f| f != missing
    }

    #[test]
    fn every_feature_present_passes_every_variant() {
        for v in [&AUTO, &SSSE3, &AVX2] {
            assert_eq!(check(v, |_| true), Ok(()), "{}", v.name);
        }
    }

    #[test]
    fn auto_asks_nothing_even_of_a_cpu_without_any_feature() {
        assert_eq!(check(&AUTO, |_| panic!("auto must not probe")), Ok(()));
    }

    #[test]
    fn avx2_build_without_avx2_points_to_the_ssse3_package() {
        assert_eq!(
            check(&AVX2, all_but(Feature::Avx2)),
            Err("lapps: this build needs a CPU with AVX2 (variant avx2); \
                 install the lapps-ssse3 package instead\n")
        );
    }

    #[test]
    fn avx2_build_refuses_when_any_implied_feature_is_missing() {
        for &f in AVX2.requires {
            assert_eq!(check(&AVX2, all_but(f)), Err(AVX2.refusal), "{f:?}");
        }
    }

    #[test]
    fn ssse3_build_needs_only_sse3_and_ssse3() {
        assert_eq!(check(&SSSE3, all_but(Feature::Avx2)), Ok(()));
        assert_eq!(check(&SSSE3, all_but(Feature::Sse42)), Ok(()));
        assert_eq!(check(&SSSE3, all_but(Feature::Ssse3)), Err(SSSE3.refusal));
        assert!(SSSE3.refusal.contains("(variant ssse3)"));
        assert!(SSSE3.refusal.ends_with('\n') && AVX2.refusal.ends_with('\n'));
    }

    #[test]
    fn build_variant_matches_build_rs() {
        assert_eq!(BUILD.name, crate::BUILD_VARIANT);
    }

    /// In the test build the SIMD features are not enabled at compile time, so std's macro
    /// really asks the CPU: an oracle for our CPUID reading.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn cpuid_probe_agrees_with_std() {
        use std::arch::is_x86_feature_detected as std_has;
        let pairs = [
            (Feature::Sse3, std_has!("sse3")),
            (Feature::Ssse3, std_has!("ssse3")),
            (Feature::Sse41, std_has!("sse4.1")),
            (Feature::Sse42, std_has!("sse4.2")),
            (Feature::Avx, std_has!("avx")),
            (Feature::Avx2, std_has!("avx2")),
        ];
        for (f, expected) in pairs {
            assert_eq!(detected(f), expected, "{f:?}");
        }
    }

    /// The tests run on the machine that built them, so the real probe must accept the build.
    #[test]
    fn this_cpu_runs_this_build() {
        assert_eq!(check_build_variant(), Ok(()));
    }
}
