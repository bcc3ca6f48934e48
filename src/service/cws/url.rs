//! `ws://` and `wss://` URLs as the client needs them: scheme, host, port, request target.
//!
//! Owns only the parsing; it never resolves names. Userinfo and fragments are refused.

use crate::ws::handshake::is_reg_name;

/// A parsed WebSocket URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    /// The host without brackets (an IPv6 literal is bare here).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
    /// The `Host` header value (brackets for IPv6, the port when it is not the default).
    pub authority: String,
}

pub fn parse(s: &str) -> Result<Url, &'static str> {
    let (tls, rest) = if let Some(r) = strip_prefix_ci(s, "ws://") {
        (false, r)
    } else if let Some(r) = strip_prefix_ci(s, "wss://") {
        (true, r)
    } else {
        return Err("the URL must start with ws:// or wss://");
    };
    if rest.contains('#') {
        return Err("a WebSocket URL has no fragment");
    }
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes().get(i) == Some(&b'?') => {
            (&rest[..i], format!("/{}", &rest[i..]))
        }
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err("user information in the URL is not supported");
    }
    // Raw bytes beyond ASCII have no place in a request target: they are percent-encoded.
    if target.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return Err("bad characters in the URL path");
    }
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let end = r.find(']').ok_or("unterminated [IPv6] host")?;
        let host = &r[..end];
        // Brackets hold an IPv6 address and nothing else (RFC 3986 3.2.2; no zone IDs).
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("bad [IPv6] host in the URL");
        }
        let after = &r[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err("bad URL authority"),
        };
        (host, port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 address needs its brackets: "fe80::1:8080" would be read two ways.
            Some((h, _)) if h.contains(':') => return Err("an IPv6 host needs [brackets]"),
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        // A name or IPv4 address (RFC 3986 reg-name, the Host a server checks), in ASCII: an
        // international name is given in its xn-- form.
        if !is_reg_name(host) {
            return Err("bad host in the URL");
        }
        (host, port)
    };
    let default = if tls { 443 } else { 80 };
    let port = match port {
        // An empty port is the default one (RFC 3986 3.2.3).
        None | Some("") => default,
        // Digits only: u16's parser would also take "+80".
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().map_err(|_| "bad port in the URL")?
        }
        Some(_) => return Err("bad port in the URL"),
    };
    if port == 0 {
        return Err("bad port in the URL");
    }
    let bracketed = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let authority = if port == default {
        bracketed
    } else {
        format!("{bracketed}:{port}")
    };
    Ok(Url {
        tls,
        host: host.to_string(),
        port,
        target,
        authority,
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_port_and_target() {
        let u = parse("ws://127.0.0.1:5083/echo?x=1").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.target.as_str()),
            (false, "127.0.0.1", 5083, "/echo?x=1")
        );
        assert_eq!(u.authority, "127.0.0.1:5083");
        let u = parse("WSS://[::1]/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "::1", 443));
        assert_eq!(u.authority, "[::1]");
        let u = parse("ws://localhost?q").unwrap();
        assert_eq!((u.port, u.target.as_str()), (80, "/?q"));
        let u = parse("ws://[fe80::1]:8080/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fe80::1", 8080));
        assert_eq!(parse("ws://h:/").unwrap().port, 80);
        for bad in [
            "http://x/",
            "ws://",
            "ws://a:b/",
            "ws://a:0/",
            "ws://u@h/",
            "ws://h/#f",
            "ws://[::1/",
            "ws://h/a b",
            "ws://a:99999/",
            "ws://a:+80/",
            "ws://fe80::1:8080/",
            "ws://::1/",
            "ws://[example.com]/",
            "ws://[fe80::1%eth0]/",
            "ws://h\u{e9}te/",
            "ws://h/\u{e9}",
            // Not a reg-name, so not a Host a server takes (found by the cws_upgrade fuzzer).
            "wss://]:/",
            "ws://a]b/",
            "ws://a<b>/",
            "ws://a\"b/",
            "ws://a%zz/",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
