//! Fixes the SIMD variant at compile time.
//!
//! `LAPPS_SIMD=auto` (default) detects the CPU at run time and picks the best kernel once;
//! `ssse3` or `avx2` pins the kernels of that level (the two .deb packages are built this way,
//! together with the matching `-C target-feature`). The choice reaches the code as
//! `cfg(lapps_simd = "...")` and as the `LAPPS_SIMD_VARIANT` string printed by `lapps --version`.

fn main() {
    println!("cargo:rerun-if-env-changed=LAPPS_SIMD");
    println!("cargo:rerun-if-changed=build.rs");
    let variant = std::env::var("LAPPS_SIMD").unwrap_or_else(|_| "auto".to_string());
    let variant = match variant.as_str() {
        "" | "auto" => "auto",
        "ssse3" => "ssse3",
        "avx2" => "avx2",
        other => panic!("LAPPS_SIMD must be auto, ssse3 or avx2, got {other:?}"),
    };
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if variant != "auto" && arch != "x86_64" {
        panic!("LAPPS_SIMD={variant} needs an x86_64 target, got {arch}");
    }
    println!("cargo:rustc-cfg=lapps_simd=\"{variant}\"");
    println!("cargo:rustc-env=LAPPS_SIMD_VARIANT={variant}");
}
