//! The per-address connection limit (`max_connections_per_address` in ws.json).
//!
//! Owns only the count of open connections per peer address: a listener asks for a ticket at
//! accept ([`PerAddress::admit`]); the ticket travels with the connection to its worker and
//! gives its place back when dropped, whichever way the connection ends (closed, refused by a
//! worker, dropped at shutdown). A peer past the limit holds no ticket and is answered 503 by
//! a worker, like a full server; on a wss:// endpoint it is closed without an answer, so that
//! it costs no TLS handshake.
//!
//! Addresses are counted whole (an IPv4-mapped IPv6 address as its IPv4 one): many clients
//! behind one NAT share a count, and one IPv6 host can use many addresses of its /64. One
//! mutex-guarded map, taken once at accept and once at the end of a counted connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug)]
pub struct PerAddress {
    limit: u32,
    counts: Mutex<HashMap<IpAddr, u32>>,
}

/// One counted connection of `ip`; dropping it gives the place back.
#[derive(Debug)]
pub struct AddressTicket {
    owner: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// A limit of `limit` open connections per address; `None` for 0 (no limit).
    pub fn new(limit: u32) -> Option<Arc<PerAddress>> {
        (limit > 0).then(|| {
            Arc::new(PerAddress {
                limit,
                counts: Mutex::new(HashMap::new()),
            })
        })
    }

    /// A ticket for one more connection of `ip`, or `None` when it has `limit` open already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<AddressTicket> {
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(AddressTicket {
            owner: Arc::clone(self),
            ip,
        })
    }

    /// Open connections of `ip` now.
    pub fn count(&self, ip: IpAddr) -> u32 {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    /// The limit.
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

impl Drop for AddressTicket {
    fn drop(&mut self) {
        let mut counts = self
            .owner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip); // the map holds only addresses with connections
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_limit_tickets_and_a_dropped_one_gives_its_place_back() {
        let p = PerAddress::new(2).expect("a limit");
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t1 = p.admit(a).expect("first");
        let t2 = p.admit(a).expect("second");
        assert!(p.admit(a).is_none(), "a third one is over the limit");
        let _other = p.admit(b).expect("another address counts apart");
        assert_eq!(p.count(a), 2);
        drop(t1);
        let t3 = p.admit(a).expect("a place was given back");
        drop((t2, t3));
        assert_eq!(p.count(a), 0);
        assert_eq!(
            p.counts.lock().unwrap().len(),
            1,
            "only b is left in the map"
        );
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address() {
        let p = PerAddress::new(1).expect("a limit");
        let _t = p.admit("192.0.2.7".parse().unwrap()).unwrap();
        assert!(p.admit("::ffff:192.0.2.7".parse().unwrap()).is_none());
    }

    #[test]
    fn zero_is_no_limit() {
        assert!(PerAddress::new(0).is_none());
    }
}
