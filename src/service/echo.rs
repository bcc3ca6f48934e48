//! The built-in echo service: answers every message on the worker thread itself.
//! It serves as the baseline the Lua services are measured against, and for protocol tests.

use super::{Flow, Service, WorkerCtx};
use crate::net::handle::ConnId;
use crate::ws::Opcode;

pub struct Echo {
    name: String,
    max_message_size: usize,
    subprotocol: Option<String>,
    extra_headers: Vec<(String, String)>,
}

impl Echo {
    pub fn new(name: impl Into<String>, max_message_size: usize) -> Echo {
        Echo {
            name: name.into(),
            max_message_size,
            subprotocol: None,
            extra_headers: Vec::new(),
        }
    }

    /// The handshake keys of its configuration (`proto_alias`, `extra_headers`).
    pub fn with_handshake(
        mut self,
        subprotocol: Option<String>,
        extra_headers: Vec<(String, String)>,
    ) -> Echo {
        self.subprotocol = subprotocol;
        self.extra_headers = extra_headers;
        self
    }
}

impl Service for Echo {
    fn name(&self) -> &str {
        &self.name
    }
    fn max_message_size(&self) -> usize {
        self.max_message_size
    }
    fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }
    fn extra_headers(&self) -> &[(String, String)] {
        &self.extra_headers
    }
    fn on_open(&self, _ctx: &mut dyn WorkerCtx, _conn: ConnId) -> Option<u32> {
        Some(0)
    }
    fn on_message(
        &self,
        ctx: &mut dyn WorkerCtx,
        conn: ConnId,
        _tag: u32,
        opcode: Opcode,
        payload: &[u8],
    ) -> Flow {
        ctx.send(conn, opcode, payload);
        Flow::Continue
    }
    fn on_close(&self, _ctx: &mut dyn WorkerCtx, _conn: ConnId, _tag: u32) {}
}
