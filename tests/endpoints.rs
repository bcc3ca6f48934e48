//! Listening endpoints from ws.json through the real server: "0.0.0.0" and "::" on one port
//! listen side by side (IPv6 listeners are IPV6_V6ONLY, whatever net.ipv6.bindv6only says).
mod common;
use common::*;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use tungstenite::Message;

fn echo_once(addr: SocketAddr) {
    let mut ws = connect(addr, "/echo");
    let text = format!("hello over {addr}");
    ws.send(Message::text(text.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(text), "echo over {addr}");
}

#[test]
fn ipv4_and_ipv6_wildcards_share_one_port() {
    if TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).is_err() {
        cannot_run("this machine has no IPv6, so \"::\" cannot listen at all");
        return;
    }
    let v6_loopback = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok();
    // A port free a moment ago (the server needs the same one twice, so not port 0).
    let port = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let ws = format!(
        r#"{{ "ip": "0.0.0.0", "port": {port}, "workers": {{ "workers": 1 }},
             "endpoints": [{{ "ip": "::", "port": {port} }}] }}"#
    );
    let lapps = lapps_json(
        "./lua/apps",
        r#"{ "echo": { "builtin": "echo", "request_target": "/echo" } }"#,
    );
    let app = try_start_app(&ws, &lapps)
        .unwrap_or_else(|e| panic!("both wildcards must listen on port {port}: {e}"));
    echo_once(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    if v6_loopback {
        echo_once(SocketAddr::from((Ipv6Addr::LOCALHOST, port)));
    } else {
        cannot_run("the IPv6 part: this machine has no IPv6 loopback (::1)");
    }
    drop(app);
}
