//! Many connections, connection limits, back-pressure and shutdown.
mod common;
use common::*;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tungstenite::Message;

#[test]
fn a_thousand_concurrent_connections_spread_over_workers() {
    raise_nofile();
    let srv = start_echo(|o| o.workers = 2);
    let mut clients: Vec<Client> = (0..1000).map(|_| connect(srv.addr, "/echo")).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(Message::text(format!("hello {i}"))).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.read().unwrap(), Message::text(format!("hello {i}")));
    }
    let hub = srv_hub(&srv);
    let per_worker: Vec<usize> = (0..2)
        .map(|w| {
            hub.port(w)
                .connections
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .collect();
    assert_eq!(per_worker.iter().sum::<usize>(), 1000, "{per_worker:?}");
    assert!(
        per_worker.iter().all(|&n| n >= 400),
        "balancer must spread connections: {per_worker:?}"
    );
}

fn srv_hub(srv: &TestServer) -> std::sync::Arc<lapps::net::hub::Hub> {
    srv.hub()
}

#[test]
fn connections_beyond_the_limit_get_503() {
    let srv = start_echo(|o| {
        o.workers = 2;
        o.max_connections = 3;
    });
    let mut held: Vec<Client> = (0..6).map(|_| connect(srv.addr, "/echo")).collect();
    let srv_addr = srv.addr;
    let hub = srv.hub();
    wait_for("six connections registered", IO_TIMEOUT, || {
        (0..2)
            .map(|w| {
                hub.port(w)
                    .connections
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum::<usize>()
            == 6
    });
    let resp = http_exchange(
        srv_addr,
        b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    // The held connections are unaffected.
    held[0].send(Message::text("x")).unwrap();
    assert_eq!(held[0].read().unwrap(), Message::text("x"));
}

/// A client that asked a full server to upgrade and read its answer, 503, to the end (the
/// server's FIN): the connection stays open on our side.
fn refused_client(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(upgrade_request(addr, "/echo").as_bytes())
        .unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    s
}

#[test]
fn refused_connections_beyond_what_a_worker_can_hold_are_closed_at_once() {
    raise_nofile();
    let srv = start_echo(|o| {
        o.workers = 1;
        o.max_connections = 1;
        // Refused connections linger (answered, waiting for our EOF) as long as this.
        o.worker.close_timeout = Duration::from_secs(60);
    });
    let _live = connect(srv.addr, "/echo");
    let refuse = || refused_client(srv.addr);
    // As many as the worker may keep beside its live connection: they linger.
    let max = srv.hub().port(0).max_refused();
    let lingering: Vec<_> = (0..max).map(|_| refuse()).collect();
    // One more is past the room for refused connections (each holds a slab slot and a
    // descriptor): it is closed at once, which the peer sees as a reset once it writes.
    let mut extra = refuse();
    wait_for(
        "the extra refused connection to be closed",
        IO_TIMEOUT,
        || extra.write_all(b"x").is_err(),
    );
    drop(lingering);
}

/// With every worker full, refusals linger in every worker's room for refused connections,
/// one after another, not all in the first worker's (which once took them all, closing them
/// at once past its own room while the others stayed empty).
#[test]
fn refusals_are_spread_over_the_workers() {
    const REFUSALS: usize = 8;
    let srv = start_echo(|o| {
        o.workers = 2;
        o.max_connections = 1;
        o.worker.close_timeout = Duration::from_secs(60);
    });
    let hub = srv.hub();
    let _live: Vec<Client> = (0..2).map(|_| connect(srv.addr, "/echo")).collect();
    wait_for("both workers full", IO_TIMEOUT, || {
        (0..2).all(|w| hub.port(w).connections.load(Ordering::Relaxed) == 1)
    });
    let refused: Vec<std::net::TcpStream> =
        (0..REFUSALS).map(|_| refused_client(srv.addr)).collect();
    let per_worker: Vec<usize> = (0..2).map(|w| hub.port(w).refused()).collect();
    assert_eq!(
        per_worker,
        [REFUSALS / 2; 2],
        "refused connections per worker"
    );
    drop(refused);
}

#[test]
fn a_client_that_stops_reading_is_throttled_and_loses_nothing() {
    let srv = start_echo(|o| o.worker.outbound_high_water = 64 * 1024);
    let mut s = raw_upgraded(srv.addr, "/echo");
    let msg = |i: usize| frame(true, 0, 0x2, &numbered(i, 16 * 1024), true);
    let (sent_msgs, rest) = write_until_throttled(&mut s, msg, 256 << 20);
    // Bounded: kernel buffers (a few MiB each way) plus the high-water mark, not unbounded growth.
    assert!(
        sent_msgs * 16 * 1024 < 64 << 20,
        "server kept reading: {sent_msgs} messages"
    );
    // Now read everything back: every complete message we sent is echoed, in order.
    let whole = sent_msgs + usize::from(!rest.is_empty());
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&rest).unwrap())
    };
    for i in 0..whole {
        let f = read_frame(&mut s).expect("echo after unblocking");
        assert!(f.payload == numbered(i, 16 * 1024), "echo {i} of {whole}");
    }
    writer.join().unwrap();
}

/// A payload of `len` bytes that says it is the `i`th: its number, then filler.
fn numbered(i: usize, len: usize) -> Vec<u8> {
    let mut p = vec![0xab; len];
    p[..8].copy_from_slice(&(i as u64).to_be_bytes());
    p
}

/// Writes `unit(0)`, `unit(1)`, ... without reading until the server stops taking input (our
/// writes have blocked for 2 s: long beside a loaded machine's scheduling delays, which would
/// otherwise pass for a server that stopped reading) or `cap` bytes went out; returns how many
/// whole units left and the unsent rest of the last one.
fn write_until_throttled(
    s: &mut std::net::TcpStream,
    unit: impl Fn(usize) -> Vec<u8>,
    cap: usize,
) -> (usize, Vec<u8>) {
    s.set_nonblocking(true).unwrap();
    let mut sent = 0usize;
    let mut bytes = 0usize;
    let mut current = unit(0);
    let mut at = 0;
    let mut blocked_since: Option<Instant> = None;
    while bytes < cap {
        match s.write(&current[at..]) {
            Ok(n) => {
                at += n;
                bytes += n;
                blocked_since = None;
                if at == current.len() {
                    sent += 1;
                    current = unit(sent);
                    at = 0;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(2) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10)); // polling interval
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    s.set_nonblocking(false).unwrap();
    let rest = if at == 0 {
        Vec::new()
    } else {
        current[at..].to_vec()
    };
    (sent, rest)
}

#[test]
fn a_client_that_floods_pings_without_reading_is_throttled_and_gets_every_pong() {
    // The default high-water mark (4 MiB): pongs are small, so the socket fills long before
    // the queue reaches it.
    let srv = start_echo(|_| {});
    let mut s = raw_upgraded(srv.addr, "/echo");
    let ping = |i: usize| frame(true, 0, 0x9, &numbered(i, 125), true);
    let cap = 256 << 20;
    let (sent, rest) = write_until_throttled(&mut s, ping, cap);
    // Kernel buffers both ways plus the high-water mark: tens of MiB at most.
    let frame_len = ping(0).len();
    assert!(
        sent * frame_len < 64 << 20,
        "server kept reading pings it could not answer: {} MiB taken",
        (sent * frame_len) >> 20
    );
    // The ping cut short by the throttle is finished now, and answered too.
    let whole = sent + usize::from(!rest.is_empty());
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&rest).unwrap())
    };
    for i in 0..whole {
        let f = read_frame(&mut s).unwrap_or_else(|| panic!("pong {i} of {whole}"));
        assert!(
            f.opcode == 0xA && f.payload == numbered(i, 125),
            "pong {i} of {whole}"
        );
    }
    writer.join().unwrap();
}

