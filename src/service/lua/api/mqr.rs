//! `mqr`: the Lua face of the process-wide message queues ([`crate::service::mqr`]).
//!
//! Owns argument checking and the translation of queue outcomes into `value` or
//! `nil, "message"`. A posted Lua string is copied once into an owned buffer that moves through
//! the queue; the receiver turns that buffer into its own Lua string (the one copy into the
//! receiving state). An nljson value (the original's only form of message) is encoded once, as
//! CBOR, and the receiver gets an nljson value back. Blocking calls hand over what the instance
//! sent before they wait, never wait once the service is stopping or in a network service, and
//! start a new instruction-budget slice afterwards.
//! Nothing here drops a message: a post that is not accepted says so.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, MultiValue, Table, UserData, UserDataFields, Value};

use super::{fail, method_table, ok, this, Ret};
use crate::lapps_proto::json_ud::{self, NoNode};
use crate::lapps_proto::node::{tree_cost, CopyRoom};
use crate::lapps_proto::value::{Limits, Value as CborValue};
use crate::lapps_proto::{cbor, lua as lapps_lua};
use crate::service::lua::host::HostCtx;
use crate::service::mqr::{
    registry, Kind, Message, Queue, Wait, MAX_CAPACITY, MAX_QUEUES, MAX_SLOTS,
};

/// Longest accepted queue name, in bytes.
const MAX_NAME: usize = 256;

/// What one state knows: its host and the queues it already looked up.
struct Ctx {
    host: Rc<HostCtx>,
    default_capacity: usize,
    known: RefCell<HashMap<String, Arc<Queue>>>,
    /// Per queue name: a message this state took but could not make a Lua value of (its
    /// memory limit); the next receive or poll of that queue here returns it first.
    held: RefCell<HashMap<String, Message>>,
}

impl Drop for Ctx {
    /// The state is going (its service stops, or its `run()` failed and restarts): a message
    /// it took and never delivered goes back to the front of its queue, so that an accepted
    /// message is neither lost with the state nor overtaken by what its sender posted after it.
    fn drop(&mut self) {
        for (name, m) in self.held.get_mut().drain() {
            match registry().get(&name) {
                Some(q) => {
                    q.put_back(m);
                    q.unhold();
                }
                // Queues are never removed: only a queue from another registry could be gone.
                None => crate::error!(
                    "{} mqr: a message of {} bytes taken from queue {} has no queue to go back to: lost",
                    self.host.tag(),
                    m.len(),
                    crate::log::shown(&name)
                ),
            }
        }
    }
}

impl Ctx {
    /// The queue `name` if some service created it.
    fn existing(&self, name: &str) -> Option<Arc<Queue>> {
        if let Some(q) = self.known.borrow().get(name) {
            return Some(Arc::clone(q));
        }
        registry().get(name)
    }

