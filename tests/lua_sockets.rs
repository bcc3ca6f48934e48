//! The Lua services end to end: `lapps::app::App` started from config text on a free port,
//! every assertion made through a real client (tungstenite) or a raw socket: echo, order,
//! bcast, `onDisconnect`, the handshake routing (404, ACL, Origin), the workers' close paths
//! and the bytes on the wire. The sandbox and the 1011 cases are in tests/lua_safety.rs, more
//! of bcast and chat in tests/lua_bcast.rs.
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;

const GUARD: Duration = Duration::from_secs(10);

/// `SHUTDOWN_GRACE` of src/net/worker.rs: how long a stopping worker waits for its connections
/// to close before it drops them.
const WORKER_SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// The example apps of lua/apps at their usual targets; echo takes 16 MiB messages.
fn example_services() -> String {
    lapps_json(
        "./lua/apps",
        r#"{
            "echo": { "request_target": "/echo", "instances": 2,
                      "max_inbound_message_size": 16777216 },
            "chat": { "request_target": "/chat", "instances": 2, "preload": ["bcast"] }
        }"#,
    )
}

/// The probe test app on `instances` instances, with bcast.
fn probe_services(instances: usize) -> String {
    lapps_json(
        "./tests/apps",
        &format!(r#"{{ "probe": {{ "instances": {instances}, "preload": ["bcast"] }} }}"#),
    )
}

/// The tally test app (`/tally`) plus, when given, its linked copy `tally_guard` at `/guard`
/// with the given extra service keys.
fn tally_services(guard: Option<&str>) -> String {
    let guard = guard.map_or(String::new(), |extra| {
        format!(
            r#", "tally_guard": {{ "request_target": "/guard", "preload": ["bcast"] {extra} }}"#
        )
    });
    lapps_json(
        "./tests/apps",
        &format!(
            r#"{{ "tally": {{ "instances": 2, "preload": ["bcast"], "instruction_budget": 5000000,
                             "max_inbound_message_size": 1024 }} {guard} }}"#
        ),
    )
}

/// Status code of an upgrade request for `path` with `extra` header lines.
fn upgrade_status(addr: SocketAddr, path: &str, extra: &str) -> u16 {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    let mut s = TcpStream::connect(addr).expect("tcp connect");
    s.set_read_timeout(Some(GUARD)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let head = read_http_head(&mut s);
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
}

fn connect_with_origin(addr: SocketAddr, path: &str, origin: &str) -> Client {
    let stream = TcpStream::connect(addr).expect("tcp connect");
    stream.set_read_timeout(Some(GUARD)).unwrap();
    let req = tungstenite::ClientRequestBuilder::new(format!("ws://{addr}{path}").parse().unwrap())
        .with_header("Origin", origin);
    tungstenite::client::client(req, stream)
        .expect("handshake with an allowed origin")
        .0
}

// ---------------------------------------------------------------------------------------------
// 1. echo through lua/apps/echo

#[test]
fn lua_echo_round_trips_text_and_binary_from_0_b_to_16_mib() {
    let app = start_app(&ws_json(2), &example_services());
    let mut ws = connect(app.addr, "/echo");
    for size in [0usize, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20] {
        let bin: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        ws.send(Message::binary(bin.clone())).unwrap();
        assert!(
            ws.read().unwrap() == Message::binary(bin),
            "binary of {size} bytes comes back as sent"
        );
        let t: String = (0..size)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        ws.send(Message::text(t.clone())).unwrap();
        assert!(
            ws.read().unwrap() == Message::text(t),
            "text of {size} bytes comes back as sent"
        );
    }
    // Multi-byte UTF-8 stays text and intact.
    let t = "κόσμε ✓ 𝄞 ".repeat(1000);
    assert_eq!(ask(&mut ws, &t), t);
}

// ---------------------------------------------------------------------------------------------
// 2. many connections over several instances keep their order

#[test]
fn ws_json_caps_messages_being_received_for_a_lua_service() {
    // max_inbound_assembly_bytes from ws.json reaches the workers: with 100,000 bytes over
    // the process, a 150,000-byte fragmented message to the Lua echo is refused with 1013
    // (its limit, 16 MiB, would take it), and the connection beside it is served.
    let ws = r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 },
                  "max_inbound_assembly_bytes": 100000 }"#;
    let app = start_app(ws, &example_services());
    let mut other = connect(app.addr, "/echo");
    let mut s = raw_upgraded(app.addr, "/echo");
    let _ = s.write_all(&frame(false, 0, 0x2, &[1u8; 150_000], true));
    assert_eq!(expect_close(&mut s), Some(1013));
    other
        .send(Message::Binary(vec![2u8; 90_000].into()))
        .unwrap();
    match other.read().unwrap() {
        Message::Binary(b) => assert!(b.len() == 90_000 && b.iter().all(|&x| x == 2)),
        m => panic!("expected the echo, got {m:?}"),
    }
}

#[test]
fn ws_json_times_out_a_message_that_does_not_arrive_whole_for_a_lua_service() {
    // message_timeout_ms from ws.json reaches the workers: the first half of a message and
    // nothing more gets 1008 (the idle timeout, 60 s, is far off); the guard is the read
    // timeout of 10 s. The connection beside it is served.
    let ws = r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 },
                  "message_timeout_ms": 300 }"#;
    let app = start_app(ws, &example_services());
    let mut other = connect(app.addr, "/echo");
    let mut s = raw_upgraded(app.addr, "/echo");
    s.write_all(&frame(false, 0, 0x1, b"half of it", true))
        .unwrap();
    assert_eq!(expect_close(&mut s), Some(1008));
    assert_eq!(ask(&mut other, "still served"), "still served");
}

#[test]
fn two_hundred_pipelining_connections_over_four_instances_keep_their_order() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 50;
    const MESSAGES: usize = 50;
    let app = lapps_json(
        "./lua/apps",
        r#"{ "echo": { "request_target": "/echo", "instances": 4 } }"#,
    );
    let app = start_app(&ws_json(2), &app);
    let addr = app.addr;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut clients: Vec<Client> =
                    (0..PER_THREAD).map(|_| connect(addr, "/echo")).collect();
                // Every connection has all its messages in flight before any answer is read.
                for (c, ws) in clients.iter_mut().enumerate() {
                    for m in 0..MESSAGES {
                        ws.write(Message::text(format!("t{t} c{c} m{m}"))).unwrap();
                    }
                    ws.flush().unwrap();
                }
                for (c, ws) in clients.iter_mut().enumerate() {
                    for m in 0..MESSAGES {
                        assert_eq!(text(ws), format!("t{t} c{c} m{m}"));
                    }
                }
                for mut ws in clients {
                    ws.close(None).unwrap();
                    finish_close(ws);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. bcast: every subscriber exactly once, nothing after leaving

fn chat_text(msg: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(msg).ok()?;
    v.get("text")?.as_str().map(str::to_string)
}

/// Reads the next message of `ws`, which must be a chat line with `want` as its text.
fn expect_chat(ws: &mut Client, want: &str, who: usize) {
    let got = text(ws);
    assert_eq!(
        chat_text(&got).as_deref(),
        Some(want),
        "client {who} got {got:?}"
    );
}

#[test]
fn chat_room_messages_reach_each_member_once_and_stop_after_leave_or_disconnect() {
    let app = start_app(&ws_json(2), &example_services());
    let mut c: Vec<Client> = (0..6).map(|_| connect(app.addr, "/chat")).collect();
    for ws in &mut c {
        assert_eq!(ask(ws, "/join r1"), "joined r1");
    }
    // The sender is a member too: chat broadcasts to the whole room, sender included.
    send(&mut c[0], "hello 1");
    send(&mut c[0], "marker 1");
    for (i, ws) in c.iter_mut().enumerate() {
        // Both come from c0's instance in call order: a duplicate "hello 1" would sit between.
        expect_chat(ws, "hello 1", i);
        expect_chat(ws, "marker 1", i);
    }
    // c1 leaves the room, c2 drops its TCP connection without a Close.
    assert_eq!(ask(&mut c[1], "/leave"), "left r1");
    let dropped = c.remove(2);
    dropped.get_ref().shutdown(Shutdown::Both).unwrap();
    drop(dropped);
    let mut left = c.remove(1);
    // Now c = [c0, c3, c4, c5].
    send(&mut c[0], "hello 2");
    send(&mut c[0], "marker 2");
    for (i, ws) in c.iter_mut().enumerate() {
        expect_chat(ws, "hello 2", i);
        expect_chat(ws, "marker 2", i);
    }
    // The leaver got nothing of it: its next message is the answer to its own command.
    assert_eq!(ask(&mut left, "/nick late"), "nick late");
    // Rejoining works and delivers from then on, once.
    assert_eq!(ask(&mut left, "/join r1"), "joined r1");
    send(&mut c[0], "hello 3");
    send(&mut c[0], "marker 3");
    c.push(left);
    for (i, ws) in c.iter_mut().enumerate() {
        expect_chat(ws, "hello 3", i);
        expect_chat(ws, "marker 3", i);
    }
}

#[test]
fn bcast_recipient_count_drops_after_unsubscribe_and_after_disconnect() {
    let app = start_app(&ws_json(2), &probe_services(2));
    let mut p: Vec<Client> = (0..4).map(|_| connect(app.addr, "/probe")).collect();
    for ws in &mut p {
        assert_eq!(ask(ws, "sub c"), "ok");
    }
    send(&mut p[0], "bsend c x");
    // p0's own copy is queued before its reply: the broadcast runs first in the callback.
    assert_eq!(text(&mut p[0]), "x");
    assert_eq!(text(&mut p[0]), "n=4");
    for ws in &mut p[1..] {
        assert_eq!(text(ws), "x");
    }
    assert_eq!(ask(&mut p[1], "unsub c"), "ok");
    let dropped = p.remove(2);
    dropped.get_ref().shutdown(Shutdown::Both).unwrap();
    drop(dropped);
    let mut unsubscribed = p.remove(1);
    // Now p = [p0, p3]. The unsubscribe is immediate; the dropped peer goes once its worker
    // has seen the EOF, so poll the recipient count.
    let mut sent = Vec::new();
    wait_for("the dropped subscriber to leave the channel", GUARD, || {
        let m = format!("poll {}", sent.len());
        send(&mut p[0], &format!("bsend c {m}"));
        assert_eq!(text(&mut p[0]), m);
        let n = text(&mut p[0]);
        sent.push(m);
        assert!(n == "n=3" || n == "n=2", "{n}");
        n == "n=2"
    });
    for m in &sent {
        assert_eq!(
            text(&mut p[1]),
            *m,
            "p3 gets every broadcast once, in order"
        );
    }
    assert_eq!(ask(&mut unsubscribed, "plain"), "plain");
}

// ---------------------------------------------------------------------------------------------
// 4. onDisconnect exactly once, however the connection ends

/// A tally watcher: a connection subscribed to the "tally" channel.
struct Watcher {
    ws: Client,
    /// handler -> counts carried by its "disc" events, in arrival order.
    discs: HashMap<u64, Vec<u32>>,
    /// handler -> the onDisconnect count carried by each of its "msg" events.
    msgs: HashMap<u64, Vec<u32>>,
}

impl Watcher {
    fn new(addr: SocketAddr) -> Watcher {
        let mut ws = connect(addr, "/tally");
        assert_eq!(ask(&mut ws, "watch"), "watching");
        Watcher {
            ws,
            discs: HashMap::new(),
            msgs: HashMap::new(),
        }
    }

    /// Reads events until `done` holds; the socket's read timeout is the guard.
    fn until(&mut self, what: &str, mut done: impl FnMut(&Watcher) -> bool) {
        let deadline = Instant::now() + GUARD;
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            let ev = match self.ws.read() {
                Ok(Message::Text(t)) => t.to_string(),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(other) => panic!("unexpected message {other:?}"),
                Err(e) => panic!("timed out waiting for {what} ({e})"),
            };
            let f: Vec<&str> = ev.split(' ').collect();
            let num = |i: usize| -> u64 { f[i].parse().unwrap_or_else(|_| panic!("{ev:?}")) };
            match f[0] {
                "msg" => self.msgs.entry(num(1)).or_default().push(num(3) as u32),
                "disc" => self.discs.entry(num(1)).or_default().push(num(2) as u32),
                _ => panic!("unexpected event {ev:?}"),
            }
        }
    }

    /// Waits for an onDisconnect of every `ended` connection, then for the messages of fresh
    /// connections on every instance (`fresh` opens them and gives their handlers): each
    /// instance reports in order, so by then whatever it had to say about the ended ones has
    /// been said (late duplicates included). Then checks one onDisconnect each, no message
    /// after it, and none for the fresh connections.
    fn each_ended_once(
        &mut self,
        ended: &[(&str, u64)],
        fresh: impl FnOnce() -> (Vec<Client>, Vec<u64>),
    ) {
        self.until("an onDisconnect for every ended connection", |w| {
            ended.iter().all(|(_, h)| w.discs.contains_key(h))
        });
        let (_open, fresh_ids) = fresh();
        self.until("the fresh connections' messages", |w| {
            fresh_ids.iter().all(|h| w.msgs.contains_key(h))
        });
        for (how, h) in ended {
            assert_eq!(self.discs[h], [1], "{how}: onDisconnect calls for {h}");
            assert!(
                self.msgs[h].iter().all(|&d| d == 0),
                "{how}: a message reached onMessage after onDisconnect"
            );
        }
        assert!(
            fresh_ids.iter().all(|h| !self.discs.contains_key(h)),
            "open connections got no onDisconnect"
        );
    }
}

