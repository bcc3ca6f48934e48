//! The registry's shutdown against a reload under way: what a reload starts while the server
//! stops is stopped too, never left running past `shutdown` (its `onShutdown` would never run
//! and the process would exit under it). And against services that do not stop: `shutdown`
//! ends within its budget all the same (systemd kills a stop that outlasts TimeoutStopSec).
#[path = "common/lua_host.rs"]
mod host;

use host::*;
use lapps::net::handle::ConnId;
use lapps::service::lua::ServiceSpec;
use lapps::service::registry::Registry;
use lapps::service::WorkerCtx;
use lapps::ws::Opcode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The worker's side of the `Service` interface, played by the test thread in the two
/// reload tests below: each needs a connection event at a point a real worker passes in
/// microseconds (a close event not yet handed over; a handshake completing after the swap),
/// which no client can hold it at. The disc_report app they run sends nothing.
struct Worker(usize);

impl WorkerCtx for Worker {
    fn worker(&self) -> usize {
        self.0
    }
    fn send(&mut self, _conn: ConnId, _opcode: Opcode, _payload: &[u8]) -> bool {
        false
    }
}

#[test]
fn a_service_a_reload_is_starting_when_shutdown_begins_is_stopped_not_left_running() {
    let hub = hub(1);
    let reg = Arc::new(Registry::start(vec![probe()], hub.clone()).unwrap());
    let mut slow = test_app("slow_start");
    slow.preload = vec!["mqr".into(), "time".into()];
    slow.instruction_budget = None;
    let go = lapps::service::mqr::registry().open("slow_start.go", 4);
    let adding = std::thread::spawn({
        let reg = Arc::clone(&reg);
        move || reg.add(slow)
    });
    // Its onStart has begun (and lasts until told): now the server stops.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lapps::service::mqr::registry()
        .get("slow_start.started")
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "onStart of slow_start never began"
        );
        std::thread::sleep(Duration::from_millis(5)); // polling interval of the wait
    }
    reg.shutdown();
    go.try_post(b"go".to_vec().into_boxed_slice()).unwrap();
    let added = adding.join().expect("add returns");
    let refused = added.expect_err("a start that ends after shutdown began is refused");
    assert!(refused.to_string().contains("shutting down"), "{refused}");
    assert!(
        reg.running().is_empty(),
        "left running: {:?}",
        reg.running()
    );
}

/// The stuck_stop tests one at a time: they count the posts on one process-wide queue.
static STUCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A service running tests/apps/stuck_stop, whose onShutdown posts to "stuck_stop.began",
/// then blocks for a minute: it holds any grace it is given.
fn stuck(name: &str) -> ServiceSpec {
    let mut s = test_app("stuck_stop");
    s.name = name.to_string();
    s.request_target = format!("/{name}");
    s.preload = vec!["mqr".into()];
    s.allow_ffi = true;
    s
}

/// A standalone service running test app `app` with mqr and the ffi.
fn standalone_with_ffi(app: &str) -> ServiceSpec {
    let mut s = test_app(app);
    s.standalone = true;
    s.preload = vec!["mqr".into()];
    s.allow_ffi = true;
    s
}

/// The mqr queue `name`, emptied of what an earlier test left.
fn emptied(name: &str) -> Arc<lapps::service::mqr::Queue> {
    let queue = lapps::service::mqr::registry().open(name, 8);
    while queue.poll().is_some() {}
    queue
}

/// Waits for `n` more stuck_stop onShutdown calls to have begun.
fn began(n: usize) {
    let queue = lapps::service::mqr::registry().open("stuck_stop.began", 16);
    for i in 0..n {
        queue
            .receive(Duration::from_secs(10), &|| false)
            .unwrap_or_else(|_| panic!("onShutdown {} of {n} never began", i + 1));
    }
}

#[test]
fn shutdown_ends_within_its_budget_when_no_service_finishes_stopping() {
    let _one = STUCK.lock().unwrap_or_else(|e| e.into_inner());
    let hub = hub(1);
    let specs = ["stuck_a", "stuck_b", "stuck_c"].map(stuck).to_vec();
    let reg = Registry::start(specs, hub.clone()).unwrap();
    // Below the 5 s one service may take: the three stop at the same time (none depends on
    // another), and each is waited for until the budget is spent. One after the other,
    // each waited for its 5 s: 15 s.
    let budget = Duration::from_secs(4);
    let took = shutdown_within(&reg, budget);
    assert!(
        took >= budget,
        "shutdown took {took:?}: it did not wait for the first services"
    );
    // Not waited for is not left running: every one was asked to stop.
    began(3);
    assert!(reg.running().is_empty(), "left: {:?}", reg.running());
    // Their threads still run (blocked in onShutdown): the status report says so.
    let status = reg.status();
    for name in ["stuck_a", "stuck_b", "stuck_c"] {
        let line = format!("service {name} instance 0: its thread still runs, ");
        assert!(
            status
                .iter()
                .any(|l| l.starts_with(&line) && l.contains(" after it did not stop in time")),
            "{line:?} missing in {status:#?}"
        );
    }
}

