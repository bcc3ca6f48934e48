//! One client connection: state machine, socket I/O, framing.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, SockaddrStorage};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::lookup::{system_lookup, Lookup, Resolver, RESOLVE_TIMEOUT};
use super::outbuf::OutBuf;
use super::upgrade::{self, Offer};
use super::url::Url;
use crate::net::assembly::AssemblyBudget;
use crate::net::sys::AckProgress;
use crate::ws::codec::{self, Decoder, Role};
use crate::ws::Opcode;

/// Connect + TLS + upgrade must be done within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One address's share of it while other addresses are left to try.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// After our Close, the server has this long to answer before the socket is dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// While the server is still taking what we sent before our Close, each `CLOSE_TIMEOUT`
/// begins again, up to this long in all.
pub const MAX_CLOSE_WAIT: Duration = Duration::from_secs(60);
/// Unsent bytes above which `send` refuses more (back-pressure instead of unbounded memory).
pub const MAX_BACKLOG: usize = 16 * 1024 * 1024;
/// Bytes read from one socket per readiness report (fairness between connections).
const READ_BUDGET: usize = 256 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// What a connection reports. `Closed` comes exactly once, last; `Error` (if any) right before.
#[derive(PartialEq, Eq)]
pub enum Event<'a> {
    /// The upgrade succeeded; the subprotocol the server chose of those offered.
    Open(Option<&'a str>),
    Message(&'a [u8], Opcode),
    Error(String),
    /// The close code received (1005 when the Close had none), the code of the protocol
    /// error we closed with, or 1006 when the connection ended without a close handshake;
    /// then the reason the server's Close gave (UTF-8, empty when it had none or there was
    /// no Close).
    Closed(u16, &'a [u8]),
}

/// As derived, but a Close reason shows as text, and not at all when there is none.
impl fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Open(None) => f.write_str("Open"),
            Event::Open(Some(p)) => f.debug_tuple("Open").field(p).finish(),
            Event::Message(p, op) => f.debug_tuple("Message").field(p).field(op).finish(),
            Event::Error(s) => f.debug_tuple("Error").field(s).finish(),
            Event::Closed(c, []) => f.debug_tuple("Closed").field(c).finish(),
            Event::Closed(c, reason) => f
                .debug_tuple("Closed")
                .field(c)
                .field(&String::from_utf8_lossy(reason))
                .finish(),
        }
    }
}

/// What [`Client::unanswered_tls13`] suggests to the developer.
const CLIENT_CERT_HINT: &str = ", perhaps because it wants a client certificate";

/// Random bytes for masking keys and handshake nonces, fetched from the OS in blocks.
pub struct KeyPool {
    rng: SystemRandom,
    buf: [u8; 256],
    pos: usize,
}

impl Default for KeyPool {
    fn default() -> Self {
        KeyPool {
            rng: SystemRandom::new(),
            buf: [0; 256],
            pos: 256,
        }
    }
}

impl KeyPool {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        if self.pos + N > self.buf.len() {
            if self.rng.fill(&mut self.buf).is_err() {
                crate::warn!("cws: the system random source failed; masking keys repeat");
            }
            self.pos = 0;
        }
        let mut out = [0u8; N];
        if let Some(src) = self.buf.get(self.pos..self.pos + N) {
            out.copy_from_slice(src);
        }
        self.pos += N;
        out
    }

    /// A fresh masking key.
    pub fn key(&mut self) -> [u8; 4] {
        self.take()
    }
}

#[derive(Debug)]
enum Phase {
    /// The host name is being resolved on a thread of its own ([`Lookup`]); `out` already
    /// holds the upgrade request. The connect starts when the addresses come.
    Resolving {
        accept: String,
        lookup: Rc<Lookup>,
    },
    /// The TCP connect is in progress; `out` already holds the upgrade request. `rest`: the
    /// resolved addresses not tried yet, in reverse order (last = next); `failed`: why each
    /// address tried so far failed.
    Connecting {
        accept: String,
        rest: Vec<SocketAddr>,
        failed: Vec<String>,
    },
    Upgrading {
        accept: String,
    },
    Open,
    Closing,
    /// Closed (reported), but the last bytes (our Close reply, close_notify) are still being
    /// written, for `CLOSE_TIMEOUT` (again while the server keeps taking our bytes): dropping
    /// the socket now would lose them.
    Flushing,
    /// Closed and our last bytes written: what the server still sends is read and dropped
    /// until its end of stream, within the same `CLOSE_TIMEOUT`, and only then is the socket
    /// closed. RFC 6455 7.1.1: the server closes the TCP connection first, so that it, not
    /// the client, holds TIME_WAIT; and closing the socket with its bytes unread would reset
    /// the connection, which can discard our Close before the server has it. (Without a
    /// WebSocket, after a failed upgrade, our side is shut at once.)
    Lingering,
    Done,
}