fn id(ws: &mut Client) -> u64 {
    ask(ws, "id").parse().expect("a handler number")
}

/// Three connections to `path`, ended by the client: a Close handshake, a TCP drop without
/// a Close frame, and a TCP reset (the worker reads an error, not an end of file). Each with
/// its handler, as `id` asks it.
fn ended_by_the_client(
    addr: SocketAddr,
    path: &str,
    id: fn(&mut Client) -> u64,
) -> Vec<(&'static str, u64)> {
    let mut ended = Vec::new();
    let mut ws = connect(addr, path);
    ended.push(("client close", id(&mut ws)));
    ws.close(None).unwrap();
    finish_close(ws);

    let mut ws = connect(addr, path);
    ended.push(("tcp drop", id(&mut ws)));
    ws.get_ref().shutdown(Shutdown::Both).unwrap();
    drop(ws);

    let mut ws = connect(addr, path);
    ended.push(("tcp reset", id(&mut ws)));
    close_with_reset(ws.get_ref().try_clone().unwrap());
    drop(ws);
    ended
}

#[test]
fn on_disconnect_runs_exactly_once_however_the_connection_ends() {
    let app = start_app(&ws_json(2), &tally_services(None));
    let mut w = Watcher::new(app.addr);
    let mut ended = ended_by_the_client(app.addr, "/tally", id);

    // Server-side closes decided by Lua.
    for (how, cmd, code) in [
        ("lua error", "error", 1011),
        ("onMessage false", "close", 1000),
        ("onMessage without a return", "noreturn", 1000),
        ("runaway loop", "loop", 1011),
    ] {
        let mut ws = connect(app.addr, "/tally");
        ended.push((how, id(&mut ws)));
        send(&mut ws, cmd);
        assert_eq!(ws_close_code(&mut ws), code, "{how}");
        finish_close(ws);
    }

    // Server-side closes decided by the worker: too big (1009), protocol errors (1002),
    // invalid UTF-8 in a text message (1007).
    let mut ws = connect(app.addr, "/tally");
    ended.push(("too big", id(&mut ws)));
    ws.send(Message::binary(vec![0u8; 2000])).unwrap();
    assert_eq!(ws_close_code(&mut ws), 1009);
    finish_close(ws);

    let mut s = raw_upgraded(app.addr, "/tally");
    s.write_all(&frame(true, 0, 0x1, b"id", true)).unwrap();
    let h = read_frame(&mut s).expect("the id reply");
    ended.push((
        "protocol error",
        String::from_utf8(h.payload).unwrap().parse().unwrap(),
    ));
    s.write_all(&frame(true, 0, 0x1, b"unmasked", false))
        .unwrap();
    assert_eq!(expect_close(&mut s), Some(1002));
    drop(s);

    let mut s = raw_upgraded(app.addr, "/tally");
    s.write_all(&frame(true, 0, 0x1, b"id", true)).unwrap();
    let h = read_frame(&mut s).expect("the id reply");
    ended.push((
        "bad utf-8",
        String::from_utf8(h.payload).unwrap().parse().unwrap(),
    ));
    s.write_all(&frame(true, 0, 0x1, b"ok \xff", true)).unwrap();
    assert_eq!(expect_close(&mut s), Some(1007));
    drop(s);

    w.each_ended_once(&ended, || {
        let mut fresh: Vec<Client> = (0..2).map(|_| connect(app.addr, "/tally")).collect();
        let ids = fresh.iter_mut().map(id).collect();
        (fresh, ids)
    });
}

/// A LAppS request without params, as CBOR.
fn lapps_request(method: &str) -> Vec<u8> {
    use lapps::lapps_proto::{cbor, Value};
    cbor::encode(&Value::Map(vec![
        (Value::text("lapps"), Value::Int(1)),
        (Value::text("method"), Value::text(method)),
    ]))
}

/// The handler a tally_lapps connection has (its answer to "id").
fn lapps_id(answer: &[u8]) -> u64 {
    use lapps::lapps_proto::{cbor, Value};
    let Ok(Value::Map(members)) = cbor::decode(answer) else {
        panic!("not a CBOR map: {answer:02x?}");
    };
    let result = members.iter().find(|(k, _)| *k == Value::text("result"));
    match result {
        Some((_, Value::Array(items))) => match &items[..] {
            [Value::Text(h)] => h.parse().expect("a handler number"),
            other => panic!("{other:?}"),
        },
        other => panic!("no result: {members:?} {other:?}"),
    }
}

fn lapps_client_id(ws: &mut Client) -> u64 {
    ws.send(Message::binary(lapps_request("id"))).unwrap();
    match ws.read().expect("the answer to id") {
        Message::Binary(b) => lapps_id(&b),
        other => panic!("{other:?}"),
    }
}

/// The close code, past the answers and errors that come before it.
fn lapps_close_code(ws: &mut Client) -> u16 {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return f.code.into(),
            Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_)) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

/// Section 4 for a LAppS service, with the closes only LAppS makes (1003 for garbage).
#[test]
fn a_lapps_on_disconnect_runs_exactly_once_however_the_connection_ends() {
    let app = start_app(
        &ws_json(2),
        &lapps_json(
            "./tests/apps",
            r#"{ "tally": { "instances": 2, "preload": ["bcast"] },
                 "tally_lapps": { "protocol": "LAppS", "instances": 2, "preload": ["bcast"],
                                  "max_inbound_message_size": 1024, "max_protocol_errors": 3 } }"#,
        ),
    );
    let mut w = Watcher::new(app.addr);
    let mut ended = ended_by_the_client(app.addr, "/tally_lapps", lapps_client_id);

    let mut ws = connect(app.addr, "/tally_lapps");
    ended.push(("onMessage false", lapps_client_id(&mut ws)));
    ws.send(Message::binary(lapps_request("close"))).unwrap();
    assert_eq!(lapps_close_code(&mut ws), 1000);
    finish_close(ws);

    // Malformed messages in a row: each answered -32700, then the connection closed.
    let mut ws = connect(app.addr, "/tally_lapps");
    ended.push(("garbage", lapps_client_id(&mut ws)));
    for _ in 0..3 {
        ws.send(Message::binary(vec![0xff, 0x00])).unwrap();
    }
    assert_eq!(lapps_close_code(&mut ws), 1003);
    finish_close(ws);

    let mut ws = connect(app.addr, "/tally_lapps");
    ended.push(("too big", lapps_client_id(&mut ws)));
    ws.send(Message::binary(vec![0u8; 2000])).unwrap();
    assert_eq!(lapps_close_code(&mut ws), 1009);
    finish_close(ws);

    let mut s = raw_upgraded(app.addr, "/tally_lapps");
    s.write_all(&frame(true, 0, 0x2, &lapps_request("id"), true))
        .unwrap();
    let answer = read_frame(&mut s).expect("the answer to id");
    ended.push(("protocol error", lapps_id(&answer.payload)));
    s.write_all(&frame(true, 0, 0x2, &lapps_request("id"), false))
        .unwrap();
    assert_eq!(expect_close(&mut s), Some(1002));
    drop(s);

    w.each_ended_once(&ended, || {
        let mut fresh: Vec<Client> = (0..2).map(|_| connect(app.addr, "/tally_lapps")).collect();
        let ids = fresh.iter_mut().map(lapps_client_id).collect();
        (fresh, ids)
    });
}

