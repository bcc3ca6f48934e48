//! The shared, mutable tree behind nljson userdata: containers are reference-counted cells so
//! that `v.a.b = 1` changes the tree `v` belongs to, and a value taken out (`local a = v.a`)
//! stays valid and shared, as Lua tables behave.
//!
//! It owns lookups by Lua key and the assignment rules. Things put into a tree are always deep
//! copies, so a tree can never contain itself (no cycles, no leaks, finite encodings). It must
//! never hold a `RefCell` borrow across a call into Lua (callbacks may touch the same tree).

use std::cell::RefCell;
use std::rc::Rc;

use super::key_index::ByKey;
use super::tree_budget;
use super::value::{Limits, Value};

pub(crate) type ArrayRef = Rc<RefCell<Items<Node>>>;
pub(crate) type ObjectRef = Rc<RefCell<Items<(Value, Node)>>>;

/// A container's elements, and what building them from a message charged to the thread's
/// tree budget ([`tree_budget`]), given back when the container goes: the charge follows the
/// parts of a message's tree an app keeps, not the message. An object's members also have an
/// index by key ([`ByKey`]; unused for arrays), which [`Node::set`] and [`Node::erase`]
/// keep up to date: nothing else changes an object's members in place.
#[derive(Debug)]
pub(crate) struct Items<T> {
    items: Vec<T>,
    charged: usize,
    index: ByKey,
}

impl<T> Items<T> {
    /// `items`, charging `bytes` to the tree budget (whose limit the caller checked).
    pub(crate) fn charged(items: Vec<T>, bytes: usize) -> Items<T> {
        tree_budget::add(bytes);
        Items {
            items,
            charged: bytes,
            index: ByKey::default(),
        }
    }

    /// Charges `bytes` more (an item put in).
    fn charge(&mut self, bytes: usize) {
        tree_budget::add(bytes);
        self.charged = self.charged.saturating_add(bytes);
    }

    /// Gives back up to `bytes` of what this container charged (an item taken out).
    fn uncharge(&mut self, bytes: usize) {
        let bytes = bytes.min(self.charged);
        tree_budget::release(bytes);
        self.charged -= bytes;
    }
}

/// What a container of `items` direct items holding `text` bytes of strings keeps (a map's
/// member is two items: its key and its value).
pub(crate) fn kept_by(items: usize, text: usize) -> usize {
    tree_budget::PER_CONTAINER
        .saturating_add(items.saturating_mul(tree_budget::KEPT_PER_ITEM))
        .saturating_add(text)
}

/// The bytes of a string scalar (0 for anything else).
pub(crate) fn value_text_len(v: &Value) -> usize {
    match v {
        Value::Text(s) => s.len(),
        Value::Bytes(b) => b.len(),
        _ => 0,
    }
}

/// What a map key keeps beside its slot: a string's bytes, and for a container key (CBOR
/// allows them; it stays a [`Value`]) its values and their strings.
pub(crate) fn key_len(k: &Value) -> usize {
    match k {
        Value::Array(a) => a.iter().fold(0usize, |c, v| {
            c.saturating_add(tree_budget::KEPT_PER_ITEM)
                .saturating_add(key_len(v))
        }),
        Value::Map(m) => m.iter().fold(0usize, |c, (k, v)| {
            c.saturating_add(2 * tree_budget::KEPT_PER_ITEM)
                .saturating_add(key_len(k))
                .saturating_add(key_len(v))
        }),
        other => value_text_len(other),
    }
}

/// [`value_text_len`] of a node (0 for a container: it charges for itself).
pub(crate) fn node_text_len(n: &Node) -> usize {
    match n {
        Node::Scalar(v) => value_text_len(v),
        _ => 0,
    }
}

