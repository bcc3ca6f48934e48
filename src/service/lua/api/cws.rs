//! `cws`: WebSocket client connections of one instance, driven by `cws:eventLoop()`.
//!
//! Owns the instance's client connections (by handler number), their Lua callbacks and the
//! poll(2) round over their sockets. Everything runs on the instance thread: `eventLoop`
//! polls, lets each ready connection ([`crate::service::cws::Client`]) turn bytes into events,
//! and only then calls the callbacks, with no borrow held, so a callback may use `cws` freely,
//! except for starting another round: `eventLoop` raises while a round is running.
//! It never blocks longer than the timeout it was given (in slices, so that shutdown is seen)
//! and never lets a callback's Lua error escape the round: it is logged and the round goes on.
//! When the state closes, the connections still open say 1001 "going away" (see `Drop`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{Function, Lua, RegistryKey, Table, Value};
use rustls::ClientConfig;

use super::ws::{close_code_arg, valid_client_close_code};
use super::{fail, ok, Ret};
use crate::lapps_proto::lua as lapps_lua;
use crate::net::assembly::AssemblyBudget;
use crate::service::cws::{
    client_config, trust_stamp, upgrade::Offer, url, Client, Event, KeyPool, TlsOptions, TrustStamp,
};
use crate::service::lua::host::{one_line, HostCtx};
use crate::ws::Opcode;

/// Client connections one instance may hold.
const MAX_CLIENTS: usize = 4096;
/// TLS configs one instance keeps (each holds a parsed CA bundle).
const MAX_TLS_CONFIGS: usize = 16;
/// `eventLoop` without a timeout waits at most this long.
const DEFAULT_WAIT: Duration = Duration::from_millis(100);
/// Longest single poll(2) wait, so that a stopping service is noticed.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// Longest `eventLoop` wait, in seconds (as `nap` and `mqr` clamp theirs): beyond it a deadline
/// would overflow the clock.
const MAX_WAIT_S: u64 = 1_000_000_000;
const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// A server quiet this long is pinged; quiet as long again, the connection fails (the
/// server side's `idle_timeout_ms` default).
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// When the instance ends, how long its connections get, all together, to finish the close
/// handshake (our 1001 "going away", the server's Close) before they are dropped.
const GOING_AWAY_WAIT: Duration = Duration::from_secs(1);
/// What `cws:send` and `cws:close` answer in a network service, where `cws:new` makes none.
const NONE_IN_NETWORK: &str =
    "not in a network service (cws connections are a standalone service's)";

/// A connection's callbacks, kept in the Lua registry: a `Function` held from Rust takes one
/// of the ~8,000 slots of mlua's reference stack, which 4 callbacks on each of 2,000
/// connections ran out of (mlua then panics, and a panic aborts the server). The registry
/// has no such bound; a callback is a `Function` only while it runs.
#[derive(Default)]
struct Callbacks {
    onopen: Option<RegistryKey>,
    onmessage: Option<RegistryKey>,
    onerror: Option<RegistryKey>,
    onclose: Option<RegistryKey>,
}

struct Entry {
    client: Client,
    cb: Rc<Callbacks>,
    _counted: Counted,
}

/// Counts a connection in the service's status line while it exists.
struct Counted(Arc<crate::service::lua::run_state::RunState>);

impl Counted {
    fn new(run_state: &Arc<crate::service::lua::run_state::RunState>) -> Counted {
        run_state.cws_made();
        Counted(Arc::clone(run_state))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.cws_dropped();
    }
}

enum Ev {
    /// With the subprotocol the server chose.
    Open(Option<String>),
    /// The bytes, made a Lua string only right before its callback: a round may hold many
    /// messages, and each Lua value held from Rust takes one of the few thousand slots of
    /// mlua's reference stack (a server sending 8,000 small messages at once ran them out).
    Message(Vec<u8>, Opcode),
    Error(String),
    /// The code and the server's reason.
    Closed(u16, Vec<u8>),
}

/// A TLS config and the stamp of the file it was built from.
type Built = (Option<TrustStamp>, Arc<ClientConfig>);

