//! cws through the real parts: the benchmark example against the server's Lua echo, and a
//! wss:// round trip against a rustls + tungstenite server with an rcgen certificate.
#[path = "common/mod.rs"]
mod common;
#[path = "common/lua_host.rs"]
mod host;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use host::{next_text as next, *};
use lapps::app::App;
use lapps::config::Config;
use lapps::service::lua::ServiceSpec;
use lapps::service::mqr::{registry, Queue};
use lapps::service::registry::Registry;

fn scratch(name: &str) -> PathBuf {
    host::scratch("cws", name)
}

/// A standalone service `name` whose app file is `src`, with cws, mqr, nap and time.
fn app_in(dir: &Path, name: &str, src: &str) -> ServiceSpec {
    let mut s = write_app(dir, name, src);
    s.standalone = true;
    s.preload = vec!["cws".into(), "mqr".into(), "nap".into(), "time".into()];
    s
}

fn lua_str(s: &str) -> String {
    format!("{s:?}")
}

/// The server with the Lua echo at /echo, on an ephemeral port.
fn echo_app() -> App {
    let r = root();
    let ws = r#"{"ip": "127.0.0.1", "port": 0, "workers": {"workers": 1}}"#;
    let lapps = format!(
        r#"{{"directories": {{"applications": {}, "lib": {}}},
            "services": {{"echo": {{"protocol": "raw", "request_target": "/echo"}}}}}}"#,
        lua_str(&r.join("lua/apps").display().to_string()),
        lua_str(&r.join("lua/lib").display().to_string())
    );
    let cfg = Config::from_strs(&r, ("ws.json", ws), ("lapps.json", &lapps), &r).unwrap();
    App::start(&cfg).unwrap()
}

#[test]
fn the_benchmark_app_reports_a_non_zero_rate_against_the_lua_echo() {
    let app = echo_app();
    let addr = app.local_addrs()[0];
    let dir = scratch("bench");
    let bench = root().join("lua/apps/benchmark/benchmark.lua");
    let src = format!(
        "benchmark_config = {{ url = {}, connections = 8, report_queue = \"bench.rate\" }}\n\
         return dofile({})\n",
        lua_str(&format!("ws://{addr}/echo")),
        lua_str(&bench.display().to_string())
    );
    let rate = registry().open("bench.rate", 64);
    let reg = Registry::start(vec![app_in(&dir, "bench", &src)], hub(1)).unwrap();
    // The first report covers the connection set-up; the second one a full second of echoes.
    let rates: Vec<f64> = (0..2).map(|_| next(&rate).parse().unwrap()).collect();
    assert!(rates[1] > 0.0, "rates {rates:?}");
    println!("benchmark rates (messages/s, debug build): {rates:?}");
    let t = Instant::now();
    reg.shutdown();
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "the benchmark stops on must_stop()"
    );
    app.shutdown();
}

/// A rustls server configuration with a fresh self-signed certificate for 127.0.0.1, and that
/// certificate's PEM file (in `dir`).
fn tls_server_config(dir: &Path) -> (Arc<rustls::ServerConfig>, PathBuf) {
    tls_server_config_as(dir, rcgen::IsCa::NoCa)
}

/// [`tls_server_config`] with a self-signed certificate that is a CA or not (`is_ca`).
fn tls_server_config_as(dir: &Path, is_ca: rcgen::IsCa) -> (Arc<rustls::ServerConfig>, PathBuf) {
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.is_ca = is_ca;
    let signing_key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&signing_key).unwrap();
    let pem = dir.join("ca.pem");
    std::fs::write(&pem, cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    (Arc::new(cfg), pem)
}

/// A TLS echo server (rustls + tungstenite) with a fresh self-signed certificate for
/// 127.0.0.1; returns its address and the certificate's PEM file.
fn tls_echo_server(dir: &Path) -> (SocketAddr, PathBuf) {
    tls_echo_server_as(dir, rcgen::IsCa::NoCa)
}

/// [`tls_echo_server`] with a certificate that is a CA or not (`is_ca`).
fn tls_echo_server_as(dir: &Path, is_ca: rcgen::IsCa) -> (SocketAddr, PathBuf) {
    let (cfg, pem) = tls_server_config_as(dir, is_ca);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let cfg = Arc::clone(&cfg);
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(cfg).unwrap();
                let Ok(mut ws) = tungstenite::accept(rustls::StreamOwned::new(conn, tcp)) else {
                    return;
                };
                while let Ok(m) = ws.read() {
                    if (m.is_text() || m.is_binary()) && ws.send(m).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, pem)
}

const WSS_PROBE: &str = r#"
local out = "cws.wss"
local function report(s) assert(mqr:post(out, s)) end
local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
local p = {}
p.run = function()
  local seen = 0
  local h, err = cws:new(URL, {
    ca_file = CA,
    onopen = function(h)
      report("open")
      assert(cws:send(h, "hello"))
      assert(cws:send(h, "\0\1\2\255", 2))
      local ok, e = cws:send(h, "\255", 1)
      report("text check " .. tostring(ok) .. " " .. tostring(e))
    end,
    onmessage = function(h, m, op)
      seen = seen + 1
      report("message " .. op .. " " .. (op == 1 and m or hex(m)))
      if seen == 2 then assert(cws:close(h, 1000)) end
    end,
    onerror = function(h, e) report("error " .. e) end,
    onclose = function(h, code)
      report("close " .. code)
      local ok, e = cws:send(h, "late")
      report("after close " .. tostring(ok) .. " " .. tostring(e))
    end,
  })
  if not h then report("new failed " .. err) end
  -- Not trusted: a CA file with another certificate than the server's.
  local h2, err2 = cws:new(URL, {
    ca_file = OTHER_CA,
    onerror = function(_, e) report("untrusted refused: " .. e) end,
    onclose = function(_, code, reason) report("untrusted close " .. code .. " " .. string.format("%q", reason)) end,
  })
  if not h2 then report("untrusted new failed: " .. err2) end
  -- No ca_file: the system bundle, which does not hold our certificate either (or no bundle).
  local h3, err3 = cws:new(URL, {
    onerror = function(_, e) report("default refused: " .. e) end,
    onclose = function(_, code) report("default close " .. code) end,
  })
  if not h3 then report("default refused: " .. err3) report("default close 1006") end
  local b, berr = cws:new("http://example/", {})
  report("bad url " .. tostring(b) .. " " .. berr)
  while not must_stop() do cws:eventLoop(0.1) end
end
return p
"#;

