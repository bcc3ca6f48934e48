//! wss:// end to end: the real server (config files, Lua echo) with rustls clients.

#[path = "common/binary.rs"]
mod binary;
mod common;
#[path = "common/tls.rs"]
mod tls_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use binary::{output_within, spawn_binary, wait_line, ONE_SHOT_GUARD};
use common::IO_TIMEOUT;
use tls_common::*;
use tungstenite::Message;

fn echo_round(ws: &mut WssClient, payload: Vec<u8>) {
    let n = payload.len();
    ws.send(Message::Binary(payload.clone().into())).unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert!(b[..] == payload[..], "echo of {n} bytes differs"),
        other => panic!("expected binary, got {other:?}"),
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn wss_echo_through_the_lua_app_from_0_bytes_to_16_mib_beside_a_plain_endpoint() {
    let dir = temp_dir("echo");
    let ca = Ca::new("test CA");
    let (cert, key) = write_pair(&dir, "server", &ca.server("server"));
    let extra = format!(
        r#"{}, "endpoints": [{{ "ip": "127.0.0.1", "port": 0, "tls": false }}]"#,
        tls_json(&cert, &key, None)
    );
    write_config(&dir, &extra, "");
    let app = start_app(&dir);
    let (tls_addr, plain_addr) = (app.local_addrs()[0], app.local_addrs()[1]);
    let cfg = client_config(&ca.pair.cert_der, None);

    let mut ws = wss_connect(tls_addr, "/echo", cfg.clone()).expect("wss connect");
    for n in [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20] {
        echo_round(&mut ws, pattern(n));
    }
    ws.send(Message::Text("hello over tls".into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Text("hello over tls".into()));
    // Pipelined: many messages written before any is read.
    for i in 0..200u32 {
        ws.send(Message::Binary(i.to_be_bytes().to_vec().into()))
            .unwrap();
    }
    for i in 0..200u32 {
        assert_eq!(
            ws.read().unwrap(),
            Message::Binary(i.to_be_bytes().to_vec().into())
        );
    }
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("clean close expected, got {e}"),
        }
    }

    // The plaintext endpoint of the same process still speaks ws://.
    let mut plain = common::connect(plain_addr, "/echo");
    plain.send(Message::Text("plain".into())).unwrap();
    assert_eq!(plain.read().unwrap(), Message::Text("plain".into()));
    app.shutdown();
}

#[test]
fn shutdown_closes_wss_connections_with_1001_and_close_notify() {
    let dir = temp_dir("shutdown");
    let ca = Ca::new("test CA");
    let (cert, key) = write_pair(&dir, "server", &ca.server("server"));
    write_config(&dir, &tls_json(&cert, &key, None), "");
    let app = start_app(&dir);
    let cfg = client_config(&ca.pair.cert_der, None);
    let mut ws = wss_connect(app.local_addrs()[0], "/echo_builtin", cfg).unwrap();
    echo_round(&mut ws, b"x".to_vec());
    let stopper = std::thread::spawn(move || app.shutdown());
    match ws.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected Close 1001, got {other:?}"),
    }
    // After the Close exchange the TLS stream ends with close_notify (a clean EOF), which
    // tungstenite reports as ConnectionClosed; a truncation would be an I/O error.
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("expected a clean TLS close, got {e}"),
        }
    }
    stopper.join().unwrap();
}

#[test]
fn client_certificate_required_accepted_and_rejected() {
    let dir = temp_dir("mtls");
    let ca = Ca::new("test CA");
    let (cert, key) = write_pair(&dir, "server", &ca.server("server"));
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, &ca.pair.cert_pem).unwrap();
    write_config(&dir, &tls_json(&cert, &key, Some(&ca_file)), "");
    let app = start_app(&dir);
    let addr = app.local_addrs()[0];

    let good = ca.client("alice", false);
    let mut ws = wss_connect(addr, "/echo", client_config(&ca.pair.cert_der, Some(&good)))
        .expect("a client with a certificate from the CA is served");
    echo_round(&mut ws, b"mtls".to_vec());

    // No certificate, an expired one, one from another CA: all refused before any HTTP.
    let other_ca = Ca::new("other CA");
    let refused = [
        ("none", client_config(&ca.pair.cert_der, None)),
        (
            "expired",
            client_config(&ca.pair.cert_der, Some(&ca.client("bob", true))),
        ),
        (
            "foreign",
            client_config(&ca.pair.cert_der, Some(&other_ca.client("eve", false))),
        ),
    ];
    for (what, cfg) in refused {
        let res = wss_connect(addr, "/echo", cfg);
        assert!(res.is_err(), "client cert {what}: must be refused");
    }
    // The good client is unaffected.
    echo_round(&mut ws, b"still here".to_vec());
    app.shutdown();
}