    /// The queue `name`, created with `capacity` if no service made it yet; `Err` (and a log
    /// line) when the process's queues are at their limits (`mqr::MAX_QUEUES`, `MAX_SLOTS`).
    fn queue(&self, name: &str, capacity: usize) -> Result<Arc<Queue>, &'static str> {
        if let Some(q) = self.known.borrow().get(name) {
            return Ok(Arc::clone(q));
        }
        let q = registry().try_open(name, capacity).inspect_err(|_| {
            crate::service_log!(
                self.host,
                crate::log::Level::Warn,
                "{} mqr: queue {} not created: the process has as many queues as it may \
                 ({} queues, {} ring slots in all)",
                self.host.tag(),
                crate::log::shown(name),
                MAX_QUEUES,
                MAX_SLOTS
            );
        })?;
        self.known
            .borrow_mut()
            .insert(name.to_string(), Arc::clone(&q));
        Ok(q)
    }

    fn post(&self, lua: &Lua, q: &Queue, msg: Posted, timeout: Option<Duration>) -> Ret {
        if !q.fits(msg.len()) {
            return Ret(Value::Nil, Some("too big"));
        }
        let Some(owned) = msg.into_message() else {
            return Ret(Value::Nil, Some("too big"));
        };
        // A network service never waits (as with `receive`): waiting for room would stall every
        // connection of the instance, so its timeout is not used and the post is tried once.
        let timeout = timeout.filter(|_| self.host.may_block());
        let Some(timeout) = timeout else {
            return match q.try_post(owned) {
                Ok(()) => Ret(Value::Boolean(true), None),
                Err(_) => {
                    q.count_refused();
                    Ret(Value::Nil, Some("full"))
                }
            };
        };
        self.host.before_wait(lua);
        let stop = &self.host.stop;
        let r = q.post(owned, timeout, &|| stop.is_set());
        self.host.polling_point(lua);
        match r {
            Ok(()) => Ret(Value::Boolean(true), None),
            Err((_, Wait::Timeout)) => {
                q.count_refused();
                Ret(Value::Nil, Some("full"))
            }
            Err((_, Wait::Stopped)) => Ret(Value::Nil, Some("stopped")),
        }
    }

    /// The next message of `q` without waiting: a held one first. None for a version a
    /// redeploy replaces: it leaves the queue to the new one (a held message goes back when
    /// its state closes).
    fn poll(&self, q: &Queue) -> Option<Message> {
        if self.host.stop.handing_over() {
            return None;
        }
        match self.held.borrow_mut().remove(q.name()) {
            Some(m) => {
                q.unhold();
                Some(m)
            }
            None => q.poll(),
        }
    }

    /// `m`, taken from `q`, as a Lua string (or nljson value). When the state cannot hold it
    /// even after a full collection, the error goes to the app and the message is kept for its
    /// next receive: an accepted message is not lost for want of memory the app may still
    /// free. A message larger than the state could ever hold (its memory limit less what it
    /// took once its app was loaded; for an nljson value, what its tree takes) is dropped with
    /// an error in the log and the app gets `nil, "too big"`, so that the messages behind it
    /// still reach this instance.
    fn deliver(&self, lua: &Lua, q: &Queue, m: Message) -> mlua::Result<Ret> {
        let room = crate::lapps_proto::tree_budget::room_at_most();
        let decoded = match m.kind() {
            Kind::Bytes => None,
            Kind::Nljson => match decode_nljson(&m) {
                Ok(v) => Some(v),
                // Not a value this state can hold (it is this process's own encoding, so
                // this is not expected): dropped, as a message too big is.
                Err(e) => {
                    crate::error!(
                        "{} mqr: an nljson message of {} bytes from queue {} cannot be decoded ({e}): dropped",
                        self.host.tag(),
                        m.len(),
                        crate::log::shown(q.name())
                    );
                    return fail("too big");
                }
            },
        };
        // An nljson message's bytes are compact; its tree in the state is what must fit.
        let (size, what) = match &decoded {
            None => (m.len(), "bytes"),
            Some(v) => (tree_cost(v), "bytes as an nljson value"),
        };
        if let Some(room) = room.filter(|&r| size >= r) {
            crate::error!(
                "{} mqr: a message of {size} {what} from queue {} is larger than this service's memory_limit leaves room for ({room} bytes): dropped",
                self.host.tag(),
                crate::log::shown(q.name())
            );
            return fail("too big");
        }
        let make = |decoded: Option<CborValue>| match decoded {
            None => lua.create_string(&*m).map(Value::String),
            Some(v) => lapps_lua::into_lua(lua, v),
        };
        let v = make(decoded).or_else(|_| {
            lua.gc_collect()?;
            // Decoded again only for this second try: into_lua took the first value.
            let again = match m.kind() {
                Kind::Bytes => None,
                Kind::Nljson => Some(decode_nljson(&m).map_err(mlua::Error::external)?),
            };
            make(again)
        });
        match v {
            Ok(v) => ok(v),
            Err(e) => {
                q.hold();
                self.held.borrow_mut().insert(q.name().to_string(), m);
                Err(e)
            }
        }
    }

    fn receive(&self, lua: &Lua, q: &Queue, timeout: Option<Duration>) -> mlua::Result<Ret> {
        if let Some(m) = self.poll(q) {
            // A receive is a polling point whether or not it had to wait: a loop draining a
            // busy queue must not run out of budget.
            self.host.polling_point(lua);
            return self.deliver(lua, q, m);
        }
        if !self.host.may_block() {
            // An empty queue in a network service: waiting would stall its connections.
            return fail("would block");
        }
        if self.host.stop.handing_over() {
            return fail("stopped");
        }
        self.host.before_wait(lua);
        let stop = &self.host.stop;
        // No timeout: wait until a message comes or the service stops.
        let r = q.receive(timeout.unwrap_or(Duration::MAX), &|| stop.is_set());
        self.host.polling_point(lua);
        match r {
            // A post that came while a redeploy stopped this version, before this receive
            // saw the stop: the message is the new version's, first in line (as in `poll`).
            Ok(m) if stop.handing_over() => {
                q.put_back(m);
                fail("stopped")
            }
            Ok(m) => self.deliver(lua, q, m),
            Err(Wait::Timeout) => fail("timeout"),
            Err(Wait::Stopped) => fail("stopped"),
        }
    }
}

