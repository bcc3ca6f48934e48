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

    pub fn run(&self, host: &HostCtx) {
        host.reset_budget();
        if let Err(e) = self.run.call::<()>(()) {
            crate::error!("{} run: {}", host.tag(), one_line(&e));
        }
        host.flush();
    }
}
