//! The `cid` of a message the decoder refused (beyond its depth or size limits, or malformed
//! somewhere), so that a client notification among them still gets no answer: an error
//! response would be taken by the client for the answer to its oldest pending call (SPEC 4).
//!
//! Owns a scan that reads any bytes without recursion and in memory bounded by
//! [`MAX_OPEN_INDEFINITE`]; it never panics. The keys and the `cid` it finds are read by the
//! decoder itself and judged by the rules of [`super::protocol`], so a message is taken for
//! a notification here when it would be one had it decoded; keys and values written in more
//! than [`MAX_JUDGED_ITEM`] bytes (a `"cid"` in many empty chunks, a bignum padded with zero
//! bytes) are not judged, which only a client writing its own messages that way can notice.

use super::cbor;
use super::lazy::{head, skip_tags};
use super::protocol::{is_named, notification_cid as channel_of};
use super::value::Value;

/// Indefinite-length items open at once that [`skip`] follows; deeper, it gives up.
const MAX_OPEN_INDEFINITE: usize = 1024;

/// The longest key or `cid` item that is decoded to be judged: `"cid"` or a channel number
/// takes a few bytes however it is written (tagged, in chunks, as a bignum or a float); a
/// longer item is neither.
const MAX_JUDGED_ITEM: usize = 64;

/// The channel of the first `cid` member of the map `b` holds that names a client-notification
/// channel (as [`super::protocol`] judges a decoded one: any such `cid` makes a notification,
/// given twice too). None when the map has no such member, or when its items cannot all be
/// passed over.
pub(crate) fn notification_cid(b: &[u8]) -> Option<u64> {
    let (5, len, mut pos) = head(b, skip_tags(b, 0))? else {
        return None;
    };
    let mut channel = None;
    let mut members = 0u64;
    loop {
        match len {
            Some(n) if members == n => break,
            None if *b.get(pos)? == 0xff => break,
            _ => {}
        }
        let value = skip(b, pos)?;
        let is_cid = small_item(b, pos, value).is_some_and(|k| is_named(&k, "cid"));
        pos = skip(b, value)?;
        if is_cid && channel.is_none() {
            channel = small_item(b, value, pos).as_ref().and_then(channel_of);
        }
        members += 1;
    }
    channel.map(|c| c.get())
}

/// The item `b[start..end]` as the decoder reads it, when it is at most [`MAX_JUDGED_ITEM`]
/// bytes and decodes.
fn small_item(b: &[u8], start: usize, end: usize) -> Option<Value> {
    let item = b.get(start..end).filter(|i| i.len() <= MAX_JUDGED_ITEM)?;
    cbor::decode(item).ok()
}

