//! Conversion between [`Value`] and mlua values, for the host and for `nljson`.
//!
//! Lua to `Value` (`from_lua`):
//! - nil and `nljson.null` become null; booleans stay booleans;
//! - numbers (LuaJIT has only `f64`): integral ones within ±2^53 become `Int`, all others
//!   `Float` (beyond 2^53 an `f64` no longer holds every integer, so it is not claimed as one);
//! - strings become text when they are UTF-8, byte strings otherwise;
//! - a table whose keys are exactly `1..n` (n >= 1) becomes an array, any other table an object
//!   (so `{}` is an empty object: use `nljson.array()` for an empty array); object keys that are
//!   numbers take their string form, other non-string keys are an error; members of an object
//!   built from a table are sorted by key, since a Lua table has no order of its own;
//! - nljson values are deep-copied; functions, threads and other userdata are an error;
//! - nesting is bounded (default 64): that also stops tables that contain themselves.
//!
//! `Value` to Lua (`to_lua`): null is `nljson.null`, numbers are Lua numbers (integers beyond
//! ±2^53 lose precision, as in any LuaJIT code), text and byte strings are Lua strings, and
//! arrays and maps become nljson values so that they keep their kind and key types.
//!
//! This module converts; it must never call Lua code (no metamethods: tables are read raw).

use mlua::{LightUserData, Lua, Value as LuaValue};

use super::node::{tree_cost, CopyRoom, Node};
use super::tree_budget::{self, Refusal};
use super::value::{Limits, Value};

/// Largest integer below which every integer is an exact `f64`.
const EXACT_F64_INT: f64 = 9_007_199_254_740_992.0;

/// The `nljson.null` sentinel: a NULL light userdata, the same in every state.
pub fn null() -> LuaValue {
    LuaValue::LightUserData(LightUserData(std::ptr::null_mut()))
}

/// Whether `v` is `nljson.null`.
pub fn is_null(v: &LuaValue) -> bool {
    matches!(v, LuaValue::LightUserData(p) if p.0.is_null())
}

/// The type of `v` as an error message names it: what Lua's `type()` says (LuaJIT has no
/// integer type, so none of mlua's "integer"), and "null" for `nljson.null`.
pub fn lua_type(v: &LuaValue) -> &'static str {
    match v {
        LuaValue::Integer(_) | LuaValue::Number(_) => "number",
        v if is_null(v) => "null",
        LuaValue::LightUserData(_) | LuaValue::Error(_) => "userdata",
        other => other.type_name(),
    }
}

/// A Lua value for `value`: scalars as plain Lua values, containers as nljson values.
pub fn to_lua(lua: &Lua, value: &Value) -> mlua::Result<LuaValue> {
    into_lua(lua, value.clone())
}

/// Like [`to_lua`], moving the value (no copy of a decoded message). Its tree is charged to
/// the thread's tree budget: "not enough memory" when it does not fit.
pub fn into_lua(lua: &Lua, value: Value) -> mlua::Result<LuaValue> {
    let cost = tree_cost(&value);
    if cost > 0 {
        budget_for(lua, cost).map_err(mlua::Error::external)?;
    }
    node_to_lua(lua, Node::from_value(value))
}

/// Asks the thread's tree budget ([`tree_budget`]) for `cost` bytes before a tree of that cost
/// is built; when trees alive now leave no room, a full collection frees those gone out of use
/// and it asks once more.
pub(crate) fn budget_for(lua: &Lua, cost: usize) -> Result<(), String> {
    tree_budget::take_refused();
    if tree_budget::fits(cost) {
        return Ok(());
    }
    if tree_budget::take_refused() == Some(Refusal::NotNow) {
        let _ = lua.gc_collect();
        let fits = tree_budget::fits(cost);
        tree_budget::take_refused();
        if fits {
            return Ok(());
        }
    }
    Err("not enough memory".into())
}

pub(crate) fn node_to_lua(lua: &Lua, node: Node) -> mlua::Result<LuaValue> {
    match node {
        Node::Scalar(ref v) => scalar_to_lua(lua, v),
        container => {
            super::nljson::ensure_metatable(lua)?;
            super::json_ud::container_to_lua(lua, container)
        }
    }
}

