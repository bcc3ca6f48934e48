//! The IOWorker: one pinned thread, one epoll set, one slab of connections.
//!
//! It owns the sockets and never runs Lua or blocks: services are called through the
//! [`Service`] trait and answer later through the worker's [`Port`](super::hub::Port).
//!
//! Edge-triggered rule: after a readiness event a socket is read until `WouldBlock` (or the
//! per-connection read budget `max_inbounds_skip`, or the frame budget `FRAMES_PER_TURN`, is
//! spent, in which case the connection goes
//! on the pending list and is read again next iteration without waiting for a new event), and
//! written until `WouldBlock` (then we wait for EPOLLOUT). Forgetting either loses the socket.
//!
//! One loop iteration: wait for events; read and decode every ready connection (replies are
//! appended to outbound queues, not written); take new connections and service commands from
//! the inboxes; run timers; let each service hand over its batch; then write every connection
//! that has output once (one `send`/`sendmsg` per connection per iteration).
//!
//! Submodules extend `Worker`: `closing` (close handshakes, failing, the final removal),
//! `commands` (what service threads ask for), `first_exchange` (OONs wait for a LAppS
//! connection's first response), `frames` (an open connection's input), `timers` (deadlines,
//! shutdown), `tls_io` (wss://), `upgrade` (the opening handshake, routing).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::assembly::AssemblyBudget;
use super::conn::{Conn, Phase};
use super::epoll::{Events, Selector};
use super::handle::ConnId;
use super::hub::{Hub, NewConn, Refused};
use super::outq::{BufPool, Flushed, OutQueue};
use super::slab::Slab;
use super::sys;
use crate::service::{Service, WorkerCtx};
use crate::ws::codec::{self, Role};
use crate::ws::handshake;
use crate::ws::Opcode;
use crate::{debug, error, warn};

mod closing;
mod commands;
mod first_exchange;
mod frames;
mod timers;
mod tls_io;
mod upgrade;

use upgrade::quoted_request_line;
pub use upgrade::{Refusal, Router};

const WAKE_TOKEN: u64 = 0;

/// The 503 for a connection refused at accept (`why`), answered without waiting for its
/// request: when the request has come already and is a HEAD, without content (RFC 9110 section
/// 9.3.2); one that comes later gets the answer with its reason text.
fn refusal(fd: RawFd, why: Refused) -> Vec<u8> {
    let mut first = [0u8; 8];
    let n = sys::peek(fd, &mut first);
    handshake::error_response_to(first.get(..n).unwrap_or_default(), 503, why.reason())
}

/// Settings of one worker (from ws.json).
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    pub read_buffer: usize,
    pub auto_fragment: Option<usize>,
    pub max_poll_events: usize,
    pub max_poll_wait: Duration,
    pub max_inbounds_skip: usize,
    pub handshake_timeout: Duration,
    pub close_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    /// How long a data message may take to arrive whole from its first byte (None: no limit).
    pub message_timeout: Option<Duration>,
    pub max_request_bytes: usize,
    pub max_headers: usize,
    pub outbound_high_water: usize,
    /// CPU to pin to, if any.
    pub core: Option<core_affinity::CoreId>,
    /// The TLS configuration for endpoints that serve wss://.
    pub tls: Option<Arc<super::tls::TlsContext>>,
    /// Per listening endpoint (`NewConn::listener`): whether it serves wss://.
    pub tls_endpoints: Vec<bool>,
    /// The cap on partly received messages, shared by every worker of the process.
    pub assembly: Arc<AssemblyBudget>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            read_buffer: 64 * 1024,
            auto_fragment: None,
            max_poll_events: 256,
            max_poll_wait: Duration::from_millis(10),
            max_inbounds_skip: 50,
            handshake_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(3),
            idle_timeout: Some(Duration::from_secs(60)),
            message_timeout: Some(Duration::from_secs(120)),
            max_request_bytes: 8192,
            max_headers: 64,
            outbound_high_water: 4 << 20,
            core: None,
            tls: None,
            tls_endpoints: Vec::new(),
            assembly: Arc::default(),
        }
    }
}

