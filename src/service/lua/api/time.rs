//! `time`: wall-clock and monotonic milliseconds.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mlua::Lua;

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

pub(crate) fn install(lua: &Lua) -> mlua::Result<()> {
    origin();
    let t = lua.create_table()?;
    t.set(
        "now",
        lua.create_function(|_, ()| {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as f64)
                .unwrap_or(0.0);
            Ok(ms)
        })?,
    )?;
    t.set(
        "monotonic",
        lua.create_function(|_, ()| Ok(origin().elapsed().as_secs_f64() * 1000.0))?,
    )?;
    lua.globals().set("time", t)
}
