//! mqr through the real host: standalone Lua services post and receive on process-wide queues;
//! the test reads and writes the same queues through `lapps::service::mqr`.
mod common;
#[path = "common/lua_host.rs"]
mod host;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use host::{next_text as next, *};
use lapps::service::lua::ServiceSpec;
use lapps::service::mqr::{registry, Kind, Message, Queue, Wait};
use lapps::service::registry::Registry;

fn standalone(name: &str, instances: usize) -> ServiceSpec {
    let mut s = test_app(name);
    s.standalone = true;
    s.instances = instances;
    s.preload = vec!["mqr".into(), "nap".into(), "time".into()];
    s
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Polling interval of a condition wait, not synchronisation (a spin would take a core
        // from the services it waits for).
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn four_senders_and_four_receivers_deliver_every_message_exactly_once_in_sender_order() {
    let out = registry().open("fanin.out", 16_384);
    let mut sender = standalone("mqr_fanin_sender", 4);
    sender.depends = vec!["mqr_fanin_receiver".into()];
    let receiver = standalone("mqr_fanin_receiver", 4);
    let reg = Registry::start(vec![sender, receiver], hub(1)).unwrap();

    // (receiver, sender) -> sequence numbers in the order that receiver got them.
    let mut by_pair: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
    let mut seen = HashMap::new();
    for _ in 0..4 * 2000 {
        let line = next(&out);
        assert!(!line.starts_with("error"), "{line}");
        let f: Vec<u32> = line.split(':').map(|x| x.parse().unwrap()).collect();
        let [r, s, seq] = f[..] else {
            panic!("bad line {line}")
        };
        *seen.entry((s, seq)).or_insert(0) += 1;
        by_pair.entry((r, s)).or_default().push(seq);
    }
    for s in 0..4 {
        for seq in 1..=2000 {
            assert_eq!(seen.get(&(s, seq)), Some(&1), "sender {s} message {seq}");
        }
    }
    for ((r, s), seqs) in &by_pair {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "receiver {r} got sender {s}'s messages out of order"
        );
    }
    reg.shutdown();
    assert_eq!(out.poll(), None, "a message was delivered twice");
    assert!(registry().get("fanin").unwrap().is_empty());
}

#[test]
fn a_full_queue_refuses_a_post_and_a_blocking_post_succeeds_once_drained() {
    let report = registry().open("bp.report", 64);
    let reg = Registry::start(vec![standalone("mqr_bp", 1)], hub(1)).unwrap();
    assert_eq!(next(&report), "checks ok");
    assert!(
        registry().get("bp.polled-only").is_none(),
        "polling a queue nobody made created it"
    );
    assert_eq!(next(&report), "full nil full");
    assert_eq!(next(&report), "timeout nil full");
    let bp = registry().get("bp").unwrap();
    // The long blocking post cannot have succeeded: the queue is still full.
    assert_eq!((bp.len(), bp.capacity()), (2, 2));
    assert!(report.is_empty());
    assert_eq!(
        bp.try_post(b"from rust".to_vec().into_boxed_slice())
            .map_err(|_| ()),
        Err(())
    );

    assert_eq!(&*bp.poll().unwrap(), b"a");
    assert_eq!(next(&report), "posted true nil");
    assert_eq!(&*bp.poll().unwrap(), b"b");
    assert_eq!(&*bp.poll().unwrap(), b"c");
    assert_eq!(bp.poll(), None);
    reg.shutdown();
}

/// The original's mqr carried nljson values only (`queue:post(nljson_value)`, and `recv`
/// gave one back): such a post arrives as an nljson value equal to the one posted, next to
/// strings, which stay strings.
#[test]
fn an_nljson_value_posted_arrives_as_an_nljson_value_and_a_string_as_a_string() {
    let report = registry().open("nljson.report", 16);
    let sent = registry().open("nljson.sent", 16);
    let mut sender = standalone("mqr_nljson_sender", 1);
    sender.depends = vec!["mqr_nljson_receiver".into()];
    let reg = Registry::start(vec![sender, standalone("mqr_nljson_receiver", 1)], hub(1)).unwrap();
    assert_eq!(next(&report), "userdata object string");
    assert_eq!(next(&report), "true Hello World 2.5");
    assert_eq!(next(&report), "changed object");
    assert_eq!(next(&report), r#"array [1,"two"]"#);
    assert_eq!(next(&sent), "deep nil too big");
    reg.shutdown();
}

/// An nljson message is compact CBOR in the queue, but a tree in the receiver's state: one
/// whose tree can never fit there is dropped with `nil, "too big"` (and a log line), as a
/// string too large is, not held and raised on every receive for good.
#[test]
fn an_nljson_message_whose_tree_can_never_fit_the_receiver_is_refused_and_the_next_arrives() {
    let _one = TOO_BIG.lock().unwrap_or_else(|e| e.into_inner());
    let q = registry().open("too_big", 4);
    let report = registry().open("too_big.report", 4);
    // A CBOR array of 400,000 zeros: 400 KB here, tens of MB as a tree.
    let n: u32 = 400_000;
    let mut cbor = vec![0x9a];
    cbor.extend_from_slice(&n.to_be_bytes());
    cbor.resize(cbor.len() + n as usize, 0x00);
    q.try_post(Message::new(cbor.into_boxed_slice(), Kind::Nljson))
        .unwrap();
    for m in ["second", "third!", "fourth"] {
        q.try_post(m.as_bytes().to_vec().into_boxed_slice())
            .unwrap();
    }
    too_big_reports(&report, "nil too big | 6 second | 6 third! | 6 fourth");
}

#[test]
fn a_message_too_big_for_the_receivers_memory_stays_for_its_next_receive() {
    let q = registry().open("held", 4);
    let report = registry().open("held.report", 4);
    let mut big = vec![b'x'; 4 << 20];
    big[..5].copy_from_slice(b"first");
    q.try_post(big.into_boxed_slice()).unwrap();
    q.try_post(b"second".to_vec().into_boxed_slice()).unwrap();
    let mut app = standalone("mqr_held", 1);
    app.memory_limit = 8 << 20;
    let reg = Registry::start(vec![app], hub(1)).unwrap();
    registry()
        .open("held.go", 1)
        .try_post(b"go".to_vec().into_boxed_slice())
        .unwrap();
    // The first receive fails for lack of memory; the message is not lost but comes first
    // once there is room, before the one posted after it.
    assert_eq!(
        next(&report),
        format!("false not enough memory | {} first | second", 4 << 20)
    );
    reg.shutdown();
}

/// The tests running mqr_too_big one at a time: it reads fixed queue names.
static TOO_BIG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A message larger than the receiver's memory limit leaves room for (with its app loaded)
/// could never be held there: it is dropped with `nil, "too big"` instead of failing every
/// receive of that instance for good, and the messages behind it still arrive.
#[test]
fn a_message_larger_than_the_receivers_memory_limit_is_refused_and_the_next_one_arrives() {
    let _one = TOO_BIG.lock().unwrap_or_else(|e| e.into_inner());
    let q = registry().open("too_big", 4);
    let report = registry().open("too_big.report", 4);
    // Larger than the limit; then smaller than the limit, but not beside the loaded state.
    q.try_post(vec![b'x'; 9 << 20].into_boxed_slice()).unwrap();
    q.try_post(vec![b'y'; (8 << 20) - (16 << 10)].into_boxed_slice())
        .unwrap();
    q.try_post(b"second".to_vec().into_boxed_slice()).unwrap();
    q.try_post(b"third!".to_vec().into_boxed_slice()).unwrap();
    too_big_reports(&report, "nil too big | nil too big | 6 second | 6 third!");
}

/// Runs mqr_too_big (8 MiB memory limit) on what the caller queued and checks its report.
fn too_big_reports(report: &Queue, expected: &str) {
    let mut app = standalone("mqr_too_big", 1);
    app.memory_limit = 8 << 20;
    let reg = Registry::start(vec![app], hub(1)).unwrap();
    registry()
        .open("too_big.go", 1)
        .try_post(b"go".to_vec().into_boxed_slice())
        .unwrap();
    assert_eq!(next(report), expected);
    reg.shutdown();
}

#[test]
fn a_message_held_for_want_of_memory_goes_back_to_its_queue_when_the_receiver_stops() {
    let q = registry().open("held_stop", 4);
    let report = registry().open("held_stop.report", 4);
    let mut big = vec![b'x'; 4 << 20];
    big[..5].copy_from_slice(b"first");
    q.try_post(big.clone().into_boxed_slice()).unwrap();
    let mut app = standalone("mqr_held_stop", 1);
    app.memory_limit = 8 << 20;
    let reg = Registry::start(vec![app], hub(1)).unwrap();
    registry()
        .open("held_stop.go", 1)
        .try_post(b"go".to_vec().into_boxed_slice())
        .unwrap();
    assert_eq!(next(&report), "false not enough memory");
    assert!(
        q.poll().is_none(),
        "taken by the receiver, held in its state"
    );
    // Still counted as the queue's: were the receiver left behind at shutdown (stuck past
    // the stop timeout, its state never closed), the leftovers line would report it.
    assert!(
        registry()
            .leftovers()
            .contains(&("held_stop".to_string(), 1)),
        "{:?}",
        registry().leftovers()
    );
    reg.shutdown();
    // Accepted, never delivered: back in the queue, whole.
    assert_eq!(q.poll().as_deref(), Some(&big[..]));
}

#[test]
fn shutdown_with_messages_in_flight_loses_none_that_were_accepted() {
    let report = registry().open("sd.report", 64);
    let progress = registry().open("sd.progress", 100_000);
    let mut sender = standalone("mqr_sd_sender", 4);
    sender.depends = vec!["mqr_sd_receiver".into()];
    let receiver = standalone("mqr_sd_receiver", 4);
    let reg = Registry::start(vec![sender, receiver], hub(1)).unwrap();
    let sd = registry().get("sd").unwrap();
    // Senders fill the queue while the receivers wait for "go": messages are in flight.
    wait_for("a full queue", || sd.len() == sd.capacity());
    let go = registry().open("sd.go", 8);
    for _ in 0..4 {
        go.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    }
    // Receivers and senders now run together; stop in the middle of it.
    assert_eq!(next(&progress), "progress");
    reg.shutdown();

    let (mut accepted, mut received) = (0u64, 0u64);
    for _ in 0..8 {
        let line = next(&report);
        let (what, n) = line.split_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        match what {
            "accepted" => accepted += n,
            "received" => received += n,
            _ => panic!("{line}"),
        }
    }
    assert!(accepted >= 32, "accepted {accepted}");
    assert_eq!(
        received, accepted,
        "receivers drain the queue before they stop"
    );
    assert!(sd.is_empty());
    assert!(!registry().leftovers().iter().any(|(n, _)| n == "sd"));
    assert_eq!(sd.receive(Duration::ZERO, &|| true), Err(Wait::Stopped));
}

/// A redeploy replacing a standalone receiver while a sender keeps its queue full: the old
/// version stops taking messages and ends (its onShutdown has run when `replace` returns)
/// instead of draining a queue that never empties, and the new version gets the rest: every
/// message accepted is received once, by one version or the other.
#[test]
fn a_redeployed_receiver_hands_its_queue_over_instead_of_draining_it_for_ever() {
    let q = registry().open("handover.q", 1024);
    let report = registry().open("handover.report", 4);
    let reg = Registry::start(vec![standalone("mqr_handover", 1)], hub(1)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = std::thread::spawn({
        let (q, stop) = (Arc::clone(&q), Arc::clone(&stop));
        move || {
            let mut accepted = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let msg = b"m".to_vec().into_boxed_slice();
                if q.post(msg, Duration::from_millis(50), &|| false).is_ok() {
                    accepted += 1;
                }
            }
            accepted
        }
    });
    wait_for("a full queue", || q.len() == q.capacity());
    reg.replace(standalone("mqr_handover", 1)).unwrap();
    let old = report
        .poll()
        .map(|m| String::from_utf8(m.into_vec()).unwrap());
    assert!(
        old.as_deref().is_some_and(|r| r.starts_with("received ")),
        "the old version had not stopped when replace returned: {old:?}"
    );
    stop.store(true, Ordering::SeqCst);
    let accepted = sender.join().unwrap();
    wait_for("the new version to drain the queue", || q.is_empty());
    reg.shutdown();
    let count = |line: &str| -> u64 { line.strip_prefix("received ").unwrap().parse().unwrap() };
    let received = count(&old.unwrap()) + count(&next(&report));
    assert_eq!(received, accepted, "each accepted message received once");
}

/// A network service's callbacks must not wait: a post with a timeout to a full queue answers
/// `nil, "full"` at once, as one without a timeout does, instead of stalling the instance.
#[test]
fn a_post_with_a_timeout_in_a_network_service_does_not_wait_for_room() {
    let full = registry().open("netpost.full", 1);
    full.try_post(b"first".to_vec().into_boxed_slice()).unwrap();
    let room = registry().open("netpost.room", 4);
    let app = common::start_app(
        &common::ws_json(1),
        &common::lapps_json(
            "./tests/apps",
            r#"{ "mqr_netpost": { "preload": ["mqr"] } }"#,
        ),
    );
    let mut ws = common::connect(app.addr, "/mqr_netpost");
    let t = Instant::now();
    let reply = common::ask(&mut ws, "go");
    // Both posts asked to wait up to 5 s each: an answer before that shows neither did (a
    // second to spare for a loaded machine).
    let took = t.elapsed();
    assert_eq!(reply, "full=nil,full qfull=nil,full room=true,nil");
    assert!(took < Duration::from_secs(4), "the posts waited: {took:?}");
    assert_eq!(&*full.poll().unwrap(), b"first");
    assert_eq!(full.poll(), None, "a refused post left nothing behind");
    assert_eq!(&*room.poll().unwrap(), b"here");
}

/// "pass <n> <ms>" from the run_retry app: n and the Lua-side monotonic time.
fn pass(line: &str) -> (u32, f64) {
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!((f.len(), f[0]), (3, "pass"), "{line}");
    (f[1].parse().unwrap(), f[2].parse().unwrap())
}

#[test]
fn a_receiver_whose_run_fails_is_restarted_with_a_back_off_and_drains_its_queue() {
    let passes = registry().open("retry.passes", 16);
    let out = registry().open("retry.out", 16);
    let mut s = standalone("run_retry", 1);
    s.instruction_budget = Some(1_000_000);
    let reg = Registry::start(vec![s], hub(1)).unwrap();
    let input = registry().get("retry.in").unwrap();
    // Senders fill the queue while the receiver is failing.
    for i in 0..4 {
        assert!(input
            .try_post(format!("m{i}").into_bytes().into_boxed_slice())
            .is_ok());
    }

    let (n1, t1) = pass(&next(&passes));
    let (n2, t2) = pass(&next(&passes));
    let (n3, t3) = pass(&next(&passes));
    assert_eq!((n1, n2, n3), (1, 2, 3));
    // 1 s after the error, 2 s after the budget abort (the second failure in a row).
    assert!(
        t2 - t1 >= 1000.0,
        "restarted {} ms after the error",
        t2 - t1
    );
    assert!(
        t3 - t2 >= 2000.0,
        "restarted {} ms after the abort",
        t3 - t2
    );
    for i in 0..4 {
        assert_eq!(next(&out), format!("m{i}"));
    }
    // It keeps receiving.
    assert!(input.try_post(b"later".to_vec().into_boxed_slice()).is_ok());
    assert_eq!(next(&out), "later");
    reg.shutdown();
    assert_eq!(
        passes.poll(),
        None,
        "run() was started again after it worked"
    );
}
