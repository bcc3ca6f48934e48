//! Test helpers: start the real server in-process on an ephemeral port, connect real clients,
//! and build raw frames for the protocol-violation tests.
#![allow(dead_code)]

pub mod rng;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapps::app::App;
use lapps::config::Config;
use lapps::net::server::{Server, ServerOptions};
use lapps::net::worker::{Refusal, Router};
use lapps::service::echo::Echo;
use lapps::service::Service;
use lapps::ws::handshake::Request;

pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A test (or part of one) that this machine cannot run: skipped with a line on a developer's
/// machine, a failure under CI (`CI=true`, set by .ci/run), where a skip would pass unseen
/// (cargo shows a passing test's stderr to no one).
pub fn cannot_run(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "this test cannot run here under CI: {why}"
    );
    eprintln!("skipped: {why}");
}

/// Routes `/echo` to the built-in echo service; everything else is 404.
pub struct EchoRouter {
    echo: Arc<dyn Service>,
}

impl EchoRouter {
    pub fn new(max_message_size: usize) -> EchoRouter {
        EchoRouter {
            echo: Arc::new(Echo::new("echo", max_message_size)),
        }
    }
}

impl Router for EchoRouter {
    fn route(&self, req: &Request, _peer: IpAddr) -> Result<Arc<dyn Service>, Refusal> {
        if req.path == "/echo" {
            Ok(self.echo.clone())
        } else {
            Err(404.into())
        }
    }
}

pub struct TestServer {
    server: Option<Server>,
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn hub(&self) -> Arc<lapps::net::hub::Hub> {
        self.server.as_ref().expect("running").hub().clone()
    }

    pub fn stop(mut self) -> Duration {
        let t = Instant::now();
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        t.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

/// Starts the runtime with the built-in echo at `/echo` (16 MiB message limit by default).
pub fn start_echo(configure: impl FnOnce(&mut ServerOptions)) -> TestServer {
    start_with(configure, Arc::new(EchoRouter::new(16 << 20)))
}

pub fn start_with(
    configure: impl FnOnce(&mut ServerOptions),
    router: Arc<dyn Router>,
) -> TestServer {
    let mut opts = ServerOptions {
        workers: 2,
        ..ServerOptions::default()
    };
    configure(&mut opts);
    let hub = Server::new_hub(&opts).expect("hub");
    let server = Server::start(opts, hub, router).expect("server starts");
    let addr = server.local_addrs()[0];
    TestServer {
        server: Some(server),
        addr,
    }
}

/// A whole `lapps::app::App` (services from lapps.json, runtime from ws.json) running in this
/// process; shut down on drop.
pub struct TestApp {
    app: Option<App>,
    pub addr: SocketAddr,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn hub(&self) -> Arc<lapps::net::hub::Hub> {
        let app = self.app.as_ref().expect("running");
        app.hub().expect("running")
    }

    /// Waits until every connection has ended and nothing holds anything of it: the workers
    /// ([`wait_all_ended`]), then the services (every close handled, no bcast subscription
    /// left: the closes reach the instances after the connections end).
    pub fn wait_every_connection_forgotten(&self) {
        wait_all_ended(&self.hub());
        let app = self.app.as_ref().expect("running");
        let deadline = Instant::now() + 2 * IO_TIMEOUT;
        loop {
            let s = app.connection_state();
            if (s.open, s.undisconnected, s.subscribed, s.indexed) == (0, 0, 0, 0) {
                return;
            }
            assert!(Instant::now() < deadline, "services still hold {s:?}");
            // Polling interval of a condition wait, not a synchronisation sleep.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(a) = self.app.take() {
            a.shutdown();
        }
    }
}

/// The repository root: relative paths in the test configs resolve against it.
pub fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts the App from ws.json and lapps.json text (relative directories are taken from the
/// repository root), or returns the start-up error.
pub fn try_start_app(ws_json: &str, lapps_json: &str) -> Result<TestApp, String> {
    let root = repo_root();
    let cfg = Config::from_strs(
        &root,
        ("ws.json", ws_json),
        ("lapps.json", lapps_json),
        &root,
    )
    .map_err(|e| format!("invalid test configuration: {e}"))?;
    let app = App::start(&cfg)?;
    let addr = app.local_addrs()[0];
    Ok(TestApp {
        app: Some(app),
        addr,
    })
}

/// [`try_start_app`] that must succeed.
pub fn start_app(ws_json: &str, lapps_json: &str) -> TestApp {
    try_start_app(ws_json, lapps_json).unwrap_or_else(|e| panic!("the app must start: {e}"))
}

/// ws.json for the tests: loopback, a free port, `workers` IOWorkers, everything else default.
pub fn ws_json(workers: usize) -> String {
    format!(r#"{{ "ip": "127.0.0.1", "port": 0, "workers": {{ "workers": {workers} }} }}"#)
}

/// [`ws_json`] with its own `close_timeout_ms`.
pub fn ws_json_close_timeout(workers: usize, close_timeout_ms: u64) -> String {
    format!(
        r#"{{ "ip": "127.0.0.1", "port": 0, "workers": {{ "workers": {workers} }},
             "close_timeout_ms": {close_timeout_ms} }}"#
    )
}

/// lapps.json with `applications` (relative to the repository root), the shared `lua/lib`,
/// and `services` (the text of the services object).
pub fn lapps_json(applications: &str, services: &str) -> String {
    format!(
        r#"{{ "directories": {{ "applications": "{applications}", "lib": "./lua/lib",
             "workdir": "./target/lapps-test", "tmp": "./target/lapps-test/tmp" }},
             "services": {services} }}"#
    )
}

