//! The service registry: which services run, in which order, and where requests go.
//!
//! Owns the start order (dependencies first; unknown or cyclic `depends` are config errors),
//! the routing table from request target to network service, and shutdown. It never parses
//! config files (it takes [`ServiceSpec`]s) and never runs Lua itself.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::lua::api::bcast::Bcast;
use super::lua::{LuaService, ServiceSpec};
use super::Service;
use crate::net::hub::{Command, Hub};

/// How long `shutdown` waits for each service's instances.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long `shutdown` waits in all (retiring versions and every service together; see
/// `set_shutdown_budget`). With the workers' 4 s for the close handshakes before it, a stop
/// stays below systemd/lapps.service's TimeoutStopSec=20, past which systemd kills the
/// process: better to leave the slowest services behind, with a warning, and exit cleanly.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(10);
/// Why a service a reload was starting is refused once the server is shutting down.
const SHUTTING_DOWN: &str = "the server is shutting down";
/// The mqr queues the status report gives a line each (the fullest ones).
const STATUS_QUEUES: usize = 16;

/// A service could not be started (or the service set is inconsistent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError {
    pub service: String,
    /// For Lua load errors: `file:line: message`.
    pub message: String,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service {}: {}", self.service, self.message)
    }
}

impl std::error::Error for StartError {}

fn err(service: &str, message: impl Into<String>) -> StartError {
    StartError {
        service: service.to_string(),
        message: message.into(),
    }
}

/// `Ok` when every service `spec` depends on is among `running` (the running services' names).
fn dependencies_run(spec: &ServiceSpec, running: &[String]) -> Result<(), StartError> {
    match spec.depends.iter().find(|d| !running.contains(d)) {
        Some(d) => Err(err(
            &spec.name,
            format!("depends on {d}, which is not running"),
        )),
        None => Ok(()),
    }
}

/// A replaced or removed version stopping in the background (see `Registry::retire`).
struct Retiring {
    name: String,
    /// The version itself, for the status report and the watch of busy instances.
    service: Arc<LuaService>,
    /// What the version depended on: those retiring with it wait for it to stop.
    depends: Vec<String>,
    thread: JoinHandle<()>,
    /// Ready (or disconnected) once the thread is about to end: a wait with a deadline.
    done: Receiver<()>,
    /// Set once the version has stopped.
    over: Arc<AtomicBool>,
}

/// What `Registry::spawn_retiring` did with the stop it was given.
enum Spawn {
    /// It runs on a thread in the retiring list.
    Listed,
    /// The registry is shutting down: the caller runs it.
    Closed(Box<dyn FnOnce() + Send>),
    /// No thread could be made (the stop is dropped with it).
    Failed,
}

/// What `services()` reports for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub name: String,
    pub request_target: Option<String>,
    pub instances: usize,
    pub running: bool,
}

/// Orders `specs` so that every service comes after what it depends on (stable otherwise).
pub fn start_order(specs: Vec<ServiceSpec>) -> Result<Vec<ServiceSpec>, StartError> {
    let index: HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    if index.len() != specs.len() {
        let dup = specs
            .iter()
            .find(|s| specs.iter().filter(|t| t.name == s.name).count() > 1)
            .map(|s| s.name.clone())
            .unwrap_or_default();
        return Err(err(&dup, "defined twice"));
    }
    // 0 unvisited, 1 on the current path, 2 placed.
    let mut state = vec![0u8; specs.len()];
    let mut order = Vec::with_capacity(specs.len());
    fn visit(
        i: usize,
        specs: &[ServiceSpec],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        order: &mut Vec<usize>,
        path: &mut Vec<String>,
    ) -> Result<(), StartError> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                path.push(specs[i].name.clone());
                return Err(err(
                    &specs[i].name,
                    format!("dependency cycle: {}", path.join(" -> ")),
                ));
            }
            _ => {}
        }
        state[i] = 1;
        path.push(specs[i].name.clone());
        for d in &specs[i].depends {
            let Some(&j) = index.get(d.as_str()) else {
                return Err(err(
                    &specs[i].name,
                    format!("depends on unknown service {d}"),
                ));
            };
            visit(j, specs, index, state, order, path)?;
        }
        path.pop();
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..specs.len() {
        visit(i, &specs, &index, &mut state, &mut order, &mut Vec::new())?;
    }
    let mut slots: Vec<Option<ServiceSpec>> = specs.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

