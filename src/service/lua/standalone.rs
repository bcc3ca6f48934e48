//! Standalone services: `init()` once, then `run()` until it returns.
//!
//! `run()` is expected to loop until `must_stop()` returns true (set at shutdown, or when a
//! redeploy replaces or removes the service). The instruction budget applies per slice between
//! two polling points (`must_stop()`, `nap` sleeps, `mqr` waits, `cws:eventLoop`), so a
//! well-behaved loop runs forever and a runaway one is stopped. A `run()` that fails (a Lua
//! error, the budget or the memory limit) is started again after a back-off, in the same Lua
//! state (its globals and upvalues kept), as a failed callback of a network service leaves its
//! instance serving.

use std::time::{Duration, Instant};

use mlua::{Function, Lua, Table, Value};

use super::host::{one_line, HostCtx};

/// Wait before `run()` is started again after its first failure in a row.
const RESTART_FIRST: Duration = Duration::from_secs(1);
/// The wait doubles with every failure in a row, up to this.
const RESTART_MAX: Duration = Duration::from_secs(30);
/// A `run()` that lasted at least this long before it failed was working: the back-off starts
/// over at [`RESTART_FIRST`].
const RESTART_RESET_AFTER: Duration = super::run_state::WORKING_AFTER;

pub(crate) struct StandaloneApp {
    init: Option<Function>,
    run: Function,
    /// The message handler `init` and `run` are called under (`fastpath::call_traced`).
    traceback: Function,
}

impl StandaloneApp {
    pub fn new(lua: &Lua, module: &Table) -> Result<StandaloneApp, String> {
        let init = match module.get::<Value>("init") {
            Ok(Value::Function(f)) => Some(f),
            _ => None,
        };
        let run = match module.get::<Value>("run") {
            Ok(Value::Function(f)) => f,
            _ => return Err("the module has no run function".into()),
        };
        let traceback = super::fastpath::callback_handler(lua).map_err(|e| one_line(&e))?;
        Ok(StandaloneApp {
            init,
            run,
            traceback,
        })
    }

    /// Runs `init()`; its error is a start-up error.
    pub fn init(&self, lua: &Lua, host: &HostCtx) -> Result<(), String> {
        host.reset_budget();
        if let Some(f) = &self.init {
            super::fastpath::call_traced::<()>(lua, &self.traceback, f, ())
                .map_err(|e| format!("init: {}", one_line(&e)))?;
        }
        host.flush();
        Ok(())
    }

    /// Runs `run()` until shutdown. A failed `run()` is logged with its error and started again
    /// after a back-off ([`RESTART_FIRST`] doubling up to [`RESTART_MAX`]) that a shutdown ends
    /// at once. A `run()` that returns before shutdown is done: that is logged and the instance
    /// waits for the shutdown. `onShutdown` runs at shutdown, as for every service.
    pub fn run(&self, lua: &Lua, host: &HostCtx) {
        host.begin_run();
        let mut delay = RESTART_FIRST;
        loop {
            host.reset_budget();
            let started = Instant::now();
            let result = super::fastpath::call_traced::<()>(lua, &self.traceback, &self.run, ());
            host.flush();
            if host.stop.is_set() {
                if let Err(e) = result {
                    crate::error!("{} run: {}", host.tag(), one_line(&e));
                }
                return;
            }
            let e = match result {
                Ok(()) => {
                    host.run_state.returned(host.instance);
                    crate::warn!(
                        "{} run() returned before shutdown; the instance idles until then",
                        host.tag()
                    );
                    while host.stop.sleep(Duration::from_secs(3600)) {}
                    return;
                }
                Err(e) => e,
            };
            // What the failed run() built is garbage now (see `collect`).
            super::collect::after_failed_callback(lua, &e);
            let first = started.elapsed() >= RESTART_RESET_AFTER;
            if first {
                delay = RESTART_FIRST;
            }
            host.run_state
                .failed(host.instance, delay, first || delay == RESTART_FIRST);
            crate::error!(
                "{} run() failed, restarting it in {} s: {}",
                host.tag(),
                delay.as_secs(),
                one_line(&e)
            );
            if !host.stop.sleep(delay) {
                return;
            }
            delay = (delay * 2).min(RESTART_MAX);
        }
    }
}
