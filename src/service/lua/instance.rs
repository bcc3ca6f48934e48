//! One instance: an OS thread that owns one LuaJIT state.
//!
//! Owns the life of the state: create it (sandbox), install the host modules, load the app
//! file, run `onStart` (or `init`), report success or a start-up error (with file and line) to
//! the starter, then serve batches from its inbox (or run `run()`) until stopped, and finally
//! call `onShutdown`. The state never leaves this thread; nothing here touches a socket.

use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
    pub thread: Option<JoinHandle<()>>,
    /// Receives once the thread is about to end (for a shutdown with a deadline).
    pub finished: Receiver<()>,
}

pub(crate) struct Shared {
    pub hub: Arc<Hub>,
    pub bcast: Arc<api::bcast::Bcast>,
    pub stop: Arc<Stop>,
}

/// How soon an instance with host answers held behind other threads' responses looks at them
/// again while no batch comes: at first, and at the longest (the wait doubles in between, so
/// that answers held for minutes cost little).
const HELD_POLL_FIRST: Duration = Duration::from_millis(1);
const HELD_POLL_MAX: Duration = Duration::from_millis(100);

/// How an instance's start ended (see `spawn`).
const STARTING: u8 = 0;
const READY: u8 = 1;
const TIMED_OUT: u8 = 2;

/// Starts instance `index` and waits until it is serving; `Err` carries the reason.
pub(crate) fn spawn(
    spec: Arc<ServiceSpec>,
    index: usize,
    shared: &Shared,
    inbox: Option<Arc<Inbox>>,
) -> Result<InstanceHandle, String> {
    let (ready_tx, ready_rx) = sync_channel::<Result<(), String>>(1);
    let (fin_tx, fin_rx) = sync_channel::<()>(1);
    let hub = Arc::clone(&shared.hub);
    let bcast = Arc::clone(&shared.bcast);
    let stop = Arc::clone(&shared.stop);
    let stop_on_timeout = Arc::clone(&shared.stop);
    let spec_timeout = spec.start_timeout;
    // Who decides whether the instance started: its thread, ready in time, or this one, once
    // the timeout passed. One compare-and-swap each, so the two can never both win.
    let outcome = Arc::new(AtomicU8::new(STARTING));
    let thread_outcome = Arc::clone(&outcome);
    let thread = std::thread::Builder::new()
        .name(format!("lua-{}#{index}", spec.name))
        .stack_size(STACK_BYTES)
        .spawn(move || {
            super::cstack::note_stack_start();
            let host = Rc::new(HostCtx::new(&spec, index, hub, bcast, stop));
            match load(&spec, &host) {
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
                Ok((lua, module, app)) => {
                    // What the state takes at the least, without the garbage of its loading.
                    let _ = lua.gc_collect();
                    crate::lapps_proto::tree_budget::set_floor(lua.used_memory());
                    // Not after the start timed out: the service was reported as failed, so
                    // its run() or onShutdown must not run now.
                    let ready = thread_outcome
                        .compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                    if ready {
                        let _ = ready_tx.send(Ok(()));
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
                            std::process::abort();
                        }
                    }
                }
            }
            let _ = fin_tx.send(());
        })
        .map_err(|e| format!("cannot spawn the instance thread: {e}"))?;
    let mut started = ready_rx.recv_timeout(spec_timeout);
    if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = started {
        let gave_up = outcome
            .compare_exchange(STARTING, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if gave_up {
            // Left behind: must_stop() turns true and blocked host calls return, so an init
            // that polls or waits ends; one that never does stays parked until the process
            // exits.
            stop_on_timeout.set();
            return Err(format!(
                "init/onStart did not finish within {spec_timeout:?} (it must return; loops belong in run())"
            ));
        }
        // Ready just now (or failed: its error is on the way).
        started = ready_rx
            .recv()
            .map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected);
    }
    match started.map_err(|_| ()) {
        Ok(Ok(())) => Ok(InstanceHandle {
            thread: Some(thread),
            finished: fin_rx,
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err("the instance thread died while starting".into())
        }
    }
}

