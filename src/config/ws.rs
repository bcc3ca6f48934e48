//! `ws.json`: the WebSocket server (listening endpoints, TLS, ACL, workers, limits, timeouts).
//!
//! Owns the schema of ws.json, its defaults and its checks. Must never open sockets or read the
//! certificate files: it only says where they are (the TLS layer loads them).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::acl::Acl;
use super::error::ProblemKind;
use super::reader::{Obj, Reader};

/// PEM files for wss://.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCertificates {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When present, clients must present a certificate signed by this CA.
    pub ca: Option<PathBuf>,
}

/// The IOWorker settings (`workers` object).
#[derive(Debug, Clone, PartialEq)]
pub struct Workers {
    /// IOWorker threads (default: one per core, at most `MAX_WORKERS`, 32).
    pub workers: usize,
    /// `workers` was taken from the host, not from the file (a reload compares the file).
    pub workers_by_default: bool,
    /// Connections per worker; beyond, new connections get HTTP 503.
    pub max_connections: usize,
    /// `max_connections` is the default, not from the file: start-up lowers it to what the
    /// descriptor limit covers (src/main.rs), and a reload compares the file.
    pub max_connections_by_default: bool,
    /// Outbound frame size for splitting large messages (`None`: never split).
    pub auto_fragment: Option<usize>,
    /// Size of each worker's one read buffer when above 64 KiB (below, 64 KiB is used); also
    /// the fragment size of `"auto_fragment": true`.
    pub input_buffer_size: usize,
    /// `epoll_wait` batch.
    pub max_poll_events: usize,
    /// `epoll_wait` timeout.
    pub max_poll_wait_ms: u64,
    /// Reads from one connection (each maybe holding many messages) per turn before the
    /// worker serves other work.
    pub max_inbounds_skip: usize,
}

/// One listening address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    /// 0 lets the kernel pick a free port (tests).
    pub port: u16,
    pub tls: bool,
}

