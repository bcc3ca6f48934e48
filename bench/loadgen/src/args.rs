//! The command line. Owns option names, defaults and validation; never touches the network.

use std::net::{SocketAddr, ToSocketAddrs};

pub const USAGE: &str = "\
usage: loadgen --url ws://HOST:PORT/PATH | wss://HOST:PORT/PATH [options]
  --connections N   connections (default 100)
  --size S          payload bytes per message (default 16)
  --depth D         messages in flight per connection, 1 = ping-pong (default 1)
  --duration SECS   measured interval (default 10)
  --warmup SECS     unmeasured run before it (default 2)
  --binary | --text message type (default binary)
  --threads T       client threads, connections split among them (default 1)
  --pin CPU[,CPU..] pin client thread i to the i-th CPU of the list (round robin)
  --server-pid PID  report that process's CPU% (throughput) or VmRSS (idle)
  --lapps          LAppS protocol: each message is the CBOR request {lapps:1, method:echo,
                    params:[<S bytes>]}, each reply must be {status:1, cid:0, result:[<same>]}
                    (OONs in between are skipped); --size is the byte string's length
  --idle N --hold SECS   open N idle connections, hold them, report server RSS per connection
                    (opened by --threads threads at once); with --echo-all, then one --size
                    message on every connection, whose echo must come back; with
                    --hold-stdin, prints \"opened N\" once all are open and holds them until
                    a line (or the end) comes on stdin, instead of --hold seconds
  --sources K       connect from K loopback addresses, 127.0.0.1 to 127.0.0.K (each has its
                    own ephemeral ports: one address has ~28,000 towards one server port)
  --fanout N --rounds R  N subscribers to bench/apps/fanout (the URL's service): per round,
                    time one bcast:send and one ws:send loop of a --size message to all of them
  --churn           for --duration seconds, each of --threads threads opens a connection, makes
                    one echo (a call with --lapps) and ends it (a clean close, a reset or a FIN,
                    in turn), again and again; any refused or wrong cycle is an error
  --json            print one JSON line instead of text
  --ca FILE         wss://: trust this PEM CA (the server name checked is \"localhost\")
  --tls-insecure    wss://: accept any server certificate (benchmarks on loopback only)";

#[derive(Debug, Clone)]
pub struct Args {
    pub addr: SocketAddr,
    pub host_header: String,
    pub path: String,
    pub connections: usize,
    pub size: usize,
    pub depth: usize,
    pub duration: f64,
    pub warmup: f64,
    pub binary: bool,
    pub threads: usize,
    pub pin: Vec<usize>,
    pub server_pid: Option<u32>,
    pub idle: Option<usize>,
    pub hold: f64,
    pub json: bool,
    pub lapps: bool,
    pub churn: bool,
    pub echo_all: bool,
    pub hold_stdin: bool,
    pub sources: u8,
    pub fanout: Option<usize>,
    pub rounds: usize,
    pub url: String,
    /// wss:// when set.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Args {
    /// The frame opcode of the messages sent (`--binary` / `--text`).
    pub fn opcode(&self) -> u8 {
        if self.binary {
            crate::frame::OP_BINARY
        } else {
            crate::frame::OP_TEXT
        }
    }
}

pub fn parse(argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut url = None;
    let mut a = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        host_header: String::new(),
        path: String::new(),
        connections: 100,
        size: 16,
        depth: 1,
        duration: 10.0,
        warmup: 2.0,
        binary: true,
        threads: 1,
        pin: Vec::new(),
        server_pid: None,
        idle: None,
        hold: 5.0,
        json: false,
        lapps: false,
        churn: false,
        echo_all: false,
        hold_stdin: false,
        sources: 1,
        fanout: None,
        rounds: 10,
        url: String::new(),
        tls: None,
    };
    let mut ca = None;
    let mut insecure = false;
    let mut it = argv;
    while let Some(opt) = it.next() {
        let mut val = || it.next().ok_or(format!("{opt} needs a value"));
        match opt.as_str() {
            "--url" => url = Some(val()?),
            "--connections" => a.connections = num(&opt, &val()?)?,
            "--size" => a.size = num(&opt, &val()?)?,
            "--depth" => a.depth = num(&opt, &val()?)?,
            "--duration" => a.duration = num(&opt, &val()?)?,
            "--warmup" => a.warmup = num(&opt, &val()?)?,
            "--threads" => a.threads = num(&opt, &val()?)?,
            "--server-pid" => a.server_pid = Some(num(&opt, &val()?)?),
            "--idle" => a.idle = Some(num(&opt, &val()?)?),
            "--hold" => a.hold = num(&opt, &val()?)?,
            "--fanout" => a.fanout = Some(num(&opt, &val()?)?),
            "--rounds" => a.rounds = num(&opt, &val()?)?,
            "--lapps" => a.lapps = true,
            "--churn" => a.churn = true,
            "--echo-all" => a.echo_all = true,
            "--hold-stdin" => a.hold_stdin = true,
            "--sources" => a.sources = num(&opt, &val()?)?,
            "--pin" => {
                a.pin = val()?
                    .split(',')
                    .map(|c| num(&opt, c))
                    .collect::<Result<_, _>>()?
            }
            "--binary" => a.binary = true,
            "--text" => a.binary = false,
            "--json" => a.json = true,
            "--ca" => ca = Some(val()?),
            "--tls-insecure" => insecure = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            _ => return Err(format!("unknown option {opt}\n{USAGE}")),
        }
    }
    let url = url.ok_or(format!("--url is required\n{USAGE}"))?;
    let rest = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(r), _) => r,
        (None, Some(r)) => {
            let trust = match (ca, insecure) {
                (Some(f), false) => crate::stream::TlsTrust::Ca(f.into()),
                (None, true) => crate::stream::TlsTrust::Insecure,
                _ => return Err("wss:// needs exactly one of --ca FILE or --tls-insecure".into()),
            };
            a.tls = Some(crate::stream::client_config(&trust)?);
            r
        }
        _ => return Err("only ws:// and wss:// URLs are supported".into()),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    a.addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or(format!("{authority}: no address"))?;
    a.host_header = authority.to_string();
    a.path = path.to_string();
    a.url = url;
    if a.connections == 0 || a.depth == 0 || a.threads == 0 || a.rounds == 0 {
        return Err("--connections, --depth, --threads and --rounds must be at least 1".into());
    }
    if a.sources == 0 || (a.sources > 1 && !a.addr.is_ipv4()) {
        return Err("--sources must be 1-255, and more than 1 needs an IPv4 server".into());
    }
    if (a.echo_all || a.hold_stdin) && a.idle.is_none() {
        return Err("--echo-all and --hold-stdin go with --idle".into());
    }
    if a.fanout == Some(0) {
        return Err("--fanout needs at least 1 subscriber".into());
    }
    if a.lapps && !a.binary {
        return Err("--lapps messages are CBOR: binary only".into());
    }
    if a.duration <= 0.0 || a.warmup < 0.0 || a.hold < 0.0 {
        return Err("--duration must be positive, --warmup and --hold not negative".into());
    }
    Ok(a)
}

fn num<T: std::str::FromStr>(opt: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{opt}: bad value {v:?}"))
}
