//! Every close path: normal close handshake, protocol violations and their codes, TCP drops.
mod common;
use common::*;
use std::io::Write;

fn violation(bytes: &[u8]) -> Option<u16> {
    let srv = start_echo(|o| o.worker.read_buffer = 4096);
    let mut s = raw_upgraded(srv.addr, "/echo");
    s.write_all(bytes).unwrap();
    let code = expect_close(&mut s);
    assert!(
        closed_by_server(&mut s),
        "TCP must be closed after the close frame"
    );
    code
}

#[test]
fn client_close_is_echoed_with_its_code_then_tcp_closes() {
    let srv = start_echo(|_| {});
    let mut s = raw_upgraded(srv.addr, "/echo");
    let mut body = 1000u16.to_be_bytes().to_vec();
    body.extend_from_slice(b"bye");
    s.write_all(&frame(true, 0, 0x8, &body, true)).unwrap();
    assert_eq!(expect_close(&mut s), Some(1000));
    assert!(closed_by_server(&mut s));
}

#[test]
fn a_peer_that_shuts_its_side_after_close_still_gets_the_echo() {
    let srv = start_echo(|_| {});
    // Close and FIN arrive together (most runs), or the FIN a little later: either way the
    // Close echo must go out before the server ends the connection.
    for i in 0..20 {
        let mut s = raw_upgraded(srv.addr, "/echo");
        s.write_all(&frame(true, 0, 0x8, &1000u16.to_be_bytes(), true))
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let f = read_frame(&mut s).unwrap_or_else(|| panic!("run {i}: EOF before the echo"));
        assert_eq!((f.opcode, f.payload.as_slice()), (0x8, &[0x03, 0xe8][..]));
        assert!(closed_by_server(&mut s), "run {i}");
    }
}

#[test]
fn a_peer_that_shuts_its_side_after_a_bad_request_still_gets_the_answer() {
    let srv = start_echo(|_| {});
    for i in 0..20 {
        let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(upgrade_request(srv.addr, "/nowhere").as_bytes())
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut answer);
        assert!(answer.starts_with("HTTP/1.1 404"), "run {i}: {answer:?}");
    }
}

#[test]
fn a_peer_that_shuts_its_side_after_its_request_and_a_frame_still_gets_101_and_echo() {
    let srv = start_echo(|_| {});
    // `printf '<request><frame>' | nc -N`: the request, one message and the FIN in one go.
    // The worker sees the FIN with the data or at its next read, as the threads happen to
    // run: many runs, so that both orders occur.
    for i in 0..300 {
        let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut bytes = upgrade_request(srv.addr, "/echo").into_bytes();
        bytes.extend_from_slice(&frame(true, 0, 0x1, b"hi", true));
        s.write_all(&bytes).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 101"), "run {i}: {text:?}");
        assert!(
            answer.ends_with(&[0x81, 2, b'h', b'i']),
            "run {i}: {text:?}"
        );
    }
}

#[test]
fn a_peer_that_shuts_its_side_after_a_large_message_gets_all_of_its_echo() {
    // More than the outbound high water mark: the echo is still being written when the FIN is
    // read, and must not be cut short there.
    let srv = start_echo(|_| {});
    let mut s = raw_upgraded(srv.addr, "/echo");
    let payload: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let reader = {
        let mut r = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let _ = std::io::Read::read_to_end(&mut r, &mut got);
            got
        })
    };
    s.write_all(&frame(true, 0, 0x2, &payload, true)).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let got = reader.join().unwrap();
    let mut head = vec![0x82, 127];
    head.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    assert_eq!(
        got.len(),
        head.len() + payload.len(),
        "the echo was cut short"
    );
    assert!(got.starts_with(&head) && got[head.len()..] == payload[..]);
}

/// A service version that retired after its connection was routed to it: `on_open` refuses.
struct Retired;

impl lapps::service::Service for Retired {
    fn name(&self) -> &str {
        "retired"
    }
    fn max_message_size(&self) -> usize {
        1 << 20
    }
    fn on_open(
        &self,
        _: &mut dyn lapps::service::WorkerCtx,
        _: lapps::net::handle::ConnId,
    ) -> Option<u32> {
        None
    }
    fn on_message(
        &self,
        _: &mut dyn lapps::service::WorkerCtx,
        _: lapps::net::handle::ConnId,
        _: u32,
        _: lapps::ws::Opcode,
        _: &[u8],
    ) -> lapps::service::Flow {
        unreachable!("never opened")
    }
    fn on_close(
        &self,
        _: &mut dyn lapps::service::WorkerCtx,
        _: lapps::net::handle::ConnId,
        _: u32,
    ) {
        unreachable!("never opened")
    }
}

