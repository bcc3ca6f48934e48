//! The `nljson` Lua module (SPEC section 2, API in `docs/nljson.md`) and the userdata that
//! decoded objects and arrays live in.
//!
//! Every function returns its value, or `nil, "error message"` for bad input: an app's mistake
//! or a bad document never raises. The metamethods of nljson values (`v[k] = x` with a key that
//! cannot be stored, for instance) raise, as Lua's own operators do, since they cannot return an
//! error.
//!
//! This module owns the Lua surface; it must never hold a borrow of a tree while it calls a Lua
//! function (see `node`).

use mlua::{Function, Lua, MultiValue, Value as LuaValue};

use super::json_ud::{self, NoNode};
use super::lua::{
    array_hole, budget_for, from_lua_with, into_lua, is_null, lua_type, node_to_lua, null,
};
use super::node::{slot_cost, tree_cost, value_text_len, Key, Node};
use super::value::{Limits, Value};
use super::{cbor, json, tree_budget};

/// An nljson object or array: a handle on a shared container (never a scalar).
#[derive(Clone, Debug)]
pub struct Json(pub(crate) Node);

impl Json {
    /// A deep copy of the container as a [`Value`].
    pub fn to_value(&self) -> Result<Value, String> {
        self.0.to_value(Limits::default().max_depth)
    }
}

/// A Lua key as a lookup key; `None` for keys nljson containers cannot have.
fn key_of(k: &LuaValue) -> Option<KeyBuf> {
    match k {
        LuaValue::Integer(i) => Some(KeyBuf::Num(*i as f64)),
        LuaValue::Number(n) => Some(KeyBuf::Num(*n)),
        LuaValue::String(s) => Some(KeyBuf::Str(s.as_bytes().to_vec())),
        _ => None,
    }
}

/// An owned [`Key`] (Lua string bytes are borrowed from the state only briefly).
enum KeyBuf {
    Str(Vec<u8>),
    Num(f64),
}

impl KeyBuf {
    fn key(&self) -> Key<'_> {
        match self {
            KeyBuf::Str(b) => Key::Str(b),
            KeyBuf::Num(n) => Key::Num(*n),
        }
    }
}

fn type_name(node: &Node) -> &'static str {
    match node {
        Node::Array(_) => "array",
        Node::Object(_) => "object",
        Node::Scalar(v) => v.type_name(),
    }
}

/// Creates the metatable of nljson values in this state if it is not there yet (the hot
/// metamethods are C functions in `json_ud`; these three convert Lua values through mlua).
pub(crate) fn ensure_metatable(lua: &Lua) -> mlua::Result<()> {
    if json_ud::has_metatable(lua) {
        return Ok(());
    }
    let newindex = lua.create_function(|lua, (this, k, v): (LuaValue, LuaValue, LuaValue)| {
        let node = as_json(lua, &this).map_err(|e| mlua::Error::runtime(format!("nljson: {e}")))?;
        let key = key_of(&k).ok_or_else(|| {
            mlua::Error::runtime(format!(
                "nljson: a key of type {} cannot index a {}",
                lua_type(&k),
                type_name(&node)
            ))
        })?;
        let value = match v {
            LuaValue::Nil => None,
            v => {
                let v = from_lua_with(lua, &v, &Limits::default())
                    .map_err(|e| mlua::Error::runtime(format!("nljson: {e}")))?;
                let key_text = match &key {
                    KeyBuf::Str(b) => b.len(),
                    KeyBuf::Num(_) => 24,
                };
                let cost = tree_cost(&v).saturating_add(slot_cost(key_text, value_text_len(&v)));
                budget_for(lua, cost).map_err(|e| mlua::Error::runtime(format!("nljson: {e}")))?;
                Some(Node::from_value(v))
            }
        };
        node.set(key.key(), value)
            .map_err(|e| mlua::Error::runtime(format!("nljson: {e}")))
    })?;
    let tostring = lua.create_function(|lua, this: LuaValue| {
        let node = as_json(lua, &this).map_err(|e| mlua::Error::runtime(format!("nljson: {e}")))?;
        let style = json::Style {
            indent: None,
            lossy: true,
            max_output: tree_budget::room_at_most(),
        };
        node.to_value(Limits::default().max_depth)
            .and_then(|v| json::encode_with(&v, style))
            .map_err(|e| mlua::Error::runtime(format!("nljson: {e}")))
    })?;
    let eq = lua.create_function(|lua, (a, b): (LuaValue, LuaValue)| {
        Ok(match (as_json(lua, &a), as_json(lua, &b)) {
            (Ok(a), Ok(b)) => a.same(&b),
            (Err(e @ NoNode::OutOfMemory), _) | (_, Err(e @ NoNode::OutOfMemory)) => {
                return Err(mlua::Error::runtime(format!("nljson: {e}")))
            }
            _ => false,
        })
    })?;
    // Their errors reach the app as strings, as every host function's do.
    let strings = |f| crate::service::lua::error_values::raising_strings(lua, f);
    json_ud::install_metatable(lua, strings(newindex)?, strings(tostring)?, strings(eq)?)
}

