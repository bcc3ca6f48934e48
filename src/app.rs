//! The composition root: turns the configuration into server options and a router, starts
//! the services and the runtime, and stops them in order.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use crate::config::{Acl, Config};
use crate::config::{Protocol, ServiceConfig};
use crate::net::assembly::AssemblyBudget;
use crate::net::per_address::PerAddress;
use crate::net::server::{Endpoint, Server, ServerOptions};
use crate::net::tls::{TlsContext, TlsFiles};
use crate::net::worker::{Refusal, Router, WorkerOptions};
use crate::service::echo::Echo;
use crate::service::lua::{self, ServiceSpec};
use crate::service::registry::Registry;
use crate::service::Service;
use crate::ws::handshake::Request;

/// The runtime settings that ws.json describes.
pub fn server_options(cfg: &Config) -> ServerOptions {
    let ws = &cfg.ws;
    let w = &ws.workers;
    let acl = ws.acl.clone();
    ServerOptions {
        endpoints: ws
            .listen_endpoints()
            .iter()
            .map(|e| Endpoint {
                addr: SocketAddr::new(e.ip, e.port),
                tls: e.tls,
            })
            .collect(),
        listeners: ws.listeners,
        workers: w.workers,
        max_connections: w.max_connections,
        backlog: ws.backlog.min(i32::MAX as u32) as i32,
        connection_weight: ws.connection_weight,
        pin_workers: true,
        worker: WorkerOptions {
            // input_buffer_size is the smallest read; the shared per-worker read buffer is
            // larger so that big messages need few syscalls (idle connections do not pay).
            read_buffer: w.input_buffer_size.max(64 * 1024),
            auto_fragment: w.auto_fragment,
            max_poll_events: w.max_poll_events,
            max_poll_wait: Duration::from_millis(w.max_poll_wait_ms),
            max_inbounds_skip: w.max_inbounds_skip,
            handshake_timeout: Duration::from_millis(ws.handshake_timeout_ms),
            close_timeout: Duration::from_millis(ws.close_timeout_ms),
            idle_timeout: (ws.idle_timeout_ms > 0)
                .then(|| Duration::from_millis(ws.idle_timeout_ms)),
            message_timeout: (ws.message_timeout_ms > 0)
                .then(|| Duration::from_millis(ws.message_timeout_ms)),
            max_request_bytes: ws.max_request_bytes,
            max_headers: ws.max_headers,
            outbound_high_water: ws.outbound_high_water,
            core: None,
            tls: None,
            tls_endpoints: Vec::new(),
            assembly: Arc::new(AssemblyBudget::new(
                usize::try_from(ws.max_inbound_assembly_bytes).unwrap_or(usize::MAX),
            )),
        },
        tls: None,
        acl: (!acl.allows_everyone()).then(|| Arc::new(move |ip: IpAddr| acl.allows(ip)) as _),
        per_address: PerAddress::new(ws.max_connections_per_address, ws.per_address_ipv6_prefix),
    }
}

/// One routable service with its handshake-time checks.
struct Route {
    target: Target,
    acl: Option<Acl>,
    allowed_origins: Option<Vec<String>>,
}

enum Target {
    /// A Rust service (`"builtin"`).
    Builtin(Arc<dyn Service>),
    /// A Lua service, looked up in the registry at each handshake (a redeploy swaps it).
    Lua,
}

/// What a redeploy did to the Lua services, for the line that ends a reload.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Redeployed {
    pub started: usize,
    pub replaced: usize,
    pub stopped: usize,
    pub unchanged: usize,
    /// Services whose new version did not load (each reported above), or 1 for a
    /// configuration whose start order cannot be made.
    pub failed: usize,
    /// Services whose change waits for the restart: their path is one a builtin service (or
    /// a service that itself waits) serves until then (each reported above, a warning).
    pub waiting: usize,
}

impl std::fmt::Display for Redeployed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Lua services: {} started, {} replaced, {} stopped, {} unchanged, {} failed",
            self.started, self.replaced, self.stopped, self.unchanged, self.failed
        )?;
        if self.waiting > 0 {
            write!(f, ", {} waiting for the restart", self.waiting)?;
        }
        if self.failed > 0 {
            write!(f, " (see the errors above)")?;
        }
        Ok(())
    }
}

/// Routes by exact request-target path (the query string is ignored), then applies the
/// service's ACL and Origin list: 404 for an unknown path, 403 for a refused peer or origin.
/// The table changes when services are deployed, replaced or removed (SIGHUP).
pub struct AppRouter {
    routes: RwLock<HashMap<String, Route>>,
    registry: Arc<Registry>,
}

impl AppRouter {
    fn set(&self, path: String, route: Route) {
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path, route);
    }

    fn unset(&self, path: &str) {
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path);
    }
}

