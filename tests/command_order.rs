//! The order of what services post to a worker and the Close the worker sends: a reply
//! that was in the command queue when its connection began to end goes out before the Close,
//! even when the worker's turn takes only part of a full queue.

mod common;

use std::net::IpAddr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapps::net::handle::ConnId;
use lapps::net::hub::{Chunk, Command};
use lapps::net::worker::{Refusal, Router};
use lapps::service::{Flow, Owed, Service, WorkerCtx};
use lapps::ws::handshake::Request;
use lapps::ws::Opcode;
use tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);

/// A service that answers on its own time, with the test driving it: `on_message` tells the
/// test the connection and waits; `on_ending` tells the test and waits, then says the replies
/// are in the command queue (the test puts them there).
struct Steered {
    conns: Mutex<Sender<ConnId>>,
    message_go: Mutex<Receiver<()>>,
    endings: Mutex<Sender<()>>,
    ending_go: Mutex<Receiver<()>>,
}

impl Service for Steered {
    fn name(&self) -> &str {
        "steered"
    }

    fn max_message_size(&self) -> usize {
        1 << 20
    }

    fn on_open(&self, _ctx: &mut dyn WorkerCtx, _conn: ConnId) -> Option<u32> {
        Some(0)
    }

    fn on_message(
        &self,
        _ctx: &mut dyn WorkerCtx,
        conn: ConnId,
        _tag: u32,
        _opcode: Opcode,
        _payload: &[u8],
    ) -> Flow {
        self.conns.lock().unwrap().send(conn).unwrap();
        self.message_go.lock().unwrap().recv_timeout(WAIT).unwrap();
        Flow::Continue
    }

    fn on_ending(&self, _worker: usize, _conn: ConnId, _tag: u32, _handed: u64) -> Owed {
        self.endings.lock().unwrap().send(()).unwrap();
        self.ending_go.lock().unwrap().recv_timeout(WAIT).unwrap();
        Owed::InCommands
    }

    fn on_close(&self, _ctx: &mut dyn WorkerCtx, _conn: ConnId, _tag: u32) {}
}

struct Only(Arc<dyn Service>);

impl Router for Only {
    fn route(&self, _req: &Request, _peer: IpAddr) -> Result<Arc<dyn Service>, Refusal> {
        Ok(self.0.clone())
    }
}

/// A worker takes at most a queue's worth of batches per turn. A GoAway taken late in a
/// turn, whose connection's reply was posted before the service said so (`InCommands`) but
/// sits past the rest of that turn's share, made the worker close at the end of the turn:
/// the reply came next turn and was dropped (after our Close no data frame may follow).
#[test]
fn a_reply_past_the_turns_share_of_commands_still_precedes_the_close() {
    let (conn_tx, conn_rx) = channel();
    let (message_go, message_go_rx) = channel();
    let (ending_tx, ending_rx) = channel();
    let (ending_go, ending_go_rx) = channel();
    let service = Arc::new(Steered {
        conns: Mutex::new(conn_tx),
        message_go: Mutex::new(message_go_rx),
        endings: Mutex::new(ending_tx),
        ending_go: Mutex::new(ending_go_rx),
    });
    let server = common::start_with(|o| o.workers = 1, Arc::new(Only(service)));
    let hub = server.hub();
    let (mut ws, _) = tungstenite::connect(server.url("/steered")).expect("upgrade");
    let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() else {
        panic!("a ws:// connection is plain TCP");
    };
    s.set_read_timeout(Some(WAIT)).unwrap();
    ws.send(Message::text("m")).unwrap();
    let conn = conn_rx.recv_timeout(WAIT).expect("on_message");

    // The worker is held in on_message: fill its command queue, the GoAway at 600 of 1024.
    let commands = &hub.port(0).commands;
    let filler = || {
        vec![Command::Resume {
            conn: ConnId::new(0, 4000, 1),
        }]
    };
    for _ in 0..599 {
        commands.push(filler()).unwrap();
    }
    commands
        .push(vec![Command::GoAway { conn, code: 1001 }])
        .unwrap();
    while commands.len() < commands.capacity() {
        commands.push(filler()).unwrap();
    }
    message_go.send(()).unwrap();

    // The worker took the GoAway (600 batches into its turn): the queue behind it is filled
    // up again, the reply last, 1023 batches behind the GoAway (the turn has 424 left).
    ending_rx.recv_timeout(WAIT).expect("on_ending");
    while commands.len() < commands.capacity() - 1 {
        commands.push(filler()).unwrap();
    }
    let reply = [&[0x81u8, 5][..], b"reply"].concat();
    commands
        .push(vec![Command::Send {
            conn,
            frame: Chunk::Owned(reply),
        }])
        .unwrap();
    ending_go.send(()).unwrap();
    hub.port(0).notify();

    assert_eq!(ws.read().expect("the reply"), Message::text("reply"));
    match ws.read().expect("the Close") {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected Close 1001, got {other:?}"),
    }
}