/// The container behind an nljson value.
fn as_json(lua: &Lua, v: &LuaValue) -> Result<Node, NoNode> {
    json_ud::node_of(lua, v)
}

fn ok(v: LuaValue) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from(vec![v]))
}

fn fail(lua: &Lua, msg: impl AsRef<str>) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from(vec![
        LuaValue::Nil,
        LuaValue::String(lua.create_string(msg.as_ref())?),
    ]))
}

/// `Ok(value)` as `value`, `Err(msg)` as `nil, "nljson.<name>: msg"`.
fn answer(lua: &Lua, name: &str, r: Result<LuaValue, String>) -> mlua::Result<MultiValue> {
    match r {
        Ok(v) => ok(v),
        Err(e) => fail(lua, format!("nljson.{name}: {e}")),
    }
}

/// Decoding limits for a tree the state is to hold: no more items than its memory limit
/// could ever take (every item but the root is charged at least `KEPT_PER_ITEM`, see
/// `node::tree_cost`), so that a text too large for it is refused while it is parsed, before
/// its tree takes memory outside the state (~40 MiB for 2^20 values of a 2 MiB text, whatever
/// the limit).
struct WithinLimit {
    limits: Limits,
    /// The item count was lowered to the memory limit's.
    lowered: bool,
}

impl WithinLimit {
    fn of(limits: &Limits) -> WithinLimit {
        let most = match tree_budget::limit() {
            0 => usize::MAX,
            limit => limit / tree_budget::KEPT_PER_ITEM + 1,
        };
        WithinLimit {
            limits: Limits {
                max_total_items: limits.max_total_items.min(most),
                ..*limits
            },
            lowered: most < limits.max_total_items,
        }
    }

    /// A decoding's result, its refusal for the lowered count told as what it is.
    fn check(&self, r: Result<Value, String>) -> Result<Value, String> {
        let count = format!("more than {} values", self.limits.max_total_items);
        r.map_err(|e| match self.lowered && e.contains(&count) {
            true => "not enough memory".to_string(),
            false => e,
        })
    }
}

