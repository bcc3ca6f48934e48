//! The client side of the HTTP/1.1 upgrade (RFC 6455 section 4.1).
//!
//! Owns the request text (with the app's [`Offer`]: subprotocols and header fields) and the
//! checks on the server's answer: status 101, `Upgrade: websocket`, `Connection: Upgrade`, the
//! `Sec-WebSocket-Accept` matching our key, no extension, and no subprotocol but one we
//! offered. It never does I/O; all input is the peer's and is only searched and compared,
//! never indexed blindly.

use super::url::Url;
use crate::ws::handshake::{accept_key, base64_encode};

/// Largest upgrade answer accepted.
pub const MAX_RESPONSE: usize = 16 * 1024;

/// Most subprotocols one request offers.
pub const MAX_PROTOCOLS: usize = 32;

/// Most bytes the app's offer may take in the request: its header names and values and its
/// subprotocols together. With the URL and the client's own fields the head stays within the
/// 8 KiB that servers commonly take (lapps's own `max_request_bytes` default among them).
pub const MAX_OFFER_BYTES: usize = 6 * 1024;

/// Header fields the client writes itself, or that would make the request something else
/// than an upgrade (a body, another host); the app may not set them.
const OWN_HEADERS: [&str; 8] = [
    "host",
    "upgrade",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "expect",
];

/// What the app asks of the upgrade beyond the upgrade itself: subprotocols to offer, in its
/// order of preference (RFC 6455 4.1, `Sec-WebSocket-Protocol`), and header fields of its own
/// (an `Authorization`, a `Cookie`, an `Origin`). Each one is checked as it is added, so that
/// nothing the app gives can break the request's head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offer {
    protocols: Vec<String>,
    headers: Vec<(String, String)>,
    /// What the offer adds to the request, as counted against [`MAX_OFFER_BYTES`].
    bytes: usize,
}

impl Offer {
    /// Adds a subprotocol: a token (RFC 6455 4.1, RFC 9110 5.6.2), not offered already.
    pub fn add_protocol(&mut self, name: &str) -> Result<(), String> {
        if !is_token(name) {
            return Err(format!(
                "{} is not a subprotocol name (a token: letters, digits and !#$%&'*+-.^_`|~)",
                quoted(name)
            ));
        }
        if self.protocols.iter().any(|p| p == name) {
            return Err(format!("{} is offered twice", quoted(name)));
        }
        if self.protocols.len() == MAX_PROTOCOLS {
            return Err(format!("more than {MAX_PROTOCOLS} subprotocols"));
        }
        self.count(name.len())?;
        self.protocols.push(name.to_string());
        Ok(())
    }

    /// Adds a header field: its name a token and not one the client sets
    /// (`OWN_HEADERS`, `Sec-WebSocket-*`), its value visible ASCII, spaces, tabs and
    /// non-ASCII bytes (RFC 9110 5.5: no CR, LF or NUL), not beginning or ending in white
    /// space. A `User-Agent` replaces the client's own.
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        if !is_token(name) {
            return Err(format!("{} is not a header field name", quoted(name)));
        }
        let lower = name.to_ascii_lowercase();
        if OWN_HEADERS.contains(&lower.as_str()) || lower.starts_with("sec-websocket-") {
            return Err(format!("{name} is set by the client itself"));
        }
        // One field line per name: a server may refuse a repeated one (an Origin).
        if self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            return Err(format!("{name} is given twice"));
        }
        let field_char = |b: u8| b == b'\t' || b == b' ' || b >= 0x21 && b != 0x7f;
        if !value.bytes().all(field_char) {
            return Err(format!(
                "the value of {name} has a control character (CR, LF, NUL or the like)"
            ));
        }
        if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
            return Err(format!(
                "the value of {name} begins or ends with white space"
            ));
        }
        self.count(name.len() + value.len())?;
        self.headers.push((name.to_string(), value.to_string()));
        Ok(())
    }

    /// Counts `n` more bytes of the offer, refusing what would pass [`MAX_OFFER_BYTES`].
    fn count(&mut self, n: usize) -> Result<(), String> {
        if self.bytes + n > MAX_OFFER_BYTES {
            return Err(format!(
                "the header fields and subprotocols take more than {MAX_OFFER_BYTES} bytes"
            ));
        }
        self.bytes += n;
        Ok(())
    }

    /// The subprotocols offered, in order.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }
}