/// A connection whose outbound queue passes `outbound_high_water` times this (plus one
/// message of the service's maximum size) is a slow consumer and is closed with 1008
/// (reading it already stopped at the high-water mark).
const SLOW_CONSUMER_FACTOR: usize = 4;

/// New connections a worker takes from its inbox per loop turn (about 1 ms of work).
const NEW_CONNECTIONS_PER_TURN: usize = 256;

/// Frames one connection may have decoded in a turn before its turn ends (after the read in
/// progress): `max_inbounds_skip` counts reads, and a read of tiny frames (empty Pongs or
/// continuations, which ask for nothing back and so meet no back-pressure) is thousands of
/// them. Without it, one peer flooding such frames took 50 reads' worth, ~550,000 frames,
/// per turn, and every other connection of its worker waited milliseconds for each turn.
const FRAMES_PER_TURN: u32 = 1024;

/// How long a shutdown may take before the remaining connections are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(4000);
/// First sleep while a service's full queue holds a batch of ours (see `flush_services`).
const RETRY_FLUSH_WAIT: Duration = Duration::from_millis(1);

/// A leftover longer than this (a request head arriving in small pieces) stays in the
/// connection's buffer and each read is appended to it, instead of being copied into the read
/// buffer before the read and back after it: that costs the leftover's length per read, which
/// is quadratic in the head's length for a head sent a byte at a time.
const LONG_LEFTOVER: usize = 1024;

/// Where the next read of a connection with leftover input `inbuf` goes: after a copy of a
/// short leftover at the start of `scratch`, or, for a long one (which stays where it is, see
/// [`Worker::process_read`]), at the start. Leftover and read together fit in `scratch` either
/// way; the caller made sure the leftover is shorter than it.
fn read_room<'a>(inbuf: &[u8], scratch: &'a mut [u8]) -> &'a mut [u8] {
    let kept = inbuf.len().min(scratch.len());
    if kept > LONG_LEFTOVER {
        let room = scratch.len() - kept;
        &mut scratch[..room]
    } else {
        scratch[..kept].copy_from_slice(&inbuf[..kept]);
        &mut scratch[kept..]
    }
}

/// What a connection keeps of a long leftover `inbuf` of which `consumed` bytes were
/// processed: the rest in place while it is long, else in a buffer of its own size (the long
/// one's capacity, up to `max_request_bytes` after a head that came in pieces, would stay
/// with an idle connection until its next read).
fn keep_rest(mut inbuf: Vec<u8>, consumed: usize) -> Vec<u8> {
    match inbuf.get(consumed..) {
        Some(rest) if rest.len() > LONG_LEFTOVER => {
            inbuf.drain(..consumed);
            inbuf
        }
        Some(rest) => rest.to_vec(),
        None => Vec::new(),
    }
}

pub struct Worker {
    id: usize,
    hub: Arc<Hub>,
    router: Arc<dyn Router>,
    opts: WorkerOptions,
    selector: Selector,
    conns: Slab<Conn>,
    scratch: Vec<u8>,
    /// Ciphertext read buffer of TLS connections (allocated with the first one).
    cipher: Vec<u8>,
    pool: BufPool,
    /// Connections with output queued this iteration.
    dirty: Vec<u32>,
    /// Connections with unread input that are not paused.
    pending: Vec<u32>,
    /// Time spent this iteration on the input of TLS connections still in their handshake
    /// (see `TLS_HANDSHAKE_TIME_PER_TURN`).
    handshake_time: Duration,
    /// TLS connections whose handshake input waits for a later iteration, oldest first.
    handshake_queue: VecDeque<u32>,
    /// `run_handshake_queue` is serving the queue: its connections need not queue again.
    serving_handshake_queue: bool,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Services that received messages this iteration (to `flush`).
    touched: Vec<Arc<dyn Service>>,
    /// Services whose last `flush` left a batch behind (their queue was full).
    retry_flush: Vec<Arc<dyn Service>>,
    /// How long to sleep before retrying `retry_flush` (doubles while it keeps failing).
    retry_wait: Duration,
    /// Messages a service sent to another connection of this worker during a callback.
    deferred: Vec<(ConnId, Vec<u8>)>,
    shutdown_since: Option<Instant>,
    handshake_limits: handshake::Limits,
    /// Calls of `flush_services` so far, plus one (see `Service::flush`).
    flushes: u64,
    /// Ending connections whose service's replies are in the command queue already: closed
    /// once the commands are taken (see `Owed::InCommands` and `close_answered_in_commands`).
    close_after_commands: Vec<AfterCommands>,
    /// Command batches taken from the queue so far (each is applied whole once taken).
    popped: u64,
}

