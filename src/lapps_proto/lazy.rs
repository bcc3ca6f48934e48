//! Decoded LAppS messages that stay CBOR until the app needs a tree: what `onMessage` gets as
//! `message` (and what `message.params` and the like return) is a view into the validated
//! bytes; `v.key`, `v[i]` and `#v` read the bytes, and `ws:send_response` copies an array's
//! bytes when they are already what the encoder would write.
//!
//! The first use that needs a tree (an assignment, any nljson function, `tostring`, a
//! conversion) builds the tree of the whole message once; from then on every view of that
//! message resolves to its node in the tree (found by the offset where the container starts),
//! so containers stay shared exactly as with a tree from the start: `local p = message.params;
//! p[1] = 2` changes `message`.
//!
//! Owns the views and the reading of validated CBOR. It must never read bytes that
//! `cbor_de::validate` did not accept, and never panic: a read that does not find what the
//! validation promised answers as if the member were absent.

use std::cell::{Cell, Ref, RefCell};
use std::rc::Rc;

use super::cbor_de;
use super::node::{
    kept_by, key_len, key_matches, node_text_len, number_key_text, position, Items, Key, Node,
};
use super::tree_budget::{self, Refusal};
use super::value::{Limits, Value};

/// Messages up to this size live inside their `Doc` (one allocation per message instead of
/// two: most requests are small).
const INLINE: usize = 112;

/// A message's bytes, inline when small.
enum Bytes {
    Inline([u8; INLINE], usize),
    Heap(Box<[u8]>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Inline(b, n) => b.get(..*n).unwrap_or(&[]),
            Bytes::Heap(b) => b,
        }
    }
}

impl Bytes {
    fn new(bytes: &[u8]) -> Bytes {
        let mut inline = [0u8; INLINE];
        match inline.get_mut(..bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                Bytes::Inline(inline, bytes.len())
            }
            None => Bytes::Heap(bytes.into()),
        }
    }
}

/// What a Doc takes on the heap besides a large message's bytes: itself and its `Rc` counts.
const DOC_COST: usize = std::mem::size_of::<Doc>() + 2 * std::mem::size_of::<usize>();

/// One message's bytes, and its tree once built.
pub(crate) struct Doc {
    bytes: Bytes,
    /// Re-encoding any part of the value gives the same bytes.
    canonical: bool,
    /// Where the root's value starts (after its tags).
    root: usize,
    /// The root map's members with the protocol's names, when it has only text keys (every
    /// request is read member by member several times: check, `method`, `params`).
    named: Option<Named>,
    /// Containers by the offset of their head, in increasing offset order.
    tree: RefCell<Option<Vec<(usize, Node)>>>,
    /// What building the tree costs ([`tree_cost`]; 0 until asked once).
    cost: Cell<usize>,
    /// Map members walked over by lookups past their first [`SCAN_LIMIT`] (see `Handle::get`;
    /// 32 bits, so that the Doc stays as large as it was: it is allocated per message).
    walked: Cell<u32>,
    /// The Doc's own allocation and its bytes', charged to the thread's tree budget while the
    /// Doc lives: a view keeps its message alive, and Lua's collector, seeing a small userdata,
    /// has no reason to free a large message, or many small ones, soon (see [`over_budget`]).
    charged: usize,
}

impl Drop for Doc {
    fn drop(&mut self) {
        tree_budget::release(self.charged);
    }
}

/// Whether the messages and trees alive on this thread take more than its budget
/// ([`tree_budget`]): the caller collects garbage and, if that does not help, refuses the
/// message it just parsed.
pub(crate) fn over_budget() -> bool {
    tree_budget::over()
}

/// Whether `doc` alone is more than the thread's budget.
pub(crate) fn never_fits(doc: &Doc) -> bool {
    let limit = tree_budget::limit();
    limit != 0 && doc.charged > limit
}

/// The member names of the LAppS protocol (SPEC section 4), in the order of [`Named`]'s slots.
pub(crate) const NAMES: [&str; 4] = ["lapps", "method", "params", "cid"];

