//! `bcast`: process-wide broadcast channels.
//!
//! Owns the channel table and each channel's subscriber set. A broadcast is framed once into
//! an `Arc<[u8]>` and posted as one `SendMany` per worker (subscribers are kept sorted by
//! handle, whose top bits are the worker, so grouping is one pass). Each subscriber live at
//! the time of `bcast:send` gets the message exactly once; sends of one instance arrive in the
//! order they were made. Subscriptions die with their connection (`drop_conn` on close); a
//! handle that went stale in between is skipped by the liveness check and pruned, at a send
//! to the channel or, for a channel that never sends, as it grows (see `Members`). A channel
//! goes only when an app removes it while it has no live member ([`Bcast::remove`]).

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Mutex, RwLock};

use mlua::{Lua, MultiValue, Value};

use super::{fail, handler, method_args, ok, Ret};
use crate::lapps_proto::lua::from_lua;
use crate::lapps_proto::protocol;
use crate::lapps_proto::value::Value as CborValue;
use crate::net::handle::ConnId;
use crate::net::hub::{Command, Speaks};
use crate::service::lua::frame::{frame, frame_checked};
use crate::service::lua::host::HostCtx;

/// A channel id: the original's unsigned integers, or a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChannelId {
    Num(u64),
    Name(String),
}

impl ChannelId {
    fn from_lua(v: &Value) -> Option<ChannelId> {
        match v {
            Value::Integer(i) => u64::try_from(*i).ok().map(ChannelId::Num),
            // Past 2^63 a Lua number is no Integer for mlua; up to 2^64 it names a channel
            // still, as it names an OON's cid (`ws:send_oon`).
            Value::Number(f) if *f >= 0.0 && f.fract() == 0.0 && *f < 18446744073709551616.0 => {
                Some(ChannelId::Num(*f as u64))
            }
            // Channels are process-wide and live until an app removes them: names are short,
            // and text (as queue names): a lossy conversion would make "\xff" and "\xfe" one.
            Value::String(s) if (1..=MAX_NAME).contains(&s.as_bytes().len()) => {
                s.to_str().ok().map(|s| ChannelId::Name(s.to_string()))
            }
            _ => None,
        }
    }
}

/// Longest channel name, in bytes (as for mqr queues).
const MAX_NAME: usize = 256;

/// Channels the process may have (as mqr's queues): a channel stays until an app removes it
/// (empty), so an app that made one per client or per request and never removed them would
/// otherwise grow the table for the life of the process.
pub const MAX_CHANNELS: usize = 65_536;

/// Why [`Bcast::create`] made no channel.
pub const TOO_MANY_CHANNELS: &str = "too many channels";
/// Why [`Bcast::remove`] left a channel: it has live members.
pub const NOT_EMPTY: &str = "not empty";
/// Why [`Bcast::remove`] removed nothing: there is no such channel.
pub const NO_SUCH_CHANNEL: &str = "no such channel";

/// A channel's subscribers.
///
/// A connection whose close no instance of the subscribing service handles (one of a version
/// retired past its deadline, or of a builtin service) is never given to `drop_conn`: its
/// subscriptions go when a send to the channel finds the handle stale. On a channel that never
/// sends they would pile up for the life of the process; so a subscribe that finds the set
/// twice as large as after the last sweep (and at least [`SWEEP_FLOOR`]) sweeps it. Each sweep
/// is paid for by the subscribes since the last, and stale members stay fewer than twice the
/// members the channel kept at its last sweep (or than the floor).
#[derive(Default)]
struct Members {
    conns: BTreeSet<ConnId>,
    swept_at: usize,
    /// Taken out of the table by [`Bcast::remove`]: whoever still holds it (a subscribe that
    /// looked it up just before) finds no channel, as a lookup after would.
    removed: bool,
}

impl Members {
    /// Keeps the members `live` says still name their connection; the others, for the
    /// caller to take out of every channel once the lock is released.
    fn sweep(&mut self, live: impl Fn(ConnId) -> bool) -> Vec<ConnId> {
        let mut stale = Vec::new();
        self.conns.retain(|c| {
            let keep = live(*c);
            if !keep {
                stale.push(*c);
            }
            keep
        });
        self.swept_at = self.conns.len();
        stale
    }
}

type Channel = Mutex<Members>;

/// The size below which a channel is not swept at subscribe.
const SWEEP_FLOOR: usize = 64;