#[test]
fn expired_server_certificate_loads_with_a_warning_and_clients_refuse_it() {
    let dir = temp_dir("expired");
    let ca = Ca::new("test CA");
    let (cert, key) = write_pair(&dir, "server", &ca.expired_server("old"));
    let files = lapps::net::tls::TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        ca: None,
        tls13_only: false,
        tls12_record_budget: None,
    };
    let (info, warning) = lapps::net::tls::check(&files).expect("an expired cert still parses");
    assert_eq!(info.subject.as_deref(), Some("old"));
    assert_eq!(info.not_after.as_deref(), Some("2001-01-01 00:00:00 UTC"));
    assert!(warning.expect("a warning").contains("expired"));
    // What --check-config warns of a certificate `pair` (written as NAME.crt/.key).
    let warning_for = |name: &str, pair: &Pair| {
        let (cert, key) = write_pair(&dir, name, pair);
        let files = lapps::net::tls::TlsFiles {
            cert: cert.clone(),
            key,
            ..files.clone()
        };
        let warning = lapps::net::tls::check(&files).unwrap().1;
        (cert.display().to_string(), warning)
    };
    // One that ends within 14 days: told to renew it, with the days left.
    let (soon, warning) = warning_for("soon", &ca.server_ending_in("soon", 5));
    let warning = warning.expect("a warning");
    assert!(
        warning.starts_with(&format!("{soon}: the certificate expires at "))
            && warning.contains(", in 5 days: renew it (a reload reads the renewed files)"),
        "{warning}"
    );
    // One not valid yet (put in place early, or a clock behind): said so, with the wait.
    let (early, warning) = warning_for("early", &ca.server_starting_in("early", 2));
    let warning = warning.expect("a warning");
    assert!(
        warning.starts_with(&format!("{early}: the certificate is not valid before "))
            && warning.ends_with(
                ", in 2 days: clients refuse it until then (is this host's clock right?)"
            ),
        "{warning}"
    );
    // Three weeks: nothing to say.
    assert_eq!(
        warning_for("later", &ca.server_ending_in("later", 21)).1,
        None
    );

    write_config(&dir, &tls_json(&cert, &key, None), "");
    let app = start_app(&dir);
    let Err(err) = wss_connect(
        app.local_addrs()[0],
        "/echo",
        client_config(&ca.pair.cert_der, None),
    ) else {
        panic!("a verifying client refuses an expired certificate");
    };
    assert!(err.contains("Expired") || err.contains("expired"), "{err}");
    app.shutdown();
}

#[test]
fn self_signed_server_certificate_works_for_a_client_that_trusts_it() {
    let dir = temp_dir("selfsigned");
    let own = self_signed_server("self");
    let (cert, key) = write_pair(&dir, "server", &own);
    write_config(&dir, &tls_json(&cert, &key, None), "");
    let app = start_app(&dir);
    let addr = app.local_addrs()[0];
    let mut ws = wss_connect(addr, "/echo", client_config(&own.cert_der, None)).unwrap();
    echo_round(&mut ws, b"self".to_vec());
    // A client trusting some CA instead refuses it.
    let stranger = Ca::new("unrelated");
    assert!(wss_connect(addr, "/echo", client_config(&stranger.pair.cert_der, None)).is_err());
    app.shutdown();
}

/// A wss:// app (Lua echo at /echo) with a certificate from a fresh CA, for the close tests.
fn wss_app(name: &str) -> (lapps::app::App, std::net::SocketAddr, Ca) {
    wss_app_with(name, "")
}

/// [`wss_app`] with more ws.json keys (`, "key": value ...`).
fn wss_app_with(name: &str, ws_extra: &str) -> (lapps::app::App, std::net::SocketAddr, Ca) {
    let dir = temp_dir(name);
    let ca = Ca::new("test CA");
    let (cert, key) = write_pair(&dir, "server", &ca.server("server"));
    write_config(
        &dir,
        &format!("{}{ws_extra}", tls_json(&cert, &key, None)),
        "",
    );
    let app = start_app(&dir);
    let addr = app.local_addrs()[0];
    (app, addr, ca)
}

/// More clients than rustls's default session cache holds (256 entries, two per TLS 1.3
/// handshake) each come back, with TLS 1.3 and with TLS 1.2: every one resumes its session,
/// as the server's tickets carry the state (a reconnect burst after a restart of many clients
/// would otherwise mostly redo full handshakes).
#[test]
fn every_client_of_many_resumes_its_session() {
    const CLIENTS: usize = 300;
    let (app, addr, ca) = wss_app("wss-resumption");
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let configs: Vec<_> = (0..CLIENTS)
            .map(|_| client_config_for(&ca.pair.cert_der, version))
            .collect();
        for cfg in &configs {
            let mut ws = wss_connect(addr, "/echo", cfg.clone()).unwrap();
            // The echo reads the TLS 1.3 tickets, sent before it.
            echo_round(&mut ws, b"first".to_vec());
        }
        let resumed = configs
            .iter()
            .filter(|cfg| {
                let s = tls_connect(addr, (*cfg).clone()).unwrap();
                s.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
            })
            .count();
        assert_eq!(resumed, CLIENTS, "{version:?}");
    }
    app.shutdown();
}

/// A TLS 1.2 session with an AES-GCM suite may send 2^24 records (RFC 8446 5.5), after which
/// rustls ends it and drops what is written: the server closes it with 1001 before (here
/// with a budget of 300 records instead of 2^24 less the reserve), every message it took
/// echoed first. TLS 1.3 (which renews its keys) and ChaCha20 (no such limit) go on.
#[test]
fn a_tls12_session_is_closed_with_1001_before_its_cipher_suite_limit() {
    const BUDGET: u64 = 300;
    let dir = temp_dir("tls12-records");
    let ca = Ca::new("test CA");
    let (cert, key) = write_pair(&dir, "server", &ca.server("server"));
    write_config(&dir, &tls_json(&cert, &key, None), "");
    let app = start_app_with(&dir, |c| c.ws.tls12_record_budget = Some(BUDGET));
    let addr = app.local_addrs()[0];
    let echoes_until_close = |cfg| {
        let mut ws = wss_connect(addr, "/echo", cfg).unwrap();
        let suite = ws.get_ref().conn.negotiated_cipher_suite().unwrap().suite();
        for i in 0..3 * BUDGET {
            ws.send(Message::Binary(i.to_be_bytes().to_vec().into()))
                .unwrap();
            match ws.read().unwrap() {
                Message::Binary(b) => assert_eq!(b[..], i.to_be_bytes(), "{suite:?}"),
                Message::Close(Some(f)) => return (suite, i, Some(u16::from(f.code))),
                other => panic!("{suite:?}: {other:?}"),
            }
        }
        (suite, 3 * BUDGET, None)
    };
    let gcm = echoes_until_close(client_config_for(
        &ca.pair.cert_der,
        &rustls::version::TLS12,
    ));
    // The 101 is the first record: BUDGET - 1 echoes, then the Close.
    assert_eq!(
        gcm,
        (
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            BUDGET - 1,
            Some(1001)
        )
    );
    let tls13 = echoes_until_close(client_config_for(
        &ca.pair.cert_der,
        &rustls::version::TLS13,
    ));
    assert_eq!((tls13.1, tls13.2), (3 * BUDGET, None), "{tls13:?}");
    let mut chacha = rustls::crypto::ring::default_provider();
    chacha.cipher_suites =
        vec![rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256];
    let chacha = echoes_until_close(client_config_with(
        &ca.pair.cert_der,
        &rustls::version::TLS12,
        chacha,
    ));
    assert_eq!((chacha.1, chacha.2), (3 * BUDGET, None), "{chacha:?}");
    app.shutdown();
}