/// An ending connection waiting for the replies in the command queue (`Owed::InCommands`).
pub(super) struct AfterCommands {
    pub index: u32,
    pub generation: u32,
    /// `Worker::popped` once every batch in the queue when it began to end is taken.
    pub until: u64,
}

/// What a service sees of the worker during a callback.
struct Ctx<'a> {
    worker: usize,
    current: ConnId,
    out: &'a mut OutQueue,
    pool: &'a mut BufPool,
    fragment: Option<usize>,
    deferred: &'a mut Vec<(ConnId, Vec<u8>)>,
}

impl WorkerCtx for Ctx<'_> {
    fn worker(&self) -> usize {
        self.worker
    }

    fn send(&mut self, conn: ConnId, opcode: Opcode, payload: &[u8]) -> bool {
        if conn.worker() != self.worker {
            return false;
        }
        let fragment = self.fragment;
        if conn == self.current {
            self.out.append_with(self.pool, |b| {
                codec::encode_message(b, Role::Server, opcode, payload, fragment, [0; 4])
            });
        } else {
            let mut b = Vec::with_capacity(payload.len() + 10);
            codec::encode_message(&mut b, Role::Server, opcode, payload, fragment, [0; 4]);
            self.deferred.push((conn, b));
        }
        true
    }
}

/// Marks a worker's port stopped when dropped (see `Worker::run`).
struct StoppedOnExit(Arc<Hub>, usize);

impl Drop for StoppedOnExit {
    fn drop(&mut self) {
        self.0.port(self.1).set_stopped();
    }
}

/// Why a connection ends (for the log).
#[derive(Debug, Clone, Copy)]
enum Ending {
    PeerClosed,
    Error,
    Done,
    /// A deadline passed; what was missing, for the log.
    Timeout(&'static str),
    /// The close was complete but the peer kept its end of TCP open until the close timeout:
    /// nothing lost, logged at debug only.
    PeerKeptOpen,
    Shutdown,
}

impl Worker {
    pub fn new(
        id: usize,
        hub: Arc<Hub>,
        router: Arc<dyn Router>,
        opts: WorkerOptions,
    ) -> io::Result<Worker> {
        let selector = Selector::new()?;
        selector.register_level(hub.port(id).wake_fd(), WAKE_TOKEN)?;
        let handshake_limits = handshake::Limits {
            max_request_bytes: opts.max_request_bytes,
            max_headers: opts.max_headers,
        };
        Ok(Worker {
            id,
            hub,
            router,
            selector,
            conns: Slab::default(),
            scratch: vec![0; opts.read_buffer.max(opts.max_request_bytes + 1).max(4096)],
            cipher: Vec::new(),
            pool: BufPool::new(256),
            dirty: Vec::new(),
            pending: Vec::new(),
            handshake_time: Duration::ZERO,
            handshake_queue: VecDeque::new(),
            serving_handshake_queue: false,
            timers: BinaryHeap::new(),
            touched: Vec::new(),
            retry_flush: Vec::new(),
            retry_wait: RETRY_FLUSH_WAIT,
            deferred: Vec::new(),
            shutdown_since: None,
            handshake_limits,
            flushes: 1,
            close_after_commands: Vec::new(),
            popped: 0,
            opts,
        })
    }