/// What the fairness test steers: "hold" keeps the worker in the callback until the test says
/// go; "probe" reports how many batches the worker's command queue still holds; any other
/// message tells the test its connection.
struct Probing {
    hub: std::sync::OnceLock<Arc<lapps::net::hub::Hub>>,
    conns: Mutex<Sender<ConnId>>,
    held: Mutex<Sender<()>>,
    go: Mutex<Receiver<()>>,
    queued: Mutex<Sender<usize>>,
}

impl Service for Probing {
    fn name(&self) -> &str {
        "probing"
    }

    fn max_message_size(&self) -> usize {
        1 << 20
    }

    fn on_open(&self, _ctx: &mut dyn WorkerCtx, _conn: ConnId) -> Option<u32> {
        Some(0)
    }

    fn on_message(
        &self,
        _ctx: &mut dyn WorkerCtx,
        conn: ConnId,
        _tag: u32,
        _opcode: Opcode,
        payload: &[u8],
    ) -> Flow {
        match payload {
            b"hold" => {
                self.held.lock().unwrap().send(()).unwrap();
                self.go.lock().unwrap().recv_timeout(WAIT).unwrap();
            }
            b"probe" => {
                let hub = self.hub.get().expect("the hub");
                let _ = self.queued.lock().unwrap().send(hub.port(0).commands.len());
            }
            _ => {
                let _ = self.conns.lock().unwrap().send(conn);
            }
        }
        Flow::Continue
    }

    fn on_close(&self, _ctx: &mut dyn WorkerCtx, _conn: ConnId, _tag: u32) {}
}

/// A worker with a queue full of heavy sends (a flood of large broadcasts) serves its other
/// connections between them: a turn takes about a megabyte of deliveries, not the whole queue
/// (seconds of sending at once on a real flood, while every other connection of the worker
/// waited). Shown without timing: the worker is held in a callback while 100 batches of
/// 256 KiB sends are queued and a probe's message arrives; the probe is read in the next
/// turn, and the queue is looked at right then, on the worker's thread.
#[test]
fn a_queue_of_heavy_sends_leaves_the_worker_turns_for_its_other_connections() {
    let (conn_tx, conn_rx) = channel();
    let (held_tx, held_rx) = channel();
    let (go_tx, go_rx) = channel();
    let (queued_tx, queued_rx) = channel();
    let service = Arc::new(Probing {
        hub: std::sync::OnceLock::new(),
        conns: Mutex::new(conn_tx),
        held: Mutex::new(held_tx),
        go: Mutex::new(go_rx),
        queued: Mutex::new(queued_tx),
    });
    // Room for the whole flood in the sink's queue: it never reads, and is no slow consumer.
    let server = common::start_with(
        |o| {
            o.workers = 1;
            o.worker.outbound_high_water = 64 << 20;
        },
        Arc::new(Only(service.clone())),
    );
    let hub = server.hub();
    let _ = service.hub.set(hub.clone());
    let (mut sink, _) = tungstenite::connect(server.url("/sink")).expect("upgrade");
    sink.send(Message::text("sink")).unwrap();
    let sink_conn = conn_rx.recv_timeout(WAIT).expect("the sink's message");
    let (mut holder, _) = tungstenite::connect(server.url("/holder")).expect("upgrade");
    let (mut probe, _) = tungstenite::connect(server.url("/probe")).expect("upgrade");
    holder.send(Message::text("hold")).unwrap();
    held_rx.recv_timeout(WAIT).expect("the worker held");

    const BATCHES: usize = 100;
    const FRAME: usize = 256 << 10;
    let mut frame = vec![0x82u8, 127];
    frame.extend_from_slice(&(FRAME as u64).to_be_bytes());
    frame.resize(frame.len() + FRAME, 7);
    let frame: Arc<[u8]> = frame.into();
    let commands = &hub.port(0).commands;
    for _ in 0..BATCHES {
        commands
            .push(vec![Command::SendMany {
                conns: vec![sink_conn],
                frame: Arc::clone(&frame),
            }])
            .unwrap();
    }
    probe.send(Message::text("probe")).unwrap();
    go_tx.send(()).unwrap();
    let left = queued_rx.recv_timeout(WAIT).expect("the probe read");
    // The held turn's two takes, about 1 MiB each, are 8 batches of 256 KiB; a loaded machine
    // may deliver the probe's bytes a few turns later. The whole queue in one turn leaves 0.
    assert!(
        left >= BATCHES / 2,
        "the probe was read once {} of the {BATCHES} batches were taken",
        BATCHES - left
    );
}

