//! How other threads reach the IOWorkers: one [`Port`] per worker.
//!
//! A port holds the worker's two inboxes (new connections from the balancer, command batches
//! from service instances), its eventfd, the liveness table of its connections and the load
//! figures the balancer reads. Inboxes are bounded Vyukov queues: a full inbox is
//! back-pressure for the sender (it waits), never growth and never a drop.
//!
//! Wake-up protocol (no hand-off is ever lost): before it sleeps in `epoll_wait` a worker sets
//! `sleeping` and then looks at its inboxes once more; a sender pushes and then swaps
//! `sleeping` to false, writing the eventfd only when it was true. Both sides use SeqCst, so
//! either the worker sees the item or the sender sees the flag.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::handle::ConnId;
use super::per_address::AddressTicket;
use crate::sync::mpmc::ArrayQueue;

/// Bytes to write, already framed (server frames are unmasked, so one encoding of a broadcast
/// frame serves every recipient: `Shared`).
#[derive(Debug, Clone)]
pub enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Chunk {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(a) => a,
        }
    }
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a service instance asks of a worker.
#[derive(Debug)]
pub enum Command {
    /// Queue these framed bytes on the connection.
    Send { conn: ConnId, frame: Chunk },
    /// Many small frames for connections of this worker, framed back to back into one buffer
    /// (`sends` gives each frame's connection and length, in order): one allocation for a
    /// whole batch of replies instead of one per reply.
    SendBatch {
        buf: Vec<u8>,
        sends: Vec<(ConnId, u32)>,
    },
    /// Queue one shared frame on many connections of this worker (a broadcast: encoded once).
    SendMany {
        conns: Vec<ConnId>,
        frame: Arc<[u8]>,
    },
    /// Start the close handshake with this code (1000 normal, 1011 internal error, ...) and
    /// reason (UTF-8, at most [`crate::ws::close::MAX_REASON`] bytes; checked by the sender).
    Close {
        conn: ConnId,
        code: u16,
        reason: Option<Box<str>>,
    },
    /// The server asks an open connection to end with this code (1001: its service version
    /// retires): after the replies its service still owes to what it sent, as after the
    /// peer's Close; nothing on a connection already ending.
    GoAway { conn: ConnId, code: u16 },
    /// The service can take more input from this connection again (it was paused).
    Resume { conn: ConnId },
}

impl Command {
    /// The bytes this command asks the worker to deliver, over all its connections (a
    /// broadcast's frame once per recipient): what sending it costs.
    pub fn delivered_bytes(&self) -> usize {
        match self {
            Command::Send { frame, .. } => frame.len(),
            Command::SendBatch { buf, .. } => buf.len(),
            Command::SendMany { conns, frame } => frame.len().saturating_mul(conns.len()),
            Command::Close { .. } | Command::GoAway { .. } | Command::Resume { .. } => 0,
        }
    }
}

/// Refused (503) connections a worker may hold beside its live ones, each lingering (a slab
/// slot and a descriptor) until the peer's EOF or the close timeout, so that the answer is
/// not lost to a reset. Fixed, and counted in the descriptors the server needs
/// (`nofile::shortfall`): past it, a refusal is answered in passing and closed at once.
pub const REFUSED_ROOM: usize = 1024;

/// A connection accepted by a listener, on its way to a worker.
#[derive(Debug)]
pub struct NewConn {
    pub fd: OwnedFd,
    pub peer: std::net::SocketAddr,
    /// Index of the listening endpoint that accepted it (its TLS and ACL settings).
    pub listener: usize,
    /// Refused, and why: a worker answers HTTP 503 and closes, so that the answer is written
    /// and the close is orderly. Holds no connection slot.
    pub refuse: Option<Refused>,
    /// The peer's place under `max_connections_per_address`, given back when the connection
    /// ends (dropped with it, wherever that happens).
    pub ticket: Option<Box<AddressTicket>>,
}

/// Why a connection is refused (HTTP 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every worker is at `max_connections` (when it was accepted: a connection the inboxes
    /// could not take yet is dispatched again, and may find room then).
    ServerFull,
    /// Its address is at `max_connections_per_address`. On a wss:// endpoint it is closed
    /// without an answer: a TLS handshake (a signature) is not spent on it.
    AddressFull,
}

impl Refused {
    /// The 503's reason text.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::ServerFull => "server full",
            Refused::AddressFull => "too many connections from this address",
        }
    }
}

