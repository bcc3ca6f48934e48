//! Host answers on LAppS connections that any thread may send, in their turn.
//!
//! Responses carry no id: the client matches them to its calls by order. When the host
//! answers a request itself (-32700, -32600, -32603) while the app still owes responses to
//! earlier ones, its answer must leave right after the last of those, and before the response
//! to any later request. The instance that made the answer holds it (`service::lua::held`),
//! but the responses it waits for may be sent by another thread (a standalone service the
//! requests were handed to): that thread may take the response to the request before the
//! held answer and the one after it in one go, and post both before the instance looks again
//! (a trial saw `[ok, ok, -32700]` for `[call, garbage, call]` in 21 runs of 50). So the held
//! answer is also put here, with the count of responses it waits for, and the thread that
//! takes the last of those queues it right behind that response, in its own outbox: in order.
//!
//! Whoever takes an answer out of here sends it (the instance, when it finds its turn has
//! come first; or a responding thread): exactly once. The count of answers here is read by
//! every response, so that nothing is locked while none waits.
//!
//! Ordering: `share` counts the answer before it reads how many responses are owed; a
//! responder takes its response (an RMW of the hub's owed count) before it reads the count
//! here ([`SharedAnswers::any_waiting`]); all four accesses are SeqCst (on x86-64 they cost
//! what Acquire/AcqRel do). So either the owed count `share` reads already lacks the
//! response, or the responder sees the answer counted and waits for the lock `share` holds;
//! and a responder that sees none has nothing to do for this response, before or after it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::handle::ConnId;

struct Waiting {
    id: u64,
    /// Responses still to be taken before this answer's turn.
    remaining: u64,
    cbor: Vec<u8>,
}

#[derive(Default)]
pub struct SharedAnswers {
    by_conn: Mutex<HashMap<ConnId, VecDeque<Waiting>>>,
    /// Answers in `by_conn`.
    count: AtomicUsize,
}

impl SharedAnswers {
    /// Puts the answer `id` (unique per connection) to `conn` here, behind the responses the
    /// connection is owed now (`owed`, read after the answer is counted).
    pub fn share(&self, conn: ConnId, id: u64, cbor: Vec<u8>, owed: impl FnOnce() -> u64) {
        let mut by_conn = self.lock();
        self.count.fetch_add(1, Ordering::SeqCst);
        let remaining = owed();
        by_conn.entry(conn).or_default().push_back(Waiting {
            id,
            remaining,
            cbor,
        });
    }

    /// The instance, whose answers `ids` to `conn` have had their turn: `send` gets those still
    /// here (a responder sent the others), in order, and must queue and post them: it runs
    /// with the lock held and the answers still counted, so that a responder taking the next
    /// response waits for the post instead of overtaking it.
    pub fn send_own(&self, conn: ConnId, ids: &[u64], send: impl FnOnce(Vec<Vec<u8>>)) {
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut by_conn = self.lock();
        let Some(list) = by_conn.get_mut(&conn) else {
            return;
        };
        let mut found = Vec::new();
        for id in ids {
            if let Some(at) = list.iter().position(|w| w.id == *id) {
                if let Some(w) = list.remove(at) {
                    found.push(w.cbor);
                }
            }
        }
        if list.is_empty() {
            by_conn.remove(&conn);
        }
        let n = found.len();
        if n > 0 {
            send(found);
        }
        self.count.fetch_sub(n, Ordering::SeqCst);
    }

    /// The answer `id` to `conn` when it is still here (to be dropped by the caller); None
    /// when a responder sent it already.
    pub fn take(&self, conn: ConnId, id: u64) -> Option<Vec<u8>> {
        if self.count.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let mut by_conn = self.lock();
        let list = by_conn.get_mut(&conn)?;
        let at = list.iter().position(|w| w.id == id)?;
        let cbor = list.remove(at).map(|w| w.cbor);
        if list.is_empty() {
            by_conn.remove(&conn);
        }
        self.count.fetch_sub(1, Ordering::SeqCst);
        cbor
    }