struct Cws {
    host: Rc<HostCtx>,
    conns: RefCell<BTreeMap<u64, Entry>>,
    keys: RefCell<KeyPool>,
    next: Cell<u64>,
    /// TLS configs by what they trust, with the stamp of its file (see `tls_config`).
    configs: RefCell<HashMap<TlsOptions, Built>>,
    /// Events raised outside a round (a close before the upgrade), delivered by the next one.
    deferred: RefCell<Vec<(u64, Rc<Callbacks>, Ev)>>,
    /// Connections the app closed with `cws:close` whose close is not reported yet: messages
    /// that were read for them are not delivered any more.
    closed_by_app: RefCell<HashSet<u64>>,
    /// A round (`event_loop`) is running, its callbacks included. A nested round could deliver
    /// newer events of a connection before the older ones the outer round still holds.
    in_round: Cell<bool>,
    /// What the messages being received on all these connections may hold together: the
    /// state's memory limit (which they would otherwise not count against), none without one.
    assembly: Arc<AssemblyBudget>,
    /// Handlers `cws:new` returned whose `onclose` has not been called yet (`cws:count()`):
    /// a wait for `count() == 0` ends with every `onclose` run, a deferred one included.
    awaiting_onclose: Cell<usize>,
    /// The message handler the callbacks are called under (`fastpath::call_traced`).
    handler: Function,
}

/// Marks a round as running for its lifetime (cleared however the round ends).
struct RoundGuard<'a>(&'a Cell<bool>);

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// The options `cws:new` knows.
const OPTIONS: [&str; 10] = [
    "onopen",
    "onmessage",
    "onerror",
    "onclose",
    "ca_file",
    "insecure",
    "max_message_size",
    "idle_timeout",
    "protocols",
    "headers",
];

/// Raises for an option `cws:new` does not know: a misspelt callback (`onOpen`) would
/// otherwise never run, and nothing would say why.
fn check_option_names(opts: &Table) -> mlua::Result<()> {
    for pair in opts.pairs::<Value, Value>() {
        let (key, _) = pair?;
        let known = match &key {
            Value::String(k) => OPTIONS
                .iter()
                .any(|o| k.as_bytes().as_ref() == o.as_bytes()),
            _ => false,
        };
        if !known {
            let name = match &key {
                Value::String(k) => format!("'{}'", k.to_string_lossy()),
                other => format!("key of type {}", lapps_lua::lua_type(other)),
            };
            return Err(mlua::Error::runtime(format!(
                "cws:new: unknown option {name} (the options are {})",
                OPTIONS.join(", ")
            )));
        }
    }
    Ok(())
}

/// A number option: a number, or a string that reads as one.
fn number_option(lua: &Lua, opts: &Table, name: &str) -> mlua::Result<Option<f64>> {
    match opts.get::<Value>(name)? {
        Value::Nil => Ok(None),
        Value::Integer(i) => Ok(Some(i as f64)),
        Value::Number(n) => Ok(Some(n)),
        Value::String(s) => match lua.coerce_number(Value::String(s.clone()))? {
            Some(n) => Ok(Some(n)),
            None => Err(mlua::Error::runtime(format!(
                "cws:new: option {name} must be a number, got the string {:?}",
                s.to_string_lossy()
            ))),
        },
        other => Err(mlua::Error::runtime(format!(
            "cws:new: option {name} must be a number, got {}",
            lapps_lua::lua_type(&other)
        ))),
    }
}

/// A string option: a string, or a number taken as its text.
fn string_option(opts: &Table, name: &str) -> mlua::Result<Option<String>> {
    match opts.get::<Value>(name)? {
        Value::Nil => Ok(None),
        Value::String(s) => Ok(Some(s.to_string_lossy())),
        Value::Integer(i) => Ok(Some(i.to_string())),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(mlua::Error::runtime(format!(
            "cws:new: option {name} must be a string, got {}",
            lapps_lua::lua_type(&other)
        ))),
    }
}

/// The `protocols` and `headers` options as the upgrade request's [`Offer`]. A value of the
/// wrong type raises, as for the other options; one the request cannot carry is `Err` with
/// the reason for `nil, "bad ...: reason"`.
fn offer_option(opts: &Table) -> mlua::Result<Result<Offer, String>> {
    let mut offer = Offer::default();
    for p in protocols_option(opts)? {
        if let Err(e) = offer.add_protocol(&p) {
            return Ok(Err(format!("bad protocols: {e}")));
        }
    }
    let fields = match headers_option(opts)? {
        Ok(fields) => fields,
        Err(why) => return Ok(Err(format!("bad headers: {why}"))),
    };
    for (name, value) in fields {
        if let Err(e) = offer.add_header(&name, &value) {
            return Ok(Err(format!("bad headers: {e}")));
        }
    }
    Ok(Ok(offer))
}