/// `s` quoted for an error message, its control characters escaped.
fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// The request and the `Sec-WebSocket-Accept` value it must be answered with.
pub fn request(url: &Url, nonce: &[u8; 16], offer: &Offer) -> (Vec<u8>, String) {
    let key = base64_encode(nonce);
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        url.target, url.authority
    );
    if !offer.protocols.is_empty() {
        req.push_str("Sec-WebSocket-Protocol: ");
        req.push_str(&offer.protocols.join(", "));
        req.push_str("\r\n");
    }
    let mut agent = false;
    for (name, value) in &offer.headers {
        agent |= name.eq_ignore_ascii_case("user-agent");
        req.push_str(name);
        req.push_str(": ");
        req.push_str(value);
        req.push_str("\r\n");
    }
    if !agent {
        req.push_str("User-Agent: lapps-cws\r\n");
    }
    req.push_str("\r\n");
    (req.into_bytes(), accept_key(&key))
}

/// A valid upgrade answer: `len` bytes long (what follows is WebSocket data), and the
/// subprotocol the server chose of those offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub len: usize,
    pub protocol: Option<String>,
}

/// `Ok(None)`: the answer is not complete yet. `Ok(Some(answer))`: valid. `Err`: the upgrade
/// failed, with a reason for `onerror`. `offered`: the subprotocols the request offered.
///
/// Interim answers (1xx other than 101, such as a `100 Continue`) before the 101 are skipped:
/// RFC 9110 section 15.2 has a client parse them even when it did not ask for one. They count
/// against `MAX_RESPONSE` with the answer.
pub fn check_response(
    buf: &[u8],
    accept: &str,
    offered: &[String],
) -> Result<Option<Answer>, String> {
    // An answer that fits ends within the first MAX_RESPONSE bytes: no need to look further.
    let window = buf.get(..MAX_RESPONSE).unwrap_or(buf);
    let mut start = 0;
    loop {
        let rest = window.get(start..).unwrap_or_default();
        let end = memchr::memmem::find(rest, b"\r\n\r\n");
        // A head ended by an empty line of a bare LF (RFC 9112 2.2 lets a recipient take it,
        // we do not): refused at once, rather than waited on until the connect timeout.
        // Only up to the CRLFCRLF: interim answers must not make each call rescan the rest.
        let before_end = end.map_or(rest, |crlf| rest.get(..crlf + 1).unwrap_or(rest));
        if memchr::memmem::find(before_end, b"\n\n").is_some() {
            return Err("the upgrade answer's lines end in a bare LF, not CRLF".into());
        }
        let Some(end) = end else {
            if buf.len() >= MAX_RESPONSE {
                return Err("upgrade answer too large".into());
            }
            return Ok(None);
        };
        let head = String::from_utf8_lossy(rest.get(..end).unwrap_or_default());
        if is_interim(&head) {
            start += end + 4;
            continue;
        }
        return check_head(&head, accept, offered).map(|protocol| {
            Some(Answer {
                len: start + end + 4,
                protocol,
            })
        });
    }
}

/// Whether `head` is an interim answer: `HTTP/1.1 1xx` but not the 101 (RFC 9110 15.2).
fn is_interim(head: &str) -> bool {
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .unwrap_or_default();
    status.len() == 3
        && status.starts_with('1')
        && status.bytes().all(|b| b.is_ascii_digit())
        && status != "101"
        && head
            .as_bytes()
            .get(12)
            .is_none_or(|&b| b == b' ' || b == b'\r')
}

