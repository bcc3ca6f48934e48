//! One client connection: state machine, socket I/O, framing. Connecting (name lookup,
//! one address after another) is in `connect`, the close handshake and the socket's end in
//! `closing`, the deadlines in `deadlines`.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use rustls::ClientConnection;

use super::gate::{Gate, Ticket};
use super::lookup::Lookup;
use super::outbuf::OutBuf;
use super::upgrade;
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

mod closing;
mod connect;
mod deadlines;
#[cfg(test)]
mod tests;

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

/// What the connections of one instance share: random bytes for masking keys and handshake
/// nonces, fetched from the OS in blocks, and the gate (`cws::gate`) that has them connect
/// to one address one at a time.
pub struct KeyPool {
    rng: SystemRandom,
    buf: [u8; 256],
    pos: usize,
    gate: Rc<Gate>,
}

impl Default for KeyPool {
    fn default() -> Self {
        KeyPool {
            rng: SystemRandom::new(),
            buf: [0; 256],
            pos: 256,
            gate: Rc::default(),
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
        ticket: Ticket,
    },
    /// Waiting for its turn to connect to the last address of `rest` (another connection of
    /// the instance is connecting to it: [`Gate`]); `rest` and `failed` as in `Connecting`.
    /// No socket yet, nothing polled, no deadline: the connect's time starts with its turn.
    Queued {
        accept: String,
        rest: Vec<SocketAddr>,
        failed: Vec<String>,
    },
    Upgrading {
        accept: String,
        /// Held, never read: the address is free for the next connection once this phase
        /// ends (open or failed).
        #[expect(dead_code, reason = "held for its Drop")]
        ticket: Ticket,
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
    /// The instance's: one connection at a time connects to an address.
    gate: Rc<Gate>,
    /// A protocol violation read behind messages delivered in the same read: the connection
    /// fails once their callbacks have run ([`Client::settle`]), so that what they send (an
    /// echo, an answer) goes before our Close, as the server side does (RFC 6455 7.1.7 asks
    /// that nothing *after* the violation be processed, not that what came before be lost).
    violation: Option<(codec::ProtocolError, String)>,
}

impl Client {
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

    pub fn fd(&self) -> RawFd {
        match &self.phase {
            Phase::Resolving { lookup, .. } => lookup.fd(),
            // No socket of its own yet: poll(2) skips a negative descriptor.
            Phase::Queued { .. } => -1,
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
            Phase::Done | Phase::Queued { .. } => 0,
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
            Phase::Resolving { .. }
            | Phase::Queued { .. }
            | Phase::Connecting { .. }
            | Phase::Upgrading { .. } => (self.early.len(), &mut self.early),
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

    /// Handles a readiness report from poll(2). A protocol violation read behind messages
    /// delivered to `sink` here fails the connection only at [`Client::settle`], which the
    /// caller makes once it has acted on those messages (a call it must make after each
    /// `ready`).
    pub fn ready(&mut self, revents: i16, keys: &mut KeyPool, sink: &mut dyn FnMut(Event<'_>)) {
        match self.phase {
            Phase::Flushing => return self.flushed_then_linger(),
            Phase::Lingering => return self.linger(),
            // The connect that may begin waits for its socket's own readiness.
            Phase::Resolving { .. } => return self.resolved(sink),
            Phase::Queued { .. } => return,
            _ => {}
        }
        if let Phase::Connecting { .. } = self.phase {
            if revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) == 0 {
                return;
            }
            match self.sock.take_error() {
                Ok(None) => {
                    if let Phase::Connecting { accept, ticket, .. } =
                        std::mem::replace(&mut self.phase, Phase::Done)
                    {
                        self.phase = Phase::Upgrading { accept, ticket };
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
        if self.violation.is_some() {
            // It decides how the connection ends (`settle`); what came after it is not read.
            return;
        }
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
        if let Phase::Upgrading { accept, .. } = &self.phase {
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
        if self.violation.is_some() {
            return;
        }
        let deliver = matches!(self.phase, Phase::Open);
        let mut delivered = false;
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
                    codec::Event::Text(p) if deliver => {
                        delivered = true;
                        sink(Event::Message(p, Opcode::Text))
                    }
                    codec::Event::Binary(p) if deliver => {
                        delivered = true;
                        sink(Event::Message(p, Opcode::Binary))
                    }
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
                        "no room for the message being received ({} bytes at least): \
                         messages being received on the instance's connections may hold {} \
                         bytes together (its memory_limit), and the others hold {}",
                        self.decoder.refused_size(),
                        b.limit(),
                        b.held()
                    ),
                    None => e.reason.to_string(),
                };
                self.fail_protocol_after(delivered, e, why, keys, sink);
            }
            Err(e) if e == codec::TOO_LARGE => {
                // The option to raise, with its value.
                let why = format!("{} ({} bytes)", e.reason, self.decoder.max_message_size());
                self.fail_protocol_after(delivered, e, why, keys, sink)
            }
            Err(e) => self.fail_protocol_after(delivered, e, e.described(), keys, sink),
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

    /// As [`Client::fail_protocol`], but after the callbacks of the messages just `delivered`
    /// (when there were some): the failure waits in `violation` for [`Client::settle`].
    fn fail_protocol_after(
        &mut self,
        delivered: bool,
        e: codec::ProtocolError,
        why: String,
        keys: &mut KeyPool,
        sink: &mut dyn FnMut(Event<'_>),
    ) {
        if delivered {
            self.violation = Some((e, why));
        } else {
            self.fail_protocol(e, why, keys, sink);
        }
    }

    /// Fails the connection for a violation read behind messages, once the callbacks of those
    /// messages have run (their sends are queued before our Close). Nothing when there is
    /// none, or when the app closed the connection meanwhile (its Close went first; the
    /// violation is read again, and reported, as the close handshake goes on).
    pub fn settle(&mut self, keys: &mut KeyPool, sink: &mut dyn FnMut(Event<'_>)) {
        if let Some((e, why)) = self.violation.take() {
            if matches!(self.phase, Phase::Open) {
                self.fail_protocol(e, why, keys, sink);
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
        if let Phase::Resolving { .. } | Phase::Queued { .. } | Phase::Connecting { .. } =
            self.phase
        {
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