/// Where a root map's members named as in [`NAMES`] are, found in one walk of a map whose keys
/// are all definite text strings (as every client sends them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Named {
    /// Per name: the offset of its first value.
    pub at: [Option<usize>; 4],
    /// Per name: whether it came more than once.
    pub twice: [bool; 4],
    /// Whether the map has members with other names.
    pub others: bool,
}

/// A container: in a tree, or a view into a message not turned into one yet.
#[derive(Clone)]
pub(crate) enum Handle {
    Tree(Node),
    Raw(Rc<Doc>, usize),
}

/// What a lookup found.
pub(crate) enum Item {
    /// A scalar in the bytes (at this offset).
    RawScalar(Rc<Doc>, usize),
    Node(Node),
    /// A container not built yet.
    RawContainer(Rc<Doc>, usize),
}

impl Doc {
    /// Validates `bytes` as one CBOR item within `limits` (copying them).
    pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Rc<Doc>, String> {
        if bytes.len() > limits.max_input {
            return Err(format!(
                "input of {} bytes exceeds the limit of {}",
                bytes.len(),
                limits.max_input
            ));
        }
        if bytes.is_empty() {
            return Err("empty input".into());
        }
        let canonical = cbor_de::validate(bytes, limits).map_err(|e| e.0)?;
        let root = skip_tags(bytes, 0);
        let kept = Bytes::new(bytes);
        // The Doc's own allocation (with its Rc counts), which a view keeps alive as much as
        // its bytes: an app that keeps many small messages must meet its limit too.
        let charged = DOC_COST
            + match kept {
                Bytes::Inline(..) => 0,
                Bytes::Heap(_) => bytes.len(),
            };
        tree_budget::add(charged);
        Ok(Rc::new(Doc {
            bytes: kept,
            canonical,
            root,
            named: named_members(bytes, root),
            tree: RefCell::new(None),
            cost: Cell::new(0),
            walked: Cell::new(0),
            charged,
        }))
    }

    /// The root map's members with the protocol's names, when all its keys are plain text.
    pub(crate) fn named(&self) -> Option<&Named> {
        self.named.as_ref()
    }

