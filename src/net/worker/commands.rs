//! What service threads ask of the worker (`Command`s from the hub): queue frames, close,
//! resume reading; plus slow-consumer detection on the queues those commands fill.

use super::first_exchange::Outbound;
use super::Worker;
use super::SLOW_CONSUMER_FACTOR;
use crate::net::conn::Phase;
use crate::net::handle::ConnId;
use crate::net::hub::{Chunk, Command};
use crate::net::outq::{BufPool, OutQueue};
use crate::ws::close;
use crate::ws::codec::{self, Role};

/// What the commands one `take_commands` applies may ask to deliver, past their first batch:
/// about a millisecond of sending on loopback, where a turn of the worker's other connections
/// then comes.
const TAKE_BYTES: usize = 1 << 20;

impl Worker {
    /// Applies the batches services posted, at most as many as the queue holds and, past the
    /// first, only while what they ask to deliver stays under [`TAKE_BYTES`]: services
    /// refilling the queue as fast as it empties, or one broadcast of large messages to many
    /// connections after another (hundreds of megabytes per batch), cannot keep the worker
    /// from its other connections for longer than that much sending takes. The rest waits for
    /// the next turn (the queue not being empty, the worker does not sleep); a full queue
    /// makes the services wait, and their full inboxes pause the connections feeding them.
    pub(super) fn take_commands(&mut self) {
        let mut bytes = 0usize;
        for _ in 0..self.hub.port(self.id).commands.capacity() {
            if bytes >= TAKE_BYTES {
                break;
            }
            let Some(batch) = self.hub.port(self.id).commands.pop() else {
                break;
            };
            self.popped += 1;
            for cmd in batch {
                bytes = bytes.saturating_add(cmd.delivered_bytes());
                self.apply(cmd);
            }
        }
    }

    /// The live connection for `id` if it is ours and current.
    pub(super) fn live_index(&mut self, id: ConnId) -> Option<u32> {
        if id.worker() != self.id {
            return None;
        }
        self.conns
            .get_gen_mut(id.index(), id.generation())
            .map(|_| id.index())
    }

    pub(super) fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Send { conn, frame } => {
                if let Some(i) = self.live_index(conn) {
                    self.queue_message(i, Outbound::Chunk(frame));
                }
            }
            Command::SendBatch { buf, sends } => {
                let mut at = 0usize;
                for &(conn, len) in &sends {
                    let end = at + len as usize;
                    let Some(frame) = buf.get(at..end) else { break };
                    at = end;
                    if let Some(i) = self.live_index(conn) {
                        self.queue_message(i, Outbound::Copy(frame));
                    }
                }
                self.hub.port(self.id).give_back(buf, sends);
            }
            Command::SendMany { conns, frame } => {
                for conn in conns {
                    if let Some(i) = self.live_index(conn) {
                        self.queue_message(i, Outbound::Chunk(Chunk::Shared(frame.clone())));
                    }
                }
            }
            Command::Close { conn, code, reason } => {
                if let Some(i) = self.live_index(conn) {
                    match self.conns.get_mut(i).map(|c| c.phase) {
                        // The replies that came before are queued: the close the worker
                        // decided on goes out now, with its own code.
                        Some(Phase::Answering(..)) => self.close_answered(i),
                        _ => self.start_close_with(i, code, reason.as_deref().unwrap_or("")),
                    }
                }
            }
            Command::GoAway { conn, code } => {
                if let Some(i) = self.live_index(conn) {
                    self.go_away(i, code);
                }
            }
            Command::Resume { conn } => {
                if let Some(i) = self.live_index(conn) {
                    if let Some(c) = self.conns.get_mut(i) {
                        if c.service_paused {
                            let paused = c.service_paused_at.elapsed();
                            c.message_due = c.message_due.map(|due| due + paused);
                        }
                        c.service_paused = false;
                    }
                    self.arm_message_deadline(i);
                    self.resume_reading(i);
                }
            }
        }
    }

    /// Queues outbound data on an open connection, pausing its reads above the high-water mark.
    pub(super) fn queue_frame(
        &mut self,
        index: u32,
        push: impl FnOnce(&mut OutQueue, &mut BufPool),
    ) {
        let high = self.opts.outbound_high_water;
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        if !matches!(c.phase, Phase::Open | Phase::Answering(..)) {
            return; // after our Close no data frame may follow (RFC 6455 5.5.1)
        }
        push(&mut c.out, &mut self.pool);
        if c.out.bytes() > high {
            c.out_paused = true;
        }
        let mut queued = c.waiting_bytes();
        let write_blocked = c.write_blocked;
        let limit = self.slow_consumer_limit(index);
        if queued > limit && !write_blocked {
            // The limit judges what the peer has not taken, not what a service sent at once:
            // a burst (one `onMessage` sending megabytes) to a peer that reads goes to the
            // kernel now, and only what the socket refuses counts against the peer.
            self.flush_conn(index);
            let Some(c) = self.conns.get(index) else {
                return; // the write failed and the connection ended
            };
            queued = c.waiting_bytes();
        }
        if queued > limit {
            // A peer that does not read while services keep sending to it (broadcasts, pushes)
            // would grow its queue without bound: it is dropped with 1008, the others never
            // wait for it.
            self.drop_slow_consumer(index, queued);
            return;
        }
        self.mark_dirty(index);
    }

    /// The bytes a connection may have waiting (queued, or held by `first_exchange`) before
    /// it counts as a slow consumer. One largest message always fits on top, so a big reply
    /// alone never trips it.
    pub(super) fn slow_consumer_limit(&self, index: u32) -> usize {
        let max_message = self
            .conns
            .get(index)
            .and_then(|c| c.service.as_ref())
            .map_or(0, |s| s.max_message_size());
        self.opts
            .outbound_high_water
            .saturating_mul(SLOW_CONSUMER_FACTOR)
            .saturating_add(max_message)
    }

    /// Ends a connection that does not take what is sent to it: what it has not started to
    /// receive is dropped, our Close 1008 goes out, then the end of TCP.
    pub(super) fn drop_slow_consumer(&mut self, index: u32, queued: usize) {
        let Some(generation) = self.conns.generation(index) else {
            return;
        };
        let handle = self.conn_id(index, generation).as_u64();
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        // Which service's sends overran it: the operator's first question.
        let name = c.service.as_ref().map_or("", |s| s.name());
        crate::info_limited!(
            "closing {} ({handle:#x}) of service {name}: slow consumer ({queued} bytes queued \
             for it), close code 1008",
            c.peer
        );
        c.before_exchange = None;
        c.out.drop_unstarted(&mut self.pool);
        c.out.append_with(&mut self.pool, |b| {
            codec::encode_close(
                b,
                Role::Server,
                Some(close::POLICY),
                b"slow consumer",
                [0; 4],
            )
        });
        self.finish_after_flush(index);
    }

    pub(super) fn apply_deferred(&mut self) {
        for (conn, frame) in std::mem::take(&mut self.deferred) {
            if let Some(i) = self.live_index(conn) {
                self.queue_frame(i, |q, pool| q.push_chunk(pool, Chunk::Owned(frame)));
            }
        }
    }
}