#[test]
fn shutdown_sends_1001_to_every_connection_and_finishes_within_5_seconds() {
    let srv = start_echo(|_| {});
    let mut socks: Vec<_> = (0..20).map(|_| raw_upgraded(srv.addr, "/echo")).collect();
    let readers: Vec<_> = socks
        .drain(..)
        .map(|mut s| std::thread::spawn(move || expect_close(&mut s)))
        .collect();
    let took = srv.stop();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    for r in readers {
        assert_eq!(r.join().unwrap(), Some(1001));
    }
}

#[test]
fn shutdown_ends_at_its_grace_whatever_the_poll_wait_and_the_close_timeout() {
    let srv = start_echo(|o| {
        o.workers = 1;
        o.worker.max_poll_wait = Duration::from_secs(30);
        o.worker.close_timeout = Duration::from_secs(30);
    });
    // A peer that never answers our Close: only the end of the shutdown's grace (4 s) ends
    // it, and nothing else wakes the worker then.
    let mut silent = raw_upgraded(srv.addr, "/echo");
    let took = srv.stop();
    // The grace (4 s), not the 30 s timeouts; the margin is for a loaded CI machine.
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    assert_eq!(expect_close(&mut silent), Some(1001));
    assert!(
        closed_by_server(&mut silent),
        "the connection was left open"
    );
}