impl Endpoint {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// Everything in ws.json.
#[derive(Debug, Clone, PartialEq)]
pub struct WsConfig {
    /// Listen address of the first endpoint (an IPv4 or IPv6 literal, checked at load).
    pub ip: String,
    pub port: u16,
    /// Accepting threads.
    pub listeners: usize,
    /// Weight of one connection in the balancer's load score.
    pub connection_weight: f64,
    /// Server-wide ACL, checked at accept (before any byte is read).
    pub acl: Acl,
    /// Whether the first endpoint serves wss://.
    pub tls: bool,
    /// Required when any endpoint has `tls`.
    pub tls_certificates: Option<TlsCertificates>,
    /// The original's `tls_server_version`, as 13 (TLS 1.3 only: the file's 4 or 13) or 12
    /// (TLS 1.2 and 1.3: its 3 or 12, or none).
    pub tls_server_version: u8,
    pub workers: Workers,
    /// A connection that has not completed its HTTP upgrade by then is dropped.
    pub handshake_timeout_ms: u64,
    /// How long the server waits for the peer's Close reply (or TCP close) after sending Close.
    pub close_timeout_ms: u64,
    /// 0 = off. Otherwise an idle connection is pinged after this long, and closed if it stays
    /// silent for as long again.
    pub idle_timeout_ms: u64,
    /// 0 = off. Otherwise a data message must arrive whole within this long of its first
    /// byte; a slower one fails the connection with 1008.
    pub message_timeout_ms: u64,
    /// `listen(2)` backlog.
    pub backlog: u32,
    /// Largest HTTP upgrade request (request line + headers), bytes; larger gets 431.
    pub max_request_bytes: usize,
    /// Most header lines in the upgrade request; more gets 431.
    pub max_headers: usize,
    /// Stop reading a connection whose outbound queue holds more than this many bytes, until
    /// the peer has drained it (back-pressure, not buffering).
    pub outbound_high_water: usize,
    /// Bytes that inbound messages still being received may hold over all connections
    /// (0: no cap); past it, the connection whose message needs more is closed with 1013.
    pub max_inbound_assembly_bytes: u64,
    /// `max_inbound_assembly_bytes` was taken from the memory, not from the file (a reload
    /// compares the file).
    pub max_inbound_assembly_bytes_by_default: bool,
    /// Open connections one peer address may have (0: no limit); past it, HTTP 503.
    pub max_connections_per_address: u32,
    /// IPv6 peers are counted under that limit by network: the first this many bits of
    /// their address (128: each address whole).
    pub per_address_ipv6_prefix: u8,
    /// Endpoints beyond the first (the first is `ip`/`port`/`tls`).
    pub endpoints: Vec<Endpoint>,
    /// Not a ws.json key: records a TLS 1.2 session whose cipher suite has a confidentiality
    /// limit (AES-GCM) may send before the server closes it with 1001; `None`, the limit less
    /// a reserve ([`crate::net::tls::TLS12_RECORD_RESERVE`]). Tests lower it.
    pub tls12_record_budget: Option<u64>,
}

const KEYS: &[&str] = &[
    "ip",
    "port",
    "listeners",
    "connection_weight",
    "acl",
    "tls",
    "tls_certificates",
    "tls_server_version",
    // The original's, read and checked so that its ws.json loads; nothing uses them (the
    // config is never written back; cws offers TLS 1.2 and 1.3 whatever this says).
    "lapps_config_auto_save",
    "tls_client_version",
    "workers",
    "handshake_timeout_ms",
    "close_timeout_ms",
    "idle_timeout_ms",
    "message_timeout_ms",
    "backlog",
    "max_request_bytes",
    "max_headers",
    "outbound_high_water",
    "max_inbound_assembly_bytes",
    "max_connections_per_address",
    "per_address_ipv6_prefix",
    "endpoints",
];

const WORKER_KEYS: &[&str] = &[
    "workers",
    "max_connections",
    "auto_fragment",
    "input_buffer_size",
    "max_poll_events",
    "max_poll_wait_ms",
    "max_inbounds_skip",
];

const ENDPOINT_KEYS: &[&str] = &["ip", "port", "tls"];
const TLS_KEYS: &[&str] = &["cert", "key", "ca"];

pub const DEFAULT_PORT: u16 = 5083;
const DEFAULT_INPUT_BUFFER: usize = 2048;
/// `tls_server_version` or `tls_client_version`: whether it asks for TLS 1.3 only. The
/// original took 3 (TLS 1.2) and 4 (TLS 1.3), and its own files say 4; 12 and 13 say the same.
/// 3 serves TLS 1.2 and 1.3 (as leaving it out does): every client of the original still
/// connects, and those that can get 1.3.
fn tls_version(r: &mut Reader, obj: &Obj, key: &str) -> bool {
    match obj.get(key) {
        None => false,
        Some(v) => match super::reader::whole(v) {
            Some(3 | 12) => false,
            Some(4 | 13) => true,
            _ => {
                r.type_error(
                    &obj.path_of(key),
                    "3 or 12 (TLS 1.2 and 1.3), 4 or 13 (TLS 1.3)",
                    v,
                );
                false
            }
        },
    }
}

/// SPEC 1's default for `workers.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 100_000;

/// Most accepting threads (`listeners`) a config may ask for per endpoint.
const MAX_THREADS: usize = 1024;

/// IO workers a connection handle can name (5 bits of it).
pub const MAX_WORKERS: usize = crate::net::handle::ConnId::MAX_WORKERS;

/// One IO worker per core, up to [`MAX_WORKERS`].
fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS)
}

/// `max_inbound_assembly_bytes` left out: a quarter of the memory, so that partly received
/// messages alone cannot exhaust it.
fn default_assembly_cap() -> u64 {
    quarter_of_memory()
}

/// A quarter of the memory this process may use, the host's or its cgroup's limit (systemd
/// `MemoryMax=`) when lower (1 GiB where neither can be told); at least 1.
pub fn quarter_of_memory() -> u64 {
    // SAFETY: sysconf only reads system values; no pointers are involved.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let host = (pages > 0 && page > 0).then(|| (pages as u64).saturating_mul(page as u64));
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|own| cgroup_memory_max(&own, |p| std::fs::read_to_string(p).ok()));
    match (host, cgroup) {
        (None, None) => 1 << 30,
        // At least 1: 0 would mean no cap.
        (h, c) => (h.unwrap_or(u64::MAX).min(c.unwrap_or(u64::MAX)) / 4).max(1),
    }
}