    /// The member `key` of the map at `at` as [`Named`] answers it: `Some(value offset or
    /// None)`, or `None` when a walk must decide (not the root, no `Named`, a number key, or a
    /// name not in [`NAMES`] while the map has such members).
    fn named_lookup(&self, at: usize, key: Key<'_>) -> Option<Option<usize>> {
        let (true, Some(named), Key::Str(key)) = (at == self.root, self.named.as_ref(), key) else {
            return None;
        };
        match NAMES.iter().position(|name| name.as_bytes() == key) {
            Some(i) => Some(named.at[i]),
            None if !named.others => Some(None),
            None => None,
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where the root item's value starts (after its tags).
    pub(crate) fn root(&self) -> usize {
        self.root
    }

    pub(crate) fn is_built(&self) -> bool {
        self.tree.try_borrow().map(|t| t.is_some()).unwrap_or(true)
    }

    /// The tree, built on first use; `None` when [`tree_budget`] refuses its cost.
    fn tree(&self) -> Option<Ref<'_, Vec<(usize, Node)>>> {
        if !self.is_built() {
            if self.cost.get() == 0 {
                self.cost.set(tree_cost(&self.bytes)?);
            }
            if !tree_budget::fits(self.cost.get()) {
                return None;
            }
            let (value, offsets) = cbor_de::decode_recording(&self.bytes, 0)?;
            let mut out = Vec::with_capacity(offsets.len());
            let mut offsets = offsets.into_iter();
            build(value, &mut offsets, &mut out);
            *self.tree.try_borrow_mut().ok()? = Some(out);
        }
        Ref::filter_map(self.tree.try_borrow().ok()?, |t| t.as_ref()).ok()
    }

    fn node_at(&self, at: usize) -> Option<Node> {
        let tree = self.tree()?;
        let i = tree.binary_search_by_key(&at, |(o, _)| *o).ok()?;
        tree.get(i).map(|(_, n)| n.clone())
    }

    /// The scalar at `at` as a value; None for an array or a map, which is not decoded: every
    /// caller wants a scalar (a key, `lapps`, `cid`), and a peer's container there would
    /// otherwise be built in full, outside the tree budget, at each look.
    pub(crate) fn scalar(&self, at: usize) -> Option<Value> {
        if let Some((4 | 5, _, _)) = head(&self.bytes, skip_tags(&self.bytes, at)) {
            return None;
        }
        cbor_de::decode_at(&self.bytes, at)
    }

    /// The bytes of a definite text or byte string at `at` (no tag), which need no copy.
    pub(crate) fn plain_string(&self, at: usize) -> Option<&[u8]> {
        let (major, arg, next) = head(&self.bytes, at)?;
        match (major, arg) {
            (2 | 3, Some(len)) => self.bytes.get(next..next.checked_add(len as usize)?),
            _ => None,
        }
    }
}

/// [`Named`] for the map at `at`; `None` when it is not a map or has a key that is not a
/// definite text string.
fn named_members(b: &[u8], at: usize) -> Option<Named> {
    let (5, len, mut pos) = head(b, at)? else {
        return None;
    };
    let mut named = Named {
        at: [None; 4],
        twice: [false; 4],
        others: false,
    };
    let mut n = 0u64;
    while !len.map_or(b.get(pos) == Some(&0xff), |l| n == l) {
        let (3, Some(key_len), key_at) = head(b, pos)? else {
            return None;
        };
        let value = key_at.checked_add(key_len as usize)?;
        let key = b.get(key_at..value)?;
        match NAMES.iter().position(|name| name.as_bytes() == key) {
            Some(i) => match named.at[i] {
                Some(_) => named.twice[i] = true,
                None => named.at[i] = Some(value),
            },
            None => named.others = true,
        }
        pos = skip(b, value)?;
        n += 1;
    }
    Some(named)
}

/// Moves `value` into nodes, pairing each container with the next recorded offset (the
/// decoder recorded them in the order this walk meets them).
fn build(
    value: Value,
    offsets: &mut impl Iterator<Item = usize>,
    out: &mut Vec<(usize, Node)>,
) -> Node {
    match value {
        Value::Array(items) => {
            let at = offsets.next().unwrap_or(usize::MAX);
            let cell = Rc::new(RefCell::new(Items::default()));
            let node = Node::Array(Rc::clone(&cell));
            out.push((at, node.clone()));
            let built: Vec<Node> = items.into_iter().map(|v| build(v, offsets, out)).collect();
            let kept = kept_by(built.len(), built.iter().map(node_text_len).sum());
            *cell.borrow_mut() = Items::charged(built, kept);
            node
        }
        Value::Map(members) => {
            let at = offsets.next().unwrap_or(usize::MAX);
            let cell = Rc::new(RefCell::new(Items::default()));
            let node = Node::Object(Rc::clone(&cell));
            out.push((at, node.clone()));
            let built: Vec<(Value, Node)> = members
                .into_iter()
                .map(|(k, v)| (k, build(v, offsets, out)))
                .collect();
            let text = built
                .iter()
                .map(|(k, v)| key_len(k) + node_text_len(v))
                .sum();
            let kept = kept_by(2 * built.len(), text);
            *cell.borrow_mut() = Items::charged(built, kept);
            node
        }
        scalar => Node::Scalar(scalar),
    }
}

impl Handle {
    /// The node of this container (building the message's tree if needed).
    pub(crate) fn resolve(&self) -> Option<Node> {
        match self {
            Handle::Tree(n) => Some(n.clone()),
            Handle::Raw(doc, at) => doc.node_at(*at),
        }
    }

    /// The array's elements as CBOR items, when they can be copied as they are: `(count,
    /// bytes)`.
    pub(crate) fn canonical_array(&self) -> Option<(u64, &[u8])> {
        let Handle::Raw(doc, at) = self else {
            return None;
        };
        if !doc.canonical || doc.is_built() {
            return None;
        }
        let (major, len, first) = head(&doc.bytes, *at)?;
        if major != 4 {
            return None;
        }
        let end = skip(&doc.bytes, *at)?;
        Some((len?, doc.bytes.get(first..end)?))
    }

