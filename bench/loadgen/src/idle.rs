//! Idle mode: open N WebSocket connections, hold them, and report how much the server's resident
//! memory grew per connection. Owns nothing but that measurement.

use crate::args::Args;
use crate::{handshake, sys};
use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

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
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(handshake::open(a).map_err(|e| format!("connection {i}: {e}"))?);
    }
    let opened_in = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs_f64(a.hold));
    let mut lost = 0;
    for c in &mut conns {
        let alive = c.set_nonblocking(true).is_ok()
            && matches!(c.read(&mut [0u8; 64]), Err(e) if e.kind() == ErrorKind::WouldBlock);
        lost += usize::from(!alive);
    }
    let after = rss("after")?;
    let per_conn = match (before, after) {
        (Some(b), Some(f)) => Some((f as f64 - b as f64) * 1024.0 / n as f64),
        _ => None,
    };
    let opt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.0}"));
    if a.json {
        println!(
            "{{\"mode\":\"idle\",\"url\":\"{}\",\"connections\":{n},\"hold_s\":{},\"open_s\":{opened_in:.3},\
             \"rss_before_kib\":{},\"rss_after_kib\":{},\"bytes_per_conn\":{},\"lost\":{lost}}}",
            a.url,
            a.hold,
            opt(before.map(|v| v as f64)),
            opt(after.map(|v| v as f64)),
            opt(per_conn)
        );
    } else {
        println!(
            "{}  {n} idle connections opened in {opened_in:.2} s, held {} s",
            a.url, a.hold
        );
        println!(
            "server RSS before {} KiB, after {} KiB: {} bytes per connection; {lost} lost",
            opt(before.map(|v| v as f64)),
            opt(after.map(|v| v as f64)),
            opt(per_conn)
        );
    }
    if lost > 0 {
        return Err(format!(
            "{lost} connections were closed by the server while idle"
        ));
    }
    Ok(())
}