fn scalar_to_lua(lua: &Lua, v: &Value) -> mlua::Result<LuaValue> {
    Ok(match v {
        Value::Null => null(),
        Value::Bool(b) => LuaValue::Boolean(*b),
        Value::Int(i) => LuaValue::Number(*i as f64),
        Value::UInt(u) => LuaValue::Number(*u as f64),
        Value::Float(f) => LuaValue::Number(*f),
        Value::Text(s) => LuaValue::String(lua.create_string(s)?),
        Value::Bytes(b) => LuaValue::String(lua.create_string(b)?),
        // Containers never reach here (Node::from_value keeps them apart); an empty one is a
        // safe answer anyway.
        Value::Array(_) | Value::Map(_) => null(),
    })
}

/// A Lua number as a value (see the module doc for the 2^53 rule).
pub(crate) fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() <= EXACT_F64_INT && !(n == 0.0 && n.is_sign_negative()) {
        Value::Int(n as i64)
    } else {
        Value::Float(n)
    }
}

/// A Lua value as a [`Value`] with the default nesting bound.
pub fn from_lua(lua: &Lua, v: &LuaValue) -> Result<Value, String> {
    from_lua_with(lua, v, &Limits::default())
}

/// A Lua value as a [`Value`], nesting bounded by `limits.max_depth` and the copy by
/// `limits.max_total_items` values (keys included, but for an array's indices) and its
/// strings by what the state has room for (its `memory_limit` less its floor;
/// [`UNLIMITED_COPY_BYTES`] without a limit): a table that holds one large string or table
/// many times costs little in Lua and much as a copy.
pub fn from_lua_with(lua: &Lua, v: &LuaValue, limits: &Limits) -> Result<Value, String> {
    let bytes = tree_budget::room_at_most().unwrap_or(UNLIMITED_COPY_BYTES);
    convert(
        lua,
        v,
        limits.max_depth,
        &mut CopyRoom::new(limits.max_total_items, bytes),
    )
}

/// The most bytes one copy from Lua may take in a state without a memory limit.
pub const UNLIMITED_COPY_BYTES: usize = 1 << 30;

/// A table key while its table's kind is not known yet.
enum RawKey {
    Index(i64),
    Text(Value),
}

fn convert(
    lua: &Lua,
    v: &LuaValue,
    depth_left: usize,
    room: &mut CopyRoom,
) -> Result<Value, String> {
    if let LuaValue::UserData(_) = v {
        // An nljson value counts its own values as it is copied.
        return match super::json_ud::node_of(lua, v) {
            Ok(node) => node.to_value_within(depth_left, room),
            Err(super::json_ud::NoNode::Foreign) => {
                Err("a userdata that is not an nljson value has no JSON/CBOR form".into())
            }
            Err(e) => Err(e.to_string()),
        };
    }
    room.take(match v {
        LuaValue::String(s) => s.as_bytes().len(),
        _ => 0,
    })?;
    Ok(match v {
        LuaValue::Nil => Value::Null,
        LuaValue::Boolean(b) => Value::Bool(*b),
        LuaValue::Integer(i) => number(*i as f64),
        LuaValue::Number(n) => number(*n),
        LuaValue::String(s) => {
            let b = s.as_bytes();
            match std::str::from_utf8(&b) {
                Ok(t) => Value::text(t),
                Err(_) => Value::Bytes(b.to_vec()),
            }
        }
        v if is_null(v) => Value::Null,
        LuaValue::Table(t) => {
            let inner = depth_left
                .checked_sub(1)
                .ok_or("tables nested too deep (or a table that contains itself)".to_string())?;
            let mut entries: Vec<(RawKey, Value)> = Vec::new();
            // for_each reads raw (lua_next) and converts each pair at once, so no more than a
            // few Lua references are alive however large the table is.
            let mut failure = None;
            t.for_each(|k: LuaValue, v: LuaValue| {
                let key = match &k {
                    LuaValue::Integer(i) => RawKey::Index(*i),
                    LuaValue::Number(n) => {
                        let text = super::node::number_key_text(*n);
                        if let Err(e) = room.take(text.len()) {
                            failure = Some(e);
                            return Err(mlua::Error::runtime("stop"));
                        }
                        RawKey::Text(Value::Text(text))
                    }
                    LuaValue::String(_) => match convert(lua, &k, 0, room) {
                        Ok(key) => RawKey::Text(key),
                        Err(e) => {
                            failure = Some(e);
                            return Err(mlua::Error::runtime("stop"));
                        }
                    },
                    other => {
                        failure = Some(format!(
                            "a table key of type {} has no JSON/CBOR form",
                            lua_type(other)
                        ));
                        return Err(mlua::Error::runtime("stop"));
                    }
                };
                match convert(lua, &v, inner, room) {
                    Ok(v) => {
                        entries.push((key, v));
                        Ok(())
                    }
                    Err(e) => {
                        failure = Some(e);
                        Err(mlua::Error::runtime("stop"))
                    }
                }
            })
            .map_err(|e| failure.take().unwrap_or_else(|| e.to_string()))?;
            table_value(entries)?
        }
        other => return Err(format!("a {} has no JSON/CBOR form", lua_type(other))),
    })
}

