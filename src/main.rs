//! `lapps`: the server binary.
//!
//! ```text
//! lapps [-c DIR] [--check-config] [--version] [--help]
//! lapps --reload PID
//! ```
//! The configuration directory is `-c DIR`, else `$LAPPS_CONF_DIR`, else `./etc/lapps` when
//! run from the repository, else `/etc/lapps`.

use std::path::PathBuf;
use std::process::ExitCode;

use lapps::config::{self, Config};
use lapps::reload_request::Requester;
use lapps::{error, info, warn};

const USAGE: &str = "usage: lapps [-c DIR] [--check-config] [--version] [--help]
       lapps --reload PID
  -c, --config DIR  configuration directory (ws.json, lapps.json)
  --check-config    validate the configuration and exit (non-zero on errors)
  --reload PID      have the lapps server PID reload (as SIGHUP does) and wait until it is
                    done: exit status 0 when it is, 1 when it failed in part or did not answer
  -V, --version     print the version and the SIMD build variant
  -h, --help        print this
--config=DIR and --reload=PID work too.
A command line lapps cannot use (an unknown argument, a missing value) exits with status 2.";

struct Options {
    dir: Option<PathBuf>,
    check: bool,
    reload: Option<libc::pid_t>,
}

/// What the command line asks for.
enum Args {
    Run(Options),
    /// Only some output (`--version`, `--help`), done: whether stdout took it.
    Said(bool),
}

