//! The per-address connection limit (`max_connections_per_address` in ws.json).
//!
//! Owns only the count of open connections per peer address: a listener asks for a ticket at
//! accept ([`PerAddress::admit`]); the ticket travels with the connection to its worker and
//! gives its place back when dropped, whichever way the connection ends (closed, refused by a
//! worker, dropped at shutdown). A peer past the limit holds no ticket and is answered 503 by
//! a worker, like a full server; on a wss:// endpoint it is closed without an answer, so that
//! it costs no TLS handshake.
//!
//! IPv4 addresses are counted whole (an IPv4-mapped IPv6 address as its IPv4 one), so many
//! clients behind one NAT share a count. IPv6 addresses are counted by network, their first
//! `ipv6_prefix` bits (64 by default): one subscriber is given at least a /64 and may use any
//! of its addresses, so counting them whole would let one host open the limit again from
//! each. One mutex-guarded map, taken once at accept and once at the end of a counted
//! connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// `64:ff9b::/96`, the NAT64 well-known prefix: an IPv4 address in its last 32 bits.
const NAT64_WELL_KNOWN: u128 = 0x0064_ff9b_u128 << 96;

#[derive(Debug)]
pub struct PerAddress {
    limit: u32,
    ipv6_prefix: u8,
    counts: Mutex<HashMap<IpAddr, u32>>,
}

/// One counted connection of `ip`; dropping it gives the place back.
#[derive(Debug)]
pub struct AddressTicket {
    owner: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// A limit of `limit` open connections per IPv4 address and per IPv6 network of
    /// `ipv6_prefix` bits (at most 128: a whole address); `None` for a limit of 0 (none).
    pub fn new(limit: u32, ipv6_prefix: u8) -> Option<Arc<PerAddress>> {
        (limit > 0).then(|| {
            Arc::new(PerAddress {
                limit,
                ipv6_prefix: ipv6_prefix.min(128),
                counts: Mutex::new(HashMap::new()),
            })
        })
    }

    /// What `ip` is counted under: its IPv4 address (also one reached through a NAT64
    /// gateway of the well-known prefix `64:ff9b::/96`, RFC 6052, which is an IPv4 client),
    /// or its IPv6 network (the address with the bits past the prefix cleared).
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) if u128::from(v6) >> 32 == NAT64_WELL_KNOWN >> 32 => {
                IpAddr::V4((u128::from(v6) as u32).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let kept = u128::MAX
                    .checked_shl(128 - u32::from(self.ipv6_prefix))
                    .unwrap_or(0);
                IpAddr::V6((bits & kept).into())
            }
            v4 => v4,
        }
    }

    /// The counted address or network of `ip`, for log lines: `192.0.2.1`, `2001:db8::/64`.
    pub fn describe(&self, ip: IpAddr) -> String {
        match self.key(ip) {
            IpAddr::V6(net) if self.ipv6_prefix < 128 => format!("{net}/{}", self.ipv6_prefix),
            key => key.to_string(),
        }
    }

    /// A ticket for one more connection of `ip`, or `None` when it has `limit` open already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<AddressTicket> {
        let ip = self.key(ip);
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
        counts.get(&self.key(ip)).copied().unwrap_or(0)
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
        let p = PerAddress::new(2, 64).expect("a limit");
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
        let p = PerAddress::new(1, 64).expect("a limit");
        let _t = p.admit("192.0.2.7".parse().unwrap()).unwrap();
        assert!(p.admit("::ffff:192.0.2.7".parse().unwrap()).is_none());
    }

    #[test]
    fn ipv6_addresses_count_by_their_network_of_the_prefix() {
        let p = PerAddress::new(2, 64).expect("a limit");
        let _a = p.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let _b = p
            .admit("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap())
            .unwrap();
        assert!(
            p.admit("2001:db8:1:2:abcd::9".parse().unwrap()).is_none(),
            "a third address of the same /64 is over the limit"
        );
        let _c = p
            .admit("2001:db8:1:3::1".parse().unwrap())
            .expect("the next /64");
        assert_eq!(
            p.describe("2001:db8:1:2::7".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(p.describe("192.0.2.1".parse().unwrap()), "192.0.2.1");

        // 128 counts each address whole; 0 makes all of IPv6 one network.
        let whole = PerAddress::new(1, 128).expect("a limit");
        let _d = whole.admit("2001:db8::1".parse().unwrap()).unwrap();
        let _e = whole
            .admit("2001:db8::2".parse().unwrap())
            .expect("another address");
        assert_eq!(
            whole.describe("2001:db8::2".parse().unwrap()),
            "2001:db8::2"
        );
        let all = PerAddress::new(1, 0).expect("a limit");
        let _f = all.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(all.admit("fe80::1".parse().unwrap()).is_none());
        assert_eq!(all.describe("fe80::1".parse().unwrap()), "::/0");
        // Odd prefixes clear the bits past them inside a group.
        let p36 = PerAddress::new(1, 36).expect("a limit");
        assert_eq!(
            p36.key("2001:db8:ffff::1".parse().unwrap()),
            "2001:db8:f000::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_nat64_address_of_the_well_known_prefix_is_its_ipv4_client() {
        let p = PerAddress::new(1, 64).expect("a limit");
        let _t = p.admit("64:ff9b::192.0.2.7".parse().unwrap()).unwrap();
        assert!(p.admit("192.0.2.7".parse().unwrap()).is_none());
        let _u = p
            .admit("64:ff9b::192.0.2.8".parse().unwrap())
            .expect("another IPv4 client, not the same /64");
        assert_eq!(
            p.describe("64:ff9b::c000:207".parse().unwrap()),
            "192.0.2.7"
        );
        // Only that /96: the next addresses are IPv6 ones.
        assert_eq!(
            p.describe("64:ff9b:0:0:0:1::1".parse().unwrap()),
            "64:ff9b::/64"
        );
    }

    #[test]
    fn zero_is_no_limit() {
        assert!(PerAddress::new(0, 64).is_none());
    }
}
