//! The composition root: turns the configuration into server options and a router, starts
//! the services and the runtime, and stops them in order. A reload (SIGHUP) is in `reload`,
//! the routing of upgrade requests in `router`, the configuration's warnings in `warnings`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::Config;
use crate::config::{Protocol, ServiceConfig};
use crate::net::assembly::AssemblyBudget;
use crate::net::per_address::PerAddress;
use crate::net::server::{Endpoint, Server, ServerOptions};
use crate::net::tls::{TlsContext, TlsFiles};
use crate::net::worker::WorkerOptions;
use crate::service::lua::{self, ServiceSpec};
use crate::service::registry::Registry;

mod reload;
mod router;
mod warnings;

pub use reload::Redeployed;
use reload::{app_dir_hash, deployed, Deployed, RestartOnly};
use router::route_of;
pub use router::AppRouter;
pub use warnings::warnings;

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
    /// The versions whose start a deploy gave up at its timeout, by service: the same
    /// version is not started again while that start still runs (each try would leave one
    /// more thread, and a core while it spins, and hold the reload for the whole timeout).
    stuck: Mutex<HashMap<String, Deployed>>,
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
        let router = Arc::new(AppRouter::new(Arc::clone(&registry)));
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
            stuck: Mutex::new(HashMap::new()),
            assembly,
        })
    }

    /// The hourly look at the served certificate: a warning to log when its end is near or
    /// passed (see `crate::cert_expiry`).
    pub fn certificate_reminder(&self) -> Option<String> {
        self.tls.as_ref()?.expiry_reminder()
    }

    /// Once a second: warns of a Lua instance busy with one batch of messages for a while (a
    /// callback that does not return holds the connections bound to it), and says which
    /// instance threads given up on have ended since.
    pub fn warn_of_busy_instances(&self) {
        self.registry.warn_of_busy_instances();
        // And of the instance threads given up on that have ended since.
        crate::service::lua::left_behind::sweep();
    }

    /// Bytes the server's buffers hold now: messages being received and bytes queued to send
    /// (as each IO worker last published them). What resident memory they explain.
    pub fn buffered_bytes(&self) -> usize {
        self.assembly.held() + self.registry.queued_bytes()
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
        // The thread writing this report lives for the report only (`main` starts it): left
        // out, the count is what /proc shows between reports (a soak trial saw one more).
        let threads = field("Threads:")
            .parse::<usize>()
            .map_or_else(|_| "?".to_string(), |n| n.saturating_sub(1).to_string());
        let line = |args: std::fmt::Arguments<'_>| crate::log::write(crate::log::Level::Info, args);
        line(format_args!(
            "status: serving for {}, RSS {}, {threads} threads, {fds} descriptors (limit {limit})",
            crate::time_fmt::uptime(self.started.elapsed()),
            field("VmRSS:"),
        ));
        let mut lines = self.registry.status();
        // The services not running go after those that are, before the channels' and queues'
        // lines.
        let at = lines
            .iter()
            .position(|l| l.starts_with("bcast: "))
            .unwrap_or(lines.len());
        let channels = lines.split_off(at);
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
        for l in channels {
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