// A liveness word: the generation (19 bits), UNPOSTED, UNCOUNTED, LIVE, LAPPS and ENDING in
// the low half; in the high half, how many of a LAppS connection's requests reached its app and
// are owed a response (31 bits), and CLOSE_WHEN_SETTLED.
const LIVE: u64 = 1 << 31;
/// Beside LIVE: the connection speaks the LAppS protocol (set at its upgrade).
const LAPPS: u64 = 1 << 30;
/// Beside LIVE: a Close is on its way (RFC 6455 5.5.1: no data frame may follow ours), so the
/// handle answers as gone: a send is refused now instead of being dropped by the worker.
const ENDING: u64 = 1 << 29;
/// Bits 19-27 of a LAppS connection's word: answers to it (responses taken from the owed count,
/// host answers held in order) that no worker command queue has yet. Its Close may skip the
/// wait for its instance only when none are (see [`Hub::lapps_settled`]).
const UNPOSTED: u64 = 0x1FF << 19;
const ONE_UNPOSTED: u64 = 1 << 19;
/// Beside LIVE: more answers went unposted at once than UNPOSTED counts. The count is no longer
/// exact, so the connection's Close always waits for its instance (the careful way).
const UNCOUNTED: u64 = 1 << 28;
/// The low half less the unposted count: who the word is about.
const WHO: u64 = 0xFFFF_FFFF & !(UNPOSTED | UNCOUNTED);
/// One owed response.
const OWED: u64 = 1 << 32;
/// The owed count, shifted down.
const OWED_MAX: u64 = 0x7FFF_FFFF;
/// Top bit: the connection is ending with no answer held in its instance, but responses are
/// still owed, or taken and not yet posted: the thread whose post leaves it settled queues the
/// Close (see [`Hub::close_when_settled`]).
const CLOSE_WHEN_SETTLED: u64 = 1 << 63;

/// The owed count of a word.
fn owed_of(w: u64) -> u64 {
    (w >> 32) & OWED_MAX
}

/// Nothing owed and nothing unposted (and the count exact).
fn settled(w: u64) -> bool {
    owed_of(w) == 0 && w & (UNPOSTED | UNCOUNTED) == 0
}

/// What [`Hub::close_when_settled`] decided for an ending LAppS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Queue its Close now.
    Now,
    /// The thread whose post settles it queues the Close.
    Marked,
    /// The unposted count is no longer exact: no post can tell when the last answer has left,
    /// and a Close queued before it would overtake it (the worker drops what follows a Close).
    /// The worker's close timeout ends the connection, after whatever answers came by then.
    Untold,
}

/// What a live connection speaks, for the sends that only make sense on one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    /// WebSocket messages as they are (RAW services, built-ins, a connection mid-upgrade).
    Raw,
    /// The LAppS protocol: CBOR responses and OONs only.
    Lapps,
}

/// Spare reply buffers kept per worker (a few per instance feeding it is plenty).
const SPARE_BATCHES: usize = 64;
/// A buffer that grew beyond this is freed rather than kept as a spare.
const SPARE_MAX_BYTES: usize = 1 << 20;

/// The two buffers of an emptied [`Command::SendBatch`].
#[derive(Debug, Default)]
pub struct SpareBatch {
    pub buf: Vec<u8>,
    pub sends: Vec<(ConnId, u32)>,
}

impl Port {
    /// Worker side: keeps the emptied buffers of a `SendBatch` for reuse (drops big or
    /// surplus ones).
    pub fn give_back(&self, mut buf: Vec<u8>, mut sends: Vec<(ConnId, u32)>) {
        if buf.capacity() > SPARE_MAX_BYTES {
            return;
        }
        buf.clear();
        sends.clear();
        let _ = self.spare.push(SpareBatch { buf, sends });
    }
}

/// Accepted connections at most waiting for a worker to take them; a burst beyond waits in
/// the kernel's accept queue (see `listener::run`).
pub const ACCEPT_INBOX: usize = 4096;