/// What [`Node::from_value`] charges for `v`'s containers (0 for a scalar: it becomes a plain
/// Lua value, which the Lua allocator charges).
pub(crate) fn tree_cost(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.iter().fold(
            kept_by(a.len(), a.iter().map(value_text_len).sum()),
            |c, v| c.saturating_add(tree_cost(v)),
        ),
        Value::Map(m) => m.iter().fold(
            kept_by(
                2 * m.len(),
                m.iter().map(|(k, v)| key_len(k) + value_text_len(v)).sum(),
            ),
            |c, (_, v)| c.saturating_add(tree_cost(v)),
        ),
        _ => 0,
    }
}

/// What a member put into a container costs there beyond its own tree: its slot (a map's:
/// key and value, the most an assignment takes) and the text of its key and string value.
pub(crate) fn slot_cost(key_text: usize, value_text: usize) -> usize {
    (2 * tree_budget::KEPT_PER_ITEM)
        .saturating_add(key_text)
        .saturating_add(value_text)
}

impl<T> Default for Items<T> {
    fn default() -> Items<T> {
        Vec::new().into()
    }
}

impl<T> From<Vec<T>> for Items<T> {
    fn from(items: Vec<T>) -> Items<T> {
        Items {
            items,
            charged: 0,
            index: ByKey::default(),
        }
    }
}

impl<T> FromIterator<T> for Items<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Items<T> {
        Vec::from_iter(iter).into()
    }
}

impl<T> std::ops::Deref for Items<T> {
    type Target = Vec<T>;

    fn deref(&self) -> &Vec<T> {
        &self.items
    }
}

impl<T> std::ops::DerefMut for Items<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.items
    }
}

impl<T> Drop for Items<T> {
    fn drop(&mut self) {
        tree_budget::release(self.charged);
    }
}

/// What one copy into a [`Value`] may take: values (keys included), and bytes of strings. A
/// Lua table that holds one large string or one table many times is small in Lua and huge as
/// a copy; this bounds the copy, built on the host's heap in one call where neither the
/// state's memory limit nor its instruction budget sees it. (The values' own size is bounded
/// by their count: 2^21 of ~32 bytes. Charging it to the bytes as well would refuse a plain
/// array of numbers four times smaller in Lua than the room.)
#[derive(Debug)]
pub(crate) struct CopyRoom {
    values: usize,
    bytes: usize,
    max_values: usize,
    max_bytes: usize,
}

/// The bytes of a text or byte string; 0 for any other value.
fn string_len(v: &Value) -> usize {
    match v {
        Value::Text(t) => t.len(),
        Value::Bytes(b) => b.len(),
        _ => 0,
    }
}

impl CopyRoom {
    pub(crate) fn new(max_values: usize, max_bytes: usize) -> CopyRoom {
        CopyRoom {
            values: 0,
            bytes: 0,
            max_values,
            max_bytes,
        }
    }

    /// One more value in the copy, with `string_len` bytes of string (a key's or its own).
    pub(crate) fn take(&mut self, string_len: usize) -> Result<(), String> {
        self.values += 1;
        if self.values > self.max_values {
            return Err(format!(
                "too large to copy: more than {} values",
                self.max_values
            ));
        }
        self.bytes = self.bytes.saturating_add(string_len);
        if self.bytes > self.max_bytes {
            return Err(format!(
                "too large to copy: more than the {} bytes of strings this state has room for",
                self.max_bytes
            ));
        }
        Ok(())
    }
}

/// A value inside a tree: scalars by value, containers shared.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    /// Never `Value::Array` or `Value::Map`.
    Scalar(Value),
    Array(ArrayRef),
    Object(ObjectRef),
}

/// A Lua key for lookups: a string (as bytes) or a number.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Key<'a> {
    Str(&'a [u8]),
    Num(f64),
}

