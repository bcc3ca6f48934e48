//! IP ACLs and allowed origins through the real server (config files): a server-wide refusal
//! closes the socket right after accept (no HTTP answer at all), a service refusal is a 403 in
//! the handshake; IPv4 and IPv6, single addresses and CIDR ranges.

mod common;
#[path = "common/tls.rs"]
mod tls_common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::IO_TIMEOUT;
use tls_common::{start_app, temp_dir, write_config};

fn upgrade_request(path: &str, origin: Option<&str>) -> String {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{origin}\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// The server's first answer line, or "" when it closed without answering (a refusal at
/// accept may also show as a reset). A server that neither answers nor closes fails the test:
/// silence until the read timeout is not a refusal at accept.
fn first_line(addr: SocketAddr, path: &str, origin: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).expect("the kernel accepts the TCP connection");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = s.write_all(upgrade_request(path, origin).as_bytes());
    let mut got = Vec::new();
    let mut b = [0u8; 512];
    loop {
        match s.read(&mut b) {
            Ok(0) => break,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("neither an answer nor a close within {IO_TIMEOUT:?}")
            }
            Err(e) => panic!("reading the answer: {e}"),
            Ok(n) => {
                got.extend_from_slice(&b[..n]);
                if got.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().unwrap_or("").to_string()
}

fn server_acl(name: &str, acl: &str, v6: bool) -> (lapps::app::App, std::path::PathBuf) {
    let dir = temp_dir(name);
    let endpoints = if v6 {
        r#", "endpoints": [{ "ip": "::1", "port": 0 }]"#
    } else {
        ""
    };
    write_config(&dir, &format!(r#", "acl": {acl}{endpoints}"#), "");
    (start_app(&dir), dir)
}

#[test]
fn server_acl_deny_with_an_excluded_address_admits_only_that_address() {
    let (app, _) = server_acl(
        "deny-ex",
        r#"{ "policy": "deny", "exclude": ["127.0.0.1"] }"#,
        false,
    );
    let addr = app.local_addrs()[0];
    assert!(first_line(addr, "/echo_builtin", None).starts_with("HTTP/1.1 101"));
    app.shutdown();

    let (app, _) = server_acl(
        "deny-other",
        r#"{ "policy": "deny", "exclude": ["10.0.0.0/8", "::1"] }"#,
        false,
    );
    assert_eq!(first_line(app.local_addrs()[0], "/echo_builtin", None), "");
    app.shutdown();
}

#[test]
fn server_acl_allow_with_an_excluded_range_closes_right_after_accept() {
    let (app, _) = server_acl(
        "allow-ex",
        r#"{ "policy": "allow", "exclude": ["127.0.0.0/8"] }"#,
        false,
    );
    assert_eq!(
        first_line(app.local_addrs()[0], "/echo_builtin", None),
        "",
        "no HTTP answer at all: closed at accept"
    );
    app.shutdown();
}

fn has_ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn server_acl_ipv6_address_and_prefix() {
    if !has_ipv6_loopback() {
        common::cannot_run("this machine has no IPv6 loopback");
        return;
    }
    let (app, _) = server_acl(
        "v6-deny",
        r#"{ "policy": "deny", "exclude": ["::1"] }"#,
        true,
    );
    let (v4, v6) = (app.local_addrs()[0], app.local_addrs()[1]);
    assert!(v6.is_ipv6());
    assert!(first_line(v6, "/echo_builtin", None).starts_with("HTTP/1.1 101"));
    assert_eq!(first_line(v4, "/echo_builtin", None), "");
    app.shutdown();

    let (app, _) = server_acl(
        "v6-allow",
        r#"{ "policy": "allow", "exclude": ["::1/128"] }"#,
        true,
    );
    let (v4, v6) = (app.local_addrs()[0], app.local_addrs()[1]);
    assert_eq!(first_line(v6, "/echo_builtin", None), "");
    assert!(first_line(v4, "/echo_builtin", None).starts_with("HTTP/1.1 101"));
    app.shutdown();
}

#[test]
fn service_acl_refuses_with_403_and_admits_excluded_ranges() {
    let dir = temp_dir("service-acl");
    write_config(
        &dir,
        "",
        r#", "closed": { "builtin": "echo", "request_target": "/closed",
                         "acl": { "policy": "deny", "exclude": ["10.0.0.0/8", "fd00::/8"] } },
             "local": { "builtin": "echo", "request_target": "/local",
                        "acl": { "policy": "deny", "exclude": ["127.0.0.0/8"] } },
             "v4only": { "builtin": "echo", "request_target": "/v4only",
                         "acl": { "policy": "allow", "exclude": ["::1/128"] } }"#,
    );
    let app = start_app(&dir);
    let addr = app.local_addrs()[0];
    assert!(first_line(addr, "/closed", None).starts_with("HTTP/1.1 403"));
    assert!(first_line(addr, "/local", None).starts_with("HTTP/1.1 101"));
    assert!(first_line(addr, "/v4only", None).starts_with("HTTP/1.1 101"));
    // Other services are unaffected by one service's ACL.
    assert!(first_line(addr, "/echo_builtin", None).starts_with("HTTP/1.1 101"));
    app.shutdown();
}

#[test]
fn allowed_origins_refuse_other_and_missing_origins_with_403() {
    let dir = temp_dir("origins");
    write_config(
        &dir,
        "",
        r#", "browser": { "builtin": "echo", "request_target": "/browser",
                          "allowed_origins": ["https://app.example"] }"#,
    );
    let app = start_app(&dir);
    let addr = app.local_addrs()[0];
    let good = first_line(addr, "/browser", Some("https://app.example"));
    assert!(good.starts_with("HTTP/1.1 101"), "{good}");
    // Scheme and host compare without case (RFC 6454 4).
    let upper = first_line(addr, "/browser", Some("HTTPS://App.Example"));
    assert!(upper.starts_with("HTTP/1.1 101"), "{upper}");
    let bad = first_line(addr, "/browser", Some("https://evil.example"));
    assert!(bad.starts_with("HTTP/1.1 403"), "{bad}");
    assert!(first_line(addr, "/browser", None).starts_with("HTTP/1.1 403"));
    // A service without the list takes any origin.
    assert!(
        first_line(addr, "/echo_builtin", Some("https://evil.example")).starts_with("HTTP/1.1 101")
    );
    app.shutdown();
}

/// A TCP connection to `addr` from the local address `from` (any 127.0.0.0/8 address is this
/// host's on Linux).
fn connect_from(from: std::net::Ipv4Addr, addr: SocketAddr) -> TcpStream {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    let local = nix::sys::socket::SockaddrIn::from(std::net::SocketAddrV4::new(from, 0));
    nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&sock), &local).expect("bind");
    let SocketAddr::V4(to) = addr else {
        panic!("an IPv4 server address")
    };
    let to = nix::sys::socket::SockaddrIn::from(to);
    nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&sock), &to).expect("connect");
    // SAFETY: the descriptor is a connected TCP socket that `sock` gives up.
    let s = unsafe { TcpStream::from_raw_fd(sock.into_raw_fd()) };
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// The upgrade's status line over `s`, with what follows it (the 503's reason is its body).
fn upgrade_answer(mut s: TcpStream) -> (String, TcpStream) {
    s.write_all(upgrade_request("/echo", None).as_bytes())
        .unwrap();
    let head = common::read_http_head(&mut s);
    (head, s)
}

