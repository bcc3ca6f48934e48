//! nljson containers as plain Lua userdata with a metatable of ours, created and read straight
//! on the Lua C API.
//!
//! Owns the userdata's layout (an `Option<Node>`, `None` once collected), its metatable (in the
//! registry under the address of [`MT_ANCHOR`], hidden from apps by `__metatable`) and the metamethods every
//! message uses (`__index`, `__len`, `__gc`), written as C functions. The metamethods that
//! convert Lua values (`__newindex`, `__tostring`, `__eq`) are mlua functions that `nljson`
//! hands over. Measured reason (docs/nljson.md, "Cost"): as mlua userdata, creating a value and
//! each `v.key` went through mlua's callback machinery and cost more than the LAppS echo itself.
//!
//! A userdata is ours only when its metatable is the registry's: apps cannot set the metatable
//! of a userdata (no `debug` in the sandbox, unless a service sets `allow_debug`, which gives
//! up these guarantees as `sandbox.rs` says) nor reach ours. The errors this module raises
//! itself are raised only after everything owned is dropped. The one error it cannot order is
//! Lua's out-of-memory error from `lua_newuserdata` or `lua_pushlstring`, raised while a frame
//! still owns a handle or an `Rc<Doc>`: it unwinds through those `C-unwind` frames, running
//! their destructors, because the vendored LuaJIT is built with external unwinding (its
//! Makefile turns it on when the compiler emits unwind tables, as x86-64 GCC does). It never
//! holds a `RefCell` borrow of a tree across a Lua call.

use std::ffi::{c_int, CStr};
use std::mem::{align_of, size_of};
use std::panic::{catch_unwind, AssertUnwindSafe};

use mlua::{ffi, Function, Lua, Value as LuaValue};

use super::lazy::{Handle, Item};
use super::node::{Key, Node};
use super::tree_budget::{self, Refusal};
use super::value::Value;

/// Its address is the registry key of the metatable: a light userdata key is found without
/// hashing a string (two lookups per message).
static MT_ANCHOR: u8 = 0;

/// Pushes the metatable (or nil before it is installed).
///
/// # Safety
/// `l` is a running state with a free stack slot.
pub(crate) unsafe fn push_metatable(l: *mut ffi::lua_State) {
    // SAFETY: two pushes and a raw get (no metamethods) on the registry.
    unsafe {
        ffi::lua_pushlightuserdata(l, &MT_ANCHOR as *const u8 as *mut std::ffi::c_void);
        ffi::lua_rawget(l, ffi::LUA_REGISTRYINDEX);
    }
}

/// What the userdata holds; `None` after `__gc` (a finalized value can be seen again by other
/// finalizers).
type Slot = Option<Handle>;

/// Whether the metatable of this state exists.
pub(crate) fn has_metatable(lua: &Lua) -> bool {
    let mut found = false;
    // SAFETY: one push and a type check on the state exec_raw hands us; the guard restores the
    // stack.
    let r = unsafe {
        lua.exec_raw::<()>((), |l| {
            push_metatable(l);
            found = ffi::lua_type(l, -1) == ffi::LUA_TTABLE;
            ffi::lua_settop(l, 0);
        })
    };
    r.is_ok() && found
}