/// A reply in the command queue when its connection began to end goes out before the Close
/// even when the batches ahead of it take the worker longer than the answer timeout to get
/// through (a turn takes about a megabyte of deliveries): the reply is on its way, and the
/// Close waits for it rather than dropping it at the timeout. Here 600 batches, each a 1 MiB
/// frame 1000 times to a sink that never reads (one shared frame: no memory per delivery but
/// its queue entry), lie between the GoAway and the reply, one batch a take (about 300
/// turns, tens of milliseconds), and the answer timeout is 1 ms.
#[test]
fn a_reply_behind_a_long_drain_outlives_the_answer_timeout() {
    let (conn_tx, conn_rx) = channel();
    let (message_go, message_go_rx) = channel();
    let (ending_tx, ending_rx) = channel();
    let (ending_go, ending_go_rx) = channel();
    let service = Arc::new(Steered {
        conns: Mutex::new(conn_tx),
        message_go: Mutex::new(message_go_rx),
        endings: Mutex::new(ending_tx),
        ending_go: Mutex::new(ending_go_rx),
    });
    let server = common::start_with(
        |o| {
            o.workers = 1;
            o.worker.close_timeout = Duration::from_millis(1);
            // The sink is no slow consumer however much is queued for it.
            o.worker.outbound_high_water = 1 << 40;
        },
        Arc::new(Only(service)),
    );
    let hub = server.hub();
    let (mut sink, _) = tungstenite::connect(server.url("/sink")).expect("upgrade");
    sink.send(Message::text("sink")).unwrap();
    let sink_conn = conn_rx.recv_timeout(WAIT).expect("the sink's message");
    message_go.send(()).unwrap();
    let (mut ws, _) = tungstenite::connect(server.url("/steered")).expect("upgrade");
    let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() else {
        panic!("a ws:// connection is plain TCP");
    };
    s.set_read_timeout(Some(WAIT)).unwrap();
    ws.send(Message::text("m")).unwrap();
    let conn = conn_rx.recv_timeout(WAIT).expect("on_message");

    // The worker is held in on_message: the GoAway, 600 heavy batches, then the reply.
    let commands = &hub.port(0).commands;
    commands
        .push(vec![Command::GoAway { conn, code: 1001 }])
        .unwrap();
    let mut frame = vec![0x82u8, 127];
    frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
    frame.resize(frame.len() + (1 << 20), 7);
    let frame: Arc<[u8]> = frame.into();
    for _ in 0..600 {
        commands
            .push(vec![Command::SendMany {
                conns: vec![sink_conn; 1000],
                frame: Arc::clone(&frame),
            }])
            .unwrap();
    }
    let reply = [&[0x81u8, 5][..], b"reply"].concat();
    commands
        .push(vec![Command::Send {
            conn,
            frame: Chunk::Owned(reply),
        }])
        .unwrap();
    message_go.send(()).unwrap();
    ending_rx.recv_timeout(WAIT).expect("on_ending");
    ending_go.send(()).unwrap();

    assert_eq!(ws.read().expect("the reply"), Message::text("reply"));
    match ws.read().expect("the Close") {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected Close 1001, got {other:?}"),
    }
    drop(sink);
}