/// What the running services hold for connections; all 0 once every connection they were
/// given has ended and its close was handled (its `onDisconnect` run, its per-connection state
/// and bcast subscriptions dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionState {
    /// Connections bound to a service and not yet ended.
    pub open: usize,
    /// Connections whose close an instance has not handled yet.
    pub undisconnected: usize,
    /// Memberships of bcast channels.
    pub subscribed: usize,
    /// Entries of bcast's per-connection index of those memberships.
    pub indexed: usize,
}

/// The running services.
pub struct Registry {
    hub: Arc<Hub>,
    bcast: Arc<Bcast>,
    routes: RwLock<HashMap<String, Arc<LuaService>>>,
    running: Mutex<Vec<Arc<LuaService>>>,
    /// Services with `auto_start: false`, startable later with `start_service`.
    idle: Mutex<Vec<ServiceSpec>>,
    /// Replaced or removed versions stopping in the background; joined by `shutdown`.
    retiring: Mutex<Vec<Retiring>>,
    /// How long a retiring version waits for its connections to be gone (see `set_retire_grace`).
    retire_grace: Mutex<Duration>,
    /// How long `shutdown` waits in all (see `set_shutdown_budget`).
    shutdown_budget: Mutex<Duration>,
    /// Set by `shutdown` (under the `running` lock): a reload still under way then starts
    /// nothing that would outlive it.
    closed: AtomicBool,
}

