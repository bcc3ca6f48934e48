//! The Lua application host: services whose logic is a Lua app run by LuaJIT instances.
//!
//! Owns the hand-off between IOWorkers and instance threads (see docs/threading.md): each
//! worker gathers the events of one loop iteration in its own per-instance batches (kept in
//! the worker thread's own storage: only that thread touches them, so the per-message path
//! takes no lock) and `flush` hands each non-empty batch over with one wake-up. A worker never runs Lua and never waits on an instance: above the high-water
//! mark `on_message` answers `Flow::Pause`, and the instance posts `Command::Resume` once it
//! has drained below half of it. Nothing is dropped.
//!
//! - [`spec`]: the input (`ServiceSpec`).
//! - `inbox`: batches, parking, back-pressure counters.
//! - `instance`: the thread that owns one state; `sandbox`: its limits; `raw`/`standalone`:
//!   the callbacks; `api`: the Lua-facing modules; `frame`: server framing.

pub mod api;
mod behind;
mod busy;
mod children;
mod collect;
mod cstack;
pub(crate) mod error_values;
mod fastpath;
mod frame;
mod held;
mod host;
mod inbox;
mod instance;
mod lapps;
mod lapps_fast;
pub(crate) mod left_behind;
mod lua_memory;
mod raw;
mod run_state;
mod sandbox;
pub mod spec;
mod standalone;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub use host::Stop;
pub use spec::{Protocol, ServiceSpec};

/// Compiles an app file without running any of it (`--check-config`): a missing or unreadable
/// file or a syntax error is reported as "path: reason" / "path:line: message". `bytecode`: the
/// service may load a precompiled chunk (as one with `allow_ffi` or `allow_debug` does, its
/// state being made unsafe); otherwise only source text compiles, as at run time.
pub fn compile_check(app_file: &std::path::Path, bytecode: bool) -> Result<(), String> {
    let path = app_file.display().to_string();
    let source = crate::file_read::read_regular(app_file, crate::file_read::SOURCE_MAX)
        .map_err(|e| format!("{path}: {e}"))?;
    // A bare state: compiling needs no library, and nothing here runs.
    let lua = if bytecode {
        // SAFETY: the state only compiles the chunk (no code runs, no library is opened) and
        // is dropped right after, as the service's own state, made unsafe by its settings.
        unsafe { mlua::Lua::unsafe_new() }
    } else {
        mlua::Lua::new()
    };
    let chunk = lua.load(source).set_name(format!("@{path}"));
    let chunk = if bytecode {
        chunk
    } else {
        chunk.set_mode(mlua::ChunkMode::Text)
    };
    chunk.into_function().map(drop).map_err(|e| match e {
        mlua::Error::SyntaxError { message, .. } => message,
        other => format!("{path}: {other}"),
    })
}

/// Resolves a service's `preload` names as its instances will, running none of them
/// (`--check-config`): each must be a host module, a library its state has (or preloads, as
/// LuaJIT's `table.new`), a Lua file on its `package.path` (the app's directory, then `lib`),
/// which must compile, or, where the service may load native code (`allow_ffi`,
/// `allow_debug`), a C module on `package.cpath`. A name none of these gives fails the
/// service's start, and at boot the whole server's.
pub fn preload_check(spec: &ServiceSpec) -> Result<(), String> {
    let unsafe_state = spec.allow_ffi || spec.allow_debug;
    let lua = mlua::Lua::new();
    sandbox::set_package_path(&lua, spec).map_err(|e| e.to_string())?;
    let find = lua
        .load(
            "local name, c = ...
             if package.loaded[name] ~= nil or package.preload[name] ~= nil then
               return true
             end
             local path, err = package.searchpath(name, package.path)
             if path or not c then return path, err end
             local cpath, cerr = package.searchpath(name, package.cpath)
             if cpath then return true end
             return nil, err .. cerr",
        )
        .into_function()
        .map_err(|e| e.to_string())?;
    for name in &spec.preload {
        let n = name.as_str();
        // What the sandbox adds to or takes from the libraries of a plain state.
        let allowed = match n {
            _ if instance::HOST_MODULES.contains(&n) => Some(true),
            "ffi" => Some(spec.allow_ffi),
            "debug" => Some(spec.allow_debug),
            "string.buffer" => Some(unsafe_state),
            "jit" | "jit.opt" | "jit.util" | "jit.profile" => {
                Some(spec.instruction_budget.is_none())
            }
            _ => None,
        };
        match allowed {
            Some(true) => continue,
            Some(false) => {
                return Err(format!(
                    "preload {n}: not available to this service (see allow_ffi, allow_debug, \
                     instruction_budget)"
                ))
            }
            None => {}
        }
        // A C module (`package.cpath`) loads only in a state that may load native code.
        let (found, tried): (mlua::Value, Option<String>) = find
            .call((n, unsafe_state))
            .map_err(|e| format!("preload {n}: {e}"))?;
        match found {
            mlua::Value::Boolean(true) => {}
            mlua::Value::String(path) => {
                let path = std::path::PathBuf::from(path.to_string_lossy());
                compile_check(&path, unsafe_state).map_err(|e| format!("preload {n}: {e}"))?;
            }
            _ => {
                let tried: Vec<&str> = tried
                    .as_deref()
                    .unwrap_or_default()
                    .split("\n\t")
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .collect();
                // A misspelt host module reads as a missing file: name the host's first (a
                // trial's `tiem` got only the paths searched).
                return Err(format!(
                    "preload {n}: no such module (the host's own are {}; {})",
                    instance::HOST_MODULES.join(", "),
                    tried.join("; ")
                ));
            }
        }
    }
    Ok(())
}