/// The lowest memory limit of the process's cgroup and those above it: `memory.max` under
/// cgroup v2 (the `0::/PATH` line of `own`, the text of /proc/self/cgroup), else
/// `memory.limit_in_bytes` of the v1 memory controller (`N:memory:/PATH`, or a line listing
/// `memory` among other controllers). `read` reads a file.
pub(super) fn cgroup_memory_max(own: &str, read: impl Fn(&Path) -> Option<String>) -> Option<u64> {
    let v2 = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(|p| lowest_limit(Path::new("/sys/fs/cgroup"), p, "memory.max", &read));
    v2.or_else(|| {
        let path = own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then_some(path)
        })?;
        lowest_limit(
            Path::new("/sys/fs/cgroup/memory"),
            path,
            "memory.limit_in_bytes",
            &read,
        )
    })
}

/// The lowest number in `file` of `root`/`path` and of its parents up to `root` ("max" and
/// missing files count as no limit).
fn lowest_limit(
    root: &Path,
    path: &str,
    file: &str,
    read: &impl Fn(&Path) -> Option<String>,
) -> Option<u64> {
    let mut dir = root.join(path.trim_start_matches('/'));
    let mut lowest: Option<u64> = None;
    loop {
        if let Some(l) = read(&dir.join(file)).and_then(|v| v.trim().parse::<u64>().ok()) {
            lowest = Some(lowest.map_or(l, |x| x.min(l)));
        }
        if dir == root || !dir.starts_with(root) || !dir.pop() {
            return lowest;
        }
    }
}

impl Default for WsConfig {
    fn default() -> Self {
        let mut r = Reader::new("ws.json");
        let cfg = WsConfig::read(&mut r, &Value::Object(Default::default()), Path::new("/"));
        debug_assert!(r.problems.is_empty(), "{:?}", r.problems);
        cfg
    }
}

impl Default for Workers {
    fn default() -> Self {
        WsConfig::default().workers
    }
}