    /// `v[key]`. Reading the bytes costs a walk over the elements before the one asked for: an
    /// element past the first [`SCAN_LIMIT`] is read from the tree instead, built once, so that
    /// `for i = 1, #v do ... v[i] ... end` stays linear in the message's size. Maps are read
    /// from the tree (whose objects find members by an index) once lookups have walked over
    /// more members past the first [`SCAN_LIMIT`] of their maps than the message has bytes:
    /// a few lookups keep the bytes as they are, many stay linear. When the tree budget
    /// refuses the tree, the walk goes on (and the refusal is not the caller's to answer).
    pub(crate) fn get(&self, key: Key<'_>) -> Option<Item> {
        let (doc, at) = match self {
            Handle::Raw(doc, at) if !doc.is_built() => (doc, *at),
            other => return other.resolve()?.get(key).map(Item::Node),
        };
        let b = doc.bytes();
        let (major, len, mut pos) = head(b, at)?;
        let found = match major {
            4 => {
                let Key::Num(n) = key else {
                    return None;
                };
                let i = position(n)?;
                if len.is_some_and(|l| i as u64 >= l) {
                    return None;
                }
                if i >= SCAN_LIMIT {
                    return self.resolve()?.get(key).map(Item::Node);
                }
                let mut k = 0usize;
                loop {
                    if len.map_or(b.get(pos) == Some(&0xff), |l| k as u64 == l) {
                        return None;
                    }
                    if k == i {
                        break pos;
                    }
                    pos = skip(b, pos)?;
                    k += 1;
                }
            }
            5 => match doc.named_lookup(at, key) {
                Some(found) => found?,
                None => {
                    let mut k = 0u64;
                    loop {
                        if len.map_or(b.get(pos) == Some(&0xff), |l| k == l) {
                            return None;
                        }
                        if k >= SCAN_LIMIT as u64 {
                            if let Some(tree) = self.walked_past_scan_limit(doc) {
                                return tree.get(key).map(Item::Node);
                            }
                        }
                        let value = skip(b, pos)?;
                        if raw_key_matches(doc, pos, key) {
                            break value;
                        }
                        pos = skip(b, value)?;
                        k += 1;
                    }
                }
            },
            _ => return None,
        };
        let inner = skip_tags(b, found);
        Some(match head(b, inner) {
            Some((4 | 5, _, _)) => Item::RawContainer(Rc::clone(doc), inner),
            _ => Item::RawScalar(Rc::clone(doc), found),
        })
    }

    /// One more map member walked past its map's first [`SCAN_LIMIT`]: the tree, when the walks
    /// have now passed as many members as the message has bytes and the budget allows it.
    /// Out of line: `get` is on every request's path (`message.method`), this is not.
    #[cold]
    #[inline(never)]
    fn walked_past_scan_limit(&self, doc: &Doc) -> Option<Node> {
        let walked = doc.walked.get().saturating_add(1);
        doc.walked.set(walked);
        if walked as usize != doc.bytes().len().saturating_add(1) {
            return None;
        }
        let tree = self.resolve();
        // Refused: never (too large for the budget on its own) is final; not now (garbage
        // not yet collected fills the budget) is tried again after as many members more.
        if tree.is_none() && tree_budget::take_refused() == Some(Refusal::NotNow) {
            doc.walked.set(0);
        }
        tree
    }