fn type_error(what: &str, v: &Value) -> mlua::Error {
    mlua::Error::runtime(format!("cws:new: {what}, got {}", lapps_lua::lua_type(v)))
}

/// `protocols`: one string or an array of strings (none: empty).
fn protocols_option(opts: &Table) -> mlua::Result<Vec<String>> {
    match opts.get::<Value>("protocols")? {
        Value::Nil => Ok(Vec::new()),
        Value::String(p) => Ok(vec![p.to_string_lossy()]),
        Value::Table(t) => {
            let n = t.raw_len();
            if t.clone().pairs::<Value, Value>().count() != n {
                return Err(mlua::Error::runtime(
                    "cws:new: option protocols must be a string or an array of strings \
                     (a table with other keys than 1..n)",
                ));
            }
            (1..=n)
                .map(|i| match t.raw_get::<Value>(i)? {
                    Value::String(p) => Ok(p.to_string_lossy()),
                    other => Err(type_error(
                        &format!("protocols[{i}] must be a string"),
                        &other,
                    )),
                })
                .collect()
        }
        other => Err(type_error(
            "option protocols must be a string or an array of strings",
            &other,
        )),
    }
}

/// `headers`: names and values, sorted by name (Lua's table order is no order: the request is
/// the same for the same table). `Err`: a value that is not UTF-8, which is sent as given or
/// not at all (a lossy conversion would send other bytes).
fn headers_option(opts: &Table) -> mlua::Result<Result<Vec<(String, String)>, String>> {
    let t = match opts.get::<Value>("headers")? {
        Value::Nil => return Ok(Ok(Vec::new())),
        Value::Table(t) => t,
        other => {
            return Err(type_error(
                "option headers must be a table of header field names and values",
                &other,
            ))
        }
    };
    let mut fields = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        let Value::String(name) = k else {
            return Err(type_error("the keys of option headers must be strings", &k));
        };
        let name = name.to_string_lossy();
        let value = match v {
            Value::String(s) => match s.to_str() {
                Ok(s) => s.to_string(),
                Err(_) => return Ok(Err(format!("the value of {name} is not UTF-8"))),
            },
            Value::Integer(i) => i.to_string(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(type_error(
                    &format!("headers[{name:?}] must be a string"),
                    &other,
                ))
            }
        };
        fields.push((name, value));
    }
    fields.sort();
    Ok(Ok(fields))
}

fn callback(lua: &Lua, opts: &Table, name: &str) -> mlua::Result<Option<RegistryKey>> {
    match opts.get::<Value>(name)? {
        Value::Nil => Ok(None),
        Value::Function(f) => lua.create_registry_value(f).map(Some),
        other => Err(mlua::Error::runtime(format!(
            "cws:new: {name} must be a function, got {}",
            lapps_lua::lua_type(&other)
        ))),
    }
}

fn handler_id(v: &Value) -> Option<u64> {
    match *v {
        Value::Integer(i) => u64::try_from(i).ok(),
        Value::Number(f) if f >= 1.0 && f.fract() == 0.0 && f < 9007199254740992.0 => {
            Some(f as u64)
        }
        _ => None,
    }
}

/// `cws:new` reports dynamic reasons (the address, the OS error).
type RetS = Ret<String>;

fn failed(why: &str) -> mlua::Result<RetS> {
    Ok(Ret(Value::Nil, Some(why.to_string())))
}

/// Drops the `cws` table of `cws:f(...)`.
fn skip_self(mut a: mlua::MultiValue) -> mlua::MultiValue {
    if matches!(a.front(), Some(Value::Table(_))) {
        a.pop_front();
    }
    a
}

impl Cws {
    /// The TLS config for `opts`, built once (parsing a CA bundle takes milliseconds) and
    /// again when its file changed: certificates rotated on disk are trusted from the next
    /// connection on, without a restart. At most [`MAX_TLS_CONFIGS`] are kept (an app may
    /// name a new `ca_file` per connection).
    fn tls_config(&self, opts: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
        let stamp = trust_stamp(opts);
        if let Some((built_from, c)) = self.configs.borrow().get(opts) {
            if stamp.is_some() && *built_from == stamp || opts.insecure {
                return Ok(Arc::clone(c));
            }
        }
        let c = client_config(opts)?;
        let mut configs = self.configs.borrow_mut();
        if configs.len() >= MAX_TLS_CONFIGS && !configs.contains_key(opts) {
            configs.clear();
        }
        configs.insert(opts.clone(), (stamp, Arc::clone(&c)));
        Ok(c)
    }

