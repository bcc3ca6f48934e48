//! Standalone services: `init()` once, then `run()` until it returns.
//!
//! `run()` is expected to loop until `must_stop()` returns true (set by `Registry::shutdown`).
//! The instruction budget applies per slice between two polling points (`must_stop()`,
//! `nap:sleep`), so a well-behaved loop runs forever and a runaway one is stopped.

use mlua::{Function, Table, Value};

use super::host::{one_line, HostCtx};

pub(crate) struct StandaloneApp {
    init: Option<Function>,
    run: Function,
}

impl StandaloneApp {
    pub fn new(module: &Table) -> Result<StandaloneApp, String> {
        let init = match module.get::<Value>("init") {
            Ok(Value::Function(f)) => Some(f),
            _ => None,
        };
        let run = match module.get::<Value>("run") {
            Ok(Value::Function(f)) => f,
            _ => return Err("the module has no run function".into()),
        };
        Ok(StandaloneApp { init, run })
    }

    /// Runs `init()`; its error is a start-up error.
    pub fn init(&self, host: &HostCtx) -> Result<(), String> {
        host.reset_budget();
        if let Some(f) = &self.init {
            f.call::<()>(())
                .map_err(|e| format!("init: {}", one_line(&e)))?;
        }
        host.flush();
        Ok(())
    }

    /// Runs `run()`. If it ends before shutdown (returns or raises), that is logged and the
    /// instance waits for the shutdown: `onShutdown` runs at shutdown, as for every service.
    pub fn run(&self, host: &HostCtx) {
        host.reset_budget();
        host.begin_run();
        let result = self.run.call::<()>(());
        host.flush();
        if host.stop.is_set() {
            if let Err(e) = result {
                crate::error!("{} run: {}", host.tag(), one_line(&e));
            }
            return;
        }
        match result {
            Ok(()) => crate::warn!(
                "{} run() returned before shutdown; the instance idles until then",
                host.tag()
            ),
            Err(e) => crate::error!(
                "{} run() failed, the instance idles until shutdown: {}",
                host.tag(),
                one_line(&e)
            ),
        }
        while host.stop.sleep(std::time::Duration::from_secs(3600)) {}
    }
}
