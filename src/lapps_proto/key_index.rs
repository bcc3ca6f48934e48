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
//! Built at an object's second lookup once it has more than [`INDEX_FROM`] members. Appending
//! keeps it; a removal drops it (positions shift) until the second lookup after. About 16 bytes
//! per member, beside the 2 x `KEPT_PER_ITEM` a member is charged to the tree budget.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use super::node::{key_matches, number_key_text, Key, Node};
use super::value::Value;

/// Objects of more members than this are indexed: below it a walk costs as little.
pub(crate) const INDEX_FROM: usize = 32;

#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    /// Hash of a member's key to the first position with that hash; None until built.
    first: Option<HashMap<u64, usize>>,
    /// Lookups that walked since the object was made or a member was removed.
    walks: u8,
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

impl KeyIndex {
    /// The position of the first member `key` names: what
    /// `members.iter().position(|(k, _)| key_matches(k, key))` answers.
    pub(crate) fn find(
        cell: &RefCell<KeyIndex>,
        members: &[(Value, Node)],
        key: Key<'_>,
    ) -> Option<usize> {
        if members.len() > INDEX_FROM {
            if let Some(found) = cell
                .try_borrow_mut()
                .ok()
                .and_then(|mut ix| ix.indexed(members, key))
            {
                return found;
            }
        }
        walk(members, key)
    }

    /// The index's answer (built here at the second lookup), or None when a walk must give it.
    fn indexed(&mut self, members: &[(Value, Node)], key: Key<'_>) -> Option<Option<usize>> {
        if self.first.is_none() {
            if self.walks == 0 {
                self.walks = 1;
                return None;
            }
            self.build(members);
        }
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
                return None; // another key with the same hash: walk
            }
            found = Some(found.map_or(at, |f| f.min(at)));
        }
        Some(found)
    }

    fn build(&mut self, members: &[(Value, Node)]) {
        let mut first = HashMap::with_capacity(members.len());
        for (at, (k, _)) in members.iter().enumerate() {
            if let Some(n) = Named::of(k) {
                first.entry(n.hash()).or_insert(at);
            }
        }
        self.first = Some(first);
    }

    /// A member with key `key` was appended at `at`.
    pub(crate) fn appended(&mut self, key: &Value, at: usize) {
        if let (Some(first), Some(n)) = (&mut self.first, Named::of(key)) {
            first.entry(n.hash()).or_insert(at);
        }
    }

    /// A member was removed: the positions after it moved.
    pub(crate) fn removed(&mut self) {
        *self = KeyIndex::default();
    }
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

    /// Looking up each key of a large object walks it about once, not once per key (what an
    /// app does that looks up each of one part of a message's keys in another).
    #[test]
    fn looking_up_each_key_of_a_large_object_walks_it_about_once() {
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
            compared() - before <= N as u64,
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
        // A removal drops it; it comes back at the second lookup after.
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
            compared() - before <= 2 * N as u64,
            "{} keys compared",
            compared() - before
        );
    }

    /// The same through a view of a message's bytes: members past the first few are found in
    /// the tree, built once.
    #[test]
    fn a_view_finds_each_key_of_a_large_map_walking_it_about_once() {
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
            compared() - before <= 2 * N as u64,
            "{} keys compared",
            compared() - before
        );
    }
}
