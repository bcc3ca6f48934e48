//! Connecting: the host name looked up off the instance's thread, then each address in turn
//! (one that refuses, fails or does not answer in its share of the time gives way to the
//! next; one that another connection of the instance is connecting to is waited for), the TLS
//! session and the upgrade request made up front.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::{self, SockaddrStorage};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::super::gate::{Gate, Ticket};
use super::super::lookup::{system_lookup, Lookup, Resolver, RESOLVE_TIMEOUT};
use super::super::outbuf::OutBuf;
use super::super::upgrade::{self, Offer};
use super::super::url::Url;
use super::{Client, Event, KeyPool, Phase, ATTEMPT_TIMEOUT, CONNECT_TIMEOUT};
use crate::net::sys::AckProgress;
use crate::ws::codec::{Decoder, Role};

/// A connect begun: its socket, whether it is connected already, the address, and the
/// right to connect to it.
struct Started {
    sock: TcpStream,
    connected: bool,
    addr: SocketAddr,
    ticket: Ticket,
}

/// Starts a connect to the next address of `rest` (last = next) that does not fail at once,
/// noting each failure in `failed`. `Ok(None)`: another connection is connecting to that
/// address (`gate`), which stays in `rest` for later. `Err`: none is left; the message names
/// every failure.
fn connect_next(
    rest: &mut Vec<SocketAddr>,
    failed: &mut Vec<String>,
    gate: &Rc<Gate>,
) -> Result<Option<Started>, String> {
    while let Some(&addr) = rest.last() {
        let Some(ticket) = gate.enter(addr) else {
            return Ok(None);
        };
        rest.pop();
        match start_connect(addr) {
            Ok((sock, connected)) => {
                return Ok(Some(Started {
                    sock,
                    connected,
                    addr,
                    ticket,
                }))
            }
            Err(e) => failed.push(e),
        }
    }
    Err(failed.join("; "))
}

/// A socket that stands in until the connect makes the real one (never used: while the name
/// is looked up, the lookup's eventfd is the connection's descriptor; while it waits for its
/// turn, it has none).
fn stand_in() -> Result<(TcpStream, SocketAddr), String> {
    let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
    let sock = crate::net::sys::tcp_socket(nowhere)
        .map(TcpStream::from)
        .map_err(|e| format!("socket: {e}"))?;
    Ok((sock, nowhere))
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
    pub(super) fn connect_with(
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
        let (sock, nowhere) = stand_in()?;
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
        let (mut client, accept) = match connect_next(&mut rest, &mut failed, &keys.gate)? {
            Some(s) => {
                let (mut client, accept) =
                    Client::unconnected(url, tls, keys, max_message_size, offer, s.sock, s.addr)?;
                client.connecting(accept, rest, failed, true, s.connected, s.ticket);
                return Ok(client);
            }
            None => {
                let (sock, nowhere) = stand_in()?;
                Client::unconnected(url, tls, keys, max_message_size, offer, sock, nowhere)?
            }
        };
        client.queue(accept, rest, failed);
        Ok(client)
    }

    /// A connection to `url` over `sock` (to `addr`) with its TLS session and upgrade request
    /// made, in no phase yet (`Done`, no deadline): the caller sets them. The upgrade's
    /// expected `Sec-WebSocket-Accept` comes with it.
    pub(super) fn unconnected(
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
            violation: None,
            close_sent: false,
            close_notify_due: false,
            idle: None,
            last_input: started,
            acked: AckProgress::default(),
            ping_sent: false,
            close_began: None,
            assembly: None,
            offered: offer.protocols().to_vec(),
            gate: Rc::clone(&keys.gate),
        };
        Ok((client, accept))
    }

    /// The TCP connect to `self.addr` has begun (or is done: `connected`), with the `ticket`
    /// for it; `rest` and `failed` as in `Phase::Connecting`. With `fresh`, the connect's time
    /// starts now (not when the previous address was tried).
    fn connecting(
        &mut self,
        accept: String,
        rest: Vec<SocketAddr>,
        failed: Vec<String>,
        fresh: bool,
        connected: bool,
        ticket: Ticket,
    ) {
        if fresh {
            self.started = Instant::now();
            self.last_input = self.started;
        }
        self.deadline = Some(attempt_deadline(self.started, &rest, connected));
        self.phase = if connected {
            Phase::Upgrading { accept, ticket }
        } else {
            Phase::Connecting {
                accept,
                rest,
                failed,
                ticket,
            }
        };
    }

    /// Waits for its turn to connect to the last address of `rest`.
    fn queue(&mut self, accept: String, rest: Vec<SocketAddr>, failed: Vec<String>) {
        if let Some(&addr) = rest.last() {
            self.addr = addr;
        }
        self.deadline = None;
        self.phase = Phase::Queued {
            accept,
            rest,
            failed,
        };
    }

    /// Connects to the next address of `rest` (`fresh` as in [`Client::connecting`]), waits
    /// for its turn, or fails when every address failed.
    fn start_next(
        &mut self,
        accept: String,
        mut rest: Vec<SocketAddr>,
        mut failed: Vec<String>,
        fresh: bool,
        sink: &mut dyn FnMut(Event<'_>),
    ) {
        match connect_next(&mut rest, &mut failed, &self.gate) {
            Ok(Some(s)) => {
                self.sock = s.sock;
                self.addr = s.addr;
                self.connecting(accept, rest, failed, fresh, s.connected, s.ticket)
            }
            Ok(None) => self.queue(accept, rest, failed),
            Err(why) => {
                // Connected nowhere, as a connection still waiting: `fail` sends nothing of
                // ours and reports it (the caller may have left the phase `Done` meanwhile).
                self.queue(accept, rest, failed);
                self.fail(why, 1006, sink)
            }
        }
    }

    /// A connection waiting for its turn (`Queued`) connects once the address is free: the
    /// caller offers it the turn after each round of readiness reports, in which others may
    /// have opened or failed. Nothing for a connection in another phase.
    pub fn dequeue(&mut self, sink: &mut dyn FnMut(Event<'_>)) {
        if let Phase::Queued { rest, .. } = &self.phase {
            if rest.last().is_some_and(|a| !self.gate.is_free(*a)) {
                return;
            }
        }
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Queued {
                accept,
                rest,
                failed,
            } => self.start_next(accept, rest, failed, true, sink),
            other => self.phase = other,
        }
    }

    /// The lookup of a `Resolving` connection has answered: the connect begins, or the
    /// connection fails.
    pub(super) fn resolved(&mut self, sink: &mut dyn FnMut(Event<'_>)) {
        let Phase::Resolving { accept, lookup } = &mut self.phase else {
            return;
        };
        let Some(answer) = lookup.answer() else {
            return; // not yet (the wake-up was spurious)
        };
        let accept = std::mem::take(accept);
        match answer {
            Ok(addrs) => {
                let rest = addrs.into_iter().rev().collect();
                self.start_next(accept, rest, Vec::new(), true, sink)
            }
            // As for a connect that fails: nothing of ours goes out.
            Err(why) => self.fail(why, 1006, sink),
        }
    }

    /// The connect failed (`why`): goes on with the next address, or fails for good.
    pub(super) fn next_address(&mut self, why: String, sink: &mut dyn FnMut(Event<'_>)) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Connecting {
                accept,
                rest,
                mut failed,
                ticket,
            } => {
                // This address is free for others (or for this one again, should the lookup
                // have listed it twice).
                drop(ticket);
                failed.push(why);
                self.start_next(accept, rest, failed, false, sink)
            }
            other => self.phase = other,
        }
    }
}