    /// `#v`.
    pub(crate) fn len(&self) -> usize {
        match self {
            Handle::Raw(doc, at) if !doc.is_built() => {
                let b = doc.bytes();
                match head(b, *at) {
                    Some((4 | 5, Some(n), _)) => n as usize,
                    // Indefinite length: counting is a walk, done once by building the tree
                    // (`while i <= #v` would otherwise walk the whole container per step).
                    Some((4 | 5, None, _)) => self.resolve().map_or(0, |n| n.len()),
                    _ => 0,
                }
            }
            other => other.resolve().map_or(0, |n| n.len()),
        }
    }
}

/// How many array elements [`Handle::get`] walks over in the bytes before it builds the tree.
const SCAN_LIMIT: usize = 32;

/// Whether the map key at `pos` answers to `key`, as `node::key_matches` decides for a decoded
/// key.
fn raw_key_matches(doc: &Doc, pos: usize, key: Key<'_>) -> bool {
    #[cfg(test)]
    super::key_index::count_compared();
    if let (Some((3, _, _)), Some(s)) = (head(doc.bytes(), pos), doc.plain_string(pos)) {
        return match key {
            Key::Str(k) => s == k,
            Key::Num(n) => s == number_key_text(n).as_bytes(),
        };
    }
    if let (Some((2, _, _)), Some(s), Key::Str(k)) =
        (head(doc.bytes(), pos), doc.plain_string(pos), key)
    {
        return s == k;
    }
    doc.scalar(pos).is_some_and(|k| key_matches(&k, key))
}

/// The head at `pos`: major type, argument (`None` for an indefinite length) and the offset
/// after the head. Simple values and floats report their additional information as argument.
pub(super) fn head(b: &[u8], pos: usize) -> Option<(u8, Option<u64>, usize)> {
    let initial = *b.get(pos)?;
    let (major, info) = (initial >> 5, initial & 0x1f);
    let n = |k: usize| -> Option<u64> {
        let s = b.get(pos + 1..pos + 1 + k)?;
        Some(s.iter().fold(0u64, |acc, d| acc << 8 | *d as u64))
    };
    Some(match info {
        0..=23 => (major, Some(info as u64), pos + 1),
        24 => (major, Some(n(1)?), pos + 2),
        25 => (major, Some(n(2)?), pos + 3),
        26 => (major, Some(n(4)?), pos + 5),
        27 => (major, Some(n(8)?), pos + 9),
        31 => (major, None, pos + 1),
        _ => return None,
    })
}

/// What the tree of the validated item `b` costs ([`tree_budget::PER_ITEM`] per item, and
/// [`tree_budget::PER_CONTAINER`] more per container, beside its bytes).
fn tree_cost(b: &[u8]) -> Option<usize> {
    let (mut items, mut containers) = (0usize, 0usize);
    census(b, 0, &mut items, &mut containers)?;
    items
        .checked_mul(tree_budget::PER_ITEM)?
        .checked_add(containers.checked_mul(tree_budget::PER_CONTAINER)?)?
        .checked_add(b.len())
}

/// Counts the items and containers of the item at `pos` (a tag with its item is one); the
/// offset after it. Recursion is bounded by the validated nesting depth.
fn census(b: &[u8], pos: usize, items: &mut usize, containers: &mut usize) -> Option<usize> {
    let pos = skip_tags(b, pos);
    let (major, arg, next) = head(b, pos)?;
    match major {
        4 | 5 => {
            *items += 1;
            *containers += 1;
            let per = if major == 5 { 2 } else { 1 };
            let mut p = next;
            let mut k = 0u64;
            while !arg.map_or(b.get(p) == Some(&0xff), |n| k == n.saturating_mul(per)) {
                p = census(b, p, items, containers)?;
                k += 1;
            }
            Some(if arg.is_none() { p + 1 } else { p })
        }
        _ => {
            *items += 1;
            skip(b, pos)
        }
    }
}

/// The offset after the tags at `pos`.
pub(super) fn skip_tags(b: &[u8], mut pos: usize) -> usize {
    while let Some((6, Some(_), next)) = head(b, pos) {
        pos = next;
    }
    pos
}

/// The offset after the item at `pos`.
fn skip(b: &[u8], pos: usize) -> Option<usize> {
    let (major, arg, next) = head(b, pos)?;
    match (major, arg) {
        (0 | 1, _) => Some(next),
        // Simple values and floats: the argument bytes were the value.
        (7, _) => Some(next),
        (2 | 3, Some(len)) => next.checked_add(len as usize),
        (2 | 3, None) | (4 | 5, None) => {
            let mut p = next;
            while *b.get(p)? != 0xff {
                p = skip(b, p)?;
            }
            Some(p + 1)
        }
        (4, Some(n)) => (0..n).try_fold(next, |p, _| skip(b, p)),
        (5, Some(n)) => (0..n).try_fold(next, |p, _| skip(b, skip(b, p)?)),
        (6, _) => skip(b, next),
        _ => None,
    }
}

impl Doc {
    /// Whether the item at `at` (tags skipped) is a map.
    pub(crate) fn is_map(&self, at: usize) -> bool {
        matches!(
            head(&self.bytes, skip_tags(&self.bytes, at)),
            Some((5, _, _))
        )
    }

