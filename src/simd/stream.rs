//! Streaming UTF-8 validation across the fragments (and reads) of one text message.
//!
//! Owns: the at-most-three bytes of a code point cut by a fragment boundary. Each chunk is
//! validated up to its last complete code point with the dispatched kernel; the cut code point
//! is checked as a prefix so that an impossible one fails at the feed that delivers it (RFC 6455
//! section 8.1 lets an endpoint fail as soon as the text is known to be invalid, and Autobahn
//! case 6.4 expects exactly that). Must never buffer more than one code point.

use super::scalar::{self, Prefix};
use super::{dispatch, Utf8Error};

/// Streaming UTF-8 validator: a code point may be split across any number of `feed` calls.
/// An invalid prefix fails at once; `finish` fails when the input ends inside a code point.
/// After an error the state is cleared; call `reset` before reusing it for another message.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    /// The beginning of a code point cut by the end of the previous chunk (a valid prefix).
    pending: [u8; 3],
    /// How many bytes of `pending` are in use (0..=3).
    pending_len: u8,
}

impl Utf8Stream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget any pending code point, to start a new message.
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }

    /// Validate the next piece of the message.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), Utf8Error> {
        if self.pending_len != 0 {
            chunk = self.complete_pending(chunk)?;
            if self.pending_len != 0 {
                return Ok(());
            }
        }
        let (body, tail) = chunk.split_at(scalar::unfinished_tail_start(chunk));
        if !dispatch::validate_utf8(body) {
            self.reset();
            return Err(Utf8Error);
        }
        match scalar::prefix_state(tail) {
            Prefix::Invalid => {
                self.reset();
                Err(Utf8Error)
            }
            // An empty tail counts as Incomplete and keeps nothing; a tail is never Complete
            // (`unfinished_tail_start` only cuts before a code point that lacks bytes).
            Prefix::Incomplete => {
                self.keep(tail);
                Ok(())
            }
            Prefix::Complete => Ok(()),
        }
    }

    /// The message ended: fails if it ended inside a code point. Leaves the stream reset.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let incomplete = self.pending_len != 0;
        self.reset();
        if incomplete {
            Err(Utf8Error)
        } else {
            Ok(())
        }
    }

    /// Move bytes from `chunk` into the pending code point until it is complete or `chunk` is
    /// exhausted; returns what is left of `chunk`.
    fn complete_pending<'a>(&mut self, chunk: &'a [u8]) -> Result<&'a [u8], Utf8Error> {
        let have = usize::from(self.pending_len).min(3);
        let mut cp = [0u8; 4];
        cp[..have].copy_from_slice(&self.pending[..have]);
        // `pending` holds a valid prefix, so its lead gives a width in 2..=4 and need >= 1.
        let need = scalar::lead_width(cp[0]).saturating_sub(have);
        let take = need.min(chunk.len());
        let (head, rest) = chunk.split_at(take);
        cp[have..have + take].copy_from_slice(head);
        match scalar::prefix_state(&cp[..have + take]) {
            Prefix::Invalid => {
                self.reset();
                Err(Utf8Error)
            }
            Prefix::Incomplete => {
                self.keep(&cp[..have + take]);
                Ok(rest)
            }
            Prefix::Complete => {
                self.reset();
                Ok(rest)
            }
        }
    }

    /// Remember an incomplete (valid) prefix; `Complete` tails never reach here with bytes.
    fn keep(&mut self, prefix: &[u8]) {
        let n = prefix.len().min(3);
        debug_assert_eq!(n, prefix.len(), "a pending prefix is at most 3 bytes");
        self.pending[..n].copy_from_slice(&prefix[..n]);
        self.pending_len = n as u8;
    }
}
