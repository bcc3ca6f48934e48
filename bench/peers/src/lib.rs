//! What both reference echo servers share: the command line and the runtime shape.
//! Each server stays as close to its library's own example as possible; this module must never
//! add tuning that the examples do not have, apart from TCP_NODELAY (the product sets it too).

use std::net::SocketAddr;

/// `PROG PORT [WORKERS]`; WORKERS also comes from the `WORKERS` environment variable (default 1),
/// so that a server pinned to one core runs one runtime worker.
pub fn parse_args() -> (SocketAddr, usize) {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: ECHO-SERVER PORT [WORKERS]   (or WORKERS=N in the environment)");
        std::process::exit(2)
    };
    let port: u16 = match args.get(1).map(|p| p.parse()) {
        Some(Ok(p)) => p,
        _ => usage(),
    };
    let workers = args
        .get(2)
        .cloned()
        .or_else(|| std::env::var("WORKERS").ok())
        .map(|w| w.parse().unwrap_or_else(|_| usage()))
        .unwrap_or(1);
    (SocketAddr::from(([127, 0, 0, 1], port)), workers)
}

/// The multi-thread runtime both examples would get from `#[tokio::main]`, with a chosen size.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime")
}