#[test]
fn a_wss_peer_that_shuts_tcp_after_close_still_gets_the_echo() {
    let (app, addr, ca) = wss_app("wss-half-close");
    for i in 0..10 {
        let mut ws = wss_connect(addr, "/echo", client_config(&ca.pair.cert_der, None)).unwrap();
        ws.close(None).unwrap();
        ws.flush().unwrap();
        // A FIN without close_notify, right behind the Close frame.
        ws.get_ref()
            .sock
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        loop {
            match ws.read() {
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!("run {i}: the Close echo was lost: {e}"),
            }
        }
    }
    app.shutdown();
}

#[test]
fn replies_owed_when_a_wss_peer_sends_close_notify_still_go_out() {
    let (app, addr, ca) = wss_app("wss-close-notify");
    for i in 0..10 {
        let mut ws = wss_connect(addr, "/echo", client_config(&ca.pair.cert_der, None)).unwrap();
        // A message for the Lua echo, our Close and close_notify in one go: the echo and the
        // server's Close are still owed when it reads the end of the TLS stream, and both must
        // arrive before its own close_notify (a clean ConnectionClosed).
        ws.send(Message::text("last")).unwrap();
        ws.close(None).unwrap();
        ws.flush().unwrap();
        let s = ws.get_mut();
        s.conn.send_close_notify();
        while s.conn.wants_write() {
            s.conn.write_tls(&mut s.sock).unwrap();
        }
        let mut got = Vec::new();
        loop {
            match ws.read() {
                Ok(m) => got.push(m),
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!("run {i}: {e} after {got:?}"),
            }
        }
        assert!(got.contains(&Message::text("last")), "run {i}: {got:?}");
    }
    app.shutdown();
}

#[test]
fn a_burst_of_tls_handshakes_all_complete_and_the_established_connection_is_served() {
    // 200 connections, then their 200 ClientHellos at once (100 for each of the two workers):
    // more than a worker takes on per iteration (1 ms of handshakes; the rest wait in its
    // handshake queue, their readiness edge already consumed). None may be left behind, and
    // the connection already open is served during the burst.
    // (A debug build signs slowly: the default 5 s to complete an upgrade is lifted.)
    let (app, addr, ca) = wss_app_with("wss-burst", r#", "handshake_timeout_ms": 60000"#);
    let cfg = client_config(&ca.pair.cert_der, None);
    let mut established = wss_connect(addr, "/echo", cfg.clone()).unwrap();
    let tcp: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let burst: Vec<TlsStream> = tcp
        .into_iter()
        .enumerate()
        .map(|(i, t)| tls_hello(t, cfg.clone()).unwrap_or_else(|e| panic!("hello {i}: {e}")))
        .collect();
    echo_round(&mut established, pattern(1000));
    for (i, s) in burst.into_iter().enumerate() {
        finish_and_echo(i, s);
    }
    echo_round(&mut established, pattern(10));
    app.shutdown();
}

/// Burst client `i`: its handshake finished, its upgrade to /echo, one echo; the handshake's
/// kind.
fn finish_and_echo(i: usize, mut s: TlsStream) -> Option<rustls::HandshakeKind> {
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .unwrap_or_else(|e| panic!("handshake {i}: {e}"));
    }
    let kind = s.conn.handshake_kind();
    let mut ws = wss_over(s, "/echo").unwrap_or_else(|e| panic!("upgrade {i}: {e}"));
    echo_round(&mut ws, pattern(i + 1));
    kind
}