/// One client connection. Not `Send`: it stays on the thread (the instance) that made it,
/// which keeps the host-name lookups its connections share.
pub struct Client {
    sock: TcpStream,
    tls: Option<Box<ClientConnection>>,
    phase: Phase,
    input: Vec<u8>,
    /// Plain bytes waiting for the socket (or for rustls).
    out: OutBuf,
    /// Frames sent before the upgrade completed; they follow it.
    early: Vec<u8>,
    decoder: Decoder,
    deadline: Option<Instant>,
    /// When connecting began: connect, TLS and upgrade share one [`CONNECT_TIMEOUT`].
    started: Instant,
    /// The address connected (or being connected) to.
    addr: SocketAddr,
    close_sent: bool,
    /// wss://: close_notify goes once `out` (our Close reply) is in TLS records: a peer
    /// ignores anything after it (RFC 8446 section 6.1).
    close_notify_due: bool,
    /// Open connections: how long the server may send nothing before it is pinged, and as
    /// long again before the connection fails (None: never).
    idle: Option<Duration>,
    /// When the server last sent us bytes (or the connection opened).
    last_input: Instant,
    /// Whether the server takes what we send, from one idle check to the next: a server that
    /// does is not idle, even while it sends nothing (and its Pong waits behind our backlog).
    acked: AckProgress,
    /// A Ping went for the current quiet spell.
    ping_sent: bool,
    /// When our side began to close (Closing, then perhaps Flushing: the first of them).
    close_began: Option<Instant>,
    /// What the messages being received of every connection of this client's instance may
    /// hold together (its state's memory limit): charged with `decoder`'s buffer.
    assembly: Option<Arc<AssemblyBudget>>,
    /// The subprotocols the upgrade request offered: the answer may choose one of them.
    offered: Vec<String>,
}

/// Starts a connect to the next address of `rest` (last = next) that does not fail at once,
/// noting each failure in `failed`. `Err`: none is left; the message names every failure.
fn connect_next(
    rest: &mut Vec<SocketAddr>,
    failed: &mut Vec<String>,
) -> Result<(TcpStream, bool, SocketAddr), String> {
    while let Some(addr) = rest.pop() {
        match start_connect(addr) {
            Ok((sock, connected)) => return Ok((sock, connected, addr)),
            Err(e) => failed.push(e),
        }
    }
    Err(failed.join("; "))
}

/// The deadline of an attempt begun now: [`ATTEMPT_TIMEOUT`] for its TCP connect while other
/// addresses are left, else (the last address, or connected already: TLS and the upgrade
/// follow) what is left of [`CONNECT_TIMEOUT`].
fn attempt_deadline(started: Instant, rest: &[SocketAddr], connected: bool) -> Instant {
    let overall = started + CONNECT_TIMEOUT;
    if rest.is_empty() || connected {
        overall
    } else {
        overall.min(Instant::now() + ATTEMPT_TIMEOUT)
    }
}

/// A non-blocking connect: `Ok((stream, connected_already))`.
fn start_connect(addr: SocketAddr) -> Result<(TcpStream, bool), String> {
    let fd = crate::net::sys::tcp_socket(addr).map_err(|e| format!("socket: {e}"))?;
    let done = match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) => true,
        Err(Errno::EINPROGRESS) | Err(Errno::EINTR) => false,
        Err(e) => return Err(format!("connect to {addr}: {e}")),
    };
    let sock = TcpStream::from(fd);
    let _ = sock.set_nodelay(true);
    Ok((sock, done))
}

impl Client {
    /// Starts connecting to `url` (`tls` must be given for `wss://`), its upgrade request
    /// carrying `offer`. Fails at once only for
    /// local reasons (socket creation, no address reachable, the TLS settings); a host name is
    /// resolved in the background, and a name that does not resolve fails the connection
    /// later (`Error`, then `Closed(1006)`), as a connect that fails does.
    pub fn connect(
        url: &Url,
        tls: Option<Arc<ClientConfig>>,
        keys: &mut KeyPool,
        max_message_size: usize,
        offer: &Offer,
    ) -> Result<Client, String> {
        Client::connect_with(url, tls, keys, max_message_size, offer, system_lookup)
    }

    /// [`Client::connect`] with `resolver` for host names.
    fn connect_with(
        url: &Url,
        tls: Option<Arc<ClientConfig>>,
        keys: &mut KeyPool,
        max_message_size: usize,
        offer: &Offer,
        resolver: Resolver,
    ) -> Result<Client, String> {
        if let Ok(ip) = url.host.parse::<std::net::IpAddr>() {
            let addrs = vec![SocketAddr::new(ip, url.port)];
            return Client::connect_addrs(addrs, url, tls, keys, max_message_size, offer);
        }
        // A stand-in socket until the addresses come (never used: the lookup's eventfd is the
        // connection's descriptor meanwhile); the connect makes the real one.
        let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
        let sock = crate::net::sys::tcp_socket(nowhere)
            .map(TcpStream::from)
            .map_err(|e| format!("socket: {e}"))?;
        let (mut client, accept) =
            Client::unconnected(url, tls, keys, max_message_size, offer, sock, nowhere)?;
        // Last: nothing after it may fail and leave the lookup running for nobody.
        let lookup = Lookup::start(&url.host, url.port, resolver)?;
        client.deadline = Some(client.started + RESOLVE_TIMEOUT);
        client.phase = Phase::Resolving { accept, lookup };
        Ok(client)
    }

