//! Fuzzes the cws client's side of the upgrade (`lapps::service::cws::upgrade`), whose input is
//! a remote server's answer, and its URL parser (`lapps::service::cws::url`), whose input is
//! what an app passes to `cws:new`.
//!
//! The answer: no input may panic; a decision taken on a prefix never changes with more bytes
//! (the client decides as bytes arrive); an accepted answer ends at its `\r\n\r\n`, within
//! `MAX_RESPONSE`. The URL: one that parses gives an upgrade request that our own server's
//! parser accepts as one whole head, with the URL's target and Host, so that no byte of a URL
//! can add a header line or end the head early. The same holds with an [`Offer`] made of the
//! input's further lines (subprotocols, then header names and values): whatever the offer
//! takes adds exactly its own fields.
#![no_main]

use lapps::service::cws::upgrade::{check_response, request, Offer, MAX_RESPONSE};
use lapps::service::cws::url;
use lapps::ws::handshake::{accept_key, parse, Limits};
use libfuzzer_sys::fuzz_target;

/// The key of RFC 6455 section 1.3's example, whose accept value the seeds carry.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fuzz_target!(|data: &[u8]| {
    answer(data);
    if let Ok(s) = std::str::from_utf8(data) {
        url_request(s);
    }
});

fn answer(data: &[u8]) {
    let accept = accept_key(KEY);
    let offered = ["chat".to_string()];
    let full = check_response(data, &accept, &offered);
    // The last byte picks a split point, as in the handshake target.
    let split = data
        .last()
        .map_or(0, |&b| usize::from(b) * data.len() / 256);
    let prefix = check_response(&data[..split], &accept, &offered);
    if prefix != Ok(None) {
        assert_eq!(
            prefix, full,
            "decision on a prefix of {split} bytes changed"
        );
    }
    match &full {
        Ok(None) => assert!(data.len() < MAX_RESPONSE),
        Ok(Some(answer)) => {
            let n = answer.len;
            assert!(n >= 4 && n <= data.len().min(MAX_RESPONSE), "{n}");
            assert_eq!(&data[n - 4..n], b"\r\n\r\n");
            assert_eq!(check_response(&data[..n], &accept, &offered), full);
            if let Some(p) = &answer.protocol {
                assert_eq!(p, "chat");
            }
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
}

fn url_request(s: &str) {
    let mut lines = s.split('\n');
    let Ok(u) = url::parse(lines.next().unwrap_or_default()) else {
        return;
    };
    assert!(u.target.starts_with('/'), "{s:?} gave {u:?}");
    let mut offer = Offer::default();
    let mut protocols = 0;
    let mut headers = Vec::new();
    while let Some(line) = lines.next() {
        if let Some(p) = line.strip_prefix("p=") {
            protocols += usize::from(offer.add_protocol(p).is_ok());
        } else if let Some(value) = lines.next() {
            if offer.add_header(line, value).is_ok() {
                headers.push(line.to_ascii_lowercase());
            }
        }
    }
    let (req, accept) = request(&u, b"the sample nonce", &offer);
    assert_eq!(accept, accept_key(KEY));
    let limits = Limits {
        max_request_bytes: 1 << 20,
        max_headers: 1 << 12,
    };
    match parse(&req, &limits) {
        Ok(Some((r, n))) => {
            assert_eq!(n, req.len(), "the head ends early for {s:?}");
            assert_eq!(r.host, u.authority, "{s:?}");
            let target = match &r.query {
                Some(q) => format!("{}?{q}", r.path),
                None => r.path.clone(),
            };
            assert_eq!(target, u.target, "{s:?}");
            assert_eq!(r.key, KEY);
            assert_eq!(r.protocols.len(), protocols, "{s:?}");
            // Ours (Host, Upgrade, Connection, the key, the version, maybe the subprotocols
            // and the User-Agent) and the offer's, no more.
            let ours = 5 + usize::from(protocols > 0);
            let agent = usize::from(!headers.iter().any(|h| h == "user-agent"));
            assert_eq!(r.headers.len(), ours + agent + headers.len(), "{s:?}");
        }
        other => panic!(
            "our server does not take the request for {s:?}: {other:?}\n{}",
            String::from_utf8_lossy(&req)
        ),
    }
}
