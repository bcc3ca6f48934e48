//! The process's limit on mqr queues, seen from Lua: queues are never removed, so a service
//! that makes them without end is refused with `nil, "too many queues"` (and a log line) once
//! the process has `MAX_QUEUES`, instead of taking the machine's memory. Its own test binary:
//! it fills the process-wide table.
#[path = "common/lua_host.rs"]
mod host;

use std::time::Duration;

use lapps::service::mqr::{registry, MAX_QUEUES};
use lapps::service::registry::Registry;

#[test]
fn a_service_that_makes_queues_without_end_is_refused_at_the_limit() {
    let report = registry().open("many.report", 4);
    let mut app = host::test_app("mqr_many");
    app.standalone = true;
    app.preload = vec!["mqr".into()];
    let reg = Registry::start(vec![app], host::hub(1)).unwrap();
    let line = report
        .receive(Duration::from_secs(60), &|| false)
        .map(|m| String::from_utf8(m.into_vec()).unwrap())
        .expect("the app's report");
    // Every queue the process has but "many.report" is one the app made.
    assert_eq!(
        line,
        format!(
            "created {} (too many queues); new nil too many queues; existing true nil",
            MAX_QUEUES - 1
        )
    );
    reg.shutdown();
}
