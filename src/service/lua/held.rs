//! The host's own answers on a LAppS connection, kept in request order behind the app's.
//!
//! The host answers some requests itself: a malformed one (-32700, -32600) that never reaches
//! the app, and one whose handler raised (-32603). Responses carry no id: the client matches
//! them to its calls by order (SPEC section 4). An app may answer later than it is called (it
//! keeps the handler and answers from a timer or an `mqr` message), so when the host answers
//! while the app still owes responses to earlier requests of that connection, the host's
//! answer waits here until those have left, then follows them. It waits in the hub too
//! (`net::shared_answers`): when another thread sends the responses it waits for, that thread
//! queues it right behind the last of them, in its own outbox, ahead of any response it sends
//! to a later request (looking again here after that thread's post, this instance would come
//! too late for those). Whichever finds its turn first takes it from the hub and sends it; the
//! instance posts at once what it sends itself, before the requests after it reach the app.
//!
//! Counting, per connection with answers waiting: `base` is the count of owed responses (the hub's,
//! `Hub::owed_responses`) when the first one was held, `expected` the requests that reached the app
//! since and `host_taken` those of them the host answered itself (their handler raised). The app's
//! responses since then are `base + expected - host_taken - owed now`, and an answer held when
//! `base + expected - host_taken` was `d` leaves once the app has sent that many: every request
//! before it has had its response. The count covers responses from any thread. A response another
//! thread (instance or service) has taken is sent only once that thread posts its outbox (at its
//! next polling point), so while the hub counts more unposted answers to the connection than this
//! instance holds or has queued, nothing held leaves: it would overtake. For the same reason a host
//! answer is held, not sent at once, when nothing is owed but such a taken response is still
//! unposted. This instance looks again when it sends a response itself, after each batch it
//! handles, and, while any answer waits, every few milliseconds when no batch comes
//! (`instance::serve`): the client may be waiting for those very answers.
//!
//! A connection that is ending (the peer's Close, a protocol error, the server's shutdown) waits in
//! the worker for the answers to what it sent before (`Kind::Drain`), unless the hub shows it owed
//! nothing with nothing unposted (`Hub::lapps_settled`: each answer held here counts as unposted
//! until it is posted or dropped); while its app still owes responses, or host answers wait here,
//! its close waits too ([`drain`](HeldAnswers::drain)) and goes once the last has left, or when the
//! worker's close timeout passes. With nothing held here, the responses still owed, or taken but
//! not yet posted, are waited for through the hub (`Hub::close_when_settled`): the thread whose
//! post leaves the connection settled (this instance, another, or another service's) queues its
//! Close, behind the last response (unless the hub's count of unposted answers overflowed, which
//! the threads that queue answers post early to avoid: then no post can tell, and the worker's
//! close timeout ends it). Answers of a connection that closes are dropped with it (so are the
//! responses its app still owed). At most [`MAX_WAITING`] wait per connection: past that the client
//! is closed with 1008 (it keeps sending requests the host answers while the app owes an earlier
//! one), as the worker's outbound bound would have stopped it.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};

use super::frame::send_message;
use super::host::HostCtx;
use crate::net::handle::ConnId;
use crate::net::hub::Settle;
use crate::ws::Opcode;

/// Host answers that may wait per connection.
/// Each counts as unposted on the hub (at most 511 exactly, with the other threads' answers).
pub(crate) const MAX_WAITING: usize = 128;

#[derive(Default)]
pub(crate) struct HeldAnswers {
    conns: RefCell<HashMap<ConnId, Waiting>>,
    /// The id of the next answer held (its name in the hub's `SharedAnswers`).
    next_id: std::cell::Cell<u64>,
    /// Ending connections whose close waits for the responses their app owes.
    draining: RefCell<HashSet<ConnId>>,
}