struct RetiredRouter;

impl lapps::net::worker::Router for RetiredRouter {
    fn route(
        &self,
        _: &lapps::ws::handshake::Request,
        _: std::net::IpAddr,
    ) -> Result<std::sync::Arc<dyn lapps::service::Service>, lapps::net::worker::Refusal> {
        Ok(std::sync::Arc::new(Retired))
    }
}

#[test]
fn a_connection_to_a_retired_version_ends_at_the_close_exchange_not_the_close_timeout() {
    let srv = start_with(
        |o| o.worker.close_timeout = std::time::Duration::from_secs(20),
        std::sync::Arc::new(RetiredRouter),
    );
    let mut s = raw_upgraded(srv.addr, "/any");
    assert_eq!(expect_close(&mut s), Some(1001));
    let t = std::time::Instant::now();
    s.write_all(&frame(true, 0, 0x8, &1000u16.to_be_bytes(), true))
        .unwrap();
    assert!(
        closed_by_server(&mut s),
        "TCP must be closed after the close frames"
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "closed after {:?}: the server waited for the 20 s close timeout",
        t.elapsed()
    );
}

#[test]
fn empty_close_is_answered_with_an_empty_close() {
    let srv = start_echo(|_| {});
    let mut s = raw_upgraded(srv.addr, "/echo");
    s.write_all(&frame(true, 0, 0x8, b"", true)).unwrap();
    assert_eq!(expect_close(&mut s), None);
}

#[test]
fn tungstenite_close_handshake_completes() {
    let srv = start_echo(|_| {});
    let mut ws = connect(srv.addr, "/echo");
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
}

#[test]
fn unmasked_client_frame_closes_with_1002() {
    assert_eq!(violation(&frame(true, 0, 0x1, b"hi", false)), Some(1002));
}

#[test]
fn nonzero_rsv_closes_with_1002() {
    assert_eq!(violation(&frame(true, 0b100, 0x1, b"hi", true)), Some(1002));
}

#[test]
fn reserved_opcodes_close_with_1002_not_1003() {
    for op in [0x3, 0x7, 0xB, 0xF] {
        assert_eq!(
            violation(&frame(true, 0, op, b"", true)),
            Some(1002),
            "opcode {op:#x}"
        );
    }
}

#[test]
fn fragmented_control_frame_closes_with_1002() {
    assert_eq!(violation(&frame(false, 0, 0x9, b"", true)), Some(1002));
}

#[test]
fn oversized_control_frame_closes_with_1002() {
    assert_eq!(
        violation(&frame(true, 0, 0x9, &[0u8; 126], true)),
        Some(1002)
    );
}

#[test]
fn continuation_without_a_message_closes_with_1002() {
    assert_eq!(violation(&frame(true, 0, 0x0, b"x", true)), Some(1002));
}

#[test]
fn new_message_inside_a_fragmented_one_closes_with_1002() {
    let mut b = frame(false, 0, 0x1, b"a", true);
    b.extend(frame(true, 0, 0x1, b"b", true));
    assert_eq!(violation(&b), Some(1002));
}

#[test]
fn invalid_utf8_text_closes_with_1007() {
    assert_eq!(
        violation(&frame(true, 0, 0x1, &[0xce, 0xba, 0xff], true)),
        Some(1007)
    );
}

#[test]
fn invalid_close_code_closes_with_1002() {
    assert_eq!(
        violation(&frame(true, 0, 0x8, &1005u16.to_be_bytes(), true)),
        Some(1002)
    );
    assert_eq!(violation(&frame(true, 0, 0x8, &[0x03], true)), Some(1002));
}

#[test]
fn a_violation_is_closed_with_a_reason_for_the_peers_developer() {
    let srv = start_with(|_| {}, std::sync::Arc::new(EchoRouter::new(1000)));
    closed_with_reasons(srv.addr);
    // A Lua service's Close waits for the replies it may owe, and keeps its reason meanwhile.
    let lua = start_app(
        &ws_json(1),
        &lapps_json(
            "./lua/apps",
            r#"{ "echo": { "request_target": "/echo", "max_inbound_message_size": 1000 } }"#,
        ),
    );
    closed_with_reasons(lua.addr);
}

