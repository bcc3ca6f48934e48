//! Idle mode: open N WebSocket connections (`--threads` at a time, from `--sources` loopback
//! addresses), hold them, and report how much the server's resident memory grew per
//! connection; with `--echo-all`, then show that every one of them still works: one message
//! on each, whose echo must come back. Owns nothing but that measurement.

use crate::args::Args;
use crate::frame::{self, EchoChecker};
use crate::stream::Stream;
use crate::{handshake, payload, sys};
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The longest one connection's echo may take under `--echo-all`.
const ECHO_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(a: &Args, n: usize) -> Result<(), String> {
    sys::raise_nofile(n as u64 + 64).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let rss = |when: &str| match a.server_pid {
        Some(pid) => sys::rss_kib(pid)
            .map(Some)
            .map_err(|e| format!("RSS {when}: {e}")),
        None => Ok(None),
    };
    let before = rss("before")?;
    let t0 = Instant::now();
    let mut shares = open_all(a, n)?;
    let opened_in = t0.elapsed().as_secs_f64();
    if a.hold_stdin {
        println!("opened {n}");
        std::io::stdout()
            .flush()
            .map_err(|e| format!("stdout: {e}"))?;
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("stdin: {e}"))?;
    } else {
        std::thread::sleep(Duration::from_secs_f64(a.hold));
    }
    let mut lost = 0;
    for c in shares.iter_mut().flatten() {
        let alive = c.set_nonblocking(true).is_ok()
            && matches!(c.read(&mut [0u8; 64]), Err(e) if e.kind() == ErrorKind::WouldBlock);
        lost += usize::from(!alive);
    }
    let after = rss("after")?;
    let echoed_in = if a.echo_all && lost == 0 {
        Some(echo_all(a, &mut shares)?)
    } else {
        None
    };
    let per_conn = match (before, after) {
        (Some(b), Some(f)) => Some((f as f64 - b as f64) * 1024.0 / n as f64),
        _ => None,
    };
    let opt = |v: Option<f64>, prec: usize| v.map_or("null".to_string(), |v| format!("{v:.prec$}"));
    if a.json {
        println!(
            "{{\"mode\":\"idle\",\"url\":\"{}\",\"connections\":{n},\"hold_s\":{},\"open_s\":{opened_in:.3},\
             \"opened_per_s\":{:.0},\"rss_before_kib\":{},\"rss_after_kib\":{},\"bytes_per_conn\":{},\
             \"lost\":{lost},\"echo_all_s\":{}}}",
            a.url,
            a.hold,
            n as f64 / opened_in,
            opt(before.map(|v| v as f64), 0),
            opt(after.map(|v| v as f64), 0),
            opt(per_conn, 0),
            opt(echoed_in, 3)
        );
    } else {
        let held = if a.hold_stdin {
            "until told".to_string()
        } else {
            format!("{} s", a.hold)
        };
        println!(
            "{}  {n} idle connections opened in {opened_in:.2} s ({:.0}/s), held {held}",
            a.url,
            n as f64 / opened_in,
        );
        println!(
            "server RSS before {} KiB, after {} KiB: {} bytes per connection; {lost} lost",
            opt(before.map(|v| v as f64), 0),
            opt(after.map(|v| v as f64), 0),
            opt(per_conn, 0)
        );
        if let Some(s) = echoed_in {
            println!("one message on each of the {n} connections: every echo back in {s:.2} s");
        }
    }
    if lost > 0 {
        return Err(format!(
            "{lost} connections were closed by the server while idle"
        ));
    }
    Ok(())
}

/// `n` connections, opened by `--threads` threads; thread t opens the t-th, (t + T)-th, ...
/// The first failure stops every thread.
fn open_all(a: &Args, n: usize) -> Result<Vec<Vec<Stream>>, String> {
    let threads = a.threads.clamp(1, n.max(1));
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let openers: Vec<_> = (0..threads)
            .map(|t| {
                let failed = &failed;
                scope.spawn(move || {
                    let mut mine = Vec::with_capacity(n / threads + 1);
                    for i in (t..n).step_by(threads) {
                        if failed.load(Ordering::Relaxed) {
                            return Err(String::new());
                        }
                        match handshake::open_nth(a, i) {
                            Ok(s) => mine.push(s),
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(format!(
                                    "connection {i} (after {} of this thread's): {e}",
                                    mine.len()
                                ));
                            }
                        }
                    }
                    Ok(mine)
                })
            })
            .collect();
        let mut shares = Vec::with_capacity(threads);
        let mut first_error = None;
        for o in openers {
            match o.join() {
                Ok(Ok(share)) => shares.push(share),
                Ok(Err(e)) if e.is_empty() => {}
                Ok(Err(e)) => first_error = first_error.or(Some(e)),
                Err(_) => first_error = first_error.or(Some("an opening thread panicked".into())),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(shares),
        }
    })
}

/// One `--size` message on every connection (each thread writes its share's, then reads
/// their echoes); the seconds until the last echo was checked.
fn echo_all(a: &Args, shares: &mut [Vec<Stream>]) -> Result<f64, String> {
    let opcode = a.opcode();
    let body = payload(a.size, a.binary);
    let one = frame::client_frame(opcode, &body);
    let t0 = Instant::now();
    std::thread::scope(|scope| {
        let threads: Vec<_> = shares
            .iter_mut()
            .map(|share| {
                let (one, body) = (&one, &body);
                scope.spawn(move || -> Result<(), String> {
                    for c in share.iter_mut() {
                        c.set_nonblocking(false)
                            .and_then(|()| c.tcp().set_read_timeout(Some(ECHO_TIMEOUT)))
                            .and_then(|()| c.write_all(one))
                            .map_err(|e| format!("send: {e}"))?;
                    }
                    let mut buf = [0u8; 256];
                    for c in share.iter_mut() {
                        let mut check = EchoChecker::default();
                        loop {
                            let got = c.read(&mut buf).map_err(|e| format!("echo: {e}"))?;
                            if got == 0 {
                                return Err("echo: the server closed a connection".into());
                            }
                            if check.feed(&buf[..got], opcode, body)? > 0 {
                                break;
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        threads.into_iter().try_for_each(|t| {
            t.join()
                .unwrap_or_else(|_| Err("an echo thread panicked".into()))
        })
    })?;
    Ok(t0.elapsed().as_secs_f64())
}