    /// A responder, right after taking a response (`Hub::take_response`): whether any answer
    /// waits here at all; when none does, nothing is to be done for this response.
    pub fn any_waiting(&self) -> bool {
        self.count.load(Ordering::SeqCst) != 0
    }

    /// A responder, after taking a response to `conn` and before queuing it: the answers whose
    /// turn had come already (they wait for responses taken before, nothing else), to be
    /// queued ahead of it.
    pub fn due_before_response(&self, conn: ConnId) -> Vec<Vec<u8>> {
        self.due(conn, false)
    }

    /// A responder, right after queuing a response to `conn`: the answers whose turn this
    /// response was the last wait of, to be queued behind it.
    pub fn due_after_response(&self, conn: ConnId) -> Vec<Vec<u8>> {
        self.due(conn, true)
    }

    fn due(&self, conn: ConnId, one_more: bool) -> Vec<Vec<u8>> {
        let mut by_conn = self.lock();
        let Some(list) = by_conn.get_mut(&conn) else {
            return Vec::new();
        };
        if one_more {
            for w in list.iter_mut() {
                w.remaining = w.remaining.saturating_sub(1);
            }
        }
        let mut due = Vec::new();
        while list.front().is_some_and(|w| w.remaining == 0) {
            if let Some(w) = list.pop_front() {
                due.push(w.cbor);
            }
        }
        if list.is_empty() {
            by_conn.remove(&conn);
        }
        self.count.fetch_sub(due.len(), Ordering::SeqCst);
        due
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, VecDeque<Waiting>>> {
        // A panic while it was held left nothing half-changed: every change is one step.
        self.by_conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(i: u32) -> ConnId {
        ConnId::new(0, i, 1)
    }

    #[test]
    fn an_answer_leaves_behind_the_responses_it_waits_for() {
        let s = SharedAnswers::default();
        let c = conn(1);
        s.share(c, 1, b"err".to_vec(), || 2);
        assert!(s.due_before_response(c).is_empty());
        assert!(s.due_after_response(c).is_empty(), "one of two");
        assert!(s.due_before_response(c).is_empty());
        assert_eq!(s.due_after_response(c), [b"err".to_vec()]);
        assert_eq!(s.take(c, 1), None, "sent by the responder");
        assert_eq!(s.count.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn an_answer_waiting_for_nothing_goes_ahead_of_the_next_response() {
        let s = SharedAnswers::default();
        let (c, d) = (conn(1), conn(2));
        s.share(c, 1, b"a".to_vec(), || 0);
        s.share(c, 2, b"b".to_vec(), || 1);
        assert!(s.due_before_response(d).is_empty(), "another connection's");
        assert_eq!(s.due_before_response(c), [b"a".to_vec()]);
        assert_eq!(s.due_after_response(c), [b"b".to_vec()]);
    }

    #[test]
    fn the_instance_sends_those_of_its_answers_no_responder_sent() {
        let s = SharedAnswers::default();
        let c = conn(1);
        s.share(c, 1, b"a".to_vec(), || 1);
        s.share(c, 2, b"b".to_vec(), || 2);
        s.share(c, 3, b"c".to_vec(), || 3);
        assert_eq!(s.due_after_response(c), [b"a".to_vec()]);
        let mut sent = Vec::new();
        s.send_own(c, &[1, 2, 3], |found| {
            assert_eq!(s.count.load(Ordering::SeqCst), 2, "counted while sent");
            sent = found;
        });
        assert_eq!(sent, [b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(s.count.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_instance_takes_back_what_no_responder_sent() {
        let s = SharedAnswers::default();
        let c = conn(1);
        s.share(c, 7, b"x".to_vec(), || 3);
        assert_eq!(s.take(c, 8), None);
        assert_eq!(s.take(c, 7), Some(b"x".to_vec()));
        assert!(s.due_after_response(c).is_empty());
        assert_eq!(s.count.load(Ordering::SeqCst), 0);
    }
}