    /// [`Client::connect`] to addresses already resolved: they are tried in order, each one
    /// that refuses or fails (or does not answer within `ATTEMPT_TIMEOUT` while others are
    /// left) gives way to the next, as a host with an IPv6 and an IPv4 address needs.
    pub fn connect_addrs(
        addrs: Vec<SocketAddr>,
        url: &Url,
        tls: Option<Arc<ClientConfig>>,
        keys: &mut KeyPool,
        max_message_size: usize,
        offer: &Offer,
    ) -> Result<Client, String> {
        if addrs.is_empty() {
            return Err(format!("cannot resolve {}", url.host));
        }
        let mut rest: Vec<SocketAddr> = addrs.into_iter().rev().collect();
        let mut failed = Vec::new();
        let (sock, connected, addr) = connect_next(&mut rest, &mut failed)?;
        let (mut client, accept) =
            Client::unconnected(url, tls, keys, max_message_size, offer, sock, addr)?;
        client.connecting(accept, rest, failed, connected);
        Ok(client)
    }

    /// A connection to `url` over `sock` (to `addr`) with its TLS session and upgrade request
    /// made, in no phase yet (`Done`, no deadline): the caller sets them. The upgrade's
    /// expected `Sec-WebSocket-Accept` comes with it.
    fn unconnected(
        url: &Url,
        tls: Option<Arc<ClientConfig>>,
        keys: &mut KeyPool,
        max_message_size: usize,
        offer: &Offer,
        sock: TcpStream,
        addr: SocketAddr,
    ) -> Result<(Client, String), String> {
        let tls = match (url.tls, tls) {
            (false, _) => None,
            (true, None) => return Err("wss:// needs a TLS configuration".into()),
            (true, Some(cfg)) => {
                let name = ServerName::try_from(url.host.clone())
                    .map_err(|_| format!("bad TLS server name {}", url.host))?;
                let conn = ClientConnection::new(cfg, name).map_err(|e| format!("tls: {e}"))?;
                Some(Box::new(conn))
            }
        };
        let (request, accept) = upgrade::request(url, &keys.take(), offer);
        let started = Instant::now();
        let client = Client {
            sock,
            tls,
            deadline: None,
            started,
            addr,
            phase: Phase::Done,
            input: Vec::new(),
            out: OutBuf::new(request),
            early: Vec::new(),
            decoder: Decoder::new(Role::Client, max_message_size),
            close_sent: false,
            close_notify_due: false,
            idle: None,
            last_input: started,
            acked: AckProgress::default(),
            ping_sent: false,
            close_began: None,
            assembly: None,
            offered: offer.protocols().to_vec(),
        };
        Ok((client, accept))
    }

    /// The TCP connect to `self.addr` has begun (or is done: `connected`); `rest` and
    /// `failed` as in `Phase::Connecting`. The connect's time starts now.
    fn connecting(
        &mut self,
        accept: String,
        rest: Vec<SocketAddr>,
        failed: Vec<String>,
        connected: bool,
    ) {
        self.started = Instant::now();
        self.last_input = self.started;
        self.deadline = Some(attempt_deadline(self.started, &rest, connected));
        self.phase = if connected {
            Phase::Upgrading { accept }
        } else {
            Phase::Connecting {
                accept,
                rest,
                failed,
            }
        };
    }

