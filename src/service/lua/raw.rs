//! Network-service dispatch: a batch of connection events into the app's callbacks, for the
//! RAW protocol (the message as it came) and the LAppS protocol (see [`super::lapps`]).
//!
//! Owns the rules of a network service's callbacks: `onMessage` returning anything but `true`
//! closes that connection with 1000; a Lua error is logged with its traceback and closes that
//! connection with 1011 (RAW) or is answered with -32603 (LAppS requests); `onDisconnect` runs
//! once per connection, after its last `onMessage`.
//! It never blocks and never posts itself: commands go to the instance's outbox.

use mlua::{Function, Lua, Table, Value};

use super::api::handler_value;
use super::fastpath::{call_messages, Failed};
use super::host::{one_line, one_line_str, HostCtx};
use super::inbox::{Batch, Event, Kind};
use super::lapps::LappsState;
use super::lapps_fast::call_requests;
use crate::net::handle::ConnId;

pub(crate) struct RawApp {
    on_message: Function,
    on_disconnect: Option<Function>,
    /// The message handler of the RAW fast path (see [`super::fastpath`]).
    traceback: Function,
    /// The message handler `onDisconnect` is called under (`fastpath::call_traced`).
    handler: Function,
    /// Set for LAppS-protocol services.
    lapps: Option<super::lapps::LappsState>,
}

impl RawApp {
    /// Checks the module table has what a RAW service needs.
    pub fn new(
        lua: &Lua,
        module: &Table,
        lapps: Option<super::lapps::LappsState>,
    ) -> Result<RawApp, String> {
        let on_message = match module.get::<Value>("onMessage") {
            Ok(Value::Function(f)) => f,
            _ => return Err("the module has no onMessage function".into()),
        };
        let on_disconnect = match module.get::<Value>("onDisconnect") {
            Ok(Value::Function(f)) => Some(f),
            _ => None,
        };
        let traceback = super::fastpath::traceback_function(lua).map_err(|e| e.to_string())?;
        let handler = super::fastpath::callback_handler(lua).map_err(|e| e.to_string())?;
        Ok(RawApp {
            on_message,
            on_disconnect,
            traceback,
            handler,
            lapps,
        })
    }

    pub fn handle(&self, lua: &Lua, host: &HostCtx, batch: &Batch) {
        // Runs of messages go through the fast paths, opens and closes one by one.
        let mut rest = &batch.events[..];
        while !rest.is_empty() {
            let run = rest
                .iter()
                .position(|e| !matches!(e.kind, Kind::Message(_)))
                .unwrap_or(rest.len());
            if run == 0 {
                self.handle_event(lua, host, &rest[0]);
                rest = &rest[1..];
                continue;
            }
            match &self.lapps {
                Some(l) => self.lapps_messages(lua, host, l, batch, &rest[..run]),
                None => self.raw_messages(lua, host, batch, &rest[..run]),
            }
            rest = &rest[run..];
        }
    }

    fn lapps_messages(
        &self,
        lua: &Lua,
        host: &HostCtx,
        lapps: &LappsState,
        batch: &Batch,
        run: &[Event],
    ) {
        let done = call_requests(
            lua,
            host,
            lapps,
            &self.on_message,
            &self.traceback,
            batch,
            run,
            close_because,
        );
        if let Err(err) = done {
            // The views' metatable could not be made (out of memory): the run is not handled;
            // close its connections rather than leave their requests unanswered.
            super::collect::after_failed_callback(lua, &err);
            crate::service_log!(
                host,
                crate::log::Level::Error,
                "{} onMessage: {}",
                host.tag(),
                one_line(&err)
            );
            for e in run {
                if !host.closing.borrow().contains(&e.conn) {
                    close(host, e.conn, 1011);
                }
            }
        }
    }

    fn raw_messages(&self, lua: &Lua, host: &HostCtx, batch: &Batch, run: &[Event]) {
        let failed = {
            // Borrowed per message, not across the calls: a host function onMessage reaches
            // may add to it (as LAppS apps' do), and a borrow held would make that panic.
            let skip = |c: ConnId| {
                let closing = host.closing.borrow();
                !closing.is_empty() && closing.contains(&c)
            };
            call_messages(
                lua,
                host,
                &self.on_message,
                &self.traceback,
                batch,
                run,
                skip,
            )
        };
        for f in failed {
            match f {
                Failed::Returned(conn) => close(host, conn, 1000),
                Failed::Raised { conn, error, .. } => {
                    if host.closing.borrow().contains(&conn) {
                        continue;
                    }
                    let error = one_line_str(&error);
                    crate::service_log!(
                        host,
                        crate::log::Level::Error,
                        "{} onMessage failed, closing {:#x} with 1011: {}",
                        host.tag(),
                        conn.as_u64(),
                        error
                    );
                    close(host, conn, 1011);
                }
                Failed::NoRoom { conn, bytes } => {
                    if host.closing.borrow().contains(&conn) {
                        continue;
                    }
                    // Not the app's error: the message never reached it.
                    crate::service_log!(
                        host,
                        crate::log::Level::Error,
                        "{} closing {:#x} with 1011: its message of {bytes} bytes does not fit \
                         in the state beside what it holds ({} bytes in use after a full \
                         collection, memory_limit {} bytes); onMessage did not run",
                        host.tag(),
                        conn.as_u64(),
                        lua.used_memory(),
                        crate::lapps_proto::tree_budget::limit()
                    );
                    close(host, conn, 1011);
                }
            }
        }
    }

    /// An event other than a message (runs of messages go through the fast paths, `handle`).
    fn handle_event(&self, lua: &Lua, host: &HostCtx, e: &Event) {
        match e.kind {
            Kind::Open | Kind::Message(_) => {}
            // Everything before it is answered (queued ahead of this close, whose code the
            // worker replaces with its own).
            // On a LAppS connection the close also waits for the responses its app still
            // owes (it answers later than it is called): see HeldAnswers::drain.
            // A connection this instance let go (`HostCtx::go_away`) waits for them as well;
            // one whose Close it queued itself does not.
            Kind::Drain => {
                if !host.closed_here(e.conn) && host.held.drain(host, e.conn) {
                    close(host, e.conn, 1000);
                }
            }
            Kind::Close => {
                host.closing.borrow_mut().remove(&e.conn);
                host.leaving.borrow_mut().remove(&e.conn);
                if let Some(l) = &self.lapps {
                    l.forget(e.conn);
                    host.held.forget(host, e.conn);
                }
                host.bcast.drop_conn(e.conn);
                if let Some(f) = &self.on_disconnect {
                    host.reset_budget();
                    let called = super::fastpath::call_traced::<()>(
                        lua,
                        &self.handler,
                        f,
                        handler_value(e.conn),
                    );
                    if let Err(err) = called {
                        super::collect::after_failed_callback(lua, &err);
                        crate::service_log!(
                            host,
                            crate::log::Level::Error,
                            "{} onDisconnect: {}",
                            host.tag(),
                            one_line(&err)
                        );
                    }
                }
            }
        }
    }
}

/// Closes `conn` with `code`; its messages still queued are skipped from now on.
fn close(host: &HostCtx, conn: ConnId, code: u16) {
    close_because(host, conn, code, "");
}

/// [`close`] with `reason` in the Close frame (none when empty).
fn close_because(host: &HostCtx, conn: ConnId, code: u16, reason: &str) {
    host.closing.borrow_mut().insert(conn);
    host.close_with(conn, code, (!reason.is_empty()).then(|| reason.into()));
}