/// The string form of a number key, the one LuaJIT's `tostring` gives (`%.14g`): `1` -> "1",
/// `1.5` -> "1.5", `0.1 + 0.2` -> "0.3", `1e15` -> "1e+15", `-0.0` -> "-0", so that `v[x]` and
/// `v[tostring(x)]` name the same member.
pub(crate) fn number_key_text(n: f64) -> String {
    if n.is_nan() {
        // printf's sign of a NaN varies; LuaJIT prints "nan" or "-nan" by its bits as well,
        // but no JSON or CBOR key written by a client can be told apart by that.
        return "nan".into();
    }
    let mut buf = [0u8; 32];
    // SAFETY: the buffer and its length are passed together; "%.14g" of one double writes at
    // most 21 bytes plus the NUL ("-1.2345678901234e-308"), and snprintf never writes past the
    // length given.
    let len = unsafe { libc::snprintf(buf.as_mut_ptr().cast(), buf.len(), c"%.14g".as_ptr(), n) };
    let len = usize::try_from(len).unwrap_or(0).min(buf.len() - 1);
    String::from_utf8_lossy(buf.get(..len).unwrap_or_default()).into_owned()
}

/// Whether an object key answers to a Lua key: text or bytes by their bytes; a number to a
/// numeric key of the same value or to its string form.
pub(crate) fn key_matches(k: &Value, key: Key<'_>) -> bool {
    #[cfg(test)]
    super::key_index::count_compared();
    match (k, key) {
        (Value::Text(s), Key::Str(b)) => s.as_bytes() == b,
        (Value::Bytes(s), Key::Str(b)) => s.as_slice() == b,
        (Value::Int(i), Key::Num(n)) => *i as f64 == n,
        (Value::UInt(u), Key::Num(n)) => *u as f64 == n,
        (Value::Float(f), Key::Num(n)) => *f == n,
        (Value::Text(s), Key::Num(n)) => *s == number_key_text(n),
        _ => false,
    }
}

/// The key stored for a new member: text when the bytes are UTF-8, the string form for numbers.
fn stored_key(key: Key<'_>) -> Value {
    match key {
        Key::Str(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::text(s),
            Err(_) => Value::Bytes(b.to_vec()),
        },
        Key::Num(n) => Value::Text(number_key_text(n)),
    }
}

/// A 1-based Lua index as a 0-based position, if it is a positive integer.
pub(crate) fn position(n: f64) -> Option<usize> {
    if n.fract() == 0.0 && n >= 1.0 && n <= usize::MAX as f64 {
        Some(n as usize - 1)
    } else {
        None
    }
}

impl Node {
    /// Moves a value into a fresh tree, its containers charged to the thread's tree budget
    /// ([`tree_cost`] in all; the caller asked [`tree_budget::fits`] first).
    pub(crate) fn from_value(v: Value) -> Node {
        match v {
            Value::Array(a) => {
                let kept = kept_by(a.len(), a.iter().map(value_text_len).sum());
                let items = a.into_iter().map(Node::from_value).collect();
                Node::Array(Rc::new(RefCell::new(Items::charged(items, kept))))
            }
            Value::Map(m) => {
                let text = m.iter().map(|(k, v)| key_len(k) + value_text_len(v)).sum();
                let kept = kept_by(2 * m.len(), text);
                let items = m
                    .into_iter()
                    .map(|(k, v)| (k, Node::from_value(v)))
                    .collect();
                Node::Object(Rc::new(RefCell::new(Items::charged(items, kept))))
            }
            scalar => Node::Scalar(scalar),
        }
    }

    /// A deep copy as a [`Value`]; fails beyond `depth_left` nested containers (trees built by
    /// repeated assignment can be deeper than any decoder would accept) and beyond the
    /// decoders' limit on values in total: trees live on the Rust heap, outside the Lua memory
    /// limit, and `a[#a + 1] = a` doubles one with each assignment.
    pub(crate) fn to_value(&self, depth_left: usize) -> Result<Value, String> {
        let mut room = CopyRoom::new(Limits::default().max_total_items, usize::MAX);
        self.to_value_within(depth_left, &mut room)
    }