#[test]
fn idle_connection_is_pinged_then_closed_with_1001() {
    let srv = start_echo(|o| o.worker.idle_timeout = Some(Duration::from_millis(200)));
    let mut s = raw_upgraded(srv.addr, "/echo");
    let ping = read_frame(&mut s).expect("a ping after the idle timeout");
    assert_eq!(ping.opcode, 0x9);
    // No pong: the server gives up with 1001 after one more idle period.
    assert_eq!(expect_close(&mut s), Some(1001));
}

#[test]
fn idle_connection_that_answers_pings_stays_open() {
    // The pong must reach the server within one idle period. 1 s leaves that to the scheduler
    // of a loaded machine (the heavy tests of this binary run beside this one), where 100 ms
    // did not; three periods are still three pings answered.
    let srv = start_echo(|o| o.worker.idle_timeout = Some(Duration::from_secs(1)));
    let mut s = raw_upgraded(srv.addr, "/echo");
    for _ in 0..3 {
        let ping = read_frame(&mut s).expect("ping");
        assert_eq!(ping.opcode, 0x9);
        s.write_all(&frame(true, 0, 0xA, &ping.payload, true))
            .unwrap();
    }
    s.write_all(&frame(true, 0, 0x1, b"alive", true)).unwrap();
    loop {
        let f = read_frame(&mut s).expect("echo");
        if f.opcode == 0x1 {
            assert_eq!(f.payload, b"alive");
            break;
        }
        assert_eq!(f.opcode, 0x9, "only pings may come before the echo");
    }
}

/// A raw client socket with a small receive buffer (set before connecting, so the window the
/// server sees stays small), upgraded to `/echo`.
fn small_window_client(addr: std::net::SocketAddr) -> std::net::TcpStream {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("test servers listen on IPv4");
    };
    // SAFETY: plain socket calls on a descriptor we create and hand to TcpStream, which owns
    // it from then on; the option and address structs are valid for the calls' duration.
    let s = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        let size: libc::c_int = 16 * 1024;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let s = std::net::TcpStream::from_raw_fd(fd);
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        s
    };
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut s = s;
    s.write_all(upgrade_request(addr, "/echo").as_bytes())
        .unwrap();
    let head = read_http_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let _ = s.read(&mut []);
    s
}

/// Reads `n` bytes in 16 KiB steps with a pause after each: a peer that is slow but reading.
/// The pauses pace the reader; nothing waits on them for an outcome.
fn read_slowly(s: &mut std::net::TcpStream, n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut got = Vec::with_capacity(n);
    let mut chunk = vec![0u8; 16 * 1024];
    while got.len() < n {
        let want = chunk.len().min(n - got.len());
        match s.read(&mut chunk[..want]) {
            Ok(0) | Err(_) => break,
            Ok(k) => got.extend_from_slice(&chunk[..k]),
        }
        std::thread::sleep(Duration::from_millis(8)); // reader pace, not synchronisation
    }
    got
}

