//! Per-instance host state shared by the Lua-facing functions of one state.
//!
//! Owns the outbox (commands gathered per worker and posted once per batch), the stop signal
//! and the instruction budget counter. Lives on the instance thread only (`Rc`, not `Send`);
//! it never touches a socket: everything outbound goes through the [`Hub`].

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::api::bcast::Bcast;
use super::held::HeldAnswers;
use super::lua_memory::LuaMemory;
use super::spec::ServiceSpec;
use crate::net::handle::ConnId;
use crate::net::hub::{Command, Hub};

/// Commands per worker after which the outbox posts without waiting for the end of the batch
/// (keeps memory bounded when one callback sends a lot).
const EARLY_POST: usize = 1024;
/// ... or once the commands pushed ask to deliver this many bytes (a broadcast's frame counted
/// once per recipient): a worker applies a batch whole, so this keeps the sending one batch
/// asks of it in one go near this size (the command that crosses it is in the batch, so one
/// large broadcast makes a large batch; a batch's small replies, `send_small`, are bounded
/// the same way on their own).
const EARLY_POST_BYTES: usize = 256 * 1024;
/// Unposted answers to one connection (the hub's count, every thread's) at which an answer
/// queued here posts its worker's commands at once: far enough below the count's 511 that a
/// few threads doing so at the same time keep it exact.
const POST_UNPOSTED_AT: u32 = 128;
/// Of those, the runs queued here that make a post worth it.
const POST_OWN_RUNS: usize = 16;

/// The stop signal of one service: `must_stop()` reads it, `nap` sleeps on it.
#[derive(Default)]
pub struct Stop {
    flag: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
    /// The service stops to be replaced by a new version (see [`Stop::set_handover`]).
    handover: AtomicBool,
    /// A redeploy replaced or removed this version ([`Stop::set_retiring`]).
    retiring: AtomicBool,
    /// This version did not start ([`Stop::set_start_failed`]).
    start_failed: AtomicBool,
    /// This version starts beside the running one it is to replace ([`Stop::set_new_version`]).
    new_version: AtomicBool,
}

impl Stop {
    /// [`set`](Self::set), for a version a redeploy replaces: its `mqr` queues stay for the
    /// new version, so its receives and polls take nothing more (they answer as on an empty,
    /// stopped queue) instead of draining what senders that keep posting keep refilling.
    pub fn set_handover(&self) {
        self.handover.store(true, Ordering::SeqCst);
        self.set();
    }

    /// A redeploy replaced or removed this version: what its instances still log (closes,
    /// `onShutdown`) is tagged so, apart from the new version's lines under the same name.
    pub fn set_retiring(&self) {
        self.retiring.store(true, Ordering::SeqCst);
    }

    /// This version's start failed or was given up on: what its threads still log (an
    /// `init` that ends late, the `onShutdown` of instances that had started) is tagged so,
    /// apart from the running version's lines under the same name.
    pub fn set_start_failed(&self) {
        self.start_failed.store(true, Ordering::SeqCst);
    }

    /// While this version starts beside the running one it replaces (`on`), what its
    /// instances log is tagged so, apart from the running version's lines under the same
    /// name; off once it serves.
    pub fn set_new_version(&self, on: bool) {
        self.new_version.store(on, Ordering::SeqCst);
    }

    /// Whether a redeploy replaced or removed this version ([`Stop::set_retiring`]).
    pub fn retiring(&self) -> bool {
        self.retiring.load(Ordering::SeqCst)
    }