/// All channels of the process (one per registry).
pub struct Bcast {
    channels: RwLock<HashMap<ChannelId, Arc<Channel>>>,
    by_conn: Mutex<HashMap<ConnId, Vec<ChannelId>>>,
    max_channels: usize,
}

impl Default for Bcast {
    fn default() -> Bcast {
        Bcast::with_max_channels(MAX_CHANNELS)
    }
}

impl Bcast {
    /// A table of at most `max` channels.
    pub fn with_max_channels(max: usize) -> Bcast {
        Bcast {
            channels: RwLock::default(),
            by_conn: Mutex::default(),
            max_channels: max,
        }
    }

    fn channel(&self, id: &ChannelId) -> Option<Arc<Channel>> {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Creates the channel; true when it is new (creating an existing one is not an error,
    /// so every instance may create the channels it uses in `onStart`).
    /// [`TOO_MANY_CHANNELS`] when the table has as many as it may.
    pub fn create(&self, id: ChannelId) -> Result<bool, &'static str> {
        let mut ch = self.channels.write().unwrap_or_else(|e| e.into_inner());
        if ch.contains_key(&id) {
            return Ok(false);
        }
        if ch.len() >= self.max_channels {
            return Err(TOO_MANY_CHANNELS);
        }
        ch.insert(id, Arc::default());
        Ok(true)
    }

    /// Adds `conn`; false when the channel does not exist. `live` tells a handle that still
    /// names its connection, for the sweep (see `Members`).
    ///
    /// `by_conn` changes under the channel's lock (taken first; `by_conn`'s inside it, held
    /// briefly; nothing holds `by_conn` while taking a channel's): apart, a subscribe and an
    /// unsubscribe of the same pair could interleave so that the channel keeps the connection
    /// and `by_conn` forgets it, and its close would not take it out. (In this order a
    /// subscribe waits only for its own channel, as a send to it scans it, not for others.)
    pub fn subscribe(&self, id: &ChannelId, conn: ConnId, live: impl Fn(ConnId) -> bool) -> bool {
        let Some(ch) = self.channel(id) else {
            return false;
        };
        self.subscribe_to(&ch, id, conn, live)
    }

    /// [`Bcast::subscribe`] to the channel `id` named when it was looked up (`ch`), which may
    /// have been removed since: false then, as if the lookup had come after.
    fn subscribe_to(
        &self,
        ch: &Channel,
        id: &ChannelId,
        conn: ConnId,
        live: impl Fn(ConnId) -> bool,
    ) -> bool {
        let mut stale = Vec::new();
        let mut subs = ch.lock().unwrap_or_else(|e| e.into_inner());
        if subs.removed {
            return false;
        }
        if subs.conns.insert(conn) {
            let mut by = self.by_conn.lock().unwrap_or_else(|e| e.into_inner());
            by.entry(conn).or_default().push(id.clone());
            drop(by);
            if subs.conns.len() >= subs.swept_at.saturating_mul(2).max(SWEEP_FLOOR) {
                stale = subs.sweep(live);
            }
        }
        drop(subs);
        // Out of every channel, after this one's lock (as in `recipients`).
        for c in stale {
            self.drop_conn(c);
        }
        true
    }

    /// Removes `conn`; false when the channel does not exist.
    pub fn unsubscribe(&self, id: &ChannelId, conn: ConnId) -> bool {
        let Some(ch) = self.channel(id) else {
            return false;
        };
        let mut subs = ch.lock().unwrap_or_else(|e| e.into_inner());
        if subs.removed {
            return false;
        }
        if subs.conns.remove(&conn) {
            let mut by = self.by_conn.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(list) = by.get_mut(&conn) {
                list.retain(|c| c != id);
                if list.is_empty() {
                    by.remove(&conn);
                }
            }
        }
        true
    }

    /// Removes the channel if it has no live member (`live`: a handle that still names its
    /// connection; stale ones are pruned first, as a send would). [`NOT_EMPTY`] leaves it;
    /// [`NO_SUCH_CHANNEL`] when there is none. Once removed, a subscribe or a send to its id
    /// finds no channel until one is created again, and the table has room for another.
    ///
    /// Locks: a look under the channel's alone first (a live member: it stays); then the
    /// table's (write) and the channel's, as `subscriptions` nests them, to check again and
    /// take it out under both, so that a subscribe that looked it up before finds it marked
    /// removed and fails as a later lookup would.
    pub fn remove(
        &self,
        id: &ChannelId,
        live: impl Fn(ConnId) -> bool,
    ) -> Result<(), &'static str> {
        // The common answer first, without the table's write lock (which every lookup in the
        // process waits for): a channel with a live member stays. Most often its first.
        {
            let Some(ch) = self.channel(id) else {
                return Err(NO_SUCH_CHANNEL);
            };
            let subs = ch.lock().unwrap_or_else(|e| e.into_inner());
            if subs.conns.iter().any(|c| live(*c)) {
                return Err(NOT_EMPTY);
            }
        }
        let (result, stale) = {
            let mut table = self.channels.write().unwrap_or_else(|e| e.into_inner());
            let Some(ch) = table.get(id).cloned() else {
                return Err(NO_SUCH_CHANNEL);
            };
            let mut subs = ch.lock().unwrap_or_else(|e| e.into_inner());
            let stale = subs.sweep(&live);
            if subs.conns.is_empty() {
                subs.removed = true;
                table.remove(id);
                (Ok(()), stale)
            } else {
                (Err(NOT_EMPTY), stale)
            }
        };
        // Out of every channel (and the index), after the locks, as in `recipients`.
        for c in stale {
            self.drop_conn(c);
        }
        result
    }

