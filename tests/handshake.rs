//! The upgrade handshake through the real server: accepted and refused requests.
mod common;
use common::*;

fn request(addr: std::net::SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

#[test]
fn valid_upgrade_gets_101_with_the_rfc_accept_key() {
    let srv = start_echo(|_| {});
    let resp = http_exchange_until_head(
        srv.addr,
        &request(srv.addr, "/echo", "Sec-WebSocket-Version: 13\r\n"),
    );
    assert!(
        resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{resp}"
    );
    assert!(
        resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{resp}"
    );
}

fn http_exchange_until_head(addr: std::net::SocketAddr, req: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    read_http_head(&mut s)
}

#[test]
fn unknown_request_target_gets_404_and_the_server_carries_on() {
    let srv = start_echo(|_| {});
    for _ in 0..3 {
        let resp = http_exchange(
            srv.addr,
            request(srv.addr, "/nope", "Sec-WebSocket-Version: 13\r\n").as_bytes(),
        );
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    }
    let mut ws = connect(srv.addr, "/echo");
    ws.send(tungstenite::Message::text("still here")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("still here"));
}

#[test]
fn query_string_is_ignored_for_routing() {
    let srv = start_echo(|_| {});
    let mut ws = connect(srv.addr, "/echo?room=1");
    ws.send(tungstenite::Message::text("q")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("q"));
}

#[test]
fn wrong_version_gets_426_with_the_supported_version() {
    let srv = start_echo(|_| {});
    let resp = http_exchange(
        srv.addr,
        request(srv.addr, "/echo", "Sec-WebSocket-Version: 8\r\n").as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 426"), "{resp}");
    assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"), "{resp}");
}

#[test]
fn malformed_request_gets_400() {
    let srv = start_echo(|_| {});
    let resp = http_exchange(srv.addr, b"GET /echo HTTP/1.1\r\nHost x\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let resp = http_exchange(
        srv.addr,
        request(srv.addr, "/echo", "Sec-WebSocket-Version: 13\r\n")
            .replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")
            .as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
}

#[test]
fn oversized_head_gets_431() {
    let srv = start_echo(|o| o.worker.max_request_bytes = 1024);
    let big = format!("X-Big: {}\r\n", "a".repeat(4000));
    let resp = http_exchange(srv.addr, request(srv.addr, "/echo", &big).as_bytes());
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
}

#[test]
fn a_head_that_never_ends_with_too_many_fields_gets_431_at_once() {
    // A timeout far beyond the read's (IO_TIMEOUT): a 408 would come too late to be read.
    let srv = start_echo(|o| {
        o.worker.max_headers = 8;
        o.worker.handshake_timeout = std::time::Duration::from_secs(600);
    });
    let fields: String = (0..9).map(|i| format!("X-{i}: v\r\n")).collect();
    let resp = http_exchange(
        srv.addr,
        format!("GET /echo HTTP/1.1\r\n{fields}").as_bytes(),
    );
    assert!(
        resp.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{resp:?}"
    );
}

#[test]
fn a_head_with_cr_cr_lf_line_ends_gets_400_at_once() {
    // Its CRLFCRLF never comes: without the bare CR check this would wait for a 408.
    let srv = start_echo(|o| o.worker.handshake_timeout = std::time::Duration::from_secs(600));
    let req = request(srv.addr, "/echo", "Sec-WebSocket-Version: 13\r\n").replace("\r\n", "\r\r\n");
    let resp = http_exchange(srv.addr, req.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{resp:?}");
    assert!(resp.ends_with("bare CR in request head\n"), "{resp:?}");
}

#[test]
fn slowloris_gets_408_at_the_handshake_timeout() {
    let srv = start_echo(|o| o.worker.handshake_timeout = std::time::Duration::from_millis(300));
    let t = std::time::Instant::now();
    // `http_exchange` reads until the server closes (and fails after a 10 s read timeout).
    let resp = http_exchange(srv.addr, b"GET /echo HTTP/1.1\r\nHost: x\r\n");
    assert!(
        resp.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "a request that never completes must be answered 408: {resp:?}"
    );
    assert!(resp.contains("Connection: close\r\n"), "{resp}");
    assert!(resp.ends_with("request timeout\n"), "{resp:?}");
    // The same to a HEAD, without content (RFC 9110 9.3.2).
    let resp = http_exchange(srv.addr, b"HEAD /echo HTTP/1.1\r\nHost: x\r\n");
    assert!(
        resp.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{resp:?}"
    );
    assert!(
        resp.ends_with("\r\n\r\n"),
        "a HEAD answer with content: {resp:?}"
    );
    // Before the 5 s default, so the 300 ms setting is what cut it (and 3.7 s to spare for a
    // loaded machine).
    assert!(
        t.elapsed() < std::time::Duration::from_secs(4),
        "closed after {:?}: the 300 ms handshake timeout was not applied",
        t.elapsed()
    );
}

#[test]
fn a_connection_that_sends_nothing_is_closed_without_an_answer() {
    use std::io::Read;
    let srv = start_echo(|o| o.worker.handshake_timeout = std::time::Duration::from_millis(300));
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let t = std::time::Instant::now();
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("the server closes an idle connection at the handshake timeout");
    assert!(got.is_empty(), "no request, no answer: {got:?}");
    // Before the 5 s default (see above).
    assert!(
        t.elapsed() < std::time::Duration::from_secs(4),
        "closed after {:?}: the 300 ms handshake timeout was not applied",
        t.elapsed()
    );
}

/// A server whose built-in echo at `/sub` has `proto_alias` "chat" and one extra header.
fn start_sub() -> TestApp {
    start_app(
        &ws_json(1),
        &lapps_json(
            "./lua/apps",
            r#"{"sub": {"builtin": "echo", "proto_alias": "chat",
                        "extra_headers": {"X-Served-By": "lapps"}}}"#,
        ),
    )
}

#[test]
fn proto_alias_is_announced_only_to_a_client_that_offered_it() {
    let app = start_sub();
    let upgrade = |offer: &str| {
        http_exchange_until_head(
            app.addr,
            &request(
                app.addr,
                "/sub",
                &format!("Sec-WebSocket-Version: 13\r\n{offer}"),
            ),
        )
    };
    let offered = upgrade("Sec-WebSocket-Protocol: other, chat\r\n");
    assert!(offered.starts_with("HTTP/1.1 101"), "{offered}");
    assert!(
        offered.contains("\r\nSec-WebSocket-Protocol: chat\r\n"),
        "{offered}"
    );
    assert!(offered.contains("\r\nX-Served-By: lapps\r\n"), "{offered}");
    for offer in [
        "",
        "Sec-WebSocket-Protocol: other\r\n",
        "Sec-WebSocket-Protocol: Chat\r\n",
    ] {
        let resp = upgrade(offer);
        assert!(resp.starts_with("HTTP/1.1 101"), "{offer:?}: {resp}");
        assert!(
            !resp.contains("Sec-WebSocket-Protocol"),
            "{offer:?}: {resp}"
        );
    }
    // A client that offers no subprotocol (a browser's `new WebSocket(url)`) must fail a 101
    // naming one; tungstenite does, so this round trip proves the answer is acceptable.
    let mut ws = connect(app.addr, "/sub");
    ws.send(tungstenite::Message::text("plain")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("plain"));
}

#[test]
fn a_426_names_the_upgrade_it_requires() {
    let srv = start_echo(|_| {});
    let plain = format!("GET /echo HTTP/1.1\r\nHost: {}\r\n\r\n", srv.addr);
    for req in [
        plain,
        request(srv.addr, "/echo", "Sec-WebSocket-Version: 8\r\n"),
    ] {
        let resp = http_exchange(srv.addr, req.as_bytes());
        assert!(resp.starts_with("HTTP/1.1 426"), "{resp}");
        assert!(resp.contains("\r\nUpgrade: websocket\r\n"), "{resp}");
        assert!(
            resp.contains("\r\nConnection: Upgrade, close\r\n"),
            "{resp}"
        );
        assert!(resp.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{resp}");
    }
}

/// A plain GET (no upgrade) gets 426 only at a path a service serves: elsewhere the 404 an
/// upgrade would get. Every 4xx answer carries a Date (RFC 9110 6.6.1).
#[test]
fn a_plain_get_to_an_unknown_path_gets_404_and_every_4xx_a_date() {
    let srv = start_echo(|_| {});
    let plain = |path: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", srv.addr);
        http_exchange(srv.addr, req.as_bytes())
    };
    for (path, want) in [("/nope", "HTTP/1.1 404 "), ("/echo", "HTTP/1.1 426 ")] {
        let resp = plain(path);
        assert!(resp.starts_with(want), "{path}: {resp}");
        let date = resp
            .lines()
            .find_map(|l| l.strip_prefix("Date: "))
            .unwrap_or_else(|| panic!("no Date: {resp}"));
        assert!(date.len() == 29 && date.ends_with(" GMT"), "{date}");
    }
}

#[test]
fn an_empty_line_before_the_request_line_is_skipped() {
    // RFC 9112 section 2.2; the frame sent in the same write must still be the stream's first.
    use std::io::Write;
    let srv = start_echo(|_| {});
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut bytes = b"\r\n".to_vec();
    bytes.extend_from_slice(upgrade_request(srv.addr, "/echo").as_bytes());
    bytes.extend_from_slice(&frame(true, 0, 1, b"after CRLF", true));
    s.write_all(&bytes).unwrap();
    let head = read_http_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let echoed = read_frame(&mut s).expect("the echo");
    assert_eq!((echoed.opcode, echoed.payload), (1, b"after CRLF".to_vec()));
}

#[test]
fn expect_100_continue_gets_a_100_before_the_101() {
    // RFC 9110 7.8: "the server MUST send a 100 (Continue) response before sending a 101".
    use std::io::Write;
    let srv = start_echo(|_| {});
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut bytes = request(
        srv.addr,
        "/echo",
        "Sec-WebSocket-Version: 13\r\nExpect: 100-Continue\r\n",
    )
    .into_bytes();
    bytes.extend(frame(true, 0, 1, b"after the 100", true));
    s.write_all(&bytes).unwrap();
    assert_eq!(read_http_head(&mut s), "HTTP/1.1 100 Continue\r\n\r\n");
    let head = read_http_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let echo = read_frame(&mut s).expect("the echo");
    assert_eq!((echo.opcode, echo.payload), (1, b"after the 100".to_vec()));
}

#[test]
fn a_long_head_sent_in_small_pieces_is_upgraded_and_the_frame_after_it_echoed() {
    use std::io::Write;
    // Longer than the 1 KiB a leftover is copied around in: the worker appends to it instead.
    let srv = start_echo(|_| {});
    let pad = format!("X-Pad: {}\r\n", "p".repeat(3000));
    let mut bytes = request(
        srv.addr,
        "/echo",
        &format!("Sec-WebSocket-Version: 13\r\n{pad}"),
    )
    .into_bytes();
    bytes.extend(frame(true, 0, 2, b"after the head", true));
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    for piece in bytes.chunks(7) {
        s.write_all(piece).unwrap();
    }
    let head = read_http_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let echo = read_frame(&mut s).expect("the echo");
    assert_eq!(
        (echo.opcode, &echo.payload[..]),
        (2, &b"after the head"[..])
    );
}

#[test]
fn bytes_that_cannot_start_a_request_get_400_at_once() {
    // A TLS ClientHello's first bytes on a ws:// port, and plain binary: no line end ever
    // comes, so only the request line's method can tell (not the 5 s handshake timeout).
    for junk in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"\x00\x01\x02\x03",
    ] {
        // A handshake timeout far beyond the bound below: a loaded machine cannot blur them.
        let srv = start_echo(|o| o.worker.handshake_timeout = std::time::Duration::from_secs(60));
        let t = std::time::Instant::now();
        let resp = http_exchange(srv.addr, junk);
        assert!(resp.starts_with("HTTP/1.1 400 "), "{junk:?}: {resp}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "answered only after {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn a_request_without_host_gets_400_and_a_head_request_a_405_without_content() {
    let srv = start_echo(|_| {});
    let resp = http_exchange(srv.addr, b"GET /echo HTTP/1.1\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    let resp = http_exchange(srv.addr, b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 405 "), "{resp}");
    assert!(
        resp.ends_with("\r\n\r\n"),
        "a HEAD answer with content: {resp:?}"
    );
}

/// SPEC section 5: permessage-deflate is not negotiated. An offer gets a 101 without
/// `Sec-WebSocket-Extensions`, and a frame then sent compressed (RSV1) is a protocol error
/// (RFC 6455 5.2: a reserved bit no extension gave a meaning).
#[test]
fn a_permessage_deflate_offer_is_declined_and_a_compressed_frame_then_fails_with_1002() {
    use std::io::Write;
    let srv = start_echo(|_| {});
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let offer = "Sec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    s.write_all(request(srv.addr, "/echo", offer).as_bytes())
        .unwrap();
    let head = read_http_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
    // Uncompressed frames are served as usual.
    s.write_all(&frame(true, 0, 1, b"plain", true)).unwrap();
    let echo = read_frame(&mut s).expect("the echo");
    assert_eq!(echo.payload, b"plain");
    // "hello" as permessage-deflate would send it, with RSV1 set.
    let deflated = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    s.write_all(&frame(true, 0b100, 1, &deflated, true))
        .unwrap();
    assert_eq!(expect_close(&mut s), Some(1002));
}
