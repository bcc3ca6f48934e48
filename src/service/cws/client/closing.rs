//! The end of a connection: the close handshake, a failure, and the socket's last bytes
//! (flushed, then the server's end of stream awaited) before it is dropped.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::time::Instant;

use super::{Client, Event, KeyPool, Phase, CLOSE_TIMEOUT, MAX_CLOSE_WAIT, READ_BUDGET};
use crate::ws::codec::{self, Decoder, Role};

impl Client {
    /// Starts the close handshake; before the upgrade completes the attempt is dropped.
    pub fn close(
        &mut self,
        code: u16,
        keys: &mut KeyPool,
        sink: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), &'static str> {
        match self.phase {
            Phase::Open => {
                codec::encode_close(self.out.tail(), Role::Client, Some(code), b"", keys.key());
                self.close_sent = true;
                self.phase = Phase::Closing;
                self.began_closing();
                let _ = self.flush();
                Ok(())
            }
            Phase::Resolving { .. }
            | Phase::Queued { .. }
            | Phase::Connecting { .. }
            | Phase::Upgrading { .. } => {
                self.phase = Phase::Done;
                sink(Event::Closed(1006, b""));
                Ok(())
            }
            Phase::Closing | Phase::Flushing | Phase::Lingering | Phase::Done => Err("closed"),
        }
    }

    /// Ends the connection from our side because of a failure of ours (`why`): Close `code`
    /// to the server if none went yet, then the failure is reported, as for a protocol error.
    pub fn abort(
        &mut self,
        code: u16,
        why: String,
        keys: &mut KeyPool,
        sink: &mut dyn FnMut(Event<'_>),
    ) {
        if matches!(self.phase, Phase::Open | Phase::Closing) && !self.close_sent {
            codec::encode_close(self.out.tail(), Role::Client, Some(code), b"", keys.key());
            self.close_sent = true;
        }
        self.fail(why, code, sink);
    }

    /// Ends the connection because of a failure.
    pub(super) fn fail(&mut self, why: String, code: u16, sink: &mut dyn FnMut(Event<'_>)) {
        // Nothing more is decoded: a message partly received goes now, not with the client
        // (which may take a while to flush), and its room goes back to the other connections.
        if let Some(b) = &self.assembly {
            b.update(self.decoder.held(), 0);
        }
        self.decoder = Decoder::new(Role::Client, 0);
        match self.phase {
            Phase::Flushing | Phase::Lingering | Phase::Done => return,
            // Nothing of ours has reached the server yet: a connect that completes later must
            // not send the upgrade (or TLS hello) of an attempt the app was told has failed.
            Phase::Resolving { .. } | Phase::Queued { .. } | Phase::Connecting { .. } => {
                self.out.clear();
                self.phase = Phase::Done;
            }
            _ => self.end_after_flush(),
        }
        sink(Event::Error(why));
        sink(Event::Closed(code, b""));
    }

    /// Writes what is queued; what the socket does not take now is written from `Flushing`.
    /// Over TLS, close_notify follows (however the connection ends: the server's Close, a
    /// failure, `abort`): the server would otherwise see a truncated stream.
    pub(super) fn end_after_flush(&mut self) {
        self.close_notify_due = self.tls_established();
        self.began_closing();
        self.phase = Phase::Flushing;
        self.flushed_then_linger();
    }

    /// In `Flushing`: writes what is left; once all is written, shuts our side and lingers.
    pub(super) fn flushed_then_linger(&mut self) {
        if self.flush().is_err() {
            self.phase = Phase::Done;
        } else if self.drained() {
            if !self.close_sent {
                // No closing handshake to let the server end (a failed upgrade). Err: the
                // socket is gone already; the read that follows finds out.
                let _ = self.sock.shutdown(std::net::Shutdown::Write);
            }
            self.phase = Phase::Lingering;
        }
    }

    /// In `Lingering`: reads and drops what the server sends (a budget's worth); done at its
    /// end of stream (or close_notify) or on an error.
    pub(super) fn linger(&mut self) {
        let mut scratch = [0u8; 4096];
        let mut total = 0;
        let ended = loop {
            if total >= READ_BUDGET {
                break false;
            }
            let r = match &mut self.tls {
                None => self.sock.read(&mut scratch),
                Some(tls) => match tls.read_tls(&mut self.sock) {
                    // rustls reads nothing past the server's close_notify (nor past the end of
                    // the stream): what follows is read as plain bytes, down to the server's
                    // end of TCP, so that its FIN comes first.
                    Ok(0) => {
                        self.tls = None;
                        continue;
                    }
                    Ok(n) => match tls.process_new_packets() {
                        Err(_) => break true,
                        Ok(state) if state.peer_has_closed() => {
                            self.tls = None;
                            continue;
                        }
                        Ok(_) => {
                            // The plaintext is dropped with the rest.
                            while matches!(tls.reader().read(&mut scratch), Ok(m) if m > 0) {}
                            Ok(n)
                        }
                    },
                    Err(e) => Err(e),
                },
            };
            match r {
                Ok(0) => break true,
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        if ended {
            self.phase = Phase::Done;
        }
    }

    /// A TLS session past its handshake (one that can say close_notify).
    pub(super) fn tls_established(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| !t.is_handshaking())
    }

    /// The connection ends now without waiting for the socket: over TLS, one attempt to
    /// write close_notify (and whatever is queued before it).
    pub(super) fn last_words(&mut self) {
        self.close_notify_due = self.tls_established();
        let _ = self.flush();
    }

    /// Nothing left for the socket, neither plain bytes nor TLS records.
    pub(super) fn drained(&self) -> bool {
        self.out.is_empty()
            && !self.close_notify_due
            && !self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Our side begins to close: the server has `CLOSE_TIMEOUT` (see `still_taking`).
    pub(super) fn began_closing(&mut self) {
        let now = Instant::now();
        let began = *self.close_began.get_or_insert(now);
        self.deadline = Some((now + CLOSE_TIMEOUT).min(began + MAX_CLOSE_WAIT));
        self.acked.restart(self.sock.as_raw_fd());
    }

    /// At a close deadline: whether the server is still taking what we sent before our last
    /// frame (a large upload it reads slowly), so that it has not had that frame yet: some of
    /// our bytes are unsent or unacknowledged, and it acknowledged more since the last look.
    /// Another period must end within `MAX_CLOSE_WAIT` of when the close began.
    pub(super) fn still_taking(&mut self, now: Instant) -> bool {
        let fd = self.sock.as_raw_fd();
        let ours_left = !self.out.is_empty()
            || self.tls.as_ref().is_some_and(|t| t.wants_write())
            || crate::net::sys::unacked_bytes(fd).is_some_and(|n| n > 0);
        let began = self.close_began.unwrap_or(now);
        now + CLOSE_TIMEOUT <= began + MAX_CLOSE_WAIT && ours_left && self.acked.took_more(fd)
    }
}