/// Writes one line to stdout; false when it cannot take it (a closed pipe: `lapps --version |
/// true`, a full disk). `println!` panics then, and exits with status 101.
fn say(line: impl std::fmt::Display) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// Writes one line to stderr, if it can (a closed one is no reason to panic).
fn complain(line: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn parse_args() -> Result<Args, String> {
    // args_os: a directory's name need not be UTF-8.
    let mut args = std::env::args_os().skip(1);
    let mut out = Options {
        dir: None,
        check: false,
        reload: None,
    };
    while let Some(a) = args.next() {
        let (name, mut inline) = split_long(a);
        // The option as given names it in the error: `--config=` (empty) or a last `--config`.
        let mut value = |what: &str| {
            inline
                .take()
                .or_else(|| args.next())
                .filter(|v| !v.is_empty())
                .ok_or(format!("{name:?} needs {what}\n{USAGE}"))
        };
        match name.to_str().unwrap_or_default() {
            "-c" | "--config" => {
                out.dir = Some(value("a directory")?.into());
                continue;
            }
            "--reload" => {
                let pid = value("a process id")?;
                let pid = pid
                    .to_str()
                    .and_then(|p| p.parse::<libc::pid_t>().ok())
                    .filter(|&p| p > 0)
                    .ok_or_else(|| format!("--reload needs a process id, got {pid:?}"))?;
                out.reload = Some(pid);
                continue;
            }
            _ => {}
        }
        if inline.is_some() {
            return Err(format!("{name:?} takes no value\n{USAGE}"));
        }
        match name.to_str().unwrap_or_default() {
            "--check-config" => out.check = true,
            "--version" | "-V" => {
                return Ok(Args::Said(say(format_args!(
                    "lapps {} (simd build: {}, kernels in use: {})",
                    env!("CARGO_PKG_VERSION"),
                    lapps::BUILD_VARIANT,
                    lapps::simd::variant()
                ))));
            }
            "--help" | "-h" => return Ok(Args::Said(say(USAGE))),
            _ => return Err(format!("unknown argument {name:?}\n{USAGE}")),
        }
    }
    Ok(Args::Run(out))
}

/// `--name=value` as `--name` and `value` (GNU style); any other argument as it is.
fn split_long(a: std::ffi::OsString) -> (std::ffi::OsString, Option<std::ffi::OsString>) {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = a.as_bytes();
    match bytes.iter().position(|&b| b == b'=') {
        Some(eq) if bytes.starts_with(b"--") => {
            let mut name = a.into_vec();
            let value = name.split_off(eq + 1);
            name.pop(); // the '='
            (
                std::ffi::OsString::from_vec(name),
                Some(std::ffi::OsString::from_vec(value)),
            )
        }
        _ => (a, None),
    }
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
    lapps::signals::survive_file_size_limit();
    lapps::fatal::install();
    let args = match parse_args() {
        Ok(Args::Run(a)) => a,
        // What was asked for was the output: one that could not be written failed.
        Ok(Args::Said(true)) => return ExitCode::SUCCESS,
        Ok(Args::Said(false)) => return ExitCode::FAILURE,
        Err(e) => {
            complain(format_args!("lapps: {e}"));
            return ExitCode::from(2);
        }
    };
    if let Some(pid) = args.reload {
        use lapps::reload_request::{logs_to_journal, request, ANSWER_TIMEOUT};
        // Read before the request, which gives up root (a root caller may read the server's
        // /proc files, the server's own user may not when the unit gave it a capability).
        let journal = logs_to_journal(pid);
        return match request(pid, ANSWER_TIMEOUT) {
            // Reloaded, whether or not stdout takes the line: the status says so.
            Ok(true) => {
                say(format_args!("lapps: process {pid} reloaded"));
                ExitCode::SUCCESS
            }
            Ok(false) => {
                let hint = if journal {
                    " (journalctl -u lapps -p err)"
                } else {
                    ""
                };
                complain(format_args!(
                    "lapps: the reload of process {pid} failed in part; its log says what{hint}"
                ));
                ExitCode::FAILURE
            }
            Err(e) => {
                complain(format_args!("lapps: {e}"));
                ExitCode::FAILURE
            }
        };
    }
    let at = config::locate(args.dir.as_deref());
    let mut cfg = match Config::load(&at) {
        Ok(c) => c,
        Err(e) => {
            lapps::log::error_text(&format!(
                "lapps: configuration in {} is invalid:\n{e}",
                at.describe()
            ));
            return ExitCode::FAILURE;
        }
    };
    if args.check {
        for w in lapps::app::warnings(&cfg) {
            lapps::log::warning_text(&format!("warning: {w}"));
        }
        if let Some(files) = lapps::app::tls_files(&cfg) {
            match lapps::net::tls::check(&files) {
                Ok((info, warning)) => {
                    say(format_args!("tls: {info}"));
                    if let Some(w) = warning {
                        lapps::log::warning_text(&format!("warning: {w}"));
                    }
                }
                Err(e) => {
                    lapps::log::error_text(&format!(
                        "lapps: configuration in {} is invalid:\nTLS: {e}",
                        at.describe()
                    ));
                    return ExitCode::FAILURE;
                }
            }
        }
        // Every Lua app compiles (none of it runs): a syntax error is found before a start
        // or a SIGHUP does. One with auto_start false does not start, so its errors are
        // warnings: the unit's ExecStartPre runs this check, and a disabled app must not keep
        // the server from starting (the reload that enables it runs the check again).
        let (broken, off): (Vec<_>, Vec<_>) = cfg
            .lapps
            .services
            .values()
            .filter(|s| s.builtin.is_none())
            .filter_map(|s| {
                let file = s.app_file(&cfg.lapps.directories);
                lapps::service::lua::compile_check(&file, s.allow_ffi || s.allow_debug)
                    .and_then(|()| lapps::app::preload_check(&cfg, s))
                    .err()
                    .map(|e| {
                        let at = format!("{}: services.{}", cfg.lapps_file, s.name);
                        (s.auto_start, format!("{at}: {e}"))
                    })
            })
            .partition(|(auto_start, _)| *auto_start);
        for (_, e) in off {
            lapps::log::warning_text(&format!(
                "warning: {e} (auto_start is false: it would fail when enabled)"
            ));
        }
        for w in config_warnings(&cfg) {
            lapps::log::warning_text(&format!("warning: {w}"));
        }
        let mut broken: Vec<String> = broken.into_iter().map(|(_, e)| e).collect();
        // Every app's file is missing when the directory is: say that once, first.
        let apps = &cfg.lapps.directories.applications;
        if !broken.is_empty() && !apps.is_dir() {
            broken.insert(
                0,
                format!(
                    "{}: directories.applications: {} is not a directory",
                    cfg.lapps_file,
                    apps.display()
                ),
            );
        }
        if !broken.is_empty() {
            lapps::log::error_text(&format!(
                "lapps: configuration in {} is invalid:\n{}",
                at.describe(),
                broken.join("\n")
            ));
            return ExitCode::FAILURE;
        }
        // Relative directories were taken from the working directory, which may not be the
        // service's (/var/lib/lapps under systemd): say which ones were checked.
        let d = &cfg.lapps.directories;
        // The status is the verdict: a stdout that cannot take these lines does not change it.
        say(format_args!(
            "applications in {}, lib in {}",
            d.applications.display(),
            d.lib.display()
        ));
        say(format_args!("configuration in {} is valid", at.describe()));
        return ExitCode::SUCCESS;
    }
    // The original set LAPPS_APPS_DIR for its apps (`os.getenv("LAPPS_APPS_DIR")`, as its
    // console app reads it). Set here, while this is the only thread: setenv is not safe
    // beside threads that read the environment.
    std::env::set_var("LAPPS_APPS_DIR", &cfg.lapps.directories.applications);
    // Signals are taken by sigtimedwait on this thread only: block them before any thread starts.
    let signals = lapps::signals::Signals::block();
    // From here on no thread waits for stderr (a stalled journal): the log has its own thread.
    lapps::log_writer::start();
    let mut starting = Some(signals.exit_on_stop_during_start());
    info!(
        "lapps {} starting (simd build: {}, kernels in use: {}), configuration {}",
        env!("CARGO_PKG_VERSION"),
        lapps::BUILD_VARIANT,
        lapps::simd::variant(),
        at.describe()
    );
    for w in config_warnings(&cfg) {
        warn!("{w}");
    }
    check_descriptors(&mut cfg);
    // Room to answer `lapps --reload` when clients take every other descriptor.
    lapps::reload_request::keep_spare_descriptors();
    if let Some(v) = lapps::log::unknown_level() {
        warn!("LAPPS_LOG={v:?} is not a level (error, warn, info, debug): logging at info");
    }
    let app = lapps::app::App::start_then(&cfg, || drop(starting.take()));
    drop(starting);
    let app = match app {
        Ok(a) => a,
        Err(e) => {
            error!("start-up failed: {e}");
            lapps::log_writer::flush(LOG_DRAIN);
            return ExitCode::FAILURE;
        }
    };
    lapps::signals::notify_systemd("READY=1");
    let app = std::sync::Arc::new(app);
    let reloads = Reloads::start(std::sync::Arc::clone(&app));
    let status = StatusReports::default();
    let mut trimmer = lapps::memory_trim::Trimmer::default();
    let mut next_certificate_look = std::time::Instant::now() + lapps::cert_expiry::LOOK_EVERY;
    let mut tick = || {
        give_back_memory(&app, &mut trimmer);
        app.warn_of_busy_instances();
        let now = std::time::Instant::now();
        if now >= next_certificate_look {
            next_certificate_look = now + lapps::cert_expiry::LOOK_EVERY;
            if let Some(line) = app.certificate_reminder() {
                lapps::warn!("{line}");
            }
        }
    };
    loop {
        match signals.wait_ticking(&mut tick) {
            lapps::signals::Signal::Reload(name, requester) => reloads.request(name, requester),
            lapps::signals::Signal::Status => status.report(&app),
            lapps::signals::Signal::Stop(name, _) => {
                info!("{name} received: shutting down (a second SIGTERM or SIGINT exits at once)");
                break;
            }
        }
    }
    signals.exit_on_second_stop();
    lapps::signals::notify_systemd("STOPPING=1");
    app.shutdown();
    info!("stopped");
    lapps::log_writer::flush(LOG_DRAIN);
    ExitCode::SUCCESS
}

/// Once a second: when resident memory has grown well past what the server's buffers hold
/// (a burst of large messages came and went, and the allocator kept their memory), gives the
/// allocator's free memory back to the system, with one line saying how much (at debug when
/// it was little: see `Trimmer`).
fn give_back_memory(app: &lapps::app::App, trimmer: &mut lapps::memory_trim::Trimmer) {
    use lapps::memory_trim::{resident_bytes, trim};
    let Some(before) = resident_bytes() else {
        return;
    };
    if !trimmer.look(before, app.buffered_bytes()) {
        return;
    }
    let started = std::time::Instant::now();
    trim();
    let took = started.elapsed().as_millis();
    let after = resident_bytes().unwrap_or(before);
    let line = format!(
        "memory: gave {} MiB that freed buffers held back to the system in {took} ms \
         (resident {} -> {} MiB)",
        before.saturating_sub(after) >> 20,
        before >> 20,
        after >> 20
    );
    if trimmer.trimmed(before, after) {
        info!("{line}");
    } else {
        lapps::debug!("{line}; the next trim waits");
    }
}

/// Status reports (SIGUSR1) on a thread of their own: listing a million descriptors takes a
/// while, and the main thread must stay free for a SIGTERM. One at a time: SIGUSR1s that come
/// while a report is being written get one more report, begun after them.
#[derive(Default)]
struct StatusReports {
    state: std::sync::Arc<std::sync::Mutex<Reporting>>,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum Reporting {
    #[default]
    Idle,
    Writing,
    /// Writing, and asked again meanwhile.
    WritingThenAgain,
}

impl StatusReports {
    fn report(&self, app: &std::sync::Arc<lapps::app::App>) {
        fn lock(s: &std::sync::Mutex<Reporting>) -> std::sync::MutexGuard<'_, Reporting> {
            s.lock().unwrap_or_else(|e| e.into_inner())
        }
        {
            let mut state = lock(&self.state);
            if *state != Reporting::Idle {
                *state = Reporting::WritingThenAgain;
                return;
            }
            *state = Reporting::Writing;
        }
        let (app, state) = (
            std::sync::Arc::clone(app),
            std::sync::Arc::clone(&self.state),
        );
        let spawned = std::thread::Builder::new()
            .name("status".into())
            .spawn(move || loop {
                app.log_status();
                let mut state = lock(&state);
                if *state == Reporting::Writing {
                    *state = Reporting::Idle;
                    return;
                }
                *state = Reporting::Writing;
            });
        if let Err(e) = spawned {
            *lock(&self.state) = Reporting::Idle;
            warn!("cannot start the status thread ({e}): no status report");
        }
    }
}

/// How long the exit waits for the log's last records to reach stderr.
const LOG_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Raises the descriptor limit as far as the process may; lowers a `max_connections` left to
/// its default to what the limit covers (beyond, clients get a 503 rather than wait unanswered
/// in the backlog), and warns when the limit stays below a `max_connections` ws.json sets.
fn check_descriptors(cfg: &mut Config) {
    use lapps::net::nofile;
    let limit = match nofile::raise() {
        Ok(r) => {
            if r.now != r.before {
                info!("descriptor limit raised from {} to {}", r.before, r.now);
            }
            r.now
        }
        Err(e) => {
            warn!("cannot read or raise the descriptor limit (RLIMIT_NOFILE): {e}");
            return;
        }
    };
    let w = &mut cfg.ws.workers;
    let covered = nofile::per_worker(limit, w.workers);
    let lowered = w.max_connections_by_default && covered < w.max_connections as u64;
    if lowered {
        info!(
            "max_connections is not set in ws.json: {covered} per worker, what the descriptor \
             limit {limit} covers (IO workers: {}; the default {} needs a larger limit)",
            w.workers, w.max_connections
        );
        w.max_connections = covered as usize;
    }
    let origin = match (w.max_connections_by_default, lowered) {
        (false, _) => nofile::MaxConnections::Set,
        (true, true) => nofile::MaxConnections::Lowered,
        (true, false) => nofile::MaxConnections::Default,
    };
    if let Some(warning) = nofile::shortfall(limit, w.workers, w.max_connections, origin) {
        warn!("{warning}");
    }
}

/// SIGHUP reloads run on their own thread, one after another: this thread keeps taking
/// signals, so a SIGTERM is served even while a new version's `init()` hangs a reload. A
/// SIGHUP that finds the previous reload still running reloads the certificate at once (on a
/// thread of its own) and leaves only the services' part waiting: a renewed certificate must
/// not wait behind a redeploy that may never end. A requester (`lapps --reload`) is answered
/// by the first reload that starts after its request.
struct Reloads {
    tx: std::sync::mpsc::Sender<Option<Requester>>,
    /// The reload thread started (else each request is refused, saying so).
    running: bool,
    busy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    app: std::sync::Arc<lapps::app::App>,
    /// The certificate reloads of SIGHUPs that found a reload running: one thread at a time,
    /// which reloads again while more came meanwhile.
    certificates: std::sync::Arc<CertificateReloads>,
}

#[derive(Default)]
struct CertificateReloads {
    running: std::sync::atomic::AtomicBool,
    again: std::sync::atomic::AtomicBool,
}

impl Reloads {
    fn start(app: std::sync::Arc<lapps::app::App>) -> Reloads {
        use std::sync::atomic::Ordering;
        let (tx, rx) = std::sync::mpsc::channel::<Option<Requester>>();
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&busy);
        let reloading = std::sync::Arc::clone(&app);
        let spawned = std::thread::Builder::new()
            .name("reload".into())
            .spawn(move || {
                let app = reloading;
                while let Ok(first) = rx.recv() {
                    // Signals that came meanwhile ask for the same thing: one reload, and
                    // every requester among them gets its answer.
                    let requesters: Vec<Requester> = std::iter::once(first)
                        .chain(rx.try_iter())
                        .flatten()
                        .collect();
                    flag.store(true, Ordering::SeqCst);
                    // A panic (a bug; std printed it) fails this reload, not every later one:
                    // the thread and its flag would be gone, and each SIGHUP would say the
                    // last reload is still running.
                    let ok =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| app.reload()))
                            .unwrap_or_else(|_| {
                                error!("reload panicked: it failed; the next SIGHUP tries again");
                                false
                            });
                    flag.store(false, Ordering::SeqCst);
                    // The reload's log (its last line says how it ended) is out before the
                    // requester is told: it may read the log next.
                    lapps::log_writer::flush(LOG_DRAIN);
                    for r in requesters {
                        r.answer(ok);
                    }
                }
            });
        if let Err(e) = &spawned {
            error!("cannot start the reload thread ({e}): SIGHUP will be ignored");
        }
        Reloads {
            tx,
            running: spawned.is_ok(),
            busy,
            app,
            certificates: Default::default(),
        }
    }

    /// A reload asked for by signal `name`, or by the requester's process: logged, then run.
    fn request(&self, name: &str, requester: Option<Requester>) {
        let asked = match &requester {
            None => format!("{name} received"),
            Some(r) => format!("reload asked for by process {} (lapps --reload)", r.pid()),
        };
        if !self.running {
            // The requester dropped here is answered "failed".
            lapps::warn!("{asked}: ignored, the reload thread could not start");
            return;
        }
        info!("{asked}: reloading certificates, redeploying changed services");
        if self.busy.load(std::sync::atomic::Ordering::SeqCst) {
            lapps::warn!(
                "the previous reload is still running: the certificate is reloaded now, the \
                 services once it is done"
            );
            self.reload_certificate();
        }
        let _ = self.tx.send(requester);
    }

    /// Reloads the certificate on a thread of its own, or has the one running reload it
    /// once more (a SIGHUP storm starts one thread, not one per signal).
    fn reload_certificate(&self) {
        use std::sync::atomic::Ordering;
        let c = &self.certificates;
        c.again.store(true, Ordering::SeqCst);
        if c.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let app = std::sync::Arc::clone(&self.app);
        let certificates = std::sync::Arc::clone(c);
        let spawned = std::thread::Builder::new()
            .name("reload-tls".into())
            .spawn(move || loop {
                while certificates.again.swap(false, Ordering::SeqCst) {
                    // As for a reload: a panic (a bug) must not leave `running` set for good.
                    let reloaded =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| app.reload_tls()));
                    if reloaded.is_err() {
                        error!("certificate reload panicked: it failed");
                    }
                }
                certificates.running.store(false, Ordering::SeqCst);
                // A request between the last look and the store above: take it, unless
                // another thread has just started for it.
                if !certificates.again.load(Ordering::SeqCst)
                    || certificates.running.swap(true, Ordering::SeqCst)
                {
                    return;
                }
            });
        if let Err(e) = spawned {
            c.running.store(false, Ordering::SeqCst);
            error!("cannot start a thread to reload the certificate ({e})");
        }
    }
}

/// What a configuration that loads may still have wrong: timeouts written in seconds, and no
/// service at all (a trial's `"services": {}` started without a word; every upgrade is 404).
fn config_warnings(cfg: &lapps::config::Config) -> Vec<String> {
    let mut warnings = cfg.ws.short_timeouts();
    if cfg.lapps.services.is_empty() {
        warnings.push(
            "lapps.json: no services: every WebSocket upgrade request will be answered 404"
                .to_owned(),
        );
    }
    warnings
}
