//! bcast through the real server and real clients: a broadcast reaches each live subscriber
//! exactly once, never after unsubscribe or close; channel names and ids are checked. Also the
//! chat example and standalone services broadcasting until shutdown. That a broadcast is
//! framed once and shared is a unit test of src/service/lua/api/bcast.rs.
mod common;

use common::*;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// The probe test app (`/probe`) on two instances.
fn probe_services() -> String {
    lapps_json(
        "./tests/apps",
        r#"{ "probe": { "instances": 2, "preload": ["bcast"] } }"#,
    )
}

/// The chat example on `instances` instances.
fn chat_services(instances: usize) -> String {
    lapps_json(
        "./lua/apps",
        &format!(r#"{{ "chat": {{ "instances": {instances}, "preload": ["bcast"] }} }}"#),
    )
}

#[test]
fn a_broadcast_reaches_each_subscriber_exactly_once_and_not_after_unsubscribe_or_close() {
    // Three workers and two instances: the subscribers are spread over both.
    let app = start_app(&ws_json(3), &probe_services());
    let mut c: Vec<Client> = (0..12).map(|_| connect(app.addr, "/probe")).collect();
    for ws in &mut c {
        assert_eq!(ask(ws, "sub c"), "ok");
        assert_eq!(
            ask(ws, "sub c"),
            "ok",
            "subscribing twice is one subscription"
        );
    }
    send(&mut c[0], "bsend c hello");
    // The sender's own copy comes first: the broadcast is queued before the reply.
    assert_eq!(text(&mut c[0]), "hello");
    assert_eq!(text(&mut c[0]), "n=12", "twelve recipients, not 24");
    for (i, ws) in c.iter_mut().enumerate().skip(1) {
        assert_eq!(text(ws), "hello", "client {i}");
        // A second copy would have been queued with the first, ahead of this reply.
        assert_eq!(ask(ws, "next"), "next", "client {i}: one copy");
    }

    assert_eq!(ask(&mut c[1], "unsub c"), "ok");
    let mut closed = c.remove(2);
    closed.close(None).unwrap();
    finish_close(closed);
    let mut unsubscribed = c.remove(1);
    // Now c = [c0, c3, c4, ..., c11].
    send(&mut c[1], "bsend c again");
    assert_eq!(text(&mut c[1]), "again");
    assert_eq!(text(&mut c[1]), "n=10");
    for (i, ws) in c.iter_mut().enumerate() {
        if i != 1 {
            assert_eq!(text(ws), "again", "client {i}");
        }
    }
    assert_eq!(
        ask(&mut unsubscribed, "plain"),
        "plain",
        "nothing after unsubscribe"
    );

    // Unknown channels and bad ids are error values, not Lua errors.
    let ws = &mut c[0];
    assert_eq!(ask(ws, "sub nosuch"), "nil no such channel");
    assert_eq!(ask(ws, "bsend nosuch x"), "nil no such channel");
    // Names are at most 256 bytes (channels are never removed).
    assert_eq!(
        ask(ws, &format!("sub {}", "n".repeat(256))),
        "nil no such channel"
    );
    assert_eq!(
        ask(ws, &format!("sub {}", "n".repeat(257))),
        "nil bad channel id"
    );
    // Nor empty (as queue names).
    assert_eq!(ask(ws, "sub "), "nil bad channel id");
    // Names are text: bytes that are not UTF-8 name no channel (a lossy conversion would make
    // "\xff" and "\xfe" the same one); "c" in hex is still "c".
    assert_eq!(ask(ws, "subhex ff"), "nil bad channel id");
    assert_eq!(ask(ws, "subhex 63"), "ok");

    // Every subscription ends with its connection.
    for mut ws in c.into_iter().chain([unsubscribed]) {
        ws.close(None).unwrap();
        finish_close(ws);
    }
    app.wait_every_connection_forgotten();
}

#[test]
fn chat_members_of_a_room_get_its_messages_and_others_do_not() {
    let app = start_app(&ws_json(2), &chat_services(2));
    let mut alice = connect(app.addr, "/chat");
    let mut bob = connect(app.addr, "/chat");
    let mut carol = connect(app.addr, "/chat");
    assert_eq!(ask(&mut alice, "/nick alice"), "nick alice");
    assert_eq!(ask(&mut alice, "/join lua"), "joined lua");
    assert_eq!(ask(&mut bob, "/join lua"), "joined lua");
    assert_eq!(ask(&mut carol, "/join other"), "joined other");
    send(&mut alice, "hi \"all\"");
    let line = r#"{"room":"lua","from":"alice","text":"hi \u0022all\u0022"}"#;
    assert_eq!(text(&mut alice), line);
    assert_eq!(text(&mut bob), line);
    // Carol's next message is her own line: nothing of room "lua" came first.
    let own = ask(&mut carol, "mine");
    assert!(
        own.starts_with(r#"{"room":"other","#) && own.ends_with(r#","text":"mine"}"#),
        "{own}"
    );
    // A line past chat.max_text is refused, not escaped and fanned out.
    let refused = ask(&mut bob, &"\n".repeat(4097));
    assert!(
        refused == "error: message too long (at most 4096 bytes)",
        "{}...",
        &refused[..refused.len().min(80)]
    );
    assert_eq!(ask(&mut bob, "/leave"), "left lua");
    send(&mut carol, "/quit");
    assert_eq!(close_code(&mut carol), Some(1000));
    finish_close(carol);
    // The rooms' members leave them with their connections.
    for mut ws in [alice, bob] {
        ws.close(None).unwrap();
        finish_close(ws);
    }
    app.wait_every_connection_forgotten();
}

/// A room goes with its last member: a client that joins room after room (a hostile one
/// made 1005 and left) uses up nothing, and another client can still create one.
#[test]
fn a_room_goes_with_its_last_member_so_one_client_cannot_use_up_the_rooms() {
    let app = start_app(&ws_json(1), &chat_services(1));
    let mut ws = connect(app.addr, "/chat");
    for i in 0..1500 {
        ws.write(Message::text(format!("/join r{i}"))).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..1500 {
        assert_eq!(text(&mut ws), format!("joined r{i}"));
    }
    ws.close(None).unwrap();
    finish_close(ws);
    let mut other = connect(app.addr, "/chat");
    assert_eq!(ask(&mut other, "/join brandnew"), "joined brandnew");
    other.close(None).unwrap();
    finish_close(other);
    app.wait_every_connection_forgotten();
}

/// Two instances (a fresh service hands connections to its instances in turn): a on one
/// creates each room, b on the other follows it there and removes the room a left. Each
/// instance counts the rooms its own members are in, so nothing piles up on either side
/// (counting the rooms an instance created, a's instance ran out after 1000 steps).
#[test]
fn rooms_removed_by_another_instance_are_not_counted_against_the_first() {
    let app = start_app(&ws_json(1), &chat_services(2));
    let mut a = connect(app.addr, "/chat");
    let mut b = connect(app.addr, "/chat");
    for i in 0..1100 {
        assert_eq!(ask(&mut a, &format!("/join r{i}")), format!("joined r{i}"));
        assert_eq!(ask(&mut b, &format!("/join r{i}")), format!("joined r{i}"));
    }
    for mut ws in [a, b] {
        ws.close(None).unwrap();
        finish_close(ws);
    }
    app.wait_every_connection_forgotten();
}

/// Rooms in use are still capped per instance (chat.max_rooms, 1000): each of 1000 clients
/// sits in a room of its own, and the next new room is refused while an existing one is not.
#[test]
fn a_chat_instance_has_at_most_max_rooms_rooms_in_use() {
    raise_nofile(); // 1001 connections, both ends here
    let app = start_app(&ws_json(1), &chat_services(1));
    let mut members: Vec<Client> = (0..1000).map(|_| connect(app.addr, "/chat")).collect();
    for (i, ws) in members.iter_mut().enumerate() {
        ws.send(Message::text(format!("/join r{i}"))).unwrap();
    }
    for (i, ws) in members.iter_mut().enumerate() {
        assert_eq!(text(ws), format!("joined r{i}"));
    }
    let mut late = connect(app.addr, "/chat");
    assert_eq!(ask(&mut late, "/join one_more"), "error: too many rooms");
    assert_eq!(ask(&mut late, "/join r7"), "joined r7", "an existing room");
    // One room emptied: there is room for a new one.
    let first = members.remove(0);
    drop(first);
    let mut tries = 0;
    wait_for("room r0 to go", std::time::Duration::from_secs(10), || {
        tries += 1;
        ask(&mut late, &format!("/join new{tries}")) != "error: too many rooms"
    });
}

/// Reads until the server's Close at shutdown, which must be 1001.
fn going_away(ws: &mut Client) {
    assert_eq!(close_code(ws), Some(1001));
}

#[test]
fn a_standalone_service_broadcasts_until_shutdown_wakes_its_nap() {
    // probe depends on standalone_probe, which creates channel 7 in its init(): the server
    // starts dependencies first.
    let app = start_app(
        &ws_json(1),
        &lapps_json(
            "./tests/apps",
            r#"{ "probe": { "preload": ["bcast"], "depends": ["standalone_probe"] },
                 "standalone_probe": { "standalone": true,
                                       "preload": ["bcast", "nap", "time"] } }"#,
        ),
    );
    let refused = http_exchange(
        app.addr,
        upgrade_request(app.addr, "/standalone_probe").as_bytes(),
    );
    assert!(
        refused.starts_with("HTTP/1.1 404"),
        "standalone: not routed: {refused}"
    );
    let mut ws = connect(app.addr, "/probe");
    send(&mut ws, "sub 7");
    // 20 ticks reach the subscriber, then the service announces an hour-long nap. The reply
    // "ok" and the first ticks come from two threads, in either order.
    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("napping") {
        got.push(text(&mut ws));
    }
    assert_eq!(got.iter().filter(|t| *t == "ok").count(), 1, "{got:?}");
    let ticks: Vec<u64> = got
        .iter()
        .filter(|t| *t != "ok" && *t != "napping")
        .map(|t| t.strip_prefix("tick ").unwrap().parse().unwrap())
        .collect();
    assert_eq!(ticks.len(), 20, "{got:?}");
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
    // Only a woken nap lets the service stop: unwoken, it would hold shutdown for an hour.
    // The bound is far below that and far above any scheduling delay.
    let t = Instant::now();
    let stopper = std::thread::spawn(move || drop(app));
    going_away(&mut ws);
    finish_close(ws);
    stopper.join().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "nap not woken: {:?}",
        t.elapsed()
    );
}

#[test]
fn time_broadcast_ticks_reach_chat_clients_and_it_stops_at_shutdown() {
    let app = start_app(
        &ws_json(1),
        &lapps_json(
            "./lua/apps",
            r#"{ "chat": { "preload": ["bcast"], "depends": ["time_broadcast"] },
                 "time_broadcast": { "standalone": true, "preload": ["bcast", "nap", "time"] } }"#,
        ),
    );
    let mut ws = connect(app.addr, "/chat");
    send(&mut ws, "/time");
    let got = [text(&mut ws), text(&mut ws)];
    // In either order: a tick may be sent between chat's subscribing and its reply.
    assert!(got.iter().any(|t| t == "time on"), "{got:?}");
    assert!(got.iter().any(|t| t.starts_with("{\"time\":1")), "{got:?}");
    // Its one-second nap is too short to tell a woken nap from one that ran out without a
    // timed assertion; the hour-long nap of the standalone probe above shows the waking.
    let stopper = std::thread::spawn(move || drop(app));
    going_away(&mut ws);
    finish_close(ws);
    stopper.join().unwrap();
}
