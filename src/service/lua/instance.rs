//! One instance: an OS thread that owns one LuaJIT state.
//!
//! Owns the life of the state: create it (sandbox), install the host modules, load the app
//! file, run `onStart` (or `init`), report success or a start-up error (with file and line) to
//! the starter, then serve batches from its inbox (or run `run()`) until stopped, and finally
//! call `onShutdown`. The state never leaves this thread; nothing here touches a socket.

use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mlua::{Lua, Table, Value};

use super::api;
use super::cstack::STACK_BYTES;
use super::host::{one_line, HostCtx, Stop};
use super::inbox::{Inbox, Next};
use super::raw::RawApp;
use super::spec::ServiceSpec;
use super::standalone::StandaloneApp;
use crate::net::hub::{Command, Hub};

/// What the starter keeps of a running instance.
pub(crate) struct InstanceHandle {
    /// Its `instance_id`.
    pub index: usize,
    pub thread: Option<JoinHandle<()>>,
    /// Receives once the thread is about to end (for a shutdown with a deadline).
    pub finished: Receiver<()>,
}

pub(crate) struct Shared {
    pub hub: Arc<Hub>,
    pub bcast: Arc<api::bcast::Bcast>,
    pub stop: Arc<Stop>,
    pub memory: Arc<super::lua_memory::LuaMemory>,
    pub run_state: Arc<super::run_state::RunState>,
}

/// How soon an instance with host answers held behind other threads' responses looks at them
/// again while no batch comes: at first, and at the longest (the wait doubles in between, so
/// that answers held for minutes cost little).
const HELD_POLL_FIRST: Duration = Duration::from_millis(1);
const HELD_POLL_MAX: Duration = Duration::from_millis(100);

/// How an instance's start ended (see `spawn` and `start_all`).
const STARTING: u8 = 0;
const READY: u8 = 1;
const TIMED_OUT: u8 = 2;

/// How instance N's start ended, as its thread tells `start_all`.
type Report = (usize, Result<(), String>);

/// An instance thread whose start `start_all` waits for.
struct Starting {
    thread: JoinHandle<()>,
    finished: Receiver<()>,
    outcome: Arc<AtomicU8>,
    /// When it is given up on; None once it is ready and its word on the way.
    deadline: Option<Instant>,
}

/// The starts of one service's instances, as `start_all` learns how they end.
struct Starts<'a> {
    /// By index, as far as started; None once its start has ended (or was given up on).
    starting: Vec<Option<Starting>>,
    serving: Vec<InstanceHandle>,
    failure: Option<String>,
    stop: &'a Stop,
    /// The service's name, for the threads given up on (see `left_behind`).
    service: &'a str,
}

impl Starts<'_> {
    fn under_way(&self) -> usize {
        self.starting.iter().flatten().count()
    }

    /// The earliest deadline of a start under way; None when every one left is ready.
    fn next_deadline(&self) -> Option<Instant> {
        self.starting
            .iter()
            .flatten()
            .filter_map(|s| s.deadline)
            .min()
    }

    /// Instance `index` reported how its start ended.
    fn report(&mut self, index: usize, result: Result<(), String>) {
        // None: given up on; its late failure is not news.
        let Some(s) = self.starting.get_mut(index).and_then(Option::take) else {
            return;
        };
        match result {
            Ok(()) => self.serving.push(InstanceHandle {
                index,
                thread: Some(s.thread),
                finished: s.finished,
            }),
            Err(e) => {
                let _ = s.thread.join();
                self.fail(index, e);
            }
        }
    }

    /// Takes every word already sent.
    fn take_reports(&mut self, reports: &Receiver<Report>) {
        while let Ok((index, result)) = reports.try_recv() {
            self.report(index, result);
        }
    }

    /// The service cannot start: the first reason is kept, the instances still starting are
    /// given up on (their `run()` and `onShutdown` never run) and see `must_stop()`, so that
    /// an `init` waiting in a host call returns; `start_all` starts no more.
    fn fail(&mut self, index: usize, why: String) {
        self.failure
            .get_or_insert(format!("instance {index}: {why}"));
        for (i, slot) in self.starting.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(give_up) {
                if let Some(s) = slot.take() {
                    super::left_behind::note(self.service, i, "its start was given up", s.finished);
                }
            } else if let Some(s) = slot {
                s.deadline = None;
            }
        }
        // After giving up, not before: an init woken by must_stop() could otherwise finish
        // and become ready first, then run run() and onShutdown in a service that failed.
        self.stop.set_start_failed();
        self.stop.set();
    }

    /// Gives up on the starts whose deadline has passed.
    fn time_out(&mut self, reports: &Receiver<Report>, timeout: Duration) {
        // What came in before the deadline is news, not a timeout.
        self.take_reports(reports);
        let now = Instant::now();
        for index in 0..self.starting.len() {
            let Some(s) = &self.starting[index] else {
                continue;
            };
            if s.deadline.is_none_or(|d| d > now) {
                continue;
            }
            if s.thread.is_finished() {
                // Its word, if it sent one, is in by now.
                self.take_reports(reports);
                if self.starting[index].take().is_some() {
                    self.fail(index, DIED.into());
                }
            } else if let Some(s) = self.starting[index].as_mut() {
                if give_up(s) {
                    // Left behind: must_stop() turns true and blocked host calls return, so
                    // an init that polls or waits ends; one that never does stays parked
                    // until the process exits.
                    if let Some(s) = self.starting[index].take() {
                        super::left_behind::note(
                            self.service,
                            index,
                            super::left_behind::START_TIMED_OUT,
                            s.finished,
                        );
                    }
                    self.fail(
                        index,
                        format!(
                            "{} {timeout:?} (it must return; loops belong in run())",
                            super::left_behind::START_TIMEOUT_TEXT
                        ),
                    );
                } else {
                    s.deadline = None;
                }
            }
        }
    }
}

