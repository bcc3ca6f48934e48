//! An open connection's input: its frames decoded and handed to its service, control frames
//! answered, and what a violation, a Close or the service's verdict ends.

use std::cmp::Reverse;
use std::time::Instant;

use super::super::conn::Phase;
use super::{Ctx, Worker};
use crate::service::Flow;
use crate::ws::codec::{self, Event, Role};
use crate::ws::Opcode;

impl Worker {
    pub(super) fn process_frames(&mut self, index: u32, buf: &mut [u8]) -> usize {
        let generation = self.conns.generation(index).unwrap_or(0);
        let id = self.conn_id(index, generation);
        let worker = self.id;
        let fragment = self.opts.auto_fragment;
        let high = self.opts.outbound_high_water;
        let Some(c) = self.conns.get_mut(index) else {
            return buf.len();
        };
        let Some(service) = c.service.clone() else {
            return buf.len();
        };
        let Some(mut decoder) = c.decoder.take() else {
            return buf.len();
        };
        let phase = c.phase;
        let tag = c.tag;
        if c.in_flight > 0 && service.handled(worker, tag, c.handed) {
            c.in_flight = 0;
        }
        let held_before = decoder.held();
        let allowance = self.opts.assembly.allowance(held_before);
        let mut close_with: Option<u16> = None;
        let mut paused = false;
        let mut peer_close: Option<Option<u16>> = None;
        let mut delivered = false;
        let mut ended = false;
        let result = {
            let out = &mut c.out;
            let pool = &mut self.pool;
            let deferred = &mut self.deferred;
            let ping_outstanding = &mut c.ping_outstanding;
            let in_flight = &mut c.in_flight;
            decoder.decode_within(buf, allowance, &mut |ev| match ev {
                Event::Text(p) | Event::Binary(p) => {
                    ended = true;
                    // After we started closing, data is read and dropped (RFC 6455 5.5.1).
                    if phase != Phase::Open || close_with.is_some() {
                        return;
                    }
                    let opcode = if matches!(ev, Event::Text(_)) {
                        Opcode::Text
                    } else {
                        Opcode::Binary
                    };
                    let mut ctx = Ctx {
                        worker,
                        current: id,
                        out,
                        pool,
                        fragment,
                        deferred,
                    };
                    delivered = true;
                    *in_flight = in_flight.saturating_add(p.len());
                    match service.on_message(&mut ctx, id, tag, opcode, p) {
                        Flow::Continue => {}
                        Flow::Pause => paused = true,
                        Flow::Close(code) => close_with = Some(code),
                    }
                }
                // Our Close is the last frame we send (RFC 6455 5.5.1): no Pong after it.
                Event::Ping(p) if matches!(phase, Phase::Open | Phase::Answering(..)) => out
                    .append_with(pool, |b| {
                        codec::encode_control(b, Role::Server, Opcode::Pong, p, [0; 4])
                    }),
                Event::Ping(_) => {}
                Event::Pong(_) => *ping_outstanding = false,
                Event::Close { code, .. } => peer_close = Some(code),
            })
        };
        self.opts.assembly.update(held_before, decoder.held());
        // A frame has begun: a message being assembled, or the first bytes of a frame whose
        // header (or control frame) is not whole yet, which the caller keeps for the next
        // read. Either must end within the message timeout of its first bytes (a peer sending
        // one byte of a header and nothing more was never timed out with idle pings off).
        let in_message =
            decoder.in_message() || matches!(result, Ok(consumed) if consumed < buf.len());
        c.decoder = Some(decoder);
        // A message that began in this read (after another ended in it, perhaps) has the
        // whole timeout from now.
        if !in_message {
            c.message_due = None;
        } else if (ended || c.message_due.is_none()) && phase == Phase::Open {
            if let Some(timeout) = self.opts.message_timeout {
                let due = Instant::now() + timeout;
                c.message_due = Some(due);
                if c.deadline.is_none_or(|d| due < d) {
                    c.deadline = Some(due);
                    self.timers.push(Reverse((due, index, generation)));
                }
            }
        }
        // Pongs and the built-in services' replies go straight into the queue, not through
        // `queue_frame`: a peer that sends without reading is throttled here, or a ping flood
        // would grow its queue with every read once the socket is full.
        if c.out.bytes() > high {
            c.out_paused = true;
        }
        // The replies to what the service has not handled yet will join the queue: reading
        // stops until it has (a peer that reads, pipelining large messages to a Lua echo,
        // was closed as a slow consumer by the replies to the 64 MiB its instance's queue
        // had taken meanwhile).
        if delivered
            && !paused
            && close_with.is_none()
            && c.out.bytes().saturating_add(c.in_flight) > high
            && service.resume_when_handled(worker, id, tag)
        {
            paused = true;
        }
        if delivered {
            c.handed = self.flushes;
            self.touched_push(&service);
        }
        self.mark_dirty(index);
        if paused {
            if let Some(c) = self.conns.get_mut(index) {
                if !c.service_paused {
                    c.service_paused_at = Instant::now();
                }
                c.service_paused = true;
            }
        }
        match result {
            Err(e) => {
                // Nothing after a violation is read (RFC 6455 7.1.7), even while the replies
                // to what came before are awaited: without a decoder, input is dropped.
                let peer = self.who(index);
                let mut refused_size = 0;
                let service = self.conns.get_mut(index).and_then(|c| {
                    refused_size = c.decoder.take().map_or(0, |d| d.refused_size());
                    c.service.clone()
                });
                if let (true, Some(s)) = (e == codec::TOO_LARGE, &service) {
                    // The setting to raise, by its lapps.json name (`peer` names the service).
                    crate::info_limited!(
                        "closing {peer}: message larger than its service's \
                         max_inbound_message_size ({} bytes), close code {}",
                        s.max_message_size(),
                        e.code
                    );
                } else if e == codec::OVER_ALLOWANCE {
                    // Its own buffer was given back already: what is held is the others'.
                    crate::warn_limited!(
                        "closing {peer}: its message ({refused_size} bytes at least) needs \
                         more than max_inbound_assembly_bytes ({} bytes) leaves beside the \
                         messages being received on other connections ({} bytes); close code {}",
                        self.opts.assembly.limit(),
                        self.opts.assembly.held(),
                        e.code
                    );
                } else {
                    crate::info_limited!(
                        "closing {peer}: protocol violation ({}), close code {}",
                        e.described(),
                        e.code
                    );
                }
                // The peer's developer reads the reason; the settings are the operator's.
                let reason = if e == codec::TOO_LARGE {
                    "message too big for this service"
                } else {
                    e.reason
                };
                self.fail_after_replies(index, e.code, reason);
                buf.len()
            }
            Ok(consumed) => {
                if let Some(code) = peer_close {
                    self.on_peer_close(index, code);
                    return buf.len();
                }
                if let Some(code) = close_with {
                    self.start_close(index, code);
                }
                consumed
            }
        }
    }
}
