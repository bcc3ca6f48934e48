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
//! Owns three thread-local numbers and nothing else; `lazy::Doc` charges and releases, the
//! view functions (`json_ud`, `node_of`) turn a refusal into a full collection, one retry and
//! then an error.

use std::cell::Cell;
use std::mem::size_of;

use super::node::Node;
use super::value::Value;

thread_local! {
    /// Bytes charged by the trees alive on this thread.
    static CHARGED: Cell<usize> = const { Cell::new(0) };
    /// What they may take together; 0: no limit.
    static LIMIT: Cell<usize> = const { Cell::new(0) };
    /// Whether a build was refused since the last [`take_refused`].
    static REFUSED: Cell<bool> = const { Cell::new(false) };
}

/// Sets this thread's limit (the memory limit of the state it runs; 0: none).
pub(crate) fn set_limit(bytes: usize) {
    LIMIT.with(|l| l.set(bytes));
}

/// What one item of a tree costs beyond its bytes: its decoded value and its node side by
/// side (the build moves one into the other, so both are alive at the peak) and an allocator's
/// overhead for a string's copy.
pub(crate) const PER_ITEM: usize = size_of::<Value>() + size_of::<Node>() + 16;
/// What a container costs on top of being an item: its shared cell and its entry in the
/// message's index of containers.
pub(crate) const PER_CONTAINER: usize = size_of::<(usize, Node)>() + 64;

/// Charges `bytes` when they fit under the limit; otherwise records the refusal.
pub(crate) fn charge(bytes: usize) -> bool {
    let limit = LIMIT.with(Cell::get);
    let now = CHARGED.with(Cell::get);
    match now.checked_add(bytes) {
        Some(total) if limit == 0 || total <= limit => {
            CHARGED.with(|c| c.set(total));
            true
        }
        _ => {
            REFUSED.with(|r| r.set(true));
            false
        }
    }
}

/// Gives back what [`charge`] took.
pub(crate) fn release(bytes: usize) {
    CHARGED.with(|c| c.set(c.get().saturating_sub(bytes)));
}

/// Whether a build was refused since the last call (and forgets it).
pub(crate) fn take_refused() -> bool {
    REFUSED.with(|r| r.replace(false))
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
    fn charges_up_to_the_limit_and_records_a_refusal() {
        set_limit(1000);
        let before = charged();
        assert!(charge(600));
        assert!(!take_refused());
        assert!(!charge(500), "600 + 500 is past 1000");
        assert!(take_refused());
        assert!(!take_refused(), "a refusal is reported once");
        release(600);
        assert!(charge(1000));
        release(1000);
        assert_eq!(charged(), before);
        set_limit(0);
        assert!(charge(usize::MAX / 2), "no limit");
        release(usize::MAX / 2);
    }
}