/// One worker's side of the hub.
pub struct Port {
    pub accepts: ArrayQueue<NewConn>,
    pub commands: ArrayQueue<Vec<Command>>,
    /// Emptied `SendBatch` buffers the worker hands back for the instances to fill again, so
    /// that a steady stream of replies allocates nothing (see [`SpareBatch`]).
    pub spare: ArrayQueue<SpareBatch>,
    wake: OwnedFd,
    sleeping: AtomicBool,
    /// Set when the worker's loop has ended: nothing will take its commands any more.
    stopped: AtomicBool,
    /// `generation | LIVE` (`| LAPPS`) per slab slot while a connection is open there, 0
    /// otherwise; in the high half, the responses a LAppS connection is owed. Covers every index a slab can hand out (slots are retired at their last
    /// generation and new ones appended).
    live: LiveTable,
    /// Refused (503) connections the worker may hold beside `max_connections` live ones.
    refused_room: usize,
    /// Refused connections in the worker's slab (answered, lingering until the peer's EOF):
    /// the worker's count, read by the balancer to spread refusals over the workers' rooms.
    refused: AtomicUsize,
    /// Connections handed to this worker and not yet ended: the balancer reserves a slot
    /// (compare-and-swap against `max_connections`) before the hand-off, the worker releases
    /// it when the connection ends, so the limit holds exactly even across listener threads.
    pub connections: AtomicUsize,
    /// Bytes waiting in outbound queues (published by the worker for the balancer).
    pub queued_bytes: AtomicUsize,
    /// WebSocket connections that ended without a close handshake (a reset, a read or write
    /// error, or an end of TCP while open), since the start: for the status report.
    abrupt_ends: std::sync::atomic::AtomicU64,
    pub max_connections: usize,
}

impl Port {
    fn new(max_connections: usize, accept_capacity: usize) -> std::io::Result<Port> {
        // SAFETY: eventfd has no memory preconditions; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Port {
            accepts: ArrayQueue::new(accept_capacity),
            commands: ArrayQueue::new(1024),
            spare: ArrayQueue::new(SPARE_BATCHES),
            wake,
            sleeping: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            live: LiveTable::new(),
            refused_room: REFUSED_ROOM,
            refused: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            abrupt_ends: std::sync::atomic::AtomicU64::new(0),
            max_connections,
        })
    }

    /// The eventfd the worker registers in its epoll set.
    pub fn wake_fd(&self) -> i32 {
        self.wake.as_raw_fd()
    }

    /// Wakes the worker if it is (about to be) asleep.
    pub fn notify(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to our own eventfd. EAGAIN (counter
            // saturated) means a wake-up is already pending, which is all we need.
            unsafe { libc::write(self.wake.as_raw_fd(), &one as *const u64 as *const _, 8) };
        }
    }

    /// Worker side: the loop has ended (the worker thread is about to exit).
    pub fn set_stopped(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Worker side: announce sleep; returns false when work arrived meanwhile (do not sleep).
    pub fn prepare_sleep(&self) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        if !self.accepts.is_empty() || !self.commands.is_empty() {
            self.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Worker side: after waking (drains the eventfd counter).
    pub fn woke(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
        let mut buf: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our own non-blocking eventfd.
        unsafe { libc::read(self.wake.as_raw_fd(), &mut buf as *mut u64 as *mut _, 8) };
    }

    /// Balancer side: takes one connection slot; false when the worker is full.
    pub fn reserve_slot(&self) -> bool {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c < self.max_connections).then_some(c + 1)
            })
            .is_ok()
    }

    /// Gives back a slot taken by `reserve_slot` (the connection ended or never arrived).
    pub fn release_slot(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// Worker side: awake again after `epoll_wait` (the eventfd is drained only when it fired).
    pub fn woke_quiet(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// How many refused (503) connections the worker may hold in its slab beside
    /// `max_connections` live ones.
    pub fn max_refused(&self) -> usize {
        self.refused_room
    }

    /// Refused connections the worker holds now.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    /// Worker side: no room for one more refused connection.
    pub fn refused_room_is_full(&self) -> bool {
        self.refused() >= self.refused_room
    }

    /// Worker side: a refused connection is lingering in its slab.
    pub fn add_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Worker side: a refused connection has left its slab.
    pub fn remove_refused(&self) {
        self.refused.fetch_sub(1, Ordering::Relaxed);
    }

    /// Worker side: a connection ended without a close handshake.
    pub fn note_abrupt_end(&self) {
        self.abrupt_ends.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections of this worker that ended without a close handshake since the start.
    pub fn abrupt_ends(&self) -> u64 {
        self.abrupt_ends.load(Ordering::Relaxed)
    }

    /// Worker side: the slot `index` now holds a live connection of this generation.
    pub fn set_live(&self, index: u32, generation: u32) {
        if let Some(slot) = self.live.slot(index) {
            slot.store(
                (generation & ConnId::GEN_MASK) as u64 | LIVE,
                Ordering::Release,
            );
        }
    }

    /// Worker side: the connection in slot `index` (of this generation) was upgraded to a
    /// service that speaks `speaks`.
    pub fn set_speaks(&self, index: u32, generation: u32, speaks: Speaks) {
        let kind = match speaks {
            Speaks::Raw => 0,
            Speaks::Lapps => LAPPS,
        };
        if let Some(slot) = self.live.slot(index) {
            slot.store(
                (generation & ConnId::GEN_MASK) as u64 | LIVE | kind,
                Ordering::Release,
            );
        }
    }

    /// Either side: `conn`'s Close is queued or about to be (see `ENDING`); from now on the
    /// handle answers as gone. Nothing when `conn` is gone already.
    pub fn set_ending(&self, conn: ConnId) {
        let Some(slot) = self.live.get(conn.index()) else {
            return;
        };
        let gen = conn.generation() as u64;
        let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            (w & WHO & !LAPPS == gen | LIVE).then_some(w | ENDING)
        });
    }

    /// Worker side: the slot `index` is free again.
    pub fn set_dead(&self, index: u32) {
        if let Some(slot) = self.live.get(index) {
            slot.store(0, Ordering::Release);
        }
    }

    fn speaks(&self, conn: ConnId) -> Option<Speaks> {
        let g = self.live.get(conn.index())?.load(Ordering::Acquire) & WHO;
        if g & !LAPPS != conn.generation() as u64 | LIVE {
            return None;
        }
        Some(if g & LAPPS == 0 {
            Speaks::Raw
        } else {
            Speaks::Lapps
        })
    }
}