/// The object `mqr:create` returns: the same operations bound to one queue.
struct LuaQueue {
    ctx: Rc<Ctx>,
    queue: Arc<Queue>,
}

impl UserData for LuaQueue {
    fn add_fields<F: UserDataFields<Self>>(f: &mut F) {
        f.add_meta_field_with("__index", |lua| {
            let post = lua.create_function(|lua, a: MultiValue| -> mlua::Result<Ret> {
                let this = this::<LuaQueue>(&a, "q", "post")?;
                let msg = message_arg(lua, "q:post", 1, a.get(1))?;
                let Ok(timeout) = timeout_arg(a.get(2).unwrap_or(&Value::Nil)) else {
                    return fail("bad timeout");
                };
                Ok(this.ctx.post(lua, &this.queue, msg, timeout))
            })?;
            let mut methods = vec![("post", post)];
            for name in ["receive", "recv"] {
                let m = lua.create_function(move |lua, a: MultiValue| -> mlua::Result<Ret> {
                    let this = this::<LuaQueue>(&a, "q", name)?;
                    let Ok(timeout) = timeout_arg(a.get(1).unwrap_or(&Value::Nil)) else {
                        return fail("bad timeout");
                    };
                    this.ctx.receive(lua, &this.queue, timeout)
                })?;
                methods.push((name, m));
            }
            // `try_recv` is the original's name.
            for name in ["poll", "try_recv"] {
                let m = lua.create_function(move |lua, a: MultiValue| -> mlua::Result<Ret> {
                    let this = this::<LuaQueue>(&a, "q", name)?;
                    match this.ctx.poll(&this.queue) {
                        Some(msg) => this.ctx.deliver(lua, &this.queue, msg),
                        None => Ok(Ret(Value::Nil, None)),
                    }
                })?;
                methods.push((name, m));
            }
            let size = lua.create_function(|_, a: MultiValue| {
                Ok(this::<LuaQueue>(&a, "q", "size")?.queue.len())
            })?;
            let capacity = lua.create_function(|_, a: MultiValue| {
                Ok(this::<LuaQueue>(&a, "q", "capacity")?.queue.capacity())
            })?;
            let name = lua.create_function(|_, a: MultiValue| {
                Ok(this::<LuaQueue>(&a, "q", "name")?.queue.name().to_string())
            })?;
            methods.extend([("size", size), ("capacity", capacity), ("name", name)]);
            method_table(lua, methods)
        });
    }
}

/// `nil` (no timeout) or a non-negative number of seconds, at most 10^9 (`math.huge` too: the
/// longest wait there is, not an error that a "wait for ever" loop would spin on).
fn timeout_arg(v: &Value) -> Result<Option<Duration>, ()> {
    let secs = match *v {
        Value::Nil => return Ok(None),
        Value::Integer(i) => i as f64,
        Value::Number(f) => f,
        _ => return Err(()),
    };
    if secs.is_nan() || secs < 0.0 {
        return Err(());
    }
    Ok(Some(Duration::from_secs_f64(secs.min(1e9))))
}

