//! The start-up check that this CPU can run the SIMD variant the binary was built for.
//!
//! The packaged binaries are compiled with `-C target-feature=+sse3,+ssse3` (lapps-ssse3) or
//! `+avx,+avx2` (lapps-avx2), so the compiler may use those instructions anywhere in our code.
//! On a CPU without them the process would die with SIGILL at some arbitrary later point; `main`
//! calls [`exit_unless_supported`] first, which refuses with one clear line and status 1.
//!
//! Why the check itself cannot trip over the instructions it guards against:
//! - it runs after std's runtime set-up, which lives in the precompiled std built for baseline
//!   x86-64: RUSTFLAGS do not recompile std (we do not use `-Z build-std`);
//! - `is_x86_feature_detected!` reads std_detect's cache, filled by cpuid/xgetbv code that is
//!   also part of that baseline std;
//! - our part only compares small integers (an enum and bools) and hands back a pointer and a
//!   length in registers; the refusal writes a static string with write(2) and leaves through
//!   `std::process::exit`. Nothing is allocated, formatted or copied through vector registers.
//! - [`check_build_variant`] and [`exit_unless_supported`] are `#[inline(never)]`: merged into
//!   `main`, LLVM could hoist `main`'s later vector work (struct copies that `+avx` encodes with
//!   VEX) above the check. tests/packaging.sh disassembles both and the head of `main` in the
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

/// Whether the running CPU (and OS, for AVX state) supports `f`.
#[cfg(target_arch = "x86_64")]
pub fn detected(f: Feature) -> bool {
    match f {
        Feature::Sse3 => std::arch::is_x86_feature_detected!("sse3"),
        Feature::Ssse3 => std::arch::is_x86_feature_detected!("ssse3"),
        Feature::Sse41 => std::arch::is_x86_feature_detected!("sse4.1"),
        Feature::Sse42 => std::arch::is_x86_feature_detected!("sse4.2"),
        Feature::Avx => std::arch::is_x86_feature_detected!("avx"),
        Feature::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
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
pub fn check_build_variant() -> Result<(), &'static str> {
    check(&BUILD, detected)
}

/// The first call in `main`: prints the refusal to stderr and exits with status 1 when this
/// CPU cannot run this build.
#[inline(never)]
pub fn exit_unless_supported() {
    if let Err(line) = check_build_variant() {
        // SAFETY: `line` is a valid static string of `line.len()` bytes; fd 2 may be closed, in
        // which case write fails harmlessly and the exit status still tells.
        unsafe {
            libc::write(2, line.as_ptr().cast(), line.len());
        }
        std::process::exit(1);
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

    /// The tests run on the machine that built them, so the real probe must accept the build.
    #[test]
    fn this_cpu_runs_this_build() {
        assert_eq!(check_build_variant(), Ok(()));
    }
}