impl Router for AppRouter {
    fn route(&self, req: &Request, peer: IpAddr) -> Result<Arc<dyn Service>, Refusal> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let route = routes.get(&req.path).ok_or(Refusal::from(404))?;
        // The worker logs the refusal with the peer, the path and the rule given here.
        let forbidden = |why: String| Refusal { status: 403, why };
        if let Some(acl) = &route.acl {
            if !acl.allows(peer) {
                return Err(forbidden("not allowed by the service's acl".into()));
            }
        }
        if let Some(origins) = &route.allowed_origins {
            match &req.origin {
                // An origin's scheme and host are case-insensitive (RFC 6454 4).
                Some(o) if origins.iter().any(|a| a.eq_ignore_ascii_case(o)) => {}
                Some(o) => {
                    let o = crate::log::shown(o);
                    return Err(forbidden(format!("Origin {o} not in allowed_origins")));
                }
                None => {
                    return Err(forbidden("no Origin, allowed_origins requires one".into()));
                }
            }
        }
        match &route.target {
            Target::Builtin(s) => Ok(s.clone()),
            Target::Lua => self.registry.route(&req.path).ok_or(Refusal::from(404)),
        }
    }
}

fn route_of(sc: &ServiceConfig) -> Route {
    let target = match sc.builtin.as_deref() {
        Some(_) => Target::Builtin(Arc::new(
            Echo::new(sc.name.clone(), sc.max_inbound_message_size)
                .with_handshake(sc.proto_alias.clone(), sc.extra_headers.clone()),
        )),
        None => Target::Lua,
    };
    Route {
        target,
        acl: sc.acl.clone(),
        allowed_origins: sc.allowed_origins.clone(),
    }
}

/// What a deploy compares: the service's configuration, the content of its app directory,
/// and the shared lib directory (its path and content: every Lua service may `require` from
/// it, so a change there is a new version of each).
#[derive(PartialEq)]
struct Deployed {
    config: ServiceConfig,
    app_hash: u64,
    lib: std::path::PathBuf,
    lib_hash: u64,
}

fn deployed(cfg: &Config, sc: &ServiceConfig, lib_hash: u64) -> Deployed {
    let file = sc.app_file(&cfg.lapps.directories);
    Deployed {
        config: sc.clone(),
        app_hash: file.parent().map_or(0, app_dir_hash),
        lib: cfg.lapps.directories.lib.clone(),
        lib_hash,
    }
}

/// What makes `now` a new version of `before`, for the deploy's log line.
fn what_changed(before: &Deployed, now: &Deployed) -> String {
    let mut what = Vec::new();
    if before.config != now.config {
        what.push("its lapps.json entry changed");
    }
    if before.app_hash != now.app_hash {
        what.push("its app directory changed");
    }
    if before.lib != now.lib || before.lib_hash != now.lib_hash {
        what.push("the shared lib directory changed");
    }
    what.join(", ")
}

/// Files of an app directory that a deploy looks at, at most; beyond, the rest is not seen.
const APP_DIR_MAX_FILES: usize = 4096;
/// Files up to this size are compared by content, larger ones by size and modification time.
const APP_FILE_MAX_READ: u64 = 16 << 20;

/// A hash of every file under `dir` (names and contents, in name order, subdirectories
/// included), so that a change to any module an app `require`s from its own directory is a
/// new version, not only a change to `NAME.lua`.
fn app_dir_hash(dir: &std::path::Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut pending = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            // Directory symlinks are not followed, so that a loop cannot keep the walk going.
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                pending.push(path);
                continue;
            }
            // File symlinks are (an app may link a shared module); only regular files are
            // read, so a FIFO or a device cannot block or flood the walk.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() || files == APP_DIR_MAX_FILES {
                continue;
            }
            files += 1;
            path.hash(&mut h);
            if meta.len() <= APP_FILE_MAX_READ {
                std::fs::read(&path).ok().hash(&mut h);
            } else {
                // A large data file: its size and modification time stand for its content.
                (meta.len(), meta.modified().ok()).hash(&mut h);
            }
        }
    }
    h.finish()
}

/// `--check-config`'s look at a Lua service's `preload` names
/// ([`lua::preload_check`]), resolved against its directories as its instances will.
pub fn preload_check(cfg: &Config, sc: &ServiceConfig) -> Result<(), String> {
    lua::preload_check(&lua_spec(cfg, sc))
}

/// The Lua host's view of one configured service.
fn lua_spec(cfg: &Config, sc: &ServiceConfig) -> ServiceSpec {
    let dirs = &cfg.lapps.directories;
    let app_file = sc.app_file(dirs);
    let mut spec = ServiceSpec::new(sc.name.clone(), app_file.clone());
    spec.package_paths = app_file
        .parent()
        .map(|d| d.to_path_buf())
        .into_iter()
        .chain([dirs.lib.clone()])
        .collect();
    spec.instances = sc.instances;
    spec.standalone = sc.standalone;
    spec.auto_start = sc.auto_start;
    spec.protocol = match sc.protocol {
        Protocol::Raw => lua::Protocol::Raw,
        Protocol::LAppS => lua::Protocol::LAppS,
    };
    spec.request_target = sc.request_target.clone();
    spec.max_inbound_message_size = sc.max_inbound_message_size;
    spec.preload = sc.preload.clone();
    // Built-in services run in the workers and are there from the start: the registry, which
    // orders the Lua services, must not wait for them.
    spec.depends = sc
        .depends
        .iter()
        .filter(|d| {
            cfg.lapps
                .services
                .get(*d)
                .is_some_and(|s| s.builtin.is_none())
        })
        .cloned()
        .collect();
    spec.memory_limit = sc.memory_limit;
    spec.instruction_budget = (sc.instruction_budget > 0).then_some(sc.instruction_budget);
    spec.allow_ffi = sc.allow_ffi;
    spec.allow_debug = sc.allow_debug;
    spec.allow_os_execute = sc.allow_os_execute;
    spec.queue_capacity = sc.queue_capacity;
    spec.mqr_capacity = sc.mqr_capacity;
    spec.auto_fragment = cfg.ws.workers.auto_fragment;
    spec.extra_headers = sc.extra_headers.clone();
    spec.proto_alias = sc.proto_alias.clone();
    spec.max_protocol_errors = sc.max_protocol_errors;
    spec
}

