//! Close codes and their validity (RFC 6455 section 7.4).
//!
//! Owns: the code constants the server sends, and the rule deciding which codes a peer may put
//! in a Close frame. Must never do I/O or decide *when* to close; that is the codec's and the
//! worker's job.

/// 1000: the purpose of the connection has been fulfilled.
pub const NORMAL: u16 = 1000;
/// 1001: the endpoint is going away (server shutdown, browser navigating away).
pub const GOING_AWAY: u16 = 1001;
/// 1002: the peer broke the protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// 1003: a data type the endpoint cannot accept.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// 1007: data inconsistent with the message type (text that is not UTF-8).
pub const INVALID_PAYLOAD: u16 = 1007;
/// 1008: a policy was violated (a slow consumer, a message not complete in time, too many host
/// answers waiting).
pub const POLICY: u16 = 1008;
/// 1009: a message too big to process.
pub const TOO_BIG: u16 = 1009;
/// 1011: an unexpected condition prevented the server from fulfilling the request.
pub const INTERNAL_ERROR: u16 = 1011;
/// 1013 (IANA registry, "Try Again Later"): the server is overloaded for now; here, it holds
/// as much of partly received messages as it allows over all connections.
pub const TRY_AGAIN_LATER: u16 = 1013;

/// The longest reason a Close frame can carry: a control frame's payload is at most 125
/// bytes (RFC 6455 5.5), two of which are the code.
pub const MAX_REASON: usize = 123;

/// A reason of the server's own (one of the few `&'static str` it fails connections with) as
/// one byte: a connection that must remember the reason of a Close it sends later keeps this
/// instead of a 16-byte `&str`, which would grow every connection's state. 0 is no reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReasonId(u8);

/// The reasons given ids so far, in id order less one; a few dozen at most, since they are
/// the literals of the code (past 255 a reason gets id 0 and the Close goes without it).
static REASONS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());

impl ReasonId {
    pub const NONE: ReasonId = ReasonId(0);

    pub fn of(reason: &'static str) -> ReasonId {
        if reason.is_empty() {
            return ReasonId::NONE;
        }
        let mut known = REASONS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = known.iter().position(|r| *r == reason) {
            return ReasonId(i as u8 + 1);
        }
        if known.len() == usize::from(u8::MAX) {
            return ReasonId::NONE;
        }
        known.push(reason);
        ReasonId(known.len() as u8)
    }

    pub fn text(self) -> &'static str {
        let Some(i) = usize::from(self.0).checked_sub(1) else {
            return "";
        };
        let known = REASONS.lock().unwrap_or_else(|p| p.into_inner());
        known.get(i).copied().unwrap_or("")
    }
}

/// Whether a peer may send `code` in a Close frame (section 7.4).
///
/// 1004 is reserved, and 1005, 1006 and 1015 "MUST NOT be set as a status code in a Close
/// control frame by an endpoint" (7.4.1): they only describe local conditions. 1012-1014 are
/// registered in the IANA registry (service restart, try again later, bad gateway), so they are
/// accepted like the 7.4.1 codes. 1016-2999 are reserved for future revisions of the protocol,
/// 3000-3999 for libraries and frameworks, 4000-4999 for private use; 0-999 and >= 5000 are not
/// used at all (7.4.2).
pub fn is_valid_received_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_id_gives_its_reason_back_and_the_same_reason_the_same_id() {
        assert_eq!(ReasonId::of(""), ReasonId::NONE);
        assert_eq!(ReasonId::NONE.text(), "");
        let a = ReasonId::of("reason a for the test");
        let b = ReasonId::of("reason b for the test");
        assert_ne!(a, b);
        assert_eq!(ReasonId::of("reason a for the test"), a);
        assert_eq!(
            (a.text(), b.text()),
            ("reason a for the test", "reason b for the test")
        );
    }

    #[test]
    fn defined_codes_are_accepted() {
        for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011] {
            assert!(is_valid_received_code(code), "{code}");
        }
    }

    #[test]
    fn registered_codes_1012_to_1014_are_accepted() {
        for code in [1012, 1013, 1014] {
            assert!(is_valid_received_code(code), "{code}");
        }
    }

    #[test]
    fn application_codes_3000_to_4999_are_accepted() {
        for code in [3000, 3999, 4000, 4999] {
            assert!(is_valid_received_code(code), "{code}");
        }
    }

    #[test]
    fn reserved_and_local_only_codes_are_rejected() {
        for code in [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_received_code(code), "{code}");
        }
    }

    #[test]
    fn exhaustive_matches_section_7_4() {
        let accepted = (0..=u16::MAX)
            .filter(|&c| is_valid_received_code(c))
            .count();
        // 1000-1003 (4) + 1007-1014 (8) + 3000-4999 (2000)
        assert_eq!(accepted, 4 + 8 + 2000);
    }
}