/// Gives up on a start, unless it became ready first (then its word is on the way).
fn give_up(s: &Starting) -> bool {
    s.outcome
        .compare_exchange(STARTING, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// How many instances of a service start at the same time: one per CPU (each may use a CPU
/// for its whole start timeout), at least one.
pub(crate) fn start_width(instances: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpus.min(instances).max(1)
}

/// Starts the instances of a service, one per CPU at a time (each loads its app and runs
/// `onStart` or `init` on its own thread, within its own start timeout), and waits until each
/// serves, fails, or passes its timeout. Returns the instances that serve and, when any did
/// not start, the first reason (in the order the starter learnt them): the instances still
/// starting then are given up on and the rest are not started (see `Starts::fail`); the
/// caller stops whatever serves.
pub(crate) fn start_all(
    spec: &Arc<ServiceSpec>,
    shared: &Shared,
    inboxes: &[Arc<Inbox>],
) -> (Vec<InstanceHandle>, Option<String>) {
    // Room for every instance's one word: a thread never waits to report.
    let (ready_tx, ready_rx) = sync_channel::<Report>(spec.instances);
    let mut ready_tx = Some(ready_tx);
    let width = start_width(spec.instances);
    let mut starts = Starts {
        starting: Vec::with_capacity(spec.instances),
        serving: Vec::with_capacity(spec.instances),
        failure: None,
        stop: &shared.stop,
        service: &spec.name,
    };
    loop {
        while let Some(tx) = &ready_tx {
            let index = starts.starting.len();
            if starts.failure.is_some() || index == spec.instances {
                // Nothing more to start: the channel ends once every thread has reported or
                // ended.
                ready_tx = None;
                break;
            }
            if starts.under_way() == width {
                break;
            }
            let inbox = inboxes.get(index).cloned();
            match spawn(Arc::clone(spec), index, shared, inbox, tx.clone()) {
                Ok(s) => starts.starting.push(Some(s)),
                Err(e) => {
                    starts.starting.push(None);
                    starts.fail(index, e);
                }
            }
        }
        if starts.under_way() == 0 && ready_tx.is_none() {
            break;
        }
        let got = match starts.next_deadline() {
            Some(deadline) => {
                ready_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            }
            // Every start left is ready: its word is on the way.
            None => ready_rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok((index, result)) => starts.report(index, result),
            Err(RecvTimeoutError::Timeout) => starts.time_out(&ready_rx, spec.start_timeout),
            Err(RecvTimeoutError::Disconnected) => {
                // Every thread has reported or ended: those left ended without a word.
                for index in 0..starts.starting.len() {
                    if let Some(s) = starts.starting[index].take() {
                        let _ = s.thread.join();
                        starts.fail(index, DIED.into());
                    }
                }
            }
        }
    }
    (starts.serving, starts.failure)
}

const DIED: &str = "the instance thread died while starting";

/// Starts instance `index`'s thread; it reports on `ready_tx` how its start ended (unless
/// `start_all` gave up on it first, see `outcome`).
fn spawn(
    spec: Arc<ServiceSpec>,
    index: usize,
    shared: &Shared,
    inbox: Option<Arc<Inbox>>,
    ready_tx: SyncSender<Report>,
) -> Result<Starting, String> {
    let (fin_tx, fin_rx) = sync_channel::<()>(1);
    let spec_timeout = spec.start_timeout;
    let hub = Arc::clone(&shared.hub);
    let bcast = Arc::clone(&shared.bcast);
    let stop = Arc::clone(&shared.stop);
    let memory = Arc::clone(&shared.memory);
    let run_state = Arc::clone(&shared.run_state);
    // Who decides whether the instance started: its thread, ready in time, or the starter,
    // once the timeout passed. One compare-and-swap each, so the two can never both win.
    let outcome = Arc::new(AtomicU8::new(STARTING));
    let thread_outcome = Arc::clone(&outcome);
    let thread = std::thread::Builder::new()
        .name(format!("lua-{}#{index}", spec.name))
        .stack_size(STACK_BYTES)
        .spawn(move || {
            super::cstack::note_stack_start();
            let host = Rc::new(HostCtx::new(
                &spec, index, hub, bcast, stop, memory, run_state,
            ));
            // A bug of ours while loading (std printed it) fails this start, at once.
            let loaded =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(&spec, &host)))
                    .unwrap_or_else(|_| Err(DIED.into()));
            match loaded {
                Err(e) => {
                    let _ = ready_tx.send((index, Err(e)));
                }
                Ok((lua, module, app)) => {
                    // What the state takes at the least, without the garbage of its loading.
                    let _ = lua.gc_collect();
                    crate::lapps_proto::tree_budget::set_floor(lua.used_memory());
                    host.note_memory(lua.used_memory());
                    // Not after the start timed out: the service was reported as failed, so
                    // its run() or onShutdown must not run now.
                    let ready = thread_outcome
                        .compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                    if ready {
                        let _ = ready_tx.send((index, Ok(())));
                        // The starter knows when every thread has reported or ended.
                        drop(ready_tx);
                        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            serve(&lua, &host, &module, app, inbox.as_deref())
                        }));
                        if served.is_err() {
                            // A bug of ours reached the top of the instance (std printed it):
                            // its connections would wait for ever on a queue nobody reads, and
                            // the service would look healthy. Ended as an IO worker's is
                            // (`crate::fatal`), so that the service manager restarts lapps.
                            crate::error!(
                                "{} panicked: aborting, so that the service manager restarts lapps",
                                host.tag()
                            );
                            crate::log_writer::flush(std::time::Duration::from_secs(1));
                            std::process::abort();
                        }
                    }
                }
            }
            let _ = fin_tx.send(());
        })
        .map_err(|e| format!("cannot spawn the instance thread: {e}"))?;
    Ok(Starting {
        thread,
        finished: fin_rx,
        outcome,
        deadline: Some(Instant::now() + spec_timeout),
    })
}