pub type Client = tungstenite::WebSocket<TcpStream>;

/// A tungstenite client connected to `path`, with I/O timeouts as guards.
pub fn connect(addr: SocketAddr, path: &str) -> Client {
    let stream = TcpStream::connect(addr).expect("tcp connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (ws, _) =
        tungstenite::client::client_with_config(format!("ws://{addr}{path}"), stream, Some(config))
            .expect("websocket handshake");
    ws
}

/// The next data message, which must be text (pings are answered by tungstenite and skipped).
pub fn text(ws: &mut Client) -> String {
    loop {
        match ws.read().expect("a message before the guard") {
            tungstenite::Message::Text(t) => return t.to_string(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

pub fn send(ws: &mut Client, s: &str) {
    ws.send(tungstenite::Message::text(s)).expect("send");
}

/// Sends `s` and returns the next text message.
pub fn ask(ws: &mut Client, s: &str) -> String {
    send(ws, s);
    text(ws)
}

/// Reads until the server's Close frame and returns its code; data messages before it fail.
pub fn ws_close_code(ws: &mut Client) -> u16 {
    match ws.read() {
        Ok(tungstenite::Message::Close(Some(f))) => u16::from(f.code),
        other => panic!("expected a close frame with a code, got {other:?}"),
    }
}

/// Reads until the server's Close (data messages before it are skipped) and returns its code.
pub fn close_code(ws: &mut Client) -> Option<u16> {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(f)) => return f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
}

/// Answers the server's Close, waits for its TCP FIN, then closes the socket as a real client
/// does (the server waits, up to its close timeout, for our FIN before the connection ends).
pub fn finish_close(mut ws: Client) {
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => {
                return
            }
            Err(e) => panic!("unexpected error while closing: {e}"),
        }
    }
}

/// A valid upgrade request for `path`.
pub fn upgrade_request(addr: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A raw TCP connection that has completed the upgrade handshake by hand.
pub fn raw_upgraded(addr: SocketAddr, path: &str) -> TcpStream {
    try_raw_upgraded(addr, path).unwrap_or_else(|e| panic!("{e}"))
}

/// [`raw_upgraded`] that says what went wrong instead of panicking (for tests running many
/// connections on threads of their own, whose failures name their seed).
pub fn try_raw_upgraded(addr: SocketAddr, path: &str) -> Result<TcpStream, String> {
    let io = |e: std::io::Error| format!("upgrade of {path}: {e}");
    let mut s = TcpStream::connect(addr).map_err(io)?;
    s.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    s.set_nodelay(true).map_err(io)?;
    s.write_all(upgrade_request(addr, path).as_bytes())
        .map_err(io)?;
    let head = read_http_head(&mut s);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!("expected 101, got {head}"));
    }
    Ok(s)
}

/// Sends a raw HTTP request and returns the whole response (until the server closes).
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("tcp connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        // A reset after the answer (what the server left unread) ends it too.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "the server did not close after {:?}: {e}",
            String::from_utf8_lossy(&out)
        ),
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads up to the end of an HTTP head.
pub fn read_http_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A client frame built by hand (masked unless `masked` is false), for malformed input.
pub fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![(if fin { 0x80 } else { 0 }) | (rsv << 4) | opcode];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xFFFF => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    if masked {
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// A server frame as read from the socket.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Reads one server frame (unmasked), or None at EOF.
pub fn read_frame(s: &mut TcpStream) -> Option<ServerFrame> {
    let (f, masked) = read_any_frame(s)?;
    assert!(!masked, "server frames must not be masked");
    Some(f)
}

/// Reads one frame of either role (unmasking a client's), with whether it was masked; None at
/// EOF.
pub fn read_any_frame(s: &mut TcpStream) -> Option<(ServerFrame, bool)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).ok()?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let masked = h[1] & 0x80 != 0;
    let mut mask = [0u8; 4];
    if masked {
        s.read_exact(&mut mask).ok()?;
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    let frame = ServerFrame {
        fin: h[0] & 0x80 != 0,
        opcode: h[0] & 0x0f,
        payload,
    };
    Some((frame, masked))
}

/// Reads frames until a Close frame; returns its code (None for an empty Close body).
pub fn expect_close(s: &mut TcpStream) -> Option<u16> {
    expect_close_reason(s).0
}

/// [`expect_close`] with the Close's reason ("" when it has none).
#[allow(dead_code)]
pub fn expect_close_reason(s: &mut TcpStream) -> (Option<u16>, String) {
    loop {
        let f = read_frame(s).expect("a close frame before EOF");
        if f.opcode == 0x8 {
            let code =
                (f.payload.len() >= 2).then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
            let reason = f.payload.get(2..).unwrap_or_default();
            return (
                code,
                String::from_utf8(reason.to_vec()).expect("a UTF-8 reason"),
            );
        }
    }
}

/// True when the server closes the TCP connection (EOF or reset) before the timeout guard.
pub fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1024];
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

