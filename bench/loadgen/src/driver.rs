//! One client thread: drives its share of connections with level-triggered epoll, keeping
//! `depth` messages in flight on each. Replies are checked as they arrive; for each echo
//! completed, one new frame is sent, all of a read's new frames in one write. Owns per-thread
//! statistics; never blocks on a socket.

use crate::frame::EchoChecker;
use crate::hist::Hist;
use crate::stream::Stream;
use crate::sys::Epoll;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::time::Instant;

/// What every thread sends and when it measures.
pub struct Plan {
    pub opcode: u8,
    /// What every reply must be: the payload (RAW echo) or the CBOR response (`--lapps`).
    pub expected: Vec<u8>,
    /// Skip LAppS OONs between the replies.
    pub lapps: bool,
    pub frame_len: usize,
    /// The masked frame repeated depth+1 times: any run of up to `depth` frames starting at any
    /// offset within a frame is one contiguous slice of it.
    pub burst: Vec<u8>,
    pub close_frame: Vec<u8>,
    pub depth: usize,
    pub warm_end: Instant,
    pub end: Instant,
}

#[derive(Default)]
pub struct Stats {
    pub msgs: u64,
    pub hist: Hist,
    pub errors: Vec<String>,
}

struct Conn {
    stream: Stream,
    checker: EchoChecker,
    sent_at: VecDeque<Instant>,
    owed: usize,
    off: usize,
    want_out: bool,
    dead: bool,
    /// The last read would block.
    blocked: bool,
    token: u64,
}

const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;

pub fn run(streams: Vec<Stream>, plan: &Plan, pin: Option<usize>) -> Stats {
    let mut st = Stats::default();
    if let Some(cpu) = pin {
        if let Err(e) = crate::sys::pin_to(cpu) {
            st.errors.push(format!("pin to CPU {cpu}: {e}"));
        }
    }
    let ep = match Epoll::new() {
        Ok(ep) => ep,
        Err(e) => {
            st.errors.push(format!("epoll: {e}"));
            return st;
        }
    };
    let mut conns: Vec<Conn> = Vec::with_capacity(streams.len());
    for (i, stream) in streams.into_iter().enumerate() {
        let setup = stream
            .set_nonblocking(true)
            .and_then(|_| ep.ctl(true, stream.as_raw_fd(), IN, i as u64));
        if let Err(e) = setup {
            st.errors.push(format!("register connection: {e}"));
        }
        conns.push(Conn {
            stream,
            checker: if plan.lapps {
                EchoChecker::tolerating_oons()
            } else {
                EchoChecker::default()
            },
            sent_at: VecDeque::with_capacity(plan.depth),
            owed: 0,
            off: 0,
            want_out: false,
            dead: false,
            blocked: false,
            token: i as u64,
        });
    }
    let now = Instant::now();
    for c in conns.iter_mut() {
        queue(c, plan, plan.depth, now);
        flush(c, plan, &ep, &mut st);
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; 256 * 1024];
    let mut measuring = false;
    loop {
        let now = Instant::now();
        if now >= plan.end {
            break;
        }
        if !measuring && now >= plan.warm_end {
            measuring = true;
            st.msgs = 0;
            st.hist = Hist::default();
        }
        let next = if measuring { plan.end } else { plan.warm_end };
        let timeout = next
            .saturating_duration_since(now)
            .as_millis()
            .clamp(1, 100) as i32;
        let n = match ep.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(e) => {
                st.errors.push(format!("epoll_wait: {e}"));
                break;
            }
        };
        let now = Instant::now();
        for ev in &events[..n] {
            let Some(c) = conns.get_mut(ev.u64 as usize) else {
                continue;
            };
            if c.dead {
                // Level-triggered: a dead socket would be reported forever.
                let _ = ep.del(c.stream.as_raw_fd());
                continue;
            }
            if ev.events & !OUT != 0 {
                on_readable(c, plan, &mut buf, now, measuring, &mut st);
            }
            if !c.dead {
                flush(c, plan, &ep, &mut st);
            }
        }
    }
    for c in conns.iter_mut().filter(|c| !c.dead) {
        // Best effort: a clean close keeps the servers' logs quiet; nobody waits for the reply.
        let _ = c.stream.write(&plan.close_frame);
        let _ = c.stream.shutdown(Shutdown::Write);
    }
    st
}

fn on_readable(
    c: &mut Conn,
    plan: &Plan,
    buf: &mut [u8],
    now: Instant,
    measuring: bool,
    st: &mut Stats,
) {
    // TLS may hold decrypted bytes that the socket no longer signals: read until WouldBlock.
    let tls = c.stream.is_tls();
    loop {
        on_read(c, plan, buf, now, measuring, st);
        if !tls || c.dead || c.blocked {
            c.blocked = false;
            return;
        }
    }
}

fn on_read(
    c: &mut Conn,
    plan: &Plan,
    buf: &mut [u8],
    now: Instant,
    measuring: bool,
    st: &mut Stats,
) {
    let n = match c.stream.read(buf) {
        Ok(0) => return fail(c, st, "server closed the connection".into()),
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
            c.blocked = true;
            return;
        }
        Err(e) => return fail(c, st, format!("read: {e}")),
    };
    let echoed = match c.checker.feed(&buf[..n], plan.opcode, &plan.expected) {
        Ok(k) => k,
        Err(e) => return fail(c, st, e),
    };
    for _ in 0..echoed {
        let Some(t0) = c.sent_at.pop_front() else {
            return fail(c, st, "more echoes than messages sent".into());
        };
        if measuring {
            st.hist
                .record(now.saturating_duration_since(t0).as_nanos() as u64, 1);
        }
    }
    st.msgs += echoed as u64;
    queue(c, plan, echoed, now);
}

fn queue(c: &mut Conn, plan: &Plan, frames: usize, now: Instant) {
    c.owed += frames * plan.frame_len;
    c.sent_at.extend(std::iter::repeat_n(now, frames));
}

fn flush(c: &mut Conn, plan: &Plan, ep: &Epoll, st: &mut Stats) {
    match c.stream.write_pending() {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
        Err(e) => return fail(c, st, format!("write: {e}")),
    }
    while c.owed > 0 && !c.stream.wants_write() {
        // owed <= depth frames (they are all in flight) and off < frame_len: within `burst`.
        match c.stream.write(&plan.burst[c.off..c.off + c.owed]) {
            Ok(n) => {
                c.owed -= n;
                c.off = (c.off + n) % plan.frame_len;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => return fail(c, st, format!("write: {e}")),
        }
    }
    let want_out = c.owed > 0 || c.stream.wants_write();
    if want_out != c.want_out {
        c.want_out = want_out;
        let ev = if want_out { IN | OUT } else { IN };
        if let Err(e) = ep.ctl(false, c.stream.as_raw_fd(), ev, c.token) {
            fail(c, st, format!("epoll_ctl: {e}"));
        }
    }
}

fn fail(c: &mut Conn, st: &mut Stats, why: String) {
    c.dead = true;
    c.owed = 0;
    let _ = c.stream.shutdown(Shutdown::Both);
    st.errors.push(why);
}
