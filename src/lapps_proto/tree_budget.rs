//! What the trees of this thread's LAppS messages may cost: the Rust memory a message's tree
//! takes is charged against the service's memory limit, as the Lua allocator charges the state.
//!
//! Reason: a tree costs ~80 bytes per item where the CBOR took one, so a 2 MiB array of small
//! integers (2^21 values, the decoder's cap) built a tree of ~170 MB that Lua's limit never
//! saw, per message, and Lua's collector, seeing only a small userdata, had no reason to free
//! it soon: a few such messages outgrew the machine. Here the trees alive on a thread together
//! may take at most
//! the limit of the state that thread runs (each instance is one thread with one state); a
//! build past it is refused, and the caller answers as Lua does when out of memory.
//!
//! Each `lazy::Doc` is charged too, while it lives (a view keeps it alive): itself, and the
//! bytes of a message larger than it holds inline. They exist before anyone could ask, so they
//! are charged without asking, and the instance collects garbage, or refuses the message, when
//! they take the charge past the limit ([`over`]).
//!
//! Owns three thread-local values and nothing else. `lazy::Doc` asks before it builds a tree,
//! as `lua::budget_for` does before a decoded document or an assigned value becomes one;
//! each container of the tree (`node::Items`) charges what it keeps and gives it back when it
//! goes, so the parts of a tree an app keeps stay charged after their message is gone. The
//! view functions (`json_ud`) turn a refusal into a full collection, one retry and then an
//! error.

use std::cell::Cell;
use std::mem::size_of;

use super::node::Node;
use super::value::Value;

thread_local! {
    /// Bytes charged by the containers of message trees alive on this thread.
    static CHARGED: Cell<usize> = const { Cell::new(0) };
    /// What they may take together; 0: no limit.
    static LIMIT: Cell<usize> = const { Cell::new(0) };
    /// What the state of this thread takes at the least: its memory right after its app was
    /// loaded and collected (see [`set_floor`]).
    static FLOOR: Cell<usize> = const { Cell::new(0) };
    /// The last refusal since the last [`take_refused`].
    static REFUSED: Cell<Option<Refusal>> = const { Cell::new(None) };
}

/// Why a tree was not built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It does not fit beside the trees alive now (a collection may free some).
    NotNow,
    /// It is larger than the limit on its own.
    Never,
}

/// Sets this thread's limit (the memory limit of the state it runs; 0: none).
pub(crate) fn set_limit(bytes: usize) {
    LIMIT.with(|l| l.set(bytes));
}

/// This thread's limit (0: none).
pub(crate) fn limit() -> usize {
    LIMIT.with(Cell::get)
}

/// Records what the thread's state takes at the least (its memory once its app is loaded).
pub(crate) fn set_floor(bytes: usize) {
    FLOOR.with(|f| f.set(bytes));
}

/// The room this thread's state can ever have for new values: its limit less its floor
/// (None: no limit).
pub(crate) fn room_at_most() -> Option<usize> {
    let limit = limit();
    (limit != 0).then(|| limit.saturating_sub(FLOOR.with(Cell::get)))
}

/// What one item of a tree costs while it is built beside its bytes: its decoded value and
/// its node side by side (the build moves one into the other, so both are alive at the peak)
/// and an allocator's overhead for a string's copy.
pub(crate) const PER_ITEM: usize = size_of::<Value>() + KEPT_PER_ITEM;
/// What one item of a built tree keeps: its node and an allocator's overhead.
pub(crate) const KEPT_PER_ITEM: usize = size_of::<Node>() + 16;
/// What a container costs on top of being an item: its shared cell and its entry in the
/// message's index of containers.
pub(crate) const PER_CONTAINER: usize = size_of::<(usize, Node)>() + 64;

/// Whether a tree of `cost` bytes may be built now; otherwise records why not.
pub(crate) fn fits(cost: usize) -> bool {
    let limit = LIMIT.with(Cell::get);
    let refusal = if limit == 0 {
        None
    } else if cost > limit {
        Some(Refusal::Never)
    } else if CHARGED.with(Cell::get).saturating_add(cost) > limit {
        Some(Refusal::NotNow)
    } else {
        None
    };
    if refusal.is_some() {
        REFUSED.with(|r| r.set(refusal));
    }
    refusal.is_none()
}

/// Whether `bytes` more fit beside what is charged now, without recording a refusal (for
/// what is only worth building when there is room: an object's key index).
pub(crate) fn has_room(bytes: usize) -> bool {
    let limit = LIMIT.with(Cell::get);
    limit == 0 || CHARGED.with(Cell::get).saturating_add(bytes) <= limit
}

/// Whether what is charged now is past this thread's limit (a message's bytes are charged
/// without asking first: they exist already).
pub(crate) fn over() -> bool {
    let limit = LIMIT.with(Cell::get);
    limit != 0 && CHARGED.with(Cell::get) > limit
}

/// Charges what a container of a tree just built keeps (after [`fits`] said yes).
pub(crate) fn add(bytes: usize) {
    // try_with: a container may be dropped while the thread exits (never a panic in a drop).
    let _ = CHARGED.try_with(|c| c.set(c.get().saturating_add(bytes)));
}

/// Gives back what [`add`] took.
pub(crate) fn release(bytes: usize) {
    let _ = CHARGED.try_with(|c| c.set(c.get().saturating_sub(bytes)));
}

/// The refusal since the last call, if any (and forgets it).
pub(crate) fn take_refused() -> Option<Refusal> {
    REFUSED.with(|r| r.take())
}

/// Bytes charged on this thread now.
#[cfg(test)]
pub(crate) fn charged() -> usize {
    CHARGED.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_up_to_the_limit_and_records_why_not() {
        set_limit(1000);
        let before = charged();
        assert!(fits(600));
        add(600);
        assert_eq!(take_refused(), None);
        assert!(!fits(500), "600 + 500 is past 1000");
        assert_eq!(take_refused(), Some(Refusal::NotNow));
        assert_eq!(take_refused(), None, "a refusal is reported once");
        assert!(!fits(1001));
        assert_eq!(take_refused(), Some(Refusal::Never));
        release(600);
        assert!(fits(1000));
        assert_eq!(charged(), before);
        set_limit(0);
        assert!(fits(usize::MAX), "no limit");
    }
}