// ---------------------------------------------------------------------------------------------
// 5 and 6. a failing callback closes only its connection with 1011: tests/lua_safety.rs

// ---------------------------------------------------------------------------------------------
// 7. a syntax error refuses to start, naming file and line

fn broken_services() -> String {
    lapps_json(
        "./tests/apps",
        r#"{ "echo_builtin": { "builtin": "echo", "request_target": "/e" }, "broken": {} }"#,
    )
}

#[test]
fn a_syntax_error_fails_app_start_with_file_and_line() {
    let e = try_start_app(&ws_json(1), &broken_services())
        .err()
        .expect("App::start must fail");
    assert!(e.contains("tests/apps/broken/broken.lua:4:"), "{e}");
}

/// A scratch directory under target/ removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> ScratchDir {
        let dir = repo_root()
            .join("target")
            .join(format!("lua_sockets-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_binary_exits_1_and_names_the_broken_file_and_line() {
    let dir = ScratchDir::new("broken");
    let apps = repo_root().join("tests/apps");
    std::fs::write(dir.0.join("ws.json"), ws_json(1)).unwrap();
    let lapps = serde_json::json!({
        "directories": {
            "applications": apps,
            "lib": repo_root().join("lua/lib"),
            "workdir": dir.0.join("work"),
            "tmp": dir.0.join("tmp"),
        },
        "services": { "broken": {} }
    });
    std::fs::write(dir.0.join("lapps.json"), lapps.to_string()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lapps"))
        .arg("-c")
        .arg(&dir.0)
        .env_remove("WS_CONFIG")
        .env_remove("LAPPS_CONFIG")
        .env_remove("LAPPS_CONF_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lapps");
    let mut status = None;
    let waited = Instant::now();
    while status.is_none() && waited.elapsed() < GUARD {
        status = child.try_wait().unwrap();
        if status.is_none() {
            // Polling interval of a condition wait (the process exit), not synchronisation.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("lapps kept running with a broken app");
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("broken/broken.lua:4:"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// 8. unknown target

#[test]
fn an_unknown_target_gets_404_and_the_lua_service_still_answers() {
    let app = start_app(&ws_json(2), &example_services());
    for path in ["/nope", "/echo/", "/ech", "/chat/x"] {
        assert_eq!(upgrade_status(app.addr, path, ""), 404, "{path}");
    }
    let reply = http_exchange(
        app.addr,
        b"GET /missing HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    // The query string is not part of the route.
    let mut ws = connect(app.addr, "/echo?x=1");
    assert_eq!(ask(&mut ws, "still here"), "still here");
}

// ---------------------------------------------------------------------------------------------
// 9. acl and allowed_origins refuse at the handshake, before any Lua runs

#[test]
fn a_service_acl_denying_loopback_gives_403_and_runs_no_lua() {
    let app = start_app(
        &ws_json(2),
        &tally_services(Some(
            r#", "acl": { "policy": "allow", "exclude": ["127.0.0.1"] }"#,
        )),
    );
    let mut w = Watcher::new(app.addr);
    for _ in 0..3 {
        assert_eq!(upgrade_status(app.addr, "/guard", ""), 403);
    }
    // A control connection on the unguarded copy: its events are the only ones reported.
    let mut ws = connect(app.addr, "/tally");
    let h = id(&mut ws);
    ws.close(None).unwrap();
    finish_close(ws);
    w.until("the control connection's events", |w| {
        w.discs.contains_key(&h)
    });
    assert_eq!(w.msgs.keys().collect::<Vec<_>>(), [&h], "{:?}", w.msgs);
    assert_eq!(w.discs.keys().collect::<Vec<_>>(), [&h], "{:?}", w.discs);
}

#[test]
fn allowed_origins_gives_403_for_a_wrong_or_missing_origin() {
    let app = start_app(
        &ws_json(2),
        &tally_services(Some(r#", "allowed_origins": ["https://good.example"]"#)),
    );
    let mut w = Watcher::new(app.addr);
    assert_eq!(
        upgrade_status(app.addr, "/guard", "Origin: https://evil.example\r\n"),
        403
    );
    assert_eq!(upgrade_status(app.addr, "/guard", ""), 403);
    let mut ws = connect_with_origin(app.addr, "/guard", "https://good.example");
    let h = id(&mut ws);
    ws.close(None).unwrap();
    finish_close(ws);
    w.until("the allowed connection's events", |w| {
        w.discs.contains_key(&h)
    });
    assert_eq!(w.msgs.keys().collect::<Vec<_>>(), [&h], "{:?}", w.msgs);
    assert_eq!(w.discs[&h], [1]);
}

// ---------------------------------------------------------------------------------------------
// 10. ws:send to another connection's handler

#[test]
fn ws_send_to_other_handlers_reaches_them_across_instances_and_workers() {
    let app = start_app(&ws_json(2), &tally_services(None));
    let mut c: Vec<Client> = (0..8).map(|_| connect(app.addr, "/tally")).collect();
    let ids: Vec<u64> = c.iter_mut().map(id).collect();
    // One instance (c0's) fans out to every handler, its own included; c0's own copy is
    // queued before the reply of the same callback.
    send(&mut c[0], &format!("to {} for 0", ids[0]));
    assert_eq!(text(&mut c[0]), "for 0");
    assert_eq!(text(&mut c[0]), "sent");
    for (i, h) in ids.iter().enumerate().skip(1) {
        assert_eq!(ask(&mut c[0], &format!("to {h} for {i}")), "sent");
    }
    for (i, ws) in c.iter_mut().enumerate().skip(1) {
        assert_eq!(text(ws), format!("for {i}"));
    }
    // A handler whose connection is gone answers "closed" once the server has seen it end.
    let mut gone = c.pop().unwrap();
    let gone_id = ids[7];
    gone.close(None).unwrap();
    finish_close(gone);
    wait_for("the closed handler to become stale", GUARD, || {
        let r = ask(&mut c[1], &format!("to {gone_id} late"));
        assert!(r == "sent" || r == "nil closed", "{r}");
        r == "nil closed"
    });
}

#[test]
fn a_handler_survives_lua_turning_it_into_text_on_every_worker() {
    // Lua prints numbers with 14 significant digits: a longer handle came back from
    // tostring() as a neighbouring slot's, stale or someone else's.
    let app = start_app(&ws_json(2), &tally_services(None));
    let mut conns: Vec<Client> = (0..4).map(|_| connect(app.addr, "/tally")).collect();
    let mut workers = std::collections::HashSet::new();
    for ws in &mut conns {
        let h = id(ws);
        workers.insert(lapps::net::handle::ConnId::from_u64(h).unwrap().worker());
        assert_eq!(ask(ws, "tostr"), h.to_string());
        assert_eq!(ask(ws, "self back to me"), "back to me");
    }
    assert_eq!(workers.len(), 2, "both workers' handles were tried");
}

#[test]
fn module_functions_take_the_dot_form_and_answer_a_bad_message_with_nil() {
    let app = start_app(&ws_json(1), &tally_services(None));
    let mut ws = connect(app.addr, "/tally");
    send(&mut ws, "forms");
    let mut got: Vec<String> = (0..3).map(|_| text(&mut ws)).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "dot bcast",
            "dot send",
            // ws.close(1000): 1000 is no connection's handle (generations start at 1).
            "true,true,true,1,nil bad message,nil bad opcode,nil bad opcode,nil bad message,\
             nil closed",
        ]
    );
}

#[test]
fn after_ws_close_a_send_to_that_connection_is_refused_not_dropped() {
    let app = start_app(&ws_json(2), &tally_services(None));
    let mut a = connect(app.addr, "/tally");
    let mut b = connect(app.addr, "/tally");
    let b_id = id(&mut b);
    // The frame would follow our Close, which RFC 6455 5.5.1 forbids: the worker drops it, so
    // the app must hear "closed" rather than true.
    send(&mut a, &format!("closethen {b_id}"));
    assert_eq!(text(&mut b), "send=nil closed close=nil closed");
    assert_eq!(
        ws_close_code(&mut a),
        1000,
        "the Close, and no data frame before it"
    );
}

#[test]
fn a_send_to_a_connection_the_worker_is_closing_is_refused() {
    // The idle timeout: a silent peer is pinged, then the worker starts the close (1001) and
    // waits up to the close timeout for the peer's reply; meanwhile the handle is closing. (An
    // idle timeout of a second: the handler's reply must come before it, on a loaded machine.)
    let app = start_app(
        r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 },
             "idle_timeout_ms": 1000, "close_timeout_ms": 20000 }"#,
        &tally_services(None),
    );
    let mut silent = raw_upgraded(app.addr, "/tally");
    silent.write_all(&frame(true, 0, 0x1, b"id", true)).unwrap();
    // On a slow machine the idle Ping may come first.
    let reply = std::iter::from_fn(|| read_frame(&mut silent))
        .find(|f| f.opcode == 0x1)
        .expect("the handler");
    let silent_id = String::from_utf8(reply.payload).unwrap();
    assert_eq!(expect_close(&mut silent), Some(1001));
    // The silent peer never answers the Close: its connection stays open for the close
    // timeout, but nothing can be sent on it any more.
    let mut other = connect(app.addr, "/tally");
    assert_eq!(
        ask(&mut other, &format!("to {silent_id} late")),
        "nil closed"
    );
}

// ---------------------------------------------------------------------------------------------
// Back-pressure and close ordering through the real workers

#[test]
fn a_tiny_instance_queue_pauses_readers_without_losing_or_reordering_messages() {
    const N: u32 = 3000;
    let app = start_app(
        &ws_json(2),
        &lapps_json(
            "./lua/apps",
            r#"{ "echo": { "request_target": "/echo", "instances": 1, "queue_capacity": 4 } }"#,
        ),
    );
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let mut s = raw_upgraded(app.addr, "/echo");
            let mut burst = Vec::new();
            for i in 0..N {
                burst.extend(frame(true, 0, 0x2, &i.to_be_bytes(), true));
            }
            let mut w = s.try_clone().unwrap();
            let writer = std::thread::spawn(move || w.write_all(&burst).unwrap());
            std::thread::spawn(move || {
                for i in 0..N {
                    let f = read_frame(&mut s).expect("an echo before EOF");
                    assert_eq!((f.opcode, f.payload), (0x2, i.to_be_bytes().to_vec()));
                }
                writer.join().unwrap();
            })
        })
        .collect();
    for r in readers {
        r.join().expect("every message back, in order");
    }
}

#[test]
fn messages_behind_a_closing_callback_never_reach_on_message() {
    let app = start_app(&ws_json(2), &tally_services(None));
    let mut w = Watcher::new(app.addr);
    // Another connection of the service, open before the close and after it.
    let mut other = connect(app.addr, "/tally");
    let mut s = raw_upgraded(app.addr, "/tally");
    s.write_all(&frame(true, 0, 0x1, b"id", true)).unwrap();
    let h: u64 = String::from_utf8(read_frame(&mut s).expect("id").payload)
        .unwrap()
        .parse()
        .unwrap();
    // One write: the worker hands "close" and what follows to the instance together.
    let mut burst = frame(true, 0, 0x1, b"close", true);
    for i in 0..50 {
        burst.extend(frame(true, 0, 0x1, format!("after {i}").as_bytes(), true));
    }
    s.write_all(&burst).unwrap();
    assert_eq!(expect_close(&mut s), Some(1000));
    // Answer the Close, as a client does, so the connection ends without the close timeout.
    s.write_all(&frame(true, 0, 0x8, &1000u16.to_be_bytes(), true))
        .unwrap();
    assert!(closed_by_server(&mut s));
    drop(s);
    w.until("the onDisconnect", |w| w.discs.contains_key(&h));
    assert_eq!(w.discs[&h], [1]);
    assert_eq!(
        w.msgs[&h],
        [0, 0],
        "only \"id\" and \"close\" reach onMessage"
    );
    // Only that connection was closed.
    assert_eq!(ask(&mut other, "still open"), "still open");
}

#[test]
fn a_paused_connection_that_drops_gets_one_on_disconnect_after_its_last_message() {
    let app = start_app(
        &ws_json(2),
        &lapps_json(
            "./tests/apps",
            r#"{ "tally": { "instances": 1, "preload": ["bcast"], "queue_capacity": 2 } }"#,
        ),
    );
    let mut w = Watcher::new(app.addr);
    let mut victims = Vec::new();
    for n in 0..4 {
        let mut s = raw_upgraded(app.addr, "/tally");
        s.write_all(&frame(true, 0, 0x1, b"id", true)).unwrap();
        let h: u64 = String::from_utf8(read_frame(&mut s).expect("id").payload)
            .unwrap()
            .parse()
            .unwrap();
        let mut burst = Vec::new();
        for i in 0..500 {
            burst.extend(frame(true, 0, 0x1, format!("m{i}").as_bytes(), true));
        }
        s.write_all(&burst).unwrap();
        // Gone without a Close, most of the burst unread by the (paused) server: with a FIN,
        // or with a reset.
        if n % 2 == 0 {
            s.shutdown(Shutdown::Both).unwrap();
        } else {
            close_with_reset(s);
        }
        victims.push(h);
    }
    w.until("an onDisconnect for every dropped connection", |w| {
        victims.iter().all(|h| w.discs.contains_key(h))
    });
    let mut fresh = connect(app.addr, "/tally");
    let fresh_id = id(&mut fresh);
    w.until("a later message of the same instance", |w| {
        w.msgs.contains_key(&fresh_id)
    });
    for h in &victims {
        assert_eq!(w.discs[h], [1], "{h}");
        assert!(
            w.msgs[h].iter().all(|&d| d == 0),
            "{h}: message after onDisconnect"
        );
    }
}

#[test]
fn shutdown_closes_open_lua_connections_with_1001() {
    let app = start_app(&ws_json(2), &example_services());
    let mut a = connect(app.addr, "/echo");
    let mut b = connect(app.addr, "/chat");
    assert_eq!(ask(&mut a, "x"), "x");
    assert_eq!(ask(&mut b, "/join r"), "joined r");
    let stopper = std::thread::spawn(move || drop(app));
    assert_eq!(ws_close_code(&mut a), 1001);
    assert_eq!(ws_close_code(&mut b), 1001);
    finish_close(a);
    finish_close(b);
    stopper.join().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Shutdown, standalone services, large sends, fragmentation

/// The hold_reply tests one at a time: their instances poll one process-wide release queue.
static HOLD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The server with the hold_reply app alone, configured by `ws_json`.
fn hold_reply_app(ws_json: &str) -> TestApp {
    start_app(
        ws_json,
        &lapps_json(
            "./tests/apps",
            r#"{ "hold_reply": { "preload": ["mqr"], "instruction_budget": 0 } }"#,
        ),
    )
}

/// Takes the hold_reply lock and empties its release queue; the queue.
fn hold_reply_release() -> (
    std::sync::MutexGuard<'static, ()>,
    std::sync::Arc<lapps::service::mqr::Queue>,
) {
    let one = HOLD.lock().unwrap_or_else(|e| e.into_inner());
    let q = lapps::service::mqr::registry().open("hold_reply.release", 1);
    while q.poll().is_some() {}
    (one, q)
}

/// A Close the server starts on a connection whose reads are paused (its instance's queue is
/// full) must read the peer's Close reply: nothing more reaches the service, so the pause no
/// longer applies, and the handshake ends long before the close timeout.
#[test]
fn a_close_started_on_a_paused_connection_reads_the_peers_reply() {
    let ws = r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 },
                  "close_timeout_ms": 60000 }"#;
    let services = lapps_json(
        "./tests/apps",
        r#"{ "hold_reply": { "preload": ["mqr"], "instruction_budget": 0, "queue_capacity": 16 },
             "tally": { "preload": ["bcast"] } }"#,
    );
    let app = start_app(ws, &services);
    let (_one, release) = hold_reply_release();
    let mut a = raw_upgraded(app.addr, "/hold_reply");
    a.write_all(&frame(true, 0, 0x1, b"id", true)).unwrap();
    let handler = String::from_utf8(read_frame(&mut a).expect("id").payload).unwrap();
    a.write_all(&frame(true, 0, 0x1, b"hold", true)).unwrap();
    assert_eq!(read_frame(&mut a).expect("holding").payload, b"holding");
    // Messages until the server stops reading: its instance is held, its queue fills, the
    // connection is paused, then the socket buffers fill.
    let message = frame(true, 0, 0x1, &[b'x'; 1000], true);
    let mut unsent: Vec<u8> = Vec::new();
    a.set_nonblocking(true).unwrap();
    loop {
        match a.write(&message) {
            Ok(n) if n == message.len() => continue,
            Ok(n) => {
                unsent = message[n..].to_vec();
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("flooding: {e}"),
        }
    }
    a.set_nonblocking(false).unwrap();
    a.set_write_timeout(Some(GUARD)).unwrap();
    let mut b = connect(app.addr, "/tally");
    assert_eq!(ask(&mut b, &format!("closeh {handler}")), "closing");
    // Our Close reply gets through only if the server reads again (it drops the data before).
    unsent.extend(frame(true, 0, 0x8, &1000u16.to_be_bytes(), true));
    a.write_all(&unsent)
        .expect("the server reads the paused connection again after its Close");
    let close = read_frame(&mut a).expect("the server's Close");
    assert_eq!(
        (close.opcode, close.payload.as_slice()),
        (0x8, &1000u16.to_be_bytes()[..])
    );
    assert!(closed_by_server(&mut a), "TCP ends after the handshake");
    // The instance must take its release before the next hold_reply test may drain the queue.
    release.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    wait_for("the instance to take its release", GUARD, || {
        release.is_empty()
    });
    drop(app);
}

/// A peer that reads, pipelining large messages to a Lua echo, gets every reply: the worker
/// stops reading it while what it handed over and has not had handled, with what waits to be
/// sent to it, passes `outbound_high_water`. (The fairness trial's client, 1 MiB messages with
/// 200 in flight, was closed 1008 as a slow consumer: its instance's queue had taken up to
/// 64 MiB of them, and their replies passed the limit however fast it read.) Here the
/// instance is held while the peer writes until the socket refuses more; released, its
/// replies would pass the limit (4 x 16 KiB + one 64 KiB message) many times over.
#[test]
fn a_reading_peer_pipelining_large_messages_to_a_lua_echo_gets_every_reply() {
    const SIZE: usize = 32 * 1024;
    let ws = r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 },
                  "outbound_high_water": 16384 }"#;
    let services = lapps_json(
        "./tests/apps",
        r#"{ "hold_reply": { "preload": ["mqr"], "instruction_budget": 0,
                             "max_inbound_message_size": 65536 } }"#,
    );
    let app = start_app(ws, &services);
    let (_one, release) = hold_reply_release();
    let mut a = raw_upgraded(app.addr, "/hold_reply");
    a.write_all(&frame(true, 0, 0x1, b"hold", true)).unwrap();
    assert_eq!(read_frame(&mut a).expect("holding").payload, b"holding");
    let message = |i: usize| frame(true, 0, 0x2, &[(i % 251) as u8; SIZE], true);
    // Messages until the socket refuses more (the server has stopped reading), at most 64 MiB.
    let mut sent = 0;
    let mut unsent: Vec<u8> = Vec::new();
    a.set_nonblocking(true).unwrap();
    while sent < 2048 {
        let m = message(sent);
        match a.write(&m) {
            Ok(n) => {
                sent += 1;
                if n < m.len() {
                    unsent = m[n..].to_vec();
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("pipelining: {e}"),
        }
    }
    a.set_nonblocking(false).unwrap();
    // The rest of the last message and a question, written while this thread reads.
    let mut writer = a.try_clone().unwrap();
    writer.set_write_timeout(Some(GUARD)).unwrap();
    let written = std::thread::spawn(move || {
        unsent.extend(frame(true, 0, 0x1, b"id", true));
        writer.write_all(&unsent)
    });
    release.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    a.set_read_timeout(Some(GUARD)).unwrap();
    assert_eq!(read_frame(&mut a).expect("released").payload, b"released");
    for i in 0..sent {
        let f = read_frame(&mut a).unwrap_or_else(|| panic!("reply {i} of {sent}: EOF"));
        assert_eq!(
            (f.opcode, f.payload.len(), f.payload.first()),
            (0x2, SIZE, Some(&((i % 251) as u8))),
            "reply {i} of {sent} (a Close 0x8 with 1008: closed as a slow consumer)"
        );
    }
    let id = read_frame(&mut a).expect("the answer to id");
    assert!(
        id.opcode == 0x1 && id.payload.iter().all(u8::is_ascii_digit),
        "{:?}",
        String::from_utf8_lossy(&id.payload)
    );
    written.join().unwrap().expect("the server read everything");
    drop(app);
}

/// The time a connection is not read because its service is behind does not count against
/// the message it is receiving: its deadline moves by as much when reading resumes.
#[test]
fn time_paused_behind_a_busy_service_does_not_count_against_a_message() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let ws = r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 },
                  "message_timeout_ms": 1000 }"#;
    let services = lapps_json(
        "./tests/apps",
        r#"{ "hold_reply": { "preload": ["mqr"], "instruction_budget": 0, "queue_capacity": 16 } }"#,
    );
    let app = start_app(ws, &services);
    let (_one, release) = hold_reply_release();
    let mut a = raw_upgraded(app.addr, "/hold_reply");
    a.write_all(&frame(true, 0, 0x1, b"hold", true)).unwrap();
    assert_eq!(read_frame(&mut a).expect("holding").payload, b"holding");
    // In one write: more messages than the held instance's queue takes (the connection is
    // paused after this read), then the first fragment of a message (its deadline starts).
    let mut burst = Vec::new();
    for i in 0..40 {
        burst.extend(frame(true, 0, 0x1, format!("m{i}").as_bytes(), true));
    }
    burst.extend(frame(false, 0, 0x1, b"first half, ", true));
    a.write_all(&burst).unwrap();
    let client_end = a.local_addr().unwrap();
    wait_for("the server to read the burst", GUARD, || {
        server_unread(app.addr, client_end) == Some(0)
    });
    // Twice the timeout passes while the connection is paused: no Close.
    a.set_read_timeout(Some(2 * TIMEOUT)).unwrap();
    let mut b = [0u8; 64];
    match a.read(&mut b) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("nothing is expected while paused, got {other:?}"),
    }
    a.set_read_timeout(Some(GUARD)).unwrap();
    // The instance goes on: its replies, then the queue drains and the connection is read
    // again, with what is left of its message's time (the second half arrives in time).
    release.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    assert_eq!(read_frame(&mut a).expect("released").payload, b"released");
    for i in 0..40 {
        assert_eq!(
            read_frame(&mut a).expect("echo").payload,
            format!("m{i}").as_bytes()
        );
    }
    a.write_all(&frame(true, 0, 0x0, b"second half", true))
        .unwrap();
    let f = read_frame(&mut a).expect("the whole message");
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (0x1, &b"first half, second half"[..])
    );
    wait_for("the instance to take its release", GUARD, || {
        release.is_empty()
    });
    drop(a);
    drop(app);
}