    /// Whether the service stops to hand its queues over ([`Stop::set_handover`]).
    pub fn handing_over(&self) -> bool {
        self.handover.load(Ordering::SeqCst)
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    pub fn set(&self) {
        {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.flag.store(true, Ordering::SeqCst);
            self.cv.notify_all();
        }
        // Blocked mqr calls wait on their queue, not on `cv`: make them re-check the flag.
        crate::service::mqr::registry().wake_all();
    }

    /// Sleeps up to `d`; returns false when woken by `set` (checked under the lock, so a `set`
    /// racing with the start of the sleep is never missed).
    pub fn sleep(&self, d: Duration) -> bool {
        let g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let (_g, _) = self
            .cv
            .wait_timeout_while(g, d, |_| !self.flag.load(Ordering::SeqCst))
            .unwrap_or_else(|e| e.into_inner());
        !self.is_set()
    }
}

/// Outbound commands of one instance, grouped by destination worker.
pub(crate) struct Outbox {
    per_worker: Vec<Vec<Command>>,
    /// Bytes the commands `push` queued per worker since its last post ask to deliver
    /// (large messages and broadcasts: a loop of 1 MiB sends, or a few broadcasts to many
    /// connections, reach EARLY_POST_BYTES long before EARLY_POST commands).
    pushed_bytes: Vec<usize>,
    /// Per worker, the LAppS connections with a counted answer (`Hub::take_response`,
    /// `Hub::hold_answer`) queued here: each is `Hub::posted` once its worker's commands are.
    counted: Vec<Vec<ConnId>>,
}

impl Outbox {
    fn new(workers: usize) -> Outbox {
        Outbox {
            per_worker: (0..workers).map(|_| Vec::new()).collect(),
            pushed_bytes: vec![0; workers],
            counted: (0..workers).map(|_| Vec::new()).collect(),
        }
    }
}

pub(crate) struct HostCtx {
    pub service: Arc<str>,
    pub instance: usize,
    pub hub: Arc<Hub>,
    pub bcast: Arc<Bcast>,
    pub stop: Arc<Stop>,
    /// Where this instance notes what its state takes, for the status report.
    memory: Arc<LuaMemory>,
    /// Where a standalone instance notes its `run()` failures, for the status report.
    pub run_state: Arc<super::run_state::RunState>,
    pub auto_fragment: Option<usize>,
    outbox: RefCell<Outbox>,
    /// Instructions left in the current callback (only used when a budget is set).
    pub budget_left: Cell<u64>,
    pub budget: Option<u64>,
    /// A standalone service's state: its polling points start new budget slices, once `run()`
    /// has begun (`init()` gets one budget, like any callback).
    standalone: bool,
    in_run: Cell<bool>,
    /// Connections of this instance it asked to close or let go: their queued messages are
    /// skipped (one set, read once per message).
    pub closing: RefCell<HashSet<ConnId>>,
    /// Those of `closing` that were let go ([`go_away`](Self::go_away)): LAppS connections
    /// whose app returned other than `true` from `onMessage`, which the worker closes once
    /// the answers they are owed have left. Their Close is not queued yet.
    pub leaving: RefCell<HashSet<ConnId>>,
    /// The host's LAppS answers waiting behind responses the app still owes.
    pub held: HeldAnswers,
}

/// What a blocking host call answers in a network service, whose callbacks must not wait: a
/// wait there would stall every connection of the instance.
pub(crate) const NOT_IN_NETWORK: &str = "not in a network service (it would block its connections)";

impl HostCtx {
    /// Whether this state may wait in host calls (`nap`, `mqr:receive`, `cws`): a standalone
    /// service's may, a network service's may not.
    pub fn may_block(&self) -> bool {
        self.standalone
    }

    /// The host of instance `instance` of `spec`.
    pub fn new(
        spec: &ServiceSpec,
        instance: usize,
        hub: Arc<Hub>,
        bcast: Arc<Bcast>,
        stop: Arc<Stop>,
        memory: Arc<LuaMemory>,
        run_state: Arc<super::run_state::RunState>,
    ) -> HostCtx {
        let workers = hub.workers();
        let budget = spec.instruction_budget;
        HostCtx {
            service: spec.name.as_str().into(),
            instance,
            hub,
            bcast,
            stop,
            memory,
            run_state,
            auto_fragment: spec.auto_fragment,
            outbox: RefCell::new(Outbox::new(workers)),
            budget_left: Cell::new(budget.unwrap_or(u64::MAX)),
            budget,
            standalone: spec.standalone,
            in_run: Cell::new(false),
            closing: RefCell::new(HashSet::new()),
            leaving: RefCell::new(HashSet::new()),
            held: HeldAnswers::default(),
        }
    }

