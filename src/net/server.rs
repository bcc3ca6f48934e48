//! Assembles the runtime: binds the endpoints, starts the pinned IOWorkers and the listener
//! threads, and stops them in order.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::balancer::Balancer;
use super::hub::Hub;
use super::listener::{self, AclFn};
use super::per_address::PerAddress;
use super::tls::TlsContext;
use super::worker::{Router, Worker, WorkerOptions};
use crate::{info, syscall, warn};

/// One listening address.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls: bool,
}

#[derive(Clone)]
pub struct ServerOptions {
    pub endpoints: Vec<Endpoint>,
    /// Accepting threads per endpoint.
    pub listeners: usize,
    pub workers: usize,
    /// Connections per worker.
    pub max_connections: usize,
    pub backlog: i32,
    pub connection_weight: f64,
    /// Pin worker i to core i (modulo the cores available).
    pub pin_workers: bool,
    pub worker: WorkerOptions,
    pub acl: Option<AclFn>,
    /// `max_connections_per_address` (None: no limit), shared by every listener.
    pub per_address: Option<Arc<PerAddress>>,
    /// Required when an endpoint has `tls`; shared with the workers (and reloadable).
    pub tls: Option<Arc<TlsContext>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            endpoints: vec![Endpoint {
                addr: "127.0.0.1:0".parse().expect("literal"),
                tls: false,
            }],
            listeners: 1,
            workers: 1,
            max_connections: 100_000,
            backlog: 1024,
            connection_weight: 1.0,
            pin_workers: false,
            worker: WorkerOptions::default(),
            acl: None,
            per_address: None,
            tls: None,
        }
    }
}

pub struct Server {
    hub: Arc<Hub>,
    local_addrs: Vec<SocketAddr>,
    workers: Vec<JoinHandle<()>>,
    listeners: Vec<JoinHandle<()>>,
    stop_listeners: OwnedFd,
}

impl Server {
    /// The hub the server's workers will use: create it first when services need it before
    /// the server starts (they post their replies through it).
    pub fn new_hub(opts: &ServerOptions) -> io::Result<Arc<Hub>> {
        let workers = opts.workers.clamp(1, super::handle::ConnId::MAX_WORKERS);
        Ok(Arc::new(Hub::new(workers, opts.max_connections)?))
    }

    /// Binds every endpoint and starts the workers and listeners. `hub` comes from `new_hub`
    /// with the same options.
    pub fn start(
        opts: ServerOptions,
        hub: Arc<Hub>,
        router: Arc<dyn Router>,
    ) -> io::Result<Server> {
        let bound = Server::bind(&opts)?;
        Server::start_bound(opts, hub, router, bound)
    }

    /// Binds every endpoint (listening: the kernel queues connections until the listeners
    /// start accepting). Separate from the start so that the application binds before its
    /// services start: a port another process holds fails the start before any service ran.
    pub fn bind(opts: &ServerOptions) -> io::Result<Vec<TcpListener>> {
        opts.endpoints
            .iter()
            .map(|e| {
                listener::bind(e.addr, opts.backlog).map_err(|err| {
                    io::Error::new(err.kind(), format!("cannot listen on {}: {err}", e.addr))
                })
            })
            .collect()
    }

    /// [`Server::start`] on endpoints [`Server::bind`] bound, in `opts.endpoints`' order.
    pub fn start_bound(
        opts: ServerOptions,
        hub: Arc<Hub>,
        router: Arc<dyn Router>,
        bound: Vec<TcpListener>,
    ) -> io::Result<Server> {
        let workers = hub.workers();
        if opts.tls.is_none() {
            if let Some(e) = opts.endpoints.iter().find(|e| e.tls) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} serves wss:// but no TLS configuration was given",
                        e.addr
                    ),
                ));
            }
        }
        let bound: Vec<Arc<TcpListener>> = bound.into_iter().map(Arc::new).collect();
        let local_addrs = bound
            .iter()
            .map(|l| l.local_addr())
            .collect::<io::Result<Vec<_>>>()?;

        // SAFETY: plain integer arguments; no memory is passed.
        let stop = syscall!(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: a fresh eventfd nothing else owns.
        let stop_listeners = unsafe { OwnedFd::from_raw_fd(stop) };
        // From here on a failure (a thread that cannot be spawned) drops `server`, which stops
        // and joins whatever was started: nothing keeps running behind an error.
        let mut server = Server {
            hub,
            local_addrs,
            workers: Vec::new(),
            listeners: Vec::new(),
            stop_listeners,
        };

        let cores = core_affinity::get_core_ids().unwrap_or_default();
        for id in 0..workers {
            let mut wopts = opts.worker.clone();
            wopts.tls = opts.tls.clone();
            wopts.tls_endpoints = opts.endpoints.iter().map(|e| e.tls).collect();
            if opts.pin_workers && !cores.is_empty() {
                wopts.core = Some(cores[id % cores.len()]);
            }
            let w = Worker::new(id, server.hub.clone(), router.clone(), wopts)?;
            server.workers.push(
                std::thread::Builder::new()
                    .name(format!("lapps-io-{id}"))
                    .spawn(move || w.run())?,
            );
        }

        let balancer = Arc::new(Balancer::new(server.hub.clone(), opts.connection_weight));
        for (endpoint, l) in bound.iter().enumerate() {
            for n in 0..opts.listeners.max(1) {
                // The listener polls the raw descriptor: `server` owns it and joins the
                // listener threads before it is closed (`stop`, then the fields' drop).
                let (l, b, acl, per_address, fd) = (
                    l.clone(),
                    balancer.clone(),
                    opts.acl.clone(),
                    opts.per_address.clone(),
                    server.stop_listeners.as_raw_fd(),
                );
                server.listeners.push(
                    std::thread::Builder::new()
                        .name(format!("lapps-accept-{endpoint}.{n}"))
                        .spawn(move || listener::run(l, endpoint, b, acl, per_address, fd))?,
                );
            }
        }
        for (a, e) in server.local_addrs.iter().zip(&opts.endpoints) {
            let scheme = if e.tls { "wss" } else { "ws" };
            let plural = if workers == 1 { "" } else { "s" };
            info!("listening on {a} ({scheme}, {workers} IO worker{plural})");
        }
        Ok(server)
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Stops accepting, closes every connection with 1001 and waits for the workers (bounded).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.listeners.is_empty() && self.workers.is_empty() {
            return; // stopped already (`shutdown`, then the drop)
        }
        let started = Instant::now();
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our own eventfd.
        unsafe {
            libc::write(
                self.stop_listeners.as_raw_fd(),
                &one as *const u64 as *const _,
                8,
            )
        };
        for l in std::mem::take(&mut self.listeners) {
            let _ = l.join();
        }
        self.hub.begin_shutdown();
        for w in std::mem::take(&mut self.workers) {
            let _ = w.join();
        }
        let took = started.elapsed();
        if took > Duration::from_secs(5) {
            warn!("shutdown took {took:?}");
        }
    }
}

/// A server dropped without `shutdown` (an embedder's early return, a failed start) stops
/// the same way: no listener keeps accepting, or polls a closed descriptor, behind it.
impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