/// `f` of the bytes of the string `v` (borrowed from the Lua state: a string to decode is
/// measured against the input limit, and parsed, without being copied first).
fn with_string_arg<T>(
    v: &LuaValue,
    what: &str,
    f: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, String> {
    match v {
        LuaValue::String(s) => f(&s.as_bytes()),
        other => Err(format!("expects {what}, got {}", lua_type(other))),
    }
}

fn container_arg(lua: &Lua, v: &LuaValue) -> Result<Node, String> {
    as_json(lua, v).map_err(|e| match e {
        NoNode::Foreign => format!("expects an nljson object or array, got {}", lua_type(v)),
        NoNode::OutOfMemory => e.to_string(),
    })
}

/// A function of the `nljson` table `module`, called either way: `nljson.f(v)`, as the
/// original's apps do, or `nljson:f(v)` (the module itself is no value any function takes:
/// it holds functions, which have no JSON form).
fn module_fn<A, R, F>(lua: &Lua, module: &mlua::Table, f: F) -> mlua::Result<Function>
where
    A: mlua::FromLuaMulti,
    R: mlua::IntoLuaMulti,
    F: Fn(&Lua, A) -> mlua::Result<R> + 'static,
{
    let module = module.clone();
    lua.create_function(move |lua, mut a: MultiValue| {
        if matches!(a.front(), Some(LuaValue::Table(t)) if *t == module) {
            a.pop_front();
        }
        f(lua, A::from_lua_multi(a, lua)?)
    })
}

/// Registers the global `nljson` with the default [`Limits`].
pub fn install(lua: &Lua) -> mlua::Result<()> {
    install_with(lua, Limits::default())
}

/// Registers the global `nljson`, decoding within `limits`.
pub fn install_with(lua: &Lua, limits: Limits) -> mlua::Result<()> {
    let module = create(lua, limits)?;
    lua.globals().set("nljson", module)
}

/// Builds the `nljson` table without registering it.
pub fn create(lua: &Lua, limits: Limits) -> mlua::Result<mlua::Table> {
    ensure_metatable(lua)?;
    let m = lua.create_table()?;
    m.set("null", null())?;

    m.set(
        "decode",
        module_fn(lua, &m, move |lua, s: LuaValue| {
            let within = WithinLimit::of(&limits);
            let r = with_string_arg(&s, "a JSON string", |b| {
                within.check(json::decode_with(b, &within.limits))
            })
            .and_then(|v| into_lua(lua, v).map_err(|e| e.to_string()));
            answer(lua, "decode", r)
        })?,
    )?;

    m.set(
        "decode_file",
        module_fn(lua, &m, move |lua, p: LuaValue| {
            let within = WithinLimit::of(&limits);
            let r = with_string_arg(&p, "a file name", |p| read_file(p, &limits))
                .and_then(|b| within.check(json::decode_with(&b, &within.limits)))
                .and_then(|v| into_lua(lua, v).map_err(|e| e.to_string()));
            answer(lua, "decode_file", r)
        })?,
    )?;

    m.set(
        "encode",
        module_fn(lua, &m, move |lua, v: LuaValue| {
            let r = from_lua_with(lua, &v, &limits)
                .and_then(|v| {
                    let style = json::Style {
                        max_output: tree_budget::room_at_most(),
                        ..Default::default()
                    };
                    json::encode_with(&v, style)
                })
                .and_then(|s| lua.create_string(s).map_err(|e| e.to_string()))
                .map(LuaValue::String);
            answer(lua, "encode", r)
        })?,
    )?;

    m.set(
        "encode_pretty",
        module_fn(lua, &m, move |lua, (v, indent): (LuaValue, LuaValue)| {
            // Any other type is an answer too (nil, error), not a raise, as for every nljson
            // function.
            let indent = match indent {
                LuaValue::Nil => 2.0,
                LuaValue::Integer(i) => i as f64,
                LuaValue::Number(n) => n,
                _ => f64::NAN,
            };
            let r = if !(0.0..=64.0).contains(&indent) || indent.fract() != 0.0 {
                Err("indent must be an integer in 0..64".to_string())
            } else {
                let style = json::Style {
                    indent: (indent > 0.0).then_some(indent as usize),
                    lossy: false,
                    max_output: tree_budget::room_at_most(),
                };
                from_lua_with(lua, &v, &limits)
                    .and_then(|v| json::encode_with(&v, style))
                    .and_then(|s| lua.create_string(s).map_err(|e| e.to_string()))
                    .map(LuaValue::String)
            };
            answer(lua, "encode_pretty", r)
        })?,
    )?;

    m.set(
        "to_cbor",
        module_fn(lua, &m, move |lua, v: LuaValue| {
            let r = from_lua_with(lua, &v, &limits)
                .map(|v| cbor::encode(&v))
                .and_then(|b| lua.create_string(b).map_err(|e| e.to_string()))
                .map(LuaValue::String);
            answer(lua, "to_cbor", r)
        })?,
    )?;

    m.set(
        "from_cbor",
        module_fn(lua, &m, move |lua, s: LuaValue| {
            let within = WithinLimit::of(&limits);
            let r = with_string_arg(&s, "a string of CBOR bytes", |b| {
                within.check(cbor::decode_with(b, &within.limits).map_err(|e| e.to_string()))
            })
            .and_then(|v| into_lua(lua, v).map_err(|e| e.to_string()));
            answer(lua, "from_cbor", r)
        })?,
    )?;

    m.set(
        "find",
        module_fn(lua, &m, |lua, (v, k): (LuaValue, LuaValue)| {
            let node = match container_arg(lua, &v) {
                Ok(n) => n,
                Err(e) => return fail(lua, format!("nljson.find: {e}")),
            };
            let Some(key) = key_of(&k) else {
                return fail(
                    lua,
                    format!(
                        "nljson.find: a key is a string or number, got {}",
                        lua_type(&k)
                    ),
                );
            };
            match node.get(key.key()).map(|n| node_to_lua(lua, n)) {
                Some(Ok(v)) => ok(v),
                // No room in the state for the value found: an answer, as for every nljson
                // function, not a raise.
                Some(Err(e)) => fail(lua, format!("nljson.find: {e}")),
                None => ok(LuaValue::Nil),
            }
        })?,
    )?;

    m.set(
        "erase",
        module_fn(lua, &m, |lua, (v, k): (LuaValue, LuaValue)| {
            let node = match container_arg(lua, &v) {
                Ok(n) => n,
                Err(e) => return fail(lua, format!("nljson.erase: {e}")),
            };
            let erased = key_of(&k).is_some_and(|k| node.erase(k.key()));
            ok(LuaValue::Boolean(erased))
        })?,
    )?;

    m.set(
        "empty",
        module_fn(lua, &m, |lua, v: LuaValue| {
            let empty = match &v {
                LuaValue::Nil => true,
                v if is_null(v) => true,
                LuaValue::Table(t) => t.is_empty(),
                LuaValue::UserData(_) => match container_arg(lua, &v) {
                    Ok(n) => n.len() == 0,
                    Err(e) => return fail(lua, format!("nljson.empty: {e}")),
                },
                _ => false,
            };
            ok(LuaValue::Boolean(empty))
        })?,
    )?;

    m.set(
        "typename",
        module_fn(lua, &m, move |lua, v: LuaValue| {
            let name = match &v {
                // Another module's userdata (a queue, a nap) is no nljson value at all.
                LuaValue::UserData(_) => match as_json(lua, &v) {
                    Ok(n) => Ok(type_name(&n)),
                    Err(NoNode::Foreign) => {
                        Err("a userdata of another module has no JSON type".into())
                    }
                    Err(e) => Err(e.to_string()),
                },
                LuaValue::Table(t) => Ok(super::lua::table_type_name(t)),
                LuaValue::Nil => Ok("null"),
                v if is_null(v) => Ok("null"),
                LuaValue::Boolean(_) => Ok("boolean"),
                LuaValue::Integer(_) | LuaValue::Number(_) => Ok("number"),
                LuaValue::String(_) => Ok("string"),
                other => Err(format!("a {} has no JSON type", lua_type(other))),
            };
            let r = name.and_then(|n| {
                lua.create_string(n)
                    .map(LuaValue::String)
                    .map_err(|e| e.to_string())
            });
            answer(lua, "typename", r)
        })?,
    )?;

    m.set(
        "foreach",
        module_fn(lua, &m, |lua, (v, f): (LuaValue, LuaValue)| {
            let node = match container_arg(lua, &v) {
                Ok(n) => n,
                Err(e) => return fail(lua, format!("nljson.foreach: {e}")),
            };
            let LuaValue::Function(f) = f else {
                return fail(
                    lua,
                    "nljson.foreach: expects a function as its second argument",
                );
            };
            // A snapshot: the callback may change the container while we walk it.
            for (k, n) in node.entries() {
                // A key or value the state has no room for is an answer, as for every nljson
                // function, not a raise.
                let kv = into_lua(lua, k).and_then(|k| Ok((k, node_to_lua(lua, n)?)));
                let (k, v) = match kv {
                    Ok(kv) => kv,
                    Err(e) => return fail(lua, format!("nljson.foreach: {e}")),
                };
                match f.call::<LuaValue>((k, v)) {
                    Ok(LuaValue::Boolean(false)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        let e = crate::service::lua::error_values::text(&e);
                        return fail(lua, format!("nljson.foreach: callback failed: {e}"));
                    }
                }
            }
            ok(LuaValue::Boolean(true))
        })?,
    )?;

    m.set("array", constructor(lua, &m, limits, true)?)?;
    m.set("object", constructor(lua, &m, limits, false)?)?;
    Ok(m)
}

/// `nljson.array([t])` / `nljson.object([t])`: an empty container of that kind, or `t`
/// converted and forced to that kind (an empty table or `{}`-shaped input).
fn constructor(
    lua: &Lua,
    module: &mlua::Table,
    limits: Limits,
    array: bool,
) -> mlua::Result<Function> {
    let name = if array { "array" } else { "object" };
    module_fn(lua, module, move |lua, t: Option<LuaValue>| {
        let v = match &t {
            None | Some(LuaValue::Nil) => Ok(Value::Map(Vec::new())),
            Some(t @ (LuaValue::Table(_) | LuaValue::UserData(_))) => {
                from_lua_with(lua, t, &limits)
            }
            Some(other) => Err(format!("expects a table, got {}", lua_type(other))),
        };
        let v = v.and_then(|v| match (v, array) {
            (Value::Map(m), true) if m.is_empty() => Ok(Value::Array(Vec::new())),
            (Value::Array(a), false) if a.is_empty() => Ok(Value::Map(Vec::new())),
            (v @ Value::Array(_), true) | (v @ Value::Map(_), false) => Ok(v),
            (v, _) => Err(match (array, t.as_ref().and_then(array_hole)) {
                (true, Some(i)) => format!(
                    "a table without element {i} is not an array (an array's keys are exactly \
                     1..n: store nljson.null for a missing element)"
                ),
                _ => format!("a table shaped as an {} is not an {name}", v.type_name()),
            }),
        });
        let r = v.and_then(|v| into_lua(lua, v).map_err(|e| e.to_string()));
        answer(lua, name, r)
    })
}

/// Reads a whole file, refusing ones larger than the input limit before reading them.
fn read_file(path: &[u8], limits: &Limits) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    let cap = limits.max_input as u64;
    file.take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if out.len() as u64 > cap {
        return Err(format!(
            "{}: larger than the limit of {} bytes",
            path.display(),
            limits.max_input
        ));
    }
    Ok(out)
}