/// A service that does not stop holds up no service that does not depend on it: each is
/// asked to stop at once and waited for on its own. They stopped one after another, so a
/// stuck one took the budget and a receiver behind it in the list was asked to stop only
/// when the budget was spent (not waited for: what it had accepted was lost).
#[test]
fn a_stuck_service_does_not_hold_up_the_stop_of_another() {
    let _one = STUCK.lock().unwrap_or_else(|e| e.into_inner());
    let hub = hub(1);
    let report = standalone_with_ffi("slow_report");
    let done = emptied("slow_report.done");
    // Started last, stopped first by the old order: it held the whole budget.
    let reg = Registry::start(vec![report, stuck("stuck_other")], hub.clone()).unwrap();
    let budget = Duration::from_secs(3);
    shutdown_within(&reg, budget);
    began(1);
    assert!(
        !done.is_empty(),
        "slow_report's onShutdown (300 ms) had not run when the shutdown returned"
    );
}

/// Each service is waited for at most 5 s, also when the budget has more left: three that do
/// not stop, side by side, take 5 s of a budget of 20 s, neither all of it nor 10 s or 15 s
/// (5 s each for two or three, one after another). The margin is the loaded machine's.
#[test]
fn a_service_that_does_not_stop_is_waited_for_at_most_5_s() {
    let _one = STUCK.lock().unwrap_or_else(|e| e.into_inner());
    let specs = ["stuck_d", "stuck_e", "stuck_f"].map(stuck).to_vec();
    let reg = Registry::start(specs, hub(1)).unwrap();
    let took = shutdown_within(&reg, Duration::from_secs(20));
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(9),
        "shutdown took {took:?}: each service's wait is 5 s"
    );
    began(3);
}

/// Shuts `reg` down with `budget`, asserting it ends within the budget and 3 s; how long it took.
fn shutdown_within(reg: &Registry, budget: Duration) -> Duration {
    reg.set_shutdown_budget(budget);
    let t = Instant::now();
    reg.shutdown();
    let took = t.elapsed();
    assert!(
        took < budget + Duration::from_secs(3),
        "shutdown took {took:?} with a budget of {budget:?}"
    );
    took
}

#[test]
fn a_retiring_version_that_does_not_stop_is_waited_for_within_the_budget_too() {
    let _one = STUCK.lock().unwrap_or_else(|e| e.into_inner());
    let hub = hub(1);
    let old = stuck("stuck_r");
    let reg = Registry::start(vec![old.clone()], hub.clone()).unwrap();
    // The old version retires in the background: its onShutdown begins and blocks there.
    assert_eq!(reg.replace(old).unwrap(), 0);
    began(1);
    // Joining the retiring version's thread took its 5 s grace, then the new one's 5 s.
    shutdown_within(&reg, Duration::from_secs(2));
    // The new version was asked to stop all the same.
    began(1);
}

/// A retiring version that does not stop takes half the budget at most: the running
/// services are waited for with the rest (a receiver drains what it accepted, onShutdown
/// runs). It took the whole budget, and every running service got none.
#[test]
fn a_stuck_retiring_version_leaves_the_running_services_half_the_budget() {
    let _one = STUCK.lock().unwrap_or_else(|e| e.into_inner());
    let hub = hub(1);
    let old = stuck("stuck_half");
    let report = standalone_with_ffi("slow_report");
    let done = emptied("slow_report.done");
    let reg = Registry::start(vec![old, report], hub.clone()).unwrap();
    // Replaced by a version that stops at once; the old one's onShutdown blocks a minute.
    let mut new = probe();
    new.name = "stuck_half".into();
    new.request_target = "/stuck_half".into();
    assert_eq!(reg.replace(new).unwrap(), 0);
    began(1);
    shutdown_within(&reg, Duration::from_secs(4));
    assert!(
        !done.is_empty(),
        "shutdown returned before slow_report's onShutdown (300 ms) was over"
    );
}

/// A standalone version a redeploy is stopping (before its new version starts) when the
/// server stops is waited for as a retiring version is: it was in neither list then, and
/// the process exited under its onShutdown.
#[test]
fn a_shutdown_during_a_standalone_hand_over_waits_for_the_old_version() {
    let hub = hub(1);
    let spec = standalone_with_ffi("slow_handover");
    let events = emptied("slow_handover.events");
    let reg = Arc::new(Registry::start(vec![spec.clone()], hub.clone()).unwrap());
    let replacing = std::thread::spawn({
        let reg = Arc::clone(&reg);
        move || reg.replace(spec)
    });
    let next = || {
        let m = events
            .receive(Duration::from_secs(10), &|| false)
            .expect("an event");
        String::from_utf8(m.into_vec()).unwrap()
    };
    assert_eq!(next(), "stopping", "the hand-over began");
    reg.shutdown();
    assert_eq!(
        events
            .poll()
            .map(|m| String::from_utf8(m.into_vec()).unwrap()),
        Some("stopped".to_string()),
        "shutdown returned before the old version's onShutdown"
    );
    let refused = replacing.join().expect("replace returns");
    assert!(
        refused.is_err(),
        "the new version does not start after shutdown"
    );
}