/// Creates the metatable of this state with the given converting metamethods.
pub(crate) fn install_metatable(
    lua: &Lua,
    newindex: Function,
    tostring: Function,
    eq: Function,
) -> mlua::Result<()> {
    // SAFETY: builds one table from the three functions (stack 1..3) and C closures whose one
    // upvalue is that table, stores it in the registry and leaves the stack empty.
    unsafe {
        lua.exec_raw::<()>((newindex, tostring, eq), |l| {
            ffi::lua_createtable(l, 0, 8);
            ffi::lua_pushvalue(l, 1);
            ffi::lua_setfield(l, 4, c"__newindex".as_ptr());
            ffi::lua_pushvalue(l, 2);
            ffi::lua_setfield(l, 4, c"__tostring".as_ptr());
            ffi::lua_pushvalue(l, 3);
            ffi::lua_setfield(l, 4, c"__eq".as_ptr());
            for (name, f) in [
                (c"__index", index as ffi::lua_CFunction),
                (c"__len", len as ffi::lua_CFunction),
                (c"__gc", gc as ffi::lua_CFunction),
            ] {
                ffi::lua_pushvalue(l, 4);
                ffi::lua_pushcclosure(l, f, 1);
                ffi::lua_setfield(l, 4, name.as_ptr());
            }
            ffi::lua_pushstring(l, c"nljson".as_ptr());
            ffi::lua_setfield(l, 4, c"__metatable".as_ptr());
            ffi::lua_pushlightuserdata(l, &MT_ANCHOR as *const u8 as *mut std::ffi::c_void);
            ffi::lua_pushvalue(l, 4);
            ffi::lua_rawset(l, ffi::LUA_REGISTRYINDEX);
            ffi::lua_settop(l, 0);
        })
    }
}

/// The metatable of this state's containers (it must exist: see `nljson::ensure_metatable`).
pub(crate) fn metatable(lua: &Lua) -> mlua::Result<mlua::Table> {
    // SAFETY: one push, which exec_raw returns (converted, so a missing table is an error).
    unsafe { lua.exec_raw::<mlua::Table>((), |l| push_metatable(l)) }
}

/// A container as a Lua value (the metatable must exist: see `nljson::ensure_metatable`).
pub(crate) fn container_to_lua(lua: &Lua, node: Node) -> mlua::Result<LuaValue> {
    // SAFETY: push_node pushes exactly one value, which exec_raw returns.
    unsafe { lua.exec_raw::<LuaValue>((), |l| push_node(l, node)) }
}

/// Why a Lua value has no container behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoNode {
    /// Not one of our userdata (or one already collected).
    Foreign,
    /// A message view whose tree is past the tree budget.
    OutOfMemory,
}

impl std::fmt::Display for NoNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NoNode::Foreign => "not an nljson value",
            NoNode::OutOfMemory => "not enough memory",
        })
    }
}

/// The container behind `v`, if `v` is one of our userdata (a message view is turned into its
/// tree: when the tree budget refuses it, after a full collection and one retry, as
/// [`on_view`] does).
pub(crate) fn node_of(lua: &Lua, v: &LuaValue) -> Result<Node, NoNode> {
    let LuaValue::UserData(ud) = v else {
        return Err(NoNode::Foreign);
    };
    let mut out = None;
    // SAFETY: the userdata is argument 1; `get` checks its metatable before reading it, and
    // the clone (which keeps what it needs alive) is taken while it is on the stack.
    let r = unsafe {
        lua.exec_raw::<()>(ud.clone(), |l| {
            out = get(l, 1).cloned();
            ffi::lua_settop(l, 0);
        })
    };
    let handle = r.ok().and(out).ok_or(NoNode::Foreign)?;
    tree_budget::take_refused();
    if let Some(node) = handle.resolve() {
        return Ok(node);
    }
    match tree_budget::take_refused() {
        None => return Err(NoNode::Foreign),
        Some(Refusal::Never) => return Err(NoNode::OutOfMemory),
        Some(Refusal::NotNow) => {}
    }
    let _ = lua.gc_collect();
    let node = handle.resolve();
    match tree_budget::take_refused() {
        None => node.ok_or(NoNode::Foreign),
        Some(_) => Err(NoNode::OutOfMemory),
    }
}

/// Pushes `node`: scalars as plain Lua values, containers as our userdata.
///
/// # Safety
/// `l` is a running state with a free stack slot (three for containers).
pub(crate) unsafe fn push_node(l: *mut ffi::lua_State, node: Node) {
    // SAFETY: pushes on the running state; the userdata block is written before anything else
    // can see it and gets its metatable (with `__gc`) at once. Should the allocation raise
    // (out of memory), `handle` is dropped by the unwinding (module doc).
    unsafe {
        match node {
            Node::Scalar(ref v) => push_scalar(l, v),
            container => push_handle(l, Handle::Tree(container)),
        }
    }
}

