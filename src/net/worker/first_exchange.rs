//! OONs wait for a LAppS connection's first response.
//!
//! SPEC section 4: an OON "may arrive at any time after the first request/response
//! exchange". A client may rely on that (its first message in is the answer to its first
//! call), so until a LAppS connection's first response is queued, the OONs sent to it (by
//! `ws:send_oon` after a client notification, a broadcast it was subscribed to, another
//! instance) are held here in order, and follow that response. They count against the
//! slow-consumer bound like queued bytes (less the room that bound keeps for one largest
//! message, which is the first response's): a peer that never makes a request while OONs
//! keep coming is closed with 1008, as one that does not read. Held OONs of a connection
//! that ends before its first response are dropped with it.
//!
//! The check is made here, where every service's sends meet in one order, and not in the
//! instances: one instance may queue the first response while another sends an OON.

use super::{Worker, SLOW_CONSUMER_FACTOR};
use crate::lapps_proto::protocol::RESPONSE_HEAD;
use crate::net::conn::Phase;
use crate::net::hub::Chunk;

/// Whole messages for one connection, framed (a message's fragments back to back): a service
/// may send several in one batch entry.
pub(in crate::net::worker) enum Outbound<'a> {
    Chunk(Chunk),
    /// Bytes of a batch buffer, copied when queued.
    Copy(&'a [u8]),
}

impl Outbound<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Outbound::Chunk(c) => c.as_slice(),
            Outbound::Copy(s) => s,
        }
    }

    fn into_chunk(self) -> Chunk {
        match self {
            Outbound::Chunk(c) => c,
            Outbound::Copy(s) => Chunk::Owned(s.to_vec()),
        }
    }
}

impl Worker {
    /// Queues messages a service sent to the open connection at `index`, or holds them while
    /// they are OONs before the connection's first response.
    pub(super) fn queue_message(&mut self, index: u32, msg: Outbound<'_>) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        if c.before_exchange.is_none() {
            return self.queue_outbound(index, msg);
        }
        if !matches!(c.phase, Phase::Open | Phase::Answering(..)) {
            return; // nothing follows our Close (RFC 6455 5.5.1)
        }
        let bytes = msg.bytes();
        let Some((start, end)) = first_response(bytes) else {
            let held = c.before_exchange.get_or_insert_default();
            held.bytes += bytes.len();
            held.messages.push(msg.into_chunk());
            let queued = c.waiting_bytes();
            // The slow-consumer bound less its room for one largest message: that room is
            // the first response's, which goes out ahead of everything held.
            if queued
                > self
                    .opts
                    .outbound_high_water
                    .saturating_mul(SLOW_CONSUMER_FACTOR)
            {
                self.drop_slow_consumer(index, queued);
            }
            return;
        };
        // The first response goes out, then what waited for it, then what followed it.
        let mut held = c.before_exchange.take().unwrap_or_default();
        if start > 0 {
            held.messages.push(Chunk::Owned(bytes[..start].to_vec()));
        }
        if start == 0 && end == bytes.len() {
            return self.release(index, msg, held.messages);
        }
        self.release(index, Outbound::Copy(&bytes[start..end]), held.messages);
        if end < bytes.len() {
            self.queue_outbound(index, Outbound::Copy(&bytes[end..]));
        }
    }

    fn release(&mut self, index: u32, response: Outbound<'_>, held: Vec<Chunk>) {
        self.queue_outbound(index, response);
        for m in held {
            self.queue_frame(index, |q, pool| q.push_chunk(pool, m));
        }
    }

    fn queue_outbound(&mut self, index: u32, msg: Outbound<'_>) {
        match msg {
            Outbound::Chunk(c) => self.queue_frame(index, |q, pool| q.push_chunk(pool, c)),
            Outbound::Copy(s) => self.queue_frame(index, |q, pool| {
                q.append_with(pool, |b| b.extend_from_slice(s))
            }),
        }
    }
}

/// Where the first response among the framed messages `bytes` begins and ends; None when
/// there is none (bytes that are not whole frames count as no response).
fn first_response(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0;
    while at < bytes.len() {
        let len = message_len(&bytes[at..])?;
        if payload_starts_with(&bytes[at..at + len], RESPONSE_HEAD) {
            return Some((at, at + len));
        }
        at += len;
    }
    None
}