impl Registry {
    /// Starts every `auto_start` service, dependencies first. Any failure stops what was
    /// started and is returned: the server must refuse to start.
    pub fn start(specs: Vec<ServiceSpec>, hub: Arc<Hub>) -> Result<Registry, StartError> {
        let specs = start_order(specs)?;
        let mut targets: HashMap<&str, &str> = HashMap::new();
        for s in specs.iter().filter(|s| !s.standalone) {
            if let Some(other) = targets.insert(&s.request_target, &s.name) {
                return Err(err(
                    &s.name,
                    format!(
                        "request_target {} is also used by {other}",
                        s.request_target
                    ),
                ));
            }
        }
        let auto: HashMap<&str, bool> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.auto_start))
            .collect();
        for s in specs.iter().filter(|s| s.auto_start) {
            if let Some(d) = s
                .depends
                .iter()
                .find(|d| auto.get(d.as_str()) == Some(&false))
            {
                return Err(err(
                    &s.name,
                    format!("depends on {d}, which has auto_start false"),
                ));
            }
        }
        let reg = Registry {
            hub,
            bcast: Arc::new(Bcast::default()),
            routes: RwLock::new(HashMap::new()),
            running: Mutex::new(Vec::new()),
            idle: Mutex::new(Vec::new()),
            retiring: Mutex::new(Vec::new()),
            retire_grace: Mutex::new(SHUTDOWN_GRACE),
            shutdown_budget: Mutex::new(SHUTDOWN_BUDGET),
            closed: AtomicBool::new(false),
        };
        for spec in specs {
            if !spec.auto_start {
                reg.lock_idle().push(spec);
                continue;
            }
            if let Err(e) = reg.launch(spec) {
                reg.shutdown();
                return Err(e);
            }
        }
        Ok(reg)
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<ServiceSpec>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, Vec<Arc<LuaService>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn launch(&self, spec: ServiceSpec) -> Result<(), StartError> {
        let name = spec.name.clone();
        let svc = LuaService::start(spec, Arc::clone(&self.hub), Arc::clone(&self.bcast))
            .map_err(|m| err(&name, m))?;
        let svc = Arc::new(svc);
        let mut running = self.lock_running();
        if self.closed.load(Ordering::SeqCst) {
            drop(running);
            svc.shutdown(SHUTDOWN_GRACE);
            return Err(err(&name, SHUTTING_DOWN));
        }
        if !svc.spec().standalone {
            self.routes
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(svc.spec().request_target.clone(), Arc::clone(&svc));
        }
        running.push(svc);
        Ok(())
    }

    /// Starts a service that has `auto_start: false`. A failure refuses only that service.
    pub fn start_service(&self, name: &str) -> Result<(), StartError> {
        let spec = {
            let mut idle = self.lock_idle();
            let Some(pos) = idle.iter().position(|s| s.name == name) else {
                return Err(err(name, "no such idle service"));
            };
            idle.remove(pos)
        };
        let running: Vec<String> = self
            .lock_running()
            .iter()
            .map(|s| s.spec().name.clone())
            .collect();
        if let Err(e) = dependencies_run(&spec, &running) {
            self.lock_idle().push(spec);
            return Err(e);
        }
        let keep = spec.clone();
        self.launch(spec)
            .inspect_err(|_| self.lock_idle().push(keep))
    }

    /// What the running services still hold for connections (see [`ConnectionState`]).
    pub fn connection_state(&self) -> ConnectionState {
        let (subscribed, indexed) = self.bcast.subscriptions();
        let running = self.lock_running();
        ConnectionState {
            open: running.iter().map(|s| s.connections().len()).sum(),
            undisconnected: running.iter().map(|s| s.undisconnected()).sum(),
            subscribed,
            indexed,
        }
    }

    /// Bytes queued to send on every IO worker (as each last published it).
    pub fn queued_bytes(&self) -> usize {
        (0..self.hub.workers())
            .map(|w| self.hub.port(w).queued_bytes.load(Ordering::Relaxed))
            .sum()
    }

    /// Replaced or removed versions still stopping (waiting for their connections to end, or
    /// for their instances).
    fn retiring_versions(&self) -> Vec<Arc<LuaService>> {
        let retiring = self.retiring.lock().unwrap_or_else(|e| e.into_inner());
        retiring
            .iter()
            .filter(|r| !r.thread.is_finished())
            .map(|r| Arc::clone(&r.service))
            .collect()
    }

    /// The server's once-a-second watch: warns of an instance of a running or retiring
    /// version that has been busy with one batch of messages for a while (see
    /// `LuaService::warn_of_busy_instances`).
    pub fn warn_of_busy_instances(&self) {
        let running: Vec<_> = self.lock_running().iter().map(Arc::clone).collect();
        for s in running.iter().chain(self.retiring_versions().iter()) {
            s.warn_of_busy_instances();
        }
    }

    /// The status report's lines (SIGUSR1) for the IO workers, the running services and the
    /// versions still retiring, the broadcast channels and the mqr queues (the totals' line,
    /// then one per queue that holds messages or refused a post). A worker's connections are
    /// every one it holds: those not yet upgraded, the builtin services' and a retiring
    /// version's too.
    pub fn status(&self) -> Vec<String> {
        let ports: Vec<_> = (0..self.hub.workers()).map(|w| self.hub.port(w)).collect();
        let per_worker: Vec<usize> = ports
            .iter()
            .map(|p| p.connections.load(Ordering::Relaxed))
            .collect();
        let refused: usize = ports.iter().map(|p| p.refused()).sum();
        let abrupt: u64 = ports.iter().map(|p| p.abrupt_ends()).sum();
        let queued = self.queued_bytes();
        let mut lines = vec![format!(
            "{} connection(s) on {} IO worker(s) ({}); {refused} refused one(s) lingering \
             after their answer; {queued} bytes queued to send; {abrupt} WebSocket connection(s) \
             ended without a close handshake since the start (a reset, an error or an end of TCP \
             while open)",
            per_worker.iter().sum::<usize>(),
            per_worker.len(),
            per_worker
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )];
        lines.extend(self.lock_running().iter().map(|s| s.status()));
        lines.extend(self.retiring_versions().iter().map(|s| s.status()));
        lines.extend(super::lua::left_behind::status());
        let (channels, members) = self.bcast.usage();
        let mqr = crate::service::mqr::registry();
        let (queues, messages) = mqr.usage();
        lines.push(format!(
            "bcast: {channels} channel(s), {members} subscription(s); mqr: {queues} queue(s), \
             {messages} message(s) not yet received, {} bytes in the queues",
            mqr.total().held()
        ));
        lines.extend(mqr.queue_status(STATUS_QUEUES));
        lines
    }

    /// Names of the running services.
    pub fn running(&self) -> Vec<String> {
        self.lock_running()
            .iter()
            .map(|s| s.spec().name.clone())
            .collect()
    }

    /// Starts a service that is not running yet (a deploy of a new service), once the
    /// services it depends on run (as at start-up).
    pub fn add(&self, spec: ServiceSpec) -> Result<(), StartError> {
        let running = self.running();
        if running.contains(&spec.name) {
            return Err(err(&spec.name, "already running"));
        }
        dependencies_run(&spec, &running)?;
        self.lock_idle().retain(|s| s.name != spec.name);
        self.launch(spec)
    }

    /// Replaces a running service by a new version without touching the others. The new
    /// version's `depends` must run (as for a new service: its `onStart` may count on them; a
    /// dependency may have failed its own redeploy), or the old one keeps serving and the error
    /// is returned. The new version is started first: if it fails to load, the old one keeps
    /// serving and the error is returned. New connections then reach the new version; the old
    /// one's connections are closed with 1001 (going away), so their clients reconnect to it,
    /// and the old instances stop once those connections are gone (bounded by the retire
    /// grace, see `set_retire_grace`, then by the shutdown grace for the stop itself). A standalone
    /// service is stopped before its new version starts (two copies could fight over queues),
    /// once the new version's app compiles, its preloads are found and its depends run.
    /// Returns how many connections were asked to reconnect.
    pub fn replace(&self, spec: ServiceSpec) -> Result<usize, StartError> {
        let name = spec.name.clone();
        let old = {
            let running = self.lock_running();
            running.iter().find(|s| s.spec().name == name).cloned()
        };
        let Some(old) = old else {
            return self.add(spec).map(|()| 0);
        };
        if spec.standalone {
            // The new version starts only once the old one has stopped: what can be known
            // before stopping it is checked first, so that an app that does not compile, a
            // preload it cannot find or a dependency that is not running leaves the old
            // version running (as a network service's failed replace does).
            Self::check_before_stopping(&spec, &self.running())?;
            let Some(old) = self.take(&name) else {
                return self.add(spec).map(|()| 0);
            };
            if old.spec().standalone {
                // Stopped here, not retired in the background: two copies could fight over
                // queues. What its queues hold stays for the new version: draining them could
                // last as long as their senders keep posting.
                self.hand_over(old);
                if self.closed.load(Ordering::SeqCst) {
                    return Err(err(&name, SHUTTING_DOWN));
                }
                return self.add(spec).map(|()| 0);
            }
            // A network version turning standalone: its clients are asked to go (1001) and it
            // stops once they are gone (their onDisconnect runs in it), as when it is removed.
            let asked = self.retire(old);
            return self.add(spec).map(|()| asked);
        }
        dependencies_run(&spec, &self.running())?;
        let spec = ServiceSpec {
            replacing: true,
            ..spec
        };
        let new = LuaService::start(spec, Arc::clone(&self.hub), Arc::clone(&self.bcast))
            .map_err(|m| err(&name, m))?;
        let new = Arc::new(new);
        {
            let mut running = self.lock_running();
            if self.closed.load(Ordering::SeqCst) {
                drop(running);
                new.shutdown(SHUTDOWN_GRACE);
                return Err(err(&name, SHUTTING_DOWN));
            }
            let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
            routes.retain(|_, s| !Arc::ptr_eq(s, &old));
            new.mark_serving();
            routes.insert(new.spec().request_target.clone(), Arc::clone(&new));
            running.retain(|s| !Arc::ptr_eq(s, &old));
            running.push(new);
        }
        Ok(self.retire(old))
    }

    /// Stops a standalone version for its successor and waits until it has stopped. Meanwhile
    /// it is in the retiring list, so that a shutdown that begins then waits for it too (in
    /// neither list, it was left to the process's exit, its onShutdown cut short).
    fn hand_over(&self, old: Arc<LuaService>) {
        old.mark_retiring();
        let (over_tx, over_rx) = sync_channel::<()>(1);
        let body = {
            let old = Arc::clone(&old);
            move || {
                old.hand_over(SHUTDOWN_GRACE);
                let _ = over_tx.send(());
            }
        };
        match self.spawn_retiring(&old, "handover", Box::new(body)) {
            Spawn::Listed => {
                let _ = over_rx.recv();
            }
            Spawn::Closed(body) => body(),
            Spawn::Failed => old.hand_over(SHUTDOWN_GRACE),
        }
    }

    /// Runs `body` (the stop of a retiring version) on a thread listed as retiring, for
    /// `shutdown` to wait for. Spawned and listed under the list's lock: a shutdown that takes
    /// the list sees it, or began before and closed the registry, and then `body` is given
    /// back for the caller to run.
    fn spawn_retiring(
        &self,
        old: &Arc<LuaService>,
        kind: &str,
        body: Box<dyn FnOnce() + Send>,
    ) -> Spawn {
        let mut retiring = self.retiring.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(Ordering::SeqCst) {
            return Spawn::Closed(body);
        }
        let spec = old.spec();
        let (done_tx, done) = sync_channel::<()>(1);
        let over = Arc::new(AtomicBool::new(false));
        let spawned = std::thread::Builder::new()
            .name(format!("{kind}-{}", spec.name))
            .spawn({
                let over = Arc::clone(&over);
                move || {
                    body();
                    over.store(true, Ordering::SeqCst);
                    let _ = done_tx.send(());
                }
            });
        let Ok(thread) = spawned else {
            return Spawn::Failed;
        };
        retiring.retain(|r| !r.thread.is_finished());
        retiring.push(Retiring {
            name: spec.name.clone(),
            service: Arc::clone(old),
            depends: spec.depends.clone(),
            thread,
            done,
            over,
        });
        Spawn::Listed
    }

    /// What would make `spec` fail to start, short of running it: its app's compilation, its
    /// preloads, its dependencies (`running`: the services running now).
    fn check_before_stopping(spec: &ServiceSpec, running: &[String]) -> Result<(), StartError> {
        dependencies_run(spec, running)?;
        crate::service::lua::compile_check(&spec.app_file, spec.allow_ffi || spec.allow_debug)
            .and_then(|()| crate::service::lua::preload_check(spec))
            .map_err(|m| err(&spec.name, m))
    }

    /// Stops a running service (a deploy that removed it): unrouted at once, its connections
    /// closed with 1001, its instances stopped when they are gone.
    pub fn remove(&self, name: &str) -> usize {
        match self.take(name) {
            Some(old) => self.retire(old),
            None => 0,
        }
    }

    /// Takes a running service out of the running list and the routes.
    fn take(&self, name: &str) -> Option<Arc<LuaService>> {
        let old = {
            let mut running = self.lock_running();
            let pos = running.iter().position(|s| s.spec().name == name);
            pos.map(|p| running.remove(p))
        }?;
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| !Arc::ptr_eq(s, &old));
        Some(old)
    }

    /// How long a replaced or removed version waits for its connections to end before it
    /// stops (default 5 s). The server sets it to the longest a close handshake can last in
    /// its workers (close timeout and its extensions), so that every connection asked to go
    /// has ended, and had its `onDisconnect`, by then.
    pub fn set_retire_grace(&self, grace: Duration) {
        *self.retire_grace.lock().unwrap_or_else(|e| e.into_inner()) = grace;
    }

    /// How long `shutdown` waits in all (default 10 s, see `SHUTDOWN_BUDGET`).
    pub fn set_shutdown_budget(&self, budget: Duration) {
        *self
            .shutdown_budget
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = budget;
    }

    /// Asks the connections of a replaced or removed service to go away, then stops it in
    /// the background once they are gone (their `onDisconnect` runs in the old version).
    fn retire(&self, old: Arc<LuaService>) -> usize {
        old.mark_retiring();
        let mut asked: std::collections::HashSet<_> = old.connections().into_iter().collect();
        let n = asked.len();
        for &conn in &asked {
            let _ = self.hub.send(Command::GoAway { conn, code: 1001 });
        }
        let hub = Arc::clone(&self.hub);
        let grace = *self.retire_grace.lock().unwrap_or_else(|e| e.into_inner());
        let name = old.spec().name.clone();
        // Versions retiring now that depend on this one (a deploy that removes a sender and
        // its receiver together retires the sender first): this one stops after them, so
        // that what they still post reaches it while it drains, as at shutdown.
        let after: Vec<Arc<AtomicBool>> = self
            .retiring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.depends.contains(&name))
            .map(|r| Arc::clone(&r.over))
            .collect();
        let body = {
            let old = Arc::clone(&old);
            move || {
                let deadline = Instant::now() + grace;
                // A dependent stops within its own grace and SHUTDOWN_GRACE.
                let after_deadline = deadline + SHUTDOWN_GRACE;
                let poll = Duration::from_millis(20);
                loop {
                    let now = Instant::now();
                    // Every connection gone, and its close event handled by the old
                    // instances (its onDisconnect has run): the event may still wait in a
                    // worker's batch (a full queue) after the connection left the set.
                    if old.close_doors_if_idle() || now >= deadline {
                        if after.iter().all(|a| a.load(Ordering::SeqCst)) || now >= after_deadline {
                            break;
                        }
                    } else {
                        // A handshake routed to the old version just before the swap opens
                        // after the list above was taken: ask it too (once is enough).
                        for conn in old.connections() {
                            if asked.insert(conn) {
                                let _ = hub.send(Command::GoAway { conn, code: 1001 });
                            }
                        }
                    }
                    // Polling interval while the workers finish the close handshakes.
                    std::thread::sleep(poll);
                }
                old.shutdown(SHUTDOWN_GRACE);
            }
        };
        match self.spawn_retiring(&old, "retire", Box::new(body)) {
            Spawn::Listed => {}
            // The shutdown has begun (its connections are ending anyway): wait here.
            Spawn::Closed(body) => body(),
            Spawn::Failed => old.shutdown(SHUTDOWN_GRACE),
        }
        n
    }

    /// The network service at exactly `path` (query string already stripped).
    pub fn route(&self, path: &str) -> Option<Arc<dyn Service>> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        routes.get(path).map(|s| Arc::clone(s) as Arc<dyn Service>)
    }

    /// Stops every service, dependents before what they depend on (`onShutdown` on each
    /// instance, threads joined, `must_stop()` true for standalone ones). Idempotent.
    ///
    /// Waits at most the shutdown budget in all: versions still retiring at most half of it, then
    /// each running service what is left, at most `SHUTDOWN_GRACE`. Once it is spent, the services
    /// still to stop are asked to, but not waited for (one warning names them): the process exits
    /// under them.
    pub fn shutdown(&self) {
        // First, so that a reload under way starts nothing after the lists below were taken.
        {
            let _running = self.lock_running();
            self.closed.store(true, Ordering::SeqCst);
        }
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let budget = *self
            .shutdown_budget
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + budget;
        let left = || deadline.saturating_duration_since(Instant::now());
        let mut left_behind = Vec::new();
        // Versions still retiring finish first: their onDisconnect and onShutdown are owed too.
        // A retire thread can take its retire grace plus SHUTDOWN_GRACE: it is waited for
        // within half the budget, so that one that does not stop leaves the running services
        // (receivers draining what they accepted) the other half.
        let retiring_deadline = Instant::now() + budget / 2;
        let retiring: Vec<_> =
            std::mem::take(&mut *self.retiring.lock().unwrap_or_else(|e| e.into_inner()));
        for r in retiring {
            match r
                .done
                .recv_timeout(retiring_deadline.saturating_duration_since(Instant::now()))
            {
                Err(RecvTimeoutError::Timeout) => {
                    left_behind.push(format!("{} (retiring version)", r.name))
                }
                _ => {
                    let _ = r.thread.join();
                }
            }
        }
        let running: Vec<_> = self.lock_running().drain(..).collect();
        left_behind.extend(stop_dependents_first(&running, left));
        if !left_behind.is_empty() {
            // Not "the budget is spent": a stuck retiring version is given up on at half of it.
            crate::warn!(
                "shutdown: not waiting any longer for {} (asked to stop, may still be running; \
                 waited {:.1?} of the {budget:?} shutdown budget)",
                left_behind.join(", "),
                budget.saturating_sub(left()),
            );
        }
        if !running.is_empty() {
            crate::service::mqr::registry().log_leftovers();
        }
    }

    /// Every configured service and whether it runs.
    pub fn services(&self) -> Vec<ServiceInfo> {
        let info = |s: &ServiceSpec, running| ServiceInfo {
            name: s.name.clone(),
            request_target: (!s.standalone).then(|| s.request_target.clone()),
            instances: s.instances,
            running,
        };
        let mut v: Vec<_> = self
            .lock_running()
            .iter()
            .map(|s| info(s.spec(), true))
            .collect();
        v.extend(self.lock_idle().iter().map(|s| info(s, false)));
        v
    }
}