#[test]
fn a_burst_of_handshakes_with_a_hello_retry_request_all_complete() {
    // As above, with every client's first ClientHello carrying a key share the server cannot
    // use: each is answered with a HelloRetryRequest, and its second ClientHello (the one
    // that costs the server a key exchange and a signature) waits its turn in the handshake
    // queue like a first one. None may be left behind; the open connection is served.
    let (app, addr, ca) = wss_app_with("wss-hrr", r#", "handshake_timeout_ms": 60000"#);
    let mut established =
        wss_connect(addr, "/echo", client_config(&ca.pair.cert_der, None)).unwrap();
    let cfg = hello_retry_client_config(&ca.pair.cert_der);
    let tcp: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let mut burst: Vec<TlsStream> = tcp
        .into_iter()
        .enumerate()
        .map(|(i, t)| tls_hello(t, cfg.clone()).unwrap_or_else(|e| panic!("hello {i}: {e}")))
        .collect();
    // Every client reads its HelloRetryRequest and sends its second ClientHello before any
    // handshake goes on: the retries arrive as a burst too.
    for (i, s) in burst.iter_mut().enumerate() {
        while !s.conn.wants_write() {
            let n = s.conn.read_tls(&mut s.sock);
            assert!(
                n.as_ref().is_ok_and(|&n| n > 0),
                "client {i}: {n:?} before the retry request"
            );
            s.conn
                .process_new_packets()
                .unwrap_or_else(|e| panic!("hello retry {i}: {e}"));
        }
        while s.conn.wants_write() {
            s.conn.write_tls(&mut s.sock).unwrap();
        }
    }
    echo_round(&mut established, pattern(1000));
    for (i, s) in burst.into_iter().enumerate() {
        assert_eq!(
            finish_and_echo(i, s),
            Some(rustls::HandshakeKind::FullWithHelloRetryRequest),
            "client {i}"
        );
    }
    echo_round(&mut established, pattern(10));
    app.shutdown();
}

#[test]
fn past_max_connections_per_address_a_wss_client_is_closed_before_any_handshake() {
    let (app, addr, ca) = wss_app_with("wss-per-address", r#", "max_connections_per_address": 1"#);
    let cfg = client_config(&ca.pair.cert_der, None);
    let mut first = wss_connect(addr, "/echo", cfg.clone()).unwrap();
    // The second's ClientHello gets no ServerHello: the server closes it unanswered (no
    // signature spent on it).
    let mut second = tls_hello(TcpStream::connect(addr).unwrap(), cfg.clone()).unwrap();
    let mut got = Vec::new();
    let end = second.sock.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "the server sent {} bytes to a refused client",
        got.len()
    );
    assert!(end.is_ok() || end.unwrap_err().kind() == std::io::ErrorKind::ConnectionReset);
    echo_round(&mut first, pattern(100));
    drop(first);
    // Its place comes back once the server has seen it close.
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut again = loop {
        if let Ok(ws) = wss_connect(addr, "/echo", cfg.clone()) {
            break ws;
        }
        assert!(Instant::now() < deadline, "the place never came back");
        std::thread::yield_now();
    };
    echo_round(&mut again, pattern(10));
    app.shutdown();
}

/// The server-wide ACL applies on a wss:// endpoint as on a plain one: a refused client's
/// ClientHello gets no answer (it is closed at accept, before any TLS work), an admitted one
/// is served.
#[test]
fn a_server_acl_on_a_wss_endpoint_refuses_before_any_handshake() {
    let (app, addr, ca) = wss_app_with(
        "wss-acl-refused",
        r#", "acl": { "policy": "deny", "exclude": ["10.0.0.0/8"] }"#,
    );
    let cfg = client_config(&ca.pair.cert_der, None);
    let mut refused = tls_hello(TcpStream::connect(addr).unwrap(), cfg.clone()).unwrap();
    let mut got = Vec::new();
    let end = refused.sock.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "the server sent {} bytes to a refused client",
        got.len()
    );
    assert!(end.is_ok() || end.unwrap_err().kind() == std::io::ErrorKind::ConnectionReset);
    app.shutdown();

    let (app, addr, ca) = wss_app_with(
        "wss-acl-admitted",
        r#", "acl": { "policy": "deny", "exclude": ["127.0.0.1"] }"#,
    );
    let cfg = client_config(&ca.pair.cert_der, None);
    let mut admitted = wss_connect(addr, "/echo", cfg).expect("an excluded address is admitted");
    echo_round(&mut admitted, pattern(100));
    drop(admitted);
    app.shutdown();
}

/// A TCP connection to `addr` whose receive buffer and segment size are small, so that little
/// of what the server sends fits in the kernel while we do not read.
fn narrow_connect(addr: std::net::SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    // SAFETY: a new socket, owned by the TcpStream below (or closed here on failure); every
    // setsockopt and connect gets a pointer to a live value of the size it is told.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let set = |level, name, v: libc::c_int| {
            let rc = libc::setsockopt(
                fd,
                level,
                name,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(rc, 0, "setsockopt {name}");
        };
        set(libc::SOL_SOCKET, libc::SO_RCVBUF, 4096);
        set(libc::IPPROTO_TCP, libc::TCP_MAXSEG, 536);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if rc != 0 {
            libc::close(fd);
            panic!("connect: {}", std::io::Error::last_os_error());
        }
        TcpStream::from_raw_fd(fd)
    }
}

/// The built-in echo's replies still go out when a wss peer that has stopped reading shuts
/// its side: the part rustls holds (the kernel took the rest) counts as queued, as the plain
/// queue does. Ended at once instead, the connection lost up to 64 KiB of them and its
/// close_notify. The peer's narrow window keeps what the kernel takes small; the echo sizes
/// cover the range in which the last bytes are in rustls and none in the queue.
#[test]
fn a_wss_peer_that_shuts_its_side_unread_still_gets_all_the_echo_and_close_notify() {
    let (app, addr, ca) = wss_app("wss-unread-half-close");
    // The kernel takes ~100 KB here at first (the client's 4 KiB window, the server's send
    // buffer, which grows): steps of 16 KiB from 48 KiB to 320 KiB put the last bytes of
    // several echoes in rustls alone wherever that ends up between ~0 and ~300 KB.
    for size in (48usize << 10..=320 << 10).step_by(16 << 10) {
        let tcp = narrow_connect(addr);
        let client = tcp.local_addr().unwrap();
        let tls = tls_over(tcp, client_config(&ca.pair.cert_der, None)).unwrap();
        let mut ws = wss_over(tls, "/echo_builtin").unwrap();
        let payload = pattern(size);
        ws.send(Message::Binary(payload.clone().into())).unwrap();
        // The server has read the message and written what the kernel takes of its echo.
        common::wait_for("the echo to be under way", IO_TIMEOUT, || {
            common::server_unread(addr, client) == Some(0)
                && common::socket_queues(client, addr).is_some_and(|(_, rx)| rx > 0)
        });
        let s = ws.get_mut();
        s.sock.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        let end = s.read_to_end(&mut got);
        assert!(
            end.is_ok(),
            "{size}: {end:?} after {} bytes: no close_notify",
            got.len()
        );
        let header = if size < 65536 { 4 } else { 10 };
        assert_eq!(got.len(), header + size, "{size}: the whole echo frame");
        assert!(got[header..] == payload[..], "{size}: the echo as sent");
    }
    app.shutdown();
}

