//! Messages through Lua instances: echo, per-connection order, onDisconnect, stale handlers,
//! back-pressure. Uses the real Hub and Registry; a `Worker` stand-in calls the Service.
#[path = "common/lua_host.rs"]
mod host;

use host::*;
use lapps::service::registry::Registry;
use lapps::service::Flow;
use lapps::ws::Opcode;

#[test]
fn echo_app_returns_text_and_binary_from_0_bytes_to_16_mib() {
    let hub = hub(1);
    let reg = Registry::start(vec![example_app("echo")], hub.clone()).unwrap();
    let svc = reg.route("/echo").expect("routed");
    assert!(reg.route("/nope").is_none());
    assert!(reg.route("/echo/").is_none(), "exact match only");
    let c = open(&hub, &*svc, 0, 1, 1);
    let sizes = [0usize, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20];
    for (i, &n) in sizes.iter().enumerate() {
        let (opcode, payload) = if i % 2 == 0 {
            (Opcode::Text, "é".repeat(n / 2).into_bytes())
        } else {
            (
                Opcode::Binary,
                (0..n).map(|b| (b * 7 % 251) as u8).collect(),
            )
        };
        assert_eq!(message(&*svc, &c, opcode, &payload), Flow::Continue);
        svc.flush(0, 1);
        let out = collect_until(&hub, |a| !a.is_empty());
        assert_eq!(
            out,
            vec![Out::Msg {
                conn: c.id,
                opcode: opcode as u8,
                payload,
                shared: false
            }],
            "size {n}"
        );
    }
}

#[test]
fn messages_of_each_connection_stay_in_order_across_instances_and_workers() {
    let hub = hub(3);
    let mut spec = example_app("echo");
    spec.instances = 4;
    let reg = Registry::start(vec![spec], hub.clone()).unwrap();
    let svc = reg.route("/echo").unwrap();
    let conns: Vec<Conn> = (0..48u32)
        .map(|i| open(&hub, &*svc, (i % 3) as usize, i, 7))
        .collect();
    let tags: std::collections::HashSet<u32> = conns.iter().map(|c| c.tag).collect();
    assert_eq!(
        tags.len(),
        4,
        "round-robin binds connections to every instance"
    );
    const N: usize = 150;
    for round in 0..N {
        for c in &conns {
            let msg = format!("{}:{round}", c.id.index());
            assert_eq!(
                message(&*svc, c, Opcode::Text, msg.as_bytes()),
                Flow::Continue
            );
        }
        // Flush every few rounds so that batches hold several messages per connection.
        if round % 5 == 4 {
            (0..3).for_each(|w| svc.flush(w, 1));
        }
    }
    (0..3).for_each(|w| svc.flush(w, 1));
    let out = collect_until(&hub, |a| a.len() == conns.len() * N);
    for c in &conns {
        let got = texts_for(&out, c.id);
        let want: Vec<String> = (0..N).map(|r| format!("{}:{r}", c.id.index())).collect();
        assert_eq!(got, want, "connection {}", c.id.index());
    }
}

#[test]
fn on_disconnect_runs_once_after_the_last_message_and_stale_handlers_get_closed() {
    let hub = hub(2);
    let reg = Registry::start(vec![probe()], hub.clone()).unwrap();
    let svc = reg.route("/probe").unwrap();
    let a = open(&hub, &*svc, 0, 1, 1);
    let b = open(&hub, &*svc, 1, 2, 1);
    // A message still queued when the connection closes reaches onMessage before
    // onDisconnect (its reply finds the connection gone).
    message(&*svc, &b, Opcode::Text, b"last words");
    close(&hub, &*svc, &b);
    text(&*svc, &a, &format!("stale {}", b.id.as_u64()));
    text(&*svc, &a, "stats");
    let out = collect_until(&hub, |o| o.len() == 2);
    assert_eq!(
        texts_for(&out, a.id),
        ["nil closed", "disc=1 dup=0 late=0 msgs=3"]
    );
    // A reused slot with a new generation is another connection: the old handle stays stale.
    let b2 = open(&hub, &*svc, 1, 2, 2);
    text(&*svc, &a, &format!("stale {}", b.id.as_u64()));
    let out = collect_until(&hub, |o| o.len() == 1);
    assert_eq!(texts_for(&out, a.id), ["nil closed"]);
    close(&hub, &*svc, &b2);
    close(&hub, &*svc, &a);
    let c = open(&hub, &*svc, 0, 3, 1);
    text(&*svc, &c, "stats");
    let out = collect_until(&hub, |o| o.len() == 1);
    assert_eq!(texts_for(&out, c.id), ["disc=3 dup=0 late=0 msgs=5"]);
}

#[test]
fn false_from_on_message_closes_only_that_connection() {
    let hub = hub(1);
    let reg = Registry::start(vec![probe()], hub.clone()).unwrap();
    let svc = reg.route("/probe").unwrap();
    let a = open(&hub, &*svc, 0, 1, 1);
    let b = open(&hub, &*svc, 0, 2, 1);
    message(&*svc, &a, Opcode::Text, b"close");
    // Queued behind the close: skipped, the app said it is done with this connection.
    message(&*svc, &a, Opcode::Text, b"after");
    text(&*svc, &b, "still here");
    let out = collect_until(&hub, |o| o.len() == 2);
    assert!(out.contains(&Out::Close {
        conn: a.id,
        code: 1000
    }));
    assert_eq!(texts_for(&out, a.id), Vec::<String>::new());
    assert_eq!(texts_for(&out, b.id), ["still here"]);
}

#[test]
fn a_full_queue_pauses_the_reader_and_resumes_it_after_draining() {
    let hub = hub(1);
    let mut spec = example_app("echo");
    spec.queue_capacity = 4;
    let reg = Registry::start(vec![spec], hub.clone()).unwrap();
    let svc = reg.route("/echo").unwrap();
    let a = open(&hub, &*svc, 0, 1, 1);
    // Nothing is flushed yet, so the fifth message is above the high-water mark.
    let flows: Vec<Flow> = (0..6)
        .map(|i| message(&*svc, &a, Opcode::Text, format!("m{i}").as_bytes()))
        .collect();
    assert_eq!(&flows[..4], &[Flow::Continue; 4]);
    assert_eq!(
        &flows[4..],
        &[Flow::Pause; 2],
        "paused, but the messages were taken"
    );
    svc.flush(0, 1);
    let out = collect_until(&hub, |o| o.iter().any(|x| matches!(x, Out::Resume { .. })));
    let resume_at = out
        .iter()
        .position(|x| *x == Out::Resume { conn: a.id })
        .expect("resume");
    let echoed = collect_until(&hub, |o| {
        texts_for(&out, a.id).len() + texts_for(o, a.id).len() == 6
    });
    let mut all = texts_for(&out, a.id);
    all.extend(texts_for(&echoed, a.id));
    assert_eq!(all, (0..6).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert!(resume_at >= 1, "resumed after draining");
    // Drained: the next message is accepted at once.
    assert_eq!(text(&*svc, &a, "again"), Flow::Continue);
    let out = collect_until(&hub, |o| !o.is_empty());
    assert_eq!(texts_for(&out, a.id), ["again"]);
}
