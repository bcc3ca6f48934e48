//! The thread's own stack under nested coroutines.
//!
//! LuaJIT bounds each coroutine's Lua stack, not the thread's C stack: a recursion through C
//! functions (`string.gsub` with a function replacement, `table.sort` with a comparator, a
//! `__tostring` calling `tostring`) ends in Lua's "stack overflow" error within one coroutine
//! (tests/lua_stack.rs), but one that starts a new coroutine every few thousand levels gets a
//! fresh Lua stack each time and went on until the thread's stack ran out: SIGSEGV, the whole
//! process gone. So `coroutine.resume` (and `coroutine.wrap`, rebuilt on it) refuses to enter
//! a coroutine when less than [`RESERVE`] of the thread's stack is left: the most one
//! coroutine can take before its own "stack overflow", with a margin. The instance thread's
//! stack ([`STACK_BYTES`]) is sized so that a coroutine resumed just above the reserve still
//! fits whole.
//!
//! Owns one thread-local value: the lowest address of the thread's stack it may use, noted by
//! [`note_stack_start`] when an instance thread starts. Without it (a state made on another
//! thread, as in tests) nothing is refused.

use std::cell::Cell;

use mlua::Lua;

/// An instance thread's stack. What one coroutine can take before LuaJIT's "stack overflow",
/// measured (a debug build of this crate, LuaJIT as always optimised): a recursion through
/// `string.gsub` 70.0 MiB (~7,000 levels of its 8 KiB buffer and frames), `load` whose reader
/// loads again from 60 functions deep 59.5 MiB, `print` of a value whose `__tostring` prints
/// it 43.9 MiB. A recursion may start a coroutine with just over [`RESERVE`] left, so the
/// stack holds the reserve and the worst case. Pages are committed only as the stack grows
/// into them, but the mapping counts in full against `vm.overcommit_memory=2` and
/// `RLIMIT_AS`.
pub(crate) const STACK_BYTES: usize = 192 << 20;

/// What must be left of the thread's stack to enter a coroutine: the worst case above, and
/// a margin.
const RESERVE: usize = 88 << 20;

thread_local! {
    /// The lowest address of this thread's stack that may be used; 0: not known.
    static FLOOR: Cell<usize> = const { Cell::new(0) };
}

/// The address of a local of the calling frame: about where the stack pointer is.
#[inline(never)]
fn here() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// Notes, at the top of a thread spawned with [`STACK_BYTES`], where its stack ends.
pub(crate) fn note_stack_start() {
    // A little of the stack is below this frame's callers already; the guard page and std's
    // own use at the start are well inside a MiB.
    let floor = here().saturating_sub(STACK_BYTES - (1 << 20));
    FLOOR.with(|f| f.set(floor));
}

/// The thread's stack left below the caller (None: not known).
fn left() -> Option<usize> {
    let floor = FLOOR.with(Cell::get);
    (floor != 0).then(|| here().saturating_sub(floor))
}

/// `coroutine.resume` with the thread's stack checked first, and `coroutine.wrap` built on it.
const GUARDED_COROUTINES: &str = r#"
local room, resume, create = ...
local error = error
local function guarded(co, ...)
  if not room() then
    return false, "C stack overflow (coroutines nested too deep)"
  end
  return resume(co, ...)
end
local type = type
local function wrapped(ok, ...)
  if not ok then
    -- As LuaJIT's own wrap: a string error gets the position of the generator's caller
    -- (level 2: this function is tail-called in its place), any other value passes as is.
    local e = ...
    error(e, type(e) == "string" and 2 or 0)
  end
  return ...
end
coroutine.resume = guarded
coroutine.wrap = function(f)
  local co = create(f)
  return function(...)
    return wrapped(guarded(co, ...))
  end
end
"#;

/// Installs the guarded `coroutine.resume` and `coroutine.wrap` in `lua`.
pub(crate) fn install(lua: &Lua) -> mlua::Result<()> {
    let coroutine: mlua::Table = lua.globals().get("coroutine")?;
    let resume: mlua::Function = coroutine.get("resume")?;
    let create: mlua::Function = coroutine.get("create")?;
    let room = lua.create_function(|_, ()| Ok(left().is_none_or(|l| l >= RESERVE)))?;
    lua.load(GUARDED_COROUTINES)
        .set_name("=sandbox")
        .call::<()>((room, resume, create))
}
