//! Deadlines (handshake, close, idle ping, a message being received) and the graceful
//! shutdown sweep.

use std::cmp::Reverse;
use std::os::fd::AsRawFd;
use std::time::Instant;

use super::{Ending, Worker, SHUTDOWN_GRACE};
use crate::net::conn::Phase;
use crate::net::sys;
use crate::ws::codec::{self, Role};
use crate::ws::handshake;
use crate::ws::{close, Opcode};

// The lines of a close given up on after every extension count them.
const _: () = assert!(crate::net::conn::Conn::MAX_CLOSE_EXTENSIONS == 20);

impl Worker {
    pub(super) fn run_timers(&mut self) {
        self.compact_timers();
        let now = Instant::now();
        while let Some(&Reverse((at, index, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(c) = self.conns.get_gen_mut(index, generation) else {
                continue;
            };
            // Lazy deletion: only the connection's current deadline counts.
            if c.deadline != Some(at) {
                continue;
            }
            c.deadline = None;
            let closing = matches!(c.phase, Phase::Closing | Phase::Finishing | Phase::Draining);
            // A peer still taking what we sent before our Close (or before our FIN) gets
            // another close timeout, up to a bound: the timeout is for a peer that stopped,
            // not for a slow one.
            let slow_reader = closing
                && c.close_extensions < crate::net::conn::Conn::MAX_CLOSE_EXTENSIONS
                && c.took_more();
            if slow_reader {
                c.close_extensions += 1;
            }
            // Given up on while it still reads, slowly: the log says why the wait ended then.
            let extended = c.close_extensions == crate::net::conn::Conn::MAX_CLOSE_EXTENSIONS;
            // Our side is shut but the peer has not acknowledged all we wrote (our FIN waits
            // behind it): still finishing, and given up on as such (a reset, and a line), not
            // as a peer that only kept its end open. The count includes the FIN itself: only
            // our FIN unacknowledged (a peer gone after taking every byte) is not such a case.
            let untaken = c.phase == Phase::Draining
                && sys::unacked_bytes(c.fd.as_raw_fd()).is_some_and(|n| n > 1);
            let phase = if untaken { Phase::Finishing } else { c.phase };
            // Our Close still queued behind what the peer has not read: it could not answer.
            let close_unsent = c.out.bytes() > 0;
            match phase {
                Phase::Handshake { .. } => self.handshake_timed_out(index),
                _ if slow_reader => self.arm_close_deadline(index),
                Phase::Closing if extended => self.end(
                    index,
                    Ending::Timeout(
                        "no Close from the peer within 21 close timeouts (close_timeout_ms, \
                         extended 20 times as it read our bytes slowly)",
                    ),
                ),
                Phase::Closing if close_unsent => self.end(
                    index,
                    Ending::Timeout(
                        "the peer stopped reading before our Close reached it (close_timeout_ms)",
                    ),
                ),
                Phase::Closing => self.end(
                    index,
                    Ending::Timeout("no Close from the peer within close_timeout_ms"),
                ),
                Phase::Finishing if extended => self.end(
                    index,
                    Ending::Timeout(
                        "the peer did not take our last bytes within 21 close timeouts \
                         (close_timeout_ms, extended 20 times as it read them slowly)",
                    ),
                ),
                Phase::Finishing => self.end(
                    index,
                    Ending::Timeout("the peer did not take our last bytes within close_timeout_ms"),
                ),
                // Everything was said: only the peer's end of TCP is missing.
                Phase::Draining => self.end(index, Ending::PeerKeptOpen),
                Phase::Open => self.open_timer(index, now),
                // Its replies are in the command queue, behind batches a turn takes only part
                // of (`TAKE_BYTES`): they are on their way, wait for them.
                Phase::Answering(..) if self.replies_queued(index) => {
                    let at = now + self.answer_wait();
                    self.set_deadline(index, at);
                }
                // The service did not answer in time: close without the rest of its replies.
                Phase::Answering(code, _) => {
                    self.log_unanswered(index, generation, code);
                    self.close_answered(index)
                }
            }
        }
    }

    /// The line that says a connection is closed before its service answered everything it
    /// sent: the replies it owes and sends later are dropped (the app sees `nil, "closed"`).
    fn log_unanswered(&mut self, index: u32, generation: u32, code: Option<u16>) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        let name = c.service.as_ref().map_or("", |s| s.name()).to_owned();
        // A LAppS app may hand requests to another service, which owes the responses then (a
        // trial's service had handled everything; its standalone had not answered).
        let lapps = c
            .service
            .as_ref()
            .is_some_and(|s| s.speaks() == crate::net::hub::Speaks::Lapps);
        let what = match lapps {
            true => {
                "handled all it sent, or the responses it is owed were not all sent (by it \
                     or a service it hands requests to),"
            }
            false => "handled all it sent",
        };
        let peer = c.peer;
        let handle = self.conn_id(index, generation).as_u64();
        let code = code.map_or_else(|| "a Close".to_owned(), |c| format!("Close {c}"));
        let setting = if self.shutdown_since.is_some() {
            "close_timeout_ms, 2 s at most during a shutdown"
        } else {
            "close_timeout_ms"
        };
        crate::info_limited!(
            "closing {peer} ({handle:#x}) with {code}: service {name} had not {what} within {} \
             ms ({setting}); the replies it sends from now on are dropped",
            self.answer_wait().as_millis()
        );
    }

    /// A request that began but did not end in time gets 408 (RFC 9110 15.5.9) and the
    /// connection is finished after it, bounded by the close timeout; a peer that sent
    /// nothing (or has not finished its TLS handshake) has no request to answer and is closed.
    fn handshake_timed_out(&mut self, index: u32) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        if c.inbuf.is_empty() {
            // Over TLS, `inbuf` holds what was decrypted: the peer may have sent records.
            let why = match c.tls.as_deref() {
                None => "nothing received within handshake_timeout_ms",
                Some(t) if !t.started => "nothing received within handshake_timeout_ms",
                Some(t) if t.conn.is_handshaking() => {
                    "TLS handshake not finished within handshake_timeout_ms"
                }
                Some(_) => "no request after the TLS handshake within handshake_timeout_ms",
            };
            return self.end(index, Ending::Timeout(why));
        }
        crate::info_limited!(
            "rejected {}: HTTP 408 request incomplete at the handshake timeout{}",
            c.peer,
            super::quoted_request_line(&c.inbuf)
        );
        let answer = handshake::error_response_to(&c.inbuf, 408, "request timeout");
        self.answer_and_finish(index, answer);
    }

