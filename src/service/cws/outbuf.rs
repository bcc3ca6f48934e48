//! The client's bytes waiting for the socket (or for rustls), written from the front.
//!
//! A large message leaves in many writes (rustls takes 64 KiB per call; a slow server takes
//! less). Moving the rest to the front after each write would cost the message's size squared
//! in copying; here what was written is skipped, and the buffer is compacted only once the
//! written part is at least half of it, so every byte is moved at most once on average.

/// Written part that makes a compaction worth its copy.
const COMPACT_AT: usize = 64 * 1024;

#[derive(Default)]
pub(super) struct OutBuf {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    at: usize,
    /// Bytes moved by compactions (for the tests).
    #[cfg(test)]
    moved: usize,
}

impl OutBuf {
    pub fn new(bytes: Vec<u8>) -> OutBuf {
        OutBuf {
            buf: bytes,
            ..OutBuf::default()
        }
    }

    /// What is still to be written.
    pub fn pending(&self) -> &[u8] {
        self.buf.get(self.at..).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.at
    }

    pub fn is_empty(&self) -> bool {
        self.at == self.buf.len()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.at = 0;
    }

    /// The buffer to append to (frames are encoded at its end).
    pub fn tail(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// `n` bytes of [`pending`](Self::pending) were written.
    pub fn consume(&mut self, n: usize) {
        self.at = (self.at + n).min(self.buf.len());
        if self.at == self.buf.len() {
            self.clear();
        } else if self.at >= COMPACT_AT && self.at * 2 >= self.buf.len() {
            #[cfg(test)]
            {
                self.moved += self.buf.len() - self.at;
            }
            self.buf.drain(..self.at);
            self.at = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_leave_in_order_and_a_large_message_is_moved_at_most_once_over() {
        let message: Vec<u8> = (0..16 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut out = OutBuf::new(b"head".to_vec());
        out.tail().extend_from_slice(&message);
        let mut written = Vec::new();
        // Writes of 64 KiB, as rustls takes them, with a few small frames appended meanwhile.
        let mut appended = 0u8;
        while !out.is_empty() {
            let n = out.pending().len().min(64 * 1024);
            written.extend_from_slice(&out.pending()[..n]);
            out.consume(n);
            if appended < 3 && written.len() > (4 << 20) * (usize::from(appended) + 1) {
                out.tail().extend_from_slice(&[0x89, 0]);
                appended += 1;
            }
        }
        let mut want = b"head".to_vec();
        want.extend_from_slice(&message);
        want.extend_from_slice(&[0x89, 0, 0x89, 0, 0x89, 0]);
        assert_eq!(written.len(), want.len());
        assert!(written == want, "the bytes left in order");
        // Moving the rest after every write would have copied ~2 GiB.
        assert!(out.moved <= want.len(), "moved {} bytes", out.moved);
        assert_eq!(out.len(), 0);
    }

    #[test]
    fn a_partial_write_leaves_the_rest_pending() {
        let mut out = OutBuf::new(b"abcdef".to_vec());
        out.consume(2);
        assert_eq!(out.pending(), b"cdef");
        assert_eq!(out.len(), 4);
        out.tail().extend_from_slice(b"g");
        out.consume(10);
        assert!(out.is_empty());
        assert_eq!(out.pending(), b"");
    }
}