/// Closes `s` with a reset (SO_LINGER 0: an RST behind whatever was written) rather than a FIN,
/// as a peer that aborts or vanishes does.
pub fn close_with_reset(s: TcpStream) {
    let off = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on the socket `s` owns, with a linger struct of the size given.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&off as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    drop(s);
}

/// Runs `run` for each seed, `at_once` of them at a time on threads of their own; the failures,
/// each named by its seed.
pub fn run_seeds(
    seeds: &[u64],
    at_once: usize,
    run: impl Fn(u64) -> Result<(), String> + Sync,
) -> Vec<String> {
    let run = &run;
    seeds
        .chunks(at_once)
        .flat_map(|batch| {
            std::thread::scope(|scope| {
                let runs: Vec<_> = batch
                    .iter()
                    .map(|&seed| scope.spawn(move || (seed, run(seed))))
                    .collect();
                runs.into_iter()
                    .map(|r| r.join().expect("a seed's thread"))
                    .filter_map(|(seed, r)| r.err().map(|e| format!("seed {seed}: {e}")))
                    .collect::<Vec<_>>()
            })
        })
        .collect()
}

/// Waits until no connection is left on any worker and their outbound accounts are back to
/// zero: what a test's connections held is all given back once they ended.
pub fn wait_all_ended(hub: &lapps::net::hub::Hub) {
    use std::sync::atomic::Ordering::Relaxed;
    let left = || {
        (0..hub.workers())
            .map(|w| {
                let p = hub.port(w);
                (p.connections.load(Relaxed), p.queued_bytes.load(Relaxed))
            })
            .collect::<Vec<_>>()
    };
    // Twice the guard of one exchange: a connection may wait out a 10 s close timeout.
    let deadline = Instant::now() + 2 * IO_TIMEOUT;
    while left().iter().any(|&l| l != (0, 0)) {
        assert!(
            Instant::now() < deadline,
            "connections and queued bytes per worker still {:?}",
            left()
        );
        // Polling interval of a condition wait, not a synchronisation sleep.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `cond` until it holds or the guard expires.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Polling interval of a condition wait, not a synchronisation sleep.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The bytes the server has not read yet from the connection whose client end is `client`
/// (IPv4 loopback only): its socket's receive queue, plus what the client's socket still has
/// unacknowledged (sent, but perhaps not yet in the server's queue), both from /proc/net/tcp.
/// A test that needs the server to have read something before it sends on another connection
/// waits for 0. None when the server's end is not there.
pub fn server_unread(server: SocketAddr, client: SocketAddr) -> Option<u64> {
    let (_, unread) = socket_queues(server, client)?;
    let in_flight = socket_queues(client, server).map_or(0, |(tx, _)| tx);
    Some(unread + in_flight)
}

/// The send and receive queues (bytes) of the loopback IPv4 socket `local` connected to
/// `remote`, from /proc/net/tcp: what it has sent and not had acknowledged, and what it has
/// received and not read. None when there is no such socket.
pub fn socket_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    let f = socket_row(local, remote)?;
    // Field 4 of a row is `tx_queue:rx_queue`, in hex.
    let (tx, rx) = f.get(4)?.split_once(':')?;
    Some((
        u64::from_str_radix(tx, 16).ok()?,
        u64::from_str_radix(rx, 16).ok()?,
    ))
}

/// The TCP state of the loopback IPv4 socket `local` connected to `remote`, from
/// /proc/net/tcp (1 ESTABLISHED, 6 TIME_WAIT, 7 CLOSE, ...). None when there is no such socket.
pub fn socket_state(local: SocketAddr, remote: SocketAddr) -> Option<u8> {
    let f = socket_row(local, remote)?;
    u8::from_str_radix(f.get(3)?, 16).ok()
}

/// The fields of the /proc/net/tcp row of `local` connected to `remote` (IPv4 only).
fn socket_row(local: SocketAddr, remote: SocketAddr) -> Option<Vec<String>> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("IPv4 only"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<String> = l.split_whitespace().map(String::from).collect();
        (f.get(1) == Some(&local) && f.get(2) == Some(&remote)).then_some(f)
    })
}

/// Raises this process's soft descriptor limit to its hard one (at most 65536): for tests that
/// hold a thousand or more connections, both ends in this process.
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(65536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}
