//! Fan-out mode (`--fanout N --rounds R`) against `bench/apps/fanout`: N subscriber connections,
//! one trigger connection. Each round times, from the moment the trigger's command is written
//! to the moment the LAST subscriber has read the whole message, one `bcast:send` to all N and
//! one Lua loop of N `ws:send` calls, alternately. Every subscriber must receive each message
//! exactly once and byte for byte. Owns that measurement; never sends on a subscriber after
//! subscribing it.

use crate::args::Args;
use crate::frame::{self, EchoChecker};
use crate::handshake;
use crate::stream::Stream;
use crate::sys::{self, Epoll};
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long one round (or the subscription of all) may take before it is an error.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Bcast,
    Loop,
}

impl Mode {
    fn command(self) -> &'static str {
        match self {
            Mode::Bcast => "bcast",
            Mode::Loop => "loop",
        }
    }
}

struct Sub {
    stream: Stream,
    checker: EchoChecker,
    got: u32,
}

/// The payload the app builds for `size S`: byte i = (i * 7 + 13) % 251.
fn app_payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| ((i * 7 + 13) % 251) as u8).collect()
}

pub fn run(a: &Args, n: usize) -> Result<(), String> {
    sys::raise_nofile(n as u64 + 64).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    if let Some(&cpu) = a.pin.first() {
        sys::pin_to(cpu).map_err(|e| format!("pin to CPU {cpu}: {e}"))?;
    }
    let t_setup = Instant::now();
    let mut trigger = handshake::open(a).map_err(|e| format!("trigger connection: {e}"))?;
    trigger
        .tcp()
        .set_read_timeout(Some(ROUND_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let size_cmd = format!("size {}", a.size);
    command(&mut trigger, &size_cmd)?;
    expect_text(&mut trigger, &format!("ok {}", a.size))?;

    let ep = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut subs = Vec::with_capacity(n);
    for i in 0..n {
        let stream = handshake::open(a).map_err(|e| format!("subscriber {i}: {e}"))?;
        subs.push(Sub {
            stream,
            checker: EchoChecker::default(),
            got: 0,
        });
    }
    let sub_frame = frame::client_frame(frame::OP_TEXT, b"sub");
    for (i, s) in subs.iter_mut().enumerate() {
        s.stream
            .write_all(&sub_frame)
            .map_err(|e| format!("subscriber {i}: {e}"))?;
        s.stream
            .set_nonblocking(true)
            .and_then(|_| ep.ctl(true, s.stream.as_raw_fd(), libc::EPOLLIN as u32, i as u64))
            .map_err(|e| format!("subscriber {i}: {e}"))?;
    }
    deliver(&ep, &mut subs, frame::OP_TEXT, b"ok").map_err(|e| format!("subscribing: {e}"))?;
    let setup_s = t_setup.elapsed().as_secs_f64();

    let payload = app_payload(a.size);
    let server = a.server_pid.map(|p| p.to_string());
    let cpu = || server.as_deref().and_then(|p| sys::cpu_seconds(p).ok());
    let kernel = || {
        server
            .as_deref()
            .and_then(|p| sys::cpu_split(p).ok().map(|s| s.1))
    };
    let me = || sys::cpu_seconds("self").ok();
    // Round 0 warms both paths up (Lua strings, buffers, the first trace) and is not counted.
    let mut times = [Vec::new(), Vec::new()];
    let (mut cpu_s, mut me_s) = ([Some(0.0); 2], [Some(0.0); 2]);
    let mut sys_s = [Some(0.0); 2];
    for round in 0..=a.rounds {
        let order = if round % 2 == 0 {
            [Mode::Bcast, Mode::Loop]
        } else {
            [Mode::Loop, Mode::Bcast]
        };
        for mode in order {
            let (cpu0, me0, sys0) = (cpu(), me(), kernel());
            let cmd = format!("{} {round}", mode.command());
            let t0 = Instant::now();
            command(&mut trigger, &cmd)?;
            let last = deliver(&ep, &mut subs, frame::OP_BINARY, &payload)
                .map_err(|e| format!("round {round} ({}): {e}", mode.command()))?;
            expect_text(&mut trigger, &format!("sent {round} {n}"))?;
            let (cpu1, me1, sys1) = (cpu(), me(), kernel());
            if round > 0 {
                let m = mode as usize;
                times[m].push(last.duration_since(t0).as_secs_f64() * 1e3);
                let add = |acc: Option<f64>, b: Option<f64>, e: Option<f64>| {
                    acc.zip(b.zip(e)).map(|(acc, (b, e))| acc + e - b)
                };
                cpu_s[m] = add(cpu_s[m], cpu0, cpu1);
                me_s[m] = add(me_s[m], me0, me1);
                sys_s[m] = add(sys_s[m], sys0, sys1);
            }
        }
    }
    // A subscriber that got a message twice would have failed its round, unless the duplicate
    // came after the last round: look once more.
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 16];
    let late = ep
        .wait(&mut events, 200)
        .map_err(|e| format!("epoll_wait: {e}"))?;
    for s in &subs {
        let _ = s.stream.shutdown(Shutdown::Both);
    }
    let _ = trigger.shutdown(Shutdown::Both);
    if late > 0 {
        return Err("a subscriber received a message after the last round".into());
    }
    report(a, n, setup_s, &mut times, [cpu_s, sys_s, me_s]);
    Ok(())
}

/// Reads from every subscriber until each has exactly one more message equal to `expected`;
/// returns when the last one completed.
fn deliver(ep: &Epoll, subs: &mut [Sub], opcode: u8, expected: &[u8]) -> Result<Instant, String> {
    let deadline = Instant::now() + ROUND_TIMEOUT;
    for s in subs.iter_mut() {
        s.got = 0;
    }
    let mut left = subs.len();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = ep
            .wait(&mut events, 100)
            .map_err(|e| format!("epoll_wait: {e}"))?;
        for ev in &events[..n] {
            let i = ev.u64 as usize;
            let Some(s) = subs.get_mut(i) else {
                continue;
            };
            let k = match s.stream.read(&mut buf) {
                Ok(0) => return Err(format!("subscriber {i}: the server closed the connection")),
                Ok(r) => s
                    .checker
                    .feed(&buf[..r], opcode, expected)
                    .map_err(|e| format!("subscriber {i}: {e}"))?,
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted =>
                {
                    0
                }
                Err(e) => return Err(format!("subscriber {i}: read: {e}")),
            };
            if k == 0 {
                continue;
            }
            s.got += k as u32;
            if s.got > 1 {
                return Err(format!(
                    "subscriber {i} received the message {} times",
                    s.got
                ));
            }
            left -= 1;
            if left == 0 {
                return Ok(Instant::now());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{left} of {} subscribers did not receive it within {ROUND_TIMEOUT:?}",
                subs.len()
            ));
        }
    }
}

