//! The cost of one message's hop through a Lua instance, in process (no sockets).
//!
//! A "worker" (this thread) calls `on_message` + `flush` as an IOWorker would, in batches of
//! B messages, and drains what the instance posts back (the echo app's `ws:send`), keeping at
//! most 4096 messages in flight. Figures: nanoseconds per message for the whole round trip
//! (copy into the batch, wake-up, Lua call, framing, post, hub pop). Baseline: the same Lua
//! callback called directly on one thread. Run: `cargo bench --bench lua_hop`.

use std::sync::Arc;
use std::time::Instant;

use lapps::net::handle::ConnId;
use lapps::net::hub::{Command, Hub};
use lapps::service::lua::ServiceSpec;
use lapps::service::registry::Registry;
use lapps::service::WorkerCtx;
use lapps::ws::Opcode;

struct W;
impl WorkerCtx for W {
    fn worker(&self) -> usize {
        0
    }
    fn send(&mut self, _: ConnId, _: Opcode, _: &[u8]) -> bool {
        false
    }
}

fn echo_spec(budget: Option<u64>) -> ServiceSpec {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("lua/apps/echo");
    let mut s = ServiceSpec::new("echo", dir.join("echo.lua"));
    s.package_paths = vec![dir, root.join("lua/lib")];
    s.instruction_budget = budget;
    s
}

fn drain(hub: &Hub) -> usize {
    let mut n = 0;
    while let Some(batch) = hub.port(0).commands.pop() {
        for c in &batch {
            n += match c {
                Command::Send { .. } => 1,
                // Small replies travel framed back to back (runs to one connection merged).
                Command::SendBatch { buf, .. } => messages_in(buf),
                _ => 0,
            };
        }
    }
    n
}

/// Messages (frames with FIN) in back-to-back unmasked server frames.
fn messages_in(mut buf: &[u8]) -> usize {
    let mut n = 0;
    while let Ok(Some((h, at))) = lapps::ws::frame::FrameHeader::parse(buf) {
        n += usize::from(h.fin);
        buf = &buf[at + h.payload_len as usize..];
    }
    n
}

fn hop(total: usize, batch: usize, payload: usize, budget: Option<u64>) -> f64 {
    let hub = Arc::new(Hub::new(1, 1024).unwrap());
    let reg = Registry::start(vec![echo_spec(budget)], hub.clone()).unwrap();
    let svc = reg.route("/echo").unwrap();
    let conns: Vec<(ConnId, u32)> = (0..64u32)
        .map(|i| {
            hub.port(0).set_live(i, 1);
            let c = ConnId::new(0, i, 1);
            (
                c,
                svc.on_open(&mut W, c).expect("a running service takes it"),
            )
        })
        .collect();
    let msg = vec![b'x'; payload];
    let (mut sent, mut got) = (0usize, 0usize);
    let t = Instant::now();
    let mut flushes = 1u64;
    while got < total {
        if sent < total && sent - got < 4096 {
            for _ in 0..batch.min(total - sent) {
                let (c, tag) = conns[sent % conns.len()];
                svc.on_message(&mut W, c, tag, Opcode::Binary, &msg);
                sent += 1;
            }
            svc.flush(0, flushes);
            flushes += 1;
        }
        let n = drain(&hub);
        got += n;
        if n == 0 && sent - got >= 4096.min(total - got) {
            // Nothing to do until the instance answers: give it the core, as a worker
            // sleeping in epoll_wait would.
            std::thread::yield_now();
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / total as f64;
    reg.shutdown();
    ns
}

fn direct(total: usize, payload: usize, jit: bool) -> f64 {
    let lua = mlua::Lua::new();
    if !jit {
        lua.load("jit.off()").exec().unwrap();
    }
    let f: mlua::Function = lua
        .load("local n = 0 return function(h, op, m) n = n + #m return true end")
        .eval()
        .unwrap();
    let msg = vec![b'x'; payload];
    let t = Instant::now();
    for i in 0..total {
        let s = lua.create_string(&msg).unwrap();
        let _: bool = f.call((i as f64, 2, s)).unwrap();
    }
    t.elapsed().as_nanos() as f64 / total as f64
}

fn main() {
    let total = 200_000;
    println!(
        "direct Lua call (create_string + call), JIT on : {:7.0} ns/msg",
        direct(total, 32, true)
    );
    println!(
        "direct Lua call (create_string + call), JIT off: {:7.0} ns/msg",
        direct(total, 32, false)
    );
    let modes = [
        (None, "JIT on, no budget"),
        (Some(100_000_000), "budget (interpreter)"),
    ];
    for (budget, label) in modes {
        for batch in [1, 16, 64, 256] {
            let ns = hop(total, batch, 32, budget);
            println!("echo hop, 32 B, batch {batch:>3}, {label:<20}: {ns:7.0} ns/msg");
        }
    }
    for payload in [1024, 65536] {
        let ns = hop(total / 10, 64, payload, Some(100_000_000));
        println!("echo hop, {payload} B, batch  64, budget (interpreter): {ns:7.0} ns/msg");
    }
}