    /// `Some(non-empty)` when the item at `at` (tags skipped) is an array.
    pub(crate) fn array_non_empty(&self, at: usize) -> Option<bool> {
        let b = &self.bytes;
        match head(b, skip_tags(b, at))? {
            (4, Some(n), _) => Some(n > 0),
            (4, None, next) => Some(b.get(next) != Some(&0xff)),
            _ => None,
        }
    }

    /// The bytes of the item at `at` when it decodes to text (as `Value::as_str` sees it),
    /// without re-checking UTF-8 on the common path.
    pub(crate) fn text_bytes(&self, at: usize) -> Option<std::borrow::Cow<'_, [u8]>> {
        if let Some((3, _, _)) = head(&self.bytes, at) {
            if let Some(s) = self.plain_string(at) {
                return Some(std::borrow::Cow::Borrowed(s));
            }
        }
        match self.scalar(at)? {
            Value::Text(s) => Some(std::borrow::Cow::Owned(s.into_bytes())),
            _ => None,
        }
    }

    /// The item at `at` when it decodes to text (as `Value::as_str` sees it).
    pub(crate) fn text(&self, at: usize) -> Option<std::borrow::Cow<'_, str>> {
        if let Some((3, _, _)) = head(&self.bytes, at) {
            if let Some(s) = self.plain_string(at) {
                return std::str::from_utf8(s).ok().map(std::borrow::Cow::Borrowed);
            }
        }
        match self.scalar(at)? {
            Value::Text(s) => Some(std::borrow::Cow::Owned(s)),
            _ => None,
        }
    }

    /// Calls `f` with the offsets of each key and its value of the map at `at` (tags
    /// skipped), in order.
    pub(crate) fn each_member(&self, at: usize, mut f: impl FnMut(usize, usize)) {
        let b = &self.bytes;
        let Some((5, len, mut pos)) = head(b, skip_tags(b, at)) else {
            return;
        };
        let mut k = 0u64;
        while !len.map_or(b.get(pos) == Some(&0xff), |l| k == l) {
            let Some(value) = skip(b, pos) else {
                break;
            };
            f(pos, value);
            let Some(next) = skip(b, value) else {
                break;
            };
            pos = next;
            k += 1;
        }
    }
}

/// For the fuzz target and tests: every read of a view of `bytes` (`#v`, a lookup by each key
/// its maps hold, by the protocol's names, by each index and a few that are not, the bytes
/// `ws:send_response` copies as they are) gives what the tree decoded from the same bytes
/// gives. Each read is made on a view of its own, freshly parsed (a read that builds the
/// message's tree would make every later one read the tree), then the whole is compared once
/// the tree is built. `Err` names the first difference; `Ok` also for bytes that are not one
/// CBOR item within the default limits.
#[doc(hidden)]
pub fn views_agree_with_tree(bytes: &[u8]) -> Result<(), String> {
    let Ok(doc) = Doc::parse(bytes, &Limits::default()) else {
        return Ok(());
    };
    let value = super::cbor::decode(bytes)
        .map_err(|e| format!("Doc::parse accepts what the decoder refuses ({e})"))?;
    let tree = Node::from_value(value);
    if matches!(tree, Node::Scalar(_)) {
        return Ok(());
    }
    let mut checker = Checker {
        bytes,
        doc,
        visited: std::collections::HashSet::new(),
    };
    checker.agree(&mut Vec::new(), &tree)?;
    let doc = checker.doc;
    let built = Handle::Raw(Rc::clone(&doc), doc.root())
        .resolve()
        .ok_or("the tree was not built")?;
    if whole(&built) != whole(&tree) {
        return Err("the built tree differs from the decoded one".into());
    }
    Ok(())
}

/// A lookup key that owns its text.
#[derive(Clone, Debug)]
enum OwnedKey {
    Str(Vec<u8>),
    Num(f64),
}

impl OwnedKey {
    fn key(&self) -> Key<'_> {
        match self {
            OwnedKey::Str(s) => Key::Str(s),
            OwnedKey::Num(n) => Key::Num(*n),
        }
    }
}