/// Pushes a container as our userdata.
///
/// # Safety
/// `l` is a running state with three free stack slots (the metatable, the userdata, the
/// metatable again for `lua_setmetatable`). Every caller runs in a C function, which has
/// `LUA_MINSTACK` (20).
pub(crate) unsafe fn push_handle(l: *mut ffi::lua_State, handle: Handle) {
    // SAFETY: pushes on the running state; the metatable is checked to be a table before
    // push_handle_with uses it, and removed afterwards.
    unsafe {
        push_metatable(l);
        if ffi::lua_type(l, -1) != ffi::LUA_TTABLE {
            // Not installed: nothing could free the handle, so do not make one.
            ffi::lua_settop(l, -2);
            ffi::lua_pushnil(l);
            return;
        }
        push_handle_with(l, handle, ffi::lua_gettop(l));
        ffi::lua_remove(l, -2);
    }
}

/// [`push_handle`] with the metatable already at `mt` (an absolute or upvalue index): spares
/// its registry lookup on the per-message paths.
///
/// # Safety
/// `l` is a running state with two free stack slots, and `mt` holds the metatable of this
/// state.
pub(crate) unsafe fn push_handle_with(l: *mut ffi::lua_State, handle: Handle, mt: c_int) {
    // SAFETY: pushes on the running state; the userdata block is written before anything else
    // can see it and gets its metatable (with `__gc`) at once. Should the allocation raise
    // (out of memory), `handle` is dropped by the unwinding (module doc).
    unsafe {
        let p = ffi::lua_newuserdata(l, size_of::<Slot>()) as *mut Slot;
        if (p as usize) % align_of::<Slot>() != 0 {
            ffi::lua_settop(l, -2);
            ffi::lua_pushnil(l);
            return;
        }
        p.write(Some(handle));
        ffi::lua_pushvalue(l, mt);
        ffi::lua_setmetatable(l, -2);
    }
}

/// Pushes what a lookup found; the metatable is at `mt` (as in [`push_handle_with`]).
///
/// # Safety
/// `l` is a running state with two free stack slots.
unsafe fn push_item(l: *mut ffi::lua_State, item: Item, mt: c_int) {
    // SAFETY: pushes on the running state; string bytes are copied by Lua while the document
    // holding them is alive (owned by `item`, dropped by the unwinding should a push raise).
    unsafe {
        match item {
            Item::Node(Node::Scalar(ref v)) => push_scalar(l, v),
            Item::Node(n) => push_handle_with(l, Handle::Tree(n), mt),
            Item::RawContainer(doc, at) => push_handle_with(l, Handle::Raw(doc, at), mt),
            Item::RawScalar(doc, at) => match doc.plain_string(at) {
                Some(s) => {
                    ffi::lua_pushlstring(l, s.as_ptr().cast(), s.len());
                }
                None => match doc.scalar(at) {
                    Some(v) => push_scalar(l, &v),
                    None => ffi::lua_pushnil(l),
                },
            },
        }
    }
}

/// Pushes a scalar as `lua::to_lua` converts it.
///
/// # Safety
/// `l` is a running state with a free stack slot.
pub(crate) unsafe fn push_scalar(l: *mut ffi::lua_State, v: &Value) {
    // SAFETY: one push on the running state; string bytes are copied by Lua.
    unsafe {
        match v {
            Value::Null => ffi::lua_pushlightuserdata(l, std::ptr::null_mut()),
            Value::Bool(b) => ffi::lua_pushboolean(l, *b as c_int),
            Value::Int(i) => ffi::lua_pushnumber(l, *i as f64),
            Value::UInt(u) => ffi::lua_pushnumber(l, *u as f64),
            Value::Float(f) => ffi::lua_pushnumber(l, *f),
            Value::Text(s) => {
                ffi::lua_pushlstring(l, s.as_ptr().cast(), s.len());
            }
            Value::Bytes(b) => {
                ffi::lua_pushlstring(l, b.as_ptr().cast(), b.len());
            }
            // Never scalars (Node keeps containers apart).
            Value::Array(_) | Value::Map(_) => ffi::lua_pushlightuserdata(l, std::ptr::null_mut()),
        }
    }
}

