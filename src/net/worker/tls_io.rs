//! The read side of wss:// connections in the IOWorker: ciphertext read from the socket is
//! fed to rustls, and the plaintext it yields goes through the same `process()` as the bytes of
//! a plaintext connection (leftovers to `inbuf`, pauses and budgets alike).
//!
//! Owns only this path; encrypting and writing is `TlsSession::flush`. Must never block:
//! rustls only ever sees bytes already read, and never gets an empty read (which it would
//! take for the peer's EOF).

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::{read_room, Ending, Worker, FRAMES_PER_TURN};
use crate::net::sys;
use crate::net::tls::TlsSession;
use crate::{debug, warn};

/// Ciphertext read per `recv`: several full TLS records.
const CIPHER_READ: usize = 64 * 1024;

/// Time a worker gives per iteration to the input of connections whose ClientHello is not yet
/// answered (the handshake that passes it is finished); then the others wait, in order, for
/// the next iterations (`handshake_queue`). A ClientHello costs the server a key exchange and
/// a signature (about 0.1 ms with a P-256 key, 0.5 ms with RSA 2048 on the bench machine): a
/// burst of thousands (clients reconnecting after a restart) taken at once held every
/// established connection of the worker for as long (bench/handshake_burst.sh). The
/// handshakes go on at the same rate.
const TLS_HANDSHAKE_TIME_PER_TURN: Duration = Duration::from_millis(1);

/// Whether the caller may go on with this connection.
#[derive(PartialEq, Eq)]
enum Step {
    More,
    Stop,
}

impl Worker {
    /// A TLS session for a connection accepted on a wss:// endpoint, with the configuration
    /// current now (a reload only affects later connections).
    pub(super) fn new_tls_session(&self) -> Option<Box<TlsSession>> {
        let Some(ctx) = self.opts.tls.as_ref() else {
            warn!(
                "worker {}: a TLS endpoint without a TLS configuration",
                self.id
            );
            return None;
        };
        match ctx.session() {
            Ok(s) => Some(Box::new(s)),
            Err(e) => {
                crate::warn_limited!("worker {}: cannot start a TLS session: {e}", self.id);
                None
            }
        }
    }