fn whole(n: &Node) -> Value {
    n.to_value(usize::MAX).unwrap_or(Value::Null)
}

/// The keys to try on `tree`: its own (and the number a text key reads as), the protocol's
/// names, every index and past the end, and some no container has.
fn keys_to_try(tree: &Node) -> Vec<OwnedKey> {
    let mut keys = vec![
        OwnedKey::Num(0.0),
        OwnedKey::Num(-1.0),
        OwnedKey::Num(1.5),
        OwnedKey::Num(1.0),
        OwnedKey::Str(b"1".to_vec()),
    ];
    keys.extend(NAMES.iter().map(|n| OwnedKey::Str(n.as_bytes().to_vec())));
    match tree {
        Node::Array(a) => {
            // Each index costs a parse: the first past the scan limit and the last stand for
            // the rest.
            let n = a.borrow().len();
            let indices = (1..=n.min(SCAN_LIMIT + 2)).chain([n, n + 1]);
            keys.extend(indices.map(|i| OwnedKey::Num(i as f64)));
        }
        Node::Object(o) => {
            let o = o.borrow();
            // The first keys, and the last: each costs a walk.
            let last = o.len().saturating_sub(1);
            for (i, (k, _)) in o.iter().enumerate() {
                if i >= SCAN_LIMIT && i != last {
                    continue;
                }
                match k {
                    Value::Text(s) => {
                        keys.push(OwnedKey::Str(s.as_bytes().to_vec()));
                        if let Ok(n) = s.parse::<f64>() {
                            keys.push(OwnedKey::Num(n));
                        }
                    }
                    Value::Bytes(b) => keys.push(OwnedKey::Str(b.clone())),
                    Value::Int(i) => keys.push(OwnedKey::Num(*i as f64)),
                    Value::UInt(u) => keys.push(OwnedKey::Num(*u as f64)),
                    Value::Float(f) => keys.push(OwnedKey::Num(*f)),
                    _ => {}
                }
            }
        }
        Node::Scalar(_) => {}
    }
    // Keys that are alike find the same member: each is tried once.
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| {
        seen.insert(match k {
            OwnedKey::Str(s) => (s.clone(), None),
            OwnedKey::Num(n) => (Vec::new(), Some(n.to_bits())),
        })
    });
    keys
}

/// [`views_agree_with_tree`]'s state: the bytes, the view's document (parsed again once a
/// read has built its tree), and the containers already checked.
struct Checker<'a> {
    bytes: &'a [u8],
    doc: Rc<Doc>,
    visited: std::collections::HashSet<usize>,
}