#[test]
fn max_connections_per_address_refuses_the_next_one_with_503_and_counts_each_address_apart() {
    let dir = temp_dir("per-address");
    write_config(&dir, r#", "max_connections_per_address": 2"#, "");
    let app = start_app(&dir);
    let addr = app.local_addrs()[0];
    let one: std::net::Ipv4Addr = "127.0.0.1".parse().unwrap();
    let two: std::net::Ipv4Addr = "127.0.0.2".parse().unwrap();
    let (h1, first) = upgrade_answer(connect_from(one, addr));
    let (h2, _second) = upgrade_answer(connect_from(one, addr));
    assert!(h1.starts_with("HTTP/1.1 101") && h2.starts_with("HTTP/1.1 101"));
    // The third from 127.0.0.1 is refused; one from 127.0.0.2 is not.
    let (h3, mut third) = upgrade_answer(connect_from(one, addr));
    assert!(h3.starts_with("HTTP/1.1 503"), "{h3}");
    let mut body = String::new();
    let _ = third.read_to_string(&mut body);
    assert!(
        body.contains("too many connections from this address"),
        "{body}"
    );
    let (h, _other) = upgrade_answer(connect_from(two, addr));
    assert!(h.starts_with("HTTP/1.1 101"), "{h}");
    // The refused one held no place, and a closed one gives its place back (once the server
    // has seen it close: until then, 503).
    drop(first);
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    let _kept = loop {
        let (h, s) = upgrade_answer(connect_from(one, addr));
        if h.starts_with("HTTP/1.1 101") {
            break s;
        }
        assert!(h.starts_with("HTTP/1.1 503"), "{h}");
        assert!(
            std::time::Instant::now() < deadline,
            "the closed connection's place never came back"
        );
        std::thread::yield_now();
    };
    // ... and that place is the only one: the next is refused again.
    let (h, _s) = upgrade_answer(connect_from(one, addr));
    assert!(h.starts_with("HTTP/1.1 503"), "{h}");
    app.shutdown();
}

/// SPEC section 8: a server-wide refusal happens at accept, before any byte of a request. The
/// client sends nothing, and the handshake timeout is far longer than the read timeout: only
/// a close at accept ends the read in time.
#[test]
fn a_server_acl_refusal_closes_a_connection_that_has_sent_nothing() {
    let dir = temp_dir("acl-silent");
    write_config(
        &dir,
        r#", "handshake_timeout_ms": 600000, "acl": { "policy": "deny", "exclude": ["10.0.0.0/8"] }"#,
        "",
    );
    let app = start_app(&dir);
    let mut s = TcpStream::connect(app.local_addrs()[0]).expect("the kernel accepts it");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("the server sent {n} bytes: {:?}", &b[..n]),
        Err(e) => panic!("not closed at accept: {e}"),
    }
    app.shutdown();
}