#[test]
fn a_misspelt_or_mistyped_option_raises_and_names_it() {
    let dir = scratch("options");
    // Nothing listens at port 1: no option error may wait for a connection.
    let src = r#"
local p = {}
p.init = function() end
p.run = function()
  local url = "ws://127.0.0.1:1/x"
  local out = {}
  for _, opts in ipairs({
    {onOpen = function() end},
    {max_message_size = "abc"},
    {idle_timeout = {}},
    {ca_file = true},
    {[1] = "x"},
  }) do
    out[#out + 1] = select(2, pcall(cws.new, cws, url, opts))
  end
  out[#out + 1] = select(2, pcall(cws.new, cws, 7))
  mqr:post("cws.options", table.concat(out, "\n"))
  while not must_stop() do nap:new():sleep(0.05) end
end
return p
"#;
    let out = registry().open("cws.options", 4);
    let reg = Registry::start(vec![app_in(&dir, "options", src)], hub(1)).unwrap();
    let known = "(the options are onopen, onmessage, onerror, onclose, ca_file, insecure, \
                 max_message_size, idle_timeout, protocols, headers)";
    assert_eq!(
        next(&out),
        [
            format!("cws:new: unknown option 'onOpen' {known}"),
            "cws:new: option max_message_size must be a number, got the string \"abc\"".into(),
            "cws:new: option idle_timeout must be a number, got table".into(),
            "cws:new: option ca_file must be a string, got boolean".into(),
            format!("cws:new: unknown option key of type number {known}"),
            "cws:new: url must be a string, got number".into(),
        ]
        .join("\n")
    );
    reg.shutdown();
}

#[test]
fn an_event_loop_timeout_beyond_any_clock_is_clamped_not_a_crash() {
    let app = echo_app();
    let dir = scratch("huge-wait");
    let src = format!(
        r#"URL = {}
local p = {{}}
p.init = function() end
p.run = function()
  assert(cws:new(URL, {{}}))
  -- math.huge: the longest wait, capped (it was "bad timeout"). The round ends at the first
  -- event (the connection becoming writable: the upgrade request goes).
  local ok1, n1 = pcall(cws.eventLoop, cws, math.huge)
  -- 2^63 - 1024 seconds: an integer to Lua, far past what the clock can add. The round
  -- still ends at the next event (the upgrade answer).
  local ok, n = pcall(cws.eventLoop, cws, 2^63 - 1024)
  mqr:post("cws.huge", "returned " .. tostring(ok1) .. " " .. type(n1) .. " "
    .. tostring(ok) .. " " .. type(n))
  while not must_stop() do cws:eventLoop(0.1) end
end
return p
"#,
        lua_str(&format!("ws://{}/echo", app.local_addrs()[0]))
    );
    let out = registry().open("cws.huge", 4);
    let reg = Registry::start(vec![app_in(&dir, "huge_wait", &src)], hub(1)).unwrap();
    assert_eq!(next(&out), "returned true number true number");
    reg.shutdown();
    app.shutdown();
}

#[test]
fn wss_round_trip_with_a_trusted_certificate_and_refusal_without_one() {
    let dir = scratch("wss");
    let (addr, pem) = tls_echo_server(&dir);
    // Another CA under another name: no chain from the server's certificate leads to it.
    let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other
        .distinguished_name
        .push(rcgen::DnType::CommonName, "not the server's CA");
    other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = other
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let other_pem = dir.join("other-ca.pem");
    std::fs::write(&other_pem, other.pem()).unwrap();
    let src = format!(
        "URL = {}\nCA = {}\nOTHER_CA = {}\n{WSS_PROBE}",
        lua_str(&format!("wss://{addr}/")),
        lua_str(&pem.display().to_string()),
        lua_str(&other_pem.display().to_string())
    );
    let out = registry().open("cws.wss", 64);
    let reg = Registry::start(vec![app_in(&dir, "wss_probe", &src)], hub(1)).unwrap();
    let want: BTreeSet<String> = [
        "open",
        "text check nil invalid UTF-8",
        "message 1 hello",
        "message 2 000102ff",
        "close 1000",
        "after close nil closed",
        "untrusted refused",
        "untrusted close 1006 \"\"",
        "default refused",
        "default close 1006",
        "bad url nil the URL must start with ws:// or wss://",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut got = BTreeSet::new();
    while got.len() < want.len() {
        let line = next(&out);
        // A refusal must be for the certificate (what rustls reports for a chain to no trusted
        // root), not any failure; without a system bundle cws:new itself says so.
        let line = if let Some(why) = line.strip_prefix("untrusted refused: ") {
            assert!(
                why.contains("invalid peer certificate") && why.contains("UnknownIssuer"),
                "refused for another reason than the certificate: {why:?}"
            );
            assert!(why.contains("give it as ca_file"), "no hint: {why:?}");
            "untrusted refused".to_string()
        } else if let Some(why) = line.strip_prefix("default refused: ") {
            assert!(
                (why.contains("invalid peer certificate") && why.contains("UnknownIssuer"))
                    || why.contains("no CA bundle found"),
                "refused for another reason than the certificate: {why:?}"
            );
            "default refused".to_string()
        } else {
            line
        };
        assert!(
            want.contains(&line),
            "unexpected report {line:?} (so far {got:?})"
        );
        got.insert(line);
    }
    reg.shutdown();
}

/// A server whose own certificate is a CA certificate (what `openssl req -x509` makes by
/// default), given as `ca_file`: refused, and `onerror` says why in words rather than with
/// webpki's variant name.
#[test]
fn a_server_certificate_that_is_a_ca_is_refused_in_words() {
    let dir = scratch("wss-ca-as-server");
    let is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let (addr, pem) = tls_echo_server_as(&dir, is_ca);
    let src = format!(
        r#"local out = "cws.ca_as_server"
local p = {{}}
p.run = function()
  local h, err = cws:new({}, {{
    ca_file = {},
    onopen = function() mqr:post(out, "open") end,
    onerror = function(_, e) mqr:post(out, "error " .. e) end,
    onclose = function(_, code) mqr:post(out, "close " .. code) end,
  }})
  if not h then mqr:post(out, "new failed " .. err) end
  while not must_stop() do cws:eventLoop(0.1) end
end
return p
"#,
        lua_str(&format!("wss://{addr}/")),
        lua_str(&pem.display().to_string())
    );
    let out = registry().open("cws.ca_as_server", 4);
    let reg = Registry::start(vec![app_in(&dir, "ca_as_server", &src)], hub(1)).unwrap();
    assert_eq!(
        next(&out),
        "error tls: invalid peer certificate: the server's certificate is a CA certificate, \
         which a server may not use as its own (a self-signed one made with `openssl req -x509` \
         is a CA unless made with `-addext basicConstraints=critical,CA:FALSE`; see ca_file in \
         docs/lua-api.md)"
    );
    assert_eq!(next(&out), "close 1006");
    reg.shutdown();
}

/// A CA file replaced on disk is read again: the next connection trusts the new certificates
/// (a rotated CA without a restart), and no longer the old ones.
#[test]
fn a_ca_file_rotated_on_disk_is_read_again_for_the_next_connection() {
    let dir = scratch("wss-rotate");
    let (addr, pem) = tls_echo_server(&dir);
    let trusted = std::fs::read(&pem).unwrap();
    let ca = dir.join("rotating.pem");
    std::fs::write(&ca, &trusted).unwrap();
    let src = format!(
        r#"URL, CA = {}, {}
local p = {{}}
p.run = function()
  local function connect()
    local done
    assert(cws:new(URL, {{
      ca_file = CA,
      onopen = function(h) done = "open"; cws:close(h) end,
      onerror = function(_, e) done = done or ("refused: " .. e) end,
    }}))
    while not done and not must_stop() do cws:eventLoop(0.05) end
    assert(mqr:post("cws.rotate", done))
  end
  connect()
  mqr:receive("cws.rotate.go")
  connect()
  while not must_stop() do cws:eventLoop(0.1) end
end
return p
"#,
        lua_str(&format!("wss://{addr}/")),
        lua_str(&ca.display().to_string())
    );
    let out = registry().open("cws.rotate", 4);
    let go = registry().open("cws.rotate.go", 4);
    let reg = Registry::start(vec![app_in(&dir, "wss_rotate", &src)], hub(1)).unwrap();
    assert_eq!(next(&out), "open");
    // Another CA now: the server's certificate no longer leads to a trusted root.
    let (_, other_pem) = tls_server_config(&scratch("wss-rotate-other"));
    std::fs::write(&ca, std::fs::read(other_pem).unwrap()).unwrap();
    go.post(b"go".to_vec().into_boxed_slice(), Duration::ZERO, &|| false)
        .unwrap();
    let second = next(&out);
    assert!(
        // Another self-signed certificate of the same subject: the chain is refused for its
        // signature.
        second.starts_with("refused: ") && second.contains("invalid peer certificate"),
        "{second}"
    );
    reg.shutdown();
}

/// One frame from the client: (opcode, masked, unmasked payload).
fn read_client_frame(s: &mut std::net::TcpStream) -> (u8, bool, Vec<u8>) {
    use std::io::Read;
    let mut h = [0u8; 2];
    s.read_exact(&mut h).unwrap();
    assert!(h[1] & 0x7f < 126, "short test frames only");
    let mut mask = [0u8; 4];
    let masked = h[1] & 0x80 != 0;
    if masked {
        s.read_exact(&mut mask).unwrap();
    }
    let mut p = vec![0u8; usize::from(h[1] & 0x7f)];
    s.read_exact(&mut p).unwrap();
    for (i, b) in p.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    (h[0] & 0x0f, masked, p)
}

/// A scripted WebSocket server's side of one connection: accepts it and answers the upgrade.
fn accept_upgrade(listener: &TcpListener) -> std::net::TcpStream {
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    answer_upgrade(&mut s);
    s
}

/// A cws client connecting to `wss://addr/x` (trusting `ca`, or any certificate when None),
/// driven until it is done: the client, its keys and its events.
fn wss_client_until_done(
    addr: SocketAddr,
    ca: Option<&Path>,
) -> (
    lapps::service::cws::Client,
    lapps::service::cws::KeyPool,
    Vec<String>,
) {
    let opts = lapps::service::cws::TlsOptions {
        ca_file: ca.map(|p| p.to_string_lossy().into_owned()),
        insecure: ca.is_none(),
    };
    let tls = lapps::service::cws::client_config(&opts).unwrap();
    let mut keys = lapps::service::cws::KeyPool::default();
    let u = lapps::service::cws::url::parse(&format!("wss://{addr}/x")).unwrap();
    let mut c = lapps::service::cws::Client::connect(
        &u,
        Some(tls),
        &mut keys,
        1 << 20,
        &Default::default(),
    )
    .unwrap();
    let mut events: Vec<String> = Vec::new();
    drive(&mut c, &mut keys, &mut events, |c, _| c.is_done());
    (c, keys, events)
}

/// A cws client connecting to `ws://addr/x` (1 MiB messages), and the key pool it masks with.
fn client_to(addr: SocketAddr) -> (lapps::service::cws::Client, lapps::service::cws::KeyPool) {
    use lapps::service::cws::{url, Client, KeyPool};
    let mut keys = KeyPool::default();
    let u = url::parse(&format!("ws://{addr}/x")).unwrap();
    let c = Client::connect(&u, None, &mut keys, 1 << 20, &Default::default()).unwrap();
    (c, keys)
}

/// [`client_to`], driven until it is open: the client, its keys and its events so far.
fn open_client(
    addr: SocketAddr,
) -> (
    lapps::service::cws::Client,
    lapps::service::cws::KeyPool,
    Vec<String>,
) {
    let (mut c, mut keys) = client_to(addr);
    let mut events = Vec::new();
    drive(&mut c, &mut keys, &mut events, |_, ev| !ev.is_empty());
    assert_eq!(events, ["Open"]);
    (c, keys, events)
}

/// Drives `c` with poll(2) until `done` holds, collecting its events (20 s guard).
fn drive(
    c: &mut lapps::service::cws::Client,
    keys: &mut lapps::service::cws::KeyPool,
    events: &mut Vec<String>,
    mut done: impl FnMut(&lapps::service::cws::Client, &[String]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(c, events) {
        assert!(Instant::now() < deadline, "events so far: {events:?}");
        let mut pfd = libc::pollfd {
            fd: c.fd(),
            events: c.interest(),
            revents: 0,
        };
        // SAFETY: one valid pollfd, exclusively borrowed for the call.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        c.ready(pfd.revents, keys, &mut |ev| events.push(format!("{ev:?}")));
        // No callbacks to wait for here: a violation behind messages fails at once.
        c.settle(keys, &mut |ev| events.push(format!("{ev:?}")));
        c.tick(Instant::now(), keys, &mut |ev| {
            events.push(format!("{ev:?}"))
        });
    }
}

#[test]
fn a_server_that_closes_during_the_upgrade_is_reported_as_such() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        common::read_http_head(&mut s);
        // Half a response, then the end of the connection.
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")
            .unwrap();
    });
    let (mut c, mut keys) = client_to(addr);
    let mut events: Vec<String> = Vec::new();
    drive(&mut c, &mut keys, &mut events, |c, _| c.is_done());
    server.join().unwrap();
    assert_eq!(
        events,
        [
            "Error(\"the server closed the connection before its upgrade response ended\")",
            "Closed(1006)"
        ]
    );
}

#[test]
fn interim_answers_before_the_101_are_skipped() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // RFC 9110 15.2: a client parses 1xx answers it did not ask for.
        answer_upgrade_after(
            &mut s,
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
        );
        s.write_all(&server_frame(1, b"after the 101")).unwrap();
        read_client_frame(&mut s)
    });
    let (mut c, mut keys) = client_to(addr);
    let mut events: Vec<String> = Vec::new();
    drive(&mut c, &mut keys, &mut events, |_, ev| ev.len() >= 2);
    let message = format!("{:?}", b"after the 101".as_slice());
    assert_eq!(events, ["Open".into(), format!("Message({message}, Text)")]);
    c.close(1000, &mut keys, &mut |ev| events.push(format!("{ev:?}")))
        .unwrap();
    let (opcode, masked, payload) = server.join().unwrap();
    assert_eq!((opcode, masked, payload), (8, true, vec![0x03, 0xe8]));
}

