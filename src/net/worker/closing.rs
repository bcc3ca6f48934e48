//! Ending connections: the close handshake (ours and the peer's), failing a connection with a
//! close code, HTTP answers that end a connection, the lingering TCP shutdown, and the final
//! removal that owes the service its `on_close`.

use std::os::fd::AsRawFd;
use std::time::Instant;

use super::{AfterCommands, Ctx, Ending, Worker, SHUTDOWN_GRACE};
use crate::debug;
use crate::net::conn::{Conn, Phase};
use crate::net::outq::OutQueue;
use crate::net::sys;
use crate::service::Owed;
use crate::ws::close::ReasonId;
use crate::ws::codec::{self, Role};

impl Worker {
    /// The peer sent Close: echo it (if we had not sent ours; after the replies the service
    /// still owes) and finish the TCP connection.
    pub(super) fn on_peer_close(&mut self, index: u32, code: Option<u16>) {
        // Already waiting for the service's answers (we go away, or the peer shut TCP): our
        // Close follows them, as planned.
        if matches!(
            self.conns.get_mut(index).map(|c| c.phase),
            Some(Phase::Answering(..))
        ) {
            return;
        }
        if self.answer_first(index, code, "") {
            return;
        }
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        if c.phase == Phase::Open {
            c.out.append_with(&mut self.pool, |b| {
                codec::encode_close(b, Role::Server, code, b"", [0; 4])
            });
        }
        self.finish_after_flush(index);
    }

    /// We start the close handshake (service request, idle timeout, shutdown).
    pub(super) fn start_close(&mut self, index: u32, code: u16) {
        self.start_close_with(index, code, "");
    }