use self::inbox::{Batch, Inbox, Kind};
use self::instance::{InstanceHandle, Shared};
use super::{Flow, Owed, Service, WorkerCtx};
use crate::net::handle::ConnId;
use crate::net::hub::Hub;
use crate::ws::Opcode;

/// The bytes an instance's inbound queue allocates when it starts (see `LuaService::new`): a
/// slot per message of `queue_capacity` and `BATCHES_PER_WORKER` (8) per worker.
pub fn inbox_bytes(queue_capacity: usize, workers: usize) -> u64 {
    let slot = std::mem::size_of::<Batch>() + std::mem::size_of::<usize>();
    (inbox_slots(queue_capacity, workers) as u64).saturating_mul(slot as u64)
}

/// The batch slots of an instance's inbound queue.
fn inbox_slots(queue_capacity: usize, workers: usize) -> usize {
    queue_capacity.saturating_add(workers.saturating_mul(BATCHES_PER_WORKER))
}

/// Batch slots per worker on top of one slot per message of the high-water mark: every batch
/// holds at least one event and messages above the mark pause their reader, so a full queue
/// (the flush keeps the batch and retries) takes more open/close events than a worker sees.
const BATCHES_PER_WORKER: usize = 8;

/// The batches one worker is filling for one service, one per instance.
struct Pending {
    service: u64,
    worker: usize,
    /// Dead once the service is dropped: the entry is pruned.
    alive: Weak<()>,
    batches: Vec<Batch>,
}

thread_local! {
    /// The batches of the worker(s) running on this thread. Only an IOWorker's own thread
    /// calls `on_open`/`on_message`/`on_close`/`flush` with its index, so thread-local storage
    /// gives each worker its batches without a lock; the key keeps (service, worker) apart
    /// even when one thread plays several workers (the in-process tests do).
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
}

/// Service ids for the thread-local batches.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One running Lua service (network or standalone).
pub struct LuaService {
    spec: Arc<ServiceSpec>,
    inboxes: Vec<Arc<Inbox>>,
    /// Names this service's batches in each worker's [`PENDING`].
    id: u64,
    alive: Arc<()>,
    next_instance: AtomicUsize,
    instances: Mutex<Vec<InstanceHandle>>,
    stop: Arc<Stop>,
    /// What each instance's state takes (the status report).
    memory: Arc<lua_memory::LuaMemory>,
    /// A standalone service's `run()` failures, for the status report.
    run_state: Arc<run_state::RunState>,
    /// Open connections (for a redeploy, which asks them to reconnect to the new version).
    conns: Mutex<std::collections::HashSet<ConnId>>,
    /// Set (under the `conns` lock) once this version takes no more connections.
    closed_doors: AtomicBool,
    /// The hub: tells `on_ending` whether a LAppS connection that ends is owed nothing more.
    hub: Arc<Hub>,
}