    fn new_client(&self, lua: &Lua, url_text: &str, opts: Option<Table>) -> mlua::Result<RetS> {
        let url = match url::parse(url_text) {
            Ok(u) => u,
            Err(e) => return Ok(Ret(Value::Nil, Some(e.to_string()))),
        };
        let mut cb = Callbacks::default();
        let mut tls = TlsOptions::default();
        let mut max_message = DEFAULT_MAX_MESSAGE;
        let mut idle = Some(DEFAULT_IDLE_TIMEOUT);
        let mut offer = Offer::default();
        if let Some(o) = &opts {
            check_option_names(o)?;
            cb.onopen = callback(lua, o, "onopen")?;
            cb.onmessage = callback(lua, o, "onmessage")?;
            cb.onerror = callback(lua, o, "onerror")?;
            cb.onclose = callback(lua, o, "onclose")?;
            tls.ca_file = string_option(o, "ca_file")?;
            // Only a real boolean turns verification off: Lua's truth would read
            // `insecure = "false"` or `insecure = 0` as true.
            tls.insecure = match o.get::<Value>("insecure")? {
                Value::Nil | Value::Boolean(false) => false,
                Value::Boolean(true) => true,
                _ => return failed("bad insecure (true or false)"),
            };
            if let Some(n) = number_option(lua, o, "max_message_size")? {
                if !(n >= 1.0 && n <= usize::MAX as f64) {
                    return failed("bad max_message_size");
                }
                max_message = n as usize;
            }
            if let Some(s) = number_option(lua, o, "idle_timeout")? {
                // Bounded like eventLoop's wait: a deadline beyond it would overflow the clock.
                if !(0.0..=MAX_WAIT_S as f64).contains(&s) {
                    return failed("bad idle_timeout");
                }
                // However short, a positive timeout is one (a zero Duration means none).
                idle = (s > 0.0).then(|| Duration::from_secs_f64(s).max(Duration::from_millis(1)));
            }
            match offer_option(o)? {
                Ok(o) => offer = o,
                Err(why) => return failed(&why),
            }
        }
        let Ok(mut conns) = self.conns.try_borrow_mut() else {
            return failed("busy");
        };
        if conns.len() >= MAX_CLIENTS {
            return failed("too many connections");
        }
        let config = if url.tls {
            match self.tls_config(&tls) {
                Ok(c) => Some(c),
                Err(e) => return Ok(Ret(Value::Nil, Some(e))),
            }
        } else {
            None
        };
        let Ok(mut keys) = self.keys.try_borrow_mut() else {
            return failed("busy");
        };
        let client = match Client::connect(&url, config, &mut keys, max_message, &offer) {
            Ok(c) => c
                .with_idle_timeout(idle)
                .with_assembly_budget(Arc::clone(&self.assembly)),
            Err(e) => return Ok(Ret(Value::Nil, Some(e))),
        };
        let id = self.next.get();
        self.next.set(id + 1);
        self.awaiting_onclose.set(self.awaiting_onclose.get() + 1);
        conns.insert(
            id,
            Entry {
                client,
                cb: Rc::new(cb),
                _counted: Counted::new(&self.host.run_state),
            },
        );
        Ok(Ret(Value::Number(id as f64), None))
    }

    fn send(&self, a: mlua::MultiValue) -> mlua::Result<Ret> {
        let Some(id) = a.front().and_then(handler_id) else {
            return fail("bad handler");
        };
        let msg = match a.get(1) {
            Some(Value::String(s)) => s.clone(),
            other => {
                return Err(mlua::Error::runtime(format!(
                    "cws:send: message must be a string, got {}",
                    other.map_or("no value", lapps_lua::lua_type)
                )))
            }
        };
        let opcode = match a.get(2) {
            None | Some(Value::Nil) => Opcode::Text,
            Some(Value::Integer(1)) => Opcode::Text,
            Some(Value::Number(n)) if *n == 1.0 => Opcode::Text,
            Some(Value::Integer(2)) => Opcode::Binary,
            Some(Value::Number(n)) if *n == 2.0 => Opcode::Binary,
            Some(_) => return fail("bad opcode"),
        };
        let bytes = msg.as_bytes();
        if opcode == Opcode::Text && std::str::from_utf8(&bytes).is_err() {
            return fail("invalid UTF-8");
        }
        let (Ok(mut conns), Ok(mut keys)) =
            (self.conns.try_borrow_mut(), self.keys.try_borrow_mut())
        else {
            return fail("busy");
        };
        let Some(e) = conns.get_mut(&id) else {
            return fail("closed");
        };
        match e.client.send(opcode, &bytes, &mut keys) {
            Ok(()) => ok(Value::Boolean(true)),
            Err(why) => fail(why),
        }
    }

