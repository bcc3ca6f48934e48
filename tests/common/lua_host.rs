//! Helpers for the Lua host tests: the real Hub and Registry, a worker stand-in that calls the
//! `Service` methods as an IOWorker does, and a reader of what the instances post.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapps::net::handle::ConnId;
use lapps::net::hub::{Command, Hub};
use lapps::service::lua::ServiceSpec;
use lapps::service::{Flow, Service, WorkerCtx};
use lapps::ws::Opcode;

pub struct Worker(pub usize);

impl WorkerCtx for Worker {
    fn worker(&self) -> usize {
        self.0
    }
    fn send(&mut self, _conn: ConnId, _opcode: Opcode, _payload: &[u8]) -> bool {
        false
    }
}

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

/// A live connection on worker `w`, opened on `svc` the way a worker does it.
pub struct Conn {
    pub id: ConnId,
    pub tag: u32,
}

pub fn open(hub: &Hub, svc: &dyn Service, w: usize, index: u32, generation: u32) -> Conn {
    // As the worker does at the upgrade.
    hub.port(w).set_speaks(index, generation, svc.speaks());
    let id = ConnId::new(w, index, generation);
    let tag = svc
        .on_open(&mut Worker(w), id)
        .expect("the service takes the connection");
    Conn { id, tag }
}

pub fn message(svc: &dyn Service, c: &Conn, opcode: Opcode, payload: &[u8]) -> Flow {
    svc.on_message(&mut Worker(c.id.worker()), c.id, c.tag, opcode, payload)
}

pub fn text(svc: &dyn Service, c: &Conn, s: &str) -> Flow {
    let f = message(svc, c, Opcode::Text, s.as_bytes());
    svc.flush(c.id.worker(), 1);
    f
}

pub fn close(hub: &Hub, svc: &dyn Service, c: &Conn) {
    hub.port(c.id.worker()).set_dead(c.id.index());
    svc.on_close(&mut Worker(c.id.worker()), c.id, c.tag);
    svc.flush(c.id.worker(), 1);
}

/// What reached the workers, flattened: one entry per connection a frame was queued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Msg {
        conn: ConnId,
        opcode: u8,
        payload: Vec<u8>,
        shared: bool,
    },
    Close {
        conn: ConnId,
        code: u16,
    },
    Resume {
        conn: ConnId,
    },
}

/// Decodes one unfragmented, unmasked server frame.
pub fn unframe(f: &[u8]) -> (u8, Vec<u8>) {
    let (opcode, payload, used) = unframe_first(f);
    assert_eq!(used, f.len(), "one frame per command");
    (opcode, payload)
}

/// Decodes the first unfragmented, unmasked server frame of `f`; also returns its length.
pub fn unframe_first(f: &[u8]) -> (u8, Vec<u8>, usize) {
    let (h, at) = lapps::ws::frame::FrameHeader::parse(f)
        .expect("a valid frame header")
        .expect("short frame");
    assert!(h.fin, "FIN expected");
    assert_eq!(h.mask, None, "server frames are unmasked");
    let len = h.payload_len as usize;
    assert!(f.len() >= at + len, "truncated frame");
    (h.opcode, f[at..at + len].to_vec(), at + len)
}

/// Pops every worker's command inbox until `done(all so far)` holds or 20 s pass.
pub fn collect_until(hub: &Hub, mut done: impl FnMut(&[Out]) -> bool) -> Vec<Out> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut all = Vec::new();
    loop {
        if done(&all) {
            return all;
        }
        let mut got = false;
        for w in 0..hub.workers() {
            while let Some(batch) = hub.port(w).commands.pop() {
                got = true;
                for cmd in batch {
                    match cmd {
                        Command::Send { conn, frame } => {
                            assert_eq!(conn.worker(), w, "command posted to the wrong worker");
                            let (opcode, payload) = unframe(frame.as_slice());
                            all.push(Out::Msg {
                                conn,
                                opcode,
                                payload,
                                shared: false,
                            });
                        }
                        Command::SendBatch { buf, sends } => {
                            let mut at = 0usize;
                            for (conn, len) in sends {
                                assert_eq!(conn.worker(), w, "command posted to the wrong worker");
                                // One entry is a run of frames to one connection.
                                let end = at + len as usize;
                                while at < end {
                                    let (opcode, payload, used) = unframe_first(&buf[at..end]);
                                    at += used;
                                    all.push(Out::Msg {
                                        conn,
                                        opcode,
                                        payload,
                                        shared: false,
                                    });
                                }
                            }
                            assert_eq!(at, buf.len(), "the batch holds exactly its frames");
                        }
                        Command::SendMany { conns, frame } => {
                            let (opcode, payload) = unframe(&frame);
                            for conn in conns {
                                assert_eq!(conn.worker(), w, "broadcast grouped wrongly");
                                all.push(Out::Msg {
                                    conn,
                                    opcode,
                                    payload: payload.clone(),
                                    shared: true,
                                });
                            }
                        }
                        // A go-away is a close the worker makes after the owed replies.
                        Command::Close { conn, code } | Command::GoAway { conn, code } => {
                            all.push(Out::Close { conn, code })
                        }
                        Command::Resume { conn } => all.push(Out::Resume { conn }),
                    }
                }
            }
        }
        if !got {
            assert!(
                Instant::now() < deadline,
                "timed out; got so far: {:?}",
                all.iter().map(short).collect::<Vec<_>>()
            );
            // Polling interval of a condition wait (nothing arrived), not synchronisation: a
            // short pause instead of a spin that would take a core from the instances.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn short(o: &Out) -> String {
    match o {
        Out::Msg { conn, payload, .. } => format!(
            "msg {:x} {:?}",
            conn.as_u64(),
            String::from_utf8_lossy(&payload[..payload.len().min(40)])
        ),
        o => format!("{o:?}"),
    }
}

/// The text messages queued for `conn`, in order.
pub fn texts_for(all: &[Out], conn: ConnId) -> Vec<String> {
    all.iter()
        .filter_map(|o| match o {
            Out::Msg {
                conn: c, payload, ..
            } if *c == conn => Some(String::from_utf8_lossy(payload).into_owned()),
            _ => None,
        })
        .collect()
}

pub fn count(all: &[Out], pred: impl Fn(&Out) -> bool) -> usize {
    all.iter().filter(|o| pred(o)).count()
}

pub fn hub(workers: usize) -> Arc<Hub> {
    Arc::new(Hub::new(workers, 1024).expect("hub"))
}