/// A message that does not fit its instance's `memory_limit` fails its own connection with
/// 1011, as an error in `onMessage` would; the other connections whose messages the instance
/// handles in the same run are served (they were all closed with 1011 before).
#[test]
fn a_message_past_the_memory_limit_fails_its_connection_not_the_others_of_its_batch() {
    const FILLERS: usize = 16; // more batches than the held instance's queue takes (1 + 8)
    let ws = r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 } }"#;
    let services = lapps_json(
        "./tests/apps",
        r#"{ "hold_reply": { "preload": ["mqr"], "instruction_budget": 0, "queue_capacity": 1,
                             "memory_limit": 8388608, "max_inbound_message_size": 16777216 } }"#,
    );
    let app = start_app(ws, &services);
    let (_one, release) = hold_reply_release();
    // Every connection opens before the instance is held: no open comes between messages.
    let mut held = raw_upgraded(app.addr, "/hold_reply");
    let mut big = raw_upgraded(app.addr, "/hold_reply");
    let mut small = raw_upgraded(app.addr, "/hold_reply");
    let mut fillers: Vec<_> = (0..FILLERS)
        .map(|_| raw_upgraded(app.addr, "/hold_reply"))
        .collect();
    held.write_all(&frame(true, 0, 0x1, b"hold", true)).unwrap();
    assert_eq!(read_frame(&mut held).expect("holding").payload, b"holding");
    let read_all = |s: &std::net::TcpStream| {
        let client_end = s.local_addr().unwrap();
        wait_for("the server to read it", GUARD, || {
            server_unread(app.addr, client_end) == Some(0)
        });
    };
    // A message a worker turn: the queue fills, then the worker keeps adding to the batch it
    // holds, where the big message and then the small one go.
    for f in &mut fillers {
        f.write_all(&frame(true, 0, 0x1, b"x", true)).unwrap();
        read_all(f);
    }
    let whole = frame(true, 0, 0x2, &vec![b'b'; 10 << 20], true);
    let (head, last) = whole.split_at(whole.len() - 1);
    big.write_all(head).unwrap();
    read_all(&big);
    big.write_all(last).unwrap();
    read_all(&big);
    small.write_all(&frame(true, 0, 0x1, b"hi", true)).unwrap();
    read_all(&small);
    release.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    assert_eq!(expect_close(&mut big), Some(1011));
    assert_eq!(read_frame(&mut small).expect("hi back").payload, b"hi");
    for (i, f) in fillers.iter_mut().enumerate() {
        assert_eq!(read_frame(f).expect("x back").payload, b"x", "filler {i}");
    }
    assert_eq!(
        read_frame(&mut held).expect("released").payload,
        b"released"
    );
    wait_for("the instance to take its release", GUARD, || {
        release.is_empty()
    });
    drop(app);
}

