//! Fuzzes the cws client's side of the upgrade (`lapps::service::cws::upgrade`), whose input is
//! a remote server's answer, and its URL parser (`lapps::service::cws::url`), whose input is
//! what an app passes to `cws:new`.
//!
//! The answer: no input may panic; a decision taken on a prefix never changes with more bytes
//! (the client decides as bytes arrive); an accepted answer ends at its `\r\n\r\n`, within
//! `MAX_RESPONSE`. The URL: one that parses gives an upgrade request that our own server's
//! parser accepts as one whole head, with the URL's target and Host, so that no byte of a URL
//! can add a header line or end the head early.
#![no_main]

use lapps::service::cws::upgrade::{check_response, request, MAX_RESPONSE};
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
    let full = check_response(data, &accept);
    // The last byte picks a split point, as in the handshake target.
    let split = data
        .last()
        .map_or(0, |&b| usize::from(b) * data.len() / 256);
    let prefix = check_response(&data[..split], &accept);
    if prefix != Ok(None) {
        assert_eq!(
            prefix, full,
            "decision on a prefix of {split} bytes changed"
        );
    }
    match &full {
        Ok(None) => assert!(data.len() < MAX_RESPONSE),
        Ok(Some(n)) => {
            let n = *n;
            assert!(n >= 4 && n <= data.len().min(MAX_RESPONSE), "{n}");
            assert_eq!(&data[n - 4..n], b"\r\n\r\n");
            assert_eq!(check_response(&data[..n], &accept), full);
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
}

fn url_request(s: &str) {
    let Ok(u) = url::parse(s) else {
        return;
    };
    assert!(u.target.starts_with('/'), "{s:?} gave {u:?}");
    let (req, accept) = request(&u, b"the sample nonce");
    assert_eq!(accept, accept_key(KEY));
    let limits = Limits {
        max_request_bytes: 1 << 20,
        max_headers: 16,
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
        }
        other => panic!(
            "our server does not take the request for {s:?}: {other:?}\n{}",
            String::from_utf8_lossy(&req)
        ),
    }
}
