//! Echo of text and binary messages through the real server, whole and fragmented.
mod common;
use common::*;
use std::io::Write;
use tungstenite::Message;

#[test]
fn echoes_text_and_binary_from_0_bytes_to_16_mib() {
    let srv = start_echo(|_| {});
    let mut ws = connect(srv.addr, "/echo");
    for size in [0usize, 1, 125, 126, 127, 65535, 65536, 1 << 20, 16 << 20] {
        let bin: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        ws.send(Message::binary(bin.clone())).unwrap();
        assert_eq!(
            ws.read().unwrap(),
            Message::binary(bin),
            "binary of {size} bytes"
        );
        let text: String = (0..size)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        ws.send(Message::text(text.clone())).unwrap();
        assert_eq!(
            ws.read().unwrap(),
            Message::text(text),
            "text of {size} bytes"
        );
    }
}

#[test]
fn multibyte_text_survives_the_round_trip() {
    let srv = start_echo(|_| {});
    let mut ws = connect(srv.addr, "/echo");
    let text = "κόσμε ✓ 𝄞 ".repeat(1000);
    ws.send(Message::text(text.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(text));
}

#[test]
fn fragmented_input_is_reassembled_with_control_frames_in_between() {
    let srv = start_echo(|_| {});
    let mut s = raw_upgraded(srv.addr, "/echo");
    let mut bytes = frame(false, 0, 0x1, "Hel".as_bytes(), true);
    bytes.extend(frame(true, 0, 0x9, b"ping!", true));
    bytes.extend(frame(false, 0, 0x0, "lo, ".as_bytes(), true));
    // A code point split across two fragments.
    let euro = "€".as_bytes();
    bytes.extend(frame(false, 0, 0x0, &euro[..1], true));
    bytes.extend(frame(true, 0, 0x0, &euro[1..], true));
    // Send byte by byte to exercise partial headers and payloads.
    for b in &bytes {
        s.write_all(std::slice::from_ref(b)).unwrap();
    }
    let pong = read_frame(&mut s).unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xA, &b"ping!"[..]));
    let msg = read_frame(&mut s).unwrap();
    assert_eq!((msg.fin, msg.opcode), (true, 0x1));
    assert_eq!(String::from_utf8(msg.payload).unwrap(), "Hello, €");
}

#[test]
fn many_pipelined_messages_in_one_burst_are_all_answered_in_order() {
    // The edge-triggered drain rule: one burst far larger than one read must be fully processed.
    let srv = start_echo(|o| o.worker.read_buffer = 4096);
    let mut s = raw_upgraded(srv.addr, "/echo");
    let mut burst = Vec::new();
    for i in 0..5000u32 {
        burst.extend(frame(true, 0, 0x2, &i.to_be_bytes(), true));
    }
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&burst).unwrap())
    };
    for i in 0..5000u32 {
        let f = read_frame(&mut s).expect("echo");
        assert_eq!(f.payload, i.to_be_bytes());
    }
    writer.join().unwrap();
}

#[test]
fn auto_fragment_splits_outbound_messages() {
    let srv = start_echo(|o| o.worker.auto_fragment = Some(1000));
    let mut s = raw_upgraded(srv.addr, "/echo");
    s.write_all(&frame(true, 0, 0x2, &vec![7u8; 2500], true))
        .unwrap();
    let sizes: Vec<(bool, u8, usize)> = (0..3)
        .map(|_| read_frame(&mut s).unwrap())
        .map(|f| (f.fin, f.opcode, f.payload.len()))
        .collect();
    assert_eq!(
        sizes,
        vec![(false, 0x2, 1000), (false, 0x0, 1000), (true, 0x0, 500)]
    );
    // And a real client reassembles it.
    let mut ws = connect(srv.addr, "/echo");
    ws.send(Message::binary(vec![9u8; 5000])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![9u8; 5000]));
}

#[test]
fn a_server_dropped_without_shutdown_stops_like_a_shutdown() {
    use lapps::net::server::{Server, ServerOptions};
    let opts = ServerOptions::default();
    let hub = Server::new_hub(&opts).expect("hub");
    let server = Server::start(opts, hub, std::sync::Arc::new(EchoRouter::new(1024)))
        .expect("server starts");
    let addr = server.local_addrs()[0];
    let mut ws = connect(addr, "/echo");
    let dropping = std::thread::spawn(move || drop(server));
    // The open connection is closed with 1001 ("going away"), the handshake completed ...
    match ws.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    let _ = ws.flush(); // our Close reply
    drop(ws); // and our FIN, which the server waits for
    dropping.join().expect("the drop returns");
    // ... and nothing listens any more: the listener threads were stopped and joined.
    let refused = std::net::TcpStream::connect(addr).expect_err("nothing accepts");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}