/// A hold_reply connection holding its instance ("hold" answered), and another whose
/// `messages`, sent in one write, the server has read: past the held instance's high-water
/// mark (1 message with `queue_capacity` 1), so that reading it is paused.
fn held_and_paused(addr: SocketAddr, messages: &[&[u8]]) -> (TcpStream, TcpStream, SocketAddr) {
    let mut held = raw_upgraded(addr, "/hold_reply");
    held.write_all(&frame(true, 0, 0x1, b"hold", true)).unwrap();
    assert_eq!(read_frame(&mut held).expect("holding").payload, b"holding");
    let mut paused = raw_upgraded(addr, "/hold_reply");
    let burst: Vec<u8> = messages
        .iter()
        .flat_map(|m| frame(true, 0, 0x1, m, true))
        .collect();
    paused.write_all(&burst).unwrap();
    let client_end = paused.local_addr().unwrap();
    wait_for("the server to read the burst", GUARD, || {
        server_unread(addr, client_end) == Some(0)
    });
    (held, paused, client_end)
}

/// Lets the held hold_reply instance go on; it answers `held`, then takes its release.
fn release_held(release: &lapps::service::mqr::Queue, held: &mut TcpStream) {
    release.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    assert_eq!(read_frame(held).expect("released").payload, b"released");
    wait_for("the instance to take its release", GUARD, || {
        release.is_empty()
    });
}

/// A connection not read because its service is behind is still ended when its peer resets
/// it: its slot is free again while the service is busy, not only once it catches up.
#[test]
fn a_reset_of_a_connection_paused_behind_its_service_frees_its_slot_at_once() {
    let ws = r#"{ "ip": "127.0.0.1", "port": 0,
                  "workers": { "workers": 1, "max_connections": 2 } }"#;
    let services = lapps_json(
        "./tests/apps",
        r#"{ "hold_reply": { "preload": ["mqr"], "instruction_budget": 0, "queue_capacity": 1 } }"#,
    );
    let app = start_app(ws, &services);
    let (_one, release) = hold_reply_release();
    let (mut held, paused, _) = held_and_paused(app.addr, &[b"x", b"x", b"x"]);
    assert_eq!(upgrade_status(app.addr, "/hold_reply", ""), 503, "full");
    close_with_reset(paused);
    wait_for("the reset connection's slot", GUARD, || {
        upgrade_status(app.addr, "/hold_reply", "") == 101
    });
    release_held(&release, &mut held);
    drop(app);
}

/// What such a connection sent before its reset and the server has not read yet still
/// reaches the app (the kernel hands it over before the error), once its service catches up.
#[test]
fn a_reset_connection_paused_behind_its_service_keeps_what_it_sent() {
    let ws = r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 } }"#;
    let services = lapps_json(
        "./tests/apps",
        r#"{ "hold_reply": { "preload": ["mqr"], "instruction_budget": 0, "queue_capacity": 1 } }"#,
    );
    let app = start_app(ws, &services);
    let (_one, release) = hold_reply_release();
    let notes = lapps::service::mqr::registry().open("hold_reply.notes", 16);
    while notes.poll().is_some() {}
    let (mut held, mut paused, client_end) =
        held_and_paused(app.addr, &[b"note 0", b"note 1", b"note 2"]);
    // Paused now: this one stays in the server's socket, then the peer resets.
    let tail = frame(true, 0, 0x1, b"note tail", true);
    paused.write_all(&tail).unwrap();
    wait_for("the tail in the server's socket", GUARD, || {
        socket_queues(app.addr, client_end).map(|(_, unread)| unread) == Some(tail.len() as u64)
    });
    close_with_reset(paused);
    release_held(&release, &mut held);
    let mut seen = Vec::new();
    wait_for("every note", GUARD, || {
        while let Some(m) = notes.poll() {
            seen.push(String::from_utf8_lossy(&m).into_owned());
        }
        seen.len() == 4
    });
    assert_eq!(seen, ["note 0", "note 1", "note 2", "note tail"]);
    drop(app);
}