/// The container at `idx` when it is one of our userdata. The reference lives as long as the
/// value stays on the stack.
///
/// # Safety
/// `l` is a running state with two free stack slots.
pub(crate) unsafe fn get<'a>(l: *mut ffi::lua_State, idx: c_int) -> Option<&'a Handle> {
    // SAFETY: type and metatable are checked before the block is read as a Slot; the stack is
    // restored before returning.
    unsafe {
        let idx = if idx < 0 && idx > ffi::LUA_REGISTRYINDEX {
            ffi::lua_gettop(l) + idx + 1
        } else {
            idx
        };
        if ffi::lua_type(l, idx) != ffi::LUA_TUSERDATA || ffi::lua_getmetatable(l, idx) == 0 {
            return None;
        }
        push_metatable(l);
        let ours = ffi::lua_rawequal(l, -1, -2) != 0;
        ffi::lua_settop(l, -3);
        if !ours {
            return None;
        }
        (*(ffi::lua_touserdata(l, idx) as *const Slot)).as_ref()
    }
}

/// [`get`] for the metamethods, whose upvalue 1 is the metatable.
unsafe fn get_up<'a>(l: *mut ffi::lua_State, idx: c_int) -> Option<&'a Handle> {
    // SAFETY: the metamethods' upvalue 1 is the metatable.
    unsafe { get_with(l, idx, ffi::lua_upvalueindex(1)) }
}

/// [`get`] with the metatable at `mt` (an upvalue index, or an absolute index other than
/// `idx`), compared instead of looked up in the registry.
///
/// # Safety
/// `l` is a running state with a free stack slot, and `mt` holds the metatable of this state.
pub(crate) unsafe fn get_with<'a>(
    l: *mut ffi::lua_State,
    idx: c_int,
    mt: c_int,
) -> Option<&'a Handle> {
    // SAFETY: as in `get`, comparing with `mt` instead of a registry lookup.
    unsafe {
        if ffi::lua_type(l, idx) != ffi::LUA_TUSERDATA || ffi::lua_getmetatable(l, idx) == 0 {
            return None;
        }
        let ours = ffi::lua_rawequal(l, -1, mt) != 0;
        ffi::lua_settop(l, -2);
        if !ours {
            return None;
        }
        (*(ffi::lua_touserdata(l, idx) as *const Slot)).as_ref()
    }
}

/// Raises `msg`. Nothing owned may be alive in the caller's frame.
unsafe fn raise(l: *mut ffi::lua_State, msg: &CStr) -> c_int {
    // SAFETY: a push and lua_error on the running state, from a lua_CFunction.
    unsafe {
        ffi::lua_pushstring(l, msg.as_ptr());
        ffi::lua_error(l)
    }
}

/// `v[k]`: a member, an element (1-based) or nil.
unsafe extern "C-unwind" fn index(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: arguments are checked by type before use; the key's bytes are read while the key
    // is on the stack; the found node is owned (an Rc clone) before anything is pushed.
    unsafe {
        let key = match ffi::lua_type(l, 2) {
            ffi::LUA_TNUMBER => Key::Num(ffi::lua_tonumber(l, 2)),
            ffi::LUA_TSTRING => {
                let mut len = 0usize;
                let p = ffi::lua_tolstring(l, 2, &mut len);
                Key::Str(std::slice::from_raw_parts(p.cast::<u8>(), len))
            }
            _ => {
                ffi::lua_pushnil(l);
                return 1;
            }
        };
        match on_view(l, |h| h.get(key)) {
            Ok(Some(item)) => push_item(l, item, ffi::lua_upvalueindex(1)),
            Ok(None) => ffi::lua_pushnil(l),
            Err(why) => return raise(l, why),
        }
        1
    }
}