struct Waiting {
    /// Responses the connection was owed when its first answer here was held.
    base: u64,
    /// Requests of the connection that reached the app since.
    expected: u64,
    /// Of those, the ones whose response the host took (to answer them itself).
    host_taken: u64,
    /// In request order: how many responses the app must send (since `base`) before it, and
    /// its id in the hub's `SharedAnswers`, which holds the CBOR answer: whichever thread
    /// finds its turn come first (this instance, or one sending the response it waits for)
    /// takes it from there and sends it.
    answers: VecDeque<(u64, u64)>,
}

impl HeldAnswers {
    /// True when no connection has an answer or a close waiting (the per-message check).
    pub fn is_empty(&self) -> bool {
        self.conns.borrow().is_empty() && self.draining.borrow().is_empty()
    }

    /// The worker waits for the answers to what `conn` sent before it ends: true when they are
    /// all out (close now); otherwise the close goes once they are. With host answers held
    /// here, [`release`](Self::release) queues it after the last; with none, whoever posts the
    /// last response (this instance or another, or another service) does
    /// (`Hub::close_when_settled`): no host answer can be held for `conn` from now on, as all
    /// it sent has been handled. (When the hub's count of unposted answers overflowed, no post
    /// can tell, nor can this instance: the worker's close timeout ends the connection.)
    pub fn drain(&self, host: &HostCtx, conn: ConnId) -> bool {
        if !self.conns.borrow().contains_key(&conn) {
            return host.hub.close_when_settled(conn) == Settle::Now;
        }
        self.draining.borrow_mut().insert(conn);
        false
    }

    /// A request of `conn` reached the app (after `Hub::expect_response`).
    pub fn request_reached_app(&self, conn: ConnId) {
        if let Some(w) = self.conns.borrow_mut().get_mut(&conn) {
            w.expected += 1;
        }
    }

    /// Sends the host's answer `cbor` to `conn` now, or once the responses the app owes to
    /// earlier requests have left. `took`: the answer is to a request that reached the app,
    /// whose owed response the host has just taken (`Hub::take_response`). False when
    /// [`MAX_WAITING`] answers of `conn` wait already (this one is dropped: close it).
    ///
    /// Every answer held here counts as unposted on `conn` (see `Hub::hold_answer`; a taken one
    /// counts from `Hub::take_response`) until it is queued and posted, or dropped.
    pub fn answer(&self, host: &HostCtx, conn: ConnId, cbor: Vec<u8>, took: bool) -> bool {
        if took {
            if let Some(w) = self.conns.borrow_mut().get_mut(&conn) {
                w.host_taken += 1;
            }
        }
        self.release(host, conn);
        let Some(owed) = host.hub.owed_responses(conn) else {
            self.forget(host, conn);
            if took {
                host.posted(conn); // dropped
            }
            return true;
        };
        // Nothing owed may still mean a response another thread took and has not posted yet
        // (see `release`): sent now, this answer could overtake it.
        let others_unposted = host
            .hub
            .unposted_answers(conn)
            .is_some_and(|n| n as usize > host.counted_here(conn) + usize::from(took));
        let mut conns = self.conns.borrow_mut();
        if owed == 0 && !conns.contains_key(&conn) && !others_unposted {
            drop(conns);
            send_message(host, conn, Opcode::Binary, &cbor);
            if took {
                host.queued_counted(conn);
            }
            // Posted before the requests after it reach the app: another thread answering
            // one of those (a standalone it hands them to) would post that response first.
            host.post_now(conn);
            return true;
        }
        let w = conns.entry(conn).or_insert_with(|| Waiting {
            base: owed as u64,
            expected: 0,
            host_taken: 0,
            answers: VecDeque::new(),
        });
        if w.answers.len() >= MAX_WAITING {
            if took {
                host.posted(conn); // dropped: the connection is closed with 1008
            }
            return false;
        }
        if !took {
            host.hub.hold_answer(conn);
        }
        let due = (w.base + w.expected).saturating_sub(w.host_taken);
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let hub = &host.hub;
        hub.answers().share(conn, id, cbor, || {
            hub.owed_responses(conn).map_or(0, u64::from)
        });
        w.answers.push_back((due, id));
        true
    }