/// Three violations at `/echo` of `addr` (whose messages may be 1000 bytes at most), each
/// on a connection of its own: the Close of each carries its reason.
fn closed_with_reasons(addr: std::net::SocketAddr) {
    let big = frame(true, 0, 0x2, &vec![0u8; 2000], true);
    for (bytes, code, reason) in [
        (
            frame(true, 0, 0x1, &[0xce, 0xba, 0xff], true),
            1007,
            "text message is not valid UTF-8",
        ),
        (
            frame(true, 0, 0x8, &999u16.to_be_bytes(), true),
            1002,
            "invalid close code",
        ),
        (big[..8].to_vec(), 1009, "message too big for this service"),
    ] {
        let mut s = raw_upgraded(addr, "/echo");
        s.write_all(&bytes).unwrap();
        assert_eq!(expect_close_reason(&mut s), (Some(code), reason.into()));
    }
}

#[test]
fn invalid_utf8_close_reason_closes_with_1007() {
    let mut body = 1000u16.to_be_bytes().to_vec();
    body.extend_from_slice(&[0xff, 0xfe]);
    assert_eq!(violation(&frame(true, 0, 0x8, &body, true)), Some(1007));
}

#[test]
fn message_over_the_limit_closes_with_1009_before_the_payload_arrives() {
    let srv = start_with(|_| {}, std::sync::Arc::new(EchoRouter::new(1000)));
    let mut s = raw_upgraded(srv.addr, "/echo");
    // Only the header of a 1 MiB frame: the server must refuse on the declared length.
    let f = frame(true, 0, 0x2, &vec![0u8; 1 << 20], true);
    s.write_all(&f[..14]).unwrap();
    assert_eq!(expect_close(&mut s), Some(1009));
}

#[test]
fn messages_being_received_share_the_process_wide_cap_and_the_one_past_it_gets_1013() {
    use lapps::net::assembly::AssemblyBudget;
    const CAP: usize = 1 << 20;
    let budget = std::sync::Arc::new(AssemblyBudget::new(CAP));
    let srv = start_echo(|o| o.worker.assembly = budget.clone());
    // A holds 300,000 bytes of a fragmented message (its buffer: 300,000 to 600,000 bytes of
    // capacity, by how its reads fell); the Pong to a Ping sent after them says the server
    // has read them.
    let mut a = raw_upgraded(srv.addr, "/echo");
    let head = vec![0xa5u8; 300_000];
    a.write_all(&frame(false, 0, 0x2, &head, true)).unwrap();
    a.write_all(&frame(true, 0, 0x9, b"read?", true)).unwrap();
    let f = read_frame(&mut a).unwrap();
    assert_eq!((f.opcode, f.payload.as_slice()), (0xA, &b"read?"[..]));
    assert!(budget.held() >= 300_000, "held {}", budget.held());

    // B's 800,000 bytes do not fit beside A's (at most 748,576 are left): Close 1013 (try
    // again later), and B's part is given back.
    let mut b = raw_upgraded(srv.addr, "/echo");
    let _ = b.write_all(&frame(false, 0, 0x2, &vec![0x5au8; 800_000], true));
    assert_eq!(expect_close(&mut b), Some(1013));
    assert!(closed_by_server(&mut b));
    assert!(budget.held() < 600_001, "held {}", budget.held());

    // A is unaffected: its message completes and is echoed whole.
    a.write_all(&frame(true, 0, 0x0, b"tail", true)).unwrap();
    let f = read_frame(&mut a).unwrap();
    let mut whole = head.clone();
    whole.extend_from_slice(b"tail");
    assert_eq!((f.opcode, f.fin, f.payload.len()), (0x2, true, whole.len()));
    assert!(f.payload == whole, "the echo differs from the message");
    assert_eq!(budget.held(), 0, "a completed message holds nothing");

    // With A's buffer released, the 800,000 bytes fit: C's message goes through.
    let mut c = raw_upgraded(srv.addr, "/echo");
    let big = vec![0x3cu8; 800_000];
    c.write_all(&frame(false, 0, 0x2, &big[..400_000], true))
        .unwrap();
    c.write_all(&frame(true, 0, 0x0, &big[400_000..], true))
        .unwrap();
    let f = read_frame(&mut c).unwrap();
    assert_eq!((f.opcode, f.payload.len()), (0x2, big.len()));
    assert!(f.payload == big);
    assert_eq!(budget.held(), 0, "completed messages hold nothing");
}