    /// Runs until shutdown completes.
    pub fn run(mut self) {
        if let Some(core) = self.opts.core {
            if !core_affinity::set_for_current(core) {
                warn!("worker {}: could not pin to core {}", self.id, core.id);
            }
        }
        // However the loop ends (a panic included), services posting to this worker stop
        // waiting for room in its command queue.
        let _stopped = StoppedOnExit(Arc::clone(&self.hub), self.id);
        let mut events = Events::with_capacity(self.opts.max_poll_events);
        loop {
            // Work left by the last iteration: a connection marked dirty while `flush_dirty`
            // ran (its Close queued by a flush that ended it), a Close waiting for the next
            // `take_commands`.
            let busy = !self.pending.is_empty()
                || !self.deferred.is_empty()
                || !self.touched.is_empty()
                || !self.handshake_queue.is_empty()
                || !self.dirty.is_empty()
                || !self.close_after_commands.is_empty();
            let mut timeout = if busy {
                Duration::ZERO
            } else if !self.retry_flush.is_empty() {
                // A batch a full queue refused: nothing wakes us when that queue drains, so
                // look again soon whatever max_poll_wait_ms is (sooner the fresher the refusal:
                // the wait doubles while the queue stays full).
                self.next_timeout().min(self.retry_wait)
            } else {
                self.next_timeout()
            };
            let port = self.hub.port(self.id);
            if !timeout.is_zero() && !port.prepare_sleep() {
                timeout = Duration::ZERO;
            }
            if let Err(e) = self.selector.select(&mut events, Some(timeout)) {
                warn!("worker {}: epoll_wait failed: {e}", self.id);
            }
            port.woke_quiet();
            self.handshake_time = Duration::ZERO;
            self.run_handshake_queue();
            for ev in events.iter() {
                if ev.token == WAKE_TOKEN {
                    self.hub.port(self.id).woke();
                    continue;
                }
                let index = (ev.token - 1) as u32;
                if ev.writable {
                    self.on_writable(index);
                }
                if ev.readable || ev.hangup {
                    self.on_readable(index, ev.hangup, ev.error);
                }
            }
            self.run_pending();
            self.take_new_connections();
            self.take_commands();
            self.close_answered_in_commands();
            self.apply_deferred();
            self.run_timers();
            self.check_shutdown();
            self.flush_services();
            // On one core the instance woken by that flush usually runs at once (it preempts
            // us) and has answered by now: send its replies in this iteration, not the next.
            self.take_commands();
            self.close_answered_in_commands();
            self.flush_dirty();
            self.publish_load();
            // `touched` is not empty when a connection ended after `flush_services` (in
            // `flush_dirty`): its close event still has to reach the service. The inbox may
            // still hold connections (taken at most a turn's worth at a time): each is closed
            // now, not when the last holder of the hub drops it (after the services stopped).
            if self.shutdown_since.is_some()
                && self.conns.is_empty()
                && self.touched.is_empty()
                && self.hub.port(self.id).accepts.is_empty()
                && self.flushed_or_gave_up()
            {
                break;
            }
        }
        debug!("worker {} stopped", self.id);
    }

    /// At shutdown, the last close events (a service's `on_close`) may still sit in a batch
    /// its full queue refused: stay (retrying each poll interval) until they are handed over,
    /// or the grace period is over, so that every `on_open` gets its `onDisconnect`.
    fn flushed_or_gave_up(&self) -> bool {
        if self.retry_flush.is_empty() {
            return true;
        }
        let expired = self
            .shutdown_since
            .is_some_and(|since| since.elapsed() > SHUTDOWN_GRACE);
        if expired {
            warn!(
                "worker {}: stopping with events a service's full queue never took",
                self.id
            );
        }
        expired
    }