/// A 6 MiB binary message as the client sends it (masked), and its echo as the server frames it.
fn big_echo_frame() -> (Vec<u8>, Vec<u8>) {
    let payload: Vec<u8> = (0..6 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut expected = vec![0x82, 127];
    expected.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    expected.extend_from_slice(&payload);
    (frame(true, 0, 0x2, &payload, true), expected)
}

#[test]
fn a_slow_reader_gets_the_whole_backlog_before_the_close_reply() {
    // The close timeout (1 s) is far shorter than the ~3 s the reader (~2 MB/s at most) takes
    // after the Close reply is queued: it counts from the last bytes the peer took.
    let srv = start_echo(|o| o.worker.close_timeout = Duration::from_secs(1));
    // Built before connecting: in a debug build it takes long enough to count as idle.
    let (request, expected) = big_echo_frame();
    let mut s = small_window_client(srv.addr);
    s.write_all(&request).unwrap();
    s.write_all(&frame(true, 0, 0x8, &1000u16.to_be_bytes(), true))
        .unwrap();
    let got = read_slowly(&mut s, expected.len());
    assert!(
        got == expected,
        "the echo was cut at {} of {} bytes",
        got.len(),
        expected.len()
    );
    assert_eq!(expect_close(&mut s), Some(1000));
}

#[test]
fn a_peer_draining_a_backlog_slowly_is_not_idle() {
    // It sends nothing for ~3 s, three idle periods, while it reads: that is not silence. (A
    // Ping may come first, if the scheduler kept the client quiet for a period before it sent.)
    let srv = start_echo(|o| o.worker.idle_timeout = Some(Duration::from_secs(1)));
    // Built before connecting: in a debug build it takes long enough to count as idle.
    let (request, expected) = big_echo_frame();
    let mut s = small_window_client(srv.addr);
    s.write_all(&request).unwrap();
    const PING: [u8; 2] = [0x89, 0x00];
    let mut got = Vec::new();
    let pings = loop {
        let pings = got.chunks(2).take_while(|c| *c == PING).count();
        if got.len() >= 2 * pings + expected.len() {
            break pings;
        }
        let more = read_slowly(&mut s, 2 * pings + expected.len() - got.len());
        assert!(!more.is_empty(), "cut after {} bytes", got.len());
        got.extend_from_slice(&more);
    };
    assert!(
        got[2 * pings..2 * pings + expected.len()] == expected[..],
        "not the echo after {pings} ping(s)"
    );
    // Still open: it answers.
    s.write_all(&frame(true, 0, 0x1, b"still here", true))
        .unwrap();
    loop {
        let f = read_frame(&mut s).expect("the echo, not the end");
        if f.opcode == 0x1 {
            assert_eq!(f.payload, b"still here");
            break;
        }
        assert_eq!(f.opcode, 0x9, "only pings before the echo");
    }
}

#[test]
fn a_peer_that_stops_reading_is_dropped_by_the_idle_timeout() {
    // It queues a 6 MiB echo and never reads: pinged (behind the backlog), closed with 1001,
    // and ended by the close timeout; its queued bytes are freed.
    // Long enough periods that the echo stays queued (about 3 s) while this thread, maybe
    // starved on a busy machine, looks for it.
    let srv = start_echo(|o| {
        o.worker.idle_timeout = Some(Duration::from_secs(1));
        o.worker.close_timeout = Duration::from_secs(1);
    });
    let hub = srv.hub();
    let (request, _) = big_echo_frame();
    let s = small_window_client(srv.addr);
    let mut w = s.try_clone().unwrap();
    w.write_all(&request).unwrap();
    let queued = || {
        hub.port(0)
            .queued_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    wait_for("the echo queued", IO_TIMEOUT, || queued() > 0);
    wait_for("the connection ended", IO_TIMEOUT, || {
        queued() == 0
            && hub
                .port(0)
                .connections
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0
    });
    drop(s);
}

/// A worker told to stop closes every connection still in its inbox before it ends (it takes
/// a turn's worth at a time), not when the last holder of the hub drops it: in the server
/// that is after the services have stopped, and until then those clients hear nothing.
#[test]
fn a_stopping_worker_closes_every_connection_left_in_its_inbox() {
    use lapps::net::hub::{Hub, NewConn};
    use lapps::net::per_address::PerAddress;
    use lapps::net::worker::{Worker, WorkerOptions};
    use std::sync::Arc;
    const WAITING: usize = 300; // more than a worker takes in one turn (256)
    let hub = Arc::new(Hub::with_inbox(1, 1000, 512).unwrap());
    let places = PerAddress::new(1000, 64).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut clients = Vec::new();
    for _ in 0..WAITING {
        clients.push(std::net::TcpStream::connect(addr).unwrap());
        let (s, peer) = listener.accept().unwrap();
        s.set_nonblocking(true).unwrap(); // as the listener's accept4 gives them
        assert!(hub.port(0).reserve_slot());
        let nc = NewConn {
            fd: s.into(),
            peer,
            listener: 0,
            refuse: None,
            ticket: places.admit(peer.ip()).map(Box::new),
        };
        assert!(hub.port(0).accepts.push(nc).is_ok());
    }
    let ip = addr.ip();
    assert_eq!(places.count(ip), WAITING as u32);
    hub.begin_shutdown();
    let router = Arc::new(EchoRouter::new(1 << 20));
    let worker = Worker::new(0, Arc::clone(&hub), router, WorkerOptions::default()).unwrap();
    let (done, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        worker.run();
        let _ = done.send(());
    });
    stopped
        .recv_timeout(Duration::from_secs(30))
        .expect("the worker stops");
    // The hub is still held here, as the server holds it while its services stop.
    assert_eq!(hub.port(0).accepts.len(), 0);
    assert_eq!(places.count(ip), 0, "every place given back");
    for (i, mut c) in clients.into_iter().enumerate() {
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        assert!(closed_by_server(&mut c), "client {i} was not closed");
    }
}