    /// `read_some` for a TLS connection: up to `max_inbounds_skip` reads from the socket.
    pub(super) fn read_some_tls(&mut self, index: u32) {
        if self.handshake_turn_spent(index) {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut cipher = std::mem::take(&mut self.cipher);
        if cipher.len() < CIPHER_READ {
            cipher = vec![0; CIPHER_READ];
        }
        let budget = self.opts.max_inbounds_skip.max(1);
        let frames_before = self.conns.get_mut(index).map_or(0, |c| c.frames_decoded());
        let mut reads = 0;
        loop {
            // Plaintext rustls already holds goes first (left there by a pause).
            if self.tls_deliver(index, &mut scratch) == Step::Stop {
                break;
            }
            let Some(c) = self.conns.get_mut(index) else {
                break;
            };
            let frames = c.frames_decoded().wrapping_sub(frames_before);
            let Some(t) = c.tls.as_deref_mut() else {
                break;
            };
            if !t.stash.is_empty() {
                let stash = std::mem::take(&mut t.stash);
                if self.tls_feed_timed(index, &stash, &mut scratch) == Step::Stop {
                    break;
                }
                continue;
            }
            if !c.read_pending || reads == budget || frames >= FRAMES_PER_TURN {
                break;
            }
            reads += 1;
            match sys::recv(c.fd.as_raw_fd(), &mut cipher) {
                Ok(0) => {
                    c.read_pending = false;
                    self.on_eof(index);
                    break;
                }
                Ok(n) => {
                    c.last_activity = Instant::now();
                    // As for plaintext: a short read drained the socket, unless the peer hung up
                    // (then the EOF is waiting and no new edge will announce it).
                    if n < cipher.len() && !c.peer_hup {
                        c.read_pending = false;
                    }
                    if t.failed {
                        continue; // only the alert may go out now; input is dropped
                    }
                    if self.tls_feed_timed(index, &cipher[..n], &mut scratch) == Step::Stop {
                        break;
                    }
                }
                Err(e) => {
                    if !self.read_failed(index, e) {
                        break;
                    }
                }
            }
        }
        self.scratch = scratch;
        self.cipher = cipher;
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        // Handshake records, alerts, tickets, or plaintext that waited for the handshake.
        let wants_write = c
            .tls
            .as_deref()
            .is_some_and(|t| t.conn.wants_write() || !c.out.is_empty());
        let again = c.read_pending && !c.read_paused() && !c.in_pending;
        if again {
            c.in_pending = true;
            self.pending.push(index);
        }
        if wants_write {
            self.mark_dirty(index);
        }
    }

    /// Whether a connection still in its handshake must not be read now: past its handshake
    /// deadline (the timers end it), or it must wait for a later iteration: this
    /// iteration's [`TLS_HANDSHAKE_TIME_PER_TURN`] is spent, or older handshakes wait already
    /// (first come, first served: a stream of new ClientHellos must not keep the queued ones
    /// waiting until their handshake timeout). It then joins the back of the queue, or keeps
    /// its place there; its readiness edge is not lost (`read_pending` stays set). The read
    /// loop adds up the time.
    fn handshake_turn_spent(&mut self, index: u32) -> bool {
        let Some(c) = self.conns.get_mut(index) else {
            return false;
        };
        // Only a ClientHello not yet answered waits: the rest of a handshake (the client's
        // Finished) is cheap, and queued behind every new ClientHello of a burst it would
        // let no handshake finish before the burst's deadlines.
        if c.tls.as_deref().is_none_or(|t| t.hello_answered()) {
            return false;
        }
        // Past its handshake deadline: this iteration's timers end it, and its key exchange
        // and signature would be spent on nothing (under a flood, on most of the queue).
        if c.deadline.is_some_and(|d| d <= Instant::now()) {
            debug!(
                "worker {}: {}'s ClientHello came past its handshake deadline: not answered",
                self.id, c.peer
            );
            return true;
        }
        if c.handshake_queued {
            return true;
        }
        let older_wait = !self.serving_handshake_queue && !self.handshake_queue.is_empty();
        if self.handshake_time < TLS_HANDSHAKE_TIME_PER_TURN && !older_wait {
            return false;
        }
        c.handshake_queued = true;
        self.handshake_queue.push_back(index);
        true
    }

    /// Reads the queued handshakes, oldest first, while this iteration's handshake time lasts
    /// (at the start of each iteration, before new readiness events).
    pub(super) fn run_handshake_queue(&mut self) {
        self.serving_handshake_queue = true;
        while self.handshake_time < TLS_HANDSHAKE_TIME_PER_TURN {
            let Some(index) = self.handshake_queue.pop_front() else {
                break;
            };
            // An entry whose connection ended (or whose slot a new one took) is skipped.
            let Some(c) = self.conns.get_mut(index) else {
                continue;
            };
            if !c.handshake_queued {
                continue;
            }
            c.handshake_queued = false;
            if c.read_pending {
                self.read_some(index);
            }
        }
        self.serving_handshake_queue = false;
    }

    /// [`Worker::tls_feed`], adding its time to this iteration's handshake time while the
    /// connection is in its handshake, and counting the server's flights
    /// ([`TlsSession::hello_answered`]).
    fn tls_feed_timed(&mut self, index: u32, bytes: &[u8], scratch: &mut [u8]) -> Step {
        let handshaking = self
            .conns
            .get_mut(index)
            .and_then(|c| c.tls.as_deref())
            .is_some_and(|t| t.conn.is_handshaking());
        if !handshaking {
            return self.tls_feed(index, bytes, scratch);
        }
        let since = Instant::now();
        let step = self.tls_feed(index, bytes, scratch);
        self.handshake_time += since.elapsed();
        if let Some(t) = self.conns.get_mut(index).and_then(|c| c.tls.as_deref_mut()) {
            if t.conn.wants_write() {
                t.flights = t.flights.saturating_add(1);
            }
        }
        step
    }

    /// Gives `bytes` (ciphertext) to rustls, processing the plaintext as it comes. What a
    /// pause leaves unread is stashed on the connection for `read_some_tls` to resume with.
    fn tls_feed(&mut self, index: u32, bytes: &[u8], scratch: &mut [u8]) -> Step {
        let mut pos = 0;
        while pos < bytes.len() {
            let Some(c) = self.conns.get_mut(index) else {
                return Step::Stop;
            };
            let peer = c.peer;
            let paused = c.read_paused();
            let Some(t) = c.tls.as_deref_mut() else {
                return Step::Stop;
            };
            if t.failed {
                return Step::More;
            }
            if paused {
                t.stash.extend_from_slice(&bytes[pos..]);
                c.read_pending = true; // come back for the stash on resume
                return Step::Stop;
            }
            let first = !t.started;
            t.started = true;
            let mut rest = &bytes[pos..];
            let result = match t.conn.read_tls(&mut rest) {
                Ok(0) => Err("rustls took no bytes".to_string()),
                Ok(k) => {
                    pos += k;
                    t.conn
                        .process_new_packets()
                        .map_err(|e| crate::net::tls_failure::described(&e))
                }
                Err(e) => Err(e.to_string()),
            }
            .map(|_| ());
            if let Err(e) = result {
                // A record begins with its content type (20-23), never with a letter: these
                // are the first bytes of a plain HTTP request, say that in words.
                if first && bytes.first().is_some_and(u8::is_ascii_uppercase) {
                    crate::info_limited!(
                        "closing {peer}: plain HTTP on a TLS listener (use https:// or wss://){}",
                        super::quoted_request_line(bytes)
                    );
                    t.failed = true;
                } else {
                    t.failed = true;
                    // Past the upgrade, the handle and service too.
                    crate::info_limited!("closing {}: TLS error: {e}", self.who(index));
                }
                self.finish_after_flush(index);
                return Step::Stop;
            }
            if self.tls_deliver(index, scratch) == Step::Stop {
                if let Some(t) = self.conns.get_mut(index).and_then(|c| c.tls.as_deref_mut()) {
                    t.stash.extend_from_slice(&bytes[pos..]);
                }
                return Step::Stop;
            }
        }
        Step::More
    }

    /// Processes the plaintext rustls holds, in `scratch`-sized pieces after the connection's
    /// leftover input. `Stop`: the connection paused, ended or saw the peer's close_notify.
    fn tls_deliver(&mut self, index: u32, scratch: &mut [u8]) -> Step {
        loop {
            let Some(c) = self.conns.get_mut(index) else {
                return Step::Stop;
            };
            if c.read_paused() {
                c.read_pending = true; // plaintext may still wait inside rustls
                return Step::Stop;
            }
            let kept = c.inbuf.len();
            if kept >= scratch.len() {
                // Cannot happen: leftovers are bounded by the request limit and control frames.
                debug_assert!(false, "leftover larger than the read buffer");
                self.end(index, Ending::Error);
                return Step::Stop;
            }
            let Some(t) = c.tls.as_deref_mut() else {
                return Step::Stop;
            };
            match t.conn.reader().read(read_room(&c.inbuf, scratch)) {
                Ok(0) => {
                    // close_notify: the peer sends nothing more. What we still owe it (our
                    // Close frame, a service's replies) is written first, as after a FIN.
                    c.read_pending = false;
                    self.on_eof(index);
                    return Step::Stop;
                }
                Ok(n) => {
                    c.last_activity = Instant::now();
                    self.process_read(index, scratch, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::More,
                Err(e) => {
                    debug!("worker {}: TLS read from {}: {e}", self.id, c.peer);
                    self.end(index, Ending::Error);
                    return Step::Stop;
                }
            }
        }
    }
}