#[test]
fn a_server_that_closes_during_the_tls_handshake_is_reported_as_such() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The ClientHello (all of it: unread bytes would make the end a reset), then the end
        // of the connection, without an alert.
        let mut head = [0u8; 5];
        std::io::Read::read_exact(&mut s, &mut head).unwrap();
        let mut hello = vec![0u8; usize::from(u16::from_be_bytes([head[3], head[4]]))];
        std::io::Read::read_exact(&mut s, &mut hello).unwrap();
        (head[0], hello[0])
    });
    let (_, _, events) = wss_client_until_done(addr, None);
    assert_eq!(server.join().unwrap(), (0x16, 1), "a TLS ClientHello");
    assert_eq!(
        events,
        [
            "Error(\"the server closed the connection during the TLS handshake\")",
            "Closed(1006)"
        ]
    );
}

#[test]
fn a_tls_server_that_ends_without_answering_the_upgrade_is_reported_as_such() {
    let dir = scratch("tls-no-answer");
    let (cfg, pem) = tls_server_config(&dir);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ServerConnection::new(cfg).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // The whole request (unread bytes would make the end a reset), then the end of TCP
        // without an answer, an alert or close_notify.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            std::io::Read::read_exact(&mut tls, &mut byte).unwrap();
            head.push(byte[0]);
        }
        drop(tls);
        String::from_utf8(head).unwrap()
    });
    let (_, _, events) = wss_client_until_done(addr, Some(&pem));
    assert!(server.join().unwrap().starts_with("GET /x HTTP/1.1\r\n"));
    assert_eq!(
        events,
        [
            "Error(\"the server closed the TLS connection without answering the upgrade, \
             perhaps because it wants a client certificate\")",
            "Closed(1006)"
        ]
    );
}

#[test]
fn the_client_masks_its_frames_answers_pings_and_completes_the_close_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        s.write_all(&[0x89, 3, b'a', b'b', b'c']).unwrap();
        let pong = read_client_frame(&mut s);
        s.write_all(&[0x81, 2, b'h', b'i']).unwrap();
        let reply = read_client_frame(&mut s);
        s.write_all(&[0x88, 2, 0x03, 0xe8]).unwrap();
        let close = read_client_frame(&mut s);
        (pong, reply, close)
    });
    let (mut c, mut keys) = client_to(addr);
    let mut events: Vec<String> = Vec::new();
    drive(&mut c, &mut keys, &mut events, |_, ev| {
        ev.iter().any(|e| e.starts_with("Message"))
    });
    c.send(lapps::ws::Opcode::Text, b"yo", &mut keys).unwrap();
    c.flush().unwrap();
    drive(&mut c, &mut keys, &mut events, |c, _| c.is_done());
    assert_eq!(
        events,
        ["Open", "Message([104, 105], Text)", "Closed(1000)"]
    );
    let (pong, reply, close) = server.join().unwrap();
    assert_eq!(pong, (0xA, true, b"abc".to_vec()));
    assert_eq!(reply, (0x1, true, b"yo".to_vec()));
    assert_eq!(close, (0x8, true, vec![0x03, 0xe8]));
}

/// A server that sends its last message and its Close and then resets the connection (as one
/// does that closes with our bytes unread; here SO_LINGER 0): the message and the close code
/// came before the reset and count, although the read after them fails.
#[test]
fn what_arrived_before_a_reset_is_delivered_with_the_servers_close_code() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        s.write_all(&[0x81, 3, b'b', b'y', b'e', 0x88, 2, 0x03, 0xf1])
            .unwrap();
        common::close_with_reset(s);
    });
    let (mut c, mut keys) = client_to(addr);
    let mut events: Vec<String> = Vec::new();
    // Until the upgrade request is out (waiting for the answer only) ...
    drive(&mut c, &mut keys, &mut events, |c, _| {
        c.interest() == libc::POLLIN
    });
    // ... and the server has answered, sent its last frames and reset: the client reads all
    // of it, then the reset, in one turn.
    server.join().unwrap();
    drive(&mut c, &mut keys, &mut events, |c, _| c.is_done());
    assert_eq!(
        events,
        ["Open", "Message([98, 121, 101], Text)", "Closed(1009)"]
    );
}

/// After failing the connection the client sends its Close and reads until the server ends
/// the TCP connection: RFC 6455 7.1.1, the server closes first, so that it holds TIME_WAIT
/// and not the client (whose ports a client making many connections would run out of).
/// Closing the socket at once instead would answer what the server sends meanwhile with a
/// reset, which can discard the Close before the server has read it.
#[test]
fn a_client_that_fails_the_connection_lets_the_server_close_first() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        let ends = (s.local_addr().unwrap(), s.peer_addr().unwrap());
        // A reserved opcode: the client fails the connection with 1002.
        s.write_all(&[0x83, 0]).unwrap();
        let close = read_client_frame(&mut s);
        let before_ours = what_comes_before_our_fin(&mut s);
        let mut b = [0u8; 8];
        // More from the server, then its end of stream: on loopback a reset answers the
        // write at once, and the shutdown then finds the connection gone.
        let ended = s
            .write_all(&[0x81, 2, b'n', b'o'])
            .and_then(|()| s.shutdown(std::net::Shutdown::Write))
            .map_err(|e| e.kind());
        let at_the_end = s.read(&mut b).map_err(|e| e.kind());
        (close, before_ours, ended, at_the_end, ends)
    });
    let (mut c, mut keys) = client_to(addr);
    let mut events: Vec<String> = Vec::new();
    drive(&mut c, &mut keys, &mut events, |c, _| c.is_done());
    drop(c);
    assert_eq!(events.last().map(String::as_str), Some("Closed(1002)"));
    let (close, before_ours, ended, at_the_end, (server_end, client_end)) = server.join().unwrap();
    assert_eq!(close, (0x8, true, 1002u16.to_be_bytes().to_vec()));
    assert_eq!(
        ended,
        Ok(()),
        "what the server sent after the Close was read, not reset"
    );
    assert_the_server_closed_first(before_ours, at_the_end, server_end, client_end);
}

/// A scripted server's read once it has the client's Close (and close_notify), given the time
/// a client that would end TCP first needs to do so: its FIN would come right behind them.
/// A client that waits for the server's end gives nothing (a timeout).
fn what_comes_before_our_fin(s: &mut std::net::TcpStream) -> Result<usize, std::io::ErrorKind> {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut b = [0u8; 64];
    let r = s.read(&mut b).map_err(|e| e.kind());
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    r
}

/// What a scripted server saw once it had the client's Close: nothing for a while
/// (`before_ours`: no FIN), then, after its own end of TCP, the client's (`at_the_end`); and
/// the server's socket, which sent the first FIN, holds TIME_WAIT, the client's not.
fn assert_the_server_closed_first(
    before_ours: Result<usize, std::io::ErrorKind>,
    at_the_end: Result<usize, std::io::ErrorKind>,
    server_end: SocketAddr,
    client_end: SocketAddr,
) {
    assert!(
        before_ours.is_err_and(|k| matches!(
            k,
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )),
        "the client ended TCP before the server: {before_ours:?}"
    );
    assert_eq!(
        at_the_end,
        Ok(0),
        "the client ends its side after the server"
    );
    const TIME_WAIT: u8 = 6;
    assert_ne!(
        common::socket_state(client_end, server_end),
        Some(TIME_WAIT)
    );
    assert_eq!(
        common::socket_state(server_end, client_end),
        Some(TIME_WAIT)
    );
}

/// Over wss:// as well: a server whose Close and close_notify come in one read still ends
/// TCP first (rustls reads nothing past the close_notify; the client then waits for the
/// end of TCP on the socket itself).
#[test]
fn over_tls_the_server_ends_tcp_first_too() {
    use std::io::Read;
    let dir = scratch("tls-close-order");
    let (cfg, pem) = tls_server_config(&dir);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (tcp, client_end) = listener.accept().unwrap();
        let server_end = tcp.local_addr().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ServerConnection::new(cfg).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        answer_upgrade(&mut tls);
        // Our Close and our close_notify, in one write.
        tls.conn.writer().write_all(&[0x88, 2, 0x03, 0xe8]).unwrap();
        tls.conn.send_close_notify();
        while tls.conn.wants_write() {
            tls.conn.write_tls(&mut tls.sock).unwrap();
        }
        // The client's Close reply, then its close_notify (a TLS end of stream).
        let mut reply = [0u8; 8];
        tls.read_exact(&mut reply).unwrap();
        let mut rest = Vec::new();
        let after = tls.read_to_end(&mut rest).map_err(|e| e.kind());
        let before_ours = what_comes_before_our_fin(&mut tls.sock);
        let mut b = [0u8; 8];
        tls.sock.shutdown(std::net::Shutdown::Write).unwrap();
        let at_the_end = tls.sock.read(&mut b).map_err(|e| e.kind());
        (
            reply,
            after,
            before_ours,
            at_the_end,
            (server_end, client_end),
        )
    });
    let (c, _, events) = wss_client_until_done(addr, Some(&pem));
    drop(c);
    assert_eq!(events, ["Open", "Closed(1000)"]);
    let (reply, after, before_ours, at_the_end, (server_end, client_end)) = server.join().unwrap();
    assert_eq!(
        (reply[0], &reply[1..2]),
        (0x88, &[0x82][..]),
        "a masked Close reply"
    );
    assert_eq!(after, Ok(0), "then the client's close_notify");
    assert_the_server_closed_first(before_ours, at_the_end, server_end, client_end);
}

