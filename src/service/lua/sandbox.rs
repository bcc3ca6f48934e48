//! Creating one LuaJIT state with the service's safety settings.
//!
//! Owns which standard libraries a state gets, the memory limit, the instruction budget hook
//! and the JIT mode that the budget requires. It never loads the app (see `instance`).
//!
//! Measured with the vendored LuaJIT (see docs/lua-api.md, "Limits"): a count hook is never
//! called inside a compiled trace, so `while true do end` cannot be stopped with the JIT on.
//! A service with an instruction budget therefore runs interpreter-only; a service without
//! one (`instruction_budget: None`) keeps the JIT and has only the memory limit.

use std::rc::Rc;

use mlua::{HookTriggers, Lua, LuaOptions, StdLib, Value, VmState};

use super::host::HostCtx;
use super::spec::ServiceSpec;

/// The count hook fires every budget / HOOK_SLICES VM instructions: a callback is stopped
/// after between `budget - 2 * budget / HOOK_SLICES` and `budget + budget / HOOK_SLICES`
/// instructions (the counter runs on across callbacks, so a callback may be charged for the
/// end of the one before). Each firing goes through mlua's hook trampoline, about 0.1 us:
/// at the former fixed step of 1000 instructions that was 4% of an interpreted Lua loop.
const HOOK_SLICES: u64 = 64;

pub(crate) fn new_state(spec: &ServiceSpec, host: &Rc<HostCtx>) -> mlua::Result<Lua> {
    let mut libs = StdLib::ALL_SAFE;
    if spec.allow_ffi {
        libs |= StdLib::FFI;
    }
    if spec.allow_debug {
        libs |= StdLib::DEBUG;
    }
    let lua = if spec.allow_ffi || spec.allow_debug {
        // SAFETY: the operator allowed ffi/debug for this service in its config; those
        // libraries can break memory safety by design, which is what the setting accepts.
        unsafe { Lua::unsafe_new_with(libs, LuaOptions::default()) }
    } else {
        Lua::new_with(libs, LuaOptions::default())?
    };
    // The trees of this thread's messages get the same limit (the state never leaves it).
    crate::lapps_proto::tree_budget::set_limit(spec.memory_limit);
    if spec.memory_limit > 0 {
        lua.set_memory_limit(spec.memory_limit)?;
    }
    if let Some(budget) = spec.instruction_budget {
        install_budget(&lua, host, budget)?;
    }
    strip_globals(&lua, spec)?;
    // Nested coroutines must not take the thread's own stack (see `cstack`).
    super::cstack::install(&lua)?;
    if !spec.allow_ffi && !spec.allow_debug {
        lua.load(CLOSE_BACK_DOORS).set_name("=sandbox").exec()?;
    }
    set_package_path(&lua, spec)?;
    Ok(lua)
}

/// Run in every state without `allow_ffi`/`allow_debug`, before the app:
/// - LuaJIT loads the ffi library on demand (a `1LL` literal, 64-bit constants in bytecode)
///   and registers it in `package.loaded`, where `require` would find it. Loading it here
///   once and dropping the registration leaves nothing to find: LuaJIT never loads it again.
/// - `string.buffer` hands out raw pointers (`reserve`, `ref`): gone.
/// - LuaJIT does not verify bytecode, and malformed bytecode corrupts memory: `string.dump`
///   is gone, and every loader reads text only (`load`, `loadstring`, `loadfile`, `dofile`,
///   and `require`'s Lua searcher, which would otherwise load a binary file from the path).
const CLOSE_BACK_DOORS: &str = r#"
local load, loadfile, searchpath = load, loadfile, package.searchpath
local assert, error, format = assert, error, string.format
assert(load("return 1LL", "=sandbox", "t"))()
package.loaded.ffi = nil
package.loaded["string.buffer"] = nil
package.preload["string.buffer"] = nil
string.dump = nil
_G.load = function(chunk, name, _, env) return load(chunk, name, "t", env) end
_G.loadstring = function(s, name) return load(s, name, "t") end
_G.loadfile = function(path, _, env) return loadfile(path, "t", env) end
_G.dofile = function(path) return assert(loadfile(path, "t"))() end
package.loaders[2] = function(name)
  local path, err = searchpath(name, package.path)
  if not path then return err end
  local f, lerr = loadfile(path, "t")
  if not f then
    error(format("error loading module '%s' from file '%s':\n\t%s", name, path, lerr), 2)
  end
  return f
