//! `lapps`: the server binary.
//!
//! ```text
//! lapps [-c DIR] [--check-config] [--version] [--help]
//! ```
//! The configuration directory is `-c DIR`, else `$LAPPS_CONF_DIR`, else `./etc/lapps` when
//! run from the repository, else `/etc/lapps`.

use std::path::PathBuf;
use std::process::ExitCode;

use lapps::config::{self, Config};
use lapps::{error, info};

const USAGE: &str = "usage: lapps [-c DIR] [--check-config] [--version] [--help]
  -c DIR          configuration directory (ws.json, lapps.json)
  --check-config  validate the configuration and exit (non-zero on errors)
  --version       print the version and the SIMD build variant";

struct Args {
    dir: Option<PathBuf>,
    check: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = std::env::args().skip(1);
    let mut out = Args {
        dir: None,
        check: false,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "-c" | "--config" => {
                out.dir = Some(args.next().ok_or("-c needs a directory")?.into());
            }
            "--check-config" => out.check = true,
            "--version" | "-V" => {
                println!(
                    "lapps {} (simd build: {}, kernels in use: {})",
                    env!("CARGO_PKG_VERSION"),
                    lapps::BUILD_VARIANT,
                    lapps::simd::variant()
                );
                return Ok(None);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Some(out))
}

/// Runs the CPU check before std's start-up code, which fat LTO compiles with the build's
/// target features; priority 00090 precedes std's own constructor at 00099.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array.00090"]
static CPU_CHECK: extern "C" fn() = lapps::cpu::exit_unless_supported;

fn main() -> ExitCode {
    // Refuse cleanly (status 1) on a CPU without the build's SIMD features; the constructor
    // above already did on Linux, before std's start-up (see src/cpu.rs).
    lapps::cpu::exit_unless_supported();
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lapps: {e}");
            return ExitCode::from(2);
        }
    };
    let dir = config::resolve_dir(args.dir.as_deref());
    let cfg = match Config::load(&dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lapps: configuration in {} is invalid:\n{e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    if args.check {
        if let Some(files) = lapps::app::tls_files(&cfg) {
            match lapps::net::tls::check(&files) {
                Ok((info, warning)) => {
                    println!("tls: {info}");
                    if let Some(w) = warning {
                        println!("warning: {w}");
                    }
                }
                Err(e) => {
                    eprintln!(
                        "lapps: configuration in {} is invalid:\nTLS: {e}",
                        dir.display()
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
        println!("configuration in {} is valid", dir.display());
        return ExitCode::SUCCESS;
    }
    // Signals are taken by sigwait on this thread only: block them before any thread starts.
    let signals = lapps::signals::Signals::block();
    info!(
        "lapps {} starting (simd build {}, kernels {}), configuration {}",
        env!("CARGO_PKG_VERSION"),
        lapps::BUILD_VARIANT,
        lapps::simd::variant(),
        dir.display()
    );
    let app = match lapps::app::App::start(&cfg) {
        Ok(a) => a,
        Err(e) => {
            error!("start-up failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    lapps::signals::notify_systemd("READY=1");
    loop {
        match signals.wait() {
            lapps::signals::Signal::Reload => {
                info!("SIGHUP received: reloading certificates, redeploying changed services");
                app.reload();
            }
            lapps::signals::Signal::Stop(name) => {
                info!("{name} received: shutting down");
                break;
            }
        }
    }
    lapps::signals::notify_systemd("STOPPING=1");
    app.shutdown();
    info!("stopped");
    ExitCode::SUCCESS
}