    fn close(&self, a: mlua::MultiValue) -> mlua::Result<Ret> {
        let Some(id) = a.front().and_then(handler_id) else {
            return fail("bad handler");
        };
        let Some(code) = close_code_arg(a.get(1)).filter(|&c| valid_client_close_code(c)) else {
            return fail("bad close code");
        };
        let (Ok(mut conns), Ok(mut keys)) =
            (self.conns.try_borrow_mut(), self.keys.try_borrow_mut())
        else {
            return fail("busy");
        };
        let Some(e) = conns.get_mut(&id) else {
            return fail("closed");
        };
        if e.client.is_open() {
            self.closed_by_app.borrow_mut().insert(id);
        }
        let mut raised = Vec::new();
        let r = e.client.close(code as u16, &mut keys, &mut |ev| {
            if let Event::Closed(c, reason) = ev {
                raised.push(Ev::Closed(c, reason.to_vec()));
            }
        });
        let cb = Rc::clone(&e.cb);
        if e.client.is_done() {
            conns.remove(&id);
        }
        drop(conns);
        let mut deferred = self.deferred.borrow_mut();
        deferred.extend(raised.into_iter().map(|ev| (id, Rc::clone(&cb), ev)));
        match r {
            Ok(()) => ok(Value::Boolean(true)),
            Err(why) => fail(why),
        }
    }