/// The offset after the item at `pos`, for any bytes. The items of definite containers are
/// counted on one counter (nesting needs no stack); each open indefinite item keeps the count
/// it interrupted until its break.
fn skip(b: &[u8], mut pos: usize) -> Option<usize> {
    let mut left: u64 = 1;
    let mut outer: Vec<u64> = Vec::new();
    loop {
        if left == 0 {
            if outer.is_empty() {
                return Some(pos);
            }
            if *b.get(pos)? == 0xff {
                pos += 1;
                left = outer.pop()?;
                continue;
            }
            left = 1;
        }
        let (major, arg, next) = head(b, pos)?;
        pos = next;
        match (major, arg) {
            // A tag: its item is still to come.
            (6, Some(_)) => {}
            (0 | 1 | 7, Some(_)) => left -= 1,
            (2 | 3, Some(len)) => {
                pos = pos
                    .checked_add(usize::try_from(len).ok()?)
                    .filter(|&p| p <= b.len())?;
                left -= 1;
            }
            (4, Some(n)) => left = (left - 1).checked_add(n)?,
            (5, Some(n)) => left = (left - 1).checked_add(n.checked_mul(2)?)?,
            (2..=5, None) if outer.len() < MAX_OPEN_INDEFINITE => {
                outer.push(left - 1);
                left = 0;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_cid_is_found_past_any_nesting() {
        // {"cid": 5}
        assert_eq!(notification_cid(&hex("a1 63636964 05")), Some(5));
        // {"p": [[[...200 deep...]]], "cid": 7}: far past the decoder's depth limit.
        let mut deep = hex("a2 6170");
        deep.extend(std::iter::repeat_n(0x81, 200));
        deep.push(0x00);
        deep.extend(hex("63636964 07"));
        assert_eq!(notification_cid(&deep), Some(7));
        // The same with indefinite arrays, a tag, strings and a byte-string key.
        let mut mixed = hex("bf 6170");
        mixed.extend(std::iter::repeat_n(0x9f, 100));
        mixed.extend(hex("c1 1a00010000 7f 6161 6162 ff 5f 41 00 ff"));
        mixed.extend(std::iter::repeat_n(0xff, 100));
        mixed.extend(hex("43636964 1903e8 ff"));
        assert_eq!(notification_cid(&mixed), Some(1000));
    }

    #[test]
    fn no_channel_without_exactly_one_non_zero_unsigned_cid() {
        for (message, channel) in [
            ("a1 63636964 00", None),     // cid 0: a response's, not a notification's
            ("a1 63636964 20", None),     // negative
            ("a1 63636964 f93e00", None), // a float with a fraction (1.5)
            ("a1 63636964 6131", None),   // text
            ("a2 63636964 01 63636964 02", Some(1)), // twice: the first channel
            ("a2 63636964 00 63636964 02", Some(2)), // twice, the first no channel
            ("a1 6170 01", None),         // no cid
            ("81 01", None),              // not a map
            ("a2 63636964 01 6170", None), // ends early
            ("a1 63636964 01 00", Some(1)), // trailing bytes: the map is whole
            // However the decoder would read a channel: a float without a fraction, a tagged
            // number, a bignum; a key in chunks or tagged.
            ("a1 63636964 f94500", Some(5)),
            ("a1 63636964 fb 43e0000000000000", Some(1 << 63)),
            ("a1 63636964 fb 43f0000000000000", None), // 2^64
            ("a1 63636964 c1 07", Some(7)),
            ("a1 63636964 c2 43 000102", Some(258)),
            ("a1 63636964 c2 49 010000000000000000", None), // 2^64: no channel
            ("a1 7f 6163 626964 ff 09", Some(9)),
            ("a1 5f 43636964 ff 09", Some(9)),
            ("a1 d818 63636964 0a", Some(10)),
            ("a1 7f 6163 626964 ff 00", None),
        ] {
            assert_eq!(notification_cid(&hex(message)), channel, "{message}");
        }
        // Strings or counts that claim more than there is, and stray breaks.
        for bad in [
            "a1 63636964 7a ffffffff",
            "a1 6170 9b ffffffffffffffff",
            "a1 ff 01",
            "ff",
        ] {
            assert_eq!(notification_cid(&hex(bad)), None, "{bad}");
        }
        // More indefinite items open than followed: given up.
        let mut open = hex("a2 6170");
        open.extend(std::iter::repeat_n(0x9f, MAX_OPEN_INDEFINITE + 1));
        open.extend(std::iter::repeat_n(0xff, MAX_OPEN_INDEFINITE + 1));
        open.extend(hex("63636964 01"));
        assert_eq!(notification_cid(&open), None);
    }

    #[test]
    fn any_prefix_of_any_message_is_read_without_panic() {
        let mut m = hex("bf 6170 9f 81 a1 00 c1 5f 41 00 ff ff 63636964 05 ff");
        for n in 0..=m.len() {
            let _ = notification_cid(&m[..n]);
        }
        for i in 0..m.len() {
            for byte in [0x00, 0x1f, 0x3b, 0x5f, 0x7b, 0x9b, 0xbb, 0xdb, 0xfb, 0xff] {
                let old = std::mem::replace(&mut m[i], byte);
                let _ = notification_cid(&m);
                m[i] = old;
            }
        }
    }
}