fn command(s: &mut Stream, text: &str) -> Result<(), String> {
    s.write_all(&frame::client_frame(frame::OP_TEXT, text.as_bytes()))
        .map_err(|e| format!("trigger: write {text:?}: {e}"))
}

/// Reads one text message from the (blocking) trigger connection and checks it.
fn expect_text(s: &mut Stream, want: &str) -> Result<(), String> {
    let mut c = EchoChecker::default();
    let mut byte = [0u8; 1];
    // Byte by byte: the trigger carries a few short replies per round, and reading no further
    // than the reply keeps the next one intact.
    let mut got = Vec::new();
    loop {
        let r = s
            .read(&mut byte)
            .map_err(|e| format!("trigger: waiting for {want:?}: {e}"))?;
        if r == 0 {
            return Err(format!("trigger: closed while waiting for {want:?}"));
        }
        got.push(byte[0]);
        match c.feed(&byte, frame::OP_TEXT, want.as_bytes()) {
            Ok(1) => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "trigger: wanted {want:?}, got {:?} ({e})",
                    String::from_utf8_lossy(&got)
                ))
            }
        }
    }
}

/// Server and client CPU are summed over the counted rounds (clock ticks of 10 ms: the
/// per-round mean is exact to about 10 ms / rounds).
fn report(
    a: &Args,
    n: usize,
    setup_s: f64,
    times: &mut [Vec<f64>; 2],
    [cpu_s, sys_s, me_s]: [[Option<f64>; 2]; 3],
) {
    let stat = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[(v.len() - 1) / 2], v[0])
    };
    let (b_med, b_min) = stat(&mut times[Mode::Bcast as usize]);
    let (l_med, l_min) = stat(&mut times[Mode::Loop as usize]);
    let rounds = a.rounds as f64;
    let cpu_ms = |m: Mode| cpu_s[m as usize].map(|s| s * 1e3 / rounds);
    let me_ms = |m: Mode| me_s[m as usize].map(|s| s * 1e3 / rounds);
    let sys_ms = |m: Mode| sys_s[m as usize].map(|s| s * 1e3 / rounds);
    let opt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.1}"));
    let ratio = l_med / b_med;
    let rate = n as f64 / (b_med / 1e3);
    if a.json {
        println!(
            "{{\"mode\":\"fanout\",\"url\":\"{}\",\"subscribers\":{n},\"size\":{},\"rounds\":{},\"setup_s\":{setup_s:.2},\
             \"bcast_ms_median\":{b_med:.2},\"bcast_ms_min\":{b_min:.2},\"loop_ms_median\":{l_med:.2},\
             \"loop_ms_min\":{l_min:.2},\"loop_over_bcast\":{ratio:.2},\"bcast_deliveries_per_s\":{rate:.0},\
             \"bcast_server_cpu_ms\":{},\"loop_server_cpu_ms\":{},\"bcast_client_cpu_ms\":{},\
             \"loop_client_cpu_ms\":{},\"bcast_server_sys_ms\":{},\"loop_server_sys_ms\":{},\"errors\":0}}",
            a.url,
            a.size,
            a.rounds,
            opt(cpu_ms(Mode::Bcast)),
            opt(cpu_ms(Mode::Loop)),
            opt(me_ms(Mode::Bcast)),
            opt(me_ms(Mode::Loop)),
            opt(sys_ms(Mode::Bcast)),
            opt(sys_ms(Mode::Loop))
        );
    } else {
        println!(
            "{}  {n} subscribers x {} B, {} rounds (+1 warm-up), set up in {setup_s:.1} s",
            a.url, a.size, a.rounds
        );
        println!(
            "  bcast:send      median {b_med:.2} ms  min {b_min:.2} ms  ({rate:.0} deliveries/s)  \
             CPU per round: server {} ms ({} in the kernel), client {} ms",
            opt(cpu_ms(Mode::Bcast)),
            opt(sys_ms(Mode::Bcast)),
            opt(me_ms(Mode::Bcast))
        );
        println!(
            "  ws:send loop    median {l_med:.2} ms  min {l_min:.2} ms  CPU per round: server {} ms ({} in \
             the kernel), client {} ms",
            opt(cpu_ms(Mode::Loop)),
            opt(sys_ms(Mode::Loop)),
            opt(me_ms(Mode::Loop))
        );
        println!(
            "  loop/bcast {ratio:.2} (medians); every subscriber got each message exactly once"
        );
    }
}