/// `w` with one more unposted answer (or UNCOUNTED, once the count is full).
fn add_unposted(w: u64) -> u64 {
    if w & UNCOUNTED != 0 {
        w
    } else if w & UNPOSTED == UNPOSTED {
        w | UNCOUNTED
    } else {
        w + ONE_UNPOSTED
    }
}

impl Port {
    /// Changes the word of the live LAppS connection `conn` by `step`, while `ok` holds for
    /// its count of owed responses; false when it does not, or `conn` is gone.
    fn owed(&self, conn: ConnId, ok: impl Fn(u64) -> bool, step: impl Fn(u64) -> u64) -> bool {
        let Some(slot) = self.live.get(conn.index()) else {
            return false;
        };
        let who = conn.generation() as u64 | LIVE | LAPPS;
        // SeqCst: a response taken here and the host answers waiting for it are ordered with
        // `owed_responses` (see `shared_answers`); on x86-64 the same locked instruction.
        slot.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
            (w & WHO == who && ok(owed_of(w))).then(|| step(w))
        })
        .is_ok()
    }
}

/// The liveness words of every slab index (2^22), allocated a chunk of 2^16 at a time when the
/// worker first writes into it: a worker of a few thousand connections holds one 512 KiB
/// chunk, not 32 MiB, whatever the allocator or the overcommit policy. Readers (any thread)
/// never allocate: an index in a chunk not made yet is not live.
struct LiveTable {
    chunks: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl LiveTable {
    const CHUNK_BITS: u32 = 16;

    fn new() -> LiveTable {
        let n = (ConnId::MAX_INDEX as usize + 1) >> Self::CHUNK_BITS;
        LiveTable {
            chunks: (0..n.max(1)).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The word of `index`, if its chunk exists.
    fn get(&self, index: u32) -> Option<&AtomicU64> {
        let chunk = self
            .chunks
            .get((index >> Self::CHUNK_BITS) as usize)?
            .get()?;
        chunk.get((index & ((1 << Self::CHUNK_BITS) - 1)) as usize)
    }

    /// The word of `index`, making its chunk if needed (the worker, before a connection there
    /// becomes live).
    fn slot(&self, index: u32) -> Option<&AtomicU64> {
        let chunk = self
            .chunks
            .get((index >> Self::CHUNK_BITS) as usize)?
            .get_or_init(|| zeroed_atomics(1 << Self::CHUNK_BITS));
        chunk.get((index & ((1 << Self::CHUNK_BITS) - 1)) as usize)
    }
}

/// A zero-initialised table that costs no memory until a slot is first written: `vec![0; n]`
/// is calloc, whose untouched pages stay unmapped.
fn zeroed_atomics(n: usize) -> Box<[AtomicU64]> {
    const _: () = assert!(
        std::mem::align_of::<u64>() == std::mem::align_of::<AtomicU64>()
            && std::mem::size_of::<u64>() == std::mem::size_of::<AtomicU64>()
    );
    let v: Box<[u64]> = vec![0u64; n].into_boxed_slice();
    let len = v.len();
    let ptr = Box::into_raw(v) as *mut AtomicU64;
    // SAFETY: AtomicU64 has the same size and alignment as u64 (asserted above) and 0 is a
    // valid value; the allocation came from a Box<[u64]> of `len`
    // elements and is handed back to one Box.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) }
}

/// Why a command could not be posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubError {
    /// The handle names a connection that is gone (or never was).
    Closed,
    /// The server is shutting down.
    ShuttingDown,
}

/// All ports; shared by listeners, services and workers.
pub struct Hub {
    ports: Vec<Port>,
    shutting_down: AtomicBool,
    /// Host answers waiting their turn on LAppS connections, for any responder to send.
    answers: super::shared_answers::SharedAnswers,
}

impl Hub {
    pub fn new(workers: usize, max_connections: usize) -> std::io::Result<Hub> {
        Hub::with_inbox(workers, max_connections, ACCEPT_INBOX)
    }

    /// As [`Hub::new`], with `inbox` accepted connections at most waiting for each worker.
    pub fn with_inbox(
        workers: usize,
        max_connections: usize,
        inbox: usize,
    ) -> std::io::Result<Hub> {
        assert!(workers > 0 && workers <= ConnId::MAX_WORKERS);
        let ports = (0..workers)
            .map(|_| Port::new(max_connections, inbox))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Hub {
            ports,
            shutting_down: AtomicBool::new(false),
            answers: Default::default(),
        })
    }

    pub fn workers(&self) -> usize {
        self.ports.len()
    }

    /// Host answers waiting their turn behind responses (see `shared_answers`).
    pub fn answers(&self) -> &super::shared_answers::SharedAnswers {
        &self.answers
    }

    pub fn port(&self, worker: usize) -> &Port {
        &self.ports[worker]
    }

    /// `conn` is closing: sends to it are refused from now on ([`Port::set_ending`]).
    pub fn set_ending(&self, conn: ConnId) {
        if let Some(port) = self.ports.get(conn.worker()) {
            port.set_ending(conn);
        }
    }

    /// True while `conn` names an open connection (not closing).
    pub fn is_live(&self, conn: ConnId) -> bool {
        self.speaks(conn).is_some()
    }

    /// What `conn` speaks while it names an open connection, None once it is gone.
    pub fn speaks(&self, conn: ConnId) -> Option<Speaks> {
        self.ports.get(conn.worker())?.speaks(conn)
    }

    /// The liveness word of `conn`'s slot (whichever connection holds it now).
    fn word(&self, conn: ConnId) -> Option<&AtomicU64> {
        self.ports.get(conn.worker())?.live.get(conn.index())
    }

    /// Instance side: a request of the LAppS connection `conn` reached its app, which owes it
    /// one response (SPEC section 4). False when `conn` is gone.
    pub fn expect_response(&self, conn: ConnId) -> bool {
        self.ports
            .get(conn.worker())
            .is_some_and(|p| p.owed(conn, |n| n < OWED_MAX, |w| w + OWED))
    }

    /// The responses the live LAppS connection `conn` is owed (requests that reached its app
    /// and have not had theirs); None once it is gone (or when it is not a LAppS connection).
    pub fn owed_responses(&self, conn: ConnId) -> Option<u32> {
        // SeqCst: see `Port::owed` (a plain load on x86-64).
        let w = self.word(conn)?.load(Ordering::SeqCst);
        (w & WHO == conn.generation() as u64 | LIVE | LAPPS).then_some(owed_of(w) as u32)
    }

    /// The answers to the live LAppS connection `conn` counted as unposted ([`Hub::take_response`],
    /// [`Hub::hold_answer`]) and not yet [`Hub::posted`]; None once it is gone, and when the
    /// count is no longer exact.
    pub fn unposted_answers(&self, conn: ConnId) -> Option<u32> {
        let w = self.word(conn)?.load(Ordering::Acquire);
        let exact =
            w & WHO & !ENDING == conn.generation() as u64 | LIVE | LAPPS && w & UNCOUNTED == 0;
        exact.then_some(((w & UNPOSTED) / ONE_UNPOSTED) as u32)
    }

    /// Any thread, before a response (cid 0) to `conn` is queued: takes one owed response.
    /// False when none is owed (every request has had its response: one more would be taken
    /// by the client for the answer to its next call) or `conn` is gone. A response taken
    /// counts as unposted, in the same step, until [`Hub::posted`] says its command reached
    /// the worker's queue.
    pub fn take_response(&self, conn: ConnId) -> bool {
        self.ports
            .get(conn.worker())
            .is_some_and(|p| p.owed(conn, |n| n > 0, |w| add_unposted(w - OWED)))
    }

    /// Instance side: a host answer to `conn` is held behind responses its app owes; it counts
    /// as unposted until [`Hub::posted`].
    pub fn hold_answer(&self, conn: ConnId) {
        let _ = self.unposted(conn, add_unposted);
    }

    /// Any thread, once the command carrying an answer counted by [`Hub::take_response`] or
    /// [`Hub::hold_answer`] is in the worker's queue (or is dropped): one unposted answer less.
    ///
    /// True when this was the last answer an ending connection waited for
    /// ([`Hub::close_when_settled`]): the caller queues its Close (1000; the worker closes with
    /// the code it decided on), after the answers it has posted.
    #[must_use = "a true answer means: queue the connection's Close"]
    pub fn posted(&self, conn: ConnId) -> bool {
        let step = |w: u64| {
            if w & UNCOUNTED != 0 || w & UNPOSTED == 0 {
                w
            } else {
                let w = w - ONE_UNPOSTED;
                if w & CLOSE_WHEN_SETTLED != 0 && settled(w) {
                    w & !CLOSE_WHEN_SETTLED
                } else {
                    w
                }
            }
        };
        self.unposted(conn, step)
            .is_some_and(|w| w & CLOSE_WHEN_SETTLED != 0 && step(w) & CLOSE_WHEN_SETTLED == 0)
    }

    /// Instance side, as the ending LAppS connection `conn` holds no answer in this instance:
    /// [`Settle::Now`] when it is settled (nothing owed, nothing unposted: queue its Close now;
    /// also when `conn` is gone). [`Settle::Marked`] when it is not: the [`Hub::posted`] that
    /// leaves it settled says so to its caller, who queues the Close behind the answers it has
    /// just posted. [`Settle::Untold`] when the count is no longer exact (more answers went
    /// unposted at once than it holds; the threads that queue answers post early to keep it
    /// so, `HostCtx::queued_counted`). Call it once per ending connection.
    pub fn close_when_settled(&self, conn: ConnId) -> Settle {
        let Some(slot) = self.word(conn) else {
            return Settle::Now;
        };
        let who = conn.generation() as u64 | LIVE | LAPPS;
        let marked = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            let waits = w & WHO & !ENDING == who && w & UNCOUNTED == 0 && !settled(w);
            waits.then_some(w | CLOSE_WHEN_SETTLED)
        });
        match marked {
            Ok(_) => Settle::Marked,
            Err(w) if w & WHO & !ENDING == who && w & UNCOUNTED != 0 => Settle::Untold,
            Err(_) => Settle::Now,
        }
    }

    /// Changes the unposted count of the LAppS connection `conn` (closing or not); nothing when
    /// it is gone (a later connection in its slot starts from zero). The word before, when
    /// `conn` is there.
    fn unposted(&self, conn: ConnId, step: impl Fn(u64) -> u64) -> Option<u64> {
        let slot = self.word(conn)?;
        let who = conn.generation() as u64 | LIVE | LAPPS;
        slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            (w & WHO & !ENDING == who).then(|| step(w))
        })
        .ok()
    }

    /// Worker side, as the LAppS connection `conn` begins to end: true when every request of
    /// it that reached its app has had its answer, and every answer is in the worker's command
    /// queue already (none taken and not yet posted, none held). Its messages must all have been
    /// handled too (the caller checks): then the Close need not wait for the instance.
    pub fn lapps_settled(&self, conn: ConnId) -> bool {
        let Some(w) = self.word(conn).map(|s| s.load(Ordering::Acquire)) else {
            return false;
        };
        w & WHO == conn.generation() as u64 | LIVE | LAPPS && settled(w)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for p in &self.ports {
            p.notify_force();
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Hands a batch of commands to `worker` with one wake-up. Waits while the worker's inbox
    /// is full (back-pressure on the calling service thread; workers never call this).
    pub fn post(&self, worker: usize, batch: Vec<Command>) -> Result<(), HubError> {
        if batch.is_empty() {
            return Ok(());
        }
        let port = self.ports.get(worker).ok_or(HubError::Closed)?;
        let mut batch = batch;
        let mut spins = 0u32;
        loop {
            match port.commands.push(batch) {
                Ok(()) => {
                    port.notify();
                    return Ok(());
                }
                Err(back) => {
                    // A stopping worker still takes commands (the answers to what its
                    // connections sent before they close): only a worker gone refuses them.
                    if port.stopped.load(Ordering::SeqCst) {
                        return Err(HubError::ShuttingDown);
                    }
                    batch = back;
                    port.notify();
                    spins += 1;
                    if spins < 64 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
            }
        }
    }

    /// Posts one command for the connection's own worker, after checking the handle is live.
    pub fn send(&self, cmd: Command) -> Result<(), HubError> {
        let conn = match &cmd {
            Command::Send { conn, .. }
            | Command::Close { conn, .. }
            | Command::GoAway { conn, .. }
            | Command::Resume { conn } => *conn,
            Command::SendBatch { sends, .. } => match sends.first() {
                Some((c, _)) => *c,
                None => return Ok(()),
            },
            Command::SendMany { conns, .. } => match conns.first() {
                Some(c) => *c,
                None => return Ok(()),
            },
        };
        if !self.is_live(conn) {
            return Err(HubError::Closed);
        }
        self.post(conn.worker(), vec![cmd])
    }
}

impl Port {
    fn notify_force(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
        let one: u64 = 1;
        // SAFETY: as in `notify`.
        unsafe { libc::write(self.wake.as_raw_fd(), &one as *const u64 as *const _, 8) };
    }
}

/// Shared ownership of the hub.
pub type HubRef = Arc<Hub>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slab_index_has_a_liveness_slot_and_a_protocol() {
        // Slab slots retire at their last generation and new indices are appended, up to
        // MAX_INDEX, whatever max_connections is: a handle there must still be live.
        let hub = Hub::new(1, 1).unwrap();
        let port = hub.port(0);
        let c = ConnId::new(0, ConnId::MAX_INDEX, 5);
        assert_eq!(hub.speaks(c), None);
        port.set_live(c.index(), 5);
        assert_eq!(hub.speaks(c), Some(Speaks::Raw));
        port.set_speaks(c.index(), 5, Speaks::Lapps);
        assert_eq!(hub.speaks(c), Some(Speaks::Lapps));
        assert!(hub.is_live(c));
        assert!(!hub.is_live(ConnId::new(0, ConnId::MAX_INDEX, 6)));
        port.set_dead(c.index());
        assert_eq!(hub.speaks(c), None);
        assert_eq!(port.max_refused(), REFUSED_ROOM);
    }

    #[test]
    fn responses_are_owed_per_request_to_the_same_lapps_connection_only() {
        let hub = Hub::new(1, 16).unwrap();
        let port = hub.port(0);
        let c = ConnId::new(0, 3, 9);
        port.set_live(c.index(), 9);
        assert!(!hub.expect_response(c), "not a LAppS connection");
        port.set_speaks(c.index(), 9, Speaks::Lapps);
        assert!(!hub.take_response(c), "no request yet");
        assert!(hub.expect_response(c) && hub.expect_response(c));
        assert_eq!(
            hub.speaks(c),
            Some(Speaks::Lapps),
            "the count leaves the rest alone"
        );
        let older = ConnId::new(0, 3, 8);
        assert!(!hub.take_response(older), "another generation owes nothing");
        assert!(hub.take_response(c) && hub.take_response(c));
        assert!(!hub.take_response(c), "two requests, two responses");
        assert!(hub.expect_response(c));
        port.set_dead(c.index());
        port.set_speaks(c.index(), 10, Speaks::Lapps);
        let next = ConnId::new(0, 3, 10);
        assert!(
            !hub.take_response(next),
            "a new connection starts owing nothing"
        );
    }

    #[test]
    fn a_lapps_connection_is_settled_only_with_nothing_owed_and_nothing_unposted() {
        let hub = Hub::new(1, 16).unwrap();
        let port = hub.port(0);
        let c = ConnId::new(0, 5, 3);
        port.set_speaks(c.index(), 3, Speaks::Lapps);
        assert!(hub.lapps_settled(c), "nothing asked yet");
        assert!(hub.expect_response(c));
        assert!(!hub.lapps_settled(c), "a response is owed");
        assert!(hub.take_response(c));
        assert_eq!(hub.owed_responses(c), Some(0));
        assert!(!hub.lapps_settled(c), "taken, not posted");
        assert_eq!(
            hub.speaks(c),
            Some(Speaks::Lapps),
            "the count leaves the rest alone"
        );
        assert!(!hub.posted(ConnId::new(0, 5, 2)));
        assert!(!hub.lapps_settled(c), "another generation's post");
        assert!(!hub.posted(c), "no close was asked for");
        assert!(hub.lapps_settled(c));
        assert!(!hub.posted(c), "no close was asked for");
        assert!(hub.lapps_settled(c), "never below zero");
        hub.hold_answer(c);
        assert!(!hub.lapps_settled(c), "a host answer held");
        assert!(!hub.posted(c), "no close was asked for");
        assert!(hub.lapps_settled(c));

        // More unposted at once than the count holds: the connection never settles again.
        for _ in 0..600 {
            assert!(hub.expect_response(c) && hub.take_response(c));
        }
        for _ in 0..600 {
            assert!(!hub.posted(c), "no close was asked for");
        }
        assert_eq!(hub.owed_responses(c), Some(0));
        assert!(
            !hub.lapps_settled(c),
            "the count overflowed: careful from now on"
        );

        hub.set_ending(c);
        assert!(!hub.lapps_settled(c), "closing");
        port.set_dead(c.index());
        port.set_speaks(c.index(), 4, Speaks::Lapps);
        assert!(
            hub.lapps_settled(ConnId::new(0, 5, 4)),
            "a new connection starts afresh"
        );
        assert!(!hub.lapps_settled(c), "the old generation is gone");
    }

    #[test]
    fn the_post_that_leaves_nothing_unposted_queues_the_close_it_waited_for() {
        let hub = Hub::new(1, 16).unwrap();
        let port = hub.port(0);
        let c = ConnId::new(0, 6, 2);
        port.set_speaks(c.index(), 2, Speaks::Lapps);
        assert_eq!(hub.close_when_settled(c), Settle::Now, "settled");
        assert!(hub.expect_response(c) && hub.expect_response(c));
        assert!(hub.take_response(c) && hub.take_response(c));
        assert_eq!(
            hub.close_when_settled(c),
            Settle::Marked,
            "two answers not posted yet"
        );
        assert_eq!(hub.owed_responses(c), Some(0), "the mark leaves the count");
        assert!(!hub.lapps_settled(c));
        assert!(
            !hub.posted(ConnId::new(0, 6, 1)),
            "another generation's post"
        );
        assert!(!hub.posted(c), "one answer still unposted");
        assert!(hub.posted(c), "the last one: its poster closes");
        assert!(hub.lapps_settled(c));
        assert!(!hub.posted(c), "once only");

        // Marked while ending (the worker refuses sends by then): still counted down.
        assert!(hub.expect_response(c) && hub.take_response(c));
        assert_eq!(hub.close_when_settled(c), Settle::Marked);
        hub.set_ending(c);
        assert!(hub.posted(c));

        // The connection is gone: close now.
        assert_eq!(
            hub.close_when_settled(ConnId::new(0, 7, 1)),
            Settle::Now,
            "gone"
        );
        // The count is no longer exact: nothing owed may still mean answers taken and not
        // posted (600 here), which a Close queued now would overtake.
        let d = ConnId::new(0, 8, 1);
        port.set_speaks(d.index(), 1, Speaks::Lapps);
        for _ in 0..600 {
            assert!(hub.expect_response(d) && hub.take_response(d));
        }
        assert_eq!(hub.close_when_settled(d), Settle::Untold, "nothing owed");
        assert!(hub.expect_response(d));
        assert_eq!(hub.close_when_settled(d), Settle::Untold, "one owed");
        assert!(hub.take_response(d) && !hub.posted(d), "no post tells");

        // Marked while a response is still owed: taken, then posted, it closes.
        let e = ConnId::new(0, 9, 1);
        port.set_speaks(e.index(), 1, Speaks::Lapps);
        assert!(hub.expect_response(e));
        assert_eq!(hub.close_when_settled(e), Settle::Marked);
        assert!(hub.take_response(e));
        assert!(hub.posted(e));
    }

    #[test]
    fn a_closing_connection_answers_as_gone_and_its_generation_only() {
        let hub = Hub::new(1, 16).unwrap();
        let port = hub.port(0);
        let c = ConnId::new(0, 4, 7);
        port.set_speaks(c.index(), 7, Speaks::Lapps);
        assert!(hub.expect_response(c));
        hub.set_ending(ConnId::new(0, 4, 6));
        assert_eq!(
            hub.speaks(c),
            Some(Speaks::Lapps),
            "another generation's close"
        );
        hub.set_ending(c);
        assert_eq!(hub.speaks(c), None);
        assert!(!hub.is_live(c));
        assert_eq!(hub.owed_responses(c), None);
        assert!(!hub.take_response(c) && !hub.expect_response(c));
        port.set_dead(c.index());
        let next = ConnId::new(0, 4, 8);
        port.set_live(next.index(), 8);
        assert_eq!(
            hub.speaks(next),
            Some(Speaks::Raw),
            "the slot's next connection is open"
        );
    }
}