enum App {
    Raw(RawApp),
    Standalone(StandaloneApp),
}

fn load(spec: &ServiceSpec, host: &Rc<HostCtx>) -> Result<(Lua, Table, App), String> {
    let lua = super::sandbox::new_state(spec, host).map_err(|e| one_line(&e))?;
    install_modules(&lua, spec, host)?;
    let path = spec.app_file.display().to_string();
    let source = crate::file_read::read_regular(&spec.app_file, crate::file_read::SOURCE_MAX)
        .map_err(|e| format!("{path}: {e}"))?;
    host.reset_budget();
    // An app file that is one expression (`require "impl"`) gives its value, as a block that
    // returns it: tried first, as mlua's `eval` does, but parenthesised, so that a call stays
    // a frame of the chunk (a tail call, `return error("...")`, would take the file and line
    // from the error it raises). On the same line as the file's first, so lines keep their
    // numbers; the newline ends a comment on its last line.
    // A statement's optional `;` ends the expression, and stays outside the parentheses.
    let end = source
        .iter()
        .rposition(|b| !b.is_ascii_whitespace() && *b != b';')
        .map_or(0, |i| i + 1);
    let mut expression = b"return (".to_vec();
    expression.extend_from_slice(&source[..end]);
    expression.extend_from_slice(b"\n)");
    let load = |code: Vec<u8>| {
        // "@path" names the chunk after its file, so errors read "path:line: message".
        let chunk = lua.load(code).set_name(format!("@{path}"));
        // LuaJIT does not verify bytecode, and mlua's safe mode does not refuse it: only a
        // state the operator made unsafe (allow_ffi, allow_debug) may run a precompiled app.
        if spec.allow_ffi || spec.allow_debug {
            chunk
        } else {
            chunk.set_mode(mlua::ChunkMode::Text)
        }
    };
    let main = match load(expression).into_function() {
        Ok(f) => f,
        Err(_) => load(source).into_function().map_err(|e| one_line(&e))?,
    };
    let module: Value = main.call(()).map_err(|e| one_line(&e))?;
    let Value::Table(module) = module else {
        return Err(format!("{path}: the app must return its module table"));
    };
    let app = if spec.standalone {
        let app = StandaloneApp::new(&lua, &module).map_err(|e| format!("{path}: {e}"))?;
        app.init(&lua, host).map_err(|e| format!("{path}: {e}"))?;
        App::Standalone(app)
    } else {
        let lapps = (spec.protocol == super::spec::Protocol::LAppS).then(|| {
            super::lapps::LappsState::new(spec.max_protocol_errors, spec.max_inbound_message_size)
        });
        // A fresh budget for the lookup too: the module may be a proxy whose __index runs Lua
        // (one that raises for a name it lacks means: no such callback, as for onDisconnect).
        host.reset_budget();
        if let Ok(Value::Function(f)) = module.get::<Value>("onStart") {
            let traceback = super::fastpath::callback_handler(&lua).map_err(|e| one_line(&e))?;
            super::fastpath::call_traced::<()>(&lua, &traceback, &f, ())
                .map_err(|e| format!("{path}: onStart: {}", one_line(&e)))?;
        }
        // The callbacks as onStart left them: an app may set them there.
        host.reset_budget();
        let app = RawApp::new(&lua, &module, lapps).map_err(|e| format!("{path}: {e}"))?;
        host.flush();
        App::Raw(app)
    };
    Ok((lua, module, app))
}