/// After a protocol violation nothing more of the peer is read, even while the reply to the
/// message before it is awaited (RFC 6455 7.1.7; Autobahn 3.3): the reply, then Close 1002,
/// and no Pong to a ping sent after the bad frame.
#[test]
fn after_a_protocol_violation_the_reply_owed_goes_out_and_nothing_more_is_read() {
    let app = hold_reply_app(&ws_json(1));
    let (_one, release) = hold_reply_release();
    let mut s = raw_upgraded(app.addr, "/hold_reply");
    s.write_all(&frame(true, 0, 0x1, b"hold", true)).unwrap();
    let holding = read_frame(&mut s).expect("holding");
    assert_eq!(holding.payload, b"holding");
    // RSV2 set: a violation, while the instance is still busy with "hold".
    s.write_all(&frame(true, 2, 0x1, b"bad", true)).unwrap();
    let client_end = s.local_addr().unwrap();
    wait_for("the server to read the bad frame", GUARD, || {
        server_unread(app.addr, client_end) == Some(0)
    });
    s.write_all(&frame(true, 0, 0x9, b"ping", true)).unwrap();
    wait_for("the server to read the ping", GUARD, || {
        server_unread(app.addr, client_end) == Some(0)
    });
    release.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    let released = read_frame(&mut s).expect("the reply owed");
    assert_eq!(
        (released.opcode, &released.payload[..]),
        (0x1, &b"released"[..])
    );
    // The next frame is the Close: no Pong to the ping before it or after it.
    let close = read_frame(&mut s).expect("the Close");
    let body = [
        &1002u16.to_be_bytes()[..],
        b"reserved bits set without a negotiated extension",
    ]
    .concat();
    assert_eq!((close.opcode, &close.payload[..]), (0x8, &body[..]));
    // Then the end of TCP (EOF or a reset), no byte before it; the read timeout is the guard.
    let mut rest = Vec::new();
    let end = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "bytes after the Close: {rest:?}");
    assert!(
        end.as_ref().map_or_else(
            |e| e.kind() == std::io::ErrorKind::ConnectionReset,
            |_| true
        ),
        "{end:?}"
    );
}

/// SPEC 8: the original made Close replies wait behind a busy Lua instance. A connection whose
/// messages are all answered gets its Close reply from the worker while the instance is busy
/// with another connection's message (the close timeout here is 60 s: a reply that waited for
/// the instance would come only after the release, past the read guard). One that sent a
/// message with its Close still gets that message's reply first.
#[test]
fn a_close_reply_owed_nothing_does_not_wait_for_a_busy_instance() {
    let app = hold_reply_app(&ws_json_close_timeout(1, 60_000));
    let (_one, release) = hold_reply_release();
    let mut answered = raw_upgraded(app.addr, "/hold_reply");
    answered
        .write_all(&frame(true, 0, 0x1, b"before", true))
        .unwrap();
    let echo = read_frame(&mut answered).expect("the echo");
    assert_eq!(echo.payload, b"before");
    let mut owed = raw_upgraded(app.addr, "/hold_reply");
    let mut busy = raw_upgraded(app.addr, "/hold_reply");
    busy.write_all(&frame(true, 0, 0x1, b"hold", true)).unwrap();
    assert_eq!(read_frame(&mut busy).expect("holding").payload, b"holding");

    // The instance is busy now (it waits for the release). A message and a Close in one
    // write: the message is the instance's to answer, so this Close reply waits for it.
    let mut both = frame(true, 0, 0x1, b"owed", true);
    both.extend_from_slice(&frame(true, 0, 0x8, &1000u16.to_be_bytes(), true));
    owed.write_all(&both).unwrap();
    // Everything answered: the Close reply comes now, and the end of TCP after it.
    answered
        .write_all(&frame(true, 0, 0x8, &1000u16.to_be_bytes(), true))
        .unwrap();
    assert_eq!(expect_close(&mut answered), Some(1000));
    assert!(
        closed_by_server(&mut answered),
        "the server ends TCP after its Close"
    );
    // The other two are still waiting for the instance. The worker has read `owed`'s message
    // and Close, and is done with them: it has since taken a new connection's upgrade.
    let owed_at = owed.local_addr().unwrap();
    wait_for("the server reads owed's bytes", IO_TIMEOUT, || {
        server_unread(app.addr, owed_at) == Some(0)
    });
    drop(raw_upgraded(app.addr, "/hold_reply"));
    owed.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    assert!(
        matches!(owed.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the Close after an unanswered message waits for its reply"
    );
    owed.set_nonblocking(false).unwrap();

    release.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    assert_eq!(
        read_frame(&mut busy).expect("released").payload,
        b"released"
    );
    let reply = read_frame(&mut owed).expect("the owed reply");
    assert_eq!((reply.opcode, &reply.payload[..]), (0x1, &b"owed"[..]));
    assert_eq!(expect_close(&mut owed), Some(1000));
}

/// A callback that sends large messages and then runs on: what it sent leaves once the
/// outbox holds EARLY_POST_BYTES, not when the callback ends.
#[test]
fn a_large_send_leaves_before_the_callback_that_made_it_returns() {
    let app = hold_reply_app(&ws_json(1));
    let (_one, release) = hold_reply_release();
    let mut ws = connect(app.addr, "/hold_reply");
    ws.send(Message::text("bighold")).unwrap();
    // Read while the instance still loops (the read timeout is the guard).
    match ws
        .read()
        .expect("the large message before the callback returned")
    {
        Message::Binary(b) => assert_eq!(b.len(), 300 * 1024),
        other => panic!("unexpected {other:?}"),
    }
    release.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    assert_eq!(text(&mut ws), "released");
}

/// With a close timeout longer than the shutdown's grace, a connection whose service does not
/// answer in time still gets its Close 1001 (the wait for the answers takes at most half the
/// grace), not a TCP close without one when the grace runs out.
#[test]
fn at_shutdown_a_service_that_does_not_answer_still_lets_the_close_out() {
    let app = hold_reply_app(&ws_json_close_timeout(1, 10_000));
    let (_one, release) = hold_reply_release();
    let mut ws = connect(app.addr, "/hold_reply");
    assert_eq!(ask(&mut ws, "hold"), "holding");
    let stopper = std::thread::spawn(move || drop(app));
    let code = ws.read();
    // Let the instance go so that the services stop at once.
    release.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    match code {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected Close 1001, got {other:?}"),
    }
    stopper.join().unwrap();
}

/// `printf '<request><frame>' | nc -N` against a Lua service: the peer shuts its side right
/// after its message, but still reads; the app's reply reaches it, then the server's Close.
#[test]
fn a_peer_that_shuts_its_side_after_its_message_still_gets_the_lua_reply() {
    let app = start_app(&ws_json(1), &example_services());
    for i in 0..50 {
        let mut s = TcpStream::connect(app.addr).unwrap();
        s.set_read_timeout(Some(GUARD)).unwrap();
        let mut bytes = upgrade_request(app.addr, "/echo").into_bytes();
        bytes.extend_from_slice(&frame(true, 0, 0x1, b"hi", true));
        s.write_all(&bytes).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 101"), "run {i}: {text:?}");
        assert!(
            answer.ends_with(&[0x81, 2, b'h', b'i', 0x88, 0]),
            "run {i}: the echo, then an empty Close: {text:?}"
        );
    }
}

/// A message the service took before the server began to stop gets its reply, and only then
/// the Close 1001: the app's work is not thrown away with its answer.
#[test]
fn at_shutdown_a_reply_still_owed_goes_out_before_the_close() {
    let app = start_app(
        &ws_json(1),
        &lapps_json(
            "./tests/apps",
            r#"{ "hold_reply": { "preload": ["mqr"], "instruction_budget": 0 },
                 "echo": { "builtin": "echo", "request_target": "/echo" } }"#,
        ),
    );
    let (_one, release) = hold_reply_release();
    let addr = app.addr;
    let mut ws = connect(addr, "/hold_reply");
    // On the same (only) worker: its Close tells that the worker has begun the shutdown.
    let mut builtin = connect(addr, "/echo");
    assert_eq!(ask(&mut ws, "hold"), "holding");
    // The instance is busy with "hold" now: stop the server.
    let stopper = std::thread::spawn(move || drop(app));
    assert_eq!(ws_close_code(&mut builtin), 1001);
    finish_close(builtin);
    // While the worker waits for the instance's answer, the peer is still heard.
    ws.send(Message::Ping(b"there?".to_vec().into())).unwrap();
    match ws.read() {
        Ok(Message::Pong(p)) => assert_eq!(&p[..], b"there?"),
        other => panic!("expected the pong, got {other:?}"),
    }
    // The client closes meanwhile: the reply it is owed still comes first.
    ws.close(None).unwrap();
    ws.flush().unwrap();
    let client_end = ws.get_ref().local_addr().unwrap();
    wait_for("the server to read the client's Close", GUARD, || {
        server_unread(addr, client_end) == Some(0)
    });
    release.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    assert_eq!(text(&mut ws), "released");
    assert_eq!(ws_close_code(&mut ws), 1001);
    finish_close(ws);
    stopper.join().unwrap();
}

#[test]
fn on_disconnect_runs_once_for_every_connection_still_open_at_shutdown() {
    let ws = r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 2 },
                  "close_timeout_ms": 300 }"#;
    let app = start_app(
        ws,
        &lapps_json(
            "./tests/apps",
            r#"{ "tally": { "instances": 1, "preload": ["bcast"] } }"#,
        ),
    );
    let dir = ScratchDir::new("shutdown");
    let dump = dir.0.join("tally.txt");
    let mut a = connect(app.addr, "/tally");
    let mut b = connect(app.addr, "/tally");
    assert_eq!(ask(&mut a, &format!("dump {}", dump.display())), "dumping");
    let (ha, hb) = (id(&mut a), id(&mut b));
    // c never answers the server's Close: it ends by the close timeout.
    let mut c = raw_upgraded(app.addr, "/tally");
    c.write_all(&frame(true, 0, 0x1, b"id", true)).unwrap();
    let hc: u64 = String::from_utf8(read_frame(&mut c).expect("id").payload)
        .unwrap()
        .parse()
        .unwrap();
    let stopper = std::thread::spawn(move || drop(app));
    for mut ws in [a, b] {
        assert_eq!(ws_close_code(&mut ws), 1001);
        finish_close(ws);
    }
    stopper.join().expect("shutdown completes");
    let text = std::fs::read_to_string(&dump).expect("onShutdown wrote the dump");
    let discs: HashMap<u64, u32> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    for (name, h) in [("a", ha), ("b", hb), ("c (no close answer)", hc)] {
        assert_eq!(discs.get(&h), Some(&1), "{name}: {text}");
    }
    drop(c);
}