    /// Fails connection `id` from our side with 1011 (`why`); the events that follow (its
    /// onerror and onclose). None when it is gone or the state is in use.
    fn abort(&self, id: u64, why: String) -> Vec<Ev> {
        let (Ok(mut conns), Ok(mut keys)) =
            (self.conns.try_borrow_mut(), self.keys.try_borrow_mut())
        else {
            return Vec::new();
        };
        let Some(e) = conns.get_mut(&id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        e.client
            .abort(1011, why, &mut keys, &mut |ev| out.push(owned(ev)));
        let _ = e.client.flush();
        out
    }

    /// One round: poll, turn readiness into events, run the callbacks. Returns the number of
    /// callbacks run.
    fn event_loop(&self, lua: &Lua, wait: Duration) -> mlua::Result<usize> {
        if self.in_round.replace(true) {
            return Err(mlua::Error::runtime(
                "cws:eventLoop called from a cws callback",
            ));
        }
        let _round = RoundGuard(&self.in_round);
        // A polling point of the standalone loop, like must_stop().
        self.host.flush();
        self.host.polling_point(lua);
        let mut events: Vec<(u64, Rc<Callbacks>, Ev)> = self.deferred.take();
        {
            let Ok(mut conns) = self.conns.try_borrow_mut() else {
                return Err(mlua::Error::runtime(
                    "cws:eventLoop called from a cws callback",
                ));
            };
            let mut keys = self.keys.borrow_mut();
            let mut fds: Vec<libc::pollfd> = Vec::with_capacity(conns.len());
            let mut ids: Vec<u64> = Vec::with_capacity(conns.len());
            let mut next_deadline: Option<Instant> = None;
            for (id, e) in conns.iter_mut() {
                // Its turn may have come as the callbacks of the last round closed another
                // connection to its address (RFC 6455 4.1: one at a time in CONNECTING).
                let cb = &e.cb;
                e.client
                    .dequeue(&mut |ev| events.push((*id, Rc::clone(cb), owned(ev))));
                if let Err(why) = e.client.flush() {
                    crate::debug!("cws {id}: {why}");
                }
                fds.push(libc::pollfd {
                    fd: e.client.fd(),
                    events: e.client.interest(),
                    revents: 0,
                });
                ids.push(*id);
                if let Some(d) = e.client.deadline() {
                    next_deadline = Some(next_deadline.map_or(d, |n: Instant| n.min(d)));
                }
            }
            let start = Instant::now();
            let mut until = if events.is_empty() {
                start.checked_add(wait).unwrap_or(start + POLL_SLICE)
            } else {
                start
            };
            if let Some(d) = next_deadline {
                until = until.min(d.max(start));
            }
            loop {
                let left = until
                    .saturating_duration_since(Instant::now())
                    .min(POLL_SLICE);
                let n = poll(&mut fds, left);
                if n > 0 || Instant::now() >= until || self.host.stop.is_set() {
                    break;
                }
            }
            let now = Instant::now();
            for (pfd, id) in fds.iter().zip(&ids) {
                let Some(e) = conns.get_mut(id) else { continue };
                let cb = &e.cb;
                let mut sink = |ev: Event<'_>| events.push((*id, Rc::clone(cb), owned(ev)));
                if pfd.revents != 0 {
                    e.client.ready(pfd.revents, &mut keys, &mut sink);
                }
                e.client.tick(now, &mut keys, &mut sink);
            }
            // Those that opened or failed in this round leave their address to the next.
            for (id, e) in conns.iter_mut() {
                let cb = &e.cb;
                e.client
                    .dequeue(&mut |ev| events.push((*id, Rc::clone(cb), owned(ev))));
            }
            conns.retain(|_, e| !e.client.is_done());
        }
        let mut ran = 0;
        let mut events = VecDeque::from(events);
        while let Some((id, cb, ev)) = events.pop_front() {
            // Messages for a connection the app has closed are not delivered; those that came
            // before the server's own Close (or a failure) are.
            // So is the opening of one the app closed while its upgrade answer was being read
            // in this round: for the app it never opened (its close abandoned it).
            match ev {
                Ev::Message(..) | Ev::Open(_) if self.closed_by_app.borrow().contains(&id) => {
                    continue
                }
                Ev::Closed(..) => {
                    self.closed_by_app.borrow_mut().remove(&id);
                    // Counted out before its onclose runs: it is over for the app.
                    self.awaiting_onclose
                        .set(self.awaiting_onclose.get().saturating_sub(1));
                }
                _ => {}
            }
            let ev = match ev {
                Ev::Message(bytes, op) => match make_string(lua, &bytes) {
                    Ok(s) => Delivered::Message(s, op),
                    Err(err) => {
                        // As a memory error in a network service's callback: the connection
                        // fails with 1011; nothing more of it is delivered but its onerror
                        // and onclose, next.
                        let why = format!(
                            "message dropped: no room for a message of {} bytes in the state \
                             (memory_limit {} bytes, {} in use after a full collection): {err}",
                            bytes.len(),
                            crate::lapps_proto::tree_budget::limit(),
                            lua.used_memory()
                        );
                        crate::service_log!(
                            self.host,
                            crate::log::Level::Warn,
                            "{} cws connection {id}: {why}; failing it with 1011",
                            self.host.tag()
                        );
                        let mut raised = self.abort(id, why.clone());
                        if raised.is_empty() {
                            // Ending already (its Close came in the same read): its onclose
                            // is queued; only the messages before it go.
                            events.retain(|(o, _, ev)| *o != id || !matches!(ev, Ev::Message(..)));
                            raised.push(Ev::Error(why));
                        } else {
                            events.retain(|(other, _, _)| *other != id);
                        }
                        for ev in raised.into_iter().rev() {
                            events.push_front((id, Rc::clone(&cb), ev));
                        }
                        continue;
                    }
                },
                Ev::Open(p) => Delivered::Open(p),
                Ev::Error(s) => Delivered::Error(s),
                Ev::Closed(c, reason) => Delivered::Closed(c, reason),
            };
            // Each callback has its own instruction budget, as a network service's do: how many
            // run in one round is the servers' doing.
            self.host.polling_point(lua);
            let h = Value::Number(id as f64);
            let (name, f, r) = match ev {
                Delivered::Open(p) => (
                    "onopen",
                    &cb.onopen,
                    call(lua, &self.handler, &cb.onopen, (h, p)),
                ),
                Delivered::Message(s, op) => (
                    "onmessage",
                    &cb.onmessage,
                    call(lua, &self.handler, &cb.onmessage, (h, s, op as u8)),
                ),
                Delivered::Error(s) => (
                    "onerror",
                    &cb.onerror,
                    call(lua, &self.handler, &cb.onerror, (h, s)),
                ),
                Delivered::Closed(c, reason) => {
                    // At most 123 bytes (RFC 6455 5.5): a string the state cannot make is
                    // left out rather than the onclose every connection is owed.
                    let reason = lua.create_string(&reason).ok();
                    (
                        "onclose",
                        &cb.onclose,
                        call(lua, &self.handler, &cb.onclose, (h, c, reason)),
                    )
                }
            };
            if f.is_some() {
                ran += 1;
            }
            if let Err(e) = r {
                crate::service_log!(
                    self.host,
                    crate::log::Level::Error,
                    "{} cws {name}: {}",
                    self.host.tag(),
                    one_line(&e)
                );
            }
        }
        // What runs after eventLoop returns gets a budget of its own too, not what the last
        // callback left of its.
        if ran > 0 {
            self.host.polling_point(lua);
        }
        // A violation read behind messages fails its connection now that their callbacks have
        // run (what they sent goes before our Close); its onerror and onclose come next round.
        // What the callbacks sent leaves now rather than after the next poll.
        if let (Ok(mut conns), Ok(mut keys)) =
            (self.conns.try_borrow_mut(), self.keys.try_borrow_mut())
        {
            let mut raised = Vec::new();
            for (id, e) in conns.iter_mut() {
                let cb = &e.cb;
                e.client.settle(&mut keys, &mut |ev| {
                    raised.push((*id, Rc::clone(cb), owned(ev)))
                });
                let _ = e.client.flush();
            }
            self.deferred.borrow_mut().extend(raised);
        }
        Ok(ran)
    }
}

impl Drop for Cws {
    /// The state is closing (the service stops): rather than cutting the TCP connections, every
    /// open one sends Close 1001 "going away" and waits for the server's Close (RFC 6455 7.1.1)
    /// and those already closing finish as they would, all together within [`GOING_AWAY_WAIT`];
    /// what is left then is dropped. No callback runs: the state is being torn down.
    fn drop(&mut self) {
        let conns = self.conns.get_mut();
        let keys = self.keys.get_mut();
        let mut ignore = |_: Event<'_>| {};
        for e in conns.values_mut() {
            // Err: closing already; a connection not open yet is abandoned (done).
            let _ = e.client.close(1001, keys, &mut ignore);
        }
        conns.retain(|_, e| !e.client.is_done());
        let until = Instant::now() + GOING_AWAY_WAIT;
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(conns.len());
        while !conns.is_empty() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            fds.clear();
            fds.extend(conns.values().map(|e| libc::pollfd {
                fd: e.client.fd(),
                events: e.client.interest(),
                revents: 0,
            }));
            poll(&mut fds, left);
            let now = Instant::now();
            for (pfd, e) in fds.iter().zip(conns.values_mut()) {
                if pfd.revents != 0 {
                    e.client.ready(pfd.revents, keys, &mut ignore);
                    e.client.settle(keys, &mut ignore);
                }
                e.client.tick(now, keys, &mut ignore);
            }
            conns.retain(|_, e| !e.client.is_done());
        }
    }
}

