//! A connection's outbound queue: framed bytes waiting for the socket.
//!
//! Small frames are appended to one owned tail buffer (so a batch of replies leaves in one
//! `send`); shared broadcast frames are queued by reference and written with the rest in one
//! vectored `sendmsg`. An empty queue holds no heap memory: idle connections cost nothing here,
//! and the first chunk is kept inline, so the common queue of one chunk (a batch of replies, one
//! broadcast frame) allocates no deque either.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use super::hub::Chunk;
use super::sys;

/// Owned tail buffers are not grown past this; a new chunk starts instead.
const TAIL_LIMIT: usize = 256 * 1024;
/// At most this many iovecs per sendmsg.
pub const MAX_IOV: usize = 64;

/// Entries below which a drained deque keeps its storage (shrinking it costs a copy).
const MIN_SHRINK: usize = 64;

#[derive(Default)]
pub struct OutQueue {
    /// The front chunk; `None` only when the queue is empty.
    head: Option<Chunk>,
    /// The chunks after `head`, in order.
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    front_written: usize,
    /// Bytes queued and not yet written.
    bytes: usize,
}

/// What a flush achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything was written.
    All,
    /// The socket is full (EAGAIN); wait for EPOLLOUT.
    Blocked,
    /// Bytes are queued but cannot be written yet (a TLS handshake is still in progress);
    /// the connection's next input brings it back. Never returned for plaintext.
    Waiting,
}

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The memory the queue holds for this connection: its bytes and the deque's entries. A
    /// backlog of tiny broadcast frames costs far more in entries (each a `Chunk`) than in
    /// bytes; the slow-consumer limit counts both. (A shared frame's own allocation is counted
    /// as its bytes here, although every recipient shares it.)
    pub fn held(&self) -> usize {
        self.bytes + self.chunks.capacity() * std::mem::size_of::<Chunk>()
    }

    /// Appends bytes produced by `fill` to the owned tail buffer (taking one from `pool` if needed).
    pub fn append_with(&mut self, pool: &mut BufPool, fill: impl FnOnce(&mut Vec<u8>)) {
        let needs_new = !matches!(self.back(), Some(Chunk::Owned(v)) if v.len() < TAIL_LIMIT);
        if needs_new {
            self.push_back(Chunk::Owned(pool.take()));
        }
        let mut added = 0;
        if let Some(Chunk::Owned(v)) = self.back_mut() {
            let before = v.len();
            fill(v);
            added = v.len() - before;
            self.bytes += added;
            pool.queued_bytes += added;
        }
        // No empty chunk stays queued (an entry and an iovec for nothing).
        if needs_new && added == 0 {
            if let Some(Chunk::Owned(v)) = self.pop_back() {
                pool.give(v);
            }
        }
    }

    /// Queues a shared frame without copying it.
    pub fn push_shared(&mut self, pool: &mut BufPool, frame: Arc<[u8]>) {
        if frame.is_empty() {
            return;
        }
        self.bytes += frame.len();
        pool.queued_bytes += frame.len();
        self.push_back(Chunk::Shared(frame));
    }

    /// Queues a chunk (owned chunks are appended to the tail when small).
    pub fn push_chunk(&mut self, pool: &mut BufPool, chunk: Chunk) {
        match chunk {
            Chunk::Shared(a) => self.push_shared(pool, a),
            Chunk::Owned(v) if v.len() <= 4096 => {
                self.append_with(pool, |b| b.extend_from_slice(&v))
            }
            Chunk::Owned(v) => {
                if !v.is_empty() {
                    self.bytes += v.len();
                    pool.queued_bytes += v.len();
                    self.push_back(Chunk::Owned(v));
                }
            }
        }
    }

    /// Writes as much as the socket takes.
    pub fn flush(&mut self, fd: RawFd, pool: &mut BufPool) -> io::Result<Flushed> {
        while self.bytes > 0 {
            let res = if self.chunks.is_empty() {
                // One chunk (the common case): a plain send, no iovec array to build.
                match &self.head {
                    Some(c) => sys::send(fd, &c.as_slice()[self.front_written..]),
                    None => break,
                }
            } else {
                let mut iov = [io::IoSlice::new(&[]); MAX_IOV];
                let n = self.slices(&mut iov);
                sys::sendv(fd, &iov[..n])
            };
            match res {
                Ok(written) => self.consume(written, pool),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Flushed::All)
    }

    /// The unwritten bytes as slices, front first, as many chunks as `iov` holds; returns how
    /// many it filled (0 when the queue is empty).
    pub fn slices<'a>(&'a self, iov: &mut [io::IoSlice<'a>; MAX_IOV]) -> usize {
        let mut n = 0;
        for (i, c) in self.iter().take(MAX_IOV).enumerate() {
            let s = if i == 0 {
                &c.as_slice()[self.front_written..]
            } else {
                c.as_slice()
            };
            iov[n] = io::IoSlice::new(s);
            n += 1;
        }
        n
    }

    /// Marks `n` bytes from the front as written (at most `self.bytes()`).
    pub fn consume_front(&mut self, n: usize, pool: &mut BufPool) {
        self.consume(n.min(self.bytes), pool);
    }

    fn consume(&mut self, mut written: usize, pool: &mut BufPool) {
        self.bytes -= written;
        pool.queued_bytes -= written;
        while written > 0 {
            let Some(front) = &self.head else {
                break;
            };
            let left = front.len() - self.front_written;
            if written >= left {
                written -= left;
                self.front_written = 0;
                if let Some(Chunk::Owned(v)) = self.pop_front() {
                    pool.give(v);
                }
            } else {
                self.front_written += written;
                written = 0;
            }
        }
        if self.bytes == 0 {
            // Release the deque's own storage too (and any empty tail buffer): idle
            // connections hold no heap.
            self.front_written = 0;
            for c in self.head.take().into_iter().chain(self.chunks.drain(..)) {
                if let Chunk::Owned(v) = c {
                    pool.give(v);
                }
            }
            self.chunks = VecDeque::new();
        }
    }

    /// Drops what was not started yet, keeping the rest of a partly written front chunk (chunks
    /// hold whole frames, so the stream stays well-formed for a Close queued after this).
    pub fn drop_unstarted(&mut self, pool: &mut BufPool) {
        let keep = usize::from(self.front_written > 0);
        while self.len() > keep {
            if let Some(c) = self.pop_back() {
                let len = c.len();
                self.bytes -= len;
                pool.queued_bytes -= len;
                if let Chunk::Owned(v) = c {
                    pool.give(v);
                }
            }
        }
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
        }
    }

    // ---- the chunk sequence: `head`, then `chunks` ----

    fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.chunks.len()
    }

    fn iter(&self) -> impl Iterator<Item = &Chunk> {
        self.head.iter().chain(self.chunks.iter())
    }

    fn back(&self) -> Option<&Chunk> {
        self.chunks.back().or(self.head.as_ref())
    }

    fn back_mut(&mut self) -> Option<&mut Chunk> {
        match self.chunks.back_mut() {
            Some(c) => Some(c),
            None => self.head.as_mut(),
        }
    }

    fn push_back(&mut self, c: Chunk) {
        if self.head.is_none() {
            self.head = Some(c);
        } else {
            self.chunks.push_back(c);
        }
    }

    fn pop_front(&mut self) -> Option<Chunk> {
        let front = self.head.take();
        self.head = self.chunks.pop_front();
        // A backlog that drained leaves its entries' storage behind (and `held` counts it):
        // halve it once a quarter is in use, so that a peer that caught up but always has a
        // byte queued is not charged for the backlog it no longer has.
        let cap = self.chunks.capacity();
        if cap > MIN_SHRINK && self.chunks.len() < cap / 4 {
            self.chunks.shrink_to(cap / 2);
        }
        front
    }

    fn pop_back(&mut self) -> Option<Chunk> {
        self.chunks.pop_back().or_else(|| self.head.take())
    }

    /// Drops everything queued (the connection is gone).
    pub fn clear(&mut self, pool: &mut BufPool) {
        pool.queued_bytes -= self.bytes;
        for c in self.head.take().into_iter().chain(self.chunks.drain(..)) {
            if let Chunk::Owned(v) = c {
                pool.give(v);
            }
        }
        self.chunks = VecDeque::new();
        self.bytes = 0;
        self.front_written = 0;
    }
}