    /// Deadlines are deleted lazily (a connection that ends or moves its deadline leaves its
    /// old entry until it is due), so with a long idle timeout and many short connections the
    /// heap would hold mostly dead entries: past twice the live connections, drop them.
    fn compact_timers(&mut self) {
        if self.timers.len() <= 2 * self.conns.len() + 1024 {
            return;
        }
        let conns = &self.conns;
        self.timers.retain(|&Reverse((at, index, generation))| {
            conns
                .get_gen(index, generation)
                .is_some_and(|c| c.deadline == Some(at))
        });
    }

    /// An open connection's deadline: its message's (`message_due`) or the idle check's,
    /// whichever is first; after the idle check the other stays armed.
    fn open_timer(&mut self, index: u32, now: Instant) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        // While its service is behind we do not read it: the resume moves the message's
        // deadline by the time paused, and arms it again.
        if c.message_due.is_some_and(|due| due <= now) && !c.service_paused {
            return self.message_timed_out(index);
        }
        self.idle_check(index, now);
        self.arm_message_deadline(index);
    }

    /// Makes the connection's deadline its message's when that comes first (an open
    /// connection, read: not paused by its service).
    pub(super) fn arm_message_deadline(&mut self, index: u32) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        let Some(due) = c.message_due else {
            return;
        };
        if c.phase == Phase::Open && !c.service_paused && c.deadline.is_none_or(|d| due < d) {
            self.set_deadline(index, due);
        }
    }

    /// A message still incomplete `message_timeout` after it began (a peer trickling it to
    /// hold its buffer): its bytes are given back and the connection is failed with 1008
    /// after the replies its service owes.
    fn message_timed_out(&mut self, index: u32) {
        let who = self.who(index);
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        c.message_due = None;
        let (held, buffered) = c
            .decoder
            .take()
            .map_or((0, 0), |d| (d.held(), d.buffered()));
        // And the bytes of a frame not decoded yet (a header not whole: a re-trial's line said
        // "0 bytes of it received" of a connection that had sent some).
        let buffered = buffered + c.inbuf.len();
        self.opts.assembly.update(held, 0);
        let timeout = self.opts.message_timeout.unwrap_or_default().as_millis();
        if c.out_paused {
            // Not a slow sender: we stopped reading it, as it does not read what we send (a
            // trial's line blamed a client that had sent hundreds of whole messages).
            crate::info_limited!(
                "closing {who}: a message still incomplete after message_timeout_ms ({timeout} \
                 ms; {buffered} bytes of it received), as it was not read: it does not read \
                 what we send ({} bytes queued for it, above outbound_high_water), close code {}",
                c.out.bytes(),
                close::POLICY
            );
        } else {
            crate::info_limited!(
                "closing {who}: a message still incomplete after message_timeout_ms ({timeout} \
                 ms; {buffered} bytes of it received), close code {}",
                close::POLICY
            );
        }
        self.fail_after_replies(index, close::POLICY, "message not complete in time");
    }

    pub(super) fn idle_check(&mut self, index: u32, now: Instant) {
        let Some(idle) = self.opts.idle_timeout else {
            return;
        };
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        // A peer that takes what we send is not idle, even when it sends nothing (and its Pong
        // may wait unread while `out_paused`).
        if c.took_more() {
            c.last_activity = now;
        }
        let seen = c.last_activity;
        let quiet = now.saturating_duration_since(seen);
        if c.service_paused {
            // We stopped reading it because its service is behind: its silence, or a Pong
            // waiting unread in the socket, says nothing about the peer. Look again later.
            // (A peer that does not read our data, `out_paused`, is treated as idle.)
            self.set_deadline(index, now + idle);
        } else if quiet < idle {
            let at = seen + idle;
            self.set_deadline(index, at);
        } else if c.ping_outstanding {
            let who = self.who(index);
            crate::info_limited!("closing {who}: idle timeout (no answer to ping)");
            self.start_close(index, close::GOING_AWAY);
        } else {
            c.ping_outstanding = true;
            c.out.append_with(&mut self.pool, |b| {
                codec::encode_control(b, Role::Server, Opcode::Ping, b"", [0; 4])
            });
            self.mark_dirty(index);
            self.set_deadline(index, now + idle);
        }
    }

    pub(super) fn check_shutdown(&mut self) {
        if !self.hub.is_shutting_down() {
            return;
        }
        let now = Instant::now();
        match self.shutdown_since {
            None => {
                self.shutdown_since = Some(now);
                for index in self.conns.indices() {
                    let phase = self.conns.get_mut(index).map(|c| c.phase);
                    match phase {
                        // What the peer sent before is answered first (bounded by the close
                        // timeout), then Close 1001: a request the service took is not left
                        // without its reply. One already waiting for its answers keeps waiting.
                        Some(Phase::Open) => self.go_away(index, close::GOING_AWAY),
                        // Already waiting for its answers: within the shutdown's share too.
                        Some(Phase::Answering(..)) => {
                            let at = now + self.answer_wait();
                            let sooner = self
                                .conns
                                .get_mut(index)
                                .is_some_and(|c| c.deadline.is_none_or(|d| at < d));
                            if sooner {
                                self.set_deadline(index, at);
                            }
                        }
                        Some(Phase::Handshake { .. }) => self.end(index, Ending::Shutdown),
                        _ => {}
                    }
                }
            }
            Some(since) if now.duration_since(since) > SHUTDOWN_GRACE => {
                for index in self.conns.indices() {
                    self.end(index, Ending::Shutdown);
                }
            }
            Some(_) => {}
        }
    }

    /// Publishes the queued outbound bytes for the balancer (the connection count is kept
    /// exact by slot reservation, see `Port::reserve_slot`).
    pub(super) fn publish_load(&mut self) {
        let port = self.hub.port(self.id);
        port.queued_bytes
            .store(self.pool.queued_bytes, std::sync::atomic::Ordering::Relaxed);
    }
}