/// What a view answers when its message's tree is past the tree budget: Lua's own words for
/// running out of memory.
const OUT_OF_MEMORY: &CStr = c"not enough memory";
const NOT_OURS: &CStr = c"nljson: not an nljson value";

/// Runs `f` on the view at index 1 (a metamethod's first argument), which may build its
/// message's tree. When the tree budget refused a build that could fit, a full collection
/// gives back the trees of what is no longer reachable, and `f` runs once more on the view read
/// again: the collection runs every pending finalizer, and a finalizer can reach a view that is
/// itself being finalized, which empties its slot. That is why the view is read here, each
/// time, and no reference to it (an argument's would live through the whole call) is held
/// across the collection. `Err`: what to raise (nothing of `f`'s is alive then).
///
/// # Safety
/// `l` is the running state, inside a metamethod whose upvalue 1 is the metatable.
unsafe fn on_view<T>(l: *mut ffi::lua_State, f: impl Fn(&Handle) -> T) -> Result<T, &'static CStr> {
    // Err drops a panic's payload before anything can raise.
    let run =
        |h: &Handle| catch_unwind(AssertUnwindSafe(|| f(h))).map_err(|_| c"nljson: internal error");
    tree_budget::take_refused();
    // SAFETY: the caller's contract; the reference's last use is `run`, before the collection.
    let view = unsafe { get_up(l, 1) }.ok_or(NOT_OURS)?;
    let first = run(view)?;
    match tree_budget::take_refused() {
        None => return Ok(first),
        Some(Refusal::Never) => return Err(OUT_OF_MEMORY),
        Some(Refusal::NotNow) => drop(first),
    }
    // SAFETY: a full cycle on the running state, from a C function; the first `view` is not
    // used after it (see above). Finalizer errors do not propagate out of LuaJIT's collector;
    // the cycle's own out-of-memory error (shrinking the string table allocates) is raised to
    // the app like one of this lookup's (nothing of ours is owned here but `f`, dropped by
    // the unwinding).
    let view = unsafe {
        ffi::lua_gc(l, ffi::LUA_GCCOLLECT, 0);
        get_up(l, 1).ok_or(NOT_OURS)?
    };
    let again = run(view)?;
    match tree_budget::take_refused() {
        None => Ok(again),
        Some(_) => Err(OUT_OF_MEMORY),
    }
}

/// `#v`.
unsafe extern "C-unwind" fn len(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: the argument is checked before use.
    unsafe {
        match on_view(l, Handle::len) {
            Ok(n) => ffi::lua_pushnumber(l, n as f64),
            Err(why) => return raise(l, why),
        }
        1
    }
}

/// Drops the node (once: the slot is `None` afterwards).
unsafe extern "C-unwind" fn gc(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: the block is read as a Slot only after its metatable is checked; taking the node
    // out leaves a valid `None`.
    unsafe {
        if ffi::lua_type(l, 1) != ffi::LUA_TUSERDATA || ffi::lua_getmetatable(l, 1) == 0 {
            return 0;
        }
        let ours = ffi::lua_rawequal(l, -1, ffi::lua_upvalueindex(1)) != 0;
        ffi::lua_settop(l, -2);
        if ours {
            let p = ffi::lua_touserdata(l, 1) as *mut Slot;
            let _ = catch_unwind(AssertUnwindSafe(|| drop((*p).take())));
        }
        0
    }
}

/// A view of a whole validated message as a Lua value (the metatable must exist).
#[cfg(test)]
pub(crate) fn doc_to_lua(lua: &Lua, doc: std::rc::Rc<super::lazy::Doc>) -> mlua::Result<LuaValue> {
    let root = doc.root();
    // SAFETY: push_handle pushes exactly one value, which exec_raw returns.
    unsafe { lua.exec_raw::<LuaValue>((), |l| push_handle(l, Handle::Raw(doc, root))) }
}
