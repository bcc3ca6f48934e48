//! Recursion through C functions (string.gsub, table.sort, __tostring) never takes the
//! process down: LuaJIT bounds its own stack, not the thread's, and each C level takes far
//! more of the thread's stack than of LuaJIT's. The app gets Lua's "stack overflow" error
//! (its connection is closed with 1011) and every other connection is served on. The real
//! binary runs as a child process: a stack overflow aborts the whole process.
#[path = "common/binary.rs"]
mod binary;
mod common;

use std::path::PathBuf;

use binary::spawn_binary;
use common::connect;
use tungstenite::Message;

fn site() -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("lua-stack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ws.json"), binary::ONE_WORKER_WS_JSON).unwrap();
    std::fs::write(
        dir.join("lapps.json"),
        format!(
            r#"{{ "directories": {{ "applications": "{root}/tests/apps", "lib": "{root}/lua/lib" }},
                 "services": {{ "deep": {{ "protocol": "raw", "request_target": "/deep", "instances": 1 }} }} }}"#
        ),
    )
    .unwrap();
    dir
}

#[test]
fn recursion_through_c_functions_closes_one_connection_not_the_server() {
    let dir = site();
    let (_server, addr, _log) = spawn_binary(&dir, |_| {});
    let mut bystander = connect(addr, "/deep");
    for how in ["gsub", "sort", "tostring", "cogsub"] {
        let mut ws = connect(addr, "/deep");
        ws.send(Message::text(how)).unwrap();
        match ws.read() {
            Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1011, "{how}"),
            other => panic!("{how}: expected Close 1011, got {other:?}"),
        }
        bystander
            .send(Message::text(format!("after {how}")))
            .unwrap();
        assert_eq!(
            bystander.read().expect("the server is still serving"),
            Message::text(format!("after {how}"))
        );
    }
}