    /// [`Node::to_value`] as part of a larger copy, which `room` bounds.
    pub(crate) fn to_value_within(
        &self,
        depth_left: usize,
        room: &mut CopyRoom,
    ) -> Result<Value, String> {
        let inner = |d: usize| d.checked_sub(1).ok_or("nesting too deep to convert");
        Ok(match self {
            Node::Scalar(v) => {
                room.take(string_len(v))?;
                v.clone()
            }
            Node::Array(a) => {
                room.take(0)?;
                let d = inner(depth_left)?;
                let a = a.try_borrow().map_err(|_| "array is being modified")?;
                Value::Array(
                    a.iter()
                        .map(|n| n.to_value_within(d, room))
                        .collect::<Result<_, _>>()?,
                )
            }
            Node::Object(o) => {
                room.take(0)?;
                let d = inner(depth_left)?;
                let o = o.try_borrow().map_err(|_| "object is being modified")?;
                Value::Map(
                    o.iter()
                        .map(|(k, n)| {
                            room.take(string_len(k))?;
                            Ok((k.clone(), n.to_value_within(d, room)?))
                        })
                        .collect::<Result<_, String>>()?,
                )
            }
        })
    }

    /// Appends the CBOR encoding, as `cbor::encode_into(&self.to_value_within(depth_left,
    /// room)?)` would (within the same bounds), without building the copy.
    pub(crate) fn encode_cbor(
        &self,
        out: &mut Vec<u8>,
        depth_left: usize,
        room: &mut CopyRoom,
    ) -> Result<(), String> {
        let inner = |d: usize| d.checked_sub(1).ok_or("nesting too deep to convert");
        match self {
            Node::Scalar(v) => {
                room.take(string_len(v))?;
                super::cbor::encode_into(v, out)
            }
            Node::Array(a) => {
                room.take(0)?;
                let d = inner(depth_left)?;
                let a = a.try_borrow().map_err(|_| "array is being modified")?;
                super::cbor::head(out, 4, a.len() as u64);
                for n in a.iter() {
                    n.encode_cbor(out, d, room)?;
                }
            }
            Node::Object(o) => {
                room.take(0)?;
                let d = inner(depth_left)?;
                let o = o.try_borrow().map_err(|_| "object is being modified")?;
                super::cbor::head(out, 5, o.len() as u64);
                for (k, n) in o.iter() {
                    room.take(string_len(k))?;
                    super::cbor::encode_into(k, out);
                    n.encode_cbor(out, d, room)?;
                }
            }
        }
        Ok(())
    }

