//! Services: what a connection is routed to by its request target.
//!
//! The IOWorker calls a [`Service`] on its own thread and never waits on it: a service either
//! answers at once (the built-in [`echo`]) or hands the work to its own threads (the Lua
//! instances) and answers later through the [`Hub`](crate::net::hub::Hub).

pub mod cws;
pub mod echo;
pub mod lua;
pub mod mqr;
pub mod registry;

use crate::net::handle::ConnId;
use crate::ws::Opcode;

/// What the worker does with the connection after `on_message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// The service's queue is above its high-water mark: stop reading this connection until
    /// the service posts `Command::Resume` for it. Nothing is lost: the message was taken.
    Pause,
    /// Close the connection with this close code.
    Close(u16),
}

/// Worker-side context handed to a service during a callback.
pub trait WorkerCtx {
    /// Index of the calling worker.
    fn worker(&self) -> usize;
    /// Queues a message on a connection of *this* worker (an immediate reply). The worker frames
    /// it (auto-fragmenting when configured). Returns false when `conn` is not open here.
    fn send(&mut self, conn: ConnId, opcode: Opcode, payload: &[u8]) -> bool;
}

/// What the Close of an ending connection waits for (see [`Service::on_ending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owed {
    /// Nothing: the worker closes at once.
    Nothing,
    /// The replies to everything the connection sent are in the worker's command queue
    /// already: the worker closes once it has taken the batches that were queued then (this
    /// loop iteration, or a few later behind a flood of heavy sends; the answer timeout waits
    /// for them), not behind whatever the service is busy with now (SPEC 8: a busy Lua
    /// instance must not hold a Close reply back).
    InCommands,
    /// The service still owes replies: it posts `Command::Close` for the connection behind
    /// them.
    Later,
}

/// A service as the IOWorkers see it. All methods are called on worker threads, must not
/// block, and must not panic on any input.
pub trait Service: Send + Sync + 'static {
    /// The service name (for logs).
    fn name(&self) -> &str;
    /// Largest message the service accepts; larger ones close the connection with 1009.
    fn max_message_size(&self) -> usize;
    /// The subprotocol to answer with (`proto_alias`), if any.
    fn subprotocol(&self) -> Option<&str> {
        None
    }
    /// Extra header lines for the 101 answer (`extra_headers`).
    fn extra_headers(&self) -> &[(String, String)] {
        &[]
    }
    /// What its connections speak (which sends they take from other services).
    fn speaks(&self) -> crate::net::hub::Speaks {
        crate::net::hub::Speaks::Raw
    }
    /// The upgrade was accepted and `conn` is open. The returned tag is stored with the
    /// connection and passed back to `on_message`/`on_close` (e.g. the instance it is bound to).
    /// None: the service no longer takes connections (a retired version the connection was
    /// routed to just before it was replaced); the worker closes it with 1001 and calls
    /// nothing more of the service for it.
    fn on_open(&self, ctx: &mut dyn WorkerCtx, conn: ConnId) -> Option<u32>;
    /// One complete text (valid UTF-8) or binary message.
    fn on_message(
        &self,
        ctx: &mut dyn WorkerCtx,
        conn: ConnId,
        tag: u32,
        opcode: Opcode,
        payload: &[u8],
    ) -> Flow;
    /// `conn` is ending: the peer broke the protocol or sent Close, and nothing more is read
    /// from it. `handed` is the worker's flush count (see [`Service::flush`]) when it last
    /// handed `conn` a message (0: never). A service that answers later (on its own threads)
    /// says what the worker's Close must wait for, so that no reply to a message it has taken
    /// is lost; the Close carries the worker's code, and the wait is bounded by the close
    /// timeout. Default: nothing, the worker closes at once.
    fn on_ending(&self, _worker: usize, _conn: ConnId, _tag: u32, _handed: u64) -> Owed {
        Owed::Nothing
    }
    /// Whether every message of a connection that this worker handed over by its flush
    /// `handed` has been handled (see [`Service::resume_when_handled`]). Default: yes (the
    /// built-in services answer at once).
    fn handled(&self, _worker: usize, _tag: u32, _handed: u64) -> bool {
        true
    }
    /// The worker stops reading `conn` because what it has handed over and not yet had handled,
    /// with what waits to be sent to it, passed the outbound high-water mark: the replies to
    /// come would otherwise pile up past the slow-consumer limit while the peer reads. True
    /// when the service sends `Command::Resume` once the messages handed so far are handled
    /// (the Lua host); false keeps reading (the default: nothing waits in a queue).
    fn resume_when_handled(&self, _worker: usize, _conn: ConnId, _tag: u32) -> bool {
        false
    }
    /// `conn` is gone, however it ended. Called exactly once for each `on_open`.
    fn on_close(&self, ctx: &mut dyn WorkerCtx, conn: ConnId, tag: u32);
    /// End of one worker loop iteration: hand over whatever was batched (one wake-up per batch).
    /// `flushes` counts the worker's calls so far: what is handed over now covers every message
    /// handed to the service while the count was `flushes` or less.
    fn flush(&self, _worker: usize, _flushes: u64) {}
    /// True when a `flush` left work behind (the service's queue was full): call `flush`
    /// again within the next loop iteration instead of sleeping without a timeout.
    fn has_pending(&self, _worker: usize) -> bool {
        false
    }
}