/// An event of the client as the round keeps it.
fn owned(ev: Event<'_>) -> Ev {
    match ev {
        Event::Open(p) => Ev::Open(p.map(str::to_string)),
        Event::Message(p, op) => Ev::Message(p.to_vec(), op),
        Event::Error(s) => Ev::Error(s),
        Event::Closed(c, reason) => Ev::Closed(c, reason.to_vec()),
    }
}

/// An event about to reach its callback.
enum Delivered {
    Open(Option<String>),
    Message(mlua::String, Opcode),
    Error(String),
    /// The code and the server's reason.
    Closed(u16, Vec<u8>),
}

/// A message as a Lua string; when the state refuses the room, once more after a full
/// collection (LuaJIT has no emergency collection: the garbage of the messages before, which
/// the incremental collector had not reached yet, would otherwise cost this one).
fn make_string(lua: &Lua, bytes: &[u8]) -> mlua::Result<mlua::String> {
    lua.create_string(bytes).or_else(|_| {
        crate::service::lua::collect::after_refused_allocation(lua);
        lua.create_string(bytes)
    })
}

/// Calls callback `f`, when the app gave one, as the other app callbacks are called.
fn call(
    lua: &Lua,
    handler: &Function,
    f: &Option<RegistryKey>,
    args: impl mlua::IntoLuaMulti,
) -> mlua::Result<()> {
    match f {
        Some(k) => {
            let f = lua.registry_value::<Function>(k)?;
            crate::service::lua::fastpath::call_traced(lua, handler, &f, args)
        }
        None => Ok(()),
    }
}