/// Sets `fd`'s socket buffer `opt` (SO_SNDBUF, SO_RCVBUF) to `bytes`: small buffers keep the
/// kernels from holding megabytes a slow reader has not read.
fn small_buffer(fd: std::os::fd::RawFd, opt: libc::c_int, bytes: libc::c_int) {
    // SAFETY: `bytes` is a live c_int and its size is passed with it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &bytes as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

/// Our Close waits behind an upload the server reads slowly (~1.3 MB/s: longer than the 5 s
/// close timeout): while the server keeps taking our bytes the close is not given up, and
/// ends with the server's Close, not 1006.
#[test]
fn a_close_behind_an_upload_a_server_reads_slowly_waits_while_it_reads() {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    small_buffer(listener.as_raw_fd(), libc::SO_RCVBUF, 64 * 1024); // inherited by accept
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        let mut frames = 0;
        while let Some((f, _)) = common::read_any_frame(&mut s) {
            if f.opcode == 8 {
                s.write_all(&[0x88, 2, 0x03, 0xe8]).unwrap();
                return (frames, f.payload);
            }
            frames += 1;
            // A slow reader, not a synchronisation: each frame of 64 KiB takes it 50 ms.
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no Close after {frames} frames");
    });
    let (mut c, mut keys, mut events) = open_client(addr);
    small_buffer(c.fd(), libc::SO_SNDBUF, 64 * 1024);
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..128 {
        c.send(lapps::ws::Opcode::Binary, &chunk, &mut keys)
            .unwrap();
    }
    c.close(1000, &mut keys, &mut |ev| events.push(format!("{ev:?}")))
        .unwrap();
    drive(&mut c, &mut keys, &mut events, |c, _| c.is_done());
    assert_eq!(events, ["Open", "Closed(1000)"]);
    assert_eq!(server.join().unwrap(), (128, vec![0x03, 0xe8]));
}

#[test]
fn the_close_reply_queued_behind_unsent_data_is_still_written() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        // Not reading until the client has more queued than the sockets hold.
        go_rx.recv().unwrap();
        s.write_all(&[0x88, 2, 0x03, 0xe8]).unwrap();
        let mut last = None;
        while let Some((f, _)) = common::read_any_frame(&mut s) {
            last = Some(f.opcode);
        }
        last
    });
    let (mut c, mut keys, mut events) = open_client(addr);
    // Until the sockets (however large the host's buffers) hold no more: something is queued.
    let chunk = vec![7u8; 256 * 1024];
    for _ in 0..60 {
        c.send(lapps::ws::Opcode::Binary, &chunk, &mut keys)
            .unwrap();
        c.flush().unwrap();
        if c.backlog() > 0 {
            break;
        }
    }
    assert!(
        c.backlog() > 0,
        "the sockets took all 15 MiB: nothing is queued"
    );
    go_tx.send(()).unwrap();
    // Closed is reported at once; the client then stays until its last bytes are out.
    drive(&mut c, &mut keys, &mut events, |c, _| c.is_done());
    assert_eq!(events, ["Open", "Closed(1000)"]);
    // Done: the socket goes, and the server reads its EOF (not its 10 s read timeout).
    drop(c);
    assert_eq!(
        server.join().unwrap(),
        Some(0x8),
        "the last frame is our Close"
    );
}

#[test]
fn a_server_that_pings_without_reading_cannot_grow_the_clients_queue_without_bound() {
    use lapps::service::cws::MAX_BACKLOG;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let flood = 48 << 20;
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        let mut ping = vec![0x89, 125];
        ping.extend_from_slice(&[b'p'; 125]);
        let pings: Vec<u8> = ping
            .iter()
            .copied()
            .cycle()
            .take(flood / 127 * 127)
            .collect();
        s.write_all(&pings).unwrap();
        // Then a message: once the client has it, it has read every ping.
        s.write_all(&[0x81, 3, b'e', b'n', b'd']).unwrap();
        s
    });
    let (mut c, mut keys) = client_to(addr);
    let mut events = Vec::new();
    let mut most = 0;
    drive(&mut c, &mut keys, &mut events, |c, ev| {
        most = most.max(c.backlog());
        ev.iter().any(|e| e.starts_with("Message"))
    });
    let _server_side = server.join().unwrap();
    assert!(
        most <= MAX_BACKLOG + 131,
        "{most} bytes of pongs queued for a server that does not read"
    );
}

#[test]
fn after_its_close_the_client_answers_no_ping() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        let close = read_client_frame(&mut s);
        // Pings after the client's Close, then the Close reply: every frame it sends after
        // its Close breaks RFC 6455 5.5.1.
        s.write_all(&[0x89, 1, b'1', 0x89, 1, b'2', 0x88, 2, 0x03, 0xe8])
            .unwrap();
        let mut after = Vec::new();
        while let Some((f, _)) = common::read_any_frame(&mut s) {
            after.push(f.opcode);
        }
        (close, after)
    });
    let (mut c, mut keys, mut events) = open_client(addr);
    c.close(1000, &mut keys, &mut |ev| events.push(format!("{ev:?}")))
        .unwrap();
    drive(&mut c, &mut keys, &mut events, |c, _| c.is_done());
    drop(c);
    assert_eq!(events, ["Open", "Closed(1000)"]);
    let (close, after) = server.join().unwrap();
    assert_eq!(close, (0x8, true, vec![0x03, 0xe8]));
    assert!(
        after.is_empty(),
        "frames after the client's Close: {after:?}"
    );
}

/// An attempt that timed out while its TCP connect was pending is over for the app: a connect
/// that completes afterwards must not send the upgrade request.
#[test]
fn a_connect_that_completes_after_its_timeout_sends_nothing() {
    use std::io::Read;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (mut c, mut keys) = client_to(addr);
    let mut events: Vec<String> = Vec::new();
    // The deadline passes before the client has seen its connect complete.
    c.tick(
        Instant::now() + Duration::from_secs(3600),
        &mut keys,
        &mut |ev| events.push(format!("{ev:?}")),
    );
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0].starts_with("Error("), "{events:?}");
    assert_eq!(events[1], "Closed(1006)");
    assert!(c.is_done(), "nothing of the attempt is left to send");
    // Now the connect is seen complete; then the client goes.
    c.ready(libc::POLLOUT, &mut keys, &mut |ev| {
        events.push(format!("{ev:?}"))
    });
    assert_eq!(events.len(), 2, "{events:?}");
    drop(c);
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert!(
        got.is_empty(),
        "sent after the attempt failed: {:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn a_message_that_arrives_with_the_servers_close_is_delivered_before_onclose() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        // One write: the last message and the Close (with its reason) reach the client in the
        // same read.
        s.write_all(b"\x81\x03bye\x88\x0f\x0f\xa1token expired")
            .unwrap();
        common::read_any_frame(&mut s).map(|(f, _)| f.opcode)
    });
    let dir = scratch("goodbye");
    let src = format!(
        r#"URL = {}
local p = {{}}
p.init = function() end
local function report(s) assert(mqr:post("cws.goodbye", s)) end
p.run = function()
  assert(cws:new(URL, {{
    onopen = function() report("open") end,
    onmessage = function(_, m) report("message " .. m) end,
    onclose = function(_, code, reason) report("close " .. code .. " " .. reason) end,
  }}))
  while not must_stop() do cws:eventLoop(0.05) end
end
return p
"#,
        lua_str(&format!("ws://{addr}/"))
    );
    let out = registry().open("cws.goodbye", 8);
    let reg = Registry::start(vec![app_in(&dir, "goodbye", &src)], hub(1)).unwrap();
    assert_eq!(next(&out), "open");
    assert_eq!(next(&out), "message bye");
    assert_eq!(next(&out), "close 4001 token expired");
    assert_eq!(server.join().unwrap(), Some(0x8));
    reg.shutdown();
}

#[test]
fn the_upgrade_offers_the_apps_subprotocols_and_header_fields_and_onopen_gets_the_choice() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (head, key) = read_upgrade_request(&mut s);
        write!(
            s,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Protocol: chat\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            lapps::ws::handshake::accept_key(&key)
        )
        .unwrap();
        s.write_all(&[0x88, 2, 0x03, 0xe8]).unwrap();
        let _ = common::read_any_frame(&mut s);
        head
    });
    let dir = scratch("offer");
    let src = format!(
        r#"URL = {}
local p = {{}}
p.init = function() end
local function report(s) assert(mqr:post("cws.offer", s)) end
p.run = function()
  assert(cws:new(URL, {{
    protocols = {{ "v2.chat", "chat" }},
    headers = {{ Authorization = "Bearer t0ken", ["X-Trace"] = 7 }},
    onopen = function(_, protocol) report("open " .. tostring(protocol)) end,
    onclose = function(_, code) report("close " .. code) end,
  }}))
  -- What the request could not carry: refused at once, nothing sent.
  report(table.concat({{
    select(2, cws:new(URL, {{ protocols = "a b" }})),
    select(2, cws:new(URL, {{ protocols = {{ "chat", "chat" }} }})),
    select(2, cws:new(URL, {{ headers = {{ Host = "elsewhere" }} }})),
    select(2, cws:new(URL, {{ headers = {{ ["X-A"] = "1\r\nX-Injected: 1" }} }})),
    select(2, cws:new(URL, {{ headers = {{ ["X-B"] = "caf\233" }} }})),
    select(2, pcall(cws.new, cws, URL, {{ protocols = 7 }})),
    select(2, pcall(cws.new, cws, URL, {{ headers = {{ "v" }} }})),
  }}, "\n"))
  while not must_stop() do cws:eventLoop(0.05) end
end
return p
"#,
        lua_str(&format!("ws://{addr}/"))
    );
    let out = registry().open("cws.offer", 8);
    let reg = Registry::start(vec![app_in(&dir, "offer", &src)], hub(1)).unwrap();
    assert_eq!(
        next(&out),
        [
            "bad protocols: \"a b\" is not a subprotocol name (a token: letters, digits and \
             !#$%&'*+-.^_`|~)",
            "bad protocols: \"chat\" is offered twice",
            "bad headers: Host is set by the client itself",
            "bad headers: the value of X-A has a control character (CR, LF, NUL or the like)",
            "bad headers: the value of X-B is not UTF-8",
            "cws:new: option protocols must be a string or an array of strings, got number",
            "cws:new: the keys of option headers must be strings, got number",
        ]
        .join("\n")
    );
    assert_eq!(next(&out), "open chat");
    assert_eq!(next(&out), "close 1000");
    let head = server.join().unwrap();
    assert!(
        head.contains(
            "Sec-WebSocket-Protocol: v2.chat, chat\r\nAuthorization: Bearer t0ken\r\n\
             X-Trace: 7\r\nUser-Agent: lapps-cws\r\n\r\n"
        ),
        "{head}"
    );
    reg.shutdown();
}

