//! bcast: a broadcast reaches each live subscriber exactly once, encoded once, grouped per
//! worker; never after unsubscribe or close. Also the chat example and a standalone service.
#[path = "common/lua_host.rs"]
mod host;

use host::*;
use lapps::service::registry::Registry;
use std::time::{Duration, Instant};

#[test]
fn a_broadcast_reaches_each_subscriber_exactly_once_and_not_after_unsubscribe_or_close() {
    let hub = hub(3);
    let mut spec = probe();
    spec.instances = 2;
    let reg = Registry::start(vec![spec], hub.clone()).unwrap();
    let svc = reg.route("/probe").unwrap();
    let conns: Vec<Conn> = (0..12u32)
        .map(|i| open(&hub, &*svc, (i % 3) as usize, i, 1))
        .collect();
    for c in &conns {
        text(&*svc, c, "sub c");
        // Subscribing twice is one subscription.
        text(&*svc, c, "sub c");
    }
    let out = collect_until(&hub, |o| o.len() == 24);
    assert!(conns.iter().all(|c| texts_for(&out, c.id) == ["ok", "ok"]));

    text(&*svc, &conns[0], "bsend c hello");
    let out = collect_until(&hub, |o| o.len() == 13);
    for c in &conns {
        let got = texts_for(&out, c.id);
        let want: &[&str] = if c.id == conns[0].id {
            &["hello", "n=12"]
        } else {
            &["hello"]
        };
        assert_eq!(got, want, "conn {}", c.id.index());
    }
    assert_eq!(
        count(&out, |o| matches!(o, Out::Msg { shared: true, .. })),
        12,
        "sent as shared frames"
    );

    text(&*svc, &conns[1], "unsub c");
    close(&hub, &*svc, &conns[2]);
    text(&*svc, &conns[3], "bsend c again");
    let out = collect_until(&hub, |o| o.len() == 1 + 10 + 1);
    assert_eq!(texts_for(&out, conns[1].id), ["ok"]);
    assert!(texts_for(&out, conns[2].id).is_empty());
    for c in conns.iter().skip(3) {
        assert!(texts_for(&out, c.id).contains(&"again".to_string()));
    }
    assert!(texts_for(&out, conns[3].id).contains(&"n=10".to_string()));

    // Subscribing a closed handler or using an unknown channel is an error value.
    text(&*svc, &conns[0], "sub nosuch");
    text(&*svc, &conns[0], "bsend nosuch x");
    let out = collect_until(&hub, |o| o.len() == 2);
    assert_eq!(
        texts_for(&out, conns[0].id),
        ["nil no such channel", "nil no such channel"]
    );
    // Names are at most 256 bytes (channels are never removed).
    text(&*svc, &conns[0], &format!("sub {}", "n".repeat(256)));
    text(&*svc, &conns[0], &format!("sub {}", "n".repeat(257)));
    let out = collect_until(&hub, |o| o.len() == 2);
    assert_eq!(
        texts_for(&out, conns[0].id),
        ["nil no such channel", "nil bad channel id"]
    );
    // Names are text: bytes that are not UTF-8 name no channel (a lossy conversion would make
    // "\xff" and "\xfe" the same one); "c" in hex is still "c".
    text(&*svc, &conns[0], "subhex ff");
    text(&*svc, &conns[0], "subhex 63");
    let out = collect_until(&hub, |o| o.len() == 2);
    assert_eq!(texts_for(&out, conns[0].id), ["nil bad channel id", "ok"]);
}

#[test]
fn chat_members_of_a_room_get_its_messages_and_others_do_not() {
    let hub = hub(2);
    let mut spec = example_app("chat");
    spec.preload = vec!["bcast".into()];
    spec.instances = 2;
    let reg = Registry::start(vec![spec], hub.clone()).unwrap();
    let svc = reg.route("/chat").unwrap();
    let alice = open(&hub, &*svc, 0, 1, 1);
    let bob = open(&hub, &*svc, 1, 1, 1);
    let carol = open(&hub, &*svc, 1, 2, 1);
    text(&*svc, &alice, "/nick alice");
    text(&*svc, &alice, "/join lua");
    text(&*svc, &bob, "/join lua");
    text(&*svc, &carol, "/join other");
    let out = collect_until(&hub, |o| o.len() == 4);
    assert_eq!(texts_for(&out, alice.id), ["nick alice", "joined lua"]);
    text(&*svc, &alice, "hi \"all\"");
    let out = collect_until(&hub, |o| o.len() == 2);
    let line = r#"{"room":"lua","from":"alice","text":"hi \u0022all\u0022"}"#;
    assert_eq!(texts_for(&out, alice.id), [line]);
    assert_eq!(texts_for(&out, bob.id), [line]);
    text(&*svc, &carol, "/quit");
    let out = collect_until(&hub, |o| !o.is_empty());
    assert_eq!(
        out,
        [Out::Close {
            conn: carol.id,
            code: 1000
        }]
    );
}