/// A worker's pool of reusable write buffers, so a reply does not cost a malloc/free pair.
/// It also keeps the worker's total of queued outbound bytes (published for the balancer).
pub struct BufPool {
    free: Vec<Vec<u8>>,
    keep: usize,
    pub queued_bytes: usize,
}

impl BufPool {
    pub fn new(keep: usize) -> BufPool {
        BufPool {
            free: Vec::new(),
            keep,
            queued_bytes: 0,
        }
    }

    pub fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| Vec::with_capacity(4096))
    }

    pub fn give(&mut self, mut v: Vec<u8>) {
        // Oversized buffers (a 16 MiB echo) go back to the allocator.
        if self.free.len() < self.keep && v.capacity() <= 64 * 1024 {
            v.clear();
            self.free.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn read_all(b: &mut UnixStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        b.read_exact(&mut got).unwrap();
        got
    }

    /// No empty chunk is queued (it would cost an entry and an iovec for nothing).
    #[test]
    fn nothing_empty_is_queued_in_front_of_a_frame() {
        let mut pool = BufPool::new(4);
        let mut q = OutQueue::default();
        q.append_with(&mut pool, |_| {});
        q.push_chunk(&mut pool, Chunk::Owned(Vec::new()));
        q.push_shared(&mut pool, Arc::from(&b"frame"[..]));
        let mut iov = [io::IoSlice::new(&[]); MAX_IOV];
        assert_eq!(q.slices(&mut iov), 1);
        assert_eq!(&*iov[0], b"frame");
        q.consume_front(5, &mut pool);
        assert!(q.is_empty());
        let mut iov = [io::IoSlice::new(&[]); MAX_IOV];
        assert_eq!(q.slices(&mut iov), 0);
    }

    #[test]
    fn a_drained_backlog_gives_its_entries_back_while_bytes_remain() {
        let mut pool = BufPool::new(4);
        let mut q = OutQueue::default();
        let frame: Arc<[u8]> = Arc::from(&b"x"[..]);
        for _ in 0..100_000 {
            q.push_shared(&mut pool, Arc::clone(&frame));
        }
        let entry = std::mem::size_of::<Chunk>();
        assert!(q.held() > 100_000 * entry, "{}", q.held());
        // The peer takes all but the last ten, a thousand at a time.
        for _ in 0..99 {
            q.consume_front(1000, &mut pool);
        }
        q.consume_front(990, &mut pool);
        assert_eq!(q.bytes(), 10);
        assert!(
            q.held() <= 10 + 4 * MIN_SHRINK * entry,
            "{} held for {} bytes",
            q.held(),
            q.bytes()
        );
    }

    #[test]
    fn owned_and_shared_chunks_leave_in_order_and_the_queue_ends_empty() {
        let (a, mut b) = pair();
        let mut pool = BufPool::new(4);
        let mut q = OutQueue::default();
        q.append_with(&mut pool, |v| v.extend_from_slice(b"one "));
        q.push_shared(&mut pool, Arc::from(&b"two "[..]));
        q.append_with(&mut pool, |v| v.extend_from_slice(b"three "));
        q.push_chunk(&mut pool, Chunk::Owned(vec![b'x'; 5000]));
        let total = 4 + 4 + 6 + 5000;
        assert_eq!((q.bytes(), pool.queued_bytes), (total, total));
        assert_eq!(q.flush(a.as_raw_fd(), &mut pool).unwrap(), Flushed::All);
        let got = read_all(&mut b, total);
        assert_eq!(&got[..14], b"one two three ");
        assert!(got[14..].iter().all(|&c| c == b'x'));
        assert!(q.is_empty() && q.head.is_none() && q.chunks.capacity() == 0);
        assert_eq!(pool.queued_bytes, 0);
    }

    #[test]
    fn a_full_socket_keeps_the_rest_and_a_later_flush_finishes_it() {
        let (a, mut b) = pair();
        let mut pool = BufPool::new(4);
        let mut q = OutQueue::default();
        let big: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        q.push_shared(&mut pool, Arc::from(&big[..]));
        q.append_with(&mut pool, |v| v.extend_from_slice(b"tail"));
        assert_eq!(q.flush(a.as_raw_fd(), &mut pool).unwrap(), Flushed::Blocked);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while got.len() < big.len() + 4 {
            if q.bytes() > 0 {
                let _ = q.flush(a.as_raw_fd(), &mut pool).unwrap();
            }
            let n = b.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(&got[..big.len()], &big[..]);
        assert_eq!(&got[big.len()..], b"tail");
        assert!(q.is_empty() && q.head.is_none());
    }

    #[test]
    fn drop_unstarted_keeps_a_partly_written_front_chunk_only() {
        let (a, mut b) = pair();
        let mut pool = BufPool::new(4);
        let mut q = OutQueue::default();
        let big = vec![7u8; 4_000_000];
        q.push_shared(&mut pool, Arc::from(&big[..]));
        q.append_with(&mut pool, |v| v.extend_from_slice(b"dropped"));
        assert_eq!(q.flush(a.as_raw_fd(), &mut pool).unwrap(), Flushed::Blocked);
        let left = q.bytes();
        q.drop_unstarted(&mut pool);
        assert_eq!(q.bytes(), left - 7, "only the unstarted chunk went");
        q.append_with(&mut pool, |v| v.extend_from_slice(b"close"));
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while got.len() < big.len() + 5 {
            if q.bytes() > 0 {
                let _ = q.flush(a.as_raw_fd(), &mut pool).unwrap();
            }
            let n = b.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got[..big.len()].iter().all(|&c| c == 7));
        assert_eq!(&got[big.len()..], b"close");
        q.clear(&mut pool);
        assert_eq!(pool.queued_bytes, 0);
    }

    #[test]
    fn held_counts_the_entries_of_a_backlog_of_tiny_shared_frames() {
        let mut pool = BufPool::new(4);
        let mut q = OutQueue::default();
        let frame: Arc<[u8]> = Arc::from(&b"\x81\x02hi"[..]);
        for _ in 0..100_000 {
            q.push_shared(&mut pool, frame.clone());
        }
        assert_eq!(q.bytes(), 400_000);
        // Each entry is a `Chunk` in the deque: six times the frame's four bytes.
        assert!(
            q.held() >= 100_000 * (4 + std::mem::size_of::<Chunk>()),
            "{}",
            q.held()
        );
        q.clear(&mut pool);
        assert_eq!(q.held(), 0, "an empty queue holds nothing");
    }
}