/// What an operator should hear about the configuration that is not an error (at start-up and
/// from `--check-config`): certificates given while no endpoint serves wss:// (a forgotten
/// `"tls": true` serves plain ws://); a standalone service given settings only services
/// clients connect to use; `"::"` without `"0.0.0.0"` on the same port, which IPv4 clients
/// cannot reach (our IPv6 sockets are IPV6_V6ONLY, unlike the original's and 0.1.0's).
pub fn warnings(cfg: &Config) -> Vec<String> {
    let endpoints = cfg.ws.listen_endpoints();
    let any_tls = endpoints.iter().any(|e| e.tls);
    let mut out = Vec::new();
    if cfg.ws.tls_certificates.is_some() && !any_tls {
        out.push(
            "ws.json: tls_certificates is set but no endpoint has \"tls\": true, so every \
             endpoint serves plain ws://"
                .to_string(),
        );
    }
    // An ACL that excludes no one from a deny policy refuses everybody: legal (a way to
    // close a service for a while), but rarely meant.
    let shuts_out = |acl: &crate::config::Acl| {
        acl.policy == crate::config::Policy::Deny && acl.exclude.is_empty()
    };
    if shuts_out(&cfg.ws.acl) {
        out.push(
            "ws.json: acl denies every client (policy \"deny\" with nothing in \"exclude\"): \
             every connection is closed as it is accepted"
                .to_string(),
        );
    }
    for s in cfg.lapps.services.values().filter(|s| !s.standalone) {
        if s.acl.as_ref().is_some_and(shuts_out) {
            out.push(format!(
                "lapps.json: services.{}.acl denies every client (policy \"deny\" with nothing \
                 in \"exclude\"): every request for {} is answered 403",
                s.name,
                crate::log::shown(&s.request_target)
            ));
        }
    }
    let any_v4 = |port: u16| {
        endpoints
            .iter()
            .any(|e| e.port == port && e.ip == std::net::IpAddr::from([0, 0, 0, 0]))
    };
    for s in cfg.lapps.services.values().filter(|s| s.standalone) {
        let unused: Vec<&str> = [
            ("request_target", s.request_target != format!("/{}", s.name)),
            ("protocol", s.protocol == Protocol::LAppS),
            ("acl", s.acl.is_some()),
            ("allowed_origins", s.allowed_origins.is_some()),
            ("proto_alias", s.proto_alias.is_some()),
            ("extra_headers", !s.extra_headers.is_empty()),
            (
                "max_inbound_message_size",
                s.max_inbound_message_size != ServiceConfig::DEFAULT_MAX_INBOUND_MESSAGE_SIZE,
            ),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        if !unused.is_empty() {
            let (verb, they) = if unused.len() == 1 {
                ("applies", "it does")
            } else {
                ("apply", "they do")
            };
            out.push(format!(
                "lapps.json: services.{}: {} {verb} only to services clients connect to; \
                 this one is standalone, so {they} nothing",
                s.name,
                unused.join(", ")
            ));
        }
    }
    // listen(2) takes any backlog and silently uses at most this host's somaxconn.
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(max) = somaxconn.filter(|&max| cfg.ws.backlog > max) {
        out.push(format!(
            "ws.json: backlog {} is above this host's net.core.somaxconn ({max}): the kernel \
             queues at most {max} connections per listener; raise the sysctl to use more",
            cfg.ws.backlog
        ));
    }
    for e in &endpoints {
        if e.ip == std::net::IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED) && !any_v4(e.port) {
            out.push(format!(
                "ws.json: \"::\" listens on IPv6 only (port {}): IPv4 clients cannot connect; \
                 add an endpoint on \"0.0.0.0\" with the same port for them",
                e.port
            ));
        }
    }
    out
}

/// The PEM files of ws.json, when some endpoint serves wss://.
pub fn tls_files(cfg: &Config) -> Option<TlsFiles> {
    let any_tls = cfg.ws.listen_endpoints().iter().any(|e| e.tls);
    let t = cfg.ws.tls_certificates.as_ref().filter(|_| any_tls)?;
    Some(TlsFiles {
        cert: t.cert.clone(),
        key: t.key.clone(),
        ca: t.ca.clone(),
        tls13_only: cfg.ws.tls_server_version == 13,
        tls12_record_budget: cfg.ws.tls12_record_budget,
    })
}