end
"#;

fn strip_globals(lua: &Lua, spec: &ServiceSpec) -> mlua::Result<()> {
    let g = lua.globals();
    // os.exit would take the whole server down, whatever the config says.
    let os: mlua::Table = g.get("os")?;
    let io: mlua::Table = g.get("io")?;
    os.set("exit", Value::Nil)?;
    // The locale is the whole process's (every service's number formatting, nljson's number
    // keys), and setting it while other threads format numbers is not safe: queries only;
    // setting one answers nil, as for a locale the system cannot honour.
    let setlocale: mlua::Function = os.get("setlocale")?;
    let query = lua.create_function(move |_, (locale, category): (Value, Value)| match locale {
        Value::Nil => setlocale.call::<Value>((Value::Nil, category)),
        _ => Ok(Value::Nil),
    })?;
    os.set(
        "setlocale",
        super::error_values::raising_strings(lua, query)?,
    )?;
    if spec.allow_os_execute {
        super::children::install(lua, &os, &io)?;
    } else {
        os.set("execute", Value::Nil)?;
        io.set("popen", Value::Nil)?;
    }
    // The one way for app code to get a `__gc` of its own: LuaJIT runs finalizers with hooks
    // off (no instruction budget) and swallows their errors, also during the collections the
    // host runs and when the state closes, so a looping finalizer would hang the instance.
    g.set("newproxy", Value::Nil)?;
    if spec.instruction_budget.is_some() {
        // jit.on() would re-enable traces that never run the budget hook: the global and
        // every way `require` could hand it out again.
        g.set("jit", Value::Nil)?;
        let package: mlua::Table = g.get("package")?;
        let loaded: mlua::Table = package.get("loaded")?;
        let preload: mlua::Table = package.get("preload")?;
        for name in ["jit", "jit.opt", "jit.util", "jit.profile"] {
            loaded.set(name, Value::Nil)?;
            preload.set(name, Value::Nil)?;
        }
    }
    Ok(())
}

pub(crate) fn set_package_path(lua: &Lua, spec: &ServiceSpec) -> mlua::Result<()> {
    let package: mlua::Table = lua.globals().get("package")?;
    let mut path = String::new();
    for dir in &spec.package_paths {
        let d = dir.display();
        path.push_str(&format!("{d}/?.lua;{d}/?/init.lua;"));
    }
    let old: String = package.get("path").unwrap_or_default();
    path.push_str(&old);
    package.set("path", path)
}

/// `xpcall` with the budget kept: LuaJIT calls a message handler for an error raised inside
/// a hook while that hook is still active, and skips every hook meanwhile, so a handler for
/// the budget's own error would run without any budget. Once the budget is spent the error
/// passes by the app's handler unchanged (`spent` is the host's check).
const BUDGETED_XPCALL: &str = r#"
local spent, xpcall = ...
-- Captured: an app that assigns a global `type` (a missing `local`) must not change this.
local type = type
_G.xpcall = function(f, handler, ...)
  -- What xpcall itself refuses (a handler that is not a function), it refuses as before.
  if type(handler) ~= "function" then return xpcall(f, handler, ...) end
  return xpcall(f, function(e)
    if spent() then return e end
    return handler(e)
  end, ...)
end
"#;