    /// Closes `conn` with `code`: from now on sends to it are refused (by every thread), and
    /// the Close is queued behind what this state sent it before.
    pub fn close(&self, conn: ConnId, code: u16) {
        self.close_with(conn, code, None);
    }

    /// [`close`](Self::close) with a reason in the Close frame (UTF-8, at most
    /// [`crate::ws::close::MAX_REASON`] bytes).
    pub fn close_with(&self, conn: ConnId, code: u16, reason: Option<Box<str>>) {
        self.hub.set_ending(conn);
        self.push(conn, Command::Close { conn, code, reason });
    }

    /// Ends the LAppS connection `conn` with `code` after the answers it is owed, whichever
    /// thread sends them (within the close timeout, as for a peer's Close): unlike
    /// [`close`](Self::close), answers and other sends to it are taken until its Close is
    /// queued. Its messages still queued here are skipped.
    pub fn go_away(&self, conn: ConnId, code: u16) {
        self.closing.borrow_mut().insert(conn);
        self.leaving.borrow_mut().insert(conn);
        self.push(conn, Command::GoAway { conn, code });
    }

    /// Whether this instance queued `conn`'s Close (it is in `closing`, not merely let go).
    pub fn closed_here(&self, conn: ConnId) -> bool {
        self.closing.borrow().contains(&conn) && !self.leaving.borrow().contains(&conn)
    }

    /// Queues a command for `conn`'s worker; posted by `flush` (or early when many pile up).
    pub fn push(&self, conn: ConnId, cmd: Command) {
        let w = conn.worker();
        let full = {
            let mut ob = self.outbox.borrow_mut();
            let bytes = cmd.delivered_bytes();
            let Some(list) = ob.per_worker.get_mut(w) else {
                return;
            };
            list.push(cmd);
            let n = list.len();
            let pushed = ob.pushed_bytes.get_mut(w).map_or(0, |b| {
                *b += bytes;
                *b
            });
            n >= EARLY_POST || pushed >= EARLY_POST_BYTES
        };
        if full {
            self.post(w);
        }
    }

    /// Queues one small frame for `conn`, written by `encode` straight into the batch buffer
    /// of `conn`'s worker (extending the last `SendBatch` when it is the last command, so the
    /// order with closes and other commands is kept). No allocation per message.
    pub fn send_small(&self, conn: ConnId, encode: impl FnOnce(&mut Vec<u8>)) {
        let w = conn.worker();
        let full = {
            let mut ob = self.outbox.borrow_mut();
            let Some(list) = ob.per_worker.get_mut(w) else {
                return;
            };
            if !matches!(list.last(), Some(Command::SendBatch { .. })) {
                // Buffers the worker emptied come back through its port: no allocation in a
                // steady stream of replies.
                let spare = self.hub.port(w).spare.pop().unwrap_or_default();
                list.push(Command::SendBatch {
                    buf: spare.buf,
                    sends: spare.sends,
                });
            }
            let mut big = false;
            if let Some(Command::SendBatch { buf, sends }) = list.last_mut() {
                let before = buf.len();
                encode(buf);
                let len = (buf.len() - before) as u32;
                // Consecutive replies to one connection (a pipelined client's run) become one
                // entry: the worker looks the connection up and appends once for all of them.
                match sends.last_mut() {
                    Some((c, l)) if *c == conn && l.checked_add(len).is_some() => *l += len,
                    _ => sends.push((conn, len)),
                }
                big = buf.len() >= EARLY_POST_BYTES;
            }
            big || list.len() >= EARLY_POST
        };
        if full {
            self.post(w);
        }
    }