#[test]
fn the_client_tries_each_resolved_address_until_one_answers() {
    use lapps::service::cws::{url, Client, KeyPool};
    // A port bound but not listening: connecting to it is refused, and (held until the end
    // of the test) no other test's ephemeral bind can take it meanwhile.
    let holder = bound_not_listening();
    let refused = holder.1;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        s.write_all(&[0x81, 2, b'h', b'i']).unwrap();
        s
    });
    let mut keys = KeyPool::default();
    let u = url::parse(&format!("ws://{addr}/x")).unwrap();
    let addrs = vec![refused, refused, addr];
    let mut c =
        Client::connect_addrs(addrs, &u, None, &mut keys, 1 << 20, &Default::default()).unwrap();
    let mut events: Vec<String> = Vec::new();
    drive(&mut c, &mut keys, &mut events, |_, ev| {
        ev.iter()
            .any(|e| e.starts_with("Message") || e.starts_with("Closed"))
    });
    assert_eq!(events, ["Open", "Message([104, 105], Text)"]);
    drop(server.join().unwrap());

    // When every address refuses, the error names the last one tried.
    let mut events: Vec<String> = Vec::new();
    match Client::connect_addrs(
        vec![refused, refused],
        &u,
        None,
        &mut keys,
        1 << 20,
        &Default::default(),
    ) {
        Err(e) => events.extend([format!("Error({e:?})"), "Closed(1006)".into()]),
        Ok(mut c) => drive(&mut c, &mut keys, &mut events, |c, _| c.is_done()),
    }
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0].contains(&refused.to_string()), "{events:?}");
    assert!(events[0].contains("refused"), "{events:?}");
    assert_eq!(events[1], "Closed(1006)");
}

/// A round must not start inside another one's callbacks: the inner round could deliver newer
/// events before those the outer round still holds, breaking per-connection order. The nested
/// call raises; cws:send still works there, and the outer loop goes on.
#[test]
fn event_loop_called_from_a_cws_callback_raises_and_the_outer_loop_goes_on() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        s.write_all(&[0x81, 3, b'o', b'n', b'e']).unwrap();
        let reply = read_client_frame(&mut s);
        s.write_all(&[0x88, 2, 0x03, 0xe8]).unwrap();
        let close = read_client_frame(&mut s);
        (reply, close)
    });
    let dir = scratch("nested");
    let src = format!(
        r#"URL = {}
local p = {{}}
p.init = function() end
local function report(s) assert(mqr:post("cws.nested", s)) end
local function nested(what)
  local ok, e = pcall(cws.eventLoop, cws, 0)
  report(what .. " " .. tostring(ok) .. " " .. tostring(e))
end
p.run = function()
  assert(cws:new(URL, {{
    onopen = function() nested("open") end,
    onmessage = function(h, m)
      nested("message " .. m)
      assert(cws:send(h, "got " .. m))
    end,
    onclose = function(_, code) nested("close " .. code) end,
  }}))
  while not must_stop() do cws:eventLoop(0.05) end
end
return p
"#,
        lua_str(&format!("ws://{addr}/"))
    );
    let out = registry().open("cws.nested", 8);
    let reg = Registry::start(vec![app_in(&dir, "nested", &src)], hub(1)).unwrap();
    for want in ["open", "message one", "close 1000"] {
        let line = next(&out);
        let refused = format!("{want} false ");
        assert!(
            line.starts_with(&refused) && line.contains("cws:eventLoop called from a cws callback"),
            "a nested cws:eventLoop in {want:?} was not refused: {line:?}"
        );
    }
    let (reply, close) = server.join().unwrap();
    assert_eq!(reply, (0x1, true, b"got one".to_vec()));
    assert_eq!(close, (0x8, true, vec![0x03, 0xe8]));
    reg.shutdown();
}

/// A service that stops with connections open must not just drop them (RFC 6455 7.1.1): each
/// gets Close 1001 "going away", masked, then up to a second (for all of them together) for the
/// server's Close. Three servers: one answers the Close (then sees the client close TCP), one
/// never answers (the client gives up after the bound, not at once), and one over TLS.
#[test]
fn a_stopping_service_sends_going_away_on_its_open_connections() {
    let dir = scratch("going-away");
    let answering = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let tls = TcpListener::bind("127.0.0.1:0").unwrap();
    let urls = [
        format!("ws://{}/", answering.local_addr().unwrap()),
        format!("ws://{}/", silent.local_addr().unwrap()),
        format!("wss://{}/", tls.local_addr().unwrap()),
    ];
    let answering = std::thread::spawn(move || {
        let mut s = accept_upgrade(&answering);
        let (f, masked) = common::read_any_frame(&mut s).expect("a frame, not EOF");
        s.write_all(&[0x88, 2, 0x03, 0xe9]).unwrap();
        (
            f.opcode,
            masked,
            f.payload,
            common::closed_by_server(&mut s),
        )
    });
    let silent = std::thread::spawn(move || {
        let mut s = accept_upgrade(&silent);
        let (f, masked) = common::read_any_frame(&mut s).expect("a frame, not EOF");
        let eof = common::closed_by_server(&mut s);
        (f.opcode, masked, f.payload, eof, Instant::now())
    });
    let (cfg, pem) = tls_server_config(&dir);
    let tls = std::thread::spawn(move || {
        let (tcp, _) = tls.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ServerConnection::new(cfg).unwrap();
        let mut ws = tungstenite::accept(rustls::StreamOwned::new(conn, tcp)).unwrap();
        // tungstenite refuses unmasked client frames and answers the Close itself (sent by
        // the next read, which then ends).
        let mut got = None;
        loop {
            match ws.read() {
                Ok(tungstenite::Message::Close(f)) => got = f.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed) => return format!("close {got:?}"),
                Err(e) => return format!("close {got:?}, then {e}"),
            }
        }
    });
    let src = format!(
        r#"URLS = {{ {}, {}, {} }}
CA = {}
local p = {{}}
p.init = function() end
p.run = function()
  for _, url in ipairs(URLS) do
    assert(cws:new(url, {{
      ca_file = CA,
      onopen = function() assert(mqr:post("cws.away", "open " .. url)) end,
      onerror = function(_, e) assert(mqr:post("cws.away", "error " .. e)) end,
    }}))
  end
  while not must_stop() do cws:eventLoop(0.05) end
end
return p
"#,
        lua_str(&urls[0]),
        lua_str(&urls[1]),
        lua_str(&urls[2]),
        lua_str(&pem.display().to_string())
    );
    let out = registry().open("cws.away", 8);
    let reg = Registry::start(vec![app_in(&dir, "going_away", &src)], hub(1)).unwrap();
    let opened: BTreeSet<String> = (0..3).map(|_| next(&out)).collect();
    let want: BTreeSet<String> = urls.iter().map(|u| format!("open {u}")).collect();
    assert_eq!(opened, want);
    let t = Instant::now();
    reg.shutdown();
    let took = t.elapsed();
    let going_away = vec![0x03, 0xe9];
    let (op, masked, payload, eof) = answering.join().unwrap();
    assert_eq!((op, masked, payload), (0x8, true, going_away.clone()));
    assert!(eof, "the client closes TCP once the server's Close came");
    let (op, masked, payload, eof, ended) = silent.join().unwrap();
    // From before the shutdown, so before the client's Close was sent.
    let after = ended.duration_since(t);
    assert_eq!((op, masked, payload), (0x8, true, going_away));
    assert!(eof, "the client gives up on a server that does not answer");
    assert!(
        after >= Duration::from_millis(500),
        "the client waited only {after:?} for the server's Close"
    );
    assert_eq!(tls.join().unwrap(), "close Some(1001)");
    assert!(
        took < Duration::from_secs(4),
        "the shutdown took {took:?}: the wait for Close replies is bounded"
    );
}

#[test]
fn event_loop_in_a_network_service_answers_at_once_instead_of_waiting() {
    let dir = scratch("net-loop");
    std::fs::create_dir_all(dir.join("cws_net")).unwrap();
    std::fs::write(
        dir.join("cws_net/cws_net.lua"),
        r#"local app = {}
app.onMessage = function(handler, opcode, message)
  -- 100 s would stall every connection of the instance.
  local n, err = cws:eventLoop(100)
  -- No handler can be one of ours here: send and close say why, as new does.
  local s, serr = cws:send(1, "x")
  local c, cerr = cws:close(1)
  ws:send(handler, 1, table.concat({tostring(n), tostring(err), tostring(s), tostring(serr),
    tostring(c), tostring(cerr)}, "|"))
  return true
end
return app
"#,
    )
    .unwrap();
    let app = common::start_app(
        &common::ws_json(1),
        &common::lapps_json(
            &dir.display().to_string(),
            r#"{ "cws_net": { "preload": ["cws"] } }"#,
        ),
    );
    let mut ws = common::connect(app.addr, "/cws_net");
    let why = "not in a network service (it would block its connections)";
    let none = "not in a network service (cws connections are a standalone service's)";
    assert_eq!(
        common::ask(&mut ws, "go"),
        format!("nil|{why}|nil|{none}|nil|{none}")
    );
}

/// A standalone app that connects to `url` trusting `pem` and posts "onclose <code>" to the
/// mqr queue `queue` when the connection ends.
fn onclose_reporter(url: &str, pem: &Path, queue: &str) -> String {
    format!(
        r#"URL = {}
CA = {}
local p = {{}}
p.init = function() end
p.run = function()
  assert(cws:new(URL, {{
    ca_file = CA,
    onclose = function(_, code) assert(mqr:post({}, "onclose " .. code)) end,
  }}))
  while not must_stop() do cws:eventLoop(0.05) end
end
return p
"#,
        lua_str(url),
        lua_str(&pem.display().to_string()),
        lua_str(queue)
    )
}

/// The next connection of `listener`, through TLS and the WebSocket upgrade (test side).
fn accept_wss(
    listener: &TcpListener,
    cfg: Arc<rustls::ServerConfig>,
) -> tungstenite::WebSocket<rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>> {
    let (tcp, _) = listener.accept().unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ServerConnection::new(cfg).unwrap();
    tungstenite::accept(rustls::StreamOwned::new(conn, tcp)).unwrap()
}

