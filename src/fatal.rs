//! A panic in an IO worker or a listener thread ends the process.
//!
//! Nothing watches those threads: a worker that died would keep its connections' count, the
//! balancer would keep handing it new connections that nobody reads, and the process would
//! look healthy, so systemd's `Restart=on-failure` would never act. Aborting (status 134,
//! SIGABRT) with one error line after std's own panic message lets it restart a whole server.
//! Other threads keep std's behaviour. In a Lua instance, mlua turns a panic in a host function
//! into a Lua error the app may catch with `pcall`; one the app does not catch resumes the panic
//! when the error reaches Rust, where the instance aborts the process too (its connections
//! would otherwise wait for ever; see `service::lua::instance`). The fast paths catch their
//! own (see `service::lua::fastpath`).

/// Prefixes of the thread names (see `net::server`) whose panic ends the process.
const FATAL: [&str; 2] = ["lapps-io-", "lapps-accept-"];

/// Installs the hook (once, at start-up, before the threads are spawned).
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        if crate::log_writer::running() {
            // std's message would go straight to stderr: ahead of records queued before it,
            // and, on a stalled stderr, never (nor would the abort below). It goes through
            // the log's queue instead, with the backtrace RUST_BACKTRACE asks for.
            let trace = std::backtrace::Backtrace::capture();
            let trace = match trace.status() {
                std::backtrace::BacktraceStatus::Captured => format!("\nstack backtrace:\n{trace}"),
                _ => String::new(),
            };
            crate::log_writer::emit(
                crate::log::record(
                    crate::log::Level::Error,
                    format_args!("thread '{name}' {info}{trace}"),
                )
                .as_bytes(),
            );
        } else {
            default(info);
        }
        if FATAL.iter().any(|p| name.starts_with(p)) {
            // Before the library's writer runs, std's message above has no journal priority:
            // this line repeats what and where, so that `journalctl -p err` shows the cause
            // beside the abort.
            crate::error!(
                "thread {name} panicked ({}): aborting, so that the service manager restarts lapps",
                info.to_string().lines().collect::<Vec<_>>().join(" ")
            );
            crate::log_writer::flush(std::time::Duration::from_secs(1));
            std::process::abort();
        }
        // Any other thread: what it logged is out before a panic of main's ends the process
        // (one of another thread is caught, or ends only that thread).
        crate::log_writer::flush(std::time::Duration::from_secs(1));
    }));
}
