//! The HTTP/1.1 upgrade handshake of RFC 6455 (sections 4.2.1 and 4.2.2), sans-IO.
//!
//! Owns: parsing the client's opening handshake from a byte slice (incrementally: call again with
//! more bytes until it is complete), the `Sec-WebSocket-Accept` computation, and the bytes of the
//! `101 Switching Protocols` answer and of every error answer.
//!
//! Must never: touch a socket, block, keep state between calls, or panic on any input. The peer
//! controls every byte given to [`parse`]; all access is through checked slicing and iterators.
//!
//! Status codes chosen where the RFC leaves the choice to us:
//! - a method of RFC 9110 (or PATCH) other than `GET` gets `405` with `Allow: GET` (the resource
//!   exists, the method not); a method the server does not know gets `501` (RFC 9110 15.6.2);
//! - `HTTP/1.0` (or any malformed version) gets `400`; a major version of 2 or more gets `505`;
//! - a missing `Upgrade` header gets `426` with `Sec-WebSocket-Version: 13`: that is a plain HTTP
//!   request to a WebSocket endpoint, and 426 tells its sender what to do (the server answers
//!   404 instead when no service serves the path: see [`HandshakeError::plain`]);
//! - a head longer than [`Limits::max_request_bytes`] or with more than [`Limits::max_headers`]
//!   header lines gets `431`, as soon as that is seen (a head that never ends gets it too);
//! - a request announcing a body (`Content-Length` other than 0, or any `Transfer-Encoding`) gets
//!   `400`: bytes after the head are WebSocket frames, so a body would be mistaken for frames.
//!   This and the other faults of a GET as an upgrade (a repeated Key, Version or Origin, a bad
//!   subprotocol token) come after the method: a POST with a body gets its 405.

use memchr::memmem;

/// The GUID of RFC 6455 section 1.3, appended to the key before hashing.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Bounds on what a peer may make us buffer and store before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted request head, terminating empty line included.
    pub max_request_bytes: usize,
    /// Largest accepted number of header lines.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 8192,
            max_headers: 64,
        }
    }
}

/// A validated opening handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Request target path (before `?`); percent-decoding is not applied. For an absolute-form
    /// target (`http://host/p`) this is the path part (`/p`, or `/` when empty).
    pub path: String,
    /// The query after `?`, without it.
    pub query: Option<String>,
    /// The `Host` header's value.
    pub host: String,
    pub origin: Option<String>,
    /// `Sec-WebSocket-Protocol` tokens in the order sent, over all such headers.
    pub protocols: Vec<String>,
    /// `Sec-WebSocket-Key` as sent (validated: base64 of exactly 16 bytes).
    pub key: String,
    /// Every header in order, names as sent, values without surrounding whitespace.
    pub headers: Vec<(String, String)>,
    /// The client sent `Expect: 100-continue`: RFC 9110 7.8 has the server send a `100
    /// (Continue)` before the `101` (see [`response_101`]).
    pub expect_continue: bool,
}

impl Request {
    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a handshake is refused, and the status to refuse it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeError {
    pub status: u16,
    pub reason: &'static str,
    /// The request was a HEAD: its answer carries no content (RFC 9110 section 9.3.2).
    pub head: bool,
    /// A well-formed plain GET (no `Upgrade`, the 426): the request, with an empty `key`.
    /// A path no service serves gets the router's 404 instead (an upgrade would get it too).
    pub plain: Option<Box<Request>>,
}

impl HandshakeError {
    const fn new(status: u16, reason: &'static str) -> Self {
        HandshakeError {
            status,
            reason,
            head: false,
            plain: None,
        }
    }