#[test]
fn over_wss_the_close_reply_reaches_a_closing_server_before_close_notify() {
    let dir = scratch("wss-close");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("wss://{}/", listener.local_addr().unwrap());
    let (cfg, pem) = tls_server_config(&dir);
    let server = std::thread::spawn(move || {
        let mut ws = accept_wss(&listener, cfg);
        ws.close(None).unwrap();
        let mut got = Vec::new();
        loop {
            match ws.read() {
                Ok(tungstenite::Message::Close(f)) => {
                    got.push(format!("close {:?}", f.map(|f| u16::from(f.code))))
                }
                Ok(m) => got.push(format!("{m:?}")),
                Err(tungstenite::Error::ConnectionClosed) => return got.join(", "),
                Err(e) => {
                    got.push(format!("then {e}"));
                    return got.join(", ");
                }
            }
        }
    });
    let src = onclose_reporter(&url, &pem, "cws.wssclose");
    let out = registry().open("cws.wssclose", 4);
    let reg = Registry::start(vec![app_in(&dir, "wss_close", &src)], hub(1)).unwrap();
    // tungstenite's close(None) sends a Close without a code.
    assert_eq!(next(&out), "onclose 1005");
    // The server saw our Close reply (masked, checked by tungstenite) and then the end.
    assert_eq!(server.join().unwrap(), "close None");
    reg.shutdown();
}

#[test]
fn over_wss_a_client_that_fails_the_connection_ends_tls_with_close_notify() {
    let dir = scratch("wss-fail");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("wss://{}/", listener.local_addr().unwrap());
    let (cfg, pem) = tls_server_config(&dir);
    let server = std::thread::spawn(move || {
        let mut ws = accept_wss(&listener, cfg);
        // A reserved opcode: the client must fail the connection with 1002.
        let s = ws.get_mut();
        s.write_all(&server_frame(0x3, b"")).unwrap();
        s.flush().unwrap();
        let mut rest = Vec::new();
        // Ok only when the stream ends with the client's close_notify.
        let end = s
            .read_to_end(&mut rest)
            .map(|_| ())
            .map_err(|e| e.to_string());
        (rest, end)
    });
    let src = onclose_reporter(&url, &pem, "cws.wssfail");
    let out = registry().open("cws.wssfail", 4);
    let reg = Registry::start(vec![app_in(&dir, "wss_fail", &src)], hub(1)).unwrap();
    assert_eq!(next(&out), "onclose 1002");
    let (rest, end) = server.join().unwrap();
    assert_eq!(end, Ok(()), "close_notify after the Close frame");
    assert_eq!(
        rest.get(..2),
        Some(&[0x88, 0x82][..]),
        "a masked Close with its code"
    );
    assert_eq!(
        rest.get(6..8).map(|c| c
            .iter()
            .zip(&rest[2..6])
            .map(|(b, m)| b ^ m)
            .collect::<Vec<_>>()),
        Some(vec![0x03, 0xea])
    );
    reg.shutdown();
}

/// An unmasked server frame of any length.
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

#[test]
fn every_cws_callback_has_its_own_instruction_budget() {
    let dir = scratch("cb-budget");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        // 100,000 empty text messages in one burst, then Close 1000: one or two rounds of
        // callbacks, ~100 instructions each, 10 budgets' worth in all.
        let mut burst = server_frame(1, b"").repeat(100_000);
        burst.extend(server_frame(8, &[0x03, 0xe8]));
        s.write_all(&burst).unwrap();
        read_client_frame(&mut s)
    });
    let src = format!(
        r#"URL = {}
local p = {{}}
p.init = function() end
p.run = function()
  local n = 0
  assert(cws:new(URL, {{
    onmessage = function()
      for _ = 1, 30 do n = n + 0 end
      n = n + 1
    end,
    onclose = function(_, code)
      assert(mqr:post("cws.budget", "onclose " .. code .. " after " .. n))
    end,
  }}))
  while not must_stop() do cws:eventLoop(0.05) end
end
return p
"#,
        lua_str(&url)
    );
    let out = registry().open("cws.budget", 4);
    let mut spec = app_in(&dir, "cb_budget", &src);
    spec.instruction_budget = Some(1_000_000);
    let reg = Registry::start(vec![spec], hub(1)).unwrap();
    assert_eq!(next(&out), "onclose 1000 after 100000");
    assert_eq!(server.join().unwrap(), (8, true, vec![0x03, 0xe8]));
    reg.shutdown();
}

#[test]
fn a_callback_that_spends_its_budget_leaves_run_a_budget_of_its_own() {
    let dir = scratch("cb-spent");
    let (url, server) = scripted_server(server_frame(1, b"spin"));
    let src = format!(
        r#"URL = {}
local p = {{}}
p.init = function() end
p.run = function()
  local told = false
  assert(cws:new(URL, {{ onmessage = function() while true do end end }}))
  while not must_stop() do
    local n = cws:eventLoop(0.05)
    if n > 0 and not told then
      told = true
      assert(mqr:post("cws.spent", "run goes on after " .. n))
    end
  end
end
return p
"#,
        lua_str(&url)
    );
    let out = registry().open("cws.spent", 4);
    let mut spec = app_in(&dir, "cb_spent", &src);
    spec.instruction_budget = Some(100_000);
    let reg = Registry::start(vec![spec], hub(1)).unwrap();
    // The callback's raise is logged; what run() does after eventLoop has a budget again.
    assert_eq!(next(&out), "run goes on after 1");
    reg.shutdown();
    assert_eq!(
        server.join().unwrap().0,
        8,
        "the client's Close at the shutdown"
    );
}

/// A scripted server that answers the upgrade, writes `bytes` and returns the client's next
/// frame; its ws:// URL.
fn scripted_server(bytes: Vec<u8>) -> (String, std::thread::JoinHandle<(u8, bool, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        s.write_all(&bytes).unwrap();
        read_client_frame(&mut s)
    });
    (url, server)
}

/// A standalone service `name` with a 4 MiB memory limit whose one cws connection to `url`
/// reports to queue `report`: "message N", "onerror ...", "onclose CODE", and once stopping
/// "stopped after N" (the number of onclose calls).
fn reporting_client(dir: &Path, name: &str, url: &str, report: &str) -> (Registry, Arc<Queue>) {
    reporting_client_with(dir, name, url, report, "")
}