/// A running server with its services.
pub struct App {
    /// Taken by `shutdown`, which may run while a reload is still busy on another thread.
    server: Mutex<Option<Server>>,
    addrs: Vec<SocketAddr>,
    registry: Arc<Registry>,
    router: Arc<AppRouter>,
    tls: Option<Arc<TlsContext>>,
    /// Where the configuration was read from: a reload reads the same files.
    location: crate::config::Location,
    /// The Lua services as last deployed (for SIGHUP redeploys).
    deployed: Mutex<HashMap<String, Deployed>>,
    /// What the process started with and only a restart changes: ws.json and the builtin
    /// services (a reload that finds them changed says so).
    restart_only: RestartOnly,
    /// When the server started serving (the status report's uptime).
    started: std::time::Instant,
    /// Configured Lua services that may not run, and why (the status report names those that
    /// do not): `auto_start` false, a start a reload could not make, a change that waits for
    /// the restart. Kept by `redeploy` as it learns each service's outcome.
    down: Mutex<BTreeMap<String, String>>,
    /// The workers' count of bytes held by messages being received.
    assembly: Arc<AssemblyBudget>,
}

/// Why a service with `auto_start` false does not run.
const NOT_AUTO_STARTED: &str = "auto_start is false";

/// The Lua services of `cfg` with `auto_start` false, as `App::down` lists them.
fn not_auto_started(cfg: &Config) -> BTreeMap<String, String> {
    cfg.lapps
        .services
        .values()
        .filter(|sc| sc.builtin.is_none() && !sc.auto_start)
        .map(|sc| (sc.name.clone(), NOT_AUTO_STARTED.to_string()))
        .collect()
}