/// The length of the first message of `frames`: its frames up to the one with FIN set.
fn message_len(frames: &[u8]) -> Option<usize> {
    let mut rest = frames;
    loop {
        let fin = rest.first()? & 0x80 != 0;
        let (_, after) = split_frame(rest)?;
        rest = after;
        if fin {
            return Some(frames.len() - rest.len());
        }
    }
}

/// Whether the payload of the framed message `frames` (RFC 6455 5.2; its fragments read in
/// turn) begins with `prefix`. False for bytes that end before it or are not frames.
fn payload_starts_with(mut frames: &[u8], mut prefix: &[u8]) -> bool {
    while !prefix.is_empty() {
        let Some((payload, rest)) = split_frame(frames) else {
            return false;
        };
        let n = payload.len().min(prefix.len());
        if payload[..n] != prefix[..n] {
            return false;
        }
        prefix = &prefix[n..];
        frames = rest;
    }
    true
}

/// The payload of the first frame of `frames` (unmasked, as a server sends) and the bytes
/// after it.
fn split_frame(frames: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&b1, rest) = frames.get(1..)?.split_first()?;
    if b1 & 0x80 != 0 {
        return None; // masked: not a server frame
    }
    let (len, rest) = match b1 & 0x7F {
        126 => {
            let (l, r) = rest.split_at_checked(2)?;
            (u16::from_be_bytes([l[0], l[1]]) as usize, r)
        }
        127 => {
            let (l, r) = rest.split_at_checked(8)?;
            (
                usize::try_from(u64::from_be_bytes(l.try_into().ok()?)).ok()?,
                r,
            )
        }
        n => (n as usize, rest),
    };
    rest.split_at_checked(len)
}

#[cfg(test)]
mod tests {
    use super::{first_response, payload_starts_with};
    use crate::lapps_proto::protocol::{
        encode_oon, encode_response_error, encode_response_ok, RESPONSE_HEAD,
    };
    use crate::ws::codec::{encode_message, Role};
    use crate::ws::Opcode;
    use std::num::NonZeroU64;

    fn framed(payload: &[u8], fragment: Option<usize>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_message(
            &mut out,
            Role::Server,
            Opcode::Binary,
            payload,
            fragment,
            [0; 4],
        );
        out
    }

    #[test]
    fn responses_are_told_from_oons_whatever_the_fragment_size() {
        let pad = crate::lapps_proto::value::Value::Text("x".repeat(70_000));
        let responses = [
            encode_response_ok(&[]),
            encode_response_ok(std::slice::from_ref(&pad)),
            encode_response_error(-32601, "method not found", None),
        ];
        let oon = encode_oon(NonZeroU64::new(7).unwrap(), &[]);
        for fragment in [
            None,
            Some(1),
            Some(2),
            Some(3),
            Some(7),
            Some(8),
            Some(4096),
        ] {
            for r in &responses {
                assert!(payload_starts_with(&framed(r, fragment), RESPONSE_HEAD));
            }
            assert!(!payload_starts_with(&framed(&oon, fragment), RESPONSE_HEAD));
        }
    }

    #[test]
    fn truncated_or_masked_bytes_are_not_a_response() {
        let f = framed(&encode_response_ok(&[]), Some(3));
        for end in 0..f.len() {
            let whole = payload_starts_with(&f[..end], RESPONSE_HEAD);
            // The head is 8 payload bytes: in three whole frames of 2 + 3 bytes.
            assert_eq!(whole, end >= 15, "{end}");
        }
        let mut masked = framed(&encode_response_ok(&[]), None);
        masked[1] |= 0x80;
        assert!(!payload_starts_with(&masked, RESPONSE_HEAD));
    }

    #[test]
    fn the_first_response_is_found_among_the_messages_of_a_batch() {
        let response = framed(&encode_response_ok(&[]), Some(3));
        let oon = framed(&encode_oon(NonZeroU64::new(7).unwrap(), &[]), Some(2));
        let mut batch = oon.clone();
        batch.extend_from_slice(&oon);
        assert_eq!(first_response(&batch), None);
        batch.extend_from_slice(&response);
        batch.extend_from_slice(&response);
        let at = 2 * oon.len();
        assert_eq!(first_response(&batch), Some((at, at + response.len())));
        assert_eq!(first_response(&batch[..at + 1]), None, "a cut frame");
    }
}