/// [`reporting_client`] with more `options` for `cws:new` (Lua table fields, each ending
/// with a comma).
fn reporting_client_with(
    dir: &Path,
    name: &str,
    url: &str,
    report: &str,
    options: &str,
) -> (Registry, Arc<Queue>) {
    let src = format!(
        r#"URL, REPORT = {}, {}
local p = {{}}
p.init = function() end
p.run = function()
  local closes = 0
  assert(cws:new(URL, {{
    onmessage = function(_, m) assert(mqr:post(REPORT, "message " .. #m)) end,
    onerror = function(_, e) assert(mqr:post(REPORT, "onerror " .. e)) end,
    onclose = function(_, code)
      closes = closes + 1
      assert(mqr:post(REPORT, "onclose " .. code))
    end,
    {options}
  }}))
  while not must_stop() do cws:eventLoop(0.05) end
  assert(mqr:post(REPORT, "stopped after " .. closes))
end
return p
"#,
        lua_str(url),
        lua_str(report)
    );
    let out = registry().open(report, 8);
    let mut spec = app_in(dir, name, &src);
    spec.memory_limit = 4 << 20;
    (Registry::start(vec![spec], hub(1)).unwrap(), out)
}

#[test]
fn a_message_the_state_has_no_memory_for_fails_its_connection_with_1011() {
    // Just within the state's memory limit, so it can be received (see the next test), but
    // the state has its own values too; then one that would fit.
    let mut bytes = server_frame(2, &vec![7u8; (4 << 20) - 64]);
    bytes.extend(server_frame(1, b"small"));
    let (url, server) = scripted_server(bytes);
    let (reg, out) = reporting_client(&scratch("no-memory"), "no_memory", &url, "cws.nomem");
    let error = next(&out);
    assert!(error.starts_with("onerror message dropped: "), "{error}");
    assert_eq!(next(&out), "onclose 1011");
    // The server is told why, with a masked Close.
    assert_eq!(server.join().unwrap(), (8, true, vec![0x03, 0xf3]));
    reg.shutdown();
}

/// `n` bytes of a binary message in 1 MiB fragments, the last with FIN when `fin`.
fn fragments(n: usize, fin: bool) -> Vec<u8> {
    let mut bytes = Vec::new();
    let pieces = n.div_ceil(1 << 20);
    for i in 0..pieces {
        let len = (n - i * (1 << 20)).min(1 << 20);
        let mut f = server_frame(if i == 0 { 2 } else { 0 }, &vec![7u8; len]);
        if i + 1 < pieces || !fin {
            f[0] &= 0x7f;
        }
        bytes.extend(f);
    }
    bytes
}

/// A connection that fails halfway through a message gives its room back at once, not
/// when it is gone (it may linger up to 5 s for a server that does not end TCP): another
/// connection's message that fits only without it is received.
#[test]
fn a_failed_connection_gives_back_the_room_of_its_half_received_message() {
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let second = TcpListener::bind("127.0.0.1:0").unwrap();
    let urls = [&first, &second].map(|l| format!("ws://{}/", l.local_addr().unwrap()));
    let (failed_tx, failed_rx) = std::sync::mpsc::channel::<()>();
    let one = std::thread::spawn(move || {
        let mut s = accept_upgrade(&first);
        // 3 MiB of a message, then silence: the client pings, then fails the connection
        // (1001, its idle timeout) with the message half received.
        s.write_all(&fragments(3 << 20, false)).unwrap();
        let (opcode, code) = loop {
            let (opcode, _, payload) = read_client_frame(&mut s);
            if opcode != 9 {
                break (opcode, payload);
            }
        };
        failed_tx.send(()).unwrap();
        // Holding the connection open: the client lingers, waiting for our end of TCP.
        let _ = common::read_any_frame(&mut s);
        (opcode, code)
    });
    let two = std::thread::spawn(move || {
        let mut s = accept_upgrade(&second);
        failed_rx.recv().unwrap();
        s.write_all(&fragments(3 << 20, true)).unwrap();
        read_client_frame(&mut s)
    });
    let src = format!(
        r#"URLS = {{ {}, {} }}
local p = {{}}
p.run = function()
  for i, url in ipairs(URLS) do
    assert(cws:new(url, {{
      max_message_size = 64 * 1024 * 1024,
      idle_timeout = i == 1 and 0.2 or 60,
      onmessage = function(h, m)
        assert(mqr:post("cws.giveback", i .. " message " .. #m))
        cws:close(h)
      end,
      onerror = function(_, e) assert(mqr:post("cws.giveback", i .. " onerror " .. e)) end,
    }}))
  end
  while not must_stop() do cws:eventLoop(0.05) end
end
return p
"#,
        lua_str(&urls[0]),
        lua_str(&urls[1])
    );
    let out = registry().open("cws.giveback", 8);
    let mut spec = app_in(&scratch("giveback"), "giveback", &src);
    spec.memory_limit = 4 << 20;
    let reg = Registry::start(vec![spec], hub(1)).unwrap();
    let first_report = next(&out);
    assert!(first_report.starts_with("1 onerror "), "{first_report}");
    assert_eq!(next(&out), format!("2 message {}", 3 << 20));
    assert_eq!(one.join().unwrap(), (8, vec![0x03, 0xe9]));
    assert_eq!(two.join().unwrap(), (8, true, vec![0x03, 0xe8]));
    reg.shutdown();
}

#[test]
fn messages_being_received_may_hold_no_more_than_the_states_memory_limit() {
    // An 8 MiB message in 1 MiB fragments, within max_message_size but twice the 4 MiB
    // memory limit: it is refused while it arrives, not once it is whole.
    let mut bytes = Vec::new();
    for i in 0..8u8 {
        let mut f = server_frame(if i == 0 { 2 } else { 0 }, &vec![i; 1 << 20]);
        if i < 7 {
            f[0] &= 0x7f; // not the last fragment
        }
        bytes.extend(f);
    }
    let (url, server) = scripted_server(bytes);
    let dir = scratch("assembly-cap");
    let options = "max_message_size = 64 * 1024 * 1024,";
    let (reg, out) = reporting_client_with(&dir, "assembly_cap", &url, "cws.asmcap", options);
    let error = next(&out);
    assert!(
        error.starts_with("onerror no room for the message being received ("),
        "{error}"
    );
    // The size it had reached, the bytes that found no room included: past the limit.
    let size: usize = error["onerror no room for the message being received (".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {error}"));
    assert!(size > 4 << 20 && size <= 8 << 20, "{error}");
    assert_eq!(next(&out), "onclose 1013");
    // The server is told, with a masked Close 1013 (try again later).
    assert_eq!(server.join().unwrap(), (8, true, vec![0x03, 0xf5]));
    reg.shutdown();
    assert_eq!(next(&out), "stopped after 1");
}

#[test]
fn a_message_with_no_memory_for_it_just_before_the_servers_close_still_ends_in_one_onclose() {
    // The end of the big message and the Close may come in one read.
    let mut bytes = server_frame(2, &vec![7u8; (4 << 20) - 64]);
    bytes.extend(server_frame(8, &[0x03, 0xe8]));
    let (url, server) = scripted_server(bytes);
    let dir = scratch("no-memory-close");
    let (reg, out) = reporting_client(&dir, "no_memory_close", &url, "cws.nomemclose");
    let error = next(&out);
    assert!(error.starts_with("onerror message dropped: "), "{error}");
    // Our Close (1011, or the reply to the server's): either way, one.
    let close = next(&out);
    assert!(close.starts_with("onclose "), "{close}");
    assert_eq!(server.join().unwrap().0, 8);
    reg.shutdown();
    assert_eq!(next(&out), "stopped after 1");
}

#[test]
fn a_quiet_server_is_pinged_and_one_that_stays_quiet_fails_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        // Quiet: pinged. The pong makes it alive again: pinged again after another quiet
        // period, not failed. Then it stays quiet: the client goes with Close 1001.
        let first = read_client_frame(&mut s);
        s.write_all(&[0x8A, 0]).unwrap();
        let second = read_client_frame(&mut s);
        let close = read_client_frame(&mut s);
        [first, second, close]
    });
    let dir = scratch("idle");
    let (reg, out) = reporting_client_with(&dir, "idle", &url, "cws.idle", "idle_timeout = 1,");
    let error = next(&out);
    assert!(error.starts_with("onerror idle timeout: "), "{error}");
    assert_eq!(next(&out), "onclose 1001");
    let ping = (0x9, true, vec![]);
    assert_eq!(
        server.join().unwrap(),
        [ping.clone(), ping, (0x8, true, vec![0x03, 0xe9])]
    );
    reg.shutdown();
    assert_eq!(next(&out), "stopped after 1");
}

/// However short, a positive idle_timeout is one: 1e-12 s rounded to no time at all meant
/// "never" (a zero timeout), and a quiet server was never noticed.
#[test]
fn the_shortest_idle_timeout_still_pings_a_quiet_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        [read_client_frame(&mut s), read_client_frame(&mut s)]
    });
    let dir = scratch("idle-tiny");
    let options = "idle_timeout = 1e-12,";
    let (reg, out) = reporting_client_with(&dir, "idle_tiny", &url, "cws.idletiny", options);
    let error = next(&out);
    assert!(error.starts_with("onerror idle timeout: "), "{error}");
    assert_eq!(next(&out), "onclose 1001");
    assert_eq!(
        server.join().unwrap(),
        [(0x9, true, vec![]), (0x8, true, vec![0x03, 0xe9])]
    );
    reg.shutdown();
}

/// A connection the app closes before it opens is abandoned, and its onclose (1006) runs in
/// the next round: until then it counts in `cws:count()`, so the usual wait for the count to
/// reach 0 (the benchmark's) sees it. It counted as gone at once, and the wait ended before
/// its onclose. And a connection whose upgrade answer arrives in the round in which another
/// connection's callback closes it gets no onopen: for the app it was never open.
#[test]
fn a_connection_closed_before_its_onopen_counts_until_its_onclose_and_never_opens() {
    // Takes TCP connections (the kernel's backlog) but never answers their upgrade.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let second = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = scratch("close-early");
    let src = format!(
        r#"SILENT, FIRST, SECOND = {}, {}, {}
local p = {{}}
p.init = function() end
local function report(s) assert(mqr:post("cws.early", s)) end
p.run = function()
  local seen = {{}}
  local function note(s) seen[#seen + 1] = s end
  local h = assert(cws:new(SILENT, {{
    onopen = function() note("opened") end,
    onclose = function(_, c) note("onclose " .. c .. " count " .. cws:count()) end,
  }}))
  assert(cws:close(h))
  local during = cws:count()
  while cws:count() > 0 and not must_stop() do cws:eventLoop(0.05) end
  report("count " .. during .. ", " .. table.concat(seen, ", "))

  seen = {{}}
  local h2
  local h1 = assert(cws:new(FIRST, {{
    onopen = function() report("open 1") end,
    onmessage = function(_, m) note("message " .. m); note("close 2 " .. tostring(cws:close(h2))) end,
  }}))
  h2 = assert(cws:new(SECOND, {{
    onopen = function() note("opened 2") end,
    onclose = function(_, c) note("onclose 2 " .. c) end,
  }}))
  -- Until the first is open and the second's request went out; then no round until the
  -- message on the first and the answer on the second are both in: one round gets both.
  while not must_stop() and mqr:recv("cws.early.go", 0) == nil do cws:eventLoop(0.05) end
  report("waiting")
  assert(mqr:recv("cws.early.go", 20))
  cws:eventLoop(10)
  while cws:count() > 1 and not must_stop() do cws:eventLoop(0.05) end
  report(table.concat(seen, ", "))
  while not must_stop() do cws:eventLoop(0.05) end
end
return p
"#,
        lua_str(&format!("ws://{}/", silent.local_addr().unwrap())),
        lua_str(&format!("ws://{}/", first.local_addr().unwrap())),
        lua_str(&format!("ws://{}/", second.local_addr().unwrap())),
    );
    let out = registry().open("cws.early", 8);
    let go = registry().open("cws.early.go", 1);
    let reg = Registry::start(vec![app_in(&dir, "close_early", &src)], hub(1)).unwrap();
    assert_eq!(next(&out), "count 1, onclose 1006 count 0");

    let mut one = accept_upgrade(&first);
    assert_eq!(next(&out), "open 1");
    let (mut two, _) = second.accept().unwrap();
    two.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (_, key) = read_upgrade_request(&mut two);
    go.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    assert_eq!(next(&out), "waiting");
    let hi = server_frame(1, b"hi");
    one.write_all(&hi).unwrap();
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        lapps::ws::handshake::accept_key(&key)
    );
    two.write_all(answer.as_bytes()).unwrap();
    // Both whole in the client's sockets (the server ends' peers) before the round starts.
    let unread = |s: &std::net::TcpStream| {
        common::socket_queues(s.peer_addr().unwrap(), s.local_addr().unwrap())
            .map_or(0, |(_, rx)| rx)
    };
    common::wait_for(
        "both in the client's sockets",
        Duration::from_secs(10),
        || unread(&one) == hi.len() as u64 && unread(&two) == answer.len() as u64,
    );
    go.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    // The second gets our Close 1000 and answers it.
    assert_eq!(read_client_frame(&mut two), (0x8, true, vec![0x03, 0xe8]));
    two.write_all(&server_frame(8, &[0x03, 0xe8])).unwrap();
    assert_eq!(next(&out), "message hi, close 2 true, onclose 2 1000");
    reg.shutdown();
}