/// The `preload` names the host provides itself (`install_modules`); any other is `require`d.
pub(crate) const HOST_MODULES: [&str; 8] = [
    "time", "nap", "bcast", "cws", "mqr", "murmur", "ws", "nljson",
];

fn install_modules(lua: &Lua, spec: &ServiceSpec, host: &Rc<HostCtx>) -> Result<(), String> {
    let lua_err = |e: mlua::Error| one_line(&e);
    // The errors of a host module's functions reach the app as strings (`error_values`).
    let strings = |name: &str, except: &[&str]| {
        super::error_values::wrap_module(lua, name, except).map_err(lua_err)
    };
    api::install_globals(lua, host).map_err(lua_err)?;
    // Every state gets nljson, as in the original, so that its apps keep working.
    crate::lapps_proto::nljson::install(lua).map_err(lua_err)?;
    strings("nljson", &[])?;
    // `ws` is always there: any service may send to a handler it was given. Its two fast
    // paths wrap the general functions they fall back to themselves.
    api::ws::install(lua, host).map_err(lua_err)?;
    strings("ws", &["send", "send_response"])?;
    // So is `bcast`: the original gave it to every standalone and LAppS service without a
    // `preload` entry (its example configs list none), and a channel costs nothing until made.
    api::bcast::install(lua, host).map_err(lua_err)?;
    strings("bcast", &[])?;
    for name in &spec.preload {
        match name.as_str() {
            // Nothing in `time` can fail.
            "time" => api::time::install(lua).map_err(lua_err)?,
            "nap" => {
                api::nap::install(lua, host).map_err(lua_err)?;
                strings("nap", &[])?;
            }
            "cws" => {
                api::cws::install(lua, host).map_err(lua_err)?;
                strings("cws", &[])?;
            }
            "mqr" => {
                api::mqr::install(lua, host, spec.mqr_capacity).map_err(lua_err)?;
                strings("mqr", &[])?;
            }
            "murmur" => {
                api::murmur::install(lua).map_err(lua_err)?;
                strings("murmur", &[])?;
            }
            "ws" | "nljson" | "bcast" => {}
            n => {
                debug_assert!(!HOST_MODULES.contains(&n));
                let m: Value = lua
                    .load(format!("return require({n:?})"))
                    .eval()
                    .map_err(|e| format!("preload {n}: {}", one_line(&e)))?;
                lua.globals().set(n, m).map_err(lua_err)?;
            }
        }
    }
    Ok(())
}

