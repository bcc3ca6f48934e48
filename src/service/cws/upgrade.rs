//! The client side of the HTTP/1.1 upgrade (RFC 6455 section 4.1).
//!
//! Owns the request text and the checks on the server's answer: status 101, `Upgrade:
//! websocket`, `Connection: Upgrade`, the `Sec-WebSocket-Accept` matching our key, and no
//! extension or subprotocol we did not ask for. It never does I/O; all input is the peer's
//! and is only searched and compared, never indexed blindly.

use super::url::Url;
use crate::ws::handshake::{accept_key, base64_encode};

/// Largest upgrade answer accepted.
pub const MAX_RESPONSE: usize = 16 * 1024;

/// The request and the `Sec-WebSocket-Accept` value it must be answered with.
pub fn request(url: &Url, nonce: &[u8; 16]) -> (Vec<u8>, String) {
    let key = base64_encode(nonce);
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         User-Agent: lapps-cws\r\n\r\n",
        url.target, url.authority
    );
    (req.into_bytes(), accept_key(&key))
}

/// `Ok(None)`: the answer is not complete yet. `Ok(Some(n))`: valid, `n` bytes long (what
/// follows is WebSocket data). `Err`: the upgrade failed, with a reason for `onerror`.
///
/// Interim answers (1xx other than 101, such as a `100 Continue`) before the 101 are skipped:
/// RFC 9110 section 15.2 has a client parse them even when it did not ask for one. They count
/// against `MAX_RESPONSE` with the answer.
pub fn check_response(buf: &[u8], accept: &str) -> Result<Option<usize>, String> {
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
        return check_head(&head, accept).map(|()| Some(start + end + 4));
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

/// Checks the head of the final answer (without its empty line).
fn check_head(head: &str, accept: &str) -> Result<(), String> {
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
            // RFC 6455 4.1: fail when it indicates one we did not offer (we offer none); an
            // empty list indicates none.
            "sec-websocket-extensions" if names_any(value) => {
                return Err("the server chose an extension that was not offered".into())
            }
            "sec-websocket-protocol" if names_any(value) => {
                return Err("the server chose a subprotocol that was not offered".into())
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
    Ok(())
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

    #[test]
    fn the_answer_must_match_the_key_and_be_a_websocket_upgrade() {
        let url = super::super::url::parse("ws://127.0.0.1:9/p").unwrap();
        let (req, accept) = request(&url, b"the sample nonce");
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
        assert_eq!(check_response(good.as_bytes(), &accept), Ok(Some(n)));
        assert_eq!(check_response(&good.as_bytes()[..n - 1], &accept), Ok(None));
        let wrong = good.replace(&accept, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert!(check_response(wrong.as_bytes(), &accept).is_err());
        let refused = "HTTP/1.1 404 Not Found\r\n\r\n";
        let e = check_response(refused.as_bytes(), &accept).unwrap_err();
        assert!(e.contains("404"), "{e}");
        let ext = good.replace("\r\n\r\n", "\r\nSec-WebSocket-Extensions: x\r\n\r\n");
        assert!(check_response(ext.as_bytes(), &accept).is_err());
        let proto = good.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: , chat\r\n\r\n");
        assert!(check_response(proto.as_bytes(), &accept).is_err());
        // An empty list chooses nothing.
        for empty in [
            "Sec-WebSocket-Extensions:\r\n",
            "Sec-WebSocket-Protocol:  , \r\n",
        ] {
            let none = good.replace("\r\n\r\n", &format!("\r\n{empty}\r\n"));
            assert_eq!(
                check_response(none.as_bytes(), &accept),
                Ok(Some(none.len() - 2)),
                "{empty}"
            );
        }
        assert!(check_response(&vec![b'a'; MAX_RESPONSE + 1], &accept).is_err());
    }

    /// The accept value for a request with the sample nonce, and a valid 101 carrying it.
    fn accept_and_answer() -> (String, String) {
        let url = super::super::url::parse("ws://127.0.0.1:9/p").unwrap();
        let (_, accept) = request(&url, b"the sample nonce");
        let good = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        (accept, good)
    }

    #[test]
    fn a_doubled_accept_an_old_version_or_an_oversized_answer_is_refused() {
        let (accept, good) = accept_and_answer();
        assert!(check_response(good.as_bytes(), &accept).is_ok());
        // A wrong value first and the right one after: the last one used to win.
        let twice = good.replace(
            "Sec-WebSocket-Accept",
            "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\nSec-WebSocket-Accept",
        );
        let e = check_response(twice.as_bytes(), &accept).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let old = good.replace("HTTP/1.1 101", "HTTP/1.0 101");
        assert!(check_response(old.as_bytes(), &accept).is_err());
        // Upgrade and Connection are lists and may be split over lines.
        let split = good.replace(
            "Connection: Upgrade",
            "Connection: keep-alive\r\nConnection: Upgrade",
        );
        assert!(check_response(split.as_bytes(), &accept).is_ok());
        // Upgrade is "websocket" and nothing else (RFC 6455 4.1), in every line of it.
        for other in ["websocket, h2c", "h2c", "websocket2"] {
            let bad = good.replace("Upgrade: websocket", &format!("Upgrade: {other}"));
            let e = check_response(bad.as_bytes(), &accept).unwrap_err();
            assert!(e.contains("not websocket"), "{other}: {e}");
        }
        let two = good.replace("Upgrade: websocket", "Upgrade: websocket\r\nUpgrade: h2c");
        assert!(check_response(two.as_bytes(), &accept).is_err());
        // A folded line continues the field before it (RFC 9112 5.2), never a field of its
        // own; a space before the colon makes no field name.
        let folded = good.replace("Upgrade: websocket", "X-Note: a\r\n Upgrade: websocket");
        let e = check_response(folded.as_bytes(), &accept).unwrap_err();
        assert!(e.contains("lacks Upgrade"), "{e}");
        let folded_list = good.replace(
            "Connection: Upgrade",
            "Connection: keep-alive,\r\n\tUpgrade",
        );
        assert!(check_response(folded_list.as_bytes(), &accept).is_ok());
        let spaced = good.replace("Upgrade: websocket", "Upgrade : websocket");
        let e = check_response(spaced.as_bytes(), &accept).unwrap_err();
        assert!(e.contains("malformed header line"), "{e}");
        // Bare LF line endings: refused as soon as the empty line shows, not waited on.
        let lf = good.replace("\r\n", "\n");
        let e = check_response(lf.as_bytes(), &accept).unwrap_err();
        assert!(e.contains("bare LF"), "{e}");
        let e = check_response(&lf.as_bytes()[..lf.find("\n\n").unwrap() + 2], &accept);
        assert!(e.unwrap_err().contains("bare LF"));
        // Complete but past the limit (it came in one read).
        let big = good.replace(
            "\r\n\r\n",
            &format!("\r\nX-Pad: {}\r\n\r\n", "p".repeat(MAX_RESPONSE)),
        );
        assert!(check_response(big.as_bytes(), &accept).is_err());
    }

    #[test]
    fn a_servers_text_in_an_error_has_its_control_characters_escaped() {
        let e = check_response(b"HTTP/1.1 400 \x1b[31mred\x07\r\n\r\n", "x").unwrap_err();
        assert_eq!(e, "upgrade refused: HTTP/1.1 400 \\u{1b}[31mred\\u{7}");
        let long = format!("HTTP/1.1 400 {}\r\n\r\n", "é".repeat(100));
        let e = check_response(long.as_bytes(), "x").unwrap_err();
        assert_eq!(e.chars().count(), "upgrade refused: ".len() + 80);
        // A backslash of the server's cannot pass for an escape; a bidi override is escaped.
        let e = check_response("HTTP/1.1 400 \\u{1b} \u{202e}x\r\n\r\n".as_bytes(), "x");
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
        assert_eq!(check_response(both.as_bytes(), &accept), Ok(Some(n)));
        // Not decided while only interim answers came.
        assert_eq!(check_response(interim.as_bytes(), &accept), Ok(None));
        assert_eq!(check_response(&both.as_bytes()[..n - 1], &accept), Ok(None));
        // What follows them is checked as any answer is.
        let refused = format!("{interim}HTTP/1.1 403 Forbidden\r\n\r\n");
        let e = check_response(refused.as_bytes(), &accept).unwrap_err();
        assert!(e.contains("403"), "{e}");
        // Only 1xx of HTTP/1.1, three digits; a 1xx status in another form is a refusal.
        for not_interim in ["HTTP/1.0 100 Continue", "HTTP/1.1 1000 X", "HTTP/1.1 10 X"] {
            let odd = format!("{not_interim}\r\n\r\n{good}");
            let e = check_response(odd.as_bytes(), &accept).unwrap_err();
            assert!(e.contains("refused"), "{not_interim}: {e}");
        }
        // They count against the limit with the answer.
        let many = format!("{}{good}", interim.repeat(MAX_RESPONSE / interim.len() + 1));
        let e = check_response(many.as_bytes(), &accept).unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }
}