/// Reads the TLS stream to its end: Ok when it ends with the server's close_notify, the
/// error (UnexpectedEof: "peer closed connection without sending TLS close_notify") when the
/// server just closed TCP.
fn read_to_close_notify(s: &mut TlsStream) -> std::io::Result<()> {
    let mut sink = Vec::new();
    s.read_to_end(&mut sink).map(|_| ())
}

#[test]
fn a_wss_peer_ending_with_close_notify_alone_gets_close_notify_back() {
    let (app, addr, ca) = wss_app("wss-notify-only");
    // The built-in echo owes no replies, so the end of the peer's stream ends the connection
    // at once: without a Close frame, with TLS's own goodbye both ways.
    let mut ws = wss_connect(
        addr,
        "/echo_builtin",
        client_config(&ca.pair.cert_der, None),
    )
    .unwrap();
    echo_round(&mut ws, b"x".to_vec());
    let s = ws.get_mut();
    s.conn.send_close_notify();
    while s.conn.wants_write() {
        s.conn.write_tls(&mut s.sock).unwrap();
    }
    read_to_close_notify(s).expect("the server's close_notify before its FIN");
    app.shutdown();
}

#[test]
fn a_wss_peer_that_never_answers_our_close_gets_close_notify_at_the_close_timeout() {
    // Idle: pinged after 100 ms, closed (1001) 100 ms later; then the close timeout (2 s).
    let (app, addr, ca) = wss_app_with("wss-close-timeout", r#", "idle_timeout_ms": 100"#);
    let mut ws = wss_connect(
        addr,
        "/echo_builtin",
        client_config(&ca.pair.cert_der, None),
    )
    .unwrap();
    // Read below TLS's plaintext without answering anything: the ping, the Close, then the
    // end of the stream, which must be close_notify, not a bare FIN.
    read_to_close_notify(ws.get_mut()).expect("close_notify when the server gives up");
    app.shutdown();
}

/// Reads until EOF; Ok(bytes) for an orderly close, Err for a reset or a timeout.
fn read_until_eof(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn a_plaintext_client_on_the_tls_port_is_closed_cleanly() {
    let dir = temp_dir("plain-on-tls");
    let ca = Ca::new("test CA");
    let (cert, key) = write_pair(&dir, "server", &ca.server("server"));
    write_config(&dir, &tls_json(&cert, &key, None), "");
    let app = start_app(&dir);
    let addr = app.local_addrs()[0];
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let started = Instant::now();
    s.write_all(
        b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let got = read_until_eof(&mut s).expect("an orderly close (FIN), not a reset or a hang");
    assert!(!got.starts_with(b"HTTP/"), "no HTTP answer in plaintext");
    assert!(started.elapsed() < Duration::from_secs(5), "closed at once");
    // The server is still fine for TLS clients.
    let mut ws = wss_connect(addr, "/echo", client_config(&ca.pair.cert_der, None)).unwrap();
    echo_round(&mut ws, b"ok".to_vec());
    app.shutdown();
}

/// A ClientHello offering only TLS 1.0 or 1.1 (legacy_version, no supported_versions).
fn old_client_hello(minor: u8) -> Vec<u8> {
    let mut body = vec![3, minor];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 4, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA-AES128-SHA, AES128-SHA
    body.extend_from_slice(&[1, 0]); // null compression
                                     // What a real old client sends, so that the version is what gets refused: signature
                                     // algorithms (ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256), groups
                                     // (x25519, secp256r1), point formats (uncompressed).
    let ext: &[u8] = &[
        0x00, 0x0d, 0, 8, 0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, //
        0x00, 0x0a, 0, 6, 0, 4, 0x00, 0x1d, 0x00, 0x17, //
        0x00, 0x0b, 0, 2, 1, 0,
    ];
    body.extend_from_slice(&[0, ext.len() as u8]);
    body.extend_from_slice(ext);
    let mut hs = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1, (hs.len() >> 8) as u8, hs.len() as u8];
    rec.extend_from_slice(&hs);
    rec
}

#[test]
fn tls_1_0_and_1_1_are_refused_with_a_protocol_version_alert() {
    let dir = temp_dir("oldtls");
    let ca = Ca::new("test CA");
    let (cert, key) = write_pair(&dir, "server", &ca.server("server"));
    write_config(&dir, &tls_json(&cert, &key, None), "");
    let app = start_app(&dir);
    for minor in [1u8, 2] {
        let mut s = TcpStream::connect(app.local_addrs()[0]).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(&old_client_hello(minor)).unwrap();
        let got = read_until_eof(&mut s).expect("orderly close");
        // One alert record: type 21, level fatal (2), protocol_version (70).
        assert!(got.len() >= 7, "TLS 1.{}: got {got:?}", minor - 1);
        assert_eq!(got[0], 21, "an alert record");
        assert_eq!(&got[5..7], &[2, 70], "fatal protocol_version");
    }
    app.shutdown();
}

/// The original's own ws.json values (4: TLS 1.3, as its files say) load and mean the same.
#[test]
fn the_originals_ws_json_keys_load_and_tls_server_version_4_refuses_tls_1_2() {
    let (app, addr, ca) = wss_app_with(
        "tls13only",
        r#", "tls_server_version": 4, "tls_client_version": 4, "lapps_config_auto_save": true"#,
    );
    let root = ca.pair.cert_der.clone();
    let with = |versions: &[&'static rustls::SupportedProtocolVersion]| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        wss_connect(addr, "/echo_builtin", std::sync::Arc::new(cfg))
    };
    let mut ws = with(&[&rustls::version::TLS13]).expect("TLS 1.3 is served");
    echo_round(&mut ws, b"x".to_vec());
    let Err(err) = with(&[&rustls::version::TLS12]) else {
        panic!("TLS 1.2 is served");
    };
    // The server's refusal itself, not any failure (a crash, a refused connection).
    assert!(
        err.starts_with("tls: ") && err.contains("ProtocolVersion"),
        "expected the protocol_version alert: {err}"
    );
    echo_round(&mut ws, b"still served".to_vec());
    app.shutdown();
}

fn peer_fingerprint(ws: &WssClient) -> String {
    let der = ws.get_ref().conn.peer_certificates().unwrap()[0].clone();
    lapps::net::tls::CertInfo::of(&der).fingerprint
}

#[test]
fn sighup_reload_serves_the_new_certificate_to_new_connections_only() {
    let dir = temp_dir("reload");
    let ca = Ca::new("test CA");
    let one = ca.server("one");
    let (cert, key) = write_pair(&dir, "server", &one);
    write_config(&dir, &tls_json(&cert, &key, None), "");
    let app = start_app(&dir);
    let addr = app.local_addrs()[0];
    let cfg = client_config(&ca.pair.cert_der, None);
    let mut old = wss_connect(addr, "/echo", cfg.clone()).unwrap();
    let fp_one = lapps::net::tls::CertInfo::of(&one.cert_der).fingerprint;
    assert_eq!(peer_fingerprint(&old), fp_one);

    let two = ca.server("two");
    write_pair(&dir, "server", &two);
    app.reload();
    let fp_two = lapps::net::tls::CertInfo::of(&two.cert_der).fingerprint;
    let mut new = wss_connect(addr, "/echo", cfg.clone()).unwrap();
    assert_eq!(
        peer_fingerprint(&new),
        fp_two,
        "new connections see the new cert"
    );
    echo_round(&mut old, b"old connection keeps working".to_vec());
    echo_round(&mut new, b"new connection works".to_vec());

    // A broken key keeps the current certificate in service.
    std::fs::write(&key, "not a key").unwrap();
    app.reload();
    let third = wss_connect(addr, "/echo", cfg).unwrap();
    assert_eq!(peer_fingerprint(&third), fp_two);
    app.shutdown();
}

/// The reload's line names a new client CA even when the served certificate stays.
#[test]
fn a_reload_that_changes_only_the_client_ca_says_so() {
    let dir = temp_dir("reload-ca");
    let ca = Ca::new("test CA");
    let (cert, key) = write_pair(&dir, "server", &ca.server("server"));
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, &ca.pair.cert_pem).unwrap();
    let tls = lapps::net::tls::TlsContext::load(lapps::net::tls::TlsFiles {
        cert,
        key,
        ca: Some(ca_file.clone()),
        tls13_only: false,
        tls12_record_budget: None,
    })
    .unwrap();
    let same = tls.reload().unwrap();
    assert!(
        same.starts_with("certificate unchanged") && !same.contains("CA"),
        "{same}"
    );
    std::fs::write(&ca_file, &Ca::new("another CA").pair.cert_pem).unwrap();
    let change = tls.reload().unwrap();
    assert!(
        change.starts_with("certificate unchanged") && change.ends_with("; client CA changed"),
        "{change}"
    );
}

#[test]
fn bad_certificate_files_are_reported_with_the_file_and_the_reason() {
    let dir = temp_dir("badfiles");
    let ca = Ca::new("test CA");
    let (cert, key) = write_pair(&dir, "server", &ca.server("server"));
    let (_, other_key) = write_pair(&dir, "other", &ca.server("other"));
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let missing = dir.join("missing.pem");
    let check = |cert: &std::path::Path, key: &std::path::Path| {
        lapps::net::tls::check(&lapps::net::tls::TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: None,
            tls13_only: false,
            tls12_record_budget: None,
        })
        .expect_err("refused")
    };
    let e = check(&missing, &key);
    assert_eq!(e.file, missing);
    assert!(e.reason.contains("cannot read"), "{e}");
    let e = check(&garbage, &key);
    assert_eq!(e.file, garbage);
    assert!(e.reason.contains("no CERTIFICATE"), "{e}");
    let e = check(&cert, &garbage);
    assert_eq!(e.file, garbage);
    let e = check(&cert, &other_key);
    assert_eq!(
        e.file, other_key,
        "a key that does not match the certificate: {e}"
    );
    // Both files named: the fault may be the certificate file's order. No rustls debug text.
    assert!(
        e.reason.contains("does not match the first certificate of")
            && e.reason.contains(&cert.display().to_string())
            && !e.reason.contains("KeyMismatch"),
        "{e}"
    );
    // Which setting named the file, in what the operator reads.
    assert!(
        e.to_string().starts_with(&format!(
            "{} (tls_certificates.key): does not match",
            other_key.display()
        )),
        "{e}"
    );
    // A v1 certificate (what `openssl x509 -req` makes without -extfile): named as one.
    let pair = ca.server("server");
    let v1 = dir.join("v1.crt");
    std::fs::write(&v1, pem_certificate(&without_version(&pair.cert_der))).unwrap();
    let v1_key = dir.join("v1.key");
    std::fs::write(&v1_key, &pair.key_pem).unwrap();
    let e = check(&v1, &v1_key);
    assert_eq!(e.file, v1);
    assert!(
        e.reason
            .starts_with("an X.509 v1 certificate, which TLS cannot use: it must be v3"),
        "{e}"
    );
    // A PEM key block whose body is no key ring can use: the key file is named.
    let damaged = dir.join("damaged.key");
    std::fs::write(
        &damaged,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = check(&cert, &damaged);
    assert_eq!(e.file, damaged, "{e}");
    assert!(e.reason.contains("unusable private key"), "{e}");
    assert!(
        e.reason.ends_with(
            "(usable: RSA of 2048 to 4096 bits, not RSA-PSS; ECDSA on P-256 or P-384; Ed25519)"
        ),
        "{e}"
    );
    let encrypted = dir.join("encrypted.key");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = check(&cert, &encrypted);
    assert_eq!(e.file, encrypted);
    assert!(e.reason.contains("encrypted"), "{e}");
    // OpenSSL's legacy form: a key block with encryption headers.
    std::fs::write(
        &encrypted,
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
         DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n\
         -----END RSA PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = check(&cert, &encrypted);
    assert_eq!(e.file, encrypted);
    assert!(e.reason.contains("encrypted"), "{e}");
    // A damaged block says what is damaged, not the parser's debug form.
    let pem = std::fs::read_to_string(&cert).unwrap();
    let cut = dir.join("cut.crt");
    std::fs::write(&cut, &pem[..pem.len() / 2]).unwrap();
    let e = check(&cut, &key);
    assert_eq!(e.file, cut);
    assert_eq!(
        e.reason,
        "not valid PEM: its \"CERTIFICATE\" block has no END line (is the file cut short?)"
    );
    // DER, where PEM is expected: named, with the command that converts it.
    let der = dir.join("server.der");
    std::fs::write(&der, &ca.server("der").cert_der).unwrap();
    let e = check(&der, &key);
    assert!(
        e.reason
            .starts_with("no CERTIFICATE block in the PEM file; it looks like DER (binary)"),
        "{e}"
    );
    // A byte order mark before the first BEGIN line does not hide the certificate.
    let bom = dir.join("bom.crt");
    std::fs::write(&bom, format!("\u{feff}{pem}")).unwrap();
    let bom_key = dir.join("bom.key");
    std::fs::write(
        &bom_key,
        format!("\u{feff}{}", std::fs::read_to_string(&key).unwrap()),
    )
    .unwrap();
    lapps::net::tls::check(&lapps::net::tls::TlsFiles {
        cert: bom,
        key: bom_key,
        ca: None,
        tls13_only: false,
        tls12_record_budget: None,
    })
    .expect("a certificate and key after a byte order mark");

    // --check-config says the same and fails.
    write_config(&dir, &tls_json(&cert, &other_key, None), "");
    let out = output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_lapps"))
            .args(["--check-config", "-c"])
            .arg(&dir),
        ONE_SHOT_GUARD,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("other.key"), "{stderr}");
    // And accepts the matching pair, naming the certificate.
    write_config(&dir, &tls_json(&cert, &key, None), "");
    let out = output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_lapps"))
            .args(["--check-config", "-c"])
            .arg(&dir),
        ONE_SHOT_GUARD,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("CN=server"));
}

