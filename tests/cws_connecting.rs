//! cws connections of one instance: made to one address one at a time (RFC 6455 4.1, step 2:
//! no more than one in the CONNECTING state), thousands of them held at once, each with its
//! callbacks, without running mlua's reference stack out (and counted in the status report),
//! and made again by the docs' reconnect example.
#[path = "common/mod.rs"]
mod common;
#[path = "common/lua_host.rs"]
mod host;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use host::{hub, next_text as next, root, write_app};
use lapps::service::lua::ServiceSpec;
use lapps::service::mqr::registry;
use lapps::service::registry::Registry;

/// A standalone service `name` whose app file is `src`, with cws and mqr.
fn app_in(name: &str, src: &str) -> ServiceSpec {
    let mut s = write_app(&host::scratch("cwsc", name), name, src);
    s.standalone = true;
    s.preload = vec!["cws".into(), "mqr".into()];
    s
}

/// Reads the upgrade request on `s` (10 s guard) and answers 101.
fn answer_upgrade(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    host::answer_upgrade(s);
}

/// Whether a connection waits to be accepted on `listener` (its TCP handshake is done by the
/// kernel as soon as the client connects: a connect made is in the accept queue).
fn waiting(listener: &TcpListener) -> bool {
    listener.set_nonblocking(true).unwrap();
    let r = listener.accept();
    listener.set_nonblocking(false).unwrap();
    match r {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    }
}

/// An app that opens `n` connections to `url` at once, each with all four callbacks, posts
/// "made N" to `queue`, then "open I" as each opens (I: the order of its cws:new).
fn opener(url: &str, n: usize, queue: &str) -> String {
    format!(
        r#"local url, n, queue = {url:?}, {n}, {queue:?}
local p = {{}}
p.init = function() end
p.run = function()
  local order = {{}}
  for i = 1, n do
    local h = assert(cws:new(url, {{
      onopen = function(h) assert(mqr:post(queue, "open " .. order[h])) end,
      onmessage = function() end,
      onerror = function(h, e) assert(mqr:post(queue, "onerror " .. order[h] .. " " .. e)) end,
      onclose = function() end,
    }}))
    order[h] = i
  end
  assert(mqr:post(queue, "made " .. cws:count()))
  while not must_stop() do cws:eventLoop(0.05) end
end
return p
"#
    )
}

#[test]
fn connections_to_one_address_connect_one_at_a_time() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let out = registry().open("cwsc.serial", 16);
    let src = opener(&url, 3, "cwsc.serial");
    let reg = Registry::start(vec![app_in("serial", &src)], hub(1)).unwrap();
    assert_eq!(next(&out), "made 3");
    // The first is connecting (its upgrade unanswered): the others have not connected at all.
    let (mut first, _) = listener.accept().unwrap();
    assert!(
        !waiting(&listener),
        "a second connect while the first is CONNECTING"
    );
    answer_upgrade(&mut first);
    assert_eq!(next(&out), "open 1");
    // Its turn came: the second connects, the third still waits.
    let (second, _) = listener.accept().unwrap();
    assert!(
        !waiting(&listener),
        "a third connect while the second is CONNECTING"
    );
    // One that fails frees the address as one that opens does.
    second.shutdown(std::net::Shutdown::Both).unwrap();
    let error = next(&out);
    assert!(error.starts_with("onerror 2 "), "{error}");
    let (mut third, _) = listener.accept().unwrap();
    answer_upgrade(&mut third);
    assert_eq!(next(&out), "open 3");
    // The failed one is gone from the count once dropped (within its round).
    let mut status = reg.status().join("\n");
    for _ in 0..200 {
        if status.contains("; 2 cws connection(s)") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        status = reg.status().join("\n");
    }
    assert!(status.contains("; 2 cws connection(s)"), "{status}");
    reg.shutdown();
}

#[test]
fn thousands_of_connections_with_their_callbacks_are_held_without_running_out_of_references() {
    // 4 callbacks on each of 2,500 connections: 10,000 functions, more than the ~8,000 slots
    // of mlua's reference stack, which held them before (and aborted the server once full).
    common::raise_nofile();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let out = registry().open("cwsc.many", 16);
    let src = opener(&url, 2500, "cwsc.many");
    let reg = Registry::start(vec![app_in("many", &src)], hub(1)).unwrap();
    assert_eq!(next(&out), "made 2500");
    // The status report places their descriptors.
    let status = reg.status().join("\n");
    assert!(
        status.contains("service many: 1 instance(s), standalone; 2500 cws connection(s)"),
        "{status}"
    );
    // And their callbacks still run: the first opens.
    let (mut first, _) = listener.accept().unwrap();
    answer_upgrade(&mut first);
    assert_eq!(next(&out), "open 1");
    reg.shutdown();
}

/// The next connection on `listener`, waited for at most 20 s.
fn accept_within(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                listener.set_nonblocking(false).unwrap();
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no connection in 20 s"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// The reconnect example of docs/lua-api.md, run as written (its URL made this test's): a
/// server that closes is connected to again, each time.
#[test]
fn the_reconnect_example_of_the_docs_reconnects() {
    let doc = std::fs::read_to_string(root().join("docs/lua-api.md")).unwrap();
    let from = doc
        .find("backing off from\n0.5 s to 30 s")
        .expect("the example's lead-in");
    let code = &doc[from..];
    let code = &code[code.find("```lua\n").unwrap() + 7..];
    let code = &code[..code.find("```").unwrap()];
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let src = code.replace("wss://feed.example.org/stream", &url);
    assert_ne!(src, code, "the example's URL");
    let mut spec = app_in("reconnect", &src);
    spec.preload = vec!["cws".into(), "time".into()];
    let reg = Registry::start(vec![spec], hub(1)).unwrap();
    for round in 0..3 {
        let mut s = accept_within(&listener);
        answer_upgrade(&mut s);
        // Close 1000, then the end of TCP once the client's Close reply has come.
        s.write_all(&[0x88, 0x02, 0x03, 0xe8]).unwrap();
        let mut reply = [0u8; 8];
        s.read_exact(&mut reply)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(reply[0], 0x88, "round {round}: the client's Close");
    }
    reg.shutdown();
}
