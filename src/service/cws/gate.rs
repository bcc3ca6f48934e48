//! One connection at a time in the CONNECTING state per remote address (RFC 6455 4.1, step 2:
//! "There MUST be no more than one connection in a CONNECTING state"; a client that opens
//! several connections to the same IP address and port, whatever names it reached them by,
//! makes them one after another, each once the one before has opened or failed).
//!
//! Per instance: its connections share one [`Gate`] (through their [`super::KeyPool`]); the
//! instances of a service are separate clients, as separate browsers are.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::rc::Rc;

/// The addresses a connection of the instance is connecting to (TCP, TLS, upgrade).
#[derive(Default)]
pub struct Gate {
    connecting: RefCell<HashSet<SocketAddr>>,
}

/// The right to connect to one address, held from the TCP connect to the upgrade's answer
/// (kept in the connection's phase: it goes when the phase does, however it ends).
pub struct Ticket {
    gate: Rc<Gate>,
    addr: SocketAddr,
}

impl Gate {
    /// Whether no connection holds the ticket for `addr`.
    pub fn is_free(&self, addr: SocketAddr) -> bool {
        !self.connecting.borrow().contains(&addr)
    }

    /// The ticket for `addr`, or None while another connection holds it.
    pub fn enter(self: &Rc<Self>, addr: SocketAddr) -> Option<Ticket> {
        self.connecting.borrow_mut().insert(addr).then(|| Ticket {
            gate: Rc::clone(self),
            addr,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.connecting.borrow_mut().remove(&self.addr);
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({})", self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ticket_per_address_until_it_is_dropped() {
        let gate = Rc::new(Gate::default());
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:81".parse().unwrap();
        let first = gate.enter(a).expect("free");
        assert!(gate.enter(a).is_none(), "held");
        let other = gate.enter(b).expect("another address is free");
        drop(first);
        assert!(gate.enter(a).is_some(), "free again");
        drop(other);
    }
}
