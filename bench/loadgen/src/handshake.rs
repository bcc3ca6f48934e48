//! Opening a WebSocket connection: TCP connect and the HTTP/1.1 upgrade, blocking with timeouts,
//! done before any measurement starts. Verifies the 101 status and the accept key.

use crate::args::Args;
use crate::stream::Stream;
use crate::sys;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

// RFC 6455's sample key and its accept value: a fixed key is fine for a benchmark client and
// lets the reply be checked without SHA-1.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const TIMEOUT: Duration = Duration::from_secs(10);

pub fn open(a: &Args) -> io::Result<Stream> {
    upgrade(a, TcpStream::connect_timeout(&a.addr, TIMEOUT)?)
}

/// The `i`-th connection of a run, from the (i mod `--sources`)-th loopback address.
pub fn open_nth(a: &Args, i: usize) -> io::Result<Stream> {
    if a.sources <= 1 {
        return open(a);
    }
    let SocketAddr::V4(to) = a.addr else {
        return Err(io::Error::other("--sources needs an IPv4 server"));
    };
    let from = Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(a.sources)) as u8);
    upgrade(a, sys::connect_from(from, to, TIMEOUT)?)
}

fn upgrade(a: &Args, tcp: TcpStream) -> io::Result<Stream> {
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(TIMEOUT))?;
    tcp.set_write_timeout(Some(TIMEOUT))?;
    let mut s = Stream::new(tcp, a.tls.as_ref())?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        a.path, a.host_header
    );
    s.write_all(req.as_bytes())?;
    // The server sends nothing after the 101 until we send a message, so reading in chunks
    // cannot swallow frame bytes.
    let mut resp = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !resp.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 || resp.len() > 16 * 1024 {
            return Err(io::Error::other("connection closed during the handshake"));
        }
        resp.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&resp);
    let status = text.lines().next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 101") {
        return Err(io::Error::other(format!("upgrade refused: {status}")));
    }
    if !text.contains(ACCEPT) || !text.ends_with("\r\n\r\n") {
        return Err(io::Error::other(
            "bad Sec-WebSocket-Accept or extra bytes after the 101",
        ));
    }
    s.tcp().set_read_timeout(None)?;
    s.tcp().set_write_timeout(None)?;
    Ok(s)
}
