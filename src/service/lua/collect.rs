//! A full collection after a callback that failed near the state's memory limit.
//!
//! LuaJIT has no emergency collection: an allocation past the memory limit fails at once,
//! however much garbage the state holds. A callback that fails leaves what it built as
//! garbage, which the incremental collector frees only over the next many allocations, so the
//! next callbacks would start near the limit and fail as well. A bare memory error is
//! collected after in any case; but a host function that runs out of memory raises an
//! ordinary error through mlua (a callback error), and an app may raise its own after
//! building a lot. So after any failed callback, a state at three quarters of its limit or
//! more is collected in full, when it has grown by an eighth of its limit since the last such
//! collection. Only then: a client that makes callbacks fail on purpose (a LAppS request whose
//! handler raises is answered and its connection stays open) must not make each of its
//! messages cost a full collection, whether the state is far from its limit or near it with
//! live data that no collection frees.

use std::cell::Cell;

use mlua::ffi;

thread_local! {
    /// What this thread's state used right after its last collection here.
    static AFTER_LAST: Cell<usize> = const { Cell::new(0) };
}

/// Whether a state using `used` bytes (of this thread's limit) is collected in full after a
/// failed callback; never without a limit.
fn worth_collecting(used: usize) -> bool {
    let limit = crate::lapps_proto::tree_budget::limit();
    limit != 0
        && used >= limit - limit / 4
        && used >= AFTER_LAST.with(Cell::get).saturating_add(limit / 8)
}

/// Notes what the state uses after a collection made here.
fn collected(used: usize) {
    AFTER_LAST.with(|a| a.set(used));
}

/// After a callback on `l` failed with `status` (not 0): two full cycles (the second frees
/// what the finalizers of the first let go) after a memory error, or when the state is near
/// its limit and has grown since the last ([`worth_collecting`]).
///
/// # Safety
/// `l` is a valid state owned by this thread, with room for no stack slots (a collection
/// takes none), not inside an allocation, and inside a protected call: a cycle may raise
/// Lua's out-of-memory error (it shrinks the string table, an allocation, and mlua's
/// allocator refuses growth past the limit even then), which unwinds through the caller's
/// frames as any push's does.
pub(crate) unsafe fn after_failed_call(l: *mut ffi::lua_State, out_of_memory: bool) {
    // SAFETY: the caller passes a valid state of this thread, inside a protected call;
    // LUA_GCCOUNT/LUA_GCCOUNTB read its counters and LUA_GCCOLLECT runs a cycle, which raises
    // only out of memory (see above).
    unsafe {
        let used = |l| {
            let kib = ffi::lua_gc(l, ffi::LUA_GCCOUNT, 0).max(0) as usize;
            kib * 1024 + ffi::lua_gc(l, ffi::LUA_GCCOUNTB, 0).max(0) as usize
        };
        if out_of_memory || worth_collecting(used(l)) {
            ffi::lua_gc(l, ffi::LUA_GCCOLLECT, 0);
            ffi::lua_gc(l, ffi::LUA_GCCOLLECT, 0);
            collected(used(l));
        }
    }
}

/// Whether a call that ended with `status` and the error text `error` ran out of memory:
/// Lua's own status, or the text a host function raised (every host error reaches Lua as a
/// runtime error with its text, see `error_values`), or a message handler that could not
/// run for want of memory.
pub(crate) fn ran_out_of_memory(status: std::ffi::c_int, error: &str) -> bool {
    status == ffi::LUA_ERRMEM || status == ffi::LUA_ERRERR || error.starts_with(NO_MEMORY)
}

/// Lua's message for an allocation refused.
const NO_MEMORY: &str = "not enough memory";

/// Two full cycles after an allocation from Rust (a message made a Lua string) was refused:
/// what garbage there is goes before the allocation is tried once more.
pub(crate) fn after_refused_allocation(lua: &mlua::Lua) {
    let _ = lua.gc_collect();
    let _ = lua.gc_collect();
    collected(lua.used_memory());
}

/// Whether `err`, of a call made through mlua, is the state running out of memory.
pub(crate) fn is_out_of_memory(err: &mlua::Error) -> bool {
    matches!(err, mlua::Error::MemoryError(_))
        || super::error_values::text(err).starts_with(NO_MEMORY)
}

/// [`after_failed_call`] for a callback made through mlua, which failed with `err`.
pub(crate) fn after_failed_callback(lua: &mlua::Lua, err: &mlua::Error) {
    if is_out_of_memory(err) || worth_collecting(lua.used_memory()) {
        let _ = lua.gc_collect();
        let _ = lua.gc_collect();
        collected(lua.used_memory());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lapps_proto::tree_budget;

    #[test]
    fn a_state_near_its_limit_is_collected_again_only_once_it_grew_by_an_eighth() {
        const MIB: usize = 1 << 20;
        tree_budget::set_limit(16 * MIB);
        assert!(!worth_collecting(11 * MIB), "below three quarters");
        assert!(worth_collecting(13 * MIB));
        // Live data keeps it near the limit after the collection: the next failures do not
        // collect again until it has grown by 2 MiB.
        collected(12 * MIB + MIB / 2);
        assert!(!worth_collecting(13 * MIB));
        assert!(!worth_collecting(14 * MIB));
        assert!(worth_collecting(14 * MIB + MIB / 2));
        tree_budget::set_limit(0);
        assert!(!worth_collecting(usize::MAX), "no limit: never");
    }
}
