//! One test per rule of the handshake, named after it, plus incremental feeding, an interop check
//! with tungstenite's client, and property tests.

use super::*;
use proptest::prelude::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The RFC 6455 section 1.3 example request, with the given header lines replacing the defaults
/// of the same name (`None` value: leave that header out).
fn request_with(first_line: &str, overrides: &[(&str, Option<&str>)]) -> Vec<u8> {
    let defaults = [
        ("Host", "server.example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Origin", "http://example.com"),
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        ("Sec-WebSocket-Version", "13"),
    ];
    let mut out = format!("{first_line}\r\n");
    for (name, value) in defaults {
        match overrides.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((_, Some(v))) => out.push_str(&format!("{name}: {v}\r\n")),
            Some((_, None)) => {}
            None => out.push_str(&format!("{name}: {value}\r\n")),
        }
    }
    for (name, value) in overrides {
        if !defaults.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            if let Some(v) = value {
                out.push_str(&format!("{name}: {v}\r\n"));
            }
        }
    }
    out.push_str("\r\n");
    out.into_bytes()
}

fn valid() -> Vec<u8> {
    request_with("GET /chat HTTP/1.1", &[])
}

fn with(overrides: &[(&str, Option<&str>)]) -> Vec<u8> {
    request_with("GET /chat HTTP/1.1", overrides)
}

fn parse_default(buf: &[u8]) -> Result<Option<(Request, usize)>, HandshakeError> {
    parse(buf, &Limits::default())
}

fn ok(buf: &[u8]) -> Request {
    match parse_default(buf) {
        Ok(Some((req, n))) => {
            assert_eq!(n, buf.len(), "whole buffer is the head");
            req
        }
        other => panic!("expected a request, got {other:?}"),
    }
}

