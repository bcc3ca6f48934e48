//! The registry's shutdown against a reload under way: what a reload starts while the server
//! stops is stopped too, never left running past `shutdown` (its `onShutdown` would never run
//! and the process would exit under it).
#[path = "common/lua_host.rs"]
mod host;

use host::*;
use lapps::service::registry::Registry;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn a_service_a_reload_is_starting_when_shutdown_begins_is_stopped_not_left_running() {
    let hub = hub(1);
    let reg = Arc::new(Registry::start(vec![probe()], hub.clone()).unwrap());
    let mut slow = test_app("slow_start");
    slow.preload = vec!["mqr".into(), "time".into()];
    slow.instruction_budget = None;
    let adding = std::thread::spawn({
        let reg = Arc::clone(&reg);
        move || reg.add(slow)
    });
    // Its onStart has begun (and takes a second): now the server stops.
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
    let added = adding.join().expect("add returns");
    let refused = added.expect_err("a start that ends after shutdown began is refused");
    assert!(refused.to_string().contains("shutting down"), "{refused}");
    assert!(
        reg.running().is_empty(),
        "left running: {:?}",
        reg.running()
    );
}