    /// The lookup of a `Resolving` connection has answered: the connect begins, or the
    /// connection fails.
    fn resolved(&mut self, sink: &mut dyn FnMut(Event<'_>)) {
        let Phase::Resolving { accept, lookup } = &mut self.phase else {
            return;
        };
        let Some(answer) = lookup.answer() else {
            return; // not yet (the wake-up was spurious)
        };
        let accept = std::mem::take(accept);
        let mut failed = Vec::new();
        let started = answer.and_then(|addrs| {
            let mut rest: Vec<SocketAddr> = addrs.into_iter().rev().collect();
            let (sock, connected, addr) = connect_next(&mut rest, &mut failed)?;
            Ok((sock, connected, addr, rest))
        });
        match started {
            Ok((sock, connected, addr, rest)) => {
                self.sock = sock;
                self.addr = addr;
                self.connecting(accept, rest, failed, connected);
            }
            // As for a connect that fails: nothing of ours goes out.
            Err(why) => self.fail(why, 1006, sink),
        }
    }

    /// Once open, a server that sends nothing for `idle` is pinged, and the connection fails
    /// (Close 1001) when it still sends nothing for as long again: a server that vanished
    /// without a FIN, or hangs, is noticed. None (the default) never pings.
    pub fn with_idle_timeout(mut self, idle: Option<Duration>) -> Client {
        self.idle = idle.filter(|d| !d.is_zero());
        self
    }

    /// The message being received is charged to `budget`, shared with other connections: one
    /// that needs more than they leave fails the connection (Close 1013). Without it, a
    /// message is bounded by the message size limit alone.
    pub fn with_assembly_budget(mut self, budget: Arc<AssemblyBudget>) -> Client {
        self.assembly = Some(budget);
        self
    }

    /// The connect failed (`why`): goes on with the next address, or fails for good.
    fn next_address(&mut self, why: String, sink: &mut dyn FnMut(Event<'_>)) {
        let Phase::Connecting { rest, failed, .. } = &mut self.phase else {
            return;
        };
        failed.push(why);
        match connect_next(rest, failed) {
            Ok((sock, connected, addr)) => {
                self.sock = sock;
                self.addr = addr;
                self.deadline = Some(attempt_deadline(self.started, rest, connected));
                if connected {
                    if let Phase::Connecting { accept, .. } = &mut self.phase {
                        let accept = std::mem::take(accept);
                        self.phase = Phase::Upgrading { accept };
                    }
                }
            }
            Err(why) => self.fail(why, 1006, sink),
        }
    }

    pub fn fd(&self) -> RawFd {
        match &self.phase {
            Phase::Resolving { lookup, .. } => lookup.fd(),
            _ => self.sock.as_raw_fd(),
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Closed as far as the app is concerned (`Closed` was reported), its last bytes maybe
    /// still being written.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Flushing | Phase::Lingering | Phase::Done)
    }

    /// Bytes not yet handed to the socket.
    pub fn backlog(&self) -> usize {
        self.out.len() + self.early.len()
    }

    /// The poll(2) events this connection waits for.
    pub fn interest(&self) -> i16 {
        match self.phase {
            Phase::Done => 0,
            Phase::Resolving { .. } => libc::POLLIN,
            Phase::Connecting { .. } | Phase::Flushing => libc::POLLOUT,
            Phase::Lingering => libc::POLLIN,
            _ => {
                let tls_out = self.tls.as_ref().is_some_and(|t| t.wants_write());
                if tls_out || !self.out.is_empty() {
                    libc::POLLIN | libc::POLLOUT
                } else {
                    libc::POLLIN
                }
            }
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Queues one message (masked, fresh key per frame). Before the upgrade completes it is
    /// kept and sent right after it.
    pub fn send(
        &mut self,
        opcode: Opcode,
        payload: &[u8],
        keys: &mut KeyPool,
    ) -> Result<(), &'static str> {
        let (queued, target) = match self.phase {
            Phase::Open => (self.out.len(), self.out.tail()),
            Phase::Resolving { .. } | Phase::Connecting { .. } | Phase::Upgrading { .. } => {
                (self.early.len(), &mut self.early)
            }
            Phase::Closing | Phase::Flushing | Phase::Lingering | Phase::Done => {
                return Err("closed")
            }
        };
        // One message of any size goes on an empty queue (it is in the state's memory
        // already); behind others, the queue stays within MAX_BACKLOG.
        if queued > 0 && queued + payload.len() > MAX_BACKLOG {
            return Err("backlog");
        }
        codec::encode_message_with_keys(target, Role::Client, opcode, payload, None, &mut || {
            keys.key()
        });
        Ok(())
    }

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
            Phase::Resolving { .. } | Phase::Connecting { .. } | Phase::Upgrading { .. } => {
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
    fn fail(&mut self, why: String, code: u16, sink: &mut dyn FnMut(Event<'_>)) {
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
            Phase::Resolving { .. } | Phase::Connecting { .. } => {
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
    fn end_after_flush(&mut self) {
        self.close_notify_due = self.tls_established();
        self.began_closing();
        self.phase = Phase::Flushing;
        self.flushed_then_linger();
    }

    /// In `Flushing`: writes what is left; once all is written, shuts our side and lingers.
    fn flushed_then_linger(&mut self) {
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
    fn linger(&mut self) {
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

    /// Upgrading over TLS 1.3, our handshake done and no byte of an answer: under TLS 1.3
    /// the server judges our (missing) client certificate only after that, so a server that
    /// wants one and sends no alert ends the connection here.
    fn unanswered_tls13(&self) -> bool {
        matches!(self.phase, Phase::Upgrading { .. })
            && self.input.is_empty()
            && self.tls.as_ref().is_some_and(|t| {
                !t.is_handshaking()
                    && t.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
            })
    }

    /// A TLS session past its handshake (one that can say close_notify).
    fn tls_established(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| !t.is_handshaking())
    }

    /// The connection ends now without waiting for the socket: over TLS, one attempt to
    /// write close_notify (and whatever is queued before it).
    fn last_words(&mut self) {
        self.close_notify_due = self.tls_established();
        let _ = self.flush();
    }

    /// Nothing left for the socket, neither plain bytes nor TLS records.
    fn drained(&self) -> bool {
        self.out.is_empty()
            && !self.close_notify_due
            && !self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

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
            Phase::Upgrading { .. } => self.fail("timeout while connecting".into(), 1006, sink),
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
            Phase::Done => self.deadline = None,
        }
    }

    /// Our side begins to close: the server has `CLOSE_TIMEOUT` (see `still_taking`).
    fn began_closing(&mut self) {
        let now = Instant::now();
        let began = *self.close_began.get_or_insert(now);
        self.deadline = Some((now + CLOSE_TIMEOUT).min(began + MAX_CLOSE_WAIT));
        self.acked.restart(self.sock.as_raw_fd());
    }

    /// At a close deadline: whether the server is still taking what we sent before our last
    /// frame (a large upload it reads slowly), so that it has not had that frame yet: some of
    /// our bytes are unsent or unacknowledged, and it acknowledged more since the last look.
    /// Another period must end within `MAX_CLOSE_WAIT` of when the close began.
    fn still_taking(&mut self, now: Instant) -> bool {
        let fd = self.sock.as_raw_fd();
        let ours_left = !self.out.is_empty()
            || self.tls.as_ref().is_some_and(|t| t.wants_write())
            || crate::net::sys::unacked_bytes(fd).is_some_and(|n| n > 0);
        let began = self.close_began.unwrap_or(now);
        now + CLOSE_TIMEOUT <= began + MAX_CLOSE_WAIT && ours_left && self.acked.took_more(fd)
    }

    /// The idle deadline of an open connection passed: ping a server quiet for one idle
    /// period, fail one still quiet a period after the ping.
    fn idle_check(&mut self, now: Instant, keys: &mut KeyPool, sink: &mut dyn FnMut(Event<'_>)) {
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

    /// Handles a readiness report from poll(2).
    pub fn ready(&mut self, revents: i16, keys: &mut KeyPool, sink: &mut dyn FnMut(Event<'_>)) {
        match self.phase {
            Phase::Flushing => return self.flushed_then_linger(),
            Phase::Lingering => return self.linger(),
            // The connect that may begin waits for its socket's own readiness.
            Phase::Resolving { .. } => return self.resolved(sink),
            _ => {}
        }
        if let Phase::Connecting { .. } = self.phase {
            if revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) == 0 {
                return;
            }
            match self.sock.take_error() {
                Ok(None) => {
                    if let Phase::Connecting { accept, .. } = &mut self.phase {
                        let accept = std::mem::take(accept);
                        self.phase = Phase::Upgrading { accept };
                    }
                    self.deadline = Some(self.started + CONNECT_TIMEOUT);
                }
                Ok(Some(e)) | Err(e) => {
                    let why = format!("connect to {}: {e}", self.addr);
                    return self.next_address(why, sink);
                }
            }
        }
        let (mut eof, mut broken) = (false, None);
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match self.read_some() {
                Ok(e) => eof = e,
                Err(e) => broken = Some(e),
            }
        }
        // What was read before a failed read is the server's too: its last messages and its
        // Close (a server that closes with our bytes unread resets the connection right
        // after them, RFC 6455 7.1.5: the close code is the one received).
        self.process(keys, sink);
        if let Some(why) = broken {
            // A server that ends with our request unread resets the connection.
            let why = match self.unanswered_tls13() {
                true => format!(
                    "{why}: the server ended the TLS connection without answering the \
                     upgrade{CLIENT_CERT_HINT}"
                ),
                false => why,
            };
            return self.fail(why, 1006, sink);
        }
        if eof && !self.is_done() {
            if let Phase::Lingering = self.phase {
                if self.tls.is_some() {
                    // Its close_notify came with its Close: the end of TCP may not have yet.
                    self.tls = None;
                    self.linger();
                } else {
                    // The server's end came with its Close: nothing left to wait for.
                    self.phase = Phase::Done;
                }
            } else if let Phase::Closing = self.phase {
                self.last_words();
                self.phase = Phase::Done;
                sink(Event::Closed(1006, b""));
            } else {
                let upgrading = matches!(self.phase, Phase::Upgrading { .. });
                let handshaking = self.tls.as_ref().is_some_and(|t| t.is_handshaking());
                let why = if upgrading && handshaking {
                    "the server closed the connection during the TLS handshake".to_string()
                } else if upgrading && self.tls.is_some() && self.input.is_empty() {
                    let hint = if self.unanswered_tls13() {
                        CLIENT_CERT_HINT
                    } else {
                        ""
                    };
                    format!(
                        "the server closed the TLS connection without answering the upgrade{hint}"
                    )
                } else if upgrading {
                    "the server closed the connection before its upgrade response ended".into()
                } else {
                    "the server closed the connection without a close frame".into()
                };
                self.fail(why, 1006, sink);
            }
            return;
        }
        if let Err(e) = self.flush() {
            self.fail(e, 1006, sink);
        }
    }

    /// Reads what is available (up to a budget); `Ok(true)` at end of stream.
    fn read_some(&mut self) -> Result<bool, String> {
        let before = self.input.len();
        let r = self.read_budget();
        if self.input.len() > before {
            self.last_input = Instant::now();
            self.ping_sent = false;
        }
        r
    }

    fn read_budget(&mut self) -> Result<bool, String> {
        let mut total = 0;
        while total < READ_BUDGET {
            match &mut self.tls {
                None => {
                    let len = self.input.len();
                    self.input.resize(len + READ_CHUNK, 0);
                    let r = self.sock.read(&mut self.input[len..]);
                    let n = *r.as_ref().unwrap_or(&0);
                    self.input.truncate(len + n);
                    match r {
                        Ok(0) => return Ok(true),
                        Ok(n) => total += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("read: {e}")),
                    }
                }
                Some(tls) => {
                    let got = match tls.read_tls(&mut self.sock) {
                        Ok(0) => return Ok(true),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(format!("read: {e}")),
                    };
                    total += got;
                    if let Err(e) = tls.process_new_packets() {
                        // Send the alert rustls prepared, then give up.
                        let _ = tls.write_tls(&mut self.sock);
                        return Err(super::tls::error_text(&e));
                    }
                    loop {
                        let len = self.input.len();
                        self.input.resize(len + READ_CHUNK, 0);
                        let r = tls.reader().read(&mut self.input[len..]);
                        let n = *r.as_ref().unwrap_or(&0);
                        self.input.truncate(len + n);
                        match r {
                            Ok(0) => return Ok(true),
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(true),
                            Err(e) => return Err(format!("tls read: {e}")),
                        }
                    }
                }
            }
        }
        Ok(false)
    }

    /// Upgrade answer, then frames.
    fn process(&mut self, keys: &mut KeyPool, sink: &mut dyn FnMut(Event<'_>)) {
        if let Phase::Upgrading { accept } = &self.phase {
            match upgrade::check_response(&self.input, accept, &self.offered) {
                Ok(None) => return,
                Ok(Some(answer)) => {
                    self.input.drain(..answer.len);
                    self.phase = Phase::Open;
                    self.last_input = Instant::now();
                    // Progress counts from here: the upgrade request and the TLS handshake
                    // were not the server taking data.
                    self.acked.restart(self.sock.as_raw_fd());
                    self.deadline = self.idle.map(|d| self.last_input + d);
                    self.out.tail().append(&mut self.early);
                    sink(Event::Open(answer.protocol.as_deref()));
                }
                Err(e) => return self.fail(e, 1006, sink),
            }
        }
        if !matches!(self.phase, Phase::Open | Phase::Closing) {
            return;
        }
        let deliver = matches!(self.phase, Phase::Open);
        let mut close: Option<Option<u16>> = None;
        let mut close_reason = Vec::new();
        let mut consumed = 0;
        let held_before = self.decoder.held();
        let allowance = self
            .assembly
            .as_ref()
            .map_or(usize::MAX, |b| b.allowance(held_before));
        let result = {
            let Client {
                decoder,
                input,
                out,
                close_sent,
                ..
            } = self;
            loop {
                let Some(rest) = input.get_mut(consumed..) else {
                    break Ok(());
                };
                if rest.is_empty() {
                    break Ok(());
                }
                let r = decoder.decode_within(rest, allowance, &mut |ev| match ev {
                    codec::Event::Text(p) if deliver => sink(Event::Message(p, Opcode::Text)),
                    codec::Event::Binary(p) if deliver => sink(Event::Message(p, Opcode::Binary)),
                    // A server that pings without reading would grow `out` without bound: beyond
                    // the backlog limit its pings go unanswered (RFC 6455 5.5.3 lets an
                    // endpoint answer only the latest). Our Close is the last frame we send
                    // (RFC 6455 5.5.1): no Pong after it.
                    codec::Event::Ping(p) if !*close_sent && out.len() < MAX_BACKLOG => {
                        codec::encode_control(out.tail(), Role::Client, Opcode::Pong, p, keys.key())
                    }
                    codec::Event::Close { code, reason } => {
                        close = Some(code);
                        close_reason = reason.to_vec();
                    }
                    _ => {}
                });
                match r {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        consumed += n;
                        if close.is_some() {
                            break Ok(());
                        }
                    }
                    Err(e) => break Err(e),
                }
            }
        };
        self.input.drain(..consumed.min(self.input.len()));
        if let Some(budget) = &self.assembly {
            budget.update(held_before, self.decoder.held());
        }
        match result {
            Err(e) if e == codec::OVER_ALLOWANCE => {
                let why = match &self.assembly {
                    Some(b) => format!(
                        "no room for the message being received: messages being received \
                         on the instance's connections may hold {} bytes together (its \
                         memory_limit), and the others hold {}",
                        b.limit(),
                        b.held()
                    ),
                    None => e.reason.to_string(),
                };
                self.fail_protocol(e, why, keys, sink);
            }
            Err(e) => self.fail_protocol(e, e.described(), keys, sink),
            Ok(()) => {
                if let Some(code) = close {
                    if !self.close_sent {
                        codec::encode_close(self.out.tail(), Role::Client, code, b"", keys.key());
                        self.close_sent = true;
                    }
                    self.end_after_flush();
                    sink(Event::Closed(code.unwrap_or(1005), &close_reason));
                }
            }
        }
    }

    /// The server's bytes break `e` (a protocol error, or no room for its message): our
    /// Close with its code, then the failure as `why`.
    fn fail_protocol(
        &mut self,
        e: codec::ProtocolError,
        why: String,
        keys: &mut KeyPool,
        sink: &mut dyn FnMut(Event<'_>),
    ) {
        if !self.close_sent {
            codec::encode_close(self.out.tail(), Role::Client, Some(e.code), b"", keys.key());
            self.close_sent = true;
        }
        self.fail(why, e.code, sink);
    }

    /// Writes what the socket takes now. Never waits.
    pub fn flush(&mut self) -> Result<(), String> {
        if let Phase::Resolving { .. } | Phase::Connecting { .. } = self.phase {
            return Ok(());
        }
        match &mut self.tls {
            None => {
                while !self.out.is_empty() {
                    match self.sock.write(self.out.pending()) {
                        Ok(0) => return Err("write: connection closed".into()),
                        Ok(n) => self.out.consume(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("write: {e}")),
                    }
                }
            }
            Some(tls) => loop {
                let mut took = 0;
                if !self.out.is_empty() {
                    took = tls
                        .writer()
                        .write(self.out.pending())
                        .map_err(|e| format!("tls write: {e}"))?;
                    self.out.consume(took);
                }
                if self.out.is_empty() && self.close_notify_due {
                    self.close_notify_due = false;
                    tls.send_close_notify();
                }
                let mut blocked = false;
                while tls.wants_write() {
                    match tls.write_tls(&mut self.sock) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            blocked = true;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("write: {e}")),
                    }
                }
                if blocked || self.out.is_empty() || took == 0 {
                    break;
                }
            },
        }
        Ok(())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(budget) = &self.assembly {
            budget.update(self.decoder.held(), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lookup::MAX_LOOKUPS;
    use super::*;

    /// A resolver that never answers (a nameserver gone silent).
    fn silent(_: &str, _: u16) -> io::Result<Vec<SocketAddr>> {
        loop {
            std::thread::park();
        }
    }

    fn refused(_: &str, _: u16) -> io::Result<Vec<SocketAddr>> {
        Err(io::Error::other("no such host"))
    }

    /// Every name is 127.0.0.1 (at the URL's port).
    fn local(_: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    }

    fn client(url: &str, resolver: Resolver) -> Client {
        let url = super::super::url::parse(url).unwrap();
        Client::connect_with(
            &url,
            None,
            &mut KeyPool::default(),
            1 << 20,
            &Offer::default(),
            resolver,
        )
        .unwrap()
    }

    /// Waits (bounded) until `c`'s descriptor reports one of `events`.
    fn wait_for(c: &Client, events: i16) -> i16 {
        let mut pfd = libc::pollfd {
            fd: c.fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd, its count passed with it.
        let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
        assert_eq!(n, 1, "no readiness within 10 s");
        pfd.revents
    }

    fn events_of(f: impl FnOnce(&mut dyn FnMut(Event<'_>))) -> Vec<String> {
        let mut got = Vec::new();
        f(&mut |e| got.push(format!("{e:?}")));
        got
    }

    /// A silent resolver holds up nothing: the connection is made at once, waits for the
    /// addresses without a socket, and fails at the resolver's deadline as a connect does.
    #[test]
    fn a_silent_resolver_fails_the_connection_at_its_deadline_without_holding_anything_up() {
        let began = Instant::now();
        let mut c = client("ws://slow.example/x", silent);
        assert!(began.elapsed() < Duration::from_secs(5), "waited for it");
        assert_eq!(c.interest(), libc::POLLIN);
        assert!(c
            .send(Opcode::Text, b"early", &mut KeyPool::default())
            .is_ok());
        let now = Instant::now();
        let got = events_of(|sink| c.tick(now, &mut KeyPool::default(), sink));
        assert!(got.is_empty(), "{got:?}");
        let later = c.deadline().unwrap();
        assert!(later >= began + RESOLVE_TIMEOUT);
        let got = events_of(|sink| c.tick(later, &mut KeyPool::default(), sink));
        assert_eq!(
            got,
            [
                "Error(\"cannot resolve slow.example: no answer within 10000 ms\")",
                "Closed(1006)"
            ]
        );
        assert!(c.is_done());
    }

    #[test]
    fn a_name_that_does_not_resolve_fails_the_connection_once_the_resolver_says_so() {
        let mut c = client("ws://nowhere.example/", refused);
        let revents = wait_for(&c, libc::POLLIN);
        let got = events_of(|sink| c.ready(revents, &mut KeyPool::default(), sink));
        assert_eq!(
            got,
            [
                "Error(\"cannot resolve nowhere.example: no such host\")",
                "Closed(1006)"
            ]
        );
        assert!(c.is_done());
    }

    /// Once the addresses come, the connect begins and the upgrade request goes out, the
    /// message sent meanwhile kept for after the upgrade.
    #[test]
    fn the_connect_begins_when_the_addresses_come() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut keys = KeyPool::default();
        let mut c = client(&format!("ws://somewhere.example:{port}/path"), local);
        c.send(Opcode::Text, b"early", &mut keys).unwrap();
        let lookup_fd = c.fd();
        let revents = wait_for(&c, libc::POLLIN);
        let got = events_of(|sink| c.ready(revents, &mut keys, sink));
        assert!(got.is_empty(), "{got:?}");
        assert_ne!(c.fd(), lookup_fd, "the socket's descriptor now");
        let (mut server, _) = listener.accept().unwrap();
        while matches!(c.phase, Phase::Connecting { .. }) {
            let revents = wait_for(&c, libc::POLLOUT);
            let got = events_of(|sink| c.ready(revents, &mut keys, sink));
            assert!(got.is_empty(), "{got:?}");
        }
        c.flush().unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = [0u8; 64];
        let n = server.read(&mut head).unwrap();
        let head = String::from_utf8_lossy(&head[..n]);
        assert!(head.starts_with("GET /path HTTP/1.1\r\n"), "{head}");
        assert_eq!(
            c.backlog(),
            2 + 4 + b"early".len(), // its frame: a 2-byte head, the masking key, the text
            "kept for after the upgrade"
        );
    }

    /// Released by the lookup-cap test (a drop guard, also when it fails): its resolvers hold
    /// their places until then.
    static RELEASE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    fn held(_: &str, _: u16) -> io::Result<Vec<SocketAddr>> {
        while !RELEASE.load(std::sync::atomic::Ordering::SeqCst) {
            // The resolver's own polling interval, in a test resolver thread.
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(io::Error::other("released"))
    }

    /// At most MAX_LOOKUPS run at once on a thread (an instance); one more is refused at once
    /// with a message, and a place given back is taken again. (The count is the test thread's
    /// own: other tests do not share it.)
    #[test]
    fn lookups_past_the_cap_are_refused_at_once() {
        struct Release;
        impl Drop for Release {
            fn drop(&mut self) {
                RELEASE.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let release = Release;
        let mut keys = KeyPool::default();
        let url = |i: usize| super::super::url::parse(&format!("ws://many{i}.example/")).unwrap();
        let running: Vec<Client> = (0..MAX_LOOKUPS)
            .map(|i| {
                Client::connect_with(&url(i), None, &mut keys, 1 << 20, &Offer::default(), held)
                    .unwrap()
            })
            .collect();
        let over = Client::connect_with(
            &url(MAX_LOOKUPS),
            None,
            &mut keys,
            1 << 20,
            &Offer::default(),
            held,
        );
        assert_eq!(
            over.err().as_deref(),
            Some(
                format!(
                    "cannot resolve many{MAX_LOOKUPS}.example: {MAX_LOOKUPS} lookups are \
                     running already"
                )
                .as_str()
            )
        );
        drop(release);
        // Each lookup gives its place back before it wakes its connection.
        for c in &running {
            wait_for(c, libc::POLLIN);
        }
        let another = url(MAX_LOOKUPS + 1);
        assert!(Client::connect_with(
            &another,
            None,
            &mut keys,
            1 << 20,
            &Offer::default(),
            refused
        )
        .is_ok());
    }

    static ASKED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// Set by the sharing test once its connections are made: its lookup answers then.
    static ANSWER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    fn counted_local(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        ASKED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        while !ANSWER.load(std::sync::atomic::Ordering::SeqCst) {
            // The resolver's own polling interval, in a test resolver thread.
            std::thread::sleep(Duration::from_millis(5));
        }
        local(host, port)
    }

    /// Connections of one instance to one name, started while its lookup runs, wait for that
    /// one lookup (a hundred connections to a name are not a hundred threads).
    #[test]
    fn connections_to_one_name_share_its_lookup() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "ws://shared.example:{}/",
            listener.local_addr().unwrap().port()
        );
        let mut keys = KeyPool::default();
        let mut a = client(&url, counted_local);
        let mut b = client(&url, counted_local);
        assert_eq!(a.fd(), b.fd(), "one lookup's descriptor");
        ANSWER.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in [&mut a, &mut b] {
            let revents = wait_for(c, libc::POLLIN);
            let got = events_of(|sink| c.ready(revents, &mut keys, sink));
            assert!(got.is_empty(), "{got:?}");
            assert!(!matches!(c.phase, Phase::Resolving { .. }));
        }
        assert_eq!(ASKED.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_ne!(a.fd(), b.fd(), "a socket each");
        // Once answered (its connection not yet told), a lookup is not shared with a
        // connection started then: that one has a lookup of its own.
        let c = client(&url, counted_local);
        wait_for(&c, libc::POLLIN);
        let d = client(&url, counted_local);
        assert_ne!(c.fd(), d.fd());
        wait_for(&d, libc::POLLIN);
        assert_eq!(ASKED.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    /// An address asks no resolver.
    #[test]
    fn an_address_is_connected_to_at_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let c = client(&format!("ws://127.0.0.1:{port}/"), silent);
        assert!(matches!(
            c.phase,
            Phase::Connecting { .. } | Phase::Upgrading { .. }
        ));
    }
}