    /// The connection is gone: it leaves every channel.
    pub fn drop_conn(&self, conn: ConnId) {
        let ids = self
            .by_conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn);
        for id in ids.into_iter().flatten() {
            if let Some(ch) = self.channel(&id) {
                ch.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .conns
                    .remove(&conn);
            }
        }
    }

    /// Channels made, and their members together (for the status report: each channel's
    /// lock is taken alone, after the table's, so that no send waits for the count).
    pub fn usage(&self) -> (usize, usize) {
        let channels: Vec<Arc<Channel>> = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let members = channels
            .iter()
            .map(|ch| ch.lock().unwrap_or_else(|e| e.into_inner()).conns.len())
            .sum();
        (channels.len(), members)
    }

    /// Subscriptions held: (channel members, entries of the per-connection index). Equal, and
    /// 0 once every subscribed connection's close was handled (what tests check after many
    /// connections came and went).
    pub fn subscriptions(&self) -> (usize, usize) {
        let members = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|ch| ch.lock().unwrap_or_else(|e| e.into_inner()).conns.len())
            .sum();
        let indexed = self
            .by_conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Vec::len)
            .sum();
        (members, indexed)
    }

    /// Live subscribers that speak `wanted`, grouped by worker (`None`: no such channel).
    /// Stale ones (`speaks` None) leave every channel and `by_conn` (a connection whose close
    /// no instance of the subscribing service handled, such as one of a retired version or of
    /// a builtin service, is never given to `drop_conn` otherwise); those speaking the other
    /// protocol stay subscribed for the channel's messages of their kind.
    pub fn recipients(
        &self,
        id: &ChannelId,
        speaks: impl Fn(ConnId) -> Option<Speaks>,
        wanted: Speaks,
    ) -> Option<Vec<Vec<ConnId>>> {
        let ch = self.channel(id)?;
        let mut groups: Vec<Vec<ConnId>> = Vec::new();
        let mut subs = ch.lock().unwrap_or_else(|e| e.into_inner());
        if subs.removed {
            return None;
        }
        let stale = subs.sweep(|c| speaks(c).is_some());
        for c in subs.conns.iter().filter(|c| speaks(**c) == Some(wanted)) {
            match groups.last_mut() {
                Some(g) if g.first().map(|f| f.worker()) == Some(c.worker()) => g.push(*c),
                _ => groups.push(vec![*c]),
            }
        }
        drop(subs);
        // A handle never names a live connection again (generations): it leaves every
        // channel, not only this one. After the channel's lock, which `drop_conn` takes too.
        for c in stale {
            self.drop_conn(c);
        }
        Some(groups)
    }
}