/// The JSON type a table is copied as (see [`table_value`]), from its keys alone: `"array"`
/// when they are exactly 1..n, `"object"` otherwise. Nothing is copied, so this answers for
/// a table of any size and whatever its values hold.
pub(crate) fn table_type_name(t: &mlua::Table) -> &'static str {
    let (mut count, mut largest) = (0i64, 0i64);
    let walked = t.for_each(|k: LuaValue, _: LuaValue| match k {
        LuaValue::Integer(i) if i >= 1 => {
            count += 1;
            largest = largest.max(i);
            Ok(())
        }
        _ => Err(mlua::Error::runtime("not an index")),
    });
    // Distinct keys, all in 1..: exactly 1..n when the largest is their number.
    if walked.is_ok() && count > 0 && largest == count {
        "array"
    } else {
        "object"
    }
}

/// For a table whose keys are all positive whole numbers but not exactly 1..n (`{1, nil, 3}`,
/// an object by the rule above): the first index it lacks, for an error that says so rather
/// than "named keys". None for any other value.
pub(crate) fn array_hole(v: &LuaValue) -> Option<i64> {
    let LuaValue::Table(t) = v else {
        return None;
    };
    let mut keys = Vec::new();
    t.for_each(|k: LuaValue, _: LuaValue| match k {
        LuaValue::Integer(i) if i >= 1 => {
            keys.push(i);
            Ok(())
        }
        _ => Err(mlua::Error::runtime("not an index")),
    })
    .ok()?;
    keys.sort_unstable();
    let hole = (1..)
        .zip(&keys)
        .find(|(want, &k)| *want != k)
        .map(|(want, _)| want)?;
    Some(hole)
}

/// Array when the keys are exactly 1..n, object otherwise. Two keys that write the same (`[1]`
/// and `["1"]`, or two numbers equal to 14 digits) would be one key given twice (RFC 8949 5.6):
/// an error, rather than a map whose receiver keeps either value.
fn table_value(mut entries: Vec<(RawKey, Value)>) -> Result<Value, String> {
    let n = entries.len() as i64;
    let is_array = n > 0
        && entries
            .iter()
            .all(|(k, _)| matches!(k, RawKey::Index(i) if (1..=n).contains(i)));
    if is_array {
        // Keys are distinct (table keys are) and all in 1..=n, so this is a permutation.
        entries.sort_by_key(|(k, _)| match k {
            RawKey::Index(i) => *i,
            RawKey::Text(_) => 0,
        });
        return Ok(Value::Array(entries.into_iter().map(|(_, v)| v).collect()));
    }
    let mut members: Vec<(Value, Value)> = entries
        .into_iter()
        .map(|(k, v)| match k {
            // As Lua writes the number (an integer key comes from a double in LuaJIT).
            RawKey::Index(i) => (Value::Text(super::node::number_key_text(i as f64)), v),
            RawKey::Text(k) => (k, v),
        })
        .collect();
    members.sort_by(|(a, _), (b, _)| key_bytes(a).cmp(key_bytes(b)));
    if let Some(twice) = members
        .windows(2)
        .find(|w| key_bytes(&w[0].0) == key_bytes(&w[1].0))
    {
        return Err(format!(
            "two keys of a table both write as the key {} (a number key is written as \
             tostring writes it)",
            crate::log::shown(&String::from_utf8_lossy(key_bytes(&twice[0].0)))
        ));
    }
    Ok(Value::Map(members))
}

fn key_bytes(k: &Value) -> &[u8] {
    match k {
        Value::Text(s) => s.as_bytes(),
        Value::Bytes(b) => b,
        _ => &[],
    }
}
