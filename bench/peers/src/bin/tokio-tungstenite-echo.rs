//! tokio-tungstenite echo server, as in the crate's `examples/echo-server.rs`:
//! `accept_async`, split, forward text/binary messages back (tungstenite answers pings and closes).

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let (addr, workers) = lapps_bench_peers::parse_args();
    lapps_bench_peers::runtime(workers).block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        eprintln!("tokio-tungstenite-echo listening on {addr} ({workers} worker threads)");
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(accept_connection(stream));
        }
    })
}

async fn accept_connection(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let ws = match tokio_tungstenite::accept_async(stream).await {
        Ok(ws) => ws,
        Err(e) => return eprintln!("handshake: {e}"),
    };
    let (write, read) = ws.split();
    // A peer that drops the TCP connection without a close frame is normal at the end of a run.
    let _ = read
        .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await;
}
