//! Churn mode: connections come and go for `--duration` seconds, as on a server that runs for
//! months. Each client thread repeats one cycle: open (TCP, TLS for wss://, the upgrade), one
//! echo (a LAppS call with `--lapps`), then an end that turns with each cycle:
//! - a clean close: our Close 1000, the server's Close back and its end of TCP (RFC 6455 7.1.1:
//!   the server closes TCP first);
//! - a reset (SO_LINGER 0): the connection vanishes without a word;
//! - a FIN without a Close frame: the client shuts its side and reads until the server ends
//!   the connection in turn.
//!
//! The server must take every cycle: a refused upgrade, a wrong echo or a missing close answer
//! is an error. What the server holds meanwhile (memory, descriptors) is sampled from outside
//! (bench/soak.sh); this mode only makes the load and counts it.

use crate::args::Args;
use crate::frame::{self, EchoChecker};
use crate::{handshake, lapps, payload};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// The longest one step of a cycle may take before it counts as an error.
const STEP: Duration = Duration::from_secs(10);
/// Errors kept word for word (the rest are counted).
const KEEP_ERRORS: usize = 5;

#[derive(Default)]
struct Tally {
    cycles: [u64; 3],
    errors: u64,
    first_errors: Vec<String>,
}

struct Plan {
    frame: Vec<u8>,
    opcode: u8,
    expected: Vec<u8>,
    close: Vec<u8>,
    lapps: bool,
}

pub fn run(a: &Args) -> Result<(), String> {
    let opcode = a.opcode();
    let body = payload(a.size, a.binary);
    let (msg, expected) = if a.lapps {
        (lapps::echo_request(&body), lapps::echo_response(&body))
    } else {
        (body.clone(), body)
    };
    let plan = Plan {
        frame: frame::client_frame(opcode, &msg),
        opcode,
        expected,
        close: frame::client_frame(frame::OP_CLOSE, &1000u16.to_be_bytes()),
        lapps: a.lapps,
    };
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(a.duration);
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..a.threads)
            .map(|i| {
                let plan = &plan;
                scope.spawn(move || cycles(a, plan, i, end))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                // A thread that panicked made cycles nobody counted: the run fails.
                t.join().unwrap_or_else(|_| Tally {
                    errors: 1,
                    first_errors: vec!["a client thread panicked".into()],
                    ..Tally::default()
                })
            })
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let mut total = Tally::default();
    for t in tallies {
        for (sum, n) in total.cycles.iter_mut().zip(t.cycles) {
            *sum += n;
        }
        total.errors += t.errors;
        total.first_errors.extend(t.first_errors);
    }
    let done: u64 = total.cycles.iter().sum();
    let [clean, reset, fin] = total.cycles;
    if a.json {
        println!(
            "{{\"mode\":\"churn\",\"url\":\"{}\",\"lapps\":{},\"threads\":{},\"seconds\":{secs:.1},\
             \"connections\":{done},\"per_s\":{:.0},\"clean\":{clean},\"reset\":{reset},\"fin\":{fin},\
             \"errors\":{}}}",
            a.url,
            a.lapps,
            a.threads,
            done as f64 / secs,
            total.errors
        );
    } else {
        println!(
            "{}  churn: {done} connections in {secs:.1} s ({:.0}/s; {clean} closed cleanly, \
             {reset} reset, {fin} ended by FIN), {} errors",
            a.url,
            done as f64 / secs,
            total.errors
        );
    }
    for e in total.first_errors.iter().take(KEEP_ERRORS) {
        eprintln!("error: {e}");
    }
    if total.errors > 0 {
        return Err(format!(
            "{} of {} cycles failed",
            total.errors,
            done + total.errors
        ));
    }
    Ok(())
}

fn cycles(a: &Args, plan: &Plan, thread: usize, end: Instant) -> Tally {
    let mut t = Tally::default();
    let mut i = thread;
    while Instant::now() < end {
        let how = i % 3;
        i += 1;
        match cycle(a, plan, how) {
            Ok(()) => t.cycles[how] += 1,
            Err(e) => {
                t.errors += 1;
                if t.first_errors.len() < KEEP_ERRORS {
                    t.first_errors.push(e);
                }
            }
        }
    }
    t
}

/// One connection: open, one echo, then end it the `how`-th way (0 clean, 1 reset, 2 FIN).
fn cycle(a: &Args, plan: &Plan, how: usize) -> Result<(), String> {
    let mut s = handshake::open(a).map_err(|e| format!("open: {e}"))?;
    let tcp = s.tcp();
    tcp.set_read_timeout(Some(STEP))
        .and_then(|()| tcp.set_write_timeout(Some(STEP)))
        .map_err(|e| e.to_string())?;
    s.write_all(&plan.frame).map_err(|e| format!("send: {e}"))?;
    let mut check = if plan.lapps {
        EchoChecker::tolerating_oons()
    } else {
        EchoChecker::default()
    };
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).map_err(|e| format!("echo: {e}"))?;
        if n == 0 {
            return Err("echo: the server closed the connection".into());
        }
        if check.feed(&buf[..n], plan.opcode, &plan.expected)? > 0 {
            break;
        }
    }
    match how {
        0 => {
            s.write_all(&plan.close)
                .map_err(|e| format!("close: {e}"))?;
            // What follows the echo (OONs perhaps) up to the server's end of TCP: its last
            // frame must be the Close answering ours.
            let mut tail = Vec::new();
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => tail.extend_from_slice(&buf[..n]),
                    // A TLS server that ends TCP after its Close without close_notify.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(format!("close: {e}")),
                }
                if tail.len() > 1 << 20 {
                    return Err("close: over 1 MiB after our Close".into());
                }
            }
            if !tail.ends_with(&[0x88, 0x02, 0x03, 0xe8]) {
                return Err(format!(
                    "close: the server's last bytes are not a Close 1000: {:02x?}",
                    &tail[tail.len().saturating_sub(8)..]
                ));
            }
        }
        1 => {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            crate::sys::set_option(&s, libc::SOL_SOCKET, libc::SO_LINGER, &linger)
                .map_err(|e| format!("SO_LINGER: {e}"))?;
        }
        _ => {
            s.shutdown(std::net::Shutdown::Write)
                .map_err(|e| format!("FIN: {e}"))?;
            // Read what still comes (an OON perhaps) until the server ends the connection in
            // turn: closing with bytes unread would reset it instead of ending it by FIN.
            let mut got = 0usize;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(format!("after our FIN: {e}")),
                }
                if got > 1 << 20 {
                    return Err("after our FIN: over 1 MiB and no end".into());
                }
            }
        }
    }
    Ok(())
}