#[test]
fn a_plain_http_client_and_one_that_distrusts_the_certificate_are_named_in_the_log() {
    let dir = temp_dir("plain-http-log");
    let ca = Ca::new("test CA");
    let (cert, key) = write_pair(&dir, "server", &ca.server("server"));
    write_config(&dir, &tls_json(&cert, &key, None), "");
    let (mut child, addr, log) = spawn_binary(&dir, |_| {});
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET /echo?token=secret HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_until_eof(&mut s).expect("an orderly close");
    let line = wait_line(&log, "closing 127.0.0.1:");
    assert!(
        line.ends_with(
            ": plain HTTP on a TLS listener (use https:// or wss://): \"GET /echo?... HTTP/1.1\""
        ),
        "{line}"
    );
    // A client that does not trust the certificate: rustls's alert name, and what it means.
    let stranger = Ca::new("another CA");
    assert!(wss_connect(addr, "/echo", client_config(&stranger.pair.cert_der, None)).is_err());
    let line = wait_line(&log, "closing 127.0.0.1:");
    assert!(
        line.contains("TLS error: received fatal alert: UnknownCA (the client does not trust"),
        "{line}"
    );
    // SAFETY: kill with our own child's pid and a valid signal number.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert!(child.wait_exit(Duration::from_secs(15)).success());
}