    /// The full HTTP response to send before closing the connection.
    pub fn response(&self) -> Vec<u8> {
        response_with(self.status, self.reason, !self.head)
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for HandshakeError {}

fn bad(reason: &'static str) -> HandshakeError {
    HandshakeError::new(400, reason)
}

/// Parses the client's opening handshake from the start of `buf`.
///
/// - `Ok(None)`: incomplete; call again with more bytes (nothing is consumed).
/// - `Ok(Some((req, n)))`: complete; `n` is the length of the request head, and the bytes after it
///   already belong to the WebSocket stream.
/// - `Err(e)`: refuse with `e.status` (see [`HandshakeError::response`]).
///
/// A decision is final: once a prefix of a stream yields `Some` or `Err`, every longer prefix yields
/// the same. That is why only checks that stay true as bytes arrive (the method's bytes, size,
/// bare CR or LF, the number of lines) are made on an incomplete head, and why they are made
/// first, over the same bytes, in the same order, on a complete one.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, HandshakeError> {
    parse_after(buf, 0, limits)
}

/// [`parse`], told that an earlier call saw the first `scanned` bytes of `buf` (a prefix of
/// the same stream) and answered `Ok(None)`: those bytes are not scanned again, so a head that
/// arrives a few bytes at a time costs time linear in its length, not quadratic.
///
/// One empty line (CRLF) before the request line is skipped, as RFC 9112 section 2.2 asks of a
/// robust server (some clients send one after an earlier request's body); it counts in `n`.
pub fn parse_after(
    buf: &[u8],
    scanned: usize,
    limits: &Limits,
) -> Result<Option<(Request, usize)>, HandshakeError> {
    parse_skipping_crlf(buf, scanned, limits).map_err(|mut e| {
        // Whatever is wrong with it, the answer to a HEAD carries no content (RFC 9110
        // section 9.3.2).
        e.head |= is_head(buf);
        e
    })
}

/// [`parse_after`] but for the HEAD rule.
fn parse_skipping_crlf(
    buf: &[u8],
    scanned: usize,
    limits: &Limits,
) -> Result<Option<(Request, usize)>, HandshakeError> {
    match buf.strip_prefix(b"\r\n") {
        // Only one: a second empty line is where the request line should be.
        Some(rest) if rest.starts_with(b"\r\n") => Err(bad("empty request")),
        Some(rest) => {
            // The empty line counts against the head's size limit like any other.
            let limits = Limits {
                max_request_bytes: limits.max_request_bytes.saturating_sub(2),
                ..*limits
            };
            Ok(parse_head_of(rest, scanned.saturating_sub(2), &limits)?
                .map(|(req, n)| (req, n + 2)))
        }
        None => parse_head_of(buf, scanned, limits),
    }
}

/// [`parse_after`] once a leading empty line is skipped.
fn parse_head_of(
    buf: &[u8],
    scanned: usize,
    limits: &Limits,
) -> Result<Option<(Request, usize)>, HandshakeError> {
    let max = limits.max_request_bytes;
    // A head that fits ends within the first `max` bytes, so never scan past them.
    let window = buf.get(..max).unwrap_or(buf);
    // The terminator may straddle the end of what was seen: back up by three bytes.
    let from = scanned.min(window.len()).saturating_sub(3);
    match memmem::find(window.get(from..).unwrap_or_default(), b"\r\n\r\n") {
        Some(found) => {
            let pos = from + found;
            let n = pos + 4;
            let head = buf.get(..n).unwrap_or(buf);
            check_method(head)?;
            check_lines(head, 0, true, limits)?;
            // Keep the CRLF of the last header line so that every line ends with one.
            let lines = head.get(..pos + 2).unwrap_or(head);
            let req = parse_head(lines)?;
            Ok(Some((req, n)))
        }
        None => {
            check_method(window)?;
            // What an earlier call saw is decided, but for a CR that was its last byte.
            let seen = scanned.min(window.len());
            let undecided = match seen.checked_sub(1) {
                Some(last) if window.get(last) == Some(&b'\r') => last,
                _ => seen,
            };
            check_lines(window, undecided, false, limits)?;
            if buf.len() > max && memchr::memchr(b'\n', window).is_none() {
                // Not even the request line fits: it is the target that is too long.
                Err(HandshakeError::new(414, "request target too long"))
            } else if buf.len() > max {
                Err(HandshakeError::new(431, "request head too large"))
            } else {
                Ok(None)
            }
        }
    }
}

/// The method of the request line, as far as it came, is a token followed by a space (RFC
/// 9112 section 3): checked on an incomplete head too, so that bytes that can never start a
/// request (binary, a TLS ClientHello on a ws:// port) are refused at once, not at the
/// handshake timeout. It reads only the first bytes, which never change, so it comes first: its
/// verdict is final.
const MAX_METHOD: usize = 32;

fn check_method(head: &[u8]) -> Result<(), HandshakeError> {
    // A TLS record of the handshake (a ClientHello): most likely a wss:// client at a ws://
    // port. Its first byte is no tchar, so this is the verdict below, in words an operator
    // can use.
    if head.first() == Some(&0x16) {
        return Err(bad(
            "a TLS handshake where the HTTP request should be (wss:// to a ws:// port?)",
        ));
    }
    // Methods are short (the longest registered has 17 bytes), and only the first bytes are
    // looked at, so that a head arriving a byte at a time costs no rescans.
    let first = head.get(..MAX_METHOD + 1).unwrap_or(head);
    // A line end where the method should be is the line checks' to answer.
    let end = memchr::memchr3(b' ', b'\r', b'\n', first).unwrap_or(first.len());
    let method = first.get(..end).unwrap_or_default();
    let complete = end < first.len() || first.len() <= MAX_METHOD;
    let empty = end == 0 && first.first() == Some(&b' ');
    let token = method.iter().all(|&b| is_tchar(b));
    if complete && !empty && token {
        Ok(())
    } else if token && !complete {
        // RFC 9112 section 3: "A server that receives a method longer than any that it
        // implements SHOULD respond with a 501 (Not Implemented) status code."
        Err(HandshakeError::new(501, "method not implemented"))
    } else {
        Err(bad("malformed request method"))
    }
}

/// The line ends of `bytes` (a whole head if `complete`, else what came of one), in order: each
/// LF follows a CR and each CR is followed by an LF (RFC 9112 section 2.2: a bare CR or LF is
/// invalid; 400), and no more than [`Limits::max_headers`] field lines end (431). So a head
/// whose lines end wrongly, or that never ends but already has too many lines, is answered at
/// once, not with a 408 at the handshake timeout. The first fault in the bytes decides, so that
/// the verdict on a prefix stays the verdict on the whole; both come before what the lines say,
/// for the same reason.
///
/// The bytes before `from` were checked by an earlier call (which left a CR as its last byte
/// to this one). The LFs before the first new one are counted once, and a count over the
/// limit ends the head, so a head arriving a byte at a time costs about `max_headers` scans.
fn check_lines(
    bytes: &[u8],
    from: usize,
    complete: bool,
    limits: &Limits,
) -> Result<(), HandshakeError> {
    let new = bytes.get(from..).unwrap_or_default();
    // The request line's LF is the first; the last LF of a complete head ends its empty line.
    let mut lines: Option<usize> = None;
    for i in memchr::memchr2_iter(b'\r', b'\n', new) {
        let i = from + i;
        if bytes.get(i) == Some(&b'\r') {
            // A CR as the last byte so far is decided by the next one.
            if bytes.get(i + 1).is_some_and(|&b| b != b'\n') {
                return Err(bad("bare CR in request head"));
            }
            continue;
        }
        if i == 0 || bytes.get(i - 1) != Some(&b'\r') {
            return Err(bad("line not terminated by CRLF"));
        }
        let lines = lines.get_or_insert_with(|| {
            memchr::memchr_iter(b'\n', bytes.get(..i).unwrap_or_default()).count()
        });
        *lines += 1;
        let ends_head = complete && i + 1 == bytes.len();
        // The request line is not a field line.
        if *lines - 1 > limits.max_headers && !ends_head {
            return Err(HandshakeError::new(431, "too many header fields"));
        }
    }
    Ok(())
}

/// What one pass over the header lines remembers besides the header list.
#[derive(Default)]
struct Seen {
    host: Option<usize>,
    origin: Option<usize>,
    key: Option<usize>,
    version: Option<usize>,
    upgrade: bool,
    upgrade_websocket: bool,
    connection_upgrade: bool,
    expect_continue: bool,
}

/// `lines`: the head up to and including the CRLF of its last line (every line ends in CRLF, no
/// bare LF anywhere).
/// Their line ends and number are checked already ([`check_lines`]).
fn parse_head(lines: &[u8]) -> Result<Request, HandshakeError> {
    let mut rest = lines;
    let request_line = next_line(&mut rest).ok_or_else(|| bad("empty request"))?;
    let target = parse_request_line(request_line)?;

    let mut headers: Vec<(String, String)> = Vec::with_capacity(16);
    let mut protocols = Vec::new();
    let mut seen = Seen::default();
    // What is wrong with the request as an upgrade (a body, a repeated Key): answered after
    // the Host and the method, which a request that is no GET fails first (405/501).
    let mut not_an_upgrade: Option<HandshakeError> = None;
    while let Some(line) = next_line(&mut rest) {
        let (name, value) = split_header(line)?;
        let index = headers.len();
        // RFC 6455 4.2.1: each of these MUST be present (at most) once to be meaningful.
        let single = |slot: &mut Option<usize>, why: &'static str| match slot {
            Some(_) => Err(bad(why)),
            None => {
                *slot = Some(index);
                Ok(())
            }
        };
        if name.eq_ignore_ascii_case(b"host") {
            single(&mut seen.host, "duplicate Host header")?;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            // RFC 6455 4.2.1 item 3: "An |Upgrade| header field containing the value
            // "websocket", treated as an ASCII case-insensitive value."
            seen.upgrade = true;
            seen.upgrade_websocket |= list_contains(value, b"websocket");
        } else if name.eq_ignore_ascii_case(b"connection") {
            // Item 4: "A |Connection| header field that includes the token "Upgrade", treated as
            // an ASCII case-insensitive value."
            seen.connection_upgrade |= list_contains(value, b"upgrade");
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            if let Err(e) = single(&mut seen.key, "duplicate Sec-WebSocket-Key header") {
                not_an_upgrade.get_or_insert(e);
            }
        } else if name.eq_ignore_ascii_case(b"sec-websocket-version") {
            if let Err(e) = single(&mut seen.version, "duplicate Sec-WebSocket-Version header") {
                not_an_upgrade.get_or_insert(e);
            }
        } else if name.eq_ignore_ascii_case(b"origin") {
            if let Err(e) = single(&mut seen.origin, "duplicate Origin header") {
                not_an_upgrade.get_or_insert(e);
            }
        } else if name.eq_ignore_ascii_case(b"sec-websocket-protocol") {
            // Item 8: a list of subprotocols in order of preference; several headers are one list.
            for token in list_items(value) {
                if !is_token(token) {
                    not_an_upgrade.get_or_insert(bad("invalid Sec-WebSocket-Protocol token"));
                }
                protocols.push(ascii_string(token));
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || (name.eq_ignore_ascii_case(b"content-length") && !is_zero_length(value))
        {
            not_an_upgrade.get_or_insert(bad("request body not allowed"));
        } else if name.eq_ignore_ascii_case(b"expect") {
            // RFC 9110 10.1.1: the expectation is case-insensitive. Another expectation is
            // not one we can meet, and the RFC leaves answering it 417 to us (MAY): ignored.
            seen.expect_continue |= list_contains(value, b"100-continue");
        }
        headers.push((
            ascii_string(name),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }

    // Item 2: "A |Host| header field containing the server's authority." RFC 9112 3.2: an
    // HTTP/1.1 request without one, or with one that is not `uri-host [ ":" port ]`, gets 400,
    // whatever else it asks (so before the 426 below).
    let host = value_at(&headers, seen.host).ok_or_else(|| bad("missing Host header"))?;
    if host.is_empty() {
        return Err(bad("empty Host header"));
    }
    if !is_host_and_port(host) {
        return Err(bad("invalid Host header"));
    }
    let (path, query) = target?;
    if let Some(e) = not_an_upgrade {
        return Err(e);
    }
    if !seen.upgrade {
        // A plain HTTP request: to a WebSocket endpoint, tell it which protocol to upgrade to;
        // the request goes with the error, for the router to say whether the path is one.
        let request = Request {
            path,
            query,
            host: host.to_owned(),
            origin: value_at(&headers, seen.origin).map(str::to_owned),
            protocols,
            key: String::new(),
            headers,
            expect_continue: seen.expect_continue,
        };
        return Err(HandshakeError {
            plain: Some(Box::new(request)),
            ..HandshakeError::new(426, "WebSocket upgrade required")
        });
    }
    if !seen.upgrade_websocket {
        return Err(bad("Upgrade header does not contain websocket"));
    }
    if !seen.connection_upgrade {
        return Err(bad("Connection header does not contain Upgrade"));
    }
    // Item 6: "A |Sec-WebSocket-Version| header field, with a value of 13." Section 4.4: otherwise
    // answer with the versions we speak (426 + `Sec-WebSocket-Version: 13`, see error_response).
    if value_at(&headers, seen.version) != Some("13") {
        return Err(HandshakeError::new(
            426,
            "unsupported Sec-WebSocket-Version",
        ));
    }
    // Item 5: "A |Sec-WebSocket-Key| header field with a base64-encoded value that, when decoded,
    // is 16 bytes in length."
    let key =
        value_at(&headers, seen.key).ok_or_else(|| bad("missing Sec-WebSocket-Key header"))?;
    if !is_base64_of_16_bytes(key.as_bytes()) {
        return Err(bad("invalid Sec-WebSocket-Key"));
    }

    Ok(Request {
        path,
        query,
        host: host.to_owned(),
        origin: value_at(&headers, seen.origin).map(str::to_owned),
        protocols,
        key: key.to_owned(),
        headers,
        expect_continue: seen.expect_continue,
    })
}

/// A `Content-Length` that announces no content: `1*DIGIT` of value 0 (RFC 9110 8.6), so
/// `00` as well as `0`. Anything else (a length, a list, a malformed value) is a body, or a
/// request RFC 9112 6.3 has us refuse with 400 all the same.
fn is_zero_length(value: &[u8]) -> bool {
    !value.is_empty() && value.iter().all(|&b| b == b'0')
}

fn value_at(headers: &[(String, String)], index: Option<usize>) -> Option<&str> {
    headers.get(index?).map(|(_, v)| v.as_str())
}

/// Takes the next CRLF-terminated line off `rest`, without its CRLF.
fn next_line<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let lf = memchr::memchr(b'\n', rest)?;
    let (line, after) = rest.split_at(lf);
    *rest = after.get(1..).unwrap_or(&[]);
    // check_lines guarantees the CR; strip it only if present, so a broken caller cannot panic.
    Some(line.strip_suffix(b"\r").unwrap_or(line))
}

/// `method SP request-target SP HTTP-version`, single spaces (RFC 9112 section 3).
/// Returns (path, query), or for a method other than GET the 405 to answer once the header
/// fields are checked: a request with a missing or bad Host gets 400 whatever its method (RFC
/// 9112 3.2), and so does one with a malformed field line.
fn parse_request_line(
    line: &[u8],
) -> Result<Result<(String, Option<String>), HandshakeError>, HandshakeError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if !is_token(method) {
        return Err(bad("malformed request method"));
    }
    check_version(version)?;
    // Item 1: "An HTTP/1.1 or higher GET request".
    if method != b"GET" {
        // RFC 9110 9.1: 501 for a method the server does not recognize, 405 for a known one
        // the resource does not allow. Methods are case-sensitive: `get` is unknown.
        const KNOWN: &[&[u8]] = &[
            b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
        ];
        let refusal = if KNOWN.contains(&method) {
            HandshakeError::new(405, "method not allowed")
        } else {
            HandshakeError::new(501, "method not implemented")
        };
        return Ok(Err(HandshakeError {
            head: method == b"HEAD",
            ..refusal
        }));
    }
    parse_target(target).map(Ok)
}

/// Item 1 asks for "HTTP/1.1 or higher"; HTTP/1.x with x >= 1 is answered as 1.1 (RFC 9110 2.5).
fn check_version(version: &[u8]) -> Result<(), HandshakeError> {
    let Some(&[major, b'.', minor]) = version.strip_prefix(b"HTTP/") else {
        return Err(bad("malformed HTTP version"));
    };
    if !major.is_ascii_digit() || !minor.is_ascii_digit() {
        return Err(bad("malformed HTTP version"));
    }
    match major {
        b'0' => Err(bad("HTTP/1.1 or higher required")),
        b'1' if minor == b'0' => Err(bad("HTTP/1.1 or higher required")),
        b'1' => Ok(()),
        _ => Err(HandshakeError::new(505, "HTTP version not supported")),
    }
}

/// Origin-form (`/path?query`) or absolute-form (`ws://host/path?query`, RFC 6455 item 1 allows
/// "an absolute HTTP/HTTPS URI"). The authority of an absolute-form target is held to the rules
/// of `Host` (no userinfo: RFC 9110 4.2.4) but not compared with it: routing uses the path only.
fn parse_target(target: &[u8]) -> Result<(String, Option<String>), HandshakeError> {
    if target.is_empty() || !target.iter().all(|b| b.is_ascii_graphic()) {
        return Err(bad("malformed request target"));
    }
    if target.contains(&b'#') {
        return Err(bad("fragment in request target"));
    }
    let origin_form = if target.first() == Some(&b'/') {
        target
    } else {
        let sep = memmem::find(target, b"://").ok_or_else(|| bad("malformed request target"))?;
        let scheme = target.get(..sep).unwrap_or(&[]);
        if !["http", "https", "ws", "wss"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s.as_bytes()))
        {
            return Err(bad("unsupported request target scheme"));
        }
        let after = target.get(sep + 3..).unwrap_or(&[]);
        let path_start = after
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(after.len());
        if path_start == 0 {
            return Err(bad("missing authority in request target"));
        }
        let authority = after.get(..path_start).unwrap_or(&[]);
        // ASCII (checked above), so always UTF-8.
        if !std::str::from_utf8(authority).is_ok_and(is_host_and_port) {
            return Err(bad("malformed authority in request target"));
        }
        after.get(path_start..).unwrap_or(&[])
    };
    let (path, query) = match memchr::memchr(b'?', origin_form) {
        Some(q) => (
            origin_form.get(..q).unwrap_or(&[]),
            Some(ascii_string(origin_form.get(q + 1..).unwrap_or(&[]))),
        ),
        None => (origin_form, None),
    };
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        ascii_string(path)
    };
    Ok((path, query))
}

/// `field-name ":" OWS field-value OWS` (RFC 9112 section 5). Returns (name, trimmed value).
fn split_header(line: &[u8]) -> Result<(&[u8], &[u8]), HandshakeError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        // RFC 9112 5.2: obs-fold MUST be rejected with 400 outside message/http.
        return Err(bad("obsolete line folding"));
    }
    let colon = memchr::memchr(b':', line).ok_or_else(|| bad("header line without colon"))?;
    let name = line.get(..colon).unwrap_or(&[]);
    if !is_token(name) {
        return Err(bad("invalid header name"));
    }
    let value = trim_ows(line.get(colon + 1..).unwrap_or(&[]));
    // RFC 9110 5.5: "Field values containing CR, LF, or NUL characters are invalid and
    // dangerous"; other control characters are invalid too (only HTAB is whitespace).
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(bad("invalid character in header value"));
    }
    Ok((name, value))
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Items of a comma-separated list (RFC 9110 5.6.1), trimmed, empty items skipped.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|item| !item.is_empty())
}

