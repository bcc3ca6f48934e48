//! One connection as its IOWorker holds it.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use super::hub::Chunk;
use super::outq::OutQueue;
use super::per_address::AddressTicket;
use super::sys::AckProgress;
use super::tls::TlsSession;
use crate::service::Service;
use crate::ws::close::ReasonId;
use crate::ws::codec::Decoder;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the HTTP upgrade request; `scanned` bytes of it were parsed already (without
    /// finding its end), so that they are not scanned again.
    Handshake { scanned: u32 },
    /// WebSocket open: messages flow both ways.
    Open,
    /// Ending (the peer broke the protocol, or sent Close) while the service answers the
    /// messages it took before: input is discarded, those replies still go out, then our Close
    /// with this code (None: an empty body) and reason, and the end of TCP
    /// (`Service::on_ending`).
    Answering(Option<u16>, ReasonId),
    /// We sent a Close frame and wait for the peer's (or the close timeout).
    Closing,
    /// Our last bytes are queued; once written, we shut down our side of TCP.
    Finishing,
    /// Our side of TCP is shut; reading and discarding until the peer's EOF (or the timeout),
    /// so that closing never turns into a reset that could destroy our last frame.
    Draining,
}

pub struct Conn {
    pub fd: OwnedFd,
    pub peer: SocketAddr,
    pub phase: Phase,
    /// Set once the upgrade succeeded; `on_close` is owed exactly when this is Some.
    pub service: Option<Arc<dyn Service>>,
    pub tag: u32,
    pub decoder: Option<Decoder>,
    /// Unconsumed input (a partial header, control frame or HTTP request); empty when idle.
    pub inbuf: Vec<u8>,
    pub out: OutQueue,
    /// Not read until it is resumed: its service's queue is above its high-water mark, or
    /// what this connection handed over and has not had handled, with its outbound queue,
    /// passed `outbound_high_water`.
    pub service_paused: bool,
    /// When `service_paused` was last set: the time until the resume does not count against
    /// the message being received (`message_due` moves by as much).
    pub service_paused_at: Instant,
    /// Our outbound queue is above the high-water mark: stop reading until it drains.
    pub out_paused: bool,
    /// Input may be waiting in the socket (edge-triggered: we must come back for it).
    pub read_pending: bool,
    /// A readiness event reported the peer's FIN or an error. From then on a short read does
    /// not mean the socket is drained: the EOF came with the same edge as the data before it,
    /// and no later edge will report it.
    pub peer_hup: bool,
    /// Waiting for EPOLLOUT.
    pub write_blocked: bool,
    /// Queued in the worker's dirty list for a flush this iteration.
    pub dirty: bool,
    /// In the worker's pending-read list.
    pub in_pending: bool,
    /// In the worker's queue of TLS handshakes waiting for a later iteration.
    pub handshake_queued: bool,
    pub deadline: Option<Instant>,
    /// When the data message being received must be complete (`message_timeout` after it
    /// began); None while no message is partly received.
    pub message_due: Option<Instant>,
    /// The last time the peer sent us bytes.
    pub last_activity: Instant,
    /// Whether the peer takes our bytes, from one timer's look to the next.
    pub acked: AckProgress,
    /// How many times the close timeout was extended for a peer still taking our bytes.
    pub close_extensions: u32,
    pub ping_outstanding: bool,
    /// The worker's flush count when it last handed this connection's message to its service
    /// (see `Service::on_ending`); 0 before the first.
    pub handed: u64,
    /// Payload bytes handed to the service since it last had handled every message of this
    /// connection (`Service::handled`): with the outbound queue, what the replies to come may
    /// add to it. Reading stops past the outbound high-water mark.
    pub in_flight: usize,
    /// Accepted only to be answered 503: holds no connection slot of the worker.
    pub refused: bool,
    /// The peer ended TCP while the connection was open, before any Close: counted as ended
    /// without a close handshake when it ends (see `Port::note_abrupt_end`).
    pub ended_early: bool,
    /// Its place under `max_connections_per_address` (given back when the connection is
    /// dropped); `None` without that limit, and for a refused connection.
    pub ticket: Option<Box<AddressTicket>>,
    /// The transport: `None` is plaintext TCP (the hot path pays this one check), `Some` a
    /// wss:// connection whose bytes pass through rustls (see `worker/tls_io.rs`).
    pub tls: Option<Box<TlsSession>>,
    /// Some for a LAppS connection until its first response is queued: the OONs sent to it
    /// meanwhile wait there (see `worker/first_exchange.rs`).
    pub before_exchange: Option<HeldOons>,
}

/// OONs held back, in the order they came, until the connection's first response.
#[derive(Default)]
pub struct HeldOons {
    pub messages: Vec<Chunk>,
    pub bytes: usize,
}

impl HeldOons {
    /// The memory held: the messages' bytes and their entries (see `OutQueue::held`).
    pub fn held(&self) -> usize {
        self.bytes + self.messages.capacity() * std::mem::size_of::<Chunk>()
    }
}

impl Conn {
    pub fn new(fd: OwnedFd, peer: SocketAddr, now: Instant) -> Conn {
        Conn {
            fd,
            peer,
            phase: Phase::Handshake { scanned: 0 },
            service: None,
            tag: 0,
            decoder: None,
            inbuf: Vec::new(),
            out: OutQueue::default(),
            service_paused: false,
            service_paused_at: now,
            out_paused: false,
            read_pending: false,
            peer_hup: false,
            write_blocked: false,
            dirty: false,
            in_pending: false,
            handshake_queued: false,
            deadline: None,
            message_due: None,
            last_activity: now,
            acked: AckProgress::default(),
            close_extensions: 0,
            handed: 0,
            in_flight: 0,
            ping_outstanding: false,
            refused: false,
            ended_early: false,
            ticket: None,
            tls: None,
            before_exchange: None,
        }
    }

    /// Whether the peer acknowledged at least [`AckProgress::PROGRESS`] more of our bytes
    /// since the last call: it is reading what we send, however slowly.
    pub fn took_more(&mut self) -> bool {
        self.acked.took_more(self.fd.as_raw_fd())
    }

    /// Extensions of the close timeout at most: however slowly it reads, a closing peer is
    /// gone after `MAX_CLOSE_EXTENSIONS + 1` close timeouts (63 s at the default 3 s).
    pub const MAX_CLOSE_EXTENSIONS: u32 = 20;

    pub fn read_paused(&self) -> bool {
        self.service_paused || self.out_paused
    }

    /// The decoder's count of frames so far (wrapping; 0 before the upgrade, and after a
    /// protocol error drops the decoder: a turn that saw that ends early, which is harmless,
    /// as the connection is ending).
    pub fn frames_decoded(&self) -> u32 {
        self.decoder.as_ref().map_or(0, Decoder::frames_decoded)
    }

    /// The memory of what waits to be sent: the outbound queue and the OONs held for the
    /// first exchange. The slow-consumer limit judges this.
    pub fn waiting_bytes(&self) -> usize {
        self.out.held() + self.before_exchange.as_ref().map_or(0, HeldOons::held)
    }
}