pub(crate) fn install(lua: &Lua, host: &Rc<HostCtx>) -> mlua::Result<()> {
    let t = lua.create_table()?;
    let h = Rc::clone(host);
    t.set(
        "create",
        lua.create_function(move |lua, args: MultiValue| -> mlua::Result<Ret> {
            let id: Value = method_args(lua, args)?;
            let Some(id) = ChannelId::from_lua(&id) else {
                return fail("bad channel id");
            };
            if let Err(why) = h.bcast.create(id) {
                crate::service_log!(
                    h,
                    crate::log::Level::Warn,
                    "{} bcast:create refused: the process has {} channels, the most it may \
                     (use a fixed set, or bcast:remove the ones left empty)",
                    h.tag(),
                    h.bcast.max_channels
                );
                return fail(why);
            }
            ok(Value::Boolean(true))
        })?,
    )?;
    let h = Rc::clone(host);
    t.set(
        "remove",
        lua.create_function(move |lua, args: MultiValue| -> mlua::Result<Ret> {
            let id: Value = method_args(lua, args)?;
            let Some(id) = ChannelId::from_lua(&id) else {
                return fail("bad channel id");
            };
            match h.bcast.remove(&id, |c| h.hub.is_live(c)) {
                Ok(()) => ok(Value::Boolean(true)),
                Err(why) => fail(why),
            }
        })?,
    )?;
    for (name, subscribe) in [("subscribe", true), ("unsubscribe", false)] {
        let h = Rc::clone(host);
        t.set(
            name,
            lua.create_function(move |lua, args: MultiValue| -> mlua::Result<Ret> {
                let (id, conn): (Value, Value) = method_args(lua, args)?;
                let Some(id) = ChannelId::from_lua(&id) else {
                    return fail("bad channel id");
                };
                let Some(conn) = handler(&conn) else {
                    return fail("bad handler");
                };
                if subscribe && !h.hub.is_live(conn) {
                    return fail("closed");
                }
                let done = if subscribe {
                    let done = h.bcast.subscribe(&id, conn, |c| h.hub.is_live(c));
                    // Ended meanwhile: its owner may have run drop_conn before our insert,
                    // which would leave the entry behind for good.
                    if done && !h.hub.is_live(conn) {
                        h.bcast.unsubscribe(&id, conn);
                        return fail("closed");
                    }
                    done
                } else {
                    h.bcast.unsubscribe(&id, conn)
                };
                if done {
                    ok(Value::Boolean(true))
                } else {
                    fail("no such channel")
                }
            })?,
        )?;
    }
    let h = Rc::clone(host);
    t.set(
        "send",
        lua.create_function(move |lua, args: MultiValue| -> mlua::Result<Ret> {
            let (id, a, b): (Value, Value, Option<Value>) = method_args(lua, args)?;
            // A message that is neither a string nor a number is a runtime answer.
            let b = match b {
                None | Some(Value::Nil) => None,
                Some(v @ (Value::String(_) | Value::Integer(_) | Value::Number(_))) => {
                    lua.coerce_string(v)?
                }
                Some(_) => return fail("bad message"),
            };
            let Some(id) = ChannelId::from_lua(&id) else {
                return fail("bad channel id");
            };
            // Encode once, before knowing the recipients: every one gets these bytes.
            // Raw messages go to RAW connections, OONs to LAppS ones (SPEC sections 3, 4).
            let (framed, wanted): (Vec<u8>, Speaks) = match (a, b) {
                (Value::Integer(op), Some(msg)) => {
                    match frame_checked(op, &msg.as_bytes(), h.auto_fragment) {
                        Ok(f) => (f, Speaks::Raw),
                        Err(reason) => return fail(reason),
                    }
                }
                (Value::Number(op), Some(msg)) if op.fract() == 0.0 => {
                    match frame_checked(op as i64, &msg.as_bytes(), h.auto_fragment) {
                        Ok(f) => (f, Speaks::Raw),
                        Err(reason) => return fail(reason),
                    }
                }
                // The LAppS form: bcast:send(id, oon) with `{cid = N, message = {...}}`.
                (value @ (Value::Table(_) | Value::UserData(_)), None) => {
                    let cbor = from_lua(lua, &value)
                        .and_then(|v| {
                            oon_only(&v).then_some(v).ok_or_else(|| {
                                "expected an OON (cid ~= 0 and a message array)".to_string()
                            })
                        })
                        .and_then(|v| protocol::validate_outbound(&v))
                        .map_err(|e| mlua::Error::runtime(format!("bcast:send: {e}")))?;
                    (frame(2, &cbor, h.auto_fragment), Speaks::Lapps)
                }
                // A message with an opcode that is not a whole number (1.5, NaN, "1").
                (_, Some(_)) => return fail("bad opcode"),
                _ => return fail("bad message"),
            };
            let Some(groups) = h.bcast.recipients(&id, |c| h.hub.speaks(c), wanted) else {
                return fail("no such channel");
            };
            let mut n = 0usize;
            if !groups.is_empty() {
                let framed: Arc<[u8]> = framed.into();
                for conns in groups {
                    n += conns.len();
                    let Some(&first) = conns.first() else {
                        continue;
                    };
                    h.push(
                        first,
                        Command::SendMany {
                            conns,
                            frame: Arc::clone(&framed),
                        },
                    );
                }
            }
            ok(Value::Number(n as f64))
        })?,
    )?;
    lua.globals().set("bcast", t)
}

