//! The opening handshake: a request head read (in as many reads as it takes), routed to a
//! service or refused with its HTTP status (and a log line), and the connection opened.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::super::conn::Phase;
use super::{Ctx, Worker};
use crate::debug;
use crate::service::Service;
use crate::ws::codec::{self, Decoder, Role};
use crate::ws::handshake::{self, Request};

/// Decides which service a request goes to, or the HTTP status that refuses it.
pub trait Router: Send + Sync + 'static {
    fn route(&self, req: &Request, peer: IpAddr) -> Result<Arc<dyn Service>, Refusal>;
}

/// Why a request was refused: the HTTP status, and which rule refused it for the log line
/// the worker writes (one per refused connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// Empty when the status says it all (404).
    pub why: String,
}

impl From<u16> for Refusal {
    fn from(status: u16) -> Refusal {
        Refusal {
            status,
            why: String::new(),
        }
    }
}

/// The text of a router's refusal.
fn refusal_reason(status: u16) -> &'static str {
    match status {
        404 => "no service at this path",
        403 => "forbidden",
        _ => "refused",
    }
}

/// `: "the request line"` for a log line, or nothing when none came (see
/// [`handshake::request_line`]).
pub(super) fn quoted_request_line(buf: &[u8]) -> String {
    match handshake::request_line(buf) {
        line if line.is_empty() => String::new(),
        line => format!(": {}", crate::log::shown(&line)),
    }
}

impl Worker {
    pub(super) fn process_handshake(
        &mut self,
        index: u32,
        buf: &mut [u8],
        scanned: usize,
    ) -> usize {
        let peer = match self.conns.get_mut(index) {
            Some(c) => c.peer,
            None => return buf.len(),
        };
        let (req, head_len) = match handshake::parse_after(buf, scanned, &self.handshake_limits) {
            Ok(None) => {
                if let Some(c) = self.conns.get_mut(index) {
                    // Below max_request_bytes (1 MiB at most), else parse refused it.
                    let scanned = u32::try_from(buf.len()).unwrap_or(u32::MAX);
                    c.phase = Phase::Handshake { scanned };
                }
                return 0;
            }
            Ok(Some(done)) => done,
            Err(e) => {
                // A plain GET: 426 at a service's path, what its upgrade would get elsewhere
                // (404, a 403 of the service's rules), and 503 while stopping as an upgrade.
                if e.plain.is_some() && self.shutdown_since.is_some() {
                    let answer = handshake::error_response(503, "shutting down");
                    self.answer_and_finish(index, answer);
                    return buf.len();
                }
                let refusal = e.plain.as_deref().and_then(|req| {
                    let refusal = self.router.route(req, peer.ip()).err()?;
                    Some((refusal, crate::log::shown(&req.path)))
                });
                if let Some((Refusal { status, why }, path)) = refusal {
                    let sep = if why.is_empty() { "" } else { ": " };
                    crate::info_limited!("rejected {peer}: HTTP {status} for {path}{sep}{why}");
                    let answer = handshake::error_response_to(buf, status, refusal_reason(status));
                    self.answer_and_finish(index, answer);
                    return buf.len();
                }
                crate::info_limited!(
                    "rejected {peer}: HTTP {} {}{}",
                    e.status,
                    e.reason,
                    quoted_request_line(buf)
                );
                self.answer_and_finish(index, e.response());
                return buf.len();
            }
        };
        if self.shutdown_since.is_some() {
            self.answer_and_finish(index, handshake::error_response(503, "shutting down"));
            return buf.len();
        }
        let service = match self.router.route(&req, peer.ip()) {
            Ok(s) => s,
            Err(Refusal { status, why }) => {
                let sep = if why.is_empty() { "" } else { ": " };
                crate::info_limited!(
                    "rejected {peer}: HTTP {status} for {}{sep}{why}",
                    crate::log::shown(&req.path)
                );
                let answer = handshake::error_response(status, refusal_reason(status));
                self.answer_and_finish(index, answer);
                return buf.len();
            }
        };
        let response =
            handshake::response_101(&req, service.subprotocol(), service.extra_headers());
        let generation = self.conns.generation(index).unwrap_or(0);
        let id = self.conn_id(index, generation);
        let Some(c) = self.conns.get_mut(index) else {
            return buf.len();
        };
        c.out
            .append_with(&mut self.pool, |b| b.extend_from_slice(&response));
        c.phase = Phase::Open;
        c.deadline = None;
        c.decoder = Some(Decoder::new(Role::Server, service.max_message_size()));
        let speaks = service.speaks();
        if speaks == super::super::hub::Speaks::Lapps {
            c.before_exchange = Some(Default::default());
        }
        // Before on_open: its service may send to it from then on.
        self.hub.port(self.id).set_speaks(index, generation, speaks);
        let mut ctx = Ctx {
            worker: self.id,
            current: id,
            out: &mut c.out,
            pool: &mut self.pool,
            fragment: self.opts.auto_fragment,
            deferred: &mut self.deferred,
        };
        let Some(tag) = service.on_open(&mut ctx, id) else {
            // Routed to a service version that retired meanwhile: the client reconnects.
            crate::info_limited!(
                "closing {peer}: {} no longer takes connections (replaced), 1001",
                service.name()
            );
            // Our Close, then our side of TCP: with no service there is nothing to read the
            // peer's Close reply with, and waiting for it would hold the connection for the
            // whole close timeout. Draining reads (and drops) it until the peer's EOF.
            c.out.append_with(&mut self.pool, |b| {
                codec::encode_close(
                    b,
                    Role::Server,
                    Some(crate::ws::close::GOING_AWAY),
                    b"",
                    [0; 4],
                )
            });
            self.finish_after_flush(index);
            return buf.len();
        };
        c.tag = tag;
        c.service = Some(service.clone());
        self.touched_push(&service);
        self.mark_dirty(index);
        if let Some(idle) = self.opts.idle_timeout {
            // What was acknowledged before is not activity.
            if let Some(c) = self.conns.get_mut(index) {
                c.took_more();
            }
            self.set_deadline(index, Instant::now() + idle);
        }
        // The handle names the connection in the services' log lines (and to Lua apps).
        debug!(
            "worker {}: {peer} opened {} as handle {:#x}",
            self.id,
            req.path,
            id.as_u64()
        );
        head_len + self.process_frames(index, &mut buf[head_len..])
    }
}