#[test]
fn a_connection_that_ends_mid_message_gives_its_bytes_back() {
    use lapps::net::assembly::AssemblyBudget;
    let budget = std::sync::Arc::new(AssemblyBudget::new(1 << 20));
    let srv = start_echo(|o| o.worker.assembly = budget.clone());
    let mut a = raw_upgraded(srv.addr, "/echo");
    a.write_all(&frame(false, 0, 0x1, &[b'x'; 200_000], true))
        .unwrap();
    a.write_all(&frame(true, 0, 0x9, b"", true)).unwrap();
    assert_eq!(read_frame(&mut a).unwrap().opcode, 0xA);
    assert!(budget.held() >= 200_000, "held {}", budget.held());
    close_with_reset(a);
    wait_for(
        "the reset connection's bytes are given back",
        IO_TIMEOUT,
        || budget.held() == 0,
    );
}

#[test]
fn ping_is_answered_with_the_same_payload_and_pong_is_ignored() {
    let srv = start_echo(|_| {});
    let mut s = raw_upgraded(srv.addr, "/echo");
    s.write_all(&frame(true, 0, 0xA, b"unsolicited", true))
        .unwrap();
    s.write_all(&frame(true, 0, 0x9, b"abc", true)).unwrap();
    let f = read_frame(&mut s).unwrap();
    assert_eq!((f.opcode, f.payload.as_slice()), (0xA, &b"abc"[..]));
}

#[test]
fn tcp_drop_without_close_leaves_the_server_serving() {
    let srv = start_echo(|_| {});
    for _ in 0..20 {
        let mut s = raw_upgraded(srv.addr, "/echo");
        s.write_all(&frame(false, 0, 0x2, b"half a message", true))
            .unwrap();
        drop(s);
    }
    let mut ws = connect(srv.addr, "/echo");
    ws.send(tungstenite::Message::text("ok")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("ok"));
}

#[test]
fn no_pong_follows_our_close() {
    // Our Close is the last frame we send (RFC 6455 5.5.1): a Ping that arrives while we wait
    // for the peer's Close is not answered.
    let srv = start_echo(|o| o.worker.idle_timeout = Some(std::time::Duration::from_millis(100)));
    let mut s = raw_upgraded(srv.addr, "/echo");
    // Silent: pinged, then closed with 1001 (the idle ping is not answered either).
    assert_eq!(expect_close(&mut s), Some(1001));
    s.write_all(&frame(true, 0, 0x9, b"late ping", true))
        .unwrap();
    s.write_all(&frame(true, 0, 0x8, &1000u16.to_be_bytes(), true))
        .unwrap();
    let after: Vec<u8> = std::iter::from_fn(|| read_frame(&mut s).map(|f| f.opcode)).collect();
    assert!(after.is_empty(), "frames after our Close: {after:02x?}");
}

#[test]
fn a_message_still_incomplete_at_the_message_timeout_fails_with_1008() {
    use lapps::net::assembly::AssemblyBudget;
    use std::time::{Duration, Instant};
    const TIMEOUT: Duration = Duration::from_secs(1);
    let budget = std::sync::Arc::new(AssemblyBudget::new(1 << 20));
    let srv = start_echo(|o| {
        o.worker.assembly = budget.clone();
        o.worker.message_timeout = Some(TIMEOUT);
    });
    let mut other = raw_upgraded(srv.addr, "/echo");

    // Each fragment comes before the idle timeout (60 s), so only the message's own deadline
    // can end this: a fragment every 50 ms until the server's Close.
    let mut slow = raw_upgraded(srv.addr, "/echo");
    slow.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let began = Instant::now();
    slow.write_all(&frame(false, 0, 0x2, &[7; 1000], true))
        .unwrap();
    let code = loop {
        assert!(
            began.elapsed() < IO_TIMEOUT,
            "no Close while the message trickles"
        );
        if let Some(f) = read_frame(&mut slow) {
            assert_eq!(f.opcode, 0x8, "only a Close is expected");
            break (f.payload.len() >= 2).then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
        }
        // The server may have shut the connection meanwhile: a failed write is fine.
        let _ = slow.write_all(&frame(false, 0, 0x0, &[7; 1000], true));
    };
    assert_eq!(code, Some(1008));
    assert!(
        began.elapsed() >= TIMEOUT,
        "closed after {:?}, before the timeout",
        began.elapsed()
    );
    slow.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert!(closed_by_server(&mut slow));
    wait_for(
        "the slow message's bytes are given back",
        IO_TIMEOUT,
        || budget.held() == 0,
    );

    // The other connection is unaffected, and messages that each end in time are never cut,
    // however long the connection lives: each begins in one read (the Pong says it was read
    // alone) and ends in the next, for twice the timeout.
    let began = Instant::now();
    let mut sent = 0u32;
    while began.elapsed() < 2 * TIMEOUT || sent < 3 {
        sent += 1;
        other
            .write_all(&frame(false, 0, 0x2, &sent.to_be_bytes(), true))
            .unwrap();
        other.write_all(&frame(true, 0, 0x9, b"", true)).unwrap();
        assert_eq!(read_frame(&mut other).map(|f| f.opcode), Some(0xA));
        other.write_all(&frame(true, 0, 0x0, b"end", true)).unwrap();
        let f = read_frame(&mut other).expect("the echo");
        let mut whole = sent.to_be_bytes().to_vec();
        whole.extend_from_slice(b"end");
        assert_eq!((f.opcode, f.payload), (0x2, whole));
    }

    // Nor when one message ends and the next begins in the same read, each time: the
    // connection is never without a message being received, yet each arrives in time.
    other
        .write_all(&frame(false, 0, 0x2, &0u32.to_be_bytes(), true))
        .unwrap();
    let began = Instant::now();
    let mut sent = 0u32;
    while began.elapsed() < 2 * TIMEOUT || sent < 3 {
        let mut both = frame(true, 0, 0x0, b"end", true);
        both.extend(frame(false, 0, 0x2, &(sent + 1).to_be_bytes(), true));
        other.write_all(&both).unwrap();
        let f = read_frame(&mut other).expect("the echo");
        let mut whole = sent.to_be_bytes().to_vec();
        whole.extend_from_slice(b"end");
        assert_eq!((f.opcode, f.payload), (0x2, whole));
        sent += 1;
    }
}