    fn next_timeout(&self) -> Duration {
        let mut wait = self.opts.max_poll_wait;
        if let Some(since) = self.shutdown_since {
            // The grace's end is a deadline too (`check_shutdown`), however long the poll wait
            // and the connections' own deadlines are.
            let end = since + SHUTDOWN_GRACE + Duration::from_millis(1);
            wait = wait.min(end.saturating_duration_since(Instant::now()));
        }
        match self.timers.peek() {
            Some(Reverse((t, _, _))) => t.saturating_duration_since(Instant::now()).min(wait),
            None => wait,
        }
    }

    fn conn_id(&self, index: u32, generation: u32) -> ConnId {
        ConnId::new(self.id, index, generation)
    }

    /// A connection as its log lines name it: the peer, and once it is a service's, the
    /// handle the app knows it by and the service ("127.0.0.1:5000 (0x10000002a) of service
    /// echo"), so an operator can find it in the app's own lines.
    fn who(&self, index: u32) -> String {
        let Some(c) = self.conns.get(index) else {
            return String::new();
        };
        match (&c.service, self.conns.generation(index)) {
            (Some(s), Some(generation)) => format!(
                "{} ({:#x}) of service {}",
                c.peer,
                self.conn_id(index, generation).as_u64(),
                s.name()
            ),
            _ => c.peer.to_string(),
        }
    }

    // ---- accepting -------------------------------------------------------------------------

    /// Takes the connections the listeners handed over, at most [`NEW_CONNECTIONS_PER_TURN`]:
    /// listeners refilling the inbox as fast as it empties (a flood of refusals) cannot keep
    /// the worker from its connections, and a burst of thousands (each registered, and over
    /// TLS given a session) does not hold the established ones for as long. The rest waits for
    /// the next turn (the inbox not being empty, the worker does not sleep; a full inbox makes
    /// the listener wait, not refuse).
    fn take_new_connections(&mut self) {
        let port = self.hub.port(self.id);
        for _ in 0..port.accepts.capacity().min(NEW_CONNECTIONS_PER_TURN) {
            let Some(nc) = self.hub.port(self.id).accepts.pop() else {
                break;
            };
            if self.shutdown_since.is_some() {
                if nc.refuse.is_none() {
                    self.hub.port(self.id).release_slot();
                }
                continue; // dropping the fd closes it
            }
            self.add_connection(nc);
        }
    }

    fn add_connection(&mut self, nc: NewConn) {
        let fd = nc.fd.as_raw_fd();
        if let Err(e) = sys::setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1) {
            debug!("worker {}: TCP_NODELAY on {}: {e}", self.id, nc.peer);
        }
        let now = Instant::now();
        let refuse = nc.refuse;
        let refused = refuse.is_some();
        let tls = self.opts.tls_endpoints.get(nc.listener).copied() == Some(true);
        if tls && refuse == Some(Refused::AddressFull) {
            return; // no handshake for it: dropping the descriptor closes it
        }
        if let Some(why) = refuse.filter(|_| self.hub.port(self.id).refused_room_is_full()) {
            // No slot to linger in: answer in passing and close at once (over TLS, without
            // a session to answer in, just close). The answer may be lost to an RST when the
            // request is already here: a last resort past max_refused.
            if !tls {
                let _ = sys::send(fd, &refusal(fd, why));
            }
            return;
        }
        let mut conn = Conn::new(nc.fd, nc.peer, now);
        conn.refused = refused;
        conn.ticket = nc.ticket;
        if tls {
            match self.new_tls_session() {
                Some(s) => conn.tls = Some(s),
                None => {
                    // Logged; dropping `conn` closes the socket.
                    if !refused {
                        self.hub.port(self.id).release_slot();
                    }
                    return;
                }
            }
        }
        let recycled = self.conns.recycled();
        let Some((index, generation)) = self.conns.insert(conn) else {
            // Unreachable within max_connections (src/config/ws.rs); dropping closes it.
            error!(
                "worker {}: no connection slot left for {}; closing it",
                self.id, nc.peer
            );
            if !refused {
                self.hub.port(self.id).release_slot();
            }
            return;
        };
        if recycled == 0 && self.conns.recycled() == 1 {
            warn!(
                "worker {}: every connection handle has been used; retired handles are reused \
                 from now on (an app that kept a handle since then could reach a new connection)",
                self.id
            );
        }
        if let Err(e) = self.selector.register(fd, index as u64 + 1) {
            // A failed registration must not leave a slot behind (monoio does the same).
            // Rate-limited: at fs.epoll.max_user_watches (ENOSPC) every new connection fails.
            crate::warn_limited!(
                "worker {}: cannot register connection from {}: {e}",
                self.id,
                nc.peer
            );
            self.conns.remove(index);
            if !refused {
                self.hub.port(self.id).release_slot();
            }
            return;
        }
        if let Some(why) = refuse {
            self.hub.port(self.id).add_refused();
            let answer = if tls {
                // Answered once the TLS handshake is done, before the request is read.
                handshake::error_response(503, why.reason())
            } else {
                refusal(fd, why)
            };
            self.answer_and_finish(index, answer);
            return;
        }
        self.hub.port(self.id).set_live(index, generation);
        self.set_deadline(index, now + self.opts.handshake_timeout);
        // The client may have sent its request already: edge-triggered registration reports
        // data that was there before, but reading right away saves a wake-up.
        self.on_readable(index, false, false);
    }

