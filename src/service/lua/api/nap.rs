//! `nap`: sleeping in a standalone service, woken early by shutdown.

use std::rc::Rc;
use std::time::Duration;

use mlua::{Lua, MultiValue, UserData, UserDataFields, Value};

use super::{fail, method_table, ok, this, Ret};
use crate::service::lua::host::HostCtx;

struct Nap(Rc<HostCtx>);

impl UserData for Nap {
    fn add_fields<F: UserDataFields<Self>>(f: &mut F) {
        // `sleep` in seconds; the original's `usleep` and `nsleep` in micro- and nanoseconds
        // (its examples use `usleep`). Fractions are kept.
        f.add_meta_field_with("__index", |lua| {
            let mut methods = Vec::new();
            for (name, per_second) in [("sleep", 1.0), ("usleep", 1e6), ("nsleep", 1e9)] {
                let m = lua.create_function(move |lua, a: MultiValue| {
                    let nap = this::<Nap>(&a, "n", name)?;
                    let n = duration_arg(lua, a.get(1)).ok_or_else(|| {
                        mlua::Error::runtime(format!(
                            "bad argument #1 to 'n:{name}' (number expected, got {})",
                            a.get(1)
                                .map_or("no value", crate::lapps_proto::lua::lua_type)
                        ))
                    })?;
                    nap.sleep(lua, n / per_second)
                })?;
                methods.push((name, m));
            }
            method_table(lua, methods)
        });
    }
}

/// A number, or a string that reads as one (as Lua's arithmetic takes it).
fn duration_arg(lua: &Lua, v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Integer(i) => Some(*i as f64),
        Value::Number(n) => Some(*n),
        s @ Value::String(_) => lua.coerce_number(s.clone()).ok().flatten(),
        _ => None,
    }
}

impl Nap {
    fn sleep(&self, lua: &Lua, secs: f64) -> mlua::Result<Ret> {
        if !self.0.may_block() {
            return fail(crate::service::lua::host::NOT_IN_NETWORK);
        }
        // math.huge is the longest sleep (10^9 s, until the stop in practice).
        if secs.is_nan() || secs < 0.0 {
            return fail("bad duration");
        }
        // Whatever was sent before the nap leaves now, not after it.
        self.0.before_wait(lua);
        let slept = self.0.stop.sleep(Duration::from_secs_f64(secs.min(1e9)));
        self.0.polling_point(lua);
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