/// Accepts both `mqr:f(...)` and `mqr.f(...)` (the original's examples use the dot form): the
/// `mqr` table itself first is dropped; any other table stays, for the error that names it.
fn args(module: &Table, mut a: MultiValue) -> MultiValue {
    if matches!(a.front(), Some(Value::Table(t)) if t == module) {
        a.pop_front();
    }
    a
}

/// The queue name argument of `function` (named in the error a wrong type raises).
fn name_arg(function: &str, v: Option<&Value>) -> mlua::Result<Option<String>> {
    match v {
        Some(Value::String(s)) => {
            let Ok(s) = s.to_str() else {
                return Ok(None);
            };
            Ok((!s.is_empty() && s.len() <= MAX_NAME).then(|| s.to_string()))
        }
        other => Err(mlua::Error::runtime(format!(
            "bad argument #1 to '{function}' (queue name expected, got {})",
            other.map_or("no value", lapps_lua::lua_type)
        ))),
    }
}

/// A message as posted: a Lua string (copied into the queue only once it may fit) or an
/// nljson value, already encoded.
enum Posted {
    Text(mlua::String),
    Nljson(Vec<u8>),
    /// An nljson value with more values, or deeper, than one copy may take
    /// (`Limits::default()`): answered `nil, "too big"`.
    TooBig,
}

impl Posted {
    fn len(&self) -> usize {
        match self {
            Posted::Text(s) => s.as_bytes().len(),
            Posted::Nljson(b) => b.len(),
            Posted::TooBig => usize::MAX,
        }
    }

    /// The message to queue (`None` for [`Posted::TooBig`]).
    fn into_message(self) -> Option<Message> {
        match self {
            Posted::Text(s) => Some(Message::new((*s.as_bytes()).into(), Kind::Bytes)),
            Posted::Nljson(b) => Some(Message::new(b.into_boxed_slice(), Kind::Nljson)),
            Posted::TooBig => None,
        }
    }
}

/// The message argument of `function`, its argument number `pos`.
fn message_arg(lua: &Lua, function: &str, pos: u8, v: Option<&Value>) -> mlua::Result<Posted> {
    let wrong = |v: Option<&Value>| {
        mlua::Error::runtime(format!(
            "bad argument #{pos} to '{function}' (string or nljson object or array expected, \
             got {})",
            v.map_or("no value", lapps_lua::lua_type)
        ))
    };
    match v {
        Some(Value::String(s)) => Ok(Posted::Text(s.clone())),
        Some(n @ (Value::Integer(_) | Value::Number(_))) => lua
            .coerce_string(n.clone())?
            .map(Posted::Text)
            .ok_or_else(|| wrong(v)),
        Some(u @ Value::UserData(_)) => match json_ud::node_of(lua, u) {
            Ok(node) => {
                // Within the bounds of one copy of a value (as `ws:send` takes one), straight
                // from the tree to CBOR.
                let mut out = Vec::new();
                let limits = Limits::default();
                let mut room = CopyRoom::new(limits.max_total_items, usize::MAX);
                Ok(
                    match node.encode_cbor(&mut out, limits.max_depth, &mut room) {
                        Ok(()) => Posted::Nljson(out),
                        Err(_) => Posted::TooBig,
                    },
                )
            }
            Err(NoNode::OutOfMemory) => Err(mlua::Error::MemoryError("not enough memory".into())),
            Err(NoNode::Foreign) => Err(wrong(v)),
        },
        other => Err(wrong(other)),
    }
}

/// The value of a message posted as an nljson value. The bytes are this process's own
/// encoding of a value the sender could copy (at most `Limits::default()`'s values and
/// nesting), so the input size and container length are not bounded again here.
fn decode_nljson(m: &Message) -> Result<CborValue, cbor::DecodeError> {
    let limits = Limits {
        max_container_len: usize::MAX,
        max_input: usize::MAX,
        ..Limits::default()
    };
    cbor::decode_with(m, &limits)
}