impl LuaService {
    /// Starts every instance of `spec`; on the first failure the started ones are stopped.
    pub fn start(
        spec: ServiceSpec,
        hub: Arc<Hub>,
        bcast: Arc<api::bcast::Bcast>,
    ) -> Result<LuaService, String> {
        if spec.instances == 0 {
            return Err("instances must be at least 1".into());
        }
        let workers = hub.workers();
        let spec = Arc::new(spec);
        let inboxes: Vec<Arc<Inbox>> = if spec.standalone {
            Vec::new()
        } else {
            (0..spec.instances)
                .map(|_| {
                    Arc::new(Inbox::new(
                        workers,
                        inbox_slots(spec.queue_capacity, workers),
                        spec.queue_capacity,
                        spec.queue_bytes,
                    ))
                })
                .collect()
        };
        let svc = LuaService {
            spec: Arc::clone(&spec),
            inboxes,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(()),
            next_instance: AtomicUsize::new(0),
            instances: Mutex::new(Vec::new()),
            stop: Arc::new(Stop::default()),
            memory: Arc::new(lua_memory::LuaMemory::new(spec.instances)),
            run_state: Arc::new(run_state::RunState::new(spec.instances)),
            conns: Mutex::new(std::collections::HashSet::new()),
            closed_doors: AtomicBool::new(false),
            hub: Arc::clone(&hub),
        };
        svc.stop.set_new_version(spec.replacing);
        let shared = Shared {
            hub,
            bcast,
            stop: Arc::clone(&svc.stop),
            memory: Arc::clone(&svc.memory),
            run_state: Arc::clone(&svc.run_state),
        };
        // Under systemd: the instances start one per CPU at a time, each within its start
        // timeout, which may be longer than the unit's TimeoutStartSec; the manager waits as
        // long as the start says it may take (never less than the unit's own timeout).
        let rounds = spec
            .instances
            .div_ceil(instance::start_width(spec.instances));
        let may_take = spec
            .start_timeout
            .saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX))
            + Duration::from_secs(5);
        crate::signals::notify_systemd(&format!("EXTEND_TIMEOUT_USEC={}", may_take.as_micros()));
        let (serving, failure) = instance::start_all(&spec, &shared, &svc.inboxes);
        svc.lock_instances().extend(serving);
        if let Some(e) = failure {
            svc.shutdown(Duration::from_secs(5));
            return Err(e);
        }
        crate::info!(
            "service {} started: {} instance(s){}",
            spec.name,
            spec.instances,
            if spec.standalone {
                " (standalone)".to_string()
            } else {
                format!(" at {}", spec.request_target)
            }
        );
        Ok(svc)
    }

    pub fn spec(&self) -> &ServiceSpec {
        &self.spec
    }

    fn lock_instances(&self) -> std::sync::MutexGuard<'_, Vec<InstanceHandle>> {
        self.instances.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `must_stop()` becomes true, naps wake, each network instance drains its queue and runs
    /// `onShutdown`; threads are joined until `grace` has passed (a `run()` that never polls
    /// `must_stop()` is left behind with a warning). A zero grace waits for no thread that is
    /// still running and logs nothing: the caller reports it. Idempotent.
    pub fn shutdown(&self, grace: Duration) {
        {
            // Under the lock, as `on_open` reads it.
            let _conns = self.lock_conns();
            self.closed_doors.store(true, Ordering::SeqCst);
        }
        self.stop.set();
        for inbox in &self.inboxes {
            inbox.stop();
        }
        let deadline = Instant::now() + grace;
        for h in self.lock_instances().iter_mut() {
            let Some(thread) = h.thread.take() else {
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if h.finished.recv_timeout(left).is_ok() {
                let _ = thread.join();
            } else {
                if !grace.is_zero() {
                    crate::warn!(
                        "service {} instance {} did not stop within {grace:?} ({})",
                        self.spec.name,
                        h.index,
                        self.why_not_stopped(h.index)
                    );
                }
                drop(thread);
                let (_, ended) = std::sync::mpsc::sync_channel(0);
                let finished = std::mem::replace(&mut h.finished, ended);
                left_behind::note(
                    &self.spec.name,
                    h.index,
                    "it did not stop in time",
                    finished,
                );
            }
        }
    }

    /// What instance `index` was doing when it did not stop in time, for the warning: a
    /// network instance drains its queue before `onShutdown`, a standalone one must return
    /// from `run()`.
    fn why_not_stopped(&self, index: usize) -> String {
        let Some(inbox) = self.inboxes.get(index) else {
            return if self.run_state.has_returned(index) {
                "in its onShutdown".to_owned()
            } else {
                // A trial's run() drained its queue, as the docs show, for longer than the
                // time given: the line must not send it looking for a missing check.
                "its run() had not returned: it does not look at must_stop() (nor stop on \
                 mqr's \"stopped\"), or what it still had to do, such as draining a queue, \
                 took longer"
                    .to_owned()
            };
        };
        let (msgs, _) = inbox.queued();
        match inbox.busy().busy_for() {
            Some(d) => format!(
                "busy with one batch of messages for {}; {msgs} message(s) handed to it and \
                 not yet done, that batch's included",
                crate::time_fmt::uptime(d)
            ),
            None => {
                format!("{msgs} message(s) handed to it and not yet done, or in its onShutdown")
            }
        }
    }

    /// It serves now (a replacement routed in place of its predecessor): its lines lose the
    /// `new version` tag.
    pub fn mark_serving(&self) {
        self.stop.set_new_version(false);
    }

    /// A redeploy replaced or removed this version: its log lines say so from now on.
    pub fn mark_retiring(&self) {
        self.stop.set_retiring();
    }

    /// [`shutdown`](Self::shutdown) for a standalone version a redeploy replaces: it leaves
    /// what its `mqr` queues hold to the new version instead of draining it (see
    /// `Stop::set_handover`).
    pub fn hand_over(&self, grace: Duration) {
        self.stop.set_handover();
        self.shutdown(grace);
    }

    /// The service's line of the status report (SIGUSR1).
    pub fn status(&self) -> String {
        let spec = &self.spec;
        let name = if self.stop.retiring() {
            format!("{} (retiring version)", spec.name)
        } else {
            spec.name.clone()
        };
        let memory = self.memory.summary(spec.memory_limit);
        let memory = memory.map(|m| format!("; {m}")).unwrap_or_default();
        if spec.standalone {
            let failing = self.run_state.summary();
            let failing = failing.map(|f| format!("; {f}")).unwrap_or_default();
            let cws = self.run_state.cws_summary();
            let cws = cws.map(|c| format!("; {c}")).unwrap_or_default();
            return format!(
                "service {name}: {} instance(s), standalone{failing}{cws}{memory}",
                spec.instances
            );
        }
        let (msgs, bytes) = self
            .inboxes
            .iter()
            .map(|i| i.queued())
            .fold((0, 0), |(m, b), (mi, bi)| (m + mi, b + bi));
        let open = self.lock_conns().len();
        // Opened and not yet told of their close, less those still open: the closes on their
        // way to the instances (a close leaves the set before its instance handles it).
        let closing = self.undisconnected().saturating_sub(open);
        let mut line = format!(
            "service {name}: {} instance(s), {:?} at {}: {open} connection(s), {closing} close(s) \
             not yet handled, {msgs} message(s) ({bytes} bytes) waiting for its instances",
            spec.instances, spec.protocol, spec.request_target,
        );
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if let Some(d) = inbox.busy().busy_for().filter(|d| *d >= busy::REPORT_AFTER) {
                let d = crate::time_fmt::uptime(d);
                line.push_str(&format!("; instance {i} busy with one batch for {d}"));
            }
        }
        line.push_str(&memory);
        line
    }

    /// The server's once-a-second watch: warns of each instance busy with one batch of
    /// messages for `busy::WARN_AFTER` (10 s), once per batch (the instance says when it is done).
    pub fn warn_of_busy_instances(&self) {
        let retiring = if self.stop.retiring() {
            " retiring"
        } else {
            ""
        };
        let now = std::time::Instant::now();
        for (i, inbox) in self.inboxes.iter().enumerate() {
            self.watch_behind(i, inbox, retiring, now);
            let Some(took) = inbox.busy().warn_once(busy::WARN_AFTER) else {
                continue;
            };
            let why = if self.spec.instruction_budget.is_none() {
                "a callback that does not return? nothing stops one: its instruction_budget is 0"
            } else {
                "a callback waiting in a C function, which the instruction budget does not \
                 count, or many slow callbacks"
            };
            crate::warn!(
                "[{}#{i}{retiring}] busy with one batch of messages for {}: the connections \
                 bound to this instance wait meanwhile ({why})",
                self.spec.name,
                crate::time_fmt::uptime(took)
            );
        }
    }

    /// The watch's look at instance `i` staying behind (see `behind`): a warning once it has
    /// been for `behind::WARN_AFTER`, a line when it has caught up.
    fn watch_behind(&self, i: usize, inbox: &Inbox, retiring: &str, now: std::time::Instant) {
        let (paused, behind) = inbox.behind();
        match behind.look(paused, now) {
            behind::News::Nothing => {}
            behind::News::Behind(d) => {
                let (msgs, bytes) = inbox.queued();
                crate::warn!(
                    "[{}#{i}{retiring}] behind for {}: {msgs} message(s) ({bytes} bytes) wait for \
                     it, above its queue's high-water mark (queue_capacity {}, queue_bytes {}), \
                     so the connections that send to it are not read meanwhile (its callbacks \
                     take longer than the messages come: more instances, or quicker callbacks)",
                    self.spec.name,
                    crate::time_fmt::uptime(d),
                    self.spec.queue_capacity,
                    self.spec.queue_bytes
                );
            }
            behind::News::CaughtUp(d) => crate::info!(
                "[{}#{i}{retiring}] caught up: its queue is down to half its high-water mark \
                 and its connections are read again, after {}",
                self.spec.name,
                crate::time_fmt::uptime(d)
            ),
        }
    }

    /// The connections currently bound to this service.
    pub fn connections(&self) -> Vec<ConnId> {
        self.lock_conns().iter().copied().collect()
    }

    /// A retiring version: when no connection is open and every `onDisconnect` has run, takes
    /// no more connections (one routed here just before the swap is refused, see
    /// [`Service::on_open`]) and answers true: it may stop.
    pub fn close_doors_if_idle(&self) -> bool {
        let conns = self.lock_conns();
        let idle = conns.is_empty() && self.undisconnected() == 0;
        if idle {
            self.closed_doors.store(true, Ordering::SeqCst);
        }
        idle
    }

    /// Connections opened on this version whose close its instances have not handled yet
    /// (their `onDisconnect` has not run): the close events may still wait in a worker's
    /// batch or an instance's queue after the connections themselves are gone.
    pub fn undisconnected(&self) -> usize {
        self.inboxes.iter().map(|i| i.open_conns()).sum()
    }

    fn lock_conns(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<ConnId>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn instance_of(&self, tag: u32) -> usize {
        (tag as usize) % self.inboxes.len().max(1)
    }

    fn with_batch<R>(
        &self,
        worker: usize,
        tag: u32,
        f: impl FnOnce(&mut Batch, &Inbox) -> R,
    ) -> Option<R> {
        let i = self.instance_of(tag);
        let inbox = self.inboxes.get(i)?;
        self.with_pending(worker, |batches| batches.get_mut(i).map(|b| f(b, inbox)))
    }

    /// Runs `f` on `worker`'s batches for this service (created on first use).
    fn with_pending<R>(&self, worker: usize, f: impl FnOnce(&mut Vec<Batch>) -> R) -> R {
        PENDING.with(|p| {
            let mut p = p.borrow_mut();
            let at = match p
                .iter()
                .position(|e| e.service == self.id && e.worker == worker)
            {
                Some(at) => at,
                None => {
                    p.retain(|e| e.alive.strong_count() > 0);
                    p.push(Pending {
                        service: self.id,
                        worker,
                        alive: Arc::downgrade(&self.alive),
                        batches: (0..self.inboxes.len()).map(|_| Batch::default()).collect(),
                    });
                    p.len() - 1
                }
            };
            f(&mut p[at].batches)
        })
    }
}