#[test]
fn idle_timeout_takes_seconds_from_zero_on_and_insecure_only_a_boolean() {
    let dir = scratch("idle-option");
    let src = r#"local p = {}
p.init = function() end
p.run = function()
  local report = {}
  for _, v in ipairs({ -1, 1e10, 0 / 0 }) do
    local h, err = cws:new("ws://127.0.0.1:9/", { idle_timeout = v })
    report[#report + 1] = tostring(h) .. " " .. tostring(err)
  end
  local h = cws:new("ws://127.0.0.1:9/", { idle_timeout = 0 })
  report[#report + 1] = type(h)
  -- Lua's truth would make "false" and 0 true: only a boolean switches verification off.
  for _, v in ipairs({ "false", 0 }) do
    local h2, err = cws:new("wss://127.0.0.1:9/", { insecure = v })
    report[#report + 1] = tostring(h2) .. " " .. tostring(err)
  end
  assert(mqr:post("cws.idleopt", table.concat(report, ", ")))
  while not must_stop() do cws:eventLoop(0.05) end
end
return p
"#;
    let out = registry().open("cws.idleopt", 8);
    let reg = Registry::start(vec![app_in(&dir, "idle_option", src)], hub(1)).unwrap();
    assert_eq!(
        next(&out),
        "nil bad idle_timeout, nil bad idle_timeout, nil bad idle_timeout, number, \
         nil bad insecure (true or false), nil bad insecure (true or false)"
    );
    reg.shutdown();
}

#[test]
fn a_server_that_reads_an_upload_slowly_is_not_idle_while_our_ping_waits_behind_it() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // A small receive window: the upload stays mostly in the client's own queue.
    let size: libc::c_int = 8192;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        // Reads without a word for 2.5 idle periods of the client, at the pace of a slow
        // server (the pauses pace the reader; nothing waits on them), then speaks.
        let start = Instant::now();
        let mut buf = [0u8; 8192];
        while start.elapsed() < Duration::from_millis(2500) {
            assert!(s.read(&mut buf).unwrap() > 0);
            std::thread::sleep(Duration::from_millis(10));
        }
        s.write_all(&[0x81, 5, b'a', b'l', b'i', b'v', b'e'])
            .unwrap();
        s
    });
    let src = format!(
        r#"local p = {{}}
p.init = function() end
p.run = function()
  assert(cws:new({}, {{
    idle_timeout = 1,
    onopen = function(h) assert(cws:send(h, string.rep("x", 8 * 1024 * 1024))) end,
    onmessage = function(_, m) assert(mqr:post("cws.upload", "message " .. m)) end,
    onerror = function(_, e) assert(mqr:post("cws.upload", "onerror " .. e)) end,
  }}))
  while not must_stop() do cws:eventLoop(0.05) end
end
return p
"#,
        lua_str(&url)
    );
    let out = registry().open("cws.upload", 8);
    let dir = scratch("upload");
    let reg = Registry::start(vec![app_in(&dir, "upload", &src)], hub(1)).unwrap();
    assert_eq!(next(&out), "message alive");
    let _server_side = server.join().unwrap();
    reg.shutdown();
}

#[test]
fn the_apps_own_heartbeats_do_not_keep_a_silent_server_alive() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    // Upgrades, then neither reads nor writes: its kernel still acknowledges what comes.
    let server = std::thread::spawn(move || accept_upgrade(&listener));
    let src = format!(
        r#"local p = {{}}
p.init = function() end
p.run = function()
  local h = assert(cws:new({}, {{
    idle_timeout = 0.5,
    onerror = function(_, e) assert(mqr:post("cws.beat", "onerror " .. e)) end,
    onclose = function(_, code) assert(mqr:post("cws.beat", "onclose " .. code)) end,
  }}))
  while not must_stop() do
    cws:send(h, "beat")
    cws:eventLoop(0.1)
  end
end
return p
"#,
        lua_str(&url)
    );
    let out = registry().open("cws.beat", 8);
    let dir = scratch("beat");
    let reg = Registry::start(vec![app_in(&dir, "beat", &src)], hub(1)).unwrap();
    let error = next(&out);
    assert!(error.starts_with("onerror idle timeout: "), "{error}");
    assert_eq!(next(&out), "onclose 1001");
    let _server_side = server.join().unwrap();
    reg.shutdown();
}

#[test]
fn one_message_larger_than_the_backlog_bound_goes_on_an_empty_queue() {
    use lapps::service::cws::MAX_BACKLOG;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (mut c, mut keys) = client_to(addr);
    let big = vec![b'x'; MAX_BACKLOG + 1];
    assert_eq!(c.send(lapps::ws::Opcode::Binary, &big, &mut keys), Ok(()));
    assert_eq!(
        c.send(lapps::ws::Opcode::Binary, b"more", &mut keys),
        Err("backlog"),
        "behind it, the bound holds"
    );
}

/// A TCP socket bound to a free port of 127.0.0.1 that does not listen: connections to that
/// port are refused for as long as the socket is held.
fn bound_not_listening() -> (std::os::fd::OwnedFd, SocketAddr) {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor that nothing else owns.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_in is plain data; zeroed is port 0, address 0 before we set them.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sin` is a valid sockaddr_in of `len` bytes, for bind and getsockname alike.
    unsafe {
        assert_eq!(
            libc::bind(fd, &sin as *const _ as *const libc::sockaddr, len),
            0,
            "bind: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            libc::getsockname(fd, &mut sin as *mut _ as *mut libc::sockaddr, &mut len),
            0
        );
    }
    let port = u16::from_be(sin.sin_port);
    (owned, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A host name is resolved in the background: `cws:new` answers a handler at once and the
/// connection opens when the name's addresses come. (localhost may give ::1 first: the echo
/// listens on 127.0.0.1 only, so that address is refused and the next one taken.) A message
/// sent before it opens follows the upgrade.
#[test]
fn a_connection_to_a_host_name_opens_once_it_is_resolved() {
    let app = echo_app();
    let port = app.local_addrs()[0].port();
    let dir = scratch("byname");
    let src = format!(
        r#"URL = {}
local out = "cws.byname"
local function report(s) assert(mqr:post(out, s)) end
return {{ run = function()
  local h, err = cws:new(URL, {{
    onopen = function(h) report("open") end,
    onmessage = function(h, m) report("message " .. m); assert(cws:close(h, 1000)) end,
    onerror = function(h, e) report("error " .. e) end,
    onclose = function(h, code) report("close " .. code) end,
  }})
  if not h then report("new failed " .. err) return end
  assert(cws:send(h, "sent before it opened"))
  while not must_stop() do cws:eventLoop(0.05) end
end }}
"#,
        lua_str(&format!("ws://localhost:{port}/echo"))
    );
    let out = registry().open("cws.byname", 64);
    let reg = Registry::start(vec![app_in(&dir, "byname", &src)], hub(1)).unwrap();
    for want in ["open", "message sent before it opened", "close 1000"] {
        assert_eq!(next(&out), want);
    }
    reg.shutdown();
    app.shutdown();
}

#[test]
fn what_a_callback_sends_for_a_message_before_a_violation_goes_before_our_close() {
    // A message, then a frame with a reserved bit set, in one write (Autobahn case 3.2): the
    // echo of the message must reach the server before the Close 1002 that the violation earns.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        let mut bytes = server_frame(1, b"hello");
        bytes.extend([0xc1, 0x00]);
        s.write_all(&bytes).unwrap();
        (read_client_frame(&mut s), read_client_frame(&mut s))
    });
    let src = format!(
        r#"URL = {}
local p = {{}}
p.init = function() end
p.run = function()
  assert(cws:new(URL, {{
    onmessage = function(h, m, op)
      assert(mqr:post("cws.strict", "message " .. m))
      assert(cws:send(h, m, op))
    end,
    onerror = function(_, e) assert(mqr:post("cws.strict", "onerror " .. e)) end,
    onclose = function(_, code) assert(mqr:post("cws.strict", "onclose " .. code)) end,
  }}))
  while not must_stop() do cws:eventLoop(0.05) end
end
return p
"#,
        lua_str(&url)
    );
    let out = registry().open("cws.strict", 8);
    let reg = Registry::start(vec![app_in(&scratch("strict"), "strict", &src)], hub(1)).unwrap();
    assert_eq!(next(&out), "message hello");
    let error = next(&out);
    assert!(error.starts_with("onerror "), "{error}");
    assert_eq!(next(&out), "onclose 1002");
    let (echo, close) = server.join().unwrap();
    assert_eq!(echo, (1, true, b"hello".to_vec()), "the echo first");
    assert_eq!(close, (8, true, vec![0x03, 0xea]), "then Close 1002");
    reg.shutdown();
}

#[test]
fn messages_the_app_keeps_nothing_of_are_not_dropped_for_the_garbage_of_the_ones_before() {
    // Ten messages of 1.8 MiB into a state of 4 MiB whose app keeps none of them, one at a
    // time (each acknowledged before the next is sent): the garbage of the ones before, which
    // the incremental collector has not reached, is collected when the room for the next is
    // refused, rather than that message being dropped (1011). The app stops the incremental
    // collector, so that it reaches none (as it may not, with large messages, in time).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut s = accept_upgrade(&listener);
        for i in 0..10 {
            // Each unlike the others: LuaJIT interns strings, equal ones are one object.
            s.write_all(&server_frame(2, &vec![i; 1800 << 10])).unwrap();
            assert_eq!(read_client_frame(&mut s), (1, true, b"ack".to_vec()));
        }
        s.write_all(&server_frame(8, &[0x03, 0xe8])).unwrap();
        read_client_frame(&mut s)
    });
    let (reg, out) = reporting_client_with(
        &scratch("garbage"),
        "garbage",
        &url,
        "cws.garbage",
        "onopen = function() collectgarbage('stop') end, onmessage = function(h, m) \
         assert(mqr:post(REPORT, 'message ' .. #m)); assert(cws:send(h, 'ack')) end,",
    );
    for _ in 0..10 {
        assert_eq!(next(&out), format!("message {}", 1800 << 10));
    }
    assert_eq!(next(&out), "onclose 1000");
    assert_eq!(server.join().unwrap(), (8, true, vec![0x03, 0xe8]));
    reg.shutdown();
}

#[test]
fn a_message_past_max_message_size_fails_with_1009_naming_the_limit() {
    let (url, server) = scripted_server(server_frame(2, &[1u8; 2000]));
    let (reg, out) = reporting_client_with(
        &scratch("too-large"),
        "too_large",
        &url,
        "cws.toolarge",
        "max_message_size = 1000,",
    );
    assert_eq!(
        next(&out),
        "onerror message larger than max_message_size (1000 bytes)"
    );
    assert_eq!(next(&out), "onclose 1009");
    assert_eq!(server.join().unwrap(), (8, true, vec![0x03, 0xf1]));
    reg.shutdown();
}