pub(crate) fn install(lua: &Lua, host: &Rc<HostCtx>, default_capacity: usize) -> mlua::Result<()> {
    let ctx = Rc::new(Ctx {
        host: Rc::clone(host),
        default_capacity: default_capacity.clamp(1, MAX_CAPACITY),
        known: RefCell::new(HashMap::new()),
        held: RefCell::new(HashMap::new()),
    });
    let t = lua.create_table()?;

    let c = Rc::clone(&ctx);
    let module = t.clone();
    t.set(
        "create",
        lua.create_function(move |lua, a: MultiValue| -> mlua::Result<Ret> {
            let a = args(&module, a);
            let Some(name) = name_arg("mqr:create", a.front())? else {
                return fail("bad queue name");
            };
            let capacity = match a.get(1) {
                None | Some(Value::Nil) => c.default_capacity,
                Some(Value::Integer(n)) if (1..=MAX_CAPACITY as i64).contains(n) => *n as usize,
                Some(Value::Number(n))
                    if n.fract() == 0.0 && *n >= 1.0 && *n <= MAX_CAPACITY as f64 =>
                {
                    *n as usize
                }
                Some(_) => return fail("bad capacity"),
            };
            let queue = match c.queue(&name, capacity) {
                Ok(q) => q,
                Err(why) => return fail(why),
            };
            let obj = LuaQueue {
                ctx: Rc::clone(&c),
                queue,
            };
            ok(Value::UserData(lua.create_userdata(obj)?))
        })?,
    )?;

    let c = Rc::clone(&ctx);
    let module = t.clone();
    t.set(
        "post",
        lua.create_function(move |lua, a: MultiValue| -> mlua::Result<Ret> {
            let a = args(&module, a);
            let Some(name) = name_arg("mqr:post", a.front())? else {
                return fail("bad queue name");
            };
            let msg = message_arg(lua, "mqr:post", 2, a.get(1))?;
            let Ok(timeout) = timeout_arg(a.get(2).unwrap_or(&Value::Nil)) else {
                return fail("bad timeout");
            };
            let q = match c.queue(&name, c.default_capacity) {
                Ok(q) => q,
                Err(why) => return fail(why),
            };
            Ok(c.post(lua, &q, msg, timeout))
        })?,
    )?;

    for fname in ["receive", "recv"] {
        let c = Rc::clone(&ctx);
        let module = t.clone();
        t.set(
            fname,
            lua.create_function(move |lua, a: MultiValue| -> mlua::Result<Ret> {
                let a = args(&module, a);
                let Some(name) = name_arg(&format!("mqr:{fname}"), a.front())? else {
                    return fail("bad queue name");
                };
                let Ok(timeout) = timeout_arg(a.get(1).unwrap_or(&Value::Nil)) else {
                    return fail("bad timeout");
                };
                let q = match c.queue(&name, c.default_capacity) {
                    Ok(q) => q,
                    Err(why) => return fail(why),
                };
                c.receive(lua, &q, timeout)
            })?,
        )?;
    }

    let c = Rc::clone(&ctx);
    let module = t.clone();
    t.set(
        "poll",
        lua.create_function(move |lua, a: MultiValue| -> mlua::Result<Ret> {
            let a = args(&module, a);
            let Some(name) = name_arg("mqr:poll", a.front())? else {
                return fail("bad queue name");
            };
            // A queue nobody created is empty: polling it does not create it (queues are
            // never removed, so a loop polling made-up names would grow the table).
            let Some(q) = c.existing(&name) else {
                return ok(Value::Nil);
            };
            match c.poll(&q) {
                Some(m) => c.deliver(lua, &q, m),
                None => ok(Value::Nil),
            }
        })?,
    )?;

    let c = Rc::clone(&ctx);
    let module = t.clone();
    t.set(
        "size",
        lua.create_function(move |_, a: MultiValue| -> mlua::Result<Ret> {
            let a = args(&module, a);
            let Some(name) = name_arg("mqr:size", a.front())? else {
                return fail("bad queue name");
            };
            // Asking does not create: an unknown queue is empty.
            let n = match c.known.borrow().get(&name) {
                Some(q) => q.len(),
                None => registry().get(&name).map_or(0, |q| q.len()),
            };
            ok(Value::Integer(n as i64))
        })?,
    )?;

    lua.globals().set("mqr", t)
}