    /// A counted answer to `conn` (see `Hub::take_response`) was just queued here: it stops
    /// counting as unposted once this outbox is posted to `conn`'s worker.
    ///
    /// A run of answers to one connection (a pipelining client's, all queued before the next
    /// post) keeps one entry: each answer after the first is uncounted at once, as the entry
    /// keeps the count above zero until the post that carries them all. So the count stays
    /// small however many responses one batch holds (it would saturate at 511).
    pub fn queued_counted(&self, conn: ConnId) {
        let repeated = {
            let mut ob = self.outbox.borrow_mut();
            let Some(list) = ob.counted.get_mut(conn.worker()) else {
                return;
            };
            let repeated = list.last() == Some(&conn);
            if !repeated {
                list.push(conn);
            }
            repeated
        };
        if repeated {
            // The run's first entry still counts: never the last unposted answer.
            self.posted(conn);
        } else if self
            .hub
            .unposted_answers(conn)
            .is_some_and(|n| n >= POST_UNPOSTED_AT)
            && self.counted_here(conn) >= POST_OWN_RUNS
        {
            // Many runs to `conn` between answers to others: posted now, before the hub's
            // count of them (at most 511) overflows. Past that no post can tell when an
            // ending connection has had its last answer, and its Close waits for the
            // worker's close timeout. (Only when enough of them are this thread's: the count
            // includes answers held elsewhere, which a post here does not lower.)
            self.post(conn.worker());
        }
    }

    /// The counted answers to `conn` queued here and not yet posted (each entry of a run
    /// counts one unposted answer, see [`queued_counted`](Self::queued_counted)).
    pub fn counted_here(&self, conn: ConnId) -> usize {
        let ob = self.outbox.borrow();
        ob.counted
            .get(conn.worker())
            .map_or(0, |list| list.iter().filter(|&&c| c == conn).count())
    }

    /// One counted answer to `conn` is posted or dropped ([`Hub::posted`]); when it was the
    /// last an ending connection waited for, its Close is queued here, behind what this
    /// state sent it.
    pub fn posted(&self, conn: ConnId) {
        if self.hub.posted(conn) {
            self.close(conn, 1000);
        }
    }

    /// Posts the commands for `conn`'s worker now: a host answer must reach the worker before a
    /// response another thread sends to a later request (`held`).
    pub fn post_now(&self, conn: ConnId) {
        self.post(conn.worker());
    }

    /// Posts every worker's commands with one wake-up each.
    pub fn flush(&self) {
        for w in 0..self.hub.workers() {
            self.post(w);
        }
    }

    fn post(&self, w: usize) {
        let (batch, mut counted) = {
            let mut ob = self.outbox.borrow_mut();
            if let Some(b) = ob.pushed_bytes.get_mut(w) {
                *b = 0;
            }
            let counted = ob
                .counted
                .get_mut(w)
                .map(std::mem::take)
                .unwrap_or_default();
            let batch = match ob.per_worker.get_mut(w) {
                Some(list) if !list.is_empty() => std::mem::take(list),
                _ => Vec::new(),
            };
            (batch, counted)
        };
        if !batch.is_empty() {
            // Err means the server is shutting down: the connections are closing anyway.
            let _ = self.hub.post(w, batch);
        }
        // After the post: a worker that sees the count fall finds the answers in its queue, and
        // a Close queued now (the last answer its connection waited for) follows them.
        let mut settled = false;
        for &conn in &counted {
            if self.hub.posted(conn) {
                self.close(conn, 1000);
                settled = true;
            }
        }
        if settled {
            self.post(w);
        }
        // The list's buffer goes back for the next batch (no allocation per batch).
        counted.clear();
        if let Some(list) = self.outbox.borrow_mut().counted.get_mut(w) {
            if list.is_empty() {
                *list = counted;
            }
        }
    }

    /// Starts a new budget slice (each callback, and each `must_stop()`/`nap` in `run()`).
    pub fn reset_budget(&self) {
        self.budget_left.set(self.budget.unwrap_or(u64::MAX));
    }

    /// A polling point (`must_stop()`, `nap:sleep`, an `mqr` receive, `cws:eventLoop`): a new
    /// slice in a standalone `run()`; in `init()` and in a network service's callbacks the
    /// budget stays the callback's, or a loop calling one of these could never be stopped.
    /// What the state takes is noted for the status report.
    pub fn polling_point(&self, lua: &mlua::Lua) {
        if self.standalone && self.in_run.get() {
            self.reset_budget();
        }
        self.note_memory(lua.used_memory());
    }