    /// Same container (for `==` on userdata).
    pub(crate) fn same(&self, other: &Node) -> bool {
        match (self, other) {
            (Node::Array(a), Node::Array(b)) => Rc::ptr_eq(a, b),
            (Node::Object(a), Node::Object(b)) => Rc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Elements or members; 0 for scalars.
    pub(crate) fn len(&self) -> usize {
        match self {
            Node::Scalar(_) => 0,
            Node::Array(a) => a.borrow().len(),
            Node::Object(o) => o.borrow().len(),
        }
    }

    /// `v[key]`: an array takes 1-based numbers, an object strings and numbers.
    pub(crate) fn get(&self, key: Key<'_>) -> Option<Node> {
        match (self, key) {
            (Node::Array(a), Key::Num(n)) => position(n).and_then(|i| a.borrow().get(i).cloned()),
            (Node::Object(o), key) => {
                let o = o.borrow();
                o.index.find(&o.items, key).map(|i| o.items[i].1.clone())
            }
            _ => None,
        }
    }

    /// `v[key] = value` (`None` for nil). Arrays: positions 1..=n replace (nil stores null, so
    /// the length never changes under the app's feet), n+1 appends (nil appends nothing).
    /// Objects: replace the first matching member, or append one; nil removes it.
    pub(crate) fn set(&self, key: Key<'_>, value: Option<Node>) -> Result<(), String> {
        match self {
            Node::Array(a) => {
                let Key::Num(n) = key else {
                    return Err("an array is indexed by integers (1-based)".into());
                };
                let mut a = a.try_borrow_mut().map_err(|_| "array is in use")?;
                let len = a.len();
                let text = value.as_ref().map_or(0, node_text_len);
                match position(n) {
                    Some(i) if i < len => {
                        let new = value.unwrap_or(Node::Scalar(Value::Null));
                        let old = std::mem::replace(&mut a[i], new);
                        a.uncharge(node_text_len(&old));
                        a.charge(text);
                        drop(a);
                        drop(old);
                    }
                    Some(i) if i == len => {
                        if let Some(v) = value {
                            a.push(v);
                            a.charge(tree_budget::KEPT_PER_ITEM + text);
                        }
                    }
                    _ => {
                        return Err(format!(
                            "array index {} out of range 1..{}",
                            number_key_text(n),
                            len + 1
                        ))
                    }
                }
                Ok(())
            }
            Node::Object(o) => {
                let mut o = o.try_borrow_mut().map_err(|_| "object is in use")?;
                let at = o.index.find(&o.items, key);
                match (at, value) {
                    (Some(i), Some(v)) => {
                        let text = node_text_len(&v);
                        let old = std::mem::replace(&mut o[i].1, v);
                        o.uncharge(node_text_len(&old));
                        o.charge(text);
                        drop(o);
                        drop(old);
                    }
                    (Some(i), None) => {
                        let (k, old) = o.remove(i);
                        o.index.removed();
                        o.uncharge(slot_cost(key_len(&k), node_text_len(&old)));
                        drop(o);
                        drop(old);
                    }
                    (None, Some(v)) => {
                        let k = stored_key(key);
                        o.charge(slot_cost(key_len(&k), node_text_len(&v)));
                        o.push((k, v));
                        let Items { items, index, .. } = &mut *o;
                        if let Some((at, (k, _))) = items.iter().enumerate().next_back() {
                            index.appended(k, at);
                        }
                    }
                    (None, None) => {}
                }
                Ok(())
            }
            Node::Scalar(_) => Err("not an object or array".into()),
        }
    }

    /// Removes an array element (shifting the rest) or an object member; whether one was there.
    pub(crate) fn erase(&self, key: Key<'_>) -> bool {
        match (self, key) {
            (Node::Array(a), Key::Num(n)) => {
                let Ok(mut a) = a.try_borrow_mut() else {
                    return false;
                };
                match position(n) {
                    Some(i) if i < a.len() => {
                        let old = a.remove(i);
                        a.uncharge(tree_budget::KEPT_PER_ITEM + node_text_len(&old));
                        drop(a);
                        drop(old);
                        true
                    }
                    _ => false,
                }
            }
            (Node::Object(o), key) => {
                let Ok(mut o) = o.try_borrow_mut() else {
                    return false;
                };
                match o.index.find(&o.items, key) {
                    Some(i) => {
                        let (k, old) = o.remove(i);
                        o.index.removed();
                        o.uncharge(slot_cost(key_len(&k), node_text_len(&old)));
                        drop(o);
                        drop(old);
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        }
    }

    /// A snapshot of the entries (keys as values; array keys are 1-based indices), so that
    /// iteration can call into Lua while the tree changes.
    pub(crate) fn entries(&self) -> Vec<(Value, Node)> {
        match self {
            Node::Scalar(_) => Vec::new(),
            Node::Array(a) => a
                .borrow()
                .iter()
                .enumerate()
                .map(|(i, n)| (Value::from_u64(i as u64 + 1), n.clone()))
                .collect(),
            Node::Object(o) => o.borrow().to_vec(),
        }
    }
}

impl Drop for Node {
    /// Takes a tree apart without recursion: one built by repeated assignment
    /// (`c.x = {}; c = c.x` in a loop) can be nested far deeper than the thread's stack
    /// allows recursive drops, and overflowing it aborts the whole process.
    fn drop(&mut self) {
        let mut orphans = Vec::new();
        take_children(self, &mut orphans);
        while let Some(mut n) = orphans.pop() {
            take_children(&mut n, &mut orphans);
            // `n` drops here with no children left.
        }
    }
}

/// Moves the children of a container we hold the last reference to into `out`.
fn take_children(n: &mut Node, out: &mut Vec<Node>) {
    match n {
        Node::Scalar(_) => {}
        Node::Array(a) => {
            if let Some(cell) = Rc::get_mut(a) {
                out.append(cell.get_mut());
            }
        }
        Node::Object(o) => {
            if let Some(cell) = Rc::get_mut(o) {
                out.extend(cell.get_mut().drain(..).map(|(_, n)| n));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(n: i64) -> Value {
        Value::Array((0..n).map(Value::Int).collect())
    }

    /// The encoder that skips the copy is bound as the copy is: a tree built by assignments
    /// may hold more values than any message, and `ws:send_response` must refuse it as
    /// `ws:send` does.
    #[test]
    fn encoding_a_tree_stops_where_copying_it_would() {
        let tree = Node::from_value(Value::Array(vec![
            ints(3),
            Value::Map(vec![(Value::text("key"), Value::text("value"))]),
        ]));
        let copy = |values, bytes| tree.to_value_within(64, &mut CopyRoom::new(values, bytes));
        let encode = |values, bytes| {
            let mut out = Vec::new();
            tree.encode_cbor(&mut out, 64, &mut CopyRoom::new(values, bytes))
                .map(|()| out)
        };
        // 8 values (3 containers, 4 scalars, 1 key), 8 bytes of strings.
        assert_eq!(
            encode(8, 8).unwrap(),
            super::super::cbor::encode(&copy(8, 8).unwrap())
        );
        for (values, bytes) in [(7, 8), (8, 7)] {
            assert_eq!(
                encode(values, bytes),
                copy(values, bytes).map(|_| Vec::new())
            );
        }
    }

    #[test]
    fn a_tree_charges_what_tree_cost_says_and_gives_it_back() {
        let values = [
            ints(1000),
            Value::Map(vec![
                (Value::text("a"), ints(3)),
                (Value::text("b"), Value::text("xyz")),
            ]),
            // A container key (CBOR allows them) is kept as it is, and charged as well.
            Value::Map(vec![(ints(10_000), Value::Int(1))]),
            Value::Int(7),
        ];
        for v in values {
            let before = tree_budget::charged();
            let node = Node::from_value(v.clone());
            assert_eq!(tree_budget::charged() - before, tree_cost(&v), "{v:?}");
            drop(node);
            assert_eq!(tree_budget::charged(), before, "{v:?}");
        }
        let keyed = Value::Map(vec![(ints(10_000), Value::Int(1))]);
        assert!(tree_cost(&keyed) >= 10_000 * tree_budget::KEPT_PER_ITEM);
    }

    #[test]
    fn assignments_charge_what_they_add_and_removals_give_it_back() {
        let base = tree_budget::charged();
        let object = Node::from_value(Value::Map(vec![]));
        let array = Node::from_value(Value::Array(vec![]));
        let empty = tree_budget::charged();
        let text = Value::text(&"x".repeat(1000));
        object
            .set(Key::Str(b"k"), Some(Node::from_value(text.clone())))
            .unwrap();
        array
            .set(Key::Num(1.0), Some(Node::from_value(ints(100))))
            .unwrap();
        array.set(Key::Num(2.0), Some(Node::Scalar(text))).unwrap();
        assert!(tree_budget::charged() - empty >= 2000 + 100 * tree_budget::KEPT_PER_ITEM);
        // Replaced by a smaller value, then removed: back to the empty containers' charge.
        array.set(Key::Num(2.0), None).unwrap();
        assert!(array.erase(Key::Num(2.0)));
        assert!(array.erase(Key::Num(1.0)));
        object.set(Key::Str(b"k"), None).unwrap();
        assert_eq!(tree_budget::charged(), empty);
        drop((object, array));
        assert_eq!(tree_budget::charged(), base);
    }
}
