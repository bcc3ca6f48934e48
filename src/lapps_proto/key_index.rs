//! An object's members by key, so that `v.key` on a large object does not walk it. Without it,
//! an app that looks up each key of one part of a large message in another (both sent by the
//! peer) would do quadratic work on the host, which the instruction budget does not see.
//!
//! Each member's key, as the kind of Lua key that can name it (text, number or bytes), is hashed
//! with std's SipHash under keys drawn once per process, so that a peer cannot choose keys that
//! collide. The index maps a hash to the first position with that hash. A lookup takes the
//! candidates that can name its Lua key (a string: text or bytes of the same bytes; a number:
//! numbers of the same value, or text of its string form), checks that each hit is that very
//! candidate, and answers the first of them, as a walk in member order would. A hit that is
//! another key (a 64-bit collision) makes the lookup walk.
//!
//! An object of more than [`INDEX_FROM`] members is indexed once lookups have walked twice its
//! members since it was made or last lost a member: a few lookups in a large object, or a loop
//! that removes members as it goes (each removal moves the rest, so the index is dropped),
//! walk as before and build nothing. Appending keeps the index. It takes 20 to 40 bytes per
//! member, charged to the thread's tree budget while it lives; when the budget has no room for
//! it, lookups walk.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use super::node::{key_matches, number_key_text, Key, Node};
use super::tree_budget;
use super::value::Value;

/// Objects of more members than this are indexed: below it a walk costs as little.
pub(crate) const INDEX_FROM: usize = 32;

/// The index of one object's members, made at its first lookup once it is large (arrays and
/// small objects hold only the empty cell).
#[derive(Debug, Default)]
pub(crate) struct ByKey(RefCell<Option<Box<KeyIndex>>>);

#[derive(Debug, Default)]
struct KeyIndex {
    /// Hash of a member's key to the first position with that hash; None until built.
    first: Option<HashMap<u64, usize>>,
    /// Members walked by lookups since the object was made or lost a member.
    walked: usize,
    /// What the built map charged to the tree budget.
    charged: usize,
}

impl Drop for KeyIndex {
    fn drop(&mut self) {
        tree_budget::release(self.charged);
    }
}

