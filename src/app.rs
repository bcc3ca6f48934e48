//! The composition root: turns the configuration into server options and a router, starts
//! the services and the runtime, and stops them in order.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Acl, Config};
use crate::config::{Protocol, ServiceConfig};
use crate::net::server::{Endpoint, Server, ServerOptions};
use crate::net::tls::{TlsContext, TlsFiles};
use crate::net::worker::{Router, WorkerOptions};
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
            max_request_bytes: ws.max_request_bytes,
            max_headers: ws.max_headers,
            outbound_high_water: ws.outbound_high_water,
            core: None,
            tls: None,
            tls_endpoints: Vec::new(),
        },
        tls: None,
        acl: (!acl.allows_everyone()).then(|| Arc::new(move |ip: IpAddr| acl.allows(ip)) as _),
    }
}

/// One routable service with its handshake-time checks.
struct Route {
    service: Arc<dyn Service>,
    acl: Option<Acl>,
    allowed_origins: Option<Vec<String>>,
}

/// Routes by exact request-target path (the query string is ignored), then applies the
/// service's ACL and Origin list: 404 for an unknown path, 403 for a refused peer or origin.
pub struct AppRouter {
    routes: HashMap<String, Route>,
}

impl Router for AppRouter {
    fn route(&self, req: &Request, peer: IpAddr) -> Result<Arc<dyn Service>, u16> {
        let route = self.routes.get(&req.path).ok_or(404u16)?;
        if let Some(acl) = &route.acl {
            if !acl.allows(peer) {
                return Err(403);
            }
        }
        if let Some(origins) = &route.allowed_origins {
            match &req.origin {
                Some(o) if origins.iter().any(|a| a == o) => {}
                _ => return Err(403),
            }
        }
        Ok(route.service.clone())
    }
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
    spec.depends = sc.depends.clone();
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
    })
}

/// A running server with its services.
pub struct App {
    server: Server,
    registry: Registry,
    tls: Option<Arc<TlsContext>>,
}

impl App {
    /// Starts the services, then the network runtime.
    pub fn start(cfg: &Config) -> Result<App, String> {
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
        opts.tls = tls.clone();
        let hub =
            Server::new_hub(&opts).map_err(|e| format!("cannot create the worker hub: {e}"))?;
        let order = cfg.lapps.start_order().map_err(|e| e.to_string())?;
        let specs: Vec<ServiceSpec> = order
            .iter()
            .map(|name| &cfg.lapps.services[name])
            .filter(|sc| sc.builtin.is_none())
            .map(|sc| lua_spec(cfg, sc))
            .collect();
        let registry = Registry::start(specs, hub.clone()).map_err(|e| e.to_string())?;
        let mut routes = HashMap::new();
        for name in order {
            let sc = &cfg.lapps.services[&name];
            if !sc.is_network() || !sc.auto_start {
                continue;
            }
            let service: Arc<dyn Service> = match sc.builtin.as_deref() {
                Some(_) => Arc::new(Echo::new(name.clone(), sc.max_inbound_message_size)),
                None => match registry.route(&sc.request_target) {
                    Some(s) => s,
                    None => continue,
                },
            };
            crate::info!("service {name} at {}", sc.request_target);
            routes.insert(
                sc.request_target.clone(),
                Route {
                    service,
                    acl: sc.acl.clone(),
                    allowed_origins: sc.allowed_origins.clone(),
                },
            );
        }
        let router = Arc::new(AppRouter { routes });
        let server = match Server::start(opts, hub, router) {
            Ok(s) => s,
            Err(e) => {
                registry.shutdown();
                return Err(e.to_string());
            }
        };
        Ok(App {
            server,
            registry,
            tls,
        })
    }

    /// SIGHUP: re-reads the certificate and key for new connections (existing ones keep
    /// theirs) and logs what changed; on error the old ones stay in use.
    pub fn reload(&self) {
        let Some(tls) = &self.tls else {
            crate::info!("reload: no TLS endpoint, nothing to reload");
            return;
        };
        match tls.reload() {
            Ok(change) => crate::info!("reload: {change}"),
            Err(e) => crate::error!("reload failed, keeping the current certificate: {e}"),
        }
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.server.local_addrs()
    }

    /// Graceful stop: no new connections, close 1001 to every connection, services last.
    pub fn shutdown(self) {
        self.server.shutdown();
        self.registry.shutdown();
    }
}