impl Service for LuaService {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn max_message_size(&self) -> usize {
        self.spec.max_inbound_message_size
    }

    fn subprotocol(&self) -> Option<&str> {
        self.spec.proto_alias.as_deref()
    }

    fn extra_headers(&self) -> &[(String, String)] {
        &self.spec.extra_headers
    }

    fn speaks(&self) -> crate::net::hub::Speaks {
        match self.spec.protocol {
            spec::Protocol::LAppS => crate::net::hub::Speaks::Lapps,
            spec::Protocol::Raw => crate::net::hub::Speaks::Raw,
        }
    }

    fn on_open(&self, ctx: &mut dyn WorkerCtx, conn: ConnId) -> Option<u32> {
        let n = self.inboxes.len().max(1);
        let tag = (self.next_instance.fetch_add(1, Ordering::Relaxed) % n) as u32;
        {
            let mut conns = self.lock_conns();
            if self.closed_doors.load(Ordering::SeqCst) {
                return None;
            }
            conns.insert(conn);
            if let Some(inbox) = self.inboxes.get(self.instance_of(tag)) {
                inbox.opened();
            }
        }
        self.with_batch(ctx.worker(), tag, |b, _| b.push(conn, Kind::Open));
        Some(tag)
    }

    fn on_message(
        &self,
        ctx: &mut dyn WorkerCtx,
        conn: ConnId,
        tag: u32,
        opcode: Opcode,
        payload: &[u8],
    ) -> Flow {
        let r = self.with_batch(ctx.worker(), tag, |b, inbox| {
            b.push_message(conn, opcode as u8, payload);
            if inbox.over_high_water(b.messages, b.byte_len()) {
                b.pause(conn);
                Flow::Pause
            } else {
                Flow::Continue
            }
        });
        r.unwrap_or(Flow::Close(1011))
    }