enum App {
    Raw(RawApp),
    Standalone(StandaloneApp),
}

fn load(spec: &ServiceSpec, host: &Rc<HostCtx>) -> Result<(Lua, Table, App), String> {
    let lua = super::sandbox::new_state(spec, host).map_err(|e| one_line(&e))?;
    install_modules(&lua, spec, host)?;
    let path = spec.app_file.display().to_string();
    let source = std::fs::read(&spec.app_file).map_err(|e| format!("{path}: {e}"))?;
    host.reset_budget();
    // "@path" names the chunk after its file, so errors read "path:line: message".
    let chunk = lua.load(source).set_name(format!("@{path}"));
    // LuaJIT does not verify bytecode, and mlua's safe mode does not refuse it: only a state
    // the operator made unsafe (allow_ffi, allow_debug) may run a precompiled app.
    let chunk = if spec.allow_ffi || spec.allow_debug {
        chunk
    } else {
        chunk.set_mode(mlua::ChunkMode::Text)
    };
    let module: Value = chunk.eval().map_err(|e| one_line(&e))?;
    let Value::Table(module) = module else {
        return Err(format!("{path}: the app must return its module table"));
    };
    let app = if spec.standalone {
        let app = StandaloneApp::new(&module).map_err(|e| format!("{path}: {e}"))?;
        app.init(host).map_err(|e| format!("{path}: {e}"))?;
        App::Standalone(app)
    } else {
        let lapps = (spec.protocol == super::spec::Protocol::LAppS).then(|| {
            super::lapps::LappsState::new(spec.max_protocol_errors, spec.max_inbound_message_size)
        });
        let app = RawApp::new(&lua, &module, lapps).map_err(|e| format!("{path}: {e}"))?;
        if let Ok(Value::Function(f)) = module.get::<Value>("onStart") {
            host.reset_budget();
            f.call::<()>(())
                .map_err(|e| format!("{path}: onStart: {}", one_line(&e)))?;
        }
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
    api::install_globals(lua, host).map_err(lua_err)?;
    // Every state gets nljson, as in the original, so that its apps keep working.
    crate::lapps_proto::nljson::install(lua).map_err(lua_err)?;
    // `ws` is always there: any service may send to a handler it was given.
    api::ws::install(lua, host).map_err(lua_err)?;
    for name in &spec.preload {
        match name.as_str() {
            "time" => api::time::install(lua).map_err(lua_err)?,
            "nap" => api::nap::install(lua, host).map_err(lua_err)?,
            "bcast" => api::bcast::install(lua, host).map_err(lua_err)?,
            "cws" => api::cws::install(lua, host).map_err(lua_err)?,
            "mqr" => api::mqr::install(lua, host, spec.mqr_capacity).map_err(lua_err)?,
            "murmur" => api::murmur::install(lua).map_err(lua_err)?,
            "ws" | "nljson" => {}
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
                raw.handle(lua, host, &batch);
                inbox.handled_closes(&batch);
                // Responses other services sent may have let held answers go.
                host.held.release_all(host);
                for conn in inbox.done(batch.messages, batch.byte_len()) {
                    host.push(conn, Command::Resume { conn });
                }
                let (worker, flushes) = (batch.worker, batch.flushes);
                inbox.recycle(batch);
                host.flush();
                // After the flush: a worker that sees this finds the replies in its queue.
                inbox.set_completed(worker, flushes);
            }
        }
        (App::Standalone(sa), _) => sa.run(lua, host),
        (App::Raw(_), None) => {}
    }
    if let Ok(Value::Function(f)) = module.get::<Value>("onShutdown") {
        host.end_run();
        host.reset_budget();
        if let Err(e) = f.call::<()>(()) {
            crate::error!("{} onShutdown: {}", host.tag(), one_line(&e));
        }
    }
    host.flush();
}