/// The binary with `-c dir`, its address from the "listening on" line, and its log lines.
#[test]
fn a_real_sighup_reloads_the_certificate_of_the_running_binary() {
    let dir = temp_dir("sighup-binary");
    let ca = Ca::new("test CA");
    let one = ca.server("one");
    let (cert, key) = write_pair(&dir, "server", &one);
    write_config(&dir, &tls_json(&cert, &key, None), "");
    let (mut child, addr, log) = spawn_binary(&dir, |_| {});
    let cfg = client_config(&ca.pair.cert_der, None);
    let mut old = wss_connect(addr, "/echo_builtin", cfg.clone()).unwrap();
    assert_eq!(
        peer_fingerprint(&old),
        lapps::net::tls::CertInfo::of(&one.cert_der).fingerprint
    );

    let two = ca.server("two");
    write_pair(&dir, "server", &two);
    // SAFETY: kill with our own child's pid and a valid signal number.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGHUP) };
    // "reload: <what changed>" is logged once the new certificate is in service.
    let line = wait_line(&log, "reload: ");
    assert!(line.contains("two"), "{line}");
    let mut new = wss_connect(addr, "/echo_builtin", cfg).unwrap();
    assert_eq!(
        peer_fingerprint(&new),
        lapps::net::tls::CertInfo::of(&two.cert_der).fingerprint
    );
    echo_round(&mut old, b"old connection keeps working".to_vec());
    echo_round(&mut new, b"new connection works".to_vec());
    drop((old, new));
    let done = wait_line(&log, "reload done: ");
    assert!(
        done.contains(" INFO ") && done.contains("certificate read again; "),
        "{done}"
    );
    // New paths in ws.json: a restart's business; the reload says which files it read.
    let (cert3, key3) = write_pair(&dir, "three", &ca.server("three"));
    write_config(&dir, &tls_json(&cert3, &key3, None), "");
    // SAFETY: as above.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGHUP) };
    let lines = binary::lines_until(&log, "reload done: ");
    let named = format!(
        "the certificate was read again from the files the server started with ({}, {}), \
         not from the new tls_certificates",
        cert.display(),
        key.display()
    );
    assert!(lines.iter().any(|l| l.ends_with(&named)), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ws.json changed (tls_certificates)")),
        "{lines:#?}"
    );
    let cfg = client_config(&ca.pair.cert_der, None);
    let still = wss_connect(addr, "/echo_builtin", cfg).unwrap();
    assert_eq!(
        peer_fingerprint(&still),
        lapps::net::tls::CertInfo::of(&two.cert_der).fingerprint
    );
    drop(still);
    // A key that does not load: the reload's last line says so, as an error.
    std::fs::write(&key, "not a key").unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGHUP) };
    let done = wait_line(&log, "reload done: ");
    assert!(
        done.contains(" ERROR ") && done.contains("certificate NOT reloaded"),
        "{done}"
    );
    // SAFETY: as above.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = child.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}