    fn on_ending(&self, worker: usize, conn: ConnId, tag: u32, handed: u64) -> Owed {
        let Some(inbox) = self.inboxes.get(self.instance_of(tag)) else {
            return Owed::Nothing;
        };
        // Every message of `conn` handled and its replies posted, so the Close need not wait
        // for whatever the instance is busy with now (SPEC 8). A LAppS app may also answer a
        // request later, from another connection's handler, another instance or service, and
        // the host may hold its own answers behind such a response: the hub counts both until
        // they are posted, and only a connection owed nothing with nothing unposted skips the
        // Drain.
        if inbox.completed(worker) >= handed
            && (self.spec.protocol == spec::Protocol::Raw || self.hub.lapps_settled(conn))
        {
            return Owed::InCommands;
        }
        match self.with_batch(worker, tag, |b, _| b.push(conn, Kind::Drain)) {
            Some(()) => Owed::Later,
            None => Owed::Nothing,
        }
    }

    fn handled(&self, worker: usize, tag: u32, handed: u64) -> bool {
        self.inboxes
            .get(self.instance_of(tag))
            .is_none_or(|inbox| inbox.completed(worker) >= handed)
    }

    fn resume_when_handled(&self, worker: usize, conn: ConnId, tag: u32) -> bool {
        // The batch being gathered holds the connection's last message: once it is handled,
        // so are all its messages before it.
        self.with_batch(worker, tag, |b, _| b.resume_after(conn))
            .is_some()
    }