fn install_budget(lua: &Lua, host: &Rc<HostCtx>, budget: u64) -> mlua::Result<()> {
    // Interpreter only: compiled traces never call the count hook (see the module doc).
    lua.load("jit.off() jit.flush()").exec()?;
    let spent = {
        let host = Rc::clone(host);
        lua.create_function(move |_, ()| Ok(host.budget_left.get() == 0))?
    };
    let xpcall: mlua::Function = lua.globals().get("xpcall")?;
    lua.load(BUDGETED_XPCALL)
        .set_name("=sandbox")
        .call::<()>((spent, xpcall))?;
    let step = (budget / HOOK_SLICES).clamp(1, u32::MAX as u64);
    let host = Rc::clone(host);
    // The hook is global in LuaJIT (one for every thread of the state), so the main state's
    // pointer changes it wherever it fires. The closure is owned by the state: the pointer is
    // valid whenever it runs.
    let main = MainState(main_state(lua)?);
    // Set once the budget is spent: the hook then fires at every instruction, so the error
    // is raised again at the first instruction outside the pcall that caught it, and a loop
    // around pcall cannot keep the callback going.
    let tight = std::cell::Cell::new(false);
    lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(step as u32),
        move |lua, debug| {
            let left = host.budget_left.get();
            let exceeded = || {
                let at = app_position(lua, debug);
                Err(mlua::Error::runtime(format!(
                    "{at}: instruction budget of {budget} exceeded"
                )))
            };
            if tight.get() {
                if left == 0 {
                    return exceeded();
                }
                // A new slice began (the callback ended): back to the normal step.
                main.set_count(step as i32);
                tight.set(false);
                return Ok(VmState::Continue);
            }
            if left <= step {
                host.budget_left.set(0);
                main.set_count(1);
                tight.set(true);
                return exceeded();
            }
            host.budget_left.set(left - step);
            Ok(VmState::Continue)
        },
    )
}

/// `file:line` of the app's code where the hook found the budget spent. Once it is spent the
/// hook fires at every instruction, so it may fire in one of the sandbox's own Lua wrappers
/// (`xpcall`, `coroutine.wrap`, `load`), which named "sandbox:24" before: the line named is
/// then the app's that called the wrapper.
fn app_position(lua: &Lua, debug: &mlua::Debug) -> String {
    let of = |d: &mlua::Debug| {
        let at = d.source().short_src.as_deref().unwrap_or("?").to_owned();
        (at, d.current_line().unwrap_or(0))
    };
    let mut pos = of(debug);
    let mut level = 1;
    while pos.0 == "sandbox" || pos.0 == "[C]" {
        match lua.inspect_stack(level, of) {
            Some(p) => pos = p,
            None => break,
        }
        level += 1;
    }
    format!("{}:{}", pos.0, pos.1)
}

/// The state's main thread, for changing the (global) hook's count from inside the hook.
struct MainState(*mut mlua::ffi::lua_State);

impl MainState {
    fn set_count(&self, count: i32) {
        // SAFETY: the pointer is the state's main thread (see install_budget), alive while the
        // hook closure that owns this value can run; lua_sethook only rewrites the global
        // hook fields, keeping the function and mask that mlua installed.
        unsafe {
            let l = self.0;
            let f = mlua::ffi::lua_gethook(l);
            let mask = mlua::ffi::lua_gethookmask(l);
            mlua::ffi::lua_sethook(l, f, mask, count);
        }
    }
}

/// The pointer of the state's main thread. Called only while the state is made, from its
/// top level (no coroutine running: the sandbox's own setup chunks have run and returned):
/// exec_raw runs its closure on the Lua thread that is current, the main one then. From a callback running in a coroutine it would be the coroutine's, which the
/// collector may free while a hook keeps the pointer.
fn main_state(lua: &Lua) -> mlua::Result<*mut mlua::ffi::lua_State> {
    let mut p = std::ptr::null_mut();
    // SAFETY: only reads the pointer of the Lua thread exec_raw runs on (the main one: see
    // above).
    unsafe {
        lua.exec_raw::<()>((), |l| {
            mlua::ffi::lua_pushthread(l);
            p = mlua::ffi::lua_tothread(l, -1);
            mlua::ffi::lua_settop(l, -2);
        })?;
    }
    Ok(p)
}