/// Checks the head of the final answer (without its empty line); the subprotocol it chose.
fn check_head(head: &str, accept: &str, offered: &[String]) -> Result<Option<String>, String> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    // RFC 9112 5.2: a line that begins with white space continues the field before it
    // (obs-fold), which a user agent replaces with a space before reading the value.
    let mut fields: Vec<String> = Vec::new();
    for line in lines {
        match fields.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => fields.push(line.to_string()),
        }
    }
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().unwrap_or_default();
    // 101 is HTTP/1.1's (RFC 6455 section 4.1: the answer is an HTTP/1.1 one).
    if version != "HTTP/1.1" || status != "101" {
        return Err(format!("upgrade refused: {}", peer_text(status_line, 80)));
    }
    let (mut upgrade, mut connection) = (false, false);
    let mut accepted = None;
    let mut protocol: Option<String> = None;
    for line in &fields {
        // A field name is a token right before the colon (RFC 9110 5.1, 5.6.2).
        let Some((name, value)) = line.split_once(':').filter(|(n, _)| is_token(n)) else {
            return Err(format!(
                "malformed header line in the upgrade answer: {}",
                peer_text(line, 80)
            ));
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            // RFC 6455 4.1: a value other than "websocket" fails the connection.
            "upgrade" if value.eq_ignore_ascii_case("websocket") => upgrade = true,
            "upgrade" => {
                return Err(format!(
                    "the answer upgrades to \"{}\", not websocket",
                    peer_text(value, 40)
                ))
            }
            // A list, which may come in several lines (RFC 9110 section 5.3).
            "connection" => connection |= has_token(value, "upgrade"),
            "sec-websocket-accept" => {
                if accepted.is_some() {
                    // RFC 6455 section 4.1: it must not appear more than once.
                    return Err("Sec-WebSocket-Accept appears twice in the upgrade answer".into());
                }
                accepted = Some(value == accept);
            }
            // RFC 6455 4.1: fail when it indicates one we did not offer (we offer no
            // extension); an empty list indicates none.
            "sec-websocket-extensions" if names_any(value) => {
                return Err("the server chose an extension that was not offered".into())
            }
            // RFC 6455 4.2.2 item 5.4: the server selects one of the offered subprotocols
            // (one value, in one field line).
            "sec-websocket-protocol" if names_any(value) => {
                if protocol.is_some() || value.contains(',') {
                    return Err("the server chose more than one subprotocol".into());
                }
                if !offered.iter().any(|p| p == value) {
                    return Err(format!(
                        "the server chose a subprotocol that was not offered: \"{}\"",
                        peer_text(value, 40)
                    ));
                }
                protocol = Some(value.to_string());
            }
            _ => {}
        }
    }
    if !upgrade || !connection {
        return Err("the answer lacks Upgrade: websocket / Connection: Upgrade".into());
    }
    if accepted != Some(true) {
        return Err("wrong Sec-WebSocket-Accept".into());
    }
    Ok(protocol)
}

/// The first `max` characters of `s`, a server's text, for an `onerror` message, each escaped
/// as `{:?}` escapes a `char` (control and format characters such as a server's ESC or a bidi
/// override, quotes, backslashes), so that an app may write the message anywhere and an
/// escape in it is always ours.
fn peer_text(s: &str, max: usize) -> String {
    s.chars().take(max).flat_map(char::escape_debug).collect()
}

/// Whether a list field's value (RFC 9110 5.6.1) has an element: `""` and `" , "` have none.
fn names_any(value: &str) -> bool {
    value.split(',').any(|item| !item.trim().is_empty())
}