fn status(buf: &[u8]) -> u16 {
    match parse_default(buf) {
        Err(e) => e.status,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn reason(buf: &[u8]) -> &'static str {
    match parse_default(buf) {
        Err(e) => e.reason,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn rfc_example_request_parses() {
    let req = ok(&valid());
    assert_eq!(req.path, "/chat");
    assert_eq!(req.query, None);
    assert_eq!(req.host, "server.example.com");
    assert_eq!(req.origin.as_deref(), Some("http://example.com"));
    assert_eq!(req.protocols, ["chat", "superchat"]);
    assert_eq!(req.key, KEY);
    assert_eq!(req.headers.len(), 7);
    assert_eq!(req.headers[0], ("Host".into(), "server.example.com".into()));
    assert_eq!(req.header("sec-websocket-version"), Some("13"));
}

#[test]
fn rfc_accept_key_vector() {
    assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn base64_round_trips_all_lengths() {
    for len in 0..=40u8 {
        let bytes: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37) ^ 0xA5).collect();
        let enc = base64_encode(&bytes);
        assert_eq!(enc.len() % 4, 0);
        assert_eq!(base64_decode(enc.as_bytes()), Some(bytes));
    }
    assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64_encode(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
}

#[test]
fn base64_decode_is_strict() {
    for bad in [
        &b"Zm9"[..],
        b"Zm9vYg=",
        b"Zm=v",
        b"Z===",
        b"Zg==Zm9v",
        b"Zm9vYh==", // non-zero padding bits
        b"Zm9vYmF=", // non-zero padding bits
        b"Zm9v\0mFy",
        b"Zm9v-_Fy", // URL-safe alphabet is not the standard one
    ] {
        assert_eq!(
            base64_decode(bad),
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn method_must_be_get() {
    let buf = request_with("POST /chat HTTP/1.1", &[]);
    let err = parse_default(&buf).unwrap_err();
    assert_eq!(err.status, 405);
    let resp = String::from_utf8(err.response()).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{resp}"
    );
    assert!(resp.contains("\r\nAllow: GET\r\n"), "{resp}");
    // Methods are case-sensitive: `get` is a method the server does not know (RFC 9110
    // 15.6.2: 501), as is any other token.
    assert_eq!(status(&request_with("get /chat HTTP/1.1", &[])), 501);
    assert_eq!(status(&request_with("BREW /pot HTTP/1.1", &[])), 501);
    let resp = String::from_utf8(
        parse_default(&request_with("BREW /pot HTTP/1.1", &[]))
            .unwrap_err()
            .response(),
    )
    .unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 501 Not Implemented\r\n"),
        "{resp}"
    );
    assert!(!resp.contains("Allow:"), "{resp}");
    for known in ["DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "PUT"] {
        assert_eq!(
            status(&request_with(&format!("{known} /chat HTTP/1.1"), &[])),
            405
        );
    }
    // Not even a token: malformed, not merely another method.
    assert_eq!(status(&request_with("G(T /chat HTTP/1.1", &[])), 400);
    // RFC 9112 3.2: a missing, repeated or invalid Host is 400 whatever the method; so is a
    // malformed field line (5.1: no whitespace before the colon).
    assert_eq!(status(b"POST /chat HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(
        status(b"HEAD / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        400
    );
    assert_eq!(status(b"PUT / HTTP/1.1\r\nHost : x\r\n\r\n"), 400);
    assert_eq!(status(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), 405);
}

#[test]
fn http_version_must_be_1_1_or_higher() {
    assert_eq!(status(&request_with("GET /chat HTTP/1.0", &[])), 400);
    assert_eq!(status(&request_with("GET /chat HTTP/0.9", &[])), 400);
    for garbage in [
        "HTTP/1",
        "HTTP/1.1.1",
        "http/1.1",
        "HTTP/a.b",
        "HTTP/11",
        "FOO",
    ] {
        let buf = request_with(&format!("GET /chat {garbage}"), &[]);
        assert_eq!(status(&buf), 400, "{garbage}");
    }
    assert_eq!(status(&request_with("GET /chat HTTP/2.0", &[])), 505);
    assert_eq!(ok(&request_with("GET /chat HTTP/1.2", &[])).path, "/chat");
}

#[test]
fn request_line_is_three_parts_single_spaces() {
    for line in [
        "GET  /chat HTTP/1.1",
        "GET /chat  HTTP/1.1",
        "GET /chat HTTP/1.1 ",
        "GET /chat",
        "GET\t/chat HTTP/1.1",
        " GET /chat HTTP/1.1",
    ] {
        assert_eq!(status(&request_with(line, &[])), 400, "{line:?}");
    }
    assert_eq!(status(b"\r\n\r\n"), 400);
}

#[test]
fn one_empty_line_before_the_request_line_is_skipped() {
    // RFC 9112 section 2.2: a server SHOULD ignore at least one CRLF before the request line.
    let mut buf = b"\r\n".to_vec();
    buf.extend_from_slice(&valid());
    let req = ok(&buf);
    assert_eq!(req.path, "/chat");
    // Fed a byte at a time, the same request and the same length, the CRLF counted.
    let limits = Limits::default();
    let mut scanned = 0;
    for end in 1..buf.len() {
        assert!(
            matches!(parse_after(&buf[..end], scanned, &limits), Ok(None)),
            "{end}"
        );
        scanned = end;
    }
    // Bytes after the head are the WebSocket stream's, not part of it.
    buf.extend_from_slice(&[0x81, 0x80]);
    assert_eq!(parse_default(&buf).unwrap().unwrap().1, buf.len() - 2);
    // A bare LF is still not a line end, and two empty lines are one too many.
    let mut bare = b"\n".to_vec();
    bare.extend_from_slice(&valid());
    assert_eq!(status(&bare), 400);
    let mut two = b"\r\n\r\n".to_vec();
    two.extend_from_slice(&valid());
    assert_eq!(status(&two), 400);
    // The empty line counts against the size limit (found by the fuzzer: n > max).
    let tight = Limits {
        max_request_bytes: valid().len(),
        ..Limits::default()
    };
    assert!(parse(&valid(), &tight).unwrap().is_some());
    assert_eq!(
        parse(&buf[..valid().len() + 2], &tight).unwrap_err().status,
        431
    );
}

#[test]
fn request_target_origin_form_splits_query() {
    let req = ok(&request_with("GET /a/b%20c?x=1&y=?2 HTTP/1.1", &[]));
    assert_eq!(req.path, "/a/b%20c");
    assert_eq!(req.query.as_deref(), Some("x=1&y=?2"));
    let req = ok(&request_with("GET /? HTTP/1.1", &[]));
    assert_eq!((req.path.as_str(), req.query.as_deref()), ("/", Some("")));
}

#[test]
fn request_target_absolute_form_takes_the_path() {
    let req = ok(&request_with(
        "GET ws://example.com:8080/echo?k=v HTTP/1.1",
        &[],
    ));
    assert_eq!(req.path, "/echo");
    assert_eq!(req.query.as_deref(), Some("k=v"));
    let req = ok(&request_with("GET HTTPS://example.com HTTP/1.1", &[]));
    assert_eq!((req.path.as_str(), req.query), ("/", None));
    let req = ok(&request_with("GET http://h?q HTTP/1.1", &[]));
    assert_eq!((req.path.as_str(), req.query.as_deref()), ("/", Some("q")));
    let req = ok(&request_with("GET wss://[::1]:5083/chat HTTP/1.1", &[]));
    assert_eq!(req.path, "/chat");
}

#[test]
fn request_target_other_forms_rejected() {
    for target in [
        "*",
        "chat",
        "example.com:80",
        "ftp://example.com/x",
        "http:///x",
        "http://[::1/chat",
        "http://h:abc/chat",
        "http://u@h/chat",
        "ws://h%zz/chat",
        "/chat#frag",
        "/caf\u{e9}",
    ] {
        let buf = request_with(&format!("GET {target} HTTP/1.1"), &[]);
        assert_eq!(status(&buf), 400, "{target}");
    }
}

#[test]
fn host_present_exactly_once() {
    assert_eq!(status(&with(&[("Host", None)])), 400);
    assert_eq!(status(&with(&[("Host", Some(""))])), 400);
    assert_eq!(ok(&with(&[("host", Some(" b:1 "))])).host, "b:1");
    let mut dup = with(&[]);
    dup.truncate(dup.len() - 2);
    dup.extend_from_slice(b"HOST: other\r\n\r\n");
    assert_eq!(
        parse_default(&dup).unwrap_err().reason,
        "duplicate Host header"
    );
}

#[test]
fn a_plain_request_without_a_valid_host_is_400_not_426() {
    for req in [
        &b"GET /echo HTTP/1.1\r\n\r\n"[..],
        b"GET /echo HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nAccept: */*\r\n\r\n",
    ] {
        assert_eq!(status(req), 400, "{}", String::from_utf8_lossy(req));
    }
}

#[test]
fn the_405_to_a_head_request_has_no_content() {
    let err = parse_default(b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err();
    assert_eq!(err.status, 405);
    let resp = String::from_utf8(err.response()).unwrap();
    assert!(resp.contains("\r\nAllow: GET\r\n"), "{resp}");
    assert!(
        resp.ends_with("\r\n\r\n"),
        "a HEAD answer with content: {resp:?}"
    );
    // Any other method gets the explanation.
    let err = parse_default(b"POST /echo HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err();
    let resp = String::from_utf8(err.response()).unwrap();
    assert!(resp.ends_with("\r\n\r\nmethod not allowed\n"), "{resp:?}");
}

#[test]
fn no_answer_to_a_head_request_has_content() {
    // Refused before its method is looked at: the version, the head's size, a bare LF, a
    // broken request line; after one leading empty line too.
    let long_target = format!("HEAD /{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
    let large_head = format!("HEAD / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(9000));
    for (req, want) in [
        (&b"HEAD / HTTP/1.0\r\nHost: x\r\n\r\n"[..], 400),
        (b"HEAD / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"HEAD / HTTP/1.1\nHost: x\r\n\r\n", 400),
        (b"HEAD  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"\r\nHEAD / HTTP/1.0\r\nHost: x\r\n\r\n", 400),
        (long_target.as_bytes(), 414),
        (large_head.as_bytes(), 431),
    ] {
        let err = parse_default(req).unwrap_err();
        assert_eq!(err.status, want, "{}", String::from_utf8_lossy(req));
        let resp = String::from_utf8(err.response()).unwrap();
        assert!(
            resp.ends_with("\r\n\r\n"),
            "a HEAD answer with content: {resp:?}"
        );
    }
    // A GET refused the same way gets the explanation.
    let err = parse_default(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap_err();
    assert!(!String::from_utf8(err.response())
        .unwrap()
        .ends_with("\r\n\r\n"));
}

#[test]
fn a_method_longer_than_any_known_is_not_implemented() {
    // RFC 9112 section 3: 501 for a method longer than any implemented, known from its
    // first bytes (the rest of the head need not have come); a shorter unknown one is 501
    // too, from the request line; bytes that are no token stay a 400.
    let long = "M".repeat(MAX_METHOD + 1);
    assert_eq!(status(format!("{long} / HTTP/1.1\r\n\r\n").as_bytes()), 501);
    assert_eq!(status(long.as_bytes()), 501, "incomplete head");
    let longest = "M".repeat(MAX_METHOD);
    assert_eq!(
        status(format!("{longest} / HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()),
        501
    );
    assert_eq!(status(format!("{longest}\x01").as_bytes()), 400);
}

#[test]
fn a_method_other_than_get_is_refused_as_such_whatever_its_headers() {
    // A body or a repeated WebSocket header is a fault of an upgrade: a POST is not one.
    for (req, want) in [
        (
            &b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n"[..],
            405,
        ),
        (
            b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            405,
        ),
        (
            b"BREW /pot HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            501,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nOrigin: a\r\nOrigin: b\r\n\r\n",
            405,
        ),
        (
            b"POST /e HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Protocol: a b\r\n\r\n",
            405,
        ),
        // The Host still comes first, and a GET's body is still refused.
        (b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\n", 400),
        (
            b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n",
            400,
        ),
    ] {
        assert_eq!(status(req), want, "{}", String::from_utf8_lossy(req));
    }
    let mut dup_key = valid();
    dup_key.truncate(dup_key.len() - 2);
    dup_key.extend_from_slice(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    assert_eq!(
        parse_default(&dup_key).unwrap_err().reason,
        "duplicate Sec-WebSocket-Key header"
    );
}

#[test]
fn upgrade_missing_is_426_with_version() {
    let plain = b"GET /chat?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
    let err = parse_default(plain).unwrap_err();
    assert_eq!(err.status, 426);
    // The request goes with it, for the router to tell an unknown path (404).
    let req = err.plain.as_deref().expect("the plain request");
    assert_eq!(
        (req.path.as_str(), req.query.as_deref(), req.host.as_str()),
        ("/chat", Some("x=1"), "example.com")
    );
    // Only a well-formed plain GET has one.
    assert!(
        parse_default(&with(&[("Sec-WebSocket-Version", Some("8"))]))
            .unwrap_err()
            .plain
            .is_none()
    );
    let resp = String::from_utf8(err.response()).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{resp}"
    );
    assert!(resp.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{resp}");
}

#[test]
fn upgrade_token_list_contains_websocket_case_insensitively() {
    for v in [
        "WebSocket",
        "websocket, foo",
        "foo/1,  WEBSOCKET ",
        ",websocket,",
    ] {
        ok(&with(&[("Upgrade", Some(v))]));
    }
    for v in ["h2c", "websocket2", "web socket", "websocket/13", ""] {
        let buf = with(&[("Upgrade", Some(v))]);
        assert_eq!(
            reason(&buf),
            "Upgrade header does not contain websocket",
            "{v:?}"
        );
    }
}

#[test]
fn connection_token_list_contains_upgrade() {
    for v in ["upgrade", "keep-alive, Upgrade", "UPGRADE,keep-alive"] {
        ok(&with(&[("Connection", Some(v))]));
    }
    for v in ["keep-alive", "upgrades", "close"] {
        let buf = with(&[("Connection", Some(v))]);
        assert_eq!(
            reason(&buf),
            "Connection header does not contain Upgrade",
            "{v:?}"
        );
    }
    assert_eq!(status(&with(&[("Connection", None)])), 400);
}

#[test]
fn key_present_once_and_16_bytes() {
    assert_eq!(status(&with(&[("Sec-WebSocket-Key", None)])), 400);
    // 15 and 17 bytes, valid base64 otherwise.
    let k15 = base64_encode(&[7; 15]);
    let k17 = base64_encode(&[7; 17]);
    for k in [
        &k15[..],
        &k17[..],
        "not base64 at all!!!!!!!",
        "dGhlIHNhbXBsZSBub25jZQ",
    ] {
        let buf = with(&[("Sec-WebSocket-Key", Some(k))]);
        assert_eq!(reason(&buf), "invalid Sec-WebSocket-Key", "{k}");
    }
    let req = ok(&with(&[(
        "Sec-WebSocket-Key",
        Some(&base64_encode(&[0xFF; 16])),
    )]));
    assert_eq!(req.key, "/////////////////////w==");
    let mut dup = valid();
    dup.truncate(dup.len() - 2);
    dup.extend_from_slice(format!("Sec-WebSocket-Key: {KEY}\r\n\r\n").as_bytes());
    assert_eq!(status(&dup), 400);
}

#[test]
fn version_must_be_13_else_426() {
    for v in [None, Some("8"), Some("13, 8"), Some("")] {
        let err = parse_default(&with(&[("Sec-WebSocket-Version", v)])).unwrap_err();
        assert_eq!(err.status, 426, "{v:?}");
        assert!(String::from_utf8(err.response())
            .unwrap()
            .contains("\r\nSec-WebSocket-Version: 13\r\n"));
    }
    ok(&with(&[("Sec-WebSocket-Version", Some("  13\t"))]));
}

#[test]
fn header_names_are_tokens() {
    for line in ["Bad Name: x", "Na(me: x", ": x", "Name : x", "NoColon"] {
        let buf = with(&[]);
        let mut buf = buf[..buf.len() - 2].to_vec();
        buf.extend_from_slice(format!("{line}\r\n\r\n").as_bytes());
        assert_eq!(status(&buf), 400, "{line:?}");
    }
}

#[test]
fn obsolete_line_folding_rejected() {
    for fold in [" continued", "\tcontinued"] {
        let buf = with(&[]);
        let mut buf = buf[..buf.len() - 2].to_vec();
        buf.extend_from_slice(format!("X-Long: a\r\n{fold}\r\n\r\n").as_bytes());
        let err = parse_default(&buf).unwrap_err();
        assert_eq!((err.status, err.reason), (400, "obsolete line folding"));
    }
}

#[test]
fn nul_cr_lf_inside_values_rejected() {
    for v in ["a\0b", "\0"] {
        let buf = with(&[("X-A", Some(v))]);
        assert_eq!(reason(&buf), "invalid character in header value", "{v:?}");
    }
    // A CR not followed by LF is refused as soon as the byte after it arrives.
    let buf = with(&[("X-A", Some("a\rb"))]);
    assert_eq!(reason(&buf), "bare CR in request head");
    let cr = buf.windows(3).position(|w| w == b"a\rb").unwrap() + 1;
    assert_eq!(parse_default(&buf[..cr + 1]), Ok(None));
    assert_eq!(
        parse_default(&buf[..cr + 2]).unwrap_err().reason,
        "bare CR in request head"
    );
    // A LF inside a value is a bare LF, which ends the line early.
    assert_eq!(status(&with(&[("X-A", Some("a\nb"))])), 400);
    // Other bytes (obs-text, tabs inside) are kept; non-UTF-8 is replaced, not refused.
    let req = ok(&with(&[("X-A", Some("a\tb \u{e9}"))]));
    assert_eq!(req.header("x-a"), Some("a\tb \u{e9}"));
}

#[test]
fn cr_cr_lf_line_ends_rejected_at_once() {
    // No CRLFCRLF ever comes: without this the peer would wait for the handshake timeout.
    let crcrlf = String::from_utf8(valid())
        .unwrap()
        .replace("\r\n", "\r\r\n");
    let first_line = crcrlf.find('\r').unwrap();
    let err = parse_default(&crcrlf.as_bytes()[..first_line + 2]).unwrap_err();
    assert_eq!((err.status, err.reason), (400, "bare CR in request head"));
    assert_eq!(parse_default(crcrlf.as_bytes()), Err(err.clone()));
    // The same in a request line that never ends.
    let mut endless = b"GET /chat HTTP/1.1\r".to_vec();
    assert_eq!(parse_default(&endless), Ok(None));
    endless.extend_from_slice(&[b'x'; 100]);
    assert_eq!(parse_default(&endless), Err(err));
}

#[test]
fn lf_only_line_ends_rejected() {
    let lf = String::from_utf8(valid()).unwrap().replace("\r\n", "\n");
    // Rejected as soon as the first bare LF arrives, not after max_request_bytes.
    assert_eq!(reason(lf.as_bytes()), "line not terminated by CRLF");
    assert_eq!(
        reason(b"GET /chat HTTP/1.1\n"),
        "line not terminated by CRLF"
    );
    assert_eq!(reason(b"\n"), "line not terminated by CRLF");
    // A lone CR is no line end either.
    assert_eq!(status(b"GET /chat HTTP/1.1\rHost: x\r\n\r\n"), 400);
}

#[test]
fn headers_split_over_reads() {
    let full = valid();
    let expected = ok(&full);
    for cut in 0..full.len() {
        assert_eq!(parse_default(&full[..cut]), Ok(None), "cut at {cut}");
    }
    assert_eq!(parse_default(&full), Ok(Some((expected, full.len()))));
}

#[test]
fn bytes_after_head_preserved() {
    let head = valid();
    let mut buf = head.clone();
    let frame = [
        0x81u8,
        0x85,
        1,
        2,
        3,
        4,
        b'h' ^ 1,
        b'e' ^ 2,
        b'l' ^ 3,
        b'l' ^ 4,
        b'o' ^ 1,
    ];
    buf.extend_from_slice(&frame);
    let (req, n) = parse_default(&buf).unwrap().unwrap();
    assert_eq!(n, head.len());
    assert_eq!(&buf[n..], &frame);
    assert_eq!(req, ok(&head));
    // Even bytes that look like another head stay for the WebSocket stream.
    let mut two = head.clone();
    two.extend_from_slice(&head);
    assert_eq!(parse_default(&two).unwrap().unwrap().1, head.len());
}

#[test]
fn head_over_max_request_bytes_is_431() {
    let full = valid();
    let exact = Limits {
        max_request_bytes: full.len(),
        ..Limits::default()
    };
    assert!(parse(&full, &exact).unwrap().is_some());
    let small = Limits {
        max_request_bytes: full.len() - 1,
        ..Limits::default()
    };
    assert_eq!(parse(&full, &small).unwrap_err().status, 431);
    // Still incomplete, but already over the limit: refuse now rather than buffer more.
    let mut endless = b"GET /chat HTTP/1.1\r\n".to_vec();
    endless.resize(8193, b'a');
    assert_eq!(parse_default(&endless[..8192]), Ok(None));
    let err = parse_default(&endless).unwrap_err();
    assert_eq!(err.status, 431);
    assert!(String::from_utf8(err.response())
        .unwrap()
        .starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
}

#[test]
fn a_request_line_over_max_request_bytes_is_414() {
    let mut long = b"GET /".to_vec();
    long.resize(8193, b'a');
    assert_eq!(parse_default(&long[..8192]), Ok(None));
    let err = parse_default(&long).unwrap_err();
    assert_eq!(err.status, 414);
    assert!(String::from_utf8(err.response())
        .unwrap()
        .starts_with("HTTP/1.1 414 URI Too Long\r\n"));
}

#[test]
fn control_characters_in_header_values_are_400() {
    for c in [0x01u8, 0x1b, 0x7f] {
        let v = format!("a{}b", char::from(c));
        assert_eq!(status(&with(&[("X-Thing", Some(&v))])), 400, "{c:#x}");
    }
    // HTAB is whitespace and obs-text is allowed.
    assert!(parse_default(&with(&[("X-Thing", Some("a\tb"))]))
        .unwrap()
        .is_some());
    let mut obs = with(&[("X-Thing", Some("a?b"))]);
    let q = obs.iter().position(|&b| b == b'?').unwrap();
    obs[q] = 0xe9;
    assert!(parse_default(&obs).unwrap().is_some());
}

#[test]
fn a_host_that_is_not_host_and_port_is_400() {
    for host in [
        "a b",
        "a/b",
        "user@host",
        "host?x",
        "h\"x",
        // RFC 9112 3.2: a port is digits, after one colon; brackets hold an IP literal only
        "a:b",
        "h:1:2",
        ":80",
        "[",
        "[::1",
        "a]b",
        "[example.com]",
        "[::1]x",
        "[::1]:8a",
        "fe80::1",
        "%zz",
        "a%4",
        "[v1.]",
    ] {
        assert_eq!(status(&with(&[("Host", Some(host))])), 400, "{host:?}");
    }
    for host in [
        "example.com",
        "example.com:8080",
        "[::1]:5083",
        "127.0.0.1",
        "xn--bcher-kva.example",
        "example.com:",
        "[::ffff:127.0.0.1]",
        "[v1.fe80::a+en1]:80",
        "a%41b",
        "sub_delims!$&'()*+,;=",
    ] {
        let req = parse_default(&with(&[("Host", Some(host))]))
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(req.host, host);
    }
}

#[test]
fn more_than_max_headers_is_431() {
    let full = valid(); // 7 headers
    let seven = Limits {
        max_headers: 7,
        ..Limits::default()
    };
    assert!(parse(&full, &seven).unwrap().is_some());
    let six = Limits {
        max_headers: 6,
        ..Limits::default()
    };
    assert_eq!(parse(&full, &six).unwrap_err().status, 431);
    let extra: Vec<(String, Option<&str>)> =
        (0..60).map(|i| (format!("X-{i}"), Some("v"))).collect();
    let extra: Vec<(&str, Option<&str>)> = extra.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    assert_eq!(status(&with(&extra)), 431); // 67 > 64
}

#[test]
fn too_many_fields_are_431_before_the_head_ends() {
    let eight = Limits {
        max_headers: 8,
        ..Limits::default()
    };
    let mut head = b"GET /chat HTTP/1.1\r\n".to_vec();
    for i in 0..8 {
        head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    // Eight complete field lines and the start of a ninth: still possibly a request.
    head.extend_from_slice(b"X-8: v\r");
    assert_eq!(parse(&head, &eight), Ok(None));
    head.push(b'\n');
    let err = parse(&head, &eight).unwrap_err();
    assert_eq!((err.status, err.reason), (431, "too many header fields"));
    // Resumed parsing sees it as well.
    assert_eq!(parse_after(&head, head.len() - 1, &eight), Err(err.clone()));
    // The count comes before what the lines say, so that the head's end cannot change it.
    let mut broken = b"GET /chat HTTP/1.0\r\nno colon\r\n".to_vec();
    broken.extend_from_slice(&head[b"GET /chat HTTP/1.1\r\nX-0: v\r\n".len()..]);
    assert_eq!(parse(&broken, &eight), Err(err.clone()));
    broken.extend_from_slice(b"\r\n");
    assert_eq!(parse(&broken, &eight), Err(err));
}

#[test]
fn duplicate_protocol_headers_joined() {
    let mut buf = with(&[("Sec-WebSocket-Protocol", Some(" a ,, b"))]);
    buf.truncate(buf.len() - 2);
    buf.extend_from_slice(b"sec-websocket-protocol: c\r\nSec-WebSocket-Protocol:\r\n\r\n");
    assert_eq!(ok(&buf).protocols, ["a", "b", "c"]);
    assert_eq!(
        status(&with(&[("Sec-WebSocket-Protocol", Some("a b"))])),
        400
    );
    assert!(ok(&with(&[("Sec-WebSocket-Protocol", None)]))
        .protocols
        .is_empty());
}

#[test]
fn origin_optional_and_single() {
    assert_eq!(ok(&with(&[("Origin", None)])).origin, None);
    let mut dup = valid();
    dup.truncate(dup.len() - 2);
    dup.extend_from_slice(b"Origin: http://evil.example\r\n\r\n");
    assert_eq!(status(&dup), 400);
}

#[test]
fn request_body_rejected() {
    assert_eq!(status(&with(&[("Content-Length", Some("5"))])), 400);
    assert_eq!(
        status(&with(&[("Transfer-Encoding", Some("chunked"))])),
        400
    );
    ok(&with(&[("Content-Length", Some("0"))]));
    // RFC 9110 8.6: `Content-Length = 1*DIGIT`; "00" is no content either.
    ok(&with(&[("Content-Length", Some("00"))]));
    for value in ["", "0x0", "-0", "0 0", "1", "01"] {
        assert_eq!(
            status(&with(&[("Content-Length", Some(value))])),
            400,
            "{value:?}"
        );
    }
}

#[test]
fn expect_100_continue_is_answered_before_the_101() {
    let plain = ok(&valid());
    assert!(!plain.expect_continue);
    assert!(response_101(&plain, None, &[]).starts_with(b"HTTP/1.1 101 "));
    for value in ["100-continue", "100-CONTINUE", "foo, 100-continue"] {
        let req = ok(&with(&[("Expect", Some(value))]));
        assert!(req.expect_continue, "{value}");
        let resp = String::from_utf8(response_101(&req, None, &[])).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n"),
            "{resp}"
        );
    }
    // Another expectation is not met, and not refused either (RFC 9110 10.1.1: 417 is a MAY).
    assert!(!ok(&with(&[("Expect", Some("200-ok"))])).expect_continue);
}

#[test]
fn error_response_is_complete_http() {
    let resp = String::from_utf8(response_dated(
        404,
        "no such service",
        true,
        "Sun, 06 Nov 1994 08:49:37 GMT",
    ))
    .unwrap();
    assert_eq!(
        resp,
        "HTTP/1.1 404 Not Found\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nContent-Length: 16\r\n\r\nno such service\n"
    );
    // Every answer is dated now (RFC 9110 6.6.1: a 4xx MUST carry a Date).
    let year = || crate::time_fmt::utc_timestamp(crate::time_fmt::now())[..4].to_owned();
    let before = year();
    let resp = String::from_utf8(error_response(400, "x")).unwrap();
    let after = year();
    let date = resp
        .lines()
        .nth(1)
        .and_then(|l| l.strip_prefix("Date: "))
        .unwrap_or_else(|| panic!("no Date: {resp}"));
    assert!(
        date.len() == 29
            && date.ends_with(" GMT")
            && (date[12..16] == before[..] || date[12..16] == after[..]),
        "{date}"
    );
    let resp = String::from_utf8(error_response(599, "")).unwrap();
    assert!(resp.starts_with("HTTP/1.1 599 Error\r\n"));
    assert!(resp.ends_with("Content-Length: 1\r\n\r\n\n"));
}

#[test]
fn response_101_format() {
    let req = ok(&valid());
    let resp = String::from_utf8(response_101(&req, None, &[])).unwrap();
    assert_eq!(
        resp,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
    let extra = [("X-Server".to_owned(), "lapps".to_owned())];
    let resp = String::from_utf8(response_101(&req, Some("chat"), &extra)).unwrap();
    assert!(resp.ends_with(
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
         Sec-WebSocket-Protocol: chat\r\nX-Server: lapps\r\n\r\n"
    ));
}

/// tungstenite's client writes a real opening handshake and checks our 101 (accept key, chosen
/// protocol) byte for byte as a browser would.
#[test]
fn tungstenite_client_accepts_our_101() {
    use std::cell::RefCell;
    use std::io::{self, Read, Write};
    use std::rc::Rc;
    use tungstenite::client::IntoClientRequest;

    #[derive(Clone, Default)]
    struct Pipe {
        to_server: Rc<RefCell<Vec<u8>>>,
        to_client: Rc<RefCell<Vec<u8>>>,
    }
    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let mut inbox = self.to_client.borrow_mut();
            if inbox.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(inbox.len());
            buf[..n].copy_from_slice(&inbox[..n]);
            inbox.drain(..n);
            Ok(n)
        }
    }
    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.to_server.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    let pipe = Pipe::default();
    let mut request = "ws://127.0.0.1:9000/echo?room=1"
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "chat, superchat".parse().unwrap());
    let mid = match tungstenite::client::client(request, pipe.clone()) {
        Err(tungstenite::HandshakeError::Interrupted(mid)) => mid,
        other => panic!(
            "expected the client to wait for our answer, got {:?}",
            other.is_ok()
        ),
    };
    let sent = pipe.to_server.borrow().clone();
    let (req, n) = parse_default(&sent).unwrap().unwrap();
    assert_eq!(n, sent.len());
    assert_eq!(req.path, "/echo");
    assert_eq!(req.query.as_deref(), Some("room=1"));
    assert_eq!(req.host, "127.0.0.1:9000");
    assert_eq!(req.protocols, ["chat", "superchat"]);
    pipe.to_client
        .borrow_mut()
        .extend_from_slice(&response_101(&req, Some("superchat"), &[]));
    let (_ws, response) = mid.handshake().map_err(|e| format!("{e:?}")).unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "superchat");
}

/// A valid request with random header-name case, header order, extra headers and padding.
fn valid_request_strategy() -> impl Strategy<Value = (Vec<u8>, String, Option<String>, Vec<String>)>
{
    let path = "/[a-zA-Z0-9._~%/-]{0,20}";
    let query = proptest::option::of("[a-zA-Z0-9=&%?/]{0,20}");
    let protocols = proptest::collection::vec("[a-z][a-z0-9.-]{0,8}", 0..4);
    let extras = proptest::collection::vec(("X-[A-Za-z0-9-]{1,10}", "[ -~]{0,30}"), 0..8);
    let key = proptest::array::uniform16(any::<u8>());
    let flips = proptest::collection::vec(any::<bool>(), 64);
    (path, query, protocols, extras, key, flips, any::<u64>()).prop_map(
        |(path, query, protocols, extras, key, flips, seed)| {
            let mut flip = flips.into_iter().cycle();
            let mut case = |s: &str| -> String {
                s.chars()
                    .map(|c| {
                        if flip.next().unwrap_or(false) {
                            c.to_ascii_uppercase()
                        } else {
                            c.to_ascii_lowercase()
                        }
                    })
                    .collect()
            };
            let mut lines = vec![
                format!("{}: example.com", case("host")),
                format!("{}: {}", case("upgrade"), case("websocket")),
                format!("{}:keep-alive, {}", case("connection"), case("upgrade")),
                format!("{}: {}", case("sec-websocket-key"), base64_encode(&key)),
                format!("{}:\t13 ", case("sec-websocket-version")),
            ];
            if !protocols.is_empty() {
                lines.push(format!("Sec-WebSocket-Protocol: {}", protocols.join(" , ")));
            }
            lines.extend(extras.iter().map(|(n, v)| format!("{n}: {v}")));
            // Deterministic shuffle driven by the seed.
            let mut s = seed;
            for i in (1..lines.len()).rev() {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                lines.swap(i, (s >> 33) as usize % (i + 1));
            }
            let target = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let mut text = format!("GET {target} HTTP/1.1\r\n");
            for l in lines {
                text.push_str(&l);
                text.push_str("\r\n");
            }
            text.push_str("\r\n");
            (text.into_bytes(), path, query, protocols)
        },
    )
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_decisions_are_final(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        cut in any::<prop::sample::Index>(),
        max_request_bytes in 0usize..700,
        max_headers in 0usize..10,
    ) {
        let limits = Limits { max_request_bytes, max_headers };
        let full = parse(&data, &limits);
        let prefix = parse(&data[..cut.index(data.len() + 1)], &limits);
        if prefix != Ok(None) {
            prop_assert_eq!(prefix, full.clone());
        }
        if let Err(e) = &full {
            prop_assert!(e.response().starts_with(b"HTTP/1.1 "));
        }
    }

    /// Fed in pieces as the worker feeds it (each call told how much the last one saw), the
    /// parser answers at every step exactly what one parse of the same prefix answers.
    #[test]
    fn parsing_in_pieces_agrees_with_parsing_the_whole_prefix(
        data in prop_oneof![
            proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a')], 0..80),
            Just(valid()),
        ],
        cuts in proptest::collection::vec(1usize..7, 1..200),
        max_request_bytes in 0usize..300,
    ) {
        let limits = Limits { max_request_bytes, max_headers: 64 };
        let (mut seen, mut end) = (0, 0);
        for step in cuts {
            end = (end + step).min(data.len());
            let whole = parse(&data[..end], &limits);
            let piece = parse_after(&data[..end], seen, &limits);
            prop_assert_eq!(&piece, &whole, "prefix of {} after {}", end, seen);
            if piece != Ok(None) || end == data.len() {
                break;
            }
            seen = end;
        }
    }

    #[test]
    fn request_like_bytes_never_panic(
        data in "GET /[ -~]{0,10} HTTP/1\\.[01]\r\n([A-Za-z:, \t\r\n-]{0,30}\r\n){0,6}(\r\n)?",
    ) {
        let _ = parse_default(data.as_bytes());
    }

    #[test]
    fn generated_valid_requests_parse(
        (bytes, path, query, protocols) in valid_request_strategy(),
        tail in proptest::collection::vec(any::<u8>(), 0..32),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut buf = bytes.clone();
        buf.extend_from_slice(&tail);
        let (req, n) = parse_default(&buf).unwrap().unwrap();
        prop_assert_eq!(n, bytes.len());
        let expected_path = if path.is_empty() { "/".to_owned() } else { path };
        prop_assert_eq!(&req.path, &expected_path);
        prop_assert_eq!(&req.query, &query);
        prop_assert_eq!(&req.protocols, &protocols);
        prop_assert_eq!(&req.host, "example.com");
        prop_assert_eq!(base64_decode(req.key.as_bytes()).map(|k| k.len()), Some(16));
        // Any split before the end of the head waits for more.
        let cut = cut.index(bytes.len());
        prop_assert_eq!(parse_default(&bytes[..cut]), Ok(None));
    }
}

/// The committed fuzz seeds say in their name whether they are valid; keep them honest.
#[test]
fn fuzz_seeds_match_their_names() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/handshake");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let bytes = std::fs::read(&path).unwrap();
        match parse_default(&bytes) {
            Ok(Some(_)) => assert!(name.starts_with("valid_"), "{name} parses"),
            Err(_) => assert!(name.starts_with("invalid_"), "{name} is refused"),
            Ok(None) => panic!("{name} is incomplete"),
        }
        count += 1;
    }
    assert!(count >= 4);
}

#[test]
fn bytes_that_cannot_start_a_request_are_refused_before_the_head_ends() {
    // (A token too long to be a method is a 501: see above.)
    for junk in [
        &b"\x00\x01\x02"[..],
        b"\x16\x03\x01\x02\x00\x01",
        b" GET",
        b"GE(T",
    ] {
        assert_eq!(status(junk), 400, "{junk:?}");
    }
    let method_so_far = [b'A'; 32];
    for partial in [
        &b""[..],
        b"\r",
        b"\r\n",
        b"G",
        b"GET",
        b"GET /",
        &method_so_far[..],
    ] {
        assert!(
            matches!(parse_default(partial), Ok(None)),
            "{partial:?} may still become a request"
        );
    }
}

#[test]
fn request_line_for_the_log() {
    for (buf, line) in [
        (
            &b"POST /echo HTTP/1.1\r\nHost: x\r\n"[..],
            "POST /echo HTTP/1.1",
        ),
        (b"\r\nGET /a HTTP/1.1\r\n", "GET /a HTTP/1.1"),
        (b"GET /unfinished", "GET /unfinished"),
        (b"GET /a\rb", "GET /a"),
        // What is no request line (a ClientHello) is not quoted as one.
        (b"\x16\x03\x01\xff", ""),
        (b"GET /a\x1bb HTTP/1.1", "GET /a"),
        (b"GET /\xe9 HTTP/1.1", "GET /\u{fffd} HTTP/1.1"),
        (b"", ""),
        // Tokens in the query (or a fragment) stay out of the log.
        (b"GET /a#secret HTTP/1.1", "GET /a?... HTTP/1.1"),
        (
            b"GET /ws?access_token=secret HTTP/1.1\r\n",
            "GET /ws?... HTTP/1.1",
        ),
        (b"GET /ws?access_tok", "GET /ws?..."),
        (b"GET /ws?a=secret one two", "GET /ws?..."),
        (b"GET /ws?t=x HTTP/SECRET", "GET /ws?..."),
    ] {
        assert_eq!(
            request_line(buf),
            line,
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
    // Whole, so that the log's length is the line's (a 414's target was said to be 256 bytes).
    assert_eq!(request_line(&[b'a'; 9000]).len(), 9000);
}

#[test]
fn a_tls_client_hello_is_named_as_such() {
    let hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    for n in 1..=hello.len() {
        let err = parse_default(&hello[..n]).unwrap_err();
        assert_eq!(
            (err.status, err.reason),
            (
                400,
                "a TLS handshake where the HTTP request should be (wss:// to a ws:// port?)"
            )
        );
    }
}