/// poll(2) on `fds`; the number of ready entries (0 on timeout or EINTR).
fn poll(fds: &mut [libc::pollfd], wait: Duration) -> usize {
    // Rounded up: rounded down, the last fraction of a millisecond before a deadline would
    // be polled with 0 over and over.
    let ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a valid, exclusively borrowed slice of `pollfd` and its length is passed
    // with it; poll(2) writes only the `revents` fields within it.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    usize::try_from(n).unwrap_or(0)
}

pub(crate) fn install(lua: &Lua, host: &Rc<HostCtx>) -> mlua::Result<()> {
    let cws = Rc::new(Cws {
        host: Rc::clone(host),
        conns: RefCell::new(BTreeMap::new()),
        keys: RefCell::new(KeyPool::default()),
        next: Cell::new(1),
        configs: RefCell::new(HashMap::new()),
        deferred: RefCell::new(Vec::new()),
        closed_by_app: RefCell::new(HashSet::new()),
        in_round: Cell::new(false),
        awaiting_onclose: Cell::new(0),
        // Set for this thread before any module is installed (`sandbox`).
        assembly: Arc::new(AssemblyBudget::new(crate::lapps_proto::tree_budget::limit())),
        handler: crate::service::lua::fastpath::callback_handler(lua)?,
    });
    let t = lua.create_table()?;
    let c = Rc::clone(&cws);
    t.set(
        "new",
        lua.create_function(move |lua, a: mlua::MultiValue| {
            if !c.host.may_block() {
                // Its connections live in cws:eventLoop, which waits.
                let why = crate::service::lua::host::NOT_IN_NETWORK;
                return Ok(Ret(Value::Nil, Some(why.to_string())));
            }
            let a = skip_self(a);
            let url = match a.front() {
                Some(Value::String(s)) => s.to_string_lossy(),
                other => {
                    return Err(mlua::Error::runtime(format!(
                        "cws:new: url must be a string, got {}",
                        other.map_or("no value", lapps_lua::lua_type)
                    )))
                }
            };
            let opts = match a.get(1) {
                None | Some(Value::Nil) => None,
                Some(Value::Table(t)) => Some(t.clone()),
                Some(other) => {
                    return Err(mlua::Error::runtime(format!(
                        "cws:new: options must be a table, got {}",
                        lapps_lua::lua_type(other)
                    )))
                }
            };
            c.new_client(lua, &url, opts)
        })?,
    )?;
    let c = Rc::clone(&cws);
    t.set(
        "send",
        lua.create_function(move |_, a: mlua::MultiValue| {
            if !c.host.may_block() {
                // A handler here is never one of ours ("closed" would send the app looking
                // for a connection that closed).
                return fail(NONE_IN_NETWORK);
            }
            c.send(skip_self(a))
        })?,
    )?;
    let c = Rc::clone(&cws);
    t.set(
        "close",
        lua.create_function(move |_, a: mlua::MultiValue| {
            if !c.host.may_block() {
                return fail(NONE_IN_NETWORK);
            }
            c.close(skip_self(a))
        })?,
    )?;
    let c = Rc::clone(&cws);
    t.set(
        "eventLoop",
        lua.create_function(move |lua, a: mlua::MultiValue| -> mlua::Result<Ret> {
            if !c.host.may_block() {
                // It waits (and a network service has no connections of its own to wait on).
                return fail(crate::service::lua::host::NOT_IN_NETWORK);
            }
            let a = skip_self(a);
            let wait = match a.front() {
                None | Some(Value::Nil) => DEFAULT_WAIT,
                Some(Value::Integer(i)) if *i >= 0 => {
                    Duration::from_secs((*i as u64).min(MAX_WAIT_S))
                }
                // math.huge is the longest wait there is: the cap.
                Some(Value::Number(f)) if *f >= 0.0 => {
                    Duration::from_secs_f64(f.min(MAX_WAIT_S as f64))
                }
                Some(_) => return fail("bad timeout"),
            };
            let n = c.event_loop(lua, wait)?;
            ok(Value::Number(n as f64))
        })?,
    )?;
    let c = Rc::clone(&cws);
    t.set(
        "count",
        lua.create_function(move |_, _: mlua::MultiValue| Ok(c.awaiting_onclose.get()))?,
    )?;
    lua.globals().set("cws", t)
}
