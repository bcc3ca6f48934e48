//! IP access control lists: a default policy plus the addresses/networks that get the opposite.
//!
//! Owns parsing of the `acl` objects (server-wide in ws.json, per service in lapps.json) into a
//! matcher that the accept path can afford to call for every connection: rules are plain integers
//! and masks, no allocation and no string work per check. IPv4-mapped IPv6 peers
//! (`::ffff:a.b.c.d`, what a dual-stack socket reports) are matched as the IPv4 address they carry,
//! so one IPv4 rule covers both kinds of socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::ProblemKind;
use super::reader::{Obj, Reader};

/// What an address not in `exclude` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    Allow,
    Deny,
}

/// An IPv4 or IPv6 network (`prefix` bits fixed); a single address is a full-length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpNet {
    V4 { addr: u32, prefix: u8 },
    V6 { addr: u128, prefix: u8 },
}

impl IpNet {
    /// Parses `a.b.c.d`, `a.b.c.d/n`, an IPv6 literal, or `v6/n`. Host bits below the prefix are
    /// ignored (`10.1.2.3/8` is `10.0.0.0/8`). IPv4-mapped IPv6 networks become IPv4 networks.
    pub fn parse(text: &str) -> Option<IpNet> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => {
                // Digits only: `u8::from_str` would accept "+8".
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?))
            }
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let net = match addr {
            IpAddr::V4(a) => {
                let prefix = prefix.unwrap_or(32);
                if prefix > 32 {
                    return None;
                }
                IpNet::V4 {
                    addr: u32::from(a) & mask32(prefix),
                    prefix,
                }
            }
            IpAddr::V6(a) => {
                let prefix = prefix.unwrap_or(128);
                if prefix > 128 {
                    return None;
                }
                match a.to_ipv4_mapped() {
                    Some(v4) if prefix >= 96 => IpNet::V4 {
                        addr: u32::from(v4) & mask32(prefix - 96),
                        prefix: prefix - 96,
                    },
                    _ => IpNet::V6 {
                        addr: u128::from(a) & mask128(prefix),
                        prefix,
                    },
                }
            }
        };
        Some(net)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, canonical(ip)) {
            (IpNet::V4 { addr, prefix }, IpAddr::V4(a)) => u32::from(a) & mask32(*prefix) == *addr,
            (IpNet::V6 { addr, prefix }, IpAddr::V6(a)) => {
                u128::from(a) & mask128(*prefix) == *addr
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries; anything else unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// `policy` for everyone except the `exclude` networks, which get the opposite.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Acl {
    pub policy: Policy,
    pub exclude: Vec<IpNet>,
}

impl Acl {
    /// Whether a peer at `ip` may connect.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let excluded = self.exclude.iter().any(|net| net.contains(ip));
        (self.policy == Policy::Allow) != excluded
    }

    /// True for the default ACL, which lets the accept path skip the check.
    pub fn allows_everyone(&self) -> bool {
        self.policy == Policy::Allow && self.exclude.is_empty()
    }

    pub(crate) const KEYS: &'static [&'static str] = &["policy", "exclude"];

    /// Reads `{"policy": "allow"|"deny", "exclude": [...]}` found at `obj`.
    pub(crate) fn read(r: &mut Reader, obj: &Obj<'_>) -> Acl {
        let policy = match obj.get("policy") {
            None => Policy::Allow,
            Some(v) => match v.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("allow") => Policy::Allow,
                Some("deny") => Policy::Deny,
                _ => {
                    r.type_error(&obj.path_of("policy"), "\"allow\" or \"deny\"", v);
                    Policy::Allow
                }
            },
        };
        let exclude_path = obj.path_of("exclude");
        let mut exclude = Vec::new();
        for (i, text) in obj.string_list(r, "exclude").iter().enumerate() {
            match IpNet::parse(text.trim()) {
                Some(net) => exclude.push(net),
                None => r.problem(
                    ProblemKind::Semantic,
                    &format!("{exclude_path}[{i}]"),
                    format!("invalid IP address or CIDR {text:?}"),
                ),
            }
        }
        Acl { policy, exclude }
    }
}

/// Convenience for tests and callers building ACLs by hand.
impl From<Ipv4Addr> for IpNet {
    fn from(a: Ipv4Addr) -> Self {
        IpNet::V4 {
            addr: u32::from(a),
            prefix: 32,
        }
    }
}

impl From<Ipv6Addr> for IpNet {
    fn from(a: Ipv6Addr) -> Self {
        IpNet::V6 {
            addr: u128::from(a),
            prefix: 128,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn acl(policy: Policy, rules: &[&str]) -> Acl {
        Acl {
            policy,
            exclude: rules.iter().map(|r| IpNet::parse(r).unwrap()).collect(),
        }
    }

    #[test]
    fn parses_addresses_and_cidrs() {
        assert_eq!(
            IpNet::parse("10.1.2.3/8"),
            Some(IpNet::V4 {
                addr: 0x0a00_0000,
                prefix: 8
            })
        );
        assert_eq!(
            IpNet::parse("192.168.0.1"),
            Some(IpNet::V4 {
                addr: 0xc0a8_0001,
                prefix: 32
            })
        );
        assert_eq!(
            IpNet::parse("::1"),
            Some(IpNet::V6 {
                addr: 1,
                prefix: 128
            })
        );
        assert_eq!(
            IpNet::parse("0.0.0.0/0"),
            Some(IpNet::V4 { addr: 0, prefix: 0 })
        );
        assert_eq!(
            IpNet::parse("::ffff:10.0.0.0/104"),
            Some(IpNet::V4 {
                addr: 0x0a00_0000,
                prefix: 8
            })
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "host",
            "1.2.3.4/8/9",
        ] {
            assert_eq!(IpNet::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn allow_policy_refuses_only_excluded() {
        let a = acl(Policy::Allow, &["10.0.0.0/8", "2001:db8::/32"]);
        assert!(!a.allows(ip("10.200.3.4")));
        assert!(a.allows(ip("11.0.0.1")));
        assert!(!a.allows(ip("2001:db8::5")));
        assert!(a.allows(ip("2001:db9::5")));
        assert!(!a.allows_everyone());
        assert!(Acl::default().allows_everyone());
        assert!(Acl::default().allows(ip("1.2.3.4")));
    }

    #[test]
    fn deny_policy_admits_only_excluded() {
        let a = acl(Policy::Deny, &["127.0.0.1", "::1"]);
        assert!(a.allows(ip("127.0.0.1")));
        assert!(a.allows(ip("::1")));
        assert!(!a.allows(ip("127.0.0.2")));
        assert!(!a.allows(ip("::2")));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_rules() {
        let a = acl(Policy::Deny, &["192.168.1.0/24"]);
        assert!(a.allows(ip("::ffff:192.168.1.77")));
        assert!(!a.allows(ip("::ffff:192.168.2.77")));
        // A rule written in mapped form applies to plain IPv4 peers too.
        let b = acl(Policy::Allow, &["::ffff:172.16.0.1"]);
        assert!(!b.allows(ip("172.16.0.1")));
        // An IPv4 rule never matches a genuine IPv6 address.
        let c = acl(Policy::Allow, &["0.0.0.0/0"]);
        assert!(c.allows(ip("2001:db8::1")));
        assert!(!c.allows(ip("8.8.8.8")));
    }
}