    /// A standalone state is about to wait (`nap`, an `mqr` post or receive): what it sent
    /// leaves now, and what it takes is noted now, not once the wait is over (a re-trial saw
    /// 0.1 MiB reported through a long nap of a service holding 18 MiB).
    pub fn before_wait(&self, lua: &mlua::Lua) {
        self.flush();
        self.note_memory(lua.used_memory());
    }

    /// Notes what this instance's state takes now (`Lua::used_memory`), for the status
    /// report.
    pub fn note_memory(&self, bytes: usize) {
        self.memory.note(self.instance, bytes);
    }

    /// A standalone service's `run()` begins: its polling points start new slices from now on.
    pub fn begin_run(&self) {
        self.in_run.set(true);
    }

    /// Its `run()` is over: `onShutdown`, like `init()`, gets one budget, which a loop over
    /// polling points (answering "stopping" at once now) cannot renew.
    pub fn end_run(&self) {
        self.in_run.set(false);
    }

    /// What the instance's log lines begin with: `[service#instance]`, `[service#instance
    /// retiring]` once a redeploy replaced or removed its version, `[service#instance failed
    /// start]` when its version did not start, `[service#instance new version]` while it
    /// starts beside the version it is to replace.
    pub fn tag(&self) -> String {
        if self.stop.start_failed.load(Ordering::SeqCst) {
            format!("[{}#{} failed start]", self.service, self.instance)
        } else if self.stop.new_version.load(Ordering::SeqCst) {
            format!("[{}#{} new version]", self.service, self.instance)
        } else if self.stop.retiring.load(Ordering::SeqCst) {
            format!("[{}#{} retiring]", self.service, self.instance)
        } else {
            format!("[{}#{}]", self.service, self.instance)
        }
    }
}

/// Collapses a multi-line Lua error (message plus traceback) into one log line.
pub(crate) fn one_line(e: &mlua::Error) -> String {
    one_line_str(&e.to_string())
}

/// [`one_line`] for a message already in text form (an error caught by `lua_pcall`).
///
/// On an instance's thread, Lua's bare "not enough memory" is followed by the service's
/// `memory_limit`, the setting an operator would change (it is this thread's tree budget).
pub(crate) fn one_line_str(s: &str) -> String {
    let line = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    let limit = crate::lapps_proto::tree_budget::limit();
    if limit == 0 || !line.contains("not enough memory") || line.contains("memory_limit") {
        return line;
    }
    format!("{line} (the service's memory_limit is {limit} bytes)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::hub::{Settle, Speaks};

    /// The peer's Close came with 600 responses owed, none held by the host: the hub marks the
    /// connection for the post that settles it. A thread then answers all 600 before its next
    /// polling point, each between answers to another client (so each is a run of its own).
    /// The count of unposted answers must stay exact, so that the last post queues the Close.
    #[test]
    fn many_runs_to_one_connection_post_early_and_the_last_post_closes_it() {
        let hub = Arc::new(Hub::new(1, 4096).unwrap());
        let spec = ServiceSpec::new("t", "t.lua");
        let host = HostCtx::new(
            &spec,
            0,
            Arc::clone(&hub),
            Arc::new(Bcast::default()),
            Arc::new(Stop::default()),
            Arc::new(LuaMemory::new(1)),
            Arc::new(crate::service::lua::run_state::RunState::new(1)),
        );
        let (ending, other) = (ConnId::new(0, 3, 1), ConnId::new(0, 4, 1));
        for c in [ending, other] {
            hub.port(0).set_speaks(c.index(), 1, Speaks::Lapps);
        }
        for _ in 0..600 {
            assert!(hub.expect_response(ending) && hub.expect_response(other));
        }
        assert_eq!(hub.close_when_settled(ending), Settle::Marked);
        for _ in 0..600 {
            for c in [ending, other] {
                assert!(hub.take_response(c));
                super::super::frame::send_message(&host, c, crate::ws::Opcode::Binary, b"r");
                host.queued_counted(c);
            }
        }
        assert!(hub.is_live(ending), "answers are still queued here");
        host.flush();
        assert!(!hub.is_live(ending), "the last post queued the Close");
        assert!(hub.is_live(other));
    }
}
