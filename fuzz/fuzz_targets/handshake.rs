//! Fuzzes `ws::handshake::parse`: no input may panic, and its decisions must be final (a prefix
//! that already yields a request or an error yields the same as the whole input). Parsing the
//! rest after a prefix that was incomplete (`parse_after`, as the worker does) must answer what
//! parsing the whole does.
//!
//! The input is parsed as is (so the seeds are plain HTTP requests); its last byte also picks
//! the split point, so appending bytes after the head moves the split without breaking the head.
#![no_main]

use lapps::ws::handshake::{accept_key, parse, parse_after, response_101, Limits};
use libfuzzer_sys::fuzz_target;

// Small enough that the fuzzer reaches both 431 paths within libFuzzer's default input size.
const LIMITS: Limits = Limits {
    max_request_bytes: 512,
    max_headers: 12,
};

fuzz_target!(|data: &[u8]| {
    let full = parse(data, &LIMITS);

    let split = data
        .last()
        .map_or(0, |&b| usize::from(b) * data.len() / 256);
    let prefix = parse(&data[..split], &LIMITS);
    if prefix != Ok(None) {
        assert_eq!(
            prefix, full,
            "decision on a prefix of {split} bytes changed"
        );
    } else {
        let resumed = parse_after(data, split, &LIMITS);
        assert_eq!(resumed, full, "parsing on after {split} bytes differs");
    }

    match &full {
        Ok(None) => assert!(data.len() <= LIMITS.max_request_bytes),
        Ok(Some((req, n))) => {
            let n = *n;
            assert!(n >= 4 && n <= data.len() && n <= LIMITS.max_request_bytes);
            assert_eq!(&data[n - 4..n], b"\r\n\r\n");
            assert_eq!(
                parse(&data[..n], &LIMITS),
                full,
                "bytes after the head matter"
            );
            assert_eq!(parse(&data[..n - 1], &LIMITS), Ok(None));
            assert!(req.path.starts_with('/'));
            assert!(req.headers.len() <= LIMITS.max_headers);
            assert_eq!(accept_key(&req.key).len(), 28);
            let chosen = req.protocols.first().map(String::as_str);
            let resp = response_101(req, chosen, &[]);
            assert!(resp.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
            assert!(resp.ends_with(b"\r\n\r\n"));
        }
        Err(e) => {
            assert!(
                matches!(e.status, 400 | 405 | 414 | 426 | 431 | 501 | 505),
                "{e:?}"
            );
            let resp = e.response();
            assert!(resp.starts_with(format!("HTTP/1.1 {} ", e.status).as_bytes()));
        }
    }
});