impl WsConfig {
    /// A warning for each timeout set below a second but not 0: seconds written where
    /// milliseconds are meant (`"idle_timeout_ms": 60` pings every client after 60 ms of
    /// silence and closes those whose round trip is longer). The value is used as written.
    pub fn short_timeouts(&self) -> Vec<String> {
        [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("close_timeout_ms", self.close_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("message_timeout_ms", self.message_timeout_ms),
        ]
        .into_iter()
        .filter(|&(_, ms)| ms > 0 && ms < 1000)
        .map(|(key, ms)| {
            let unit = if ms == 1 { "second" } else { "seconds" };
            format!(
                "ws.json: {key} is {ms}, in milliseconds: under a second, used as written (for \
                 {ms} {unit}, write {})",
                ms * 1000
            )
        })
        .collect()
    }

    /// Every listening endpoint, the top-level one first.
    pub fn listen_endpoints(&self) -> Vec<Endpoint> {
        let first = Endpoint {
            ip: self.ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            port: self.port,
            tls: self.tls,
        };
        std::iter::once(first)
            .chain(self.endpoints.iter().copied())
            .collect()
    }

    /// Reads ws.json's root value; problems go to `r`, defaults stand in for bad values.
    pub(crate) fn read(r: &mut Reader, root: &Value, cwd: &Path) -> WsConfig {
        let empty = serde_json::Map::new();
        let obj = r.object(root, "", KEYS).unwrap_or(Obj {
            map: &empty,
            path: String::new(),
        });

        let ip = obj.string(r, "ip", "0.0.0.0");
        if ip.parse::<IpAddr>().is_err() {
            r.problem(
                ProblemKind::Type,
                "ip",
                format!("expected an IPv4 or IPv6 address, got {:?}", ip),
            );
        }
        let port = read_port(r, &obj);
        let tls = obj.bool(r, "tls", false);
        let acl = obj
            .object(r, "acl", Acl::KEYS)
            .map(|a| Acl::read(r, &a))
            .unwrap_or_default();

        let tls_certificates = obj.object(r, "tls_certificates", TLS_KEYS).map(|t| {
            let mut required = |key: &str| match t.get(key) {
                Some(_) => t.path(r, key, Path::new(""), cwd),
                None => {
                    r.problem(
                        ProblemKind::Semantic,
                        &t.path_of(key),
                        "missing (a PEM file path)",
                    );
                    PathBuf::new()
                }
            };
            let cert = required("cert");
            let key = required("key");
            let ca = t.get("ca").map(|_| t.path(r, "ca", Path::new(""), cwd));
            TlsCertificates { cert, key, ca }
        });

        let workers = read_workers(r, &obj);
        obj.bool(r, "lapps_config_auto_save", false);
        tls_version(r, &obj, "tls_client_version");

        let (endpoints, entry_of) = read_endpoints(r, &obj, &ip);

        let cfg = WsConfig {
            ip,
            port,
            listeners: obj.usize_in(r, "listeners", 1, 1, MAX_THREADS),
            connection_weight: obj.float(r, "connection_weight", 1.0, 0.0),
            acl,
            tls,
            tls_certificates,
            tls_server_version: if tls_version(r, &obj, "tls_server_version") {
                13
            } else {
                12
            },
            workers,
            handshake_timeout_ms: obj.uint(r, "handshake_timeout_ms", 5000, 1, u64::MAX),
            close_timeout_ms: obj.uint(r, "close_timeout_ms", 3000, 1, u64::MAX),
            idle_timeout_ms: obj.uint(r, "idle_timeout_ms", 60_000, 0, u64::MAX),
            message_timeout_ms: obj.uint(r, "message_timeout_ms", 120_000, 0, u64::MAX),
            backlog: obj.uint(r, "backlog", 1024, 1, i32::MAX as u64) as u32,
            max_request_bytes: obj.usize_in(r, "max_request_bytes", 8192, 256, 1 << 20),
            max_headers: obj.usize_in(r, "max_headers", 64, 8, 1024),
            outbound_high_water: obj.usize(r, "outbound_high_water", 4 << 20, 1),
            max_inbound_assembly_bytes: obj.uint(
                r,
                "max_inbound_assembly_bytes",
                default_assembly_cap(),
                0,
                u64::MAX,
            ),
            max_inbound_assembly_bytes_by_default: obj.get("max_inbound_assembly_bytes").is_none(),
            max_connections_per_address: obj.uint(
                r,
                "max_connections_per_address",
                0,
                0,
                u64::from(u32::MAX),
            ) as u32,
            per_address_ipv6_prefix: obj.uint(r, "per_address_ipv6_prefix", 64, 0, 128) as u8,
            endpoints,
            tls12_record_budget: None,
        };
        cfg.check(r, &entry_of);
        cfg
    }

    /// Checks between keys. `entry_of[i]` is the index in the file's `endpoints` array of
    /// `self.endpoints[i]` (entries with errors were dropped).
    fn check(&self, r: &mut Reader, entry_of: &[usize]) {
        let entry = |i: usize| entry_of.get(i).copied().unwrap_or(i);
        if self.tls_certificates.is_none() {
            if self.tls {
                r.problem(
                    ProblemKind::Semantic,
                    "tls",
                    "tls is true but tls_certificates (cert, key) is missing",
                );
            }
            if let Some(i) = self.endpoints.iter().position(|e| e.tls) {
                r.problem(
                    ProblemKind::Semantic,
                    &format!("endpoints[{}].tls", entry(i)),
                    "tls is true but tls_certificates (cert, key) is missing",
                );
            }
        }
        let all = self.listen_endpoints();
        // `all[i]` is `endpoints[entry(i - 1)]` from 1 on; `all[0]` is the top-level ip/port,
        // a stand-in when its `ip` did not parse (already reported, so not compared).
        let first_parsed = self.ip.parse::<IpAddr>().is_ok();
        let name = |i: usize| match i {
            0 => "top-level ip/port".to_string(),
            _ => format!("endpoints[{}]", entry(i - 1)),
        };
        for (i, e) in all.iter().enumerate().skip(1) {
            if e.port == 0 {
                continue; // the kernel picks a free port for each
            }
            let earlier = || {
                all[..i]
                    .iter()
                    .enumerate()
                    .filter(|&(j, p)| p.port == e.port && (j > 0 || first_parsed))
            };
            let why = if earlier().any(|(_, p)| p.ip == e.ip) {
                format!("{} is listed twice", e.socket_addr())
            } else if let Some((j, p, reason)) =
                earlier().find_map(|(j, p)| overlap(p, e).map(|why| (j, p, why)))
            {
                format!(
                    "{} overlaps {} ({}): {reason}, so only one of them could listen",
                    e.socket_addr(),
                    p.socket_addr(),
                    name(j)
                )
            } else {
                continue;
            };
            r.problem(ProblemKind::Semantic, &name(i), why);
        }
    }
}

/// Why two different addresses on one port can never both listen, if they cannot: the same
/// address family (an IPv4-mapped IPv6 address is IPv4, as the kernel binds it) and either the
/// same address or one of them the wildcard. IPv6 sockets are V6ONLY (src/net/listener.rs),
/// so "::" and "0.0.0.0" do not overlap.
fn overlap(a: &Endpoint, b: &Endpoint) -> Option<String> {
    let (ca, cb) = (a.ip.to_canonical(), b.ip.to_canonical());
    if ca.is_ipv4() != cb.is_ipv4() {
        return None;
    }
    let family = if ca.is_ipv4() { "IPv4" } else { "IPv6" };
    if ca == cb {
        return Some(format!(
            "{} and {} are the same {family} address",
            a.ip, b.ip
        ));
    }
    let wild = [a.ip, b.ip]
        .into_iter()
        .find(|ip| ip.to_canonical().is_unspecified())?;
    Some(format!(
        "{wild} takes port {} on every {family} address",
        a.port
    ))
}

fn read_port(r: &mut Reader, obj: &Obj<'_>) -> u16 {
    obj.uint(r, "port", u64::from(DEFAULT_PORT), 0, 65535) as u16
}

fn read_workers(r: &mut Reader, obj: &Obj<'_>) -> Workers {
    let empty = serde_json::Map::new();
    let w = obj.object(r, "workers", WORKER_KEYS).unwrap_or(Obj {
        map: &empty,
        path: "workers".to_string(),
    });
    let input_buffer_size = w.usize_in(r, "input_buffer_size", DEFAULT_INPUT_BUFFER, 1, 64 << 20);
    let auto_fragment = match w.get("auto_fragment") {
        None | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some(input_buffer_size),
        Some(v) => match super::reader::whole(v).filter(|n| *n >= 1) {
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            None => {
                r.type_error(
                    &w.path_of("auto_fragment"),
                    "false, true or a frame size >= 1",
                    v,
                );
                None
            }
        },
    };
    Workers {
        workers: w.usize_in(r, "workers", default_workers(), 1, MAX_WORKERS),
        workers_by_default: w.get("workers").is_none(),
        // Handles address 2^22 slots per worker (src/net/handle.rs): live and refused
        // connections (up to twice this) with room to spare for retired slots.
        max_connections: w.uint(r, "max_connections", DEFAULT_MAX_CONNECTIONS, 1, 1 << 20) as usize,
        max_connections_by_default: w.get("max_connections").is_none(),
        auto_fragment,
        input_buffer_size,
        max_poll_events: w.usize_in(r, "max_poll_events", 256, 1, 65_536),
        max_poll_wait_ms: w.uint(r, "max_poll_wait_ms", 10, 0, i32::MAX as u64),
        max_inbounds_skip: w.usize(r, "max_inbounds_skip", 50, 1),
    }
}

/// Extra endpoints; `ip` defaults to the top-level one, `port` is required.
/// With each endpoint, its index in the array (entries with errors are left out).
fn read_endpoints(r: &mut Reader, obj: &Obj<'_>, default_ip: &str) -> (Vec<Endpoint>, Vec<usize>) {
    let Some(value) = obj.get("endpoints") else {
        return (Vec::new(), Vec::new());
    };
    let Some(items) = value.as_array() else {
        r.type_error("endpoints", "an array of {ip, port, tls} objects", value);
        return (Vec::new(), Vec::new());
    };
    let mut out = Vec::new();
    let mut entry_of = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("endpoints[{i}]");
        let Some(e) = r.object(item, &path, ENDPOINT_KEYS) else {
            continue;
        };
        let ip_text = e.string(r, "ip", default_ip);
        if e.get("port").is_none() {
            r.problem(
                ProblemKind::Semantic,
                &e.path_of("port"),
                "missing (each extra endpoint needs its port)",
            );
            continue;
        }
        let port = read_port(r, &e);
        let tls = e.bool(r, "tls", false);
        match ip_text.parse::<IpAddr>() {
            Ok(ip) => {
                out.push(Endpoint { ip, port, tls });
                entry_of.push(i);
            }
            Err(_) => r.problem(
                ProblemKind::Type,
                &e.path_of("ip"),
                format!("expected an IPv4 or IPv6 address, got {ip_text:?}"),
            ),
        }
    }
    (out, entry_of)
}