/// A frame's first bytes count as its beginning: one byte of a header, or a header without
/// its last length bytes, and then nothing, is closed 1008 at the message timeout (a trial's
/// peer doing so was never timed out with idle pings off).
#[test]
fn a_frame_header_left_unfinished_fails_with_1008_at_the_message_timeout() {
    use std::time::{Duration, Instant};
    const TIMEOUT: Duration = Duration::from_millis(500);
    let srv = start_echo(|o| {
        o.worker.message_timeout = Some(TIMEOUT);
        o.worker.idle_timeout = None;
    });
    let whole = frame(true, 0, 0x2, &[7; 300], true);
    // One byte; and a 64-bit length cut short (the header needs 2 + 8 + 4 bytes).
    for part in [&whole[..1], &frame(true, 0, 0x2, &[7; 70_000], true)[..5]] {
        let mut s = raw_upgraded(srv.addr, "/echo");
        let began = Instant::now();
        s.write_all(part).unwrap();
        let f = read_frame(&mut s).expect("a Close at the message timeout");
        assert_eq!(f.opcode, 0x8);
        assert_eq!(f.payload.get(..2), Some(&1008u16.to_be_bytes()[..]));
        assert!(
            began.elapsed() >= TIMEOUT,
            "closed after {:?}",
            began.elapsed()
        );
        assert!(closed_by_server(&mut s));
    }
}

/// A peer given up on while it does not read (our bytes still in the kernel) is reset: a FIN
/// would wait behind its zero window, and the kernel keep those bytes and the connection for
/// minutes after the server let it go (a re-trial's client was still connected 60 s later).
#[test]
fn a_peer_given_up_on_with_our_bytes_untaken_is_reset() {
    use std::os::fd::AsRawFd;
    use std::time::Duration;
    // Timeouts short for the test, long beside the client's write of its message.
    let srv = start_echo(|o| {
        o.worker.idle_timeout = Some(Duration::from_millis(400));
        o.worker.close_timeout = Duration::from_millis(400);
    });
    let mut s = raw_upgraded(srv.addr, "/echo");
    let fd = s.as_raw_fd();
    // A small receive buffer: the server's own socket keeps most of the echo unacknowledged
    // (the kernels' buffers could otherwise take all of it, and a FIN would get through).
    lapps::net::sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 16 << 10).unwrap();
    // Nothing of its echo is ever read.
    s.write_all(&frame(true, 0, 0x2, &vec![7u8; 8 << 20], true))
        .expect("the message written");
    wait_for("the server's reset", IO_TIMEOUT, || {
        tcp_state(fd) == Some(TCP_CLOSE)
    });
    // The connection is gone from the server too.
    wait_all_ended(&srv.hub());
}

/// `tcpi_state` of a closed connection (linux/tcp_states.h; 1 is established).
const TCP_CLOSE: u8 = 7;

/// `fd`'s TCP state (`tcpi_state` of TCP_INFO).
fn tcp_state(fd: std::os::fd::RawFd) -> Option<u8> {
    lapps::net::sys::tcp_info(fd)
        .ok()
        .map(|(info, _)| info.tcpi_state)
}