/// An HTTP token (RFC 9110 5.6.2): one or more tchar.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether the comma-separated list `value` holds `token` (case-insensitively).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid answer `len` bytes long that chose no subprotocol.
    fn answer(len: usize) -> Answer {
        Answer {
            len,
            protocol: None,
        }
    }

    #[test]
    fn the_answer_must_match_the_key_and_be_a_websocket_upgrade() {
        let url = super::super::url::parse("ws://127.0.0.1:9/p").unwrap();
        let (req, accept) = request(&url, b"the sample nonce", &Offer::default());
        let req = String::from_utf8(req).unwrap();
        assert!(req.starts_with("GET /p HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
        // RFC 6455 section 1.3's example key and answer.
        assert!(req.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let good = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\n\
             Connection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\nXY"
        );
        let n = good.len() - 2;
        assert_eq!(
            check_response(good.as_bytes(), &accept, &[]),
            Ok(Some(answer(n)))
        );
        assert_eq!(
            check_response(&good.as_bytes()[..n - 1], &accept, &[]),
            Ok(None)
        );
        let wrong = good.replace(&accept, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert!(check_response(wrong.as_bytes(), &accept, &[]).is_err());
        let refused = "HTTP/1.1 404 Not Found\r\n\r\n";
        let e = check_response(refused.as_bytes(), &accept, &[]).unwrap_err();
        assert!(e.contains("404"), "{e}");
        let ext = good.replace("\r\n\r\n", "\r\nSec-WebSocket-Extensions: x\r\n\r\n");
        assert!(check_response(ext.as_bytes(), &accept, &[]).is_err());
        let proto = good.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: , chat\r\n\r\n");
        assert!(check_response(proto.as_bytes(), &accept, &[]).is_err());
        // An empty list chooses nothing.
        for empty in [
            "Sec-WebSocket-Extensions:\r\n",
            "Sec-WebSocket-Protocol:  , \r\n",
        ] {
            let none = good.replace("\r\n\r\n", &format!("\r\n{empty}\r\n"));
            assert_eq!(
                check_response(none.as_bytes(), &accept, &[]),
                Ok(Some(answer(none.len() - 2))),
                "{empty}"
            );
        }
        assert!(check_response(&vec![b'a'; MAX_RESPONSE + 1], &accept, &[]).is_err());
    }

    /// The accept value for a request with the sample nonce, and a valid 101 carrying it.
    fn accept_and_answer() -> (String, String) {
        let url = super::super::url::parse("ws://127.0.0.1:9/p").unwrap();
        let (_, accept) = request(&url, b"the sample nonce", &Offer::default());
        let good = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        (accept, good)
    }

    #[test]
    fn a_doubled_accept_an_old_version_or_an_oversized_answer_is_refused() {
        let (accept, good) = accept_and_answer();
        assert!(check_response(good.as_bytes(), &accept, &[]).is_ok());
        // A wrong value first and the right one after: the last one used to win.
        let twice = good.replace(
            "Sec-WebSocket-Accept",
            "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\nSec-WebSocket-Accept",
        );
        let e = check_response(twice.as_bytes(), &accept, &[]).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let old = good.replace("HTTP/1.1 101", "HTTP/1.0 101");
        assert!(check_response(old.as_bytes(), &accept, &[]).is_err());
        // Upgrade and Connection are lists and may be split over lines.
        let split = good.replace(
            "Connection: Upgrade",
            "Connection: keep-alive\r\nConnection: Upgrade",
        );
        assert!(check_response(split.as_bytes(), &accept, &[]).is_ok());
        // Upgrade is "websocket" and nothing else (RFC 6455 4.1), in every line of it.
        for other in ["websocket, h2c", "h2c", "websocket2"] {
            let bad = good.replace("Upgrade: websocket", &format!("Upgrade: {other}"));
            let e = check_response(bad.as_bytes(), &accept, &[]).unwrap_err();
            assert!(e.contains("not websocket"), "{other}: {e}");
        }
        let two = good.replace("Upgrade: websocket", "Upgrade: websocket\r\nUpgrade: h2c");
        assert!(check_response(two.as_bytes(), &accept, &[]).is_err());
        // A folded line continues the field before it (RFC 9112 5.2), never a field of its
        // own; a space before the colon makes no field name.
        let folded = good.replace("Upgrade: websocket", "X-Note: a\r\n Upgrade: websocket");
        let e = check_response(folded.as_bytes(), &accept, &[]).unwrap_err();
        assert!(e.contains("lacks Upgrade"), "{e}");
        let folded_list = good.replace(
            "Connection: Upgrade",
            "Connection: keep-alive,\r\n\tUpgrade",
        );
        assert!(check_response(folded_list.as_bytes(), &accept, &[]).is_ok());
        let spaced = good.replace("Upgrade: websocket", "Upgrade : websocket");
        let e = check_response(spaced.as_bytes(), &accept, &[]).unwrap_err();
        assert!(e.contains("malformed header line"), "{e}");
        // Bare LF line endings: refused as soon as the empty line shows, not waited on.
        let lf = good.replace("\r\n", "\n");
        let e = check_response(lf.as_bytes(), &accept, &[]).unwrap_err();
        assert!(e.contains("bare LF"), "{e}");
        let e = check_response(&lf.as_bytes()[..lf.find("\n\n").unwrap() + 2], &accept, &[]);
        assert!(e.unwrap_err().contains("bare LF"));
        // Complete but past the limit (it came in one read).
        let big = good.replace(
            "\r\n\r\n",
            &format!("\r\nX-Pad: {}\r\n\r\n", "p".repeat(MAX_RESPONSE)),
        );
        assert!(check_response(big.as_bytes(), &accept, &[]).is_err());
    }

    #[test]
    fn a_servers_text_in_an_error_has_its_control_characters_escaped() {
        let e = check_response(b"HTTP/1.1 400 \x1b[31mred\x07\r\n\r\n", "x", &[]).unwrap_err();
        assert_eq!(e, "upgrade refused: HTTP/1.1 400 \\u{1b}[31mred\\u{7}");
        let long = format!("HTTP/1.1 400 {}\r\n\r\n", "é".repeat(100));
        let e = check_response(long.as_bytes(), "x", &[]).unwrap_err();
        assert_eq!(e.chars().count(), "upgrade refused: ".len() + 80);
        // A backslash of the server's cannot pass for an escape; a bidi override is escaped.
        let e = check_response(
            "HTTP/1.1 400 \\u{1b} \u{202e}x\r\n\r\n".as_bytes(),
            "x",
            &[],
        );
        assert_eq!(
            e.unwrap_err(),
            "upgrade refused: HTTP/1.1 400 \\\\u{1b} \\u{202e}x"
        );
    }

    #[test]
    fn interim_answers_before_the_101_are_skipped() {
        let (accept, good) = accept_and_answer();
        let interim = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
        let both = format!("{interim}{good}XY");
        let n = both.len() - 2;
        assert_eq!(
            check_response(both.as_bytes(), &accept, &[]),
            Ok(Some(answer(n)))
        );
        // Not decided while only interim answers came.
        assert_eq!(check_response(interim.as_bytes(), &accept, &[]), Ok(None));
        assert_eq!(
            check_response(&both.as_bytes()[..n - 1], &accept, &[]),
            Ok(None)
        );
        // What follows them is checked as any answer is.
        let refused = format!("{interim}HTTP/1.1 403 Forbidden\r\n\r\n");
        let e = check_response(refused.as_bytes(), &accept, &[]).unwrap_err();
        assert!(e.contains("403"), "{e}");
        // Only 1xx of HTTP/1.1, three digits; a 1xx status in another form is a refusal.
        for not_interim in ["HTTP/1.0 100 Continue", "HTTP/1.1 1000 X", "HTTP/1.1 10 X"] {
            let odd = format!("{not_interim}\r\n\r\n{good}");
            let e = check_response(odd.as_bytes(), &accept, &[]).unwrap_err();
            assert!(e.contains("refused"), "{not_interim}: {e}");
        }
        // They count against the limit with the answer.
        let many = format!("{}{good}", interim.repeat(MAX_RESPONSE / interim.len() + 1));
        let e = check_response(many.as_bytes(), &accept, &[]).unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn offered_subprotocols_and_header_fields_go_into_the_request() {
        let url = super::super::url::parse("ws://127.0.0.1:9/p").unwrap();
        let mut offer = Offer::default();
        offer.add_protocol("v2.chat").unwrap();
        offer.add_protocol("chat").unwrap();
        offer.add_header("Authorization", "Bearer a b\tc").unwrap();
        offer.add_header("X-Utf8", "é").unwrap();
        let (req, _) = request(&url, b"the sample nonce", &offer);
        let req = String::from_utf8(req).unwrap();
        assert!(
            req.ends_with(
                "Sec-WebSocket-Protocol: v2.chat, chat\r\nAuthorization: Bearer a b\tc\r\n\
                 X-Utf8: é\r\nUser-Agent: lapps-cws\r\n\r\n"
            ),
            "{req}"
        );
        // The app's User-Agent replaces ours.
        offer.add_header("user-agent", "bot/1").unwrap();
        let (req, _) = request(&url, b"the sample nonce", &offer);
        let req = String::from_utf8(req).unwrap();
        assert!(req.ends_with("user-agent: bot/1\r\n\r\n"), "{req}");
        assert!(!req.contains("lapps-cws"), "{req}");
    }

    #[test]
    fn what_would_break_the_request_is_refused_when_it_is_offered() {
        let mut offer = Offer::default();
        for bad in ["", "a b", "a,b", "ch\r\nX: y", "é"] {
            let e = offer.add_protocol(bad).unwrap_err();
            assert!(e.contains("not a subprotocol name"), "{bad:?}: {e}");
        }
        offer.add_protocol("chat").unwrap();
        assert!(offer.add_protocol("chat").unwrap_err().contains("twice"));
        for i in 1..MAX_PROTOCOLS {
            offer.add_protocol(&format!("p{i}")).unwrap();
        }
        assert!(offer
            .add_protocol("one-more")
            .unwrap_err()
            .contains("more than"));
        for bad in ["", "X Y", "X:", "Na\rme"] {
            let e = offer.add_header(bad, "v").unwrap_err();
            assert!(e.contains("not a header field name"), "{bad:?}: {e}");
        }
        for own in [
            "Host",
            "upgrade",
            "CONNECTION",
            "Sec-WebSocket-Key",
            "sec-websocket-protocol",
        ] {
            let e = offer.add_header(own, "v").unwrap_err();
            assert!(e.contains("set by the client"), "{own}: {e}");
        }
        for bad in ["a\r\nX-Injected: 1", "a\nb", "a\0b", "a\x7fb"] {
            let e = offer.add_header("X-A", bad).unwrap_err();
            assert!(e.contains("control character"), "{bad:?}: {e}");
        }
        assert!(offer
            .add_header("X-A", " v")
            .unwrap_err()
            .contains("white space"));
        offer.add_header("X-Empty", "").unwrap();
        assert!(offer
            .add_header("x-empty", "")
            .unwrap_err()
            .contains("twice"));
        let big = "v".repeat(MAX_OFFER_BYTES);
        assert!(offer
            .add_header("X-Big", &big)
            .unwrap_err()
            .contains("more than"));
        // Subprotocols count against the same bound.
        let mut long = Offer::default();
        long.add_protocol(&"p".repeat(MAX_OFFER_BYTES - 1)).unwrap();
        assert!(long.add_protocol("pq").unwrap_err().contains("more than"));
        assert!(long.add_header("X", "").is_ok(), "one byte was left");
    }

    #[test]
    fn the_answer_may_choose_one_offered_subprotocol_and_no_other() {
        let (accept, good) = accept_and_answer();
        let offered = ["chat".to_string(), "v2.chat".to_string()];
        let with = |field: &str| good.replace("\r\n\r\n", &format!("\r\n{field}\r\n\r\n"));
        let chose = with("Sec-WebSocket-Protocol: v2.chat");
        assert_eq!(
            check_response(chose.as_bytes(), &accept, &offered),
            Ok(Some(Answer {
                len: chose.len(),
                protocol: Some("v2.chat".into())
            }))
        );
        // None chosen: the app is told none (RFC 6455 leaves the choice to the server).
        assert_eq!(
            check_response(good.as_bytes(), &accept, &offered),
            Ok(Some(answer(good.len())))
        );
        for not_offered in [
            "Sec-WebSocket-Protocol: superchat",
            "Sec-WebSocket-Protocol: Chat",
        ] {
            let bad = with(not_offered);
            let e = check_response(bad.as_bytes(), &accept, &offered).unwrap_err();
            assert!(e.contains("not offered"), "{not_offered}: {e}");
        }
        for twice in [
            "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat",
            "Sec-WebSocket-Protocol: chat, v2.chat",
        ] {
            let e = check_response(with(twice).as_bytes(), &accept, &offered).unwrap_err();
            assert_eq!(e, "the server chose more than one subprotocol", "{twice}");
        }
    }
}
