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
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
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