/// The disc_report tests one at a time: they read the one process-wide queue its instances
/// post to.
static DISC: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes the disc_report lock and empties its queue (another test's versions post to it when
/// they stop).
fn disc_report_events() -> (
    std::sync::MutexGuard<'static, ()>,
    Arc<lapps::service::mqr::Queue>,
) {
    let one = DISC.lock().unwrap_or_else(|e| e.into_inner());
    let events = lapps::service::mqr::registry().open("disc_report.events", 16);
    while events.poll().is_some() {}
    (one, events)
}

/// A replaced version stops only once the close events of its connections have reached it:
/// a worker removes a connection (from the version's set) before it hands over the close
/// event, which waits in the worker's batch while the instance's queue is full. The version
/// used to stop 20 ms after its last connection left the set, and such an onDisconnect never
/// ran.
#[test]
fn a_retiring_version_waits_for_close_events_still_in_a_workers_batch() {
    use lapps::service::mqr::Wait;
    let (_one, events) = disc_report_events();
    let hub = hub(1);
    let mut spec = test_app("disc_report");
    spec.preload = vec!["mqr".into()];
    let reg = Registry::start(vec![spec.clone()], hub.clone()).unwrap();
    let old = reg.route("/disc_report").expect("routed");
    // This thread plays the worker: a connection opens, ends, and its close event is queued
    // in the worker's batch and not handed over yet.
    let id = ConnId::new(0, 1, 1);
    hub.port(0).set_speaks(1, 1, old.speaks());
    let tag = old.on_open(&mut Worker(0), id).expect("opened");
    old.flush(0, 1);
    hub.port(0).set_dead(id.index());
    old.on_close(&mut Worker(0), id, tag);
    assert_eq!(reg.replace(spec).unwrap(), 0, "no connection left to ask");
    assert_eq!(
        events.receive(Duration::from_millis(500), &|| false),
        Err(Wait::Timeout),
        "the old version stopped before its close event was handed over"
    );
    old.flush(0, 1);
    let next = || {
        let m = events
            .receive(Duration::from_secs(10), &|| false)
            .expect("an event");
        String::from_utf8(m.into_vec()).unwrap()
    };
    assert_eq!(next(), "disc");
    assert_eq!(next(), "stopped");
    reg.shutdown();
}

/// A handshake routed to a version just before it was replaced may complete after that
/// version has stopped: it is refused (the worker closes it with 1001, the client reconnects to
/// the new version) rather than opened on instances that no longer read their queue.
#[test]
fn a_retired_version_takes_no_connection_routed_to_it_before_the_swap() {
    let (_one, events) = disc_report_events();
    let hub = hub(1);
    let mut spec = test_app("disc_report");
    spec.name = "disc_late".into();
    spec.request_target = "/disc_late".into();
    spec.preload = vec!["mqr".into()];
    let reg = Registry::start(vec![spec.clone()], hub.clone()).unwrap();
    let old = reg.route("/disc_late").expect("routed");
    assert_eq!(reg.replace(spec).unwrap(), 0);
    // The old version has stopped (its onShutdown ran) ...
    let stopped = events
        .receive(Duration::from_secs(10), &|| false)
        .expect("the old version stops");
    assert_eq!(&*stopped, b"stopped");
    // ... and the connection routed to it before the swap opens now.
    let id = ConnId::new(0, 1, 1);
    hub.port(0).set_speaks(1, 1, old.speaks());
    assert_eq!(old.on_open(&mut Worker(0), id), None);
    reg.shutdown();
}

/// Services stop in reverse dependency order, so that a sender that `depends` on its `mqr`
/// receiver stops first and the receiver drains what it accepted: also after a redeploy
/// replaced the receiver (which made it the last service started).
#[test]
fn a_replaced_dependency_still_stops_after_the_service_that_depends_on_it() {
    let order = lapps::service::mqr::registry().open("stop_order", 8);
    while order.poll().is_some() {}
    let app = |name: &str| {
        let mut s = test_app(name);
        s.preload = vec!["mqr".into(), "nap".into()];
        s.standalone = true;
        s
    };
    let mut a = app("stop_order_a");
    a.depends = vec!["stop_order_b".into()];
    let reg = Registry::start(vec![app("stop_order_b"), a], hub(1)).unwrap();
    reg.replace(app("stop_order_b")).expect("b redeployed");
    assert_eq!(
        std::str::from_utf8(&order.poll().expect("the old b stopped")).unwrap(),
        "stop_order_b stopped"
    );
    reg.shutdown();
    let stopped: Vec<String> = std::iter::from_fn(|| order.poll())
        .map(|m| String::from_utf8(m.into_vec()).unwrap())
        .collect();
    assert_eq!(stopped, ["stop_order_a stopped", "stop_order_b stopped"]);
}