    /// [`Self::start_close`] with a reason in our Close (an app's `ws:close`).
    pub(super) fn start_close_with(&mut self, index: u32, code: u16, reason: &str) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        if c.phase != Phase::Open {
            return;
        }
        c.out.append_with(&mut self.pool, |b| {
            codec::encode_close(b, Role::Server, Some(code), reason.as_bytes(), [0; 4])
        });
        c.phase = Phase::Closing;
        // Nothing more reaches the service; the peer's Close reply must still be read, and
        // what waits unread behind the pause gives no new edge.
        c.service_paused = false;
        self.resume_reading(index);
        self.refuse_sends(index);
        self.mark_dirty(index);
        self.arm_close_deadline(index);
    }

    /// The server ends an open connection (shutdown, a retired service version): the replies
    /// its service owes to what the peer sent come first, then our Close with `code`.
    pub(super) fn go_away(&mut self, index: u32, code: u16) {
        let open = self
            .conns
            .get_mut(index)
            .is_some_and(|c| c.phase == Phase::Open);
        if open && !self.answer_first(index, Some(code), "") {
            self.start_close(index, code);
        }
    }

    /// Fail the WebSocket connection (RFC 6455 7.1.7): send Close with `code` and `reason` (for
    /// the peer's developer: what was wrong, at most 123 bytes), then finish TCP.
    pub(super) fn fail(&mut self, index: u32, code: u16, reason: &str) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        // In Closing our Close frame is already out; a second one is not allowed.
        if matches!(c.phase, Phase::Open | Phase::Answering(..)) {
            c.out.append_with(&mut self.pool, |b| {
                codec::encode_close(b, Role::Server, Some(code), reason.as_bytes(), [0; 4])
            });
        }
        self.finish_after_flush(index);
    }

    /// [`Self::fail`] on a protocol violation, after the replies the service still owes.
    pub(super) fn fail_after_replies(&mut self, index: u32, code: u16, reason: &'static str) {
        if !self.answer_first(index, Some(code), reason) {
            self.fail(index, code, reason);
        }
    }

    /// An open connection is ending: when its service answers later (`Service::on_ending`),
    /// it waits in `Answering` for the service's `Command::Close` (or the close timeout) and
    /// then closes with `code` and `reason` (ignored without a code). False: the service
    /// answers at once, close now.
    pub(super) fn answer_first(
        &mut self,
        index: u32,
        code: Option<u16>,
        reason: &'static str,
    ) -> bool {
        let id = self.conns.generation(index).map(|g| self.conn_id(index, g));
        let Some(c) = self.conns.get_mut(index) else {
            return false;
        };
        let owed = match (&c.service, id) {
            (Some(s), Some(id)) if c.phase == Phase::Open => {
                s.on_ending(self.id, id, c.tag, c.handed)
            }
            _ => Owed::Nothing,
        };
        match owed {
            Owed::Nothing => return false,
            Owed::InCommands => {
                if let Some(id) = id {
                    // The replies are in the queue now (or in the batch being applied, which
                    // is counted as popped and applied whole before the close is looked at).
                    let queued = self.hub.port(self.id).commands.len() as u64;
                    self.close_after_commands.push(AfterCommands {
                        index,
                        generation: id.generation(),
                        until: self.popped + queued,
                    });
                }
            }
            Owed::Later => {}
        }
        let Some(c) = self.conns.get_mut(index) else {
            return false;
        };
        c.phase = Phase::Answering(code, ReasonId::of(reason));
        if let Some(s) = c.service.clone() {
            self.touched_push(&s);
        }
        let at = Instant::now() + self.answer_wait();
        self.set_deadline(index, at);
        true
    }

    /// The connections whose replies were in the command queue when they began to end, once
    /// those commands are taken, so that their Close follows the replies: the queue is FIFO
    /// and this worker its one consumer, so once as many batches as it held then are taken
    /// (a `take_commands` may stop at its share, see `TAKE_BYTES`), the replies were.
    pub(super) fn close_answered_in_commands(&mut self) {
        if self.close_after_commands.is_empty() {
            return; // the common case, twice per loop iteration
        }
        let mut waiting = std::mem::take(&mut self.close_after_commands);
        waiting.retain(|w| {
            let taken = self.popped >= w.until;
            if taken && self.conns.get_gen_mut(w.index, w.generation).is_some() {
                self.close_answered(w.index);
            }
            !taken
        });
        waiting.append(&mut self.close_after_commands);
        self.close_after_commands = waiting;
    }

    /// Whether `index` waits for replies still in the command queue (`Owed::InCommands`).
    pub(super) fn replies_queued(&self, index: u32) -> bool {
        let generation = self.conns.generation(index);
        self.close_after_commands
            .iter()
            .any(|w| w.index == index && Some(w.generation) == generation && w.until > self.popped)
    }

    /// How long a connection waits for its service's answers: the close timeout, and during a
    /// shutdown at most half its grace, so that our Close and the peer's reply still fit in it.
    pub(super) fn answer_wait(&self) -> std::time::Duration {
        match self.shutdown_since {
            Some(_) => self.opts.close_timeout.min(SHUTDOWN_GRACE / 2),
            None => self.opts.close_timeout,
        }
    }

    /// The service has answered (or the close timeout passed): our Close, then the end of TCP.
    pub(super) fn close_answered(&mut self, index: u32) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        let Phase::Answering(code, reason) = c.phase else {
            return;
        };
        let reason = if code.is_some() { reason.text() } else { "" };
        c.out.append_with(&mut self.pool, |b| {
            codec::encode_close(b, Role::Server, code, reason.as_bytes(), [0; 4])
        });
        self.finish_after_flush(index);
    }

    /// Our last bytes are queued: shut TCP down once they are written (bounded by the close
    /// timeout, so a peer that never reads cannot hold the connection).
    pub(super) fn finish_after_flush(&mut self, index: u32) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        c.phase = Phase::Finishing;
        // Nothing more reaches the service; the EOF after our last bytes must still be read.
        c.service_paused = false;
        self.resume_reading(index);
        self.refuse_sends(index);
        self.mark_dirty(index);
        self.arm_close_deadline(index);
    }

    /// Our last frame is queued: services asking to send to the connection are told it is
    /// closed from now on, instead of hearing yes for a frame `queue_frame` drops.
    fn refuse_sends(&self, index: u32) {
        if let Some(g) = self.conns.generation(index) {
            self.hub.port(self.id).set_ending(self.conn_id(index, g));
        }
    }

    /// The close timeout from now, noting how much of ours the peer has acknowledged: when it
    /// passes, a peer that took more since gets another one (`run_timers`).
    pub(super) fn arm_close_deadline(&mut self, index: u32) {
        if let Some(c) = self.conns.get_mut(index) {
            c.took_more();
        }
        let at = Instant::now() + self.opts.close_timeout;
        self.set_deadline(index, at);
    }

    /// Queues an HTTP answer and finishes the connection after it.
    pub(super) fn answer_and_finish(&mut self, index: u32, response: Vec<u8>) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        c.out
            .append_with(&mut self.pool, |b| b.extend_from_slice(&response));
        self.finish_after_flush(index);
    }

    /// Everything is written: shut our side down and wait (bounded) for the peer's EOF.
    pub(super) fn finish(&mut self, index: u32) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        // SAFETY: shutdown on a descriptor we own; failure only means the peer is gone.
        unsafe { libc::shutdown(c.fd.as_raw_fd(), libc::SHUT_WR) };
        c.phase = Phase::Draining;
        c.read_pending = true;
        self.arm_close_deadline(index);
        self.read_some(index);
    }

    /// The peer shut its side of TCP. When our last bytes are queued (an echoed Close, an HTTP
    /// answer) they still go out, since a peer may well read after shutting its side: the
    /// connection stays until they are written (bounded by the close timeout) and `finish`
    /// then reads the same EOF again. Otherwise it ends now, after one write of what it has
    /// queued.
    pub(super) fn on_eof(&mut self, index: u32) {
        // The peer ended TCP before a Close, ours or its own: counted when it ends (once,
        // whatever comes after), for the status report.
        if let Some(c) = self.conns.get_mut(index) {
            if c.phase == Phase::Open {
                c.ended_early = true;
            }
        }
        // The peer may read after shutting its side (`printf ... | nc -N`): what it sent before
        // gets its answers first, as after its Close, and then our Close.
        if self
            .conns
            .get_mut(index)
            .is_some_and(|c| c.phase == Phase::Open)
            && self.answer_first(index, None, "")
        {
            return;
        }
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        // Over TLS, queued bytes may have gone into rustls already, as records the socket has
        // not taken yet: those are owed as much as the queue's.
        let queued = c.out.bytes() > 0 || c.tls.as_ref().is_some_and(|t| t.conn.wants_write());
        match c.phase {
            Phase::Finishing | Phase::Answering(..) => {}
            Phase::Draining => self.end(index, Ending::Done),
            Phase::Open | Phase::Closing if queued => {
                // Frames are queued (the built-in echo's replies; in Closing, our Close and
                // what came before it): written whole, however many writes that takes
                // (bounded by the close timeout), then our side shuts. One write and an end
                // would cut a frame short, a broken stream for a peer that reads after its
                // FIN. (In Open no Close follows them: the peer ended without one, and only
                // a service that answers later, `answer_first`, closes with one.)
                self.finish_after_flush(index)
            }
            _ => {
                // Part of a request, then the end: not refused, abandoned, but worth its line
                // as a refusal is (a trial's got none; a connection that sent nothing is a
                // health check, and still gets none).
                if matches!(c.phase, Phase::Handshake { .. }) && !c.inbuf.is_empty() {
                    crate::info_limited!(
                        "closed {}: it ended TCP with its upgrade request unfinished ({} byte(s) \
                         of it received)",
                        c.peer,
                        c.inbuf.len()
                    );
                }
                // The connection ends without a close handshake, but what is queued already
                // (the 101 to a request that came with the FIN) is written first, as far as
                // the socket takes it at once: the peer may read after shutting its side.
                if queued && !c.write_blocked {
                    let fd = c.fd.as_raw_fd();
                    let _ = match c.tls.as_deref_mut() {
                        None => c.out.flush(fd, &mut self.pool),
                        Some(t) => t.flush(&mut c.out, fd, &mut self.pool, false),
                    };
                }
                self.end(index, Ending::PeerClosed)
            }
        }
    }

    /// Removes the connection; calls the service's `on_close` if it was opened.
    pub(super) fn end(&mut self, index: u32, why: Ending) {
        let generation = self.conns.generation(index).unwrap_or(0);
        let Some(mut c) = self.conns.remove(index) else {
            return;
        };
        // A TLS peer is told that the stream ends here (close_notify, RFC 8446 6.1; TLS 1.2
        // asks it in answer to the peer's, RFC 5246 7.2.1) instead of seeing a truncation:
        // after the peer's close_notify or FIN, a close timeout, a shutdown. One write, as far
        // as the socket takes it at once. `Done` sent it before our FIN already.
        if matches!(
            why,
            Ending::PeerClosed | Ending::Timeout(_) | Ending::Shutdown
        ) {
            if let Some(t) = c.tls.as_deref_mut() {
                if !t.failed && !c.write_blocked {
                    let _ = t.flush(&mut c.out, c.fd.as_raw_fd(), &mut self.pool, true);
                }
            }
        }
        if let Some(d) = c.decoder.as_ref() {
            self.opts.assembly.update(d.held(), 0);
        }
        let _ = self.selector.deregister(c.fd.as_raw_fd());
        let port = self.hub.port(self.id);
        port.set_dead(index);
        if c.refused {
            port.remove_refused();
        } else {
            port.release_slot();
            // Not logged at info (a client's network may cut it any time), but counted: the
            // status report shows how many WebSocket clients go this way. Not one whose close
            // handshake had begun, nor one not upgraded (a TCP health check).
            let error_while_open = matches!(why, Ending::Error) && c.phase == Phase::Open;
            if c.service.is_some() && (c.ended_early || error_while_open) {
                port.note_abrupt_end();
            }
        }
        c.out.clear(&mut self.pool);
        if let Some(service) = c.service.take() {
            let id = self.conn_id(index, generation);
            let mut scratch_out = OutQueue::default();
            let mut ctx = Ctx {
                worker: self.id,
                current: id,
                out: &mut scratch_out,
                pool: &mut self.pool,
                fragment: None,
                deferred: &mut self.deferred,
            };
            service.on_close(&mut ctx, id, c.tag);
            scratch_out.clear(&mut self.pool);
            self.touched_push(&service);
        }
        match why {
            Ending::Timeout(what) => {
                // Given up on with bytes of ours it has not taken (it stopped reading): reset,
                // rather than a FIN queued behind them that a zero window holds back while the
                // kernel keeps them (a re-trial's client was still connected 60 s later).
                let fd = c.fd.as_raw_fd();
                let reset = sys::unacked_bytes(fd).is_some_and(|n| n > 0)
                    && sys::reset_on_close(fd).is_ok();
                let how = if reset {
                    " (reset: bytes of ours still unacknowledged)"
                } else {
                    ""
                };
                // The waits it was given as it took our bytes slowly, unless `what` counts
                // them already (all of them were used).
                let n = c.close_extensions;
                let extended = match n {
                    1 => " (extended once while it took our bytes slowly)".to_owned(),
                    n if n > 1 && n < Conn::MAX_CLOSE_EXTENSIONS => {
                        format!(" (extended {n} times while it took our bytes slowly)")
                    }
                    _ => String::new(),
                };
                crate::log::write_limited_kind(
                    crate::log::Level::Info,
                    (what, how),
                    format_args!("closed {}: {what}{extended}{how}", c.peer),
                )
            }
            // A reset (or a failed socket) in the middle of an upgrade request: the line its
            // end of TCP gets (a re-trial's reset got none).
            Ending::Error if matches!(c.phase, Phase::Handshake { .. }) && !c.inbuf.is_empty() => {
                crate::info_limited!(
                    "closed {}: its connection failed (a reset?) with its upgrade request \
                     unfinished ({} byte(s) of it received)",
                    c.peer,
                    c.inbuf.len()
                );
            }
            other => debug!("worker {}: {} ended: {other:?}", self.id, c.peer),
        }
        // Dropping `c` closes the socket.
    }
}