fn list_contains(value: &[u8], token: &[u8]) -> bool {
    list_items(value).any(|item| item.eq_ignore_ascii_case(token))
}

/// `uri-host [ ":" port ]` (RFC 9112 3.2, RFC 3986 3.2.2-3.2.3): an IP literal in brackets
/// (IPv6 or IPvFuture) or a reg-name (an IPv4 address is one too), then an optional colon and
/// digits.
fn is_host_and_port(host: &str) -> bool {
    let (name_ok, rest) = match host.strip_prefix('[') {
        Some(literal) => match literal.split_once(']') {
            Some((ip, rest)) => (is_ip_literal(ip), rest),
            None => return false,
        },
        None => {
            let end = host.find(':').unwrap_or(host.len());
            let (name, rest) = host.split_at(end);
            (is_reg_name(name), rest)
        }
    };
    let port_ok = match rest.strip_prefix(':') {
        Some(port) => port.bytes().all(|b| b.is_ascii_digit()),
        None => rest.is_empty(),
    };
    name_ok && port_ok
}

/// What stands between the brackets: `IPv6address / IPvFuture`.
fn is_ip_literal(ip: &str) -> bool {
    if ip.parse::<std::net::Ipv6Addr>().is_ok() {
        return true;
    }
    // IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
    let Some(future) = ip.strip_prefix(['v', 'V']) else {
        return false;
    };
    let Some((version, address)) = future.split_once('.') else {
        return false;
    };
    !version.is_empty()
        && version.bytes().all(|b| b.is_ascii_hexdigit())
        && !address.is_empty()
        && address
            .bytes()
            .all(|b| is_unreserved(b) || is_sub_delim(b) || b == b':')
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`, non-empty here (RFC 9112 3.2: a
/// Host of an http URI has a host). An IPv4 address is one too.
pub(crate) fn is_reg_name(name: &str) -> bool {
    let b = name.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(|h| h.is_ascii_hexdigit());
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if is_unreserved(c) || is_sub_delim(c) {
            i += 1;
        } else {
            return false;
        }
    }
    !b.is_empty()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// `token = 1*tchar` (RFC 9110 5.6.2).
fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// `tchar` (RFC 9110 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Only called on bytes already checked to be ASCII (tokens, request target).
fn ascii_string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn is_base64_of_16_bytes(key: &[u8]) -> bool {
    base64_decode(key).is_some_and(|bytes| bytes.len() == 16)
}

/// `base64(SHA-1(key + GUID))`, the `Sec-WebSocket-Accept` value (RFC 6455 section 4.2.2 item 5).
pub fn accept_key(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(WS_GUID.as_bytes());
    base64_encode(ctx.finish().as_ref())
}

/// The `101 Switching Protocols` answer. `protocol` is the service's subprotocol (its
/// `proto_alias`): it is announced only when the client offered it, since a client must fail a
/// connection whose answer names a subprotocol it did not ask for (RFC 6455 section 4.1, item
/// 6 of the client's checks; section 4.2.2). `extra_headers` are appended as given and must
/// not contain CR or LF (they come from our configuration, not from the peer). A request that
/// sent `Expect: 100-continue` gets a `100 Continue` first: RFC 9110 7.8, "the server MUST
/// send a 100 (Continue) response before sending a 101 (Switching Protocols) response".
pub fn response_101(
    req: &Request,
    protocol: Option<&str>,
    extra_headers: &[(String, String)],
) -> Vec<u8> {
    let protocol = protocol.filter(|p| req.protocols.iter().any(|offered| offered == p));
    let mut out = Vec::with_capacity(160);
    if req.expect_continue {
        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    push_header(&mut out, "Sec-WebSocket-Accept", &accept_key(&req.key));
    if let Some(p) = protocol {
        push_header(&mut out, "Sec-WebSocket-Protocol", p);
    }
    for (name, value) in extra_headers {
        push_header(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    debug_assert!(
        !name.contains(['\r', '\n']) && !value.contains(['\r', '\n']),
        "header injection: {name:?}: {value:?}"
    );
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The standard reason phrase of the statuses we answer with.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// A complete error response; the connection is to be closed after it. `reason` becomes the
/// plain-text body. 426 carries `Upgrade: websocket` with `upgrade` in `Connection` (RFC 9110
/// 15.5.22 and 7.8) and `Sec-WebSocket-Version: 13` (RFC 6455 section 4.4); 405 carries
/// `Allow: GET` (RFC 9110 15.5.6).
pub fn error_response(status: u16, reason: &str) -> Vec<u8> {
    response_with(status, reason, true)
}

/// [`error_response`] to a request whose first bytes are `request` (complete or not): without
/// content when it is a HEAD (RFC 9110 section 9.3.2), as [`HandshakeError::response`] does.
pub fn error_response_to(request: &[u8], status: u16, reason: &str) -> Vec<u8> {
    response_with(status, reason, !is_head(request))
}

/// The request line of the request in `buf` (after one optional empty line), as far as it came,
/// for a log line: what a refused request asked is what an operator wants to see. Cut at the
/// first control character (its CR, or the binary of what was no HTTP request, such as a
/// ClientHello: then it is empty), and whole otherwise: the log shows its start and its length
/// (`crate::log::shown`), which for a 414 is what the operator asks about.
///
/// The query and a fragment are left out (`?...`): clients that cannot set headers (browsers)
/// carry tokens there, and the log must not keep them.
pub fn request_line(buf: &[u8]) -> String {
    let rest = buf.strip_prefix(b"\r\n").unwrap_or(buf);
    let end = rest
        .iter()
        .position(|b| b.is_ascii_control())
        .unwrap_or(rest.len());
    let line = rest.get(..end).unwrap_or_default();
    let line = match memchr::memchr2(b'?', b'#', line) {
        Some(q) => {
            // Keep the version after the target, if it came (and nothing else of the query).
            let after = line.get(q..).unwrap_or_default();
            let version = memchr::memrchr(b' ', after)
                .and_then(|sp| after.get(sp..))
                .filter(|v| {
                    matches!(v, [b' ', b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
                        if major.is_ascii_digit() && minor.is_ascii_digit())
                })
                .unwrap_or_default();
            [line.get(..q).unwrap_or_default(), b"?...", version].concat()
        }
        None => line.to_vec(),
    };
    String::from_utf8_lossy(&line).into_owned()
}

/// Whether the request in `buf` (after one optional empty line) is a HEAD.
fn is_head(buf: &[u8]) -> bool {
    buf.strip_prefix(b"\r\n")
        .unwrap_or(buf)
        .starts_with(b"HEAD ")
}

/// [`error_response`], with the content left out when `body` is false (the answer to a HEAD:
/// the same header fields, Content-Length included, and no content).
fn response_with(status: u16, reason: &str, body: bool) -> Vec<u8> {
    let date = crate::time_fmt::http_date(crate::time_fmt::now());
    response_dated(status, reason, body, &date)
}

/// [`response_with`] at the time `date` (an IMF-fixdate): RFC 9110 section 6.6.1 asks a
/// server with a clock for a `Date` in every 4xx answer (and allows one in a 5xx).
fn response_dated(status: u16, reason: &str, body: bool, date: &str) -> Vec<u8> {
    let phrase = reason_phrase(status);
    let body_len = reason.len() + 1;
    let mut out = Vec::with_capacity(160 + body_len);
    out.extend_from_slice(format!("HTTP/1.1 {status} {phrase}\r\nDate: {date}\r\n").as_bytes());
    if status == 426 {
        out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade, close\r\n");
    } else {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"Content-Type: text/plain\r\n");
    out.extend_from_slice(format!("Content-Length: {body_len}\r\n").as_bytes());
    match status {
        426 => out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\n"),
        405 => out.extend_from_slice(b"Allow: GET\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    if body {
        out.extend_from_slice(reason.as_bytes());
        out.push(b'\n');
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 section 4).
pub(crate) fn base64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    let sextet = |v: u32, shift: u32| char::from(B64[((v >> shift) & 63) as usize]);
    for chunk in input.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let v = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sextet(v, 18));
        out.push(sextet(v, 12));
        out.push(if chunk.len() > 1 { sextet(v, 6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(v, 0) } else { '=' });
    }
    out
}

fn b64_value(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    }))
}

/// Strict standard base64 with padding: `None` on a wrong length, a foreign character, misplaced
/// padding, or non-zero padding bits (so each byte string has exactly one accepted encoding).
pub(crate) fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    if input.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let last = input.len() / 4;
    for (i, quad) in input.chunks_exact(4).enumerate() {
        let &[a, b, c, d] = quad else { return None };
        let pad = match (c, d) {
            (b'=', b'=') => 2,
            (_, b'=') => 1,
            _ => 0,
        };
        if pad > 0 && i + 1 != last {
            return None;
        }
        // Padding was recognised above; anything else must be a base64 digit.
        let c = if pad == 2 { 0 } else { b64_value(c)? };
        let d = if pad >= 1 { 0 } else { b64_value(d)? };
        let n = (b64_value(a)? << 18) | (b64_value(b)? << 12) | (c << 6) | d;
        let [_, x, y, z] = n.to_be_bytes();
        match pad {
            0 => out.extend_from_slice(&[x, y, z]),
            1 if z == 0 => out.extend_from_slice(&[x, y]),
            2 if y == 0 && z == 0 => out.push(x),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