/// A reload stuck in a new service's `init()` does not hold up the next certificate: the
/// SIGHUP that finds it running reloads the certificate at once (a certbot hook's `systemctl
/// reload` weeks later must not leave the old one to expire).
#[test]
fn a_certificate_reload_does_not_wait_behind_a_stuck_redeploy() {
    let dir = temp_dir("sighup-stuck");
    let ca = Ca::new("test CA");
    let (cert, key) = write_pair(&dir, "server", &ca.server("one"));
    write_config(&dir, &tls_json(&cert, &key, None), "");
    let apps = dir.join("apps");
    std::fs::create_dir_all(apps.join("stuck")).unwrap();
    // A standalone service whose init() waits for a message that never comes.
    std::fs::write(
        apps.join("stuck/stuck.lua"),
        "local s = {}\ns.init = function() mqr:receive(\"tls.never\") end\n\
         s.run = function() end\nreturn s\n",
    )
    .unwrap();
    let (mut child, addr, log) = spawn_binary(&dir, |_| {});
    let lapps_json = std::fs::read_to_string(dir.join("lapps.json")).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lua/apps");
    std::fs::write(
        dir.join("lapps.json"),
        lapps_json
            .replace(&root.display().to_string(), &apps.display().to_string())
            .replace(
                r#""echo": { "protocol": "raw", "request_target": "/echo", "instances": 2 },"#,
                r#""stuck": { "standalone": true, "preload": ["mqr"] },"#,
            ),
    )
    .unwrap();
    let pid = child.0.id() as i32;
    // SAFETY: kill with our own child's pid and a valid signal number.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    // Its certificate part done, the reload goes on to start "stuck", and stays there.
    let line = wait_line(&log, "reload: ");
    assert!(line.contains("certificate unchanged"), "{line}");
    let two = ca.server("two");
    write_pair(&dir, "server", &two);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let line = wait_line(&log, "reload: ");
    assert!(line.contains("now") && line.contains("two"), "{line}");
    let new = wss_connect(
        addr,
        "/echo_builtin",
        client_config(&ca.pair.cert_der, None),
    )
    .unwrap();
    assert_eq!(
        peer_fingerprint(&new),
        lapps::net::tls::CertInfo::of(&two.cert_der).fingerprint
    );
    drop(new);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_sighup_that_loads_an_expired_certificate_warns_like_the_start_up() {
    let dir = temp_dir("sighup-expired");
    let ca = Ca::new("test CA");
    let (cert, key) = write_pair(&dir, "server", &ca.server("fresh"));
    write_config(&dir, &tls_json(&cert, &key, None), "");
    let (mut child, _addr, log) = spawn_binary(&dir, |_| {});

    // A renewal gone wrong puts an expired pair in place.
    write_pair(&dir, "server", &ca.expired_server("stale"));
    // SAFETY: kill with our own child's pid and a valid signal number.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGHUP) };
    let lines = binary::lines_until(&log, "reload: ");
    assert!(lines.last().unwrap().contains("stale"), "{lines:?}");
    let warning = lines
        .iter()
        .find(|l| l.contains("expired at"))
        .unwrap_or_else(|| panic!("no expiry warning with the reload: {lines:?}"));
    assert!(
        warning.contains("WARN")
            && warning.contains(&cert.display().to_string())
            && warning.contains("2001-01-01 00:00:00 UTC"),
        "{warning}"
    );
    // SAFETY: as above.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = child.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}

/// One DER element of `b`: (its tag, its header's length, its whole length).
fn der_element(b: &[u8]) -> (u8, usize, usize) {
    let first = b[1];
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        let len = b[2..2 + n]
            .iter()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        (2 + n, len)
    };
    (b[0], header, header + len)
}

/// `tag` and `content` as one DER element.
fn der_wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The certificate `der` as X.509 v1: its TBSCertificate without the version field (the
/// signature no longer matches, which loading a server's own certificate does not check).
fn without_version(der: &[u8]) -> Vec<u8> {
    let (_, h, _) = der_element(der);
    let body = &der[h..];
    let (_, th, tlen) = der_element(body);
    let tbs = &body[th..tlen];
    let (tag, _, vlen) = der_element(tbs);
    assert_eq!(tag, 0xa0, "rcgen writes the version");
    let mut cert = der_wrap(0x30, &tbs[vlen..]);
    cert.extend_from_slice(&body[tlen..]);
    der_wrap(0x30, &cert)
}

/// `der` in a PEM CERTIFICATE block.
fn pem_certificate(der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                text.push('=');
            }
        }
    }
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}