    /// Sends the answers of `conn` whose turn has come (after a response to it left), and
    /// its close when it is ending and nothing more is owed.
    pub fn release(&self, host: &HostCtx, conn: ConnId) {
        let owed = host.hub.owed_responses(conn);
        let (due, dropped) = {
            let mut conns = self.conns.borrow_mut();
            match (conns.get_mut(&conn), owed) {
                (None, _) => (Vec::new(), 0),
                (Some(_), None) => {
                    // Gone or closing: its answers go with it.
                    let dropped = conns
                        .remove(&conn)
                        .map_or(0, |w| taken_back(host, conn, &w.answers));
                    (Vec::new(), dropped)
                }
                // Answers another thread took for `conn` and has not posted yet: one of them
                // may be a response an answer here waits for, which is taken but not yet sent
                // (not known when the count is not exact).
                (Some(w), Some(_))
                    if host.hub.unposted_answers(conn).is_some_and(|n| {
                        n as usize > w.answers.len() + host.counted_here(conn)
                    }) =>
                {
                    (Vec::new(), 0)
                }
                (Some(w), Some(owed)) => {
                    let sent = (w.base + w.expected).saturating_sub(w.host_taken + owed as u64);
                    let mut due = Vec::new();
                    while w.answers.front().is_some_and(|(d, _)| *d <= sent) {
                        if let Some((_, id)) = w.answers.pop_front() {
                            due.push(id);
                        }
                    }
                    if w.answers.is_empty() {
                        conns.remove(&conn);
                    }
                    (due, 0)
                }
            }
        };
        if !due.is_empty() {
            // Those the thread that sent the response they waited for has not sent already.
            host.hub.answers().send_own(conn, &due, |answers| {
                for cbor in answers {
                    send_message(host, conn, Opcode::Binary, &cbor);
                    host.queued_counted(conn);
                }
                host.post_now(conn);
            });
        }
        for _ in 0..dropped {
            host.posted(conn);
        }
        match owed {
            None => {
                self.draining.borrow_mut().remove(&conn);
            }
            Some(0) if !self.conns.borrow().contains_key(&conn) => {
                // Marked or Untold: the last post, or the worker's close timeout, closes it.
                if self.draining.borrow_mut().remove(&conn)
                    && host.hub.close_when_settled(conn) == Settle::Now
                {
                    host.closing.borrow_mut().insert(conn);
                    // The worker closes with the code it decided on (it waits in `Answering`).
                    host.close(conn, 1000);
                }
            }
            Some(_) => {}
        }
    }

    /// [`release`](Self::release) for every connection with answers or a close waiting
    /// (after a batch: responses sent by other services count too).
    pub fn release_all(&self, host: &HostCtx) {
        if self.is_empty() {
            return;
        }
        let mut conns: Vec<ConnId> = self.conns.borrow().keys().copied().collect();
        conns.extend(self.draining.borrow().iter().copied());
        for conn in conns {
            self.release(host, conn);
        }
    }

    /// `conn` closed: its answers go with it.
    pub fn forget(&self, host: &HostCtx, conn: ConnId) {
        if !self.is_empty() {
            let dropped = self
                .conns
                .borrow_mut()
                .remove(&conn)
                .map_or(0, |w| taken_back(host, conn, &w.answers));
            self.draining.borrow_mut().remove(&conn);
            for _ in 0..dropped {
                host.posted(conn);
            }
        }
    }
}

/// Takes `answers` of `conn` back from the hub to drop them: how many were still there (the
/// others were sent, and are counted until their sender posts them).
fn taken_back(host: &HostCtx, conn: ConnId, answers: &VecDeque<(u64, u64)>) -> usize {
    answers
        .iter()
        .filter(|&&(_, id)| host.hub.answers().take(conn, id).is_some())
        .count()
}
