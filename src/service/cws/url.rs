//! `ws://` and `wss://` URLs as the client needs them: scheme, host, port, request target.
//!
//! Owns only the parsing; it never resolves names. Userinfo and fragments are refused.

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
    if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("bad characters in the URL path");
    }
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let end = r.find(']').ok_or("unterminated [IPv6] host")?;
        let host = &r[..end];
        let after = &r[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err("bad URL authority"),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'/') {
        return Err("bad host in the URL");
    }
    let default = if tls { 443 } else { 80 };
    let port = match port {
        None => default,
        Some(p) => p.parse::<u16>().map_err(|_| "bad port in the URL")?,
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
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