/// The names of the builtin services added, removed or edited from `before` to `now`.
fn changed_builtins<'a>(before: &'a [ServiceConfig], now: &'a [ServiceConfig]) -> Vec<&'a str> {
    let mut names: Vec<&str> = before
        .iter()
        .filter(|b| !now.contains(b))
        .chain(now.iter().filter(|n| !before.contains(n)))
        .map(|s| s.name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The ws.json keys whose values differ between `a` and `b`, for the reload's warning. The
/// destructuring names every field, so that a new one does not build until it is listed.
fn changed_ws_keys(a: &crate::config::WsConfig, b: &crate::config::WsConfig) -> Vec<&'static str> {
    macro_rules! changed {
        ($($key:ident),* ; not compared: $($other:ident),*) => {{
            let crate::config::WsConfig { $($key,)* $($other: _,)* } = a;
            let mut keys = Vec::new();
            $(if *$key != b.$key { keys.push(stringify!($key)); })*
            keys
        }};
    }
    let mut keys = changed!(
        ip, port, listeners, connection_weight, acl, tls, tls_certificates, tls_server_version,
        workers, handshake_timeout_ms, close_timeout_ms, idle_timeout_ms, message_timeout_ms,
        backlog, max_request_bytes, max_headers, outbound_high_water, max_inbound_assembly_bytes,
        max_connections_per_address, per_address_ipv6_prefix, endpoints;
        // Not ws.json keys: whether the key was left out (below), and a test setting.
        not compared: max_inbound_assembly_bytes_by_default, tls12_record_budget
    );
    // Left out of the file or set in it: the same key.
    if a.max_inbound_assembly_bytes_by_default != b.max_inbound_assembly_bytes_by_default
        && !keys.contains(&"max_inbound_assembly_bytes")
    {
        keys.push("max_inbound_assembly_bytes");
    }
    if keys.is_empty() {
        keys.push("settings");
    }
    keys
}

#[derive(PartialEq)]
struct RestartOnly {
    ws: crate::config::WsConfig,
    builtins: Vec<ServiceConfig>,
}

impl RestartOnly {
    fn of(cfg: &Config) -> RestartOnly {
        let mut ws = cfg.ws.clone();
        if ws.workers.workers_by_default {
            // One per core: the host's count may change (affinity, a CPU quota), the file not.
            ws.workers.workers = 0;
        }
        if ws.workers.max_connections_by_default {
            // Lowered at start-up to what the descriptor limit covers (src/main.rs).
            ws.workers.max_connections = 0;
        }
        if ws.max_inbound_assembly_bytes_by_default {
            // A quarter of the memory, which may change (systemctl set-property MemoryMax=).
            ws.max_inbound_assembly_bytes = 0;
        }
        RestartOnly {
            ws,
            builtins: cfg
                .lapps
                .services
                .values()
                .filter(|s| s.builtin.is_some())
                .cloned()
                .collect(),
        }
    }
}

impl App {
    /// Starts the services, then the network runtime.
    pub fn start(cfg: &Config) -> Result<App, String> {
        App::start_then(cfg, || {})
    }

    /// [`App::start`], calling `services_up` once the services run, before the listeners
    /// open (what `main` ends its stop-during-start watch with: from then on a stop is a
    /// graceful one, which closes the connections the listeners take).
    pub fn start_then(cfg: &Config, services_up: impl FnOnce()) -> Result<App, String> {
        let mut opts = server_options(cfg);
        // Certificates first: a bad file stops the start before any service runs.
        let tls = match tls_files(cfg) {
            Some(files) => Some(Arc::new(
                TlsContext::load(files).map_err(|e| format!("TLS: {e}"))?,
            )),
            None => None,
        };
        if let Some(t) = &tls {
            crate::info!("tls: serving {}", t.info());
        }
        for w in warnings(cfg) {
            crate::warn!("{w}");
        }
        opts.tls = tls.clone();
        let order = cfg.lapps.start_order().map_err(|e| e.to_string())?;
        // Bound before any service starts: a port another process holds fails the start
        // before an onStart or init() ran (connections made meanwhile wait in the backlog).
        let bound = Server::bind(&opts).map_err(|e| e.to_string())?;
        let hub =
            Server::new_hub(&opts).map_err(|e| format!("cannot create the worker hub: {e}"))?;
        let specs: Vec<ServiceSpec> = order
            .iter()
            .map(|name| &cfg.lapps.services[name])
            .filter(|sc| sc.builtin.is_none())
            .map(|sc| lua_spec(cfg, sc))
            .collect();
        // What is deployed is what was read before it loaded (as `redeploy` does): an edit
        // made while the services start is a new version for the next SIGHUP.
        let lib_hash = app_dir_hash(&cfg.lapps.directories.lib);
        let mut deployed_now: HashMap<String, Deployed> = order
            .iter()
            .map(|name| &cfg.lapps.services[name])
            .filter(|sc| sc.builtin.is_none())
            .map(|sc| (sc.name.clone(), deployed(cfg, sc, lib_hash)))
            .collect();
        let registry = Arc::new(Registry::start(specs, hub.clone()).map_err(|e| e.to_string())?);
        services_up();
        // A replaced version waits for its clients' close handshakes, which the workers end
        // after one close_timeout for the replies they are owed (Phase::Answering), then
        // close_timeout, extended while the peer still reads what it is owed, at the latest
        // (Conn::MAX_CLOSE_EXTENSIONS): only then has every one had its onDisconnect.
        // It stops as soon as they are gone, which is almost always far sooner.
        let close = Duration::from_millis(cfg.ws.close_timeout_ms).max(Duration::from_secs(4));
        registry.set_retire_grace(
            close * (crate::net::conn::Conn::MAX_CLOSE_EXTENSIONS + 2) + Duration::from_secs(1),
        );
        let router = Arc::new(AppRouter {
            routes: RwLock::new(HashMap::new()),
            registry: Arc::clone(&registry),
        });
        let down = Mutex::new(not_auto_started(cfg));
        let running = registry.running();
        deployed_now.retain(|name, _| running.contains(name));
        for name in order {
            let sc = &cfg.lapps.services[&name];
            if !sc.is_network() || !sc.auto_start {
                continue;
            }
            // A Lua service said where it serves as it started; a builtin has no start.
            if sc.builtin.is_some() {
                crate::info!("service {name} (builtin echo) at {}", sc.request_target);
            }
            router.set(sc.request_target.clone(), route_of(sc));
        }
        let assembly = Arc::clone(&opts.worker.assembly);
        let server = match Server::start_bound(opts, hub, router.clone(), bound) {
            Ok(s) => s,
            Err(e) => {
                registry.shutdown();
                return Err(e.to_string());
            }
        };
        Ok(App {
            addrs: server.local_addrs().to_vec(),
            server: Mutex::new(Some(server)),
            registry,
            router,
            tls,
            location: crate::config::Location {
                dir: cfg.dir.clone(),
                ws_file: Some(cfg.ws_file.clone().into()),
                lapps_file: Some(cfg.lapps_file.clone().into()),
            },
            deployed: Mutex::new(deployed_now),
            restart_only: RestartOnly::of(cfg),
            started: std::time::Instant::now(),
            down,
            assembly,
        })
    }

    /// The hourly look at the served certificate: a warning to log when its end is near or
    /// passed (see `crate::cert_expiry`).
    pub fn certificate_reminder(&self) -> Option<String> {
        self.tls.as_ref()?.expiry_reminder()
    }

    /// Bytes the server's buffers hold now: messages being received and bytes queued to send
    /// (as each IO worker last published them). What resident memory they explain.
    pub fn buffered_bytes(&self) -> usize {
        self.assembly.held() + self.registry.queued_bytes()
    }

    /// SIGHUP: reloads the TLS certificate (see `reload_tls`) and redeploys the Lua services
    /// of lapps.json that changed (see `redeploy`). False when a part failed (said in the log).
    pub fn reload(&self) -> bool {
        let tls_ok = self.reload_tls();
        let certificate = match (&self.tls, tls_ok) {
            (None, _) => "",
            (Some(_), true) => "certificate read again; ",
            (Some(_), false) => "certificate NOT reloaded (see above); ",
        };
        match Config::load(&self.location) {
            Ok(mut cfg) => {
                let now = RestartOnly::of(&cfg);
                if now.ws != self.restart_only.ws {
                    crate::warn!(
                        "reload: ws.json changed ({}); its changes take effect at the next \
                         restart (systemctl restart lapps)",
                        changed_ws_keys(&self.restart_only.ws, &now.ws).join(", ")
                    );
                    let old = &self.restart_only.ws.tls_certificates;
                    if let (Some(old), true, true) = (
                        old.as_ref().filter(|_| self.tls.is_some()),
                        now.ws.tls_certificates != self.restart_only.ws.tls_certificates,
                        tls_ok,
                    ) {
                        let ca = old
                            .ca
                            .as_ref()
                            .map(|ca| format!(", {}", ca.display()))
                            .unwrap_or_default();
                        crate::warn!(
                            "reload: the certificate was read again from the files the server \
                             started with ({}, {}{ca}), not from the new tls_certificates",
                            old.cert.display(),
                            old.key.display()
                        );
                    }
                }
                let changed = changed_builtins(&self.restart_only.builtins, &now.builtins);
                if !changed.is_empty() {
                    crate::warn!(
                        "reload: builtin service(s) {} changed in lapps.json; they change at \
                         the next restart (systemctl restart lapps)",
                        changed.join(", ")
                    );
                }
                // Until then the services a reload starts frame their sends as the running
                // workers do (auto_fragment is the one ws.json setting a service takes).
                cfg.ws.workers.auto_fragment = self.restart_only.ws.workers.auto_fragment;
                let done = self.redeploy(&cfg);
                if done.failed > 0 || !tls_ok {
                    crate::error!("reload done: {certificate}{done}");
                    false
                } else {
                    crate::info!("reload done: {certificate}{done}");
                    true
                }
            }
            Err(e) => {
                crate::error!("deploy: configuration invalid, nothing changed:\n{e}");
                crate::error!(
                    "reload done: {certificate}configuration invalid, services unchanged"
                );
                false
            }
        }
    }

    /// Brings the running Lua services in line with `cfg`, one service at a time, while the
    /// others keep serving: a new service is started, a service whose configuration or app
    /// file changed is replaced (its clients are closed with 1001 and reconnect to the new
    /// version), a service no longer configured is stopped (once the service that takes over
    /// its path runs, when one does). A version that fails to load is reported and the running
    /// one stays (a standalone one was stopped first: it stays stopped, and the next SIGHUP
    /// tries again). ws.json and builtin services need a restart.
    pub fn redeploy(&self, cfg: &Config) -> Redeployed {
        let mut done = Redeployed::default();
        let order = match cfg.lapps.start_order() {
            Ok(o) => o,
            Err(e) => {
                crate::error!("deploy: {e}");
                done.failed += 1;
                return done;
            }
        };
        {
            // Services no longer configured go; each other one's outcome is set below.
            let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
            down.retain(|name, why| {
                cfg.lapps
                    .services
                    .get(name)
                    .is_some_and(|sc| sc.builtin.is_none())
                    && why != NOT_AUTO_STARTED
            });
            down.extend(not_auto_started(cfg));
        }
        let set_down = |name: &str, why: Option<String>| {
            let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
            match why {
                Some(why) => down.insert(name.to_string(), why),
                None => down.remove(name),
            };
        };
        let mut deployed_map = self.deployed.lock().unwrap_or_else(|e| e.into_inner());
        let wanted: Vec<&ServiceConfig> = order
            .iter()
            .map(|n| &cfg.lapps.services[n])
            .filter(|sc| sc.builtin.is_none())
            .collect();
        // A path the new configuration gives to some service that runs (maybe another one: a
        // rename, a swap) keeps its route; only paths nobody claims any more are unrouted. A
        // service with auto_start false (builtin or Lua) never starts: it claims nothing.
        let claimed = |path: &str| {
            cfg.lapps
                .services
                .values()
                .any(|s| s.is_network() && s.request_target == path && s.auto_start)
        };
        // Removals first, so that a path a removed service leaves is free for its successor.
        // A network service whose path another service takes over (a rename) stays until
        // that one runs: if it fails to load, the path keeps being served.
        let mut left: Vec<String> = deployed_map
            .keys()
            .filter(|n| !wanted.iter().any(|sc| &sc.name == *n))
            .cloned()
            .collect();
        // Dependents first: a receiver removed with its senders waits for them to stop (see
        // Registry::retire), which it knows of only once they retire.
        let depends_on = |m: &String, n: &String| {
            deployed_map
                .get(m)
                .is_some_and(|d| d.config.depends.contains(n))
        };
        let mut gone = Vec::with_capacity(left.len());
        while !left.is_empty() {
            let next = left
                .iter()
                .position(|n| !left.iter().any(|m| depends_on(m, n)))
                .unwrap_or(0);
            gone.push(left.remove(next));
        }
        let mut handed_on = Vec::new();
        for name in gone {
            let Some((network, path)) = deployed_map
                .get(&name)
                .map(|b| (b.config.is_network(), b.config.request_target.clone()))
            else {
                continue;
            };
            if network && claimed(&path) {
                handed_on.push((name, path));
                continue;
            }
            deployed_map.remove(&name);
            if network {
                self.router.unset(&path);
            }
            let n = self.registry.remove(&name);
            crate::info!("deploy: stopped service {name} ({n} connection(s) closed)");
            done.stopped += 1;
        }
        let lib_hash = app_dir_hash(&cfg.lapps.directories.lib);
        let mut nows: HashMap<String, Deployed> = wanted
            .iter()
            .map(|sc| (sc.name.clone(), deployed(cfg, sc, lib_hash)))
            .collect();
        let waiting = self.waiting_for_restart(&wanted, &deployed_map, &nows);
        for sc in &wanted {
            let Some(now) = nows.remove(&sc.name) else {
                continue;
            };
            let was_running = deployed_map.contains_key(&sc.name);
            if let Some(holder) = waiting.get(&sc.name) {
                // Not a failure: the builtin's change is one that waits for the restart.
                done.waiting += 1;
                crate::warn!(
                    "deploy: service {} waits for the restart: {holder} serves {} until then{}",
                    sc.name,
                    crate::log::shown(&sc.request_target),
                    if was_running {
                        "; its running version keeps serving"
                    } else {
                        ""
                    }
                );
                set_down(
                    &sc.name,
                    (!was_running).then(|| {
                        format!(
                            "it waits for the restart ({holder} serves {} until then)",
                            crate::log::shown(&sc.request_target)
                        )
                    }),
                );
                continue;
            }
            let result = match deployed_map.get(&sc.name) {
                Some(before) if *before == now => {
                    done.unchanged += 1;
                    set_down(&sc.name, None);
                    continue;
                }
                Some(before) => {
                    let left = before.config.request_target.clone();
                    let moved = before.config.is_network() && left != sc.request_target;
                    let why = what_changed(before, &now);
                    let was_network = before.config.is_network();
                    self.registry.replace(lua_spec(cfg, sc)).map(|n| {
                        // Only once the new version runs: a failed replace keeps the old path.
                        if moved && !claimed(&left) {
                            self.router.unset(&left);
                        }
                        done.replaced += 1;
                        if was_network {
                            format!(
                                "replaced service {} ({why}; {n} connection(s) asked to \
                                 reconnect)",
                                sc.name
                            )
                        } else {
                            format!("replaced service {} ({why})", sc.name)
                        }
                    })
                }
                None => self.registry.add(lua_spec(cfg, sc)).map(|()| {
                    done.started += 1;
                    format!("started service {}", sc.name)
                }),
            };
            match result {
                Ok(what) => {
                    set_down(&sc.name, None);
                    crate::info!("deploy: {what}");
                    if sc.is_network() {
                        self.router.set(sc.request_target.clone(), route_of(sc));
                    }
                    deployed_map.insert(sc.name.clone(), now);
                }
                Err(e) if self.registry.running().contains(&sc.name) => {
                    set_down(&sc.name, None);
                    done.failed += 1;
                    crate::error!("deploy: {e}; the running version keeps serving")
                }
                Err(e) => {
                    // Nothing of it runs (a standalone service is stopped before its new
                    // version starts): forget it, so that the next SIGHUP starts it again.
                    set_down(
                        &sc.name,
                        Some(
                            "its last start failed (see the deploy: lines); the next SIGHUP \
                             tries again"
                                .to_string(),
                        ),
                    );
                    done.failed += 1;
                    if was_running {
                        done.stopped += 1; // the old version was taken down first
                    }
                    deployed_map.remove(&sc.name);
                    crate::error!("deploy: {e}; service {} is not running", sc.name)
                }
            }
        }
        for (name, path) in handed_on {
            // The route is the successor's once it runs (set above); until then it was ours.
            let successor = cfg.lapps.services.values().find(|s| {
                s.is_network() && s.request_target == path && deployed_map.contains_key(&s.name)
            });
            match successor {
                Some(s) => {
                    deployed_map.remove(&name);
                    let n = self.registry.remove(&name);
                    crate::info!(
                        "deploy: stopped service {name} ({n} connection(s) closed); {} serves {} now",
                        s.name,
                        crate::log::shown(&path)
                    );
                    done.stopped += 1;
                }
                None => match cfg.lapps.services.values().find(|s| {
                    s.is_network()
                        && s.request_target == path
                        && s.builtin.is_some()
                        && s.auto_start
                }) {
                    // Builtin services change at a restart (warned above): not a failure.
                    Some(b) => crate::warn!(
                        "deploy: service {name} keeps serving {} until the restart that starts \
                         builtin service {}",
                        crate::log::shown(&path),
                        b.name
                    ),
                    // Its failure to start was counted and logged above.
                    None => crate::error!(
                        "deploy: service {name} keeps serving {}: the service configured \
                         there did not start",
                        crate::log::shown(&path)
                    ),
                },
            }
        }
        done
    }

    /// Re-reads the certificate and key for new connections (existing ones keep theirs) and
    /// logs what changed; on error the old ones stay in use. False when that happened.
    pub fn reload_tls(&self) -> bool {
        let Some(tls) = &self.tls else {
            crate::info!("reload: no TLS endpoint, no certificate to reload");
            return true;
        };
        match tls.reload() {
            Ok(change) => {
                crate::info!("reload: {change}");
                true
            }
            Err(e) => {
                crate::error!("reload failed, keeping the current certificate: {e}");
                false
            }
        }
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The runtime's hub while it runs (None after `shutdown`): the workers' counters.
    pub fn hub(&self) -> Option<Arc<crate::net::hub::Hub>> {
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner());
        server.as_ref().map(|s| s.hub().clone())
    }

    /// The Lua services of `wanted` whose change waits for the restart, with who holds their
    /// path until then. Builtin services change only at a restart, so the paths the running
    /// ones serve stay theirs: a changed Lua service given one waits (routed there, it would
    /// hide the builtin, whose new path serves nothing yet). One that waits keeps its running
    /// version at the path it serves now, which holds that path in turn: another service
    /// given it waits too, or it would hide the running version the log says keeps serving.
    fn waiting_for_restart(
        &self,
        wanted: &[&ServiceConfig],
        deployed_map: &HashMap<String, Deployed>,
        nows: &HashMap<String, Deployed>,
    ) -> HashMap<String, String> {
        // Path -> (the service holding it, for the log).
        let mut holders: HashMap<String, (Option<String>, String)> = self
            .restart_only
            .builtins
            .iter()
            .filter(|b| b.auto_start && b.is_network())
            .map(|b| {
                (
                    b.request_target.clone(),
                    (None, format!("builtin service {}", b.name)),
                )
            })
            .collect();
        let mut waiting = HashMap::new();
        loop {
            let mut more = false;
            for sc in wanted.iter().filter(|sc| sc.is_network()) {
                let before = deployed_map.get(&sc.name);
                if waiting.contains_key(&sc.name) || before == nows.get(&sc.name) {
                    continue; // waits already, or unchanged (it keeps its path)
                }
                let Some((holder, what)) = holders.get(&sc.request_target) else {
                    continue;
                };
                if holder.as_deref() == Some(sc.name.as_str()) {
                    continue;
                }
                waiting.insert(sc.name.clone(), what.clone());
                if let Some(b) = before.filter(|b| b.config.is_network()) {
                    holders.entry(b.config.request_target.clone()).or_insert((
                        Some(sc.name.clone()),
                        format!("the running version of service {}", sc.name),
                    ));
                }
                more = true;
            }
            if !more {
                return waiting;
            }
        }
    }

    /// Logs the status report (SIGUSR1): the process (time serving, memory, threads,
    /// descriptors), the IO workers' connections, each running Lua service, the broadcast
    /// channels and the mqr queues; one `status:` line each, at info whatever `LAPPS_LOG` says
    /// (it was asked for). Reads counters and takes the services' and channels' locks one at
    /// a time, briefly: nothing waits for a worker or an instance. Listing the descriptors
    /// takes a while with many connections: `main` runs this on a thread of its own.
    pub fn log_status(&self) {
        let proc_status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |key: &str| {
            proc_status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map_or_else(|| "?".to_string(), |v| v.trim().to_string())
        };
        let fds = match std::fs::read_dir("/proc/self/fd") {
            // The directory's own descriptor is among those it lists.
            Ok(d) => d.count().saturating_sub(1).to_string(),
            // Listing them takes one: none free means all are taken.
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => "all".to_string(),
            Err(_) => "?".to_string(),
        };
        let limit = crate::net::nofile::current().map_or_else(|_| "?".into(), |l| l.to_string());
        let line = |args: std::fmt::Arguments<'_>| crate::log::write(crate::log::Level::Info, args);
        line(format_args!(
            "status: serving for {}, RSS {}, {} threads, {fds} descriptors (limit {limit})",
            crate::time_fmt::uptime(self.started.elapsed()),
            field("VmRSS:"),
            field("Threads:")
        ));
        let mut lines = self.registry.status();
        // The services not running go after those that are, before the channels' line.
        let channels = lines.pop();
        for l in lines {
            line(format_args!("status: {l}"));
        }
        let running = self.registry.running();
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (name, why) in down {
            if !running.contains(&name) {
                line(format_args!("status: service {name}: not running, {why}"));
            }
        }
        if let Some(l) = channels {
            line(format_args!("status: {l}"));
        }
    }

    /// What the Lua services still hold for connections (tests check it returns to 0).
    pub fn connection_state(&self) -> crate::service::registry::ConnectionState {
        self.registry.connection_state()
    }

    /// Graceful stop: no new connections, close 1001 to every connection, services last.
    /// Takes `&self` so that a stop never waits for a reload in progress (a new version whose
    /// `init()` blocks would otherwise hold it forever). Idempotent.
    pub fn shutdown(&self) {
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(server) = server {
            server.shutdown();
            self.registry.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ws: &str) -> Config {
        Config::from_strs(
            std::path::Path::new("/c"),
            ("ws.json", ws),
            ("lapps.json", "{}"),
            std::path::Path::new("/srv"),
        )
        .unwrap()
    }

    /// What the host decides when the file is silent (cores, memory, descriptors) is not a
    /// change of ws.json for a reload; what the file says is.
    #[test]
    fn a_reload_compares_what_ws_json_says_not_what_the_host_gave() {
        let (a, mut b) = (config("{}"), config("{}"));
        b.ws.workers.workers += 1;
        b.ws.workers.max_connections /= 2;
        b.ws.max_inbound_assembly_bytes /= 2;
        assert!(RestartOnly::of(&a) == RestartOnly::of(&b));
        let written = r#"{ "max_inbound_assembly_bytes": 1048576 }"#;
        let (a, mut b) = (config(written), config(written));
        b.ws.max_inbound_assembly_bytes /= 2;
        assert!(RestartOnly::of(&a) != RestartOnly::of(&b));
    }
}