impl Checker<'_> {
    /// A view of the container at `path` (keys from the root), read in place on the way, on
    /// a document no read has built a tree for.
    fn fresh_view(&mut self, path: &[OwnedKey]) -> Result<Handle, String> {
        if self.doc.is_built() {
            self.doc = Doc::parse(self.bytes, &Limits::default())?;
        }
        let mut view = Handle::Raw(Rc::clone(&self.doc), self.doc.root());
        for k in path {
            view = match view.get(k.key()) {
                Some(Item::RawContainer(d, at)) => Handle::Raw(d, at),
                Some(Item::Node(n @ (Node::Array(_) | Node::Object(_)))) => Handle::Tree(n),
                _ => return Err(format!("{path:?}: the way to a container is lost")),
            };
        }
        Ok(view)
    }

    /// The container at `path` and, a few levels down, what it holds.
    fn agree(&mut self, path: &mut Vec<OwnedKey>, tree: &Node) -> Result<(), String> {
        let len = self.fresh_view(path)?.len();
        if len != tree.len() {
            return Err(format!("{path:?}: #v {len} but the tree's {}", tree.len()));
        }
        let view = self.fresh_view(path)?;
        if let (Some((n, items)), Node::Array(elements)) = (view.canonical_array(), tree) {
            let mut expected = Vec::new();
            let mut room = super::node::CopyRoom::new(usize::MAX, usize::MAX);
            for e in elements.borrow().iter() {
                e.encode_cbor(&mut expected, usize::MAX, &mut room)?;
            }
            if n as usize != tree.len() || items != &expected[..] {
                return Err(format!(
                    "{path:?}: the bytes sent as they are are not the elements'"
                ));
            }
        }
        for k in keys_to_try(tree) {
            let view = self.fresh_view(path)?;
            let (found, expected) = (view.get(k.key()), tree.get(k.key()));
            let same = match (&found, &expected) {
                (None, None) => true,
                (Some(Item::RawScalar(d, at)), Some(node)) => d.scalar(*at) == Some(whole(node)),
                (Some(Item::Node(n)), Some(node)) => whole(n) == whole(node),
                (Some(Item::RawContainer(d, at)), Some(node)) => {
                    // Each container once, however many keys lead to it.
                    if path.len() < 4 && self.visited.insert(*at) {
                        path.push(k.clone());
                        self.agree(path, node)?;
                        path.pop();
                    }
                    Handle::Raw(Rc::clone(d), *at)
                        .resolve()
                        .is_some_and(|n| whole(&n) == whole(node))
                }
                _ => false,
            };
            if !same {
                return Err(format!("{path:?}: v[{k:?}] differs from the tree's"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::hex;
    use super::*;

    fn counts(h: &str) -> (usize, usize, usize) {
        let b = hex(h);
        let (mut items, mut containers) = (0, 0);
        let end = census(&b, 0, &mut items, &mut containers).expect("a whole item");
        (items, containers, end)
    }

    /// The fuzz target's check on encodings a well-formed value never gets from our encoder:
    /// indefinite lengths, tags, heads longer than needed, duplicate and non-text keys, and
    /// arrays past the scan limit.
    #[test]
    fn views_agree_with_the_tree_on_unusual_encodings() {
        let long: String = std::iter::once("98 28".to_string())
            .chain((0..40).map(|i| format!("{:02x}", i % 24)))
            .collect::<Vec<_>>()
            .join(" ");
        for h in [
            "bf 65 6c61707073 01 66 6d6574686f64 7f 62 6563 62 686f ff 66 706172616d73 9f 01 80 ff ff",
            "d9d9f7 a2 63 636964 c1 05 61 61 82 01 02",
            "b8 02 18 01 61 78 19 0001 61 79",
            "a3 61 6b 01 61 6b 02 42 6b6b 03",
            "a2 01 61 61 f9 3c00 61 62",
            long.as_str(),
            "9f 9f ff bf ff 80 a0 ff",
        ] {
            assert_eq!(views_agree_with_tree(&hex(h)), Ok(()), "{h}");
        }
        // 32 keys "a" a level, the first one's value the same again, five levels down: each
        // container is checked once, not once per key that finds it (32^4 times).
        fn nest(depth: usize) -> Vec<u8> {
            if depth == 0 {
                return vec![0x01];
            }
            let mut b = vec![0xb8, 32];
            for i in 0..32 {
                b.extend_from_slice(&[0x61, b'a']);
                b.extend(if i == 0 { nest(depth - 1) } else { vec![0x01] });
            }
            b
        }
        assert_eq!(views_agree_with_tree(&nest(5)), Ok(()));
    }

    #[test]
    fn census_counts_items_and_containers_of_every_shape() {
        // [1, [2, 3], [4, 5]], definite and then indefinite (RFC 8949 appendix A).
        assert_eq!(counts("83 01 82 02 03 82 04 05"), (8, 3, 8));
        assert_eq!(counts("9f 01 82 02 03 9f 04 05 ff ff"), (8, 3, 10));
        // {"a": 1, "b": [2, 3]}: keys are items too.
        assert_eq!(counts("a2 61 61 01 61 62 82 02 03"), (7, 2, 9));
        assert_eq!(counts("bf 61 61 01 ff"), (3, 1, 5));
        // A tag is not an item of its own; an indefinite string is one item.
        assert_eq!(counts("c1 1a 51 4b 67 b0"), (1, 0, 6));
        assert_eq!(counts("82 7f 61 61 61 62 ff c1 80"), (3, 2, 9));
        assert_eq!(
            tree_cost(&hex("83 01 82 02 03 82 04 05")),
            Some(8 * tree_budget::PER_ITEM + 3 * tree_budget::PER_CONTAINER + 8)
        );
    }
}