/// Stops `running`, each service once every service that `depends` on it has stopped (or its
/// grace ran out), so that a sender stops before its `mqr` receiver, which then drains what it
/// accepted. Services that do not depend on one another stop at the same time, each on a
/// thread of its own: a stuck one holds up only what it depends on, not every service after
/// it in the list, which used to wait behind its 5 s without even being asked to stop (and a
/// receiver asked only once the budget was spent lost what it had accepted). Each is waited
/// for at most `SHUTDOWN_GRACE` within what `left` says remains of the budget; the names of
/// those that got no time at all.
fn stop_dependents_first(
    running: &[Arc<LuaService>],
    left: impl Fn() -> Duration + Sync,
) -> Vec<String> {
    let names: HashMap<&str, usize> = running
        .iter()
        .enumerate()
        .map(|(i, s)| (s.spec().name.as_str(), i))
        .collect();
    // For each service, the services that depend on it (each at most once).
    let mut dependents = vec![Vec::new(); running.len()];
    for (i, svc) in running.iter().enumerate() {
        for d in &svc.spec().depends {
            if let Some(&j) = names.get(d.as_str()) {
                if j != i && !dependents[j].contains(&i) {
                    dependents[j].push(i);
                }
            }
        }
    }
    // Each service after the services that depend on it: a stop run here, for want of a
    // thread, then waits only for stops already under way. A cycle is broken where found.
    let mut order = Vec::with_capacity(running.len());
    let mut state = vec![0u8; running.len()]; // 0: not seen, 1: on the path, 2: placed
    for root in 0..running.len() {
        let mut stack = vec![(root, 0usize)];
        while let Some(&mut (i, ref mut next)) = stack.last_mut() {
            if state[i] == 2 {
                stack.pop();
                continue;
            }
            state[i] = 1;
            if let Some(&j) = dependents[i].get(*next) {
                *next += 1;
                if state[j] == 0 {
                    stack.push((j, 0));
                }
                continue;
            }
            state[i] = 2;
            order.push(i);
            stack.pop();
        }
    }
    let stopped = Mutex::new(vec![false; running.len()]);
    let changed = std::sync::Condvar::new();
    let left_behind = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for &i in &order {
            let svc = &running[i];
            let (stopped, changed, left_behind, left) = (&stopped, &changed, &left_behind, &left);
            let dependents = &dependents[i];
            let run = move || {
                // A dependency cycle (refused by the config check) or a dependent that never
                // returns cannot hold this past the budget.
                let mut done = stopped.lock().unwrap_or_else(|e| e.into_inner());
                while !dependents.iter().all(|&j| done[j]) && !left().is_zero() {
                    done = changed
                        .wait_timeout(done, left())
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                drop(done);
                let grace = left().min(SHUTDOWN_GRACE);
                if grace.is_zero() {
                    left_behind
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(svc.spec().name.clone());
                }
                // A zero grace still sets `must_stop()` and stops the queues; it waits for
                // nothing.
                svc.shutdown(grace);
                stopped.lock().unwrap_or_else(|e| e.into_inner())[i] = true;
                changed.notify_all();
            };
            let spawned = std::thread::Builder::new()
                .name("lapps-stop".into())
                .spawn_scoped(scope, run);
            if spawned.is_err() {
                // No thread to be had: stop it here, after the ones started so far (those
                // that depend on it among them).
                run();
            }
        }
    });
    left_behind.into_inner().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, deps: &[&str]) -> ServiceSpec {
        let mut s = ServiceSpec::new(name, format!("/nonexistent/{name}.lua"));
        s.depends = deps.iter().map(|d| d.to_string()).collect();
        s
    }

    #[test]
    fn dependencies_start_first() {
        let order =
            start_order(vec![spec("a", &["c"]), spec("b", &[]), spec("c", &["b"])]).unwrap();
        let names: Vec<_> = order.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b", "c", "a"]);
    }

    #[test]
    fn cycles_and_unknown_dependencies_are_errors() {
        let e = start_order(vec![spec("a", &["b"]), spec("b", &["a"])]).unwrap_err();
        assert!(e.message.contains("cycle: a -> b -> a"), "{e}");
        let e = start_order(vec![spec("a", &["zz"])]).unwrap_err();
        assert_eq!(e.service, "a");
        assert!(e.message.contains("unknown service zz"), "{e}");
        let e = start_order(vec![spec("a", &[]), spec("a", &[])]).unwrap_err();
        assert!(e.message.contains("twice"));
    }
}
