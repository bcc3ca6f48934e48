//! Fuzzes the configuration reader (`ws.json` and `lapps.json`, split at the input's first NUL
//! byte): no input may panic; a refusal names at least one problem, and every problem prints
//! as one line an operator can read (no control characters from the input reach the log); an
//! accepted configuration has a start order, and what the rest of the server relies on holds.
#![no_main]

use lapps::config::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let (ws, lapps) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b"{}"[..]),
    };
    let (Ok(ws), Ok(lapps)) = (std::str::from_utf8(ws), std::str::from_utf8(lapps)) else {
        return;
    };
    let dir = Path::new("/etc/lapps");
    match Config::from_strs(dir, ("ws.json", ws), ("lapps.json", lapps), dir) {
        Err(e) => {
            assert!(!e.problems.is_empty(), "a refusal without a problem");
            for p in &e.problems {
                let line = p.to_string();
                assert!(
                    !line.chars().any(char::is_control),
                    "a problem that does not print as one clean line: {line:?}"
                );
                assert!(
                    !p.message.is_empty(),
                    "a problem without a message: {line:?}"
                );
            }
        }
        Ok(cfg) => {
            let order = cfg
                .lapps
                .start_order()
                .expect("an accepted configuration has a start order");
            for name in &order {
                let s = &cfg.lapps.services[name];
                assert!(s.auto_start, "{name} started without auto_start");
                for dep in &s.depends {
                    let at = |n: &str| order.iter().position(|o| o == n);
                    assert!(at(dep) <= at(name), "{name} starts before {dep}");
                }
            }
            for (name, s) in &cfg.lapps.services {
                assert_eq!(&s.name, name);
                assert!(
                    s.request_target.starts_with('/'),
                    "{name}: {}",
                    s.request_target
                );
                assert!(s.instances >= 1, "{name} without instances");
            }
            assert!(cfg.ws.workers.workers >= 1, "no IOWorker");
        }
    }
});
