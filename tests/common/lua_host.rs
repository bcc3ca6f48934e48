//! Helpers for the Registry-level tests (start-up errors, standalone services, mqr, cws): the
//! service specs of the test and example apps and of apps written by a test, the real Hub a
//! Registry runs on, mqr messages as text, and the server's side of a cws client's upgrade.
//! What a connection sees is tested through the real server instead (tests/common/mod.rs).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lapps::net::hub::Hub;
use lapps::service::lua::ServiceSpec;
use lapps::service::mqr::Queue;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A spec for `dir/name/name.lua` with the app dir and lua/lib on package.path.
pub fn spec(dir: &Path, name: &str) -> ServiceSpec {
    let app_dir = dir.join(name);
    let mut s = ServiceSpec::new(name, app_dir.join(format!("{name}.lua")));
    s.package_paths = vec![app_dir, root().join("lua/lib")];
    s
}

pub fn test_app(name: &str) -> ServiceSpec {
    spec(&root().join("tests/apps"), name)
}

/// The probe test app with the host modules it uses.
pub fn probe() -> ServiceSpec {
    let mut s = test_app("probe");
    s.preload = vec!["bcast".into(), "time".into()];
    s
}

pub fn example_app(name: &str) -> ServiceSpec {
    spec(&root().join("lua/apps"), name)
}

/// A scratch directory for this test process: `lapps-TAG-PID-NAME` under the system's.
pub fn scratch(tag: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lapps-{tag}-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `src` as the app `dir/name/name.lua`; its spec.
pub fn write_app(dir: &Path, name: &str, src: impl AsRef<[u8]>) -> ServiceSpec {
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(dir.join(name).join(format!("{name}.lua")), src).unwrap();
    spec(dir, name)
}

/// The next message of `q` as text, failing the test after 20 s.
pub fn next_text(q: &Queue) -> String {
    match q.receive(Duration::from_secs(20), &|| false) {
        Ok(m) => String::from_utf8(m.into_vec()).unwrap(),
        Err(w) => panic!("queue {}: nothing within 20 s ({w:?})", q.name()),
    }
}

/// The real Hub the Registry posts to, for `workers` workers.
pub fn hub(workers: usize) -> Arc<Hub> {
    Arc::new(Hub::new(workers, 1024).expect("hub"))
}

/// Reads a client's upgrade request from `s` (plain or TLS) and answers 101.
pub fn answer_upgrade(s: &mut (impl Read + Write)) {
    answer_upgrade_after(s, "");
}

/// Reads a client's upgrade request from `s`: its head and its key.
pub fn read_upgrade_request(s: &mut impl Read) -> (String, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap()
        .trim()
        .to_string();
    (head, key)
}

/// [`answer_upgrade`], with `interim` (whole HTTP heads) written before the 101.
pub fn answer_upgrade_after(s: &mut (impl Read + Write), interim: &str) {
    let (_, key) = read_upgrade_request(s);
    write!(
        s,
        "{interim}HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        lapps::ws::handshake::accept_key(&key)
    )
    .unwrap();
    s.flush().unwrap();
}