    fn set_deadline(&mut self, index: u32, at: Instant) {
        let Some(generation) = self.conns.generation(index) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(index) {
            c.deadline = Some(at);
            self.timers.push(Reverse((at, index, generation)));
        }
    }

    // ---- reading ---------------------------------------------------------------------------

    fn on_readable(&mut self, index: u32, hangup: bool, error: bool) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        c.read_pending = true;
        c.peer_hup |= hangup;
        // Not read now (its service is behind, or its peer does not read ours): this edge is
        // the last word on a reset, which would otherwise be seen only once reading resumes,
        // the connection's descriptor and slot held until then. Ended now when nothing it
        // sent waits unread (the kernel still hands over what came before a reset: that is
        // read, and the error seen, when reading resumes); a FIN alone (a half-close) waits
        // for its turn. Plaintext only: over TLS, records already read may wait in the
        // connection's stash or in rustls, which the socket's count does not show. (Output
        // still queued for it is written first, in this same event: that write fails and
        // ends the connection anyway; TCP promises nothing after a reset.)
        if error
            && c.read_paused()
            && c.tls.is_none()
            && sys::unread_bytes(c.fd.as_raw_fd()) == Some(0)
        {
            if let Some(e) = sys::socket_error(c.fd.as_raw_fd()) {
                debug!("worker {}: {} while not read: {e}", self.id, c.peer);
                self.end(index, Ending::Error);
                return;
            }
        }
        // Already waiting in `pending` (its last turn's budget ran out): its turn comes later
        // in this iteration (`run_pending`), and reading now as well would give it two.
        if c.in_pending {
            return;
        }
        self.read_some(index);
    }

    fn run_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for index in pending {
            if let Some(c) = self.conns.get_mut(index) {
                c.in_pending = false;
                if c.read_pending {
                    self.read_some(index);
                }
            }
        }
    }

    /// Processes what a read of `n` bytes into [`read_room`] gave, after the connection's
    /// leftover input, and keeps what was not consumed as its new leftover.
    fn process_read(&mut self, index: u32, scratch: &mut [u8], n: usize) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        let mut inbuf = std::mem::take(&mut c.inbuf);
        let kept = inbuf.len();
        let total = kept + n;
        if kept > LONG_LEFTOVER {
            inbuf.extend_from_slice(scratch.get(..n).unwrap_or_default());
            let consumed = self.process(index, &mut inbuf);
            if let Some(c) = self.conns.get_mut(index) {
                if consumed < total {
                    c.inbuf = keep_rest(inbuf, consumed);
                }
            }
        } else {
            let consumed = self.process(index, &mut scratch[..total]);
            if let Some(c) = self.conns.get_mut(index) {
                if consumed < total {
                    c.inbuf = scratch[consumed..total].to_vec();
                }
            }
        }
    }

    /// Reads and processes up to `max_inbounds_skip` chunks from one connection.
    fn read_some(&mut self, index: u32) {
        if self.conns.get_mut(index).is_some_and(|c| c.tls.is_some()) {
            return self.read_some_tls(index);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let frames_before = self.conns.get_mut(index).map_or(0, |c| c.frames_decoded());
        for _ in 0..self.opts.max_inbounds_skip.max(1) {
            let Some(c) = self.conns.get_mut(index) else {
                break;
            };
            if !c.read_pending || c.read_paused() {
                break;
            }
            if c.frames_decoded().wrapping_sub(frames_before) >= FRAMES_PER_TURN {
                break;
            }
            let kept = c.inbuf.len();
            if kept >= scratch.len() {
                // Cannot happen: leftovers are bounded by the request limit and control frames.
                debug_assert!(false, "leftover larger than the read buffer");
                self.end(index, Ending::Error);
                break;
            }
            match sys::recv(c.fd.as_raw_fd(), read_room(&c.inbuf, &mut scratch)) {
                Ok(0) => {
                    c.read_pending = false;
                    self.on_eof(index);
                    break;
                }
                Ok(n) => {
                    c.last_activity = Instant::now();
                    // A short read drained the socket: anything arriving later is a new edge,
                    // so the extra read that would only return EAGAIN is skipped (as tokio does).
                    // Not after a hang-up: the EOF is already there and no edge will follow.
                    if kept + n < scratch.len() && !c.peer_hup {
                        c.read_pending = false;
                    }
                    self.process_read(index, &mut scratch, n);
                }
                Err(e) => {
                    if !self.read_failed(index, e) {
                        break;
                    }
                }
            }
        }
        self.scratch = scratch;
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        // Budget spent with input left: come back next iteration, after the others had a turn.
        if c.read_pending && !c.read_paused() && !c.in_pending {
            c.in_pending = true;
            self.pending.push(index);
        }
        // Answer now: everything this read produced leaves in one send, and the reply does not
        // wait for the rest of the batch (that wait is pure latency in a ping-pong).
        if !c.out.is_empty() && !c.write_blocked {
            self.flush_conn(index);
        }
    }

    /// A failed read (plaintext or TLS): `true` to read again (EINTR); otherwise reading this
    /// connection stops, for now (EAGAIN: wait for the next edge) or for good (an error ends it).
    fn read_failed(&mut self, index: u32, e: io::Error) -> bool {
        if e.kind() == io::ErrorKind::Interrupted {
            return true;
        }
        let Some(c) = self.conns.get_mut(index) else {
            return false;
        };
        c.read_pending = false;
        if e.kind() != io::ErrorKind::WouldBlock {
            debug!("worker {}: read from {}: {e}", self.id, c.peer);
            self.end(index, Ending::Error);
        }
        false
    }

    /// Processes input bytes; returns how many were consumed.
    fn process(&mut self, index: u32, buf: &mut [u8]) -> usize {
        let Some(c) = self.conns.get_mut(index) else {
            return buf.len();
        };
        match c.phase {
            Phase::Handshake { scanned } => self.process_handshake(index, buf, scanned as usize),
            // Waiting for the service's answers, the peer is still heard: its pings are
            // answered, its Close noted, its data dropped.
            Phase::Open | Phase::Closing | Phase::Answering(..) => self.process_frames(index, buf),
            Phase::Finishing | Phase::Draining => buf.len(),
        }
    }

    /// Lets every service that got work this iteration hand its batch over (one wake-up per
    /// batch); those whose queue was full are retried next iteration.
    fn flush_services(&mut self) {
        // A batch was refused last time: the wait doubles while one still is.
        let retrying = !self.retry_flush.is_empty();
        for s in std::mem::take(&mut self.retry_flush) {
            self.touched_push(&s);
        }
        for s in std::mem::take(&mut self.touched) {
            s.flush(self.id, self.flushes);
            if s.has_pending(self.id) {
                self.retry_flush.push(s);
            }
        }
        self.flushes += 1;
        self.retry_wait = match (retrying, self.retry_flush.is_empty()) {
            (_, true) | (false, false) => RETRY_FLUSH_WAIT,
            (true, false) => {
                (self.retry_wait * 2).min(self.opts.max_poll_wait.max(RETRY_FLUSH_WAIT))
            }
        };
    }

    fn touched_push(&mut self, s: &Arc<dyn Service>) {
        if !self.touched.iter().any(|t| Arc::ptr_eq(t, s)) {
            self.touched.push(s.clone());
        }
    }

    // ---- writing ---------------------------------------------------------------------------

    fn mark_dirty(&mut self, index: u32) {
        if let Some(c) = self.conns.get_mut(index) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(index);
            }
        }
    }

    fn on_writable(&mut self, index: u32) {
        if let Some(c) = self.conns.get_mut(index) {
            c.write_blocked = false;
        }
        self.flush_conn(index);
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &index in &dirty {
            if let Some(c) = self.conns.get_mut(index) {
                c.dirty = false;
                if !c.write_blocked {
                    self.flush_conn(index);
                }
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn flush_conn(&mut self, index: u32) {
        let high = self.opts.outbound_high_water;
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        let fd: RawFd = c.fd.as_raw_fd();
        let flushed = match c.tls.as_deref_mut() {
            None => c.out.flush(fd, &mut self.pool),
            Some(t) => t.flush(&mut c.out, fd, &mut self.pool, c.phase == Phase::Finishing),
        };
        let worn_out = (c.phase == Phase::Open)
            .then(|| c.tls.as_deref().filter(|t| t.records_running_out()))
            .flatten()
            .map(|t| (c.peer, t.records()));
        if let Some((peer, (sent, budget))) = worn_out {
            crate::info_limited!(
                "closing {peer}: its TLS 1.2 session has sent {sent} records, {} of its cipher \
                 suite's limit less a reserve (1001; TLS 1.3 renews its keys instead)",
                budget.unwrap_or(sent)
            );
        }
        match flushed {
            Ok(Flushed::Waiting) => c.write_blocked = false,
            Ok(Flushed::All) => {
                c.write_blocked = false;
                if c.out_paused {
                    c.out_paused = false;
                    self.resume_reading(index);
                }
                if let Some(c) = self.conns.get_mut(index) {
                    if c.phase == Phase::Finishing {
                        self.finish(index);
                    }
                }
            }
            Ok(Flushed::Blocked) => {
                c.write_blocked = true;
                if c.out.bytes() > high {
                    c.out_paused = true;
                } else if c.out_paused && c.out.bytes() <= high / 2 {
                    c.out_paused = false;
                    self.resume_reading(index);
                }
            }
            Err(e) => {
                debug!("worker {}: write to {}: {e}", self.id, c.peer);
                self.end(index, Ending::Error);
            }
        }
        if worn_out.is_some() {
            self.go_away(index, crate::ws::close::GOING_AWAY);
        }
    }

    fn resume_reading(&mut self, index: u32) {
        if let Some(c) = self.conns.get_mut(index) {
            if c.read_pending && !c.read_paused() && !c.in_pending {
                c.in_pending = true;
                self.pending.push(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_rest_of_a_long_leftover_is_kept_in_a_buffer_of_its_size() {
        let mut head = Vec::with_capacity(8192);
        head.extend(std::iter::repeat_n(b'x', 8000));
        let rest = keep_rest(head, 7990);
        assert_eq!(rest.len(), 10);
        assert!(
            rest.capacity() < LONG_LEFTOVER,
            "capacity {}",
            rest.capacity()
        );
        // A rest still long stays where it is (no copy per read while a head grows).
        let mut head = Vec::with_capacity(8192);
        head.extend((0..8000).map(|i| i as u8));
        let rest = keep_rest(head, 100);
        assert_eq!(rest.len(), 7900);
        assert_eq!(rest.first(), Some(&100));
        assert!(keep_rest(vec![1, 2], 2).is_empty());
    }
}