#[test]
fn a_standalone_service_broadcasts_reach_a_network_client_once_each_in_order() {
    let app = start_app(
        &ws_json(2),
        &lapps_json(
            "./tests/apps",
            r#"{ "standalone_probe": { "standalone": true, "preload": ["bcast", "nap", "time"] },
                 "probe": { "preload": ["bcast"], "depends": ["standalone_probe"] } }"#,
        ),
    );
    let mut ws = connect(app.addr, "/probe");
    send(&mut ws, "sub 7");
    let mut ticks = Vec::new();
    while ticks.len() < 10 {
        let m = text(&mut ws);
        if m == "ok" {
            continue;
        }
        let n: u64 = m
            .strip_prefix("tick ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{m:?}"));
        ticks.push(n);
    }
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "every tick once, in order: {ticks:?}"
    );
    // The standalone run() polls must_stop(): shutdown takes no grace period (the client
    // answers the server's Close, so the close timeout plays no part either).
    let t = Instant::now();
    let stopper = std::thread::spawn(move || drop(app));
    loop {
        match ws.read() {
            Ok(Message::Close(f)) => {
                assert_eq!(f.map(|f| u16::from(f.code)), Some(1001));
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("no Close at shutdown: {e}"),
        }
    }
    finish_close(ws);
    stopper.join().unwrap();
    // Stopped by the grace timeout instead, it could not end before WORKER_SHUTDOWN_GRACE (nor
    // before the 5 s a Lua instance is given): a prompt stop is anything under it, however
    // loaded the machine.
    assert!(
        t.elapsed() < WORKER_SHUTDOWN_GRACE,
        "shutdown waited for a grace timeout: {:?}",
        t.elapsed()
    );
}

#[test]
fn one_callback_sending_twenty_thousand_messages_delivers_all_in_order() {
    let app = start_app(&ws_json(2), &tally_services(None));
    let mut ws = connect(app.addr, "/tally");
    send(&mut ws, "spam 20000");
    for i in 1..=20000 {
        assert_eq!(text(&mut ws), format!("s{i}"));
    }
    assert_eq!(text(&mut ws), "spammed");
}

#[test]
fn a_burst_past_the_slow_consumer_limit_reaches_a_reading_peer() {
    // The limit is 4 x 16 KiB + 1 KiB (tally's largest message). One callback sends 256 KiB
    // at once: the worker hands it to the kernel (a loopback socket takes megabytes before it
    // would block) instead of dropping the peer, which never had a chance to read.
    let ws = r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 1 },
                  "outbound_high_water": 16384 }"#;
    let app = start_app(ws, &tally_services(None));
    let mut ws = connect(app.addr, "/tally");
    send(&mut ws, "burst 16 16384");
    for i in 0..16 {
        match ws.read() {
            Ok(Message::Binary(b)) => assert_eq!(b.len(), 16384, "message {i}"),
            other => panic!("message {i} of the burst: got {other:?}"),
        }
    }
    assert_eq!(text(&mut ws), "bursted");
    assert!(!ask(&mut ws, "id").is_empty(), "the connection stays open");
}

#[test]
fn auto_fragment_splits_what_lua_sends() {
    let ws = r#"{ "ip": "127.0.0.1", "port": 0,
                  "workers": { "workers": 2, "auto_fragment": 1000 } }"#;
    let app = start_app(ws, &example_services());
    let mut s = raw_upgraded(app.addr, "/echo");
    let msg: Vec<u8> = (0..2500).map(|i| b'a' + (i % 26) as u8).collect();
    s.write_all(&frame(true, 0, 0x1, &msg, true)).unwrap();
    let frames: Vec<(bool, u8, usize)> = (0..3)
        .map(|_| {
            let f = read_frame(&mut s).expect("a fragment");
            (f.fin, f.opcode, f.payload.len())
        })
        .collect();
    assert_eq!(
        frames,
        [(false, 0x1, 1000), (false, 0x0, 1000), (true, 0x0, 500)]
    );
    // A client reassembles it.
    let mut ws = connect(app.addr, "/echo");
    let t = "ü".repeat(1500);
    assert_eq!(ask(&mut ws, &t), t);
}

#[test]
fn a_stale_handler_never_reaches_the_connection_that_reuses_its_slot() {
    let app = start_app(&ws_json(1), &tally_services(None));
    let mut sender = connect(app.addr, "/tally");
    let mut old = connect(app.addr, "/tally");
    let old_id = id(&mut old);
    old.close(None).unwrap();
    finish_close(old);
    wait_for("the old handler to be stale", GUARD, || {
        let r = ask(&mut sender, &format!("to {old_id} not for you"));
        assert!(r == "sent" || r == "nil closed", "{r}");
        r == "nil closed"
    });
    // One worker: the freed slot is the next one handed out (same index, next generation).
    let slot = |h: u64| h & u64::from(lapps::net::handle::ConnId::MAX_INDEX);
    let mut new = connect(app.addr, "/tally");
    let new_id = id(&mut new);
    assert_eq!(slot(new_id), slot(old_id), "the slot is reused");
    assert_ne!(new_id, old_id, "a reused slot gets a new handler");
    assert_eq!(
        ask(&mut sender, &format!("to {old_id} not for you")),
        "nil closed"
    );
    assert_eq!(ask(&mut sender, &format!("to {new_id} for you")), "sent");
    assert_eq!(
        text(&mut new),
        "for you",
        "nothing addressed to the old handler came first"
    );
}

#[test]
fn the_idle_timeout_ends_a_silent_lua_connection_with_one_on_disconnect() {
    // The timeout applies to the watcher too, which must answer its pings within one period:
    // 1 s leaves room for a loaded machine.
    let ws = r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 2 },
                  "idle_timeout_ms": 1000, "close_timeout_ms": 300 }"#;
    let app = start_app(ws, &tally_services(None));
    let mut w = Watcher::new(app.addr);
    // Never answers the ping nor the Close: ping, 1001, then the close timeout.
    let mut s = raw_upgraded(app.addr, "/tally");
    s.write_all(&frame(true, 0, 0x1, b"id", true)).unwrap();
    let h: u64 = String::from_utf8(read_frame(&mut s).expect("id").payload)
        .unwrap()
        .parse()
        .unwrap();
    // The watcher reads (and so answers pings) while it waits.
    w.until("the idle connection's onDisconnect", |w| {
        w.discs.contains_key(&h)
    });
    assert_eq!(w.discs[&h], [1]);
    let ping = read_frame(&mut s).expect("a ping");
    assert_eq!(ping.opcode, 0x9);
    assert_eq!(expect_close(&mut s), Some(1001));
}

#[test]
fn a_last_message_and_the_fin_arriving_together_still_end_the_connection() {
    // Regression: a short read used to be taken as "socket drained" even when the same
    // readiness event carried the peer's FIN, so an EOF queued behind the last message was
    // never read and the connection (and its onDisconnect) waited forever.
    let app = start_app(&ws_json(2), &tally_services(None));
    let mut w = Watcher::new(app.addr);
    let mut ended = Vec::new();
    let mut socks = Vec::new();
    for _ in 0..20 {
        let mut s = raw_upgraded(app.addr, "/tally");
        s.write_all(&frame(true, 0, 0x1, b"id", true)).unwrap();
        let h: u64 = String::from_utf8(read_frame(&mut s).expect("id").payload)
            .unwrap()
            .parse()
            .unwrap();
        ended.push(h);
        socks.push(s);
    }
    for s in &mut socks {
        s.write_all(&frame(true, 0, 0x1, b"last words", true))
            .unwrap();
        s.shutdown(Shutdown::Write).unwrap();
    }
    w.until("an onDisconnect for every half-closed connection", |w| {
        ended.iter().all(|h| w.discs.contains_key(h))
    });
    for h in &ended {
        assert_eq!(w.discs[h], [1]);
        assert_eq!(w.msgs[h], [0, 0], "the last message was delivered first");
    }
}

#[test]
fn close_events_still_queued_in_a_worker_at_shutdown_reach_on_disconnect() {
    // The only instance is busy (a long loop) while connections end: their close events
    // wait in the workers because the instance queue is full, and then the server stops.
    let ws = r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 2 },
                  "close_timeout_ms": 300 }"#;
    let app = start_app(
        ws,
        &lapps_json(
            "./tests/apps",
            r#"{ "tally": { "instances": 1, "preload": ["bcast"], "queue_capacity": 1,
                            "instruction_budget": 50000000 } }"#,
        ),
    );
    let dir = ScratchDir::new("queued-at-shutdown");
    let dump = dir.0.join("tally.txt");
    let mut a = connect(app.addr, "/tally");
    assert_eq!(ask(&mut a, &format!("dump {}", dump.display())), "dumping");
    let mut conns: Vec<(Client, u64)> = (0..100)
        .map(|_| {
            let mut ws = connect(app.addr, "/tally");
            let h = id(&mut ws);
            (ws, h)
        })
        .collect();
    send(&mut a, "loop");
    for (ws, _) in &mut conns {
        send(ws, "queued");
    }
    let ids: Vec<u64> = conns.iter().map(|(_, h)| *h).collect();
    for (ws, _) in conns {
        ws.get_ref().shutdown(Shutdown::Both).unwrap();
    }
    drop(app);
    let text = std::fs::read_to_string(&dump).expect("onShutdown wrote the dump");
    let discs: HashMap<u64, u32> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    let missing: Vec<_> = ids.iter().filter(|h| discs.get(h) != Some(&1)).collect();
    assert!(
        missing.is_empty(),
        "no single onDisconnect for {missing:?}\n{text}"
    );
}

#[test]
fn pings_are_answered_by_the_worker_while_the_lua_instance_is_busy() {
    // SPEC 8: the original made pongs wait behind a busy Lua instance. Here the worker answers
    // control frames itself: a ping to a connection whose only instance is busy with another
    // connection's message (it waits for the release, however long that takes) gets its pong
    // while the instance is still busy.
    let app = hold_reply_app(&ws_json(1));
    let (_one, release) = hold_reply_release();
    let mut busy = raw_upgraded(app.addr, "/hold_reply");
    let mut other = raw_upgraded(app.addr, "/hold_reply");
    busy.write_all(&frame(true, 0, 0x1, b"hold", true)).unwrap();
    // "holding" is handed over right before the wait: the ping goes out while the instance is
    // certainly busy.
    assert_eq!(read_frame(&mut busy).expect("holding").payload, b"holding");
    other
        .write_all(&frame(true, 0, 0x9, b"still there?", true))
        .unwrap();
    let pong = read_frame(&mut other).expect("a pong while the instance is busy");
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (0xA, &b"still there?"[..])
    );
    release.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    assert_eq!(
        read_frame(&mut busy).expect("released").payload,
        b"released"
    );
}

