//! `nap`: sleeping in a standalone service, woken early by shutdown.

use std::rc::Rc;
use std::time::Duration;

use mlua::{Lua, UserData, UserDataMethods, Value};

use super::{fail, ok, Ret};
use crate::service::lua::host::HostCtx;

struct Nap(Rc<HostCtx>);

impl UserData for Nap {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        // `sleep` in seconds; the original's `usleep` and `nsleep` in micro- and nanoseconds
        // (its examples use `usleep`). Fractions are kept.
        for (name, per_second) in [("sleep", 1.0), ("usleep", 1e6), ("nsleep", 1e9)] {
            m.add_method(name, move |_, this, n: f64| this.sleep(n / per_second));
        }
    }
}

impl Nap {
    fn sleep(&self, secs: f64) -> mlua::Result<Ret> {
        if !self.0.may_block() {
            return fail(crate::service::lua::host::NOT_IN_NETWORK);
        }
        // math.huge is the longest sleep (10^9 s, until the stop in practice).
        if secs.is_nan() || secs < 0.0 {
            return fail("bad duration");
        }
        // Whatever was sent before the nap leaves now, not after it.
        self.0.flush();
        let slept = self.0.stop.sleep(Duration::from_secs_f64(secs.min(1e9)));
        self.0.polling_point();
        if slept {
            ok(Value::Boolean(true))
        } else {
            fail("stopping")
        }
    }
}

pub(crate) fn install(lua: &Lua, host: &Rc<HostCtx>) -> mlua::Result<()> {
    let t = lua.create_table()?;
    let h = Rc::clone(host);
    t.set(
        "new",
        lua.create_function(move |_, _this: Value| Ok(Nap(Rc::clone(&h))))?,
    )?;
    lua.globals().set("nap", t)
}
