//! loadgen: a WebSocket echo load generator for the LAppS benchmarks. See bench/README.md.
//! Connections are opened up front (blocking handshakes), then driven by `--threads` epoll
//! threads; the main thread only samples CPU time at the edges of the measured interval.

mod args;
mod churn;
mod driver;
mod fanout;
mod frame;
mod handshake;
mod hist;
mod idle;
mod lapps;
mod stream;
mod sys;

use std::time::{Duration, Instant};

fn main() {
    let a = match args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let outcome = match (a.idle, a.fanout) {
        _ if a.churn => churn::run(&a),
        (Some(n), _) => idle::run(&a, n),
        (None, Some(n)) => fanout::run(&a, n),
        (None, None) => throughput(&a),
    };
    if let Err(e) = outcome {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

pub fn payload(size: usize, binary: bool) -> Vec<u8> {
    // Varied bytes so that an echo with any byte moved or changed is caught.
    let mut x: u32 = 0x9e37_79b9;
    (0..size)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if binary {
                x as u8
            } else {
                b"abcdefghijklmnopqrstuvwxyz0123456789"[i * 7 % 36]
            }
        })
        .collect()
}

fn throughput(a: &args::Args) -> Result<(), String> {
    sys::raise_nofile(a.connections as u64 + 64).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let mut shares: Vec<Vec<_>> = (0..a.threads).map(|_| Vec::new()).collect();
    for i in 0..a.connections {
        let s = handshake::open_nth(a, i).map_err(|e| format!("connection {i}: {e}"))?;
        shares[i % a.threads].push(s);
    }
    let opcode = a.opcode();
    let payload = payload(a.size, a.binary);
    // --lapps: the frame carries the CBOR request, and what must come back is the response.
    let (one, expected) = if a.lapps {
        let one = frame::client_frame(opcode, &lapps::echo_request(&payload));
        (one, lapps::echo_response(&payload))
    } else {
        (frame::client_frame(opcode, &payload), payload)
    };
    let start = Instant::now();
    let warm_end = start + Duration::from_secs_f64(a.warmup);
    let plan = driver::Plan {
        opcode,
        frame_len: one.len(),
        burst: one.repeat(a.depth + 1),
        close_frame: frame::client_frame(frame::OP_CLOSE, &1000u16.to_be_bytes()),
        expected,
        lapps: a.lapps,
        depth: a.depth,
        warm_end,
        end: warm_end + Duration::from_secs_f64(a.duration),
    };
    let server = a.server_pid.map(|p| p.to_string());
    let cpu = |pid: &Option<String>| pid.as_deref().and_then(|p| sys::cpu_seconds(p).ok());
    let threads = |pid: &Option<String>| {
        pid.as_deref()
            .and_then(|p| sys::thread_cpu_seconds(p).ok())
            .unwrap_or_default()
    };
    let me = Some("self".to_string());
    let (stats, cpu0, cpu1, threads0, threads1) = std::thread::scope(|scope| {
        let workers: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(i, share)| {
                let pin = (!a.pin.is_empty()).then(|| a.pin[i % a.pin.len()]);
                let plan = &plan;
                scope.spawn(move || driver::run(share, plan, pin))
            })
            .collect();
        std::thread::sleep(plan.warm_end.saturating_duration_since(Instant::now()));
        let (cpu0, threads0) = ((cpu(&server), cpu(&me)), threads(&server));
        std::thread::sleep(plan.end.saturating_duration_since(Instant::now()));
        let (cpu1, threads1) = ((cpu(&server), cpu(&me)), threads(&server));
        let stats: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        (stats, cpu0, cpu1, threads0, threads1)
    });
    let split = ThreadSplit::between(&threads0, &threads1);
    let mut total = driver::Stats::default();
    for s in stats {
        let s = s.map_err(|_| "a client thread panicked".to_string())?;
        total.msgs += s.msgs;
        total.hist.merge(&s.hist);
        total.errors.extend(s.errors);
    }
    report(a, &total, cpu0, cpu1, split);
    if !total.errors.is_empty() {
        for e in total.errors.iter().take(5) {
            eprintln!("error: {e}");
        }
        return Err(format!("{} errors", total.errors.len()));
    }
    Ok(())
}

type CpuSample = (Option<f64>, Option<f64>);