#[test]
fn a_slow_broadcast_recipient_is_dropped_with_1008_and_the_others_keep_receiving() {
    // Issue 5: a slow recipient cannot stall the others. It stops being read at the high-water
    // mark and is closed with 1008 once its queue passes four times that (plus one message).
    // It reads only after the 6,000 broadcasts: on a loaded machine that is past the default
    // close_timeout_ms, after which a peer that does not read is reset (its Close lost), so
    // the server here waits as long as the test may take.
    let ws = r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 2 },
                  "outbound_high_water": 65536, "close_timeout_ms": 60000 }"#;
    let services = lapps_json(
        "./lua/apps",
        r#"{ "chat": { "request_target": "/chat", "preload": ["bcast"],
                       "max_inbound_message_size": 65536 } }"#,
    );
    let app = start_app(ws, &services);
    let mut slow = raw_upgraded(app.addr, "/chat");
    slow.write_all(&frame(true, 0, 0x1, b"/join lobby", true))
        .unwrap();
    let joined = read_frame(&mut slow).expect("joined");
    assert_eq!(joined.payload, b"joined lobby");
    let mut fast = connect(app.addr, "/chat");
    send(&mut fast, "/join lobby");
    assert_eq!(text(&mut fast), "joined lobby");
    // The slow member reads nothing while ~24 MB are broadcast to the room (in lines of
    // chat.max_text bytes).
    const LINES: usize = 6_000;
    let line = "x".repeat(4_000);
    for _ in 0..LINES {
        send(&mut fast, &line);
        let got = text(&mut fast);
        assert!(got.contains(&line), "the fast member gets every broadcast");
    }
    let (data_frames, code) = frames_then_close_code(&mut slow);
    assert_eq!(code, 1008);
    assert!(
        data_frames < LINES,
        "the slow member was dropped, not fed everything"
    );
}

/// Reads a connection's frames up to the server's Close: how many came before it, and its code.
fn frames_then_close_code(s: &mut std::net::TcpStream) -> (usize, u16) {
    let mut data_frames = 0usize;
    loop {
        let f = read_frame(s).expect("frames, then a close frame");
        match f.opcode {
            0x8 => {
                return (
                    data_frames,
                    u16::from_be_bytes([f.payload[0], f.payload[1]]),
                )
            }
            _ => data_frames += 1,
        }
    }
}

/// SPEC section 8: `ws:send` is queued with back-pressure. A peer that reads nothing while
/// another connection has the instance send to it is closed with 1008 once its queue passes
/// the bound, its later sends answer `nil, "closed"`, and the sender is served throughout.
#[test]
fn a_peer_that_does_not_read_what_ws_send_queues_for_it_is_closed_with_1008() {
    let ws = r#"{ "ip": "127.0.0.1", "port": 0, "workers": { "workers": 2 },
                  "outbound_high_water": 65536 }"#;
    let app = start_app(ws, &tally_services(None));
    let mut slow = raw_upgraded(app.addr, "/tally");
    slow.write_all(&frame(true, 0, 0x1, b"id", true)).unwrap();
    let slow_id = String::from_utf8(read_frame(&mut slow).expect("its id").payload).unwrap();
    let mut sender = connect(app.addr, "/tally");
    // Up to 54 MB in 900-byte messages: far past what the socket buffers take.
    let order = format!("to {slow_id} {}", "x".repeat(900));
    let mut sent = 0usize;
    loop {
        send(&mut sender, &order);
        match text(&mut sender).as_str() {
            "sent" => sent += 1,
            "nil closed" => break,
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(sent < 60_000, "never dropped");
    }
    let (data_frames, code) = frames_then_close_code(&mut slow);
    assert_eq!(code, 1008);
    assert!(data_frames < sent, "dropped, not fed everything");
    assert_eq!(ask(&mut sender, "still here"), "still here");
}

/// On a fresh `/echo` connection, twenty times: ten messages of `opcode` and then `ending`
/// (frames) in one write; the ten echoes must come back in order, then our Close with
/// `close_body`, then the end of TCP.
fn echoes_then_close(app: &TestApp, opcode: u8, ending: &[u8], close_body: &[u8]) {
    for round in 0..20 {
        let mut s = raw_upgraded(app.addr, "/echo");
        let mut bytes = Vec::new();
        for m in 0..10 {
            bytes.extend(frame(
                true,
                0,
                opcode,
                format!("r{round} m{m}").as_bytes(),
                true,
            ));
        }
        bytes.extend_from_slice(ending);
        s.write_all(&bytes).unwrap();
        for m in 0..10 {
            let f = read_frame(&mut s).expect("an echo before the close");
            assert_eq!(
                (f.opcode, f.payload),
                (opcode, format!("r{round} m{m}").into_bytes()),
                "round {round}: echo {m} comes back in order, before the close"
            );
        }
        let close = read_frame(&mut s).expect("the close frame");
        assert_eq!(
            (close.opcode, &close.payload[..]),
            (0x8, close_body),
            "round {round}: nothing but our Close follows"
        );
        assert!(
            closed_by_server(&mut s),
            "round {round}: TCP ends after the close"
        );
    }
}

/// A protocol violation after messages the Lua echo has taken but not answered yet: the
/// answers go out first, then the Close with 1002, then TCP ends (Autobahn 3.2, 4.1.3, 5.15:
/// nothing the service answered is lost to the failure).
#[test]
fn replies_to_messages_before_a_protocol_violation_go_out_before_the_1002_close() {
    let app = start_app(&ws_json(1), &example_services());
    // RSV2 set without an extension that defines it (RFC 6455 5.2), then a Ping.
    let mut ending = frame(true, 2, 0x1, b"bad", true);
    ending.extend(frame(true, 0, 0x9, b"p", true));
    let close_body = [
        &1002u16.to_be_bytes()[..],
        b"reserved bits set without a negotiated extension",
    ]
    .concat();
    echoes_then_close(&app, 0x1, &ending, &close_body);
}

/// The peer's Close right behind messages the Lua echo has not answered yet: the answers go out
/// first, then our Close echoing the peer's code, then TCP ends (RFC 6455 5.5.1 lets an
/// endpoint finish its current messages before it answers a Close).
#[test]
fn replies_to_messages_before_the_peers_close_go_out_before_ours() {
    let app = start_app(&ws_json(1), &example_services());
    let close = frame(true, 0, 0x8, &4000u16.to_be_bytes(), true);
    echoes_then_close(&app, 0x2, &close, &4000u16.to_be_bytes());
}

#[test]
fn ws_close_answers_a_bad_code_with_nil_and_sends_the_codes_a_server_may() {
    let app = start_app(&ws_json(1), &tally_services(None));
    let mut ws = connect(app.addr, "/tally");
    // Not a close code a server may send, or not a whole number: nil, "bad close code", and
    // the connection stays open (no raise, no 1011).
    for arg in [
        "nan", "inf", "table", "abc", "1000.5", "1010", "1004", "2999", "5000",
    ] {
        assert_eq!(
            ask(&mut ws, &format!("wsclose {arg}")),
            "nil bad close code",
            "{arg}"
        );
    }
    assert_eq!(ask(&mut ws, "still"), "still");
    finish_close_with(ws, "wsclose 1013", 1013);
    finish_close_with(connect(app.addr, "/tally"), "wsclose nil", 1000);
    finish_close_with(connect(app.addr, "/tally"), "wsclose 4001", 4001);
}

/// The original's `ws:close(handler, code, reason)`: the reason goes out in the Close frame
/// (UTF-8, at most 123 bytes: RFC 6455 5.5 and 5.5.1); one that cannot is refused with nil
/// and the connection stays open.
#[test]
fn ws_close_sends_its_reason_in_the_close_frame() {
    let app = start_app(&ws_json(1), &tally_services(None));
    let mut ws = connect(app.addr, "/tally");
    for (why, err) in [
        ("long", "nil close reason too long (at most 123 bytes)"),
        ("bad", "nil invalid UTF-8"),
        ("table", "nil bad close reason"),
    ] {
        assert_eq!(ask(&mut ws, &format!("closewhy 4002 {why}")), err, "{why}");
    }
    assert_eq!(ask(&mut ws, "still"), "still");
    send(&mut ws, "closewhy 4003 max");
    match ws.read() {
        Ok(tungstenite::Message::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), 4003);
            assert_eq!(f.reason.as_str(), format!("{}x", "\u{e9}".repeat(61)));
        }
        other => panic!("expected a Close with a reason, got {other:?}"),
    }
    finish_close(ws);
    let mut ws = connect(app.addr, "/tally");
    send(&mut ws, "closewhy 1000 see you");
    match ws.read() {
        Ok(tungstenite::Message::Close(Some(f))) => {
            assert_eq!((u16::from(f.code), f.reason.as_str()), (1000, "see you"));
        }
        other => panic!("expected a Close with a reason, got {other:?}"),
    }
    finish_close(ws);
}

/// Sends `cmd`, expects the server's Close with `code`, and completes the close.
fn finish_close_with(mut ws: Client, cmd: &str, code: u16) {
    send(&mut ws, cmd);
    assert_eq!(ws_close_code(&mut ws), code, "{cmd}");
    finish_close(ws);
}

#[test]
fn calls_that_wait_answer_nil_in_a_network_service_instead_of_stalling_it() {
    let app = start_app(
        &ws_json(1),
        &lapps_json(
            "./tests/apps",
            r#"{ "blockers": { "preload": ["nap", "mqr", "cws"] } }"#,
        ),
    );
    let mut ws = connect(app.addr, "/blockers");
    let not_here = "nil,not in a network service (it would block its connections)";
    assert_eq!(
        ask(&mut ws, "go"),
        format!("nap={not_here} receive=nil,would block ready=here cws={not_here}")
    );
}