/// True for a value shaped as an OON (a map with a non-zero `cid`); responses are per request
/// and never broadcast.
fn oon_only(v: &CborValue) -> bool {
    let CborValue::Map(members) = v else {
        return false;
    };
    members.iter().any(|(k, v)| {
        matches!(k, CborValue::Text(t) if t == "cid") && protocol::notification_cid(v).is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Channel ids go up to 2^64 as OON cids do: past 2^63 a Lua number reaches us as a
    /// float, which was refused (a trial's `bcast:create(2^63)` said "bad channel id").
    #[test]
    fn a_channel_id_is_any_whole_number_below_2_pow_64() {
        let lua = Lua::new();
        let id = |src: &str| ChannelId::from_lua(&lua.load(src).eval::<Value>().unwrap());
        assert_eq!(id("0"), Some(ChannelId::Num(0)));
        assert_eq!(id("2^53 + 2"), Some(ChannelId::Num((1 << 53) + 2)));
        assert_eq!(id("2^63 - 1024"), Some(ChannelId::Num((1 << 63) - 1024)));
        assert_eq!(id("2^63"), Some(ChannelId::Num(1 << 63)));
        assert_eq!(id("2^64 - 2048"), Some(ChannelId::Num(u64::MAX - 2047)));
        for not in ["2^64", "-1", "1.5", "0/0", "math.huge", "''", "true"] {
            assert_eq!(id(not), None, "{not}");
        }
        assert_eq!(id("'room'"), Some(ChannelId::Name("room".into())));
    }

    #[test]
    fn an_oon_is_told_by_its_channel_as_a_clients_notification_would_be() {
        let with_cid = |v: CborValue| {
            CborValue::Map(vec![
                (CborValue::Text("cid".into()), v),
                (CborValue::Text("message".into()), CborValue::Array(vec![])),
            ])
        };
        // A Lua number past 2^53 arrives as a float.
        for channel in [
            CborValue::Int(1),
            CborValue::UInt(u64::MAX),
            CborValue::Float(2f64.powi(53) + 2.0),
        ] {
            assert!(oon_only(&with_cid(channel.clone())), "{channel:?}");
        }
        for not in [
            CborValue::Int(0),
            CborValue::Int(-1),
            CborValue::Float(1.5),
            CborValue::Float(2f64.powi(64)),
        ] {
            assert!(!oon_only(&with_cid(not.clone())), "{not:?}");
        }
    }

    #[test]
    fn a_table_makes_at_most_its_channels_and_an_existing_one_is_always_fine() {
        let b = Bcast::with_max_channels(2);
        assert_eq!(b.create(ChannelId::Num(1)), Ok(true));
        assert_eq!(b.create(ChannelId::Name("a".into())), Ok(true));
        assert_eq!(b.create(ChannelId::Num(2)), Err(TOO_MANY_CHANNELS));
        assert_eq!(b.create(ChannelId::Num(1)), Ok(false));
        assert_eq!(Bcast::default().max_channels, MAX_CHANNELS);
    }

    #[test]
    fn an_empty_channel_is_removed_and_its_room_in_the_table_comes_back() {
        let b = Bcast::with_max_channels(1);
        let room = ChannelId::Name("room".into());
        let live = |_: ConnId| true;
        assert_eq!(b.remove(&room, live), Err(NO_SUCH_CHANNEL));
        assert_eq!(b.create(room.clone()), Ok(true));
        let c = ConnId::new(0, 1, 1);
        assert!(b.subscribe(&room, c, live));
        assert_eq!(
            b.remove(&room, live),
            Err(NOT_EMPTY),
            "a live member keeps it"
        );
        assert!(b.unsubscribe(&room, c));
        assert_eq!(b.remove(&room, live), Ok(()));
        assert!(!b.subscribe(&room, c, live), "no such channel any more");
        assert!(b
            .recipients(&room, |_| Some(Speaks::Raw), Speaks::Raw)
            .is_none());
        assert_eq!(b.subscriptions(), (0, 0));
        // The table has room again (it holds one channel at most).
        assert_eq!(b.create(ChannelId::Num(7)), Ok(true));
        assert_eq!(b.remove(&ChannelId::Num(7), live), Ok(()));
        assert_eq!(b.create(room.clone()), Ok(true));
        assert!(b.subscribe(&room, c, live));
    }

    #[test]
    fn a_channel_whose_members_are_all_stale_is_removed_and_they_leave_the_index() {
        let b = Bcast::default();
        let (one, two) = (ChannelId::Num(1), ChannelId::Num(2));
        b.create(one.clone()).unwrap();
        b.create(two.clone()).unwrap();
        let gone = ConnId::new(1, 5, 2);
        assert!(b.subscribe(&one, gone, |_| true));
        assert!(b.subscribe(&two, gone, |_| true));
        assert_eq!(b.remove(&one, |c| c != gone), Ok(()));
        // The stale handle left the other channel and the index too, as a send would do.
        assert_eq!(b.subscriptions(), (0, 0));
    }

    /// A subscribe that looked the channel up just before it was removed finds it removed
    /// (false, as for no channel), never a member of a channel no one can reach.
    #[test]
    fn a_subscribe_that_found_the_channel_before_its_removal_does_not_join_it() {
        let b = Bcast::default();
        let id = ChannelId::Num(1);
        b.create(id.clone()).unwrap();
        let looked_up = b.channel(&id).expect("the channel");
        assert_eq!(b.remove(&id, |_| true), Ok(()));
        let conn = ConnId::new(0, 1, 1);
        assert!(!b.subscribe_to(&looked_up, &id, conn, |_| true));
        assert_eq!(b.subscriptions(), (0, 0));
        assert!(!b.unsubscribe(&id, conn));
    }

    #[test]
    fn subscribers_are_grouped_by_worker_and_leave_with_their_connection() {
        let b = Bcast::default();
        let id = ChannelId::Name("room".into());
        assert!(!b.subscribe(&id, ConnId::new(0, 1, 1), |_| true));
        assert_eq!(b.create(id.clone()), Ok(true));
        assert_eq!(b.create(id.clone()), Ok(false));
        for (w, i) in [(1, 5), (0, 1), (1, 2), (0, 3)] {
            assert!(b.subscribe(&id, ConnId::new(w, i, 1), |_| true));
        }
        let raw = |_| Some(Speaks::Raw);
        let g = b.recipients(&id, raw, Speaks::Raw).unwrap();
        assert_eq!(g.len(), 2);
        assert!(g[0].iter().all(|c| c.worker() == 0) && g[0].len() == 2);
        assert!(g[1].iter().all(|c| c.worker() == 1) && g[1].len() == 2);
        b.drop_conn(ConnId::new(1, 5, 1));
        let live = |c: ConnId| (c.index() != 3).then_some(Speaks::Raw);
        let g = b.recipients(&id, live, Speaks::Raw).unwrap();
        assert_eq!(g.concat(), vec![ConnId::new(0, 1, 1), ConnId::new(1, 2, 1)]);
        // The stale one left the index of subscriptions too (no drop_conn came for it).
        let by = b.by_conn.lock().unwrap();
        assert!(!by.contains_key(&ConnId::new(0, 3, 1)), "{:?}", by.keys());
        assert!(by.contains_key(&ConnId::new(0, 1, 1)));
        drop(by);
        // And every other channel it was in, which may never send again.
        let quiet = ChannelId::Num(9);
        assert_eq!(b.create(quiet.clone()), Ok(true));
        let (gone, live) = (ConnId::new(0, 7, 1), ConnId::new(0, 8, 1));
        for c in [gone, live] {
            assert!(b.subscribe(&id, c, |_| true) && b.subscribe(&quiet, c, |_| true));
        }
        let alive = |c: ConnId| (c != gone).then_some(Speaks::Raw);
        b.recipients(&id, alive, Speaks::Raw).unwrap();
        assert!(!b.by_conn.lock().unwrap().contains_key(&gone));
        let everyone = |_| Some(Speaks::Raw);
        let g = b.recipients(&quiet, everyone, Speaks::Raw).unwrap();
        assert_eq!(g.concat(), vec![live], "it left the quiet channel too");
    }

    /// A channel nobody sends to still loses the stale handles of connections whose close
    /// never reached `drop_conn`: a subscribe that finds the set doubled sweeps it, and the
    /// stale ones leave their other channels and the index too.
    #[test]
    fn a_channel_that_never_sends_is_swept_as_it_grows() {
        use std::cell::RefCell;
        let b = Bcast::default();
        let (quiet, other) = (ChannelId::Name("quiet".into()), ChannelId::Num(2));
        assert_eq!(b.create(quiet.clone()), Ok(true));
        assert_eq!(b.create(other.clone()), Ok(true));
        let gone = RefCell::new(BTreeSet::new());
        let live = |c: ConnId| !gone.borrow().contains(&c);
        // 100 connections subscribe to both, then all end without a close handled.
        for i in 0..100 {
            let c = ConnId::new(0, i, 1);
            assert!(b.subscribe(&quiet, c, live) && b.subscribe(&other, c, live));
        }
        gone.borrow_mut()
            .extend((0..100).map(|i| ConnId::new(0, i, 1)));
        assert_eq!(b.subscriptions(), (200, 200));
        // 1,000 more come and go the same way, one at a time (sweeping the pile each time
        // it doubles); 100 live ones stay.
        for i in 100..1100 {
            let c = ConnId::new(0, i, 1);
            assert!(b.subscribe(&quiet, c, live));
            if i < 1000 {
                gone.borrow_mut().insert(c);
            }
        }
        let (members, indexed) = b.subscriptions();
        assert_eq!(members, indexed);
        // Without sweeping: 1,200 (the 100 first ones on both channels, 1,000 more on one).
        // With it, the quiet channel holds its 100 live members and at most as many stale
        // ones again (or the floor), and the first 100 left the other channel as well.
        assert!(
            members <= 100 + 100.max(SWEEP_FLOOR),
            "{members} subscriptions kept"
        );
        let quiet_ch = b.channel(&quiet).unwrap();
        let held = quiet_ch.lock().unwrap().conns.clone();
        assert!((1000..1100).all(|i| held.contains(&ConnId::new(0, i, 1))));
        assert!(b.channel(&other).unwrap().lock().unwrap().conns.is_empty());
        // A send still finds exactly the live ones.
        let speaks = |c: ConnId| live(c).then_some(Speaks::Raw);
        let g = b.recipients(&quiet, speaks, Speaks::Raw).unwrap();
        assert_eq!(g.concat().len(), 100);
        assert_eq!(b.subscriptions(), (100, 100));
    }

    /// Instances subscribing and unsubscribing the same connection at once (two threads):
    /// whenever the channel's lock is held, the connection is in the channel exactly when the
    /// index says so (a third thread looks, holding that lock, as long as they run), and after
    /// them too, so that its close takes every subscription it has.
    #[test]
    fn subscribes_and_unsubscribes_at_once_leave_the_index_exact() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let b = Bcast::default();
        let id = ChannelId::Num(1);
        assert_eq!(b.create(id.clone()), Ok(true));
        let c = ConnId::new(0, 1, 1);
        let agree = |subs: &Members| {
            let listed = b
                .by_conn
                .lock()
                .unwrap()
                .get(&c)
                .is_some_and(|l| l == std::slice::from_ref(&id));
            subs.conns.contains(&c) == listed
        };
        let ch = b.channel(&id).unwrap();
        let running = AtomicBool::new(true);
        let (mut looks, mut disagreed) = (0u64, 0u64);
        std::thread::scope(|s| {
            let callers: Vec<_> = [true, false]
                .into_iter()
                .map(|subscribing| {
                    let (b, id) = (&b, &id);
                    s.spawn(move || {
                        for _ in 0..1_000_000 {
                            if subscribing {
                                b.subscribe(id, c, |_| true);
                            } else {
                                b.unsubscribe(id, c);
                            }
                        }
                    })
                })
                .collect();
            let running = &running;
            s.spawn(move || {
                for t in callers {
                    t.join().unwrap();
                }
                running.store(false, Ordering::Release);
            });
            while running.load(Ordering::Acquire) {
                let subs = ch.lock().unwrap();
                looks += 1;
                disagreed += u64::from(!agree(&subs));
            }
        });
        assert_eq!(disagreed, 0, "{disagreed} of {looks} looks");
        assert!(agree(&ch.lock().unwrap()));
        b.drop_conn(c);
        assert_eq!(b.subscriptions(), (0, 0));
    }

    /// `bcast:send` through a real Lua state and Hub: the message is framed once, and each
    /// worker gets one command naming its subscribers, all sharing that one frame.
    #[test]
    fn a_broadcast_is_framed_once_and_posted_once_per_worker() {
        use crate::net::hub::Hub;
        use crate::service::lua::host::Stop;
        use crate::service::lua::ServiceSpec;

        let hub = Arc::new(Hub::new(3, 64).unwrap());
        let spec = ServiceSpec::new("t", "t.lua");
        let host = Rc::new(HostCtx::new(
            &spec,
            0,
            Arc::clone(&hub),
            Arc::new(Bcast::default()),
            Arc::new(Stop::default()),
            Arc::new(crate::service::lua::lua_memory::LuaMemory::new(1)),
            Arc::new(crate::service::lua::run_state::RunState::new(1)),
        ));
        let lua = Lua::new();
        install(&lua, &host).unwrap();
        // Seven subscribers on workers 0 and 2, none on worker 1.
        let conns: Vec<ConnId> = [(0, 1), (2, 1), (0, 2), (2, 2), (0, 3), (2, 3), (2, 4)]
            .iter()
            .map(|&(w, i)| {
                hub.port(w).set_speaks(i, 1, Speaks::Raw);
                ConnId::new(w, i, 1)
            })
            .collect();
        let handlers = lua.create_sequence_from(conns.iter().map(|c| c.as_u64() as f64));
        lua.globals().set("handlers", handlers.unwrap()).unwrap();
        let n: f64 = lua
            .load(
                r#"assert(bcast:create("c"))
                   for _, h in ipairs(handlers) do assert(bcast:subscribe("c", h)) end
                   return (assert(bcast:send("c", 1, "hello")))"#,
            )
            .eval()
            .unwrap();
        assert_eq!(n, 7.0);
        host.flush();
        let mut frames: Vec<Arc<[u8]>> = Vec::new();
        let mut got: Vec<ConnId> = Vec::new();
        for w in 0..3 {
            let mut commands = 0;
            while let Some(batch) = hub.port(w).commands.pop() {
                for cmd in batch {
                    commands += 1;
                    let Command::SendMany { conns, frame } = cmd else {
                        panic!("worker {w}: not a shared send");
                    };
                    assert!(conns.iter().all(|c| c.worker() == w), "worker {w}");
                    got.extend(conns);
                    frames.push(frame);
                }
            }
            assert_eq!(commands, usize::from(w != 1), "commands for worker {w}");
        }
        got.sort();
        let mut want = conns.clone();
        want.sort();
        assert_eq!(got, want, "every subscriber once");
        assert_eq!(frames.len(), 2);
        assert!(Arc::ptr_eq(&frames[0], &frames[1]), "one frame, shared");
        assert_eq!(&frames[0][..], b"\x81\x05hello");
    }

    #[test]
    fn a_message_goes_to_the_subscribers_that_speak_its_protocol_only() {
        let b = Bcast::default();
        let id = ChannelId::Num(7);
        assert_eq!(b.create(id.clone()), Ok(true));
        for i in 1..=4 {
            assert!(b.subscribe(&id, ConnId::new(0, i, 1), |_| true));
        }
        // 1 and 3 speak LAppS, 2 RAW, 4 is gone.
        let speaks = |c: ConnId| match c.index() {
            1 | 3 => Some(Speaks::Lapps),
            2 => Some(Speaks::Raw),
            _ => None,
        };
        let lapps = b.recipients(&id, speaks, Speaks::Lapps).unwrap().concat();
        assert_eq!(lapps, vec![ConnId::new(0, 1, 1), ConnId::new(0, 3, 1)]);
        let raw = b.recipients(&id, speaks, Speaks::Raw).unwrap().concat();
        assert_eq!(raw, vec![ConnId::new(0, 2, 1)]);
        // The gone one was pruned; the others stay subscribed.
        let all = |c: ConnId| (c.index() != 4).then_some(Speaks::Raw);
        assert_eq!(
            b.recipients(&id, all, Speaks::Raw).unwrap().concat().len(),
            3
        );
    }
}
