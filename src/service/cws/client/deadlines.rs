//! The deadlines of a connection: connect and upgrade, the idle ping, the close handshake.

use std::os::fd::AsRawFd;
use std::time::Instant;

use super::super::lookup::RESOLVE_TIMEOUT;
use super::{Client, Event, KeyPool, Phase, CLOSE_TIMEOUT, CONNECT_TIMEOUT};
use crate::ws::codec::{self, Role};
use crate::ws::Opcode;

impl Client {
    /// Deadlines: connect/upgrade, idle ping and close handshake.
    pub fn tick(&mut self, now: Instant, keys: &mut KeyPool, sink: &mut dyn FnMut(Event<'_>)) {
        let Some(d) = self.deadline else { return };
        if now < d {
            return;
        }
        let taking =
            matches!(self.phase, Phase::Closing | Phase::Flushing) && self.still_taking(now);
        match &mut self.phase {
            Phase::Resolving { lookup, .. } => {
                let why = format!(
                    "cannot resolve {}: no answer within {} ms",
                    lookup.host(),
                    RESOLVE_TIMEOUT.as_millis()
                );
                self.fail(why, 1006, sink)
            }
            Phase::Connecting { failed, .. } => {
                let why = format!("timeout connecting to {}", self.addr);
                if now < self.started + CONNECT_TIMEOUT {
                    // This address's share is spent; others are left (the last one's share
                    // is the whole rest).
                    self.next_address(why, sink)
                } else {
                    failed.push(why);
                    let all = failed.join("; ");
                    self.fail(all, 1006, sink)
                }
            }
            Phase::Upgrading { .. } => {
                // Connected: what is missing is the server's (or its application's) doing,
                // not the network's.
                let secs = CONNECT_TIMEOUT.as_secs();
                let why = if self.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
                    format!(
                        "timeout: the TLS handshake with {} did not complete within {secs} s",
                        self.addr
                    )
                } else {
                    format!(
                        "timeout: {} took the connection but did not answer the upgrade request \
                         within {secs} s",
                        self.addr
                    )
                };
                self.fail(why, 1006, sink)
            }
            // Our Close (or our reply to the server's) may wait behind an upload the server
            // reads slowly: while it keeps taking our bytes it is not gone, and the close
            // gets another period.
            Phase::Closing | Phase::Flushing if taking => {
                self.deadline = Some(now + CLOSE_TIMEOUT);
            }
            Phase::Closing => {
                self.last_words();
                self.phase = Phase::Done;
                sink(Event::Closed(1006, b""));
            }
            // Closed was reported already; the peer did not take our last bytes in time, or
            // did not end its side.
            Phase::Flushing | Phase::Lingering => self.phase = Phase::Done,
            Phase::Open => self.idle_check(now, keys, sink),
            Phase::Done | Phase::Queued { .. } => self.deadline = None,
        }
    }

    /// The idle deadline of an open connection passed: ping a server quiet for one idle
    /// period, fail one still quiet a period after the ping.
    pub(super) fn idle_check(
        &mut self,
        now: Instant,
        keys: &mut KeyPool,
        sink: &mut dyn FnMut(Event<'_>),
    ) {
        let Some(idle) = self.idle else {
            self.deadline = None;
            return;
        };
        let quiet_until = self.last_input + idle;
        if now < quiet_until {
            self.deadline = Some(quiet_until);
            return;
        }
        if self.input.is_empty() {
            // Quiet for a whole period: a past burst's read buffer (up to ~512 KiB) goes
            // back. Not on every read, which would reallocate it each time.
            self.input = Vec::new();
        }
        // A server that takes our bytes (a ping or a heartbeat is too small to count) is
        // reading; when the kernel does not tell (before Linux 4.1) this errs towards a ping.
        if self.acked.took_more(self.sock.as_raw_fd()) {
            // Silent but reading: a new spell, without a ping.
            self.ping_sent = false;
            self.deadline = Some(now + idle);
        } else if !self.ping_sent {
            codec::encode_control(self.out.tail(), Role::Client, Opcode::Ping, b"", keys.key());
            self.ping_sent = true;
            self.deadline = Some(now + idle);
            if let Err(e) = self.flush() {
                self.fail(e, 1006, sink);
            }
        } else {
            let why = format!(
                "idle timeout: the server sent nothing for {:.1} s, not even a pong, and \
                 took nothing of ours",
                (now - self.last_input).as_secs_f64()
            );
            self.abort(1001, why, keys, sink);
        }
    }
}