/// The server's CPU seconds over the measured interval in its lapps IO workers (threads named
/// `lapps-io-*`) and in its Lua instances (`lua-*`); None for a server without such threads
/// (the peers).
#[derive(Clone, Copy, Default)]
struct ThreadSplit {
    io: Option<f64>,
    lua: Option<f64>,
}

impl ThreadSplit {
    fn between(before: &[(String, String, f64)], after: &[(String, String, f64)]) -> ThreadSplit {
        let used = |prefix: &str| {
            let mut found = false;
            let mut sum = 0.0;
            for (tid, name, secs) in after.iter().filter(|t| t.1.starts_with(prefix)) {
                found = true;
                let was = before.iter().find(|b| &b.0 == tid && &b.1 == name);
                sum += secs - was.map_or(0.0, |b| b.2);
            }
            found.then_some(sum)
        };
        ThreadSplit {
            io: used("lapps-io-"),
            lua: used("lua-"),
        }
    }
}

fn report(a: &args::Args, t: &driver::Stats, cpu0: CpuSample, cpu1: CpuSample, split: ThreadSplit) {
    let rate = t.msgs as f64 / a.duration;
    let mbps = rate * a.size as f64 / 1e6;
    let pct = |b: Option<f64>, e: Option<f64>| b.zip(e).map(|(b, e)| (e - b) / a.duration * 100.0);
    let (srv, cli) = (pct(cpu0.0, cpu1.0), pct(cpu0.1, cpu1.1));
    let us = |ns: u64| ns as f64 / 1000.0;
    let (p50, p99, max) = (
        us(t.hist.quantile(0.5)),
        us(t.hist.quantile(0.99)),
        us(t.hist.max()),
    );
    let mean = us(t.hist.mean());
    // CPU time per echo: unlike msgs/s, it barely moves when other processes share the core.
    let cost = |pct: Option<f64>| pct.filter(|_| t.msgs > 0).map(|p| p / 100.0 / rate * 1e6);
    let opt3 = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.3}"));
    // The server's CPU per echo in its IO workers and in its Lua instances.
    let per_msg = |secs: Option<f64>| secs.filter(|_| t.msgs > 0).map(|s| s / t.msgs as f64 * 1e6);
    let (io_us, lua_us) = (per_msg(split.io), per_msg(split.lua));
    let opt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.1}"));
    if a.json {
        println!(
            "{{\"url\":\"{}\",\"lapps\":{},\"connections\":{},\"size\":{},\"depth\":{},\"binary\":{},\"duration_s\":{},\
             \"msgs\":{},\"msgs_per_s\":{rate:.0},\"mb_per_s\":{mbps:.3},\"rtt_mean_us\":{mean:.1},\"rtt_p50_us\":{p50:.1},\
             \"rtt_p99_us\":{p99:.1},\"rtt_max_us\":{max:.1},\"server_cpu_pct\":{},\"client_cpu_pct\":{},\
             \"server_us_per_msg\":{},\"client_us_per_msg\":{},\"server_io_us_per_msg\":{},\
             \"server_lua_us_per_msg\":{},\"errors\":{}}}",
            a.url, a.lapps, a.connections, a.size, a.depth, a.binary, a.duration, t.msgs, opt(srv), opt(cli),
            opt3(cost(srv)), opt3(cost(cli)), opt3(io_us), opt3(lua_us), t.errors.len()
        );
    } else {
        println!(
            "{}  {} conns x depth {} x {} B {}{}, {} s (+{} s warmup), {} client thread(s)",
            a.url,
            a.connections,
            a.depth,
            a.size,
            if a.binary { "binary" } else { "text" },
            if a.lapps { " (LAppS echo calls)" } else { "" },
            a.duration,
            a.warmup,
            a.threads
        );
        println!("  {rate:.0} msgs/s  {mbps:.2} MB/s  RTT mean {mean:.0} us  p50 {p50:.0} us  p99 {p99:.0} us  max {max:.0} us");
        println!(
            "  server CPU {}% ({} us/msg)  client CPU {}% ({} us/msg)  errors {}",
            opt(srv),
            opt3(cost(srv)),
            opt(cli),
            opt3(cost(cli)),
            t.errors.len()
        );
        if io_us.is_some() || lua_us.is_some() {
            println!(
                "  server threads: IO workers {} us/msg, Lua instances {} us/msg",
                opt3(io_us),
                opt3(lua_us)
            );
        }
    }
}
