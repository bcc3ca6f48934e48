//! A full collection after a callback that failed near the state's memory limit.
//!
//! LuaJIT has no emergency collection: an allocation past the memory limit fails at once,
//! however much garbage the state holds. A callback that fails leaves what it built as
//! garbage, which the incremental collector frees only over the next many allocations, so the
//! next callbacks would start near the limit and fail as well. A bare memory error is
//! collected after in any case; but a host function that runs out of memory raises an
//! ordinary error through mlua (a callback error), and an app may raise its own after
//! building a lot. So after any failed callback, a state at three quarters of its limit or
//! more is collected in full. Only then: a client that makes a callback fail on purpose must
//! not make each of its messages cost a full collection of a state far from its limit.

use mlua::ffi;

/// Whether a state using `used` bytes (of this thread's limit) is collected in full after a
/// failed callback; never without a limit.
pub(crate) fn near_limit(used: usize) -> bool {
    let limit = crate::lapps_proto::tree_budget::limit();
    limit != 0 && used >= limit - limit / 4
}

/// After a callback on `l` failed with `status` (not 0): two full cycles (the second frees
/// what the finalizers of the first let go) after a memory error, or when the state is near
/// its limit ([`near_limit`]).
///
/// # Safety
/// `l` is a valid state owned by this thread, with room for no stack slots (a collection
/// takes none) and not inside an allocation.
pub(crate) unsafe fn after_failed_call(l: *mut ffi::lua_State, status: std::ffi::c_int) {
    // SAFETY: the caller passes a valid state of this thread; LUA_GCCOUNT/LUA_GCCOUNTB read
    // its counters and LUA_GCCOLLECT runs a cycle, none of them raises.
    unsafe {
        let kib = ffi::lua_gc(l, ffi::LUA_GCCOUNT, 0).max(0) as usize;
        let rest = ffi::lua_gc(l, ffi::LUA_GCCOUNTB, 0).max(0) as usize;
        if status == ffi::LUA_ERRMEM || near_limit(kib * 1024 + rest) {
            ffi::lua_gc(l, ffi::LUA_GCCOLLECT, 0);
            ffi::lua_gc(l, ffi::LUA_GCCOLLECT, 0);
        }
    }
}

/// [`after_failed_call`] for a callback made through mlua, which failed with `err`.
pub(crate) fn after_failed_callback(lua: &mlua::Lua, err: &mlua::Error) {
    if matches!(err, mlua::Error::MemoryError(_)) || near_limit(lua.used_memory()) {
        let _ = lua.gc_collect();
        let _ = lua.gc_collect();
    }
}