    fn on_close(&self, ctx: &mut dyn WorkerCtx, conn: ConnId, tag: u32) {
        // The event first: a connection gone from the set has its close queued already (what
        // a retiring version relies on, see Registry::retire).
        self.with_batch(ctx.worker(), tag, |b, _| b.push(conn, Kind::Close));
        self.lock_conns().remove(&conn);
    }

    fn has_pending(&self, worker: usize) -> bool {
        LuaService::has_pending(self, worker)
    }

    fn flush(&self, worker: usize, flushes: u64) {
        self.with_pending(worker, |batches| {
            for (batch, inbox) in batches.iter_mut().zip(&self.inboxes) {
                if batch.is_empty() {
                    continue;
                }
                batch.worker = worker;
                batch.flushes = flushes;
                // A full queue gives the batch back; it is retried at the next flush (its
                // messages already count toward the high-water mark, so readers get paused).
                if let Err(back) = inbox.push(std::mem::replace(batch, inbox.fresh_batch())) {
                    // The spare taken for it goes back: a queue full for a while would
                    // otherwise allocate and free one at every flush.
                    inbox.recycle(std::mem::replace(batch, back));
                }
                let (events, closes) = inbox.take_lost();
                if events > 0 {
                    crate::service_log!(
                        name: self.spec.name,
                        crate::log::Level::Warn,
                        "service {}: {events} event(s) came after its instance had stopped \
                         and were dropped ({closes} connection(s) end without onDisconnect)",
                        self.spec.name
                    );
                }
            }
        })
    }
}

impl LuaService {
    /// True when `worker` holds events a flush could not hand over (the instance queue was
    /// full): the worker must call `flush` again soon rather than sleep indefinitely.
    pub fn has_pending(&self, worker: usize) -> bool {
        self.with_pending(worker, |batches| batches.iter().any(|b| !b.is_empty()))
    }
}

impl Drop for LuaService {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(1));
    }
}