fn serve(lua: &Lua, host: &HostCtx, module: &Table, app: App, inbox: Option<&Inbox>) {
    match (&app, inbox) {
        (App::Raw(raw), Some(inbox)) => {
            let mut held_poll = HELD_POLL_FIRST;
            let mut collected_at = lua.used_memory();
            loop {
                // Answers held behind responses another instance or service sends are looked
                // at again while any wait, not only after the next batch (which may never
                // come: the client may be waiting for those very answers).
                let limit = (!host.held.is_empty()).then_some(held_poll);
                let batch = match inbox.next_within(limit) {
                    Next::Batch(batch) => batch,
                    Next::TimedOut => {
                        host.held.release_all(host);
                        host.flush();
                        held_poll = (held_poll * 2).min(HELD_POLL_MAX);
                        continue;
                    }
                    Next::Stopped => break,
                };
                held_poll = HELD_POLL_FIRST;
                inbox.busy().begin();
                raw.handle(lua, host, &batch);
                if let Some(took) = inbox.busy().end() {
                    crate::info!(
                        "{} busy no longer: the batch of messages that held it is done after {}",
                        host.tag(),
                        crate::time_fmt::uptime(took)
                    );
                }
                inbox.handled_closes(&batch);
                // Responses other services sent may have let held answers go.
                host.held.release_all(host);
                for conn in inbox.done(batch.messages, batch.byte_len()) {
                    host.push(conn, Command::Resume { conn });
                }
                for &conn in &batch.resume_after {
                    host.push(conn, Command::Resume { conn });
                }
                let (worker, flushes) = (batch.worker, batch.flushes);
                inbox.recycle(batch);
                host.flush();
                // After the flush: a worker that sees this finds the replies in its queue.
                inbox.set_completed(worker, flushes);
                collect_when_idle(lua, host, inbox, &mut collected_at);
            }
        }
        (App::Standalone(sa), _) => {
            sa.run(lua, host);
            // From here on a stop that takes too long is onShutdown's (see `why_not_stopped`).
            host.run_state.returned(host.instance);
        }
        (App::Raw(_), None) => {}
    }
    // A fresh budget before the lookup, which may run Lua (a module proxied by __index): the
    // last callback may have spent all of its own.
    host.end_run();
    host.reset_budget();
    // A lookup that raises (a strict module without it) means: none.
    if let Ok(Value::Function(f)) = module.get::<Value>("onShutdown") {
        let called = super::fastpath::callback_handler(lua)
            .and_then(|traceback| super::fastpath::call_traced::<()>(lua, &traceback, &f, ()));
        if let Err(e) = called {
            crate::error!("{} onShutdown: {}", host.tag(), one_line(&e));
        }
    }
    host.flush();
}

/// Growth of a state since its last idle collection that makes the next idle moment collect.
const IDLE_GC_GROWTH: usize = 16 << 20;

/// An instance with nothing to do runs no GC step (LuaJIT steps as it allocates): the garbage
/// of the large messages it handled (their strings) stays in the state, where the allocator's
/// trim (`memory_trim`) cannot reach it, until the next message. A re-trial: 64 MiB kept by
/// two echo instances after sixteen 16 MB messages, with no connection left. So when the
/// state has grown by [`IDLE_GC_GROWTH`] since the last such collection and nothing waits,
/// the instance collects now. `collected_at` follows the state's memory down, so growth is
/// counted from its least.
fn collect_when_idle(lua: &Lua, host: &HostCtx, inbox: &Inbox, collected_at: &mut usize) {
    let used = lua.used_memory();
    host.note_memory(used);
    *collected_at = (*collected_at).min(used);
    if used > collected_at.saturating_add(IDLE_GC_GROWTH) && inbox.queued().0 == 0 {
        // A finalizer's error is the app's, and changes nothing here.
        let _ = lua.gc_collect();
        *collected_at = lua.used_memory();
        host.note_memory(*collected_at);
        crate::debug!(
            "{} idle: collected {} MiB of Lua garbage ({} MiB in use)",
            host.tag(),
            used.saturating_sub(*collected_at) >> 20,
            *collected_at >> 20
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_instance_per_cpu_starts_at_a_time() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(start_width(1), 1);
        assert_eq!(start_width(cpus), cpus);
        assert_eq!(start_width(cpus + 5), cpus);
        assert_eq!(start_width(0), 1);
    }
}