/// A member key as the Lua keys that can name it compare it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Named<'a> {
    Text(&'a [u8]),
    /// Never NaN (it equals no number) and never -0 (it equals 0).
    Num(f64),
    Bytes(&'a [u8]),
}

impl<'a> Named<'a> {
    /// None for keys no Lua key names (null, booleans, containers, NaN).
    fn of(k: &'a Value) -> Option<Named<'a>> {
        match k {
            Value::Text(s) => Some(Named::Text(s.as_bytes())),
            Value::Bytes(b) => Some(Named::Bytes(b)),
            Value::Int(i) => Named::num(*i as f64),
            Value::UInt(u) => Named::num(*u as f64),
            Value::Float(f) => Named::num(*f),
            _ => None,
        }
    }

    fn num(f: f64) -> Option<Named<'a>> {
        (!f.is_nan()).then_some(Named::Num(if f == 0.0 { 0.0 } else { f }))
    }

    fn hash(self) -> u64 {
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        let keys = KEYS.get_or_init(RandomState::new);
        match self {
            Named::Text(b) => keys.hash_one((0u8, b)),
            Named::Num(f) => keys.hash_one((1u8, f.to_bits())),
            Named::Bytes(b) => keys.hash_one((2u8, b)),
        }
    }
}

impl ByKey {
    /// The position of the first member `key` names: what
    /// `members.iter().position(|(k, _)| key_matches(k, key))` answers.
    pub(crate) fn find(&self, members: &[(Value, Node)], key: Key<'_>) -> Option<usize> {
        if members.len() <= INDEX_FROM {
            return walk(members, key);
        }
        let Ok(mut cell) = self.0.try_borrow_mut() else {
            return walk(members, key);
        };
        let ix = cell.get_or_insert_with(Box::default);
        if ix.first.is_some() {
            if let Some(found) = ix.lookup(members, key) {
                return found;
            }
            return walk(members, key); // another key with the same hash
        }
        let found = walk(members, key);
        ix.walked = ix
            .walked
            .saturating_add(found.map_or(members.len(), |at| at + 1));
        if ix.walked >= members.len().saturating_mul(2) {
            ix.build(members);
        }
        found
    }

    /// A member with key `key` was appended at `at`. When the map grows, what it takes more is
    /// charged; without room for that, the index goes (lookups walk until there is).
    pub(crate) fn appended(&mut self, key: &Value, at: usize) {
        let slot = self.0.get_mut();
        let Some(ix) = slot.as_deref_mut() else {
            return;
        };
        let (Some(first), Some(n)) = (&mut ix.first, Named::of(key)) else {
            return;
        };
        let before = first.capacity();
        first.entry(n.hash()).or_insert(at);
        if first.capacity() == before {
            return;
        }
        let cost = map_cost(first.capacity());
        let more = cost.saturating_sub(ix.charged);
        if tree_budget::has_room(more) {
            tree_budget::add(more);
            ix.charged = cost;
        } else {
            *slot = None;
        }
    }

    /// A member was removed: the positions after it moved.
    pub(crate) fn removed(&mut self) {
        *self.0.get_mut() = None;
    }
}

impl KeyIndex {
    /// The index's answer, or None when a walk must give it (a hash shared with another key).
    fn lookup(&self, members: &[(Value, Node)], key: Key<'_>) -> Option<Option<usize>> {
        let first = self.first.as_ref()?;
        let text;
        let candidates = match key {
            Key::Str(b) => [Some(Named::Text(b)), Some(Named::Bytes(b))],
            Key::Num(n) => {
                text = number_key_text(n);
                [Named::num(n), Some(Named::Text(text.as_bytes()))]
            }
        };
        let mut found: Option<usize> = None;
        for c in candidates.into_iter().flatten() {
            let Some(&at) = first.get(&c.hash()) else {
                continue;
            };
            if members.get(at).and_then(|(k, _)| Named::of(k)) != Some(c) {
                return None;
            }
            found = Some(found.map_or(at, |f| f.min(at)));
        }
        Some(found)
    }

    /// Builds the map, when the tree budget has room for it (else lookups go on walking).
    fn build(&mut self, members: &[(Value, Node)]) {
        // Asked before allocating: without room, every lookup comes here again.
        if !tree_budget::has_room(map_cost(members.len())) {
            return;
        }
        let mut first = HashMap::with_capacity(members.len());
        for (at, (k, _)) in members.iter().enumerate() {
            if let Some(n) = Named::of(k) {
                first.entry(n.hash()).or_insert(at);
            }
        }
        self.charged = map_cost(first.capacity());
        tree_budget::add(self.charged);
        self.first = Some(first);
    }
}

/// What a map with room for `capacity` entries takes: its buckets (a key and a position with a
/// control byte each, at most 7/8 of them used, their count a power of two) and its header.
fn map_cost(capacity: usize) -> usize {
    capacity
        .saturating_mul(8)
        .div_ceil(7)
        .next_power_of_two()
        .saturating_mul(std::mem::size_of::<(u64, usize)>() + 1)
        .saturating_add(64)
}

fn walk(members: &[(Value, Node)], key: Key<'_>) -> Option<usize> {
    members.iter().position(|(k, _)| key_matches(k, key))
}

#[cfg(test)]
thread_local! {
    static COMPARED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// One member key compared with a Lua key, one by one (a walk's step), on this thread.
#[cfg(test)]
pub(crate) fn count_compared() {
    COMPARED.with(|c| c.set(c.get() + 1));
}

/// Member keys compared one by one on this thread so far.
#[cfg(test)]
pub(crate) fn compared() -> u64 {
    COMPARED.with(|c| c.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lapps_proto::lazy::{Doc, Handle, Item};
    use crate::lapps_proto::{cbor, Limits};

    fn text_keyed(n: usize) -> Value {
        Value::Map(
            (0..n)
                .map(|i| (Value::text(&format!("k{i}")), Value::Int(i as i64)))
                .collect(),
        )
    }

    fn value(n: Option<Node>) -> Option<Value> {
        n.map(|n| n.to_value(64).unwrap())
    }

    /// Whatever the keys (duplicates, numbers written as text, -0, NaN, bytes, keys no Lua
    /// key names) and however the object changes, a lookup finds the member a walk finds.
    #[test]
    fn lookups_answer_as_a_walk_does_while_the_object_changes() {
        let mut keys: Vec<Value> = [
            "1",
            "1.5",
            "-0",
            "0",
            "nan",
            "a",
            "b",
            "1e+15",
            "9007199254740992",
            "-1",
        ]
        .iter()
        .map(|s| Value::text(s))
        .collect();
        keys.extend([
            Value::Bytes(b"a".to_vec()),
            Value::Bytes(b"1".to_vec()),
            Value::Bytes(vec![0xff]),
            Value::Int(1),
            Value::Int(0),
            Value::Int(-1),
            Value::Int(1 << 53),
            Value::Int((1 << 53) + 1),
            Value::UInt(u64::MAX),
            Value::Float(1.5),
            Value::Float(-0.0),
            Value::Float(f64::NAN),
            Value::Float(1e15),
            Value::Null,
            Value::Bool(true),
        ]);
        keys.extend((0..40).map(|i| Value::text(&format!("k{i}"))));
        let mut lua_keys: Vec<Key<'static>> = [
            1.0,
            1.5,
            0.0,
            -0.0,
            f64::NAN,
            1e15,
            9007199254740992.0,
            -1.0,
            u64::MAX as f64,
            7.0,
        ]
        .into_iter()
        .map(Key::Num)
        .collect();
        let names: Vec<Vec<u8>> = keys
            .iter()
            .filter_map(|k| match k {
                Value::Text(s) => Some(s.as_bytes().to_vec()),
                Value::Bytes(b) => Some(b.clone()),
                _ => None,
            })
            .chain([b"absent".to_vec()])
            .collect();
        let names: &'static [Vec<u8>] = Box::leak(names.into_boxed_slice());
        lua_keys.extend(names.iter().map(|n| Key::Str(n)));

        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let mut serial = 0i64;
        for round in 0..40 {
            let size = INDEX_FROM + 1 + next(40);
            let members = (0..size)
                .map(|_| {
                    serial += 1;
                    (keys[next(keys.len())].clone(), Value::Int(serial))
                })
                .collect();
            let object = Node::from_value(Value::Map(members));
            for step in 0..300 {
                let key = lua_keys[next(lua_keys.len())];
                match next(10) {
                    0..=5 => {
                        let walked = object
                            .entries()
                            .into_iter()
                            .find(|(k, _)| key_matches(k, key))
                            .map(|(_, n)| n);
                        assert_eq!(
                            value(object.get(key)),
                            value(walked),
                            "round {round}, step {step}: {key:?}"
                        );
                    }
                    6 | 7 => {
                        serial += 1;
                        let v = Node::Scalar(Value::Int(serial));
                        object.set(key, Some(v)).unwrap();
                    }
                    8 => object.set(key, None).unwrap(),
                    _ => {
                        object.erase(key);
                    }
                }
            }
        }
    }

    /// Looking up each key of a large object walks it a few times, not once per key (what an
    /// app does that looks up each of one part of a message's keys in another).
    #[test]
    fn looking_up_each_key_of_a_large_object_walks_it_a_few_times() {
        const N: usize = 20_000;
        let object = Node::from_value(text_keyed(N));
        let before = compared();
        for i in 0..N {
            let k = format!("k{i}");
            assert_eq!(
                value(object.get(Key::Str(k.as_bytes()))),
                Some(Value::Int(i as i64))
            );
            assert!(object.get(Key::Str(b"absent")).is_none());
            assert!(object.get(Key::Num(i as f64)).is_none());
        }
        assert!(
            compared() - before <= 3 * N as u64,
            "{} keys compared",
            compared() - before
        );
        // Appending keeps the index: assignments of new keys (each looks for the key first)
        // and lookups, interleaved.
        let before = compared();
        for i in N..2 * N {
            let k = format!("k{i}");
            object
                .set(
                    Key::Str(k.as_bytes()),
                    Some(Node::Scalar(Value::Int(i as i64))),
                )
                .unwrap();
            assert_eq!(
                value(object.get(Key::Str(k.as_bytes()))),
                Some(Value::Int(i as i64))
            );
        }
        assert!(
            compared() - before <= N as u64,
            "{} keys compared",
            compared() - before
        );
        // A removal drops it; it comes back once lookups have walked the object (now 2N - 1
        // members) twice.
        assert!(object.erase(Key::Str(b"k0")));
        let before = compared();
        for i in 1..N {
            let k = format!("k{i}");
            assert_eq!(
                value(object.get(Key::Str(k.as_bytes()))),
                Some(Value::Int(i as i64))
            );
        }
        assert!(
            compared() - before <= 6 * N as u64,
            "{} keys compared",
            compared() - before
        );
    }

    /// The index is charged to the tree budget while it lives, and refused (lookups walk) when
    /// the budget has no room for it.
    #[test]
    fn the_index_is_charged_and_given_back() {
        let base = tree_budget::charged();
        let object = Node::from_value(text_keyed(1000));
        let tree = tree_budget::charged();
        for _ in 0..2 {
            assert!(object.get(Key::Str(b"absent")).is_none());
        }
        let indexed = tree_budget::charged();
        assert!(indexed >= tree + 1000 * 17, "the index is charged");
        // It grows with the members added, and so does its charge.
        for i in 1000..3000 {
            let k = format!("k{i}");
            let v = Some(Node::Scalar(Value::Int(i)));
            object.set(Key::Str(k.as_bytes()), v).unwrap();
        }
        let members = 2000 * 2 * tree_budget::KEPT_PER_ITEM;
        let grown = tree_budget::charged();
        assert!(
            grown >= indexed + members + 2000 * 17,
            "the index's growth is charged"
        );
        assert_eq!(
            value(object.get(Key::Str(b"k2999"))),
            Some(Value::Int(2999))
        );
        assert!(object.erase(Key::Str(b"k0")));
        assert!(
            tree_budget::charged() + 2000 * 17 < grown,
            "dropped with the removal"
        );
        drop(object);
        assert_eq!(tree_budget::charged(), base);
        // No room: lookups go on walking and answer all the same.
        let object = Node::from_value(text_keyed(1000));
        tree_budget::set_limit(tree_budget::charged() + 100);
        let before = compared();
        for _ in 0..4 {
            assert_eq!(value(object.get(Key::Str(b"k999"))), Some(Value::Int(999)));
        }
        assert_eq!(compared() - before, 4000, "every lookup walked");
        tree_budget::set_limit(0);
    }

    /// The same through a view of a message's bytes: once lookups have walked as many members as
    /// the message has bytes, the rest are found in the tree, built once.
    #[test]
    fn a_view_finds_each_key_of_a_large_map_walking_it_a_few_times() {
        const N: usize = 20_000;
        let bytes = cbor::encode(&text_keyed(N));
        let doc = Doc::parse(&bytes, &Limits::default()).unwrap();
        let view = Handle::Raw(doc.clone(), doc.root());
        let before = compared();
        for i in (0..N).rev() {
            let k = format!("k{i}");
            let found = match view.get(Key::Str(k.as_bytes())) {
                Some(Item::Node(n)) => value(Some(n)),
                Some(Item::RawScalar(d, at)) => d.scalar(at),
                _ => None,
            };
            assert_eq!(found, Some(Value::Int(i as i64)), "{k}");
        }
        assert!(doc.is_built());
        assert!(
            compared() - before <= (bytes.len() + 5 * N) as u64,
            "{} keys compared",
            compared() - before
        );
    }
}