#[test]
fn a_chat_instance_creates_at_most_max_rooms_channels() {
    let hub = hub(1);
    let mut spec = example_app("chat");
    spec.preload = vec!["bcast".into()];
    let reg = Registry::start(vec![spec], hub.clone()).unwrap();
    let svc = reg.route("/chat").unwrap();
    let c = open(&hub, &*svc, 0, 1, 1);
    // Channels are never removed: a client must not create them without bound.
    for i in 0..1000 {
        text(&*svc, &c, &format!("/join r{i}"));
    }
    let out = collect_until(&hub, |o| o.len() == 1000);
    assert!(texts_for(&out, c.id)
        .iter()
        .all(|t| t.starts_with("joined r")));
    text(&*svc, &c, "/join one_more");
    text(&*svc, &c, "/join r7");
    let out = collect_until(&hub, |o| o.len() == 2);
    assert_eq!(
        texts_for(&out, c.id),
        ["error: too many rooms", "joined r7"]
    );
}

#[test]
fn a_standalone_service_broadcasts_until_shutdown_wakes_its_nap() {
    let hub = hub(1);
    let mut sa = test_app("standalone_probe");
    sa.standalone = true;
    sa.preload = vec!["bcast".into(), "nap".into(), "time".into()];
    let mut p = probe();
    p.depends = vec!["standalone_probe".into()];
    // Given in the wrong order: the registry starts dependencies first (probe subscribes to 7,
    // which the standalone service creates in init()).
    let reg = Registry::start(vec![p, sa], hub.clone()).unwrap();
    assert!(
        reg.route("/standalone_probe").is_none(),
        "standalone: not routed"
    );
    let svc = reg.route("/probe").unwrap();
    let a = open(&hub, &*svc, 0, 1, 1);
    text(&*svc, &a, "sub 7");
    // 20 ticks reach the subscriber, then the service announces an hour-long nap.
    let out = collect_until(&hub, |o| texts_for(o, a.id).iter().any(|t| t == "napping"));
    let got = texts_for(&out, a.id);
    assert_eq!(got.iter().filter(|t| *t == "ok").count(), 1, "{got:?}");
    assert_eq!(got.last().map(String::as_str), Some("napping"), "{got:?}");
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
    reg.shutdown();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "nap not woken: {:?}",
        t.elapsed()
    );
    assert!(reg.route("/probe").is_none());
}

#[test]
fn time_broadcast_ticks_reach_chat_clients_and_it_stops_at_shutdown() {
    let hub = hub(1);
    let mut tb = example_app("time_broadcast");
    tb.standalone = true;
    tb.preload = vec!["bcast".into(), "nap".into(), "time".into()];
    let mut chat = example_app("chat");
    chat.preload = vec!["bcast".into()];
    chat.depends = vec!["time_broadcast".into()];
    let reg = Registry::start(vec![tb, chat], hub.clone()).unwrap();
    let svc = reg.route("/chat").unwrap();
    let a = open(&hub, &*svc, 0, 1, 1);
    text(&*svc, &a, "/time");
    let out = collect_until(&hub, |o| texts_for(o, a.id).len() == 2);
    let got = texts_for(&out, a.id);
    // In either order: a tick may be sent between chat's subscribing and its reply.
    assert!(got.iter().any(|t| t == "time on"), "{got:?}");
    assert!(got.iter().any(|t| t.starts_with("{\"time\":1")), "{got:?}");
    // Its one-second nap is too short to tell a woken nap from one that ran out without a
    // timed assertion; the hour-long nap of the standalone probe above shows the waking.
    reg.shutdown();
    assert!(reg.route("/chat").is_none());
}
