//! Many connections, connection limits, back-pressure and shutdown.
mod common;
use common::*;
use std::io::Write;
use std::time::{Duration, Instant};
use tungstenite::Message;

fn raise_nofile() {
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
    let refuse = || {
        let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(upgrade_request(srv.addr, "/echo").as_bytes())
            .unwrap();
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
        s
    };
    // As many as the worker may keep beside its live connection: they linger.
    let max = srv.hub().port(0).max_refused();
    let lingering: Vec<_> = (0..max).map(|_| refuse()).collect();
    // One more would take a slot with no place in the liveness table: it is closed at once,
    // which the peer sees as a reset once it writes.
    let mut extra = refuse();
    wait_for(
        "the extra refused connection to be closed",
        IO_TIMEOUT,
        || extra.write_all(b"x").is_err(),
    );
    drop(lingering);
}

#[test]
fn a_client_that_stops_reading_is_throttled_and_loses_nothing() {
    let srv = start_echo(|o| o.worker.outbound_high_water = 64 * 1024);
    let mut s = raw_upgraded(srv.addr, "/echo");
    let msg = frame(true, 0, 0x2, &vec![0xabu8; 16 * 1024], true);
    let (sent_msgs, rest) = write_until_throttled(&mut s, &msg, 256 << 20);
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
    for _ in 0..whole {
        let f = read_frame(&mut s).expect("echo after unblocking");
        assert_eq!(f.payload.len(), 16 * 1024);
    }
    writer.join().unwrap();
}

/// Writes `unit` over and over without reading until the server stops taking input (our
/// writes have blocked for 500 ms) or `cap` bytes went out; returns how many whole units left
/// and the unsent rest of the last one.
fn write_until_throttled(s: &mut std::net::TcpStream, unit: &[u8], cap: usize) -> (usize, Vec<u8>) {
    s.set_nonblocking(true).unwrap();
    let mut sent = 0usize;
    let mut pending: &[u8] = unit;
    let mut blocked_since: Option<Instant> = None;
    while sent * unit.len() < cap {
        match s.write(pending) {
            Ok(n) => {
                pending = &pending[n..];
                blocked_since = None;
                if pending.is_empty() {
                    sent += 1;
                    pending = unit;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10)); // polling interval
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    s.set_nonblocking(false).unwrap();
    let rest = if pending.len() == unit.len() {
        Vec::new()
    } else {
        pending.to_vec()
    };
    (sent, rest)
}

#[test]
fn a_client_that_floods_pings_without_reading_is_throttled_and_gets_every_pong() {
    // The default high-water mark (4 MiB): pongs are small, so the socket fills long before
    // the queue reaches it.
    let srv = start_echo(|_| {});
    let mut s = raw_upgraded(srv.addr, "/echo");
    let ping = frame(true, 0, 0x9, &[0x5a; 125], true);
    let cap = 256 << 20;
    let (sent, rest) = write_until_throttled(&mut s, &ping, cap);
    // Kernel buffers both ways plus the high-water mark: tens of MiB at most.
    assert!(
        sent * ping.len() < 64 << 20,
        "server kept reading pings it could not answer: {} MiB taken",
        (sent * ping.len()) >> 20
    );
    // The ping cut short by the throttle is finished now, and answered too.
    let whole = sent + usize::from(!rest.is_empty());
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&rest).unwrap())
    };
    for i in 0..whole {
        let f = read_frame(&mut s).unwrap_or_else(|| panic!("pong {i} of {whole}"));
        assert_eq!((f.opcode, f.payload.len()), (0xA, 125), "pong {i}");
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
