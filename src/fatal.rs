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
        default(info);
        let thread = std::thread::current();
        let name = thread.name().unwrap_or_default();
        if FATAL.iter().any(|p| name.starts_with(p)) {
            // std's message above has no journal priority: this line repeats what and where,
            // so that `journalctl -p err` shows the cause beside the abort.
            crate::error!(
                "thread {name} panicked ({}): aborting, so that the service manager restarts lapps",
                info.to_string().lines().collect::<Vec<_>>().join(" ")
            );
            crate::log_writer::flush(std::time::Duration::from_secs(1));
            std::process::abort();
        }
    }));
}
